# A command job answered by fleet-sim, the reference gateway, with 300
# devices that fail: more than the threshold of 200 allows, so it cancels.
demo_psql -a <<'SQL'
SELECT fleet.create_job('{
  "id": "max-min-report",
  "displayName": "Get max-min report",
  "group": "thermostats",
  "batch": {"type": "number", "value": 2500},
  "cancellationThreshold": {"type": "number", "value": 200},
  "data": [{"type": "command", "target": "dtmi:com:example:Thermostat;1",
            "path": "getMaxMinReport", "value": "2027-01-01T00:00:00Z"}]
}') ->> 'status' AS status;
SQL
failing=$(seq -f 'thermostat-%07g' 1 300 | paste -sd, -)
fleet_sim --connections 2 --latency 5 --fail-devices "$failing" --idle-exit 2 --quiet
demo_psql -a <<'SQL'
SELECT fleet.wait_for_job('max-min-report');
SELECT fleet.get_job('max-min-report') -> 'progress' AS progress;
SELECT batch, size, status, completed, failed FROM fleet.job_batches WHERE job_id = 'max-min-report' ORDER BY batch;
SELECT device_id, status, error FROM fleet.list_job_devices('max-min-report', status_filter => 'failed') LIMIT 3;
SQL
