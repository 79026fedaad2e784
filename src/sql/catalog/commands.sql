-- Command deliveries offered to gateways (src/sql/command_claims.sql).

-- The job's number, times 2^32, is the base of its delivery ids: ids are
-- unique and contiguous per job without a sequence call per device.
CREATE SEQUENCE fleet_internal.delivery_blocks;

CREATE TABLE fleet.command_windows (
    job_id         text NOT NULL REFERENCES fleet.jobs (id) ON DELETE CASCADE,
    batch          int NOT NULL,
    first_delivery bigint NOT NULL,
    last_delivery  bigint NOT NULL,
    opened_at      timestamptz NOT NULL,
    deadline       timestamptz NOT NULL,       -- unclaimed commands time out then (a resume moves it)
    next_check     timestamptz,                -- earliest time one of its commands can time out
    PRIMARY KEY (job_id, first_delivery)
);
COMMENT ON TABLE fleet.command_windows IS 'Ranges of a command job''s deliveries offered to gateways; a window goes once every device in it has its outcome';
