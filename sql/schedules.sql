\set SHOW_CONTEXT never
-- Scheduled jobs: the calendar (fleet.next_occurrences), the API, and the
-- pg_cron entry each schedule owns.  pg_cron is in this database
-- (cron.database_name); fires are called directly with a mocked "now".
SET timezone = 'UTC';

-- Daily at 09:00 in Berlin across the spring change (Sunday 2027-03-28,
-- 02:00 CET -> 03:00 CEST): 08:00 UTC before, 07:00 UTC after, 09:00 local always
SELECT o AS utc, o AT TIME ZONE 'Europe/Berlin' AS berlin
  FROM fleet.next_occurrences('{"start": "2027-03-26T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "daily"}',
                              '2027-03-01', 4) o;
-- ... and the autumn change (Sunday 2027-10-31, 03:00 CEST -> 02:00 CET)
SELECT o AS utc, o AT TIME ZONE 'Europe/Berlin' AS berlin
  FROM fleet.next_occurrences('{"start": "2027-10-29T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "daily"}',
                              '2027-10-01', 4) o;
-- weekly on Mondays at 09:00 Berlin, winter into summer
SELECT o AS utc, o AT TIME ZONE 'Europe/Berlin' AS berlin, to_char(o AT TIME ZONE 'Europe/Berlin', 'Dy') AS day
  FROM fleet.next_occurrences('{"start": "2027-03-15T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly"}',
                              '2027-03-01', 3) o;
-- New York: spring forward on 2027-03-14, fall back on 2027-11-07
SELECT o AS utc, o AT TIME ZONE 'America/New_York' AS new_york
  FROM fleet.next_occurrences('{"start": "2027-03-13T18:30:00", "timeZone": "America/New_York", "recurrence": "daily"}',
                              '2027-03-01', 3) o;
SELECT o AS utc, o AT TIME ZONE 'America/New_York' AS new_york
  FROM fleet.next_occurrences('{"start": "2027-10-31T18:30:00", "timeZone": "America/New_York", "recurrence": "weekly"}',
                              '2027-10-01', 2) o;
-- the other combinations: weekly across Berlin's autumn change, daily
-- across New York's autumn change, weekly across its spring change
SELECT o AS utc, o AT TIME ZONE 'Europe/Berlin' AS berlin
  FROM fleet.next_occurrences('{"start": "2027-10-25T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly"}',
                              '2027-10-01', 2) o;
SELECT o AS utc, o AT TIME ZONE 'America/New_York' AS new_york
  FROM fleet.next_occurrences('{"start": "2027-11-06T07:15:00", "timeZone": "America/New_York", "recurrence": "daily"}',
                              '2027-11-01', 3) o;
SELECT o AS utc, o AT TIME ZONE 'America/New_York' AS new_york
  FROM fleet.next_occurrences('{"start": "2027-03-08T07:15:00", "timeZone": "America/New_York", "recurrence": "weekly"}',
                              '2027-03-01', 2) o;
-- Sydney, southern hemisphere: daylight saving ends on 2027-04-04 and starts on 2027-10-03
SELECT o AS utc, o AT TIME ZONE 'Australia/Sydney' AS sydney
  FROM fleet.next_occurrences('{"start": "2027-04-03T07:00:00", "timeZone": "Australia/Sydney", "recurrence": "daily"}',
                              '2027-04-01', 2) o;
SELECT o AS utc, o AT TIME ZONE 'Australia/Sydney' AS sydney
  FROM fleet.next_occurrences('{"start": "2027-09-26T07:00:00", "timeZone": "Australia/Sydney", "recurrence": "weekly"}',
                              '2027-09-01', 2) o;
-- a zone without daylight saving: the same UTC time all year
SELECT DISTINCT (o AT TIME ZONE 'UTC')::time AS utc_time
  FROM fleet.next_occurrences('{"start": "2027-01-04T10:00:00", "timeZone": "Asia/Kolkata", "recurrence": "weekly"}',
                              '2027-01-01', 52) o;
-- a weekly run whose UTC time falls on the previous day: Mondays 08:00 in
-- Tokyo are Sundays 23:00 UTC, which is what the pg_cron entry says
SELECT o AS utc, to_char(o AT TIME ZONE 'UTC', 'Dy') AS utc_day, to_char(o AT TIME ZONE 'Asia/Tokyo', 'Dy HH24:MI') AS tokyo
  FROM fleet.next_occurrences('{"start": "2027-03-01T08:00:00", "timeZone": "Asia/Tokyo", "recurrence": "weekly"}',
                              '2027-01-01', 2) o;
