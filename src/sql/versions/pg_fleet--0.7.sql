-- pg_fleet 0.7: built by tools/build-sql.sh from src/sql; do not edit.
\echo Use "CREATE EXTENSION pg_fleet" to load this file. \quit

-- src/sql/catalog/schemas.sql
-- pg_fleet install script, built by the Makefile from src/sql/catalog/*.sql
-- (what holds data: created once, changed only by the migrations in
-- src/sql/updates/) and src/sql/*.sql (functions, views, triggers,
-- policies and privileges: reloaded whole by every update script).
-- Every function sets search_path = pg_catalog, pg_temp and names our own
-- objects schema-qualified, as "Security Considerations for Extensions" asks.

-- The schema fleet is created by CREATE EXTENSION (schema = fleet in the
-- control file) and holds the API: what users may call and read.
COMMENT ON SCHEMA fleet IS 'pg_fleet: bulk device management (devices, templates, groups, import/export, jobs)';

-- The engine's steps, triggers, helpers and bookkeeping live apart, as
-- TimescaleDB keeps _timescaledb_functions apart: a schema browser of fleet
-- shows the API only.  PUBLIC may not use it (src/sql/privileges.sql).
CREATE SCHEMA fleet_internal;
COMMENT ON SCHEMA fleet_internal IS 'pg_fleet''s internals: the engine, triggers and helpers; not an API';

-- src/sql/catalog/organizations.sql
-- Organizations: a tree under the built-in root organization, and who holds
-- which application role in each (src/sql/access_control.sql).

CREATE TABLE fleet.organizations (
    id           text PRIMARY KEY,
    display_name text NOT NULL,
    parent_id    text REFERENCES fleet.organizations (id),
    -- ids from root down to this organization: subtree tests are "path @> {id}"
    path         text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT organizations_root_has_no_parent CHECK ((id = 'root') = (parent_id IS NULL))
);
CREATE INDEX organizations_path_idx ON fleet.organizations USING gin (path);
COMMENT ON TABLE fleet.organizations IS 'Organizations, a tree under "root"; path lists the ids from root down to each one';

INSERT INTO fleet.organizations (id, display_name, parent_id, path)
VALUES ('root', 'Root', NULL, ARRAY['root']);

CREATE TABLE fleet.organization_members (
    organization_id text NOT NULL REFERENCES fleet.organizations (id) ON DELETE CASCADE,
    member          regrole NOT NULL,
    app_role        text NOT NULL CHECK (app_role IN ('administrator', 'operator', 'viewer')),
    granted_by      name NOT NULL,
    granted_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (organization_id, member)
);
COMMENT ON TABLE fleet.organization_members IS 'Who holds which application role (administrator, operator, viewer) in which organization; a member sees only its own rows';

-- src/sql/catalog/device_templates.sql
-- Device templates: DTDL Interfaces and their validated contents
-- (src/sql/device_templates.sql).

CREATE TABLE fleet.device_templates (
    id           text PRIMARY KEY,          -- the Interface's DTMI
    display_name text,
    description  text,
    model        jsonb NOT NULL,            -- the Interface exactly as imported
    imported_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fleet.device_templates IS 'DTDL v2 Interfaces imported with fleet.import_template(); any of them can be a device template';

CREATE TABLE fleet.template_contents (
    template_id     text NOT NULL REFERENCES fleet.device_templates (id) ON DELETE CASCADE,
    name            text NOT NULL,
    capability      text NOT NULL CHECK (capability IN ('telemetry', 'property', 'writable_property',
                                                        'cloud_property', 'command', 'component',
                                                        'relationship')),
    semantic_types  text[] NOT NULL DEFAULT '{}',
    display_name    text,
    schema          jsonb,           -- resolved: a primitive name or a complex schema object
    min_value       numeric,         -- IoT Central minValue/maxValue, when given
    max_value       numeric,
    request         jsonb,           -- commands: {"name", "schema"} with the schema resolved
    response        jsonb,
    component_interface text REFERENCES fleet.device_templates (id),
    PRIMARY KEY (template_id, name)
);
CREATE INDEX template_contents_component_idx ON fleet.template_contents (component_interface);
COMMENT ON TABLE fleet.template_contents IS 'The contents of each imported Interface, validated, with schemas resolved';

-- src/sql/catalog/edge_manifests.sql
-- IoT Edge deployment manifests (src/sql/edge_manifests.sql).

CREATE TABLE fleet.edge_manifests (
    id           text PRIMARY KEY,
    display_name text NOT NULL,
    manifest     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    organizations text[]        -- as IoT Central's body names them; a manifest is the application's
);
COMMENT ON TABLE fleet.edge_manifests IS 'IoT Edge deployment manifests (modulesContent with $edgeAgent and $edgeHub)';

-- src/sql/catalog/devices.sql
-- The device registry (src/sql/devices.sql).  No foreign keys: see there.

-- NULL when a device id and name follow IoT Central's rules, else what is
-- wrong with them.  C, without SET search_path: it looks no names up and
-- checks every row of an import.
CREATE FUNCTION fleet_internal.device_identity_problem(device_id text, display_name text DEFAULT NULL)
RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'device_identity_problem';
COMMENT ON FUNCTION fleet_internal.device_identity_problem(text, text) IS 'NULL when the device id (letters, digits, "-", at most 128) and name (at most 148 characters) are acceptable, else the reason';

CREATE TABLE fleet.devices (
    id                        text PRIMARY KEY,
    display_name              text NOT NULL,
    template_id               text,
    organization_id           text NOT NULL DEFAULT 'root',
    simulated                 boolean NOT NULL DEFAULT false,
    edge                      boolean NOT NULL DEFAULT false,
    manifest_id               text,
    properties                jsonb NOT NULL DEFAULT '{}',   -- desired writable properties, twin-shaped
    reported                  jsonb NOT NULL DEFAULT '{}',   -- what the device reported
    cloud_properties          jsonb NOT NULL DEFAULT '{}',
    x509_thumbprint_primary   text,
    x509_thumbprint_secondary text,
    import_operation_id       bigint,                        -- the import that registered it
    created_at                timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT devices_identity_check CHECK (fleet_internal.device_identity_problem(id, display_name) IS NULL),
    CONSTRAINT devices_x509_primary_check CHECK (x509_thumbprint_primary ~ '^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$'),
    CONSTRAINT devices_x509_secondary_check CHECK (x509_thumbprint_secondary ~ '^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$'),
    enrollment_group_id       text,                          -- NULL: its organization's default group for its kind
    -- the twin's versions, as IoT Hub counts them: desired_version moves
    -- with every property job that changes the device, desired_versions
    -- says at which version each property ("name" or "component/name")
    -- last changed, which its writable-property acknowledgement is
    -- compared with (fleet.device_property_sync)
    desired_version           bigint NOT NULL DEFAULT 1,
    desired_versions          jsonb NOT NULL DEFAULT '{}',
    reported_version          bigint NOT NULL DEFAULT 1,
    -- its connection to the MQTT endpoint (tools/fleet-bridge): NULL
    -- until it first connects
    connection_state          text CHECK (connection_state IN ('connected', 'disconnected')),
    connection_changed_at     timestamptz,
    last_activity_at          timestamptz,
    telemetry_messages        bigint NOT NULL DEFAULT 0,
    -- the bridge it is connected through, what it listens for (1: direct
    -- methods, 2: desired property patches) and the desired version it
    -- was last sent
    endpoint_gateway          text,
    endpoint_listens          int NOT NULL DEFAULT 0,
    desired_sent_version      bigint NOT NULL DEFAULT 0
);
-- No secondary indexes on what every device has: every query so far
-- (groups, export) reads most devices, and each index costs about 40 % more
-- import time.  See README.  The devices that name their enrollment group
-- are few, and found through a partial index, which a device that names
-- none costs nothing.
CREATE INDEX devices_enrollment_group_idx ON fleet.devices (enrollment_group_id)
    WHERE enrollment_group_id IS NOT NULL;
-- the devices connected through a bridge, whose commands and patches it
-- looks for on every turn (a device never connected costs nothing), in the
-- order its passes over them take (fleet_internal.endpoint_desired_patches)
CREATE INDEX devices_endpoint_gateway_idx ON fleet.devices (endpoint_gateway, id COLLATE "C")
    WHERE endpoint_gateway IS NOT NULL;
COMMENT ON TABLE fleet.devices IS 'Registered devices; properties and cloud_properties are shaped like an IoT Hub twin''s desired section';

-- src/sql/catalog/device_groups.sql
-- Device groups (src/sql/device_groups.sql).

CREATE TABLE fleet.device_groups (
    id              text PRIMARY KEY,
    display_name    text NOT NULL,
    template_id     text REFERENCES fleet.device_templates (id),
    filter          jsonpath,
    organization_id text NOT NULL DEFAULT 'root' REFERENCES fleet.organizations (id),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    description     text,
    query           text        -- IoT Central's query as given; template_id and filter are its translation
);
COMMENT ON TABLE fleet.device_groups IS 'Device groups: devices of template_id (any when NULL) in organization_id or below that match filter (all when NULL)';

-- src/sql/catalog/enrollment_groups.sql
-- Enrollment groups: the keys device keys are derived from
-- (src/sql/device_keys.sql).  Random keys are made at install, for root's
-- two groups (IoT Central's), and for every organization created since
-- 0.2, so that no administrator can derive keys of devices another
-- organization will own.

CREATE FUNCTION fleet_internal.generate_group_key()
RETURNS text
LANGUAGE c VOLATILE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'generate_group_key';
COMMENT ON FUNCTION fleet_internal.generate_group_key() IS 'A new random enrollment group key: 64 bytes from a strong random source, base64';

CREATE TABLE fleet.enrollment_groups (
    id              text PRIMARY KEY,
    primary_key     text,                                   -- NULL: an X.509 group
    secondary_key   text,
    rotated_at      timestamptz,
    organization_id text NOT NULL DEFAULT 'root' REFERENCES fleet.organizations (id) ON DELETE CASCADE,
    edge            boolean NOT NULL DEFAULT false,     -- IoT Central's type iotEdge (else iot)
    display_name    text,
    enabled         boolean NOT NULL DEFAULT true,          -- a disabled group's devices export no keys
    -- the group an organization's devices of this kind derive their keys
    -- from unless they name another (its pair made with it); groups made
    -- through the REST API are not
    organization_default boolean NOT NULL DEFAULT false,
    attestation     text NOT NULL DEFAULT 'symmetricKey',
    -- whether a device that is not registered may register itself through
    -- the MQTT endpoint's provisioning (DPS) with a key of this group, and
    -- with which template (the group's organization is its organization)
    auto_register   boolean NOT NULL DEFAULT false,
    auto_register_template text,
    CONSTRAINT enrollment_groups_attestation_check CHECK (attestation IN ('symmetricKey', 'x509')),
    CONSTRAINT enrollment_groups_keys_check
        CHECK ((attestation = 'symmetricKey') = (primary_key IS NOT NULL AND secondary_key IS NOT NULL)),
    CONSTRAINT enrollment_groups_default_check CHECK (NOT organization_default OR attestation = 'symmetricKey')
);
COMMENT ON TABLE fleet.enrollment_groups IS 'Enrollment groups: root''s SAS-IoT-Devices and SAS-IoT-Edge-Devices, a default pair per organization created since 0.2, and any made with fleet.import_enrollment_group(); a device''s keys derive from the group it names, else from the nearest default pair up its organization''s path';
CREATE UNIQUE INDEX enrollment_groups_one_default_per_kind ON fleet.enrollment_groups (organization_id, edge)
    WHERE organization_default;

INSERT INTO fleet.enrollment_groups (id, primary_key, secondary_key, organization_id, edge, organization_default)
VALUES ('SAS-IoT-Devices', fleet_internal.generate_group_key(), fleet_internal.generate_group_key(), 'root', false, true),
       ('SAS-IoT-Edge-Devices', fleet_internal.generate_group_key(), fleet_internal.generate_group_key(), 'root', true, true);

-- The signing certificates of X.509 enrollment groups, as IoT Central
-- keeps them: a primary and a secondary, each verified once its owner
-- proved to hold its private key (src/x509_certificates.c).
CREATE TABLE fleet.enrollment_group_certificates (
    enrollment_group_id text NOT NULL REFERENCES fleet.enrollment_groups (id) ON DELETE CASCADE,
    entry               text NOT NULL CHECK (entry IN ('primary', 'secondary')),
    certificate         text NOT NULL,                -- as it was given
    sha1_thumbprint     text NOT NULL,
    verified            boolean NOT NULL DEFAULT false,
    verification_code   text,                         -- the code the proof of possession must carry
    PRIMARY KEY (enrollment_group_id, entry)
);
COMMENT ON TABLE fleet.enrollment_group_certificates IS 'The primary and secondary signing certificates of X.509 enrollment groups, and whether each was verified';

-- src/sql/catalog/device_operations.sql
-- Device operations: one row per import, and the rows it rejected
-- (src/sql/device_import.sql).

CREATE TABLE fleet.device_operations (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('import')),
    status          text NOT NULL CHECK (status IN ('running', 'completed', 'completed_with_errors', 'failed')),
    template_id     text,
    organization_id text NOT NULL,
    rows            bigint NOT NULL DEFAULT 0,
    imported        bigint NOT NULL DEFAULT 0,
    rejected        bigint NOT NULL DEFAULT 0,
    started_by      name NOT NULL DEFAULT current_user,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    error           text                    -- why a failed import failed (a malformed file, a cancel, a rollback)
);
COMMENT ON TABLE fleet.device_operations IS 'The Device Operations panel: one row per device import, with its counts (rows = imported + rejected)';

CREATE TABLE fleet.device_operation_errors (
    operation_id bigint NOT NULL REFERENCES fleet.device_operations (id) ON DELETE CASCADE,
    line         bigint NOT NULL,
    device_id    text,
    error        text NOT NULL,
    PRIMARY KEY (operation_id, line)
);
COMMENT ON TABLE fleet.device_operation_errors IS 'Rows a device import rejected: the file line, the device id as given, and why';

-- src/sql/catalog/jobs.sql
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

-- src/sql/catalog/commands.sql
-- Command deliveries offered to gateways (src/sql/command_claims.sql).

-- The job's number, times 2^32, is the base of its delivery ids: ids are
-- unique and contiguous per job without a sequence call per device.
CREATE SEQUENCE fleet_internal.delivery_blocks;

CREATE TABLE fleet.command_windows (
    job_id         text NOT NULL REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    batch          int NOT NULL,
    first_delivery bigint NOT NULL,
    last_delivery  bigint NOT NULL,
    opened_at      timestamptz NOT NULL,
    deadline       timestamptz NOT NULL,       -- unclaimed commands time out then (a resume moves it)
    next_check     timestamptz,                -- earliest time one of its commands can time out
    PRIMARY KEY (job_id, first_delivery)
);
COMMENT ON TABLE fleet.command_windows IS 'Ranges of a command job''s deliveries offered to gateways; a window goes once every device in it has its outcome';

-- src/sql/catalog/schedules.sql
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

-- src/sql/catalog/engine.sql
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

-- src/sql/catalog/device_endpoint.sql
-- The MQTT device endpoint's record of refused connections
-- (src/sql/device_endpoint.sql): a count per bridge and reason, and the
-- last client refused, so an operator sees refusals without reading the
-- broker's log.  Never a key or a token.
CREATE TABLE fleet.endpoint_refusals (
    gateway        text NOT NULL,
    reason         text NOT NULL,
    refusals       bigint NOT NULL DEFAULT 0,
    last_client_id text,
    last_at        timestamptz,
    PRIMARY KEY (gateway, reason)
);
COMMENT ON TABLE fleet.endpoint_refusals IS 'Connections and messages the MQTT endpoint refused, counted per bridge and reason, with the last client id refused';

-- src/sql/catalog/dump.sql
-- pg_dump keeps user data of extension tables only when asked: register
-- every table that holds user data, and the sequences behind them.
SELECT pg_catalog.pg_extension_config_dump('fleet.organizations', 'WHERE id <> ''root''');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_templates', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.template_contents', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.edge_manifests', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.devices', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_groups', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.enrollment_groups', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.enrollment_group_certificates', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_operations', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_operations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_operation_errors', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_batches', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_devices', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_device_list_columns', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_device_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.command_windows', '');
SELECT pg_catalog.pg_extension_config_dump('fleet_internal.delivery_blocks', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.scheduled_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.scheduled_job_runs', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.organization_members', '');

-- src/sql/schema.sql
-- Helpers shared by every topic.

-- Refuses an id or display name for a new object of the given kind
-- ("organization", "device group", ...): ids are 1 to max_length letters,
-- digits, "-" or "_", names are not blank.  Jobs will use it too.
CREATE FUNCTION fleet_internal.check_new_object(kind text, id text, display_name text, max_length int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF id IS NULL OR id !~ '^[A-Za-z0-9_-]+$' OR length(id) > max_length THEN
        RAISE EXCEPTION 'invalid % id "%"', kind, id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Use 1 to %s letters, digits, "-" or "_".', max_length);
    END IF;
    IF display_name IS NULL OR btrim(display_name) = '' THEN
        RAISE EXCEPTION '% "%" needs a display name', kind, id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

-- The time of a step: "at" (tests pass one), or the clock.  C
-- (src/citus_node.c), STABLE so that Citus evaluates it on the coordinator
-- for a statement that writes its tables, which it refuses with a volatile
-- clock_timestamp(); every statement that writes a time calls this.
CREATE FUNCTION fleet_internal.moment(at timestamptz DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'moment';
-- "at", or now(): the transaction's start (Citus also refuses now() inside
-- a COALESCE of such a statement).
CREATE FUNCTION fleet_internal.transaction_moment(at timestamptz DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'transaction_moment';

-- Whether Citus manages a table (fleet.distribute()): the command claims
-- take another way there.  C (src/citus_node.c): it reads Citus's catalog
-- when there is one, and pg_fleet does not require Citus.
CREATE FUNCTION fleet_internal.citus_table(table_name regclass)
RETURNS boolean
LANGUAGE c STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'citus_table_sql';

-- A CSV cell a spreadsheet will not run as a formula: with neutralize, a
-- value starting with =, +, -, @, a tab or a carriage return gets a leading
-- single quote, as OWASP's "CSV Injection" advice says.  Only the output
-- changes, never what is stored.  C (src/spreadsheet_cell.c), and it
-- carries no SET search_path: it looks no names up, and exports call it for
-- every cell (the clause would cost a configuration save and restore each).
CREATE FUNCTION fleet_internal.spreadsheet_cell(value text, neutralize boolean)
RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'spreadsheet_cell';
COMMENT ON FUNCTION fleet_internal.spreadsheet_cell(text, boolean) IS 'The value, with a leading single quote when neutralize is true and a spreadsheet would read it as a formula';

-- The refusals every kind of object shares, so that each kind of refusal
-- has one SQLSTATE and one wording: the message states the fact, the HINT
-- says what to do.

-- "<kind> "<id>" already exists" (duplicate_object, as CREATE does).
CREATE FUNCTION fleet_internal.refuse_existing(kind text, id text, hint text DEFAULT 'Choose another id.')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% "%" already exists', kind, id
        USING ERRCODE = 'duplicate_object', HINT = hint;
END;
$$;

-- "<kind> "<id>" does not exist" (undefined_object); also what a caller is
-- told about an object of an organization it does not see.
CREATE FUNCTION fleet_internal.refuse_missing(kind text, id text, hint text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF hint IS NULL THEN
        RAISE EXCEPTION '% "%" does not exist', kind, id USING ERRCODE = 'undefined_object';
    END IF;
    RAISE EXCEPTION '% "%" does not exist', kind, id USING ERRCODE = 'undefined_object', HINT = hint;
END;
$$;

-- "<kind> "<id>" is in use" (dependent_objects_still_exist, as DROP
-- without CASCADE does); detail says by what.
CREATE FUNCTION fleet_internal.refuse_in_use(kind text, id text, detail text, hint text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% "%" is in use', kind, id
        USING ERRCODE = 'dependent_objects_still_exist', DETAIL = detail, HINT = hint;
END;
$$;

-- A REST body with the id its URL gives (PUT /jobs/{id}): the id argument
-- goes into the body as "id"; a body with another "id" is refused.
CREATE FUNCTION fleet_internal.body_with_id(body jsonb, id text, kind text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF id IS NULL OR jsonb_typeof(body) IS DISTINCT FROM 'object' THEN
        RETURN body;
    END IF;
    IF body ? 'id' AND body -> 'id' IS DISTINCT FROM to_jsonb(id) THEN
        RAISE EXCEPTION 'the % body has "id" %, not "%"', kind, body -> 'id', id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave "id" out of the body, or pass the same id.';
    END IF;
    RETURN body || jsonb_build_object('id', id);
END;
$$;

-- A REST body as the import_<kind>() functions take it (PUT /<kinds>/{id}):
-- a JSON object of known keys, with the URL's id (body_with_id).  example
-- shows its shape in the HINT of a body that is not an object.
CREATE FUNCTION fleet_internal.rest_body(body jsonb, id text, kind text, known text[], example text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(body) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the body of % "%" must be a JSON object', kind, id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass IoT Central''s %s: %s.', kind, example);
    END IF;
    body := fleet_internal.body_with_id(body, id, kind);
    PERFORM fleet_internal.refuse_unknown_keys(body, known, format('%s "%s"', kind, id));
    RETURN body;
END;
$$;

-- The organization of a REST body: IoT Central gives it as an array of one
-- id ("organizations"); NULL when the body names none.
CREATE FUNCTION fleet_internal.body_organization(body jsonb, label text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT body ? 'organizations' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(body -> 'organizations') <> 'array' OR jsonb_array_length(body -> 'organizations') <> 1
       OR jsonb_typeof(body -> 'organizations' -> 0) <> 'string' THEN
        RAISE EXCEPTION '"organizations" of % must be an array of one organization id', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', body -> 'organizations');
    END IF;
    RETURN body -> 'organizations' ->> 0;
END;
$$;

-- RFC 7396 JSON merge patch, as IoT Central's PATCH requests
-- (application/merge-patch+json) apply: objects merge key by key, null
-- removes a key, anything else replaces.
CREATE FUNCTION fleet_internal.json_merge_patch(target jsonb, patch jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    RETURN (SELECT coalesce(jsonb_object_agg(coalesce(p.key, t.key),
                                             CASE WHEN p.key IS NULL THEN t.value
                                                  ELSE fleet_internal.json_merge_patch(t.value, p.value) END), '{}')
              FROM jsonb_each(CASE WHEN jsonb_typeof(target) = 'object' THEN target ELSE '{}' END) t
              FULL JOIN jsonb_each(patch) p ON p.key = t.key
             WHERE p.key IS NULL OR jsonb_typeof(p.value) <> 'null');
END;
$$;

-- A time as IoT Central's REST API writes one: UTC, milliseconds, "Z".
CREATE FUNCTION fleet_internal.rest_timestamp(t timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_char(pg_catalog.timezone('UTC', t), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- An etag, as IoT Central's REST API gives objects one: a hash of what the
-- object holds, computed when read, so no column keeps it and any change
-- gives a new one.
CREATE FUNCTION fleet_internal.etag(content jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '"' || left(md5(content::text), 20) || '"'
$$;

-- If-Match, as the REST API's updates check it: an etag sent with changes
-- must be the object's current one, or someone changed it in between.
CREATE FUNCTION fleet_internal.require_etag(label text, given jsonb, current_etag text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF given IS NULL OR jsonb_typeof(given) = 'null' OR given #>> '{}' = current_etag THEN
        RETURN;
    END IF;
    RAISE EXCEPTION '% has changed since etag %', label, given #>> '{}'
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = format('Its etag is now %s.', current_etag),
              HINT = 'Read it again and apply your change to what it holds now.';
END;
$$;

-- The known name a misspelled one most likely meant, or NULL
-- (src/closest_name.c: PostgreSQL's Levenshtein distance, ignoring case).
CREATE FUNCTION fleet_internal.closest_name(name text, candidates text[])
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'closest_name';
COMMENT ON FUNCTION fleet_internal.closest_name(text, text[]) IS 'The candidate nearest to name by edit distance, ignoring case, or NULL when none is near';

-- Refuses a JSON object with a key outside known: a misspelled key must
-- not be dropped silently (a "cancelationThreshold" ignored is a job run
-- with no threshold).  The HINT names the key most likely meant.
CREATE FUNCTION fleet_internal.refuse_unknown_keys(body jsonb, known text[], what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown text;
    meant   text;
BEGIN
    IF jsonb_typeof(body) IS DISTINCT FROM 'object' THEN
        RETURN;
    END IF;
    SELECT k INTO unknown FROM jsonb_object_keys(body) k WHERE k <> ALL (known) ORDER BY k LIMIT 1;
    IF unknown IS NULL THEN
        RETURN;
    END IF;
    meant := fleet_internal.closest_name(unknown, known);
    RAISE EXCEPTION 'unknown key "%" in %', unknown, what
        USING ERRCODE = 'invalid_parameter_value',
              HINT = CASE WHEN meant IS NOT NULL THEN format('Did you mean "%s"? ', meant) ELSE '' END
                     || format('The keys are %s.', array_to_string(known, ', '));
END;
$$;

-- The changes an update_*() function takes: a JSON object of the fields
-- to change, in IoT Central's names, each one of those allowed.
CREATE FUNCTION fleet_internal.require_changes(changes jsonb, allowed text[], label text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown text;
BEGIN
    IF jsonb_typeof(changes) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the changes to % are not a JSON object', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass the fields to change, among %s.', array_to_string(allowed, ', '));
    END IF;
    SELECT k INTO unknown FROM jsonb_object_keys(changes) k WHERE k <> ALL (allowed) ORDER BY k LIMIT 1;
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'field "%" of % cannot be changed', unknown, label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = coalesce('Did you mean "' || fleet_internal.closest_name(unknown, allowed) || '"? ', '')
                         || format('Change %s.', array_to_string(allowed, ', '));
    END IF;
    RETURN changes;
END;
$$;

-- The new display name an update_*() function was given ("displayName" in
-- its changes), checked as creation checks it.
CREATE FUNCTION fleet_internal.changed_display_name(changes jsonb, kind text, id text, max_length int)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(changes -> 'displayName') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'the display name of % "%" must be a string', kind, id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass {"displayName": "..."}.';
    END IF;
    PERFORM fleet_internal.check_new_object(kind, id, changes ->> 'displayName', max_length);
    RETURN changes ->> 'displayName';
END;
$$;

-- src/sql/access.sql
-- Organizations' roles and rights (DESIGN.md section 5).
--
-- A database role is granted an application role in an organization:
-- viewer (reads devices, groups, templates, jobs and results), operator
-- (also imports devices, runs jobs and schedules) or administrator (also
-- manages the organizations below and their members, exports devices with
-- their keys, reads and rotates its enrollment group keys).  A grant holds
-- in the organization and every organization below it; a role also holds
-- what the roles it inherits from hold.
--
-- Members read through row-level security (src/sql/privileges.sql) and
-- change data only through the API: every function that writes is
-- SECURITY DEFINER, names its caller with fleet_internal.calling_role(), checks the
-- caller's rights here, and looks things up only among what the caller
-- sees.  Members hold no write privilege on any table, so they can neither
-- write what the engine trusts nor lock what it needs.  Superusers and
-- BYPASSRLS roles (the engine runs as one) see all.

CREATE FUNCTION fleet_internal.app_role_rank(app_role text)
RETURNS int
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE app_role WHEN 'viewer' THEN 1 WHEN 'operator' THEN 2 WHEN 'administrator' THEN 3 END $$;

-- The role a request comes from, also inside a SECURITY DEFINER function
-- (where current_user is the function's owner): the role set with SET
-- ROLE, or the session's.  PostgreSQL gives a definer function no other
-- view of its caller: a privileged session that runs another role's
-- SECURITY DEFINER code lends that code its identity here, as it lends its
-- rights to any code it runs (README, Security).
CREATE FUNCTION fleet_internal.calling_role()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
                ELSE pg_catalog.current_setting('role')::name END
$$;

-- Superusers and BYPASSRLS roles are not subject to organizations.
CREATE FUNCTION fleet_internal.role_sees_everything(role_name name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = role_name), false) $$;

-- The organizations where a role holds at least min_role: those it (or a
-- role it inherits from) was granted at or above.  With the caller's
-- rights it reads only the caller's own memberships, which is all it needs.
CREATE FUNCTION fleet_internal.organizations_for(min_role text, role_name name DEFAULT current_user)
RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.id
      FROM fleet.organizations o
     WHERE fleet_internal.role_sees_everything(role_name)
        OR EXISTS (SELECT 1 FROM fleet.organization_members m
                    WHERE m.organization_id = ANY (o.path)
                      AND pg_catalog.pg_has_role(role_name, m.member, 'USAGE')
                      AND fleet_internal.app_role_rank(m.app_role) >= fleet_internal.app_role_rank(min_role))
$$;
COMMENT ON FUNCTION fleet_internal.organizations_for(text, name) IS 'The organizations where a role (default: the current one) holds at least the given application role';

-- The organizations a role sees (viewer or more), for the lookups of
-- SECURITY DEFINER functions, where row-level security does not apply;
-- NULL when it sees everything.
CREATE FUNCTION fleet_internal.visible_organizations(role_name name)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN fleet_internal.role_sees_everything(role_name) THEN NULL
                ELSE ARRAY(SELECT fleet_internal.organizations_for('viewer', role_name)) END
$$;

-- Whether a role sees an organization's rows.
CREATE FUNCTION fleet_internal.sees(role_name name, organization text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.role_sees_everything(role_name)
        OR organization IN (SELECT fleet_internal.organizations_for('viewer', role_name))
$$;

-- What the row-level security policies (src/sql/privileges.sql) compare a
-- row's own column with: the ids of what a role sees, by kind.  Called by
-- row_scope() below as the bootstrap superuser, so that the policies of
-- the tables it reads do not apply; NULL for an unknown kind.
CREATE FUNCTION fleet_internal.row_scope_of(kind text, role_name name)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE kind
        WHEN 'organizations' THEN
            ARRAY(SELECT fleet_internal.organizations_for('viewer', role_name))
        WHEN 'administered_organizations' THEN
            ARRAY(SELECT fleet_internal.organizations_for('administrator', role_name))
        -- a deleted job is gone at once, while the engine purges its rows
        WHEN 'jobs' THEN
            ARRAY(SELECT j.id FROM fleet.jobs j
                   WHERE j.deleted_at IS NULL
                     AND j.organization_id IN (SELECT fleet_internal.organizations_for('viewer', role_name)))
        WHEN 'scheduled_jobs' THEN
            ARRAY(SELECT s.id FROM fleet.scheduled_jobs s
                   WHERE s.organization_id IN (SELECT fleet_internal.organizations_for('viewer', role_name)))
        WHEN 'device_operations' THEN
            ARRAY(SELECT p.id::text FROM fleet.device_operations p
                   WHERE p.organization_id IN (SELECT fleet_internal.organizations_for('viewer', role_name)))
        WHEN 'enrollment_groups' THEN
            ARRAY(SELECT g.id FROM fleet.enrollment_groups g
                   WHERE g.organization_id IN (SELECT fleet_internal.organizations_for('administrator', role_name)))
    END
$$;

-- row_scope_of() where Citus holds pg_fleet's tables (fleet.distribute()):
-- the same sets, read from this node's own copies of the reference tables
-- (their one shard each).  Citus evaluates a shard's policies on the node
-- that holds it, as the member; a query of the distributed tables there
-- would start a distributed query from inside a shard's, which Citus
-- refuses.  Every node that holds shards holds the reference tables, the
-- coordinator included.
CREATE FUNCTION fleet_internal.citus_local_copy(table_name regclass)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard regclass;
BEGIN
    -- (EXECUTE: pg_dist_shard exists only where Citus is installed)
    EXECUTE 'SELECT pg_catalog.format(''%I.%I'', n.nspname, c.relname || ''_'' || s.shardid)::regclass
               FROM pg_catalog.pg_dist_shard s
               JOIN pg_catalog.pg_class c ON c.oid = s.logicalrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE s.logicalrelid = $1'
       INTO shard USING table_name;
    IF shard IS NULL THEN
        RAISE EXCEPTION 'table % has no shard on this node', table_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run SELECT * FROM fleet.distribute() on the coordinator.';
    END IF;
    RETURN shard;
END;
$$;

CREATE FUNCTION fleet_internal.row_scope_on_node(kind text, role_name name)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    min_rank int := CASE WHEN kind IN ('administered_organizations', 'enrollment_groups') THEN 3 ELSE 1 END;
    visible  text[];
BEGIN
    IF kind NOT IN ('organizations', 'administered_organizations', 'jobs', 'scheduled_jobs',
                    'device_operations', 'enrollment_groups') THEN
        RETURN NULL;
    END IF;
    EXECUTE pg_catalog.format(
        'SELECT ARRAY(SELECT o.id FROM %s o
                       WHERE fleet_internal.role_sees_everything($1)
                          OR EXISTS (SELECT 1 FROM %s m
                                      WHERE m.organization_id = ANY (o.path)
                                        AND pg_catalog.pg_has_role($1, m.member, ''USAGE'')
                                        AND fleet_internal.app_role_rank(m.app_role) >= $2))',
        fleet_internal.citus_local_copy('fleet.organizations'),
        fleet_internal.citus_local_copy('fleet.organization_members'))
       INTO visible USING role_name, min_rank;
    CASE kind
        WHEN 'organizations', 'administered_organizations' THEN
            RETURN visible;
        WHEN 'jobs' THEN
            EXECUTE pg_catalog.format('SELECT ARRAY(SELECT j.id FROM %s j
                                                     WHERE j.deleted_at IS NULL AND j.organization_id = ANY ($1))',
                                      fleet_internal.citus_local_copy('fleet.jobs'))
               INTO visible USING visible;
        WHEN 'scheduled_jobs' THEN
            EXECUTE pg_catalog.format('SELECT ARRAY(SELECT s.id FROM %s s WHERE s.organization_id = ANY ($1))',
                                      fleet_internal.citus_local_copy('fleet.scheduled_jobs'))
               INTO visible USING visible;
        WHEN 'device_operations' THEN
            EXECUTE pg_catalog.format('SELECT ARRAY(SELECT p.id::text FROM %s p WHERE p.organization_id = ANY ($1))',
                                      fleet_internal.citus_local_copy('fleet.device_operations'))
               INTO visible USING visible;
        ELSE
            -- (the enrollment groups stay on the coordinator, a plain table)
            visible := ARRAY(SELECT g.id FROM fleet.enrollment_groups g WHERE g.organization_id = ANY (visible));
    END CASE;
    RETURN visible;
END;
$$;

-- The ids of what the calling role sees, by kind (row_scope_of): the
-- value every policy compares with.  The planner puts it into each query
-- as a constant (src/row_scope.c), so that Citus's workers, which cannot
-- read pg_fleet's tables from inside a shard's query, evaluate policies on
-- their own.  (C: the one name it looks up is schema-qualified.)
CREATE FUNCTION fleet_internal.row_scope(kind text)
RETURNS text[]
LANGUAGE c STABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'row_scope';
CREATE FUNCTION fleet_internal.row_scope_ids(kind text)
RETURNS bigint[]
LANGUAGE c STABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'row_scope';

-- Refuses unless the role holds min_role in the organization.  action says
-- what needed it ("creating a job").
CREATE FUNCTION fleet_internal.require_app_role(organization text, min_role text, action text,
                                       role_name name DEFAULT fleet_internal.calling_role())
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- (for those who see everything, a missing organization is told as such elsewhere)
    IF NOT fleet_internal.role_sees_everything(role_name)
       AND NOT EXISTS (SELECT 1 FROM fleet_internal.organizations_for(min_role, role_name) o WHERE o = organization) THEN
        RAISE EXCEPTION 'permission denied for organization "%"', organization
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('%s needs the %s role in organization "%s" or one above it.',
                                  initcap(left(action, 1)) || substr(action, 2), min_role, organization),
                  HINT = 'An administrator grants it with fleet.grant_organization().';
    END IF;
END;
$$;

-- Granting and revoking.  SECURITY DEFINER: members cannot write the
-- membership table (they would grant themselves); these functions check
-- that the calling role administers the organization, then write it.
CREATE FUNCTION fleet.grant_organization(organization_id text, member regrole, app_role text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    IF organization_id IS NULL OR member IS NULL THEN
        RAISE EXCEPTION 'grant_organization needs an organization and a member'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF app_role IS NULL OR app_role NOT IN ('administrator', 'operator', 'viewer') THEN
        RAISE EXCEPTION 'unknown application role "%"', coalesce(app_role, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Grant ''administrator'', ''operator'' or ''viewer''.';
    END IF;
    PERFORM fleet_internal.require_organization(organization_id, caller);
    PERFORM fleet_internal.require_app_role(organization_id, 'administrator', 'granting roles', caller);
    INSERT INTO fleet.organization_members AS m (organization_id, member, app_role, granted_by)
    VALUES (grant_organization.organization_id, member, app_role, caller)
    ON CONFLICT ON CONSTRAINT organization_members_pkey DO UPDATE
       SET app_role = excluded.app_role, granted_by = excluded.granted_by, granted_at = excluded.granted_at;
END;
$$;
COMMENT ON FUNCTION fleet.grant_organization(text, regrole, text) IS 'Grants a database role an application role (administrator, operator, viewer) in an organization and those below it; for administrators of it';

CREATE FUNCTION fleet.revoke_organization(organization_id text, member regrole)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    PERFORM fleet_internal.require_organization(organization_id, caller);
    PERFORM fleet_internal.require_app_role(organization_id, 'administrator', 'revoking roles', caller);
    DELETE FROM fleet.organization_members m
     WHERE m.organization_id = revoke_organization.organization_id AND m.member = revoke_organization.member;
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION fleet.revoke_organization(text, regrole) IS 'Removes a role''s grant in an organization; returns whether there was one';

-- The members of the organizations the caller administers.  SECURITY
-- DEFINER: a member sees only its own membership rows through the table.
CREATE FUNCTION fleet.list_organization_members(organization text DEFAULT NULL)
RETURNS TABLE (organization_id text, member regrole, app_role text, granted_by name, granted_at timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    IF organization IS NOT NULL THEN
        PERFORM fleet_internal.require_organization(organization, caller);
        PERFORM fleet_internal.require_app_role(organization, 'administrator', 'listing members', caller);
    END IF;
    RETURN QUERY
    SELECT m.organization_id, m.member, m.app_role, m.granted_by, m.granted_at
      FROM fleet.organization_members m
      JOIN fleet.organizations o ON o.id = m.organization_id
     WHERE m.organization_id IN (SELECT fleet_internal.organizations_for('administrator', caller))
       AND (list_organization_members.organization IS NULL OR o.path @> ARRAY[list_organization_members.organization])
     ORDER BY o.path, m.member::text;
END;
$$;
COMMENT ON FUNCTION fleet.list_organization_members(text) IS 'The members of the organizations the caller administers (or of one of them and those below it)';

-- Jobs and schedules live where the engine runs: elsewhere they would wait
-- for ever.  Refuses in any other database.
CREATE FUNCTION fleet_internal.require_engine_database(action text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.current_database() <> pg_catalog.current_setting('fleet.database_name') THEN
        RAISE EXCEPTION '% needs the job engine, which runs in database "%"', action,
                        pg_catalog.current_setting('fleet.database_name')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('This is database "%s".', pg_catalog.current_database()),
                  HINT = format('Set fleet.database_name = ''%s'' in postgresql.conf and reload, or use pg_fleet in database "%s".',
                                pg_catalog.current_database(), pg_catalog.current_setting('fleet.database_name'));
    END IF;
END;
$$;

-- src/sql/organizations.sql
-- Organizations: a hierarchy under the built-in root organization.  Devices,
-- groups and jobs belong to one organization; a member of an organization
-- sees it and everything below it (src/sql/access.sql).

-- Refuses unless the organization exists and the role sees it: one it does
-- not see does not exist for it.  Used by every function that takes an
-- organization argument, so the message is the same everywhere.
CREATE FUNCTION fleet_internal.require_organization(organization text, role_name name DEFAULT fleet_internal.calling_role())
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = organization)
       OR NOT fleet_internal.sees(role_name, organization) THEN
        PERFORM fleet_internal.refuse_missing('organization', organization,
            'Create it with fleet.create_organization(), or see the existing ones in fleet.organizations.');
    END IF;
    RETURN organization;
END;
$$;

CREATE FUNCTION fleet.get_organization(organization_id text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object('id', o.id, 'displayName', o.display_name, 'parent', o.parent_id))
      FROM fleet.organizations o
     WHERE o.id = fleet_internal.require_organization(organization_id)
$$;
COMMENT ON FUNCTION fleet.get_organization(text) IS 'The organization as JSON: id, displayName, parent';

-- SECURITY DEFINER: members write organizations only through here.  Its
-- path is computed from its parent's; it gets enrollment groups of its own
-- (src/sql/device_keys.sql).
CREATE FUNCTION fleet.create_organization(organization_id text, display_name text, parent text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller      name := fleet_internal.calling_role();
    parent_org  text := coalesce(parent, 'root');
    parent_path text[];
BEGIN
    PERFORM fleet_internal.check_new_object('organization', organization_id, display_name, 128);
    PERFORM fleet_internal.require_organization(parent_org, caller);
    PERFORM fleet_internal.require_app_role(parent_org, 'administrator', 'creating an organization', caller);
    SELECT o.path INTO parent_path FROM fleet.organizations o WHERE o.id = parent_org;
    IF EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = create_organization.organization_id) THEN
        PERFORM fleet_internal.refuse_existing('organization', organization_id);
    END IF;
    INSERT INTO fleet.organizations (id, display_name, parent_id, path)
    VALUES (organization_id, display_name, parent_org, parent_path || organization_id);
    PERFORM fleet_internal.create_enrollment_groups(organization_id);
    RETURN fleet.get_organization(organization_id);
END;
$$;

-- Creates an organization from IoT Central's REST body, as PUT
-- /organizations/{id} takes it: {"displayName", "parent"} (and "id", which
-- must be the same).
CREATE FUNCTION fleet.import_organization(organization_id text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER      -- (create_organization checks the caller)
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    label text := format('organization "%s"', organization_id);
BEGIN
    body := fleet_internal.rest_body(body, organization_id, 'organization', '{id,displayName,parent}',
                                     '{"displayName": ..., "parent": ...}');
    IF jsonb_typeof(body -> 'displayName') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% needs a "displayName"', label
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Add "displayName": "a name people read".';
    END IF;
    IF body ? 'parent' AND jsonb_typeof(body -> 'parent') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'the parent of % must be an organization id', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN fleet.create_organization(organization_id, body ->> 'displayName', body ->> 'parent');
END;
$$;
COMMENT ON FUNCTION fleet.import_organization(text, jsonb) IS 'Creates an organization from IoT Central''s REST body ({"displayName", "parent"}); returns it';
COMMENT ON FUNCTION fleet.create_organization(text, text, text) IS 'Creates an organization below parent (default: root) and returns it';

-- Renames an organization ({"displayName"}; "id" and "parent" may come
-- with it, unchanged).  Moving one under another parent is not supported: it would change who sees its devices while
-- their jobs run.
CREATE FUNCTION fleet.update_organization(organization_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    label  text := format('organization "%s"', organization_id);
BEGIN
    PERFORM fleet_internal.require_organization(organization_id, caller);
    PERFORM fleet_internal.require_app_role(organization_id, 'administrator', 'changing an organization', caller);
    -- (IoT Central's PATCH body may repeat the id and parent unchanged)
    IF jsonb_typeof(changes) = 'object' AND changes ? 'parent'
       AND changes -> 'parent' IS DISTINCT FROM (SELECT to_jsonb(o.parent_id) FROM fleet.organizations o
                                                  WHERE o.id = update_organization.organization_id) THEN
        RAISE EXCEPTION 'the parent of % cannot change', label
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create an organization under the new parent and move the devices to it with fleet.update_device().';
    END IF;
    IF jsonb_typeof(changes) = 'object' AND changes ? 'id' AND changes -> 'id' IS DISTINCT FROM to_jsonb(organization_id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM fleet_internal.require_changes(changes, '{id,displayName,parent}', label);
    IF changes ? 'displayName' THEN
        UPDATE fleet.organizations o
           SET display_name = fleet_internal.changed_display_name(changes, 'organization', organization_id, 128)
         WHERE o.id = update_organization.organization_id;
    END IF;
    RETURN fleet.get_organization(organization_id);
END;
$$;
COMMENT ON FUNCTION fleet.update_organization(text, jsonb) IS 'Renames an organization (displayName); returns it';

-- Deletes an organization with nothing in it: no organization below it,
-- no device, group, job or scheduled job.  Its members' grants and its
-- enrollment groups go with it.  For administrators of its parent, as
-- creating it was; root stays.
CREATE FUNCTION fleet.delete_organization(organization_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    org    fleet.organizations;
    uses   text[];
BEGIN
    PERFORM fleet_internal.require_organization(organization_id, caller);
    SELECT o.* INTO org FROM fleet.organizations o WHERE o.id = delete_organization.organization_id FOR UPDATE;
    IF org.parent_id IS NULL THEN
        RAISE EXCEPTION 'organization "root" cannot be deleted'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM fleet_internal.require_app_role(org.parent_id, 'administrator', 'deleting an organization', caller);
    SELECT array_remove(ARRAY[
               (SELECT format('%s organizations below it', count(*)) FROM fleet.organizations o
                 WHERE o.parent_id = org.id HAVING count(*) > 0),
               (SELECT format('%s devices', count(*)) FROM fleet.devices d
                 WHERE d.organization_id = org.id HAVING count(*) > 0),
               (SELECT format('%s device groups', count(*)) FROM fleet.device_groups g
                 WHERE g.organization_id = org.id HAVING count(*) > 0),
               (SELECT format('%s jobs', count(*)) FROM fleet.jobs j
                 WHERE j.organization_id = org.id HAVING count(*) > 0),
               (SELECT format('%s scheduled jobs', count(*)) FROM fleet.scheduled_jobs s
                 WHERE s.organization_id = org.id HAVING count(*) > 0)], NULL)
      INTO uses;
    IF cardinality(uses) > 0 THEN
        PERFORM fleet_internal.refuse_in_use('organization', org.id,
            format('It holds %s.', array_to_string(uses, ', ')),
            'Delete or move what it holds first; deleted and finished jobs go after fleet.job_retention.');
    END IF;
    DELETE FROM fleet.organizations o WHERE o.id = org.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_organization(text) IS 'Deletes an organization that holds nothing (no organization below it, device, group, job or scheduled job)';

-- The organization and every organization below it that the caller sees.
CREATE FUNCTION fleet.list_organizations(organization text DEFAULT 'root')
RETURNS TABLE (id text, display_name text, parent_id text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT o.id, o.display_name, o.parent_id
      FROM fleet.organizations o
     WHERE o.path @> ARRAY[list_organizations.organization]
     ORDER BY o.path;
END;
$$;
COMMENT ON FUNCTION fleet.list_organizations(text) IS 'An organization (default: root) and those below it that the caller sees, parents first';

-- The organization below root that an organization belongs under (itself,
-- or root for root): the unit of fleet.max_running_jobs_per_organization.
CREATE FUNCTION fleet_internal.top_organization(path text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(path[2], path[1]) $$;

-- src/sql/device_templates.sql
-- Device templates from DTDL v2 models, as IoT Central and the Azure IoT
-- model repository write them.  Each Interface is one row; its contents are
-- rows of fleet.template_contents with their schemas resolved, and the view
-- fleet.template_capabilities lists what a device of a template can do,
-- component by component.  Validation happens once, at import, so jobs can
-- trust what they find here.


CREATE VIEW fleet.template_capabilities WITH (security_invoker = true) AS
    SELECT c.template_id, NULL::text AS component, c.name, c.capability, c.schema,
           c.min_value, c.max_value, c.request, c.response, c.display_name, c.semantic_types
      FROM fleet.template_contents c
     WHERE c.capability NOT IN ('component', 'relationship')
    UNION ALL
    SELECT comp.template_id, comp.name, c.name, c.capability, c.schema,
           c.min_value, c.max_value, c.request, c.response, c.display_name, c.semantic_types
      FROM fleet.template_contents comp
      JOIN fleet.template_contents c ON c.template_id = comp.component_interface
     WHERE comp.capability = 'component'
       AND c.capability NOT IN ('component', 'relationship');
COMMENT ON VIEW fleet.template_capabilities IS 'Every telemetry, property, writable property, cloud property and command of each template; component is NULL for the root interface';

-- "@type" as DTDL allows it: a string, or an array of strings (the class
-- plus semantic types such as "Temperature").
CREATE FUNCTION fleet_internal.dtdl_types(type jsonb, what text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE jsonb_typeof(type)
    WHEN 'string' THEN
        RETURN ARRAY[type #>> '{}'];
    WHEN 'array' THEN
        IF jsonb_array_length(type) > 0
           AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(type) e WHERE jsonb_typeof(e) <> 'string') THEN
            RETURN ARRAY(SELECT jsonb_array_elements_text(type));
        END IF;
    ELSE
        NULL;
    END CASE;
    RAISE EXCEPTION '% has no valid "@type"', what
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('"@type" is %s.', coalesce(type::text, 'missing')),
              HINT = 'Give "@type" as a string such as "Property" or an array such as ["Property", "Temperature"].';
END;
$$;

-- displayName and description: a string, or a language map such as
-- {"en": "Thermostat"}; we keep English, else the first language.
CREATE FUNCTION fleet_internal.dtdl_text(value jsonb, what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE jsonb_typeof(value)
    WHEN 'string' THEN
        RETURN value #>> '{}';
    WHEN 'object' THEN
        IF NOT EXISTS (SELECT 1 FROM jsonb_each(value) e WHERE jsonb_typeof(e.value) <> 'string') THEN
            RETURN coalesce(value ->> 'en',
                            (SELECT e.value FROM jsonb_each_text(value) e ORDER BY e.key LIMIT 1));
        END IF;
    ELSE
        IF value IS NULL THEN
            RETURN NULL;
        END IF;
    END CASE;
    RAISE EXCEPTION '% is neither a string nor a language map', what
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('It is %s.', value),
              HINT = 'Write it as "text" or as {"en": "text"}.';
END;
$$;

CREATE FUNCTION fleet_internal.dtdl_check_name(value jsonb, what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(value) = 'string'
       AND (value #>> '{}') ~ '^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$'
       AND length(value #>> '{}') <= 64 THEN
        RETURN value #>> '{}';
    END IF;
    RAISE EXCEPTION '% has an invalid name %', what, coalesce(value::text, '(missing)')
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'A DTDL name starts with a letter, has only letters, digits and "_", does not end with "_", and has at most 64 characters.';
END;
$$;

CREATE FUNCTION fleet_internal.dtdl_is_dtmi(id text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT id ~ '^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*;[1-9][0-9]{0,8}$'
           AND length(id) <= 2048
$$;

-- Validates a schema and returns it with every nested schema resolved:
-- primitives stay names, references to the interface's "schemas" are
-- replaced by their definitions.
CREATE FUNCTION fleet_internal.dtdl_schema(schema jsonb, what text, local_schemas jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    label        text;
    types       text[];
    resolved    jsonb;
    element     jsonb;
    elements    jsonb := '[]';
    names       text[] := '{}';
    value_type  text;
    i           int := 0;
BEGIN
    IF schema IS NULL OR jsonb_typeof(schema) = 'null' THEN
        RAISE EXCEPTION '% has no schema', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add "schema", for example "schema": "double".';
    END IF;

    IF jsonb_typeof(schema) = 'string' THEN
        label := schema #>> '{}';
        IF label IN ('boolean', 'date', 'dateTime', 'double', 'duration', 'float', 'integer',
                    'long', 'string', 'time',
                    'point', 'multiPoint', 'lineString', 'multiLineString', 'polygon', 'multiPolygon',
                    'geopoint', 'vector') THEN
            RETURN schema;
        END IF;
        IF local_schemas ? label THEN
            RETURN local_schemas -> label;
        END IF;
        RAISE EXCEPTION 'unknown schema "%" in %', label, what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a DTDL v2 primitive (boolean, date, dateTime, double, duration, float, integer, long, string, time), an Enum, Object, Map or Array, or the @id of a schema declared in the interface''s "schemas".';
    END IF;

    IF jsonb_typeof(schema) <> 'object' THEN
        RAISE EXCEPTION 'the schema of % is not a schema name or object', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', schema);
    END IF;

    types := fleet_internal.dtdl_types(schema -> '@type', 'the schema of ' || what);

    IF 'Enum' = ANY (types) THEN
        value_type := schema ->> 'valueSchema';
        IF value_type IS NULL OR value_type NOT IN ('integer', 'string') THEN
            RAISE EXCEPTION 'the Enum of % has valueSchema %', what, coalesce(schema -> 'valueSchema', '"(missing)"')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'An Enum''s valueSchema is "integer" or "string".';
        END IF;
        IF jsonb_typeof(schema -> 'enumValues') <> 'array' OR jsonb_array_length(schema -> 'enumValues') = 0 THEN
            RAISE EXCEPTION 'the Enum of % has no enumValues', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'List its values as "enumValues": [{"name": "on", "enumValue": 1}, ...].';
        END IF;
        FOR element IN SELECT e FROM jsonb_array_elements(schema -> 'enumValues') e LOOP
            i := i + 1;
            label := fleet_internal.dtdl_check_name(element -> 'name', format('enum value %s of %s', i, what));
            IF label = ANY (names) THEN
                RAISE EXCEPTION 'the Enum of % has two values named "%"', what, label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            names := names || label;
            IF (value_type = 'string' AND jsonb_typeof(element -> 'enumValue') IS DISTINCT FROM 'string')
               OR (value_type = 'integer' AND (jsonb_typeof(element -> 'enumValue') IS DISTINCT FROM 'number'
                                               OR (element ->> 'enumValue') !~ '^-?[0-9]+$')) THEN
                RAISE EXCEPTION 'enum value "%" of % does not match its valueSchema "%"', label, what, value_type
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('Its enumValue is %s.', coalesce(element -> 'enumValue', '"(missing)"'));
            END IF;
        END LOOP;
        RETURN schema;
    ELSIF 'Object' = ANY (types) THEN
        IF jsonb_typeof(schema -> 'fields') <> 'array' OR jsonb_array_length(schema -> 'fields') = 0 THEN
            RAISE EXCEPTION 'the Object of % has no fields', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'List them as "fields": [{"name": "x", "schema": "double"}, ...].';
        END IF;
        FOR element IN SELECT e FROM jsonb_array_elements(schema -> 'fields') e LOOP
            i := i + 1;
            label := fleet_internal.dtdl_check_name(element -> 'name', format('field %s of %s', i, what));
            IF label = ANY (names) THEN
                RAISE EXCEPTION 'the Object of % has two fields named "%"', what, label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            names := names || label;
            resolved := fleet_internal.dtdl_schema(element -> 'schema', format('field "%s" of %s', label, what), local_schemas);
            elements := elements || jsonb_build_array(jsonb_set(element, '{schema}', resolved));
        END LOOP;
        RETURN jsonb_set(schema, '{fields}', elements);
    ELSIF 'Map' = ANY (types) THEN
        IF jsonb_typeof(schema -> 'mapKey') <> 'object' OR schema #>> '{mapKey,schema}' IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'the Map of % needs a mapKey with schema "string"', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM fleet_internal.dtdl_check_name(schema #> '{mapKey,name}', format('the mapKey of %s', what));
        IF jsonb_typeof(schema -> 'mapValue') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'the Map of % has no mapValue', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Add "mapValue": {"name": "value", "schema": "string"}.';
        END IF;
        PERFORM fleet_internal.dtdl_check_name(schema #> '{mapValue,name}', format('the mapValue of %s', what));
        resolved := fleet_internal.dtdl_schema(schema #> '{mapValue,schema}', format('the mapValue of %s', what), local_schemas);
        RETURN jsonb_set(schema, '{mapValue,schema}', resolved);
    ELSIF 'Array' = ANY (types) THEN
        resolved := fleet_internal.dtdl_schema(schema -> 'elementSchema', format('the elements of %s', what), local_schemas);
        RETURN jsonb_set(schema, '{elementSchema}', resolved);
    END IF;

    RAISE EXCEPTION 'unknown schema type % in %', schema -> '@type', what
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Complex schemas are Enum, Object, Map or Array.';
END;
$$;

-- Validates one Interface and returns its contents as rows.  Component
-- references are checked by the caller, which knows the whole model.
CREATE FUNCTION fleet_internal.dtdl_interface_contents(interface jsonb, what text)
RETURNS SETOF fleet.template_contents
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id            text;
    contexts      jsonb;
    local_schemas jsonb := '{}';
    element       jsonb;
    types         text[];
    kind         text;
    names         text[] := '{}';
    item           fleet.template_contents;
    content_what  text;
    i             int := 0;
    min_value     jsonb;
    max_value     jsonb;
    declared      text[];
    pending       jsonb;
    waiting       jsonb;
BEGIN
    IF jsonb_typeof(interface) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% is not a JSON object', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A device template is a DTDL v2 Interface object, or an array of them.';
    END IF;

    types := fleet_internal.dtdl_types(interface -> '@type', what);
    IF NOT 'Interface' = ANY (types) THEN
        RAISE EXCEPTION '% is not a DTDL Interface', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Its "@type" is %s.', interface -> '@type'),
                  HINT = 'A device template is a DTDL v2 Interface, or an array of Interfaces joined by Components.';
    END IF;

    id := interface ->> '@id';
    IF jsonb_typeof(interface -> '@id') IS DISTINCT FROM 'string' OR NOT fleet_internal.dtdl_is_dtmi(id) THEN
        RAISE EXCEPTION '% has a malformed DTMI %', what, coalesce(interface -> '@id', '"(missing @id)"')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A DTMI looks like "dtmi:com:example:Thermostat;1": "dtmi:", segments of letters, digits and "_" separated by ":", then ";" and a version number.';
    END IF;
    what := format('interface "%s"', id);

    contexts := CASE jsonb_typeof(interface -> '@context')
                WHEN 'string' THEN jsonb_build_array(interface -> '@context')
                WHEN 'array' THEN interface -> '@context' END;
    IF contexts IS NULL OR NOT contexts @> '["dtmi:dtdl:context;2"]' THEN
        RAISE EXCEPTION '% is not a DTDL v2 model', what
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('Its "@context" is %s.', coalesce(interface -> '@context', '"(missing)"')),
                  HINT = 'pg_fleet reads DTDL v2: set "@context" to "dtmi:dtdl:context;2", or to ["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"] for IoT Central''s extensions.';
    END IF;

    -- "extends": by now (fleet_internal.dtdl_hoist_inline) DTMIs only;
    -- import_template() adds the inherited contents
    IF interface ? 'extends' AND EXISTS (
           SELECT 1 FROM jsonb_array_elements(CASE jsonb_typeof(interface -> 'extends') WHEN 'array' THEN interface -> 'extends'
                                                   ELSE jsonb_build_array(interface -> 'extends') END) e
            WHERE jsonb_typeof(e) <> 'string' OR NOT fleet_internal.dtdl_is_dtmi(e #>> '{}')) THEN
        RAISE EXCEPTION '"extends" of % is not an interface, a DTMI, or an array of them', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', interface -> 'extends');
    END IF;

    IF interface ? 'contents' AND jsonb_typeof(interface -> 'contents') <> 'array' THEN
        RAISE EXCEPTION 'the "contents" of % is not an array', what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- reusable schemas declared by the interface, referenced by their @id
    IF interface ? 'schemas' THEN
        IF jsonb_typeof(interface -> 'schemas') <> 'array' THEN
            RAISE EXCEPTION 'the "schemas" of % is not an array', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR element IN SELECT e FROM jsonb_array_elements(interface -> 'schemas') e LOOP
            IF jsonb_typeof(element -> '@id') IS DISTINCT FROM 'string' OR NOT fleet_internal.dtdl_is_dtmi(element ->> '@id') THEN
                RAISE EXCEPTION 'a schema declared by % has a malformed DTMI %', what, coalesce(element -> '@id', '"(missing @id)"')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
        -- a schema may name one declared after it: resolve those whose
        -- references are resolved, round after round (DTDL forbids cycles)
        declared := ARRAY(SELECT e ->> '@id' FROM jsonb_array_elements(interface -> 'schemas') e);
        pending := interface -> 'schemas';
        WHILE jsonb_array_length(pending) > 0 LOOP
            waiting := '[]';
            FOR element IN SELECT e FROM jsonb_array_elements(pending) e LOOP
                IF EXISTS (SELECT 1 FROM jsonb_path_query(element - '@id', 'strict $.**') r
                            WHERE jsonb_typeof(r) = 'string' AND (r #>> '{}') = ANY (declared)
                              AND NOT local_schemas ? (r #>> '{}')) THEN
                    waiting := waiting || jsonb_build_array(element);
                ELSE
                    local_schemas := local_schemas || jsonb_build_object(
                        element ->> '@id',
                        fleet_internal.dtdl_schema(element - '@id', format('schema "%s" of %s', element ->> '@id', what), local_schemas));
                END IF;
            END LOOP;
            IF jsonb_array_length(waiting) = jsonb_array_length(pending) THEN
                RAISE EXCEPTION 'the schemas % of % refer to each other in a cycle', waiting::text, what
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'DTDL schemas cannot be recursive.';
            END IF;
            pending := waiting;
        END LOOP;
    END IF;

    FOR element IN SELECT e FROM jsonb_array_elements(coalesce(interface -> 'contents', '[]')) e LOOP
        i := i + 1;
        content_what := format('content %s of %s', i, what);
        IF jsonb_typeof(element) <> 'object' THEN
            RAISE EXCEPTION '% is not a JSON object', content_what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        types := fleet_internal.dtdl_types(element -> '@type', content_what);
        item := NULL;
        item.template_id := id;
        item.name := fleet_internal.dtdl_check_name(element -> 'name', content_what);
        content_what := format('content "%s" of %s', item.name, what);
        IF item.name = ANY (names) THEN
            RAISE EXCEPTION '% has two contents named "%"', what, item.name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Names must be unique within an interface.';
        END IF;
        names := names || item.name;

        -- (IoT Central's own templates give contents URN ids, as DTDL v1
        -- did: nothing refers to a content by its id, so any string will do)
        IF element ? '@id' AND jsonb_typeof(element -> '@id') <> 'string' THEN
            RAISE EXCEPTION '% has a malformed DTMI %', content_what, element -> '@id'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;

        kind := (SELECT t FROM unnest(types) t
                   WHERE t IN ('Telemetry', 'Property', 'Command', 'Component', 'Relationship', 'Cloud')
                   ORDER BY t = 'Cloud' DESC LIMIT 1);
        IF kind IS NULL THEN
            RAISE EXCEPTION '% is not a Telemetry, Property, Command, Component or Relationship', content_what
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Its "@type" is %s.', element -> '@type');
        END IF;
        item.semantic_types := ARRAY(SELECT t FROM unnest(types) t
                                    WHERE t NOT IN ('Telemetry', 'Property', 'Command', 'Component', 'Relationship', 'Cloud'));
        item.display_name := fleet_internal.dtdl_text(element -> 'displayName', format('the displayName of %s', content_what));

        IF element ? 'writable' AND jsonb_typeof(element -> 'writable') <> 'boolean' THEN
            RAISE EXCEPTION '"writable" of % is not true or false', content_what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;

        CASE kind
        WHEN 'Telemetry' THEN
            item.capability := 'telemetry';
        WHEN 'Cloud' THEN
            item.capability := 'cloud_property';   -- IoT Central: set by operators, never sent to devices
        WHEN 'Property' THEN
            item.capability := CASE WHEN (element ->> 'writable')::boolean THEN 'writable_property' ELSE 'property' END;
        WHEN 'Command' THEN
            item.capability := 'command';
        WHEN 'Component' THEN
            item.capability := 'component';
        ELSE
            item.capability := 'relationship';
        END CASE;

        IF item.capability IN ('telemetry', 'property', 'writable_property', 'cloud_property') THEN
            item.schema := fleet_internal.dtdl_schema(element -> 'schema', content_what, local_schemas);
        ELSIF item.capability = 'command' THEN
            FOREACH kind IN ARRAY ARRAY['request', 'response'] LOOP
                CONTINUE WHEN NOT element ? kind;
                IF jsonb_typeof(element -> kind) <> 'object' THEN
                    RAISE EXCEPTION 'the % of command % is not an object', kind, content_what
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                PERFORM fleet_internal.dtdl_check_name(element -> kind -> 'name', format('the %s of command %s', kind, content_what));
                IF kind = 'request' THEN
                    item.request := jsonb_set(element -> kind, '{schema}',
                        fleet_internal.dtdl_schema(element -> kind -> 'schema', format('the request of command %s', content_what), local_schemas));
                ELSE
                    item.response := jsonb_set(element -> kind, '{schema}',
                        fleet_internal.dtdl_schema(element -> kind -> 'schema', format('the response of command %s', content_what), local_schemas));
                END IF;
            END LOOP;
        ELSIF item.capability = 'component' THEN
            IF jsonb_typeof(element -> 'schema') IS DISTINCT FROM 'string' OR NOT fleet_internal.dtdl_is_dtmi(element ->> 'schema') THEN
                RAISE EXCEPTION '% does not name its component interface by DTMI', content_what
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('Its schema is %s.', coalesce(element -> 'schema', '"(missing)"')),
                          HINT = 'Give the component''s interface as its @id, for example "schema": "dtmi:com:example:Thermostat;1", and include that interface in the same array or import it first.';
            END IF;
            item.component_interface := element ->> 'schema';
        END IF;

        -- IoT Central's range for numeric values, checked when jobs set them
        min_value := element -> 'minValue';
        max_value := element -> 'maxValue';
        IF min_value IS NOT NULL OR max_value IS NOT NULL THEN
            IF item.schema IS NULL OR jsonb_typeof(item.schema) <> 'string'
               OR (item.schema #>> '{}') NOT IN ('double', 'float', 'integer', 'long') THEN
                RAISE EXCEPTION '% has minValue or maxValue but no numeric schema', content_what
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'minValue and maxValue apply to double, float, integer and long values.';
            END IF;
            IF (min_value IS NOT NULL AND jsonb_typeof(min_value) <> 'number')
               OR (max_value IS NOT NULL AND jsonb_typeof(max_value) <> 'number') THEN
                RAISE EXCEPTION 'minValue and maxValue of % must be numbers', content_what
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('minValue is %s, maxValue is %s.', coalesce(min_value::text, 'not set'), coalesce(max_value::text, 'not set'));
            END IF;
            item.min_value := (min_value #>> '{}')::numeric;
            item.max_value := (max_value #>> '{}')::numeric;
            IF item.min_value > item.max_value THEN
                RAISE EXCEPTION 'minValue % is greater than maxValue % in %', item.min_value, item.max_value, content_what
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END IF;

        RETURN NEXT item;
    END LOOP;
END;
$$;

-- DTDL lets an interface hold others inline: as "extends" entries and as
-- the schema of a Component.  Returns an array: the interface with each
-- inline one replaced by its @id, then the inline ones (and theirs), each
-- given the "@context" of the interface that holds it, as DTDL says.
CREATE FUNCTION fleet_internal.dtdl_hoist_inline(interface jsonb, context jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hoisted  jsonb := '[]';
    ctx      jsonb := coalesce(interface -> '@context', context);
    element  jsonb;
    inline   jsonb;
    replaced jsonb := '[]';
BEGIN
    IF jsonb_typeof(interface) IS DISTINCT FROM 'object' THEN
        RETURN jsonb_build_array(interface);            -- refused with its reason later
    END IF;
    IF ctx IS NOT NULL AND NOT interface ? '@context' THEN
        interface := interface || jsonb_build_object('@context', ctx);
    END IF;
    -- an inline interface with IoT Central's URN id is parsed under a DTMI
    -- made from it (nothing outside its holder names it)
    IF context IS NOT NULL AND jsonb_typeof(interface -> '@id') = 'string' AND NOT fleet_internal.dtdl_is_dtmi(interface ->> '@id') THEN
        interface := jsonb_set(interface, '{@id}', to_jsonb('dtmi:iotcentral:inline:i' || md5(interface ->> '@id') || ';1'));
    END IF;
    IF jsonb_typeof(interface -> 'extends') IN ('object', 'array') THEN
        FOR element IN SELECT e FROM jsonb_array_elements(CASE jsonb_typeof(interface -> 'extends') WHEN 'array'
                                                            THEN interface -> 'extends'
                                                            ELSE jsonb_build_array(interface -> 'extends') END) e LOOP
            IF jsonb_typeof(element) = 'object' THEN
                IF jsonb_typeof(element -> '@id') IS DISTINCT FROM 'string' THEN
                    RAISE EXCEPTION 'an interface inline in "extends" of interface % has no "@id"', coalesce(interface -> '@id', '"(missing @id)"')
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Give the extended interface a DTMI as "@id".';
                END IF;
                inline := fleet_internal.dtdl_hoist_inline(element, coalesce(ctx, '"dtmi:dtdl:context;2"'));
                hoisted := hoisted || inline;
                element := inline -> 0 -> '@id';
            END IF;
            replaced := replaced || jsonb_build_array(element);
        END LOOP;
        interface := jsonb_set(interface, '{extends}', replaced);
    END IF;
    IF jsonb_typeof(interface -> 'contents') = 'array' THEN
        replaced := '[]';
        FOR element IN SELECT e FROM jsonb_array_elements(interface -> 'contents') e LOOP
            inline := CASE WHEN jsonb_typeof(element) = 'object' THEN element -> 'schema' END;
            IF jsonb_typeof(inline) = 'object' AND (inline -> '@type' = '"Interface"' OR inline -> '@type' @> '["Interface"]') THEN
                -- an inline component interface without an @id gets one
                -- from its holder and the component's name
                IF NOT inline ? '@id' AND jsonb_typeof(interface -> '@id') = 'string' AND jsonb_typeof(element -> 'name') = 'string' THEN
                    inline := inline || jsonb_build_object('@id',
                        split_part(interface ->> '@id', ';', 1) || ':inline_' || (element ->> 'name') || ';'
                        || coalesce(nullif(split_part(interface ->> '@id', ';', 2), ''), '1'));
                END IF;
                inline := fleet_internal.dtdl_hoist_inline(inline, coalesce(ctx, '"dtmi:dtdl:context;2"'));
                hoisted := hoisted || inline;
                element := jsonb_set(element, '{schema}', coalesce(inline -> 0 -> '@id', 'null'));
            END IF;
            replaced := replaced || jsonb_build_array(element);
        END LOOP;
        interface := jsonb_set(interface, '{contents}', replaced);
    END IF;
    RETURN jsonb_build_array(interface) || hoisted;
END;
$$;

-- Imports a device template.  Three forms are taken:
--  * a DTDL v2 Interface, as the model repository writes one;
--  * an array of Interfaces joined by Components (the repository's
--    expanded form);
--  * IoT Central's device template, which wraps the model:
--    {"@id", "@type": ["ModelDefinition", "DeviceModel"], "displayName",
--    "capabilityModel": {...}}; its id (template_id, as REST's PUT
--    /deviceTemplates/{id} takes it from the URL, else its "@id"; often not
--    a versioned DTMI) is what jobs, groups and devices name, distinct from
--    its interfaces' ids, and a model without "@context" is DTDL v2.
-- Inline interfaces ("extends" entries, component schemas) are imported as
-- interfaces of their own; an interface gets the contents of those it
-- extends, and a name declared twice along the way is refused, as DTDL
-- says.
-- A DTDL v1 schema as DTDL v2 has it: an Enum gains the valueSchema v1
-- left out (integer when every value is one, else string).
CREATE FUNCTION fleet_internal.dtdl_v1_schema(schema jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- a schema named by its URN: the DTMI its declaration was given
    IF jsonb_typeof(schema) = 'string' AND (schema #>> '{}') ~ '^urn:' THEN
        RETURN to_jsonb(fleet_internal.dtdl_v1_id(schema #>> '{}'));
    END IF;
    IF jsonb_typeof(schema) IS DISTINCT FROM 'object' THEN
        RETURN schema;
    END IF;
    IF jsonb_typeof(schema -> '@id') = 'string' AND NOT fleet_internal.dtdl_is_dtmi(schema ->> '@id') THEN
        schema := jsonb_set(schema, '{@id}', to_jsonb(fleet_internal.dtdl_v1_id(schema ->> '@id')));
    END IF;
    -- (an inline interface, in a body part v1 and part v2)
    IF schema -> '@type' = '"Interface"' OR schema -> '@type' @> '["Interface"]' THEN
        RETURN schema || jsonb_build_object('contents', fleet_internal.dtdl_v1_contents(schema -> 'contents'))
               || CASE WHEN jsonb_typeof(schema -> 'schemas') = 'array'
                       THEN jsonb_build_object('schemas', (SELECT jsonb_agg(fleet_internal.dtdl_v1_schema(x) ORDER BY n)
                                                             FROM jsonb_array_elements(schema -> 'schemas') WITH ORDINALITY y(x, n)))
                       ELSE '{}' END;
    END IF;
    IF (schema -> '@type' = '"Enum"' OR schema -> '@type' @> '["Enum"]') AND NOT schema ? 'valueSchema' THEN
        schema := schema || jsonb_build_object('valueSchema',
            CASE WHEN NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(schema -> 'enumValues', '[]')) v
                                   WHERE jsonb_typeof(v -> 'enumValue') <> 'number') THEN 'integer' ELSE 'string' END);
    END IF;
    IF jsonb_typeof(schema -> 'fields') = 'array' THEN
        schema := jsonb_set(schema, '{fields}', (SELECT coalesce(jsonb_agg(CASE WHEN f ? 'schema'
                                                                                THEN jsonb_set(f, '{schema}', fleet_internal.dtdl_v1_schema(f -> 'schema'))
                                                                                ELSE f END ORDER BY n), '[]')
                                                   FROM jsonb_array_elements(schema -> 'fields') WITH ORDINALITY x(f, n)));
    END IF;
    IF schema ? 'elementSchema' THEN
        schema := jsonb_set(schema, '{elementSchema}', fleet_internal.dtdl_v1_schema(schema -> 'elementSchema'));
    END IF;
    IF jsonb_typeof(schema -> 'mapValue') = 'object' AND schema -> 'mapValue' ? 'schema' THEN
        schema := jsonb_set(schema, '{mapValue,schema}', fleet_internal.dtdl_v1_schema(schema #> '{mapValue,schema}'));
    END IF;
    RETURN schema;
END;
$$;

-- The DTMI a DTDL v1 URN id is read under (v2 ids are DTMIs).
CREATE FUNCTION fleet_internal.dtdl_v1_id(urn text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'dtmi:iotcentral:v1:u' || md5(urn) || ';1' $$;

-- A DTDL v1 interface (or the contents of a capability model) as DTDL v2:
-- "SemanticType/X" types become X, a URN id a DTMI of its own (v2 ids are
-- DTMIs), schemas as dtdl_v1_schema().
CREATE FUNCTION fleet_internal.dtdl_v1_contents(contents jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(
        c || CASE WHEN c ? '@type'
                  THEN jsonb_build_object('@type', (SELECT jsonb_agg(regexp_replace(t, '^SemanticType/', '') ORDER BY n)
                                                      FROM jsonb_array_elements_text(CASE jsonb_typeof(c -> '@type') WHEN 'array' THEN c -> '@type'
                                                                                          ELSE jsonb_build_array(c -> '@type') END)
                                                           WITH ORDINALITY y(t, n)))
                  ELSE '{}' END
          || CASE WHEN c ? 'schema' THEN jsonb_build_object('schema', fleet_internal.dtdl_v1_schema(c -> 'schema')) ELSE '{}' END
          || CASE WHEN jsonb_typeof(c -> 'request') = 'object' AND c -> 'request' ? 'schema'
                  THEN jsonb_build_object('request', jsonb_set(c -> 'request', '{schema}', fleet_internal.dtdl_v1_schema(c #> '{request,schema}')))
                  ELSE '{}' END
          || CASE WHEN jsonb_typeof(c -> 'response') = 'object' AND c -> 'response' ? 'schema'
                  THEN jsonb_build_object('response', jsonb_set(c -> 'response', '{schema}', fleet_internal.dtdl_v1_schema(c #> '{response,schema}')))
                  ELSE '{}' END
        ORDER BY n), '[]')
      FROM jsonb_array_elements(CASE WHEN jsonb_typeof(contents) = 'array' THEN contents ELSE '[]' END) WITH ORDINALITY x(c, n)
$$;

-- IoT Central's DTDL v1 capability model (its preview API's templates) as
-- the DTDL v2 interface it became: each interface it "implements" a
-- Component of that name, inline interfaces with DTMIs made from their URN
-- ids, contents as dtdl_v1_contents().
CREATE FUNCTION fleet_internal.dtdl_v1_capability_model(model jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (model - '{@type,@context,implements,contents,schemas}'::text[])
           || jsonb_build_object(
                  '@type', 'Interface',
                  '@context', '["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"]'::jsonb,
                  'contents', fleet_internal.dtdl_v1_contents(model -> 'contents')
                              || coalesce((SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                                               '@type', 'Component', 'name', i -> 'name', 'displayName', i -> 'displayName',
                                               -- (an interface without an id gets one of its model and name,
                                               -- so two templates' "info" interfaces stay apart)
                                               'schema', fleet_internal.dtdl_v1_schema(
                                                             CASE WHEN jsonb_typeof(i -> 'schema') = 'object'
                                                                  THEN (i -> 'schema')
                                                                       || jsonb_build_object('@type', 'Interface',
                                                                                             '@id', coalesce(i #>> '{schema,@id}',
                                                                                                             (model ->> '@id') || '/' || (i ->> 'name')))
                                                                  ELSE i -> 'schema' END))) ORDER BY n)
                                             FROM jsonb_array_elements(CASE WHEN jsonb_typeof(model -> 'implements') = 'array'
                                                                            THEN model -> 'implements' ELSE '[]' END) WITH ORDINALITY x(i, n)),
                                           '[]'))
           || CASE WHEN jsonb_typeof(model -> 'schemas') = 'array'
                   THEN jsonb_build_object('schemas', (SELECT jsonb_agg(fleet_internal.dtdl_v1_schema(x) ORDER BY n)
                                                         FROM jsonb_array_elements(model -> 'schemas') WITH ORDINALITY y(x, n)))
                   ELSE '{}' END
$$;

CREATE FUNCTION fleet.import_template(model jsonb, template_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
-- SECURITY DEFINER, as every function that writes (src/sql/access.sql);
-- for root's administrators, checked first.  Without JIT: the planner
-- guesses 100 rows per JSON array, and compiling the "extends" queries
-- for that guess took 1.5 s of each import of a handful of rows.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    wrapped     boolean := jsonb_typeof(model) = 'object' AND model ? 'capabilityModel';
    given       jsonb;          -- the interfaces as given
    interfaces  jsonb := '[]';  -- as parsed: inline ones hoisted
    stored      jsonb := '[]';  -- as each row keeps it
    interface   jsonb;
    n_interface int := 0;
    ids         text[] := '{}';
    contents    fleet.template_contents[] := '{}';
    root        text;
    problem     record;
    existing    jsonb;
    v2_context  jsonb;
    edges       jsonb;                            -- [{child, parent}]: what "extends" names
    ancestors   jsonb;                            -- [{child, parent, depth}]: what each one inherits from
    inherited   fleet.template_contents[];
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'importing a device template');
    IF wrapped THEN
        PERFORM fleet_internal.refuse_unknown_keys(model,
            '{@id,@type,@context,displayName,description,capabilityModel,etag,id,deploymentManifest,types,solutionModel}',
            'the device template');
        -- IoT Central's preview API held DTDL v1 capability models: read as
        -- the DTDL v2 they became when IoT Central moved its templates on
        IF model #> '{capabilityModel,@type}' IN ('"CapabilityModel"', '["CapabilityModel"]')
           OR model #> '{capabilityModel,@context}' @> '["http://azureiot.com/v1/contexts/IoTModel.json"]' THEN
            model := jsonb_set(model, '{capabilityModel}', fleet_internal.dtdl_v1_capability_model(model -> 'capabilityModel'));
        END IF;
        -- IoT Central's 1.0 API wrote "id" and "types" for "@id" and
        -- "@type", with a "solutionModel" beside the model: taken when it
        -- holds nothing (its cloud properties and overrides moved into the
        -- model since)
        IF model ? 'solutionModel'
           AND (jsonb_typeof(model -> 'solutionModel') IS DISTINCT FROM 'object'
                OR EXISTS (SELECT 1 FROM jsonb_each(model -> 'solutionModel') e
                            WHERE e.key NOT IN ('@id', '@type')
                              AND e.value NOT IN ('[]', '{}', 'null'))) THEN
            RAISE EXCEPTION 'the solutionModel of the device template has content'
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'IoT Central''s 1.0 API kept cloud properties, initial values and overrides there.',
                      HINT = 'Get the template with IoT Central''s REST API 2022-05-31 or later, where they are in the capabilityModel.';
        END IF;
        IF model ? 'types' AND NOT model ? '@type' THEN
            model := model || jsonb_build_object('@type', model -> 'types');
        END IF;
        IF model ? 'id' AND NOT model ? '@id' AND jsonb_typeof(model -> 'id') = 'string' THEN
            model := model || jsonb_build_object('@id', model -> 'id');
        END IF;
        model := model - '{types,solutionModel}'::text[];
        IF template_id IS NULL AND jsonb_typeof(model -> '@id') = 'string' THEN
            template_id := model ->> '@id';
        END IF;
        IF template_id IS NULL OR template_id !~ '^[^[:space:]]{1,255}$' THEN
            RAISE EXCEPTION 'device template id % is not an id', coalesce(quote_literal(template_id), '(missing)')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass template_id, or give the template an "@id": 1 to 255 characters without spaces, such as "dtmi:modelDefinition:thermostat".';
        END IF;
        IF jsonb_typeof(model -> 'capabilityModel') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'the "capabilityModel" of device template "%" is not an Interface object', template_id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- IoT Central's templates are DTDL v2 with its extensions
        v2_context := coalesce(model -> '@context', '["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"]');
        given := jsonb_build_array(model -> 'capabilityModel');
        -- its capabilityModel's id is not what anything names (the template
        -- id is): IoT Central keeps URN ids there, which are parsed under a
        -- DTMI of the template's
        IF jsonb_typeof(given #> '{0,@id}') = 'string' AND NOT fleet_internal.dtdl_is_dtmi(given #>> '{0,@id}') THEN
            given := jsonb_set(given, '{0,@id}', to_jsonb('dtmi:iotcentral:template:t' || md5(template_id) || ';1'));
        END IF;
    ELSE
        IF template_id IS NOT NULL THEN
            RAISE EXCEPTION 'a DTDL Interface is its own template: its id is its "@id"'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave template_id out, or wrap the model as IoT Central does: {"@type": ["ModelDefinition", "DeviceModel"], "capabilityModel": ...}.';
        END IF;
        CASE jsonb_typeof(model)
        WHEN 'object' THEN
            given := jsonb_build_array(model);
        WHEN 'array' THEN
            given := model;
        ELSE
            RAISE EXCEPTION 'a DTDL model must be an Interface object or an array of Interfaces'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('The model is %s.', coalesce(jsonb_typeof(model), 'NULL')),
                      HINT = 'Pass the JSON of the model file, for example fleet.import_template(pg_read_file(''thermostat-1.json'')::jsonb), or IoT Central''s device template.';
        END CASE;
    END IF;
    IF jsonb_array_length(given) = 0 THEN
        RAISE EXCEPTION 'the DTDL model is an empty array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass at least one Interface.';
    END IF;

    SELECT e ->> '@id' AS id INTO problem FROM jsonb_array_elements(given) e
     WHERE jsonb_typeof(e -> '@id') = 'string' GROUP BY e ->> '@id' HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'interface "%" appears twice in the model', problem.id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- inline interfaces become interfaces of their own; a top-level one is
    -- kept as given, an inline one as hoisted
    -- (an inline interface met twice, extended along two paths, is kept
    -- once; the same id with other content is refused below)
    FOR interface IN SELECT e FROM jsonb_array_elements(given) e LOOP
        existing := fleet_internal.dtdl_hoist_inline(interface, v2_context);
        interfaces := interfaces || (existing -> 0);
        stored := stored || jsonb_build_array(interface);
        FOR n_interface IN 1 .. jsonb_array_length(existing) - 1 LOOP
            CONTINUE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(interfaces) e WHERE e = existing -> n_interface);
            interfaces := interfaces || (existing -> n_interface);
            stored := stored || (existing -> n_interface);
        END LOOP;
    END LOOP;
    n_interface := 0;

    FOR interface IN SELECT e FROM jsonb_array_elements(interfaces) e LOOP
        n_interface := n_interface + 1;
        contents := contents || ARRAY(
            SELECT c FROM fleet_internal.dtdl_interface_contents(
                interface,
                CASE WHEN wrapped AND n_interface = 1 THEN format('the capabilityModel of device template "%s"', template_id)
                     WHEN jsonb_typeof(model) = 'array' THEN format('element %s of the model array', n_interface)
                     WHEN n_interface > 1 THEN format('inline interface %s of the model', coalesce(interface -> '@id', '"(missing @id)"'))
                     ELSE 'the model' END) c);
        IF (interface ->> '@id') = ANY (ids) THEN
            RAISE EXCEPTION 'interface "%" appears twice in the model', interface ->> '@id'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        ids := ids || (interface ->> '@id');
    END LOOP;

    -- "extends": every interface named is in this model or imported, and
    -- the extended contents, theirs included (ten levels at most), are
    -- the extending interface's too
    edges := coalesce((SELECT jsonb_agg(jsonb_build_object('child', i ->> '@id', 'parent', e))
                         FROM jsonb_array_elements(interfaces) i,
                              jsonb_array_elements_text(CASE jsonb_typeof(i -> 'extends') WHEN 'array' THEN i -> 'extends'
                                                             WHEN 'string' THEN jsonb_build_array(i -> 'extends') ELSE '[]' END) e),
                      '[]');
    SELECT x.child AS interface, x.parent AS extended INTO problem
      FROM jsonb_to_recordset(edges) AS x(child text, parent text)
     WHERE x.parent <> ALL (ids) AND NOT EXISTS (SELECT 1 FROM fleet.device_templates t WHERE t.id = x.parent)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'interface "%" extends unknown interface "%"', problem.interface, problem.extended
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Include that interface in the same array, or import it first.';
    END IF;
    -- every interface each one extends, directly or not (a cycle stops at
    -- the eleventh level, and is refused there)
    ancestors := coalesce((
        WITH RECURSIVE edge AS (
            SELECT x.child, x.parent FROM jsonb_to_recordset(edges) AS x(child text, parent text)
        ), ancestor AS (
            SELECT e.child, e.parent, 1 AS depth FROM edge e
            UNION
            SELECT a.child, e.parent, a.depth + 1 FROM ancestor a JOIN edge e ON e.child = a.parent
             WHERE a.depth <= 10 AND a.child <> a.parent
        )
        SELECT jsonb_agg(to_jsonb(a)) FROM ancestor a), '[]');
    SELECT a.child INTO problem
      FROM jsonb_to_recordset(ancestors) AS a(child text, parent text, depth int)
     WHERE a.child = a.parent OR a.depth > 10
     ORDER BY a.child
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'interface "%" extends itself, or more than 10 levels deep', problem.child
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'DTDL allows "extends" chains without cycles, at most 10 deep.';
    END IF;
    -- what each interface inherits, as rows of its own: an ancestor of this
    -- model gives its own contents, an imported one its rows (which hold
    -- what it inherited); every distinct definition of a name is kept, for
    -- the check below
    inherited := ARRAY(
        SELECT DISTINCT jsonb_populate_record(NULL::fleet.template_contents,
                                              to_jsonb(c) || jsonb_build_object('template_id', a.child))
          FROM (SELECT DISTINCT x.child, x.parent
                  FROM jsonb_to_recordset(ancestors) AS x(child text, parent text)) a,
               LATERAL (SELECT o.* FROM unnest(contents) o WHERE o.template_id = a.parent
                        UNION ALL
                        SELECT t.* FROM fleet.template_contents t
                         WHERE t.template_id = a.parent AND a.parent <> ALL (ids)) c);
    SELECT c.template_id AS child, c.name INTO problem
      FROM unnest(contents || inherited) c
     GROUP BY c.template_id, c.name
    HAVING count(DISTINCT (to_jsonb(c) - 'template_id')) > 1
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'interface "%" declares "%" more than once through "extends"', problem.child, problem.name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'DTDL names are unique across an interface and the interfaces it extends: rename one of them.';
    END IF;
    contents := contents || ARRAY(SELECT DISTINCT ON (h.template_id, h.name) h FROM unnest(inherited) h
                                   WHERE NOT EXISTS (SELECT 1 FROM unnest(contents) own
                                                      WHERE own.template_id = h.template_id AND own.name = h.name));

    -- every component names an interface of this model or an imported one,
    -- and (DTDL v2) that interface has no components of its own
    SELECT c.template_id, c.name, c.component_interface INTO problem
      FROM unnest(contents) c
     WHERE c.capability = 'component'
       AND c.component_interface <> ALL (ids)
       AND NOT EXISTS (SELECT 1 FROM fleet.device_templates t WHERE t.id = c.component_interface)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'component "%" of interface "%" refers to unknown interface "%"',
                        problem.name, problem.template_id, problem.component_interface
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Include that interface in the same array, or import it first.';
    END IF;
    SELECT c.template_id, c.name, c.component_interface INTO problem
      FROM unnest(contents) c
     WHERE c.capability = 'component'
       AND (EXISTS (SELECT 1 FROM unnest(contents) n
                     WHERE n.template_id = c.component_interface AND n.capability = 'component')
            OR EXISTS (SELECT 1 FROM fleet.template_contents n
                        WHERE n.template_id = c.component_interface AND n.capability = 'component'))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'component "%" of interface "%" uses interface "%", which has components itself',
                        problem.name, problem.template_id, problem.component_interface
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'DTDL v2 components do not nest: give the inner components to the root interface.';
    END IF;

    -- the root: the first interface that no other one uses as a component
    -- or extends; a wrapped template's is its capabilityModel
    SELECT i.id INTO root
      FROM unnest(ids) WITH ORDINALITY AS i(id, n)
     WHERE NOT EXISTS (SELECT 1 FROM unnest(contents) c
                        WHERE c.capability = 'component' AND c.component_interface = i.id)
       AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(interfaces) x
                        WHERE x -> 'extends' = to_jsonb(i.id) OR x -> 'extends' @> jsonb_build_array(i.id))
     ORDER BY i.n
     LIMIT 1;
    IF root IS NULL THEN
        RAISE EXCEPTION 'the interfaces of the model use each other as components in a cycle'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF wrapped THEN
        -- the template is its own row, with its capabilityModel's contents
        root := interfaces -> 0 ->> '@id';
        IF import_template.template_id = ANY (ids) AND import_template.template_id <> root THEN
            RAISE EXCEPTION 'device template "%" has the id of one of its interfaces', template_id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        contents := ARRAY(SELECT jsonb_populate_record(NULL::fleet.template_contents,
                                                       to_jsonb(c) || jsonb_build_object('template_id', import_template.template_id))
                            FROM unnest(contents) c WHERE c.template_id = root)
                    || ARRAY(SELECT c FROM unnest(contents) c WHERE c.template_id <> root);
        ids[1] := template_id;
        stored := jsonb_set(stored, '{0}', model || jsonb_build_object('@id', template_id));
        interfaces := jsonb_set(interfaces, '{0}', model || jsonb_strip_nulls(jsonb_build_object(
            'displayName', coalesce(model -> 'displayName', model #> '{capabilityModel,displayName}'),
            'description', coalesce(model -> 'description', model #> '{capabilityModel,description}'))));
        root := template_id;
    END IF;

    -- models are immutable: a re-import must be identical
    FOR n_interface IN 1 .. cardinality(ids) LOOP
        SELECT t.model INTO existing FROM fleet.device_templates t WHERE t.id = ids[n_interface];
        IF FOUND AND existing <> stored -> (n_interface - 1) THEN
            RAISE EXCEPTION 'device template "%" already exists with different content', ids[n_interface]
                USING ERRCODE = 'duplicate_object',
                      HINT = 'DTDL models are immutable: import the changed model under a new version, for example ";2" instead of ";1".';
        END IF;
    END LOOP;

    INSERT INTO fleet.device_templates (id, display_name, description, model)
    SELECT i.id,
           fleet_internal.dtdl_text(interfaces -> (i.n::int - 1) -> 'displayName', format('the displayName of "%s"', i.id)),
           fleet_internal.dtdl_text(interfaces -> (i.n::int - 1) -> 'description', format('the description of "%s"', i.id)),
           stored -> (i.n::int - 1)
      FROM unnest(ids) WITH ORDINALITY AS i(id, n)
    ON CONFLICT (id) DO NOTHING;

    INSERT INTO fleet.template_contents
    SELECT c.* FROM unnest(contents) c
    ON CONFLICT ON CONSTRAINT template_contents_pkey DO NOTHING;

    RETURN fleet.get_template(root);
END;
$$;

COMMENT ON FUNCTION fleet.import_template(jsonb, text) IS 'Imports a DTDL v2 Interface, an array of Interfaces joined by Components, or IoT Central''s device template ({"@id", "@type", "displayName", "capabilityModel"}); returns the template as fleet.get_template() shows it';

-- The template, or "does not exist".  Templates are shared by the whole
-- application: everyone sees them.
CREATE FUNCTION fleet_internal.require_template(template text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.device_templates t WHERE t.id = template) THEN
        PERFORM fleet_internal.refuse_missing('device template', template,
            'Import it with fleet.import_template(), or see the existing ones in fleet.device_templates.');
    END IF;
    RETURN template;
END;
$$;

-- The template as IoT Central's REST API shows one: "@id", "@type",
-- displayName, description, its model as capabilityModel, and an etag; "id"
-- is pg_fleet's.  A template imported in IoT Central's form comes back as
-- it was given (a DTDL v1 one as the v2 it was read as, with the cloud
-- properties added since).
CREATE FUNCTION fleet.get_template(template_id text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(t.model -> 'capabilityModel') = 'object' THEN t.model
                ELSE jsonb_build_object('@type', '["ModelDefinition", "DeviceModel"]'::jsonb, 'capabilityModel', t.model) END
           || jsonb_strip_nulls(jsonb_build_object('@id', t.id, 'id', t.id, 'displayName', t.display_name,
                                                   'description', t.description,
                                                   'etag', fleet_internal.etag(jsonb_build_array(t.model, t.display_name, t.description))))
      FROM fleet.device_templates t
     WHERE t.id = fleet_internal.require_template(template_id)
$$;
COMMENT ON FUNCTION fleet.get_template(text) IS 'The device template as IoT Central''s REST API shows it: @id, @type, displayName, description, etag, and its DTDL model as capabilityModel';

-- Changes how a template is named ({"displayName", "description"}).  Its
-- model is immutable, as DTDL's are: import a new version to change it.
CREATE FUNCTION fleet.update_template(template_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    label text := format('device template "%s"', template_id);
    field text;
    current_template jsonb;
    new_model jsonb;
    added     jsonb;
    n_added   bigint;
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'changing a device template');
    PERFORM fleet_internal.require_template(template_id);
    -- IoT Central's PATCH is a merge patch of the template, often the whole
    -- of it: its model must stay the one it has, the rest is what changes
    -- (If-Match on "etag")
    PERFORM 1 FROM fleet.device_templates t WHERE t.id = update_template.template_id FOR UPDATE;
    IF jsonb_typeof(changes) = 'object' THEN
        current_template := fleet.get_template(template_id);
        PERFORM fleet_internal.require_etag(label, changes -> 'etag', current_template ->> 'etag');
        new_model := fleet_internal.json_merge_patch(current_template -> 'capabilityModel', changes -> 'capabilityModel');
        added := fleet_internal.added_cloud_properties(current_template -> 'capabilityModel', new_model);
        -- (only a template in IoT Central's form, which no other template
        -- uses as a component or extends: a DTDL interface is immutable,
        -- and what others copied of it would not change with it)
        IF changes ? 'capabilityModel' AND new_model IS DISTINCT FROM current_template -> 'capabilityModel'
           AND added IS NOT NULL
           AND (SELECT t.model ? 'capabilityModel' FROM fleet.device_templates t WHERE t.id = update_template.template_id)
           AND NOT EXISTS (SELECT 1 FROM fleet.template_contents c
                            WHERE c.component_interface = update_template.template_id AND c.template_id <> update_template.template_id)
           AND NOT EXISTS (SELECT 1 FROM fleet.device_templates t
                            WHERE t.id <> update_template.template_id
                              AND (t.model -> 'extends' = to_jsonb(update_template.template_id)
                                   OR t.model -> 'extends' @> jsonb_build_array(update_template.template_id)
                                   OR t.model #> '{capabilityModel,extends}' = to_jsonb(update_template.template_id)
                                   OR t.model #> '{capabilityModel,extends}' @> jsonb_build_array(update_template.template_id))) THEN
            -- cloud properties added, as IoT Central lets a published template
            -- have them: the device's model is the same
            INSERT INTO fleet.template_contents
            SELECT (jsonb_populate_record(NULL::fleet.template_contents,
                                          to_jsonb(c) || jsonb_build_object('template_id', update_template.template_id))).*
              FROM fleet_internal.dtdl_interface_contents(
                       -- (parsed as import_template parsed the model: under a DTMI
                       -- of the template's when its id is a URN, with its schemas)
                       jsonb_strip_nulls(jsonb_build_object(
                           '@id', CASE WHEN fleet_internal.dtdl_is_dtmi(new_model ->> '@id') THEN new_model ->> '@id'
                                       ELSE 'dtmi:iotcentral:template:t' || md5(template_id) || ';1' END,
                           '@type', 'Interface',
                           '@context', coalesce(new_model -> '@context', current_template -> '@context',
                                                '["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"]'),
                           'schemas', new_model -> 'schemas',
                           'contents', added)),
                       format('the cloud properties added to %s', label)) c
            ON CONFLICT ON CONSTRAINT template_contents_pkey DO NOTHING;
            GET DIAGNOSTICS n_added = ROW_COUNT;
            IF n_added < jsonb_array_length(added) THEN
                RAISE EXCEPTION 'a cloud property added to % has the name of one it has', label
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Names are unique in an interface: give the new cloud property another name.';
            END IF;
            UPDATE fleet.device_templates t SET model = jsonb_set(t.model, '{capabilityModel}', new_model)
             WHERE t.id = update_template.template_id;
        ELSIF changes ? 'capabilityModel' AND new_model IS DISTINCT FROM current_template -> 'capabilityModel' THEN
            RAISE EXCEPTION 'the model of % cannot change', label
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'Its capabilityModel differs from the one imported.',
                      HINT = 'DTDL models are immutable in pg_fleet (cloud properties may be added): import the changed model as a new template, and migrate devices to it with a deviceTemplateMigration job.';
        END IF;
        IF changes ? '@id' AND changes -> '@id' IS DISTINCT FROM to_jsonb(template_id) THEN
            RAISE EXCEPTION 'the id of % cannot change', label USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- (the DTDL context a body may carry is the model's, read-only here)
        changes := changes - '{@id,@type,@context,capabilityModel,etag,id}'::text[];
    END IF;
    PERFORM fleet_internal.require_changes(changes, '{displayName,description}', label);
    FOREACH field IN ARRAY ARRAY['displayName', 'description'] LOOP
        IF changes ? field AND jsonb_typeof(changes -> field) NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'the % of % must be a string', field, label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    UPDATE fleet.device_templates t
       SET display_name = CASE WHEN changes ? 'displayName' THEN changes ->> 'displayName' ELSE t.display_name END,
           description = CASE WHEN changes ? 'description' THEN changes ->> 'description' ELSE t.description END
     WHERE t.id = update_template.template_id;
    RETURN fleet.get_template(template_id);
END;
$$;
COMMENT ON FUNCTION fleet.update_template(text, jsonb) IS 'Changes a device template''s displayName or description, or adds cloud properties to IoT Central''s form of template (its device model is immutable), as a merge patch; returns it';

-- The cloud properties a new capabilityModel adds to an old one, when that
-- is all it changes (every other key and every old content the same, in
-- order, the new contents after them); else NULL.  Cloud properties are
-- the operator's, never the device's: IoT Central adds them to a
-- published template, whose device model stays as it was.
CREATE FUNCTION fleet_internal.added_cloud_properties(old_model jsonb, new_model jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(old_model) = 'object' AND jsonb_typeof(new_model) = 'object'
                     AND (old_model - 'contents') = (new_model - 'contents')
                     AND jsonb_typeof(coalesce(new_model -> 'contents', '[]')) = 'array'
                     AND jsonb_array_length(coalesce(new_model -> 'contents', '[]')) > jsonb_array_length(coalesce(old_model -> 'contents', '[]'))
                     -- the old contents, unchanged, first
                     AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(old_model -> 'contents', '[]')) WITH ORDINALITY o(e, n)
                                      WHERE new_model -> 'contents' -> (o.n::int - 1) IS DISTINCT FROM o.e)
                     -- then only cloud properties
                     AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(new_model -> 'contents') WITH ORDINALITY a(e, n)
                                      WHERE a.n > jsonb_array_length(coalesce(old_model -> 'contents', '[]'))
                                        AND NOT coalesce(a.e -> '@type' @> '["Cloud"]', false))
                THEN (SELECT jsonb_agg(a.e ORDER BY a.n)
                        FROM jsonb_array_elements(new_model -> 'contents') WITH ORDINALITY a(e, n)
                       WHERE a.n > jsonb_array_length(coalesce(old_model -> 'contents', '[]')))
           END
$$;

-- Deletes a template nothing uses: no device, device group, other
-- template (as a component), unfinished job or scheduled job.
CREATE FUNCTION fleet.delete_template(template_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uses text[];
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'deleting a device template');
    PERFORM fleet_internal.require_template(template_id);
    PERFORM 1 FROM fleet.device_templates t WHERE t.id = delete_template.template_id FOR UPDATE;
    SELECT array_remove(ARRAY[
               (SELECT format('%s devices', count(*)) FROM fleet.devices d
                 WHERE d.template_id = delete_template.template_id HAVING count(*) > 0),
               (SELECT format('%s device groups', count(*)) FROM fleet.device_groups g
                 WHERE g.template_id = delete_template.template_id HAVING count(*) > 0),
               (SELECT format('%s templates, as a component', count(*)) FROM fleet.template_contents c
                 WHERE c.component_interface = delete_template.template_id
                   AND c.template_id <> delete_template.template_id HAVING count(*) > 0),
               (SELECT format('%s unfinished jobs', u.jobs) WHERE u.jobs > 0),
               (SELECT format('%s scheduled jobs', u.schedules) WHERE u.schedules > 0)], NULL)
      INTO uses
      FROM fleet_internal.job_data_users('{target,template}', delete_template.template_id) u;
    IF cardinality(uses) > 0 THEN
        PERFORM fleet_internal.refuse_in_use('device template', template_id,
            format('It is used by %s.', array_to_string(uses, ', ')), 'Delete or change those first.');
    END IF;
    DELETE FROM fleet.device_templates t WHERE t.id = delete_template.template_id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_template(text) IS 'Deletes a device template that no device, group, other template, unfinished job or scheduled job uses';

-- src/sql/edge_manifests.sql
-- IoT Edge deployment manifests, assigned to edge devices by manifest jobs.
-- Shared by the whole application, as templates are: root's
-- administrators write them, everyone reads them.

-- Refuses a manifest IoT Edge would not deploy: it must configure the two
-- system modules' desired properties.
CREATE FUNCTION fleet_internal.require_manifest_content(manifest_id text, manifest jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    module text;
BEGIN
    IF jsonb_typeof(manifest -> 'modulesContent') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'edge manifest "%" has no "modulesContent" object', manifest_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass an IoT Edge deployment manifest: {"modulesContent": {"$edgeAgent": {"properties.desired": {...}}, "$edgeHub": {"properties.desired": {...}}}}.';
    END IF;
    FOREACH module IN ARRAY ARRAY['$edgeAgent', '$edgeHub'] LOOP
        IF jsonb_typeof(manifest -> 'modulesContent' -> module) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'edge manifest "%" has no "%" module', manifest_id, module
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Every deployment manifest configures the $edgeAgent and $edgeHub system modules.';
        END IF;
        IF jsonb_typeof(manifest -> 'modulesContent' -> module -> 'properties.desired') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'module "%" of edge manifest "%" has no "properties.desired" object', module, manifest_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write the module''s desired properties as "properties.desired": {...}.';
        END IF;
    END LOOP;
    RETURN manifest;
END;
$$;

-- The manifest, or "does not exist".
CREATE FUNCTION fleet_internal.require_edge_manifest(manifest_id text)
RETURNS fleet.edge_manifests
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m fleet.edge_manifests;
BEGIN
    SELECT em.* INTO m FROM fleet.edge_manifests em WHERE em.id = require_edge_manifest.manifest_id;
    IF NOT FOUND THEN
        PERFORM fleet_internal.refuse_missing('edge manifest', manifest_id,
            'Create it with fleet.create_edge_manifest(), or see the existing ones in fleet.edge_manifests.');
    END IF;
    RETURN m;
END;
$$;

CREATE FUNCTION fleet.get_edge_manifest(manifest_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m fleet.edge_manifests := fleet_internal.require_edge_manifest(manifest_id);
BEGIN
    RETURN jsonb_strip_nulls(jsonb_build_object('id', m.id, 'displayName', m.display_name, 'data', m.manifest,
                                                -- (only those the caller sees)
                                                'organizations', CASE WHEN m.organizations IS NOT NULL THEN
                                                                     to_jsonb(ARRAY(SELECT o FROM unnest(m.organizations) o
                                                                                     WHERE fleet_internal.sees(fleet_internal.calling_role(), o))) END,
                                                'etag', fleet_internal.etag(jsonb_build_array(m.display_name, m.manifest, m.organizations))));
END;
$$;
COMMENT ON FUNCTION fleet.get_edge_manifest(text) IS 'The edge manifest as IoT Central''s REST API shows a deployment manifest: id, displayName, data';

-- SECURITY DEFINER, as every function that writes (src/sql/access.sql);
-- for root's administrators, checked first.
CREATE FUNCTION fleet.create_edge_manifest(manifest_id text, display_name text, manifest jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'creating an edge manifest');
    PERFORM fleet_internal.check_new_object('edge manifest', manifest_id, display_name, 255);
    PERFORM fleet_internal.require_manifest_content(manifest_id, manifest);
    IF EXISTS (SELECT 1 FROM fleet.edge_manifests m WHERE m.id = create_edge_manifest.manifest_id) THEN
        PERFORM fleet_internal.refuse_existing('edge manifest', manifest_id);
    END IF;
    INSERT INTO fleet.edge_manifests (id, display_name, manifest) VALUES (manifest_id, display_name, manifest);
    RETURN fleet.get_edge_manifest(manifest_id);
END;
$$;
COMMENT ON FUNCTION fleet.create_edge_manifest(text, text, jsonb) IS 'Validates and stores an IoT Edge deployment manifest; returns it';

-- Creates a manifest from IoT Central's REST body, as PUT
-- /deploymentManifests/{id} takes it: {"displayName", "data",
-- "organizations"}.  The organizations are checked and kept; a manifest,
-- as a template, serves the whole application.
CREATE FUNCTION fleet.import_edge_manifest(manifest_id text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    label            text := format('edge manifest "%s"', manifest_id);
    organization_ids text[];
BEGIN
    body := fleet_internal.rest_body(body, manifest_id, 'edge manifest', '{id,displayName,data,organizations,etag}',
                                     '{"displayName": ..., "data": {"modulesContent": ...}}');
    IF body ? 'organizations' THEN
        IF jsonb_typeof(body -> 'organizations') <> 'array'
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(body -> 'organizations') o WHERE jsonb_typeof(o) <> 'string') THEN
            RAISE EXCEPTION '"organizations" of % must be an array of organization ids', label
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('It is %s.', body -> 'organizations'),
                      HINT = 'Write "organizations": ["an-organization-id"].';
        END IF;
        organization_ids := ARRAY(SELECT fleet_internal.require_organization(o, fleet_internal.calling_role())
                                 FROM jsonb_array_elements_text(body -> 'organizations') o);
    END IF;
    PERFORM fleet.create_edge_manifest(manifest_id, body ->> 'displayName', body -> 'data');
    UPDATE fleet.edge_manifests m SET organizations = organization_ids WHERE m.id = manifest_id;
    RETURN fleet.get_edge_manifest(manifest_id);
END;
$$;
COMMENT ON FUNCTION fleet.import_edge_manifest(text, jsonb) IS 'Creates an IoT Edge deployment manifest from IoT Central''s REST body ({"displayName", "data", "organizations"}); returns it';

-- Changes a manifest's name or content ({"displayName", "data"}).  Devices
-- that run it keep their deployment until a manifest job assigns it again.
CREATE FUNCTION fleet.update_edge_manifest(manifest_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m     fleet.edge_manifests;
    label text := format('edge manifest "%s"', manifest_id);
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'changing an edge manifest');
    m := fleet_internal.require_edge_manifest(manifest_id);
    -- locked and read again: a merge patch applies to what is there now
    SELECT em.* INTO m FROM fleet.edge_manifests em WHERE em.id = m.id FOR UPDATE;
    PERFORM fleet_internal.require_changes(changes, '{displayName,data}', label);
    IF changes ? 'displayName' THEN
        m.display_name := fleet_internal.changed_display_name(changes, 'edge manifest', m.id, 255);
    END IF;
    IF changes ? 'data' THEN
        -- (a merge patch, as IoT Central's PATCH: a module not named stays)
        m.manifest := fleet_internal.require_manifest_content(m.id, fleet_internal.json_merge_patch(m.manifest, changes -> 'data'));
    END IF;
    UPDATE fleet.edge_manifests em SET display_name = m.display_name, manifest = m.manifest WHERE em.id = m.id;
    RETURN fleet.get_edge_manifest(m.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_edge_manifest(text, jsonb) IS 'Changes an edge manifest''s displayName or content (data, merged as a JSON merge patch); returns it';

-- Deletes a manifest no device runs and no unfinished job or schedule
-- would assign.
CREATE FUNCTION fleet.delete_edge_manifest(manifest_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m     fleet.edge_manifests;
    users bigint;
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'deleting an edge manifest');
    m := fleet_internal.require_edge_manifest(manifest_id);
    PERFORM 1 FROM fleet.edge_manifests em WHERE em.id = m.id FOR UPDATE;
    SELECT u.jobs + u.schedules INTO users FROM fleet_internal.job_data_users('{manifest}', m.id) u;
    IF users > 0 THEN
        PERFORM fleet_internal.refuse_in_use('edge manifest', m.id,
            format('%s unfinished jobs or scheduled jobs would assign it.', users),
            'Delete or finish those jobs and scheduled jobs first.');
    END IF;
    SELECT count(*) INTO users FROM fleet.devices d WHERE d.manifest_id = m.id;
    IF users > 0 THEN
        PERFORM fleet_internal.refuse_in_use('edge manifest', m.id, format('%s devices refer to it.', users),
                                             'Move or delete those devices first.');
    END IF;
    DELETE FROM fleet.edge_manifests em WHERE em.id = m.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_edge_manifest(text) IS 'Deletes an edge manifest that no device runs and no unfinished job or scheduled job would assign';

-- src/sql/devices.sql
-- The device registry.
--
-- fleet.devices has no foreign keys: they are per-row triggers, which would
-- dominate the cost of importing a million devices and stand in the way of
-- distributing the table later (DESIGN.md section 7).  Every function that
-- writes devices checks what they refer to, and the functions that delete a
-- template, organization or edge manifest refuse while devices use it.  (No
-- trigger either: Citus allows none on distributed and reference tables.)


-- The device, or "does not exist" unless the role sees it.
CREATE FUNCTION fleet_internal.visible_device(device_id text, role_name name)
RETURNS fleet.devices
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    device fleet.devices;
BEGIN
    SELECT d.* INTO device FROM fleet.devices d WHERE d.id = visible_device.device_id;
    IF NOT FOUND OR NOT fleet_internal.sees(role_name, device.organization_id) THEN
        PERFORM fleet_internal.refuse_missing('device', device_id);
    END IF;
    RETURN device;
END;
$$;

-- The device as IoT Central's REST API shows it, with its twin-shaped
-- properties: fleet.device_document().
CREATE FUNCTION fleet.get_device(device_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d fleet.devices := fleet_internal.visible_device(device_id, fleet_internal.calling_role());
BEGIN
    RETURN fleet.device_document(d) || jsonb_build_object('enrollmentGroup', fleet_internal.device_enrollment_group(d.id));
END;
$$;
COMMENT ON FUNCTION fleet.get_device(text) IS 'The device as JSON: id, displayName, template, organization, simulated, provisioned, edge, manifest, properties, reported, cloudProperties, and the enrollmentGroup its keys derive from';

-- SECURITY DEFINER, as every function that writes: members hold no write
-- privilege on the tables (src/sql/access.sql).
CREATE FUNCTION fleet.create_device(device_id text, display_name text DEFAULT NULL, template text DEFAULT NULL,
                                    organization text DEFAULT NULL, simulated boolean DEFAULT false,
                                    edge boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    problem text;
BEGIN
    problem := fleet_internal.device_identity_problem(device_id, display_name);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A device id has 1 to 128 letters, digits or "-", and no spaces; a device name at most 148 characters.';
    END IF;
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
    PERFORM fleet_internal.require_organization(coalesce(organization, 'root'), caller);
    PERFORM fleet_internal.require_app_role(coalesce(organization, 'root'), 'operator', 'creating a device', caller);
    IF simulated IS NULL OR edge IS NULL THEN
        RAISE EXCEPTION 'simulated and edge must be true or false, not NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    INSERT INTO fleet.devices (id, display_name, template_id, organization_id, simulated, edge)
    VALUES (device_id, coalesce(nullif(display_name, ''), device_id), template, coalesce(organization, 'root'),
            simulated, edge)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        PERFORM fleet_internal.refuse_existing('device', device_id,
                                               'Device ids are unique across the application; choose another id.');
    END IF;
    RETURN fleet.get_device(device_id);
END;
$$;
COMMENT ON FUNCTION fleet.create_device(text, text, text, text, boolean, boolean) IS 'Registers one device and returns it; the name defaults to the id, the organization to root';

-- Changes a device's name, organization, simulated flag or enrollment
-- group ({"displayName", "organization", "simulated", "enrollmentGroup"}).
-- Its template changes through a template migration job, its manifest
-- through a manifest job.  A device that names no group and moves to an
-- organization with enrollment groups of its own gets keys derived from
-- them; one that names a group keeps it, which must be available in the
-- new organization.  Naming a group (null: the organization's default)
-- changes the device's keys, and is for administrators.
CREATE FUNCTION fleet.update_device(device_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    device  fleet.devices := fleet_internal.visible_device(device_id, fleet_internal.calling_role());
    label   text := format('device "%s"', device_id);
    problem text;
BEGIN
    PERFORM fleet_internal.require_changes(changes, '{displayName,organization,simulated,enrollmentGroup}', label);
    PERFORM fleet_internal.require_app_role(device.organization_id, 'operator', 'changing a device', caller);
    -- locked and read again, so that a change made meanwhile is not written back over
    SELECT d.* INTO device FROM fleet.devices d WHERE d.id = device.id FOR UPDATE;
    IF changes ? 'displayName' THEN
        device.display_name := coalesce(nullif(changes ->> 'displayName', ''), device.id);
        problem := fleet_internal.device_identity_problem(device.id, device.display_name);
        IF problem IS NOT NULL OR jsonb_typeof(changes -> 'displayName') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'invalid display name for %', label
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = coalesce(problem, 'It is not a string.'),
                      HINT = 'A device name is a string of at most 148 characters.';
        END IF;
    END IF;
    IF changes ? 'organization' THEN
        IF jsonb_typeof(changes -> 'organization') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'the organization of % must be an organization id', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        device.organization_id := fleet_internal.require_organization(changes ->> 'organization', caller);
        PERFORM fleet_internal.require_app_role(device.organization_id, 'operator', 'moving a device', caller);
    END IF;
    IF changes ? 'simulated' THEN
        IF jsonb_typeof(changes -> 'simulated') IS DISTINCT FROM 'boolean' THEN
            RAISE EXCEPTION '"simulated" of % must be true or false', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        device.simulated := (changes -> 'simulated')::boolean;
    END IF;
    IF changes ? 'enrollmentGroup' THEN
        IF jsonb_typeof(changes -> 'enrollmentGroup') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'the enrollmentGroup of % must be an enrollment group id, or null for its organization''s default', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        device.enrollment_group_id := changes ->> 'enrollmentGroup';
    END IF;
    IF changes ? 'enrollmentGroup' THEN
        -- (the device's keys change)
        PERFORM fleet_internal.require_app_role(device.organization_id, 'administrator', 'choosing a device''s enrollment group', caller);
    END IF;
    IF device.enrollment_group_id IS NOT NULL
       AND (changes ? 'enrollmentGroup' OR changes ? 'organization') THEN
        PERFORM fleet_internal.require_device_enrollment_group(device.enrollment_group_id, device.organization_id, device.edge,
                                                               label, caller, changes ? 'enrollmentGroup');
    END IF;
    UPDATE fleet.devices d
       SET display_name = device.display_name, organization_id = device.organization_id, simulated = device.simulated,
           enrollment_group_id = device.enrollment_group_id
     WHERE d.id = device.id;
    RETURN fleet.get_device(device.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_device(text, jsonb) IS 'Changes a device''s displayName, organization, simulated flag or enrollmentGroup; returns the device';

CREATE FUNCTION fleet.delete_device(device_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    -- a device the caller cannot see "does not exist"; one it only views is refused
    device fleet.devices := fleet_internal.visible_device(device_id, fleet_internal.calling_role());
BEGIN
    PERFORM fleet_internal.require_app_role(device.organization_id, 'operator', 'deleting a device', caller);
    DELETE FROM fleet.devices d WHERE d.id = device.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_device(text) IS 'Deletes a device; jobs that ran on it keep their rows and show it as deleted';

-- The device as one jsonb document, what device group filters are matched
-- against.
-- The same from the device's columns: what statements over many devices
-- call, since Citus sends each shard's statement to a worker, where a
-- whole row of fleet.devices is a row of the shard's own type.
CREATE FUNCTION fleet_internal.device_document_of(
    id text, display_name text, template_id text, organization_id text, simulated boolean,
    connection_state text, last_activity_at timestamptz, edge boolean, manifest_id text,
    properties jsonb, reported jsonb, cloud_properties jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'id', id,
        'displayName', display_name,
        'template', template_id,
        'organization', organization_id,
        'simulated', simulated,
        -- IoT Central's devices are provisioned once they first connect;
        -- one registered here may connect through any gateway, so a
        -- registered device counts
        'provisioned', true,
        -- its connection to the MQTT endpoint (false: never connected)
        'connected', coalesce(connection_state = 'connected', false),
        'lastActivityTime', last_activity_at,
        'edge', edge,
        'manifest', manifest_id,
        'properties', properties,
        'reported', reported,
        'cloudProperties', cloud_properties)
$$;

CREATE FUNCTION fleet.device_document(device fleet.devices)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.device_document_of(device.id, device.display_name, device.template_id,
        device.organization_id, device.simulated, device.connection_state, device.last_activity_at,
        device.edge, device.manifest_id, device.properties, device.reported, device.cloud_properties)
$$;
COMMENT ON FUNCTION fleet.device_document(fleet.devices) IS 'The device as jsonb (id, displayName, template, organization, simulated, provisioned, connected, lastActivityTime, edge, manifest, properties, reported, cloudProperties), matched by device group filters';

-- src/sql/device_group_queries.sql
-- IoT Central's device group query language, translated to what pg_fleet
-- evaluates: a template (which narrows the scan) and a jsonpath predicate
-- over fleet.device_document().
--
--   SELECT * FROM devices WHERE $template = "dtmi:..." AND $provisioned = true
--     AND $simulated = false AND compressor.load > 20 AND CONTAINS($displayName, "hall")
--
-- Conditions are joined by AND or OR (without parentheses, as IoT Central
-- takes them); fields are $id, $displayName, $template, $simulated,
-- $provisioned, $organization, $connected, or a property as "name" or
-- "component.name" (its reported value, or its cloud property value);
-- operators =, ==, !=, <>, <, <=, >, >=, and CONTAINS(field, "text");
-- literals are strings in double or single quotes, numbers, true, false.
-- Anything else is refused with an error naming the part.


-- The query's tokens: quoted strings, operators, parentheses, commas and
-- words, in order.
CREATE FUNCTION fleet_internal.group_query_tokens(query text)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(m[1] ORDER BY n), '{}')
      FROM regexp_matches(query, '("(?:[^"\\]|\\.)*"|''(?:[^''\\]|\\.)*''|<>|[<>!=]=|==|[<>=]|[(),*]|[^\s"''<>!=(),*]+)', 'g')
           WITH ORDINALITY AS t(m, n)
$$;

-- A literal of the query as a jsonpath literal, or NULL when it is none.
CREATE FUNCTION fleet_internal.group_query_literal(token text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
           WHEN token ~ '^"(?:[^"\\]|\\.)*"$' THEN token
           WHEN token ~ '^''(?:[^''\\]|\\.)*''$'
               THEN to_jsonb(replace(substr(token, 2, length(token) - 2), '\''', ''''))::text
           WHEN lower(token) IN ('true', 'false', 'null') THEN lower(token)
           WHEN token ~ '^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$' THEN token
           END
$$;

-- A field of the query as the jsonpath of its value.
CREATE FUNCTION fleet_internal.group_query_field(token text, query text)
RETURNS text[]          -- the paths a property may be at
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE lower(token)
    WHEN '$id' THEN RETURN ARRAY['$.id'];
    WHEN '$displayname' THEN RETURN ARRAY['$.displayName'];
    WHEN '$template' THEN RETURN ARRAY['$.template'];
    WHEN '$simulated' THEN RETURN ARRAY['$.simulated'];
    WHEN '$provisioned' THEN RETURN ARRAY['$.provisioned'];
    WHEN '$organization' THEN RETURN ARRAY['$.organization'];
    WHEN '$connected' THEN RETURN ARRAY['$.connected'];
    ELSE
        NULL;
    END CASE;
    IF token ~ '^[A-Za-z][A-Za-z0-9_]{0,63}(\.[A-Za-z][A-Za-z0-9_]{0,63})?$' THEN
        -- a device reports a property; operators set a cloud property
        RETURN ARRAY['$.reported.' || token, '$.cloudProperties.' || token];
    END IF;
    RAISE EXCEPTION 'device group query field "%" is not supported', token
        USING ERRCODE = 'feature_not_supported',
              DETAIL = format('The query is: %s', query),
              HINT = 'Use $id, $displayName, $template, $simulated, $provisioned, $organization, $connected, or a property as "name" or "component.name".';
END;
$$;

-- Translates a query; template is set when the query asks for one
-- template in a condition every device must meet (then the scan narrows
-- to it), filter holds the rest (NULL: no condition left).
CREATE FUNCTION fleet_internal.group_query_translate(query text, OUT template text, OUT filter jsonpath)
RETURNS record
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tokens     text[] := fleet_internal.group_query_tokens(query);
    i          int := 5;
    joiner     text;
    joiners    text[] := '{}';
    conditions text[] := '{}';
    paths      text[];
    op         text;
    literal    text;
    condition  text;
    templates  text[] := '{}';
    template_at int[] := '{}';     -- where in conditions the template conditions are
BEGIN
    IF length(query) > 2000 THEN
        RAISE EXCEPTION 'device group query has % characters, more than 2000', length(query)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF cardinality(tokens) < 4 OR upper(tokens[1]) <> 'SELECT' OR tokens[2] <> '*' OR upper(tokens[3]) <> 'FROM'
       OR lower(tokens[4]) <> 'devices' THEN
        RAISE EXCEPTION 'device group query "%" does not start with SELECT * FROM devices', query
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write IoT Central''s form, SELECT * FROM devices WHERE $template = "dtmi:..." AND ..., or a jsonpath predicate.';
    END IF;
    IF cardinality(tokens) = 4 THEN
        RETURN;                                  -- every device
    END IF;
    IF upper(tokens[5]) <> 'WHERE' THEN
        RAISE EXCEPTION 'device group query: "%" is not supported after SELECT * FROM devices', tokens[5]
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Only a WHERE clause may follow.';
    END IF;
    i := 6;
    LOOP
        IF i > cardinality(tokens) THEN
            RAISE EXCEPTION 'device group query "%" ends where a condition should be', query
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF upper(tokens[i]) = 'CONTAINS' THEN
            -- CONTAINS(field, "text")
            IF tokens[i + 1] IS DISTINCT FROM '(' OR tokens[i + 3] IS DISTINCT FROM ',' OR tokens[i + 5] IS DISTINCT FROM ')' THEN
                RAISE EXCEPTION 'device group query: CONTAINS must be written CONTAINS(field, "text")'
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The query is: %s', query);
            END IF;
            paths := fleet_internal.group_query_field(tokens[i + 2], query);
            literal := fleet_internal.group_query_literal(tokens[i + 4]);
            IF literal IS NULL OR left(literal, 1) <> '"' THEN
                RAISE EXCEPTION 'device group query: CONTAINS needs a string, not %', tokens[i + 4]
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The query is: %s', query);
            END IF;
            -- like_regex with every regex character escaped
            literal := to_jsonb(regexp_replace(literal::jsonb #>> '{}', '([.*+?^${}()|\[\]\\])', '\\\1', 'g'))::text;
            condition := '(' || array_to_string(ARRAY(SELECT p || ' like_regex ' || literal FROM unnest(paths) p), ' || ') || ')';
            i := i + 6;
        ELSE
            IF tokens[i] IN ('(', ')') THEN
                RAISE EXCEPTION 'device group query: parentheses are not supported'
                    USING ERRCODE = 'feature_not_supported',
                          DETAIL = format('The query is: %s', query),
                          HINT = 'IoT Central''s device groups take conditions joined by AND or OR, without nesting; use a jsonpath predicate for more.';
            END IF;
            paths := fleet_internal.group_query_field(tokens[i], query);
            op := tokens[i + 1];
            IF op IS NULL OR op NOT IN ('=', '==', '!=', '<>', '<', '<=', '>', '>=') THEN
                RAISE EXCEPTION 'device group query: operator "%" after "%" is not supported', coalesce(op, '(none)'), tokens[i]
                    USING ERRCODE = 'feature_not_supported',
                          DETAIL = format('The query is: %s', query),
                          HINT = 'Use =, !=, <, <=, >, >= or CONTAINS(field, "text"); IN is not supported in device groups.';
            END IF;
            literal := fleet_internal.group_query_literal(tokens[i + 2]);
            IF literal IS NULL THEN
                RAISE EXCEPTION 'device group query: "%" after "% %" is not a value', coalesce(tokens[i + 2], '(nothing)'), tokens[i], op
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('The query is: %s', query),
                          HINT = 'Write strings in quotes ("text"), numbers, true or false.';
            END IF;
            op := CASE op WHEN '=' THEN '==' WHEN '<>' THEN '!=' ELSE op END;
            IF lower(tokens[i]) = '$template' AND op = '==' AND left(literal, 1) = '"' THEN
                templates := templates || (literal::jsonb #>> '{}');
                template_at := template_at || (cardinality(conditions) + 1);
            END IF;
            condition := '(' || array_to_string(ARRAY(SELECT p || ' ' || op || ' ' || literal FROM unnest(paths) p), ' || ') || ')';
            i := i + 3;
        END IF;
        conditions := conditions || condition;
        EXIT WHEN i > cardinality(tokens);
        joiner := upper(tokens[i]);
        IF joiner NOT IN ('AND', 'OR') THEN
            RAISE EXCEPTION 'device group query: "%" is not supported where AND or OR should be', tokens[i]
                USING ERRCODE = 'feature_not_supported', DETAIL = format('The query is: %s', query);
        END IF;
        joiners := joiners || joiner;
        i := i + 1;
    END LOOP;
    IF cardinality(conditions) > 10 THEN
        RAISE EXCEPTION 'device group query has % conditions, more than 10', cardinality(conditions)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    -- one template asked of every device: the template column does it
    IF cardinality(templates) = 1 AND NOT 'OR' = ANY (joiners) THEN
        template := templates[1];
        conditions := ARRAY(SELECT c FROM unnest(conditions) WITH ORDINALITY AS x(c, k)
                             WHERE k <> template_at[1] ORDER BY k);
        joiners := joiners[1:cardinality(conditions) - 1];
    END IF;
    IF cardinality(conditions) > 0 THEN
        -- AND binds tighter than OR, as in SQL and jsonpath alike
        filter := (conditions[1] || coalesce((SELECT string_agg(' ' || CASE j WHEN 'AND' THEN '&&' ELSE '||' END || ' ' || c, '' ORDER BY n)
                                                FROM unnest(joiners, conditions[2:]) WITH ORDINALITY AS x(j, c, n)), ''))::jsonpath;
    END IF;
END;
$$;

-- src/sql/device_groups.sql
-- Device groups: a template, a jsonpath filter over fleet.device_document()
-- and an organization.  Membership is evaluated when asked (and when a job
-- starts), never cached, so a group always means its devices of the moment.


-- A filter the engine can evaluate over millions of devices in bounded
-- time: at most 2000 characters, one "**" (any depth) accessor, and
-- parentheses nested at most 8 deep.  Nested "**" filters cost the
-- document size to the power of their nesting for every device.  NULL when
-- the filter is fine, else what is wrong.
CREATE FUNCTION fleet_internal.filter_problem(filter jsonpath)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    source  text := filter::text;
    depth   int := 0;
    deepest int := 0;
    c       text;
BEGIN
    IF length(source) > 2000 THEN
        RETURN format('it has %s characters, more than 2000', length(source));
    END IF;
    IF (length(source) - length(replace(source, '**', ''))) / 2 > 1 THEN
        RETURN 'it uses the any-depth accessor "**" more than once';
    END IF;
    -- filter expressions nest as "? (": count parentheses outside strings
    FOR c IN SELECT regexp_split_to_table(regexp_replace(source, '"([^"\\]|\\.)*"', '""', 'g'), '') LOOP
        IF c = '(' THEN
            depth := depth + 1;
            deepest := greatest(deepest, depth);
        ELSIF c = ')' THEN
            depth := depth - 1;
        END IF;
    END LOOP;
    IF deepest > 8 THEN
        RETURN format('its expressions nest %s deep, more than 8', deepest);
    END IF;
    RETURN NULL;
END;
$$;

-- Refuses a filter that does not compile into a predicate the engine can
-- evaluate in bounded time: jsonb_path_match() refuses anything but a
-- single boolean, so it is tried on a document with every device key.
CREATE FUNCTION fleet_internal.require_group_filter(filter jsonpath)
RETURNS jsonpath
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sample jsonb := jsonb_build_object(
        'id', 'sample', 'displayName', 'sample', 'template', 'dtmi:sample:Sample;1',
        'organization', 'root', 'simulated', false, 'provisioned', true, 'connected', false, 'lastActivityTime', NULL,
        'edge', false, 'manifest', NULL,
        'properties', '{}'::jsonb, 'reported', '{}'::jsonb, 'cloudProperties', '{}'::jsonb);
    problem text := fleet_internal.filter_problem(filter);
BEGIN
    IF filter IS NULL THEN
        RETURN NULL;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'device group filter % is too complex: %',
                        left(filter::text, 80) || CASE WHEN length(filter::text) > 80 THEN '...' ELSE '' END, problem
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Filter on named properties (''$.reported.firmware == "1.2"''), with at most one "**" and expressions nested at most 8 deep.';
    END IF;
    BEGIN
        PERFORM jsonb_path_match(sample, filter);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
        RAISE EXCEPTION 'device group filter % does not return true or false', filter
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('On a device it fails with: %s.', problem),
                  HINT = 'Write the filter as a predicate, for example ''$.reported.firmware == "1.2"'' or ''$.displayName like_regex "^lab"''.';
    END;
    RETURN filter;
END;
$$;

-- SECURITY DEFINER, as every function that writes (src/sql/access.sql).
CREATE FUNCTION fleet.create_device_group(device_group_id text, display_name text, template text DEFAULT NULL,
                                          filter jsonpath DEFAULT NULL, organization text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    PERFORM fleet_internal.check_new_object('device group', device_group_id, display_name, 255);
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
    PERFORM fleet_internal.require_organization(coalesce(organization, 'root'), caller);
    PERFORM fleet_internal.require_app_role(coalesce(organization, 'root'), 'operator', 'creating a device group', caller);
    PERFORM fleet_internal.require_group_filter(filter);
    IF EXISTS (SELECT 1 FROM fleet.device_groups g WHERE g.id = create_device_group.device_group_id) THEN
        PERFORM fleet_internal.refuse_existing('device group', device_group_id);
    END IF;
    INSERT INTO fleet.device_groups (id, display_name, template_id, filter, organization_id)
    VALUES (device_group_id, display_name, template, filter, coalesce(organization, 'root'));
    RETURN fleet.get_device_group(device_group_id);
END;
$$;
COMMENT ON FUNCTION fleet.create_device_group(text, text, text, jsonpath, text) IS 'Creates a device group and returns it; the filter is a jsonpath predicate over fleet.device_document()';

-- The group, or "does not exist" unless the role sees it.
CREATE FUNCTION fleet_internal.require_device_group(device_group_id text, role_name name DEFAULT fleet_internal.calling_role())
RETURNS fleet.device_groups
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_group fleet.device_groups;
BEGIN
    SELECT g.* INTO found_group FROM fleet.device_groups g WHERE g.id = require_device_group.device_group_id;
    IF NOT FOUND OR NOT fleet_internal.sees(role_name, found_group.organization_id) THEN
        PERFORM fleet_internal.refuse_missing('device group', device_group_id,
            'Create it with fleet.create_device_group(), or see the existing ones in fleet.device_groups.');
    END IF;
    RETURN found_group;
END;
$$;

-- The group as IoT Central's REST API shows it: its filter as it was
-- given (IoT Central's query, or a jsonpath), description, organizations
-- and etag; "template" and "jsonpath" (the query's translation) are
-- pg_fleet's.
CREATE FUNCTION fleet.get_device_group(device_group_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.device_groups := fleet_internal.require_device_group(device_group_id);
BEGIN
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'id', g.id, 'displayName', g.display_name, 'description', g.description,
        -- (IoT Central's groups always have a query: a group of pg_fleet's
        -- with no filter shows the one that selects what it does)
        'filter', coalesce(g.query, g.filter::text,
                           'SELECT * FROM devices' || CASE WHEN g.template_id IS NOT NULL
                                                           THEN format(' WHERE $template = "%s"', g.template_id) ELSE '' END),
        'organizations', jsonb_build_array(g.organization_id),
        'etag', fleet_internal.device_group_etag(g),
        'template', g.template_id,
        'jsonpath', CASE WHEN g.query IS NOT NULL THEN g.filter::text END));
END;
$$;
COMMENT ON FUNCTION fleet.get_device_group(text) IS 'The device group as IoT Central''s REST API shows it: id, displayName, description, filter, organizations, etag; with template and the jsonpath a query translates to';

-- A device group's etag (fleet_internal.etag).
CREATE FUNCTION fleet_internal.device_group_etag(g fleet.device_groups)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.etag(jsonb_build_array(g.display_name, g.description, g.template_id, g.filter::text,
                                                 g.query, g.organization_id))
$$;

-- A filter as a device group takes it: IoT Central's query (SELECT * FROM
-- devices WHERE ...), translated, or a jsonpath predicate.
CREATE FUNCTION fleet_internal.group_filter(filter text, label text,
                                            OUT template text, OUT path jsonpath, OUT query text)
RETURNS record
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    translated record;
BEGIN
    IF filter IS NULL THEN
        RETURN;
    END IF;
    IF filter ~* '^\s*select\s' THEN
        translated := fleet_internal.group_query_translate(filter);
        template := translated.template;
        path := translated.filter;
        query := filter;
    ELSE
        BEGIN
            path := filter::jsonpath;
        EXCEPTION WHEN syntax_error OR invalid_text_representation THEN
            RAISE EXCEPTION 'the filter of % is neither IoT Central''s query nor a jsonpath: %', label, filter
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write SELECT * FROM devices WHERE $template = "..." AND ..., or a jsonpath predicate such as ''$.reported.firmware == "1.2"''.';
        END;
    END IF;
    PERFORM fleet_internal.require_group_filter(path);
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
END;
$$;

-- Creates a device group from IoT Central's REST body, as PUT
-- /deviceGroups/{id} takes it: {"displayName", "filter", "description",
-- "organizations"}; the filter is IoT Central's query or a jsonpath.
CREATE FUNCTION fleet.import_device_group(device_group_id text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller       name := fleet_internal.calling_role();
    label        text := format('device group "%s"', device_group_id);
    filter       record;
    organization text;
BEGIN
    body := fleet_internal.rest_body(body, device_group_id, 'device group', '{id,displayName,description,filter,organizations,etag}',
                                     '{"displayName": ..., "filter": "SELECT * FROM devices WHERE ..."}');
    IF jsonb_typeof(body -> 'displayName') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% needs a "displayName"', label
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Add "displayName": "a name people read".';
    END IF;
    IF body ? 'description' AND jsonb_typeof(body -> 'description') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'the description of % must be a string', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF body ? 'filter' AND jsonb_typeof(body -> 'filter') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'the filter of % must be a string', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write IoT Central''s query, "SELECT * FROM devices WHERE ...", or a jsonpath predicate, as a string.';
    END IF;
    organization := coalesce(fleet_internal.body_organization(body, label), 'root');
    filter := fleet_internal.group_filter(body ->> 'filter', label);
    PERFORM fleet.create_device_group(device_group_id, body ->> 'displayName', filter.template, filter.path, organization);
    UPDATE fleet.device_groups g
       SET description = body ->> 'description', query = filter.query
     WHERE g.id = device_group_id;
    RETURN fleet.get_device_group(device_group_id);
END;
$$;
COMMENT ON FUNCTION fleet.import_device_group(text, jsonb) IS 'Creates a device group from IoT Central''s REST body ({"displayName", "filter", "description", "organizations"}); the filter is IoT Central''s query (SELECT * FROM devices WHERE ...) or a jsonpath'; 

-- Changes a group's name, template or filter ({"displayName", "template",
-- "filter"}; null clears the template or the filter).  Jobs already
-- started keep the devices they resolved; new jobs and scheduled runs see
-- the new membership.
CREATE FUNCTION fleet.update_device_group(device_group_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    g      fleet.device_groups := fleet_internal.require_device_group(device_group_id, fleet_internal.calling_role());
    label  text := format('device group "%s"', device_group_id);
    filter record;
BEGIN
    PERFORM fleet_internal.require_changes(changes, '{displayName,description,template,filter,organizations,etag,id}', label);
    PERFORM fleet_internal.require_app_role(g.organization_id, 'operator', 'changing a device group', caller);
    -- locked before If-Match, so that a change in between is seen
    SELECT dg.* INTO g FROM fleet.device_groups dg WHERE dg.id = g.id FOR UPDATE;
    PERFORM fleet_internal.require_etag(label, changes -> 'etag', fleet_internal.device_group_etag(g));
    IF changes ? 'template' AND NOT changes ? 'filter' AND g.query IS NOT NULL THEN
        RAISE EXCEPTION 'the template of % is its query''s $template', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Change the filter (SELECT * FROM devices WHERE $template = ...) instead.';
    END IF;
    IF changes ? 'id' AND changes -> 'id' IS DISTINCT FROM to_jsonb(g.id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF changes ? 'organizations' AND changes -> 'organizations' IS DISTINCT FROM jsonb_build_array(g.organization_id) THEN
        RAISE EXCEPTION '% cannot move to another organization', label
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('It belongs to organization "%s".', g.organization_id),
                  HINT = 'Create a group in that organization instead.';
    END IF;
    IF changes ? 'description' THEN
        IF jsonb_typeof(changes -> 'description') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'the description of % must be a string', label USING ERRCODE = 'invalid_parameter_value';
        END IF;
        g.description := changes ->> 'description';
    END IF;
    IF changes ? 'displayName' THEN
        g.display_name := fleet_internal.changed_display_name(changes, 'device group', g.id, 255);
    END IF;
    IF changes ? 'template' THEN
        IF jsonb_typeof(changes -> 'template') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'the template of % must be a template id or null', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        g.template_id := CASE WHEN changes ->> 'template' IS NOT NULL
                              THEN fleet_internal.require_template(changes ->> 'template') END;
    END IF;
    IF changes ? 'filter' THEN
        IF jsonb_typeof(changes -> 'filter') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'the filter of % must be a string (IoT Central''s query or a jsonpath) or null', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        filter := fleet_internal.group_filter(changes ->> 'filter', label);
        g.filter := filter.path;
        -- IoT Central's query names the template itself; a jsonpath that
        -- replaces a query leaves none, unless "template" names one
        IF filter.query IS NOT NULL THEN
            g.template_id := filter.template;
        ELSIF g.query IS NOT NULL AND NOT changes ? 'template' THEN
            g.template_id := NULL;
        END IF;
        g.query := filter.query;
    END IF;
    UPDATE fleet.device_groups dg
       SET display_name = g.display_name, template_id = g.template_id, filter = g.filter,
           description = g.description, query = g.query
     WHERE dg.id = g.id;
    RETURN fleet.get_device_group(g.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_device_group(text, jsonb) IS 'Changes a device group''s displayName, description, template or filter (IoT Central''s query or a jsonpath), If-Match on its etag; returns the group';

-- Deletes a group no job or schedule uses: jobs keep the group they ran on
-- (their results name it), so they go first (fleet.delete_job, or
-- fleet.job_retention), and schedules are deleted or moved to another group.
CREATE FUNCTION fleet.delete_device_group(device_group_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller    name := fleet_internal.calling_role();
    g         fleet.device_groups := fleet_internal.require_device_group(device_group_id, fleet_internal.calling_role());
    jobs      bigint;
    purging   bigint;
    schedules bigint;
BEGIN
    PERFORM fleet_internal.require_app_role(g.organization_id, 'operator', 'deleting a device group', caller);
    -- (locked first, so that no job or schedule takes it meanwhile)
    PERFORM 1 FROM fleet.device_groups dg WHERE dg.id = g.id FOR UPDATE;
    SELECT count(*) FILTER (WHERE j.deleted_at IS NULL), count(*) FILTER (WHERE j.deleted_at IS NOT NULL)
      INTO jobs, purging FROM fleet.jobs j WHERE j.group_id = g.id;
    SELECT count(*) INTO schedules FROM fleet.scheduled_jobs s WHERE s.group_id = g.id;
    IF jobs > 0 OR schedules > 0 THEN
        PERFORM fleet_internal.refuse_in_use('device group', g.id,
            format('%s jobs and %s scheduled jobs use it.', jobs, schedules),
            'Delete those jobs (fleet.delete_job) and scheduled jobs first; finished jobs also go by themselves after fleet.job_retention.');
    END IF;
    IF purging > 0 THEN
        PERFORM fleet_internal.refuse_in_use('device group', g.id,
            format('%s deleted jobs that used it are being purged.', purging),
            'Try again once the engine has purged them (fleet.engine_status.jobs_being_purged).');
    END IF;
    DELETE FROM fleet.device_groups dg WHERE dg.id = g.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_device_group(text) IS 'Deletes a device group that no job or scheduled job uses';

-- Who is in which group, now: the one definition of membership, a view so
-- that jobs and list_device_group_members() plan it as part of their own
-- queries.  Template and organization narrow the scan; the filter is
-- evaluated only on what is left.
CREATE VIEW fleet.device_group_members WITH (security_invoker = true) AS
    SELECT g.id AS group_id, d.id AS device_id
      FROM fleet.device_groups g
      JOIN fleet.organizations o ON o.path @> ARRAY[g.organization_id]
      JOIN fleet.devices d ON d.organization_id = o.id
     WHERE (g.template_id IS NULL OR d.template_id = g.template_id)
       AND (g.filter IS NULL OR jsonb_path_match(fleet_internal.device_document_of(d.id, d.display_name, d.template_id, d.organization_id, d.simulated,
                 d.connection_state, d.last_activity_at, d.edge, d.manifest_id, d.properties, d.reported, d.cloud_properties), g.filter, silent => true));
COMMENT ON VIEW fleet.device_group_members IS 'The devices of each device group now: template, organization subtree and filter applied';

CREATE FUNCTION fleet.list_device_group_members(device_group_id text)
RETURNS TABLE (device_id text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_device_group(list_device_group_members.device_group_id);
    RETURN QUERY
    SELECT m.device_id FROM fleet.device_group_members m WHERE m.group_id = list_device_group_members.device_group_id
     ORDER BY m.device_id;
END;
$$;
COMMENT ON FUNCTION fleet.list_device_group_members(text) IS 'The ids of the devices in a device group now';

-- The group's devices as IoT Central's GET /deviceGroups/{id}/devices
-- returns them: {"value": [{"id", "displayName", "template", "simulated",
-- "provisioned", "enabled", "organizations"}]}.  pg_fleet has no disabled
-- devices and counts a registered device as provisioned.
CREATE FUNCTION fleet.get_device_group_devices(device_group_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_device_group(get_device_group_devices.device_group_id);
    RETURN (SELECT jsonb_build_object('value', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                       'id', d.id, 'displayName', d.display_name, 'template', d.template_id,
                       'simulated', d.simulated, 'provisioned', true, 'enabled', true,
                       'organizations', jsonb_build_array(d.organization_id))) ORDER BY d.id), '[]'))
              FROM fleet.device_group_members m JOIN fleet.devices d ON d.id = m.device_id
             WHERE m.group_id = get_device_group_devices.device_group_id);
END;
$$;
COMMENT ON FUNCTION fleet.get_device_group_devices(text) IS 'A device group''s devices as IoT Central''s REST API returns them: {"value": [{"id", "displayName", "template", "simulated", "provisioned", "enabled", "organizations"}]}';

CREATE FUNCTION fleet.count_device_group_members(device_group_id text)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*) FROM fleet.list_device_group_members(device_group_id)
$$;
COMMENT ON FUNCTION fleet.count_device_group_members(text) IS 'How many devices a job on this group would apply to now, as IoT Central shows under the group selection';


-- src/sql/enrollment_groups.sql
-- Enrollment groups, as IoT Central's REST API has them (PUT, PATCH, GET
-- and DELETE /enrollmentGroups/{id}): a display name, enabled, a type
-- (iot or iotEdge) and an attestation, symmetric keys or X.509 signing
-- certificates (src/sql/enrollment_group_certificates.sql).
--
-- Every organization has a default pair, one group per type, made with it
-- (root's are IoT Central's SAS-IoT-Devices and SAS-IoT-Edge-Devices): a
-- device that names no group derives its keys from the nearest default
-- pair up its organization's path (src/sql/device_keys.sql).  Any number
-- of other groups can be made, to adopt each of IoT Central's with its
-- keys; a device names one of them in fleet.devices.enrollment_group_id.
--
-- Keys derive every device's key: only administrators of a group's
-- organization read or change it, and no message shows a key.

-- An organization's default pair of groups, with new random keys.
CREATE FUNCTION fleet_internal.create_enrollment_groups(organization text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO fleet.enrollment_groups (id, primary_key, secondary_key, organization_id, edge, organization_default)
    SELECT k.name || '@' || organization, fleet_internal.generate_group_key(), fleet_internal.generate_group_key(),
           organization, k.edge, true
      FROM (VALUES ('SAS-IoT-Devices', false), ('SAS-IoT-Edge-Devices', true)) k(name, edge)
$$;

-- Gives an organization that has none (one made by pg_fleet 0.1) its own
-- default pair.  Every key of its devices that name no group changes:
-- export them again.
CREATE FUNCTION fleet.create_enrollment_groups(organization text)
RETURNS SETOF jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    PERFORM fleet_internal.require_organization(organization, caller);
    PERFORM fleet_internal.require_app_role(organization, 'administrator', 'creating enrollment groups', caller);
    IF EXISTS (SELECT 1 FROM fleet.enrollment_groups g
                WHERE g.organization_id = create_enrollment_groups.organization AND g.organization_default) THEN
        RAISE EXCEPTION 'organization "%" already has enrollment groups', organization
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Rotate their keys with fleet.rotate_enrollment_group_key(), or make another group with fleet.import_enrollment_group().';
    END IF;
    PERFORM fleet_internal.create_enrollment_groups(organization);
    RETURN QUERY SELECT fleet.get_enrollment_group(g.id) FROM fleet.enrollment_groups g
                  WHERE g.organization_id = create_enrollment_groups.organization AND g.organization_default
                  ORDER BY g.edge;
END;
$$;
COMMENT ON FUNCTION fleet.create_enrollment_groups(text) IS 'Gives an organization its own default pair of enrollment groups (its devices'' keys change); returns them';

-- The group, or "does not exist" unless the role administers its
-- organization (its keys derive every device key).
CREATE FUNCTION fleet_internal.require_enrollment_group(enrollment_group_id text, role_name name, action text)
RETURNS fleet.enrollment_groups
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups;
BEGIN
    SELECT eg.* INTO g FROM fleet.enrollment_groups eg WHERE eg.id = require_enrollment_group.enrollment_group_id;
    IF NOT FOUND OR NOT fleet_internal.sees(role_name, g.organization_id) THEN
        PERFORM fleet_internal.refuse_missing('enrollment group', enrollment_group_id,
            'Root''s groups are SAS-IoT-Devices and SAS-IoT-Edge-Devices; an organization''s end in @ and its id; list them with fleet.list_enrollment_groups().');
    END IF;
    PERFORM fleet_internal.require_app_role(g.organization_id, 'administrator', action, role_name);
    RETURN g;
END;
$$;

-- The group as IoT Central's REST API shows one, keys and certificates
-- included: for administrators of its organization.
CREATE FUNCTION fleet.get_enrollment_group(enrollment_group_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(),
                                                                         'reading an enrollment group');
BEGIN
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'id', g.id, 'displayName', coalesce(g.display_name, g.id), 'enabled', g.enabled,
        'type', CASE WHEN g.edge THEN 'iotEdge' ELSE 'iot' END,
        'attestation', fleet_internal.enrollment_group_attestation(g),
        'idScope', nullif(current_setting('fleet.id_scope'), ''),
        'etag', fleet_internal.enrollment_group_etag(g),
        'organization', g.organization_id,
        'organizationDefault', g.organization_default,
        'rotatedAt', fleet_internal.rest_timestamp(g.rotated_at)));
END;
$$;
COMMENT ON FUNCTION fleet.get_enrollment_group(text) IS 'The enrollment group as IoT Central''s REST API shows it (displayName, enabled, type, attestation with its keys or certificates, idScope, etag), with its organization; for administrators of its organization';

-- The enrollment groups the caller administers, in IoT Central's shape
-- (GET /enrollmentGroups), optionally of one organization's subtree.
CREATE FUNCTION fleet.list_enrollment_groups(organization text DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    IF organization IS NOT NULL THEN
        PERFORM fleet_internal.require_organization(organization, caller);
    END IF;
    RETURN QUERY
    SELECT fleet.get_enrollment_group(g.id)
      FROM fleet.enrollment_groups g JOIN fleet.organizations o ON o.id = g.organization_id
     WHERE (organization IS NULL OR o.path @> ARRAY[organization])
       AND (fleet_internal.role_sees_everything(caller)
            OR g.organization_id IN (SELECT fleet_internal.organizations_for('administrator', caller)))
     ORDER BY g.id;
END;
$$;
COMMENT ON FUNCTION fleet.list_enrollment_groups(text) IS 'The enrollment groups the caller administers (optionally of one organization''s subtree), each as fleet.get_enrollment_group() shows it';

-- An enrollment group's etag (fleet_internal.etag): its keys go in only as
-- a hash of a hash, so the etag tells nothing of them; an X.509 group's
-- certificates by their thumbprints and verification.
CREATE FUNCTION fleet_internal.enrollment_group_etag(g fleet.enrollment_groups)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.etag(jsonb_build_array(g.display_name, g.enabled, md5(g.primary_key || ':' || g.secondary_key))
                               || CASE WHEN g.attestation = 'x509'
                                       THEN (SELECT jsonb_build_array(coalesce(jsonb_object_agg(c.entry, jsonb_build_array(c.sha1_thumbprint, c.verified)), '{}'))
                                               FROM fleet.enrollment_group_certificates c WHERE c.enrollment_group_id = g.id)
                                       ELSE '[]' END)
$$;

-- A symmetric key as DPS takes one: base64 of 16 to 64 bytes.  The
-- message never shows the key.
CREATE FUNCTION fleet_internal.require_group_key(key jsonb, what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bytes int;
BEGIN
    IF jsonb_typeof(key) IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% must be a base64 string', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        bytes := length(decode(key #>> '{}', 'base64'));
    EXCEPTION WHEN invalid_parameter_value OR invalid_text_representation THEN
        bytes := NULL;
    END;
    IF bytes IS NULL OR bytes NOT BETWEEN 16 AND 64 OR (key #>> '{}') !~ '^[A-Za-z0-9+/]+={0,2}$' THEN
        RAISE EXCEPTION '% is not a key: base64 of 16 to 64 bytes is', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Copy the key as IoT Central shows it (Permissions > Device connection groups), 88 characters ending in "==".';
    END IF;
    RETURN key #>> '{}';
END;
$$;

-- The parts of a REST body every enrollment group write shares: the
-- "idScope" is this server's setting, "enabled" a boolean, "displayName"
-- a non-empty string.
CREATE FUNCTION fleet_internal.check_enrollment_group_body(body jsonb, label text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF body ? 'idScope' AND body -> 'idScope' IS DISTINCT FROM to_jsonb(current_setting('fleet.id_scope'))
       AND body ->> 'idScope' IS DISTINCT FROM nullif(current_setting('fleet.id_scope'), '') THEN
        RAISE EXCEPTION 'the idScope of % is the setting fleet.id_scope', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set fleet.id_scope in postgresql.conf to keep IoT Central''s ID scope.';
    END IF;
    IF body ? 'displayName'
       AND (jsonb_typeof(body -> 'displayName') IS DISTINCT FROM 'string' OR btrim(body ->> 'displayName') = '') THEN
        RAISE EXCEPTION 'the displayName of % must be a non-empty string', label
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the name IoT Central shows, such as "SAS-IoT-Devices".';
    END IF;
    IF body ? 'enabled' AND jsonb_typeof(body -> 'enabled') IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION '"enabled" of % must be true or false', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

-- The symmetric keys of an attestation, both or neither (then NULL: the
-- caller keeps or makes keys).
CREATE FUNCTION fleet_internal.attestation_keys(attestation jsonb, label text,
                                                OUT primary_key text, OUT secondary_key text)
RETURNS record
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT attestation ? 'symmetricKey' OR jsonb_typeof(attestation -> 'symmetricKey') = 'null' THEN
        RETURN;
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(attestation -> 'symmetricKey', '{primaryKey,secondaryKey}',
                                              format('the symmetric key of %s', label));
    primary_key := fleet_internal.require_group_key(attestation #> '{symmetricKey,primaryKey}',
                                                   format('the primary key of %s', label));
    secondary_key := fleet_internal.require_group_key(attestation #> '{symmetricKey,secondaryKey}',
                                                     format('the secondary key of %s', label));
END;
$$;

-- The attestation of a body: an object whose type is symmetricKey or x509,
-- with that type's keys only.  Returns the type.
CREATE FUNCTION fleet_internal.attestation_type(attestation jsonb, label text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(attestation) IS DISTINCT FROM 'object' OR attestation ->> 'type' IS NULL
       OR attestation ->> 'type' NOT IN ('symmetricKey', 'x509') THEN
        RAISE EXCEPTION 'the attestation of % must be of type "symmetricKey" or "x509"', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', coalesce(attestation::text, 'missing')),
                  HINT = 'Write {"type": "symmetricKey"} (keys are made, or give "symmetricKey": {"primaryKey", "secondaryKey"}), or {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": ...}}}}.';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(attestation,
        CASE attestation ->> 'type' WHEN 'symmetricKey' THEN '{type,symmetricKey}'::text[] ELSE '{type,x509}'::text[] END,
        format('the attestation of %s', label));
    RETURN attestation ->> 'type';
END;
$$;

-- Creates an enrollment group from IoT Central's REST body, as PUT
-- /enrollmentGroups/{id} takes it: {"displayName", "enabled", "type": "iot"
-- or "iotEdge", "attestation": {"type": "symmetricKey"} with the keys to
-- adopt (new random ones when none are given), or {"type": "x509",
-- "x509": {"signingCertificates": {"primary": {"certificate": ...}}}}}, and
-- pg_fleet's "organization" (default root).  For administrators of that
-- organization.
CREATE FUNCTION fleet.import_enrollment_group(enrollment_group_id text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller       name := fleet_internal.calling_role();
    label        text := format('enrollment group "%s"', enrollment_group_id);
    organization text;
    attestation  text;
    keys         record;
BEGIN
    IF enrollment_group_id IS NULL OR enrollment_group_id !~ '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}$' THEN
        RAISE EXCEPTION 'invalid enrollment group id "%"', enrollment_group_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An enrollment group id has 1 to 255 letters, digits, ".", "_", ":", "@" or "-", and starts with a letter or digit.';
    END IF;
    body := fleet_internal.rest_body(body, enrollment_group_id, 'enrollment group',
                                     '{id,displayName,enabled,type,attestation,etag,idScope,organization,organizationDefault,rotatedAt}',
                                     '{"displayName": ..., "type": "iot", "attestation": {"type": "symmetricKey"}}');
    IF NOT body ? 'displayName' THEN
        RAISE EXCEPTION '% needs a "displayName"', label
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Add "displayName": "a name people read".';
    END IF;
    PERFORM fleet_internal.check_enrollment_group_body(body, label);
    IF body ? 'type' AND body -> 'type' NOT IN ('"iot"', '"iotEdge"') THEN
        RAISE EXCEPTION 'the type of % must be "iot" or "iotEdge"', label
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It is %s.', body -> 'type');
    END IF;
    IF body ? 'organization' AND jsonb_typeof(body -> 'organization') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'the organization of % must be an organization id', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(body -> 'organizationDefault', 'false') <> 'false' THEN
        RAISE EXCEPTION '% cannot be made an organization''s default group', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Each organization has one default pair, made with it.',
                  HINT = 'Adopt keys into a default group with fleet.update_enrollment_group(), or have devices name this group.';
    END IF;
    organization := coalesce(body ->> 'organization', 'root');
    PERFORM fleet_internal.require_organization(organization, caller);
    PERFORM fleet_internal.require_app_role(organization, 'administrator', 'creating an enrollment group', caller);
    attestation := fleet_internal.attestation_type(body -> 'attestation', label);
    keys := fleet_internal.attestation_keys(body -> 'attestation', label);
    -- (before the insert: keep_restored_keys would rewrite a default group)
    IF EXISTS (SELECT 1 FROM fleet.enrollment_groups g WHERE g.id = enrollment_group_id) THEN
        PERFORM fleet_internal.refuse_existing('enrollment group', enrollment_group_id,
                                               'Change it with fleet.update_enrollment_group(), or choose another id.');
    END IF;

    INSERT INTO fleet.enrollment_groups (id, primary_key, secondary_key, organization_id, edge, display_name, enabled,
                                         organization_default, attestation)
    VALUES (enrollment_group_id,
            CASE WHEN attestation = 'symmetricKey' THEN coalesce(keys.primary_key, fleet_internal.generate_group_key()) END,
            CASE WHEN attestation = 'symmetricKey' THEN coalesce(keys.secondary_key, fleet_internal.generate_group_key()) END,
            -- (a body without "type" makes an iot group, as IoT Central's default)
            organization, coalesce(body ->> 'type' = 'iotEdge', false), body ->> 'displayName', coalesce((body ->> 'enabled')::boolean, true),
            false, attestation)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN     -- (made meanwhile)
        PERFORM fleet_internal.refuse_existing('enrollment group', enrollment_group_id,
                                               'Change it with fleet.update_enrollment_group(), or choose another id.');
    END IF;
    IF attestation = 'x509' THEN
        PERFORM fleet_internal.set_signing_certificates(enrollment_group_id, body #> '{attestation,x509}', label);
    END IF;
    RETURN fleet.get_enrollment_group(enrollment_group_id);
END;
$$;
COMMENT ON FUNCTION fleet.import_enrollment_group(text, jsonb) IS 'Creates an enrollment group from IoT Central''s REST body (displayName, enabled, type, attestation: symmetric keys to adopt or made, or X.509 signing certificates), in pg_fleet''s "organization" (default root); returns it';

-- Changes an enrollment group as the REST API's PATCH does: displayName,
-- enabled, its symmetric keys (attestation.symmetricKey), so that a team
-- leaving IoT Central adopts its groups' keys and every migrated device
-- keeps its SAS keys, or an X.509 group's signing certificates.  If-Match
-- on "etag".  For administrators of the group's organization; keys never
-- appear in a message.
CREATE FUNCTION fleet.update_enrollment_group(enrollment_group_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g     fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(),
                                                                            'changing an enrollment group');
    label text := format('enrollment group "%s"', enrollment_group_id);
    keys  record;
BEGIN
    -- locked before If-Match, so that a rotation in between is not undone
    -- (its key stays: imports and devices naming it go on meanwhile)
    SELECT eg.* INTO g FROM fleet.enrollment_groups eg WHERE eg.id = g.id FOR NO KEY UPDATE;
    PERFORM fleet_internal.require_changes(changes,
        '{id,displayName,enabled,type,attestation,etag,idScope,organization,organizationDefault,rotatedAt}', label);
    PERFORM fleet_internal.require_etag(label, changes -> 'etag', fleet_internal.enrollment_group_etag(g));
    IF changes ? 'id' AND changes -> 'id' IS DISTINCT FROM to_jsonb(g.id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF changes ? 'type' AND changes -> 'type' IS DISTINCT FROM to_jsonb(CASE WHEN g.edge THEN 'iotEdge' ELSE 'iot' END) THEN
        RAISE EXCEPTION 'the type of % cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is "%s".', CASE WHEN g.edge THEN 'iotEdge' ELSE 'iot' END);
    END IF;
    IF changes ? 'organization' AND changes -> 'organization' IS DISTINCT FROM to_jsonb(g.organization_id) THEN
        RAISE EXCEPTION 'the organization of % cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is "%s"; its devices'' keys derive from it.', g.organization_id);
    END IF;
    IF changes ? 'organizationDefault' AND changes -> 'organizationDefault' IS DISTINCT FROM to_jsonb(g.organization_default) THEN
        RAISE EXCEPTION 'whether % is its organization''s default cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Each organization has one default pair, made with it.';
    END IF;
    PERFORM fleet_internal.check_enrollment_group_body(changes, label);
    IF changes ? 'displayName' THEN
        g.display_name := changes ->> 'displayName';
    END IF;
    IF changes ? 'enabled' THEN
        g.enabled := (changes ->> 'enabled')::boolean;
    END IF;
    IF changes ? 'attestation' THEN
        IF fleet_internal.attestation_type(changes -> 'attestation', label) <> g.attestation THEN
            RAISE EXCEPTION 'the attestation type of % cannot change', label
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('It is "%s".', g.attestation),
                      HINT = 'Make a group of the other type with fleet.import_enrollment_group(), and have devices name it.';
        END IF;
        keys := fleet_internal.attestation_keys(changes -> 'attestation', label);
        g.primary_key := coalesce(keys.primary_key, g.primary_key);
        g.secondary_key := coalesce(keys.secondary_key, g.secondary_key);
        IF g.attestation = 'x509' THEN
            PERFORM fleet_internal.set_signing_certificates(g.id, changes #> '{attestation,x509}', label);
        END IF;
    END IF;
    UPDATE fleet.enrollment_groups eg
       SET display_name = g.display_name, enabled = g.enabled,
           primary_key = g.primary_key, secondary_key = g.secondary_key,
           rotated_at = CASE WHEN eg.primary_key IS DISTINCT FROM g.primary_key OR eg.secondary_key IS DISTINCT FROM g.secondary_key
                             THEN pg_catalog.now() ELSE eg.rotated_at END
     WHERE eg.id = g.id;
    RETURN fleet.get_enrollment_group(g.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_enrollment_group(text, jsonb) IS 'Changes an enrollment group''s displayName, enabled, symmetric keys (to adopt IoT Central''s) or signing certificates, If-Match on etag; returns it';

-- Deletes an enrollment group made with import_enrollment_group()
-- (DELETE /enrollmentGroups/{id}).  Refused while devices name it: their
-- keys would change under them.  Default groups go with
-- fleet.delete_enrollment_groups().
CREATE FUNCTION fleet.delete_enrollment_group(enrollment_group_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g       fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(),
                                                                              'deleting an enrollment group');
    devices bigint;
BEGIN
    IF g.organization_default THEN
        RAISE EXCEPTION 'enrollment group "%" is the default group of organization "%"', g.id, g.organization_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE WHEN g.organization_id = 'root' THEN 'Rotate its keys with fleet.rotate_enrollment_group_key(), or disable it.'
                              ELSE format('Remove the organization''s default pair with fleet.delete_enrollment_groups(%L).', g.organization_id) END;
    END IF;
    -- locked, so that no device is given the group while it goes
    PERFORM 1 FROM fleet.enrollment_groups eg WHERE eg.id = g.id FOR UPDATE;
    SELECT count(*) INTO devices FROM fleet.devices d WHERE d.enrollment_group_id = g.id;
    IF devices > 0 THEN
        PERFORM fleet_internal.refuse_in_use('enrollment group', g.id, format('The keys of %s devices derive from it.', devices),
                                             'Give those devices another group with fleet.update_device(), or delete them.');
    END IF;
    DELETE FROM fleet.enrollment_groups eg WHERE eg.id = g.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_enrollment_group(text) IS 'Deletes an enrollment group that is not a default one (refused while devices name it)';

-- Removes an organization's own default pair: its devices that name no
-- group derive their keys from the pair above it again (and change).
-- Refused while it has such devices, whose keys would change under them.
CREATE FUNCTION fleet.delete_enrollment_groups(organization text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    devices bigint;
    pair    text[];
BEGIN
    PERFORM fleet_internal.require_organization(organization, caller);
    PERFORM fleet_internal.require_app_role(organization, 'administrator', 'deleting enrollment groups', caller);
    IF organization = 'root' THEN
        RAISE EXCEPTION 'the enrollment groups of organization "root" cannot be deleted'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rotate their keys with fleet.rotate_enrollment_group_key().';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.enrollment_groups g
                    WHERE g.organization_id = delete_enrollment_groups.organization AND g.organization_default) THEN
        RAISE EXCEPTION 'organization "%" has no enrollment groups of its own', organization
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'Its devices'' keys derive from the groups of an organization above it.';
    END IF;
    PERFORM 1 FROM fleet.enrollment_groups g
      WHERE g.organization_id = delete_enrollment_groups.organization AND g.organization_default FOR UPDATE;
    -- devices that derive from the pair without naming it, and those that
    -- name it: only devices of the organization's subtree can do either
    -- (one join, not a lookup per device)
    pair := ARRAY(SELECT g.id FROM fleet.enrollment_groups g
                   WHERE g.organization_id = delete_enrollment_groups.organization AND g.organization_default);
    SELECT count(*) INTO devices
      FROM fleet.devices d
      JOIN fleet.organizations o ON o.id = d.organization_id AND o.path @> ARRAY[delete_enrollment_groups.organization]
      LEFT JOIN fleet_internal.organization_enrollment_groups k ON k.organization_id = d.organization_id AND k.edge = d.edge
     WHERE d.enrollment_group_id = ANY (pair)
        OR (d.enrollment_group_id IS NULL AND k.group_id = ANY (pair));
    IF devices > 0 THEN
        RAISE EXCEPTION 'the enrollment groups of organization "%" are in use', organization
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('The keys of %s devices derive from them.', devices),
                  HINT = 'Move or delete those devices first: their keys would change.';
    END IF;
    DELETE FROM fleet.enrollment_groups g
     WHERE g.organization_id = delete_enrollment_groups.organization AND g.organization_default;
END;
$$;
COMMENT ON FUNCTION fleet.delete_enrollment_groups(text) IS 'Removes an organization''s own default enrollment groups (refused while devices derive their keys from them)';

-- pg_restore loads the dumped keys after CREATE EXTENSION made new ones
-- for root's default groups: keep the dumped keys, or every device key
-- would change with a restore.  (Only those: no other row exists before
-- a restore, and the API refuses an existing id before it inserts.)
CREATE FUNCTION fleet_internal.enrollment_groups_keep_restored_keys()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE fleet.enrollment_groups g
       SET primary_key = NEW.primary_key, secondary_key = NEW.secondary_key, rotated_at = NEW.rotated_at,
           display_name = NEW.display_name, enabled = NEW.enabled
     WHERE g.id = NEW.id AND g.organization_default AND NEW.organization_default
       AND g.organization_id = 'root' AND NEW.organization_id = 'root';
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER keep_restored_keys BEFORE INSERT ON fleet.enrollment_groups
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.enrollment_groups_keep_restored_keys();

-- src/sql/enrollment_group_certificates.sql
-- The signing certificates of X.509 enrollment groups, as IoT Central's
-- REST API keeps them (GET, PUT and DELETE
-- /enrollmentGroups/{id}/certificates/{entry}, with entry primary or
-- secondary), and their proof of possession (POST
-- .../generateVerificationCode, then .../verify with a certificate whose
-- common name is the code, signed by the group's certificate's key).
--
-- Certificates are read when they are given (src/x509_certificates.c): a
-- string that is not one is refused then, with what to send instead.

-- C, reading the certificate with OpenSSL; "what" names it in the error
-- for a string that is not one.
CREATE FUNCTION fleet_internal.x509_certificate_info(certificate text, what text,
                                                     OUT sha1_thumbprint text, OUT sha256_thumbprint text,
                                                     OUT subject_common_name text,
                                                     OUT not_before timestamptz, OUT not_after timestamptz)
RETURNS record
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'x509_certificate_info';
COMMENT ON FUNCTION fleet_internal.x509_certificate_info(text, text) IS 'The thumbprints (SHA-1, SHA-256), subject common name and validity of a certificate given as PEM, base64 PEM or base64 DER; an error names "what" when it is not one';

CREATE FUNCTION fleet_internal.x509_certificate_signed_by(certificate text, signer text)
RETURNS boolean
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'x509_certificate_signed_by';
COMMENT ON FUNCTION fleet_internal.x509_certificate_signed_by(text, text) IS 'Whether the signer certificate''s key signed the certificate';

-- One signing certificate as the REST API shows it.
CREATE FUNCTION fleet_internal.signing_certificate_document(c fleet.enrollment_group_certificates)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('certificate', c.certificate, 'verified', c.verified,
                              'info', jsonb_build_object('sha1Thumbprint', c.sha1_thumbprint),
                              'etag', fleet_internal.etag(jsonb_build_array(c.sha1_thumbprint, c.verified)))
$$;

-- A group's attestation as the REST API shows it: its keys, or its
-- signing certificates.
CREATE FUNCTION fleet_internal.enrollment_group_attestation(g fleet.enrollment_groups)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE g.attestation
           WHEN 'symmetricKey'
           THEN jsonb_build_object('type', 'symmetricKey',
                                   'symmetricKey', jsonb_build_object('primaryKey', g.primary_key,
                                                                      'secondaryKey', g.secondary_key))
           ELSE jsonb_build_object('type', 'x509',
                                   'x509', jsonb_build_object('signingCertificates',
                                       (SELECT coalesce(jsonb_object_agg(c.entry, fleet_internal.signing_certificate_document(c)), '{}')
                                          FROM fleet.enrollment_group_certificates c WHERE c.enrollment_group_id = g.id)))
           END
$$;

-- "primary" or "secondary", or an error.
CREATE FUNCTION fleet_internal.require_certificate_entry(entry text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF entry IS NULL OR entry NOT IN ('primary', 'secondary') THEN
        RAISE EXCEPTION 'unknown certificate entry "%"', entry
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An enrollment group has a ''primary'' and a ''secondary'' certificate.';
    END IF;
    RETURN entry;
END;
$$;

-- One of a group's certificates, or "does not exist" saying how to set it.
CREATE FUNCTION fleet_internal.require_certificate(enrollment_group_id text, entry text)
RETURNS fleet.enrollment_group_certificates
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c fleet.enrollment_group_certificates;
BEGIN
    SELECT x.* INTO c FROM fleet.enrollment_group_certificates x
     WHERE x.enrollment_group_id = require_certificate.enrollment_group_id
       AND x.entry = fleet_internal.require_certificate_entry(require_certificate.entry);
    IF NOT FOUND THEN
        PERFORM fleet_internal.refuse_missing('certificate', format('%s/%s', enrollment_group_id, entry),
                                              'Set it with fleet.set_enrollment_group_certificate() first.');
    END IF;
    RETURN c;
END;
$$;

-- The group, which must be an X.509 group, locked for a change of its
-- certificates by an administrator of its organization.
CREATE FUNCTION fleet_internal.require_x509_group(enrollment_group_id text, action text)
RETURNS fleet.enrollment_groups
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(), action);
BEGIN
    IF g.attestation <> 'x509' THEN
        RAISE EXCEPTION 'enrollment group "%" has no certificates', g.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its attestation is symmetric keys.',
                  HINT = 'Make an X.509 group with fleet.import_enrollment_group(), attestation {"type": "x509", ...}.';
    END IF;
    SELECT eg.* INTO g FROM fleet.enrollment_groups eg WHERE eg.id = g.id FOR UPDATE;
    RETURN g;
END;
$$;

-- Stores one signing certificate from the REST body {"certificate",
-- "verified"} ("info" and "etag" are what GET showed, and are read-only).
-- A new certificate is unverified unless the body says it is verified, as
-- IoT Central's "set as verified on upload" does.
CREATE FUNCTION fleet_internal.set_signing_certificate(enrollment_group_id text, entry text, body jsonb, label text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    what text := format('the %s certificate of %s', entry, label);
    info record;
BEGIN
    IF jsonb_typeof(body) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', what
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Write {"certificate": "<the certificate>"}.';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(body, '{certificate,verified,info,etag}', what);
    IF jsonb_typeof(body -> 'certificate') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% needs a "certificate"', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the certificate as its PEM file''s text, or that text or its DER bytes in base64.';
    END IF;
    IF body ? 'verified' AND jsonb_typeof(body -> 'verified') IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION '"verified" of % must be true or false', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    info := fleet_internal.x509_certificate_info(body ->> 'certificate', what);
    INSERT INTO fleet.enrollment_group_certificates AS c (enrollment_group_id, entry, certificate, sha1_thumbprint, verified)
    VALUES (enrollment_group_id, entry, body ->> 'certificate', info.sha1_thumbprint, coalesce((body ->> 'verified')::boolean, false))
    ON CONFLICT ON CONSTRAINT enrollment_group_certificates_pkey DO UPDATE
       SET certificate = EXCLUDED.certificate, sha1_thumbprint = EXCLUDED.sha1_thumbprint,
           -- the same certificate stays verified unless the body says otherwise
           verified = CASE WHEN body ? 'verified' THEN EXCLUDED.verified
                           WHEN c.sha1_thumbprint = EXCLUDED.sha1_thumbprint THEN c.verified
                           ELSE false END,
           verification_code = CASE WHEN c.sha1_thumbprint = EXCLUDED.sha1_thumbprint THEN c.verification_code END;
END;
$$;

-- The certificates of an attestation's "x509": {"signingCertificates":
-- {"primary": {...}, "secondary": {...}}}; an entry given as null is
-- removed.
CREATE FUNCTION fleet_internal.set_signing_certificates(enrollment_group_id text, x509 jsonb, label text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry text;
BEGIN
    IF x509 IS NULL OR jsonb_typeof(x509) = 'null' THEN
        RETURN;
    END IF;
    IF jsonb_typeof(x509) <> 'object' OR jsonb_typeof(coalesce(x509 -> 'signingCertificates', '{}')) <> 'object' THEN
        RAISE EXCEPTION 'the x509 attestation of % must be {"signingCertificates": {"primary": ..., "secondary": ...}}', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(x509, '{signingCertificates}', format('the x509 attestation of %s', label));
    PERFORM fleet_internal.refuse_unknown_keys(x509 -> 'signingCertificates', '{primary,secondary}',
                                              format('the signing certificates of %s', label));
    FOR entry IN SELECT k FROM jsonb_object_keys(coalesce(x509 -> 'signingCertificates', '{}')) k ORDER BY k LOOP
        IF jsonb_typeof(x509 -> 'signingCertificates' -> entry) = 'null' THEN
            DELETE FROM fleet.enrollment_group_certificates c
             WHERE c.enrollment_group_id = set_signing_certificates.enrollment_group_id AND c.entry = set_signing_certificates.entry;
        ELSE
            PERFORM fleet_internal.set_signing_certificate(enrollment_group_id, entry, x509 -> 'signingCertificates' -> entry, label);
        END IF;
    END LOOP;
END;
$$;

-- GET /enrollmentGroups/{id}/certificates/{entry}
CREATE FUNCTION fleet.get_enrollment_group_certificate(enrollment_group_id text, entry text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(),
                                                                         'reading an enrollment group');
BEGIN
    RETURN fleet_internal.signing_certificate_document(fleet_internal.require_certificate(g.id, entry));
END;
$$;
COMMENT ON FUNCTION fleet.get_enrollment_group_certificate(text, text) IS 'The primary or secondary signing certificate of an X.509 enrollment group: certificate, verified, info.sha1Thumbprint, etag';

-- PUT /enrollmentGroups/{id}/certificates/{entry}: {"certificate",
-- "verified"}, If-Match on the entry's "etag".
CREATE FUNCTION fleet.set_enrollment_group_certificate(enrollment_group_id text, entry text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g     fleet.enrollment_groups := fleet_internal.require_x509_group(enrollment_group_id, 'changing an enrollment group');
    label text := format('enrollment group "%s"', enrollment_group_id);
    c     fleet.enrollment_group_certificates;
BEGIN
    entry := fleet_internal.require_certificate_entry(entry);
    SELECT x.* INTO c FROM fleet.enrollment_group_certificates x WHERE x.enrollment_group_id = g.id AND x.entry = set_enrollment_group_certificate.entry;
    IF jsonb_typeof(body) = 'object' AND c.enrollment_group_id IS NOT NULL THEN
        PERFORM fleet_internal.require_etag(format('the %s certificate of %s', entry, label), body -> 'etag',
                                           fleet_internal.signing_certificate_document(c) ->> 'etag');
    END IF;
    PERFORM fleet_internal.set_signing_certificate(g.id, entry, body, label);
    RETURN fleet.get_enrollment_group_certificate(g.id, entry);
END;
$$;
COMMENT ON FUNCTION fleet.set_enrollment_group_certificate(text, text, jsonb) IS 'Sets the primary or secondary signing certificate of an X.509 enrollment group from IoT Central''s body ({"certificate", "verified"}); returns it';

-- DELETE /enrollmentGroups/{id}/certificates/{entry}
CREATE FUNCTION fleet.delete_enrollment_group_certificate(enrollment_group_id text, entry text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups := fleet_internal.require_x509_group(enrollment_group_id, 'changing an enrollment group');
BEGIN
    DELETE FROM fleet.enrollment_group_certificates c
     WHERE c.enrollment_group_id = g.id AND c.entry = fleet_internal.require_certificate_entry(delete_enrollment_group_certificate.entry);
    IF NOT FOUND THEN
        PERFORM fleet_internal.refuse_missing('certificate', format('%s/%s', g.id, entry));
    END IF;
END;
$$;
COMMENT ON FUNCTION fleet.delete_enrollment_group_certificate(text, text) IS 'Removes the primary or secondary signing certificate of an X.509 enrollment group';

-- POST .../certificates/{entry}/generateVerificationCode: a new random
-- code, which the next .../verify must carry as its common name.
CREATE FUNCTION fleet.generate_enrollment_group_verification_code(enrollment_group_id text, entry text)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g    fleet.enrollment_groups := fleet_internal.require_x509_group(enrollment_group_id, 'verifying an enrollment group certificate');
    c    fleet.enrollment_group_certificates := fleet_internal.require_certificate(g.id, entry);
    code text := upper(replace(gen_random_uuid()::text, '-', ''));
BEGIN
    UPDATE fleet.enrollment_group_certificates x SET verification_code = code
     WHERE x.enrollment_group_id = c.enrollment_group_id AND x.entry = c.entry;
    RETURN jsonb_build_object('verificationCode', code);
END;
$$;
COMMENT ON FUNCTION fleet.generate_enrollment_group_verification_code(text, text) IS 'A new verification code for a signing certificate''s proof of possession ({"verificationCode"})';

-- POST .../certificates/{entry}/verify {"certificate"}: the certificate
-- must name the code as its subject's common name and be signed by the
-- group's certificate's key.  Then the group's certificate is verified.
CREATE FUNCTION fleet.verify_enrollment_group_certificate(enrollment_group_id text, entry text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g    fleet.enrollment_groups := fleet_internal.require_x509_group(enrollment_group_id, 'verifying an enrollment group certificate');
    what text := format('the verification certificate of %s/%s', enrollment_group_id, entry);
    c    fleet.enrollment_group_certificates := fleet_internal.require_certificate(g.id, entry);
    info record;
BEGIN
    IF c.verification_code IS NULL THEN
        RAISE EXCEPTION 'no verification code was generated for certificate "%/%"', g.id, entry
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Get one with fleet.generate_enrollment_group_verification_code(%L, %L).', g.id, entry);
    END IF;
    IF jsonb_typeof(body) IS DISTINCT FROM 'object' OR jsonb_typeof(body -> 'certificate') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% must be given as {"certificate": ...}', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(body, '{certificate}', what);
    info := fleet_internal.x509_certificate_info(body ->> 'certificate', what);
    IF info.subject_common_name IS DISTINCT FROM c.verification_code THEN
        RAISE EXCEPTION '% does not carry the verification code', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Its subject''s common name is %s.', coalesce('"' || info.subject_common_name || '"', 'missing')),
                  HINT = 'Make a certificate whose common name is the code fleet.generate_enrollment_group_verification_code() gave last, signed with the group certificate''s private key.';
    END IF;
    IF NOT fleet_internal.x509_certificate_signed_by(body ->> 'certificate', c.certificate) THEN
        RAISE EXCEPTION '% is not signed by the group''s certificate', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Sign it with the private key of the certificate set on the group.';
    END IF;
    UPDATE fleet.enrollment_group_certificates x SET verified = true, verification_code = NULL
     WHERE x.enrollment_group_id = c.enrollment_group_id AND x.entry = c.entry;
    RETURN fleet.get_enrollment_group_certificate(g.id, entry);
END;
$$;
COMMENT ON FUNCTION fleet.verify_enrollment_group_certificate(text, text, jsonb) IS 'Verifies a signing certificate: the body''s certificate carries the last verification code as its common name and is signed by the group certificate''s key';

-- src/sql/device_keys.sql
-- Device keys.  A device's keys are derived from its enrollment group's
-- keys (device_keys.c), never stored, as the Device Provisioning Service
-- derives them (the groups: src/sql/enrollment_groups.sql).
--
-- A device that names no group (fleet.devices.enrollment_group_id) derives
-- from the nearest default pair up its organization's path: root has IoT
-- Central's two groups, SAS-IoT-Devices and SAS-IoT-Edge-Devices, and every
-- organization created since 0.2 a pair of its own.  So an administrator
-- of one organization cannot learn the keys a device will have in another:
-- the same id registered there derives from other group keys.
-- Organizations made by 0.1 keep using root's groups (their devices' keys
-- did not change with the update); fleet.create_enrollment_groups() gives
-- one a pair of its own.  A device that names a group derives from it (an
-- X.509 group gives no keys).

-- C functions look no names up, so they carry no SET search_path: on
-- compute_device_key it would add a configuration save and restore to each
-- of the two calls per exported device.  Its COST is what two SHA-256
-- blocks and a base64 encoding take against PostgreSQL's unit: at the
-- default of 1 the planner thought an export of a million devices too
-- cheap to share among workers, and it ran 15 % slower.
CREATE FUNCTION fleet.compute_device_key(group_key text, device_id text)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
COST 100
AS 'MODULE_PATHNAME', 'compute_device_key';
COMMENT ON FUNCTION fleet.compute_device_key(text, text) IS 'base64(HMAC-SHA256(base64decode(group_key), device_id)): the Device Provisioning Service''s derived device key';

-- For each organization and kind of device (edge or not), the enrollment
-- group its devices that name none derive their keys from: the nearest
-- default one up its path.  Holds the keys: internal, for the SECURITY
-- DEFINER functions below.
CREATE VIEW fleet_internal.organization_enrollment_groups AS
    SELECT o.id AS organization_id, k.edge, g.id AS group_id, g.primary_key, g.secondary_key, g.enabled
      FROM fleet.organizations o
     CROSS JOIN (VALUES (false), (true)) k(edge)
     CROSS JOIN LATERAL (SELECT eg.id, eg.primary_key, eg.secondary_key, eg.enabled
                           FROM fleet.enrollment_groups eg
                          WHERE eg.organization_id = ANY (o.path) AND eg.edge = k.edge AND eg.organization_default
                          ORDER BY pg_catalog.array_position(o.path, eg.organization_id) DESC
                          LIMIT 1) g;

-- Rotation: a new random key for one slot of one group.  Devices keep their
-- other key working meanwhile, as with IoT Central's regenerate.  For
-- administrators of the group's organization; root's groups are root's.
CREATE FUNCTION fleet.rotate_enrollment_group_key(enrollment_group_id text, which text DEFAULT 'primary')
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g       fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(),
                                                                               'rotating an enrollment group key');
    new_key text := fleet_internal.generate_group_key();
BEGIN
    IF which IS NULL OR which NOT IN ('primary', 'secondary') THEN
        RAISE EXCEPTION 'unknown key slot "%"', which
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Rotate the ''primary'' or the ''secondary'' key.';
    END IF;
    IF g.attestation <> 'symmetricKey' THEN
        RAISE EXCEPTION 'enrollment group "%" has no keys to rotate', g.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its attestation is X.509 certificates.',
                  HINT = 'Replace a certificate with fleet.set_enrollment_group_certificate().';
    END IF;
    UPDATE fleet.enrollment_groups eg
       SET primary_key = CASE WHEN which = 'primary' THEN new_key ELSE eg.primary_key END,
           secondary_key = CASE WHEN which = 'secondary' THEN new_key ELSE eg.secondary_key END,
           rotated_at = pg_catalog.now()
     WHERE eg.id = g.id;
    RETURN fleet.get_enrollment_group(g.id);
END;
$$;
COMMENT ON FUNCTION fleet.rotate_enrollment_group_key(text, text) IS 'Regenerates the primary or secondary key of an enrollment group, and so every device key derived from it; returns the group';

-- One device's keys, derived from its enrollment group.
CREATE FUNCTION fleet.device_keys(device_id text, OUT primary_key text, OUT secondary_key text)
RETURNS record
LANGUAGE plpgsql STABLE
-- SECURITY DEFINER: reads the enrollment group keys (which members may not
-- read) to derive the keys of one device for an administrator of its
-- organization; a device the caller cannot see does not exist for it.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller       name := fleet_internal.calling_role();
    organization text;
BEGIN
    organization := (fleet_internal.visible_device(device_id, caller)).organization_id;
    PERFORM fleet_internal.require_app_role(organization, 'administrator', 'reading device keys', caller);
    -- (a disabled group gives no keys, as in exports)
    SELECT fleet.compute_device_key(CASE WHEN g.enabled THEN g.primary_key END, d.id),
           fleet.compute_device_key(CASE WHEN g.enabled THEN g.secondary_key END, d.id)
      INTO primary_key, secondary_key
      FROM fleet.devices d
      JOIN fleet.enrollment_groups g
        ON g.id = coalesce(d.enrollment_group_id,
                           (SELECT x.group_id FROM fleet_internal.organization_enrollment_groups x
                             WHERE x.organization_id = d.organization_id AND x.edge = d.edge))
     WHERE d.id = device_id;
END;
$$;
COMMENT ON FUNCTION fleet.device_keys(text) IS 'The SAS keys of one device, derived from the enrollment group it names, else its organization''s default group (edge devices: the edge group); none from an X.509 or disabled group';

-- The id of the enrollment group a device's keys derive from: the one it
-- names, else its organization's default for its kind.  Ids are not
-- secret (keys are): members see their devices' groups, and nothing of a
-- device they do not see.
CREATE FUNCTION fleet_internal.device_enrollment_group(device_id text)
RETURNS text
-- PL/pgSQL, the device read first: on Citus a SQL function's parameters
-- cannot reach a distributed table, nor a device's shard the coordinator's
-- enrollment groups.
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
BEGIN
    SELECT dv.enrollment_group_id, dv.organization_id, dv.edge INTO d
      FROM fleet.devices dv WHERE dv.id = device_enrollment_group.device_id;
    IF NOT FOUND OR NOT fleet_internal.sees(fleet_internal.calling_role(), d.organization_id) THEN
        RETURN NULL;
    END IF;
    RETURN coalesce(d.enrollment_group_id,
                    (SELECT x.group_id FROM fleet_internal.organization_enrollment_groups x
                      WHERE x.organization_id = d.organization_id AND x.edge = d.edge));
END;
$$;

-- A group a device may name: one of an organization on its organization's
-- path (as default groups are found), of its kind (iotEdge for IoT Edge
-- devices), locked so that it stays while the device names it
-- (delete_enrollment_group locks it too).  Naming a group derives the
-- device's keys from it: the caller administers the group's organization,
-- as reading its keys takes (naming); a device that moves keeps the group
-- it names, which need only be available where it goes.  Returns the
-- group's id.
CREATE FUNCTION fleet_internal.require_device_enrollment_group(enrollment_group_id text, organization text, edge boolean,
                                                              label text, caller name, naming boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups;
BEGIN
    IF naming THEN
        g := fleet_internal.require_enrollment_group(enrollment_group_id, caller, 'naming a device''s enrollment group');
    END IF;
    SELECT eg.* INTO g FROM fleet.enrollment_groups eg WHERE eg.id = enrollment_group_id FOR KEY SHARE;
    IF NOT FOUND THEN
        PERFORM fleet_internal.refuse_missing('enrollment group', enrollment_group_id,
                                              'List the groups with fleet.list_enrollment_groups().');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = organization AND g.organization_id = ANY (o.path)) THEN
        RAISE EXCEPTION 'enrollment group "%" is not available to %', g.id, label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The group belongs to organization "%s", which is not "%s" or above it.', g.organization_id, organization),
                  HINT = 'Name a group of the device''s organization or of one above it.';
    END IF;
    IF g.edge <> edge THEN
        RAISE EXCEPTION 'enrollment group "%" is of type "%", not "%"', g.id,
                        CASE WHEN g.edge THEN 'iotEdge' ELSE 'iot' END, CASE WHEN edge THEN 'iotEdge' ELSE 'iot' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Only a group of type "%s" derives the keys of %s.', CASE WHEN edge THEN 'iotEdge' ELSE 'iot' END, label),
                  HINT = format('Name a group of type "%s".', CASE WHEN edge THEN 'iotEdge' ELSE 'iot' END);
    END IF;
    RETURN g.id;
END;
$$;

-- src/sql/device_import.sql
-- Device CSV import, IoT Central's format, through COPY:
--
--   SET fleet.import_template = 'dtmi:com:example:Thermostat;1';   -- optional
--   SET fleet.import_organization = 'acme';                        -- optional
--   \copy fleet.device_import FROM 'devices.csv' WITH (FORMAT csv, HEADER)
--
-- IoT Central's export file (the same two columns, then two SAS keys and
-- two X.509 thumbprints) goes into fleet.device_import_with_keys: the
-- thumbprints are imported, and a SAS key that is not the one the
-- device's enrollment group gives it refuses the row (so a migrated
-- device's keys keep working, or it says so).
--
-- COPY parses; the row trigger (C, device_import.c) stages each row with its
-- line number; the statement's AFTER trigger validates and registers all of
-- them in one statement.  Every row ends up in exactly one place: in
-- fleet.devices, or in fleet.device_operation_errors with its reason.  An
-- import that fails as a whole (a malformed file, a cancel, a rollback)
-- still leaves its row, recorded failed with the reason by the engine
-- (src/import_tracking.c).


-- What COPY writes into.  Column names are the CSV header's, so
-- COPY ... WITH (FORMAT csv, HEADER MATCH) checks the header too.
CREATE VIEW fleet.device_import AS
    SELECT NULL::text AS "IOTC_DEVICEID", NULL::text AS "IOTC_DEVICENAME"
     WHERE false;
COMMENT ON VIEW fleet.device_import IS 'COPY an IoT Central device CSV (IOTC_DEVICEID, IOTC_DEVICENAME) into this view to import devices; see fleet.device_operations for the outcome';

-- IoT Central's export file, six columns: COPY does not take files of two
-- shapes into one relation, and the two-column file keeps its view.
CREATE VIEW fleet.device_import_with_keys AS
    SELECT NULL::text AS "IOTC_DEVICEID", NULL::text AS "IOTC_DEVICENAME",
           NULL::text AS "IOTC_SASKEY_PRIMARY", NULL::text AS "IOTC_SASKEY_SECONDARY",
           NULL::text AS "IOTC_X509THUMBPRINT_PRIMARY", NULL::text AS "IOTC_X509THUMBPRINT_SECONDARY"
     WHERE false;
COMMENT ON VIEW fleet.device_import_with_keys IS 'COPY IoT Central''s device export file (ids, names, SAS keys, X.509 thumbprints) into this view to import devices with their thumbprints; keys are checked against the enrollment groups';

-- The staging functions are C and act only on the calling session's own
-- import in progress.  The row trigger carries no SET search_path: it looks
-- no names up, and the clause would cost a configuration save and restore
-- on each of a million rows.
CREATE FUNCTION fleet_internal.device_import_begin(operation_id bigint, template text, organization text)
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_begin';
COMMENT ON FUNCTION fleet_internal.device_import_begin(bigint, text, text) IS 'Starts the staging of one import statement, tracked under its operation id';

CREATE FUNCTION fleet_internal.device_import_operation_id()
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_operation_id';

CREATE FUNCTION fleet_internal.device_import_stage_row()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'device_import_stage_row';

CREATE FUNCTION fleet_internal.device_import_staged_rows(OUT line bigint, OUT device_id text, OUT display_name text,
                                                        OUT sas_key_primary text, OUT sas_key_secondary text,
                                                        OUT x509_thumbprint_primary text, OUT x509_thumbprint_secondary text)
RETURNS SETOF record
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_staged_rows';
COMMENT ON FUNCTION fleet_internal.device_import_staged_rows() IS 'The rows staged by the current import statement, for its AFTER trigger';

CREATE FUNCTION fleet_internal.device_import_staged_count()
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_staged_count';

CREATE FUNCTION fleet_internal.device_import_register(operation_id bigint, template text, organization text)
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_register';
COMMENT ON FUNCTION fleet_internal.device_import_register(bigint, text, text) IS 'Bulk-inserts the valid rows of the current import; -1 when the caller must use INSERT instead';

CREATE FUNCTION fleet_internal.device_import_release()
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_release';

-- The target template and organization, from the fleet.import_* settings;
-- an organization the caller cannot see does not exist for it.
CREATE FUNCTION fleet_internal.device_import_target(caller name, OUT template text, OUT organization text)
RETURNS record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    template := nullif(current_setting('fleet.import_template'), '');
    organization := coalesce(nullif(current_setting('fleet.import_organization'), ''), 'root');
    IF template IS NOT NULL AND NOT EXISTS (SELECT 1 FROM fleet.device_templates t WHERE t.id = template) THEN
        RAISE EXCEPTION 'device template "%" does not exist', template
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'fleet.import_template names the template of the imported devices; nothing was imported.',
                  HINT = 'Import the template with fleet.import_template() first, or RESET fleet.import_template to import devices without a template.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = organization)
       OR NOT fleet_internal.sees(caller, organization) THEN
        RAISE EXCEPTION 'organization "%" does not exist', organization
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'fleet.import_organization names the organization of the imported devices; nothing was imported.',
                  HINT = 'Create it with fleet.create_organization() first, or RESET fleet.import_organization to import into root.';
    END IF;
END;
$$;

-- The enrollment group fleet.import_enrollment_group names for the
-- imported devices, or NULL (their organization's default, or with keys in
-- the file the group the keys match).  It must be one a device of the
-- target organization may name, and the caller an administrator there:
-- it decides the devices' keys.
CREATE FUNCTION fleet_internal.device_import_enrollment_group(organization text, caller name)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    named text := nullif(current_setting('fleet.import_enrollment_group'), '');
BEGIN
    IF named IS NOT NULL THEN
        PERFORM fleet_internal.require_app_role(organization, 'administrator', 'importing devices into an enrollment group', caller);
        PERFORM fleet_internal.require_device_enrollment_group(named, organization, false,
                                                               format('devices of organization "%s"', organization), caller, true);
    END IF;
    RETURN named;
END;
$$;

-- The enrollment group of a row of IoT Central's export file, and what is
-- wrong with its SAS keys and X.509 thumbprints (NULL when nothing).  A
-- key must be the one a group derives for the device (else the device
-- could not connect with it): the named group's, else the first of the
-- candidates (the organization's default first) whose keys the row's
-- match; a row without keys gets the named group.  The group is NULL when
-- it is the organization's default, which the device then follows.
-- Messages never show a key.
CREATE FUNCTION fleet_internal.device_import_credentials(
    s record, candidates fleet.enrollment_groups[], named_group text,
    OUT enrollment_group_id text, OUT problem text)
RETURNS record
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    first   fleet.enrollment_groups := candidates[1];
    matched fleet.enrollment_groups;
BEGIN
    enrollment_group_id := named_group;
    IF (s.sas_key_primary IS NOT NULL OR s.sas_key_secondary IS NOT NULL) AND first.attestation = 'x509' THEN
        problem := format('device "%s" has SAS keys, but enrollment group "%s" is an X.509 group, whose devices have none: leave the keys out, or import it into a group with keys',
                          s.device_id, first.id);
        RETURN;
    END IF;
    IF s.sas_key_primary IS NOT NULL OR s.sas_key_secondary IS NOT NULL THEN
        -- (a loop over a few groups, for one row)
        FOR i IN 1 .. coalesce(cardinality(candidates), 0) LOOP
            IF (s.sas_key_primary IS NULL OR s.sas_key_primary = fleet.compute_device_key(candidates[i].primary_key, s.device_id))
               AND (s.sas_key_secondary IS NULL OR s.sas_key_secondary = fleet.compute_device_key(candidates[i].secondary_key, s.device_id)) THEN
                matched := candidates[i];
                EXIT;
            END IF;
        END LOOP;
        IF matched.id IS NULL AND NOT first.enabled THEN
            matched := first;     -- (refused below, for what the operator can change)
        END IF;
        IF matched.id IS NULL THEN
            problem := format('%s of device "%s" is not the key enrollment group "%s" gives it%s, so the device could not connect with it: %s, or leave the keys out',
                              CASE WHEN s.sas_key_primary IS NOT NULL
                                        AND s.sas_key_primary IS DISTINCT FROM fleet.compute_device_key(first.primary_key, s.device_id)
                                   THEN 'IOTC_SASKEY_PRIMARY' ELSE 'IOTC_SASKEY_SECONDARY' END,
                              s.device_id, first.id,
                              CASE WHEN named_group IS NULL AND cardinality(candidates) > 1 THEN ' (nor any other group of its organization)' ELSE '' END,
                              CASE WHEN named_group IS NULL
                                   THEN 'adopt the group its keys came from with fleet.import_enrollment_group() and IoT Central''s keys'
                                   ELSE 'make the group''s keys the ones the device''s keys came from' END);
            RETURN;
        END IF;
        IF NOT matched.enabled THEN
            problem := format('device "%s" has SAS keys, but enrollment group "%s" is disabled: enable it, or leave the keys out', s.device_id, matched.id);
            RETURN;
        END IF;
        -- (the group the device would derive from anyway stays implicit)
        enrollment_group_id := CASE WHEN matched.id = first.id AND named_group IS NULL THEN NULL ELSE matched.id END;
    END IF;
    IF s.x509_thumbprint_primary !~ '^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$' THEN
        problem := format('IOTC_X509THUMBPRINT_PRIMARY of device "%s" is not a certificate thumbprint (40 or 64 hexadecimal digits)', s.device_id);
    ELSIF s.x509_thumbprint_secondary !~ '^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$' THEN
        problem := format('IOTC_X509THUMBPRINT_SECONDARY of device "%s" is not a certificate thumbprint (40 or 64 hexadecimal digits)', s.device_id);
    END IF;
END;
$$;

-- BEFORE statement: refuse an unknown target, or a caller who may not
-- import there, before COPY reads a row; the import draws its operation id
-- now, so that a failure is recorded under it.  SECURITY DEFINER, as is the
-- AFTER trigger: members write devices only through the API, and every
-- import takes the bulk path.
CREATE FUNCTION fleet_internal.device_import_check_target()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    target record := fleet_internal.device_import_target(caller);
BEGIN
    PERFORM fleet_internal.require_app_role(target.organization, 'operator', 'importing devices', caller);
    PERFORM fleet_internal.device_import_enrollment_group(target.organization, caller);
    PERFORM fleet_internal.device_import_begin(nextval('fleet.device_operations_id_seq'),
                                               target.template, target.organization);
    RETURN NULL;
END;
$$;

-- AFTER statement: register the good rows and record the others, set-based.
--
-- The fast path inserts every valid row with the table's multi-row insert,
-- as COPY does (device_import_register, in C), or with one plain INSERT where
-- that does not apply.  When an id repeats
-- in the file or is already registered (perhaps by an import running at the
-- same time), that INSERT fails and is rolled back, and the slow path
-- classifies: ON CONFLICT DO NOTHING, then the rows it skipped are either
-- repeats of an earlier line or already registered.  ON CONFLICT costs about
-- 40 % more per row, so it is kept for files that need it.
CREATE FUNCTION fleet_internal.device_import_finish()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller      name := fleet_internal.calling_role();
    target      record := fleet_internal.device_import_target(caller);
    op_id       bigint := fleet_internal.device_import_operation_id();
    n_rows      bigint := fleet_internal.device_import_staged_count();
    n_imported  bigint;
    n_conflicts bigint := 0;
    n_invalid   bigint := 0;
    n_rejected  bigint;
    named_group text := fleet_internal.device_import_enrollment_group(target.organization, caller);
    candidates  fleet.enrollment_groups[];   -- what imported SAS keys may match, in order
BEGIN
    -- devices are imported as devices (not IoT Edge): the named group, else
    -- their organization's default group for devices, then the other groups
    -- with keys they may name, nearest first
    candidates := ARRAY(
        SELECT g FROM fleet.enrollment_groups g JOIN fleet.organizations o ON o.id = target.organization
         WHERE CASE WHEN named_group IS NOT NULL THEN g.id = named_group
                    ELSE g.organization_id = ANY (o.path) AND NOT g.edge AND g.attestation = 'symmetricKey' END
         ORDER BY g.id IS DISTINCT FROM (SELECT x.group_id FROM fleet_internal.organization_enrollment_groups x
                                          WHERE x.organization_id = target.organization AND NOT x.edge),
                  array_position(o.path, g.organization_id) DESC, g.id);
    -- they stay while the devices are imported to name them
    -- (delete_enrollment_group locks a group it deletes)
    PERFORM 1 FROM fleet.enrollment_groups g WHERE g.id IN (SELECT c.id FROM unnest(candidates) c) FOR KEY SHARE;

    INSERT INTO fleet.device_operations (id, kind, status, template_id, organization_id, started_by, started_at)
    VALUES (op_id, 'import', 'running', target.template, target.organization, caller, statement_timestamp());

    BEGIN
        -- (the bulk path sets no enrollment group)
        n_imported := CASE WHEN named_group IS NULL
                           THEN fleet_internal.device_import_register(op_id, target.template, target.organization)
                           ELSE -1 END;
        IF n_imported < 0 THEN
            -- no bulk path (the table has a trigger of someone's): a plain INSERT
            -- (also where rows carry keys to check and thumbprints to store)
            INSERT INTO fleet.devices (id, display_name, template_id, organization_id, import_operation_id,
                                       x509_thumbprint_primary, x509_thumbprint_secondary, enrollment_group_id)
            SELECT s.device_id, coalesce(nullif(s.display_name, ''), s.device_id),
                   target.template, target.organization, op_id,
                   s.x509_thumbprint_primary, s.x509_thumbprint_secondary, c.enrollment_group_id
              FROM fleet_internal.device_import_staged_rows() s
             CROSS JOIN LATERAL fleet_internal.device_import_credentials(s, candidates, named_group) c
             WHERE fleet_internal.device_identity_problem(s.device_id, s.display_name) IS NULL
               AND c.problem IS NULL;
            GET DIAGNOSTICS n_imported = ROW_COUNT;
        END IF;
    EXCEPTION WHEN unique_violation OR internal_error THEN
        -- (Citus passes a shard's unique violation on as an internal error)
        IF SQLSTATE = 'XX000' AND SQLERRM NOT LIKE 'duplicate key value violates unique constraint%' THEN
            RAISE;
        END IF;
        WITH valid AS (
            SELECT s.line, s.device_id, s.display_name, s.x509_thumbprint_primary, s.x509_thumbprint_secondary,
                   c.enrollment_group_id
              FROM fleet_internal.device_import_staged_rows() s
             CROSS JOIN LATERAL fleet_internal.device_import_credentials(s, candidates, named_group) c
             WHERE fleet_internal.device_identity_problem(s.device_id, s.display_name) IS NULL
               AND c.problem IS NULL
        ),
        inserted AS (
            -- rows go in file order, so of repeated ids the first line wins
            INSERT INTO fleet.devices (id, display_name, template_id, organization_id, import_operation_id,
                                       x509_thumbprint_primary, x509_thumbprint_secondary, enrollment_group_id)
            SELECT v.device_id, coalesce(nullif(v.display_name, ''), v.device_id),
                   target.template, target.organization, op_id,
                   v.x509_thumbprint_primary, v.x509_thumbprint_secondary, v.enrollment_group_id
              FROM valid v
            ON CONFLICT (id) DO NOTHING
            RETURNING id
        ),
        conflicts AS (
            INSERT INTO fleet.device_operation_errors (operation_id, line, device_id, error)
            SELECT op_id, c.line, c.device_id,
                   CASE WHEN c.line <> c.first_line
                        THEN format('device ID "%s" repeats line %s of this file%s', c.device_id, c.first_line,
                                    CASE WHEN EXISTS (SELECT 1 FROM inserted i WHERE i.id = c.device_id)
                                         THEN '; only the first is imported' ELSE '' END)
                        ELSE format('device ID "%s" is already registered', c.device_id)
                   END
              FROM (SELECT v.line, v.device_id, min(v.line) OVER (PARTITION BY v.device_id) AS first_line
                      FROM valid v) c
             WHERE c.line <> c.first_line
                OR NOT EXISTS (SELECT 1 FROM inserted i WHERE i.id = c.device_id)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM conflicts)
          INTO n_imported, n_conflicts;
    END;

    IF n_imported + n_conflicts < n_rows THEN
        INSERT INTO fleet.device_operation_errors (operation_id, line, device_id, error)
        SELECT op_id, p.line, p.device_id, p.problem
          FROM (SELECT s.line, s.device_id,
                       coalesce(fleet_internal.device_identity_problem(s.device_id, s.display_name), c.problem) AS problem
                  FROM fleet_internal.device_import_staged_rows() s
                 CROSS JOIN LATERAL fleet_internal.device_import_credentials(s, candidates, named_group) c) p
         WHERE p.problem IS NOT NULL;
        GET DIAGNOSTICS n_invalid = ROW_COUNT;
    END IF;
    PERFORM fleet_internal.device_import_release();

    n_rejected := n_conflicts + n_invalid;
    IF n_rows <> n_imported + n_rejected THEN
        RAISE EXCEPTION 'device import lost track of % rows', n_rows - n_imported - n_rejected
            USING ERRCODE = 'internal_error';
    END IF;

    UPDATE fleet.device_operations o
       SET status = CASE WHEN n_rejected = 0 THEN 'completed'
                         WHEN n_imported = 0 THEN 'failed'
                         ELSE 'completed_with_errors' END,
           rows = n_rows, imported = n_imported, rejected = n_rejected,
           finished_at = fleet_internal.moment()
     WHERE o.id = op_id;

    IF n_rejected = 0 THEN
        RAISE NOTICE 'device import %: imported % of % devices', op_id, n_imported, n_rows;
    ELSE
        RAISE NOTICE 'device import %: imported % of % devices, rejected %', op_id, n_imported, n_rows, n_rejected
            USING HINT = format('See why with: SELECT line, device_id, error FROM fleet.device_operation_errors WHERE operation_id = %s ORDER BY line;', op_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER check_target BEFORE INSERT ON fleet.device_import
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_internal.device_import_check_target();
CREATE TRIGGER stage_row INSTEAD OF INSERT ON fleet.device_import
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.device_import_stage_row();
CREATE TRIGGER finish AFTER INSERT ON fleet.device_import
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_internal.device_import_finish();
CREATE TRIGGER check_target BEFORE INSERT ON fleet.device_import_with_keys
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_internal.device_import_check_target();
CREATE TRIGGER stage_row INSTEAD OF INSERT ON fleet.device_import_with_keys
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.device_import_stage_row();
CREATE TRIGGER finish AFTER INSERT ON fleet.device_import_with_keys
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_internal.device_import_finish();

-- The imports that failed as a whole, from their slots in shared memory
-- (src/import_tracking.c): what they were, how far they got, why.
CREATE FUNCTION fleet_internal.import_failures(OUT operation_id bigint, OUT template_id text,
                                               OUT organization_id text, OUT started_by text,
                                               OUT started_at timestamptz, OUT failed_at timestamptz,
                                               OUT rows bigint, OUT error text, OUT pid int)
RETURNS SETOF record
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'import_failures';

-- The operation id of this session's latest import, whatever became of it,
-- for clients to read its outcome from fleet.device_operations.
CREATE FUNCTION fleet.last_device_operation()
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'last_device_operation';
COMMENT ON FUNCTION fleet.last_device_operation() IS 'The fleet.device_operations id of this session''s latest device import (NULL before the first)';

-- How many failed imports wait to be recorded.
CREATE FUNCTION fleet_internal.import_failures_pending()
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'import_failures_pending';

-- The engine records them as failed operations, under the ids they drew
-- (rows: the rows read before the failure; none was imported).
CREATE FUNCTION fleet_internal.record_failed_imports()
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    -- (each slot read here is freed when this commits: src/import_tracking.c)
    INSERT INTO fleet.device_operations (id, kind, status, template_id, organization_id, rows, imported,
                                         rejected, started_by, started_at, finished_at, error)
    SELECT f.operation_id, 'import', 'failed', f.template_id, f.organization_id, f.rows, 0, 0,
           f.started_by, f.started_at, f.failed_at, f.error
      FROM fleet_internal.import_failures() f
    ON CONFLICT (id) DO NOTHING;
$$;

-- src/sql/device_export.sql
-- Device export in IoT Central's CSV format, with SAS keys derived from the
-- enrollment groups:
--
--   \copy (SELECT * FROM fleet.export_devices('dtmi:com:example:Thermostat;1')) TO 'devices.csv' WITH (FORMAT csv, HEADER)
--
-- Rows come in no particular order; add ORDER BY 1 to the query for one.

CREATE FUNCTION fleet.export_devices(template text DEFAULT NULL, organization text DEFAULT NULL,
                                     spreadsheet_safe boolean DEFAULT false)
RETURNS TABLE ("IOTC_DEVICEID" text, "IOTC_DEVICENAME" text,
               "IOTC_SASKEY_PRIMARY" text, "IOTC_SASKEY_SECONDARY" text,
               "IOTC_X509THUMBPRINT_PRIMARY" text, "IOTC_X509THUMBPRINT_SECONDARY" text)
LANGUAGE plpgsql STABLE
-- SECURITY DEFINER: the keys derive from the enrollment group keys, which
-- members may not read; this function reads them for administrators of the
-- devices' organizations, and returns only their devices.  EXECUTE stays
-- with PUBLIC: the checks are inside.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- (two key derivations a device make a million devices' export look
-- costly enough to compile; compiling takes longer than it saves)
SET jit = off
AS $$
DECLARE
    caller       name := fleet_internal.calling_role();
    everything   boolean := fleet_internal.role_sees_everything(caller);
    scope        text[];
    device_group fleet.enrollment_groups;
    edge_group   fleet.enrollment_groups;
    device_primary   text;
    device_secondary text;
    edge_primary     text;
    edge_secondary   text;
    -- whether any device names its group (the partial index answers at
    -- once): if none does, their branch and its filter go from the plan.
    -- (The function is STABLE: this and the query below see one snapshot,
    -- so a device named meanwhile is in neither or in both.)
    any_named        boolean := EXISTS (SELECT 1 FROM fleet.devices d WHERE d.enrollment_group_id IS NOT NULL);
BEGIN
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
    IF organization IS NOT NULL THEN
        PERFORM fleet_internal.require_organization(organization, caller);
        PERFORM fleet_internal.require_app_role(organization, 'administrator', 'exporting devices with their keys', caller);
    ELSIF NOT everything AND NOT EXISTS (SELECT 1 FROM fleet_internal.organizations_for('administrator', caller)) THEN
        RAISE EXCEPTION 'permission denied to export devices with their keys'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Exports carry device keys: they are for administrators of the devices'' organizations.',
                  HINT = 'An administrator grants the role with fleet.grant_organization().';
    END IF;

    -- the organizations whose devices are exported (NULL: all of them)
    IF organization IS NOT NULL OR NOT everything THEN
        scope := ARRAY(SELECT o.id FROM fleet.organizations o
                        WHERE (organization IS NULL OR o.path @> ARRAY[organization])
                          AND (everything OR o.id IN (SELECT fleet_internal.organizations_for('administrator', caller))));
    END IF;

    -- When every organization in scope derives its keys from the same pair
    -- of groups (one organization, or a fleet of 0.1's organizations), the
    -- keys are constants of the query: joining each device to its
    -- organization's groups costs a quarter of the export.  (Devices that
    -- name their own group are a branch of their own.)
    IF (SELECT count(DISTINCT x.group_id) = count(DISTINCT x.edge)
          FROM fleet_internal.organization_enrollment_groups x
         WHERE scope IS NULL OR x.organization_id = ANY (scope)) THEN
        SELECT g.* INTO device_group
          FROM fleet_internal.organization_enrollment_groups x JOIN fleet.enrollment_groups g ON g.id = x.group_id
         WHERE (scope IS NULL OR x.organization_id = ANY (scope)) AND NOT x.edge
         LIMIT 1;
        SELECT g.* INTO edge_group
          FROM fleet_internal.organization_enrollment_groups x JOIN fleet.enrollment_groups g ON g.id = x.group_id
         WHERE (scope IS NULL OR x.organization_id = ANY (scope)) AND x.edge
         LIMIT 1;
    END IF;

    IF device_group.enabled THEN
        device_primary := device_group.primary_key;
        device_secondary := device_group.secondary_key;
    END IF;
    IF edge_group.enabled THEN
        edge_primary := edge_group.primary_key;
        edge_secondary := edge_group.secondary_key;
    END IF;

    -- (cells are neutralised only when asked: a function call per cell of a
    -- million rows costs seconds)
    RETURN QUERY
    SELECT CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(k.id, true) ELSE k.id END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(k.display_name, true) ELSE k.display_name END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(k.primary_key, true) ELSE k.primary_key END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(k.secondary_key, true) ELSE k.secondary_key END,
           k.x509_thumbprint_primary,      -- NULL: an empty CSV field
           k.x509_thumbprint_secondary
      FROM (SELECT d.id, d.display_name, d.x509_thumbprint_primary, d.x509_thumbprint_secondary,
                   -- (a disabled group's devices get no keys: NULL in, NULL out)
                   fleet.compute_device_key(CASE WHEN d.edge THEN edge_primary ELSE device_primary END, d.id) AS primary_key,
                   fleet.compute_device_key(CASE WHEN d.edge THEN edge_secondary ELSE device_secondary END, d.id) AS secondary_key
              FROM fleet.devices d
             WHERE device_group.id IS NOT NULL AND (NOT any_named OR d.enrollment_group_id IS NULL)
               AND (template IS NULL OR d.template_id = template)
               AND (scope IS NULL OR d.organization_id IN (SELECT unnest(scope)))
            UNION ALL
            SELECT d.id, d.display_name, d.x509_thumbprint_primary, d.x509_thumbprint_secondary,
                   fleet.compute_device_key(CASE WHEN g.enabled THEN g.primary_key END, d.id),
                   fleet.compute_device_key(CASE WHEN g.enabled THEN g.secondary_key END, d.id)
              FROM fleet.devices d
              -- (a hash join with one row per organization and kind)
              JOIN fleet_internal.organization_enrollment_groups g
                ON g.organization_id = d.organization_id AND g.edge = d.edge
             WHERE device_group.id IS NULL AND (NOT any_named OR d.enrollment_group_id IS NULL)
               AND (template IS NULL OR d.template_id = template)
               AND (scope IS NULL OR d.organization_id IN (SELECT unnest(scope)))
            UNION ALL
            -- devices that name their group, found through the partial index
            -- on the column (a join on every device, even one that names no
            -- group, costs the export 5 %)
            SELECT d.id, d.display_name, d.x509_thumbprint_primary, d.x509_thumbprint_secondary,
                   fleet.compute_device_key(CASE WHEN n.enabled THEN n.primary_key END, d.id),
                   fleet.compute_device_key(CASE WHEN n.enabled THEN n.secondary_key END, d.id)
              FROM fleet.devices d
              -- (a device is never left out: a group gone gives no keys)
              LEFT JOIN fleet.enrollment_groups n ON n.id = d.enrollment_group_id
             WHERE any_named AND d.enrollment_group_id IS NOT NULL
               AND (template IS NULL OR d.template_id = template)
               AND (scope IS NULL OR d.organization_id IN (SELECT unnest(scope)))) k;
END;
$$;
COMMENT ON FUNCTION fleet.export_devices(text, text, boolean) IS 'Devices in IoT Central''s export format (IOTC_DEVICEID, IOTC_DEVICENAME, SAS keys, X.509 thumbprints), optionally of one template and one organization subtree';

-- src/sql/schema_values.sql
-- Does a JSON value match a DTDL schema (as stored in template_contents,
-- resolved)?  Jobs check every value they will write, at creation, so a job
-- that can never succeed is refused instead of run.

-- NULL when value matches schema (and IoT Central's min/max), else what is
-- wrong, naming where inside the value.
CREATE FUNCTION fleet_internal.schema_value_problem(value jsonb, schema jsonb, min_value numeric DEFAULT NULL,
                                           max_value numeric DEFAULT NULL, place text DEFAULT 'the value')
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind    text;
    types   text[];
    element jsonb;
    field   record;
    problem text;
    n       int := 0;
BEGIN
    IF value IS NULL OR jsonb_typeof(value) = 'null' THEN
        RETURN format('%s is missing', place);
    END IF;

    IF jsonb_typeof(schema) = 'string' THEN
        kind := schema #>> '{}';
        CASE
        WHEN kind = 'boolean' THEN
            IF jsonb_typeof(value) <> 'boolean' THEN
                RETURN format('%s must be true or false, not %s', place, value);
            END IF;
        WHEN kind IN ('double', 'float', 'integer', 'long') THEN
            IF jsonb_typeof(value) <> 'number' THEN
                RETURN format('%s must be a number (%s), not %s', place, kind, value);
            END IF;
            IF kind IN ('integer', 'long') AND (value #>> '{}')::numeric <> trunc((value #>> '{}')::numeric) THEN
                RETURN format('%s must be a whole number (%s), not %s', place, kind, value);
            END IF;
            IF kind = 'integer' AND (value #>> '{}')::numeric NOT BETWEEN -2147483648 AND 2147483647 THEN
                RETURN format('%s is out of range for an integer: %s', place, value);
            END IF;
            IF min_value IS NOT NULL AND (value #>> '{}')::numeric < min_value THEN
                RETURN format('%s %s is below the minimum %s', place, value, min_value);
            END IF;
            IF max_value IS NOT NULL AND (value #>> '{}')::numeric > max_value THEN
                RETURN format('%s %s is above the maximum %s', place, value, max_value);
            END IF;
        WHEN kind IN ('string', 'date', 'dateTime', 'time', 'duration') THEN
            IF jsonb_typeof(value) <> 'string' THEN
                RETURN format('%s must be a string%s, not %s', place,
                              CASE WHEN kind <> 'string' THEN format(' (%s)', kind) ELSE '' END, value);
            END IF;
            IF kind = 'date' AND NOT (value #>> '{}') ~ '^\d{4}-\d{2}-\d{2}$' THEN
                RETURN format('%s must be a date such as "2027-03-01", not %s', place, value);
            ELSIF kind = 'dateTime' AND NOT (value #>> '{}') ~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$' THEN
                RETURN format('%s must be an ISO 8601 date and time such as "2027-03-01T09:00:00Z", not %s', place, value);
            ELSIF kind = 'time' AND NOT (value #>> '{}') ~ '^\d{2}:\d{2}(:\d{2}(\.\d+)?)?$' THEN
                RETURN format('%s must be a time such as "09:30:00", not %s', place, value);
            ELSIF kind = 'duration' AND NOT (value #>> '{}') ~ '^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$' THEN
                RETURN format('%s must be an ISO 8601 duration such as "PT15M", not %s', place, value);
            END IF;
            IF kind IN ('date', 'dateTime', 'time') THEN
                BEGIN
                    CASE kind
                    WHEN 'date' THEN PERFORM (value #>> '{}')::date;
                    WHEN 'dateTime' THEN PERFORM (value #>> '{}')::timestamptz;
                    ELSE PERFORM (value #>> '{}')::time;
                    END CASE;
                EXCEPTION WHEN OTHERS THEN
                    RETURN format('%s is not a valid %s: %s', place, kind, value);
                END;
            END IF;
        WHEN kind IN ('geopoint') THEN
            IF jsonb_typeof(value) <> 'object' OR jsonb_typeof(value -> 'lat') <> 'number'
               OR jsonb_typeof(value -> 'lon') <> 'number' THEN
                RETURN format('%s must be a geopoint such as {"lat": 47.6, "lon": -122.1}, not %s', place, value);
            END IF;
        WHEN kind IN ('vector') THEN
            IF jsonb_typeof(value) <> 'object' OR jsonb_typeof(value -> 'x') <> 'number'
               OR jsonb_typeof(value -> 'y') <> 'number' OR jsonb_typeof(value -> 'z') <> 'number' THEN
                RETURN format('%s must be a vector such as {"x": 1, "y": 0, "z": 0}, not %s', place, value);
            END IF;
        ELSE
            -- DTDL's geospatial schemas are GeoJSON objects
            IF jsonb_typeof(value) <> 'object' OR NOT value ? 'type' OR NOT value ? 'coordinates' THEN
                RETURN format('%s must be a GeoJSON %s with "type" and "coordinates", not %s', place, kind, value);
            END IF;
        END CASE;
        RETURN NULL;
    END IF;

    types := fleet_internal.dtdl_types(schema -> '@type', 'a stored schema');
    IF 'Enum' = ANY (types) THEN
        IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(schema -> 'enumValues') e WHERE e -> 'enumValue' = schema_value_problem.value) THEN
            RETURN format('%s must be one of %s, not %s', place,
                          (SELECT string_agg(e ->> 'enumValue', ', ') FROM jsonb_array_elements(schema -> 'enumValues') e),
                          value);
        END IF;
    ELSIF 'Object' = ANY (types) THEN
        IF jsonb_typeof(value) <> 'object' THEN
            RETURN format('%s must be an object, not %s', place, value);
        END IF;
        SELECT k INTO kind FROM jsonb_object_keys(value) k
         WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(schema -> 'fields') f WHERE f ->> 'name' = k)
         LIMIT 1;
        IF kind IS NOT NULL THEN
            RETURN format('%s has a field "%s" its schema does not have', place, kind);
        END IF;
        FOR field IN SELECT f ->> 'name' AS name, f -> 'schema' AS schema FROM jsonb_array_elements(schema -> 'fields') f LOOP
            CONTINUE WHEN NOT value ? field.name;
            problem := fleet_internal.schema_value_problem(value -> field.name, field.schema, NULL, NULL,
                                                  format('field "%s" of %s', field.name, place));
            IF problem IS NOT NULL THEN
                RETURN problem;
            END IF;
        END LOOP;
    ELSIF 'Map' = ANY (types) THEN
        IF jsonb_typeof(value) <> 'object' THEN
            RETURN format('%s must be an object (a map), not %s', place, value);
        END IF;
        FOR field IN SELECT e.key AS name, e.value AS value FROM jsonb_each(value) e LOOP
            problem := fleet_internal.schema_value_problem(field.value, schema #> '{mapValue,schema}', NULL, NULL,
                                                  format('entry "%s" of %s', field.name, place));
            IF problem IS NOT NULL THEN
                RETURN problem;
            END IF;
        END LOOP;
    ELSIF 'Array' = ANY (types) THEN
        IF jsonb_typeof(value) <> 'array' THEN
            RETURN format('%s must be an array, not %s', place, value);
        END IF;
        FOR element IN SELECT e FROM jsonb_array_elements(value) e LOOP
            n := n + 1;
            problem := fleet_internal.schema_value_problem(element, schema -> 'elementSchema', NULL, NULL,
                                                  format('element %s of %s', n, place));
            IF problem IS NOT NULL THEN
                RETURN problem;
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION fleet_internal.schema_value_problem(jsonb, jsonb, numeric, numeric, text) IS 'NULL when the JSON value matches the DTDL schema and range, else what is wrong';

-- src/sql/job_definitions.sql
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

-- src/sql/job_rollouts.sql
-- Rollout controls: pg_fleet's extensions to IoT Central's job body, under
-- one key, "rollout", so that IoT Central's own fields keep their meaning:
--
--   "rollout": {
--     "maximumPerMinute": 1000,                     devices dispatched a minute, at most
--     "exponentialRate": {                          a ramp, as AWS IoT Jobs defines it
--       "baseRatePerMinute": 50, "incrementFactor": 2,
--       "rateIncreaseCriteria": {"numberOfNotifiedDevices": 100}
--                            or {"numberOfSucceededDevices": 100}},
--     "onThreshold": "pause",                       the cancellation threshold pauses (default "cancel")
--     "abortCriteria": [{"failureType": "TIMED_OUT", as AWS IoT Jobs: more than 10 % of at least 100
--       "thresholdPercentage": 10,                  finished devices failed so (FAILED: not by a
--       "minNumberOfExecutedDevices": 100,          timeout, TIMED_OUT, ALL) cancels the job, or
--       "action": "PAUSE"}],                        pauses it
--     "canary": {"devices": ["id", ...]}            a first batch of these devices (those of the
--            or {"group": "canaries"}               job's group), before the batches it asks for
--     "promotion": {"mode": "manual"}               each next batch waits for fleet.advance_job(), or
--               {"successPercentage": 95}           starts only when the last reached 95 % (else pauses)
--     "maintenanceWindows": [                       dispatch only inside these weekly windows,
--       {"days": ["SAT", "SUN"], "start": "02:00", "duration": "PT4H"}],
--     "timeZone": "Europe/Berlin",                  in this time zone (default UTC), DST-correct
--     "continuous": true,                           the job stays active: devices that join its group
--     "maximumDevices": 50000,                      later get it, once each, up to this many in all
--     "retries": [{"failureType": "TIMED_OUT",     a command job's failed devices are offered
--       "numberOfRetries": 3,                       again (AWS IoT Jobs' retry config), after a
--       "backoff": {"type": "exponential",          backoff: fixed or doubling from base, at most
--                   "base": "PT10S", "maximum": "PT5M", "jitter": true}}],   maximum, with jitter
--     "commandTimeout": "PT2M",
--     "inProgressTimeout": "PT30M",                 a command the device reported under way (202)
--                                                   must end this long after its last report                     a command job's timeout (default fleet.command_timeout)
--     "endTime": "2026-12-24T18:00:00Z",            the job ends then ...
--     "maximumDuration": "PT6H",                    ... or this long after it started
--     "endBehavior": "STOP_ROLLOUT"                 ... and stops (resumable), "CANCEL"s, or
--   }                                               "FORCE_CANCEL"s (fails what is in flight)
--
-- Dispatched: a property-type job's device changed, a command job's device
-- offered to gateways.  Every step of a rate-limited job records what it
-- dispatched (fleet_internal.job_dispatches, committed with the step), so
-- the rate holds over any minute, across batches and engine restarts.
-- Every change of a job's or a batch's state, and each step's progress,
-- is announced on the channel fleet_jobs (fleet_internal.job_event()).

-- An ISO 8601 duration ("PT30S") or a number of seconds, as an interval
-- between bounds, or an error naming the value.
CREATE FUNCTION fleet_internal.rollout_interval(value jsonb, what text, low interval, high interval)
RETURNS interval
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result interval;
BEGIN
    BEGIN
        result := CASE jsonb_typeof(value)
                  WHEN 'number' THEN make_interval(secs => (value #>> '{}')::float8)
                  WHEN 'string' THEN (value #>> '{}')::interval END;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow
                   OR numeric_value_out_of_range THEN
        result := NULL;
    END;
    IF result IS NULL OR result < low OR result > high THEN
        RAISE EXCEPTION '% % is not a duration from % to %', what, value, low, high
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write an ISO 8601 duration such as "PT30S" or "PT2H", or a number of seconds.';
    END IF;
    RETURN result;
END;
$$;

-- A whole number between bounds, or an error naming the value.
CREATE FUNCTION fleet_internal.rollout_count(value jsonb, what text, low bigint, high bigint)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(value) IS DISTINCT FROM 'number' OR (value #>> '{}')::numeric <> trunc((value #>> '{}')::numeric)
       OR (value #>> '{}')::numeric NOT BETWEEN low AND high THEN
        RAISE EXCEPTION '% % is not a whole number from % to %', what, coalesce(value::text, 'null'), low, high
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (value #>> '{}')::bigint;
END;
$$;

-- A rollout's "maintenanceWindows", checked: a non-empty array of weekly
-- windows {"days": ["MON".."SUN"], "start": "HH:MM", "duration": ISO 8601},
-- each as the engine reads it (days as ISO day numbers, 1 = Monday).
CREATE FUNCTION fleet_internal.maintenance_windows(windows jsonb, label text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb := '[]';
    w      jsonb;
    n      int := 0;
    what   text;
    days   int[];
BEGIN
    IF jsonb_typeof(windows) IS DISTINCT FROM 'array' OR jsonb_array_length(windows) NOT BETWEEN 1 AND 50 THEN
        RAISE EXCEPTION '"maintenanceWindows" of % must be an array of 1 to 50 windows, not %', label, windows
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write [{"days": ["SAT", "SUN"], "start": "02:00", "duration": "PT4H"}].';
    END IF;
    FOR w IN SELECT e FROM jsonb_array_elements(windows) e LOOP
        n := n + 1;
        what := format('maintenance window %s of %s', n, label);
        IF jsonb_typeof(w) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION '% must be a JSON object, not %', what, w
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"days": ["SAT", "SUN"], "start": "02:00", "duration": "PT4H"}.';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(w, '{days,start,duration}', what);
        days := ARRAY(SELECT array_position('{MON,TUE,WED,THU,FRI,SAT,SUN}'::text[], upper(d #>> '{}'))
                        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w -> 'days') = 'array' THEN w -> 'days' END) d);
        IF jsonb_typeof(w -> 'days') IS DISTINCT FROM 'array' OR cardinality(days) = 0 OR array_position(days, NULL) IS NOT NULL
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(w -> 'days') d WHERE jsonb_typeof(d) <> 'string') THEN
            RAISE EXCEPTION '"days" % of % must name days of the week', coalesce(w -> 'days', 'null'), what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write them as "MON", "TUE", "WED", "THU", "FRI", "SAT" and "SUN".';
        END IF;
        IF jsonb_typeof(w -> 'start') IS DISTINCT FROM 'string' OR w ->> 'start' !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' THEN
            RAISE EXCEPTION '"start" % of % is not a time of day', coalesce(w -> 'start', 'null'), what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write it as "HH:MM" on a 24-hour clock, in the rollout''s "timeZone", such as "02:00".';
        END IF;
        result := result || jsonb_build_array(jsonb_build_object(
            'days', (SELECT jsonb_agg(DISTINCT d ORDER BY d) FROM unnest(days) d),
            'start', w ->> 'start',
            'duration', fleet_internal.rollout_interval(w -> 'duration', format('"duration" of %s', what),
                                                        interval '1 minute', interval '7 days')::text));
    END LOOP;
    RETURN result;
END;
$$;

-- One element of a rollout's list of rules by failure type ("abortCriteria",
-- "retries"), checked: a JSON object with only the given keys and a known
-- "failureType", which it returns.
CREATE FUNCTION fleet_internal.failure_type_rule(rule jsonb, keys text[], what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(rule) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% must be a JSON object, not %', what, rule
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(rule, keys, what);
    IF jsonb_typeof(rule -> 'failureType') IS DISTINCT FROM 'string'
       OR rule ->> 'failureType' NOT IN ('FAILED', 'REJECTED', 'TIMED_OUT', 'ALL') THEN
        RAISE EXCEPTION '"failureType" % of % is not "FAILED", "REJECTED", "TIMED_OUT" or "ALL"', coalesce(rule -> 'failureType', 'null'), what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'FAILED: failed otherwise; REJECTED: a device refused the command (4xx); TIMED_OUT: nobody answered in time; ALL: any.';
    END IF;
    RETURN rule ->> 'failureType';
END;
$$;

-- A rollout's "abortCriteria", checked, as AWS IoT Jobs takes them (and
-- "action": "PAUSE" besides "CANCEL").
CREATE FUNCTION fleet_internal.abort_criteria(criteria jsonb, label text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb := '[]';
    c      jsonb;
    n      int := 0;
    what   text;
BEGIN
    IF jsonb_typeof(criteria) IS DISTINCT FROM 'array' OR jsonb_array_length(criteria) NOT BETWEEN 1 AND 10 THEN
        RAISE EXCEPTION '"abortCriteria" of % must be an array of 1 to 10 criteria, not %', label, criteria
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write [{"failureType": "ALL", "thresholdPercentage": 10, "minNumberOfExecutedDevices": 100, "action": "CANCEL"}].';
    END IF;
    FOR c IN SELECT e FROM jsonb_array_elements(criteria) e LOOP
        n := n + 1;
        what := format('abort criterion %s of %s', n, label);
        PERFORM fleet_internal.failure_type_rule(c, '{failureType,thresholdPercentage,minNumberOfExecutedDevices,action}', what);
        IF jsonb_typeof(c -> 'thresholdPercentage') IS DISTINCT FROM 'number'
           OR (c ->> 'thresholdPercentage')::numeric NOT BETWEEN 0 AND 100 THEN
            RAISE EXCEPTION '"thresholdPercentage" % of % is not a number from 0 to 100', coalesce(c -> 'thresholdPercentage', 'null'), what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF c ? 'action' AND (jsonb_typeof(c -> 'action') IS DISTINCT FROM 'string' OR c ->> 'action' NOT IN ('CANCEL', 'PAUSE')) THEN
            RAISE EXCEPTION '"action" % of % is neither "CANCEL" nor "PAUSE"', c -> 'action', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_array(jsonb_build_object(
            'failureType', c ->> 'failureType',
            'thresholdPercentage', (c ->> 'thresholdPercentage')::numeric,
            'minNumberOfExecutedDevices', fleet_internal.rollout_count(c -> 'minNumberOfExecutedDevices',
                                              format('"minNumberOfExecutedDevices" of %s', what), 1, 1000000000),
            'action', coalesce(c ->> 'action', 'CANCEL')));
    END LOOP;
    RETURN result;
END;
$$;

-- The first of a job's abort criteria its outcomes meet (executed:
-- completed and failed; failed by type), counted since a pause one of them
-- made (abort_base), with the reason; no row when none is met.
CREATE FUNCTION fleet_internal.abort_criterion(job fleet.jobs, completed bigint, failed bigint, timed_out bigint,
                                               rejected bigint, OUT action text, OUT reason text)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH since AS (
        SELECT completed - coalesce((job.abort_base ->> 'completed')::bigint, 0) AS completed,
               failed - coalesce((job.abort_base ->> 'failed')::bigint, 0) AS failed,
               timed_out - coalesce((job.abort_base ->> 'timedOut')::bigint, 0) AS timed_out,
               rejected - coalesce((job.abort_base ->> 'rejected')::bigint, 0) AS rejected
    )
    SELECT c ->> 'action',
           format('%s: %s of %s finished devices %s (%s %%), past its abort criterion of %s %% once %s finished',
                  CASE c ->> 'action' WHEN 'PAUSE' THEN 'paused' ELSE 'cancelled' END,
                  f.n, s.completed + s.failed,
                  CASE c ->> 'failureType' WHEN 'TIMED_OUT' THEN 'timed out' WHEN 'REJECTED' THEN 'were rejected'
                                           WHEN 'FAILED' THEN 'failed otherwise' ELSE 'failed' END,
                  round(f.n * 100.0 / (s.completed + s.failed), 1), c ->> 'thresholdPercentage',
                  c ->> 'minNumberOfExecutedDevices')
      FROM since s,
           jsonb_array_elements(job.rollout -> 'abortCriteria') WITH ORDINALITY AS a(c, ord),
           LATERAL (SELECT CASE c ->> 'failureType' WHEN 'TIMED_OUT' THEN s.timed_out
                                                    WHEN 'REJECTED' THEN s.rejected
                                                    WHEN 'FAILED' THEN s.failed - s.timed_out - s.rejected
                                                    ELSE s.failed END AS n) f
     WHERE s.completed + s.failed >= (c ->> 'minNumberOfExecutedDevices')::bigint
       AND f.n * 100 > (c ->> 'thresholdPercentage')::numeric * (s.completed + s.failed)
     ORDER BY a.ord
     LIMIT 1
$$;

-- A rollout's "retries", checked: per failure type, how many times a
-- failed device is offered again, and after what backoff.
CREATE FUNCTION fleet_internal.retry_rules(rules jsonb, label text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result  jsonb := '[]';
    r       jsonb;
    backoff jsonb;
    n       int := 0;
    what    text;
BEGIN
    IF jsonb_typeof(rules) IS DISTINCT FROM 'array' OR jsonb_array_length(rules) NOT BETWEEN 1 AND 3 THEN
        RAISE EXCEPTION '"retries" of % must be an array of 1 to 3 rules, one per failure type, not %', label, rules
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write [{"failureType": "TIMED_OUT", "numberOfRetries": 3, "backoff": {"type": "exponential", "base": "PT10S"}}].';
    END IF;
    FOR r IN SELECT e FROM jsonb_array_elements(rules) e LOOP
        n := n + 1;
        what := format('retry rule %s of %s', n, label);
        PERFORM fleet_internal.failure_type_rule(r, '{failureType,numberOfRetries,backoff}', what);
        IF (SELECT count(*) FROM jsonb_array_elements(rules) o WHERE o ->> 'failureType' = r ->> 'failureType') > 1 THEN
            RAISE EXCEPTION '"retries" of % has two rules for failure type %', label, r ->> 'failureType'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        backoff := coalesce(r -> 'backoff', '{}');
        IF jsonb_typeof(backoff) <> 'object' THEN
            RAISE EXCEPTION '"backoff" % of % must be a JSON object', backoff, what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"type": "fixed" or "exponential", "base": "PT10S", "maximum": "PT5M", "jitter": true}.';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(backoff, '{type,base,maximum,jitter}', format('the "backoff" of %s', what));
        IF backoff ? 'type' AND (jsonb_typeof(backoff -> 'type') <> 'string' OR backoff ->> 'type' NOT IN ('fixed', 'exponential')) THEN
            RAISE EXCEPTION '"type" % of the "backoff" of % is neither "fixed" nor "exponential"', backoff -> 'type', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF backoff ? 'jitter' AND jsonb_typeof(backoff -> 'jitter') <> 'boolean' THEN
            RAISE EXCEPTION '"jitter" % of the "backoff" of % is neither true nor false', backoff -> 'jitter', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_array(jsonb_build_object(
            'failureType', r ->> 'failureType',
            'numberOfRetries', fleet_internal.rollout_count(r -> 'numberOfRetries', format('"numberOfRetries" of %s', what), 1, 10),
            'backoff', jsonb_build_object(
                'type', coalesce(backoff ->> 'type', 'fixed'),
                'base', CASE WHEN backoff ? 'base'
                             THEN fleet_internal.rollout_interval(backoff -> 'base', format('"base" of the "backoff" of %s', what),
                                                                  interval '0', interval '1 day')
                             ELSE interval '10 seconds' END::text,
                'maximum', CASE WHEN backoff ? 'maximum'
                                THEN fleet_internal.rollout_interval(backoff -> 'maximum', format('"maximum" of the "backoff" of %s', what),
                                                                     interval '0', interval '1 day')
                                ELSE interval '1 hour' END::text,
                'jitter', coalesce((backoff ->> 'jitter')::boolean, false))));
    END LOOP;
    RETURN result;
END;
$$;

-- The wait before a retry: the rule's base, doubled for each earlier
-- attempt when exponential, at most its maximum; with jitter, a random
-- point in its second half (so retries of devices that failed together
-- spread out).
CREATE FUNCTION fleet_internal.retry_backoff(rule jsonb, attempt int)
RETURNS interval
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT least((rule #>> '{backoff,base}')::interval
                 * CASE WHEN rule #>> '{backoff,type}' = 'exponential' THEN power(2, least(attempt - 1, 30)) ELSE 1 END,
                 (rule #>> '{backoff,maximum}')::interval)
           * CASE WHEN (rule #>> '{backoff,jitter}')::boolean THEN 0.5 + random() / 2 ELSE 1 END
$$;

-- A command window's failed deliveries that their job's "retries" allow
-- another attempt: the attempt is kept (fleet.job_device_attempts) and the
-- delivery is offered again once its backoff has passed (its deadline
-- says when, until a gateway claims it); the window stays open until then
-- and a timeout after.  Runs before the window is counted, so counts and
-- thresholds see final outcomes only.  Returns how many it offered again.
CREATE FUNCTION fleet_internal.engine_retry_failures(job fleet.jobs, w fleet.command_windows, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    now_ts  timestamptz := fleet_internal.moment(at);
    retried bigint;
    last_at timestamptz;
BEGIN
    WITH failed AS (
        SELECT jd.delivery_id, jd.device_id, jd.error, jd.gateway, jd.started_at, jd.finished_at,
               jd.response_status, jd.response,
               1 + (SELECT count(*) FROM fleet.job_device_attempts a
                     WHERE a.job_id = jd.job_id AND a.device_id = jd.device_id)::int AS attempt,
               (SELECT r FROM jsonb_array_elements(job.rollout -> 'retries') r
                 WHERE r ->> 'failureType' = fleet_internal.failure_type(jd.error)
                    OR r ->> 'failureType' = 'ALL'
                 ORDER BY r ->> 'failureType' = 'ALL'
                 LIMIT 1) AS rule
          FROM fleet.job_devices jd
         WHERE jd.delivery_id IS NOT NULL
           AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
           AND jd.status = 'failed'
           FOR UPDATE OF jd SKIP LOCKED
    ),
    due AS (
        SELECT f.*, now_ts + fleet_internal.retry_backoff(f.rule, f.attempt) AS retry_at
          FROM failed f
         WHERE f.attempt <= (f.rule ->> 'numberOfRetries')::int
    ),
    kept AS (
        INSERT INTO fleet.job_device_attempts (job_id, device_id, attempt, error, gateway, started_at, finished_at,
                                               response_status, response, retry_at)
        SELECT job.id, d.device_id, d.attempt, d.error, d.gateway, d.started_at, d.finished_at,
               d.response_status, d.response, d.retry_at
          FROM due d
    ),
    offered AS (
        UPDATE fleet.job_devices jd
           SET status = 'pending', error = NULL, gateway = NULL, started_at = NULL, finished_at = NULL,
               response_status = NULL, response = NULL, deadline = d.retry_at
          FROM due d
         WHERE jd.delivery_id = d.delivery_id AND jd.delivery_id IS NOT NULL
        RETURNING d.retry_at
    )
    SELECT count(*), max(o.retry_at) INTO retried, last_at FROM offered o;
    IF retried > 0 THEN
        UPDATE fleet.command_windows cw
           SET deadline = greatest(cw.deadline, last_at + fleet_internal.command_timeout(job.rollout)),
               next_check = least(cw.next_check, last_at + fleet_internal.command_timeout(job.rollout))
         WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        PERFORM pg_notify('fleet_commands', '');
    END IF;
    RETURN retried;
END;
$$;

-- Validates a body's "rollout" and returns it as the engine reads it
-- (durations as intervals' text, names as given).  Unknown keys are
-- refused: a misspelt option would otherwise be a rollout without it.
CREATE FUNCTION fleet_internal.job_rollout(rollout jsonb, label text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result   jsonb := '{}';
    ramp     jsonb;
    criteria jsonb;
    what     text := format('the "rollout" of %s', label);
    ends_at  timestamptz;
BEGIN
    IF rollout IS NULL OR jsonb_typeof(rollout) = 'null' THEN
        RETURN '{}';
    END IF;
    IF jsonb_typeof(rollout) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object, not %', what, rollout
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example "rollout": {"maximumPerMinute": 1000, "onThreshold": "pause"}; the README''s Rollouts section lists the options.';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(rollout,
        '{maximumPerMinute,exponentialRate,onThreshold,abortCriteria,canary,promotion,maintenanceWindows,timeZone,continuous,maximumDevices,retries,commandTimeout,inProgressTimeout,endTime,maximumDuration,endBehavior}', what);

    IF rollout ? 'maximumPerMinute' THEN
        result := result || jsonb_build_object('maximumPerMinute',
            fleet_internal.rollout_count(rollout -> 'maximumPerMinute', format('"maximumPerMinute" of %s', label), 1, 1000000000));
    END IF;
    IF rollout ? 'exponentialRate' THEN
        ramp := rollout -> 'exponentialRate';
        IF jsonb_typeof(ramp) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION '"exponentialRate" of % must be a JSON object, not %', label, ramp
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"baseRatePerMinute": 50, "incrementFactor": 2, "rateIncreaseCriteria": {"numberOfNotifiedDevices": 100}}.';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(ramp, '{baseRatePerMinute,incrementFactor,rateIncreaseCriteria}',
                                                   format('"exponentialRate" of %s', label));
        criteria := ramp -> 'rateIncreaseCriteria';
        IF jsonb_typeof(criteria) IS DISTINCT FROM 'object'
           OR (SELECT count(*) FROM jsonb_object_keys(criteria)) <> 1 THEN
            RAISE EXCEPTION '"rateIncreaseCriteria" of % must name one criterion, not %', label, coalesce(criteria::text, 'nothing')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"numberOfNotifiedDevices": N} (raised after N more devices were dispatched) or {"numberOfSucceededDevices": N} (after N more succeeded).';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(criteria, '{numberOfNotifiedDevices,numberOfSucceededDevices}',
                                                   format('"rateIncreaseCriteria" of %s', label));
        IF jsonb_typeof(ramp -> 'incrementFactor') IS DISTINCT FROM 'number'
           OR (ramp ->> 'incrementFactor')::numeric NOT BETWEEN 1.1 AND 5 THEN
            RAISE EXCEPTION '"incrementFactor" % of % is not a number from 1.1 to 5', coalesce(ramp -> 'incrementFactor', 'null'), label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'AWS IoT Jobs takes the same range: the rate is multiplied by it at each increase.';
        END IF;
        result := result || jsonb_build_object('exponentialRate', jsonb_build_object(
            'baseRatePerMinute', fleet_internal.rollout_count(ramp -> 'baseRatePerMinute',
                                     format('"baseRatePerMinute" of %s', label), 1, 1000000000),
            'incrementFactor', (ramp ->> 'incrementFactor')::numeric,
            'rateIncreaseCriteria', (SELECT jsonb_build_object(k, fleet_internal.rollout_count(criteria -> k,
                                                 format('"%s" of %s', k, label), 1, 1000000000))
                                       FROM jsonb_object_keys(criteria) k)));
    END IF;
    IF rollout ? 'onThreshold' THEN
        IF rollout ->> 'onThreshold' NOT IN ('cancel', 'pause') OR jsonb_typeof(rollout -> 'onThreshold') <> 'string' THEN
            RAISE EXCEPTION '"onThreshold" % of % is neither "cancel" nor "pause"', rollout -> 'onThreshold', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = '"pause" stops the job for inspection when its cancellation threshold is passed; fleet.resume_job() carries on.';
        END IF;
        result := result || jsonb_build_object('onThreshold', rollout ->> 'onThreshold');
    END IF;
    IF rollout ? 'abortCriteria' THEN
        result := result || jsonb_build_object('abortCriteria', fleet_internal.abort_criteria(rollout -> 'abortCriteria', label));
    END IF;
    IF rollout ? 'canary' THEN
        IF jsonb_typeof(rollout -> 'canary') IS DISTINCT FROM 'object'
           OR (SELECT count(*) FROM jsonb_object_keys(rollout -> 'canary')) <> 1 THEN
            RAISE EXCEPTION '"canary" of % must name its devices or a group, not %', label, rollout -> 'canary'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"devices": ["thermostat-01", "thermostat-02"]} or {"group": "canary-thermostats"}.';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(rollout -> 'canary', '{devices,group}', format('the "canary" of %s', label));
        IF rollout -> 'canary' ? 'devices' AND (jsonb_typeof(rollout #> '{canary,devices}') <> 'array'
               OR jsonb_array_length(rollout #> '{canary,devices}') NOT BETWEEN 1 AND 1000
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(rollout #> '{canary,devices}') d WHERE jsonb_typeof(d) <> 'string')) THEN
            RAISE EXCEPTION '"devices" of the "canary" of % must be an array of 1 to 1000 device ids', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For more, make a device group of them and write {"group": "..."}.';
        END IF;
        IF rollout -> 'canary' ? 'group' AND jsonb_typeof(rollout #> '{canary,group}') <> 'string' THEN
            RAISE EXCEPTION '"group" % of the "canary" of % is not a device group id', rollout #> '{canary,group}', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_object('canary', rollout -> 'canary');
    END IF;
    IF rollout ? 'promotion' THEN
        IF jsonb_typeof(rollout -> 'promotion') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION '"promotion" of % must be a JSON object, not %', label, rollout -> 'promotion'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"mode": "manual"} (each next batch waits for fleet.advance_job()) or {"successPercentage": 95}.';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(rollout -> 'promotion', '{mode,successPercentage}',
                                                   format('"promotion" of %s', label));
        IF rollout -> 'promotion' ? 'mode' AND (jsonb_typeof(rollout #> '{promotion,mode}') IS DISTINCT FROM 'string'
                                               OR rollout #>> '{promotion,mode}' NOT IN ('automatic', 'manual')) THEN
            RAISE EXCEPTION '"mode" % of the "promotion" of % is neither "automatic" nor "manual"', rollout #> '{promotion,mode}', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT (rollout -> 'promotion' ?| '{mode,successPercentage}') THEN
            RAISE EXCEPTION '"promotion" of % says nothing', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give "mode": "manual", or a "successPercentage" each batch must reach before the next starts.';
        END IF;
        result := result || jsonb_build_object('promotion', jsonb_strip_nulls(jsonb_build_object(
            'mode', coalesce(rollout #>> '{promotion,mode}', 'automatic'),
            'successPercentage', CASE WHEN rollout -> 'promotion' ? 'successPercentage'
                                      THEN fleet_internal.rollout_count(rollout #> '{promotion,successPercentage}',
                                               format('"successPercentage" of the "promotion" of %s', label), 1, 100) END)));
    END IF;
    IF rollout ? 'timeZone' THEN
        IF NOT rollout ? 'maintenanceWindows' THEN
            RAISE EXCEPTION '"timeZone" of % needs "maintenanceWindows"', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The time zone is that of the maintenance windows'' days and start times.';
        END IF;
        IF jsonb_typeof(rollout -> 'timeZone') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION '"timeZone" % of % is not a time zone name', rollout -> 'timeZone', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_object('timeZone', fleet_internal.require_time_zone(rollout ->> 'timeZone'));
    END IF;
    IF rollout ? 'maintenanceWindows' THEN
        result := result || jsonb_build_object('maintenanceWindows',
                                               fleet_internal.maintenance_windows(rollout -> 'maintenanceWindows', label))
                         || jsonb_build_object('timeZone', coalesce(result ->> 'timeZone', 'UTC'));
    END IF;
    IF rollout ? 'continuous' THEN
        IF jsonb_typeof(rollout -> 'continuous') IS DISTINCT FROM 'boolean' THEN
            RAISE EXCEPTION '"continuous" % of % is neither true nor false', rollout -> 'continuous', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF (rollout ->> 'continuous')::boolean THEN
            result := result || '{"continuous": true}';
        END IF;
    END IF;
    IF rollout ? 'maximumDevices' THEN
        IF NOT result ? 'continuous' THEN
            RAISE EXCEPTION '"maximumDevices" of % needs "continuous": true', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A job that is not continuous takes its group''s devices once, when it starts; choose them with the group.';
        END IF;
        result := result || jsonb_build_object('maximumDevices',
            fleet_internal.rollout_count(rollout -> 'maximumDevices', format('"maximumDevices" of %s', label), 1, 1000000000));
    END IF;
    IF rollout ? 'retries' THEN
        result := result || jsonb_build_object('retries', fleet_internal.retry_rules(rollout -> 'retries', label));
    END IF;
    IF rollout ? 'commandTimeout' THEN
        result := result || jsonb_build_object('commandTimeout',
            fleet_internal.rollout_interval(rollout -> 'commandTimeout', format('"commandTimeout" of %s', label),
                                            interval '1 second', interval '7 days')::text);
    END IF;
    IF rollout ? 'inProgressTimeout' THEN
        result := result || jsonb_build_object('inProgressTimeout',
            fleet_internal.rollout_interval(rollout -> 'inProgressTimeout', format('"inProgressTimeout" of %s', label),
                                            interval '1 second', interval '7 days')::text);
    END IF;
    IF rollout ? 'endTime' THEN
        BEGIN
            ends_at := (rollout ->> 'endTime')::timestamptz;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation THEN
            ends_at := NULL;
        END;
        IF jsonb_typeof(rollout -> 'endTime') IS DISTINCT FROM 'string' OR ends_at IS NULL OR NOT isfinite(ends_at) THEN
            RAISE EXCEPTION '"endTime" % of % is not a time', rollout -> 'endTime', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write an ISO 8601 time with its offset, such as "2026-12-24T18:00:00Z".';
        END IF;
        IF ends_at <= now() THEN
            RAISE EXCEPTION '"endTime" % of % has passed', rollout -> 'endTime', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give a time to come, or leave "endTime" out.';
        END IF;
        result := result || jsonb_build_object('endTime', ends_at);
    END IF;
    IF rollout ? 'maximumDuration' THEN
        result := result || jsonb_build_object('maximumDuration',
            fleet_internal.rollout_interval(rollout -> 'maximumDuration', format('"maximumDuration" of %s', label),
                                            interval '1 minute', interval '1 year')::text);
    END IF;
    IF rollout ? 'endBehavior' THEN
        IF jsonb_typeof(rollout -> 'endBehavior') IS DISTINCT FROM 'string'
           OR rollout ->> 'endBehavior' NOT IN ('STOP_ROLLOUT', 'CANCEL', 'FORCE_CANCEL') THEN
            RAISE EXCEPTION '"endBehavior" % of % is not "STOP_ROLLOUT", "CANCEL" or "FORCE_CANCEL"', rollout -> 'endBehavior', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT (rollout ? 'endTime' OR rollout ? 'maximumDuration') THEN
            RAISE EXCEPTION '"endBehavior" of % needs "endTime" or "maximumDuration"', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_object('endBehavior', rollout ->> 'endBehavior');
    END IF;
    RETURN result;
END;
$$;

-- Announces a change of a job (and of its batch, when one is named) on the
-- channel fleet_jobs, when the transaction commits: a small JSON object
-- with the job, its organization, the event, the job's status and, for a
-- batch, the batch's number and counts.  Applications LISTEN instead of
-- polling.  NOTIFY has no privileges: whoever may connect to the database
-- may LISTEN, so the payload names ids and states, no data.
CREATE FUNCTION fleet_internal.job_event(job_id text, event text, batch int DEFAULT NULL)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_notify('fleet_jobs', json_build_object(
               'job', j.id, 'organization', j.organization_id, 'event', event,
               'status', j.status, 'detail', left(j.status_detail, 400),
               'batch', b.batch, 'batchStatus', b.status, 'completed', b.completed, 'failed', b.failed)::text)
      FROM fleet.jobs j
      LEFT JOIN fleet.job_batches b ON b.job_id = j.id AND b.batch = job_event.batch
     WHERE j.id = job_event.job_id
$$;

-- The rate a job dispatches at now, devices a minute (NULL: no limit): its
-- maximumPerMinute, or its ramp's base multiplied by incrementFactor each
-- time rateIncreaseCriteria more devices were dispatched (or succeeded),
-- at most maximumPerMinute.
CREATE FUNCTION fleet_internal.rollout_rate(job fleet.jobs)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ramp    jsonb := job.rollout -> 'exponentialRate';
    maximum bigint := (job.rollout ->> 'maximumPerMinute')::bigint;
    step    bigint;
    reached bigint;
BEGIN
    IF ramp IS NULL THEN
        RETURN maximum;
    END IF;
    IF ramp -> 'rateIncreaseCriteria' ? 'numberOfSucceededDevices' THEN
        step := (ramp #>> '{rateIncreaseCriteria,numberOfSucceededDevices}')::bigint;
        SELECT coalesce(sum(b.completed), 0) INTO reached FROM fleet.job_batches b WHERE b.job_id = job.id;
    ELSE
        step := (ramp #>> '{rateIncreaseCriteria,numberOfNotifiedDevices}')::bigint;
        SELECT coalesce(sum(d.devices), 0) INTO reached FROM fleet_internal.job_dispatches d WHERE d.job_id = job.id;
    END IF;
    -- (the exponent is bounded: past 60 increases any rate is past any maximum)
    RETURN least(coalesce(maximum, 1000000000),
                 floor((ramp ->> 'baseRatePerMinute')::bigint
                       * power((ramp ->> 'incrementFactor')::numeric, least(reached / step, 60)))::numeric)::bigint;
END;
$$;

-- How many devices a rate-limited job may dispatch in this step, and, when
-- none, until when it waits (spent: the minute's rate is used up, which the
-- job shows; else the next twentieth is not due yet).  Any minute holds at
-- most the rate; the rate is dealt in twentieths, one every three seconds,
-- so a minute that ends while the job has work holds the rate less at most
-- one twentieth (5 %).
CREATE FUNCTION fleet_internal.rollout_allowance(job fleet.jobs, at timestamptz,
                                                 OUT allowed bigint, OUT wait_until timestamptz, OUT spent boolean)
RETURNS record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_ts    timestamptz := fleet_internal.moment(at);
    rate      bigint := fleet_internal.rollout_rate(job);
    slice     bigint;
    in_minute bigint;
    oldest    timestamptz;
    latest    timestamptz;
BEGIN
    IF rate IS NULL THEN
        allowed := NULL;            -- no limit
        RETURN;
    END IF;
    slice := greatest(ceil(rate / 20.0)::bigint, 1);
    SELECT coalesce(sum(d.devices), 0), min(d.at), max(d.at) INTO in_minute, oldest, latest
      FROM fleet_internal.job_dispatches d
     WHERE d.job_id = job.id AND d.at > now_ts - interval '1 minute' AND d.at <= now_ts;
    spent := in_minute >= rate;
    IF spent THEN
        allowed := 0;
        wait_until := oldest + interval '1 minute';
    ELSIF latest IS NOT NULL AND latest > now_ts - interval '3 seconds' AND rate >= 20 THEN
        allowed := 0;               -- the next twentieth is due three seconds after the last
        wait_until := latest + interval '3 seconds';
    ELSE
        allowed := least(slice, rate - in_minute);
    END IF;
END;
$$;

-- Records what a step of a rate-limited job dispatched.
CREATE FUNCTION fleet_internal.record_dispatch(job_id text, devices bigint, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF devices > 0 THEN
        INSERT INTO fleet_internal.job_dispatches AS d (job_id, at, devices)
        VALUES (record_dispatch.job_id, fleet_internal.moment(at), record_dispatch.devices)
        ON CONFLICT ON CONSTRAINT job_dispatches_pkey DO UPDATE SET devices = d.devices + excluded.devices;
    END IF;
END;
$$;

-- Whether a job's maintenance windows are open at a time, and when the
-- next one opens.  Each window's occurrences over the weeks around then
-- are its days at its start time in its time zone (a local time a DST
-- change skips moves forward with the clock, as schedules do).
CREATE FUNCTION fleet_internal.maintenance_window_state(rollout jsonb, at timestamptz,
                                                        OUT open boolean, OUT next_open timestamptz)
RETURNS record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH occurrences AS (
        SELECT (((at AT TIME ZONE (rollout ->> 'timeZone'))::date + k)::timestamp + (w ->> 'start')::time)
                   AT TIME ZONE (rollout ->> 'timeZone') AS opens,
               (w ->> 'duration')::interval AS lasts
          FROM jsonb_array_elements(rollout -> 'maintenanceWindows') w,
               generate_series(-7, 7) k
         WHERE w -> 'days' @> to_jsonb(extract(isodow FROM (at AT TIME ZONE (rollout ->> 'timeZone'))::date + k)::int)
    )
    SELECT coalesce(bool_or(o.opens <= at AND at < o.opens + o.lasts), false),
           min(o.opens) FILTER (WHERE o.opens > at)
      FROM occurrences o
$$;

-- What kind of failure a device's error is (AWS IoT Jobs' failure types):
-- TIMED_OUT (nobody answered in time), REJECTED (the device refused, 4xx)
-- or FAILED.
CREATE FUNCTION fleet_internal.failure_type(error text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN error = 'timed out' THEN 'TIMED_OUT'
                WHEN error LIKE 'rejected by the device%' THEN 'REJECTED'
                ELSE 'FAILED' END
$$;

-- How long a command a device reported under way (202) may take from its
-- last report: the job's inProgressTimeout, else its command timeout.
CREATE FUNCTION fleet_internal.in_progress_timeout(job_id text)
RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((j.rollout ->> 'inProgressTimeout')::interval, fleet_internal.command_timeout(j.rollout))
      FROM fleet.jobs j WHERE j.id = in_progress_timeout.job_id
$$;

-- A command job's timeout: its rollout's commandTimeout, else
-- fleet.command_timeout.
CREATE FUNCTION fleet_internal.command_timeout(rollout jsonb)
RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((rollout ->> 'commandTimeout')::interval, current_setting('fleet.command_timeout')::interval)
$$;

-- When a job ends by its rollout (endTime, or maximumDuration after its
-- start), NULL when it does not.
CREATE FUNCTION fleet_internal.rollout_end(job fleet.jobs)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT least((job.rollout ->> 'endTime')::timestamptz,
                 job.started_at + (job.rollout ->> 'maximumDuration')::interval)
$$;

-- Whether a job waits at a batch boundary for its promotion: the batch it
-- just completed is promoted (NULL) unless its rollout's "promotion" asks
-- for a hand (mode manual) or a success percentage it did not reach; then
-- the reason it waits.  b: the completed batch, its counts final.
CREATE FUNCTION fleet_internal.promotion_wait(job fleet.jobs, b fleet.job_batches)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
           WHEN (job.rollout #>> '{promotion,successPercentage}')::int * b.size > b.completed * 100
           THEN format('paused: batch %s succeeded on %s of %s devices, below its promotion bar of %s %%; '
                       'advance it with fleet.advance_job(), or leave it stopped', b.batch, b.completed, b.size,
                       job.rollout #>> '{promotion,successPercentage}')
           WHEN job.rollout #>> '{promotion,mode}' = 'manual'
           THEN format('waiting for promotion: batch %s succeeded on %s of %s devices; '
                       'advance it with fleet.advance_job()', b.batch, b.completed, b.size)
           END
$$;

-- A job with a canary: its devices that are canaries (named, or members
-- of the canary group) become batch 1, and its batches move up one (an
-- emptied one goes); a command job's deliveries are numbered again in
-- batch order, so each batch is a range of them.  Called by the fan-out
-- (job_batches.sql), once, before the job starts; a pass over the job's
-- rows, which only a job with a canary pays.  Returns how many canaries.
CREATE FUNCTION fleet_internal.engine_cut_canary(job fleet.jobs)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    canary text[] := CASE WHEN job.rollout -> 'canary' ? 'devices'
                          THEN ARRAY(SELECT jsonb_array_elements_text(job.rollout #> '{canary,devices}'))
                          ELSE ARRAY(SELECT m.device_id FROM fleet.device_group_members m
                                      WHERE m.group_id = job.rollout #>> '{canary,group}') END;
    base   bigint;
    n      bigint;
BEGIN
    SELECT count(*) INTO n FROM fleet.job_devices jd WHERE jd.job_id = job.id AND jd.device_id = ANY (canary);
    IF n = 0 THEN
        RETURN 0;                   -- none of them is in the job's group
    END IF;
    SELECT min(jd.delivery_id) - 1 INTO base FROM fleet.job_devices jd WHERE jd.job_id = job.id;
    WITH placed AS (
        SELECT jd.device_id,
               CASE WHEN jd.device_id = ANY (canary) THEN 1
                    ELSE 1 + dense_rank() OVER (PARTITION BY jd.device_id = ANY (canary) ORDER BY jd.batch) END AS batch,
               row_number() OVER (ORDER BY NOT (jd.device_id = ANY (canary)), jd.batch, jd.device_id) AS n
          FROM fleet.job_devices jd WHERE jd.job_id = job.id
    )
    UPDATE fleet.job_devices jd
       SET batch = p.batch, delivery_id = base + p.n
      FROM placed p
     WHERE jd.job_id = job.id AND jd.device_id = p.device_id;
    DELETE FROM fleet.job_batches b WHERE b.job_id = job.id;
    INSERT INTO fleet.job_batches (job_id, batch, first_device, last_device, size)
    SELECT job.id, jd.batch, min(jd.device_id), max(jd.device_id), count(*)
      FROM fleet.job_devices jd WHERE jd.job_id = job.id
     GROUP BY jd.batch;
    RETURN n;
END;
$$;

-- A continuous job takes its group's devices that are not among its own
-- yet (they joined since: imported, given the template, or matching a
-- changed filter) as its next batch, at most a batch's size and up to its
-- maximumDevices; each device once (the key of job_devices).  A command
-- job's deliveries go on from its last id, so the new batch is a range of
-- them above every earlier one.  Returns how many it took.
CREATE FUNCTION fleet_internal.engine_add_members(job fleet.jobs, batch int, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    room   bigint := least(CASE WHEN job.batch_type = 'number' THEN job.batch_value END,
                           (job.rollout ->> 'maximumDevices')::bigint - coalesce(job.device_count, 0));
    base   bigint;
    added  bigint;
BEGIN
    IF room <= 0 THEN
        RETURN 0;
    END IF;
    IF job.job_type = 'command' THEN
        SELECT max(jd.delivery_id) INTO base FROM fleet.job_devices jd WHERE jd.job_id = job.id;
        base := coalesce(base, nextval('fleet_internal.delivery_blocks') * 4294967296);
    END IF;
    -- the group's members now (fleet.device_group_members), less its own
    WITH joined AS (
        SELECT m.device_id AS id FROM fleet.device_group_members m
         WHERE m.group_id = job.group_id
           AND NOT EXISTS (SELECT 1 FROM fleet.job_devices jd WHERE jd.job_id = job.id AND jd.device_id = m.device_id)
         ORDER BY m.device_id
         LIMIT room
    ),
    assigned AS (
        INSERT INTO fleet.job_devices (job_id, device_id, batch, delivery_id)
        SELECT job.id, j.id, engine_add_members.batch, base + row_number() OVER (ORDER BY j.id)
          FROM joined j
        ON CONFLICT DO NOTHING
        RETURNING device_id
    )
    INSERT INTO fleet.job_batches (job_id, batch, first_device, last_device, size)
    SELECT job.id, engine_add_members.batch, min(a.device_id), max(a.device_id), count(*)
      FROM assigned a HAVING count(*) > 0;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added = 0 THEN
        RETURN 0;
    END IF;
    SELECT b.size INTO added FROM fleet.job_batches b WHERE b.job_id = job.id AND b.batch = engine_add_members.batch;
    UPDATE fleet.jobs j SET device_count = coalesce(j.device_count, 0) + added, current_batch = engine_add_members.batch
     WHERE j.id = job.id;
    PERFORM fleet_internal.job_event(job.id, 'devicesJoined', engine_add_members.batch);
    RETURN added;
END;
$$;

-- A continuous job with nothing to do: it takes the devices that joined
-- its group, or waits (true), or, its maximumDevices reached, is done
-- (false).
CREATE FUNCTION fleet_internal.engine_continue(job fleet.jobs, next_batch int, at timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    waits text;
BEGIN
    IF fleet_internal.engine_add_members(job, next_batch, at) > 0 THEN
        IF job.status_detail IS NOT NULL THEN
            UPDATE fleet.jobs j SET status_detail = NULL WHERE j.id = job.id;
        END IF;
        RETURN true;
    END IF;
    IF coalesce(job.device_count, 0) >= (job.rollout ->> 'maximumDevices')::bigint THEN
        RETURN false;
    END IF;
    -- (a look over the group every ten seconds)
    UPDATE fleet_internal.job_engine_state s SET not_before = fleet_internal.moment(at) + interval '10 seconds'
     WHERE s.job_id = job.id;
    waits := format('waiting: continuous, %s devices so far; devices that join its group get it', coalesce(job.device_count, 0));
    UPDATE fleet.jobs j SET status_detail = waits WHERE j.id = job.id AND j.status_detail IS DISTINCT FROM waits;
    RETURN true;
END;
$$;

-- Pauses a job: it stops as fleet.stop_job() stops it (resumable), with
-- the reason on the job.
CREATE FUNCTION fleet_internal.engine_pause_job(job fleet.jobs, reason text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE fleet.jobs j SET status = 'stopped', status_detail = reason WHERE j.id = job.id;
    PERFORM fleet_internal.job_event(job.id, 'paused', job.current_batch);
END;
$$;

-- A job past its end: STOP_ROLLOUT stops it (resumable; its claimed
-- commands may still be answered), CANCEL cancels it as a threshold does,
-- FORCE_CANCEL also fails its commands in flight ("the job ended").
CREATE FUNCTION fleet_internal.engine_end_job(job fleet.jobs, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    behavior text := coalesce(job.rollout ->> 'endBehavior', 'STOP_ROLLOUT');
    reason   text := format('ended: its end time %s passed (endBehavior %s)',
                            fleet_internal.rest_timestamp(fleet_internal.rollout_end(job)), behavior);
BEGIN
    IF behavior = 'STOP_ROLLOUT' THEN
        PERFORM fleet_internal.engine_pause_job(job, reason, at);
        RETURN;
    END IF;
    IF behavior = 'FORCE_CANCEL' THEN
        -- claimed, unanswered: failed now (an answer that comes later finds
        -- its delivery done and changes nothing)
        UPDATE fleet.job_devices jd
           SET status = 'failed', error = 'the job ended', finished_at = fleet_internal.moment(at)
         WHERE jd.job_id = job.id AND jd.status = 'pending' AND jd.gateway IS NOT NULL;
    END IF;
    UPDATE fleet.jobs j SET status_detail = reason WHERE j.id = job.id;
    PERFORM fleet_internal.engine_finish_job(job, 'cancelled', at);
END;
$$;

-- src/sql/jobs.sql
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
      LEFT JOIN LATERAL (SELECT count(*) AS total,
                                count(*) FILTER (WHERE jd.status = 'pending') AS pending,
                                count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                                count(*) FILTER (WHERE jd.status = 'failed') AS failed
                           FROM fleet.job_devices jd WHERE jd.job_id = j.id) p ON true
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

-- src/sql/job_results.sql
-- A job's devices and their outcomes, as IoT Central's job details page and
-- its results log show them: read with the caller's rights (row-level
-- security shows only jobs of its organizations).

-- Which device properties appear as extra columns of the device list, for
-- the current role.
CREATE FUNCTION fleet.set_job_device_list_columns(columns text[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    path   text;
BEGIN
    FOREACH path IN ARRAY coalesce(columns, '{}') LOOP
        BEGIN
            PERFORM path::jsonpath;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'column "%" is not a jsonpath', path
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Name columns as paths into the device document, for example ''$.reported.firmware'' or ''$.properties.targetTemperature''.';
        END;
    END LOOP;
    DELETE FROM fleet.job_device_list_columns c WHERE c.role_name = caller;
    INSERT INTO fleet.job_device_list_columns (role_name, position, path)
    SELECT caller, n, p FROM unnest(columns) WITH ORDINALITY AS u(p, n);
END;
$$;
COMMENT ON FUNCTION fleet.set_job_device_list_columns(text[]) IS 'Chooses the extra columns (jsonpath over fleet.device_document) of fleet.list_job_devices() for the current role';

CREATE FUNCTION fleet.list_job_devices(job_id text, device_filter text DEFAULT NULL, status_filter text DEFAULT NULL)
RETURNS TABLE (device_id text, device_name text, batch int, status text, error text,
               started_at timestamptz, finished_at timestamptz, columns jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    paths text[] := ARRAY(SELECT c.path FROM fleet.job_device_list_columns c
                           WHERE c.role_name = current_user ORDER BY c.position);
BEGIN
    PERFORM fleet_internal.require_job(job_id);
    IF status_filter IS NOT NULL AND status_filter NOT IN ('pending', 'completed', 'failed') THEN
        RAISE EXCEPTION 'unknown device status "%"', status_filter
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Filter on ''pending'', ''completed'' or ''failed''.';
    END IF;
    RETURN QUERY
    SELECT jd.device_id, coalesce(d.display_name, 'deleted'), jd.batch, jd.status, jd.error,
           jd.started_at, jd.finished_at,
           CASE WHEN cardinality(paths) = 0 OR d.id IS NULL THEN NULL
                ELSE (SELECT jsonb_object_agg(p, jsonb_path_query_first(fleet_internal.device_document_of(d.id, d.display_name, d.template_id, d.organization_id, d.simulated,
                 d.connection_state, d.last_activity_at, d.edge, d.manifest_id, d.properties, d.reported, d.cloud_properties), p::jsonpath,
                                                                         silent => true))
                        FROM unnest(paths) p) END
      FROM fleet.job_devices jd
      LEFT JOIN fleet.devices d ON d.id = jd.device_id
     WHERE jd.job_id = list_job_devices.job_id
       AND (device_filter IS NULL OR strpos(lower(jd.device_id), lower(device_filter)) > 0)
       AND (status_filter IS NULL OR jd.status = status_filter)
     ORDER BY jd.batch, jd.device_id;
END;
$$;
COMMENT ON FUNCTION fleet.list_job_devices(text, text, text) IS 'A job''s devices, filtered by device id (substring) and status, with the role''s extra columns';

-- A job's devices as IoT Central's GET /jobs/{id}/devices returns them:
-- {"value": [{"id", "status"}, ...]}, with pg_fleet's batch and error as
-- extensions.  One document: for large jobs, list_job_devices() pages.
CREATE FUNCTION fleet.get_job_devices(job_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_job(job_id);
    RETURN (SELECT jsonb_build_object('value', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                       'id', jd.device_id, 'status', jd.status, 'batch', jd.batch, 'error', jd.error,
                       -- what the device reported: refused, under way, how far
                       'rejected', CASE WHEN jd.status = 'failed' AND fleet_internal.failure_type(jd.error) = 'REJECTED' THEN true END,
                       'inProgress', CASE WHEN jd.status = 'pending' AND jd.response_status = 202 THEN true END,
                       'progress', fleet_internal.reported_progress(jd.response),
                       'statusDetails', CASE WHEN jsonb_typeof(jd.response) = 'object' THEN jd.response -> 'statusDetails' END))
                       ORDER BY jd.batch, jd.device_id), '[]'))
              FROM fleet.job_devices jd
             WHERE jd.job_id = get_job_devices.job_id);
END;
$$;
COMMENT ON FUNCTION fleet.get_job_devices(text) IS 'A job''s devices as IoT Central''s REST API returns them: {"value": [{"id", "status"}]}, with batch and error';

-- The progress a device reported in its answer ({"progress": 40}), a whole
-- percentage, or NULL (a device's bytes never fail a listing).
CREATE FUNCTION fleet_internal.reported_progress(response jsonb)
RETURNS int
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(response) = 'object' AND jsonb_typeof(response -> 'progress') = 'number'
                     AND (response ->> 'progress')::numeric BETWEEN 0 AND 100
                THEN floor((response ->> 'progress')::numeric)::int END
$$;

-- The results log, for COPY ... TO: one row per device, and before it one
-- per earlier attempt its job retried (attempt numbers the rows; the
-- device's last row is its outcome).
CREATE FUNCTION fleet.job_results(job_id text, spreadsheet_safe boolean DEFAULT false)
RETURNS TABLE (job text, device_id text, device_name text, batch int, status text, error text,
               started_at timestamptz, finished_at timestamptz, attempt int, progress int, status_details jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_job(job_results.job_id);
    -- (the cells are neutralised only when asked: a call per cell costs)
    RETURN QUERY
    SELECT CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(jd.job_id, true) ELSE jd.job_id END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(jd.device_id, true) ELSE jd.device_id END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(coalesce(d.display_name, 'deleted'), true)
                ELSE coalesce(d.display_name, 'deleted') END,
           jd.batch, jd.status,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(jd.error, true) ELSE jd.error END,
           jd.started_at, jd.finished_at, jd.attempt, fleet_internal.reported_progress(jd.response),
           CASE WHEN jsonb_typeof(jd.response) = 'object' THEN jd.response -> 'statusDetails' END
      FROM (SELECT r.job_id, r.device_id, r.batch, r.status, r.error, r.started_at, r.finished_at,
                   1 + coalesce(earlier.n, 0) AS attempt, r.response
              FROM fleet.job_devices r
              -- (one hashed pass over the job's few retried attempts)
              LEFT JOIN (SELECT a.device_id, count(*)::int AS n FROM fleet.job_device_attempts a
                          WHERE a.job_id = job_results.job_id GROUP BY a.device_id) earlier
                     ON earlier.device_id = r.device_id
             WHERE r.job_id = job_results.job_id
            UNION ALL
            SELECT a.job_id, a.device_id, r.batch, 'failed', a.error, a.started_at, a.finished_at, a.attempt, a.response
              FROM fleet.job_device_attempts a
              JOIN fleet.job_devices r ON r.job_id = a.job_id AND r.device_id = a.device_id
             WHERE a.job_id = job_results.job_id) jd
      LEFT JOIN fleet.devices d ON d.id = jd.device_id
     ORDER BY jd.batch, jd.device_id, jd.attempt;
END;
$$;
COMMENT ON FUNCTION fleet.job_results(text, boolean) IS 'The results log of a job: device, name ("deleted" for deleted devices), batch, status, error, times, and attempt (earlier, retried attempts first)';


-- src/sql/command_claims.sql
-- Commands reach devices through gateways: programs that claim deliveries
-- with fleet.claim_commands() and report with fleet.complete_command()
-- (tools/fleet-sim.c is one).
--
-- A command job's deliveries are its fleet.job_devices rows: the fan-out
-- gives each a delivery id, in device order.  The engine offers them a
-- window at a time (fleet.command_windows: a range of delivery ids, at most
-- fleet.command_window outstanding); a gateway claims from the open windows
-- of running jobs (SKIP LOCKED: never two gateways the same row) and answers
-- on the same row.  So a device costs the fan-out's insert, a claim and an
-- answer, as a plain claim-then-acknowledge queue would; a separate delivery
-- table cost two more writes per device, under four more indexes.
--
-- A delivery ends completed, failed, or timed out: claimed and not answered
-- by its deadline (fleet.command_timeout after the claim), or not claimed
-- within fleet.command_timeout of its window opening while the job ran.  A
-- stopped job's unclaimed commands are withdrawn: gateways claim only from
-- running jobs, and a resume gives them a fresh deadline.


-- Every delivery made, as gateways and the engine see them: queued (offered
-- in a window, not claimed yet), withdrawn (the same, its job not running),
-- claimed, in_progress, completed, failed, rejected or timed_out.  Devices a command could not
-- reach have no delivery (the job's device list says why).
CREATE VIEW fleet.command_deliveries WITH (security_invoker = true) AS
SELECT jd.delivery_id, jd.job_id, jd.device_id,
       j.data -> 0 ->> 'path' AS command,
       j.data -> 0 -> 'value' AS request,
       CASE WHEN jd.status = 'completed' THEN 'completed'
            WHEN jd.status = 'failed' THEN lower(fleet_internal.failure_type(jd.error))
            WHEN jd.gateway IS NOT NULL AND jd.response_status = 202 THEN 'in_progress'
            WHEN jd.gateway IS NOT NULL THEN 'claimed'
            WHEN j.status = 'running' THEN 'queued'
            ELSE 'withdrawn' END AS status,
       jd.gateway,
       coalesce(jd.deadline, w.deadline) AS deadline,
       jd.started_at AS claimed_at,
       jd.finished_at AS completed_at,
       jd.response_status, jd.response
  FROM fleet.job_devices jd
  JOIN fleet.jobs j ON j.id = jd.job_id
  JOIN fleet.job_batches b ON b.job_id = jd.job_id AND b.batch = jd.batch
  LEFT JOIN fleet.command_windows w
         ON w.job_id = jd.job_id AND jd.delivery_id BETWEEN w.first_delivery AND w.last_delivery
 WHERE jd.delivery_id IS NOT NULL
   -- offered: the engine's cursor has passed it
   AND (jd.gateway IS NOT NULL OR jd.status <> 'pending' OR jd.device_id <= b.cursor);
COMMENT ON VIEW fleet.command_deliveries IS 'Command deliveries: one per device of a command job once it is offered to gateways, with its status, gateway, deadline and answer';
COMMENT ON COLUMN fleet.command_deliveries.delivery_id IS 'The id a gateway claims and answers by: the job''s number * 2^32 + the device''s position';
COMMENT ON COLUMN fleet.command_deliveries.job_id IS 'The command job';
COMMENT ON COLUMN fleet.command_deliveries.device_id IS 'The device the command is for';
COMMENT ON COLUMN fleet.command_deliveries.command IS 'The command, "name" or "component/name"';
COMMENT ON COLUMN fleet.command_deliveries.request IS 'The command''s request payload';
COMMENT ON COLUMN fleet.command_deliveries.status IS 'queued, withdrawn (its job is not running), claimed, in_progress (the device answered 202), completed, failed, rejected (4xx) or timed_out';
COMMENT ON COLUMN fleet.command_deliveries.gateway IS 'The gateway that claimed it; simulator when the engine answered for a simulated device';
COMMENT ON COLUMN fleet.command_deliveries.deadline IS 'When it times out: its claim''s deadline, or, unclaimed, its window''s';
COMMENT ON COLUMN fleet.command_deliveries.claimed_at IS 'When a gateway claimed it';
COMMENT ON COLUMN fleet.command_deliveries.completed_at IS 'When it was answered or timed out';
COMMENT ON COLUMN fleet.command_deliveries.response_status IS 'The device''s answer, HTTP-style: 2xx completed the device';
COMMENT ON COLUMN fleet.command_deliveries.response IS 'The device''s response payload';

-- A gateway's name is stored on every row it claims and shown in reports.
CREATE FUNCTION fleet_internal.require_gateway_name(gateway text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF gateway IS NULL OR btrim(gateway) = '' THEN
        RAISE EXCEPTION 'a gateway must name itself when it claims commands'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(gateway) > 128 OR gateway ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid gateway name "%"', left(regexp_replace(gateway, '[[:cntrl:]]', '?', 'g'), 40)
                                                     || CASE WHEN length(gateway) > 40 THEN '...' ELSE '' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It has %s characters.', length(gateway)),
                  HINT = 'Name a gateway with 1 to 128 printable characters, after its host or its role.';
    END IF;
    IF gateway = 'simulator' THEN
        RAISE EXCEPTION 'gateway name "simulator" is reserved for the engine''s simulated devices'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the gateway after its host or its role.';
    END IF;
END;
$$;

-- The claim itself, for fleet.claim_commands() and the MQTT endpoint's
-- bridge (fleet_internal.endpoint_claim_commands()): up to max_count queued
-- deliveries of running jobs in the given organizations (all when
-- everywhere), of devices connected through connected_via when it is set.
-- The open windows, earliest deadline first (a small job's window is not
-- starved by a big one's refills), each read through the unclaimed queue;
-- rows are locked as the outer LIMIT takes them, so none is locked and
-- left.  MATERIALIZED: the locked rows are picked once.
CREATE FUNCTION fleet_internal.claim_deliveries(gateway text, max_count int, everywhere boolean, operated text[],
                                                connected_via text)
RETURNS TABLE (delivery_id bigint, job_id text, device_id text, command text, request jsonb, deadline timestamptz)
-- PL/pgSQL: its plan is kept between calls (a SQL function's UPDATE is
-- planned again at every call, a millisecond a claim)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF fleet_internal.citus_table('fleet.job_devices') THEN
        RETURN QUERY SELECT * FROM fleet_internal.claim_deliveries_on_shards(gateway, max_count, everywhere, operated,
                                                                             connected_via);
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS MATERIALIZED (
        SELECT u.delivery_id, w.command, w.request, w.timeout
          FROM (SELECT ow.first_delivery, ow.last_delivery,
                       rj.data -> 0 ->> 'path' AS command, rj.data -> 0 -> 'value' AS request,
                       fleet_internal.command_timeout(rj.rollout) AS timeout
                  FROM fleet.command_windows ow JOIN fleet.jobs rj ON rj.id = ow.job_id
                 WHERE rj.status = 'running' AND (everywhere OR rj.organization_id = ANY (operated))
                 ORDER BY ow.deadline, ow.first_delivery) w
         CROSS JOIN LATERAL (
                SELECT q.delivery_id FROM fleet.job_devices q
                 WHERE q.delivery_id IS NOT NULL AND q.gateway IS NULL
                   -- (an unclaimed delivery's deadline is a retry's backoff)
                   AND (q.deadline IS NULL OR q.deadline <= fleet_internal.moment())
                   AND q.delivery_id >= w.first_delivery AND q.delivery_id <= w.last_delivery
                   AND q.status = 'pending'
                   -- a device the bridge serves takes its command when it
                   -- listens for direct methods there; until then it waits,
                   -- as IoT Central queues a command for an offline device
                   AND (connected_via IS NULL
                        OR EXISTS (SELECT 1 FROM fleet.devices c
                                    WHERE c.id = q.device_id AND c.endpoint_gateway = connected_via
                                      AND c.endpoint_listens & 1 = 1))
                 ORDER BY q.delivery_id
                 LIMIT max_count
                   FOR UPDATE OF q SKIP LOCKED) u
         LIMIT max_count
    )
    UPDATE fleet.job_devices d
       SET gateway = claim_deliveries.gateway, started_at = t.at,
           deadline = t.at + p.timeout
      FROM picked p, (SELECT fleet_internal.moment() AS at) t
     WHERE d.delivery_id = p.delivery_id AND d.delivery_id IS NOT NULL
    RETURNING d.delivery_id, d.job_id, d.device_id, p.command, p.request, d.deadline;
END;
$$;

-- The claim when job_devices is spread over Citus shards, where FOR UPDATE
-- SKIP LOCKED works within one shard only: for each open window, earliest
-- deadline first, the first unclaimed deliveries are read from every shard,
-- then claimed by an UPDATE that checks again that each is unclaimed (a
-- gateway that read the same rows waits for the first one's commit and
-- takes none of them twice).  Two statements a window, no row locked that
-- is not claimed.
CREATE FUNCTION fleet_internal.claim_deliveries_on_shards(gateway text, max_count int, everywhere boolean,
                                                          operated text[], connected_via text)
RETURNS TABLE (delivery_id bigint, job_id text, device_id text, command text, request jsonb, deadline timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w      record;
    now_at timestamptz := fleet_internal.moment();
    wanted bigint[];
    left_  int := max_count;
    n      int;
BEGIN
    FOR w IN SELECT ow.job_id AS window_job, ow.first_delivery, ow.last_delivery,
                    rj.data -> 0 ->> 'path' AS window_command, rj.data -> 0 -> 'value' AS window_request,
                    fleet_internal.command_timeout(rj.rollout) AS timeout
               FROM fleet.command_windows ow JOIN fleet.jobs rj ON rj.id = ow.job_id
              WHERE rj.status = 'running' AND (everywhere OR rj.organization_id = ANY (operated))
              ORDER BY ow.deadline, ow.first_delivery
    LOOP
        wanted := ARRAY(
            SELECT q.delivery_id FROM fleet.job_devices q
             WHERE q.job_id = w.window_job
               AND q.delivery_id >= w.first_delivery AND q.delivery_id <= w.last_delivery
               AND q.gateway IS NULL AND q.status = 'pending'
               AND (q.deadline IS NULL OR q.deadline <= now_at)
               AND (connected_via IS NULL
                    OR EXISTS (SELECT 1 FROM fleet.devices c
                                WHERE c.id = q.device_id AND c.endpoint_gateway = connected_via
                                  AND c.endpoint_listens & 1 = 1))
             ORDER BY q.delivery_id
             LIMIT left_);
        CONTINUE WHEN cardinality(wanted) = 0;
        RETURN QUERY
        UPDATE fleet.job_devices d
           SET gateway = claim_deliveries_on_shards.gateway, started_at = now_at, deadline = now_at + w.timeout
         WHERE d.delivery_id = ANY (wanted) AND d.job_id = w.window_job
           AND d.gateway IS NULL AND d.status = 'pending'
        RETURNING d.delivery_id, d.job_id, d.device_id, w.window_command, w.window_request, d.deadline;
        GET DIAGNOSTICS n = ROW_COUNT;
        left_ := left_ - n;
        EXIT WHEN left_ <= 0;
    END LOOP;
END;
$$;

-- fleet.complete_commands() when job_devices is spread over Citus shards:
-- each answer's new values are made first, from the answers alone (Citus
-- refuses stable functions such as format() in a statement that changes a
-- distributed table), then one UPDATE takes them.
CREATE FUNCTION fleet_internal.complete_deliveries_on_shards(delivery_ids bigint[], statuses int[], responses jsonb[],
                                                             everywhere boolean, operated text[], answered timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    taken   bigint;
    allowed text[];
    jobs    text[];
    dues    timestamptz[];
    -- each answer's new values, made here from the answers alone
    new_statuses text[];
    errors       text[];
    finished     timestamptz[];
BEGIN
    IF NOT everywhere THEN
        allowed := ARRAY(SELECT j.id FROM fleet.jobs j WHERE j.organization_id = ANY (operated));
    END IF;
    -- work under way (202) is due by its job's in-progress timeout
    IF 202 = ANY (statuses) THEN
        SELECT array_agg(d.job_id ORDER BY a.n), array_agg(answered + fleet_internal.in_progress_timeout(d.job_id) ORDER BY a.n)
          INTO jobs, dues
          FROM unnest(delivery_ids) WITH ORDINALITY AS a (delivery_id, n)
          LEFT JOIN (SELECT q.delivery_id, q.job_id FROM fleet.job_devices q
                      WHERE q.delivery_id = ANY (delivery_ids) AND q.delivery_id IS NOT NULL) d
            ON d.delivery_id = a.delivery_id;
    END IF;
    SELECT array_agg(CASE WHEN x.status = 202 THEN 'pending'
                          WHEN x.status BETWEEN 200 AND 299 THEN 'completed' ELSE 'failed' END ORDER BY x.n),
           array_agg(CASE WHEN x.status NOT BETWEEN 200 AND 299
                          THEN format('%s with status %s%s',
                                      CASE WHEN x.status BETWEEN 400 AND 499 THEN 'rejected by the device' ELSE 'command failed' END,
                                      x.status,
                                      coalesce(': ' || left(x.response::text, 200)
                                               || CASE WHEN length(x.response::text) > 200 THEN '...' ELSE '' END, '')) END
                     ORDER BY x.n),
           array_agg(CASE WHEN x.status <> 202 THEN answered END ORDER BY x.n)
      INTO new_statuses, errors, finished
      FROM unnest(delivery_ids, statuses, coalesce(responses, array_fill(NULL::jsonb, ARRAY[cardinality(delivery_ids)])))
           WITH ORDINALITY AS x (delivery_id, status, response, n);
    UPDATE fleet.job_devices d
       SET status = a.new_status, error = a.error, response_status = a.status, response = a.response,
           finished_at = a.finished_at, deadline = CASE WHEN a.status = 202 THEN a.due ELSE d.deadline END
      FROM unnest(delivery_ids, statuses, coalesce(responses, array_fill(NULL::jsonb, ARRAY[cardinality(delivery_ids)])),
                  new_statuses, errors, finished, coalesce(dues, array_fill(NULL::timestamptz, ARRAY[cardinality(delivery_ids)])))
           AS a (delivery_id, status, response, new_status, error, finished_at, due)
     WHERE d.delivery_id = a.delivery_id AND d.delivery_id IS NOT NULL
       AND d.gateway IS NOT NULL AND d.status = 'pending'
       AND (everywhere OR d.job_id = ANY (allowed));
    GET DIAGNOSTICS taken = ROW_COUNT;
    RETURN taken;
END;
$$;

-- Gateways claim and answer through these two functions only (members
-- cannot write job_devices): a row's gateway and deadline decide when the
-- engine may close a window or finish a job, so a member writing them could
-- hold a job, and a slot of fleet.max_running_jobs, for ever.
-- SECURITY DEFINER, so they check the caller's organizations themselves:
-- commands of jobs where the calling role is an operator.  (Under the
-- caller's row-level security, the policies' subplans also made the
-- planner scan all of job_devices for each claim.)
CREATE FUNCTION fleet.claim_commands(gateway text, max_count int DEFAULT 100)
RETURNS TABLE (delivery_id bigint, job_id text, device_id text, command text, request jsonb, deadline timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller         name := fleet_internal.calling_role();
    everywhere     boolean := fleet_internal.role_sees_everything(caller);
    operated       text[];
BEGIN
    IF NOT everywhere THEN
        operated := ARRAY(SELECT fleet_internal.organizations_for('operator', caller));
    END IF;
    PERFORM fleet_internal.require_gateway_name(gateway);
    IF max_count IS NULL OR max_count < 1 THEN
        RAISE EXCEPTION 'max_count must be at least 1, not %', coalesce(max_count::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT * FROM fleet_internal.claim_deliveries(gateway, max_count, everywhere, operated, NULL);
END;
$$;
COMMENT ON FUNCTION fleet.claim_commands(text, int) IS 'Claims up to max_count queued command deliveries for a gateway; concurrent gateways never get the same one';

-- A gateway's answers, many at once: 2xx completes the device, anything
-- else fails it with the response as the error.  An answer for a delivery
-- that is no longer claimed (timed out, already answered, never claimed)
-- changes nothing.  Returns how many answers were taken.
-- SECURITY DEFINER: see fleet.claim_commands().
CREATE FUNCTION fleet.complete_commands(delivery_ids bigint[], statuses int[], responses jsonb[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the arrays are the plan's input: plan with them
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    taken      bigint;
    caller     name := fleet_internal.calling_role();
    everywhere boolean := fleet_internal.role_sees_everything(caller);
    operated   text[];
    answered   timestamptz := fleet_internal.moment();
BEGIN
    IF NOT everywhere THEN
        operated := ARRAY(SELECT fleet_internal.organizations_for('operator', caller));
    END IF;
    IF delivery_ids IS NULL OR statuses IS NULL THEN
        RAISE EXCEPTION 'delivery_ids and statuses must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass one delivery id and one status per answer, as arrays of the same length.';
    END IF;
    IF cardinality(delivery_ids) IS DISTINCT FROM cardinality(statuses)
       OR (responses IS NOT NULL AND cardinality(responses) <> cardinality(delivery_ids)) THEN
        RAISE EXCEPTION 'delivery_ids, statuses and responses must be arrays of the same length'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('They have %s, %s and %s elements.', coalesce(cardinality(delivery_ids)::text, 'NULL'),
                                  coalesce(cardinality(statuses)::text, 'NULL'), coalesce(cardinality(responses)::text, 'no'));
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(statuses) s WHERE s IS NULL OR s NOT BETWEEN 100 AND 599) THEN
        RAISE EXCEPTION 'command status % is not an HTTP-style status code',
                        (SELECT coalesce(s::text, 'NULL') FROM unnest(statuses) s WHERE s IS NULL OR s NOT BETWEEN 100 AND 599 LIMIT 1)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Report 200 for success, 202 for work under way, 4xx when the device refuses, 5xx when it fails, as IoT Hub direct methods do.';
    END IF;

    -- One statement, on the rows the claim made (a HOT update: no index
    -- covers what it changes).  No counter here: one that every answer
    -- touched would serialize the gateways; the engine counts.  Nor a
    -- wake-up: the engine looks every 50 ms while command jobs run (a step
    -- per answer batch kept a core busy).
    --
    -- 202: the device took the command and works on it (its response may
    -- say how far: "progress", "statusDetails"); it stays open, due within
    -- the job's inProgressTimeout, and may be answered again.  4xx: the
    -- device refused it (rejected); other non-2xx: it failed.
    IF fleet_internal.citus_table('fleet.job_devices') THEN
        taken := fleet_internal.complete_deliveries_on_shards(delivery_ids, statuses, responses, everywhere, operated,
                                                             answered);
    ELSE
    UPDATE fleet.job_devices d
       SET status = CASE WHEN a.status = 202 THEN 'pending'
                         WHEN a.status BETWEEN 200 AND 299 THEN 'completed' ELSE 'failed' END,
           -- the response is in its own column; the error says what it
           -- starts with (a 50 MB response is not kept twice)
           error = CASE WHEN a.status NOT BETWEEN 200 AND 299
                        THEN format('%s with status %s%s',
                                    CASE WHEN a.status BETWEEN 400 AND 499 THEN 'rejected by the device' ELSE 'command failed' END,
                                    a.status,
                                    coalesce(': ' || left(a.response::text, 200)
                                             || CASE WHEN length(a.response::text) > 200 THEN '...' ELSE '' END, '')) END,
           response_status = a.status, response = a.response,
           finished_at = CASE WHEN a.status <> 202 THEN answered END,
           deadline = CASE WHEN a.status = 202 THEN answered + fleet_internal.in_progress_timeout(d.job_id) ELSE d.deadline END
      FROM unnest(delivery_ids, statuses, coalesce(responses, array_fill(NULL::jsonb, ARRAY[cardinality(delivery_ids)])))
           AS a(delivery_id, status, response)
     WHERE d.delivery_id = a.delivery_id AND d.delivery_id IS NOT NULL
       AND d.gateway IS NOT NULL AND d.status = 'pending'
       AND (everywhere OR d.job_id IN (SELECT j.id FROM fleet.jobs j WHERE j.organization_id = ANY (operated)));
    GET DIAGNOSTICS taken = ROW_COUNT;
    END IF;
    -- work under way is due by its in-progress timeout, which may come
    -- before its window's next look (rare: one statement, for 202s only)
    IF 202 = ANY (statuses) THEN
        UPDATE fleet.command_windows w
           SET next_check = least(w.next_check, d.deadline)
          FROM fleet.job_devices d
         WHERE d.delivery_id = ANY (delivery_ids) AND d.delivery_id IS NOT NULL
           AND d.status = 'pending' AND d.response_status = 202
           AND w.job_id = d.job_id AND d.delivery_id BETWEEN w.first_delivery AND w.last_delivery
           AND w.next_check > d.deadline;
    END IF;
    RETURN taken;
END;
$$;
COMMENT ON FUNCTION fleet.complete_commands(bigint[], int[], jsonb[]) IS 'Reports many answers at once; returns how many were taken (the others were no longer open)';

-- One answer: fleet.complete_commands() with one element.
CREATE FUNCTION fleet.complete_command(delivery_id bigint, status int, response jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet.complete_commands(ARRAY[delivery_id], ARRAY[status], ARRAY[response]) = 1
$$;
COMMENT ON FUNCTION fleet.complete_command(bigint, int, jsonb) IS 'Reports a device''s answer to a claimed command; false when the delivery is no longer open';


-- src/sql/job_batches.sql
-- A job's start: where its devices are found and its batches are cut.
--
-- On its first start a job resolves its group's members now (or, for a
-- rerun, the source job's failed devices), numbers them in device id order
-- and cuts them into batches: contiguous ranges of that order, so a batch
-- is walked through the primary key of fleet.job_devices with a cursor
-- (src/sql/job_steps.sql).  One statement, whatever the job's size.

-- Starts a queued job (at: the engine's clock, NULL for the real one).
CREATE FUNCTION fleet_internal.engine_start_job(job fleet.jobs, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
-- the engine's memory stays flat whatever the job's size: the fan-out's
-- sort and its list of assigned devices spill to disk (measured: no slower)
SET work_mem = '4MB'
AS $$
DECLARE
    total   bigint;
    grp     fleet.device_groups;
    refusal text;
    delivery_base bigint;                  -- command jobs: the first delivery id, less one
    timeout interval := fleet_internal.command_timeout(job.rollout);
BEGIN
    SELECT g.* INTO grp FROM fleet.device_groups g WHERE g.id = job.group_id;
    -- the engine sees every organization: it keeps to the job's own.  A
    -- group (or a rerun's source job) that is not in it fails the job.
    IF job.started_at IS NULL THEN
        refusal := CASE
            WHEN job.rerun_of IS NULL
                 AND NOT EXISTS (SELECT 1 FROM fleet.organizations o
                                  WHERE o.id = grp.organization_id AND o.path @> ARRAY[job.organization_id])
            THEN format('device group "%s" is no longer in organization "%s"', job.group_id, job.organization_id)
            WHEN job.rerun_of IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM fleet.jobs s JOIN fleet.organizations o ON o.id = s.organization_id
                                  WHERE s.id = job.rerun_of AND o.path @> ARRAY[job.organization_id])
            THEN format('job "%s" is not in organization "%s"', job.rerun_of, job.organization_id)
        END;
        IF refusal IS NOT NULL THEN
            UPDATE fleet.jobs j SET status = 'failed', finished_at = fleet_internal.moment(at), error = refusal
             WHERE j.id = job.id;
            PERFORM fleet_internal.job_event(job.id, 'failed');
            RETURN;
        END IF;
    END IF;
    IF job.started_at IS NULL THEN
        IF job.job_type = 'command' THEN
            delivery_base := nextval('fleet_internal.delivery_blocks') * 4294967296;
        END IF;
        -- one pass over the members: numbered in id order, counted for a
        -- percentage batch size, each row tagged with its batch
        WITH members AS (
            SELECT jd.device_id FROM fleet.job_devices jd
             WHERE job.rerun_of IS NOT NULL AND jd.job_id = job.rerun_of AND jd.status = 'failed'
            UNION ALL
            -- fleet.device_group_members, for one group whose template and
            -- filter are constants here: without a filter no device document
            -- is built (whole rows of a million devices cost 20 % of a fan-out)
            SELECT d.id FROM fleet.devices d
             WHERE job.rerun_of IS NULL
               AND d.organization_id IN (SELECT o.id FROM fleet.organizations o WHERE o.path @> ARRAY[grp.organization_id])
               AND (grp.template_id IS NULL OR d.template_id = grp.template_id)
               AND (grp.filter IS NULL OR jsonb_path_match(fleet_internal.device_document_of(d.id, d.display_name, d.template_id, d.organization_id, d.simulated,
                 d.connection_state, d.last_activity_at, d.edge, d.manifest_id, d.properties, d.reported, d.cloud_properties), grp.filter, silent => true))
        ),
        numbered AS (
            SELECT m.device_id, row_number() OVER (ORDER BY m.device_id) AS n, count(*) OVER () AS total
              FROM members m
        ),
        assigned AS (
            -- a command job's rows are its deliveries, numbered in the
            -- job's block of ids (src/sql/command_claims.sql)
            INSERT INTO fleet.job_devices (job_id, device_id, batch, delivery_id)
            SELECT job.id, x.device_id,
                   ((x.n - 1) / CASE job.batch_type
                                WHEN 'number' THEN job.batch_value::bigint
                                WHEN 'percentage' THEN greatest(1, ceil(x.total * job.batch_value / 100.0)::bigint)
                                ELSE x.total END + 1)::int,
                   delivery_base + x.n
              FROM numbered x
            RETURNING batch, device_id
        )
        INSERT INTO fleet.job_batches (job_id, batch, first_device, last_device, size)
        SELECT job.id, a.batch, min(a.device_id), max(a.device_id), count(*)
          FROM assigned a GROUP BY a.batch;
        -- a canary first (src/sql/job_rollouts.sql)
        IF job.rollout ? 'canary' AND job.rerun_of IS NULL THEN
            PERFORM fleet_internal.engine_cut_canary(job);
        END IF;

        SELECT coalesce(sum(b.size), 0) INTO total FROM fleet.job_batches b WHERE b.job_id = job.id;
        -- a big fan-out leaves the table's statistics describing another
        -- table, and lookups into it (by gateways, by the engine) would be
        -- planned as scans: the next turn refreshes them, when no
        -- maintenance holds the table (fleet_internal.refresh_statistics)
        IF total >= 10000 THEN
            UPDATE fleet_internal.engine_state SET analyze_wanted = true;
        END IF;

        UPDATE fleet.jobs j
           SET started_at = fleet_internal.moment(at), device_count = total,
               current_batch = CASE WHEN total > 0 THEN 1 END
         WHERE j.id = job.id;
    END IF;
    -- a resumed command job offers its withdrawn commands again, with a
    -- fresh deadline
    UPDATE fleet.command_windows w
       SET deadline = fleet_internal.moment(at) + timeout,
           next_check = least(coalesce(w.next_check, 'infinity'), fleet_internal.moment(at) + timeout)
     WHERE w.job_id = job.id;
    IF FOUND THEN
        -- (the payload says nothing: anyone may LISTEN)
        PERFORM pg_notify('fleet_commands', '');
    END IF;
    UPDATE fleet.jobs j SET status = 'running', last_step_at = NULL WHERE j.id = job.id;
    PERFORM fleet_internal.job_event(job.id, 'started');
END;
$$;

-- src/sql/job_steps.sql
-- The steps of a running job: one committed chunk of devices at a time,
-- batch after batch, with the cancellation threshold checked after each.
-- Property, cloud property, template and manifest jobs change devices here;
-- command jobs offer their devices to gateways a window at a time
-- (src/sql/command_windows.sql).  Every state change is committed with
-- the chunk that made it: after a crash the engine carries on from the
-- rows, repeating nothing and skipping nothing.  at is the engine's clock
-- (NULL: the real one).

-- True when failures exceed the threshold: strictly more than allowed.
CREATE FUNCTION fleet_internal.threshold_exceeded(kind text, allowed int, failures bigint, scope bigint)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE kind
           WHEN 'number' THEN failures > allowed
           WHEN 'percentage' THEN failures * 100 > allowed::bigint * scope
           ELSE false END
$$;

-- Stops a job's open work: batches not done are marked, and the job takes
-- its final status (so gateways claim nothing more from it; commands already
-- claimed may still be answered or time out, see fleet.expire_commands).
CREATE FUNCTION fleet_internal.engine_finish_job(job fleet.jobs, final_status text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- windows with nothing claimed go now; the others once their claimed
    -- commands are answered or time out
    UPDATE fleet.command_windows w SET next_check = fleet_internal.transaction_moment(at) WHERE w.job_id = job.id;
    -- the batch under way gets its final counts (answers are counted when a
    -- batch ends, and this one ends here)
    UPDATE fleet.job_batches b
       SET status = 'cancelled', finished_at = fleet_internal.moment(at),
           completed = c.completed, failed = c.failed, timed_out = c.timed_out, rejected = c.rejected
      FROM (SELECT jb.batch,
                   count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                   count(*) FILTER (WHERE jd.status = 'failed') AS failed,
                   count(*) FILTER (WHERE jd.status = 'failed' AND jd.error = 'timed out') AS timed_out,
                   count(*) FILTER (WHERE jd.status = 'failed' AND fleet_internal.failure_type(jd.error) = 'REJECTED') AS rejected
              FROM fleet.job_batches jb
              JOIN fleet.job_devices jd ON jd.job_id = jb.job_id
                   AND jd.device_id >= jb.first_device AND jd.device_id <= jb.last_device AND jd.batch = jb.batch
             WHERE jb.job_id = job.id AND jb.status IN ('pending', 'running')
             GROUP BY jb.batch) c
     WHERE b.job_id = job.id AND b.batch = c.batch;
    UPDATE fleet.jobs j SET status = final_status, finished_at = fleet_internal.moment(at) WHERE j.id = job.id;
    PERFORM fleet_internal.job_event(job.id, final_status, job.current_batch);
END;
$$;

-- The expression that tells why a device cannot take this job's change, or
-- NULL when it can ("d" is the device, NULL when it was deleted).
CREATE FUNCTION fleet_internal.engine_device_problem(job fleet.jobs)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted     text := CASE job.job_type WHEN 'property' THEN 'writable_property'
                                         WHEN 'cloudProperty' THEN 'cloud_property'
                                         WHEN 'command' THEN 'command' END;
    paths      text;
    qualifying text[];
BEGIN
    IF job.job_type = 'deviceTemplateMigration' THEN
        RETURN $e$CASE WHEN d.id IS NULL THEN 'the device was deleted' END$e$;
    ELSIF job.job_type = 'deviceManifestMigration' THEN
        RETURN $e$CASE WHEN d.id IS NULL THEN 'the device was deleted'
                       WHEN NOT d.edge THEN 'the device is not an IoT Edge device' END$e$;
    END IF;

    -- templates offering every path of the job exactly as the target does
    SELECT string_agg(format('"%s"', e ->> 'path'), ', ') INTO paths FROM jsonb_array_elements(job.data) e;
    WITH wanted AS (
        SELECT want.*
          FROM jsonb_array_elements(job.data) e
          JOIN fleet.template_capabilities want
            ON want.template_id = e ->> 'target' AND want.capability = wanted
           AND (coalesce(want.component || '/', '') || want.name) = e ->> 'path'
    )
    SELECT array_agg(q.template_id) INTO qualifying
      FROM (SELECT have.template_id
              FROM wanted w
              JOIN fleet.template_capabilities have
                ON have.component IS NOT DISTINCT FROM w.component AND have.name = w.name
               AND have.capability = w.capability AND have.schema IS NOT DISTINCT FROM w.schema
               AND have.request IS NOT DISTINCT FROM w.request
               AND have.min_value IS NOT DISTINCT FROM w.min_value
               AND have.max_value IS NOT DISTINCT FROM w.max_value
             GROUP BY have.template_id
            HAVING count(*) = (SELECT count(*) FROM wanted)) q;
    RETURN format($e$CASE WHEN d.id IS NULL THEN 'the device was deleted'
                          WHEN d.template_id IS NULL THEN 'the device has no device template'
                          WHEN d.template_id <> ALL (%L::text[]) THEN 'device template "' || d.template_id || %L
                     END$e$,
                  coalesce(qualifying, '{}'),
                  format('" does not have the %s %s', replace(wanted, '_', ' '), paths));
END;
$$;

-- The SET clause of a property, cloud property, template or manifest job.
-- Properties are set as in an IoT Hub twin's desired section: root
-- interface properties at the top level, a component's under its name
-- (marked "__t": "c").
CREATE FUNCTION fleet_internal.engine_set_clause(job fleet.jobs)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    column_name text := CASE job.job_type WHEN 'property' THEN 'properties' ELSE 'cloud_properties' END;
    expr        text := format('d.%I', column_name);
    root        jsonb;
    part        record;
BEGIN
    IF job.job_type = 'deviceTemplateMigration' THEN
        RETURN format('template_id = %L', job.data -> 0 ->> 'template');
    ELSIF job.job_type = 'deviceManifestMigration' THEN
        RETURN format('manifest_id = %L', job.data -> 0 ->> 'manifest');
    END IF;

    SELECT jsonb_object_agg(e ->> 'path', e -> 'value') INTO root
      FROM jsonb_array_elements(job.data) e WHERE strpos(e ->> 'path', '/') = 0;
    IF root IS NOT NULL THEN
        expr := format('%s || %L::jsonb', expr, root);
    END IF;
    FOR part IN
        SELECT split_part(e ->> 'path', '/', 1) AS component,
               jsonb_object_agg(substr(e ->> 'path', strpos(e ->> 'path', '/') + 1), e -> 'value') AS patch
          FROM jsonb_array_elements(job.data) e WHERE strpos(e ->> 'path', '/') > 0
         GROUP BY 1
    LOOP
        expr := format('jsonb_set(%s, %L, coalesce(d.%I -> %L, ''{"__t": "c"}''::jsonb) || %L::jsonb)',
                       expr, ARRAY[part.component], column_name, part.component, part.patch);
    END LOOP;
    IF job.job_type = 'property' THEN
        -- a new desired version, at which each property the job sets
        -- changed: the MQTT endpoint sends it to the device as a patch, and
        -- fleet.device_property_sync compares the device's acknowledgement
        -- with it
        -- (the object written as text and cast: jsonb_build_object() is
        -- stable, and Citus sends no stable function over a device's
        -- columns to the shards)
        RETURN format('%I = %s, desired_version = d.desired_version + 1, desired_versions = d.desired_versions || (%s || ''}'')::jsonb',
                      column_name, expr,
                      (SELECT string_agg(format('%L || (d.desired_version + 1)::text',
                                                CASE WHEN x.n = 1 THEN '{' ELSE ', ' END || to_jsonb(x.e ->> 'path')::text || ': '),
                                         ' || ' ORDER BY x.n)
                         FROM jsonb_array_elements(job.data) WITH ORDINALITY AS x (e, n)));
    END IF;
    RETURN format('%I = %s', column_name, expr);
END;
$$;

-- Fails the devices of a chunk that cannot take the job's change, each
-- with its reason (problem: fleet_internal.engine_device_problem()), one
-- statement per distinct reason; there are a handful.  Returns how many
-- failed.
CREATE FUNCTION fleet_internal.engine_fail_unfit(job_id text, ids text[], problem text, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    failure  record;
    n_marked bigint;
    n_failed bigint := 0;
    -- (once: the clock is a function call per row in an UPDATE's SET)
    started  timestamptz := fleet_internal.transaction_moment(at);
    failed_at timestamptz := fleet_internal.moment(at);
BEGIN
    FOR failure IN EXECUTE format($q$
        SELECT k.problem, array_agg(k.device_id) AS devices
          FROM (SELECT u.device_id, %s AS problem
                  FROM unnest($1::text[]) AS u(device_id)
                  LEFT JOIN fleet.devices d ON d.id = u.device_id) k
         WHERE k.problem IS NOT NULL
         GROUP BY k.problem
    $q$, problem) USING ids
    LOOP
        -- (a command job's device gets no delivery)
        UPDATE fleet.job_devices jd
           SET status = 'failed', error = failure.problem, started_at = started,
               finished_at = failed_at,
               delivery_id = NULL
         WHERE jd.job_id = engine_fail_unfit.job_id AND jd.device_id = ANY (failure.devices)
           AND jd.status = 'pending';
        GET DIAGNOSTICS n_marked = ROW_COUNT;
        n_failed := n_failed + n_marked;
    END LOOP;
    RETURN n_failed;
END;
$$;

-- One committed chunk of a property, cloud property, template or manifest
-- job: the next pending devices of the batch are changed and marked.  A
-- device completes exactly when the UPDATE wrote it (its RETURNING says
-- which); every other one fails with its reason.  Returns the number of
-- devices dealt with, and moves the batch's cursor.
CREATE FUNCTION fleet_internal.engine_apply_chunk(job fleet.jobs, b fleet.job_batches, chunk_size int,
                                                  at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    ids         text[];
    problem     text := fleet_internal.engine_device_problem(job);
    set_clause  text := fleet_internal.engine_set_clause(job);
    applied     text[];
    again       text[];
    missed      text[];
    n_applied   bigint;
    n_failed    bigint := 0;
    n_marked    bigint;
    chunk_last  text;
    done_at     timestamptz;
    shared_ranges boolean := job.rollout ?| '{continuous,canary}';
BEGIN
    -- The chunk: the next pending devices of the batch, in id order.  Its
    -- ids go into the statements below as an array, so each is an index
    -- lookup whatever the planner believes about freshly written tables.
    SELECT array_agg(c.device_id ORDER BY c.device_id) INTO ids
      FROM (SELECT jd.device_id FROM fleet.job_devices jd
             WHERE jd.job_id = job.id AND jd.device_id >= b.first_device AND jd.device_id <= b.last_device
               AND (b.cursor IS NULL OR jd.device_id > b.cursor) AND jd.status = 'pending'
               -- (a continuous job's or a canary's batches share ranges; for
               -- the others the planner drops this: plans are custom)
               AND (NOT shared_ranges OR jd.batch = b.batch)
             ORDER BY jd.device_id
             LIMIT chunk_size) c;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    chunk_last := ids[cardinality(ids)];

    -- the change, on every device that can take it: walked as a range of
    -- the primary key, the ids checked by hash (a lookup per id costs a
    -- third more); IS TRUE keeps the planner from turning the check into
    -- those lookups
    EXECUTE format('WITH changed AS (UPDATE fleet.devices d SET %s
                                      WHERE d.id >= $2 AND d.id <= $3 AND (d.id = ANY ($1)) IS TRUE AND (%s) IS NULL
                                      RETURNING d.id)
                    SELECT array_agg(c.id) FROM changed c',
                   set_clause, problem)
       INTO applied USING ids, ids[1], chunk_last;
    n_applied := coalesce(cardinality(applied), 0);
    done_at := fleet_internal.moment(at);

    IF n_applied = cardinality(ids) THEN
        -- the common case: the whole chunk took it, one range of job_devices
        UPDATE fleet.job_devices jd
           SET status = 'completed', started_at = done_at, finished_at = done_at
         WHERE jd.job_id = job.id AND jd.device_id >= ids[1] AND jd.device_id <= chunk_last
           AND jd.status = 'pending';
    ELSE
        IF n_applied > 0 THEN
            UPDATE fleet.job_devices jd
               SET status = 'completed', started_at = done_at, finished_at = done_at
             WHERE jd.job_id = job.id AND jd.device_id = ANY (applied) AND jd.status = 'pending';
        END IF;
        missed := ARRAY(SELECT u.id FROM unnest(ids) u(id) EXCEPT SELECT a.id FROM unnest(applied) a(id));
        -- those that cannot take the change, as the devices stand now, fail with the reason
        n_failed := fleet_internal.engine_fail_unfit(job.id, missed, problem, at);
        -- the others looked fit but were not written: deleted and created
        -- again, or changed, while the UPDATE waited for a lock.  One more
        -- try, each by its id, as they stand now
        missed := ARRAY(SELECT jd.device_id FROM fleet.job_devices jd
                         WHERE jd.job_id = job.id AND jd.device_id = ANY (missed) AND jd.status = 'pending');
        IF cardinality(missed) > 0 THEN
            EXECUTE format('WITH changed AS (UPDATE fleet.devices d SET %s
                                              WHERE d.id = ANY ($1) AND (%s) IS NULL
                                              RETURNING d.id)
                            SELECT array_agg(c.id) FROM changed c',
                           set_clause, problem)
               INTO again USING missed;
            UPDATE fleet.job_devices jd
               SET status = 'completed', started_at = done_at, finished_at = done_at
             WHERE jd.job_id = job.id AND jd.device_id = ANY (again) AND jd.status = 'pending';
            GET DIAGNOSTICS n_marked = ROW_COUNT;
            n_applied := n_applied + n_marked;
            UPDATE fleet.job_devices jd
               SET status = 'failed', started_at = done_at, finished_at = done_at,
                   error = 'the device changed while the job changed it; rerun the job to apply the change'
             WHERE jd.job_id = job.id AND jd.device_id = ANY (missed) AND jd.status = 'pending';
            GET DIAGNOSTICS n_marked = ROW_COUNT;
            n_failed := n_failed + n_marked;
        END IF;
    END IF;

    UPDATE fleet.job_batches jb
       SET completed = jb.completed + n_applied, failed = jb.failed + n_failed, cursor = chunk_last
     WHERE jb.job_id = b.job_id AND jb.batch = b.batch;
    -- desired properties moved: MQTT bridges (LISTEN fleet_desired) send
    -- the patches when this commits; no payload, as fleet_commands
    IF job.job_type = 'property' AND n_applied > 0 THEN
        PERFORM pg_notify('fleet_desired', '');
    END IF;
    RETURN cardinality(ids);
END;
$$;

-- Moves one running job forward by one chunk.  Returns true when it has
-- more work right away.
CREATE FUNCTION fleet_internal.engine_advance_job(job_id text, at timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    job        fleet.jobs;
    b          fleet.job_batches;
    -- smaller after a statement timeout (fleet_internal.engine_failed)
    chunk_size int := coalesce((SELECT s.step_size FROM fleet_internal.job_engine_state s
                                 WHERE s.job_id = engine_advance_job.job_id),
                               current_setting('fleet.engine_chunk_size')::int);
    dealt      bigint;
    left_over  bigint;                     -- devices of the batch still to deal with
    job_failed bigint;
    window_size int := current_setting('fleet.command_window')::int;
    out_now    record;                     -- command jobs: what the open windows hold
    open_failed bigint := 0;               -- command jobs: failures not yet counted into a batch
    allowance  record;                     -- a rate-limited job: what this step may dispatch
    rate_limited boolean;
    counted    bigint;                     -- failures the threshold counts, and out of how many
    scope      bigint;
    waits      text;                       -- why it waits: its windows, or its next batch's promotion
    outside    record;                     -- its maintenance windows now
    abort      record;                     -- the abort criterion its outcomes meet, if one is
    finished   record;                     -- its outcomes so far: completed, failed, timed out
    continuous boolean;                    -- it stays active: devices that join its group get it
    open_completed bigint := 0;            -- command jobs: outcomes in open windows, not yet in a batch
    open_timed_out bigint := 0;
    open_rejected  bigint := 0;
BEGIN
    -- the lock makes stop_job wait for this chunk, and this chunk see a stop
    -- (NO KEY UPDATE: foreign key checks against the job need not wait);
    -- SKIP LOCKED: a stop under way wins (this chunk is not run), and a
    -- session holding the row does not stall the engine for every job
    SELECT j.* INTO job FROM fleet.jobs j WHERE j.id = job_id AND j.status = 'running'
       FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE fleet.jobs j SET last_step_at = fleet_internal.moment(at) WHERE j.id = job.id;
    rate_limited := job.rollout ?| '{maximumPerMinute,exponentialRate}';
    -- (a rerun of a continuous job reruns its failed devices, no more)
    continuous := job.rollout ? 'continuous' AND job.rerun_of IS NULL;

    -- its rollout's end (src/sql/job_rollouts.sql)
    IF fleet_internal.rollout_end(job) <= fleet_internal.moment(at) THEN
        PERFORM fleet_internal.engine_end_job(job, at);
        RETURN false;
    END IF;
    -- its maintenance windows: outside them it waits for the next to open
    -- (what it dispatched goes on: commands offered may still be claimed)
    IF job.rollout ? 'maintenanceWindows' THEN
        SELECT * INTO outside FROM fleet_internal.maintenance_window_state(job.rollout, fleet_internal.moment(at));
        IF NOT outside.open THEN
            UPDATE fleet_internal.job_engine_state s SET not_before = outside.next_open WHERE s.job_id = job.id;
            waits := format('waiting: outside its maintenance windows; the next opens at %s',
                            fleet_internal.rest_timestamp(outside.next_open));
            UPDATE fleet.jobs j SET status_detail = waits
             WHERE j.id = job.id AND j.status_detail IS DISTINCT FROM waits;
            RETURN false;
        END IF;
        IF job.status_detail IS NOT NULL AND NOT rate_limited THEN
            UPDATE fleet.jobs j SET status_detail = NULL WHERE j.id = job.id;
        END IF;
    END IF;
    -- its rate: a step deals at most what the last minute leaves, and when
    -- that is nothing the job waits (it is passed over until then)
    IF rate_limited THEN
        SELECT * INTO allowance FROM fleet_internal.rollout_allowance(job, at);
        IF allowance.allowed = 0 THEN
            UPDATE fleet_internal.job_engine_state s SET not_before = allowance.wait_until WHERE s.job_id = job.id;
            IF allowance.spent AND job.status_detail IS NULL THEN
                UPDATE fleet.jobs j
                   SET status_detail = format('waiting: its rate, %s devices a minute, is reached', fleet_internal.rollout_rate(job))
                 WHERE j.id = job.id;
            END IF;
            RETURN false;
        END IF;
        chunk_size := least(chunk_size, allowance.allowed);
        IF job.status_detail IS NOT NULL THEN
            UPDATE fleet.jobs j SET status_detail = NULL WHERE j.id = job.id;
        END IF;
    END IF;

    SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = job.current_batch;
    -- a continuous job between its batches (or still without devices)
    IF continuous AND (b.status IS NULL OR b.status = 'completed') THEN
        IF fleet_internal.engine_continue(job, coalesce(job.current_batch, 0) + 1, at) THEN
            RETURN false;
        END IF;
        PERFORM fleet_internal.engine_finish_job(job,
            CASE WHEN EXISTS (SELECT 1 FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.failed > 0)
                 THEN 'failed' ELSE 'completed' END, at);
        RETURN false;
    END IF;
    IF job.current_batch IS NULL THEN           -- a job without devices
        PERFORM fleet_internal.engine_finish_job(job, 'completed', at);
        RETURN false;
    END IF;
    IF b.status = 'pending' THEN
        UPDATE fleet.job_batches jb SET status = 'running', started_at = fleet_internal.moment(at)
         WHERE jb.job_id = job.id AND jb.batch = b.batch;
        PERFORM fleet_internal.job_event(job.id, 'batchStarted', b.batch);
    END IF;

    IF job.job_type = 'command' THEN
        -- windows all answered are counted and closed; the rest are out
        SELECT * INTO out_now FROM fleet_internal.engine_close_windows(job, b);
        -- the job's window of outstanding commands, opened in halves: a
        -- half opens once a half has closed, so gateways always have one
        -- to claim from while the other's last answers come in, and the
        -- engine opens a few large windows instead of one per answer batch
        -- (each step has a fixed cost that shares the CPU with the gateways)
        IF out_now.outstanding <= window_size / 2 THEN
            dealt := fleet_internal.engine_open_window(job, b,
                         least(chunk_size, greatest(window_size / 2, 1), window_size - out_now.outstanding), at);
        ELSE
            dealt := 0;
        END IF;
        SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch;
        -- the threshold sees the open windows' failures too
        open_failed := out_now.failed;
        open_completed := out_now.completed;
        open_timed_out := out_now.timed_out;
        open_rejected := out_now.rejected;
        b.failed := b.failed + open_failed;
        -- the batch is done once every device was offered and every window
        -- closed.  Its counts are complete then: windows partition its
        -- deliveries, a window closes only when none is pending (and an
        -- outcome never changes), and devices without a delivery were
        -- counted when their window opened.
        left_over := CASE WHEN dealt = 0 AND out_now.outstanding = 0 THEN 0 ELSE 1 END;
    ELSE
        dealt := fleet_internal.engine_apply_chunk(job, b, chunk_size, at);
        SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch;
        -- a full chunk may not have been the batch's last: look again
        left_over := CASE WHEN dealt = chunk_size THEN 1 ELSE 0 END;
    END IF;

    IF dealt > 0 THEN
        IF rate_limited THEN
            PERFORM fleet_internal.record_dispatch(job.id, dealt, at);
        END IF;
        -- each step's progress (a listener reads the devices that finished
        -- since it last looked: fleet.job_devices by finished_at)
        PERFORM fleet_internal.job_event(job.id, 'progress', b.batch);
    END IF;

    -- cancellation threshold: strictly more failures than allowed (after a
    -- pause, more than allowed since it: threshold_base); it cancels the
    -- job, or pauses it
    IF job.threshold_type IS NOT NULL THEN
        SELECT sum(jb.failed) + open_failed INTO job_failed FROM fleet.job_batches jb WHERE jb.job_id = job.id;
        IF job.threshold_per_batch THEN
            counted := greatest(b.failed - job.threshold_base, 0);
            scope := b.size;
        ELSE
            counted := job_failed - job.threshold_base;
            scope := job.device_count;
        END IF;
        IF fleet_internal.threshold_exceeded(job.threshold_type, job.threshold_value, counted, scope) THEN
            IF job.rollout ->> 'onThreshold' = 'pause' THEN
                -- once resumed, the threshold counts the failures after these
                UPDATE fleet.jobs j SET threshold_base = job.threshold_base + counted WHERE j.id = job.id;
                PERFORM fleet_internal.engine_pause_job(job,
                    format('paused: %s failed %s passed its cancellation threshold (%s%s%s); resume it with fleet.resume_job()',
                           counted, CASE WHEN job.threshold_per_batch THEN 'devices of batch ' || b.batch ELSE 'devices' END,
                           job.threshold_value, CASE WHEN job.threshold_type = 'percentage' THEN ' %' ELSE '' END,
                           CASE WHEN job.threshold_per_batch THEN ' a batch' ELSE '' END), at);
            ELSE
                PERFORM fleet_internal.engine_finish_job(job, 'cancelled', at);
            END IF;
            RETURN false;
        END IF;
    END IF;

    -- abort criteria by failure type, over the finished devices of the job
    IF job.rollout ? 'abortCriteria' THEN
        SELECT sum(jb.completed)::bigint + open_completed AS completed, sum(jb.failed)::bigint + open_failed AS failed,
               sum(jb.timed_out)::bigint + open_timed_out AS timed_out,
               sum(jb.rejected)::bigint + open_rejected AS rejected
          INTO finished
          FROM fleet.job_batches jb WHERE jb.job_id = job.id;
        SELECT * INTO abort
          FROM fleet_internal.abort_criterion(job, finished.completed, finished.failed, finished.timed_out,
                                              finished.rejected);
        IF abort.action = 'PAUSE' THEN
            -- once resumed, the criteria count what finishes after this
            UPDATE fleet.jobs j
               SET abort_base = jsonb_build_object('completed', finished.completed, 'failed', finished.failed,
                                                   'timedOut', finished.timed_out, 'rejected', finished.rejected)
             WHERE j.id = job.id;
            PERFORM fleet_internal.engine_pause_job(job, abort.reason || '; resume it with fleet.resume_job()', at);
            RETURN false;
        ELSIF abort.action = 'CANCEL' THEN
            UPDATE fleet.jobs j SET status_detail = abort.reason WHERE j.id = job.id;
            PERFORM fleet_internal.engine_finish_job(job, 'cancelled', at);
            RETURN false;
        END IF;
    END IF;

    IF left_over > 0 THEN
        RETURN dealt > 0;
    END IF;

    -- the batch is done: on to the next, or the job is
    UPDATE fleet.job_batches jb SET status = 'completed', finished_at = fleet_internal.moment(at)
     WHERE jb.job_id = job.id AND jb.batch = b.batch;
    PERFORM fleet_internal.job_event(job.id, 'batchCompleted', b.batch);
    IF EXISTS (SELECT 1 FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch + 1) THEN
        -- (a batch's threshold counts from zero again)
        UPDATE fleet.jobs j
           SET current_batch = b.batch + 1,
               threshold_base = CASE WHEN j.threshold_per_batch THEN 0 ELSE j.threshold_base END
         WHERE j.id = job.id;
        -- staged promotion: the next batch may wait for a hand, or for this
        -- one's success (src/sql/job_rollouts.sql)
        IF job.rollout ? 'promotion' THEN
            SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch;
            waits := fleet_internal.promotion_wait(job, b);
            IF waits IS NOT NULL THEN
                PERFORM fleet_internal.engine_pause_job(job, waits, at);
                RETURN false;
            END IF;
        END IF;
        RETURN true;
    END IF;
    IF continuous THEN
        RETURN true;                            -- the next step looks for devices that joined
    END IF;
    PERFORM fleet_internal.engine_finish_job(job,
        CASE WHEN EXISTS (SELECT 1 FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.failed > 0)
             THEN 'failed' ELSE 'completed' END, at);
    RETURN false;
END;
$$;

-- Fails a job the engine gave up on (its steps kept failing): the error is
-- the job's, its devices that never ran stay pending (fleet.resume_job()
-- carries on with them), and its claimed commands may still be answered or
-- time out.
CREATE FUNCTION fleet_internal.engine_give_up(job_id text, message text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE fleet.jobs j SET status = 'failed', error = message, finished_at = fleet_internal.moment(at)
     WHERE j.id = engine_give_up.job_id;
    UPDATE fleet.command_windows w SET next_check = fleet_internal.transaction_moment(at) WHERE w.job_id = engine_give_up.job_id;
    PERFORM fleet_internal.job_event(engine_give_up.job_id, 'failed');
END;
$$;

-- src/sql/command_windows.sql
-- The engine's side of command jobs: it offers a command batch's devices to
-- gateways a window at a time (fleet.command_windows: a range of delivery
-- ids, at most fleet.command_window outstanding), counts a window once all
-- of it has an outcome, and times out what nobody answered.  Gateways
-- claim and answer through src/sql/command_claims.sql.  at is the engine's clock
-- (NULL: the real one).

-- Opens the next window of a command batch: its next devices (at most
-- size), in device order, become claimable by gateways, as one range of
-- delivery ids.  Simulated devices are answered at once; devices the
-- command cannot reach fail, with no delivery.  Returns the number of
-- devices dealt with (0: the batch has no more).
CREATE FUNCTION fleet_internal.engine_open_window(job fleet.jobs, b fleet.job_batches, size bigint, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    timeout       interval := fleet_internal.command_timeout(job.rollout);
    problem       text := fleet_internal.engine_device_problem(job);
    now_ts        timestamptz := fleet_internal.transaction_moment(at);
    ids           text[];
    first_id      bigint;
    last_id       bigint;
    simulated_ids text[];
    n_reachable   bigint;
    n_failed      bigint := 0;
    shared_ranges boolean := job.rollout ?| '{continuous,canary}';
    window_end    text;
BEGIN
    -- the next devices after the cursor: every row of the range (a window
    -- is a range of delivery ids, so it takes them all)
    SELECT array_agg(c.device_id ORDER BY c.device_id), min(c.delivery_id), max(c.delivery_id)
      INTO ids, first_id, last_id
      FROM (SELECT jd.device_id, jd.delivery_id FROM fleet.job_devices jd
             WHERE jd.job_id = job.id AND jd.device_id >= b.first_device AND jd.device_id <= b.last_device
               AND (b.cursor IS NULL OR jd.device_id > b.cursor)
               -- (a continuous job's or a canary's batches share ranges; for
               -- the others the planner drops this: plans are custom)
               AND (NOT shared_ranges OR jd.batch = b.batch)
             ORDER BY jd.device_id
             LIMIT size) c;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;

    -- which devices the command can reach, and which of those are simulated
    -- (walked as a range of the key, the ids checked by hash: see
    -- engine_apply_chunk)
    EXECUTE format('SELECT array_agg(d.id) FILTER (WHERE d.simulated), count(*)
                      FROM fleet.devices d
                     WHERE d.id >= $2 AND d.id <= $3 AND (d.id = ANY ($1)) IS TRUE AND (%s) IS NULL', problem)
       INTO simulated_ids, n_reachable
      USING ids, ids[1], ids[cardinality(ids)];
    IF n_reachable < cardinality(ids) THEN
        -- each of the others fails with its reason, one statement per reason
        n_failed := fleet_internal.engine_fail_unfit(job.id, ids, problem, at);
    END IF;
    IF simulated_ids IS NOT NULL THEN
        UPDATE fleet.job_devices jd
           SET status = 'completed', gateway = 'simulator', started_at = now_ts, finished_at = now_ts,
               response_status = 200, response = '{"simulated": true}'
         WHERE jd.job_id = job.id AND jd.device_id = ANY (simulated_ids) AND jd.status = 'pending';
    END IF;

    INSERT INTO fleet.command_windows (job_id, batch, first_delivery, last_delivery, opened_at, deadline, next_check)
    VALUES (job.id, b.batch, first_id, last_id, now_ts, now_ts + timeout, now_ts + timeout);
    IF n_reachable > coalesce(cardinality(simulated_ids), 0) THEN
        -- (the payload says nothing: anyone may LISTEN)
        PERFORM pg_notify('fleet_commands', '');
    END IF;
    -- devices without a delivery are in no window: they count here.  (The
    -- last id as a value: Citus 13.2 crashes deparsing a subscript of a
    -- parameter in an UPDATE's SET.)
    window_end := ids[cardinality(ids)];
    UPDATE fleet.job_batches jb SET cursor = window_end, failed = jb.failed + n_failed
     WHERE jb.job_id = b.job_id AND jb.batch = b.batch;
    RETURN cardinality(ids);
END;
$$;

-- A command batch's open windows: those whose devices all have an outcome
-- are counted into the batch and closed.  Returns how many devices the
-- windows still open hold (outstanding), and, for a job with a threshold,
-- how many of them failed already.  A window is counted once, when it
-- closes; a step over a window still at work looks at one row or a few
-- (its last rows are the last claimed, so one still pending is found at
-- once from the end).
CREATE FUNCTION fleet_internal.engine_close_windows(job fleet.jobs, b fleet.job_batches,
                                           OUT outstanding bigint, OUT failed bigint,
                                           OUT completed bigint, OUT timed_out bigint, OUT rejected bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    w      fleet.command_windows;
    counts record;
BEGIN
    outstanding := 0;
    failed := 0;
    completed := 0;
    timed_out := 0;
    rejected := 0;
    FOR w IN
        SELECT cw.* FROM fleet.command_windows cw
         WHERE cw.job_id = job.id AND cw.batch = b.batch
         ORDER BY cw.first_delivery
    LOOP
        -- failures its rollout retries are offered again, not counted
        IF job.rollout ? 'retries' THEN
            PERFORM fleet_internal.engine_retry_failures(job, w, NULL);
        END IF;
        -- (not EXISTS: the planner drops an EXISTS query's ORDER BY)
        PERFORM FROM fleet.job_devices jd
          WHERE jd.delivery_id IS NOT NULL
            AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
            AND jd.status = 'pending'
          ORDER BY jd.delivery_id DESC
          LIMIT 1;
        IF FOUND THEN
            outstanding := outstanding + (w.last_delivery - w.first_delivery + 1);
            -- what a threshold or abort criteria count: the outcomes so far
            IF job.threshold_type IS NOT NULL OR job.rollout ? 'abortCriteria' THEN
                SELECT count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                       count(*) FILTER (WHERE jd.status = 'failed') AS failed,
                       count(*) FILTER (WHERE jd.status = 'failed' AND jd.error = 'timed out') AS timed_out,
                       count(*) FILTER (WHERE jd.status = 'failed' AND fleet_internal.failure_type(jd.error) = 'REJECTED') AS rejected
                  INTO counts
                  FROM fleet.job_devices jd
                 WHERE jd.delivery_id IS NOT NULL
                   AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
                   AND jd.status <> 'pending';
                failed := failed + counts.failed;
                completed := completed + counts.completed;
                timed_out := timed_out + counts.timed_out;
                rejected := rejected + counts.rejected;
            END IF;
        ELSE
            SELECT count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                   count(*) FILTER (WHERE jd.status = 'failed') AS failed,
                   count(*) FILTER (WHERE jd.status = 'failed' AND jd.error = 'timed out') AS timed_out,
                   count(*) FILTER (WHERE jd.status = 'failed' AND fleet_internal.failure_type(jd.error) = 'REJECTED') AS rejected
              INTO counts
              FROM fleet.job_devices jd
             WHERE jd.delivery_id IS NOT NULL
               AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery;
            UPDATE fleet.job_batches jb
               SET completed = jb.completed + counts.completed, failed = jb.failed + counts.failed,
                   timed_out = jb.timed_out + counts.timed_out, rejected = jb.rejected + counts.rejected
             WHERE jb.job_id = b.job_id AND jb.batch = b.batch;
            DELETE FROM fleet.command_windows cw WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        END IF;
    END LOOP;
END;
$$;

-- Fails every command past its deadline as "timed out".  The engine calls
-- it every step; it is safe to call at any time.  Only windows whose
-- next_check has come are read, so a step with nothing overdue costs a
-- look at a few window rows.
--
-- A window of a job that is not running (stopped, or finished) is looked
-- at again every fleet.command_timeout: a claim that read the job as
-- running just before it stopped commits after that, and its command must
-- still time out.  A finished job's window goes once nothing in it is
-- claimed and the job finished a timeout ago (no claim takes that long).
CREATE FUNCTION fleet_internal.expire_commands(at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    timeout   interval := current_setting('fleet.command_timeout')::interval;
    now_ts    timestamptz := fleet_internal.transaction_moment(at);
    -- (once: the clock is a function call per row in an UPDATE's SET)
    expired_at timestamptz := fleet_internal.moment(at);
    expired   bigint := 0;
    n_expired bigint;
    w         record;
    still_out record;
    on_shards boolean := fleet_internal.citus_table('fleet.job_devices');
BEGIN
    -- one statement per due window (a handful: windows are few, and due
    -- only when something in them is overdue)
    FOR w IN
        SELECT cw.job_id, cw.first_delivery, cw.last_delivery, cw.deadline, j.status = 'running' AS running,
               -- (a job the engine gave up on may be resumed: its windows stay)
               j.status IN ('completed', 'failed', 'cancelled') AND j.error IS NULL
               AND j.finished_at < now_ts - greatest(timeout, fleet_internal.command_timeout(j.rollout)) AS long_finished,
               fleet_internal.command_timeout(j.rollout) AS job_timeout
          FROM fleet.command_windows cw JOIN fleet.jobs j ON j.id = cw.job_id
         WHERE cw.next_check <= now_ts
           FOR NO KEY UPDATE OF cw
    LOOP
        -- now_ts: the step's start, so one step draws one line.  A claimed
        -- command without a deadline (none of ours) is overdue.  SKIP
        -- LOCKED: a row a gateway holds (a claim or an answer not yet
        -- committed) waits for the next look, not the engine for it.
        IF on_shards THEN
            -- on Citus SKIP LOCKED works within one shard only: the rows
            -- are updated where they are, a held one waited for (within
            -- fleet.engine_lock_timeout, then the next look)
            UPDATE fleet.job_devices jd
               SET status = 'failed', error = 'timed out', finished_at = expired_at
             WHERE jd.delivery_id IS NOT NULL
               AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
               AND jd.status = 'pending'
               AND CASE WHEN jd.gateway IS NOT NULL THEN coalesce(jd.deadline < now_ts, true)
                        ELSE w.running AND w.deadline < now_ts END;
        ELSE
            WITH overdue AS (
                SELECT jd.delivery_id FROM fleet.job_devices jd
                 WHERE jd.delivery_id IS NOT NULL
                   AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
                   AND jd.status = 'pending'
                   AND CASE WHEN jd.gateway IS NOT NULL THEN coalesce(jd.deadline < now_ts, true)
                            ELSE w.running AND w.deadline < now_ts END
                   FOR UPDATE SKIP LOCKED
            )
            UPDATE fleet.job_devices jd
               SET status = 'failed', error = 'timed out', finished_at = expired_at
              FROM overdue o
             WHERE jd.delivery_id = o.delivery_id AND jd.delivery_id IS NOT NULL;
        END IF;
        GET DIAGNOSTICS n_expired = ROW_COUNT;
        expired := expired + n_expired;

        -- what is still out: claimed (and when the first is due), unclaimed
        SELECT min(jd.deadline) FILTER (WHERE jd.gateway IS NOT NULL) AS first_due,
               count(*) FILTER (WHERE jd.gateway IS NOT NULL) AS n_claimed,
               count(*) FILTER (WHERE jd.gateway IS NULL) AS n_unclaimed
          INTO still_out
          FROM fleet.job_devices jd
         WHERE jd.delivery_id IS NOT NULL
           AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
           AND jd.status = 'pending';
        IF w.long_finished AND still_out.n_claimed = 0 THEN
            DELETE FROM fleet.command_windows cw
             WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        ELSE
            -- the window's next chance of a timeout: its claimed commands'
            -- deadlines; its unclaimed ones' while the job runs (a second
            -- from now if that has passed: some were held); else a look a
            -- timeout from now
            UPDATE fleet.command_windows cw
               SET next_check = least(still_out.first_due,
                                      CASE WHEN NOT w.running THEN now_ts + w.job_timeout
                                           WHEN still_out.n_unclaimed > 0
                                           THEN greatest(w.deadline, now_ts + interval '1 second') END)
             WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        END IF;
    END LOOP;
    RETURN expired;
END;
$$;
COMMENT ON FUNCTION fleet_internal.expire_commands(timestamptz) IS 'Fails command deliveries past their deadline as timed out; returns how many';

-- After the engine was away (the server was down, or the engine was
-- stopped or crashed), the unclaimed commands of running jobs get a fresh
-- deadline: they could not be claimed from a server that was down, and
-- that is not their devices' fault.  Claimed ones keep theirs: their
-- devices may have run them.
CREATE FUNCTION fleet_internal.engine_refresh_windows(at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j record;
BEGIN
    -- job by job, its timeout a value (Citus sends no stable function over
    -- a row's columns in an UPDATE to the nodes)
    FOR j IN SELECT r.id, fleet_internal.transaction_moment(at) + fleet_internal.command_timeout(r.rollout) AS due
               FROM fleet.jobs r
              WHERE r.status = 'running' AND EXISTS (SELECT 1 FROM fleet.command_windows w WHERE w.job_id = r.id)
    LOOP
        UPDATE fleet.command_windows w SET deadline = j.due
         WHERE w.job_id = j.id AND w.deadline < j.due;
    END LOOP;
END;
$$;

-- src/sql/device_endpoint.sql
-- The MQTT device endpoint's side in the database: what tools/fleet-bridge
-- calls, a turn at a time, for the devices connected to the broker
-- (tools/fleet-mqtt, a mosquitto plugin).  Every function takes a batch:
-- the bridge gathers what the devices sent during a turn and makes one
-- call per kind of work, never one per device.
--
-- The bridge runs as a role that sees everything (a superuser, or a
-- BYPASSRLS role holding write rights on fleet's tables): these functions
-- are not granted to PUBLIC.  A bridge names itself (its gateway name):
-- the devices connected through it, and the commands it claims for them,
-- carry that name.
--
-- Desired properties: a property job's change bumps the device's
-- desired_version (fleet_internal.engine_set_clause()); a bridge sends the
-- desired document of each of its connected devices whose version is
-- ahead of the one it last sent, as IoT Hub's desired-property patch, and
-- a device that connects later reads it with a twin GET.


-- What the broker's plugin authenticates with: every enrollment group
-- with its keys, and every device with the group its keys derive from (the
-- plugin derives a device's key itself: it never holds device keys).
CREATE FUNCTION fleet_internal.endpoint_directory()
RETURNS TABLE (kind text, id text, group_id text, primary_key text, secondary_key text, enabled boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'group', g.id, NULL, g.primary_key, g.secondary_key, g.enabled
      FROM fleet.enrollment_groups g
    UNION ALL
    SELECT 'device', d.id, coalesce(d.enrollment_group_id, k.group_id), NULL, NULL, NULL
      FROM fleet.devices d
      LEFT JOIN fleet_internal.organization_enrollment_groups k
             ON k.organization_id = d.organization_id AND k.edge = d.edge
$$;

-- A digest of the directory: the bridge polls it and sends the directory
-- again only when it changed (a device deleted, a group disabled or its key
-- rotated reaches the broker within the poll interval).
CREATE FUNCTION fleet_internal.endpoint_directory_digest()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT md5(coalesce(string_agg(concat_ws(' ', x.kind, x.id, x.group_id, x.primary_key, x.secondary_key, x.enabled),
                                   E'\n' ORDER BY x.kind, x.id), ''))
      FROM fleet_internal.endpoint_directory() x
$$;

-- A bridge starting: the devices it had connected are not connected any
-- more (the broker tells it again which are).
CREATE FUNCTION fleet_internal.endpoint_reset(gateway text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM fleet_internal.require_gateway_name(gateway);
    UPDATE fleet.devices d
       SET connection_state = 'disconnected', connection_changed_at = fleet_internal.moment(),
           endpoint_gateway = NULL, endpoint_listens = 0
     WHERE d.endpoint_gateway = endpoint_reset.gateway;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Connections and subscriptions as the broker reported them during a
-- turn, in order (the last event of a device wins): connected (listens: 1
-- direct methods, 2 desired patches) or disconnected.  What a device was
-- sent stays as it was: one that stayed connected through a restart of
-- the bridge (the broker reports it again) still gets the patch it missed,
-- and one that reads its twin on connecting is not sent it again.  A
-- disconnect through another gateway than the one it is connected through
-- changes nothing (it moved).  Returns how many devices changed.
CREATE FUNCTION fleet_internal.endpoint_connections(gateway text, device_ids text[], connected boolean[], listens int[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    n  bigint;
    at timestamptz := fleet_internal.moment();
BEGIN
    UPDATE fleet.devices d
       SET connection_state = CASE WHEN c.connected THEN 'connected' ELSE 'disconnected' END,
           connection_changed_at = CASE WHEN c.connected IS DISTINCT FROM (d.connection_state = 'connected')
                                        THEN at ELSE d.connection_changed_at END,
           last_activity_at = at,
           endpoint_gateway = CASE WHEN c.connected THEN endpoint_connections.gateway END,
           endpoint_listens = CASE WHEN c.connected THEN c.listens ELSE 0 END
      FROM (SELECT DISTINCT ON (e.device_id) e.device_id, e.connected, e.listens
              FROM unnest(device_ids, connected, listens) WITH ORDINALITY AS e(device_id, connected, listens, n)
             ORDER BY e.device_id, e.n DESC) c
     WHERE d.id = c.device_id
       AND (c.connected OR d.endpoint_gateway = endpoint_connections.gateway);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Telemetry seen during a turn, a device id per message: counted (not
-- stored), and the device's last activity.
CREATE FUNCTION fleet_internal.endpoint_activity(device_ids text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE fleet.devices d
       SET telemetry_messages = d.telemetry_messages + a.messages, last_activity_at = fleet_internal.moment()
      FROM (SELECT u.device_id, count(*) AS messages FROM unnest(device_ids) AS u(device_id) GROUP BY 1) a
     WHERE d.id = a.device_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- A JSON text as jsonb, or NULL when it is not JSON (what devices send is
-- checked here, not trusted).
CREATE FUNCTION fleet_internal.try_jsonb(body text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN body::jsonb;
EXCEPTION WHEN OTHERS THEN
    -- not JSON, a \u0000 escape, too deep: one device's bytes must not
    -- fail the batch of every other device's
    RETURN NULL;
END;
$$;

-- Commands for the devices connected through this bridge that listen for
-- direct methods, as fleet.claim_commands() claims them; the method is
-- named as IoT Central names a component's command ("component*command").
CREATE FUNCTION fleet_internal.endpoint_claim_commands(gateway text, max_count int)
RETURNS TABLE (delivery_id bigint, device_id text, method text, request jsonb, deadline timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_gateway_name(gateway);
    RETURN QUERY
    SELECT c.delivery_id, c.device_id, replace(c.command, '/', '*'), c.request, c.deadline
      FROM fleet_internal.claim_deliveries(gateway, max_count, true, NULL, gateway) c;
END;
$$;

-- Devices' answers to direct methods ("$iothub/methods/res/<status>/?$rid=
-- <delivery id>"): an answer completes a delivery of the device that sent
-- it, never another's; a body that is not JSON is kept as a JSON string.
-- Returns how many answers were taken (the others were not open).
CREATE FUNCTION fleet_internal.endpoint_complete_commands(device_ids text[], delivery_ids text[], statuses int[],
                                                          bodies text[])
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet.complete_commands(coalesce(array_agg(a.delivery_id ORDER BY a.n), '{}'),
                                   coalesce(array_agg(least(greatest(a.status, 100), 599) ORDER BY a.n), '{}'),
                                   coalesce(array_agg(coalesce(fleet_internal.try_jsonb(a.body), to_jsonb(a.body))
                                                      ORDER BY a.n), '{}'))
      -- a delivery answered twice in a turn: the first answer, as IoT Hub takes it
      FROM (SELECT DISTINCT ON (u.delivery_id::bigint) u.delivery_id::bigint AS delivery_id, u.device_id,
                   u.status, u.body, u.n
              FROM unnest(device_ids, delivery_ids, statuses, bodies) WITH ORDINALITY AS u(device_id, delivery_id, status, body, n)
             WHERE u.delivery_id ~ '^[0-9]{1,18}$'
             ORDER BY u.delivery_id::bigint, u.n) a
      JOIN fleet.job_devices jd ON jd.delivery_id = a.delivery_id AND jd.delivery_id IS NOT NULL
     WHERE jd.device_id = a.device_id
$$;

-- The desired documents to send as patches: devices connected through this
-- bridge, listening for patches, whose desired version is ahead of the one
-- they were sent; marked sent as they are returned.  The bridge walks its
-- devices in id order (byte order, as C compares): "after" is the last id
-- of its previous call, '' to start a pass, so a pass reads each device
-- once rather than every call reading again the devices its earlier calls
-- sent (10,000 devices in ten calls would read 55,000).  The walk is the
-- index's order, stopped at max_count: the planner, which expects few
-- devices to be due, would otherwise read and sort all that follow at each
-- call.  Rows are found again by their ctid (a device changed since it was
-- locked is left for the next pass).
CREATE FUNCTION fleet_internal.endpoint_desired_patches(gateway text, max_count int, after text)
RETURNS TABLE (device_id text, version bigint, desired jsonb)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
    WITH due AS MATERIALIZED (
        SELECT d.ctid AS row_id, d.id FROM fleet.devices d
         WHERE d.endpoint_gateway = gateway AND d.id COLLATE "C" > after
           AND d.endpoint_listens & 2 = 2
           AND d.desired_version > d.desired_sent_version
         ORDER BY d.endpoint_gateway, d.id COLLATE "C"
         LIMIT max_count
           FOR UPDATE SKIP LOCKED)
    UPDATE fleet.devices d
       SET desired_sent_version = d.desired_version
      FROM due
     WHERE d.ctid = due.row_id AND d.id = due.id
    RETURNING d.id, d.desired_version, d.properties || jsonb_build_object('$version', d.desired_version)
$$;

-- 0.5's bridge: a pass from the start at every call
CREATE FUNCTION fleet_internal.endpoint_desired_patches(gateway text, max_count int)
RETURNS TABLE (device_id text, version bigint, desired jsonb)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.device_id, p.version, p.desired FROM fleet_internal.endpoint_desired_patches(gateway, max_count, '') p
$$;

-- Twin GETs of a turn, one per request (n: its place in the arrays): the
-- twin as IoT Hub returns it (status 200), or 404 for a device that is
-- gone; what it returns counts as sent.
CREATE FUNCTION fleet_internal.endpoint_twins(device_ids text[])
RETURNS TABLE (n bigint, status int, body text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH sent AS (
        UPDATE fleet.devices d
           SET desired_sent_version = greatest(d.desired_sent_version, d.desired_version)
         WHERE d.id = ANY (device_ids)
        RETURNING d.id,
                  jsonb_build_object('desired', d.properties || jsonb_build_object('$version', d.desired_version),
                                     'reported', d.reported || jsonb_build_object('$version', d.reported_version)) AS twin)
    SELECT r.n, CASE WHEN s.id IS NULL THEN 404 ELSE 200 END,
           coalesce(s.twin, '{"message": "the device is not registered"}'::jsonb)::text
      FROM unnest(device_ids) WITH ORDINALITY AS r(device_id, n)
      LEFT JOIN sent s ON s.id = r.device_id
$$;

-- Applies JSON merge patches in order (a reported patch, as IoT Hub takes
-- it: null removes a property).
CREATE FUNCTION fleet_internal.json_merge_patches(target jsonb, patches jsonb[])
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    patch jsonb;
BEGIN
    FOREACH patch IN ARRAY patches LOOP
        target := fleet_internal.json_merge_patch(target, patch);
    END LOOP;
    RETURN target;
END;
$$;

-- Reported-property patches of a turn, several per device in the order
-- they came, into fleet.devices.reported: each request (n) gets 204 and
-- its device's new reported version, or 400 when its body is not a JSON
-- object (then nothing of it is kept), 404 when the device is gone.
CREATE FUNCTION fleet_internal.endpoint_report(device_ids text[], bodies text[])
RETURNS TABLE (n bigint, status int, version bigint)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH requests AS MATERIALIZED (
        SELECT u.n, u.device_id, fleet_internal.try_jsonb(u.body) AS patch
          FROM unnest(device_ids, bodies) WITH ORDINALITY AS u(device_id, body, n)
    ), reported AS (
        UPDATE fleet.devices d
           SET reported = fleet_internal.json_merge_patches(d.reported, p.patches),
               reported_version = d.reported_version + cardinality(p.patches),
               last_activity_at = fleet_internal.moment()
          FROM (SELECT r.device_id, array_agg(r.patch ORDER BY r.n) AS patches
                  FROM requests r
                 WHERE jsonb_typeof(r.patch) = 'object'
                 GROUP BY r.device_id) p
         WHERE d.id = p.device_id
        RETURNING d.id, d.reported_version)
    SELECT r.n,
           CASE WHEN jsonb_typeof(r.patch) IS DISTINCT FROM 'object' THEN 400
                WHEN w.id IS NULL THEN 404 ELSE 204 END,
           w.reported_version
      FROM requests r
      LEFT JOIN reported w ON w.id = r.device_id AND jsonb_typeof(r.patch) = 'object'
$$;

-- Registrations through the endpoint's provisioning service (DPS), each
-- (n) authenticated by the broker with a key derived from enrollment group
-- group_id, its body the device's request ({"registrationId", "payload":
-- {"modelId"}}): a registered device whose keys derive from that group is
-- assigned to hub; one that is not registered is registered when the group
-- lets devices register themselves (into its organization, with the
-- template its modelId names when there is one, else the group's), else
-- refused with the reason.  Returns DPS's answer: status and body.
CREATE FUNCTION fleet_internal.endpoint_register(registration_ids text[], group_ids text[], bodies text[], hub text)
RETURNS TABLE (n bigint, status int, body text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
    -- the new ones first, in one statement
    INSERT INTO fleet.devices (id, display_name, template_id, organization_id, edge, enrollment_group_id)
    SELECT DISTINCT ON (r.registration_id) r.registration_id, r.registration_id,
           coalesce((SELECT t.id FROM fleet.device_templates t WHERE t.id = r.request -> 'payload' ->> 'modelId'),
                    g.auto_register_template),
           g.organization_id, g.edge,
           -- a group that is not its organization's default is named
           CASE WHEN NOT g.organization_default THEN g.id END
      FROM (SELECT u.n, u.registration_id, u.group_id, fleet_internal.try_jsonb(u.body) AS request
              FROM unnest(registration_ids, group_ids, bodies) WITH ORDINALITY AS u(registration_id, group_id, body, n)) r
      JOIN fleet.enrollment_groups g ON g.id = r.group_id
     WHERE g.auto_register AND g.enabled
       AND r.request ->> 'registrationId' = r.registration_id
       AND fleet_internal.device_identity_problem(r.registration_id) IS NULL
       AND NOT EXISTS (SELECT 1 FROM fleet.devices d WHERE d.id = r.registration_id)
    ON CONFLICT DO NOTHING;

    RETURN QUERY
    SELECT a.n, 200,
           jsonb_build_object('operationId', format('%s.%s', a.registration_id, a.n),
                              'status', CASE WHEN a.problem IS NULL THEN 'assigned' ELSE 'failed' END,
                              'registrationState',
                              jsonb_strip_nulls(jsonb_build_object(
                                  'registrationId', a.registration_id,
                                  'status', CASE WHEN a.problem IS NULL THEN 'assigned' ELSE 'failed' END,
                                  'assignedHub', CASE WHEN a.problem IS NULL THEN hub END,
                                  'deviceId', CASE WHEN a.problem IS NULL THEN a.registration_id END,
                                  'substatus', CASE WHEN a.problem IS NULL THEN 'initialAssignment' END,
                                  'errorCode', CASE WHEN a.problem IS NOT NULL THEN 400209 END,
                                  'errorMessage', a.problem,
                                  'lastUpdatedDateTimeUtc', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))))::text
      FROM (SELECT r.n, r.registration_id,
                   CASE WHEN r.request IS NULL OR r.request ->> 'registrationId' IS DISTINCT FROM r.registration_id
                            THEN format('the request must be JSON naming registrationId "%s"', r.registration_id)
                        WHEN fleet_internal.device_identity_problem(r.registration_id) IS NOT NULL
                            THEN fleet_internal.device_identity_problem(r.registration_id)
                        WHEN e.device_id IS NULL
                            THEN format('device "%s" is not registered and enrollment group "%s" does not register devices itself',
                                        r.registration_id, r.group_id)
                        WHEN NOT g.enabled
                            THEN format('enrollment group "%s" is disabled', r.group_id)
                        WHEN e.group_id IS DISTINCT FROM r.group_id
                            THEN format('the keys of device "%s" derive from enrollment group "%s", not "%s"',
                                        r.registration_id, e.group_id, r.group_id)
                   END AS problem
              FROM (SELECT u.n, u.registration_id, u.group_id, fleet_internal.try_jsonb(u.body) AS request
                      FROM unnest(registration_ids, group_ids, bodies) WITH ORDINALITY AS u(registration_id, group_id, body, n)) r
              LEFT JOIN fleet.enrollment_groups g ON g.id = r.group_id
              LEFT JOIN (SELECT x.id AS device_id, x.group_id FROM fleet_internal.endpoint_directory() x
                          WHERE x.kind = 'device' AND x.id = ANY (registration_ids)) e
                     ON e.device_id = r.registration_id) a;
END;
$$;

-- Refusals the broker reported during a turn, counted per reason.
CREATE FUNCTION fleet_internal.endpoint_count_refusals(gateway text, reasons text[], client_ids text[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO fleet.endpoint_refusals AS e (gateway, reason, refusals, last_client_id, last_at)
    SELECT gateway, r.reason, count(*), (array_agg(r.client_id ORDER BY r.n DESC))[1], fleet_internal.moment()
      FROM unnest(reasons, client_ids) WITH ORDINALITY AS r(reason, client_id, n)
     GROUP BY r.reason
    ON CONFLICT (gateway, reason) DO UPDATE
       SET refusals = e.refusals + excluded.refusals, last_client_id = excluded.last_client_id,
           last_at = excluded.last_at
$$;

-- Whether devices that are not registered may register themselves through
-- the endpoint's provisioning with a key of this group, and with which
-- template (NULL: none, or the modelId they send).  For administrators of
-- the group's organization.
CREATE FUNCTION fleet.set_enrollment_group_auto_register(enrollment_group_id text, auto_register boolean,
                                                         template text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    g      fleet.enrollment_groups;
BEGIN
    g := fleet_internal.require_enrollment_group(enrollment_group_id, caller, 'changing an enrollment group');
    IF auto_register IS NULL THEN
        RAISE EXCEPTION 'auto_register must be true or false, not NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF g.attestation <> 'symmetricKey' AND auto_register THEN
        RAISE EXCEPTION 'enrollment group "%" cannot register devices itself: it is an X.509 group', g.id
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'The MQTT endpoint authenticates devices by SAS token: use a group with symmetric keys.';
    END IF;
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
    UPDATE fleet.enrollment_groups eg
       SET auto_register = set_enrollment_group_auto_register.auto_register, auto_register_template = template
     WHERE eg.id = g.id;
    RETURN jsonb_build_object('id', g.id, 'autoRegister', auto_register, 'template', template);
END;
$$;
COMMENT ON FUNCTION fleet.set_enrollment_group_auto_register(text, boolean, text) IS 'Lets devices that are not registered register themselves through the MQTT endpoint''s provisioning with a key of this group (into its organization, with the template given or the modelId they send), or stops it';

-- Each device's writable properties as it acknowledged them: the version
-- at which a property job last set each one, the version the device's
-- acknowledgement names (IoT Central's {"value", "ac", "av", "ad"} in its
-- reported properties), and what that makes it: synced (acknowledged with
-- a 2xx code at or after that version), pending (no acknowledgement of it
-- yet), in_progress (202), or failed (any other code).
CREATE VIEW fleet.device_property_sync WITH (security_invoker = true) AS
SELECT d.id AS device_id, p.key AS property, p.value::bigint AS desired_version,
       a.av AS acknowledged_version,
       a.ac AS ack_code,
       a.ack ->> 'ad' AS ack_description,
       CASE WHEN a.av IS NULL OR a.av < p.value::bigint THEN 'pending'
            WHEN a.ac = 202 THEN 'in_progress'
            WHEN a.ac BETWEEN 200 AND 299 THEN 'synced'
            ELSE 'failed' END AS status,
       d.connection_state
  FROM fleet.devices d
 CROSS JOIN LATERAL jsonb_each_text(d.desired_versions) p
 CROSS JOIN LATERAL (SELECT CASE WHEN strpos(p.key, '/') > 0
                                 THEN d.reported -> split_part(p.key, '/', 1) -> substr(p.key, strpos(p.key, '/') + 1)
                                 ELSE d.reported -> p.key END AS ack) a0
 -- what a device reported is read, never trusted: a version or a code that
 -- is not a whole number is no acknowledgement
 CROSS JOIN LATERAL (SELECT a1.ack,
                            CASE WHEN jsonb_typeof(a1.ack -> 'av') = 'number' AND (a1.ack ->> 'av') ~ '^[0-9]{1,18}$'
                                 THEN (a1.ack ->> 'av')::bigint END AS av,
                            CASE WHEN jsonb_typeof(a1.ack -> 'ac') = 'number' AND (a1.ack ->> 'ac') ~ '^[0-9]{1,9}$'
                                 THEN (a1.ack ->> 'ac')::int END AS ac
                       FROM (SELECT CASE WHEN jsonb_typeof(a0.ack) = 'object' AND a0.ack ? 'av' THEN a0.ack END AS ack) a1) a;
COMMENT ON VIEW fleet.device_property_sync IS 'Each device''s writable properties set by property jobs: the desired version of each, the version the device acknowledged, and synced, pending, in_progress or failed';

-- src/sql/engine.sql
-- The engine's turn (its worker, src/engine.c, runs each part in a
-- transaction of its own):
--
--   fleet_internal.engine_plan()    housekeeping, then the job to serve next,
--                                   its attempt marked and committed
--   fleet_internal.engine_run()     that job's step: its start (job_batches.sql)
--                                   or one chunk (job_steps.sql)
--   fleet_internal.engine_failed()  when the step failed: retry later, or
--                                   give the job up
--
-- fleet_internal.engine_step() runs one whole turn in one transaction, for
-- tests and for driving the engine by hand.  Every function takes the
-- engine's clock, at (NULL: the real one), so tests move time instead of
-- writing engine columns or sleeping.
--
-- Failures.  Contention (deadlocks, lock timeouts, serialization failures,
-- a cancel, a full disk or memory) is retried with backoff for as long as
-- it lasts: it says nothing about the job.  Any other error is retried
-- with backoff fleet.job_max_retries times in a row, then the job fails
-- with it (fleet.resume_job() carries on with its pending devices once the
-- cause is fixed).  A step that runs over fleet.engine_statement_timeout
-- is retried with chunks half the size.  A step during which the engine
-- stopped (a crash, kill -9) counts as a failure of its job, so a job that
-- crashes the engine cannot put the server in a crash loop.

-- Wakes the engine when the current transaction commits: queued, stopped
-- and resumed jobs are seen at once, not at the next poll.  C: it looks no
-- names up.
CREATE FUNCTION fleet_internal.wake_engine()
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_engine';
COMMENT ON FUNCTION fleet_internal.wake_engine() IS 'Wakes the job engine when the current transaction commits';

CREATE FUNCTION fleet_internal.engine_pid()
RETURNS int
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'engine_pid';
COMMENT ON FUNCTION fleet_internal.engine_pid() IS 'The process id of the job engine serving this database, or NULL when none does';

-- The engine as its shared memory shows it (src/engine_shared.c).
CREATE FUNCTION fleet_internal.engine_activity(OUT pid int, OUT database text, OUT state text, OUT note text,
                                               OUT started_at timestamptz, OUT last_step_at timestamptz,
                                               OUT steps bigint, OUT errors bigint,
                                               OUT last_error text, OUT last_error_at timestamptz)
RETURNS record
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'engine_activity';

-- Whether an error is contention, which passes and never fails a job:
-- deadlocks, lock and serialization conflicts, a cancel, resources that
-- ran out for a while.
CREATE FUNCTION fleet_internal.is_contention(sqlstate text, message text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sqlstate IN ('40001', '40P01', '55P03', '55006', '25006')     -- serialization, deadlock, lock, in use, read-only
        OR left(sqlstate, 2) IN ('53', '08', '58')                        -- resources, connections, I/O
        OR (sqlstate = '57014' AND message NOT LIKE '%statement timeout%') -- a cancel, not our timeout
$$;

-- A step failed: the job tries again after a backoff (1 s, 2 s, ... up to a
-- minute), or fails when its errors will repeat.  Logs what it does.
CREATE FUNCTION fleet_internal.engine_failed(job_id text, action text, sqlstate text, message text,
                                             at timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_ts      timestamptz := fleet_internal.moment(at);
    contention  boolean := fleet_internal.is_contention(sqlstate, message);
    timed_out   boolean := sqlstate = '57014' AND NOT contention;
    max_retries int := current_setting('fleet.job_max_retries')::int;
    -- (a value, not a call in the UPDATE: Citus allows no stable function
    -- in the CASE of a statement it sends to the nodes)
    chunk_size  int := current_setting('fleet.engine_chunk_size')::int;
    state       fleet_internal.job_engine_state;
    backoff     interval;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = engine_failed.job_id) THEN
        RETURN;                 -- purged meanwhile
    END IF;
    INSERT INTO fleet_internal.job_engine_state AS s (job_id) VALUES (engine_failed.job_id)
    ON CONFLICT ON CONSTRAINT job_engine_state_pkey DO NOTHING;
    UPDATE fleet_internal.job_engine_state s
       SET failures = s.failures + 1, last_error = message, last_error_at = now_ts,
           step_started_at = NULL, action = NULL,
           -- a chunk that ran out of time is tried again at half its size
           step_size = CASE WHEN timed_out AND engine_failed.action = 'advance'
                            THEN greatest(coalesce(s.step_size, chunk_size) / 2, 1)
                            ELSE s.step_size END
     WHERE s.job_id = engine_failed.job_id
    RETURNING s.* INTO state;

    IF NOT contention AND state.failures > max_retries THEN
        PERFORM fleet_internal.engine_give_up(job_id,
            format('%s (the engine gave up after %s failed %s)', message, state.failures,
                   CASE WHEN state.failures = 1 THEN 'attempt' ELSE 'attempts' END), at);
        UPDATE fleet_internal.job_engine_state s SET next_retry_at = NULL WHERE s.job_id = engine_failed.job_id;
        RAISE WARNING 'pg_fleet engine: job "%" failed: %', job_id, message
            USING DETAIL = format('SQLSTATE %s; %s failed %s in a row.', sqlstate, action,
                                  CASE WHEN state.failures = 1 THEN 'once' ELSE state.failures || ' times' END),
                  HINT = 'Fix the cause, then carry on with its pending devices with fleet.resume_job().';
        RETURN;
    END IF;

    backoff := least(interval '1 second' * power(2, least(state.failures, 7) - 1), interval '1 minute');
    UPDATE fleet_internal.job_engine_state s SET next_retry_at = now_ts + backoff WHERE s.job_id = engine_failed.job_id;
    IF contention THEN
        RAISE LOG 'pg_fleet engine: job "%" waits: %; it tries again in %', job_id, message, backoff
            USING DETAIL = format('SQLSTATE %s, attempt %s.', sqlstate, state.failures);
    ELSE
        RAISE WARNING 'pg_fleet engine: step of job "%" failed: %; it tries again in %', job_id, message, backoff
            USING DETAIL = format('SQLSTATE %s, attempt %s of %s.', sqlstate, state.failures, max_retries + 1);
    END IF;
END;
$$;

-- The chores of every turn, each guarded: one that fails is logged and the
-- others go on.  Returns whether one has more to do right away.
CREATE FUNCTION fleet_internal.engine_housekeeping(at timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    more    boolean := false;
    chore   text;
    message text;
BEGIN
    FOREACH chore IN ARRAY ARRAY['expire_commands', 'check_schedules', 'reconcile_cron',
                                 'refresh_statistics', 'purge', 'record_failed_imports'] LOOP
        BEGIN
            CASE chore
            WHEN 'expire_commands' THEN PERFORM fleet_internal.expire_commands(at);
            WHEN 'check_schedules' THEN PERFORM fleet_internal.check_schedules(at);
            WHEN 'reconcile_cron' THEN PERFORM fleet_internal.reconcile_cron(at);
            WHEN 'refresh_statistics' THEN PERFORM fleet_internal.refresh_statistics();
            WHEN 'purge' THEN more := fleet_internal.purge(at) OR more;
            WHEN 'record_failed_imports' THEN PERFORM fleet_internal.record_failed_imports();
            END CASE;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            RAISE WARNING 'pg_fleet engine: % failed: %', replace(chore, '_', ' '), message;
        END;
    END LOOP;
    RETURN more;
END;
$$;

-- Refreshes job_devices' statistics after a big fan-out, unless VACUUM or
-- CREATE INDEX CONCURRENTLY holds the table: the engine never waits on
-- maintenance (NOWAIT), and never makes autovacuum give way to it (it does
-- not queue for the lock).  It tries again next turn.
CREATE FUNCTION fleet_internal.refresh_statistics()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (SELECT s.analyze_wanted FROM fleet_internal.engine_state s) THEN
        BEGIN
            LOCK TABLE fleet.job_devices IN SHARE UPDATE EXCLUSIVE MODE NOWAIT;
            ANALYZE fleet.job_devices;
            UPDATE fleet_internal.engine_state SET analyze_wanted = false;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END IF;
END;
$$;

-- How long the engine may sleep when it has no job to serve now: until a
-- job's retry, the end of its rate's wait, a command's deadline, a schedule's misfire check, or the
-- naptime; at most 50 ms while command jobs run (answers do not wake it:
-- a wake-up per answer batch cost a core at 25,000 answers a second).
CREATE FUNCTION fleet_internal.engine_nap(at timestamptz)
RETURNS int
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_ts  timestamptz := fleet_internal.moment(at);
    naptime int := (extract(epoch FROM current_setting('fleet.engine_naptime')::interval) * 1000)::int;
    next_due timestamptz;
BEGIN
    IF EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.status = 'running' AND j.job_type = 'command') THEN
        naptime := least(naptime, 50);
    END IF;
    SELECT least((SELECT min(w.next_check) FROM fleet.command_windows w),
                 (SELECT min(s.next_retry_at) FROM fleet_internal.job_engine_state s WHERE s.next_retry_at > now_ts),
                 (SELECT min(s.not_before) FROM fleet_internal.job_engine_state s WHERE s.not_before > now_ts),
                 (SELECT min(sj.next_run_at) + current_setting('fleet.schedule_misfire_grace')::interval
                    FROM fleet.scheduled_jobs sj WHERE sj.enabled))
      INTO next_due;
    -- (compared first: a far or infinite time does not fit an interval in ms)
    IF next_due < now_ts + make_interval(secs => naptime / 1000.0) THEN
        naptime := greatest(10, ceil(extract(epoch FROM next_due - now_ts) * 1000)::int + 5);
    END IF;
    RETURN naptime;
END;
$$;

-- The first part of a turn: the chores, then the job to serve, its attempt
-- marked (committed before the step runs, so a crash during it is seen).
-- Queued jobs start in order while there is room: fleet.max_running_jobs
-- in all, and fleet.max_running_jobs_per_organization for each
-- organization below root (with those below it); running jobs take turns,
-- the one served longest ago first (SKIP LOCKED: a job someone holds does
-- not stop the rotation).  A job waiting for its retry is passed over.
-- starting: the engine has just started (after an outage).
CREATE FUNCTION fleet_internal.engine_plan(at timestamptz DEFAULT NULL, starting boolean DEFAULT false,
                                           OUT job_id text, OUT action text, OUT nap_ms int)
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    now_ts      timestamptz := fleet_internal.moment(at);
    max_running int := current_setting('fleet.max_running_jobs')::int;
    share       int := coalesce(nullif(current_setting('fleet.max_running_jobs_per_organization')::int, 0),
                                greatest(current_setting('fleet.max_running_jobs')::int - 1, 1));
    more        boolean;
    stopped     record;
BEGIN
    IF starting THEN
        PERFORM fleet_internal.engine_refresh_windows(at);
        UPDATE fleet_internal.engine_state SET cron_version = cron_version + 1;
    END IF;
    more := fleet_internal.engine_housekeeping(at);

    -- a step that never finished: the engine stopped during it
    FOR stopped IN SELECT s.job_id, s.action FROM fleet_internal.job_engine_state s
                    WHERE s.step_started_at IS NOT NULL LOOP
        PERFORM fleet_internal.engine_failed(stopped.job_id, stopped.action, 'XX000',
                                             'the engine stopped during a step of this job', at);
    END LOOP;

    WITH running AS (
        SELECT fleet_internal.top_organization(o.path) AS top, count(*) AS n
          FROM fleet.jobs r JOIN fleet.organizations o ON o.id = r.organization_id
         WHERE r.status = 'running'
         GROUP BY 1
    )
    SELECT j.id, CASE WHEN j.status = 'pending' THEN 'start' ELSE 'advance' END
      INTO job_id, action
      FROM fleet.jobs j
      JOIN fleet.organizations o ON o.id = j.organization_id
      LEFT JOIN fleet_internal.job_engine_state s ON s.job_id = j.id
     WHERE j.status IN ('pending', 'running') AND j.deleted_at IS NULL
       AND (s.next_retry_at IS NULL OR s.next_retry_at <= now_ts)
       AND (s.not_before IS NULL OR s.not_before <= now_ts)
       AND (j.status = 'running'
            OR ((SELECT coalesce(sum(r.n), 0) FROM running r) < max_running
                AND coalesce((SELECT r.n FROM running r WHERE r.top = fleet_internal.top_organization(o.path)), 0) < share))
     ORDER BY j.last_step_at NULLS FIRST, j.queued_at, j.id
     LIMIT 1
       FOR NO KEY UPDATE OF j SKIP LOCKED;

    IF job_id IS NULL THEN
        nap_ms := CASE WHEN more THEN 0 ELSE fleet_internal.engine_nap(at) END;
        RETURN;
    END IF;
    INSERT INTO fleet_internal.job_engine_state AS s (job_id, action, step_started_at)
    VALUES (job_id, action, now_ts)
    ON CONFLICT ON CONSTRAINT job_engine_state_pkey DO UPDATE
       SET action = excluded.action, step_started_at = excluded.step_started_at;
    -- the rotation moves on even if the step fails
    UPDATE fleet.jobs j SET last_step_at = now_ts WHERE j.id = engine_plan.job_id;
    nap_ms := 0;
END;
$$;

-- The second part: the planned job's step.  Returns whether it has more
-- to do right away.  Done, the job's retry state starts over.
CREATE FUNCTION fleet_internal.engine_run(job_id text, action text, at timestamptz DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job  fleet.jobs;
    more boolean := false;
BEGIN
    IF action = 'start' THEN
        -- SKIP LOCKED: a stop under way wins, and the job waits its turn
        SELECT j.* INTO job FROM fleet.jobs j
         WHERE j.id = engine_run.job_id AND j.status = 'pending' AND j.deleted_at IS NULL
           FOR NO KEY UPDATE SKIP LOCKED;
        IF FOUND THEN
            PERFORM fleet_internal.engine_start_job(job, at);
            more := true;
        END IF;
    ELSE
        more := fleet_internal.engine_advance_job(job_id, at);
    END IF;
    UPDATE fleet_internal.job_engine_state s
       SET step_started_at = NULL, action = NULL, failures = 0, next_retry_at = NULL
     WHERE s.job_id = engine_run.job_id;
    RETURN more;
END;
$$;

-- One whole turn in one transaction: the plan, the step, and a failure
-- recorded (in a subtransaction, as the worker does in a transaction of
-- its own).  For tests, which pass the clock, and for driving the engine
-- by hand.  Returns how many milliseconds the engine would sleep.
CREATE FUNCTION fleet_internal.engine_step(at timestamptz DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    plan    record;
    more    boolean;
    state   text;
    message text;
BEGIN
    SELECT * INTO plan FROM fleet_internal.engine_plan(at);
    IF plan.job_id IS NULL THEN
        RETURN plan.nap_ms;
    END IF;
    BEGIN
        more := fleet_internal.engine_run(plan.job_id, plan.action, at);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
        PERFORM fleet_internal.engine_failed(plan.job_id, plan.action, state, message, at);
        RETURN 0;
    END;
    RETURN CASE WHEN more THEN 0 ELSE plan.nap_ms END;
END;
$$;
COMMENT ON FUNCTION fleet_internal.engine_step(timestamptz) IS 'One turn of the job engine in one transaction (its worker runs the parts in transactions of their own); at is the engine''s clock';

-- src/sql/retention.sql
-- Retention: finished jobs are kept fleet.job_retention (30 days by
-- default, as IoT Central keeps them), then deleted with everything under
-- them; fleet.delete_job() deletes one at once.  A deleted job is gone from
-- the API at once (its deleted_at is set); the engine then purges its rows a
-- chunk at a time (five times fleet.engine_chunk_size rows of job_devices a
-- turn), each chunk its own short transaction, so no lock is held for long
-- and a restart carries on where the purge stood.  The space the rows took is
-- reused by the next jobs once VACUUM has seen it (make bench measures a
-- million-device job's purge).  Device operations and scheduled runs are
-- kept as long as jobs.

-- One turn's purge.  Returns whether there is more to purge right away.
CREATE FUNCTION fleet_internal.purge(at timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    now_ts    timestamptz := fleet_internal.moment(at);
    retention interval := current_setting('fleet.job_retention')::interval;
    chunk     int := current_setting('fleet.engine_chunk_size')::int;
    -- deleting a row costs a fraction of updating one: five chunks a turn
    purge_chunk    int := 5 * chunk;
    doomed         text;
    purged_through text;
    chunk_end      text;
    n_deleted      bigint;
    more      boolean := false;
BEGIN
    IF retention > interval '0' THEN
        -- finished jobs past retention are deleted, a hundred at a time
        IF EXISTS (SELECT 1 FROM fleet.jobs o
                    WHERE o.finished_at < now_ts - retention AND o.deleted_at IS NULL
                      AND o.status IN ('completed', 'failed', 'cancelled')) THEN
            UPDATE fleet.jobs j SET deleted_at = now_ts
             WHERE j.id IN (SELECT o.id FROM fleet.jobs o
                             WHERE o.finished_at < now_ts - retention AND o.deleted_at IS NULL
                               AND o.status IN ('completed', 'failed', 'cancelled')
                             LIMIT 100);
            more := FOUND;
        END IF;
        -- device operations: their rejected rows first, a chunk at a time.
        -- Rows are named by key, not ctid (on Citus a reference table's
        -- copies are separate heaps), and nothing is written when nothing
        -- is due (on Citus a write locks the table's shard on every node).
        IF EXISTS (SELECT 1 FROM fleet.device_operations o WHERE o.finished_at < now_ts - retention) THEN
            DELETE FROM fleet.device_operation_errors e
             WHERE (e.operation_id, e.line) IN (SELECT x.operation_id, x.line FROM fleet.device_operation_errors x
                                                  JOIN fleet.device_operations o ON o.id = x.operation_id
                                                 WHERE o.finished_at < now_ts - retention
                                                 LIMIT chunk);
            GET DIAGNOSTICS n_deleted = ROW_COUNT;
            IF n_deleted = chunk THEN
                more := true;
            ELSE
                DELETE FROM fleet.device_operations o WHERE o.finished_at < now_ts - retention;
            END IF;
        END IF;
        IF EXISTS (SELECT 1 FROM fleet.scheduled_job_runs x WHERE x.recorded_at < now_ts - retention) THEN
            DELETE FROM fleet.scheduled_job_runs r
             WHERE (r.scheduled_job_id, r.occurrence) IN (SELECT x.scheduled_job_id, x.occurrence
                                                            FROM fleet.scheduled_job_runs x
                                                           WHERE x.recorded_at < now_ts - retention LIMIT chunk);
        END IF;
    END IF;

    -- a deleted job's devices' outcomes, a chunk in device order from where
    -- the last one stopped (a scan from the start would walk the index
    -- entries of every row deleted before: quadratic in the job's size);
    -- once none is left, the job (its batches, windows and engine state go
    -- with it)
    SELECT j.id, s.purged_through INTO doomed, purged_through
      FROM fleet.jobs j LEFT JOIN fleet_internal.job_engine_state s ON s.job_id = j.id
     WHERE j.deleted_at IS NOT NULL
     ORDER BY j.deleted_at, j.id
     LIMIT 1
       FOR UPDATE OF j SKIP LOCKED;
    IF doomed IS NULL THEN
        RETURN more;
    END IF;
    -- the chunk as a range of device ids (on Citus the devices' rows are
    -- on many shards, where a ctid names nothing)
    SELECT count(*), max(x.device_id) INTO n_deleted, chunk_end
      FROM (SELECT y.device_id FROM fleet.job_devices y
             WHERE y.job_id = doomed AND y.device_id > coalesce(purged_through, '')
             ORDER BY y.device_id
             LIMIT purge_chunk) x;
    IF n_deleted > 0 THEN
        DELETE FROM fleet.job_devices jd
         WHERE jd.job_id = doomed AND jd.device_id > coalesce(purged_through, '') AND jd.device_id <= chunk_end;
        purged_through := chunk_end;
    END IF;
    IF n_deleted < purge_chunk THEN
        DELETE FROM fleet.job_device_attempts a WHERE a.job_id = doomed;
        DELETE FROM fleet.jobs j WHERE j.id = doomed;
    ELSE
        INSERT INTO fleet_internal.job_engine_state AS s (job_id, purged_through)
        VALUES (doomed, purged_through)
        ON CONFLICT (job_id) DO UPDATE SET purged_through = excluded.purged_through;
    END IF;
    RETURN true;
END;
$$;

-- src/sql/schedule_calendar.sql
-- The calendar of scheduled jobs: pure functions from a schedule to its
-- occurrences.  pg_cron 1.4 reads cron expressions in GMT and knows nothing
-- of start dates, end dates, counts or daylight saving, so all of that is
-- here; pg_cron is only ever pointed at the next occurrence
-- (src/sql/scheduled_jobs.sql).
--
-- A schedule's occurrences are calendar slots: slot k is the start's local
-- date and time plus k days (daily) or k weeks (weekly), in the schedule's
-- time zone, so a 09:00 run stays at 09:00 local in winter and in summer.
-- A local time that does not exist on a spring-forward day runs an hour
-- later (02:30 becomes 03:30); one that happens twice on a fall-back day
-- runs at the second (standard time) one.  These are PostgreSQL's rules for
-- timestamp AT TIME ZONE.


-- Refuses a time zone PostgreSQL does not know by an IANA name.  The quick
-- test loads the zone; abbreviations ("CET") and POSIX strings ("UTC+3")
-- load too but shift with no daylight saving rules, so anything that looks
-- like one must be in pg_timezone_names, which takes a directory scan.
CREATE FUNCTION fleet_internal.require_time_zone(time_zone text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known boolean := false;
BEGIN
    IF time_zone IS NOT NULL AND time_zone <> '' AND length(time_zone) <= 64 THEN
        BEGIN
            PERFORM pg_catalog.timezone(time_zone, pg_catalog.now());
            known := time_zone !~ '[0-9<>,.:+]'
                     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_abbrevs a
                                      WHERE lower(a.abbrev) = lower(time_zone));
        EXCEPTION WHEN invalid_parameter_value OR feature_not_supported THEN
            RAISE EXCEPTION 'unknown time zone "%"', time_zone
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use an IANA time zone name such as "Europe/Berlin"; SELECT name FROM pg_timezone_names lists them.';
        END;
        IF NOT known THEN
            known := EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names n WHERE lower(n.name) = lower(time_zone));
        END IF;
    END IF;
    -- these two follow the server's own OS files, not a zone of the world:
    -- a schedule in them would move with the server's configuration
    IF lower(time_zone) IN ('localtime', 'posixrules') THEN
        RAISE EXCEPTION 'time zone "%" is the server''s own setting, not a place', time_zone
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA time zone name such as "Europe/Berlin"; SELECT name FROM pg_timezone_names lists them.';
    END IF;
    IF NOT known THEN
        RAISE EXCEPTION 'unknown time zone "%"', coalesce(time_zone, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA time zone name such as "Europe/Berlin"; SELECT name FROM pg_timezone_names lists them.';
    END IF;
    RETURN time_zone;
END;
$$;

-- Checks a schedule object ({"start", "timeZone"?, "recurrence"?, "end"?})
-- and returns it parsed.  Each refusal names the value and what to do.
-- "start" is a local date and time in "timeZone" (default UTC); a start
-- with an offset or "Z" is converted to that zone's wall clock.
CREATE FUNCTION fleet_internal.parse_schedule(schedule jsonb)
RETURNS fleet_internal.schedule
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parsed   fleet_internal.schedule;
    start    text;
    end_spec jsonb;
    n        numeric;
BEGIN
    IF jsonb_typeof(schedule) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a schedule must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', coalesce(jsonb_typeof(schedule), 'NULL')),
                  HINT = 'Give {"start": "2027-03-01T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly"}.';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_object_keys(schedule) k
                WHERE k NOT IN ('start', 'timeZone', 'recurrence', 'end')) THEN
        RAISE EXCEPTION 'unknown schedule field "%"',
                        (SELECT k FROM jsonb_object_keys(schedule) k
                          WHERE k NOT IN ('start', 'timeZone', 'recurrence', 'end') ORDER BY k LIMIT 1)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A schedule has "start", "timeZone", "recurrence" and "end".';
    END IF;

    IF schedule ? 'timeZone' AND jsonb_typeof(schedule -> 'timeZone') <> 'string' THEN
        RAISE EXCEPTION 'schedule "timeZone" must be a string, not %', (schedule -> 'timeZone')::text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA time zone name such as "Europe/Berlin".';
    END IF;
    parsed.time_zone := fleet_internal.require_time_zone(coalesce(schedule ->> 'timeZone', 'UTC'));

    IF jsonb_typeof(schedule -> 'start') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'a schedule needs a "start" date and time'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the local date and time of the first run, such as "2027-03-01T09:00:00".';
    END IF;
    start := schedule ->> 'start';
    BEGIN
        IF start ~ '(Z|z|[+-]\d\d(:?\d\d)?)$' AND start ~ '\d[Tt ]\d' THEN
            parsed.start_local := pg_catalog.timezone(parsed.time_zone, start::timestamptz);
        ELSIF start ~ '^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?$' THEN
            parsed.start_local := start::timestamp;
        ELSE
            RAISE invalid_datetime_format;
        END IF;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_parameter_value THEN
        RAISE EXCEPTION 'schedule start "%" is not a date and time', start
            USING ERRCODE = 'invalid_datetime_format',
                  HINT = 'Write it as YYYY-MM-DDTHH:MM:SS, the local time in the schedule''s "timeZone".';
    END;
    -- pg_cron runs on whole minutes: a start with seconds (IoT Central
    -- takes them) runs at the next whole minute, never before it
    IF parsed.start_local <> date_trunc('minute', parsed.start_local) THEN
        parsed.start_local := date_trunc('minute', parsed.start_local) + interval '1 minute';
    END IF;

    parsed.recurrence := CASE WHEN coalesce(jsonb_typeof(schedule -> 'recurrence'), 'null') = 'null' THEN 'none'
                              WHEN jsonb_typeof(schedule -> 'recurrence') = 'string' THEN schedule ->> 'recurrence'
                              ELSE (schedule -> 'recurrence')::text END;
    IF parsed.recurrence NOT IN ('none', 'daily', 'weekly', 'monthly') THEN
        RAISE EXCEPTION 'unknown schedule recurrence %', (schedule -> 'recurrence')::text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "daily", "weekly" (on the start date''s weekday) or "monthly" (on the start date''s day, or the month''s last day when it is shorter), or leave "recurrence" out for a one-time run.';
    END IF;

    end_spec := schedule -> 'end';
    IF end_spec IS NOT NULL AND jsonb_typeof(end_spec) <> 'null' THEN
        IF parsed.recurrence = 'none' THEN
            RAISE EXCEPTION 'a one-time schedule has no "end"'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Remove "end", or set "recurrence" to "daily", "weekly" or "monthly".';
        END IF;
        IF jsonb_typeof(end_spec) <> 'object' OR jsonb_typeof(end_spec -> 'type') IS DISTINCT FROM 'string'
           OR end_spec ->> 'type' NOT IN ('date', 'occurrences') THEN
            RAISE EXCEPTION 'unknown schedule end %', end_spec::text
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use {"type": "date", "date": "2027-12-31"} or {"type": "occurrences", "occurrences": 10}.';
        END IF;
        IF end_spec ->> 'type' = 'date' THEN
            BEGIN
                IF jsonb_typeof(end_spec -> 'date') IS DISTINCT FROM 'string'
                   OR end_spec ->> 'date' !~ '^\d{4}-\d\d-\d\d([Tt ].*)?$' THEN
                    RAISE invalid_datetime_format;
                END IF;
                parsed.end_date := left(end_spec ->> 'date', 10)::date;
            EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
                RAISE EXCEPTION 'schedule end date % is not a date', coalesce((end_spec -> 'date')::text, 'NULL')
                    USING ERRCODE = 'invalid_datetime_format',
                          HINT = 'Write it as YYYY-MM-DD: no run happens after that day ends in the schedule''s time zone.';
            END;
            IF parsed.end_date < parsed.start_local::date THEN
                RAISE EXCEPTION 'schedule end date % is before its start %',
                                to_char(parsed.end_date, 'YYYY-MM-DD'), to_char(parsed.start_local, 'YYYY-MM-DD')
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Choose an end date on or after the start date.';
            END IF;
        ELSE
            IF jsonb_typeof(end_spec -> 'occurrences') IS DISTINCT FROM 'number' THEN
                RAISE EXCEPTION 'schedule end occurrences % is not a number', coalesce((end_spec -> 'occurrences')::text, 'NULL')
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give a whole number of runs from 1 to 999.';
            END IF;
            n := (end_spec ->> 'occurrences')::numeric;
            IF n <> trunc(n) OR n < 1 OR n > 999 THEN
                RAISE EXCEPTION 'schedule end occurrences % is outside 1 to 999', end_spec ->> 'occurrences'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give a whole number of runs from 1 to 999, or end on a date.';
            END IF;
            parsed.max_occurrences := n::int;
        END IF;
    END IF;
    RETURN parsed;
END;
$$;

-- The schedule in its normal JSON form, as fleet.get_scheduled_job shows it.
CREATE FUNCTION fleet_internal.schedule_json(s fleet_internal.schedule)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'start', to_char(s.start_local, 'YYYY-MM-DD"T"HH24:MI:SS'),
        'timeZone', s.time_zone,
        'recurrence', nullif(s.recurrence, 'none'),
        'end', CASE WHEN s.end_date IS NOT NULL THEN jsonb_build_object('type', 'date', 'date', s.end_date)
                    WHEN s.max_occurrences IS NOT NULL THEN jsonb_build_object('type', 'occurrences',
                                                                               'occurrences', s.max_occurrences)
               END))
$$;

-- The occurrences of a parsed schedule strictly after "after", at most n,
-- in order.  Set-based: the candidate slots around "after" are computed in
-- one statement (DST moves a slot by at most an hour, so starting one slot
-- early is enough).
CREATE FUNCTION fleet_internal.schedule_occurrences(s fleet_internal.schedule, after timestamptz, n int)
RETURNS TABLE (slot int, occurrence timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- a monthly slot is k months after the start (not after the slot
    -- before): the 31st runs on the last day of shorter months, and on the
    -- 31st again when there is one
    WITH step AS (
        SELECT CASE s.recurrence WHEN 'daily' THEN 1 WHEN 'weekly' THEN 7 ELSE 0 END AS days,
               s.recurrence = 'monthly' AS monthly
    ),
    first_slot AS (
        SELECT CASE WHEN st.monthly
                    THEN greatest(0, ((extract(year FROM pg_catalog.timezone(s.time_zone, after)) - extract(year FROM s.start_local)) * 12
                                      + extract(month FROM pg_catalog.timezone(s.time_zone, after)) - extract(month FROM s.start_local))::int - 1)
                    WHEN st.days = 0 THEN 0
                    ELSE greatest(0, floor(extract(epoch FROM pg_catalog.timezone(s.time_zone, after) - s.start_local)
                                           / (86400.0 * st.days))::int - 1) END AS k,
               st.days, st.monthly
          FROM step st
    ),
    slots AS (
        SELECT g.k, s.start_local + make_interval(months => CASE WHEN f.monthly THEN g.k ELSE 0 END,
                                                  days => g.k * f.days) AS local_time
          FROM first_slot f,
               generate_series(f.k, CASE WHEN f.days = 0 AND NOT f.monthly THEN 0 ELSE f.k + greatest(n, 0) + 2 END) AS g(k)
    )
    SELECT x.k, pg_catalog.timezone(s.time_zone, x.local_time)
      FROM slots x
     WHERE pg_catalog.timezone(s.time_zone, x.local_time) > after
       AND (s.end_date IS NULL OR x.local_time::date <= s.end_date)
       AND (s.max_occurrences IS NULL OR x.k < s.max_occurrences)
     ORDER BY x.k
     LIMIT greatest(n, 0)
$$;

CREATE FUNCTION fleet.next_occurrences(schedule jsonb, after timestamptz DEFAULT pg_catalog.now(), n int DEFAULT 10)
RETURNS SETOF timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF after IS NULL THEN
        RAISE EXCEPTION '"after" must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the time to count from, such as now().';
    END IF;
    IF n IS NULL OR n < 0 OR n > 10000 THEN
        RAISE EXCEPTION 'cannot list % occurrences', coalesce(n::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Ask for 0 to 10000 occurrences.';
    END IF;
    RETURN QUERY SELECT o.occurrence FROM fleet_internal.schedule_occurrences(fleet_internal.parse_schedule(schedule), after, n) o;
END;
$$;
COMMENT ON FUNCTION fleet.next_occurrences(jsonb, timestamptz, int) IS 'The next n occurrences of a schedule ({"start", "timeZone", "recurrence", "end"}) strictly after a time';

-- src/sql/scheduled_jobs.sql
-- Scheduled jobs: a job definition plus a schedule (src/sql/schedule_calendar.sql).
--
-- pg_cron does the firing.  Each enabled schedule has one pg_cron entry,
-- pointed at its next occurrence as a GMT cron expression for that one
-- minute, which runs fleet.fire_scheduled_job(id).  The schedule table is
-- the truth: the functions here change rows only, and the engine, after
-- they commit, brings pg_cron in line with the rows (src/sql/schedule_cron.sql),
-- so a rolled-back change leaves pg_cron as it was.  pg_cron is only an
-- alarm clock: what ran, what was missed and what comes next are rows
-- here, so a stale or repeated fire does nothing.
--
-- An occurrence that passes while the server is down is not run late:
-- once it is more than fleet.schedule_misfire_grace overdue, the engine
-- records it as missed (or failed, with pg_cron's reason, when pg_cron
-- tried and could not), and the next one runs.
--
-- Members change schedules only through these functions (SECURITY
-- DEFINER, src/sql/access.sql).  Each run is created with the rights of
-- the role that last created or changed the schedule, in the schedule's
-- organization: pg_cron runs the fire as that role, and the fire checks
-- the job again with that role's rights at that moment.

-- A time other than now is a test seam (tests fire schedules at mocked
-- times): in anyone else's hands it could start occurrences early or mark
-- them missed, so only superusers may pass one.  A minute's leeway covers
-- pg_cron firing on the minute.
CREATE FUNCTION fleet_internal.require_clock_time(at timestamptz, action text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF abs(extract(epoch FROM at - fleet_internal.moment())) > 60
       AND NOT fleet_internal.role_sees_everything(fleet_internal.calling_role()) THEN
        RAISE EXCEPTION 'only a superuser may % at another time than now', action
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Leave the time out: pg_cron fires schedules at their time.';
    END IF;
END;
$$;

-- Brings a locked schedule's bookkeeping up to "at": occurrences since it
-- took effect that are more than the misfire grace overdue and were never
-- recorded become "missed" (or "failed" with pg_cron's reason, when
-- pg_cron's log says it tried); next_run_at becomes the first occurrence
-- not yet recorded and not missed.  Returns it (NULL: ended or disabled).
CREATE FUNCTION fleet_internal.schedule_advance(schedule_id text, at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s        fleet.scheduled_jobs;
    parsed   fleet_internal.schedule;
    grace    interval := current_setting('fleet.schedule_misfire_grace')::interval;
    since    timestamptz;
    span     int;
    next_run timestamptz;
    pg_cron_runs jsonb;
BEGIN
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = schedule_id;
    IF s.enabled THEN
        parsed := fleet_internal.parse_schedule(s.schedule);
        since := greatest(s.effective_from - interval '1 microsecond', s.last_occurrence);

        -- every slot between "since" and the grace line, in one statement
        IF at - grace > since THEN
            span := CASE parsed.recurrence WHEN 'none' THEN 1
                    ELSE least(ceil(extract(epoch FROM at - since)
                                    / (86400.0 * CASE parsed.recurrence WHEN 'daily' THEN 1 WHEN 'weekly' THEN 7 ELSE 28 END))::int + 2,
                               100000) END;
            IF EXISTS (SELECT 1 FROM fleet_internal.schedule_occurrences(parsed, since, span) o WHERE o.occurrence < at - grace) THEN
                -- what pg_cron's log says of its runs since then, if it keeps one
                BEGIN
                    pg_cron_runs := fleet_internal.cron_runs(fleet_internal.schedule_cron_command(s.id),
                                                             since - interval '1 minute');
                EXCEPTION WHEN OTHERS THEN
                    pg_cron_runs := NULL;
                END;
                -- a failed run of pg_cron's is matched by its start time;
                -- one it could not even connect for has none, and counts
                -- for the latest missed occurrence when it is its latest run
                WITH missed AS (
                    SELECT o.occurrence,
                           coalesce((SELECT r FROM jsonb_array_elements(pg_cron_runs) r
                                      WHERE (r ->> 'start')::timestamptz BETWEEN o.occurrence - interval '1 minute'
                                                                              AND o.occurrence + grace
                                        AND r ->> 'status' = 'failed'
                                      LIMIT 1),
                                    CASE WHEN o.occurrence = max(o.occurrence) OVER ()
                                          AND pg_cron_runs -> 0 ->> 'status' = 'failed'
                                          AND pg_cron_runs -> 0 ->> 'start' IS NULL
                                         THEN pg_cron_runs -> 0 END) AS cron_run
                      FROM fleet_internal.schedule_occurrences(parsed, since, span) o
                     WHERE o.occurrence < at - grace
                )
                INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, error)
                SELECT s.id, m.occurrence,
                       CASE WHEN m.cron_run IS NULL THEN 'missed' ELSE 'failed' END,
                       CASE WHEN m.cron_run IS NULL
                            THEN 'pg_cron did not run it within fleet.schedule_misfire_grace: the server or pg_cron was down, or its entry was missing'
                            ELSE 'pg_cron could not run it: ' || coalesce(m.cron_run ->> 'message', 'no reason given') END
                  FROM missed m
                ON CONFLICT DO NOTHING;
                UPDATE fleet.scheduled_jobs sj
                   SET last_occurrence = greatest(sj.last_occurrence,
                                                  (SELECT max(o.occurrence) FROM fleet_internal.schedule_occurrences(parsed, since, span) o
                                                    WHERE o.occurrence < at - grace))
                 WHERE sj.id = s.id;
            END IF;
            since := greatest(since, at - grace - interval '1 microsecond');
        END IF;
        SELECT o.occurrence INTO next_run FROM fleet_internal.schedule_occurrences(parsed, since, 1) o;
    END IF;
    UPDATE fleet.scheduled_jobs sj SET next_run_at = next_run WHERE sj.id = s.id AND sj.next_run_at IS DISTINCT FROM next_run;
    IF FOUND THEN
        PERFORM fleet_internal.schedules_changed();
    END IF;
    RETURN next_run;
END;
$$;

-- The keys a scheduled job body has besides its job's (fleet_internal.job_keys):
-- its schedule and "enabled", and what fleet.get_scheduled_job() adds
-- (read-only).
CREATE FUNCTION fleet_internal.scheduled_job_keys()
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '{schedule,enabled,completed,nextRun,occurrences,createdBy,changedBy}'::text[]
$$;

-- A scheduled job's etag: computed from what it holds, so that it changes
-- with every change (fleet_internal.etag).
CREATE FUNCTION fleet_internal.scheduled_job_etag(s fleet.scheduled_jobs)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.etag(jsonb_build_array(s.definition, s.schedule, s.enabled))
$$;

-- The scheduled job as JSON, for whoever sees it.
CREATE FUNCTION fleet.get_scheduled_job(scheduled_job_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs := fleet_internal.visible_scheduled_job(get_scheduled_job.scheduled_job_id, fleet_internal.calling_role());
BEGIN
    RETURN s.definition || jsonb_strip_nulls(jsonb_build_object(
        'id', s.id,
        'etag', fleet_internal.scheduled_job_etag(s),
        'organizations', jsonb_build_array(s.organization_id),
        'schedule', s.schedule,
        'enabled', s.enabled,
        -- IoT Central's flag: no occurrence is left
        'completed', s.enabled AND s.next_run_at IS NULL,
        'nextRun', fleet_internal.rest_timestamp(s.next_run_at),
        'occurrences', s.runs_started,
        'createdBy', s.created_by,
        'changedBy', s.changed_by,
        'error', s.error));
END;
$$;
COMMENT ON FUNCTION fleet.get_scheduled_job(text) IS 'The scheduled job as JSON: its job definition, schedule, enabled, completed, next run, the number of runs started, and who created and last changed it';

-- The schedule, or "does not exist" unless the role sees it.
CREATE FUNCTION fleet_internal.visible_scheduled_job(scheduled_job_id text, role_name name)
RETURNS fleet.scheduled_jobs
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs;
BEGIN
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = visible_scheduled_job.scheduled_job_id;
    IF NOT FOUND OR NOT fleet_internal.sees(role_name, s.organization_id) THEN
        RAISE EXCEPTION 'scheduled job "%" does not exist', visible_scheduled_job.scheduled_job_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT id, display_name FROM fleet.scheduled_jobs lists them.';
    END IF;
    RETURN s;
END;
$$;

-- A scheduled job's definition taken apart: the job, its schedule (NULL
-- fields when not given) and "enabled" (NULL when not given).
CREATE FUNCTION fleet_internal.scheduled_job_parts(definition jsonb)
RETURNS fleet_internal.scheduled_job_parts
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts fleet_internal.scheduled_job_parts;
BEGIN
    IF definition ? 'schedule' THEN
        parts.schedule := fleet_internal.parse_schedule(definition -> 'schedule');
    END IF;
    IF definition ? 'enabled' AND jsonb_typeof(definition -> 'enabled') IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION '"enabled" must be true or false, not %', (definition -> 'enabled')::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    parts.enabled := (definition ->> 'enabled')::boolean;
    -- what get_scheduled_job() adds is read-only and ignored if sent back
    PERFORM fleet_internal.refuse_unknown_keys(definition,
        fleet_internal.job_keys(false) || fleet_internal.scheduled_job_keys() || fleet_internal.job_keys(true),
        'the scheduled job');
    -- the schedule's id and etag are not its jobs'
    parts.job_definition := definition - fleet_internal.scheduled_job_keys() - '{id,etag,error}'::text[];
    RETURN parts;
END;
$$;

-- Refuses a schedule none of whose occurrences is still to come.
CREATE FUNCTION fleet_internal.require_future_occurrence(schedule fleet_internal.schedule, label text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet_internal.schedule_occurrences(schedule, pg_catalog.now(), 1)) THEN
        IF schedule.recurrence = 'none' THEN
            RAISE EXCEPTION 'the start of % (% %) is in the past', label,
                            to_char(schedule.start_local, 'YYYY-MM-DD"T"HH24:MI:SS'), schedule.time_zone
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give a start in the future, or run the job now with fleet.create_job().';
        END IF;
        RAISE EXCEPTION '% has no occurrence left: it ends before its next one', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Move the end date or raise the number of occurrences.';
    END IF;
END;
$$;

CREATE FUNCTION fleet.create_scheduled_job(definition jsonb, scheduled_job_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    parts  fleet_internal.scheduled_job_parts;
    job    fleet.jobs;
    new_id text;
    label  text;
BEGIN
    PERFORM fleet_internal.require_engine_database('scheduling a job');
    definition := fleet_internal.body_with_id(definition, scheduled_job_id, 'scheduled job');
    IF jsonb_typeof(definition) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a scheduled job definition must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', coalesce(jsonb_typeof(definition), 'NULL')),
                  HINT = 'Pass a job definition with a "schedule": {"start": ..., "timeZone": ..., "recurrence": ...}.';
    END IF;
    IF definition ? 'id' AND jsonb_typeof(definition -> 'id') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'scheduled job id % is not a string', (definition -> 'id')::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    new_id := coalesce(definition ->> 'id', 'schedule-' || replace(gen_random_uuid()::text, '-', ''));
    IF new_id !~ '^[A-Za-z0-9_-]{1,255}$' THEN
        RAISE EXCEPTION 'invalid scheduled job id "%"', new_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 255 letters, digits, "-" or "_", or leave "id" out to get one.';
    END IF;
    label := format('scheduled job "%s"', new_id);
    IF NOT definition ? 'schedule' THEN
        RAISE EXCEPTION '% needs a "schedule"', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add "schedule": {"start": "2027-03-01T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly"}, or run the job now with fleet.create_job().';
    END IF;

    parts := fleet_internal.scheduled_job_parts(definition);
    job := fleet_internal.job_from_definition(parts.job_definition, caller);     -- checked now, and at each run
    PERFORM fleet_internal.require_future_occurrence(parts.schedule, label);
    PERFORM fleet_internal.require_cron(coalesce(parts.enabled, true));
    IF EXISTS (SELECT 1 FROM fleet.scheduled_jobs sj WHERE sj.id = new_id) THEN
        RAISE EXCEPTION '% already exists', label
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another id, or change it with fleet.update_scheduled_job().';
    END IF;

    INSERT INTO fleet.scheduled_jobs (id, display_name, organization_id, group_id, definition, schedule,
                                      enabled, effective_from, created_by, changed_by)
    VALUES (new_id, job.display_name, job.organization_id, job.group_id, parts.job_definition,
            fleet_internal.schedule_json(parts.schedule) || jsonb_build_object('start', definition #> '{schedule,start}'),
            coalesce(parts.enabled, true), pg_catalog.now(), caller, caller);
    PERFORM fleet_internal.schedule_advance(new_id, pg_catalog.now());
    PERFORM fleet_internal.schedules_changed();
    RETURN fleet.get_scheduled_job(new_id);
END;
$$;
COMMENT ON FUNCTION fleet.create_scheduled_job(jsonb, text) IS 'Validates a job definition with a "schedule" (scheduled_job_id as PUT /scheduledJobs/{id} takes it, else its "id") and schedules it through pg_cron';

-- Locks a schedule for a change by the caller.
CREATE FUNCTION fleet_internal.lock_scheduled_job(scheduled_job_id text, caller name)
RETURNS fleet.scheduled_jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs := fleet_internal.visible_scheduled_job(lock_scheduled_job.scheduled_job_id, caller);
BEGIN
    PERFORM fleet_internal.require_app_role(s.organization_id, 'operator', 'changing a scheduled job', caller);
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = lock_scheduled_job.scheduled_job_id FOR UPDATE;
    RETURN s;
END;
$$;

-- Changes a scheduled job: any of the job's fields, the schedule, and
-- "enabled", each replaced when given.  Takes effect from the next
-- occurrence; a new schedule's calendar starts now (occurrences it would
-- have had before are not missed).  Its runs are then created with the
-- caller's rights.
CREATE FUNCTION fleet.update_scheduled_job(scheduled_job_id text, definition jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    s       fleet.scheduled_jobs := fleet_internal.lock_scheduled_job(update_scheduled_job.scheduled_job_id, fleet_internal.calling_role());
    parts   fleet_internal.scheduled_job_parts;
    job     fleet.jobs;
    label   text := format('scheduled job "%s"', update_scheduled_job.scheduled_job_id);
    new_schedule boolean;
    renewed      boolean;
BEGIN
    IF jsonb_typeof(definition) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the changes to % must be a JSON object', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the fields to change, such as {"enabled": false} or {"schedule": {...}}.';
    END IF;
    IF definition ? 'id' AND definition -> 'id' IS DISTINCT FROM to_jsonb(update_scheduled_job.scheduled_job_id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create a new scheduled job and delete this one.';
    END IF;
    -- If-Match: an etag read earlier must still be the schedule's
    PERFORM fleet_internal.require_etag(label, definition -> 'etag', fleet_internal.scheduled_job_etag(s));
    parts := fleet_internal.scheduled_job_parts(definition);
    parts.job_definition := s.definition || parts.job_definition;
    job := fleet_internal.job_from_definition(parts.job_definition, caller);
    IF job.organization_id <> s.organization_id THEN
        RAISE EXCEPTION '% cannot move to organization "%"', label, job.organization_id
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It belongs to organization "%s".', s.organization_id),
                  HINT = 'Create a new scheduled job in that organization and delete this one.';
    END IF;
    new_schedule := (parts.schedule).start_local IS NOT NULL;
    renewed := new_schedule OR (coalesce(parts.enabled, false) AND NOT s.enabled);
    IF new_schedule THEN
        PERFORM fleet_internal.require_future_occurrence(parts.schedule, label);
    END IF;
    PERFORM fleet_internal.require_cron(coalesce(parts.enabled, s.enabled));

    UPDATE fleet.scheduled_jobs sj
       SET display_name = job.display_name, group_id = job.group_id,
           definition = parts.job_definition,
           schedule = CASE WHEN new_schedule
                           THEN fleet_internal.schedule_json(parts.schedule) || jsonb_build_object('start', update_scheduled_job.definition #> '{schedule,start}')
                           ELSE sj.schedule END,
           enabled = coalesce(parts.enabled, sj.enabled),
           effective_from = CASE WHEN renewed THEN pg_catalog.now() ELSE sj.effective_from END,
           error = CASE WHEN renewed THEN NULL ELSE sj.error END,
           updated_at = pg_catalog.now(), changed_by = caller
     WHERE sj.id = s.id;
    PERFORM fleet_internal.schedule_advance(s.id, pg_catalog.now());
    PERFORM fleet_internal.schedules_changed();
    RETURN fleet.get_scheduled_job(s.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_scheduled_job(text, jsonb) IS 'Changes a scheduled job''s definition, schedule or "enabled" from its next occurrence';

CREATE FUNCTION fleet.enable_scheduled_job(scheduled_job_id text)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT fleet.update_scheduled_job(enable_scheduled_job.scheduled_job_id, '{"enabled": true}') $$;
COMMENT ON FUNCTION fleet.enable_scheduled_job(text) IS 'Enables a scheduled job: it runs from its next occurrence';

CREATE FUNCTION fleet.disable_scheduled_job(scheduled_job_id text)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT fleet.update_scheduled_job(disable_scheduled_job.scheduled_job_id, '{"enabled": false}') $$;
COMMENT ON FUNCTION fleet.disable_scheduled_job(text) IS 'Disables a scheduled job: its pg_cron entry goes, its history stays';

CREATE FUNCTION fleet.delete_scheduled_job(scheduled_job_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs := fleet_internal.lock_scheduled_job(delete_scheduled_job.scheduled_job_id, fleet_internal.calling_role());
BEGIN
    DELETE FROM fleet.scheduled_jobs sj WHERE sj.id = s.id;
    PERFORM fleet_internal.schedules_changed();
END;
$$;
COMMENT ON FUNCTION fleet.delete_scheduled_job(text) IS 'Unschedules a job: the schedule, its pg_cron entry and its run history go; the jobs it ran stay';

-- Called by pg_cron at an occurrence (and by tests with a mocked "now"):
-- runs the occurrence that is due, records it, and moves the schedule on.
-- Anything else (a stale entry, a repeated fire, a deleted or disabled
-- schedule) runs nothing.  The run is checked and created with the rights
-- of the role that last changed the schedule, in its organization.
-- Returns the new job's id.
CREATE FUNCTION fleet.fire_scheduled_job(scheduled_job_id text, fired_at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    s       fleet.scheduled_jobs;
    due     timestamptz;
    job     fleet.jobs;
    job_id  text;
    message text;
BEGIN
    PERFORM fleet_internal.require_clock_time(fired_at, 'fire a scheduled job');
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = fire_scheduled_job.scheduled_job_id FOR UPDATE;
    -- (pg_cron fires as the schedule's last changer, who may have lost its
    -- rights since: the run is then refused below, with the reason)
    IF NOT FOUND OR (caller <> s.changed_by AND NOT fleet_internal.sees(caller, s.organization_id)) THEN
        RETURN NULL;            -- a stale entry: the engine removes it
    END IF;
    due := fleet_internal.schedule_advance(s.id, fired_at);
    -- pg_cron fires on the minute: a due occurrence is at most a minute
    -- ahead of the clock (and at most the grace behind it)
    IF due IS NOT NULL AND due <= fired_at + interval '59 seconds' THEN
        BEGIN
            job := fleet_internal.job_from_definition(s.definition || jsonb_build_object(
                       'id', fleet_internal.free_job_id(left(s.id, 220) || '-' || to_char(due AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MI"Z"'))),
                       s.changed_by);
            IF job.organization_id <> s.organization_id THEN
                RAISE EXCEPTION 'the job would run in organization "%", not the schedule''s "%"',
                                job.organization_id, s.organization_id;
            END IF;
            job.status := 'pending';
            job.queued_at := fleet_internal.moment();
            job.scheduled_job_id := s.id;
            INSERT INTO fleet.jobs SELECT job.*;
            job_id := job.id;
            INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, job_id)
            VALUES (s.id, due, 'started', job_id);
            UPDATE fleet.scheduled_jobs sj SET runs_started = sj.runs_started + 1 WHERE sj.id = s.id;
            PERFORM fleet_internal.job_event(job.id, 'queued');
            PERFORM fleet_internal.wake_engine();
        EXCEPTION WHEN OTHERS THEN
            -- the job no longer validates (a group or template changed, its
            -- last changer lost the right): the occurrence is recorded with
            -- the reason, the schedule goes on
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, error)
            VALUES (s.id, due, 'failed', message);
            RAISE WARNING 'scheduled job "%" could not start its run of %: %', s.id, due, message;
        END;
        UPDATE fleet.scheduled_jobs sj SET last_occurrence = greatest(sj.last_occurrence, due) WHERE sj.id = s.id;
        PERFORM fleet_internal.schedule_advance(s.id, fired_at);
    END IF;
    PERFORM fleet_internal.schedules_changed();
    RETURN job_id;
END;
$$;
COMMENT ON FUNCTION fleet.fire_scheduled_job(text, timestamptz) IS 'Run by pg_cron: starts the due occurrence of a scheduled job and moves the schedule on to the next';

CREATE FUNCTION fleet.list_scheduled_job_runs(scheduled_job_id text)
RETURNS TABLE (occurrence timestamptz, outcome text, job_id text, status text,
               started_at timestamptz, finished_at timestamptz, error text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.visible_scheduled_job(list_scheduled_job_runs.scheduled_job_id, fleet_internal.calling_role());
    RETURN QUERY
    SELECT r.occurrence, r.outcome, r.job_id, j.status, j.started_at, j.finished_at, coalesce(r.error, j.error)
      FROM fleet.scheduled_job_runs r
      LEFT JOIN fleet.jobs j ON j.id = r.job_id AND j.deleted_at IS NULL
     WHERE r.scheduled_job_id = list_scheduled_job_runs.scheduled_job_id
     ORDER BY r.occurrence;
END;
$$;
COMMENT ON FUNCTION fleet.list_scheduled_job_runs(text) IS 'The occurrences of a scheduled job so far: started (with the job and its status), missed, or failed to start';


-- src/sql/schedule_cron.sql
-- Where pg_cron's entries are written, and where missed occurrences are
-- found.
--
-- The schedule table is the truth and pg_cron converges to it: every
-- change to a schedule counts one in fleet_internal.engine_state and wakes
-- the engine at commit; the engine then makes this database's entries (its
-- name and the "pg_fleet " prefix: see fleet_internal.schedule_cron_name)
-- exactly what the rows say, in one statement wherever pg_cron lives
-- (src/cron_bridge.c).  So an entry follows the outcome of the transaction
-- that changed its schedule, also when pg_cron lives in another database
-- and its write commits on its own; entries removed or changed by hand come
-- back within five minutes; and a database restored under another name in
-- the same cluster owns only its own entries.

-- C (src/cron_bridge.c): the database pg_cron keeps its entries in; refuses
-- when pg_cron is not loaded.
CREATE FUNCTION fleet_internal.cron_database()
RETURNS text
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cron_database';

-- C: makes this database's pg_cron entries the desired ones ([{jobname,
-- schedule, command, username}]); false when there is no pg_cron to update.
CREATE FUNCTION fleet_internal.cron_reconcile(desired jsonb)
RETURNS boolean
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cron_reconcile';

-- C: pg_cron's log of its runs of a command here since a time.
CREATE FUNCTION fleet_internal.cron_runs(command text, since timestamptz)
RETURNS jsonb
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cron_runs';

-- A schedule's pg_cron entry name (pg_cron keeps names as "name", 63
-- bytes): this database's name and the schedule's id, so that two
-- databases of one cluster (a copy restored beside its original, say)
-- never share an entry.
CREATE FUNCTION fleet_internal.schedule_cron_name(schedule_id text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN octet_length(n) <= 63 THEN n
                ELSE 'pg_fleet ' || left(schedule_id, 20) || ' ' || left(md5(n), 16) END
      FROM (SELECT format('pg_fleet %s %s', current_database(), schedule_id) AS n) x
$$;

-- What a schedule's entry runs: only the schedule id, nothing secret.
CREATE FUNCTION fleet_internal.schedule_cron_command(schedule_id text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT format('SELECT fleet.fire_scheduled_job(%L)', schedule_id) $$;

-- Schedules changed: the engine brings pg_cron in line after this commits.
CREATE FUNCTION fleet_internal.schedules_changed()
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE fleet_internal.engine_state SET cron_version = cron_version + 1;
    SELECT fleet_internal.wake_engine();
$$;

-- Refuses to enable a schedule without pg_cron, and warns when pg_cron is
-- set up so that it cannot run the command: by default it connects to
-- "localhost" over TCP, which a stock pg_hba.conf (Debian's among them)
-- answers with a password prompt pg_cron cannot fill in.
CREATE FUNCTION fleet_internal.require_cron(enabled boolean)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    host text := coalesce(current_setting('cron.host', true), 'localhost');
BEGIN
    IF NOT enabled THEN
        RETURN;
    END IF;
    PERFORM fleet_internal.cron_database();
    IF coalesce(current_setting('cron.use_background_workers', true), 'off') <> 'on' AND host NOT LIKE '/%' THEN
        RAISE WARNING 'pg_cron runs scheduled jobs over a connection to "%", which may ask for a password it does not have', host
            USING DETAIL = 'cron.use_background_workers is off, so pg_cron connects as the schedule''s role like any client; if pg_hba.conf asks for a password there, every run fails with "connection failed".',
                  HINT = 'Set cron.use_background_workers = on (and max_worker_processes high enough) or cron.host to the server''s socket directory, and restart.';
    END IF;
END;
$$;

-- Brings pg_cron in line with the schedules, when they changed or every
-- five minutes (an entry removed or changed by hand comes back); after a
-- failure, once a minute.  Each enabled schedule's entry points at its next
-- occurrence and runs as its last changer; one whose last occurrence just
-- fired keeps its entry two minutes more, so pg_cron does not report the
-- run it is finishing as cancelled.
CREATE FUNCTION fleet_internal.reconcile_cron(at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_ts  timestamptz := fleet_internal.moment(at);
    state   fleet_internal.engine_state;
    desired jsonb;
    message text;
BEGIN
    SELECT s.* INTO state FROM fleet_internal.engine_state s;
    IF (state.cron_version = state.cron_synced_version AND state.cron_reconciled_at > now_ts - interval '5 minutes'
        AND NOT coalesce(state.cron_recheck_at <= now_ts, false))
       OR (state.cron_error IS NOT NULL AND state.cron_reconciled_at > now_ts - interval '1 minute') THEN
        RETURN;
    END IF;
    -- (read after the version: a change committed meanwhile counts again)
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'jobname', fleet_internal.schedule_cron_name(s.id),
               'schedule', to_char(s.fire_at AT TIME ZONE 'UTC', 'FMMI FMHH24 FMDD FMMM') || ' *',
               'command', fleet_internal.schedule_cron_command(s.id),
               'username', s.changed_by)), '[]')
      INTO desired
      FROM (SELECT sj.id, sj.changed_by,
                   CASE WHEN sj.next_run_at IS NOT NULL THEN sj.next_run_at
                        WHEN sj.last_occurrence BETWEEN now_ts - interval '2 minutes' AND now_ts + interval '1 minute'
                        THEN sj.last_occurrence END AS fire_at
              FROM fleet.scheduled_jobs sj
             WHERE sj.enabled) s
     WHERE s.fire_at IS NOT NULL;
    BEGIN
        -- without pg_cron there is nothing to bring in line, and no
        -- schedule could be made (fleet_internal.require_cron)
        IF current_setting('cron.database_name', true) IS NOT NULL THEN
            PERFORM fleet_internal.cron_reconcile(desired);
        END IF;
        -- a kept final entry goes two minutes after its occurrence
        UPDATE fleet_internal.engine_state
           SET cron_synced_version = state.cron_version, cron_reconciled_at = now_ts, cron_error = NULL,
               cron_recheck_at = (SELECT min(sj.last_occurrence) + interval '2 minutes' + interval '1 second'
                                    FROM fleet.scheduled_jobs sj
                                   WHERE sj.enabled AND sj.next_run_at IS NULL
                                     AND sj.last_occurrence BETWEEN now_ts - interval '2 minutes'
                                                                AND now_ts + interval '1 minute');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
        UPDATE fleet_internal.engine_state SET cron_reconciled_at = now_ts, cron_error = message;
        IF message IS DISTINCT FROM state.cron_error THEN
            RAISE WARNING 'pg_fleet engine could not bring pg_cron in line with the schedules: %', message
                USING HINT = 'It tries again every minute; fleet.engine_status shows the error until it succeeds.';
        END IF;
    END;
END;
$$;

-- Schedules whose occurrence passed unfired: recorded as missed (or failed
-- with pg_cron's reason), and moved on to the next occurrence.  A schedule
-- the engine cannot move on (say, a row restored from a newer version) is
-- disabled with the reason; the others go on.
CREATE FUNCTION fleet_internal.check_schedules(at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_ts  timestamptz := fleet_internal.moment(at);
    overdue text;
    message text;
BEGIN
    FOR overdue IN
        SELECT sj.id FROM fleet.scheduled_jobs sj
         WHERE sj.enabled AND sj.next_run_at < now_ts - current_setting('fleet.schedule_misfire_grace')::interval
           FOR UPDATE SKIP LOCKED
    LOOP
        BEGIN
            PERFORM fleet_internal.schedule_advance(overdue, now_ts);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            UPDATE fleet.scheduled_jobs sj SET enabled = false, next_run_at = NULL, error = message
             WHERE sj.id = overdue;
            PERFORM fleet_internal.schedules_changed();
            RAISE WARNING 'pg_fleet engine: scheduled job "%" was disabled: %', overdue, message
                USING HINT = 'Fix it with fleet.update_scheduled_job(), which enables it again.';
        END;
    END LOOP;
END;
$$;


-- src/sql/reporting.sql
-- Reporting views for BI tools (Metabase, Grafana, Power BI, Superset).
-- Their names, columns and types are API: add columns at the end, never
-- rename or retype one.  Every view and column carries a comment, which BI
-- tools show as its description.  All are security_invoker: a reader sees
-- what its own privileges (and, with organizations, its row-level security)
-- allow.  Counts are exact, read from the per-device rows of each job.

CREATE VIEW fleet.job_overview WITH (security_invoker = true) AS
    SELECT j.id AS job_id,
           j.display_name AS job_name,
           j.job_type,
           j.organization_id,
           j.group_id,
           j.status,
           coalesce(p.total, 0) AS total_devices,
           coalesce(p.pending, 0) AS pending_devices,
           coalesce(p.completed, 0) AS completed_devices,
           coalesce(p.failed, 0) AS failed_devices,
           round(100.0 * p.completed / nullif(p.completed + p.failed, 0), 2) AS success_rate,
           j.scheduled_job_id,
           j.rerun_of,
           j.created_by,
           j.created_at,
           j.queued_at,
           j.started_at,
           j.finished_at,
           extract(epoch FROM j.started_at - j.queued_at)::double precision AS wait_seconds,
           extract(epoch FROM coalesce(j.finished_at, CASE WHEN j.status = 'running' THEN pg_catalog.now() END)
                              - j.started_at)::double precision AS run_seconds,
           j.error,
           coalesce(s.failures, 0) AS step_failures,
           s.last_error AS last_step_error,
           s.next_retry_at,
           -- pg_fleet's rollout controls (src/sql/job_rollouts.sql)
           j.status_detail,
           j.rollout,
           (SELECT count(*) FROM fleet.job_device_attempts a WHERE a.job_id = j.id) AS retried_attempts
      FROM fleet.jobs j
      LEFT JOIN LATERAL (SELECT count(*) AS total,
                                count(*) FILTER (WHERE jd.status = 'pending') AS pending,
                                count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                                count(*) FILTER (WHERE jd.status = 'failed') AS failed
                           FROM fleet.job_devices jd WHERE jd.job_id = j.id) p ON true
      LEFT JOIN fleet_internal.job_engine_state s ON s.job_id = j.id
     WHERE j.deleted_at IS NULL;
COMMENT ON VIEW fleet.job_overview IS 'One row per job: type, organization, status, device totals, success rate, durations and the schedule it came from';
COMMENT ON COLUMN fleet.job_overview.job_id IS 'The job''s id';
COMMENT ON COLUMN fleet.job_overview.job_name IS 'The job''s display name';
COMMENT ON COLUMN fleet.job_overview.job_type IS 'property, cloudProperty, command, deviceTemplateMigration or deviceManifestMigration';
COMMENT ON COLUMN fleet.job_overview.organization_id IS 'The organization the job belongs to';
COMMENT ON COLUMN fleet.job_overview.group_id IS 'The device group the job ran on';
COMMENT ON COLUMN fleet.job_overview.status IS 'saved, pending, running, stopped, completed, failed or cancelled';
COMMENT ON COLUMN fleet.job_overview.total_devices IS 'Devices in the job (0 until it starts)';
COMMENT ON COLUMN fleet.job_overview.pending_devices IS 'Devices not yet done';
COMMENT ON COLUMN fleet.job_overview.completed_devices IS 'Devices the job completed on';
COMMENT ON COLUMN fleet.job_overview.failed_devices IS 'Devices the job failed on';
COMMENT ON COLUMN fleet.job_overview.success_rate IS 'Completed devices as a percentage of the devices done (NULL before any is done)';
COMMENT ON COLUMN fleet.job_overview.scheduled_job_id IS 'The scheduled job this run came from, if any';
COMMENT ON COLUMN fleet.job_overview.rerun_of IS 'The job whose failed devices this job reruns, if any';
COMMENT ON COLUMN fleet.job_overview.created_by IS 'The database role that created the job';
COMMENT ON COLUMN fleet.job_overview.created_at IS 'When the job was created';
COMMENT ON COLUMN fleet.job_overview.queued_at IS 'When the job was queued to run';
COMMENT ON COLUMN fleet.job_overview.started_at IS 'When the engine started the job';
COMMENT ON COLUMN fleet.job_overview.finished_at IS 'When the job ended';
COMMENT ON COLUMN fleet.job_overview.wait_seconds IS 'Seconds between queued and started';
COMMENT ON COLUMN fleet.job_overview.run_seconds IS 'Seconds between started and finished (so far, while running)';
COMMENT ON COLUMN fleet.job_overview.error IS 'Why the engine gave up on the job, when it did (fleet.resume_job() carries on)';
COMMENT ON COLUMN fleet.job_overview.step_failures IS 'The engine''s failed steps of the job in a row (0: its last step went well)';
COMMENT ON COLUMN fleet.job_overview.last_step_error IS 'The error of the engine''s last failed step of the job';
COMMENT ON COLUMN fleet.job_overview.next_retry_at IS 'When the engine tries the job''s step again, after a failure';
COMMENT ON COLUMN fleet.job_overview.status_detail IS 'Why the job waits (its rate, its maintenance windows, a continuous job between newcomers) or was paused (a threshold, an abort criterion, its promotion, its end)';
COMMENT ON COLUMN fleet.job_overview.rollout IS 'The job''s rollout controls as the engine reads them (the body''s "rollout")';
COMMENT ON COLUMN fleet.job_overview.retried_attempts IS 'Failed attempts its "retries" offered again';

CREATE VIEW fleet.job_batch_progress WITH (security_invoker = true) AS
    SELECT b.job_id,
           b.batch,
           b.status,
           b.size AS devices,
           coalesce(p.pending, 0) AS pending_devices,
           coalesce(p.completed, 0) AS completed_devices,
           coalesce(p.failed, 0) AS failed_devices,
           round(100.0 * (b.size - coalesce(p.pending, 0)) / nullif(b.size, 0), 2) AS percent_done,
           b.started_at,
           b.finished_at,
           coalesce(p.rejected, 0) AS rejected_devices,
           coalesce(p.timed_out, 0) AS timed_out_devices
      FROM fleet.job_batches b
      LEFT JOIN LATERAL (SELECT count(*) FILTER (WHERE jd.status = 'pending') AS pending,
                                count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                                count(*) FILTER (WHERE jd.status = 'failed') AS failed,
                                count(*) FILTER (WHERE jd.status = 'failed'
                                                   AND fleet_internal.failure_type(jd.error) = 'REJECTED') AS rejected,
                                count(*) FILTER (WHERE jd.status = 'failed' AND jd.error = 'timed out') AS timed_out
                           FROM fleet.job_devices jd
                          WHERE jd.job_id = b.job_id AND jd.device_id >= b.first_device
                            AND jd.device_id <= b.last_device AND jd.batch = b.batch) p ON true
     WHERE EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = b.job_id AND j.deleted_at IS NULL);
COMMENT ON VIEW fleet.job_batch_progress IS 'One row per batch of every started job: its devices and how many are pending, completed and failed';
COMMENT ON COLUMN fleet.job_batch_progress.job_id IS 'The job';
COMMENT ON COLUMN fleet.job_batch_progress.batch IS 'The batch number, from 1, in the order batches run';
COMMENT ON COLUMN fleet.job_batch_progress.status IS 'pending, running, completed or cancelled';
COMMENT ON COLUMN fleet.job_batch_progress.devices IS 'Devices in the batch';
COMMENT ON COLUMN fleet.job_batch_progress.pending_devices IS 'Devices of the batch not yet done';
COMMENT ON COLUMN fleet.job_batch_progress.completed_devices IS 'Devices of the batch completed';
COMMENT ON COLUMN fleet.job_batch_progress.failed_devices IS 'Devices of the batch failed';
COMMENT ON COLUMN fleet.job_batch_progress.percent_done IS 'Completed and failed devices as a percentage of the batch';
COMMENT ON COLUMN fleet.job_batch_progress.started_at IS 'When the batch started';
COMMENT ON COLUMN fleet.job_batch_progress.finished_at IS 'When the batch ended';
COMMENT ON COLUMN fleet.job_batch_progress.rejected_devices IS 'Of the failed, those whose device refused the command (4xx)';
COMMENT ON COLUMN fleet.job_batch_progress.timed_out_devices IS 'Of the failed, those nobody answered in time';

CREATE VIEW fleet.job_device_outcomes WITH (security_invoker = true) AS
    SELECT jd.job_id,
           j.display_name AS job_name,
           j.job_type,
           j.organization_id,
           jd.device_id,
           coalesce(d.display_name, 'deleted') AS device_name,
           d.id IS NULL AS device_deleted,
           d.template_id,
           t.display_name AS template_name,
           jd.batch,
           jd.status,
           jd.error,
           jd.started_at,
           jd.finished_at,
           extract(epoch FROM jd.finished_at - jd.started_at)::double precision AS duration_seconds
      FROM fleet.job_devices jd
      JOIN fleet.jobs j ON j.id = jd.job_id
      LEFT JOIN fleet.devices d ON d.id = jd.device_id
      LEFT JOIN fleet.device_templates t ON t.id = d.template_id
     WHERE j.deleted_at IS NULL;
COMMENT ON VIEW fleet.job_device_outcomes IS 'One row per device of every started job: its outcome, with device and template names; filter by job_id';
COMMENT ON COLUMN fleet.job_device_outcomes.job_id IS 'The job';
COMMENT ON COLUMN fleet.job_device_outcomes.job_name IS 'The job''s display name';
COMMENT ON COLUMN fleet.job_device_outcomes.job_type IS 'The job''s type';
COMMENT ON COLUMN fleet.job_device_outcomes.organization_id IS 'The organization the job belongs to';
COMMENT ON COLUMN fleet.job_device_outcomes.device_id IS 'The device';
COMMENT ON COLUMN fleet.job_device_outcomes.device_name IS 'The device''s display name, or "deleted" for a device deleted since';
COMMENT ON COLUMN fleet.job_device_outcomes.device_deleted IS 'True when the device has been deleted since the job ran';
COMMENT ON COLUMN fleet.job_device_outcomes.template_id IS 'The device''s template now (NULL when deleted or unassigned)';
COMMENT ON COLUMN fleet.job_device_outcomes.template_name IS 'That template''s display name';
COMMENT ON COLUMN fleet.job_device_outcomes.batch IS 'The batch the device ran in';
COMMENT ON COLUMN fleet.job_device_outcomes.status IS 'pending, completed or failed';
COMMENT ON COLUMN fleet.job_device_outcomes.error IS 'Why the device failed';
COMMENT ON COLUMN fleet.job_device_outcomes.started_at IS 'When the job started on the device';
COMMENT ON COLUMN fleet.job_device_outcomes.finished_at IS 'When the device''s outcome was recorded';
COMMENT ON COLUMN fleet.job_device_outcomes.duration_seconds IS 'Seconds from started to finished (for commands: the device''s answer time)';

CREATE VIEW fleet.device_inventory WITH (security_invoker = true) AS
    SELECT d.template_id,
           t.display_name AS template_name,
           d.organization_id,
           o.display_name AS organization_name,
           d.edge,
           d.simulated,
           count(*) AS devices
      FROM fleet.devices d
      LEFT JOIN fleet.device_templates t ON t.id = d.template_id
      LEFT JOIN fleet.organizations o ON o.id = d.organization_id
     GROUP BY d.template_id, t.display_name, d.organization_id, o.display_name, d.edge, d.simulated;
COMMENT ON VIEW fleet.device_inventory IS 'Device counts by template, organization, IoT Edge and simulated';
COMMENT ON COLUMN fleet.device_inventory.template_id IS 'The device template (NULL: devices without one)';
COMMENT ON COLUMN fleet.device_inventory.template_name IS 'The template''s display name';
COMMENT ON COLUMN fleet.device_inventory.organization_id IS 'The organization the devices belong to';
COMMENT ON COLUMN fleet.device_inventory.organization_name IS 'The organization''s display name';
COMMENT ON COLUMN fleet.device_inventory.edge IS 'True for IoT Edge devices';
COMMENT ON COLUMN fleet.device_inventory.simulated IS 'True for simulated devices';
COMMENT ON COLUMN fleet.device_inventory.devices IS 'How many devices';

-- src/sql/engine_status.sql
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
      FROM fleet_internal.engine_activity() a, fleet_internal.engine_state st;
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

-- src/sql/distribution.sql
-- Scaling out on Citus (DESIGN.md section 7): where each table goes, and
-- fleet.distribute(), which puts them there.
--
-- Citus propagates nothing an extension script runs, so distributing is a
-- call users make after CREATE EXTENSION, on the coordinator.  Devices and
-- the rows kept per device of a job are distributed by device id and
-- co-located, so that everything the engine does to a device's rows runs
-- on the device's shard; the small tables every statement joins with are
-- reference tables, a copy on every node; what only the coordinator uses
-- stays on it (Citus local tables): the enrollment groups' keys, from which
-- every device key derives, are on no worker.  Those stay plain tables of
-- the coordinator: Citus joins them with distributed ones by planning them
-- apart (citus.local_table_join_policy), and making them Citus local tables
-- would drop and make again the extension's views over them, which an
-- extension's member views do not allow.

-- The layout, in the order Citus needs it: a table before those that refer
-- to it.  sql/layout.sql checks that it names every table, that none of
-- the distributed and reference tables has a trigger or a policy Citus
-- cannot evaluate on a worker, and that the unique keys of the distributed
-- ones include their distribution column.
CREATE FUNCTION fleet_internal.citus_layout()
RETURNS TABLE (table_name regclass, layout text, distribution_column text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.table_name::regclass, t.layout, t.distribution_column
      FROM (VALUES
        (1, 'fleet.organizations', 'reference', NULL),
        (2, 'fleet.organization_members', 'reference', NULL),
        (3, 'fleet.device_templates', 'reference', NULL),
        (4, 'fleet.template_contents', 'reference', NULL),
        (5, 'fleet.edge_manifests', 'reference', NULL),
        (6, 'fleet.device_groups', 'reference', NULL),
        (7, 'fleet.device_operations', 'reference', NULL),
        (8, 'fleet.device_operation_errors', 'reference', NULL),
        (9, 'fleet.jobs', 'reference', NULL),
        (10, 'fleet.job_batches', 'reference', NULL),
        (11, 'fleet.command_windows', 'reference', NULL),
        (12, 'fleet_internal.job_dispatches', 'reference', NULL),
        (13, 'fleet_internal.job_engine_state', 'reference', NULL),
        (14, 'fleet.scheduled_jobs', 'reference', NULL),
        (15, 'fleet.scheduled_job_runs', 'reference', NULL),
        (16, 'fleet.job_device_list_columns', 'reference', NULL),
        (17, 'fleet.devices', 'distributed', 'id'),
        (18, 'fleet.job_devices', 'distributed', 'device_id'),
        (19, 'fleet.job_device_attempts', 'distributed', 'device_id'),
        -- on the coordinator: keys (and the trigger that keeps restored
        -- ones), the engine's own row, the endpoint's refusals
        (20, 'fleet.enrollment_groups', 'local', NULL),
        (21, 'fleet.enrollment_group_certificates', 'local', NULL),
        (22, 'fleet_internal.engine_state', 'local', NULL),
        (23, 'fleet.endpoint_refusals', 'local', NULL)
      ) AS t (position, table_name, layout, distribution_column)
     ORDER BY t.position
$$;
COMMENT ON FUNCTION fleet_internal.citus_layout() IS 'Where fleet.distribute() puts each table on Citus: reference, distributed by device id (co-located with fleet.devices) or local to the coordinator';

-- The engine finishes its step and waits for the calling transaction to
-- end (src/utility_hook.c).  C; superusers only.
CREATE FUNCTION fleet_internal.engine_step_aside()
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'engine_step_aside';

-- Spreads pg_fleet's tables over the Citus cluster this database is the
-- coordinator of.  Idempotent: a table already where it belongs is left
-- alone, so it can be called again after a failure or an update.
CREATE FUNCTION fleet.distribute()
RETURNS TABLE (table_name regclass, layout text, changed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- (Citus's notice for each table it copies says what the result says)
SET client_min_messages = warning
AS $$
DECLARE
    t       record;
    in_place text;
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'permission denied to distribute pg_fleet'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Distributing changes every table of the extension, which a superuser owns.',
                  HINT = 'Call fleet.distribute() as the superuser that created the extension.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'fleet.distribute() needs the citus extension in this database'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Nothing was changed: pg_fleet keeps every table on this server.',
                  HINT = 'Install Citus, run CREATE EXTENSION citus on the coordinator and add the workers with citus_add_node(), then call fleet.distribute() again.';
    END IF;
    IF (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g) <> 0 THEN
        RAISE EXCEPTION 'fleet.distribute() runs on the Citus coordinator, and this node is a worker'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Nothing was changed.',
                  HINT = 'Connect to the coordinator and call it there.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node n WHERE n.groupid = 0) THEN
        RAISE EXCEPTION 'the Citus coordinator is not in its own node list'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Tables that stay on the coordinator (the enrollment groups) refer to reference tables, which needs it.',
                  HINT = 'Run SELECT citus_set_coordinator_host(''<this host>'', <port>); then call fleet.distribute() again.';
    END IF;

    -- Every node has pg_fleet's tables already (Citus created the extension
    -- on each): the foreign keys Citus drops and adds again on the way must
    -- not be sent to them, where they exist.
    PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true);
    -- the engine's steps lock these tables: it waits until this ends
    PERFORM fleet_internal.engine_step_aside();
    -- A transaction that wrote the devices' shards over several connections
    -- per node cannot then change a reference table that other tables refer
    -- to (jobs, batches, windows): sessions of this database use one
    -- connection per node (the engine sets it for itself).
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET citus.multi_shard_modify_mode = %L',
                              pg_catalog.current_database(), 'sequential');
    FOR t IN SELECT l.table_name, l.layout, l.distribution_column FROM fleet_internal.citus_layout() l LOOP
        SELECT CASE p.partmethod WHEN 'h' THEN 'distributed'
                                 WHEN 'n' THEN CASE WHEN p.repmodel = 't' THEN 'reference' ELSE 'local' END END
          INTO in_place
          FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = t.table_name;
        -- (a table Citus does not know stays on the coordinator)
        IF t.layout = 'local' THEN
            in_place := coalesce(in_place, 'local');
        END IF;
        IF in_place = t.layout THEN
            table_name := t.table_name; layout := t.layout; changed := false;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF in_place IS NOT NULL THEN
            RAISE EXCEPTION 'table % is a Citus % table, and pg_fleet needs it %', t.table_name, in_place, t.layout
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Undo it with undistribute_table(), then call fleet.distribute() again.';
        END IF;
        CASE t.layout
            WHEN 'reference' THEN
                PERFORM pg_catalog.create_reference_table(t.table_name);
            WHEN 'distributed' THEN
                PERFORM pg_catalog.create_distributed_table(t.table_name, t.distribution_column,
                    colocate_with => CASE WHEN t.table_name = 'fleet.devices'::regclass THEN 'default'
                                          ELSE 'fleet.devices' END);
                -- the coordinator's own copy of the rows is now on the
                -- shards (the small tables' stays: local tables refer to it)
                PERFORM pg_catalog.truncate_local_data_after_distributing_table(t.table_name);
        END CASE;
        table_name := t.table_name; layout := t.layout; changed := true;
        RETURN NEXT;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION fleet.distribute() IS 'On a Citus coordinator: makes devices and the per-device job rows distributed by device id (co-located), the small tables reference tables, and keeps keys on the coordinator; idempotent';

-- src/sql/privileges.sql
-- Row-level security and privileges: who reads which rows, and the rule
-- that members write only through the API (src/sql/access.sql).
--
-- Every table has row-level security, forced for its owner: whatever a
-- member reads (tables, views, functions, COPY) shows only its
-- organizations' rows.  Members hold SELECT and nothing else on tables, so
-- they cannot write engine state, lock a row or a table the engine needs
-- (SELECT ... FOR UPDATE and LOCK TABLE in any mode but ACCESS SHARE need
-- write privileges), nor learn from a foreign key check that another
-- organization's row exists.  The API functions that write are SECURITY
-- DEFINER and check the caller's rights themselves.  Superusers and
-- BYPASSRLS roles (the engine runs as one) see everything.
--
-- Each policy compares a column of the row itself with the ids the caller
-- sees (fleet_internal.row_scope(), which the planner turns into a
-- constant): no subquery and no function that reads a table, so that Citus
-- can put the same policies on distributed and reference tables and each
-- worker evaluates them alone (DESIGN.md section 7; test sql/layout.sql
-- keeps it so).  On one server the comparison is a hashed array lookup.

ALTER TABLE fleet.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY members_read ON fleet.organizations FOR SELECT
    USING (id = ANY (fleet_internal.row_scope('organizations')));

ALTER TABLE fleet.organization_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.organization_members FORCE ROW LEVEL SECURITY;
CREATE POLICY own_memberships ON fleet.organization_members FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, member, 'USAGE'));

-- tables with an organization_id: visible with their organization (a
-- deleted job is gone at once, while the engine purges it)
ALTER TABLE fleet.devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.devices FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.devices FOR SELECT
    USING (organization_id = ANY (fleet_internal.row_scope('organizations')));
ALTER TABLE fleet.device_groups ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.device_groups FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.device_groups FOR SELECT
    USING (organization_id = ANY (fleet_internal.row_scope('organizations')));
ALTER TABLE fleet.device_operations ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.device_operations FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.device_operations FOR SELECT
    USING (organization_id = ANY (fleet_internal.row_scope('organizations')));
ALTER TABLE fleet.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.jobs FOR SELECT
    USING (organization_id = ANY (fleet_internal.row_scope('organizations')) AND deleted_at IS NULL);
ALTER TABLE fleet.scheduled_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.scheduled_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.scheduled_jobs FOR SELECT
    USING (organization_id = ANY (fleet_internal.row_scope('organizations')));

-- tables whose rows belong to a parent row: visible with the parent (a
-- deleted job's rows are gone with it, while the engine purges them)
ALTER TABLE fleet.device_operation_errors ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.device_operation_errors FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.device_operation_errors FOR SELECT
    USING (operation_id = ANY (fleet_internal.row_scope_ids('device_operations')));
ALTER TABLE fleet.job_batches ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.job_batches FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.job_batches FOR SELECT
    USING (job_id = ANY (fleet_internal.row_scope('jobs')));
ALTER TABLE fleet.job_devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.job_devices FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.job_devices FOR SELECT
    USING (job_id = ANY (fleet_internal.row_scope('jobs')));
ALTER TABLE fleet.job_device_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.job_device_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.job_device_attempts FOR SELECT
    USING (job_id = ANY (fleet_internal.row_scope('jobs')));
ALTER TABLE fleet.command_windows ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.command_windows FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.command_windows FOR SELECT
    USING (job_id = ANY (fleet_internal.row_scope('jobs')));
ALTER TABLE fleet.scheduled_job_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.scheduled_job_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet.scheduled_job_runs FOR SELECT
    USING (scheduled_job_id = ANY (fleet_internal.row_scope('scheduled_jobs')));
ALTER TABLE fleet_internal.job_engine_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_internal.job_engine_state FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet_internal.job_engine_state FOR SELECT
    USING (job_id = ANY (fleet_internal.row_scope('jobs')));
ALTER TABLE fleet_internal.job_dispatches ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_internal.job_dispatches FORCE ROW LEVEL SECURITY;
CREATE POLICY viewers_read ON fleet_internal.job_dispatches FOR SELECT
    USING (job_id = ANY (fleet_internal.row_scope('jobs')));

-- shared application-wide: every role reads templates and manifests
ALTER TABLE fleet.device_templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.device_templates FORCE ROW LEVEL SECURITY;
CREATE POLICY everyone_reads ON fleet.device_templates FOR SELECT USING (true);
ALTER TABLE fleet.template_contents ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.template_contents FORCE ROW LEVEL SECURITY;
CREATE POLICY everyone_reads ON fleet.template_contents FOR SELECT USING (true);
ALTER TABLE fleet.edge_manifests ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.edge_manifests FORCE ROW LEVEL SECURITY;
CREATE POLICY everyone_reads ON fleet.edge_manifests FOR SELECT USING (true);

-- enrollment group keys derive every device's key: administrators of the
-- group's organization only (root's groups: root's administrators)
ALTER TABLE fleet.enrollment_groups ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.enrollment_groups FORCE ROW LEVEL SECURITY;
CREATE POLICY administrators_read ON fleet.enrollment_groups FOR SELECT
    USING (organization_id = ANY (fleet_internal.row_scope('administered_organizations')));

-- and their certificates, to the same administrators
ALTER TABLE fleet.enrollment_group_certificates ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.enrollment_group_certificates FORCE ROW LEVEL SECURITY;
CREATE POLICY administrators_read ON fleet.enrollment_group_certificates FOR SELECT
    USING (enrollment_group_id = ANY (fleet_internal.row_scope('enrollment_groups')));

-- the MQTT endpoint's refusals name clients of every organization: for
-- monitoring roles (granted below)
ALTER TABLE fleet.endpoint_refusals ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.endpoint_refusals FORCE ROW LEVEL SECURITY;
CREATE POLICY monitors_read ON fleet.endpoint_refusals FOR SELECT USING (true);

-- each role's own device list columns
ALTER TABLE fleet.job_device_list_columns ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.job_device_list_columns FORCE ROW LEVEL SECURITY;
CREATE POLICY own_columns ON fleet.job_device_list_columns FOR SELECT
    USING (role_name = current_user);

-- ---------------------------------------------------------------------
-- Privileges.  Revoked first, then granted, so that an update from a
-- version that granted more takes back what this one does not grant.

REVOKE ALL ON ALL TABLES IN SCHEMA fleet FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA fleet FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA fleet_internal FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA fleet_internal FROM PUBLIC;
GRANT USAGE ON SCHEMA fleet TO PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA fleet TO PUBLIC;
-- COPY writes into the import view; its triggers do the rest (SECURITY DEFINER)
GRANT INSERT ON fleet.device_import TO PUBLIC;
GRANT INSERT ON fleet.device_import_with_keys TO PUBLIC;
-- the engine's health counts every organization's jobs
REVOKE SELECT ON fleet.engine_status FROM PUBLIC;
GRANT SELECT ON fleet.engine_status TO pg_monitor;
REVOKE SELECT ON fleet.endpoint_refusals FROM PUBLIC;
GRANT SELECT ON fleet.endpoint_refusals TO pg_monitor;

-- The internals: PUBLIC may use what the API's invoker functions, views
-- and policies call with the caller's rights, nothing else: lookups that
-- see what the caller sees and refuse what it does not, the schedule
-- calendar and the spreadsheet-safe cell (pure functions), and the retry
-- state of jobs the caller sees.  None of them writes.
GRANT USAGE ON SCHEMA fleet_internal TO PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA fleet_internal FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_internal.sees(name, text), fleet_internal.visible_organizations(name),
      fleet_internal.visible_job(text), fleet_internal.visible_scheduled_job(text, name),
      fleet_internal.calling_role(), fleet_internal.role_sees_everything(name),
      fleet_internal.app_role_rank(text), fleet_internal.organizations_for(text, name),
      fleet_internal.require_job(text), fleet_internal.require_device_group(text, name),
      fleet_internal.require_time_zone(text), fleet_internal.parse_schedule(jsonb),
      fleet_internal.schedule_occurrences(fleet_internal.schedule, timestamptz, int),
      fleet_internal.spreadsheet_cell(text, boolean), fleet_internal.refuse_missing(text, text, text),
      fleet_internal.require_template(text), fleet_internal.require_organization(text, name),
      fleet_internal.visible_device(text, name), fleet_internal.require_edge_manifest(text),
      fleet_internal.device_enrollment_group(text),
      -- what get_*() add as IoT Central's REST API shows objects (pure)
      fleet_internal.etag(jsonb), fleet_internal.rest_timestamp(timestamptz),
      fleet_internal.scheduled_job_etag(fleet.scheduled_jobs), fleet_internal.device_group_etag(fleet.device_groups),
      -- what the device lists and the results log read of answers (pure)
      fleet_internal.failure_type(text), fleet_internal.reported_progress(jsonb),
      -- the time of a statement (the clock)
      fleet_internal.moment(timestamptz), fleet_internal.transaction_moment(timestamptz),
      -- what device group filters match (pure)
      fleet_internal.device_document_of(text, text, text, text, boolean, text, timestamptz, boolean, text, jsonb, jsonb, jsonb),
      -- what every policy compares with: the caller's own ids
      fleet_internal.row_scope(text), fleet_internal.row_scope_ids(text)
   TO PUBLIC;
GRANT SELECT ON fleet_internal.job_engine_state TO PUBLIC;
-- what fleet.engine_status calls, for its readers
GRANT EXECUTE ON FUNCTION fleet_internal.engine_activity(), fleet_internal.import_failures_pending() TO pg_monitor;

-- API functions that only the engine or a superuser has reason to call
REVOKE EXECUTE ON FUNCTION fleet.compute_device_key(text, text) FROM PUBLIC;
