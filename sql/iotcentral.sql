\set SHOW_CONTEXT never
-- IoT Central's own bodies, as its REST API takes and returns them, taken
-- unedited (the fixtures are written here in the shapes of the REST
-- examples; ids the REST API takes from the URL are arguments).

-- Device templates: the wrapped form (PUT /deviceTemplates/{id}), no
-- @context, inline "extends" and component, a schema naming one declared
-- after it
\set cold_store `cat test/data/iotc_rest_template.json`
SELECT t - 'capabilityModel' - 'etag' AS template
  FROM fleet.import_template(:'cold_store', 'dtmi:modelDefinition:coldStore') t;
-- the template is its own id; its inline interfaces are interfaces too
SELECT id, display_name FROM fleet.device_templates WHERE id LIKE '%coldStore%' ORDER BY id;
SELECT component, name, capability, schema FROM fleet.template_capabilities
 WHERE template_id = 'dtmi:modelDefinition:coldStore' ORDER BY component NULLS FIRST, name;
-- what GET returns is what was put, with its id and an etag
SELECT fleet.get_template('dtmi:modelDefinition:coldStore') -> 'capabilityModel' = (:'cold_store'::jsonb -> 'capabilityModel') AS same_model,
       fleet.get_template('dtmi:modelDefinition:coldStore') ->> 'etag' ~ '^"[0-9a-f]{20}"$' AS has_etag;
-- importing it again is harmless; changing it under the same id is not
SELECT fleet.import_template(:'cold_store', 'dtmi:modelDefinition:coldStore') ->> '@id' AS again;
SELECT fleet.import_template(jsonb_set(:'cold_store', '{displayName}', '"Changed"'), 'dtmi:modelDefinition:coldStore');
-- the id comes from the body's "@id" when not passed
SELECT fleet.import_template(jsonb_set(:'cold_store', '{@id}', '"urn:fleetTest:modelDefinition:copy"')) ->> '@id' AS from_body;

-- extends: single and multiple, from this model or an imported one
SELECT fleet.import_template('[
  {"@id": "dtmi:fleetTest:ext:child;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
   "extends": ["dtmi:fleetTest:ext:a;1", "dtmi:fleetTest:ext:b;1"],
   "contents": [{"@type": "Property", "name": "own", "schema": "string", "writable": true}]},
  {"@id": "dtmi:fleetTest:ext:a;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
   "extends": "dtmi:fleetTest:coldStore:base;1",
   "contents": [{"@type": "Telemetry", "name": "fromA", "schema": "double"}]},
  {"@id": "dtmi:fleetTest:ext:b;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
   "contents": [{"@type": "Command", "name": "fromB"}]}]') ->> 'id' AS root;
SELECT name, capability FROM fleet.template_capabilities WHERE template_id = 'dtmi:fleetTest:ext:child;1' ORDER BY name;
-- refusals: a name declared twice through extends, an unknown or cyclic
-- extends, a template id with spaces, a cycle of schemas, a key IoT
-- Central's template does not have
SELECT fleet.import_template('{"@id": "dtmi:fleetTest:ext:clash;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
   "extends": "dtmi:fleetTest:ext:b;1", "contents": [{"@type": "Telemetry", "name": "fromB", "schema": "double"}]}');
SELECT fleet.import_template('{"@id": "dtmi:fleetTest:ext:orphan;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
   "extends": "dtmi:fleetTest:ext:nowhere;1"}');
SELECT fleet.import_template('[{"@id": "dtmi:fleetTest:ext:x;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2", "extends": "dtmi:fleetTest:ext:y;1"},
                               {"@id": "dtmi:fleetTest:ext:y;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2", "extends": "dtmi:fleetTest:ext:x;1"}]');
SELECT fleet.import_template(:'cold_store', 'has a space');
SELECT fleet.import_template('{"@id": "dtmi:fleetTest:cycle;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
   "schemas": [{"@id": "dtmi:fleetTest:cycle:a;1", "@type": "Array", "elementSchema": "dtmi:fleetTest:cycle:b;1"},
               {"@id": "dtmi:fleetTest:cycle:b;1", "@type": "Array", "elementSchema": "dtmi:fleetTest:cycle:a;1"}]}');
SELECT fleet.import_template(:'cold_store'::jsonb || '{"capabilityModell": {}}', 'dtmi:modelDefinition:typo');
SELECT fleet.import_template('{"@id": "dtmi:fleetTest:plain;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2"}', 'an-id');

