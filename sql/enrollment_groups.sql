\set SHOW_CONTEXT never
-- Enrollment groups as IoT Central's REST API makes them (PUT
-- /enrollmentGroups/{id}): more than the default pair, symmetric keys made
-- or adopted, X.509 signing certificates with their proof of possession,
-- and devices that name their group.

SELECT fleet.create_organization('eg-org', 'Enrollment org') ->> 'id' AS organization;
SELECT fleet.create_organization('eg-sub', 'Below it', 'eg-org') ->> 'id' AS organization;
SELECT fleet.create_organization('eg-other', 'Elsewhere') ->> 'id' AS organization;

-- the REST example's body, unedited: keys are made
SELECT g - 'attestation' - 'etag' AS enrollment_group,
       g #>> '{attestation,type}' AS attestation,
       length(g #>> '{attestation,symmetricKey,primaryKey}') AS primary_key_length,
       g #>> '{attestation,symmetricKey,primaryKey}' <> g #>> '{attestation,symmetricKey,secondaryKey}' AS distinct_keys,
       g ->> 'etag' ~ '^"[0-9a-f]{20}"$' AS has_etag
  FROM fleet.import_enrollment_group('myEnrollmentGroupId', '{
    "displayName": "My group",
    "enabled": true,
    "type": "iot",
    "attestation": {"type": "symmetricKey"}
  }') g;

-- IoT Central's own keys adopted, in an organization
SELECT g - 'etag' AS enrollment_group
  FROM fleet.import_enrollment_group('legacy-sensors', '{
    "displayName": "Legacy sensors", "type": "iot", "organization": "eg-org",
    "attestation": {"type": "symmetricKey", "symmetricKey": {
        "primaryKey": "0wVA+4JgjW7c8vPixr4xKpuu9+5CAJ/V+qFEyOoxLrLk/tC/nmK1UGqaovqcLpl0mgQq4xXJd51IqeI0Mlo78Q==",
        "secondaryKey": "p51a4gxERMszfVBDD+H+JQRaXLlF/WlZjrEbIAae7U/nVurcTnHAG5Rui+6Yngp2wh8o5kwVe49EyXGA1EaJvQ=="}}}') g;
SELECT fleet.import_enrollment_group('legacy-gateways', '{"displayName": "Legacy gateways", "type": "iotEdge",
    "enabled": false, "organization": "eg-org", "attestation": {"type": "symmetricKey"}}') ->> 'enabled' AS enabled;
-- a body fleet.get_enrollment_group() returned makes a copy
SELECT fleet.import_enrollment_group('legacy-sensors-copy', fleet.get_enrollment_group('legacy-sensors') - 'id')
       #>> '{attestation,symmetricKey,primaryKey}'
     = fleet.get_enrollment_group('legacy-sensors') #>> '{attestation,symmetricKey,primaryKey}' AS same_keys;
SELECT fleet.delete_enrollment_group('legacy-sensors-copy');
-- a body without "type" makes an iot group, as IoT Central does
SELECT g ->> 'type' AS type FROM fleet.import_enrollment_group('typeless', '{"displayName": "No type", "attestation": {"type": "symmetricKey"}}') g;
SELECT fleet.delete_enrollment_group('typeless');
SELECT id, organization_id, edge, organization_default, attestation FROM fleet.enrollment_groups
 WHERE id IN ('myEnrollmentGroupId', 'legacy-sensors', 'legacy-gateways') ORDER BY id;
SELECT g ->> 'id' AS id FROM fleet.list_enrollment_groups('eg-org') g;

-- refusals, each naming what to do
SELECT fleet.import_enrollment_group('legacy-sensors', '{"displayName": "Again", "type": "iot", "attestation": {"type": "symmetricKey"}}');
SELECT fleet.import_enrollment_group('SAS-IoT-Devices', '{"displayName": "Over root''s", "type": "iot", "attestation": {"type": "symmetricKey"}}');
SELECT fleet.import_enrollment_group('bad id', '{"displayName": "x", "type": "iot", "attestation": {"type": "symmetricKey"}}');
SELECT fleet.import_enrollment_group('no-name', '{"type": "iot", "attestation": {"type": "symmetricKey"}}');
SELECT fleet.import_enrollment_group('bad-type', '{"displayName": "x", "type": "edge", "attestation": {"type": "symmetricKey"}}');
SELECT fleet.import_enrollment_group('bad-attestation', '{"displayName": "x", "type": "iot", "attestation": {"type": "tpm"}}');
SELECT fleet.import_enrollment_group('no-attestation', '{"displayName": "x", "type": "iot"}');
SELECT fleet.import_enrollment_group('misspelled', '{"displayName": "x", "type": "iot", "attestation": {"type": "symmetricKey", "symetricKey": {}}}');
SELECT fleet.import_enrollment_group('misspelled', '{"displayName": "x", "type": "iot", "enable": true, "attestation": {"type": "symmetricKey"}}');
SELECT fleet.import_enrollment_group('half-keys', '{"displayName": "x", "type": "iot", "attestation": {"type": "symmetricKey",
    "symmetricKey": {"primaryKey": "0wVA+4JgjW7c8vPixr4xKpuu9+5CAJ/V+qFEyOoxLrLk/tC/nmK1UGqaovqcLpl0mgQq4xXJd51IqeI0Mlo78Q=="}}}');
