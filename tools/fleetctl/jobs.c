/*-------------------------------------------------------------------------
 *
 * jobs.c
 *	  fleetctl job ... and fleetctl jobs: IoT Central's Jobs page.
 *
 * "job watch" reads fleet.job_overview and fleet.job_batch_progress whenever
 * the job's events on fleet_jobs say it changed (and at least every
 * --interval, should an event be missed): on a terminal it redraws a bar
 * per batch and the job's totals; elsewhere it prints a line whenever the
 * figures change.  A job that waits or was paused shows why.  It exits 0
 * when the job completed, 1 when it failed or was cancelled.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "common/logging.h"
#include "fe_utils/cancel.h"

#include "fleetctl.h"

static const char *job_usage =
"Usage:\n"
"  fleetctl job create FILE.json        create a job (IoT Central's job JSON) and queue it\n"
"  fleetctl job watch ID [--interval S] batches and totals until the job ends, redrawn at\n"
"                                       each of its events (and at least every S seconds, 5)\n"
"  fleetctl job results ID [-o FILE] [--spreadsheet-safe]\n"
"                                       the results log as CSV\n"
"  fleetctl job run ID                  queue a saved job\n"
"  fleetctl job stop ID                 stop dispatching; resume later\n"
"  fleetctl job resume ID               continue a stopped job\n"
"  fleetctl job advance ID              start the next batch of a job waiting for its promotion\n"
"  fleetctl job copy ID                 a saved copy named \"<name> Copy\"\n"
"  fleetctl job rerun ID [--id NEW]     a new job over the failed devices\n"
"  fleetctl jobs                        the jobs of the last 30 days\n"
"\n"
"Options: -d CONNINFO, -q, --json as for fleetctl.  job watch exits 0 when the job\n"
"completed and 1 when it failed or was cancelled.\n";

/* Prints a job as JSON (--json) or as one line. */
static void
print_job(PGresult *result)
{
	/* columns: id, status, the job JSON */
	if (options.json)
		printf("%s\n", PQgetvalue(result, 0, 2));
	else
		printf("job %s: %s\n", PQgetvalue(result, 0, 0), PQgetvalue(result, 0, 1));
}

static int
job_call(PGconn *conn, const char *function, const char *id, const char *extra)
{
	char		sql[256];
	const char *params[2] = {id, extra};
	PGresult   *result;

	snprintf(sql, sizeof(sql),
			 "SELECT j ->> 'id', j ->> 'status', j::text FROM fleet.%s($1%s) j",
			 function, extra ? ", $2" : "");
	result = query(conn, "the server refused", sql, extra ? 2 : 1, params);
	print_job(result);
	PQclear(result);
	return EXIT_DONE;
}

static int
job_create(PGconn *conn, const char *path)
{
	char	   *body = read_whole_file(path, 16 * 1024 * 1024);
	const char *params[1] = {body};
	PGresult   *result;
	char		what[512];

	snprintf(what, sizeof(what), "cannot create the job of \"%s\"", path);
	result = query(conn, what,
				   "SELECT j ->> 'id', j ->> 'status', j::text FROM fleet.create_job($1::jsonb) j", 1, params);
	print_job(result);
	PQclear(result);
	return EXIT_DONE;
}

static int
job_results(PGconn *conn, const char *id, const char *output)
{
	char	   *literal = sql_literal(conn, id);
	size_t		len = strlen(literal) + 128;
	char	   *sql = malloc(len);
	FILE	   *out = open_output(output);

	snprintf(sql, len, "COPY (SELECT * FROM fleet.job_results(%s, %s)) TO STDOUT WITH (FORMAT csv, HEADER)",
			 literal, options.spreadsheet_safe ? "true" : "false");
	copy_out_to(conn, "cannot read the results log", sql, out, output ? output : "standard output");
	return EXIT_DONE;
}

/* One look at a job: its totals, and its batches. */
typedef struct JobView
{
	char		status[32];
	char		detail[256];	/* why it waits or was paused, if it does */
	long long	total, pending, completed, failed;
	PGresult   *batches;		/* batch, status, devices, pending, completed, failed */
} JobView;

static void
look(PGconn *conn, const char *id, JobView *view)
{
	const char *params[1] = {id};
	PGresult   *result = query(conn, "cannot read the job",
								 "SELECT status, total_devices, pending_devices, completed_devices, failed_devices"
								 " FROM fleet.job_overview WHERE job_id = $1", 1, params);

	if (PQntuples(result) == 0)
		fail(EXIT_REFUSED, "\"fleetctl jobs\" lists the jobs of the last 30 days.", "job \"%s\" does not exist", id);
	snprintf(view->status, sizeof(view->status), "%s", PQgetvalue(result, 0, 0));
	view->total = atoll(PQgetvalue(result, 0, 1));
	view->pending = atoll(PQgetvalue(result, 0, 2));
	view->completed = atoll(PQgetvalue(result, 0, 3));
	view->failed = atoll(PQgetvalue(result, 0, 4));
	PQclear(result);
	result = query(conn, "cannot read the job", "SELECT coalesce(status_detail, '') FROM fleet.jobs WHERE id = $1", 1, params);
	snprintf(view->detail, sizeof(view->detail), "%s", PQntuples(result) > 0 ? PQgetvalue(result, 0, 0) : "");
	PQclear(result);
	view->batches = query(conn, "cannot read the job's batches",
						  "SELECT batch, status, devices, pending_devices, completed_devices, failed_devices"
						  " FROM fleet.job_batch_progress WHERE job_id = $1 ORDER BY batch", 1, params);
}

