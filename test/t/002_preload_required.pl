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

$node->stop;
done_testing();
