# Organizations against each other, as real login roles, with pg_cron
# firing for real (in its own database):
#  - a schedule an administrator of Acme made for organization "a" cannot
#    be turned by a's operator toward "b": not by writing the row (no
#    privilege), not through the API ("b"'s group does not exist for it);
#    changed through the API it runs with the operator's rights, as the
#    operator, in "a" only;
#  - no member can stall the engine: a forged schedule row, a lock on the
#    tables every policy reads, are refused, and "b"'s jobs run meanwhile;
#  - LISTEN fleet_commands tells an outsider nothing but that work exists.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('tenants');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,pg_fleet'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 20
fleet.database_name = 'fleet'
fleet.engine_naptime = '200ms'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', 'CREATE DATABASE fleet');
$node->safe_psql('fleet', q{
	CREATE EXTENSION pg_fleet;
	CREATE ROLE acme_admin LOGIN;
	CREATE ROLE a_operator LOGIN;
	CREATE ROLE b_operator LOGIN;
	CREATE ROLE outsider LOGIN;
	SELECT fleet.create_organization('acme', 'Acme');
	SELECT fleet.create_organization('a', 'A', 'acme');
	SELECT fleet.create_organization('b', 'B', 'acme');
	SELECT fleet.grant_organization('acme', 'acme_admin', 'administrator');
	SELECT fleet.grant_organization('a', 'a_operator', 'operator');
	SELECT fleet.grant_organization('b', 'b_operator', 'operator');
	SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
	  "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true},
	               {"@type": "Command", "name": "blink"}]}');
	SELECT count(fleet.create_device(o || '-' || i, template => 'dtmi:test:Lamp;1', organization => o))
	  FROM unnest(ARRAY['a', 'b']) o, generate_series(1, 3) i;
	SELECT fleet.create_device_group(o || '-all', 'All of ' || o, 'dtmi:test:Lamp;1', organization => o)
	  FROM unnest(ARRAY['a', 'b']) o;
});

# run SQL as a login role; returns (stdout, stderr)
sub as_role
{
	my ($role, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('fleet', $sql, extra_params => [ '-U', $role ]);
	return ($out, $err);
}
my $level = q{SELECT string_agg(id || '=' || coalesce(properties ->> 'level', '-'), ' ' ORDER BY id) FROM fleet.devices};

# 1. the schedule, a minute ahead, made by Acme's administrator for "a"
my $local = $node->safe_psql('fleet',
	q{SELECT to_char(date_trunc('minute', now() + interval '80 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')});
my ($out, $err) = as_role('acme_admin', qq{SELECT fleet.create_scheduled_job('{"id": "a-nightly", "displayName": "A nightly",
	"group": "a-all", "organizations": ["a"],
	"data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 1}],
	"schedule": {"start": "$local", "timeZone": "UTC"}}') ->> 'changedBy'});
is($out, 'acme_admin', "Acme's administrator schedules a job for a");

($out, $err) = as_role('a_operator',
	q{UPDATE fleet.scheduled_jobs SET definition = jsonb_set(definition, '{group}', '"b-all"') WHERE id = 'a-nightly'});
like($err, qr/permission denied for table scheduled_jobs/, "a's operator cannot write the schedule's row");
($out, $err) = as_role('a_operator', q{SELECT fleet.update_scheduled_job('a-nightly', '{"group": "b-all"}')});
like($err, qr/device group "b-all" does not exist/, "nor point it at b's group through the API");
($out, $err) = as_role('a_operator', q{SELECT fleet.update_scheduled_job('a-nightly', '{"organizations": ["b"]}')});
like($err, qr/organization "b" does not exist/, "nor at b");
($out, $err) = as_role('a_operator', q{SELECT fleet.update_scheduled_job('a-nightly',
	'{"data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 9}]}') ->> 'changedBy'});
is($out, 'a_operator', 'it may change it through the API: the schedule is then its own');
ok($node->poll_query_until('postgres', q{SELECT username = 'a_operator' FROM cron.job WHERE command LIKE '%a-nightly%'}),
	"pg_cron's entry now runs as a's operator");

# pg_cron fires it at its minute
ok($node->poll_query_until('fleet', q{SELECT count(*) = 1 FROM fleet.jobs WHERE scheduled_job_id = 'a-nightly'}),
	'pg_cron fired the schedule');
my $job = $node->safe_psql('fleet', q{SELECT id FROM fleet.jobs WHERE scheduled_job_id = 'a-nightly'});
is($node->safe_psql('fleet', "SELECT fleet.wait_for_job('$job')"), 'completed', 'its job completed');
is($node->safe_psql('fleet', "SELECT created_by || ' ' || organization_id FROM fleet.jobs WHERE id = '$job'"),
	'a_operator a', "as a's operator, in a");
is($node->safe_psql('fleet', $level), 'a-1=9 a-2=9 a-3=9 b-1=- b-2=- b-3=-', "a's lamps changed, b's untouched");

# 2. no member stalls the engine
($out, $err) = as_role('a_operator', q{INSERT INTO fleet.scheduled_jobs (id, display_name, organization_id, group_id,
	definition, schedule, enabled, effective_from, next_run_at, changed_by)
	VALUES ('bogus', 'Bogus', 'a', 'a-all', '{}', '{"bogus": true}', true, now() - interval '1 day',
	        now() - interval '1 hour', 'a_operator')});
like($err, qr/permission denied for table scheduled_jobs/, 'a forged schedule row is refused');
for my $table (qw(organizations organization_members devices device_groups scheduled_jobs jobs))
{
	($out, $err) = as_role('outsider', "BEGIN; LOCK TABLE fleet.$table IN ACCESS EXCLUSIVE MODE;");
	like($err, qr/permission denied for table $table/, "a role in no organization cannot lock $table");
}
($out, $err) = as_role('a_operator', q{BEGIN; SELECT id FROM fleet.jobs FOR UPDATE;});
like($err, qr/permission denied for table jobs/, 'nor can an operator lock its own jobs');
($out, $err) = as_role('b_operator', q{SELECT fleet.create_job('{"id": "b-dim", "displayName": "B dim", "group": "b-all",
	"data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 2}]}') ->> 'status'});
is($out, 'pending', "b's operator creates a job");
is($node->safe_psql('fleet', q{SELECT fleet.wait_for_job('b-dim')}), 'completed', 'and the engine runs it');
is($node->safe_psql('fleet', $level), 'a-1=9 a-2=9 a-3=9 b-1=2 b-2=2 b-3=2', 'on b alone');

# 3. notifications say that work exists, nothing more
my $listener = $node->background_psql('fleet', extra_params => [ '-U', 'outsider' ]);
$listener->query_safe('LISTEN fleet_commands');
($out, $err) = as_role('a_operator', q{SELECT fleet.create_job('{"id": "a-blink", "displayName": "A blink", "group": "a-all",
	"data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}]}') ->> 'status'});
ok($node->poll_query_until('fleet', q{SELECT count(*) > 0 FROM fleet.command_windows WHERE job_id = 'a-blink'}),
	"a's command job offers its commands");
my $heard = '';
for (1 .. 50)
{
	$heard .= $listener->query('SELECT 1');
	last if $heard =~ /Asynchronous notification/;
	sleep(0.1);
}
like($heard, qr/Asynchronous notification "fleet_commands" received/, 'the outsider hears that commands wait');
unlike($heard, qr/payload|a-blink/, 'but not whose: the notification has no payload');
$listener->quit;

$node->stop;
done_testing();
