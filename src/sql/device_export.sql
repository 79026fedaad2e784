-- Device export in IoT Central's CSV format, with SAS keys derived from the
-- enrollment groups:
--
--   \copy (SELECT * FROM fleet.export_devices('dtmi:com:example:Thermostat;1')) TO 'devices.csv' WITH (FORMAT csv, HEADER)
--
-- Rows come in no particular order; add ORDER BY 1 to the query for one.

CREATE FUNCTION fleet.export_devices(template text DEFAULT NULL, organization text DEFAULT NULL)
RETURNS TABLE ("IOTC_DEVICEID" text, "IOTC_DEVICENAME" text,
               "IOTC_SASKEY_PRIMARY" text, "IOTC_SASKEY_SECONDARY" text,
               "IOTC_X509THUMBPRINT_PRIMARY" text, "IOTC_X509THUMBPRINT_SECONDARY" text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    device_group fleet.enrollment_groups;
    edge_group   fleet.enrollment_groups;
BEGIN
    IF template IS NOT NULL THEN
        PERFORM fleet.require_template(template);
    END IF;
    IF organization IS NOT NULL THEN
        PERFORM fleet.require_organization(organization);
    END IF;
    SELECT g.* INTO device_group FROM fleet.enrollment_groups g WHERE g.id = 'SAS-IoT-Devices';
    SELECT g.* INTO edge_group FROM fleet.enrollment_groups g WHERE g.id = 'SAS-IoT-Edge-Devices';

    RETURN QUERY
    SELECT d.id, d.display_name,
           fleet.compute_device_key(CASE WHEN d.edge THEN edge_group.primary_key ELSE device_group.primary_key END, d.id),
           fleet.compute_device_key(CASE WHEN d.edge THEN edge_group.secondary_key ELSE device_group.secondary_key END, d.id),
           d.x509_thumbprint_primary,      -- NULL: an empty CSV field
           d.x509_thumbprint_secondary
      FROM fleet.devices d
     WHERE (template IS NULL OR d.template_id = template)
       AND (organization IS NULL
            OR d.organization_id IN (SELECT o.id FROM fleet.organizations o WHERE o.path @> ARRAY[organization]));
END;
$$;
COMMENT ON FUNCTION fleet.export_devices(text, text) IS 'Devices in IoT Central''s export format (IOTC_DEVICEID, IOTC_DEVICENAME, SAS keys, X.509 thumbprints), optionally of one template and one organization subtree';
