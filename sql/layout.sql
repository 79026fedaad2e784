\set SHOW_CONTEXT never
-- What keeps pg_fleet distributable on Citus (DESIGN.md section 7), checked
-- on one server so that CI guards it without Citus: fleet.distribute()'s
-- layout names every table; the tables it distributes or makes reference
-- tables have no trigger, no policy Citus cannot evaluate on a worker, no
-- foreign key between a distributed and a reference table, and unique keys
-- that include their distribution column.

-- every table of the extension has a place, and every place a table
SELECT c.oid::regclass AS table_without_a_place
  FROM pg_class c
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_fleet'
 WHERE c.relkind IN ('r', 'p')
   AND c.oid NOT IN (SELECT l.table_name FROM fleet_internal.citus_layout() l);
SELECT layout, count(*) FROM fleet_internal.citus_layout() GROUP BY 1 ORDER BY 1;
SELECT table_name, distribution_column FROM fleet_internal.citus_layout() WHERE layout = 'distributed';

-- no trigger on a distributed or reference table (Citus refuses them)
SELECT t.tgrelid::regclass, t.tgname
  FROM pg_trigger t
  JOIN fleet_internal.citus_layout() l ON l.table_name = t.tgrelid
 WHERE NOT t.tgisinternal AND l.layout <> 'local';

-- policies: no subquery, and no function but the caller's row scope and
-- pg_has_role() (Citus refuses subqueries in policies, and a function that
-- read pg_fleet's tables would run a distributed query inside a shard's)
SELECT p.polrelid::regclass, p.polname
  FROM pg_policy p
  JOIN fleet_internal.citus_layout() l ON l.table_name = p.polrelid
 WHERE l.layout <> 'local'
   AND (p.polqual::text LIKE '%{SUBLINK%' OR coalesce(p.polwithcheck::text, '') LIKE '%{SUBLINK%');
SELECT DISTINCT f.oid::regprocedure AS function_in_a_policy
  FROM pg_policy p
  JOIN fleet_internal.citus_layout() l ON l.table_name = p.polrelid
 CROSS JOIN LATERAL regexp_matches(p.polqual::text, ':funcid (\d+)', 'g') m
  JOIN pg_proc f ON f.oid = m[1]::oid
 WHERE l.layout <> 'local'
 ORDER BY 1;

-- no foreign key between a distributed table and a reference table, in
-- either direction (from one, Citus runs every later statement of a
-- transaction that changed the devices' shards over one connection per node)
SELECT c.conrelid::regclass, c.conname, c.confrelid::regclass
  FROM pg_constraint c
  JOIN fleet_internal.citus_layout() a ON a.table_name = c.conrelid
  JOIN fleet_internal.citus_layout() b ON b.table_name = c.confrelid
 WHERE c.contype = 'f' AND (a.layout = 'distributed') <> (b.layout = 'distributed');

-- a distributed table's unique keys include its distribution column
SELECT i.indexrelid::regclass AS unique_index_without_the_distribution_column
  FROM pg_index i
  JOIN fleet_internal.citus_layout() l ON l.table_name = i.indrelid AND l.layout = 'distributed'
 WHERE i.indisunique
   AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = i.indrelid AND a.attname = l.distribution_column
                      AND a.attnum = ANY (i.indkey::int2[]));

-- without Citus, distributing is refused and changes nothing
\set VERBOSITY default
SELECT * FROM fleet.distribute();
\set VERBOSITY terse

-- the row scope: what a member sees, as a value; in a member's plan it is
-- a constant, computed when the statement is planned
CREATE ROLE regress_layout_viewer;
SELECT fleet.create_organization('layout-east', 'Layout East') ->> 'id';
SELECT fleet.create_organization('layout-east-1', 'Layout East 1', 'layout-east') ->> 'id';
SELECT fleet.create_organization('layout-west', 'Layout West') ->> 'id';
SELECT fleet.grant_organization('layout-east', 'regress_layout_viewer', 'viewer');
SET ROLE regress_layout_viewer;
-- distributing is for the superuser that owns the tables
\set VERBOSITY default
SELECT * FROM fleet.distribute();
\set VERBOSITY terse
SELECT fleet_internal.row_scope('organizations') AS sees;
SELECT fleet_internal.row_scope('administered_organizations') AS administers;
SELECT id FROM fleet.organizations ORDER BY id;
EXPLAIN (COSTS OFF) SELECT count(*) FROM fleet.organizations;
SELECT fleet_internal.row_scope('everything');
RESET ROLE;
-- a grant counts from the next statement
SELECT fleet.grant_organization('layout-west', 'regress_layout_viewer', 'administrator');
SET ROLE regress_layout_viewer;
SELECT id FROM fleet.organizations ORDER BY id;
SELECT fleet_internal.row_scope('administered_organizations') AS administers;
RESET ROLE;
SELECT fleet.revoke_organization('layout-east', 'regress_layout_viewer');
SELECT fleet.revoke_organization('layout-west', 'regress_layout_viewer');
SELECT fleet.delete_organization('layout-east-1');
SELECT fleet.delete_organization('layout-east');
SELECT fleet.delete_organization('layout-west');
DROP ROLE regress_layout_viewer;
