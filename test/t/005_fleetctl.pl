# fleetctl against a temporary cluster: imports in every shape the header
# check knows, its refusals and exit statuses, the export round trip, jobs
# (create, watch, results) and the table/JSON listings.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('fleetctl');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,pg_fleet'
cron.database_name = 'postgres'
fleet.engine_naptime = '200ms'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_fleet');
my $connstr = $node->connstr('postgres');
my $tmp = PostgreSQL::Test::Utils::tempdir;

# fleetctl ARGS...: (exit status, stdout, stderr)
sub fleetctl
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'fleetctl', '-d', $connstr, @_ ], '<', \undef, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

sub write_file
{
	my ($name, $content) = @_;
	my $path = "$tmp/$name";
	open(my $fh, '>:raw', $path) or die "could not write $path: $!";
	print $fh $content;
	close($fh);
	return $path;
}

my ($rc, $out, $err);

($rc, $out) = fleetctl('--version');
is($rc, 0, '--version');
like($out, qr/^fleetctl \(pg_fleet\) \d/, 'it names itself');
for my $command ([ 'import', '--help' ], [ 'export', '--help' ], [ 'job', '--help' ], [ 'schedule', '--help' ])
{
	($rc, $out) = fleetctl(@$command);
	ok($rc == 0 && $out =~ /^Usage/m, "@$command");
}
($rc, $out, $err) = fleetctl('frobnicate');
is($rc, 2, 'an unknown command is a usage error (2)');

# a 10,000-row import: not a terminal, so plain progress lines
my $csv = "IOTC_DEVICEID,IOTC_DEVICENAME\r\n";
$csv .= sprintf("lamp-%05d,\"Lamp %d, hall\"\r\n", $_, $_) for 1 .. 10000;
my $big = write_file('lamps.csv', $csv);
($rc, $out, $err) = fleetctl('import', $big);
is($rc, 0, '10,000 rows import');
like($out, qr/^import \d+: 10,000 rows, 10,000 devices imported, 0 rejected$/m, 'the summary says so');
my @progress = grep { /^fleetctl: import .*lamps\.csv: +\d+%, [\d,]+ rows, / } split /\n/, $err;
cmp_ok(scalar(@progress), '>=', 2, 'with plain progress lines (' . scalar(@progress) . ')');
like($progress[-1], qr/100%, 10,000 rows/, 'the last at 100 %');
unlike($err, qr/\r|\e\[/, 'and no terminal control characters');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || min(display_name) FROM fleet.devices}),
	'10000 Lamp 1, hall', 'the devices are there with their names');

# a byte-order mark, reordered columns, no name column
($rc, $out) = fleetctl('import', write_file('bom.csv', "\xEF\xBB\xBFIOTC_DEVICEID,IOTC_DEVICENAME\r\nbom-1,Boiler\r\n"));
ok($rc == 0 && $out =~ /1 devices imported/, 'a file with a byte-order mark imports');
($rc, $out) = fleetctl('import', write_file('reordered.csv', "IOTC_DEVICENAME,IOTC_DEVICEID\nFront door,door-1\n"));
ok($rc == 0 && $out =~ /1 devices imported/, 'columns in another order import');
is($node->safe_psql('postgres', q{SELECT display_name FROM fleet.devices WHERE id = 'door-1'}),
	'Front door', 'each value in its column');
($rc, $out) = fleetctl('import', write_file('ids.csv', "IOTC_DEVICEID\nbare-1\nbare-2\n"), '--organization', 'root');
ok($rc == 0 && $out =~ /2 devices imported/, 'a file without the name column imports');
is($node->safe_psql('postgres', q{SELECT display_name FROM fleet.devices WHERE id = 'bare-2'}),
	'bare-2', 'the name defaults to the id');

# rejected rows: exit 1, and the file of them
my $rejected = "$tmp/rejected.csv";
($rc, $out, $err) = fleetctl('import', write_file('mixed.csv', "IOTC_DEVICEID\ngood-1\nbad id\ngood-1\n"),
	'--rejected', $rejected);
