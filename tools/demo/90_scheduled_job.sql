-- A scheduled job: every Monday at 09:00 Berlin time, ten times, starting
-- next Monday.  pg_cron fires it; the calendar (time zone, daylight saving,
-- the count) is pg_fleet's, so pg_cron's entry always names the next run.
SELECT to_char(date_trunc('week', now() AT TIME ZONE 'Europe/Berlin') + interval '1 week 9 hours',
               'YYYY-MM-DD"T"HH24:MI:SS') AS next_monday \gset
SELECT fleet.create_scheduled_job(format('{
  "id": "weekly-target-temperature",
  "displayName": "Weekly target temperature",
  "group": "thermostats",
  "batch": {"type": "percentage", "value": 25},
  "data": [{"type": "property", "target": "dtmi:com:example:Thermostat;1",
            "path": "targetTemperature", "value": 20}],
  "schedule": {"start": "%s", "timeZone": "Europe/Berlin", "recurrence": "weekly",
               "end": {"type": "occurrences", "occurrences": 10}}
}', :'next_monday')::jsonb) - 'data' AS scheduled_job;

-- its ten runs, at 09:00 on Berlin's clock: 08:00 GMT (the clock pg_cron
-- reads) in winter, 07:00 GMT once Berlin is on summer time
SELECT o AS gmt, o AT TIME ZONE 'Europe/Berlin' AS berlin
  FROM fleet.scheduled_jobs s, fleet.next_occurrences(s.schedule, now(), 10) o
 WHERE s.id = 'weekly-target-temperature';

-- its pg_cron entry, pointed at the first run; each run re-points it
SELECT jobname, schedule, command, database FROM cron.job;

-- what a run looks like, without waiting for Monday: fire the first
-- occurrence as pg_cron will (the second argument stands in for the clock)
SELECT fleet.fire_scheduled_job('weekly-target-temperature', s.next_run_at) AS instance_job
  FROM fleet.scheduled_jobs s WHERE s.id = 'weekly-target-temperature' \gset
SELECT fleet.wait_for_job(:'instance_job') AS status;
SELECT occurrence AT TIME ZONE 'Europe/Berlin' AS berlin, outcome, job_id, status
  FROM fleet.list_scheduled_job_runs('weekly-target-temperature');
SELECT jobname, schedule FROM cron.job;    -- now the second Monday

-- unscheduling leaves no pg_cron entry behind
SELECT fleet.delete_scheduled_job('weekly-target-temperature');
SELECT count(*) AS cron_entries FROM cron.job;
