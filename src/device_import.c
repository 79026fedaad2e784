/*-------------------------------------------------------------------------
 *
 * device_import.c
 *	  The streaming half of device CSV import: rows COPYed into the view
 *	  fleet.device_import are staged here, then validated and registered in
 *	  one set-based statement by fleet.device_import_finish() (SQL).
 *
 * COPY parses the file; we never reimplement CSV.  An INSTEAD OF INSERT row
 * trigger on the view appends each row, with its line number, to a
 * tuplestore that lives until the statement's AFTER trigger has read it
 * through fleet.device_import_staged_rows() and released it.  Nothing is written per row, so the
 * cost of an import is COPY's parsing plus one INSERT ... SELECT.
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
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "commands/copyfrom_internal.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "parser/parse_relation.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "pg_fleet.h"

/* Columns of fleet.device_import, the view COPY writes into. */
#define IMPORT_ATTR_DEVICE_ID	1
#define IMPORT_ATTR_DEVICE_NAME	2

/* Columns of fleet.device_import_staged_rows(). */
#define STAGED_NATTS			3

/* Rows of the import statement in progress. */
typedef struct StagedImport
{
	LocalTransactionId lxid;	/* statement the rows belong to ... */
	CommandId	cid;			/* ... identified by transaction and command */
	SubTransactionId subxid;	/* subtransaction the rows were staged in */
	MemoryContext cxt;
	TupleDesc	desc;
	Tuplestorestate *rows;
	int64		ordinal;		/* rows staged so far */
} StagedImport;

/*
 * The import in progress in this backend.  It lives in TopTransactionContext
 * and outlives a statement only between the row trigger and the statement's
 * AFTER trigger; the transaction callback forgets it when the transaction
 * ends, so it never dangles.
 */
static StagedImport *staged = NULL;

PG_FUNCTION_INFO_V1(device_import_stage_row);
PG_FUNCTION_INFO_V1(device_import_staged_rows);
PG_FUNCTION_INFO_V1(device_import_staged_count);
PG_FUNCTION_INFO_V1(device_import_release);

static void
forget_staged_import(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE)
		staged = NULL;
}

/*
 * A subtransaction that staged rows and aborts takes their temporary files
 * with it (they belong to its resource owner): forget the rows, do not end
 * them.  Subtransactions started later, such as the AFTER trigger's retry
 * block, leave them alone.
 */
static void
forget_staged_import_subxact(SubXactEvent event, SubTransactionId mySubid,
							 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && staged != NULL &&
		staged->subxid >= mySubid)
		staged = NULL;
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
	return desc;
}

/* The import of the current statement, started afresh if need be. */
static StagedImport *
current_staged_import(void)
{
	LocalTransactionId lxid = MyProc->lxid;
	CommandId	cid = GetCurrentCommandId(false);
	MemoryContext cxt;
	MemoryContext oldcxt;
	TupleDesc	desc;

	if (staged != NULL && staged->lxid == lxid && staged->cid == cid)
		return staged;

	/* left over from a statement that failed in a subtransaction */
	discard_staged_import();

	cxt = AllocSetContextCreate(TopTransactionContext,
								"pg_fleet device import",
								ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);

	desc = staged_rows_desc();

	staged = palloc0(sizeof(StagedImport));
	staged->lxid = lxid;
	staged->cid = cid;
	staged->subxid = GetCurrentSubTransactionId();
	staged->cxt = cxt;
	staged->desc = desc;
	staged->rows = tuplestore_begin_heap(false, false, work_mem);

	MemoryContextSwitchTo(oldcxt);
	return staged;
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

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_INSTEAD(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "device_import_stage_row must be an INSTEAD OF INSERT row trigger");

	viewdesc = RelationGetDescr(trigdata->tg_relation);
	if (viewdesc->natts < IMPORT_ATTR_DEVICE_NAME)
		elog(ERROR, "fleet.device_import has an unexpected shape");

	import = current_staged_import();
	import->ordinal++;
	line = current_copy_line();

	values[0] = Int64GetDatum(line > 0 ? (int64) line : import->ordinal);
	nulls[0] = false;
	values[1] = heap_getattr(trigdata->tg_trigtuple, IMPORT_ATTR_DEVICE_ID,
							 viewdesc, &nulls[1]);
	values[2] = heap_getattr(trigdata->tg_trigtuple, IMPORT_ATTR_DEVICE_NAME,
							 viewdesc, &nulls[2]);

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
	MemoryContext oldcxt;
	Tuplestorestate *copy;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));

	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setDesc = staged_rows_desc();
	copy = tuplestore_begin_heap(false, false, work_mem);
	if (staged != NULL)
	{
		TupleTableSlot *slot = MakeSingleTupleTableSlot(staged->desc,
														&TTSOpsMinimalTuple);

		tuplestore_rescan(staged->rows);
		while (tuplestore_gettupleslot(staged->rows, true, false, slot))
			tuplestore_puttupleslot(copy, slot);
		ExecDropSingleTupleTableSlot(slot);
	}
	rsinfo->setResult = copy;
	MemoryContextSwitchTo(oldcxt);

	PG_RETURN_NULL();
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
 * Registration: the valid staged rows go into fleet.devices through COPY's
 * own insert path (multi-row inserts, fewer WAL records), which is what
 * keeps an import close to a raw COPY.  COPY reads them from a callback as
 * text-format lines.  The callback takes no argument, hence this static; it
 * is set up and torn down by device_import_register() alone.
 */
