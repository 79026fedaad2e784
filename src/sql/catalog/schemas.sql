-- pg_fleet install script, built by the Makefile from src/sql/catalog/*.sql
-- (what holds data: created once, changed only by the migrations in
-- src/sql/updates/) and src/sql/*.sql (functions, views, triggers,
-- policies and privileges: reloaded whole by every update script).
-- Every function sets search_path = pg_catalog, pg_temp and names our own
-- objects schema-qualified, as "Security Considerations for Extensions" asks.

-- The schema fleet is created by CREATE EXTENSION (schema = fleet in the
-- control file) and holds the API; nothing here may live anywhere else.
COMMENT ON SCHEMA fleet IS 'pg_fleet: bulk device management (devices, templates, groups, import/export, jobs)';
