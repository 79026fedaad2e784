\set SHOW_CONTEXT never
-- DTDL v2 device templates.
\set thermostat `cat test/data/thermostat-1.json`
\set env_sensor `cat test/data/iotc_env_sensor.json`

-- the public Thermostat model: one Interface, @type arrays with semantic types
SELECT fleet.import_template(:'thermostat') ->> 'id';
SELECT id, display_name, description FROM fleet.device_templates;
SELECT component, name, capability, schema, semantic_types
  FROM fleet.template_capabilities
 WHERE template_id = 'dtmi:com:example:Thermostat;1' ORDER BY name;
SELECT name, request, response #> '{schema,fields}' -> 0 AS first_response_field
  FROM fleet.template_capabilities WHERE capability = 'command';

-- importing the same model again is harmless
SELECT fleet.import_template(:'thermostat') ->> 'id';

-- IoT Central's export style: an array of Interfaces joined by Components,
-- the iotcentral context, language maps, Cloud properties, min/max ranges,
-- Enum, Object (declared in "schemas"), Map and Array schemas; the second
-- component's interface comes in the same array, the first was imported before
SELECT fleet.import_template(:'env_sensor') ->> 'id';
SELECT id, display_name FROM fleet.device_templates ORDER BY id;
SELECT coalesce(component, '(root)') AS component, name, capability, schema, min_value, max_value
  FROM fleet.template_capabilities
 WHERE template_id = 'dtmi:contoso:EnvSensor;1'
 ORDER BY component NULLS FIRST, name;
SELECT name, request, response FROM fleet.template_capabilities
 WHERE template_id = 'dtmi:contoso:EnvSensor;1' AND capability = 'command' ORDER BY name;
SELECT name, capability, component_interface FROM fleet.template_contents
 WHERE template_id = 'dtmi:contoso:EnvSensor;1' AND capability = 'component' ORDER BY name;

-- a minimal model for the refusals below
CREATE FUNCTION pg_temp.model(contents jsonb, extra jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('@id', 'dtmi:test:Bad;1', '@type', 'Interface',
                              '@context', 'dtmi:dtdl:context;2', 'contents', contents) || extra
$$;
SELECT fleet.import_template(pg_temp.model('[{"@type": "Telemetry", "name": "t", "schema": "double"}]')) ->> 'id';
DELETE FROM fleet.device_templates WHERE id = 'dtmi:test:Bad;1';

-- refusals, each naming what is wrong
SELECT fleet.import_template('"just a string"') ->> 'id';
SELECT fleet.import_template(NULL) ->> 'id';
SELECT fleet.import_template('[]') ->> 'id';
SELECT fleet.import_template('{"@id": "dtmi:test:X;1", "@type": "CapabilityModel", "@context": "dtmi:dtdl:context;2"}') ->> 'id';
SELECT fleet.import_template('[{"@id": "dtmi:test:X;1", "@type": "Interface", "@context": "dtmi:dtdl:context;2"}, 42]') ->> 'id';
SELECT fleet.import_template(pg_temp.model('[]', '{"@id": "dtmi:test:Bad"}')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[]', '{"@id": "urn:test:Bad;1"}')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[]', '{"@id": "dtmi:test:Bad_;1"}')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[]', '{"@context": "dtmi:dtdl:context;3"}')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[]', '{"@type": 7}')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Telemetry", "name": "t", "schema": "double"},
                                            {"@type": "Property", "name": "t", "schema": "string"}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Telemetry", "name": "t", "schema": "doubel"}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Telemetry", "name": "t", "schema": {"@type": "Set"}}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Telemetry", "name": "t"}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Telemetry", "name": "t",
    "schema": {"@type": "Object", "fields": [{"name": "a", "schema": "nope"}]}}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Property", "name": "p",
    "schema": {"@type": "Enum", "valueSchema": "integer", "enumValues": [{"name": "a", "enumValue": "x"}]}}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Property", "name": "p",
    "schema": {"@type": "Map", "mapKey": {"name": "k", "schema": "integer"}, "mapValue": {"name": "v", "schema": "string"}}}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Property", "name": "p",
    "schema": {"@type": "Array", "elementSchema": "dtmi:test:Missing;1"}}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Widget", "name": "w", "schema": "double"}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Telemetry", "name": "1bad", "schema": "double"}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Property", "name": "p", "schema": "string", "minValue": 1}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Property", "name": "p", "schema": "double", "minValue": 10, "maxValue": 1}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Property", "name": "p", "schema": "double", "writable": "yes"}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Component", "name": "c", "schema": "dtmi:test:Unknown;1"}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Component", "name": "c", "schema": "not a dtmi"}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Component", "name": "c", "schema": "dtmi:contoso:EnvSensor;1"}]')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[]', '{"extends": "dtmi:test:Base;1"}')) ->> 'id';
SELECT fleet.import_template(pg_temp.model('[{"@type": "Telemetry", "name": "t", "schema": "double", "displayName": 5}]')) ->> 'id';
SELECT fleet.import_template(jsonb_build_array(pg_temp.model('[]'), pg_temp.model('[]'))) ->> 'id';
-- a re-import of an existing id with different content
SELECT fleet.import_template(jsonb_set(:'thermostat'::jsonb, '{displayName}', '"Changed"')) ->> 'id';

-- nothing of the refused models was stored
SELECT id FROM fleet.device_templates ORDER BY id;

-- templates in use cannot be deleted
SELECT fleet.create_device('uses-thermostat', template => 'dtmi:com:example:Thermostat;1') ->> 'id';
SELECT fleet.delete_template('dtmi:com:example:Thermostat;1');
SELECT fleet.delete_device('uses-thermostat');

-- a template as IoT Central's REST API shows it; its names change, its
-- model does not; deleting refuses what is in use and names by what
SELECT t - 'capabilityModel' AS template, t #>> '{capabilityModel,@id}' AS model_id
  FROM fleet.get_template('dtmi:com:example:Thermostat;1') t;
SELECT fleet.get_template('dtmi:no:Such;1');
SELECT fleet.update_template('dtmi:com:example:Thermostat;1', '{"displayName": "Thermostat (lab)"}') ->> 'displayName';
SELECT fleet.update_template('dtmi:com:example:Thermostat;1', '{"contents": []}');
SELECT fleet.update_template('dtmi:com:example:Thermostat;1', '{"displayName": 7}');
SELECT fleet.update_template('dtmi:com:example:Thermostat;1', '{"displayName": "Thermostat"}') ->> 'displayName';
SELECT fleet.create_device('uses-thermostat', template => 'dtmi:com:example:Thermostat;1') ->> 'id';
SELECT fleet.delete_template('dtmi:com:example:Thermostat;1');
SELECT fleet.delete_device('uses-thermostat');
SELECT fleet.delete_template('dtmi:com:example:Thermostat;1');   -- EnvSensor still uses it as a component
SELECT fleet.import_template(pg_temp.model('[]', '{"@id": "dtmi:test:Unused;1"}')) ->> 'id';
SELECT fleet.delete_template('dtmi:test:Unused;1');
SELECT fleet.delete_template('dtmi:test:Unused;1');