-- Jobs (POST /jobs/{id}): a group of the template, and devices in it
SELECT fleet.create_device_group('cold-stores', 'Cold stores', 'dtmi:modelDefinition:coldStore') ->> 'id';
INSERT INTO fleet.device_import SELECT 'cold-' || i, 'Cold store ' || i FROM generate_series(1, 4) i;
UPDATE fleet.devices SET template_id = 'dtmi:modelDefinition:coldStore' WHERE id LIKE 'cold-%';
-- the REST API's model names for data types, component.property paths,
-- integers written as 25.0, and a body read back with its read-only keys
SELECT fleet.create_job(job_id => 'set-cold', definition => '{
  "displayName": "Set compressor target",
  "description": "Set the compressor target temperature",
  "group": "cold-stores",
  "batch": {"type": "percentage", "value": 50.0},
  "cancellationThreshold": {"type": "percentage", "value": 10, "batch": false},
  "data": [{"type": "PropertyJobData", "target": "dtmi:modelDefinition:coldStore", "path": "compressor.targetTemperature", "value": -18},
           {"type": "PropertyJobData", "target": "dtmi:modelDefinition:coldStore", "path": "reportInterval", "value": 25.0}]
}') ->> 'id';
SELECT fleet.wait_for_job('set-cold');
SELECT j - 'start' - 'end' AS job, j ->> 'start' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$' AS start_in_utc
  FROM fleet.get_job('set-cold') j;
SELECT fleet.get_job_devices('set-cold');
SELECT id, properties -> 'reportInterval' AS report_interval, properties #> '{compressor,targetTemperature}' AS target
  FROM fleet.devices WHERE id LIKE 'cold-%' ORDER BY id;
-- what GET /jobs/{id} returned can be sent again as a new job
SELECT fleet.save_job(fleet.get_job('set-cold') - 'id', 'set-cold-again') ->> 'status' AS status;
-- a rerun keeps the job's name
UPDATE fleet.job_devices SET status = 'failed', error = 'test' WHERE job_id = 'set-cold' AND device_id = 'cold-1';
SELECT j ->> 'displayName' AS display_name, j ->> 'rerunOf' AS rerun_of FROM fleet.rerun_job('set-cold', 'set-cold-rerun') j;
SELECT fleet.wait_for_job('set-cold-rerun');
-- commands as IoT Central sends them ("value": null), component commands
SELECT fleet.save_job('{"displayName": "Restart compressors", "group": "cold-stores",
  "data": [{"type": "CommandJobData", "target": "dtmi:modelDefinition:coldStore", "path": "compressor.restart", "value": null}]}',
  'restart') ->> 'status' AS status;

-- refusals: a misspelled key is never dropped (the closest key is named)
SELECT fleet.create_job('{"displayName": "Typo", "group": "cold-stores",
  "cancelationThreshold": {"type": "percentage", "value": 10},
  "data": [{"type": "property", "target": "dtmi:modelDefinition:coldStore", "path": "reportInterval", "value": 5}]}');
SELECT fleet.create_job('{"displayName": "Typo", "group": "cold-stores",
  "cancellationThreshold": {"type": "percentage", "value": 10, "batchs": true},
  "data": [{"type": "property", "target": "dtmi:modelDefinition:coldStore", "path": "reportInterval", "value": 5}]}');
SELECT fleet.create_job('{"displayName": "Typo", "group": "cold-stores", "batch": {"type": "number", "valeu": 5},
  "data": [{"type": "property", "target": "dtmi:modelDefinition:coldStore", "path": "reportInterval", "value": 5}]}');
SELECT fleet.create_job('{"displayName": "Typo", "group": "cold-stores",
  "data": [{"type": "property", "target": "dtmi:modelDefinition:coldStore", "paht": "reportInterval", "value": 5}]}');
SELECT fleet.create_job('{"displayName": "Unknown", "group": "cold-stores", "priority": 1,
  "data": [{"type": "property", "target": "dtmi:modelDefinition:coldStore", "path": "reportInterval", "value": 5}]}');
SELECT fleet.create_job('{"displayName": "Fraction", "group": "cold-stores",
  "data": [{"type": "property", "target": "dtmi:modelDefinition:coldStore", "path": "reportInterval", "value": 25.5}]}');
