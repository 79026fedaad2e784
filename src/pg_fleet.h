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
#include "utils/tuplestore.h"

/* pg_fleet.c */
extern char *fleet_import_template;
extern char *fleet_import_organization;
extern char *fleet_database_name;
extern int	fleet_max_running_jobs;
extern int	fleet_command_timeout;
extern int	fleet_engine_chunk_size;
extern int	fleet_command_window;
extern int	fleet_engine_naptime;

/* device_identity.c */
extern bool device_identity_valid(const char *id, int len,
								  const char *name, int name_len);
extern char *device_identity_check(const char *id, int len,
								   const char *name, int name_len);

/* device_import.c */
extern void device_import_init(void);
extern Tuplestorestate *device_import_staged(TupleDesc *desc);

/* worker.c */
extern void engine_init(void);

#endif							/* PG_FLEET_H */
