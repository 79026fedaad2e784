\set SHOW_CONTEXT never
-- IoT Edge deployment manifests.
SELECT fleet.create_edge_manifest('edge-base', 'Base deployment', '{
  "modulesContent": {
    "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker"},
                   "systemModules": {}, "modules": {"SimulatedTemperatureSensor": {"type": "docker"}}}},
    "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}
  }
}') ->> 'id';
SELECT id, display_name, manifest #> '{modulesContent,$edgeHub,properties.desired,schemaVersion}' AS hub_schema
  FROM fleet.edge_manifests;

-- refusals
SELECT fleet.create_edge_manifest('edge-base', 'Again', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "$edgeHub": {"properties.desired": {}}}}') ->> 'id';
SELECT fleet.create_edge_manifest('no-modules', 'No modules', '{"content": {}}') ->> 'id';
SELECT fleet.create_edge_manifest('no-hub', 'No hub', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}') ->> 'id';
SELECT fleet.create_edge_manifest('no-desired', 'No desired', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "$edgeHub": {"properties": {}}}}') ->> 'id';
SELECT fleet.create_edge_manifest('not-object', 'Not an object', '[1, 2]') ->> 'id';
SELECT fleet.create_edge_manifest('bad id!', 'Bad id', '{}') ->> 'id';
SELECT fleet.create_edge_manifest('no-name', '', '{}') ->> 'id';
SELECT count(*) FROM fleet.edge_manifests;

-- a manifest as IoT Central's REST API shows it; changed, and deleted when
-- nothing would assign it
SELECT m - 'data' AS manifest, m #> '{data,modulesContent,$edgeHub,properties.desired,schemaVersion}' AS hub_schema
  FROM fleet.get_edge_manifest('edge-base') m;
SELECT fleet.get_edge_manifest('no-such-manifest');
SELECT fleet.update_edge_manifest('edge-base', '{"displayName": "Base deployment v2",
  "data": {"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1"}},
                              "$edgeHub": {"properties.desired": {"schemaVersion": "1.2"}}}}}')
       #> '{data,modulesContent,$edgeHub,properties.desired,schemaVersion}' AS hub_schema;
-- (data is a merge patch, as IoT Central's PATCH: null removes a module)
SELECT fleet.update_edge_manifest('edge-base', '{"data": {"modulesContent": {}}}') #> '{data,modulesContent}' ? '$edgeAgent' AS agent_stays;
SELECT fleet.update_edge_manifest('edge-base', '{"data": {"modulesContent": {"$edgeAgent": null}}}');
SELECT fleet.update_edge_manifest('edge-base', '{"id": "other"}');
SELECT fleet.update_edge_manifest('edge-base', '{"displayName": null}');
SELECT fleet.create_edge_manifest('edge-spare', 'Spare', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "$edgeHub": {"properties.desired": {}}}}') ->> 'id';
SELECT fleet.create_device('edge-spare-1', edge => true) ->> 'id';
UPDATE fleet.devices SET manifest_id = 'edge-spare' WHERE id = 'edge-spare-1';
SELECT fleet.delete_edge_manifest('edge-spare');
SELECT fleet.delete_device('edge-spare-1');
SELECT fleet.delete_edge_manifest('edge-spare');
SELECT fleet.delete_edge_manifest('edge-spare');
