/*-------------------------------------------------------------------------
 *
 * output.c
 *	  How fleetctl shows things: aligned tables, JSON, numbers, progress bars.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/logging.h"

#include "fleetctl.h"

/* type oids of numbers, right-aligned in tables */
#define INT8OID 20
#define INT2OID 21
#define INT4OID 23
#define FLOAT4OID 700
#define FLOAT8OID 701
#define NUMERICOID 1700

static bool
is_number_type(Oid type)
{
	return type == INT8OID || type == INT2OID || type == INT4OID ||
		type == FLOAT4OID || type == FLOAT8OID || type == NUMERICOID;
}

/* A result as an aligned table with a header, like psql's. */
void
print_table(const PGresult *result)
{
	int			n_fields = PQnfields(result);
	int			n_rows = PQntuples(result);
	int		   *width = calloc(n_fields, sizeof(int));

	for (int f = 0; f < n_fields; f++)
	{
		width[f] = strlen(PQfname(result, f));
		for (int r = 0; r < n_rows; r++)
			if (PQgetlength(result, r, f) > width[f])
				width[f] = PQgetlength(result, r, f);
	}
	for (int f = 0; f < n_fields; f++)
		printf("%s%-*s", f ? "  " : "", f == n_fields - 1 ? 0 : width[f], PQfname(result, f));
	putchar('\n');
	for (int f = 0; f < n_fields; f++)
	{
		printf("%s", f ? "  " : "");
		for (int i = 0; i < width[f]; i++)
			putchar('-');
	}
	putchar('\n');
	for (int r = 0; r < n_rows; r++)
	{
		for (int f = 0; f < n_fields; f++)
		{
			bool		last = f == n_fields - 1;

			if (is_number_type(PQftype(result, f)))
				printf("%s%*s", f ? "  " : "", width[f], PQgetvalue(result, r, f));
			else
				printf("%s%-*s", f ? "  " : "", last ? 0 : width[f], PQgetvalue(result, r, f));
		}
		putchar('\n');
	}
	printf("(%d %s)\n", n_rows, n_rows == 1 ? "row" : "rows");
	free(width);
}

/* A query's rows as one JSON array (the server builds it). */
void
print_query_json(PGconn *conn, const char *what, const char *sql, int nparams, const char *const *params)
{
	size_t		len = strlen(sql) + 128;
	char	   *wrapped = malloc(len);
	PGresult   *result;

	snprintf(wrapped, len, "SELECT coalesce(json_agg(r), '[]') FROM (%s) r", sql);
	result = query(conn, what, wrapped, nparams, params);
	printf("%s\n", PQgetvalue(result, 0, 0));
	PQclear(result);
	free(wrapped);
}

bool
stderr_is_terminal(void)
{
	return isatty(STDERR_FILENO);
}

const char *
human_bytes(double bytes, char *buf, size_t size)
{
	if (bytes >= 1e9)
		snprintf(buf, size, "%.1f GB", bytes / 1e9);
	else if (bytes >= 1e6)
		snprintf(buf, size, "%.1f MB", bytes / 1e6);
	else if (bytes >= 1e3)
		snprintf(buf, size, "%.1f kB", bytes / 1e3);
	else
		snprintf(buf, size, "%.0f B", bytes);
	return buf;
}

/* 1234567 as "1,234,567" */
const char *
human_count(long long n, char *buf, size_t size)
{
	char		digits[32];
	int			len = snprintf(digits, sizeof(digits), "%lld", n < 0 ? -n : n);
	size_t		out = 0;

	if (n < 0 && out + 1 < size)
		buf[out++] = '-';
	for (int i = 0; i < len && out + 2 < size; i++)
	{
		if (i > 0 && (len - i) % 3 == 0)
			buf[out++] = ',';
		buf[out++] = digits[i];
	}
	buf[out] = '\0';
	return buf;
}

double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "[#########-----------]" */
void
draw_bar(char *buf, size_t size, double fraction, int width)
{
	int			filled;
	size_t		out = 0;

	if (fraction < 0)
		fraction = 0;
	if (fraction > 1)
		fraction = 1;
	filled = (int) (fraction * width + 0.5);
	if ((size_t) width + 3 > size)
		width = size - 3;
	buf[out++] = '[';
	for (int i = 0; i < width; i++)
		buf[out++] = i < filled ? '#' : '-';
	buf[out++] = ']';
	buf[out] = '\0';
}
