/* SPDX-License-Identifier: MIT */
/*
 * cmd-check.c: `stagelog check`.
 */
#include <stdio.h>
#include <string.h>

#include <unistd.h>

#include "cli.h"

static const char usage[] =
	"usage: stagelog check [--root DIR]... [--remove-orphans]\n"
	"\n"
	"Checks the store's integrity, reports failed stages with their reasons, and\n"
	"scans each staging root for orphans: directories named like stage\n"
	"directories that no in-flight record owns. Exits 1 while a failed stage\n"
	"remains or if it found a problem it did not fix.\n"
	"\n"
	"  --root DIR         scan DIR (default: every root the records name)\n"
	"  --remove-orphans   remove the orphans that nobody holds locked\n"
	"  -h, --help         print this help\n";

static bool was_removed(const struct sl_check_report *rep, const char *path)
{
	for (size_t i = 0; i < rep->n_removed; i++)
		if (strcmp(rep->removed[i], path) == 0)
			return true;
	return false;
}

static int print_json(const struct sl_check_report *rep, const struct cli_failed_list *fl,
		      const struct cli_failed_list *moved)
{
	cJSON *doc = cJSON_CreateObject();

	return cli_json_print(
		doc,
		doc &&
			cli_json_add_bytes(doc, "integrity", rep->integrity,
					   strnlen(rep->integrity, sizeof(rep->integrity))) &&
			cli_json_add_item(doc, "failed", cli_json_array(fl->n, cli_json_failed_item, fl)) &&
			cli_json_add_item(doc, "root_moved", cli_json_array(moved->n, cli_json_failed_item, moved)) &&
			cli_json_add_item(doc, "orphans",
					  cli_json_array(rep->n_orphans, cli_json_path_item, rep->orphans)) &&
			cli_json_add_item(doc, "removed",
					  cli_json_array(rep->n_removed, cli_json_path_item, rep->removed)));
}

static void print_stages(const char *what, const struct cli_failed_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		printf("%s ", what);
		cli_fput_where(stdout, l->v[i].id, &l->v[i].where);
		fputs(": ", stdout);
		cli_fput_escaped(stdout, l->v[i].reason, strlen(l->v[i].reason));
		putchar('\n');
	}
}

static void print_text(const struct sl_check_report *rep, const struct cli_failed_list *fl,
		       const struct cli_failed_list *moved)
{
	fputs("integrity: ", stdout);
	cli_fput_escaped(stdout, rep->integrity, strnlen(rep->integrity, sizeof(rep->integrity)));
	putchar('\n');
	/* A failed stage may still hold secrets: an error, on stderr. */
	for (size_t i = 0; i < fl->n; i++)
		cli_print_failed(&fl->v[i]);
	print_stages("root-moved", moved);
	/* An orphan that was removed is reported once, as removed. */
	for (size_t i = 0; i < rep->n_orphans; i++) {
		if (was_removed(rep, rep->orphans[i]))
			continue;
		fputs("orphan ", stdout);
		cli_fput_token(stdout, rep->orphans[i], strlen(rep->orphans[i]));
		putchar('\n');
	}
	for (size_t i = 0; i < rep->n_removed; i++) {
		fputs("removed ", stdout);
		cli_fput_token(stdout, rep->removed[i], strlen(rep->removed[i]));
		putchar('\n');
	}
}

/* What the options ask for. */
struct check_args {
	const char **roots;
	size_t n_roots;
	bool remove;
};

static void check_args_finish(struct check_args *a)
{
	free(a->roots);
}

static int check_option(int c, char *arg, void *userdata)
{
	struct check_args *a = userdata;
	const char **v;

	if (c == 'R') {
		a->remove = true;
		return EX_OK;
	}
	v = reallocarray(a->roots, a->n_roots + 1, sizeof(*v));
	if (!v)
		return cli_fail(-ENOMEM, NULL, "cannot parse the options");
	a->roots = v;
	a->roots[a->n_roots++] = arg;
	return EX_OK;
}

static const struct cli_options check_options = {
	.cmd = "check",
	.optstring = ":h",
	.longopts =
		(const struct option[]){
			{ "root", required_argument, NULL, 'r' },
			{ "remove-orphans", no_argument, NULL, 'R' },
			CLI_COMMON_OPTIONS,
			{ 0 },
		},
	.usage = usage,
	.handle = check_option,
};

