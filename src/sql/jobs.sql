-- Jobs: IoT Central's job body as jsonb, validated at creation, run by the
-- engine (src/sql/engine.sql and the job_*.sql files) in batches.  A job's
-- devices and their outcomes are rows of fleet.job_devices; a batch's
-- progress is a row of fleet.job_batches.
--
-- The functions that write are SECURITY DEFINER (src/sql/access.sql): they
-- act for fleet_internal.calling_role(), check its rights, and find only the
-- groups, templates and jobs it sees.  A deleted job (fleet.delete_job, or
-- past fleet.job_retention) is gone from the API at once; the engine
-- purges its rows in small steps (src/sql/retention.sql).

-- The capability a job data entry refers to, or an error naming it.
CREATE FUNCTION fleet_internal.job_capability(template text, path text, wanted text)
RETURNS fleet.template_capabilities
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path_component text := CASE WHEN strpos(path, '/') > 0 THEN split_part(path, '/', 1) END;
    path_name      text := CASE WHEN strpos(path, '/') > 0 THEN substr(path, strpos(path, '/') + 1) ELSE path END;
    cap     fleet.template_capabilities;
    noun      text := CASE wanted WHEN 'writable_property' THEN 'property' WHEN 'cloud_property' THEN 'cloud property'
                     ELSE 'command' END;
BEGIN
    SELECT c.* INTO cap FROM fleet.template_capabilities c
     WHERE c.template_id = template AND c.component IS NOT DISTINCT FROM path_component AND c.name = path_name
       AND c.capability IN ('property', 'writable_property', 'cloud_property', 'command', 'telemetry')
     ORDER BY c.capability = wanted DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% "%" is not in template "%"', noun, path, template
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write the path as "name" for the root interface or "component/name"; fleet.template_capabilities lists what the template has.';
    END IF;
    IF cap.capability <> wanted THEN
        IF wanted = 'writable_property' AND cap.capability = 'property' THEN
            RAISE EXCEPTION 'property "%" of template "%" is not writable', path, template
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A property job sets writable properties; this one is reported by the device only.';
        ELSIF wanted = 'cloud_property' THEN
            RAISE EXCEPTION '"%" of template "%" is not a cloud property', path, template
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use a cloud property (declared with "@type": "Cloud"), or a property job for device properties.';
        END IF;
        RAISE EXCEPTION '"%" of template "%" is a %, not a %', path, template, replace(cap.capability, '_', ' '), noun
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN cap;
END;
$$;

-- Refuses a value a device document could not hold: IoT Hub's twin limits,
-- 32 KB and objects nested 10 deep.  Group filters run over every device's
-- document, so its size bounds a fan-out's time.
CREATE FUNCTION fleet_internal.check_document_value(value jsonb, what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    depth int := 0;
    level jsonb[] := ARRAY[value];
BEGIN
    IF octet_length(value::text) > 32768 THEN
        RAISE EXCEPTION '% is % bytes long, more than 32768', what, octet_length(value::text)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'IoT Hub''s device twins hold at most 32 KB of properties; send large data another way.';
    END IF;
    -- one level at a time: objects' and arrays' members
    WHILE cardinality(level) > 0 LOOP
        depth := depth + 1;
        IF depth > 10 THEN
            RAISE EXCEPTION '% nests objects and arrays more than 10 deep', what
                USING ERRCODE = 'program_limit_exceeded',
                      HINT = 'IoT Hub''s device twins hold objects at most 10 deep.';
        END IF;
        level := ARRAY(SELECT e.v FROM unnest(level) l(j),
                              LATERAL (SELECT o.value FROM jsonb_each(CASE WHEN jsonb_typeof(l.j) = 'object' THEN l.j END) o
                                       UNION ALL
                                       SELECT a.value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(l.j) = 'array' THEN l.j END) a) e(v)
                        WHERE jsonb_typeof(e.v) IN ('object', 'array'));
    END LOOP;
END;
$$;

-- Validates a job body for the acting role (the caller; at a scheduled
-- run, the role that last changed the schedule) and returns it as a
-- fleet.jobs row (not stored).  Every refusal names the value and says
-- what to do; groups, organizations and templates the role cannot see do
-- not exist for it.
CREATE FUNCTION fleet_internal.job_from_definition(definition jsonb, actor name)
RETURNS fleet.jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job        fleet.jobs;
    entry      jsonb;
    types      text[];
    capability fleet.template_capabilities;
    problem    text;
    grp        fleet.device_groups;
    n          int := 0;
    label      text;                -- how messages name the job
