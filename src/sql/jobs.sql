-- Jobs: their life cycle through the API.  A job is created (queued) or
-- saved from its definition (src/sql/job_definitions.sql), then moved only
-- by these functions and by the engine (src/sql/job_batches.sql starts it,
-- src/sql/job_steps.sql runs and finishes it):
--
--   saved -> pending (queued) -> running -> completed | failed | cancelled
--   pending, running -> stopped -> pending (resumed)
--   failed by the engine (with an error) -> pending (resumed)
--
-- lock_job() holds the one list of which state each action starts from.
-- The functions that write are SECURITY DEFINER (src/sql/access.sql): they
-- act for fleet_internal.calling_role(), check its rights, and find only the
-- groups, templates and jobs it sees.  A deleted job (fleet.delete_job, or
-- past fleet.job_retention) is gone from the API at once; the engine
-- purges its rows in small steps (src/sql/retention.sql).

-- The job as IoT Central's REST API shows it.
CREATE FUNCTION fleet.get_job(job_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job      fleet.jobs;
    progress jsonb;
BEGIN
    SELECT j.* INTO job FROM fleet.jobs j WHERE j.id = get_job.job_id AND j.deleted_at IS NULL;
    IF NOT FOUND THEN
        PERFORM fleet_internal.require_job(get_job.job_id);
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
        -- IoT Central's word for a finished job is "complete"; "saved"
        -- (not run yet) is pg_fleet's own
        'status', CASE job.status WHEN 'completed' THEN 'complete' ELSE job.status END,
        'start', fleet_internal.rest_timestamp(job.started_at),
        'end', fleet_internal.rest_timestamp(job.finished_at),
        'progress', progress,
        'scheduledJobId', job.scheduled_job_id,
        'rerunOf', job.rerun_of,
        -- why it waits or was paused (pg_fleet's rollout controls)
        'statusDetail', job.status_detail,
        'error', job.error));
END;
$$;
COMMENT ON FUNCTION fleet.get_job(text) IS 'The job as IoT Central''s REST API returns it: status (complete, cancelled, failed, pending, running, stopped, or saved), start, end, progress {total, pending, completed, failed} and scheduledJobId';

