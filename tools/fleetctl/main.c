/*-------------------------------------------------------------------------
 *
 * main.c
 *	  fleetctl: the command line, the connection, and how failures are told.
 *
 * Connection options are libpq's: -d takes a conninfo string, a URI or a
 * database name, and PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD,
 * .pgpass and sslmode all apply as for psql.  Every failure is one message
 * saying what failed and what to do, and its own exit status (fleetctl.h).
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fleetctl.h"

GlobalOptions options;
const char *progname = "fleetctl";

static const char *main_usage =
"fleetctl manages pg_fleet devices and jobs from a terminal.\n"
"\n"
"Usage:\n"
"  fleetctl [-d CONNINFO] [--json] [-q] COMMAND [ARGS]\n"
"\n"
"Commands:\n"
"  import FILE [--template ID] [--organization ID] [--rejected FILE]\n"
"                          import devices from an IoT Central CSV file\n"
"  export [--template ID] [--organization ID] [-o FILE]\n"
"                          export devices with their keys as CSV\n"
"  job create FILE.json    create a job from IoT Central's job JSON and queue it\n"
"  job watch ID            show a job's batches until it ends\n"
"  job results ID [-o FILE]  download a job's results log as CSV\n"
"  job run|stop|resume|copy|rerun ID\n"
"  jobs                    the jobs of the last 30 days\n"
"  schedule list|show|delete|enable|disable [ID], schedule create FILE.json\n"
"\n"
"Options:\n"
"  -d, --dbname=CONNINFO   database to connect to (conninfo, URI or name;\n"
"                          PGHOST, PGPORT, PGUSER, PGDATABASE, .pgpass apply)\n"
"  --json                  print tables and objects as JSON\n"
"  -q, --quiet             no progress and no server notices\n"
"  --help                  this help; COMMAND --help for a command's\n"
"  --version               fleetctl's version\n"
"\n"
"Exit status: 0 done; 1 a job failed or was cancelled, or rows were rejected;\n"
"2 bad command line; 3 server unreachable; 4 pg_fleet not installed;\n"
"5 permission denied; 6 bad file; 7 refused by the server.\n";

void
fail(int status, const char *hint, const char *fmt,...)
{
	va_list		args;

	fprintf(stderr, "%s: ", progname);
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
	if (hint)
		fprintf(stderr, "hint: %s\n", hint);
	exit(status);
}

void
usage_error(const char *usage, const char *fmt,...)
{
	va_list		args;

	fprintf(stderr, "%s: ", progname);
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fprintf(stderr, "\n\n%s", usage);
	exit(EXIT_USAGE);
}

bool
is_help(const char *arg)
{
	return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0 || strcmp(arg, "help") == 0;
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

	fprintf(stderr, "%s: %s: %s\n", progname, what,
			message ? message : PQresultErrorMessage(result));
	if (detail)
		fprintf(stderr, "detail: %s\n", detail);
	/* COPY says where in the file: "COPY device_import, line 5: ..." */
	if (context && strncmp(context, "COPY ", 5) == 0)
	{
		const char *newline = strchr(context, '\n');

		fprintf(stderr, "context: %.*s\n", newline ? (int) (newline - context) : (int) strlen(context), context);
	}
	if (hint)
		fprintf(stderr, "hint: %s\n", hint);
	else if (status == EXIT_PERMISSION)
		fprintf(stderr, "hint: ask an administrator of the organization for the operator or administrator role\n");
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

/* Server notices go to stderr as ours, unless --quiet. */
static void
print_notice(void *arg, const PGresult *result)
{
	const char *message = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
	const char *hint = PQresultErrorField(result, PG_DIAG_MESSAGE_HINT);

	if (options.quiet || message == NULL)
		return;
	fprintf(stderr, "%s: %s\n", progname, message);
	if (hint)
		fprintf(stderr, "hint: %s\n", hint);
}

/*
 * Connects with libpq's usual means, and checks that pg_fleet is there, so
 * that a missing extension is told as such rather than as a missing
 * function.
 */
