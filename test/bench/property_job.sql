-- A property job over the million thermostats in 10 % batches, queued to
-- completed, against the same updates by hand in ten committed chunks.
-- Each side starts from the same state: fleet.devices compacted (the
-- other side's updates leave a dead version of every device behind) and
-- job_devices vacuumed.
\set QUIET on
SET client_min_messages = warning;
VACUUM FULL fleet.devices;
VACUUM fleet.job_devices;
CHECKPOINT;
SELECT clock_timestamp() AS t0 \gset
SELECT format('UPDATE fleet.devices SET properties = properties || %L::jsonb WHERE template_id = %L AND id BETWEEN %L AND %L',
              jsonb_build_object('targetTemperature', :run), 'dtmi:com:example:Thermostat;1', min(id), max(id))
  FROM (SELECT id, ntile(10) OVER (ORDER BY id) AS chunk FROM fleet.devices
         WHERE template_id = 'dtmi:com:example:Thermostat;1') s
 GROUP BY chunk ORDER BY chunk \gexec
INSERT INTO bench_results VALUES ('property job', 'raw', :run, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz));

VACUUM FULL fleet.devices;
VACUUM fleet.job_devices;
CHECKPOINT;
SELECT clock_timestamp() AS t0 \gset
SELECT fleet.create_job(jsonb_build_object('id', 'property-' || :run, 'displayName', 'Property', 'group', 'bench-all',
    'batch', jsonb_build_object('type', 'percentage', 'value', 10),
    'data', jsonb_build_array(jsonb_build_object('type', 'property', 'target', 'dtmi:com:example:Thermostat;1',
                                                 'path', 'targetTemperature', 'value', 100 + :run)))) \gset
SELECT fleet.wait_for_job('property-' || :run, timeout => '30 minutes') AS status \gset
-- the job's start to its end, as the raw side has no fan-out (measured on
-- its own above); queued to completed, the fan-out included, is reported too
INSERT INTO bench_results
SELECT 'property job', 'ours', :run, extract(epoch FROM finished_at - started_at) FROM fleet.jobs WHERE id = 'property-' || :run
UNION ALL
SELECT 'property job', 'ours, queued', :run, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz);
