\set SHOW_CONTEXT never
-- Rollout controls (src/sql/job_rollouts.sql), driven by the engine's
-- clock: the engine is off and this test runs its turns itself
-- (fleet_internal.engine_step(at)), so a minute passes in a statement.
ALTER SYSTEM SET fleet.engine_enabled = off;
SELECT pg_reload_conf();
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN fleet_internal.engine_pid() IS NULL;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT fleet_internal.engine_pid() IS NULL AS engine_off;

SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
  "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true},
               {"@type": "Command", "name": "blink"}]}') ->> 'id';
INSERT INTO fleet.device_import SELECT 'lamp-' || lpad(i::text, 3, '0'), NULL FROM generate_series(1, 200) i;
UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1' WHERE id LIKE 'lamp-%';
SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1', '$.id starts with "lamp-"') ->> 'id';
-- ten lamps, four of them without a template (a property job fails them)
INSERT INTO fleet.device_import SELECT 'spot-' || lpad(i::text, 2, '0'), NULL FROM generate_series(1, 10) i;
UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1' WHERE id LIKE 'spot-%' AND id NOT IN ('spot-02', 'spot-03', 'spot-07', 'spot-08');
SELECT fleet.create_device_group('spots', 'Spots', filter => '$.id starts with "spot-"') ->> 'id';

CREATE FUNCTION pg_temp.level_job(id text, grp text, rollout jsonb, extra jsonb DEFAULT '{}') RETURNS text
LANGUAGE sql AS $$
    SELECT fleet.create_job(jsonb_build_object('id', id, 'displayName', 'Level ' || id, 'group', grp,
        'data', '[{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 3}]'::jsonb,
        'rollout', rollout) || extra) ->> 'status'
$$;
-- the engine's turns, four a second of its clock, from start for seconds
CREATE FUNCTION pg_temp.run_engine(start timestamptz, seconds int) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    FOR s IN 0..seconds * 4 - 1 LOOP
        PERFORM fleet_internal.engine_step(start + make_interval(secs => s / 4.0));
    END LOOP;
END;
$$;
-- a status detail without its times
CREATE FUNCTION pg_temp.detail(job text) RETURNS text
LANGUAGE sql AS $$
    SELECT regexp_replace(status_detail, '\d{4}-\d\d-\d\dT[0-9:.]+Z', '<time>') FROM fleet.jobs WHERE id = job
$$;

-- refusals: each names the value and what to write
SELECT pg_temp.level_job('bad-1', 'lamps', '"fast"');
SELECT pg_temp.level_job('bad-2', 'lamps', '{"maximumPerMinut": 10}');
SELECT pg_temp.level_job('bad-3', 'lamps', '{"maximumPerMinute": 0}');
SELECT pg_temp.level_job('bad-4', 'lamps', '{"maximumPerMinute": 2.5}');
SELECT pg_temp.level_job('bad-5', 'lamps', '{"exponentialRate": {"baseRatePerMinute": 10, "incrementFactor": 9,
  "rateIncreaseCriteria": {"numberOfNotifiedDevices": 5}}}');
SELECT pg_temp.level_job('bad-6', 'lamps', '{"exponentialRate": {"baseRatePerMinute": 10, "incrementFactor": 2,
  "rateIncreaseCriteria": {"numberOfNotifiedDevices": 5, "numberOfSucceededDevices": 5}}}');
SELECT pg_temp.level_job('bad-7', 'lamps', '{"exponentialRate": {"baseRatePerMinute": 10, "incrementFactor": 2}}');
SELECT pg_temp.level_job('bad-8', 'lamps', '{"onThreshold": "pause"}');
SELECT pg_temp.level_job('bad-9', 'lamps', '{"onThreshold": "stop"}', '{"cancellationThreshold": {"type": "number", "value": 1}}');
SELECT pg_temp.level_job('bad-10', 'lamps', '{"commandTimeout": "PT30S"}');
SELECT pg_temp.level_job('bad-11', 'lamps', '{"maximumDuration": "soon"}');
SELECT pg_temp.level_job('bad-12', 'lamps', '{"maximumDuration": "PT10S"}');
SELECT pg_temp.level_job('bad-13', 'lamps', '{"endTime": "2001-01-01T00:00:00Z"}');
SELECT pg_temp.level_job('bad-14', 'lamps', '{"endTime": "the day after"}');
SELECT pg_temp.level_job('bad-15', 'lamps', '{"endBehavior": "STOP_ROLLOUT"}');
SELECT pg_temp.level_job('bad-16', 'lamps', '{"maximumDuration": 3600, "endBehavior": "ABORT"}');
SELECT count(*) AS jobs_made FROM fleet.jobs WHERE id LIKE 'bad-%';