PGconn *
fleet_connect(void)
{
	const char *keywords[] = {"dbname", "fallback_application_name", NULL};
	const char *values[] = {options.conninfo, "fleetctl", NULL};
	PGconn	   *conn = PQconnectdbParams(keywords, values, 1);
	PGresult   *result;

	if (PQstatus(conn) != CONNECTION_OK)
	{
		/* a copy: libpq's message may be a constant string */
		char	   *message = strdup(PQerrorMessage(conn));
		size_t		len = message ? strlen(message) : 0;

		while (len > 0 && message[len - 1] == '\n')
			message[--len] = '\0';
		fail(EXIT_CONNECT,
			 "check -d, or PGHOST, PGPORT, PGUSER and PGDATABASE, and that the server is running",
			 "cannot connect to the server: %s", message);
	}
	PQsetNoticeProcessor(conn, NULL, NULL);
	PQsetNoticeReceiver(conn, print_notice, NULL);

	result = query(conn, "cannot check for pg_fleet",
				   "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_fleet'", 0, NULL);
	if (PQntuples(result) == 0)
		fail(EXIT_NO_EXTENSION,
			 "run CREATE EXTENSION pg_fleet in that database, or connect to the one that has it (-d)",
			 "pg_fleet is not installed in database \"%s\"", PQdb(conn));
	PQclear(result);
	return conn;
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
		fail(EXIT_USAGE, "give it in the client's encoding", "cannot use \"%s\": %s", value, PQerrorMessage(conn));
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
		fail(EXIT_BAD_FILE, "check the path", "cannot read \"%s\": %s", path, strerror(errno));
	if (fstat(fileno(file), &st) != 0 || !S_ISREG(st.st_mode))
		fail(EXIT_BAD_FILE, "give a regular file", "cannot read \"%s\": not a regular file", path);
	if ((size_t) st.st_size > limit)
		fail(EXIT_BAD_FILE, NULL, "\"%s\" is larger than %zu bytes", path, limit);
	text = malloc(st.st_size + 1);
	if (text == NULL)
		fail(EXIT_BAD_FILE, NULL, "out of memory reading \"%s\"", path);
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
		fail(EXIT_BAD_FILE, "check the directory exists and is writable",
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
		fprintf(stderr, "%s: %s rows (%s) written to %s\n", progname,
				human_count(lines > 0 ? lines - 1 : 0, b1, sizeof(b1)),
				human_bytes(bytes, b2, sizeof(b2)), label);
}

/*
 * Parses a sub-command's options: the given long options (each with a
 * value), and -d/--dbname, -q/--quiet and --json anywhere.  Returns the
 * positional arguments.
 */
char **
parse_sub_options(int argc, char **argv, const SubOption *known, const char *usage, int *n_positional)
{
	char	  **positional = calloc(argc + 1, sizeof(char *));
	int			n = 0;

	for (int i = 1; i < argc; i++)
	{
		const char *arg = argv[i];
		const char *value = NULL;
		bool		matched = false;

		if (is_help(arg))
		{
			fputs(usage, stdout);
			exit(EXIT_DONE);
		}
		if (strcmp(arg, "--json") == 0)
		{
			options.json = true;
			continue;
		}
		if (strcmp(arg, "-q") == 0 || strcmp(arg, "--quiet") == 0)
		{
			options.quiet = true;
			continue;
		}
		if (strcmp(arg, "--spreadsheet-safe") == 0)
		{
			options.spreadsheet_safe = true;
			continue;
		}
		if (arg[0] != '-' || strcmp(arg, "-") == 0)
		{
			positional[n++] = argv[i];
			continue;
		}
		{
			/* -d/--dbname, then the command's own options */
			const SubOption dbname = {"--dbname", 'd', &options.conninfo};

			for (const SubOption *o = &dbname; o != NULL && o->name != NULL;
				 o = (o == &dbname) ? known : o + 1)
			{
				size_t		len = strlen(o->name);
				bool		is_short = o->short_name && arg[1] == o->short_name && arg[2] == '\0';

				if (!is_short && !(strncmp(arg, o->name, len) == 0 && (arg[len] == '\0' || arg[len] == '=')))
					continue;
				if (!is_short && arg[len] == '=')
					value = arg + len + 1;
				else if (i + 1 < argc)
					value = argv[++i];
				else
					usage_error(usage, "option %s needs a value", arg);
				*o->value = value;
				matched = true;
				break;
			}
		}
		if (!matched)
			usage_error(usage, "unknown option \"%s\"", arg);
	}
	*n_positional = n;
	return positional;
}

int
main(int argc, char **argv)
{
	int			i = 1;

	/* global options, before the command */
	for (; i < argc && argv[i][0] == '-'; i++)
	{
		const char *arg = argv[i];

		if (is_help(arg))
		{
			fputs(main_usage, stdout);
			return EXIT_DONE;
		}
		else if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0)
		{
			printf("fleetctl (pg_fleet) %s\n", FLEETCTL_VERSION);
			return EXIT_DONE;
		}
		else if (strcmp(arg, "--json") == 0)
			options.json = true;
		else if (strcmp(arg, "-q") == 0 || strcmp(arg, "--quiet") == 0)
			options.quiet = true;
		else if (strcmp(arg, "-d") == 0 || strcmp(arg, "--dbname") == 0)
		{
			if (++i >= argc)
				usage_error(main_usage, "option %s needs a value", arg);
			options.conninfo = argv[i];
		}
		else if (strncmp(arg, "--dbname=", 9) == 0)
			options.conninfo = arg + 9;
		else
			usage_error(main_usage, "unknown option \"%s\"", arg);
	}
	if (i >= argc)
		usage_error(main_usage, "no command given");

	argc -= i;
	argv += i;
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
	usage_error(main_usage, "unknown command \"%s\"", argv[0]);
}
