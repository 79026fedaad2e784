/*-------------------------------------------------------------------------
 *
 * main.c
 *	  fleetctl: the command line, and how failures are told.
 *
 * Options are parsed by getopt_long, as psql's are: the connection options
 * (-d, -h, -p, -U, -w, -W) and --json, -q go before or after the command;
 * each command adds its own.  Failures are reported in PostgreSQL's client
 * style ("fleetctl: error: ...", then "detail:" and "hint:" lines), each
 * with its own exit status (fleetctl.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "common/logging.h"
#include "fe_utils/cancel.h"
#include "getopt_long.h"

#include "fleetctl.h"

GlobalOptions options;
const char *progname = "fleetctl";

static const char *main_usage =
"fleetctl manages pg_fleet devices and jobs from a terminal.\n"
"\n"
"Usage:\n"
"  fleetctl [OPTION]... COMMAND [ARG]...\n"
"\n"
"Commands:\n"
"  import FILE [--template ID] [--organization ID] [--rejected FILE]\n"
"                          import devices from an IoT Central CSV file\n"
"  export [--template ID] [--organization ID] [-o FILE]\n"
"                          export devices with their keys as CSV\n"
"  job create FILE.json    create a job from IoT Central's job JSON and queue it\n"
"  job watch ID            show a job's batches until it ends\n"
"  job results ID [-o FILE]  download a job's results log as CSV\n"
"  job run|stop|resume|advance|copy|rerun ID\n"
"  jobs                    the jobs of the last 30 days\n"
"  schedule list|show|delete|enable|disable [ID], schedule create FILE.json\n"
"\n"
"Options:\n"
"  --json                  print tables and objects as JSON\n"
"  -q, --quiet             no progress and no server notices\n"
"  -V, --version           output version information, then exit\n"
"  -?, --help              show this help, then exit; COMMAND --help for a command's\n"
"\n"
"Connection options (as psql's; PGHOST, PGPORT, PGUSER, PGDATABASE,\n"
"PGSERVICE, .pgpass and sslmode apply):\n"
"  -d, --dbname=DBNAME     database name or connection string (conninfo or URI)\n"
"  -h, --host=HOSTNAME     database server host or socket directory\n"
"  -p, --port=PORT         database server port\n"
"  -U, --username=USERNAME database user name\n"
"  -w, --no-password       never prompt for password\n"
"  -W, --password          force password prompt\n"
"\n"
"Ctrl-C cancels what the server is doing (an import keeps nothing).\n"
"\n"
"Exit status: 0 done; 1 a job failed or was cancelled, or rows were rejected;\n"
"2 bad command line; 3 server unreachable; 4 pg_fleet not installed;\n"
"5 permission denied; 6 bad file; 7 refused by the server; 130 interrupted.\n";

void
fail(int status, const char *hint, const char *fmt,...)
{
	va_list		args;
	char		message[4096];

	va_start(args, fmt);
	vsnprintf(message, sizeof(message), fmt, args);
	va_end(args);
	pg_log_error("%s", message);
	if (hint)
		pg_log_error_hint("%s", hint);
	exit(status);
}

void
usage_error(const char *command, const char *fmt,...)
{
	va_list		args;
	char		message[4096];

	va_start(args, fmt);
	vsnprintf(message, sizeof(message), fmt, args);
	va_end(args);
	pg_log_error("%s", message);
	pg_log_error_hint("Try \"%s%s%s --help\" for more information.", progname,
					  command ? " " : "", command ? command : "");
	exit(EXIT_USAGE);
}

/*
 * The exit status a server error deserves: permission and "not installed"
 * errors have their own; bad JSON in a file is the file's fault.
 */
