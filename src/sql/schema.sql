-- Helpers shared by every topic.

-- Refuses an id or display name for a new object of the given kind
-- ("organization", "device group", ...): ids are 1 to max_length letters,
-- digits, "-" or "_", names are not blank.  Jobs will use it too.
CREATE FUNCTION fleet_internal.check_new_object(kind text, id text, display_name text, max_length int)
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

-- The time of a step: "at" (tests pass one), or the clock.  C
-- (src/citus_node.c), STABLE so that Citus evaluates it on the coordinator
-- for a statement that writes its tables, which it refuses with a volatile
-- clock_timestamp(); every statement that writes a time calls this.
CREATE FUNCTION fleet_internal.moment(at timestamptz DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'moment';
-- "at", or now(): the transaction's start (Citus also refuses now() inside
-- a COALESCE of such a statement).
CREATE FUNCTION fleet_internal.transaction_moment(at timestamptz DEFAULT NULL)
RETURNS timestamptz
LANGUAGE c STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'transaction_moment';

-- Whether Citus manages a table (fleet.distribute()): the command claims
-- take another way there.  C (src/citus_node.c): it reads Citus's catalog
-- when there is one, and pg_fleet does not require Citus.
CREATE FUNCTION fleet_internal.citus_table(table_name regclass)
RETURNS boolean
LANGUAGE c STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'citus_table_sql';

-- A CSV cell a spreadsheet will not run as a formula: with neutralize, a
-- value starting with =, +, -, @, a tab or a carriage return gets a leading
-- single quote, as OWASP's "CSV Injection" advice says.  Only the output
-- changes, never what is stored.  C (src/spreadsheet_cell.c), and it
-- carries no SET search_path: it looks no names up, and exports call it for
-- every cell (the clause would cost a configuration save and restore each).
CREATE FUNCTION fleet_internal.spreadsheet_cell(value text, neutralize boolean)
RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'spreadsheet_cell';
COMMENT ON FUNCTION fleet_internal.spreadsheet_cell(text, boolean) IS 'The value, with a leading single quote when neutralize is true and a spreadsheet would read it as a formula';

-- The refusals every kind of object shares, so that each kind of refusal
-- has one SQLSTATE and one wording: the message states the fact, the HINT
-- says what to do.

-- "<kind> "<id>" already exists" (duplicate_object, as CREATE does).
CREATE FUNCTION fleet_internal.refuse_existing(kind text, id text, hint text DEFAULT 'Choose another id.')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% "%" already exists', kind, id
        USING ERRCODE = 'duplicate_object', HINT = hint;
END;
$$;