SELECT fleet.import_enrollment_group('a-default', '{"displayName": "x", "type": "iot", "organizationDefault": true, "attestation": {"type": "symmetricKey"}}');
SELECT fleet.import_enrollment_group('nowhere', '{"displayName": "x", "type": "iot", "organization": "no-such-org", "attestation": {"type": "symmetricKey"}}');

-- Devices name their group: their keys derive from it
SELECT fleet.create_device('eg-dev-1', organization => 'eg-org') ->> 'enrollmentGroup' AS default_group;
SELECT fleet.update_device('eg-dev-1', '{"enrollmentGroup": "legacy-sensors"}') ->> 'enrollmentGroup' AS named_group;
SELECT k.primary_key = fleet.compute_device_key(g.primary_key, 'eg-dev-1') AS derives_from_named
  FROM fleet.device_keys('eg-dev-1') k, fleet.enrollment_groups g WHERE g.id = 'legacy-sensors';
SELECT e."IOTC_SASKEY_SECONDARY" = fleet.compute_device_key(g.secondary_key, 'eg-dev-1') AS export_derives_from_named
  FROM fleet.export_devices(organization => 'eg-org') e, fleet.enrollment_groups g
 WHERE g.id = 'legacy-sensors' AND e."IOTC_DEVICEID" = 'eg-dev-1';
-- (the export of several organizations, which joins each device to its groups)
SELECT e."IOTC_SASKEY_PRIMARY" = fleet.compute_device_key(g.primary_key, 'eg-dev-1') AS full_export_derives_from_named
  FROM fleet.export_devices() e, fleet.enrollment_groups g
 WHERE g.id = 'legacy-sensors' AND e."IOTC_DEVICEID" = 'eg-dev-1';
-- a device below the group's organization may name it; moving keeps it
SELECT fleet.update_device('eg-dev-1', '{"organization": "eg-sub"}') ->> 'enrollmentGroup' AS kept_after_move;
-- one elsewhere may not; nor an iot device an iotEdge group
SELECT fleet.update_device('eg-dev-1', '{"organization": "eg-other"}');
SELECT fleet.update_device('eg-dev-1', '{"enrollmentGroup": "legacy-gateways"}');
SELECT fleet.update_device('eg-dev-1', '{"enrollmentGroup": "no-such-group"}');
SELECT fleet.update_device('eg-dev-1', '{"enrollmentGroup": 7}');
-- a group in use stays; a default group goes only with its pair
SELECT fleet.delete_enrollment_group('legacy-sensors');
SELECT fleet.delete_enrollment_group('SAS-IoT-Devices@eg-org');
SELECT fleet.delete_enrollment_group('SAS-IoT-Devices');
-- null: back to the organization's default
SELECT fleet.update_device('eg-dev-1', '{"enrollmentGroup": null}') ->> 'enrollmentGroup' AS default_again;

-- IoT Central's export file: each device's keys find the group they came
-- from, which the device then names
SELECT fleet.compute_device_key(g.primary_key, 'eg-plain-1') AS plain_pk FROM fleet.enrollment_groups g WHERE g.id = 'SAS-IoT-Devices@eg-org' \gset
SET fleet.import_organization = 'eg-org';
INSERT INTO fleet.device_import_with_keys
SELECT 'eg-legacy-1', 'Legacy 1', fleet.compute_device_key(g.primary_key, 'eg-legacy-1'), fleet.compute_device_key(g.secondary_key, 'eg-legacy-1'), NULL, NULL
  FROM fleet.enrollment_groups g WHERE g.id = 'legacy-sensors'
