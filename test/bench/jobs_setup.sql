-- Job benchmark set-up: the million imported devices, a second template for
-- a 100,000-device command group and a third for a 10,000-device job.
\set QUIET on
SET client_min_messages = warning;
SELECT fleet.import_template(jsonb_build_object('@id', 'dtmi:bench:Commands;1', '@type', 'Interface',
    '@context', 'dtmi:dtdl:context;2',
    'contents', jsonb_build_array(jsonb_build_object('@type', 'Command', 'name', 'reboot')))) \gset
SELECT fleet.import_template(jsonb_build_object('@id', 'dtmi:bench:Small;1', '@type', 'Interface',
    '@context', 'dtmi:dtdl:context;2',
    'contents', jsonb_build_array(jsonb_build_object('@type', 'Property', 'name', 'level',
                                                     'schema', 'integer', 'writable', true)))) \gset
UPDATE fleet.devices SET template_id = 'dtmi:bench:Commands;1' WHERE id <= 'thermostat-0100000';
UPDATE fleet.devices SET template_id = 'dtmi:bench:Small;1' WHERE id > 'thermostat-0100000' AND id <= 'thermostat-0110000';
SELECT fleet.create_device_group('bench-all', 'All thermostats', 'dtmi:com:example:Thermostat;1') \gset
SELECT fleet.create_device_group('bench-commands', '100,000 devices', 'dtmi:bench:Commands;1') \gset
SELECT fleet.create_device_group('bench-small', '10,000 devices', 'dtmi:bench:Small;1') \gset
VACUUM ANALYZE fleet.devices;
CREATE TABLE raw_queue (id bigserial PRIMARY KEY, device_id text NOT NULL, status text NOT NULL, gateway text);
CREATE INDEX ON raw_queue (id) WHERE status = 'queued';
CREATE INDEX ON raw_queue (gateway) WHERE status = 'claimed';
SELECT count(*) AS devices FROM fleet.devices;
