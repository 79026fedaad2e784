/*-------------------------------------------------------------------------
 *
 * reference_write_order.c
 *	  On Citus, one order for the transactions that write pg_fleet's
 *	  reference tables.
 *
 * Citus keeps a reference table's copies alike by serializing what writes
 * or row-locks it: a statement that does takes a lock on the table's shard,
 * and on the shards of the reference tables it refers to (the jobs, the
 * schedules and the groups all refer to the organizations).  It takes them
 * statement by statement, in the order the transaction's statements come.
 * The engine's step and an API call each take several (a step locks a job,
 * then the schedules it reconciles; fleet.fire_scheduled_job() locks its
 * schedule, then writes a job), in opposite orders, and deadlock: Citus
 * reports "deadlock detected" on its shard locks, and one of them fails.
 *
 * So before a transaction's first statement that writes or row-locks one
 * of pg_fleet's reference tables, it takes one lock of its own on the
 * coordinator, held to its end: such transactions then run one after
 * another (Citus's shard locks serialized most of them already), and never
 * hold a reference table's shard lock while waiting for another's.  Reads,
 * and writes of the distributed tables (devices, job_devices: the command
 * claims and answers), take no lock here.
 *
 * Only where Citus is loaded and the table is one of its reference tables:
 * on one server the hook returns at once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_namespace.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/resowner.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "pg_fleet.h"

/* the lock's key: "pflt", then 1 (an advisory lock of two int4 keys) */
#define REFERENCE_WRITE_KEY1 0x70666C74
#define REFERENCE_WRITE_KEY2 1

static ExecutorStart_hook_type prev_executor_start = NULL;

/* the reference tables seen so far (the layout only ever gains them) */
#define MAX_KNOWN_REFERENCE_TABLES 64
static Oid	known_reference_tables[MAX_KNOWN_REFERENCE_TABLES];
static int	n_known_reference_tables = 0;

/* the transaction that holds the lock, if this backend's current one does */
static LocalTransactionId order_taken_in = InvalidLocalTransactionId;

/*
 * Whether the table is a Citus reference table (pg_dist_partition: method
 * 'n', replication model 't').  Only a yes is remembered: a table becomes
 * one when fleet.distribute() runs, maybe after this backend looked.
 */
static bool
citus_reference_table(Oid table)
{
	Oid			relid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		reference = false;

	for (int i = 0; i < n_known_reference_tables; i++)
		if (known_reference_tables[i] == table)
			return true;

	relid = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		TupleDesc	desc = RelationGetDescr(rel);
		bool		isnull;
		Datum		logicalrelid = heap_getattr(tuple, 1, desc, &isnull);

		if (isnull || DatumGetObjectId(logicalrelid) != table)
			continue;
		{
			Datum		method = heap_getattr(tuple, 2, desc, &isnull);
			bool		method_null = isnull;
			Datum		model = heap_getattr(tuple, 5, desc, &isnull);

			reference = !method_null && !isnull &&
				DatumGetChar(method) == 'n' && DatumGetChar(model) == 't';
		}
		break;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	if (reference && n_known_reference_tables < MAX_KNOWN_REFERENCE_TABLES)
		known_reference_tables[n_known_reference_tables++] = table;
	return reference;
}

/* Whether the relation is one of pg_fleet's (schema fleet or fleet_internal). */
static bool
fleet_relation(Oid relid)
{
	char	   *schema = get_namespace_name(get_rel_namespace(relid));

	return schema != NULL &&
		(strcmp(schema, "fleet") == 0 || strcmp(schema, "fleet_internal") == 0);
}

/*
 * Whether the statement writes or row-locks one of pg_fleet's reference
 * tables.  Read from the permissions each table of the range table asks
 * for (UPDATE is also what FOR UPDATE, FOR SHARE and a foreign key's check
 * ask for): Citus's plans keep the statement's own range table only for
 * those checks, beside their remote scan.
 */
static bool
writes_fleet_reference_table(QueryDesc *queryDesc)
{
	ListCell   *cell;

	foreach(cell, queryDesc->plannedstmt->rtable)
	{
		RangeTblEntry *rte = lfirst_node(RangeTblEntry, cell);

		if (rte->rtekind == RTE_RELATION &&
			(rte->requiredPerms & (ACL_INSERT | ACL_UPDATE | ACL_DELETE)) != 0 &&
			fleet_relation(rte->relid) && citus_reference_table(rte->relid))
			return true;
	}
	return false;
}

static void
reference_write_order_executor_start(QueryDesc *queryDesc, int eflags)
{
	/*
	 * Where Citus is loaded (its settings exist), once per transaction,
	 * before Citus's executor takes the shard locks.
	 */
	if (order_taken_in != MyProc->lxid &&
		!(eflags & EXEC_FLAG_EXPLAIN_ONLY) &&
		GetConfigOption("citus.multi_shard_modify_mode", true, false) != NULL &&
		writes_fleet_reference_table(queryDesc))
	{
		LOCKTAG		tag;

		ResourceOwner statement_owner = CurrentResourceOwner;

		/*
		 * Held by the transaction itself, not the subtransaction (a PL/pgSQL
		 * exception block) that happened to write first: rolling that back
		 * must not let go of the order.
		 */
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, REFERENCE_WRITE_KEY1, REFERENCE_WRITE_KEY2, 2);
		CurrentResourceOwner = TopTransactionResourceOwner;
		PG_TRY();
		{
			(void) LockAcquire(&tag, ExclusiveLock, false, false);
		}
		PG_FINALLY();
		{
			CurrentResourceOwner = statement_owner;
		}
		PG_END_TRY();
		order_taken_in = MyProc->lxid;
	}

	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

void
reference_write_order_init(void)
{
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = reference_write_order_executor_start;
}
