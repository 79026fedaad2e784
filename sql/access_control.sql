\set SHOW_CONTEXT never
SELECT current_user AS superuser \gset
-- Organizations and access control, with real login roles: an Acme parent
-- organization and two sibling children, East and West.  Each role connects
-- as itself (\c) and counts what it sees through every table, view and
-- set-returning function; then cross-organization reads, writes, jobs and
-- key exports are tried and refused.

SELECT fleet.create_organization('acme', 'Acme') ->> 'id';
SELECT fleet.create_organization('acme-east', 'Acme East', 'acme') ->> 'id';
SELECT fleet.create_organization('acme-west', 'Acme West', 'acme') ->> 'id';
CREATE ROLE regress_acme_admin LOGIN;
CREATE ROLE regress_east_admin LOGIN;
CREATE ROLE regress_east_operator LOGIN;
CREATE ROLE regress_east_viewer LOGIN;
CREATE ROLE regress_west_operator LOGIN;
CREATE ROLE regress_east_team;                 -- a group role: its members inherit its grant
CREATE ROLE regress_east_member LOGIN IN ROLE regress_east_team;
CREATE ROLE regress_outsider LOGIN;
SELECT fleet.grant_organization('acme', 'regress_acme_admin', 'administrator');
SELECT fleet.grant_organization('acme-east', 'regress_east_admin', 'administrator');
SELECT fleet.grant_organization('acme-east', 'regress_east_operator', 'operator');
SELECT fleet.grant_organization('acme-east', 'regress_east_viewer', 'viewer');
SELECT fleet.grant_organization('acme-west', 'regress_west_operator', 'operator');
SELECT fleet.grant_organization('acme-east', 'regress_east_team', 'viewer');
SELECT fleet.grant_organization('acme-east', 'regress_nobody', 'viewer');
SELECT fleet.grant_organization('acme-east', 'regress_east_viewer', 'owner');

-- each organization's fleet: a template shared by all, three lamps each,
-- a group, a completed property job, a command job waiting for a gateway,
-- and a schedule
SELECT fleet.create_edge_manifest('acme-edge', 'Acme edge', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}},
                                                                    "$edgeHub": {"properties.desired": {}}}}') ->> 'id';
SELECT fleet.import_template('{"@id": "dtmi:acme:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
  "displayName": "Lamp",
  "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true},
               {"@type": "Command", "name": "blink"}]}') ->> 'id';
SELECT count(fleet.create_device(o || '-lamp-' || i, template => 'dtmi:acme:Lamp;1', organization => 'acme-' || o))
  FROM unnest(ARRAY['east', 'west']) o, generate_series(1, 3) i;
SELECT fleet.create_device_group(o || '-lamps', initcap(o) || ' lamps', 'dtmi:acme:Lamp;1', organization => 'acme-' || o) ->> 'id'
  FROM unnest(ARRAY['east', 'west']) o;
SELECT fleet.create_job(jsonb_build_object('id', o || '-dim', 'displayName', 'Dim', 'group', o || '-lamps',
         'data', jsonb_build_array(jsonb_build_object('type', 'property', 'target', 'dtmi:acme:Lamp;1',
                                                      'path', 'level', 'value', 2)))) ->> 'id'
  FROM unnest(ARRAY['east', 'west']) o;
SELECT fleet.wait_for_job('east-dim'), fleet.wait_for_job('west-dim');
SELECT fleet.create_job(jsonb_build_object('id', o || '-blink', 'displayName', 'Blink', 'group', o || '-lamps',
         'data', jsonb_build_array(jsonb_build_object('type', 'command', 'target', 'dtmi:acme:Lamp;1',
                                                      'path', 'blink')))) ->> 'id'
  FROM unnest(ARRAY['east', 'west']) o;
SELECT fleet.wait_for_job('east-blink', '{running}'), fleet.wait_for_job('west-blink', '{running}');
SELECT fleet.create_scheduled_job(jsonb_build_object('id', o || '-nightly', 'displayName', 'Nightly', 'group', o || '-lamps',
         'data', jsonb_build_array(jsonb_build_object('type', 'property', 'target', 'dtmi:acme:Lamp;1',
                                                      'path', 'level', 'value', 0)),
         'schedule', jsonb_build_object('start', '2099-01-01T02:00:00', 'recurrence', 'daily'))) ->> 'id'
  FROM unnest(ARRAY['east', 'west']) o;

