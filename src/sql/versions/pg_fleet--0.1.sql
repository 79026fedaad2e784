-- pg_fleet install script, built from src/sql/*.sql by the Makefile.
-- Every function sets search_path = pg_catalog, pg_temp and names our own
-- objects with the fleet. prefix, as "Security Considerations for
-- Extensions" asks.

\echo Use "CREATE EXTENSION pg_fleet" to load this file. \quit

-- The schema is created by CREATE EXTENSION (schema = fleet in the control
-- file); nothing here may live anywhere else.
COMMENT ON SCHEMA fleet IS 'pg_fleet: bulk device management (devices, templates, groups, import/export, jobs)';

-- Refuses an id or display name for a new object of the given kind
-- ("organization", "device group", ...): ids are 1 to max_length letters,
-- digits, "-" or "_", names are not blank.  Jobs will use it too.
CREATE FUNCTION fleet.check_new_object(kind text, id text, display_name text, max_length int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF id IS NULL OR id !~ '^[A-Za-z0-9_-]+$' OR length(id) > max_length THEN
        RAISE EXCEPTION 'invalid % id "%"', kind, id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Use 1 to %s letters, digits, "-" or "_".', max_length);
    END IF;
    IF display_name IS NULL OR btrim(display_name) = '' THEN
        RAISE EXCEPTION '% "%" needs a display name', kind, id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

-- A CSV cell a spreadsheet will not run as a formula: with neutralize, a
-- value starting with =, +, -, @, a tab or a carriage return gets a leading
-- single quote, as OWASP's "CSV Injection" advice says.  Only the output
-- changes, never what is stored.  C (src/spreadsheet_cell.c), and it
-- carries no SET search_path: it looks no names up, and exports call it for
-- every cell (the clause would cost a configuration save and restore each).
CREATE FUNCTION fleet.spreadsheet_cell(value text, neutralize boolean)
RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'spreadsheet_cell';
COMMENT ON FUNCTION fleet.spreadsheet_cell(text, boolean) IS 'The value, with a leading single quote when neutralize is true and a spreadsheet would read it as a formula';
-- Organizations: a hierarchy under the built-in root organization.  Devices,
-- groups and jobs belong to one organization; a member of an organization
-- sees it and everything below it (enforced in a later version).

CREATE TABLE fleet.organizations (
    id           text PRIMARY KEY,
    display_name text NOT NULL,
    parent_id    text REFERENCES fleet.organizations (id),
    -- ids from root down to this organization: subtree tests are "path @> {id}"
    path         text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT organizations_root_has_no_parent CHECK ((id = 'root') = (parent_id IS NULL))
);
CREATE INDEX organizations_path_idx ON fleet.organizations USING gin (path);
COMMENT ON TABLE fleet.organizations IS 'Organizations, a tree under "root"; path lists the ids from root down to each one';

INSERT INTO fleet.organizations (id, display_name, parent_id, path)
VALUES ('root', 'Root', NULL, ARRAY['root']);

-- Refuses unless the organization exists; used by every function that
-- takes an organization argument so the message is the same everywhere.
CREATE FUNCTION fleet.require_organization(organization text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = organization) THEN
        RAISE EXCEPTION 'organization "%" does not exist', organization
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with fleet.create_organization(), or see the existing ones in fleet.organizations.';
    END IF;
    RETURN organization;
END;
$$;

CREATE FUNCTION fleet.create_organization(id text, display_name text, parent text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent_org  text := coalesce(parent, 'root');
    parent_path text[];
BEGIN
    PERFORM fleet.check_new_object('organization', id, display_name, 128);
    SELECT o.path INTO parent_path FROM fleet.organizations o WHERE o.id = parent_org;
    IF parent_path IS NULL THEN
        PERFORM fleet.require_organization(parent_org);
    END IF;
    PERFORM fleet.require_app_role(parent_org, 'administrator', 'creating an organization');
    IF EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = create_organization.id) THEN
        RAISE EXCEPTION 'organization "%" already exists', id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose another id.';
    END IF;
    INSERT INTO fleet.organizations (id, display_name, parent_id, path)
    VALUES (id, display_name, parent_org, parent_path || id);
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
-- Device templates from DTDL v2 models, as IoT Central and the Azure IoT
-- model repository write them.  Each Interface is one row; its contents are
-- rows of fleet.template_contents with their schemas resolved, and the view
-- fleet.template_capabilities lists what a device of a template can do,
-- component by component.  Validation happens once, at import, so jobs can
-- trust what they find here.

CREATE TABLE fleet.device_templates (
    id           text PRIMARY KEY,          -- the Interface's DTMI
    display_name text,
    description  text,
    model        jsonb NOT NULL,            -- the Interface exactly as imported
    imported_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fleet.device_templates IS 'DTDL v2 Interfaces imported with fleet.import_template(); any of them can be a device template';

CREATE TABLE fleet.template_contents (
    template_id     text NOT NULL REFERENCES fleet.device_templates (id) ON DELETE CASCADE,
    name            text NOT NULL,
    capability      text NOT NULL CHECK (capability IN ('telemetry', 'property', 'writable_property',
                                                        'cloud_property', 'command', 'component',
                                                        'relationship')),
    semantic_types  text[] NOT NULL DEFAULT '{}',
    display_name    text,
    schema          jsonb,           -- resolved: a primitive name or a complex schema object
    min_value       numeric,         -- IoT Central minValue/maxValue, when given
    max_value       numeric,
    request         jsonb,           -- commands: {"name", "schema"} with the schema resolved
    response        jsonb,
    component_interface text REFERENCES fleet.device_templates (id),
    PRIMARY KEY (template_id, name)
);
CREATE INDEX template_contents_component_idx ON fleet.template_contents (component_interface);
COMMENT ON TABLE fleet.template_contents IS 'The contents of each imported Interface, validated, with schemas resolved';

CREATE VIEW fleet.template_capabilities WITH (security_invoker = true) AS
    SELECT c.template_id, NULL::text AS component, c.name, c.capability, c.schema,
           c.min_value, c.max_value, c.request, c.response, c.display_name, c.semantic_types
      FROM fleet.template_contents c
     WHERE c.capability NOT IN ('component', 'relationship')
    UNION ALL
    SELECT comp.template_id, comp.name, c.name, c.capability, c.schema,
           c.min_value, c.max_value, c.request, c.response, c.display_name, c.semantic_types
      FROM fleet.template_contents comp
      JOIN fleet.template_contents c ON c.template_id = comp.component_interface
     WHERE comp.capability = 'component'
       AND c.capability NOT IN ('component', 'relationship');
COMMENT ON VIEW fleet.template_capabilities IS 'Every telemetry, property, writable property, cloud property and command of each template; component is NULL for the root interface';

-- "@type" as DTDL allows it: a string, or an array of strings (the class
-- plus semantic types such as "Temperature").
CREATE FUNCTION fleet.dtdl_types(type jsonb, what text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE jsonb_typeof(type)
    WHEN 'string' THEN
        RETURN ARRAY[type #>> '{}'];
    WHEN 'array' THEN
        IF jsonb_array_length(type) > 0
           AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(type) e WHERE jsonb_typeof(e) <> 'string') THEN
            RETURN ARRAY(SELECT jsonb_array_elements_text(type));
        END IF;
    ELSE
        NULL;
    END CASE;
    RAISE EXCEPTION '% has no valid "@type"', what
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('"@type" is %s.', coalesce(type::text, 'missing')),
              HINT = 'Give "@type" as a string such as "Property" or an array such as ["Property", "Temperature"].';
END;
$$;

-- displayName and description: a string, or a language map such as
-- {"en": "Thermostat"}; we keep English, else the first language.
CREATE FUNCTION fleet.dtdl_text(value jsonb, what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE jsonb_typeof(value)
    WHEN 'string' THEN
        RETURN value #>> '{}';
    WHEN 'object' THEN
        IF NOT EXISTS (SELECT 1 FROM jsonb_each(value) e WHERE jsonb_typeof(e.value) <> 'string') THEN
            RETURN coalesce(value ->> 'en',
                            (SELECT e.value FROM jsonb_each_text(value) e ORDER BY e.key LIMIT 1));
        END IF;
    ELSE
        IF value IS NULL THEN
            RETURN NULL;
        END IF;
    END CASE;
    RAISE EXCEPTION '% is neither a string nor a language map', what
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('It is %s.', value),
              HINT = 'Write it as "text" or as {"en": "text"}.';
END;
$$;

CREATE FUNCTION fleet.dtdl_check_name(value jsonb, what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(value) = 'string'
       AND (value #>> '{}') ~ '^[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?$'
       AND length(value #>> '{}') <= 64 THEN
        RETURN value #>> '{}';
    END IF;
    RAISE EXCEPTION '% has an invalid name %', what, coalesce(value::text, '(missing)')
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'A DTDL name starts with a letter, has only letters, digits and "_", does not end with "_", and has at most 64 characters.';
END;
$$;

CREATE FUNCTION fleet.dtdl_is_dtmi(id text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT id ~ '^dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?)*;[1-9][0-9]{0,8}$'
           AND length(id) <= 2048
$$;

-- Validates a schema and returns it with every nested schema resolved:
-- primitives stay names, references to the interface's "schemas" are
-- replaced by their definitions.
CREATE FUNCTION fleet.dtdl_schema(schema jsonb, what text, local_schemas jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    label        text;
    types       text[];
    resolved    jsonb;
    element     jsonb;
    elements    jsonb := '[]';
    names       text[] := '{}';
    value_type  text;
    i           int := 0;
BEGIN
    IF schema IS NULL OR jsonb_typeof(schema) = 'null' THEN
        RAISE EXCEPTION '% has no schema', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add "schema", for example "schema": "double".';
    END IF;

    IF jsonb_typeof(schema) = 'string' THEN
        label := schema #>> '{}';
        IF label IN ('boolean', 'date', 'dateTime', 'double', 'duration', 'float', 'integer',
                    'long', 'string', 'time',
                    'point', 'multiPoint', 'lineString', 'multiLineString', 'polygon', 'multiPolygon',
                    'geopoint', 'vector') THEN
            RETURN schema;
        END IF;
        IF local_schemas ? label THEN
            RETURN local_schemas -> label;
        END IF;
        RAISE EXCEPTION 'unknown schema "%" in %', label, what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a DTDL v2 primitive (boolean, date, dateTime, double, duration, float, integer, long, string, time), an Enum, Object, Map or Array, or the @id of a schema declared in the interface''s "schemas".';
    END IF;

    IF jsonb_typeof(schema) <> 'object' THEN
        RAISE EXCEPTION 'the schema of % is not a schema name or object', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', schema);
    END IF;

    types := fleet.dtdl_types(schema -> '@type', 'the schema of ' || what);

    IF 'Enum' = ANY (types) THEN
        value_type := schema ->> 'valueSchema';
        IF value_type IS NULL OR value_type NOT IN ('integer', 'string') THEN
            RAISE EXCEPTION 'the Enum of % has valueSchema %', what, coalesce(schema -> 'valueSchema', '"(missing)"')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'An Enum''s valueSchema is "integer" or "string".';
        END IF;
        IF jsonb_typeof(schema -> 'enumValues') <> 'array' OR jsonb_array_length(schema -> 'enumValues') = 0 THEN
            RAISE EXCEPTION 'the Enum of % has no enumValues', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'List its values as "enumValues": [{"name": "on", "enumValue": 1}, ...].';
        END IF;
        FOR element IN SELECT e FROM jsonb_array_elements(schema -> 'enumValues') e LOOP
            i := i + 1;
            label := fleet.dtdl_check_name(element -> 'name', format('enum value %s of %s', i, what));
            IF label = ANY (names) THEN
                RAISE EXCEPTION 'the Enum of % has two values named "%"', what, label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            names := names || label;
            IF (value_type = 'string' AND jsonb_typeof(element -> 'enumValue') IS DISTINCT FROM 'string')
               OR (value_type = 'integer' AND (jsonb_typeof(element -> 'enumValue') IS DISTINCT FROM 'number'
                                               OR (element ->> 'enumValue') !~ '^-?[0-9]+$')) THEN
                RAISE EXCEPTION 'enum value "%" of % does not match its valueSchema "%"', label, what, value_type
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('Its enumValue is %s.', coalesce(element -> 'enumValue', '"(missing)"'));
            END IF;
        END LOOP;
        RETURN schema;
    ELSIF 'Object' = ANY (types) THEN
        IF jsonb_typeof(schema -> 'fields') <> 'array' OR jsonb_array_length(schema -> 'fields') = 0 THEN
            RAISE EXCEPTION 'the Object of % has no fields', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'List them as "fields": [{"name": "x", "schema": "double"}, ...].';
        END IF;
        FOR element IN SELECT e FROM jsonb_array_elements(schema -> 'fields') e LOOP
            i := i + 1;
            label := fleet.dtdl_check_name(element -> 'name', format('field %s of %s', i, what));
            IF label = ANY (names) THEN
                RAISE EXCEPTION 'the Object of % has two fields named "%"', what, label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            names := names || label;
            resolved := fleet.dtdl_schema(element -> 'schema', format('field "%s" of %s', label, what), local_schemas);
            elements := elements || jsonb_build_array(jsonb_set(element, '{schema}', resolved));
        END LOOP;
        RETURN jsonb_set(schema, '{fields}', elements);
    ELSIF 'Map' = ANY (types) THEN
        IF jsonb_typeof(schema -> 'mapKey') <> 'object' OR schema #>> '{mapKey,schema}' IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'the Map of % needs a mapKey with schema "string"', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM fleet.dtdl_check_name(schema #> '{mapKey,name}', format('the mapKey of %s', what));
        IF jsonb_typeof(schema -> 'mapValue') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'the Map of % has no mapValue', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Add "mapValue": {"name": "value", "schema": "string"}.';
        END IF;
        PERFORM fleet.dtdl_check_name(schema #> '{mapValue,name}', format('the mapValue of %s', what));
        resolved := fleet.dtdl_schema(schema #> '{mapValue,schema}', format('the mapValue of %s', what), local_schemas);
        RETURN jsonb_set(schema, '{mapValue,schema}', resolved);
    ELSIF 'Array' = ANY (types) THEN
        resolved := fleet.dtdl_schema(schema -> 'elementSchema', format('the elements of %s', what), local_schemas);
        RETURN jsonb_set(schema, '{elementSchema}', resolved);
    END IF;

    RAISE EXCEPTION 'unknown schema type % in %', schema -> '@type', what
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Complex schemas are Enum, Object, Map or Array.';
END;
$$;

-- Validates one Interface and returns its contents as rows.  Component
-- references are checked by the caller, which knows the whole model.
CREATE FUNCTION fleet.dtdl_interface_contents(interface jsonb, what text)
RETURNS SETOF fleet.template_contents
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id            text;
    contexts      jsonb;
    local_schemas jsonb := '{}';
    element       jsonb;
    types         text[];
    kind         text;
    names         text[] := '{}';
    item           fleet.template_contents;
    content_what  text;
    i             int := 0;
    min_value     jsonb;
    max_value     jsonb;
BEGIN
    IF jsonb_typeof(interface) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% is not a JSON object', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A device template is a DTDL v2 Interface object, or an array of them.';
    END IF;

    types := fleet.dtdl_types(interface -> '@type', what);
    IF NOT 'Interface' = ANY (types) THEN
        RAISE EXCEPTION '% is not a DTDL Interface', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Its "@type" is %s.', interface -> '@type'),
                  HINT = 'A device template is a DTDL v2 Interface, or an array of Interfaces joined by Components.';
    END IF;

    id := interface ->> '@id';
    IF jsonb_typeof(interface -> '@id') IS DISTINCT FROM 'string' OR NOT fleet.dtdl_is_dtmi(id) THEN
        RAISE EXCEPTION '% has a malformed DTMI %', what, coalesce(interface -> '@id', '"(missing @id)"')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A DTMI looks like "dtmi:com:example:Thermostat;1": "dtmi:", segments of letters, digits and "_" separated by ":", then ";" and a version number.';
    END IF;
    what := format('interface "%s"', id);

    contexts := CASE jsonb_typeof(interface -> '@context')
                WHEN 'string' THEN jsonb_build_array(interface -> '@context')
                WHEN 'array' THEN interface -> '@context' END;
    IF contexts IS NULL OR NOT contexts @> '["dtmi:dtdl:context;2"]' THEN
        RAISE EXCEPTION '% is not a DTDL v2 model', what
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = format('Its "@context" is %s.', coalesce(interface -> '@context', '"(missing)"')),
                  HINT = 'pg_fleet reads DTDL v2: set "@context" to "dtmi:dtdl:context;2", or to ["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"] for IoT Central''s extensions.';
    END IF;

    IF interface ? 'extends' THEN
        RAISE EXCEPTION '% uses "extends", which pg_fleet does not support yet', what
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Copy the inherited contents into the interface, or model them as a Component.';
    END IF;

    IF interface ? 'contents' AND jsonb_typeof(interface -> 'contents') <> 'array' THEN
        RAISE EXCEPTION 'the "contents" of % is not an array', what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- reusable schemas declared by the interface, referenced by their @id
    IF interface ? 'schemas' THEN
        IF jsonb_typeof(interface -> 'schemas') <> 'array' THEN
            RAISE EXCEPTION 'the "schemas" of % is not an array', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR element IN SELECT e FROM jsonb_array_elements(interface -> 'schemas') e LOOP
            IF jsonb_typeof(element -> '@id') IS DISTINCT FROM 'string' OR NOT fleet.dtdl_is_dtmi(element ->> '@id') THEN
                RAISE EXCEPTION 'a schema declared by % has a malformed DTMI %', what, coalesce(element -> '@id', '"(missing @id)"')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            local_schemas := local_schemas || jsonb_build_object(
                element ->> '@id',
                fleet.dtdl_schema(element - '@id', format('schema "%s" of %s', element ->> '@id', what), local_schemas));
        END LOOP;
    END IF;

    FOR element IN SELECT e FROM jsonb_array_elements(coalesce(interface -> 'contents', '[]')) e LOOP
        i := i + 1;
        content_what := format('content %s of %s', i, what);
        IF jsonb_typeof(element) <> 'object' THEN
            RAISE EXCEPTION '% is not a JSON object', content_what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        types := fleet.dtdl_types(element -> '@type', content_what);
        item := NULL;
        item.template_id := id;
        item.name := fleet.dtdl_check_name(element -> 'name', content_what);
        content_what := format('content "%s" of %s', item.name, what);
        IF item.name = ANY (names) THEN
            RAISE EXCEPTION '% has two contents named "%"', what, item.name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Names must be unique within an interface.';
        END IF;
        names := names || item.name;

        IF element ? '@id' AND (jsonb_typeof(element -> '@id') <> 'string' OR NOT fleet.dtdl_is_dtmi(element ->> '@id')) THEN
            RAISE EXCEPTION '% has a malformed DTMI %', content_what, element -> '@id'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;

        kind := (SELECT t FROM unnest(types) t
                   WHERE t IN ('Telemetry', 'Property', 'Command', 'Component', 'Relationship', 'Cloud')
                   ORDER BY t = 'Cloud' DESC LIMIT 1);
        IF kind IS NULL THEN
            RAISE EXCEPTION '% is not a Telemetry, Property, Command, Component or Relationship', content_what
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Its "@type" is %s.', element -> '@type');
        END IF;
        item.semantic_types := ARRAY(SELECT t FROM unnest(types) t
                                    WHERE t NOT IN ('Telemetry', 'Property', 'Command', 'Component', 'Relationship', 'Cloud'));
        item.display_name := fleet.dtdl_text(element -> 'displayName', format('the displayName of %s', content_what));

        IF element ? 'writable' AND jsonb_typeof(element -> 'writable') <> 'boolean' THEN
            RAISE EXCEPTION '"writable" of % is not true or false', content_what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;

        CASE kind
        WHEN 'Telemetry' THEN
            item.capability := 'telemetry';
        WHEN 'Cloud' THEN
            item.capability := 'cloud_property';   -- IoT Central: set by operators, never sent to devices
        WHEN 'Property' THEN
            item.capability := CASE WHEN (element ->> 'writable')::boolean THEN 'writable_property' ELSE 'property' END;
        WHEN 'Command' THEN
            item.capability := 'command';
        WHEN 'Component' THEN
            item.capability := 'component';
        ELSE
            item.capability := 'relationship';
        END CASE;

        IF item.capability IN ('telemetry', 'property', 'writable_property', 'cloud_property') THEN
            item.schema := fleet.dtdl_schema(element -> 'schema', content_what, local_schemas);
        ELSIF item.capability = 'command' THEN
            FOREACH kind IN ARRAY ARRAY['request', 'response'] LOOP
                CONTINUE WHEN NOT element ? kind;
                IF jsonb_typeof(element -> kind) <> 'object' THEN
                    RAISE EXCEPTION 'the % of command % is not an object', kind, content_what
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                PERFORM fleet.dtdl_check_name(element -> kind -> 'name', format('the %s of command %s', kind, content_what));
                IF kind = 'request' THEN
                    item.request := jsonb_set(element -> kind, '{schema}',
                        fleet.dtdl_schema(element -> kind -> 'schema', format('the request of command %s', content_what), local_schemas));
                ELSE
                    item.response := jsonb_set(element -> kind, '{schema}',
                        fleet.dtdl_schema(element -> kind -> 'schema', format('the response of command %s', content_what), local_schemas));
                END IF;
            END LOOP;
        ELSIF item.capability = 'component' THEN
            IF jsonb_typeof(element -> 'schema') IS DISTINCT FROM 'string' OR NOT fleet.dtdl_is_dtmi(element ->> 'schema') THEN
                RAISE EXCEPTION '% does not name its component interface by DTMI', content_what
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('Its schema is %s.', coalesce(element -> 'schema', '"(missing)"')),
                          HINT = 'Give the component''s interface as its @id, for example "schema": "dtmi:com:example:Thermostat;1", and include that interface in the same array or import it first.';
            END IF;
            item.component_interface := element ->> 'schema';
        END IF;

        -- IoT Central's range for numeric values, checked when jobs set them
        min_value := element -> 'minValue';
        max_value := element -> 'maxValue';
        IF min_value IS NOT NULL OR max_value IS NOT NULL THEN
            IF item.schema IS NULL OR jsonb_typeof(item.schema) <> 'string'
               OR (item.schema #>> '{}') NOT IN ('double', 'float', 'integer', 'long') THEN
                RAISE EXCEPTION '% has minValue or maxValue but no numeric schema', content_what
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'minValue and maxValue apply to double, float, integer and long values.';
            END IF;
            IF (min_value IS NOT NULL AND jsonb_typeof(min_value) <> 'number')
               OR (max_value IS NOT NULL AND jsonb_typeof(max_value) <> 'number') THEN
                RAISE EXCEPTION 'minValue and maxValue of % must be numbers', content_what
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('minValue is %s, maxValue is %s.', coalesce(min_value::text, 'not set'), coalesce(max_value::text, 'not set'));
            END IF;
            item.min_value := (min_value #>> '{}')::numeric;
            item.max_value := (max_value #>> '{}')::numeric;
            IF item.min_value > item.max_value THEN
                RAISE EXCEPTION 'minValue % is greater than maxValue % in %', item.min_value, item.max_value, content_what
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END IF;

        RETURN NEXT item;
    END LOOP;
END;
$$;

CREATE FUNCTION fleet.import_template(model jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    interfaces  jsonb;
    interface   jsonb;
    n_interface    int := 0;
    ids         text[] := '{}';
    contents    fleet.template_contents[] := '{}';
    root        text;
    problem     record;
    existing    jsonb;
BEGIN
    PERFORM fleet.require_app_role('root', 'administrator', 'importing a device template');
    CASE jsonb_typeof(model)
    WHEN 'object' THEN
        interfaces := jsonb_build_array(model);
    WHEN 'array' THEN
        interfaces := model;
    ELSE
        RAISE EXCEPTION 'a DTDL model must be an Interface object or an array of Interfaces'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The model is %s.', coalesce(jsonb_typeof(model), 'NULL')),
                  HINT = 'Pass the JSON of the model file, for example fleet.import_template(pg_read_file(''thermostat-1.json'')::jsonb).';
    END CASE;
    IF jsonb_array_length(interfaces) = 0 THEN
        RAISE EXCEPTION 'the DTDL model is an empty array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass at least one Interface.';
    END IF;

    FOR interface IN SELECT e FROM jsonb_array_elements(interfaces) e LOOP
        n_interface := n_interface + 1;
        contents := contents || ARRAY(
            SELECT c FROM fleet.dtdl_interface_contents(
                interface,
                CASE WHEN jsonb_typeof(model) = 'array' THEN format('element %s of the model array', n_interface)
                     ELSE 'the model' END) c);
        IF (interface ->> '@id') = ANY (ids) THEN
            RAISE EXCEPTION 'interface "%" appears twice in the model', interface ->> '@id'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        ids := ids || (interface ->> '@id');
    END LOOP;

    -- every component names an interface of this model or an imported one,
    -- and (DTDL v2) that interface has no components of its own
    SELECT c.template_id, c.name, c.component_interface INTO problem
      FROM unnest(contents) c
     WHERE c.capability = 'component'
       AND c.component_interface <> ALL (ids)
       AND NOT EXISTS (SELECT 1 FROM fleet.device_templates t WHERE t.id = c.component_interface)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'component "%" of interface "%" refers to unknown interface "%"',
                        problem.name, problem.template_id, problem.component_interface
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Include that interface in the same array, or import it first.';
    END IF;
    SELECT c.template_id, c.name, c.component_interface INTO problem
      FROM unnest(contents) c
     WHERE c.capability = 'component'
       AND (EXISTS (SELECT 1 FROM unnest(contents) n
                     WHERE n.template_id = c.component_interface AND n.capability = 'component')
            OR EXISTS (SELECT 1 FROM fleet.template_contents n
                        WHERE n.template_id = c.component_interface AND n.capability = 'component'))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'component "%" of interface "%" uses interface "%", which has components itself',
                        problem.name, problem.template_id, problem.component_interface
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'DTDL v2 components do not nest: give the inner components to the root interface.';
    END IF;

    -- the root: the first interface that no other interface uses as a component
    SELECT i.id INTO root
      FROM unnest(ids) WITH ORDINALITY AS i(id, n)
     WHERE NOT EXISTS (SELECT 1 FROM unnest(contents) c
                        WHERE c.capability = 'component' AND c.component_interface = i.id)
     ORDER BY i.n
     LIMIT 1;
    IF root IS NULL THEN
        RAISE EXCEPTION 'the interfaces of the model use each other as components in a cycle'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- models are immutable: a re-import must be identical
    FOR interface IN SELECT e FROM jsonb_array_elements(interfaces) e LOOP
        SELECT t.model INTO existing FROM fleet.device_templates t WHERE t.id = interface ->> '@id';
        IF FOUND AND existing <> interface THEN
            RAISE EXCEPTION 'device template "%" already exists with different content', interface ->> '@id'
                USING ERRCODE = 'duplicate_object',
                      HINT = 'DTDL models are immutable: import the changed model under a new version, for example ";2" instead of ";1".';
        END IF;
    END LOOP;

    INSERT INTO fleet.device_templates (id, display_name, description, model)
    SELECT i ->> '@id',
           fleet.dtdl_text(i -> 'displayName', format('the displayName of interface "%s"', i ->> '@id')),
           fleet.dtdl_text(i -> 'description', format('the description of interface "%s"', i ->> '@id')),
           i
      FROM jsonb_array_elements(interfaces) i
    ON CONFLICT (id) DO NOTHING;

    INSERT INTO fleet.template_contents
    SELECT c.* FROM unnest(contents) c
    ON CONFLICT (template_id, name) DO NOTHING;

    RETURN root;
END;
$$;
COMMENT ON FUNCTION fleet.import_template(jsonb) IS 'Imports a DTDL v2 Interface, or an array of Interfaces joined by Components; returns the root interface''s id';
-- IoT Edge deployment manifests, assigned to edge devices by manifest jobs.

CREATE TABLE fleet.edge_manifests (
    id           text PRIMARY KEY,
    display_name text NOT NULL,
    manifest     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fleet.edge_manifests IS 'IoT Edge deployment manifests (modulesContent with $edgeAgent and $edgeHub)';

CREATE FUNCTION fleet.create_edge_manifest(id text, display_name text, manifest jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    module text;
BEGIN
    PERFORM fleet.require_app_role('root', 'administrator', 'creating an edge manifest');
    PERFORM fleet.check_new_object('edge manifest', id, display_name, 255);
    IF jsonb_typeof(manifest -> 'modulesContent') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'edge manifest "%" has no "modulesContent" object', id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass an IoT Edge deployment manifest: {"modulesContent": {"$edgeAgent": {"properties.desired": {...}}, "$edgeHub": {"properties.desired": {...}}}}.';
    END IF;
    FOREACH module IN ARRAY ARRAY['$edgeAgent', '$edgeHub'] LOOP
        IF jsonb_typeof(manifest -> 'modulesContent' -> module) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'edge manifest "%" has no "%" module', id, module
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Every deployment manifest configures the $edgeAgent and $edgeHub system modules.';
        END IF;
        IF jsonb_typeof(manifest -> 'modulesContent' -> module -> 'properties.desired') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'module "%" of edge manifest "%" has no "properties.desired" object', module, id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write the module''s desired properties as "properties.desired": {...}.';
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM fleet.edge_manifests m WHERE m.id = create_edge_manifest.id) THEN
        RAISE EXCEPTION 'edge manifest "%" already exists', id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose another id.';
    END IF;
    INSERT INTO fleet.edge_manifests (id, display_name, manifest) VALUES (id, display_name, manifest);
    RETURN id;
END;
$$;
COMMENT ON FUNCTION fleet.create_edge_manifest(text, text, jsonb) IS 'Validates and stores an IoT Edge deployment manifest';
-- The device registry.
--
-- fleet.devices has no foreign keys: they are per-row triggers, which would
-- dominate the cost of importing a million devices and stand in the way of
-- distributing the table later (DESIGN.md section 7).  Every function that
-- writes devices checks what they refer to, and the referenced tables refuse
-- to lose a row that devices still use (fleet.refuse_delete_in_use).

-- NULL when a device id and name follow IoT Central's rules, else what is
-- wrong with them.  C, without SET search_path: it looks no names up and
-- checks every row of an import.
CREATE FUNCTION fleet.device_identity_problem(device_id text, display_name text DEFAULT NULL)
RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'device_identity_problem';
COMMENT ON FUNCTION fleet.device_identity_problem(text, text) IS 'NULL when the device id (letters, digits, "-", at most 128) and name (at most 148 characters) are acceptable, else the reason';

CREATE TABLE fleet.devices (
    id                        text PRIMARY KEY,
    display_name              text NOT NULL,
    template_id               text,
    organization_id           text NOT NULL DEFAULT 'root',
    simulated                 boolean NOT NULL DEFAULT false,
    edge                      boolean NOT NULL DEFAULT false,
    manifest_id               text,
    properties                jsonb NOT NULL DEFAULT '{}',   -- desired writable properties, twin-shaped
    reported                  jsonb NOT NULL DEFAULT '{}',   -- what the device reported
    cloud_properties          jsonb NOT NULL DEFAULT '{}',
    x509_thumbprint_primary   text,
    x509_thumbprint_secondary text,
    import_operation_id       bigint,                        -- the import that registered it
    created_at                timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT devices_identity_check CHECK (fleet.device_identity_problem(id, display_name) IS NULL),
    CONSTRAINT devices_x509_primary_check CHECK (x509_thumbprint_primary ~ '^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$'),
    CONSTRAINT devices_x509_secondary_check CHECK (x509_thumbprint_secondary ~ '^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$')
);
-- No secondary indexes yet: every query so far (groups, export) reads most
-- devices, and each index costs about 40 % more import time.  See README.
COMMENT ON TABLE fleet.devices IS 'Registered devices; properties and cloud_properties are shaped like an IoT Hub twin''s desired section';

-- Refuses to delete a template, organization or manifest that devices use.
CREATE FUNCTION fleet.refuse_delete_in_use()
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
    FOR EACH ROW EXECUTE FUNCTION fleet.refuse_delete_in_use('template_id', 'device template');
CREATE TRIGGER refuse_delete_in_use BEFORE DELETE ON fleet.organizations
    FOR EACH ROW EXECUTE FUNCTION fleet.refuse_delete_in_use('organization_id', 'organization');
CREATE TRIGGER refuse_delete_in_use BEFORE DELETE ON fleet.edge_manifests
    FOR EACH ROW EXECUTE FUNCTION fleet.refuse_delete_in_use('manifest_id', 'edge manifest');

CREATE FUNCTION fleet.require_template(template text)
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

CREATE FUNCTION fleet.create_device(id text, display_name text DEFAULT NULL, template text DEFAULT NULL,
                                    organization text DEFAULT NULL, simulated boolean DEFAULT false,
                                    edge boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text;
BEGIN
    problem := fleet.device_identity_problem(id, display_name);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A device id has 1 to 128 letters, digits or "-", and no spaces; a device name at most 148 characters.';
    END IF;
    IF template IS NOT NULL THEN
        PERFORM fleet.require_template(template);
    END IF;
    PERFORM fleet.require_organization(coalesce(organization, 'root'));
    PERFORM fleet.require_app_role(coalesce(organization, 'root'), 'operator', 'creating a device');
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
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    organization text;
BEGIN
    -- a device the caller cannot see "does not exist"; one it only views is refused
    SELECT d.organization_id INTO organization FROM fleet.devices d WHERE d.id = delete_device.id;
    IF FOUND THEN
        PERFORM fleet.require_app_role(organization, 'operator', 'deleting a device');
    END IF;
    DELETE FROM fleet.devices d WHERE d.id = delete_device.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'device "%" does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
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
-- Device groups: a template, a jsonpath filter over fleet.device_document()
-- and an organization.  Membership is evaluated when asked (and when a job
-- starts), never cached, so a group always means its devices of the moment.

CREATE TABLE fleet.device_groups (
    id              text PRIMARY KEY,
    display_name    text NOT NULL,
    template_id     text REFERENCES fleet.device_templates (id),
    filter          jsonpath,
    organization_id text NOT NULL DEFAULT 'root' REFERENCES fleet.organizations (id),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fleet.device_groups IS 'Device groups: devices of template_id (any when NULL) in organization_id or below that match filter (all when NULL)';

CREATE FUNCTION fleet.create_device_group(id text, display_name text, template text DEFAULT NULL,
                                          filter jsonpath DEFAULT NULL, organization text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- every key a device document has, so a filter is tried on all of them
    sample jsonb := jsonb_build_object(
        'id', 'sample', 'displayName', 'sample', 'template', 'dtmi:sample:Sample;1',
        'organization', 'root', 'simulated', false, 'edge', false, 'manifest', NULL,
        'properties', '{}'::jsonb, 'reported', '{}'::jsonb, 'cloudProperties', '{}'::jsonb);
    problem text;
BEGIN
    PERFORM fleet.check_new_object('device group', id, display_name, 255);
    IF template IS NOT NULL THEN
        PERFORM fleet.require_template(template);
    END IF;
    PERFORM fleet.require_organization(coalesce(organization, 'root'));
    PERFORM fleet.require_app_role(coalesce(organization, 'root'), 'operator', 'creating a device group');

    -- A filter must be a predicate, true, false or unknown for every device,
    -- not a path that selects values: jsonb_path_match() refuses anything
    -- but a single boolean, so try it on a document with every device key.
    IF filter IS NOT NULL THEN
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

CREATE FUNCTION fleet.require_device_group(group_id text)
RETURNS fleet.device_groups
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_group fleet.device_groups;
BEGIN
    SELECT g.* INTO found_group FROM fleet.device_groups g WHERE g.id = group_id;
    IF NOT FOUND THEN
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
    PERFORM fleet.require_device_group(group_id);
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

CREATE FUNCTION fleet.generate_group_key()
RETURNS text
LANGUAGE c VOLATILE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'generate_group_key';
COMMENT ON FUNCTION fleet.generate_group_key() IS 'A new random enrollment group key: 64 bytes from a strong random source, base64';

CREATE TABLE fleet.enrollment_groups (
    id            text PRIMARY KEY CHECK (id IN ('SAS-IoT-Devices', 'SAS-IoT-Edge-Devices')),
    primary_key   text NOT NULL,
    secondary_key text NOT NULL,
    rotated_at    timestamptz
);
COMMENT ON TABLE fleet.enrollment_groups IS 'The SAS enrollment groups: SAS-IoT-Devices for devices, SAS-IoT-Edge-Devices for IoT Edge devices';

INSERT INTO fleet.enrollment_groups (id, primary_key, secondary_key)
VALUES ('SAS-IoT-Devices', fleet.generate_group_key(), fleet.generate_group_key()),
       ('SAS-IoT-Edge-Devices', fleet.generate_group_key(), fleet.generate_group_key());

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
-- Device CSV import, IoT Central's format, through COPY:
--
--   SET fleet.import_template = 'dtmi:com:example:Thermostat;1';   -- optional
--   SET fleet.import_organization = 'acme';                        -- optional
--   \copy fleet.device_import FROM 'devices.csv' WITH (FORMAT csv, HEADER)
--
-- COPY parses; the row trigger (C, device_import.c) stages each row with its
-- line number; the statement's AFTER trigger validates and registers all of
-- them in one statement.  Every row ends up in exactly one place: in
-- fleet.devices, or in fleet.device_operation_errors with its reason.

CREATE TABLE fleet.device_operations (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('import')),
    status          text NOT NULL CHECK (status IN ('running', 'completed', 'completed_with_errors', 'failed')),
    template_id     text,
    organization_id text NOT NULL,
    rows            bigint NOT NULL DEFAULT 0,
    imported        bigint NOT NULL DEFAULT 0,
    rejected        bigint NOT NULL DEFAULT 0,
    started_by      name NOT NULL DEFAULT current_user,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
COMMENT ON TABLE fleet.device_operations IS 'The Device Operations panel: one row per device import, with its counts (rows = imported + rejected)';

CREATE TABLE fleet.device_operation_errors (
    operation_id bigint NOT NULL REFERENCES fleet.device_operations (id) ON DELETE CASCADE,
    line         bigint NOT NULL,
    device_id    text,
    error        text NOT NULL,
    PRIMARY KEY (operation_id, line)
);
COMMENT ON TABLE fleet.device_operation_errors IS 'Rows a device import rejected: the file line, the device id as given, and why';

-- What COPY writes into.  Column names are the CSV header's, so
-- COPY ... WITH (FORMAT csv, HEADER MATCH) checks the header too.
CREATE VIEW fleet.device_import AS
    SELECT NULL::text AS "IOTC_DEVICEID", NULL::text AS "IOTC_DEVICENAME"
     WHERE false;
COMMENT ON VIEW fleet.device_import IS 'COPY an IoT Central device CSV (IOTC_DEVICEID, IOTC_DEVICENAME) into this view to import devices; see fleet.device_operations for the outcome';

-- The staging functions are C and act only on the calling session's own
-- import in progress.  The row trigger carries no SET search_path: it looks
-- no names up, and the clause would cost a configuration save and restore
-- on each of a million rows.
CREATE FUNCTION fleet.device_import_begin()
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_begin';
COMMENT ON FUNCTION fleet.device_import_begin() IS 'Internal: starts the staging of one import statement';

CREATE FUNCTION fleet.device_import_stage_row()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'device_import_stage_row';

CREATE FUNCTION fleet.device_import_staged_rows(OUT line bigint, OUT device_id text, OUT display_name text)
RETURNS SETOF record
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_staged_rows';
COMMENT ON FUNCTION fleet.device_import_staged_rows() IS 'Internal: the rows staged by the current import statement, for its AFTER trigger';

CREATE FUNCTION fleet.device_import_staged_count()
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_staged_count';

CREATE FUNCTION fleet.device_import_register(operation_id bigint, template text, organization text)
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_register';
COMMENT ON FUNCTION fleet.device_import_register(bigint, text, text) IS 'Internal: bulk-inserts the valid rows of the current import; -1 when the caller must use INSERT instead';

CREATE FUNCTION fleet.device_import_release()
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_release';

-- The target template and organization, from the fleet.import_* settings.
CREATE FUNCTION fleet.device_import_target(OUT template text, OUT organization text)
RETURNS record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    template := nullif(current_setting('fleet.import_template'), '');
    organization := coalesce(nullif(current_setting('fleet.import_organization'), ''), 'root');
    IF template IS NOT NULL AND NOT EXISTS (SELECT 1 FROM fleet.device_templates t WHERE t.id = template) THEN
        RAISE EXCEPTION 'device template "%" does not exist', template
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'fleet.import_template names the template of the imported devices; nothing was imported.',
                  HINT = 'Import the template with fleet.import_template() first, or RESET fleet.import_template to import devices without a template.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = organization) THEN
        RAISE EXCEPTION 'organization "%" does not exist', organization
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'fleet.import_organization names the organization of the imported devices; nothing was imported.',
                  HINT = 'Create it with fleet.create_organization() first, or RESET fleet.import_organization to import into root.';
    END IF;
END;
$$;

-- BEFORE statement: refuse an unknown target before COPY reads a row.
CREATE FUNCTION fleet.device_import_check_target()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet.require_app_role(coalesce(nullif(current_setting('fleet.import_organization'), ''), 'root'),
                                   'operator', 'importing devices');
    PERFORM fleet.device_import_target();
    PERFORM fleet.device_import_begin();
    RETURN NULL;
END;
$$;

-- AFTER statement: register the good rows and record the others, set-based.
--
-- The fast path inserts every valid row with the table's multi-row insert,
-- as COPY does (device_import_register, in C), or with one plain INSERT where
-- that does not apply.  When an id repeats
-- in the file or is already registered (perhaps by an import running at the
-- same time), that INSERT fails and is rolled back, and the slow path
-- classifies: ON CONFLICT DO NOTHING, then the rows it skipped are either
-- repeats of an earlier line or already registered.  ON CONFLICT costs about
-- 40 % more per row, so it is kept for files that need it.
CREATE FUNCTION fleet.device_import_finish()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    target      record := fleet.device_import_target();
    op_id       bigint;
    n_rows      bigint := fleet.device_import_staged_count();
    n_imported  bigint;
    n_conflicts bigint := 0;
    n_invalid   bigint := 0;
    n_rejected  bigint;
BEGIN
    INSERT INTO fleet.device_operations (kind, status, template_id, organization_id, started_at)
    VALUES ('import', 'running', target.template, target.organization, statement_timestamp())
    RETURNING id INTO op_id;

    BEGIN
        n_imported := fleet.device_import_register(op_id, target.template, target.organization);
        IF n_imported < 0 THEN
            -- no bulk path for this role: INSERT checks privileges and policies
            INSERT INTO fleet.devices (id, display_name, template_id, organization_id, import_operation_id)
            SELECT s.device_id, coalesce(nullif(s.display_name, ''), s.device_id),
                   target.template, target.organization, op_id
              FROM fleet.device_import_staged_rows() s
             WHERE fleet.device_identity_problem(s.device_id, s.display_name) IS NULL;
            GET DIAGNOSTICS n_imported = ROW_COUNT;
        END IF;
    EXCEPTION WHEN unique_violation THEN
        WITH valid AS (
            SELECT s.line, s.device_id, s.display_name
              FROM fleet.device_import_staged_rows() s
             WHERE fleet.device_identity_problem(s.device_id, s.display_name) IS NULL
        ),
        inserted AS (
            -- rows go in file order, so of repeated ids the first line wins
            INSERT INTO fleet.devices (id, display_name, template_id, organization_id, import_operation_id)
            SELECT v.device_id, coalesce(nullif(v.display_name, ''), v.device_id),
                   target.template, target.organization, op_id
              FROM valid v
            ON CONFLICT (id) DO NOTHING
            RETURNING id
        ),
        conflicts AS (
            INSERT INTO fleet.device_operation_errors (operation_id, line, device_id, error)
            SELECT op_id, c.line, c.device_id,
                   CASE WHEN c.line <> c.first_line
                        THEN format('device ID "%s" repeats line %s of this file%s', c.device_id, c.first_line,
                                    CASE WHEN EXISTS (SELECT 1 FROM inserted i WHERE i.id = c.device_id)
                                         THEN '; only the first is imported' ELSE '' END)
                        ELSE format('device ID "%s" is already registered', c.device_id)
                   END
              FROM (SELECT v.line, v.device_id, min(v.line) OVER (PARTITION BY v.device_id) AS first_line
                      FROM valid v) c
             WHERE c.line <> c.first_line
                OR NOT EXISTS (SELECT 1 FROM inserted i WHERE i.id = c.device_id)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM conflicts)
          INTO n_imported, n_conflicts;
    END;

    IF n_imported + n_conflicts < n_rows THEN
        INSERT INTO fleet.device_operation_errors (operation_id, line, device_id, error)
        SELECT op_id, p.line, p.device_id, p.problem
          FROM (SELECT s.line, s.device_id, fleet.device_identity_problem(s.device_id, s.display_name) AS problem
                  FROM fleet.device_import_staged_rows() s) p
         WHERE p.problem IS NOT NULL;
        GET DIAGNOSTICS n_invalid = ROW_COUNT;
    END IF;
    PERFORM fleet.device_import_release();

    n_rejected := n_conflicts + n_invalid;
    IF n_rows <> n_imported + n_rejected THEN
        RAISE EXCEPTION 'device import lost track of % rows', n_rows - n_imported - n_rejected
            USING ERRCODE = 'internal_error';
    END IF;

    UPDATE fleet.device_operations o
       SET status = CASE WHEN n_rejected = 0 THEN 'completed'
                         WHEN n_imported = 0 THEN 'failed'
                         ELSE 'completed_with_errors' END,
           rows = n_rows, imported = n_imported, rejected = n_rejected,
           finished_at = clock_timestamp()
     WHERE o.id = op_id;

    IF n_rejected = 0 THEN
        RAISE NOTICE 'device import %: imported % of % devices', op_id, n_imported, n_rows;
    ELSE
        RAISE NOTICE 'device import %: imported % of % devices, rejected %', op_id, n_imported, n_rows, n_rejected
            USING HINT = format('See why with: SELECT line, device_id, error FROM fleet.device_operation_errors WHERE operation_id = %s ORDER BY line;', op_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER check_target BEFORE INSERT ON fleet.device_import
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.device_import_check_target();
CREATE TRIGGER stage_row INSTEAD OF INSERT ON fleet.device_import
    FOR EACH ROW EXECUTE FUNCTION fleet.device_import_stage_row();
CREATE TRIGGER finish AFTER INSERT ON fleet.device_import
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.device_import_finish();
-- Device export in IoT Central's CSV format, with SAS keys derived from the
-- enrollment groups:
--
--   \copy (SELECT * FROM fleet.export_devices('dtmi:com:example:Thermostat;1')) TO 'devices.csv' WITH (FORMAT csv, HEADER)
--
-- Rows come in no particular order; add ORDER BY 1 to the query for one.

CREATE FUNCTION fleet.export_devices(template text DEFAULT NULL, organization text DEFAULT NULL,
                                     spreadsheet_safe boolean DEFAULT false)
RETURNS TABLE ("IOTC_DEVICEID" text, "IOTC_DEVICENAME" text,
               "IOTC_SASKEY_PRIMARY" text, "IOTC_SASKEY_SECONDARY" text,
               "IOTC_X509THUMBPRINT_PRIMARY" text, "IOTC_X509THUMBPRINT_SECONDARY" text)
LANGUAGE plpgsql STABLE
-- SECURITY DEFINER: the keys derive from the enrollment group keys, which
-- only root administrators may read; this function reads them for
-- administrators of the devices' organizations, and returns only their
-- devices.  EXECUTE stays with PUBLIC: the checks are inside.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller       name := fleet.calling_role();
    everything   boolean := fleet.role_sees_everything(caller);
    device_group fleet.enrollment_groups;
    edge_group   fleet.enrollment_groups;
BEGIN
    IF template IS NOT NULL THEN
        PERFORM fleet.require_template(template);
    END IF;
    IF organization IS NOT NULL THEN
        PERFORM fleet.require_organization(organization);
        PERFORM fleet.require_app_role(organization, 'administrator', 'exporting devices with their keys', caller);
    ELSIF NOT everything AND NOT EXISTS (SELECT 1 FROM fleet.organizations_for('administrator', caller)) THEN
        RAISE EXCEPTION 'permission denied to export devices with their keys'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Exports carry device keys: they are for administrators of the devices'' organizations.',
                  HINT = 'An administrator grants the role with fleet.grant_organization().';
    END IF;
    SELECT g.* INTO device_group FROM fleet.enrollment_groups g WHERE g.id = 'SAS-IoT-Devices';
    SELECT g.* INTO edge_group FROM fleet.enrollment_groups g WHERE g.id = 'SAS-IoT-Edge-Devices';

    -- (cells are neutralised only when asked: a function call per cell of a
    -- million rows costs seconds)
    RETURN QUERY
    SELECT CASE WHEN spreadsheet_safe THEN fleet.spreadsheet_cell(k.id, true) ELSE k.id END,
           CASE WHEN spreadsheet_safe THEN fleet.spreadsheet_cell(k.display_name, true) ELSE k.display_name END,
           CASE WHEN spreadsheet_safe THEN fleet.spreadsheet_cell(k.primary_key, true) ELSE k.primary_key END,
           CASE WHEN spreadsheet_safe THEN fleet.spreadsheet_cell(k.secondary_key, true) ELSE k.secondary_key END,
           k.x509_thumbprint_primary,      -- NULL: an empty CSV field
           k.x509_thumbprint_secondary
      FROM (SELECT d.id, d.display_name, d.x509_thumbprint_primary, d.x509_thumbprint_secondary,
                   fleet.compute_device_key(CASE WHEN d.edge THEN edge_group.primary_key
                                                 ELSE device_group.primary_key END, d.id) AS primary_key,
                   fleet.compute_device_key(CASE WHEN d.edge THEN edge_group.secondary_key
                                                 ELSE device_group.secondary_key END, d.id) AS secondary_key
              FROM fleet.devices d
             WHERE (template IS NULL OR d.template_id = template)
               AND (organization IS NULL
                    OR d.organization_id IN (SELECT o.id FROM fleet.organizations o WHERE o.path @> ARRAY[organization]))
               AND (everything OR d.organization_id IN (SELECT fleet.organizations_for('administrator', caller)))) k;
END;
$$;
COMMENT ON FUNCTION fleet.export_devices(text, text, boolean) IS 'Devices in IoT Central''s export format (IOTC_DEVICEID, IOTC_DEVICENAME, SAS keys, X.509 thumbprints), optionally of one template and one organization subtree';
-- Does a JSON value match a DTDL schema (as stored in template_contents,
-- resolved)?  Jobs check every value they will write, at creation, so a job
-- that can never succeed is refused instead of run.

-- NULL when value matches schema (and IoT Central's min/max), else what is
-- wrong, naming where inside the value.
CREATE FUNCTION fleet.schema_value_problem(value jsonb, schema jsonb, min_value numeric DEFAULT NULL,
                                           max_value numeric DEFAULT NULL, place text DEFAULT 'the value')
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind    text;
    types   text[];
    element jsonb;
    field   record;
    problem text;
    n       int := 0;
BEGIN
    IF value IS NULL OR jsonb_typeof(value) = 'null' THEN
        RETURN format('%s is missing', place);
    END IF;

    IF jsonb_typeof(schema) = 'string' THEN
        kind := schema #>> '{}';
        CASE
        WHEN kind = 'boolean' THEN
            IF jsonb_typeof(value) <> 'boolean' THEN
                RETURN format('%s must be true or false, not %s', place, value);
            END IF;
        WHEN kind IN ('double', 'float', 'integer', 'long') THEN
            IF jsonb_typeof(value) <> 'number' THEN
                RETURN format('%s must be a number (%s), not %s', place, kind, value);
            END IF;
            IF kind IN ('integer', 'long') AND (value #>> '{}')::numeric <> trunc((value #>> '{}')::numeric) THEN
                RETURN format('%s must be a whole number (%s), not %s', place, kind, value);
            END IF;
            IF kind = 'integer' AND (value #>> '{}')::numeric NOT BETWEEN -2147483648 AND 2147483647 THEN
                RETURN format('%s is out of range for an integer: %s', place, value);
            END IF;
            IF min_value IS NOT NULL AND (value #>> '{}')::numeric < min_value THEN
                RETURN format('%s %s is below the minimum %s', place, value, min_value);
            END IF;
            IF max_value IS NOT NULL AND (value #>> '{}')::numeric > max_value THEN
                RETURN format('%s %s is above the maximum %s', place, value, max_value);
            END IF;
        WHEN kind IN ('string', 'date', 'dateTime', 'time', 'duration') THEN
            IF jsonb_typeof(value) <> 'string' THEN
                RETURN format('%s must be a string%s, not %s', place,
                              CASE WHEN kind <> 'string' THEN format(' (%s)', kind) ELSE '' END, value);
            END IF;
            IF kind = 'date' AND NOT (value #>> '{}') ~ '^\d{4}-\d{2}-\d{2}$' THEN
                RETURN format('%s must be a date such as "2027-03-01", not %s', place, value);
            ELSIF kind = 'dateTime' AND NOT (value #>> '{}') ~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$' THEN
                RETURN format('%s must be an ISO 8601 date and time such as "2027-03-01T09:00:00Z", not %s', place, value);
            ELSIF kind = 'time' AND NOT (value #>> '{}') ~ '^\d{2}:\d{2}(:\d{2}(\.\d+)?)?$' THEN
                RETURN format('%s must be a time such as "09:30:00", not %s', place, value);
            ELSIF kind = 'duration' AND NOT (value #>> '{}') ~ '^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$' THEN
                RETURN format('%s must be an ISO 8601 duration such as "PT15M", not %s', place, value);
            END IF;
            IF kind IN ('date', 'dateTime', 'time') THEN
                BEGIN
                    CASE kind
                    WHEN 'date' THEN PERFORM (value #>> '{}')::date;
                    WHEN 'dateTime' THEN PERFORM (value #>> '{}')::timestamptz;
                    ELSE PERFORM (value #>> '{}')::time;
                    END CASE;
                EXCEPTION WHEN OTHERS THEN
                    RETURN format('%s is not a valid %s: %s', place, kind, value);
                END;
            END IF;
        WHEN kind IN ('geopoint') THEN
            IF jsonb_typeof(value) <> 'object' OR jsonb_typeof(value -> 'lat') <> 'number'
               OR jsonb_typeof(value -> 'lon') <> 'number' THEN
                RETURN format('%s must be a geopoint such as {"lat": 47.6, "lon": -122.1}, not %s', place, value);
            END IF;
        WHEN kind IN ('vector') THEN
            IF jsonb_typeof(value) <> 'object' OR jsonb_typeof(value -> 'x') <> 'number'
               OR jsonb_typeof(value -> 'y') <> 'number' OR jsonb_typeof(value -> 'z') <> 'number' THEN
                RETURN format('%s must be a vector such as {"x": 1, "y": 0, "z": 0}, not %s', place, value);
            END IF;
        ELSE
            -- DTDL's geospatial schemas are GeoJSON objects
            IF jsonb_typeof(value) <> 'object' OR NOT value ? 'type' OR NOT value ? 'coordinates' THEN
                RETURN format('%s must be a GeoJSON %s with "type" and "coordinates", not %s', place, kind, value);
            END IF;
        END CASE;
        RETURN NULL;
    END IF;

    types := fleet.dtdl_types(schema -> '@type', 'a stored schema');
    IF 'Enum' = ANY (types) THEN
        IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(schema -> 'enumValues') e WHERE e -> 'enumValue' = schema_value_problem.value) THEN
            RETURN format('%s must be one of %s, not %s', place,
                          (SELECT string_agg(e ->> 'enumValue', ', ') FROM jsonb_array_elements(schema -> 'enumValues') e),
                          value);
        END IF;
    ELSIF 'Object' = ANY (types) THEN
        IF jsonb_typeof(value) <> 'object' THEN
            RETURN format('%s must be an object, not %s', place, value);
        END IF;
        SELECT k INTO kind FROM jsonb_object_keys(value) k
         WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(schema -> 'fields') f WHERE f ->> 'name' = k)
         LIMIT 1;
        IF kind IS NOT NULL THEN
            RETURN format('%s has a field "%s" its schema does not have', place, kind);
        END IF;
        FOR field IN SELECT f ->> 'name' AS name, f -> 'schema' AS schema FROM jsonb_array_elements(schema -> 'fields') f LOOP
            CONTINUE WHEN NOT value ? field.name;
            problem := fleet.schema_value_problem(value -> field.name, field.schema, NULL, NULL,
                                                  format('field "%s" of %s', field.name, place));
            IF problem IS NOT NULL THEN
                RETURN problem;
            END IF;
        END LOOP;
    ELSIF 'Map' = ANY (types) THEN
        IF jsonb_typeof(value) <> 'object' THEN
            RETURN format('%s must be an object (a map), not %s', place, value);
        END IF;
        FOR field IN SELECT e.key AS name, e.value AS value FROM jsonb_each(value) e LOOP
            problem := fleet.schema_value_problem(field.value, schema #> '{mapValue,schema}', NULL, NULL,
                                                  format('entry "%s" of %s', field.name, place));
            IF problem IS NOT NULL THEN
                RETURN problem;
            END IF;
        END LOOP;
    ELSIF 'Array' = ANY (types) THEN
        IF jsonb_typeof(value) <> 'array' THEN
            RETURN format('%s must be an array, not %s', place, value);
        END IF;
        FOR element IN SELECT e FROM jsonb_array_elements(value) e LOOP
            n := n + 1;
            problem := fleet.schema_value_problem(element, schema -> 'elementSchema', NULL, NULL,
                                                  format('element %s of %s', n, place));
            IF problem IS NOT NULL THEN
                RETURN problem;
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION fleet.schema_value_problem(jsonb, jsonb, numeric, numeric, text) IS 'NULL when the JSON value matches the DTDL schema and range, else what is wrong';
-- Jobs: IoT Central's job body as jsonb, validated at creation, run by the
-- engine (job_engine.sql) in batches.  A job's devices and their outcomes are
-- rows of fleet.job_devices; a batch's progress is a row of fleet.job_batches.

CREATE TABLE fleet.jobs (
    id                  text PRIMARY KEY,
    display_name        text NOT NULL,
    description         text,
    group_id            text NOT NULL REFERENCES fleet.device_groups (id),
    organization_id     text NOT NULL REFERENCES fleet.organizations (id),
    job_type            text NOT NULL CHECK (job_type IN ('property', 'cloudProperty', 'command',
                                                          'deviceTemplateMigration', 'deviceManifestMigration')),
    data                jsonb NOT NULL,
    batch_type          text CHECK (batch_type IN ('number', 'percentage')),
    batch_value         int,
    threshold_type      text CHECK (threshold_type IN ('number', 'percentage')),
    threshold_value     int,
    threshold_per_batch boolean NOT NULL DEFAULT false,
    status              text NOT NULL CHECK (status IN ('saved', 'pending', 'running', 'stopped',
                                                        'completed', 'failed', 'cancelled')),
    definition          jsonb NOT NULL,       -- the body as given, with its id
    rerun_of            text REFERENCES fleet.jobs (id),
    scheduled_job_id    text,
    error               text,                 -- why the engine gave up on the job, if it did
    created_by          name NOT NULL DEFAULT current_user,
    created_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    queued_at           timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz,
    device_count        bigint,
    current_batch       int,
    last_step_at        timestamptz           -- when the engine last moved it on
);
CREATE INDEX jobs_queue_idx ON fleet.jobs (queued_at, id) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_created_idx ON fleet.jobs (created_at);
COMMENT ON TABLE fleet.jobs IS 'Jobs: IoT Central job definitions, their status (saved, pending, running, stopped, completed, failed, cancelled) and timing';

-- Batches are contiguous ranges of a job's devices in id order, so a batch
-- is walked through the primary key of job_devices with a cursor.
CREATE TABLE fleet.job_batches (
    job_id       text NOT NULL REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    batch        int NOT NULL,
    first_device text NOT NULL,
    last_device  text NOT NULL,
    size         bigint NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'completed', 'cancelled')),
    -- command batches count a window of answers once it is all answered
    -- (see fleet.command_windows), and the whole batch when it ends
    completed    bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    cursor       text,                       -- last device the engine dealt with
    started_at   timestamptz,
    finished_at  timestamptz,
    PRIMARY KEY (job_id, batch)
);
COMMENT ON TABLE fleet.job_batches IS 'The batches of each job, in order: size, status and how many devices completed and failed';

-- No foreign key to jobs: a job fans out to a million rows and foreign keys
-- are per-row triggers (DESIGN.md section 7).  Rows go with their job
-- (fleet.delete_job_rows).
--
-- A command job's rows are also its command deliveries (commands.sql):
-- gateways claim and answer them here, so a device costs its row, a claim
-- and an answer, and nothing else.  The delivery columns stay NULL for the
-- other job types.  No index covers status or the answer columns, so an
-- outcome is a HOT update (heap-only: no index entry) when its page has
-- room.  Pages are filled to a quarter, which leaves room for a row's
-- every version: a property job's outcome, or a command's claim and answer
-- (measured, 100,000 commands: at 40 %, about 10 % of answers were HOT, as the
-- claims took the room; at 25 %, 87 %, and gateways answer 25 % faster).
CREATE TABLE fleet.job_devices (
    job_id      text NOT NULL,
    device_id   text NOT NULL,
    batch       int NOT NULL,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'completed', 'failed')),
    error       text,
    started_at  timestamptz,                 -- command jobs: when a gateway claimed the command
    finished_at timestamptz,
    delivery_id bigint,                      -- command jobs: the job's number * 2^32 + the device's position
    gateway     text,                        -- who claimed the command ('simulator': the engine answered)
    deadline    timestamptz,                 -- the claimed command's answer is due by then
    response_status int,                     -- the device's answer, HTTP-style
    response    jsonb,
    PRIMARY KEY (job_id, device_id)
) WITH (fillfactor = 25);
-- an answer finds its delivery (not UNIQUE: ids are unique by
-- construction, and a unique index checks every row version it inserts,
-- which measurably slowed the gateways)
CREATE INDEX job_devices_delivery_idx ON fleet.job_devices (delivery_id)
    WHERE delivery_id IS NOT NULL;
-- the queue gateways claim from: deliveries no gateway has claimed yet
CREATE INDEX job_devices_unclaimed_idx ON fleet.job_devices (delivery_id)
    WHERE delivery_id IS NOT NULL AND gateway IS NULL;
-- The engine analyzes the table after a big fan-out (its statistics would
-- describe another table); a small sample does: what matters is the row
-- count and which jobs are big, and it takes 10 ms instead of 150.
ALTER TABLE fleet.job_devices
    ALTER COLUMN job_id SET STATISTICS 10, ALTER COLUMN device_id SET STATISTICS 10,
    ALTER COLUMN batch SET STATISTICS 10, ALTER COLUMN status SET STATISTICS 10,
    ALTER COLUMN error SET STATISTICS 10, ALTER COLUMN started_at SET STATISTICS 10,
    ALTER COLUMN finished_at SET STATISTICS 10, ALTER COLUMN delivery_id SET STATISTICS 10,
    ALTER COLUMN gateway SET STATISTICS 10, ALTER COLUMN deadline SET STATISTICS 10,
    ALTER COLUMN response_status SET STATISTICS 10, ALTER COLUMN response SET STATISTICS 10;
COMMENT ON TABLE fleet.job_devices IS 'Every device of every started job: its batch, status (pending, completed, failed) and error';

CREATE FUNCTION fleet.delete_job_rows()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM fleet.job_devices jd USING old_jobs o WHERE jd.job_id = o.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER delete_job_rows AFTER DELETE ON fleet.jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION fleet.delete_job_rows();

-- Which device properties each role shows as extra columns of
-- fleet.job_device_list(); kept across sessions.
CREATE TABLE fleet.job_device_list_columns (
    role_name name NOT NULL,
    position  int NOT NULL,
    path      text NOT NULL,            -- a jsonpath, as the role wrote it
    PRIMARY KEY (role_name, position)
);
COMMENT ON TABLE fleet.job_device_list_columns IS 'Extra columns of the job device list, per role: jsonpath expressions over fleet.device_document()';

-- The capability a job data entry refers to, or an error naming it.
CREATE FUNCTION fleet.job_capability(template text, path text, wanted text)
RETURNS fleet.template_capabilities
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path_component text := CASE WHEN strpos(path, '/') > 0 THEN split_part(path, '/', 1) END;
    path_name      text := CASE WHEN strpos(path, '/') > 0 THEN substr(path, strpos(path, '/') + 1) ELSE path END;
    cap     fleet.template_capabilities;
    noun      text := CASE wanted WHEN 'writable_property' THEN 'property' WHEN 'cloud_property' THEN 'cloud property'
                     ELSE 'command' END;
BEGIN
    SELECT c.* INTO cap FROM fleet.template_capabilities c
     WHERE c.template_id = template AND c.component IS NOT DISTINCT FROM path_component AND c.name = path_name
       AND c.capability IN ('property', 'writable_property', 'cloud_property', 'command', 'telemetry')
     ORDER BY c.capability = wanted DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% "%" is not in template "%"', noun, path, template
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write the path as "name" for the root interface or "component/name"; fleet.template_capabilities lists what the template has.';
    END IF;
    IF cap.capability <> wanted THEN
        IF wanted = 'writable_property' AND cap.capability = 'property' THEN
            RAISE EXCEPTION 'property "%" of template "%" is not writable', path, template
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A property job sets writable properties; this one is reported by the device only.';
        ELSIF wanted = 'cloud_property' THEN
            RAISE EXCEPTION '"%" of template "%" is not a cloud property', path, template
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use a cloud property (declared with "@type": "Cloud"), or a property job for device properties.';
        END IF;
        RAISE EXCEPTION '"%" of template "%" is a %, not a %', path, template, replace(cap.capability, '_', ' '), noun
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN cap;
END;
$$;

-- Validates a job body and returns it as a fleet.jobs row (not stored).
-- Every refusal names the value and says what to do.
CREATE FUNCTION fleet.job_from_definition(definition jsonb)
RETURNS fleet.jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job        fleet.jobs;
    entry      jsonb;
    types      text[];
    capability fleet.template_capabilities;
    problem    text;
    grp        fleet.device_groups;
    n          int := 0;
    label      text;                -- how messages name the job
BEGIN
    IF jsonb_typeof(definition) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a job definition must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', coalesce(jsonb_typeof(definition), 'NULL')),
                  HINT = 'Pass IoT Central''s job body: {"displayName": ..., "group": ..., "data": [...]}.';
    END IF;

    job.id := coalesce(definition ->> 'id', 'job-' || replace(gen_random_uuid()::text, '-', ''));
    label := CASE WHEN definition ? 'id' THEN format('job "%s"', job.id) ELSE 'the job' END;
    IF jsonb_typeof(definition -> 'id') NOT IN ('string') THEN
        RAISE EXCEPTION 'job id % is not a string', definition -> 'id'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF job.id !~ '^[A-Za-z0-9_-]+$' OR length(job.id) > 255 THEN
        RAISE EXCEPTION 'invalid job id "%"', job.id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 255 letters, digits, "-" or "_", or leave "id" out to get one.';
    END IF;
    IF EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = job.id) THEN
        RAISE EXCEPTION 'job "%" already exists', job.id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose another id, or leave "id" out to get one.';
    END IF;

    IF jsonb_typeof(definition -> 'displayName') IS DISTINCT FROM 'string' OR btrim(definition ->> 'displayName') = '' THEN
        RAISE EXCEPTION '% needs a "displayName"', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    job.display_name := definition ->> 'displayName';
    IF definition ? 'description' AND jsonb_typeof(definition -> 'description') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION '"description" of % must be a string', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    job.description := definition ->> 'description';

    IF jsonb_typeof(definition -> 'group') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION '% needs a "group": the id of a device group', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    grp := fleet.require_device_group(definition ->> 'group');
    job.group_id := grp.id;

    -- IoT Central takes the organization as a one-element array
    IF definition ? 'organizations' THEN
        IF jsonb_typeof(definition -> 'organizations') <> 'array' OR jsonb_array_length(definition -> 'organizations') <> 1
           OR jsonb_typeof(definition -> 'organizations' -> 0) <> 'string' THEN
            RAISE EXCEPTION '"organizations" of % must be an array of one organization id', label
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('It is %s.', definition -> 'organizations');
        END IF;
        job.organization_id := fleet.require_organization(definition -> 'organizations' ->> 0);
        IF NOT EXISTS (SELECT 1 FROM fleet.organizations o
                        WHERE o.id = grp.organization_id AND o.path @> ARRAY[job.organization_id]) THEN
            RAISE EXCEPTION 'device group "%" is not in organization "%"', grp.id, job.organization_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Choose a group of that organization or one below it.';
        END IF;
    ELSE
        job.organization_id := grp.organization_id;
    END IF;
    PERFORM fleet.require_app_role(job.organization_id, 'operator', 'creating a job');

    -- delivery options
    IF definition ? 'batch' THEN
        entry := definition -> 'batch';
        IF jsonb_typeof(entry) <> 'object' OR entry ->> 'type' NOT IN ('number', 'percentage')
           OR jsonb_typeof(entry -> 'value') <> 'number' OR (entry ->> 'value') !~ '^[0-9]+$' THEN
            RAISE EXCEPTION 'invalid "batch" % in %', entry, label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"type": "number", "value": 100} or {"type": "percentage", "value": 10}.';
        END IF;
        job.batch_type := entry ->> 'type';
        job.batch_value := (entry ->> 'value')::int;
        IF job.batch_type = 'percentage' AND job.batch_value NOT BETWEEN 1 AND 100 THEN
            RAISE EXCEPTION 'batch percentage % of % is outside 1 to 100', job.batch_value, label
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF job.batch_type = 'number' AND job.batch_value < 1 THEN
            RAISE EXCEPTION 'batch size % of % is below 1', job.batch_value, label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF definition ? 'cancellationThreshold' THEN
        entry := definition -> 'cancellationThreshold';
        IF jsonb_typeof(entry) <> 'object' OR entry ->> 'type' NOT IN ('number', 'percentage')
           OR jsonb_typeof(entry -> 'value') <> 'number' OR (entry ->> 'value') !~ '^[0-9]+$'
           OR (entry ? 'batch' AND jsonb_typeof(entry -> 'batch') <> 'boolean') THEN
            RAISE EXCEPTION 'invalid "cancellationThreshold" % in %', entry, label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"type": "number" or "percentage", "value": 10, "batch": false}.';
        END IF;
        job.threshold_type := entry ->> 'type';
        job.threshold_value := (entry ->> 'value')::int;
        job.threshold_per_batch := coalesce((entry ->> 'batch')::boolean, false);
        IF job.threshold_type = 'percentage' AND job.threshold_value NOT BETWEEN 1 AND 100 THEN
            RAISE EXCEPTION 'cancellation threshold percentage % of % is outside 1 to 100', job.threshold_value, label
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF job.threshold_type = 'number' AND job.threshold_value < 1 THEN
            RAISE EXCEPTION 'cancellation threshold % of % is below 1', job.threshold_value, label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    -- what the job does: all entries of one type
    IF jsonb_typeof(definition -> 'data') IS DISTINCT FROM 'array' OR jsonb_array_length(definition -> 'data') = 0 THEN
        RAISE EXCEPTION '% needs "data": a non-empty array of what to do', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example "data": [{"type": "property", "target": "dtmi:...;1", "path": "targetTemperature", "value": 21}].';
    END IF;
    types := ARRAY(SELECT DISTINCT e ->> 'type' FROM jsonb_array_elements(definition -> 'data') e);
    IF array_length(types, 1) > 1 THEN
        RAISE EXCEPTION '% mixes data types %', label, array_to_string(types, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'All entries of "data" share one type; create one job per type.';
    END IF;
    job.job_type := types[1];
    IF job.job_type IS NULL OR job.job_type NOT IN ('property', 'cloudProperty', 'command',
                                                    'deviceTemplateMigration', 'deviceManifestMigration') THEN
        RAISE EXCEPTION 'unknown job data type % in %', coalesce(quote_literal(job.job_type), '(missing)'), label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "property", "cloudProperty", "command", "deviceTemplateMigration" or "deviceManifestMigration".';
    END IF;
    IF job.job_type IN ('command', 'deviceTemplateMigration', 'deviceManifestMigration')
       AND jsonb_array_length(definition -> 'data') > 1 THEN
        RAISE EXCEPTION 'a % job has exactly one data entry; % has %', job.job_type, label,
                        jsonb_array_length(definition -> 'data')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    FOR entry IN SELECT e FROM jsonb_array_elements(definition -> 'data') e LOOP
        n := n + 1;
        CASE job.job_type
        WHEN 'property', 'cloudProperty', 'command' THEN
            IF jsonb_typeof(entry -> 'target') IS DISTINCT FROM 'string' OR jsonb_typeof(entry -> 'path') IS DISTINCT FROM 'string' THEN
                RAISE EXCEPTION 'data entry % of % needs "target" (a template id) and "path"', n, label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            PERFORM fleet.require_template(entry ->> 'target');
            capability := fleet.job_capability(entry ->> 'target', entry ->> 'path',
                CASE job.job_type WHEN 'property' THEN 'writable_property'
                                  WHEN 'cloudProperty' THEN 'cloud_property' ELSE 'command' END);
            IF job.job_type = 'command' THEN
                IF capability.request IS NOT NULL THEN
                    problem := fleet.schema_value_problem(entry -> 'value', capability.request -> 'schema', NULL, NULL,
                                                          format('the request of command "%s"', entry ->> 'path'));
                ELSIF entry ? 'value' AND jsonb_typeof(entry -> 'value') <> 'null' THEN
                    problem := format('command "%s" takes no request payload', entry ->> 'path');
                END IF;
            ELSE
                problem := fleet.schema_value_problem(entry -> 'value', capability.schema,
                                                      capability.min_value, capability.max_value,
                                                      format('the value of "%s"', entry ->> 'path'));
            END IF;
            IF problem IS NOT NULL THEN
                RAISE EXCEPTION '%: %', label, problem
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = format('The schema of "%s" in template "%s" is %s.', entry ->> 'path', entry ->> 'target',
                                        coalesce(capability.request -> 'schema', capability.schema));
            END IF;
        WHEN 'deviceTemplateMigration' THEN
            IF jsonb_typeof(entry -> 'template') IS DISTINCT FROM 'string' THEN
                RAISE EXCEPTION '% needs "template": the device template to assign', label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            PERFORM fleet.require_template(entry ->> 'template');
        WHEN 'deviceManifestMigration' THEN
            IF jsonb_typeof(entry -> 'manifest') IS DISTINCT FROM 'string' THEN
                RAISE EXCEPTION '% needs "manifest": the edge manifest to assign', label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF NOT EXISTS (SELECT 1 FROM fleet.edge_manifests m WHERE m.id = entry ->> 'manifest') THEN
                RAISE EXCEPTION 'edge manifest "%" does not exist', entry ->> 'manifest'
                    USING ERRCODE = 'undefined_object',
                          HINT = 'Create it with fleet.create_edge_manifest(), or see fleet.edge_manifests.';
            END IF;
        END CASE;
    END LOOP;
    -- one value per property
    IF job.job_type IN ('property', 'cloudProperty')
       AND (SELECT count(DISTINCT e ->> 'path') FROM jsonb_array_elements(definition -> 'data') e) < n THEN
        RAISE EXCEPTION '% sets the same property twice', label
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    job.data := definition -> 'data';
    job.definition := jsonb_set(definition, '{id}', to_jsonb(job.id));
    job.threshold_per_batch := coalesce(job.threshold_per_batch, false);
    job.created_by := current_user;
    job.created_at := now();
    RETURN job;
END;
$$;

-- The job as IoT Central's REST API shows it.
CREATE FUNCTION fleet.get_job(id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job      fleet.jobs;
    progress jsonb;
BEGIN
    SELECT j.* INTO job FROM fleet.jobs j WHERE j.id = get_job.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'See the jobs of the last 30 days in fleet.recent_jobs.';
    END IF;
    SELECT jsonb_build_object(
               'total', count(*),
               'pending', count(*) FILTER (WHERE jd.status = 'pending'),
               'completed', count(*) FILTER (WHERE jd.status = 'completed'),
               'failed', count(*) FILTER (WHERE jd.status = 'failed'))
      INTO progress
      FROM fleet.job_devices jd WHERE jd.job_id = job.id;
    RETURN job.definition || jsonb_strip_nulls(jsonb_build_object(
        'id', job.id,
        'organizations', jsonb_build_array(job.organization_id),
        'status', job.status,
        'start', job.started_at,
        'end', job.finished_at,
        'progress', progress,
        'scheduledJobId', job.scheduled_job_id,
        'rerunOf', job.rerun_of,
        'error', job.error));
END;
$$;
COMMENT ON FUNCTION fleet.get_job(text) IS 'The job as IoT Central''s job JSON, with status, start, end, progress {total, pending, completed, failed} and scheduledJobId';

CREATE FUNCTION fleet.save_job(definition jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs := fleet.job_from_definition(definition);
BEGIN
    job.status := 'saved';
    INSERT INTO fleet.jobs SELECT job.*;
    RETURN fleet.get_job(job.id);
END;
$$;
COMMENT ON FUNCTION fleet.save_job(jsonb) IS 'Validates and saves a job without running it; fleet.run_job() starts it later';

CREATE FUNCTION fleet.create_job(definition jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs := fleet.job_from_definition(definition);
BEGIN
    job.status := 'pending';
    job.queued_at := clock_timestamp();
    INSERT INTO fleet.jobs SELECT job.*;
    PERFORM fleet.wake_engine();
    RETURN fleet.get_job(job.id);
END;
$$;
COMMENT ON FUNCTION fleet.create_job(jsonb) IS 'Validates a job (IoT Central''s job JSON) and queues it to run now';

-- Locks a job for a state change and refuses unless it is in one of the
-- given states.
CREATE FUNCTION fleet.lock_job(id text, allowed text[], action text)
RETURNS fleet.jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job fleet.jobs;
BEGIN
    -- a viewer sees the job but may not lock it: tell it why
    SELECT j.* INTO job FROM fleet.jobs j WHERE j.id = lock_job.id;
    IF FOUND THEN
        PERFORM fleet.require_app_role(job.organization_id, 'operator', format('%s a job', action || 'ing'));
    END IF;
    -- NO KEY UPDATE: conflicts with the engine's step, not with foreign keys
    SELECT j.* INTO job FROM fleet.jobs j WHERE j.id = lock_job.id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    IF job.status <> ALL (allowed) THEN
        RAISE EXCEPTION 'cannot % job "%": it is %', action, id, job.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Only %s jobs can be %s.', array_to_string(allowed, ' or '),
                                CASE action WHEN 'stop' THEN 'stopped' WHEN 'run' THEN 'run' ELSE action || 'd' END);
    END IF;
    RETURN job;
END;
$$;

CREATE FUNCTION fleet.run_job(id text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet.lock_job(id, '{saved}', 'run');
    UPDATE fleet.jobs j SET status = 'pending', queued_at = clock_timestamp() WHERE j.id = run_job.id;
    PERFORM fleet.wake_engine();
    RETURN fleet.get_job(id);
END;
$$;
COMMENT ON FUNCTION fleet.run_job(text) IS 'Queues a saved job to run';

-- Stop: dispatch halts at once; commands not yet claimed by a gateway are
-- withdrawn (gateways claim only from running jobs) and their devices stay
-- pending.  Claimed ones may still be answered.
CREATE FUNCTION fleet.stop_job(id text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet.lock_job(id, '{pending,running}', 'stop');
    UPDATE fleet.jobs j SET status = 'stopped' WHERE j.id = stop_job.id;
    PERFORM fleet.wake_engine();
    RETURN fleet.get_job(id);
END;
$$;
COMMENT ON FUNCTION fleet.stop_job(text) IS 'Stops a pending or running job; fleet.resume_job() continues it with its pending devices';

-- Resume: the job queues again (the running-jobs limit applies) and goes on
-- with its pending devices; withdrawn commands are offered again when it
-- starts (fleet.engine_start_job).
CREATE FUNCTION fleet.resume_job(id text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet.lock_job(id, '{stopped}', 'resume');
    UPDATE fleet.jobs j SET status = 'pending', queued_at = clock_timestamp() WHERE j.id = resume_job.id;
    PERFORM fleet.wake_engine();
    RETURN fleet.get_job(id);
END;
$$;
COMMENT ON FUNCTION fleet.resume_job(text) IS 'Continues a stopped job with its pending devices';

-- A free id: base, else base-2, base-3, ...
CREATE FUNCTION fleet.free_job_id(base text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT candidate
      FROM (SELECT left(base, 240) || CASE WHEN n = 1 THEN '' ELSE '-' || n END AS candidate, n
              FROM generate_series(1, 1000) n) c
     WHERE NOT EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = c.candidate)
     ORDER BY n
     LIMIT 1
$$;

CREATE FUNCTION fleet.copy_job(id text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    source fleet.jobs;
    copy_id text;
BEGIN
    SELECT j.* INTO source FROM fleet.jobs j WHERE j.id = copy_job.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    copy_id := fleet.free_job_id(source.id || '-copy');
    RETURN fleet.save_job(source.definition
                          || jsonb_build_object('id', copy_id, 'displayName', source.display_name || ' Copy'));
END;
$$;
COMMENT ON FUNCTION fleet.copy_job(text) IS 'Saves a copy of a job named "<name> Copy", to edit and run';

-- A new job over exactly the failed devices of a finished job.
CREATE FUNCTION fleet.rerun_job(id text, rerun_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    source fleet.jobs;
    job    fleet.jobs;
BEGIN
    SELECT j.* INTO source FROM fleet.jobs j WHERE j.id = rerun_job.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', id
            USING ERRCODE = 'undefined_object';
    END IF;
    IF source.status NOT IN ('completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'cannot rerun job "%": it is %', id, source.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Rerun a job once it has completed, failed or been cancelled.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM fleet.job_devices jd WHERE jd.job_id = source.id AND jd.status = 'failed') THEN
        RAISE EXCEPTION 'job "%" has no failed devices to rerun', id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    job := fleet.job_from_definition(source.definition
             || jsonb_build_object('id', coalesce(rerun_id, fleet.free_job_id(source.id || '-rerun')),
                                   'displayName', source.display_name || ' Rerun'));
    job.rerun_of := source.id;
    job.status := 'pending';
    job.queued_at := clock_timestamp();
    INSERT INTO fleet.jobs SELECT job.*;
    PERFORM fleet.wake_engine();
    RETURN fleet.get_job(job.id);
END;
$$;
COMMENT ON FUNCTION fleet.rerun_job(text, text) IS 'Queues a new job that retries a finished job on exactly its failed devices';

CREATE VIEW fleet.recent_jobs WITH (security_invoker = true) AS
    SELECT j.id, j.display_name, j.job_type, j.status, j.group_id, j.organization_id,
           coalesce(p.total, 0) AS total, coalesce(p.pending, 0) AS pending,
           coalesce(p.completed, 0) AS completed, coalesce(p.failed, 0) AS failed,
           j.scheduled_job_id, j.rerun_of, j.created_by, j.created_at, j.started_at, j.finished_at
      FROM fleet.jobs j
      LEFT JOIN LATERAL (SELECT count(*) AS total,
                                count(*) FILTER (WHERE jd.status = 'pending') AS pending,
                                count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                                count(*) FILTER (WHERE jd.status = 'failed') AS failed
                           FROM fleet.job_devices jd WHERE jd.job_id = j.id) p ON true
     WHERE j.created_at > pg_catalog.now() - interval '30 days';
COMMENT ON VIEW fleet.recent_jobs IS 'Jobs of the last 30 days, newest first when ordered by created_at, with their progress';

-- Which device properties appear as extra columns of the device list, for
-- the current role.
CREATE FUNCTION fleet.set_job_device_list_columns(columns text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    path text;
BEGIN
    FOREACH path IN ARRAY coalesce(columns, '{}') LOOP
        BEGIN
            PERFORM path::jsonpath;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'column "%" is not a jsonpath', path
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Name columns as paths into the device document, for example ''$.reported.firmware'' or ''$.properties.targetTemperature''.';
        END;
    END LOOP;
    DELETE FROM fleet.job_device_list_columns c WHERE c.role_name = current_user;
    INSERT INTO fleet.job_device_list_columns (role_name, position, path)
    SELECT current_user, n, p FROM unnest(columns) WITH ORDINALITY AS u(p, n);
END;
$$;
COMMENT ON FUNCTION fleet.set_job_device_list_columns(text[]) IS 'Chooses the extra columns (jsonpath over fleet.device_document) of fleet.job_device_list for the current role';

CREATE FUNCTION fleet.require_job(job_id text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = job_id) THEN
        RAISE EXCEPTION 'job "%" does not exist', job_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'See the jobs of the last 30 days in fleet.recent_jobs.';
    END IF;
END;
$$;

CREATE FUNCTION fleet.job_device_list(job_id text, device_filter text DEFAULT NULL, status_filter text DEFAULT NULL)
RETURNS TABLE (device_id text, device_name text, batch int, status text, error text,
               started_at timestamptz, finished_at timestamptz, columns jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    paths text[] := ARRAY(SELECT c.path FROM fleet.job_device_list_columns c
                           WHERE c.role_name = current_user ORDER BY c.position);
BEGIN
    PERFORM fleet.require_job(job_id);
    IF status_filter IS NOT NULL AND status_filter NOT IN ('pending', 'completed', 'failed') THEN
        RAISE EXCEPTION 'unknown device status "%"', status_filter
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Filter on ''pending'', ''completed'' or ''failed''.';
    END IF;
    RETURN QUERY
    SELECT jd.device_id, coalesce(d.display_name, 'deleted'), jd.batch, jd.status, jd.error,
           jd.started_at, jd.finished_at,
           CASE WHEN cardinality(paths) = 0 OR d.id IS NULL THEN NULL
                ELSE (SELECT jsonb_object_agg(p, jsonb_path_query_first(fleet.device_document(d), p::jsonpath,
                                                                         silent => true))
                        FROM unnest(paths) p) END
      FROM fleet.job_devices jd
      LEFT JOIN fleet.devices d ON d.id = jd.device_id
     WHERE jd.job_id = job_device_list.job_id
       AND (device_filter IS NULL OR strpos(lower(jd.device_id), lower(device_filter)) > 0)
       AND (status_filter IS NULL OR jd.status = status_filter)
     ORDER BY jd.batch, jd.device_id;
END;
$$;
COMMENT ON FUNCTION fleet.job_device_list(text, text, text) IS 'A job''s devices, filtered by device id (substring) and status, with the role''s extra columns';

-- The results log, for COPY ... TO: one row per device.
CREATE FUNCTION fleet.job_results(job_id text, spreadsheet_safe boolean DEFAULT false)
RETURNS TABLE (job text, device_id text, device_name text, batch int, status text, error text,
               started_at timestamptz, finished_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet.require_job(job_results.job_id);
    -- (the cells are neutralised only when asked: a call per cell costs)
    RETURN QUERY
    SELECT CASE WHEN spreadsheet_safe THEN fleet.spreadsheet_cell(jd.job_id, true) ELSE jd.job_id END,
           CASE WHEN spreadsheet_safe THEN fleet.spreadsheet_cell(jd.device_id, true) ELSE jd.device_id END,
           CASE WHEN spreadsheet_safe THEN fleet.spreadsheet_cell(coalesce(d.display_name, 'deleted'), true)
                ELSE coalesce(d.display_name, 'deleted') END,
           jd.batch, jd.status,
           CASE WHEN spreadsheet_safe THEN fleet.spreadsheet_cell(jd.error, true) ELSE jd.error END,
           jd.started_at, jd.finished_at
      FROM fleet.job_devices jd
      LEFT JOIN fleet.devices d ON d.id = jd.device_id
     WHERE jd.job_id = job_results.job_id
     ORDER BY jd.batch, jd.device_id;
END;
$$;
COMMENT ON FUNCTION fleet.job_results(text, boolean) IS 'The results log of a job: device, name ("deleted" for deleted devices), batch, status, error, times';

-- Waits until the job is in one of the given states, or the timeout
-- passes; returns the status it ended in.  For scripts and tests.
CREATE FUNCTION fleet.wait_for_job(id text, statuses text[] DEFAULT '{completed,failed,cancelled}',
                                   timeout interval DEFAULT '60 seconds')
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    give_up timestamptz := clock_timestamp() + timeout;
    current text;
BEGIN
    PERFORM fleet.require_job(id);
    LOOP
        SELECT j.status INTO current FROM fleet.jobs j WHERE j.id = wait_for_job.id;
        EXIT WHEN current = ANY (statuses) OR clock_timestamp() > give_up;
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN current;
END;
$$;
COMMENT ON FUNCTION fleet.wait_for_job(text, text[], interval) IS 'Waits until a job reaches one of the statuses (default: finished) or the timeout passes; returns its status';
-- Commands reach devices through gateways: programs that claim deliveries
-- with fleet.claim_commands() and report with fleet.complete_command()
-- (tools/fleet-sim.c is one).
--
-- A command job's deliveries are its fleet.job_devices rows: the fan-out
-- gives each a delivery id, in device order.  The engine offers them a
-- window at a time (fleet.command_windows: a range of delivery ids, at most
-- fleet.command_window outstanding); a gateway claims from the open windows
-- of running jobs (SKIP LOCKED: never two gateways the same row) and answers
-- on the same row.  So a device costs the fan-out's insert, a claim and an
-- answer, as a plain claim-then-acknowledge queue would; a separate delivery
-- table cost two more writes per device, under four more indexes.
--
-- A delivery ends completed, failed, or timed out: claimed and not answered
-- by its deadline (fleet.command_timeout after the claim), or not claimed
-- within fleet.command_timeout of its window opening while the job ran.  A
-- stopped job's unclaimed commands are withdrawn: gateways claim only from
-- running jobs, and a resume gives them a fresh deadline.

-- The job's number, times 2^32, is the base of its delivery ids: ids are
-- unique and contiguous per job without a sequence call per device.
CREATE SEQUENCE fleet.delivery_blocks;

CREATE TABLE fleet.command_windows (
    job_id         text NOT NULL REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    batch          int NOT NULL,
    first_delivery bigint NOT NULL,
    last_delivery  bigint NOT NULL,
    opened_at      timestamptz NOT NULL,
    deadline       timestamptz NOT NULL,       -- unclaimed commands time out then (a resume moves it)
    next_check     timestamptz,                -- earliest time one of its commands can time out
    PRIMARY KEY (job_id, first_delivery)
);
COMMENT ON TABLE fleet.command_windows IS 'Ranges of a command job''s deliveries offered to gateways; a window goes once every device in it has its outcome';

-- Every delivery made, as gateways and the engine see them: queued (offered
-- in a window, not claimed yet), withdrawn (the same, its job not running),
-- claimed, completed, failed or timed_out.  Devices a command could not
-- reach have no delivery (the job's device list says why).
CREATE VIEW fleet.command_deliveries WITH (security_invoker = true) AS
SELECT jd.delivery_id, jd.job_id, jd.device_id,
       j.data -> 0 ->> 'path' AS command,
       j.data -> 0 -> 'value' AS request,
       CASE WHEN jd.status = 'completed' THEN 'completed'
            WHEN jd.status = 'failed' AND jd.error = 'timed out' THEN 'timed_out'
            WHEN jd.status = 'failed' THEN 'failed'
            WHEN jd.gateway IS NOT NULL THEN 'claimed'
            WHEN j.status = 'running' THEN 'queued'
            ELSE 'withdrawn' END AS status,
       jd.gateway,
       coalesce(jd.deadline, w.deadline) AS deadline,
       jd.started_at AS claimed_at,
       jd.finished_at AS completed_at,
       jd.response_status, jd.response
  FROM fleet.job_devices jd
  JOIN fleet.jobs j ON j.id = jd.job_id
  JOIN fleet.job_batches b ON b.job_id = jd.job_id AND b.batch = jd.batch
  LEFT JOIN fleet.command_windows w
         ON w.job_id = jd.job_id AND jd.delivery_id BETWEEN w.first_delivery AND w.last_delivery
 WHERE jd.delivery_id IS NOT NULL
   -- offered: the engine's cursor has passed it
   AND (jd.gateway IS NOT NULL OR jd.status <> 'pending' OR jd.device_id <= b.cursor);
COMMENT ON VIEW fleet.command_deliveries IS 'Command deliveries: one per device of a command job once it is offered to gateways, with its status, gateway, deadline and answer';
COMMENT ON COLUMN fleet.command_deliveries.delivery_id IS 'The id a gateway claims and answers by: the job''s number * 2^32 + the device''s position';
COMMENT ON COLUMN fleet.command_deliveries.job_id IS 'The command job';
COMMENT ON COLUMN fleet.command_deliveries.device_id IS 'The device the command is for';
COMMENT ON COLUMN fleet.command_deliveries.command IS 'The command, "name" or "component/name"';
COMMENT ON COLUMN fleet.command_deliveries.request IS 'The command''s request payload';
COMMENT ON COLUMN fleet.command_deliveries.status IS 'queued, withdrawn (its job is not running), claimed, completed, failed or timed_out';
COMMENT ON COLUMN fleet.command_deliveries.gateway IS 'The gateway that claimed it; simulator when the engine answered for a simulated device';
COMMENT ON COLUMN fleet.command_deliveries.deadline IS 'When it times out: its claim''s deadline, or, unclaimed, its window''s';
COMMENT ON COLUMN fleet.command_deliveries.claimed_at IS 'When a gateway claimed it';
COMMENT ON COLUMN fleet.command_deliveries.completed_at IS 'When it was answered or timed out';
COMMENT ON COLUMN fleet.command_deliveries.response_status IS 'The device''s answer, HTTP-style: 2xx completed the device';
COMMENT ON COLUMN fleet.command_deliveries.response IS 'The device''s response payload';

-- Gateways claim and answer through these two functions only (members
-- cannot write job_devices): a row's gateway and deadline decide when the
-- engine may close a window or finish a job, so a member writing them could
-- hold a job, and a slot of fleet.max_running_jobs, for ever.
-- SECURITY DEFINER, so they check the caller's organizations themselves:
-- commands of jobs where the calling role is an operator.  (Under the
-- caller's row-level security, the policies' subplans also made the
-- planner scan all of job_devices for each claim.)
CREATE FUNCTION fleet.claim_commands(gateway text, max_count int DEFAULT 100)
RETURNS TABLE (delivery_id bigint, job_id text, device_id text, command text, request jsonb, deadline timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claim_time     timestamptz := clock_timestamp();
    claim_deadline timestamptz := claim_time + current_setting('fleet.command_timeout')::interval;
    caller         name := fleet.calling_role();
    everywhere     boolean := fleet.role_sees_everything(caller);
    operated       text[];
BEGIN
    IF NOT everywhere THEN
        operated := ARRAY(SELECT fleet.organizations_for('operator', caller));
    END IF;
    IF gateway IS NULL OR btrim(gateway) = '' THEN
        RAISE EXCEPTION 'a gateway must name itself when it claims commands'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF gateway = 'simulator' THEN
        RAISE EXCEPTION 'gateway name "simulator" is reserved for the engine''s simulated devices'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the gateway after its host or its role.';
    END IF;
    IF max_count IS NULL OR max_count < 1 THEN
        RAISE EXCEPTION 'max_count must be at least 1, not %', coalesce(max_count::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The open windows, earliest deadline first (a small job's window is not
    -- starved by a big one's refills), each read through the unclaimed
    -- queue; rows are locked as the outer LIMIT takes them, so none is
    -- locked and left.  MATERIALIZED: the locked rows are picked once.
    RETURN QUERY
    WITH picked AS MATERIALIZED (
        SELECT u.delivery_id, w.command, w.request
          FROM (SELECT ow.first_delivery, ow.last_delivery,
                       rj.data -> 0 ->> 'path' AS command, rj.data -> 0 -> 'value' AS request
                  FROM fleet.command_windows ow JOIN fleet.jobs rj ON rj.id = ow.job_id
                 WHERE rj.status = 'running' AND (everywhere OR rj.organization_id = ANY (operated))
                 ORDER BY ow.deadline, ow.first_delivery) w
         CROSS JOIN LATERAL (
                SELECT q.delivery_id FROM fleet.job_devices q
                 WHERE q.delivery_id IS NOT NULL AND q.gateway IS NULL
                   AND q.delivery_id >= w.first_delivery AND q.delivery_id <= w.last_delivery
                   AND q.status = 'pending'
                 ORDER BY q.delivery_id
                 LIMIT max_count
                   FOR UPDATE OF q SKIP LOCKED) u
         LIMIT max_count
    )
    UPDATE fleet.job_devices d
       SET gateway = claim_commands.gateway, started_at = claim_time, deadline = claim_deadline
      FROM picked p
     WHERE d.delivery_id = p.delivery_id AND d.delivery_id IS NOT NULL
    RETURNING d.delivery_id, d.job_id, d.device_id, p.command, p.request, d.deadline;
END;
$$;
COMMENT ON FUNCTION fleet.claim_commands(text, int) IS 'Claims up to max_count queued command deliveries for a gateway; concurrent gateways never get the same one';

-- A gateway's answers, many at once: 2xx completes the device, anything
-- else fails it with the response as the error.  An answer for a delivery
-- that is no longer claimed (timed out, already answered, never claimed)
-- changes nothing.  Returns how many answers were taken.
-- SECURITY DEFINER: see fleet.claim_commands().
CREATE FUNCTION fleet.complete_commands(delivery_ids bigint[], statuses int[], responses jsonb[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the arrays are the plan's input: plan with them
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    taken      bigint;
    caller     name := fleet.calling_role();
    everywhere boolean := fleet.role_sees_everything(caller);
    operated   text[];
    answered   timestamptz := clock_timestamp();
BEGIN
    IF NOT everywhere THEN
        operated := ARRAY(SELECT fleet.organizations_for('operator', caller));
    END IF;
    IF cardinality(delivery_ids) IS DISTINCT FROM cardinality(statuses)
       OR (responses IS NOT NULL AND cardinality(responses) <> cardinality(delivery_ids)) THEN
        RAISE EXCEPTION 'delivery_ids, statuses and responses must be arrays of the same length'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('They have %s, %s and %s elements.', coalesce(cardinality(delivery_ids)::text, 'NULL'),
                                  coalesce(cardinality(statuses)::text, 'NULL'), coalesce(cardinality(responses)::text, 'no'));
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(statuses) s WHERE s IS NULL OR s NOT BETWEEN 100 AND 599) THEN
        RAISE EXCEPTION 'command status % is not an HTTP-style status code',
                        (SELECT coalesce(s::text, 'NULL') FROM unnest(statuses) s WHERE s IS NULL OR s NOT BETWEEN 100 AND 599 LIMIT 1)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Report 200 for success, or 4xx/5xx for failure, as IoT Hub direct methods do.';
    END IF;

    -- One statement, on the rows the claim made (a HOT update: no index
    -- covers what it changes).  No counter here: one that every answer
    -- touched would serialize the gateways; the engine counts.  Nor a
    -- wake-up: the engine looks every 50 ms while command jobs run (a step
    -- per answer batch kept a core busy).
    UPDATE fleet.job_devices d
       SET status = CASE WHEN a.status BETWEEN 200 AND 299 THEN 'completed' ELSE 'failed' END,
           error = CASE WHEN a.status NOT BETWEEN 200 AND 299
                        THEN format('command failed with status %s%s', a.status, coalesce(': ' || a.response::text, '')) END,
           response_status = a.status, response = a.response, finished_at = answered
      FROM unnest(delivery_ids, statuses, coalesce(responses, array_fill(NULL::jsonb, ARRAY[cardinality(delivery_ids)])))
           AS a(delivery_id, status, response)
     WHERE d.delivery_id = a.delivery_id AND d.delivery_id IS NOT NULL
       AND d.gateway IS NOT NULL AND d.status = 'pending'
       AND (everywhere OR d.job_id IN (SELECT j.id FROM fleet.jobs j WHERE j.organization_id = ANY (operated)));
    GET DIAGNOSTICS taken = ROW_COUNT;
    RETURN taken;
END;
$$;
COMMENT ON FUNCTION fleet.complete_commands(bigint[], int[], jsonb[]) IS 'Reports many answers at once; returns how many were taken (the others were no longer open)';

-- One answer: fleet.complete_commands() with one element.
CREATE FUNCTION fleet.complete_command(delivery_id bigint, status int, response jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet.complete_commands(ARRAY[delivery_id], ARRAY[status], ARRAY[response]) = 1
$$;
COMMENT ON FUNCTION fleet.complete_command(bigint, int, jsonb) IS 'Reports a device''s answer to a claimed command; false when the delivery is no longer open';

-- Fails every command past its deadline as "timed out".  The engine calls
-- it every step; it is safe to call at any time.  Only windows whose
-- next_check has come are read, so a step with nothing overdue costs a
-- look at a few window rows.
--
-- A window of a job that is not running (stopped, or finished) is looked
-- at again every fleet.command_timeout: a claim that read the job as
-- running just before it stopped commits after that, and its command must
-- still time out.  A finished job's window goes once nothing in it is
-- claimed and the job finished a timeout ago (no claim takes that long).
CREATE FUNCTION fleet.expire_commands()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    timeout   interval := current_setting('fleet.command_timeout')::interval;
    expired   bigint := 0;
    n_expired bigint;
    w         record;
    still_out record;
BEGIN
    -- one statement per due window (a handful: windows are few, and due
    -- only when something in them is overdue)
    FOR w IN
        SELECT cw.job_id, cw.first_delivery, cw.last_delivery, cw.deadline, j.status = 'running' AS running,
               j.status IN ('completed', 'failed', 'cancelled') AND j.finished_at < now() - timeout AS long_finished
          FROM fleet.command_windows cw JOIN fleet.jobs j ON j.id = cw.job_id
         WHERE cw.next_check <= now()
           FOR NO KEY UPDATE OF cw
    LOOP
        -- now(): the step's start, so one step draws one line.  A claimed
        -- command without a deadline (none of ours) is overdue.  SKIP
        -- LOCKED: a row a gateway holds (a claim or an answer not yet
        -- committed) waits for the next look, not the engine for it.
        WITH overdue AS (
            SELECT jd.delivery_id FROM fleet.job_devices jd
             WHERE jd.delivery_id IS NOT NULL
               AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
               AND jd.status = 'pending'
               AND CASE WHEN jd.gateway IS NOT NULL THEN coalesce(jd.deadline < now(), true)
                        ELSE w.running AND w.deadline < now() END
               FOR UPDATE SKIP LOCKED
        )
        UPDATE fleet.job_devices jd
           SET status = 'failed', error = 'timed out', finished_at = clock_timestamp()
          FROM overdue o
         WHERE jd.delivery_id = o.delivery_id AND jd.delivery_id IS NOT NULL;
        GET DIAGNOSTICS n_expired = ROW_COUNT;
        expired := expired + n_expired;

        -- what is still out: claimed (and when the first is due), unclaimed
        SELECT min(jd.deadline) FILTER (WHERE jd.gateway IS NOT NULL) AS first_due,
               count(*) FILTER (WHERE jd.gateway IS NOT NULL) AS n_claimed,
               count(*) FILTER (WHERE jd.gateway IS NULL) AS n_unclaimed
          INTO still_out
          FROM fleet.job_devices jd
         WHERE jd.delivery_id IS NOT NULL
           AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
           AND jd.status = 'pending';
        IF w.long_finished AND still_out.n_claimed = 0 THEN
            DELETE FROM fleet.command_windows cw
             WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        ELSE
            -- the window's next chance of a timeout: its claimed commands'
            -- deadlines; its unclaimed ones' while the job runs (a second
            -- from now if that has passed: some were held); else a look a
            -- timeout from now
            UPDATE fleet.command_windows cw
               SET next_check = least(still_out.first_due,
                                      CASE WHEN NOT w.running THEN now() + timeout
                                           WHEN still_out.n_unclaimed > 0
                                           THEN greatest(w.deadline, now() + interval '1 second') END)
             WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        END IF;
    END LOOP;
    RETURN expired;
END;
$$;
COMMENT ON FUNCTION fleet.expire_commands() IS 'Fails command deliveries past their deadline as timed out; returns how many';
-- The job engine's steps.  The background worker (src/worker.c) calls
-- fleet.engine_step() over and over, each call in a transaction of its own:
-- time out overdue commands, start queued jobs while fewer than
-- fleet.max_running_jobs run, and move one running job forward by one chunk
-- (round robin, so a small job never waits behind a big one).  Every state
-- change is committed with the chunk that made it: after a crash the engine
-- carries on from the rows, repeating nothing and skipping nothing.

-- Starts a queued job.  On its first start it resolves the group's members
-- (or, for a rerun, the source job's failed devices) and cuts them into
-- batches: contiguous ranges in device id order.
CREATE FUNCTION fleet.engine_start_job(job fleet.jobs)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
-- the engine's memory stays flat whatever the job's size: the fan-out's
-- sort and its list of assigned devices spill to disk (measured: no slower)
SET work_mem = '4MB'
AS $$
DECLARE
    total   bigint;
    grp     fleet.device_groups;
    refusal text;
    delivery_base bigint;                  -- command jobs: the first delivery id, less one
BEGIN
    SELECT g.* INTO grp FROM fleet.device_groups g WHERE g.id = job.group_id;
    -- the engine sees every organization: it keeps to the job's own.  A
    -- group (or a rerun's source job) that is not in it fails the job.
    IF job.started_at IS NULL THEN
        refusal := CASE
            WHEN job.rerun_of IS NULL
                 AND NOT EXISTS (SELECT 1 FROM fleet.organizations o
                                  WHERE o.id = grp.organization_id AND o.path @> ARRAY[job.organization_id])
            THEN format('device group "%s" is no longer in organization "%s"', job.group_id, job.organization_id)
            WHEN job.rerun_of IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM fleet.jobs s JOIN fleet.organizations o ON o.id = s.organization_id
                                  WHERE s.id = job.rerun_of AND o.path @> ARRAY[job.organization_id])
            THEN format('job "%s" is not in organization "%s"', job.rerun_of, job.organization_id)
        END;
        IF refusal IS NOT NULL THEN
            UPDATE fleet.jobs j SET status = 'failed', finished_at = clock_timestamp(), error = refusal
             WHERE j.id = job.id;
            RETURN;
        END IF;
    END IF;
    IF job.started_at IS NULL THEN
        IF job.job_type = 'command' THEN
            delivery_base := nextval('fleet.delivery_blocks') * 4294967296;
        END IF;
        -- one pass over the members: numbered in id order, counted for a
        -- percentage batch size, each row tagged with its batch
        WITH members AS (
            SELECT jd.device_id FROM fleet.job_devices jd
             WHERE job.rerun_of IS NOT NULL AND jd.job_id = job.rerun_of AND jd.status = 'failed'
            UNION ALL
            -- fleet.device_group_members, for one group whose template and
            -- filter are constants here: without a filter no device document
            -- is built (whole rows of a million devices cost 20 % of a fan-out)
            SELECT d.id FROM fleet.devices d
             WHERE job.rerun_of IS NULL
               AND d.organization_id IN (SELECT o.id FROM fleet.organizations o WHERE o.path @> ARRAY[grp.organization_id])
               AND (grp.template_id IS NULL OR d.template_id = grp.template_id)
               AND (grp.filter IS NULL OR jsonb_path_match(fleet.device_document(d), grp.filter, silent => true))
        ),
        numbered AS (
            SELECT m.device_id, row_number() OVER (ORDER BY m.device_id) AS n, count(*) OVER () AS total
              FROM members m
        ),
        assigned AS (
            -- a command job's rows are its deliveries, numbered in the
            -- job's block of ids (commands.sql)
            INSERT INTO fleet.job_devices (job_id, device_id, batch, delivery_id)
            SELECT job.id, x.device_id,
                   ((x.n - 1) / CASE job.batch_type
                                WHEN 'number' THEN job.batch_value::bigint
                                WHEN 'percentage' THEN greatest(1, ceil(x.total * job.batch_value / 100.0)::bigint)
                                ELSE x.total END + 1)::int,
                   delivery_base + x.n
              FROM numbered x
            RETURNING batch, device_id
        )
        INSERT INTO fleet.job_batches (job_id, batch, first_device, last_device, size)
        SELECT job.id, a.batch, min(a.device_id), max(a.device_id), count(*)
          FROM assigned a GROUP BY a.batch;

        SELECT coalesce(sum(b.size), 0) INTO total FROM fleet.job_batches b WHERE b.job_id = job.id;
        -- a big fan-out leaves the table's statistics describing another
        -- table; lookups into it (by gateways, by the engine) would be
        -- planned as scans
        IF total >= 10000 THEN
            ANALYZE fleet.job_devices;
        END IF;

        UPDATE fleet.jobs j
           SET started_at = clock_timestamp(), device_count = total,
               current_batch = CASE WHEN total > 0 THEN 1 END
         WHERE j.id = job.id;
    END IF;
    -- a resumed command job offers its withdrawn commands again, with a
    -- fresh deadline
    UPDATE fleet.command_windows w
       SET deadline = clock_timestamp() + current_setting('fleet.command_timeout')::interval,
           next_check = least(coalesce(w.next_check, 'infinity'),
                              clock_timestamp() + current_setting('fleet.command_timeout')::interval)
     WHERE w.job_id = job.id;
    IF FOUND THEN
        PERFORM pg_notify('fleet_commands', job.id);
    END IF;
    UPDATE fleet.jobs j SET status = 'running', last_step_at = NULL WHERE j.id = job.id;
END;
$$;

-- True when failures exceed the threshold: strictly more than allowed.
CREATE FUNCTION fleet.threshold_exceeded(kind text, allowed int, failures bigint, scope bigint)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE kind
           WHEN 'number' THEN failures > allowed
           WHEN 'percentage' THEN failures * 100 > allowed::bigint * scope
           ELSE false END
$$;

-- Stops a job's open work: batches not done are marked, and the job takes
-- its final status (so gateways claim nothing more from it; commands already
-- claimed may still be answered or time out, see fleet.expire_commands).
CREATE FUNCTION fleet.engine_finish_job(job fleet.jobs, final_status text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- windows with nothing claimed go now; the others once their claimed
    -- commands are answered or time out
    UPDATE fleet.command_windows w SET next_check = now() WHERE w.job_id = job.id;
    -- the batch under way gets its final counts (answers are counted when a
    -- batch ends, and this one ends here)
    UPDATE fleet.job_batches b
       SET status = 'cancelled', finished_at = clock_timestamp(),
           completed = c.completed, failed = c.failed
      FROM (SELECT jb.batch,
                   count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                   count(*) FILTER (WHERE jd.status = 'failed') AS failed
              FROM fleet.job_batches jb
              JOIN fleet.job_devices jd ON jd.job_id = jb.job_id
                   AND jd.device_id >= jb.first_device AND jd.device_id <= jb.last_device
             WHERE jb.job_id = job.id AND jb.status IN ('pending', 'running')
             GROUP BY jb.batch) c
     WHERE b.job_id = job.id AND b.batch = c.batch;
    UPDATE fleet.jobs j SET status = final_status, finished_at = clock_timestamp() WHERE j.id = job.id;
END;
$$;

-- The expression that tells why a device cannot take this job's change, or
-- NULL when it can ("d" is the device, NULL when it was deleted).
CREATE FUNCTION fleet.engine_device_problem(job fleet.jobs)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted     text := CASE job.job_type WHEN 'property' THEN 'writable_property'
                                         WHEN 'cloudProperty' THEN 'cloud_property'
                                         WHEN 'command' THEN 'command' END;
    paths      text;
    qualifying text[];
BEGIN
    IF job.job_type = 'deviceTemplateMigration' THEN
        RETURN $e$CASE WHEN d.id IS NULL THEN 'the device was deleted' END$e$;
    ELSIF job.job_type = 'deviceManifestMigration' THEN
        RETURN $e$CASE WHEN d.id IS NULL THEN 'the device was deleted'
                       WHEN NOT d.edge THEN 'the device is not an IoT Edge device' END$e$;
    END IF;

    -- templates offering every path of the job exactly as the target does
    SELECT string_agg(format('"%s"', e ->> 'path'), ', ') INTO paths FROM jsonb_array_elements(job.data) e;
    WITH wanted AS (
        SELECT want.*
          FROM jsonb_array_elements(job.data) e
          JOIN fleet.template_capabilities want
            ON want.template_id = e ->> 'target' AND want.capability = wanted
           AND (coalesce(want.component || '/', '') || want.name) = e ->> 'path'
    )
    SELECT array_agg(q.template_id) INTO qualifying
      FROM (SELECT have.template_id
              FROM wanted w
              JOIN fleet.template_capabilities have
                ON have.component IS NOT DISTINCT FROM w.component AND have.name = w.name
               AND have.capability = w.capability AND have.schema IS NOT DISTINCT FROM w.schema
               AND have.request IS NOT DISTINCT FROM w.request
               AND have.min_value IS NOT DISTINCT FROM w.min_value
               AND have.max_value IS NOT DISTINCT FROM w.max_value
             GROUP BY have.template_id
            HAVING count(*) = (SELECT count(*) FROM wanted)) q;
    RETURN format($e$CASE WHEN d.id IS NULL THEN 'the device was deleted'
                          WHEN d.template_id IS NULL THEN 'the device has no device template'
                          WHEN d.template_id <> ALL (%L::text[]) THEN 'device template "' || d.template_id || %L
                     END$e$,
                  coalesce(qualifying, '{}'),
                  format('" does not have the %s %s', replace(wanted, '_', ' '), paths));
END;
$$;

-- The SET clause of a property, cloud property, template or manifest job.
-- Properties are set as in an IoT Hub twin's desired section: root
-- interface properties at the top level, a component's under its name
-- (marked "__t": "c").
CREATE FUNCTION fleet.engine_set_clause(job fleet.jobs)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    column_name text := CASE job.job_type WHEN 'property' THEN 'properties' ELSE 'cloud_properties' END;
    expr        text := format('d.%I', column_name);
    root        jsonb;
    part        record;
BEGIN
    IF job.job_type = 'deviceTemplateMigration' THEN
        RETURN format('template_id = %L', job.data -> 0 ->> 'template');
    ELSIF job.job_type = 'deviceManifestMigration' THEN
        RETURN format('manifest_id = %L', job.data -> 0 ->> 'manifest');
    END IF;

    SELECT jsonb_object_agg(e ->> 'path', e -> 'value') INTO root
      FROM jsonb_array_elements(job.data) e WHERE strpos(e ->> 'path', '/') = 0;
    IF root IS NOT NULL THEN
        expr := format('%s || %L::jsonb', expr, root);
    END IF;
    FOR part IN
        SELECT split_part(e ->> 'path', '/', 1) AS component,
               jsonb_object_agg(substr(e ->> 'path', strpos(e ->> 'path', '/') + 1), e -> 'value') AS patch
          FROM jsonb_array_elements(job.data) e WHERE strpos(e ->> 'path', '/') > 0
         GROUP BY 1
    LOOP
        expr := format('jsonb_set(%s, %L, coalesce(d.%I -> %L, ''{"__t": "c"}''::jsonb) || %L::jsonb)',
                       expr, ARRAY[part.component], column_name, part.component, part.patch);
    END LOOP;
    RETURN format('%I = %s', column_name, expr);
END;
$$;

-- Fails the devices of a chunk that cannot take the job's change, each
-- with its reason (problem: fleet.engine_device_problem()), one statement
-- per distinct reason; there are a handful.  Returns how many failed.
CREATE FUNCTION fleet.engine_fail_unfit(job_id text, ids text[], problem text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    failure  record;
    n_marked bigint;
    n_failed bigint := 0;
BEGIN
    FOR failure IN EXECUTE format($q$
        SELECT k.problem, array_agg(k.device_id) AS devices
          FROM (SELECT u.device_id, %s AS problem
                  FROM unnest($1::text[]) AS u(device_id)
                  LEFT JOIN fleet.devices d ON d.id = u.device_id) k
         WHERE k.problem IS NOT NULL
         GROUP BY k.problem
    $q$, problem) USING ids
    LOOP
        -- (a command job's device gets no delivery)
        UPDATE fleet.job_devices jd
           SET status = 'failed', error = failure.problem, started_at = now(), finished_at = clock_timestamp(),
               delivery_id = NULL
         WHERE jd.job_id = engine_fail_unfit.job_id AND jd.device_id = ANY (failure.devices)
           AND jd.status = 'pending';
        GET DIAGNOSTICS n_marked = ROW_COUNT;
        n_failed := n_failed + n_marked;
    END LOOP;
    RETURN n_failed;
END;
$$;

-- One committed chunk of a property, cloud property, template or manifest
-- job: the next pending devices of the batch are changed and marked, in one
-- statement.  Returns the number of devices dealt with, and moves the cursor.
CREATE FUNCTION fleet.engine_apply_chunk(job fleet.jobs, b fleet.job_batches, chunk_size int)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    ids         text[];
    problem     text := fleet.engine_device_problem(job);
    n_applied   bigint;
    n_failed    bigint := 0;
    chunk_last  text;
BEGIN
    -- The chunk: the next pending devices of the batch, in id order.  Its
    -- ids go into the statements below as an array, so each is an index
    -- lookup whatever the planner believes about freshly written tables.
    SELECT array_agg(c.device_id ORDER BY c.device_id) INTO ids
      FROM (SELECT jd.device_id FROM fleet.job_devices jd
             WHERE jd.job_id = job.id AND jd.device_id >= b.first_device AND jd.device_id <= b.last_device
               AND (b.cursor IS NULL OR jd.device_id > b.cursor) AND jd.status = 'pending'
             ORDER BY jd.device_id
             LIMIT chunk_size) c;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    chunk_last := ids[cardinality(ids)];

    -- the change, on every device that can take it
    -- walked as a range of the primary key, the ids checked by hash (a
    -- lookup per id costs a third more); IS TRUE keeps the planner from
    -- turning the check into those lookups
    EXECUTE format('UPDATE fleet.devices d SET %s
                     WHERE d.id >= $2 AND d.id <= $3 AND (d.id = ANY ($1)) IS TRUE AND (%s) IS NULL',
                   fleet.engine_set_clause(job), problem)
      USING ids, ids[1], chunk_last;
    GET DIAGNOSTICS n_applied = ROW_COUNT;

    IF n_applied < cardinality(ids) THEN
        -- some devices could not: each gets its reason, one statement per
        -- distinct reason (there are a handful), before the rest complete
        n_failed := fleet.engine_fail_unfit(job.id, ids, problem);
    END IF;
    -- the rest of the chunk completed: one range of job_devices
    UPDATE fleet.job_devices jd
       SET status = 'completed', started_at = now(), finished_at = clock_timestamp()
     WHERE jd.job_id = job.id AND jd.device_id >= ids[1] AND jd.device_id <= chunk_last
       AND jd.status = 'pending';

    UPDATE fleet.job_batches jb
       SET completed = jb.completed + n_applied, failed = jb.failed + n_failed, cursor = chunk_last
     WHERE jb.job_id = b.job_id AND jb.batch = b.batch;
    RETURN cardinality(ids);
END;
$$;

-- Opens the next window of a command batch: its next devices (at most
-- size), in device order, become claimable by gateways, as one range of
-- delivery ids.  Simulated devices are answered at once; devices the
-- command cannot reach fail, with no delivery.  Returns the number of
-- devices dealt with (0: the batch has no more).
CREATE FUNCTION fleet.engine_open_window(job fleet.jobs, b fleet.job_batches, size bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    timeout       interval := current_setting('fleet.command_timeout')::interval;
    problem       text := fleet.engine_device_problem(job);
    ids           text[];
    first_id      bigint;
    last_id       bigint;
    simulated_ids text[];
    n_reachable   bigint;
    n_failed      bigint := 0;
BEGIN
    -- the next devices after the cursor: every row of the range (a window
    -- is a range of delivery ids, so it takes them all)
    SELECT array_agg(c.device_id ORDER BY c.device_id), min(c.delivery_id), max(c.delivery_id)
      INTO ids, first_id, last_id
      FROM (SELECT jd.device_id, jd.delivery_id FROM fleet.job_devices jd
             WHERE jd.job_id = job.id AND jd.device_id >= b.first_device AND jd.device_id <= b.last_device
               AND (b.cursor IS NULL OR jd.device_id > b.cursor)
             ORDER BY jd.device_id
             LIMIT size) c;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;

    -- which devices the command can reach, and which of those are simulated
    -- (walked as a range of the key, the ids checked by hash: see
    -- engine_apply_chunk)
    EXECUTE format('SELECT array_agg(d.id) FILTER (WHERE d.simulated), count(*)
                      FROM fleet.devices d
                     WHERE d.id >= $2 AND d.id <= $3 AND (d.id = ANY ($1)) IS TRUE AND (%s) IS NULL', problem)
       INTO simulated_ids, n_reachable
      USING ids, ids[1], ids[cardinality(ids)];
    IF n_reachable < cardinality(ids) THEN
        -- each of the others fails with its reason, one statement per reason
        n_failed := fleet.engine_fail_unfit(job.id, ids, problem);
    END IF;
    IF simulated_ids IS NOT NULL THEN
        UPDATE fleet.job_devices jd
           SET status = 'completed', gateway = 'simulator', started_at = now(), finished_at = clock_timestamp(),
               response_status = 200, response = '{"simulated": true}'
         WHERE jd.job_id = job.id AND jd.device_id = ANY (simulated_ids) AND jd.status = 'pending';
    END IF;

    INSERT INTO fleet.command_windows (job_id, batch, first_delivery, last_delivery, opened_at, deadline, next_check)
    VALUES (job.id, b.batch, first_id, last_id, now(), now() + timeout, now() + timeout);
    IF n_reachable > coalesce(cardinality(simulated_ids), 0) THEN
        PERFORM pg_notify('fleet_commands', job.id);
    END IF;
    -- devices without a delivery are in no window: they count here
    UPDATE fleet.job_batches jb SET cursor = ids[cardinality(ids)], failed = jb.failed + n_failed
     WHERE jb.job_id = b.job_id AND jb.batch = b.batch;
    RETURN cardinality(ids);
END;
$$;

-- A command batch's open windows: those whose devices all have an outcome
-- are counted into the batch and closed.  Returns how many devices the
-- windows still open hold (outstanding), and, for a job with a threshold,
-- how many of them failed already.  A window is counted once, when it
-- closes; a step over a window still at work looks at one row or a few
-- (its last rows are the last claimed, so one still pending is found at
-- once from the end).
CREATE FUNCTION fleet.engine_close_windows(job fleet.jobs, b fleet.job_batches,
                                           OUT outstanding bigint, OUT failed bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    w      fleet.command_windows;
    counts record;
BEGIN
    outstanding := 0;
    failed := 0;
    FOR w IN
        SELECT cw.* FROM fleet.command_windows cw
         WHERE cw.job_id = job.id AND cw.batch = b.batch
         ORDER BY cw.first_delivery
    LOOP
        -- (not EXISTS: the planner drops an EXISTS query's ORDER BY)
        PERFORM FROM fleet.job_devices jd
          WHERE jd.delivery_id IS NOT NULL
            AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
            AND jd.status = 'pending'
          ORDER BY jd.delivery_id DESC
          LIMIT 1;
        IF FOUND THEN
            outstanding := outstanding + (w.last_delivery - w.first_delivery + 1);
            IF job.threshold_type IS NOT NULL THEN
                failed := failed + (SELECT count(*) FROM fleet.job_devices jd
                                     WHERE jd.delivery_id IS NOT NULL
                                       AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
                                       AND jd.status = 'failed');
            END IF;
        ELSE
            SELECT count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                   count(*) FILTER (WHERE jd.status = 'failed') AS failed
              INTO counts
              FROM fleet.job_devices jd
             WHERE jd.delivery_id IS NOT NULL
               AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery;
            UPDATE fleet.job_batches jb
               SET completed = jb.completed + counts.completed, failed = jb.failed + counts.failed
             WHERE jb.job_id = b.job_id AND jb.batch = b.batch;
            DELETE FROM fleet.command_windows cw WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        END IF;
    END LOOP;
END;
$$;

-- Moves one running job forward by one chunk.  Returns true when it has
-- more work right away.
CREATE FUNCTION fleet.engine_advance_job(job_id text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    job        fleet.jobs;
    b          fleet.job_batches;
    chunk_size int := current_setting('fleet.engine_chunk_size')::int;
    dealt      bigint;
    left_over  bigint;                     -- devices of the batch still to deal with
    job_failed bigint;
    window_size int := current_setting('fleet.command_window')::int;
    out_now    record;                     -- command jobs: what the open windows hold
    open_failed bigint := 0;               -- command jobs: failures not yet counted into a batch
BEGIN
    -- the lock makes stop_job wait for this chunk, and this chunk see a stop
    -- (NO KEY UPDATE: foreign key checks against the job need not wait);
    -- SKIP LOCKED: a stop under way wins (this chunk is not run), and a
    -- session holding the row does not stall the engine for every job
    SELECT j.* INTO job FROM fleet.jobs j WHERE j.id = job_id AND j.status = 'running'
       FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE fleet.jobs j SET last_step_at = clock_timestamp() WHERE j.id = job.id;

    IF job.current_batch IS NULL THEN           -- a job without devices
        PERFORM fleet.engine_finish_job(job, 'completed');
        RETURN false;
    END IF;
    SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = job.current_batch;
    IF b.status = 'pending' THEN
        UPDATE fleet.job_batches jb SET status = 'running', started_at = clock_timestamp()
         WHERE jb.job_id = job.id AND jb.batch = b.batch;
    END IF;

    IF job.job_type = 'command' THEN
        -- windows all answered are counted and closed; the rest are out
        SELECT * INTO out_now FROM fleet.engine_close_windows(job, b);
        -- the job's window of outstanding commands, opened in halves: a
        -- half opens once a half has closed, so gateways always have one
        -- to claim from while the other's last answers come in, and the
        -- engine opens a few large windows instead of one per answer batch
        -- (each step has a fixed cost that shares the CPU with the gateways)
        IF out_now.outstanding <= window_size / 2 THEN
            dealt := fleet.engine_open_window(job, b,
                         least(chunk_size, greatest(window_size / 2, 1), window_size - out_now.outstanding));
        ELSE
            dealt := 0;
        END IF;
        SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch;
        -- the threshold sees the open windows' failures too
        open_failed := out_now.failed;
        b.failed := b.failed + open_failed;
        -- the batch is done once every device was offered and every window
        -- closed.  Its counts are complete then: windows partition its
        -- deliveries, a window closes only when none is pending (and an
        -- outcome never changes), and devices without a delivery were
        -- counted when their window opened.
        left_over := CASE WHEN dealt = 0 AND out_now.outstanding = 0 THEN 0 ELSE 1 END;
    ELSE
        dealt := fleet.engine_apply_chunk(job, b, chunk_size);
        SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch;
        -- a full chunk may not have been the batch's last: look again
        left_over := CASE WHEN dealt = chunk_size THEN 1 ELSE 0 END;
    END IF;

    -- cancellation threshold: strictly more failures than allowed
    IF job.threshold_type IS NOT NULL THEN
        SELECT sum(jb.failed) + open_failed INTO job_failed FROM fleet.job_batches jb WHERE jb.job_id = job.id;
        IF (job.threshold_per_batch AND fleet.threshold_exceeded(job.threshold_type, job.threshold_value, b.failed, b.size))
           OR (NOT job.threshold_per_batch AND fleet.threshold_exceeded(job.threshold_type, job.threshold_value, job_failed, job.device_count)) THEN
            PERFORM fleet.engine_finish_job(job, 'cancelled');
            RETURN false;
        END IF;
    END IF;

    IF left_over > 0 THEN
        RETURN dealt > 0;
    END IF;

    -- the batch is done: on to the next, or the job is
    UPDATE fleet.job_batches jb SET status = 'completed', finished_at = clock_timestamp()
     WHERE jb.job_id = job.id AND jb.batch = b.batch;
    IF EXISTS (SELECT 1 FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch + 1) THEN
        UPDATE fleet.jobs j SET current_batch = b.batch + 1 WHERE j.id = job.id;
        RETURN true;
    END IF;
    PERFORM fleet.engine_finish_job(job,
        CASE WHEN EXISTS (SELECT 1 FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.failed > 0)
             THEN 'failed' ELSE 'completed' END);
    RETURN false;
END;
$$;

-- Fails a job the engine could not start or move on (the error is the
-- job's), with its windows left to close as a finished job's do.
CREATE FUNCTION fleet.engine_give_up(job_id text, message text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE fleet.jobs j SET status = 'failed', error = message, finished_at = clock_timestamp()
     WHERE j.id = engine_give_up.job_id;
    UPDATE fleet.command_windows w SET next_check = now() WHERE w.job_id = engine_give_up.job_id;
$$;

-- One engine step; returns how many milliseconds the worker may sleep.
CREATE FUNCTION fleet.engine_step()
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    naptime     int := (extract(epoch FROM current_setting('fleet.engine_naptime')::interval) * 1000)::int;
    max_running int := current_setting('fleet.max_running_jobs')::int;
    job         fleet.jobs;
    next_job    text;
    more        boolean := false;
    message     text;
    next_due    timestamptz;
BEGIN
    PERFORM fleet.expire_commands();
    -- occurrences that passed unfired (the server was down) are missed
    PERFORM fleet.engine_check_schedules();

    -- start queued jobs, in order, while there is room
    FOR job IN
        SELECT j.* FROM fleet.jobs j
         WHERE j.status = 'pending'
         ORDER BY j.queued_at, j.id
         LIMIT greatest(max_running - (SELECT count(*) FROM fleet.jobs r WHERE r.status = 'running'), 0)
           FOR UPDATE SKIP LOCKED
    LOOP
        -- a job that cannot start (a row no API function would write, say)
        -- fails alone; the step, and every other job, goes on
        BEGIN
            PERFORM fleet.engine_start_job(job);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            RAISE WARNING 'pg_fleet engine: job "%" could not start: %', job.id, message;
            PERFORM fleet.engine_give_up(job.id, message);
        END;
        more := true;
    END LOOP;

    -- the running job that waited longest moves on by one chunk
    SELECT j.id INTO next_job FROM fleet.jobs j
     WHERE j.status = 'running'
     ORDER BY j.last_step_at NULLS FIRST, j.queued_at
     LIMIT 1;
    IF next_job IS NOT NULL THEN
        BEGIN
            IF fleet.engine_advance_job(next_job) THEN
                more := true;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            RAISE WARNING 'pg_fleet engine: job "%" failed: %', next_job, message;
            PERFORM fleet.engine_give_up(next_job, message);
        END;
        -- other running jobs may have work too
        IF EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.status = 'running' AND j.id <> next_job
                                                 AND j.job_type <> 'command') THEN
            more := true;
        END IF;
    END IF;

    IF more THEN
        RETURN 0;
    END IF;
    -- command jobs wait for answers (looked at every 50 ms: answers do not
    -- wake the engine, see fleet.complete_commands) or deadlines
    SELECT min(w.next_check) INTO next_due FROM fleet.command_windows w;
    IF EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.status = 'running' AND j.job_type = 'command') THEN
        naptime := least(naptime, 50);
    END IF;
    -- (compared first: a far or infinite time does not fit an interval in ms)
    IF next_due < clock_timestamp() + make_interval(secs => naptime / 1000.0) THEN
        naptime := greatest(10, ceil(extract(epoch FROM next_due - clock_timestamp()) * 1000)::int + 5);
    END IF;
    RETURN naptime;
END;
$$;
COMMENT ON FUNCTION fleet.engine_step() IS 'Internal: one step of the job engine, run by its background worker';
-- How SQL reaches the engine's worker (src/worker.c).

-- Wakes the engine when the current transaction commits: queued, stopped
-- and resumed jobs and completed commands are seen at once, not at the next
-- poll.  C: it looks no names up.
CREATE FUNCTION fleet.wake_engine()
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_engine';
COMMENT ON FUNCTION fleet.wake_engine() IS 'Wakes the job engine when the current transaction commits';

CREATE FUNCTION fleet.engine_pid()
RETURNS int
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'engine_pid';
COMMENT ON FUNCTION fleet.engine_pid() IS 'The process id of the job engine''s background worker, or NULL when none runs';
-- The calendar of scheduled jobs: pure functions from a schedule to its
-- occurrences.  pg_cron 1.4 reads cron expressions in GMT and knows nothing
-- of start dates, end dates, counts or daylight saving, so all of that is
-- here; pg_cron is only ever pointed at the next occurrence
-- (src/sql/scheduled_jobs.sql).
--
-- A schedule's occurrences are calendar slots: slot k is the start's local
-- date and time plus k days (daily) or k weeks (weekly), in the schedule's
-- time zone, so a 09:00 run stays at 09:00 local in winter and in summer.
-- A local time that does not exist on a spring-forward day runs an hour
-- later (02:30 becomes 03:30); one that happens twice on a fall-back day
-- runs at the second (standard time) one.  These are PostgreSQL's rules for
-- timestamp AT TIME ZONE.

-- A schedule as given in a definition, checked and normalised.
CREATE TYPE fleet.schedule AS (
    start_local     timestamp,   -- wall-clock start in time_zone
    time_zone       text,
    recurrence      text,        -- 'none', 'daily' or 'weekly'
    end_date        date,        -- no run after this local day ends
    max_occurrences int          -- 1 to 999 slots from the start
);

-- Refuses a time zone PostgreSQL does not know by an IANA name.  The quick
-- test loads the zone; abbreviations ("CET") and POSIX strings ("UTC+3")
-- load too but shift with no daylight saving rules, so anything that looks
-- like one must be in pg_timezone_names, which takes a directory scan.
CREATE FUNCTION fleet.require_time_zone(time_zone text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known boolean := false;
BEGIN
    IF time_zone IS NOT NULL AND time_zone <> '' AND length(time_zone) <= 64 THEN
        BEGIN
            PERFORM pg_catalog.timezone(time_zone, pg_catalog.now());
            known := time_zone !~ '[0-9<>,.:+]'
                     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_abbrevs a
                                      WHERE lower(a.abbrev) = lower(time_zone));
        EXCEPTION WHEN invalid_parameter_value OR feature_not_supported THEN
            RAISE EXCEPTION 'unknown time zone "%"', time_zone
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use an IANA time zone name such as "Europe/Berlin"; SELECT name FROM pg_timezone_names lists them.';
        END;
        IF NOT known THEN
            known := EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names n WHERE lower(n.name) = lower(time_zone));
        END IF;
    END IF;
    IF NOT known THEN
        RAISE EXCEPTION 'unknown time zone "%"', coalesce(time_zone, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA time zone name such as "Europe/Berlin"; SELECT name FROM pg_timezone_names lists them.';
    END IF;
    RETURN time_zone;
END;
$$;

-- Checks a schedule object ({"start", "timeZone"?, "recurrence"?, "end"?})
-- and returns it parsed.  Each refusal names the value and what to do.
-- "start" is a local date and time in "timeZone" (default UTC); a start
-- with an offset or "Z" is converted to that zone's wall clock.
CREATE FUNCTION fleet.parse_schedule(schedule jsonb)
RETURNS fleet.schedule
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parsed   fleet.schedule;
    start    text;
    end_spec jsonb;
    n        numeric;
BEGIN
    IF jsonb_typeof(schedule) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a schedule must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', coalesce(jsonb_typeof(schedule), 'NULL')),
                  HINT = 'Give {"start": "2027-03-01T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly"}.';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_object_keys(schedule) k
                WHERE k NOT IN ('start', 'timeZone', 'recurrence', 'end')) THEN
        RAISE EXCEPTION 'unknown schedule field "%"',
                        (SELECT k FROM jsonb_object_keys(schedule) k
                          WHERE k NOT IN ('start', 'timeZone', 'recurrence', 'end') ORDER BY k LIMIT 1)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A schedule has "start", "timeZone", "recurrence" and "end".';
    END IF;

    IF schedule ? 'timeZone' AND jsonb_typeof(schedule -> 'timeZone') <> 'string' THEN
        RAISE EXCEPTION 'schedule "timeZone" must be a string, not %', (schedule -> 'timeZone')::text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA time zone name such as "Europe/Berlin".';
    END IF;
    parsed.time_zone := fleet.require_time_zone(coalesce(schedule ->> 'timeZone', 'UTC'));

    IF jsonb_typeof(schedule -> 'start') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'a schedule needs a "start" date and time'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the local date and time of the first run, such as "2027-03-01T09:00:00".';
    END IF;
    start := schedule ->> 'start';
    BEGIN
        IF start ~ '(Z|z|[+-]\d\d(:?\d\d)?)$' AND start ~ '\d[Tt ]\d' THEN
            parsed.start_local := pg_catalog.timezone(parsed.time_zone, start::timestamptz);
        ELSIF start ~ '^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?$' THEN
            parsed.start_local := start::timestamp;
        ELSE
            RAISE invalid_datetime_format;
        END IF;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_parameter_value THEN
        RAISE EXCEPTION 'schedule start "%" is not a date and time', start
            USING ERRCODE = 'invalid_datetime_format',
                  HINT = 'Write it as YYYY-MM-DDTHH:MM:SS, the local time in the schedule''s "timeZone".';
    END;
    IF parsed.start_local <> date_trunc('minute', parsed.start_local) THEN
        RAISE EXCEPTION 'schedule start "%" is not on a whole minute', start
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Schedules run on whole minutes: give the seconds as 00.';
    END IF;

    parsed.recurrence := CASE WHEN coalesce(jsonb_typeof(schedule -> 'recurrence'), 'null') = 'null' THEN 'none'
                              WHEN jsonb_typeof(schedule -> 'recurrence') = 'string' THEN schedule ->> 'recurrence'
                              ELSE (schedule -> 'recurrence')::text END;
    IF parsed.recurrence NOT IN ('none', 'daily', 'weekly') THEN
        RAISE EXCEPTION 'unknown schedule recurrence %', (schedule -> 'recurrence')::text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "daily" or "weekly" (on the start date''s weekday), or leave "recurrence" out for a one-time run.';
    END IF;

    end_spec := schedule -> 'end';
    IF end_spec IS NOT NULL AND jsonb_typeof(end_spec) <> 'null' THEN
        IF parsed.recurrence = 'none' THEN
            RAISE EXCEPTION 'a one-time schedule has no "end"'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Remove "end", or set "recurrence" to "daily" or "weekly".';
        END IF;
        IF jsonb_typeof(end_spec) <> 'object' OR jsonb_typeof(end_spec -> 'type') IS DISTINCT FROM 'string'
           OR end_spec ->> 'type' NOT IN ('date', 'occurrences') THEN
            RAISE EXCEPTION 'unknown schedule end %', end_spec::text
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use {"type": "date", "date": "2027-12-31"} or {"type": "occurrences", "occurrences": 10}.';
        END IF;
        IF end_spec ->> 'type' = 'date' THEN
            BEGIN
                IF jsonb_typeof(end_spec -> 'date') IS DISTINCT FROM 'string'
                   OR end_spec ->> 'date' !~ '^\d{4}-\d\d-\d\d([Tt ].*)?$' THEN
                    RAISE invalid_datetime_format;
                END IF;
                parsed.end_date := left(end_spec ->> 'date', 10)::date;
            EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
                RAISE EXCEPTION 'schedule end date % is not a date', coalesce((end_spec -> 'date')::text, 'NULL')
                    USING ERRCODE = 'invalid_datetime_format',
                          HINT = 'Write it as YYYY-MM-DD: no run happens after that day ends in the schedule''s time zone.';
            END;
            IF parsed.end_date < parsed.start_local::date THEN
                RAISE EXCEPTION 'schedule end date % is before its start %',
                                to_char(parsed.end_date, 'YYYY-MM-DD'), to_char(parsed.start_local, 'YYYY-MM-DD')
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Choose an end date on or after the start date.';
            END IF;
        ELSE
            IF jsonb_typeof(end_spec -> 'occurrences') IS DISTINCT FROM 'number' THEN
                RAISE EXCEPTION 'schedule end occurrences % is not a number', coalesce((end_spec -> 'occurrences')::text, 'NULL')
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give a whole number of runs from 1 to 999.';
            END IF;
            n := (end_spec ->> 'occurrences')::numeric;
            IF n <> trunc(n) OR n < 1 OR n > 999 THEN
                RAISE EXCEPTION 'schedule end occurrences % is outside 1 to 999', end_spec ->> 'occurrences'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give a whole number of runs from 1 to 999, or end on a date.';
            END IF;
            parsed.max_occurrences := n::int;
        END IF;
    END IF;
    RETURN parsed;
END;
$$;

-- The schedule in its normal JSON form, as fleet.get_scheduled_job shows it.
CREATE FUNCTION fleet.schedule_json(s fleet.schedule)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'start', to_char(s.start_local, 'YYYY-MM-DD"T"HH24:MI:SS'),
        'timeZone', s.time_zone,
        'recurrence', nullif(s.recurrence, 'none'),
        'end', CASE WHEN s.end_date IS NOT NULL THEN jsonb_build_object('type', 'date', 'date', s.end_date)
                    WHEN s.max_occurrences IS NOT NULL THEN jsonb_build_object('type', 'occurrences',
                                                                               'occurrences', s.max_occurrences)
               END))
$$;

-- The occurrences of a parsed schedule strictly after "after", at most n,
-- in order.  Set-based: the candidate slots around "after" are computed in
-- one statement (DST moves a slot by at most an hour, so starting one slot
-- early is enough).
CREATE FUNCTION fleet.schedule_occurrences(s fleet.schedule, after timestamptz, n int)
RETURNS TABLE (slot int, occurrence timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH step AS (
        SELECT CASE s.recurrence WHEN 'daily' THEN 1 WHEN 'weekly' THEN 7 ELSE 0 END AS days
    ),
    first_slot AS (
        SELECT CASE WHEN st.days = 0 THEN 0
                    ELSE greatest(0, floor(extract(epoch FROM pg_catalog.timezone(s.time_zone, after) - s.start_local)
                                           / (86400.0 * st.days))::int - 1) END AS k,
               st.days
          FROM step st
    ),
    slots AS (
        SELECT g.k, s.start_local + make_interval(days => g.k * f.days) AS local_time
          FROM first_slot f,
               generate_series(f.k, CASE WHEN f.days = 0 THEN 0 ELSE f.k + greatest(n, 0) + 2 END) AS g(k)
    )
    SELECT x.k, pg_catalog.timezone(s.time_zone, x.local_time)
      FROM slots x
     WHERE pg_catalog.timezone(s.time_zone, x.local_time) > after
       AND (s.end_date IS NULL OR x.local_time::date <= s.end_date)
       AND (s.max_occurrences IS NULL OR x.k < s.max_occurrences)
     ORDER BY x.k
     LIMIT greatest(n, 0)
$$;

CREATE FUNCTION fleet.next_occurrences(schedule jsonb, after timestamptz DEFAULT pg_catalog.now(), n int DEFAULT 10)
RETURNS SETOF timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF after IS NULL THEN
        RAISE EXCEPTION '"after" must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the time to count from, such as now().';
    END IF;
    IF n IS NULL OR n < 0 OR n > 10000 THEN
        RAISE EXCEPTION 'cannot list % occurrences', coalesce(n::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Ask for 0 to 10000 occurrences.';
    END IF;
    RETURN QUERY SELECT o.occurrence FROM fleet.schedule_occurrences(fleet.parse_schedule(schedule), after, n) o;
END;
$$;
COMMENT ON FUNCTION fleet.next_occurrences(jsonb, timestamptz, int) IS 'The next n occurrences of a schedule ({"start", "timeZone", "recurrence", "end"}) strictly after a time';
-- Scheduled jobs: a job definition plus a schedule (src/sql/schedule_calendar.sql).
--
-- pg_cron does the firing.  Each enabled schedule owns one pg_cron entry,
-- always pointed at its next occurrence as a GMT cron expression for that
-- one minute; every fire runs the occurrence, records it, and points the
-- entry at the following one (or removes it when the schedule has ended).
-- pg_cron is only an alarm clock: what ran, what was missed and what comes
-- next are rows here, so a stale or repeated fire does nothing.
--
-- An occurrence that passes while the server is down is not run late:
-- once it is more than fleet.schedule_misfire_grace overdue, the engine
-- (or the next fire) records it as missed, and the next one runs.

CREATE TABLE fleet.scheduled_jobs (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,255}$'),
    display_name    text NOT NULL,
    organization_id text NOT NULL REFERENCES fleet.organizations (id),
    group_id        text NOT NULL REFERENCES fleet.device_groups (id),
    definition      jsonb NOT NULL,        -- the job each occurrence creates, without id
    schedule        jsonb NOT NULL,        -- normalised: fleet.schedule_json()
    enabled         boolean NOT NULL DEFAULT true,
    effective_from  timestamptz NOT NULL,  -- occurrences before this are not this calendar's
    next_run_at     timestamptz,           -- what the pg_cron entry points at; NULL: none
    cron_job_name   text NOT NULL UNIQUE,  -- the pg_cron entry's name
    created_by      name NOT NULL DEFAULT current_user,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX scheduled_jobs_due_idx ON fleet.scheduled_jobs (next_run_at) WHERE enabled;
COMMENT ON TABLE fleet.scheduled_jobs IS 'Scheduled jobs: a job definition, its schedule, and the next occurrence pg_cron is pointed at';

-- One row per occurrence that came: run (with its job), missed, or failed
-- to start (with the reason).  The key makes a repeated fire harmless.
CREATE TABLE fleet.scheduled_job_runs (
    scheduled_job_id text NOT NULL REFERENCES fleet.scheduled_jobs (id) ON DELETE CASCADE,
    occurrence       timestamptz NOT NULL,
    outcome          text NOT NULL CHECK (outcome IN ('started', 'missed', 'failed')),
    job_id           text REFERENCES fleet.jobs (id) ON DELETE SET NULL,
    error            text,
    recorded_at      timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (scheduled_job_id, occurrence)
);
COMMENT ON TABLE fleet.scheduled_job_runs IS 'Every occurrence of every schedule that has come: started (with its job), missed, or failed to start';

-- C (src/cron_bridge.c): writes or removes a pg_cron entry in whichever
-- database pg_cron lives.  Takes an arbitrary command, so PUBLIC may not
-- run it; fleet.sync_schedule_cron() is its only caller.
CREATE FUNCTION fleet.cron_apply(job_name text, cron_schedule text, command text, run_as text)
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cron_apply';
REVOKE ALL ON FUNCTION fleet.cron_apply(text, text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION fleet.cron_apply(text, text, text, text) IS 'Internal: writes (or, with a NULL schedule, removes) a pg_cron entry in the database named by cron.database_name';

-- C: the database pg_cron keeps its entries in; refuses when pg_cron is not loaded.
CREATE FUNCTION fleet.cron_database()
RETURNS text
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cron_database';
COMMENT ON FUNCTION fleet.cron_database() IS 'The database pg_cron keeps its entries in (cron.database_name); an error when pg_cron is not loaded';

-- A pg_cron entry name (pg_cron keeps names as "name", 63 bytes) that
-- says whose it is, unique across databases.
CREATE FUNCTION fleet.schedule_cron_name(schedule_id text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN octet_length(n) <= 63 THEN n
                ELSE 'pg_fleet ' || left(schedule_id, 20) || ' ' || left(md5(n), 16) END
      FROM (SELECT format('pg_fleet %s %s', current_database(), schedule_id) AS n) x
$$;

-- Makes the schedule's pg_cron entry say what its row says: at next_run_at
-- (a one-minute GMT cron expression), running fleet.fire_scheduled_job(id)
-- as the schedule's creator; or no entry when there is no next run or no
-- schedule.  Nothing secret goes into the command: only the schedule id.
--
-- SECURITY DEFINER: pg_cron lets only a superuser create an entry that runs
-- as another role (the creator, when someone else edits the schedule) or
-- in another database.  The entry's parts come from the row, never from
-- the caller, so calling this for any id only brings pg_cron in line.
CREATE FUNCTION fleet.sync_schedule_cron(schedule_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs;
BEGIN
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = schedule_id;
    IF s.id IS NULL OR s.next_run_at IS NULL OR NOT s.enabled THEN
        PERFORM fleet.cron_apply(coalesce(s.cron_job_name, fleet.schedule_cron_name(schedule_id)), NULL, NULL, NULL);
    ELSE
        PERFORM fleet.cron_apply(s.cron_job_name,
                                 to_char(s.next_run_at AT TIME ZONE 'UTC', 'FMMI FMHH24 FMDD FMMM') || ' *',
                                 format('SELECT fleet.fire_scheduled_job(%L)', s.id),
                                 s.created_by);
    END IF;
END;
$$;
COMMENT ON FUNCTION fleet.sync_schedule_cron(text) IS 'Internal: points the schedule''s pg_cron entry at its next occurrence, or removes it';

-- A time other than now is a test seam (tests fire schedules at mocked
-- times): in anyone else's hands it could start occurrences early or mark
-- them missed, so only superusers may pass one.  A minute's leeway covers
-- pg_cron firing on the minute.
CREATE FUNCTION fleet.require_clock_time(at timestamptz, action text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF abs(extract(epoch FROM at - pg_catalog.clock_timestamp())) > 60
       AND NOT fleet.role_sees_everything(current_user) THEN
        RAISE EXCEPTION 'only a superuser may % at another time than now', action
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Leave the time out: pg_cron fires schedules at their time.';
    END IF;
END;
$$;

-- Brings a locked schedule's bookkeeping up to "at": occurrences since it
-- took effect that are more than the misfire grace overdue and were never
-- recorded become "missed"; next_run_at becomes the first occurrence not
-- yet recorded and not missed.  Returns it (NULL: ended or disabled).
CREATE FUNCTION fleet.schedule_advance(schedule_id text, at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s        fleet.scheduled_jobs;
    parsed   fleet.schedule;
    grace    interval := current_setting('fleet.schedule_misfire_grace')::interval;
    recorded timestamptz;
    since    timestamptz;
    span     int;
    next_run timestamptz;
BEGIN
    PERFORM fleet.require_clock_time(at, 'advance a schedule');
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = schedule_id;
    IF s.enabled THEN
        parsed := fleet.parse_schedule(s.schedule);
        SELECT max(r.occurrence) INTO recorded FROM fleet.scheduled_job_runs r WHERE r.scheduled_job_id = s.id;
        since := greatest(s.effective_from - interval '1 microsecond', recorded);

        -- every slot between "since" and the grace line, in one statement
        IF at - grace > since THEN
            span := CASE parsed.recurrence WHEN 'none' THEN 1
                    ELSE least(ceil(extract(epoch FROM at - since)
                                    / (86400.0 * CASE parsed.recurrence WHEN 'daily' THEN 1 ELSE 7 END))::int + 2,
                               100000) END;
            INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, error)
            SELECT s.id, o.occurrence, 'missed', 'not fired within fleet.schedule_misfire_grace: the server or pg_cron was down'
              FROM fleet.schedule_occurrences(parsed, since, span) o
             WHERE o.occurrence < at - grace
            ON CONFLICT DO NOTHING;
            since := greatest(since, at - grace - interval '1 microsecond');
        END IF;
        SELECT o.occurrence INTO next_run FROM fleet.schedule_occurrences(parsed, since, 1) o;
    END IF;
    UPDATE fleet.scheduled_jobs sj SET next_run_at = next_run WHERE sj.id = s.id;
    RETURN next_run;
END;
$$;

CREATE FUNCTION fleet.get_scheduled_job(id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs;
BEGIN
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = get_scheduled_job.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job "%" does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT id, display_name FROM fleet.scheduled_jobs lists them.';
    END IF;
    RETURN s.definition || jsonb_build_object(
        'id', s.id,
        'organizations', jsonb_build_array(s.organization_id),
        'schedule', s.schedule,
        'enabled', s.enabled,
        -- IoT Central's flag: no occurrence is left
        'completed', s.enabled AND s.next_run_at IS NULL,
        'nextRun', s.next_run_at,
        'occurrences', (SELECT count(*) FROM fleet.scheduled_job_runs r
                         WHERE r.scheduled_job_id = s.id AND r.outcome = 'started'),
        'createdBy', s.created_by);
END;
$$;
COMMENT ON FUNCTION fleet.get_scheduled_job(text) IS 'The scheduled job as JSON: its job definition, schedule, enabled, completed, next run and the number of runs started';

-- A scheduled job's definition taken apart: the job, its schedule (NULL
-- fields when not given) and "enabled" (NULL when not given).
CREATE TYPE fleet.scheduled_job_parts AS (
    job_definition jsonb,
    schedule       fleet.schedule,
    enabled        boolean
);

CREATE FUNCTION fleet.scheduled_job_parts(definition jsonb)
RETURNS fleet.scheduled_job_parts
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts fleet.scheduled_job_parts;
BEGIN
    IF definition ? 'schedule' THEN
        parts.schedule := fleet.parse_schedule(definition -> 'schedule');
    END IF;
    IF definition ? 'enabled' AND jsonb_typeof(definition -> 'enabled') IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION '"enabled" must be true or false, not %', (definition -> 'enabled')::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    parts.enabled := (definition ->> 'enabled')::boolean;
    -- what get_scheduled_job() adds is read-only and ignored if sent back
    parts.job_definition := definition - ARRAY['id', 'schedule', 'enabled', 'completed', 'nextRun',
                                               'occurrences', 'createdBy'];
    RETURN parts;
END;
$$;

-- Refuses a schedule none of whose occurrences is still to come.
CREATE FUNCTION fleet.require_future_occurrence(schedule fleet.schedule, label text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.schedule_occurrences(schedule, pg_catalog.now(), 1)) THEN
        IF schedule.recurrence = 'none' THEN
            RAISE EXCEPTION 'the start of % (% %) is in the past', label,
                            to_char(schedule.start_local, 'YYYY-MM-DD"T"HH24:MI:SS'), schedule.time_zone
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give a start in the future, or run the job now with fleet.create_job().';
        END IF;
        RAISE EXCEPTION '% has no occurrence left: it ends before its next one', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Move the end date or raise the number of occurrences.';
    END IF;
END;
$$;

CREATE FUNCTION fleet.create_scheduled_job(definition jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts fleet.scheduled_job_parts;
    job   fleet.jobs;
    new_id text;
    label text;
BEGIN
    IF jsonb_typeof(definition) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a scheduled job definition must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', coalesce(jsonb_typeof(definition), 'NULL')),
                  HINT = 'Pass a job definition with a "schedule": {"start": ..., "timeZone": ..., "recurrence": ...}.';
    END IF;
    IF definition ? 'id' AND jsonb_typeof(definition -> 'id') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'scheduled job id % is not a string', (definition -> 'id')::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    new_id := coalesce(definition ->> 'id', 'schedule-' || replace(gen_random_uuid()::text, '-', ''));
    IF new_id !~ '^[A-Za-z0-9_-]{1,255}$' THEN
        RAISE EXCEPTION 'invalid scheduled job id "%"', new_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 255 letters, digits, "-" or "_", or leave "id" out to get one.';
    END IF;
    label := format('scheduled job "%s"', new_id);
    IF NOT definition ? 'schedule' THEN
        RAISE EXCEPTION '% needs a "schedule"', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add "schedule": {"start": "2027-03-01T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly"}, or run the job now with fleet.create_job().';
    END IF;

    parts := fleet.scheduled_job_parts(definition);
    job := fleet.job_from_definition(parts.job_definition);     -- the job is checked now, and at each run
    PERFORM fleet.require_future_occurrence(parts.schedule, label);
    PERFORM fleet.cron_database();                               -- refuses without pg_cron
    IF EXISTS (SELECT 1 FROM fleet.scheduled_jobs sj WHERE sj.id = new_id) THEN
        RAISE EXCEPTION '% already exists', label
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose another id, or change it with fleet.update_scheduled_job().';
    END IF;

    -- (its creator and pg_cron entry name are set by fleet.scheduled_jobs_pin_identity)
    INSERT INTO fleet.scheduled_jobs (id, display_name, organization_id, group_id, definition, schedule,
                                      enabled, effective_from)
    VALUES (new_id, job.display_name, job.organization_id, job.group_id, parts.job_definition,
            fleet.schedule_json(parts.schedule), coalesce(parts.enabled, true), pg_catalog.now());
    PERFORM fleet.schedule_advance(new_id, pg_catalog.now());
    PERFORM fleet.sync_schedule_cron(new_id);
    RETURN fleet.get_scheduled_job(new_id);
END;
$$;
COMMENT ON FUNCTION fleet.create_scheduled_job(jsonb) IS 'Validates a job definition with a "schedule" and schedules it through pg_cron';

-- Locks a schedule for a change.
CREATE FUNCTION fleet.lock_scheduled_job(id text)
RETURNS fleet.scheduled_jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs;
BEGIN
    -- a viewer sees the schedule but may not lock it: tell it why
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = lock_scheduled_job.id;
    IF FOUND THEN
        PERFORM fleet.require_app_role(s.organization_id, 'operator', 'changing a scheduled job');
    END IF;
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = lock_scheduled_job.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job "%" does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT id, display_name FROM fleet.scheduled_jobs lists them.';
    END IF;
    RETURN s;
END;
$$;

-- Changes a scheduled job: any of the job's fields, the schedule, and
-- "enabled", each replaced when given.  Takes effect from the next
-- occurrence; a new schedule's calendar starts now (occurrences it would
-- have had before are not missed).
CREATE FUNCTION fleet.update_scheduled_job(id text, definition jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s       fleet.scheduled_jobs := fleet.lock_scheduled_job(id);
    parts   fleet.scheduled_job_parts;
    job     fleet.jobs;
    label   text := format('scheduled job "%s"', id);
    new_schedule boolean;
    renewed      boolean;
BEGIN
    IF jsonb_typeof(definition) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the changes to % must be a JSON object', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the fields to change, such as {"enabled": false} or {"schedule": {...}}.';
    END IF;
    IF definition ? 'id' AND definition -> 'id' IS DISTINCT FROM to_jsonb(id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create a new scheduled job and delete this one.';
    END IF;
    parts := fleet.scheduled_job_parts(definition);
    parts.job_definition := s.definition || parts.job_definition;
    job := fleet.job_from_definition(parts.job_definition);
    new_schedule := (parts.schedule).start_local IS NOT NULL;
    renewed := new_schedule OR (coalesce(parts.enabled, false) AND NOT s.enabled);
    IF new_schedule THEN
        PERFORM fleet.require_future_occurrence(parts.schedule, label);
    END IF;
    IF coalesce(parts.enabled, s.enabled) THEN
        PERFORM fleet.cron_database();
    END IF;

    UPDATE fleet.scheduled_jobs sj
       SET display_name = job.display_name, organization_id = job.organization_id, group_id = job.group_id,
           definition = parts.job_definition,
           schedule = CASE WHEN new_schedule THEN fleet.schedule_json(parts.schedule) ELSE sj.schedule END,
           enabled = coalesce(parts.enabled, sj.enabled),
           effective_from = CASE WHEN renewed THEN pg_catalog.now() ELSE sj.effective_from END,
           updated_at = pg_catalog.now()
     WHERE sj.id = s.id;
    PERFORM fleet.schedule_advance(s.id, pg_catalog.now());
    PERFORM fleet.sync_schedule_cron(s.id);
    RETURN fleet.get_scheduled_job(s.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_scheduled_job(text, jsonb) IS 'Changes a scheduled job''s definition, schedule or "enabled" from its next occurrence';

CREATE FUNCTION fleet.enable_scheduled_job(id text)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT fleet.update_scheduled_job(id, '{"enabled": true}') $$;
COMMENT ON FUNCTION fleet.enable_scheduled_job(text) IS 'Enables a scheduled job: it runs from its next occurrence';

CREATE FUNCTION fleet.disable_scheduled_job(id text)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT fleet.update_scheduled_job(id, '{"enabled": false}') $$;
COMMENT ON FUNCTION fleet.disable_scheduled_job(text) IS 'Disables a scheduled job: its pg_cron entry goes, its history stays';

CREATE FUNCTION fleet.delete_scheduled_job(id text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs := fleet.lock_scheduled_job(id);
BEGIN
    -- disabled first, so the entry goes by the name the row holds
    UPDATE fleet.scheduled_jobs sj SET enabled = false WHERE sj.id = s.id;
    PERFORM fleet.sync_schedule_cron(s.id);
    DELETE FROM fleet.scheduled_jobs sj WHERE sj.id = s.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_scheduled_job(text) IS 'Unschedules a job: the schedule, its pg_cron entry and its run history go; the jobs it ran stay';

-- Called by pg_cron at an occurrence (and by tests with a mocked "now"):
-- runs the occurrence that is due, records it, and points the pg_cron
-- entry at the next one.  Anything else (a stale entry, a repeated fire, a
-- deleted or disabled schedule) runs nothing.  Returns the new job's id.
CREATE FUNCTION fleet.fire_scheduled_job(id text, fired_at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s       fleet.scheduled_jobs;
    due     timestamptz;
    created jsonb;
    job_id  text;
    message text;
BEGIN
    PERFORM fleet.require_clock_time(fired_at, 'fire a scheduled job');
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = fire_scheduled_job.id FOR UPDATE;
    IF FOUND THEN
        due := fleet.schedule_advance(s.id, fired_at);
        -- pg_cron fires on the minute: a due occurrence is at most a
        -- minute ahead of the clock (and at most the grace behind it)
        IF due IS NOT NULL AND due <= fired_at + interval '59 seconds' THEN
            BEGIN
                created := fleet.create_job(s.definition || jsonb_build_object(
                    'id', fleet.free_job_id(left(s.id, 220) || '-' || to_char(due AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MI"Z"'))));
                job_id := created ->> 'id';
                UPDATE fleet.jobs j SET scheduled_job_id = s.id, created_by = s.created_by WHERE j.id = job_id;
                INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, job_id)
                VALUES (s.id, due, 'started', job_id);
            EXCEPTION WHEN OTHERS THEN
                -- the job no longer validates (a group or template changed):
                -- the occurrence is recorded with the reason, the schedule goes on
                GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
                INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, error)
                VALUES (s.id, due, 'failed', message);
                RAISE WARNING 'scheduled job "%" could not start its run of %: %', s.id, due, message;
            END;
            PERFORM fleet.schedule_advance(s.id, fired_at);
        END IF;
    END IF;
    -- a failure to re-point pg_cron must not undo the run just recorded
    -- (the engine re-points it once the next occurrence is overdue)
    BEGIN
        PERFORM fleet.sync_schedule_cron(fire_scheduled_job.id);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
        RAISE WARNING 'scheduled job "%": could not point pg_cron at the next occurrence: %', fire_scheduled_job.id, message;
    END;
    RETURN job_id;
END;
$$;
COMMENT ON FUNCTION fleet.fire_scheduled_job(text, timestamptz) IS 'Run by pg_cron: starts the due occurrence of a scheduled job and points pg_cron at the next one';

-- The engine's look at schedules whose occurrence passed unfired (the
-- server or pg_cron was down): recorded as missed, pg_cron re-pointed.
CREATE FUNCTION fleet.engine_check_schedules()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    overdue text;
    message text;
BEGIN
    FOR overdue IN
        SELECT sj.id FROM fleet.scheduled_jobs sj
         WHERE sj.enabled AND sj.next_run_at < pg_catalog.clock_timestamp()
                                              - current_setting('fleet.schedule_misfire_grace')::interval
           FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM fleet.schedule_advance(overdue, pg_catalog.clock_timestamp());
        BEGIN
            PERFORM fleet.sync_schedule_cron(overdue);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            RAISE WARNING 'pg_fleet engine: could not point pg_cron at the next run of scheduled job "%": %',
                          overdue, message;
        END;
    END LOOP;
END;
$$;

CREATE FUNCTION fleet.scheduled_job_instances(id text)
RETURNS TABLE (occurrence timestamptz, outcome text, job_id text, status text,
               started_at timestamptz, finished_at timestamptz, error text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.scheduled_jobs sj WHERE sj.id = scheduled_job_instances.id) THEN
        RAISE EXCEPTION 'scheduled job "%" does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT id, display_name FROM fleet.scheduled_jobs lists them.';
    END IF;
    RETURN QUERY
    SELECT r.occurrence, r.outcome, r.job_id, j.status, j.started_at, j.finished_at, coalesce(r.error, j.error)
      FROM fleet.scheduled_job_runs r
      LEFT JOIN fleet.jobs j ON j.id = r.job_id
     WHERE r.scheduled_job_id = scheduled_job_instances.id
     ORDER BY r.occurrence;
END;
$$;
COMMENT ON FUNCTION fleet.scheduled_job_instances(text) IS 'The occurrences of a scheduled job so far: started (with the job and its status), missed, or failed to start';
-- Reporting views for BI tools (Metabase, Grafana, Power BI, Superset).
-- Their names, columns and types are API: add columns at the end, never
-- rename or retype one.  Every view and column carries a comment, which BI
-- tools show as its description.  All are security_invoker: a reader sees
-- what its own privileges (and, with organizations, its row-level security)
-- allow.  Counts are exact, read from the per-device rows of each job.

CREATE VIEW fleet.job_overview WITH (security_invoker = true) AS
    SELECT j.id AS job_id,
           j.display_name AS job_name,
           j.job_type,
           j.organization_id,
           j.group_id,
           j.status,
           coalesce(p.total, 0) AS total_devices,
           coalesce(p.pending, 0) AS pending_devices,
           coalesce(p.completed, 0) AS completed_devices,
           coalesce(p.failed, 0) AS failed_devices,
           round(100.0 * p.completed / nullif(p.completed + p.failed, 0), 2) AS success_rate,
           j.scheduled_job_id,
           j.rerun_of,
           j.created_by,
           j.created_at,
           j.queued_at,
           j.started_at,
           j.finished_at,
           extract(epoch FROM j.started_at - j.queued_at)::double precision AS wait_seconds,
           extract(epoch FROM coalesce(j.finished_at, CASE WHEN j.status = 'running' THEN pg_catalog.now() END)
                              - j.started_at)::double precision AS run_seconds
      FROM fleet.jobs j
      LEFT JOIN LATERAL (SELECT count(*) AS total,
                                count(*) FILTER (WHERE jd.status = 'pending') AS pending,
                                count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                                count(*) FILTER (WHERE jd.status = 'failed') AS failed
                           FROM fleet.job_devices jd WHERE jd.job_id = j.id) p ON true;
COMMENT ON VIEW fleet.job_overview IS 'One row per job: type, organization, status, device totals, success rate, durations and the schedule it came from';
COMMENT ON COLUMN fleet.job_overview.job_id IS 'The job''s id';
COMMENT ON COLUMN fleet.job_overview.job_name IS 'The job''s display name';
COMMENT ON COLUMN fleet.job_overview.job_type IS 'property, cloudProperty, command, deviceTemplateMigration or deviceManifestMigration';
COMMENT ON COLUMN fleet.job_overview.organization_id IS 'The organization the job belongs to';
COMMENT ON COLUMN fleet.job_overview.group_id IS 'The device group the job ran on';
COMMENT ON COLUMN fleet.job_overview.status IS 'saved, pending, running, stopped, completed, failed or cancelled';
COMMENT ON COLUMN fleet.job_overview.total_devices IS 'Devices in the job (0 until it starts)';
COMMENT ON COLUMN fleet.job_overview.pending_devices IS 'Devices not yet done';
COMMENT ON COLUMN fleet.job_overview.completed_devices IS 'Devices the job completed on';
COMMENT ON COLUMN fleet.job_overview.failed_devices IS 'Devices the job failed on';
COMMENT ON COLUMN fleet.job_overview.success_rate IS 'Completed devices as a percentage of the devices done (NULL before any is done)';
COMMENT ON COLUMN fleet.job_overview.scheduled_job_id IS 'The scheduled job this run came from, if any';
COMMENT ON COLUMN fleet.job_overview.rerun_of IS 'The job whose failed devices this job reruns, if any';
COMMENT ON COLUMN fleet.job_overview.created_by IS 'The database role that created the job';
COMMENT ON COLUMN fleet.job_overview.created_at IS 'When the job was created';
COMMENT ON COLUMN fleet.job_overview.queued_at IS 'When the job was queued to run';
COMMENT ON COLUMN fleet.job_overview.started_at IS 'When the engine started the job';
COMMENT ON COLUMN fleet.job_overview.finished_at IS 'When the job ended';
COMMENT ON COLUMN fleet.job_overview.wait_seconds IS 'Seconds between queued and started';
COMMENT ON COLUMN fleet.job_overview.run_seconds IS 'Seconds between started and finished (so far, while running)';

CREATE VIEW fleet.job_batch_progress WITH (security_invoker = true) AS
    SELECT b.job_id,
           b.batch,
           b.status,
           b.size AS devices,
           coalesce(p.pending, 0) AS pending_devices,
           coalesce(p.completed, 0) AS completed_devices,
           coalesce(p.failed, 0) AS failed_devices,
           round(100.0 * (b.size - coalesce(p.pending, 0)) / nullif(b.size, 0), 2) AS percent_done,
           b.started_at,
           b.finished_at
      FROM fleet.job_batches b
      LEFT JOIN LATERAL (SELECT count(*) FILTER (WHERE jd.status = 'pending') AS pending,
                                count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                                count(*) FILTER (WHERE jd.status = 'failed') AS failed
                           FROM fleet.job_devices jd
                          WHERE jd.job_id = b.job_id AND jd.device_id >= b.first_device
                            AND jd.device_id <= b.last_device) p ON true;
COMMENT ON VIEW fleet.job_batch_progress IS 'One row per batch of every started job: its devices and how many are pending, completed and failed';
COMMENT ON COLUMN fleet.job_batch_progress.job_id IS 'The job';
COMMENT ON COLUMN fleet.job_batch_progress.batch IS 'The batch number, from 1, in the order batches run';
COMMENT ON COLUMN fleet.job_batch_progress.status IS 'pending, running, completed or cancelled';
COMMENT ON COLUMN fleet.job_batch_progress.devices IS 'Devices in the batch';
COMMENT ON COLUMN fleet.job_batch_progress.pending_devices IS 'Devices of the batch not yet done';
COMMENT ON COLUMN fleet.job_batch_progress.completed_devices IS 'Devices of the batch completed';
COMMENT ON COLUMN fleet.job_batch_progress.failed_devices IS 'Devices of the batch failed';
COMMENT ON COLUMN fleet.job_batch_progress.percent_done IS 'Completed and failed devices as a percentage of the batch';
COMMENT ON COLUMN fleet.job_batch_progress.started_at IS 'When the batch started';
COMMENT ON COLUMN fleet.job_batch_progress.finished_at IS 'When the batch ended';

CREATE VIEW fleet.job_device_outcomes WITH (security_invoker = true) AS
    SELECT jd.job_id,
           j.display_name AS job_name,
           j.job_type,
           j.organization_id,
           jd.device_id,
           coalesce(d.display_name, 'deleted') AS device_name,
           d.id IS NULL AS device_deleted,
           d.template_id,
           t.display_name AS template_name,
           jd.batch,
           jd.status,
           jd.error,
           jd.started_at,
           jd.finished_at,
           extract(epoch FROM jd.finished_at - jd.started_at)::double precision AS duration_seconds
      FROM fleet.job_devices jd
      JOIN fleet.jobs j ON j.id = jd.job_id
      LEFT JOIN fleet.devices d ON d.id = jd.device_id
      LEFT JOIN fleet.device_templates t ON t.id = d.template_id;
COMMENT ON VIEW fleet.job_device_outcomes IS 'One row per device of every started job: its outcome, with device and template names; filter by job_id';
COMMENT ON COLUMN fleet.job_device_outcomes.job_id IS 'The job';
COMMENT ON COLUMN fleet.job_device_outcomes.job_name IS 'The job''s display name';
COMMENT ON COLUMN fleet.job_device_outcomes.job_type IS 'The job''s type';
COMMENT ON COLUMN fleet.job_device_outcomes.organization_id IS 'The organization the job belongs to';
COMMENT ON COLUMN fleet.job_device_outcomes.device_id IS 'The device';
COMMENT ON COLUMN fleet.job_device_outcomes.device_name IS 'The device''s display name, or "deleted" for a device deleted since';
COMMENT ON COLUMN fleet.job_device_outcomes.device_deleted IS 'True when the device has been deleted since the job ran';
COMMENT ON COLUMN fleet.job_device_outcomes.template_id IS 'The device''s template now (NULL when deleted or unassigned)';
COMMENT ON COLUMN fleet.job_device_outcomes.template_name IS 'That template''s display name';
COMMENT ON COLUMN fleet.job_device_outcomes.batch IS 'The batch the device ran in';
COMMENT ON COLUMN fleet.job_device_outcomes.status IS 'pending, completed or failed';
COMMENT ON COLUMN fleet.job_device_outcomes.error IS 'Why the device failed';
COMMENT ON COLUMN fleet.job_device_outcomes.started_at IS 'When the job started on the device';
COMMENT ON COLUMN fleet.job_device_outcomes.finished_at IS 'When the device''s outcome was recorded';
COMMENT ON COLUMN fleet.job_device_outcomes.duration_seconds IS 'Seconds from started to finished (for commands: the device''s answer time)';

CREATE VIEW fleet.device_inventory WITH (security_invoker = true) AS
    SELECT d.template_id,
           t.display_name AS template_name,
           d.organization_id,
           o.display_name AS organization_name,
           d.edge,
           d.simulated,
           count(*) AS devices
      FROM fleet.devices d
      LEFT JOIN fleet.device_templates t ON t.id = d.template_id
      LEFT JOIN fleet.organizations o ON o.id = d.organization_id
     GROUP BY d.template_id, t.display_name, d.organization_id, o.display_name, d.edge, d.simulated;
COMMENT ON VIEW fleet.device_inventory IS 'Device counts by template, organization, IoT Edge and simulated';
COMMENT ON COLUMN fleet.device_inventory.template_id IS 'The device template (NULL: devices without one)';
COMMENT ON COLUMN fleet.device_inventory.template_name IS 'The template''s display name';
COMMENT ON COLUMN fleet.device_inventory.organization_id IS 'The organization the devices belong to';
COMMENT ON COLUMN fleet.device_inventory.organization_name IS 'The organization''s display name';
COMMENT ON COLUMN fleet.device_inventory.edge IS 'True for IoT Edge devices';
COMMENT ON COLUMN fleet.device_inventory.simulated IS 'True for simulated devices';
COMMENT ON COLUMN fleet.device_inventory.devices IS 'How many devices';
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

CREATE TABLE fleet.organization_members (
    organization_id text NOT NULL REFERENCES fleet.organizations (id) ON DELETE CASCADE,
    member          regrole NOT NULL,
    app_role        text NOT NULL CHECK (app_role IN ('administrator', 'operator', 'viewer')),
    granted_by      name NOT NULL,
    granted_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (organization_id, member)
);
COMMENT ON TABLE fleet.organization_members IS 'Who holds which application role (administrator, operator, viewer) in which organization; a member sees only its own rows';

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
-- pg_dump keeps user data of extension tables only when asked: register
-- every table that holds user data, and the sequences behind them.
SELECT pg_catalog.pg_extension_config_dump('fleet.organizations', 'WHERE id <> ''root''');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_templates', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.template_contents', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.edge_manifests', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.devices', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_groups', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.enrollment_groups', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_operations', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_operations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.device_operation_errors', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_batches', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_devices', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.job_device_list_columns', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.command_windows', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.delivery_blocks', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.scheduled_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.scheduled_job_runs', '');
SELECT pg_catalog.pg_extension_config_dump('fleet.organization_members', '');
