# An extension that is safe to install and to run:
#  - hostile functions and operators planted in public before CREATE
#    EXTENSION never run, whatever the session's search_path;
#  - keys never reach the server log, pg_cron's command text or errors;
#  - pg_dump / pg_restore keeps devices, organizations, members, jobs and
#    their per-device statuses, schedules, and the keys;
#  - every SQL function, given NULLs, empty and 1 MB strings, wrong JSON
#    types and nested junk, answers with an error or a result: no crash, no
#    internal error, nothing in the server log.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('security');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,pg_fleet'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 20
fleet.database_name = 'fleet'
fleet.engine_naptime = '200ms'
fleet.command_timeout = '3s'
log_statement = 'all'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', 'CREATE DATABASE fleet');

# --- hostile objects, planted by a role that may create in public ---------
$node->safe_psql('fleet', q{
	CREATE ROLE regress_attacker LOGIN;
	GRANT CREATE ON SCHEMA public TO regress_attacker;
	CREATE TABLE public.hostile_calls (what text);
	GRANT INSERT, SELECT ON public.hostile_calls TO PUBLIC;
});
$node->safe_psql('fleet', q{
	SET ROLE regress_attacker;
	CREATE FUNCTION public.trap(what text) RETURNS void LANGUAGE sql
	    AS $$ INSERT INTO public.hostile_calls VALUES (what) $$;
	CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql
	    AS $$ SELECT public.trap('lower'); SELECT pg_catalog.lower($1) $$;
	CREATE FUNCTION public.upper(text) RETURNS text LANGUAGE sql
	    AS $$ SELECT public.trap('upper'); SELECT pg_catalog.upper($1) $$;
	CREATE FUNCTION public.length(text) RETURNS int LANGUAGE sql
	    AS $$ SELECT public.trap('length'); SELECT pg_catalog.length($1) $$;
	CREATE FUNCTION public.btrim(text) RETURNS text LANGUAGE sql
	    AS $$ SELECT public.trap('btrim'); SELECT pg_catalog.btrim($1) $$;
	CREATE FUNCTION public."left"(text, int) RETURNS text LANGUAGE sql
	    AS $$ SELECT public.trap('left'); SELECT pg_catalog."left"($1, $2) $$;
	CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE sql
	    AS $$ SELECT public.trap('format'); SELECT pg_catalog.format($1, $2) $$;
	CREATE FUNCTION public.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql
	    AS $$ SELECT public.trap('jsonb_typeof'); SELECT pg_catalog.jsonb_typeof($1) $$;
	CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql
	    AS $$ SELECT public.trap('now'); SELECT pg_catalog.now() $$;
	CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE sql
	    AS $$ SELECT public.trap('clock_timestamp'); SELECT pg_catalog.clock_timestamp() $$;
	CREATE FUNCTION public.text_eq(text, text) RETURNS boolean LANGUAGE sql
	    AS $$ SELECT public.trap('='); SELECT pg_catalog.texteq($1, $2) $$;
	CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_eq);
	CREATE FUNCTION public.text_cat(text, text) RETURNS text LANGUAGE sql
	    AS $$ SELECT public.trap('||'); SELECT pg_catalog.textcat($1, $2) $$;
	CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_cat);
	CREATE FUNCTION public.regex_match(text, text) RETURNS boolean LANGUAGE sql
	    AS $$ SELECT public.trap('~'); SELECT pg_catalog.textregexeq($1, $2) $$;
	CREATE OPERATOR public.~ (LEFTARG = text, RIGHTARG = text, FUNCTION = public.regex_match);
	CREATE FUNCTION public.to_jsonb(text) RETURNS jsonb LANGUAGE sql
	    AS $$ SELECT public.trap('cast'); SELECT pg_catalog.to_jsonb($1) $$;
});
my ($ret, $out, $err) = $node->psql('fleet',
	'SET ROLE regress_attacker; CREATE CAST (text AS jsonb) WITH FUNCTION public.to_jsonb(text)');
like($err, qr/must be owner of type/, 'PostgreSQL refuses the attacker a cast between built-in types');

# the traps work: a session that puts public first calls them
$node->safe_psql('fleet', q{SET search_path = public, pg_catalog; SELECT lower('X'), 'a' = 'a', 'a' || 'b'});
is($node->safe_psql('fleet', q{SELECT string_agg(what, ',' ORDER BY what) FROM public.hostile_calls}),
	'=,lower,||', 'the planted functions and operators catch unqualified calls');
$node->safe_psql('fleet', 'TRUNCATE public.hostile_calls');

