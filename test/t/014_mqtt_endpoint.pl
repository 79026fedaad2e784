# The MQTT device endpoint with real parts: Debian's mosquitto with the
# fleet_mqtt plugin, fleet-bridge, and devices built on the stock Azure IoT
# Node SDK (test/node, installed from npm at pinned versions).  Devices
# provision through DPS with keys from fleet.export_devices() and connect;
# command jobs reach them as direct methods, property jobs as desired
# patches they acknowledge; twins, reported properties, telemetry and
# connection state work; every refusal is refused and counted; and a job
# survives kill -9 of the bridge and a restart of the broker.
use strict;
use warnings;

use Cwd;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $top = getcwd();
for my $part ('tools/fleet-mqtt/fleet_mqtt.so', 'tools/fleet-bridge/fleet-bridge', 'test/node/node_modules/azure-iot-device')
{
	BAIL_OUT("$part is missing: run make test (it builds the endpoint and installs the test devices)")
	  unless -e "$top/$part";
}

my $node = PostgreSQL::Test::Cluster->new('mqtt_endpoint');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_fleet'
fleet.database_name = 'postgres'
fleet.engine_naptime = '100ms'
fleet.command_timeout = '30s'
});
$node->start;

my $template = slurp_file('test/data/thermostat-1.json');
$template =~ s/'/''/g;
$node->safe_psql('postgres', qq{
	CREATE EXTENSION pg_fleet;
	SELECT fleet.import_template('$template');
	SELECT fleet.create_device('d-' || i, template => 'dtmi:com:example:Thermostat;1') FROM generate_series(1, 9) i;
	-- a group a few devices name, to be disabled
	SELECT fleet.import_enrollment_group('line-2', '{"displayName": "Line 2", "type": "iot",
	    "attestation": {"type": "symmetricKey"}}');
	SELECT fleet.update_device('d-9', '{"enrollmentGroup": "line-2"}');
});
sub group_of
{
	my ($id, @devices) = @_;
	my $pattern = '^(' . join('|', @devices) . ')$';
	$node->safe_psql('postgres', qq{
		SELECT fleet.create_device_group('$id', '$id', 'dtmi:com:example:Thermostat;1',
		                                 '\$.id like_regex "$pattern"')});
}

my $dir = PostgreSQL::Test::Utils::tempdir;
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $hub = 'pg-fleet.localhost';
my $scope = '0ne00FLEET';
my $conninfo = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres';

sub endpoint
{
	my @args = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ "$top/tools/mqtt/endpoint.sh", @args ], '>', \$out, '2>', \$err);
	diag("endpoint.sh @args: $out$err") unless $ok;
	return $ok;
}
ok(endpoint('start', $dir, $port, $conninfo, $hub, $scope), 'the broker and the bridge start');
$ENV{NODE_EXTRA_CA_CERTS} = "$dir/ca.crt";    # for the provisioning client

sub key_of
{
	my ($id) = @_;
	return $node->safe_psql('postgres',
		qq{SELECT "IOTC_SASKEY_PRIMARY" FROM fleet.export_devices() WHERE "IOTC_DEVICEID" = '$id'});
}
my $group_key = $node->safe_psql('postgres',
	q{SELECT primary_key FROM fleet.enrollment_groups WHERE id = 'SAS-IoT-Devices'});

# A device running test/node/device.js; its output is read as it comes.
my @devices;
sub start_device
{
	my ($id, @args) = @_;
	my $device = { id => $id, out => '', err => '' };
	$device->{handle} = IPC::Run::start(
		[ 'node', "$top/test/node/device.js", '--id', $id, '--ca', "$dir/ca.crt", '--gateway', "localhost:$port", @args ],
		'>', \$device->{out}, '2>', \$device->{err});
	push @devices, $device;
	return $device;
}