-- rate: 40 devices a minute over 200 lamps (five minutes); 40 is dealt
-- in twentieths, two every three seconds
CREATE TEMP TABLE clock AS SELECT date_trunc('second', now()) AS t0;
SELECT pg_temp.level_job('rated', 'lamps', '{"maximumPerMinute": 40}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock), 330);
SELECT status, device_count FROM fleet.jobs WHERE id = 'rated';
SELECT fleet.get_job('rated') -> 'rollout' AS rollout;
-- any minute holds at most 40, and, while the job has work, at least 38 (95 %)
WITH windows AS (
    SELECT w.at AS since,
           (SELECT sum(d.devices) FROM fleet_internal.job_dispatches d
             WHERE d.job_id = 'rated' AND d.at >= w.at AND d.at < w.at + interval '1 minute') AS devices,
           w.at + interval '1 minute' <= (SELECT max(d.at) FROM fleet_internal.job_dispatches d WHERE d.job_id = 'rated') AS busy
      FROM fleet_internal.job_dispatches w WHERE w.job_id = 'rated'
)
SELECT max(devices) AS most_in_a_minute, min(devices) FILTER (WHERE busy) AS fewest_in_a_busy_minute,
       (SELECT sum(devices) FROM fleet_internal.job_dispatches WHERE job_id = 'rated') AS dispatched
  FROM windows;
-- the devices' own times agree: minute by minute from the start
SELECT floor(extract(epoch FROM jd.finished_at - c.t0) / 60) AS minute, count(*)
  FROM fleet.job_devices jd, clock c WHERE jd.job_id = 'rated' GROUP BY 1 ORDER BY 1;

-- the wait is on the job while it waits: 10 a minute (below 20, one a
-- turn) is spent in the minute's first seconds
UPDATE clock SET t0 = t0 + interval '10 minutes';
SELECT pg_temp.level_job('waiting', 'lamps', '{"maximumPerMinute": 10}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock), 30);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'waiting';
SELECT fleet.get_job('waiting') ->> 'statusDetail' AS status_detail;
SELECT fleet.stop_job('waiting') ->> 'status' AS status;

-- a ramp: 10 a minute, doubled after each 20 devices dispatched, at most 40
UPDATE clock SET t0 = t0 + interval '10 minutes';
SELECT pg_temp.level_job('ramp', 'lamps', '{"maximumPerMinute": 40, "exponentialRate": {"baseRatePerMinute": 10,
  "incrementFactor": 2, "rateIncreaseCriteria": {"numberOfNotifiedDevices": 20}}}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock), 300);
SELECT floor(extract(epoch FROM d.at - c.t0) / 60) AS minute, sum(d.devices) AS dispatched
  FROM fleet_internal.job_dispatches d, clock c WHERE d.job_id = 'ramp' GROUP BY 1 ORDER BY 1;

