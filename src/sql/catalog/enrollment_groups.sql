-- Enrollment groups: the keys device keys are derived from
-- (src/sql/device_keys.sql).  Random keys are made at install, for root's
-- two groups (IoT Central's), and for every organization created since
-- 0.2, so that no administrator can derive keys of devices another
-- organization will own.

CREATE FUNCTION fleet_internal.generate_group_key()
RETURNS text
LANGUAGE c VOLATILE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'generate_group_key';
COMMENT ON FUNCTION fleet_internal.generate_group_key() IS 'A new random enrollment group key: 64 bytes from a strong random source, base64';

CREATE TABLE fleet.enrollment_groups (
    id              text PRIMARY KEY,
    primary_key     text NOT NULL,
    secondary_key   text NOT NULL,
    rotated_at      timestamptz,
    organization_id text NOT NULL DEFAULT 'root' REFERENCES fleet.organizations (id) ON DELETE CASCADE,
    edge            boolean NOT NULL DEFAULT false,     -- the group of the organization's IoT Edge devices
    CONSTRAINT enrollment_groups_one_per_kind UNIQUE (organization_id, edge),
    display_name    text,
    enabled         boolean NOT NULL DEFAULT true           -- a disabled group's devices export no keys
);
COMMENT ON TABLE fleet.enrollment_groups IS 'The SAS enrollment groups: root''s SAS-IoT-Devices and SAS-IoT-Edge-Devices, and a pair per organization created since 0.2; a device''s keys derive from the nearest pair up its organization''s path';

INSERT INTO fleet.enrollment_groups (id, primary_key, secondary_key, organization_id, edge)
VALUES ('SAS-IoT-Devices', fleet_internal.generate_group_key(), fleet_internal.generate_group_key(), 'root', false),
       ('SAS-IoT-Edge-Devices', fleet_internal.generate_group_key(), fleet_internal.generate_group_key(), 'root', true);
