-- Job definitions: IoT Central's job body, as its REST API takes it,
-- validated for the acting role and turned into a fleet.jobs row (not
-- stored: src/sql/jobs.sql stores it).  Every refusal names the value and
-- says what to do; groups, organizations and templates the role cannot
-- see do not exist for it.  Values and payloads are checked against the
-- template's DTDL schemas (src/sql/schema_values.sql).

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

-- IoT Central's names for what a job does, as "type" of a data entry:
-- the REST API's discriminator values, and the model names its SDKs and
-- examples also send ("PropertyJobData").
CREATE FUNCTION fleet_internal.job_data_type(type text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE type
           WHEN 'PropertyJobData' THEN 'property'
           WHEN 'CloudPropertyJobData' THEN 'cloudProperty'
           WHEN 'CommandJobData' THEN 'command'
           WHEN 'DeviceTemplateMigrationJobData' THEN 'deviceTemplateMigration'
           WHEN 'DeviceManifestMigrationJobData' THEN 'deviceManifestMigration'
           ELSE type END
$$;

-- A data entry as the engine reads it: the type by its short name and the
-- path as "component/name" (IoT Central also writes "component.name"; DTDL
-- names hold no ".", so the two cannot be confused).
CREATE FUNCTION fleet_internal.job_data_entry(entry jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(entry) <> 'object' THEN entry ELSE entry
           || CASE WHEN entry ? 'type' AND jsonb_typeof(entry -> 'type') = 'string'
                   THEN jsonb_build_object('type', fleet_internal.job_data_type(entry ->> 'type')) ELSE '{}' END
           || CASE WHEN jsonb_typeof(entry -> 'path') = 'string' AND strpos(entry ->> 'path', '/') = 0
                        AND strpos(entry ->> 'path', '.') > 0
                   THEN jsonb_build_object('path', replace(entry ->> 'path', '.', '/')) ELSE '{}' END END
$$;

-- The keys of a job body: IoT Central's, then what fleet.get_job() adds
-- (read-only: ignored when a job read back is sent again).
CREATE FUNCTION fleet_internal.job_keys(read_only boolean)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN read_only
                THEN '{scheduledJobId,start,end,progress,status,statusDetail,etag,rerunOf,error}'::text[]
                ELSE '{id,displayName,description,group,batch,cancellationThreshold,data,organizations,rollout}'::text[] END
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
    PERFORM fleet_internal.refuse_unknown_keys(definition,
        fleet_internal.job_keys(false) || fleet_internal.job_keys(true), label);
    definition := definition - fleet_internal.job_keys(true);
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
            USING ERRCODE = 'duplicate_object',
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
        job.organization_id := fleet_internal.require_organization(fleet_internal.body_organization(definition, label), actor);
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
        PERFORM fleet_internal.refuse_unknown_keys(entry, '{type,value}', format('the "batch" of %s', label));
        IF jsonb_typeof(entry) <> 'object' OR entry ->> 'type' NOT IN ('number', 'percentage')
           OR jsonb_typeof(entry -> 'value') <> 'number' OR (entry ->> 'value')::numeric <> trunc((entry ->> 'value')::numeric)
           OR (entry ->> 'value')::numeric NOT BETWEEN 0 AND 2147483647 THEN
            RAISE EXCEPTION 'invalid "batch" % in %', entry, label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"type": "number", "value": 100} or {"type": "percentage", "value": 10}.';
        END IF;
        job.batch_type := entry ->> 'type';
        job.batch_value := (entry ->> 'value')::numeric::int;
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
        PERFORM fleet_internal.refuse_unknown_keys(entry, '{type,value,batch}',
                                                   format('the "cancellationThreshold" of %s', label));
        IF jsonb_typeof(entry) <> 'object' OR entry ->> 'type' NOT IN ('number', 'percentage')
           OR jsonb_typeof(entry -> 'value') <> 'number' OR (entry ->> 'value')::numeric <> trunc((entry ->> 'value')::numeric)
           OR (entry ->> 'value')::numeric NOT BETWEEN 0 AND 2147483647
           OR (entry ? 'batch' AND jsonb_typeof(entry -> 'batch') <> 'boolean') THEN
            RAISE EXCEPTION 'invalid "cancellationThreshold" % in %', entry, label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"type": "number" or "percentage", "value": 10, "batch": false}.';
        END IF;
        job.threshold_type := entry ->> 'type';
        job.threshold_value := (entry ->> 'value')::numeric::int;
        job.threshold_per_batch := coalesce((entry ->> 'batch')::boolean, false);
        IF job.threshold_type = 'percentage' AND job.threshold_value NOT BETWEEN 1 AND 100 THEN
            RAISE EXCEPTION 'cancellation threshold percentage % of % is outside 1 to 100', job.threshold_value, label
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF job.threshold_type = 'number' AND job.threshold_value < 1 THEN
            RAISE EXCEPTION 'cancellation threshold % of % is below 1', job.threshold_value, label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    -- pg_fleet's rollout controls (src/sql/job_rollouts.sql)
    job.rollout := fleet_internal.job_rollout(definition -> 'rollout', label);
    IF job.rollout ? 'onThreshold' AND job.threshold_type IS NULL THEN
        RAISE EXCEPTION '"onThreshold" of % needs a "cancellationThreshold"', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the job a "cancellationThreshold"; "onThreshold": "pause" makes passing it pause the job.';
    END IF;

    -- what the job does: all entries of one type
    IF jsonb_typeof(definition -> 'data') IS DISTINCT FROM 'array' OR jsonb_array_length(definition -> 'data') = 0 THEN
        RAISE EXCEPTION '% needs "data": a non-empty array of what to do', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example "data": [{"type": "property", "target": "dtmi:...;1", "path": "targetTemperature", "value": 21}].';
    END IF;
    job.data := (SELECT jsonb_agg(fleet_internal.job_data_entry(d.e) ORDER BY d.ord)
                   FROM jsonb_array_elements(definition -> 'data') WITH ORDINALITY AS d(e, ord));
    types := ARRAY(SELECT DISTINCT e ->> 'type' FROM jsonb_array_elements(job.data) e);
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
                  HINT = 'Use "property", "cloudProperty", "command", "deviceTemplateMigration" or "deviceManifestMigration" (or IoT Central''s model names, such as "PropertyJobData").';
    END IF;
    IF job.job_type IN ('command', 'deviceTemplateMigration', 'deviceManifestMigration')
       AND jsonb_array_length(definition -> 'data') > 1 THEN
        RAISE EXCEPTION 'a % job has exactly one data entry; % has %', job.job_type, label,
                        jsonb_array_length(definition -> 'data')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR entry IN SELECT e FROM jsonb_array_elements(job.data) e LOOP
        n := n + 1;
        PERFORM fleet_internal.refuse_unknown_keys(entry,
            CASE WHEN job.job_type IN ('property', 'cloudProperty', 'command') THEN '{type,target,path,value}'
                 WHEN job.job_type = 'deviceTemplateMigration' THEN '{type,template}'
                 ELSE '{type,manifest}' END::text[],
            format('data entry %s of %s', n, label));
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
                -- an integer written as 25.0 reaches devices as 25
                IF problem IS NULL AND capability.schema IN ('"integer"', '"long"') AND jsonb_typeof(entry -> 'value') = 'number' THEN
                    job.data := jsonb_set(job.data, ARRAY[(n - 1)::text, 'value'], to_jsonb(trunc((entry ->> 'value')::numeric)));
                END IF;
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
       AND (SELECT count(DISTINCT e ->> 'path') FROM jsonb_array_elements(job.data) e) < n THEN
        RAISE EXCEPTION '% sets the same property twice', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF job.rollout -> 'canary' ? 'group' THEN
        PERFORM fleet_internal.require_device_group(job.rollout #>> '{canary,group}', actor);
    END IF;
    IF job.rollout ? 'promotion' AND job.batch_type IS NULL AND NOT job.rollout ? 'canary' THEN
        RAISE EXCEPTION '"promotion" of % needs a "batch"', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A job without "batch" runs as one batch: there is nothing to promote.';
    END IF;
    IF job.rollout -> 'abortCriteria' @> '[{"failureType": "TIMED_OUT"}]' AND job.job_type <> 'command' THEN
        RAISE EXCEPTION 'abort criteria of % count timeouts, which only command jobs have; this is a % job', label, job.job_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "failureType": "FAILED" or "ALL".';
    END IF;
    IF job.rollout ? 'retries' AND job.job_type <> 'command' THEN
        RAISE EXCEPTION '"retries" of % apply to command jobs; this is a % job', label, job.job_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A property, template or manifest change is made by the database: its failures (a device without the capability) do not pass; rerun the job''s failed devices once they are fixed.';
    END IF;
    IF job.rollout ?| '{commandTimeout,inProgressTimeout}' AND job.job_type <> 'command' THEN
        RAISE EXCEPTION '"%" of % applies to command jobs; this is a % job',
                        CASE WHEN job.rollout ? 'commandTimeout' THEN 'commandTimeout' ELSE 'inProgressTimeout' END,
                        label, job.job_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF job.rollout -> 'abortCriteria' @> '[{"failureType": "REJECTED"}]' AND job.job_type <> 'command' THEN
        RAISE EXCEPTION 'abort criteria of % count rejections, which only command jobs have; this is a % job', label, job.job_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "failureType": "FAILED" or "ALL".';
    END IF;

    job.definition := jsonb_set(definition, '{id}', to_jsonb(job.id));
    job.threshold_per_batch := coalesce(job.threshold_per_batch, false);
    job.threshold_base := 0;
    job.abort_base := '{}';
    job.created_by := actor;
    job.created_at := now();
    RETURN job;
END;
$$;

-- The unfinished jobs and the scheduled jobs whose data entries name an
-- object (a template as "target" or "template", a manifest as "manifest"):
-- what deleting that object would break.
CREATE FUNCTION fleet_internal.job_data_users(keys text[], value text, OUT jobs bigint, OUT schedules bigint)
RETURNS record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT count(*) FROM fleet.jobs j
             WHERE j.deleted_at IS NULL AND j.status IN ('saved', 'pending', 'running', 'stopped')
               AND EXISTS (SELECT 1 FROM unnest(keys) k
                            WHERE j.data @> jsonb_build_array(jsonb_build_object(k, value)))),
           (SELECT count(*) FROM fleet.scheduled_jobs s
             WHERE EXISTS (SELECT 1 FROM unnest(keys) k
                            WHERE s.definition -> 'data' @> jsonb_build_array(jsonb_build_object(k, value))))
$$;
