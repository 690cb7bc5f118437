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

static cJSON *path_array(char **paths, size_t n)
{
	cJSON *a = cJSON_CreateArray();

	for (size_t i = 0; a && i < n; i++) {
		_cleanup_free_ char *clean = cli_utf8_sanitize(paths[i], strlen(paths[i]));
		cJSON *s = clean ? cJSON_CreateString(clean) : NULL;

		if (!s || !cJSON_AddItemToArray(a, s)) {
			cJSON_Delete(s);
			cJSON_Delete(a);
			return NULL;
		}
	}
	return a;
}

static cJSON *failed_array(const struct cli_failed_list *fl)
{
	cJSON *a = cJSON_CreateArray();

	for (size_t i = 0; a && i < fl->n; i++) {
		cJSON *f = cJSON_CreateObject();

		if (!f || !cJSON_AddItemToArray(a, f)) {
			cJSON_Delete(f);
			cJSON_Delete(a);
			return NULL;
		}
		if (!cJSON_AddStringToObject(f, "id", fl->v[i].id) ||
		    !cJSON_AddStringToObject(f, "label", fl->v[i].where.label) ||
		    !cli_json_add_bytes(f, "path", fl->v[i].where.path, strlen(fl->v[i].where.path)) ||
		    !cli_json_add_bytes(f, "reason", fl->v[i].reason, strlen(fl->v[i].reason))) {
			cJSON_Delete(a);
			return NULL;
		}
	}
	return a;
}

static int print_json(const struct sl_check_report *rep, const struct cli_failed_list *fl,
		      const struct cli_failed_list *moved)
{
	cJSON *doc = cJSON_CreateObject();
	cJSON *failed = failed_array(fl);
	cJSON *root_moved = failed_array(moved);
	cJSON *orphans = path_array(rep->orphans, rep->n_orphans);
	cJSON *removed = path_array(rep->removed, rep->n_removed);
	bool ok = doc && orphans && removed && failed;

	ok = ok && cli_json_add_bytes(doc, "integrity", rep->integrity,
				      strnlen(rep->integrity, sizeof(rep->integrity)));
	ok = ok && cJSON_AddItemToObject(doc, "failed", failed);
	if (!ok)
		cJSON_Delete(failed);
	ok = ok && root_moved && cJSON_AddItemToObject(doc, "root_moved", root_moved);
	if (!ok)
		cJSON_Delete(root_moved);
	ok = ok && cJSON_AddItemToObject(doc, "orphans", orphans);
	if (!ok)
		cJSON_Delete(orphans);
	ok = ok && cJSON_AddItemToObject(doc, "removed", removed);
	if (!ok) {
		cJSON_Delete(removed);
		cJSON_Delete(doc);
		doc = NULL;
	}
	return cli_json_print(doc);
}

static void print_stages(const char *what, const struct cli_failed_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		printf("%s %s %s ", what, l->v[i].id, l->v[i].where.label);
		cli_fput_escaped(stdout, l->v[i].where.path, strlen(l->v[i].where.path));
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
	print_stages("failed", fl);
	print_stages("root-moved", moved);
	/* An orphan that was removed is reported once, as removed. */
	for (size_t i = 0; i < rep->n_orphans; i++) {
		if (was_removed(rep, rep->orphans[i]))
			continue;
		fputs("orphan ", stdout);
		cli_fput_escaped(stdout, rep->orphans[i], strlen(rep->orphans[i]));
		putchar('\n');
	}
	for (size_t i = 0; i < rep->n_removed; i++) {
		fputs("removed ", stdout);
		cli_fput_escaped(stdout, rep->removed[i], strlen(rep->removed[i]));
		putchar('\n');
	}
}

