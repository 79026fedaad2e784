/*-------------------------------------------------------------------------
 *
 * fleet-sim.c
 *	  A device simulator that answers pg_fleet's commands: the reference
 *	  gateway.
 *
 * A gateway is any program that does three things, and this one does only
 * those, so it can be read as the recipe for a real one:
 *
 *	 1. LISTEN fleet_commands, to hear at once when work is queued (it also
 *		looks every second, so a missed notification costs at most that);
 *	 2. claim deliveries in batches: SELECT ... FROM fleet.claim_commands(
 *		gateway, max_count) -- rows locked with SKIP LOCKED, so any number of
 *		gateways can claim side by side without ever getting the same one;
 *	 3. pass each command to its device and report the answers with
 *		fleet.complete_commands(delivery_ids[], statuses[], responses[]): 2xx
 *		completes the device, anything else fails it.  A batch of answers is
 *		one statement, one round trip (fleet.complete_command() takes one).
 *
 * Here the "devices" answer after --latency milliseconds, failing at
 * --failure-rate percent or when listed in --fail-devices.  With
 * --connections N, N threads each run that loop on their own connection.
 *
 * Connection options are libpq's: -d takes a conninfo string or URI, and
 * PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, .pgpass and sslmode all
 * apply as for psql.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define FLEET_SIM_VERSION "0.1"

typedef struct Options
{
	const char *conninfo;
	const char *gateway;
	int			batch;			/* deliveries claimed at once */
	int			latency_ms;		/* how long a device takes to answer */
	double		failure_rate;	/* percent of answers that fail */
	char	  **fail_devices;	/* devices that always fail */
	int			n_fail_devices;
	int			connections;
	double		idle_exit_s;	/* stop after this long without work; 0: never */
	long		max_answers;	/* stop after this many answers; 0: no limit */
	unsigned int seed;
	bool		quiet;
} Options;

/* One connection's loop and its tally. */
typedef struct Worker
{
	int			number;
	const Options *options;
	char		gateway[128];
	long		answered;
	long		failed;
	double		busy_s;			/* from its first claim to its last answer */
	bool		ok;
} Worker;

static volatile sig_atomic_t stop_requested = 0;
static pthread_mutex_t answer_lock = PTHREAD_MUTEX_INITIALIZER;
static long answers_total = 0;

static void
handle_stop(int signo)
{
	stop_requested = 1;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
usage(void)
{
	printf("fleet-sim answers pg_fleet commands as simulated devices: a reference gateway.\n\n"
		   "Usage:\n  fleet-sim [OPTION]...\n\n"
		   "Options:\n"
		   "  -d, --dbname=CONNINFO       database to connect to (conninfo string or URI;\n"
		   "                              PGHOST, PGPORT, PGUSER, PGDATABASE ... apply)\n"
		   "  -g, --gateway=NAME          name this gateway claims under (default fleet-sim-PID)\n"
		   "  -b, --batch=N               deliveries claimed at once (default 100)\n"
		   "  -l, --latency=MS            time a device takes to answer (default 0)\n"
		   "  -f, --failure-rate=PERCENT  answers that fail with status 500 (default 0)\n"
		   "      --fail-devices=ID,...   devices whose answers always fail\n"
		   "  -c, --connections=N         connections answering side by side (default 1)\n"
		   "  -i, --idle-exit=SECONDS     stop after this long without work (default: never)\n"
		   "  -n, --max=N                 stop after N answers\n"
		   "      --seed=N                seed for the failure draw (default 1)\n"
		   "  -q, --quiet                 print only the final report\n"
		   "  -V, --version               print the version and exit\n"
		   "  -?, --help                  show this help and exit\n\n"
		   "Exit status: 0 when every connection ran to its end, 1 on a usage error,\n"
		   "2 when the database could not be reached or refused a statement.\n");
}

/* Splits "a,b,c" into a list. */
static void
parse_fail_devices(Options *options, const char *list)
{
	char	   *copy = strdup(list);
	char	   *save = NULL;

	for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save))
	{
		options->fail_devices = realloc(options->fail_devices,
										sizeof(char *) * (options->n_fail_devices + 1));
		options->fail_devices[options->n_fail_devices++] = strdup(item);
	}
	free(copy);
}

static bool
always_fails(const Options *options, const char *device_id)
{
	for (int i = 0; i < options->n_fail_devices; i++)
		if (strcmp(options->fail_devices[i], device_id) == 0)
			return true;
	return false;
}

/* Waits until a notification arrives or timeout_ms pass. */
static void
wait_for_work(PGconn *conn, int timeout_ms)
{
	int			sock = PQsocket(conn);
	fd_set		readable;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	PGnotify   *notify;

	FD_ZERO(&readable);
	FD_SET(sock, &readable);
	if (select(sock + 1, &readable, NULL, NULL, &tv) > 0)
		PQconsumeInput(conn);
	while ((notify = PQnotifies(conn)) != NULL)
		PQfreemem(notify);
}

