/*-------------------------------------------------------------------------
 *
 * fleetctl.h
 *	  Shared declarations of fleetctl, pg_fleet's command-line client.
 *
 * One file per concern: main.c (command line, errors), connection.c (the
 * connection, as psql makes it), csv.c (reading device CSV files), output.c
 * (tables, JSON, progress), import.c, export.c, jobs.c, schedules.c (the
 * commands).  Built with PGXS and PostgreSQL's front-end utilities
 * (tools/fleetctl/Makefile): postgres_fe.h comes first in every file.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FLEETCTL_H
#define FLEETCTL_H

#include "libpq-fe.h"

#define FLEETCTL_VERSION "0.2"

/* Exit statuses: each failure kind has its own, for scripts. */
#define EXIT_DONE			0	/* it worked */
#define EXIT_INCOMPLETE		1	/* it ran, but a job failed or was cancelled, or rows were rejected */
#define EXIT_USAGE			2	/* bad command line */
#define EXIT_CONNECT		3	/* the server could not be reached */
#define EXIT_NO_EXTENSION	4	/* pg_fleet is not installed in that database */
#define EXIT_PERMISSION		5	/* the role may not do that */
#define EXIT_BAD_FILE		6	/* a file is missing, unreadable or malformed */
#define EXIT_REFUSED		7	/* the server refused the request (it says why) */
#define EXIT_INTERRUPTED	130	/* Ctrl-C: 128 + SIGINT, as shells report it */

/* Options every sub-command takes. */
typedef struct GlobalOptions
{
	const char *conninfo;		/* -d: database name, conninfo string or URI */
	bool		json;			/* --json: machine-readable output */
	bool		quiet;			/* -q: no progress, no notices */
	bool		spreadsheet_safe;	/* --spreadsheet-safe: CSV cells no spreadsheet runs */
} GlobalOptions;

extern GlobalOptions options;
extern const char *progname;

/* connection.c */
extern PGconn *fleet_connect(void);
extern void parse_connection_option(int option, const char *value);

/* main.c */
extern void fail(int status, const char *hint, const char *fmt,...)
			pg_attribute_printf(3, 4) pg_attribute_noreturn();
extern void fail_result(PGresult *result, const char *what) pg_attribute_noreturn();
extern PGresult *query(PGconn *conn, const char *what, const char *sql,
					   int nparams, const char *const *params);
extern void usage_error(const char *command, const char *fmt,...)
			pg_attribute_printf(2, 3) pg_attribute_noreturn();
extern void exit_if_interrupted(void);
extern char *read_whole_file(const char *path, size_t limit);
extern char *sql_literal(PGconn *conn, const char *value);
extern FILE *open_output(const char *path);
extern void copy_out_to(PGconn *conn, const char *what, const char *sql, FILE *out,
						const char *label);

/* A command's option parsing: its own options, each with a value, plus
 * the connection options, -q, --json and --spreadsheet-safe. */
typedef struct SubOption
{
	const char *name;			/* "--template" */
	char		short_name;		/* 'o', or 0 */
	const char **value;			/* where the value goes */
} SubOption;
extern char **parse_sub_options(int argc, char **argv, const SubOption *known,
								const char *usage, int *n_positional);

/* output.c */
extern void print_table(const PGresult *result);
extern void print_query_json(PGconn *conn, const char *what, const char *sql,
							 int nparams, const char *const *params);
extern bool stderr_is_terminal(void);
extern const char *human_bytes(double bytes, char *buf, size_t size);
extern const char *human_count(long long n, char *buf, size_t size);
extern double now_seconds(void);
extern void draw_bar(char *buf, size_t size, double fraction, int width);

/* csv.c: one CSV record at a time, with its raw bytes */
typedef struct CsvReader CsvReader;
extern CsvReader *csv_open(FILE *file);
extern int	csv_next(CsvReader *reader);	/* 1: a record, 0: end of file */
extern int	csv_field_count(const CsvReader *reader);
extern const char *csv_field(const CsvReader *reader, int i);
extern const char *csv_raw(const CsvReader *reader, size_t *len);
extern long long csv_bytes_read(const CsvReader *reader);
extern long long csv_line(const CsvReader *reader);	/* file line the record starts on */
extern bool csv_had_bom(const CsvReader *reader);
extern void csv_close(CsvReader *reader);

/* the sub-commands */
extern int	cmd_import(int argc, char **argv);
extern int	cmd_export(int argc, char **argv);
extern int	cmd_job(int argc, char **argv);
extern int	cmd_jobs(int argc, char **argv);
extern int	cmd_schedule(int argc, char **argv);

#endif							/* FLEETCTL_H */