-- local times the clock skips run an hour later; repeated ones run at the second
SELECT o AS utc, o AT TIME ZONE 'Europe/Berlin' AS berlin
  FROM fleet.next_occurrences('{"start": "2027-03-27T02:30:00", "timeZone": "Europe/Berlin", "recurrence": "daily"}',
                              '2027-03-01', 3) o;
SELECT o AS utc, o AT TIME ZONE 'Europe/Berlin' AS berlin
  FROM fleet.next_occurrences('{"start": "2027-10-30T02:30:00", "timeZone": "Europe/Berlin", "recurrence": "daily"}',
                              '2027-10-01', 2) o;
-- a start with an offset is the same instant on the zone's wall clock
SELECT fleet.next_occurrences('{"start": "2027-03-01T08:00:00Z", "timeZone": "Europe/Berlin"}', '2027-01-01', 5);

-- end conditions: a number of occurrences, a date (that day included, in
-- the schedule's zone), one time, and counting from a later "after"
SELECT count(*), min(o), max(o)
  FROM fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly",
                                "end": {"type": "occurrences", "occurrences": 10}}', '2027-01-01', 100) o;
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly",
                                "end": {"type": "occurrences", "occurrences": 10}}', '2027-04-27', 100);
SELECT o AS utc, o AT TIME ZONE 'America/Los_Angeles' AS los_angeles
  FROM fleet.next_occurrences('{"start": "2027-06-01T23:30:00", "timeZone": "America/Los_Angeles", "recurrence": "daily",
                                "end": {"type": "date", "date": "2027-06-03"}}', '2027-01-01', 100) o;
SELECT fleet.next_occurrences('{"start": "2027-06-01T12:00:00"}', '2027-01-01', 100);
SELECT count(*) FROM fleet.next_occurrences('{"start": "2027-06-01T12:00:00"}', '2027-06-01 12:00+00', 100);
SELECT count(*) FROM fleet.next_occurrences('{"start": "2027-06-01T12:00:00", "recurrence": "daily"}', '2027-06-01', 0);

-- each refusal names the value and says what to do
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "timeZone": "Europe/Berlinn"}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "timeZone": "UTC+3"}', '2027-01-01', 1);
-- names that follow the server's own OS files, not a place of the world
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "timeZone": "localtime"}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "timeZone": "posixrules"}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "timeZone": 1}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "recurrence": "monthly"}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "recurrence": 7}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "recurrence": "daily",
                                "end": {"type": "occurrences", "occurrences": 0}}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "recurrence": "daily",
                                "end": {"type": "occurrences", "occurrences": 1000}}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "recurrence": "daily",
                                "end": {"type": "occurrences", "occurrences": 2.5}}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "recurrence": "daily",
                                "end": {"type": "occurrences", "occurrences": "ten"}}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "recurrence": "daily",
                                "end": {"type": "date", "date": "2027-02-28"}}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "recurrence": "daily",
                                "end": {"type": "date", "date": "2027-02-30"}}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "recurrence": "daily",
                                "end": {"type": "after"}}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "end": {"type": "occurrences", "occurrences": 2}}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01 09:00:30"}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "next monday"}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-02-30T09:00:00"}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"timeZone": "UTC"}', '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00", "every": "day"}', '2027-01-01', 1);
SELECT fleet.next_occurrences('"weekly"', '2027-01-01', 1);
SELECT fleet.next_occurrences(NULL, '2027-01-01', 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00"}', NULL, 1);
SELECT fleet.next_occurrences('{"start": "2027-03-01T09:00:00"}', '2027-01-01', -1);

-- Scheduled jobs.  Without pg_cron in its database there is no scheduling
-- (immediate jobs keep working, see jobs_run)
SELECT fleet.create_organization('warehouse', 'Warehouse') ->> 'id';
SELECT count(fleet.create_device('warehouse-' || i, template => 'dtmi:contoso:EnvSensor;1', organization => 'warehouse'))
  FROM generate_series(1, 3) i;
SELECT fleet.create_device_group('schedule-sensors', 'Warehouse sensors', 'dtmi:contoso:EnvSensor;1', organization => 'warehouse') ->> 'id';
SELECT fleet.create_scheduled_job('{"id": "no-cron", "displayName": "No cron", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2099-03-02T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly"}}');
CREATE EXTENSION pg_cron;

-- weekly on Mondays at 09:00 Berlin, ten times: one pg_cron entry, in GMT,
-- pointed at the first occurrence
SELECT fleet.create_scheduled_job('{"id": "weekly-interval", "displayName": "Weekly interval", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2099-03-02T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly",
               "end": {"type": "occurrences", "occurrences": 10}}}') - 'createdBy';
