# pg_fleet refuses to load outside shared_preload_libraries, and says how
# to fix it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('no_preload');
$node->init;
$node->start;

my ($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE EXTENSION pg_fleet');
isnt($ret, 0, 'CREATE EXTENSION fails without shared_preload_libraries');
like($stderr, qr/pg_fleet must be loaded via shared_preload_libraries/, 'the error says why');
like($stderr, qr/HINT:  Add pg_fleet to shared_preload_libraries/, 'the hint says what to do');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_extension WHERE extname = 'pg_fleet'"),
	'0', 'nothing was installed');

$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_fleet'\n");
$node->restart;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_fleet');
is($node->safe_psql('postgres', 'SELECT count(*) FROM fleet.enrollment_groups'),
	'2', 'with the library preloaded the extension installs, pg_cron or not');

# without pg_cron, jobs run now but nothing can be scheduled
my $job_body = q{
	"displayName": "No cron", "group": "all",
	"data": [{"type": "deviceTemplateMigration", "template": "dtmi:test:Plain;1"}]
};
$node->safe_psql('postgres', q{
	SELECT fleet.import_template('{"@id": "dtmi:test:Plain;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2", "contents": []}');
	SELECT fleet.create_device('plain-1');
	SELECT fleet.create_device_group('all', 'Everything');
});
($ret, $stdout, $stderr) = $node->psql('postgres',
	"SELECT fleet.create_scheduled_job('{$job_body, \"schedule\": {\"start\": \"2099-01-01T09:00:00\"}}')");
isnt($ret, 0, 'a scheduled job is refused without pg_cron');
like($stderr, qr/scheduled jobs need pg_cron, which is not loaded/, 'the error says why');
like($stderr, qr/HINT:  Add pg_cron to shared_preload_libraries/, 'the hint says what to do');
is($node->safe_psql('postgres', "SELECT fleet.create_job('{\"id\": \"now\", $job_body}') ->> 'status'"),
	'pending', 'a job that runs now is still taken');
is($node->safe_psql('postgres', "SELECT fleet.wait_for_job('now')"), 'completed',
	'and the engine runs it');

$node->stop;
done_testing();
