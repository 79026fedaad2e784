/*-------------------------------------------------------------------------
 *
 * engine_shared.c
 *	  What the engine, its launcher and every backend share: how a backend
 *	  wakes the engine, finds it, reads its health, and asks it to step
 *	  aside.
 *
 * The engine sleeps on its latch between steps.  A backend that queues,
 * stops or resumes a job calls fleet_internal.wake_engine(): at commit, not before,
 * the latch is set, so the engine never looks for work that is not
 * visible yet (and a rolled-back request wakes nobody).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "pg_fleet.h"

FleetShared *fleet_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Set by fleet_internal.wake_engine() and engine_wake_launcher_at_commit(), acted on at commit. */
static bool wake_engine_at_commit = false;
static bool wake_launcher_at_commit = false;

PG_FUNCTION_INFO_V1(wake_engine);
PG_FUNCTION_INFO_V1(engine_pid);
PG_FUNCTION_INFO_V1(engine_activity);

static void
fleet_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(FleetShared)));
	RequestAddinShmemSpace(import_tracking_shmem_size());
}

static void
fleet_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	fleet_shared = ShmemInitStruct("pg_fleet", sizeof(FleetShared), &found);
	if (!found)
	{
		memset(fleet_shared, 0, sizeof(FleetShared));
		SpinLockInit(&fleet_shared->mutex);
	}
	import_tracking_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

static void
wake_engine_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latch = NULL;

	if (event == XACT_EVENT_COMMIT && wake_engine_at_commit && fleet_shared)
	{
		SpinLockAcquire(&fleet_shared->mutex);
		if (fleet_shared->engine_database == MyDatabaseId)
			latch = fleet_shared->engine_latch;
		SpinLockRelease(&fleet_shared->mutex);
		if (latch)
			SetLatch(latch);
	}
	if (event == XACT_EVENT_COMMIT && wake_launcher_at_commit && fleet_shared)
		engine_wake_launcher();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		wake_engine_at_commit = wake_launcher_at_commit = false;
}

/* Called from _PG_init: shared memory and the commit hook. */
void
engine_shared_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = fleet_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = fleet_shmem_startup;

	RegisterXactCallback(wake_engine_xact_callback, NULL);
}

/* Wakes the launcher: a setting, a pause or the engine's database changed. */
void
engine_wake_launcher(void)
{
	Latch	   *latch;

	SpinLockAcquire(&fleet_shared->mutex);
	latch = fleet_shared->launcher_latch;
	SpinLockRelease(&fleet_shared->mutex);
	if (latch)
		SetLatch(latch);
}

/* Wakes the launcher when the current transaction commits: a database it waits for is there. */
void
engine_wake_launcher_at_commit(void)
{
	wake_launcher_at_commit = true;
}

/* Counts an error of the engine's for the status view. */
void
engine_note_error(const char *message)
{
	SpinLockAcquire(&fleet_shared->mutex);
	fleet_shared->errors++;
	fleet_shared->last_error_at = GetCurrentTimestamp();
	strlcpy(fleet_shared->last_error, message, sizeof(fleet_shared->last_error));
	SpinLockRelease(&fleet_shared->mutex);
}

/*
 * Whether a backend asked the engine serving database to step aside, and
 * whether it must leave the database.  A request whose backend is gone
 * (it crashed before it could take the request back) no longer counts.
 */
bool
engine_pause_requested(Oid database, bool *disconnect)
{
	pid_t		holder;
	Oid			held_database;
	bool		held_disconnect;

	SpinLockAcquire(&fleet_shared->mutex);
	holder = fleet_shared->pause_holder;
	held_database = fleet_shared->pause_database;
	held_disconnect = fleet_shared->pause_disconnect;
	SpinLockRelease(&fleet_shared->mutex);

	if (holder == 0)
		return false;
	if (BackendPidGetProc(holder) == NULL)
	{
		SpinLockAcquire(&fleet_shared->mutex);
		if (fleet_shared->pause_holder == holder)
			fleet_shared->pause_holder = 0;
		SpinLockRelease(&fleet_shared->mutex);
		return false;
	}
	if (held_database != database)
		return false;
	if (disconnect)
		*disconnect = held_disconnect;
	return true;
}

/*
 * fleet_internal.wake_engine(): wake the engine when the current transaction commits.
 */
Datum
wake_engine(PG_FUNCTION_ARGS)
{
	wake_engine_at_commit = true;
	PG_RETURN_VOID();
}

/*
 * fleet_internal.engine_pid(): the process id of the engine serving this database,
 * or NULL when none does.
 */
Datum
engine_pid(PG_FUNCTION_ARGS)
{
	pid_t		pid = 0;

	if (fleet_shared)
	{
		SpinLockAcquire(&fleet_shared->mutex);
		if (fleet_shared->engine_database == MyDatabaseId)
			pid = fleet_shared->engine_pid;
		SpinLockRelease(&fleet_shared->mutex);
	}
	if (pid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32((int32) pid);
}

static const char *
engine_state_name(EngineState state)
{
	switch (state)
	{
		case ENGINE_NOT_RUNNING:
			return "not running";
		case ENGINE_STARTING:
			return "starting";
		case ENGINE_IDLE:
			return "idle";
		case ENGINE_STEPPING:
			return "stepping";
		case ENGINE_PAUSED:
			return "paused";
	}
	return "unknown";
}

/*
 * fleet_internal.engine_activity(): the engine as its shared state shows
 * it, for fleet.engine_status.  The counters are since the engine's start.
 */
Datum
engine_activity(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[10];
	bool		nulls[10];
	FleetShared copy;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "engine_activity must return a composite type");

	SpinLockAcquire(&fleet_shared->mutex);
	memcpy(&copy, fleet_shared, sizeof(copy));
	SpinLockRelease(&fleet_shared->mutex);

	memset(nulls, 0, sizeof(nulls));
	/* pid, database, state */
	if (copy.engine_pid != 0)
	{
		char	   *database = get_database_name(copy.engine_database);

		values[0] = Int32GetDatum((int32) copy.engine_pid);
		if (database)
			values[1] = CStringGetTextDatum(database);
		else
			nulls[1] = true;
		values[2] = CStringGetTextDatum(engine_state_name(copy.engine_state));
	}
	else
	{
		nulls[0] = true;
		values[1] = CStringGetTextDatum(fleet_database_name);
		values[2] = CStringGetTextDatum(engine_state_name(ENGINE_NOT_RUNNING));
	}
	/* why none runs, according to the launcher */
	if (copy.engine_pid == 0 && copy.launcher_note[0] != '\0')
		values[3] = CStringGetTextDatum(copy.launcher_note);
	else if (copy.engine_pid == 0 && copy.launcher_pid == 0)
		values[3] = CStringGetTextDatum("the launcher is not running");
	else
		nulls[3] = true;
	/* started, last step, steps, errors, last error and when */
	if (copy.engine_pid != 0)
		values[4] = TimestampTzGetDatum(copy.engine_started_at);
	else
		nulls[4] = true;
	if (copy.engine_pid != 0 && copy.last_step_at != 0)
		values[5] = TimestampTzGetDatum(copy.last_step_at);
	else
		nulls[5] = true;
	values[6] = Int64GetDatum((int64) copy.steps);
	values[7] = Int64GetDatum((int64) copy.errors);
	if (copy.last_error_at != 0)
	{
		values[8] = CStringGetTextDatum(copy.last_error);
		values[9] = TimestampTzGetDatum(copy.last_error_at);
	}
	else
		nulls[8] = nulls[9] = true;

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