is($rc, 1, 'an import with rejected rows exits 1');
like($out, qr/3 rows, 1 devices imported, 2 rejected/, 'and says how many');
open(my $rf, '<', $rejected) or die;
my @rejected_lines = <$rf>;
close($rf);
is(scalar(@rejected_lines), 3, 'the rejected rows are written with a header');
like($rejected_lines[1], qr/^3,bad id,.*space/, 'each with its line and reason');

# refusals, before anything is sent
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM fleet.device_operations');
($rc, $out, $err) = fleetctl('import', write_file('bad.csv', "IOTC_DEVICEID,COLOUR\nx,red\n"));
is($rc, 6, 'an unknown column is a bad file (6)');
like($err, qr/unknown column "COLOUR"/, 'named');
($rc, $out, $err) = fleetctl('import', write_file('noid.csv', "IOTC_DEVICENAME\nx\n"));
ok($rc == 6 && $err =~ /no IOTC_DEVICEID column/, 'a header without IOTC_DEVICEID is refused');
($rc, $out, $err) = fleetctl('import', "$tmp/missing.csv");
ok($rc == 6 && $err =~ /cannot read ".*missing\.csv": No such file/, 'a missing file is refused (6)');
is($node->safe_psql('postgres', 'SELECT count(*) FROM fleet.device_operations'), $before,
	'none of them reached the server');

# an unreachable server, and a database without pg_fleet
my ($ur_out, $ur_err) = ('', '');
IPC::Run::run([ 'fleetctl', '-d', "host=$tmp port=1 connect_timeout=2", 'jobs' ], '<', \undef, '>', \$ur_out,
	'2>', \$ur_err);
is($? >> 8, 3, 'an unreachable server exits 3');
like($ur_err, qr/cannot connect to the server/, 'and says so');
$node->safe_psql('postgres', 'CREATE DATABASE empty');
IPC::Run::run([ 'fleetctl', '-d', $node->connstr('empty'), 'jobs' ], '<', \undef, '>', \$ur_out, '2>', \$ur_err);
is($? >> 8, 4, 'a database without pg_fleet exits 4');
like($ur_err, qr/pg_fleet is not installed in database "empty"/, 'and says so');

# the export round trip: export, delete, import the export, same devices
my $export = "$tmp/export.csv";
($rc, $out, $err) = fleetctl('export', '-o', $export);
is($rc, 0, 'export');
my $devices_query = q{SELECT md5(string_agg(id || ':' || display_name, ',' ORDER BY id)) FROM fleet.devices};
my $devices = $node->safe_psql('postgres', $devices_query);
$node->safe_psql('postgres', 'DELETE FROM fleet.devices');
($rc, $out) = fleetctl('import', $export);
is($rc, 0, 'the export imports as it is');
is($node->safe_psql('postgres', $devices_query), $devices, 'the same devices');
my $export2 = "$tmp/export2.csv";
fleetctl('export', '-o', $export2);
is(slurp_file($export2), slurp_file($export), 'with the same keys');
# in an exported file, a short record is one rejected row, not a failed import
($rc, $out) = fleetctl('import', write_file('short.csv',
	"IOTC_DEVICEID,IOTC_DEVICENAME,IOTC_SASKEY_PRIMARY,IOTC_SASKEY_SECONDARY,IOTC_X509THUMBPRINT_PRIMARY,IOTC_X509THUMBPRINT_SECONDARY\n"
	  . "short-1,Short,k1,k2,,\n,\nshort-2\n"));
ok($rc == 1 && $out =~ /3 rows, 2 devices imported, 1 rejected/, 'a short record in an exported file is rejected alone');
my $thumbprinted = slurp_file($export);
$thumbprinted =~ s/^(door-1,[^\n]*),,$/$1,ABCDEF0123456789ABCDEF0123456789ABCDEF01,/m;
($rc, $out, $err) = fleetctl('import', write_file('thumbprint.csv', $thumbprinted));
ok($rc == 6 && $err =~ /X509 thumbprint.*nothing was imported/, 'a thumbprint stops the import, told');

