-- Organizations: a hierarchy under the built-in root organization.  Devices,
-- groups and jobs belong to one organization; a member of an organization
-- sees it and everything below it (src/sql/access.sql).

-- Refuses unless the organization exists and the role sees it: one it does
-- not see does not exist for it.  Used by every function that takes an
-- organization argument, so the message is the same everywhere.
CREATE FUNCTION fleet_internal.require_organization(organization text, role_name name DEFAULT fleet_internal.calling_role())
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = organization)
       OR NOT fleet_internal.sees(role_name, organization) THEN
        PERFORM fleet_internal.refuse_missing('organization', organization,
            'Create it with fleet.create_organization(), or see the existing ones in fleet.organizations.');
    END IF;
    RETURN organization;
END;
$$;

CREATE FUNCTION fleet.get_organization(organization_id text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object('id', o.id, 'displayName', o.display_name, 'parent', o.parent_id))
      FROM fleet.organizations o
     WHERE o.id = fleet_internal.require_organization(organization_id)
$$;
COMMENT ON FUNCTION fleet.get_organization(text) IS 'The organization as JSON: id, displayName, parent';

-- SECURITY DEFINER: members write organizations only through here.  Its
-- path is computed from its parent's; it gets enrollment groups of its own
-- (src/sql/device_keys.sql).
CREATE FUNCTION fleet.create_organization(organization_id text, display_name text, parent text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller      name := fleet_internal.calling_role();
    parent_org  text := coalesce(parent, 'root');
    parent_path text[];
BEGIN
    PERFORM fleet_internal.check_new_object('organization', organization_id, display_name, 128);
    PERFORM fleet_internal.require_organization(parent_org, caller);
    PERFORM fleet_internal.require_app_role(parent_org, 'administrator', 'creating an organization', caller);
    SELECT o.path INTO parent_path FROM fleet.organizations o WHERE o.id = parent_org;
    IF EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = create_organization.organization_id) THEN
        PERFORM fleet_internal.refuse_existing('organization', organization_id);
    END IF;
    INSERT INTO fleet.organizations (id, display_name, parent_id, path)
    VALUES (organization_id, display_name, parent_org, parent_path || organization_id);
    PERFORM fleet_internal.create_enrollment_groups(organization_id);
    RETURN fleet.get_organization(organization_id);
END;
$$;

