/* SPDX-License-Identifier: MIT */
/*
 * cmd-list.c: `stagelog list`.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* The digits of an id that a table row shows. */
#define ROW_ID_DIGITS 12

static const char usage[] =
	"usage: stagelog list [--all] [--label L] [--state S]... [-q | --quiet] [--no-legend]\n"
	"\n"
	"Lists in-flight stages, oldest first: ID (first " STRINGIFY(ROW_ID_DIGITS) " digits), LABEL, STATE,\n"
	"OWNER (pid), LIVE (yes or no), AGE, ENTRIES and PATH. Each cell is one\n"
	"token: in PATH, a space, backslash, control or non-UTF-8 byte is written\n"
	"\\x20, \\\\, \\n, \\t or \\xNN.\n"
	"\n"
	"  --all        list every record, finished stages too\n"
	"  --label L    only stages labelled L\n"
	"  --state S    only stages in state S (repeatable; any state, finished\n"
	"               ones too)\n"
	"  -q, --quiet  print the full ids only (32 digits), one a line\n"
	"  --no-legend  print the table without its header line\n"
	"  -h, --help   print this help\n";

/* Room for a 64-bit number in decimal, sign and NUL included. */
#define DECIMAL_MAX 21

/* One table row; the path is kept raw and escaped when printed. */
struct row {
	char id[ROW_ID_DIGITS + 1];
	char label[LABEL_MAX + 1];
	const char *state;
	char owner[DECIMAL_MAX];
	const char *live;
	char age[CLI_AGE_MAX];
	char entries[DECIMAL_MAX];
	char *path;
};

struct rows {
	struct row *v;
	size_t n;
	int64_t now;
	cJSON *json;
	unsigned states; /* bit per enum sl_state; 0: no --state filter */
	bool ids_only;   /* -q: print full ids as they come */
};

