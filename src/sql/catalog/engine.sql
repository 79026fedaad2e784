-- The engine's own bookkeeping (src/sql/engine.sql): written by the engine
-- alone, read by the status views; members have no privilege on it.

-- Each job's retry state.  step_started_at is committed before a step runs
-- and cleared in the step's own transaction, so one left set means the
-- engine stopped during that step (a crash, kill -9, an immediate
-- shutdown), which counts as a failure of the job.
CREATE TABLE fleet_internal.job_engine_state (
    job_id          text PRIMARY KEY REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    action          text,                   -- the step under way: start or advance
    step_started_at timestamptz,
    failures        int NOT NULL DEFAULT 0, -- consecutive failed steps
    last_error      text,
    last_error_at   timestamptz,
    next_retry_at   timestamptz,            -- not served before then
    step_size       int,                    -- devices per step after statement timeouts; NULL: fleet.engine_chunk_size
    purged_through  text,                   -- a deleted job: its devices' outcomes are purged up to this device id
    not_before      timestamptz             -- its rollout holds it (a rate): not served before then
);
COMMENT ON TABLE fleet_internal.job_engine_state IS 'The engine''s state of each job: consecutive failures, last error, next retry; a deleted job''s purge';

-- Work the engine does when it can, one row.
CREATE TABLE fleet_internal.engine_state (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    analyze_wanted     boolean NOT NULL DEFAULT false, -- job_devices changed a lot: ANALYZE once no maintenance holds it
    -- schedules changed (each change counts one) since pg_cron was last
    -- brought in line with the version it read then
    cron_version        bigint NOT NULL DEFAULT 1,
    cron_synced_version bigint NOT NULL DEFAULT 0,
    cron_reconciled_at timestamptz,
    cron_error         text,                           -- why pg_cron could not be brought in line, if it could not
    cron_recheck_at    timestamptz                     -- when the entries change by themselves (a kept final entry goes)
);
COMMENT ON TABLE fleet_internal.engine_state IS 'The engine''s pending chores: statistics to refresh, pg_cron entries to bring in line';
INSERT INTO fleet_internal.engine_state DEFAULT VALUES;
