-- How SQL reaches the engine's worker (src/worker.c).

-- Wakes the engine when the current transaction commits: queued, stopped
-- and resumed jobs and completed commands are seen at once, not at the next
-- poll.  C: it looks no names up.
CREATE FUNCTION fleet.wake_engine()
RETURNS void
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'wake_engine';
COMMENT ON FUNCTION fleet.wake_engine() IS 'Wakes the job engine when the current transaction commits';

CREATE FUNCTION fleet.engine_pid()
RETURNS int
LANGUAGE c VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'engine_pid';
COMMENT ON FUNCTION fleet.engine_pid() IS 'The process id of the job engine''s background worker, or NULL when none runs';
