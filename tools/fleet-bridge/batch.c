/*
 * batch.c
 *		The bridge's rows of a turn, and their text-array form.
 */
#include "batch.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The length of the valid UTF-8 sequence at s (at most len bytes), or 0. */
static size_t
utf8_sequence(const unsigned char *s, size_t len)
{
	size_t		n;

	if (s[0] < 0x80)
		return 1;
	else if ((s[0] & 0xE0) == 0xC0 && s[0] >= 0xC2)
		n = 2;
	else if ((s[0] & 0xF0) == 0xE0)
		n = 3;
	else if ((s[0] & 0xF8) == 0xF0 && s[0] <= 0xF4)
		n = 4;
	else
		return 0;
	if (n > len)
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	/* overlong three-byte forms and surrogates */
	if (n == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0)))
		return 0;
	if (n == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90)))
		return 0;
	return n;
}

static char *
clean_copy(const char *in, size_t len)
{
	/* a replaced byte takes three (U+FFFD) */
	char	   *out = malloc(len * 3 + 1);
	size_t		o = 0;

	if (out == NULL)
	{
		fprintf(stderr, "fleet-bridge: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < len;)
	{
		size_t		n = utf8_sequence((const unsigned char *) in + i, len - i);

		if (n == 0)
		{
			memcpy(out + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		}
		else
		{
			if (!(n == 1 && in[i] == '\0'))
			{
				memcpy(out + o, in + i, n);
				o += n;
			}
			i += n;
		}
	}
	out[o] = '\0';
	return out;
}

static void
grow(Batch *b)
{
	if (b->rows < b->capacity)
		return;
	b->capacity = b->capacity ? b->capacity * 2 : 256;
	b->cells = realloc(b->cells, sizeof(char *) * b->capacity * b->columns);
	if (b->cells == NULL)
	{
		fprintf(stderr, "fleet-bridge: out of memory\n");
		exit(1);
	}
}

void
batch_add(Batch *b, int columns,...)
{
	va_list		ap;

	b->columns = columns;
	grow(b);
	va_start(ap, columns);
	for (int c = 0; c < columns; c++)
	{
		const char *value = va_arg(ap, const char *);
		size_t		len = va_arg(ap, size_t);

		b->cells[b->rows * columns + c] = clean_copy(value, len);
	}
	va_end(ap);
	b->rows++;
}

const char *
batch_get(const Batch *b, long row, int column)
{
	if (row < 0 || row >= b->rows || column >= b->columns)
		return "";
	return b->cells[row * b->columns + column];
}

char *
batch_column_array(const Batch *b, int column)
{
	size_t		size = 3;
	char	   *out,
			   *p;

	for (long r = 0; r < b->rows; r++)
		size += strlen(batch_get(b, r, column)) * 2 + 3;
	out = malloc(size);
	if (out == NULL)
	{
		fprintf(stderr, "fleet-bridge: out of memory\n");
		exit(1);
	}
	p = out;
	*p++ = '{';
	for (long r = 0; r < b->rows; r++)
	{
		if (r > 0)
			*p++ = ',';
		*p++ = '"';
		for (const char *s = batch_get(b, r, column); *s; s++)
		{
			if (*s == '"' || *s == '\\')
				*p++ = '\\';
			*p++ = *s;
		}
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
	return out;
}

Batch
batch_project(const Batch *b, int n,...)
{
	Batch		out = {0};
	int			picked[8];
	va_list		ap;

	va_start(ap, n);
	for (int i = 0; i < n && i < 8; i++)
		picked[i] = va_arg(ap, int);
	va_end(ap);
	out.columns = n;
	for (long r = 0; r < b->rows; r++)
	{
		grow(&out);
		for (int i = 0; i < n; i++)
			out.cells[r * n + i] = strdup(batch_get(b, r, picked[i]));
		out.rows++;
	}
	return out;
}

Batch
batch_take(Batch *b)
{
	Batch		out = *b;

	memset(b, 0, sizeof(*b));
	b->columns = out.columns;
	return out;
}

void
batch_move_back(Batch *b, Batch *from)
{
	Batch		rest = batch_take(b);

	*b = *from;
	memset(from, 0, sizeof(*from));
	for (long r = 0; r < rest.rows; r++)
	{
		grow(b);
		memcpy(&b->cells[b->rows * b->columns], &rest.cells[r * rest.columns], sizeof(char *) * b->columns);
		b->rows++;
	}
	free(rest.cells);
}

void
batch_clear(Batch *b)
{
	for (long i = 0; i < b->rows * b->columns; i++)
		free(b->cells[i]);
	b->rows = 0;
}

void
batch_free(Batch *b)
{
	batch_clear(b);
	free(b->cells);
	free(b->text);
	memset(b, 0, sizeof(*b));
}

void
batch_append_line(Batch *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	for (;;)
	{
		size_t		room = b->text_capacity - b->text_len;

		va_start(ap, fmt);
		n = vsnprintf(b->text ? b->text + b->text_len : NULL, b->text ? room : 0, fmt, ap);
		va_end(ap);
		if (b->text && (size_t) n + 1 < room)
			break;
		b->text_capacity = b->text_capacity ? b->text_capacity * 2 : 65536;
		while (b->text_capacity < b->text_len + n + 2)
			b->text_capacity *= 2;
		b->text = realloc(b->text, b->text_capacity);
		if (b->text == NULL)
		{
			fprintf(stderr, "fleet-bridge: out of memory\n");
			exit(1);
		}
	}
	b->text_len += n;
	b->text[b->text_len++] = '\n';
	b->text[b->text_len] = '\0';
}
