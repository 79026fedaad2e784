# Scheduled jobs fired by pg_cron itself, with pg_cron in another database
# (cron.database_name = postgres, pg_fleet in "fleet"): a one-time schedule
# due in the next minute runs, its job completes, pg_cron records the run
# as succeeded and its entry goes once the run is over; a daily schedule
# whose occurrence passes while the server is down is recorded as missed,
# pg_cron is pointed at the next day, and that next occurrence runs.  The
# entries follow the outcome of the transactions that change schedules,
# though pg_cron's database commits on its own.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $node = PostgreSQL::Test::Cluster->new('schedules');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,pg_fleet'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 20
fleet.database_name = 'fleet'
fleet.engine_naptime = '200ms'
fleet.schedule_misfire_grace = '10s'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', 'CREATE DATABASE fleet');
$node->safe_psql('fleet', 'CREATE EXTENSION pg_fleet');
$node->restart;    # the engine connects to "fleet" now that the extension is there

$node->safe_psql('fleet', q{
	SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
	                               "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true}]}');
	SELECT count(fleet.create_device('lamp-' || i, template => 'dtmi:test:Lamp;1')) FROM generate_series(1, 5) i;
	SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1');
});

# poll QUERY in DATABASE until it returns EXPECTED, for at most SECONDS
sub wait_for
{
	my ($database, $query, $expected, $seconds) = @_;
	my $result = '';
	for (my $waited = 0; $waited < $seconds; $waited += 0.5)
	{
		$result = $node->safe_psql($database, $query);
		return 1 if $result eq $expected;
		sleep(0.5);
	}
	diag("still \"$result\" after $seconds s: $query");
	return 0;
}

# A: one-time, 20 to 80 seconds from now, written on New York's wall clock
# B: daily, one minute later, in UTC
my ($a_at, $b_at, $a_local, $b_local, $a_cron, $b_cron, $b_next_cron, $b_epoch) = split /\|/,
  $node->safe_psql('fleet', q{
	SELECT a, b, to_char(a AT TIME ZONE 'America/New_York', 'YYYY-MM-DD"T"HH24:MI:SS'),
	       to_char(b AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS'),
	       to_char(a AT TIME ZONE 'UTC', 'FMMI FMHH24 FMDD FMMM') || ' *',
	       to_char(b AT TIME ZONE 'UTC', 'FMMI FMHH24 FMDD FMMM') || ' *',
	       to_char((b + interval '1 day') AT TIME ZONE 'UTC', 'FMMI FMHH24 FMDD FMMM') || ' *',
	       extract(epoch FROM b)
	  FROM (SELECT date_trunc('minute', now() + interval '80 seconds') AS a) x,
	       LATERAL (SELECT x.a + interval '1 minute' AS b) y
});
my $job = q{"group": "lamps", "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 7}]};
$node->safe_psql('fleet', qq{
	SELECT fleet.create_scheduled_job('{"id": "once", "displayName": "Once", $job,
	  "schedule": {"start": "$a_local", "timeZone": "America/New_York"}}');
	SELECT fleet.create_scheduled_job('{"id": "daily", "displayName": "Daily", $job,
	  "schedule": {"start": "$b_local", "timeZone": "UTC", "recurrence": "daily"}}');
});
my $entries = q{SELECT string_agg(jobname || ' ' || schedule || ' ' || database || ' ' || command, E'\n' ORDER BY jobname)
                  FROM cron.job};
ok(wait_for('postgres', $entries,
		"pg_fleet fleet daily $b_cron fleet SELECT fleet.fire_scheduled_job('daily')\n"
		  . "pg_fleet fleet once $a_cron fleet SELECT fleet.fire_scheduled_job('once')", 20),
	'each schedule has one pg_cron entry in the cron database, in GMT, running in "fleet"');

# changes that roll back leave pg_cron as it was: the engine writes what
# committed only, though pg_cron's database commits apart
$node->safe_psql('fleet', q{BEGIN; SELECT fleet.delete_scheduled_job('daily'); ROLLBACK;});
$node->safe_psql('fleet', qq{BEGIN;
	SELECT fleet.create_scheduled_job('{"id": "ghost", "displayName": "Ghost", $job,
	  "schedule": {"start": "2099-01-01T00:00:00", "recurrence": "daily"}}');
	ROLLBACK;});
$node->safe_psql('fleet', q{SELECT fleet_internal.schedules_changed()});     # the engine looks at once
ok(wait_for('fleet', q{SELECT cron_synced_version = cron_version FROM fleet_internal.engine_state}, 't', 20),
	'the engine brought pg_cron in line');
is($node->safe_psql('postgres', $entries),
	"pg_fleet fleet daily $b_cron fleet SELECT fleet.fire_scheduled_job('daily')\n"
	  . "pg_fleet fleet once $a_cron fleet SELECT fleet.fire_scheduled_job('once')",
	'a rolled-back deletion kept its entry, a rolled-back creation made none');

# A is fired by pg_cron at its minute
ok(wait_for('fleet', q{SELECT count(*) FROM fleet.scheduled_job_runs WHERE scheduled_job_id = 'once' AND outcome = 'started'},
		'1', 150),
	'pg_cron fired the one-time schedule');
my $a_job = $node->safe_psql('fleet', q{SELECT job_id FROM fleet.scheduled_job_runs WHERE scheduled_job_id = 'once'});
is($node->safe_psql('fleet', "SELECT fleet.wait_for_job('$a_job')"), 'completed', 'its job completed');
is($node->safe_psql('fleet', qq{
	SELECT (SELECT count(*) FROM fleet.devices WHERE properties = '{"level": 7}') || ' ' || j.scheduled_job_id
	  FROM fleet.jobs j WHERE j.id = '$a_job'}),
	'5 once', 'on every lamp, as an instance of the schedule');
is($node->safe_psql('fleet', q{
	SELECT occurrence = } . "'$a_at'" . q{::timestamptz FROM fleet.list_scheduled_job_runs('once')}),
	't', 'recorded at its occurrence');
ok(wait_for('postgres', q{SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'
	                          AND command = 'SELECT fleet.fire_scheduled_job(''once'')'}, '1', 30),
	'pg_cron recorded the run as succeeded');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job_run_details WHERE status <> 'succeeded'}),
	'0', 'and no run as cancelled: the entry stayed while its run went on');

