-- The medians, as ours against raw.
\pset footer off
SELECT b.benchmark || ' ' || to_char((SELECT count(*) FROM fleet.devices), 'FM9,999,999') || ' devices' AS benchmark,
       round(ours::numeric, 2) AS ours_s, round(raw::numeric, 2) AS raw_s,
       round((ours / raw)::numeric, 2) || 'x' AS ratio,
       CASE b.benchmark WHEN 'import' THEN '<= 2x' WHEN 'export' THEN '<= 3x' END AS target
  FROM (SELECT benchmark,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE side = 'ours') AS ours,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE side = 'raw') AS raw
          FROM bench_results GROUP BY benchmark) b
 ORDER BY b.benchmark DESC;