-- pause instead of cancel: the threshold stops the job for inspection,
-- with the reason; the failures it paused for are answered (threshold_base),
-- so once resumed the threshold counts only those that come after
UPDATE clock SET t0 = t0 + interval '10 minutes';
SELECT pg_temp.level_job('careful', 'spots', '{"onThreshold": "pause"}',
  '{"batch": {"type": "number", "value": 5}, "cancellationThreshold": {"type": "number", "value": 1}}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock), 5);
SELECT status, status_detail, threshold_base FROM fleet.jobs WHERE id = 'careful';
SELECT batch, status, completed, failed FROM fleet.job_batches WHERE job_id = 'careful' ORDER BY batch;
SELECT fleet.resume_job('careful') ->> 'status' AS status;
SELECT status_detail, threshold_base FROM fleet.jobs WHERE id = 'careful';
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '1 minute', 5);
-- batch 2 fails two more (spot-07, spot-08): past the threshold again
SELECT status, status_detail FROM fleet.jobs WHERE id = 'careful';
SELECT fleet.resume_job('careful') ->> 'status' AS status;
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '2 minutes', 5);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'careful';
SELECT status, count(*) FROM fleet.job_devices WHERE job_id = 'careful' GROUP BY 1 ORDER BY 1;
-- without "onThreshold" the same job is cancelled, as IoT Central does
SELECT pg_temp.level_job('careless', 'spots', NULL,
  '{"batch": {"type": "number", "value": 5}, "cancellationThreshold": {"type": "number", "value": 1}}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '3 minutes', 5);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'careless';

-- abort criteria by failure type, with a minimum of finished devices (AWS
-- IoT Jobs' abortConfig), cancelling or pausing
SELECT pg_temp.level_job('bad-29', 'spots', '{"abortCriteria": {"failureType": "ALL"}}');
SELECT pg_temp.level_job('bad-29b', 'spots', '{"abortCriteria": ["ALL"]}');
SELECT pg_temp.level_job('bad-30', 'spots', '{"abortCriteria": [{"failureType": "CRASHED", "thresholdPercentage": 10, "minNumberOfExecutedDevices": 5}]}');
SELECT pg_temp.level_job('bad-30b', 'spots', '{"abortCriteria": [{"failureType": "REJECTED", "thresholdPercentage": 10, "minNumberOfExecutedDevices": 5}]}');
SELECT pg_temp.level_job('bad-31', 'spots', '{"abortCriteria": [{"failureType": "ALL", "thresholdPercentage": 120, "minNumberOfExecutedDevices": 5}]}');
SELECT pg_temp.level_job('bad-32', 'spots', '{"abortCriteria": [{"failureType": "ALL", "thresholdPercentage": 10}]}');
SELECT pg_temp.level_job('bad-33', 'spots', '{"abortCriteria": [{"failureType": "ALL", "thresholdPercentage": 10, "minNumberOfExecutedDevices": 5, "action": "STOP"}]}');
SELECT pg_temp.level_job('bad-34', 'spots', '{"abortCriteria": [{"failureType": "TIMED_OUT", "thresholdPercentage": 10, "minNumberOfExecutedDevices": 5}]}');
-- 2 of the first 5 spots fail (40 %): past 30 % once 5 finished, it pauses;
-- resumed, it counts what finishes after, and pauses again at the next 5
SELECT pg_temp.level_job('criteria', 'spots', '{"abortCriteria": [{"failureType": "FAILED", "thresholdPercentage": 30,
  "minNumberOfExecutedDevices": 5, "action": "PAUSE"}]}', '{"batch": {"type": "number", "value": 5}}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '8 minutes', 5);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'criteria';
SELECT fleet.resume_job('criteria') ->> 'status' AS status;
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '9 minutes', 5);
SELECT status, status_detail, abort_base FROM fleet.jobs WHERE id = 'criteria';
-- a minimum not reached: the job runs through
SELECT pg_temp.level_job('criteria-2', 'spots', '{"abortCriteria": [{"failureType": "ALL", "thresholdPercentage": 30,
  "minNumberOfExecutedDevices": 20}]}', '{"batch": {"type": "number", "value": 5}}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '10 minutes', 5);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'criteria-2';
-- commands nobody answers: every one times out, and the job is cancelled
SELECT fleet.create_job('{"id": "unheard", "displayName": "Unheard", "group": "lamps",
  "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"commandTimeout": "PT30S", "abortCriteria": [{"failureType": "TIMED_OUT", "thresholdPercentage": 50,
              "minNumberOfExecutedDevices": 10}]}}') ->> 'status';
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '11 minutes', 2);
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '11 minutes 40 seconds', 2);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'unheard';
SELECT batch, status, completed, failed, timed_out FROM fleet.job_batches WHERE job_id = 'unheard';