-- what a role sees: every relation of the schema, and the set-returning
-- functions, each as a count or the error it gets
CREATE TABLE public.regress_seen (role_name name, relation text, seen text);
GRANT INSERT ON public.regress_seen TO PUBLIC;
CREATE TABLE public.regress_keys (organization text, primary_key text, secondary_key text);
GRANT INSERT ON public.regress_keys TO PUBLIC;
CREATE FUNCTION public.regress_count_all() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n text;
BEGIN
    FOR r IN
        SELECT format('SELECT count(*) FROM fleet.%I', c.relname) AS q, c.relname::text AS label
          FROM pg_class c WHERE c.relnamespace = 'fleet'::regnamespace AND c.relkind IN ('r', 'v')
        UNION ALL
        SELECT format('SELECT count(*) FROM %s', f), f
          FROM unnest(ARRAY['fleet.list_device_group_members(''east-lamps'')', 'fleet.list_device_group_members(''west-lamps'')',
                            'fleet.job_results(''east-dim'')', 'fleet.job_results(''west-dim'')',
                            'fleet.list_job_devices(''east-dim'')', 'fleet.list_scheduled_job_runs(''east-nightly'')',
                            'fleet.export_devices()', 'fleet.export_devices(organization => ''acme-west'')',
                            'fleet.list_organization_members()', 'fleet_internal.organizations_for(''viewer'')',
                            'fleet.list_organizations(''acme'')', 'fleet.list_organizations(''acme-west'')',
                            'fleet_internal.organizations_for(''administrator'')']) f
    LOOP
        BEGIN
            EXECUTE r.q INTO n;
        EXCEPTION WHEN OTHERS THEN
            n := CASE WHEN SQLERRM LIKE 'permission denied%' THEN 'denied'
                      WHEN SQLERRM LIKE '%does not exist' THEN 'not found' ELSE SQLERRM END;
        END;
        INSERT INTO public.regress_seen VALUES (current_user, r.label, n);
    END LOOP;
END;
$$;

-- what a role can write or lock: every table and view of both schemas,
-- each write and each lock mode that could stall someone else; only the
-- import view takes rows (its triggers then check the caller's rights)
CREATE TABLE public.regress_tried (role_name name, relation text, attempt text, outcome text);
GRANT INSERT ON public.regress_tried TO PUBLIC;
CREATE FUNCTION public.regress_try_all() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
    attempt text;
    outcome text;
BEGIN
    FOR r IN SELECT c.oid::regclass AS rel, c.relkind,
                    (SELECT quote_ident(a.attname) FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attnum = 1) AS first_column
               FROM pg_class c
              WHERE c.relnamespace IN ('fleet'::regnamespace, 'fleet_internal'::regnamespace)
                AND c.relkind IN ('r', 'v')
    LOOP
        FOREACH attempt IN ARRAY ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'SELECT FOR UPDATE',
                                       'LOCK ROW EXCLUSIVE', 'LOCK ACCESS EXCLUSIVE'] LOOP
            BEGIN
                EXECUTE CASE attempt
                    WHEN 'INSERT' THEN format('INSERT INTO %s SELECT * FROM %s WHERE false', r.rel, r.rel)
                    WHEN 'UPDATE' THEN format('UPDATE %s SET %s = %s WHERE false', r.rel, r.first_column, r.first_column)
                    WHEN 'DELETE' THEN format('DELETE FROM %s WHERE false', r.rel)
                    WHEN 'TRUNCATE' THEN format('TRUNCATE %s', r.rel)
                    WHEN 'SELECT FOR UPDATE' THEN format('SELECT 1 FROM %s LIMIT 1 FOR UPDATE', r.rel)
                    WHEN 'LOCK ROW EXCLUSIVE' THEN format('LOCK TABLE %s IN ROW EXCLUSIVE MODE NOWAIT', r.rel)
                    ELSE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT', r.rel) END;
                outcome := 'allowed';
                -- undo whatever it did (TRUNCATE would empty a table)
                RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'undo';
            EXCEPTION WHEN OTHERS THEN
                IF SQLERRM <> 'undo' THEN
                    outcome := CASE WHEN SQLERRM LIKE 'permission denied%' THEN 'denied'
                                    WHEN SQLERRM LIKE 'cannot % view %' OR SQLERRM LIKE '% is not a table'
                                    THEN 'not a table' ELSE SQLERRM END;
                END IF;
            END;
            INSERT INTO public.regress_tried VALUES (current_user, r.rel::text, attempt, outcome);
        END LOOP;
    END LOOP;
