-- One run of the export benchmark: the same rows (with their keys) from a
-- plain table, then through fleet.export_devices(), both to /dev/null.
\set QUIET on
SET client_min_messages = warning;
SELECT to_regclass('raw_export') IS NULL AS need_raw_export \gset
\if :need_raw_export
CREATE TABLE raw_export AS SELECT * FROM fleet.export_devices();
VACUUM ANALYZE raw_export;
\endif
SELECT clock_timestamp() AS t0 \gset
COPY raw_export TO '/dev/null' WITH (FORMAT csv, HEADER);
INSERT INTO bench_results VALUES ('export', 'raw', :run, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz));

SELECT clock_timestamp() AS t0 \gset
COPY (SELECT * FROM fleet.export_devices()) TO '/dev/null' WITH (FORMAT csv, HEADER);
INSERT INTO bench_results VALUES ('export', 'ours', :run, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz));
