-- Device operations: one row per import, and the rows it rejected
-- (src/sql/device_import.sql).

CREATE TABLE fleet.device_operations (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('import')),
    status          text NOT NULL CHECK (status IN ('running', 'completed', 'completed_with_errors', 'failed')),
    template_id     text,
    organization_id text NOT NULL,
    rows            bigint NOT NULL DEFAULT 0,
    imported        bigint NOT NULL DEFAULT 0,
    rejected        bigint NOT NULL DEFAULT 0,
    started_by      name NOT NULL DEFAULT current_user,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    error           text                    -- why a failed import failed (a malformed file, a cancel, a rollback)
);
COMMENT ON TABLE fleet.device_operations IS 'The Device Operations panel: one row per device import, with its counts (rows = imported + rejected)';

CREATE TABLE fleet.device_operation_errors (
    operation_id bigint NOT NULL REFERENCES fleet.device_operations (id) ON DELETE CASCADE,
    line         bigint NOT NULL,
    device_id    text,
    error        text NOT NULL,
    PRIMARY KEY (operation_id, line)
);
COMMENT ON TABLE fleet.device_operation_errors IS 'Rows a device import rejected: the file line, the device id as given, and why';
