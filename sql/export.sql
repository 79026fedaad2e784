\set SHOW_CONTEXT never
-- Device export in IoT Central's format.
-- Known group keys, so the keys below can be checked with any HMAC tool:
--   K=$(echo -n "SAS-IoT-Devices primary" | openssl dgst -sha512 -binary | xxd -p -c 256)
--   echo -n bom-1 | openssl sha256 -mac HMAC -macopt hexkey:$K -binary | base64
UPDATE fleet.enrollment_groups
   SET primary_key = encode(sha512(convert_to(id || ' primary', 'UTF8')), 'base64'),
       secondary_key = encode(sha512(convert_to(id || ' secondary', 'UTF8')), 'base64');
SELECT id, primary_key FROM fleet.enrollment_groups ORDER BY id;
SELECT fleet.create_device('edge-exp-1', 'Edge export', edge => true) ->> 'id';
UPDATE fleet.devices SET x509_thumbprint_primary = repeat('AB', 20), x509_thumbprint_secondary = repeat('cd', 32)
 WHERE id = 'thermo-1';

-- exactly the six columns of the product page, in order
SELECT parameter_name FROM information_schema.parameters
 WHERE specific_name LIKE 'export_devices%' AND parameter_mode = 'OUT' ORDER BY ordinal_position;
\copy (SELECT * FROM fleet.export_devices('dtmi:com:example:Thermostat;1', 'contoso') ORDER BY 1) TO STDOUT WITH (FORMAT csv, HEADER)

-- keys equal compute_device_key of the group key: devices use their
-- organization's SAS-IoT-Devices group (root's, or the nearest one up the
-- path), edge devices its SAS-IoT-Edge-Devices group
SELECT count(*) AS devices,
       count(*) FILTER (WHERE e."IOTC_SASKEY_PRIMARY" = fleet.compute_device_key(g.primary_key, d.id)
                          AND e."IOTC_SASKEY_SECONDARY" = fleet.compute_device_key(g.secondary_key, d.id)) AS keys_match,
       count(*) FILTER (WHERE d.edge AND g.id LIKE 'SAS-IoT-Edge-Devices%') AS edge_devices_on_edge_group,
       count(*) FILTER (WHERE g.organization_id = d.organization_id) AS on_own_organization_group
  FROM fleet.export_devices() e
  JOIN fleet.devices d ON d.id = e."IOTC_DEVICEID"
  JOIN fleet.enrollment_groups g
    ON g.id = (SELECT k.group_id FROM fleet_internal.organization_enrollment_groups k
                WHERE k.organization_id = d.organization_id AND k.edge = d.edge);
SELECT count(*) AS devices FROM fleet.devices;
SELECT e."IOTC_SASKEY_PRIMARY" = k.primary_key AND e."IOTC_SASKEY_SECONDARY" = k.secondary_key AS device_keys_agree
  FROM fleet.export_devices() e, fleet.device_keys('edge-exp-1') k WHERE e."IOTC_DEVICEID" = 'edge-exp-1';
SELECT e."IOTC_SASKEY_PRIMARY" <> fleet.compute_device_key(g.primary_key, 'edge-exp-1') AS edge_key_differs_from_device_group
  FROM fleet.export_devices() e, fleet.enrollment_groups g
 WHERE e."IOTC_DEVICEID" = 'edge-exp-1' AND g.id = 'SAS-IoT-Devices';

-- filters: template, organization subtree, both
SELECT count(*) FROM fleet.export_devices(template => 'dtmi:com:example:Thermostat;1');
SELECT "IOTC_DEVICEID" FROM fleet.export_devices(organization => 'contoso') ORDER BY 1;
SELECT "IOTC_DEVICEID" FROM fleet.export_devices(organization => 'contoso-east') ORDER BY 1;
-- one organization's devices (one pair of groups: their keys are constants
-- of the query) get the keys the export of every organization (each device
-- joined to its groups) gives them
SELECT (SELECT count(*) FROM fleet.export_devices(organization => 'contoso-east')) AS east_devices,
       (SELECT count(*) FROM (SELECT * FROM fleet.export_devices(organization => 'contoso-east')
                              EXCEPT SELECT * FROM fleet.export_devices()) x) AS differing;
SELECT fleet.export_devices('dtmi:no:Such;1');
SELECT fleet.export_devices(organization => 'nowhere');
SELECT fleet.device_keys('no-such-device');