# jobs: create, watch to the end, results
$node->safe_psql('postgres', q{
	SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
	                               "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true}]}');
	UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1' WHERE id LIKE 'lamp-%';
	SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1');
	SELECT fleet.create_device_group('everything', 'Everything');
});
my $job = write_file('job.json', q{{"id": "dim", "displayName": "Dim the lamps", "group": "lamps",
	"batch": {"type": "number", "value": 2500},
	"data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 3}]}});
($rc, $out) = fleetctl('job', 'create', $job);
ok($rc == 0 && $out =~ /^job dim: pending$/m, 'job create queues the job');
($rc, $out, $err) = fleetctl('job', 'watch', 'dim', '--interval', '0.2');
is($rc, 0, 'job watch exits 0 on a completed job');
like($out, qr/^job dim: completed, 10,000 completed, 0 failed$/m, 'with its totals');
like($err, qr/^job dim: \w+, [\d,]+ of 10,000 done/m, 'and progress lines');
my $results = "$tmp/results.csv";
($rc, $out, $err) = fleetctl('job', 'results', 'dim', '-o', $results);
is($rc, 0, 'job results');
my @results = split /\n/, slurp_file($results);
is(scalar(@results), 10001, 'one line per device, and a header');
like($results[1], qr/^dim,lamp-00001,"Lamp 1, hall",1,completed,,/, "in the results log's columns");

# a cancelled job: watch exits 1
$job = write_file('cancel.json', q{{"id": "doomed", "displayName": "Doomed", "group": "everything",
	"cancellationThreshold": {"type": "number", "value": 1},
	"data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 1}]}});
fleetctl('job', 'create', $job);
($rc, $out) = fleetctl('job', 'watch', 'doomed', '--interval', '0.2');
is($rc, 1, 'job watch exits 1 on a cancelled job');
like($out, qr/^job doomed: cancelled/m, 'and says it was cancelled');
($rc, $out, $err) = fleetctl('job', 'create', write_file('broken.json', '{"displayName": '));
is($rc, 6, 'a job file that is not JSON is a bad file (6)');
($rc, $out, $err) = fleetctl('job', 'create', $job);
ok($rc == 7 && $err =~ /job "doomed" already exists/, "a refused job exits 7 with the server's reason");
($rc, $out) = fleetctl('job', 'rerun', 'doomed', '--id', 'doomed-again');
ok($rc == 0 && $out =~ /^job doomed-again: pending$/m, 'job rerun');

# a staged job: watch wakes on its events (a bound of a minute is never
# reached), shows why it waits, and job advance starts its next batch
$job = write_file('staged.json', q{{"id": "staged", "displayName": "Staged", "group": "lamps",
	"batch": {"type": "number", "value": 5000}, "rollout": {"promotion": {"mode": "manual"}},
	"data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 4}]}});
fleetctl('job', 'create', $job);
$node->poll_query_until('postgres', q{SELECT status = 'stopped' FROM fleet.jobs WHERE id = 'staged'})
  or die 'the staged job did not wait for its promotion';
my ($watch_out, $watch_err) = ('', '');
my $watch = IPC::Run::start([ 'fleetctl', '-d', $connstr, 'job', 'watch', 'staged', '--interval', '60' ],
	'<', \undef, '>', \$watch_out, '2>', \$watch_err);
sleep 1;
($rc, $out) = fleetctl('job', 'advance', 'staged');
ok($rc == 0 && $out =~ /^job staged: pending$/m, 'job advance starts the next batch');
my $started = time;
$watch->finish;
ok(time - $started < 30, 'job watch followed the events, not its one-minute bound');
is($? >> 8, 0, 'and exits 0 once the job completed');
like($watch_err, qr/^job staged: stopped, 5,000 of 10,000 done, 0 failed; waiting for promotion: batch 1 succeeded on 5000 of 5000 devices/m,
	'it showed why the job waited');
($rc, $out, $err) = fleetctl('job', 'advance', 'staged');
ok($rc == 7 && $err =~ /cannot advance job "staged": it is completed/, 'a job not waiting is not advanced');

# listings as a table and as JSON
($rc, $out) = fleetctl('jobs');
ok($rc == 0 && $out =~ /^id\s+name\s+type\s+status/ && $out =~ /^dim\s+Dim the lamps\s+property\s+completed\s+10000/m,
	'jobs prints a table');
($rc, $out) = fleetctl('--json', 'jobs');
ok($rc == 0 && $out =~ /^\[\{"id":/ && $out =~ /"id":"dim"/, 'jobs --json prints JSON');
($rc, $out) = fleetctl('schedule', 'list');
ok($rc == 0 && $out =~ /\(0 rows\)/, 'schedule list');

# a role in no organization sees no jobs, and may not export: exit 5
$node->safe_psql('postgres', 'CREATE ROLE outsider LOGIN');
IPC::Run::run([ 'fleetctl', '-d', $node->connstr('postgres') . ' user=outsider', 'jobs' ], '<', \undef, '>', \$ur_out,
	'2>', \$ur_err);
ok($? >> 8 == 0 && $ur_out =~ /\(0 rows\)/, 'a role in no organization sees no jobs');
IPC::Run::run([ 'fleetctl', '-d', $node->connstr('postgres') . ' user=outsider', 'export' ], '<', \undef, '>', \$ur_out,
	'2>', \$ur_err);
is($? >> 8, 5, 'permission denied exits 5');
like($ur_err, qr/permission denied to export devices/, 'and says so');

# every line of the file reaches the server as data: "\." alone (COPY's
# end-of-data marker) is a record like any other, here a rejected id, and
# the lines after it are imported
my $marker = write_file('marker.csv', "IOTC_DEVICEID\nx-1\n\\.\nx-2\nx-3\n");
($rc, $out, $err) = fleetctl('import', $marker);
is($rc, 1, 'a file with a "\\." line: rows were rejected (1)');
like($out, qr/import \d+: 4 rows, 3 devices imported, 1 rejected/, 'all four records arrived, three imported');
like($err, qr/line 3, "\\\.": /, 'the "\\." one rejected with its line');
is($node->safe_psql('postgres', q{SELECT string_agg(id, ',' ORDER BY id) FROM fleet.devices WHERE id LIKE 'x-%'}),
	'x-1,x-2,x-3', 'the lines after it were imported');

# the server's error names the file's line
my $bad = write_file('bad.csv', "IOTC_DEVICEID\nok-1\nbad-\xff\n");
($rc, $out, $err) = fleetctl('import', $bad);
is($rc, 7, 'a file the server cannot read is refused (7)');
like($err, qr/^fleetctl: error: the import failed.*invalid byte sequence.*\nfleetctl: detail: COPY device_import, line 3/ms,
	"in PostgreSQL's client style, with COPY's line");

# connection options as psql takes them: -h -p -U, a service file, -w
sub fleetctl_env
{
	my ($env, @args) = @_;
	my ($o, $e) = ('', '');
	local %ENV = (%ENV, %$env);
	IPC::Run::run([ 'fleetctl', @args ], '<', \undef, '>', \$o, '2>', \$e);
	return ($? >> 8, $o, $e);
}
my ($host, $port) = ($node->host, $node->port);
($rc, $out, $err) = fleetctl_env({ PGDATABASE => 'postgres' }, '-h', $host, '-p', $port, '-U', 'postgres', 'jobs');
ok($rc == 0 && $out =~ /^id\s/m, '-h, -p and -U connect as psql\'s do');
($rc, $out, $err) = fleetctl_env({}, 'jobs', '--host', $host, '--port', $port, '--dbname', 'postgres');
ok($rc == 0 && $out =~ /^id\s/m, 'also after the command, as long options');
my $services = write_file('pg_service.conf', "[fleet]\nhost=$host\nport=$port\ndbname=postgres\n");
($rc, $out, $err) = fleetctl_env({ PGSERVICEFILE => $services, PGSERVICE => 'fleet', PGHOST => '/nonexistent' }, 'jobs');
ok($rc == 0 && $out =~ /^id\s/m, 'PGSERVICE names a service from the service file');
($rc, $out, $err) = fleetctl_env({ PGSERVICEFILE => $services }, '-d', 'service=fleet', 'jobs');
ok($rc == 0, 'and so does -d service=NAME');
$node->safe_psql('postgres', "CREATE ROLE keyholder LOGIN PASSWORD 'sesame'");
$node->safe_psql('postgres', "SELECT fleet.grant_organization('root', 'keyholder', 'viewer')");
my $hba = $node->data_dir . '/pg_hba.conf';
my $hba_text = PostgreSQL::Test::Utils::slurp_file($hba);
open(my $hba_fh, '>', $hba) or die "could not write $hba: $!";
print $hba_fh "local all keyholder scram-sha-256\n$hba_text";
close($hba_fh);
$node->reload;
($rc, $out, $err) = fleetctl_env({ PGPASSWORD => undef }, '-h', $host, '-p', $port, '-U', 'keyholder', '-w', '-d', 'postgres', 'jobs');
ok($rc == 3 && $err =~ /password/, '-w: a server that wants a password is unreachable (3), with no prompt');
($rc, $out, $err) = fleetctl_env({ PGPASSWORD => 'sesame' }, '-h', $host, '-p', $port, '-U', 'keyholder', '-d', 'postgres', 'jobs');
ok($rc == 0, 'PGPASSWORD is used');
($rc, $out, $err) = fleetctl('-x', 'jobs');
ok($rc == 2 && $err =~ /^fleetctl: error: unknown option "-x"\nfleetctl: hint: Try "fleetctl --help"/,
	'an unknown option: a usage error (2) in the client style');

# Ctrl-C cancels what the server is doing: an import is rolled back whole,
# and recorded as failed
my $interrupted = "IOTC_DEVICEID\n";
$interrupted .= sprintf("int-%07d\n", $_) for 1 .. 1000000;
my $interrupted_path = write_file('interrupted.csv', $interrupted);
my ($int_out, $int_err) = ('', '');
my $int_import = IPC::Run::start([ 'fleetctl', '-d', $connstr, 'import', $interrupted_path ], '<', \undef,
	'>', \$int_out, '2>', \$int_err);
ok($node->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'COPY fleet.device_import%' AND state = 'active'}),
	'a big import is under way');
$int_import->signal('INT');
$int_import->finish;
is($? >> 8, 130, 'Ctrl-C: interrupted (130)');
like($int_err, qr/fleetctl: error: .*(interrupted|canceling statement due to user request)/, 'and says so');
is($node->safe_psql('postgres', q{SELECT count(*) FROM fleet.devices WHERE id LIKE 'int-%'}), '0', 'nothing of it was kept');
ok($node->poll_query_until('postgres',
		q{SELECT status = 'failed' FROM fleet.device_operations ORDER BY id DESC LIMIT 1}),
	'the import is recorded as failed');

# the server shutting down mid-import: unreachable (3), not refused
my $huge = "IOTC_DEVICEID\n";
$huge .= sprintf("shut-%07d\n", $_) for 1 .. 1000000;
my $huge_path = write_file('huge.csv', $huge);
my ($huge_out, $huge_err) = ('', '');
my $import = IPC::Run::start([ 'fleetctl', '-d', $connstr, 'import', $huge_path ], '<', \undef, '>', \$huge_out,
	'2>', \$huge_err);
ok($node->poll_query_until('postgres', q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'COPY fleet.device_import%'}),
	'a big import is under way');
$node->stop('fast');
$import->finish;
is($? >> 8, 3, 'a server that shuts down mid-import is unreachable (3)');
like($huge_err, qr/terminating connection|lost the server/, 'and says so');
$node->start;
is($node->safe_psql('postgres', q{SELECT count(*) FROM fleet.devices WHERE id LIKE 'shut-%'}), '0', 'nothing of it was kept');

$node->stop;
done_testing();
