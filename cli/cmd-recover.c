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
	"Exits 1 if a stage could not be removed (it is then marked failed).\n"
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

static int print_json(const struct sl_recover_report *rep)
{
	cJSON *doc = cJSON_CreateObject(), *failed = cJSON_CreateArray(), *recovered, *live;
	bool ok = doc && failed;

	for (size_t i = 0; ok && i < rep->n_failed; i++) {
		cJSON *f = cJSON_CreateObject();

		ok = f && cJSON_AddItemToArray(failed, f);
		if (!ok) {
			cJSON_Delete(f);
			break;
		}
		ok = cJSON_AddStringToObject(f, "id", rep->failed[i].id) &&
		     cli_json_add_bytes(f, "reason", rep->failed[i].reason,
					strnlen(rep->failed[i].reason, sizeof(rep->failed[i].reason)));
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

static void print_text(const struct sl_recover_report *rep)
{
	for (size_t i = 0; i < rep->n_recovered; i++)
		printf(rep->dry_run ? "would recover %s\n" : "recovered %s\n", rep->recovered[i]);
	for (size_t i = 0; i < rep->n_live; i++)
		printf("live %s (left alone)\n", rep->live[i]);
	for (size_t i = 0; i < rep->n_failed; i++) {
		printf("failed %s: ", rep->failed[i].id);
		cli_fput_escaped(stdout, rep->failed[i].reason,
				 strnlen(rep->failed[i].reason, sizeof(rep->failed[i].reason)));
		putchar('\n');
	}
	printf("%zu examined, %zu %s, %zu live, %zu failed\n", rep->examined, rep->n_recovered,
		       rep->dry_run ? "would be recovered" : "recovered", rep->n_live, rep->n_failed);
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

	rep.dry_run = opts.dry_run;
	r = cli->store ? sl_recover_run(cli->store, &opts, &rep, &err) : 0;
	if (progress.shown)
		fputc('\n', stderr);
	if (r < 0)
		return cli_fail(r, &err, "cannot recover");

	if (cli->json)
		code = print_json(&rep);
	else
		print_text(&rep);
	if (code == EX_OK && rep.n_failed > 0)
		code = 1;
	sl_recover_report_finish(&rep);
	return code;
}
