# The engine across its database's life: named before the database exists
# (one message, no restart loop), started as soon as it is created;
# pg_fleet in another database refuses jobs and schedules with a hint;
# DROP EXTENSION pg_fleet while a job runs succeeds, and takes the
# schedules' pg_cron entries with it; DROP DATABASE (plain, and WITH
# FORCE) of the engine's database succeeds; a typo in fleet.database_name
# says so once; and a copy restored beside the original in the same
# cluster owns only its own pg_cron entries, until the documented step
# makes it the engine's database.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $node = PostgreSQL::Test::Cluster->new('lifecycle');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,pg_fleet'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 20
fleet.database_name = 'fleet'
fleet.engine_naptime = '100ms'
fleet.engine_chunk_size = 50
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');

# how often the log says something since the last look
my $log_seen = 0;
sub log_since
{
	my ($pattern) = @_;
	my $log = slurp_file($node->logfile);
	my $new = substr($log, $log_seen);
	$log_seen = length($log);
	my $count = () = $new =~ /$pattern/g;
	return $count;
}
my $missing = qr/pg_fleet: database "[^"]+" named by fleet.database_name does not exist/;
my $engine_exits = qr/background worker "pg_fleet (engine|launcher)" \(PID \d+\) exited|FATAL:.*pg_fleet/;

# 1. named before it exists
sleep(3);
is(log_since($missing), 1, 'a database that does not exist yet is said once');
is(log_since($engine_exits), 0, 'and the engine is not started over and over');

