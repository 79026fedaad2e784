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
SELECT p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_language l ON l.oid = p.prolang
 WHERE n.nspname = 'fleet' AND l.lanname <> 'c'
   AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)
 ORDER BY 1;

-- user data survives pg_dump
SELECT c.relname
  FROM pg_extension e, unnest(e.extconfig) AS cfg(oid) JOIN pg_class c ON c.oid = cfg.oid
 WHERE e.extname = 'pg_fleet'
 ORDER BY 1;

-- SECURITY DEFINER functions are few, each commented with why; this list
-- changes only on purpose
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p
 WHERE p.pronamespace = 'fleet'::regnamespace AND p.prosecdef
 ORDER BY 1;
-- functions PUBLIC may not call: the engine's, pg_cron's and the key derivation
SELECT p.proname
  FROM pg_proc p
 WHERE p.pronamespace = 'fleet'::regnamespace AND NOT has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1;
-- every table holding tenant rows has row-level security, forced for its owner
SELECT c.relname, c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced,
       (SELECT count(*) FROM pg_policies p WHERE p.schemaname = 'fleet' AND p.tablename = c.relname) AS policies
  FROM pg_class c
 WHERE c.relnamespace = 'fleet'::regnamespace AND c.relkind = 'r'
 ORDER BY 1;