# (A's entry stays two minutes after its last run, so that pg_cron does
# not see the run it is finishing as cancelled: looked at below, after B's)

# B's occurrence passes while the server is down
my $left = $b_epoch - $node->safe_psql('fleet', 'SELECT extract(epoch FROM now())');
cmp_ok($left, '>', 3, 'the daily occurrence is still to come when the server stops');
$node->stop('fast');
my $until = $b_epoch + 65;    # past its minute: pg_cron will not fire it on restart
sleep(0.5) while time() < $until;
$node->start;

ok(wait_for('fleet', q{SELECT string_agg(outcome, ',') FROM fleet.list_scheduled_job_runs('daily')}, 'missed', 60),
	'the occurrence that passed while the server was down is recorded as missed');
is($node->safe_psql('fleet', q{SELECT count(*) FROM fleet.jobs WHERE scheduled_job_id = 'daily'}),
	'0', 'and not run late');
ok(wait_for('postgres', q{SELECT schedule FROM cron.job WHERE jobname = 'pg_fleet fleet daily'}, $b_next_cron, 30),
	'pg_cron is pointed at the next day');

# the next occurrence runs (the pg_cron fire, at a mocked time a day later)
my $b_job = $node->safe_psql('fleet',
	"SELECT fleet.fire_scheduled_job('daily', '$b_at'::timestamptz + interval '1 day 1 second')");
isnt($b_job, '', 'the next occurrence starts a job');
is($node->safe_psql('fleet', "SELECT fleet.wait_for_job('$b_job')"), 'completed', 'which completes');
is($node->safe_psql('fleet', q{SELECT string_agg(outcome, ',' ORDER BY occurrence) FROM fleet.list_scheduled_job_runs('daily')}),
	'missed,started', 'the history shows the missed occurrence and the run');
ok(wait_for('postgres', q{SELECT count(*) FROM cron.job WHERE jobname = 'pg_fleet fleet once'}, '0', 150),
	'the ended one-time schedule left no pg_cron entry');


$node->safe_psql('fleet', q{SELECT fleet.delete_scheduled_job('daily')});
ok(wait_for('postgres', 'SELECT count(*) FROM cron.job', '0', 20), 'deleting the schedule removed its entry');

$node->stop;
done_testing();
