/* SPDX-License-Identifier: MIT */
/*
 * cmd-recover.c: `stagelog recover`.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Thousands of stages take a while: show where we are, but only to a person
 * watching a terminal (never into a log); see cli_progress_start(). */
static void show_progress(size_t done, size_t total, void *userdata)
{
	cli_progress_show(userdata, "recovering %zu/%zu stages", done, total);
}

/* Whether the pass judged every stage in flight and finished each one
 * itself: no root filter, and every stage it examined recovered or failed
 * by it (none live, none claimed by another recoverer). Then the ones it
 * failed are all the failed stages its scan saw, and the store need not
 * be read again. A dry run finishes none. */
static bool pass_saw_all(const struct sl_recover_options *opts, const struct sl_recover_report *rep)
{
	return !rep->dry_run && !opts->root && rep->examined == rep->n_recovered + rep->n_failed;
}

/*
 * Every stage that is failed now: the report's failures first (their
 * reasons are this pass's), then the ones the pass left alone (a live
 * lock, another root), so that a failed stage is never silent.
 */
static int collect_failed(struct cli *cli, const struct sl_recover_options *opts, const struct sl_recover_report *rep,
			  struct cli_failed_list *ret)
{
	struct sl_error err = { 0 };
	struct cli_failed_list now = { 0 };
	int r;

	r = cli->store && !pass_saw_all(opts, rep) ? sl_recover_list(cli->store, 0, NULL, cli_failed_add, &now, &err)
						   : 0;
	if (r < 0) {
		free(now.v);
		return cli_fail(r, &err, "cannot list the failed stages");
	}
	ret->v = calloc(rep->n_failed + now.n + 1, sizeof(*ret->v));
	if (!ret->v) {
		free(now.v);
		return cli_fail(-ENOMEM, NULL, "cannot list the failed stages");
	}
	for (size_t i = 0; i < rep->n_failed; i++)
		cli_failed_set(cli, &ret->v[ret->n++], rep->failed[i].id, rep->failed[i].reason);
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

static int print_json(const struct sl_recover_report *rep, const struct cli_failed_list *fl)
{
	cJSON *doc = cJSON_CreateObject();

	return cli_json_print(
		doc, doc && cJSON_AddNumberToObject(doc, "examined", (double)rep->examined) &&
			     cli_json_add_item(doc, "recovered",
					       cli_json_array(rep->n_recovered, cli_json_id_item, rep->recovered)) &&
			     cli_json_add_item(doc, "live", cli_json_array(rep->n_live, cli_json_id_item, rep->live)) &&
			     cli_json_add_item(doc, "failed", cli_json_array(fl->n, cli_json_failed_item, fl)) &&
			     cJSON_AddBoolToObject(doc, "dry_run", rep->dry_run));
}

/* Text lines: "recovered ID LABEL PATH", "live ID LABEL PATH (left
 * alone)", "failed ID LABEL PATH: REASON", then a summary line. */
static void print_text(struct cli *cli, const struct sl_recover_report *rep, const struct cli_failed_list *fl)
{
	struct cli_where w = { 0 };

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
	/* A failed stage may still hold secrets: it is an error, and goes
	 * where errors go (and the journal files it as one), not among the
	 * results on stdout. */
	for (size_t i = 0; i < fl->n; i++)
		cli_print_failed(&fl->v[i]);
	printf("%zu examined, %zu %s, %zu live, %zu failed\n", rep->examined, rep->n_recovered,
	       rep->dry_run ? "would be recovered" : "recovered", rep->n_live, fl->n);
}

int cli_last_recover_path(const char *db, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s.last-recover", db);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Writes the outcome line over the file's one line, under its lock:
 * metrics reads it under a shared one, so it never sees half of each. In
 * place, at a fixed width: no temporary file and no rename, which on ext4
 * starts writing the new file back to the disk at once. */
static int write_outcome(int fd, const char *line)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
		return -EPERM;
	if (flock(fd, LOCK_EX) < 0)
		return -errno;
	if (st.st_nlink == 1 && st.st_size == 0 && fchmod(fd, 0600) < 0)
		return -errno;
	if (pwrite(fd, line, CLI_OUTCOME_WIDTH, 0) != CLI_OUTCOME_WIDTH)
		return errno ? -errno : -EIO;
	if (st.st_size != CLI_OUTCOME_WIDTH && ftruncate(fd, CLI_OUTCOME_WIDTH) < 0)
		return -errno;
	return 0;
}

/*
 * Remembers when this pass ran and how it ended, for `metrics`. A file
 * beside the store rather than a table in it: it must be written even when
 * the store could not be, and it holds nothing a reader could abuse (no
 * id, no path). Failing to write it is a warning, not a failed recovery.
 */
static void note_outcome(struct cli *cli, const char *outcome, size_t recovered, size_t failed)
{
	char db[PATH_MAX], path[CLI_LAST_RECOVER_PATH_MAX], line[CLI_OUTCOME_WIDTH + 1];
	_cleanup_close_ int fd = -1;
	int n, r;

	if (cli_store_path(cli, db, sizeof(db)) != EX_OK || cli_last_recover_path(db, path, sizeof(path)) < 0)
		return;
	n = snprintf(line, sizeof(line), "v1 %lld %s %zu %zu", (long long)epoch_ms(), outcome, recovered, failed);
	if (n < 0 || n >= CLI_OUTCOME_WIDTH)
		return;
	memset(line + n, ' ', CLI_OUTCOME_WIDTH - 1 - (size_t)n);
	line[CLI_OUTCOME_WIDTH - 1] = '\n';
	/* Not synced: a power loss may take the last outcome with it (metrics
	 * then show the one before, or none), and a recovery that found
	 * nothing to do syncs nothing at all. */
	fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC, 0600);
	r = fd < 0 ? -errno : write_outcome(fd, line);
	if (r < 0 && cli->verbosity >= 0) {
		cli_diag(LOG_WARNING);
		fputs("cannot record the outcome of recovery: ", stderr);
		cli_fput_escaped(stderr, path, strlen(path));
		fprintf(stderr, ": %s\n", strerror(-r));
	}
}

