/*-------------------------------------------------------------------------
 *
 * utility_hook.c
 *	  Statements the engine must step aside for.
 *
 * The engine keeps a connection to its database and takes locks on
 * pg_fleet's tables in every step, so without help:
 *
 *	- DROP DATABASE (and ALTER DATABASE ... RENAME, and CREATE DATABASE
 *	  using it as a template) of the engine's database fails after five
 *	  seconds, "being accessed by other users";
 *	- DROP EXTENSION pg_fleet, or ALTER EXTENSION pg_fleet UPDATE, can
 *	  deadlock with a step (each holds locks the other wants).
 *
 * So before such a statement runs, the backend asks the engine to step
 * aside (engine_shared.c) and waits until it has: for the database
 * statements the engine leaves the database, and the launcher starts it
 * again only after the statement's transaction ended; for the extension
 * ones the engine finishes its step and then takes no other until the
 * dropping or updating transaction ends.  DROP EXTENSION
 * and DROP DATABASE also remove the pg_cron entries of the database's
 * schedules, which would otherwise fire into nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "pg_fleet.h"

/* How long a statement waits for the engine to step aside before going on. */
#define STEP_ASIDE_TIMEOUT_MS 30000

static ProcessUtility_hook_type prev_ProcessUtility = NULL;
static bool pause_until_transaction_end = false;

/* The engine's database, InvalidOid when no engine runs. */
static Oid
engine_database(void)
{
	Oid			database;

	SpinLockAcquire(&fleet_shared->mutex);
	database = fleet_shared->engine_pid != 0 ? fleet_shared->engine_database : InvalidOid;
	SpinLockRelease(&fleet_shared->mutex);
	return database;
}

static void
release_pause(void)
{
	SpinLockAcquire(&fleet_shared->mutex);
	if (fleet_shared->pause_holder == MyProcPid)
		fleet_shared->pause_holder = 0;
	SpinLockRelease(&fleet_shared->mutex);
	engine_wake_launcher();
}

static void
pause_xact_callback(XactEvent event, void *arg)
{
	if (pause_until_transaction_end &&
		(event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		 event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT))
	{
		pause_until_transaction_end = false;
		release_pause();
	}
}

/*
 * Asks the engine serving database to step aside (and to leave it, with
 * disconnect), and waits until it has, or STEP_ASIDE_TIMEOUT_MS passed:
 * then the statement runs anyway, as it would have without pg_fleet.
 */
