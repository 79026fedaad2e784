# pg_fleet on Citus: a coordinator and two workers on this machine, the
# extension created on the coordinator (Citus creates it on the workers),
# fleet.distribute(), then the same SQL as on one server: an import, a
# group, a property job and command jobs answered by fleet-sim, stop and
# resume, a kill -9 of the coordinator's engine in the middle of a job with
# every device dealt with exactly once, and organizations enforced for login
# roles on the distributed tables.
#
# Runs only where the citus extension is installed (tools/run-tests.sh
# skips it otherwise, saying so; "make test-citus" runs it alone).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my @nodes;
for my $name ('coordinator', 'worker1', 'worker2')
{
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'citus,pg_cron,pg_fleet'\n"
		  . "cron.database_name = 'postgres'\n"
		  . "fleet.engine_naptime = '100ms'\n"
		  . "max_connections = 100\n"
		  . "max_worker_processes = 24\n"
		  # (a kill -9 of the engine restarts the coordinator, as in production)
		  . "restart_after_crash = on\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION citus');
	push @nodes, $node;
}
my ($coordinator, @workers) = @nodes;
# (the nodes reach each other through the test's socket directory)
$coordinator->safe_psql('postgres',
	"SELECT citus_set_coordinator_host('" . $coordinator->host . "', " . $coordinator->port . ')');
$coordinator->safe_psql('postgres',
	"SELECT citus_add_node('" . $_->host . "', " . $_->port . ')') for @workers;
$coordinator->safe_psql('postgres', 'CREATE EXTENSION pg_fleet');

sub query { return $coordinator->safe_psql('postgres', shift); }

# --- the layout -------------------------------------------------------------
is($_->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_fleet'}),
	query(q{SELECT extversion FROM pg_extension WHERE extname = 'pg_fleet'}),
	'Citus created pg_fleet on ' . $_->name) for @workers;
is(query(q{SELECT string_agg(layout || ':' || n, ' ' ORDER BY layout)
             FROM (SELECT layout, count(*) AS n FROM fleet.distribute() GROUP BY 1) l}),
	'distributed:3 local:4 reference:16', 'fleet.distribute() spreads the tables');
is(query('SELECT count(*) FILTER (WHERE changed) FROM fleet.distribute()'), '0', 'and changes nothing the second time');
is(query(q{SELECT string_agg(logicalrelid::text, ' ' ORDER BY logicalrelid::text) FROM pg_dist_partition
            WHERE partmethod = 'h' AND colocationid =
                  (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'fleet.devices'::regclass)}),
	'fleet.devices fleet.job_device_attempts fleet.job_devices', 'co-located by device id');
my ($ok, $out, $err) = $workers[0]->psql('postgres', 'SELECT * FROM fleet.distribute()');
like($err, qr/runs on the Citus coordinator, and this node is a worker/, 'a worker refuses to distribute');

# no engine on the workers: each says why
$_->poll_query_until('postgres',
	q{SELECT not_running_because LIKE '%Citus worker%' FROM fleet.engine_status})
  or die 'the engine of ' . $_->name . ' did not step aside'
  for @workers;
pass('no engine runs on a worker');
ok($coordinator->poll_query_until('postgres', 'SELECT fleet_internal.engine_pid() IS NOT NULL'),
	'the coordinator runs the engine');

# --- an import, as on one server ------------------------------------------
my $devices = 3000;
query(q{SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
  "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true},
               {"@type": "Command", "name": "blink", "request": {"name": "times", "schema": "integer"}}]}')});
my $csv = "IOTC_DEVICEID,IOTC_DEVICENAME\n"
  . join('', map { sprintf("lamp-%05d,Lamp %d\n", $_, $_) } 1 .. $devices)
  . "lamp-00001,the same id again\nnot an id!,bad\n";
my $csv_file = PostgreSQL::Test::Utils::tempdir() . '/devices.csv';
PostgreSQL::Test::Utils::append_to_file($csv_file, $csv);
$coordinator->psql('postgres',
	"SET fleet.import_template = 'dtmi:test:Lamp;1';\n"
	  . "\\copy fleet.device_import FROM '$csv_file' WITH (FORMAT csv, HEADER match)",
	stderr => \$err);
