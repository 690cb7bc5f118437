/* SPDX-License-Identifier: MIT */
/*
 * cmd-forget.c: `stagelog forget ID`.
 */
#include <stdio.h>

#include "cli.h"

static const char usage[] =
	"usage: stagelog forget ID\n"
	"\n"
	"Drops the record of a failed or stale stage without touching the\n"
	"filesystem, for an operator who has dealt with it by hand. A live stage\n"
	"is refused. ID may be a unique prefix of " STRINGIFY(CLI_ID_PREFIX_MIN) " or more digits.\n"
	"\n"
	"  -h, --help  print this help\n";

static const struct cli_id_command forget_command = { .cmd = "forget", .usage = usage, .n = 1, .names = "ID" };

int cmd_forget(struct cli *cli, int argc, char **argv)
{
	enum cli_stop stop;
	struct sl_error err = { 0 };
	char id[SL_ID_SIZE];
	cJSON *doc;
	int r, code;

	code = cli_id_command(cli, &forget_command, argc, argv, id, &stop);
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;

	r = sl_recover_forget(cli->store, id, &err);
	if (r < 0)
		return cli_fail(r, &err, "cannot forget the stage");

	if (cli->json) {
		doc = cJSON_CreateObject();
		return cli_json_print(doc, doc && cJSON_AddStringToObject(doc, "id", id) &&
						   cJSON_AddBoolToObject(doc, "forgotten", true));
	}
	printf("forgot %s\n", id);
	return EX_OK;
}
