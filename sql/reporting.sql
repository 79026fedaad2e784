\set SHOW_CONTEXT never
-- The reporting views: their shape is API (names, columns, types), every
-- view and column is described, and their figures match the jobs API.

-- the columns and types, in order
SELECT c.table_name, string_agg(c.column_name || ' ' || c.data_type, ', ' ORDER BY c.ordinal_position) AS columns
  FROM information_schema.columns c
 WHERE c.table_schema = 'fleet'
   AND c.table_name IN ('job_overview', 'job_batch_progress', 'job_device_outcomes', 'device_inventory')
 GROUP BY c.table_name ORDER BY c.table_name;

-- every view and every column has a description, and the views run with
-- the reader's rights
SELECT c.relname, a.attname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
 WHERE n.nspname = 'fleet'
   AND c.relname IN ('job_overview', 'job_batch_progress', 'job_device_outcomes', 'device_inventory')
   AND (obj_description(c.oid, 'pg_class') IS NULL OR col_description(c.oid, a.attnum) IS NULL);
SELECT relname, reloptions FROM pg_class
 WHERE relname IN ('job_overview', 'job_batch_progress', 'job_device_outcomes', 'device_inventory') ORDER BY 1;

-- a dashboard's job table, for the jobs of jobs_run
SELECT job_id, job_type, organization_id, status, total_devices, pending_devices, completed_devices,
       failed_devices, success_rate, wait_seconds >= 0 AS waited, run_seconds >= 0 AS ran
  FROM fleet.job_overview
 WHERE job_id IN ('set-interval', 'cloud-level', 'edge-manifest')
 ORDER BY job_id;
-- the same totals as fleet.get_job()
SELECT bool_and(o.total_devices = (g #>> '{progress,total}')::bigint
                AND o.completed_devices = (g #>> '{progress,completed}')::bigint
                AND o.failed_devices = (g #>> '{progress,failed}')::bigint
                AND o.pending_devices = (g #>> '{progress,pending}')::bigint) AS same_as_get_job
  FROM fleet.job_overview o, fleet.get_job(o.job_id) g;
-- a saved job has no devices and no success rate yet
SELECT fleet.save_job('{"id": "report-saved", "displayName": "Saved", "group": "plant-sensors",
  "data": [{"type": "cloudProperty", "target": "dtmi:contoso:EnvSensor;1", "path": "serviceLevel", "value": 1}]}') IS NOT NULL AS saved;
SELECT status, total_devices, success_rate, wait_seconds, run_seconds FROM fleet.job_overview WHERE job_id = 'report-saved';

-- batch progress: uneven batches of 4, 4, 3
SELECT batch, status, devices, pending_devices, completed_devices, failed_devices, percent_done
  FROM fleet.job_batch_progress WHERE job_id = 'cloud-level' ORDER BY batch;

-- per-device outcomes with device and template names
SELECT device_id, device_name, template_name, batch, status, error, duration_seconds >= 0 AS timed
  FROM fleet.job_device_outcomes WHERE job_id = 'set-interval' AND (status <> 'completed' OR device_id = 'sensor-01')
 ORDER BY device_id;
-- a device deleted since shows as deleted
SELECT job_id, device_id, device_name, device_deleted, template_id FROM fleet.job_device_outcomes
 WHERE device_deleted ORDER BY job_id, device_id LIMIT 3;

-- inventory by template, organization, edge and simulated
SELECT template_id, template_name, organization_id, organization_name, edge, simulated, devices
  FROM fleet.device_inventory ORDER BY organization_id, template_id NULLS FIRST, edge, simulated;
SELECT sum(devices) = (SELECT count(*) FROM fleet.devices) AS every_device_counted FROM fleet.device_inventory;

-- the results log, spreadsheet-safe: a device name that is a formula is
-- quoted in the log, not in the registry
SELECT fleet.create_device('formula-sensor', '=1+2', template => 'dtmi:contoso:EnvSensor;1', organization => 'plant') ->> 'id';
SELECT fleet.create_job('{"id": "report-formula", "displayName": "Formula", "group": "plant-sensors",
  "data": [{"type": "cloudProperty", "target": "dtmi:contoso:EnvSensor;1", "path": "serviceLevel", "value": 2}]}') IS NOT NULL AS created;
SELECT fleet.wait_for_job('report-formula');
SELECT device_id, device_name, status FROM fleet.job_results('report-formula', spreadsheet_safe => true)
 WHERE device_id = 'formula-sensor';
SELECT device_name FROM fleet.job_results('report-formula') WHERE device_id = 'formula-sensor';
