/*-------------------------------------------------------------------------
 *
 * import.c
 *	  fleetctl import: an IoT Central device CSV streamed through
 *	  COPY fleet.device_import, with progress and the operation's summary.
 *
 * The header is checked here before anything is sent: IOTC_DEVICEID is
 * required, IOTC_DEVICENAME optional, in any order, after an optional
 * byte-order mark.  IoT Central's export columns are read too, so an
 * exported file imports as it is: the SAS keys are derived from the
 * enrollment group and need no import, and a row with an X509 thumbprint
 * stops the import (nothing is imported) because pg_fleet's import does not
 * take thumbprints yet.  Any other column is refused.
 *
 * Without export columns the file's bytes go to the server unchanged, so
 * the server's line numbers are the file's; with them, each record is sent
 * as its id and name, one line per record.  Either way, a record that is
 * "\." alone (COPY's end-of-data marker) is sent quoted: it is data.  The
 * server's count of rows is compared with the records sent, and the
 * outcome is read from the import's row in fleet.device_operations.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/logging.h"
#include "fe_utils/cancel.h"

#include "fleetctl.h"

static const char *import_usage =
"Usage: fleetctl import FILE [--template ID] [--organization ID] [--rejected FILE]\n"
"\n"
"Imports devices from an IoT Central CSV file: a header with IOTC_DEVICEID and,\n"
"optionally, IOTC_DEVICENAME, in any order (a file exported by fleetctl export\n"
"or IoT Central imports as it is).  Every row is imported or rejected with its\n"
"reason; a progress bar shows on a terminal, plain lines elsewhere.\n"
"\n"
"Options:\n"
"  --template ID       device template of the new devices\n"
"  --organization ID   organization of the new devices (default: root)\n"
"  --rejected FILE     write the rejected rows (line, IOTC_DEVICEID, error) as CSV\n"
"  -d CONNINFO, -q, --json   as for fleetctl\n"
"\n"
"Exit status 1 when rows were rejected; see fleetctl --help for the others.\n";

enum
{
	COL_ID, COL_NAME, COL_KEY_PRIMARY, COL_KEY_SECONDARY,
	COL_X509_PRIMARY, COL_X509_SECONDARY, N_KNOWN_COLUMNS
};
static const char *known_columns[N_KNOWN_COLUMNS] = {
	"IOTC_DEVICEID", "IOTC_DEVICENAME", "IOTC_SASKEY_PRIMARY", "IOTC_SASKEY_SECONDARY",
	"IOTC_X509THUMBPRINT_PRIMARY", "IOTC_X509THUMBPRINT_SECONDARY"
};

/* Where each known column is in the file (-1: absent). */
typedef struct Header
{
	int			position[N_KNOWN_COLUMNS];
	int			n_columns;
	bool		rewrite;		/* export columns present: send id and name only */
} Header;

static char *
trimmed(const char *s)
{
	size_t		len;
	char	   *copy;

	while (*s == ' ' || *s == '\t')
		s++;
	len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	copy = strndup(s, len);
	return copy;
}

static Header
check_header(CsvReader *csv, const char *path)
{
	Header		header;
	const char *hint = "A device CSV has IOTC_DEVICEID and, optionally, IOTC_DEVICENAME "
		"(IoT Central's export columns IOTC_SASKEY_* and IOTC_X509THUMBPRINT_* are read too).";

	for (int k = 0; k < N_KNOWN_COLUMNS; k++)
		header.position[k] = -1;
	if (!csv_next(csv))
		fail(EXIT_BAD_FILE, hint, "\"%s\" is empty: it has no header", path);
	header.n_columns = csv_field_count(csv);
	for (int i = 0; i < header.n_columns; i++)
	{
		char	   *name = trimmed(csv_field(csv, i));
		int			k;

		for (k = 0; k < N_KNOWN_COLUMNS; k++)
			if (strcasecmp(name, known_columns[k]) == 0)
				break;
		if (k == N_KNOWN_COLUMNS)
			fail(EXIT_BAD_FILE, hint, "\"%s\": unknown column \"%s\" in the header", path, name);
		if (header.position[k] >= 0)
			fail(EXIT_BAD_FILE, hint, "\"%s\": column %s appears twice in the header", path, known_columns[k]);
		header.position[k] = i;
		free(name);
	}
	if (header.position[COL_ID] < 0)
		fail(EXIT_BAD_FILE, hint, "\"%s\": the header has no IOTC_DEVICEID column", path);
	header.rewrite = header.n_columns > (header.position[COL_NAME] >= 0 ? 2 : 1);
	return header;
}

/*
 * A record's field at a header position, or "" when the column is absent
 * or the record is short (the server then rejects the row with its reason:
 * a record of the wrong length must not abort the whole COPY).
 */
