/*-------------------------------------------------------------------------
 *
 * citus_node.c
 *	  What pg_fleet's C code needs to know of Citus, read from its catalog
 *	  tables when they exist (pg_fleet neither links with nor requires it).
 *
 * fleet.distribute() (src/sql/distribution.sql) spreads the tables; the
 * engine must then not run on a worker, and the import's bulk path, which
 * writes a table's heap directly, must leave a distributed fleet.devices
 * to Citus: on the coordinator that table is only a shell.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_namespace.h"
#include "fmgr.h"
#include "utils/timestamp.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "pg_fleet.h"

/*
 * Whether this database is a Citus worker's: Citus is installed and its
 * node group is not the coordinator's (0).
 */
bool
citus_worker_node(void)
{
	Oid			relid = get_relname_relid("pg_dist_local_group", PG_CATALOG_NAMESPACE);
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		worker = false;

	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		group = heap_getattr(tuple, 1, RelationGetDescr(rel), &isnull);

		worker = !isnull && DatumGetInt32(group) != 0;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return worker;
}

/* Whether Citus manages the table (distributed, reference or local). */
bool
citus_table(Oid table)
{
	Oid			relid = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (!found && HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		logicalrelid = heap_getattr(tuple, 1, RelationGetDescr(rel), &isnull);

		found = !isnull && DatumGetObjectId(logicalrelid) == table;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * fleet_internal.moment(at timestamptz) returns timestamptz: at, or the
 * clock when at is NULL (the engine's steps take an "at" for tests).
 *
 * Declared STABLE although it reads the clock: Citus refuses volatile
 * functions in a statement that changes a distributed or reference table,
 * and evaluates a stable one once on the coordinator, putting the value in
 * the statement it sends to the nodes.  On one server it is evaluated per
 * row like clock_timestamp(), which every such statement called before.
 */
PG_FUNCTION_INFO_V1(moment);

Datum
moment(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	PG_RETURN_TIMESTAMPTZ(GetCurrentTimestamp());
}

/*
 * fleet_internal.transaction_moment(at timestamptz) returns timestamptz:
 * at, or now() (the transaction's start), for the same reason: Citus also
 * refuses a stable function inside COALESCE in such a statement.
 */
PG_FUNCTION_INFO_V1(transaction_moment);

Datum
transaction_moment(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	PG_RETURN_TIMESTAMPTZ(GetCurrentTransactionStartTimestamp());
}

/*
 * fleet_internal.citus_table(regclass) returns boolean: whether Citus
 * manages the table, for the few statements that take another way there.
 */
PG_FUNCTION_INFO_V1(citus_table_sql);

Datum
citus_table_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(citus_table(PG_GETARG_OID(0)));
}