END;
$$;

\c - regress_acme_admin
SELECT public.regress_count_all();
SELECT public.regress_try_all();
\c - regress_east_admin
SELECT public.regress_count_all();
SELECT public.regress_try_all();
\c - regress_east_operator
SELECT public.regress_count_all();
SELECT public.regress_try_all();
\c - regress_east_viewer
SELECT public.regress_count_all();
SELECT public.regress_try_all();
\c - regress_east_member
SELECT public.regress_count_all();
SELECT public.regress_try_all();
\c - regress_west_operator
SELECT public.regress_count_all();
SELECT public.regress_try_all();
\c - regress_outsider
SELECT public.regress_count_all();
SELECT public.regress_try_all();
\c - :superuser
-- shared relations (templates) are the same for every member; the rest by role
SELECT relation,
       max(seen) FILTER (WHERE role_name = 'regress_acme_admin') AS acme_admin,
       max(seen) FILTER (WHERE role_name = 'regress_east_admin') AS east_admin,
       max(seen) FILTER (WHERE role_name = 'regress_east_operator') AS east_op,
       max(seen) FILTER (WHERE role_name = 'regress_east_viewer') AS east_viewer,
       max(seen) FILTER (WHERE role_name = 'regress_east_member') AS east_member,
       max(seen) FILTER (WHERE role_name = 'regress_west_operator') AS west_op,
       max(seen) FILTER (WHERE role_name = 'regress_outsider') AS outsider
  FROM public.regress_seen
 WHERE relation NOT IN ('device_templates', 'template_contents', 'template_capabilities', 'edge_manifests')
 GROUP BY relation ORDER BY relation;
SELECT relation, count(DISTINCT seen) = 1 AND min(seen)::int > 0 AS same_for_all
  FROM public.regress_seen
 WHERE relation IN ('device_templates', 'template_contents', 'template_capabilities')
 GROUP BY relation ORDER BY relation;
-- every role, every relation, every write and lock: refused, but rows into
-- the import view (the same for all roles)
-- (refused: permission denied, or a view that takes no writes, which
-- Citus words as the former for some views over its tables)
SELECT count(DISTINCT role_name) AS roles, count(DISTINCT relation) AS relations, count(*) AS attempts,
       count(*) FILTER (WHERE outcome IN ('denied', 'not a table')) AS refused
  FROM public.regress_tried;
SELECT relation, attempt, count(*) AS roles, min(outcome) AS outcome
  FROM public.regress_tried WHERE outcome NOT IN ('denied', 'not a table')
 GROUP BY relation, attempt ORDER BY relation, attempt;

-- East's operator: nothing of West can be read, changed, run or exported
\c - regress_east_operator
SELECT id FROM fleet.devices WHERE id LIKE 'west-%';
COPY (SELECT id FROM fleet.devices ORDER BY id) TO STDOUT;
UPDATE fleet.devices SET display_name = 'mine' WHERE id = 'west-lamp-1';
DELETE FROM fleet.jobs WHERE id = 'west-dim';
INSERT INTO fleet.devices (id, display_name, organization_id) VALUES ('sneaky-1', 'Sneaky', 'acme-west');
UPDATE fleet.devices SET organization_id = 'acme-west' WHERE id = 'east-lamp-1';
SELECT fleet.create_device('sneaky-2', organization => 'acme-west') ->> 'id';
SELECT fleet.create_job('{"displayName": "Theirs", "group": "west-lamps",
  "data": [{"type": "property", "target": "dtmi:acme:Lamp;1", "path": "level", "value": 9}]}');
SELECT fleet.create_job('{"displayName": "Mine for them", "group": "east-lamps", "organizations": ["acme-west"],
  "data": [{"type": "property", "target": "dtmi:acme:Lamp;1", "path": "level", "value": 9}]}');
