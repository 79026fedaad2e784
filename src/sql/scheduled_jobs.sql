-- Scheduled jobs: a job definition plus a schedule (src/sql/schedule_calendar.sql).
--
-- pg_cron does the firing.  Each enabled schedule owns one pg_cron entry,
-- always pointed at its next occurrence as a GMT cron expression for that
-- one minute; every fire runs the occurrence, records it, and points the
-- entry at the following one (or removes it when the schedule has ended).
-- pg_cron is only an alarm clock: what ran, what was missed and what comes
-- next are rows here, so a stale or repeated fire does nothing.
--
-- An occurrence that passes while the server is down is not run late:
-- once it is more than fleet.schedule_misfire_grace overdue, the engine
-- (or the next fire) records it as missed, and the next one runs.


-- C (src/cron_bridge.c): writes or removes a pg_cron entry in whichever
-- database pg_cron lives.  Takes an arbitrary command, so PUBLIC may not
-- run it; fleet.sync_schedule_cron() is its only caller.
CREATE FUNCTION fleet.cron_apply(job_name text, cron_schedule text, command text, run_as text)
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cron_apply';
REVOKE ALL ON FUNCTION fleet.cron_apply(text, text, text, text) FROM PUBLIC;
COMMENT ON FUNCTION fleet.cron_apply(text, text, text, text) IS 'Internal: writes (or, with a NULL schedule, removes) a pg_cron entry in the database named by cron.database_name';

-- C: the database pg_cron keeps its entries in; refuses when pg_cron is not loaded.
CREATE FUNCTION fleet.cron_database()
RETURNS text
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cron_database';
COMMENT ON FUNCTION fleet.cron_database() IS 'The database pg_cron keeps its entries in (cron.database_name); an error when pg_cron is not loaded';

