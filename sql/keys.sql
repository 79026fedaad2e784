\set SHOW_CONTEXT never
-- Device keys are derived exactly as Azure's Device Provisioning Service does
-- (how-to-legacy-device-symm-key): the published example.
SELECT fleet.compute_device_key(
         '8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==',
         'sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6') AS derived_key,
       fleet.compute_device_key(
         '8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==',
         'sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6') = 'Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=' AS matches_azure;

-- RFC 4231 test case 2 (key "Jefe"), as a second, independent vector
SELECT encode(decode(fleet.compute_device_key(encode('Jefe', 'base64'),
                                               'what do ya want for nothing?'), 'base64'), 'hex')
       = '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843' AS matches_rfc4231;

-- a key longer than one block is hashed first, per HMAC (RFC 4231 case 6)
SELECT encode(decode(fleet.compute_device_key(encode(decode(repeat('aa', 131), 'hex'), 'base64'),
                                               'Test Using Larger Than Block-Size Key - Hash Key First'), 'base64'), 'hex')
       = '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54' AS matches_rfc4231_long_key;

-- one call alternating between two group keys keeps them apart (the cache holds both)
SELECT k, fleet.compute_device_key(k, 'dev-1') = fleet.compute_device_key(k, 'dev-1') AS stable
  FROM (VALUES (encode('key-one', 'base64')), (encode('key-two', 'base64')),
               (encode('key-one', 'base64'))) v(k);
SELECT count(DISTINCT fleet.compute_device_key(k, 'dev-1')) AS distinct_keys
  FROM (VALUES (encode('key-one', 'base64')), (encode('key-two', 'base64')),
               (encode('key-three', 'base64')), (encode('key-one', 'base64'))) v(k);

-- bad group keys are refused
SELECT fleet.compute_device_key('not base64!', 'dev-1');
SELECT fleet.compute_device_key('', 'dev-1');
SELECT fleet.compute_device_key(NULL, 'dev-1') IS NULL AS null_in_null_out;

-- fresh group keys: 64 random bytes each time
SELECT length(decode(fleet_internal.generate_group_key(), 'base64')) AS bytes,
       fleet_internal.generate_group_key() <> fleet_internal.generate_group_key() AS differ;

-- rotation replaces one slot and keeps the other
CREATE TEMP TABLE before AS SELECT * FROM fleet.enrollment_groups;
SELECT fleet.rotate_enrollment_group_key('SAS-IoT-Devices', 'secondary') ->> 'id';
SELECT g.id, g.primary_key = b.primary_key AS primary_kept,
       g.secondary_key = b.secondary_key AS secondary_kept, g.rotated_at IS NOT NULL AS rotated
  FROM fleet.enrollment_groups g JOIN before b USING (id) ORDER BY g.id;
SELECT fleet.rotate_enrollment_group_key('SAS-IoT-Devices') ->> 'id';
SELECT primary_key <> (SELECT primary_key FROM before WHERE id = 'SAS-IoT-Devices') AS primary_rotated
  FROM fleet.enrollment_groups WHERE id = 'SAS-IoT-Devices';
SELECT fleet.rotate_enrollment_group_key('SAS-IoT-Devices', 'tertiary') ->> 'id';
SELECT fleet.rotate_enrollment_group_key('no-such-group') ->> 'id';

-- every organization made since 0.2 has its own pair of groups, and a
-- device's keys derive from the nearest pair up its organization's path
SELECT fleet.create_organization('keys-a', 'Keys A') ->> 'id';
SELECT fleet.create_organization('keys-a-east', 'Keys A East', 'keys-a') ->> 'id';
SELECT id, organization_id, edge, length(decode(primary_key, 'base64')) AS bytes
  FROM fleet.enrollment_groups WHERE organization_id LIKE 'keys-%' ORDER BY id;
SELECT fleet.create_device('keys-dev', organization => 'keys-a-east') ->> 'id';
SELECT fleet.create_device('keys-edge', organization => 'keys-a-east', edge => true) ->> 'id';
-- (the devices read first, MATERIALIZED: on Citus a function that reads
-- devices cannot run on a device's shard, inside a query over devices)
WITH d AS MATERIALIZED (SELECT id, edge FROM fleet.devices)
SELECT d.id, (fleet.device_keys(d.id)).primary_key = fleet.compute_device_key(g.primary_key, d.id) AS from_own_group
  FROM d
  JOIN fleet.enrollment_groups g ON g.id = CASE WHEN d.edge THEN 'SAS-IoT-Edge-Devices@keys-a-east'
                                              ELSE 'SAS-IoT-Devices@keys-a-east' END
 WHERE d.id LIKE 'keys-%' ORDER BY d.id;
-- the same id elsewhere gets other keys
SELECT fleet.delete_device('keys-dev');
SELECT fleet.create_device('keys-dev', organization => 'keys-a') ->> 'id';
SELECT (fleet.device_keys('keys-dev')).primary_key
       = fleet.compute_device_key((SELECT primary_key FROM fleet.enrollment_groups WHERE id = 'SAS-IoT-Devices@keys-a'), 'keys-dev')
       AS from_parent_group;
-- an organization without a pair (made by 0.1) derives from the nearest
-- above; it can be given its own, once
DELETE FROM fleet.enrollment_groups WHERE organization_id = 'keys-a';
SELECT (fleet.device_keys('keys-dev')).primary_key
       = fleet.compute_device_key((SELECT primary_key FROM fleet.enrollment_groups WHERE id = 'SAS-IoT-Devices'), 'keys-dev')
       AS from_root_group;
SELECT g ->> 'id' AS id, g ->> 'type' AS type, g ->> 'organization' AS organization FROM fleet.create_enrollment_groups('keys-a') g;
SELECT fleet.create_enrollment_groups('keys-a');
SELECT fleet.rotate_enrollment_group_key('SAS-IoT-Edge-Devices@keys-a', 'secondary') ->> 'id';
-- an enrollment group as IoT Central's REST API shows it, keys included
SELECT g - 'attestation' - 'rotatedAt' - 'etag' AS enrollment_group, g ? 'etag' AS has_etag, g #>> '{attestation,type}' AS attestation,
       g #>> '{attestation,symmetricKey,primaryKey}' = e.primary_key AS primary_key_matches
  FROM fleet.get_enrollment_group('SAS-IoT-Devices@keys-a') g, fleet.enrollment_groups e
 WHERE e.id = 'SAS-IoT-Devices@keys-a';
SELECT fleet.get_enrollment_group('no-such-group');
-- the 0.1 name, deprecated in 0.2, is gone in 0.4
SELECT fleet.rotate_group_key('SAS-IoT-Devices@keys-a', 'secondary');
-- an organization's own pair goes only when no device's keys derive from it
SELECT fleet.delete_enrollment_groups('keys-a');
SELECT fleet.delete_enrollment_groups('root');
SELECT fleet.delete_enrollment_groups('nowhere');
SELECT fleet.delete_device('keys-dev');
SELECT fleet.delete_enrollment_groups('keys-a');
SELECT count(*) AS groups_left FROM fleet.enrollment_groups WHERE organization_id = 'keys-a';
SELECT fleet.delete_enrollment_groups('keys-a');
WITH d AS MATERIALIZED (SELECT id FROM fleet.devices WHERE id LIKE 'keys-%')
SELECT fleet.delete_device(id) FROM d;
SELECT fleet.delete_organization('keys-a-east');
SELECT fleet.delete_organization('keys-a');
