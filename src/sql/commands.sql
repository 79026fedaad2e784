-- Commands reach devices through gateways: programs that claim deliveries
-- with fleet.claim_commands() and report with fleet.complete_command()
-- (tools/fleet-sim.c is one).  A delivery is queued by the engine, claimed by
-- one gateway (SKIP LOCKED: never two), and ends completed, failed, timed out
-- (past its deadline) or withdrawn (its job was stopped before a gateway
-- claimed it).

CREATE TABLE fleet.command_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    job_id          text NOT NULL,
    device_id       text NOT NULL,
    command         text NOT NULL,                 -- "name" or "component/name"
    request         jsonb,
    status          text NOT NULL CHECK (status IN ('queued', 'claimed', 'completed', 'failed',
                                                    'timed_out', 'withdrawn')),
    gateway         text,
    queued_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    deadline        timestamptz NOT NULL,
    claimed_at      timestamptz,
    completed_at    timestamptz,
    response_status int,
    response        jsonb
);
CREATE INDEX command_deliveries_queue_idx ON fleet.command_deliveries (delivery_id) WHERE status = 'queued';
CREATE INDEX command_deliveries_deadline_idx ON fleet.command_deliveries (deadline) WHERE status IN ('queued', 'claimed');
CREATE INDEX command_deliveries_open_idx ON fleet.command_deliveries (job_id, device_id) WHERE status IN ('queued', 'claimed');
-- the engine counts a batch's failed answers through this one
CREATE INDEX command_deliveries_failed_idx ON fleet.command_deliveries (job_id, device_id) WHERE status IN ('failed', 'timed_out');
COMMENT ON TABLE fleet.command_deliveries IS 'One command for one device of a command job, from queued to completed, failed, timed_out or withdrawn';

CREATE FUNCTION fleet.claim_commands(gateway text, max_count int DEFAULT 100)
RETURNS TABLE (delivery_id bigint, job_id text, device_id text, command text, request jsonb, deadline timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF gateway IS NULL OR btrim(gateway) = '' THEN
        RAISE EXCEPTION 'a gateway must name itself when it claims commands'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_count IS NULL OR max_count < 1 THEN
        RAISE EXCEPTION 'max_count must be at least 1, not %', coalesce(max_count::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- MATERIALIZED: the locked rows are picked once; a subquery the planner
    -- re-ran would lock rows it then does not claim
    RETURN QUERY
    WITH picked AS MATERIALIZED (
        SELECT q.delivery_id FROM fleet.command_deliveries q
         WHERE q.status = 'queued'
         ORDER BY q.delivery_id
         LIMIT max_count
           FOR UPDATE SKIP LOCKED
    )
    UPDATE fleet.command_deliveries d
       SET status = 'claimed', gateway = claim_commands.gateway, claimed_at = clock_timestamp()
      FROM picked p
     WHERE d.delivery_id = p.delivery_id
    RETURNING d.delivery_id, d.job_id, d.device_id, d.command, d.request, d.deadline;
END;
$$;
COMMENT ON FUNCTION fleet.claim_commands(text, int) IS 'Claims up to max_count queued command deliveries for a gateway; concurrent gateways never get the same one';

-- A gateway's answers, many at once: 2xx completes the device, anything
-- else fails it with the response as the error.  An answer for a delivery
-- that is no longer claimed (timed out, withdrawn, already answered) changes
-- nothing.  Returns how many answers were taken.
CREATE FUNCTION fleet.complete_commands(delivery_ids bigint[], statuses int[], responses jsonb[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- the arrays are the plan's input: plan with them
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    taken  bigint := 0;
    answer record;
BEGIN
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
                  HINT = 'Report 200 for success, or 4xx/5xx for failure, as IoT Hub direct methods do.';
    END IF;

    -- the deliveries, then their devices: one statement each per job, the
    -- devices by array (no counter here: one every answer touched would
    -- serialize the gateways; the engine counts)
    FOR answer IN
        WITH taken AS (
            UPDATE fleet.command_deliveries d
               SET status = CASE WHEN a.status BETWEEN 200 AND 299 THEN 'completed' ELSE 'failed' END,
                   response_status = a.status, response = a.response, completed_at = clock_timestamp()
              FROM unnest(delivery_ids, statuses, coalesce(responses, array_fill(NULL::jsonb, ARRAY[cardinality(delivery_ids)])))
                   AS a(delivery_id, status, response)
             WHERE d.delivery_id = a.delivery_id AND d.status = 'claimed'
            RETURNING d.job_id, d.device_id, d.status AS outcome,
                      format('command failed with status %s%s', a.status, coalesce(': ' || a.response::text, '')) AS error
        )
        SELECT t.job_id,
               array_agg(t.device_id) FILTER (WHERE t.outcome = 'completed') AS completed,
               array_agg(t.device_id) FILTER (WHERE t.outcome = 'failed') AS failed,
               array_agg(t.error) FILTER (WHERE t.outcome = 'failed') AS errors,
               count(*) AS n
          FROM taken t GROUP BY t.job_id
    LOOP
        IF answer.completed IS NOT NULL THEN
            UPDATE fleet.job_devices jd SET status = 'completed', finished_at = clock_timestamp()
             WHERE jd.job_id = answer.job_id AND jd.device_id = ANY (answer.completed) AND jd.status = 'pending';
        END IF;
        IF answer.failed IS NOT NULL THEN
            UPDATE fleet.job_devices jd SET status = 'failed', error = f.error, finished_at = clock_timestamp()
              FROM unnest(answer.failed, answer.errors) AS f(device_id, error)
             WHERE jd.job_id = answer.job_id AND jd.device_id = f.device_id AND jd.status = 'pending';
        END IF;
        taken := taken + answer.n;
    END LOOP;
    -- No wake-up for the engine: gateways answer hundreds of batches a
    -- second, and a step for each kept a core busy (measured: 4 s of CPU in
    -- a 4.5 s job).  While command jobs run the engine looks every 50 ms.
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

-- Fails every open delivery past its deadline as "timed out".  The engine
-- calls it every step; it is safe to call at any time.
CREATE FUNCTION fleet.expire_commands()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expired bigint := 0;
    overdue record;
BEGIN
    -- one statement per job with overdue commands: the devices go by array,
    -- an index lookup each, whatever the statistics say
    FOR overdue IN
        WITH timed_out AS (
            UPDATE fleet.command_deliveries d
               SET status = 'timed_out', completed_at = clock_timestamp()
             -- now(): the step's start, stable, so the deadline index bounds the scan
             WHERE d.status IN ('queued', 'claimed') AND d.deadline < pg_catalog.now()
            RETURNING d.job_id, d.device_id
        )
        SELECT t.job_id, array_agg(t.device_id) AS devices FROM timed_out t GROUP BY t.job_id
    LOOP
        UPDATE fleet.job_devices jd
           SET status = 'failed', error = 'timed out', finished_at = clock_timestamp()
         WHERE jd.job_id = overdue.job_id AND jd.device_id = ANY (overdue.devices) AND jd.status = 'pending';
        expired := expired + cardinality(overdue.devices);
    END LOOP;
    RETURN expired;
END;
$$;
COMMENT ON FUNCTION fleet.expire_commands() IS 'Fails open command deliveries past their deadline as timed out; returns how many';
