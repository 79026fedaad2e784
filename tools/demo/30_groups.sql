-- A device group by template, and one with a filter over the device document.
SELECT fleet.create_device_group('thermostats', 'All thermostats', 'dtmi:com:example:Thermostat;1');
SELECT fleet.create_device_group('floor-3', 'Third floor', 'dtmi:com:example:Thermostat;1',
                                 '$.displayName like_regex "floor 3$"');
SELECT id, fleet.count_device_group_members(id) AS devices FROM fleet.device_groups ORDER BY id;
