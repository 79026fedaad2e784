\set SHOW_CONTEXT never
-- Each job type's effect on the devices, batches, deleted devices, and the
-- results log.  The engine runs in this database (fleet.database_name);
-- fleet.wait_for_job() waits for it with a timeout, never a bare sleep.
\set env_sensor `cat test/data/iotc_env_sensor.json`
SELECT fleet.import_template(:'env_sensor') IS NOT NULL AS imported;
SELECT fleet.create_organization('plant', 'Plant') ->> 'id';
-- ten sensors, one thermostat (another template), one edge gateway
INSERT INTO fleet.device_import SELECT 'sensor-' || lpad(i::text, 2, '0'), 'Sensor ' || i FROM generate_series(1, 10) i;
UPDATE fleet.devices SET template_id = 'dtmi:contoso:EnvSensor;1', organization_id = 'plant' WHERE id LIKE 'sensor-%';
SELECT fleet.create_device('plant-thermostat', template => 'dtmi:com:example:Thermostat;1', organization => 'plant') ->> 'id';
SELECT fleet.create_device('plant-gateway', template => 'dtmi:contoso:EnvSensor;1', organization => 'plant', edge => true) ->> 'id';
SELECT fleet.create_device_group('plant-all', 'Everything in the plant', organization => 'plant') ->> 'id';
SELECT fleet.create_device_group('plant-sensors', 'Plant sensors', 'dtmi:contoso:EnvSensor;1', organization => 'plant') ->> 'id';

CREATE FUNCTION pg_temp.summary(job_id text) RETURNS TABLE (status text, total int, pending int, completed int, failed int)
LANGUAGE sql AS $$
    SELECT j ->> 'status', (j #>> '{progress,total}')::int, (j #>> '{progress,pending}')::int,
           (j #>> '{progress,completed}')::int, (j #>> '{progress,failed}')::int
      FROM fleet.get_job(job_id) j
$$;
CREATE FUNCTION pg_temp.batches(job_id text) RETURNS TABLE (batch int, size bigint, status text, completed bigint, failed bigint)
LANGUAGE sql AS $$
    SELECT b.batch, b.size, b.status, b.completed, b.failed FROM fleet.job_batches b WHERE b.job_id = $1 ORDER BY b.batch
$$;

-- a property job over every device of the plant, batches of 4 (4, 4, 4):
-- the thermostat lacks the properties and fails, the rest get both values,
-- one at the root, one in a component
SELECT fleet.create_job('{
  "id": "set-interval", "displayName": "Set interval", "group": "plant-all",
  "batch": {"type": "number", "value": 4},
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 120},
           {"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "indoor/targetTemperature", "value": 19.5}]
}') ->> 'status' AS status;
SELECT fleet.wait_for_job('set-interval');
SELECT * FROM pg_temp.summary('set-interval');
SELECT * FROM pg_temp.batches('set-interval');
SELECT id, properties FROM fleet.devices WHERE organization_id = 'plant' ORDER BY id LIMIT 3;
SELECT device_id, batch, status, error FROM fleet.job_results('set-interval') WHERE status <> 'completed';
-- a second property job keeps what the first set
SELECT fleet.create_job('{"id": "set-mode", "displayName": "Set mode", "group": "plant-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "indoor/targetTemperature", "value": 21},
           {"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "mode", "value": "eco"}]}') IS NOT NULL AS created;
SELECT fleet.wait_for_job('set-mode');
SELECT properties FROM fleet.devices WHERE id = 'sensor-01';

-- batches by percentage with an uneven remainder: 11 devices at 30 % are
-- batches of ceil(3.3) = 4: 4, 4, 3
SELECT fleet.create_job('{"id": "cloud-level", "displayName": "Service level", "group": "plant-sensors",
  "batch": {"type": "percentage", "value": 30},
  "data": [{"type": "cloudProperty", "target": "dtmi:contoso:EnvSensor;1", "path": "serviceLevel", "value": 99.5}]}') IS NOT NULL AS created;
SELECT fleet.wait_for_job('cloud-level');
SELECT * FROM pg_temp.summary('cloud-level');
SELECT * FROM pg_temp.batches('cloud-level');
SELECT DISTINCT cloud_properties FROM fleet.devices WHERE template_id = 'dtmi:contoso:EnvSensor;1';

-- a manifest job: only IoT Edge devices take it
SELECT fleet.create_edge_manifest('plant-edge', 'Plant edge', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "$edgeHub": {"properties.desired": {}}}}') ->> 'id';
SELECT fleet.create_job('{"id": "edge-manifest", "displayName": "Edge manifest", "group": "plant-all",
  "data": [{"type": "deviceManifestMigration", "manifest": "plant-edge"}]}') IS NOT NULL AS created;
SELECT fleet.wait_for_job('edge-manifest');
SELECT * FROM pg_temp.summary('edge-manifest');
SELECT id, manifest_id FROM fleet.devices WHERE manifest_id IS NOT NULL;
SELECT DISTINCT error FROM fleet.job_results('edge-manifest') WHERE status = 'failed';

-- a device deleted after the job started fails as deleted, and the results
-- log names it "deleted"; a template migration moves the others
SELECT fleet.import_template(jsonb_set(:'env_sensor'::jsonb, '{0,@id}', '"dtmi:contoso:EnvSensor;2"')) ->> 'id' AS new_version;
SELECT fleet.save_job('{"id": "migrate", "displayName": "Migrate", "group": "plant-sensors",
  "batch": {"type": "number", "value": 5},
  "data": [{"type": "deviceTemplateMigration", "template": "dtmi:contoso:EnvSensor;2"}]}') ->> 'status' AS status;
SELECT fleet.run_job('migrate') ->> 'status' AS status;
SELECT fleet.wait_for_job('migrate');
SELECT template_id, count(*) FROM fleet.devices WHERE organization_id = 'plant' GROUP BY 1 ORDER BY 1;
SELECT fleet.delete_device('sensor-10');
SELECT job, device_id, device_name, batch, status FROM fleet.job_results('migrate') WHERE device_id IN ('sensor-09', 'sensor-10');

-- a group without devices: the job completes at once
SELECT fleet.create_device_group('nobody', 'Nobody', 'dtmi:com:example:Thermostat;1', '$.displayName == "no one"') ->> 'id';
SELECT fleet.create_job('{"id": "empty", "displayName": "Empty", "group": "nobody",
  "data": [{"type": "deviceTemplateMigration", "template": "dtmi:contoso:EnvSensor;2"}]}') IS NOT NULL AS created;
SELECT fleet.wait_for_job('empty');
SELECT * FROM pg_temp.summary('empty');

-- the results log, as COPY writes it
\copy (SELECT job, device_id, device_name, batch, status, error FROM fleet.job_results('set-interval')) TO STDOUT WITH (FORMAT csv, HEADER)
SELECT fleet.job_results('no-such-job');

-- the last 30 days
SELECT id, job_type, status, total, pending, completed, failed FROM fleet.recent_jobs ORDER BY created_at, id;
