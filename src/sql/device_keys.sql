-- Enrollment groups and device keys.  Device keys are derived from their
-- enrollment group's keys (device_keys.c), never stored, as the Device
-- Provisioning Service derives them.
--
-- Root has IoT Central's two groups, SAS-IoT-Devices and
-- SAS-IoT-Edge-Devices; every organization created since 0.2 gets a pair
-- of its own, and a device's keys come from the nearest pair up its
-- organization's path.  So an administrator of one organization cannot
-- learn the keys a device will have in another: the same id registered
-- there derives from other group keys.  Organizations made by 0.1 keep
-- using root's groups (their devices' keys did not change with the
-- update); fleet.create_enrollment_groups() gives one a pair of its own.

-- C functions look no names up, so they carry no SET search_path: on
-- compute_device_key it would add a configuration save and restore to each
-- of the two calls per exported device.
CREATE FUNCTION fleet.compute_device_key(group_key text, device_id text)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'compute_device_key';
COMMENT ON FUNCTION fleet.compute_device_key(text, text) IS 'base64(HMAC-SHA256(base64decode(group_key), device_id)): the Device Provisioning Service''s derived device key';

-- For each organization and kind of device (edge or not), the enrollment
-- group its devices' keys derive from: the nearest one up its path.  Holds
-- the keys: internal, for the SECURITY DEFINER functions below.
CREATE VIEW fleet_internal.organization_enrollment_groups AS
    SELECT o.id AS organization_id, k.edge, g.id AS group_id, g.primary_key, g.secondary_key, g.enabled
      FROM fleet.organizations o
     CROSS JOIN (VALUES (false), (true)) k(edge)
     CROSS JOIN LATERAL (SELECT eg.id, eg.primary_key, eg.secondary_key, eg.enabled
                           FROM fleet.enrollment_groups eg
                          WHERE eg.organization_id = ANY (o.path) AND eg.edge = k.edge
                          ORDER BY pg_catalog.array_position(o.path, eg.organization_id) DESC
                          LIMIT 1) g;

-- An organization's own pair of groups, with new random keys.
CREATE FUNCTION fleet_internal.create_enrollment_groups(organization text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO fleet.enrollment_groups (id, primary_key, secondary_key, organization_id, edge)
    SELECT k.name || '@' || organization, fleet_internal.generate_group_key(), fleet_internal.generate_group_key(), organization, k.edge
      FROM (VALUES ('SAS-IoT-Devices', false), ('SAS-IoT-Edge-Devices', true)) k(name, edge)
$$;

-- Gives an organization that has none (one made by pg_fleet 0.1) its own
-- pair of groups.  Every key of its devices changes: export them again.
CREATE FUNCTION fleet.create_enrollment_groups(organization text)
RETURNS SETOF jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    PERFORM fleet_internal.require_organization(organization, caller);
    PERFORM fleet_internal.require_app_role(organization, 'administrator', 'creating enrollment groups', caller);
    IF EXISTS (SELECT 1 FROM fleet.enrollment_groups g WHERE g.organization_id = create_enrollment_groups.organization) THEN
        RAISE EXCEPTION 'organization "%" already has enrollment groups', organization
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Rotate their keys with fleet.rotate_enrollment_group_key().';
    END IF;
    PERFORM fleet_internal.create_enrollment_groups(organization);
    RETURN QUERY SELECT fleet.get_enrollment_group(g.id) FROM fleet.enrollment_groups g
                  WHERE g.organization_id = create_enrollment_groups.organization ORDER BY g.edge;
END;
$$;
COMMENT ON FUNCTION fleet.create_enrollment_groups(text) IS 'Gives an organization its own pair of enrollment groups (its devices'' keys change); returns them';

-- The group, or "does not exist" unless the role administers its
-- organization (its keys derive every device key).
CREATE FUNCTION fleet_internal.require_enrollment_group(enrollment_group_id text, role_name name, action text)
RETURNS fleet.enrollment_groups
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups;
BEGIN
    SELECT eg.* INTO g FROM fleet.enrollment_groups eg WHERE eg.id = require_enrollment_group.enrollment_group_id;
    IF NOT FOUND OR NOT fleet_internal.sees(role_name, g.organization_id) THEN
        PERFORM fleet_internal.refuse_missing('enrollment group', enrollment_group_id,
            'Root''s groups are SAS-IoT-Devices and SAS-IoT-Edge-Devices; an organization''s end in @ and its id.');
    END IF;
    PERFORM fleet_internal.require_app_role(g.organization_id, 'administrator', action, role_name);
    RETURN g;
END;
$$;

-- The group as IoT Central's REST API shows one, keys included: for
-- administrators of its organization.
CREATE FUNCTION fleet.get_enrollment_group(enrollment_group_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(),
                                                                         'reading an enrollment group');
BEGIN
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'id', g.id, 'displayName', coalesce(g.display_name, g.id), 'enabled', g.enabled,
        'type', CASE WHEN g.edge THEN 'iotEdge' ELSE 'iot' END,
        'attestation', jsonb_build_object('type', 'symmetricKey',
                                          'symmetricKey', jsonb_build_object('primaryKey', g.primary_key,
                                                                             'secondaryKey', g.secondary_key)),
        'idScope', nullif(current_setting('fleet.id_scope'), ''),
        'etag', fleet_internal.enrollment_group_etag(g),
        'organization', g.organization_id,
        'rotatedAt', fleet_internal.rest_timestamp(g.rotated_at)));
