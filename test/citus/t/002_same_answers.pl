# The same SQL, the same answers, on Citus: the whole pg_regress suite and
# the isolation specs of concurrent claims and of a stop at a batch
# boundary, run on a coordinator and two workers after fleet.distribute().
#
# The tests are the ones in sql/ and test/specs/, unchanged.  Where Citus
# answers differently by design, test/citus/expected/ holds its answer
# (constraint errors name the shard a row was in, Citus warns that a
# pg_temp function stays on the coordinator, ...); everything else must
# match the single server's expected output.  The tests not run here, and
# why, are in %not_yet below.
#
# Runs only where the citus extension is installed ("make test-citus").
use strict;
use warnings;

use Cwd qw(abs_path getcwd);
use File::Basename qw(basename dirname);
use File::Copy qw(copy);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $top = getcwd();    # prove runs in the source tree
my $db = 'contrib_regression';

my @nodes;
for my $name ('coordinator', 'worker1', 'worker2')
{
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	# the settings of test/fleet.conf, with Citus first
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'citus,pg_cron,pg_fleet'\n"
		  . "cron.database_name = '$db'\n"
		  . "cron.use_background_workers = on\n"
		  . "fleet.database_name = '$db'\n"
		  . "fleet.engine_naptime = '100ms'\n"
		  . "fleet.job_max_retries = 1\n"
		  . "max_connections = 200\n"
		  . "max_worker_processes = 24\n");
	$node->start;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION citus');
	push @nodes, $node;
}
my ($coordinator, @workers) = @nodes;
$coordinator->safe_psql($db,
	"SELECT citus_set_coordinator_host('" . $coordinator->host . "', " . $coordinator->port . ')');
$coordinator->safe_psql($db, "SELECT citus_add_node('" . $_->host . "', " . $_->port . ')') for @workers;
# (Citus warns, naming the session's pg_temp schema, that a test's pg_temp
# function stays on the coordinator; its own regression suite silences that)
$coordinator->safe_psql($db, "ALTER DATABASE $db SET citus.enable_unsupported_feature_messages = off");

# The input: sql/ and expected/, with test/citus/'s files over them.
my $work = PostgreSQL::Test::Utils::tempdir();
mkdir "$work/$_" for ('in', 'in/sql', 'in/expected', 'run', 'iso', 'iso/specs', 'iso/expected');
for my $pair (['sql', 'in/sql'], ['expected', 'in/expected'], ['test/citus/sql', 'in/sql'],
	['test/citus/expected', 'in/expected'])
{
	my ($from, $to) = @$pair;
	copy($_, "$work/$to/" . basename($_)) or die "copy $_: $!" for glob("$top/$from/*.{sql,out}");
}
# the tests read test/data/ and write results/ from where they run
symlink("$top/test", "$work/run/test") or die "symlink: $!";

# The schedule: the Makefile's, the tables distributed right after the
# extension is created, without the tests that do not pass on Citus yet,
# each for the reason given (README, "Scaling out on Citus", lists them).
my %not_yet = (
	# checks the single server's layout (001_citus.pl checks this one)
	layout => 'single server only',
	# the MQTT endpoint's SQL functions pass parameters to distributed
	# tables, which Citus refuses in SQL functions
	device_endpoint => 'the MQTT endpoint is not Citus-ready',
);
my ($regress) = slurp_file("$top/Makefile") =~ /^REGRESS = (.*)$/m or die 'no REGRESS in the Makefile';
my @tests = map { $_ eq 'setup' ? ('setup', 'distribute') : $not_yet{$_} ? () : $_ } split ' ', $regress;
note("not run on Citus yet: $_ ($not_yet{$_})") for sort keys %not_yet;

# run_suite PROGRAM DIR ARGS...: pg_regress or pg_isolation_regress in
# DIR against the coordinator; one test result per test it ran
sub run_suite
{
	my ($program, $dir, $what, @args) = @_;
	my $before = getcwd();
	chdir $dir or die "chdir $dir: $!";
	my ($stdout, $stderr) = ('', '');
	# (a test that waits for ever fails here instead, after ten minutes)
	eval {
		IPC::Run::run([ $program, '--use-existing', '--host=' . $coordinator->host, '--port=' . $coordinator->port,
				"--dbname=$db", @args ], '>', \$stdout, '2>', \$stderr, IPC::Run::timeout(600));
	};
	$stderr .= "\n$program: $@" if $@;
	chdir $before;
	my $ran = 0;
	while ($stdout =~ /^(?:test|    |ok \d+\s+[-+]?)\s*(\S+)\s+\.\.\.\s+(ok|FAILED|failed)/mg)
	{
		$ran++;
		is($2, 'ok', "$what $1 gives the same answers on Citus");
	}
	ok($ran > 0, "$what ran") or diag($stdout . $stderr);
	diag(substr(slurp_file("$dir/regression.diffs"), 0, 20000)) if -s "$dir/regression.diffs";
}

my $pg_regress = $ENV{PG_REGRESS} or die 'PG_REGRESS is not set (run through make check-citus)';
run_suite($pg_regress, "$work/run", 'regression test', "--inputdir=$work/in", '--outputdir=.', @tests);

# --- isolation: claims and a stop at a batch boundary on the shards ---------
# The specs drive the engine's turns themselves: it is switched off.  Each
# spec's setup creates the extension; here its tables are distributed next.
$coordinator->safe_psql($db, 'ALTER SYSTEM SET fleet.engine_enabled = off');
$coordinator->reload;
$coordinator->poll_query_until($db, 'SELECT fleet_internal.engine_pid() IS NULL')
  or die 'the engine did not stop';
# (The stop waits for the step on the coordinator, for pg_fleet's lock that
# orders writes to the reference tables, src/reference_write_order.c: the
# isolation tester, which asks the coordinator who blocks whom, sees it.)
my @specs = ('concurrent_claims', 'stop_at_batch_boundary');
for my $spec (@specs)
{
	my $text = slurp_file("$top/test/specs/$spec.spec");
	$text =~ s/(CREATE EXTENSION pg_fleet;)/$1\n  SELECT count(*) FROM fleet.distribute();/
	  or die "$spec.spec creates no extension";
	PostgreSQL::Test::Utils::append_to_file("$work/iso/specs/$spec.spec", $text);
	my $expected = -f "$top/test/citus/expected/$spec.out" ? "$top/test/citus/expected/$spec.out" : "$top/test/expected/$spec.out";
	copy($expected, "$work/iso/expected/$spec.out") or die "copy $expected: $!";
}
(my $pg_isolation_regress = $pg_regress) =~ s{regress/pg_regress$}{isolation/pg_isolation_regress};
run_suite($pg_isolation_regress, "$work/iso", 'isolation spec', "--inputdir=$work/iso", '--outputdir=.', @specs);

done_testing();