static void
append(char **buf, size_t *len, size_t *cap, const char *text)
{
	size_t		n = strlen(text);

	if (*len + n + 1 > *cap)
	{
		*cap = (*len + n + 1) * 2;
		*buf = realloc(*buf, *cap);
	}
	memcpy(*buf + *len, text, n + 1);
	*len += n;
}

/*
 * Answers one claimed batch: every delivery gets a status and a response,
 * sent back in one statement as three arrays.
 */
static bool
answer_batch(Worker *worker, PGconn *conn, PGresult *claimed, unsigned int *seed)
{
	const Options *options = worker->options;
	int			rows = PQntuples(claimed);
	size_t		cap = 256,
				len_ids = 0,
				len_status = 0,
				len_resp = 0;
	size_t		cap_ids = cap,
				cap_status = cap,
				cap_resp = cap;
	char	   *ids = malloc(cap_ids);
	char	   *statuses = malloc(cap_status);
	char	   *responses = malloc(cap_resp);
	const char *params[3];
	PGresult   *res;
	bool		ok;
	long		failures = 0;

	append(&ids, &len_ids, &cap_ids, "{");
	append(&statuses, &len_status, &cap_status, "{");
	append(&responses, &len_resp, &cap_resp, "{");
	for (int i = 0; i < rows; i++)
	{
		const char *delivery = PQgetvalue(claimed, i, 0);
		const char *device = PQgetvalue(claimed, i, 1);
		bool		fail = always_fails(options, device) ||
			(options->failure_rate > 0 &&
			 rand_r(seed) / (RAND_MAX + 1.0) * 100.0 < options->failure_rate);

		if (i > 0)
		{
			append(&ids, &len_ids, &cap_ids, ",");
			append(&statuses, &len_status, &cap_status, ",");
			append(&responses, &len_resp, &cap_resp, ",");
		}
		append(&ids, &len_ids, &cap_ids, delivery);
		append(&statuses, &len_status, &cap_status, fail ? "500" : "200");
		/* device ids are letters, digits and "-": safe inside the literal */
		append(&responses, &len_resp, &cap_resp,
			   fail ? "\"{\\\"error\\\": \\\"simulated failure\\\"}\""
			   : "\"{\\\"result\\\": \\\"ok\\\"}\"");
		if (fail)
			failures++;
	}
	append(&ids, &len_ids, &cap_ids, "}");
	append(&statuses, &len_status, &cap_status, "}");
	append(&responses, &len_resp, &cap_resp, "}");

	if (options->latency_ms > 0)
		usleep((useconds_t) options->latency_ms * 1000);

	params[0] = ids;
	params[1] = statuses;
	params[2] = responses;
	res = PQexecParams(conn,
					   "SELECT fleet.complete_commands($1::bigint[], $2::int[], $3::jsonb[])",
					   3, NULL, params, NULL, NULL, 0);
	ok = PQresultStatus(res) == PGRES_TUPLES_OK;
	if (!ok)
		fprintf(stderr, "fleet-sim: %s: could not report answers: %s", worker->gateway,
				PQerrorMessage(conn));
	else
	{
		worker->answered += rows;
		worker->failed += failures;
		pthread_mutex_lock(&answer_lock);
		answers_total += rows;
		pthread_mutex_unlock(&answer_lock);
	}
	PQclear(res);
	free(ids);
	free(statuses);
	free(responses);
	return ok;
}

/* One connection: listen, claim, answer, until told to stop. */
static void *
run_worker(void *arg)
{
	Worker	   *worker = arg;
	const Options *options = worker->options;
	PGconn	   *conn = PQconnectdb(options->conninfo ? options->conninfo : "");
	char		batch_text[16];
	const char *params[2] = {worker->gateway, batch_text};
	unsigned int seed = options->seed + (unsigned int) worker->number;
	double		idle_since = now_s();
	double		first_claim = 0;
	double		last_answer = 0;

	snprintf(batch_text, sizeof(batch_text), "%d", options->batch);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "fleet-sim: could not connect: %s", PQerrorMessage(conn));
		fprintf(stderr, "Check -d or PGHOST/PGPORT/PGDATABASE, and that the server is running.\n");
		PQfinish(conn);
		return NULL;
	}
	PQclear(PQexec(conn, "LISTEN fleet_commands"));

	while (!stop_requested)
	{
		PGresult   *claimed;

		if (options->max_answers > 0)
		{
			long		so_far;

			pthread_mutex_lock(&answer_lock);
			so_far = answers_total;
			pthread_mutex_unlock(&answer_lock);
			if (so_far >= options->max_answers)
				break;
		}

		claimed = PQexecParams(conn,
							   "SELECT delivery_id, device_id, command, request FROM fleet.claim_commands($1, $2)",
							   2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(claimed) != PGRES_TUPLES_OK)
		{
			fprintf(stderr, "fleet-sim: %s: could not claim commands: %s", worker->gateway,
					PQerrorMessage(conn));
			if (strstr(PQerrorMessage(conn), "does not exist"))
				fprintf(stderr, "Is the pg_fleet extension installed in this database?\n");
			PQclear(claimed);
			PQfinish(conn);
			return NULL;
		}
		if (PQntuples(claimed) == 0)
		{
			PQclear(claimed);
			if (options->idle_exit_s > 0 && now_s() - idle_since >= options->idle_exit_s)
				break;
			wait_for_work(conn, 1000);
			continue;
		}

		if (first_claim == 0)
			first_claim = now_s();
		if (!answer_batch(worker, conn, claimed, &seed))
		{
			PQclear(claimed);
			PQfinish(conn);
			return NULL;
		}
		PQclear(claimed);
		last_answer = idle_since = now_s();
		if (!options->quiet)
			printf("%s: %ld answered, %ld failed\n", worker->gateway, worker->answered, worker->failed);
	}

	worker->busy_s = first_claim > 0 ? last_answer - first_claim : 0;
	worker->ok = true;
	PQfinish(conn);
	return NULL;
}