/* What the options ask for, and the --force ids once resolved. */
struct recover_args {
	struct sl_recover_options opts;
	char **force_args;
	size_t n_force;
	char (*force)[SL_ID_SIZE];
	const char **force_ptrs;
};

static void recover_args_finish(struct recover_args *a)
{
	free(a->force_args);
	free(a->force);
	free(a->force_ptrs);
}

static int recover_option(int c, char *arg, void *userdata)
{
	struct recover_args *a = userdata;
	char **v;

	switch (c) {
	case 'n':
		a->opts.dry_run = true;
		return EX_OK;
	case 'r':
		a->opts.root = arg;
		return EX_OK;
	default: /* 'f' */
		v = reallocarray(a->force_args, a->n_force + 1, sizeof(*v));
		if (!v)
			return cli_fail(-ENOMEM, NULL, "cannot parse the options");
		a->force_args = v;
		a->force_args[a->n_force++] = arg;
		return EX_OK;
	}
}

static const struct cli_options recover_options = {
	.cmd = "recover",
	.optstring = ":h",
	.longopts =
		(const struct option[]){
			{ "dry-run", no_argument, NULL, 'n' },
			{ "root", required_argument, NULL, 'r' },
			{ "force", required_argument, NULL, 'f' },
			CLI_COMMON_OPTIONS,
			{ 0 },
		},
	.usage = usage,
	.handle = recover_option,
};

/* Opens the store read-only. No store, nothing in flight: nothing to
 * recover, and no store to create for it (but a --force id names a stage
 * that cannot be there). Returns an exit code. */
static int open_store(struct cli *cli, const struct recover_args *a)
{
	enum cli_stop stop = CLI_GO_ON;
	int code = EX_OK;

	for (size_t i = 0; i < a->n_force && code == EX_OK; i++)
		code = cli_check_id(a->force_args[i]);
	/* A dry run only reads: root may inspect another user's store. */
	cli->read_only = a->opts.dry_run;
	if (code == EX_OK)
		code = cli_open_store_readonly(cli, &stop);

	if (code == EX_OK && stop == CLI_NO_STORE && a->n_force > 0)
		return cli_usage_error("unknown id: argument #%d: there is no store (see --db)",
				       cli_arg_position(a->force_args[0]));
	if (code == EX_OK && stop == CLI_NO_STORE)
		return cli_no_store(cli, NULL);
	return code;
}