static int
status_for_sqlstate(const char *sqlstate)
{
	if (sqlstate == NULL)
		return EXIT_CONNECT;	/* no SQLSTATE: the connection broke */
	/* the server shut down or went away (57P01, 57P02, 57P03), or the connection did */
	if (strncmp(sqlstate, "57P", 3) == 0 || strncmp(sqlstate, "08", 2) == 0)
		return EXIT_CONNECT;
	/* canceled on our request (Ctrl-C) */
	if (strcmp(sqlstate, "57014") == 0 && CancelRequested)
		return EXIT_INTERRUPTED;
	if (strcmp(sqlstate, "42501") == 0)
		return EXIT_PERMISSION;
	if (strcmp(sqlstate, "3F000") == 0 || strcmp(sqlstate, "42883") == 0)
		return EXIT_NO_EXTENSION;
	if (strcmp(sqlstate, "22P02") == 0)
		return EXIT_BAD_FILE;
	return EXIT_REFUSED;
}

void
fail_result(PGresult *result, const char *what)
{
	const char *message = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(result, PG_DIAG_MESSAGE_DETAIL);
	const char *hint = PQresultErrorField(result, PG_DIAG_MESSAGE_HINT);
	const char *context = PQresultErrorField(result, PG_DIAG_CONTEXT);
	const char *sqlstate = PQresultErrorField(result, PG_DIAG_SQLSTATE);
	int			status = status_for_sqlstate(sqlstate);
	char	   *copy = pg_strdup(message ? message : PQresultErrorMessage(result));
	size_t		len = strlen(copy);

	while (len > 0 && copy[len - 1] == '\n')
		copy[--len] = '\0';
	pg_log_error("%s: %s", what, copy);
	if (detail)
		pg_log_error_detail("%s", detail);
	/* COPY says where in the file: "COPY device_import, line 5: ..." */
	if (context && strncmp(context, "COPY ", 5) == 0)
	{
		const char *newline = strchr(context, '\n');

		pg_log_error_detail("%.*s", newline ? (int) (newline - context) : (int) strlen(context), context);
	}
	if (hint)
		pg_log_error_hint("%s", hint);
	else if (status == EXIT_PERMISSION)
		pg_log_error_hint("Ask an administrator of the organization for the operator or administrator role.");
	exit(status);
}

/* Runs a statement; on any error, tells what failed and exits. */
PGresult *
query(PGconn *conn, const char *what, const char *sql, int nparams, const char *const *params)
{
	PGresult   *result = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType status = PQresultStatus(result);

	if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK)
		fail_result(result, what);
	return result;
}

/* Exits when the user pressed Ctrl-C while no statement was running. */
void
exit_if_interrupted(void)
{
	if (CancelRequested)
		fail(EXIT_INTERRUPTED, NULL, "interrupted");
}

/* A value quoted as an SQL literal, for the statements that take none as parameters (COPY). */
char *
sql_literal(PGconn *conn, const char *value)
{
	char	   *literal;

	if (value == NULL)
		return strdup("NULL");
	literal = PQescapeLiteral(conn, value, strlen(value));
	if (literal == NULL)
		fail(EXIT_USAGE, "Give it in the client's encoding.", "cannot use \"%s\": %s", value, PQerrorMessage(conn));
	return literal;
}

/* A file read whole (job JSON), refused when missing or larger than limit. */
char *
read_whole_file(const char *path, size_t limit)
{
	FILE	   *file = fopen(path, "rb");
	struct stat st;
	char	   *text;
	size_t		n;

	if (file == NULL)
		fail(EXIT_BAD_FILE, "Check the path.", "cannot read \"%s\": %s", path, strerror(errno));
	if (fstat(fileno(file), &st) != 0 || !S_ISREG(st.st_mode))
		fail(EXIT_BAD_FILE, "Give a regular file.", "cannot read \"%s\": not a regular file", path);
	if ((size_t) st.st_size > limit)
		fail(EXIT_BAD_FILE, NULL, "\"%s\" is larger than %zu bytes", path, limit);
	text = pg_malloc(st.st_size + 1);
	n = fread(text, 1, st.st_size, file);
	if (ferror(file))
		fail(EXIT_BAD_FILE, NULL, "cannot read \"%s\": %s", path, strerror(errno));
	text[n] = '\0';
	fclose(file);
	return text;
}

