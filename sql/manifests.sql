\set SHOW_CONTEXT never
-- IoT Edge deployment manifests.
SELECT fleet.create_edge_manifest('edge-base', 'Base deployment', '{
  "modulesContent": {
    "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker"},
                   "systemModules": {}, "modules": {"SimulatedTemperatureSensor": {"type": "docker"}}}},
    "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}
  }
}');
SELECT id, display_name, manifest #> '{modulesContent,$edgeHub,properties.desired,schemaVersion}' AS hub_schema
  FROM fleet.edge_manifests;

-- refusals
SELECT fleet.create_edge_manifest('edge-base', 'Again', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "$edgeHub": {"properties.desired": {}}}}');
SELECT fleet.create_edge_manifest('no-modules', 'No modules', '{"content": {}}');
SELECT fleet.create_edge_manifest('no-hub', 'No hub', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}');
SELECT fleet.create_edge_manifest('no-desired', 'No desired', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "$edgeHub": {"properties": {}}}}');
SELECT fleet.create_edge_manifest('not-object', 'Not an object', '[1, 2]');
SELECT fleet.create_edge_manifest('bad id!', 'Bad id', '{}');
SELECT fleet.create_edge_manifest('no-name', '', '{}');
SELECT count(*) FROM fleet.edge_manifests;
