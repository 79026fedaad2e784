-- Organizations' roles and rights (DESIGN.md section 5).
--
-- A database role is granted an application role in an organization:
-- viewer (reads devices, groups, templates, jobs and results), operator
-- (also imports devices, runs jobs and schedules) or administrator (also
-- manages the organizations below and their members, exports devices with
-- their keys, reads and rotates its enrollment group keys).  A grant holds
-- in the organization and every organization below it; a role also holds
-- what the roles it inherits from hold.
--
-- Members read through row-level security (src/sql/privileges.sql) and
-- change data only through the API: every function that writes is
-- SECURITY DEFINER, names its caller with fleet_internal.calling_role(), checks the
-- caller's rights here, and looks things up only among what the caller
-- sees.  Members hold no write privilege on any table, so they can neither
-- write what the engine trusts nor lock what it needs.  Superusers and
-- BYPASSRLS roles (the engine runs as one) see all.

CREATE FUNCTION fleet_internal.app_role_rank(app_role text)
RETURNS int
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE app_role WHEN 'viewer' THEN 1 WHEN 'operator' THEN 2 WHEN 'administrator' THEN 3 END $$;

-- The role a request comes from, also inside a SECURITY DEFINER function
-- (where current_user is the function's owner): the role set with SET
-- ROLE, or the session's.  PostgreSQL gives a definer function no other
-- view of its caller: a privileged session that runs another role's
-- SECURITY DEFINER code lends that code its identity here, as it lends its
-- rights to any code it runs (README, Security).
CREATE FUNCTION fleet_internal.calling_role()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
                ELSE pg_catalog.current_setting('role')::name END
$$;

-- Superusers and BYPASSRLS roles are not subject to organizations.
CREATE FUNCTION fleet_internal.role_sees_everything(role_name name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = role_name), false) $$;

-- The organizations where a role holds at least min_role: those it (or a
-- role it inherits from) was granted at or above.  With the caller's
-- rights it reads only the caller's own memberships, which is all it needs.
CREATE FUNCTION fleet_internal.organizations_for(min_role text, role_name name DEFAULT current_user)
RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.id
      FROM fleet.organizations o
     WHERE fleet_internal.role_sees_everything(role_name)
        OR EXISTS (SELECT 1 FROM fleet.organization_members m
                    WHERE m.organization_id = ANY (o.path)
                      AND pg_catalog.pg_has_role(role_name, m.member, 'USAGE')
                      AND fleet_internal.app_role_rank(m.app_role) >= fleet_internal.app_role_rank(min_role))
$$;
COMMENT ON FUNCTION fleet_internal.organizations_for(text, name) IS 'The organizations where a role (default: the current one) holds at least the given application role';

-- The organizations a role sees (viewer or more), for the lookups of
-- SECURITY DEFINER functions, where row-level security does not apply;
-- NULL when it sees everything.
CREATE FUNCTION fleet_internal.visible_organizations(role_name name)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN fleet_internal.role_sees_everything(role_name) THEN NULL
                ELSE ARRAY(SELECT fleet_internal.organizations_for('viewer', role_name)) END
$$;