# Waits until the device printed an event matching the pattern.
sub device_says
{
	my ($device, $pattern, $what, $timeout) = @_;
	my $deadline = time() + ($timeout // 60);
	while (time() < $deadline)
	{
		$device->{handle}->pump_nb if $device->{handle}->pumpable;
		if ($device->{out} =~ $pattern)
		{
			pass($what);
			return 1;
		}
		usleep(100_000);
	}
	fail($what);
	diag("$device->{id} printed:\n$device->{out}$device->{err}");
	return 0;
}

sub stop_device
{
	my ($device) = @_;
	$device->{handle}->signal('TERM') if $device->{handle}->pumpable;
	eval { $device->{handle}->finish; };
	$device->{handle}->kill_kill;
}

# A bare client (test/node/raw-client.js), run to its end.
sub raw_client
{
	my (@args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'node', "$top/test/node/raw-client.js", '--hub', $hub, '--port', $port, '--ca', "$dir/ca.crt", @args ],
		'>', \$out, '2>', \$err);
	return $out . $err;
}

sub job_outcomes
{
	my ($job) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT string_agg(device_id || ':' || status, ' ' ORDER BY device_id)
		  FROM fleet.job_devices WHERE job_id = '$job'});
}

sub command_job
{
	my ($id, $group) = @_;
	$node->safe_psql('postgres', qq{
		SELECT fleet.create_job('{"id": "$id", "displayName": "$id", "group": "$group",
		    "data": [{"type": "command", "target": "dtmi:com:example:Thermostat;1",
		              "path": "getMaxMinReport", "value": "2027-01-01T00:00:00Z"}]}')});
}

sub wait_job_ends
{
	my ($job) = @_;
	ok( $node->poll_query_until('postgres',
			"SELECT status IN ('completed', 'failed', 'cancelled') FROM fleet.jobs WHERE id = '$job'"),
		"job $job ends");
}

# Waits until the broker's log has a line.
sub wait_for_log
{
	my ($pattern) = @_;
	for (1 .. 300)
	{
		return 1 if slurp_file("$dir/mosquitto.log") =~ $pattern;
		usleep(100_000);
	}
	return 0;
}

# ---------------------------------------------------------------------
# Provisioning, the IoT Central way

my $d1 = start_device('d-1', '--dps', "localhost:$port", '--scope', $scope, '--key', key_of('d-1'),
	'--ack-properties', '--report', '{"serialNumber": "SN-1"}');
device_says($d1, qr/"event":"registered","assignedHub":"$hub","deviceId":"d-1"/,
	'a device provisions through DPS with its key from fleet.export_devices()');
device_says($d1, qr/"event":"ready"/, 'and connects to the hub DPS assigned');

my $d2 = start_device('d-2', '--dps', "localhost:$port", '--scope', $scope, '--group-key', $group_key,
	'--ack-properties', '--telemetry', '3');
device_says($d2, qr/"event":"ready"/, 'a device given the enrollment group key derives its own, provisions and connects');

my $stranger = start_device('new-1', '--dps', "localhost:$port", '--scope', $scope, '--group-key', $group_key);
device_says($stranger, qr/"event":"failed".*ProvisioningRegistrationFailedError/,
	'an id that is not registered is refused when its group does not register devices');
ok( $node->poll_query_until('postgres',
		q{SELECT last_client_id = 'new-1' FROM fleet.endpoint_refusals WHERE reason = 'registration refused'}),
	'the refused registration is counted');
like(slurp_file("$dir/bridge.log"),
	qr/refused the registration of "new-1": device "new-1" is not registered and enrollment group "SAS-IoT-Devices" does not register devices itself/,
	'and the bridge says why');
$node->safe_psql('postgres',
	q{SELECT fleet.set_enrollment_group_auto_register('SAS-IoT-Devices', true, 'dtmi:com:example:Thermostat;1')});
$stranger = start_device('new-1', '--dps', "localhost:$port", '--scope', $scope, '--group-key', $group_key,
	'--exit-after-ms', '500');
device_says($stranger, qr/"event":"ready"/, 'and registered, then connected, once the group registers devices itself');
is($node->safe_psql('postgres', q{SELECT template_id || ' ' || organization_id FROM fleet.devices WHERE id = 'new-1'}),
	'dtmi:com:example:Thermostat;1 root', "in the group's organization, with its template");

# ---------------------------------------------------------------------
# Command jobs as direct methods

my $d3 = start_device('d-3', '--hub', $hub, '--key', key_of('d-3'), '--fail-method', 'getMaxMinReport=500');
device_says($d3, qr/"event":"ready"/, 'a device connects with its connection string');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 3 FROM fleet.devices WHERE id IN ('d-1', 'd-2', 'd-3') AND endpoint_listens & 1 = 1}),
	'three devices listen for direct methods');
