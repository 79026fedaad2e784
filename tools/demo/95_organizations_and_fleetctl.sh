# A customer organization with its own operator, kept apart by row-level
# security; then fleetctl, the command line, as that operator and as the
# administrator, and a dashboard query over the reporting views.
fleetctl() {
	as_pg "$TOP/tools/fleetctl/fleetctl" -d "host=$demo port=$port dbname=postgres user=${FLEETCTL_USER:-postgres}" "$@"
}
demo_psql -a <<'SQL'
SELECT fleet.create_organization('fabrikam', 'Fabrikam');
SELECT fleet.create_device_group('fabrikam-thermostats', 'Fabrikam thermostats', 'dtmi:com:example:Thermostat;1',
                                 organization => 'fabrikam');
DROP ROLE IF EXISTS fabrikam_ops;
CREATE ROLE fabrikam_ops LOGIN;
SELECT fleet.grant_organization('fabrikam', 'fabrikam_ops', 'operator');
-- the operator sees none of root's 10,000 thermostats, and may not touch them
SET ROLE fabrikam_ops;
SELECT count(*) AS devices_seen, (SELECT count(*) FROM fleet.jobs) AS jobs_seen FROM fleet.devices;
\set ON_ERROR_STOP off
SELECT fleet.create_job('{"displayName": "Not ours", "group": "thermostats",
  "data": [{"type": "property", "target": "dtmi:com:example:Thermostat;1", "path": "targetTemperature", "value": 5}]}');
\set ON_ERROR_STOP on
RESET ROLE;
SQL

printf 'IOTC_DEVICEID,IOTC_DEVICENAME\n' > "$out/fabrikam.csv"
for i in $(seq 1 250); do printf 'fabrikam-%03d,Fabrikam thermostat %d\n' "$i" "$i"; done >> "$out/fabrikam.csv"
echo '$ fleetctl import fabrikam.csv --template dtmi:com:example:Thermostat;1 --organization fabrikam   (as fabrikam_ops)'
FLEETCTL_USER=fabrikam_ops fleetctl import "$out/fabrikam.csv" --template 'dtmi:com:example:Thermostat;1' --organization fabrikam
cat > "$out/fabrikam-job.json" <<'JSON'
{"id": "fabrikam-setpoint", "displayName": "Fabrikam set point", "group": "fabrikam-thermostats",
 "batch": {"type": "percentage", "value": 50},
 "data": [{"type": "property", "target": "dtmi:com:example:Thermostat;1", "path": "targetTemperature", "value": 19}]}
JSON
echo '$ fleetctl job create fabrikam-job.json && fleetctl job watch fabrikam-setpoint   (as fabrikam_ops)'
FLEETCTL_USER=fabrikam_ops fleetctl job create "$out/fabrikam-job.json"
FLEETCTL_USER=fabrikam_ops fleetctl job watch fabrikam-setpoint
echo '$ fleetctl export   (as fabrikam_ops: keys are for administrators)'
FLEETCTL_USER=fabrikam_ops fleetctl export -o "$out/fabrikam-keys.csv" || echo "(exit status $?)"
echo '$ fleetctl jobs   (as the administrator)'
fleetctl jobs

demo_psql -a <<'SQL'
-- a dashboard's jobs table, from the reporting views
SELECT job_id, job_type, organization_id, status, total_devices, failed_devices, success_rate,
       round(run_seconds::numeric, 2) AS run_seconds
  FROM fleet.job_overview ORDER BY created_at;
DROP OWNED BY fabrikam_ops;
SELECT fleet.revoke_organization('fabrikam', 'fabrikam_ops');
DROP ROLE fabrikam_ops;
SQL