SELECT fleet.create_job('{"id": "other", "displayName": "Two ids", "group": "cold-stores",
  "data": [{"type": "property", "target": "dtmi:modelDefinition:coldStore", "path": "reportInterval", "value": 5}]}', 'mine');
SELECT fleet.create_job('{"displayName": "No such component", "group": "cold-stores",
  "data": [{"type": "property", "target": "dtmi:modelDefinition:coldStore", "path": "fan.speed", "value": 5}]}');

-- Scheduled jobs (PUT /scheduledJobs/{id}): a start with seconds, as the
-- REST examples have, runs at the next whole minute; monthly recurrence
SELECT s - 'etag' - 'createdBy' - 'changedBy' AS scheduled_job, s ->> 'etag' ~ '^"[0-9a-f]{20}"$' AS has_etag
  FROM fleet.create_scheduled_job('{
  "displayName": "Monthly defrost",
  "description": "",
  "group": "cold-stores",
  "data": [{"type": "command", "target": "dtmi:modelDefinition:coldStore", "path": "defrost", "value": 30}],
  "schedule": {"start": "2099-01-31T22:29:01Z", "recurrence": "monthly", "end": {"type": "occurrences", "occurrences": 4}},
  "enabled": true,
  "completed": false,
  "etag": "970070b9-0000-0800-0000-628d554b0000"
}', 'monthly-defrost') s;
-- the 31st runs on the last day of shorter months
SET timezone = 'UTC';
SELECT fleet.next_occurrences((fleet.get_scheduled_job('monthly-defrost') -> 'schedule'), '2099-01-01', 5);
-- If-Match: an update with the current etag is applied, a stale one refused
SELECT fleet.get_scheduled_job('monthly-defrost') ->> 'etag' AS etag \gset
SELECT fleet.update_scheduled_job('monthly-defrost', jsonb_build_object('etag', :'etag',
  'schedule', '{"start": "2099-02-01T06:00:00Z", "recurrence": "weekly"}'::jsonb)) -> 'schedule' AS schedule;
SELECT fleet.update_scheduled_job('monthly-defrost', jsonb_build_object('etag', :'etag', 'enabled', false));
SELECT fleet.update_scheduled_job('monthly-defrost', '{"shedule": {"start": "2099-02-01T06:00:00Z"}}');
SELECT fleet.delete_scheduled_job('monthly-defrost');

-- IoT Central's export file (six columns) through SQL: thumbprints are
-- imported, keys must be the ones the enrollment group gives each device
SELECT primary_key AS group_primary, secondary_key AS group_secondary
  FROM fleet.enrollment_groups WHERE id = 'SAS-IoT-Devices' \gset
INSERT INTO fleet.device_import_with_keys VALUES
  ('exported-1', 'Exported 1', fleet.compute_device_key(:'group_primary', 'exported-1'),
   fleet.compute_device_key(:'group_secondary', 'exported-1'), repeat('A1', 20), repeat('b2', 32)),
  ('exported-2', 'Exported 2', NULL, NULL, NULL, NULL),
  ('exported-3', 'Wrong key', 'bm90IHRoZSBncm91cCdzIGtleQ==', NULL, NULL, NULL),
  ('exported-4', 'Wrong secondary', NULL, fleet.compute_device_key(:'group_primary', 'exported-4'), NULL, NULL),
  ('exported-5', 'Bad thumbprint', NULL, NULL, 'not-hex', NULL),
  ('exported-6', '', '', '', '', '');
SELECT line, device_id, error FROM fleet.device_operation_errors
 WHERE operation_id = fleet.last_device_operation() ORDER BY line;
SELECT id, display_name, x509_thumbprint_primary, x509_thumbprint_secondary
  FROM fleet.devices WHERE id LIKE 'exported-%' ORDER BY id;

