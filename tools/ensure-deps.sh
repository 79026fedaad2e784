#!/usr/bin/env bash
# Installs the Debian packages pg_fleet builds, tests and demos with, when
# they are missing.  As root it runs apt-get; otherwise it names what to
# install and stops.
set -euo pipefail

packages=(
	make gcc                     # the build
	postgresql-15                # the server the tests and demo start
	postgresql-server-dev-15     # PGXS, pg_regress, pg_isolation_regress, the TAP modules
	postgresql-15-cron           # pg_cron, preloaded beside pg_fleet
	libpq-dev                    # the libpq tools in tools/
	libssl-dev                   # OpenSSL's SHA-256 for device keys
	libipc-run-perl              # TAP tests (PostgreSQL::Test::Cluster)
	mosquitto                    # the MQTT broker devices connect to
	mosquitto-dev                # its plugin headers (tools/fleet-mqtt)
	libmosquitto-dev             # the MQTT client library of tools/fleet-bridge
	openssl                      # the broker's test CA and certificate
)
# The Azure IoT device SDK test devices need Node.js and npm: Debian's,
# unless the machine has its own.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	packages+=(nodejs npm)
fi

missing=()
for package in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$package")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "pg_fleet needs these Debian packages: ${missing[*]}" >&2
	echo "Install them with:  sudo apt-get install ${missing[*]}" >&2
	exit 1
fi

echo "Installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
