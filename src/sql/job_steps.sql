-- The steps of a running job: one committed chunk of devices at a time,
-- batch after batch, with the cancellation threshold checked after each.
-- Property, cloud property, template and manifest jobs change devices here;
-- command jobs offer their devices to gateways a window at a time
-- (src/sql/command_windows.sql).  Every state change is committed with
-- the chunk that made it: after a crash the engine carries on from the
-- rows, repeating nothing and skipping nothing.  at is the engine's clock
-- (NULL: the real one).

-- True when failures exceed the threshold: strictly more than allowed.
CREATE FUNCTION fleet_internal.threshold_exceeded(kind text, allowed int, failures bigint, scope bigint)
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
CREATE FUNCTION fleet_internal.engine_finish_job(job fleet.jobs, final_status text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- windows with nothing claimed go now; the others once their claimed
    -- commands are answered or time out
    UPDATE fleet.command_windows w SET next_check = fleet_internal.transaction_moment(at) WHERE w.job_id = job.id;
    -- the batch under way gets its final counts (answers are counted when a
    -- batch ends, and this one ends here)
    UPDATE fleet.job_batches b
       SET status = 'cancelled', finished_at = fleet_internal.moment(at),
           completed = c.completed, failed = c.failed, timed_out = c.timed_out, rejected = c.rejected
      FROM (SELECT jb.batch,
                   count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                   count(*) FILTER (WHERE jd.status = 'failed') AS failed,
                   count(*) FILTER (WHERE jd.status = 'failed' AND jd.error = 'timed out') AS timed_out,
                   count(*) FILTER (WHERE jd.status = 'failed' AND fleet_internal.failure_type(jd.error) = 'REJECTED') AS rejected
              FROM fleet.job_batches jb
              JOIN fleet.job_devices jd ON jd.job_id = jb.job_id
                   AND jd.device_id >= jb.first_device AND jd.device_id <= jb.last_device AND jd.batch = jb.batch
             WHERE jb.job_id = job.id AND jb.status IN ('pending', 'running')
             GROUP BY jb.batch) c
     WHERE b.job_id = job.id AND b.batch = c.batch;
    UPDATE fleet.jobs j SET status = final_status, finished_at = fleet_internal.moment(at) WHERE j.id = job.id;
    PERFORM fleet_internal.job_event(job.id, final_status, job.current_batch);
END;
$$;

-- The expression that tells why a device cannot take this job's change, or
-- NULL when it can ("d" is the device, NULL when it was deleted).
CREATE FUNCTION fleet_internal.engine_device_problem(job fleet.jobs)
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
CREATE FUNCTION fleet_internal.engine_set_clause(job fleet.jobs)
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
    IF job.job_type = 'property' THEN
        -- a new desired version, at which each property the job sets
        -- changed: the MQTT endpoint sends it to the device as a patch, and
        -- fleet.device_property_sync compares the device's acknowledgement
        -- with it
        -- (the object written as text and cast: jsonb_build_object() is
        -- stable, and Citus sends no stable function over a device's
        -- columns to the shards)
        RETURN format('%I = %s, desired_version = d.desired_version + 1, desired_versions = d.desired_versions || (%s || ''}'')::jsonb',
                      column_name, expr,
                      (SELECT string_agg(format('%L || (d.desired_version + 1)::text',
                                                CASE WHEN x.n = 1 THEN '{' ELSE ', ' END || to_jsonb(x.e ->> 'path')::text || ': '),
                                         ' || ' ORDER BY x.n)
                         FROM jsonb_array_elements(job.data) WITH ORDINALITY AS x (e, n)));
    END IF;
    RETURN format('%I = %s', column_name, expr);
END;
$$;

-- Fails the devices of a chunk that cannot take the job's change, each
-- with its reason (problem: fleet_internal.engine_device_problem()), one
-- statement per distinct reason; there are a handful.  Returns how many
-- failed.
CREATE FUNCTION fleet_internal.engine_fail_unfit(job_id text, ids text[], problem text, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    failure  record;
    n_marked bigint;
    n_failed bigint := 0;
    -- (once: the clock is a function call per row in an UPDATE's SET)
    started  timestamptz := fleet_internal.transaction_moment(at);
    failed_at timestamptz := fleet_internal.moment(at);
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
           SET status = 'failed', error = failure.problem, started_at = started,
               finished_at = failed_at,
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
-- job: the next pending devices of the batch are changed and marked.  A
-- device completes exactly when the UPDATE wrote it (its RETURNING says
-- which); every other one fails with its reason.  Returns the number of
-- devices dealt with, and moves the batch's cursor.
CREATE FUNCTION fleet_internal.engine_apply_chunk(job fleet.jobs, b fleet.job_batches, chunk_size int,
                                                  at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    ids         text[];
    problem     text := fleet_internal.engine_device_problem(job);
    set_clause  text := fleet_internal.engine_set_clause(job);
    applied     text[];
    again       text[];
    missed      text[];
    n_applied   bigint;
    n_failed    bigint := 0;
    n_marked    bigint;
    chunk_last  text;
    done_at     timestamptz;
    shared_ranges boolean := job.rollout ?| '{continuous,canary}';
BEGIN
    -- The chunk: the next pending devices of the batch, in id order.  Its
    -- ids go into the statements below as an array, so each is an index
    -- lookup whatever the planner believes about freshly written tables.
    SELECT array_agg(c.device_id ORDER BY c.device_id) INTO ids
      FROM (SELECT jd.device_id FROM fleet.job_devices jd
             WHERE jd.job_id = job.id AND jd.device_id >= b.first_device AND jd.device_id <= b.last_device
               AND (b.cursor IS NULL OR jd.device_id > b.cursor) AND jd.status = 'pending'
               -- (a continuous job's or a canary's batches share ranges; for
               -- the others the planner drops this: plans are custom)
               AND (NOT shared_ranges OR jd.batch = b.batch)
             ORDER BY jd.device_id
             LIMIT chunk_size) c;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    chunk_last := ids[cardinality(ids)];

    -- the change, on every device that can take it: walked as a range of
    -- the primary key, the ids checked by hash (a lookup per id costs a
    -- third more); IS TRUE keeps the planner from turning the check into
    -- those lookups
    EXECUTE format('WITH changed AS (UPDATE fleet.devices d SET %s
                                      WHERE d.id >= $2 AND d.id <= $3 AND (d.id = ANY ($1)) IS TRUE AND (%s) IS NULL
                                      RETURNING d.id)
                    SELECT array_agg(c.id) FROM changed c',
                   set_clause, problem)
       INTO applied USING ids, ids[1], chunk_last;
    n_applied := coalesce(cardinality(applied), 0);
    done_at := fleet_internal.moment(at);

    IF n_applied = cardinality(ids) THEN
        -- the common case: the whole chunk took it, one range of job_devices
        UPDATE fleet.job_devices jd
           SET status = 'completed', started_at = done_at, finished_at = done_at
         WHERE jd.job_id = job.id AND jd.device_id >= ids[1] AND jd.device_id <= chunk_last
           AND jd.status = 'pending';
    ELSE
        IF n_applied > 0 THEN
            UPDATE fleet.job_devices jd
               SET status = 'completed', started_at = done_at, finished_at = done_at
             WHERE jd.job_id = job.id AND jd.device_id = ANY (applied) AND jd.status = 'pending';
        END IF;
        missed := ARRAY(SELECT u.id FROM unnest(ids) u(id) EXCEPT SELECT a.id FROM unnest(applied) a(id));
        -- those that cannot take the change, as the devices stand now, fail with the reason
        n_failed := fleet_internal.engine_fail_unfit(job.id, missed, problem, at);
        -- the others looked fit but were not written: deleted and created
        -- again, or changed, while the UPDATE waited for a lock.  One more
        -- try, each by its id, as they stand now
        missed := ARRAY(SELECT jd.device_id FROM fleet.job_devices jd
                         WHERE jd.job_id = job.id AND jd.device_id = ANY (missed) AND jd.status = 'pending');
        IF cardinality(missed) > 0 THEN
            EXECUTE format('WITH changed AS (UPDATE fleet.devices d SET %s
                                              WHERE d.id = ANY ($1) AND (%s) IS NULL
                                              RETURNING d.id)
                            SELECT array_agg(c.id) FROM changed c',
                           set_clause, problem)
               INTO again USING missed;
            UPDATE fleet.job_devices jd
               SET status = 'completed', started_at = done_at, finished_at = done_at
             WHERE jd.job_id = job.id AND jd.device_id = ANY (again) AND jd.status = 'pending';
            GET DIAGNOSTICS n_marked = ROW_COUNT;
            n_applied := n_applied + n_marked;
            UPDATE fleet.job_devices jd
               SET status = 'failed', started_at = done_at, finished_at = done_at,
                   error = 'the device changed while the job changed it; rerun the job to apply the change'
             WHERE jd.job_id = job.id AND jd.device_id = ANY (missed) AND jd.status = 'pending';
            GET DIAGNOSTICS n_marked = ROW_COUNT;
            n_failed := n_failed + n_marked;
        END IF;
    END IF;

    UPDATE fleet.job_batches jb
       SET completed = jb.completed + n_applied, failed = jb.failed + n_failed, cursor = chunk_last
     WHERE jb.job_id = b.job_id AND jb.batch = b.batch;
    -- desired properties moved: MQTT bridges (LISTEN fleet_desired) send
    -- the patches when this commits; no payload, as fleet_commands
    IF job.job_type = 'property' AND n_applied > 0 THEN
        PERFORM pg_notify('fleet_desired', '');
    END IF;
    RETURN cardinality(ids);
END;
$$;

-- Moves one running job forward by one chunk.  Returns true when it has
-- more work right away.
CREATE FUNCTION fleet_internal.engine_advance_job(job_id text, at timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    job        fleet.jobs;
    b          fleet.job_batches;
    -- smaller after a statement timeout (fleet_internal.engine_failed)
    chunk_size int := coalesce((SELECT s.step_size FROM fleet_internal.job_engine_state s
                                 WHERE s.job_id = engine_advance_job.job_id),
                               current_setting('fleet.engine_chunk_size')::int);
    dealt      bigint;
    left_over  bigint;                     -- devices of the batch still to deal with
    job_failed bigint;
    window_size int := current_setting('fleet.command_window')::int;
    out_now    record;                     -- command jobs: what the open windows hold
    open_failed bigint := 0;               -- command jobs: failures not yet counted into a batch
    allowance  record;                     -- a rate-limited job: what this step may dispatch
    rate_limited boolean;
    counted    bigint;                     -- failures the threshold counts, and out of how many
    scope      bigint;
    waits      text;                       -- why it waits: its windows, or its next batch's promotion
    outside    record;                     -- its maintenance windows now
    abort      record;                     -- the abort criterion its outcomes meet, if one is
    finished   record;                     -- its outcomes so far: completed, failed, timed out
    continuous boolean;                    -- it stays active: devices that join its group get it
    open_completed bigint := 0;            -- command jobs: outcomes in open windows, not yet in a batch
    open_timed_out bigint := 0;
    open_rejected  bigint := 0;
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
    UPDATE fleet.jobs j SET last_step_at = fleet_internal.moment(at) WHERE j.id = job.id;
    rate_limited := job.rollout ?| '{maximumPerMinute,exponentialRate}';
    -- (a rerun of a continuous job reruns its failed devices, no more)
    continuous := job.rollout ? 'continuous' AND job.rerun_of IS NULL;

    -- its rollout's end (src/sql/job_rollouts.sql)
    IF fleet_internal.rollout_end(job) <= fleet_internal.moment(at) THEN
        PERFORM fleet_internal.engine_end_job(job, at);
        RETURN false;
    END IF;
    -- its maintenance windows: outside them it waits for the next to open
    -- (what it dispatched goes on: commands offered may still be claimed)
    IF job.rollout ? 'maintenanceWindows' THEN
        SELECT * INTO outside FROM fleet_internal.maintenance_window_state(job.rollout, fleet_internal.moment(at));
        IF NOT outside.open THEN
            UPDATE fleet_internal.job_engine_state s SET not_before = outside.next_open WHERE s.job_id = job.id;
            waits := format('waiting: outside its maintenance windows; the next opens at %s',
                            fleet_internal.rest_timestamp(outside.next_open));
            UPDATE fleet.jobs j SET status_detail = waits
             WHERE j.id = job.id AND j.status_detail IS DISTINCT FROM waits;
            RETURN false;
        END IF;
        IF job.status_detail IS NOT NULL AND NOT rate_limited THEN
            UPDATE fleet.jobs j SET status_detail = NULL WHERE j.id = job.id;
        END IF;
    END IF;
    -- its rate: a step deals at most what the last minute leaves, and when
    -- that is nothing the job waits (it is passed over until then)
    IF rate_limited THEN
        SELECT * INTO allowance FROM fleet_internal.rollout_allowance(job, at);
        IF allowance.allowed = 0 THEN
            UPDATE fleet_internal.job_engine_state s SET not_before = allowance.wait_until WHERE s.job_id = job.id;
            IF allowance.spent AND job.status_detail IS NULL THEN
                UPDATE fleet.jobs j
                   SET status_detail = format('waiting: its rate, %s devices a minute, is reached', fleet_internal.rollout_rate(job))
                 WHERE j.id = job.id;
            END IF;
            RETURN false;
        END IF;
        chunk_size := least(chunk_size, allowance.allowed);
        IF job.status_detail IS NOT NULL THEN
            UPDATE fleet.jobs j SET status_detail = NULL WHERE j.id = job.id;
        END IF;
    END IF;

    SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = job.current_batch;
    -- a continuous job between its batches (or still without devices)
    IF continuous AND (b.status IS NULL OR b.status = 'completed') THEN
        IF fleet_internal.engine_continue(job, coalesce(job.current_batch, 0) + 1, at) THEN
            RETURN false;
        END IF;
        PERFORM fleet_internal.engine_finish_job(job,
            CASE WHEN EXISTS (SELECT 1 FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.failed > 0)
                 THEN 'failed' ELSE 'completed' END, at);
        RETURN false;
    END IF;
    IF job.current_batch IS NULL THEN           -- a job without devices
        PERFORM fleet_internal.engine_finish_job(job, 'completed', at);
        RETURN false;
    END IF;
    IF b.status = 'pending' THEN
        UPDATE fleet.job_batches jb SET status = 'running', started_at = fleet_internal.moment(at)
         WHERE jb.job_id = job.id AND jb.batch = b.batch;
        PERFORM fleet_internal.job_event(job.id, 'batchStarted', b.batch);
    END IF;

    IF job.job_type = 'command' THEN
        -- windows all answered are counted and closed; the rest are out
        SELECT * INTO out_now FROM fleet_internal.engine_close_windows(job, b);
        -- the job's window of outstanding commands, opened in halves: a
        -- half opens once a half has closed, so gateways always have one
        -- to claim from while the other's last answers come in, and the
        -- engine opens a few large windows instead of one per answer batch
        -- (each step has a fixed cost that shares the CPU with the gateways)
        IF out_now.outstanding <= window_size / 2 THEN
            dealt := fleet_internal.engine_open_window(job, b,
                         least(chunk_size, greatest(window_size / 2, 1), window_size - out_now.outstanding), at);
        ELSE
            dealt := 0;
        END IF;
        SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch;
        -- the threshold sees the open windows' failures too
        open_failed := out_now.failed;
        open_completed := out_now.completed;
        open_timed_out := out_now.timed_out;
        open_rejected := out_now.rejected;
        b.failed := b.failed + open_failed;
        -- the batch is done once every device was offered and every window
        -- closed.  Its counts are complete then: windows partition its
        -- deliveries, a window closes only when none is pending (and an
        -- outcome never changes), and devices without a delivery were
        -- counted when their window opened.
        left_over := CASE WHEN dealt = 0 AND out_now.outstanding = 0 THEN 0 ELSE 1 END;
    ELSE
        dealt := fleet_internal.engine_apply_chunk(job, b, chunk_size, at);
        SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch;
        -- a full chunk may not have been the batch's last: look again
        left_over := CASE WHEN dealt = chunk_size THEN 1 ELSE 0 END;
    END IF;

    IF dealt > 0 THEN
        IF rate_limited THEN
            PERFORM fleet_internal.record_dispatch(job.id, dealt, at);
        END IF;
        -- each step's progress (a listener reads the devices that finished
        -- since it last looked: fleet.job_devices by finished_at)
        PERFORM fleet_internal.job_event(job.id, 'progress', b.batch);
    END IF;

    -- cancellation threshold: strictly more failures than allowed (after a
    -- pause, more than allowed since it: threshold_base); it cancels the
    -- job, or pauses it
    IF job.threshold_type IS NOT NULL THEN
        SELECT sum(jb.failed) + open_failed INTO job_failed FROM fleet.job_batches jb WHERE jb.job_id = job.id;
        IF job.threshold_per_batch THEN
            counted := greatest(b.failed - job.threshold_base, 0);
            scope := b.size;
        ELSE
            counted := job_failed - job.threshold_base;
            scope := job.device_count;
        END IF;
        IF fleet_internal.threshold_exceeded(job.threshold_type, job.threshold_value, counted, scope) THEN
            IF job.rollout ->> 'onThreshold' = 'pause' THEN
                -- once resumed, the threshold counts the failures after these
                UPDATE fleet.jobs j SET threshold_base = job.threshold_base + counted WHERE j.id = job.id;
                PERFORM fleet_internal.engine_pause_job(job,
                    format('paused: %s failed %s passed its cancellation threshold (%s%s%s); resume it with fleet.resume_job()',
                           counted, CASE WHEN job.threshold_per_batch THEN 'devices of batch ' || b.batch ELSE 'devices' END,
                           job.threshold_value, CASE WHEN job.threshold_type = 'percentage' THEN ' %' ELSE '' END,
                           CASE WHEN job.threshold_per_batch THEN ' a batch' ELSE '' END), at);
            ELSE
                PERFORM fleet_internal.engine_finish_job(job, 'cancelled', at);
            END IF;
            RETURN false;
        END IF;
    END IF;

    -- abort criteria by failure type, over the finished devices of the job
    IF job.rollout ? 'abortCriteria' THEN
        SELECT sum(jb.completed)::bigint + open_completed AS completed, sum(jb.failed)::bigint + open_failed AS failed,
               sum(jb.timed_out)::bigint + open_timed_out AS timed_out,
               sum(jb.rejected)::bigint + open_rejected AS rejected
          INTO finished
          FROM fleet.job_batches jb WHERE jb.job_id = job.id;
        SELECT * INTO abort
          FROM fleet_internal.abort_criterion(job, finished.completed, finished.failed, finished.timed_out,
                                              finished.rejected);
        IF abort.action = 'PAUSE' THEN
            -- once resumed, the criteria count what finishes after this
            UPDATE fleet.jobs j
               SET abort_base = jsonb_build_object('completed', finished.completed, 'failed', finished.failed,
                                                   'timedOut', finished.timed_out, 'rejected', finished.rejected)
             WHERE j.id = job.id;
            PERFORM fleet_internal.engine_pause_job(job, abort.reason || '; resume it with fleet.resume_job()', at);
            RETURN false;
        ELSIF abort.action = 'CANCEL' THEN
            UPDATE fleet.jobs j SET status_detail = abort.reason WHERE j.id = job.id;
            PERFORM fleet_internal.engine_finish_job(job, 'cancelled', at);
            RETURN false;
        END IF;
    END IF;

    IF left_over > 0 THEN
        RETURN dealt > 0;
    END IF;

    -- the batch is done: on to the next, or the job is
    UPDATE fleet.job_batches jb SET status = 'completed', finished_at = fleet_internal.moment(at)
     WHERE jb.job_id = job.id AND jb.batch = b.batch;
    PERFORM fleet_internal.job_event(job.id, 'batchCompleted', b.batch);
    IF EXISTS (SELECT 1 FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch + 1) THEN
        -- (a batch's threshold counts from zero again)
        UPDATE fleet.jobs j
           SET current_batch = b.batch + 1,
               threshold_base = CASE WHEN j.threshold_per_batch THEN 0 ELSE j.threshold_base END
         WHERE j.id = job.id;
        -- staged promotion: the next batch may wait for a hand, or for this
        -- one's success (src/sql/job_rollouts.sql)
        IF job.rollout ? 'promotion' THEN
            SELECT jb.* INTO b FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.batch = b.batch;
            waits := fleet_internal.promotion_wait(job, b);
            IF waits IS NOT NULL THEN
                PERFORM fleet_internal.engine_pause_job(job, waits, at);
                RETURN false;
            END IF;
        END IF;
        RETURN true;
    END IF;
    IF continuous THEN
        RETURN true;                            -- the next step looks for devices that joined
    END IF;
    PERFORM fleet_internal.engine_finish_job(job,
        CASE WHEN EXISTS (SELECT 1 FROM fleet.job_batches jb WHERE jb.job_id = job.id AND jb.failed > 0)
             THEN 'failed' ELSE 'completed' END, at);
    RETURN false;
END;
$$;

-- Fails a job the engine gave up on (its steps kept failing): the error is
-- the job's, its devices that never ran stay pending (fleet.resume_job()
-- carries on with them), and its claimed commands may still be answered or
-- time out.
CREATE FUNCTION fleet_internal.engine_give_up(job_id text, message text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE fleet.jobs j SET status = 'failed', error = message, finished_at = fleet_internal.moment(at)
     WHERE j.id = engine_give_up.job_id;
    UPDATE fleet.command_windows w SET next_check = fleet_internal.transaction_moment(at) WHERE w.job_id = engine_give_up.job_id;
    PERFORM fleet_internal.job_event(engine_give_up.job_id, 'failed');
END;
$$;
