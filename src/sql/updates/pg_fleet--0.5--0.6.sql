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
    ADD COLUMN timed_out bigint NOT NULL DEFAULT 0,
    ADD COLUMN rejected bigint NOT NULL DEFAULT 0;
-- (it also counts what its open windows completed and timed out)
DROP FUNCTION IF EXISTS fleet_internal.engine_close_windows(fleet.jobs, fleet.job_batches);
-- (the results log gains each device's attempt)
DROP FUNCTION IF EXISTS fleet.job_results(text, boolean);

-- A command job's earlier attempts on a device, each failed and retried
-- (its rollout's "retries"); the device's row in job_devices holds its
-- latest.  Few rows: only retried failures.
CREATE TABLE fleet.job_device_attempts (
    job_id          text NOT NULL REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    device_id       text NOT NULL,
    attempt         int NOT NULL,
    error           text,
    gateway         text,
    started_at      timestamptz,
    finished_at     timestamptz,
    response_status int,
    response        jsonb,
    retry_at        timestamptz NOT NULL,            -- offered again from then
    PRIMARY KEY (job_id, device_id, attempt)
);
COMMENT ON TABLE fleet.job_device_attempts IS 'Failed attempts of a command job on a device that were retried, with their answers and when the retry was due';
SELECT pg_catalog.pg_extension_config_dump('fleet.job_device_attempts', '');

CREATE TABLE fleet_internal.job_dispatches (
    job_id  text NOT NULL REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    at      timestamptz NOT NULL,
    devices bigint NOT NULL,
    PRIMARY KEY (job_id, at)
);
COMMENT ON TABLE fleet_internal.job_dispatches IS 'Devices each step of a rate-limited job dispatched, when: what its rate counts';

-- The bridge walks its devices' desired patches in id order
-- (fleet_internal.endpoint_desired_patches): the index gives that order.
DROP INDEX fleet.devices_endpoint_gateway_idx;
CREATE INDEX devices_endpoint_gateway_idx ON fleet.devices (endpoint_gateway, id COLLATE "C")
    WHERE endpoint_gateway IS NOT NULL;
