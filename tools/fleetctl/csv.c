/*-------------------------------------------------------------------------
 *
 * csv.c
 *	  Reads a CSV file one record at a time (RFC 4180: quoted fields, ""
 *	  for a quote, CRLF or LF line ends, newlines inside quotes), keeping
 *	  each record's raw bytes too, so a file can be passed on unchanged.
 *	  A UTF-8 byte-order mark at the start is skipped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdlib.h>
#include <string.h>

#include "common/logging.h"

#include "fleetctl.h"

struct CsvReader
{
	FILE	   *file;
	unsigned char input[65536];
	size_t		input_len;
	size_t		input_pos;
	long long	bytes_read;		/* consumed from the file, BOM included */
	long long	line;			/* current line of the file, from 1 */
	long long	record_line;	/* line the last record started on */
	bool		had_bom;

	char	   *text;			/* the record's fields, each NUL-terminated */
	size_t		text_len;
	size_t		text_size;
	size_t	   *starts;			/* offset of each field in text */
	int			n_fields;
	size_t		fields_size;

	char	   *raw;			/* the record as it was in the file */
	size_t		raw_len;
	size_t		raw_size;
};

static void *
grow(void *buffer, size_t *size, size_t needed, size_t item)
{
	if (needed <= *size)
		return buffer;
	while (*size < needed)
		*size = *size ? *size * 2 : 256;
	buffer = realloc(buffer, *size * item);
	if (buffer == NULL)
		fail(EXIT_BAD_FILE, NULL, "out of memory reading a CSV record");
	return buffer;
}

/* The next byte, or -1 at the end of the file. */
static int
next_byte(CsvReader *r)
{
	int			c;

	if (r->input_pos == r->input_len)
	{
		r->input_len = fread(r->input, 1, sizeof(r->input), r->file);
		r->input_pos = 0;
		if (r->input_len == 0)
			return -1;
	}
	c = r->input[r->input_pos++];
	r->bytes_read++;
	r->raw = grow(r->raw, &r->raw_size, r->raw_len + 1, 1);
	r->raw[r->raw_len++] = (char) c;
	if (c == '\n')
		r->line++;
	return c;
}

static int
peek_byte(CsvReader *r)
{
	if (r->input_pos == r->input_len)
	{
		r->input_len = fread(r->input, 1, sizeof(r->input), r->file);
		r->input_pos = 0;
		if (r->input_len == 0)
			return -1;
	}
	return r->input[r->input_pos];
}

static void
add_char(CsvReader *r, char c)
{
	r->text = grow(r->text, &r->text_size, r->text_len + 1, 1);
	r->text[r->text_len++] = c;
}

static void
end_field(CsvReader *r)
{
	add_char(r, '\0');
	r->starts = grow(r->starts, &r->fields_size, (size_t) r->n_fields + 2, sizeof(size_t));
	r->n_fields++;
	/* the next field starts here */
	r->starts[r->n_fields] = r->text_len;
}

CsvReader *
csv_open(FILE *file)
{
	CsvReader  *r = calloc(1, sizeof(CsvReader));

	r->file = file;
	r->line = 1;
	/* peek_byte() filled the buffer: the BOM, if any, is all in it */
	if (peek_byte(r) == 0xEF)
	{
		if (r->input_len >= 3 && r->input[1] == 0xBB && r->input[2] == 0xBF)
		{
			r->input_pos = 3;
			r->bytes_read = 3;
			r->had_bom = true;
		}
	}
	return r;
}

int
csv_next(CsvReader *r)
{
	int			c;
	bool		quoted = false;
	bool		at_field_start = true;

	r->text_len = 0;
	r->n_fields = 0;
	r->raw_len = 0;
	r->starts = grow(r->starts, &r->fields_size, 2, sizeof(size_t));
	r->starts[0] = 0;
	r->record_line = r->line;

	c = next_byte(r);
	if (c < 0)
		return 0;
	for (;; c = next_byte(r))
	{
		if (quoted)
		{
			if (c < 0)
			{
				/* an unterminated quote runs to the end: the server reports it */
				end_field(r);
				return 1;
			}
			if (c == '"')
			{
				if (peek_byte(r) == '"')
				{
					next_byte(r);
					add_char(r, '"');
				}
				else
					quoted = false;
			}
			else
				add_char(r, (char) c);
			continue;
		}
		if (c < 0 || c == '\n')
		{
			end_field(r);
			return 1;
		}
		if (c == '\r')
		{
			if (peek_byte(r) == '\n')
				next_byte(r);
			end_field(r);
			return 1;
		}
		if (c == ',')
		{
			end_field(r);
			at_field_start = true;
			continue;
		}
		if (c == '"' && at_field_start)
		{
			quoted = true;
			at_field_start = false;
			continue;
		}
		at_field_start = false;
		add_char(r, (char) c);
	}
}

int
csv_field_count(const CsvReader *r)
{
	return r->n_fields;
}

const char *
csv_field(const CsvReader *r, int i)
{
	return r->text + r->starts[i];
}

const char *
csv_raw(const CsvReader *r, size_t *len)
{
	*len = r->raw_len;
	return r->raw;
}

long long
csv_bytes_read(const CsvReader *r)
{
	return r->bytes_read;
}

long long
csv_line(const CsvReader *r)
{
	return r->record_line;
}

bool
csv_had_bom(const CsvReader *r)
{
	return r->had_bom;
}

void
csv_close(CsvReader *r)
{
	free(r->text);
	free(r->starts);
	free(r->raw);
	free(r);
}
