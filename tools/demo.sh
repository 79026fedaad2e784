#!/usr/bin/env bash
# make demo: a throwaway PostgreSQL with pg_cron and pg_fleet, and the
# product page's device story end to end.  Each step is a SQL file in
# tools/demo/, run in name order; later features add their own steps.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

build_and_install
install_test_devices

demo=${PG_FLEET_DEMO_DIR:-/tmp/pg_fleet-demo}
port=${PG_FLEET_DEMO_PORT:-5497}
start_cluster "$demo" "$port"
out="$demo/out"
as_pg mkdir -p "$out"

# the inputs: the public Thermostat model, and an IoT Central device CSV of
# 10,000 thermostats with a few rows IoT Central would refuse too
as_pg cp "$TOP/test/data/thermostat-1.json" "$out/thermostat-1.json"
as_pg cp "$TOP/test/data/iotc_rest_template.json" "$out/iotc_rest_template.json"
"$TOP/tools/gen-devices.sh" 10000 --with-bad-rows | as_pg tee "$out/devices.csv" >/dev/null

# each step is SQL run with psql, or a shell script sourced here (for the
# steps that run fleet-sim beside the SQL)
demo_psql() {
	(cd "$out" && cluster_psql "$demo" "$port" "$@")
}
fleet_sim() {
	as_pg "$TOP/tools/fleet-sim/fleet-sim" -d "host=$demo port=$port user=postgres dbname=postgres" "$@"
}
for step in "$TOP"/tools/demo/*; do
	echo
	echo "=== $(basename "$step" | sed 's/\.[a-z]*$//; s/^[0-9]*_//; s/_/ /g')"
	case "$step" in
		*.sql) demo_psql -a -f "$step" ;;
		*.sh) source "$step" ;;
	esac
done

echo
echo "The demo's files are in $out; the server is stopped."
