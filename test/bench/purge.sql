-- Purging a finished job: the property job's 890,000 device outcomes,
-- deleted by the engine a chunk per turn after fleet.delete_job(), against
-- one DELETE of the same rows (rolled back, so that ours has them to
-- delete).  Then the space they took: job_devices' size before, after the
-- purge and a VACUUM (autovacuum's work, done here at once), and after the
-- next job of the same size, which should reuse it rather than grow the
-- table.
\set QUIET on
SET client_min_messages = warning;
VACUUM fleet.job_devices;
CHECKPOINT;
SELECT pg_table_size('fleet.job_devices') AS size_before \gset

SELECT clock_timestamp() AS t0 \gset
BEGIN;
DELETE FROM fleet.job_devices WHERE job_id = 'property-1';
ROLLBACK;
INSERT INTO bench_results VALUES ('purge', 'raw', 1, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz));

VACUUM fleet.job_devices;
CHECKPOINT;
SELECT clock_timestamp() AS t0 \gset
SELECT fleet.delete_job('property-1') \gset
DO $$
BEGIN
    -- each statement here sees what the engine committed since the last
    WHILE EXISTS (SELECT 1 FROM fleet.jobs WHERE id = 'property-1') LOOP
        PERFORM pg_sleep(0.01);
    END LOOP;
END;
$$;
INSERT INTO bench_results VALUES ('purge', 'ours', 1, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz));

VACUUM fleet.job_devices;
SELECT pg_table_size('fleet.job_devices') AS size_purged \gset
SELECT fleet.create_job(jsonb_build_object('id', 'after-purge', 'displayName', 'After the purge', 'group', 'bench-all',
    'data', jsonb_build_array(jsonb_build_object('type', 'property', 'target', 'dtmi:com:example:Thermostat;1',
                                                 'path', 'targetTemperature', 'value', 5)))) \gset
SELECT fleet.wait_for_job('after-purge', timeout => '30 minutes') AS status \gset
SELECT pg_table_size('fleet.job_devices') AS size_next \gset
\set QUIET off
\echo job_devices: :size_before bytes with the property job, :size_purged after its purge and a VACUUM, :size_next after the next job of its size