typedef struct Registration
{
	Tuplestorestate *rows;		/* the staged rows, read once */
	TupleTableSlot *slot;
	MemoryContext cxt;			/* where rows read back from disk live */
	StringInfoData line;		/* the text-format line being handed over */
	int			line_pos;		/* how much of it COPY already has */
	char	   *fixed_fields;	/* template, organization, operation: same on every line */
	int64		sent;			/* rows handed to COPY */
} Registration;

static Registration *registration = NULL;

PG_FUNCTION_INFO_V1(device_import_register);

/* Append a value escaped for COPY's text format, in runs of plain bytes. */
static void
append_copy_text(StringInfo buf, const char *value, int len)
{
	int			run_start = 0;

	for (int i = 0; i < len; i++)
	{
		const char *escape;

		switch (value[i])
		{
			case '\\':
				escape = "\\\\";
				break;
			case '\t':
				escape = "\\t";
				break;
			case '\n':
				escape = "\\n";
				break;
			case '\r':
				escape = "\\r";
				break;
			default:
				continue;
		}
		appendBinaryStringInfo(buf, value + run_start, i - run_start);
		appendStringInfoString(buf, escape);
		run_start = i + 1;
	}
	appendBinaryStringInfo(buf, value + run_start, len - run_start);
}

static void
append_copy_field(StringInfo buf, const char *value)
{
	if (value == NULL)
		appendStringInfoString(buf, "\\N");
	else
		append_copy_text(buf, value, strlen(value));
}

/* The next valid staged row as a line, or false at the end. */
static bool
registration_next_line(Registration *reg)
{
	MemoryContext oldcxt;

	resetStringInfo(&reg->line);
	reg->line_pos = 0;

	/*
	 * COPY calls us in contexts it resets; a row the tuplestore reads back
	 * from disk is freed by the slot on the next call, so it must live in
	 * ours.
	 */
	oldcxt = MemoryContextSwitchTo(reg->cxt);
	while (tuplestore_gettupleslot(reg->rows, true, false, reg->slot))
	{
		bool		isnull;
		Datum		id_datum = slot_getattr(reg->slot, 2, &isnull);
		text	   *id = isnull ? NULL : DatumGetTextPP(id_datum);
		Datum		name_datum = slot_getattr(reg->slot, 3, &isnull);
		text	   *name = isnull ? NULL : DatumGetTextPP(name_datum);
		const char *id_data = id ? VARDATA_ANY(id) : NULL;
		int			id_len = id ? VARSIZE_ANY_EXHDR(id) : 0;
		const char *name_data = name ? VARDATA_ANY(name) : NULL;
		int			name_len = name ? VARSIZE_ANY_EXHDR(name) : 0;

		if (!device_identity_valid(id_data, id_len, name_data, name_len))
			continue;			/* recorded as rejected by the caller */

		append_copy_text(&reg->line, id_data, id_len);
		appendStringInfoChar(&reg->line, '\t');
		/* an empty name means the id, as IoT Central does */
		if (name_len > 0)
			append_copy_text(&reg->line, name_data, name_len);
		else
			append_copy_text(&reg->line, id_data, id_len);
		appendStringInfoString(&reg->line, reg->fixed_fields);
		reg->sent++;
		MemoryContextSwitchTo(oldcxt);
		return true;
	}
	MemoryContextSwitchTo(oldcxt);
	return false;
}

