/*-------------------------------------------------------------------------
 *
 * pg_fleet.h
 *	  Declarations shared between pg_fleet's C files.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_FLEET_H
#define PG_FLEET_H

/* pg_fleet.c */
extern char *fleet_import_template;
extern char *fleet_import_organization;

/* device_import.c */
extern void device_import_init(void);

#endif							/* PG_FLEET_H */
