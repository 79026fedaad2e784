-- The engine's turn (its worker, src/engine.c, runs each part in a
-- transaction of its own):
--
--   fleet_internal.engine_plan()    housekeeping, then the job to serve next,
--                                   its attempt marked and committed
--   fleet_internal.engine_run()     that job's step: its start (job_batches.sql)
--                                   or one chunk (job_steps.sql)
--   fleet_internal.engine_failed()  when the step failed: retry later, or
--                                   give the job up
--
-- fleet_internal.engine_step() runs one whole turn in one transaction, for
-- tests and for driving the engine by hand.  Every function takes the
-- engine's clock, at (NULL: the real one), so tests move time instead of
-- writing engine columns or sleeping.
--
-- Failures.  Contention (deadlocks, lock timeouts, serialization failures,
-- a cancel, a full disk or memory) is retried with backoff for as long as
-- it lasts: it says nothing about the job.  Any other error is retried
-- with backoff fleet.job_max_retries times in a row, then the job fails
-- with it (fleet.resume_job() carries on with its pending devices once the
-- cause is fixed).  A step that runs over fleet.engine_statement_timeout
-- is retried with chunks half the size.  A step during which the engine
-- stopped (a crash, kill -9) counts as a failure of its job, so a job that
-- crashes the engine cannot put the server in a crash loop.

-- Wakes the engine when the current transaction commits: queued, stopped
-- and resumed jobs are seen at once, not at the next poll.  C: it looks no
-- names up.
CREATE FUNCTION fleet_internal.wake_engine()
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_engine';
COMMENT ON FUNCTION fleet_internal.wake_engine() IS 'Wakes the job engine when the current transaction commits';

CREATE FUNCTION fleet_internal.engine_pid()
RETURNS int
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'engine_pid';
COMMENT ON FUNCTION fleet_internal.engine_pid() IS 'The process id of the job engine serving this database, or NULL when none does';

-- The engine as its shared memory shows it (src/engine_shared.c).
CREATE FUNCTION fleet_internal.engine_activity(OUT pid int, OUT database text, OUT state text, OUT note text,
                                               OUT started_at timestamptz, OUT last_step_at timestamptz,
                                               OUT steps bigint, OUT errors bigint,
                                               OUT last_error text, OUT last_error_at timestamptz)
RETURNS record
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'engine_activity';

