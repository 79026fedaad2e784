#!/usr/bin/env bash
# Sends IoT Central REST request bodies, unedited, to the pg_fleet function
# that takes each (PUT /deviceTemplates/{id} -> fleet.import_template(body,
# id), PUT /jobs/{id} -> fleet.save_job(body, id), ...), in a scratch
# database, and reports which are accepted, and why the others are not.
# The bodies are not part of pg_fleet: gather them yourself from IoT
# Central's REST examples (github Azure/azure-rest-api-specs,
# specification/iotcentral/data-plane) and the az CLI's tests, and list
# them in a manifest, one per line:
#   <operation> TAB <id from the URL> TAB <file>
# where operation is one of PUT/PATCH + deviceTemplates, deviceGroups, jobs,
# scheduledJobs, organizations, deploymentManifests, enrollmentGroups, or
# "PUT enrollmentGroupCertificates" and "POST enrollmentGroupVerify" with
# "<group>/<entry>" as the id, e.g. "PUT jobs	myJobId	jobs_create.json".  The objects a body names
# (its group, the templates its data targets, a parent organization) are
# made first as stubs, since the examples do not include them: a stub
# template has exactly the capabilities the job's data names.
#   test/compat/rest_bodies.sh MANIFEST -h /tmp -p 5432
# Run it against a server whose fleet.database_name is the database given
# last by -d (jobs and schedules are made there), with pg_cron installed.
set -euo pipefail
manifest=${1:?usage: rest_bodies.sh MANIFEST [psql connection options]}
shift
here=$(dirname "$0")
base=$(dirname "$manifest")
{
	echo "CREATE TEMP TABLE body (n int, operation text, url_id text, file text, body text);"
	echo "COPY body FROM STDIN;"
	n=0
	while IFS=$'\t' read -r operation url_id file; do
		[ -z "$operation" ] && continue
		case $operation in \#*) continue ;; esac
		n=$((n + 1))
		perl -e 'my ($n, $op, $id, $p) = @ARGV; open(my $f, "<:raw", $p) or die "$p: $!"; local $/; my $b = <$f>;
			$b =~ s/^\xEF\xBB\xBF//; for ($b, $id, $p) { s/\\/\\\\/g; s/\t/\\t/g; s/\n/\\n/g; s/\r/\\r/g; }
			print "$n\t$op\t$id\t$p\t$b\n";' "$n" "$operation" "$url_id" "$base/$file"
	done < "$manifest"
	echo '\.'
	cat "$here/rest_bodies.sql"
} | psql -X -q -v ON_ERROR_STOP=1 -v stub_certificate="$(cat "$here/../data/x509/signing-ca.pem")" "$@"
