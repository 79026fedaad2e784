-- Enrollment groups and device keys.  IoT Central's two SAS enrollment
-- groups get random 64-byte keys at install; device keys are derived from
-- them (device_keys.c), never stored.

-- C functions look no names up, so they carry no SET search_path: on
-- compute_device_key it would add a configuration save and restore to each
-- of the two calls per exported device.
CREATE FUNCTION fleet.compute_device_key(group_key text, device_id text)
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'compute_device_key';
COMMENT ON FUNCTION fleet.compute_device_key(text, text) IS 'base64(HMAC-SHA256(base64decode(group_key), device_id)): the Device Provisioning Service''s derived device key';


-- pg_restore loads the dumped keys after CREATE EXTENSION made new ones:
-- keep the dumped keys, or every device key would change with a restore.
CREATE FUNCTION fleet.enrollment_groups_keep_restored_keys()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE fleet.enrollment_groups g
       SET primary_key = NEW.primary_key, secondary_key = NEW.secondary_key, rotated_at = NEW.rotated_at
     WHERE g.id = NEW.id;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER keep_restored_keys BEFORE INSERT ON fleet.enrollment_groups
    FOR EACH ROW EXECUTE FUNCTION fleet.enrollment_groups_keep_restored_keys();

-- Rotation: a new random key for one slot of one group.  Devices keep their
-- other key working meanwhile, as with IoT Central's regenerate.
CREATE FUNCTION fleet.rotate_group_key(group_id text, which text DEFAULT 'primary')
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_key text := fleet.generate_group_key();
BEGIN
    PERFORM fleet.require_app_role('root', 'administrator', 'rotating an enrollment group key');
    IF which IS NULL OR which NOT IN ('primary', 'secondary') THEN
        RAISE EXCEPTION 'unknown key slot "%"', which
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Rotate the ''primary'' or the ''secondary'' key.';
    END IF;
    UPDATE fleet.enrollment_groups g
       SET primary_key = CASE WHEN which = 'primary' THEN new_key ELSE g.primary_key END,
           secondary_key = CASE WHEN which = 'secondary' THEN new_key ELSE g.secondary_key END,
           rotated_at = pg_catalog.now()
     WHERE g.id = group_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'enrollment group "%" does not exist', group_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'The enrollment groups are SAS-IoT-Devices and SAS-IoT-Edge-Devices.';
    END IF;
    RETURN group_id;
END;
$$;
COMMENT ON FUNCTION fleet.rotate_group_key(text, text) IS 'Regenerates the primary or secondary key of an enrollment group, and so every device key derived from it';

-- One device's keys, derived from its enrollment group.
CREATE FUNCTION fleet.device_keys(device_id text, OUT primary_key text, OUT secondary_key text)
RETURNS record
LANGUAGE plpgsql STABLE
-- SECURITY DEFINER: reads the enrollment group keys (root administrators
-- only) to derive the keys of one device for an administrator of its
-- organization; a device the caller cannot see does not exist for it.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller       name := fleet.calling_role();
    organization text;
BEGIN
    SELECT d.organization_id INTO organization FROM fleet.devices d WHERE d.id = device_id;
    IF organization IS NULL
       OR organization NOT IN (SELECT fleet.organizations_for('viewer', caller)) THEN
        RAISE EXCEPTION 'device "%" does not exist', device_id
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM fleet.require_app_role(organization, 'administrator', 'reading device keys', caller);
    SELECT fleet.compute_device_key(g.primary_key, d.id), fleet.compute_device_key(g.secondary_key, d.id)
      INTO primary_key, secondary_key
      FROM fleet.devices d
      JOIN fleet.enrollment_groups g
        ON g.id = CASE WHEN d.edge THEN 'SAS-IoT-Edge-Devices' ELSE 'SAS-IoT-Devices' END
     WHERE d.id = device_id;
END;
$$;
COMMENT ON FUNCTION fleet.device_keys(text) IS 'The SAS keys of one device, derived from its enrollment group (edge devices: SAS-IoT-Edge-Devices)';
