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
                  HINT = format('Change %s.', array_to_string(allowed, ', '));
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
