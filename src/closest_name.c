/*-------------------------------------------------------------------------
 *
 * closest_name.c
 *	  The known name a misspelled one most likely meant.
 *
 * A JSON body with a misspelled key ("cancelationThreshold") must be
 * refused, and the refusal is most useful when it says which key was
 * meant, as PostgreSQL's own "Perhaps you meant to reference the column"
 * hint does.  This uses the same Levenshtein distance
 * (varstr_levenshtein), compared without regard to case, and answers only
 * when the distance is small for the name's length.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/varlena.h"

PG_FUNCTION_INFO_V1(closest_name);

/*
 * fleet_internal.closest_name(name text, candidates text[]) returns text:
 * the candidate nearest to name, or NULL when none is near enough (at most
 * a third of the name's length, and at least 2, edits away).
 */
Datum
closest_name(PG_FUNCTION_ARGS)
{
	char	   *name;
	int			name_len;
	ArrayType  *candidates;
	Datum	   *elements;
	bool	   *nulls;
	int			count;
	int			best = -1;
	int			best_distance;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	name = str_tolower(name, strlen(name), DEFAULT_COLLATION_OID);
	name_len = strlen(name);
	best_distance = Max(2, name_len / 3) + 1;

	candidates = PG_GETARG_ARRAYTYPE_P(1);
	deconstruct_array(candidates, TEXTOID, -1, false, TYPALIGN_INT,
					  &elements, &nulls, &count);
	for (int i = 0; i < count; i++)
	{
		char	   *candidate;
		int			distance;

		if (nulls[i])
			continue;
		candidate = TextDatumGetCString(elements[i]);
		candidate = str_tolower(candidate, strlen(candidate), DEFAULT_COLLATION_OID);
		distance = varstr_levenshtein_less_equal(name, name_len,
												 candidate, strlen(candidate),
												 1, 1, 1, best_distance, true);
		if (distance < best_distance)
		{
			best = i;
			best_distance = distance;
		}
	}
	if (best < 0)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(elements[best]);
}
