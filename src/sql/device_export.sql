-- Device export in IoT Central's CSV format, with SAS keys derived from the
-- enrollment groups:
--
--   \copy (SELECT * FROM fleet.export_devices('dtmi:com:example:Thermostat;1')) TO 'devices.csv' WITH (FORMAT csv, HEADER)
--
-- Rows come in no particular order; add ORDER BY 1 to the query for one.

CREATE FUNCTION fleet.export_devices(template text DEFAULT NULL, organization text DEFAULT NULL,
                                     spreadsheet_safe boolean DEFAULT false)
RETURNS TABLE ("IOTC_DEVICEID" text, "IOTC_DEVICENAME" text,
               "IOTC_SASKEY_PRIMARY" text, "IOTC_SASKEY_SECONDARY" text,
               "IOTC_X509THUMBPRINT_PRIMARY" text, "IOTC_X509THUMBPRINT_SECONDARY" text)
LANGUAGE plpgsql STABLE
-- SECURITY DEFINER: the keys derive from the enrollment group keys, which
-- members may not read; this function reads them for administrators of the
-- devices' organizations, and returns only their devices.  EXECUTE stays
-- with PUBLIC: the checks are inside.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- (two key derivations a device make a million devices' export look
-- costly enough to compile; compiling takes longer than it saves)
SET jit = off
AS $$
DECLARE
    caller       name := fleet_internal.calling_role();
    everything   boolean := fleet_internal.role_sees_everything(caller);
    scope        text[];
    device_group fleet.enrollment_groups;
    edge_group   fleet.enrollment_groups;
    device_primary   text;
    device_secondary text;
    edge_primary     text;
    edge_secondary   text;
    -- whether any device names its group (the partial index answers at
    -- once): if none does, the other branches need not filter them out.
    -- (The function is STABLE: this and the query below see one snapshot,
    -- so a device named meanwhile is in neither or in both.)
    any_named        boolean := EXISTS (SELECT 1 FROM fleet.devices d WHERE d.enrollment_group_id IS NOT NULL);
