/*-------------------------------------------------------------------------
 *
 * fleet-bridge.c
 *	  The MQTT device endpoint's link to PostgreSQL: serves what devices
 *	  connected to the broker (with the fleet_mqtt plugin) ask and answer,
 *	  from pg_fleet's rows.
 *
 * It is a client of the broker (its own id and password, over a unix
 * socket) and of the database (libpq), and works in turns.  During a turn
 * it collects what the plugin reports on "fleet/up": connections,
 * subscriptions, method answers, twin GETs, reported patches, telemetry,
 * provisioning requests and refusals.  Then it makes one call per kind of
 * work to the fleet_internal.endpoint_* functions (src/sql/device_endpoint.sql),
 * whatever the number of devices, and publishes the answers on "fleet/down/many",
 * each naming the one client it is for.  It also claims the commands of
 * its connected devices (sent as direct methods), sends desired-property
 * patches to those whose desired version moved, and keeps the plugin's
 * directory of devices and enrollment groups current.
 *
 * What it sends a device follows the database: a command is sent after its
 * claim committed, and answered on the delivery it was claimed as.  If the
 * bridge dies between the two, the delivery times out as any unanswered
 * command does; it is never sent twice.  A batch that fails for a transient
 * reason (deadlock, serialization, lock or statement timeout, a lost
 * connection) is tried again the next turn.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <mosquitto.h>

#include "batch.h"

#define FLEET_BRIDGE_VERSION "0.5"

typedef struct Options
{
	const char *conninfo;
	const char *gateway;
	const char *mqtt_host;		/* a unix socket path, or a host name */
	int			mqtt_port;		/* 0: mqtt_host is a socket */
	const char *client_id;
	char		password[256];
	const char *hub;			/* the host name provisioning assigns */
	int			turn_ms;
	int			batch;
	int			directory_ms;
	bool		verbose;
} Options;

/* What the plugin reported during a turn, by kind. */
typedef struct Turn
{
	Batch		connections;	/* device, connected (t/f), listens */
	Batch		telemetry;		/* device */
	Batch		answers;		/* device, delivery id, status, body */
	Batch		twin_gets;		/* device, rid */
	Batch		reports;		/* device, rid, body */
	Batch		registrations;	/* device, group, rid, body */
	Batch		refusals;		/* client, reason */
} Turn;

static Options options;
static Turn turn;
static PGconn *db;
static struct mosquitto *mqtt;
static bool mqtt_connected = false;
static bool mqtt_fresh = false;		/* (re)connected: send the directory, say hello */
static char directory_digest[64] = "";
static volatile sig_atomic_t stop_requested = 0;
static long counters[8];
static long events_received = 0;	/* messages from the plugin, for the loop */

enum
{
	SENT_METHODS, ANSWERS_TAKEN, PATCHES_SENT, TWINS_SERVED, REPORTS_TAKEN,
	REGISTRATIONS, TELEMETRY_MESSAGES, REFUSALS
};

static void
handle_stop(int signo)
{
	(void) signo;
	stop_requested = 1;
}

static void say(const char *fmt,...) __attribute__((format(printf, 1, 2)));

