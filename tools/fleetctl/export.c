/*-------------------------------------------------------------------------
 *
 * export.c
 *	  fleetctl export: devices with their keys as IoT Central's export CSV,
 *	  read with COPY (SELECT * FROM fleet.export_devices(...)) TO STDOUT.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <stdlib.h>
#include <string.h>

#include "common/logging.h"

#include "fleetctl.h"

static const char *export_usage =
"Usage: fleetctl export [--template ID] [--organization ID] [-o FILE]\n"
"\n"
"Writes devices as IoT Central's export CSV: IOTC_DEVICEID, IOTC_DEVICENAME,\n"
"IOTC_SASKEY_PRIMARY, IOTC_SASKEY_SECONDARY, IOTC_X509THUMBPRINT_PRIMARY,\n"
"IOTC_X509THUMBPRINT_SECONDARY.  The file holds device keys: keep it safe.\n"
"\n"
"Options:\n"
"  --template ID       only devices of this template\n"
"  --organization ID   only devices of this organization and those below it\n"
"  -o, --output FILE   where to write (default: standard output)\n"
"  --spreadsheet-safe  prefix cells a spreadsheet would run as formulas (=, +, -, @)\n"
"                      with a single quote\n"
"  -d CONNINFO, -q     as for fleetctl\n";

int
cmd_export(int argc, char **argv)
{
	const char *template_id = NULL;
	const char *organization = NULL;
	const char *output = NULL;
	const SubOption known[] = {
		{"--template", 't', &template_id},
		{"--organization", 0, &organization},
		{"--output", 'o', &output},
		{NULL, 0, NULL}
	};
	int			n_positional;
	PGconn	   *conn;
	char	   *template_literal, *organization_literal;
	char	   *sql;
	size_t		len;
	FILE	   *out;

	parse_sub_options(argc, argv, known, export_usage, &n_positional);
	if (n_positional > 0)
		usage_error("export", "export takes no file argument; use -o FILE");
	conn = fleet_connect();
	/* (opened once connected: a failure to connect leaves an existing file alone) */
	out = open_output(output);
	/* COPY takes no parameters: the values go in as quoted literals */
	template_literal = sql_literal(conn, template_id);
	organization_literal = sql_literal(conn, organization);
	len = strlen(template_literal) + strlen(organization_literal) + 128;
	sql = malloc(len);
	snprintf(sql, len, "COPY (SELECT * FROM fleet.export_devices(%s, %s, %s)) TO STDOUT WITH (FORMAT csv, HEADER)",
			 template_literal, organization_literal, options.spreadsheet_safe ? "true" : "false");
	copy_out_to(conn, "cannot export the devices", sql, out, output ? output : "standard output");
	PQfinish(conn);
	return EXIT_DONE;
}
