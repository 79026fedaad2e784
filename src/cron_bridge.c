/*-------------------------------------------------------------------------
 *
 * cron_bridge.c
 *	  Runs statements wherever pg_cron keeps its entries.
 *
 * pg_cron keeps its table in the one database named by cron.database_name.
 * When that is this database, statements run with SPI inside the caller's
 * transaction.  When it is another one, a short-lived background worker
 * connects there as the calling role and runs them in a transaction of its
 * own, which commits whatever the caller's transaction does: so only the
 * engine writes entries, after the schedules' changes committed, and it
 * converges pg_cron to the schedule table (src/sql/schedule_cron.sql).
 *
 * Statements take text parameters ($1, $2, ...), never values spliced into
 * SQL text; the SQL-callable functions here are not executable by PUBLIC.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
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
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pg_fleet.h"

/* How long a caller waits for the worker that writes in the cron database. */
#define CRON_BRIDGE_TIMEOUT_MS 30000
/* How long that worker waits for a lock on pg_cron's tables. */
#define CRON_BRIDGE_LOCK_TIMEOUT "5s"
#define CRON_BRIDGE_MAX_ARGS 5
#define CRON_BRIDGE_RESULT_SIZE 8192

/* What the caller hands the worker, and what the worker hands back. */
typedef struct CronBridgeRequest
{
	char		database[NAMEDATALEN];	/* where pg_cron lives */
	char		role[NAMEDATALEN];	/* who runs the statements */
	bool		missing_ok;		/* no pg_cron there: nothing to do */
	bool		done;			/* the worker got to the end */
	bool		failed;			/* ... with an error, in message */
	bool		result_null;
	char		message[1024];
	char		result[CRON_BRIDGE_RESULT_SIZE];
	int			nargs;
	Size		arg_offsets[CRON_BRIDGE_MAX_ARGS];
	char		data[FLEXIBLE_ARRAY_MEMBER];	/* the statements, then the arguments */
} CronBridgeRequest;

PGDLLEXPORT void pg_fleet_cron_bridge_main(Datum main_arg);

PG_FUNCTION_INFO_V1(cron_apply);
PG_FUNCTION_INFO_V1(cron_database);
PG_FUNCTION_INFO_V1(cron_reconcile);
PG_FUNCTION_INFO_V1(cron_runs);

/* The database pg_cron keeps its entries in; NULL (or an error) without pg_cron. */
const char *
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

/* Refuses (or tells, with missing_ok) when this database has no pg_cron. */
static bool
cron_schema_present(const char *database, bool missing_ok)
{
	if (OidIsValid(get_namespace_oid("cron", true)))
		return true;
	if (missing_ok)
		return false;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("scheduled jobs need pg_cron, which is not installed in database \"%s\"",
					database),
			 errhint("Run CREATE EXTENSION pg_cron in database \"%s\" (cron.database_name). Jobs that run now work without it.",
					 database)));
	return false;
}

/* Runs the statements here; the first column of the last row set, as text. */
static char *
cron_run_here(const char *sql, int nargs, const char **args, bool *isnull)
{
	Oid			types[CRON_BRIDGE_MAX_ARGS];
	Datum		values[CRON_BRIDGE_MAX_ARGS];
	char	   *result = NULL;
	int			i;

	for (i = 0; i < nargs; i++)
	{
		types[i] = TEXTOID;
		values[i] = CStringGetTextDatum(args[i]);
	}
	*isnull = true;
	SPI_connect();
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) < 0)
		elog(ERROR, "could not run the pg_cron statements");
	if (SPI_tuptable != NULL && SPI_processed > 0)
	{
		char	   *value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (value != NULL)
		{
			result = MemoryContextStrdup(TopTransactionContext, value);
			*isnull = false;
		}
	}
	SPI_finish();
	return result;
}

/*
 * Runs the statements in the pg_cron database through a background worker
 * connected there, and waits for it.
 */