UNION ALL
SELECT 'eg-plain-1', 'Plain 1', :'plain_pk', NULL, NULL, NULL
UNION ALL
SELECT 'eg-wrong-1', 'Wrong 1', 'bm90IHRoZSBncm91cCdzIGtleQ==', NULL, NULL, NULL;
SELECT line, device_id, error FROM fleet.device_operation_errors WHERE operation_id = fleet.last_device_operation();
WITH d AS MATERIALIZED (SELECT id, enrollment_group_id FROM fleet.devices WHERE id IN ('eg-legacy-1', 'eg-plain-1'))
SELECT id, enrollment_group_id, fleet.get_device(id) ->> 'enrollmentGroup' AS enrollment_group
  FROM d ORDER BY id;
-- exported again, the same keys
SELECT e."IOTC_SASKEY_PRIMARY" = fleet.compute_device_key(g.primary_key, 'eg-legacy-1') AS same_keys_on_export
  FROM fleet.export_devices(organization => 'eg-org') e, fleet.enrollment_groups g
 WHERE g.id = 'legacy-sensors' AND e."IOTC_DEVICEID" = 'eg-legacy-1';
-- fleet.import_enrollment_group names the group of a whole file
SET fleet.import_enrollment_group = 'legacy-sensors';
INSERT INTO fleet.device_import VALUES ('eg-named-1', 'Named 1'), ('eg-named-2', NULL);
SELECT id, enrollment_group_id FROM fleet.devices WHERE id LIKE 'eg-named-%' ORDER BY id;
SET fleet.import_enrollment_group = 'legacy-gateways';
INSERT INTO fleet.device_import VALUES ('eg-named-3', 'Named 3');
SET fleet.import_enrollment_group = 'no-such-group';
INSERT INTO fleet.device_import VALUES ('eg-named-3', 'Named 3');
RESET fleet.import_enrollment_group;
-- keys an organization above derives (root's default group, here) are
-- kept: the device names that group (root's keys are made anew first:
-- another test gave them to a group of eg-org too)
SELECT fleet.rotate_enrollment_group_key('SAS-IoT-Devices', 'primary') IS NOT NULL AS rotated;
SELECT fleet.compute_device_key(g.primary_key, 'eg-rootkeys-1') AS root_pk FROM fleet.enrollment_groups g WHERE g.id = 'SAS-IoT-Devices' \gset
INSERT INTO fleet.device_import_with_keys VALUES ('eg-rootkeys-1', NULL, :'root_pk', NULL, NULL, NULL);
-- (two statements: on Citus a statement over one device runs on its shard,
-- where a function that reads devices again cannot)
SELECT enrollment_group_id FROM fleet.devices WHERE id = 'eg-rootkeys-1';
SELECT (fleet.device_keys('eg-rootkeys-1')).primary_key = :'root_pk' AS keys_as_in_file;
RESET fleet.import_organization;
-- a default pair named by a device below its organization stays
SELECT fleet.create_organization('eg-sub-sub', 'Further below', 'eg-sub') ->> 'id' AS organization;
SELECT fleet.create_device('eg-deep-1', organization => 'eg-sub-sub') ->> 'enrollmentGroup' AS own_default;
SELECT fleet.update_device('eg-deep-1', '{"enrollmentGroup": "SAS-IoT-Devices@eg-sub"}') ->> 'enrollmentGroup' AS named;
SELECT fleet.update_device('eg-dev-1', '{"organization": "eg-org"}') ->> 'organization' AS no_other_device_in_eg_sub;
SELECT fleet.delete_enrollment_groups('eg-sub');

-- X.509 groups: signing certificates as IoT Central takes them (the PEM
-- text in base64, as the az CLI sends it, or the PEM text), and proof of
-- possession
\set signing_ca `cat test/data/x509/signing-ca.pem`
\set other_ca `cat test/data/x509/other-ca.pem`
\set verification `cat test/data/x509/verification.pem`
\set verification_other `cat test/data/x509/verification-other-signer.pem`
SELECT g - 'etag' AS enrollment_group
  FROM fleet.import_enrollment_group('x509-sensors', '{"displayName": "X.509 sensors", "type": "iot", "enabled": true,
                                                        "attestation": {"type": "x509"}}') g;
SELECT c - 'certificate' - 'etag' AS certificate
  FROM fleet.set_enrollment_group_certificate('x509-sensors', 'primary',
           jsonb_build_object('certificate', encode(convert_to(:'signing_ca', 'UTF8'), 'base64'))) c;
SELECT c - 'certificate' - 'etag' AS certificate
  FROM fleet.set_enrollment_group_certificate('x509-sensors', 'secondary', jsonb_build_object('certificate', :'other_ca', 'verified', true)) c;
SELECT jsonb_object_keys(fleet.get_enrollment_group('x509-sensors') #> '{attestation,x509,signingCertificates}') AS entries;
-- a group made with its certificate in the body
SELECT g #> '{attestation,x509,signingCertificates,primary,info}' AS info
  FROM fleet.import_enrollment_group('x509-gateways', jsonb_build_object('displayName', 'X.509 gateways', 'type', 'iotEdge',
           'attestation', jsonb_build_object('type', 'x509', 'x509', jsonb_build_object('signingCertificates',
               jsonb_build_object('primary', jsonb_build_object('certificate', :'signing_ca')))))) g;
-- proof of possession: the code, then a certificate with it as its common
-- name, signed by the group certificate's key.  (The test certificate was
-- made for a known code: it is put in place of the random one.)
SELECT length(fleet.generate_enrollment_group_verification_code('x509-sensors', 'primary') ->> 'verificationCode') AS code_length;
SELECT fleet.verify_enrollment_group_certificate('x509-sensors', 'primary', jsonb_build_object('certificate', :'verification'));
UPDATE fleet.enrollment_group_certificates SET verification_code = '0123456789ABCDEF0123456789ABCDEF'
 WHERE enrollment_group_id = 'x509-sensors' AND entry = 'primary';
SELECT fleet.verify_enrollment_group_certificate('x509-sensors', 'primary', jsonb_build_object('certificate', :'verification_other'));
SELECT fleet.verify_enrollment_group_certificate('x509-sensors', 'primary', jsonb_build_object('certificate', :'verification')) ->> 'verified' AS verified;
-- the code is spent
SELECT fleet.verify_enrollment_group_certificate('x509-sensors', 'primary', jsonb_build_object('certificate', :'verification'));
-- the same certificate again stays verified; another is not
SELECT fleet.set_enrollment_group_certificate('x509-sensors', 'primary', jsonb_build_object('certificate', :'signing_ca')) ->> 'verified' AS same_stays_verified;
SELECT fleet.get_enrollment_group_certificate('x509-sensors', 'primary') ->> 'etag' AS cert_etag \gset
SELECT fleet.set_enrollment_group_certificate('x509-sensors', 'primary', jsonb_build_object('certificate', :'other_ca', 'etag', '"stale"'));
SELECT fleet.set_enrollment_group_certificate('x509-sensors', 'primary', jsonb_build_object('certificate', :'other_ca', 'etag', :'cert_etag')) ->> 'verified' AS other_unverified;
-- refusals: the REST example's placeholder is no certificate; entries are
-- primary and secondary; a symmetric-key group has no certificates, an
-- X.509 group no keys
SELECT fleet.set_enrollment_group_certificate('x509-sensors', 'primary', '{"certificate": "<base64-certificate>"}');
SELECT fleet.set_enrollment_group_certificate('x509-sensors', 'primary', '{"certificat": "x"}');
SELECT fleet.set_enrollment_group_certificate('x509-sensors', 'tertiary', jsonb_build_object('certificate', :'signing_ca'));
SELECT fleet.set_enrollment_group_certificate('legacy-sensors', 'primary', jsonb_build_object('certificate', :'signing_ca'));
SELECT fleet.rotate_enrollment_group_key('x509-sensors');
SELECT fleet.update_enrollment_group('x509-sensors', '{"attestation": {"type": "symmetricKey"}}');
-- a private key pasted with the certificate is refused, never kept
SELECT fleet.set_enrollment_group_certificate('x509-sensors', 'secondary', jsonb_build_object('certificate',
         :'signing_ca' || E'\n-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5LCBidXQgaXQgbG9va3MgbGlrZSBvbmU=\n-----END PRIVATE KEY-----\n'));
SELECT fleet.set_enrollment_group_certificate('x509-sensors', 'secondary', jsonb_build_object('certificate',
         encode(convert_to(:'signing_ca' || E'-----BEGIN EC PRIVATE KEY-----\nbm90IGEga2V5\n-----END EC PRIVATE KEY-----\n', 'UTF8'), 'base64')));
-- devices imported into an X.509 group have no SAS keys to bring
SET fleet.import_enrollment_group = 'x509-sensors';
INSERT INTO fleet.device_import_with_keys VALUES ('eg-x509-keys', NULL, 'bm90IHRoZSBncm91cCdzIGtleQ==', NULL, NULL, NULL),
                                                 ('eg-x509-thumb', NULL, NULL, NULL, repeat('AB', 20), NULL);
SELECT line, device_id, error FROM fleet.device_operation_errors WHERE operation_id = fleet.last_device_operation();
SELECT id, enrollment_group_id, x509_thumbprint_primary FROM fleet.devices WHERE id LIKE 'eg-x509-%' ORDER BY id;
RESET fleet.import_enrollment_group;
SELECT fleet.delete_device('eg-x509-thumb');
SELECT fleet.import_enrollment_group('x509-bad', '{"displayName": "x", "type": "iot", "attestation": {"type": "x509",
    "x509": {"signingCertificates": {"primary": {"certificate": "<base64-certificate>"}}}}}');
