\set SHOW_CONTEXT never
-- Devices, one at a time.
SELECT fleet.create_device('thermo-1', 'Thermostat 1', 'dtmi:com:example:Thermostat;1') ->> 'id';
SELECT fleet.create_device('thermo-2', template => 'dtmi:com:example:Thermostat;1', organization => 'contoso-east') ->> 'id';
SELECT fleet.create_device('sim-1', 'Simulated', simulated => true) ->> 'id';
SELECT fleet.create_device('gateway-1', 'Edge gateway', organization => 'contoso', edge => true) ->> 'id';
SELECT id, display_name, template_id, organization_id, simulated, edge, properties, reported,
       cloud_properties, x509_thumbprint_primary
  FROM fleet.devices ORDER BY id;

-- the document device group filters see
SELECT fleet.device_document(d) FROM fleet.devices d WHERE id = 'thermo-1';

-- refusals
SELECT fleet.create_device('thermo-1') ->> 'id';
SELECT fleet.create_device('bad id') ->> 'id';
SELECT fleet.create_device('bad_id') ->> 'id';
SELECT fleet.create_device('') ->> 'id';
SELECT fleet.create_device(NULL) ->> 'id';
SELECT fleet.create_device(repeat('a', 129)) ->> 'id';
SELECT fleet.create_device('long-name', repeat('n', 149)) ->> 'id';
SELECT fleet.create_device('no-template', template => 'dtmi:no:Such;1') ->> 'id';
SELECT fleet.create_device('no-org', organization => 'nowhere') ->> 'id';
SELECT fleet.create_device('null-flag', simulated => NULL) ->> 'id';

-- limits: 128 characters of id and 148 of name are fine
SELECT length(fleet.create_device(repeat('a', 128), repeat('n', 148)) ->> 'id') AS id_length;

-- the table itself refuses what the functions refuse
\set VERBOSITY terse
INSERT INTO fleet.devices (id, display_name) VALUES ('direct insert', 'x');
UPDATE fleet.devices SET display_name = repeat('n', 149) WHERE id = 'thermo-1';
UPDATE fleet.devices SET x509_thumbprint_primary = 'not-hex' WHERE id = 'thermo-1';
\set VERBOSITY default
UPDATE fleet.devices SET x509_thumbprint_primary = repeat('AB', 20) WHERE id = 'thermo-1';

-- organizations in use cannot be deleted (the function refuses; there is
-- no trigger, which Citus would refuse on a distributed table)
SELECT fleet.delete_organization('contoso-east');

-- a device as JSON; its name, organization and simulated flag change
SELECT fleet.get_device('thermo-1') - 'properties' - 'reported' - 'cloudProperties' AS device;
SELECT fleet.get_device('no-such-device');
SELECT fleet.update_device('thermo-1', '{"displayName": "Thermostat One", "simulated": true, "organization": "contoso-east"}')
       - 'properties' - 'reported' - 'cloudProperties' AS device;
SELECT fleet.update_device('thermo-1', '{"template": "dtmi:other;1"}');
SELECT fleet.update_device('thermo-1', ('{"displayName": "' || repeat('n', 149) || '"}')::jsonb);
SELECT fleet.update_device('thermo-1', '{"simulated": "yes"}');
SELECT fleet.update_device('thermo-1', '{"organization": "nowhere"}');
SELECT fleet.update_device('thermo-1', NULL);
SELECT fleet.update_device('no-such-device', '{}');
SELECT fleet.update_device('thermo-1', '{"displayName": "", "simulated": false, "organization": "root"}')
       ->> 'displayName' AS name_defaults_to_id;
SELECT fleet.update_device('thermo-1', '{"displayName": "Thermostat 1"}') ->> 'displayName';

-- deletion
SELECT fleet.delete_device(repeat('a', 128));
SELECT fleet.delete_device('no-such-device');
SELECT count(*) FROM fleet.devices;
