/*-------------------------------------------------------------------------
 *
 * pg_fleet.h
 *	  Declarations shared between pg_fleet's C files.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_FLEET_H
#define PG_FLEET_H

#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/tuplestore.h"

/* pg_fleet.c: the settings */
extern char *fleet_import_template;
extern char *fleet_import_organization;
extern char *fleet_database_name;
extern bool fleet_engine_enabled;
extern int	fleet_max_running_jobs;
extern int	fleet_command_timeout;
extern int	fleet_engine_chunk_size;
extern int	fleet_command_window;
extern int	fleet_engine_naptime;
extern int	fleet_engine_lock_timeout;
extern int	fleet_engine_statement_timeout;

/* device_identity.c */
extern bool device_identity_valid(const char *id, int len,
								  const char *name, int name_len);
extern char *device_identity_check(const char *id, int len,
								   const char *name, int name_len);

/* device_import.c */
extern void device_import_init(void);
extern Tuplestorestate *device_import_staged(TupleDesc *desc);
extern bool device_import_with_credentials(void);

/* citus_node.c */
extern bool citus_worker_node(void);
extern bool citus_table(Oid table);

/* row_scope.c */
extern void row_scope_init(void);

/* reference_write_order.c */
extern void reference_write_order_init(void);

/* import_tracking.c */
extern void import_tracking_init(void);
extern Size import_tracking_shmem_size(void);
extern void import_tracking_shmem_init(void);
extern void import_tracking_begin(int64 operation_id, const char *template_id,
								  const char *organization_id);
extern void import_tracking_count_row(void);

/*
 * What the engine, its launcher and the backends share (engine_shared.c).
 * The launcher starts the engine in fleet.database_name and restarts it;
 * a backend about to drop the engine's database or pg_fleet asks it to
 * step aside (utility_hook.c); the status view reads the counters.
 */
typedef enum EngineState
{
	ENGINE_NOT_RUNNING = 0,
	ENGINE_STARTING,
	ENGINE_IDLE,				/* between steps */
	ENGINE_STEPPING,			/* in a step's transaction */
	ENGINE_PAUSED				/* stepping aside for a DROP */
} EngineState;

typedef struct FleetShared
{
	slock_t		mutex;

	/* the launcher */
	Latch	   *launcher_latch;
	pid_t		launcher_pid;
	char		launcher_note[128]; /* why no engine runs, when none does */
	bool		engine_on_citus_worker; /* the engine left: its node is a Citus worker */

	/* the engine */
	Latch	   *engine_latch;
	pid_t		engine_pid;
	Oid			engine_database;
	EngineState engine_state;
	TimestampTz engine_started_at;
	TimestampTz last_step_at;
	uint64		steps;
	uint64		errors;
	TimestampTz last_error_at;
	char		last_error[256];

	/*
	 * A backend that needs the engine out of the way: out of the database
	 * (DROP DATABASE, a copy of it) or only out of its steps (DROP
	 * EXTENSION), until that backend's statement or transaction ends.
	 */
	pid_t		pause_holder;
	Oid			pause_database;
	bool		pause_disconnect;
} FleetShared;

extern FleetShared *fleet_shared;

extern void engine_shared_init(void);
extern void engine_wake_launcher(void);
extern void engine_wake_launcher_at_commit(void);
extern void engine_note_error(const char *message);
extern bool engine_pause_requested(Oid database, bool *disconnect);

/* launcher.c, engine.c */
extern void launcher_register(void);

/* utility_hook.c */
extern void utility_hook_init(void);

/* cron_bridge.c: runs statements wherever pg_cron keeps its entries */
extern const char *cron_database_name(bool missing_ok);
extern void cron_set_entries(const char *database, const char *desired_json,
							 bool missing_ok);

#endif							/* PG_FLEET_H */
