/*-------------------------------------------------------------------------
 *
 * device_register.c
 *	  Bulk registration: the valid rows staged by an import go into
 *	  fleet.devices through the table AM's multi-row insert, as COPY does.
 *
 * A plain INSERT ... SELECT inserts and WAL-logs one heap tuple at a time
 * and cost an import 2.5 times a raw COPY of the same file.  This path
 * inserts in batches with a bulk-insert state, then adds the index entries
 * and checks constraints as COPY does, so an import costs little more than
 * the COPY that read it.  A repeated or already registered id fails the
 * unique index like any insert; the caller catches that and classifies.
 *
 * It bypasses the executor's privilege and row-level security checks, so it
 * is only used when they could not refuse anything: the caller holds
 * table-wide INSERT and no policy applies.  It also declines tables with
 * triggers, generated columns or volatile defaults, which it does not
 * implement, and a table Citus distributed.  Declining returns -1 and the
 * caller uses INSERT.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "parser/parse_relation.h"
#include "rewrite/rewriteHandler.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "pg_fleet.h"

#define REGISTER_BATCH_SIZE	1000	/* rows per multi-insert, as COPY uses */

/* Columns of fleet.devices that an import sets; the others take defaults. */
#define IMPORT_COLUMNS		5

PG_FUNCTION_INFO_V1(device_import_register);

/* Whether this path may and can insert into fleet.devices for the caller. */
static bool
bulk_insert_applies(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Oid			relid = RelationGetRelid(rel);

	if (pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK ||
		check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		return false;
	/* on a Citus coordinator the table is a shell: rows go through Citus */
	if (citus_table(relid))
		return false;
	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->trigdesc != NULL ||
		(desc->constr != NULL && desc->constr->has_generated_stored))
		return false;
	for (int i = 0; i < desc->natts; i++)
	{
		Node	   *def;

		if (TupleDescAttr(desc, i)->attisdropped)
			continue;
		def = build_column_default(rel, i + 1);
		if (def != NULL && contain_volatile_functions(def))
			return false;
	}
	return true;
}

/* Inserts the batch and its index entries; the slots are then free. */
static void
flush_batch(ResultRelInfo *rri, EState *estate, TupleTableSlot **slots,
			int nslots, CommandId cid, BulkInsertState bistate)
{
	table_multi_insert(rri->ri_RelationDesc, slots, nslots, cid, 0, bistate);
	for (int i = 0; i < nslots; i++)
	{
		List	   *recheck;

		recheck = ExecInsertIndexTuples(rri, slots[i], estate,
										false, false, NULL, NIL);
		list_free(recheck);
		ExecClearTuple(slots[i]);
	}
	ResetPerTupleExprContext(estate);
}

/*
 * fleet.device_import_register(operation_id bigint, template text,
 *                              organization text) returns bigint
 *
 * Inserts the valid staged rows of the current import into fleet.devices
 * and returns how many, or -1 when the caller must use INSERT instead.
 */
