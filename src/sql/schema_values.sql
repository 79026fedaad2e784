-- Does a JSON value match a DTDL schema (as stored in template_contents,
-- resolved)?  Jobs check every value they will write, at creation, so a job
-- that can never succeed is refused instead of run.

-- NULL when value matches schema (and IoT Central's min/max), else what is
-- wrong, naming where inside the value.
CREATE FUNCTION fleet_internal.schema_value_problem(value jsonb, schema jsonb, min_value numeric DEFAULT NULL,
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

    types := fleet_internal.dtdl_types(schema -> '@type', 'a stored schema');
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
            problem := fleet_internal.schema_value_problem(value -> field.name, field.schema, NULL, NULL,
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
            problem := fleet_internal.schema_value_problem(field.value, schema #> '{mapValue,schema}', NULL, NULL,
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
            problem := fleet_internal.schema_value_problem(element, schema -> 'elementSchema', NULL, NULL,
                                                  format('element %s of %s', n, place));
            IF problem IS NOT NULL THEN
                RETURN problem;
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION fleet_internal.schema_value_problem(jsonb, jsonb, numeric, numeric, text) IS 'NULL when the JSON value matches the DTDL schema and range, else what is wrong';