sub fleet_db
{
	my ($database) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $database");
	$node->safe_psql($database, q{
		CREATE EXTENSION pg_fleet;
		SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
		                               "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true}]}');
		INSERT INTO fleet.device_import SELECT 'lamp-' || lpad(i::text, 5, '0'), NULL FROM generate_series(1, 5000) i;
		UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1';
		SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1');
	});
}
my $job = q{"group": "lamps", "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 7}]};
my $schedule = qq{SELECT fleet.create_scheduled_job('{"id": "nightly", "displayName": "Nightly", $job,
                    "schedule": {"start": "2099-01-01T02:00:00", "recurrence": "daily"}}') IS NOT NULL};
my $entries = q{SELECT coalesce(string_agg(jobname, ',' ORDER BY jobname), 'none') FROM cron.job};

fleet_db('fleet');
ok($node->poll_query_until('fleet', 'SELECT fleet_internal.engine_pid() IS NOT NULL'), 'once created, the engine starts in it');

# 2. another database: nothing there would ever run a job
fleet_db('other');
my ($rc, $out, $err) = $node->psql('other', qq{SELECT fleet.create_job('{"displayName": "Elsewhere", $job}')});
like($err, qr/creating a job needs the job engine, which runs in database "fleet"/, 'a job elsewhere is refused');
like($err, qr/HINT:  Set fleet.database_name = 'other'/, 'with a hint naming the setting');
($rc, $out, $err) = $node->psql('other', $schedule);
like($err, qr/scheduling a job needs the job engine/, 'so is a schedule');
is($node->safe_psql('other', 'SELECT fleet_internal.engine_pid() IS NULL'), 't', 'no engine answers for it');

# 3. DROP EXTENSION while a property job runs, twice
for my $try (1, 2)
{
	$node->safe_psql('fleet', $schedule);
	ok($node->poll_query_until('postgres', "SELECT ($entries) = 'pg_fleet fleet nightly'"), "try $try: the schedule has its entry");
	$node->safe_psql('fleet', qq{SELECT fleet.create_job('{"id": "long", "displayName": "Long",
	  "batch": {"type": "number", "value": 100}, $job}')});
	ok($node->poll_query_until('fleet', q{SELECT count(*) > 0 FROM fleet.job_devices WHERE status = 'completed'}),
		"try $try: the job runs");
	($rc, $out, $err) = $node->psql('fleet', 'DROP EXTENSION pg_fleet');
	is($rc, 0, "try $try: DROP EXTENSION pg_fleet succeeds while it does") or diag($err);
	is($node->safe_psql('postgres', $entries), 'none', "try $try: and its schedule's pg_cron entry went with it");
	$node->safe_psql('fleet', q{
		CREATE EXTENSION pg_fleet;
		SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
		                               "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true}]}');
		INSERT INTO fleet.device_import SELECT 'lamp-' || lpad(i::text, 5, '0'), NULL FROM generate_series(1, 5000) i;
		UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1';
		SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1');
	});
}
is(log_since(qr/deadlock detected/), 0, 'no deadlock');

# 4. DROP DATABASE of the engine's database, plain and WITH (FORCE)
$node->safe_psql('fleet', $schedule);
ok($node->poll_query_until('postgres', "SELECT ($entries) = 'pg_fleet fleet nightly'"), 'a schedule of the engine\'s database');
log_since($missing);
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE fleet');
is($rc, 0, 'DROP DATABASE of the engine\'s database succeeds') or diag($err);
is($node->safe_psql('postgres', $entries), 'none', 'and its pg_cron entries go');
sleep(2);
is(log_since($missing), 1, 'after it, the missing database is said once');
fleet_db('fleet');
ok($node->poll_query_until('fleet', 'SELECT fleet_internal.engine_pid() IS NOT NULL'), 'created again, the engine is back');
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE fleet WITH (FORCE)');
is($rc, 0, 'DROP DATABASE ... WITH (FORCE) succeeds') or diag($err);
sleep(2);
is(log_since($engine_exits), 0, 'neither made the engine exit with an error or restart in a loop');

# 5. a typo in the setting says so once; the right name brings the engine
fleet_db('fleet');
$node->safe_psql('postgres', q{ALTER SYSTEM SET fleet.database_name = 'flet'; SELECT pg_reload_conf()});
sleep(3);
is(log_since(qr/pg_fleet: database "flet" named by fleet.database_name does not exist/), 1, 'a typo is said once');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET fleet.database_name; SELECT pg_reload_conf()});
ok($node->poll_query_until('fleet', 'SELECT fleet_internal.engine_pid() IS NOT NULL'), 'the right name brings the engine back');

# 6. a copy restored beside the original
$node->safe_psql('fleet', $schedule);
ok($node->poll_query_until('postgres', "SELECT ($entries) = 'pg_fleet fleet nightly'"), 'the original has its entry');
my $dump = $node->basedir . '/fleet.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('fleet'), '-f', $dump ], 'pg_dump of the original');
$node->safe_psql('postgres', 'CREATE DATABASE fleet_copy');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('fleet_copy'), $dump ], 'pg_restore into fleet_copy');
is($node->safe_psql('fleet_copy', q{SELECT fleet.disable_scheduled_job('nightly') ->> 'enabled'}), 'false',
	'in the copy, its schedule can be disabled');
$node->safe_psql('fleet', q{SELECT fleet_internal.schedules_changed()});
sleep(1);
is($node->safe_psql('postgres', $entries), 'pg_fleet fleet nightly', 'and the original keeps its entry');
# the documented step: the copy becomes the engine's database
$node->safe_psql('fleet_copy', q{SELECT fleet.enable_scheduled_job('nightly') IS NOT NULL});
$node->safe_psql('postgres', q{ALTER SYSTEM SET fleet.database_name = 'fleet_copy'; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', "SELECT ($entries) = 'pg_fleet fleet nightly,pg_fleet fleet_copy nightly'"),
	'made the engine\'s database, the copy gets entries of its own beside the original\'s');
($rc, $out, $err) = $node->psql('fleet_copy', qq{SELECT fleet.create_job('{"id": "in-copy", "displayName": "In the copy", $job}')});
is($node->safe_psql('fleet_copy', q{SELECT fleet.wait_for_job('in-copy')}), 'completed', 'and runs jobs');

$node->stop;
done_testing();