Datum
device_import_register(PG_FUNCTION_ARGS)
{
	Datum		operation_id;
	bool		no_template = PG_ARGISNULL(1);
	Datum		template_id = no_template ? (Datum) 0 : PG_GETARG_DATUM(1);
	Datum		organization_id;
	TupleDesc	staged_desc;
	Tuplestorestate *rows;
	const char *columns[IMPORT_COLUMNS] = {
		"id", "display_name", "template_id", "organization_id", "import_operation_id"
	};
	AttrNumber	attnums[IMPORT_COLUMNS];
	Relation	rel;
	TupleDesc	desc;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	EState	   *estate;
	ResultRelInfo *rri;
	ExprContext *econtext;
	Datum	   *defaults;
	bool	   *default_nulls;
	TupleTableSlot *staged_slot;
	TupleTableSlot *slots[REGISTER_BATCH_SIZE];
	int			nslots = 0;
	BulkInsertState bistate;
	CommandId	cid;
	int64		inserted = 0;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("device_import_register() needs an operation id and an organization")));
	operation_id = PG_GETARG_DATUM(0);
	organization_id = PG_GETARG_DATUM(2);

	rows = device_import_staged(&staged_desc);
	if (rows == NULL)
		PG_RETURN_INT64(0);
	if (device_import_with_credentials())
		PG_RETURN_INT64(-1);	/* keys to check, thumbprints to store */

	rel = table_open(get_relname_relid("devices", get_namespace_oid("fleet", false)),
					 RowExclusiveLock);
	if (!bulk_insert_applies(rel))
	{
		table_close(rel, RowExclusiveLock);
		PG_RETURN_INT64(-1);
	}
	desc = RelationGetDescr(rel);
	for (int i = 0; i < IMPORT_COLUMNS; i++)
	{
		attnums[i] = attnameAttNum(rel, columns[i], false);
		if (attnums[i] == InvalidAttrNumber)
			elog(ERROR, "fleet.devices has no column \"%s\"", columns[i]);
	}

	/* an executor state for one result relation, as COPY sets it up */
	pstate = make_parsestate(NULL);
	nsitem = addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock,
										   NULL, false, false);
	estate = CreateExecutorState();
	ExecInitRangeTable(estate, pstate->p_rtable);
	rri = makeNode(ResultRelInfo);
	ExecInitResultRelation(estate, rri, nsitem->p_rtindex);
	ExecOpenIndices(rri, false);
	econtext = GetPerTupleExprContext(estate);

	/* defaults are constant or stable: evaluate them once */
	defaults = palloc0(sizeof(Datum) * desc->natts);
	default_nulls = palloc(sizeof(bool) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, i);
		Node	   *def = attr->attisdropped ? NULL : build_column_default(rel, i + 1);

		default_nulls[i] = true;
		if (def != NULL)
		{
			ExprState  *state = ExecPrepareExpr((Expr *) def, estate);
			Datum		value = ExecEvalExprSwitchContext(state, econtext, &default_nulls[i]);

			if (!default_nulls[i])
				defaults[i] = datumCopy(value, attr->attbyval, attr->attlen);
		}
	}
	ResetPerTupleExprContext(estate);

	for (int i = 0; i < REGISTER_BATCH_SIZE; i++)
		slots[i] = table_slot_create(rel, NULL);
	staged_slot = MakeSingleTupleTableSlot(staged_desc, &TTSOpsMinimalTuple);
	bistate = GetBulkInsertState();
	cid = GetCurrentCommandId(true);

	/*
	 * Rows the tuplestore reads back from disk are allocated in the current
	 * context and freed by the slot on the next read; nothing here resets
	 * this context meanwhile.
	 */
	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, false, staged_slot))
	{
		bool		isnull;
		Datum		id = slot_getattr(staged_slot, 2, &isnull);
		text	   *id_text = isnull ? NULL : DatumGetTextPP(id);
		Datum		name = slot_getattr(staged_slot, 3, &isnull);
		text	   *name_text = isnull ? NULL : DatumGetTextPP(name);
		TupleTableSlot *slot = slots[nslots];

		if (!device_identity_valid(id_text ? VARDATA_ANY(id_text) : NULL,
								   id_text ? VARSIZE_ANY_EXHDR(id_text) : 0,
								   name_text ? VARDATA_ANY(name_text) : NULL,
								   name_text ? VARSIZE_ANY_EXHDR(name_text) : 0))
			continue;			/* recorded as rejected by the caller */

		ExecClearTuple(slot);
		memcpy(slot->tts_values, defaults, sizeof(Datum) * desc->natts);
		memcpy(slot->tts_isnull, default_nulls, sizeof(bool) * desc->natts);
		slot->tts_values[attnums[0] - 1] = PointerGetDatum(id_text);
		slot->tts_isnull[attnums[0] - 1] = false;
		/* an empty name means the id, as IoT Central does */
		slot->tts_values[attnums[1] - 1] =
			(name_text != NULL && VARSIZE_ANY_EXHDR(name_text) > 0) ?
			PointerGetDatum(name_text) : PointerGetDatum(id_text);
		slot->tts_isnull[attnums[1] - 1] = false;
		slot->tts_values[attnums[2] - 1] = template_id;
		slot->tts_isnull[attnums[2] - 1] = no_template;
		slot->tts_values[attnums[3] - 1] = organization_id;
		slot->tts_isnull[attnums[3] - 1] = false;
		slot->tts_values[attnums[4] - 1] = operation_id;
		slot->tts_isnull[attnums[4] - 1] = false;
		ExecStoreVirtualTuple(slot);

		/* the values point into the staged row: give the slot its own copy */
		ExecMaterializeSlot(slot);

		if (desc->constr != NULL)
			ExecConstraints(rri, slot, estate);

		if (++nslots == REGISTER_BATCH_SIZE)
		{
			flush_batch(rri, estate, slots, nslots, cid, bistate);
			inserted += nslots;
			nslots = 0;
		}
	}
	if (nslots > 0)
	{
		flush_batch(rri, estate, slots, nslots, cid, bistate);
		inserted += nslots;
	}

	FreeBulkInsertState(bistate);
	table_finish_bulk_insert(rel, 0);
	ExecDropSingleTupleTableSlot(staged_slot);
	for (int i = 0; i < REGISTER_BATCH_SIZE; i++)
		ExecDropSingleTupleTableSlot(slots[i]);
	ExecCloseResultRelations(estate);
	ExecCloseRangeTableRelations(estate);
	FreeExecutorState(estate);
	table_close(rel, NoLock);

	PG_RETURN_INT64(inserted);
}
