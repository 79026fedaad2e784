\set SHOW_CONTEXT never
-- The engine's health: a job whose steps keep failing for a reason outside
-- its devices is retried with backoff, then failed with the error (here
-- fleet.job_max_retries = 1, test/fleet.conf), its devices that never ran
-- still pending; once the cause is gone it resumes and completes.  Jobs
-- are deleted, and purged past fleet.job_retention, by the engine.
SELECT fleet.create_organization('works', 'Works') ->> 'id';
SELECT fleet.import_template('{"@id": "dtmi:test:Valve;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
  "contents": [{"@type": "Property", "name": "open", "schema": "boolean", "writable": true}]}') ->> 'id';
INSERT INTO fleet.device_import SELECT 'valve-' || lpad(i::text, 2, '0'), NULL FROM generate_series(1, 12) i;
UPDATE fleet.devices SET template_id = 'dtmi:test:Valve;1', organization_id = 'works' WHERE id LIKE 'valve-%';
SELECT fleet.create_device_group('valves', 'Valves', 'dtmi:test:Valve;1', organization => 'works') ->> 'id';

-- a cause outside the devices: a constraint of someone else's that fails
-- every change of valve-08 (batch 2 of 3).  (A constraint, not a trigger:
-- Citus allows none on the devices' shards.)
ALTER TABLE fleet.devices ADD CONSTRAINT regress_broken
    CHECK (id <> 'valve-08' OR properties = '{}') NOT VALID;
SELECT fleet.create_job('{"id": "open-valves", "displayName": "Open valves", "group": "valves",
  "batch": {"type": "number", "value": 4},
  "data": [{"type": "property", "target": "dtmi:test:Valve;1", "path": "open", "value": true}]}') ->> 'status' AS status;
SELECT fleet.wait_for_job('open-valves');
SELECT status, error FROM fleet.jobs WHERE id = 'open-valves';
SELECT status, count(*) FROM fleet.job_devices WHERE job_id = 'open-valves' GROUP BY 1 ORDER BY 1;
SELECT status, step_failures, last_step_error, error IS NOT NULL AS gave_up
  FROM fleet.job_overview WHERE job_id = 'open-valves';
-- fixed, it resumes with the devices that never ran, and completes
ALTER TABLE fleet.devices DROP CONSTRAINT regress_broken;
SELECT fleet.resume_job('open-valves') ->> 'status' AS status;
SELECT fleet.wait_for_job('open-valves');
SELECT status, error FROM fleet.jobs WHERE id = 'open-valves';
SELECT status, count(*) FROM fleet.job_devices WHERE job_id = 'open-valves' GROUP BY 1 ORDER BY 1;
SELECT count(*) AS open FROM fleet.devices WHERE id LIKE 'valve-%' AND (properties -> 'open')::boolean;
SELECT step_failures, next_retry_at FROM fleet.job_overview WHERE job_id = 'open-valves';
-- a job that ran every device and failed some is for rerun_job, not resume
SELECT fleet.create_edge_manifest('works-edge', 'Works edge',
  '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "$edgeHub": {"properties.desired": {}}}}') ->> 'id';
SELECT fleet.create_job('{"id": "misfit", "displayName": "Misfit", "group": "valves",
  "data": [{"type": "deviceManifestMigration", "manifest": "works-edge"}]}') ->> 'status' AS status;
SELECT fleet.wait_for_job('misfit');
SELECT fleet.resume_job('misfit');

-- the engine's status: for superusers and pg_monitor
SELECT pid IS NOT NULL AS running, database = current_database() AS here, state IN ('idle', 'stepping') AS working,
       steps > 0 AS stepped, not_running_because
  FROM fleet.engine_status;
CREATE ROLE regress_watcher IN ROLE pg_monitor;
CREATE ROLE regress_member;
SET ROLE regress_watcher;
SELECT pid IS NOT NULL AS running FROM fleet.engine_status;
SET ROLE regress_member;
SELECT pid FROM fleet.engine_status;
RESET ROLE;
DROP ROLE regress_watcher, regress_member;

-- deleting a job: not while it is queued or runs; then gone from the API
-- at once, and its rows purged by the engine a chunk at a time
BEGIN;
SELECT fleet.create_job('{"id": "queued", "displayName": "Queued", "group": "valves",
  "data": [{"type": "property", "target": "dtmi:test:Valve;1", "path": "open", "value": false}]}') ->> 'status';
SELECT fleet.delete_job('queued');
ROLLBACK;
BEGIN;
SELECT fleet.create_job('{"id": "held-open", "displayName": "Held open", "group": "valves",
  "data": [{"type": "property", "target": "dtmi:test:Valve;1", "path": "open", "value": false}]}') ->> 'status';
SELECT fleet.stop_job('held-open') ->> 'status';
COMMIT;
-- (in one transaction, so that the engine cannot purge in between)
BEGIN;
SELECT fleet.delete_job('open-valves');
SAVEPOINT deleted;
SELECT fleet.get_job('open-valves');
ROLLBACK TO deleted;
SELECT count(*) FROM fleet.recent_jobs WHERE id = 'open-valves';
SELECT fleet.create_job('{"id": "open-valves", "displayName": "Again", "group": "valves",
  "data": [{"type": "property", "target": "dtmi:test:Valve;1", "path": "open", "value": true}]}');
ROLLBACK TO deleted;
SELECT fleet.delete_job('open-valves');
ROLLBACK TO deleted;
COMMIT;
SELECT fleet.delete_job('no-such-job');
CREATE FUNCTION pg_temp.wait_purged(job text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 500 LOOP
        EXIT WHEN NOT EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = job);
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN NOT EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = job)
       AND NOT EXISTS (SELECT 1 FROM fleet.job_devices jd WHERE jd.job_id = job)
       AND NOT EXISTS (SELECT 1 FROM fleet.job_batches jb WHERE jb.job_id = job);
