/* SPDX-License-Identifier: MIT */
/*
 * cmd-recover.c: `stagelog recover`.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
	"usage: stagelog recover [--dry-run] [--root DIR] [--force ID]...\n"
	"\n"
	"For every stale in-flight stage: claims it, removes its entries newest\n"
	"first and marks it recovered. Live stages are listed and left alone.\n"
	"Exits 1 while any stage is failed after the pass (a removal that could not\n"
	"finish), whether or not this pass touched it, and lists each with its reason.\n"
	"\n"
	"  --dry-run     report what would be done and change nothing\n"
	"  --root DIR    only stages under the staging root DIR\n"
	"  --force ID    treat this in-flight stage as stale even if its owner looks\n"
	"                alive (a finished stage is never touched)\n"
	"  -h, --help    print this help\n";

struct progress {
	bool shown;
};

/* Thousands of stages take a while: show where we are, but only to a person
 * watching a terminal (never into a log), and only past the point where
 * they would wonder what is going on. */
static void show_progress(size_t done, size_t total, void *userdata)
{
	struct progress *p = userdata;

	if (total <= 36)
		return;
	fprintf(stderr, "\rstagelog: recovering %zu/%zu", done, total);
	p->shown = true;
}

static cJSON *id_array(char (*ids)[SL_ID_SIZE], size_t n)
{
	cJSON *a = cJSON_CreateArray();

	for (size_t i = 0; a && i < n; i++) {
		cJSON *s = cJSON_CreateString(ids[i]);

		if (!s || !cJSON_AddItemToArray(a, s)) {
			cJSON_Delete(s);
			cJSON_Delete(a);
			return NULL;
		}
	}
	return a;
}

/* A stage failed after the pass, whether or not the pass touched it. */
struct failed {
	char id[SL_ID_SIZE];
	struct cli_where where;
	char reason[256];
};

struct failed_list {
	struct failed *v;
	size_t n;
};

