\set SHOW_CONTEXT never
-- Devices, one at a time.
SELECT fleet.create_device('thermo-1', 'Thermostat 1', 'dtmi:com:example:Thermostat;1');
SELECT fleet.create_device('thermo-2', template => 'dtmi:com:example:Thermostat;1', organization => 'contoso-east');
SELECT fleet.create_device('sim-1', 'Simulated', simulated => true);
SELECT fleet.create_device('gateway-1', 'Edge gateway', organization => 'contoso', edge => true);
SELECT id, display_name, template_id, organization_id, simulated, edge, properties, reported,
       cloud_properties, x509_thumbprint_primary
  FROM fleet.devices ORDER BY id;

-- the document device group filters see
SELECT fleet.device_document(d) FROM fleet.devices d WHERE id = 'thermo-1';

-- refusals
SELECT fleet.create_device('thermo-1');
SELECT fleet.create_device('bad id');
SELECT fleet.create_device('bad_id');
SELECT fleet.create_device('');
SELECT fleet.create_device(NULL);
SELECT fleet.create_device(repeat('a', 129));
SELECT fleet.create_device('long-name', repeat('n', 149));
SELECT fleet.create_device('no-template', template => 'dtmi:no:Such;1');
SELECT fleet.create_device('no-org', organization => 'nowhere');
SELECT fleet.create_device('null-flag', simulated => NULL);

-- limits: 128 characters of id and 148 of name are fine
SELECT length(fleet.create_device(repeat('a', 128), repeat('n', 148))) AS id_length;

-- the table itself refuses what the functions refuse
\set VERBOSITY terse
INSERT INTO fleet.devices (id, display_name) VALUES ('direct insert', 'x');
UPDATE fleet.devices SET display_name = repeat('n', 149) WHERE id = 'thermo-1';
UPDATE fleet.devices SET x509_thumbprint_primary = 'not-hex' WHERE id = 'thermo-1';
\set VERBOSITY default
UPDATE fleet.devices SET x509_thumbprint_primary = repeat('AB', 20) WHERE id = 'thermo-1';

-- organizations in use cannot be deleted
DELETE FROM fleet.organizations WHERE id = 'contoso-east';

-- deletion
SELECT fleet.delete_device(repeat('a', 128));
SELECT fleet.delete_device('no-such-device');
SELECT count(*) FROM fleet.devices;
