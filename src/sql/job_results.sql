-- A job's devices and their outcomes, as IoT Central's job details page and
-- its results log show them: read with the caller's rights (row-level
-- security shows only jobs of its organizations).

-- Which device properties appear as extra columns of the device list, for
-- the current role.
CREATE FUNCTION fleet.set_job_device_list_columns(columns text[])
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller name := fleet_internal.calling_role();
    path   text;
BEGIN
    FOREACH path IN ARRAY coalesce(columns, '{}') LOOP
        BEGIN
            PERFORM path::jsonpath;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'column "%" is not a jsonpath', path
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Name columns as paths into the device document, for example ''$.reported.firmware'' or ''$.properties.targetTemperature''.';
        END;
    END LOOP;
    DELETE FROM fleet.job_device_list_columns c WHERE c.role_name = caller;
    INSERT INTO fleet.job_device_list_columns (role_name, position, path)
    SELECT caller, n, p FROM unnest(columns) WITH ORDINALITY AS u(p, n);
END;
$$;
COMMENT ON FUNCTION fleet.set_job_device_list_columns(text[]) IS 'Chooses the extra columns (jsonpath over fleet.device_document) of fleet.list_job_devices() for the current role';

CREATE FUNCTION fleet.list_job_devices(job_id text, device_filter text DEFAULT NULL, status_filter text DEFAULT NULL)
RETURNS TABLE (device_id text, device_name text, batch int, status text, error text,
               started_at timestamptz, finished_at timestamptz, columns jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    paths text[] := ARRAY(SELECT c.path FROM fleet.job_device_list_columns c
                           WHERE c.role_name = current_user ORDER BY c.position);
BEGIN
    PERFORM fleet_internal.require_job(job_id);
    IF status_filter IS NOT NULL AND status_filter NOT IN ('pending', 'completed', 'failed') THEN
        RAISE EXCEPTION 'unknown device status "%"', status_filter
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Filter on ''pending'', ''completed'' or ''failed''.';
    END IF;
    RETURN QUERY
    SELECT jd.device_id, coalesce(d.display_name, 'deleted'), jd.batch, jd.status, jd.error,
           jd.started_at, jd.finished_at,
           CASE WHEN cardinality(paths) = 0 OR d.id IS NULL THEN NULL
                ELSE (SELECT jsonb_object_agg(p, jsonb_path_query_first(fleet_internal.device_document_of(d.id, d.display_name, d.template_id, d.organization_id, d.simulated,
                 d.connection_state, d.last_activity_at, d.edge, d.manifest_id, d.properties, d.reported, d.cloud_properties), p::jsonpath,
                                                                         silent => true))
                        FROM unnest(paths) p) END
      FROM fleet.job_devices jd
      LEFT JOIN fleet.devices d ON d.id = jd.device_id
     WHERE jd.job_id = list_job_devices.job_id
       AND (device_filter IS NULL OR strpos(lower(jd.device_id), lower(device_filter)) > 0)
       AND (status_filter IS NULL OR jd.status = status_filter)
     ORDER BY jd.batch, jd.device_id;
END;
$$;
COMMENT ON FUNCTION fleet.list_job_devices(text, text, text) IS 'A job''s devices, filtered by device id (substring) and status, with the role''s extra columns';

-- A job's devices as IoT Central's GET /jobs/{id}/devices returns them:
-- {"value": [{"id", "status"}, ...]}, with pg_fleet's batch and error as
-- extensions.  One document: for large jobs, list_job_devices() pages.
CREATE FUNCTION fleet.get_job_devices(job_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_job(job_id);
    RETURN (SELECT jsonb_build_object('value', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                       'id', jd.device_id, 'status', jd.status, 'batch', jd.batch, 'error', jd.error,
                       -- what the device reported: refused, under way, how far
                       'rejected', CASE WHEN jd.status = 'failed' AND fleet_internal.failure_type(jd.error) = 'REJECTED' THEN true END,
                       'inProgress', CASE WHEN jd.status = 'pending' AND jd.response_status = 202 THEN true END,
                       'progress', fleet_internal.reported_progress(jd.response),
                       'statusDetails', CASE WHEN jsonb_typeof(jd.response) = 'object' THEN jd.response -> 'statusDetails' END))
                       ORDER BY jd.batch, jd.device_id), '[]'))
              FROM fleet.job_devices jd
             WHERE jd.job_id = get_job_devices.job_id);
END;
$$;
COMMENT ON FUNCTION fleet.get_job_devices(text) IS 'A job''s devices as IoT Central''s REST API returns them: {"value": [{"id", "status"}]}, with batch and error';

-- The progress a device reported in its answer ({"progress": 40}), a whole
-- percentage, or NULL (a device's bytes never fail a listing).
CREATE FUNCTION fleet_internal.reported_progress(response jsonb)
RETURNS int
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(response) = 'object' AND jsonb_typeof(response -> 'progress') = 'number'
                     AND (response ->> 'progress')::numeric BETWEEN 0 AND 100
                THEN floor((response ->> 'progress')::numeric)::int END
$$;

-- The results log, for COPY ... TO: one row per device, and before it one
-- per earlier attempt its job retried (attempt numbers the rows; the
-- device's last row is its outcome).
CREATE FUNCTION fleet.job_results(job_id text, spreadsheet_safe boolean DEFAULT false)
RETURNS TABLE (job text, device_id text, device_name text, batch int, status text, error text,
               started_at timestamptz, finished_at timestamptz, attempt int, progress int, status_details jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fleet_internal.require_job(job_results.job_id);
    -- (the cells are neutralised only when asked: a call per cell costs)
    RETURN QUERY
    SELECT CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(jd.job_id, true) ELSE jd.job_id END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(jd.device_id, true) ELSE jd.device_id END,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(coalesce(d.display_name, 'deleted'), true)
                ELSE coalesce(d.display_name, 'deleted') END,
           jd.batch, jd.status,
           CASE WHEN spreadsheet_safe THEN fleet_internal.spreadsheet_cell(jd.error, true) ELSE jd.error END,
           jd.started_at, jd.finished_at, jd.attempt, fleet_internal.reported_progress(jd.response),
           CASE WHEN jsonb_typeof(jd.response) = 'object' THEN jd.response -> 'statusDetails' END
      FROM (SELECT r.job_id, r.device_id, r.batch, r.status, r.error, r.started_at, r.finished_at,
                   1 + coalesce(earlier.n, 0) AS attempt, r.response
              FROM fleet.job_devices r
              -- (one hashed pass over the job's few retried attempts)
              LEFT JOIN (SELECT a.device_id, count(*)::int AS n FROM fleet.job_device_attempts a
                          WHERE a.job_id = job_results.job_id GROUP BY a.device_id) earlier
                     ON earlier.device_id = r.device_id
             WHERE r.job_id = job_results.job_id
            UNION ALL
            SELECT a.job_id, a.device_id, r.batch, 'failed', a.error, a.started_at, a.finished_at, a.attempt, a.response
              FROM fleet.job_device_attempts a
              JOIN fleet.job_devices r ON r.job_id = a.job_id AND r.device_id = a.device_id
             WHERE a.job_id = job_results.job_id) jd
      LEFT JOIN fleet.devices d ON d.id = jd.device_id
     ORDER BY jd.batch, jd.device_id, jd.attempt;
END;
$$;
COMMENT ON FUNCTION fleet.job_results(text, boolean) IS 'The results log of a job: device, name ("deleted" for deleted devices), batch, status, error, times, and attempt (earlier, retried attempts first)';

