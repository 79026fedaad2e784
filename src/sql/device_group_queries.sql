-- IoT Central's device group query language, translated to what pg_fleet
-- evaluates: a template (which narrows the scan) and a jsonpath predicate
-- over fleet.device_document().
--
--   SELECT * FROM devices WHERE $template = "dtmi:..." AND $provisioned = true
--     AND $simulated = false AND compressor.load > 20 AND CONTAINS($displayName, "hall")
--
-- Conditions are joined by AND or OR (without parentheses, as IoT Central
-- takes them); fields are $id, $displayName, $template, $simulated,
-- $provisioned, $organization, $connected, or a property as "name" or
-- "component.name" (its reported value, or its cloud property value);
-- operators =, ==, !=, <>, <, <=, >, >=, and CONTAINS(field, "text");
-- literals are strings in double or single quotes, numbers, true, false.
-- Anything else is refused with an error naming the part.


-- The query's tokens: quoted strings, operators, parentheses, commas and
-- words, in order.
CREATE FUNCTION fleet_internal.group_query_tokens(query text)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(m[1] ORDER BY n), '{}')
      FROM regexp_matches(query, '("(?:[^"\\]|\\.)*"|''(?:[^''\\]|\\.)*''|<>|[<>!=]=|==|[<>=]|[(),*]|[^\s"''<>!=(),*]+)', 'g')
           WITH ORDINALITY AS t(m, n)
$$;

