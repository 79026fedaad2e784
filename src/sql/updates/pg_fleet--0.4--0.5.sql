-- pg_fleet 0.4 to 0.5: the changes to what holds data, and the code that
-- went away or changed its signature.  The code itself is reloaded after
-- this by the update script (tools/build-sql.sh), and every policy was
-- dropped before it, to be made again.

-- The MQTT device endpoint: each device's twin versions and connection
-- (columns with constant defaults: no table rewrite).
ALTER TABLE fleet.devices
    ADD COLUMN desired_version bigint NOT NULL DEFAULT 1,
    ADD COLUMN desired_versions jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN reported_version bigint NOT NULL DEFAULT 1,
    ADD COLUMN connection_state text CHECK (connection_state IN ('connected', 'disconnected')),
    ADD COLUMN connection_changed_at timestamptz,
    ADD COLUMN last_activity_at timestamptz,
    ADD COLUMN telemetry_messages bigint NOT NULL DEFAULT 0,
    ADD COLUMN endpoint_gateway text,
    ADD COLUMN endpoint_listens int NOT NULL DEFAULT 0,
    ADD COLUMN desired_sent_version bigint NOT NULL DEFAULT 0;
CREATE INDEX devices_endpoint_gateway_idx ON fleet.devices (endpoint_gateway)
    WHERE endpoint_gateway IS NOT NULL;

ALTER TABLE fleet.enrollment_groups
    ADD COLUMN auto_register boolean NOT NULL DEFAULT false,
    ADD COLUMN auto_register_template text;

CREATE TABLE fleet.endpoint_refusals (
    gateway        text NOT NULL,
    reason         text NOT NULL,
    refusals       bigint NOT NULL DEFAULT 0,
    last_client_id text,
    last_at        timestamptz,
    PRIMARY KEY (gateway, reason)
);
COMMENT ON TABLE fleet.endpoint_refusals IS 'Connections and messages the MQTT endpoint refused, counted per bridge and reason, with the last client id refused';