# install and use everything from a session whose search_path puts public first
my $template = slurp_file('test/data/iotc_env_sensor.json');
my $thermostat = slurp_file('test/data/thermostat-1.json');
my $csv = "$PostgreSQL::Test::Utils::tmp_check/security_devices.csv";
open(my $fh, '>', $csv) or die;
print $fh "IOTC_DEVICEID,IOTC_DEVICENAME\n";
printf $fh "sensor-%03d,Sensor %d\n", $_, $_ for 1 .. 200;
print $fh "bad id,Bad\n";
close($fh);
$node->safe_psql('fleet', qq{
	SET search_path = public, pg_catalog;
	CREATE EXTENSION pg_fleet;
	SELECT fleet.import_template(\$t\$$thermostat\$t\$);
	SELECT fleet.import_template(\$t\$$template\$t\$);
	SELECT fleet.create_organization('plant', 'Plant');
	SET fleet.import_template = 'dtmi:contoso:EnvSensor;1';
	SET fleet.import_organization = 'plant';
	COPY fleet.device_import FROM '$csv' WITH (FORMAT csv, HEADER);
	RESET fleet.import_template;
	RESET fleet.import_organization;
	SELECT fleet.create_device('gateway-1', template => 'dtmi:contoso:EnvSensor;1', organization => 'plant',
	                           edge => true, simulated => true);
	SELECT fleet.create_device_group('plant-sensors', 'Plant sensors', 'dtmi:contoso:EnvSensor;1',
	                                 filter => '\$.displayName like_regex "^Sensor"', organization => 'plant');
	SELECT fleet.grant_organization('plant', 'regress_attacker', 'viewer');
});
$node->restart;    # the engine connects to "fleet" now that the extension is there
$node->safe_psql('fleet', q{
	SET search_path = public, pg_catalog;
	SELECT fleet.create_job('{"id": "interval", "displayName": "Interval", "group": "plant-sensors",
	  "batch": {"type": "percentage", "value": 25},
	  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 60}]}');
	SELECT fleet.wait_for_job('interval');
	SELECT fleet.create_job('{"id": "blink", "displayName": "Blink", "group": "plant-sensors",
	  "cancellationThreshold": {"type": "number", "value": 1},
	  "data": [{"type": "command", "target": "dtmi:contoso:EnvSensor;1", "path": "reboot", "value": 3}]}');
	SELECT fleet.wait_for_job('blink', '{running}');
	-- a job runs before its first batch's window opens: claim until it has
	DO $claim$
	BEGIN
	    FOR attempt IN 1..1000 LOOP
	        EXIT WHEN (SELECT count(*) FROM fleet.claim_commands('gw', 10)) OPERATOR(pg_catalog.>) 0;
	        PERFORM pg_catalog.pg_sleep(0.02);
	    END LOOP;
	END
	$claim$;
	SELECT fleet.complete_commands(array_agg(delivery_id), array_agg(500), NULL)
	  FROM fleet.command_deliveries WHERE status OPERATOR(pg_catalog.=) 'claimed';   -- (this session finds public's = first)
	SELECT fleet.wait_for_job('blink');
	SELECT fleet.rerun_job('blink', 'blink-again');
	SELECT fleet.create_scheduled_job('{"id": "nightly", "displayName": "Nightly", "group": "plant-sensors",
	  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
	  "schedule": {"start": "2099-01-01T02:00:00", "timeZone": "Europe/Berlin", "recurrence": "daily"}}');
	SELECT fleet.fire_scheduled_job('nightly', '2099-01-01 01:00:00+00');
	SELECT count(*) FROM fleet.export_devices(spreadsheet_safe => true);
	SELECT count(*) FROM fleet.job_results('interval', true);
	SELECT count(*) FROM fleet.job_overview;
	SELECT count(*) FROM fleet.next_occurrences('{"start": "2099-01-01T02:00:00", "recurrence": "weekly"}', pg_catalog.now(), 5);
});
$node->safe_psql('fleet', q{SELECT fleet.wait_for_job(id) FROM fleet.jobs WHERE status IN ('pending', 'running')});
is($node->safe_psql('fleet', q{SELECT (SELECT count(*) FROM fleet.job_devices WHERE job_id = 'interval') || ' '
                                    || (SELECT count(*) FROM fleet.list_device_group_members('plant-sensors'))}),
	'200 200', "the engine's fan-out and the group's members agree, filter included");
# and as a member, under row-level security
$node->safe_psql('fleet', q{
	SET ROLE regress_attacker;
	SET search_path = public, pg_catalog;
	SELECT count(*) FROM fleet.devices;
	SELECT count(*) FROM fleet.job_results('interval');
	SELECT count(*) FROM fleet.recent_jobs;
});
is($node->safe_psql('fleet', q{SELECT coalesce(string_agg(DISTINCT what, ','), 'none') FROM public.hostile_calls}), 'none',
	'no planted function, operator or cast ran during install, import, jobs, commands, schedules or export');