static const char *
field_or_empty(const CsvReader *csv, int position)
{
	return position >= 0 && position < csv_field_count(csv) ? csv_field(csv, position) : "";
}

/* Appends a CSV field, quoted when it needs to be. */
static void
append_field(char **out, size_t *len, size_t *size, const char *value)
{
	/* (a leading backslash: "\." alone would end COPY's data) */
	bool		quote = strpbrk(value, ",\"\r\n") != NULL || value[0] == '\0' || value[0] == '\\';
	size_t		need = *len + strlen(value) * 2 + 4;

	if (need > *size)
	{
		while (*size < need)
			*size *= 2;
		*out = realloc(*out, *size);
	}
	if (quote && value[0] != '\0')
		(*out)[(*len)++] = '"';
	for (const char *p = value; *p; p++)
	{
		if (*p == '"')
			(*out)[(*len)++] = '"';
		(*out)[(*len)++] = *p;
	}
	if (quote && value[0] != '\0')
		(*out)[(*len)++] = '"';
}

/* Whether a record's bytes are "\." alone on its line: COPY's end of data. */
static bool
is_end_marker(const char *raw, size_t len)
{
	if (len < 2 || raw[0] != '\\' || raw[1] != '.')
		return false;
	for (size_t i = 2; i < len; i++)
		if (raw[i] != '\r' && raw[i] != '\n')
			return false;
	return true;
}

/* Progress: a bar redrawn on a terminal, a line per tenth elsewhere. */
typedef struct Progress
{
	const char *path;
	double		total_bytes;
	double		started;
	double		last_drawn;
	int			last_tenth;
	bool		terminal;
} Progress;

static void
show_progress(Progress *p, long long rows, long long bytes, bool final)
{
	double		now = now_seconds();
	double		elapsed = now - p->started;
	double		fraction = p->total_bytes > 0 ? bytes / p->total_bytes : 1;
	double		rate = elapsed > 0 ? rows / elapsed : 0;
	char		bar[64], r[32], b[32], t[32], rt[32];

	if (options.quiet)
		return;
	if (p->terminal)
	{
		double		left;

		if (!final && now - p->last_drawn < 0.1)
			return;
		p->last_drawn = now;
		left = fraction > 0 ? elapsed / fraction - elapsed : 0;
		draw_bar(bar, sizeof(bar), fraction, 30);
		fprintf(stderr, "\r%s %3.0f%%  %s rows  %s of %s  %s rows/s  %.0fs left ", bar, fraction * 100,
				human_count(rows, r, sizeof(r)), human_bytes(bytes, b, sizeof(b)),
				human_bytes(p->total_bytes, t, sizeof(t)), human_count((long long) rate, rt, sizeof(rt)),
				final ? 0 : left);
		if (final)
			fputc('\n', stderr);
		return;
	}
	if (!final && (int) (fraction * 10) <= p->last_tenth)
		return;
	p->last_tenth = (int) (fraction * 10);
	pg_log_info("import %s: %3.0f%%, %s rows, %s of %s, %s rows/s", p->path,
				fraction * 100, human_count(rows, r, sizeof(r)), human_bytes(bytes, b, sizeof(b)),
			human_bytes(p->total_bytes, t, sizeof(t)), human_count((long long) rate, rt, sizeof(rt)));
}

/* The import's operation id, read from fleet.last_device_operation(). */
static long long operation_id = 0;

/*
 * The server's notices go to stderr, unless --quiet; its summary of the
 * import is left out: fleetctl prints its own, from the row.
 */
static void
print_notice(void *arg, const PGresult *result)
{
	const char *message = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);

	if (message && strncmp(message, "device import ", 14) != 0 && !options.quiet)
		pg_log_info("%s", message);
}

static void
set_setting(PGconn *conn, const char *name, const char *value)
{
	const char *params[2] = {name, value};

	PQclear(query(conn, "cannot set the import's target",
				  "SELECT pg_catalog.set_config($1, $2, false)", 2, params));
}

static void
write_rejected(PGconn *conn, const char *path)
{
	char		sql[256];

	snprintf(sql, sizeof(sql),
			 "COPY (SELECT line, device_id AS \"IOTC_DEVICEID\", error FROM fleet.device_operation_errors"
			 " WHERE operation_id = %lld ORDER BY line) TO STDOUT WITH (FORMAT csv, HEADER)", operation_id);
	copy_out_to(conn, "cannot read the rejected rows", sql, open_output(path), path);
}

