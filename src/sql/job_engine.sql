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
