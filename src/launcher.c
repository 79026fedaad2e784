/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: keeps one engine running in the database named by
 *	  fleet.database_name.
 *
 * A background worker can connect to one database, once.  The launcher
 * connects to none (it reads only the shared catalog pg_database), so it
 * can wait for a database that does not exist yet, was dropped or was
 * renamed, and say so once instead of failing every second.  It starts the
 * engine (engine.c) as a dynamic worker in that database, starts it again
 * after it stops (waiting longer after each failure, up to a minute), stops
 * it while fleet.engine_enabled is off, and moves it when
 * fleet.database_name changes.  A backend about to drop or copy the
 * database asks it to keep the engine out meanwhile (utility_hook.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "pg_fleet.h"

/* Longest wait between two starts of an engine that keeps stopping. */
#define LAUNCHER_MAX_BACKOFF_MS 60000
/* How often a missing database is looked for (its creation also wakes us). */
#define LAUNCHER_RECHECK_MS 10000
/* How often the launcher looks whether a Citus worker became a coordinator. */
#define LAUNCHER_CITUS_WORKER_RECHECK_MS 60000
/* How long the engine has to leave by itself before it is stopped. */
#define STOP_GRACE_MS 10000

PGDLLEXPORT void fleet_launcher_main(Datum main_arg);

/* Registers the launcher, from _PG_init. */
void
launcher_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 10;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pg_fleet");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "fleet_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_fleet launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_fleet launcher");
	RegisterBackgroundWorker(&worker);
}

static void
launcher_detach(int code, Datum arg)
{
	SpinLockAcquire(&fleet_shared->mutex);
	fleet_shared->launcher_latch = NULL;
	fleet_shared->launcher_pid = 0;
	SpinLockRelease(&fleet_shared->mutex);
}

static void
wake_engine_latch(void)
{
	Latch	   *latch;

	SpinLockAcquire(&fleet_shared->mutex);
	latch = fleet_shared->engine_latch;
	SpinLockRelease(&fleet_shared->mutex);
	if (latch)
		SetLatch(latch);
}

static void
launcher_note(const char *note)
{
	SpinLockAcquire(&fleet_shared->mutex);
	strlcpy(fleet_shared->launcher_note, note, sizeof(fleet_shared->launcher_note));
	SpinLockRelease(&fleet_shared->mutex);
}

/*
 * The database's oid, or InvalidOid when there is none by that name.  A
 * scan of pg_database without its index, as the autovacuum launcher does:
 * a backend without a database cannot open the index.
 */
static Oid
launcher_find_database(const char *name)
{
	Oid			database = InvalidOid;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_database_datname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(name));
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		database = ((Form_pg_database) GETSTRUCT(tuple))->oid;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return database;
}

static BackgroundWorkerHandle *
launcher_start_engine(Oid database)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	pid_t		pid;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher restarts it */
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pg_fleet");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "fleet_engine_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_fleet engine");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_fleet engine");
	worker.bgw_main_arg = ObjectIdGetDatum(database);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		return NULL;
	if (WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
		return NULL;
	return handle;
}

