-- Device CSV import, IoT Central's format, through COPY:
--
--   SET fleet.import_template = 'dtmi:com:example:Thermostat;1';   -- optional
--   SET fleet.import_organization = 'acme';                        -- optional
--   \copy fleet.device_import FROM 'devices.csv' WITH (FORMAT csv, HEADER)
--
-- IoT Central's export file (the same two columns, then two SAS keys and
-- two X.509 thumbprints) goes into fleet.device_import_with_keys: the
-- thumbprints are imported, and a SAS key that is not the one the
-- device's enrollment group gives it refuses the row (so a migrated
-- device's keys keep working, or it says so).
--
-- COPY parses; the row trigger (C, device_import.c) stages each row with its
-- line number; the statement's AFTER trigger validates and registers all of
-- them in one statement.  Every row ends up in exactly one place: in
-- fleet.devices, or in fleet.device_operation_errors with its reason.  An
-- import that fails as a whole (a malformed file, a cancel, a rollback)
-- still leaves its row, recorded failed with the reason by the engine
-- (src/import_tracking.c).


-- What COPY writes into.  Column names are the CSV header's, so
-- COPY ... WITH (FORMAT csv, HEADER MATCH) checks the header too.
CREATE VIEW fleet.device_import AS
    SELECT NULL::text AS "IOTC_DEVICEID", NULL::text AS "IOTC_DEVICENAME"
     WHERE false;
COMMENT ON VIEW fleet.device_import IS 'COPY an IoT Central device CSV (IOTC_DEVICEID, IOTC_DEVICENAME) into this view to import devices; see fleet.device_operations for the outcome';

-- IoT Central's export file, six columns: COPY does not take files of two
-- shapes into one relation, and the two-column file keeps its view.
CREATE VIEW fleet.device_import_with_keys AS
    SELECT NULL::text AS "IOTC_DEVICEID", NULL::text AS "IOTC_DEVICENAME",
           NULL::text AS "IOTC_SASKEY_PRIMARY", NULL::text AS "IOTC_SASKEY_SECONDARY",
           NULL::text AS "IOTC_X509THUMBPRINT_PRIMARY", NULL::text AS "IOTC_X509THUMBPRINT_SECONDARY"
     WHERE false;
COMMENT ON VIEW fleet.device_import_with_keys IS 'COPY IoT Central''s device export file (ids, names, SAS keys, X.509 thumbprints) into this view to import devices with their thumbprints; keys are checked against the enrollment groups';

-- The staging functions are C and act only on the calling session's own
-- import in progress.  The row trigger carries no SET search_path: it looks
-- no names up, and the clause would cost a configuration save and restore
-- on each of a million rows.
CREATE FUNCTION fleet_internal.device_import_begin(operation_id bigint, template text, organization text)
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_begin';
COMMENT ON FUNCTION fleet_internal.device_import_begin(bigint, text, text) IS 'Starts the staging of one import statement, tracked under its operation id';

CREATE FUNCTION fleet_internal.device_import_operation_id()
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_operation_id';

CREATE FUNCTION fleet_internal.device_import_stage_row()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'device_import_stage_row';

CREATE FUNCTION fleet_internal.device_import_staged_rows(OUT line bigint, OUT device_id text, OUT display_name text,
                                                        OUT sas_key_primary text, OUT sas_key_secondary text,
                                                        OUT x509_thumbprint_primary text, OUT x509_thumbprint_secondary text)
RETURNS SETOF record
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_staged_rows';
COMMENT ON FUNCTION fleet_internal.device_import_staged_rows() IS 'The rows staged by the current import statement, for its AFTER trigger';

CREATE FUNCTION fleet_internal.device_import_staged_count()
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_staged_count';

CREATE FUNCTION fleet_internal.device_import_register(operation_id bigint, template text, organization text)
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_register';
COMMENT ON FUNCTION fleet_internal.device_import_register(bigint, text, text) IS 'Bulk-inserts the valid rows of the current import; -1 when the caller must use INSERT instead';

CREATE FUNCTION fleet_internal.device_import_release()
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'device_import_release';

