-- pg_fleet 0.6 to 0.7: the changes to what holds data, and the code that
-- went away or changed its signature.  The code itself is reloaded after
-- this by the update script (tools/build-sql.sh), and every policy was
-- dropped before it, to be made again (now without subqueries: Citus).

-- Deleting a template, organization or edge manifest that devices use is
-- refused by the functions that delete them (Citus allows no trigger on
-- distributed and reference tables).  (IF EXISTS: an update from before
-- 0.6 dropped them already, and reloads only this version's code.)
DROP TRIGGER IF EXISTS refuse_delete_in_use ON fleet.device_templates;
DROP TRIGGER IF EXISTS refuse_delete_in_use ON fleet.organizations;
DROP TRIGGER IF EXISTS refuse_delete_in_use ON fleet.edge_manifests;
DROP FUNCTION IF EXISTS fleet_internal.refuse_delete_in_use();

-- A job's retried attempts lose their foreign key to the job, as its
-- devices' rows never had one (on Citus, a key from a distributed table to
-- a reference table serializes every step over one connection per node);
-- the purge of a deleted job deletes them.
ALTER TABLE fleet.job_device_attempts DROP CONSTRAINT job_device_attempts_job_id_fkey;