-- the engine brings pg_cron in line after each change commits: wait for it,
-- then read the entries
CREATE FUNCTION pg_temp.wait_cron() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 500 LOOP
        EXIT WHEN (SELECT s.cron_synced_version = s.cron_version FROM fleet_internal.engine_state s);
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN (SELECT s.cron_synced_version = s.cron_version FROM fleet_internal.engine_state s);
END;
$$;
CREATE FUNCTION pg_temp.cron_entries() RETURNS TABLE (jobname text, schedule text, command text, database text, active boolean)
LANGUAGE sql AS $$
    SELECT pg_temp.wait_cron();
    SELECT jobname, schedule, command, database, active FROM cron.job ORDER BY jobname;
$$;
SELECT * FROM pg_temp.cron_entries();

-- a fire at the occurrence starts a job over the group's members now,
-- and re-points the entry at the next Monday
SELECT fleet.fire_scheduled_job('weekly-interval', '2099-03-02 08:00:01+00') AS run;
SELECT fleet.wait_for_job('weekly-interval-20990302T0800Z');
SELECT j ->> 'scheduledJobId' AS scheduled_job, j #>> '{progress,total}' AS total, j #>> '{progress,completed}' AS completed
  FROM fleet.get_job('weekly-interval-20990302T0800Z') j;
SELECT id, properties FROM fleet.devices WHERE organization_id = 'warehouse' ORDER BY id;
SELECT * FROM pg_temp.cron_entries();
-- a repeated fire and a stale one do nothing
SELECT fleet.fire_scheduled_job('weekly-interval', '2099-03-02 08:00:30+00') AS repeated;
SELECT fleet.fire_scheduled_job('weekly-interval', '2099-03-05 12:00:00+00') AS stale;
-- occurrences that passed unfired are missed, not run late; the next one runs
SELECT fleet.fire_scheduled_job('weekly-interval', '2099-03-23 08:00:00+00') AS after_downtime;
-- across the change to summer time (2099-03-29) the run stays at 09:00 Berlin: 07:00 GMT
SELECT * FROM pg_temp.cron_entries();
SELECT fleet.fire_scheduled_job('weekly-interval', '2099-03-30 07:00:00+00') AS summer;
SELECT occurrence, occurrence AT TIME ZONE 'Europe/Berlin' AS berlin, outcome, job_id, error
  FROM fleet.list_scheduled_job_runs('weekly-interval');
SELECT fleet.get_scheduled_job('weekly-interval') - 'createdBy' - 'data';
-- the instances are jobs of the last 30 days like any other
SELECT count(*) FROM fleet.jobs WHERE scheduled_job_id = 'weekly-interval';

-- editing: the definition and the schedule change from the next occurrence
SELECT fleet.update_scheduled_job('weekly-interval', '{"displayName": "Weekly interval (edited)",
  "schedule": {"start": "2099-04-07T18:00:00", "timeZone": "America/New_York", "recurrence": "daily",
               "end": {"type": "date", "date": "2099-04-08"}}}') - 'createdBy' - 'data';
SELECT * FROM pg_temp.cron_entries();
-- disabling removes the entry, enabling brings it back
SELECT fleet.disable_scheduled_job('weekly-interval') ->> 'enabled' AS enabled;
SELECT count(*) AS entries FROM pg_temp.cron_entries();
SELECT fleet.fire_scheduled_job('weekly-interval', '2099-04-07 22:00:00+00') AS while_disabled;
SELECT fleet.enable_scheduled_job('weekly-interval') ->> 'nextRun' AS next_run;
SELECT * FROM pg_temp.cron_entries();
-- the end: after the last occurrence the entry goes and the schedule is completed
SELECT fleet.fire_scheduled_job('weekly-interval', '2099-04-07 22:00:00+00') IS NOT NULL AS ran;
SELECT fleet.fire_scheduled_job('weekly-interval', '2099-04-08 22:00:00+00') IS NOT NULL AS ran;
SELECT count(*) AS entries FROM pg_temp.cron_entries();
SELECT s ->> 'completed' AS completed, s ->> 'nextRun' AS next_run, s ->> 'occurrences' AS occurrences
  FROM fleet.get_scheduled_job('weekly-interval') s;
-- deleting unschedules; the jobs it ran stay
SELECT fleet.create_scheduled_job('{"id": "one-time", "displayName": "Once", "group": "schedule-sensors",
  "data": [{"type": "cloudProperty", "target": "dtmi:contoso:EnvSensor;1", "path": "serviceLevel", "value": 1}],
  "schedule": {"start": "2099-12-31T23:59:00"}}') ->> 'nextRun' AS next_run;
