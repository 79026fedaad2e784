-- pg_fleet 0.2 to 0.3: the changes to what holds data, and the code that
-- went away or changed its signature.  The code itself is reloaded after
-- this by the update script (tools/build-sql.sh), and every policy was
-- dropped before it, to be made again.  (IF EXISTS: from 0.1, the step to
-- 0.2 has already dropped what changed its signature there.)

-- import_template() takes the template's id (IoT Central's form has it in
-- the URL, not the body)
DROP FUNCTION IF EXISTS fleet.import_template(jsonb);

-- creating a job or a schedule takes the id the REST API has in its URL
DROP FUNCTION IF EXISTS fleet.save_job(jsonb);
DROP FUNCTION IF EXISTS fleet.create_job(jsonb);
DROP FUNCTION IF EXISTS fleet.create_scheduled_job(jsonb);

-- the staged rows carry the export file's keys and thumbprints
DROP FUNCTION IF EXISTS fleet_internal.device_import_staged_rows();

-- device groups keep IoT Central's description and query
ALTER TABLE fleet.device_groups ADD COLUMN description text, ADD COLUMN query text;

-- enrollment groups: IoT Central's display name, and enabled
ALTER TABLE fleet.enrollment_groups ADD COLUMN display_name text, ADD COLUMN enabled boolean NOT NULL DEFAULT true;
-- (fleet_internal.organization_enrollment_groups gains "enabled" at its
-- end: CREATE OR REPLACE VIEW below does that)

-- deployment manifests keep the organizations IoT Central's body names
ALTER TABLE fleet.edge_manifests ADD COLUMN organizations text[];
