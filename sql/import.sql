\set SHOW_CONTEXT never
-- Device CSV import through COPY, IoT Central's format.
CREATE FUNCTION pg_temp.last_operation() RETURNS TABLE (status text, rows bigint, imported bigint,
                                                        rejected bigint, template_id text, organization_id text,
                                                        balanced boolean)
LANGUAGE sql AS $$
    SELECT status, rows, imported, rejected, template_id, organization_id, rows = imported + rejected
      FROM fleet.device_operations ORDER BY id DESC LIMIT 1
$$;
-- imports that fail as a whole are recorded by the engine, in its own
-- transaction: wait until it has
CREATE FUNCTION pg_temp.wait_recorded() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 500 LOOP
        EXIT WHEN (SELECT failed_imports_to_record = 0 FROM fleet.engine_status);
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN (SELECT failed_imports_to_record = 0 FROM fleet.engine_status);
END;
$$;
CREATE FUNCTION pg_temp.last_errors() RETURNS TABLE (line bigint, device_id text, error text)
LANGUAGE sql AS $$
    SELECT line, device_id, error FROM fleet.device_operation_errors
     WHERE operation_id = (SELECT max(id) FROM fleet.device_operations) ORDER BY line
$$;

-- as IoT Central and spreadsheets write it: byte-order mark, CRLF line ends,
-- quoted fields with commas and quotes, an empty name
SET fleet.import_template = 'dtmi:com:example:Thermostat;1';
SET fleet.import_organization = 'contoso-east';
\copy fleet.device_import FROM 'test/data/bom_crlf.csv' WITH (FORMAT csv, HEADER)
SELECT * FROM pg_temp.last_operation();
SELECT id, display_name, template_id, organization_id FROM fleet.devices WHERE id LIKE 'bom-%' ORDER BY id;
RESET fleet.import_template;
RESET fleet.import_organization;

-- every rule: each row lands in exactly one place, with its line
\copy fleet.device_import FROM 'test/data/mixed.csv' WITH (FORMAT csv, HEADER)
SELECT * FROM pg_temp.last_operation();
SELECT * FROM pg_temp.last_errors();
SELECT id, display_name, template_id, organization_id FROM fleet.devices WHERE id LIKE 'mix-%' ORDER BY id;

-- length limits count characters: 128 for ids, 148 for names
\copy fleet.device_import FROM 'test/data/limits.csv' WITH (FORMAT csv, HEADER)
SELECT * FROM pg_temp.last_operation();
SELECT line, device_id, left(error, 90) AS error FROM pg_temp.last_errors();
SELECT left(id, 12) AS id, length(id) AS id_length, length(display_name) AS name_length
  FROM fleet.devices WHERE import_operation_id = (SELECT max(id) FROM fleet.device_operations) ORDER BY id;

-- a file with only the id column: name the column
\copy fleet.device_import ("IOTC_DEVICEID") FROM 'test/data/id_only.csv' WITH (FORMAT csv, HEADER)
SELECT id, display_name FROM fleet.devices WHERE id LIKE 'only-%' ORDER BY id;

-- columns in another order: list them as the file has them, and let
-- HEADER MATCH check the header
\copy fleet.device_import ("IOTC_DEVICENAME", "IOTC_DEVICEID") FROM 'test/data/reordered.csv' WITH (FORMAT csv, HEADER MATCH)
SELECT id, display_name FROM fleet.devices WHERE id LIKE 'rev-%' ORDER BY id;
-- HEADER MATCH refuses a file whose header does not match
\copy fleet.device_import FROM 'test/data/reordered.csv' WITH (FORMAT csv, HEADER MATCH)

-- a file with only a header is a completed, empty operation
\copy fleet.device_import FROM 'test/data/header_only.csv' WITH (FORMAT csv, HEADER)
SELECT * FROM pg_temp.last_operation();

