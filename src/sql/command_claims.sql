-- Commands reach devices through gateways: programs that claim deliveries
-- with fleet.claim_commands() and report with fleet.complete_command()
-- (tools/fleet-sim.c is one).
--
-- A command job's deliveries are its fleet.job_devices rows: the fan-out
-- gives each a delivery id, in device order.  The engine offers them a
-- window at a time (fleet.command_windows: a range of delivery ids, at most
-- fleet.command_window outstanding); a gateway claims from the open windows
-- of running jobs (SKIP LOCKED: never two gateways the same row) and answers
-- on the same row.  So a device costs the fan-out's insert, a claim and an
-- answer, as a plain claim-then-acknowledge queue would; a separate delivery
-- table cost two more writes per device, under four more indexes.
--
-- A delivery ends completed, failed, or timed out: claimed and not answered
-- by its deadline (fleet.command_timeout after the claim), or not claimed
-- within fleet.command_timeout of its window opening while the job ran.  A
-- stopped job's unclaimed commands are withdrawn: gateways claim only from
-- running jobs, and a resume gives them a fresh deadline.


-- Every delivery made, as gateways and the engine see them: queued (offered
-- in a window, not claimed yet), withdrawn (the same, its job not running),
-- claimed, in_progress, completed, failed, rejected or timed_out.  Devices a command could not
-- reach have no delivery (the job's device list says why).
CREATE VIEW fleet.command_deliveries WITH (security_invoker = true) AS
SELECT jd.delivery_id, jd.job_id, jd.device_id,
       j.data -> 0 ->> 'path' AS command,
       j.data -> 0 -> 'value' AS request,
       CASE WHEN jd.status = 'completed' THEN 'completed'
            WHEN jd.status = 'failed' THEN lower(fleet_internal.failure_type(jd.error))
            WHEN jd.gateway IS NOT NULL AND jd.response_status = 202 THEN 'in_progress'
            WHEN jd.gateway IS NOT NULL THEN 'claimed'
            WHEN j.status = 'running' THEN 'queued'
            ELSE 'withdrawn' END AS status,
       jd.gateway,
       coalesce(jd.deadline, w.deadline) AS deadline,
       jd.started_at AS claimed_at,
       jd.finished_at AS completed_at,
       jd.response_status, jd.response
  FROM fleet.job_devices jd
  JOIN fleet.jobs j ON j.id = jd.job_id
  JOIN fleet.job_batches b ON b.job_id = jd.job_id AND b.batch = jd.batch
  LEFT JOIN fleet.command_windows w
         ON w.job_id = jd.job_id AND jd.delivery_id BETWEEN w.first_delivery AND w.last_delivery
 WHERE jd.delivery_id IS NOT NULL
   -- offered: the engine's cursor has passed it
   AND (jd.gateway IS NOT NULL OR jd.status <> 'pending' OR jd.device_id <= b.cursor);
COMMENT ON VIEW fleet.command_deliveries IS 'Command deliveries: one per device of a command job once it is offered to gateways, with its status, gateway, deadline and answer';
COMMENT ON COLUMN fleet.command_deliveries.delivery_id IS 'The id a gateway claims and answers by: the job''s number * 2^32 + the device''s position';
COMMENT ON COLUMN fleet.command_deliveries.job_id IS 'The command job';
COMMENT ON COLUMN fleet.command_deliveries.device_id IS 'The device the command is for';
COMMENT ON COLUMN fleet.command_deliveries.command IS 'The command, "name" or "component/name"';
COMMENT ON COLUMN fleet.command_deliveries.request IS 'The command''s request payload';
COMMENT ON COLUMN fleet.command_deliveries.status IS 'queued, withdrawn (its job is not running), claimed, in_progress (the device answered 202), completed, failed, rejected (4xx) or timed_out';
COMMENT ON COLUMN fleet.command_deliveries.gateway IS 'The gateway that claimed it; simulator when the engine answered for a simulated device';
COMMENT ON COLUMN fleet.command_deliveries.deadline IS 'When it times out: its claim''s deadline, or, unclaimed, its window''s';
COMMENT ON COLUMN fleet.command_deliveries.claimed_at IS 'When a gateway claimed it';
COMMENT ON COLUMN fleet.command_deliveries.completed_at IS 'When it was answered or timed out';
COMMENT ON COLUMN fleet.command_deliveries.response_status IS 'The device''s answer, HTTP-style: 2xx completed the device';
COMMENT ON COLUMN fleet.command_deliveries.response IS 'The device''s response payload';

-- A gateway's name is stored on every row it claims and shown in reports.
CREATE FUNCTION fleet_internal.require_gateway_name(gateway text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF gateway IS NULL OR btrim(gateway) = '' THEN
        RAISE EXCEPTION 'a gateway must name itself when it claims commands'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(gateway) > 128 OR gateway ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid gateway name "%"', left(regexp_replace(gateway, '[[:cntrl:]]', '?', 'g'), 40)
                                                     || CASE WHEN length(gateway) > 40 THEN '...' ELSE '' END
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It has %s characters.', length(gateway)),
                  HINT = 'Name a gateway with 1 to 128 printable characters, after its host or its role.';
    END IF;
    IF gateway = 'simulator' THEN
        RAISE EXCEPTION 'gateway name "simulator" is reserved for the engine''s simulated devices'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the gateway after its host or its role.';
    END IF;
END;
$$;

-- The claim itself, for fleet.claim_commands() and the MQTT endpoint's
-- bridge (fleet_internal.endpoint_claim_commands()): up to max_count queued
-- deliveries of running jobs in the given organizations (all when
-- everywhere), of devices connected through connected_via when it is set.
-- The open windows, earliest deadline first (a small job's window is not
-- starved by a big one's refills), each read through the unclaimed queue;
-- rows are locked as the outer LIMIT takes them, so none is locked and
-- left.  MATERIALIZED: the locked rows are picked once.
CREATE FUNCTION fleet_internal.claim_deliveries(gateway text, max_count int, everywhere boolean, operated text[],
                                                connected_via text)
RETURNS TABLE (delivery_id bigint, job_id text, device_id text, command text, request jsonb, deadline timestamptz)
-- PL/pgSQL: its plan is kept between calls (a SQL function's UPDATE is
-- planned again at every call, a millisecond a claim)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF fleet_internal.citus_table('fleet.job_devices') THEN
        RETURN QUERY SELECT * FROM fleet_internal.claim_deliveries_on_shards(gateway, max_count, everywhere, operated,
                                                                             connected_via);
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS MATERIALIZED (
        SELECT u.delivery_id, w.command, w.request, w.timeout
          FROM (SELECT ow.first_delivery, ow.last_delivery,
                       rj.data -> 0 ->> 'path' AS command, rj.data -> 0 -> 'value' AS request,
                       fleet_internal.command_timeout(rj.rollout) AS timeout
                  FROM fleet.command_windows ow JOIN fleet.jobs rj ON rj.id = ow.job_id
                 WHERE rj.status = 'running' AND (everywhere OR rj.organization_id = ANY (operated))
                 ORDER BY ow.deadline, ow.first_delivery) w
         CROSS JOIN LATERAL (
                SELECT q.delivery_id FROM fleet.job_devices q
                 WHERE q.delivery_id IS NOT NULL AND q.gateway IS NULL
                   -- (an unclaimed delivery's deadline is a retry's backoff)
                   AND (q.deadline IS NULL OR q.deadline <= fleet_internal.moment())
                   AND q.delivery_id >= w.first_delivery AND q.delivery_id <= w.last_delivery
                   AND q.status = 'pending'
                   -- a device the bridge serves takes its command when it
                   -- listens for direct methods there; until then it waits,
                   -- as IoT Central queues a command for an offline device
                   AND (connected_via IS NULL
                        OR EXISTS (SELECT 1 FROM fleet.devices c
                                    WHERE c.id = q.device_id AND c.endpoint_gateway = connected_via
                                      AND c.endpoint_listens & 1 = 1))
                 ORDER BY q.delivery_id
                 LIMIT max_count
                   FOR UPDATE OF q SKIP LOCKED) u
         LIMIT max_count
    )
    UPDATE fleet.job_devices d
       SET gateway = claim_deliveries.gateway, started_at = t.at,
           deadline = t.at + p.timeout
      FROM picked p, (SELECT fleet_internal.moment() AS at) t
     WHERE d.delivery_id = p.delivery_id AND d.delivery_id IS NOT NULL
    RETURNING d.delivery_id, d.job_id, d.device_id, p.command, p.request, d.deadline;
END;
$$;

-- The claim when job_devices is spread over Citus shards, where FOR UPDATE
-- SKIP LOCKED works within one shard only.  For each open window, earliest
-- deadline first: its first unclaimed deliveries are read from every shard
-- at once (a read: no lock, one statement), grouped by the shard that holds
-- them, and claimed shard by shard, each by a statement Citus sends to that
-- shard alone, where SKIP LOCKED holds: a gateway never waits for another,
-- and never takes a delivery another holds: it reads on past those.
CREATE FUNCTION fleet_internal.claim_deliveries_on_shards(gateway text, max_count int, everywhere boolean,
                                                          operated text[], connected_via text)
RETURNS TABLE (delivery_id bigint, job_id text, device_id text, command text, request jsonb, deadline timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- (each shard's statement planned with its devices as constants: Citus
-- routes it to their shard)
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    w      record;
    s      record;
    now_at timestamptz := fleet_internal.moment();
    due    timestamptz;
    after  bigint;
    found_devices    text[];
    found_deliveries bigint[];
    left_  int := max_count;
    n      int;
BEGIN
    FOR w IN SELECT ow.job_id AS window_job, ow.first_delivery, ow.last_delivery,
                    rj.data -> 0 ->> 'path' AS window_command, rj.data -> 0 -> 'value' AS window_request,
                    fleet_internal.command_timeout(rj.rollout) AS timeout
               FROM fleet.command_windows ow JOIN fleet.jobs rj ON rj.id = ow.job_id
              WHERE rj.status = 'running' AND (everywhere OR rj.organization_id = ANY (operated))
              ORDER BY ow.deadline, ow.first_delivery
    LOOP
        due := now_at + w.timeout;
        after := w.first_delivery - 1;
        -- deliveries another gateway holds are skipped: then the next ones
        -- are read, until enough are claimed or the window has no more
        LOOP
            SELECT array_agg(q.device_id ORDER BY q.delivery_id), array_agg(q.delivery_id ORDER BY q.delivery_id)
              INTO found_devices, found_deliveries
              FROM (SELECT q.device_id, q.delivery_id FROM fleet.job_devices q
                     WHERE q.job_id = w.window_job
                       AND q.delivery_id > after AND q.delivery_id <= w.last_delivery
                       AND q.gateway IS NULL AND q.status = 'pending'
                       AND (q.deadline IS NULL OR q.deadline <= now_at)
                       AND (connected_via IS NULL
                            OR EXISTS (SELECT 1 FROM fleet.devices c
                                        WHERE c.id = q.device_id AND c.endpoint_gateway = connected_via
                                          AND c.endpoint_listens & 1 = 1))
                     ORDER BY q.delivery_id
                     LIMIT left_) q;
            EXIT WHEN found_devices IS NULL;
            after := found_deliveries[cardinality(found_deliveries)];
            FOR s IN SELECT array_agg(f.device_id) AS devices, array_agg(f.delivery_id) AS deliveries
                       FROM unnest(found_devices, found_deliveries) AS f (device_id, delivery_id)
                      GROUP BY pg_catalog.get_shard_id_for_distribution_column('fleet.job_devices', f.device_id)
                      ORDER BY min(f.delivery_id)
            LOOP
                RETURN QUERY
                UPDATE fleet.job_devices d
                   SET gateway = claim_deliveries_on_shards.gateway, started_at = now_at, deadline = due
                  FROM (SELECT q.job_id, q.device_id FROM fleet.job_devices q
                         WHERE q.device_id = ANY (s.devices) AND q.job_id = w.window_job
                           AND q.delivery_id = ANY (s.deliveries)
                           AND q.gateway IS NULL AND q.status = 'pending'
                         ORDER BY q.delivery_id
                         LIMIT left_
                           FOR UPDATE SKIP LOCKED) free
                 WHERE d.device_id = ANY (s.devices) AND d.job_id = free.job_id AND d.device_id = free.device_id
                RETURNING d.delivery_id, d.job_id, d.device_id, w.window_command, w.window_request, d.deadline;
                GET DIAGNOSTICS n = ROW_COUNT;
                left_ := left_ - n;
                EXIT WHEN left_ <= 0;
            END LOOP;
            EXIT WHEN left_ <= 0;
        END LOOP;
        EXIT WHEN left_ <= 0;
    END LOOP;
END;
$$;

-- fleet.complete_commands() when job_devices is spread over Citus shards:
-- each answer's new values are made first, from the answers alone (Citus
-- refuses stable functions such as format() in a statement that changes a
-- distributed table), then one UPDATE takes them.
CREATE FUNCTION fleet_internal.complete_deliveries_on_shards(delivery_ids bigint[], statuses int[], responses jsonb[],
                                                             everywhere boolean, operated text[], answered timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    taken   bigint;
    allowed text[];
    jobs    text[];
    dues    timestamptz[];
    -- each answer's new values, made here from the answers alone
    new_statuses text[];
    errors       text[];
    finished     timestamptz[];
BEGIN
    IF NOT everywhere THEN
        allowed := ARRAY(SELECT j.id FROM fleet.jobs j WHERE j.organization_id = ANY (operated));
    END IF;
    -- work under way (202) is due by its job's in-progress timeout
    IF 202 = ANY (statuses) THEN
        SELECT array_agg(d.job_id ORDER BY a.n), array_agg(answered + fleet_internal.in_progress_timeout(d.job_id) ORDER BY a.n)
          INTO jobs, dues
          FROM unnest(delivery_ids) WITH ORDINALITY AS a (delivery_id, n)
          LEFT JOIN (SELECT q.delivery_id, q.job_id FROM fleet.job_devices q
                      WHERE q.delivery_id = ANY (delivery_ids) AND q.delivery_id IS NOT NULL) d
            ON d.delivery_id = a.delivery_id;
    END IF;
    SELECT array_agg(CASE WHEN x.status = 202 THEN 'pending'
                          WHEN x.status BETWEEN 200 AND 299 THEN 'completed' ELSE 'failed' END ORDER BY x.n),
           array_agg(CASE WHEN x.status NOT BETWEEN 200 AND 299
                          THEN format('%s with status %s%s',
                                      CASE WHEN x.status BETWEEN 400 AND 499 THEN 'rejected by the device' ELSE 'command failed' END,
                                      x.status,
                                      coalesce(': ' || left(x.response::text, 200)
                                               || CASE WHEN length(x.response::text) > 200 THEN '...' ELSE '' END, '')) END
                     ORDER BY x.n),
           array_agg(CASE WHEN x.status <> 202 THEN answered END ORDER BY x.n)
      INTO new_statuses, errors, finished
      FROM unnest(delivery_ids, statuses, coalesce(responses, array_fill(NULL::jsonb, ARRAY[cardinality(delivery_ids)])))
           WITH ORDINALITY AS x (delivery_id, status, response, n);
    UPDATE fleet.job_devices d
       SET status = a.new_status, error = a.error, response_status = a.status, response = a.response,
           finished_at = a.finished_at, deadline = CASE WHEN a.status = 202 THEN a.due ELSE d.deadline END
      FROM unnest(delivery_ids, statuses, coalesce(responses, array_fill(NULL::jsonb, ARRAY[cardinality(delivery_ids)])),
                  new_statuses, errors, finished, coalesce(dues, array_fill(NULL::timestamptz, ARRAY[cardinality(delivery_ids)])))
           AS a (delivery_id, status, response, new_status, error, finished_at, due)
     WHERE d.delivery_id = a.delivery_id AND d.delivery_id IS NOT NULL
       AND d.gateway IS NOT NULL AND d.status = 'pending'
       AND (everywhere OR d.job_id = ANY (allowed));
    GET DIAGNOSTICS taken = ROW_COUNT;
    RETURN taken;
END;
$$;

-- Gateways claim and answer through these two functions only (members
-- cannot write job_devices): a row's gateway and deadline decide when the
-- engine may close a window or finish a job, so a member writing them could
-- hold a job, and a slot of fleet.max_running_jobs, for ever.
-- SECURITY DEFINER, so they check the caller's organizations themselves:
-- commands of jobs where the calling role is an operator.  (Under the
-- caller's row-level security, the policies' subplans also made the
-- planner scan all of job_devices for each claim.)
CREATE FUNCTION fleet.claim_commands(gateway text, max_count int DEFAULT 100)
RETURNS TABLE (delivery_id bigint, job_id text, device_id text, command text, request jsonb, deadline timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller         name := fleet_internal.calling_role();
    everywhere     boolean := fleet_internal.role_sees_everything(caller);
    operated       text[];
BEGIN
    IF NOT everywhere THEN
        operated := ARRAY(SELECT fleet_internal.organizations_for('operator', caller));
    END IF;
    PERFORM fleet_internal.require_gateway_name(gateway);
    IF max_count IS NULL OR max_count < 1 THEN
        RAISE EXCEPTION 'max_count must be at least 1, not %', coalesce(max_count::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY SELECT * FROM fleet_internal.claim_deliveries(gateway, max_count, everywhere, operated, NULL);
END;
$$;
COMMENT ON FUNCTION fleet.claim_commands(text, int) IS 'Claims up to max_count queued command deliveries for a gateway; concurrent gateways never get the same one';

-- A gateway's answers, many at once: 2xx completes the device, anything
-- else fails it with the response as the error.  An answer for a delivery
-- that is no longer claimed (timed out, already answered, never claimed)
-- changes nothing.  Returns how many answers were taken.
-- SECURITY DEFINER: see fleet.claim_commands().
CREATE FUNCTION fleet.complete_commands(delivery_ids bigint[], statuses int[], responses jsonb[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the arrays are the plan's input: plan with them
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    taken      bigint;
    caller     name := fleet_internal.calling_role();
    everywhere boolean := fleet_internal.role_sees_everything(caller);
    operated   text[];
    answered   timestamptz := fleet_internal.moment();
    w          record;
BEGIN
    IF NOT everywhere THEN
        operated := ARRAY(SELECT fleet_internal.organizations_for('operator', caller));
    END IF;
    IF delivery_ids IS NULL OR statuses IS NULL THEN
        RAISE EXCEPTION 'delivery_ids and statuses must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass one delivery id and one status per answer, as arrays of the same length.';
    END IF;
    IF cardinality(delivery_ids) IS DISTINCT FROM cardinality(statuses)
       OR (responses IS NOT NULL AND cardinality(responses) <> cardinality(delivery_ids)) THEN
        RAISE EXCEPTION 'delivery_ids, statuses and responses must be arrays of the same length'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('They have %s, %s and %s elements.', coalesce(cardinality(delivery_ids)::text, 'NULL'),
                                  coalesce(cardinality(statuses)::text, 'NULL'), coalesce(cardinality(responses)::text, 'no'));
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(statuses) s WHERE s IS NULL OR s NOT BETWEEN 100 AND 599) THEN
        RAISE EXCEPTION 'command status % is not an HTTP-style status code',
                        (SELECT coalesce(s::text, 'NULL') FROM unnest(statuses) s WHERE s IS NULL OR s NOT BETWEEN 100 AND 599 LIMIT 1)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Report 200 for success, 202 for work under way, 4xx when the device refuses, 5xx when it fails, as IoT Hub direct methods do.';
    END IF;

    -- One statement, on the rows the claim made (a HOT update: no index
    -- covers what it changes).  No counter here: one that every answer
    -- touched would serialize the gateways; the engine counts.  Nor a
    -- wake-up: the engine looks every 50 ms while command jobs run (a step
    -- per answer batch kept a core busy).
    --
    -- 202: the device took the command and works on it (its response may
    -- say how far: "progress", "statusDetails"); it stays open, due within
    -- the job's inProgressTimeout, and may be answered again.  4xx: the
    -- device refused it (rejected); other non-2xx: it failed.
    IF fleet_internal.citus_table('fleet.job_devices') THEN
        taken := fleet_internal.complete_deliveries_on_shards(delivery_ids, statuses, responses, everywhere, operated,
                                                             answered);
    ELSE
    UPDATE fleet.job_devices d
       SET status = CASE WHEN a.status = 202 THEN 'pending'
                         WHEN a.status BETWEEN 200 AND 299 THEN 'completed' ELSE 'failed' END,
           -- the response is in its own column; the error says what it
           -- starts with (a 50 MB response is not kept twice)
           error = CASE WHEN a.status NOT BETWEEN 200 AND 299
                        THEN format('%s with status %s%s',
                                    CASE WHEN a.status BETWEEN 400 AND 499 THEN 'rejected by the device' ELSE 'command failed' END,
                                    a.status,
                                    coalesce(': ' || left(a.response::text, 200)
                                             || CASE WHEN length(a.response::text) > 200 THEN '...' ELSE '' END, '')) END,
           response_status = a.status, response = a.response,
           finished_at = CASE WHEN a.status <> 202 THEN answered END,
           deadline = CASE WHEN a.status = 202 THEN answered + fleet_internal.in_progress_timeout(d.job_id) ELSE d.deadline END
      FROM unnest(delivery_ids, statuses, coalesce(responses, array_fill(NULL::jsonb, ARRAY[cardinality(delivery_ids)])))
           AS a(delivery_id, status, response)
     WHERE d.delivery_id = a.delivery_id AND d.delivery_id IS NOT NULL
       AND d.gateway IS NOT NULL AND d.status = 'pending'
       AND (everywhere OR d.job_id IN (SELECT j.id FROM fleet.jobs j WHERE j.organization_id = ANY (operated)));
    GET DIAGNOSTICS taken = ROW_COUNT;
    END IF;
    -- work under way is due by its in-progress timeout, which may come
    -- before its window's next look (rare: one statement, for 202s only)
    -- (each window's earliest read first: Citus updates a reference table
    -- from no distributed one)
    IF 202 = ANY (statuses) THEN
        FOR w IN SELECT cw.job_id, cw.first_delivery, min(d.deadline) AS due
                   FROM fleet.job_devices d
                   JOIN fleet.command_windows cw
                     ON cw.job_id = d.job_id AND d.delivery_id BETWEEN cw.first_delivery AND cw.last_delivery
                  WHERE d.delivery_id = ANY (delivery_ids) AND d.delivery_id IS NOT NULL
                    AND d.status = 'pending' AND d.response_status = 202
                  GROUP BY cw.job_id, cw.first_delivery
        LOOP
            UPDATE fleet.command_windows cw
               SET next_check = w.due
             WHERE cw.job_id = w.job_id AND cw.first_delivery = w.first_delivery AND cw.next_check > w.due;
        END LOOP;
    END IF;
    RETURN taken;
END;
$$;
COMMENT ON FUNCTION fleet.complete_commands(bigint[], int[], jsonb[]) IS 'Reports many answers at once; returns how many were taken (the others were no longer open)';

-- One answer: fleet.complete_commands() with one element.
CREATE FUNCTION fleet.complete_command(delivery_id bigint, status int, response jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet.complete_commands(ARRAY[delivery_id], ARRAY[status], ARRAY[response]) = 1
$$;
COMMENT ON FUNCTION fleet.complete_command(bigint, int, jsonb) IS 'Reports a device''s answer to a claimed command; false when the delivery is no longer open';

