/*-------------------------------------------------------------------------
 *
 * device_import.c
 *	  The streaming half of device CSV import: rows COPYed into the view
 *	  fleet.device_import are staged here; the statement's AFTER trigger,
 *	  fleet.device_import_finish() (SQL), then registers the valid ones in
 *	  bulk (device_register.c) and records the others.
 *
 * COPY parses the file; we never reimplement CSV.  An INSTEAD OF INSERT row
 * trigger on the view appends each row, with its line number, to a
 * tuplestore that lives until the AFTER trigger has read it and released it
 * (fleet.device_import_release()).  Nothing is written per row.
 *
 * The line number is the one COPY itself reports in its error context
 * ("COPY device_import, line 5"), read from the COPY state found on the
 * error context stack; for a plain INSERT into the view it is the row's
 * ordinal in the statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "commands/copyfrom_internal.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "pg_fleet.h"

/*
 * Columns of the views COPY writes into: fleet.device_import has IoT
 * Central's import file's two, fleet.device_import_with_keys its export
 * file's six (the SAS keys and X.509 thumbprints after them).
 */
#define IMPORT_ATTR_DEVICE_ID	1
#define IMPORT_ATTR_DEVICE_NAME	2
#define IMPORT_ATTR_CREDENTIALS	3	/* the first of four */
#define IMPORT_CREDENTIALS		4

/* Columns of fleet.device_import_staged_rows(). */
#define STAGED_NATTS			(3 + IMPORT_CREDENTIALS)

/* Rows of the import statement in progress. */
typedef struct StagedImport
{
	SubTransactionId subxid;	/* subtransaction the import started in */
	MemoryContext cxt;
	TupleDesc	desc;
	Tuplestorestate *rows;
	int64		ordinal;		/* rows staged so far */
	int64		operation_id;	/* its row in fleet.device_operations; 0: untracked */
	bool		with_credentials;	/* some row carries keys or thumbprints */
} StagedImport;

/*
 * The import in progress in this backend, from the import statement's
 * BEFORE trigger to its AFTER trigger.  It lives in TopTransactionContext;
 * the transaction callbacks forget it when the (sub)transaction that started
 * it ends, so it never dangles.
 */
static StagedImport *staged = NULL;

/* This session's latest import's operation id: fleet.last_device_operation(). */
static int64 last_operation_id = 0;

PG_FUNCTION_INFO_V1(device_import_begin);
PG_FUNCTION_INFO_V1(device_import_stage_row);
PG_FUNCTION_INFO_V1(device_import_staged_rows);
PG_FUNCTION_INFO_V1(device_import_staged_count);
PG_FUNCTION_INFO_V1(device_import_release);
PG_FUNCTION_INFO_V1(device_import_operation_id);
PG_FUNCTION_INFO_V1(last_device_operation);

static void
forget_staged_import(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE)
		staged = NULL;
}

/*
 * A subtransaction that started an import and aborts takes the rows'
 * temporary files with it (its resource owner closes them right after this
 * callback): free the memory, leave the files alone.  Subtransactions
 * started later, such as the AFTER trigger's retry block, leave the import
 * alone.
 */
static void
forget_staged_import_subxact(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && staged != NULL &&
		staged->subxid >= mySubid)
	{
		MemoryContextDelete(staged->cxt);
		staged = NULL;
	}
}

void
device_import_init(void)
{
	RegisterXactCallback(forget_staged_import, NULL);
	RegisterSubXactCallback(forget_staged_import_subxact, NULL);
}

static void
discard_staged_import(void)
{
	if (staged == NULL)
		return;
	tuplestore_end(staged->rows);	/* closes its temporary files */
	MemoryContextDelete(staged->cxt);	/* also frees staged itself */
	staged = NULL;
}

