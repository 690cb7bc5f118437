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
	"ID may be a unique prefix of " STRINGIFY(CLI_ID_PREFIX_MIN) " or more digits.\n"
	"\n"
	"  -h, --help  print this help\n";

static const struct cli_id_command publish_command = { .cmd = "publish", .usage = usage, .n = 2, .names = "ID DEST" };

int cmd_publish(struct cli *cli, int argc, char **argv)
{
	enum cli_stop stop;
	struct sl_error err = { 0 };
	char id[SL_ID_SIZE];
	const char *dest;
	cJSON *doc;
	int r, code;

	code = cli_id_command(cli, &publish_command, argc, argv, id, &stop);
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;
	dest = argv[optind + 1];

	r = sl_stage_publish_id(cli->store, id, dest, &err);
	if (r < 0)
		return cli_fail(r, &err, "cannot publish the stage");

	if (cli->json) {
		doc = cJSON_CreateObject();
		return cli_json_print(doc, doc && cJSON_AddStringToObject(doc, "id", id) &&
						   cli_json_add_bytes(doc, "path", dest, strlen(dest)));
	}
	printf("published %s to ", id);
	cli_fput_token(stdout, dest, strlen(dest));
	putchar('\n');
	return EX_OK;
}
