-- Benchmark set-up: the extension, a template, and the raw baselines' tables.
CREATE EXTENSION pg_fleet;
\set thermostat `cat test/data/thermostat-1.json`
SELECT fleet.import_template(:'thermostat') \gset
CREATE TABLE bench_results (benchmark text, side text, run int, seconds float8);
-- raw import baseline: the same file into a plain table with the same primary key
CREATE TABLE raw_devices (id text PRIMARY KEY, display_name text);