-- continuous jobs: devices that join the group later get the job, once
-- each, up to maximumDevices
SELECT pg_temp.level_job('bad-35', 'lamps', '{"continuous": "yes"}');
SELECT pg_temp.level_job('bad-36', 'lamps', '{"maximumDevices": 10}');
SELECT fleet.create_device_group('bulbs', 'Bulbs', 'dtmi:test:Lamp;1', '$.id starts with "bulb-"') ->> 'id';
INSERT INTO fleet.device_import SELECT 'bulb-' || lpad(i::text, 2, '0'), NULL FROM generate_series(1, 3) i;
UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1' WHERE id LIKE 'bulb-%';
SELECT pg_temp.level_job('always', 'bulbs', '{"continuous": true, "maximumDevices": 8}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '12 minutes', 5);
SELECT status, status_detail, device_count FROM fleet.jobs WHERE id = 'always';
-- two join (one imported with the template, one given it), and one of another template does not
INSERT INTO fleet.device_import SELECT 'bulb-' || lpad(i::text, 2, '0'), NULL FROM generate_series(4, 6) i;
UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1' WHERE id IN ('bulb-04', 'bulb-05');
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '13 minutes', 20);
SELECT status, status_detail, device_count FROM fleet.jobs WHERE id = 'always';
SELECT batch, size, first_device, last_device, status, completed FROM fleet.job_batches WHERE job_id = 'always' ORDER BY batch;
-- a device that changes again is not taken twice; past the cap the job is done
UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1' WHERE id = 'bulb-06';
INSERT INTO fleet.device_import SELECT 'bulb-' || lpad(i::text, 2, '0'), NULL FROM generate_series(7, 9) i;
UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1' WHERE id LIKE 'bulb-%';
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '14 minutes', 20);
SELECT status, status_detail, device_count FROM fleet.jobs WHERE id = 'always';
SELECT device_id, batch, status FROM fleet.job_devices WHERE job_id = 'always' ORDER BY device_id;

-- retries: a command job's failed devices are offered again after a
-- backoff; each attempt is kept and the results log shows it, and the
-- threshold counts final outcomes only
SELECT pg_temp.level_job('bad-37', 'bulbs', '{"retries": [{"failureType": "ALL", "numberOfRetries": 2}]}');
SELECT fleet.create_job('{"displayName": "Bad", "group": "bulbs", "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"retries": {"failureType": "ALL"}}}');
SELECT fleet.create_job('{"displayName": "Bad", "group": "bulbs", "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"retries": [{"failureType": "ALL", "numberOfRetries": 11}]}}');
SELECT fleet.create_job('{"displayName": "Bad", "group": "bulbs", "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"retries": [{"failureType": "FAILED", "numberOfRetries": 1}, {"failureType": "FAILED", "numberOfRetries": 2}]}}');
SELECT fleet.create_job('{"displayName": "Bad", "group": "bulbs", "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"retries": ["FAILED"]}}');
SELECT fleet.create_job('{"displayName": "Bad", "group": "bulbs", "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"retries": [{"failureType": "TIMEOUT", "numberOfRetries": 1}]}}');
SELECT fleet.create_job('{"displayName": "Bad", "group": "bulbs", "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"retries": [{"failureType": "FAILED", "numberOfRetries": 1, "backoff": "PT10S"}]}}');
SELECT fleet.create_job('{"displayName": "Bad", "group": "bulbs", "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"retries": [{"failureType": "FAILED", "numberOfRetries": 1, "backoff": {"type": "linear"}}]}}');
SELECT fleet.create_job('{"displayName": "Bad", "group": "bulbs", "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"retries": [{"failureType": "FAILED", "numberOfRetries": 1, "backoff": {"jitter": "yes"}}]}}');
SELECT fleet.create_job('{"displayName": "Bad", "group": "bulbs", "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"retries": [{"failureType": "FAILED", "numberOfRetries": 1, "backoff": {"base": "PT-5S"}}]}}');
-- exponential from 10 s, at most a minute; jitter keeps a wait in its second half
SELECT a AS attempt, fleet_internal.retry_backoff('{"backoff": {"type": "exponential", "base": "00:00:10", "maximum": "00:01:00", "jitter": false}}', a)
  FROM generate_series(1, 5) a;
