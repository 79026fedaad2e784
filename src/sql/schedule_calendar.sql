-- The calendar of scheduled jobs: pure functions from a schedule to its
-- occurrences.  pg_cron 1.4 reads cron expressions in GMT and knows nothing
-- of start dates, end dates, counts or daylight saving, so all of that is
-- here; pg_cron is only ever pointed at the next occurrence
-- (src/sql/scheduled_jobs.sql).
--
-- A schedule's occurrences are calendar slots: slot k is the start's local
-- date and time plus k days (daily) or k weeks (weekly), in the schedule's
-- time zone, so a 09:00 run stays at 09:00 local in winter and in summer.
-- A local time that does not exist on a spring-forward day runs an hour
-- later (02:30 becomes 03:30); one that happens twice on a fall-back day
-- runs at the second (standard time) one.  These are PostgreSQL's rules for
-- timestamp AT TIME ZONE.


-- Refuses a time zone PostgreSQL does not know by an IANA name.  The quick
-- test loads the zone; abbreviations ("CET") and POSIX strings ("UTC+3")
-- load too but shift with no daylight saving rules, so anything that looks
-- like one must be in pg_timezone_names, which takes a directory scan.
CREATE FUNCTION fleet_internal.require_time_zone(time_zone text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known boolean := false;
BEGIN
    IF time_zone IS NOT NULL AND time_zone <> '' AND length(time_zone) <= 64 THEN
        BEGIN
            PERFORM pg_catalog.timezone(time_zone, pg_catalog.now());
            known := time_zone !~ '[0-9<>,.:+]'
                     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_abbrevs a
                                      WHERE lower(a.abbrev) = lower(time_zone));
        EXCEPTION WHEN invalid_parameter_value OR feature_not_supported THEN
            RAISE EXCEPTION 'unknown time zone "%"', time_zone
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use an IANA time zone name such as "Europe/Berlin"; SELECT name FROM pg_timezone_names lists them.';
        END;
        IF NOT known THEN
            known := EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names n WHERE lower(n.name) = lower(time_zone));
        END IF;
    END IF;
    -- these two follow the server's own OS files, not a zone of the world:
    -- a schedule in them would move with the server's configuration
    IF lower(time_zone) IN ('localtime', 'posixrules') THEN
        RAISE EXCEPTION 'time zone "%" is the server''s own setting, not a place', time_zone
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA time zone name such as "Europe/Berlin"; SELECT name FROM pg_timezone_names lists them.';
    END IF;
    IF NOT known THEN
        RAISE EXCEPTION 'unknown time zone "%"', coalesce(time_zone, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA time zone name such as "Europe/Berlin"; SELECT name FROM pg_timezone_names lists them.';
    END IF;
    RETURN time_zone;
END;
$$;

-- Checks a schedule object ({"start", "timeZone"?, "recurrence"?, "end"?})
-- and returns it parsed.  Each refusal names the value and what to do.
-- "start" is a local date and time in "timeZone" (default UTC); a start
-- with an offset or "Z" is converted to that zone's wall clock.
CREATE FUNCTION fleet_internal.parse_schedule(schedule jsonb)
RETURNS fleet_internal.schedule
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parsed   fleet_internal.schedule;
    start    text;
    end_spec jsonb;
    n        numeric;
BEGIN
    IF jsonb_typeof(schedule) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a schedule must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is %s.', coalesce(jsonb_typeof(schedule), 'NULL')),
                  HINT = 'Give {"start": "2027-03-01T09:00:00", "timeZone": "Europe/Berlin", "recurrence": "weekly"}.';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_object_keys(schedule) k
                WHERE k NOT IN ('start', 'timeZone', 'recurrence', 'end')) THEN
        RAISE EXCEPTION 'unknown schedule field "%"',
                        (SELECT k FROM jsonb_object_keys(schedule) k
                          WHERE k NOT IN ('start', 'timeZone', 'recurrence', 'end') ORDER BY k LIMIT 1)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A schedule has "start", "timeZone", "recurrence" and "end".';
    END IF;

    IF schedule ? 'timeZone' AND jsonb_typeof(schedule -> 'timeZone') <> 'string' THEN
        RAISE EXCEPTION 'schedule "timeZone" must be a string, not %', (schedule -> 'timeZone')::text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA time zone name such as "Europe/Berlin".';
    END IF;
    parsed.time_zone := fleet_internal.require_time_zone(coalesce(schedule ->> 'timeZone', 'UTC'));

    IF jsonb_typeof(schedule -> 'start') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'a schedule needs a "start" date and time'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the local date and time of the first run, such as "2027-03-01T09:00:00".';
    END IF;
    start := schedule ->> 'start';
    BEGIN
        IF start ~ '(Z|z|[+-]\d\d(:?\d\d)?)$' AND start ~ '\d[Tt ]\d' THEN
            parsed.start_local := pg_catalog.timezone(parsed.time_zone, start::timestamptz);
        ELSIF start ~ '^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?$' THEN
            parsed.start_local := start::timestamp;
        ELSE
            RAISE invalid_datetime_format;
        END IF;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_parameter_value THEN
        RAISE EXCEPTION 'schedule start "%" is not a date and time', start
            USING ERRCODE = 'invalid_datetime_format',
                  HINT = 'Write it as YYYY-MM-DDTHH:MM:SS, the local time in the schedule''s "timeZone".';
    END;
    -- pg_cron runs on whole minutes: a start with seconds (IoT Central
    -- takes them) runs at the next whole minute, never before it
    IF parsed.start_local <> date_trunc('minute', parsed.start_local) THEN
        parsed.start_local := date_trunc('minute', parsed.start_local) + interval '1 minute';
    END IF;

    parsed.recurrence := CASE WHEN coalesce(jsonb_typeof(schedule -> 'recurrence'), 'null') = 'null' THEN 'none'
                              WHEN jsonb_typeof(schedule -> 'recurrence') = 'string' THEN schedule ->> 'recurrence'
                              ELSE (schedule -> 'recurrence')::text END;
    IF parsed.recurrence NOT IN ('none', 'daily', 'weekly', 'monthly') THEN
        RAISE EXCEPTION 'unknown schedule recurrence %', (schedule -> 'recurrence')::text
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "daily", "weekly" (on the start date''s weekday) or "monthly" (on the start date''s day, or the month''s last day when it is shorter), or leave "recurrence" out for a one-time run.';
    END IF;

    end_spec := schedule -> 'end';
    IF end_spec IS NOT NULL AND jsonb_typeof(end_spec) <> 'null' THEN
        IF parsed.recurrence = 'none' THEN
            RAISE EXCEPTION 'a one-time schedule has no "end"'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Remove "end", or set "recurrence" to "daily", "weekly" or "monthly".';
        END IF;
        IF jsonb_typeof(end_spec) <> 'object' OR jsonb_typeof(end_spec -> 'type') IS DISTINCT FROM 'string'
           OR end_spec ->> 'type' NOT IN ('date', 'occurrences') THEN
            RAISE EXCEPTION 'unknown schedule end %', end_spec::text
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use {"type": "date", "date": "2027-12-31"} or {"type": "occurrences", "occurrences": 10}.';
        END IF;
        IF end_spec ->> 'type' = 'date' THEN
            BEGIN
                IF jsonb_typeof(end_spec -> 'date') IS DISTINCT FROM 'string'
                   OR end_spec ->> 'date' !~ '^\d{4}-\d\d-\d\d([Tt ].*)?$' THEN
                    RAISE invalid_datetime_format;
                END IF;
                parsed.end_date := left(end_spec ->> 'date', 10)::date;
            EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
                RAISE EXCEPTION 'schedule end date % is not a date', coalesce((end_spec -> 'date')::text, 'NULL')
                    USING ERRCODE = 'invalid_datetime_format',
                          HINT = 'Write it as YYYY-MM-DD: no run happens after that day ends in the schedule''s time zone.';
            END;
            IF parsed.end_date < parsed.start_local::date THEN
                RAISE EXCEPTION 'schedule end date % is before its start %',
                                to_char(parsed.end_date, 'YYYY-MM-DD'), to_char(parsed.start_local, 'YYYY-MM-DD')
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Choose an end date on or after the start date.';
            END IF;
        ELSE
            IF jsonb_typeof(end_spec -> 'occurrences') IS DISTINCT FROM 'number' THEN
                RAISE EXCEPTION 'schedule end occurrences % is not a number', coalesce((end_spec -> 'occurrences')::text, 'NULL')
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give a whole number of runs from 1 to 999.';
            END IF;
            n := (end_spec ->> 'occurrences')::numeric;
            IF n <> trunc(n) OR n < 1 OR n > 999 THEN
                RAISE EXCEPTION 'schedule end occurrences % is outside 1 to 999', end_spec ->> 'occurrences'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give a whole number of runs from 1 to 999, or end on a date.';
            END IF;
            parsed.max_occurrences := n::int;
        END IF;
    END IF;
    RETURN parsed;
