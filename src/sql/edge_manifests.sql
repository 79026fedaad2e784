-- IoT Edge deployment manifests, assigned to edge devices by manifest jobs.
-- Shared by the whole application, as templates are: root's
-- administrators write them, everyone reads them.

-- Refuses a manifest IoT Edge would not deploy: it must configure the two
-- system modules' desired properties.
CREATE FUNCTION fleet_internal.require_manifest_content(manifest_id text, manifest jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    module text;
BEGIN
    IF jsonb_typeof(manifest -> 'modulesContent') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'edge manifest "%" has no "modulesContent" object', manifest_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass an IoT Edge deployment manifest: {"modulesContent": {"$edgeAgent": {"properties.desired": {...}}, "$edgeHub": {"properties.desired": {...}}}}.';
    END IF;
    FOREACH module IN ARRAY ARRAY['$edgeAgent', '$edgeHub'] LOOP
        IF jsonb_typeof(manifest -> 'modulesContent' -> module) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'edge manifest "%" has no "%" module', manifest_id, module
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Every deployment manifest configures the $edgeAgent and $edgeHub system modules.';
        END IF;
        IF jsonb_typeof(manifest -> 'modulesContent' -> module -> 'properties.desired') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'module "%" of edge manifest "%" has no "properties.desired" object', module, manifest_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write the module''s desired properties as "properties.desired": {...}.';
        END IF;
    END LOOP;
    RETURN manifest;
END;
$$;

-- The manifest, or "does not exist".
CREATE FUNCTION fleet_internal.require_edge_manifest(manifest_id text)
RETURNS fleet.edge_manifests
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m fleet.edge_manifests;
BEGIN
    SELECT em.* INTO m FROM fleet.edge_manifests em WHERE em.id = require_edge_manifest.manifest_id;
    IF NOT FOUND THEN
        PERFORM fleet_internal.refuse_missing('edge manifest', manifest_id,
            'Create it with fleet.create_edge_manifest(), or see the existing ones in fleet.edge_manifests.');
    END IF;
    RETURN m;
END;
$$;

CREATE FUNCTION fleet.get_edge_manifest(manifest_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m fleet.edge_manifests := fleet_internal.require_edge_manifest(manifest_id);
BEGIN
    RETURN jsonb_strip_nulls(jsonb_build_object('id', m.id, 'displayName', m.display_name, 'data', m.manifest,
                                                -- (only those the caller sees)
                                                'organizations', CASE WHEN m.organizations IS NOT NULL THEN
                                                                     to_jsonb(ARRAY(SELECT o FROM unnest(m.organizations) o
                                                                                     WHERE fleet_internal.sees(fleet_internal.calling_role(), o))) END,
                                                'etag', fleet_internal.etag(jsonb_build_array(m.display_name, m.manifest, m.organizations))));
END;
$$;
COMMENT ON FUNCTION fleet.get_edge_manifest(text) IS 'The edge manifest as IoT Central''s REST API shows a deployment manifest: id, displayName, data';

-- SECURITY DEFINER, as every function that writes (src/sql/access.sql);
-- for root's administrators, checked first.
CREATE FUNCTION fleet.create_edge_manifest(manifest_id text, display_name text, manifest jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'creating an edge manifest');
    PERFORM fleet_internal.check_new_object('edge manifest', manifest_id, display_name, 255);
    PERFORM fleet_internal.require_manifest_content(manifest_id, manifest);
    IF EXISTS (SELECT 1 FROM fleet.edge_manifests m WHERE m.id = create_edge_manifest.manifest_id) THEN
        PERFORM fleet_internal.refuse_existing('edge manifest', manifest_id);
    END IF;
    INSERT INTO fleet.edge_manifests (id, display_name, manifest) VALUES (manifest_id, display_name, manifest);
    RETURN fleet.get_edge_manifest(manifest_id);
END;
$$;
COMMENT ON FUNCTION fleet.create_edge_manifest(text, text, jsonb) IS 'Validates and stores an IoT Edge deployment manifest; returns it';

-- Creates a manifest from IoT Central's REST body, as PUT
-- /deploymentManifests/{id} takes it: {"displayName", "data",
-- "organizations"}.  The organizations are checked and kept; a manifest,
-- as a template, serves the whole application.
CREATE FUNCTION fleet.import_edge_manifest(manifest_id text, body jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    label            text := format('edge manifest "%s"', manifest_id);
    organization_ids text[];
BEGIN
    body := fleet_internal.rest_body(body, manifest_id, 'edge manifest', '{id,displayName,data,organizations,etag}',
                                     '{"displayName": ..., "data": {"modulesContent": ...}}');
    IF body ? 'organizations' THEN
        IF jsonb_typeof(body -> 'organizations') <> 'array'
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(body -> 'organizations') o WHERE jsonb_typeof(o) <> 'string') THEN
            RAISE EXCEPTION '"organizations" of % must be an array of organization ids', label
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('It is %s.', body -> 'organizations'),
                      HINT = 'Write "organizations": ["an-organization-id"].';
        END IF;
        organization_ids := ARRAY(SELECT fleet_internal.require_organization(o, fleet_internal.calling_role())
                                 FROM jsonb_array_elements_text(body -> 'organizations') o);
    END IF;
    PERFORM fleet.create_edge_manifest(manifest_id, body ->> 'displayName', body -> 'data');
    UPDATE fleet.edge_manifests m SET organizations = organization_ids WHERE m.id = manifest_id;
    RETURN fleet.get_edge_manifest(manifest_id);
END;
$$;
COMMENT ON FUNCTION fleet.import_edge_manifest(text, jsonb) IS 'Creates an IoT Edge deployment manifest from IoT Central''s REST body ({"displayName", "data", "organizations"}); returns it';

-- Changes a manifest's name or content ({"displayName", "data"}).  Devices
-- that run it keep their deployment until a manifest job assigns it again.
CREATE FUNCTION fleet.update_edge_manifest(manifest_id text, changes jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m     fleet.edge_manifests;
    label text := format('edge manifest "%s"', manifest_id);
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'changing an edge manifest');
    m := fleet_internal.require_edge_manifest(manifest_id);
    -- locked and read again: a merge patch applies to what is there now
    SELECT em.* INTO m FROM fleet.edge_manifests em WHERE em.id = m.id FOR UPDATE;
    PERFORM fleet_internal.require_changes(changes, '{displayName,data}', label);
    IF changes ? 'displayName' THEN
        m.display_name := fleet_internal.changed_display_name(changes, 'edge manifest', m.id, 255);
    END IF;
    IF changes ? 'data' THEN
        -- (a merge patch, as IoT Central's PATCH: a module not named stays)
        m.manifest := fleet_internal.require_manifest_content(m.id, fleet_internal.json_merge_patch(m.manifest, changes -> 'data'));
    END IF;
    UPDATE fleet.edge_manifests em SET display_name = m.display_name, manifest = m.manifest WHERE em.id = m.id;
    RETURN fleet.get_edge_manifest(m.id);
END;
$$;
COMMENT ON FUNCTION fleet.update_edge_manifest(text, jsonb) IS 'Changes an edge manifest''s displayName or content (data, merged as a JSON merge patch); returns it';

-- Deletes a manifest no device runs and no unfinished job or schedule
-- would assign.
CREATE FUNCTION fleet.delete_edge_manifest(manifest_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m     fleet.edge_manifests;
    users bigint;
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'deleting an edge manifest');
    m := fleet_internal.require_edge_manifest(manifest_id);
    PERFORM 1 FROM fleet.edge_manifests em WHERE em.id = m.id FOR UPDATE;
    SELECT u.jobs + u.schedules INTO users FROM fleet_internal.job_data_users('{manifest}', m.id) u;
    IF users > 0 THEN
        PERFORM fleet_internal.refuse_in_use('edge manifest', m.id,
            format('%s unfinished jobs or scheduled jobs would assign it.', users),
            'Delete or finish those jobs and scheduled jobs first.');
    END IF;
    SELECT count(*) INTO users FROM fleet.devices d WHERE d.manifest_id = m.id;
    IF users > 0 THEN
        PERFORM fleet_internal.refuse_in_use('edge manifest', m.id, format('%s devices refer to it.', users),
                                             'Move or delete those devices first.');
    END IF;
    DELETE FROM fleet.edge_manifests em WHERE em.id = m.id;
END;
$$;
COMMENT ON FUNCTION fleet.delete_edge_manifest(text) IS 'Deletes an edge manifest that no device runs and no unfinished job or scheduled job would assign';
