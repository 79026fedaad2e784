-- A team leaves IoT Central and brings what IoT Central gives it, unedited:
-- its device template (the REST API's wrapped form), its enrollment groups
-- and their keys, its device export file, its device group query and its job body.
\set template `cat iotc_rest_template.json`
SELECT t ->> '@id' AS template, t ->> 'displayName' AS display_name
  FROM fleet.import_template(:'template', 'dtmi:modelDefinition:coldStore') t;
SELECT component, name, capability FROM fleet.template_capabilities
 WHERE template_id = 'dtmi:modelDefinition:coldStore' ORDER BY 1 NULLS FIRST, 2;

-- its organization, and its group keys adopted: every migrated device
-- keeps the SAS keys IoT Central gave it
SELECT fleet.import_organization('contoso-iotc', '{"id": "contoso-iotc", "displayName": "Contoso (from IoT Central)"}');
\set iotc_primary '0wVA+4JgjW7c8vPixr4xKpuu9+5CAJ/V+qFEyOoxLrLk/tC/nmK1UGqaovqcLpl0mgQq4xXJd51IqeI0Mlo78Q=='
\set iotc_secondary 'p51a4gxERMszfVBDD+H+JQRaXLlF/WlZjrEbIAae7U/nVurcTnHAG5Rui+6Yngp2wh8o5kwVe49EyXGA1EaJvQ=='
SELECT g ->> 'id' AS enrollment_group, g ->> 'displayName' AS display_name
  FROM fleet.update_enrollment_group('SAS-IoT-Devices@contoso-iotc', jsonb_build_object(
         'displayName', 'SAS-IoT-Devices',
         'attestation', jsonb_build_object('type', 'symmetricKey', 'symmetricKey',
                                           jsonb_build_object('primaryKey', :'iotc_primary', 'secondaryKey', :'iotc_secondary')))) g;
-- and its second group, the one line 2's devices provisioned through
-- (its keys made up here, as IoT Central would have)
SELECT fleet_internal.generate_group_key() AS line2_primary, fleet_internal.generate_group_key() AS line2_secondary \gset
SELECT g ->> 'id' AS enrollment_group, g ->> 'displayName' AS display_name
  FROM fleet.import_enrollment_group('line-2', jsonb_build_object(
         'displayName', 'Line 2', 'type', 'iot', 'enabled', true, 'organization', 'contoso-iotc',
         'attestation', jsonb_build_object('type', 'symmetricKey', 'symmetricKey',
                                           jsonb_build_object('primaryKey', :'line2_primary', 'secondaryKey', :'line2_secondary')))) g;

-- IoT Central's export file, as it writes one (here made from the same
-- group keys IoT Central derived its device keys from), with one row whose
-- key was mangled on the way
CREATE TEMP TABLE iotc_export AS
SELECT 'cold-store-' || i AS "IOTC_DEVICEID", 'Cold store ' || i AS "IOTC_DEVICENAME",
       CASE WHEN i = 7 THEN 'bm90IHRoZSBrZXk='
            WHEN i > 40 THEN fleet.compute_device_key(:'line2_primary', 'cold-store-' || i)
            ELSE fleet.compute_device_key(:'iotc_primary', 'cold-store-' || i) END AS "IOTC_SASKEY_PRIMARY",
       fleet.compute_device_key(CASE WHEN i > 40 THEN :'line2_secondary' ELSE :'iotc_secondary' END, 'cold-store-' || i) AS "IOTC_SASKEY_SECONDARY",
       CASE WHEN i % 10 = 0 THEN upper(md5(i::text)) || '0BADF00D' END AS "IOTC_X509THUMBPRINT_PRIMARY",
       NULL::text AS "IOTC_X509THUMBPRINT_SECONDARY"
  FROM generate_series(1, 50) i;
\copy iotc_export TO 'iotc-export.csv' WITH (FORMAT csv, HEADER)
SET fleet.import_organization = 'contoso-iotc';
SET fleet.import_template = 'dtmi:modelDefinition:coldStore';
\copy fleet.device_import_with_keys FROM 'iotc-export.csv' WITH (FORMAT csv, HEADER)
RESET fleet.import_organization;
RESET fleet.import_template;
SELECT line, device_id, error FROM fleet.device_operation_errors WHERE operation_id = fleet.last_device_operation();
SELECT count(*) FILTER (WHERE x509_thumbprint_primary IS NOT NULL) AS with_thumbprints, count(*) AS devices
  FROM fleet.devices WHERE organization_id = 'contoso-iotc';
-- each device found the group its keys came from
SELECT fleet.get_device(id) ->> 'enrollmentGroup' AS enrollment_group, count(*) AS devices
  FROM fleet.devices WHERE organization_id = 'contoso-iotc' GROUP BY 1 ORDER BY 1;

-- its device group, in IoT Central's query language
UPDATE fleet.devices SET reported = jsonb_build_object('compressor', jsonb_build_object('load', (random() * 100)::int))
 WHERE organization_id = 'contoso-iotc';
SELECT g ->> 'filter' AS filter, g ->> 'jsonpath' AS evaluated_as
  FROM fleet.import_device_group('busy-compressors', '{
  "displayName": "Busy compressors",
  "filter": "SELECT * FROM devices WHERE $template = \"dtmi:modelDefinition:coldStore\" AND $simulated = false AND compressor.load > 20",
  "organizations": ["contoso-iotc"]}') g;
SELECT fleet.count_device_group_members('busy-compressors') AS members;

-- its job body, as the REST API takes it (a misspelled key is refused,
-- naming the key meant, instead of running the job without it)
\set ON_ERROR_STOP off
SELECT fleet.create_job('{"displayName": "Colder", "group": "busy-compressors",
  "cancelationThreshold": {"type": "percentage", "value": 10},
  "data": [{"type": "PropertyJobData", "target": "dtmi:modelDefinition:coldStore", "path": "compressor.targetTemperature", "value": -20}]}');
\set ON_ERROR_STOP on
SELECT fleet.create_job('{"displayName": "Colder", "group": "busy-compressors",
  "cancellationThreshold": {"type": "percentage", "value": 10, "batch": false},
  "data": [{"type": "PropertyJobData", "target": "dtmi:modelDefinition:coldStore", "path": "compressor.targetTemperature", "value": -20}]}',
  'colder') ->> 'status' AS status;
SELECT fleet.wait_for_job('colder');
SELECT j ->> 'status' AS status, j -> 'progress' AS progress FROM fleet.get_job('colder') j;
SELECT jsonb_array_length(fleet.get_job_devices('colder') -> 'value') AS job_devices;
