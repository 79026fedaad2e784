#!/usr/bin/env bash
# pg_fleet's MQTT device endpoint on this machine: mosquitto with the
# fleet_mqtt plugin (TLS on a loopback port, a unix socket for the bridge)
# and fleet-bridge, under DIR.  Run it as the user that owns DIR (tests and
# the demo run it as postgres).
#
#   endpoint.sh start DIR PORT CONNINFO [HUB [ID_SCOPE]]
#       makes DIR's CA and server certificate (openssl) and the bridge's
#       password the first time, writes DIR/mosquitto.conf, starts the
#       broker and the bridge; devices connect to localhost:PORT with
#       DIR/ca.crt as their CA
#   endpoint.sh stop DIR          stops both
#   endpoint.sh stop-bridge DIR   / start-bridge DIR: the bridge alone
#   endpoint.sh stop-broker DIR   / start-broker DIR: the broker alone
set -euo pipefail
# the bridge's password, the keys and the bridge's socket are for this user alone
umask 077

top=$(cd "$(dirname "$0")/../.." && pwd)
command=${1:?usage: endpoint.sh start|stop|start-bridge|stop-bridge|start-broker|stop-broker DIR ...}
dir=${2:?the directory of the endpoint}

# A CA and a server certificate for localhost and 127.0.0.1, made once.
make_certificates() {
	[ -f "$dir/server.crt" ] && return
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pg_fleet test CA" \
		-keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
		-keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$dir/server.ext"
	openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
		-days 3650 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
	chmod 600 "$dir/ca.key" "$dir/server.key"
}

start_broker() {
	rm -f "$dir/bridge.sock"
	# a socket per device: as many as this user may have
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	/usr/sbin/mosquitto -c "$dir/mosquitto.conf" -d
	for _ in $(seq 1 100); do
		[ -S "$dir/bridge.sock" ] && return
		sleep 0.1
	done
	echo "endpoint.sh: the broker did not start; see $dir/mosquitto.log" >&2
	exit 1
}

start_bridge() {
	# shellcheck disable=SC2046
	nohup "$top/tools/fleet-bridge/fleet-bridge" -d "$(cat "$dir/conninfo")" -s "$dir/bridge.sock" \
		-P "$dir/bridge.password" --hub "$(cat "$dir/hub")" -g "mqtt:$(cat "$dir/hub")" -v \
		>>"$dir/bridge.log" 2>&1 &
	echo $! > "$dir/bridge.pid"
}

stop_pid() {
	local file=$1 signal=${2:-TERM}
	[ -f "$file" ] || return 0
	local pid
	pid=$(cat "$file")
	kill "-$signal" "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	rm -f "$file"
}

case $command in
start)
	port=${3:?the TLS port devices connect to}
	conninfo=${4:?the database (libpq conninfo)}
	hub=${5:-pg-fleet.localhost}
	scope=${6:-0ne00FLEET}
	mkdir -p "$dir"
	chmod 700 "$dir"
	make_certificates
	chmod 644 "$dir/ca.crt"     # what devices are given
	[ -f "$dir/bridge.password" ] || (umask 077 && openssl rand -hex 24 > "$dir/bridge.password")
	printf '%s' "$conninfo" > "$dir/conninfo"
	printf '%s' "$hub" > "$dir/hub"
	printf '%s' "$scope" > "$dir/id_scope"
	cat > "$dir/mosquitto.conf" <<-EOF
		# pg_fleet's MQTT device endpoint (written by tools/mqtt/endpoint.sh)
		per_listener_settings false
		allow_anonymous false
		persistence false
		pid_file $dir/mosquitto.pid
		log_dest file $dir/mosquitto.log
		log_type error
		log_type warning
		log_type notice
		log_type information
		connection_messages false
		set_tcp_nodelay true
		# the bridge's session holds what devices sent while it was away
		queue_qos0_messages true
		max_queued_messages 1000000
		max_inflight_messages 1000
		plugin $top/tools/fleet-mqtt/fleet_mqtt.so
		plugin_opt_bridge_password $(cat "$dir/bridge.password")
		plugin_opt_hub_host_name $hub
		plugin_opt_id_scope $scope
		# devices: TLS on loopback (IoT Hub's MQTT port is 8883)
		listener $port 127.0.0.1
		cafile $dir/ca.crt
		certfile $dir/server.crt
		keyfile $dir/server.key
		# the bridge
		listener 0 $dir/bridge.sock
	EOF
	start_broker
	start_bridge
	;;
stop)
	stop_pid "$dir/bridge.pid"
	stop_pid "$dir/mosquitto.pid"
	;;
start-bridge) start_bridge ;;
stop-bridge) stop_pid "$dir/bridge.pid" "${3:-TERM}" ;;
start-broker) start_broker ;;
stop-broker) stop_pid "$dir/mosquitto.pid" ;;
*)
	echo "endpoint.sh: unknown command $command" >&2
	exit 2
	;;
esac