-- "<kind> "<id>" does not exist" (undefined_object); also what a caller is
-- told about an object of an organization it does not see.
CREATE FUNCTION fleet_internal.refuse_missing(kind text, id text, hint text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF hint IS NULL THEN
        RAISE EXCEPTION '% "%" does not exist', kind, id USING ERRCODE = 'undefined_object';
    END IF;
    RAISE EXCEPTION '% "%" does not exist', kind, id USING ERRCODE = 'undefined_object', HINT = hint;
END;
$$;

-- "<kind> "<id>" is in use" (dependent_objects_still_exist, as DROP
-- without CASCADE does); detail says by what.
CREATE FUNCTION fleet_internal.refuse_in_use(kind text, id text, detail text, hint text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% "%" is in use', kind, id
        USING ERRCODE = 'dependent_objects_still_exist', DETAIL = detail, HINT = hint;
END;
$$;

-- A REST body with the id its URL gives (PUT /jobs/{id}): the id argument
-- goes into the body as "id"; a body with another "id" is refused.
CREATE FUNCTION fleet_internal.body_with_id(body jsonb, id text, kind text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF id IS NULL OR jsonb_typeof(body) IS DISTINCT FROM 'object' THEN
        RETURN body;
    END IF;
    IF body ? 'id' AND body -> 'id' IS DISTINCT FROM to_jsonb(id) THEN
        RAISE EXCEPTION 'the % body has "id" %, not "%"', kind, body -> 'id', id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave "id" out of the body, or pass the same id.';
    END IF;
    RETURN body || jsonb_build_object('id', id);
END;
$$;

-- A REST body as the import_<kind>() functions take it (PUT /<kinds>/{id}):
-- a JSON object of known keys, with the URL's id (body_with_id).  example
-- shows its shape in the HINT of a body that is not an object.
CREATE FUNCTION fleet_internal.rest_body(body jsonb, id text, kind text, known text[], example text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(body) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the body of % "%" must be a JSON object', kind, id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass IoT Central''s %s: %s.', kind, example);
    END IF;
    body := fleet_internal.body_with_id(body, id, kind);
    PERFORM fleet_internal.refuse_unknown_keys(body, known, format('%s "%s"', kind, id));
    RETURN body;
END;
$$;

-- The organization of a REST body: IoT Central gives it as an array of one
-- id ("organizations"); NULL when the body names none.
CREATE FUNCTION fleet_internal.body_organization(body jsonb, label text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT body ? 'organizations' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(body -> 'organizations') <> 'array' OR jsonb_array_length(body -> 'organizations') <> 1
       OR jsonb_typeof(body -> 'organizations' -> 0) <> 'string' THEN
        RAISE EXCEPTION '"organizations" of % must be an array of one organization id', label
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', body -> 'organizations');
    END IF;
    RETURN body -> 'organizations' ->> 0;
END;
$$;

-- RFC 7396 JSON merge patch, as IoT Central's PATCH requests
-- (application/merge-patch+json) apply: objects merge key by key, null
-- removes a key, anything else replaces.
CREATE FUNCTION fleet_internal.json_merge_patch(target jsonb, patch jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    RETURN (SELECT coalesce(jsonb_object_agg(coalesce(p.key, t.key),
                                             CASE WHEN p.key IS NULL THEN t.value
                                                  ELSE fleet_internal.json_merge_patch(t.value, p.value) END), '{}')
              FROM jsonb_each(CASE WHEN jsonb_typeof(target) = 'object' THEN target ELSE '{}' END) t
              FULL JOIN jsonb_each(patch) p ON p.key = t.key
             WHERE p.key IS NULL OR jsonb_typeof(p.value) <> 'null');
END;
$$;

-- A time as IoT Central's REST API writes one: UTC, milliseconds, "Z".
CREATE FUNCTION fleet_internal.rest_timestamp(t timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_char(pg_catalog.timezone('UTC', t), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- An etag, as IoT Central's REST API gives objects one: a hash of what the
-- object holds, computed when read, so no column keeps it and any change
-- gives a new one.
CREATE FUNCTION fleet_internal.etag(content jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '"' || left(md5(content::text), 20) || '"'
$$;

-- If-Match, as the REST API's updates check it: an etag sent with changes
-- must be the object's current one, or someone changed it in between.
CREATE FUNCTION fleet_internal.require_etag(label text, given jsonb, current_etag text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF given IS NULL OR jsonb_typeof(given) = 'null' OR given #>> '{}' = current_etag THEN
        RETURN;
    END IF;
    RAISE EXCEPTION '% has changed since etag %', label, given #>> '{}'
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = format('Its etag is now %s.', current_etag),
              HINT = 'Read it again and apply your change to what it holds now.';
END;
$$;

-- The known name a misspelled one most likely meant, or NULL
-- (src/closest_name.c: PostgreSQL's Levenshtein distance, ignoring case).
CREATE FUNCTION fleet_internal.closest_name(name text, candidates text[])
RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'closest_name';
COMMENT ON FUNCTION fleet_internal.closest_name(text, text[]) IS 'The candidate nearest to name by edit distance, ignoring case, or NULL when none is near';

-- Refuses a JSON object with a key outside known: a misspelled key must
-- not be dropped silently (a "cancelationThreshold" ignored is a job run
-- with no threshold).  The HINT names the key most likely meant.
CREATE FUNCTION fleet_internal.refuse_unknown_keys(body jsonb, known text[], what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown text;
    meant   text;
BEGIN
    IF jsonb_typeof(body) IS DISTINCT FROM 'object' THEN
        RETURN;
    END IF;
    SELECT k INTO unknown FROM jsonb_object_keys(body) k WHERE k <> ALL (known) ORDER BY k LIMIT 1;
    IF unknown IS NULL THEN
        RETURN;
    END IF;
    meant := fleet_internal.closest_name(unknown, known);
    RAISE EXCEPTION 'unknown key "%" in %', unknown, what
        USING ERRCODE = 'invalid_parameter_value',
              HINT = CASE WHEN meant IS NOT NULL THEN format('Did you mean "%s"? ', meant) ELSE '' END
                     || format('The keys are %s.', array_to_string(known, ', '));
END;
$$;

-- The changes an update_*() function takes: a JSON object of the fields
-- to change, in IoT Central's names, each one of those allowed.
CREATE FUNCTION fleet_internal.require_changes(changes jsonb, allowed text[], label text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unknown text;
BEGIN
    IF jsonb_typeof(changes) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the changes to % are not a JSON object', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass the fields to change, among %s.', array_to_string(allowed, ', '));
    END IF;
    SELECT k INTO unknown FROM jsonb_object_keys(changes) k WHERE k <> ALL (allowed) ORDER BY k LIMIT 1;
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'field "%" of % cannot be changed', unknown, label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = coalesce('Did you mean "' || fleet_internal.closest_name(unknown, allowed) || '"? ', '')
                         || format('Change %s.', array_to_string(allowed, ', '));
    END IF;
    RETURN changes;
END;
$$;

-- The new display name an update_*() function was given ("displayName" in
-- its changes), checked as creation checks it.
CREATE FUNCTION fleet_internal.changed_display_name(changes jsonb, kind text, id text, max_length int)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(changes -> 'displayName') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'the display name of % "%" must be a string', kind, id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass {"displayName": "..."}.';
    END IF;
    PERFORM fleet_internal.check_new_object(kind, id, changes ->> 'displayName', max_length);
    RETURN changes ->> 'displayName';
END;
$$;
