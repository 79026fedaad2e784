# ALTER EXTENSION pg_fleet UPDATE from every version users have, as
# pg_stat_statements' oldextversions and pgmq test it: the old version is
# installed from its frozen script (src/sql/versions/), filled through its
# own API (organizations, members, templates, devices, groups, jobs
# finished, running and stopped, a command job with claimed commands,
# schedules with pg_cron entries in another database), its engine runs on
# this library, and the update runs while a job does.  Then:
#  (a) the schema equals a fresh install of the current version, fact by
#      fact (test/upgrade/fingerprint.sql);
#  (b) every row survived and works: the running job and the command job
#      finish, a new job runs, a schedule fires, the exported keys and the
#      pg_cron entries are unchanged;
#  (c) the engine carried on across the update.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($current) = slurp_file('pg_fleet.control') =~ /default_version = '([^']+)'/;
my @old_versions = map { m/pg_fleet--([0-9.]+)\.sql$/ ? $1 : () } glob('src/sql/versions/pg_fleet--*.sql');
ok(scalar(@old_versions) > 0, "there are old versions to update from to $current: @old_versions");

my $fingerprint = slurp_file('test/upgrade/fingerprint.sql');

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,pg_fleet'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 20
fleet.engine_naptime = '100ms'
fleet.engine_chunk_size = 100
fleet.command_timeout = '10min'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', q{CREATE ROLE acme_admin LOGIN; CREATE ROLE a_operator LOGIN;});

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION pg_fleet');
my $fresh = $node->safe_psql('fresh', $fingerprint);

