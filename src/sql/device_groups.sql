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

-- SECURITY DEFINER, as every function that writes (src/sql/access.sql).
CREATE FUNCTION fleet.create_device_group(id text, display_name text, template text DEFAULT NULL,
                                          filter jsonpath DEFAULT NULL, organization text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    -- every key a device document has, so a filter is tried on all of them
    sample jsonb := jsonb_build_object(
        'id', 'sample', 'displayName', 'sample', 'template', 'dtmi:sample:Sample;1',
        'organization', 'root', 'simulated', false, 'edge', false, 'manifest', NULL,
        'properties', '{}'::jsonb, 'reported', '{}'::jsonb, 'cloudProperties', '{}'::jsonb);
    problem text;
BEGIN
    PERFORM fleet_internal.check_new_object('device group', id, display_name, 255);
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
    PERFORM fleet_internal.require_organization(coalesce(organization, 'root'), caller);
    PERFORM fleet_internal.require_app_role(coalesce(organization, 'root'), 'operator', 'creating a device group', caller);

    -- A filter must be a predicate, true, false or unknown for every device,
    -- not a path that selects values: jsonb_path_match() refuses anything
    -- but a single boolean, so try it on a document with every device key.
    IF filter IS NOT NULL THEN
        problem := fleet_internal.filter_problem(filter);
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
    END IF;

    IF EXISTS (SELECT 1 FROM fleet.device_groups g WHERE g.id = create_device_group.id) THEN
        RAISE EXCEPTION 'device group "%" already exists', id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose another id.';
    END IF;
    INSERT INTO fleet.device_groups (id, display_name, template_id, filter, organization_id)
    VALUES (id, display_name, template, filter, coalesce(organization, 'root'));
    RETURN id;
END;
$$;
COMMENT ON FUNCTION fleet.create_device_group(text, text, text, jsonpath, text) IS 'Creates a device group; the filter is a jsonpath predicate over fleet.device_document()';

-- The group, or an error when the role cannot see it.
CREATE FUNCTION fleet_internal.require_device_group(group_id text, role_name name DEFAULT fleet_internal.calling_role())
RETURNS fleet.device_groups
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_group fleet.device_groups;
BEGIN
    SELECT g.* INTO found_group FROM fleet.device_groups g WHERE g.id = group_id;
    IF NOT FOUND OR NOT fleet_internal.sees(role_name, found_group.organization_id) THEN
        RAISE EXCEPTION 'device group "%" does not exist', group_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with fleet.create_device_group(), or see the existing ones in fleet.device_groups.';
    END IF;
    RETURN found_group;
END;
$$;

-- Who is in which group, now: the one definition of membership, a view so
-- that jobs and group_members() plan it as part of their own queries.
-- Template and organization narrow the scan; the filter is evaluated only on
-- what is left.
CREATE VIEW fleet.device_group_members WITH (security_invoker = true) AS
    SELECT g.id AS group_id, d.id AS device_id
      FROM fleet.device_groups g
      JOIN fleet.organizations o ON o.path @> ARRAY[g.organization_id]
      JOIN fleet.devices d ON d.organization_id = o.id
     WHERE (g.template_id IS NULL OR d.template_id = g.template_id)
       AND (g.filter IS NULL OR jsonb_path_match(fleet.device_document(d), g.filter, silent => true));
COMMENT ON VIEW fleet.device_group_members IS 'The devices of each device group now: template, organization subtree and filter applied';

CREATE FUNCTION fleet.group_members(group_id text)
RETURNS SETOF text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_device_group(group_id);
    RETURN QUERY
    SELECT m.device_id FROM fleet.device_group_members m WHERE m.group_id = group_members.group_id
     ORDER BY m.device_id;
END;
$$;
COMMENT ON FUNCTION fleet.group_members(text) IS 'The ids of the devices in a device group now';

CREATE FUNCTION fleet.group_member_count(group_id text)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*) FROM fleet.group_members(group_id)
$$;
COMMENT ON FUNCTION fleet.group_member_count(text) IS 'How many devices a job on this group would apply to now, as IoT Central shows under the group selection';
