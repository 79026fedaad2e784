-- pg_fleet 0.2 to 0.3: the changes to what holds data, and the code that
-- went away or changed its signature.  The code itself is reloaded after
-- this by the update script (tools/build-sql.sh), and every policy was
-- dropped before it, to be made again.  (IF EXISTS: from 0.1, the step to
-- 0.2 has already dropped what changed its signature there.)

-- import_template() takes the template's id (IoT Central's form has it in
-- the URL, not the body)
DROP FUNCTION IF EXISTS fleet.import_template(jsonb);

-- creating a job or a schedule takes the id the REST API has in its URL
DROP FUNCTION IF EXISTS fleet.save_job(jsonb);
DROP FUNCTION IF EXISTS fleet.create_job(jsonb);
DROP FUNCTION IF EXISTS fleet.create_scheduled_job(jsonb);

-- the staged rows carry the export file's keys and thumbprints
DROP FUNCTION IF EXISTS fleet_internal.device_import_staged_rows();

-- device groups keep IoT Central's description and query
ALTER TABLE fleet.device_groups ADD COLUMN description text, ADD COLUMN query text;

-- enrollment groups: IoT Central's display name, and enabled
ALTER TABLE fleet.enrollment_groups ADD COLUMN display_name text, ADD COLUMN enabled boolean NOT NULL DEFAULT true;
-- (fleet_internal.organization_enrollment_groups gains "enabled" at its
-- end: CREATE OR REPLACE VIEW below does that)

-- deployment manifests keep the organizations IoT Central's body names
ALTER TABLE fleet.edge_manifests ADD COLUMN organizations text[];

-- 0.2 stored job and schedule bodies with keys it did not know (and
-- ignored); 0.3 refuses such keys, and checks a schedule's body again at
-- every run.  The keys go, with a warning naming them, so that every job
-- and schedule runs as it did under 0.2.
CREATE FUNCTION pg_temp.known_keys_only(body jsonb, known text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(body) = 'object'
                THEN body - ARRAY(SELECT k FROM jsonb_object_keys(body) k WHERE k <> ALL (known))
                ELSE body END
$$;
CREATE FUNCTION pg_temp.known_job_keys_only(definition jsonb)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_temp.known_keys_only(definition,
               '{id,displayName,description,group,batch,cancellationThreshold,data,organizations,scheduledJobId,start,end,progress,status,etag,rerunOf,error}')
           || CASE WHEN definition ? 'batch'
                   THEN jsonb_build_object('batch', pg_temp.known_keys_only(definition -> 'batch', '{type,value}')) ELSE '{}' END
           || CASE WHEN definition ? 'cancellationThreshold'
                   THEN jsonb_build_object('cancellationThreshold',
                                           pg_temp.known_keys_only(definition -> 'cancellationThreshold', '{type,value,batch}')) ELSE '{}' END
           || CASE WHEN jsonb_typeof(definition -> 'data') = 'array'
                   THEN jsonb_build_object('data', (SELECT coalesce(jsonb_agg(pg_temp.known_keys_only(e, '{type,target,path,value,template,manifest}') ORDER BY n), '[]')
                                                      FROM jsonb_array_elements(definition -> 'data') WITH ORDINALITY AS x(e, n)))
                   ELSE '{}' END
$$;
DO $strip_unknown_keys$
DECLARE
    r record;
BEGIN
    FOR r IN
        WITH cleaned AS (
            UPDATE fleet.scheduled_jobs s SET definition = pg_temp.known_job_keys_only(s.definition)
             WHERE s.definition IS DISTINCT FROM pg_temp.known_job_keys_only(s.definition)
            RETURNING 'scheduled job' AS kind, s.id
        ), cleaned_jobs AS (
            UPDATE fleet.jobs j SET definition = pg_temp.known_job_keys_only(j.definition)
             WHERE j.definition IS DISTINCT FROM pg_temp.known_job_keys_only(j.definition)
            RETURNING 'job' AS kind, j.id
        )
        SELECT * FROM cleaned UNION ALL SELECT * FROM cleaned_jobs
    LOOP
        RAISE WARNING 'pg_fleet 0.3: % "%" had keys pg_fleet does not know; they were ignored and are removed', r.kind, r.id
            USING HINT = 'Check its body with fleet.get_job() or fleet.get_scheduled_job(): a misspelled key (such as "cancelationThreshold") never took effect.';
    END LOOP;
END
$strip_unknown_keys$;
DROP FUNCTION pg_temp.known_job_keys_only(jsonb);
DROP FUNCTION pg_temp.known_keys_only(jsonb, text[]);
