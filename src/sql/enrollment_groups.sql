-- Enrollment groups, as IoT Central's REST API has them (PUT, PATCH, GET
-- and DELETE /enrollmentGroups/{id}): a display name, enabled, a type
-- (iot or iotEdge) and an attestation, symmetric keys or X.509 signing
-- certificates (src/sql/enrollment_group_certificates.sql).
--
-- Every organization has a default pair, one group per type, made with it
-- (root's are IoT Central's SAS-IoT-Devices and SAS-IoT-Edge-Devices): a
-- device that names no group derives its keys from the nearest default
-- pair up its organization's path (src/sql/device_keys.sql).  Any number
-- of other groups can be made, to adopt each of IoT Central's with its
-- keys; a device names one of them in fleet.devices.enrollment_group_id.
--
-- Keys derive every device's key: only administrators of a group's
-- organization read or change it, and no message shows a key.

-- An organization's default pair of groups, with new random keys.
CREATE FUNCTION fleet_internal.create_enrollment_groups(organization text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO fleet.enrollment_groups (id, primary_key, secondary_key, organization_id, edge, organization_default)
    SELECT k.name || '@' || organization, fleet_internal.generate_group_key(), fleet_internal.generate_group_key(),
           organization, k.edge, true
      FROM (VALUES ('SAS-IoT-Devices', false), ('SAS-IoT-Edge-Devices', true)) k(name, edge)
$$;

-- Gives an organization that has none (one made by pg_fleet 0.1) its own
-- default pair.  Every key of its devices that name no group changes:
-- export them again.
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
    IF EXISTS (SELECT 1 FROM fleet.enrollment_groups g
                WHERE g.organization_id = create_enrollment_groups.organization AND g.organization_default) THEN
        RAISE EXCEPTION 'organization "%" already has enrollment groups', organization
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Rotate their keys with fleet.rotate_enrollment_group_key(), or make another group with fleet.import_enrollment_group().';
    END IF;
    PERFORM fleet_internal.create_enrollment_groups(organization);
    RETURN QUERY SELECT fleet.get_enrollment_group(g.id) FROM fleet.enrollment_groups g
                  WHERE g.organization_id = create_enrollment_groups.organization AND g.organization_default
                  ORDER BY g.edge;
END;
$$;
COMMENT ON FUNCTION fleet.create_enrollment_groups(text) IS 'Gives an organization its own default pair of enrollment groups (its devices'' keys change); returns them';

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
            'Root''s groups are SAS-IoT-Devices and SAS-IoT-Edge-Devices; an organization''s end in @ and its id; list them with fleet.list_enrollment_groups().');
    END IF;
    PERFORM fleet_internal.require_app_role(g.organization_id, 'administrator', action, role_name);
    RETURN g;
END;
$$;

-- The group as IoT Central's REST API shows one, keys and certificates
-- included: for administrators of its organization.
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
        'attestation', fleet_internal.enrollment_group_attestation(g),
        'idScope', nullif(current_setting('fleet.id_scope'), ''),
        'etag', fleet_internal.enrollment_group_etag(g),
        'organization', g.organization_id,
        'organizationDefault', g.organization_default,
        'rotatedAt', fleet_internal.rest_timestamp(g.rotated_at)));
END;
$$;
COMMENT ON FUNCTION fleet.get_enrollment_group(text) IS 'The enrollment group as IoT Central''s REST API shows it (displayName, enabled, type, attestation with its keys or certificates, idScope, etag), with its organization; for administrators of its organization';

