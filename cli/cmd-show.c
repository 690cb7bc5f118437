/* SPDX-License-Identifier: MIT */
/*
 * cmd-show.c: `stagelog show ID`.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
	"usage: stagelog show ID\n"
	"\n"
	"Shows one stage and its entries in creation order, with paths relative\n"
	"to the staging root. In text, a path's bytes that are not printable\n"
	"UTF-8, and spaces, are shown as \\xNN (and \\, newline, tab as \\\\, \\n,\n"
	"\\t); in JSON, a byte that is not part of valid UTF-8 is \\udcXX (PEP 383\n"
	"surrogateescape). ID may be a unique prefix of " STRINGIFY(CLI_ID_PREFIX_MIN) " or more digits.\n"
	"\n"
	"  -h, --help  print this help\n";

struct show {
	cJSON *doc;
	cJSON *entries;
	int seq_width;
	bool header_shown;
};

static int show_stage(const struct sl_stage_info *info, void *userdata)
{
	struct show *s = userdata;
	char created[CLI_TIME_MAX], updated[CLI_TIME_MAX];

	if (s->doc) {
		s->entries = cJSON_CreateArray();
		if (!s->entries || !cli_json_add_stage(s->doc, info) ||
		    !cJSON_AddItemToObject(s->doc, "entries", s->entries)) {
			cJSON_Delete(s->entries);
			s->entries = NULL;
			return -ENOMEM;
		}
		return 0;
	}

	cli_format_time(info->created_ms, created);
	cli_format_time(info->updated_ms, updated);
	printf("id: %s\nlabel: %s\nstate: %s\nroot: ", info->id, info->label, info->state_name);
	cli_fput_token(stdout, info->root, strlen(info->root));
	fputs("\npath: ", stdout);
	cli_fput_token(stdout, info->path, strlen(info->path));
	printf("\nowner: %lld (%s)\ncreated: %s\nupdated: %s\n", info->owner_pid, info->owner_alive ? "live" : "stale",
	       created, updated);
	if (info->reason && info->reason[0]) {
		fputs("reason: ", stdout);
		cli_fput_escaped(stdout, info->reason, strlen(info->reason));
		putchar('\n');
	}
	printf("entries: %lld\n", (long long)info->entries);
	s->seq_width = snprintf(NULL, 0, "%lld", (long long)info->entries);
	if (s->seq_width < 3)
		s->seq_width = 3;
	return 0;
}

static int show_entry(const struct sl_entry_info *info, void *userdata)
{
	struct show *s = userdata;
	cJSON *e;

	if (s->doc) {
		e = s->entries ? cli_json_append_object(s->entries) : NULL;
		if (!e || !cJSON_AddNumberToObject(e, "seq", (double)info->seq) ||
		    !cli_json_add_bytes(e, "path", info->path, info->path_len) ||
		    !cJSON_AddStringToObject(e, "kind", info->kind) ||
		    !cJSON_AddStringToObject(e, "state", info->state))
			return -ENOMEM;
		return 0;
	}
	/* The table's header comes with its first row, so that a stage
	 * without entries shows none. */
	if (!s->header_shown) {
		printf("\n%*s  %-7s  %-7s  PATH\n", s->seq_width, "SEQ", "KIND", "STATE");
		s->header_shown = true;
	}
	printf("%*lld  %-7s  %-7s  ", s->seq_width, (long long)info->seq, info->kind, info->state);
	cli_fput_token(stdout, info->path, info->path_len);
	putchar('\n');
	return 0;
}

static const struct cli_id_command show_command = {
	.cmd = "show",
	.usage = usage,
	.n = 1,
	.names = "ID",
	.readonly = true,
};

int cmd_show(struct cli *cli, int argc, char **argv)
{
	enum cli_stop stop;
	struct sl_error err = { 0 };
	struct show s = { 0 };
	char id[SL_ID_SIZE];
	int r, code;

	cli->read_only = true;
	code = cli_id_command(cli, &show_command, argc, argv, id, &stop);
	if (code == EX_OK && stop == CLI_NO_STORE)
		return cli_no_store(cli, "cannot show the stage");
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;

	if (cli->json) {
		s.doc = cJSON_CreateObject();
		if (!s.doc)
			return cli_fail(-ENOMEM, NULL, "cannot show the stage");
	}
	r = sl_recover_show(cli->store, id, show_stage, show_entry, &s, &err);
	if (r < 0) {
		cJSON_Delete(s.doc);
		return cli_fail(r, &err, "cannot show the stage");
	}
	return cli->json ? cli_json_print(s.doc, true) : EX_OK;
}