SELECT fleet.stop_job('west-blink');
SELECT fleet.get_job('west-dim');
SELECT fleet.delete_device('west-lamp-1');
SELECT fleet.delete_scheduled_job('west-nightly');
-- West's objects do not exist for it through get_, update_ and delete_
SELECT fleet.get_device('west-lamp-1');
SELECT fleet.update_device('west-lamp-1', '{"displayName": "mine"}');
SELECT fleet.update_device('east-lamp-1', '{"organization": "acme-west"}');
SELECT fleet.get_device_group('west-lamps');
SELECT fleet.update_device_group('west-lamps', '{"filter": "$.id == \"x\""}');
SELECT fleet.delete_device_group('west-lamps');
SELECT fleet.get_organization('acme-west');
SELECT fleet.update_organization('acme-west', '{"displayName": "Mine"}');
SELECT fleet.delete_organization('acme-west');
SELECT fleet.get_enrollment_group('SAS-IoT-Devices@acme-west');
SELECT fleet.delete_enrollment_groups('acme-west');
-- shared objects are root administrators' to change
SELECT fleet.update_template('dtmi:acme:Lamp;1', '{"displayName": "Mine"}');
SELECT fleet.delete_template('dtmi:acme:Lamp;1');
SELECT fleet.update_edge_manifest('acme-edge', '{"displayName": "Mine"}');
SELECT fleet.delete_edge_manifest('acme-edge');
-- and its own: an operator changes devices and groups, not its organization
SELECT fleet.update_device('east-lamp-1', '{"displayName": "East lamp one"}') ->> 'displayName';
SELECT fleet.update_device_group('east-lamps', '{"displayName": "East lamps"}') ->> 'displayName';
SELECT fleet.delete_device_group('east-lamps');
SELECT fleet.update_organization('acme-east', '{"displayName": "Mine"}');
SELECT fleet.get_enrollment_group('SAS-IoT-Devices@acme-east');
SET fleet.import_organization = 'acme-west';
INSERT INTO fleet.device_import VALUES ('sneaky-3', NULL);
RESET fleet.import_organization;
-- keys are for administrators
SELECT * FROM fleet.export_devices();
SELECT * FROM fleet.device_keys('east-lamp-1');
SELECT * FROM fleet.device_keys('west-lamp-1');
SELECT count(*) FROM fleet.enrollment_groups;
SELECT fleet.rotate_enrollment_group_key('SAS-IoT-Devices') ->> 'id';
-- templates are shared: read by all, written by root administrators
SELECT fleet.import_template('{"@id": "dtmi:acme:Mine;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2", "contents": []}') ->> 'id';
-- a gateway of East claims East's commands only
SELECT job_id, count(*) FROM fleet.claim_commands('east-gateway', 100) GROUP BY job_id;
WITH d AS MATERIALIZED (SELECT delivery_id FROM fleet.command_deliveries WHERE job_id = 'east-blink')
SELECT fleet.complete_command(d.delivery_id, 200) FROM d;
-- rows the engine trusts cannot be written outside the API: job_devices
-- naming West's devices, claims with a deadline that never comes (they
-- would keep a job, and a running-job slot, for ever), a rerun of West's
-- job, a job queued first, row locks that would stall the engine, a
-- schedule's definition, its creator or its state (the engine reads them)
INSERT INTO fleet.job_devices (job_id, device_id, batch) VALUES ('east-dim', 'west-lamp-1', 1);
UPDATE fleet.job_devices SET gateway = 'forged', deadline = 'infinity' WHERE job_id = 'east-blink';
SELECT device_id FROM fleet.job_devices WHERE job_id = 'east-blink' FOR UPDATE;
SELECT id FROM fleet.jobs WHERE id = 'east-blink' FOR UPDATE;
UPDATE fleet.jobs SET queued_at = '-infinity' WHERE id = 'east-blink';
INSERT INTO fleet.jobs (id, display_name, group_id, organization_id, job_type, data, status, definition, rerun_of, queued_at)
VALUES ('east-forged-rerun', 'Forged', 'east-lamps', 'acme-east', 'property',
        '[{"type": "property", "target": "dtmi:acme:Lamp;1", "path": "level", "value": 7}]', 'pending', '{}', 'west-dim',
        clock_timestamp());