BEGIN
    IF template IS NOT NULL THEN
        PERFORM fleet_internal.require_template(template);
    END IF;
    IF organization IS NOT NULL THEN
        PERFORM fleet_internal.require_organization(organization, caller);
        PERFORM fleet_internal.require_app_role(organization, 'administrator', 'exporting devices with their keys', caller);
    ELSIF NOT everything AND NOT EXISTS (SELECT 1 FROM fleet_internal.organizations_for('administrator', caller)) THEN
        RAISE EXCEPTION 'permission denied to export devices with their keys'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Exports carry device keys: they are for administrators of the devices'' organizations.',
                  HINT = 'An administrator grants the role with fleet.grant_organization().';
    END IF;

    -- the organizations whose devices are exported (NULL: all of them)
    IF organization IS NOT NULL OR NOT everything THEN
        scope := ARRAY(SELECT o.id FROM fleet.organizations o
                        WHERE (organization IS NULL OR o.path @> ARRAY[organization])
                          AND (everything OR o.id IN (SELECT fleet_internal.organizations_for('administrator', caller))));
    END IF;

    -- When every organization in scope derives its keys from the same pair
    -- of groups (one organization, or a fleet of 0.1's organizations), the
    -- keys are constants of the query: joining each device to its
    -- organization's groups costs a quarter of the export.  (Devices that
    -- name their own group are a branch of their own.)
    IF (SELECT count(DISTINCT x.group_id) = count(DISTINCT x.edge)
          FROM fleet_internal.organization_enrollment_groups x
         WHERE scope IS NULL OR x.organization_id = ANY (scope)) THEN
        SELECT g.* INTO device_group
          FROM fleet_internal.organization_enrollment_groups x JOIN fleet.enrollment_groups g ON g.id = x.group_id
         WHERE (scope IS NULL OR x.organization_id = ANY (scope)) AND NOT x.edge
         LIMIT 1;
        SELECT g.* INTO edge_group
          FROM fleet_internal.organization_enrollment_groups x JOIN fleet.enrollment_groups g ON g.id = x.group_id
         WHERE (scope IS NULL OR x.organization_id = ANY (scope)) AND x.edge
         LIMIT 1;
    END IF;

    IF device_group.enabled THEN
        device_primary := device_group.primary_key;
        device_secondary := device_group.secondary_key;
    END IF;
    IF edge_group.enabled THEN
        edge_primary := edge_group.primary_key;
        edge_secondary := edge_group.secondary_key;
    END IF;

    -- (cells are neutralised only when asked: a function call per cell of a
    -- million rows costs seconds)
    RETURN QUERY
    SELECT CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(k.id, true) ELSE k.id END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(k.display_name, true) ELSE k.display_name END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(k.primary_key, true) ELSE k.primary_key END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(k.secondary_key, true) ELSE k.secondary_key END,
           k.x509_thumbprint_primary,      -- NULL: an empty CSV field
           k.x509_thumbprint_secondary
      FROM (SELECT d.id, d.display_name, d.x509_thumbprint_primary, d.x509_thumbprint_secondary,
                   -- (a disabled group's devices get no keys: NULL in, NULL out)
                   fleet.compute_device_key(CASE WHEN d.edge THEN edge_primary ELSE device_primary END, d.id) AS primary_key,
                   fleet.compute_device_key(CASE WHEN d.edge THEN edge_secondary ELSE device_secondary END, d.id) AS secondary_key
              FROM fleet.devices d
             WHERE device_group.id IS NOT NULL AND (NOT any_named OR d.enrollment_group_id IS NULL)
               AND (template IS NULL OR d.template_id = template)
               AND (scope IS NULL OR d.organization_id IN (SELECT unnest(scope)))
            UNION ALL
            SELECT d.id, d.display_name, d.x509_thumbprint_primary, d.x509_thumbprint_secondary,
                   fleet.compute_device_key(CASE WHEN g.enabled THEN g.primary_key END, d.id),
                   fleet.compute_device_key(CASE WHEN g.enabled THEN g.secondary_key END, d.id)
              FROM fleet.devices d
              -- (a hash join with one row per organization and kind)
              JOIN fleet_internal.organization_enrollment_groups g
                ON g.organization_id = d.organization_id AND g.edge = d.edge
             WHERE device_group.id IS NULL AND (NOT any_named OR d.enrollment_group_id IS NULL)
               AND (template IS NULL OR d.template_id = template)
               AND (scope IS NULL OR d.organization_id IN (SELECT unnest(scope)))
            UNION ALL
            -- devices that name their group, found through the partial index
            -- on the column (a join on every device, even one that names no
            -- group, costs the export 5 %)
            SELECT d.id, d.display_name, d.x509_thumbprint_primary, d.x509_thumbprint_secondary,
                   fleet.compute_device_key(CASE WHEN n.enabled THEN n.primary_key END, d.id),
                   fleet.compute_device_key(CASE WHEN n.enabled THEN n.secondary_key END, d.id)
              FROM fleet.devices d
              -- (a device is never left out: a group gone gives no keys)
              LEFT JOIN fleet.enrollment_groups n ON n.id = d.enrollment_group_id
             -- (no "any_named AND" here: an empty index scan costs nothing,
             -- and Citus cannot plan an outer join under a condition on
             -- the function's own values on PostgreSQL 15)
             WHERE d.enrollment_group_id IS NOT NULL
               AND (template IS NULL OR d.template_id = template)
               AND (scope IS NULL OR d.organization_id IN (SELECT unnest(scope)))) k;
END;
$$;
COMMENT ON FUNCTION fleet.export_devices(text, text, boolean) IS 'Devices in IoT Central''s export format (IOTC_DEVICEID, IOTC_DEVICENAME, SAS keys, X.509 thumbprints), optionally of one template and one organization subtree';
