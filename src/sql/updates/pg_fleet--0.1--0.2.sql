-- pg_fleet 0.1 to 0.2: the changes to what holds data, and the code that
-- went away, moved to fleet_internal, or changed its signature.  The code
-- itself is reloaded after this by the update script (tools/build-sql.sh),
-- and every policy was dropped before it, to be made again.

-- Internals live apart from the API.
CREATE SCHEMA fleet_internal;
COMMENT ON SCHEMA fleet_internal IS 'pg_fleet''s internals: the engine, triggers and helpers; not an API';

-- Triggers whose functions moved or went (members no longer write tables,
-- so the guards on what they wrote go; the others come back, reloaded).
DROP TRIGGER set_path ON fleet.organizations;
DROP TRIGGER pin_identity ON fleet.scheduled_jobs;
DROP TRIGGER guard_engine_state ON fleet.jobs;
DROP TRIGGER delete_job_rows ON fleet.jobs;
DROP TRIGGER refuse_delete_in_use ON fleet.device_templates;
DROP TRIGGER refuse_delete_in_use ON fleet.organizations;
DROP TRIGGER refuse_delete_in_use ON fleet.edge_manifests;
DROP TRIGGER keep_restored_keys ON fleet.enrollment_groups;
DROP TRIGGER check_target ON fleet.device_import;
DROP TRIGGER stage_row ON fleet.device_import;
DROP TRIGGER finish ON fleet.device_import;

-- Functions that went, moved, or changed their arguments.
DROP FUNCTION fleet.organizations_set_path();
DROP FUNCTION fleet.scheduled_jobs_pin_identity();
DROP FUNCTION fleet.jobs_guard_engine_state();
DROP FUNCTION fleet.delete_job_rows();
DROP FUNCTION fleet.is_root_administrator();
DROP FUNCTION fleet.refuse_delete_in_use();
DROP FUNCTION fleet.enrollment_groups_keep_restored_keys();
DROP FUNCTION fleet.require_organization(text);
DROP FUNCTION fleet.require_device_group(text);
DROP FUNCTION fleet.device_import_begin();
DROP FUNCTION fleet.device_import_stage_row();
DROP FUNCTION fleet.device_import_staged_rows();
DROP FUNCTION fleet.device_import_staged_count();
DROP FUNCTION fleet.device_import_register(bigint, text, text);
DROP FUNCTION fleet.device_import_release();
DROP FUNCTION fleet.device_import_target();
DROP FUNCTION fleet.device_import_check_target();
DROP FUNCTION fleet.device_import_finish();
DROP FUNCTION fleet.job_from_definition(jsonb);
DROP FUNCTION fleet.lock_job(text, text[], text);
DROP FUNCTION fleet.engine_step();
DROP FUNCTION fleet.engine_start_job(fleet.jobs);
DROP FUNCTION fleet.engine_advance_job(text);
DROP FUNCTION fleet.engine_apply_chunk(fleet.jobs, fleet.job_batches, int);
DROP FUNCTION fleet.engine_open_window(fleet.jobs, fleet.job_batches, bigint);
DROP FUNCTION fleet.engine_close_windows(fleet.jobs, fleet.job_batches);
DROP FUNCTION fleet.engine_fail_unfit(text, text[], text);
DROP FUNCTION fleet.engine_finish_job(fleet.jobs, text);
DROP FUNCTION fleet.engine_give_up(text, text);
DROP FUNCTION fleet.engine_device_problem(fleet.jobs);
DROP FUNCTION fleet.engine_set_clause(fleet.jobs);
DROP FUNCTION fleet.engine_check_schedules();
DROP FUNCTION fleet.threshold_exceeded(text, int, bigint, bigint);
DROP FUNCTION fleet.expire_commands();
DROP FUNCTION fleet.cron_apply(text, text, text, text);
DROP FUNCTION fleet.cron_database();
DROP FUNCTION fleet.schedule_cron_name(text);
DROP FUNCTION fleet.require_clock_time(timestamptz, text);
DROP FUNCTION fleet.schedule_advance(text, timestamptz);
DROP FUNCTION fleet.scheduled_job_parts(jsonb);
DROP FUNCTION fleet.require_future_occurrence(fleet.schedule, text);
DROP FUNCTION fleet.lock_scheduled_job(text);

-- API functions whose arguments were renamed (the object a function is
-- named for is its first argument, <kind>_id) or that now return the
-- object they made (jsonb): made again below.
DROP FUNCTION fleet.get_job(text);
DROP FUNCTION fleet.run_job(text);
DROP FUNCTION fleet.stop_job(text);
DROP FUNCTION fleet.resume_job(text);
DROP FUNCTION fleet.copy_job(text);
DROP FUNCTION fleet.rerun_job(text, text);
DROP FUNCTION fleet.wait_for_job(text, text[], interval);
DROP FUNCTION fleet.get_scheduled_job(text);
DROP FUNCTION fleet.update_scheduled_job(text, jsonb);
DROP FUNCTION fleet.enable_scheduled_job(text);
DROP FUNCTION fleet.disable_scheduled_job(text);
DROP FUNCTION fleet.delete_scheduled_job(text);
DROP FUNCTION fleet.fire_scheduled_job(text, timestamptz);
DROP FUNCTION fleet.create_device(text, text, text, text, boolean, boolean);
DROP FUNCTION fleet.delete_device(text);
DROP FUNCTION fleet.create_device_group(text, text, text, jsonpath, text);
DROP FUNCTION fleet.create_edge_manifest(text, text, jsonb);
DROP FUNCTION fleet.create_organization(text, text, text);
DROP FUNCTION fleet.grant_organization(text, regrole, text);
DROP FUNCTION fleet.revoke_organization(text, regrole);
DROP FUNCTION fleet.import_template(jsonb);