-- A pg_cron entry name (pg_cron keeps names as "name", 63 bytes) that
-- says whose it is, unique across databases.
CREATE FUNCTION fleet.schedule_cron_name(schedule_id text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN octet_length(n) <= 63 THEN n
                ELSE 'pg_fleet ' || left(schedule_id, 20) || ' ' || left(md5(n), 16) END
      FROM (SELECT format('pg_fleet %s %s', current_database(), schedule_id) AS n) x
$$;

-- Makes the schedule's pg_cron entry say what its row says: at next_run_at
-- (a one-minute GMT cron expression), running fleet.fire_scheduled_job(id)
-- as the schedule's creator; or no entry when there is no next run or no
-- schedule.  Nothing secret goes into the command: only the schedule id.
--
-- SECURITY DEFINER: pg_cron lets only a superuser create an entry that runs
-- as another role (the creator, when someone else edits the schedule) or
-- in another database.  The entry's parts come from the row, never from
-- the caller, so calling this for any id only brings pg_cron in line.
CREATE FUNCTION fleet.sync_schedule_cron(schedule_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs;
BEGIN
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = schedule_id;
    IF s.id IS NULL OR s.next_run_at IS NULL OR NOT s.enabled THEN
        PERFORM fleet.cron_apply(coalesce(s.cron_job_name, fleet.schedule_cron_name(schedule_id)), NULL, NULL, NULL);
    ELSE
        PERFORM fleet.cron_apply(s.cron_job_name,
                                 to_char(s.next_run_at AT TIME ZONE 'UTC', 'FMMI FMHH24 FMDD FMMM') || ' *',
                                 format('SELECT fleet.fire_scheduled_job(%L)', s.id),
                                 s.created_by);
    END IF;
END;
$$;
COMMENT ON FUNCTION fleet.sync_schedule_cron(text) IS 'Internal: points the schedule''s pg_cron entry at its next occurrence, or removes it';

-- A time other than now is a test seam (tests fire schedules at mocked
-- times): in anyone else's hands it could start occurrences early or mark
-- them missed, so only superusers may pass one.  A minute's leeway covers
-- pg_cron firing on the minute.
CREATE FUNCTION fleet.require_clock_time(at timestamptz, action text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF abs(extract(epoch FROM at - pg_catalog.clock_timestamp())) > 60
       AND NOT fleet.role_sees_everything(current_user) THEN
        RAISE EXCEPTION 'only a superuser may % at another time than now', action
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Leave the time out: pg_cron fires schedules at their time.';
    END IF;
END;
$$;

-- Brings a locked schedule's bookkeeping up to "at": occurrences since it
-- took effect that are more than the misfire grace overdue and were never
-- recorded become "missed"; next_run_at becomes the first occurrence not
-- yet recorded and not missed.  Returns it (NULL: ended or disabled).
CREATE FUNCTION fleet.schedule_advance(schedule_id text, at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s        fleet.scheduled_jobs;
    parsed   fleet.schedule;
    grace    interval := current_setting('fleet.schedule_misfire_grace')::interval;
    recorded timestamptz;
    since    timestamptz;
    span     int;
    next_run timestamptz;
BEGIN
    PERFORM fleet.require_clock_time(at, 'advance a schedule');
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = schedule_id;
    IF s.enabled THEN
        parsed := fleet.parse_schedule(s.schedule);
        SELECT max(r.occurrence) INTO recorded FROM fleet.scheduled_job_runs r WHERE r.scheduled_job_id = s.id;
        since := greatest(s.effective_from - interval '1 microsecond', recorded);

        -- every slot between "since" and the grace line, in one statement
        IF at - grace > since THEN
            span := CASE parsed.recurrence WHEN 'none' THEN 1
                    ELSE least(ceil(extract(epoch FROM at - since)
                                    / (86400.0 * CASE parsed.recurrence WHEN 'daily' THEN 1 ELSE 7 END))::int + 2,
                               100000) END;
            INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, error)
            SELECT s.id, o.occurrence, 'missed', 'not fired within fleet.schedule_misfire_grace: the server or pg_cron was down'
              FROM fleet.schedule_occurrences(parsed, since, span) o
             WHERE o.occurrence < at - grace
            ON CONFLICT DO NOTHING;
            since := greatest(since, at - grace - interval '1 microsecond');
        END IF;
        SELECT o.occurrence INTO next_run FROM fleet.schedule_occurrences(parsed, since, 1) o;
    END IF;
    UPDATE fleet.scheduled_jobs sj SET next_run_at = next_run WHERE sj.id = s.id;
    RETURN next_run;
END;
$$;

CREATE FUNCTION fleet.get_scheduled_job(id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs;
BEGIN
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = get_scheduled_job.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job "%" does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT id, display_name FROM fleet.scheduled_jobs lists them.';
    END IF;
    RETURN s.definition || jsonb_build_object(
        'id', s.id,
        'organizations', jsonb_build_array(s.organization_id),
        'schedule', s.schedule,
        'enabled', s.enabled,
        -- IoT Central's flag: no occurrence is left
        'completed', s.enabled AND s.next_run_at IS NULL,
        'nextRun', s.next_run_at,
        'occurrences', (SELECT count(*) FROM fleet.scheduled_job_runs r
                         WHERE r.scheduled_job_id = s.id AND r.outcome = 'started'),
        'createdBy', s.created_by);
END;
$$;
COMMENT ON FUNCTION fleet.get_scheduled_job(text) IS 'The scheduled job as JSON: its job definition, schedule, enabled, completed, next run and the number of runs started';


CREATE FUNCTION fleet.scheduled_job_parts(definition jsonb)
RETURNS fleet.scheduled_job_parts
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts fleet.scheduled_job_parts;
BEGIN
    IF definition ? 'schedule' THEN
        parts.schedule := fleet.parse_schedule(definition -> 'schedule');
    END IF;
    IF definition ? 'enabled' AND jsonb_typeof(definition -> 'enabled') IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION '"enabled" must be true or false, not %', (definition -> 'enabled')::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    parts.enabled := (definition ->> 'enabled')::boolean;
    -- what get_scheduled_job() adds is read-only and ignored if sent back
    parts.job_definition := definition - ARRAY['id', 'schedule', 'enabled', 'completed', 'nextRun',
                                               'occurrences', 'createdBy'];
    RETURN parts;
END;
$$;

-- Refuses a schedule none of whose occurrences is still to come.
CREATE FUNCTION fleet.require_future_occurrence(schedule fleet.schedule, label text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.schedule_occurrences(schedule, pg_catalog.now(), 1)) THEN
        IF schedule.recurrence = 'none' THEN
            RAISE EXCEPTION 'the start of % (% %) is in the past', label,
                            to_char(schedule.start_local, 'YYYY-MM-DD"T"HH24:MI:SS'), schedule.time_zone
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give a start in the future, or run the job now with fleet.create_job().';
        END IF;
        RAISE EXCEPTION '% has no occurrence left: it ends before its next one', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Move the end date or raise the number of occurrences.';
    END IF;
END;
$$;

CREATE FUNCTION fleet.create_scheduled_job(definition jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts fleet.scheduled_job_parts;
    job   fleet.jobs;
    new_id text;
    label text;
BEGIN
    IF jsonb_typeof(definition) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a scheduled job definition must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', coalesce(jsonb_typeof(definition), 'NULL')),
                  HINT = 'Pass a job definition with a "schedule": {"start": ..., "timeZone": ..., "recurrence": ...}.';
    END IF;
    IF definition ? 'id' AND jsonb_typeof(definition -> 'id') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'scheduled job id % is not a string', (definition -> 'id')::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    new_id := coalesce(definition ->> 'id', 'schedule-' || replace(gen_random_uuid()::text, '-', ''));
    IF new_id !~ '^[A-Za-z0-9_-]{1,255}$' THEN
        RAISE EXCEPTION 'invalid scheduled job id "%"', new_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 255 letters, digits, "-" or "_", or leave "id" out to get one.';
    END IF;
    label := format('scheduled job "%s"', new_id);
    IF NOT definition ? 'schedule' THEN
        RAISE EXCEPTION '% needs a "schedule"', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add "schedule": {"start": "2027-03-01T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly"}, or run the job now with fleet.create_job().';
    END IF;

    parts := fleet.scheduled_job_parts(definition);
    job := fleet.job_from_definition(parts.job_definition);     -- the job is checked now, and at each run
    PERFORM fleet.require_future_occurrence(parts.schedule, label);
    PERFORM fleet.cron_database();                               -- refuses without pg_cron
    IF EXISTS (SELECT 1 FROM fleet.scheduled_jobs sj WHERE sj.id = new_id) THEN
        RAISE EXCEPTION '% already exists', label
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose another id, or change it with fleet.update_scheduled_job().';
    END IF;

    -- (its creator and pg_cron entry name are set by fleet.scheduled_jobs_pin_identity)
    INSERT INTO fleet.scheduled_jobs (id, display_name, organization_id, group_id, definition, schedule,
                                      enabled, effective_from)
    VALUES (new_id, job.display_name, job.organization_id, job.group_id, parts.job_definition,
            fleet.schedule_json(parts.schedule), coalesce(parts.enabled, true), pg_catalog.now());
    PERFORM fleet.schedule_advance(new_id, pg_catalog.now());
    PERFORM fleet.sync_schedule_cron(new_id);
    RETURN fleet.get_scheduled_job(new_id);
END;
$$;
COMMENT ON FUNCTION fleet.create_scheduled_job(jsonb) IS 'Validates a job definition with a "schedule" and schedules it through pg_cron';

-- Locks a schedule for a change.
CREATE FUNCTION fleet.lock_scheduled_job(id text)
RETURNS fleet.scheduled_jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs;
BEGIN
    -- a viewer sees the schedule but may not lock it: tell it why
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = lock_scheduled_job.id;
    IF FOUND THEN
        PERFORM fleet.require_app_role(s.organization_id, 'operator', 'changing a scheduled job');
    END IF;
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = lock_scheduled_job.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job "%" does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT id, display_name FROM fleet.scheduled_jobs lists them.';
    END IF;
    RETURN s;
END;
$$;

-- Changes a scheduled job: any of the job's fields, the schedule, and
-- "enabled", each replaced when given.  Takes effect from the next
-- occurrence; a new schedule's calendar starts now (occurrences it would
-- have had before are not missed).
CREATE FUNCTION fleet.update_scheduled_job(id text, definition jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s       fleet.scheduled_jobs := fleet.lock_scheduled_job(id);
    parts   fleet.scheduled_job_parts;
    job     fleet.jobs;
    label   text := format('scheduled job "%s"', id);
    new_schedule boolean;
    renewed      boolean;
BEGIN
    IF jsonb_typeof(definition) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the changes to % must be a JSON object', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the fields to change, such as {"enabled": false} or {"schedule": {...}}.';
    END IF;
    IF definition ? 'id' AND definition -> 'id' IS DISTINCT FROM to_jsonb(id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create a new scheduled job and delete this one.';
    END IF;
    parts := fleet.scheduled_job_parts(definition);
    parts.job_definition := s.definition || parts.job_definition;
    job := fleet.job_from_definition(parts.job_definition);
    new_schedule := (parts.schedule).start_local IS NOT NULL;
    renewed := new_schedule OR (coalesce(parts.enabled, false) AND NOT s.enabled);
    IF new_schedule THEN
        PERFORM fleet.require_future_occurrence(parts.schedule, label);
    END IF;
    IF coalesce(parts.enabled, s.enabled) THEN
        PERFORM fleet.cron_database();
    END IF;

    UPDATE fleet.scheduled_jobs sj
       SET display_name = job.display_name, organization_id = job.organization_id, group_id = job.group_id,
           definition = parts.job_definition,
           schedule = CASE WHEN new_schedule THEN fleet.schedule_json(parts.schedule) ELSE sj.schedule END,
           enabled = coalesce(parts.enabled, sj.enabled),
           effective_from = CASE WHEN renewed THEN pg_catalog.now() ELSE sj.effective_from END,
           updated_at = pg_catalog.now()
     WHERE sj.id = s.id;
    PERFORM fleet.schedule_advance(s.id, pg_catalog.now());
    PERFORM fleet.sync_schedule_cron(s.id);
    RETURN fleet.get_scheduled_job(s.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_scheduled_job(text, jsonb) IS 'Changes a scheduled job''s definition, schedule or "enabled" from its next occurrence';

CREATE FUNCTION fleet.enable_scheduled_job(id text)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT fleet.update_scheduled_job(id, '{"enabled": true}') $$;
COMMENT ON FUNCTION fleet.enable_scheduled_job(text) IS 'Enables a scheduled job: it runs from its next occurrence';

CREATE FUNCTION fleet.disable_scheduled_job(id text)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT fleet.update_scheduled_job(id, '{"enabled": false}') $$;
COMMENT ON FUNCTION fleet.disable_scheduled_job(text) IS 'Disables a scheduled job: its pg_cron entry goes, its history stays';

CREATE FUNCTION fleet.delete_scheduled_job(id text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs := fleet.lock_scheduled_job(id);
BEGIN
    -- disabled first, so the entry goes by the name the row holds
    UPDATE fleet.scheduled_jobs sj SET enabled = false WHERE sj.id = s.id;
    PERFORM fleet.sync_schedule_cron(s.id);
    DELETE FROM fleet.scheduled_jobs sj WHERE sj.id = s.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_scheduled_job(text) IS 'Unschedules a job: the schedule, its pg_cron entry and its run history go; the jobs it ran stay';

-- Called by pg_cron at an occurrence (and by tests with a mocked "now"):
-- runs the occurrence that is due, records it, and points the pg_cron
-- entry at the next one.  Anything else (a stale entry, a repeated fire, a
-- deleted or disabled schedule) runs nothing.  Returns the new job's id.
CREATE FUNCTION fleet.fire_scheduled_job(id text, fired_at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s       fleet.scheduled_jobs;
    due     timestamptz;
    created jsonb;
    job_id  text;
    message text;
BEGIN
    PERFORM fleet.require_clock_time(fired_at, 'fire a scheduled job');
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = fire_scheduled_job.id FOR UPDATE;
    IF FOUND THEN
        due := fleet.schedule_advance(s.id, fired_at);
        -- pg_cron fires on the minute: a due occurrence is at most a
        -- minute ahead of the clock (and at most the grace behind it)
        IF due IS NOT NULL AND due <= fired_at + interval '59 seconds' THEN
            BEGIN
                created := fleet.create_job(s.definition || jsonb_build_object(
                    'id', fleet.free_job_id(left(s.id, 220) || '-' || to_char(due AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MI"Z"'))));
                job_id := created ->> 'id';
                UPDATE fleet.jobs j SET scheduled_job_id = s.id, created_by = s.created_by WHERE j.id = job_id;
                INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, job_id)
                VALUES (s.id, due, 'started', job_id);
            EXCEPTION WHEN OTHERS THEN
                -- the job no longer validates (a group or template changed):
                -- the occurrence is recorded with the reason, the schedule goes on
                GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
                INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, error)
                VALUES (s.id, due, 'failed', message);
                RAISE WARNING 'scheduled job "%" could not start its run of %: %', s.id, due, message;
            END;
            PERFORM fleet.schedule_advance(s.id, fired_at);
        END IF;
    END IF;
    -- a failure to re-point pg_cron must not undo the run just recorded
    -- (the engine re-points it once the next occurrence is overdue)
    BEGIN
        PERFORM fleet.sync_schedule_cron(fire_scheduled_job.id);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
        RAISE WARNING 'scheduled job "%": could not point pg_cron at the next occurrence: %', fire_scheduled_job.id, message;
    END;
    RETURN job_id;
END;
$$;
COMMENT ON FUNCTION fleet.fire_scheduled_job(text, timestamptz) IS 'Run by pg_cron: starts the due occurrence of a scheduled job and points pg_cron at the next one';

-- The engine's look at schedules whose occurrence passed unfired (the
-- server or pg_cron was down): recorded as missed, pg_cron re-pointed.
CREATE FUNCTION fleet.engine_check_schedules()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    overdue text;
    message text;
BEGIN
    FOR overdue IN
        SELECT sj.id FROM fleet.scheduled_jobs sj
         WHERE sj.enabled AND sj.next_run_at < pg_catalog.clock_timestamp()
                                              - current_setting('fleet.schedule_misfire_grace')::interval
           FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM fleet.schedule_advance(overdue, pg_catalog.clock_timestamp());
        BEGIN
            PERFORM fleet.sync_schedule_cron(overdue);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            RAISE WARNING 'pg_fleet engine: could not point pg_cron at the next run of scheduled job "%": %',
                          overdue, message;
        END;
    END LOOP;
END;
$$;

CREATE FUNCTION fleet.scheduled_job_instances(id text)
RETURNS TABLE (occurrence timestamptz, outcome text, job_id text, status text,
               started_at timestamptz, finished_at timestamptz, error text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.scheduled_jobs sj WHERE sj.id = scheduled_job_instances.id) THEN
        RAISE EXCEPTION 'scheduled job "%" does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT id, display_name FROM fleet.scheduled_jobs lists them.';
    END IF;
    RETURN QUERY
    SELECT r.occurrence, r.outcome, r.job_id, j.status, j.started_at, j.finished_at, coalesce(r.error, j.error)
      FROM fleet.scheduled_job_runs r
      LEFT JOIN fleet.jobs j ON j.id = r.job_id
     WHERE r.scheduled_job_id = scheduled_job_instances.id
     ORDER BY r.occurrence;
END;
$$;
COMMENT ON FUNCTION fleet.scheduled_job_instances(text) IS 'The occurrences of a scheduled job so far: started (with the job and its status), missed, or failed to start';
