/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The job engine's background worker, and how backends wake it.
 *
 * The worker connects to the database named by fleet.database_name and
 * calls fleet.engine_step() (SQL, src/sql/job_engine.sql) in a transaction
 * of its own, again and again: each step times out overdue commands,
 * starts queued jobs, and moves every running job forward by one committed
 * chunk.  All job state is in tables, so a crash loses at most the step in
 * progress, and the next worker carries on from the committed rows.
 *
 * Between steps it sleeps on its latch until the time engine_step() asked
 * for.  Backends that queue, stop or resume a job, or complete a command,
 * call fleet.wake_engine(): at commit, not before, the worker's latch is
 * set, so it never looks for work that is not visible yet.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pg_fleet.h"

/* What backends need to find the worker. */
typedef struct FleetShared
{
	slock_t		mutex;
	Latch	   *engine_latch;	/* NULL while no worker runs */
	pid_t		engine_pid;
} FleetShared;

static FleetShared *fleet_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Set by fleet.wake_engine(), acted on at commit. */
static bool wake_engine_at_commit = false;

PG_FUNCTION_INFO_V1(wake_engine);
PG_FUNCTION_INFO_V1(engine_pid);

PGDLLEXPORT void fleet_engine_main(Datum main_arg);

static void
fleet_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(FleetShared)));
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
		SpinLockInit(&fleet_shared->mutex);
		fleet_shared->engine_latch = NULL;
		fleet_shared->engine_pid = 0;
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
wake_engine_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latch = NULL;

	if (event == XACT_EVENT_COMMIT && wake_engine_at_commit && fleet_shared)
	{
		SpinLockAcquire(&fleet_shared->mutex);
		latch = fleet_shared->engine_latch;
		SpinLockRelease(&fleet_shared->mutex);
		if (latch)
			SetLatch(latch);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		wake_engine_at_commit = false;
}

/* Called from _PG_init: shared memory, the worker, the commit hook. */
void
engine_init(void)
{
	BackgroundWorker worker;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = fleet_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = fleet_shmem_startup;

	RegisterXactCallback(wake_engine_xact_callback, NULL);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* after a crash or a missing database, try again soon */
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pg_fleet");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "fleet_engine_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_fleet engine");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_fleet engine");
	RegisterBackgroundWorker(&worker);
}

/*
 * fleet.wake_engine(): wake the engine when the current transaction commits.
 */
Datum
wake_engine(PG_FUNCTION_ARGS)
{
	wake_engine_at_commit = true;
	PG_RETURN_VOID();
}

/*
 * fleet.engine_pid(): the engine worker's process id, or NULL when none runs.
 */
Datum
engine_pid(PG_FUNCTION_ARGS)
{
	pid_t		pid = 0;

	if (fleet_shared)
	{
		SpinLockAcquire(&fleet_shared->mutex);
		pid = fleet_shared->engine_pid;
		SpinLockRelease(&fleet_shared->mutex);
	}
	if (pid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32((int32) pid);
}

static void
engine_detach(int code, Datum arg)
{
	SpinLockAcquire(&fleet_shared->mutex);
	fleet_shared->engine_latch = NULL;
	fleet_shared->engine_pid = 0;
	SpinLockRelease(&fleet_shared->mutex);
}

/*
 * One engine step in its own transaction.  Returns how long to sleep before
 * the next one, in milliseconds (0: go on at once).  An error is reported
 * and rolled back, and the worker carries on after a pause: one bad step
 * must not stop every job.
 */
static long
engine_run_step(void)
{
	long		sleep_ms = fleet_engine_naptime;
	MemoryContext step_cxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		bool		isnull;
		Datum		value;

		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "SELECT fleet.engine_step()");

		/* the extension may not be installed (yet) in this database */
		if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_fleet'",
						true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look for the pg_fleet extension");
		if (SPI_processed > 0)
		{
			if (SPI_execute("SELECT fleet.engine_step()", false, 1) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "fleet.engine_step() returned no row");
			value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			sleep_ms = isnull ? fleet_engine_naptime : DatumGetInt32(value);
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(step_cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		sleep_ms = fleet_engine_naptime;
	}
	PG_END_TRY();

	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return sleep_ms;
}

void
fleet_engine_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(fleet_database_name, NULL, 0);

	SpinLockAcquire(&fleet_shared->mutex);
	fleet_shared->engine_latch = MyLatch;
	fleet_shared->engine_pid = MyProcPid;
	SpinLockRelease(&fleet_shared->mutex);
	before_shmem_exit(engine_detach, (Datum) 0);

	ereport(LOG,
			(errmsg("pg_fleet engine started in database \"%s\"", fleet_database_name)));

	for (;;)
	{
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		sleep_ms = engine_run_step();
		if (sleep_ms > 0)
		{
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}
