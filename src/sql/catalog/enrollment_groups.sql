-- Enrollment groups: the keys device keys are derived from
-- (src/sql/device_keys.sql).  Random keys are made at install.

CREATE FUNCTION fleet.generate_group_key()
RETURNS text
LANGUAGE c VOLATILE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'generate_group_key';
COMMENT ON FUNCTION fleet.generate_group_key() IS 'A new random enrollment group key: 64 bytes from a strong random source, base64';

CREATE TABLE fleet.enrollment_groups (
    id            text PRIMARY KEY CHECK (id IN ('SAS-IoT-Devices', 'SAS-IoT-Edge-Devices')),
    primary_key   text NOT NULL,
    secondary_key text NOT NULL,
    rotated_at    timestamptz
);
COMMENT ON TABLE fleet.enrollment_groups IS 'The SAS enrollment groups: SAS-IoT-Devices for devices, SAS-IoT-Edge-Devices for IoT Edge devices';

INSERT INTO fleet.enrollment_groups (id, primary_key, secondary_key)
VALUES ('SAS-IoT-Devices', fleet.generate_group_key(), fleet.generate_group_key()),
       ('SAS-IoT-Edge-Devices', fleet.generate_group_key(), fleet.generate_group_key());