static void
say(const char *fmt,...)
{
	va_list		ap;
	char		stamp[32];
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", gmtime(&now.tv_sec));
	fprintf(stderr, "%s.%03ld fleet-bridge: ", stamp, now.tv_nsec / 1000000);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* ---------------------------------------------------------------------
 * The database */

/* Whether an error is worth trying again: the database's ordinary events. */
static bool
transient(const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (state == NULL)
		return true;			/* no answer: the connection */
	return strncmp(state, "40", 2) == 0 ||	/* deadlock, serialization */
		strcmp(state, "55P03") == 0 ||	/* lock not available */
		strcmp(state, "57014") == 0 ||	/* statement timeout, cancel */
		(strncmp(state, "08", 2) == 0 && strcmp(state, "08P01") != 0) ||	/* connection */
		strcmp(state, "57P01") == 0;	/* terminated by the administrator */
}

static bool
db_ready(void)
{
	if (db && PQstatus(db) == CONNECTION_OK)
		return true;
	if (db)
		PQfinish(db);
	db = PQconnectdb(options.conninfo ? options.conninfo : "");
	if (PQstatus(db) != CONNECTION_OK)
	{
		say("cannot connect to the database: %s", PQerrorMessage(db));
		return false;
	}
	/* the engine's own habits: name the application, never wait forever */
	PQclear(PQexec(db, "SET application_name = 'fleet-bridge'; SET lock_timeout = '5s'; SET statement_timeout = '60s'"));
	/* work to look for at once: commands queued, desired properties moved */
	PQclear(PQexec(db, "LISTEN fleet_commands; LISTEN fleet_desired"));
	say("connected to the database as gateway \"%s\"", options.gateway);
	/* the broker says again which devices are connected */
	mqtt_fresh = true;
	directory_digest[0] = '\0';
	return true;
}

/*
 * Runs a statement; NULL when it failed.  *retry says whether the failure
 * is transient (keep the batch for the next turn).
 */
static PGresult *
db_call(const char *sql, int n_params, const char *const *params, bool *retry)
{
	PGresult   *res;

	*retry = false;
	if (!db_ready())
	{
		*retry = true;
		return NULL;
	}
	res = PQexecParams(db, sql, n_params, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK)
		return res;
	*retry = transient(res);
	say("%s: %s", *retry ? "will retry" : "failed", PQresultErrorMessage(res));
	PQclear(res);
	return NULL;
}

/* ---------------------------------------------------------------------
 * The broker */

static void
publish(const char *topic, const char *payload, size_t len)
{
	int			rc = mosquitto_publish(mqtt, NULL, topic, (int) len, payload, 0, false);

	if (rc != MOSQ_ERR_SUCCESS)
		say("cannot publish to the broker: %s", mosquitto_strerror(rc));
}

/*
 * Answers to clients, gathered into "fleet/down/many" messages: records of
 * "<client>\n<topic>\n<body length>\n<body>", each for the one client it
 * names.  One message for many answers: the broker reads a packet from a
 * client each time round its loop, so 10,000 patches sent one by one would
 * take it 10,000 rounds (and a dozen system calls each).  What send_to
 * gathers goes out by down_flush(), at the latest at the end of the turn or
 * call that produced it, in the order it was gathered.
 */
#define DOWN_MESSAGE_BYTES (64 * 1024)

static struct
{
	char	   *data;
	size_t		len;
	size_t		size;
} down;

static void
down_flush(void)
{
	if (down.len == 0)
		return;
	publish("fleet/down/many", down.data, down.len);
	down.len = 0;
}

static void
send_to(const char *client, const char *topic, const char *body, size_t body_len)
{
	char		head[1536];
	int			head_len = snprintf(head, sizeof(head), "%s\n%s\n%zu\n", client, topic, body_len);

	if (head_len < 0 || (size_t) head_len >= sizeof(head))
		return;					/* no such client or topic: ids are at most 128 bytes */
	if (down.len + head_len + body_len > down.size)
	{
		size_t		size = down.size ? down.size : DOWN_MESSAGE_BYTES;
		char	   *data;

		while (size < down.len + head_len + body_len)
			size *= 2;
		if ((data = realloc(down.data, size)) == NULL)
		{
			say("out of memory for an answer to \"%s\"; it is not sent", client);
			return;
		}
		down.data = data;
		down.size = size;
	}
	memcpy(down.data + down.len, head, head_len);
	memcpy(down.data + down.len + head_len, body, body_len);
	down.len += head_len + body_len;
	if (down.len >= DOWN_MESSAGE_BYTES)
		down_flush();
}

/* The value of "<name>=" in a topic's query, into out; false when absent. */
static bool
topic_parameter(const char *topic, const char *name, char *out, size_t size)
{
	const char *q = strchr(topic, '?');
	size_t		n = strlen(name);

	while (q)
	{
		q++;
		if (strncmp(q, name, n) == 0 && q[n] == '=')
		{
			size_t		len = strcspn(q + n + 1, "&");

			if (len >= size)
				return false;
			memcpy(out, q + n + 1, len);
			out[len] = '\0';
			return true;
		}
		q = strchr(q, '&');
	}
	return false;
}

/* Splits the plugin's event into its lines; the rest is the body. */
static int
event_lines(const char *payload, size_t len, int want, const char **lines, size_t *line_lens,
			const char **body, size_t *body_len)
{
	const char *p = payload;
	const char *end = payload + len;

	for (int i = 0; i < want; i++)
	{
		const char *nl = memchr(p, '\n', end - p);

		if (nl == NULL)
			return -1;
		lines[i] = p;
		line_lens[i] = nl - p;
		p = nl + 1;
	}
	*body = p;
	*body_len = end - p;
	return 0;
}

static void
take_event(const char *payload, size_t len)
{
	const char *lines[4];
	size_t		lens[4];
	const char *body;
	size_t		body_len;
	char		client[256];
	char		topic[1024];
	char		rid[64];
	int			want;

	if (len < 2)
		return;
	switch (payload[0])
	{
		case 'C':
		case 'R':
			want = 3;
			break;
		case 'M':
			want = 3;
			break;
		case 'P':
			want = 4;
			break;
		default:
			want = 2;
	}
	if (event_lines(payload, len, want, lines, lens, &body, &body_len) < 0 || lens[1] >= sizeof(client))
		return;
	memcpy(client, lines[1], lens[1]);
	client[lens[1]] = '\0';

	switch (payload[0])
	{
		case 'C':
			batch_add(&turn.connections, 3, client, strlen(client), "t", (size_t) 1, lines[2], lens[2]);
			break;
		case 'D':
			batch_add(&turn.connections, 3, client, strlen(client), "f", (size_t) 1, "0", (size_t) 1);
			break;
		case 'T':
			batch_add(&turn.telemetry, 1, client, strlen(client));
			break;
		case 'R':
			batch_add(&turn.refusals, 2, client, strlen(client), lines[2], lens[2]);
			break;
		case 'M':
			if (lens[2] >= sizeof(topic))
				return;
			memcpy(topic, lines[2], lens[2]);
			topic[lens[2]] = '\0';
			if (!topic_parameter(topic, "$rid", rid, sizeof(rid)))
				return;
			if (strncmp(topic, "$iothub/methods/res/", 20) == 0)
			{
				char		status[16];
				size_t		n = strcspn(topic + 20, "/");

				/* an HTTP-style status: three digits (more would fail the batch's cast) */
				if (n == 0 || n > 3)
					return;
				memcpy(status, topic + 20, n);
				status[n] = '\0';
				if (strspn(status, "0123456789") != n)
					return;
				batch_add(&turn.answers, 4, client, strlen(client), rid, strlen(rid), status, n, body, body_len);
			}
			else if (strncmp(topic, "$iothub/twin/GET/", 17) == 0)
				batch_add(&turn.twin_gets, 2, client, strlen(client), rid, strlen(rid));
			else if (strncmp(topic, "$iothub/twin/PATCH/properties/reported/", 39) == 0)
				batch_add(&turn.reports, 3, client, strlen(client), rid, strlen(rid), body, body_len);
			break;
		case 'P':
			if (lens[3] >= sizeof(topic))
				return;
			memcpy(topic, lines[3], lens[3]);
			topic[lens[3]] = '\0';
			if (!topic_parameter(topic, "$rid", rid, sizeof(rid)))
				return;
			batch_add(&turn.registrations, 4, client, strlen(client), lines[2], lens[2], rid, strlen(rid),
					  body, body_len);
			break;
	}
}

static void
on_message(struct mosquitto *m, void *userdata, const struct mosquitto_message *message)
{
	(void) m;
	(void) userdata;
	events_received++;
	if (strcmp(message->topic, "fleet/up") == 0)
		take_event(message->payload, message->payloadlen);
}

static void
on_connect(struct mosquitto *m, void *userdata, int rc)
{
	(void) m;
	(void) userdata;
	if (rc != 0)
	{
		say("the broker refused the bridge: %s", mosquitto_connack_string(rc));
		return;
	}
	mqtt_connected = true;
	mqtt_fresh = true;
	say("connected to the broker");
}

static void
on_disconnect(struct mosquitto *m, void *userdata, int rc)
{
	(void) m;
	(void) userdata;
	mqtt_connected = false;
	if (!stop_requested)
		say("disconnected from the broker (%s); reconnecting", mosquitto_strerror(rc));
}

/* ---------------------------------------------------------------------
 * The work of a turn */

/* The directory, sent when it changed or the broker is new to us. */
static void
sync_directory(bool force)
{
	bool		retry;
	PGresult   *res = db_call("SELECT fleet_internal.endpoint_directory_digest()", 0, NULL, &retry);
	Batch		text = {0};

	if (res == NULL)
		return;
	if (!force && strcmp(PQgetvalue(res, 0, 0), directory_digest) == 0)
	{
		PQclear(res);
		return;
	}
	snprintf(directory_digest, sizeof(directory_digest), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);

	/* groups first: the plugin resolves devices' groups as it reads */
	res = db_call("SELECT kind, id, coalesce(group_id, '-'), CASE WHEN enabled THEN '1' ELSE '0' END, "
				  "coalesce(primary_key, '-'), coalesce(secondary_key, '-') "
				  "FROM fleet_internal.endpoint_directory() ORDER BY kind DESC", 0, NULL, &retry);
	if (res == NULL)
	{
		directory_digest[0] = '\0';
		return;
	}
	for (int i = 0; i < PQntuples(res); i++)
	{
		if (strcmp(PQgetvalue(res, i, 0), "group") == 0)
			batch_append_line(&text, "G\t%s\t%s\t%s\t%s", PQgetvalue(res, i, 1), PQgetvalue(res, i, 3),
							  PQgetvalue(res, i, 4), PQgetvalue(res, i, 5));
		else
			batch_append_line(&text, "D\t%s\t%s", PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
	}
	if (options.verbose)
		say("directory of %d entries sent to the broker", PQntuples(res));
	PQclear(res);
	publish("fleet/directory", text.text ? text.text : "", text.text_len);
	batch_free(&text);
}

/*
 * Whether the directory changed, asked on a connection of its own without
 * waiting: the digest reads every device, which takes seconds with
 * millions, and the turns go on meanwhile.  When it changed, the directory
 * is sent (sync_directory).  Looked at every --directory-poll, or, when a
 * digest takes longer than a tenth of that, ten times as long as it took.
 */
static void
check_directory(void)
{
	static PGconn *conn;
	static bool asking = false;
	static double asked_at = 0,
				interval = 0;
	PGresult   *res;
	char		digest[64] = "";

	if (!asking)
	{
		if (now_ms() - asked_at < (interval > 0 ? interval : options.directory_ms))
			return;
		if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
		{
			if (conn)
				PQfinish(conn);
			conn = PQconnectdb(options.conninfo ? options.conninfo : "");
			if (PQstatus(conn) != CONNECTION_OK)
			{
				asked_at = now_ms();
				return;
			}
			PQclear(PQexec(conn, "SET application_name = 'fleet-bridge directory'"));
		}
		asking = PQsendQuery(conn, "SELECT fleet_internal.endpoint_directory_digest()") == 1;
		asked_at = now_ms();
		return;
	}
	if (!PQconsumeInput(conn) || PQisBusy(conn))
	{
		if (PQstatus(conn) != CONNECTION_OK)
			asking = false;
		return;
	}
	while ((res = PQgetResult(conn)) != NULL)
	{
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
			snprintf(digest, sizeof(digest), "%s", PQgetvalue(res, 0, 0));
		else if (PQresultStatus(res) != PGRES_TUPLES_OK)
			say("cannot look at the directory: %s", PQresultErrorMessage(res));
		PQclear(res);
	}
	asking = false;
	interval = (now_ms() - asked_at) * 10 > options.directory_ms ? (now_ms() - asked_at) * 10 : 0;
	asked_at = now_ms();
	if (digest[0] != '\0' && strcmp(digest, directory_digest) != 0)
		sync_directory(false);
}

/*
 * A new session with the broker, or with the database: the devices this
 * gateway had are forgotten, the plugin gets the directory, and is asked
 * for every device connected now (what it reported before, still queued,
 * comes first, in order).
 */
static bool
start_over(void)
{
	const char *params[1] = {options.gateway};
	bool		retry;
	PGresult   *res = db_call("SELECT fleet_internal.endpoint_reset($1)", 1, params, &retry);

	if (res == NULL)
		return false;
	say("starting over as gateway \"%s\": %s devices were connected through it", options.gateway,
		PQgetvalue(res, 0, 0));
	PQclear(res);
	sync_directory(true);
	publish("fleet/hello", "", 0);
	return true;
}

/* Calls sql with the batch's columns as text arrays (plus extra leading
 * parameters); the batch is emptied unless the failure is transient. */
static PGresult *
flush(Batch *b, const char *sql, int n_leading, const char *const *leading)
{
	const char *params[8];
	char	   *arrays[6];
	PGresult   *res;
	bool		retry;
	int			n = 0;

	if (b->rows == 0)
		return NULL;
	for (int i = 0; i < n_leading; i++)
		params[n++] = leading[i];
	for (int c = 0; c < b->columns; c++)
	{
		arrays[c] = batch_column_array(b, c);
		params[n++] = arrays[c];
	}
	res = db_call(sql, n, params, &retry);
	for (int c = 0; c < b->columns; c++)
		free(arrays[c]);
	if (res != NULL || !retry)
		batch_clear(b);
	return res;
}

static void
serve_turn(void)
{
	const char *gateway[2] = {options.gateway, options.hub};
	PGresult   *res;

	res = flush(&turn.connections,
				"SELECT fleet_internal.endpoint_connections($1, $2::text[], $3::boolean[], $4::int[])", 1, gateway);
	PQclear(res);

	if (turn.answers.rows > 0)
	{
		long		rows = turn.answers.rows;

		res = flush(&turn.answers,
					"SELECT fleet_internal.endpoint_complete_commands($1::text[], $2::text[], $3::int[], $4::text[])",
					0, NULL);
		if (res)
		{
			counters[ANSWERS_TAKEN] += atol(PQgetvalue(res, 0, 0));
			if (options.verbose)
				say("%ld method answers, %s taken", rows, PQgetvalue(res, 0, 0));
		}
		PQclear(res);
	}

	if (turn.twin_gets.rows > 0)
	{
		Batch		requests = batch_take(&turn.twin_gets);
		Batch		call = batch_project(&requests, 1, 0);

		res = flush(&call, "SELECT n, status, body FROM fleet_internal.endpoint_twins($1::text[])", 0, NULL);
		if (res == NULL && call.rows > 0)
			batch_move_back(&turn.twin_gets, &requests);
		for (int i = 0; res && i < PQntuples(res); i++)
		{
			long		n = atol(PQgetvalue(res, i, 0)) - 1;
			char		topic[256];

			snprintf(topic, sizeof(topic), "$iothub/twin/res/%s/?$rid=%s", PQgetvalue(res, i, 1),
					 batch_get(&requests, n, 1));
			send_to(batch_get(&requests, n, 0), topic, PQgetvalue(res, i, 2), PQgetlength(res, i, 2));
			counters[TWINS_SERVED]++;
		}
		PQclear(res);
		batch_free(&call);
		batch_free(&requests);
	}

	if (turn.reports.rows > 0)
	{
		Batch		requests = batch_take(&turn.reports);
		Batch		call = batch_project(&requests, 2, 0, 2);

		res = flush(&call, "SELECT n, status, version FROM fleet_internal.endpoint_report($1::text[], $2::text[])",
					0, NULL);
		if (res == NULL && call.rows > 0)
			batch_move_back(&turn.reports, &requests);
		for (int i = 0; res && i < PQntuples(res); i++)
		{
			long		n = atol(PQgetvalue(res, i, 0)) - 1;
			char		topic[256];

			if (PQgetisnull(res, i, 2))
				snprintf(topic, sizeof(topic), "$iothub/twin/res/%s/?$rid=%s", PQgetvalue(res, i, 1),
						 batch_get(&requests, n, 1));
			else
				snprintf(topic, sizeof(topic), "$iothub/twin/res/%s/?$rid=%s&$version=%s", PQgetvalue(res, i, 1),
						 batch_get(&requests, n, 1), PQgetvalue(res, i, 2));
			send_to(batch_get(&requests, n, 0), topic, "", 0);
			counters[REPORTS_TAKEN]++;
		}
		PQclear(res);
		batch_free(&call);
		batch_free(&requests);
	}

	if (turn.registrations.rows > 0)
	{
		Batch		requests = batch_take(&turn.registrations);
		Batch		call = batch_project(&requests, 3, 0, 1, 3);

		res = flush(&call, "SELECT n, status, body, body::jsonb ->> 'status', "
					"body::jsonb -> 'registrationState' ->> 'errorMessage' "
					"FROM fleet_internal.endpoint_register($2::text[], $3::text[], $4::text[], $1)", 1, &gateway[1]);
		if (res == NULL && call.rows > 0)
			batch_move_back(&turn.registrations, &requests);
		/* a device registered now connects next: the broker must know it */
		for (int i = 0; res && i < PQntuples(res); i++)
			if (strcmp(PQgetvalue(res, i, 3), "assigned") == 0)
			{
				sync_directory(false);
				break;
			}
		for (int i = 0; res && i < PQntuples(res); i++)
		{
			long		n = atol(PQgetvalue(res, i, 0)) - 1;
			char		topic[256];

			if (strcmp(PQgetvalue(res, i, 3), "assigned") != 0)
			{
				const char *client = batch_get(&requests, n, 0);

				say("refused the registration of \"%s\": %s", client, PQgetvalue(res, i, 4));
				batch_add(&turn.refusals, 2, client, strlen(client), "registration refused",
						  strlen("registration refused"));
			}
			snprintf(topic, sizeof(topic), "$dps/registrations/res/%s/?$rid=%s", PQgetvalue(res, i, 1),
					 batch_get(&requests, n, 2));
			send_to(batch_get(&requests, n, 0), topic, PQgetvalue(res, i, 2), PQgetlength(res, i, 2));
			counters[REGISTRATIONS]++;
			if (options.verbose)
				say("registration of \"%s\": %s", batch_get(&requests, n, 0), PQgetvalue(res, i, 2));
		}
		PQclear(res);
		batch_free(&call);
		batch_free(&requests);
	}

	if (turn.telemetry.rows > 0)
	{
		long		rows = turn.telemetry.rows;

		res = flush(&turn.telemetry, "SELECT fleet_internal.endpoint_activity($1::text[])", 0, NULL);
		if (res)
			counters[TELEMETRY_MESSAGES] += rows;
		PQclear(res);
	}

	if (turn.refusals.rows > 0)
	{
		long		rows = turn.refusals.rows;

		res = flush(&turn.refusals, "SELECT fleet_internal.endpoint_count_refusals($1, $3::text[], $2::text[])",
					1, gateway);
		if (res)
			counters[REFUSALS] += rows;
		PQclear(res);
	}
}

/*
 * What the database announced (fleet_commands: commands queued,
 * fleet_desired: desired properties moved), into *commands and *patches;
 * consumes every notification.
 */
static void
db_announced_work(bool *commands, bool *patches)
{
	PGnotify   *notify;

	if (db == NULL || !PQconsumeInput(db))
		return;
	while ((notify = PQnotifies(db)) != NULL)
	{
		if (strcmp(notify->relname, "fleet_commands") == 0)
			*commands = true;
		else if (strcmp(notify->relname, "fleet_desired") == 0)
			*patches = true;
		PQfreemem(notify);
	}
}

/*
 * Sends what a claiming query returns (client, topic, body), each to its
 * device; true when it returned a full batch (there may be more right
 * away).  The query's rows are committed: a device hears of a command or a
 * patch only once the database recorded it as sent.
 */
static bool
send_claimed(const char *sql, int counter, const char *what)
{
	char		batch_text[16];
	const char *params[2] = {options.gateway, batch_text};
	bool		retry;
	PGresult   *res;
	int			n;

	snprintf(batch_text, sizeof(batch_text), "%d", options.batch);
	res = db_call(sql, 2, params, &retry);
	if (res == NULL)
		return false;
	n = PQntuples(res);
	for (int i = 0; i < n; i++)
		send_to(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetlength(res, i, 2));
	down_flush();
	counters[counter] += n;
	if (options.verbose && n > 0)
		say("sent %d %s", n, what);
	PQclear(res);
	return n == options.batch;
}

/* Commands for connected devices, as direct methods. */
static bool
send_commands(void)
{
	return send_claimed("SELECT device_id, format('$iothub/methods/POST/%s/?$rid=%s', method, delivery_id), "
						"coalesce(request::text, 'null') "
						"FROM fleet_internal.endpoint_claim_commands($1, $2)",
						SENT_METHODS, "direct methods");
}

/*
 * Desired-property patches for connected devices whose desired state moved,
 * a batch at a time in passes over the devices in id order (byte order):
 * each call goes on after the last device the one before sent.  A pass
 * that began after the first device ends with another from the start,
 * which finds what moved behind it meanwhile (a short one: nothing is due).
 */
static bool
send_patches(void)
{
	static char after[256] = "";
	const char *params[3] = {options.gateway, NULL, after};
	char		batch_text[16];
	bool		retry;
	PGresult   *res;
	int			n;

	snprintf(batch_text, sizeof(batch_text), "%d", options.batch);
	params[1] = batch_text;
	res = db_call("SELECT device_id, '$iothub/twin/PATCH/properties/desired/?$version=' || version, desired::text "
				  "FROM fleet_internal.endpoint_desired_patches($1, $2, $3)", 3, params, &retry);
	if (res == NULL)
	{
		after[0] = '\0';
		return false;
	}
	n = PQntuples(res);
	for (int i = 0; i < n; i++)
		send_to(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetlength(res, i, 2));
	down_flush();
	counters[PATCHES_SENT] += n;
	if (options.verbose && n > 0)
		say("sent %d desired-property patches", n);
	if (n == options.batch)
	{
		/* the pass goes on after the last of these (ids are at most 128 bytes) */
		for (int i = 0; i < n; i++)
			if (strcmp(PQgetvalue(res, i, 0), after) > 0)
				snprintf(after, sizeof(after), "%s", PQgetvalue(res, i, 0));
		PQclear(res);
		return true;
	}
	PQclear(res);
	if (after[0] != '\0')
	{
		after[0] = '\0';
		return true;
	}
	return false;
}

/*
 * One round of the broker connection, as mosquitto_loop() makes it, but
 * waiting on the database's connection too, so that a notification
 * (commands queued, desired properties moved) ends the wait at once rather
 * than at the end of the turn; *db_spoke says whether it did.
 */
static int
mqtt_round(int timeout_ms, bool *db_spoke)
{
	struct pollfd fds[2];
	int			n = 1;
	int			rc;

	*db_spoke = false;
	fds[0].fd = mosquitto_socket(mqtt);
	if (fds[0].fd < 0)
		return MOSQ_ERR_NO_CONN;
	fds[0].events = POLLIN | (mosquitto_want_write(mqtt) ? POLLOUT : 0);
	fds[0].revents = 0;
	if (db != NULL && PQstatus(db) == CONNECTION_OK && PQsocket(db) >= 0)
	{
		fds[1].fd = PQsocket(db);
		fds[1].events = POLLIN;
		fds[1].revents = 0;
		n = 2;
	}
	if (poll(fds, n, timeout_ms) < 0)
		return errno == EINTR ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ERRNO;
	*db_spoke = n == 2 && (fds[1].revents & POLLIN);
	if (fds[0].revents & (POLLIN | POLLERR | POLLHUP))
	{
		rc = mosquitto_loop_read(mqtt, 1);
		if (rc != MOSQ_ERR_SUCCESS)
			return rc;
	}
	if (fds[0].revents & POLLOUT)
	{
		rc = mosquitto_loop_write(mqtt, 1);
		if (rc != MOSQ_ERR_SUCCESS)
			return rc;
	}
	return mosquitto_loop_misc(mqtt);
}

/* ---------------------------------------------------------------------
 * Main */

static void
usage(void)
{
	printf("fleet-bridge serves pg_fleet's MQTT device endpoint: it links the broker's\n"
		   "fleet_mqtt plugin to the database.\n\n"
		   "Usage:\n  fleet-bridge [OPTION]...\n\n"
		   "Options:\n"
		   "  -d, --dbname=CONNINFO       the database (libpq conninfo or URI; PG* variables apply)\n"
		   "  -g, --gateway=NAME          the gateway name its devices and claims carry (default mqtt:HOSTNAME)\n"
		   "  -s, --mqtt-socket=PATH      the broker's unix-socket listener\n"
		   "  -H, --mqtt-host=HOST        or its host ...\n"
		   "  -p, --mqtt-port=PORT        ... and port (plain MQTT)\n"
		   "  -i, --client-id=ID          the bridge's client id (default fleet-bridge)\n"
		   "  -P, --password-file=FILE    the file holding the bridge's password\n"
		   "      --hub=HOST              the host name provisioning assigns devices to\n"
		   "  -t, --turn=MS               the length of a turn (default 20)\n"
		   "  -b, --batch=N               commands and patches per call (default 1000)\n"
		   "      --directory-poll=MS     how often to look for device and key changes (default 1000)\n"
		   "  -v, --verbose               say what each turn does\n"
		   "  -V, --version               show the version\n"
		   "  -?, --help                  show this help\n");
}

static bool
read_password(const char *path)
{
	FILE	   *f = fopen(path, "r");
	size_t		n;

	if (f == NULL)
	{
		fprintf(stderr, "fleet-bridge: cannot read password file \"%s\": %s\n", path, strerror(errno));
		return false;
	}
	n = fread(options.password, 1, sizeof(options.password) - 1, f);
	fclose(f);
	options.password[n] = '\0';
	options.password[strcspn(options.password, "\r\n")] = '\0';
	return options.password[0] != '\0';
}

int
main(int argc, char **argv)
{
	static struct option long_options[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"gateway", required_argument, NULL, 'g'},
		{"mqtt-socket", required_argument, NULL, 's'},
		{"mqtt-host", required_argument, NULL, 'H'},
		{"mqtt-port", required_argument, NULL, 'p'},
		{"client-id", required_argument, NULL, 'i'},
		{"password-file", required_argument, NULL, 'P'},
		{"hub", required_argument, NULL, 1},
		{"turn", required_argument, NULL, 't'},
		{"batch", required_argument, NULL, 'b'},
		{"directory-poll", required_argument, NULL, 2},
		{"verbose", no_argument, NULL, 'v'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, '?'},
		{NULL, 0, NULL, 0}
	};
	static char default_gateway[160];
	char		host[128] = "localhost";
	int			c;
	double		last_poll = 0,
				last_report = 0;
	bool		commands_due = false,	/* commands or patches to look for now */
				patches_due = false,
				more = false;	/* either: the next turn reads only what arrived */
	int			rc;

	options.client_id = "fleet-bridge";
	options.turn_ms = 20;
	options.batch = 1000;
	options.directory_ms = 1000;
	gethostname(host, sizeof(host) - 1);
	snprintf(default_gateway, sizeof(default_gateway), "mqtt:%s", host);
	options.gateway = default_gateway;
	options.hub = host;
	while ((c = getopt_long(argc, argv, "d:g:s:H:p:i:P:t:b:vV?", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				options.conninfo = optarg;
				break;
			case 'g':
				options.gateway = optarg;
				break;
			case 's':
				options.mqtt_host = optarg;
				options.mqtt_port = 0;
				break;
			case 'H':
				options.mqtt_host = optarg;
				break;
			case 'p':
				options.mqtt_port = atoi(optarg);
				break;
			case 'i':
				options.client_id = optarg;
				break;
			case 'P':
				if (!read_password(optarg))
					return 1;
				break;
			case 1:
				options.hub = optarg;
				break;
			case 't':
				options.turn_ms = atoi(optarg);
				break;
			case 'b':
				options.batch = atoi(optarg);
				break;
			case 2:
				options.directory_ms = atoi(optarg);
				break;
			case 'v':
				options.verbose = true;
				break;
			case 'V':
				printf("fleet-bridge (pg_fleet) %s\n", FLEET_BRIDGE_VERSION);
				return 0;
			default:
				usage();
				return c == '?' && optopt == 0 ? 0 : 1;
		}
	}
	if (options.mqtt_host == NULL || options.password[0] == '\0')
	{
		fprintf(stderr, "fleet-bridge: --mqtt-socket (or --mqtt-host and --mqtt-port) and --password-file are required\n");
		return 1;
	}
	if (options.turn_ms < 1 || options.batch < 1 || options.directory_ms < 1)
	{
		fprintf(stderr, "fleet-bridge: --turn, --batch and --directory-poll must be positive\n");
		return 1;
	}

	signal(SIGINT, handle_stop);
	signal(SIGTERM, handle_stop);
	signal(SIGPIPE, SIG_IGN);
	mosquitto_lib_init();
	/* a persistent session: what the plugin sends while it is away waits */
	mqtt = mosquitto_new(options.client_id, false, NULL);
	if (mqtt == NULL)
	{
		fprintf(stderr, "fleet-bridge: cannot make an MQTT client\n");
		return 1;
	}
	mosquitto_username_pw_set(mqtt, options.client_id, options.password);
	mosquitto_connect_callback_set(mqtt, on_connect);
	mosquitto_disconnect_callback_set(mqtt, on_disconnect);
	mosquitto_message_callback_set(mqtt, on_message);
	mosquitto_reconnect_delay_set(mqtt, 1, 10, true);
	rc = mosquitto_connect(mqtt, options.mqtt_host, options.mqtt_port, 30);
	if (rc != MOSQ_ERR_SUCCESS)
		say("cannot connect to the broker at %s: %s; trying again", options.mqtt_host, mosquitto_strerror(rc));

	while (!stop_requested)
	{
		double		turn_start = now_ms();

		/*
		 * Collect what the devices sent during the turn; when work waits,
		 * only what has already arrived (a call reads a packet or so: read
		 * until a call brings nothing).
		 */
		for (;;)
		{
			long		events_before = events_received;
			bool		db_spoke;

			rc = mqtt_round(more ? 0 : options.turn_ms, &db_spoke);
			/* the database announced work: the turn ends with what arrived */
			more |= db_spoke;
			if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_ERRNO)
			{
				mqtt_connected = false;
				sleep(1);
				mosquitto_reconnect(mqtt);
				break;
			}
			if (stop_requested || now_ms() - turn_start >= options.turn_ms)
				break;
			if (more && events_received == events_before)
				break;
		}
		if (!mqtt_connected || !db_ready())
			continue;
		if (mqtt_fresh && start_over())
			mqtt_fresh = false;
		else
			check_directory();
		/* a device that connected may have commands or a patch waiting */
		if (turn.connections.rows > 0)
			commands_due = patches_due = true;
		serve_turn();
		down_flush();

		/*
		 * Commands and patches: at once when the database announced some,
		 * again while a batch comes back full, and every second.
		 */
		db_announced_work(&commands_due, &patches_due);
		if (now_ms() - last_poll >= 1000)
		{
			commands_due = patches_due = true;
			last_poll = now_ms();
		}
		if (commands_due)
			commands_due = send_commands();
		if (patches_due)
			patches_due = send_patches();
		more = commands_due || patches_due;
		if (options.verbose && now_ms() - last_report >= 10000)
		{
			say("so far: %ld methods sent, %ld answers taken, %ld patches sent, %ld twins served, %ld reports, "
				"%ld registrations, %ld telemetry messages, %ld refusals",
				counters[SENT_METHODS], counters[ANSWERS_TAKEN], counters[PATCHES_SENT], counters[TWINS_SERVED],
				counters[REPORTS_TAKEN], counters[REGISTRATIONS], counters[TELEMETRY_MESSAGES], counters[REFUSALS]);
			last_report = now_ms();
		}
	}
	say("stopping");
	mosquitto_disconnect(mqtt);
	mosquitto_destroy(mqtt);
	mosquitto_lib_cleanup();
	if (db)
		PQfinish(db);
	return 0;
}
