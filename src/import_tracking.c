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
#include "nodes/pg_list.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pg_fleet.h"

typedef enum ImportSlotState
{
	IMPORT_SLOT_FREE = 0,
	IMPORT_SLOT_ACTIVE,			/* an import in progress in backend pid */
	IMPORT_SLOT_FAILED,			/* for the engine to record */
	IMPORT_SLOT_RECORDING		/* being recorded by backend recorder */
} ImportSlotState;

typedef struct ImportSlot
{
	ImportSlotState state;
	pid_t		pid;
	pid_t		recorder;		/* the backend recording it, while RECORDING */
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

/* The slots this backend is recording: freed when its transaction commits. */
static List *my_recordings = NIL;

PG_FUNCTION_INFO_V1(import_failures);
PG_FUNCTION_INFO_V1(import_failures_pending);

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

/*
 * The failures this backend recorded: free once the rows are committed, to
 * be recorded again when the transaction that wrote them aborts.
 */
static void
import_tracking_recorded(bool committed)
{
	ListCell   *cell;

	if (my_recordings == NIL)
		return;
	SpinLockAcquire(&import_slots->mutex);
	foreach(cell, my_recordings)
	{
		ImportSlot *slot = &import_slots->slots[lfirst_int(cell)];

		if (slot->state == IMPORT_SLOT_RECORDING && slot->recorder == MyProcPid)
			slot->state = committed ? IMPORT_SLOT_FREE : IMPORT_SLOT_FAILED;
	}
	SpinLockRelease(&import_slots->mutex);
	list_free(my_recordings);
	my_recordings = NIL;
}

static void
import_tracking_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		import_tracking_end(false);
		import_tracking_recorded(true);
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		import_tracking_end(true);
		import_tracking_recorded(false);
	}
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
 * Whether a slot holds a failure of this database's to record: failed, or
 * left active or being recorded by a backend that is gone.  Liveness is
 * looked up outside the spinlock.
 */
static bool
import_slot_to_record(ImportSlot *slot, bool *dead_importer)
{
	*dead_importer = false;
	if (slot->database != MyDatabaseId)
		return false;
	switch (slot->state)
	{
		case IMPORT_SLOT_FAILED:
			return true;
		case IMPORT_SLOT_ACTIVE:
			*dead_importer = BackendPidGetProc(slot->pid) == NULL;
			return *dead_importer;
		case IMPORT_SLOT_RECORDING:
			return BackendPidGetProc(slot->recorder) == NULL;
		default:
			return false;
	}
}

/*
 * fleet_internal.import_failures(): this database's imports that failed,
 * and those whose backend went away without saying, for the engine to
 * record.  Each one returned is being recorded by this backend: nobody
 * else gets it, and its slot is freed when this transaction commits.
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
		ImportSlot *shared = &import_slots->slots[i];
		Datum		values[9];
		bool		nulls[9];
		bool		dead_importer;
		bool		taken = false;
		MemoryContext old;

		SpinLockAcquire(&import_slots->mutex);
		memcpy(&slot, shared, sizeof(slot));
		SpinLockRelease(&import_slots->mutex);
		if (!import_slot_to_record(&slot, &dead_importer))
			continue;
		/* take it, unless it changed meanwhile */
		SpinLockAcquire(&import_slots->mutex);
		if (shared->state == slot.state && shared->operation_id == slot.operation_id)
		{
			shared->state = IMPORT_SLOT_RECORDING;
			shared->recorder = MyProcPid;
			taken = true;
		}
		SpinLockRelease(&import_slots->mutex);
		if (!taken)
			continue;
		old = MemoryContextSwitchTo(TopMemoryContext);
		my_recordings = lappend_int(my_recordings, i);
		MemoryContextSwitchTo(old);

		if (dead_importer)
		{
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
 * fleet_internal.import_failures_pending(): how many of this database's
 * failed imports are not recorded yet (failed, or being recorded by a
 * transaction that has not committed).
 */
Datum
import_failures_pending(PG_FUNCTION_ARGS)
{
	int64		pending = 0;
	int			i;

	for (i = 0; i < import_slots->count; i++)
	{
		ImportSlot	slot;
		bool		dead_importer;

		SpinLockAcquire(&import_slots->mutex);
		memcpy(&slot, &import_slots->slots[i], sizeof(slot));
		SpinLockRelease(&import_slots->mutex);
		if (slot.database == MyDatabaseId &&
			(slot.state == IMPORT_SLOT_RECORDING || import_slot_to_record(&slot, &dead_importer)))
			pending++;
	}
	PG_RETURN_INT64(pending);
}