-- an unknown template or organization refuses the whole file before any row
-- (once the failed import above is recorded: the engine writes its row)
SELECT pg_temp.wait_recorded() AS recorded;
SELECT count(*) AS operations_before FROM fleet.device_operations \gset
SET fleet.import_template = 'dtmi:no:Such;1';
\copy fleet.device_import FROM 'test/data/id_only.csv' WITH (FORMAT csv, HEADER)
RESET fleet.import_template;
SET fleet.import_organization = 'nowhere';
\copy fleet.device_import FROM 'test/data/id_only.csv' WITH (FORMAT csv, HEADER)
RESET fleet.import_organization;
SELECT count(*) = :operations_before AS nothing_recorded FROM fleet.device_operations;

-- invalid UTF-8 and malformed CSV fail with COPY's own error, naming the line;
-- nothing of the file is kept, and the Device Operations panel shows each
-- import failed, with the reason and how far it got
\set SHOW_CONTEXT errors
\copy fleet.device_import FROM 'test/data/bad_utf8.csv' WITH (FORMAT csv, HEADER)
\copy fleet.device_import FROM 'test/data/bad_quote.csv' WITH (FORMAT csv, HEADER)
\set SHOW_CONTEXT never
SELECT count(*) AS kept FROM fleet.devices WHERE id IN ('utf-1', 'csv-1');
SELECT pg_temp.wait_recorded() AS recorded;
SELECT id, status, rows, imported, rejected, error, finished_at >= started_at AS finished
  FROM fleet.device_operations ORDER BY id DESC LIMIT 2;
-- so is an import that is cancelled, and one whose transaction rolls back
SET statement_timeout = '200ms';
INSERT INTO fleet.device_import SELECT 'slow-' || i, CASE WHEN i = 5 THEN pg_sleep(5)::text END FROM generate_series(1, 100) i;
RESET statement_timeout;
BEGIN;
INSERT INTO fleet.device_import VALUES ('undone-1', NULL);
ROLLBACK;
SELECT pg_temp.wait_recorded() AS recorded;
SELECT status, imported, error FROM fleet.device_operations ORDER BY id DESC LIMIT 2;
SELECT count(*) AS kept FROM fleet.devices WHERE id LIKE 'slow-%' OR id = 'undone-1';

-- INSERT works too (line numbers are then row numbers), and a failed import
-- inside a savepoint leaves the next one intact
BEGIN;
SAVEPOINT s;
\copy fleet.device_import FROM 'test/data/bad_utf8.csv' WITH (FORMAT csv, HEADER)
ROLLBACK TO s;
INSERT INTO fleet.device_import VALUES ('ins-1', 'Inserted'), ('ins-1', 'Again'), ('ins 2', NULL);
COMMIT;
SELECT * FROM pg_temp.last_operation();
SELECT * FROM pg_temp.last_errors();

-- the Device Operations panel: every import, failed ones too (their rows
-- are those read before the failure; none was imported)
SELECT pg_temp.wait_recorded() AS recorded;
SELECT id, kind, status, rows, imported, rejected, started_by = current_user AS by_me,
       finished_at >= started_at AS finished
  FROM fleet.device_operations ORDER BY id;
SELECT sum(rows) = sum(imported) + sum(rejected) AS all_rows_accounted
  FROM fleet.device_operations WHERE status <> 'failed';

-- names with backslashes, tabs and non-ASCII letters arrive unchanged, and a
-- client in another encoding is converted once, not twice
INSERT INTO fleet.device_import VALUES ('esc-1', E'back\\slash\ttab'), ('esc-2', 'Café Zürich');
SELECT id, display_name, display_name = E'back\\slash\ttab' OR display_name = 'Café Zürich' AS unchanged
  FROM fleet.devices WHERE id LIKE 'esc-%' ORDER BY id;
