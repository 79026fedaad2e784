# A rate-limited job rides out restarts: its dispatches are committed
# rows, so after an immediate shutdown (and crash recovery) and after a
# clean restart the engine goes on at the same rate, never more in any
# minute, and every device is dealt with exactly once.  Maintenance
# windows hold across them too: a job whose window closed dispatches
# nothing, one whose window is open runs.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('rollout_restart');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'pg_cron,pg_fleet'\ncron.database_name = 'postgres'\n"
	  . "fleet.engine_naptime = '100ms'\n");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_fleet;
	SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
	  "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true}]}');
	INSERT INTO fleet.device_import SELECT 'lamp-' || lpad(i::text, 3, '0'), NULL FROM generate_series(1, 300) i;
	INSERT INTO fleet.device_import SELECT 'spot-' || lpad(i::text, 2, '0'), NULL FROM generate_series(1, 20) i;
	UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1';
	SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1', '$.id starts with "lamp-"');
	SELECT fleet.create_device_group('spots', 'Spots', 'dtmi:test:Lamp;1', '$.id starts with "spot-"');
	-- 120 a minute: 6 every 3 seconds
	SELECT fleet.create_job('{"id": "rated", "displayName": "Rated", "group": "lamps",
	  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 7}],
	  "rollout": {"maximumPerMinute": 120}}');
});

# windows of today and yesterday (UTC): one that closed twenty minutes
# ago, one open for two hours
$node->safe_psql('postgres', q{
	SELECT fleet.create_job(jsonb_build_object('id', id, 'displayName', id, 'group', 'spots',
	    'data', '[{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": 8}]'::jsonb,
	    'rollout', jsonb_build_object('maintenanceWindows', jsonb_build_array(jsonb_build_object(
	        'days', jsonb_build_array(to_char(now() AT TIME ZONE 'UTC', 'DY'),
	                                  to_char(now() AT TIME ZONE 'UTC' - interval '1 day', 'DY')),
	        'start', to_char(now() AT TIME ZONE 'UTC' - starts, 'HH24:MI'), 'duration', lasts)))))
	  FROM (VALUES ('closed', interval '30 minutes', 'PT10M'), ('open', interval '5 minutes', 'PT2H')) v(id, starts, lasts);
});

my $dispatched = q{SELECT coalesce(sum(devices), 0) FROM fleet_internal.job_dispatches WHERE job_id = 'rated'};
# (until some are dispatched)
$node->poll_query_until('postgres', "SELECT ($dispatched) >= 12") or die 'the job did not start';
sleep 5;
$node->stop('immediate');
$node->start;
sleep 8;
$node->restart;
$node->poll_query_until('postgres', "SELECT ($dispatched) >= 150") or die 'the job did not go on';

my $most = $node->safe_psql('postgres', q{
	SELECT max((SELECT sum(d.devices) FROM fleet_internal.job_dispatches d
	             WHERE d.job_id = 'rated' AND d.at >= w.at AND d.at < w.at + interval '1 minute'))
	  FROM fleet_internal.job_dispatches w WHERE w.job_id = 'rated'});
cmp_ok($most, '<=', 120, "no minute across the restarts held more than the rate ($most)");
my $by_devices = $node->safe_psql('postgres', q{
	SELECT max((SELECT count(*) FROM fleet.job_devices d
	             WHERE d.job_id = 'rated' AND d.finished_at >= w.finished_at
	               AND d.finished_at < w.finished_at + interval '1 minute'))
	  FROM fleet.job_devices w WHERE w.job_id = 'rated' AND w.finished_at IS NOT NULL});
cmp_ok($by_devices, '<=', 120, "the devices' own times agree ($by_devices in the busiest minute)");
is($node->safe_psql('postgres', qq{
	SELECT ($dispatched) = (SELECT count(*) FROM fleet.job_devices WHERE job_id = 'rated' AND status <> 'pending')}),
	't', 'every dispatch is a device dealt with, none twice');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM fleet.devices
	 WHERE (properties ->> 'level')::int = 7 AND desired_version = 2}),
	$node->safe_psql('postgres', q{SELECT count(*) FROM fleet.job_devices WHERE job_id = 'rated' AND status = 'completed'}),
	'each completed device was changed once');
is($node->safe_psql('postgres', q{SELECT status FROM fleet.jobs WHERE id = 'rated'}), 'running',
	'the job is still under way at its rate');
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' ' || (SELECT status_detail LIKE 'waiting: outside its maintenance windows%' FROM fleet.jobs WHERE id = 'closed')
	  FROM fleet.job_devices WHERE job_id = 'closed' AND status <> 'pending'}),
	'0 true', 'the job whose window closed dispatched nothing, and says why');
$node->poll_query_until('postgres', q{SELECT status = 'completed' FROM fleet.jobs WHERE id = 'open'})
  or die 'the job in its window did not complete';
pass('the job in its window ran through the restarts');

$node->stop;
done_testing();