group_of('first-three', 'd-1', 'd-2', 'd-3');
command_job('report-1', 'first-three');
wait_job_ends('report-1');
is(job_outcomes('report-1'), 'd-1:completed d-2:completed d-3:failed',
	'a command job completes on two devices and fails on the one that answers 500');
like($node->safe_psql('postgres', q{SELECT error FROM fleet.job_devices WHERE job_id = 'report-1' AND device_id = 'd-3'}),
	qr/command failed with status 500/, 'with its answer as the reason');
device_says($d1, qr/"event":"method","name":"getMaxMinReport","payload":"2027-01-01T00:00:00Z"/,
	'the device got the request payload');

# a device that connects after its batch started gets its command in time
group_of('late', 'd-4');
command_job('report-late', 'late');
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'queued' FROM fleet.command_deliveries WHERE job_id = 'report-late'}),
	'the command of an offline device waits, queued');
my $d4 = start_device('d-4', '--hub', $hub, '--key', key_of('d-4'));
wait_job_ends('report-late');
is(job_outcomes('report-late'), 'd-4:completed', 'a device that connects after its batch started still gets its command');

# ---------------------------------------------------------------------
# Property jobs as desired patches; twins and reported properties

group_of('one-and-five', 'd-1', 'd-5');
$node->safe_psql('postgres', q{
	SELECT fleet.create_job('{"id": "target-22", "displayName": "Target 22", "group": "one-and-five",
	    "data": [{"type": "property", "target": "dtmi:com:example:Thermostat;1",
	              "path": "targetTemperature", "value": 22.5}]}')});
wait_job_ends('target-22');
device_says($d1, qr/"event":"desired","patch":\{[^}]*"targetTemperature":22.5/, "the job's patch reaches a connected device");
device_says($d1, qr/"event":"acknowledged","properties":\["targetTemperature"\]/, 'which acknowledges it');
ok( $node->poll_query_until('postgres',
		q{SELECT string_agg(device_id || ':' || status, ' ' ORDER BY device_id) = 'd-1:synced d-5:pending'
		    FROM fleet.device_property_sync WHERE property = 'targetTemperature'}),
	'fleet.device_property_sync: synced where it was acknowledged, pending on the offline device');
my $d5 = start_device('d-5', '--hub', $hub, '--key', key_of('d-5'), '--ack-properties', '--get-twin');
device_says($d5, qr/"event":"twin","desired":\{[^}]*"targetTemperature":22.5/,
	'the device that was offline gets the change from its twin GET on connect');
ok( $node->poll_query_until('postgres',
		q{SELECT status = 'synced' FROM fleet.device_property_sync WHERE device_id = 'd-5'}),
	'and its acknowledgement is stored');

is($node->safe_psql('postgres', q{SELECT reported ->> 'serialNumber' FROM fleet.devices WHERE id = 'd-1'}),
	'SN-1', 'reported properties land in fleet.devices');
ok( $node->poll_query_until('postgres', q{SELECT telemetry_messages = 3 FROM fleet.devices WHERE id = 'd-2'}),
	'telemetry is acknowledged and counted');
is($node->safe_psql('postgres', q{
		SELECT string_agg(id, ' ' ORDER BY id) FROM fleet.devices
		 WHERE fleet.device_document(devices) @@ '$.connected == true'}),
	'd-1 d-2 d-3 d-4 d-5', 'connection state is on the devices, for group filters');
my $twin_out = raw_client('--id', 'd-6', '--key', key_of('d-6'), '--subscribe', '$iothub/twin/res/#',
	'--publish', '$iothub/twin/GET/?$rid=42|', '--wait-ms', '2000');
my ($twin_json) = $twin_out =~ /"event":"message","topic":"\$iothub\/twin\/res\/200\/\?\$rid=42","payload":("(?:[^"\\]|\\.)*")/;
is_deeply($twin_json ? decode_json(decode_json("[$twin_json]")->[0]) : undef,
	{ desired => { '$version' => 1 }, reported => { '$version' => 1 } },
	'twin GET answers as IoT Hub does');

# ---------------------------------------------------------------------
# Refusals, each counted for the operator

my $wrong = start_device('d-7', '--hub', $hub, '--key', key_of('d-8'));
device_says($wrong, qr/"event":"failed"/, 'a wrong key is refused');
like(raw_client('--id', 'd-7', '--key', key_of('d-7'), '--expires-in', '-60'), qr/"event":"refused"/,
	'an expired token is refused');
like(raw_client('--id', 'd-7', '--token-device', 'd-8', '--key', key_of('d-8')), qr/"event":"refused"/,
	"another device's token is refused");
like(raw_client('--id', 'ghost', '--key', key_of('d-8')), qr/"event":"refused"/, 'an unknown device is refused');

# another device's topics: refused, and nothing crosses between devices
my $other_out = '';
my $other = IPC::Run::start(
	[ 'node', "$top/test/node/raw-client.js", '--hub', $hub, '--port', $port, '--ca', "$dir/ca.crt",
	  '--id', 'd-8', '--key', key_of('d-8'), '--subscribe', '$iothub/twin/res/#', '--subscribe', '$iothub/methods/POST/#',
	  '--wait-ms', '4000' ], '>', \$other_out, '2>', \$other_out);
usleep(1_500_000);
my $nosy = raw_client('--id', 'd-7', '--key', key_of('d-7'),
	'--subscribe', 'devices/d-8/messages/devicebound/#', '--subscribe', '#',
	'--publish', 'devices/d-8/messages/events/|{}', '--publish', '$iothub/methods/POST/reboot/?$rid=1|{}',
	'--subscribe', '$iothub/twin/res/#', '--publish', '$iothub/twin/GET/?$rid=7|', '--wait-ms', '1500');
like($nosy, qr/"filter":"devices\/d-8\/messages\/devicebound\/#","granted":\[128\]/,
	"a subscription to another device's topics is refused");
like($nosy, qr/"filter":"#","granted":\[128\]/, 'and to everything');
like($nosy, qr/"topic":"\$iothub\/twin\/res\/200\/\?\$rid=7"/, 'a device gets its own twin answer');
$other->finish;
unlike($other_out, qr/"event":"message"/, "another device subscribed to the same topics gets nothing of it");

# a token that runs out during the session ends it
my $short = raw_client('--id', 'd-6', '--key', key_of('d-6'), '--expires-in', '3', '--wait-ms', '6000');
like($short, qr/"event":"connected"\}\n\{"event":"closed"\}\n\{"event":"done"\}/,
	'a session whose token expires is closed then');
