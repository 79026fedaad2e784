#!/usr/bin/env bash
# Builds pg_fleet's SQL scripts (run by the Makefile).
#
#   build-sql.sh install VERSION CATALOG... -- CODE...
#       the install script: the catalog (tables, types, sequences: what
#       holds data), then the code (functions, views, triggers, policies,
#       privileges)
#   build-sql.sh update FROM TO CODE...
#       the update script from FROM to TO: every policy dropped, the
#       migrations of every step between them (src/sql/updates/pg_fleet--A--B.sql, written by hand:
#       table changes, and the code that went away or changed its
#       signature), then the whole code reloaded, so that every function,
#       view, trigger, policy and privilege is exactly what a fresh install
#       of TO makes.
#
# Reloading the code is what TimescaleDB's update scripts do: CREATE becomes
# CREATE OR REPLACE (a function keeps its oid, so views, policies and users'
# own objects that depend on it stay), and every policy is dropped first and
# made again.  The install script itself never replaces anything.
set -euo pipefail

updates_dir=$(dirname "$0")/../src/sql/updates

case ${1:-} in
install)
	version=$2
	shift 2
	echo "-- pg_fleet $version: built by tools/build-sql.sh from src/sql; do not edit."
	echo "\\echo Use \"CREATE EXTENSION pg_fleet\" to load this file. \\quit"
	for f in "$@"; do
		[ "$f" = -- ] && continue
		printf '\n-- %s\n' "$f"
		cat "$f"
	done
	;;
update)
	from=$2 to=$3
	shift 3
	echo "-- pg_fleet $from to $to: built by tools/build-sql.sh from src/sql; do not edit."
	echo "\\echo Use \"ALTER EXTENSION pg_fleet UPDATE TO '$to'\" to load this file. \\quit"
	cat <<'EOF'

-- Every policy is made again by the code below (and a migration may drop
-- a function an old policy used).
DO $drop_policies$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT schemaname, tablename, policyname FROM pg_catalog.pg_policies
              WHERE schemaname IN ('fleet', 'fleet_internal')
    LOOP
        EXECUTE pg_catalog.format('DROP POLICY %I ON %I.%I', p.policyname, p.schemaname, p.tablename);
    END LOOP;
END
$drop_policies$;
EOF
	# the chain of migrations from "from" to "to", one step at a time
	at=$from
	while [ "$at" != "$to" ]; do
		step=$(ls "$updates_dir"/pg_fleet--"$at"--*.sql 2>/dev/null | head -n 1)
		if [ -z "$step" ]; then
			echo "build-sql.sh: no migration from $at toward $to in $updates_dir" >&2
			exit 1
		fi
		printf '\n-- %s\n' "$step"
		cat "$step"
		at=$(basename "$step" .sql)
		at=${at##*--}
	done
	for f in "$@"; do
		printf '\n-- %s (reloaded)\n' "$f"
		sed -E -e 's/^CREATE (FUNCTION|VIEW|TRIGGER) /CREATE OR REPLACE \1 /' "$f"
	done
	;;
*)
	echo "usage: build-sql.sh install VERSION FILE... | update FROM TO FILE..." >&2
	exit 2
	;;
esac