SELECT bool_and(w BETWEEN interval '5 seconds' AND interval '10 seconds') AS jitter_in_its_second_half
  FROM (SELECT fleet_internal.retry_backoff('{"backoff": {"type": "fixed", "base": "00:00:10", "maximum": "01:00:00", "jitter": true}}', 1) w
          FROM generate_series(1, 50)) j;
SELECT fleet.create_job('{"id": "insist", "displayName": "Insist", "group": "bulbs",
  "cancellationThreshold": {"type": "number", "value": 1},
  "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"retries": [{"failureType": "FAILED", "numberOfRetries": 2, "backoff": {"base": 0}}]}}') ->> 'status';
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '15 minutes', 1);
-- first attempt: bulb-01 and bulb-02 answer 500
SELECT count(*) AS answered FROM fleet.claim_commands('gateway-r', 100) c,
       LATERAL fleet.complete_command(c.delivery_id, CASE WHEN c.device_id IN ('bulb-01', 'bulb-02') THEN 500 ELSE 200 END) r;
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '15 minutes 10 seconds', 1);
SELECT status FROM fleet.jobs WHERE id = 'insist';
-- second: offered again, bulb-01 succeeds and bulb-02 fails again
SELECT count(*) AS answered FROM fleet.claim_commands('gateway-r', 100) c,
       LATERAL fleet.complete_command(c.delivery_id, CASE WHEN c.device_id = 'bulb-02' THEN 500 ELSE 200 END) r;
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '15 minutes 20 seconds', 1);
-- third, the last it has: bulb-02 fails for good
SELECT count(*) AS answered FROM fleet.claim_commands('gateway-r', 100) c,
       LATERAL fleet.complete_command(c.delivery_id, 500) r;
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '15 minutes 30 seconds', 3);
SELECT count(*) AS claimable FROM fleet.claim_commands('gateway-r', 100);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'insist';
SELECT batch, status, completed, failed FROM fleet.job_batches WHERE job_id = 'insist';
SELECT device_id, attempt, status, error, batch FROM fleet.job_results('insist') WHERE device_id IN ('bulb-01', 'bulb-02', 'bulb-03');
SELECT device_id, attempt, error, response_status, gateway FROM fleet.job_device_attempts WHERE job_id = 'insist' ORDER BY 1, 2;

-- what devices report: 202 (under way, with "progress" and
-- "statusDetails"), 4xx (rejected: refused, apart from failed)
SELECT pg_temp.level_job('bad-38', 'bulbs', '{"inProgressTimeout": "PT5M"}');
SELECT fleet.create_job('{"id": "reported", "displayName": "Reported", "group": "bulbs",
  "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"inProgressTimeout": "PT5M", "abortCriteria": [{"failureType": "REJECTED", "thresholdPercentage": 10,
              "minNumberOfExecutedDevices": 5}]}}') ->> 'status';
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '16 minutes', 1);
SELECT count(*) AS answered FROM fleet.claim_commands('gateway-p', 100) c,
       LATERAL fleet.complete_command(c.delivery_id,
           CASE c.device_id WHEN 'bulb-01' THEN 202 WHEN 'bulb-02' THEN 409 ELSE 200 END,
           CASE c.device_id WHEN 'bulb-01' THEN '{"progress": 40, "statusDetails": {"step": "downloading"}}'
                            WHEN 'bulb-02' THEN '{"reason": "busy"}' END::jsonb) r;