-- Device groups (PUT /deviceGroups/{id}) in IoT Central's query language
UPDATE fleet.devices SET simulated = (id = 'cold-4'),
       -- (text made into JSON: Citus runs no stable function such as
       -- jsonb_build_object() over a row's columns in an UPDATE)
       reported = ('{"compressor": {"load": ' || (substr(id, 6)::int * 10)::text || '}}')::jsonb
 WHERE id LIKE 'cold-%';
SELECT fleet.import_device_group('loaded-stores', '{
  "displayName": "Loaded cold stores",
  "description": "Compressors above 20 %",
  "filter": "SELECT * FROM devices WHERE $template = \"dtmi:modelDefinition:coldStore\" AND $provisioned = true AND $simulated = false AND compressor.load > 20",
  "organizations": ["root"]
}') - 'etag' AS device_group;
SELECT fleet.get_device_group_devices('loaded-stores');
SELECT fleet.count_device_group_members('loaded-stores');
-- every REST example's shape: one template; provisioned, simulated; OR; CONTAINS; single quotes
SELECT q, (fleet_internal.group_query_translate(q)).*
  FROM unnest(ARRAY[
    'SELECT * FROM devices WHERE $template = "dtmi:modelDefinition:coldStore"',
    'SELECT * FROM devices WHERE $template = "dtmi:modelDefinition:coldStore" AND $simulated = true',
    'SELECT * FROM devices WHERE $provisioned = true',
    'SELECT * FROM devices',
    'SELECT * FROM devices WHERE $id = ''cold-1'' OR $id == "cold-2" AND site != "Oslo"',
    'SELECT * FROM devices WHERE CONTAINS($displayName, "store 1") AND temperature <= -18.5']) q;
-- the filter comes back as it was sent; an update is If-Match on the etag
SELECT fleet.get_device_group('loaded-stores') ->> 'etag' AS etag \gset
SELECT fleet.update_device_group('loaded-stores', jsonb_build_object('etag', :'etag',
  'filter', 'SELECT * FROM devices WHERE $template = "dtmi:modelDefinition:coldStore" AND compressor.load >= 40')) ->> 'filter' AS filter;
SELECT fleet.count_device_group_members('loaded-stores');
SELECT fleet.update_device_group('loaded-stores', jsonb_build_object('etag', :'etag', 'description', 'stale'));
-- a jsonpath filter still works, through the REST body too
SELECT fleet.import_device_group('simulated-stores', '{"displayName": "Simulated stores", "filter": "$.simulated == true"}') ->> 'filter' AS filter;
SELECT fleet.list_device_group_members('simulated-stores');
-- refusals name the unsupported part
SELECT fleet.import_device_group('bad', '{"displayName": "Bad", "filter": "SELECT * FROM devices WHERE $id IN [\"a\", \"b\"]"}');
SELECT fleet.import_device_group('bad', '{"displayName": "Bad", "filter": "SELECT * FROM devices WHERE ($simulated = true OR $id = \"a\")"}');
SELECT fleet.import_device_group('bad', '{"displayName": "Bad", "filter": "SELECT * FROM devices WHERE $lastSeen > 5"}');
SELECT fleet.import_device_group('bad', '{"displayName": "Bad", "filter": "SELECT * FROM devices WHERE $simulated = maybe"}');
SELECT fleet.import_device_group('bad', '{"displayName": "Bad", "filter": "SELECT * FROM devices WHERE $simulated = true XOR $id = \"a\""}');
SELECT fleet.import_device_group('bad', '{"displayName": "Bad", "filter": "SELECT id FROM devices"}');
SELECT fleet.import_device_group('bad', '{"displayName": "Bad", "filter": "SELECT * FROM devices WHERE $template = \"dtmi:no:Such;1\""}');
SELECT fleet.import_device_group('bad', '{"displayName": "Bad", "filtre": "SELECT * FROM devices"}');
SELECT fleet.import_device_group('bad', '{"displayName": "Bad", "filter": "SELECT * FROM devices WHERE"}');
SELECT fleet.delete_device_group('simulated-stores');

-- Enrollment groups (PATCH /enrollmentGroups/{id}): a team leaving IoT
-- Central adopts its groups' keys, and its devices keep their SAS keys
SELECT g - 'attestation' - 'etag' - 'rotatedAt' AS enrollment_group FROM fleet.get_enrollment_group('SAS-IoT-Devices') g;
SELECT fleet.get_enrollment_group('SAS-IoT-Devices') ->> 'etag' AS etag \gset
SELECT g - 'attestation' - 'etag' - 'rotatedAt' AS enrollment_group
  FROM fleet.update_enrollment_group('SAS-IoT-Devices', jsonb_build_object('etag', :'etag',
    'displayName', 'SAS-IoT-Devices/iotc',
    'attestation', '{"type": "symmetricKey", "symmetricKey": {
        "primaryKey": "0wVA+4JgjW7c8vPixr4xKpuu9+5CAJ/V+qFEyOoxLrLk/tC/nmK1UGqaovqcLpl0mgQq4xXJd51IqeI0Mlo78Q==",
        "secondaryKey": "p51a4gxERMszfVBDD+H+JQRaXLlF/WlZjrEbIAae7U/nVurcTnHAG5Rui+6Yngp2wh8o5kwVe49EyXGA1EaJvQ=="}}'::jsonb)) g;
-- the keys IoT Central gave its devices are theirs here too
SELECT "IOTC_SASKEY_PRIMARY" = fleet.compute_device_key('0wVA+4JgjW7c8vPixr4xKpuu9+5CAJ/V+qFEyOoxLrLk/tC/nmK1UGqaovqcLpl0mgQq4xXJd51IqeI0Mlo78Q==', 'cold-1') AS adopted
  FROM fleet.export_devices() WHERE "IOTC_DEVICEID" = 'cold-1';
-- a stale etag, a key that is not one, X.509, and an unknown key are refused (never showing a key)
SELECT fleet.update_enrollment_group('SAS-IoT-Devices', jsonb_build_object('etag', :'etag', 'enabled', false));
SELECT fleet.update_enrollment_group('SAS-IoT-Devices', '{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "c2hvcnQ=", "secondaryKey": "c2hvcnQ="}}}');
SELECT fleet.update_enrollment_group('SAS-IoT-Devices', '{"attestation": {"type": "x509"}}');
SELECT fleet.update_enrollment_group('SAS-IoT-Devices', '{"enable": false}');
SELECT fleet.update_enrollment_group('SAS-IoT-Devices', '{"type": "iotEdge"}');
-- a disabled group's devices export no keys, and an import with keys is refused
SELECT fleet.update_enrollment_group('SAS-IoT-Devices', '{"enabled": false}') ->> 'enabled' AS enabled;
SELECT "IOTC_DEVICEID", "IOTC_SASKEY_PRIMARY" IS NULL AS no_primary, "IOTC_SASKEY_SECONDARY" IS NULL AS no_secondary
  FROM fleet.export_devices() WHERE "IOTC_DEVICEID" IN ('cold-1', 'cold-2') ORDER BY 1;
INSERT INTO fleet.device_import_with_keys VALUES ('exported-7', 'Disabled group', 'bm90IHRoZSBncm91cCdzIGtleQ==', NULL, NULL, NULL);
SELECT line, device_id, error FROM fleet.device_operation_errors WHERE operation_id = fleet.last_device_operation();
SELECT fleet.update_enrollment_group('SAS-IoT-Devices', '{"enabled": true}') ->> 'enabled' AS enabled;

-- Organizations and deployment manifests (PUT /organizations/{id},
-- PUT /deploymentManifests/{id}), with the read-only id in the body as the
-- REST examples have it
SELECT fleet.import_organization('washington', '{"id": "washington", "displayName": "Washington"}');
SELECT fleet.import_organization('seattle', '{"id": "seattle", "displayName": "Seattle", "parent": "washington"}');
SELECT fleet.import_organization('tacoma', '{"id": "seattle", "displayName": "Tacoma"}');
SELECT fleet.import_organization('tacoma', '{"displayName": "Tacoma", "parnet": "washington"}');
-- PATCH /organizations/{id}, as the docs send it: the parent alone,
-- unchanged; and the same body as the PUT: id and parent unchanged
SELECT fleet.update_organization('seattle', '{"id": "seattle", "displayName": "Seattle, WA", "parent": "washington"}') ->> 'displayName' AS renamed;
SELECT fleet.update_organization('seattle', '{"parent": "washington"}') ->> 'displayName' AS unchanged;
SELECT fleet.update_organization('seattle', '{"displayName": "Seattle", "parent": "root"}');
SELECT fleet.update_organization('seattle', '{"id": "tacoma"}');
SELECT m - 'etag' AS manifest FROM fleet.import_edge_manifest('edge-seattle', '{
  "id": "edge-seattle", "displayName": "Seattle deployment", "organizations": ["seattle"],
  "data": {"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1"}},
                              "$edgeHub": {"properties.desired": {"schemaVersion": "1.1"}}}}}') m;