/*
 * -o FILE, or stdout for none or "-".  A new file is readable by its owner
 * only: exports hold device keys.
 */
FILE *
open_output(const char *path)
{
	FILE	   *file;
	int			fd;

	if (path == NULL || strcmp(path, "-") == 0)
		return stdout;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	file = fd < 0 ? NULL : fdopen(fd, "wb");
	if (file == NULL)
		fail(EXIT_BAD_FILE, "Check that the directory exists and is writable.",
			 "cannot write \"%s\": %s", path, strerror(errno));
	return file;
}

/* COPY ... TO STDOUT into a file, with a closing line on stderr. */
void
copy_out_to(PGconn *conn, const char *what, const char *sql, FILE *out, const char *label)
{
	PGresult   *result = PQexec(conn, sql);
	char	   *buffer;
	int			len;
	long long	lines = 0;
	double		bytes = 0;
	char		b1[32], b2[32];

	if (PQresultStatus(result) != PGRES_COPY_OUT)
		fail_result(result, what);
	PQclear(result);
	while ((len = PQgetCopyData(conn, &buffer, 0)) > 0)
	{
		if (fwrite(buffer, 1, len, out) != (size_t) len)
			fail(EXIT_BAD_FILE, NULL, "cannot write %s: %s", label, strerror(errno));
		for (int i = 0; i < len; i++)
			lines += buffer[i] == '\n';
		bytes += len;
		PQfreemem(buffer);
	}
	result = PQgetResult(conn);
	if (PQresultStatus(result) != PGRES_COMMAND_OK)
		fail_result(result, what);
	PQclear(result);
	if (fflush(out) != 0 || (out != stdout && fclose(out) != 0))
		fail(EXIT_BAD_FILE, NULL, "cannot write %s: %s", label, strerror(errno));
	if (!options.quiet)
		pg_log_info("%s rows (%s) written to %s",
				human_count(lines > 0 ? lines - 1 : 0, b1, sizeof(b1)),
				human_bytes(bytes, b2, sizeof(b2)), label);
}

/*
 * Parses a command's options with getopt_long: the command's own (each with
 * a value), and the connection options, --json, -q and --spreadsheet-safe,
 * which every command takes.  Returns the positional arguments.
 */