-- The enrollment groups the caller administers, in IoT Central's shape
-- (GET /enrollmentGroups), optionally of one organization's subtree.
CREATE FUNCTION fleet.list_enrollment_groups(organization text DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    IF organization IS NOT NULL THEN
        PERFORM fleet_internal.require_organization(organization, caller);
    END IF;
    RETURN QUERY
    SELECT fleet.get_enrollment_group(g.id)
      FROM fleet.enrollment_groups g JOIN fleet.organizations o ON o.id = g.organization_id
     WHERE (organization IS NULL OR o.path @> ARRAY[organization])
       AND (fleet_internal.role_sees_everything(caller)
            OR g.organization_id IN (SELECT fleet_internal.organizations_for('administrator', caller)))
     ORDER BY g.id;
END;
$$;
COMMENT ON FUNCTION fleet.list_enrollment_groups(text) IS 'The enrollment groups the caller administers (optionally of one organization''s subtree), each as fleet.get_enrollment_group() shows it';

-- An enrollment group's etag (fleet_internal.etag): its keys go in only as
-- a hash of a hash, so the etag tells nothing of them; an X.509 group's
-- certificates by their thumbprints and verification.
CREATE FUNCTION fleet_internal.enrollment_group_etag(g fleet.enrollment_groups)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.etag(jsonb_build_array(g.display_name, g.enabled, md5(g.primary_key || ':' || g.secondary_key))
                               || CASE WHEN g.attestation = 'x509'
                                       THEN (SELECT jsonb_build_array(coalesce(jsonb_object_agg(c.entry, jsonb_build_array(c.sha1_thumbprint, c.verified)), '{}'))
                                               FROM fleet.enrollment_group_certificates c WHERE c.enrollment_group_id = g.id)
                                       ELSE '[]' END)
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

-- The parts of a REST body every enrollment group write shares: the
-- "idScope" is this server's setting, "enabled" a boolean, "displayName"
-- a non-empty string.
CREATE FUNCTION fleet_internal.check_enrollment_group_body(body jsonb, label text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF body ? 'idScope' AND body -> 'idScope' IS DISTINCT FROM to_jsonb(current_setting('fleet.id_scope'))
       AND body ->> 'idScope' IS DISTINCT FROM nullif(current_setting('fleet.id_scope'), '') THEN
        RAISE EXCEPTION 'the idScope of % is the setting fleet.id_scope', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set fleet.id_scope in postgresql.conf to keep IoT Central''s ID scope.';
    END IF;
    IF body ? 'displayName'
       AND (jsonb_typeof(body -> 'displayName') IS DISTINCT FROM 'string' OR btrim(body ->> 'displayName') = '') THEN
        RAISE EXCEPTION 'the displayName of % must be a non-empty string', label
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the name IoT Central shows, such as "SAS-IoT-Devices".';
    END IF;
    IF body ? 'enabled' AND jsonb_typeof(body -> 'enabled') IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION '"enabled" of % must be true or false', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

-- The symmetric keys of an attestation, both or neither (then NULL: the
-- caller keeps or makes keys).
CREATE FUNCTION fleet_internal.attestation_keys(attestation jsonb, label text,
                                                OUT primary_key text, OUT secondary_key text)
RETURNS record
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT attestation ? 'symmetricKey' OR jsonb_typeof(attestation -> 'symmetricKey') = 'null' THEN
        RETURN;
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(attestation -> 'symmetricKey', '{primaryKey,secondaryKey}',
                                              format('the symmetric key of %s', label));
    primary_key := fleet_internal.require_group_key(attestation #> '{symmetricKey,primaryKey}',
                                                   format('the primary key of %s', label));
    secondary_key := fleet_internal.require_group_key(attestation #> '{symmetricKey,secondaryKey}',
                                                     format('the secondary key of %s', label));
END;
$$;

-- The attestation of a body: an object whose type is symmetricKey or x509,
-- with that type's keys only.  Returns the type.
CREATE FUNCTION fleet_internal.attestation_type(attestation jsonb, label text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(attestation) IS DISTINCT FROM 'object' OR attestation ->> 'type' IS NULL
       OR attestation ->> 'type' NOT IN ('symmetricKey', 'x509') THEN
        RAISE EXCEPTION 'the attestation of % must be of type "symmetricKey" or "x509"', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', coalesce(attestation::text, 'missing')),
                  HINT = 'Write {"type": "symmetricKey"} (keys are made, or give "symmetricKey": {"primaryKey", "secondaryKey"}), or {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": ...}}}}.';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(attestation,
        CASE attestation ->> 'type' WHEN 'symmetricKey' THEN '{type,symmetricKey}'::text[] ELSE '{type,x509}'::text[] END,
        format('the attestation of %s', label));
    RETURN attestation ->> 'type';
END;
$$;

-- Creates an enrollment group from IoT Central's REST body, as PUT
-- /enrollmentGroups/{id} takes it: {"displayName", "enabled", "type": "iot"
-- or "iotEdge", "attestation": {"type": "symmetricKey"} with the keys to
-- adopt (new random ones when none are given), or {"type": "x509",
-- "x509": {"signingCertificates": {"primary": {"certificate": ...}}}}}, and
-- pg_fleet's "organization" (default root).  For administrators of that
-- organization.
CREATE FUNCTION fleet.import_enrollment_group(enrollment_group_id text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller       name := fleet_internal.calling_role();
    label        text := format('enrollment group "%s"', enrollment_group_id);
    organization text;
    attestation  text;
    keys         record;
BEGIN
    IF enrollment_group_id IS NULL OR enrollment_group_id !~ '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}$' THEN
        RAISE EXCEPTION 'invalid enrollment group id "%"', enrollment_group_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An enrollment group id has 1 to 255 letters, digits, ".", "_", ":", "@" or "-", and starts with a letter or digit.';
    END IF;
    body := fleet_internal.rest_body(body, enrollment_group_id, 'enrollment group',
                                     '{id,displayName,enabled,type,attestation,etag,idScope,organization,organizationDefault,rotatedAt}',
                                     '{"displayName": ..., "type": "iot", "attestation": {"type": "symmetricKey"}}');
    IF NOT body ? 'displayName' THEN
        RAISE EXCEPTION '% needs a "displayName"', label
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Add "displayName": "a name people read".';
    END IF;
    PERFORM fleet_internal.check_enrollment_group_body(body, label);
    IF body ? 'type' AND body -> 'type' NOT IN ('"iot"', '"iotEdge"') THEN
        RAISE EXCEPTION 'the type of % must be "iot" or "iotEdge"', label
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It is %s.', body -> 'type');
    END IF;
    IF body ? 'organization' AND jsonb_typeof(body -> 'organization') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'the organization of % must be an organization id', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(body -> 'organizationDefault', 'false') <> 'false' THEN
        RAISE EXCEPTION '% cannot be made an organization''s default group', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Each organization has one default pair, made with it.',
                  HINT = 'Adopt keys into a default group with fleet.update_enrollment_group(), or have devices name this group.';
    END IF;
    organization := coalesce(body ->> 'organization', 'root');
    PERFORM fleet_internal.require_organization(organization, caller);
    PERFORM fleet_internal.require_app_role(organization, 'administrator', 'creating an enrollment group', caller);
    attestation := fleet_internal.attestation_type(body -> 'attestation', label);
    keys := fleet_internal.attestation_keys(body -> 'attestation', label);
    -- (before the insert: keep_restored_keys would rewrite a default group)
    IF EXISTS (SELECT 1 FROM fleet.enrollment_groups g WHERE g.id = enrollment_group_id) THEN
        PERFORM fleet_internal.refuse_existing('enrollment group', enrollment_group_id,
                                               'Change it with fleet.update_enrollment_group(), or choose another id.');
    END IF;

    INSERT INTO fleet.enrollment_groups (id, primary_key, secondary_key, organization_id, edge, display_name, enabled,
                                         organization_default, attestation)
    VALUES (enrollment_group_id,
            CASE WHEN attestation = 'symmetricKey' THEN coalesce(keys.primary_key, fleet_internal.generate_group_key()) END,
            CASE WHEN attestation = 'symmetricKey' THEN coalesce(keys.secondary_key, fleet_internal.generate_group_key()) END,
            -- (a body without "type" makes an iot group, as IoT Central's default)
            organization, coalesce(body ->> 'type' = 'iotEdge', false), body ->> 'displayName', coalesce((body ->> 'enabled')::boolean, true),
            false, attestation)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN     -- (made meanwhile)
        PERFORM fleet_internal.refuse_existing('enrollment group', enrollment_group_id,
                                               'Change it with fleet.update_enrollment_group(), or choose another id.');
    END IF;
    IF attestation = 'x509' THEN
        PERFORM fleet_internal.set_signing_certificates(enrollment_group_id, body #> '{attestation,x509}', label);
    END IF;
    RETURN fleet.get_enrollment_group(enrollment_group_id);
END;
$$;
COMMENT ON FUNCTION fleet.import_enrollment_group(text, jsonb) IS 'Creates an enrollment group from IoT Central''s REST body (displayName, enabled, type, attestation: symmetric keys to adopt or made, or X.509 signing certificates), in pg_fleet''s "organization" (default root); returns it';

-- Changes an enrollment group as the REST API's PATCH does: displayName,
-- enabled, its symmetric keys (attestation.symmetricKey), so that a team
-- leaving IoT Central adopts its groups' keys and every migrated device
-- keeps its SAS keys, or an X.509 group's signing certificates.  If-Match
-- on "etag".  For administrators of the group's organization; keys never
-- appear in a message.
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
    keys  record;
BEGIN
    -- locked before If-Match, so that a rotation in between is not undone
    -- (its key stays: imports and devices naming it go on meanwhile)
    SELECT eg.* INTO g FROM fleet.enrollment_groups eg WHERE eg.id = g.id FOR NO KEY UPDATE;
    PERFORM fleet_internal.require_changes(changes,
        '{id,displayName,enabled,type,attestation,etag,idScope,organization,organizationDefault,rotatedAt}', label);
    PERFORM fleet_internal.require_etag(label, changes -> 'etag', fleet_internal.enrollment_group_etag(g));
    IF changes ? 'id' AND changes -> 'id' IS DISTINCT FROM to_jsonb(g.id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF changes ? 'type' AND changes -> 'type' IS DISTINCT FROM to_jsonb(CASE WHEN g.edge THEN 'iotEdge' ELSE 'iot' END) THEN
        RAISE EXCEPTION 'the type of % cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is "%s".', CASE WHEN g.edge THEN 'iotEdge' ELSE 'iot' END);
    END IF;
    IF changes ? 'organization' AND changes -> 'organization' IS DISTINCT FROM to_jsonb(g.organization_id) THEN
        RAISE EXCEPTION 'the organization of % cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is "%s"; its devices'' keys derive from it.', g.organization_id);
    END IF;
    IF changes ? 'organizationDefault' AND changes -> 'organizationDefault' IS DISTINCT FROM to_jsonb(g.organization_default) THEN
        RAISE EXCEPTION 'whether % is its organization''s default cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Each organization has one default pair, made with it.';
    END IF;
    PERFORM fleet_internal.check_enrollment_group_body(changes, label);
    IF changes ? 'displayName' THEN
        g.display_name := changes ->> 'displayName';
    END IF;
    IF changes ? 'enabled' THEN
        g.enabled := (changes ->> 'enabled')::boolean;
    END IF;
    IF changes ? 'attestation' THEN
        IF fleet_internal.attestation_type(changes -> 'attestation', label) <> g.attestation THEN
            RAISE EXCEPTION 'the attestation type of % cannot change', label
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('It is "%s".', g.attestation),
                      HINT = 'Make a group of the other type with fleet.import_enrollment_group(), and have devices name it.';
        END IF;
        keys := fleet_internal.attestation_keys(changes -> 'attestation', label);
        g.primary_key := coalesce(keys.primary_key, g.primary_key);
        g.secondary_key := coalesce(keys.secondary_key, g.secondary_key);
        IF g.attestation = 'x509' THEN
            PERFORM fleet_internal.set_signing_certificates(g.id, changes #> '{attestation,x509}', label);
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
COMMENT ON FUNCTION fleet.update_enrollment_group(text, jsonb) IS 'Changes an enrollment group''s displayName, enabled, symmetric keys (to adopt IoT Central''s) or signing certificates, If-Match on etag; returns it';

-- Deletes an enrollment group made with import_enrollment_group()
-- (DELETE /enrollmentGroups/{id}).  Refused while devices name it: their
-- keys would change under them.  Default groups go with
-- fleet.delete_enrollment_groups().
CREATE FUNCTION fleet.delete_enrollment_group(enrollment_group_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g       fleet.enrollment_groups := fleet_internal.require_enrollment_group(enrollment_group_id, fleet_internal.calling_role(),
                                                                              'deleting an enrollment group');
    devices bigint;
BEGIN
    IF g.organization_default THEN
        RAISE EXCEPTION 'enrollment group "%" is the default group of organization "%"', g.id, g.organization_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE WHEN g.organization_id = 'root' THEN 'Rotate its keys with fleet.rotate_enrollment_group_key(), or disable it.'
                              ELSE format('Remove the organization''s default pair with fleet.delete_enrollment_groups(%L).', g.organization_id) END;
    END IF;
    -- locked, so that no device is given the group while it goes
    PERFORM 1 FROM fleet.enrollment_groups eg WHERE eg.id = g.id FOR UPDATE;
    SELECT count(*) INTO devices FROM fleet.devices d WHERE d.enrollment_group_id = g.id;
    IF devices > 0 THEN
        PERFORM fleet_internal.refuse_in_use('enrollment group', g.id, format('The keys of %s devices derive from it.', devices),
                                             'Give those devices another group with fleet.update_device(), or delete them.');
    END IF;
    DELETE FROM fleet.enrollment_groups eg WHERE eg.id = g.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_enrollment_group(text) IS 'Deletes an enrollment group that is not a default one (refused while devices name it)';

-- Removes an organization's own default pair: its devices that name no
-- group derive their keys from the pair above it again (and change).
-- Refused while it has such devices, whose keys would change under them.
CREATE FUNCTION fleet.delete_enrollment_groups(organization text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    devices bigint;
    pair    text[];
BEGIN
    PERFORM fleet_internal.require_organization(organization, caller);
    PERFORM fleet_internal.require_app_role(organization, 'administrator', 'deleting enrollment groups', caller);
    IF organization = 'root' THEN
        RAISE EXCEPTION 'the enrollment groups of organization "root" cannot be deleted'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rotate their keys with fleet.rotate_enrollment_group_key().';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.enrollment_groups g
                    WHERE g.organization_id = delete_enrollment_groups.organization AND g.organization_default) THEN
        RAISE EXCEPTION 'organization "%" has no enrollment groups of its own', organization
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'Its devices'' keys derive from the groups of an organization above it.';
    END IF;
    PERFORM 1 FROM fleet.enrollment_groups g
      WHERE g.organization_id = delete_enrollment_groups.organization AND g.organization_default FOR UPDATE;
    -- devices that derive from the pair without naming it, and those that
    -- name it: only devices of the organization's subtree can do either
    -- (one join, not a lookup per device)
    pair := ARRAY(SELECT g.id FROM fleet.enrollment_groups g
                   WHERE g.organization_id = delete_enrollment_groups.organization AND g.organization_default);
    SELECT count(*) INTO devices
      FROM fleet.devices d
      JOIN fleet.organizations o ON o.id = d.organization_id AND o.path @> ARRAY[delete_enrollment_groups.organization]
      LEFT JOIN fleet_internal.organization_enrollment_groups k ON k.organization_id = d.organization_id AND k.edge = d.edge
     WHERE d.enrollment_group_id = ANY (pair)
        OR (d.enrollment_group_id IS NULL AND k.group_id = ANY (pair));
    IF devices > 0 THEN
        RAISE EXCEPTION 'the enrollment groups of organization "%" are in use', organization
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('The keys of %s devices derive from them.', devices),
                  HINT = 'Move or delete those devices first: their keys would change.';
    END IF;
    DELETE FROM fleet.enrollment_groups g
     WHERE g.organization_id = delete_enrollment_groups.organization AND g.organization_default;
END;
$$;
COMMENT ON FUNCTION fleet.delete_enrollment_groups(text) IS 'Removes an organization''s own default enrollment groups (refused while devices derive their keys from them)';

-- pg_restore loads the dumped keys after CREATE EXTENSION made new ones
-- for root's default groups: keep the dumped keys, or every device key
-- would change with a restore.  (Only those: no other row exists before
-- a restore, and the API refuses an existing id before it inserts.)
CREATE FUNCTION fleet_internal.enrollment_groups_keep_restored_keys()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE fleet.enrollment_groups g
       SET primary_key = NEW.primary_key, secondary_key = NEW.secondary_key, rotated_at = NEW.rotated_at,
           display_name = NEW.display_name, enabled = NEW.enabled
     WHERE g.id = NEW.id AND g.organization_default AND NEW.organization_default
       AND g.organization_id = 'root' AND NEW.organization_id = 'root';
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER keep_restored_keys BEFORE INSERT ON fleet.enrollment_groups
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.enrollment_groups_keep_restored_keys();
