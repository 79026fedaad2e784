-- IoT Edge deployment manifests, assigned to edge devices by manifest jobs.


CREATE FUNCTION fleet.create_edge_manifest(id text, display_name text, manifest jsonb)
RETURNS text
LANGUAGE plpgsql
-- SECURITY DEFINER, as every function that writes (src/sql/access.sql);
-- for root's administrators, checked first.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    module text;
BEGIN
    PERFORM fleet_internal.require_app_role('root', 'administrator', 'creating an edge manifest');
    PERFORM fleet_internal.check_new_object('edge manifest', id, display_name, 255);
    IF jsonb_typeof(manifest -> 'modulesContent') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'edge manifest "%" has no "modulesContent" object', id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass an IoT Edge deployment manifest: {"modulesContent": {"$edgeAgent": {"properties.desired": {...}}, "$edgeHub": {"properties.desired": {...}}}}.';
    END IF;
    FOREACH module IN ARRAY ARRAY['$edgeAgent', '$edgeHub'] LOOP
        IF jsonb_typeof(manifest -> 'modulesContent' -> module) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'edge manifest "%" has no "%" module', id, module
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Every deployment manifest configures the $edgeAgent and $edgeHub system modules.';
        END IF;
        IF jsonb_typeof(manifest -> 'modulesContent' -> module -> 'properties.desired') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'module "%" of edge manifest "%" has no "properties.desired" object', module, id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write the module''s desired properties as "properties.desired": {...}.';
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM fleet.edge_manifests m WHERE m.id = create_edge_manifest.id) THEN
        RAISE EXCEPTION 'edge manifest "%" already exists', id
            USING ERRCODE = 'unique_violation',
                  HINT = 'Choose another id.';
    END IF;
    INSERT INTO fleet.edge_manifests (id, display_name, manifest) VALUES (id, display_name, manifest);
    RETURN id;
END;
$$;
COMMENT ON FUNCTION fleet.create_edge_manifest(text, text, jsonb) IS 'Validates and stores an IoT Edge deployment manifest';
