# The MQTT device endpoint under load (sourced by tools/bench.sh, on its
# server): 10,000 device sessions kept by tools/fleet-mqtt-load (TLS, SAS
# tokens, answering direct methods at once), and in the same run the same
# work without the broker.
#
#   - a command job over the 10,000 connected devices, against the same job
#     over 10,000 other devices answered by fleet-sim through SQL (2
#     connections): the rate ratio, target >= 0.5x
#   - a property job over the 10,000: the rate its desired patches reach
#     the devices against the rate of the job itself, target >= 0.5x.  Each
#     is timed over its own span: the job from its start to its end, the
#     patches from the job's end (none may leave before its commit) to the
#     last received.  Also printed: the whole, from the job's start to the
#     last patch received, against the job alone.
#   - the broker's and the bridge's memory with no device connected (the
#     directory of every registered device included) and with 10,000 (and
#     so per connected device), and after the 1st and the 10th of ten
#     consecutive command jobs (no growth)
mqtt_dir="$bench/mqtt"
mqtt_port=${PG_FLEET_BENCH_MQTT_PORT:-18884}
mqtt_devices=10000

echo "MQTT endpoint: 10,000 connected devices ..."
psql_bench -q <<'SQL'
SET client_min_messages = warning;
SELECT fleet.import_template(jsonb_build_object('@id', 'dtmi:bench:Mqtt;1', '@type', 'Interface',
    '@context', 'dtmi:dtdl:context;2',
    'contents', jsonb_build_array(jsonb_build_object('@type', 'Command', 'name', 'reboot'),
                                  jsonb_build_object('@type', 'Property', 'name', 'level',
                                                     'schema', 'integer', 'writable', true)))) IS NOT NULL AS imported \gset
UPDATE fleet.devices SET template_id = 'dtmi:bench:Mqtt;1'
 WHERE id > 'thermostat-0200000' AND id <= 'thermostat-0220000';
SELECT fleet.create_device_group('bench-mqtt', '10,000 connected devices', 'dtmi:bench:Mqtt;1',
                                 '$.id <= "thermostat-0210000"') IS NOT NULL AS made \gset
SELECT fleet.create_device_group('bench-mqtt-sql', '10,000 devices answered through SQL', 'dtmi:bench:Mqtt;1',
                                 '$.id > "thermostat-0210000"') IS NOT NULL AS made \gset
SQL
as_pg mkdir -p "$mqtt_dir"
as_pg "$TOP/tools/mqtt/endpoint.sh" start "$mqtt_dir" "$mqtt_port" \
	"host=$bench port=$port user=postgres dbname=postgres" pg-fleet.localhost
trap "as_pg pkill -u postgres -f 'fleet-mqtt-load --ids' || true; as_pg '$TOP/tools/mqtt/endpoint.sh' stop '$mqtt_dir'; stop_cluster '$bench'" EXIT

# private memory (RssAnon, kB) of the broker and the bridge
endpoint_memory() {
	local total=0 pid rss
	for pid in $(cat "$mqtt_dir/mosquitto.pid") $(cat "$mqtt_dir/bridge.pid"); do
		rss=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		total=$((total + ${rss:-0}))
	done
	echo "$total"
}
# the devices connect once the broker knows them all
registered=$(psql_bench -Atc "SELECT count(*) FROM fleet.devices")
for _ in $(seq 1 600); do
	grep -q "directory of $registered devices" "$mqtt_dir/mosquitto.log" 2>/dev/null && break
	sleep 0.5
done
memory_none=$(endpoint_memory)

# the load: two processes of 5,000 sessions (each session takes three
# descriptors in libmosquitto, and a process may have 20,000 here)
psql_bench -Atc "SELECT id FROM fleet.devices WHERE id > 'thermostat-0200000' AND id <= 'thermostat-0210000'" |
	as_pg tee "$mqtt_dir/ids" >/dev/null
