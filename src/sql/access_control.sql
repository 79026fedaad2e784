-- Organizations and access control (DESIGN.md section 5).
--
-- A database role is granted an application role in an organization:
-- viewer (reads devices, groups, templates, jobs and results), operator
-- (also imports devices, runs jobs and schedules) or administrator (also
-- manages the organizations below and their members, exports devices with
-- their keys, reads and rotates enrollment group keys).  A grant holds in
-- the organization and every organization below it; a role also holds what
-- the roles it inherits from hold.
--
-- PostgreSQL enforces it: row-level security on every tenant table, forced
-- for the table owner, so whatever SQL a member runs (tables, views,
-- functions, COPY) sees and changes only its organizations' rows.  The API
-- functions check the same rights first, to refuse with a clear message.
-- Superusers and BYPASSRLS roles (the job engine runs as one) see all.

CREATE FUNCTION fleet.app_role_rank(app_role text)
RETURNS int
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE app_role WHEN 'viewer' THEN 1 WHEN 'operator' THEN 2 WHEN 'administrator' THEN 3 END $$;

-- The role a request comes from, also inside a SECURITY DEFINER function
-- (where current_user is the function's owner): the role set with SET
-- ROLE, or the session's.  Only the definer functions below use it.
CREATE FUNCTION fleet.calling_role()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
                ELSE pg_catalog.current_setting('role')::name END
$$;

-- Superusers and BYPASSRLS roles are not subject to organizations.
CREATE FUNCTION fleet.role_sees_everything(role_name name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = role_name), false) $$;

-- The organizations where a role holds at least min_role: those it (or a
-- role it inherits from) was granted at or above.  With the caller's
-- rights it reads only the caller's own memberships, which is all it needs.
CREATE FUNCTION fleet.organizations_for(min_role text, role_name name DEFAULT current_user)
RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.id
      FROM fleet.organizations o
     WHERE fleet.role_sees_everything(role_name)
        OR EXISTS (SELECT 1 FROM fleet.organization_members m
                    WHERE m.organization_id = ANY (o.path)
                      AND pg_catalog.pg_has_role(role_name, m.member, 'USAGE')
                      AND fleet.app_role_rank(m.app_role) >= fleet.app_role_rank(min_role))
$$;
COMMENT ON FUNCTION fleet.organizations_for(text, name) IS 'The organizations where a role (default: the current one) holds at least the given application role';

