#!/usr/bin/env bash
# Imports every DTDL model file of a model repository laid out as the
# public IoT Plug and Play repository is (github Azure/iot-plugandplay-models:
# dtmi/<segments>-<version>.json), each after the models it uses, into a
# scratch database, and reports how many DTDL v2 files pg_fleet accepts and
# whether each accepted template's capability count matches what its JSON
# declares (counted here independently of pg_fleet's parser).  The
# repository is not part of pg_fleet: bring it yourself, for example
#   git clone --depth 1 https://github.com/Azure/iot-plugandplay-models
#   test/compat/dtdl_models.sh iot-plugandplay-models -h /tmp -p 5432
# Every refused file is listed with pg_fleet's message.
set -euo pipefail
dir=${1:?usage: dtdl_models.sh MODEL_DIR [psql connection options]}
shift
db=fleet_dtdl_check_$$
psql -X -q "$@" -d postgres -c "CREATE DATABASE $db" >/dev/null
trap 'psql -X -q "$@" -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
{
	echo "CREATE EXTENSION pg_fleet;"
	echo "CREATE TEMP TABLE model_file (path text, body text);"
	echo "COPY model_file FROM STDIN;"
	# one row per file, escaped for COPY's text format; a byte order mark
	# goes, as JSON parsers drop it
	find "$dir" -name '*.json' ! -name '*.expanded.json' -print0 | sort -z |
		perl -0 -ne 'chomp; my $p = $_; open(my $f, "<:raw", $p) or die "$p: $!"; local $/; my $b = <$f>;
			$b =~ s/^\xEF\xBB\xBF//; $b =~ s/\\/\\\\/g; $b =~ s/\t/\\t/g; $b =~ s/\n/\\n/g; $b =~ s/\r/\\r/g;
			$p =~ s/\\/\\\\/g; print "$p\t$b\n";'
	echo '\.'
	cat "$(dirname "$0")/dtdl_models.sql"
} | psql -X -q -v ON_ERROR_STOP=1 "$@" -d "$db"
