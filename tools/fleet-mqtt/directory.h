/*
 * directory.h
 *		The devices and enrollment groups the broker authenticates against,
 *		as the bridge sends them (fleet_internal.endpoint_directory()).
 */
#ifndef DIRECTORY_H
#define DIRECTORY_H

#include <stdbool.h>
#include <stddef.h>

#include "sas_token.h"

typedef struct EnrollmentGroup
{
	const char *id;
	bool		enabled;
	int			n_keys;			/* 0: an X.509 group */
	unsigned char keys[2][SAS_KEY_MAX];
	size_t		key_len[2];
} EnrollmentGroup;

typedef struct DeviceSlot
{
	const char *id;				/* NULL: free */
	int			group;			/* index into groups, -1: none */
} DeviceSlot;

typedef struct Directory
{
	char	   *text;			/* the snapshot; ids point into it */
	size_t		text_len;
	EnrollmentGroup *groups;
	int			n_groups;
	DeviceSlot *slots;			/* open addressing, a power of two */
	size_t		n_slots;
	size_t		n_devices;
} Directory;

/*
 * Builds a directory from the bridge's snapshot: lines of tab-separated
 * fields, groups first, "G <id> <enabled: 0 or 1> <primary key or -> <secondary key or ->"
 * and "D <device id> <group id or ->".  NULL when the text is malformed.
 */
extern Directory *directory_parse(const char *text, size_t len);
extern void directory_free(Directory *directory);

/* The device's slot, or NULL when it is not registered. */
extern const DeviceSlot *directory_device(const Directory *directory, const char *device_id);
extern const EnrollmentGroup *directory_group(const Directory *directory, int group);
extern int	directory_find_group(const Directory *directory, const char *group_id);

/* Bytes held, for the memory figures. */
extern size_t directory_bytes(const Directory *directory);

#endif