-- PATCH bodies are JSON merge patches: RFC 7396's examples (appendix A)
SELECT n, fleet_internal.json_merge_patch(target, patch) = result AS as_rfc_7396_says
  FROM (VALUES (1, '{"a":"b"}'::jsonb, '{"a":"c"}'::jsonb, '{"a":"c"}'::jsonb),
               (2, '{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'),
               (3, '{"a":"b"}', '{"a":null}', '{}'),
               (4, '{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'),
               (5, '{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'),
               (6, '{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'),
               (7, '{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'),
               (8, '{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'),
               (9, '["a","b"]', '["c","d"]', '["c","d"]'),
               (10, '{"a":"b"}', '["c"]', '["c"]'),
               (11, '{"a":"foo"}', 'null', 'null'),
               (12, '{"a":"foo"}', '"bar"', '"bar"'),
               (13, '{"e":null}', '{"a":1}', '{"e":null,"a":1}'),
               (14, '[1,2]', '{"a":"b","c":null}', '{"a":"b"}'),
               (15, '{}', '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}')) rfc(n, target, patch, result)
 ORDER BY n;
-- PATCH /deploymentManifests/{id} as the docs send it: one module's setting
SELECT m #> '{data,modulesContent,SimulatedTemperatureSensor}' AS module,
       m #> '{data,modulesContent}' ? '$edgeAgent' AS agent_stays
  FROM fleet.update_edge_manifest('edge-seattle', '{"data": {"modulesContent": {"SimulatedTemperatureSensor":
         {"properties.desired": {"SendInterval": 30}}}}}') m;