like($err, qr/imported $devices of @{[$devices + 2]} devices, rejected 2/, 'the import takes the valid rows');
is(query(q{SELECT string_agg(line || ':' || error, ' | ' ORDER BY line) FROM fleet.device_operation_errors}),
	'3002:device ID "lamp-00001" repeats line 2 of this file; only the first is imported | '
	  . '3003:device ID "not an id!" contains a space; use only letters, digits and "-"',
	'and records why the others were refused')
  or diag(query('SELECT string_agg(line || error, E\'\n\') FROM fleet.device_operation_errors'));
is(query('SELECT count(*) FROM fleet.devices'), $devices, 'the devices are there');
my $on_worker = q{SELECT coalesce(sum(r.result::int), 0)
                    FROM run_command_on_shards('fleet.devices', 'SELECT count(*) FROM %s') r
                    JOIN pg_dist_placement p ON p.shardid = r.shardid
                    JOIN pg_dist_node n ON n.groupid = p.groupid
                   WHERE n.nodeport = };
my ($on_first, $on_second) = map { query($on_worker . $_->port) } @workers;
ok($on_first > 0 && $on_second > 0 && $on_first + $on_second == $devices,
	"held by the workers' shards ($on_first and $on_second)");

# --- a group and a property job --------------------------------------------
query(q{SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1')});
query(q{SELECT fleet.create_job('{"id": "dim", "displayName": "Dim", "group": "lamps",
  "batch": {"type": "number", "value": 1000},
  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 3}]}')});
ok($coordinator->poll_query_until('postgres', q{SELECT status = 'completed' FROM fleet.jobs WHERE id = 'dim'}),
	'the property job completes');
is(query(q{SELECT count(*) FILTER (WHERE properties = '{"level": 3}' AND desired_version = 2) FROM fleet.devices}),
	$devices, 'every device got the property once');
is(query(q{SELECT string_agg(batch || ':' || completed, ' ' ORDER BY batch) FROM fleet.job_batches WHERE job_id = 'dim'}),
	'1:1000 2:1000 3:1000', 'batch by batch');

# --- command jobs answered by fleet-sim -------------------------------------
my @gateways = ('fleet-sim', '-d', $coordinator->connstr('postgres'), '--connections', '2', '--latency', '5',
	'--idle-exit', '3', '--quiet');
query(q{SELECT fleet.create_job('{"id": "blink", "displayName": "Blink", "group": "lamps",
  "batch": {"type": "number", "value": 1500},
  "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink", "value": 1}]}')});
IPC::Run::run(\@gateways, '<', \undef, '>', \$out, '2>', \$err);
like($out, qr/answered $devices commands/, 'fleet-sim answers every command once');
ok($coordinator->poll_query_until('postgres', q{SELECT status = 'completed' FROM fleet.jobs WHERE id = 'blink'}),
	'the command job completes');

# --- stop and resume --------------------------------------------------------
query(q{SELECT fleet.create_job('{"id": "brighten", "displayName": "Brighten", "group": "lamps",
  "batch": {"type": "number", "value": 1000},
  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 9}]}')});
query(q{SELECT fleet.stop_job('brighten')});
is(query(q{SELECT status FROM fleet.jobs WHERE id = 'brighten'}), 'stopped', 'a job stops');
query(q{SELECT fleet.resume_job('brighten')});
ok($coordinator->poll_query_until('postgres', q{SELECT status = 'completed' FROM fleet.jobs WHERE id = 'brighten'}),
	'and completes once resumed');
is(query(q{SELECT count(*) FROM fleet.devices WHERE properties = '{"level": 9}' AND desired_version = 3}),
	$devices, 'on every device, once');

# --- kill -9 of the coordinator's engine in the middle of a job -------------
# (a rate that spreads the job over seconds, so the kill comes mid-job)
query(q{SELECT fleet.create_job('{"id": "crash", "displayName": "Crash", "group": "lamps",
  "batch": {"type": "number", "value": 500},
  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 5}],
  "rollout": {"maximumPerMinute": 30000}}')});
$coordinator->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM fleet.job_devices WHERE job_id = 'crash' AND status = 'completed'})
  or die 'the job did not start';