-- Internals that stay, moved out of the API schema (what depends on them,
-- such as the devices table's CHECK, follows them).
ALTER FUNCTION fleet.app_role_rank(text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.calling_role() SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.check_new_object(text, text, text, integer) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.device_identity_problem(text, text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.dtdl_check_name(jsonb, text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.dtdl_interface_contents(jsonb, text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.dtdl_is_dtmi(text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.dtdl_schema(jsonb, text, jsonb) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.dtdl_text(jsonb, text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.dtdl_types(jsonb, text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.engine_pid() SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.free_job_id(text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.generate_group_key() SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.job_capability(text, text, text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.organizations_for(text, name) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.parse_schedule(jsonb) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.require_app_role(text, text, text, name) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.require_job(text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.require_template(text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.require_time_zone(text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.role_sees_everything(name) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.schedule_json(fleet.schedule) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.schedule_occurrences(fleet.schedule, timestamptz, integer) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.schema_value_problem(jsonb, jsonb, numeric, numeric, text) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.spreadsheet_cell(text, boolean) SET SCHEMA fleet_internal;
ALTER FUNCTION fleet.wake_engine() SET SCHEMA fleet_internal;
ALTER TYPE fleet.schedule SET SCHEMA fleet_internal;
ALTER TYPE fleet.scheduled_job_parts SET SCHEMA fleet_internal;
ALTER SEQUENCE fleet.delivery_blocks SET SCHEMA fleet_internal;

-- Jobs: deleted ones are purged by the engine; a rerun outlives its source.
ALTER TABLE fleet.jobs ADD COLUMN deleted_at timestamptz;
ALTER TABLE fleet.jobs DROP CONSTRAINT jobs_rerun_of_fkey,
    ADD CONSTRAINT jobs_rerun_of_fkey FOREIGN KEY (rerun_of) REFERENCES fleet.jobs (id) ON DELETE SET NULL;
CREATE INDEX jobs_finished_idx ON fleet.jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_deleted_idx ON fleet.jobs (deleted_at) WHERE deleted_at IS NOT NULL;
ALTER TABLE fleet.job_devices SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_scale_factor = 0.05);

-- The engine's bookkeeping.
CREATE TABLE fleet_internal.job_engine_state (
    job_id          text PRIMARY KEY REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    action          text,
    step_started_at timestamptz,
    failures        int NOT NULL DEFAULT 0,
    last_error      text,
    last_error_at   timestamptz,
    next_retry_at   timestamptz,
    step_size       int,
    purged_through  text
);
COMMENT ON TABLE fleet_internal.job_engine_state IS 'The engine''s state of each job: consecutive failures, last error, next retry; a deleted job''s purge';
CREATE TABLE fleet_internal.engine_state (
    singleton           boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    analyze_wanted      boolean NOT NULL DEFAULT false,
    cron_version        bigint NOT NULL DEFAULT 1,
    cron_synced_version bigint NOT NULL DEFAULT 0,
    cron_reconciled_at  timestamptz,
    cron_error          text,
    cron_recheck_at     timestamptz
);
COMMENT ON TABLE fleet_internal.engine_state IS 'The engine''s pending chores: statistics to refresh, pg_cron entries to bring in line';
INSERT INTO fleet_internal.engine_state DEFAULT VALUES;

-- Scheduled jobs: the pg_cron entry's name is derived, not kept (a copy
-- restored under another name derives its own); a run is made with the
-- rights of the schedule's last changer; runs are purged, so the latest
-- occurrence and the count of runs are kept on the schedule.
ALTER TABLE fleet.scheduled_jobs DROP COLUMN cron_job_name,
    ADD COLUMN changed_by name,
    ADD COLUMN last_occurrence timestamptz,
    ADD COLUMN runs_started bigint NOT NULL DEFAULT 0,
    ADD COLUMN error text;
UPDATE fleet.scheduled_jobs s
   SET changed_by = s.created_by,
       last_occurrence = (SELECT max(r.occurrence) FROM fleet.scheduled_job_runs r WHERE r.scheduled_job_id = s.id),
       runs_started = (SELECT count(*) FROM fleet.scheduled_job_runs r
                        WHERE r.scheduled_job_id = s.id AND r.outcome = 'started');
ALTER TABLE fleet.scheduled_jobs ALTER COLUMN changed_by SET NOT NULL;

-- Enrollment groups: one pair per organization from now on.  Root keeps
-- IoT Central's two; organizations made by 0.1 keep deriving from them, so
-- no device's key changes with this update.
ALTER TABLE fleet.enrollment_groups DROP CONSTRAINT enrollment_groups_id_check,
    ADD COLUMN organization_id text NOT NULL DEFAULT 'root' REFERENCES fleet.organizations (id) ON DELETE CASCADE,
    ADD COLUMN edge boolean NOT NULL DEFAULT false;
UPDATE fleet.enrollment_groups SET edge = (id = 'SAS-IoT-Edge-Devices');
ALTER TABLE fleet.enrollment_groups ADD CONSTRAINT enrollment_groups_one_per_kind UNIQUE (organization_id, edge);
COMMENT ON TABLE fleet.enrollment_groups IS 'The SAS enrollment groups: root''s SAS-IoT-Devices and SAS-IoT-Edge-Devices, and a pair per organization created since 0.2; a device''s keys derive from the nearest pair up its organization''s path';

-- Device operations: why a failed import failed.
ALTER TABLE fleet.device_operations ADD COLUMN error text;
