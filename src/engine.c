/*-------------------------------------------------------------------------
 *
 * engine.c
 *	  The job engine's background worker: one per cluster, in the database
 *	  named by fleet.database_name, started by the launcher (launcher.c).
 *
 * Each turn of its loop is a few short transactions, each committed on its
 * own (src/sql/engine.sql has the SQL side):
 *
 *	1. fleet_internal.engine_plan(): housekeeping (command timeouts,
 *	   schedules, pg_cron, statistics, retention), then the job to serve
 *	   next, whose attempt is marked and committed before it runs, so a step
 *	   that crashes the engine is seen as failed afterwards;
 *	2. fleet_internal.engine_run(): that job's step (its start, or one
 *	   chunk), under fleet.engine_statement_timeout;
 *	3. if the step failed, fleet_internal.engine_failed(): the job retries
 *	   later, with backoff, or fails after repeated errors that will repeat.
 *	   Deadlocks, lock timeouts and other contention are retried and never
 *	   fail a job.
 *
 * Between turns it sleeps on its latch until the time engine_plan() asked
 * for; backends wake it at commit (engine_shared.c).  All job state is in
 * tables, so a crash loses at most the step in progress.  The session runs
 * with fleet.engine_lock_timeout: a lock someone holds delays a step, never
 * stops the engine.
 *
 * A database whose pg_fleet is still at 0.1 gets that version's single
 * step, fleet.engine_step(), until ALTER EXTENSION pg_fleet UPDATE has run:
 * the engine carries on across the update.  0.2's and 0.3's engine
 * functions are this version's (engine_turn_runs), so their turns are the
 * same.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "pg_fleet.h"

PGDLLEXPORT void fleet_engine_main(Datum main_arg);

/* What a failed transaction leaves for the next one to record. */
typedef struct EngineError
{
	char		sqlstate[6];
	char		message[1024];
} EngineError;

/* What engine_plan() decided. */
typedef struct EnginePlan
{
	char		job_id[256];	/* empty: nothing to run now */
	char		action[16];		/* 'start' or 'advance' */
	int			nap_ms;
} EnginePlan;

typedef void (*ResultReader) (void *arg);

static void
engine_set_state(EngineState state)
{
	SpinLockAcquire(&fleet_shared->mutex);
	fleet_shared->engine_state = state;
	if (state == ENGINE_IDLE)
	{
		fleet_shared->steps++;
		fleet_shared->last_step_at = GetCurrentTimestamp();
	}
	SpinLockRelease(&fleet_shared->mutex);
}

static void
engine_detach(int code, Datum arg)
{
	SpinLockAcquire(&fleet_shared->mutex);
	fleet_shared->engine_latch = NULL;
	fleet_shared->engine_pid = 0;
	fleet_shared->engine_database = InvalidOid;
	fleet_shared->engine_state = ENGINE_NOT_RUNNING;
	SpinLockRelease(&fleet_shared->mutex);
}

/*
 * The engine's session settings.  On one server its commits do not wait for
 * the WAL to reach disk: a crash may lose its last fraction of a second of
 * steps, whole (the devices they changed with them), and it does them
 * again.  Nothing another session saw is lost, since that session's own
 * commit flushes the WAL up to it; and a turn costs no disk flush.
 */
static void
engine_apply_settings(void)
{
	char		value[32];

	bool		citus = GetConfigOption("citus.multi_shard_modify_mode", true, false) != NULL;

	snprintf(value, sizeof(value), "%d", fleet_engine_lock_timeout);
	SetConfigOption("lock_timeout", value, PGC_SUSET, PGC_S_SESSION);

	/*
	 * With Citus loaded the commit stays synchronous: a step that wrote the
	 * workers' shards commits there (two-phase) once the coordinator's own
	 * commit returned, and a coordinator that lost that commit in a crash
	 * would leave the workers' part of the step without the rest.  And a
	 * step that wrote the devices' shards over several connections per
	 * node could not then change a job, a batch or a window (reference
	 * tables other tables refer to), so the engine uses one connection per
	 * node, as Citus advises for such transactions.  Its writes to the
	 * small reference tables are ordered by row locks, not by Citus's
	 * exclusive lock on each table's shard, which a step and an API call
	 * writing two tables in turn would take in opposite orders (as
	 * fleet.distribute() sets for the database's sessions).
	 */
	if (citus)
	{
		SetConfigOption("citus.multi_shard_modify_mode", "sequential", PGC_USERSET, PGC_S_SESSION);
		SetConfigOption("citus.all_modifications_commutative", "on", PGC_USERSET, PGC_S_SESSION);
	}
	else
		SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION);
}

/*
 * Runs one statement in a transaction of its own and commits it.  With
 * timed, fleet.engine_statement_timeout applies (a background worker's
 * statements are otherwise never timed).  On an error, the transaction is
 * rolled back and the error is left in *error; returns whether it went
 * well.  read, when given, copies the result out before the commit.
 */