-- rotating a group key rotates the derived keys of its devices only: root's
-- edge group is not that of the edge device in contoso, which has its own
CREATE TEMP TABLE exported AS SELECT * FROM fleet.export_devices();
SELECT fleet.rotate_enrollment_group_key('SAS-IoT-Edge-Devices') ->> 'id';
SELECT d.edge, d.organization_id = 'root' AS in_root,
       count(*) FILTER (WHERE x."IOTC_SASKEY_PRIMARY" <> e."IOTC_SASKEY_PRIMARY") AS changed, count(*)
  FROM fleet.export_devices() x JOIN exported e USING ("IOTC_DEVICEID")
  JOIN fleet.devices d ON d.id = x."IOTC_DEVICEID"
 GROUP BY 1, 2 ORDER BY 1, 2;

-- export, delete, import: the same devices come back with the same keys
\copy (SELECT "IOTC_DEVICEID", "IOTC_DEVICENAME" FROM fleet.export_devices(organization => 'contoso-east')) TO 'results/export_roundtrip.csv' WITH (FORMAT csv, HEADER)
CREATE TEMP TABLE east AS SELECT * FROM fleet.export_devices(organization => 'contoso-east');
DELETE FROM fleet.devices WHERE organization_id = 'contoso-east';
SET fleet.import_organization = 'contoso-east';
SET client_min_messages = warning;
\copy fleet.device_import FROM 'results/export_roundtrip.csv' WITH (FORMAT csv, HEADER)
RESET client_min_messages;
RESET fleet.import_organization;
SELECT status, rows, imported FROM fleet.device_operations ORDER BY id DESC LIMIT 1;
SELECT count(*) AS differences FROM (
    (SELECT * FROM east EXCEPT SELECT * FROM fleet.export_devices(organization => 'contoso-east'))
    UNION ALL
    (SELECT * FROM fleet.export_devices(organization => 'contoso-east') EXCEPT SELECT * FROM east)) d;

-- spreadsheet-safe CSV: cells a spreadsheet would run as formulas (leading
-- =, +, -, @, tab, carriage return) get a leading quote; what is stored
-- does not change, and other cells are left alone
SELECT fleet.create_device('formula-1', '=HYPERLINK("http://evil.example","x")', organization => 'contoso') ->> 'id';
SELECT fleet.create_device('formula-2', '+SUM(A1:A9)', organization => 'contoso') ->> 'id';
SELECT fleet.create_device('formula-3', '@cmd', organization => 'contoso') ->> 'id';
SELECT fleet.create_device('formula-4', E'\tTab', organization => 'contoso') ->> 'id';
SELECT fleet.create_device('-5', 'Minus id', organization => 'contoso') ->> 'id';
SELECT fleet.create_device('formula-6', 'plain = fine', organization => 'contoso') ->> 'id';
SELECT "IOTC_DEVICEID", "IOTC_DEVICENAME" FROM fleet.export_devices(organization => 'contoso', spreadsheet_safe => true)
 WHERE "IOTC_DEVICEID" LIKE 'formula-%' OR "IOTC_DEVICEID" = '''-5' ORDER BY 1;
-- keys are base64 and may start with "+": quoted exactly then, else unchanged
SELECT fleet_internal.spreadsheet_cell('+abc=', true) AS plus, fleet_internal.spreadsheet_cell('abc+', true) AS inside,
       fleet_internal.spreadsheet_cell(E'\rx', true) = E'''\rx' AS carriage_return, fleet_internal.spreadsheet_cell('-1', false) AS off,
       fleet_internal.spreadsheet_cell(NULL, true) IS NULL AS null_stays_null;
SELECT count(*) AS keys,
       bool_and(e."IOTC_SASKEY_PRIMARY" = CASE WHEN k.raw LIKE '+%' THEN '''' || k.raw ELSE k.raw END) AS quoted_exactly
  FROM fleet.export_devices(spreadsheet_safe => true) e
  JOIN fleet.export_devices() k(id, name, raw) ON k.id = e."IOTC_DEVICEID";
SELECT id, display_name FROM fleet.devices WHERE id LIKE 'formula-%' OR id = '-5' ORDER BY id;
SELECT count(*) AS unchanged FROM fleet.export_devices(organization => 'contoso') WHERE "IOTC_DEVICENAME" LIKE '''%';
WITH d AS MATERIALIZED (SELECT id FROM fleet.devices WHERE id LIKE 'formula-%' OR id = '-5')
SELECT fleet.delete_device(id) FROM d;