/* Runs the library's check into rep. Returns an exit code. */
static int run_check(struct cli *cli, const struct check_args *a, struct sl_check_report *rep)
{
	struct sl_error err = { 0 };
	unsigned flags = a->remove ? SL_CHECK_REMOVE_ORPHANS : 0;
	char def[PATH_MAX];
	const char *one[1] = { def };
	int r;

	if (a->n_roots > 0) {
		r = sl_recover_check(cli->store, a->roots, a->n_roots, flags, rep, &err);
		return r < 0 ? cli_fail(r, &err, "cannot check") : EX_OK;
	}
	/* No --root: the default staging root (where a lost store's stages
	 * are) and every root a record names. Without a default root (no
	 * XDG_RUNTIME_DIR) only the recorded roots are scanned; that is no
	 * usage error here. */
	flags |= SL_CHECK_RECORD_ROOTS;
	if (cli_default_root(def, sizeof(def), true) != EX_OK)
		def[0] = '\0';
	r = sl_recover_check(cli->store, one, def[0] ? 1 : 0, flags, rep, &err);
	return r < 0 ? cli_fail(r, &err, "cannot check") : EX_OK;
}

/* The failed stages, unless the store failed its integrity check: such a
 * store is not asked for more. Returns an exit code. */
static int list_failed(struct cli *cli, const struct sl_check_report *rep, struct cli_failed_list *fl)
{
	struct sl_error err = { 0 };
	int r;

	if (strcmp(rep->integrity, "ok") != 0)
		return EX_OK;
	r = sl_recover_list(cli->store, 0, NULL, cli_failed_add, fl, &err);
	return r < 0 ? cli_fail(r, &err, "cannot list the failed stages") : EX_OK;
}

/* Stages whose root now leads elsewhere: their files may sit in the old
 * directory, which no removal will look at. Returns an exit code. */
static int list_root_moved(struct cli *cli, const struct sl_check_report *rep, struct cli_failed_list *moved)
{
	moved->v = calloc(rep->n_root_moved + 1, sizeof(*moved->v));
	if (!moved->v)
		return cli_fail(-ENOMEM, NULL, "cannot check");
	for (size_t i = 0; i < rep->n_root_moved; i++)
		cli_failed_set(cli, &moved->v[moved->n++], rep->root_moved[i],
			       "staging root now leads to another directory");
	return EX_OK;
}

/*
 * Clean means a sound store, no failed stage (its secrets may still be on
 * disk) and no orphan left behind: one that --remove-orphans removed is
 * fixed, one it had to leave is not.
 */
static bool is_clean(const struct sl_check_report *rep, const struct cli_failed_list *fl,
		     const struct cli_failed_list *moved)
{
	bool clean = strcmp(rep->integrity, "ok") == 0 && fl->n == 0 && moved->n == 0;

	for (size_t i = 0; i < rep->n_orphans && clean; i++)
		clean = was_removed(rep, rep->orphans[i]);
	return clean;
}

int cmd_check(struct cli *cli, int argc, char **argv)
{
	_cleanup_(check_args_finish) struct check_args a = { 0 };
	_cleanup_(sl_recover_check_report_finish) struct sl_check_report rep = { 0 };
	_cleanup_(cli_failed_list_finish) struct cli_failed_list fl = { 0 }, moved = { 0 };
	enum cli_stop stop;
	int code;

	code = cli_parse_options(cli, &check_options, argc, argv, &a, &stop);
	if (code == EX_OK && stop == CLI_GO_ON)
		code = cli_want_operands("check", argc, argv, 0, "");
	/* Only a check that removes orphans writes (and creates a store). */
	cli->read_only = !a.remove;
	cli->checking = true;
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;
	code = a.remove ? cli_open_store(cli) : cli_open_store_readonly(cli, &stop);
	if (code == EX_OK && stop == CLI_NO_STORE)
		return cli_no_store(cli, "cannot check");
	if (code == EX_OK)
		code = run_check(cli, &a, &rep);
	if (code == EX_OK)
		code = list_failed(cli, &rep, &fl);
	if (code == EX_OK)
		code = list_root_moved(cli, &rep, &moved);
	if (code != EX_OK)
		return code;

	code = cli->json ? print_json(&rep, &fl, &moved) : (print_text(&rep, &fl, &moved), EX_OK);
	if (code == EX_OK && !is_clean(&rep, &fl, &moved))
		code = CLI_EXIT_NOT_CLEAN;
	return code;
}