/*
 * Waits until an event on fleet_jobs names the job, or at most max_seconds
 * (events are sent at commit; the bound keeps a missed one from stalling
 * the watch).  A burst of events (one per engine step) is taken as one.
 */
static void
wait_for_job_event(PGconn *conn, const char *id, double max_seconds)
{
	char		needle[320];
	struct timespec start, now;

	snprintf(needle, sizeof(needle), "\"job\" : \"%s\"", id);
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;)
	{
		double		left;
		bool		ours = false;
		PGnotify   *notify;
		fd_set		readable;
		struct timeval timeout;

		/*
		 * What libpq has already read (during the last queries) first: it
		 * is off the socket, and select() would not see it.
		 */
		if (!PQconsumeInput(conn))
			fail(EXIT_CONNECT, NULL, "lost the connection while watching: %s", PQerrorMessage(conn));
		while ((notify = PQnotifies(conn)) != NULL)
		{
			if (strstr(notify->extra, needle) != NULL)
				ours = true;
			PQfreemem(notify);
		}
		if (ours)
			return;
		clock_gettime(CLOCK_MONOTONIC, &now);
		left = max_seconds - ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9);
		if (left <= 0)
			return;
		FD_ZERO(&readable);
		FD_SET(PQsocket(conn), &readable);
		timeout.tv_sec = (long) left;
		timeout.tv_usec = (long) ((left - (long) left) * 1e6);
		(void) select(PQsocket(conn) + 1, &readable, NULL, NULL, &timeout);
		exit_if_interrupted();
		if (!PQconsumeInput(conn))
			fail(EXIT_CONNECT, NULL, "lost the connection while watching: %s", PQerrorMessage(conn));
		while ((notify = PQnotifies(conn)) != NULL)
		{
			if (strstr(notify->extra, needle) != NULL)
				ours = true;
			PQfreemem(notify);
		}
		if (ours)
		{
			pg_usleep(100000L);
			PQconsumeInput(conn);
			while ((notify = PQnotifies(conn)) != NULL)
				PQfreemem(notify);
			return;
		}
	}
}

static bool
is_final(const char *status)
{
	return strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 ||
		strcmp(status, "cancelled") == 0;
}

static void
draw_terminal(const char *id, const JobView *v, int *lines_drawn)
{
	char		bar[64], a[32], b[32], c[32];
	int			n = PQntuples(v->batches);

	if (*lines_drawn > 0)
		fprintf(stderr, "\033[%dA", *lines_drawn);	/* back to the top of the last drawing */
	for (int i = 0; i < n; i++)
	{
		long long	size = atoll(PQgetvalue(v->batches, i, 2));
		long long	pending = atoll(PQgetvalue(v->batches, i, 3));
		long long	failed = atoll(PQgetvalue(v->batches, i, 5));

		draw_bar(bar, sizeof(bar), size ? (double) (size - pending) / size : 1, 30);
		fprintf(stderr, "\033[2Kbatch %-3s %s %s of %s done, %s failed  %s\n", PQgetvalue(v->batches, i, 0), bar,
				human_count(size - pending, a, sizeof(a)), human_count(size, b, sizeof(b)),
				human_count(failed, c, sizeof(c)), PQgetvalue(v->batches, i, 1));
	}
	fprintf(stderr, "\033[2Kjob %s: %s, %s of %s done, %s failed\n", id, v->status,
			human_count(v->total - v->pending, a, sizeof(a)), human_count(v->total, b, sizeof(b)),
			human_count(v->failed, c, sizeof(c)));
	fprintf(stderr, "\033[2K%s\n", v->detail);
	*lines_drawn = n + 2;
}