SELECT device_id, status FROM fleet.command_deliveries WHERE job_id = 'reported' AND device_id <= 'bulb-03' ORDER BY 1;
SELECT e FROM jsonb_array_elements(fleet.get_job_devices('reported') -> 'value') e WHERE e ->> 'id' <= 'bulb-03';
-- under way, it may report again, then finish (its delivery read apart: on
-- Citus a statement over one device's rows runs on its shard, where
-- fleet.complete_command() cannot read the deliveries again)
SELECT delivery_id AS bulb_01 FROM fleet.command_deliveries WHERE job_id = 'reported' AND device_id = 'bulb-01' \gset
SELECT fleet.complete_command(:bulb_01, 202, '{"progress": 80}') AS taken;
SELECT device_id, progress, status_details FROM fleet.job_results('reported') WHERE device_id = 'bulb-01';
SELECT fleet.complete_command(:bulb_01, 200, '{"progress": 100}') AS taken;
SELECT fleet.complete_command(:bulb_01, 202, '{"progress": 10}') AS taken_after_its_end;
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '16 minutes 10 seconds', 2);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'reported';
SELECT completed, failed, rejected, timed_out FROM fleet.job_batches WHERE job_id = 'reported';
-- one under way past its inProgressTimeout fails "timed out"
SELECT fleet.create_job('{"id": "stalled", "displayName": "Stalled", "group": "bulbs",
  "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"inProgressTimeout": "PT1S"}}') ->> 'status';
SELECT pg_temp.run_engine(clock_timestamp(), 1);
SELECT count(*) AS answered FROM fleet.claim_commands('gateway-p', 100) c,
       LATERAL fleet.complete_command(c.delivery_id, CASE WHEN c.device_id = 'bulb-05' THEN 202 ELSE 200 END) r;
-- (the engine's clock two seconds on)
SELECT pg_temp.run_engine(clock_timestamp() + interval '2 seconds', 1);
SELECT device_id, status, error FROM fleet.job_devices WHERE job_id = 'stalled' AND status <> 'completed';

-- staged promotion: by hand, or when a batch reached a success percentage
SELECT pg_temp.level_job('bad-17', 'spots', '{"promotion": {"mode": "manual"}}');
SELECT pg_temp.level_job('bad-18', 'spots', '{"promotion": "manual"}', '{"batch": {"type": "number", "value": 5}}');
SELECT pg_temp.level_job('bad-19', 'spots', '{"promotion": {"mode": "by hand"}}', '{"batch": {"type": "number", "value": 5}}');
SELECT pg_temp.level_job('bad-20', 'spots', '{"promotion": {}}', '{"batch": {"type": "number", "value": 5}}');
SELECT pg_temp.level_job('bad-21', 'spots', '{"promotion": {"successPercentage": 101}}', '{"batch": {"type": "number", "value": 5}}');
SELECT pg_temp.level_job('staged', 'spots', '{"promotion": {"mode": "manual"}}', '{"batch": {"type": "number", "value": 5}}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '4 minutes', 5);
SELECT status, status_detail, current_batch FROM fleet.jobs WHERE id = 'staged';
SELECT batch, status, completed, failed FROM fleet.job_batches WHERE job_id = 'staged' ORDER BY batch;
SELECT fleet.advance_job('staged') ->> 'status' AS status;
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '5 minutes', 5);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'staged';
SELECT batch, status, completed, failed FROM fleet.job_batches WHERE job_id = 'staged' ORDER BY batch;
-- only a job waiting at a batch boundary advances
SELECT fleet.advance_job('staged');
SELECT fleet.advance_job('careless');
SELECT fleet.advance_job('waiting');
-- a bar: batch 1 of the spots succeeds on 3 of 5 (60 %), below 80 %
SELECT pg_temp.level_job('gated', 'spots', '{"promotion": {"successPercentage": 80}}', '{"batch": {"type": "number", "value": 5}}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '6 minutes', 5);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'gated';
-- and 200 lamps in batches of 50, every batch above 95 %, run through
SELECT pg_temp.level_job('gated-lamps', 'lamps', '{"promotion": {"successPercentage": 95}}', '{"batch": {"type": "number", "value": 50}}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '7 minutes', 5);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'gated-lamps';

-- maintenance windows: Saturdays and Sundays 02:00-04:00 in Berlin, DST
-- included; outside them the job waits and says until when.  Sunday
-- 2030-03-31 is the spring change there (02:00 is 03:00), Saturday the
-- 30th the day before.
SELECT pg_temp.level_job('bad-22', 'lamps', '{"maintenanceWindows": []}');
SELECT pg_temp.level_job('bad-23', 'lamps', '{"maintenanceWindows": [{"days": ["SAT", "SUNDAY"], "start": "02:00", "duration": "PT2H"}]}');
SELECT pg_temp.level_job('bad-24', 'lamps', '{"maintenanceWindows": [{"days": ["SAT"], "start": "2am", "duration": "PT2H"}]}');
SELECT pg_temp.level_job('bad-25', 'lamps', '{"maintenanceWindows": [{"days": ["SAT"], "start": "02:00", "duration": "P8D"}]}');
SELECT pg_temp.level_job('bad-26', 'lamps', '{"maintenanceWindows": [{"days": ["SAT"], "start": "02:00", "duration": "PT2H"}], "timeZone": "Mars/Olympus"}');
SELECT pg_temp.level_job('bad-27', 'lamps', '{"timeZone": "Europe/Berlin"}');
SELECT pg_temp.level_job('bad-28', 'lamps', '{"maintenanceWindows": [{"days": ["SAT"], "start": "02:00", "duration": "PT2H", "every": 2}]}');
SELECT fleet_internal.rest_timestamp(t) AS at, w.open, fleet_internal.rest_timestamp(w.next_open) AS next_open
  FROM unnest(ARRAY['2030-03-29 12:00+00', '2030-03-30 00:30+00', '2030-03-30 01:30+00', '2030-03-31 00:00+00',
                    '2030-03-31 00:30+00', '2030-03-31 01:59+00', '2030-03-31 02:00+00']::timestamptz[]) t,
       fleet_internal.maintenance_window_state('{"maintenanceWindows": [{"days": [6, 7], "start": "02:00", "duration": "02:00:00"}],
                                                 "timeZone": "Europe/Berlin"}', t) w;
SELECT pg_temp.level_job('weekend', 'lamps', '{"maintenanceWindows": [{"days": ["SAT", "SUN"], "start": "02:00", "duration": "PT2H"}],
  "timeZone": "Europe/Berlin", "maximumPerMinute": 1}');
SELECT fleet.get_job('weekend') -> 'rollout' AS rollout;
-- Friday noon: it waits for Saturday 02:00 in Berlin (01:00 UTC)
SELECT pg_temp.run_engine('2030-03-29 12:00+00', 2);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'weekend';
SELECT count(*) AS dispatched FROM fleet.job_devices WHERE job_id = 'weekend' AND status <> 'pending';
-- inside the window: one a minute, as its rate says; past its end, nothing,
-- and it waits for Sunday, whose 02:00 the clock skips: it opens at 03:00
-- summer time (01:00 UTC), as a schedule would
SELECT pg_temp.run_engine('2030-03-30 02:58:30+00', 2);
SELECT pg_temp.run_engine('2030-03-30 02:59:50+00', 20);
SELECT pg_temp.run_engine('2030-03-30 03:01:30+00', 2);
SELECT status, status_detail FROM fleet.jobs WHERE id = 'weekend';
SELECT fleet_internal.rest_timestamp(finished_at) AS finished_at
  FROM fleet.job_devices WHERE job_id = 'weekend' AND status <> 'pending' ORDER BY 1;
SELECT fleet.stop_job('weekend') ->> 'status' AS status;

-- a canary: named devices (those of the group) first, then the batches
SELECT pg_temp.level_job('bad-39', 'lamps', '{"canary": ["lamp-001"]}');
SELECT pg_temp.level_job('bad-40', 'lamps', '{"canary": {"devices": []}}');
SELECT pg_temp.level_job('bad-41', 'lamps', '{"canary": {"devices": ["lamp-001"], "group": "spots"}}');
SELECT pg_temp.level_job('bad-42', 'lamps', '{"canary": {"group": "no-such-group"}}');
SELECT pg_temp.level_job('canaried', 'lamps', '{"canary": {"devices": ["lamp-150", "lamp-007", "not-in-the-group"]},
  "promotion": {"mode": "manual"}}', '{"batch": {"type": "percentage", "value": 50}}');
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '17 minutes', 5);
SELECT status, status_detail, device_count FROM fleet.jobs WHERE id = 'canaried';
SELECT batch, size, first_device, last_device, status, completed FROM fleet.job_batches WHERE job_id = 'canaried' ORDER BY batch;
SELECT batch, count(*), bool_or(device_id IN ('lamp-007', 'lamp-150')) AS holds_a_canary
  FROM fleet.job_devices WHERE job_id = 'canaried' GROUP BY 1 ORDER BY 1;
-- a command job's canary group: the gateways see the canaries alone first
SELECT fleet.create_device_group('canary-bulbs', 'Canary bulbs', 'dtmi:test:Lamp;1', '$.id == "bulb-04" || $.id == "bulb-08"') ->> 'id';
SELECT fleet.create_job('{"id": "canary-blink", "displayName": "Canary blink", "group": "bulbs",
  "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"canary": {"group": "canary-bulbs"}}}') ->> 'status';
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '18 minutes', 2);
SELECT device_id FROM fleet.claim_commands('gateway-c', 100) ORDER BY 1;
SELECT batch, size, first_device, last_device FROM fleet.job_batches WHERE job_id = 'canary-blink' ORDER BY batch;
SELECT fleet.stop_job('canary-blink') ->> 'status' AS status;

-- a command job's own timeout, and its end: FORCE_CANCEL fails the
-- commands in flight, as the gateway holds them
UPDATE clock SET t0 = date_trunc('second', now());
SELECT fleet.create_job('{"id": "blink", "displayName": "Blink", "group": "lamps",
  "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"commandTimeout": "PT10M", "maximumDuration": "PT1M", "endBehavior": "FORCE_CANCEL"}}') ->> 'status';
SELECT pg_temp.run_engine((SELECT t0 FROM clock), 2);
SELECT DISTINCT deadline - opened_at AS window_timeout FROM fleet.command_windows WHERE job_id = 'blink';
SELECT count(*) AS claimed, min(deadline - clock_timestamp()) > interval '9 minutes' AS claim_timeout_is_the_jobs
  FROM fleet.claim_commands('gateway-1', 5);
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '61 seconds', 1);
SELECT status, pg_temp.detail('blink') FROM fleet.jobs WHERE id = 'blink';
SELECT status, error, count(*) FROM fleet.job_devices WHERE job_id = 'blink' GROUP BY 1, 2 ORDER BY 1, 2;

-- STOP_ROLLOUT (the default) stops it, resumable while its end is to come
SELECT fleet.create_job('{"id": "blink-2", "displayName": "Blink", "group": "lamps",
  "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}],
  "rollout": {"maximumDuration": "PT1M"}}') ->> 'status';
SELECT pg_temp.run_engine((SELECT t0 FROM clock), 2);
SELECT pg_temp.run_engine((SELECT t0 FROM clock) + interval '61 seconds', 1);
SELECT status, pg_temp.detail('blink-2') FROM fleet.jobs WHERE id = 'blink-2';
-- (its end, a minute after it started, is to come on the real clock)
SELECT fleet.resume_job('blink-2') ->> 'status' AS status;
SELECT fleet.stop_job('blink-2') ->> 'status' AS status;

-- a job with an end time shows it; a job read back may be sent again
SELECT fleet.save_job('{"id": "later", "displayName": "Later", "group": "lamps",
  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 1}],
  "rollout": {"endTime": "2099-01-01T00:00:00Z", "maximumPerMinute": 100}}') -> 'rollout';
SELECT fleet.copy_job('later') -> 'rollout' AS copied;

-- the engine back on
ALTER SYSTEM RESET fleet.engine_enabled;
SELECT pg_reload_conf();
