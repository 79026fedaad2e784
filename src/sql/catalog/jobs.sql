-- Jobs, their batches and their devices (src/sql/jobs.sql, job_engine.sql).

CREATE TABLE fleet.jobs (
    id                  text PRIMARY KEY,
    display_name        text NOT NULL,
    description         text,
    group_id            text NOT NULL REFERENCES fleet.device_groups (id),
    organization_id     text NOT NULL REFERENCES fleet.organizations (id),
    job_type            text NOT NULL CHECK (job_type IN ('property', 'cloudProperty', 'command',
                                                          'deviceTemplateMigration', 'deviceManifestMigration')),
    data                jsonb NOT NULL,
    batch_type          text CHECK (batch_type IN ('number', 'percentage')),
    batch_value         int,
    threshold_type      text CHECK (threshold_type IN ('number', 'percentage')),
    threshold_value     int,
    threshold_per_batch boolean NOT NULL DEFAULT false,
    status              text NOT NULL CHECK (status IN ('saved', 'pending', 'running', 'stopped',
                                                        'completed', 'failed', 'cancelled')),
    definition          jsonb NOT NULL,       -- the body as given, with its id
    rerun_of            text REFERENCES fleet.jobs (id) ON DELETE SET NULL,
    scheduled_job_id    text,
    error               text,                 -- why the engine gave up on the job, if it did
    created_by          name NOT NULL DEFAULT current_user,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    queued_at           timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz,
    device_count        bigint,
    current_batch       int,
    last_step_at        timestamptz,          -- when the engine last moved it on
    deleted_at          timestamptz,          -- deleted (fleet.delete_job, or past fleet.job_retention): the engine purges it
    -- pg_fleet's rollout controls, the body's "rollout" as
    -- fleet_internal.job_rollout() checked it (src/sql/job_rollouts.sql)
    rollout             jsonb NOT NULL DEFAULT '{}',
    status_detail       text,                 -- why it waits (a rate, its end) or was paused (a threshold)
    threshold_base      bigint NOT NULL DEFAULT 0, -- failures a pause already answered for (a batch's: until the next batch)
    abort_base          jsonb NOT NULL DEFAULT '{}' -- outcomes an abort criterion's pause answered for: completed, failed, timedOut, rejected
);
CREATE INDEX jobs_queue_idx ON fleet.jobs (queued_at, id) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_created_idx ON fleet.jobs (created_at);
-- what retention looks at: finished jobs by age, and those deleted
CREATE INDEX jobs_finished_idx ON fleet.jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_deleted_idx ON fleet.jobs (deleted_at) WHERE deleted_at IS NOT NULL;
COMMENT ON TABLE fleet.jobs IS 'Jobs: IoT Central job definitions, their status (saved, pending, running, stopped, completed, failed, cancelled) and timing';

-- Batches are contiguous ranges of a job's devices in id order, so a batch
-- is walked through the primary key of job_devices with a cursor.
CREATE TABLE fleet.job_batches (
    job_id       text NOT NULL REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    batch        int NOT NULL,
    first_device text NOT NULL,
    last_device  text NOT NULL,
    size         bigint NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'completed', 'cancelled')),
    -- command batches count a window of answers once it is all answered
    -- (see fleet.command_windows), and the whole batch when it ends
    completed    bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    cursor       text,                       -- last device the engine dealt with
    started_at   timestamptz,
    finished_at  timestamptz,
    timed_out    bigint NOT NULL DEFAULT 0,  -- of the failed, those a command's timeout failed
    rejected     bigint NOT NULL DEFAULT 0,  -- of the failed, those whose device refused the command (4xx)
    PRIMARY KEY (job_id, batch)
);
COMMENT ON TABLE fleet.job_batches IS 'The batches of each job, in order: size, status and how many devices completed and failed';