my $pid = query('SELECT fleet_internal.engine_pid()');
kill 'KILL', $pid;
ok($coordinator->poll_query_until('postgres', 'SELECT fleet_internal.engine_pid() IS NOT NULL'),
	'the coordinator is back after the kill');
ok($coordinator->poll_query_until('postgres', q{SELECT status = 'completed' FROM fleet.jobs WHERE id = 'crash'}),
	'the job completes after it');
is(query(q{SELECT count(*) || ' ' || count(*) FILTER (WHERE status = 'completed') FROM fleet.job_devices
            WHERE job_id = 'crash'}),
	"$devices $devices", 'one completed row per device');
is(query(q{SELECT count(*) FROM fleet.devices WHERE properties = '{"level": 5}' AND desired_version = 4}),
	$devices, 'and each device changed exactly once');

# --- organizations, for login roles, on the distributed tables --------------
query(q{
	SELECT fleet.create_organization('east', 'East');
	SELECT fleet.create_organization('west', 'West');
	UPDATE fleet.devices SET organization_id = CASE WHEN id < 'lamp-01000' THEN 'east' ELSE 'west' END;
	CREATE ROLE regress_east_viewer LOGIN;
	CREATE ROLE regress_outsider LOGIN;
	SELECT fleet.grant_organization('east', 'regress_east_viewer', 'viewer');
	SELECT fleet.create_device_group('east-lamps', 'East lamps', 'dtmi:test:Lamp;1', organization => 'east');
	SELECT fleet.create_job('{"id": "east-job", "displayName": "East", "group": "east-lamps",
	  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 1}]}');
});
ok($coordinator->poll_query_until('postgres', q{SELECT status = 'completed' FROM fleet.jobs WHERE id = 'east-job'}),
	'a job of one organization completes');
# Citus applies each shard's own copy of the policies on the node that
# holds it, as the member: the row scope is computed there from that node's
# copies of the reference tables (fleet_internal.row_scope_on_node)
my %as = map { $_ => $coordinator->connstr('postgres') . " user=$_" } ('regress_east_viewer', 'regress_outsider');
my $as_viewer = sub { return $coordinator->safe_psql('postgres', shift, connstr => $as{regress_east_viewer}); };
is($as_viewer->(q{SELECT count(*) || ' ' || count(*) FILTER (WHERE organization_id = 'east') FROM fleet.devices}),
	'999 999', "a viewer reads its organization's devices on every shard, and no others");
is($as_viewer->(q{SELECT string_agg(id, ' ' ORDER BY id) FROM fleet.jobs}), 'east-job', 'and its jobs');
is($as_viewer->(q{SELECT count(*) FROM fleet.job_devices}), '999', "and their devices' rows");
is($as_viewer->(q{SELECT fleet.get_device('lamp-00500') ->> 'organization'}), 'east', 'and gets its devices');
($ok, $out, $err) = $coordinator->psql('postgres', q{SELECT fleet.get_device('lamp-01500')},
	connstr => $as{regress_east_viewer});
like($err, qr/device "lamp-01500" does not exist/, "another organization's device does not exist for it");
is($coordinator->safe_psql('postgres',
		q{SELECT (SELECT count(*) FROM fleet.devices) + (SELECT count(*) FROM fleet.job_devices)
		       + (SELECT count(*) FROM fleet.jobs)},
		connstr => $as{regress_outsider}),
	'0', 'a role without an organization reads nothing');
($ok, $out, $err) = $coordinator->psql('postgres', q{UPDATE fleet.devices SET display_name = 'x'},
	connstr => $as{regress_east_viewer});
like($err, qr/permission denied/, 'and members write only through the API');
is(query(q{SELECT count(*) FROM fleet.devices WHERE display_name = 'x'}), '0', 'nothing was written');

$_->stop for reverse @nodes;
done_testing();
