-- Everything pg_fleet's install script makes, one line per fact, free of
-- oids and creation order: the upgrade suite (test/t/007_upgrade.pl) runs
-- it in a database where pg_fleet was installed fresh and in one where an
-- older version was updated, and the two must be equal.  Column and
-- attribute order counts (it is what SELECT * and a row type see): a
-- migration adds columns at the end, and the install script too.
WITH
ext AS (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pg_fleet'),
nsp AS (SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n
         WHERE n.nspname IN ('fleet', 'fleet_internal')),
acl AS (
    -- privileges, granted by whom to whom, of every object that has them
    SELECT kind, name,
           string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END
                      || ':' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END, ','
                      ORDER BY a.grantee, a.privilege_type) AS privileges
      FROM (SELECT 'function' AS kind, p.oid::regprocedure::text AS name, p.proacl AS acl, p.proowner AS owner
              FROM pg_catalog.pg_proc p JOIN nsp ON nsp.oid = p.pronamespace
            UNION ALL
            SELECT 'relation', c.oid::regclass::text, c.relacl, c.relowner
              FROM pg_catalog.pg_class c JOIN nsp ON nsp.oid = c.relnamespace
            UNION ALL
            SELECT 'column', c.oid::regclass::text || '.' || quote_ident(a.attname), a.attacl, c.relowner
              FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
              JOIN nsp ON nsp.oid = c.relnamespace
             WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
            UNION ALL
            SELECT 'schema', n.nspname, n2.nspacl, n2.nspowner
              FROM nsp n JOIN pg_catalog.pg_namespace n2 ON n2.oid = n.oid
            UNION ALL
            SELECT 'type', t.oid::regtype::text, t.typacl, t.typowner
              FROM pg_catalog.pg_type t JOIN nsp ON nsp.oid = t.typnamespace) o
      LEFT JOIN LATERAL pg_catalog.aclexplode(coalesce(o.acl, pg_catalog.acldefault(
                    CASE o.kind WHEN 'function' THEN 'f' WHEN 'schema' THEN 'n' WHEN 'type' THEN 'T'
                                WHEN 'column' THEN 'c' ELSE 'r' END::"char", o.owner))) a ON true
     GROUP BY kind, name
),
facts AS (
    -- what belongs to the extension
    SELECT 'member' AS kind, pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) AS name, '' AS detail
      FROM pg_catalog.pg_depend d, ext
     WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
    UNION ALL
    -- functions: signature, result, arguments with their defaults, every
    -- attribute, the body, and the comment
    SELECT 'function', p.oid::regprocedure::text,
           concat_ws(' | ', p.prokind, pg_catalog.pg_get_function_result(p.oid),
                     pg_catalog.pg_get_function_arguments(p.oid), l.lanname,
                     CASE WHEN p.prosecdef THEN 'SECURITY DEFINER' ELSE 'SECURITY INVOKER' END,
                     p.provolatile, p.proparallel, p.proisstrict, p.proleakproof, p.procost, p.prorows,
                     array_to_string(p.proconfig, ';'), p.probin, md5(p.prosrc),
                     pg_catalog.obj_description(p.oid, 'pg_proc'))
      FROM pg_catalog.pg_proc p JOIN nsp ON nsp.oid = p.pronamespace
      JOIN pg_catalog.pg_language l ON l.oid = p.prolang
    UNION ALL
    -- relations: kind, options, row-level security, comment
    SELECT 'relation', c.oid::regclass::text,
           concat_ws(' | ', c.relkind, c.relpersistence, array_to_string(c.reloptions, ','),
                     c.relrowsecurity, c.relforcerowsecurity, pg_catalog.obj_description(c.oid, 'pg_class'))
      FROM pg_catalog.pg_class c JOIN nsp ON nsp.oid = c.relnamespace
    UNION ALL
    -- columns in order, with type, nullability, default, statistics target, comment
    SELECT 'column', c.oid::regclass::text || ' #' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
           concat_ws(' | ', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                     pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), a.attstattarget, a.attidentity, a.attgenerated,
                     pg_catalog.col_description(c.oid, a.attnum))
      FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
      JOIN nsp ON nsp.oid = c.relnamespace
      LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'c', 'p')
    UNION ALL
    SELECT 'constraint', c.conrelid::regclass::text || '.' || c.conname,
           concat_ws(' | ', c.contype, pg_catalog.pg_get_constraintdef(c.oid), c.condeferrable, c.convalidated)
      FROM pg_catalog.pg_constraint c JOIN nsp ON nsp.oid = c.connamespace
    UNION ALL
    SELECT 'index', i.indexrelid::regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid)
      FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
      JOIN nsp ON nsp.oid = c.relnamespace
    UNION ALL
    SELECT 'view', c.oid::regclass::text, pg_catalog.pg_get_viewdef(c.oid)
      FROM pg_catalog.pg_class c JOIN nsp ON nsp.oid = c.relnamespace WHERE c.relkind IN ('v', 'm')
    UNION ALL
    SELECT 'sequence', s.schemaname || '.' || s.sequencename,
           concat_ws(' | ', s.data_type, s.start_value, s.min_value, s.max_value, s.increment_by,
                     s.cycle, s.cache_size)
      FROM pg_catalog.pg_sequences s WHERE s.schemaname IN ('fleet', 'fleet_internal')
    UNION ALL
    SELECT 'trigger', t.tgrelid::regclass::text || '.' || t.tgname,
           concat_ws(' | ', pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled)
      FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
      JOIN nsp ON nsp.oid = c.relnamespace
     WHERE NOT t.tgisinternal
    UNION ALL
    SELECT 'policy', p.schemaname || '.' || p.tablename || '.' || p.policyname,
           concat_ws(' | ', p.permissive, array_to_string(p.roles, ','), p.cmd, p.qual, p.with_check)
      FROM pg_catalog.pg_policies p WHERE p.schemaname IN ('fleet', 'fleet_internal')
    UNION ALL
    SELECT 'type', t.oid::regtype::text,
           concat_ws(' | ', t.typtype, pg_catalog.obj_description(t.oid, 'pg_type'))
      FROM pg_catalog.pg_type t JOIN nsp ON nsp.oid = t.typnamespace
     WHERE t.typtype IN ('c', 'e', 'd', 'b') AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')
    UNION ALL
    SELECT 'schema', n.nspname, coalesce(pg_catalog.obj_description(n.oid, 'pg_namespace'), '')
      FROM nsp n
    UNION ALL
    SELECT 'privileges ' || kind, name, privileges FROM acl
    UNION ALL
    -- what pg_dump keeps: the registered tables and sequences and their filters
    SELECT 'dumped', cfg.rel::regclass::text, coalesce(cond.condition, '')
      FROM pg_catalog.pg_extension e,
           unnest(e.extconfig) WITH ORDINALITY AS cfg(rel, n)
      LEFT JOIN unnest(e.extcondition) WITH ORDINALITY AS cond(condition, n) ON cond.n = cfg.n
     WHERE e.extname = 'pg_fleet'
)
SELECT kind || ' ' || name || coalesce(' = ' || nullif(regexp_replace(detail, '\s+', ' ', 'g'), ''), '') AS fact
  FROM facts
 ORDER BY kind, name, detail;