/* Shape of fleet.device_import_staged_rows(). */
static TupleDesc
staged_rows_desc(void)
{
	TupleDesc	desc = CreateTemplateTupleDesc(STAGED_NATTS);

	TupleDescInitEntry(desc, 1, "line", INT8OID, -1, 0);
	TupleDescInitEntry(desc, 2, "device_id", TEXTOID, -1, 0);
	TupleDescInitEntry(desc, 3, "display_name", TEXTOID, -1, 0);
	TupleDescInitEntry(desc, 4, "sas_key_primary", TEXTOID, -1, 0);
	TupleDescInitEntry(desc, 5, "sas_key_secondary", TEXTOID, -1, 0);
	TupleDescInitEntry(desc, 6, "x509_thumbprint_primary", TEXTOID, -1, 0);
	TupleDescInitEntry(desc, 7, "x509_thumbprint_secondary", TEXTOID, -1, 0);
	return desc;
}

/*
 * fleet_internal.device_import_begin(operation_id, template, organization),
 * from the BEFORE STATEMENT trigger: a new, empty import, tracked so that
 * it leaves its operation row even if it fails (import_tracking.c).  Each
 * import statement stages into its own; one inside another (a function
 * called by the first that imports too) is refused rather than mixed in.
 * pg_fleet 0.1's fleet.device_import_begin() takes no arguments and is not
 * tracked.
 */
Datum
device_import_begin(PG_FUNCTION_ARGS)
{
	MemoryContext cxt;
	MemoryContext oldcxt;

	if (staged != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a device import is already in progress"),
				 errdetail("An import into fleet.device_import cannot run inside another one."),
				 errhint("Run the second import after the first statement has finished.")));

	cxt = AllocSetContextCreate(TopTransactionContext,
								"pg_fleet device import",
								ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	staged = palloc0(sizeof(StagedImport));
	staged->subxid = GetCurrentSubTransactionId();
	staged->cxt = cxt;
	staged->desc = staged_rows_desc();
	staged->rows = tuplestore_begin_heap(false, false, work_mem);
	MemoryContextSwitchTo(oldcxt);

	if (PG_NARGS() == 3 && !PG_ARGISNULL(0) && !PG_ARGISNULL(2))
	{
		staged->operation_id = PG_GETARG_INT64(0);
		last_operation_id = staged->operation_id;
		import_tracking_begin(staged->operation_id,
							  PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)),
							  text_to_cstring(PG_GETARG_TEXT_PP(2)));
	}

	PG_RETURN_VOID();
}

/*
 * The line COPY is reading, or 0 when the row does not come from COPY.
 * COPY pushes CopyFromErrorCallback with its state as the argument; that is
 * the only place the line number is kept.
 */
static uint64
current_copy_line(void)
{
	for (ErrorContextCallback *cb = error_context_stack; cb; cb = cb->previous)
	{
		if (cb->callback == CopyFromErrorCallback && cb->arg != NULL)
			return ((CopyFromState) cb->arg)->cur_lineno;
	}
	return 0;
}

/*
 * INSTEAD OF INSERT row trigger on fleet.device_import: stage the row.
 */
