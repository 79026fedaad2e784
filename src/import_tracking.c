/*-------------------------------------------------------------------------
 *
 * import_tracking.c
 *	  Imports that fail still leave their row in the Device Operations
 *	  panel.
 *
 * An import's row in fleet.device_operations is written by the import's own
 * transaction, so a malformed file, a cancel, a dropped connection or a
 * rolled-back transaction would take it away, and the user would see
 * nothing.  So each import also holds a slot in shared memory from its
 * start: at commit the slot is freed; at an abort it keeps why (the error
 * this backend reported, with COPY's line) and how far the import got, and
 * the engine, in its own transaction, writes the failed operation under
 * the id the import had drawn (src/sql/device_import.sql).
 *
 * A server crash resets shared memory: an import in flight then leaves no
 * row (the README says so).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/timestamp.h"

#include "pg_fleet.h"

typedef enum ImportSlotState
{
	IMPORT_SLOT_FREE = 0,
	IMPORT_SLOT_ACTIVE,			/* an import in progress in backend pid */
	IMPORT_SLOT_FAILED			/* for the engine to record */
} ImportSlotState;

typedef struct ImportSlot
{
	ImportSlotState state;
	pid_t		pid;
	Oid			database;
	int64		operation_id;
	char		template_id[256];
	char		organization_id[256];
	char		started_by[NAMEDATALEN];
	TimestampTz started_at;
	TimestampTz failed_at;
	int64		rows;
	char		error[512];
} ImportSlot;

typedef struct ImportSlots
{
	slock_t		mutex;
	int			count;
	ImportSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} ImportSlots;

static ImportSlots *import_slots = NULL;

/* This backend's import in progress: its slot, rows staged, the last error. */
static ImportSlot *my_slot = NULL;
static int64 my_rows = 0;
static char my_error[512];
static emit_log_hook_type prev_emit_log_hook = NULL;

PG_FUNCTION_INFO_V1(import_failures);
PG_FUNCTION_INFO_V1(forget_import_failures);

/* Twice the backends: a failed slot waits for the engine while its backend imports again. */
Size
import_tracking_shmem_size(void)
{
	return MAXALIGN(add_size(offsetof(ImportSlots, slots),
							 mul_size(sizeof(ImportSlot), 2 * MaxBackends)));
}

void
import_tracking_shmem_init(void)
{
	bool		found;

	import_slots = ShmemInitStruct("pg_fleet import slots", import_tracking_shmem_size(), &found);
	if (!found)
	{
		SpinLockInit(&import_slots->mutex);
		import_slots->count = 2 * MaxBackends;
		memset(import_slots->slots, 0, sizeof(ImportSlot) * import_slots->count);
	}
}

/* The end of this backend's import: freed on success, kept on failure. */
static void
import_tracking_end(bool failed)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&import_slots->mutex);
	if (failed)
	{
		my_slot->state = IMPORT_SLOT_FAILED;
		my_slot->rows = my_rows;
		my_slot->failed_at = GetCurrentTimestamp();
		strlcpy(my_slot->error,
				my_error[0] != '\0' ? my_error :
				proc_exit_inprogress ? "the importing session ended before the import finished" :
				"the import's transaction was rolled back",
				sizeof(my_slot->error));
	}
	else
		my_slot->state = IMPORT_SLOT_FREE;
	SpinLockRelease(&import_slots->mutex);
	my_slot = NULL;
}

static void
import_tracking_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		import_tracking_end(false);
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		import_tracking_end(true);
}

/* An import that ran in a subtransaction that rolls back failed too. */
static SubTransactionId my_subxid = InvalidSubTransactionId;

static void
import_tracking_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
								 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && my_slot != NULL && my_subxid >= mySubid)
		import_tracking_end(true);
}

