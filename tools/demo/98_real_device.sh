# A real device: the stock Azure IoT Node SDK, configured the IoT Central
# way (ID scope, device id, a key derived from the group key), provisions
# through pg_fleet's MQTT endpoint, answers a command job as a direct method
# and acknowledges a property job's desired patch.  Its lines are marked
# "device>" and printed as they happen.
mqtt_dir="$demo/mqtt"
mqtt_port=${PG_FLEET_DEMO_MQTT_PORT:-18883}
as_pg mkdir -p "$mqtt_dir"
as_pg "$TOP/tools/mqtt/endpoint.sh" start "$mqtt_dir" "$mqtt_port" \
	"host=$demo port=$port user=postgres dbname=postgres" pg-fleet.localhost 0ne00FLEET
trap "as_pg '$TOP/tools/mqtt/endpoint.sh' stop '$mqtt_dir'; stop_cluster '$demo'" EXIT
echo "broker on localhost:$mqtt_port (TLS, CA $mqtt_dir/ca.crt), bridge as gateway mqtt:pg-fleet.localhost"

demo_psql -a <<'SQL'
-- devices not imported yet may register themselves with the group's key
SELECT fleet.set_enrollment_group_auto_register('SAS-IoT-Devices', true, 'dtmi:com:example:Thermostat;1');
SELECT fleet.create_device_group('lab', 'Lab thermostats', 'dtmi:com:example:Thermostat;1',
                                 '$.id like_regex "^lab-"') ->> 'id' AS device_group;
SQL
group_key=$(demo_psql -At -c "SELECT primary_key FROM fleet.enrollment_groups WHERE id = 'SAS-IoT-Devices'")
as_pg env NODE_EXTRA_CA_CERTS="$mqtt_dir/ca.crt" node "$TOP/test/node/device.js" \
	--id lab-thermostat-1 --group-key "$group_key" --dps "localhost:$mqtt_port" --scope 0ne00FLEET \
	--gateway "localhost:$mqtt_port" --ca "$mqtt_dir/ca.crt" --ack-properties --report '{"serialNumber": "LAB-0001"}' \
	--exit-after-ms 15000 | sed -u 's/^/  device> /' &
device_pid=$!
for _ in $(seq 1 100); do
	[ "$(demo_psql -At -c "SELECT count(*) FROM fleet.devices WHERE id = 'lab-thermostat-1' AND endpoint_listens = 3")" = 1 ] && break
	sleep 0.1
done

demo_psql -a <<'SQL'
SELECT id, template_id, connection_state, reported FROM fleet.devices WHERE id = 'lab-thermostat-1';
SELECT fleet.create_job('{"id": "lab-report", "displayName": "Max-min report", "group": "lab",
  "data": [{"type": "command", "target": "dtmi:com:example:Thermostat;1",
            "path": "getMaxMinReport", "value": "2027-01-01T00:00:00Z"}]}') ->> 'status' AS status;
SELECT fleet.wait_for_job('lab-report');
SELECT device_id, status, response_status, response FROM fleet.command_deliveries WHERE job_id = 'lab-report';
SELECT fleet.create_job('{"id": "lab-target", "displayName": "Target 23", "group": "lab",
  "data": [{"type": "property", "target": "dtmi:com:example:Thermostat;1",
            "path": "targetTemperature", "value": 23}]}') ->> 'status' AS status;
SELECT fleet.wait_for_job('lab-target');
SELECT pg_sleep(1);
SELECT device_id, property, desired_version, acknowledged_version, status FROM fleet.device_property_sync
 WHERE device_id = 'lab-thermostat-1';
SQL
wait "$device_pid" || true
as_pg "$TOP/tools/mqtt/endpoint.sh" stop "$mqtt_dir"
