# IoT Central's device export file, round-tripped through SQL alone: export
# -> delete -> \copy into fleet.device_import_with_keys -> export again
# gives identical ids, names, SAS keys and X.509 thumbprints, for root's
# devices and for an organization's (whose keys come from its own
# enrollment groups, or from a second group some of its devices name: the
# import finds it by their keys).  A key that is not the one the device's group gives
# refuses that row alone, with its reason; IoT Central's two-column import
# file keeps working in fleet.device_import.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('iotcentral_csv');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_fleet'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_fleet');
my $dir = PostgreSQL::Test::Utils::tempdir;

# devices as IoT Central holds them: names with commas and quotes, X.509
# thumbprints (SHA-1 and SHA-256) on some, none on others
$node->safe_psql('postgres', q{
	INSERT INTO fleet.device_import
	SELECT 'meter-' || lpad(i::text, 4, '0'), CASE WHEN i % 7 = 0 THEN 'Meter "' || i || '", hall B' ELSE 'Meter ' || i END
	  FROM generate_series(1, 500) i;
	UPDATE fleet.devices SET x509_thumbprint_primary = upper(md5(id) || substr(md5(id || 'x'), 1, 8)),
	                         x509_thumbprint_secondary = md5(id) || md5(id || 'y')
	 WHERE id LIKE '%3';
	SELECT fleet.create_organization('acme', 'Acme');
	SELECT fleet.create_device('acme-' || i, organization => 'acme') FROM generate_series(1, 20) i;
	-- a second group adopted from IoT Central, which five of acme's devices name
	SELECT fleet.import_enrollment_group('acme-line-2', '{"displayName": "Line 2", "type": "iot", "organization": "acme",
	    "attestation": {"type": "symmetricKey"}}');
	SELECT fleet.update_device('acme-' || i, '{"enrollmentGroup": "acme-line-2"}') FROM generate_series(1, 5) i;
});

sub export_file
{
	my ($name, $organization) = @_;
	my $file = "$dir/$name.csv";
	$node->safe_psql('postgres', "\\copy (SELECT * FROM fleet.export_devices(organization => '$organization') ORDER BY 1) TO '$file' WITH (FORMAT csv, HEADER)");
	return $file;
}

sub import_file
{
	my ($file, $organization) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SET fleet.import_organization = '$organization'; \\copy fleet.device_import_with_keys FROM '$file' WITH (FORMAT csv, HEADER)");
	is($ret, 0, "import of $file into $organization ran") or diag($err);
	return $node->safe_psql('postgres',
		q{SELECT status || ' ' || imported || ' ' || rejected FROM fleet.device_operations ORDER BY id DESC LIMIT 1});
}

# acme's devices: its own enrollment groups derive their keys
my $acme = export_file('acme', 'acme');
is($node->safe_psql('postgres', q{SELECT count(*) FROM fleet.enrollment_groups WHERE organization_id = 'acme'}), '3',
	'acme has enrollment groups of its own');
$node->safe_psql('postgres', q{DELETE FROM fleet.devices WHERE organization_id = 'acme'});

# root's devices (after acme's left root's subtree export)
my $root = export_file('root', 'root');
my $header = (split /\n/, slurp_file($root))[0];
is($header, 'IOTC_DEVICEID,IOTC_DEVICENAME,IOTC_SASKEY_PRIMARY,IOTC_SASKEY_SECONDARY,IOTC_X509THUMBPRINT_PRIMARY,IOTC_X509THUMBPRINT_SECONDARY',
	"IoT Central's six columns");
is(scalar(grep { /,[0-9A-Fa-f]{40},[0-9a-f]{64}$/ } split /\n/, slurp_file($root)), 50, 'with the thumbprints');
$node->safe_psql('postgres', 'DELETE FROM fleet.devices');

is(import_file($root, 'root'), 'completed 500 0', "root's file imports through SQL, every row");
is(slurp_file(export_file('root-again', 'root')), slurp_file($root), 'exported again: identical ids, names, keys and thumbprints');
is(import_file($acme, 'acme'), 'completed 20 0', "acme's file imports into acme");
is(slurp_file(export_file('acme-again', 'acme')), slurp_file($acme), "acme's: identical too");
is($node->safe_psql('postgres', q{SELECT string_agg(id, ',' ORDER BY id) FROM fleet.devices WHERE enrollment_group_id = 'acme-line-2'}),
	'acme-1,acme-2,acme-3,acme-4,acme-5', 'the devices whose keys came from the second group name it again');

# a key that is not the group's refuses its row alone, and says why
$node->safe_psql('postgres', 'DELETE FROM fleet.devices');
my @lines = split /\n/, slurp_file($root);
$lines[5] =~ s/^([^,]*,[^,]*,)[^,]*/${1}bm90IHRoZSBncm91cCdzIGtleQ==/;
open(my $f, '>', "$dir/tampered.csv") or die;
print $f join("\n", @lines), "\n";
close($f);
is(import_file("$dir/tampered.csv", 'root'), 'completed_with_errors 499 1', 'one row with a wrong key is refused, the others imported');
like($node->safe_psql('postgres', q{SELECT line || ' ' || error FROM fleet.device_operation_errors ORDER BY operation_id DESC, line LIMIT 1}),
	qr/^6 IOTC_SASKEY_PRIMARY of device "meter-0005" is not the key enrollment group "SAS-IoT-Devices" gives it/,
	'its line and reason are recorded');
unlike($node->safe_psql('postgres', q{SELECT string_agg(error, ' ') FROM fleet.device_operation_errors}),
	qr/bm90IHRoZSBncm91cCdzIGtleQ|=/, 'no key in the reason');

# a file imported into the wrong organization: no key matches its groups
$node->safe_psql('postgres', q{DELETE FROM fleet.devices WHERE organization_id = 'acme'});
is(import_file($acme, 'root'), 'failed 0 20', "acme's file refused in root: its keys are not root's");

# IoT Central's two-column import file keeps its view
open($f, '>', "$dir/two.csv") or die;
print $f "IOTC_DEVICEID,IOTC_DEVICENAME\nplain-1,Plain one\nplain-2,\n";
close($f);
$node->safe_psql('postgres', "\\copy fleet.device_import FROM '$dir/two.csv' WITH (FORMAT csv, HEADER)");
is($node->safe_psql('postgres', q{SELECT string_agg(id || ':' || display_name, ',' ORDER BY id) FROM fleet.devices WHERE id LIKE 'plain-%'}),
	'plain-1:Plain one,plain-2:plain-2', 'the two-column file imports as before');

$node->stop;
done_testing();
