-- One run of the import benchmark: raw COPY, then fleet.device_import, each
-- into an empty table after a checkpoint.
\set QUIET on
SET client_min_messages = warning;
TRUNCATE raw_devices;
TRUNCATE fleet.devices;
CHECKPOINT;
SELECT clock_timestamp() AS t0 \gset
COPY raw_devices FROM :'csv' WITH (FORMAT csv, HEADER);
INSERT INTO bench_results VALUES ('import', 'raw', :run, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz));

CHECKPOINT;
SET fleet.import_template = 'dtmi:com:example:Thermostat;1';
SELECT clock_timestamp() AS t0 \gset
COPY fleet.device_import FROM :'csv' WITH (FORMAT csv, HEADER);
INSERT INTO bench_results VALUES ('import', 'ours', :run, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz));