-- Refuses unless the role holds min_role in the organization.  action says
-- what needed it ("creating a job").
CREATE FUNCTION fleet.require_app_role(organization text, min_role text, action text,
                                       role_name name DEFAULT current_user)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- (for those who see everything, a missing organization is told as such elsewhere)
    IF NOT fleet.role_sees_everything(role_name)
       AND NOT EXISTS (SELECT 1 FROM fleet.organizations_for(min_role, role_name) o WHERE o = organization) THEN
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
CREATE FUNCTION fleet.grant_organization(organization text, member regrole, app_role text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet.calling_role();
BEGIN
    IF organization IS NULL OR member IS NULL THEN
        RAISE EXCEPTION 'grant_organization needs an organization and a member'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF app_role IS NULL OR app_role NOT IN ('administrator', 'operator', 'viewer') THEN
        RAISE EXCEPTION 'unknown application role "%"', coalesce(app_role, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Grant ''administrator'', ''operator'' or ''viewer''.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = organization)
       AND NOT fleet.role_sees_everything(caller) THEN
        -- as for any organization the caller cannot administer
        PERFORM fleet.require_app_role(organization, 'administrator', 'granting roles', caller);
    END IF;
    PERFORM fleet.require_organization(organization);
    PERFORM fleet.require_app_role(organization, 'administrator', 'granting roles', caller);
    INSERT INTO fleet.organization_members AS m (organization_id, member, app_role, granted_by)
    VALUES (organization, member, app_role, caller)
    ON CONFLICT ON CONSTRAINT organization_members_pkey DO UPDATE
       SET app_role = excluded.app_role, granted_by = excluded.granted_by, granted_at = pg_catalog.now();
END;
$$;
COMMENT ON FUNCTION fleet.grant_organization(text, regrole, text) IS 'Grants a database role an application role (administrator, operator, viewer) in an organization and those below it; for administrators of it';

CREATE FUNCTION fleet.revoke_organization(organization text, member regrole)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet.calling_role();
BEGIN
    PERFORM fleet.require_app_role(organization, 'administrator', 'revoking roles', caller);
    DELETE FROM fleet.organization_members m
     WHERE m.organization_id = organization AND m.member = revoke_organization.member;
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION fleet.revoke_organization(text, regrole) IS 'Removes a role''s grant in an organization; returns whether there was one';

-- The members of the organizations the caller administers.  SECURITY
-- DEFINER: a member sees only its own membership rows through the table.
CREATE FUNCTION fleet.organization_member_list(organization text DEFAULT NULL)
RETURNS TABLE (organization_id text, member regrole, app_role text, granted_by name, granted_at timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet.calling_role();
BEGIN
    IF organization IS NOT NULL THEN
        PERFORM fleet.require_app_role(organization, 'administrator', 'listing members', caller);
    END IF;
    RETURN QUERY
    SELECT m.organization_id, m.member, m.app_role, m.granted_by, m.granted_at
      FROM fleet.organization_members m
      JOIN fleet.organizations o ON o.id = m.organization_id
     WHERE m.organization_id IN (SELECT fleet.organizations_for('administrator', caller))
       AND (organization_member_list.organization IS NULL OR o.path @> ARRAY[organization_member_list.organization])
     ORDER BY o.path, m.member::text;
END;
$$;
COMMENT ON FUNCTION fleet.organization_member_list(text) IS 'The members of the organizations the caller administers (or of one of them and those below it)';

-- ---------------------------------------------------------------------
-- Row-level security.  "Visible" organizations are those fleet.organizations
-- shows the role (its grants' subtrees); the other tables ask that table,
-- so each policy is one hashed subquery per statement, not a check per row.

ALTER TABLE fleet.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY members_read ON fleet.organizations FOR SELECT
    USING (EXISTS (SELECT 1 FROM fleet.organization_members m
                    WHERE m.organization_id = ANY (path)
                      AND pg_catalog.pg_has_role(current_user, m.member, 'USAGE')));
CREATE POLICY administrators_create_below ON fleet.organizations FOR INSERT
    WITH CHECK (parent_id IN (SELECT fleet.organizations_for('administrator')));

-- An organization's place in the tree is its parent's path and its id,
-- whatever an INSERT says: a path is what subtrees (and so rights and the
-- engine's reach) are computed from.
CREATE FUNCTION fleet.organizations_set_path()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.id IS DISTINCT FROM OLD.id OR NEW.parent_id IS DISTINCT FROM OLD.parent_id) THEN
        RAISE EXCEPTION 'an organization''s id and parent do not change'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create a new organization and move the devices, groups and jobs to it.';
    END IF;
    IF NEW.path IS NOT NULL AND fleet.role_sees_everything(current_user) THEN
        RETURN NEW;     -- superusers, pg_restore among them, are trusted with it
    END IF;
    IF NEW.parent_id IS NULL THEN
        NEW.path := ARRAY[NEW.id];      -- root, the one organization without a parent (a CHECK says so)
    ELSE
        NEW.path := (SELECT p.path FROM fleet.organizations p WHERE p.id = NEW.parent_id) || NEW.id;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER set_path BEFORE INSERT OR UPDATE ON fleet.organizations
    FOR EACH ROW EXECUTE FUNCTION fleet.organizations_set_path();

ALTER TABLE fleet.organization_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.organization_members FORCE ROW LEVEL SECURITY;
CREATE POLICY own_memberships ON fleet.organization_members FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, member, 'USAGE'));

-- tables with an organization_id: viewers read, operators write
CREATE FUNCTION fleet.protect_organization_table(tab regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tab);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tab);
    EXECUTE format('CREATE POLICY viewers_read ON %s FOR SELECT
                        USING (organization_id IN (SELECT o.id FROM fleet.organizations o))', tab);
    EXECUTE format('CREATE POLICY operators_insert ON %s FOR INSERT
                        WITH CHECK (organization_id IN (SELECT fleet.organizations_for(''operator'')))', tab);
    EXECUTE format('CREATE POLICY operators_update ON %s FOR UPDATE
                        USING (organization_id IN (SELECT fleet.organizations_for(''operator'')))
                        WITH CHECK (organization_id IN (SELECT fleet.organizations_for(''operator'')))', tab);
    EXECUTE format('CREATE POLICY operators_delete ON %s FOR DELETE
                        USING (organization_id IN (SELECT fleet.organizations_for(''operator'')))', tab);
END;
$$;
SELECT fleet.protect_organization_table(t)
  FROM unnest(ARRAY['fleet.devices', 'fleet.device_groups', 'fleet.device_operations',
                    'fleet.jobs', 'fleet.scheduled_jobs']::regclass[]) t;

-- tables whose rows belong to a parent row: visible with the parent, written
-- by operators of the parent's organization
CREATE FUNCTION fleet.protect_child_table(tab regclass, parent_key text, parent regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    operated text := format('%I IN (SELECT p.id FROM %s p
                                      WHERE p.organization_id IN (SELECT fleet.organizations_for(''operator'')))',
                            parent_key, parent);
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tab);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tab);
    EXECUTE format('CREATE POLICY viewers_read ON %s FOR SELECT USING (%I IN (SELECT p.id FROM %s p))',
                   tab, parent_key, parent);
    EXECUTE format('CREATE POLICY operators_insert ON %s FOR INSERT WITH CHECK (%s)', tab, operated);
    EXECUTE format('CREATE POLICY operators_update ON %s FOR UPDATE USING (%s) WITH CHECK (%s)', tab, operated, operated);
    EXECUTE format('CREATE POLICY operators_delete ON %s FOR DELETE USING (%s)', tab, operated);
END;
$$;
SELECT fleet.protect_child_table(t, k, p)
  FROM (VALUES ('fleet.device_operation_errors'::regclass, 'operation_id', 'fleet.device_operations'::regclass),
               ('fleet.job_batches', 'job_id', 'fleet.jobs'),
               ('fleet.job_devices', 'job_id', 'fleet.jobs'),
               ('fleet.command_windows', 'job_id', 'fleet.jobs'),
               ('fleet.scheduled_job_runs', 'scheduled_job_id', 'fleet.scheduled_jobs')) v(t, k, p);
DROP FUNCTION fleet.protect_organization_table(regclass);
DROP FUNCTION fleet.protect_child_table(regclass, text, regclass);

-- shared application-wide: every role reads, root administrators write
CREATE FUNCTION fleet.is_root_administrator()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'root' IN (SELECT fleet.organizations_for('administrator')) $$;

CREATE FUNCTION fleet.protect_shared_table(tab regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tab);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tab);
    EXECUTE format('CREATE POLICY everyone_reads ON %s FOR SELECT USING (true)', tab);
    EXECUTE format('CREATE POLICY root_administrators_write ON %s FOR ALL
                        USING (fleet.is_root_administrator()) WITH CHECK (fleet.is_root_administrator())', tab);
END;
$$;
SELECT fleet.protect_shared_table(t)
  FROM unnest(ARRAY['fleet.device_templates', 'fleet.template_contents', 'fleet.edge_manifests']::regclass[]) t;
DROP FUNCTION fleet.protect_shared_table(regclass);

-- enrollment group keys derive every device's key: root administrators only
ALTER TABLE fleet.enrollment_groups ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.enrollment_groups FORCE ROW LEVEL SECURITY;
CREATE POLICY root_administrators_only ON fleet.enrollment_groups FOR ALL
    USING (fleet.is_root_administrator()) WITH CHECK (fleet.is_root_administrator());

-- A schedule's creator (whom pg_cron runs it as) and its pg_cron entry's
-- name (derived from its id, here only) are the extension's to set,
-- whatever an INSERT or UPDATE says:
-- fleet.sync_schedule_cron() writes pg_cron entries from them as a superuser.
CREATE FUNCTION fleet.scheduled_jobs_pin_identity()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trusted boolean := fleet.role_sees_everything(current_user);   -- superusers, pg_restore among them
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.cron_job_name IS NULL OR NOT trusted THEN
            NEW.cron_job_name := fleet.schedule_cron_name(NEW.id);
        END IF;
        IF NOT trusted THEN
            NEW.created_by := current_user;
        END IF;
    ELSE
        IF NEW.id IS DISTINCT FROM OLD.id THEN
            RAISE EXCEPTION 'the id of scheduled job "%" cannot change', OLD.id
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Create a new scheduled job and delete this one.';
        END IF;
        IF NOT trusted THEN
            NEW.created_by := OLD.created_by;
            NEW.cron_job_name := OLD.cron_job_name;
        END IF;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER pin_identity BEFORE INSERT OR UPDATE ON fleet.scheduled_jobs
    FOR EACH ROW EXECUTE FUNCTION fleet.scheduled_jobs_pin_identity();

-- How a job runs is the engine's to write (superusers and pg_restore too);
-- members move a job only as the API does: create it saved or queued, run,
-- stop and resume it.  A member writing the engine's columns could make it
-- run a finished job again, or skip its devices.
CREATE FUNCTION fleet.jobs_guard_engine_state()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF fleet.role_sees_everything(current_user) THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.status NOT IN ('saved', 'pending')
           OR num_nonnulls(NEW.started_at, NEW.finished_at, NEW.device_count, NEW.current_batch,
                           NEW.last_step_at, NEW.error) > 0 THEN
            RAISE EXCEPTION 'job "%" must start out saved or pending, with nothing run', NEW.id
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Create jobs with fleet.create_job() or fleet.save_job().';
        END IF;
        NEW.created_by := current_user;
    ELSE
        IF NEW.status IS DISTINCT FROM OLD.status
           AND (OLD.status, NEW.status) NOT IN (('saved', 'pending'), ('pending', 'stopped'),
                                                ('running', 'stopped'), ('stopped', 'pending')) THEN
            RAISE EXCEPTION 'job "%" cannot go from % to %', OLD.id, OLD.status, NEW.status
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Use fleet.run_job(), fleet.stop_job() or fleet.resume_job().';
        END IF;
        NEW.created_by := OLD.created_by;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER guard_engine_state BEFORE INSERT OR UPDATE ON fleet.jobs
    FOR EACH ROW EXECUTE FUNCTION fleet.jobs_guard_engine_state();

-- each role's own device list columns
ALTER TABLE fleet.job_device_list_columns ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet.job_device_list_columns FORCE ROW LEVEL SECURITY;
CREATE POLICY own_columns ON fleet.job_device_list_columns FOR ALL
    USING (role_name = current_user) WITH CHECK (role_name = current_user);

-- ---------------------------------------------------------------------
-- Privileges: row-level security decides which rows; these decide which
-- statements.  Tables are written by the API functions, which run with the
-- caller's rights; members could write them directly too, but only their
-- own organizations' rows.

GRANT USAGE ON SCHEMA fleet TO PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA fleet TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON fleet.devices, fleet.device_groups, fleet.device_operations,
      fleet.device_operation_errors, fleet.scheduled_jobs, fleet.scheduled_job_runs,
      fleet.device_templates, fleet.template_contents, fleet.edge_manifests,
      fleet.job_device_list_columns, fleet.organizations
   TO PUBLIC;
-- jobs are history: not deleted by members; what they update is what
-- run, stop, resume and a schedule's fire update (the trigger above checks
-- the status moves)
GRANT INSERT ON fleet.jobs TO PUBLIC;
GRANT UPDATE (status, queued_at, scheduled_job_id, created_by) ON fleet.jobs TO PUBLIC;
-- Rows the engine writes (job_devices, job_batches, command_windows) are
-- read-only to members: gateways write through fleet.claim_commands() and
-- fleet.complete_commands().  Were members to insert job_devices rows,
-- they could name another organization's devices for the engine to change;
-- were they to write a claim's deadline, they could keep a job running.
GRANT UPDATE ON fleet.enrollment_groups TO PUBLIC;
GRANT INSERT ON fleet.device_import TO PUBLIC;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA fleet TO PUBLIC;
REVOKE USAGE ON SEQUENCE fleet.delivery_blocks FROM PUBLIC;     -- the engine's

-- the engine's and pg_cron's internals are not for members to call
REVOKE EXECUTE ON FUNCTION fleet.engine_step(), fleet.engine_start_job(fleet.jobs),
       fleet.engine_advance_job(text), fleet.engine_apply_chunk(fleet.jobs, fleet.job_batches, int),
       fleet.engine_open_window(fleet.jobs, fleet.job_batches, bigint),
       fleet.engine_close_windows(fleet.jobs, fleet.job_batches),
       fleet.engine_fail_unfit(text, text[], text), fleet.engine_finish_job(fleet.jobs, text),
       fleet.engine_give_up(text, text),
       fleet.engine_check_schedules(), fleet.expire_commands(),
       fleet.compute_device_key(text, text)
  FROM PUBLIC;
