-- Device groups: a template, a jsonpath filter over fleet.device_document()
-- and an organization.  Membership is evaluated when asked (and when a job
-- starts), never cached, so a group always means its devices of the moment.


-- A filter the engine can evaluate over millions of devices in bounded
-- time: at most 2000 characters, one "**" (any depth) accessor, and
-- parentheses nested at most 8 deep.  Nested "**" filters cost the
-- document size to the power of their nesting for every device.  NULL when
-- the filter is fine, else what is wrong.
CREATE FUNCTION fleet_internal.filter_problem(filter jsonpath)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    source  text := filter::text;
    depth   int := 0;
    deepest int := 0;
    c       text;
BEGIN
    IF length(source) > 2000 THEN
        RETURN format('it has %s characters, more than 2000', length(source));
    END IF;
    IF (length(source) - length(replace(source, '**', ''))) / 2 > 1 THEN
        RETURN 'it uses the any-depth accessor "**" more than once';
    END IF;
    -- filter expressions nest as "? (": count parentheses outside strings
    FOR c IN SELECT regexp_split_to_table(regexp_replace(source, '"([^"\\]|\\.)*"', '""', 'g'), '') LOOP
        IF c = '(' THEN
            depth := depth + 1;
            deepest := greatest(deepest, depth);
        ELSIF c = ')' THEN
            depth := depth - 1;
        END IF;
    END LOOP;
    IF deepest > 8 THEN
        RETURN format('its expressions nest %s deep, more than 8', deepest);
    END IF;
    RETURN NULL;
END;
$$;

-- Refuses a filter that does not compile into a predicate the engine can
-- evaluate in bounded time: jsonb_path_match() refuses anything but a
-- single boolean, so it is tried on a document with every device key.
CREATE FUNCTION fleet_internal.require_group_filter(filter jsonpath)
RETURNS jsonpath
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sample jsonb := jsonb_build_object(
        'id', 'sample', 'displayName', 'sample', 'template', 'dtmi:sample:Sample;1',
        'organization', 'root', 'simulated', false, 'provisioned', true, 'connected', false, 'lastActivityTime', NULL,
        'edge', false, 'manifest', NULL,
        'properties', '{}'::jsonb, 'reported', '{}'::jsonb, 'cloudProperties', '{}'::jsonb);
    problem text := fleet_internal.filter_problem(filter);
BEGIN
    IF filter IS NULL THEN
        RETURN NULL;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'device group filter % is too complex: %',
                        left(filter::text, 80) || CASE WHEN length(filter::text) > 80 THEN '...' ELSE '' END, problem
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Filter on named properties (''$.reported.firmware == "1.2"''), with at most one "**" and expressions nested at most 8 deep.';
    END IF;
    BEGIN
        PERFORM jsonb_path_match(sample, filter);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
        RAISE EXCEPTION 'device group filter % does not return true or false', filter
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('On a device it fails with: %s.', problem),
                  HINT = 'Write the filter as a predicate, for example ''$.reported.firmware == "1.2"'' or ''$.displayName like_regex "^lab"''.';
    END;
    RETURN filter;
END;
$$;

