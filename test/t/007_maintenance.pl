# The engine never waits on maintenance.  A VACUUM of job_devices that
# takes its time (cost-delayed), and a lock of the kind VACUUM, ANALYZE and
# CREATE INDEX CONCURRENTLY hold, run across fan-outs big enough to want
# fresh statistics: jobs start and complete meanwhile, the engine waits on
# no lock, the VACUUM is not made to give way, and the statistics are
# refreshed once the table is free.  Autovacuum, on and eager, is never
# cancelled on the engine's account.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('maintenance');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_fleet'
fleet.database_name = 'postgres'
fleet.engine_naptime = '100ms'
autovacuum_naptime = 1
log_autovacuum_min_duration = 0
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_fleet;
	SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
	                               "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true}]}');
	INSERT INTO fleet.device_import SELECT 'lamp-' || lpad(i::text, 6, '0'), NULL FROM generate_series(1, 20000) i;
	UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1';
	SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1');
});

# a property job over all 20,000 lamps (a fan-out that wants new statistics)
sub run_job
{
	my ($id, $value) = @_;
	$node->safe_psql('postgres', qq{SELECT fleet.create_job('{"id": "$id", "displayName": "$id", "group": "lamps",
	  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": $value}]}')});
	return $node->safe_psql('postgres', qq{SELECT fleet.wait_for_job('$id', timeout => '120 seconds')});
}
my $engine_waits = q{SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                      WHERE a.backend_type = 'pg_fleet engine' AND NOT l.granted};

is(run_job('first', 1), 'completed', 'a first job completes');
ok($node->poll_query_until('postgres', q{SELECT NOT analyze_wanted FROM fleet_internal.engine_state}),
	'after its fan-out the engine refreshed the statistics');

# 1. a VACUUM that takes its time
my $vacuum = $node->background_psql('postgres', on_error_stop => 0);
$vacuum->query_until(qr/vacuuming/, q{
	SET vacuum_cost_delay = 100;
	SET vacuum_cost_limit = 1;
	\echo vacuuming
	VACUUM fleet.job_devices;
});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_progress_vacuum WHERE relid = 'fleet.job_devices'::regclass}),
	'a VACUUM of job_devices runs');
is(run_job('second', 2), 'completed', 'a job with a big fan-out completes while it runs');
is(run_job('third', 3), 'completed', 'and another');
is($node->safe_psql('postgres', q{SELECT count(*) FROM fleet.devices WHERE properties ->> 'level' = '3'}),
	'20000', 'every device was written');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_progress_vacuum WHERE relid = 'fleet.job_devices'::regclass}),
	'1', 'the VACUUM still runs: the engine did not make it give way');
is($node->safe_psql('postgres', q{SELECT analyze_wanted FROM fleet_internal.engine_state}), 't',
	'the statistics the engine wants wait for it');
is($node->safe_psql('postgres', $engine_waits), '0', 'the engine waits on no lock');
$node->safe_psql('postgres',
	q{SELECT pg_cancel_backend(pid) FROM pg_stat_progress_vacuum WHERE relid = 'fleet.job_devices'::regclass});
$vacuum->quit;
ok($node->poll_query_until('postgres', q{SELECT NOT analyze_wanted FROM fleet_internal.engine_state}),
	'once it is gone, the engine refreshes them');

# 2. the lock ANALYZE and CREATE INDEX CONCURRENTLY take, held in an open transaction
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN; LOCK TABLE fleet.job_devices IN SHARE UPDATE EXCLUSIVE MODE;');
is(run_job('fourth', 4), 'completed', 'a job completes while maintenance holds job_devices');
is($node->safe_psql('postgres', $engine_waits), '0', 'the engine waits on no lock');
$holder->query_safe('COMMIT;');
$holder->quit;
ok($node->poll_query_until('postgres', q{SELECT NOT analyze_wanted FROM fleet_internal.engine_state}),
	'and refreshes the statistics after');

# autovacuum ran on the job tables meanwhile, and never gave way to the engine
ok($node->poll_query_until('postgres', q{
		SELECT autovacuum_count + autoanalyze_count > 0 FROM pg_stat_user_tables WHERE relid = 'fleet.job_devices'::regclass}),
	'autovacuum visits job_devices');
my $log = slurp_file($node->logfile);
unlike($log, qr/canceling autovacuum task/, 'no autovacuum task was cancelled');

$node->stop;
done_testing();
