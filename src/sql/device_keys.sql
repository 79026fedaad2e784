-- Device keys.  A device's keys are derived from its enrollment group's
-- keys (device_keys.c), never stored, as the Device Provisioning Service
-- derives them (the groups: src/sql/enrollment_groups.sql).
--
-- A device that names no group (fleet.devices.enrollment_group_id) derives
-- from the nearest default pair up its organization's path: root has IoT
-- Central's two groups, SAS-IoT-Devices and SAS-IoT-Edge-Devices, and every
-- organization created since 0.2 a pair of its own.  So an administrator
-- of one organization cannot learn the keys a device will have in another:
-- the same id registered there derives from other group keys.
-- Organizations made by 0.1 keep using root's groups (their devices' keys
-- did not change with the update); fleet.create_enrollment_groups() gives
-- one a pair of its own.  A device that names a group derives from it (an
-- X.509 group gives no keys).

-- C functions look no names up, so they carry no SET search_path: on
-- compute_device_key it would add a configuration save and restore to each
-- of the two calls per exported device.  Its COST is what two SHA-256
-- blocks and a base64 encoding take against PostgreSQL's unit: at the
-- default of 1 the planner thought an export of a million devices too
-- cheap to share among workers, and it ran 15 % slower.
CREATE FUNCTION fleet.compute_device_key(group_key text, device_id text)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
COST 100
AS 'MODULE_PATHNAME', 'compute_device_key';
COMMENT ON FUNCTION fleet.compute_device_key(text, text) IS 'base64(HMAC-SHA256(base64decode(group_key), device_id)): the Device Provisioning Service''s derived device key';

-- For each organization and kind of device (edge or not), the enrollment
-- group its devices that name none derive their keys from: the nearest
-- default one up its path.  Holds the keys: internal, for the SECURITY
-- DEFINER functions below.
CREATE VIEW fleet_internal.organization_enrollment_groups AS
    SELECT o.id AS organization_id, k.edge, g.id AS group_id, g.primary_key, g.secondary_key, g.enabled
      FROM fleet.organizations o
     CROSS JOIN (VALUES (false), (true)) k(edge)
     CROSS JOIN LATERAL (SELECT eg.id, eg.primary_key, eg.secondary_key, eg.enabled
                           FROM fleet.enrollment_groups eg
                          WHERE eg.organization_id = ANY (o.path) AND eg.edge = k.edge AND eg.organization_default
                          ORDER BY pg_catalog.array_position(o.path, eg.organization_id) DESC
                          LIMIT 1) g;

-- Rotation: a new random key for one slot of one group.  Devices keep their
-- other key working meanwhile, as with IoT Central's regenerate.  For
-- administrators of the group's organization; root's groups are root's.
CREATE FUNCTION fleet.rotate_enrollment_group_key(enrollment_group_id text, which text DEFAULT 'primary')
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g       fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(),
                                                                               'rotating an enrollment group key');
    new_key text := fleet_internal.generate_group_key();
BEGIN
    IF which IS NULL OR which NOT IN ('primary', 'secondary') THEN
        RAISE EXCEPTION 'unknown key slot "%"', which
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Rotate the ''primary'' or the ''secondary'' key.';
    END IF;
    IF g.attestation <> 'symmetricKey' THEN
        RAISE EXCEPTION 'enrollment group "%" has no keys to rotate', g.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its attestation is X.509 certificates.',
                  HINT = 'Replace a certificate with fleet.set_enrollment_group_certificate().';
    END IF;
    UPDATE fleet.enrollment_groups eg
       SET primary_key = CASE WHEN which = 'primary' THEN new_key ELSE eg.primary_key END,
           secondary_key = CASE WHEN which = 'secondary' THEN new_key ELSE eg.secondary_key END,
           rotated_at = pg_catalog.now()
     WHERE eg.id = g.id;
    RETURN fleet.get_enrollment_group(g.id);
END;
$$;
COMMENT ON FUNCTION fleet.rotate_enrollment_group_key(text, text) IS 'Regenerates the primary or secondary key of an enrollment group, and so every device key derived from it; returns the group';

-- One device's keys, derived from its enrollment group.
CREATE FUNCTION fleet.device_keys(device_id text, OUT primary_key text, OUT secondary_key text)
RETURNS record
LANGUAGE plpgsql STABLE
-- SECURITY DEFINER: reads the enrollment group keys (which members may not
-- read) to derive the keys of one device for an administrator of its
-- organization; a device the caller cannot see does not exist for it.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller       name := fleet_internal.calling_role();
    organization text;