int
main(int argc, char **argv)
{
	static struct option long_options[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"gateway", required_argument, NULL, 'g'},
		{"batch", required_argument, NULL, 'b'},
		{"latency", required_argument, NULL, 'l'},
		{"failure-rate", required_argument, NULL, 'f'},
		{"fail-devices", required_argument, NULL, 1},
		{"connections", required_argument, NULL, 'c'},
		{"idle-exit", required_argument, NULL, 'i'},
		{"max", required_argument, NULL, 'n'},
		{"seed", required_argument, NULL, 2},
		{"quiet", no_argument, NULL, 'q'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	Options		options = {.batch = 100, .connections = 1, .seed = 1};
	char		default_gateway[64];
	Worker	   *workers;
	pthread_t  *threads;
	long		answered = 0,
				failed = 0;
	double		busy = 0;
	bool		all_ok = true;
	int			c;

	snprintf(default_gateway, sizeof(default_gateway), "fleet-sim-%d", (int) getpid());
	options.gateway = default_gateway;

	while ((c = getopt_long(argc, argv, "d:g:b:l:f:c:i:n:qV?", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				options.conninfo = optarg;
				break;
			case 'g':
				options.gateway = optarg;
				break;
			case 'b':
				options.batch = atoi(optarg);
				break;
			case 'l':
				options.latency_ms = atoi(optarg);
				break;
			case 'f':
				options.failure_rate = atof(optarg);
				break;
			case 1:
				parse_fail_devices(&options, optarg);
				break;
			case 'c':
				options.connections = atoi(optarg);
				break;
			case 'i':
				options.idle_exit_s = atof(optarg);
				break;
			case 'n':
				options.max_answers = atol(optarg);
				break;
			case 2:
				options.seed = (unsigned int) strtoul(optarg, NULL, 10);
				break;
			case 'q':
				options.quiet = true;
				break;
			case 'V':
				printf("fleet-sim (pg_fleet) %s\n", FLEET_SIM_VERSION);
				return 0;
			case 'h':
				usage();
				return 0;
			case '?':
				/* getopt's answer to both "-?" and an unknown option */
				if (strcmp(argv[optind - 1], "-?") == 0)
				{
					usage();
					return 0;
				}
				fprintf(stderr, "Try \"fleet-sim --help\" for more information.\n");
				return 1;
			default:
				fprintf(stderr, "Try \"fleet-sim --help\" for more information.\n");
				return 1;
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "fleet-sim: unexpected argument \"%s\"\n", argv[optind]);
		fprintf(stderr, "Try \"fleet-sim --help\" for more information.\n");
		return 1;
	}
	if (options.batch < 1 || options.connections < 1 || options.connections > 256 ||
		options.latency_ms < 0 || options.failure_rate < 0 || options.failure_rate > 100 ||
		options.idle_exit_s < 0 || options.max_answers < 0)
	{
		fprintf(stderr, "fleet-sim: --batch and --connections (1 to 256) must be positive, "
				"--failure-rate between 0 and 100, --latency, --idle-exit and --max not negative\n");
		return 1;
	}

	signal(SIGINT, handle_stop);
	signal(SIGTERM, handle_stop);

	workers = calloc(options.connections, sizeof(Worker));
	threads = calloc(options.connections, sizeof(pthread_t));
	for (int i = 0; i < options.connections; i++)
	{
		workers[i].number = i;
		workers[i].options = &options;
		if (options.connections == 1)
			snprintf(workers[i].gateway, sizeof(workers[i].gateway), "%s", options.gateway);
		else
			snprintf(workers[i].gateway, sizeof(workers[i].gateway), "%s-%d", options.gateway, i + 1);
		pthread_create(&threads[i], NULL, run_worker, &workers[i]);
	}
	for (int i = 0; i < options.connections; i++)
	{
		pthread_join(threads[i], NULL);
		answered += workers[i].answered;
		failed += workers[i].failed;
		if (workers[i].busy_s > busy)
			busy = workers[i].busy_s;
		all_ok = all_ok && workers[i].ok;
	}

	printf("fleet-sim: answered %ld commands (%ld failed) over %d connection%s in %.2f s: %.0f commands/s\n",
		   answered, failed, options.connections, options.connections == 1 ? "" : "s",
		   busy, busy > 0 ? answered / busy : 0.0);
	return all_ok ? 0 : 2;
}