as_pg split -n l/2 -d "$mqtt_dir/ids" "$mqtt_dir/ids."
group_key=$(psql_bench -Atc "SELECT primary_key FROM fleet.enrollment_groups WHERE id = 'SAS-IoT-Devices'")
for part in 00 01; do
	as_pg bash -c "ulimit -n \$(ulimit -Hn); exec '$TOP/tools/fleet-mqtt-load/fleet-mqtt-load' --ids '$mqtt_dir/ids.$part' \
		--group-key '$group_key' --hub pg-fleet.localhost --port $mqtt_port --cafile '$mqtt_dir/ca.crt' \
		--status '$mqtt_dir/load.$part.status'" > "$mqtt_dir/load.$part.log" 2>&1 &
done
connected=0
for _ in $(seq 1 600); do
	connected=$(psql_bench -Atc "SELECT count(*) FROM fleet.devices WHERE endpoint_listens = 3")
	[ "$connected" -ge "$mqtt_devices" ] && break
	sleep 0.5
done
echo "  $connected devices connected and listening"
memory_connected=$(endpoint_memory)

# timed from the job's start to its end
job_seconds() {
	psql_bench -Atc "SELECT extract(epoch FROM finished_at - started_at) FROM fleet.jobs WHERE id = '$1'"
}
command_job() {
	psql_bench -c "SELECT fleet.create_job(jsonb_build_object('id', '$1', 'displayName', 'Reboot',
	    'group', '$2', 'data', '[{\"type\": \"command\", \"target\": \"dtmi:bench:Mqtt;1\", \"path\": \"reboot\"}]'::jsonb))" >/dev/null
}
median() {
	sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

sql_times=() mqtt_times=()
for run in $(seq 1 "$runs"); do
	psql_bench -c "VACUUM fleet.job_devices" >/dev/null
	command_job "mqtt-sql-$run" bench-mqtt-sql
	as_pg "$TOP/tools/fleet-sim/fleet-sim" -d "host=$bench port=$port user=postgres dbname=postgres" \
		-c 2 -i 2 -q > "$mqtt_dir/fleet-sim-$run.log"
	psql_bench -c "SELECT fleet.wait_for_job('mqtt-sql-$run', timeout => '10 minutes')" >/dev/null
	sql_times+=("$(job_seconds "mqtt-sql-$run")")
	psql_bench -c "VACUUM fleet.job_devices" >/dev/null
	command_job "mqtt-commands-$run" bench-mqtt
	psql_bench -c "SELECT fleet.wait_for_job('mqtt-commands-$run', timeout => '10 minutes')" >/dev/null
	mqtt_times+=("$(job_seconds "mqtt-commands-$run")")
done
sql_s=$(printf '%s\n' "${sql_times[@]}" | median)
mqtt_s=$(printf '%s\n' "${mqtt_times[@]}" | median)
mqtt_outcomes=$(psql_bench -Atc "SELECT string_agg(status || ' ' || n, ', ') FROM (SELECT status, count(*) n
    FROM fleet.job_devices WHERE job_id LIKE 'mqtt-commands-%' GROUP BY 1) s")

# the property job: patches received, as the load clients count them
patches_received() {
	local total=0 part n
	for part in 00 01; do
		n=$(tail -n 1 "$mqtt_dir/load.$part.status" | sed -n 's/.*patches=\([0-9]*\).*/\1/p')
		total=$((total + ${n:-0}))
	done
	echo "$total"
}
property_times=() patch_times=() whole_times=()
for run in $(seq 1 "$runs"); do
	before_00=$(tail -n 1 "$mqtt_dir/load.00.status" | sed -n 's/.*patches=\([0-9]*\).*/\1/p')
	before_01=$(tail -n 1 "$mqtt_dir/load.01.status" | sed -n 's/.*patches=\([0-9]*\).*/\1/p')
	share_00=$(wc -l < "$mqtt_dir/ids.00")
	share_01=$(wc -l < "$mqtt_dir/ids.01")
	psql_bench -c "SELECT fleet.create_job(jsonb_build_object('id', 'mqtt-level-$run', 'displayName', 'Level',
	    'group', 'bench-mqtt', 'data', jsonb_build_array(jsonb_build_object('type', 'property',
	    'target', 'dtmi:bench:Mqtt;1', 'path', 'level', 'value', $run))))" >/dev/null
	psql_bench -c "SELECT fleet.wait_for_job('mqtt-level-$run', timeout => '10 minutes')" >/dev/null
	for _ in $(seq 1 600); do
		[ "$(patches_received)" -ge $((before_00 + before_01 + mqtt_devices)) ] && break
		sleep 0.1
	done
	property_times+=("$(job_seconds "mqtt-level-$run")")
	read -r started finished < <(psql_bench -F ' ' -Atc "SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at)
	    FROM fleet.jobs WHERE id = 'mqtt-level-$run'")
	last_patch=$(awk -v b0=$((before_00 + share_00)) -v b1=$((before_01 + share_01)) '
		FNR == 1 { part++ }
		{ n = $5; sub("patches=", "", n); if (!(part in when) && n + 0 >= (part == 1 ? b0 : b1)) when[part] = $1 }
		END { print (when[1] > when[2] ? when[1] : when[2]) }' "$mqtt_dir/load.00.status" "$mqtt_dir/load.01.status")
	patch_times+=("$(awk -v a="$last_patch" -v b="$finished" 'BEGIN { print a - b }')")
	whole_times+=("$(awk -v a="$last_patch" -v b="$started" 'BEGIN { print a - b }')")
done
property_s=$(printf '%s\n' "${property_times[@]}" | median)
patch_s=$(printf '%s\n' "${patch_times[@]}" | median)
whole_s=$(printf '%s\n' "${whole_times[@]}" | median)

echo "  ten consecutive command jobs ..."
for job in $(seq 1 10); do
	command_job "mqtt-repeat-$job" bench-mqtt
	psql_bench -c "SELECT fleet.wait_for_job('mqtt-repeat-$job', timeout => '10 minutes')" >/dev/null
	[ "$job" = 1 ] && memory_repeat_1=$(endpoint_memory)
done
memory_repeat_10=$(endpoint_memory)

as_pg pkill -u postgres -f 'fleet-mqtt-load --ids' || true
as_pg "$TOP/tools/mqtt/endpoint.sh" stop "$mqtt_dir"
trap "stop_cluster '$bench'" EXIT

mqtt_report() {
	echo
	echo "MQTT device endpoint, 10,000 connected devices (TLS), medians of $runs runs:"
	printf '  %-62s %8s %8s %s\n' "" "endpoint" "baseline" "ratio (target)"
	printf '  %-62s %7.2fs %7.2fs %.2fx of the SQL rate (>= 0.5x)\n' \
		"command job, through the broker vs fleet-sim through SQL" "$mqtt_s" "$sql_s" "$(awk -v a="$sql_s" -v b="$mqtt_s" 'BEGIN { print a / b }')"
	printf '  %-62s %7.2fs %7.2fs %.2fx of the job'"'"'s rate (>= 0.5x)\n' \
		"property job: patches at the devices vs the job itself" "$patch_s" "$property_s" "$(awk -v a="$property_s" -v b="$patch_s" 'BEGIN { print a / b }')"
	printf '  %-62s %7.2fs %7.2fs %.2fx of the job'"'"'s rate\n' \
		"  the whole: the job's start to the last patch, vs the job" "$whole_s" "$property_s" "$(awk -v a="$property_s" -v b="$whole_s" 'BEGIN { print a / b }')"
	echo "  command deliveries through the broker: $mqtt_outcomes"
	echo "  broker + bridge private memory: $memory_none kB with $registered devices registered and none connected," \
		"$memory_connected kB with $connected connected" \
		"($(( (memory_connected - memory_none) * 1024 / (connected > 0 ? connected : 1) )) bytes a device);" \
		"$memory_repeat_1 kB after the 1st of ten command jobs, $memory_repeat_10 kB after the 10th"
}
