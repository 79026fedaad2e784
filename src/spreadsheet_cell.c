/*-------------------------------------------------------------------------
 *
 * spreadsheet_cell.c
 *	  CSV cells a spreadsheet will not run as formulas.
 *
 * A value starting with =, +, -, @, a tab or a carriage return is a formula
 * to Excel, LibreOffice and Google Sheets; OWASP's advice against "CSV
 * injection" is to prefix it with a single quote.  In C because exports
 * call it for every cell of a million rows, and a SQL function with its
 * search_path pinned cannot be inlined.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(spreadsheet_cell);

/* fleet_internal.spreadsheet_cell(value text, neutralize boolean) returns text */
Datum
spreadsheet_cell(PG_FUNCTION_ARGS)
{
	text	   *value;
	const char *data;
	int			len;
	text	   *quoted;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	value = PG_GETARG_TEXT_PP(0);
	if (PG_ARGISNULL(1) || !PG_GETARG_BOOL(1))
		PG_RETURN_TEXT_P(value);
	data = VARDATA_ANY(value);
	len = VARSIZE_ANY_EXHDR(value);
	if (len == 0 || strchr("=+-@\t\r", data[0]) == NULL || data[0] == '\0')
		PG_RETURN_TEXT_P(value);

	quoted = (text *) palloc(VARHDRSZ + len + 1);
	SET_VARSIZE(quoted, VARHDRSZ + len + 1);
	VARDATA(quoted)[0] = '\'';
	memcpy(VARDATA(quoted) + 1, data, len);
	PG_RETURN_TEXT_P(quoted);
}
