\set SHOW_CONTEXT never
-- Device groups: template, organization subtree and a jsonpath filter,
-- evaluated when asked.
UPDATE fleet.devices SET reported = '{"firmware": "1.2"}' WHERE id = 'thermo-1';
UPDATE fleet.devices SET reported = '{"firmware": "1.0"}' WHERE id = 'thermo-2';

SELECT fleet.create_device_group('all-devices', 'All devices');
SELECT fleet.create_device_group('thermostats', 'Thermostats', 'dtmi:com:example:Thermostat;1');
SELECT fleet.create_device_group('contoso-devices', 'Contoso devices', organization => 'contoso');
SELECT fleet.create_device_group('east-devices', 'East devices', organization => 'contoso-east');
SELECT fleet.create_device_group('old-firmware', 'Old firmware', 'dtmi:com:example:Thermostat;1',
                                 '$.reported.firmware < "1.2"');
SELECT fleet.create_device_group('simulated', 'Simulated', filter => '$.simulated == true');
SELECT fleet.create_device_group('named-thermo', 'Named thermo', filter => '$.displayName like_regex "^Thermo"');
SELECT fleet.create_device_group('strict-missing', 'Strict filter on an absent key',
                                 filter => 'strict $.properties.targetTemperature > 20');

SELECT g.id, array(SELECT fleet.group_members(g.id)) AS members, fleet.group_member_count(g.id) AS count
  FROM fleet.device_groups g ORDER BY g.id;

-- membership follows the devices, it is never cached
UPDATE fleet.devices SET reported = '{"firmware": "1.1"}' WHERE id = 'thermo-1';
SELECT array(SELECT fleet.group_members('old-firmware')) AS members;
SELECT fleet.create_device('thermo-3', template => 'dtmi:com:example:Thermostat;1');
SELECT fleet.group_member_count('thermostats');

-- refusals
SELECT fleet.create_device_group('thermostats', 'Again');
SELECT fleet.create_device_group('bad group', 'Bad id');
SELECT fleet.create_device_group('no-name', NULL);
SELECT fleet.create_device_group('no-template', 'No template', 'dtmi:no:Such;1');
SELECT fleet.create_device_group('no-org', 'No org', organization => 'nowhere');
SELECT fleet.create_device_group('not-boolean', 'Selects a value', filter => '$.displayName');
SELECT fleet.create_device_group('not-boolean-2', 'Selects nothing', filter => '$.properties.missing');
SELECT fleet.create_device_group('strict-path', 'Strict path', filter => 'strict $.nothing');
SELECT fleet.create_device_group('no-compile', 'Does not compile', filter => '$.id ==');
-- filters the engine could not evaluate over a fleet in bounded time
SELECT fleet.create_device_group('nested-any', 'Nested any-depth',
  filter => 'exists($.properties.** ? (exists(@.** ? (exists(@.** ? (@ == "zzz"))))))');
SELECT fleet.create_device_group('deep', 'Deep',
  filter => '$.properties.a ? (exists(@.b ? (exists(@.c ? (exists(@.d ? (exists(@.e ? (@.f == 1)))))))))');
SELECT fleet.create_device_group('long', 'Long', filter => ('$.displayName == "' || repeat('x', 2000) || '"')::jsonpath);
SELECT fleet.create_device_group('one-any', 'One any-depth (fine)', filter => 'exists($.reported.** ? (@ == "fault"))');
SELECT fleet.create_device_group('parens-in-string', 'Parentheses in a string (fine)',
  filter => '$.displayName == "((((((((((x))))))))))"');
SELECT fleet.group_members('no-such-group');
SELECT count(*) FROM fleet.device_groups;
