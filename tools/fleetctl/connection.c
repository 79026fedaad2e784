/*-------------------------------------------------------------------------
 *
 * connection.c
 *	  fleetctl's connection to the server, made as psql makes its own.
 *
 * The connection options are psql's (-d, -h, -p, -U, -w, -W); -d takes a
 * database name, a conninfo string or a URI, and libpq's environment
 * (PGHOST, PGPORT, PGUSER, PGDATABASE, PGSERVICE, PGPASSWORD), .pgpass and
 * pg_service.conf apply.  A password is asked for when the server wants one
 * and -w was not given.  Once connected, Ctrl-C cancels the statement the
 * server is running (fe_utils/cancel.c, as in psql).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "common/logging.h"
#include "common/string.h"
#include "fe_utils/cancel.h"

#include "fleetctl.h"

static const char *host;
static const char *port;
static const char *username;
static enum
{
	PROMPT_IF_NEEDED,
	PROMPT_NEVER,
	PROMPT_ALWAYS
}			prompt_password = PROMPT_IF_NEEDED;

/* Takes one of the connection options getopt_long found. */
void
parse_connection_option(int option, const char *value)
{
	switch (option)
	{
		case 'd':
			options.conninfo = value;
			break;
		case 'h':
			host = value;
			break;
		case 'p':
			port = value;
			break;
		case 'U':
			username = value;
			break;
		case 'w':
			prompt_password = PROMPT_NEVER;
			break;
		case 'W':
			prompt_password = PROMPT_ALWAYS;
			break;
		case 'q':
			options.quiet = true;
			break;
	}
}

/* Server notices go to stderr as ours, unless --quiet. */
static void
print_notice(void *arg, const PGresult *result)
{
	const char *message = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
	const char *hint = PQresultErrorField(result, PG_DIAG_MESSAGE_HINT);

	if (options.quiet || message == NULL)
		return;
	pg_log_info("%s", message);
	if (hint)
		pg_log_info_hint("%s", hint);
}

/*
 * Connects, asking for a password if the server wants one, and checks that
 * pg_fleet is there, so that a missing extension is told as such rather
 * than as a missing function.
 */
PGconn *
fleet_connect(void)
{
	char	   *password = NULL;
	PGconn	   *conn;
	PGresult   *result;

	if (prompt_password == PROMPT_ALWAYS)
		password = simple_prompt("Password: ", false);
	for (;;)
	{
		const char *keywords[] = {"host", "port", "user", "password", "dbname",
		"fallback_application_name", NULL};
		const char *values[] = {host, port, username, password, options.conninfo,
		"fleetctl", NULL};

		conn = PQconnectdbParams(keywords, values, true);
		if (PQstatus(conn) == CONNECTION_BAD && PQconnectionNeedsPassword(conn) &&
			password == NULL && prompt_password != PROMPT_NEVER)
		{
			PQfinish(conn);
			password = simple_prompt("Password: ", false);
			continue;
		}
		break;
	}
	if (PQstatus(conn) != CONNECTION_OK)
	{
		char	   *message = pg_strdup(PQerrorMessage(conn));
		size_t		len = strlen(message);

		while (len > 0 && message[len - 1] == '\n')
			message[--len] = '\0';
		fail(EXIT_CONNECT,
			 "Check -d, -h, -p and -U (or PGHOST, PGPORT, PGUSER, PGDATABASE and PGSERVICE), and that the server is running.",
			 "cannot connect to the server: %s", message);
	}
	PQsetNoticeProcessor(conn, NULL, NULL);
	PQsetNoticeReceiver(conn, print_notice, NULL);
	SetCancelConn(conn);

	result = query(conn, "cannot check for pg_fleet",
				   "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_fleet'", 0, NULL);
	if (PQntuples(result) == 0)
		fail(EXIT_NO_EXTENSION,
			 "Run CREATE EXTENSION pg_fleet in that database, or connect to the one that has it (-d).",
			 "pg_fleet is not installed in database \"%s\"", PQdb(conn));
	PQclear(result);
	return conn;
}
