-- Where pg_cron's entries are written, and where missed occurrences are
-- found.
--
-- The schedule table is the truth and pg_cron converges to it: every
-- change to a schedule counts one in fleet_internal.engine_state and wakes
-- the engine at commit; the engine then makes this database's entries (its
-- name and the "pg_fleet " prefix: see fleet_internal.schedule_cron_name)
-- exactly what the rows say, in one statement wherever pg_cron lives
-- (src/cron_bridge.c).  So an entry follows the outcome of the transaction
-- that changed its schedule, also when pg_cron lives in another database
-- and its write commits on its own; entries removed or changed by hand come
-- back within five minutes; and a database restored under another name in
-- the same cluster owns only its own entries.

-- C (src/cron_bridge.c): the database pg_cron keeps its entries in; refuses
-- when pg_cron is not loaded.
CREATE FUNCTION fleet_internal.cron_database()
RETURNS text
LANGUAGE c STABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cron_database';

-- C: makes this database's pg_cron entries the desired ones ([{jobname,
-- schedule, command, username}]); false when there is no pg_cron to update.
CREATE FUNCTION fleet_internal.cron_reconcile(desired jsonb)
RETURNS boolean
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cron_reconcile';

-- C: pg_cron's log of its runs of a command here since a time.
CREATE FUNCTION fleet_internal.cron_runs(command text, since timestamptz)
RETURNS jsonb
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cron_runs';