BEGIN
    IF jsonb_typeof(definition) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a job definition must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', coalesce(jsonb_typeof(definition), 'NULL')),
                  HINT = 'Pass IoT Central''s job body: {"displayName": ..., "group": ..., "data": [...]}.';
    END IF;

    job.id := coalesce(definition ->> 'id', 'job-' || replace(gen_random_uuid()::text, '-', ''));
    label := CASE WHEN definition ? 'id' THEN format('job "%s"', job.id) ELSE 'the job' END;
    IF jsonb_typeof(definition -> 'id') NOT IN ('string') THEN
        RAISE EXCEPTION 'job id % is not a string', definition -> 'id'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF job.id !~ '^[A-Za-z0-9_-]+$' OR length(job.id) > 255 THEN
        RAISE EXCEPTION 'invalid job id "%"', job.id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 255 letters, digits, "-" or "_", or leave "id" out to get one.';
    END IF;
    IF EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = job.id) THEN
        RAISE EXCEPTION 'job "%" already exists', job.id
            USING ERRCODE = 'unique_violation',
                  HINT = CASE WHEN EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = job.id AND j.deleted_at IS NOT NULL)
                              THEN 'It was deleted and the engine is purging its rows; its id is free once they are gone.'
                              ELSE 'Choose another id, or leave "id" out to get one.' END;
    END IF;

    IF jsonb_typeof(definition -> 'displayName') IS DISTINCT FROM 'string' OR btrim(definition ->> 'displayName') = '' THEN
        RAISE EXCEPTION '% needs a "displayName"', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    job.display_name := definition ->> 'displayName';
    IF definition ? 'description' AND jsonb_typeof(definition -> 'description') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION '"description" of % must be a string', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    job.description := definition ->> 'description';

    IF jsonb_typeof(definition -> 'group') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% needs a "group": the id of a device group', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    grp := fleet_internal.require_device_group(definition ->> 'group', actor);
    job.group_id := grp.id;

    -- IoT Central takes the organization as a one-element array
    IF definition ? 'organizations' THEN
        IF jsonb_typeof(definition -> 'organizations') <> 'array' OR jsonb_array_length(definition -> 'organizations') <> 1
           OR jsonb_typeof(definition -> 'organizations' -> 0) <> 'string' THEN
            RAISE EXCEPTION '"organizations" of % must be an array of one organization id', label
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('It is %s.', definition -> 'organizations');
        END IF;
        job.organization_id := fleet_internal.require_organization(definition -> 'organizations' ->> 0, actor);
        IF NOT EXISTS (SELECT 1 FROM fleet.organizations o
                        WHERE o.id = grp.organization_id AND o.path @> ARRAY[job.organization_id]) THEN
            RAISE EXCEPTION 'device group "%" is not in organization "%"', grp.id, job.organization_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Choose a group of that organization or one below it.';
        END IF;
    ELSE
        job.organization_id := grp.organization_id;
    END IF;
    PERFORM fleet_internal.require_app_role(job.organization_id, 'operator', 'creating a job', actor);

    -- delivery options
    IF definition ? 'batch' THEN
        entry := definition -> 'batch';
        IF jsonb_typeof(entry) <> 'object' OR entry ->> 'type' NOT IN ('number', 'percentage')
           OR jsonb_typeof(entry -> 'value') <> 'number' OR (entry ->> 'value') !~ '^[0-9]+$' THEN
            RAISE EXCEPTION 'invalid "batch" % in %', entry, label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"type": "number", "value": 100} or {"type": "percentage", "value": 10}.';
        END IF;
        job.batch_type := entry ->> 'type';
        job.batch_value := (entry ->> 'value')::int;
        IF job.batch_type = 'percentage' AND job.batch_value NOT BETWEEN 1 AND 100 THEN
            RAISE EXCEPTION 'batch percentage % of % is outside 1 to 100', job.batch_value, label
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF job.batch_type = 'number' AND job.batch_value < 1 THEN
            RAISE EXCEPTION 'batch size % of % is below 1', job.batch_value, label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF definition ? 'cancellationThreshold' THEN
        entry := definition -> 'cancellationThreshold';
        IF jsonb_typeof(entry) <> 'object' OR entry ->> 'type' NOT IN ('number', 'percentage')
           OR jsonb_typeof(entry -> 'value') <> 'number' OR (entry ->> 'value') !~ '^[0-9]+$'
           OR (entry ? 'batch' AND jsonb_typeof(entry -> 'batch') <> 'boolean') THEN
            RAISE EXCEPTION 'invalid "cancellationThreshold" % in %', entry, label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"type": "number" or "percentage", "value": 10, "batch": false}.';
        END IF;
        job.threshold_type := entry ->> 'type';
        job.threshold_value := (entry ->> 'value')::int;
        job.threshold_per_batch := coalesce((entry ->> 'batch')::boolean, false);
        IF job.threshold_type = 'percentage' AND job.threshold_value NOT BETWEEN 1 AND 100 THEN
            RAISE EXCEPTION 'cancellation threshold percentage % of % is outside 1 to 100', job.threshold_value, label
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF job.threshold_type = 'number' AND job.threshold_value < 1 THEN
            RAISE EXCEPTION 'cancellation threshold % of % is below 1', job.threshold_value, label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    -- what the job does: all entries of one type
    IF jsonb_typeof(definition -> 'data') IS DISTINCT FROM 'array' OR jsonb_array_length(definition -> 'data') = 0 THEN
        RAISE EXCEPTION '% needs "data": a non-empty array of what to do', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example "data": [{"type": "property", "target": "dtmi:...;1", "path": "targetTemperature", "value": 21}].';
    END IF;
    types := ARRAY(SELECT DISTINCT e ->> 'type' FROM jsonb_array_elements(definition -> 'data') e);
    IF array_length(types, 1) > 1 THEN
        RAISE EXCEPTION '% mixes data types %', label, array_to_string(types, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'All entries of "data" share one type; create one job per type.';
    END IF;
    job.job_type := types[1];
    IF job.job_type IS NULL OR job.job_type NOT IN ('property', 'cloudProperty', 'command',
                                                    'deviceTemplateMigration', 'deviceManifestMigration') THEN
        RAISE EXCEPTION 'unknown job data type % in %', coalesce(quote_literal(job.job_type), '(missing)'), label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "property", "cloudProperty", "command", "deviceTemplateMigration" or "deviceManifestMigration".';
    END IF;
    IF job.job_type IN ('command', 'deviceTemplateMigration', 'deviceManifestMigration')
       AND jsonb_array_length(definition -> 'data') > 1 THEN
        RAISE EXCEPTION 'a % job has exactly one data entry; % has %', job.job_type, label,
                        jsonb_array_length(definition -> 'data')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR entry IN SELECT e FROM jsonb_array_elements(definition -> 'data') e LOOP
        n := n + 1;
        CASE job.job_type
        WHEN 'property', 'cloudProperty', 'command' THEN
            IF jsonb_typeof(entry -> 'target') IS DISTINCT FROM 'string' OR jsonb_typeof(entry -> 'path') IS DISTINCT FROM 'string' THEN
                RAISE EXCEPTION 'data entry % of % needs "target" (a template id) and "path"', n, label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            PERFORM fleet_internal.require_template(entry ->> 'target');
            capability := fleet_internal.job_capability(entry ->> 'target', entry ->> 'path',
                CASE job.job_type WHEN 'property' THEN 'writable_property'
                                  WHEN 'cloudProperty' THEN 'cloud_property' ELSE 'command' END);
            IF job.job_type = 'command' THEN
                IF capability.request IS NOT NULL THEN
                    problem := fleet_internal.schema_value_problem(entry -> 'value', capability.request -> 'schema', NULL, NULL,
                                                          format('the request of command "%s"', entry ->> 'path'));
                ELSIF entry ? 'value' AND jsonb_typeof(entry -> 'value') <> 'null' THEN
                    problem := format('command "%s" takes no request payload', entry ->> 'path');
                END IF;
            ELSE
                PERFORM fleet_internal.check_document_value(entry -> 'value', format('the value of "%s"', entry ->> 'path'));
                problem := fleet_internal.schema_value_problem(entry -> 'value', capability.schema,
                                                      capability.min_value, capability.max_value,
                                                      format('the value of "%s"', entry ->> 'path'));
            END IF;
            IF problem IS NOT NULL THEN
                RAISE EXCEPTION '%: %', label, problem
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = format('The schema of "%s" in template "%s" is %s.', entry ->> 'path', entry ->> 'target',
                                        coalesce(capability.request -> 'schema', capability.schema));
            END IF;
        WHEN 'deviceTemplateMigration' THEN
            IF jsonb_typeof(entry -> 'template') IS DISTINCT FROM 'string' THEN
                RAISE EXCEPTION '% needs "template": the device template to assign', label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            PERFORM fleet_internal.require_template(entry ->> 'template');
        WHEN 'deviceManifestMigration' THEN
            IF jsonb_typeof(entry -> 'manifest') IS DISTINCT FROM 'string' THEN
                RAISE EXCEPTION '% needs "manifest": the edge manifest to assign', label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF NOT EXISTS (SELECT 1 FROM fleet.edge_manifests m WHERE m.id = entry ->> 'manifest') THEN
                RAISE EXCEPTION 'edge manifest "%" does not exist', entry ->> 'manifest'
                    USING ERRCODE = 'undefined_object',
                          HINT = 'Create it with fleet.create_edge_manifest(), or see fleet.edge_manifests.';
            END IF;
        END CASE;
    END LOOP;
    -- one value per property
    IF job.job_type IN ('property', 'cloudProperty')
       AND (SELECT count(DISTINCT e ->> 'path') FROM jsonb_array_elements(definition -> 'data') e) < n THEN
        RAISE EXCEPTION '% sets the same property twice', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    job.data := definition -> 'data';
    job.definition := jsonb_set(definition, '{id}', to_jsonb(job.id));
    job.threshold_per_batch := coalesce(job.threshold_per_batch, false);
    job.created_by := actor;
    job.created_at := now();
    RETURN job;
END;
$$;

-- The job as IoT Central's REST API shows it.
CREATE FUNCTION fleet.get_job(id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job      fleet.jobs;
    progress jsonb;
BEGIN
    SELECT j.* INTO job FROM fleet.jobs j WHERE j.id = get_job.id AND j.deleted_at IS NULL;
    IF NOT FOUND THEN
        PERFORM fleet_internal.require_job(id);
    END IF;
    SELECT jsonb_build_object(
               'total', count(*),
               'pending', count(*) FILTER (WHERE jd.status = 'pending'),
               'completed', count(*) FILTER (WHERE jd.status = 'completed'),
               'failed', count(*) FILTER (WHERE jd.status = 'failed'))
      INTO progress
      FROM fleet.job_devices jd WHERE jd.job_id = job.id;
    RETURN job.definition || jsonb_strip_nulls(jsonb_build_object(
        'id', job.id,
        'organizations', jsonb_build_array(job.organization_id),
        'status', job.status,
        'start', job.started_at,
        'end', job.finished_at,
        'progress', progress,
        'scheduledJobId', job.scheduled_job_id,
        'rerunOf', job.rerun_of,
        'error', job.error));
END;
$$;
COMMENT ON FUNCTION fleet.get_job(text) IS 'The job as IoT Central''s job JSON, with status, start, end, progress {total, pending, completed, failed} and scheduledJobId';

CREATE FUNCTION fleet.save_job(definition jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs := fleet_internal.job_from_definition(definition, fleet_internal.calling_role());
BEGIN
    job.status := 'saved';
    INSERT INTO fleet.jobs SELECT job.*;
    RETURN fleet.get_job(job.id);
END;
$$;
COMMENT ON FUNCTION fleet.save_job(jsonb) IS 'Validates and saves a job without running it; fleet.run_job() starts it later';

CREATE FUNCTION fleet.create_job(definition jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs;
BEGIN
    PERFORM fleet_internal.require_engine_database('creating a job');
    job := fleet_internal.job_from_definition(definition, fleet_internal.calling_role());
    job.status := 'pending';
    job.queued_at := clock_timestamp();
    INSERT INTO fleet.jobs SELECT job.*;
    PERFORM fleet_internal.wake_engine();
    RETURN fleet.get_job(job.id);
END;
$$;
COMMENT ON FUNCTION fleet.create_job(jsonb) IS 'Validates a job (IoT Central''s job JSON) and queues it to run now';

-- Locks a job for a state change by the calling role and refuses unless
-- it is in one of the given states.  action names the change in messages
-- ("stop", "stopping").
CREATE FUNCTION fleet_internal.lock_job(id text, allowed text[], action text, acting text)
RETURNS fleet.jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    job    fleet.jobs;
BEGIN
    -- NO KEY UPDATE: waits for the engine's step, not for foreign key checks
    SELECT j.* INTO job FROM fleet.jobs j WHERE j.id = lock_job.id AND j.deleted_at IS NULL FOR NO KEY UPDATE;
    IF NOT FOUND OR NOT fleet_internal.sees(caller, job.organization_id) THEN
        PERFORM fleet_internal.require_job(id);
    END IF;
    PERFORM fleet_internal.require_app_role(job.organization_id, 'operator', acting || ' a job', caller);
    IF job.status <> ALL (allowed) THEN
        RAISE EXCEPTION 'cannot % job "%": it is %', action, id, job.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE action
                         WHEN 'delete' THEN 'Stop it first with fleet.stop_job().'
                         ELSE format('Only %s jobs can be %s.', array_to_string(allowed, ' or '),
                                     CASE action WHEN 'stop' THEN 'stopped' WHEN 'run' THEN 'run'
                                                 ELSE action || 'd' END) END;
    END IF;
    RETURN job;
END;
$$;

CREATE FUNCTION fleet.run_job(id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_engine_database('running a job');
    PERFORM fleet_internal.lock_job(id, '{saved}', 'run', 'running');
    UPDATE fleet.jobs j SET status = 'pending', queued_at = clock_timestamp() WHERE j.id = run_job.id;
    PERFORM fleet_internal.wake_engine();
    RETURN fleet.get_job(id);
END;
$$;
COMMENT ON FUNCTION fleet.run_job(text) IS 'Queues a saved job to run';

-- Stop: dispatch halts at once; commands not yet claimed by a gateway are
-- withdrawn (gateways claim only from running jobs) and their devices stay
-- pending.  Claimed ones may still be answered.
CREATE FUNCTION fleet.stop_job(id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.lock_job(id, '{pending,running}', 'stop', 'stopping');
    UPDATE fleet.jobs j SET status = 'stopped' WHERE j.id = stop_job.id;
    PERFORM fleet_internal.wake_engine();
    RETURN fleet.get_job(id);
END;
$$;
COMMENT ON FUNCTION fleet.stop_job(text) IS 'Stops a pending or running job; fleet.resume_job() continues it with its pending devices';

-- Resume: the job queues again (the running-jobs limit applies) and goes on
-- with its pending devices; withdrawn commands are offered again when it
-- starts (fleet_internal.engine_start_job).  A job the engine gave up on (it
-- failed for a reason outside its devices, with an error) resumes the same
-- way: its devices that never ran are still pending.
CREATE FUNCTION fleet.resume_job(id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs := fleet_internal.lock_job(id, '{stopped,failed}', 'resume', 'resuming');
BEGIN
    PERFORM fleet_internal.require_engine_database('resuming a job');
    IF job.status = 'failed' AND job.error IS NULL THEN
        RAISE EXCEPTION 'cannot resume job "%": it ran every device, and some failed', id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run it again on its failed devices with fleet.rerun_job().';
    END IF;
    UPDATE fleet.jobs j
       SET status = 'pending', queued_at = clock_timestamp(), finished_at = NULL, error = NULL, last_step_at = NULL
     WHERE j.id = resume_job.id;
    DELETE FROM fleet_internal.job_engine_state s WHERE s.job_id = resume_job.id;
    PERFORM fleet_internal.wake_engine();
    RETURN fleet.get_job(id);
END;
$$;
COMMENT ON FUNCTION fleet.resume_job(text) IS 'Continues a stopped job, or one the engine gave up on, with its pending devices';

-- Deletes a job and everything under it: gone from the API at once, its
-- rows purged by the engine in small steps.  A running or queued job must
-- be stopped first.
CREATE FUNCTION fleet.delete_job(id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.lock_job(id, '{saved,stopped,completed,failed,cancelled}', 'delete', 'deleting');
    UPDATE fleet.jobs j SET deleted_at = clock_timestamp() WHERE j.id = delete_job.id;
    PERFORM fleet_internal.wake_engine();
END;
$$;
COMMENT ON FUNCTION fleet.delete_job(text) IS 'Deletes a job that is not running (stop it first) with its devices'' outcomes and batches';

-- A free id: base, else base-2, base-3, ...
CREATE FUNCTION fleet_internal.free_job_id(base text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT candidate
      FROM (SELECT left(base, 240) || CASE WHEN n = 1 THEN '' ELSE '-' || n END AS candidate, n
              FROM generate_series(1, 1000) n) c
     WHERE NOT EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = c.candidate)
     ORDER BY n
     LIMIT 1
$$;

CREATE FUNCTION fleet.copy_job(id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    source  fleet.jobs := fleet_internal.visible_job(id);
    copy_id text := fleet_internal.free_job_id(source.id || '-copy');
BEGIN
    RETURN fleet.save_job(source.definition
                          || jsonb_build_object('id', copy_id, 'displayName', source.display_name || ' Copy'));
END;
$$;
COMMENT ON FUNCTION fleet.copy_job(text) IS 'Saves a copy of a job named "<name> Copy", to edit and run';

-- A new job over exactly the failed devices of a finished job.
CREATE FUNCTION fleet.rerun_job(id text, rerun_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    source fleet.jobs := fleet_internal.visible_job(id);
    job    fleet.jobs;
BEGIN
    PERFORM fleet_internal.require_engine_database('rerunning a job');
    IF source.status NOT IN ('completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot rerun job "%": it is %', id, source.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rerun a job once it has completed, failed or been cancelled.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.job_devices jd WHERE jd.job_id = source.id AND jd.status = 'failed') THEN
        RAISE EXCEPTION 'job "%" has no failed devices to rerun', id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    job := fleet_internal.job_from_definition(source.definition
             || jsonb_build_object('id', coalesce(rerun_id, fleet_internal.free_job_id(source.id || '-rerun')),
                                   'displayName', source.display_name || ' Rerun'),
             fleet_internal.calling_role());
    job.rerun_of := source.id;
    job.status := 'pending';
    job.queued_at := clock_timestamp();
    INSERT INTO fleet.jobs SELECT job.*;
    PERFORM fleet_internal.wake_engine();
    RETURN fleet.get_job(job.id);
END;
$$;
COMMENT ON FUNCTION fleet.rerun_job(text, text) IS 'Queues a new job that retries a finished job on exactly its failed devices';

CREATE VIEW fleet.recent_jobs WITH (security_invoker = true) AS
    SELECT j.id, j.display_name, j.job_type, j.status, j.group_id, j.organization_id,
           coalesce(p.total, 0) AS total, coalesce(p.pending, 0) AS pending,
           coalesce(p.completed, 0) AS completed, coalesce(p.failed, 0) AS failed,
           j.scheduled_job_id, j.rerun_of, j.created_by, j.created_at, j.started_at, j.finished_at
      FROM fleet.jobs j
      LEFT JOIN LATERAL (SELECT count(*) AS total,
                                count(*) FILTER (WHERE jd.status = 'pending') AS pending,
                                count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                                count(*) FILTER (WHERE jd.status = 'failed') AS failed
                           FROM fleet.job_devices jd WHERE jd.job_id = j.id) p ON true
     WHERE j.created_at > pg_catalog.now() - interval '30 days' AND j.deleted_at IS NULL;
COMMENT ON VIEW fleet.recent_jobs IS 'Jobs of the last 30 days, newest first when ordered by created_at, with their progress';

-- Which device properties appear as extra columns of the device list, for
-- the current role.
CREATE FUNCTION fleet.set_job_device_list_columns(columns text[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    path   text;
BEGIN
    FOREACH path IN ARRAY coalesce(columns, '{}') LOOP
        BEGIN
            PERFORM path::jsonpath;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'column "%" is not a jsonpath', path
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Name columns as paths into the device document, for example ''$.reported.firmware'' or ''$.properties.targetTemperature''.';
        END;
    END LOOP;
    DELETE FROM fleet.job_device_list_columns c WHERE c.role_name = caller;
    INSERT INTO fleet.job_device_list_columns (role_name, position, path)
    SELECT caller, n, p FROM unnest(columns) WITH ORDINALITY AS u(p, n);
END;
$$;
COMMENT ON FUNCTION fleet.set_job_device_list_columns(text[]) IS 'Chooses the extra columns (jsonpath over fleet.device_document) of fleet.job_device_list for the current role';

-- The one "job does not exist" refusal: unless the calling role sees the
-- job, and it is not deleted.
CREATE FUNCTION fleet_internal.require_job(job_id text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.visible_job(job_id);
END;
$$;

-- The job, or "does not exist" unless the calling role sees it.
CREATE FUNCTION fleet_internal.visible_job(job_id text)
RETURNS fleet.jobs
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs;
BEGIN
    SELECT j.* INTO job FROM fleet.jobs j WHERE j.id = job_id AND j.deleted_at IS NULL;
    IF NOT FOUND OR NOT fleet_internal.sees(fleet_internal.calling_role(), job.organization_id) THEN
        RAISE EXCEPTION 'job "%" does not exist', job_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'See the jobs of the last 30 days in fleet.recent_jobs.';
    END IF;
    RETURN job;
END;
$$;

CREATE FUNCTION fleet.job_device_list(job_id text, device_filter text DEFAULT NULL, status_filter text DEFAULT NULL)
RETURNS TABLE (device_id text, device_name text, batch int, status text, error text,
               started_at timestamptz, finished_at timestamptz, columns jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    paths text[] := ARRAY(SELECT c.path FROM fleet.job_device_list_columns c
                           WHERE c.role_name = current_user ORDER BY c.position);
BEGIN
    PERFORM fleet_internal.require_job(job_id);
    IF status_filter IS NOT NULL AND status_filter NOT IN ('pending', 'completed', 'failed') THEN
        RAISE EXCEPTION 'unknown device status "%"', status_filter
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Filter on ''pending'', ''completed'' or ''failed''.';
    END IF;
    RETURN QUERY
    SELECT jd.device_id, coalesce(d.display_name, 'deleted'), jd.batch, jd.status, jd.error,
           jd.started_at, jd.finished_at,
           CASE WHEN cardinality(paths) = 0 OR d.id IS NULL THEN NULL
                ELSE (SELECT jsonb_object_agg(p, jsonb_path_query_first(fleet.device_document(d), p::jsonpath,
                                                                         silent => true))
                        FROM unnest(paths) p) END
      FROM fleet.job_devices jd
      LEFT JOIN fleet.devices d ON d.id = jd.device_id
     WHERE jd.job_id = job_device_list.job_id
       AND (device_filter IS NULL OR strpos(lower(jd.device_id), lower(device_filter)) > 0)
       AND (status_filter IS NULL OR jd.status = status_filter)
     ORDER BY jd.batch, jd.device_id;
END;
$$;
COMMENT ON FUNCTION fleet.job_device_list(text, text, text) IS 'A job''s devices, filtered by device id (substring) and status, with the role''s extra columns';

-- The results log, for COPY ... TO: one row per device.
CREATE FUNCTION fleet.job_results(job_id text, spreadsheet_safe boolean DEFAULT false)
RETURNS TABLE (job text, device_id text, device_name text, batch int, status text, error text,
               started_at timestamptz, finished_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_job(job_results.job_id);
    -- (the cells are neutralised only when asked: a call per cell costs)
    RETURN QUERY
    SELECT CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(jd.job_id, true) ELSE jd.job_id END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(jd.device_id, true) ELSE jd.device_id END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(coalesce(d.display_name, 'deleted'), true)
                ELSE coalesce(d.display_name, 'deleted') END,
           jd.batch, jd.status,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(jd.error, true) ELSE jd.error END,
           jd.started_at, jd.finished_at
      FROM fleet.job_devices jd
      LEFT JOIN fleet.devices d ON d.id = jd.device_id
     WHERE jd.job_id = job_results.job_id
     ORDER BY jd.batch, jd.device_id;
END;
$$;
COMMENT ON FUNCTION fleet.job_results(text, boolean) IS 'The results log of a job: device, name ("deleted" for deleted devices), batch, status, error, times';

-- Waits until the job is in one of the given states, or the timeout
-- passes; returns the status it ended in.  For scripts and tests.
CREATE FUNCTION fleet.wait_for_job(id text, statuses text[] DEFAULT '{completed,failed,cancelled}',
                                   timeout interval DEFAULT '60 seconds')
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    give_up timestamptz := clock_timestamp() + timeout;
    current text;
BEGIN
    PERFORM fleet_internal.require_job(id);
    LOOP
        SELECT j.status INTO current FROM fleet.jobs j WHERE j.id = wait_for_job.id;
        EXIT WHEN current = ANY (statuses) OR clock_timestamp() > give_up;
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN current;
END;
$$;
COMMENT ON FUNCTION fleet.wait_for_job(text, text[], interval) IS 'Waits until a job reaches one of the statuses (default: finished) or the timeout passes; returns its status';
