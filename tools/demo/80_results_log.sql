-- The results log of the command job, as a CSV file.
\copy (SELECT * FROM fleet.job_results('max-min-report')) TO 'max-min-report-results.csv' WITH (FORMAT csv, HEADER)
\! head -n 4 max-min-report-results.csv
\! echo "... $(($(wc -l < max-min-report-results.csv) - 1)) devices in $(pwd)/max-min-report-results.csv"