-- Whether a role sees an organization's rows.
CREATE FUNCTION fleet_internal.sees(role_name name, organization text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.role_sees_everything(role_name)
        OR organization IN (SELECT fleet_internal.organizations_for('viewer', role_name))
$$;

-- What the row-level security policies (src/sql/privileges.sql) compare a
-- row's own column with: the ids of what a role sees, by kind.  Called by
-- row_scope() below as the bootstrap superuser, so that the policies of
-- the tables it reads do not apply; NULL for an unknown kind.
CREATE FUNCTION fleet_internal.row_scope_of(kind text, role_name name)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE kind
        WHEN 'organizations' THEN
            ARRAY(SELECT fleet_internal.organizations_for('viewer', role_name))
        WHEN 'administered_organizations' THEN
            ARRAY(SELECT fleet_internal.organizations_for('administrator', role_name))
        -- a deleted job is gone at once, while the engine purges its rows
        WHEN 'jobs' THEN
            ARRAY(SELECT j.id FROM fleet.jobs j
                   WHERE j.deleted_at IS NULL
                     AND j.organization_id IN (SELECT fleet_internal.organizations_for('viewer', role_name)))
        WHEN 'scheduled_jobs' THEN
            ARRAY(SELECT s.id FROM fleet.scheduled_jobs s
                   WHERE s.organization_id IN (SELECT fleet_internal.organizations_for('viewer', role_name)))
        WHEN 'device_operations' THEN
            ARRAY(SELECT p.id::text FROM fleet.device_operations p
                   WHERE p.organization_id IN (SELECT fleet_internal.organizations_for('viewer', role_name)))
        WHEN 'enrollment_groups' THEN
            ARRAY(SELECT g.id FROM fleet.enrollment_groups g
                   WHERE g.organization_id IN (SELECT fleet_internal.organizations_for('administrator', role_name)))
    END
$$;

-- row_scope_of() where Citus holds pg_fleet's tables (fleet.distribute()):
-- the same sets, read from this node's own copies of the reference tables
-- (their one shard each).  Citus evaluates a shard's policies on the node
-- that holds it, as the member; a query of the distributed tables there
-- would start a distributed query from inside a shard's, which Citus
-- refuses.  Every node that holds shards holds the reference tables, the
-- coordinator included.
CREATE FUNCTION fleet_internal.citus_local_copy(table_name regclass)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard regclass;
BEGIN
    -- (EXECUTE: pg_dist_shard exists only where Citus is installed)
    EXECUTE 'SELECT pg_catalog.format(''%I.%I'', n.nspname, c.relname || ''_'' || s.shardid)::regclass
               FROM pg_catalog.pg_dist_shard s
               JOIN pg_catalog.pg_class c ON c.oid = s.logicalrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE s.logicalrelid = $1'
       INTO shard USING table_name;
    IF shard IS NULL THEN
        RAISE EXCEPTION 'table % has no shard on this node', table_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run SELECT * FROM fleet.distribute() on the coordinator.';
    END IF;
    RETURN shard;
END;
$$;

CREATE FUNCTION fleet_internal.row_scope_on_node(kind text, role_name name)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    min_rank int := CASE WHEN kind IN ('administered_organizations', 'enrollment_groups') THEN 3 ELSE 1 END;
    visible  text[];
BEGIN
    IF kind NOT IN ('organizations', 'administered_organizations', 'jobs', 'scheduled_jobs',
                    'device_operations', 'enrollment_groups') THEN
        RETURN NULL;
    END IF;
    EXECUTE pg_catalog.format(
        'SELECT ARRAY(SELECT o.id FROM %s o
                       WHERE fleet_internal.role_sees_everything($1)
                          OR EXISTS (SELECT 1 FROM %s m
                                      WHERE m.organization_id = ANY (o.path)
                                        AND pg_catalog.pg_has_role($1, m.member, ''USAGE'')
                                        AND fleet_internal.app_role_rank(m.app_role) >= $2))',
        fleet_internal.citus_local_copy('fleet.organizations'),
        fleet_internal.citus_local_copy('fleet.organization_members'))
       INTO visible USING role_name, min_rank;
    CASE kind
        WHEN 'organizations', 'administered_organizations' THEN
            RETURN visible;
        WHEN 'jobs' THEN
            EXECUTE pg_catalog.format('SELECT ARRAY(SELECT j.id FROM %s j
                                                     WHERE j.deleted_at IS NULL AND j.organization_id = ANY ($1))',
                                      fleet_internal.citus_local_copy('fleet.jobs'))
               INTO visible USING visible;
        WHEN 'scheduled_jobs' THEN
            EXECUTE pg_catalog.format('SELECT ARRAY(SELECT s.id FROM %s s WHERE s.organization_id = ANY ($1))',
                                      fleet_internal.citus_local_copy('fleet.scheduled_jobs'))
               INTO visible USING visible;
        WHEN 'device_operations' THEN
            EXECUTE pg_catalog.format('SELECT ARRAY(SELECT p.id::text FROM %s p WHERE p.organization_id = ANY ($1))',
                                      fleet_internal.citus_local_copy('fleet.device_operations'))
               INTO visible USING visible;
        ELSE
            -- (the enrollment groups stay on the coordinator, a plain table)
            visible := ARRAY(SELECT g.id FROM fleet.enrollment_groups g WHERE g.organization_id = ANY (visible));
    END CASE;
    RETURN visible;
END;
$$;

-- The ids of what the calling role sees, by kind (row_scope_of): the
-- value every policy compares with.  The planner puts it into each query
-- as a constant (src/row_scope.c), so that Citus's workers, which cannot
-- read pg_fleet's tables from inside a shard's query, evaluate policies on
-- their own.  (C: the one name it looks up is schema-qualified.)
CREATE FUNCTION fleet_internal.row_scope(kind text)
RETURNS text[]
LANGUAGE c STABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'row_scope';
CREATE FUNCTION fleet_internal.row_scope_ids(kind text)
RETURNS bigint[]
LANGUAGE c STABLE STRICT PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'row_scope';