SELECT fleet.create_scheduled_job('{"id": "east-hourly", "displayName": "East daily", "group": "east-lamps",
  "data": [{"type": "property", "target": "dtmi:acme:Lamp;1", "path": "level", "value": 1}],
  "schedule": {"start": "2099-06-01T06:00:00", "recurrence": "daily"}}') ->> 'createdBy' AS created_by;
UPDATE fleet.scheduled_jobs SET created_by = 'postgres', changed_by = 'postgres' WHERE id = 'east-hourly';
UPDATE fleet.scheduled_jobs SET definition = jsonb_set(definition, '{group}', '"west-lamps"') WHERE id = 'east-nightly';
INSERT INTO fleet.scheduled_jobs (id, display_name, organization_id, group_id, definition, schedule, enabled,
                                  effective_from, next_run_at, changed_by)
VALUES ('bogus', 'Bogus', 'acme-east', 'east-lamps', '{}', '{"bogus": true}', true,
        now() - interval '1 day', now() - interval '1 hour', 'regress_east_operator');
-- through the API, West's group does not exist for it
SELECT fleet.update_scheduled_job('east-nightly', '{"group": "west-lamps"}');
SELECT fleet.update_scheduled_job('east-nightly', '{"organizations": ["acme-west"]}');
SELECT created_by, changed_by FROM fleet.scheduled_jobs WHERE id = 'east-hourly';
SELECT fleet.fire_scheduled_job('east-hourly', '2099-06-01 06:00:00+00');
SELECT fleet.fire_scheduled_job('east-hourly') AS nothing_due;
SELECT fleet.disable_scheduled_job('east-hourly') ->> 'enabled' AS enabled;
SELECT fleet.enable_scheduled_job('east-hourly') ->> 'enabled' AS enabled;
-- its own organization works as before
SELECT fleet.create_device('east-lamp-4', template => 'dtmi:acme:Lamp;1', organization => 'acme-east') ->> 'id';
SELECT fleet.create_organization('east-lab', 'Lab', 'acme-east') ->> 'id';

-- East's viewer reads but changes nothing
\c - regress_east_viewer
SELECT count(*) FROM fleet.job_results('east-dim');
SELECT fleet.create_job('{"displayName": "Viewer job", "group": "east-lamps",
  "data": [{"type": "property", "target": "dtmi:acme:Lamp;1", "path": "level", "value": 1}]}');
SELECT fleet.stop_job('east-blink');
UPDATE fleet.devices SET display_name = 'x' WHERE id = 'east-lamp-1';
INSERT INTO fleet.device_import VALUES ('viewer-1', NULL);
SELECT fleet.update_scheduled_job('east-nightly', '{"enabled": false}');
SELECT * FROM fleet.export_devices(organization => 'acme-east');
SELECT fleet.grant_organization('acme-east', 'regress_outsider', 'viewer');
SELECT fleet.get_device('east-lamp-1') ->> 'displayName';
SELECT fleet.update_device('east-lamp-1', '{"displayName": "x"}');
SELECT fleet.update_device_group('east-lamps', '{"displayName": "x"}');

-- East's administrator: its keys, its members, organizations below it
\c - regress_east_admin
SELECT "IOTC_DEVICEID", length("IOTC_SASKEY_PRIMARY") AS key_length FROM fleet.export_devices() ORDER BY 1;
SELECT * FROM fleet.export_devices(organization => 'acme-west');
SELECT length(primary_key) FROM fleet.device_keys('east-lamp-1');
SELECT fleet.create_organization('east-annex', 'Annex', 'acme-east') ->> 'id';
-- a path is computed, never taken: an organization cannot be written
-- into West's subtree
INSERT INTO fleet.organizations (id, display_name, parent_id, path)
VALUES ('east-forged', 'Forged', 'acme-east', ARRAY['root', 'acme', 'acme-west', 'acme-east', 'east-forged']);
SELECT id, path FROM fleet.organizations WHERE id IN ('east-annex', 'east-forged') ORDER BY id;
-- keys of a device another organization will own cannot be learnt: a
-- device registered, read and deleted here gets other keys when West
-- registers the same id (each organization has its own enrollment groups)
SELECT fleet.create_device('pump-0042', organization => 'acme-east') ->> 'id';
INSERT INTO public.regress_keys SELECT 'acme-east', * FROM fleet.device_keys('pump-0042');
SELECT fleet.delete_device('pump-0042');
SELECT id FROM fleet.enrollment_groups ORDER BY id;
SELECT fleet.create_organization('acme-south', 'South', 'acme') ->> 'id';
SELECT fleet.grant_organization('east-annex', 'regress_outsider', 'viewer');
SELECT fleet.grant_organization('acme-west', 'regress_outsider', 'viewer');
SELECT organization_id, member, app_role FROM fleet.list_organization_members() ORDER BY 1, 2;
SELECT fleet.revoke_organization('east-annex', 'regress_outsider');
SELECT count(*) FROM fleet.enrollment_groups;

