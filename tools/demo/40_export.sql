-- Export the thermostats with their SAS keys, as IoT Central does.
\copy (SELECT * FROM fleet.export_devices('dtmi:com:example:Thermostat;1') ORDER BY 1) TO 'devices-export.csv' WITH (FORMAT csv, HEADER)
\! head -n 4 devices-export.csv
\! echo "... $(($(wc -l < devices-export.csv) - 1)) devices in $(pwd)/devices-export.csv"

-- every key is the DPS derivation from the enrollment group key
SELECT count(*) AS devices,
       count(*) FILTER (WHERE e."IOTC_SASKEY_PRIMARY" = fleet.compute_device_key(g.primary_key, e."IOTC_DEVICEID")) AS keys_verified
  FROM fleet.export_devices('dtmi:com:example:Thermostat;1') e, fleet.enrollment_groups g
 WHERE g.id = 'SAS-IoT-Devices';
