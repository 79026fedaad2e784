# A server restart, clean or after a crash, keeps devices, the import's
# operation rows and the enrollment group keys (and so every device key).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('restart');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'pg_cron,pg_fleet'\ncron.database_name = 'postgres'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_fleet');

# 1,000 good devices and one bad row
my $csv = "$PostgreSQL::Test::Utils::tmp_check/restart_devices.csv";
open(my $fh, '>', $csv) or die "could not write $csv: $!";
print $fh "IOTC_DEVICEID,IOTC_DEVICENAME\r\n";
printf $fh "restart-%04d,Device %d\r\n", $_, $_ for 1 .. 1000;
print $fh "bad id,Bad\r\n";
close($fh);

$node->safe_psql('postgres',
	"COPY fleet.device_import FROM '$csv' WITH (FORMAT csv, HEADER)");

my $state_query = q{
	SELECT (SELECT count(*) FROM fleet.devices) || '|' ||
	       (SELECT string_agg(o.status || ':' || o.rows || ':' || o.imported || ':' || o.rejected, ',')
	          FROM fleet.device_operations o) || '|' ||
	       (SELECT string_agg(e.line || ':' || e.device_id, ',') FROM fleet.device_operation_errors e) || '|' ||
	       (SELECT md5(string_agg("IOTC_DEVICEID" || "IOTC_SASKEY_PRIMARY" || "IOTC_SASKEY_SECONDARY", ','
	                              ORDER BY "IOTC_DEVICEID"))
	          FROM fleet.export_devices())
};
my $before = $node->safe_psql('postgres', $state_query);
like($before, qr/^1000\|completed_with_errors:1001:1000:1\|1002:bad id\|/,
	'import registered 1000 devices and recorded the bad row');

$node->restart;
is($node->safe_psql('postgres', $state_query), $before,
	'a clean restart keeps devices, operations and keys');

$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', $state_query), $before,
	'an immediate shutdown and crash recovery keep devices, operations and keys');

# the import still works after recovery, against the recovered registry
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"COPY fleet.device_import FROM '$csv' WITH (FORMAT csv, HEADER)");
is($ret, 0, 'a second import of the same file runs');
like($stderr, qr/imported 0 of 1001 devices, rejected 1001/,
	'after recovery every id of the file is already registered');

$node->stop;
done_testing();
