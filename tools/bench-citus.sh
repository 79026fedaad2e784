#!/usr/bin/env bash
# make bench, where Citus is installed (and "make bench-citus" alone): the
# same work on a single node and on a Citus cluster of a coordinator and two
# workers on this machine, in the same run, each figure the distributed
# side's time (or rate) against the single node's.  On one machine the
# cluster pays its overhead (three servers, connections between them,
# one connection per node in a job's steps) without gaining hardware: the
# ratios say what distribution costs, not what it gains (README, "Scaling
# out on Citus").
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/citus.control" ]; then
	echo "Citus benchmarks: skipped (the citus extension is not installed)"
	exit 0
fi
build_and_install

root=${PG_FLEET_BENCH_CITUS_DIR:-/tmp/pg_fleet-bench-citus}
base_port=${PG_FLEET_BENCH_CITUS_PORT:-5510}
devices=${BENCH_CITUS_DEVICES:-1000000}
command_devices=${BENCH_CITUS_COMMAND_DEVICES:-20000}
fresh_dir "$root"

# the nodes: single, coordinator, worker1, worker2 (one cluster each)
nodes=(single coordinator worker1 worker2)
port_of() {
	local i
	for i in "${!nodes[@]}"; do [ "${nodes[$i]}" = "$1" ] && echo $((base_port + i)); done
}
start_node() {
	local name=$1 preload=$2 dir="$root/$1"
	as_pg mkdir -p "$dir"
	as_pg "$PG_BINDIR/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
	{
		echo "shared_preload_libraries = '$preload'"
		echo "cron.database_name = 'postgres'"
		echo "cron.use_background_workers = on"
		echo "max_worker_processes = 20"
		echo "max_connections = 200"
		echo "port = $(port_of "$name")"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "shared_buffers = 1GB"
		echo "max_wal_size = 8GB"
		echo "checkpoint_timeout = 30min"
	} | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
	as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}
stop_all() {
	local name
	for name in "${nodes[@]}"; do
		as_pg "$PG_BINDIR/pg_ctl" -D "$root/$name/data" -m fast -w stop >/dev/null 2>&1 || true
	done
}
trap stop_all EXIT
node_psql() {
	local name=$1
	shift
	as_pg "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$root/$name" -p "$(port_of "$name")" -U postgres -d postgres "$@"
}

start_node single 'pg_cron,pg_fleet'
for name in coordinator worker1 worker2; do
	start_node "$name" 'citus,pg_cron,pg_fleet'
	node_psql "$name" -c 'CREATE EXTENSION citus'
done
node_psql coordinator -c "SELECT citus_set_coordinator_host('$root/coordinator', $(port_of coordinator))" >/dev/null
for name in worker1 worker2; do
	node_psql coordinator -c "SELECT citus_add_node('$root/$name', $(port_of "$name"))" >/dev/null
done

echo "generating $devices devices ..."
"$TOP/tools/gen-devices.sh" "$devices" | as_pg tee "$root/devices.csv" >/dev/null
thermostat=$(cat "$TOP/test/data/thermostat-1.json")

# seconds SIDE SQL: how long SQL takes on SIDE (its coordinator)
seconds() {
	local side=$1 sql=$2 start end
	start=$(date +%s.%N)
	node_psql "$side" -c "$sql" >/dev/null
	end=$(date +%s.%N)
	awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }'
}
# wait_job SIDE JOB: seconds until JOB is completed
wait_job() {
	node_psql "$1" -Atc "SELECT fleet.wait_for_job('$2', timeout => interval '1 hour')" >/dev/null
}

declare -A import_s property_s command_rate
for side in single coordinator; do
	echo "== $side"
	node_psql "$side" -c 'CREATE EXTENSION pg_fleet' -c "SELECT fleet.import_template(\$t\$$thermostat\$t\$)" >/dev/null
	node_psql "$side" -c "SELECT fleet.import_template('{\"@id\": \"dtmi:bench:Commands;1\", \"@type\": \"Interface\",
	    \"@context\": \"dtmi:dtdl:context;2\", \"contents\": [{\"@type\": \"Command\", \"name\": \"reboot\"}]}')" >/dev/null
	if [ "$side" = coordinator ]; then
		node_psql "$side" -c 'SELECT count(*) FROM fleet.distribute()' >/dev/null
	fi
	import_s[$side]=$(seconds "$side" "SET fleet.import_template = 'dtmi:com:example:Thermostat;1';
	    COPY fleet.device_import FROM '$root/devices.csv' WITH (FORMAT csv, HEADER match)")
	echo "import of $devices devices: ${import_s[$side]} s"
	node_psql "$side" -c "UPDATE fleet.devices SET template_id = 'dtmi:bench:Commands;1'
	                        WHERE id <= 'thermostat-$(printf '%07d' "$command_devices")'" \
		-c "SELECT fleet.create_device_group('all', 'All', 'dtmi:com:example:Thermostat;1')" \
		-c "SELECT fleet.create_device_group('commands', 'Commands', 'dtmi:bench:Commands;1')" \
		-c 'VACUUM ANALYZE fleet.devices' >/dev/null
	start=$(date +%s.%N)
	node_psql "$side" -c "SELECT fleet.create_job('{\"id\": \"property\", \"displayName\": \"Property\", \"group\": \"all\",
	    \"batch\": {\"type\": \"percentage\", \"value\": 10},
	    \"data\": [{\"type\": \"property\", \"target\": \"dtmi:com:example:Thermostat;1\",
	              \"path\": \"targetTemperature\", \"value\": 21}]}')" >/dev/null
	wait_job "$side" property
	property_s[$side]=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
	echo "property job over $((devices - command_devices)) devices, fan-out included: ${property_s[$side]} s"
	node_psql "$side" -c "SELECT fleet.create_job('{\"id\": \"reboot\", \"displayName\": \"Reboot\", \"group\": \"commands\",
	    \"batch\": {\"type\": \"percentage\", \"value\": 100},
	    \"data\": [{\"type\": \"command\", \"target\": \"dtmi:bench:Commands;1\", \"path\": \"reboot\"}]}')" >/dev/null
	out=$(as_pg "$TOP/tools/fleet-sim/fleet-sim" \
		-d "host=$root/$side port=$(port_of "$side") user=postgres dbname=postgres" \
		--connections 2 --idle-exit 3 --quiet 2>&1)
	command_rate[$side]=$(printf '%s\n' "$out" | sed -n 's/.*: \([0-9.]*\) commands\/s.*/\1/p' | tail -n 1)
	echo "command job over $command_devices devices through fleet-sim (2 connections): ${command_rate[$side]} commands/s"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo
echo "Citus (coordinator + 2 workers, one machine) against a single node, same run:"
echo "  import of $devices devices:       $(ratio "${import_s[coordinator]}" "${import_s[single]}") the single node's time"
echo "  property job, fan-out included:   $(ratio "${property_s[coordinator]}" "${property_s[single]}") the single node's time"
echo "  command job through fleet-sim:    $(ratio "${command_rate[coordinator]}" "${command_rate[single]}") the single node's rate"
