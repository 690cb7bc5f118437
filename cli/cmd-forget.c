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
	"is refused. ID may be a unique prefix of 4 or more digits.\n"
	"\n"
	"  -h, --help  print this help\n";

int cmd_forget(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = { CLI_COMMON_OPTIONS, { 0 } };
	struct sl_error err = { 0 };
	char id[SL_ID_SIZE];
	cJSON *doc;
	int c, r, code;

	while ((c = cli_getopt("forget", argc, argv, ":h", options)) != -1) {
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
	code = cli_want_operands("forget", argc, argv, 1, "ID");
	if (code == EX_OK)
		code = cli_open_store(cli);
	if (code == EX_OK)
		code = cli_resolve_id(cli, argv[optind], id);
	if (code != EX_OK)
		return code;

	r = sl_forget(cli->store, id, &err);
	if (r < 0)
		return cli_fail(r, &err, "cannot forget the stage");

	if (cli->json) {
		doc = cJSON_CreateObject();
		if (doc && (!cJSON_AddStringToObject(doc, "id", id) || !cJSON_AddBoolToObject(doc, "forgotten", true))) {
			cJSON_Delete(doc);
			doc = NULL;
		}
		return cli_json_print(doc);
	}
	if (cli->verbosity >= 0)
		printf("forgot %s\n", id);
	return EX_OK;
}
