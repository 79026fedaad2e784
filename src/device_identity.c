/*-------------------------------------------------------------------------
 *
 * device_identity.c
 *	  What makes a device id and name acceptable, in one place: IoT
 *	  Central's rules (id: letters, digits and "-", no spaces, at most 128
 *	  characters; name: at most 148 characters).
 *
 * Import checks every row of a file with it and fleet.devices checks every
 * insert with it, so it is a byte loop in C rather than a regular
 * expression: a regex costs about a second per million rows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#define DEVICE_ID_MAX_CHARS		128
#define DEVICE_NAME_MAX_CHARS	148

PG_FUNCTION_INFO_V1(device_identity_problem);

static inline bool
is_device_id_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		(c >= '0' && c <= '9') || c == '-';
}

/* A character for a message: a space is easier to read spelled out. */
static char *
describe_char(const char *p)
{
	int			len = pg_mblen(p);

	if (*p == ' ')
		return pstrdup("a space");
	return psprintf("\"%.*s\"", len, p);
}

/*
 * fleet.device_identity_problem(device_id text, display_name text) returns
 * NULL when both are acceptable, else a sentence saying what is wrong.
 */
Datum
device_identity_problem(PG_FUNCTION_ARGS)
{
	text	   *id;
	const char *p;
	int			len;

	if (PG_ARGISNULL(0))
		PG_RETURN_TEXT_P(cstring_to_text("device ID is empty"));

	id = PG_GETARG_TEXT_PP(0);
	p = VARDATA_ANY(id);
	len = VARSIZE_ANY_EXHDR(id);

	if (len == 0)
		PG_RETURN_TEXT_P(cstring_to_text("device ID is empty"));

	for (int i = 0; i < len; i++)
	{
		if (!is_device_id_char((unsigned char) p[i]))
		{
			int			nchars = pg_mbstrlen_with_len(p, len);

			if (nchars > DEVICE_ID_MAX_CHARS)
				break;			/* report the length first */
			PG_RETURN_TEXT_P(cstring_to_text(
				psprintf("device ID \"%.*s\" contains %s; use only letters, digits and \"-\"",
						 len, p, describe_char(p + i))));
		}
	}

	if (len > DEVICE_ID_MAX_CHARS)
	{
		int			nchars = pg_mbstrlen_with_len(p, len);

		if (nchars > DEVICE_ID_MAX_CHARS)
		{
			int			shown = pg_mbcliplen(p, len, 40);

			PG_RETURN_TEXT_P(cstring_to_text(
				psprintf("device ID \"%.*s...\" is %d characters long; the limit is %d",
						 shown, p, nchars, DEVICE_ID_MAX_CHARS)));
		}
	}

	if (!PG_ARGISNULL(1))
	{
		text	   *name = PG_GETARG_TEXT_PP(1);
		int			name_len = VARSIZE_ANY_EXHDR(name);

		/* characters are at least one byte: short names need no counting */
		if (name_len > DEVICE_NAME_MAX_CHARS)
		{
			int			nchars = pg_mbstrlen_with_len(VARDATA_ANY(name), name_len);

			if (nchars > DEVICE_NAME_MAX_CHARS)
				PG_RETURN_TEXT_P(cstring_to_text(
					psprintf("device name of \"%.*s\" is %d characters long; the limit is %d",
							 len, p, nchars, DEVICE_NAME_MAX_CHARS)));
		}
	}

	PG_RETURN_NULL();
}
