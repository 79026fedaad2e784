-- Device groups (src/sql/device_groups.sql).

CREATE TABLE fleet.device_groups (
    id              text PRIMARY KEY,
    display_name    text NOT NULL,
    template_id     text REFERENCES fleet.device_templates (id),
    filter          jsonpath,
    organization_id text NOT NULL DEFAULT 'root' REFERENCES fleet.organizations (id),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    description     text,
    query           text        -- IoT Central's query as given; template_id and filter are its translation
);
COMMENT ON TABLE fleet.device_groups IS 'Device groups: devices of template_id (any when NULL) in organization_id or below that match filter (all when NULL)';
