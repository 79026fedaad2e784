-- pg_cron's state as the engine last saw it, from the engine's own row.
-- A function the view calls, not the table in the view: on Citus the
-- coordinator's own tables are read apart from the distributed query, with
-- the caller's rights, not the view owner's.
CREATE FUNCTION fleet_internal.engine_cron_state(OUT cron_error text, OUT cron_reconciled_at timestamptz)
RETURNS SETOF record
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT st.cron_error, st.cron_reconciled_at FROM fleet_internal.engine_state st $$;

-- The engine's health, for monitoring: one row saying what it does, read
-- by superusers and members of pg_monitor (it counts every organization's
-- jobs).  Each job's retry state is in fleet.job_overview, for its readers.
CREATE VIEW fleet.engine_status AS
    SELECT a.pid,
           a.database,
           a.state,
           a.note AS not_running_because,
           a.started_at,
           a.last_step_at,
           a.steps,
           a.errors,
           a.last_error,
           a.last_error_at,
           (SELECT count(*) FROM fleet.jobs j WHERE j.status = 'running' AND j.deleted_at IS NULL) AS running_jobs,
           (SELECT count(*) FROM fleet.jobs j WHERE j.status = 'pending' AND j.deleted_at IS NULL) AS queued_jobs,
           (SELECT count(*) FROM fleet_internal.job_engine_state s WHERE s.failures > 0) AS retrying_jobs,
           (SELECT count(*) FROM fleet.jobs j WHERE j.deleted_at IS NOT NULL) AS jobs_being_purged,
           st.cron_error,
           st.cron_reconciled_at,
           fleet_internal.import_failures_pending() AS failed_imports_to_record
      FROM fleet_internal.engine_activity() a, fleet_internal.engine_cron_state() st;
COMMENT ON VIEW fleet.engine_status IS 'The job engine: its process, state, steps and errors since it started, jobs running, queued, retrying and being purged, and pg_cron''s state; for superusers and pg_monitor';
COMMENT ON COLUMN fleet.engine_status.pid IS 'The engine''s process id (NULL: it is not running)';
COMMENT ON COLUMN fleet.engine_status.database IS 'The database it serves (fleet.database_name)';
COMMENT ON COLUMN fleet.engine_status.state IS 'not running, starting, idle, stepping or paused (for a DROP or an ALTER EXTENSION)';
COMMENT ON COLUMN fleet.engine_status.not_running_because IS 'Why no engine runs, when none does';
COMMENT ON COLUMN fleet.engine_status.started_at IS 'When the engine started';
COMMENT ON COLUMN fleet.engine_status.last_step_at IS 'When it last finished a step';
COMMENT ON COLUMN fleet.engine_status.steps IS 'Steps since it started';
COMMENT ON COLUMN fleet.engine_status.errors IS 'Failed steps since it started (each retried or recorded on its job)';
COMMENT ON COLUMN fleet.engine_status.last_error IS 'The last failed step''s error';
COMMENT ON COLUMN fleet.engine_status.last_error_at IS 'When that was';
COMMENT ON COLUMN fleet.engine_status.running_jobs IS 'Jobs running';
COMMENT ON COLUMN fleet.engine_status.queued_jobs IS 'Jobs queued to run';
COMMENT ON COLUMN fleet.engine_status.retrying_jobs IS 'Jobs whose last step failed and that wait for their retry';
COMMENT ON COLUMN fleet.engine_status.jobs_being_purged IS 'Deleted jobs whose rows the engine is still purging';
COMMENT ON COLUMN fleet.engine_status.cron_error IS 'Why the engine could not bring pg_cron in line with the schedules, if it could not';
COMMENT ON COLUMN fleet.engine_status.cron_reconciled_at IS 'When it last tried';
COMMENT ON COLUMN fleet.engine_status.failed_imports_to_record IS 'Imports that failed and that the engine has not recorded in fleet.device_operations yet';
