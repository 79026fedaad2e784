-- Device templates: DTDL Interfaces and their validated contents
-- (src/sql/device_templates.sql).

CREATE TABLE fleet.device_templates (
    id           text PRIMARY KEY,          -- the Interface's DTMI
    display_name text,
    description  text,
    model        jsonb NOT NULL,            -- the Interface exactly as imported
    imported_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE fleet.device_templates IS 'DTDL v2 Interfaces imported with fleet.import_template(); any of them can be a device template';

CREATE TABLE fleet.template_contents (
    template_id     text NOT NULL REFERENCES fleet.device_templates (id) ON DELETE CASCADE,
    name            text NOT NULL,
    capability      text NOT NULL CHECK (capability IN ('telemetry', 'property', 'writable_property',
                                                        'cloud_property', 'command', 'component',
                                                        'relationship')),
    semantic_types  text[] NOT NULL DEFAULT '{}',
    display_name    text,
    schema          jsonb,           -- resolved: a primitive name or a complex schema object
    min_value       numeric,         -- IoT Central minValue/maxValue, when given
    max_value       numeric,
    request         jsonb,           -- commands: {"name", "schema"} with the schema resolved
    response        jsonb,
    component_interface text REFERENCES fleet.device_templates (id),
    PRIMARY KEY (template_id, name)
);
CREATE INDEX template_contents_component_idx ON fleet.template_contents (component_interface);
COMMENT ON TABLE fleet.template_contents IS 'The contents of each imported Interface, validated, with schemas resolved';