END;
$$;
COMMENT ON FUNCTION fleet.get_enrollment_group(text) IS 'The enrollment group as IoT Central''s REST API shows it (displayName, enabled, type, attestation with its keys, idScope, etag), with its organization; for administrators of its organization';

-- An enrollment group's etag (fleet_internal.etag): its keys go in only as
-- a hash of a hash, so the etag tells nothing of them.
CREATE FUNCTION fleet_internal.enrollment_group_etag(g fleet.enrollment_groups)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.etag(jsonb_build_array(g.display_name, g.enabled, md5(g.primary_key || ':' || g.secondary_key)))
$$;

-- A symmetric key as DPS takes one: base64 of 16 to 64 bytes.  The
-- message never shows the key.
CREATE FUNCTION fleet_internal.require_group_key(key jsonb, what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bytes int;
BEGIN
    IF jsonb_typeof(key) IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% must be a base64 string', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        bytes := length(decode(key #>> '{}', 'base64'));
    EXCEPTION WHEN invalid_parameter_value OR invalid_text_representation THEN
        bytes := NULL;
    END;
    IF bytes IS NULL OR bytes NOT BETWEEN 16 AND 64 OR (key #>> '{}') !~ '^[A-Za-z0-9+/]+={0,2}$' THEN
        RAISE EXCEPTION '% is not a key: base64 of 16 to 64 bytes is', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Copy the key as IoT Central shows it (Permissions > Device connection groups), 88 characters ending in "==".';
    END IF;
    RETURN key #>> '{}';
END;
$$;

-- Changes an enrollment group as the REST API's PATCH does: displayName,
-- enabled, and its symmetric keys (attestation.symmetricKey), so that a
-- team leaving IoT Central adopts its groups' keys and every migrated
-- device keeps its SAS keys.  If-Match on "etag".  For administrators of
-- the group's organization; keys never appear in a message.
CREATE FUNCTION fleet.update_enrollment_group(enrollment_group_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g     fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(),
                                                                            'changing an enrollment group');
    label text := format('enrollment group "%s"', enrollment_group_id);
    attestation jsonb := changes -> 'attestation';
BEGIN
    -- locked before If-Match, so that a rotation in between is not undone
    SELECT eg.* INTO g FROM fleet.enrollment_groups eg WHERE eg.id = g.id FOR UPDATE;
    PERFORM fleet_internal.require_changes(changes, '{id,displayName,enabled,type,attestation,etag,idScope}', label);
    PERFORM fleet_internal.require_etag(label, changes -> 'etag', fleet_internal.enrollment_group_etag(g));
    IF changes ? 'id' AND changes -> 'id' IS DISTINCT FROM to_jsonb(g.id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF changes ? 'type' AND changes -> 'type' IS DISTINCT FROM to_jsonb(CASE WHEN g.edge THEN 'iotEdge' ELSE 'iot' END) THEN
        RAISE EXCEPTION 'the type of % cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is "%s".', CASE WHEN g.edge THEN 'iotEdge' ELSE 'iot' END);
    END IF;
    IF changes ? 'idScope' AND changes -> 'idScope' IS DISTINCT FROM to_jsonb(current_setting('fleet.id_scope'))
       AND changes ->> 'idScope' IS DISTINCT FROM nullif(current_setting('fleet.id_scope'), '') THEN
        RAISE EXCEPTION 'the idScope of % is the setting fleet.id_scope', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set fleet.id_scope in postgresql.conf to keep IoT Central''s ID scope.';
    END IF;
    IF changes ? 'displayName' THEN
        IF jsonb_typeof(changes -> 'displayName') IS DISTINCT FROM 'string' OR btrim(changes ->> 'displayName') = '' THEN
            RAISE EXCEPTION 'the displayName of % must be a non-empty string', label
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the name IoT Central shows, such as "SAS-IoT-Devices".';
        END IF;
        g.display_name := changes ->> 'displayName';
    END IF;
    IF changes ? 'enabled' THEN
        IF jsonb_typeof(changes -> 'enabled') IS DISTINCT FROM 'boolean' THEN
            RAISE EXCEPTION '"enabled" of % must be true or false', label USING ERRCODE = 'invalid_parameter_value';
        END IF;
        g.enabled := (changes ->> 'enabled')::boolean;
    END IF;
    IF changes ? 'attestation' THEN
        PERFORM fleet_internal.refuse_unknown_keys(attestation, '{type,symmetricKey}', format('the attestation of %s', label));
        IF jsonb_typeof(attestation) IS DISTINCT FROM 'object' OR attestation ->> 'type' IS DISTINCT FROM 'symmetricKey' THEN
            RAISE EXCEPTION 'the attestation of % must be of type "symmetricKey"', label
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'pg_fleet''s enrollment groups derive device keys; X.509 attestation is not supported yet.';
        END IF;
        IF attestation ? 'symmetricKey' THEN
            PERFORM fleet_internal.refuse_unknown_keys(attestation -> 'symmetricKey', '{primaryKey,secondaryKey}',
                                                      format('the symmetric key of %s', label));
            g.primary_key := fleet_internal.require_group_key(attestation #> '{symmetricKey,primaryKey}',
                                                             format('the primary key of %s', label));
            g.secondary_key := fleet_internal.require_group_key(attestation #> '{symmetricKey,secondaryKey}',
                                                               format('the secondary key of %s', label));
        END IF;
    END IF;
    UPDATE fleet.enrollment_groups eg
       SET display_name = g.display_name, enabled = g.enabled,
           primary_key = g.primary_key, secondary_key = g.secondary_key,
           rotated_at = CASE WHEN eg.primary_key IS DISTINCT FROM g.primary_key OR eg.secondary_key IS DISTINCT FROM g.secondary_key
                             THEN pg_catalog.now() ELSE eg.rotated_at END
     WHERE eg.id = g.id;
    RETURN fleet.get_enrollment_group(g.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_enrollment_group(text, jsonb) IS 'Changes an enrollment group''s displayName, enabled, or symmetric keys (to adopt IoT Central''s), If-Match on etag; returns it';

-- Removes an organization's own pair of groups: its devices' keys derive
-- from the groups above it again (and change).  Refused while it has
-- devices, whose keys would change under them.
CREATE FUNCTION fleet.delete_enrollment_groups(organization text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    devices bigint;
BEGIN
    PERFORM fleet_internal.require_organization(organization, caller);
    PERFORM fleet_internal.require_app_role(organization, 'administrator', 'deleting enrollment groups', caller);
    IF organization = 'root' THEN
        RAISE EXCEPTION 'the enrollment groups of organization "root" cannot be deleted'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rotate their keys with fleet.rotate_enrollment_group_key().';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.enrollment_groups g WHERE g.organization_id = delete_enrollment_groups.organization) THEN
        RAISE EXCEPTION 'organization "%" has no enrollment groups of its own', organization
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'Its devices'' keys derive from the groups of an organization above it.';
    END IF;
    PERFORM 1 FROM fleet.enrollment_groups g WHERE g.organization_id = delete_enrollment_groups.organization FOR UPDATE;
    SELECT count(*) INTO devices
      FROM fleet.devices d JOIN fleet_internal.organization_enrollment_groups k
        ON k.organization_id = d.organization_id AND k.edge = d.edge
      JOIN fleet.enrollment_groups g ON g.id = k.group_id
     WHERE g.organization_id = delete_enrollment_groups.organization;
    IF devices > 0 THEN
        RAISE EXCEPTION 'the enrollment groups of organization "%" are in use', organization
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('The keys of %s devices derive from them.', devices),
                  HINT = 'Move or delete those devices first: their keys would change.';
    END IF;
    DELETE FROM fleet.enrollment_groups g WHERE g.organization_id = delete_enrollment_groups.organization;
END;
$$;
COMMENT ON FUNCTION fleet.delete_enrollment_groups(text) IS 'Removes an organization''s own enrollment groups (refused while devices derive their keys from them)';

-- pg_restore loads the dumped keys after CREATE EXTENSION made new ones:
-- keep the dumped keys, or every device key would change with a restore.
CREATE FUNCTION fleet_internal.enrollment_groups_keep_restored_keys()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE fleet.enrollment_groups g
       SET primary_key = NEW.primary_key, secondary_key = NEW.secondary_key, rotated_at = NEW.rotated_at,
           display_name = NEW.display_name, enabled = NEW.enabled
     WHERE g.id = NEW.id;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER keep_restored_keys BEFORE INSERT ON fleet.enrollment_groups
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.enrollment_groups_keep_restored_keys();

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
    UPDATE fleet.enrollment_groups eg
       SET primary_key = CASE WHEN which = 'primary' THEN new_key ELSE eg.primary_key END,
           secondary_key = CASE WHEN which = 'secondary' THEN new_key ELSE eg.secondary_key END,
           rotated_at = pg_catalog.now()
     WHERE eg.id = g.id;
    RETURN fleet.get_enrollment_group(g.id);
END;
$$;
COMMENT ON FUNCTION fleet.rotate_enrollment_group_key(text, text) IS 'Regenerates the primary or secondary key of an enrollment group, and so every device key derived from it; returns the group';

-- Deprecated name (0.1); goes in 0.4.
CREATE FUNCTION fleet.rotate_group_key(group_id text, which text DEFAULT 'primary')
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT fleet.rotate_enrollment_group_key(group_id, which) ->> 'id' $$;
COMMENT ON FUNCTION fleet.rotate_group_key(text, text) IS 'Deprecated: use fleet.rotate_enrollment_group_key(); goes in pg_fleet 0.4';

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
      JOIN fleet_internal.organization_enrollment_groups g ON g.organization_id = d.organization_id AND g.edge = d.edge
     WHERE d.id = device_id;
END;
$$;
COMMENT ON FUNCTION fleet.device_keys(text) IS 'The SAS keys of one device, derived from its organization''s enrollment group (edge devices: the edge group)';