static int
job_watch(PGconn *conn, const char *id, double interval)
{
	bool		terminal = stderr_is_terminal();
	int			lines_drawn = 0;
	char		last_line[512] = "";
	char		a[32], b[32], c[32];
	JobView		v;

	PQclear(query(conn, "cannot listen for the job's events", "LISTEN fleet_jobs", 0, NULL));
	for (;;)
	{
		look(conn, id, &v);
		if (strcmp(v.status, "saved") == 0)
			fail(EXIT_USAGE, "Queue it with \"fleetctl job run ID\".", "job \"%s\" is saved, not queued", id);
		if (!options.quiet && terminal)
			draw_terminal(id, &v, &lines_drawn);
		else if (!options.quiet)
		{
			char		line[512];
			char		batch_part[64] = "";
			int			n = PQntuples(v.batches);

			for (int i = 0; i < n; i++)
				if (strcmp(PQgetvalue(v.batches, i, 1), "running") == 0)
					snprintf(batch_part, sizeof(batch_part), ", batch %s of %d", PQgetvalue(v.batches, i, 0), n);
			snprintf(line, sizeof(line), "job %s: %s, %s of %s done, %s failed%s%s%s", id, v.status,
					 human_count(v.total - v.pending, a, sizeof(a)), human_count(v.total, b, sizeof(b)),
					 human_count(v.failed, c, sizeof(c)), batch_part, v.detail[0] ? "; " : "", v.detail);
			if (strcmp(line, last_line) != 0)
			{
				fprintf(stderr, "%s\n", line);
				snprintf(last_line, sizeof(last_line), "%s", line);
			}
		}
		PQclear(v.batches);
		if (is_final(v.status))
			break;
		/* Ctrl-C stops watching; the job goes on */
		exit_if_interrupted();
		wait_for_job_event(conn, id, interval);
	}
	if (options.json)
	{
		const char *params[1] = {id};

		print_query_json(conn, "cannot read the job",
						 "SELECT * FROM fleet.job_overview WHERE job_id = $1", 1, params);
	}
	else
		printf("job %s: %s, %s completed, %s failed\n", id, v.status,
			   human_count(v.completed, a, sizeof(a)), human_count(v.failed, b, sizeof(b)));
	return strcmp(v.status, "completed") == 0 ? EXIT_DONE : EXIT_INCOMPLETE;
}

int
cmd_job(int argc, char **argv)
{
	const char *output = NULL;
	const char *new_id = NULL;
	const char *interval = NULL;
	const SubOption known[] = {
		{"--output", 'o', &output},
		{"--id", 0, &new_id},
		{"--interval", 0, &interval},
		{NULL, 0, NULL}
	};
	int			n;
	char	  **args = parse_sub_options(argc, argv, known, job_usage, &n);
	const char *action;
	PGconn	   *conn;
	int			status;

	if (n == 0)
		usage_error("job", "which job command?");
	action = args[0];
	if (n != 2)
		usage_error("job", "job %s takes one %s", action, strcmp(action, "create") == 0 ? "file" : "job id");
	if (strcmp(action, "create") != 0 && strcmp(action, "watch") != 0 && strcmp(action, "results") != 0 &&
		strcmp(action, "run") != 0 && strcmp(action, "stop") != 0 && strcmp(action, "resume") != 0 &&
		strcmp(action, "advance") != 0 && strcmp(action, "copy") != 0 && strcmp(action, "rerun") != 0)
		usage_error("job", "unknown job command \"%s\"", action);
	if (strcmp(action, "create") == 0)
		free(read_whole_file(args[1], 16 * 1024 * 1024));	/* a bad file is told before connecting */

	conn = fleet_connect();
	if (strcmp(action, "create") == 0)
		status = job_create(conn, args[1]);
	else if (strcmp(action, "watch") == 0)
	{
		double		seconds = interval ? atof(interval) : 5;

		if (seconds <= 0)
			usage_error("job", "--interval takes a number of seconds above 0");
		status = job_watch(conn, args[1], seconds);
	}
	else if (strcmp(action, "results") == 0)
		status = job_results(conn, args[1], output);
	else if (strcmp(action, "run") == 0)
		status = job_call(conn, "run_job", args[1], NULL);
	else if (strcmp(action, "stop") == 0)
		status = job_call(conn, "stop_job", args[1], NULL);
	else if (strcmp(action, "resume") == 0)
		status = job_call(conn, "resume_job", args[1], NULL);
	else if (strcmp(action, "advance") == 0)
		status = job_call(conn, "advance_job", args[1], NULL);
	else if (strcmp(action, "copy") == 0)
		status = job_call(conn, "copy_job", args[1], NULL);
	else
		status = job_call(conn, "rerun_job", args[1], new_id);
	PQfinish(conn);
	return status;
}

int
cmd_jobs(int argc, char **argv)
{
	const SubOption known[] = {{NULL, 0, NULL}};
	int			n;
	PGconn	   *conn;
	const char *sql =
		"SELECT id, display_name AS name, job_type AS type, status, total, completed, failed,"
		" to_char(created_at, 'YYYY-MM-DD HH24:MI') AS created"
		" FROM fleet.recent_jobs ORDER BY created_at DESC, id";

	parse_sub_options(argc, argv, known, "Usage: fleetctl jobs [--json]\n\nThe jobs of the last 30 days, newest first.\n", &n);
	if (n > 0)
		usage_error("jobs", "jobs takes no arguments");
	conn = fleet_connect();
	if (options.json)
		print_query_json(conn, "cannot list the jobs",
						 "SELECT * FROM fleet.recent_jobs ORDER BY created_at DESC, id", 0, NULL);
	else
	{
		PGresult   *result = query(conn, "cannot list the jobs", sql, 0, NULL);

		print_table(result);
		PQclear(result);
	}
	PQfinish(conn);
	return EXIT_DONE;
}
