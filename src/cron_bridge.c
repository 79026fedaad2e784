/*-------------------------------------------------------------------------
 *
 * cron_bridge.c
 *	  Writes a schedule's pg_cron entry, wherever pg_cron keeps its entries.
 *
 * pg_cron keeps its table in the one database named by cron.database_name.
 * When that is this database, the entry is written with SPI inside the
 * caller's transaction, so it commits or rolls back with the schedule row.
 * When it is another database, a short-lived background worker connects
 * there as the calling role and writes it.  That write commits on its own,
 * so the SQL side (src/sql/scheduled_jobs.sql) treats pg_cron as an alarm
 * clock only: a fire that is not a due occurrence does nothing but point the
 * entry where the schedule says.
 *
 * The SQL-callable function takes the entry's parts, never SQL text, and is
 * not executable by PUBLIC: only fleet.sync_schedule_cron() calls it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* How long a caller waits for the worker that writes in the cron database. */
#define CRON_BRIDGE_TIMEOUT_MS 30000

/* What the caller hands the worker, and what the worker hands back. */
typedef struct CronBridgeRequest
{
	char		database[NAMEDATALEN];	/* where pg_cron lives */
	char		role[NAMEDATALEN];	/* who writes the entry */
	bool		removing;		/* only removing: no pg_cron, nothing to do */
	bool		done;			/* the worker got to the end */
	bool		failed;			/* ... with an error, in message */
	char		message[1024];
	char		sql[FLEXIBLE_ARRAY_MEMBER];
} CronBridgeRequest;

PGDLLEXPORT void pg_fleet_cron_bridge_main(Datum main_arg);

PG_FUNCTION_INFO_V1(cron_apply);
PG_FUNCTION_INFO_V1(cron_database);

static const char *
cron_database_name(bool missing_ok)
{
	const char *name = GetConfigOption("cron.database_name", true, false);

	if (name == NULL && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("scheduled jobs need pg_cron, which is not loaded"),
				 errhint("Add pg_cron to shared_preload_libraries before pg_fleet, restart, and run CREATE EXTENSION pg_cron in the database named by cron.database_name. Jobs that run now work without it.")));
	return name;
}

static void
require_cron_schema(const char *database)
{
	if (!OidIsValid(get_namespace_oid("cron", true)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("scheduled jobs need pg_cron, which is not installed in database \"%s\"",
						database),
				 errhint("Run CREATE EXTENSION pg_cron in database \"%s\" (cron.database_name). Jobs that run now work without it.",
						 database)));
}

/*
 * Runs sql in the pg_cron database through a background worker connected
 * there, and waits for it.
 */
static void
run_in_cron_database(const char *database, const char *sql, bool removing)
{
	Size		size = offsetof(CronBridgeRequest, sql) + strlen(sql) + 1;
	dsm_segment *segment = dsm_create(size, 0);
	CronBridgeRequest *request = dsm_segment_address(segment);
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	BgwHandleStatus status;

	memset(request, 0, size);
	strlcpy(request->database, database, NAMEDATALEN);
	strlcpy(request->role, GetUserNameFromId(GetUserId(), false), NAMEDATALEN);
	strcpy(request->sql, sql);
	request->removing = removing;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pg_fleet");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "pg_fleet_cron_bridge_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_fleet cron bridge");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_fleet cron bridge");
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(segment));
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a worker to update pg_cron in database \"%s\"", database),
				 errhint("Raise max_worker_processes.")));

	/*
	 * Wait, at most CRON_BRIDGE_TIMEOUT_MS: the caller holds the schedule's
	 * row lock (and may be the job engine).  On a timeout, a cancel or any
	 * error here, the worker is stopped too.
	 */
	PG_TRY();
	{
		TimestampTz started = GetCurrentTimestamp();

		for (;;)
		{
			pid_t		pid;

			status = GetBackgroundWorkerPid(handle, &pid);
			if (status == BGWH_STOPPED || status == BGWH_POSTMASTER_DIED)
				break;
			if (TimestampDifferenceExceeds(started, GetCurrentTimestamp(), CRON_BRIDGE_TIMEOUT_MS))
				ereport(ERROR,
						(errcode(ERRCODE_QUERY_CANCELED),
						 errmsg("gave up updating pg_cron in database \"%s\" after %d seconds",
								database, CRON_BRIDGE_TIMEOUT_MS / 1000),
						 errhint("Something in that database holds a lock on cron.job; the schedule's entry is put right at its next fire or update.")));
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100,
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		TerminateBackgroundWorker(handle);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (status == BGWH_POSTMASTER_DIED)
		ereport(FATAL,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("postmaster exited while pg_cron was being updated")));
	if (!request->done)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to database \"%s\" as role \"%s\" to update pg_cron",
						request->database, request->role),
				 errhint("The role must be able to log in to the database named by cron.database_name; the server log has the reason.")));
	if (request->failed)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not update pg_cron in database \"%s\": %s",
						request->database, request->message)));
	dsm_detach(segment);
}

