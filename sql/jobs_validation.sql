\set SHOW_CONTEXT never
-- Jobs are validated at creation: a job that can never succeed is refused,
-- naming the value and what to do.
\set env_sensor `cat test/data/iotc_env_sensor.json`
SELECT fleet.import_template(:'env_sensor') ->> 'id';
SELECT fleet.create_edge_manifest('edge-v2', 'Edge v2', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "$edgeHub": {"properties.desired": {}}}}') ->> 'id';
SELECT fleet.create_organization('validation-org', 'Validation') ->> 'id';
SELECT fleet.create_device_group('sensors', 'Sensors', 'dtmi:contoso:EnvSensor;1') ->> 'id';

CREATE FUNCTION pg_temp.job(data jsonb, extra jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('displayName', 'Validation', 'group', 'sensors', 'data', data) || extra
$$;
CREATE FUNCTION pg_temp.prop(path text, value jsonb, type text DEFAULT 'property') RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_array(jsonb_build_object('type', type, 'target', 'dtmi:contoso:EnvSensor;1',
                                                'path', path, 'value', value))
$$;

-- accepted: saved, not run
SELECT fleet.save_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"id": "valid-1"}')) ->> 'status' AS status;
SELECT fleet.save_job(pg_temp.job(pg_temp.prop('indoor/targetTemperature', '21.5'), '{"id": "valid-2"}')) ->> 'status' AS status;
SELECT fleet.save_job(pg_temp.job(pg_temp.prop('serviceLevel', '42', 'cloudProperty'), '{"id": "valid-3"}')) ->> 'status' AS status;
SELECT fleet.save_job(pg_temp.job('[{"type": "command", "target": "dtmi:contoso:EnvSensor;1", "path": "calibrate", "value": [1.5, 2]}]', '{"id": "valid-4"}')) ->> 'status' AS status;
SELECT fleet.save_job(pg_temp.job('[{"type": "command", "target": "dtmi:contoso:EnvSensor;1", "path": "indoor/getMaxMinReport", "value": "2027-01-01T00:00:00Z"}]', '{"id": "valid-5"}')) ->> 'status' AS status;
SELECT fleet.save_job(pg_temp.job('[{"type": "deviceTemplateMigration", "template": "dtmi:com:example:Thermostat;1"}]', '{"id": "valid-6"}')) ->> 'status' AS status;
SELECT fleet.save_job(pg_temp.job('[{"type": "deviceManifestMigration", "manifest": "edge-v2"}]', '{"id": "valid-7"}')) ->> 'status' AS status;
SELECT fleet.save_job(pg_temp.job(pg_temp.prop('mode', '"eco"') || pg_temp.prop('thresholds', '{"low": 1, "high": 2}')
                                  || pg_temp.prop('labels', '{"a": "b"}'), '{"id": "valid-8"}')) ->> 'status' AS status;
SELECT fleet.save_job(pg_temp.job(pg_temp.prop('reportInterval', '5'),
    '{"id": "valid-9", "batch": {"type": "percentage", "value": 100}, "cancellationThreshold": {"type": "number", "value": 1, "batch": true}}')) ->> 'status' AS status;
-- no id: one is made up
SELECT fleet.save_job(pg_temp.job(pg_temp.prop('reportInterval', '60'))) ->> 'id' ~ '^job-[0-9a-f]{32}$' AS generated_id;

-- refusals: the definition
SELECT fleet.create_job(NULL);
SELECT fleet.create_job('[]');
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"id": "valid-1"}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"id": "has space"}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), jsonb_build_object('id', repeat('x', 256))));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"displayName": ""}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"group": "no-such-group"}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"organizations": ["nowhere"]}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"organizations": ["validation-org"]}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"organizations": "root"}'));
-- delivery options
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"batch": {"type": "percentage", "value": 0}}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"batch": {"type": "percentage", "value": 101}}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"batch": {"type": "number", "value": 0}}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"batch": {"type": "devices", "value": 5}}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"batch": {"type": "number", "value": 2.5}}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"cancellationThreshold": {"type": "percentage", "value": 0}}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"cancellationThreshold": {"type": "percentage", "value": 150}}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"cancellationThreshold": {"type": "number", "value": 0}}'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60'), '{"cancellationThreshold": {"type": "number", "value": 1, "batch": "yes"}}'));
-- data
SELECT fleet.create_job(pg_temp.job('[]'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60') || '[{"type": "command", "target": "dtmi:contoso:EnvSensor;1", "path": "reboot", "value": 1}]'));
SELECT fleet.create_job(pg_temp.job('[{"type": "firmware", "target": "dtmi:contoso:EnvSensor;1", "path": "x", "value": 1}]'));
SELECT fleet.create_job(pg_temp.job('[{"type": "property", "target": "dtmi:no:Such;1", "path": "x", "value": 1}]'));
SELECT fleet.create_job(pg_temp.job('[{"type": "property", "path": "reportInterval", "value": 1}]'));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('noSuchProperty', '1')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('nowhere/reportInterval', '1')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('firmwareVersion', '"2.0"')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('indoor/maxTempSinceLastReboot', '30')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('humidity', '30')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60', 'cloudProperty')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('customerName', '"Contoso"')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60') || pg_temp.prop('reportInterval', '61')));
-- values against the schema, with IoT Central's minValue/maxValue
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '"sixty"')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '60.5')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '4')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', '3601')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('serviceLevel', '99.95', 'cloudProperty')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('reportInterval', 'null')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('mode', '"turbo"')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('thresholds', '{"low": "cold"}')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('thresholds', '{"middle": 1}')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('labels', '{"a": 1}')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('indoor/targetTemperature', 'true')));
-- values a device twin could not hold: IoT Hub's 32 KB and 10 levels
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('indoor/targetTemperature', '[[[[[[[[[[[1]]]]]]]]]]]')));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('indoor/targetTemperature', to_jsonb(repeat('x', 40000)))));
SELECT fleet.create_job(pg_temp.job(pg_temp.prop('deviceInfo/assetTag', '42')));
-- commands and their request payloads
SELECT fleet.create_job(pg_temp.job('[{"type": "command", "target": "dtmi:contoso:EnvSensor;1", "path": "selfDestruct"}]'));
SELECT fleet.create_job(pg_temp.job('[{"type": "command", "target": "dtmi:contoso:EnvSensor;1", "path": "reboot", "value": "soon"}]'));
SELECT fleet.create_job(pg_temp.job('[{"type": "command", "target": "dtmi:contoso:EnvSensor;1", "path": "calibrate", "value": [1, "x"]}]'));
SELECT fleet.create_job(pg_temp.job('[{"type": "command", "target": "dtmi:contoso:EnvSensor;1", "path": "indoor/getMaxMinReport", "value": "yesterday"}]'));
SELECT fleet.create_job(pg_temp.job('[{"type": "command", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 1}]'));
-- migrations
SELECT fleet.create_job(pg_temp.job('[{"type": "deviceTemplateMigration", "template": "dtmi:no:Such;1"}]'));
SELECT fleet.create_job(pg_temp.job('[{"type": "deviceTemplateMigration"}]'));
SELECT fleet.create_job(pg_temp.job('[{"type": "deviceManifestMigration", "manifest": "no-such-manifest"}]'));

-- nothing refused was stored
SELECT id, status, job_type FROM fleet.jobs WHERE id LIKE 'valid-%' ORDER BY id;
SELECT count(*) FROM fleet.jobs;
DELETE FROM fleet.jobs;