Datum
device_import_stage_row(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	StagedImport *import;
	TupleDesc	viewdesc;
	Datum		values[STAGED_NATTS];
	bool		nulls[STAGED_NATTS];
	uint64		line;
	MemoryContext oldcxt;
	const char *view;
	int			natts;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_INSTEAD(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "device_import_stage_row must be an INSTEAD OF INSERT row trigger");

	/* only our views: their text columns are what we stage */
	viewdesc = RelationGetDescr(trigdata->tg_relation);
	view = RelationGetRelationName(trigdata->tg_relation);
	natts = strcmp(view, "device_import") == 0 ? IMPORT_ATTR_DEVICE_NAME :
		strcmp(view, "device_import_with_keys") == 0 ? IMPORT_ATTR_DEVICE_NAME + IMPORT_CREDENTIALS : -1;
	if (natts < 0 ||
		strcmp(get_namespace_name(RelationGetNamespace(trigdata->tg_relation)), "fleet") != 0 ||
		viewdesc->natts != natts)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("device_import_stage_row() only stages rows of fleet.device_import and fleet.device_import_with_keys")));
	for (int i = 0; i < natts; i++)
		if (TupleDescAttr(viewdesc, i)->atttypid != TEXTOID)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("device_import_stage_row() only stages rows of fleet.device_import and fleet.device_import_with_keys")));

	import = staged;
	if (import == NULL)
		elog(ERROR, "device import was not started by its BEFORE STATEMENT trigger");
	import->ordinal++;
	import_tracking_count_row();
	line = current_copy_line();

	values[0] = Int64GetDatum(line > 0 ? (int64) line : import->ordinal);
	nulls[0] = false;
	values[1] = heap_getattr(trigdata->tg_trigtuple, IMPORT_ATTR_DEVICE_ID,
							 viewdesc, &nulls[1]);
	values[2] = heap_getattr(trigdata->tg_trigtuple, IMPORT_ATTR_DEVICE_NAME,
							 viewdesc, &nulls[2]);
	for (int i = 0; i < IMPORT_CREDENTIALS; i++)
	{
		values[3 + i] = (Datum) 0;
		nulls[3 + i] = true;
		if (natts > IMPORT_ATTR_DEVICE_NAME)
		{
			values[3 + i] = heap_getattr(trigdata->tg_trigtuple, IMPORT_ATTR_CREDENTIALS + i,
										 viewdesc, &nulls[3 + i]);
			/* an empty field is no credential */
			if (!nulls[3 + i] && VARSIZE_ANY_EXHDR(DatumGetPointer(values[3 + i])) == 0)
				nulls[3 + i] = true;
			if (!nulls[3 + i])
				import->with_credentials = true;
		}
	}

	oldcxt = MemoryContextSwitchTo(import->cxt);
	tuplestore_putvalues(import->rows, import->desc, values, nulls);
	MemoryContextSwitchTo(oldcxt);

	/* returning the row makes COPY count it */
	return PointerGetDatum(trigdata->tg_trigtuple);
}

/*
 * fleet.device_import_staged_rows() returns the rows staged by the current
 * import statement (line, device_id, display_name) in file order.  It returns
 * a copy, so the AFTER trigger can read them more than once (its fast path
 * may be rolled back and retried); fleet.device_import_release() frees them.
 */
Datum
device_import_staged_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	/* the result's tuple store and descriptor, from the SQL declaration */
	InitMaterializedSRF(fcinfo, 0);
	if (staged != NULL)
	{
		TupleTableSlot *slot = MakeSingleTupleTableSlot(staged->desc,
														&TTSOpsMinimalTuple);

		tuplestore_rescan(staged->rows);
		while (tuplestore_gettupleslot(staged->rows, true, false, slot))
			tuplestore_puttupleslot(rsinfo->setResult, slot);
		ExecDropSingleTupleTableSlot(slot);
	}

	return (Datum) 0;
}

/*
 * fleet.device_import_staged_count() returns how many rows the current
 * import statement staged.
 */
Datum
device_import_staged_count(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(staged != NULL ? staged->ordinal : 0);
}

/*
 * fleet.device_import_release() frees the rows of the current import
 * statement once the AFTER trigger is done with them.
 */
Datum
device_import_release(PG_FUNCTION_ARGS)
{
	discard_staged_import();
	PG_RETURN_VOID();
}

/*
 * fleet_internal.device_import_operation_id(): the operation id the current
 * import statement drew at its start.
 */
Datum
device_import_operation_id(PG_FUNCTION_ARGS)
{
	if (staged == NULL || staged->operation_id == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(staged->operation_id);
}

/*
 * fleet.last_device_operation(): the operation id of this session's latest
 * import, whatever became of it (a failed one is recorded by the engine),
 * or NULL before the first.  What a client reads its import's outcome by.
 */
Datum
last_device_operation(PG_FUNCTION_ARGS)
{
	if (last_operation_id == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(last_operation_id);
}

/*
 * Whether a row of the current import carries SAS keys or thumbprints:
 * those are checked and stored by the AFTER trigger's INSERT, not by
 * device_register.c's bulk path.
 */
bool
device_import_with_credentials(void)
{
	return staged != NULL && staged->with_credentials;
}

/*
 * The rows staged by the current import statement, for device_register.c,
 * or NULL when there are none.
 */
Tuplestorestate *
device_import_staged(TupleDesc *desc)
{
	if (staged == NULL)
		return NULL;
	*desc = staged->desc;
	return staged->rows;
}