/* Keeps the error this backend reports while an import is in progress. */
static void
import_tracking_emit_log(ErrorData *edata)
{
	if (my_slot != NULL && edata->elevel >= ERROR && edata->message != NULL)
	{
		if (edata->context != NULL)
		{
			/* COPY's context line says where: "COPY device_import, line 5: ..." */
			const char *newline = strchr(edata->context, '\n');
			int			context_len = newline ? (int) (newline - edata->context) : (int) strlen(edata->context);

			snprintf(my_error, sizeof(my_error), "%s (%.*s)", edata->message, context_len, edata->context);
		}
		else
			strlcpy(my_error, edata->message, sizeof(my_error));
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
import_tracking_init(void)
{
	RegisterXactCallback(import_tracking_xact_callback, NULL);
	RegisterSubXactCallback(import_tracking_subxact_callback, NULL);
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = import_tracking_emit_log;
}

/*
 * An import starts: it takes a slot.  Without a free one (more imports in
 * flight than twice the connections, while the engine is down) it goes
 * untracked, as in pg_fleet 0.1.
 */
void
import_tracking_begin(int64 operation_id, const char *template_id, const char *organization_id)
{
	int			i;

	my_rows = 0;
	my_error[0] = '\0';
	SpinLockAcquire(&import_slots->mutex);
	for (i = 0; i < import_slots->count; i++)
	{
		ImportSlot *slot = &import_slots->slots[i];

		if (slot->state == IMPORT_SLOT_FREE ||
			(slot->state == IMPORT_SLOT_ACTIVE && slot->pid == MyProcPid))
		{
			slot->state = IMPORT_SLOT_ACTIVE;
			slot->pid = MyProcPid;
			slot->database = MyDatabaseId;
			slot->operation_id = operation_id;
			strlcpy(slot->template_id, template_id ? template_id : "", sizeof(slot->template_id));
			strlcpy(slot->organization_id, organization_id, sizeof(slot->organization_id));
			strlcpy(slot->started_by, GetUserNameFromId(GetUserId(), false), sizeof(slot->started_by));
			slot->started_at = GetCurrentStatementStartTimestamp();
			slot->rows = 0;
			slot->error[0] = '\0';
			my_slot = slot;
			break;
		}
	}
	SpinLockRelease(&import_slots->mutex);
	my_subxid = GetCurrentSubTransactionId();
}

void
import_tracking_count_row(void)
{
	my_rows++;
}

/*
 * fleet_internal.import_failures(): this database's imports that failed,
 * and those whose backend went away without saying (the engine records
 * them; fleet_internal.forget_import_failures() then frees their slots).
 */
Datum
import_failures(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < import_slots->count; i++)
	{
		ImportSlot	slot;
		Datum		values[9];
		bool		nulls[9];

		SpinLockAcquire(&import_slots->mutex);
		memcpy(&slot, &import_slots->slots[i], sizeof(slot));
		SpinLockRelease(&import_slots->mutex);
		if (slot.database != MyDatabaseId || slot.state == IMPORT_SLOT_FREE)
			continue;
		if (slot.state == IMPORT_SLOT_ACTIVE)
		{
			if (BackendPidGetProc(slot.pid) != NULL)
				continue;		/* still at it */
			strlcpy(slot.error, "the importing session ended before the import finished",
					sizeof(slot.error));
			slot.failed_at = GetCurrentTimestamp();
		}
		memset(nulls, 0, sizeof(nulls));
		values[0] = Int64GetDatum(slot.operation_id);
		values[1] = CStringGetTextDatum(slot.template_id);
		nulls[1] = slot.template_id[0] == '\0';
		values[2] = CStringGetTextDatum(slot.organization_id);
		values[3] = CStringGetTextDatum(slot.started_by);
		values[4] = TimestampTzGetDatum(slot.started_at);
		values[5] = TimestampTzGetDatum(slot.failed_at);
		values[6] = Int64GetDatum(slot.rows);
		values[7] = CStringGetTextDatum(slot.error);
		values[8] = Int32GetDatum(slot.pid);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * fleet_internal.forget_import_failures(operation_ids bigint[]): the engine
 * recorded them (ids come from import_failures(), which checked that their
 * backends were gone); free their slots.
 */
Datum
forget_import_failures(PG_FUNCTION_ARGS)
{
	ArrayType  *ids = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elements;
	bool	   *nulls;
	int			n;
	int			i,
				j;

	deconstruct_array(ids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elements, &nulls, &n);
	SpinLockAcquire(&import_slots->mutex);
	for (i = 0; i < import_slots->count; i++)
	{
		ImportSlot *slot = &import_slots->slots[i];

		if (slot->database != MyDatabaseId || slot->state == IMPORT_SLOT_FREE)
			continue;
		for (j = 0; j < n; j++)
		{
			if (!nulls[j] && DatumGetInt64(elements[j]) == slot->operation_id)
				slot->state = IMPORT_SLOT_FREE;
		}
	}
	SpinLockRelease(&import_slots->mutex);
	PG_RETURN_VOID();
}
