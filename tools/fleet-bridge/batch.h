/*
 * batch.h
 *		Rows of text the bridge gathers during a turn, passed to PostgreSQL
 *		as one text array per column.
 */
#ifndef BATCH_H
#define BATCH_H

#include <stddef.h>

typedef struct Batch
{
	int			columns;
	long		rows;
	long		capacity;
	char	  **cells;			/* rows * columns, each NUL-terminated */
	/* a text being built line by line (batch_append_line) */
	char	   *text;
	size_t		text_len;
	size_t		text_capacity;
} Batch;

/* Adds a row of "columns" cells, each given as (const char *, size_t);
 * NUL bytes are dropped and invalid UTF-8 replaced, so one device's bytes
 * cannot make the batch's statement fail. */
extern void batch_add(Batch *b, int columns,...);
extern const char *batch_get(const Batch *b, long row, int column);
/* The column as a PostgreSQL array literal; the caller frees it. */
extern char *batch_column_array(const Batch *b, int column);
/* A copy of some columns, in the order given. */
extern Batch batch_project(const Batch *b, int n,...);
/* Moves the rows out of b, leaving it empty. */
extern Batch batch_take(Batch *b);
/* Puts the rows of from (taken earlier) back before those of b. */
extern void batch_move_back(Batch *b, Batch *from);
extern void batch_clear(Batch *b);
extern void batch_free(Batch *b);
extern void batch_append_line(Batch *b, const char *fmt,...) __attribute__((format(printf, 2, 3)));

#endif