/* Resolves the --force ids (prefixes) into a->opts.force. Returns an exit
 * code. */
static int resolve_force(struct cli *cli, struct recover_args *a)
{
	int code;

	if (a->n_force == 0)
		return EX_OK;
	a->force = calloc(a->n_force, sizeof(*a->force));
	a->force_ptrs = calloc(a->n_force, sizeof(*a->force_ptrs));
	if (!a->force || !a->force_ptrs)
		return cli_fail(-ENOMEM, NULL, "cannot parse the options");
	for (size_t i = 0; i < a->n_force; i++) {
		code = cli_resolve_id(cli, a->force_args[i], a->force[i]);
		if (code != EX_OK)
			return code;
		a->force_ptrs[i] = a->force[i];
	}
	a->opts.force = a->force_ptrs;
	a->opts.n_force = a->n_force;
	return EX_OK;
}

/* Runs the pass into rep. Returns an exit code; a pass that did not run
 * (or was stopped by a signal) is noted as an error. */
static int run_pass(struct cli *cli, struct sl_recover_options *opts, struct sl_recover_report *rep)
{
	struct sl_error err = { 0 };
	struct cli_progress progress;
	int r, code;

	cli_progress_start(&progress, cli);
	if (progress.on) {
		opts->progress = show_progress;
		opts->userdata = &progress;
	}
	opts->cancel = cli_cancel_flag();
	rep->dry_run = opts->dry_run;
	r = cli->store ? sl_recover_run(cli->store, opts, rep, &err) : 0;
	cli_progress_end(&progress);
	/* progress lives on this frame: the caller's options must not keep
	 * its address. */
	opts->progress = NULL;
	opts->userdata = NULL;
	if (r >= 0)
		return EX_OK;
	code = cli_fail(r, &err, "cannot recover");
	if (!opts->dry_run)
		note_outcome(cli, "error", 0, 0);
	return r == -ECANCELED ? CLI_EXIT_SIGNAL + cli_signal_caught() : code;
}

/* Prints what the pass did and every failed stage, and notes the outcome.
 * Returns an exit code: 1 while a failed stage remains. */
static int report(struct cli *cli, const struct sl_recover_options *opts, const struct sl_recover_report *rep)
{
	_cleanup_(cli_failed_list_finish) struct cli_failed_list fl = { 0 };
	int code;

	/* A failed stage may still hold secrets: recovery is not done while
	 * one remains, whether or not this pass touched it. */
	code = collect_failed(cli, opts, rep, &fl);
	if (code == EX_OK) {
		if (cli->json)
			code = print_json(rep, &fl);
		else
			print_text(cli, rep, &fl);
		if (code == EX_OK && fl.n > 0)
			code = CLI_EXIT_NOT_CLEAN;
	}
	/* Without a store there is no folder of its own to note it in. */
	if (!rep->dry_run && cli->store)
		note_outcome(cli, code == EX_OK ? "ok" : fl.n > 0 ? "failed" : "error", rep->n_recovered, fl.n);
	return code;
}

int cmd_recover(struct cli *cli, int argc, char **argv)
{
	_cleanup_(recover_args_finish) struct recover_args a = { 0 };
	_cleanup_(sl_recover_report_finish) struct sl_recover_report rep = { 0 };
	enum cli_stop stop;
	int code;

	code = cli_parse_options(cli, &recover_options, argc, argv, &a, &stop);
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;
	code = cli_want_operands("recover", argc, argv, 0, "");
	if (code == EX_OK)
		code = open_store(cli, &a);
	if (code == EX_OK)
		code = resolve_force(cli, &a);
	if (code == EX_OK)
		code = run_pass(cli, &a.opts, &rep);
	if (code == EX_OK)
		code = report(cli, &a.opts, &rep);
	return code;
}
