-- Scheduled jobs: a job definition plus a schedule (src/sql/schedule_calendar.sql).
--
-- pg_cron does the firing.  Each enabled schedule has one pg_cron entry,
-- pointed at its next occurrence as a GMT cron expression for that one
-- minute, which runs fleet.fire_scheduled_job(id).  The schedule table is
-- the truth: the functions here change rows only, and the engine, after
-- they commit, brings pg_cron in line with the rows (src/sql/schedule_cron.sql),
-- so a rolled-back change leaves pg_cron as it was.  pg_cron is only an
-- alarm clock: what ran, what was missed and what comes next are rows
-- here, so a stale or repeated fire does nothing.
--
-- An occurrence that passes while the server is down is not run late:
-- once it is more than fleet.schedule_misfire_grace overdue, the engine
-- records it as missed (or failed, with pg_cron's reason, when pg_cron
-- tried and could not), and the next one runs.
--
-- Members change schedules only through these functions (SECURITY
-- DEFINER, src/sql/access.sql).  Each run is created with the rights of
-- the role that last created or changed the schedule, in the schedule's
-- organization: pg_cron runs the fire as that role, and the fire checks
-- the job again with that role's rights at that moment.

-- A time other than now is a test seam (tests fire schedules at mocked
-- times): in anyone else's hands it could start occurrences early or mark
-- them missed, so only superusers may pass one.  A minute's leeway covers
-- pg_cron firing on the minute.
CREATE FUNCTION fleet_internal.require_clock_time(at timestamptz, action text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF abs(extract(epoch FROM at - fleet_internal.moment())) > 60
       AND NOT fleet_internal.role_sees_everything(fleet_internal.calling_role()) THEN
        RAISE EXCEPTION 'only a superuser may % at another time than now', action
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Leave the time out: pg_cron fires schedules at their time.';
    END IF;
END;
$$;

-- Brings a locked schedule's bookkeeping up to "at": occurrences since it
-- took effect that are more than the misfire grace overdue and were never
-- recorded become "missed" (or "failed" with pg_cron's reason, when
-- pg_cron's log says it tried); next_run_at becomes the first occurrence
-- not yet recorded and not missed.  Returns it (NULL: ended or disabled).
CREATE FUNCTION fleet_internal.schedule_advance(schedule_id text, at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s        fleet.scheduled_jobs;
    parsed   fleet_internal.schedule;
    grace    interval := current_setting('fleet.schedule_misfire_grace')::interval;
    since    timestamptz;
    span     int;
    next_run timestamptz;
    pg_cron_runs jsonb;
BEGIN
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = schedule_id;
    IF s.enabled THEN
        parsed := fleet_internal.parse_schedule(s.schedule);
        since := greatest(s.effective_from - interval '1 microsecond', s.last_occurrence);

        -- every slot between "since" and the grace line, in one statement
        IF at - grace > since THEN
            span := CASE parsed.recurrence WHEN 'none' THEN 1
                    ELSE least(ceil(extract(epoch FROM at - since)
                                    / (86400.0 * CASE parsed.recurrence WHEN 'daily' THEN 1 WHEN 'weekly' THEN 7 ELSE 28 END))::int + 2,
                               100000) END;
            IF EXISTS (SELECT 1 FROM fleet_internal.schedule_occurrences(parsed, since, span) o WHERE o.occurrence < at - grace) THEN
                -- what pg_cron's log says of its runs since then, if it keeps one
                BEGIN
                    pg_cron_runs := fleet_internal.cron_runs(fleet_internal.schedule_cron_command(s.id),
                                                             since - interval '1 minute');
                EXCEPTION WHEN OTHERS THEN
                    pg_cron_runs := NULL;
                END;
                -- a failed run of pg_cron's is matched by its start time;
                -- one it could not even connect for has none, and counts
                -- for the latest missed occurrence when it is its latest run
                WITH missed AS (
                    SELECT o.occurrence,
                           coalesce((SELECT r FROM jsonb_array_elements(pg_cron_runs) r
                                      WHERE (r ->> 'start')::timestamptz BETWEEN o.occurrence - interval '1 minute'
                                                                              AND o.occurrence + grace
                                        AND r ->> 'status' = 'failed'
                                      LIMIT 1),
                                    CASE WHEN o.occurrence = max(o.occurrence) OVER ()
                                          AND pg_cron_runs -> 0 ->> 'status' = 'failed'
                                          AND pg_cron_runs -> 0 ->> 'start' IS NULL
                                         THEN pg_cron_runs -> 0 END) AS cron_run
                      FROM fleet_internal.schedule_occurrences(parsed, since, span) o
                     WHERE o.occurrence < at - grace
                )
                INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, error)
                SELECT s.id, m.occurrence,
                       CASE WHEN m.cron_run IS NULL THEN 'missed' ELSE 'failed' END,
                       CASE WHEN m.cron_run IS NULL
                            THEN 'pg_cron did not run it within fleet.schedule_misfire_grace: the server or pg_cron was down, or its entry was missing'
                            ELSE 'pg_cron could not run it: ' || coalesce(m.cron_run ->> 'message', 'no reason given') END
                  FROM missed m
                ON CONFLICT DO NOTHING;
                UPDATE fleet.scheduled_jobs sj
                   SET last_occurrence = greatest(sj.last_occurrence,
                                                  (SELECT max(o.occurrence) FROM fleet_internal.schedule_occurrences(parsed, since, span) o
                                                    WHERE o.occurrence < at - grace))
                 WHERE sj.id = s.id;
            END IF;
            since := greatest(since, at - grace - interval '1 microsecond');
        END IF;
        SELECT o.occurrence INTO next_run FROM fleet_internal.schedule_occurrences(parsed, since, 1) o;
    END IF;
    UPDATE fleet.scheduled_jobs sj SET next_run_at = next_run WHERE sj.id = s.id AND sj.next_run_at IS DISTINCT FROM next_run;
    IF FOUND THEN
        PERFORM fleet_internal.schedules_changed();
    END IF;
    RETURN next_run;
END;
$$;

-- The keys a scheduled job body has besides its job's (fleet_internal.job_keys):
-- its schedule and "enabled", and what fleet.get_scheduled_job() adds
-- (read-only).
CREATE FUNCTION fleet_internal.scheduled_job_keys()
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '{schedule,enabled,completed,nextRun,occurrences,createdBy,changedBy}'::text[]
$$;

-- A scheduled job's etag: computed from what it holds, so that it changes
-- with every change (fleet_internal.etag).
CREATE FUNCTION fleet_internal.scheduled_job_etag(s fleet.scheduled_jobs)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT fleet_internal.etag(jsonb_build_array(s.definition, s.schedule, s.enabled))
$$;

-- The scheduled job as JSON, for whoever sees it.
CREATE FUNCTION fleet.get_scheduled_job(scheduled_job_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs := fleet_internal.visible_scheduled_job(get_scheduled_job.scheduled_job_id, fleet_internal.calling_role());
BEGIN
    RETURN s.definition || jsonb_strip_nulls(jsonb_build_object(
        'id', s.id,
        'etag', fleet_internal.scheduled_job_etag(s),
        'organizations', jsonb_build_array(s.organization_id),
        'schedule', s.schedule,
        'enabled', s.enabled,
        -- IoT Central's flag: no occurrence is left
        'completed', s.enabled AND s.next_run_at IS NULL,
        'nextRun', fleet_internal.rest_timestamp(s.next_run_at),
        'occurrences', s.runs_started,
        'createdBy', s.created_by,
        'changedBy', s.changed_by,
        'error', s.error));
END;
$$;
COMMENT ON FUNCTION fleet.get_scheduled_job(text) IS 'The scheduled job as JSON: its job definition, schedule, enabled, completed, next run, the number of runs started, and who created and last changed it';

-- The schedule, or "does not exist" unless the role sees it.
CREATE FUNCTION fleet_internal.visible_scheduled_job(scheduled_job_id text, role_name name)
RETURNS fleet.scheduled_jobs
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs;
BEGIN
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = visible_scheduled_job.scheduled_job_id;
    IF NOT FOUND OR NOT fleet_internal.sees(role_name, s.organization_id) THEN
        RAISE EXCEPTION 'scheduled job "%" does not exist', visible_scheduled_job.scheduled_job_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'SELECT id, display_name FROM fleet.scheduled_jobs lists them.';
    END IF;
    RETURN s;
END;
$$;

-- A scheduled job's definition taken apart: the job, its schedule (NULL
-- fields when not given) and "enabled" (NULL when not given).
CREATE FUNCTION fleet_internal.scheduled_job_parts(definition jsonb)
RETURNS fleet_internal.scheduled_job_parts
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts fleet_internal.scheduled_job_parts;
BEGIN
    IF definition ? 'schedule' THEN
        parts.schedule := fleet_internal.parse_schedule(definition -> 'schedule');
    END IF;
    IF definition ? 'enabled' AND jsonb_typeof(definition -> 'enabled') IS DISTINCT FROM 'boolean' THEN
        RAISE EXCEPTION '"enabled" must be true or false, not %', (definition -> 'enabled')::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    parts.enabled := (definition ->> 'enabled')::boolean;
    -- what get_scheduled_job() adds is read-only and ignored if sent back
    PERFORM fleet_internal.refuse_unknown_keys(definition,
        fleet_internal.job_keys(false) || fleet_internal.scheduled_job_keys() || fleet_internal.job_keys(true),
        'the scheduled job');
    -- the schedule's id and etag are not its jobs'
    parts.job_definition := definition - fleet_internal.scheduled_job_keys() - '{id,etag,error}'::text[];
    RETURN parts;
END;
$$;

-- Refuses a schedule none of whose occurrences is still to come.
CREATE FUNCTION fleet_internal.require_future_occurrence(schedule fleet_internal.schedule, label text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet_internal.schedule_occurrences(schedule, pg_catalog.now(), 1)) THEN
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

CREATE FUNCTION fleet.create_scheduled_job(definition jsonb, scheduled_job_id text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    parts  fleet_internal.scheduled_job_parts;
    job    fleet.jobs;
    new_id text;
    label  text;
BEGIN
    PERFORM fleet_internal.require_engine_database('scheduling a job');
    definition := fleet_internal.body_with_id(definition, scheduled_job_id, 'scheduled job');
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

    parts := fleet_internal.scheduled_job_parts(definition);
    job := fleet_internal.job_from_definition(parts.job_definition, caller);     -- checked now, and at each run
    PERFORM fleet_internal.require_future_occurrence(parts.schedule, label);
    PERFORM fleet_internal.require_cron(coalesce(parts.enabled, true));
    IF EXISTS (SELECT 1 FROM fleet.scheduled_jobs sj WHERE sj.id = new_id) THEN
        RAISE EXCEPTION '% already exists', label
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another id, or change it with fleet.update_scheduled_job().';
    END IF;

    INSERT INTO fleet.scheduled_jobs (id, display_name, organization_id, group_id, definition, schedule,
                                      enabled, effective_from, created_by, changed_by)
    VALUES (new_id, job.display_name, job.organization_id, job.group_id, parts.job_definition,
            fleet_internal.schedule_json(parts.schedule) || jsonb_build_object('start', definition #> '{schedule,start}'),
            coalesce(parts.enabled, true), pg_catalog.now(), caller, caller);
    PERFORM fleet_internal.schedule_advance(new_id, pg_catalog.now());
    PERFORM fleet_internal.schedules_changed();
    RETURN fleet.get_scheduled_job(new_id);
END;
$$;
COMMENT ON FUNCTION fleet.create_scheduled_job(jsonb, text) IS 'Validates a job definition with a "schedule" (scheduled_job_id as PUT /scheduledJobs/{id} takes it, else its "id") and schedules it through pg_cron';

-- Locks a schedule for a change by the caller.
CREATE FUNCTION fleet_internal.lock_scheduled_job(scheduled_job_id text, caller name)
RETURNS fleet.scheduled_jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs := fleet_internal.visible_scheduled_job(lock_scheduled_job.scheduled_job_id, caller);
BEGIN
    PERFORM fleet_internal.require_app_role(s.organization_id, 'operator', 'changing a scheduled job', caller);
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = lock_scheduled_job.scheduled_job_id FOR UPDATE;
    RETURN s;
END;
$$;

-- Changes a scheduled job: any of the job's fields, the schedule, and
-- "enabled", each replaced when given.  Takes effect from the next
-- occurrence; a new schedule's calendar starts now (occurrences it would
-- have had before are not missed).  Its runs are then created with the
-- caller's rights.
CREATE FUNCTION fleet.update_scheduled_job(scheduled_job_id text, definition jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    s       fleet.scheduled_jobs := fleet_internal.lock_scheduled_job(update_scheduled_job.scheduled_job_id, fleet_internal.calling_role());
    parts   fleet_internal.scheduled_job_parts;
    job     fleet.jobs;
    label   text := format('scheduled job "%s"', update_scheduled_job.scheduled_job_id);
    new_schedule boolean;
    renewed      boolean;
BEGIN
    IF jsonb_typeof(definition) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the changes to % must be a JSON object', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the fields to change, such as {"enabled": false} or {"schedule": {...}}.';
    END IF;
    IF definition ? 'id' AND definition -> 'id' IS DISTINCT FROM to_jsonb(update_scheduled_job.scheduled_job_id) THEN
        RAISE EXCEPTION 'the id of % cannot change', label
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create a new scheduled job and delete this one.';
    END IF;
    -- If-Match: an etag read earlier must still be the schedule's
    PERFORM fleet_internal.require_etag(label, definition -> 'etag', fleet_internal.scheduled_job_etag(s));
    parts := fleet_internal.scheduled_job_parts(definition);
    parts.job_definition := s.definition || parts.job_definition;
    job := fleet_internal.job_from_definition(parts.job_definition, caller);
    IF job.organization_id <> s.organization_id THEN
        RAISE EXCEPTION '% cannot move to organization "%"', label, job.organization_id
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It belongs to organization "%s".', s.organization_id),
                  HINT = 'Create a new scheduled job in that organization and delete this one.';
    END IF;
    new_schedule := (parts.schedule).start_local IS NOT NULL;
    renewed := new_schedule OR (coalesce(parts.enabled, false) AND NOT s.enabled);
    IF new_schedule THEN
        PERFORM fleet_internal.require_future_occurrence(parts.schedule, label);
    END IF;
    PERFORM fleet_internal.require_cron(coalesce(parts.enabled, s.enabled));

    -- (the new values made from the row locked above, then written as
    -- values: Citus refuses stable functions inside an UPDATE's CASE)
    IF new_schedule THEN
        s.schedule := fleet_internal.schedule_json(parts.schedule)
                      || jsonb_build_object('start', update_scheduled_job.definition #> '{schedule,start}');
    END IF;
    IF renewed THEN
        s.effective_from := pg_catalog.now();
        s.error := NULL;
    END IF;
    UPDATE fleet.scheduled_jobs sj
       SET display_name = job.display_name, group_id = job.group_id,
           definition = parts.job_definition,
           schedule = s.schedule,
           enabled = coalesce(parts.enabled, s.enabled),
           effective_from = s.effective_from,
           error = s.error,
           updated_at = pg_catalog.now(), changed_by = caller
     WHERE sj.id = s.id;
    PERFORM fleet_internal.schedule_advance(s.id, pg_catalog.now());
    PERFORM fleet_internal.schedules_changed();
    RETURN fleet.get_scheduled_job(s.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_scheduled_job(text, jsonb) IS 'Changes a scheduled job''s definition, schedule or "enabled" from its next occurrence';

CREATE FUNCTION fleet.enable_scheduled_job(scheduled_job_id text)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT fleet.update_scheduled_job(enable_scheduled_job.scheduled_job_id, '{"enabled": true}') $$;
COMMENT ON FUNCTION fleet.enable_scheduled_job(text) IS 'Enables a scheduled job: it runs from its next occurrence';

CREATE FUNCTION fleet.disable_scheduled_job(scheduled_job_id text)
RETURNS jsonb
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT fleet.update_scheduled_job(disable_scheduled_job.scheduled_job_id, '{"enabled": false}') $$;
COMMENT ON FUNCTION fleet.disable_scheduled_job(text) IS 'Disables a scheduled job: its pg_cron entry goes, its history stays';

CREATE FUNCTION fleet.delete_scheduled_job(scheduled_job_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s fleet.scheduled_jobs := fleet_internal.lock_scheduled_job(delete_scheduled_job.scheduled_job_id, fleet_internal.calling_role());
BEGIN
    DELETE FROM fleet.scheduled_jobs sj WHERE sj.id = s.id;
    PERFORM fleet_internal.schedules_changed();
END;
$$;
COMMENT ON FUNCTION fleet.delete_scheduled_job(text) IS 'Unschedules a job: the schedule, its pg_cron entry and its run history go; the jobs it ran stay';

-- Called by pg_cron at an occurrence (and by tests with a mocked "now"):
-- runs the occurrence that is due, records it, and moves the schedule on.
-- Anything else (a stale entry, a repeated fire, a deleted or disabled
-- schedule) runs nothing.  The run is checked and created with the rights
-- of the role that last changed the schedule, in its organization.
-- Returns the new job's id.
CREATE FUNCTION fleet.fire_scheduled_job(scheduled_job_id text, fired_at timestamptz DEFAULT pg_catalog.clock_timestamp())
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller  name := fleet_internal.calling_role();
    s       fleet.scheduled_jobs;
    due     timestamptz;
    job     fleet.jobs;
    job_id  text;
    message text;
BEGIN
    PERFORM fleet_internal.require_clock_time(fired_at, 'fire a scheduled job');
    SELECT sj.* INTO s FROM fleet.scheduled_jobs sj WHERE sj.id = fire_scheduled_job.scheduled_job_id FOR UPDATE;
    -- (pg_cron fires as the schedule's last changer, who may have lost its
    -- rights since: the run is then refused below, with the reason)
    IF NOT FOUND OR (caller <> s.changed_by AND NOT fleet_internal.sees(caller, s.organization_id)) THEN
        RETURN NULL;            -- a stale entry: the engine removes it
    END IF;
    due := fleet_internal.schedule_advance(s.id, fired_at);
    -- pg_cron fires on the minute: a due occurrence is at most a minute
    -- ahead of the clock (and at most the grace behind it)
    IF due IS NOT NULL AND due <= fired_at + interval '59 seconds' THEN
        BEGIN
            job := fleet_internal.job_from_definition(s.definition || jsonb_build_object(
                       'id', fleet_internal.free_job_id(left(s.id, 220) || '-' || to_char(due AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MI"Z"'))),
                       s.changed_by);
            IF job.organization_id <> s.organization_id THEN
                RAISE EXCEPTION 'the job would run in organization "%", not the schedule''s "%"',
                                job.organization_id, s.organization_id;
            END IF;
            job.status := 'pending';
            job.queued_at := fleet_internal.moment();
            job.scheduled_job_id := s.id;
            INSERT INTO fleet.jobs SELECT job.*;
            job_id := job.id;
            INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, job_id)
            VALUES (s.id, due, 'started', job_id);
            UPDATE fleet.scheduled_jobs sj SET runs_started = sj.runs_started + 1 WHERE sj.id = s.id;
            PERFORM fleet_internal.job_event(job.id, 'queued');
            PERFORM fleet_internal.wake_engine();
        EXCEPTION WHEN OTHERS THEN
            -- the job no longer validates (a group or template changed, its
            -- last changer lost the right): the occurrence is recorded with
            -- the reason, the schedule goes on
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            INSERT INTO fleet.scheduled_job_runs (scheduled_job_id, occurrence, outcome, error)
            VALUES (s.id, due, 'failed', message);
            RAISE WARNING 'scheduled job "%" could not start its run of %: %', s.id, due, message;
        END;
        UPDATE fleet.scheduled_jobs sj SET last_occurrence = greatest(sj.last_occurrence, due) WHERE sj.id = s.id;
        PERFORM fleet_internal.schedule_advance(s.id, fired_at);
    END IF;
    PERFORM fleet_internal.schedules_changed();
    RETURN job_id;
END;
$$;
COMMENT ON FUNCTION fleet.fire_scheduled_job(text, timestamptz) IS 'Run by pg_cron: starts the due occurrence of a scheduled job and moves the schedule on to the next';

CREATE FUNCTION fleet.list_scheduled_job_runs(scheduled_job_id text)
RETURNS TABLE (occurrence timestamptz, outcome text, job_id text, status text,
               started_at timestamptz, finished_at timestamptz, error text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.visible_scheduled_job(list_scheduled_job_runs.scheduled_job_id, fleet_internal.calling_role());
    RETURN QUERY
    SELECT r.occurrence, r.outcome, r.job_id, j.status, j.started_at, j.finished_at, coalesce(r.error, j.error)
      FROM fleet.scheduled_job_runs r
      LEFT JOIN fleet.jobs j ON j.id = r.job_id AND j.deleted_at IS NULL
     WHERE r.scheduled_job_id = list_scheduled_job_runs.scheduled_job_id
     ORDER BY r.occurrence;
END;
$$;
COMMENT ON FUNCTION fleet.list_scheduled_job_runs(text) IS 'The occurrences of a scheduled job so far: started (with the job and its status), missed, or failed to start';

