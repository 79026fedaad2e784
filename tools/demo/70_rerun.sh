# Rerun on the failed devices: a new job over exactly those 300, answered
# this time.
demo_psql -a <<'SQL'
SELECT fleet.rerun_job('max-min-report') ->> 'id' AS rerun;
SQL
fleet_sim --connections 1 --idle-exit 2 --quiet
demo_psql -a <<'SQL'
SELECT fleet.wait_for_job('max-min-report-rerun');
SELECT fleet.get_job('max-min-report-rerun') -> 'progress' AS progress;
SELECT id, job_type, status, total, completed, failed, pending FROM fleet.recent_jobs ORDER BY created_at;
SQL