/*
 * fleet.cron_apply(job_name, cron_schedule, command, run_as): makes the
 * pg_cron entry named job_name run command as run_as in this database on
 * cron_schedule (a GMT cron expression), or removes it when cron_schedule
 * is NULL.
 */
Datum
cron_apply(PG_FUNCTION_ARGS)
{
	const char *database = get_database_name(MyDatabaseId);
	bool		removing = PG_ARGISNULL(1);
	const char *cron_database = cron_database_name(removing);
	char	   *job_name;
	char	   *quoted_name;
	StringInfoData sql;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a pg_cron entry needs a name")));
	job_name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	quoted_name = quote_literal_cstr(job_name);

	/* without pg_cron there is no entry to remove */
	if (cron_database == NULL)
		PG_RETURN_VOID();

	initStringInfo(&sql);
	if (removing)
		appendStringInfo(&sql,
						 "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s",
						 quoted_name);
	else
	{
		char	   *run_as;

		if (PG_ARGISNULL(2) || PG_ARGISNULL(3))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("pg_cron entry \"%s\" needs a command and a role", job_name)));
		run_as = quote_literal_cstr(text_to_cstring(PG_GETARG_TEXT_PP(3)));
		/* one entry per name: an entry left under another role goes */
		appendStringInfo(&sql,
						 "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s AND username <> %s;"
						 "SELECT cron.schedule_in_database(%s, %s, %s, %s, %s)",
						 quoted_name, run_as,
						 quoted_name,
						 quote_literal_cstr(text_to_cstring(PG_GETARG_TEXT_PP(1))),
						 quote_literal_cstr(text_to_cstring(PG_GETARG_TEXT_PP(2))),
						 quote_literal_cstr(database),
						 run_as);
	}

	if (strcmp(cron_database, database) == 0)
	{
		if (removing && !OidIsValid(get_namespace_oid("cron", true)))
			PG_RETURN_VOID();
		require_cron_schema(database);
		SPI_connect();
		if (SPI_execute(sql.data, false, 0) < 0)
			elog(ERROR, "could not run the pg_cron statements");
		SPI_finish();
	}
	else
		run_in_cron_database(cron_database, sql.data, removing);

	PG_RETURN_VOID();
}

/* fleet.cron_database(): where pg_cron keeps its entries. */
Datum
cron_database(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(cron_database_name(false)));
}

/*
 * The worker: connect to the pg_cron database as the caller's role, run
 * the statements in one transaction, report how it went.
 */
void
pg_fleet_cron_bridge_main(Datum main_arg)
{
	dsm_segment *segment;
	CronBridgeRequest *request;
	MemoryContext context = CurrentMemoryContext;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	segment = dsm_attach(DatumGetUInt32(main_arg));
	if (segment == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_fleet cron bridge: the request is gone")));
	request = dsm_segment_address(segment);

	BackgroundWorkerInitializeConnection(request->database, request->role, 0);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/* names in the statements resolve in pg_catalog and cron only */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION);
	PG_TRY();
	{
		/* without pg_cron here, there is no entry to remove */
		if (!request->removing || OidIsValid(get_namespace_oid("cron", true)))
		{
			require_cron_schema(request->database);
			SPI_connect();
			PushActiveSnapshot(GetTransactionSnapshot());
			pgstat_report_activity(STATE_RUNNING, "pg_fleet: updating a pg_cron entry");
			if (SPI_execute(request->sql, false, 0) < 0)
				elog(ERROR, "could not run the pg_cron statements");
			SPI_finish();
			PopActiveSnapshot();
		}
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *error;
		int			len;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		EmitErrorReport();		/* the server log has it too */
		FlushErrorState();
		/* cut on a character boundary */
		len = pg_mbcliplen(error->message, strlen(error->message), sizeof(request->message) - 1);
		memcpy(request->message, error->message, len);
		request->message[len] = '\0';
		request->failed = true;
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);

	request->done = true;
	dsm_detach(segment);
	proc_exit(0);
}