int cmd_check(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = {
		{ "root", required_argument, NULL, 'r' },
		{ "remove-orphans", no_argument, NULL, 'R' },
		CLI_COMMON_OPTIONS,
		{ 0 },
	};
	struct sl_check_report rep = { 0 };
	struct cli_failed_list fl = { 0 }, moved = { 0 };
	struct sl_error err = { 0 };
	_cleanup_free_ const char **roots = NULL;
	size_t n_roots = 0;
	bool remove = false, clean;
	void *tmp;
	int c, r, code;

	while ((c = cli_getopt(cli, "check", argc, argv, ":h", options)) != -1) {
		switch (c) {
		case 'r':
			tmp = reallocarray(roots, n_roots + 1, sizeof(*roots));
			if (!tmp)
				return cli_fail(-ENOMEM, NULL, "cannot parse the options");
			roots = tmp;
			roots[n_roots++] = optarg;
			break;
		case 'R':
			remove = true;
			break;
		case 'h':
			return cli_help(usage);
		default:
			return EX_USAGE;
		}
	}
	code = cli_want_operands("check", argc, argv, 0, "");
	/* Only a check that removes orphans writes (and creates a store). */
	if (code == EX_OK)
		code = remove ? cli_open_store(cli) : cli_open_store_readonly(cli);
	if (code == CLI_NO_STORE)
		return cli_no_store(cli, "cannot check");
	if (code != EX_OK)
		return code;

	/* No --root: the default staging root (where a lost store's stages
	 * are) and every root a record names. */
	unsigned flags = remove ? SL_CHECK_REMOVE_ORPHANS : 0;
	char def[PATH_MAX];
	const char *one[1];
	if (n_roots == 0) {
		flags |= SL_CHECK_RECORD_ROOTS;
		/* Without a default root (no XDG_RUNTIME_DIR) only the
		 * recorded roots are scanned; that is no usage error here. */
		if (cli_default_root(def, sizeof(def), true) != EX_OK)
			def[0] = '\0';
		one[0] = def;
		r = sl_check(cli->store, one, def[0] ? 1 : 0, flags, &rep, &err);
	} else {
		r = sl_check(cli->store, roots, n_roots, flags, &rep, &err);
	}
	if (r < 0)
		return cli_fail(r, &err, "cannot check");
	/* A store that failed its integrity check is not asked for more. */
	if (strcmp(rep.integrity, "ok") == 0) {
		err = (struct sl_error){ 0 };
		r = sl_list(cli->store, 0, NULL, cli_failed_add, &fl, &err);
		if (r < 0) {
			free(fl.v);
			sl_check_report_finish(&rep);
			return cli_fail(r, &err, "cannot list the failed stages");
		}
	}

	/* Stages whose root now leads elsewhere: their files may sit in the
	 * old directory, which no removal will look at. */
	moved.v = calloc(rep.n_root_moved + 1, sizeof(*moved.v));
	if (!moved.v) {
		free(fl.v);
		sl_check_report_finish(&rep);
		return cli_fail(-ENOMEM, NULL, "cannot check");
	}
	for (size_t i = 0; i < rep.n_root_moved; i++) {
		struct cli_failed *m = &moved.v[moved.n++];

		snprintf(m->id, sizeof(m->id), "%s", rep.root_moved[i]);
		(void)cli_stage_where(cli, m->id, &m->where);
		snprintf(m->reason, sizeof(m->reason), "staging root now leads to another directory");
	}
	code = cli->json ? print_json(&rep, &fl, &moved) : (print_text(&rep, &fl, &moved), EX_OK);
	/* Clean means a sound store, no failed stage (its secrets may still
	 * be on disk) and no orphan left behind: one that --remove-orphans
	 * removed is fixed, one it had to leave is not. */
	clean = strcmp(rep.integrity, "ok") == 0 && fl.n == 0 && moved.n == 0;
	for (size_t i = 0; i < rep.n_orphans && clean; i++)
		clean = was_removed(&rep, rep.orphans[i]);
	if (code == EX_OK && !clean)
		code = 1;
	free(fl.v);
	free(moved.v);
	sl_check_report_finish(&rep);
	return code;
}
