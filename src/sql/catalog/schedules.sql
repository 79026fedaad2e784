-- Scheduled jobs and their calendar (src/sql/schedule_calendar.sql,
-- scheduled_jobs.sql).

-- A schedule as given in a definition, checked and normalised.
CREATE TYPE fleet_internal.schedule AS (
    start_local     timestamp,   -- wall-clock start in time_zone
    time_zone       text,
    recurrence      text,        -- 'none', 'daily' or 'weekly'
    end_date        date,        -- no run after this local day ends
    max_occurrences int          -- 1 to 999 slots from the start
);

CREATE TABLE fleet.scheduled_jobs (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,255}$'),
    display_name    text NOT NULL,
    organization_id text NOT NULL REFERENCES fleet.organizations (id),
    group_id        text NOT NULL REFERENCES fleet.device_groups (id),
    definition      jsonb NOT NULL,        -- the job each occurrence creates, without id
    schedule        jsonb NOT NULL,        -- normalised: fleet_internal.schedule_json()
    enabled         boolean NOT NULL DEFAULT true,
    effective_from  timestamptz NOT NULL,  -- occurrences before this are not this calendar's
    next_run_at     timestamptz,           -- what the pg_cron entry points at; NULL: none
    created_by      name NOT NULL DEFAULT current_user,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    changed_by      name NOT NULL,         -- who last created or changed it: its runs are created with its rights
    last_occurrence timestamptz,           -- the latest occurrence recorded (runs are purged; this stays)
    runs_started    bigint NOT NULL DEFAULT 0,
    error           text                   -- why the engine stopped it, if it did
);
CREATE INDEX scheduled_jobs_due_idx ON fleet.scheduled_jobs (next_run_at) WHERE enabled;
COMMENT ON TABLE fleet.scheduled_jobs IS 'Scheduled jobs: a job definition, its schedule, and the next occurrence pg_cron is pointed at';

-- One row per occurrence that came: run (with its job), missed, or failed
-- to start (with the reason).  The key makes a repeated fire harmless.
CREATE TABLE fleet.scheduled_job_runs (
    scheduled_job_id text NOT NULL REFERENCES fleet.scheduled_jobs (id) ON DELETE CASCADE,
    occurrence       timestamptz NOT NULL,
    outcome          text NOT NULL CHECK (outcome IN ('started', 'missed', 'failed')),
    job_id           text REFERENCES fleet.jobs (id) ON DELETE SET NULL,
    error            text,
    recorded_at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (scheduled_job_id, occurrence)
);
COMMENT ON TABLE fleet.scheduled_job_runs IS 'Every occurrence of every schedule that has come: started (with its job), missed, or failed to start';

-- A scheduled job's definition taken apart: the job, its schedule (NULL
-- fields when not given) and "enabled" (NULL when not given).
CREATE TYPE fleet_internal.scheduled_job_parts AS (
    job_definition jsonb,
    schedule       fleet_internal.schedule,
    enabled        boolean
);
