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
	if [ "$target" = check-tap ] || [ "$target" = check-citus ]; then
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

# The Citus suite (test/citus/) needs the citus extension, which Debian
# does not package: it runs where Citus is installed ("make test-citus"
# runs it alone), and is said to be skipped elsewhere.
citus_installed() {
	[ -f "$("$PG_CONFIG" --sharedir)/extension/citus.control" ]
}
if [ "${1:-}" = citus ]; then
	if ! citus_installed; then
		echo "make test-citus: the citus extension is not installed for $("$PG_CONFIG" --version); install Citus 13.2 for PostgreSQL 15 first" >&2
		exit 1
	fi
	run_suite "Citus" check-citus
else
	run_suite "pg_regress" check-regress
	run_suite "isolation" check-isolation
	run_suite "TAP" check-tap
	if citus_installed; then
		run_suite "Citus" check-citus
	else
		echo "== Citus: skipped (the citus extension is not installed; see README, \"Scaling out\")"
	fi
fi

echo "pg_fleet: $passed passed, $failed failed"
exit $status