# --- secrets stay out of logs, errors and pg_cron -------------------------
my @group_keys = split /\n/, $node->safe_psql('fleet',
	q{SELECT primary_key || E'\n' || secondary_key FROM fleet.enrollment_groups});
my @device_keys = split /\|/, $node->safe_psql('fleet', q{SELECT primary_key || '|' || secondary_key FROM fleet.device_keys('sensor-001')});
$node->safe_psql('fleet', q{SELECT fleet.rotate_enrollment_group_key('SAS-IoT-Devices', 'secondary')});
push @group_keys, $node->safe_psql('fleet', q{SELECT secondary_key FROM fleet.enrollment_groups WHERE id = 'SAS-IoT-Devices'});
$node->psql('fleet', q{SELECT * FROM fleet.device_keys('no-such-device')});
$node->psql('fleet', q{SET ROLE regress_attacker; SELECT * FROM fleet.export_devices()});
my $log = slurp_file($node->logfile);
my $cron_commands = $node->safe_psql('postgres', q{SELECT string_agg(command, E'\n') FROM cron.job});
my $leaks = 0;
for my $key (@group_keys, @device_keys)
{
	$leaks++ if index($log, $key) >= 0 || index($cron_commands, $key) >= 0;
}
is(scalar(@group_keys) + scalar(@device_keys), 11,
	'eleven keys to look for: four of root\'s groups and four of the plant\'s, a rotated one, a device\'s two');
is($leaks, 0, 'no enrollment group key or device key is in the server log (log_statement = all) or pg_cron');

# --- dump and restore -----------------------------------------------------
my $state = q{
	SELECT (SELECT md5(string_agg(id || display_name || coalesce(template_id, '') || organization_id
	                              || properties::text || cloud_properties::text || edge || simulated, ',' ORDER BY id))
	          FROM fleet.devices) || ' ' ||
	       (SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM fleet.jobs) || ' ' ||
	       (SELECT md5(string_agg(job_id || device_id || batch || status || coalesce(error, ''), ','
	                              ORDER BY job_id, device_id)) FROM fleet.job_devices) || ' ' ||
	       (SELECT string_agg(id || ':' || path::text, ',' ORDER BY id) FROM fleet.organizations) || ' ' ||
	       (SELECT string_agg(organization_id || ':' || member::text || ':' || app_role, ',') FROM fleet.organization_members) || ' ' ||
	       (SELECT string_agg(id || ':' || next_run_at, ',') FROM fleet.scheduled_jobs) || ' ' ||
	       (SELECT count(*) FROM fleet.scheduled_job_runs) || ' ' ||
	       (SELECT count(*) || ':' || sum(rejected) FROM fleet.device_operations) || ' ' ||
	       (SELECT md5(string_agg(e::text, ',' ORDER BY e."IOTC_DEVICEID")) FROM fleet.export_devices() e)
};
my $before = $node->safe_psql('fleet', $state);
like($before, qr/blink:cancelled,blink-again:\w+,interval:completed,nightly-/, 'the state has jobs of every ending');
my $dump = "$PostgreSQL::Test::Utils::tmp_check/fleet.dump";
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('fleet') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ], 'pg_restore');
is($node->safe_psql('restored', $state), $before,
	'the restore has the same devices, organizations, members, jobs, per-device statuses, schedules and keys');
is($node->safe_psql('restored', q{SELECT count(*) FROM pg_policies WHERE schemaname = 'fleet'}),
	$node->safe_psql('fleet', q{SELECT count(*) FROM pg_policies WHERE schemaname = 'fleet'}),
	'and the same row-level security');