-- The target template and organization, from the fleet.import_* settings;
-- an organization the caller cannot see does not exist for it.
CREATE FUNCTION fleet_internal.device_import_target(caller name, OUT template text, OUT organization text)
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
    IF NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = organization)
       OR NOT fleet_internal.sees(caller, organization) THEN
        RAISE EXCEPTION 'organization "%" does not exist', organization
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'fleet.import_organization names the organization of the imported devices; nothing was imported.',
                  HINT = 'Create it with fleet.create_organization() first, or RESET fleet.import_organization to import into root.';
    END IF;
END;
$$;

-- The enrollment group fleet.import_enrollment_group names for the
-- imported devices, or NULL (their organization's default, or with keys in
-- the file the group the keys match).  It must be one a device of the
-- target organization may name, and the caller an administrator there:
-- it decides the devices' keys.
CREATE FUNCTION fleet_internal.device_import_enrollment_group(organization text, caller name)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    named text := nullif(current_setting('fleet.import_enrollment_group'), '');
BEGIN
    IF named IS NOT NULL THEN
        PERFORM fleet_internal.require_app_role(organization, 'administrator', 'importing devices into an enrollment group', caller);
        PERFORM fleet_internal.require_device_enrollment_group(named, organization, false,
                                                               format('devices of organization "%s"', organization), caller, true);
    END IF;
    RETURN named;
END;
$$;

