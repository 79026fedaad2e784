-- The MQTT device endpoint's side in the database: what tools/fleet-bridge
-- calls, a turn at a time, for the devices connected to the broker
-- (tools/fleet-mqtt, a mosquitto plugin).  Every function takes a batch:
-- the bridge gathers what the devices sent during a turn and makes one
-- call per kind of work, never one per device.
--
-- The bridge runs as a role that sees everything (a superuser, or a
-- BYPASSRLS role holding write rights on fleet's tables): these functions
-- are not granted to PUBLIC.  A bridge names itself (its gateway name):
-- the devices connected through it, and the commands it claims for them,
-- carry that name.
--
-- Desired properties: a property job's change bumps the device's
-- desired_version (fleet_internal.engine_set_clause()); a bridge sends the
-- desired document of each of its connected devices whose version is
-- ahead of the one it last sent, as IoT Hub's desired-property patch, and
-- a device that connects later reads it with a twin GET.


-- What the broker's plugin authenticates with: every enrollment group
-- with its keys, and every device with the group its keys derive from (the
-- plugin derives a device's key itself: it never holds device keys).
CREATE FUNCTION fleet_internal.endpoint_directory()
RETURNS TABLE (kind text, id text, group_id text, primary_key text, secondary_key text, enabled boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'group', g.id, NULL, g.primary_key, g.secondary_key, g.enabled
      FROM fleet.enrollment_groups g
    UNION ALL
    SELECT 'device', d.id, coalesce(d.enrollment_group_id, k.group_id), NULL, NULL, NULL
      FROM fleet.devices d
      LEFT JOIN fleet_internal.organization_enrollment_groups k
             ON k.organization_id = d.organization_id AND k.edge = d.edge
$$;

-- A digest of the directory: the bridge polls it and sends the directory
-- again only when it changed (a device deleted, a group disabled or its key
-- rotated reaches the broker within the poll interval).
CREATE FUNCTION fleet_internal.endpoint_directory_digest()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT md5(coalesce(string_agg(concat_ws(' ', x.kind, x.id, x.group_id, x.primary_key, x.secondary_key, x.enabled),
                                   E'\n' ORDER BY x.kind, x.id), ''))
      FROM fleet_internal.endpoint_directory() x
$$;

-- A bridge starting: the devices it had connected are not connected any
-- more (the broker tells it again which are).
CREATE FUNCTION fleet_internal.endpoint_reset(gateway text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM fleet_internal.require_gateway_name(gateway);
    UPDATE fleet.devices d
       SET connection_state = 'disconnected', connection_changed_at = fleet_internal.moment(),
           endpoint_gateway = NULL, endpoint_listens = 0
     WHERE d.endpoint_gateway = endpoint_reset.gateway;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Connections and subscriptions as the broker reported them during a
-- turn, in order (the last event of a device wins): connected (listens: 1
-- direct methods, 2 desired patches) or disconnected.  What a device was
-- sent stays as it was: one that stayed connected through a restart of
-- the bridge (the broker reports it again) still gets the patch it missed,
-- and one that reads its twin on connecting is not sent it again.  A
-- disconnect through another gateway than the one it is connected through
-- changes nothing (it moved).  Returns how many devices changed.
CREATE FUNCTION fleet_internal.endpoint_connections(gateway text, device_ids text[], connected boolean[], listens int[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    n  bigint;
    at timestamptz := fleet_internal.moment();
BEGIN
    UPDATE fleet.devices d
       SET connection_state = CASE WHEN c.connected THEN 'connected' ELSE 'disconnected' END,
           connection_changed_at = CASE WHEN c.connected IS DISTINCT FROM (d.connection_state = 'connected')
                                        THEN at ELSE d.connection_changed_at END,
           last_activity_at = at,
           endpoint_gateway = CASE WHEN c.connected THEN endpoint_connections.gateway END,
           endpoint_listens = CASE WHEN c.connected THEN c.listens ELSE 0 END
      FROM (SELECT DISTINCT ON (e.device_id) e.device_id, e.connected, e.listens
              FROM unnest(device_ids, connected, listens) WITH ORDINALITY AS e(device_id, connected, listens, n)
             ORDER BY e.device_id, e.n DESC) c
     WHERE d.id = c.device_id
       AND (c.connected OR d.endpoint_gateway = endpoint_connections.gateway);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Telemetry seen during a turn, a device id per message: counted (not
-- stored), and the device's last activity.
CREATE FUNCTION fleet_internal.endpoint_activity(device_ids text[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE fleet.devices d
       SET telemetry_messages = d.telemetry_messages + a.messages, last_activity_at = fleet_internal.moment()
      FROM (SELECT u.device_id, count(*) AS messages FROM unnest(device_ids) AS u(device_id) GROUP BY 1) a
     WHERE d.id = a.device_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- A JSON text as jsonb, or NULL when it is not JSON (what devices send is
-- checked here, not trusted).
CREATE FUNCTION fleet_internal.try_jsonb(body text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN body::jsonb;
EXCEPTION WHEN OTHERS THEN
    -- not JSON, a \u0000 escape, too deep: one device's bytes must not
    -- fail the batch of every other device's
    RETURN NULL;
END;
$$;

-- Commands for the devices connected through this bridge that listen for
-- direct methods, as fleet.claim_commands() claims them; the method is
-- named as IoT Central names a component's command ("component*command").
CREATE FUNCTION fleet_internal.endpoint_claim_commands(gateway text, max_count int)
RETURNS TABLE (delivery_id bigint, device_id text, method text, request jsonb, deadline timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_gateway_name(gateway);
    RETURN QUERY
    SELECT c.delivery_id, c.device_id, replace(c.command, '/', '*'), c.request, c.deadline
      FROM fleet_internal.claim_deliveries(gateway, max_count, true, NULL, gateway) c;
END;
$$;

-- Devices' answers to direct methods ("$iothub/methods/res/<status>/?$rid=
-- <delivery id>"): an answer completes a delivery of the device that sent
-- it, never another's; a body that is not JSON is kept as a JSON string.
-- Returns how many answers were taken (the others were not open).
CREATE FUNCTION fleet_internal.endpoint_complete_commands(device_ids text[], delivery_ids text[], statuses int[],
                                                          bodies text[])
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet.complete_commands(coalesce(array_agg(a.delivery_id ORDER BY a.n), '{}'),
                                   coalesce(array_agg(least(greatest(a.status, 100), 599) ORDER BY a.n), '{}'),
                                   coalesce(array_agg(coalesce(fleet_internal.try_jsonb(a.body), to_jsonb(a.body))
                                                      ORDER BY a.n), '{}'))
      -- a delivery answered twice in a turn: the first answer, as IoT Hub takes it
      FROM (SELECT DISTINCT ON (u.delivery_id::bigint) u.delivery_id::bigint AS delivery_id, u.device_id,
                   u.status, u.body, u.n
              FROM unnest(device_ids, delivery_ids, statuses, bodies) WITH ORDINALITY AS u(device_id, delivery_id, status, body, n)
             WHERE u.delivery_id ~ '^[0-9]{1,18}$'
             ORDER BY u.delivery_id::bigint, u.n) a
      JOIN fleet.job_devices jd ON jd.delivery_id = a.delivery_id AND jd.delivery_id IS NOT NULL
     WHERE jd.device_id = a.device_id
$$;

-- The desired documents to send as patches: devices connected through this
-- bridge, listening for patches, whose desired version is ahead of the one
-- they were sent; marked sent as they are returned.  The bridge walks its
-- devices in id order (byte order, as C compares): "after" is the last id
-- of its previous call, '' to start a pass, so a pass reads each device
-- once rather than every call reading again the devices its earlier calls
-- sent (10,000 devices in ten calls would read 55,000).  The walk is the
-- index's order, stopped at max_count: the planner, which expects few
-- devices to be due, would otherwise read and sort all that follow at each
-- call.  Rows are found again by their ctid (a device changed since it was
-- locked is left for the next pass).
CREATE FUNCTION fleet_internal.endpoint_desired_patches(gateway text, max_count int, after text)
RETURNS TABLE (device_id text, version bigint, desired jsonb)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
    WITH due AS MATERIALIZED (
        SELECT d.ctid AS row_id, d.id FROM fleet.devices d
         WHERE d.endpoint_gateway = gateway AND d.id COLLATE "C" > after
           AND d.endpoint_listens & 2 = 2
           AND d.desired_version > d.desired_sent_version
         ORDER BY d.endpoint_gateway, d.id COLLATE "C"
         LIMIT max_count
           FOR UPDATE SKIP LOCKED)
    UPDATE fleet.devices d
       SET desired_sent_version = d.desired_version
      FROM due
     WHERE d.ctid = due.row_id AND d.id = due.id
    RETURNING d.id, d.desired_version, d.properties || jsonb_build_object('$version', d.desired_version)
$$;

-- 0.5's bridge: a pass from the start at every call
CREATE FUNCTION fleet_internal.endpoint_desired_patches(gateway text, max_count int)
RETURNS TABLE (device_id text, version bigint, desired jsonb)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.device_id, p.version, p.desired FROM fleet_internal.endpoint_desired_patches(gateway, max_count, '') p
$$;

-- Twin GETs of a turn, one per request (n: its place in the arrays): the
-- twin as IoT Hub returns it (status 200), or 404 for a device that is
-- gone; what it returns counts as sent.
CREATE FUNCTION fleet_internal.endpoint_twins(device_ids text[])
RETURNS TABLE (n bigint, status int, body text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH sent AS (
        UPDATE fleet.devices d
           SET desired_sent_version = greatest(d.desired_sent_version, d.desired_version)
         WHERE d.id = ANY (device_ids)
        RETURNING d.id,
                  jsonb_build_object('desired', d.properties || jsonb_build_object('$version', d.desired_version),
                                     'reported', d.reported || jsonb_build_object('$version', d.reported_version)) AS twin)
    SELECT r.n, CASE WHEN s.id IS NULL THEN 404 ELSE 200 END,
           coalesce(s.twin, '{"message": "the device is not registered"}'::jsonb)::text
      FROM unnest(device_ids) WITH ORDINALITY AS r(device_id, n)
      LEFT JOIN sent s ON s.id = r.device_id
$$;

-- Applies JSON merge patches in order (a reported patch, as IoT Hub takes
-- it: null removes a property).
CREATE FUNCTION fleet_internal.json_merge_patches(target jsonb, patches jsonb[])
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    patch jsonb;
BEGIN
    FOREACH patch IN ARRAY patches LOOP
        target := fleet_internal.json_merge_patch(target, patch);
    END LOOP;
    RETURN target;
END;
$$;

-- Reported-property patches of a turn, several per device in the order
-- they came, into fleet.devices.reported: each request (n) gets 204 and
-- its device's new reported version, or 400 when its body is not a JSON
-- object (then nothing of it is kept), 404 when the device is gone.
CREATE FUNCTION fleet_internal.endpoint_report(device_ids text[], bodies text[])
RETURNS TABLE (n bigint, status int, version bigint)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH requests AS MATERIALIZED (
        SELECT u.n, u.device_id, fleet_internal.try_jsonb(u.body) AS patch
          FROM unnest(device_ids, bodies) WITH ORDINALITY AS u(device_id, body, n)
    ), reported AS (
        UPDATE fleet.devices d
           SET reported = fleet_internal.json_merge_patches(d.reported, p.patches),
               reported_version = d.reported_version + cardinality(p.patches),
               last_activity_at = fleet_internal.moment()
          FROM (SELECT r.device_id, array_agg(r.patch ORDER BY r.n) AS patches
                  FROM requests r
                 WHERE jsonb_typeof(r.patch) = 'object'
                 GROUP BY r.device_id) p
         WHERE d.id = p.device_id
        RETURNING d.id, d.reported_version)
    SELECT r.n,
           CASE WHEN jsonb_typeof(r.patch) IS DISTINCT FROM 'object' THEN 400
                WHEN w.id IS NULL THEN 404 ELSE 204 END,
           w.reported_version
      FROM requests r
      LEFT JOIN reported w ON w.id = r.device_id AND jsonb_typeof(r.patch) = 'object'
$$;

-- Registrations through the endpoint's provisioning service (DPS), each
-- (n) authenticated by the broker with a key derived from enrollment group
-- group_id, its body the device's request ({"registrationId", "payload":
-- {"modelId"}}): a registered device whose keys derive from that group is
-- assigned to hub; one that is not registered is registered when the group
-- lets devices register themselves (into its organization, with the
-- template its modelId names when there is one, else the group's), else
-- refused with the reason.  Returns DPS's answer: status and body.
CREATE FUNCTION fleet_internal.endpoint_register(registration_ids text[], group_ids text[], bodies text[], hub text)
RETURNS TABLE (n bigint, status int, body text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
    -- the new ones first, in one statement
    INSERT INTO fleet.devices (id, display_name, template_id, organization_id, edge, enrollment_group_id)
    SELECT DISTINCT ON (r.registration_id) r.registration_id, r.registration_id,
           coalesce((SELECT t.id FROM fleet.device_templates t WHERE t.id = r.request -> 'payload' ->> 'modelId'),
                    g.auto_register_template),
           g.organization_id, g.edge,
           -- a group that is not its organization's default is named
           CASE WHEN NOT g.organization_default THEN g.id END
      FROM (SELECT u.n, u.registration_id, u.group_id, fleet_internal.try_jsonb(u.body) AS request
              FROM unnest(registration_ids, group_ids, bodies) WITH ORDINALITY AS u(registration_id, group_id, body, n)) r
      JOIN fleet.enrollment_groups g ON g.id = r.group_id
     WHERE g.auto_register AND g.enabled
       AND r.request ->> 'registrationId' = r.registration_id
       AND fleet_internal.device_identity_problem(r.registration_id) IS NULL
       AND NOT EXISTS (SELECT 1 FROM fleet.devices d WHERE d.id = r.registration_id)
    ON CONFLICT DO NOTHING;

    RETURN QUERY
    SELECT a.n, 200,
           jsonb_build_object('operationId', format('%s.%s', a.registration_id, a.n),
                              'status', CASE WHEN a.problem IS NULL THEN 'assigned' ELSE 'failed' END,
                              'registrationState',
                              jsonb_strip_nulls(jsonb_build_object(
                                  'registrationId', a.registration_id,
                                  'status', CASE WHEN a.problem IS NULL THEN 'assigned' ELSE 'failed' END,
                                  'assignedHub', CASE WHEN a.problem IS NULL THEN hub END,
                                  'deviceId', CASE WHEN a.problem IS NULL THEN a.registration_id END,
                                  'substatus', CASE WHEN a.problem IS NULL THEN 'initialAssignment' END,
                                  'errorCode', CASE WHEN a.problem IS NOT NULL THEN 400209 END,
                                  'errorMessage', a.problem,
                                  'lastUpdatedDateTimeUtc', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))))::text
      FROM (SELECT r.n, r.registration_id,
                   CASE WHEN r.request IS NULL OR r.request ->> 'registrationId' IS DISTINCT FROM r.registration_id
                            THEN format('the request must be JSON naming registrationId "%s"', r.registration_id)
                        WHEN fleet_internal.device_identity_problem(r.registration_id) IS NOT NULL
                            THEN fleet_internal.device_identity_problem(r.registration_id)
                        WHEN e.device_id IS NULL
                            THEN format('device "%s" is not registered and enrollment group "%s" does not register devices itself',
                                        r.registration_id, r.group_id)
                        WHEN NOT g.enabled
                            THEN format('enrollment group "%s" is disabled', r.group_id)
                        WHEN e.group_id IS DISTINCT FROM r.group_id
                            THEN format('the keys of device "%s" derive from enrollment group "%s", not "%s"',
                                        r.registration_id, e.group_id, r.group_id)
                   END AS problem
              FROM (SELECT u.n, u.registration_id, u.group_id, fleet_internal.try_jsonb(u.body) AS request
                      FROM unnest(registration_ids, group_ids, bodies) WITH ORDINALITY AS u(registration_id, group_id, body, n)) r
              LEFT JOIN fleet.enrollment_groups g ON g.id = r.group_id
              LEFT JOIN (SELECT x.id AS device_id, x.group_id FROM fleet_internal.endpoint_directory() x
                          WHERE x.kind = 'device' AND x.id = ANY (registration_ids)) e
                     ON e.device_id = r.registration_id) a;
END;
$$;

-- Refusals the broker reported during a turn, counted per reason.
CREATE FUNCTION fleet_internal.endpoint_count_refusals(gateway text, reasons text[], client_ids text[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO fleet.endpoint_refusals AS e (gateway, reason, refusals, last_client_id, last_at)
    SELECT gateway, r.reason, count(*), (array_agg(r.client_id ORDER BY r.n DESC))[1], fleet_internal.moment()
      FROM unnest(reasons, client_ids) WITH ORDINALITY AS r(reason, client_id, n)
     GROUP BY r.reason
    ON CONFLICT (gateway, reason) DO UPDATE
       SET refusals = e.refusals + excluded.refusals, last_client_id = excluded.last_client_id,
           last_at = excluded.last_at
$$;

-- Whether devices that are not registered may register themselves through
-- the endpoint's provisioning with a key of this group, and with which
-- template (NULL: none, or the modelId they send).  For administrators of
-- the group's organization.
CREATE FUNCTION fleet.set_enrollment_group_auto_register(enrollment_group_id text, auto_register boolean,
                                                         template text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    g      fleet.enrollment_groups;
BEGIN
    g := fleet_internal.require_enrollment_group(enrollment_group_id, caller, 'changing an enrollment group');
    IF auto_register IS NULL THEN
        RAISE EXCEPTION 'auto_register must be true or false, not NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF g.attestation <> 'symmetricKey' AND auto_register THEN
        RAISE EXCEPTION 'enrollment group "%" cannot register devices itself: it is an X.509 group', g.id
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'The MQTT endpoint authenticates devices by SAS token: use a group with symmetric keys.';
    END IF;
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
    UPDATE fleet.enrollment_groups eg
       SET auto_register = set_enrollment_group_auto_register.auto_register, auto_register_template = template
     WHERE eg.id = g.id;
    RETURN jsonb_build_object('id', g.id, 'autoRegister', auto_register, 'template', template);
END;
$$;
COMMENT ON FUNCTION fleet.set_enrollment_group_auto_register(text, boolean, text) IS 'Lets devices that are not registered register themselves through the MQTT endpoint''s provisioning with a key of this group (into its organization, with the template given or the modelId they send), or stops it';

-- Each device's writable properties as it acknowledged them: the version
-- at which a property job last set each one, the version the device's
-- acknowledgement names (IoT Central's {"value", "ac", "av", "ad"} in its
-- reported properties), and what that makes it: synced (acknowledged with
-- a 2xx code at or after that version), pending (no acknowledgement of it
-- yet), in_progress (202), or failed (any other code).
CREATE VIEW fleet.device_property_sync WITH (security_invoker = true) AS
SELECT d.id AS device_id, p.key AS property, p.value::bigint AS desired_version,
       a.av AS acknowledged_version,
       a.ac AS ack_code,
       a.ack ->> 'ad' AS ack_description,
       CASE WHEN a.av IS NULL OR a.av < p.value::bigint THEN 'pending'
            WHEN a.ac = 202 THEN 'in_progress'
            WHEN a.ac BETWEEN 200 AND 299 THEN 'synced'
            ELSE 'failed' END AS status,
       d.connection_state
  FROM fleet.devices d
 CROSS JOIN LATERAL jsonb_each_text(d.desired_versions) p
 CROSS JOIN LATERAL (SELECT CASE WHEN strpos(p.key, '/') > 0
                                 THEN d.reported -> split_part(p.key, '/', 1) -> substr(p.key, strpos(p.key, '/') + 1)
                                 ELSE d.reported -> p.key END AS ack) a0
 -- what a device reported is read, never trusted: a version or a code that
 -- is not a whole number is no acknowledgement
 CROSS JOIN LATERAL (SELECT a1.ack,
                            CASE WHEN jsonb_typeof(a1.ack -> 'av') = 'number' AND (a1.ack ->> 'av') ~ '^[0-9]{1,18}$'
                                 THEN (a1.ack ->> 'av')::bigint END AS av,
                            CASE WHEN jsonb_typeof(a1.ack -> 'ac') = 'number' AND (a1.ack ->> 'ac') ~ '^[0-9]{1,9}$'
                                 THEN (a1.ack ->> 'ac')::int END AS ac
                       FROM (SELECT CASE WHEN jsonb_typeof(a0.ack) = 'object' AND a0.ack ? 'av' THEN a0.ack END AS ack) a1) a;
COMMENT ON VIEW fleet.device_property_sync IS 'Each device''s writable properties set by property jobs: the desired version of each, the version the device acknowledged, and synced, pending, in_progress or failed';