-- SECURITY DEFINER, as every function that writes (src/sql/access.sql).
CREATE FUNCTION fleet.create_device_group(device_group_id text, display_name text, template text DEFAULT NULL,
                                          filter jsonpath DEFAULT NULL, organization text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
BEGIN
    PERFORM fleet_internal.check_new_object('device group', device_group_id, display_name, 255);
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
    PERFORM fleet_internal.require_organization(coalesce(organization, 'root'), caller);
    PERFORM fleet_internal.require_app_role(coalesce(organization, 'root'), 'operator', 'creating a device group', caller);
    PERFORM fleet_internal.require_group_filter(filter);
    IF EXISTS (SELECT 1 FROM fleet.device_groups g WHERE g.id = create_device_group.device_group_id) THEN
        PERFORM fleet_internal.refuse_existing('device group', device_group_id);
    END IF;
    INSERT INTO fleet.device_groups (id, display_name, template_id, filter, organization_id)
    VALUES (device_group_id, display_name, template, filter, coalesce(organization, 'root'));
    RETURN fleet.get_device_group(device_group_id);
END;
$$;
COMMENT ON FUNCTION fleet.create_device_group(text, text, text, jsonpath, text) IS 'Creates a device group and returns it; the filter is a jsonpath predicate over fleet.device_document()';

-- The group, or "does not exist" unless the role sees it.
CREATE FUNCTION fleet_internal.require_device_group(device_group_id text, role_name name DEFAULT fleet_internal.calling_role())
RETURNS fleet.device_groups
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_group fleet.device_groups;
BEGIN
    SELECT g.* INTO found_group FROM fleet.device_groups g WHERE g.id = require_device_group.device_group_id;
    IF NOT FOUND OR NOT fleet_internal.sees(role_name, found_group.organization_id) THEN
        PERFORM fleet_internal.refuse_missing('device group', device_group_id,
            'Create it with fleet.create_device_group(), or see the existing ones in fleet.device_groups.');
    END IF;
    RETURN found_group;
END;
$$;

-- The group as IoT Central's REST API shows it: its filter as it was
-- given (IoT Central's query, or a jsonpath), description, organizations
-- and etag; "template" and "jsonpath" (the query's translation) are
-- pg_fleet's.
CREATE FUNCTION fleet.get_device_group(device_group_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g fleet.device_groups := fleet_internal.require_device_group(device_group_id);
BEGIN
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'id', g.id, 'displayName', g.display_name, 'description', g.description,
        -- (IoT Central's groups always have a query: a group of pg_fleet's
        -- with no filter shows the one that selects what it does)
        'filter', coalesce(g.query, g.filter::text,
                           'SELECT * FROM devices' || CASE WHEN g.template_id IS NOT NULL
                                                           THEN format(' WHERE $template = "%s"', g.template_id) ELSE '' END),
        'organizations', jsonb_build_array(g.organization_id),
        'etag', fleet_internal.device_group_etag(g),
        'template', g.template_id,
        'jsonpath', CASE WHEN g.query IS NOT NULL THEN g.filter::text END));
END;
$$;
COMMENT ON FUNCTION fleet.get_device_group(text) IS 'The device group as IoT Central''s REST API shows it: id, displayName, description, filter, organizations, etag; with template and the jsonpath a query translates to';

-- A device group's etag (fleet_internal.etag).
CREATE FUNCTION fleet_internal.device_group_etag(g fleet.device_groups)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.etag(jsonb_build_array(g.display_name, g.description, g.template_id, g.filter::text,
                                                 g.query, g.organization_id))
$$;

-- A filter as a device group takes it: IoT Central's query (SELECT * FROM
-- devices WHERE ...), translated, or a jsonpath predicate.
CREATE FUNCTION fleet_internal.group_filter(filter text, label text,
                                            OUT template text, OUT path jsonpath, OUT query text)
RETURNS record
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    translated record;
BEGIN
    IF filter IS NULL THEN
        RETURN;
    END IF;
    IF filter ~* '^\s*select\s' THEN
        translated := fleet_internal.group_query_translate(filter);
        template := translated.template;
        path := translated.filter;
        query := filter;
    ELSE
        BEGIN
            path := filter::jsonpath;
        EXCEPTION WHEN syntax_error OR invalid_text_representation THEN
            RAISE EXCEPTION 'the filter of % is neither IoT Central''s query nor a jsonpath: %', label, filter
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write SELECT * FROM devices WHERE $template = "..." AND ..., or a jsonpath predicate such as ''$.reported.firmware == "1.2"''.';
        END;
    END IF;
    PERFORM fleet_internal.require_group_filter(path);
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
END;
$$;

-- Creates a device group from IoT Central's REST body, as PUT
-- /deviceGroups/{id} takes it: {"displayName", "filter", "description",
-- "organizations"}; the filter is IoT Central's query or a jsonpath.
CREATE FUNCTION fleet.import_device_group(device_group_id text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller       name := fleet_internal.calling_role();
    label        text := format('device group "%s"', device_group_id);
    filter       record;
    organization text;
BEGIN
    body := fleet_internal.rest_body(body, device_group_id, 'device group', '{id,displayName,description,filter,organizations,etag}',
                                     '{"displayName": ..., "filter": "SELECT * FROM devices WHERE ..."}');
    IF jsonb_typeof(body -> 'displayName') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% needs a "displayName"', label
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Add "displayName": "a name people read".';
    END IF;
    IF body ? 'description' AND jsonb_typeof(body -> 'description') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'the description of % must be a string', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF body ? 'filter' AND jsonb_typeof(body -> 'filter') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'the filter of % must be a string', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write IoT Central''s query, "SELECT * FROM devices WHERE ...", or a jsonpath predicate, as a string.';
    END IF;
    organization := coalesce(fleet_internal.body_organization(body, label), 'root');
    filter := fleet_internal.group_filter(body ->> 'filter', label);
    PERFORM fleet.create_device_group(device_group_id, body ->> 'displayName', filter.template, filter.path, organization);
    UPDATE fleet.device_groups g
       SET description = body ->> 'description', query = filter.query
     WHERE g.id = device_group_id;
    RETURN fleet.get_device_group(device_group_id);
END;
$$;
COMMENT ON FUNCTION fleet.import_device_group(text, jsonb) IS 'Creates a device group from IoT Central''s REST body ({"displayName", "filter", "description", "organizations"}); the filter is IoT Central''s query (SELECT * FROM devices WHERE ...) or a jsonpath'; 

-- Changes a group's name, template or filter ({"displayName", "template",
-- "filter"}; null clears the template or the filter).  Jobs already
-- started keep the devices they resolved; new jobs and scheduled runs see
-- the new membership.
CREATE FUNCTION fleet.update_device_group(device_group_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    g      fleet.device_groups := fleet_internal.require_device_group(device_group_id, fleet_internal.calling_role());
    label  text := format('device group "%s"', device_group_id);
    filter record;
BEGIN
    PERFORM fleet_internal.require_changes(changes, '{displayName,description,template,filter,organizations,etag,id}', label);
    PERFORM fleet_internal.require_app_role(g.organization_id, 'operator', 'changing a device group', caller);
    -- locked before If-Match, so that a change in between is seen
    SELECT dg.* INTO g FROM fleet.device_groups dg WHERE dg.id = g.id FOR UPDATE;
    PERFORM fleet_internal.require_etag(label, changes -> 'etag', fleet_internal.device_group_etag(g));
    IF changes ? 'template' AND NOT changes ? 'filter' AND g.query IS NOT NULL THEN
        RAISE EXCEPTION 'the template of % is its query''s $template', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Change the filter (SELECT * FROM devices WHERE $template = ...) instead.';
    END IF;
    IF changes ? 'id' AND changes -> 'id' IS DISTINCT FROM to_jsonb(g.id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF changes ? 'organizations' AND changes -> 'organizations' IS DISTINCT FROM jsonb_build_array(g.organization_id) THEN
        RAISE EXCEPTION '% cannot move to another organization', label
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('It belongs to organization "%s".', g.organization_id),
                  HINT = 'Create a group in that organization instead.';
    END IF;
    IF changes ? 'description' THEN
        IF jsonb_typeof(changes -> 'description') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'the description of % must be a string', label USING ERRCODE = 'invalid_parameter_value';
        END IF;
        g.description := changes ->> 'description';
    END IF;
    IF changes ? 'displayName' THEN
        g.display_name := fleet_internal.changed_display_name(changes, 'device group', g.id, 255);
    END IF;
    IF changes ? 'template' THEN
        IF jsonb_typeof(changes -> 'template') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'the template of % must be a template id or null', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        g.template_id := CASE WHEN changes ->> 'template' IS NOT NULL
                              THEN fleet_internal.require_template(changes ->> 'template') END;
    END IF;
    IF changes ? 'filter' THEN
        IF jsonb_typeof(changes -> 'filter') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'the filter of % must be a string (IoT Central''s query or a jsonpath) or null', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        filter := fleet_internal.group_filter(changes ->> 'filter', label);
        g.filter := filter.path;
        -- IoT Central's query names the template itself; a jsonpath that
        -- replaces a query leaves none, unless "template" names one
        IF filter.query IS NOT NULL THEN
            g.template_id := filter.template;
        ELSIF g.query IS NOT NULL AND NOT changes ? 'template' THEN
            g.template_id := NULL;
        END IF;
        g.query := filter.query;
    END IF;
    UPDATE fleet.device_groups dg
       SET display_name = g.display_name, template_id = g.template_id, filter = g.filter,
           description = g.description, query = g.query
     WHERE dg.id = g.id;
    RETURN fleet.get_device_group(g.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_device_group(text, jsonb) IS 'Changes a device group''s displayName, description, template or filter (IoT Central''s query or a jsonpath), If-Match on its etag; returns the group';

-- Deletes a group no job or schedule uses: jobs keep the group they ran on
-- (their results name it), so they go first (fleet.delete_job, or
-- fleet.job_retention), and schedules are deleted or moved to another group.
CREATE FUNCTION fleet.delete_device_group(device_group_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller    name := fleet_internal.calling_role();
    g         fleet.device_groups := fleet_internal.require_device_group(device_group_id, fleet_internal.calling_role());
    jobs      bigint;
    purging   bigint;
    schedules bigint;
BEGIN
    PERFORM fleet_internal.require_app_role(g.organization_id, 'operator', 'deleting a device group', caller);
    -- (locked first, so that no job or schedule takes it meanwhile)
    PERFORM 1 FROM fleet.device_groups dg WHERE dg.id = g.id FOR UPDATE;
    SELECT count(*) FILTER (WHERE j.deleted_at IS NULL), count(*) FILTER (WHERE j.deleted_at IS NOT NULL)
      INTO jobs, purging FROM fleet.jobs j WHERE j.group_id = g.id;
    SELECT count(*) INTO schedules FROM fleet.scheduled_jobs s WHERE s.group_id = g.id;
    IF jobs > 0 OR schedules > 0 THEN
        PERFORM fleet_internal.refuse_in_use('device group', g.id,
            format('%s jobs and %s scheduled jobs use it.', jobs, schedules),
            'Delete those jobs (fleet.delete_job) and scheduled jobs first; finished jobs also go by themselves after fleet.job_retention.');
    END IF;
    IF purging > 0 THEN
        PERFORM fleet_internal.refuse_in_use('device group', g.id,
            format('%s deleted jobs that used it are being purged.', purging),
            'Try again once the engine has purged them (fleet.engine_status.jobs_being_purged).');
    END IF;
    DELETE FROM fleet.device_groups dg WHERE dg.id = g.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_device_group(text) IS 'Deletes a device group that no job or scheduled job uses';

-- Who is in which group, now: the one definition of membership, a view so
-- that jobs and list_device_group_members() plan it as part of their own
-- queries.  Template and organization narrow the scan; the filter is
-- evaluated only on what is left.
CREATE VIEW fleet.device_group_members WITH (security_invoker = true) AS
    SELECT g.id AS group_id, d.id AS device_id
      FROM fleet.device_groups g
      JOIN fleet.organizations o ON o.path @> ARRAY[g.organization_id]
      JOIN fleet.devices d ON d.organization_id = o.id
     WHERE (g.template_id IS NULL OR d.template_id = g.template_id)
       AND (g.filter IS NULL OR jsonb_path_match(fleet_internal.device_document_of(d.id, d.display_name, d.template_id, d.organization_id, d.simulated,
                 d.connection_state, d.last_activity_at, d.edge, d.manifest_id, d.properties, d.reported, d.cloud_properties), g.filter, silent => true));
COMMENT ON VIEW fleet.device_group_members IS 'The devices of each device group now: template, organization subtree and filter applied';

CREATE FUNCTION fleet.list_device_group_members(device_group_id text)
RETURNS TABLE (device_id text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_device_group(list_device_group_members.device_group_id);
    RETURN QUERY
    SELECT m.device_id FROM fleet.device_group_members m WHERE m.group_id = list_device_group_members.device_group_id
     ORDER BY m.device_id;
END;
$$;
COMMENT ON FUNCTION fleet.list_device_group_members(text) IS 'The ids of the devices in a device group now';

-- The group's devices as IoT Central's GET /deviceGroups/{id}/devices
-- returns them: {"value": [{"id", "displayName", "template", "simulated",
-- "provisioned", "enabled", "organizations"}]}.  pg_fleet has no disabled
-- devices and counts a registered device as provisioned.
CREATE FUNCTION fleet.get_device_group_devices(device_group_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_device_group(get_device_group_devices.device_group_id);
    RETURN (SELECT jsonb_build_object('value', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                       'id', d.id, 'displayName', d.display_name, 'template', d.template_id,
                       'simulated', d.simulated, 'provisioned', true, 'enabled', true,
                       'organizations', jsonb_build_array(d.organization_id))) ORDER BY d.id), '[]'))
              FROM fleet.device_group_members m JOIN fleet.devices d ON d.id = m.device_id
             WHERE m.group_id = get_device_group_devices.device_group_id);
END;
$$;
COMMENT ON FUNCTION fleet.get_device_group_devices(text) IS 'A device group''s devices as IoT Central''s REST API returns them: {"value": [{"id", "displayName", "template", "simulated", "provisioned", "enabled", "organizations"}]}';

CREATE FUNCTION fleet.count_device_group_members(device_group_id text)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*) FROM fleet.list_device_group_members(device_group_id)
$$;
COMMENT ON FUNCTION fleet.count_device_group_members(text) IS 'How many devices a job on this group would apply to now, as IoT Central shows under the group selection';