static bool
engine_transaction(const char *sql, int nargs, Oid *argtypes, Datum *values,
				   const char *nulls, bool timed, ResultReader read, void *arg,
				   EngineError *error)
{
	MemoryContext outer = CurrentMemoryContext;
	volatile bool ok = true;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, sql);
		if (timed && fleet_engine_statement_timeout > 0)
			enable_timeout_after(STATEMENT_TIMEOUT, fleet_engine_statement_timeout);
		if (SPI_execute_with_args(sql, nargs, argtypes, values, nulls, false, 0) < 0)
			elog(ERROR, "pg_fleet engine could not run \"%s\"", sql);
		if (timed)
			disable_timeout(STATEMENT_TIMEOUT, false);
		if (read)
			read(arg);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		if (error)
		{
			strlcpy(error->sqlstate, unpack_sql_state(edata->sqlerrcode), sizeof(error->sqlstate));
			strlcpy(error->message, edata->message ? edata->message : "unknown error",
					sizeof(error->message));
		}
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();

	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

/*
 * The installed pg_fleet's version, or false when it is not installed here;
 * *citus_worker says whether the database is a Citus worker's.
 */
static bool
engine_installed_version(char *version, Size size, bool *citus_worker)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("pg_fleet"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		datum = heap_getattr(tuple, Anum_pg_extension_extversion,
										 RelationGetDescr(rel), &isnull);

		if (!isnull)
		{
			text_to_cstring_buffer(DatumGetTextPP(datum), version, size);
			found = true;
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	*citus_worker = found && citus_worker_node();
	CommitTransactionCommand();
	return found;
}

static void
read_plan(void *arg)
{
	EnginePlan *plan = (EnginePlan *) arg;
	bool		isnull;
	Datum		value;

	plan->job_id[0] = '\0';
	plan->nap_ms = fleet_engine_naptime;
	if (SPI_processed != 1)
		return;
	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		text_to_cstring_buffer(DatumGetTextPP(value), plan->job_id, sizeof(plan->job_id));
	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
		text_to_cstring_buffer(DatumGetTextPP(value), plan->action, sizeof(plan->action));
	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	if (!isnull)
		plan->nap_ms = DatumGetInt32(value);
}

static void
read_bool(void *arg)
{
	bool	   *result = (bool *) arg;
	bool		isnull;
	Datum		value;

	*result = false;
	if (SPI_processed == 1)
	{
		value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		*result = !isnull && DatumGetBool(value);
	}
}

static void
read_int(void *arg)
{
	int		   *result = (int *) arg;
	bool		isnull;
	Datum		value;

	if (SPI_processed == 1)
	{
		value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			*result = DatumGetInt32(value);
	}
}

/*
 * Whether engine_turn() can run a database whose pg_fleet is at "version":
 * this library's own version, and the versions whose engine functions
 * (fleet_internal.engine_plan and the steps) have the same signatures and
 * meaning.  Add a version here only when that is true.
 */
static bool
engine_turn_runs(const char *version)
{
	static const char *const same_engine[] = {PG_FLEET_VERSION, "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"};

	for (int i = 0; i < lengthof(same_engine); i++)
		if (strcmp(version, same_engine[i]) == 0)
			return true;
	return false;
}

/*
 * A turn of a database whose pg_fleet is 0.1: that version's one step, in
 * one transaction, as its engine ran it.
 */
static long
engine_turn_0_1(void)
{
	int			sleep_ms = fleet_engine_naptime;
	EngineError error;

	if (!engine_transaction("SELECT fleet.engine_step()", 0, NULL, NULL, NULL, false,
							read_int, &sleep_ms, &error))
	{
		engine_note_error(error.message);
		ereport(WARNING,
				(errmsg("pg_fleet engine step failed: %s", error.message)));
		return fleet_engine_naptime;
	}
	return sleep_ms;
}

/* One turn: plan, run the planned job's step, record its failure. */
static long
engine_turn(bool *starting)
{
	EnginePlan	plan;
	EngineError error;
	Oid			plan_types[1] = {BOOLOID};
	Datum		plan_values[1];
	Oid			run_types[2] = {TEXTOID, TEXTOID};
	Datum		run_values[2];
	bool		more = false;

	plan_values[0] = BoolGetDatum(*starting);
	if (!engine_transaction("SELECT job_id, action, nap_ms FROM fleet_internal.engine_plan(NULL, $1)",
							1, plan_types, plan_values, NULL, true, read_plan, &plan, &error))
	{
		/* housekeeping guards each of its parts: this is unexpected */
		engine_note_error(error.message);
		ereport(WARNING,
				(errmsg("pg_fleet engine could not plan its step: %s", error.message),
				 errdetail("SQLSTATE %s. The engine tries again in %d ms.",
						   error.sqlstate, fleet_engine_naptime)));
		return fleet_engine_naptime;
	}
	*starting = false;
	if (plan.job_id[0] == '\0')
		return plan.nap_ms;

	run_values[0] = CStringGetTextDatum(plan.job_id);
	run_values[1] = CStringGetTextDatum(plan.action);
	if (!engine_transaction("SELECT fleet_internal.engine_run($1, $2)",
							2, run_types, run_values, NULL, true, read_bool, &more, &error))
	{
		Oid			failed_types[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
		Datum		failed_values[4];
		EngineError second;

		engine_note_error(error.message);
		failed_values[0] = run_values[0];
		failed_values[1] = run_values[1];
		failed_values[2] = CStringGetTextDatum(error.sqlstate);
		failed_values[3] = CStringGetTextDatum(error.message);
		/* it logs the failure, and what the engine will do about it */
		if (!engine_transaction("SELECT fleet_internal.engine_failed($1, $2, $3, $4)",
								4, failed_types, failed_values, NULL, false, NULL, NULL, &second))
		{
			engine_note_error(second.message);
			ereport(WARNING,
					(errmsg("pg_fleet engine: step of job \"%s\" failed (%s), and so did recording it: %s",
							plan.job_id, error.message, second.message)));
			return fleet_engine_naptime;
		}
		return 0;
	}
	return more ? 0 : plan.nap_ms;
}

void
fleet_engine_main(Datum main_arg)
{
	Oid			database = DatumGetObjectId(main_arg);
	bool		starting = true;
	char		mismatch_logged[64] = "";
	char		database_name[NAMEDATALEN];

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(database, InvalidOid, 0);

	SpinLockAcquire(&fleet_shared->mutex);
	fleet_shared->engine_latch = MyLatch;
	fleet_shared->engine_pid = MyProcPid;
	fleet_shared->engine_database = MyDatabaseId;
	fleet_shared->engine_state = ENGINE_STARTING;
	fleet_shared->engine_started_at = GetCurrentTimestamp();
	fleet_shared->last_step_at = 0;
	fleet_shared->steps = 0;
	fleet_shared->errors = 0;
	fleet_shared->last_error_at = 0;
	fleet_shared->last_error[0] = '\0';
	SpinLockRelease(&fleet_shared->mutex);
	before_shmem_exit(engine_detach, (Datum) 0);

	SetConfigOption("application_name", "pg_fleet engine", PGC_USERSET, PGC_S_SESSION);
	engine_apply_settings();

	StartTransactionCommand();
	strlcpy(database_name, get_database_name(MyDatabaseId), sizeof(database_name));
	CommitTransactionCommand();
	ereport(LOG,
			(errmsg("pg_fleet engine started in database \"%s\"", database_name)));

	for (;;)
	{
		long		sleep_ms;
		char		version[64];
		bool		disconnect;
		bool		citus_worker;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			engine_apply_settings();
		}

		/*
		 * Leave when no longer wanted here: switched off, moved to another
		 * database, or asked to leave it (for a DROP DATABASE).  Exit code 0:
		 * a clean exit, which the launcher does not count as a failure.
		 */
		if (!fleet_engine_enabled || strcmp(fleet_database_name, database_name) != 0 ||
			(engine_pause_requested(MyDatabaseId, &disconnect) && disconnect))
			proc_exit(0);

		/* a backend dropping pg_fleet (or updating it) goes first */
		if (engine_pause_requested(MyDatabaseId, &disconnect))
		{
			engine_set_state(ENGINE_PAUSED);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 100, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			continue;
		}

		engine_set_state(ENGINE_STEPPING);
		if (!engine_installed_version(version, sizeof(version), &citus_worker))
			sleep_ms = fleet_engine_naptime;	/* not installed (yet) */
		else if (citus_worker)
		{
			/* the launcher looks again in a minute (a node may change role) */
			ereport(LOG,
					(errmsg("pg_fleet engine: database \"%s\" is on a Citus worker; jobs run on the coordinator",
							database_name)));
			SpinLockAcquire(&fleet_shared->mutex);
			fleet_shared->engine_on_citus_worker = true;
			SpinLockRelease(&fleet_shared->mutex);
			proc_exit(0);
		}
		else if (strcmp(version, "0.1") == 0)
			sleep_ms = engine_turn_0_1();
		else if (engine_turn_runs(version))
			sleep_ms = engine_turn(&starting);
		else
		{
			if (strcmp(mismatch_logged, version) != 0)
				ereport(WARNING,
						(errmsg("pg_fleet engine: the extension is at version %s, the library at %s; no job runs meanwhile",
								version, PG_FLEET_VERSION),
						 errhint("Run ALTER EXTENSION pg_fleet UPDATE in database \"%s\".",
								 database_name)));
			strlcpy(mismatch_logged, version, sizeof(mismatch_logged));
			sleep_ms = fleet_engine_naptime;
		}
		engine_set_state(ENGINE_IDLE);

		if (sleep_ms > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}
