\set SHOW_CONTEXT never
-- The extension installs into schema fleet, with the root organization and
-- two enrollment groups, and owns the fleet.* settings.
CREATE EXTENSION pg_fleet;

SELECT extname, extversion, nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'pg_fleet';

SELECT id, display_name, parent_id, path FROM fleet.organizations;

-- keys: two random 64-byte keys per group, all different
SELECT id,
       length(decode(primary_key, 'base64')) AS primary_bytes,
       length(decode(secondary_key, 'base64')) AS secondary_bytes
  FROM fleet.enrollment_groups ORDER BY id;
SELECT count(DISTINCT k) AS distinct_keys
  FROM fleet.enrollment_groups, LATERAL (VALUES (primary_key), (secondary_key)) v(k);

-- the settings exist, and the fleet. prefix is reserved against typos
SHOW fleet.import_template;
SHOW fleet.import_organization;
SET fleet.import_templat = 'x';

-- every function pins its search_path, except C functions, which look up no names
SELECT n.nspname, p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_language l ON l.oid = p.prolang
 WHERE n.nspname IN ('fleet', 'fleet_internal') AND l.lanname <> 'c'
   AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)
 ORDER BY 1, 2;

-- user data survives pg_dump
SELECT c.relname
  FROM pg_extension e, unnest(e.extconfig) AS cfg(oid) JOIN pg_class c ON c.oid = cfg.oid
 WHERE e.extname = 'pg_fleet'
 ORDER BY 1;

-- every function that writes is SECURITY DEFINER and checks its caller's
-- rights (members hold no write privilege); the list changes only on purpose
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p
 WHERE p.pronamespace = 'fleet'::regnamespace AND p.prosecdef
 ORDER BY 1;
-- API functions PUBLIC may not call
SELECT p.proname
  FROM pg_proc p
 WHERE p.pronamespace = 'fleet'::regnamespace AND NOT has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1;
-- internals PUBLIC may call: the lookups invoker functions make with the
-- caller's rights; the internals' definer trigger functions
SELECT p.proname, p.prosecdef AS definer
  FROM pg_proc p
 WHERE p.pronamespace = 'fleet_internal'::regnamespace
   AND (has_function_privilege('public', p.oid, 'EXECUTE') OR p.prosecdef)
 ORDER BY 1;
-- what PUBLIC may do to each table and view: read, and COPY into the import view
SELECT c.relnamespace::regnamespace AS schema, c.relname,
       string_agg(p.privilege, ', ' ORDER BY p.privilege) AS public_privileges
  FROM pg_class c
  CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p(privilege)
 WHERE c.relnamespace IN ('fleet'::regnamespace, 'fleet_internal'::regnamespace) AND c.relkind IN ('r', 'v')
   AND has_table_privilege('public', c.oid, p.privilege)
 GROUP BY 1, 2
 ORDER BY 1, 2;
-- every table has row-level security, forced for its owner, with policies
-- for reading only
SELECT c.relnamespace::regnamespace AS schema, c.relname, c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced,
       (SELECT string_agg(p.cmd, ',') FROM pg_policies p
         WHERE p.schemaname = c.relnamespace::regnamespace::text AND p.tablename = c.relname) AS policies
  FROM pg_class c
 WHERE c.relnamespace IN ('fleet'::regnamespace, 'fleet_internal'::regnamespace) AND c.relkind = 'r'
 ORDER BY 1, 2;