-- The enrollment group of a row of IoT Central's export file, and what is
-- wrong with its SAS keys and X.509 thumbprints (NULL when nothing).  A
-- key must be the one a group derives for the device (else the device
-- could not connect with it): the named group's, else the first of the
-- candidates (the organization's default first) whose keys the row's
-- match; a row without keys gets the named group.  The group is NULL when
-- it is the organization's default, which the device then follows.
-- Messages never show a key.
CREATE FUNCTION fleet_internal.device_import_credentials(
    s record, candidates fleet.enrollment_groups[], named_group text,
    OUT enrollment_group_id text, OUT problem text)
RETURNS record
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    first   fleet.enrollment_groups := candidates[1];
    matched fleet.enrollment_groups;
BEGIN
    enrollment_group_id := named_group;
    IF (s.sas_key_primary IS NOT NULL OR s.sas_key_secondary IS NOT NULL) AND first.attestation = 'x509' THEN
        problem := format('device "%s" has SAS keys, but enrollment group "%s" is an X.509 group, whose devices have none: leave the keys out, or import it into a group with keys',
                          s.device_id, first.id);
        RETURN;
    END IF;
    IF s.sas_key_primary IS NOT NULL OR s.sas_key_secondary IS NOT NULL THEN
        -- (a loop over a few groups, for one row)
        FOR i IN 1 .. coalesce(cardinality(candidates), 0) LOOP
            IF (s.sas_key_primary IS NULL OR s.sas_key_primary = fleet.compute_device_key(candidates[i].primary_key, s.device_id))
               AND (s.sas_key_secondary IS NULL OR s.sas_key_secondary = fleet.compute_device_key(candidates[i].secondary_key, s.device_id)) THEN
                matched := candidates[i];
                EXIT;
            END IF;
        END LOOP;
        IF matched.id IS NULL AND NOT first.enabled THEN
            matched := first;     -- (refused below, for what the operator can change)
        END IF;
        IF matched.id IS NULL THEN
            problem := format('%s of device "%s" is not the key enrollment group "%s" gives it%s, so the device could not connect with it: %s, or leave the keys out',
                              CASE WHEN s.sas_key_primary IS NOT NULL
                                        AND s.sas_key_primary IS DISTINCT FROM fleet.compute_device_key(first.primary_key, s.device_id)
                                   THEN 'IOTC_SASKEY_PRIMARY' ELSE 'IOTC_SASKEY_SECONDARY' END,
                              s.device_id, first.id,
                              CASE WHEN named_group IS NULL AND cardinality(candidates) > 1 THEN ' (nor any other group of its organization)' ELSE '' END,
                              CASE WHEN named_group IS NULL
                                   THEN 'adopt the group its keys came from with fleet.import_enrollment_group() and IoT Central''s keys'
                                   ELSE 'make the group''s keys the ones the device''s keys came from' END);
            RETURN;
        END IF;
        IF NOT matched.enabled THEN
            problem := format('device "%s" has SAS keys, but enrollment group "%s" is disabled: enable it, or leave the keys out', s.device_id, matched.id);
            RETURN;
        END IF;
        -- (the group the device would derive from anyway stays implicit)
        enrollment_group_id := CASE WHEN matched.id = first.id AND named_group IS NULL THEN NULL ELSE matched.id END;
    END IF;
    IF s.x509_thumbprint_primary !~ '^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$' THEN
        problem := format('IOTC_X509THUMBPRINT_PRIMARY of device "%s" is not a certificate thumbprint (40 or 64 hexadecimal digits)', s.device_id);
    ELSIF s.x509_thumbprint_secondary !~ '^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$' THEN
        problem := format('IOTC_X509THUMBPRINT_SECONDARY of device "%s" is not a certificate thumbprint (40 or 64 hexadecimal digits)', s.device_id);
    END IF;
END;
$$;

-- BEFORE statement: refuse an unknown target, or a caller who may not
-- import there, before COPY reads a row; the import draws its operation id
-- now, so that a failure is recorded under it.  SECURITY DEFINER, as is the
-- AFTER trigger: members write devices only through the API, and every
-- import takes the bulk path.
CREATE FUNCTION fleet_internal.device_import_check_target()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    target record := fleet_internal.device_import_target(caller);
BEGIN
    PERFORM fleet_internal.require_app_role(target.organization, 'operator', 'importing devices', caller);
    PERFORM fleet_internal.device_import_enrollment_group(target.organization, caller);
    PERFORM fleet_internal.device_import_begin(nextval('fleet.device_operations_id_seq'),
                                               target.template, target.organization);
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
CREATE FUNCTION fleet_internal.device_import_finish()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller      name := fleet_internal.calling_role();
    target      record := fleet_internal.device_import_target(caller);
    op_id       bigint := fleet_internal.device_import_operation_id();
    n_rows      bigint := fleet_internal.device_import_staged_count();
    n_imported  bigint;
    n_conflicts bigint := 0;
    n_invalid   bigint := 0;
    n_rejected  bigint;
    named_group text := fleet_internal.device_import_enrollment_group(target.organization, caller);
    candidates  fleet.enrollment_groups[];   -- what imported SAS keys may match, in order
BEGIN
    -- devices are imported as devices (not IoT Edge): the named group, else
    -- their organization's default group for devices, then the other groups
    -- with keys they may name, nearest first
    candidates := ARRAY(
        SELECT g FROM fleet.enrollment_groups g JOIN fleet.organizations o ON o.id = target.organization
         WHERE CASE WHEN named_group IS NOT NULL THEN g.id = named_group
                    ELSE g.organization_id = ANY (o.path) AND NOT g.edge AND g.attestation = 'symmetricKey' END
         ORDER BY g.id IS DISTINCT FROM (SELECT x.group_id FROM fleet_internal.organization_enrollment_groups x
                                          WHERE x.organization_id = target.organization AND NOT x.edge),
                  array_position(o.path, g.organization_id) DESC, g.id);
    -- they stay while the devices are imported to name them
    -- (delete_enrollment_group locks a group it deletes)
    PERFORM 1 FROM fleet.enrollment_groups g WHERE g.id IN (SELECT c.id FROM unnest(candidates) c) FOR KEY SHARE;

    INSERT INTO fleet.device_operations (id, kind, status, template_id, organization_id, started_by, started_at)
    VALUES (op_id, 'import', 'running', target.template, target.organization, caller, statement_timestamp());

    BEGIN
        -- (the bulk path sets no enrollment group)
        n_imported := CASE WHEN named_group IS NULL
                           THEN fleet_internal.device_import_register(op_id, target.template, target.organization)
                           ELSE -1 END;
        IF n_imported < 0 THEN
            -- no bulk path (the table has a trigger of someone's): a plain INSERT
            -- (also where rows carry keys to check and thumbprints to store)
            INSERT INTO fleet.devices (id, display_name, template_id, organization_id, import_operation_id,
                                       x509_thumbprint_primary, x509_thumbprint_secondary, enrollment_group_id)
            SELECT s.device_id, coalesce(nullif(s.display_name, ''), s.device_id),
                   target.template, target.organization, op_id,
                   s.x509_thumbprint_primary, s.x509_thumbprint_secondary, c.enrollment_group_id
              FROM fleet_internal.device_import_staged_rows() s
             CROSS JOIN LATERAL fleet_internal.device_import_credentials(s, candidates, named_group) c
             WHERE fleet_internal.device_identity_problem(s.device_id, s.display_name) IS NULL
               AND c.problem IS NULL;
            GET DIAGNOSTICS n_imported = ROW_COUNT;
        END IF;
    EXCEPTION WHEN unique_violation OR internal_error THEN
        -- (Citus passes a shard's unique violation on as an internal error)
        IF SQLSTATE = 'XX000' AND SQLERRM NOT LIKE 'duplicate key value violates unique constraint%' THEN
            RAISE;
        END IF;
        WITH valid AS (
            SELECT s.line, s.device_id, s.display_name, s.x509_thumbprint_primary, s.x509_thumbprint_secondary,
                   c.enrollment_group_id
              FROM fleet_internal.device_import_staged_rows() s
             CROSS JOIN LATERAL fleet_internal.device_import_credentials(s, candidates, named_group) c
             WHERE fleet_internal.device_identity_problem(s.device_id, s.display_name) IS NULL
               AND c.problem IS NULL
        ),
        inserted AS (
            -- rows go in file order, so of repeated ids the first line wins
            INSERT INTO fleet.devices (id, display_name, template_id, organization_id, import_operation_id,
                                       x509_thumbprint_primary, x509_thumbprint_secondary, enrollment_group_id)
            SELECT v.device_id, coalesce(nullif(v.display_name, ''), v.device_id),
                   target.template, target.organization, op_id,
                   v.x509_thumbprint_primary, v.x509_thumbprint_secondary, v.enrollment_group_id
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
          FROM (SELECT s.line, s.device_id,
                       coalesce(fleet_internal.device_identity_problem(s.device_id, s.display_name), c.problem) AS problem
                  FROM fleet_internal.device_import_staged_rows() s
                 CROSS JOIN LATERAL fleet_internal.device_import_credentials(s, candidates, named_group) c) p
         WHERE p.problem IS NOT NULL;
        GET DIAGNOSTICS n_invalid = ROW_COUNT;
    END IF;
    PERFORM fleet_internal.device_import_release();

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
           finished_at = fleet_internal.moment()
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
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_internal.device_import_check_target();
CREATE TRIGGER stage_row INSTEAD OF INSERT ON fleet.device_import
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.device_import_stage_row();
CREATE TRIGGER finish AFTER INSERT ON fleet.device_import
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_internal.device_import_finish();
CREATE TRIGGER check_target BEFORE INSERT ON fleet.device_import_with_keys
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_internal.device_import_check_target();
CREATE TRIGGER stage_row INSTEAD OF INSERT ON fleet.device_import_with_keys
    FOR EACH ROW EXECUTE FUNCTION fleet_internal.device_import_stage_row();
CREATE TRIGGER finish AFTER INSERT ON fleet.device_import_with_keys
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_internal.device_import_finish();

-- The imports that failed as a whole, from their slots in shared memory
-- (src/import_tracking.c): what they were, how far they got, why.
CREATE FUNCTION fleet_internal.import_failures(OUT operation_id bigint, OUT template_id text,
                                               OUT organization_id text, OUT started_by text,
                                               OUT started_at timestamptz, OUT failed_at timestamptz,
                                               OUT rows bigint, OUT error text, OUT pid int)
RETURNS SETOF record
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'import_failures';

-- The operation id of this session's latest import, whatever became of it,
-- for clients to read its outcome from fleet.device_operations.
CREATE FUNCTION fleet.last_device_operation()
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'last_device_operation';
COMMENT ON FUNCTION fleet.last_device_operation() IS 'The fleet.device_operations id of this session''s latest device import (NULL before the first)';

-- How many failed imports wait to be recorded.
CREATE FUNCTION fleet_internal.import_failures_pending()
RETURNS bigint
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'import_failures_pending';

-- The engine records them as failed operations, under the ids they drew
-- (rows: the rows read before the failure; none was imported).
CREATE FUNCTION fleet_internal.record_failed_imports()
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    -- (each slot read here is freed when this commits: src/import_tracking.c)
    INSERT INTO fleet.device_operations (id, kind, status, template_id, organization_id, rows, imported,
                                         rejected, started_by, started_at, finished_at, error)
    SELECT f.operation_id, 'import', 'failed', f.template_id, f.organization_id, f.rows, 0, 0,
           f.started_by, f.started_at, f.failed_at, f.error
      FROM fleet_internal.import_failures() f
    ON CONFLICT (id) DO NOTHING;
$$;
