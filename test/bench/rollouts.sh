# Rollout controls under load (sourced by tools/bench.sh, on its server,
# after the MQTT endpoint's part, whose 10,000-device groups it reuses):
#
#   - the rate held: a property job over 10,000 devices at 6,000 devices a
#     minute runs a little over a minute and a half; the devices it
#     dispatched in its busiest and in its quietest full minute, against
#     the rate it was given (the engine holds it within 5 %)
#   - the engine's cost of a retry: a command job over 10,000 devices
#     answered by fleet-sim, 10 % of answers failing, without retries and
#     with one retry of each failure (no backoff); the time the retries
#     add, per retried device, against the time a device costs without
echo "rollouts: a rate held, and the cost of retries ..."
psql_bench -q -c "SELECT fleet.create_job('{\"id\": \"rated\", \"displayName\": \"Rated\", \"group\": \"bench-small\",
    \"data\": [{\"type\": \"property\", \"target\": \"dtmi:bench:Small;1\", \"path\": \"level\", \"value\": 7}],
    \"rollout\": {\"maximumPerMinute\": 6000}}') IS NOT NULL" >/dev/null
sleep 100
read -r rate_most rate_fewest rate_dispatched < <(psql_bench -F ' ' -Atc "
    WITH windows AS (
        SELECT (SELECT sum(d.devices) FROM fleet_internal.job_dispatches d
                 WHERE d.job_id = 'rated' AND d.at >= w.at AND d.at < w.at + interval '1 minute') AS devices,
               w.at + interval '1 minute' <= (SELECT max(d.at) FROM fleet_internal.job_dispatches d WHERE d.job_id = 'rated') AS full_minute
          FROM fleet_internal.job_dispatches w WHERE w.job_id = 'rated')
    SELECT max(devices), min(devices) FILTER (WHERE full_minute),
           (SELECT sum(devices) FROM fleet_internal.job_dispatches WHERE job_id = 'rated')
      FROM windows")

retry_job() {
	local id=$1 rollout=$2
	psql_bench -c "VACUUM fleet.job_devices" >/dev/null
	psql_bench -q -c "SELECT fleet.create_job(jsonb_build_object('id', '$id', 'displayName', 'Retry bench',
	    'group', 'bench-mqtt-sql', 'data', '[{\"type\": \"command\", \"target\": \"dtmi:bench:Mqtt;1\", \"path\": \"reboot\"}]'::jsonb,
	    'rollout', '$rollout'::jsonb)) IS NOT NULL" >/dev/null
	as_pg "$TOP/tools/fleet-sim/fleet-sim" -d "host=$bench port=$port user=postgres dbname=postgres" \
		-c 2 -i 2 -q -f 10 > "$bench/fleet-sim-$id.log"
	psql_bench -c "SELECT fleet.wait_for_job('$id', timeout => '10 minutes')" >/dev/null
	psql_bench -Atc "SELECT extract(epoch FROM finished_at - started_at) FROM fleet.jobs WHERE id = '$id'"
}
plain_times=() retried_times=()
for run in $(seq 1 "$runs"); do
	plain_times+=("$(retry_job "no-retry-$run" '{}')")
	retried_times+=("$(retry_job "retry-$run" '{"retries": [{"failureType": "FAILED", "numberOfRetries": 1, "backoff": {"base": 0}}]}')")
done
plain_s=$(printf '%s\n' "${plain_times[@]}" | median)
retried_s=$(printf '%s\n' "${retried_times[@]}" | median)
retried_devices=$(psql_bench -Atc "SELECT count(*) / $runs FROM fleet.job_device_attempts WHERE job_id LIKE 'retry-%'")

rollouts_report() {
	echo
	echo "Rollouts (medians of $runs runs for the retries):"
	printf '  %-62s %s\n' "rate held, 6,000 devices a minute configured" \
		"busiest minute $rate_most, quietest full minute $rate_fewest ($(awk -v a="$rate_fewest" -v b="$rate_most" 'BEGIN { printf "%.3fx to %.3fx", a / 6000, b / 6000 }') of the rate; $rate_dispatched dispatched)"
	printf '  %-62s %7.2fs %7.2fs\n' "command job, 10,000 devices, 10 % failing: one retry vs none" "$retried_s" "$plain_s"
	echo "  $retried_devices devices retried a run: $(awk -v r="$retried_s" -v p="$plain_s" -v n="$retried_devices" \
		'BEGIN { printf "%.0f us of job time per retried device, %.0f us per device without retries", (r - p) * 1e6 / (n > 0 ? n : 1), p * 1e6 / 10000 }')"
}