-- Whether an error is contention, which passes and never fails a job:
-- deadlocks, lock and serialization conflicts, a cancel, resources that
-- ran out for a while.
CREATE FUNCTION fleet_internal.is_contention(sqlstate text, message text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sqlstate IN ('40001', '40P01', '55P03', '55006', '25006')     -- serialization, deadlock, lock, in use, read-only
        OR left(sqlstate, 2) IN ('53', '08', '58')                        -- resources, connections, I/O
        OR (sqlstate = '57014' AND message NOT LIKE '%statement timeout%') -- a cancel, not our timeout
$$;

-- A step failed: the job tries again after a backoff (1 s, 2 s, ... up to a
-- minute), or fails when its errors will repeat.  Logs what it does.
CREATE FUNCTION fleet_internal.engine_failed(job_id text, action text, sqlstate text, message text,
                                             at timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_ts      timestamptz := fleet_internal.moment(at);
    contention  boolean := fleet_internal.is_contention(sqlstate, message);
    timed_out   boolean := sqlstate = '57014' AND NOT contention;
    max_retries int := current_setting('fleet.job_max_retries')::int;
    -- (a value, not a call in the UPDATE: Citus allows no stable function
    -- in the CASE of a statement it sends to the nodes)
    chunk_size  int := current_setting('fleet.engine_chunk_size')::int;
    state       fleet_internal.job_engine_state;
    backoff     interval;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.id = engine_failed.job_id) THEN
        RETURN;                 -- purged meanwhile
    END IF;
    INSERT INTO fleet_internal.job_engine_state AS s (job_id) VALUES (engine_failed.job_id)
    ON CONFLICT ON CONSTRAINT job_engine_state_pkey DO NOTHING;
    UPDATE fleet_internal.job_engine_state s
       SET failures = s.failures + 1, last_error = message, last_error_at = now_ts,
           step_started_at = NULL, action = NULL,
           -- a chunk that ran out of time is tried again at half its size
           step_size = CASE WHEN timed_out AND engine_failed.action = 'advance'
                            THEN greatest(coalesce(s.step_size, chunk_size) / 2, 1)
                            ELSE s.step_size END
     WHERE s.job_id = engine_failed.job_id
    RETURNING s.* INTO state;

    IF NOT contention AND state.failures > max_retries THEN
        PERFORM fleet_internal.engine_give_up(job_id,
            format('%s (the engine gave up after %s failed %s)', message, state.failures,
                   CASE WHEN state.failures = 1 THEN 'attempt' ELSE 'attempts' END), at);
        UPDATE fleet_internal.job_engine_state s SET next_retry_at = NULL WHERE s.job_id = engine_failed.job_id;
        RAISE WARNING 'pg_fleet engine: job "%" failed: %', job_id, message
            USING DETAIL = format('SQLSTATE %s; %s failed %s in a row.', sqlstate, action,
                                  CASE WHEN state.failures = 1 THEN 'once' ELSE state.failures || ' times' END),
                  HINT = 'Fix the cause, then carry on with its pending devices with fleet.resume_job().';
        RETURN;
    END IF;

    backoff := least(interval '1 second' * power(2, least(state.failures, 7) - 1), interval '1 minute');
    UPDATE fleet_internal.job_engine_state s SET next_retry_at = now_ts + backoff WHERE s.job_id = engine_failed.job_id;
    IF contention THEN
        RAISE LOG 'pg_fleet engine: job "%" waits: %; it tries again in %', job_id, message, backoff
            USING DETAIL = format('SQLSTATE %s, attempt %s.', sqlstate, state.failures);
    ELSE
        RAISE WARNING 'pg_fleet engine: step of job "%" failed: %; it tries again in %', job_id, message, backoff
            USING DETAIL = format('SQLSTATE %s, attempt %s of %s.', sqlstate, state.failures, max_retries + 1);
    END IF;
END;
$$;

-- The chores of every turn, each guarded: one that fails is logged and the
-- others go on.  Returns whether one has more to do right away.
CREATE FUNCTION fleet_internal.engine_housekeeping(at timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    more    boolean := false;
    chore   text;
    message text;
BEGIN
    FOREACH chore IN ARRAY ARRAY['expire_commands', 'check_schedules', 'reconcile_cron',
                                 'refresh_statistics', 'purge', 'record_failed_imports'] LOOP
        BEGIN
            CASE chore
            WHEN 'expire_commands' THEN PERFORM fleet_internal.expire_commands(at);
            WHEN 'check_schedules' THEN PERFORM fleet_internal.check_schedules(at);
            WHEN 'reconcile_cron' THEN PERFORM fleet_internal.reconcile_cron(at);
            WHEN 'refresh_statistics' THEN PERFORM fleet_internal.refresh_statistics();
            WHEN 'purge' THEN more := fleet_internal.purge(at) OR more;
            WHEN 'record_failed_imports' THEN PERFORM fleet_internal.record_failed_imports();
            END CASE;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            RAISE WARNING 'pg_fleet engine: % failed: %', replace(chore, '_', ' '), message;
        END;
    END LOOP;
    RETURN more;
END;
$$;

-- Refreshes job_devices' statistics after a big fan-out, unless VACUUM or
-- CREATE INDEX CONCURRENTLY holds the table: the engine never waits on
-- maintenance (NOWAIT), and never makes autovacuum give way to it (it does
-- not queue for the lock).  It tries again next turn.
CREATE FUNCTION fleet_internal.refresh_statistics()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (SELECT s.analyze_wanted FROM fleet_internal.engine_state s) THEN
        BEGIN
            LOCK TABLE fleet.job_devices IN SHARE UPDATE EXCLUSIVE MODE NOWAIT;
            ANALYZE fleet.job_devices;
            UPDATE fleet_internal.engine_state SET analyze_wanted = false;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END IF;
END;
$$;

-- How long the engine may sleep when it has no job to serve now: until a
-- job's retry, the end of its rate's wait, a command's deadline, a schedule's misfire check, or the
-- naptime; at most 50 ms while command jobs run (answers do not wake it:
-- a wake-up per answer batch cost a core at 25,000 answers a second).
CREATE FUNCTION fleet_internal.engine_nap(at timestamptz)
RETURNS int
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_ts  timestamptz := fleet_internal.moment(at);
    naptime int := (extract(epoch FROM current_setting('fleet.engine_naptime')::interval) * 1000)::int;
    next_due timestamptz;
BEGIN
    IF EXISTS (SELECT 1 FROM fleet.jobs j WHERE j.status = 'running' AND j.job_type = 'command') THEN
        naptime := least(naptime, 50);
    END IF;
    SELECT least((SELECT min(w.next_check) FROM fleet.command_windows w),
                 (SELECT min(s.next_retry_at) FROM fleet_internal.job_engine_state s WHERE s.next_retry_at > now_ts),
                 (SELECT min(s.not_before) FROM fleet_internal.job_engine_state s WHERE s.not_before > now_ts),
                 (SELECT min(sj.next_run_at) + current_setting('fleet.schedule_misfire_grace')::interval
                    FROM fleet.scheduled_jobs sj WHERE sj.enabled))
      INTO next_due;
    -- (compared first: a far or infinite time does not fit an interval in ms)
    IF next_due < now_ts + make_interval(secs => naptime / 1000.0) THEN
        naptime := greatest(10, ceil(extract(epoch FROM next_due - now_ts) * 1000)::int + 5);
    END IF;
    RETURN naptime;
END;
$$;

-- The first part of a turn: the chores, then the job to serve, its attempt
-- marked (committed before the step runs, so a crash during it is seen).
-- Queued jobs start in order while there is room: fleet.max_running_jobs
-- in all, and fleet.max_running_jobs_per_organization for each
-- organization below root (with those below it); running jobs take turns,
-- the one served longest ago first (SKIP LOCKED: a job someone holds does
-- not stop the rotation).  A job waiting for its retry is passed over.
-- starting: the engine has just started (after an outage).
CREATE FUNCTION fleet_internal.engine_plan(at timestamptz DEFAULT NULL, starting boolean DEFAULT false,
                                           OUT job_id text, OUT action text, OUT nap_ms int)
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- job tables change fast and their statistics lag: plan with the values at hand
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    now_ts      timestamptz := fleet_internal.moment(at);
    max_running int := current_setting('fleet.max_running_jobs')::int;
    share       int := coalesce(nullif(current_setting('fleet.max_running_jobs_per_organization')::int, 0),
                                greatest(current_setting('fleet.max_running_jobs')::int - 1, 1));
    more        boolean;
    stopped     record;
BEGIN
    IF starting THEN
        PERFORM fleet_internal.engine_refresh_windows(at);
        UPDATE fleet_internal.engine_state SET cron_version = cron_version + 1;
    END IF;
    more := fleet_internal.engine_housekeeping(at);

    -- a step that never finished: the engine stopped during it
    FOR stopped IN SELECT s.job_id, s.action FROM fleet_internal.job_engine_state s
                    WHERE s.step_started_at IS NOT NULL LOOP
        PERFORM fleet_internal.engine_failed(stopped.job_id, stopped.action, 'XX000',
                                             'the engine stopped during a step of this job', at);
    END LOOP;

    WITH running AS (
        SELECT fleet_internal.top_organization(o.path) AS top, count(*) AS n
          FROM fleet.jobs r JOIN fleet.organizations o ON o.id = r.organization_id
         WHERE r.status = 'running'
         GROUP BY 1
    )
    SELECT j.id, CASE WHEN j.status = 'pending' THEN 'start' ELSE 'advance' END
      INTO job_id, action
      FROM fleet.jobs j
      JOIN fleet.organizations o ON o.id = j.organization_id
      LEFT JOIN fleet_internal.job_engine_state s ON s.job_id = j.id
     WHERE j.status IN ('pending', 'running') AND j.deleted_at IS NULL
       AND (s.next_retry_at IS NULL OR s.next_retry_at <= now_ts)
       AND (s.not_before IS NULL OR s.not_before <= now_ts)
       AND (j.status = 'running'
            OR ((SELECT coalesce(sum(r.n), 0) FROM running r) < max_running
                AND coalesce((SELECT r.n FROM running r WHERE r.top = fleet_internal.top_organization(o.path)), 0) < share))
     ORDER BY j.last_step_at NULLS FIRST, j.queued_at, j.id
     LIMIT 1
       FOR NO KEY UPDATE OF j SKIP LOCKED;

    IF job_id IS NULL THEN
        nap_ms := CASE WHEN more THEN 0 ELSE fleet_internal.engine_nap(at) END;
        RETURN;
    END IF;
    INSERT INTO fleet_internal.job_engine_state AS s (job_id, action, step_started_at)
    VALUES (job_id, action, now_ts)
    ON CONFLICT ON CONSTRAINT job_engine_state_pkey DO UPDATE
       SET action = excluded.action, step_started_at = excluded.step_started_at;
    -- the rotation moves on even if the step fails
    UPDATE fleet.jobs j SET last_step_at = now_ts WHERE j.id = engine_plan.job_id;
    nap_ms := 0;
END;
$$;

-- The second part: the planned job's step.  Returns whether it has more
-- to do right away.  Done, the job's retry state starts over.
CREATE FUNCTION fleet_internal.engine_run(job_id text, action text, at timestamptz DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job  fleet.jobs;
    more boolean := false;
BEGIN
    IF action = 'start' THEN
        -- SKIP LOCKED: a stop under way wins, and the job waits its turn
        SELECT j.* INTO job FROM fleet.jobs j
         WHERE j.id = engine_run.job_id AND j.status = 'pending' AND j.deleted_at IS NULL
           FOR NO KEY UPDATE SKIP LOCKED;
        IF FOUND THEN
            PERFORM fleet_internal.engine_start_job(job, at);
            more := true;
        END IF;
    ELSE
        more := fleet_internal.engine_advance_job(job_id, at);
    END IF;
    UPDATE fleet_internal.job_engine_state s
       SET step_started_at = NULL, action = NULL, failures = 0, next_retry_at = NULL
     WHERE s.job_id = engine_run.job_id;
    RETURN more;
END;
$$;

-- One whole turn in one transaction: the plan, the step, and a failure
-- recorded (in a subtransaction, as the worker does in a transaction of
-- its own).  For tests, which pass the clock, and for driving the engine
-- by hand.  Returns how many milliseconds the engine would sleep.
CREATE FUNCTION fleet_internal.engine_step(at timestamptz DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    plan    record;
    more    boolean;
    state   text;
    message text;
BEGIN
    SELECT * INTO plan FROM fleet_internal.engine_plan(at);
    IF plan.job_id IS NULL THEN
        RETURN plan.nap_ms;
    END IF;
    BEGIN
        more := fleet_internal.engine_run(plan.job_id, plan.action, at);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
        PERFORM fleet_internal.engine_failed(plan.job_id, plan.action, state, message, at);
        RETURN 0;
    END;
    RETURN CASE WHEN more THEN 0 ELSE plan.nap_ms END;
END;
$$;
COMMENT ON FUNCTION fleet_internal.engine_step(timestamptz) IS 'One turn of the job engine in one transaction (its worker runs the parts in transactions of their own); at is the engine''s clock';
