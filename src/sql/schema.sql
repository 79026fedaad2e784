-- pg_fleet install script, built from src/sql/*.sql by the Makefile.
-- Every function sets search_path = pg_catalog, pg_temp and names our own
-- objects with the fleet. prefix, as "Security Considerations for
-- Extensions" asks.

\echo Use "CREATE EXTENSION pg_fleet" to load this file. \quit

-- The schema is created by CREATE EXTENSION (schema = fleet in the control
-- file); nothing here may live anywhere else.
COMMENT ON SCHEMA fleet IS 'pg_fleet: bulk device management (devices, templates, groups, import/export, jobs)';