-- a device of an X.509 group has no SAS keys, its thumbprints stay
SELECT fleet.create_device('eg-x509-1', organization => 'eg-org') ->> 'id' AS device;
SELECT fleet.update_device('eg-x509-1', '{"enrollmentGroup": "x509-sensors"}') ->> 'enrollmentGroup' AS named_group;
SELECT primary_key IS NULL AS no_primary, secondary_key IS NULL AS no_secondary FROM fleet.device_keys('eg-x509-1');
-- removing a certificate, and the group
SELECT fleet.delete_enrollment_group_certificate('x509-sensors', 'secondary');
SELECT fleet.delete_enrollment_group_certificate('x509-sensors', 'secondary');
SELECT fleet.update_device('eg-x509-1', '{"enrollmentGroup": null}') ->> 'enrollmentGroup' AS default_again;
SELECT fleet.delete_enrollment_group('x509-sensors');
SELECT count(*) AS certificates_left FROM fleet.enrollment_group_certificates WHERE enrollment_group_id = 'x509-sensors';

-- Naming a group takes what reading its keys takes: an administrator of
-- an organization, who only views root, may not name root's group
CREATE ROLE regress_eg_subadmin LOGIN;
SELECT fleet.grant_organization('eg-org', 'regress_eg_subadmin', 'administrator');
SELECT fleet.grant_organization('root', 'regress_eg_subadmin', 'viewer');
SET ROLE regress_eg_subadmin;
SELECT fleet.create_device('eg-victim-id', organization => 'eg-org') ->> 'enrollmentGroup' AS own_default;
SELECT fleet.update_device('eg-victim-id', '{"enrollmentGroup": "myEnrollmentGroupId"}');
SET fleet.import_organization = 'eg-org';
SET fleet.import_enrollment_group = 'myEnrollmentGroupId';
INSERT INTO fleet.device_import VALUES ('eg-victim-2', NULL);
RESET fleet.import_enrollment_group;
RESET fleet.import_organization;
-- but it may move a device that names a group of its own organization
SELECT fleet.update_device('eg-victim-id', '{"enrollmentGroup": "legacy-sensors"}') ->> 'enrollmentGroup' AS named;
SELECT fleet.update_device('eg-victim-id', '{"organization": "eg-sub"}') ->> 'organization' AS moved;
RESET ROLE;
SELECT fleet.delete_device('eg-victim-id');
SELECT fleet.revoke_organization('eg-org', 'regress_eg_subadmin'), fleet.revoke_organization('root', 'regress_eg_subadmin');
DROP ROLE regress_eg_subadmin;

-- Administrators only: an operator of the organization sees no group
CREATE ROLE regress_eg_operator LOGIN;
SELECT fleet.grant_organization('eg-org', 'regress_eg_operator', 'operator');
SET ROLE regress_eg_operator;
SELECT fleet.get_enrollment_group('legacy-sensors');
SELECT fleet.import_enrollment_group('operators-group', '{"displayName": "x", "type": "iot", "organization": "eg-org", "attestation": {"type": "symmetricKey"}}');
SELECT count(*) AS groups_listed FROM fleet.list_enrollment_groups();
SELECT count(*) AS certificates_seen FROM fleet.enrollment_group_certificates;
SELECT fleet.update_device('eg-dev-1', '{"enrollmentGroup": "legacy-sensors"}');
-- (the group's id is no secret: the device shows it)
SELECT fleet.get_device('eg-legacy-1') ->> 'enrollmentGroup' AS its_group;
RESET ROLE;
SELECT fleet.revoke_organization('eg-org', 'regress_eg_operator');
DROP ROLE regress_eg_operator;
