/*-------------------------------------------------------------------------
 *
 * pg_fleet.c
 *	  Module entry point: the preload check and the fleet.* settings.
 *
 * pg_fleet keeps shared state and (later) a background worker, both of which
 * only work when the library is loaded at server start.  Loading it any other
 * way is refused with a hint instead of half-working.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "pg_fleet.h"

PG_MODULE_MAGIC;

/* Target of the next COPY into fleet.device_import (see device_import.c). */
char	   *fleet_import_template = NULL;
char	   *fleet_import_organization = NULL;

void		_PG_init(void);

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_fleet must be loaded via shared_preload_libraries"),
				 errhint("Add pg_fleet to shared_preload_libraries in postgresql.conf, "
						 "for example shared_preload_libraries = 'pg_cron,pg_fleet', "
						 "and restart the server.")));

	DefineCustomStringVariable("fleet.import_template",
							   "Device template assigned to devices imported through fleet.device_import.",
							   "Empty means the devices are imported without a template.",
							   &fleet_import_template,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("fleet.import_organization",
							   "Organization that devices imported through fleet.device_import belong to.",
							   "Empty means the root organization.",
							   &fleet_import_organization,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	/* Typos such as SET fleet.import_templat = ... become errors. */
	MarkGUCPrefixReserved("fleet");

	device_import_init();
}