static void
ask_engine_to_step_aside(Oid database, bool disconnect)
{
	TimestampTz started = GetCurrentTimestamp();
	Latch	   *engine_latch;

	SpinLockAcquire(&fleet_shared->mutex);
	fleet_shared->pause_holder = MyProcPid;
	fleet_shared->pause_database = database;
	fleet_shared->pause_disconnect = disconnect;
	engine_latch = fleet_shared->engine_latch;
	SpinLockRelease(&fleet_shared->mutex);
	engine_wake_launcher();
	if (engine_latch)
		SetLatch(engine_latch);

	for (;;)
	{
		bool		aside;

		SpinLockAcquire(&fleet_shared->mutex);
		aside = fleet_shared->engine_pid == 0 ||
			fleet_shared->engine_database != database ||
			(!disconnect && fleet_shared->engine_state == ENGINE_PAUSED);
		SpinLockRelease(&fleet_shared->mutex);
		if (aside ||
			TimestampDifferenceExceeds(started, GetCurrentTimestamp(), STEP_ASIDE_TIMEOUT_MS))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Removes the pg_cron entries of a database's schedules, as far as it can:
 * the statement that asks is not refused for it (a WARNING says what was
 * left).  Runs in a subtransaction, so a failure undoes only itself.
 */
static void
remove_cron_entries(const char *database)
{
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	if (cron_database_name(true) == NULL)
		return;
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		cron_set_entries(database, "[]", true);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ereport(WARNING,
				(errmsg("the pg_cron entries of database \"%s\" could not be removed: %s",
						database, error->message),
				 errhint("Remove them with cron.unschedule(); their names start with \"pg_fleet %s \".",
						 database)));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(context);
	CurrentResourceOwner = owner;
}

static bool
names_pg_fleet(List *objects)
{
	ListCell   *cell;

	foreach(cell, objects)
	{
		Node	   *object = lfirst(cell);

		if (IsA(object, String) && strcmp(strVal(object), "pg_fleet") == 0)
			return true;
	}
	return false;
}

static void
fleet_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					 ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	Oid			running_in = fleet_shared ? engine_database() : InvalidOid;
	const char *database_statement = NULL;	/* the engine must leave this database */
	bool		extension_statement = false;	/* the engine must pause here */
	char	   *dropped_database = NULL;
	bool		wake_launcher_after = false;

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			database_statement = ((DropdbStmt *) parsetree)->dbname;
			dropped_database = pstrdup(database_statement);
			break;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				database_statement = ((RenameStmt *) parsetree)->subname;
			break;
		case T_CreatedbStmt:
			{
				CreatedbStmt *stmt = (CreatedbStmt *) parsetree;
				ListCell   *cell;

				foreach(cell, stmt->options)
				{
					DefElem    *option = lfirst(cell);

					if (strcmp(option->defname, "template") == 0)
						database_statement = defGetString(option);
				}
				if (fleet_database_name && strcmp(stmt->dbname, fleet_database_name) == 0)
					wake_launcher_after = true;
			}
			break;
		case T_DropStmt:
			if (((DropStmt *) parsetree)->removeType == OBJECT_EXTENSION &&
				names_pg_fleet(((DropStmt *) parsetree)->objects))
				extension_statement = true;
			break;
		case T_AlterExtensionStmt:
			if (strcmp(((AlterExtensionStmt *) parsetree)->extname, "pg_fleet") == 0)
				extension_statement = true;
			break;
		default:
			break;
	}

	if (database_statement != NULL && OidIsValid(running_in))
	{
		Oid			database = get_database_oid(database_statement, true);

		/*
		 * Until the statement's transaction ends: the launcher must not see
		 * the database (dropped, renamed) before that commits.
		 */
		if (database == running_in)
		{
			ask_engine_to_step_aside(database, true);
			pause_until_transaction_end = true;
		}
	}
	if (extension_statement)
	{
		if (running_in == MyDatabaseId)
		{
			ask_engine_to_step_aside(MyDatabaseId, false);
			pause_until_transaction_end = true;
		}
		if (IsA(parsetree, DropStmt))
			remove_cron_entries(get_database_name(MyDatabaseId));
	}
	if (dropped_database != NULL && OidIsValid(get_database_oid(dropped_database, true)))
	{
		const char *cron_database = cron_database_name(true);

		/* pg_cron's own database takes its entries with it */
		if (cron_database != NULL && strcmp(cron_database, dropped_database) != 0)
			remove_cron_entries(dropped_database);
	}

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
							queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

	if (wake_launcher_after)
		engine_wake_launcher_at_commit();
}

/* Called from _PG_init. */
void
utility_hook_init(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = fleet_ProcessUtility;
	RegisterXactCallback(pause_xact_callback, NULL);
}

/*
 * fleet_internal.engine_step_aside() returns void: the engine of this
 * database finishes its step and takes no other until the calling
 * transaction ends, as for ALTER EXTENSION.  For fleet.distribute(), which
 * changes every table the engine's steps lock (Citus reports a distributed
 * deadlock otherwise).
 */
PG_FUNCTION_INFO_V1(engine_step_aside);

Datum
engine_step_aside(PG_FUNCTION_ARGS)
{
	if (!pause_until_transaction_end)
	{
		ask_engine_to_step_aside(MyDatabaseId, false);
		pause_until_transaction_end = true;
	}
	PG_RETURN_VOID();
}
