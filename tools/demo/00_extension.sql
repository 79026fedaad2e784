-- pg_fleet in a server that preloads pg_cron and pg_fleet.
SHOW shared_preload_libraries;
CREATE EXTENSION pg_cron;   -- in cron.database_name, here this database
CREATE EXTENSION pg_fleet;
SELECT id, display_name FROM fleet.organizations;
SELECT id FROM fleet.enrollment_groups ORDER BY id;
