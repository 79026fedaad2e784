/*
 * directory.c
 *		The broker's copy of who may connect: every enrollment group with its
 *		keys, and every registered device with the group its keys derive
 *		from.  Built whole from each snapshot the bridge sends (it sends one
 *		only when the database's changed), and swapped in at once, so an
 *		authentication never sees half of one.  Device keys are derived on
 *		demand: the broker never holds one.
 */
#include "directory.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t
hash_id(const char *s)
{
	uint64_t	h = 1469598103934665603ULL;	/* FNV-1a */

	for (; *s; s++)
	{
		h ^= (unsigned char) *s;
		h *= 1099511628211ULL;
	}
	return h;
}

/* Splits line into at most max tab-separated fields, in place. */
static int
split_fields(char *line, char **fields, int max)
{
	int			n = 0;

	while (n < max)
	{
		char	   *tab = strchr(line, '\t');

		fields[n++] = line;
		if (tab == NULL)
			break;
		*tab = '\0';
		line = tab + 1;
	}
	return n;
}

static bool
parse_key(const char *text, unsigned char *out, size_t *len)
{
	int			n = sas_base64_decode(text, out, SAS_KEY_MAX);

	if (n <= 0)
		return false;
	*len = n;
	return true;
}

int
directory_find_group(const Directory *directory, const char *group_id)
{
	for (int i = 0; i < directory->n_groups; i++)
		if (strcmp(directory->groups[i].id, group_id) == 0)
			return i;
	return -1;
}

Directory *
directory_parse(const char *text, size_t len)
{
	Directory  *d = calloc(1, sizeof(Directory));
	size_t		n_lines = 1;
	char	   *line;
	char	   *next;

	if (d == NULL)
		return NULL;
	d->text = malloc(len + 1);
	if (d->text == NULL)
		goto fail;
	memcpy(d->text, text, len);
	d->text[len] = '\0';
	d->text_len = len;
	for (size_t i = 0; i < len; i++)
		if (text[i] == '\n')
			n_lines++;
	d->groups = calloc(n_lines, sizeof(EnrollmentGroup));
	for (d->n_slots = 16; d->n_slots < n_lines * 2; d->n_slots *= 2)
		;
	d->slots = calloc(d->n_slots, sizeof(DeviceSlot));
	if (d->groups == NULL || d->slots == NULL)
		goto fail;

	/* in place: ids point into the text; groups come before devices */
	for (line = d->text; line != NULL && *line; line = next)
	{
		char	   *fields[5];
		int			n;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		n = split_fields(line, fields, 5);
		if (strcmp(fields[0], "G") == 0 && n == 5)
		{
			EnrollmentGroup *g = &d->groups[d->n_groups++];

			g->id = fields[1];
			g->enabled = strcmp(fields[2], "1") == 0;
			for (int k = 0; k < 2; k++)
				if (strcmp(fields[3 + k], "-") != 0 &&
					parse_key(fields[3 + k], g->keys[g->n_keys], &g->key_len[g->n_keys]))
					g->n_keys++;
		}
		else if (strcmp(fields[0], "D") == 0 && n == 3)
		{
			size_t		mask = d->n_slots - 1;
			size_t		i = hash_id(fields[1]) & mask;

			while (d->slots[i].id != NULL && strcmp(d->slots[i].id, fields[1]) != 0)
				i = (i + 1) & mask;
			if (d->slots[i].id == NULL)
				d->n_devices++;
			d->slots[i].id = fields[1];
			/* groups are few: each device's found by name */
			d->slots[i].group = strcmp(fields[2], "-") == 0 ? -1 : directory_find_group(d, fields[2]);
		}
		else
			goto fail;
	}
	return d;

fail:
	directory_free(d);
	return NULL;
}

void
directory_free(Directory *directory)
{
	if (directory == NULL)
		return;
	free(directory->text);
	free(directory->groups);
	free(directory->slots);
	free(directory);
}

const DeviceSlot *
directory_device(const Directory *directory, const char *device_id)
{
	size_t		mask;
	size_t		i;

	if (directory == NULL || directory->n_slots == 0)
		return NULL;
	mask = directory->n_slots - 1;
	i = hash_id(device_id) & mask;
	while (directory->slots[i].id != NULL)
	{
		if (strcmp(directory->slots[i].id, device_id) == 0)
			return &directory->slots[i];
		i = (i + 1) & mask;
	}
	return NULL;
}

const EnrollmentGroup *
directory_group(const Directory *directory, int group)
{
	if (directory == NULL || group < 0 || group >= directory->n_groups)
		return NULL;
	return &directory->groups[group];
}

size_t
directory_bytes(const Directory *directory)
{
	if (directory == NULL)
		return 0;
	return sizeof(Directory) + directory->text_len + 1 +
		directory->n_groups * sizeof(EnrollmentGroup) + directory->n_slots * sizeof(DeviceSlot);
}
