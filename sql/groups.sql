\set SHOW_CONTEXT never
-- Device groups: template, organization subtree and a jsonpath filter,
-- evaluated when asked.
UPDATE fleet.devices SET reported = '{"firmware": "1.2"}' WHERE id = 'thermo-1';
UPDATE fleet.devices SET reported = '{"firmware": "1.0"}' WHERE id = 'thermo-2';

SELECT fleet.create_device_group('all-devices', 'All devices') ->> 'id';
SELECT fleet.create_device_group('thermostats', 'Thermostats', 'dtmi:com:example:Thermostat;1') ->> 'id';
SELECT fleet.create_device_group('contoso-devices', 'Contoso devices', organization => 'contoso') ->> 'id';
SELECT fleet.create_device_group('east-devices', 'East devices', organization => 'contoso-east') ->> 'id';
SELECT fleet.create_device_group('old-firmware', 'Old firmware', 'dtmi:com:example:Thermostat;1',
                                 '$.reported.firmware < "1.2"') ->> 'id';
SELECT fleet.create_device_group('simulated', 'Simulated', filter => '$.simulated == true') ->> 'id';
SELECT fleet.create_device_group('named-thermo', 'Named thermo', filter => '$.displayName like_regex "^Thermo"') ->> 'id';
SELECT fleet.create_device_group('strict-missing', 'Strict filter on an absent key',
                                 filter => 'strict $.properties.targetTemperature > 20') ->> 'id';

SELECT g.id, array(SELECT fleet.list_device_group_members(g.id)) AS members, fleet.count_device_group_members(g.id) AS count
  FROM fleet.device_groups g ORDER BY g.id;

-- membership follows the devices, it is never cached
UPDATE fleet.devices SET reported = '{"firmware": "1.1"}' WHERE id = 'thermo-1';
SELECT array(SELECT fleet.list_device_group_members('old-firmware')) AS members;
SELECT fleet.create_device('thermo-3', template => 'dtmi:com:example:Thermostat;1') ->> 'id';
SELECT fleet.count_device_group_members('thermostats');

-- refusals
SELECT fleet.create_device_group('thermostats', 'Again') ->> 'id';
SELECT fleet.create_device_group('bad group', 'Bad id') ->> 'id';
SELECT fleet.create_device_group('no-name', NULL) ->> 'id';
SELECT fleet.create_device_group('no-template', 'No template', 'dtmi:no:Such;1') ->> 'id';
SELECT fleet.create_device_group('no-org', 'No org', organization => 'nowhere') ->> 'id';
SELECT fleet.create_device_group('not-boolean', 'Selects a value', filter => '$.displayName') ->> 'id';
SELECT fleet.create_device_group('not-boolean-2', 'Selects nothing', filter => '$.properties.missing') ->> 'id';
SELECT fleet.create_device_group('strict-path', 'Strict path', filter => 'strict $.nothing') ->> 'id';
SELECT fleet.create_device_group('no-compile', 'Does not compile', filter => '$.id ==') ->> 'id';
-- filters the engine could not evaluate over a fleet in bounded time
SELECT fleet.create_device_group('nested-any', 'Nested any-depth',
  filter => 'exists($.properties.** ? (exists(@.** ? (exists(@.** ? (@ == "zzz"))))))') ->> 'id';
SELECT fleet.create_device_group('deep', 'Deep',
  filter => '$.properties.a ? (exists(@.b ? (exists(@.c ? (exists(@.d ? (exists(@.e ? (@.f == 1)))))))))') ->> 'id';
SELECT fleet.create_device_group('long', 'Long', filter => ('$.displayName == "' || repeat('x', 2000) || '"')::jsonpath) ->> 'id';
SELECT fleet.create_device_group('one-any', 'One any-depth (fine)', filter => 'exists($.reported.** ? (@ == "fault"))') ->> 'id';
SELECT fleet.create_device_group('parens-in-string', 'Parentheses in a string (fine)',
  filter => '$.displayName == "((((((((((x))))))))))"') ->> 'id';
SELECT fleet.list_device_group_members('no-such-group');
SELECT count(*) FROM fleet.device_groups;

-- a group as IoT Central's REST API shows it; its name, template and
-- filter change (null clears them); it is deleted when no job or schedule
-- uses it
SELECT fleet.get_device_group('old-firmware');
SELECT fleet.get_device_group('no-such-group');
SELECT fleet.update_device_group('old-firmware', '{"displayName": "Firmware before 1.2", "filter": "$.reported.firmware < \"1.1\""}');
SELECT array(SELECT fleet.list_device_group_members('old-firmware')) AS members;
SELECT fleet.update_device_group('old-firmware', '{"filter": null, "template": null}') ->> 'filter' AS cleared;
SELECT fleet.update_device_group('old-firmware', '{"filter": "$.id =="}');
SELECT fleet.update_device_group('old-firmware', '{"filter": "$.displayName"}');
SELECT fleet.update_device_group('old-firmware', '{"template": "dtmi:no:Such;1"}');
SELECT fleet.update_device_group('old-firmware', '{"organization": "contoso"}');
SELECT fleet.update_device_group('old-firmware', '{"displayName": ""}');
SELECT fleet.delete_device_group('old-firmware');
SELECT fleet.get_device_group('old-firmware');
SELECT fleet.delete_device_group('old-firmware');
-- the 0.1 names, deprecated in 0.2, are gone in 0.4
SELECT fleet.group_members('thermostats');
