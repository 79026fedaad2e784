-- A job's start: where its devices are found and its batches are cut.
--
-- On its first start a job resolves its group's members now (or, for a
-- rerun, the source job's failed devices), numbers them in device id order
-- and cuts them into batches: contiguous ranges of that order, so a batch
-- is walked through the primary key of fleet.job_devices with a cursor
-- (src/sql/job_steps.sql).  One statement, whatever the job's size.

-- Starts a queued job (at: the engine's clock, NULL for the real one).
CREATE FUNCTION fleet_internal.engine_start_job(job fleet.jobs, at timestamptz)
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
    timeout interval := fleet_internal.command_timeout(job.rollout);
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
            UPDATE fleet.jobs j SET status = 'failed', finished_at = fleet_internal.moment(at), error = refusal
             WHERE j.id = job.id;
            PERFORM fleet_internal.job_event(job.id, 'failed');
            RETURN;
        END IF;
    END IF;
    IF job.started_at IS NULL THEN
        IF job.job_type = 'command' THEN
            delivery_base := nextval('fleet_internal.delivery_blocks') * 4294967296;
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
               AND (grp.filter IS NULL OR jsonb_path_match(fleet_internal.device_document_of(d.id, d.display_name, d.template_id, d.organization_id, d.simulated,
                 d.connection_state, d.last_activity_at, d.edge, d.manifest_id, d.properties, d.reported, d.cloud_properties), grp.filter, silent => true))
        ),
        numbered AS (
            SELECT m.device_id, row_number() OVER (ORDER BY m.device_id) AS n, count(*) OVER () AS total
              FROM members m
        ),
        assigned AS (
            -- a command job's rows are its deliveries, numbered in the
            -- job's block of ids (src/sql/command_claims.sql)
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
        -- a canary first (src/sql/job_rollouts.sql)
        IF job.rollout ? 'canary' AND job.rerun_of IS NULL THEN
            PERFORM fleet_internal.engine_cut_canary(job);
        END IF;

        SELECT coalesce(sum(b.size), 0) INTO total FROM fleet.job_batches b WHERE b.job_id = job.id;
        -- a big fan-out leaves the table's statistics describing another
        -- table, and lookups into it (by gateways, by the engine) would be
        -- planned as scans: the next turn refreshes them, when no
        -- maintenance holds the table (fleet_internal.refresh_statistics)
        IF total >= 10000 THEN
            UPDATE fleet_internal.engine_state SET analyze_wanted = true;
        END IF;

        UPDATE fleet.jobs j
           SET started_at = fleet_internal.moment(at), device_count = total,
               current_batch = CASE WHEN total > 0 THEN 1 END
         WHERE j.id = job.id;
    END IF;
    -- a resumed command job offers its withdrawn commands again, with a
    -- fresh deadline
    UPDATE fleet.command_windows w
       SET deadline = fleet_internal.moment(at) + timeout,
           next_check = least(coalesce(w.next_check, 'infinity'), fleet_internal.moment(at) + timeout)
     WHERE w.job_id = job.id;
    IF FOUND THEN
        -- (the payload says nothing: anyone may LISTEN)
        PERFORM pg_notify('fleet_commands', '');
    END IF;
    UPDATE fleet.jobs j SET status = 'running', last_step_at = NULL WHERE j.id = job.id;
    PERFORM fleet_internal.job_event(job.id, 'started');
END;
$$;