for my $old (@old_versions)
{
	my $db = 'from_' . ($old =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql('postgres', "ALTER SYSTEM SET fleet.database_name = '$db'; SELECT pg_reload_conf()");
	$node->safe_psql($db, "CREATE EXTENSION pg_fleet VERSION '$old'");
	ok($node->poll_query_until($db, q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'pg_fleet engine' AND datname = current_database()}),
		"$old: the engine runs on it");

	# filled through the old version's own API
	$node->safe_psql($db, q{
		SELECT fleet.create_organization('acme', 'Acme');
		SELECT fleet.create_organization('a', 'A', 'acme');
		SELECT fleet.grant_organization('acme', 'acme_admin', 'administrator');
		SELECT fleet.grant_organization('a', 'a_operator', 'operator');
		SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
		  "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true},
		               {"@type": "Command", "name": "blink"}]}');
		INSERT INTO fleet.device_import SELECT 'lamp-' || lpad(i::text, 4, '0'), 'Lamp ' || i FROM generate_series(1, 2000) i;
		UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1', organization_id = CASE WHEN id < 'lamp-1000' THEN 'root' ELSE 'a' END;
		SELECT fleet.create_device('edge-1', edge => true, organization => 'a');
		SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1');
		SELECT fleet.create_device_group('a-lamps', 'A lamps', 'dtmi:test:Lamp;1', organization => 'a');
		SELECT fleet.create_job('{"id": "finished", "displayName": "Finished", "group": "lamps",
		  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 1}]}');
	});
	is($node->safe_psql($db, q{SELECT fleet.wait_for_job('finished')}), 'completed', "$old: its engine runs its jobs");
	$node->safe_psql($db, q{
		SELECT fleet.save_job('{"id": "saved", "displayName": "Saved", "group": "lamps",
		  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 2}]}');
		SELECT fleet.create_job('{"id": "stopped", "displayName": "Stopped", "group": "a-lamps",
		  "batch": {"type": "number", "value": 10},
		  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 3}]}');
		SELECT fleet.stop_job('stopped');
		SELECT fleet.create_job('{"id": "blink", "displayName": "Blink", "group": "a-lamps",
		  "data": [{"type": "command", "target": "dtmi:test:Lamp;1", "path": "blink"}]}');
	});
	# (0.1 and 0.2 stored a misspelled key they ignored; 0.3 on refuse it)
	my $misspelled = ($old eq '0.1' || $old eq '0.2') ? '"cancelationThreshold": {"type": "number", "value": 5},' : '';
	$node->safe_psql($db, qq{
		SELECT fleet.create_scheduled_job('{"id": "nightly", "displayName": "Nightly", "group": "lamps", $misspelled
		  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 5}],
		  "schedule": {"start": "2099-01-01T02:00:00", "timeZone": "Europe/Berlin", "recurrence": "daily"}}');
	});
	ok($node->poll_query_until($db, q{SELECT count(*) > 0 FROM fleet.command_deliveries WHERE job_id = 'blink'}),
		"$old: a command job offers its commands");
	my $claimed = $node->safe_psql($db, q{SELECT count(*) FROM fleet.claim_commands('old-gateway', 300)});
	cmp_ok($claimed, '>', 0, "$old: a gateway claimed $claimed of them");

	my $keys = q{SELECT md5(string_agg(e::text, ',' ORDER BY e."IOTC_DEVICEID")) FROM fleet.export_devices() e};
	my $rows = q{SELECT (SELECT count(*) FROM fleet.organizations) || ' ' || (SELECT count(*) FROM fleet.organization_members)
	              || ' ' || (SELECT count(*) FROM fleet.devices) || ' ' || (SELECT count(*) FROM fleet.device_groups)
	              || ' ' || (SELECT count(*) FROM fleet.device_templates) || ' ' || (SELECT count(*) FROM fleet.device_operations)
	              || ' ' || (SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM fleet.jobs WHERE id <> 'during')
	              || ' ' || (SELECT count(*) FROM fleet.scheduled_jobs)};
	my $cron = q{SELECT string_agg(jobname || ' ' || schedule || ' ' || username || ' ' || command, E'\n' ORDER BY jobname)
	               FROM cron.job};
	my $keys_before = $node->safe_psql($db, $keys);
	my $rows_before = $node->safe_psql($db, $rows);
	my $cron_before = $node->safe_psql('postgres', $cron);

	# a job under way when the update runs
	$node->safe_psql($db, q{SELECT fleet.create_job('{"id": "during", "displayName": "During", "group": "lamps",
	  "batch": {"type": "number", "value": 50},
	  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 4}]}')});
	ok($node->poll_query_until($db, q{SELECT count(*) > 0 FROM fleet.job_devices WHERE job_id = 'during' AND status = 'completed'}),
		"$old: a job is under way");
	my ($update_rc, $update_out, $update_err) = $node->psql($db, 'ALTER EXTENSION pg_fleet UPDATE');
	is($update_rc, 0, "$old: ALTER EXTENSION pg_fleet UPDATE ran") or diag($update_err);
	if ($misspelled)
	{
		like($update_err, qr/scheduled job "nightly" had keys pg_fleet does not know/,
			"$old: the update names the schedule whose body had a key it never took");
	}
	else
	{
		unlike($update_err, qr/WARNING/, "$old: the update has nothing to warn about");
	}
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'pg_fleet'}), $current,
		"$old: updated to $current");

	# (c) the engine carries on
	is($node->safe_psql($db, q{SELECT fleet.wait_for_job('during', timeout => '120 seconds')}), 'completed',
		"$old: the job under way during the update completed");
	is($node->safe_psql($db, q{SELECT count(*) FROM fleet.devices WHERE properties ->> 'level' = '4'}), '2000',
		"$old: on every device");

	# (a) the schema is a fresh install's
	my $updated = $node->safe_psql($db, $fingerprint);
	my @diff = grep { my $l = $_; !grep { $_ eq $l } split /\n/, $fresh } split /\n/, $updated;
	push @diff, map { "missing: $_" } grep { my $l = $_; !grep { $_ eq $l } split /\n/, $updated } split /\n/, $fresh;
	is(scalar(@diff), 0, "$old: the updated schema equals a fresh install of $current, fact by fact")
	  or diag(join("\n", @diff[0 .. ($#diff < 30 ? $#diff : 29)]));

	# (b) every row survived, and works
	is($node->safe_psql($db, $rows), $rows_before, "$old: every organization, member, device, group, template, job and schedule survived");
	is($node->safe_psql($db, $keys), $keys_before, "$old: every exported key is unchanged");
	ok($node->poll_query_until($db, q{SELECT cron_synced_version = cron_version FROM fleet_internal.engine_state}),
		"$old: the engine brought pg_cron in line");
	is($node->safe_psql('postgres', $cron), $cron_before, "$old: pg_cron's entries are unchanged");
	is($node->safe_psql($db, q{SELECT fleet.complete_commands(array_agg(delivery_id), array_agg(200))
	                             FROM fleet.command_deliveries WHERE job_id = 'blink' AND status = 'claimed'}),
		$claimed, "$old: the commands claimed before the update are answered after it");
	is($node->safe_psql($db, q{SELECT count(fleet.complete_command(delivery_id, 200))
	                             FROM fleet.claim_commands('new-gateway', 10000)})
		 + $claimed, $node->safe_psql($db, q{SELECT count(*) FROM fleet.job_devices WHERE job_id = 'blink'}),
		"$old: the others are claimed and answered");
	is($node->safe_psql($db, q{SELECT fleet.wait_for_job('blink')}), 'completed', "$old: the command job completed");
	is($node->safe_psql($db, q{SELECT fleet.resume_job('stopped') ->> 'status'}), 'pending', "$old: the stopped job resumes");
	is($node->safe_psql($db, q{SELECT fleet.wait_for_job('stopped')}), 'completed', "$old: and completes");
	is($node->safe_psql($db, q{SELECT fleet.run_job('saved') ->> 'status'}), 'pending', "$old: the saved job runs");
	is($node->safe_psql($db, q{SELECT fleet.wait_for_job('saved')}), 'completed', "$old: and completes");
	is($node->safe_psql($db, q{SELECT fleet.get_scheduled_job('nightly') ? 'cancelationThreshold'}), 'f',
		"$old: and removed that key");
	my $fired = $node->safe_psql($db, q{SELECT fleet.fire_scheduled_job('nightly', '2099-01-01 01:00:01+00')});
	isnt($fired, '', "$old: the schedule fires");
	is($node->safe_psql($db, "SELECT fleet.wait_for_job('$fired')"), 'completed', "$old: and its job completes");
	is($node->safe_psql($db, q{SELECT created_by FROM fleet.jobs WHERE scheduled_job_id = 'nightly'}), 'postgres',
		"$old: as the schedule's creator");
	my ($rc, $out, $err) = $node->psql($db, q{SELECT fleet.create_job('{"displayName": "Theirs", "group": "lamps",
	  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 6}]}')},
		extra_params => [ '-U', 'a_operator' ]);
	like($err, qr/device group "lamps" does not exist/, "$old: members keep their organizations");
	# 0.1 had root's enrollment groups only; 0.2 made a pair per organization
	is($node->safe_psql($db, q{SELECT count(*) FROM fleet.enrollment_groups WHERE organization_id <> 'root'}),
		$old eq '0.1' ? '0' : '4',
		"$old: organizations keep the enrollment groups their keys derive from");
	# 0.4: the groups a database had are its organizations' defaults, and more can be made
	is($node->safe_psql($db, q{SELECT bool_and(organization_default AND attestation = 'symmetricKey') FROM fleet.enrollment_groups}), 't',
		"$old: its enrollment groups are the organizations' default ones");
	is($node->safe_psql($db, q{SELECT fleet.import_enrollment_group('adopted', '{"displayName": "Adopted", "type": "iot",
	    "organization": "a", "attestation": {"type": "symmetricKey"}}') ->> 'organization'}), 'a',
		"$old: another enrollment group can be made after the update");
}

$node->stop;
done_testing();
