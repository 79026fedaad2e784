-- The device registry.
--
-- fleet.devices has no foreign keys: they are per-row triggers, which would
-- dominate the cost of importing a million devices and stand in the way of
-- distributing the table later (DESIGN.md section 7).  Every function that
-- writes devices checks what they refer to, and the functions that delete a
-- template, organization or edge manifest refuse while devices use it.  (No
-- trigger either: Citus allows none on distributed and reference tables.)


-- The device, or "does not exist" unless the role sees it.
CREATE FUNCTION fleet_internal.visible_device(device_id text, role_name name)
RETURNS fleet.devices
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    device fleet.devices;
BEGIN
    SELECT d.* INTO device FROM fleet.devices d WHERE d.id = visible_device.device_id;
    IF NOT FOUND OR NOT fleet_internal.sees(role_name, device.organization_id) THEN
        PERFORM fleet_internal.refuse_missing('device', device_id);
    END IF;
    RETURN device;
END;
$$;

-- The device as IoT Central's REST API shows it, with its twin-shaped
-- properties: fleet.device_document().
CREATE FUNCTION fleet.get_device(device_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d fleet.devices := fleet_internal.visible_device(device_id, fleet_internal.calling_role());
BEGIN
    RETURN fleet.device_document(d) || jsonb_build_object('enrollmentGroup', fleet_internal.device_enrollment_group(d.id));
END;
$$;
COMMENT ON FUNCTION fleet.get_device(text) IS 'The device as JSON: id, displayName, template, organization, simulated, provisioned, edge, manifest, properties, reported, cloudProperties, and the enrollmentGroup its keys derive from';

-- SECURITY DEFINER, as every function that writes: members hold no write
-- privilege on the tables (src/sql/access.sql).
CREATE FUNCTION fleet.create_device(device_id text, display_name text DEFAULT NULL, template text DEFAULT NULL,
                                    organization text DEFAULT NULL, simulated boolean DEFAULT false,
                                    edge boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    problem text;
BEGIN
    problem := fleet_internal.device_identity_problem(device_id, display_name);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A device id has 1 to 128 letters, digits or "-", and no spaces; a device name at most 148 characters.';
    END IF;
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
    PERFORM fleet_internal.require_organization(coalesce(organization, 'root'), caller);
    PERFORM fleet_internal.require_app_role(coalesce(organization, 'root'), 'operator', 'creating a device', caller);
    IF simulated IS NULL OR edge IS NULL THEN
        RAISE EXCEPTION 'simulated and edge must be true or false, not NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;

    INSERT INTO fleet.devices (id, display_name, template_id, organization_id, simulated, edge)
    VALUES (device_id, coalesce(nullif(display_name, ''), device_id), template, coalesce(organization, 'root'),
            simulated, edge)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        PERFORM fleet_internal.refuse_existing('device', device_id,
                                               'Device ids are unique across the application; choose another id.');
    END IF;
    RETURN fleet.get_device(device_id);
END;
$$;
COMMENT ON FUNCTION fleet.create_device(text, text, text, text, boolean, boolean) IS 'Registers one device and returns it; the name defaults to the id, the organization to root';

-- Changes a device's name, organization, simulated flag or enrollment
-- group ({"displayName", "organization", "simulated", "enrollmentGroup"}).
-- Its template changes through a template migration job, its manifest
-- through a manifest job.  A device that names no group and moves to an
-- organization with enrollment groups of its own gets keys derived from
-- them; one that names a group keeps it, which must be available in the
-- new organization.  Naming a group (null: the organization's default)
-- changes the device's keys, and is for administrators.
CREATE FUNCTION fleet.update_device(device_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    device  fleet.devices := fleet_internal.visible_device(device_id, fleet_internal.calling_role());
    label   text := format('device "%s"', device_id);
    problem text;
BEGIN
    PERFORM fleet_internal.require_changes(changes, '{displayName,organization,simulated,enrollmentGroup}', label);
    PERFORM fleet_internal.require_app_role(device.organization_id, 'operator', 'changing a device', caller);
    -- locked and read again, so that a change made meanwhile is not written back over
    SELECT d.* INTO device FROM fleet.devices d WHERE d.id = device.id FOR UPDATE;
    IF changes ? 'displayName' THEN
        device.display_name := coalesce(nullif(changes ->> 'displayName', ''), device.id);
        problem := fleet_internal.device_identity_problem(device.id, device.display_name);
        IF problem IS NOT NULL OR jsonb_typeof(changes -> 'displayName') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'invalid display name for %', label
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = coalesce(problem, 'It is not a string.'),
                      HINT = 'A device name is a string of at most 148 characters.';
        END IF;
    END IF;
    IF changes ? 'organization' THEN
        IF jsonb_typeof(changes -> 'organization') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'the organization of % must be an organization id', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        device.organization_id := fleet_internal.require_organization(changes ->> 'organization', caller);
        PERFORM fleet_internal.require_app_role(device.organization_id, 'operator', 'moving a device', caller);
    END IF;
    IF changes ? 'simulated' THEN
        IF jsonb_typeof(changes -> 'simulated') IS DISTINCT FROM 'boolean' THEN
            RAISE EXCEPTION '"simulated" of % must be true or false', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        device.simulated := (changes -> 'simulated')::boolean;
    END IF;
    IF changes ? 'enrollmentGroup' THEN
        IF jsonb_typeof(changes -> 'enrollmentGroup') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'the enrollmentGroup of % must be an enrollment group id, or null for its organization''s default', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        device.enrollment_group_id := changes ->> 'enrollmentGroup';
    END IF;
    IF changes ? 'enrollmentGroup' THEN
        -- (the device's keys change)
        PERFORM fleet_internal.require_app_role(device.organization_id, 'administrator', 'choosing a device''s enrollment group', caller);
    END IF;
    IF device.enrollment_group_id IS NOT NULL
       AND (changes ? 'enrollmentGroup' OR changes ? 'organization') THEN
        PERFORM fleet_internal.require_device_enrollment_group(device.enrollment_group_id, device.organization_id, device.edge,
                                                               label, caller, changes ? 'enrollmentGroup');
    END IF;
    UPDATE fleet.devices d
       SET display_name = device.display_name, organization_id = device.organization_id, simulated = device.simulated,
           enrollment_group_id = device.enrollment_group_id
     WHERE d.id = device.id;
    RETURN fleet.get_device(device.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_device(text, jsonb) IS 'Changes a device''s displayName, organization, simulated flag or enrollmentGroup; returns the device';

CREATE FUNCTION fleet.delete_device(device_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    -- a device the caller cannot see "does not exist"; one it only views is refused
    device fleet.devices := fleet_internal.visible_device(device_id, fleet_internal.calling_role());
BEGIN
    PERFORM fleet_internal.require_app_role(device.organization_id, 'operator', 'deleting a device', caller);
    DELETE FROM fleet.devices d WHERE d.id = device.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_device(text) IS 'Deletes a device; jobs that ran on it keep their rows and show it as deleted';

-- The device as one jsonb document, what device group filters are matched
-- against.
-- The same from the device's columns: what statements over many devices
-- call, since Citus sends each shard's statement to a worker, where a
-- whole row of fleet.devices is a row of the shard's own type.
CREATE FUNCTION fleet_internal.device_document_of(
    id text, display_name text, template_id text, organization_id text, simulated boolean,
    connection_state text, last_activity_at timestamptz, edge boolean, manifest_id text,
    properties jsonb, reported jsonb, cloud_properties jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'id', id,
        'displayName', display_name,
        'template', template_id,
        'organization', organization_id,
        'simulated', simulated,
        -- IoT Central's devices are provisioned once they first connect;
        -- one registered here may connect through any gateway, so a
        -- registered device counts
        'provisioned', true,
        -- its connection to the MQTT endpoint (false: never connected)
        'connected', coalesce(connection_state = 'connected', false),
        'lastActivityTime', last_activity_at,
        'edge', edge,
        'manifest', manifest_id,
        'properties', properties,
        'reported', reported,
        'cloudProperties', cloud_properties)
$$;

CREATE FUNCTION fleet.device_document(device fleet.devices)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.device_document_of(device.id, device.display_name, device.template_id,
        device.organization_id, device.simulated, device.connection_state, device.last_activity_at,
        device.edge, device.manifest_id, device.properties, device.reported, device.cloud_properties)
$$;
COMMENT ON FUNCTION fleet.device_document(fleet.devices) IS 'The device as jsonb (id, displayName, template, organization, simulated, provisioned, connected, lastActivityTime, edge, manifest, properties, reported, cloudProperties), matched by device group filters';
