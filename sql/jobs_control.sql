\set SHOW_CONTEXT never
-- Commands through a gateway (played here in SQL), thresholds, stop and
-- resume, copy, rerun, the running-jobs limit, the device list.
\set env_sensor `cat test/data/iotc_env_sensor.json`
SELECT fleet.import_template(:'env_sensor') IS NOT NULL AS imported;
SELECT fleet.create_organization('lab', 'Lab') ->> 'id';
INSERT INTO fleet.device_import SELECT 'lab-' || lpad(i::text, 2, '0'), 'Lab ' || i FROM generate_series(1, 10) i;
UPDATE fleet.devices SET template_id = 'dtmi:contoso:EnvSensor;1', organization_id = 'lab' WHERE id LIKE 'lab-%';
SELECT fleet.create_device_group('lab', 'Lab devices', 'dtmi:contoso:EnvSensor;1', organization => 'lab') ->> 'id';
SELECT fleet.create_device_group('lab-any', 'Lab devices, any template', filter => '$.id starts with "lab-"', organization => 'lab') ->> 'id';

CREATE FUNCTION pg_temp.summary(job_id text) RETURNS TABLE (status text, total int, pending int, completed int, failed int)
LANGUAGE sql AS $$
    SELECT j ->> 'status', (j #>> '{progress,total}')::int, (j #>> '{progress,pending}')::int,
           (j #>> '{progress,completed}')::int, (j #>> '{progress,failed}')::int
      FROM fleet.get_job(job_id) j
$$;
CREATE FUNCTION pg_temp.reboot_job(id text, extra jsonb DEFAULT '{}', grp text DEFAULT 'lab') RETURNS text
LANGUAGE sql AS $$
    SELECT fleet.create_job(jsonb_build_object('id', id, 'displayName', 'Reboot ' || id, 'group', grp,
        'data', '[{"type": "command", "target": "dtmi:contoso:EnvSensor;1", "path": "reboot", "value": 5}]'::jsonb) || extra) ->> 'status'
$$;
-- wait until the engine has queued n deliveries of a job (with a timeout)
CREATE FUNCTION pg_temp.wait_queued(job text, n int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    give_up timestamptz := clock_timestamp() + interval '30 seconds';
    queued bigint;
BEGIN
    LOOP
        SELECT count(*) INTO queued FROM fleet.command_deliveries d WHERE d.job_id = job AND d.status = 'queued';
        EXIT WHEN queued >= n OR clock_timestamp() > give_up;
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN queued;
END;
$$;

-- simulated devices are answered by the engine itself
UPDATE fleet.devices SET simulated = true WHERE id LIKE 'lab-%';
SELECT pg_temp.reboot_job('reboot-simulated');
SELECT fleet.wait_for_job('reboot-simulated');
SELECT * FROM pg_temp.summary('reboot-simulated');
UPDATE fleet.devices SET simulated = false WHERE id LIKE 'lab-%';

-- real devices: a gateway claims the commands and answers them
SELECT pg_temp.reboot_job('reboot-real');
SELECT pg_temp.wait_queued('reboot-real', 10);
SELECT command, request, gateway, round(extract(epoch FROM d.deadline - w.opened_at)) AS timeout_s
  FROM fleet.command_deliveries d JOIN fleet.command_windows w USING (job_id)
 WHERE job_id = 'reboot-real' LIMIT 1;
CREATE TEMP TABLE claimed AS SELECT * FROM fleet.claim_commands('gateway-1', 4);
SELECT count(*) AS claimed, count(DISTINCT device_id) AS devices FROM claimed;
SELECT count(*) AS claimed_again FROM fleet.claim_commands('gateway-2', 4) c JOIN claimed USING (delivery_id);
SELECT fleet.complete_command(delivery_id, CASE WHEN device_id = 'lab-01' THEN 500 ELSE 200 END,
                              CASE WHEN device_id = 'lab-01' THEN '{"error": "busy"}'::jsonb END)
  FROM claimed ORDER BY device_id;
-- a repeated answer, an answer to an unclaimed delivery, and a made-up one change nothing
SELECT fleet.complete_command(delivery_id, 200) AS repeated FROM claimed WHERE device_id = 'lab-01';
-- (deliveries read first, MATERIALIZED: on Citus a function that reads
-- job_devices cannot run on a shard, inside a query over job_devices)
WITH d AS MATERIALIZED (SELECT delivery_id FROM fleet.command_deliveries
                         WHERE job_id = 'reboot-real' AND status = 'queued' LIMIT 1)
SELECT fleet.complete_command(delivery_id, 200) AS unclaimed FROM d;
SELECT fleet.complete_command(0, 200) AS unknown;
SELECT fleet.complete_command(1, 42);
-- the rest: the four gateway-2 claimed above are never answered and time out
-- (their deadline is moved, as time would); the last two are answered
SELECT fleet.complete_command(delivery_id, 200) FROM fleet.claim_commands('gateway-1', 4) ORDER BY delivery_id;
SELECT count(*) FROM fleet.claim_commands('gateway-1', 10);
-- (now(), not clock_timestamp(): Citus refuses a volatile function in an
-- UPDATE of a distributed table; the statement is its own transaction)
UPDATE fleet.job_devices SET deadline = now() - interval '1 second'
 WHERE job_id = 'reboot-real' AND gateway IS NOT NULL AND status = 'pending';
UPDATE fleet.command_windows SET next_check = now() - interval '1 second' WHERE job_id = 'reboot-real';
SELECT fleet.wait_for_job('reboot-real');
SELECT * FROM pg_temp.summary('reboot-real');
SELECT device_id, status, error FROM fleet.list_job_devices('reboot-real', status_filter => 'failed');
-- a late answer after the timeout changes nothing
WITH d AS MATERIALIZED (SELECT delivery_id FROM fleet.command_deliveries
                         WHERE job_id = 'reboot-real' AND status = 'timed_out' LIMIT 1)
SELECT fleet.complete_command(d.delivery_id, 200) AS late FROM d;
SELECT status, count(*) FROM fleet.command_deliveries WHERE job_id = 'reboot-real' GROUP BY 1 ORDER BY 1;

-- rerun on the failed devices: a new job over exactly those
SELECT fleet.rerun_job('reboot-real') ->> 'id' AS rerun;
SELECT pg_temp.wait_queued('reboot-real-rerun', 5);
SELECT device_id FROM fleet.job_results('reboot-real-rerun') ORDER BY 1;
SELECT fleet.complete_command(delivery_id, 200) FROM fleet.claim_commands('gateway-1', 10) ORDER BY delivery_id;
SELECT fleet.wait_for_job('reboot-real-rerun');
SELECT * FROM pg_temp.summary('reboot-real-rerun');
SELECT fleet.rerun_job('reboot-real-rerun');
SELECT fleet.rerun_job('no-such-job');

-- copy: a saved copy named "<name> Copy"
SELECT j ->> 'id' AS id, j ->> 'displayName' AS name, j ->> 'status' AS status, j -> 'data' = (SELECT data FROM fleet.jobs WHERE id = 'reboot-real') AS same_data
  FROM fleet.copy_job('reboot-real') j;
SELECT fleet.copy_job('reboot-real') ->> 'id' AS second_copy;

-- a device deleted before its batch runs fails as deleted
SELECT pg_temp.reboot_job('reboot-deleted', '{"batch": {"type": "number", "value": 5}}');
SELECT pg_temp.wait_queued('reboot-deleted', 5);
SELECT fleet.delete_device('lab-10');
SELECT fleet.complete_command(delivery_id, 200) FROM fleet.claim_commands('gateway-1', 10) ORDER BY delivery_id;
SELECT pg_temp.wait_queued('reboot-deleted', 4);
SELECT fleet.complete_command(delivery_id, 200) FROM fleet.claim_commands('gateway-1', 10) ORDER BY delivery_id;
SELECT fleet.wait_for_job('reboot-deleted');
SELECT device_id, device_name, batch, status, error FROM fleet.job_results('reboot-deleted') WHERE status <> 'completed';
SELECT fleet.create_device('lab-10', 'Lab 10', 'dtmi:contoso:EnvSensor;1', 'lab') ->> 'id';

-- stop: queued commands are withdrawn, claimed ones still count; resume
-- sends the withdrawn ones again
SELECT pg_temp.reboot_job('reboot-stop');
SELECT pg_temp.wait_queued('reboot-stop', 10);
CREATE TEMP TABLE in_flight AS SELECT * FROM fleet.claim_commands('gateway-1', 3);
SELECT fleet.stop_job('reboot-stop') ->> 'status' AS status;
SELECT status, count(*) FROM fleet.command_deliveries WHERE job_id = 'reboot-stop' GROUP BY 1 ORDER BY 1;
SELECT count(*) AS claimable_while_stopped FROM fleet.claim_commands('gateway-1', 10);
SELECT fleet.complete_command(delivery_id, 200) FROM in_flight ORDER BY delivery_id;
SELECT * FROM pg_temp.summary('reboot-stop');
SELECT fleet.stop_job('reboot-stop');
SELECT fleet.resume_job('reboot-stop') ->> 'status' AS status;
SELECT pg_temp.wait_queued('reboot-stop', 7);
SELECT fleet.complete_command(delivery_id, 200) FROM fleet.claim_commands('gateway-1', 10) ORDER BY delivery_id;
SELECT fleet.wait_for_job('reboot-stop');
SELECT * FROM pg_temp.summary('reboot-stop');
SELECT fleet.resume_job('reboot-stop');
SELECT fleet.run_job('reboot-stop');

-- a stopped job's unclaimed commands do not time out, however long it
-- stays stopped; resumed, they get a fresh deadline
SELECT pg_temp.reboot_job('reboot-pause');
SELECT pg_temp.wait_queued('reboot-pause', 10);
SELECT fleet.stop_job('reboot-pause') ->> 'status' AS status;
UPDATE fleet.command_windows SET deadline = now() - interval '1 minute', next_check = now() - interval '1 minute'
 WHERE job_id = 'reboot-pause';
SELECT fleet_internal.expire_commands(NULL) AS expired_while_stopped;
-- (looked at again a timeout later: a claim racing the stop must still time out)
SELECT next_check BETWEEN now() + interval '29 seconds' AND now() + interval '31 seconds' AS looked_at_in_a_timeout
  FROM fleet.command_windows WHERE job_id = 'reboot-pause';
SELECT fleet.resume_job('reboot-pause') ->> 'status' AS status;
SELECT pg_temp.wait_queued('reboot-pause', 10);
SELECT deadline > now() + interval '20 seconds' AS fresh_deadline FROM fleet.command_windows WHERE job_id = 'reboot-pause';
-- commands no gateway claims in time time out (the window's deadline is
-- moved, as time would)
UPDATE fleet.command_windows SET deadline = now() - interval '1 second', next_check = now() - interval '1 second'
 WHERE job_id = 'reboot-pause';
SELECT fleet.wait_for_job('reboot-pause');
SELECT * FROM pg_temp.summary('reboot-pause');
SELECT DISTINCT r.status, r.error, d.status AS delivery, d.gateway
  FROM fleet.job_results('reboot-pause') r JOIN fleet.command_deliveries d USING (device_id)
 WHERE d.job_id = 'reboot-pause';
SELECT count(*) AS windows_left FROM fleet.command_windows WHERE job_id = 'reboot-pause';

-- failed answers count toward the threshold while their window is open:
-- 3 failures over a threshold of 2 cancel the job; the unclaimed commands
-- are withdrawn and their devices stay pending; an answer still in flight
-- is taken, and nothing more is claimable
SELECT pg_temp.reboot_job('reboot-threshold', '{"cancellationThreshold": {"type": "number", "value": 2}}');
SELECT pg_temp.wait_queued('reboot-threshold', 10);
CREATE TEMP TABLE failing AS SELECT * FROM fleet.claim_commands('gateway-1', 4);
SELECT fleet.complete_commands(array_agg(delivery_id ORDER BY device_id) FILTER (WHERE device_id <= 'lab-03'),
                               array_fill(503, ARRAY[3]), NULL) AS failed_answers
  FROM failing;
SELECT fleet.wait_for_job('reboot-threshold');
SELECT * FROM pg_temp.summary('reboot-threshold');
SELECT count(*) AS claimable_after_cancel FROM fleet.claim_commands('gateway-1', 10);
SELECT fleet.complete_command(delivery_id, 200) AS in_flight_taken FROM failing WHERE device_id = 'lab-04';
SELECT status, count(*) FROM fleet.command_deliveries WHERE job_id = 'reboot-threshold' GROUP BY 1 ORDER BY 1;
SELECT error FROM fleet.job_devices WHERE job_id = 'reboot-threshold' AND device_id = 'lab-01';

-- claims serve the window due first, whichever job it is of: a small job
-- is not starved by a big one's refills
SELECT pg_temp.reboot_job('order-big'), pg_temp.reboot_job('order-small');
SELECT pg_temp.wait_queued('order-big', 10), pg_temp.wait_queued('order-small', 10);
-- (the new deadline made first: Citus sends no stable function over a
-- row's columns, timestamptz + interval, to the nodes in an UPDATE)
SELECT deadline + interval '1 minute' AS later FROM fleet.command_windows WHERE job_id = 'order-big' \gset
UPDATE fleet.command_windows SET deadline = :'later' WHERE job_id = 'order-big';
SELECT job_id, count(*) FROM fleet.claim_commands('gateway-1', 12) GROUP BY 1 ORDER BY 1;
SELECT fleet.stop_job(id) ->> 'status' FROM unnest(ARRAY['order-big', 'order-small']) id;

-- at most fleet.max_running_jobs (5) run, and of one organization below
-- root (with those below it) at most fleet.max_running_jobs_per_organization
-- (by default one less, 4); the others wait in order, and another
-- organization's job still gets a slot
SELECT pg_temp.reboot_job('limit-' || i) FROM generate_series(1, 7) i;
SELECT fleet.wait_for_job('limit-' || i, '{running}') FROM generate_series(1, 4) i;
SELECT fleet.create_organization('lab-2', 'Second lab') ->> 'id';
SELECT fleet.create_device('second-lab-01', template => 'dtmi:contoso:EnvSensor;1', organization => 'lab-2') ->> 'id';
SELECT fleet.create_device_group('lab-2', 'Second lab devices', 'dtmi:contoso:EnvSensor;1', organization => 'lab-2') ->> 'id';
SELECT pg_temp.reboot_job('limit-other', grp => 'lab-2');
SELECT fleet.wait_for_job('limit-other', '{running}');
SELECT id, status FROM fleet.jobs WHERE id LIKE 'limit-%' ORDER BY id;
SELECT fleet.stop_job('limit-1') ->> 'status' AS stopped;
SELECT fleet.wait_for_job('limit-5', '{running}');
SELECT id, status FROM fleet.jobs WHERE id LIKE 'limit-%' ORDER BY id;
SELECT id, fleet.stop_job(id) ->> 'status' FROM fleet.jobs
 WHERE id LIKE 'limit-%' AND status IN ('pending', 'running') ORDER BY id;

-- the device list: filter by id and status, and extra columns per role
UPDATE fleet.devices SET reported = ('{"firmware": "1.' || right(id, 1) || '"}')::jsonb WHERE id LIKE 'lab-%';
SELECT fleet.set_job_device_list_columns(ARRAY['$.reported.firmware', '$.displayName']);
SELECT device_id, status, columns FROM fleet.list_job_devices('reboot-real', device_filter => 'LAB-0');
SELECT device_id, status FROM fleet.list_job_devices('reboot-real', 'lab', 'completed');
SELECT role_name = current_user AS mine, position, path FROM fleet.job_device_list_columns ORDER BY position;
SELECT fleet.list_job_devices('reboot-real', status_filter => 'done');
SELECT fleet.set_job_device_list_columns(ARRAY['$.reported.']);
SELECT fleet.set_job_device_list_columns(NULL);
SELECT count(*) FROM fleet.job_device_list_columns;

-- cancellation thresholds, strictly exceeded: devices of another template fail
CREATE FUNCTION pg_temp.threshold_run(id text, failing int, extra jsonb) RETURNS TABLE (status text, total int, pending int, completed int, failed int)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fleet.devices d SET template_id = CASE WHEN right(d.id, 2)::int <= failing
                                                  THEN 'dtmi:com:example:Thermostat;1' ELSE 'dtmi:contoso:EnvSensor;1' END
     WHERE d.id LIKE 'lab-%';
    PERFORM fleet.create_job(jsonb_build_object('id', id, 'displayName', id, 'group', 'lab-any',
        'data', '[{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}]'::jsonb) || extra);
    RETURN QUERY SELECT * FROM pg_temp.summary(id);
END;
$$;
-- number, per job: 2 allowed; 2 failures finish (failed), 3 cancel
SELECT count(*) FROM pg_temp.threshold_run('number-at', 2, '{"cancellationThreshold": {"type": "number", "value": 2}}');
SELECT fleet.wait_for_job('number-at');
SELECT count(*) FROM pg_temp.threshold_run('number-over', 3, '{"cancellationThreshold": {"type": "number", "value": 2}}');
SELECT fleet.wait_for_job('number-over');
SELECT id, s.* FROM unnest(ARRAY['number-at', 'number-over']) id, pg_temp.summary(id) s;
-- percentage, per job: 20 % of 10 devices allows 2
SELECT count(*) FROM pg_temp.threshold_run('percent-at', 2, '{"cancellationThreshold": {"type": "percentage", "value": 20}}');
SELECT fleet.wait_for_job('percent-at');
SELECT count(*) FROM pg_temp.threshold_run('percent-over', 3, '{"cancellationThreshold": {"type": "percentage", "value": 20}}');
SELECT fleet.wait_for_job('percent-over');
SELECT id, s.* FROM unnest(ARRAY['percent-at', 'percent-over']) id, pg_temp.summary(id) s;
-- per batch, batches of 5: 1 allowed per batch (number) or 20 % of 5 (percentage);
-- the failing devices are all in batch 1; a cancelled job leaves later batches pending
SELECT count(*) FROM pg_temp.threshold_run('batch-number-at', 1, '{"batch": {"type": "number", "value": 5}, "cancellationThreshold": {"type": "number", "value": 1, "batch": true}}');
SELECT fleet.wait_for_job('batch-number-at');
SELECT count(*) FROM pg_temp.threshold_run('batch-number-over', 2, '{"batch": {"type": "number", "value": 5}, "cancellationThreshold": {"type": "number", "value": 1, "batch": true}}');
SELECT fleet.wait_for_job('batch-number-over');
SELECT count(*) FROM pg_temp.threshold_run('batch-percent-at', 1, '{"batch": {"type": "number", "value": 5}, "cancellationThreshold": {"type": "percentage", "value": 20, "batch": true}}');
SELECT fleet.wait_for_job('batch-percent-at');
SELECT count(*) FROM pg_temp.threshold_run('batch-percent-over', 2, '{"batch": {"type": "number", "value": 5}, "cancellationThreshold": {"type": "percentage", "value": 20, "batch": true}}');
SELECT fleet.wait_for_job('batch-percent-over');
SELECT id, s.* FROM unnest(ARRAY['batch-number-at', 'batch-number-over', 'batch-percent-at', 'batch-percent-over']) id,
       pg_temp.summary(id) s;
SELECT batch, status, completed, failed FROM fleet.job_batches WHERE job_id = 'batch-number-over' ORDER BY batch;
-- per job with batches: 3 failures over a threshold of 2 cancel after batch 1
SELECT count(*) FROM pg_temp.threshold_run('job-over-batched', 3, '{"batch": {"type": "number", "value": 5}, "cancellationThreshold": {"type": "number", "value": 2}}');
SELECT fleet.wait_for_job('job-over-batched');
SELECT * FROM pg_temp.summary('job-over-batched');

-- gateways name themselves (not as the engine's simulator) and claim at least one
SELECT fleet.claim_commands('', 1);
SELECT fleet.claim_commands('simulator', 1);
SELECT fleet.claim_commands('gw', 0);
SELECT fleet.claim_commands(repeat('g', 129), 1);
SELECT fleet.claim_commands(E'gw\nwith a newline', 1);
-- answers in bulk: the arrays go together
SELECT fleet.complete_commands(ARRAY[1, 2], ARRAY[200]);
SELECT fleet.complete_commands(ARRAY[1], ARRAY[200], ARRAY['{}'::jsonb, '{}'::jsonb]);
SELECT fleet.complete_commands(ARRAY[1, 2], ARRAY[200, NULL]);
SELECT fleet.complete_commands('{}', '{}') AS nothing_taken;
SELECT fleet.complete_commands(NULL, NULL);
SELECT fleet.complete_commands(ARRAY[1], NULL);