-- Acme's administrator sees and exports both children
\c - regress_acme_admin
SELECT d.organization_id, count(*) FROM fleet.export_devices() e JOIN fleet.devices d ON d.id = e."IOTC_DEVICEID"
 GROUP BY 1 ORDER BY 1;
SELECT fleet.create_device('pump-0042', organization => 'acme-west') ->> 'id';
INSERT INTO public.regress_keys SELECT 'acme-west', * FROM fleet.device_keys('pump-0042');
SELECT fleet.delete_device('pump-0042');
-- a schedule an administrator of Acme made for East: East's operator may
-- change it only through the API, and then its runs are East's operator's
SELECT fleet.create_scheduled_job('{"id": "acme-for-east", "displayName": "For East", "group": "east-lamps",
  "organizations": ["acme-east"],
  "data": [{"type": "property", "target": "dtmi:acme:Lamp;1", "path": "level", "value": 3}],
  "schedule": {"start": "2099-07-01T06:00:00", "recurrence": "daily"}}') ->> 'changedBy' AS changed_by;
SELECT fleet.wait_for_job('east-blink');   -- East's gateway answered all three
SELECT id, status FROM fleet.recent_jobs WHERE id IN ('east-dim', 'east-blink', 'west-dim', 'west-blink') ORDER BY id;
\c - regress_east_operator
SELECT fleet.update_scheduled_job('acme-for-east', '{"group": "west-lamps"}');
SELECT fleet.update_scheduled_job('acme-for-east',
  '{"data": [{"type": "property", "target": "dtmi:acme:Lamp;1", "path": "level", "value": 4}]}') ->> 'changedBy' AS changed_by;
\c - :superuser
SELECT count(DISTINCT primary_key) AS distinct_keys, count(*) AS registrations FROM public.regress_keys;
-- a run is the last changer's, in the schedule's organization, with the
-- rights that role has when it fires
SELECT fleet.fire_scheduled_job('acme-for-east', '2099-07-01 06:00:00+00') IS NOT NULL AS ran;
SELECT created_by, organization_id, data -> 0 -> 'value' AS value FROM fleet.jobs WHERE scheduled_job_id = 'acme-for-east';
SELECT fleet.revoke_organization('acme-east', 'regress_east_operator');
SELECT fleet.fire_scheduled_job('acme-for-east', '2099-07-02 06:00:00+00') AS not_ran;
SELECT occurrence, outcome, error FROM fleet.list_scheduled_job_runs('acme-for-east') ORDER BY 1;
SELECT fleet.grant_organization('acme-east', 'regress_east_operator', 'operator');
SELECT fleet.delete_scheduled_job('acme-for-east');

-- the engine keeps a job to its organization, whatever the group's filter
-- says: an East group whose filter names West's devices has no members
\c - regress_east_operator
SELECT fleet.create_device_group('east-greedy', 'Greedy', filter => '$.organization == "acme-west"', organization => 'acme-east') ->> 'id';
SELECT fleet.create_job('{"id": "east-greedy-job", "displayName": "Greedy", "group": "east-greedy",
  "data": [{"type": "deviceTemplateMigration", "template": "dtmi:acme:Lamp;1"}]}') ->> 'status';
-- how a job runs is the engine's to write: a finished job cannot be queued
-- again, nor a new one inserted as if it had run
SELECT fleet.create_job('{"id": "east-replayed", "displayName": "Replayed", "group": "east-lamps",
  "data": [{"type": "property", "target": "dtmi:acme:Lamp;1", "path": "level", "value": 2}]}') ->> 'status';
