# A server set up as Debian's postgresql-15 package sets it up: the stock
# pg_hba.conf (peer on the socket, a password over TCP) and pg_cron's
# defaults, under which pg_cron connects to "localhost" over TCP to run a
# schedule's command and is asked for a password it does not have.
# Creating a schedule warns of it, with the setting that fixes it; the run
# pg_cron could not make is recorded as failed with pg_cron's own reason,
# not as missed.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $node = PostgreSQL::Test::Cluster->new('stock_hba');
$node->init;
$node->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'pg_cron,pg_fleet'
cron.database_name = 'postgres'
fleet.database_name = 'postgres'
fleet.engine_naptime = '200ms'
fleet.schedule_misfire_grace = '10s'
});
# Debian's pg_hba.conf, as the package installs it
open(my $hba, '>', $node->data_dir . '/pg_hba.conf') or die;
print $hba qq{local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     peer
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
};
close($hba);
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_cron;
	CREATE EXTENSION pg_fleet;
	SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
	                               "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true}]}');
	SELECT fleet.create_device('lamp-1', template => 'dtmi:test:Lamp;1');
	SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1');
});

# a one-time schedule 20 to 80 seconds from now
my ($at, $local) = split /\|/, $node->safe_psql('postgres', q{
	SELECT a, to_char(a AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
	  FROM (SELECT date_trunc('minute', now() + interval '80 seconds') AS a) x});
my ($rc, $out, $err) = $node->psql('postgres', qq{
	SELECT fleet.create_scheduled_job('{"id": "once", "displayName": "Once", "group": "lamps",
	  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 7}],
	  "schedule": {"start": "$local", "timeZone": "UTC"}}') ->> 'id'});
is($out, 'once', 'the schedule is created');
like($err, qr/WARNING:  pg_cron runs scheduled jobs over a connection to "localhost", which may ask for a password/,
	'with a warning that pg_cron may not be able to run it');
like($err, qr/HINT:  Set cron.use_background_workers = on/, 'naming the setting that fixes it');

# its minute passes: pg_cron tries, fails to connect, and says why
ok($node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM cron.job_run_details WHERE status = 'failed'}),
	'pg_cron could not run it');
my $cron_reason = $node->safe_psql('postgres', q{SELECT return_message FROM cron.job_run_details WHERE status = 'failed' LIMIT 1});
ok($node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM fleet.list_scheduled_job_runs('once')}),
	'the engine recorded the occurrence once it was overdue');
is($node->safe_psql('postgres', q{SELECT outcome || ': ' || error FROM fleet.list_scheduled_job_runs('once')}),
	"failed: pg_cron could not run it: $cron_reason",
	"as failed, with pg_cron's own reason ($cron_reason), not as missed");
is($node->safe_psql('postgres', q{SELECT count(*) FROM fleet.jobs}), '0', 'and no job ran');

$node->stop;
done_testing();
