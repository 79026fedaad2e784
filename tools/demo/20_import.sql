-- Import 10,004 rows of IoT Central's device CSV: thermostats for Contoso.
SET fleet.import_template = 'dtmi:com:example:Thermostat;1';
SET fleet.import_organization = 'contoso';
\copy fleet.device_import FROM 'devices.csv' WITH (FORMAT csv, HEADER)

-- the Device Operations panel
SELECT id, kind, status, rows, imported, rejected, finished_at - started_at AS took
  FROM fleet.device_operations ORDER BY id DESC LIMIT 1;

-- the rejected rows, with their line in the file and the reason
SELECT line, device_id, error
  FROM fleet.device_operation_errors
 WHERE operation_id = (SELECT max(id) FROM fleet.device_operations)
 ORDER BY line;

SELECT organization_id, template_id, count(*) AS devices
  FROM fleet.devices GROUP BY 1, 2;
