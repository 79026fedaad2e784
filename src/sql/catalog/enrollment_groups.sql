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
    primary_key     text,                                   -- NULL: an X.509 group
    secondary_key   text,
    rotated_at      timestamptz,
    organization_id text NOT NULL DEFAULT 'root' REFERENCES fleet.organizations (id) ON DELETE CASCADE,
    edge            boolean NOT NULL DEFAULT false,     -- IoT Central's type iotEdge (else iot)
    display_name    text,
    enabled         boolean NOT NULL DEFAULT true,          -- a disabled group's devices export no keys
    -- the group an organization's devices of this kind derive their keys
    -- from unless they name another (its pair made with it); groups made
    -- through the REST API are not
    organization_default boolean NOT NULL DEFAULT false,
    attestation     text NOT NULL DEFAULT 'symmetricKey',
    -- whether a device that is not registered may register itself through
    -- the MQTT endpoint's provisioning (DPS) with a key of this group, and
    -- with which template (the group's organization is its organization)
    auto_register   boolean NOT NULL DEFAULT false,
    auto_register_template text,
    CONSTRAINT enrollment_groups_attestation_check CHECK (attestation IN ('symmetricKey', 'x509')),
    CONSTRAINT enrollment_groups_keys_check
        CHECK ((attestation = 'symmetricKey') = (primary_key IS NOT NULL AND secondary_key IS NOT NULL)),
    CONSTRAINT enrollment_groups_default_check CHECK (NOT organization_default OR attestation = 'symmetricKey')
);
COMMENT ON TABLE fleet.enrollment_groups IS 'Enrollment groups: root''s SAS-IoT-Devices and SAS-IoT-Edge-Devices, a default pair per organization created since 0.2, and any made with fleet.import_enrollment_group(); a device''s keys derive from the group it names, else from the nearest default pair up its organization''s path';
CREATE UNIQUE INDEX enrollment_groups_one_default_per_kind ON fleet.enrollment_groups (organization_id, edge)
    WHERE organization_default;

INSERT INTO fleet.enrollment_groups (id, primary_key, secondary_key, organization_id, edge, organization_default)
VALUES ('SAS-IoT-Devices', fleet_internal.generate_group_key(), fleet_internal.generate_group_key(), 'root', false, true),
       ('SAS-IoT-Edge-Devices', fleet_internal.generate_group_key(), fleet_internal.generate_group_key(), 'root', true, true);

-- The signing certificates of X.509 enrollment groups, as IoT Central
-- keeps them: a primary and a secondary, each verified once its owner
-- proved to hold its private key (src/x509_certificates.c).
CREATE TABLE fleet.enrollment_group_certificates (
    enrollment_group_id text NOT NULL REFERENCES fleet.enrollment_groups (id) ON DELETE CASCADE,
    entry               text NOT NULL CHECK (entry IN ('primary', 'secondary')),
    certificate         text NOT NULL,                -- as it was given
    sha1_thumbprint     text NOT NULL,
    verified            boolean NOT NULL DEFAULT false,
    verification_code   text,                         -- the code the proof of possession must carry
    PRIMARY KEY (enrollment_group_id, entry)
);
COMMENT ON TABLE fleet.enrollment_group_certificates IS 'The primary and secondary signing certificates of X.509 enrollment groups, and whether each was verified';