static int add_row(const struct sl_stage_info *info, void *userdata)
{
	struct rows *rows = userdata;
	struct row *v, *row;

	if (rows->states && !(rows->states & (1u << info->state)))
		return 0;
	if (rows->json) {
		cJSON *o = cli_json_append_object(rows->json);

		if (!o || !cli_json_add_stage(o, info) || !cJSON_AddNumberToObject(o, "entries", (double)info->entries))
			return -ENOMEM;
		return 0;
	}
	if (rows->ids_only) {
		puts(info->id);
		return 0;
	}

	/* Buffered, so that every column can be as wide as its widest cell. */
	v = reallocarray(rows->v, rows->n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	rows->v = v;
	row = &v[rows->n];
	*row = (struct row){ .state = info->state_name };
	row->path = strdup(info->path);
	if (!row->path)
		return -ENOMEM;
	rows->n++;
	snprintf(row->id, sizeof(row->id), "%.*s", ROW_ID_DIGITS, info->id);
	snprintf(row->label, sizeof(row->label), "%s", info->label);
	/* One token per cell, so that awk and cut see the header's fields. */
	snprintf(row->owner, sizeof(row->owner), "%lld", info->owner_pid);
	row->live = info->owner_alive ? "yes" : "no";
	cli_format_age(info->created_ms, rows->now, row->age);
	snprintf(row->entries, sizeof(row->entries), "%lld", (long long)info->entries);
	return 0;
}

static int max_width(int w, const char *s)
{
	int n = (int)strlen(s);

	return n > w ? n : w;
}

static void print_table(const struct rows *rows, bool legend)
{
	int wid = 2, wlabel = 5, wstate = 5, wowner = 5, wlive = 4, wage = 3, wentries = 7;

	for (size_t i = 0; i < rows->n; i++) {
		const struct row *r = &rows->v[i];

		wid = max_width(wid, r->id);
		wlabel = max_width(wlabel, r->label);
		wstate = max_width(wstate, r->state);
		wowner = max_width(wowner, r->owner);
		wage = max_width(wage, r->age);
		wentries = max_width(wentries, r->entries);
	}
	if (legend)
		printf("%-*s  %-*s  %-*s  %*s  %-*s  %*s  %*s  PATH\n", wid, "ID", wlabel, "LABEL", wstate, "STATE",
		       wowner, "OWNER", wlive, "LIVE", wage, "AGE", wentries, "ENTRIES");
	for (size_t i = 0; i < rows->n; i++) {
		const struct row *r = &rows->v[i];

		printf("%-*s  %-*s  %-*s  %*s  %-*s  %*s  %*s  ", wid, r->id, wlabel, r->label, wstate, r->state,
		       wowner, r->owner, wlive, r->live, wage, r->age, wentries, r->entries);
		cli_fput_token(stdout, r->path, strlen(r->path));
		putchar('\n');
	}
}

/* The enum sl_state value named name, or -1. */
static int state_bit(const char *name)
{
	for (int s = 0; s < SL_STATE_COUNT_; s++)
		if (strcmp(name, sl_store_state_name((enum sl_state)s)) == 0)
			return s;
	return -1;
}

/* What the options ask for. */
struct list_args {
	unsigned flags;
	const char *label;
	unsigned states; /* as struct rows' */
	bool ids_only;   /* -q */
	bool no_legend;  /* --no-legend */
};

static int list_option(int c, char *arg, void *userdata)
{
	struct list_args *a = userdata;
	int s;

	switch (c) {
	case 'a':
		a->flags |= SL_LIST_ALL;
		return EX_OK;
	case 'q':
		a->ids_only = true;
		return EX_OK;
	case 'L':
		a->no_legend = true;
		return EX_OK;
	case 'l':
		/* A label that cannot exist is a typo, not an empty answer
		 * that monitoring would take for "all clear". */
		if (!label_valid(arg))
			return cli_usage_error("list: --label: argument #%d: bad label: want [a-z0-9][a-z0-9_.-]{0,%d}",
					       cli_arg_position(arg), LABEL_MAX - 1);
		a->label = arg;
		return EX_OK;
	default: /* 's' */
		s = state_bit(arg);
		if (s < 0)
			return cli_usage_error(
				"list: --state: argument #%d: unknown state: want one of staging, ready, "
				"releasing, released, aborted, recovering, recovered, failed, published",
				cli_arg_position(arg));
		a->states |= 1u << s;
		/* A state may be a finished one: look at every record. */
		a->flags |= SL_LIST_ALL;
		return EX_OK;
	}
}

static const struct cli_options list_options = {
	.cmd = "list",
	.optstring = ":hq",
	.longopts =
		(const struct option[]){
			{ "all", no_argument, NULL, 'a' },
			{ "quiet", no_argument, NULL, 'q' },
			{ "no-legend", no_argument, NULL, 'L' },
			{ "label", required_argument, NULL, 'l' },
			{ "state", required_argument, NULL, 's' },
			CLI_COMMON_OPTIONS,
			{ 0 },
		},
	.usage = usage,
	.handle = list_option,
};

static void rows_finish(struct rows *rows)
{
	for (size_t i = 0; i < rows->n; i++)
		free(rows->v[i].path);
	free(rows->v);
	cJSON_Delete(rows->json);
}

int cmd_list(struct cli *cli, int argc, char **argv)
{
	_cleanup_(rows_finish) struct rows rows = { .now = epoch_ms() };
	struct list_args a = { 0 };
	struct sl_error err = { 0 };
	enum cli_stop stop;
	int r, code;

	code = cli_parse_options(cli, &list_options, argc, argv, &a, &stop);
	if (code == EX_OK && stop == CLI_GO_ON)
		code = cli_want_operands("list", argc, argv, 0, "");
	cli->read_only = true;
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;
	code = cli_open_store_readonly(cli, &stop);
	if (code == EX_OK && stop == CLI_NO_STORE)
		code = cli_no_store(cli, NULL);
	if (code != EX_OK)
		return code;

	rows.states = a.states;
	/* -q is for scripts (xargs stagelog release): --json says more. */
	rows.ids_only = a.ids_only && !cli->json;
	if (cli->json) {
		rows.json = cJSON_CreateArray();
		if (!rows.json)
			return cli_fail(-ENOMEM, NULL, "cannot list the stages");
	}
	r = cli->store ? sl_recover_list(cli->store, a.flags, a.label, add_row, &rows, &err) : 0;
	if (r < 0)
		return cli_fail(r, &err, "cannot list the stages");
	if (cli->json)
		return cli_json_print(TAKE_PTR(rows.json), true);
	if (!rows.ids_only)
		print_table(&rows, !a.no_legend);
	return EX_OK;
}
