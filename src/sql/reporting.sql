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
           coalesce(a.attempts, 0) AS retried_attempts
      FROM fleet.jobs j
      -- (grouped joins, not LATERAL or a correlated subquery: Citus runs
      -- neither from a reference table into a distributed one; a filter on
      -- the job id still reaches the indexes through the joins)
      LEFT JOIN (SELECT jd.job_id, count(*) AS total,
                        count(*) FILTER (WHERE jd.status = 'pending') AS pending,
                        count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                        count(*) FILTER (WHERE jd.status = 'failed') AS failed
                   FROM fleet.job_devices jd GROUP BY jd.job_id) p ON p.job_id = j.id
      LEFT JOIN (SELECT r.job_id, count(*) AS attempts
                   FROM fleet.job_device_attempts r GROUP BY r.job_id) a ON a.job_id = j.id
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
      -- (a grouped join, not LATERAL: see job_overview)
      LEFT JOIN (SELECT jd.job_id, jd.batch,
                        count(*) FILTER (WHERE jd.status = 'pending') AS pending,
                        count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                        count(*) FILTER (WHERE jd.status = 'failed') AS failed,
                        count(*) FILTER (WHERE jd.status = 'failed'
                                           AND fleet_internal.failure_type(jd.error) = 'REJECTED') AS rejected,
                        count(*) FILTER (WHERE jd.status = 'failed' AND jd.error = 'timed out') AS timed_out
                   FROM fleet.job_devices jd
                  GROUP BY jd.job_id, jd.batch) p ON p.job_id = b.job_id AND p.batch = b.batch
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
