-- Scaling out on Citus (DESIGN.md section 7): where each table goes, and
-- fleet.distribute(), which puts them there.
--
-- Citus propagates nothing an extension script runs, so distributing is a
-- call users make after CREATE EXTENSION, on the coordinator.  Devices and
-- the rows kept per device of a job are distributed by device id and
-- co-located, so that everything the engine does to a device's rows runs
-- on the device's shard; the small tables every statement joins with are
-- reference tables, a copy on every node; what only the coordinator uses
-- stays on it (Citus local tables): the enrollment groups' keys, from which
-- every device key derives, are on no worker.  Those stay plain tables of
-- the coordinator: Citus joins them with distributed ones by planning them
-- apart (citus.local_table_join_policy), and making them Citus local tables
-- would drop and make again the extension's views over them, which an
-- extension's member views do not allow.

-- The layout, in the order Citus needs it: a table before those that refer
-- to it.  sql/layout.sql checks that it names every table, that none of
-- the distributed and reference tables has a trigger or a policy Citus
-- cannot evaluate on a worker, and that the unique keys of the distributed
-- ones include their distribution column.
CREATE FUNCTION fleet_internal.citus_layout()
RETURNS TABLE (table_name regclass, layout text, distribution_column text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.table_name::regclass, t.layout, t.distribution_column
      FROM (VALUES
        (1, 'fleet.organizations', 'reference', NULL),
        (2, 'fleet.organization_members', 'reference', NULL),
        (3, 'fleet.device_templates', 'reference', NULL),
        (4, 'fleet.template_contents', 'reference', NULL),
        (5, 'fleet.edge_manifests', 'reference', NULL),
        (6, 'fleet.device_groups', 'reference', NULL),
        (7, 'fleet.device_operations', 'reference', NULL),
        (8, 'fleet.device_operation_errors', 'reference', NULL),
        (9, 'fleet.jobs', 'reference', NULL),
        (10, 'fleet.job_batches', 'reference', NULL),
        (11, 'fleet.command_windows', 'reference', NULL),
        (12, 'fleet_internal.job_dispatches', 'reference', NULL),
        (13, 'fleet_internal.job_engine_state', 'reference', NULL),
        (14, 'fleet.scheduled_jobs', 'reference', NULL),
        (15, 'fleet.scheduled_job_runs', 'reference', NULL),
        (16, 'fleet.job_device_list_columns', 'reference', NULL),
        (17, 'fleet.devices', 'distributed', 'id'),
        (18, 'fleet.job_devices', 'distributed', 'device_id'),
        (19, 'fleet.job_device_attempts', 'distributed', 'device_id'),
        -- on the coordinator: keys (and the trigger that keeps restored
        -- ones), the engine's own row, the endpoint's refusals
        (20, 'fleet.enrollment_groups', 'local', NULL),
        (21, 'fleet.enrollment_group_certificates', 'local', NULL),
        (22, 'fleet_internal.engine_state', 'local', NULL),
        (23, 'fleet.endpoint_refusals', 'local', NULL)
      ) AS t (position, table_name, layout, distribution_column)
     ORDER BY t.position
$$;
COMMENT ON FUNCTION fleet_internal.citus_layout() IS 'Where fleet.distribute() puts each table on Citus: reference, distributed by device id (co-located with fleet.devices) or local to the coordinator';

-- The engine finishes its step and waits for the calling transaction to
-- end (src/utility_hook.c).  C; superusers only.
CREATE FUNCTION fleet_internal.engine_step_aside()
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'engine_step_aside';

-- Spreads pg_fleet's tables over the Citus cluster this database is the
-- coordinator of.  Idempotent: a table already where it belongs is left
-- alone, so it can be called again after a failure or an update.
CREATE FUNCTION fleet.distribute()
RETURNS TABLE (table_name regclass, layout text, changed boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- (Citus's notice for each table it copies says what the result says)
SET client_min_messages = warning
AS $$
DECLARE
    t       record;
    in_place text;
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'permission denied to distribute pg_fleet'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Distributing changes every table of the extension, which a superuser owns.',
                  HINT = 'Call fleet.distribute() as the superuser that created the extension.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'fleet.distribute() needs the citus extension in this database'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Nothing was changed: pg_fleet keeps every table on this server.',
                  HINT = 'Install Citus, run CREATE EXTENSION citus on the coordinator and add the workers with citus_add_node(), then call fleet.distribute() again.';
    END IF;
    IF (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g) <> 0 THEN
        RAISE EXCEPTION 'fleet.distribute() runs on the Citus coordinator, and this node is a worker'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Nothing was changed.',
                  HINT = 'Connect to the coordinator and call it there.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node n WHERE n.groupid = 0) THEN
        RAISE EXCEPTION 'the Citus coordinator is not in its own node list'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Tables that stay on the coordinator (the enrollment groups) refer to reference tables, which needs it.',
                  HINT = 'Run SELECT citus_set_coordinator_host(''<this host>'', <port>); then call fleet.distribute() again.';
    END IF;

    -- Every node has pg_fleet's tables already (Citus created the extension
    -- on each): the foreign keys Citus drops and adds again on the way must
    -- not be sent to them, where they exist.
    PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true);
    -- the engine's steps lock these tables: it waits until this ends
    PERFORM fleet_internal.engine_step_aside();
    -- A transaction that wrote the devices' shards over several connections
    -- per node cannot then change a reference table that other tables refer
    -- to (jobs, batches, windows): sessions of this database use one
    -- connection per node (the engine sets it for itself).
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET citus.multi_shard_modify_mode = %L',
                              pg_catalog.current_database(), 'sequential');
    -- Citus serializes every write to a reference table (and to those it
    -- refers to) with an exclusive lock on their shards, taken table by
    -- table as statements come: the engine's step and an API call that
    -- write jobs, schedules and organizations in another order deadlock on
    -- them.  Commutative: row locks order such writes, as on one server
    -- (and a transaction still commits on every copy or on none).
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET citus.all_modifications_commutative = %L',
                              pg_catalog.current_database(), 'on');
    FOR t IN SELECT l.table_name, l.layout, l.distribution_column FROM fleet_internal.citus_layout() l LOOP
        SELECT CASE p.partmethod WHEN 'h' THEN 'distributed'
                                 WHEN 'n' THEN CASE WHEN p.repmodel = 't' THEN 'reference' ELSE 'local' END END
          INTO in_place
          FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = t.table_name;
        -- (a table Citus does not know stays on the coordinator)
        IF t.layout = 'local' THEN
            in_place := coalesce(in_place, 'local');
        END IF;
        IF in_place = t.layout THEN
            table_name := t.table_name; layout := t.layout; changed := false;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF in_place IS NOT NULL THEN
            RAISE EXCEPTION 'table % is a Citus % table, and pg_fleet needs it %', t.table_name, in_place, t.layout
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Undo it with undistribute_table(), then call fleet.distribute() again.';
        END IF;
        CASE t.layout
            WHEN 'reference' THEN
                PERFORM pg_catalog.create_reference_table(t.table_name);
            WHEN 'distributed' THEN
                PERFORM pg_catalog.create_distributed_table(t.table_name, t.distribution_column,
                    colocate_with => CASE WHEN t.table_name = 'fleet.devices'::regclass THEN 'default'
                                          ELSE 'fleet.devices' END);
                -- the coordinator's own copy of the rows is now on the
                -- shards (the small tables' stays: local tables refer to it)
                PERFORM pg_catalog.truncate_local_data_after_distributing_table(t.table_name);
        END CASE;
        table_name := t.table_name; layout := t.layout; changed := true;
        RETURN NEXT;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION fleet.distribute() IS 'On a Citus coordinator: makes devices and the per-device job rows distributed by device id (co-located), the small tables reference tables, and keeps keys on the coordinator; idempotent';