ok(wait_for_log(qr/refused client "d-6": expired token: disconnected/), 'and the broker says why');

# a rotated key: the old one is refused, the new one taken within a second
my $old_key = key_of('d-6');
$node->safe_psql('postgres', q{SELECT fleet.rotate_enrollment_group_key('SAS-IoT-Devices', 'primary')});
isnt(key_of('d-6'), $old_key, 'rotating the group key changes the device key');
my $rotated = 0;
for (1 .. 50)
{
	last if ($rotated = raw_client('--id', 'd-6', '--key', key_of('d-6'), '--wait-ms', '100') =~ /"event":"connected"/);
	usleep(200_000);
}
ok($rotated, 'the new key is taken');
like(raw_client('--id', 'd-6', '--key', $old_key), qr/"event":"refused"/, 'the old one is refused');

# a deleted device goes, and cannot come back
$node->safe_psql('postgres', q{SELECT fleet.delete_device('d-4')});
ok(wait_for_log(qr/refused client "d-4": device deleted: disconnected/), 'a deleted device is disconnected');
like(raw_client('--id', 'd-4', '--key', key_of('d-5') ), qr/"event":"refused"/, 'and refused');

# a disabled group's devices go, and cannot come back
my $key9 = $node->safe_psql('postgres', q{SELECT primary_key FROM fleet.device_keys('d-9')});
my $d9 = start_device('d-9', '--hub', $hub, '--key', $key9);
device_says($d9, qr/"event":"ready"/, 'a device of a second enrollment group connects');
$node->safe_psql('postgres', q{SELECT fleet.update_enrollment_group('line-2', '{"enabled": false}')});
ok(wait_for_log(qr/refused client "d-9": disabled enrollment group: disconnected/),
	'and is disconnected when its group is disabled');