-- No foreign key to jobs: a job fans out to a million rows and foreign keys
-- are per-row triggers (DESIGN.md section 7).  Rows go with their job
-- (fleet.delete_job_rows).
--
-- A command job's rows are also its command deliveries (src/sql/command_claims.sql):
-- gateways claim and answer them here, so a device costs its row, a claim
-- and an answer, and nothing else.  The delivery columns stay NULL for the
-- other job types.  No index covers status or the answer columns, so an
-- outcome is a HOT update (heap-only: no index entry) when its page has
-- room.  Pages are filled to a quarter, which leaves room for a row's
-- every version: a property job's outcome, or a command's claim and answer
-- (measured, 100,000 commands: at 40 %, about 10 % of answers were HOT, as the
-- claims took the room; at 25 %, 87 %, and gateways answer 25 % faster).
CREATE TABLE fleet.job_devices (
    job_id      text NOT NULL,
    device_id   text NOT NULL,
    batch       int NOT NULL,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'failed')),
    error       text,
    started_at  timestamptz,                 -- command jobs: when a gateway claimed the command
    finished_at timestamptz,
    delivery_id bigint,                      -- command jobs: the job's number * 2^32 + the device's position
    gateway     text,                        -- who claimed the command ('simulator': the engine answered)
    deadline    timestamptz,                 -- the claimed command's answer is due by then
    response_status int,                     -- the device's answer, HTTP-style
    response    jsonb,
    PRIMARY KEY (job_id, device_id)
) WITH (fillfactor = 25,
        -- statistics follow big fan-outs and purges without the engine
        -- running ANALYZE in a step, where it would wait on VACUUM
        autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_scale_factor = 0.05);
-- an answer finds its delivery (not UNIQUE: ids are unique by
-- construction, and a unique index checks every row version it inserts,
-- which measurably slowed the gateways)
CREATE INDEX job_devices_delivery_idx ON fleet.job_devices (delivery_id)
    WHERE delivery_id IS NOT NULL;
-- the queue gateways claim from: deliveries no gateway has claimed yet
CREATE INDEX job_devices_unclaimed_idx ON fleet.job_devices (delivery_id)
    WHERE delivery_id IS NOT NULL AND gateway IS NULL;
-- The engine analyzes the table after a big fan-out (its statistics would
-- describe another table); a small sample does: what matters is the row
-- count and which jobs are big, and it takes 10 ms instead of 150.
ALTER TABLE fleet.job_devices
    ALTER COLUMN job_id SET STATISTICS 10, ALTER COLUMN device_id SET STATISTICS 10,
    ALTER COLUMN batch SET STATISTICS 10, ALTER COLUMN status SET STATISTICS 10,
    ALTER COLUMN error SET STATISTICS 10, ALTER COLUMN started_at SET STATISTICS 10,
    ALTER COLUMN finished_at SET STATISTICS 10, ALTER COLUMN delivery_id SET STATISTICS 10,
    ALTER COLUMN gateway SET STATISTICS 10, ALTER COLUMN deadline SET STATISTICS 10,
    ALTER COLUMN response_status SET STATISTICS 10, ALTER COLUMN response SET STATISTICS 10;
COMMENT ON TABLE fleet.job_devices IS 'Every device of every started job: its batch, status (pending, completed, failed) and error';

-- A command job's earlier attempts on a device, each failed and retried
-- (its rollout's "retries"); the device's row in job_devices holds its
-- latest.  Few rows: only retried failures.  No foreign key to jobs, like
-- job_devices: on Citus it would make every statement over the devices'
-- shards in a step that also changes the job run over one connection per
-- node; the purge of a deleted job deletes them (src/sql/retention.sql).
CREATE TABLE fleet.job_device_attempts (
    job_id          text NOT NULL,
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

-- Devices a job dispatched (changed, or offered to gateways), by step:
-- what its rate counts over the last minute, committed with the step, so
-- the rate holds across engine restarts.
CREATE TABLE fleet_internal.job_dispatches (
    job_id  text NOT NULL REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    at      timestamptz NOT NULL,
    devices bigint NOT NULL,
    PRIMARY KEY (job_id, at)
);
COMMENT ON TABLE fleet_internal.job_dispatches IS 'Devices each step of a rate-limited job dispatched, when: what its rate counts';

-- Which device properties each role shows as extra columns of
-- fleet.list_job_devices(); kept across sessions.
CREATE TABLE fleet.job_device_list_columns (
    role_name name NOT NULL,
    position  int NOT NULL,
    path      text NOT NULL,            -- a jsonpath, as the role wrote it
    PRIMARY KEY (role_name, position)
);
COMMENT ON TABLE fleet.job_device_list_columns IS 'Extra columns of the job device list, per role: jsonpath expressions over fleet.device_document()';