void
fleet_launcher_main(Datum main_arg)
{
	BackgroundWorkerHandle *engine = NULL;
	char		engine_database[NAMEDATALEN] = "";
	Oid			engine_database_oid = InvalidOid;
	bool		stop_requested = false; /* we asked the running engine to stop */
	TimestampTz stop_deadline = 0;
	TimestampTz engine_started = 0;
	int			backoff_ms = 0;
	TimestampTz next_start = 0;
	char		missing_logged[NAMEDATALEN] = "";
	bool		full_logged = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* no database: pg_database is a shared catalog */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	SpinLockAcquire(&fleet_shared->mutex);
	fleet_shared->launcher_latch = MyLatch;
	fleet_shared->launcher_pid = MyProcPid;
	SpinLockRelease(&fleet_shared->mutex);
	before_shmem_exit(launcher_detach, (Datum) 0);

	for (;;)
	{
		long		timeout_ms = LAUNCHER_RECHECK_MS;
		TimestampTz now;
		pid_t		pid;
		bool		disconnect = false;
		Oid			database;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		now = GetCurrentTimestamp();

		/* the engine we started: still running, and still wanted there? */
		if (engine != NULL)
		{
			BgwHandleStatus status = GetBackgroundWorkerPid(engine, &pid);

			if (status == BGWH_STOPPED || status == BGWH_POSTMASTER_DIED)
			{
				bool		on_citus_worker;

				SpinLockAcquire(&fleet_shared->mutex);
				on_citus_worker = fleet_shared->engine_on_citus_worker;
				fleet_shared->engine_on_citus_worker = false;
				SpinLockRelease(&fleet_shared->mutex);
				if (on_citus_worker)
				{
					/* no engine on a Citus worker: look again in a minute */
					next_start = TimestampTzPlusMilliseconds(now, LAUNCHER_CITUS_WORKER_RECHECK_MS);
					launcher_note("this node is a Citus worker: jobs run on the coordinator");
				}
				else if (!stop_requested)
				{
					/*
					 * It stopped on its own: an error, or its database went.
					 * One that ran for a while starts again at once.
					 */
					if (TimestampDifferenceExceeds(engine_started, now, LAUNCHER_MAX_BACKOFF_MS))
						backoff_ms = 0;
					backoff_ms = Min(Max(backoff_ms * 2, 1000), LAUNCHER_MAX_BACKOFF_MS);
					next_start = TimestampTzPlusMilliseconds(now, backoff_ms);
					ereport(LOG,
							(errmsg("pg_fleet engine in database \"%s\" stopped; the launcher starts it again in %d s",
									engine_database, backoff_ms / 1000)));
				}
				pfree(engine);
				engine = NULL;
				stop_requested = false;
			}
			else if (!fleet_engine_enabled ||
					 strcmp(engine_database, fleet_database_name) != 0 ||
					 (engine_pause_requested(engine_database_oid, &disconnect) && disconnect))
			{
				/*
				 * The engine sees it too and leaves by itself (see engine.c);
				 * one that does not within STOP_GRACE_MS is stopped.
				 */
				if (!stop_requested)
				{
					stop_requested = true;
					stop_deadline = TimestampTzPlusMilliseconds(now, STOP_GRACE_MS);
					wake_engine_latch();
				}
				else if (now >= stop_deadline)
					TerminateBackgroundWorker(engine);
				timeout_ms = 100;
			}
		}

		if (engine == NULL && !fleet_engine_enabled)
			launcher_note("fleet.engine_enabled is off");
		else if (engine == NULL && now >= next_start)
		{
			database = launcher_find_database(fleet_database_name);
			if (!OidIsValid(database))
			{
				char		note[128];

				/* say it once per name, then look again now and then */
				if (strcmp(missing_logged, fleet_database_name) != 0)
				{
					ereport(LOG,
							(errmsg("pg_fleet: database \"%s\" named by fleet.database_name does not exist; the engine starts once it does",
									fleet_database_name),
							 errhint("Create the database and pg_fleet in it, or set fleet.database_name to the database that has pg_fleet and reload.")));
					strlcpy(missing_logged, fleet_database_name, sizeof(missing_logged));
				}
				snprintf(note, sizeof(note), "database \"%s\" does not exist", fleet_database_name);
				launcher_note(note);
			}
			else if (engine_pause_requested(database, &disconnect) && disconnect)
			{
				launcher_note("a backend is dropping or copying the database");
				timeout_ms = 100;
			}
			else
			{
				missing_logged[0] = '\0';
				engine = launcher_start_engine(database);
				if (engine == NULL)
				{
					if (!full_logged)
						ereport(LOG,
								(errmsg("pg_fleet launcher could not start the engine"),
								 errhint("Raise max_worker_processes.")));
					full_logged = true;
					launcher_note("no background worker slot is free (max_worker_processes)");
					next_start = TimestampTzPlusMilliseconds(now, 5000);
				}
				else
				{
					full_logged = false;
					strlcpy(engine_database, fleet_database_name, sizeof(engine_database));
					engine_database_oid = database;
					engine_started = now;
					launcher_note("");
				}
			}
		}
		if (engine == NULL && next_start > now)
			timeout_ms = Min(timeout_ms, TimestampDifferenceMilliseconds(now, next_start) + 1);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