SELECT fleet.import_edge_manifest('edge-nowhere', '{"displayName": "Nowhere", "organizations": ["nowhere"],
  "data": {"modulesContent": {"$edgeAgent": {}, "$edgeHub": {}}}}');
-- PATCH /deviceTemplates/{id} sends the whole template: its name changes,
-- its model may not
SELECT fleet.update_template('dtmi:modelDefinition:coldStore',
  jsonb_set(:'cold_store'::jsonb, '{displayName}', '"Cold store sensor v1"')) ->> 'displayName' AS display_name;
SELECT fleet.update_template('dtmi:modelDefinition:coldStore',
  jsonb_set(:'cold_store'::jsonb, '{capabilityModel,displayName}', '"Changed"'));
-- a PATCH is a merge patch: part of the model, the same as it is, and the
-- DTDL context the body may carry, are taken
SELECT fleet.update_template('dtmi:modelDefinition:coldStore', jsonb_build_object(
  '@context', '["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"]'::jsonb,
  'capabilityModel', jsonb_build_object('displayName', :'cold_store'::jsonb #> '{capabilityModel,displayName}'),
  'description', 'Walk-in cold stores')) ->> 'description' AS description;
SELECT fleet.update_template('dtmi:modelDefinition:coldStore', '{"capabilityModel": {"contents": []}}');
-- cloud properties may be added, as IoT Central adds them to a published
-- template (the docs' PATCH): the device's model is the same
SELECT fleet.update_template('dtmi:modelDefinition:coldStore', jsonb_build_object('capabilityModel', jsonb_build_object('contents',
         (:'cold_store'::jsonb #> '{capabilityModel,contents}')
         || '[{"@type": ["Cloud", "Property"], "displayName": "Last maintenance", "name": "LastMaintenanceDate", "schema": "date"}]'::jsonb)))
       #> '{capabilityModel,contents}' @> '[{"name": "LastMaintenanceDate"}]' AS added;
SELECT name, capability, schema FROM fleet.template_capabilities
 WHERE template_id = 'dtmi:modelDefinition:coldStore' AND name = 'LastMaintenanceDate';
-- but nothing else, and no name twice
SELECT fleet.update_template('dtmi:modelDefinition:coldStore', jsonb_build_object('capabilityModel', jsonb_build_object('contents',
         (fleet.get_template('dtmi:modelDefinition:coldStore') #> '{capabilityModel,contents}')
         || '[{"@type": "Property", "name": "newDeviceProperty", "schema": "string"}]'::jsonb)));
SELECT fleet.update_template('dtmi:modelDefinition:coldStore', jsonb_build_object('capabilityModel', jsonb_build_object('contents',
         (fleet.get_template('dtmi:modelDefinition:coldStore') #> '{capabilityModel,contents}')
         || '[{"@type": ["Cloud", "Property"], "name": "LastMaintenanceDate", "schema": "string"}]'::jsonb)));
-- IoT Central's 1.0 API form: "id" and "types", an empty "solutionModel"
SELECT t ->> '@id' AS id, t -> '@type' AS type
  FROM fleet.import_template('{"id": "dtmi:modelDefinition:onePointO", "types": ["DeviceModel"], "displayName": "1.0 API",
    "capabilityModel": {"@id": "dtmi:fleetTest:onePointO;1", "@type": "Interface", "@context": ["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"],
                        "contents": [{"@type": "Command", "name": "reboot", "commandType": "synchronous"}]},
    "solutionModel": {"@id": "dtmi:solutionModel:onePointO", "@type": "SolutionModel"}}') t;
-- its solutionModel with content is refused saying what to send
SELECT fleet.import_template('{"types": ["DeviceModel"], "displayName": "x",
    "capabilityModel": {"@id": "dtmi:fleetTest:sm;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2", "contents": []},
    "solutionModel": {"@type": ["SolutionModel"], "cloudProperties": [{"@type": "CloudProperty", "name": "site", "schema": "string"}]}}', 'dtmi:modelDefinition:sm');
-- the preview API's DTDL v1 capability model: read as the DTDL v2 it
-- became (each implemented interface a component, URN ids made DTMIs,
-- "SemanticType/" dropped, an Enum's valueSchema inferred)
SELECT t ->> '@id' AS id, t #>> '{capabilityModel,@type}' AS type
  FROM fleet.import_template('{"types": ["DeviceModel"], "displayName": "EnvironmentSensor1",
    "capabilityModel": {"@id": "urn:contoso:capabilityModel:1", "@type": ["CapabilityModel"], "displayName": "Motion detector",
      "@context": ["http://azureiot.com/v1/contexts/IoTModel.json"], "contents": [],
      "implements": [{"@id": "urn:contoso:capabilityModel:sensor:1", "@type": ["InterfaceInstance"], "name": "sensor",
        "schema": {"@id": "urn:contoso:Sensor:1", "@type": ["Interface"], "displayName": "Sensor",
          "contents": [{"@id": "urn:contoso:Sensor:Temperature:1", "@type": ["Telemetry", "SemanticType/Temperature"],
                        "name": "Temperature", "schema": "double", "unit": "celsius"},
                       {"@type": "Property", "name": "mode", "writable": true,
                        "schema": {"@type": "Enum", "enumValues": [{"name": "eco", "enumValue": 1}, {"name": "boost", "enumValue": 2}]}},
                       {"@type": "Command", "name": "reset", "commandType": "synchronous"}]}}]}}', 'EnvironmentSensor1id;1') t;
SELECT component, name, capability, semantic_types, schema FROM fleet.template_capabilities
 WHERE template_id = 'EnvironmentSensor1id;1' ORDER BY component NULLS FIRST, name;
-- a cloud property added to it later (its id a URN), and two v1 templates
-- whose interfaces have no id of their own stay apart
SELECT fleet.update_template('EnvironmentSensor1id;1', jsonb_build_object('capabilityModel', jsonb_build_object('contents',
         (fleet.get_template('EnvironmentSensor1id;1') #> '{capabilityModel,contents}')
         || '[{"@type": ["Cloud", "Property"], "name": "site", "schema": "string"}]'::jsonb))) #> '{capabilityModel,contents}' @> '[{"name": "site"}]' AS added;
SELECT component, name, capability FROM fleet.template_capabilities WHERE template_id = 'EnvironmentSensor1id;1' AND name = 'site';
SELECT t ->> '@id' AS id
  FROM unnest(ARRAY['reboot', 'restart']) cmd,
       fleet.import_template(jsonb_build_object('types', '["DeviceModel"]'::jsonb, 'displayName', 'v1 ' || cmd,
         'capabilityModel', jsonb_build_object('@id', 'urn:fleetTest:v1:' || cmd || ':1', '@type', '["CapabilityModel"]'::jsonb,
           '@context', '["http://azureiot.com/v1/contexts/IoTModel.json"]'::jsonb,
           'implements', jsonb_build_array(jsonb_build_object('name', 'info', 'schema',
             jsonb_build_object('@type', 'Interface', 'contents', jsonb_build_array(jsonb_build_object('@type', 'Command', 'name', cmd))))))),
         'urn:fleetTest:v1:' || cmd) t;
-- a plain DTDL interface is immutable: no cloud property is added to it
SELECT fleet.update_template('dtmi:fleetTest:ext:a;1', jsonb_build_object('capabilityModel', jsonb_build_object('contents',
         (fleet.get_template('dtmi:fleetTest:ext:a;1') #> '{capabilityModel,contents}')
         || '[{"@type": ["Cloud", "Property"], "name": "site", "schema": "string"}]'::jsonb)));
-- IoT Central's legacy URN ids inside a wrapped template
SELECT fleet.import_template('{"@type": ["ModelDefinition", "DeviceModel"], "displayName": "Legacy ids",
  "capabilityModel": {"@id": "urn:contoso:legacy:1", "@type": "Interface",
    "extends": [{"@id": "urn:contoso:legacy:base:1", "@type": "Interface",
                 "contents": [{"@id": "urn:contoso:legacy:base:reboot:1", "@type": "Command", "name": "reboot"}]}],
    "contents": [{"@id": "urn:contoso:legacy:level:1", "@type": "Property", "name": "level", "schema": "integer", "writable": true}]}}',
  'urn:contoso:legacyTemplate') ->> '@id' AS template;
SELECT name, capability FROM fleet.template_capabilities WHERE template_id = 'urn:contoso:legacyTemplate' ORDER BY name;

-- members read what IoT Central's shapes add (etags, UTC times) with their
-- own rights
-- (LOGIN: on Citus a role reads the workers' shards over connections of
-- its own)
CREATE ROLE iotc_viewer LOGIN;
SELECT fleet.grant_organization('root', 'iotc_viewer', 'viewer');
SELECT fleet.create_device_group('seattle-all', 'Seattle, all', organization => 'seattle') ->> 'id';
SET ROLE iotc_viewer;
SELECT fleet.get_device_group('seattle-all') ->> 'etag' IS NOT NULL AS group_etag,
       fleet.get_template('dtmi:modelDefinition:coldStore') ->> 'etag' IS NOT NULL AS template_etag,
       fleet.get_edge_manifest('edge-seattle') -> 'organizations' AS manifest_organizations;
SELECT j ->> 'status' AS status, j ->> 'start' ~ 'Z$' AS utc FROM fleet.get_job('set-cold') j;
RESET ROLE;
SELECT fleet.delete_device_group('seattle-all');
SELECT fleet.revoke_organization('root', 'iotc_viewer') AS revoked;
DROP ROLE iotc_viewer;

-- $template compared with null narrows nothing: both conditions stay
SELECT (fleet_internal.group_query_translate('SELECT * FROM devices WHERE $template = null AND $simulated = true')).*;
-- one inline interface extended by two interfaces of a model is one
-- interface, and every other interface keeps its own model
SELECT fleet.import_template('[
  {"@id": "dtmi:fleetTest:twice:p;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
   "extends": {"@id": "dtmi:fleetTest:twice:x;1", "@type": "Interface", "contents": [{"@type": "Command", "name": "x"}]},
   "contents": [{"@type": "Component", "name": "q", "schema": "dtmi:fleetTest:twice:q;1"},
                {"@type": "Component", "name": "r", "schema": "dtmi:fleetTest:twice:r;1"}]},
  {"@id": "dtmi:fleetTest:twice:q;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2", "displayName": "Q",
   "extends": {"@id": "dtmi:fleetTest:twice:x;1", "@type": "Interface", "contents": [{"@type": "Command", "name": "x"}]}},
  {"@id": "dtmi:fleetTest:twice:r;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2", "displayName": "R",
   "contents": [{"@type": "Telemetry", "name": "r", "schema": "double"}]}]') ->> 'id' AS root;
SELECT id, display_name, model ->> '@id' = id AS own_model FROM fleet.device_templates WHERE id LIKE 'dtmi:fleetTest:twice:%' ORDER BY id;
SELECT component, name, capability FROM fleet.template_capabilities WHERE template_id = 'dtmi:fleetTest:twice:p;1' ORDER BY 1 NULLS FIRST, 2;

-- refusals of REST bodies, each naming the value
SELECT fleet.import_device_group('not-an-object', '["displayName"]');
SELECT fleet.import_device_group('bad-filter', '{"displayName": "Bad", "filter": 5}');
SELECT fleet.import_device_group('bad-orgs', '{"displayName": "Bad", "organizations": "root"}');
SELECT fleet.import_organization('no-name', '{"parent": "root"}');
SELECT fleet.import_edge_manifest('bad-orgs', '{"displayName": "Bad", "organizations": "seattle",
  "data": {"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "$edgeHub": {"properties.desired": {}}}}}');
SELECT fleet.update_enrollment_group('SAS-IoT-Devices', '{"idScope": "0ne00000000"}');
SELECT fleet.update_enrollment_group('SAS-IoT-Devices', '{"displayName": ""}');
