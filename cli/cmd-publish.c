/* SPDX-License-Identifier: MIT */
/*
 * cmd-publish.c: `stagelog publish ID DEST`.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
	"usage: stagelog publish ID DEST\n"
	"\n"
	"Renames the ready stage's top directory to DEST (never replacing an\n"
	"existing path) and marks it published: stagelog never removes it after.\n"
	"ID may be a unique prefix of 4 or more digits.\n"
	"\n"
	"  -h, --help  print this help\n";

int cmd_publish(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = { CLI_COMMON_OPTIONS, { 0 } };
	struct sl_error err = { 0 };
	char id[SL_ID_SIZE];
	const char *dest;
	cJSON *doc;
	int c, r, code;

	while ((c = cli_getopt("publish", argc, argv, ":h", options)) != -1) {
		switch (c) {
		case 'j':
			cli->json = true;
			break;
		case 'h':
			return cli_help(usage);
		default:
			return EX_USAGE;
		}
	}
	code = cli_want_operands("publish", argc, argv, 2, "ID DEST");
	if (code == EX_OK)
		code = cli_open_store(cli);
	if (code == EX_OK)
		code = cli_resolve_id(cli, argv[optind], id);
	if (code != EX_OK)
		return code;
	dest = argv[optind + 1];

	r = sl_publish_id(cli->store, id, dest, &err);
	if (r < 0)
		return cli_fail(r, &err, "cannot publish the stage");

	if (cli->json) {
		doc = cJSON_CreateObject();
		if (doc && (!cJSON_AddStringToObject(doc, "id", id) ||
			    !cli_json_add_bytes(doc, "path", dest, strlen(dest)))) {
			cJSON_Delete(doc);
			doc = NULL;
		}
		return cli_json_print(doc);
	}
	if (cli->verbosity >= 0) {
		printf("published %s to ", id);
		cli_fput_escaped(stdout, dest, strlen(dest));
		putchar('\n');
	}
	return EX_OK;
}