-- Refuses unless the role holds min_role in the organization.  action says
-- what needed it ("creating a job").
CREATE FUNCTION fleet_internal.require_app_role(organization text, min_role text, action text,
                                       role_name name DEFAULT fleet_internal.calling_role())
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- (for those who see everything, a missing organization is told as such elsewhere)
    IF NOT fleet_internal.role_sees_everything(role_name)
       AND NOT EXISTS (SELECT 1 FROM fleet_internal.organizations_for(min_role, role_name) o WHERE o = organization) THEN
        RAISE EXCEPTION 'permission denied for organization "%"', organization
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('%s needs the %s role in organization "%s" or one above it.',
                                  initcap(left(action, 1)) || substr(action, 2), min_role, organization),
                  HINT = 'An administrator grants it with fleet.grant_organization().';
    END IF;
END;
$$;

-- Granting and revoking.  SECURITY DEFINER: members cannot write the
-- membership table (they would grant themselves); these functions check
-- that the calling role administers the organization, then write it.
CREATE FUNCTION fleet.grant_organization(organization_id text, member regrole, app_role text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    IF organization_id IS NULL OR member IS NULL THEN
        RAISE EXCEPTION 'grant_organization needs an organization and a member'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF app_role IS NULL OR app_role NOT IN ('administrator', 'operator', 'viewer') THEN
        RAISE EXCEPTION 'unknown application role "%"', coalesce(app_role, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Grant ''administrator'', ''operator'' or ''viewer''.';
    END IF;
    PERFORM fleet_internal.require_organization(organization_id, caller);
    PERFORM fleet_internal.require_app_role(organization_id, 'administrator', 'granting roles', caller);
    INSERT INTO fleet.organization_members AS m (organization_id, member, app_role, granted_by)
    VALUES (grant_organization.organization_id, member, app_role, caller)
    ON CONFLICT ON CONSTRAINT organization_members_pkey DO UPDATE
       SET app_role = excluded.app_role, granted_by = excluded.granted_by, granted_at = excluded.granted_at;
END;
$$;
COMMENT ON FUNCTION fleet.grant_organization(text, regrole, text) IS 'Grants a database role an application role (administrator, operator, viewer) in an organization and those below it; for administrators of it';

CREATE FUNCTION fleet.revoke_organization(organization_id text, member regrole)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    PERFORM fleet_internal.require_organization(organization_id, caller);
    PERFORM fleet_internal.require_app_role(organization_id, 'administrator', 'revoking roles', caller);
    DELETE FROM fleet.organization_members m
     WHERE m.organization_id = revoke_organization.organization_id AND m.member = revoke_organization.member;
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION fleet.revoke_organization(text, regrole) IS 'Removes a role''s grant in an organization; returns whether there was one';

-- The members of the organizations the caller administers.  SECURITY
-- DEFINER: a member sees only its own membership rows through the table.
CREATE FUNCTION fleet.list_organization_members(organization text DEFAULT NULL)
RETURNS TABLE (organization_id text, member regrole, app_role text, granted_by name, granted_at timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    IF organization IS NOT NULL THEN
        PERFORM fleet_internal.require_organization(organization, caller);
        PERFORM fleet_internal.require_app_role(organization, 'administrator', 'listing members', caller);
    END IF;
    RETURN QUERY
    SELECT m.organization_id, m.member, m.app_role, m.granted_by, m.granted_at
      FROM fleet.organization_members m
      JOIN fleet.organizations o ON o.id = m.organization_id
     WHERE m.organization_id IN (SELECT fleet_internal.organizations_for('administrator', caller))
       AND (list_organization_members.organization IS NULL OR o.path @> ARRAY[list_organization_members.organization])
     ORDER BY o.path, m.member::text;
END;
$$;
COMMENT ON FUNCTION fleet.list_organization_members(text) IS 'The members of the organizations the caller administers (or of one of them and those below it)';

-- Jobs and schedules live where the engine runs: elsewhere they would wait
-- for ever.  Refuses in any other database.
CREATE FUNCTION fleet_internal.require_engine_database(action text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.current_database() <> pg_catalog.current_setting('fleet.database_name') THEN
        RAISE EXCEPTION '% needs the job engine, which runs in database "%"', action,
                        pg_catalog.current_setting('fleet.database_name')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('This is database "%s".', pg_catalog.current_database()),
                  HINT = format('Set fleet.database_name = ''%s'' in postgresql.conf and reload, or use pg_fleet in database "%s".',
                                pg_catalog.current_database(), pg_catalog.current_setting('fleet.database_name'));
    END IF;
END;
$$;
