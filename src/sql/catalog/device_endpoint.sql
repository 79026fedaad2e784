-- The MQTT device endpoint's record of refused connections
-- (src/sql/device_endpoint.sql): a count per bridge and reason, and the
-- last client refused, so an operator sees refusals without reading the
-- broker's log.  Never a key or a token.
CREATE TABLE fleet.endpoint_refusals (
    gateway        text NOT NULL,
    reason         text NOT NULL,
    refusals       bigint NOT NULL DEFAULT 0,
    last_client_id text,
    last_at        timestamptz,
    PRIMARY KEY (gateway, reason)
);
COMMENT ON TABLE fleet.endpoint_refusals IS 'Connections and messages the MQTT endpoint refused, counted per bridge and reason, with the last client id refused';