CREATE FUNCTION fleet.save_job(definition jsonb, job_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs := fleet_internal.job_from_definition(fleet_internal.body_with_id(definition, job_id, 'job'),
                                                         fleet_internal.calling_role());
BEGIN
    job.status := 'saved';
    INSERT INTO fleet.jobs SELECT job.*;
    PERFORM fleet_internal.job_event(job.id, 'saved');
    RETURN fleet.get_job(job.id);
END;
$$;
COMMENT ON FUNCTION fleet.save_job(jsonb, text) IS 'Validates and saves a job without running it; fleet.run_job() starts it later';

CREATE FUNCTION fleet.create_job(definition jsonb, job_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs;
BEGIN
    PERFORM fleet_internal.require_engine_database('creating a job');
    job := fleet_internal.job_from_definition(fleet_internal.body_with_id(definition, job_id, 'job'),
                                              fleet_internal.calling_role());
    job.status := 'pending';
    job.queued_at := fleet_internal.moment();
    INSERT INTO fleet.jobs SELECT job.*;
    PERFORM fleet_internal.job_event(job.id, 'queued');
    PERFORM fleet_internal.wake_engine();
    RETURN fleet.get_job(job.id);
END;
$$;
COMMENT ON FUNCTION fleet.create_job(jsonb, text) IS 'Validates a job (IoT Central''s job JSON; job_id as PUT /jobs/{id} takes it, else its "id") and queues it to run now';

-- Locks a job for a state change by the calling role and refuses unless
-- it is in one of the given states.  action names the change in messages
-- ("stop", "stopping").
CREATE FUNCTION fleet_internal.lock_job(job_id text, allowed text[], action text, acting text)
RETURNS fleet.jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    job    fleet.jobs;
BEGIN
    -- NO KEY UPDATE: waits for the engine's step, not for foreign key checks
    SELECT j.* INTO job FROM fleet.jobs j WHERE j.id = lock_job.job_id AND j.deleted_at IS NULL FOR NO KEY UPDATE;
    IF NOT FOUND OR NOT fleet_internal.sees(caller, job.organization_id) THEN
        PERFORM fleet_internal.require_job(lock_job.job_id);
    END IF;
    PERFORM fleet_internal.require_app_role(job.organization_id, 'operator', acting || ' a job', caller);
    IF job.status <> ALL (allowed) THEN
        RAISE EXCEPTION 'cannot % job "%": it is %', action, lock_job.job_id, job.status
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

CREATE FUNCTION fleet.run_job(job_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_engine_database('running a job');
    PERFORM fleet_internal.lock_job(run_job.job_id, '{saved}', 'run', 'running');
    UPDATE fleet.jobs j SET status = 'pending', queued_at = fleet_internal.moment() WHERE j.id = run_job.job_id;
    PERFORM fleet_internal.job_event(run_job.job_id, 'queued');
    PERFORM fleet_internal.wake_engine();
    RETURN fleet.get_job(run_job.job_id);
END;
$$;
COMMENT ON FUNCTION fleet.run_job(text) IS 'Queues a saved job to run';

-- Stop: dispatch halts at once; commands not yet claimed by a gateway are
-- withdrawn (gateways claim only from running jobs) and their devices stay
-- pending.  Claimed ones may still be answered.
CREATE FUNCTION fleet.stop_job(job_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.lock_job(stop_job.job_id, '{pending,running}', 'stop', 'stopping');
    UPDATE fleet.jobs j SET status = 'stopped', status_detail = NULL WHERE j.id = stop_job.job_id;
    PERFORM fleet_internal.job_event(stop_job.job_id, 'stopped');
    PERFORM fleet_internal.wake_engine();
    RETURN fleet.get_job(stop_job.job_id);
END;
$$;
COMMENT ON FUNCTION fleet.stop_job(text) IS 'Stops a pending or running job; fleet.resume_job() continues it with its pending devices';

-- Resume: the job queues again (the running-jobs limit applies) and goes on
-- with its pending devices; withdrawn commands are offered again when it
-- starts (fleet_internal.engine_start_job).  A job the engine gave up on (it
-- failed for a reason outside its devices, with an error) resumes the same
-- way: its devices that never ran are still pending.
CREATE FUNCTION fleet.resume_job(job_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs := fleet_internal.lock_job(resume_job.job_id, '{stopped,failed}', 'resume', 'resuming');
BEGIN
    PERFORM fleet_internal.require_engine_database('resuming a job');
    IF job.status = 'failed' AND job.error IS NULL THEN
        RAISE EXCEPTION 'cannot resume job "%": it ran every device, and some failed', resume_job.job_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run it again on its failed devices with fleet.rerun_job().';
    END IF;
    IF fleet_internal.rollout_end(job) <= fleet_internal.moment() THEN
        RAISE EXCEPTION 'cannot resume job "%": its rollout ended at %', resume_job.job_id,
                        fleet_internal.rest_timestamp(fleet_internal.rollout_end(job))
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Copy it with fleet.copy_job() and give the copy a later "endTime" or a longer "maximumDuration", or rerun its failed devices.';
    END IF;
    UPDATE fleet.jobs j
       SET status = 'pending', queued_at = fleet_internal.moment(), finished_at = NULL, error = NULL, last_step_at = NULL,
           status_detail = NULL
     WHERE j.id = resume_job.job_id;
    DELETE FROM fleet_internal.job_engine_state s WHERE s.job_id = resume_job.job_id;
    PERFORM fleet_internal.job_event(resume_job.job_id, 'resumed');
    PERFORM fleet_internal.wake_engine();
    RETURN fleet.get_job(resume_job.job_id);
END;
$$;
COMMENT ON FUNCTION fleet.resume_job(text) IS 'Continues a stopped job, or one the engine gave up on, with its pending devices';

-- Staged promotion: a job whose rollout has "promotion" stops at a batch
-- boundary (a hand is asked for, or its last batch fell short); advancing
-- it starts its next batch.
CREATE FUNCTION fleet.advance_job(job_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs := fleet_internal.lock_job(advance_job.job_id, '{stopped}', 'advance', 'advancing');
BEGIN
    IF NOT (job.rollout ? 'promotion')
       OR job.current_batch IS NULL OR job.current_batch = 1
       OR NOT EXISTS (SELECT 1 FROM fleet.job_batches b
                       WHERE b.job_id = job.id AND b.batch = job.current_batch AND b.status = 'pending') THEN
        RAISE EXCEPTION 'job "%" is not waiting at a batch boundary', advance_job.job_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A job whose rollout has "promotion" waits for fleet.advance_job() between batches; fleet.resume_job() continues any stopped job.';
    END IF;
    RETURN fleet.resume_job(advance_job.job_id);
END;
$$;
COMMENT ON FUNCTION fleet.advance_job(text) IS 'Starts the next batch of a job that waits for its promotion (its rollout''s "promotion")';

-- Deletes a job and everything under it: gone from the API at once, its
-- rows purged by the engine in small steps.  A running or queued job must
-- be stopped first.
CREATE FUNCTION fleet.delete_job(job_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.lock_job(delete_job.job_id, '{saved,stopped,completed,failed,cancelled}', 'delete', 'deleting');
    UPDATE fleet.jobs j SET deleted_at = fleet_internal.moment() WHERE j.id = delete_job.job_id;
    PERFORM fleet_internal.job_event(delete_job.job_id, 'deleted');
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

CREATE FUNCTION fleet.copy_job(job_id text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    source  fleet.jobs := fleet_internal.visible_job(copy_job.job_id);
    copy_id text := fleet_internal.free_job_id(source.id || '-copy');
BEGIN
    RETURN fleet.save_job(source.definition
                          || jsonb_build_object('id', copy_id, 'displayName', source.display_name || ' Copy'));
END;
$$;
COMMENT ON FUNCTION fleet.copy_job(text) IS 'Saves a copy of a job named "<name> Copy", to edit and run';

-- A new job over exactly the failed devices of a finished job, under the
-- same name (as IoT Central's rerun); rerunOf says which job it reruns.
CREATE FUNCTION fleet.rerun_job(job_id text, rerun_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    source fleet.jobs := fleet_internal.visible_job(rerun_job.job_id);
    job    fleet.jobs;
BEGIN
    PERFORM fleet_internal.require_engine_database('rerunning a job');
    IF source.status NOT IN ('completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot rerun job "%": it is %', rerun_job.job_id, source.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rerun a job once it has completed, failed or been cancelled.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.job_devices jd WHERE jd.job_id = source.id AND jd.status = 'failed') THEN
        RAISE EXCEPTION 'job "%" has no failed devices to rerun', rerun_job.job_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    job := fleet_internal.job_from_definition(source.definition
             || jsonb_build_object('id', coalesce(rerun_id, fleet_internal.free_job_id(source.id || '-rerun'))),
             fleet_internal.calling_role());
    job.rerun_of := source.id;
    job.status := 'pending';
    job.queued_at := fleet_internal.moment();
    INSERT INTO fleet.jobs SELECT job.*;
    PERFORM fleet_internal.job_event(job.id, 'queued');
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
      -- (a grouped join, not LATERAL: Citus cannot run a lateral outer join
      -- from a reference table into a distributed one; a filter on the job
      -- id still reaches the index on job_devices through the join)
      LEFT JOIN (SELECT jd.job_id, count(*) AS total,
                        count(*) FILTER (WHERE jd.status = 'pending') AS pending,
                        count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                        count(*) FILTER (WHERE jd.status = 'failed') AS failed
                   FROM fleet.job_devices jd
                  WHERE jd.job_id IN (SELECT r.id FROM fleet.jobs r
                                       WHERE r.created_at > pg_catalog.now() - interval '30 days'
                                         AND r.deleted_at IS NULL)
                  GROUP BY jd.job_id) p ON p.job_id = j.id
     WHERE j.created_at > pg_catalog.now() - interval '30 days' AND j.deleted_at IS NULL;
COMMENT ON VIEW fleet.recent_jobs IS 'Jobs of the last 30 days, newest first when ordered by created_at, with their progress';

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

-- Waits until the job is in one of the given states, or the timeout
-- passes; returns the status it ended in.  For scripts and tests.
CREATE FUNCTION fleet.wait_for_job(job_id text, statuses text[] DEFAULT '{completed,failed,cancelled}',
                                   timeout interval DEFAULT '60 seconds')
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    give_up timestamptz := fleet_internal.moment() + timeout;
    current text;
BEGIN
    PERFORM fleet_internal.require_job(wait_for_job.job_id);
    LOOP
        SELECT j.status INTO current FROM fleet.jobs j WHERE j.id = wait_for_job.job_id;
        EXIT WHEN current = ANY (statuses) OR fleet_internal.moment() > give_up;
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN current;
END;
$$;
COMMENT ON FUNCTION fleet.wait_for_job(text, text[], interval) IS 'Waits until a job reaches one of the statuses (default: finished) or the timeout passes; returns its status';
