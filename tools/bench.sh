#!/usr/bin/env bash
# make bench: each figure is ours against raw PostgreSQL doing the same rows
# in the same run on the same server, as a ratio (absolute times on shared
# machines are noise).  Each measurement is the median of BENCH_RUNS runs.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

build_and_install

bench=${PG_FLEET_BENCH_DIR:-/tmp/pg_fleet-bench}
port=${PG_FLEET_BENCH_PORT:-5498}
devices=${BENCH_DEVICES:-1000000}
runs=${BENCH_RUNS:-3}

# a server sized for bulk work, as one would run it in production
start_cluster "$bench" "$port" \
	"shared_buffers = 2GB" "max_wal_size = 8GB" "checkpoint_timeout = 30min" \
	"work_mem = 64MB" "maintenance_work_mem = 512MB" "synchronous_commit = on"

echo "generating $devices devices ..."
"$TOP/tools/gen-devices.sh" "$devices" | as_pg tee "$bench/devices.csv" >/dev/null

psql_bench() {
	cluster_psql "$bench" "$port" -v csv="$bench/devices.csv" -v runs="$runs" "$@"
}

psql_bench -f "$TOP/test/bench/setup.sql"
for run in $(seq 1 "$runs"); do
	echo "run $run of $runs ..."
	psql_bench -v run="$run" -f "$TOP/test/bench/import.sql"
done
for run in $(seq 1 "$runs"); do
	psql_bench -v run="$run" -f "$TOP/test/bench/export.sql"
done
psql_bench -f "$TOP/test/bench/report.sql"
