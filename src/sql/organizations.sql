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
        RAISE EXCEPTION 'organization "%" does not exist', organization
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with fleet.create_organization(), or see the existing ones in fleet.organizations.';
    END IF;
    RETURN organization;
END;
$$;

-- SECURITY DEFINER: members write organizations only through here.  Its
-- path is computed from its parent's; it gets enrollment groups of its own
-- (src/sql/device_keys.sql).
CREATE FUNCTION fleet.create_organization(id text, display_name text, parent text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller      name := fleet_internal.calling_role();
    parent_org  text := coalesce(parent, 'root');
    parent_path text[];
BEGIN
    PERFORM fleet_internal.check_new_object('organization', id, display_name, 128);
    PERFORM fleet_internal.require_organization(parent_org, caller);
    PERFORM fleet_internal.require_app_role(parent_org, 'administrator', 'creating an organization', caller);
    SELECT o.path INTO parent_path FROM fleet.organizations o WHERE o.id = parent_org;
    IF EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = create_organization.id) THEN
        RAISE EXCEPTION 'organization "%" already exists', id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose another id.';
    END IF;
    INSERT INTO fleet.organizations (id, display_name, parent_id, path)
    VALUES (id, display_name, parent_org, parent_path || id);
    PERFORM fleet_internal.create_enrollment_groups(id);
    RETURN id;
END;
$$;
COMMENT ON FUNCTION fleet.create_organization(text, text, text) IS 'Creates an organization below parent (default: root) and returns its id';

-- The organization and every organization below it.
CREATE FUNCTION fleet.organization_subtree(organization text)
RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.id FROM fleet.organizations o WHERE o.path @> ARRAY[organization]
$$;

-- The organization below root that an organization belongs under (itself,
-- or root for root): the unit of fleet.max_running_jobs_per_organization.
CREATE FUNCTION fleet_internal.top_organization(path text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(path[2], path[1]) $$;