static int add_failed(const struct sl_stage_info *info, void *userdata)
{
	struct failed_list *l = userdata;
	struct failed *v;

	if (info->state != SL_STATE_FAILED)
		return 0;
	v = reallocarray(l->v, l->n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	l->v = v;
	v = &l->v[l->n++];
	snprintf(v->id, sizeof(v->id), "%s", info->id);
	snprintf(v->where.label, sizeof(v->where.label), "%s", info->label);
	snprintf(v->where.path, sizeof(v->where.path), "%s", info->path);
	snprintf(v->reason, sizeof(v->reason), "%s", info->reason ? info->reason : "");
	return 0;
}

/*
 * Every stage that is failed now: the report's failures first (their
 * reasons are this pass's), then the ones the pass left alone (a live
 * lock, another root), so that a failed stage is never silent.
 */
static int collect_failed(struct cli *cli, const struct sl_recover_report *rep, struct failed_list *ret)
{
	struct sl_error err = { 0 };
	struct failed_list now = { 0 };
	int r;

	r = cli->store ? sl_list(cli->store, 0, NULL, add_failed, &now, &err) : 0;
	if (r < 0) {
		free(now.v);
		return cli_fail(r, &err, "cannot list the failed stages");
	}
	ret->v = calloc(rep->n_failed + now.n + 1, sizeof(*ret->v));
	if (!ret->v) {
		free(now.v);
		return cli_fail(-ENOMEM, NULL, "cannot list the failed stages");
	}
	for (size_t i = 0; i < rep->n_failed; i++) {
		struct failed *f = &ret->v[ret->n++];

		snprintf(f->id, sizeof(f->id), "%s", rep->failed[i].id);
		memcpy(f->reason, rep->failed[i].reason, sizeof(f->reason));
		f->reason[sizeof(f->reason) - 1] = '\0';
		(void)cli_stage_where(cli, f->id, &f->where);
	}
	for (size_t i = 0; i < now.n; i++) {
		bool seen = false;

		for (size_t j = 0; j < rep->n_failed && !seen; j++)
			seen = strcmp(now.v[i].id, rep->failed[j].id) == 0;
		if (!seen)
			ret->v[ret->n++] = now.v[i];
	}
	free(now.v);
	return EX_OK;
}

static int print_json(const struct sl_recover_report *rep, const struct failed_list *fl)
{
	cJSON *doc = cJSON_CreateObject(), *failed = cJSON_CreateArray(), *recovered, *live;
	bool ok = doc && failed;

	for (size_t i = 0; ok && i < fl->n; i++) {
		const struct failed *fi = &fl->v[i];
		cJSON *f = cJSON_CreateObject();

		ok = f && cJSON_AddItemToArray(failed, f);
		if (!ok) {
			cJSON_Delete(f);
			break;
		}
		ok = cJSON_AddStringToObject(f, "id", fi->id) && cJSON_AddStringToObject(f, "label", fi->where.label) &&
		     cli_json_add_bytes(f, "path", fi->where.path, strlen(fi->where.path)) &&
		     cli_json_add_bytes(f, "reason", fi->reason, strlen(fi->reason));
	}
	recovered = id_array(rep->recovered, rep->n_recovered);
	live = id_array(rep->live, rep->n_live);
	ok = ok && cJSON_AddNumberToObject(doc, "examined", (double)rep->examined);
	ok = ok && recovered && cJSON_AddItemToObject(doc, "recovered", recovered);
	if (!ok)
		cJSON_Delete(recovered);
	ok = ok && live && cJSON_AddItemToObject(doc, "live", live);
	if (!ok)
		cJSON_Delete(live);
	ok = ok && cJSON_AddItemToObject(doc, "failed", failed);
	if (!ok)
		cJSON_Delete(failed);
	ok = ok && cJSON_AddBoolToObject(doc, "dry_run", rep->dry_run);
	if (!ok) {
		cJSON_Delete(doc);
		doc = NULL;
	}
	return cli_json_print(doc);
}

/* Text lines: "recovered ID LABEL PATH", "live ID LABEL PATH (left
 * alone)", "failed ID LABEL PATH: REASON", then a summary line. */
static void print_text(struct cli *cli, const struct sl_recover_report *rep, const struct failed_list *fl)
{
	struct cli_where w;

	for (size_t i = 0; i < rep->n_recovered; i++) {
		(void)cli_stage_where(cli, rep->recovered[i], &w);
		fputs(rep->dry_run ? "would recover " : "recovered ", stdout);
		cli_fput_where(stdout, rep->recovered[i], &w);
		putchar('\n');
	}
	for (size_t i = 0; i < rep->n_live; i++) {
		(void)cli_stage_where(cli, rep->live[i], &w);
		fputs("live ", stdout);
		cli_fput_where(stdout, rep->live[i], &w);
		fputs(" (left alone)\n", stdout);
	}
	for (size_t i = 0; i < fl->n; i++) {
		fputs("failed ", stdout);
		cli_fput_where(stdout, fl->v[i].id, &fl->v[i].where);
		fputs(": ", stdout);
		cli_fput_escaped(stdout, fl->v[i].reason, strlen(fl->v[i].reason));
		putchar('\n');
	}
	printf("%zu examined, %zu %s, %zu live, %zu failed\n", rep->examined, rep->n_recovered,
	       rep->dry_run ? "would be recovered" : "recovered", rep->n_live, fl->n);
}

int cli_last_recover_path(const char *db, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s.last-recover", db);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/*
 * Remembers when this pass ran and how it ended, for `metrics`. A file
 * beside the store rather than a table in it: it must be written even when
 * the store could not be, and it holds nothing a reader could abuse (no
 * id, no path). Failing to write it is a warning, not a failed recovery.
 */
static void note_outcome(struct cli *cli, const char *outcome, size_t recovered, size_t failed)
{
	char db[4096], path[4200], line[128];
	int n, r;

	if (cli_store_path(cli, db, sizeof(db)) != EX_OK || cli_last_recover_path(db, path, sizeof(path)) < 0)
		return;
	n = snprintf(line, sizeof(line), "v1 %lld %s %zu %zu\n", (long long)sl_now_ms(), outcome, recovered,
		     failed);
	r = cli_write_atomic(path, line, (size_t)n, 0600);
	if (r < 0 && cli->verbosity >= 0) {
		fputs("stagelog: cannot record the outcome of recovery: ", stderr);
		cli_fput_escaped(stderr, path, strlen(path));
		fprintf(stderr, ": %s\n", strerror(-r));
	}
}

int cmd_recover(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = {
		{ "dry-run", no_argument, NULL, 'n' },
		{ "root", required_argument, NULL, 'r' },
		{ "force", required_argument, NULL, 'f' },
		CLI_COMMON_OPTIONS,
		{ 0 },
	};
	struct sl_recover_options opts = { 0 };
	struct sl_recover_report rep = { 0 };
	struct sl_error err = { 0 };
	struct progress progress = { 0 };
	struct failed_list fl = { 0 };
	_cleanup_free_ char **force_args = NULL;
	_cleanup_free_ char (*force)[SL_ID_SIZE] = NULL;
	_cleanup_free_ const char **force_ptrs = NULL;
	size_t n_force = 0;
	void *tmp;
	int c, r, code;

	while ((c = cli_getopt(cli, "recover", argc, argv, ":h", options)) != -1) {
		switch (c) {
		case 'n':
			opts.dry_run = true;
			break;
		case 'r':
			opts.root = optarg;
			break;
		case 'f':
			tmp = reallocarray(force_args, n_force + 1, sizeof(*force_args));
			if (!tmp)
				return cli_fail(-ENOMEM, NULL, "cannot parse the options");
			force_args = tmp;
			force_args[n_force++] = optarg;
			break;
		case 'h':
			return cli_help(usage);
		default:
			return EX_USAGE;
		}
	}
	code = cli_want_operands("recover", argc, argv, 0, "");
	if (code == EX_OK)
		code = cli_open_store_readonly(cli);
	/* No store, nothing in flight: nothing to recover, and no store to
	 * create for it. */
	if (code == CLI_NO_STORE && n_force > 0)
		return cli_usage_error("unknown id '%s': there is no store at %s", force_args[0], cli->store_path);
	if (code == CLI_NO_STORE)
		code = cli_no_store(cli, NULL);
	if (code != EX_OK)
		return code;

	if (n_force > 0) {
		force = calloc(n_force, sizeof(*force));
		force_ptrs = calloc(n_force, sizeof(*force_ptrs));
		if (!force || !force_ptrs)
			return cli_fail(-ENOMEM, NULL, "cannot parse the options");
		for (size_t i = 0; i < n_force; i++) {
			code = cli_resolve_id(cli, force_args[i], force[i]);
			if (code != EX_OK)
				return code;
			force_ptrs[i] = force[i];
		}
	}
	opts.force = force_ptrs;
	opts.n_force = n_force;
	if (cli->verbosity >= 0 && isatty(STDERR_FILENO)) {
		opts.progress = show_progress;
		opts.userdata = &progress;
	}

	opts.cancel = cli_cancel_flag();
	rep.dry_run = opts.dry_run;
	r = cli->store ? sl_recover_run(cli->store, &opts, &rep, &err) : 0;
	if (progress.shown)
		fputc('\n', stderr);
	if (r == -ECANCELED) {
		cli_fail(r, &err, "cannot recover");
		if (!opts.dry_run)
			note_outcome(cli, "error", 0, 0);
		return 128 + cli_signal_caught();
	}
	if (r < 0) {
		code = cli_fail(r, &err, "cannot recover");
		if (!opts.dry_run)
			note_outcome(cli, "error", 0, 0);
		return code;
	}

	/* A failed stage may still hold secrets: recovery is not done while
	 * one remains, whether or not this pass touched it. */
	code = collect_failed(cli, &rep, &fl);
	if (code == EX_OK) {
		if (cli->json)
			code = print_json(&rep, &fl);
		else
			print_text(cli, &rep, &fl);
		if (code == EX_OK && fl.n > 0)
			code = 1;
	}
	/* Without a store there is no folder of its own to note it in. */
	if (!opts.dry_run && cli->store)
		note_outcome(cli, code == EX_OK ? "ok" : fl.n > 0 ? "failed" : "error", rep.n_recovered, fl.n);
	free(fl.v);
	sl_recover_report_finish(&rep);
	return code;
}
