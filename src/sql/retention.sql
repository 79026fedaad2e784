-- Retention: finished jobs are kept fleet.job_retention (30 days by
-- default, as IoT Central keeps them), then deleted with everything under
-- them; fleet.delete_job() deletes one at once.  A deleted job is gone from
-- the API at once (its deleted_at is set); the engine then purges its rows a
-- chunk at a time (five times fleet.engine_chunk_size rows of job_devices a
-- turn), each chunk its own short transaction, so no lock is held for long
-- and a restart carries on where the purge stood.  The space the rows took is
-- reused by the next jobs once VACUUM has seen it (make bench measures a
-- million-device job's purge).  Device operations and scheduled runs are
-- kept as long as jobs.

-- One turn's purge.  Returns whether there is more to purge right away.
CREATE FUNCTION fleet_internal.purge(at timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    now_ts    timestamptz := fleet_internal.moment(at);
    retention interval := current_setting('fleet.job_retention')::interval;
    chunk     int := current_setting('fleet.engine_chunk_size')::int;
    -- deleting a row costs a fraction of updating one: five chunks a turn
    purge_chunk    int := 5 * chunk;
    doomed         text;
    purged_through text;
    chunk_end      text;
    n_deleted      bigint;
    more      boolean := false;
BEGIN
    IF retention > interval '0' THEN
        -- finished jobs past retention are deleted, a hundred at a time
        IF EXISTS (SELECT 1 FROM fleet.jobs o
                    WHERE o.finished_at < now_ts - retention AND o.deleted_at IS NULL
                      AND o.status IN ('completed', 'failed', 'cancelled')) THEN
            UPDATE fleet.jobs j SET deleted_at = now_ts
             WHERE j.id IN (SELECT o.id FROM fleet.jobs o
                             WHERE o.finished_at < now_ts - retention AND o.deleted_at IS NULL
                               AND o.status IN ('completed', 'failed', 'cancelled')
                             LIMIT 100);
            more := FOUND;
        END IF;
        -- device operations: their rejected rows first, a chunk at a time.
        -- Rows are named by key, not ctid (on Citus a reference table's
        -- copies are separate heaps), and nothing is written when nothing
        -- is due (on Citus a write locks the table's shard on every node).
        IF EXISTS (SELECT 1 FROM fleet.device_operations o WHERE o.finished_at < now_ts - retention) THEN
            DELETE FROM fleet.device_operation_errors e
             WHERE (e.operation_id, e.line) IN (SELECT x.operation_id, x.line FROM fleet.device_operation_errors x
                                                  JOIN fleet.device_operations o ON o.id = x.operation_id
                                                 WHERE o.finished_at < now_ts - retention
                                                 LIMIT chunk);
            GET DIAGNOSTICS n_deleted = ROW_COUNT;
            IF n_deleted = chunk THEN
                more := true;
            ELSE
                DELETE FROM fleet.device_operations o WHERE o.finished_at < now_ts - retention;
            END IF;
        END IF;
        IF EXISTS (SELECT 1 FROM fleet.scheduled_job_runs x WHERE x.recorded_at < now_ts - retention) THEN
            DELETE FROM fleet.scheduled_job_runs r
             WHERE (r.scheduled_job_id, r.occurrence) IN (SELECT x.scheduled_job_id, x.occurrence
                                                            FROM fleet.scheduled_job_runs x
                                                           WHERE x.recorded_at < now_ts - retention LIMIT chunk);
        END IF;
    END IF;

    -- a deleted job's devices' outcomes, a chunk in device order from where
    -- the last one stopped (a scan from the start would walk the index
    -- entries of every row deleted before: quadratic in the job's size);
    -- once none is left, the job (its batches, windows and engine state go
    -- with it)
    SELECT j.id, s.purged_through INTO doomed, purged_through
      FROM fleet.jobs j LEFT JOIN fleet_internal.job_engine_state s ON s.job_id = j.id
     WHERE j.deleted_at IS NOT NULL
     ORDER BY j.deleted_at, j.id
     LIMIT 1
       FOR UPDATE OF j SKIP LOCKED;
    IF doomed IS NULL THEN
        RETURN more;
    END IF;
    -- the chunk as a range of device ids (on Citus the devices' rows are
    -- on many shards, where a ctid names nothing)
    SELECT count(*), max(x.device_id) INTO n_deleted, chunk_end
      FROM (SELECT y.device_id FROM fleet.job_devices y
             WHERE y.job_id = doomed AND y.device_id > coalesce(purged_through, '')
             ORDER BY y.device_id
             LIMIT purge_chunk) x;
    IF n_deleted > 0 THEN
        DELETE FROM fleet.job_devices jd
         WHERE jd.job_id = doomed AND jd.device_id > coalesce(purged_through, '') AND jd.device_id <= chunk_end;
        purged_through := chunk_end;
    END IF;
    IF n_deleted < purge_chunk THEN
        DELETE FROM fleet.job_device_attempts a WHERE a.job_id = doomed;
        DELETE FROM fleet.jobs j WHERE j.id = doomed;
    ELSE
        INSERT INTO fleet_internal.job_engine_state AS s (job_id, purged_through)
        VALUES (doomed, purged_through)
        ON CONFLICT (job_id) DO UPDATE SET purged_through = excluded.purged_through;
    END IF;
    RETURN true;
END;
$$;