static char *
cron_run_elsewhere(const char *database, const char *sql, int nargs, const char **args,
				   bool missing_ok, bool *isnull)
{
	Size		size = offsetof(CronBridgeRequest, data) + strlen(sql) + 1;
	dsm_segment *segment;
	CronBridgeRequest *request;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	BgwHandleStatus status;
	char	   *result = NULL;
	Size		offset;
	int			i;

	for (i = 0; i < nargs; i++)
		size += strlen(args[i]) + 1;
	segment = dsm_create(size, 0);
	request = dsm_segment_address(segment);
	memset(request, 0, size);
	strlcpy(request->database, database, NAMEDATALEN);
	strlcpy(request->role, GetUserNameFromId(GetUserId(), false), NAMEDATALEN);
	request->missing_ok = missing_ok;
	request->nargs = nargs;
	strcpy(request->data, sql);
	offset = strlen(sql) + 1;
	for (i = 0; i < nargs; i++)
	{
		request->arg_offsets[i] = offset;
		strcpy(request->data + offset, args[i]);
		offset += strlen(args[i]) + 1;
	}

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
	 * Wait, at most CRON_BRIDGE_TIMEOUT_MS.  On a timeout, a cancel or any
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
						 errhint("Something in that database holds a lock on pg_cron's tables; the engine tries again.")));
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
	*isnull = request->result_null;
	if (!request->result_null)
		result = pstrdup(request->result);
	dsm_detach(segment);
	return result;
}

/*
 * Runs sql (one or more statements taking text parameters $1..$nargs) in
 * the database pg_cron keeps its entries in.  Returns the first column of
 * the first row the last statement returned, as text (NULL: none).  With
 * missing_ok, a server or database without pg_cron is not an error: there
 * is nothing to do, and *ran says so.
 */
static char *
cron_run(const char *sql, int nargs, const char **args, bool missing_ok, bool *ran)
{
	const char *cron_database = cron_database_name(missing_ok);
	const char *database = get_database_name(MyDatabaseId);
	bool		isnull = true;
	char	   *result = NULL;

	*ran = false;
	if (cron_database == NULL)
		return NULL;
	if (strcmp(cron_database, database) == 0)
	{
		if (!cron_schema_present(database, missing_ok))
			return NULL;
		result = cron_run_here(sql, nargs, args, &isnull);
		*ran = true;
	}
	else
	{
		result = cron_run_elsewhere(cron_database, sql, nargs, args, missing_ok, &isnull);
		*ran = true;
	}
	return isnull ? NULL : result;
}

/* Statements that make pg_cron's entries of database $2 the set $1 describes. */
static const char *const reconcile_sql =
"SELECT count(cron.unschedule(j.jobid))"
"  FROM cron.job j"
" WHERE j.database = $2 AND j.jobname LIKE 'pg_fleet %'"
"   AND NOT EXISTS (SELECT 1 FROM jsonb_to_recordset($1::jsonb)"
"                                 AS d(jobname text, schedule text, command text, username text)"
"                    WHERE d.jobname = j.jobname AND d.schedule = j.schedule"
"                      AND d.command = j.command AND d.username = j.username AND j.active);"
"SELECT count(cron.schedule_in_database(d.jobname, d.schedule, d.command, $2, d.username, true))"
"  FROM jsonb_to_recordset($1::jsonb) AS d(jobname text, schedule text, command text, username text)"
" WHERE NOT EXISTS (SELECT 1 FROM cron.job j"
"                    WHERE j.database = $2 AND j.jobname = d.jobname AND j.schedule = d.schedule"
"                      AND j.command = d.command AND j.username = d.username AND j.active)";

/*
 * Makes pg_cron's entries for the named database (those whose name starts
 * with "pg_fleet ") exactly the desired ones; other databases' entries,
 * restored copies' among them, are never touched.  Without pg_cron (and
 * missing_ok) it does nothing.
 */
void
cron_set_entries(const char *database, const char *desired_json, bool missing_ok)
{
	const char *args[2];
	bool		ran;

	args[0] = desired_json;
	args[1] = database;
	(void) cron_run(reconcile_sql, 2, args, missing_ok, &ran);
}

/*
 * fleet_internal.cron_reconcile(desired jsonb): makes this database's
 * pg_cron entries the desired ones, an array of {jobname, schedule,
 * command, username}.  Returns whether pg_cron was there to update.
 */
Datum
cron_reconcile(PG_FUNCTION_ARGS)
{
	const char *args[2];
	bool		ran;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the desired pg_cron entries must not be NULL")));
	args[0] = JsonbToCString(NULL, &PG_GETARG_JSONB_P(0)->root, VARSIZE(PG_GETARG_JSONB_P(0)));
	args[1] = get_database_name(MyDatabaseId);
	(void) cron_run(reconcile_sql, 2, args, true, &ran);
	PG_RETURN_BOOL(ran);
}