SELECT fleet.wait_for_job('east-replayed');
UPDATE fleet.jobs SET status = 'pending', started_at = NULL, finished_at = NULL WHERE id = 'east-replayed';
UPDATE fleet.jobs SET status = 'pending' WHERE id = 'east-replayed';
UPDATE fleet.jobs SET status = 'running' WHERE id = 'east-replayed';
INSERT INTO fleet.jobs (id, display_name, group_id, organization_id, job_type, data, status, definition, started_at, current_batch)
VALUES ('east-ran', 'Ran', 'east-lamps', 'acme-east', 'property',
        '[{"type": "property", "target": "dtmi:acme:Lamp;1", "path": "level", "value": 7}]', 'running', '{}',
        clock_timestamp(), 1);
\c - :superuser
CREATE FUNCTION pg_temp.wait_cron() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 500 LOOP
        EXIT WHEN (SELECT s.cron_synced_version = s.cron_version FROM fleet_internal.engine_state s);
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN (SELECT s.cron_synced_version = s.cron_version FROM fleet_internal.engine_state s);
END;
$$;
-- a job row no API function would write (here a superuser's: a finished
-- job queued to start again) fails that job alone; the engine goes on
UPDATE fleet.jobs SET status = 'pending', started_at = NULL, finished_at = NULL WHERE id = 'east-replayed';
SELECT fleet.wait_for_job('east-replayed');
-- (Citus names the constraint of the shard that met the duplicate first)
SELECT status, regexp_replace(error, 'job_devices_pkey_[0-9]+', 'job_devices_pkey') AS error
  FROM fleet.jobs WHERE id = 'east-replayed';
-- nothing forged was written; the schedule runs as East's operator
SELECT count(*) AS forged FROM fleet.jobs WHERE id IN ('east-forged-rerun', 'east-ran');
SELECT count(*) AS forged FROM fleet.scheduled_jobs WHERE id = 'bogus';
SELECT definition ->> 'group' AS east_nightly_group FROM fleet.scheduled_jobs WHERE id = 'east-nightly';
SELECT pg_temp.wait_cron() AS in_line;
SELECT jobname, username FROM cron.job WHERE command LIKE '%east-hourly%';
SELECT fleet.delete_scheduled_job('east-hourly');
-- (what East's operator tried on West's rows above changed nothing)
SELECT id, display_name, organization_id FROM fleet.devices WHERE id IN ('west-lamp-1', 'east-lamp-1') ORDER BY id;
SELECT count(*) AS west_jobs FROM fleet.jobs WHERE id IN ('west-dim', 'west-blink');
SELECT count(*) AS sneaky FROM fleet.devices WHERE id LIKE 'sneaky-%';
SELECT fleet.wait_for_job('east-greedy-job');
SELECT (fleet.get_job('east-greedy-job') -> 'progress') AS progress;
-- and a group moved out of the job's organization fails the job at start
SELECT fleet.save_job('{"id": "east-moved", "displayName": "Moved", "group": "east-lamps",
  "data": [{"type": "property", "target": "dtmi:acme:Lamp;1", "path": "level", "value": 5}]}') ->> 'status';
UPDATE fleet.device_groups SET organization_id = 'acme-west' WHERE id = 'east-lamps';
SELECT fleet.run_job('east-moved') ->> 'status';
SELECT fleet.wait_for_job('east-moved');
SELECT status, error FROM fleet.jobs WHERE id = 'east-moved';
SELECT count(*) FROM fleet.devices WHERE properties ->> 'level' = '5';

-- clean up the roles (their rows go with the organizations' tests)
SELECT fleet.delete_scheduled_job(id) FROM fleet.scheduled_jobs WHERE id IN ('east-nightly', 'west-nightly');
DROP TABLE public.regress_seen, public.regress_tried, public.regress_keys;
DROP FUNCTION public.regress_try_all();
DROP FUNCTION public.regress_count_all();
-- (the roles read first: on Citus a statement that writes a reference
-- table cannot read a catalog of the coordinator)
SELECT array_agg(r.rolname) AS regress_roles FROM pg_roles r WHERE r.rolname LIKE 'regress_%' \gset
DELETE FROM fleet.organization_members WHERE member = ANY (:'regress_roles'::regrole[]);
DROP ROLE regress_acme_admin, regress_east_admin, regress_east_operator, regress_east_viewer,
          regress_west_operator, regress_east_member, regress_east_team, regress_outsider;
