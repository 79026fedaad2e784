/*-------------------------------------------------------------------------
 *
 * pg_fleet.c
 *	  Module entry point: the preload check and the fleet.* settings.
 *
 * pg_fleet keeps shared state and background workers (the launcher and the
 * engine), which only work when the library is loaded at server start.
 * Loading it any other way is refused with a hint instead of half-working.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "pg_fleet.h"

PG_MODULE_MAGIC;

/* Target of the next COPY into fleet.device_import (see device_import.c). */
char	   *fleet_import_template = NULL;
char	   *fleet_import_organization = NULL;
static char *fleet_import_enrollment_group = NULL;	/* read by the SQL side */

/* The job engine (launcher.c, engine.c, src/sql/engine.sql). */
char	   *fleet_database_name = NULL;
static char *fleet_id_scope = NULL;
bool		fleet_engine_enabled = true;
int			fleet_max_running_jobs = 5;
int			fleet_command_timeout = 30000;
int			fleet_engine_chunk_size = 10000;
int			fleet_command_window = 10000;
int			fleet_engine_naptime = 1000;
int			fleet_engine_lock_timeout = 2000;
int			fleet_engine_statement_timeout = 60000;
/* read by the SQL side as current_setting(), never from C */
static int	fleet_schedule_misfire_grace = 120;
static int	fleet_max_running_jobs_per_organization = 0;
static int	fleet_job_max_retries = 5;
static int	fleet_job_retention = 30 * 24 * 60;

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

	DefineCustomStringVariable("fleet.import_enrollment_group",
							   "Enrollment group that devices imported through fleet.device_import derive their keys from.",
							   "Empty means their organization's default group; with keys in the file, the group they match.",
							   &fleet_import_enrollment_group,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("fleet.id_scope",
							   "ID scope devices provision with, shown as the enrollment groups' idScope.",
							   "IoT Central's devices are configured with their application's ID scope; set it to keep theirs.",
							   &fleet_id_scope,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("fleet.database_name",
							   "Database the pg_fleet job engine runs in.",
							   "Jobs and schedules are created and run only there; a reload moves the engine.",
							   &fleet_database_name,
							   "postgres",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("fleet.engine_enabled",
							 "Whether the pg_fleet job engine runs.",
							 "Off stops the engine after its step; jobs wait, and run once it is on again.",
							 &fleet_engine_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.engine_lock_timeout",
							"Longest time an engine step waits for a lock before it tries again later.",
							"A lock held by a session delays a job; it never stops the engine.",
							&fleet_engine_lock_timeout,
							2000, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.engine_statement_timeout",
							"Longest time one engine step of a job may take.",
							"A step that takes longer is retried smaller, or fails its job alone; 0 means no limit.",
							&fleet_engine_statement_timeout,
							60000, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.job_max_retries",
							"Consecutive failed steps of a job, for errors other than lock contention, before the job fails.",
							"Deadlocks, lock timeouts and serialization failures are retried without limit.",
							&fleet_job_max_retries,
							5, 0, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.job_retention",
							"How long finished jobs are kept; the engine then deletes them with their devices' outcomes.",
							"0 keeps them forever.  Device operations and scheduled runs are kept as long.",
							&fleet_job_retention,
							30 * 24 * 60, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.max_running_jobs_per_organization",
							"Jobs one organization (and those below it) may run at the same time.",
							"0 means fleet.max_running_jobs less one, so one organization never holds every slot.",
							&fleet_max_running_jobs_per_organization,
							0, 0, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.max_running_jobs",
							"Jobs that run at the same time; the others wait in order.",
							NULL,
							&fleet_max_running_jobs,
							5, 1, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.command_timeout",
							"Time a device has to answer a command before it fails as timed out.",
							NULL,
							&fleet_command_timeout,
							30000, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.engine_chunk_size",
							"Devices a job updates per committed engine step.",
							"Smaller chunks let other jobs and stop requests in sooner; larger ones finish big jobs faster.",
							&fleet_engine_chunk_size,
							10000, 1, 10000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.command_window",
							"Command deliveries a job keeps outstanding at once.",
							NULL,
							&fleet_command_window,
							10000, 1, 10000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.engine_naptime",
							"Longest time the job engine sleeps when it has nothing to do.",
							NULL,
							&fleet_engine_naptime,
							1000, 10, 3600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("fleet.schedule_misfire_grace",
							"How late a scheduled occurrence may still start; later ones are recorded as missed.",
							"pg_cron fires on the minute; an occurrence that passed while the server was down is not run late.",
							&fleet_schedule_misfire_grace,
							120, 1, 86400,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	/* Typos such as SET fleet.import_templat = ... become errors. */
	MarkGUCPrefixReserved("fleet");

	device_import_init();
	import_tracking_init();
	engine_shared_init();
	utility_hook_init();
	row_scope_init();
	reference_write_order_init();
	launcher_register();
}