-- Creates an organization from IoT Central's REST body, as PUT
-- /organizations/{id} takes it: {"displayName", "parent"} (and "id", which
-- must be the same).
CREATE FUNCTION fleet.import_organization(organization_id text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER      -- (create_organization checks the caller)
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    label text := format('organization "%s"', organization_id);
BEGIN
    body := fleet_internal.rest_body(body, organization_id, 'organization', '{id,displayName,parent}',
                                     '{"displayName": ..., "parent": ...}');
    IF jsonb_typeof(body -> 'displayName') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% needs a "displayName"', label
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Add "displayName": "a name people read".';
    END IF;
    IF body ? 'parent' AND jsonb_typeof(body -> 'parent') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'the parent of % must be an organization id', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN fleet.create_organization(organization_id, body ->> 'displayName', body ->> 'parent');
END;
$$;
COMMENT ON FUNCTION fleet.import_organization(text, jsonb) IS 'Creates an organization from IoT Central''s REST body ({"displayName", "parent"}); returns it';
COMMENT ON FUNCTION fleet.create_organization(text, text, text) IS 'Creates an organization below parent (default: root) and returns it';

-- Renames an organization ({"displayName"}; "id" and "parent" may come
-- with it, unchanged).  Moving one under another parent is not supported: it would change who sees its devices while
-- their jobs run.
CREATE FUNCTION fleet.update_organization(organization_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    label  text := format('organization "%s"', organization_id);
BEGIN
    PERFORM fleet_internal.require_organization(organization_id, caller);
    PERFORM fleet_internal.require_app_role(organization_id, 'administrator', 'changing an organization', caller);
    -- (IoT Central's PATCH body may repeat the id and parent unchanged)
    IF jsonb_typeof(changes) = 'object' AND changes ? 'parent'
       AND changes -> 'parent' IS DISTINCT FROM (SELECT to_jsonb(o.parent_id) FROM fleet.organizations o
                                                  WHERE o.id = update_organization.organization_id) THEN
        RAISE EXCEPTION 'the parent of % cannot change', label
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create an organization under the new parent and move the devices to it with fleet.update_device().';
    END IF;
    IF jsonb_typeof(changes) = 'object' AND changes ? 'id' AND changes -> 'id' IS DISTINCT FROM to_jsonb(organization_id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM fleet_internal.require_changes(changes, '{id,displayName,parent}', label);
    IF changes ? 'displayName' THEN
        UPDATE fleet.organizations o
           SET display_name = fleet_internal.changed_display_name(changes, 'organization', organization_id, 128)
         WHERE o.id = update_organization.organization_id;
    END IF;
    RETURN fleet.get_organization(organization_id);
END;
$$;
COMMENT ON FUNCTION fleet.update_organization(text, jsonb) IS 'Renames an organization (displayName); returns it';

-- Deletes an organization with nothing in it: no organization below it,
-- no device, group, job or scheduled job.  Its members' grants and its
-- enrollment groups go with it.  For administrators of its parent, as
-- creating it was; root stays.
CREATE FUNCTION fleet.delete_organization(organization_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    org    fleet.organizations;
    uses   text[];
BEGIN
    PERFORM fleet_internal.require_organization(organization_id, caller);
    SELECT o.* INTO org FROM fleet.organizations o WHERE o.id = delete_organization.organization_id FOR UPDATE;
    IF org.parent_id IS NULL THEN
        RAISE EXCEPTION 'organization "root" cannot be deleted'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM fleet_internal.require_app_role(org.parent_id, 'administrator', 'deleting an organization', caller);
    SELECT array_remove(ARRAY[
               (SELECT format('%s organizations below it', count(*)) FROM fleet.organizations o
                 WHERE o.parent_id = org.id HAVING count(*) > 0),
               (SELECT format('%s devices', count(*)) FROM fleet.devices d
                 WHERE d.organization_id = org.id HAVING count(*) > 0),
               (SELECT format('%s device groups', count(*)) FROM fleet.device_groups g
                 WHERE g.organization_id = org.id HAVING count(*) > 0),
               (SELECT format('%s jobs', count(*)) FROM fleet.jobs j
                 WHERE j.organization_id = org.id HAVING count(*) > 0),
               (SELECT format('%s scheduled jobs', count(*)) FROM fleet.scheduled_jobs s
                 WHERE s.organization_id = org.id HAVING count(*) > 0)], NULL)
      INTO uses;
    IF cardinality(uses) > 0 THEN
        PERFORM fleet_internal.refuse_in_use('organization', org.id,
            format('It holds %s.', array_to_string(uses, ', ')),
            'Delete or move what it holds first; deleted and finished jobs go after fleet.job_retention.');
    END IF;
    -- Its default enrollment groups go with it.  Deleted here, not left to
    -- the foreign key's ON DELETE CASCADE: on Citus the groups stay on the
    -- coordinator and the organizations are a reference table, whose rows
    -- are deleted from its shards, so the key's trigger never fires.
    DELETE FROM fleet.enrollment_groups g WHERE g.organization_id = org.id;
    DELETE FROM fleet.organizations o WHERE o.id = org.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_organization(text) IS 'Deletes an organization that holds nothing (no organization below it, device, group, job or scheduled job)';

-- The organization and every organization below it that the caller sees.
CREATE FUNCTION fleet.list_organizations(organization text DEFAULT 'root')
RETURNS TABLE (id text, display_name text, parent_id text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT o.id, o.display_name, o.parent_id
      FROM fleet.organizations o
     WHERE o.path @> ARRAY[list_organizations.organization]
     ORDER BY o.path;
END;
$$;
COMMENT ON FUNCTION fleet.list_organizations(text) IS 'An organization (default: root) and those below it that the caller sees, parents first';

-- The organization below root that an organization belongs under (itself,
-- or root for root): the unit of fleet.max_running_jobs_per_organization.
CREATE FUNCTION fleet_internal.top_organization(path text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(path[2], path[1]) $$;
