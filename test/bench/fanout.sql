-- Fanning a job out to its devices (resolving the group, cutting batches,
-- one job_devices row each) against a raw INSERT ... SELECT of the same rows
-- into the same table, in the same state (vacuumed), rolled back likewise.
\set QUIET on
SET client_min_messages = warning;
VACUUM fleet.job_devices;
CHECKPOINT;
BEGIN;
SELECT clock_timestamp() AS t0 \gset
INSERT INTO fleet.job_devices (job_id, device_id, batch)
SELECT 'raw-' || :run, d.id, ((row_number() OVER (ORDER BY d.id) - 1) / 89000 + 1)::int
  FROM fleet.devices d WHERE d.template_id = 'dtmi:com:example:Thermostat;1';
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) AS took \gset
ROLLBACK;
INSERT INTO bench_results VALUES ('fanout', 'raw', :run, :took);

VACUUM fleet.job_devices;
CHECKPOINT;
BEGIN;
SELECT fleet.save_job(jsonb_build_object('id', 'fanout-' || :run, 'displayName', 'Fan-out', 'group', 'bench-all',
    'batch', jsonb_build_object('type', 'percentage', 'value', 10),
    'data', jsonb_build_array(jsonb_build_object('type', 'deviceTemplateMigration', 'template', 'dtmi:bench:Small;1')))) \gset
SELECT clock_timestamp() AS t0 \gset
SELECT fleet_internal.engine_start_job(j, clock_timestamp()) FROM fleet.jobs j WHERE j.id = 'fanout-' || :run \gset
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) AS took \gset
ROLLBACK;   -- measured, not run
INSERT INTO bench_results VALUES ('fanout', 'ours', :run, :took);