END;
$$;

-- The schedule in its normal JSON form, as fleet.get_scheduled_job shows it.
CREATE FUNCTION fleet_internal.schedule_json(s fleet_internal.schedule)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'start', to_char(s.start_local, 'YYYY-MM-DD"T"HH24:MI:SS'),
        'timeZone', s.time_zone,
        'recurrence', nullif(s.recurrence, 'none'),
        'end', CASE WHEN s.end_date IS NOT NULL THEN jsonb_build_object('type', 'date', 'date', s.end_date)
                    WHEN s.max_occurrences IS NOT NULL THEN jsonb_build_object('type', 'occurrences',
                                                                               'occurrences', s.max_occurrences)
               END))
$$;

-- The occurrences of a parsed schedule strictly after "after", at most n,
-- in order.  Set-based: the candidate slots around "after" are computed in
-- one statement (DST moves a slot by at most an hour, so starting one slot
-- early is enough).
CREATE FUNCTION fleet_internal.schedule_occurrences(s fleet_internal.schedule, after timestamptz, n int)
RETURNS TABLE (slot int, occurrence timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- a monthly slot is k months after the start (not after the slot
    -- before): the 31st runs on the last day of shorter months, and on the
    -- 31st again when there is one
    WITH step AS (
        SELECT CASE s.recurrence WHEN 'daily' THEN 1 WHEN 'weekly' THEN 7 ELSE 0 END AS days,
               s.recurrence = 'monthly' AS monthly
    ),
    first_slot AS (
        SELECT CASE WHEN st.monthly
                    THEN greatest(0, ((extract(year FROM pg_catalog.timezone(s.time_zone, after)) - extract(year FROM s.start_local)) * 12
                                      + extract(month FROM pg_catalog.timezone(s.time_zone, after)) - extract(month FROM s.start_local))::int - 1)
                    WHEN st.days = 0 THEN 0
                    ELSE greatest(0, floor(extract(epoch FROM pg_catalog.timezone(s.time_zone, after) - s.start_local)
                                           / (86400.0 * st.days))::int - 1) END AS k,
               st.days, st.monthly
          FROM step st
    ),
    slots AS (
        SELECT g.k, s.start_local + make_interval(months => CASE WHEN f.monthly THEN g.k ELSE 0 END,
                                                  days => g.k * f.days) AS local_time
          FROM first_slot f,
               generate_series(f.k, CASE WHEN f.days = 0 AND NOT f.monthly THEN 0 ELSE f.k + greatest(n, 0) + 2 END) AS g(k)
    )
    SELECT x.k, pg_catalog.timezone(s.time_zone, x.local_time)
      FROM slots x
     WHERE pg_catalog.timezone(s.time_zone, x.local_time) > after
       AND (s.end_date IS NULL OR x.local_time::date <= s.end_date)
       AND (s.max_occurrences IS NULL OR x.k < s.max_occurrences)
     ORDER BY x.k
     LIMIT greatest(n, 0)
$$;

CREATE FUNCTION fleet.next_occurrences(schedule jsonb, after timestamptz DEFAULT pg_catalog.now(), n int DEFAULT 10)
RETURNS SETOF timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF after IS NULL THEN
        RAISE EXCEPTION '"after" must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the time to count from, such as now().';
    END IF;
    IF n IS NULL OR n < 0 OR n > 10000 THEN
        RAISE EXCEPTION 'cannot list % occurrences', coalesce(n::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Ask for 0 to 10000 occurrences.';
    END IF;
    RETURN QUERY SELECT o.occurrence FROM fleet_internal.schedule_occurrences(fleet_internal.parse_schedule(schedule), after, n) o;
END;
$$;
COMMENT ON FUNCTION fleet.next_occurrences(jsonb, timestamptz, int) IS 'The next n occurrences of a schedule ({"start", "timeZone", "recurrence", "end"}) strictly after a time';
