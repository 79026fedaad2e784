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
GRANT EXECUTE ON FUNCTION fleet_internal.engine_activity(), fleet_internal.engine_cron_state(),
                          fleet_internal.import_failures_pending() TO pg_monitor;

-- API functions that only the engine or a superuser has reason to call
REVOKE EXECUTE ON FUNCTION fleet.compute_device_key(text, text) FROM PUBLIC;