END;
$$;
SELECT pg_temp.wait_purged('open-valves') AS purged;
SELECT fleet.resume_job('held-open') ->> 'status';
SELECT fleet.wait_for_job('held-open');

-- retention: finished jobs older than fleet.job_retention (30 days) are
-- deleted with their rows, and device operations and scheduled runs as
-- old; newer ones stay.  The engine's clock moves 31 days on.
SELECT count(*) > 0 AS finished_jobs FROM fleet.jobs WHERE status IN ('completed', 'failed', 'cancelled');
SELECT count(*) > 0 AS operations FROM fleet.device_operations;
SELECT fleet_internal.purge(now() + interval '29 days') AS more;
SELECT count(*) AS deleted FROM fleet.jobs WHERE deleted_at IS NOT NULL;
SELECT bool_or(fleet_internal.purge(now() + interval '31 days')) IS NOT NULL AS purged FROM generate_series(1, 5);
SELECT count(*) = count(*) FILTER (WHERE deleted_at IS NOT NULL) AS every_finished_one_deleted
  FROM fleet.jobs WHERE status IN ('completed', 'failed', 'cancelled');
SELECT count(*) AS operations_left FROM fleet.device_operations;
SELECT count(*) AS saved_or_stopped_kept FROM fleet.jobs WHERE status IN ('saved', 'stopped') AND deleted_at IS NULL;
SELECT pg_temp.wait_purged('held-open') AS purged;
CREATE FUNCTION pg_temp.wait_all_purged() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 1000 LOOP
        EXIT WHEN NOT EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.deleted_at IS NOT NULL);
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN (SELECT count(*) FROM fleet.jobs j WHERE j.deleted_at IS NOT NULL);
END;
$$;
SELECT pg_temp.wait_all_purged() AS still_to_purge;
SELECT count(*) AS orphan_rows FROM fleet.job_devices jd WHERE NOT EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = jd.job_id);
SELECT jobs_being_purged, retrying_jobs FROM fleet.engine_status;