/*
 * fleet_internal.cron_runs(command text, since timestamptz): what pg_cron's
 * run log (cron.job_run_details) says of its latest runs of the command in
 * this database since then, newest first, as a JSON array of {runid, start,
 * status, message} (start is null for a run pg_cron could not connect
 * for); NULL without pg_cron.  An empty array: it did not try, or keeps no
 * log.
 */
Datum
cron_runs(PG_FUNCTION_ARGS)
{
	const char *args[3];
	bool		ran;
	char	   *result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	args[0] = text_to_cstring(PG_GETARG_TEXT_PP(0));
	args[1] = get_database_name(MyDatabaseId);
	args[2] = DatumGetCString(DirectFunctionCall1(timestamptz_out, PG_GETARG_DATUM(1)));
	/*
	 * The latest few, newest first: they fit the bridge's result.  A run
	 * pg_cron could not connect for has no start time; it is kept.
	 */
	result = cron_run("SELECT coalesce(jsonb_agg(jsonb_build_object('runid', d.runid, 'start', d.start_time,"
					  "                                          'status', d.status,"
					  "                                          'message', left(d.return_message, 200))"
					  "                       ORDER BY d.runid DESC), '[]')"
					  "  FROM (SELECT * FROM cron.job_run_details r"
					  "         WHERE r.command = $1 AND r.database = $2"
					  "           AND (r.start_time >= $3::timestamptz OR r.start_time IS NULL)"
					  "         ORDER BY r.runid DESC LIMIT 20) d",
					  3, args, true, &ran);
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(result)));
}

/*
 * fleet.cron_apply(job_name, cron_schedule, command, run_as): pg_fleet
 * 0.1's way of writing one entry, kept so that a database not yet updated
 * works with this library.  Makes the entry named job_name run command as
 * run_as in this database on cron_schedule, or removes it when
 * cron_schedule is NULL.
 */
Datum
cron_apply(PG_FUNCTION_ARGS)
{
	bool		removing = PG_ARGISNULL(1);
	const char *args[5];
	bool		ran;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a pg_cron entry needs a name")));
	args[0] = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (removing)
	{
		(void) cron_run("SELECT count(cron.unschedule(jobid)) FROM cron.job WHERE jobname = $1",
						1, args, true, &ran);
		PG_RETURN_VOID();
	}
	if (PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pg_cron entry \"%s\" needs a command and a role", args[0])));
	args[1] = text_to_cstring(PG_GETARG_TEXT_PP(1));
	args[2] = text_to_cstring(PG_GETARG_TEXT_PP(2));
	args[3] = get_database_name(MyDatabaseId);
	args[4] = text_to_cstring(PG_GETARG_TEXT_PP(3));
	/* one entry per name: an entry left under another role goes */
	(void) cron_run("SELECT count(cron.unschedule(jobid)) FROM cron.job WHERE jobname = $1 AND username <> $5;"
					"SELECT cron.schedule_in_database($1, $2, $3, $4, $5)",
					5, args, false, &ran);
	PG_RETURN_VOID();
}

/*
 * fleet_internal.cron_database(): where pg_cron keeps its entries; refuses
 * when pg_cron is not loaded, or not installed when that is this database
 * (elsewhere it is not looked for: the engine reports it, in
 * fleet.engine_status, when it brings pg_cron in line).
 */
Datum
cron_database(PG_FUNCTION_ARGS)
{
	const char *cron_database = cron_database_name(false);
	const char *database = get_database_name(MyDatabaseId);

	if (strcmp(cron_database, database) == 0)
		(void) cron_schema_present(database, false);
	PG_RETURN_TEXT_P(cstring_to_text(cron_database));
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
	SetConfigOption("lock_timeout", CRON_BRIDGE_LOCK_TIMEOUT, PGC_USERSET, PGC_S_SESSION);
	request->result_null = true;
	PG_TRY();
	{
		if (cron_schema_present(request->database, request->missing_ok))
		{
			const char *args[CRON_BRIDGE_MAX_ARGS];
			char	   *result;
			bool		isnull;
			int			i;

			for (i = 0; i < request->nargs; i++)
				args[i] = request->data + request->arg_offsets[i];
			PushActiveSnapshot(GetTransactionSnapshot());
			pgstat_report_activity(STATE_RUNNING, "pg_fleet: updating pg_cron's entries");
			result = cron_run_here(request->data, request->nargs, args, &isnull);
			if (!isnull)
			{
				strlcpy(request->result, result, sizeof(request->result));
				request->result_null = false;
			}
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
