-- Run by rest_bodies.sh, after it has loaded body (n, operation, url_id,
-- file, body).  Each body is sent on its own, in a subtransaction rolled
-- back after it, so that no body sees another's objects.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
BEGIN;
SELECT set_config('rest_bodies.stub_certificate', :'stub_certificate', true) IS NULL AS quiet \gset

-- A stub template with exactly the capabilities a job's data names, each
-- with the schema of the value it is sent.
CREATE FUNCTION pg_temp.stub_template(target text, data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    contents jsonb := '[]';
    comps    jsonb := '{}';
    e        jsonb;
    path     text;
    comp     text;
    name     text;
    kind     text;
    schema   jsonb;
    item     jsonb;
    model    jsonb;
BEGIN
    IF EXISTS (SELECT 1 FROM fleet.device_templates t WHERE t.id = target) THEN RETURN; END IF;
    FOR e IN SELECT x FROM jsonb_array_elements(data) x WHERE x ->> 'target' = target LOOP
        path := replace(e ->> 'path', '/', '.');
        comp := CASE WHEN strpos(path, '.') > 0 THEN split_part(path, '.', 1) END;
        name := CASE WHEN strpos(path, '.') > 0 THEN split_part(path, '.', 2) ELSE path END;
        kind := fleet_internal.job_data_type(e ->> 'type');
        schema := to_jsonb(CASE jsonb_typeof(e -> 'value') WHEN 'number' THEN 'double' WHEN 'boolean' THEN 'boolean'
                                WHEN 'string' THEN 'string' ELSE NULL END);
        IF jsonb_typeof(e -> 'value') IN ('object', 'array') THEN
            schema := '{"@type": "Map", "mapKey": {"name": "k", "schema": "string"}, "mapValue": {"name": "v", "schema": "string"}}';
        END IF;
        item := CASE kind
                WHEN 'command' THEN jsonb_build_object('@type', 'Command', 'name', name)
                     || CASE WHEN schema IS NOT NULL THEN jsonb_build_object('request', jsonb_build_object('name', 'r', 'schema', schema)) ELSE '{}' END
                WHEN 'cloudProperty' THEN jsonb_build_object('@type', '["Cloud", "Property"]'::jsonb, 'name', name, 'schema', coalesce(schema, '"string"'))
                ELSE jsonb_build_object('@type', 'Property', 'name', name, 'writable', true, 'schema', coalesce(schema, '"string"')) END;
        IF comp IS NULL THEN
            contents := contents || item;
        ELSE
            comps := jsonb_set(comps, ARRAY[comp], coalesce(comps -> comp, '[]') || item);
        END IF;
    END LOOP;
    contents := contents || coalesce((SELECT jsonb_agg(jsonb_build_object('@type', 'Component', 'name', c.key,
                    'schema', jsonb_build_object('@id', 'dtmi:stub:s' || md5(target) || ':' || c.key || ';1', '@type', 'Interface',
                                                 'contents', c.value)))
                                        FROM jsonb_each(comps) c), '[]');
    model := jsonb_build_object('@type', '["ModelDefinition", "DeviceModel"]'::jsonb, 'displayName', 'stub',
                                'capabilityModel', jsonb_build_object('@id', 'dtmi:stub:s' || md5(target) || ';1',
                                                                      '@type', 'Interface', 'contents', contents));
    PERFORM fleet.import_template(model, target);
END;
$$;

CREATE FUNCTION pg_temp.stub_group(group_id text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF group_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM fleet.device_groups g WHERE g.id = group_id) THEN
        PERFORM fleet.create_device_group(group_id, 'stub');
    END IF;
END;
$$;

CREATE FUNCTION pg_temp.stub_organization(organization text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF organization IS NOT NULL AND NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = organization) THEN
        PERFORM fleet.create_organization(organization, 'stub');
    END IF;
END;
$$;

-- Where a body comes from: its file's name up to "__", "-put-" or "-patch-".
CREATE FUNCTION pg_temp.source_of(file text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT regexp_replace(regexp_replace(file, '^.*/', ''), '(__|-put-|-patch-).*$', '')
$$;

-- An X.509 enrollment group, with the stub certificate (rest_bodies.sh
-- sets it) as its entry's when one is named.
CREATE FUNCTION pg_temp.stub_x509_group(group_id text, entry text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fleet.enrollment_groups g WHERE g.id = group_id) THEN
        PERFORM fleet.import_enrollment_group(group_id, '{"displayName": "stub", "type": "iot", "attestation": {"type": "x509"}}');
    END IF;
    IF entry IS NOT NULL THEN
        PERFORM fleet.set_enrollment_group_certificate(group_id, entry,
                    jsonb_build_object('certificate', current_setting('rest_bodies.stub_certificate')));
    END IF;
END;
$$;

CREATE FUNCTION pg_temp.send(operation text, url_id text, body jsonb, file text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    -- what the body names
    IF body ? 'data' AND jsonb_typeof(body -> 'data') = 'array' THEN
        FOR t IN SELECT DISTINCT x ->> 'target' FROM jsonb_array_elements(body -> 'data') x WHERE x ? 'target' LOOP
            PERFORM pg_temp.stub_template(t, body -> 'data');
        END LOOP;
    END IF;
    IF body ? 'group' THEN PERFORM pg_temp.stub_group(body ->> 'group'); END IF;
    IF jsonb_typeof(body -> 'organizations') = 'array' THEN
        PERFORM pg_temp.stub_organization(o) FROM jsonb_array_elements_text(body -> 'organizations') o;
    END IF;
    IF body ? 'parent' THEN PERFORM pg_temp.stub_organization(body ->> 'parent'); END IF;
    IF operation = 'PUT deviceGroups' AND body ->> 'filter' ~ '\$template = "' THEN
        t := substring(body ->> 'filter' FROM '\$template = "([^"]*)"');
        IF NOT EXISTS (SELECT 1 FROM fleet.device_templates x WHERE x.id = t) THEN
            PERFORM fleet.import_template(jsonb_build_object('@type', '["ModelDefinition", "DeviceModel"]'::jsonb,
                'capabilityModel', jsonb_build_object('@id', 'dtmi:stub:s' || md5(t) || ';1', '@type', 'Interface')), t);
        END IF;
    END IF;
    CASE operation
    WHEN 'PUT deviceTemplates' THEN RETURN fleet.import_template(body, url_id);
    WHEN 'PATCH deviceTemplates' THEN
        -- the template it changes: the one the PUT of the same id from the
        -- same source made (the same API version's examples, the same docs
        -- page: the file name up to "__", "-put-" or "-patch-"), else its own
        -- model under another name
        IF NOT EXISTS (SELECT 1 FROM fleet.device_templates x WHERE x.id = url_id) THEN
            PERFORM fleet.import_template(coalesce((SELECT b.body::jsonb FROM body b
                                                     WHERE b.operation = 'PUT deviceTemplates' AND b.url_id = send.url_id
                                                       AND pg_temp.source_of(b.file) = pg_temp.source_of(send.file)
                                                     ORDER BY b.n LIMIT 1),
                                                    body || '{"displayName": "stub"}'), url_id);
        END IF;
        RETURN fleet.update_template(url_id, body);
    WHEN 'PUT deviceGroups' THEN RETURN fleet.import_device_group(url_id, body);
    WHEN 'PATCH deviceGroups' THEN
        PERFORM pg_temp.stub_group(url_id);
        RETURN fleet.update_device_group(url_id, body);
    WHEN 'PUT jobs' THEN RETURN fleet.save_job(body, url_id);
    WHEN 'PUT scheduledJobs' THEN RETURN fleet.create_scheduled_job(body, url_id);
    WHEN 'PATCH scheduledJobs' THEN
        IF NOT EXISTS (SELECT 1 FROM fleet.scheduled_jobs s WHERE s.id = url_id) THEN
            PERFORM pg_temp.stub_group('stub-group');
            PERFORM pg_temp.stub_template('dtmi:stub:schedule', '[{"type": "command", "target": "dtmi:stub:schedule", "path": "Reboot"}]');
            PERFORM fleet.create_scheduled_job('{"displayName": "stub", "group": "stub-group",
                "data": [{"type": "command", "target": "dtmi:stub:schedule", "path": "Reboot"}],
                "schedule": {"start": "2099-01-01T00:00:00Z", "recurrence": "daily"}}', url_id);
        END IF;
        RETURN fleet.update_scheduled_job(url_id, body);
    WHEN 'PUT organizations' THEN RETURN fleet.import_organization(url_id, body);
    WHEN 'PATCH organizations' THEN
        -- the organization it changes, where the body says it is
        IF NOT EXISTS (SELECT 1 FROM fleet.organizations o WHERE o.id = url_id) THEN
            PERFORM fleet.create_organization(url_id, 'stub', body ->> 'parent');
        END IF;
        RETURN fleet.update_organization(url_id, body);
    WHEN 'PUT deploymentManifests' THEN RETURN fleet.import_edge_manifest(url_id, body);
    WHEN 'PATCH deploymentManifests' THEN
        IF NOT EXISTS (SELECT 1 FROM fleet.edge_manifests m WHERE m.id = url_id) THEN
            PERFORM fleet.create_edge_manifest(url_id, 'stub', '{"modulesContent": {"$edgeAgent": {"properties.desired": {}}, "$edgeHub": {"properties.desired": {}}}}');
        END IF;
        RETURN fleet.update_edge_manifest(url_id, body);
    WHEN 'PATCH enrollmentGroups' THEN
        IF NOT EXISTS (SELECT 1 FROM fleet.enrollment_groups g WHERE g.id = url_id) THEN
            PERFORM fleet.import_enrollment_group(url_id, '{"displayName": "stub", "type": "iot", "attestation": {"type": "symmetricKey"}}');
        END IF;
        RETURN fleet.update_enrollment_group(url_id, body);
    WHEN 'PUT enrollmentGroups' THEN RETURN fleet.import_enrollment_group(url_id, body);
    -- (url_id is "<group>/<entry>"; the group is an X.509 one, with a real
    -- certificate where the body is checked against it)
    WHEN 'PUT enrollmentGroupCertificates' THEN
        PERFORM pg_temp.stub_x509_group(split_part(url_id, '/', 1), NULL);
        RETURN fleet.set_enrollment_group_certificate(split_part(url_id, '/', 1), split_part(url_id, '/', 2), body);
    WHEN 'POST enrollmentGroupVerify' THEN
        PERFORM pg_temp.stub_x509_group(split_part(url_id, '/', 1), split_part(url_id, '/', 2));
        PERFORM fleet.generate_enrollment_group_verification_code(split_part(url_id, '/', 1), split_part(url_id, '/', 2));
        RETURN fleet.verify_enrollment_group_certificate(split_part(url_id, '/', 1), split_part(url_id, '/', 2), body);
    ELSE
        RAISE EXCEPTION 'unknown operation "%"', operation;
    END CASE;
END;
$$;

-- The fields IoT Central's REST schema (2022-07-31) gives every response
-- of each kind (the optional ones, such as description, are not counted).
CREATE TEMP TABLE response_fields (kind text PRIMARY KEY, fields text[]);
INSERT INTO response_fields VALUES
    ('deviceTemplates', '{@id,@type,displayName,capabilityModel,etag}'),
    ('deviceGroups', '{id,displayName,filter,etag}'),
    ('jobs', '{id,displayName,group,data,status}'),
    ('scheduledJobs', '{id,displayName,group,data,schedule,enabled,completed,etag}'),
    ('organizations', '{id,displayName}'),
    ('deploymentManifests', '{id,displayName,data,etag}'),
    ('enrollmentGroups', '{id,displayName,enabled,type,attestation,etag}'),
    ('enrollmentGroupCertificates', '{certificate,verified,info,etag}'),
    ('enrollmentGroupVerify', '{certificate,verified,info,etag}');

CREATE TEMP TABLE outcome (n int, operation text, file text, accepted boolean, error text, missing text[]);
DO $$
DECLARE
    b record;
    doc jsonb;
    missing text[];
BEGIN
    FOR b IN SELECT * FROM body ORDER BY n LOOP
        BEGIN
            doc := b.body::jsonb;
            doc := pg_temp.send(b.operation, b.url_id, doc, b.file);
            missing := CASE WHEN doc IS NULL THEN '{(no response)}'
                            ELSE ARRAY(SELECT f FROM response_fields r, unnest(r.fields) f
                                        WHERE r.kind = split_part(b.operation, ' ', 2) AND NOT doc ? f) END;
            RAISE EXCEPTION USING ERRCODE = 'PF999';          -- accepted: undo it
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO outcome VALUES (b.n, b.operation, b.file, SQLSTATE = 'PF999',
                                        CASE WHEN SQLSTATE <> 'PF999' THEN SQLERRM END,
                                        CASE WHEN SQLSTATE = 'PF999' THEN missing END);
        END;
    END LOOP;
END
$$;

\echo IoT Central REST request bodies, sent unedited:
SELECT operation, count(*) AS bodies, count(*) FILTER (WHERE accepted) AS accepted,
       count(*) FILTER (WHERE accepted AND cardinality(missing) = 0) AS response_has_the_schema_fields
  FROM outcome GROUP BY ROLLUP (operation) ORDER BY operation NULLS LAST;
\echo refused:
SELECT operation, file, error FROM outcome WHERE NOT accepted ORDER BY n;
\echo accepted, with fields of the REST schema missing from the response:
SELECT operation, file, missing FROM outcome WHERE accepted AND cardinality(missing) > 0 ORDER BY n;
ROLLBACK;
