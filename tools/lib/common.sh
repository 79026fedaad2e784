# Shared by make test, make demo and make bench: build and install, then run
# PostgreSQL as the postgres OS user when we are root (PostgreSQL refuses to
# run as root), as ourselves otherwise.

PG_BINDIR=/usr/lib/postgresql/15/bin
PG_CONFIG=$PG_BINDIR/pg_config
export PG_CONFIG
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if [ "$(id -u)" -eq 0 ]; then
	RUN_AS=(runuser -u postgres --)
else
	RUN_AS=()
fi

# as_pg CMD...: run a command as the user that owns the clusters
as_pg() {
	"${RUN_AS[@]}" "$@"
}

# build_and_install: compile, and install into the PostgreSQL 15 tree
build_and_install() {
	"$TOP/tools/ensure-deps.sh"
	make -C "$TOP" -s PG_CONFIG="$PG_CONFIG"
	if [ "$(id -u)" -eq 0 ] || [ -w "$("$PG_CONFIG" --pkglibdir)" ]; then
		make -C "$TOP" -s install PG_CONFIG="$PG_CONFIG" >/dev/null
	else
		echo "cannot install into $("$PG_CONFIG" --pkglibdir): run as root, or sudo make install first" >&2
		exit 1
	fi
}

# install_test_devices: the Azure IoT Node SDK devices of test/node, from
# the npm registry at the versions its lockfile pins (once; again when the
# lockfile changes)
install_test_devices() {
	local node_dir="$TOP/test/node"
	if [ ! -f "$node_dir/node_modules/.package-lock.json" ] ||
		[ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
		echo "Installing the Azure IoT Node SDK test devices (npm ci)"
		# the registry is a network away: a failed download is tried again
		local attempt
		for attempt in 1 2 3; do
			(cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) && return 0
			echo "npm ci failed (attempt $attempt of 3)" >&2
			sleep $((attempt * 5))
		done
		return 1
	fi
}

# fresh_dir DIR: an empty directory the cluster user owns
fresh_dir() {
	# a server left running there from an earlier run goes first
	if [ -f "$1/data/postmaster.pid" ]; then
		as_pg "$PG_BINDIR/pg_ctl" -D "$1/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$1"
	mkdir -p "$1"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres: "$1"
	fi
}

# start_cluster DIR PORT [SETTING...]: a throwaway server preloading pg_cron
# and pg_fleet, listening only on a socket in DIR
start_cluster() {
	local dir=$1 port=$2
	shift 2
	fresh_dir "$dir"
	as_pg "$PG_BINDIR/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
	{
		echo "shared_preload_libraries = 'pg_cron,pg_fleet'"
		echo "cron.database_name = 'postgres'"
		# pg_cron runs its jobs in background workers: the server listens on a socket only
		echo "cron.use_background_workers = on"
		echo "max_worker_processes = 20"
		echo "port = $port"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		for setting in "$@"; do echo "$setting"; done
	} | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
	as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
	trap "stop_cluster '$dir'" EXIT
}

stop_cluster() {
	as_pg "$PG_BINDIR/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}

# cluster_psql DIR PORT ARGS...: psql on the throwaway server
cluster_psql() {
	local dir=$1 port=$2
	shift 2
	as_pg "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"
}
