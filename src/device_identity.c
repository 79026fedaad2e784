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

#include "pg_fleet.h"

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
 * Whether a device id and name are acceptable.  Allocates nothing: import
 * calls it for every row.
 */
bool
device_identity_valid(const char *id, int len, const char *name, int name_len)
{
	if (id == NULL || len == 0 || len > DEVICE_ID_MAX_CHARS)
		return false;			/* valid ids are ASCII: bytes are characters */
	for (int i = 0; i < len; i++)
		if (!is_device_id_char((unsigned char) id[i]))
			return false;
	return name == NULL || name_len <= DEVICE_NAME_MAX_CHARS ||
		pg_mbstrlen_with_len(name, name_len) <= DEVICE_NAME_MAX_CHARS;
}

/*
 * What is wrong with a device id and name, or NULL when nothing is.  name may
 * be NULL (the id is then the name).  The result is palloc'd.
 */
char *
device_identity_check(const char *id, int len, const char *name, int name_len)
{
	if (device_identity_valid(id, len, name, name_len))
		return NULL;
	if (id == NULL || len == 0)
		return pstrdup("device ID is empty");

	for (int i = 0; i < len; i++)
	{
		if (!is_device_id_char((unsigned char) id[i]))
		{
			if (pg_mbstrlen_with_len(id, len) > DEVICE_ID_MAX_CHARS)
				break;			/* report the length first */
			return psprintf("device ID \"%.*s\" contains %s; use only letters, digits and \"-\"",
							len, id, describe_char(id + i));
		}
	}

	if (len > DEVICE_ID_MAX_CHARS)
	{
		int			nchars = pg_mbstrlen_with_len(id, len);

		if (nchars > DEVICE_ID_MAX_CHARS)
			return psprintf("device ID \"%.*s...\" is %d characters long; the limit is %d",
							pg_mbcliplen(id, len, 40), id, nchars, DEVICE_ID_MAX_CHARS);
	}

	/* characters are at least one byte: short names need no counting */
	if (name != NULL && name_len > DEVICE_NAME_MAX_CHARS)
	{
		int			nchars = pg_mbstrlen_with_len(name, name_len);

		if (nchars > DEVICE_NAME_MAX_CHARS)
			return psprintf("device name of \"%.*s\" is %d characters long; the limit is %d",
							len, id, nchars, DEVICE_NAME_MAX_CHARS);
	}

	elog(ERROR, "device identity check found no problem in an invalid id");
	return NULL;				/* keep compiler quiet */
}

/*
 * fleet_internal.device_identity_problem(device_id text, display_name text) returns
 * NULL when both are acceptable, else a sentence saying what is wrong.
 */
Datum
device_identity_problem(PG_FUNCTION_ARGS)
{
	text	   *id = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	text	   *name = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	char	   *problem;

	problem = device_identity_check(id ? VARDATA_ANY(id) : NULL,
									id ? VARSIZE_ANY_EXHDR(id) : 0,
									name ? VARDATA_ANY(name) : NULL,
									name ? VARSIZE_ANY_EXHDR(name) : 0);
	if (problem == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(problem));
}
