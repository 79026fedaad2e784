-- Device templates from DTDL v2 models, as IoT Central and the Azure IoT
-- model repository write them.  Each Interface is one row; its contents are
-- rows of fleet.template_contents with their schemas resolved, and the view
-- fleet.template_capabilities lists what a device of a template can do,
-- component by component.  Validation happens once, at import, so jobs can
-- trust what they find here.


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
CREATE FUNCTION fleet_internal.dtdl_types(type jsonb, what text)
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
CREATE FUNCTION fleet_internal.dtdl_text(value jsonb, what text)
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

CREATE FUNCTION fleet_internal.dtdl_check_name(value jsonb, what text)
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

CREATE FUNCTION fleet_internal.dtdl_is_dtmi(id text)
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
CREATE FUNCTION fleet_internal.dtdl_schema(schema jsonb, what text, local_schemas jsonb)
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

    types := fleet_internal.dtdl_types(schema -> '@type', 'the schema of ' || what);

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
            label := fleet_internal.dtdl_check_name(element -> 'name', format('enum value %s of %s', i, what));
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
            label := fleet_internal.dtdl_check_name(element -> 'name', format('field %s of %s', i, what));
            IF label = ANY (names) THEN
                RAISE EXCEPTION 'the Object of % has two fields named "%"', what, label
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            names := names || label;
            resolved := fleet_internal.dtdl_schema(element -> 'schema', format('field "%s" of %s', label, what), local_schemas);
            elements := elements || jsonb_build_array(jsonb_set(element, '{schema}', resolved));
        END LOOP;
        RETURN jsonb_set(schema, '{fields}', elements);
    ELSIF 'Map' = ANY (types) THEN
        IF jsonb_typeof(schema -> 'mapKey') <> 'object' OR schema #>> '{mapKey,schema}' IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'the Map of % needs a mapKey with schema "string"', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM fleet_internal.dtdl_check_name(schema #> '{mapKey,name}', format('the mapKey of %s', what));
        IF jsonb_typeof(schema -> 'mapValue') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'the Map of % has no mapValue', what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Add "mapValue": {"name": "value", "schema": "string"}.';
        END IF;
        PERFORM fleet_internal.dtdl_check_name(schema #> '{mapValue,name}', format('the mapValue of %s', what));
        resolved := fleet_internal.dtdl_schema(schema #> '{mapValue,schema}', format('the mapValue of %s', what), local_schemas);
        RETURN jsonb_set(schema, '{mapValue,schema}', resolved);
    ELSIF 'Array' = ANY (types) THEN
        resolved := fleet_internal.dtdl_schema(schema -> 'elementSchema', format('the elements of %s', what), local_schemas);
        RETURN jsonb_set(schema, '{elementSchema}', resolved);
    END IF;

    RAISE EXCEPTION 'unknown schema type % in %', schema -> '@type', what
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Complex schemas are Enum, Object, Map or Array.';
END;
$$;

-- Validates one Interface and returns its contents as rows.  Component
-- references are checked by the caller, which knows the whole model.
CREATE FUNCTION fleet_internal.dtdl_interface_contents(interface jsonb, what text)
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
    declared      text[];
    pending       jsonb;
    waiting       jsonb;
BEGIN
    IF jsonb_typeof(interface) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% is not a JSON object', what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A device template is a DTDL v2 Interface object, or an array of them.';
    END IF;

    types := fleet_internal.dtdl_types(interface -> '@type', what);
    IF NOT 'Interface' = ANY (types) THEN
        RAISE EXCEPTION '% is not a DTDL Interface', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Its "@type" is %s.', interface -> '@type'),
                  HINT = 'A device template is a DTDL v2 Interface, or an array of Interfaces joined by Components.';
    END IF;

    id := interface ->> '@id';
    IF jsonb_typeof(interface -> '@id') IS DISTINCT FROM 'string' OR NOT fleet_internal.dtdl_is_dtmi(id) THEN
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

    -- "extends": by now (fleet_internal.dtdl_hoist_inline) DTMIs only;
    -- import_template() adds the inherited contents
    IF interface ? 'extends' AND EXISTS (
           SELECT 1 FROM jsonb_array_elements(CASE jsonb_typeof(interface -> 'extends') WHEN 'array' THEN interface -> 'extends'
                                                   ELSE jsonb_build_array(interface -> 'extends') END) e
            WHERE jsonb_typeof(e) <> 'string' OR NOT fleet_internal.dtdl_is_dtmi(e #>> '{}')) THEN
        RAISE EXCEPTION '"extends" of % is not an interface, a DTMI, or an array of them', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', interface -> 'extends');
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
            IF jsonb_typeof(element -> '@id') IS DISTINCT FROM 'string' OR NOT fleet_internal.dtdl_is_dtmi(element ->> '@id') THEN
                RAISE EXCEPTION 'a schema declared by % has a malformed DTMI %', what, coalesce(element -> '@id', '"(missing @id)"')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
        -- a schema may name one declared after it: resolve those whose
        -- references are resolved, round after round (DTDL forbids cycles)
        declared := ARRAY(SELECT e ->> '@id' FROM jsonb_array_elements(interface -> 'schemas') e);
        pending := interface -> 'schemas';
        WHILE jsonb_array_length(pending) > 0 LOOP
            waiting := '[]';
            FOR element IN SELECT e FROM jsonb_array_elements(pending) e LOOP
                IF EXISTS (SELECT 1 FROM jsonb_path_query(element - '@id', 'strict $.**') r
                            WHERE jsonb_typeof(r) = 'string' AND (r #>> '{}') = ANY (declared)
                              AND NOT local_schemas ? (r #>> '{}')) THEN
                    waiting := waiting || jsonb_build_array(element);
                ELSE
                    local_schemas := local_schemas || jsonb_build_object(
                        element ->> '@id',
                        fleet_internal.dtdl_schema(element - '@id', format('schema "%s" of %s', element ->> '@id', what), local_schemas));
                END IF;
            END LOOP;
            IF jsonb_array_length(waiting) = jsonb_array_length(pending) THEN
                RAISE EXCEPTION 'the schemas % of % refer to each other in a cycle', waiting::text, what
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'DTDL schemas cannot be recursive.';
            END IF;
            pending := waiting;
        END LOOP;
    END IF;

    FOR element IN SELECT e FROM jsonb_array_elements(coalesce(interface -> 'contents', '[]')) e LOOP
        i := i + 1;
        content_what := format('content %s of %s', i, what);
        IF jsonb_typeof(element) <> 'object' THEN
            RAISE EXCEPTION '% is not a JSON object', content_what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        types := fleet_internal.dtdl_types(element -> '@type', content_what);
        item := NULL;
        item.template_id := id;
        item.name := fleet_internal.dtdl_check_name(element -> 'name', content_what);
        content_what := format('content "%s" of %s', item.name, what);
        IF item.name = ANY (names) THEN
            RAISE EXCEPTION '% has two contents named "%"', what, item.name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Names must be unique within an interface.';
        END IF;
        names := names || item.name;

        -- (IoT Central's own templates give contents URN ids, as DTDL v1
        -- did: nothing refers to a content by its id, so any string will do)
        IF element ? '@id' AND jsonb_typeof(element -> '@id') <> 'string' THEN
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
        item.display_name := fleet_internal.dtdl_text(element -> 'displayName', format('the displayName of %s', content_what));

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
            item.schema := fleet_internal.dtdl_schema(element -> 'schema', content_what, local_schemas);
        ELSIF item.capability = 'command' THEN
            FOREACH kind IN ARRAY ARRAY['request', 'response'] LOOP
                CONTINUE WHEN NOT element ? kind;
                IF jsonb_typeof(element -> kind) <> 'object' THEN
                    RAISE EXCEPTION 'the % of command % is not an object', kind, content_what
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                PERFORM fleet_internal.dtdl_check_name(element -> kind -> 'name', format('the %s of command %s', kind, content_what));
                IF kind = 'request' THEN
                    item.request := jsonb_set(element -> kind, '{schema}',
                        fleet_internal.dtdl_schema(element -> kind -> 'schema', format('the request of command %s', content_what), local_schemas));
                ELSE
                    item.response := jsonb_set(element -> kind, '{schema}',
                        fleet_internal.dtdl_schema(element -> kind -> 'schema', format('the response of command %s', content_what), local_schemas));
                END IF;
            END LOOP;
        ELSIF item.capability = 'component' THEN
            IF jsonb_typeof(element -> 'schema') IS DISTINCT FROM 'string' OR NOT fleet_internal.dtdl_is_dtmi(element ->> 'schema') THEN
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

-- DTDL lets an interface hold others inline: as "extends" entries and as
-- the schema of a Component.  Returns an array: the interface with each
-- inline one replaced by its @id, then the inline ones (and theirs), each
-- given the "@context" of the interface that holds it, as DTDL says.
CREATE FUNCTION fleet_internal.dtdl_hoist_inline(interface jsonb, context jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    hoisted  jsonb := '[]';
    ctx      jsonb := coalesce(interface -> '@context', context);
    element  jsonb;
    inline   jsonb;
    replaced jsonb := '[]';
BEGIN
    IF jsonb_typeof(interface) IS DISTINCT FROM 'object' THEN
        RETURN jsonb_build_array(interface);            -- refused with its reason later
    END IF;
    IF ctx IS NOT NULL AND NOT interface ? '@context' THEN
        interface := interface || jsonb_build_object('@context', ctx);
    END IF;
    -- an inline interface with IoT Central's URN id is parsed under a DTMI
    -- made from it (nothing outside its holder names it)
    IF context IS NOT NULL AND jsonb_typeof(interface -> '@id') = 'string' AND NOT fleet_internal.dtdl_is_dtmi(interface ->> '@id') THEN
        interface := jsonb_set(interface, '{@id}', to_jsonb('dtmi:iotcentral:inline:i' || md5(interface ->> '@id') || ';1'));
    END IF;
    IF jsonb_typeof(interface -> 'extends') IN ('object', 'array') THEN
        FOR element IN SELECT e FROM jsonb_array_elements(CASE jsonb_typeof(interface -> 'extends') WHEN 'array'
                                                            THEN interface -> 'extends'
                                                            ELSE jsonb_build_array(interface -> 'extends') END) e LOOP
            IF jsonb_typeof(element) = 'object' THEN
                IF jsonb_typeof(element -> '@id') IS DISTINCT FROM 'string' THEN
                    RAISE EXCEPTION 'an interface inline in "extends" of interface % has no "@id"', coalesce(interface -> '@id', '"(missing @id)"')
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'Give the extended interface a DTMI as "@id".';
                END IF;
                inline := fleet_internal.dtdl_hoist_inline(element, coalesce(ctx, '"dtmi:dtdl:context;2"'));
                hoisted := hoisted || inline;
                element := inline -> 0 -> '@id';
            END IF;
            replaced := replaced || jsonb_build_array(element);
        END LOOP;
        interface := jsonb_set(interface, '{extends}', replaced);
    END IF;
    IF jsonb_typeof(interface -> 'contents') = 'array' THEN
        replaced := '[]';
        FOR element IN SELECT e FROM jsonb_array_elements(interface -> 'contents') e LOOP
            inline := CASE WHEN jsonb_typeof(element) = 'object' THEN element -> 'schema' END;
            IF jsonb_typeof(inline) = 'object' AND (inline -> '@type' = '"Interface"' OR inline -> '@type' @> '["Interface"]') THEN
                -- an inline component interface without an @id gets one
                -- from its holder and the component's name
                IF NOT inline ? '@id' AND jsonb_typeof(interface -> '@id') = 'string' AND jsonb_typeof(element -> 'name') = 'string' THEN
                    inline := inline || jsonb_build_object('@id',
                        split_part(interface ->> '@id', ';', 1) || ':inline_' || (element ->> 'name') || ';'
                        || coalesce(nullif(split_part(interface ->> '@id', ';', 2), ''), '1'));
                END IF;
                inline := fleet_internal.dtdl_hoist_inline(inline, coalesce(ctx, '"dtmi:dtdl:context;2"'));
                hoisted := hoisted || inline;
                element := jsonb_set(element, '{schema}', coalesce(inline -> 0 -> '@id', 'null'));
            END IF;
            replaced := replaced || jsonb_build_array(element);
        END LOOP;
        interface := jsonb_set(interface, '{contents}', replaced);
    END IF;
    RETURN jsonb_build_array(interface) || hoisted;
END;
$$;

-- Imports a device template.  Three forms are taken:
--  * a DTDL v2 Interface, as the model repository writes one;
--  * an array of Interfaces joined by Components (the repository's
--    expanded form);
--  * IoT Central's device template, which wraps the model:
--    {"@id", "@type": ["ModelDefinition", "DeviceModel"], "displayName",
--    "capabilityModel": {...}}; its id (template_id, as REST's PUT
--    /deviceTemplates/{id} takes it from the URL, else its "@id"; often not
--    a versioned DTMI) is what jobs, groups and devices name, distinct from
--    its interfaces' ids, and a model without "@context" is DTDL v2.
-- Inline interfaces ("extends" entries, component schemas) are imported as
-- interfaces of their own; an interface gets the contents of those it
-- extends, and a name declared twice along the way is refused, as DTDL
-- says.
-- A DTDL v1 schema as DTDL v2 has it: an Enum gains the valueSchema v1
-- left out (integer when every value is one, else string).
CREATE FUNCTION fleet_internal.dtdl_v1_schema(schema jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- a schema named by its URN: the DTMI its declaration was given
    IF jsonb_typeof(schema) = 'string' AND (schema #>> '{}') ~ '^urn:' THEN
        RETURN to_jsonb(fleet_internal.dtdl_v1_id(schema #>> '{}'));
    END IF;
    IF jsonb_typeof(schema) IS DISTINCT FROM 'object' THEN
        RETURN schema;
    END IF;
    IF jsonb_typeof(schema -> '@id') = 'string' AND NOT fleet_internal.dtdl_is_dtmi(schema ->> '@id') THEN
        schema := jsonb_set(schema, '{@id}', to_jsonb(fleet_internal.dtdl_v1_id(schema ->> '@id')));
    END IF;
    -- (an inline interface, in a body part v1 and part v2)
    IF schema -> '@type' = '"Interface"' OR schema -> '@type' @> '["Interface"]' THEN
        RETURN schema || jsonb_build_object('contents', fleet_internal.dtdl_v1_contents(schema -> 'contents'))
               || CASE WHEN jsonb_typeof(schema -> 'schemas') = 'array'
                       THEN jsonb_build_object('schemas', (SELECT jsonb_agg(fleet_internal.dtdl_v1_schema(x) ORDER BY n)
                                                             FROM jsonb_array_elements(schema -> 'schemas') WITH ORDINALITY y(x, n)))
                       ELSE '{}' END;
    END IF;
    IF (schema -> '@type' = '"Enum"' OR schema -> '@type' @> '["Enum"]') AND NOT schema ? 'valueSchema' THEN
        schema := schema || jsonb_build_object('valueSchema',
            CASE WHEN NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(schema -> 'enumValues', '[]')) v
                                   WHERE jsonb_typeof(v -> 'enumValue') <> 'number') THEN 'integer' ELSE 'string' END);
    END IF;
    IF jsonb_typeof(schema -> 'fields') = 'array' THEN
        schema := jsonb_set(schema, '{fields}', (SELECT coalesce(jsonb_agg(CASE WHEN f ? 'schema'
                                                                                THEN jsonb_set(f, '{schema}', fleet_internal.dtdl_v1_schema(f -> 'schema'))
                                                                                ELSE f END ORDER BY n), '[]')
                                                   FROM jsonb_array_elements(schema -> 'fields') WITH ORDINALITY x(f, n)));
    END IF;
    IF schema ? 'elementSchema' THEN
        schema := jsonb_set(schema, '{elementSchema}', fleet_internal.dtdl_v1_schema(schema -> 'elementSchema'));
    END IF;
    IF jsonb_typeof(schema -> 'mapValue') = 'object' AND schema -> 'mapValue' ? 'schema' THEN
        schema := jsonb_set(schema, '{mapValue,schema}', fleet_internal.dtdl_v1_schema(schema #> '{mapValue,schema}'));
    END IF;
    RETURN schema;
END;
$$;

-- The DTMI a DTDL v1 URN id is read under (v2 ids are DTMIs).
CREATE FUNCTION fleet_internal.dtdl_v1_id(urn text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'dtmi:iotcentral:v1:u' || md5(urn) || ';1' $$;

-- A DTDL v1 interface (or the contents of a capability model) as DTDL v2:
-- "SemanticType/X" types become X, a URN id a DTMI of its own (v2 ids are
-- DTMIs), schemas as dtdl_v1_schema().
CREATE FUNCTION fleet_internal.dtdl_v1_contents(contents jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(
        c || CASE WHEN c ? '@type'
                  THEN jsonb_build_object('@type', (SELECT jsonb_agg(regexp_replace(t, '^SemanticType/', '') ORDER BY n)
                                                      FROM jsonb_array_elements_text(CASE jsonb_typeof(c -> '@type') WHEN 'array' THEN c -> '@type'
                                                                                          ELSE jsonb_build_array(c -> '@type') END)
                                                           WITH ORDINALITY y(t, n)))
                  ELSE '{}' END
          || CASE WHEN c ? 'schema' THEN jsonb_build_object('schema', fleet_internal.dtdl_v1_schema(c -> 'schema')) ELSE '{}' END
          || CASE WHEN jsonb_typeof(c -> 'request') = 'object' AND c -> 'request' ? 'schema'
                  THEN jsonb_build_object('request', jsonb_set(c -> 'request', '{schema}', fleet_internal.dtdl_v1_schema(c #> '{request,schema}')))
                  ELSE '{}' END
          || CASE WHEN jsonb_typeof(c -> 'response') = 'object' AND c -> 'response' ? 'schema'
                  THEN jsonb_build_object('response', jsonb_set(c -> 'response', '{schema}', fleet_internal.dtdl_v1_schema(c #> '{response,schema}')))
                  ELSE '{}' END
        ORDER BY n), '[]')
      FROM jsonb_array_elements(CASE WHEN jsonb_typeof(contents) = 'array' THEN contents ELSE '[]' END) WITH ORDINALITY x(c, n)
$$;

-- IoT Central's DTDL v1 capability model (its preview API's templates) as
-- the DTDL v2 interface it became: each interface it "implements" a
-- Component of that name, inline interfaces with DTMIs made from their URN
-- ids, contents as dtdl_v1_contents().
CREATE FUNCTION fleet_internal.dtdl_v1_capability_model(model jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (model - '{@type,@context,implements,contents,schemas}'::text[])
           || jsonb_build_object(
                  '@type', 'Interface',
                  '@context', '["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"]'::jsonb,
                  'contents', fleet_internal.dtdl_v1_contents(model -> 'contents')
                              || coalesce((SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                                               '@type', 'Component', 'name', i -> 'name', 'displayName', i -> 'displayName',
                                               -- (an interface without an id gets one of its model and name,
                                               -- so two templates' "info" interfaces stay apart)
                                               'schema', fleet_internal.dtdl_v1_schema(
                                                             CASE WHEN jsonb_typeof(i -> 'schema') = 'object'
                                                                  THEN (i -> 'schema')
                                                                       || jsonb_build_object('@type', 'Interface',
                                                                                             '@id', coalesce(i #>> '{schema,@id}',
                                                                                                             (model ->> '@id') || '/' || (i ->> 'name')))
                                                                  ELSE i -> 'schema' END))) ORDER BY n)
                                             FROM jsonb_array_elements(CASE WHEN jsonb_typeof(model -> 'implements') = 'array'
                                                                            THEN model -> 'implements' ELSE '[]' END) WITH ORDINALITY x(i, n)),
                                           '[]'))
           || CASE WHEN jsonb_typeof(model -> 'schemas') = 'array'
                   THEN jsonb_build_object('schemas', (SELECT jsonb_agg(fleet_internal.dtdl_v1_schema(x) ORDER BY n)
                                                         FROM jsonb_array_elements(model -> 'schemas') WITH ORDINALITY y(x, n)))
                   ELSE '{}' END
$$;

CREATE FUNCTION fleet.import_template(model jsonb, template_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
-- SECURITY DEFINER, as every function that writes (src/sql/access.sql);
-- for root's administrators, checked first.  Without JIT: the planner
-- guesses 100 rows per JSON array, and compiling the "extends" queries
-- for that guess took 1.5 s of each import of a handful of rows.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    wrapped     boolean := jsonb_typeof(model) = 'object' AND model ? 'capabilityModel';
    given       jsonb;          -- the interfaces as given
    interfaces  jsonb := '[]';  -- as parsed: inline ones hoisted
    stored      jsonb := '[]';  -- as each row keeps it
    interface   jsonb;
    n_interface int := 0;
    ids         text[] := '{}';
    contents    fleet.template_contents[] := '{}';
    root        text;
    problem     record;
    existing    jsonb;
    v2_context  jsonb;
    edges       jsonb;                            -- [{child, parent}]: what "extends" names
    ancestors   jsonb;                            -- [{child, parent, depth}]: what each one inherits from
    inherited   fleet.template_contents[];
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'importing a device template');
    IF wrapped THEN
        PERFORM fleet_internal.refuse_unknown_keys(model,
            '{@id,@type,@context,displayName,description,capabilityModel,etag,id,deploymentManifest,types,solutionModel}',
            'the device template');
        -- IoT Central's preview API held DTDL v1 capability models: read as
        -- the DTDL v2 they became when IoT Central moved its templates on
        IF model #> '{capabilityModel,@type}' IN ('"CapabilityModel"', '["CapabilityModel"]')
           OR model #> '{capabilityModel,@context}' @> '["http://azureiot.com/v1/contexts/IoTModel.json"]' THEN
            model := jsonb_set(model, '{capabilityModel}', fleet_internal.dtdl_v1_capability_model(model -> 'capabilityModel'));
        END IF;
        -- IoT Central's 1.0 API wrote "id" and "types" for "@id" and
        -- "@type", with a "solutionModel" beside the model: taken when it
        -- holds nothing (its cloud properties and overrides moved into the
        -- model since)
        IF model ? 'solutionModel'
           AND (jsonb_typeof(model -> 'solutionModel') IS DISTINCT FROM 'object'
                OR EXISTS (SELECT 1 FROM jsonb_each(model -> 'solutionModel') e
                            WHERE e.key NOT IN ('@id', '@type')
                              AND e.value NOT IN ('[]', '{}', 'null'))) THEN
            RAISE EXCEPTION 'the solutionModel of the device template has content'
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'IoT Central''s 1.0 API kept cloud properties, initial values and overrides there.',
                      HINT = 'Get the template with IoT Central''s REST API 2022-05-31 or later, where they are in the capabilityModel.';
        END IF;
        IF model ? 'types' AND NOT model ? '@type' THEN
            model := model || jsonb_build_object('@type', model -> 'types');
        END IF;
        IF model ? 'id' AND NOT model ? '@id' AND jsonb_typeof(model -> 'id') = 'string' THEN
            model := model || jsonb_build_object('@id', model -> 'id');
        END IF;
        model := model - '{types,solutionModel}'::text[];
        IF template_id IS NULL AND jsonb_typeof(model -> '@id') = 'string' THEN
            template_id := model ->> '@id';
        END IF;
        IF template_id IS NULL OR template_id !~ '^[^[:space:]]{1,255}$' THEN
            RAISE EXCEPTION 'device template id % is not an id', coalesce(quote_literal(template_id), '(missing)')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass template_id, or give the template an "@id": 1 to 255 characters without spaces, such as "dtmi:modelDefinition:thermostat".';
        END IF;
        IF jsonb_typeof(model -> 'capabilityModel') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'the "capabilityModel" of device template "%" is not an Interface object', template_id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- IoT Central's templates are DTDL v2 with its extensions
        v2_context := coalesce(model -> '@context', '["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"]');
        given := jsonb_build_array(model -> 'capabilityModel');
        -- its capabilityModel's id is not what anything names (the template
        -- id is): IoT Central keeps URN ids there, which are parsed under a
        -- DTMI of the template's
        IF jsonb_typeof(given #> '{0,@id}') = 'string' AND NOT fleet_internal.dtdl_is_dtmi(given #>> '{0,@id}') THEN
            given := jsonb_set(given, '{0,@id}', to_jsonb('dtmi:iotcentral:template:t' || md5(template_id) || ';1'));
        END IF;
    ELSE
        IF template_id IS NOT NULL THEN
            RAISE EXCEPTION 'a DTDL Interface is its own template: its id is its "@id"'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave template_id out, or wrap the model as IoT Central does: {"@type": ["ModelDefinition", "DeviceModel"], "capabilityModel": ...}.';
        END IF;
        CASE jsonb_typeof(model)
        WHEN 'object' THEN
            given := jsonb_build_array(model);
        WHEN 'array' THEN
            given := model;
        ELSE
            RAISE EXCEPTION 'a DTDL model must be an Interface object or an array of Interfaces'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('The model is %s.', coalesce(jsonb_typeof(model), 'NULL')),
                      HINT = 'Pass the JSON of the model file, for example fleet.import_template(pg_read_file(''thermostat-1.json'')::jsonb), or IoT Central''s device template.';
        END CASE;
    END IF;
    IF jsonb_array_length(given) = 0 THEN
        RAISE EXCEPTION 'the DTDL model is an empty array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass at least one Interface.';
    END IF;

    SELECT e ->> '@id' AS id INTO problem FROM jsonb_array_elements(given) e
     WHERE jsonb_typeof(e -> '@id') = 'string' GROUP BY e ->> '@id' HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'interface "%" appears twice in the model', problem.id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- inline interfaces become interfaces of their own; a top-level one is
    -- kept as given, an inline one as hoisted
    -- (an inline interface met twice, extended along two paths, is kept
    -- once; the same id with other content is refused below)
    FOR interface IN SELECT e FROM jsonb_array_elements(given) e LOOP
        existing := fleet_internal.dtdl_hoist_inline(interface, v2_context);
        interfaces := interfaces || (existing -> 0);
        stored := stored || jsonb_build_array(interface);
        FOR n_interface IN 1 .. jsonb_array_length(existing) - 1 LOOP
            CONTINUE WHEN EXISTS (SELECT 1 FROM jsonb_array_elements(interfaces) e WHERE e = existing -> n_interface);
            interfaces := interfaces || (existing -> n_interface);
            stored := stored || (existing -> n_interface);
        END LOOP;
    END LOOP;
    n_interface := 0;

    FOR interface IN SELECT e FROM jsonb_array_elements(interfaces) e LOOP
        n_interface := n_interface + 1;
        contents := contents || ARRAY(
            SELECT c FROM fleet_internal.dtdl_interface_contents(
                interface,
                CASE WHEN wrapped AND n_interface = 1 THEN format('the capabilityModel of device template "%s"', template_id)
                     WHEN jsonb_typeof(model) = 'array' THEN format('element %s of the model array', n_interface)
                     WHEN n_interface > 1 THEN format('inline interface %s of the model', coalesce(interface -> '@id', '"(missing @id)"'))
                     ELSE 'the model' END) c);
        IF (interface ->> '@id') = ANY (ids) THEN
            RAISE EXCEPTION 'interface "%" appears twice in the model', interface ->> '@id'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        ids := ids || (interface ->> '@id');
    END LOOP;

    -- "extends": every interface named is in this model or imported, and
    -- the extended contents, theirs included (ten levels at most), are
    -- the extending interface's too
    edges := coalesce((SELECT jsonb_agg(jsonb_build_object('child', i ->> '@id', 'parent', e))
                         FROM jsonb_array_elements(interfaces) i,
                              jsonb_array_elements_text(CASE jsonb_typeof(i -> 'extends') WHEN 'array' THEN i -> 'extends'
                                                             WHEN 'string' THEN jsonb_build_array(i -> 'extends') ELSE '[]' END) e),
                      '[]');
    SELECT x.child AS interface, x.parent AS extended INTO problem
      FROM jsonb_to_recordset(edges) AS x(child text, parent text)
     WHERE x.parent <> ALL (ids) AND NOT EXISTS (SELECT 1 FROM fleet.device_templates t WHERE t.id = x.parent)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'interface "%" extends unknown interface "%"', problem.interface, problem.extended
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Include that interface in the same array, or import it first.';
    END IF;
    -- every interface each one extends, directly or not (a cycle stops at
    -- the eleventh level, and is refused there)
    ancestors := coalesce((
        WITH RECURSIVE edge AS (
            SELECT x.child, x.parent FROM jsonb_to_recordset(edges) AS x(child text, parent text)
        ), ancestor AS (
            SELECT e.child, e.parent, 1 AS depth FROM edge e
            UNION
            SELECT a.child, e.parent, a.depth + 1 FROM ancestor a JOIN edge e ON e.child = a.parent
             WHERE a.depth <= 10 AND a.child <> a.parent
        )
        SELECT jsonb_agg(to_jsonb(a)) FROM ancestor a), '[]');
    SELECT a.child INTO problem
      FROM jsonb_to_recordset(ancestors) AS a(child text, parent text, depth int)
     WHERE a.child = a.parent OR a.depth > 10
     ORDER BY a.child
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'interface "%" extends itself, or more than 10 levels deep', problem.child
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'DTDL allows "extends" chains without cycles, at most 10 deep.';
    END IF;
    -- what each interface inherits, as rows of its own: an ancestor of this
    -- model gives its own contents, an imported one its rows (which hold
    -- what it inherited); every distinct definition of a name is kept, for
    -- the check below
    inherited := ARRAY(
        SELECT DISTINCT jsonb_populate_record(NULL::fleet.template_contents,
                                              to_jsonb(c) || jsonb_build_object('template_id', a.child))
          FROM (SELECT DISTINCT x.child, x.parent
                  FROM jsonb_to_recordset(ancestors) AS x(child text, parent text)) a,
               LATERAL (SELECT o.* FROM unnest(contents) o WHERE o.template_id = a.parent
                        UNION ALL
                        SELECT t.* FROM fleet.template_contents t
                         WHERE t.template_id = a.parent AND a.parent <> ALL (ids)) c);
    SELECT c.template_id AS child, c.name INTO problem
      FROM unnest(contents || inherited) c
     GROUP BY c.template_id, c.name
    HAVING count(DISTINCT (to_jsonb(c) - 'template_id')) > 1
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'interface "%" declares "%" more than once through "extends"', problem.child, problem.name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'DTDL names are unique across an interface and the interfaces it extends: rename one of them.';
    END IF;
    contents := contents || ARRAY(SELECT DISTINCT ON (h.template_id, h.name) h FROM unnest(inherited) h
                                   WHERE NOT EXISTS (SELECT 1 FROM unnest(contents) own
                                                      WHERE own.template_id = h.template_id AND own.name = h.name));

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

    -- the root: the first interface that no other one uses as a component
    -- or extends; a wrapped template's is its capabilityModel
    SELECT i.id INTO root
      FROM unnest(ids) WITH ORDINALITY AS i(id, n)
     WHERE NOT EXISTS (SELECT 1 FROM unnest(contents) c
                        WHERE c.capability = 'component' AND c.component_interface = i.id)
       AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(interfaces) x
                        WHERE x -> 'extends' = to_jsonb(i.id) OR x -> 'extends' @> jsonb_build_array(i.id))
     ORDER BY i.n
     LIMIT 1;
    IF root IS NULL THEN
        RAISE EXCEPTION 'the interfaces of the model use each other as components in a cycle'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF wrapped THEN
        -- the template is its own row, with its capabilityModel's contents
        root := interfaces -> 0 ->> '@id';
        IF import_template.template_id = ANY (ids) AND import_template.template_id <> root THEN
            RAISE EXCEPTION 'device template "%" has the id of one of its interfaces', template_id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        contents := ARRAY(SELECT jsonb_populate_record(NULL::fleet.template_contents,
                                                       to_jsonb(c) || jsonb_build_object('template_id', import_template.template_id))
                            FROM unnest(contents) c WHERE c.template_id = root)
                    || ARRAY(SELECT c FROM unnest(contents) c WHERE c.template_id <> root);
        ids[1] := template_id;
        stored := jsonb_set(stored, '{0}', model || jsonb_build_object('@id', template_id));
        interfaces := jsonb_set(interfaces, '{0}', model || jsonb_strip_nulls(jsonb_build_object(
            'displayName', coalesce(model -> 'displayName', model #> '{capabilityModel,displayName}'),
            'description', coalesce(model -> 'description', model #> '{capabilityModel,description}'))));
        root := template_id;
    END IF;

    -- models are immutable: a re-import must be identical
    FOR n_interface IN 1 .. cardinality(ids) LOOP
        SELECT t.model INTO existing FROM fleet.device_templates t WHERE t.id = ids[n_interface];
        IF FOUND AND existing <> stored -> (n_interface - 1) THEN
            RAISE EXCEPTION 'device template "%" already exists with different content', ids[n_interface]
                USING ERRCODE = 'duplicate_object',
                      HINT = 'DTDL models are immutable: import the changed model under a new version, for example ";2" instead of ";1".';
        END IF;
    END LOOP;

    INSERT INTO fleet.device_templates (id, display_name, description, model)
    SELECT i.id,
           fleet_internal.dtdl_text(interfaces -> (i.n::int - 1) -> 'displayName', format('the displayName of "%s"', i.id)),
           fleet_internal.dtdl_text(interfaces -> (i.n::int - 1) -> 'description', format('the description of "%s"', i.id)),
           stored -> (i.n::int - 1)
      FROM unnest(ids) WITH ORDINALITY AS i(id, n)
    ON CONFLICT (id) DO NOTHING;

    INSERT INTO fleet.template_contents
    SELECT c.* FROM unnest(contents) c
    ON CONFLICT ON CONSTRAINT template_contents_pkey DO NOTHING;

    RETURN fleet.get_template(root);
END;
$$;

COMMENT ON FUNCTION fleet.import_template(jsonb, text) IS 'Imports a DTDL v2 Interface, an array of Interfaces joined by Components, or IoT Central''s device template ({"@id", "@type", "displayName", "capabilityModel"}); returns the template as fleet.get_template() shows it';

-- The template, or "does not exist".  Templates are shared by the whole
-- application: everyone sees them.
CREATE FUNCTION fleet_internal.require_template(template text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.device_templates t WHERE t.id = template) THEN
        PERFORM fleet_internal.refuse_missing('device template', template,
            'Import it with fleet.import_template(), or see the existing ones in fleet.device_templates.');
    END IF;
    RETURN template;
END;
$$;

-- The template as IoT Central's REST API shows one: "@id", "@type",
-- displayName, description, its model as capabilityModel, and an etag; "id"
-- is pg_fleet's.  A template imported in IoT Central's form comes back as
-- it was given (a DTDL v1 one as the v2 it was read as, with the cloud
-- properties added since).
CREATE FUNCTION fleet.get_template(template_id text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(t.model -> 'capabilityModel') = 'object' THEN t.model
                ELSE jsonb_build_object('@type', '["ModelDefinition", "DeviceModel"]'::jsonb, 'capabilityModel', t.model) END
           || jsonb_strip_nulls(jsonb_build_object('@id', t.id, 'id', t.id, 'displayName', t.display_name,
                                                   'description', t.description,
                                                   'etag', fleet_internal.etag(jsonb_build_array(t.model, t.display_name, t.description))))
      FROM fleet.device_templates t
     WHERE t.id = fleet_internal.require_template(template_id)
$$;
COMMENT ON FUNCTION fleet.get_template(text) IS 'The device template as IoT Central''s REST API shows it: @id, @type, displayName, description, etag, and its DTDL model as capabilityModel';

-- Changes how a template is named ({"displayName", "description"}).  Its
-- model is immutable, as DTDL's are: import a new version to change it.
CREATE FUNCTION fleet.update_template(template_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    label text := format('device template "%s"', template_id);
    field text;
    current_template jsonb;
    new_model jsonb;
    added     jsonb;
    n_added   bigint;
    n_before  bigint;
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'changing a device template');
    PERFORM fleet_internal.require_template(template_id);
    -- IoT Central's PATCH is a merge patch of the template, often the whole
    -- of it: its model must stay the one it has, the rest is what changes
    -- (If-Match on "etag")
    PERFORM 1 FROM fleet.device_templates t WHERE t.id = update_template.template_id FOR UPDATE;
    IF jsonb_typeof(changes) = 'object' THEN
        current_template := fleet.get_template(template_id);
        PERFORM fleet_internal.require_etag(label, changes -> 'etag', current_template ->> 'etag');
        new_model := fleet_internal.json_merge_patch(current_template -> 'capabilityModel', changes -> 'capabilityModel');
        added := fleet_internal.added_cloud_properties(current_template -> 'capabilityModel', new_model);
        -- (only a template in IoT Central's form, which no other template
        -- uses as a component or extends: a DTDL interface is immutable,
        -- and what others copied of it would not change with it)
        IF changes ? 'capabilityModel' AND new_model IS DISTINCT FROM current_template -> 'capabilityModel'
           AND added IS NOT NULL
           AND (SELECT t.model ? 'capabilityModel' FROM fleet.device_templates t WHERE t.id = update_template.template_id)
           AND NOT EXISTS (SELECT 1 FROM fleet.template_contents c
                            WHERE c.component_interface = update_template.template_id AND c.template_id <> update_template.template_id)
           AND NOT EXISTS (SELECT 1 FROM fleet.device_templates t
                            WHERE t.id <> update_template.template_id
                              AND (t.model -> 'extends' = to_jsonb(update_template.template_id)
                                   OR t.model -> 'extends' @> jsonb_build_array(update_template.template_id)
                                   OR t.model #> '{capabilityModel,extends}' = to_jsonb(update_template.template_id)
                                   OR t.model #> '{capabilityModel,extends}' @> jsonb_build_array(update_template.template_id))) THEN
            -- cloud properties added, as IoT Central lets a published template
            -- have them: the device's model is the same.  (Those added are
            -- counted, not taken from ROW_COUNT: Citus counts the rows an
            -- INSERT ... SELECT sent, also those ON CONFLICT skipped.)
            SELECT count(*) INTO n_before FROM fleet.template_contents tc
             WHERE tc.template_id = update_template.template_id;
            INSERT INTO fleet.template_contents
            SELECT (jsonb_populate_record(NULL::fleet.template_contents,
                                          to_jsonb(c) || jsonb_build_object('template_id', update_template.template_id))).*
              FROM fleet_internal.dtdl_interface_contents(
                       -- (parsed as import_template parsed the model: under a DTMI
                       -- of the template's when its id is a URN, with its schemas)
                       jsonb_strip_nulls(jsonb_build_object(
                           '@id', CASE WHEN fleet_internal.dtdl_is_dtmi(new_model ->> '@id') THEN new_model ->> '@id'
                                       ELSE 'dtmi:iotcentral:template:t' || md5(template_id) || ';1' END,
                           '@type', 'Interface',
                           '@context', coalesce(new_model -> '@context', current_template -> '@context',
                                                '["dtmi:iotcentral:context;2", "dtmi:dtdl:context;2"]'),
                           'schemas', new_model -> 'schemas',
                           'contents', added)),
                       format('the cloud properties added to %s', label)) c
            ON CONFLICT ON CONSTRAINT template_contents_pkey DO NOTHING;
            SELECT count(*) - n_before INTO n_added FROM fleet.template_contents tc
             WHERE tc.template_id = update_template.template_id;
            IF n_added < jsonb_array_length(added) THEN
                RAISE EXCEPTION 'a cloud property added to % has the name of one it has', label
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Names are unique in an interface: give the new cloud property another name.';
            END IF;
            UPDATE fleet.device_templates t SET model = jsonb_set(t.model, '{capabilityModel}', new_model)
             WHERE t.id = update_template.template_id;
        ELSIF changes ? 'capabilityModel' AND new_model IS DISTINCT FROM current_template -> 'capabilityModel' THEN
            RAISE EXCEPTION 'the model of % cannot change', label
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'Its capabilityModel differs from the one imported.',
                      HINT = 'DTDL models are immutable in pg_fleet (cloud properties may be added): import the changed model as a new template, and migrate devices to it with a deviceTemplateMigration job.';
        END IF;
        IF changes ? '@id' AND changes -> '@id' IS DISTINCT FROM to_jsonb(template_id) THEN
            RAISE EXCEPTION 'the id of % cannot change', label USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- (the DTDL context a body may carry is the model's, read-only here)
        changes := changes - '{@id,@type,@context,capabilityModel,etag,id}'::text[];
    END IF;
    PERFORM fleet_internal.require_changes(changes, '{displayName,description}', label);
    FOREACH field IN ARRAY ARRAY['displayName', 'description'] LOOP
        IF changes ? field AND jsonb_typeof(changes -> field) NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'the % of % must be a string', field, label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    UPDATE fleet.device_templates t
       SET display_name = CASE WHEN changes ? 'displayName' THEN changes ->> 'displayName' ELSE t.display_name END,
           description = CASE WHEN changes ? 'description' THEN changes ->> 'description' ELSE t.description END
     WHERE t.id = update_template.template_id;
    RETURN fleet.get_template(template_id);
END;
$$;
COMMENT ON FUNCTION fleet.update_template(text, jsonb) IS 'Changes a device template''s displayName or description, or adds cloud properties to IoT Central''s form of template (its device model is immutable), as a merge patch; returns it';

-- The cloud properties a new capabilityModel adds to an old one, when that
-- is all it changes (every other key and every old content the same, in
-- order, the new contents after them); else NULL.  Cloud properties are
-- the operator's, never the device's: IoT Central adds them to a
-- published template, whose device model stays as it was.
CREATE FUNCTION fleet_internal.added_cloud_properties(old_model jsonb, new_model jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(old_model) = 'object' AND jsonb_typeof(new_model) = 'object'
                     AND (old_model - 'contents') = (new_model - 'contents')
                     AND jsonb_typeof(coalesce(new_model -> 'contents', '[]')) = 'array'
                     AND jsonb_array_length(coalesce(new_model -> 'contents', '[]')) > jsonb_array_length(coalesce(old_model -> 'contents', '[]'))
                     -- the old contents, unchanged, first
                     AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(old_model -> 'contents', '[]')) WITH ORDINALITY o(e, n)
                                      WHERE new_model -> 'contents' -> (o.n::int - 1) IS DISTINCT FROM o.e)
                     -- then only cloud properties
                     AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(new_model -> 'contents') WITH ORDINALITY a(e, n)
                                      WHERE a.n > jsonb_array_length(coalesce(old_model -> 'contents', '[]'))
                                        AND NOT coalesce(a.e -> '@type' @> '["Cloud"]', false))
                THEN (SELECT jsonb_agg(a.e ORDER BY a.n)
                        FROM jsonb_array_elements(new_model -> 'contents') WITH ORDINALITY a(e, n)
                       WHERE a.n > jsonb_array_length(coalesce(old_model -> 'contents', '[]')))
           END
$$;

-- Deletes a template nothing uses: no device, device group, other
-- template (as a component), unfinished job or scheduled job.
CREATE FUNCTION fleet.delete_template(template_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    uses text[];
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'deleting a device template');
    PERFORM fleet_internal.require_template(template_id);
    PERFORM 1 FROM fleet.device_templates t WHERE t.id = delete_template.template_id FOR UPDATE;
    SELECT array_remove(ARRAY[
               (SELECT format('%s devices', count(*)) FROM fleet.devices d
                 WHERE d.template_id = delete_template.template_id HAVING count(*) > 0),
               (SELECT format('%s device groups', count(*)) FROM fleet.device_groups g
                 WHERE g.template_id = delete_template.template_id HAVING count(*) > 0),
               (SELECT format('%s templates, as a component', count(*)) FROM fleet.template_contents c
                 WHERE c.component_interface = delete_template.template_id
                   AND c.template_id <> delete_template.template_id HAVING count(*) > 0),
               (SELECT format('%s unfinished jobs', u.jobs) WHERE u.jobs > 0),
               (SELECT format('%s scheduled jobs', u.schedules) WHERE u.schedules > 0)], NULL)
      INTO uses
      FROM fleet_internal.job_data_users('{target,template}', delete_template.template_id) u;
    IF cardinality(uses) > 0 THEN
        PERFORM fleet_internal.refuse_in_use('device template', template_id,
            format('It is used by %s.', array_to_string(uses, ', ')), 'Delete or change those first.');
    END IF;
    DELETE FROM fleet.device_templates t WHERE t.id = delete_template.template_id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_template(text) IS 'Deletes a device template that no device, group, other template, unfinished job or scheduled job uses';
