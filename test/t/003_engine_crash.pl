# The job engine after kill -9 and after an immediate shutdown: every state
# change is a committed row, so the job finishes with every device exactly
# once in its final state, property values applied once, and one command
# delivery per device; gateways cut off by the crash reconnect, and no
# answer is taken twice.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $devices = 60000;

my $node = PostgreSQL::Test::Cluster->new('engine_crash');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,pg_fleet'
cron.database_name = 'postgres'
fleet.database_name = 'postgres'
fleet.engine_chunk_size = 200
fleet.engine_naptime = '100ms'
fleet.command_timeout = '10s'
restart_after_crash = on
});
$node->start;

my $template = slurp_file('test/data/thermostat-1.json');
$template =~ s/'/''/g;
$node->safe_psql('postgres', qq{
	CREATE EXTENSION pg_fleet;
	SELECT fleet.import_template('$template');
	INSERT INTO fleet.device_import SELECT 'dev-' || lpad(i::text, 6, '0'), NULL FROM generate_series(1, $devices) i;
	UPDATE fleet.devices SET template_id = 'dtmi:com:example:Thermostat;1';
	SELECT fleet.create_device_group('all', 'All', 'dtmi:com:example:Thermostat;1');
	-- every committed update of a device leaves one row here
	CREATE TABLE device_updates (device_id text);
	CREATE FUNCTION log_update() RETURNS trigger LANGUAGE plpgsql AS \$\$
	BEGIN INSERT INTO public.device_updates VALUES (NEW.id); RETURN NULL; END; \$\$;
	CREATE TRIGGER log_update AFTER UPDATE ON fleet.devices FOR EACH ROW EXECUTE FUNCTION log_update();
});

# Waits until the job has done some but not all of its devices, so the
# crash lands in the middle of it.
sub wait_mid_job
{
	my ($job) = @_;
	ok( $node->poll_query_until('postgres', qq{
			SELECT count(*) FILTER (WHERE status <> 'pending') > 0
			  FROM fleet.job_devices WHERE job_id = '$job'}),
		"$job is under way");
	my $done = $node->safe_psql('postgres',
		"SELECT count(*) FROM fleet.job_devices WHERE job_id = '$job' AND status <> 'pending'");
	cmp_ok($done, '<', $devices, "$job is not finished when the crash comes ($done of $devices done)");
}

sub wait_finished
{
	my ($job, $expected) = @_;
	ok( $node->poll_query_until('postgres',
			"SELECT status FROM fleet.jobs WHERE id = '$job'", $expected),
		"$job ends $expected after the crash");
}

# 1. kill -9 of the engine during a property job
$node->safe_psql('postgres', q{
	SELECT fleet.create_job('{"id": "property-job", "displayName": "Property", "group": "all",
	  "batch": {"type": "percentage", "value": 25},
	  "data": [{"type": "property", "target": "dtmi:com:example:Thermostat;1", "path": "targetTemperature", "value": 22}]}');
});
wait_mid_job('property-job');
my $pid = $node->safe_psql('postgres', 'SELECT fleet_internal.engine_pid()');
ok($pid =~ /^\d+$/, 'the engine runs');
kill 'KILL', $pid;
wait_finished('property-job', 'completed');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE status = 'completed') || ' ' || count(*)
		  FROM fleet.job_devices WHERE job_id = 'property-job'}),
	"$devices $devices", 'every device completed, none twice');
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT device_id) || ' ' ||
		       (SELECT count(*) FROM fleet.devices WHERE properties = '{"targetTemperature": 22}')
		  FROM device_updates}),
	"$devices $devices $devices", 'each device updated exactly once, with the value');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM fleet.job_batches WHERE job_id = 'property-job' AND status = 'completed'"),
	'4', 'all four batches completed');

# 2. kill -9 of the engine during a command job (simulated devices answer)
$node->safe_psql('postgres', q{
	UPDATE fleet.devices SET simulated = true;
	SELECT fleet.create_job('{"id": "command-job", "displayName": "Command", "group": "all",
	  "data": [{"type": "command", "target": "dtmi:com:example:Thermostat;1", "path": "getMaxMinReport",
	            "value": "2027-01-01T00:00:00Z"}]}');
});
wait_mid_job('command-job');
$pid = $node->safe_psql('postgres', 'SELECT fleet_internal.engine_pid()');
kill 'KILL', $pid;
wait_finished('command-job', 'completed');
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT device_id) || ' ' ||
		       count(*) FILTER (WHERE status = 'completed' AND gateway = 'simulator')
		  FROM fleet.command_deliveries WHERE job_id = 'command-job'}),
	"$devices $devices $devices", 'one completed delivery per device');
