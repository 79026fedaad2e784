-- The device registry.
--
-- fleet.devices has no foreign keys: they are per-row triggers, which would
-- dominate the cost of importing a million devices and stand in the way of
-- distributing the table later (DESIGN.md section 7).  Every function that
-- writes devices checks what they refer to, and the referenced tables refuse
-- to lose a row that devices still use (fleet_internal.refuse_delete_in_use).


-- Refuses to delete a template, organization or manifest that devices use.
CREATE FUNCTION fleet_internal.refuse_delete_in_use()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    in_use bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM fleet.devices WHERE %I = $1', TG_ARGV[0])
       INTO in_use USING OLD.id;
    IF in_use > 0 THEN
        RAISE EXCEPTION '% "%" is still in use', TG_ARGV[1], OLD.id
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('%s devices refer to it.', in_use),
                  HINT = 'Move or delete those devices first.';
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER refuse_delete_in_use BEFORE DELETE ON fleet.device_templates
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.refuse_delete_in_use('template_id', 'device template');
CREATE TRIGGER refuse_delete_in_use BEFORE DELETE ON fleet.organizations
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.refuse_delete_in_use('organization_id', 'organization');
CREATE TRIGGER refuse_delete_in_use BEFORE DELETE ON fleet.edge_manifests
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.refuse_delete_in_use('manifest_id', 'edge manifest');

CREATE FUNCTION fleet_internal.require_template(template text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.device_templates t WHERE t.id = template) THEN
        RAISE EXCEPTION 'device template "%" does not exist', template
            USING ERRCODE = 'undefined_object',
                  HINT = 'Import it with fleet.import_template(), or see the existing ones in fleet.device_templates.';
    END IF;
    RETURN template;
END;
$$;

-- SECURITY DEFINER, as every function that writes: members hold no write
-- privilege on the tables (src/sql/access.sql).
CREATE FUNCTION fleet.create_device(id text, display_name text DEFAULT NULL, template text DEFAULT NULL,
                                    organization text DEFAULT NULL, simulated boolean DEFAULT false,
                                    edge boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    problem text;
BEGIN
    problem := fleet_internal.device_identity_problem(id, display_name);
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
    VALUES (id, coalesce(nullif(display_name, ''), id), template, coalesce(organization, 'root'), simulated, edge)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'device "%" already exists', id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Device ids are unique across the application; choose another id.';
    END IF;
    RETURN id;
END;
$$;
COMMENT ON FUNCTION fleet.create_device(text, text, text, text, boolean, boolean) IS 'Registers one device; the name defaults to the id, the organization to root';

CREATE FUNCTION fleet.delete_device(id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller       name := fleet_internal.calling_role();
    organization text;
BEGIN
    -- a device the caller cannot see "does not exist"; one it only views is refused
    SELECT d.organization_id INTO organization FROM fleet.devices d WHERE d.id = delete_device.id;
    IF organization IS NULL OR NOT fleet_internal.sees(caller, organization) THEN
        RAISE EXCEPTION 'device "%" does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM fleet_internal.require_app_role(organization, 'operator', 'deleting a device', caller);
    DELETE FROM fleet.devices d WHERE d.id = delete_device.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_device(text) IS 'Deletes a device; jobs that ran on it keep their rows and show it as deleted';

-- The device as one jsonb document, what device group filters are matched
-- against.
CREATE FUNCTION fleet.device_document(device fleet.devices)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'id', device.id,
        'displayName', device.display_name,
        'template', device.template_id,
        'organization', device.organization_id,
        'simulated', device.simulated,
        'edge', device.edge,
        'manifest', device.manifest_id,
        'properties', device.properties,
        'reported', device.reported,
        'cloudProperties', device.cloud_properties)
$$;
COMMENT ON FUNCTION fleet.device_document(fleet.devices) IS 'The device as jsonb (id, displayName, template, organization, simulated, edge, manifest, properties, reported, cloudProperties), matched by device group filters';