ok( $node->poll_query_until('postgres', q{SELECT connection_state = 'disconnected' FROM fleet.devices WHERE id = 'd-9'}),
	'and shown disconnected');
like(raw_client('--id', 'd-9', '--key', $key9), qr/"event":"refused"/, 'and refused');

ok( $node->poll_query_until('postgres', q{
		SELECT count(DISTINCT reason) >= 7 FROM fleet.endpoint_refusals
		 WHERE reason IN ('wrong key', 'expired token', 'token of another device', 'unknown device',
		                  'subscription not allowed', 'topic not allowed', 'device deleted', 'disabled enrollment group')}),
	'each refusal is counted in fleet.endpoint_refusals');
my $log = slurp_file("$dir/mosquitto.log");
like($log, qr/fleet-mqtt: refused client "d-7": wrong key/, 'and logged by the broker');
unlike($log, qr/SharedAccessSignature|\Q$group_key\E/, 'with no token or key in the log');

# ---------------------------------------------------------------------
# kill -9 of the bridge mid-job, then a broker restart

stop_device($_) for ($d1, $d2, $d3, $d5);
my @slow = map {
	start_device($_, '--hub', $hub, '--key', key_of($_), '--answer-delay-ms', '2000')
} ('d-1', 'd-2', 'd-3', 'd-5');
device_says($_, qr/"event":"ready"/, "$_->{id} connects to answer slowly") for @slow;
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 4 FROM fleet.devices WHERE id IN ('d-1', 'd-2', 'd-3', 'd-5') AND endpoint_listens & 1 = 1}),
	'four devices listen');
group_of('four', 'd-1', 'd-2', 'd-3', 'd-5');
command_job('report-crash', 'four');
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 4 FROM fleet.command_deliveries WHERE job_id = 'report-crash' AND status = 'claimed'}),
	'the bridge claimed and sent the commands');
ok(endpoint('stop-bridge', $dir, 'KILL'), 'kill -9 of the bridge while devices answer');
usleep(3_000_000);
ok(endpoint('start-bridge', $dir), 'the bridge starts again');
wait_job_ends('report-crash');
is(job_outcomes('report-crash'), 'd-1:completed d-2:completed d-3:completed d-5:completed',
	'the job ends with every device completed: the answers waited in the broker for the bridge');
my $rids = $node->safe_psql('postgres',
	q{SELECT string_agg(delivery_id::text, '|') FROM fleet.job_devices WHERE job_id = 'report-crash'});
for my $device (@slow)
{
	$device->{handle}->pump_nb if $device->{handle}->pumpable;
	my @calls = $device->{out} =~ /"event":"method"[^\n]*"rid":"($rids)"/g;
	is(scalar(@calls), 1, "$device->{id} got the command once");
}

my $before_restart = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
ok(endpoint('stop-broker', $dir), 'the broker stops');
usleep(2_000_000);
ok(endpoint('start-broker', $dir), 'the broker starts again');
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 4 FROM fleet.devices
		 WHERE id IN ('d-1', 'd-2', 'd-3', 'd-5') AND connection_state = 'connected' AND endpoint_listens & 1 = 1
		   AND connection_changed_at > '$before_restart'}),
	'the devices reconnect by themselves');
command_job('report-after-restart', 'four');
wait_job_ends('report-after-restart');
is(job_outcomes('report-after-restart'), 'd-1:completed d-2:completed d-3:completed d-5:completed',
	'and a job completes on them');

stop_device($_) for @devices;
endpoint('stop', $dir);
$node->stop;
done_testing();
