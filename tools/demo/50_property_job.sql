-- A property job over every thermostat, in 4 batches, cancelled if more than
-- 5 % of the devices fail; its progress as the engine runs it.
SELECT fleet.create_job('{
  "id": "set-target-temperature",
  "displayName": "Set target temperature",
  "group": "thermostats",
  "batch": {"type": "percentage", "value": 25},
  "cancellationThreshold": {"type": "percentage", "value": 5, "batch": false},
  "data": [{"type": "property", "target": "dtmi:com:example:Thermostat;1",
            "path": "targetTemperature", "value": 21.5}]
}') ->> 'status' AS status;

-- watch it: one line per batch as it finishes
DO $$
DECLARE
    reported int := 0;
    b record;
    done boolean;
BEGIN
    LOOP
        FOR b IN SELECT * FROM fleet.job_batches
                  WHERE job_id = 'set-target-temperature' AND status = 'completed' AND batch > reported
                  ORDER BY batch LOOP
            RAISE NOTICE 'batch % of 4 done: % completed, % failed', b.batch, b.completed, b.failed;
            reported := b.batch;
        END LOOP;
        SELECT status IN ('completed', 'failed', 'cancelled') INTO done FROM fleet.jobs WHERE id = 'set-target-temperature';
        EXIT WHEN done;
        PERFORM pg_sleep(0.05);
    END LOOP;
END;
$$;
SELECT fleet.get_job('set-target-temperature') -> 'progress' AS progress,
       fleet.get_job('set-target-temperature') ->> 'status' AS status;
SELECT id, properties FROM fleet.devices ORDER BY id LIMIT 2;
