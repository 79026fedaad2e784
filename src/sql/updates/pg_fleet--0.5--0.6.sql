-- pg_fleet 0.5 to 0.6: the changes to what holds data, and the code that
-- went away or changed its signature.  The code itself is reloaded after
-- this by the update script (tools/build-sql.sh), and every policy was
-- dropped before it, to be made again.

-- Rollout controls (src/sql/job_rollouts.sql): columns with constant
-- defaults, no table rewrite.
ALTER TABLE fleet.jobs
    ADD COLUMN rollout jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN status_detail text,
    ADD COLUMN threshold_base bigint NOT NULL DEFAULT 0,
    ADD COLUMN abort_base jsonb NOT NULL DEFAULT '{}';
ALTER TABLE fleet_internal.job_engine_state
    ADD COLUMN not_before timestamptz;
-- abort criteria by failure type count timeouts apart
ALTER TABLE fleet.job_batches
    ADD COLUMN timed_out bigint NOT NULL DEFAULT 0;
-- (it also counts what its open windows completed and timed out)
DROP FUNCTION IF EXISTS fleet_internal.engine_close_windows(fleet.jobs, fleet.job_batches);

CREATE TABLE fleet_internal.job_dispatches (
    job_id  text NOT NULL REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    at      timestamptz NOT NULL,
    devices bigint NOT NULL,
    PRIMARY KEY (job_id, at)
);
COMMENT ON TABLE fleet_internal.job_dispatches IS 'Devices each step of a rate-limited job dispatched, when: what its rate counts';
