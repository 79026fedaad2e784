-- The medians, as ours against raw.  A job is timed from its start to its
-- end (its devices in place, as the raw sides' rows are when their clocks
-- start; the fan-out has its own line); queued_s adds the fan-out.
\pset footer off
-- time ratios for all; for command jobs the rate ratio (raw time / ours), as
-- the target is stated as a share of the raw rate
SELECT CASE WHEN b.benchmark IN ('import', 'export') THEN b.benchmark || ' 1,000,000 devices'
            WHEN b.benchmark = 'fanout' THEN 'job fan-out 1,000,000 devices'
            WHEN b.benchmark = 'property job' THEN 'property job 1,000,000 devices, 10 % batches'
            WHEN b.benchmark = 'purge' THEN 'purge of the property job''s 890,000 rows'
            ELSE b.benchmark || ', 100,000 devices' END AS benchmark,
       round(ours::numeric, 2) AS ours_s, round(raw::numeric, 2) AS raw_s,
       CASE WHEN b.benchmark LIKE 'commands%'
            THEN round((raw / ours)::numeric, 2) || 'x of raw rate'
            ELSE round((ours / raw)::numeric, 2) || 'x' END AS ratio,
       CASE b.benchmark WHEN 'import' THEN '<= 2x' WHEN 'export' THEN '<= 3x' WHEN 'fanout' THEN '<= 1.5x'
                        WHEN 'property job' THEN '<= 2x' WHEN 'purge' THEN '<= 3x' ELSE '>= 0.5x of raw rate' END AS target,
       -- jobs from queued to completed, their fan-out included
       round(queued::numeric, 2) AS queued_s,
       CASE WHEN b.benchmark LIKE 'commands%'
            THEN round((raw / queued)::numeric, 2) || 'x of raw rate'
            ELSE round((queued / raw)::numeric, 2) || 'x' END AS queued_ratio
  FROM (SELECT benchmark, min(ctid) AS first_seen,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE side = 'ours') AS ours,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE side = 'raw') AS raw,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE side = 'ours, queued') AS queued
          FROM bench_results GROUP BY benchmark) b
 ORDER BY b.first_seen;