-- (one server only: Citus sends its nodes text in the database's encoding
-- over connections that say the client's; see README, "Scaling out")
SELECT NOT fleet_internal.citus_table('fleet.devices') AS one_server \gset
\if :one_server
SET client_encoding = 'LATIN1';
\endif
INSERT INTO fleet.device_import VALUES ('enc-1', 'Ä');
SELECT display_name = 'Ä' AS converted_once FROM fleet.devices WHERE id = 'enc-1';
RESET client_encoding;

-- staged rows beyond work_mem spill to disk and are read back in full, on the
-- bulk path and, with a repeat in the file, on the classifying path
SET work_mem = '64kB';
INSERT INTO fleet.device_import SELECT 'spill-' || i, 'Spill ' || i FROM generate_series(1, 5000) i;
INSERT INTO fleet.device_import
SELECT 'spill2-' || i, 'Spill ' || i FROM generate_series(1, 5000) i
UNION ALL SELECT 'spill2-1', 'repeat';
RESET work_mem;
SELECT count(*) FILTER (WHERE id LIKE 'spill-%') AS first, count(*) FILTER (WHERE id LIKE 'spill2-%') AS second
  FROM fleet.devices;
SELECT * FROM pg_temp.last_errors();
DELETE FROM fleet.devices WHERE id LIKE 'spill%';

-- A role that is not an operator of the organization is refused; an
-- operator imports through the INSERT path, under row-level security,
-- with the same outcome as the bulk path.
CREATE ROLE regress_fleet_importer;
SET ROLE regress_fleet_importer;
INSERT INTO fleet.device_import VALUES ('perm-1', NULL);
RESET ROLE;
SELECT fleet.grant_organization('root', 'regress_fleet_importer', 'viewer');
SET ROLE regress_fleet_importer;
INSERT INTO fleet.device_import VALUES ('perm-1', NULL);
RESET ROLE;
SELECT fleet.grant_organization('root', 'regress_fleet_importer', 'operator');
SET ROLE regress_fleet_importer;
INSERT INTO fleet.device_import VALUES ('perm-1', NULL), ('perm-2', 'Two'), ('perm-1', 'Again'), ('mix-1', 'taken');
RESET ROLE;
SELECT * FROM pg_temp.last_operation();
SELECT * FROM pg_temp.last_errors();
SELECT id, display_name FROM fleet.devices WHERE id LIKE 'perm-%' ORDER BY id;
SELECT fleet.revoke_organization('root', 'regress_fleet_importer');
DROP OWNED BY regress_fleet_importer;
DROP ROLE regress_fleet_importer;

-- The import machinery serves fleet.device_import only, and keeps every row
-- whatever the statement around it does.
CREATE TEMP VIEW not_device_import AS SELECT 1::int AS a, 2::int AS b;
CREATE TRIGGER stage INSTEAD OF INSERT ON not_device_import
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.device_import_stage_row();
INSERT INTO not_device_import VALUES (1, 16);
SELECT fleet_internal.device_import_register(1, NULL, NULL);
-- a function that writes while the import statement runs
CREATE TEMP TABLE import_log (id text);
CREATE FUNCTION pg_temp.logged(id text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO import_log VALUES (id);
    RETURN id;
END;
$$;
INSERT INTO fleet.device_import SELECT pg_temp.logged('cid-' || i), 'n' FROM generate_series(1, 5) i;
SELECT * FROM pg_temp.last_operation();
-- an import inside an import is refused, not mixed in
CREATE FUNCTION pg_temp.nested(id text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fleet.device_import VALUES ('inner-' || id, NULL);
    RETURN id;
END;
$$;
INSERT INTO fleet.device_import SELECT pg_temp.nested('outer-1'), NULL;
-- an id repeated in the file after a first line that was already registered
INSERT INTO fleet.device_import VALUES ('cid-1', 'again'), ('cid-1', 'and again');
SELECT * FROM pg_temp.last_errors();
DELETE FROM fleet.devices WHERE id LIKE 'cid-%';
