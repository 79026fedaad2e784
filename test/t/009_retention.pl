# Purging a deleted job, a chunk at a time, across an immediate shutdown:
# the job is gone from the API at once; its rows go in short committed
# chunks while another job runs; a crash in the middle loses nothing of
# the purge done and the engine carries on after the restart, until no row
# of it is left; nothing of any other job is touched.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('retention');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_fleet'
fleet.database_name = 'postgres'
fleet.engine_naptime = '100ms'
fleet.engine_chunk_size = 200
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_fleet;
	SELECT fleet.import_template('{"@id": "dtmi:test:Lamp;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2",
	                               "contents": [{"@type": "Property", "name": "level", "schema": "integer", "writable": true}]}');
	INSERT INTO fleet.device_import SELECT 'lamp-' || lpad(i::text, 6, '0'), NULL FROM generate_series(1, 40000) i;
	UPDATE fleet.devices SET template_id = 'dtmi:test:Lamp;1';
	SELECT fleet.create_device_group('lamps', 'Lamps', 'dtmi:test:Lamp;1');
});
sub create_job
{
	my ($id, $value) = @_;
	$node->safe_psql('postgres', qq{SELECT fleet.create_job('{"id": "$id", "displayName": "$id", "group": "lamps",
	  "data": [{"type": "property", "target": "dtmi:test:Lamp;1", "path": "level", "value": $value}]}')});
}
create_job('old', 1);
is($node->safe_psql('postgres', q{SELECT fleet.wait_for_job('old', timeout => '120 seconds')}), 'completed', 'a job of 40,000 devices');
create_job('kept', 2);
is($node->safe_psql('postgres', q{SELECT fleet.wait_for_job('kept', timeout => '120 seconds')}), 'completed', 'and another');
my $kept = q{SELECT count(*) || ' ' || count(*) FILTER (WHERE status = 'completed') FROM fleet.job_devices WHERE job_id = 'kept'};
is($node->safe_psql('postgres', $kept), '40000 40000', 'the other job has its rows');

$node->safe_psql('postgres', q{SELECT fleet.delete_job('old')});
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT fleet.get_job('old')});
like($err, qr/job "old" does not exist/, 'deleted, the job is gone from the API at once');

# a third job runs while the purge goes on, and the server crashes during both
create_job('during', 3);
my $left = q{SELECT count(*) FROM fleet.job_devices WHERE job_id = 'old'};
ok($node->poll_query_until('postgres', "SELECT ($left) BETWEEN 1 AND 39000"), 'the purge is under way');
$node->stop('immediate');
$node->start;
my $after_crash = $node->safe_psql('postgres', $left);
cmp_ok($after_crash, '<', 40000, "what was purged before the crash stayed purged ($after_crash rows left)");
ok($node->poll_query_until('postgres', q{SELECT NOT EXISTS (SELECT 1 FROM fleet.jobs WHERE id = 'old')}),
	'after the restart the engine finished the purge');
is($node->safe_psql('postgres', "$left"), '0', 'no row of the deleted job is left');
is($node->safe_psql('postgres', q{SELECT count(*) FROM fleet.job_batches WHERE job_id = 'old'}), '0', 'nor of its batches');
is($node->safe_psql('postgres', q{SELECT fleet.wait_for_job('during', timeout => '120 seconds')}), 'completed',
	'the job that ran meanwhile completed');
is($node->safe_psql('postgres', $kept), '40000 40000', 'and the other job kept every row');
is($node->safe_psql('postgres', q{SELECT count(*) FROM fleet.devices WHERE properties ->> 'level' = '3'}), '40000',
	'every device was written by it');

$node->stop;
done_testing();
