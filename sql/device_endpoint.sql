\set SHOW_CONTEXT never
-- The MQTT device endpoint's side in the database, as fleet-bridge calls
-- it (src/sql/device_endpoint.sql): connections, commands for connected
-- devices only, desired versions and patches, twins, reported patches and
-- acknowledgements, provisioning, refusals; and what each refuses.  The
-- broker and real devices are in test/t/014_mqtt_endpoint.pl.

CREATE ROLE regress_endpoint_member;
-- waits (bounded) until a query is true: the engine works in the background
CREATE FUNCTION pg_temp.wait_until(query text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    done boolean;
BEGIN
    FOR i IN 1 .. 600 LOOP
        EXECUTE query INTO done;
        IF done THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END;
$$;

SELECT fleet.create_device('ep-' || i, template => 'dtmi:com:example:Thermostat;1') ->> 'id' AS device
  FROM generate_series(1, 4) i;
SELECT fleet.create_device_group('ep-all', 'Endpoint devices', 'dtmi:com:example:Thermostat;1',
                                 '$.id like_regex "^ep-"') ->> 'id' AS device_group;

-- what the broker authenticates with: groups with keys, devices with the
-- group their keys derive from; the digest moves when it does
SELECT kind, id, group_id, primary_key IS NOT NULL AS has_key, enabled
  FROM fleet_internal.endpoint_directory() WHERE id LIKE 'ep-%' OR kind = 'group' ORDER BY kind DESC, id;
SELECT fleet_internal.endpoint_directory_digest() AS before \gset
SELECT fleet.create_device('ep-extra') ->> 'id' AS device;
SELECT fleet_internal.endpoint_directory_digest() <> :'before' AS digest_moved;

-- a bridge names itself as any gateway does
SELECT fleet_internal.endpoint_reset('');
SELECT fleet_internal.endpoint_reset('simulator');
SELECT fleet_internal.endpoint_reset('mqtt:a');

-- connections in the order the broker reported them: the last one wins;
-- a disconnect reported by another bridge changes nothing
SELECT fleet_internal.endpoint_connections('mqtt:a', ARRAY['ep-1', 'ep-2', 'ep-2', 'ep-3', 'ep-3'],
                                           ARRAY[true, true, true, true, false], ARRAY[0, 0, 3, 3, 0]) AS changed;
SELECT fleet_internal.endpoint_connections('mqtt:b', ARRAY['ep-2'], ARRAY[false], ARRAY[0]) AS changed;
SELECT id, connection_state, endpoint_gateway, endpoint_listens, connection_changed_at IS NOT NULL AS since
  FROM fleet.devices WHERE id LIKE 'ep-%' ORDER BY id;
-- group filters see it
SELECT fleet.import_device_group('ep-online', '{"displayName": "Online",
    "filter": "SELECT * FROM devices WHERE $connected = true"}') ->> 'jsonpath' AS filter;
SELECT device_id FROM fleet.list_device_group_members('ep-online') ORDER BY 1;

-- a command job: only the device listening for direct methods here is
-- claimed; the others wait, queued
SELECT fleet.create_job('{"id": "ep-reboot", "displayName": "Reboot", "group": "ep-all",
  "data": [{"type": "command", "target": "dtmi:com:example:Thermostat;1", "path": "getMaxMinReport",
            "value": "2027-01-01T00:00:00Z"}]}') ->> 'status' AS status;
SELECT pg_temp.wait_until(
    $$SELECT count(*) = 4 FROM fleet.command_deliveries WHERE job_id = 'ep-reboot'$$) AS offered;
SELECT device_id, method, request FROM fleet_internal.endpoint_claim_commands('mqtt:a', 10);
SELECT fleet_internal.endpoint_claim_commands('', 10);
SELECT device_id, status FROM fleet.command_deliveries WHERE job_id = 'ep-reboot' ORDER BY device_id;
SELECT delivery_id AS ep2_delivery FROM fleet.command_deliveries WHERE job_id = 'ep-reboot' AND device_id = 'ep-2' \gset
-- an answer names its delivery: another device's answer to it, a rid
-- that is no number, and one for a delivery never claimed are not taken;
-- a body that is not JSON is kept as a string
SELECT fleet_internal.endpoint_complete_commands(ARRAY['ep-1', 'ep-2', 'ep-2'], ARRAY[:'ep2_delivery', 'x1', '7'],
                                                 ARRAY[200, 200, 200], ARRAY['{}', '{}', '{}']) AS taken;
-- answered twice in a turn, the first answer counts
SELECT fleet_internal.endpoint_complete_commands(ARRAY['ep-2', 'ep-2'], ARRAY[:'ep2_delivery', :'ep2_delivery'],
                                                 ARRAY[200, 500], ARRAY['not json', '{}']) AS taken;
SELECT device_id, status, response FROM fleet.command_deliveries WHERE job_id = 'ep-reboot' AND device_id = 'ep-2';
SELECT fleet.stop_job('ep-reboot') ->> 'status' AS status;

-- a property job moves each device's desired version; a bridge sends the
-- patch once, to devices listening for patches
SELECT fleet.create_job('{"id": "ep-target", "displayName": "Target", "group": "ep-all",
  "data": [{"type": "property", "target": "dtmi:com:example:Thermostat;1", "path": "targetTemperature", "value": 21}]}')
       ->> 'status' AS status;
SELECT fleet.wait_for_job('ep-target');
SELECT id, desired_version, desired_versions FROM fleet.devices WHERE id LIKE 'ep-%' ORDER BY id;
SELECT device_id, version, desired FROM fleet_internal.endpoint_desired_patches('mqtt:a', 10);
SELECT count(*) AS again FROM fleet_internal.endpoint_desired_patches('mqtt:a', 10);

-- twins, as IoT Hub's twin GET answers; a device that is gone gets 404
SELECT * FROM fleet_internal.endpoint_twins(ARRAY['ep-1', 'ep-gone']);

-- reported patches in order, null removes; a body that is not a JSON
-- object is refused alone (400), a device that is gone gets 404
SELECT * FROM fleet_internal.endpoint_report(
    ARRAY['ep-1', 'ep-1', 'ep-1', 'ep-gone', 'ep-2'],
    ARRAY['{"serialNumber": "A", "firmware": "1.0"}', '{"firmware": null, "targetTemperature": {"value": 21, "ac": 200, "av": 2, "ad": "done"}}',
          '[1]', '{}', '{"targetTemperature": {"value": 21, "ac": 500, "av": 2, "ad": "out of range"}}']) ORDER BY n;
SELECT id, reported, reported_version FROM fleet.devices WHERE id IN ('ep-1', 'ep-2') ORDER BY id;
SELECT fleet_internal.endpoint_report(ARRAY['ep-3'], ARRAY['{"targetTemperature": {"value": 21, "ac": 202, "av": 2}}']);

-- one device's bytes never fail the others': a \u0000 escape, a body nested
-- too deep, and an acknowledgement whose version or code is no whole number
SELECT * FROM fleet_internal.endpoint_report(
    ARRAY['ep-4', 'ep-4', 'ep-4'],
    ARRAY['{"a": "\u0000"}', repeat('[', 7000) || repeat(']', 7000),
          '{"targetTemperature": {"value": 21, "ac": "ok", "av": 2.5}}']) ORDER BY n;

-- each device's acknowledgement against the version that set the property
SELECT device_id, property, desired_version, acknowledged_version, ack_code, status
  FROM fleet.device_property_sync WHERE device_id LIKE 'ep-%' ORDER BY device_id;

-- telemetry: counted per device
SELECT fleet_internal.endpoint_activity(ARRAY['ep-1', 'ep-1', 'ep-2', 'ep-gone']) AS devices;
SELECT id, telemetry_messages FROM fleet.devices WHERE id IN ('ep-1', 'ep-2') ORDER BY id;

-- provisioning: a registered device of the group is assigned; refusals
-- say why, one request at a time
SELECT fleet.import_enrollment_group('ep-line', '{"displayName": "Line", "type": "iot",
    "attestation": {"type": "symmetricKey"}}') ->> 'id' AS enrollment_group;
SELECT n, status, b ->> 'status' AS registration, (b -> 'registrationState') - 'lastUpdatedDateTimeUtc' AS state
  FROM fleet_internal.endpoint_register(
      ARRAY['ep-1', 'ep-new', 'ep new', 'ep-1', 'ep-2'],
      ARRAY['SAS-IoT-Devices', 'SAS-IoT-Devices', 'SAS-IoT-Devices', 'ep-line', 'SAS-IoT-Devices'],
      ARRAY['{"registrationId": "ep-1"}', '{"registrationId": "ep-new"}', '{"registrationId": "ep new"}',
            '{"registrationId": "ep-1"}', 'not json'],
      'hub.example') r, LATERAL (SELECT r.body::jsonb AS b) j ORDER BY n;
-- a group that registers devices itself: into its organization, with the
-- template the device names as modelId, else the group's
SELECT fleet.set_enrollment_group_auto_register('ep-line', true, 'dtmi:com:example:Thermostat;1');
SELECT n, body::jsonb ->> 'status' AS registration
  FROM fleet_internal.endpoint_register(ARRAY['ep-new', 'ep-new2'], ARRAY['ep-line', 'ep-line'],
      ARRAY['{"registrationId": "ep-new", "payload": {"modelId": "dtmi:no:such;1"}}', '{"registrationId": "ep-new2"}'],
      'hub.example') ORDER BY n;
SELECT id, template_id, organization_id, enrollment_group_id FROM fleet.devices WHERE id LIKE 'ep-new%' ORDER BY id;
-- a request that does not name the device registers nothing
SELECT body::jsonb -> 'registrationState' ->> 'errorMessage' AS refused
  FROM fleet_internal.endpoint_register(ARRAY['ep-new3'], ARRAY['ep-line'], ARRAY['{"registrationId": "someone-else"}'],
                                       'hub.example');
SELECT count(*) AS registered FROM fleet.devices WHERE id = 'ep-new3';
-- a disabled group registers no one
SELECT fleet.update_enrollment_group('ep-line', '{"enabled": false}') ->> 'enabled' AS enabled;
SELECT body::jsonb -> 'registrationState' ->> 'errorMessage' AS refused
  FROM fleet_internal.endpoint_register(ARRAY['ep-new'], ARRAY['ep-line'], ARRAY['{"registrationId": "ep-new"}'], 'hub.example');

-- what the setting refuses
SELECT fleet.set_enrollment_group_auto_register('ep-line', NULL);
SELECT fleet.set_enrollment_group_auto_register('ep-line', true, 'dtmi:no:such;1');
SELECT fleet.set_enrollment_group_auto_register('no-such-group', true);
SELECT fleet.import_enrollment_group('ep-x509', '{"displayName": "X", "type": "iot", "attestation": {"type": "x509"}}') ->> 'id';
SELECT fleet.set_enrollment_group_auto_register('ep-x509', true);

-- refusals the broker reported, counted per reason
SELECT fleet_internal.endpoint_count_refusals('mqtt:a', ARRAY['wrong key', 'wrong key', 'expired token'],
                                              ARRAY['ep-9', 'ep-8', 'ep-9']);
SELECT fleet_internal.endpoint_count_refusals('mqtt:a', ARRAY['wrong key'], ARRAY['ep-7']);
SELECT gateway, reason, refusals, last_client_id FROM fleet.endpoint_refusals ORDER BY reason;

-- a bridge walks its devices' patches a batch at a time in id order, each
-- call after the last id of the one before; a pass from the start finds
-- what is left
SELECT fleet_internal.endpoint_connections('mqtt:w', ARRAY['ep-4', 'ep-1', 'ep-3'], ARRAY[true, true, true],
                                           ARRAY[2, 2, 2]) AS changed;
SELECT fleet.create_job('{"id": "ep-walk", "displayName": "Walk", "group": "ep-all",
  "data": [{"type": "property", "target": "dtmi:com:example:Thermostat;1", "path": "targetTemperature", "value": 22}]}')
       ->> 'status' AS status;
SELECT fleet.wait_for_job('ep-walk');
SELECT device_id, version FROM fleet_internal.endpoint_desired_patches('mqtt:w', 2, '') ORDER BY 1;
SELECT device_id, version FROM fleet_internal.endpoint_desired_patches('mqtt:w', 2, 'ep-3') ORDER BY 1;
SELECT count(*) AS left FROM fleet_internal.endpoint_desired_patches('mqtt:w', 2, '');

-- nothing of this is for members: the bridge's functions are not theirs,
-- refusals are for monitoring roles
SET ROLE regress_endpoint_member;
SELECT fleet_internal.endpoint_reset('mqtt:a');
SELECT count(*) FROM fleet.endpoint_refusals;
RESET ROLE;
DROP ROLE regress_endpoint_member;
