/*-------------------------------------------------------------------------
 *
 * schedules.c
 *	  fleetctl schedule ...: scheduled jobs, fired by pg_cron.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdlib.h>
#include <string.h>

#include "common/logging.h"

#include "fleetctl.h"

static const char *schedule_usage =
"Usage:\n"
"  fleetctl schedule list                  scheduled jobs and their next run\n"
"  fleetctl schedule show ID               a scheduled job and the runs it made\n"
"  fleetctl schedule create FILE.json      a job definition with a \"schedule\"\n"
"  fleetctl schedule enable|disable ID\n"
"  fleetctl schedule delete ID             unschedule (the jobs it ran stay)\n"
"\n"
"Options: -d CONNINFO, -q, --json as for fleetctl.\n";

static void
print_rows(PGconn *conn, const char *what, const char *sql, int nparams, const char *const *params)
{
	if (options.json)
		print_query_json(conn, what, sql, nparams, params);
	else
	{
		PGresult   *result = query(conn, what, sql, nparams, params);

		print_table(result);
		PQclear(result);
	}
}

int
cmd_schedule(int argc, char **argv)
{
	const SubOption known[] = {{NULL, 0, NULL}};
	int			n;
	char	  **args = parse_sub_options(argc, argv, known, schedule_usage, &n);
	const char *action;
	const char *params[1];
	PGconn	   *conn;
	PGresult   *result;

	if (n == 0)
		usage_error("schedule", "which schedule command?");
	action = args[0];
	if (strcmp(action, "list") == 0)
	{
		if (n != 1)
			usage_error("schedule", "schedule list takes no arguments");
		conn = fleet_connect();
		print_rows(conn, "cannot list the scheduled jobs",
				   "SELECT s.id, s.display_name AS name, s.group_id AS \"group\", s.enabled,"
				   " coalesce(s.schedule ->> 'recurrence', 'once') AS recurrence, s.schedule ->> 'timeZone' AS time_zone,"
				   " s.next_run_at AS next_run,"
				   " (SELECT count(*) FROM fleet.scheduled_job_runs r WHERE r.scheduled_job_id = s.id"
				   "   AND r.outcome = 'started') AS runs"
				   " FROM fleet.scheduled_jobs s ORDER BY s.id", 0, NULL);
		PQfinish(conn);
		return EXIT_DONE;
	}
	if (n != 2)
		usage_error("schedule", "schedule %s takes one %s", action,
					strcmp(action, "create") == 0 ? "file" : "scheduled job id");
	params[0] = args[1];
	if (strcmp(action, "create") == 0)
	{
		char	   *body = read_whole_file(args[1], 16 * 1024 * 1024);

		params[0] = body;
		conn = fleet_connect();
		result = query(conn, "cannot create the scheduled job",
					   "SELECT s ->> 'id', s ->> 'nextRun', s::text FROM fleet.create_scheduled_job($1::jsonb) s",
					   1, params);
		if (options.json)
			printf("%s\n", PQgetvalue(result, 0, 2));
		else
			printf("scheduled job %s: next run %s\n", PQgetvalue(result, 0, 0), PQgetvalue(result, 0, 1));
	}
	else if (strcmp(action, "show") == 0)
	{
		conn = fleet_connect();
		result = query(conn, "cannot read the scheduled job",
					   "SELECT jsonb_pretty(fleet.get_scheduled_job($1)), fleet.get_scheduled_job($1)::text", 1, params);
		if (options.json)
		{
			printf("%s\n", PQgetvalue(result, 0, 1));
			PQclear(result);
			PQfinish(conn);
			return EXIT_DONE;
		}
		printf("%s\n\nruns:\n", PQgetvalue(result, 0, 0));
		print_rows(conn, "cannot read the scheduled job's runs",
				   "SELECT occurrence, outcome, job_id, status, error FROM fleet.list_scheduled_job_runs($1)",
				   1, params);
	}
	else if (strcmp(action, "delete") == 0)
	{
		conn = fleet_connect();
		result = query(conn, "cannot delete the scheduled job", "SELECT fleet.delete_scheduled_job($1)", 1, params);
		if (!options.quiet)
			printf("scheduled job %s: deleted\n", args[1]);
	}
	else if (strcmp(action, "enable") == 0 || strcmp(action, "disable") == 0)
	{
		conn = fleet_connect();
		result = query(conn, "cannot change the scheduled job",
					   strcmp(action, "enable") == 0
					   ? "SELECT coalesce(s ->> 'nextRun', 'none') FROM fleet.enable_scheduled_job($1) s"
					   : "SELECT 'none' FROM fleet.disable_scheduled_job($1) s", 1, params);
		printf("scheduled job %s: %sd, next run %s\n", args[1], action, PQgetvalue(result, 0, 0));
	}
	else
		usage_error("schedule", "unknown schedule command \"%s\"", action);
	PQclear(result);
	PQfinish(conn);
	return EXIT_DONE;
}