is( $node->safe_psql('postgres', q{
		SELECT sum(completed) || ' ' || sum(failed) || ' ' ||
		       (SELECT count(*) FROM fleet.command_windows WHERE job_id = 'command-job')
		  FROM fleet.job_batches WHERE job_id = 'command-job'}),
	"$devices 0 0", 'the batches count every device once, and no window is left open');

# 3. kill -9 of the engine while gateways answer a command job: the crash
# restarts the server and cuts the gateways off; they reconnect, commands
# claimed before the crash and never answered time out, and every answer
# taken is taken once
$node->safe_psql('postgres', q{
	UPDATE fleet.devices SET simulated = false;
	SELECT fleet.create_job('{"id": "gateway-job", "displayName": "Gateways", "group": "all",
	  "batch": {"type": "number", "value": 25000},
	  "data": [{"type": "command", "target": "dtmi:com:example:Thermostat;1", "path": "getMaxMinReport",
	            "value": "2027-01-01T00:00:00Z"}]}');
});
# (they wait out the timeouts that end the first batch before the next opens)
my @gateways = ('fleet-sim', '-d', $node->connstr('postgres'), '--connections', '4', '--latency', '20',
	'--idle-exit', '12', '--quiet');
my ($sim_out, $sim_err) = ('', '');
my $sim = IPC::Run::start(\@gateways, '<', \undef, '>', \$sim_out, '2>', \$sim_err);
wait_mid_job('gateway-job');
$pid = $node->safe_psql('postgres', 'SELECT fleet_internal.engine_pid()');
kill 'KILL', $pid;
$sim->finish;
like($sim_err, qr/could not (claim commands|report answers)/, 'the crash cut the gateways off');
my ($before) = $sim_out =~ /answered (\d+) commands/;
ok($node->poll_query_until('postgres', 'SELECT fleet_internal.engine_pid() IS NOT NULL'), 'the server is back');
($sim_out, $sim_err) = ('', '');
IPC::Run::run(\@gateways, '<', \undef, '>', \$sim_out, '2>', \$sim_err);
my ($after) = $sim_out =~ /answered (\d+) commands/;
wait_finished('gateway-job', 'failed');
my ($completed, $timed_out, $total) = split / /, $node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE status = 'completed') || ' ' ||
	       count(*) FILTER (WHERE status = 'failed' AND error = 'timed out' AND gateway IS NOT NULL) || ' ' || count(*)
	  FROM fleet.job_devices WHERE job_id = 'gateway-job'});
is($total, $devices, 'one row per device');
is($completed + $timed_out, $devices, 'every device answered or timed out, nothing else');
is($before + $after, $completed, "each answer taken once ($before before the crash, $after after)");
cmp_ok($timed_out, '<=', 4 * 100, "only commands claimed when the crash came timed out ($timed_out)");
is( $node->safe_psql('postgres', q{
		SELECT sum(completed) || ' ' || sum(failed) || ' ' ||
		       (SELECT count(*) FROM fleet.command_windows WHERE job_id = 'gateway-job')
		  FROM fleet.job_batches WHERE job_id = 'gateway-job'}),
	"$completed $timed_out 0", 'the batches count every device once');

# 4. an immediate shutdown in the middle of a batch
$node->safe_psql('postgres', q{
	UPDATE fleet.devices SET simulated = false;
	TRUNCATE device_updates;
	SELECT fleet.create_job('{"id": "shutdown-job", "displayName": "Shutdown", "group": "all",
	  "batch": {"type": "number", "value": 50000},
	  "data": [{"type": "property", "target": "dtmi:com:example:Thermostat;1", "path": "targetTemperature", "value": 23}]}');
});
wait_mid_job('shutdown-job');
$node->stop('immediate');
$node->start;
wait_finished('shutdown-job', 'completed');
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT device_id) || ' ' ||
		       (SELECT count(*) FROM fleet.devices WHERE properties = '{"targetTemperature": 23}')
		  FROM device_updates}),
	"$devices $devices $devices", 'after an immediate shutdown each device was updated exactly once');
is($node->safe_psql('postgres', q{
		SELECT string_agg(batch || ':' || size || ':' || status, ' ' ORDER BY batch)
		  FROM fleet.job_batches WHERE job_id = 'shutdown-job'}),
	'1:50000:completed 2:10000:completed', 'both batches completed');

$node->stop;
done_testing();
