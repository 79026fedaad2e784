#!/usr/bin/env bash
# gen-devices.sh COUNT [--with-bad-rows]: an IoT Central device CSV of COUNT
# thermostats on stdout, with CRLF line ends and quoted names as IoT Central
# writes them; --with-bad-rows appends rows IoT Central would refuse.
set -euo pipefail
count=${1:?usage: gen-devices.sh COUNT [--with-bad-rows]}
bad=${2:-}

awk -v count="$count" -v bad="$bad" 'BEGIN {
	printf "IOTC_DEVICEID,IOTC_DEVICENAME\r\n"
	for (i = 1; i <= count; i++)
		printf "thermostat-%07d,\"Thermostat %d, floor %d\"\r\n", i, i, (i % 12) + 1
	if (bad == "--with-bad-rows") {
		printf "thermostat-0000042,A repeat of an earlier line\r\n"
		printf "thermostat %07d,Has a space\r\n", count + 1
		printf "thermostat_%07d,Has an underscore\r\n", count + 2
		printf ",No id at all\r\n"
	}
}'
