-- Rollout controls: pg_fleet's extensions to IoT Central's job body, under
-- one key, "rollout", so that IoT Central's own fields keep their meaning:
--
--   "rollout": {
--     "maximumPerMinute": 1000,                     devices dispatched a minute, at most
--     "exponentialRate": {                          a ramp, as AWS IoT Jobs defines it
--       "baseRatePerMinute": 50, "incrementFactor": 2,
--       "rateIncreaseCriteria": {"numberOfNotifiedDevices": 100}
--                            or {"numberOfSucceededDevices": 100}},
--     "onThreshold": "pause",                       the cancellation threshold pauses (default "cancel")
--     "abortCriteria": [{"failureType": "TIMED_OUT", as AWS IoT Jobs: more than 10 % of at least 100
--       "thresholdPercentage": 10,                  finished devices failed so (FAILED: not by a
--       "minNumberOfExecutedDevices": 100,          timeout, TIMED_OUT, ALL) cancels the job, or
--       "action": "PAUSE"}],                        pauses it
--     "canary": {"devices": ["id", ...]}            a first batch of these devices (those of the
--            or {"group": "canaries"}               job's group), before the batches it asks for
--     "promotion": {"mode": "manual"}               each next batch waits for fleet.advance_job(), or
--               {"successPercentage": 95}           starts only when the last reached 95 % (else pauses)
--     "maintenanceWindows": [                       dispatch only inside these weekly windows,
--       {"days": ["SAT", "SUN"], "start": "02:00", "duration": "PT4H"}],
--     "timeZone": "Europe/Berlin",                  in this time zone (default UTC), DST-correct
--     "continuous": true,                           the job stays active: devices that join its group
--     "maximumDevices": 50000,                      later get it, once each, up to this many in all
--     "retries": [{"failureType": "TIMED_OUT",     a command job's failed devices are offered
--       "numberOfRetries": 3,                       again (AWS IoT Jobs' retry config), after a
--       "backoff": {"type": "exponential",          backoff: fixed or doubling from base, at most
--                   "base": "PT10S", "maximum": "PT5M", "jitter": true}}],   maximum, with jitter
--     "commandTimeout": "PT2M",
--     "inProgressTimeout": "PT30M",                 a command the device reported under way (202)
--                                                   must end this long after its last report                     a command job's timeout (default fleet.command_timeout)
--     "endTime": "2026-12-24T18:00:00Z",            the job ends then ...
--     "maximumDuration": "PT6H",                    ... or this long after it started
--     "endBehavior": "STOP_ROLLOUT"                 ... and stops (resumable), "CANCEL"s, or
--   }                                               "FORCE_CANCEL"s (fails what is in flight)
--
-- Dispatched: a property-type job's device changed, a command job's device
-- offered to gateways.  Every step of a rate-limited job records what it
-- dispatched (fleet_internal.job_dispatches, committed with the step), so
-- the rate holds over any minute, across batches and engine restarts.
-- Every change of a job's or a batch's state, and each step's progress,
-- is announced on the channel fleet_jobs (fleet_internal.job_event()).

-- An ISO 8601 duration ("PT30S") or a number of seconds, as an interval
-- between bounds, or an error naming the value.
CREATE FUNCTION fleet_internal.rollout_interval(value jsonb, what text, low interval, high interval)
RETURNS interval
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result interval;
BEGIN
    BEGIN
        result := CASE jsonb_typeof(value)
                  WHEN 'number' THEN make_interval(secs => (value #>> '{}')::float8)
                  WHEN 'string' THEN (value #>> '{}')::interval END;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow
                   OR numeric_value_out_of_range THEN
        result := NULL;
    END;
    IF result IS NULL OR result < low OR result > high THEN
        RAISE EXCEPTION '% % is not a duration from % to %', what, value, low, high
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write an ISO 8601 duration such as "PT30S" or "PT2H", or a number of seconds.';
    END IF;
    RETURN result;
END;
$$;

-- A whole number between bounds, or an error naming the value.
CREATE FUNCTION fleet_internal.rollout_count(value jsonb, what text, low bigint, high bigint)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(value) IS DISTINCT FROM 'number' OR (value #>> '{}')::numeric <> trunc((value #>> '{}')::numeric)
       OR (value #>> '{}')::numeric NOT BETWEEN low AND high THEN
        RAISE EXCEPTION '% % is not a whole number from % to %', what, coalesce(value::text, 'null'), low, high
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (value #>> '{}')::bigint;
END;
$$;

-- A rollout's "maintenanceWindows", checked: a non-empty array of weekly
-- windows {"days": ["MON".."SUN"], "start": "HH:MM", "duration": ISO 8601},
-- each as the engine reads it (days as ISO day numbers, 1 = Monday).
CREATE FUNCTION fleet_internal.maintenance_windows(windows jsonb, label text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb := '[]';
    w      jsonb;
    n      int := 0;
    what   text;
    days   int[];
BEGIN
    IF jsonb_typeof(windows) IS DISTINCT FROM 'array' OR jsonb_array_length(windows) NOT BETWEEN 1 AND 50 THEN
        RAISE EXCEPTION '"maintenanceWindows" of % must be an array of 1 to 50 windows, not %', label, windows
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write [{"days": ["SAT", "SUN"], "start": "02:00", "duration": "PT4H"}].';
    END IF;
    FOR w IN SELECT e FROM jsonb_array_elements(windows) e LOOP
        n := n + 1;
        what := format('maintenance window %s of %s', n, label);
        IF jsonb_typeof(w) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION '% must be a JSON object, not %', what, w
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"days": ["SAT", "SUN"], "start": "02:00", "duration": "PT4H"}.';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(w, '{days,start,duration}', what);
        days := ARRAY(SELECT array_position('{MON,TUE,WED,THU,FRI,SAT,SUN}'::text[], upper(d #>> '{}'))
                        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w -> 'days') = 'array' THEN w -> 'days' END) d);
        IF jsonb_typeof(w -> 'days') IS DISTINCT FROM 'array' OR cardinality(days) = 0 OR array_position(days, NULL) IS NOT NULL
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(w -> 'days') d WHERE jsonb_typeof(d) <> 'string') THEN
            RAISE EXCEPTION '"days" % of % must name days of the week', coalesce(w -> 'days', 'null'), what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write them as "MON", "TUE", "WED", "THU", "FRI", "SAT" and "SUN".';
        END IF;
        IF jsonb_typeof(w -> 'start') IS DISTINCT FROM 'string' OR w ->> 'start' !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' THEN
            RAISE EXCEPTION '"start" % of % is not a time of day', coalesce(w -> 'start', 'null'), what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write it as "HH:MM" on a 24-hour clock, in the rollout''s "timeZone", such as "02:00".';
        END IF;
        result := result || jsonb_build_array(jsonb_build_object(
            'days', (SELECT jsonb_agg(DISTINCT d ORDER BY d) FROM unnest(days) d),
            'start', w ->> 'start',
            'duration', fleet_internal.rollout_interval(w -> 'duration', format('"duration" of %s', what),
                                                        interval '1 minute', interval '7 days')::text));
    END LOOP;
    RETURN result;
END;
$$;

-- One element of a rollout's list of rules by failure type ("abortCriteria",
-- "retries"), checked: a JSON object with only the given keys and a known
-- "failureType", which it returns.
CREATE FUNCTION fleet_internal.failure_type_rule(rule jsonb, keys text[], what text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(rule) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% must be a JSON object, not %', what, rule
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(rule, keys, what);
    IF jsonb_typeof(rule -> 'failureType') IS DISTINCT FROM 'string'
       OR rule ->> 'failureType' NOT IN ('FAILED', 'REJECTED', 'TIMED_OUT', 'ALL') THEN
        RAISE EXCEPTION '"failureType" % of % is not "FAILED", "REJECTED", "TIMED_OUT" or "ALL"', coalesce(rule -> 'failureType', 'null'), what
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'FAILED: failed otherwise; REJECTED: a device refused the command (4xx); TIMED_OUT: nobody answered in time; ALL: any.';
    END IF;
    RETURN rule ->> 'failureType';
END;
$$;

-- A rollout's "abortCriteria", checked, as AWS IoT Jobs takes them (and
-- "action": "PAUSE" besides "CANCEL").
CREATE FUNCTION fleet_internal.abort_criteria(criteria jsonb, label text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb := '[]';
    c      jsonb;
    n      int := 0;
    what   text;
BEGIN
    IF jsonb_typeof(criteria) IS DISTINCT FROM 'array' OR jsonb_array_length(criteria) NOT BETWEEN 1 AND 10 THEN
        RAISE EXCEPTION '"abortCriteria" of % must be an array of 1 to 10 criteria, not %', label, criteria
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write [{"failureType": "ALL", "thresholdPercentage": 10, "minNumberOfExecutedDevices": 100, "action": "CANCEL"}].';
    END IF;
    FOR c IN SELECT e FROM jsonb_array_elements(criteria) e LOOP
        n := n + 1;
        what := format('abort criterion %s of %s', n, label);
        PERFORM fleet_internal.failure_type_rule(c, '{failureType,thresholdPercentage,minNumberOfExecutedDevices,action}', what);
        IF jsonb_typeof(c -> 'thresholdPercentage') IS DISTINCT FROM 'number'
           OR (c ->> 'thresholdPercentage')::numeric NOT BETWEEN 0 AND 100 THEN
            RAISE EXCEPTION '"thresholdPercentage" % of % is not a number from 0 to 100', coalesce(c -> 'thresholdPercentage', 'null'), what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF c ? 'action' AND (jsonb_typeof(c -> 'action') IS DISTINCT FROM 'string' OR c ->> 'action' NOT IN ('CANCEL', 'PAUSE')) THEN
            RAISE EXCEPTION '"action" % of % is neither "CANCEL" nor "PAUSE"', c -> 'action', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_array(jsonb_build_object(
            'failureType', c ->> 'failureType',
            'thresholdPercentage', (c ->> 'thresholdPercentage')::numeric,
            'minNumberOfExecutedDevices', fleet_internal.rollout_count(c -> 'minNumberOfExecutedDevices',
                                              format('"minNumberOfExecutedDevices" of %s', what), 1, 1000000000),
            'action', coalesce(c ->> 'action', 'CANCEL')));
    END LOOP;
    RETURN result;
END;
$$;

-- The first of a job's abort criteria its outcomes meet (executed:
-- completed and failed; failed by type), counted since a pause one of them
-- made (abort_base), with the reason; no row when none is met.
CREATE FUNCTION fleet_internal.abort_criterion(job fleet.jobs, completed bigint, failed bigint, timed_out bigint,
                                               rejected bigint, OUT action text, OUT reason text)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH since AS (
        SELECT completed - coalesce((job.abort_base ->> 'completed')::bigint, 0) AS completed,
               failed - coalesce((job.abort_base ->> 'failed')::bigint, 0) AS failed,
               timed_out - coalesce((job.abort_base ->> 'timedOut')::bigint, 0) AS timed_out,
               rejected - coalesce((job.abort_base ->> 'rejected')::bigint, 0) AS rejected
    )
    SELECT c ->> 'action',
           format('%s: %s of %s finished devices %s (%s %%), past its abort criterion of %s %% once %s finished',
                  CASE c ->> 'action' WHEN 'PAUSE' THEN 'paused' ELSE 'cancelled' END,
                  f.n, s.completed + s.failed,
                  CASE c ->> 'failureType' WHEN 'TIMED_OUT' THEN 'timed out' WHEN 'REJECTED' THEN 'were rejected'
                                           WHEN 'FAILED' THEN 'failed otherwise' ELSE 'failed' END,
                  round(f.n * 100.0 / (s.completed + s.failed), 1), c ->> 'thresholdPercentage',
                  c ->> 'minNumberOfExecutedDevices')
      FROM since s,
           jsonb_array_elements(job.rollout -> 'abortCriteria') WITH ORDINALITY AS a(c, ord),
           LATERAL (SELECT CASE c ->> 'failureType' WHEN 'TIMED_OUT' THEN s.timed_out
                                                    WHEN 'REJECTED' THEN s.rejected
                                                    WHEN 'FAILED' THEN s.failed - s.timed_out - s.rejected
                                                    ELSE s.failed END AS n) f
     WHERE s.completed + s.failed >= (c ->> 'minNumberOfExecutedDevices')::bigint
       AND f.n * 100 > (c ->> 'thresholdPercentage')::numeric * (s.completed + s.failed)
     ORDER BY a.ord
     LIMIT 1
$$;

-- A rollout's "retries", checked: per failure type, how many times a
-- failed device is offered again, and after what backoff.
CREATE FUNCTION fleet_internal.retry_rules(rules jsonb, label text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result  jsonb := '[]';
    r       jsonb;
    backoff jsonb;
    n       int := 0;
    what    text;
BEGIN
    IF jsonb_typeof(rules) IS DISTINCT FROM 'array' OR jsonb_array_length(rules) NOT BETWEEN 1 AND 3 THEN
        RAISE EXCEPTION '"retries" of % must be an array of 1 to 3 rules, one per failure type, not %', label, rules
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write [{"failureType": "TIMED_OUT", "numberOfRetries": 3, "backoff": {"type": "exponential", "base": "PT10S"}}].';
    END IF;
    FOR r IN SELECT e FROM jsonb_array_elements(rules) e LOOP
        n := n + 1;
        what := format('retry rule %s of %s', n, label);
        PERFORM fleet_internal.failure_type_rule(r, '{failureType,numberOfRetries,backoff}', what);
        IF (SELECT count(*) FROM jsonb_array_elements(rules) o WHERE o ->> 'failureType' = r ->> 'failureType') > 1 THEN
            RAISE EXCEPTION '"retries" of % has two rules for failure type %', label, r ->> 'failureType'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        backoff := coalesce(r -> 'backoff', '{}');
        IF jsonb_typeof(backoff) <> 'object' THEN
            RAISE EXCEPTION '"backoff" % of % must be a JSON object', backoff, what
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"type": "fixed" or "exponential", "base": "PT10S", "maximum": "PT5M", "jitter": true}.';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(backoff, '{type,base,maximum,jitter}', format('the "backoff" of %s', what));
        IF backoff ? 'type' AND (jsonb_typeof(backoff -> 'type') <> 'string' OR backoff ->> 'type' NOT IN ('fixed', 'exponential')) THEN
            RAISE EXCEPTION '"type" % of the "backoff" of % is neither "fixed" nor "exponential"', backoff -> 'type', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF backoff ? 'jitter' AND jsonb_typeof(backoff -> 'jitter') <> 'boolean' THEN
            RAISE EXCEPTION '"jitter" % of the "backoff" of % is neither true nor false', backoff -> 'jitter', what
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_array(jsonb_build_object(
            'failureType', r ->> 'failureType',
            'numberOfRetries', fleet_internal.rollout_count(r -> 'numberOfRetries', format('"numberOfRetries" of %s', what), 1, 10),
            'backoff', jsonb_build_object(
                'type', coalesce(backoff ->> 'type', 'fixed'),
                'base', CASE WHEN backoff ? 'base'
                             THEN fleet_internal.rollout_interval(backoff -> 'base', format('"base" of the "backoff" of %s', what),
                                                                  interval '0', interval '1 day')
                             ELSE interval '10 seconds' END::text,
                'maximum', CASE WHEN backoff ? 'maximum'
                                THEN fleet_internal.rollout_interval(backoff -> 'maximum', format('"maximum" of the "backoff" of %s', what),
                                                                     interval '0', interval '1 day')
                                ELSE interval '1 hour' END::text,
                'jitter', coalesce((backoff ->> 'jitter')::boolean, false))));
    END LOOP;
    RETURN result;
END;
$$;

-- The wait before a retry: the rule's base, doubled for each earlier
-- attempt when exponential, at most its maximum; with jitter, a random
-- point in its second half (so retries of devices that failed together
-- spread out).
CREATE FUNCTION fleet_internal.retry_backoff(rule jsonb, attempt int)
RETURNS interval
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT least((rule #>> '{backoff,base}')::interval
                 * CASE WHEN rule #>> '{backoff,type}' = 'exponential' THEN power(2, least(attempt - 1, 30)) ELSE 1 END,
                 (rule #>> '{backoff,maximum}')::interval)
           * CASE WHEN (rule #>> '{backoff,jitter}')::boolean THEN 0.5 + random() / 2 ELSE 1 END
$$;

-- fleet_internal.engine_retry_failures() where job_devices is spread over
-- Citus shards, which take no FOR UPDATE across shards nor a statement
-- that writes two tables: the window's failed deliveries are read, those
-- their rule offers again kept as attempts, then offered again if still
-- failed.  (Only the engine changes a failed delivery: nothing can come
-- between the read and the writes.)
CREATE FUNCTION fleet_internal.engine_retry_failures_on_shards(job fleet.jobs, w fleet.command_windows,
                                                               now_ts timestamptz,
                                                               OUT retried bigint, OUT last_at timestamptz)
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    due record;
BEGIN
    SELECT array_agg(f.delivery_id) AS deliveries, array_agg(f.device_id) AS devices,
           array_agg(f.attempt) AS attempts, array_agg(f.error) AS errors, array_agg(f.gateway) AS gateways,
           array_agg(f.started_at) AS started, array_agg(f.finished_at) AS finished,
           array_agg(f.response_status) AS statuses, array_agg(f.response) AS responses,
           array_agg(now_ts + fleet_internal.retry_backoff(f.rule, f.attempt)) AS retry_ats
      INTO due
      FROM (SELECT x.*,
                   (SELECT r FROM jsonb_array_elements(job.rollout -> 'retries') r
                     WHERE r ->> 'failureType' = x.failure_type OR r ->> 'failureType' = 'ALL'
                     ORDER BY r ->> 'failureType' = 'ALL'
                     LIMIT 1) AS rule
              FROM (SELECT jd.delivery_id, jd.device_id, jd.error, jd.gateway, jd.started_at, jd.finished_at,
                           jd.response_status, jd.response, fleet_internal.failure_type(jd.error) AS failure_type,
                           1 + coalesce(a.n, 0)::int AS attempt
                      FROM fleet.job_devices jd
                      LEFT JOIN (SELECT ja.device_id, count(*) AS n FROM fleet.job_device_attempts ja
                                  WHERE ja.job_id = job.id GROUP BY ja.device_id) a ON a.device_id = jd.device_id
                     WHERE jd.job_id = job.id AND jd.delivery_id IS NOT NULL
                       AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
                       AND jd.status = 'failed') x) f
     WHERE f.attempt <= (f.rule ->> 'numberOfRetries')::int;
    IF due.deliveries IS NULL THEN
        retried := 0;
        RETURN;
    END IF;
    INSERT INTO fleet.job_device_attempts (job_id, device_id, attempt, error, gateway, started_at, finished_at,
                                           response_status, response, retry_at)
    SELECT job.id, d.device_id, d.attempt, d.error, d.gateway, d.started_at, d.finished_at,
           d.response_status, d.response, d.retry_at
      FROM unnest(due.devices, due.attempts, due.errors, due.gateways, due.started, due.finished,
                  due.statuses, due.responses, due.retry_ats)
           AS d (device_id, attempt, error, gateway, started_at, finished_at, response_status, response, retry_at);
    UPDATE fleet.job_devices jd
       SET status = 'pending', error = NULL, gateway = NULL, started_at = NULL, finished_at = NULL,
           response_status = NULL, response = NULL, deadline = d.retry_at
      FROM unnest(due.deliveries, due.devices, due.retry_ats) AS d (delivery_id, device_id, retry_at)
     WHERE jd.job_id = job.id AND jd.device_id = d.device_id AND jd.delivery_id = d.delivery_id
       AND jd.status = 'failed';
    GET DIAGNOSTICS retried = ROW_COUNT;
    last_at := (SELECT max(r) FROM unnest(due.retry_ats) r);
END;
$$;

-- A command window's failed deliveries that their job's "retries" allow
-- another attempt: the attempt is kept (fleet.job_device_attempts) and the
-- delivery is offered again once its backoff has passed (its deadline
-- says when, until a gateway claims it); the window stays open until then
-- and a timeout after.  Runs before the window is counted, so counts and
-- thresholds see final outcomes only.  Returns how many it offered again.
CREATE FUNCTION fleet_internal.engine_retry_failures(job fleet.jobs, w fleet.command_windows, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    now_ts  timestamptz := fleet_internal.moment(at);
    retried bigint;
    last_at timestamptz;
    due_by  timestamptz;
BEGIN
    IF fleet_internal.citus_table('fleet.job_devices') THEN
        SELECT r.retried, r.last_at INTO retried, last_at
          FROM fleet_internal.engine_retry_failures_on_shards(job, w, now_ts) r;
    ELSE
        WITH failed AS (
            SELECT jd.delivery_id, jd.device_id, jd.error, jd.gateway, jd.started_at, jd.finished_at,
                   jd.response_status, jd.response,
                   1 + (SELECT count(*) FROM fleet.job_device_attempts a
                         WHERE a.job_id = jd.job_id AND a.device_id = jd.device_id)::int AS attempt,
                   (SELECT r FROM jsonb_array_elements(job.rollout -> 'retries') r
                     WHERE r ->> 'failureType' = fleet_internal.failure_type(jd.error)
                        OR r ->> 'failureType' = 'ALL'
                     ORDER BY r ->> 'failureType' = 'ALL'
                     LIMIT 1) AS rule
              FROM fleet.job_devices jd
             WHERE jd.delivery_id IS NOT NULL
               AND jd.delivery_id >= w.first_delivery AND jd.delivery_id <= w.last_delivery
               AND jd.status = 'failed'
               FOR UPDATE OF jd SKIP LOCKED
        ),
        due AS (
            SELECT f.*, now_ts + fleet_internal.retry_backoff(f.rule, f.attempt) AS retry_at
              FROM failed f
             WHERE f.attempt <= (f.rule ->> 'numberOfRetries')::int
        ),
        kept AS (
            INSERT INTO fleet.job_device_attempts (job_id, device_id, attempt, error, gateway, started_at, finished_at,
                                                   response_status, response, retry_at)
            SELECT job.id, d.device_id, d.attempt, d.error, d.gateway, d.started_at, d.finished_at,
                   d.response_status, d.response, d.retry_at
              FROM due d
        ),
        offered AS (
            UPDATE fleet.job_devices jd
               SET status = 'pending', error = NULL, gateway = NULL, started_at = NULL, finished_at = NULL,
                   response_status = NULL, response = NULL, deadline = d.retry_at
              FROM due d
             WHERE jd.delivery_id = d.delivery_id AND jd.delivery_id IS NOT NULL
            RETURNING d.retry_at
        )
        SELECT count(*), max(o.retry_at) INTO retried, last_at FROM offered o;
    END IF;
    IF retried > 0 THEN
        due_by := last_at + fleet_internal.command_timeout(job.rollout);
        UPDATE fleet.command_windows cw
           SET deadline = greatest(cw.deadline, due_by), next_check = least(cw.next_check, due_by)
         WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery;
        PERFORM pg_notify('fleet_commands', '');
    END IF;
    RETURN retried;
END;
$$;

-- Validates a body's "rollout" and returns it as the engine reads it
-- (durations as intervals' text, names as given).  Unknown keys are
-- refused: a misspelt option would otherwise be a rollout without it.
CREATE FUNCTION fleet_internal.job_rollout(rollout jsonb, label text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result   jsonb := '{}';
    ramp     jsonb;
    criteria jsonb;
    what     text := format('the "rollout" of %s', label);
    ends_at  timestamptz;
BEGIN
    IF rollout IS NULL OR jsonb_typeof(rollout) = 'null' THEN
        RETURN '{}';
    END IF;
    IF jsonb_typeof(rollout) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object, not %', what, rollout
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example "rollout": {"maximumPerMinute": 1000, "onThreshold": "pause"}; the README''s Rollouts section lists the options.';
    END IF;
    PERFORM fleet_internal.refuse_unknown_keys(rollout,
        '{maximumPerMinute,exponentialRate,onThreshold,abortCriteria,canary,promotion,maintenanceWindows,timeZone,continuous,maximumDevices,retries,commandTimeout,inProgressTimeout,endTime,maximumDuration,endBehavior}', what);

    IF rollout ? 'maximumPerMinute' THEN
        result := result || jsonb_build_object('maximumPerMinute',
            fleet_internal.rollout_count(rollout -> 'maximumPerMinute', format('"maximumPerMinute" of %s', label), 1, 1000000000));
    END IF;
    IF rollout ? 'exponentialRate' THEN
        ramp := rollout -> 'exponentialRate';
        IF jsonb_typeof(ramp) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION '"exponentialRate" of % must be a JSON object, not %', label, ramp
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"baseRatePerMinute": 50, "incrementFactor": 2, "rateIncreaseCriteria": {"numberOfNotifiedDevices": 100}}.';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(ramp, '{baseRatePerMinute,incrementFactor,rateIncreaseCriteria}',
                                                   format('"exponentialRate" of %s', label));
        criteria := ramp -> 'rateIncreaseCriteria';
        IF jsonb_typeof(criteria) IS DISTINCT FROM 'object'
           OR (SELECT count(*) FROM jsonb_object_keys(criteria)) <> 1 THEN
            RAISE EXCEPTION '"rateIncreaseCriteria" of % must name one criterion, not %', label, coalesce(criteria::text, 'nothing')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"numberOfNotifiedDevices": N} (raised after N more devices were dispatched) or {"numberOfSucceededDevices": N} (after N more succeeded).';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(criteria, '{numberOfNotifiedDevices,numberOfSucceededDevices}',
                                                   format('"rateIncreaseCriteria" of %s', label));
        IF jsonb_typeof(ramp -> 'incrementFactor') IS DISTINCT FROM 'number'
           OR (ramp ->> 'incrementFactor')::numeric NOT BETWEEN 1.1 AND 5 THEN
            RAISE EXCEPTION '"incrementFactor" % of % is not a number from 1.1 to 5', coalesce(ramp -> 'incrementFactor', 'null'), label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'AWS IoT Jobs takes the same range: the rate is multiplied by it at each increase.';
        END IF;
        result := result || jsonb_build_object('exponentialRate', jsonb_build_object(
            'baseRatePerMinute', fleet_internal.rollout_count(ramp -> 'baseRatePerMinute',
                                     format('"baseRatePerMinute" of %s', label), 1, 1000000000),
            'incrementFactor', (ramp ->> 'incrementFactor')::numeric,
            'rateIncreaseCriteria', (SELECT jsonb_build_object(k, fleet_internal.rollout_count(criteria -> k,
                                                 format('"%s" of %s', k, label), 1, 1000000000))
                                       FROM jsonb_object_keys(criteria) k)));
    END IF;
    IF rollout ? 'onThreshold' THEN
        IF rollout ->> 'onThreshold' NOT IN ('cancel', 'pause') OR jsonb_typeof(rollout -> 'onThreshold') <> 'string' THEN
            RAISE EXCEPTION '"onThreshold" % of % is neither "cancel" nor "pause"', rollout -> 'onThreshold', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = '"pause" stops the job for inspection when its cancellation threshold is passed; fleet.resume_job() carries on.';
        END IF;
        result := result || jsonb_build_object('onThreshold', rollout ->> 'onThreshold');
    END IF;
    IF rollout ? 'abortCriteria' THEN
        result := result || jsonb_build_object('abortCriteria', fleet_internal.abort_criteria(rollout -> 'abortCriteria', label));
    END IF;
    IF rollout ? 'canary' THEN
        IF jsonb_typeof(rollout -> 'canary') IS DISTINCT FROM 'object'
           OR (SELECT count(*) FROM jsonb_object_keys(rollout -> 'canary')) <> 1 THEN
            RAISE EXCEPTION '"canary" of % must name its devices or a group, not %', label, rollout -> 'canary'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"devices": ["thermostat-01", "thermostat-02"]} or {"group": "canary-thermostats"}.';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(rollout -> 'canary', '{devices,group}', format('the "canary" of %s', label));
        IF rollout -> 'canary' ? 'devices' AND (jsonb_typeof(rollout #> '{canary,devices}') <> 'array'
               OR jsonb_array_length(rollout #> '{canary,devices}') NOT BETWEEN 1 AND 1000
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(rollout #> '{canary,devices}') d WHERE jsonb_typeof(d) <> 'string')) THEN
            RAISE EXCEPTION '"devices" of the "canary" of % must be an array of 1 to 1000 device ids', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For more, make a device group of them and write {"group": "..."}.';
        END IF;
        IF rollout -> 'canary' ? 'group' AND jsonb_typeof(rollout #> '{canary,group}') <> 'string' THEN
            RAISE EXCEPTION '"group" % of the "canary" of % is not a device group id', rollout #> '{canary,group}', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_object('canary', rollout -> 'canary');
    END IF;
    IF rollout ? 'promotion' THEN
        IF jsonb_typeof(rollout -> 'promotion') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION '"promotion" of % must be a JSON object, not %', label, rollout -> 'promotion'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {"mode": "manual"} (each next batch waits for fleet.advance_job()) or {"successPercentage": 95}.';
        END IF;
        PERFORM fleet_internal.refuse_unknown_keys(rollout -> 'promotion', '{mode,successPercentage}',
                                                   format('"promotion" of %s', label));
        IF rollout -> 'promotion' ? 'mode' AND (jsonb_typeof(rollout #> '{promotion,mode}') IS DISTINCT FROM 'string'
                                               OR rollout #>> '{promotion,mode}' NOT IN ('automatic', 'manual')) THEN
            RAISE EXCEPTION '"mode" % of the "promotion" of % is neither "automatic" nor "manual"', rollout #> '{promotion,mode}', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT (rollout -> 'promotion' ?| '{mode,successPercentage}') THEN
            RAISE EXCEPTION '"promotion" of % says nothing', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give "mode": "manual", or a "successPercentage" each batch must reach before the next starts.';
        END IF;
        result := result || jsonb_build_object('promotion', jsonb_strip_nulls(jsonb_build_object(
            'mode', coalesce(rollout #>> '{promotion,mode}', 'automatic'),
            'successPercentage', CASE WHEN rollout -> 'promotion' ? 'successPercentage'
                                      THEN fleet_internal.rollout_count(rollout #> '{promotion,successPercentage}',
                                               format('"successPercentage" of the "promotion" of %s', label), 1, 100) END)));
    END IF;
    IF rollout ? 'timeZone' THEN
        IF NOT rollout ? 'maintenanceWindows' THEN
            RAISE EXCEPTION '"timeZone" of % needs "maintenanceWindows"', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'The time zone is that of the maintenance windows'' days and start times.';
        END IF;
        IF jsonb_typeof(rollout -> 'timeZone') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION '"timeZone" % of % is not a time zone name', rollout -> 'timeZone', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_object('timeZone', fleet_internal.require_time_zone(rollout ->> 'timeZone'));
    END IF;
    IF rollout ? 'maintenanceWindows' THEN
        result := result || jsonb_build_object('maintenanceWindows',
                                               fleet_internal.maintenance_windows(rollout -> 'maintenanceWindows', label))
                         || jsonb_build_object('timeZone', coalesce(result ->> 'timeZone', 'UTC'));
    END IF;
    IF rollout ? 'continuous' THEN
        IF jsonb_typeof(rollout -> 'continuous') IS DISTINCT FROM 'boolean' THEN
            RAISE EXCEPTION '"continuous" % of % is neither true nor false', rollout -> 'continuous', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF (rollout ->> 'continuous')::boolean THEN
            result := result || '{"continuous": true}';
        END IF;
    END IF;
    IF rollout ? 'maximumDevices' THEN
        IF NOT result ? 'continuous' THEN
            RAISE EXCEPTION '"maximumDevices" of % needs "continuous": true', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A job that is not continuous takes its group''s devices once, when it starts; choose them with the group.';
        END IF;
        result := result || jsonb_build_object('maximumDevices',
            fleet_internal.rollout_count(rollout -> 'maximumDevices', format('"maximumDevices" of %s', label), 1, 1000000000));
    END IF;
    IF rollout ? 'retries' THEN
        result := result || jsonb_build_object('retries', fleet_internal.retry_rules(rollout -> 'retries', label));
    END IF;
    IF rollout ? 'commandTimeout' THEN
        result := result || jsonb_build_object('commandTimeout',
            fleet_internal.rollout_interval(rollout -> 'commandTimeout', format('"commandTimeout" of %s', label),
                                            interval '1 second', interval '7 days')::text);
    END IF;
    IF rollout ? 'inProgressTimeout' THEN
        result := result || jsonb_build_object('inProgressTimeout',
            fleet_internal.rollout_interval(rollout -> 'inProgressTimeout', format('"inProgressTimeout" of %s', label),
                                            interval '1 second', interval '7 days')::text);
    END IF;
    IF rollout ? 'endTime' THEN
        BEGIN
            ends_at := (rollout ->> 'endTime')::timestamptz;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation THEN
            ends_at := NULL;
        END;
        IF jsonb_typeof(rollout -> 'endTime') IS DISTINCT FROM 'string' OR ends_at IS NULL OR NOT isfinite(ends_at) THEN
            RAISE EXCEPTION '"endTime" % of % is not a time', rollout -> 'endTime', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write an ISO 8601 time with its offset, such as "2026-12-24T18:00:00Z".';
        END IF;
        IF ends_at <= now() THEN
            RAISE EXCEPTION '"endTime" % of % has passed', rollout -> 'endTime', label
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give a time to come, or leave "endTime" out.';
        END IF;
        result := result || jsonb_build_object('endTime', ends_at);
    END IF;
    IF rollout ? 'maximumDuration' THEN
        result := result || jsonb_build_object('maximumDuration',
            fleet_internal.rollout_interval(rollout -> 'maximumDuration', format('"maximumDuration" of %s', label),
                                            interval '1 minute', interval '1 year')::text);
    END IF;
    IF rollout ? 'endBehavior' THEN
        IF jsonb_typeof(rollout -> 'endBehavior') IS DISTINCT FROM 'string'
           OR rollout ->> 'endBehavior' NOT IN ('STOP_ROLLOUT', 'CANCEL', 'FORCE_CANCEL') THEN
            RAISE EXCEPTION '"endBehavior" % of % is not "STOP_ROLLOUT", "CANCEL" or "FORCE_CANCEL"', rollout -> 'endBehavior', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF NOT (rollout ? 'endTime' OR rollout ? 'maximumDuration') THEN
            RAISE EXCEPTION '"endBehavior" of % needs "endTime" or "maximumDuration"', label
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        result := result || jsonb_build_object('endBehavior', rollout ->> 'endBehavior');
    END IF;
    RETURN result;
END;
$$;

-- Announces a change of a job (and of its batch, when one is named) on the
-- channel fleet_jobs, when the transaction commits: a small JSON object
-- with the job, its organization, the event, the job's status and, for a
-- batch, the batch's number and counts.  Applications LISTEN instead of
-- polling.  NOTIFY has no privileges: whoever may connect to the database
-- may LISTEN, so the payload names ids and states, no data.
CREATE FUNCTION fleet_internal.job_event(job_id text, event text, batch int DEFAULT NULL)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_notify('fleet_jobs', json_build_object(
               'job', j.id, 'organization', j.organization_id, 'event', event,
               'status', j.status, 'detail', left(j.status_detail, 400),
               'batch', b.batch, 'batchStatus', b.status, 'completed', b.completed, 'failed', b.failed)::text)
      FROM fleet.jobs j
      LEFT JOIN fleet.job_batches b ON b.job_id = j.id AND b.batch = job_event.batch
     WHERE j.id = job_event.job_id
$$;

-- The rate a job dispatches at now, devices a minute (NULL: no limit): its
-- maximumPerMinute, or its ramp's base multiplied by incrementFactor each
-- time rateIncreaseCriteria more devices were dispatched (or succeeded),
-- at most maximumPerMinute.
CREATE FUNCTION fleet_internal.rollout_rate(job fleet.jobs)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ramp    jsonb := job.rollout -> 'exponentialRate';
    maximum bigint := (job.rollout ->> 'maximumPerMinute')::bigint;
    step    bigint;
    reached bigint;
BEGIN
    IF ramp IS NULL THEN
        RETURN maximum;
    END IF;
    IF ramp -> 'rateIncreaseCriteria' ? 'numberOfSucceededDevices' THEN
        step := (ramp #>> '{rateIncreaseCriteria,numberOfSucceededDevices}')::bigint;
        SELECT coalesce(sum(b.completed), 0) INTO reached FROM fleet.job_batches b WHERE b.job_id = job.id;
    ELSE
        step := (ramp #>> '{rateIncreaseCriteria,numberOfNotifiedDevices}')::bigint;
        SELECT coalesce(sum(d.devices), 0) INTO reached FROM fleet_internal.job_dispatches d WHERE d.job_id = job.id;
    END IF;
    -- (the exponent is bounded: past 60 increases any rate is past any maximum)
    RETURN least(coalesce(maximum, 1000000000),
                 floor((ramp ->> 'baseRatePerMinute')::bigint
                       * power((ramp ->> 'incrementFactor')::numeric, least(reached / step, 60)))::numeric)::bigint;
END;
$$;

-- How many devices a rate-limited job may dispatch in this step, and, when
-- none, until when it waits (spent: the minute's rate is used up, which the
-- job shows; else the next twentieth is not due yet).  Any minute holds at
-- most the rate; the rate is dealt in twentieths, one every three seconds,
-- so a minute that ends while the job has work holds the rate less at most
-- one twentieth (5 %).
CREATE FUNCTION fleet_internal.rollout_allowance(job fleet.jobs, at timestamptz,
                                                 OUT allowed bigint, OUT wait_until timestamptz, OUT spent boolean)
RETURNS record
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_ts    timestamptz := fleet_internal.moment(at);
    rate      bigint := fleet_internal.rollout_rate(job);
    slice     bigint;
    in_minute bigint;
    oldest    timestamptz;
    latest    timestamptz;
BEGIN
    IF rate IS NULL THEN
        allowed := NULL;            -- no limit
        RETURN;
    END IF;
    slice := greatest(ceil(rate / 20.0)::bigint, 1);
    SELECT coalesce(sum(d.devices), 0), min(d.at), max(d.at) INTO in_minute, oldest, latest
      FROM fleet_internal.job_dispatches d
     WHERE d.job_id = job.id AND d.at > now_ts - interval '1 minute' AND d.at <= now_ts;
    spent := in_minute >= rate;
    IF spent THEN
        allowed := 0;
        wait_until := oldest + interval '1 minute';
    ELSIF latest IS NOT NULL AND latest > now_ts - interval '3 seconds' AND rate >= 20 THEN
        allowed := 0;               -- the next twentieth is due three seconds after the last
        wait_until := latest + interval '3 seconds';
    ELSE
        allowed := least(slice, rate - in_minute);
    END IF;
END;
$$;

-- Records what a step of a rate-limited job dispatched.
CREATE FUNCTION fleet_internal.record_dispatch(job_id text, devices bigint, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF devices > 0 THEN
        INSERT INTO fleet_internal.job_dispatches AS d (job_id, at, devices)
        VALUES (record_dispatch.job_id, fleet_internal.moment(at), record_dispatch.devices)
        ON CONFLICT ON CONSTRAINT job_dispatches_pkey DO UPDATE SET devices = d.devices + excluded.devices;
    END IF;
END;
$$;

-- Whether a job's maintenance windows are open at a time, and when the
-- next one opens.  Each window's occurrences over the weeks around then
-- are its days at its start time in its time zone (a local time a DST
-- change skips moves forward with the clock, as schedules do).
CREATE FUNCTION fleet_internal.maintenance_window_state(rollout jsonb, at timestamptz,
                                                        OUT open boolean, OUT next_open timestamptz)
RETURNS record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH occurrences AS (
        SELECT (((at AT TIME ZONE (rollout ->> 'timeZone'))::date + k)::timestamp + (w ->> 'start')::time)
                   AT TIME ZONE (rollout ->> 'timeZone') AS opens,
               (w ->> 'duration')::interval AS lasts
          FROM jsonb_array_elements(rollout -> 'maintenanceWindows') w,
               generate_series(-7, 7) k
         WHERE w -> 'days' @> to_jsonb(extract(isodow FROM (at AT TIME ZONE (rollout ->> 'timeZone'))::date + k)::int)
    )
    SELECT coalesce(bool_or(o.opens <= at AND at < o.opens + o.lasts), false),
           min(o.opens) FILTER (WHERE o.opens > at)
      FROM occurrences o
$$;

-- What kind of failure a device's error is (AWS IoT Jobs' failure types):
-- TIMED_OUT (nobody answered in time), REJECTED (the device refused, 4xx)
-- or FAILED.
CREATE FUNCTION fleet_internal.failure_type(error text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN error = 'timed out' THEN 'TIMED_OUT'
                WHEN error LIKE 'rejected by the device%' THEN 'REJECTED'
                ELSE 'FAILED' END
$$;

-- How long a command a device reported under way (202) may take from its
-- last report: the job's inProgressTimeout, else its command timeout.
CREATE FUNCTION fleet_internal.in_progress_timeout(job_id text)
RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((j.rollout ->> 'inProgressTimeout')::interval, fleet_internal.command_timeout(j.rollout))
      FROM fleet.jobs j WHERE j.id = in_progress_timeout.job_id
$$;

-- A command job's timeout: its rollout's commandTimeout, else
-- fleet.command_timeout.
CREATE FUNCTION fleet_internal.command_timeout(rollout jsonb)
RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((rollout ->> 'commandTimeout')::interval, current_setting('fleet.command_timeout')::interval)
$$;

-- When a job ends by its rollout (endTime, or maximumDuration after its
-- start), NULL when it does not.
CREATE FUNCTION fleet_internal.rollout_end(job fleet.jobs)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT least((job.rollout ->> 'endTime')::timestamptz,
                 job.started_at + (job.rollout ->> 'maximumDuration')::interval)
$$;

-- Whether a job waits at a batch boundary for its promotion: the batch it
-- just completed is promoted (NULL) unless its rollout's "promotion" asks
-- for a hand (mode manual) or a success percentage it did not reach; then
-- the reason it waits.  b: the completed batch, its counts final.
CREATE FUNCTION fleet_internal.promotion_wait(job fleet.jobs, b fleet.job_batches)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
           WHEN (job.rollout #>> '{promotion,successPercentage}')::int * b.size > b.completed * 100
           THEN format('paused: batch %s succeeded on %s of %s devices, below its promotion bar of %s %%; '
                       'advance it with fleet.advance_job(), or leave it stopped', b.batch, b.completed, b.size,
                       job.rollout #>> '{promotion,successPercentage}')
           WHEN job.rollout #>> '{promotion,mode}' = 'manual'
           THEN format('waiting for promotion: batch %s succeeded on %s of %s devices; '
                       'advance it with fleet.advance_job()', b.batch, b.completed, b.size)
           END
$$;

-- A job with a canary: its devices that are canaries (named, or members
-- of the canary group) become batch 1, and its batches move up one (an
-- emptied one goes); a command job's deliveries are numbered again in
-- batch order, so each batch is a range of them.  Called by the fan-out
-- (job_batches.sql), once, before the job starts; a pass over the job's
-- rows, which only a job with a canary pays.  Returns how many canaries.
CREATE FUNCTION fleet_internal.engine_cut_canary(job fleet.jobs)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    canary text[] := CASE WHEN job.rollout -> 'canary' ? 'devices'
                          THEN ARRAY(SELECT jsonb_array_elements_text(job.rollout #> '{canary,devices}'))
                          ELSE ARRAY(SELECT m.device_id FROM fleet.device_group_members m
                                      WHERE m.group_id = job.rollout #>> '{canary,group}') END;
    base   bigint;
    n      bigint;
BEGIN
    SELECT count(*) INTO n FROM fleet.job_devices jd WHERE jd.job_id = job.id AND jd.device_id = ANY (canary);
    IF n = 0 THEN
        RETURN 0;                   -- none of them is in the job's group
    END IF;
    SELECT min(jd.delivery_id) - 1 INTO base FROM fleet.job_devices jd WHERE jd.job_id = job.id;
    WITH placed AS (
        SELECT jd.device_id,
               CASE WHEN jd.device_id = ANY (canary) THEN 1
                    ELSE 1 + dense_rank() OVER (PARTITION BY jd.device_id = ANY (canary) ORDER BY jd.batch) END AS batch,
               row_number() OVER (ORDER BY NOT (jd.device_id = ANY (canary)), jd.batch, jd.device_id) AS n
          FROM fleet.job_devices jd WHERE jd.job_id = job.id
    )
    UPDATE fleet.job_devices jd
       SET batch = p.batch, delivery_id = base + p.n
      FROM placed p
     WHERE jd.job_id = job.id AND jd.device_id = p.device_id;
    DELETE FROM fleet.job_batches b WHERE b.job_id = job.id;
    INSERT INTO fleet.job_batches (job_id, batch, first_device, last_device, size)
    SELECT job.id, jd.batch, min(jd.device_id), max(jd.device_id), count(*)
      FROM fleet.job_devices jd WHERE jd.job_id = job.id
     GROUP BY jd.batch;
    RETURN n;
END;
$$;

-- A continuous job takes its group's devices that are not among its own
-- yet (they joined since: imported, given the template, or matching a
-- changed filter) as its next batch, at most a batch's size and up to its
-- maximumDevices; each device once (the key of job_devices).  A command
-- job's deliveries go on from its last id, so the new batch is a range of
-- them above every earlier one.  Returns how many it took.
CREATE FUNCTION fleet_internal.engine_add_members(job fleet.jobs, batch int, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    room   bigint := least(CASE WHEN job.batch_type = 'number' THEN job.batch_value END,
                           (job.rollout ->> 'maximumDevices')::bigint - coalesce(job.device_count, 0));
    base   bigint;
    added  bigint;
BEGIN
    IF room <= 0 THEN
        RETURN 0;
    END IF;
    IF job.job_type = 'command' THEN
        SELECT max(jd.delivery_id) INTO base FROM fleet.job_devices jd WHERE jd.job_id = job.id;
        base := coalesce(base, nextval('fleet_internal.delivery_blocks') * 4294967296);
    END IF;
    -- the group's members now (fleet.device_group_members), less its own
    WITH joined AS (
        SELECT m.device_id AS id FROM fleet.device_group_members m
         WHERE m.group_id = job.group_id
           AND NOT EXISTS (SELECT 1 FROM fleet.job_devices jd WHERE jd.job_id = job.id AND jd.device_id = m.device_id)
         ORDER BY m.device_id
         LIMIT room
    ),
    assigned AS (
        INSERT INTO fleet.job_devices (job_id, device_id, batch, delivery_id)
        SELECT job.id, j.id, engine_add_members.batch, base + row_number() OVER (ORDER BY j.id)
          FROM joined j
        ON CONFLICT DO NOTHING
        RETURNING device_id
    )
    INSERT INTO fleet.job_batches (job_id, batch, first_device, last_device, size)
    SELECT job.id, engine_add_members.batch, min(a.device_id), max(a.device_id), count(*)
      FROM assigned a HAVING count(*) > 0;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added = 0 THEN
        RETURN 0;
    END IF;
    SELECT b.size INTO added FROM fleet.job_batches b WHERE b.job_id = job.id AND b.batch = engine_add_members.batch;
    UPDATE fleet.jobs j SET device_count = coalesce(j.device_count, 0) + added, current_batch = engine_add_members.batch
     WHERE j.id = job.id;
    PERFORM fleet_internal.job_event(job.id, 'devicesJoined', engine_add_members.batch);
    RETURN added;
END;
$$;

-- A continuous job with nothing to do: it takes the devices that joined
-- its group, or waits (true), or, its maximumDevices reached, is done
-- (false).
CREATE FUNCTION fleet_internal.engine_continue(job fleet.jobs, next_batch int, at timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    waits text;
BEGIN
    IF fleet_internal.engine_add_members(job, next_batch, at) > 0 THEN
        IF job.status_detail IS NOT NULL THEN
            UPDATE fleet.jobs j SET status_detail = NULL WHERE j.id = job.id;
        END IF;
        RETURN true;
    END IF;
    IF coalesce(job.device_count, 0) >= (job.rollout ->> 'maximumDevices')::bigint THEN
        RETURN false;
    END IF;
    -- (a look over the group every ten seconds)
    UPDATE fleet_internal.job_engine_state s SET not_before = fleet_internal.moment(at) + interval '10 seconds'
     WHERE s.job_id = job.id;
    waits := format('waiting: continuous, %s devices so far; devices that join its group get it', coalesce(job.device_count, 0));
    UPDATE fleet.jobs j SET status_detail = waits WHERE j.id = job.id AND j.status_detail IS DISTINCT FROM waits;
    RETURN true;
END;
$$;

-- Pauses a job: it stops as fleet.stop_job() stops it (resumable), with
-- the reason on the job.
CREATE FUNCTION fleet_internal.engine_pause_job(job fleet.jobs, reason text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE fleet.jobs j SET status = 'stopped', status_detail = reason WHERE j.id = job.id;
    PERFORM fleet_internal.job_event(job.id, 'paused', job.current_batch);
END;
$$;

-- A job past its end: STOP_ROLLOUT stops it (resumable; its claimed
-- commands may still be answered), CANCEL cancels it as a threshold does,
-- FORCE_CANCEL also fails its commands in flight ("the job ended").
CREATE FUNCTION fleet_internal.engine_end_job(job fleet.jobs, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    behavior text := coalesce(job.rollout ->> 'endBehavior', 'STOP_ROLLOUT');
    reason   text := format('ended: its end time %s passed (endBehavior %s)',
                            fleet_internal.rest_timestamp(fleet_internal.rollout_end(job)), behavior);
BEGIN
    IF behavior = 'STOP_ROLLOUT' THEN
        PERFORM fleet_internal.engine_pause_job(job, reason, at);
        RETURN;
    END IF;
    IF behavior = 'FORCE_CANCEL' THEN
        -- claimed, unanswered: failed now (an answer that comes later finds
        -- its delivery done and changes nothing)
        UPDATE fleet.job_devices jd
           SET status = 'failed', error = 'the job ended', finished_at = fleet_internal.moment(at)
         WHERE jd.job_id = job.id AND jd.status = 'pending' AND jd.gateway IS NOT NULL;
    END IF;
    UPDATE fleet.jobs j SET status_detail = reason WHERE j.id = job.id;
    PERFORM fleet_internal.engine_finish_job(job, 'cancelled', at);
END;
$$;