/* COPY's data source: as many bytes of lines as fit, 0 at the end. */
static int
registration_read(void *outbuf, int minread, int maxread)
{
	Registration *reg = registration;
	char	   *out = outbuf;
	int			copied = 0;

	while (copied < maxread)
	{
		int			chunk;

		if (reg->line_pos >= reg->line.len && !registration_next_line(reg))
			break;
		chunk = Min(reg->line.len - reg->line_pos, maxread - copied);
		memcpy(out + copied, reg->line.data + reg->line_pos, chunk);
		reg->line_pos += chunk;
		copied += chunk;
	}
	return copied;
}

/*
 * fleet.device_import_register(operation_id bigint, template text,
 *                              organization text) returns bigint
 *
 * Inserts the valid staged rows of the current import into fleet.devices
 * and returns how many.  A repeated or already registered id raises
 * unique_violation, as a plain INSERT would.  Returns -1, inserting nothing,
 * when the caller is not simply allowed to insert into fleet.devices (no
 * table-wide INSERT privilege, or row-level security applies): COPY's insert
 * path checks neither, so the caller then uses INSERT, which checks both.
 */
Datum
device_import_register(PG_FUNCTION_ARGS)
{
	int64		operation_id = PG_GETARG_INT64(0);
	char	   *template_id = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *organization_id = text_to_cstring(PG_GETARG_TEXT_PP(2));
	Oid			relid;
	Relation	rel;
	ParseState *pstate;
	CopyFromState cstate;
	List	   *columns;
	List	   *options;
	Registration reg;
	StringInfoData fixed;
	uint64		inserted;

	if (staged == NULL)
		PG_RETURN_INT64(0);

	relid = get_relname_relid("devices", get_namespace_oid("fleet", false));
	if (!OidIsValid(relid))
		elog(ERROR, "fleet.devices does not exist");
	if (pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK ||
		check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		PG_RETURN_INT64(-1);

	rel = table_open(relid, RowExclusiveLock);

	initStringInfo(&fixed);
	appendStringInfoChar(&fixed, '\t');
	append_copy_field(&fixed, template_id);
	appendStringInfoChar(&fixed, '\t');
	append_copy_field(&fixed, organization_id);
	appendStringInfo(&fixed, "\t" INT64_FORMAT "\n", operation_id);

	memset(&reg, 0, sizeof(reg));
	reg.cxt = CurrentMemoryContext;
	reg.rows = staged->rows;
	reg.slot = MakeSingleTupleTableSlot(staged->desc, &TTSOpsMinimalTuple);
	initStringInfo(&reg.line);
	reg.fixed_fields = fixed.data;
	tuplestore_rescan(reg.rows);

	pstate = make_parsestate(NULL);
	(void) addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock,
										 NULL, false, false);
	columns = list_make5(makeString("id"), makeString("display_name"),
						 makeString("template_id"), makeString("organization_id"),
						 makeString("import_operation_id"));
	/* the lines are in the server's encoding already, whatever the client's */
	options = list_make1(makeDefElem("encoding",
									 (Node *) makeString(pstrdup(GetDatabaseEncodingName())),
									 -1));

	registration = &reg;
	PG_TRY();
	{
		cstate = BeginCopyFrom(pstate, rel, NULL, NULL, false,
							   registration_read, columns, options);
		inserted = CopyFrom(cstate);
		EndCopyFrom(cstate);
	}
	PG_FINALLY();
	{
		registration = NULL;
	}
	PG_END_TRY();

	ExecDropSingleTupleTableSlot(reg.slot);
	table_close(rel, NoLock);

	if (inserted != (uint64) reg.sent)
		elog(ERROR, "device import sent %lld rows but COPY inserted %llu",
			 (long long) reg.sent, (unsigned long long) inserted);

	PG_RETURN_INT64((int64) inserted);
}
