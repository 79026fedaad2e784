-- Run after setup on Citus only (test/citus/t/002_same_answers.pl): the
-- tables spread over the workers before any test writes a row, then every
-- other test as on one server.
SELECT layout, count(*) AS tables FROM fleet.distribute() GROUP BY 1 ORDER BY 1;
SELECT count(*) FILTER (WHERE changed) AS changed_again FROM fleet.distribute();
