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

# engine_peak_memory JOB: the engine's largest private memory (RssAnon, kB)
# seen while JOB runs
engine_peak_memory() {
	local job=$1 pid peak=0 rss status
	pid=$(psql_bench -Atc "SELECT fleet_internal.engine_pid()")
	while :; do
		rss=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		[ "${rss:-0}" -gt "$peak" ] && peak=$rss
		status=$(psql_bench -Atc "SELECT status FROM fleet.jobs WHERE id = '$job'" 2>/dev/null || true)
		case "$status" in completed|failed|cancelled) break ;; esac
		sleep 0.05
	done
	echo "$peak"
}

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
# jobs: fan-out, a property job, command jobs through fleet-sim
psql_bench -f "$TOP/test/bench/jobs_setup.sql"
for run in $(seq 1 "$runs"); do
	psql_bench -v run="$run" -f "$TOP/test/bench/fanout.sql"
done
echo "property job over 1,000,000 devices ..."
psql_bench -v run=1 -f "$TOP/test/bench/property_job.sql" &
job_psql=$!
engine_peak_memory property-1 > "$bench/memory-1000000"
wait $job_psql

echo "property job over 10,000 devices ..."
psql_bench -c "SELECT fleet.create_job('{\"id\": \"small-1\", \"displayName\": \"Small\", \"group\": \"bench-small\", \"data\": [{\"type\": \"property\", \"target\": \"dtmi:bench:Small;1\", \"path\": \"level\", \"value\": 1}]}')" >/dev/null
engine_peak_memory small-1 > "$bench/memory-10000"

for connections in 2 8; do
	echo "command job over 100,000 devices, fleet-sim with $connections connections ..."
	# both sides start from a vacuumed table (the raw queue's is made afresh)
	psql_bench -c "VACUUM fleet.job_devices"
	psql_bench -c "SELECT fleet.create_job(jsonb_build_object('id', 'commands-$connections', 'displayName', 'Commands',
	    'group', 'bench-commands', 'data', '[{\"type\": \"command\", \"target\": \"dtmi:bench:Commands;1\", \"path\": \"reboot\"}]'::jsonb))" >/dev/null
	as_pg "$TOP/tools/fleet-sim/fleet-sim" -d "host=$bench port=$port user=postgres dbname=postgres" \
		-c "$connections" -i 3 -q > "$bench/fleet-sim-$connections.log"
	psql_bench -c "SELECT fleet.wait_for_job('commands-$connections', timeout => '10 minutes')" >/dev/null
	# the job's start (its deliveries are in place, as the raw queue's rows
	# are when its clock starts) to its end; queued to completed is reported too
	psql_bench -c "INSERT INTO bench_results
	                 SELECT 'commands, $connections connections', side, 1, extract(epoch FROM finished_at - since)
	                   FROM fleet.jobs, LATERAL (VALUES ('ours', started_at), ('ours, queued', queued_at)) v(side, since)
	                  WHERE id = 'commands-$connections'"

	psql_bench -c "TRUNCATE raw_queue" -c "INSERT INTO raw_queue (device_id, status)
	               SELECT id, 'queued' FROM fleet.devices WHERE template_id = 'dtmi:bench:Commands;1'" \
	           -c "VACUUM ANALYZE raw_queue"
	started=$(date +%s.%N)
	as_pg "$PG_BINDIR/pgbench" -n -h "$bench" -p "$port" -U postgres -c "$connections" -j "$connections" \
		-t $((100000 / 100 / connections)) -f "$TOP/test/bench/raw_queue.pgbench" postgres > "$bench/pgbench-$connections.log"
	finished=$(date +%s.%N)
	psql_bench -c "INSERT INTO bench_results VALUES ('commands, $connections connections', 'raw', 1, $finished - $started)"
done

echo "purging the property job ..."
psql_bench -f "$TOP/test/bench/purge.sql"

# the MQTT device endpoint, on the same server
source "$TOP/test/bench/mqtt_endpoint.sh"
# rollout controls: a rate held, the cost of retries
source "$TOP/test/bench/rollouts.sh"

psql_bench -f "$TOP/test/bench/report.sql"
echo "engine peak private memory: $(cat "$bench/memory-10000") kB for a 10,000-device job," \
	"$(cat "$bench/memory-1000000") kB for a 1,000,000-device job"
mqtt_report
rollouts_report

# on Citus, where it is installed: the same work on a single node and on a
# three-node cluster (tools/bench-citus.sh)
"$TOP/tools/bench-citus.sh"
