-- The engine's side of command jobs: it offers a command batch's devices to
-- gateways a window at a time (fleet.command_windows: a range of delivery
-- ids, at most fleet.command_window outstanding), counts a window once all
-- of it has an outcome, and times out what nobody answered.  Gateways
-- claim and answer through src/sql/command_claims.sql.  at is the engine's clock
-- (NULL: the real one).

-- Opens the next window of a command batch: its next devices (at most
-- size), in device order, become claimable by gateways, as one range of
-- delivery ids.  Simulated devices are answered at once; devices the
-- command cannot reach fail, with no delivery.  Returns the number of
-- devices dealt with (0: the batch has no more).
CREATE FUNCTION fleet_internal.engine_open_window(job fleet.jobs, b fleet.job_batches, size bigint, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    timeout       interval := fleet_internal.command_timeout(job.rollout);
    problem       text := fleet_internal.engine_device_problem(job);
    now_ts        timestamptz := fleet_internal.transaction_moment(at);
    ids           text[];
    first_id      bigint;
    last_id       bigint;
    simulated_ids text[];
    n_reachable   bigint;
    n_failed      bigint := 0;
    shared_ranges boolean := job.rollout ?| '{continuous,canary}';
    window_end    text;
BEGIN
    -- the next devices after the cursor: every row of the range (a window
    -- is a range of delivery ids, so it takes them all)
    SELECT array_agg(c.device_id ORDER BY c.device_id), min(c.delivery_id), max(c.delivery_id)
      INTO ids, first_id, last_id
      FROM (SELECT jd.device_id, jd.delivery_id FROM fleet.job_devices jd
             WHERE jd.job_id = job.id AND jd.device_id >= b.first_device AND jd.device_id <= b.last_device
               AND (b.cursor IS NULL OR jd.device_id > b.cursor)
               -- (a continuous job's or a canary's batches share ranges; for
               -- the others the planner drops this: plans are custom)
               AND (NOT shared_ranges OR jd.batch = b.batch)
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
        n_failed := fleet_internal.engine_fail_unfit(job.id, ids, problem, at);
    END IF;
    IF simulated_ids IS NOT NULL THEN
        UPDATE fleet.job_devices jd
           SET status = 'completed', gateway = 'simulator', started_at = now_ts, finished_at = now_ts,
               response_status = 200, response = '{"simulated": true}'
         WHERE jd.job_id = job.id AND jd.device_id = ANY (simulated_ids) AND jd.status = 'pending';
    END IF;

    INSERT INTO fleet.command_windows (job_id, batch, first_delivery, last_delivery, opened_at, deadline, next_check)
    VALUES (job.id, b.batch, first_id, last_id, now_ts, now_ts + timeout, now_ts + timeout);
    IF n_reachable > coalesce(cardinality(simulated_ids), 0) THEN
        -- (the payload says nothing: anyone may LISTEN)
        PERFORM pg_notify('fleet_commands', '');
    END IF;
    -- devices without a delivery are in no window: they count here.  (The
    -- last id as a value: Citus 13.2 crashes deparsing a subscript of a
    -- parameter in an UPDATE's SET.)
    window_end := ids[cardinality(ids)];
    UPDATE fleet.job_batches jb SET cursor = window_end, failed = jb.failed + n_failed
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
CREATE FUNCTION fleet_internal.engine_close_windows(job fleet.jobs, b fleet.job_batches,
                                           OUT outstanding bigint, OUT failed bigint,
                                           OUT completed bigint, OUT timed_out bigint, OUT rejected bigint)
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
    completed := 0;
    timed_out := 0;
    rejected := 0;
    FOR w IN
        SELECT cw.* FROM fleet.command_windows cw
         WHERE cw.job_id = job.id AND cw.batch = b.batch
         ORDER BY cw.first_delivery
    LOOP
        -- failures its rollout retries are offered again, not counted
        IF job.rollout ? 'retries' THEN
            PERFORM fleet_internal.engine_retry_failures(job, w, NULL);
        END IF;
        -- (not EXISTS: the planner drops an EXISTS query's ORDER BY)
        PERFORM FROM fleet.job_devices jd
          WHERE jd.delivery_id IS NOT NULL
            AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
            AND jd.status = 'pending'
          ORDER BY jd.delivery_id DESC
          LIMIT 1;
        IF FOUND THEN
            outstanding := outstanding + (w.last_delivery - w.first_delivery + 1);
            -- what a threshold or abort criteria count: the outcomes so far
            IF job.threshold_type IS NOT NULL OR job.rollout ? 'abortCriteria' THEN
                SELECT count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                       count(*) FILTER (WHERE jd.status = 'failed') AS failed,
                       count(*) FILTER (WHERE jd.status = 'failed' AND jd.error = 'timed out') AS timed_out,
                       count(*) FILTER (WHERE jd.status = 'failed' AND fleet_internal.failure_type(jd.error) = 'REJECTED') AS rejected
                  INTO counts
                  FROM fleet.job_devices jd
                 WHERE jd.delivery_id IS NOT NULL
                   AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
                   AND jd.status <> 'pending';
                failed := failed + counts.failed;
                completed := completed + counts.completed;
                timed_out := timed_out + counts.timed_out;
                rejected := rejected + counts.rejected;
            END IF;
        ELSE
            SELECT count(*) FILTER (WHERE jd.status = 'completed') AS completed,
                   count(*) FILTER (WHERE jd.status = 'failed') AS failed,
                   count(*) FILTER (WHERE jd.status = 'failed' AND jd.error = 'timed out') AS timed_out,
                   count(*) FILTER (WHERE jd.status = 'failed' AND fleet_internal.failure_type(jd.error) = 'REJECTED') AS rejected
              INTO counts
              FROM fleet.job_devices jd
             WHERE jd.delivery_id IS NOT NULL
               AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery;
            UPDATE fleet.job_batches jb
               SET completed = jb.completed + counts.completed, failed = jb.failed + counts.failed,
                   timed_out = jb.timed_out + counts.timed_out, rejected = jb.rejected + counts.rejected
             WHERE jb.job_id = b.job_id AND jb.batch = b.batch;
            DELETE FROM fleet.command_windows cw WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        END IF;
    END LOOP;
END;
$$;

-- Fails every command past its deadline as "timed out".  The engine calls
-- it every step; it is safe to call at any time.  Only windows whose
-- next_check has come are read, so a step with nothing overdue costs a
-- look at a few window rows.
--
-- A window of a job that is not running (stopped, or finished) is looked
-- at again every fleet.command_timeout: a claim that read the job as
-- running just before it stopped commits after that, and its command must
-- still time out.  A finished job's window goes once nothing in it is
-- claimed and the job finished a timeout ago (no claim takes that long).
CREATE FUNCTION fleet_internal.expire_commands(at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    timeout   interval := current_setting('fleet.command_timeout')::interval;
    now_ts    timestamptz := fleet_internal.transaction_moment(at);
    -- (once: the clock is a function call per row in an UPDATE's SET)
    expired_at timestamptz := fleet_internal.moment(at);
    expired   bigint := 0;
    n_expired bigint;
    w         record;
    still_out record;
    next_look timestamptz;
    on_shards boolean := fleet_internal.citus_table('fleet.job_devices');
BEGIN
    -- one statement per due window (a handful: windows are few, and due
    -- only when something in them is overdue)
    FOR w IN
        SELECT cw.job_id, cw.first_delivery, cw.last_delivery, cw.deadline, j.status = 'running' AS running,
               -- (a job the engine gave up on may be resumed: its windows stay)
               j.status IN ('completed', 'failed', 'cancelled') AND j.error IS NULL
               AND j.finished_at < now_ts - greatest(timeout, fleet_internal.command_timeout(j.rollout)) AS long_finished,
               fleet_internal.command_timeout(j.rollout) AS job_timeout
          FROM fleet.command_windows cw JOIN fleet.jobs j ON j.id = cw.job_id
         WHERE cw.next_check <= now_ts
           FOR NO KEY UPDATE OF cw
    LOOP
        -- now_ts: the step's start, so one step draws one line.  A claimed
        -- command without a deadline (none of ours) is overdue.  SKIP
        -- LOCKED: a row a gateway holds (a claim or an answer not yet
        -- committed) waits for the next look, not the engine for it.
        IF on_shards THEN
            -- on Citus SKIP LOCKED works within one shard only: the rows
            -- are updated where they are, a held one waited for (within
            -- fleet.engine_lock_timeout, then the next look)
            UPDATE fleet.job_devices jd
               SET status = 'failed', error = 'timed out', finished_at = expired_at
             WHERE jd.delivery_id IS NOT NULL
               AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
               AND jd.status = 'pending'
               AND CASE WHEN jd.gateway IS NOT NULL THEN coalesce(jd.deadline < now_ts, true)
                        ELSE w.running AND w.deadline < now_ts END;
        ELSE
            WITH overdue AS (
                SELECT jd.delivery_id FROM fleet.job_devices jd
                 WHERE jd.delivery_id IS NOT NULL
                   AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
                   AND jd.status = 'pending'
                   AND CASE WHEN jd.gateway IS NOT NULL THEN coalesce(jd.deadline < now_ts, true)
                            ELSE w.running AND w.deadline < now_ts END
                   FOR UPDATE SKIP LOCKED
            )
            UPDATE fleet.job_devices jd
               SET status = 'failed', error = 'timed out', finished_at = expired_at
              FROM overdue o
             WHERE jd.delivery_id = o.delivery_id AND jd.delivery_id IS NOT NULL;
        END IF;
        GET DIAGNOSTICS n_expired = ROW_COUNT;
        expired := expired + n_expired;

        -- what is still out: claimed (and when the first is due), unclaimed
        SELECT min(jd.deadline) FILTER (WHERE jd.gateway IS NOT NULL) AS first_due,
               count(*) FILTER (WHERE jd.gateway IS NOT NULL) AS n_claimed,
               count(*) FILTER (WHERE jd.gateway IS NULL) AS n_unclaimed
          INTO still_out
          FROM fleet.job_devices jd
         WHERE jd.delivery_id IS NOT NULL
           AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
           AND jd.status = 'pending';
        IF w.long_finished AND still_out.n_claimed = 0 THEN
            DELETE FROM fleet.command_windows cw
             WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        ELSE
            -- the window's next chance of a timeout: its claimed commands'
            -- deadlines; its unclaimed ones' while the job runs (a second
            -- from now if that has passed: some were held); else a look a
            -- timeout from now (computed here: timestamptz + interval is
            -- not immutable, which Citus refuses in an UPDATE's CASE)
            next_look := least(still_out.first_due,
                               CASE WHEN NOT w.running THEN now_ts + w.job_timeout
                                    WHEN still_out.n_unclaimed > 0
                                    THEN greatest(w.deadline, now_ts + interval '1 second') END);
            UPDATE fleet.command_windows cw
               SET next_check = next_look
             WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        END IF;
    END LOOP;
    RETURN expired;
END;
$$;
COMMENT ON FUNCTION fleet_internal.expire_commands(timestamptz) IS 'Fails command deliveries past their deadline as timed out; returns how many';

-- After the engine was away (the server was down, or the engine was
-- stopped or crashed), the unclaimed commands of running jobs get a fresh
-- deadline: they could not be claimed from a server that was down, and
-- that is not their devices' fault.  Claimed ones keep theirs: their
-- devices may have run them.
CREATE FUNCTION fleet_internal.engine_refresh_windows(at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j record;
BEGIN
    -- job by job, its timeout a value (Citus sends no stable function over
    -- a row's columns in an UPDATE to the nodes)
    FOR j IN SELECT r.id, fleet_internal.transaction_moment(at) + fleet_internal.command_timeout(r.rollout) AS due
               FROM fleet.jobs r
              WHERE r.status = 'running' AND EXISTS (SELECT 1 FROM fleet.command_windows w WHERE w.job_id = r.id)
    LOOP
        UPDATE fleet.command_windows w SET deadline = j.due
         WHERE w.job_id = j.id AND w.deadline < j.due;
    END LOOP;
END;
$$;
