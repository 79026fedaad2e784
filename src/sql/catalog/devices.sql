-- The device registry (src/sql/devices.sql).  No foreign keys: see there.

-- NULL when a device id and name follow IoT Central's rules, else what is
-- wrong with them.  C, without SET search_path: it looks no names up and
-- checks every row of an import.
CREATE FUNCTION fleet_internal.device_identity_problem(device_id text, display_name text DEFAULT NULL)
RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'device_identity_problem';
COMMENT ON FUNCTION fleet_internal.device_identity_problem(text, text) IS 'NULL when the device id (letters, digits, "-", at most 128) and name (at most 148 characters) are acceptable, else the reason';

CREATE TABLE fleet.devices (
    id                        text PRIMARY KEY,
    display_name              text NOT NULL,
    template_id               text,
    organization_id           text NOT NULL DEFAULT 'root',
    simulated                 boolean NOT NULL DEFAULT false,
    edge                      boolean NOT NULL DEFAULT false,
    manifest_id               text,
    properties                jsonb NOT NULL DEFAULT '{}',   -- desired writable properties, twin-shaped
    reported                  jsonb NOT NULL DEFAULT '{}',   -- what the device reported
    cloud_properties          jsonb NOT NULL DEFAULT '{}',
    x509_thumbprint_primary   text,
    x509_thumbprint_secondary text,
    import_operation_id       bigint,                        -- the import that registered it
    created_at                timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT devices_identity_check CHECK (fleet_internal.device_identity_problem(id, display_name) IS NULL),
    CONSTRAINT devices_x509_primary_check CHECK (x509_thumbprint_primary ~ '^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$'),
    CONSTRAINT devices_x509_secondary_check CHECK (x509_thumbprint_secondary ~ '^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$'),
    enrollment_group_id       text,                          -- NULL: its organization's default group for its kind
    -- the twin's versions, as IoT Hub counts them: desired_version moves
    -- with every property job that changes the device, desired_versions
    -- says at which version each property ("name" or "component/name")
    -- last changed, which its writable-property acknowledgement is
    -- compared with (fleet.device_property_sync)
    desired_version           bigint NOT NULL DEFAULT 1,
    desired_versions          jsonb NOT NULL DEFAULT '{}',
    reported_version          bigint NOT NULL DEFAULT 1,
    -- its connection to the MQTT endpoint (tools/fleet-bridge): NULL
    -- until it first connects
    connection_state          text CHECK (connection_state IN ('connected', 'disconnected')),
    connection_changed_at     timestamptz,
    last_activity_at          timestamptz,
    telemetry_messages        bigint NOT NULL DEFAULT 0,
    -- the bridge it is connected through, what it listens for (1: direct
    -- methods, 2: desired property patches) and the desired version it
    -- was last sent
    endpoint_gateway          text,
    endpoint_listens          int NOT NULL DEFAULT 0,
    desired_sent_version      bigint NOT NULL DEFAULT 0
);
-- No secondary indexes on what every device has: every query so far
-- (groups, export) reads most devices, and each index costs about 40 % more
-- import time.  See README.  The devices that name their enrollment group
-- are few, and found through a partial index, which a device that names
-- none costs nothing.
CREATE INDEX devices_enrollment_group_idx ON fleet.devices (enrollment_group_id)
    WHERE enrollment_group_id IS NOT NULL;
-- the devices connected through a bridge, whose commands and patches it
-- looks for on every turn (a device never connected costs nothing), in the
-- order its passes over them take (fleet_internal.endpoint_desired_patches)
CREATE INDEX devices_endpoint_gateway_idx ON fleet.devices (endpoint_gateway, id COLLATE "C")
    WHERE endpoint_gateway IS NOT NULL;
COMMENT ON TABLE fleet.devices IS 'Registered devices; properties and cloud_properties are shaped like an IoT Hub twin''s desired section';
