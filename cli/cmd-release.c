/* SPDX-License-Identifier: MIT */
/*
 * cmd-release.c: `stagelog release ID`.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
	"usage: stagelog release ID\n"
	"\n"
	"Removes the stage and marks it released. A released, aborted or recovered\n"
	"stage is a success with nothing to do; a published one belongs to its\n"
	"destination and is refused. ID may be a unique prefix of " STRINGIFY(CLI_ID_PREFIX_MIN) " or more digits.\n"
	"\n"
	"  -h, --help  print this help\n";

/* The removal's progress line: paths removed of those the stage logged. */
static void show_progress(const struct sl_progress *sp, void *userdata)
{
	cli_progress_show(userdata, "releasing %llu/%llu paths", (unsigned long long)sp->done,
			  (unsigned long long)sp->total);
}

static const struct cli_id_command release_command = { .cmd = "release", .usage = usage, .n = 1, .names = "ID" };

int cmd_release(struct cli *cli, int argc, char **argv)
{
	enum cli_stop stop;
	struct cli_progress progress;
	struct sl_error err = { 0 };
	char id[SL_ID_SIZE];
	struct cli_where where = { 0 };
	cJSON *doc;
	int r, code;

	code = cli_id_command(cli, &release_command, argc, argv, id, &stop);
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;

	/* Read before the release, while the record is sure to be there. */
	(void)cli_stage_where(cli, id, &where);
	cli_progress_start(&progress, cli);
	r = sl_stage_release_id_progress(cli->store, id, progress.on ? show_progress : NULL, &progress, &err);
	cli_progress_end(&progress);
	if (r < 0) {
		/* The library says what happened: a published stage is a
		 * usage error, and a stage left failed is one we could not
		 * remove (exit 1), whatever errno the removal stopped at. */
		if (err.flags & SL_ERROR_STAGE_PUBLISHED)
			return cli_usage_error("cannot release %s: it is published and belongs to its destination", id);
		/* A record that fails validation is bad data (65); anything
		 * else left behind is exit 1. */
		if ((err.flags & SL_ERROR_STAGE_FAILED) && r != -EBADMSG) {
			cli_fail(r, &err, "cannot release the stage");
			return CLI_EXIT_NOT_CLEAN;
		}
		return cli_fail(r, &err, "cannot release the stage");
	}

	if (cli->json) {
		doc = cJSON_CreateObject();
		return cli_json_print(doc, doc && cJSON_AddStringToObject(doc, "id", id) &&
						   cli_json_add_bytes(doc, "label", where.label, strlen(where.label)) &&
						   cli_json_add_bytes(doc, "path", where.path, strlen(where.path)) &&
						   cJSON_AddBoolToObject(doc, "removed", r > 0));
	}
	fputs(r > 0 ? "released " : "nothing to release for ", stdout);
	cli_fput_where(stdout, id, &where);
	putchar('\n');
	return EX_OK;
}