# --- bad input sweep ------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE sweep');
$node->safe_psql('sweep', 'CREATE EXTENSION pg_fleet');
$node->safe_psql('sweep', qq{SELECT fleet.import_template(\$t\$$thermostat\$t\$)});
my $log_offset = -s $node->logfile;
$node->safe_psql('sweep', q{
	SET client_min_messages = warning;   -- (1 MB identifiers are truncated with a notice)
	CREATE TABLE public.sweep_results (call text, sqlstate text, message text);
	CREATE FUNCTION public.junk(type regtype, i int) RETURNS text LANGUAGE sql AS $$
	    SELECT CASE
	        WHEN type IN ('text'::regtype, 'name'::regtype) THEN
	            (ARRAY['NULL', '''''', 'repeat(''x'', 1048576)', '''null''', 'E''\\x01\\t''', '''dtmi:com:example:Thermostat;1''',
	                   '''root''', '''-''', '''$.a''', '''{}'''])[i % 10 + 1]
	        WHEN type = 'jsonb'::regtype THEN
	            (ARRAY['NULL', '''[]''', '''"x"''', '''123''', 'repeat(''['', 1000) || repeat('']'', 1000)',
	                   '''{"a": [1, {"b": null}], "@id": 5, "contents": "x", "schedule": [], "data": {}}''',
	                   '''{"displayName": "x", "group": "g", "data": [{"type": "property"}]}''', '''null''',
	                   '(SELECT jsonb_object_agg(i::text, i) FROM generate_series(1, 20000) i)::text',
	                   '''{"start": "2027-01-01T00:00:00", "recurrence": "daily", "end": {"type": "date", "date": 5}}'''])[i % 10 + 1]
	        WHEN type IN ('integer'::regtype, 'bigint'::regtype, 'smallint'::regtype) THEN
	            (ARRAY['NULL', '0', '-1', '2147483647', '1'])[i % 5 + 1]
	        WHEN type = 'boolean'::regtype THEN (ARRAY['NULL', 'true', 'false'])[i % 3 + 1]
	        WHEN type = 'timestamp with time zone'::regtype THEN
	            (ARRAY['NULL', '''infinity''', '''-infinity''', 'now()'])[i % 4 + 1]
	        WHEN type = 'interval'::regtype THEN (ARRAY['NULL', '''-1 day''', '''0''', '''100 years'''])[i % 4 + 1]
	        WHEN type = 'jsonpath'::regtype THEN (ARRAY['NULL', '''$''', '''$.a.b[*] ? (@ > 1)'''])[i % 3 + 1]
	        WHEN type::text LIKE '%[]' THEN (ARRAY['NULL', '''{}''', '''{NULL}''', '''{1,2}'''])[i % 4 + 1]
	        ELSE 'NULL' END || '::' || type::text
	$$;
	CREATE FUNCTION public.sweep() RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
	    f record;
	    call text;
	    state text;
	    message text;
	BEGIN
	    FOR f IN
	        SELECT p.oid, p.pronamespace::regnamespace::text AS schema, p.proname, p.proargtypes::oid[]::regtype[] AS types
	          FROM pg_proc p
	         WHERE p.pronamespace IN ('fleet'::regnamespace, 'fleet_internal'::regnamespace)
	           AND p.prorettype <> 'trigger'::regtype
	           -- (they wait, or do the engine's work)
	           AND p.proname NOT IN ('wait_for_job', 'purge', 'check_schedules', 'expire_commands', 'record_failed_imports')
	           AND p.proname NOT LIKE 'engine\_%' AND p.proname NOT LIKE '%cron%'
	         ORDER BY 2, p.proname, p.oid
	    LOOP
	        FOR i IN 0..9 LOOP
	            SELECT format('SELECT %I.%I(%s)', f.schema, f.proname,
	                          coalesce(string_agg(public.junk(t, i + n::int), ', ' ORDER BY n), ''))
	              INTO call FROM unnest(f.types) WITH ORDINALITY u(t, n);
	            BEGIN
	                SET LOCAL statement_timeout = '10s';
	                EXECUTE call;
	                state := '00000';
	                message := NULL;
	            EXCEPTION WHEN OTHERS THEN
	                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
	            END;
	            INSERT INTO public.sweep_results VALUES (left(call, 200), state, left(message, 300));
	        END LOOP;
	    END LOOP;
	END;
	$$;
	SELECT public.sweep();
});
my $calls = $node->safe_psql('sweep', 'SELECT count(*) FROM public.sweep_results');
cmp_ok($calls, '>', 500, "the sweep made $calls calls");
my $functions = $node->safe_psql('sweep',
	q{SELECT count(DISTINCT split_part(call, '(', 1)) FROM public.sweep_results});
cmp_ok($functions, '>', 60, "over $functions functions");
is($node->safe_psql('sweep',
		q{SELECT coalesce(string_agg(call || ': ' || message, E'\n'), '') FROM public.sweep_results
		   WHERE sqlstate IN ('XX000', 'XX001', 'XX002', '57014') OR message IS NULL AND sqlstate <> '00000'}),
	'', 'no internal error, no timeout, every error has a message');
is($node->safe_psql('sweep', 'SELECT 1'), '1', 'the server is up');
my $sweep_log = substr(slurp_file($node->logfile), $log_offset);
unlike($sweep_log, qr/terminated by signal|TRAP:|PANIC:|was terminated|server process .* exited/,
	'and the log shows no crash');

$node->stop;
done_testing();
