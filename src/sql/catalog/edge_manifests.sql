-- IoT Edge deployment manifests (src/sql/edge_manifests.sql).

CREATE TABLE fleet.edge_manifests (
    id           text PRIMARY KEY,
    display_name text NOT NULL,
    manifest     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    organizations text[]        -- as IoT Central's body names them; a manifest is the application's
);
COMMENT ON TABLE fleet.edge_manifests IS 'IoT Edge deployment manifests (modulesContent with $edgeAgent and $edgeHub)';
