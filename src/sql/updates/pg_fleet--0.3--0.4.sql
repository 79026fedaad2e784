-- pg_fleet 0.3 to 0.4: the changes to what holds data, and the code that
-- went away or changed its signature.  The code itself is reloaded after
-- this by the update script (tools/build-sql.sh), and every policy was
-- dropped before it, to be made again.

-- Enrollment groups as IoT Central's REST API has them: any number per
-- organization (one default pair per organization, the groups every 0.3
-- database has), and X.509 groups, whose signing certificates are kept
-- beside them and which have no keys.
ALTER TABLE fleet.enrollment_groups
    ALTER COLUMN primary_key DROP NOT NULL,
    ALTER COLUMN secondary_key DROP NOT NULL,
    ADD COLUMN organization_default boolean NOT NULL DEFAULT false,
    ADD COLUMN attestation text NOT NULL DEFAULT 'symmetricKey',
    ADD CONSTRAINT enrollment_groups_attestation_check CHECK (attestation IN ('symmetricKey', 'x509')),
    ADD CONSTRAINT enrollment_groups_keys_check
        CHECK ((attestation = 'symmetricKey') = (primary_key IS NOT NULL AND secondary_key IS NOT NULL)),
    ADD CONSTRAINT enrollment_groups_default_check CHECK (NOT organization_default OR attestation = 'symmetricKey');
UPDATE fleet.enrollment_groups SET organization_default = true;
ALTER TABLE fleet.enrollment_groups DROP CONSTRAINT enrollment_groups_one_per_kind;
CREATE UNIQUE INDEX enrollment_groups_one_default_per_kind ON fleet.enrollment_groups (organization_id, edge)
    WHERE organization_default;
COMMENT ON TABLE fleet.enrollment_groups IS 'Enrollment groups: root''s SAS-IoT-Devices and SAS-IoT-Edge-Devices, a default pair per organization created since 0.2, and any made with fleet.import_enrollment_group(); a device''s keys derive from the group it names, else from the nearest default pair up its organization''s path';

CREATE TABLE fleet.enrollment_group_certificates (
    enrollment_group_id text NOT NULL REFERENCES fleet.enrollment_groups (id) ON DELETE CASCADE,
    entry               text NOT NULL CHECK (entry IN ('primary', 'secondary')),
    certificate         text NOT NULL,
    sha1_thumbprint     text NOT NULL,
    verified            boolean NOT NULL DEFAULT false,
    verification_code   text,
    PRIMARY KEY (enrollment_group_id, entry)
);
COMMENT ON TABLE fleet.enrollment_group_certificates IS 'The primary and secondary signing certificates of X.509 enrollment groups, and whether each was verified';
SELECT pg_catalog.pg_extension_config_dump('fleet.enrollment_group_certificates', '');

-- a device may name its enrollment group (NULL: its organization's default)
ALTER TABLE fleet.devices ADD COLUMN enrollment_group_id text;

-- an imported row's keys may match any group its device may name
DROP FUNCTION IF EXISTS fleet_internal.device_credentials_problem(record, fleet.enrollment_groups);

-- the names 0.2 deprecated (0.1's), kept through 0.3, go
DROP FUNCTION IF EXISTS fleet.organization_member_list(text);
DROP FUNCTION IF EXISTS fleet.group_members(text);
DROP FUNCTION IF EXISTS fleet.group_member_count(text);
DROP FUNCTION IF EXISTS fleet.rotate_group_key(text, text);
DROP FUNCTION IF EXISTS fleet.job_device_list(text, text, text);
DROP FUNCTION IF EXISTS fleet.organization_subtree(text);
DROP FUNCTION IF EXISTS fleet.scheduled_job_instances(text);
DROP FUNCTION IF EXISTS fleet.sync_schedule_cron(text);
CREATE INDEX devices_enrollment_group_idx ON fleet.devices (enrollment_group_id)
    WHERE enrollment_group_id IS NOT NULL;