-- A literal of the query as a jsonpath literal, or NULL when it is none.
CREATE FUNCTION fleet_internal.group_query_literal(token text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
           WHEN token ~ '^"(?:[^"\\]|\\.)*"$' THEN token
           WHEN token ~ '^''(?:[^''\\]|\\.)*''$'
               THEN to_jsonb(replace(substr(token, 2, length(token) - 2), '\''', ''''))::text
           WHEN lower(token) IN ('true', 'false', 'null') THEN lower(token)
           WHEN token ~ '^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$' THEN token
           END
$$;

-- A field of the query as the jsonpath of its value.
CREATE FUNCTION fleet_internal.group_query_field(token text, query text)
RETURNS text[]          -- the paths a property may be at
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE lower(token)
    WHEN '$id' THEN RETURN ARRAY['$.id'];
    WHEN '$displayname' THEN RETURN ARRAY['$.displayName'];
    WHEN '$template' THEN RETURN ARRAY['$.template'];
    WHEN '$simulated' THEN RETURN ARRAY['$.simulated'];
    WHEN '$provisioned' THEN RETURN ARRAY['$.provisioned'];
    WHEN '$organization' THEN RETURN ARRAY['$.organization'];
    WHEN '$connected' THEN RETURN ARRAY['$.connected'];
    ELSE
        NULL;
    END CASE;
    IF token ~ '^[A-Za-z][A-Za-z0-9_]{0,63}(\.[A-Za-z][A-Za-z0-9_]{0,63})?$' THEN
        -- a device reports a property; operators set a cloud property
        RETURN ARRAY['$.reported.' || token, '$.cloudProperties.' || token];
    END IF;
    RAISE EXCEPTION 'device group query field "%" is not supported', token
        USING ERRCODE = 'feature_not_supported',
              DETAIL = format('The query is: %s', query),
              HINT = 'Use $id, $displayName, $template, $simulated, $provisioned, $organization, $connected, or a property as "name" or "component.name".';
END;
$$;

-- Translates a query; template is set when the query asks for one
-- template in a condition every device must meet (then the scan narrows
-- to it), filter holds the rest (NULL: no condition left).
CREATE FUNCTION fleet_internal.group_query_translate(query text, OUT template text, OUT filter jsonpath)
RETURNS record
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tokens     text[] := fleet_internal.group_query_tokens(query);
    i          int := 5;
    joiner     text;
    joiners    text[] := '{}';
    conditions text[] := '{}';
    paths      text[];
    op         text;
    literal    text;
    condition  text;
    templates  text[] := '{}';
    template_at int[] := '{}';     -- where in conditions the template conditions are
BEGIN
    IF length(query) > 2000 THEN
        RAISE EXCEPTION 'device group query has % characters, more than 2000', length(query)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF cardinality(tokens) < 4 OR upper(tokens[1]) <> 'SELECT' OR tokens[2] <> '*' OR upper(tokens[3]) <> 'FROM'
       OR lower(tokens[4]) <> 'devices' THEN
        RAISE EXCEPTION 'device group query "%" does not start with SELECT * FROM devices', query
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write IoT Central''s form, SELECT * FROM devices WHERE $template = "dtmi:..." AND ..., or a jsonpath predicate.';
    END IF;
    IF cardinality(tokens) = 4 THEN
        RETURN;                                  -- every device
    END IF;
    IF upper(tokens[5]) <> 'WHERE' THEN
        RAISE EXCEPTION 'device group query: "%" is not supported after SELECT * FROM devices', tokens[5]
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Only a WHERE clause may follow.';
    END IF;
    i := 6;
    LOOP
        IF i > cardinality(tokens) THEN
            RAISE EXCEPTION 'device group query "%" ends where a condition should be', query
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF upper(tokens[i]) = 'CONTAINS' THEN
            -- CONTAINS(field, "text")
            IF tokens[i + 1] IS DISTINCT FROM '(' OR tokens[i + 3] IS DISTINCT FROM ',' OR tokens[i + 5] IS DISTINCT FROM ')' THEN
                RAISE EXCEPTION 'device group query: CONTAINS must be written CONTAINS(field, "text")'
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The query is: %s', query);
            END IF;
            paths := fleet_internal.group_query_field(tokens[i + 2], query);
            literal := fleet_internal.group_query_literal(tokens[i + 4]);
            IF literal IS NULL OR left(literal, 1) <> '"' THEN
                RAISE EXCEPTION 'device group query: CONTAINS needs a string, not %', tokens[i + 4]
                    USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The query is: %s', query);
            END IF;
            -- like_regex with every regex character escaped
            literal := to_jsonb(regexp_replace(literal::jsonb #>> '{}', '([.*+?^${}()|\[\]\\])', '\\\1', 'g'))::text;
            condition := '(' || array_to_string(ARRAY(SELECT p || ' like_regex ' || literal FROM unnest(paths) p), ' || ') || ')';
            i := i + 6;
        ELSE
            IF tokens[i] IN ('(', ')') THEN
                RAISE EXCEPTION 'device group query: parentheses are not supported'
                    USING ERRCODE = 'feature_not_supported',
                          DETAIL = format('The query is: %s', query),
                          HINT = 'IoT Central''s device groups take conditions joined by AND or OR, without nesting; use a jsonpath predicate for more.';
            END IF;
            paths := fleet_internal.group_query_field(tokens[i], query);
            op := tokens[i + 1];
            IF op IS NULL OR op NOT IN ('=', '==', '!=', '<>', '<', '<=', '>', '>=') THEN
                RAISE EXCEPTION 'device group query: operator "%" after "%" is not supported', coalesce(op, '(none)'), tokens[i]
                    USING ERRCODE = 'feature_not_supported',
                          DETAIL = format('The query is: %s', query),
                          HINT = 'Use =, !=, <, <=, >, >= or CONTAINS(field, "text"); IN is not supported in device groups.';
            END IF;
            literal := fleet_internal.group_query_literal(tokens[i + 2]);
            IF literal IS NULL THEN
                RAISE EXCEPTION 'device group query: "%" after "% %" is not a value', coalesce(tokens[i + 2], '(nothing)'), tokens[i], op
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('The query is: %s', query),
                          HINT = 'Write strings in quotes ("text"), numbers, true or false.';
            END IF;
            op := CASE op WHEN '=' THEN '==' WHEN '<>' THEN '!=' ELSE op END;
            IF lower(tokens[i]) = '$template' AND op = '==' AND left(literal, 1) = '"' THEN
                templates := templates || (literal::jsonb #>> '{}');
                template_at := template_at || (cardinality(conditions) + 1);
            END IF;
            condition := '(' || array_to_string(ARRAY(SELECT p || ' ' || op || ' ' || literal FROM unnest(paths) p), ' || ') || ')';
            i := i + 3;
        END IF;
        conditions := conditions || condition;
        EXIT WHEN i > cardinality(tokens);
        joiner := upper(tokens[i]);
        IF joiner NOT IN ('AND', 'OR') THEN
            RAISE EXCEPTION 'device group query: "%" is not supported where AND or OR should be', tokens[i]
                USING ERRCODE = 'feature_not_supported', DETAIL = format('The query is: %s', query);
        END IF;
        joiners := joiners || joiner;
        i := i + 1;
    END LOOP;
    IF cardinality(conditions) > 10 THEN
        RAISE EXCEPTION 'device group query has % conditions, more than 10', cardinality(conditions)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    -- one template asked of every device: the template column does it
    IF cardinality(templates) = 1 AND NOT 'OR' = ANY (joiners) THEN
        template := templates[1];
        conditions := ARRAY(SELECT c FROM unnest(conditions) WITH ORDINALITY AS x(c, k)
                             WHERE k <> template_at[1] ORDER BY k);
        joiners := joiners[1:cardinality(conditions) - 1];
    END IF;
    IF cardinality(conditions) > 0 THEN
        -- AND binds tighter than OR, as in SQL and jsonpath alike
        filter := (conditions[1] || coalesce((SELECT string_agg(' ' || CASE j WHEN 'AND' THEN '&&' ELSE '||' END || ' ' || c, '' ORDER BY n)
                                                FROM unnest(joiners, conditions[2:]) WITH ORDINALITY AS x(j, c, n)), ''))::jsonpath;
    END IF;
END;
$$;