char **
parse_sub_options(int argc, char **argv, const SubOption *known, const char *usage, int *n_positional)
{
	struct option long_options[64];
	char		short_options[64] = "d:h:p:U:wWq?";
	int			n_long = 0;
	int			c;
	char	  **positional = pg_malloc0((argc + 1) * sizeof(char *));
	int			n = 0;

	for (const SubOption *o = known; o->name != NULL; o++)
	{
		long_options[n_long++] = (struct option) {o->name + 2, required_argument, NULL, 1000 + (int) (o - known)};
		if (o->short_name)
		{
			size_t		len = strlen(short_options);

			short_options[len] = o->short_name;
			short_options[len + 1] = ':';
			short_options[len + 2] = '\0';
		}
	}
	long_options[n_long++] = (struct option) {"dbname", required_argument, NULL, 'd'};
	long_options[n_long++] = (struct option) {"host", required_argument, NULL, 'h'};
	long_options[n_long++] = (struct option) {"port", required_argument, NULL, 'p'};
	long_options[n_long++] = (struct option) {"username", required_argument, NULL, 'U'};
	long_options[n_long++] = (struct option) {"no-password", no_argument, NULL, 'w'};
	long_options[n_long++] = (struct option) {"password", no_argument, NULL, 'W'};
	long_options[n_long++] = (struct option) {"quiet", no_argument, NULL, 'q'};
	long_options[n_long++] = (struct option) {"json", no_argument, NULL, 2000};
	long_options[n_long++] = (struct option) {"spreadsheet-safe", no_argument, NULL, 2001};
	long_options[n_long++] = (struct option) {"help", no_argument, NULL, '?'};
	long_options[n_long] = (struct option) {NULL, 0, NULL, 0};

	/* a new scan: glibc resets its state on 0, other getopts on 1 */
#ifdef __GLIBC__
	optind = 0;
#else
	optind = 1;
#endif
	opterr = 0;					/* our messages, not getopt's */
	while ((c = getopt_long(argc, argv, short_options, long_options, NULL)) != -1)
	{
		if (c >= 1000 && c < 2000)
		{
			*known[c - 1000].value = optarg;
			continue;
		}
		if (c < 1000)
		{
			for (const SubOption *o = known; o->name != NULL; o++)
				if (o->short_name && o->short_name == c)
				{
					*o->value = optarg;
					goto next;
				}
		}
		switch (c)
		{
			case 2000:
				options.json = true;
				break;
			case 2001:
				options.spreadsheet_safe = true;
				break;
			case '?':
				{
					const char *bad = argv[optind - 1];

					if (strcmp(bad, "-?") == 0 || strcmp(bad, "--help") == 0)
					{
						fputs(usage, stdout);
						exit(EXIT_DONE);
					}
					if (optopt >= 1000 || (optopt > 0 && strchr(short_options, optopt) != NULL))
						usage_error(usage == main_usage ? NULL : argv[0], "option \"%s\" needs a value", bad);
					usage_error(usage == main_usage ? NULL : argv[0], "unknown option \"%s\"", bad);
				}
				break;
			default:
				parse_connection_option(c, optarg);
				break;
		}
next:	;
	}
	for (int i = optind; i < argc; i++)
	{
		if (strcmp(argv[i], "help") == 0 && n == 0)
		{
			fputs(usage, stdout);
			exit(EXIT_DONE);
		}
		positional[n++] = argv[i];
	}
	*n_positional = n;
	return positional;
}

int
main(int argc, char **argv)
{
	static const SubOption none[] = {{NULL, 0, NULL}};
	int			command;
	int			n;
	char	  **args;

	pg_logging_init(argv[0]);
	progname = get_progname(argv[0]);
	setup_cancel_handler(NULL);


	/*
	 * Global options come before the command: stop at the first argument
	 * that is not an option ("+": no permutation), and hand the rest to the
	 * command, whose own parse takes the same options again.
	 */
	for (command = 1; command < argc; command++)
	{
		const char *arg = argv[command];

		if (arg[0] != '-' || strcmp(arg, "-") == 0)
			break;
		if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0)
		{
			printf("fleetctl (pg_fleet) %s\n", FLEETCTL_VERSION);
			return EXIT_DONE;
		}
		/* an option that takes its value in the next argument */
		if ((strlen(arg) == 2 && strchr("dhpU", arg[1]) != NULL) ||
			strcmp(arg, "--dbname") == 0 || strcmp(arg, "--host") == 0 ||
			strcmp(arg, "--port") == 0 || strcmp(arg, "--username") == 0)
			command++;
	}
	args = parse_sub_options(command, argv, none, main_usage, &n);
	if (n > 0)
		usage_error(NULL, "unexpected argument \"%s\"", args[0]);
	if (command >= argc)
		usage_error(NULL, "no command given");

	argc -= command;
	argv += command;
	if (strcmp(argv[0], "import") == 0)
		return cmd_import(argc, argv);
	if (strcmp(argv[0], "export") == 0)
		return cmd_export(argc, argv);
	if (strcmp(argv[0], "job") == 0)
		return cmd_job(argc, argv);
	if (strcmp(argv[0], "jobs") == 0)
		return cmd_jobs(argc, argv);
	if (strcmp(argv[0], "schedule") == 0 || strcmp(argv[0], "schedules") == 0)
		return cmd_schedule(argc, argv);
	if (strcmp(argv[0], "help") == 0)
	{
		fputs(main_usage, stdout);
		return EXIT_DONE;
	}
	usage_error(NULL, "unknown command \"%s\"", argv[0]);
}