int
cmd_import(int argc, char **argv)
{
	const char *template_id = NULL;
	const char *organization = NULL;
	const char *rejected_path = NULL;
	const SubOption known[] = {
		{"--template", 't', &template_id},
		{"--organization", 0, &organization},
		{"--rejected", 0, &rejected_path},
		{NULL, 0, NULL}
	};
	int			n_positional;
	char	  **positional = parse_sub_options(argc, argv, known, import_usage, &n_positional);
	const char *path;
	FILE	   *file;
	struct stat st;
	CsvReader  *csv;
	Header		header;
	PGconn	   *conn;
	PGresult   *result;
	char		copy_sql[256];
	char	   *out;
	size_t		out_len = 0, out_size = 1 << 17;
	long long	rows = 0;
	long long	copied;
	Progress	progress = {0};
	const char *params[1];
	long long	n_rows, n_imported, n_rejected;
	char		c1[32], c2[32], c3[32];
	char		id[32];

	if (n_positional != 1)
		usage_error("import", n_positional ? "give one file" : "which file? give the CSV file to import");
	path = positional[0];
	file = fopen(path, "rb");
	if (file == NULL)
		fail(EXIT_BAD_FILE, "Check the path.", "cannot read \"%s\": %s", path, strerror(errno));
	if (fstat(fileno(file), &st) != 0 || !S_ISREG(st.st_mode))
		fail(EXIT_BAD_FILE, "Give a regular file.", "cannot read \"%s\": not a regular file", path);
	csv = csv_open(file);
	header = check_header(csv, path);

	conn = fleet_connect();
	PQsetNoticeReceiver(conn, print_notice, NULL);
	if (template_id)
		set_setting(conn, "fleet.import_template", template_id);
	if (organization)
		set_setting(conn, "fleet.import_organization", organization);

	if (header.rewrite)
		snprintf(copy_sql, sizeof(copy_sql),
				 "COPY fleet.device_import (\"IOTC_DEVICEID\", \"IOTC_DEVICENAME\") FROM STDIN WITH (FORMAT csv, HEADER)");
	else if (header.position[COL_NAME] < 0)
		snprintf(copy_sql, sizeof(copy_sql),
				 "COPY fleet.device_import (\"IOTC_DEVICEID\") FROM STDIN WITH (FORMAT csv, HEADER)");
	else
		snprintf(copy_sql, sizeof(copy_sql),
				 "COPY fleet.device_import (\"%s\", \"%s\") FROM STDIN WITH (FORMAT csv, HEADER)",
				 known_columns[header.position[COL_ID] == 0 ? COL_ID : COL_NAME],
				 known_columns[header.position[COL_ID] == 0 ? COL_NAME : COL_ID]);
	result = PQexec(conn, copy_sql);
	if (PQresultStatus(result) != PGRES_COPY_IN)
		fail_result(result, "cannot start the import");
	PQclear(result);

	progress.path = path;
	progress.total_bytes = st.st_size;
	progress.started = now_seconds();
	progress.terminal = stderr_is_terminal();
	progress.last_tenth = 0;

	out = malloc(out_size);
	if (header.rewrite)
	{
		memcpy(out, "IOTC_DEVICEID,IOTC_DEVICENAME\n", 30);
		out_len = 30;
	}
	else
	{
		size_t		len;
		const char *raw = csv_raw(csv, &len);

		memcpy(out, raw, len);
		out_len = len;
	}

	while (csv_next(csv))
	{
		if (header.rewrite)
		{
			int			x509[2] = {header.position[COL_X509_PRIMARY], header.position[COL_X509_SECONDARY]};
			const char *name;

			for (int i = 0; i < 2; i++)
				if (field_or_empty(csv, x509[i])[0] != '\0')
				{
					PQputCopyEnd(conn, "the file has X509 thumbprints");
					PQclear(PQgetResult(conn));
					fail(EXIT_BAD_FILE,
						 "Remove the IOTC_X509THUMBPRINT_* values, or register X509 devices with fleet.create_device().",
						 "\"%s\" line %lld: device \"%s\" has an X509 thumbprint, which pg_fleet's import does not take yet; nothing was imported",
						 path, csv_line(csv), field_or_empty(csv, header.position[COL_ID]));
				}
			append_field(&out, &out_len, &out_size, field_or_empty(csv, header.position[COL_ID]));
			out[out_len++] = ',';
			name = field_or_empty(csv, header.position[COL_NAME]);
			if (name && name[0])
				append_field(&out, &out_len, &out_size, name);
			out[out_len++] = '\n';
		}
		else
		{
			/* as it is: the file's own bytes, so line numbers are the file's */
			size_t		len;
			const char *raw = csv_raw(csv, &len);

			if (out_len + len + 3 > out_size)
			{
				while (out_size < out_len + len + 3)
					out_size *= 2;
				out = realloc(out, out_size);
			}
			if (is_end_marker(raw, len))
			{
				/* the same line, quoted: a value, not the end of the data */
				memcpy(out + out_len, "\"\\.\"", 4);
				memcpy(out + out_len + 4, raw + 2, len - 2);
				out_len += len + 2;
			}
			else
			{
				memcpy(out + out_len, raw, len);
				out_len += len;
			}
		}
		rows++;
		if (CancelRequested)
		{
			/* Ctrl-C while sending: the server rolls the COPY back */
			PQputCopyEnd(conn, "canceled by the user (Ctrl-C)");
			PQclear(PQgetResult(conn));
			fail(EXIT_INTERRUPTED, NULL, "import of \"%s\" interrupted; nothing was imported", path);
		}
		if (out_len >= 65536)
		{
			if (PQputCopyData(conn, out, (int) out_len) != 1)
				fail(EXIT_CONNECT, NULL, "lost the server while sending \"%s\": %s", path, PQerrorMessage(conn));
			out_len = 0;
			show_progress(&progress, rows, csv_bytes_read(csv), false);
		}
	}
	if (ferror(file))
		fail(EXIT_BAD_FILE, NULL, "cannot read \"%s\": %s", path, strerror(errno));
	if ((out_len > 0 && PQputCopyData(conn, out, (int) out_len) != 1) || PQputCopyEnd(conn, NULL) != 1)
		fail(EXIT_CONNECT, NULL, "lost the server while sending \"%s\": %s", path, PQerrorMessage(conn));
	show_progress(&progress, rows, csv_bytes_read(csv), true);
	result = PQgetResult(conn);
	if (PQresultStatus(result) != PGRES_COMMAND_OK)
	{
		if (PQstatus(conn) == CONNECTION_BAD)
			fail(EXIT_CONNECT, NULL, "lost the server while importing \"%s\": %s", path, PQerrorMessage(conn));
		fail_result(result, "the import failed, and imported nothing");
	}
	copied = atoll(PQcmdTuples(result));
	PQclear(result);
	csv_close(csv);
	fclose(file);

	/* the outcome is the row of this session's import */
	result = query(conn, "cannot read the import's outcome",
				   "SELECT id, rows, imported, rejected FROM fleet.device_operations"
				   " WHERE id = fleet.last_device_operation()", 0, NULL);
	if (PQntuples(result) != 1)
		fail(EXIT_REFUSED, NULL, "the import's outcome is not visible to this role");
	operation_id = atoll(PQgetvalue(result, 0, 0));
	n_rows = atoll(PQgetvalue(result, 0, 1));
	n_imported = atoll(PQgetvalue(result, 0, 2));
	n_rejected = atoll(PQgetvalue(result, 0, 3));
	PQclear(result);
	snprintf(id, sizeof(id), "%lld", operation_id);
	params[0] = id;
	/* every record of the file reached the server as a row, and was accounted for */
	if (copied != rows || n_rows != rows || n_imported + n_rejected != n_rows)
		fail(EXIT_REFUSED, "Report this, with the file and fleetctl's and the server's versions.",
			 "import %lld of \"%s\": %lld records sent, but the server took %lld and accounted for %lld (%lld imported, %lld rejected)",
			 operation_id, path, rows, copied, n_rows, n_imported, n_rejected);
	if (options.json)
		print_query_json(conn, "cannot read the import's outcome",
						 "SELECT id, status, template_id, organization_id, rows, imported, rejected,"
						 " started_at, finished_at FROM fleet.device_operations WHERE id = $1", 1, params);
	else
		printf("import %lld: %s rows, %s devices imported, %s rejected\n", operation_id,
			   human_count(n_rows, c1, sizeof(c1)), human_count(n_imported, c2, sizeof(c2)),
			   human_count(n_rejected, c3, sizeof(c3)));

	if (n_rejected > 0 && rejected_path)
		write_rejected(conn, rejected_path);
	else if (n_rejected > 0 && !options.quiet)
	{
		/* the first few on stderr, so a terminal user sees why */
		result = query(conn, "cannot read the rejected rows",
					   "SELECT line, coalesce(device_id, ''), error FROM fleet.device_operation_errors"
					   " WHERE operation_id = $1 ORDER BY line LIMIT 5", 1, params);
		for (int i = 0; i < PQntuples(result); i++)
			pg_log_info("line %s, \"%s\": %s", PQgetvalue(result, i, 0),
						PQgetvalue(result, i, 1), PQgetvalue(result, i, 2));
		if (n_rejected > PQntuples(result))
			pg_log_info("... and %lld more; --rejected FILE writes them all",
						n_rejected - PQntuples(result));
		PQclear(result);
	}
	PQfinish(conn);
	return n_rejected > 0 ? EXIT_INCOMPLETE : EXIT_DONE;
}
