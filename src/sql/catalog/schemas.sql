-- pg_fleet install script, built by the Makefile from src/sql/catalog/*.sql
-- (what holds data: created once, changed only by the migrations in
-- src/sql/updates/) and src/sql/*.sql (functions, views, triggers,
-- policies and privileges: reloaded whole by every update script).
-- Every function sets search_path = pg_catalog, pg_temp and names our own
-- objects schema-qualified, as "Security Considerations for Extensions" asks.

-- The schema fleet is created by CREATE EXTENSION (schema = fleet in the
-- control file) and holds the API: what users may call and read.
COMMENT ON SCHEMA fleet IS 'pg_fleet: bulk device management (devices, templates, groups, import/export, jobs)';

-- The engine's steps, triggers, helpers and bookkeeping live apart, as
-- TimescaleDB keeps _timescaledb_functions apart: a schema browser of fleet
-- shows the API only.  PUBLIC may not use it (src/sql/privileges.sql).
CREATE SCHEMA fleet_internal;
COMMENT ON SCHEMA fleet_internal IS 'pg_fleet''s internals: the engine, triggers and helpers; not an API';