-- A schedule's pg_cron entry name (pg_cron keeps names as "name", 63
-- bytes): this database's name and the schedule's id, so that two
-- databases of one cluster (a copy restored beside its original, say)
-- never share an entry.
CREATE FUNCTION fleet_internal.schedule_cron_name(schedule_id text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN octet_length(n) <= 63 THEN n
                ELSE 'pg_fleet ' || left(schedule_id, 20) || ' ' || left(md5(n), 16) END
      FROM (SELECT format('pg_fleet %s %s', current_database(), schedule_id) AS n) x
$$;

-- What a schedule's entry runs: only the schedule id, nothing secret.
CREATE FUNCTION fleet_internal.schedule_cron_command(schedule_id text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT format('SELECT fleet.fire_scheduled_job(%L)', schedule_id) $$;

-- Schedules changed: the engine brings pg_cron in line after this commits.
CREATE FUNCTION fleet_internal.schedules_changed()
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE fleet_internal.engine_state SET cron_version = cron_version + 1;
    SELECT fleet_internal.wake_engine();
$$;

-- Refuses to enable a schedule without pg_cron, and warns when pg_cron is
-- set up so that it cannot run the command: by default it connects to
-- "localhost" over TCP, which a stock pg_hba.conf (Debian's among them)
-- answers with a password prompt pg_cron cannot fill in.
CREATE FUNCTION fleet_internal.require_cron(enabled boolean)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    host text := coalesce(current_setting('cron.host', true), 'localhost');
BEGIN
    IF NOT enabled THEN
        RETURN;
    END IF;
    PERFORM fleet_internal.cron_database();
    IF coalesce(current_setting('cron.use_background_workers', true), 'off') <> 'on' AND host NOT LIKE '/%' THEN
        RAISE WARNING 'pg_cron runs scheduled jobs over a connection to "%", which may ask for a password it does not have', host
            USING DETAIL = 'cron.use_background_workers is off, so pg_cron connects as the schedule''s role like any client; if pg_hba.conf asks for a password there, every run fails with "connection failed".',
                  HINT = 'Set cron.use_background_workers = on (and max_worker_processes high enough) or cron.host to the server''s socket directory, and restart.';
    END IF;
END;
$$;

-- Brings pg_cron in line with the schedules, when they changed or every
-- five minutes (an entry removed or changed by hand comes back); after a
-- failure, once a minute.  Each enabled schedule's entry points at its next
-- occurrence and runs as its last changer; one whose last occurrence just
-- fired keeps its entry two minutes more, so pg_cron does not report the
-- run it is finishing as cancelled.
CREATE FUNCTION fleet_internal.reconcile_cron(at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_ts  timestamptz := fleet_internal.moment(at);
    state   fleet_internal.engine_state;
    desired jsonb;
    message text;
BEGIN
    SELECT s.* INTO state FROM fleet_internal.engine_state s;
    IF (state.cron_version = state.cron_synced_version AND state.cron_reconciled_at > now_ts - interval '5 minutes'
        AND NOT coalesce(state.cron_recheck_at <= now_ts, false))
       OR (state.cron_error IS NOT NULL AND state.cron_reconciled_at > now_ts - interval '1 minute') THEN
        RETURN;
    END IF;
    -- (read after the version: a change committed meanwhile counts again)
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'jobname', fleet_internal.schedule_cron_name(s.id),
               'schedule', to_char(s.fire_at AT TIME ZONE 'UTC', 'FMMI FMHH24 FMDD FMMM') || ' *',
               'command', fleet_internal.schedule_cron_command(s.id),
               'username', s.changed_by)), '[]')
      INTO desired
      FROM (SELECT sj.id, sj.changed_by,
                   CASE WHEN sj.next_run_at IS NOT NULL THEN sj.next_run_at
                        WHEN sj.last_occurrence BETWEEN now_ts - interval '2 minutes' AND now_ts + interval '1 minute'
                        THEN sj.last_occurrence END AS fire_at
              FROM fleet.scheduled_jobs sj
             WHERE sj.enabled) s
     WHERE s.fire_at IS NOT NULL;
    BEGIN
        -- without pg_cron there is nothing to bring in line, and no
        -- schedule could be made (fleet_internal.require_cron)
        IF current_setting('cron.database_name', true) IS NOT NULL THEN
            PERFORM fleet_internal.cron_reconcile(desired);
        END IF;
        -- a kept final entry goes two minutes after its occurrence
        UPDATE fleet_internal.engine_state
           SET cron_synced_version = state.cron_version, cron_reconciled_at = now_ts, cron_error = NULL,
               cron_recheck_at = (SELECT min(sj.last_occurrence) + interval '2 minutes' + interval '1 second'
                                    FROM fleet.scheduled_jobs sj
                                   WHERE sj.enabled AND sj.next_run_at IS NULL
                                     AND sj.last_occurrence BETWEEN now_ts - interval '2 minutes'
                                                                AND now_ts + interval '1 minute');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
        UPDATE fleet_internal.engine_state SET cron_reconciled_at = now_ts, cron_error = message;
        IF message IS DISTINCT FROM state.cron_error THEN
            RAISE WARNING 'pg_fleet engine could not bring pg_cron in line with the schedules: %', message
                USING HINT = 'It tries again every minute; fleet.engine_status shows the error until it succeeds.';
        END IF;
    END;
END;
$$;

-- Schedules whose occurrence passed unfired: recorded as missed (or failed
-- with pg_cron's reason), and moved on to the next occurrence.  A schedule
-- the engine cannot move on (say, a row restored from a newer version) is
-- disabled with the reason; the others go on.
CREATE FUNCTION fleet_internal.check_schedules(at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_ts  timestamptz := fleet_internal.moment(at);
    overdue text;
    message text;
BEGIN
    FOR overdue IN
        SELECT sj.id FROM fleet.scheduled_jobs sj
         WHERE sj.enabled AND sj.next_run_at < now_ts - current_setting('fleet.schedule_misfire_grace')::interval
           FOR UPDATE SKIP LOCKED
    LOOP
        BEGIN
            PERFORM fleet_internal.schedule_advance(overdue, now_ts);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            UPDATE fleet.scheduled_jobs sj SET enabled = false, next_run_at = NULL, error = message
             WHERE sj.id = overdue;
            PERFORM fleet_internal.schedules_changed();
            RAISE WARNING 'pg_fleet engine: scheduled job "%" was disabled: %', overdue, message
                USING HINT = 'Fix it with fleet.update_scheduled_job(), which enables it again.';
        END;
    END LOOP;
END;
$$;