SELECT * FROM pg_temp.cron_entries();
SELECT fleet.delete_scheduled_job('one-time');
SELECT fleet.delete_scheduled_job('weekly-interval');
SELECT count(*) AS entries FROM pg_temp.cron_entries();
SELECT count(*) AS jobs_kept FROM fleet.jobs WHERE scheduled_job_id = 'weekly-interval';
-- a fire for a schedule that is gone does nothing
SELECT fleet.fire_scheduled_job('weekly-interval', '2099-04-09 22:00:00+00') AS gone;
-- an occurrence whose job no longer validates is recorded with the reason
SELECT fleet.create_scheduled_job('{"id": "doomed", "displayName": "Doomed", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2099-05-01T10:00:00", "recurrence": "daily"}}') ->> 'nextRun' AS next_run;
UPDATE fleet.scheduled_jobs SET definition = jsonb_set(definition, '{group}', '"no-such-group"') WHERE id = 'doomed';
SELECT fleet.fire_scheduled_job('doomed', '2099-05-01 10:00:00+00') AS run;
SELECT occurrence, outcome, job_id, error FROM fleet.list_scheduled_job_runs('doomed');
SELECT jobname, schedule FROM pg_temp.cron_entries();
SELECT fleet.delete_scheduled_job('doomed');

-- refusals
SELECT fleet.create_scheduled_job('{"id": "past", "displayName": "Past", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2001-01-01T09:00:00", "timeZone": "Europe/Berlin"}}');
SELECT fleet.create_scheduled_job('{"id": "ended", "displayName": "Ended", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2001-01-01T09:00:00", "recurrence": "daily", "end": {"type": "occurrences", "occurrences": 3}}}');
SELECT fleet.create_scheduled_job('{"id": "bad-zone", "displayName": "Bad zone", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2099-01-01T09:00:00", "timeZone": "Mars/Olympus_Mons"}}');
SELECT fleet.create_scheduled_job('{"id": "no-schedule", "displayName": "No schedule", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}]}');
SELECT fleet.create_scheduled_job('{"id": "bad-job", "displayName": "Bad job", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "noSuchProperty", "value": 30}],
  "schedule": {"start": "2099-01-01T09:00:00"}}');
SELECT fleet.create_scheduled_job('{"id": "bad id!", "displayName": "Bad id", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2099-01-01T09:00:00"}}');
SELECT fleet.create_scheduled_job('{"id": "flag", "displayName": "Flag", "group": "schedule-sensors", "enabled": "yes",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2099-01-01T09:00:00"}}');
SELECT fleet.create_scheduled_job('[]');
SELECT fleet.update_scheduled_job('nope', '{"enabled": false}');
SELECT fleet.delete_scheduled_job('nope');
SELECT fleet.list_scheduled_job_runs('nope');
SELECT fleet.create_scheduled_job('{"id": "twice", "displayName": "Twice", "group": "schedule-sensors", "enabled": false,
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2099-01-01T09:00:00"}}') ->> 'enabled' AS enabled;
SELECT count(*) AS entries FROM pg_temp.cron_entries();
SELECT fleet.create_scheduled_job('{"id": "twice", "displayName": "Twice", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2099-01-01T09:00:00"}}');
SELECT fleet.update_scheduled_job('twice', '{"id": "thrice"}');
SELECT fleet.update_scheduled_job('twice', '{"schedule": {"start": "2001-01-01T09:00:00"}}');
SELECT fleet.update_scheduled_job('twice', '"enabled"');
SELECT fleet.delete_scheduled_job('twice');

-- a schedule the engine cannot move on (a row written past the API, say
-- restored from elsewhere) is disabled with the reason, and fails alone:
-- the engine goes on with every other schedule and job
SELECT fleet.create_scheduled_job('{"id": "broken", "displayName": "Broken", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 30}],
  "schedule": {"start": "2099-01-01T09:00:00", "recurrence": "daily"}}') ->> 'enabled' AS enabled;
UPDATE fleet.scheduled_jobs SET schedule = '{"bogus": true}', effective_from = now() - interval '1 day',
       next_run_at = now() - interval '1 hour'
 WHERE id = 'broken';
SELECT fleet.create_job('{"id": "after-broken", "displayName": "After broken", "group": "schedule-sensors",
  "data": [{"type": "property", "target": "dtmi:contoso:EnvSensor;1", "path": "reportInterval", "value": 31}]}') ->> 'status';
SELECT fleet.wait_for_job('after-broken');
SELECT pg_temp.wait_cron() AS in_line;
SELECT enabled, next_run_at, error FROM fleet.scheduled_jobs WHERE id = 'broken';
SELECT fleet.get_scheduled_job('broken') ->> 'error' AS error;
SELECT count(*) AS entries FROM pg_temp.cron_entries() WHERE jobname LIKE '%broken';
SELECT fleet.delete_scheduled_job('broken');
