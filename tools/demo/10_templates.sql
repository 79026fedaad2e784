-- A device template from the public DTDL Thermostat model, and what it offers.
\set thermostat `cat thermostat-1.json`
SELECT fleet.import_template(:'thermostat') ->> 'id' AS template;
SELECT coalesce(component, '(root)') AS component, name, capability, schema
  FROM fleet.template_capabilities
 WHERE template_id = 'dtmi:com:example:Thermostat;1'
 ORDER BY name;

-- an organization to import into
SELECT fleet.create_organization('contoso', 'Contoso');
