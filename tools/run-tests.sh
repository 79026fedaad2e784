#!/usr/bin/env bash
# make test: from a fresh Debian machine to the result of every suite
# (pg_regress, isolation, TAP), each on its own temporary server.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

build_and_install
install_test_devices

# make install makes the tools callable by name, also where PostgreSQL's
# bindir is not on PATH (Debian)
if [ "$(id -u)" -eq 0 ]; then
	for tool in fleetctl fleet-sim fleet-bridge; do
		if ! env -i PATH=/usr/local/bin:/usr/bin:/bin "$tool" --version >/dev/null 2>&1; then
			echo "make install did not make $tool callable by name" >&2
			exit 1
		fi
	done
fi

# The suites run as the cluster user in a copy it owns.
work=${PG_FLEET_TEST_DIR:-/tmp/pg_fleet-test}
fresh_dir "$work"
tar -C "$TOP" --exclude=.git -cf - . | as_pg tar -C "$work" -xf -

passed=0
failed=0
status=0
log="$work/test-output.log"
: > "$log"

# run_suite NAME TARGET: run one make target, count its tests
run_suite() {
	local name=$1 target=$2 out rc=0
	echo "== $name"
	out=$(as_pg make -C "$work" -s PG_CONFIG="$PG_CONFIG" "$target" 2>&1) || rc=$?
	printf '%s\n' "$out" | tee -a "$log" | grep -E '^(ok|not ok|test |     |[0-9]+ of|All|Files=|Result|t/)' || true
	local ok bad
	if [ "$target" = check-tap ]; then
		# prove: "Files=2, Tests=11, ..." and "Failed 1/5 subtests" per failing file
		ok=$(printf '%s\n' "$out" | awk -F'Tests=' '/^Files=/ { split($2, a, ","); n += a[1] } END { print n + 0 }')
		bad=$(printf '%s\n' "$out" | awk '/Failed [0-9]+\/[0-9]+ subtests/ { split($2, a, "/"); n += a[1] } END { print n + 0 }')
		ok=$((ok - bad))
	else
		ok=$(printf '%s\n' "$out" | grep -cE '^(test|    ) .* \.\.\. ok' || true)
		bad=$(printf '%s\n' "$out" | grep -cE '\.\.\. FAILED' || true)
	fi
	if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
		bad=1     # the suite could not run at all
	fi
	passed=$((passed + ok))
	failed=$((failed + bad))
	if [ "$rc" -ne 0 ]; then
		status=1
		for diffs in "$work/regression.diffs" "$work/test/regression.diffs"; do
			[ -s "$diffs" ] && head -n 200 "$diffs"
		done
		for tap_log in "$work"/tmp_check/log/regress_log_*; do
			[ -f "$tap_log" ] && tail -n 40 "$tap_log"
		done
		echo "-- $name failed; everything is in $work"
	fi
	return 0
}

run_suite "pg_regress" check-regress
run_suite "isolation" check-isolation
run_suite "TAP" check-tap

echo "pg_fleet: $passed passed, $failed failed"
exit $status
