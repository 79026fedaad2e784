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