BEGIN
    organization := (fleet_internal.visible_device(device_id, caller)).organization_id;
    PERFORM fleet_internal.require_app_role(organization, 'administrator', 'reading device keys', caller);
    -- (a disabled group gives no keys, as in exports)
    SELECT fleet.compute_device_key(CASE WHEN g.enabled THEN g.primary_key END, d.id),
           fleet.compute_device_key(CASE WHEN g.enabled THEN g.secondary_key END, d.id)
      INTO primary_key, secondary_key
      FROM fleet.devices d
      JOIN fleet.enrollment_groups g
        ON g.id = coalesce(d.enrollment_group_id,
                           (SELECT x.group_id FROM fleet_internal.organization_enrollment_groups x
                             WHERE x.organization_id = d.organization_id AND x.edge = d.edge))
     WHERE d.id = device_id;
END;
$$;
COMMENT ON FUNCTION fleet.device_keys(text) IS 'The SAS keys of one device, derived from the enrollment group it names, else its organization''s default group (edge devices: the edge group); none from an X.509 or disabled group';

-- The id of the enrollment group a device's keys derive from: the one it
-- names, else its organization's default for its kind.  Ids are not
-- secret (keys are): members see their devices' groups, and nothing of a
-- device they do not see.
CREATE FUNCTION fleet_internal.device_enrollment_group(device_id text)
RETURNS text
-- PL/pgSQL, the device read first: on Citus a SQL function's parameters
-- cannot reach a distributed table, nor a device's shard the coordinator's
-- enrollment groups.
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
BEGIN
    SELECT dv.enrollment_group_id, dv.organization_id, dv.edge INTO d
      FROM fleet.devices dv WHERE dv.id = device_enrollment_group.device_id;
    IF NOT FOUND OR NOT fleet_internal.sees(fleet_internal.calling_role(), d.organization_id) THEN
        RETURN NULL;
    END IF;
    RETURN coalesce(d.enrollment_group_id,
                    (SELECT x.group_id FROM fleet_internal.organization_enrollment_groups x
                      WHERE x.organization_id = d.organization_id AND x.edge = d.edge));
END;
$$;

-- A group a device may name: one of an organization on its organization's
-- path (as default groups are found), of its kind (iotEdge for IoT Edge
-- devices), locked so that it stays while the device names it
-- (delete_enrollment_group locks it too).  Naming a group derives the
-- device's keys from it: the caller administers the group's organization,
-- as reading its keys takes (naming); a device that moves keeps the group
-- it names, which need only be available where it goes.  Returns the
-- group's id.
CREATE FUNCTION fleet_internal.require_device_enrollment_group(enrollment_group_id text, organization text, edge boolean,
                                                              label text, caller name, naming boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups;
BEGIN
    IF naming THEN
        g := fleet_internal.require_enrollment_group(enrollment_group_id, caller, 'naming a device''s enrollment group');
    END IF;
    SELECT eg.* INTO g FROM fleet.enrollment_groups eg WHERE eg.id = enrollment_group_id FOR KEY SHARE;
    IF NOT FOUND THEN
        PERFORM fleet_internal.refuse_missing('enrollment group', enrollment_group_id,
                                              'List the groups with fleet.list_enrollment_groups().');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = organization AND g.organization_id = ANY (o.path)) THEN
        RAISE EXCEPTION 'enrollment group "%" is not available to %', g.id, label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The group belongs to organization "%s", which is not "%s" or above it.', g.organization_id, organization),
                  HINT = 'Name a group of the device''s organization or of one above it.';
    END IF;
    IF g.edge <> edge THEN
        RAISE EXCEPTION 'enrollment group "%" is of type "%", not "%"', g.id,
                        CASE WHEN g.edge THEN 'iotEdge' ELSE 'iot' END, CASE WHEN edge THEN 'iotEdge' ELSE 'iot' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Only a group of type "%s" derives the keys of %s.', CASE WHEN edge THEN 'iotEdge' ELSE 'iot' END, label),
                  HINT = format('Name a group of type "%s".', CASE WHEN edge THEN 'iotEdge' ELSE 'iot' END);
    END IF;
    RETURN g.id;
END;
$$;
