/* SPDX-License-Identifier: MIT */
/*
 * cmd-stage.c: `stagelog stage`, and the stage options `run` shares.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "envfile.h"
#include "fd-util.h"

static const char usage[] =
	"usage: stagelog stage [--root DIR] --bundle PKG [--label L] [--env NAME[=VALUE]]...\n"
	"                      [--env-file FILE]... [--env-keep NAME]... [--owner PID]\n"
	"\n"
	"Stages the OCI bundle PKG under the staging root and leaves it ready.\n"
	"Prints ID<TAB>PATH, or {\"id\", \"label\", \"path\"} with --json.\n"
	"\n"
	"  --root DIR        the staging root (default: /run/stagelog for root,\n"
	"                    else $XDG_RUNTIME_DIR/stagelog)\n"
	"  --bundle PKG      the packaged bundle: PKG/rootfs/ and PKG/config.json\n"
	"  --label L         the stage's label, " CLI_LABEL_RULE
	" (default: stage)\n"
	"  --env NAME=VALUE  put NAME=VALUE in process.env\n"
	"  --env NAME        put NAME in process.env with its value from stagelog's environment\n"
	"  --env-file FILE   read NAME=VALUE lines (# comments, blank lines); a later name wins\n"
	"  --env-keep NAME   keep NAME with its value from PKG/config.json's process.env\n"
	"  --owner PID       the process the stage belongs to (default: the parent process)\n"
	"  -h, --help        print this help\n";

bool cli_stage_args_option(struct cli_stage_args *a, int c, char *arg, int *ret_code)
{
	char **opts;
	int *kind;

	*ret_code = EX_OK;
	switch (c) {
	case 'r':
		a->root = arg;
		return true;
	case 'b':
		a->bundle = arg;
		return true;
	case 'l':
		/* Checked here, before a store or a root exists. */
		if (!label_valid(arg))
			*ret_code =
				cli_usage_error("%s: --label: argument #%d: bad label: want [a-z0-9][a-z0-9_.-]{0,%d}",
						a->cmd, cli_arg_position(arg), LABEL_MAX - 1);
		else
			a->label = arg;
		return true;
	case 'e':
	case 'E':
	case 'K':
		opts = reallocarray(a->env_opts, a->n_env_opts + 1, sizeof(*opts));
		if (!opts) {
			*ret_code = cli_fail(-ENOMEM, NULL, "cannot parse the options");
			return true;
		}
		a->env_opts = opts;
		kind = reallocarray(a->env_kind, a->n_env_opts + 1, sizeof(*kind));
		if (!kind) {
			*ret_code = cli_fail(-ENOMEM, NULL, "cannot parse the options");
			return true;
		}
		a->env_kind = kind;
		a->env_opts[a->n_env_opts] = arg;
		a->env_kind[a->n_env_opts] = c;
		a->n_env_opts++;
		return true;
	default:
		return false;
	}
}

void cli_stage_args_finish(struct cli_stage_args *a)
{
	free(a->env_opts);
	free(a->env_kind);
	a->env_opts = NULL;
	a->env_kind = NULL;
	a->n_env_opts = 0;
}

/*
 * "stagelog: CMD: OPTION: argument #N: MESSAGE" for an --env or --env-file
 * whose argument arg failed with r and the library's message in err. The
 * argument itself is never shown: a name fits a token as well, and a file
 * name may be a token that lost its own option. Returns the exit code.
 */
static int option_fail(const struct cli_stage_args *a, const char *option, const char *arg, int r,
		       const struct sl_error *err)
{
	cli_diag(LOG_ERR);
	fprintf(stderr, "%s: %s: argument #%d: ", a->cmd, option, cli_arg_position(arg));
	cli_fput_escaped(stderr, err->msg, strnlen(err->msg, sizeof(err->msg)));
	fputc('\n', stderr);
	return cli_exit_code(r, err);
}

/* Adds one --env argument: NAME=VALUE, or NAME with the value from our own
 * environment. Returns an exit code. */
static int add_env_arg(const struct cli_stage_args *a, struct oci_env_list *l, char *arg)
{
	struct sl_error err = { 0 };
	char *eq = strchr(arg, '=');
	const char *value;
	size_t name_len;
	int r;

	if (eq) {
		name_len = (size_t)(eq - arg);
		value = eq + 1;
	} else {
		name_len = strlen(arg);
		value = getenv(arg);
		if (!value && oci_env_name_valid(arg, name_len))
			return cli_usage_error(
				"%s: --env: argument #%d: the variable is not set in stagelog's "
				"environment",
				a->cmd, cli_arg_position(arg));
		if (!value)
			return cli_usage_error(
				"%s: --env: argument #%d: not a variable name "
				"([A-Za-z_][A-Za-z0-9_]*) and no NAME=VALUE",
				a->cmd, cli_arg_position(arg));
	}
	r = oci_env_add(l, arg, name_len, value, strlen(value), &err);
	/* The list holds its own copy now. Wipe the one in argv, so that
	 * /proc/PID/cmdline stops showing it for the rest of our life. */
	if (eq)
		explicit_bzero(eq + 1, strlen(eq + 1));
	if (r < 0)
		return option_fail(a, "--env", arg, r, &err);
	return EX_OK;
}

/* Adds one --env-keep argument: a name whose value the library takes from
 * the packaged config.json. Returns an exit code. */
static int add_keep_arg(const struct cli_stage_args *a, struct oci_env_list *l, const char *arg)
{
	struct sl_error err = { 0 };
	int r;

	if (!oci_env_name_valid(arg, strlen(arg)))
		return cli_usage_error("%s: --env-keep: argument #%d: not a variable name ([A-Za-z_][A-Za-z0-9_]*)",
				       a->cmd, cli_arg_position(arg));
	r = oci_env_add_kept(l, arg, strlen(arg), &err);
	if (r < 0)
		return option_fail(a, "--env-keep", arg, r, &err);
	return EX_OK;
}

/* The --env-keep argument that became variable i of the list: at[k] is
 * the list's length before option k was applied. */
static const char *kept_arg(const struct cli_stage_args *a, const size_t *at, size_t i)
{
	for (size_t k = 0; k < a->n_env_opts; k++)
		if (a->env_kind[k] == 'K' && at[k] == i)
			return a->env_opts[k];
	return NULL;
}

/* The copy's progress line: paths done of total, bytes, time. */
static void show_copy_progress(const struct sl_progress *sp, void *userdata)
{
	char bytes[CLI_BYTES_MAX];

	cli_format_bytes(sp->bytes, bytes);
	cli_progress_show(userdata, "staging %llu/%llu paths, %s", (unsigned long long)sp->done,
			  (unsigned long long)sp->total, bytes);
}

/* Sets a->root to the default root when --root was not given. Returns an
 * exit code. */
static int choose_root(struct cli_stage_args *a)
{
	int code;

	if (a->root)
		return EX_OK;
	code = cli_default_root(a->root_buf, sizeof(a->root_buf), false);
	if (code == EX_OK)
		a->root = a->root_buf;
	return code;
}

/*
 * Applies the env options to env, in command-line order: the library lets
 * a later name win, whether it came from --env, an --env-file or
 * --env-keep (whose value the library takes from the packaged config,
 * never from our environment). at[i] gets the list's length before option
 * i. Returns an exit code.
 */
static int read_env_options(const struct cli_stage_args *a, struct oci_env_list *env, size_t *at)
{
	struct sl_error err = { 0 };
	int r, code = EX_OK;

	/* An env file may be a pipe that blocks (`<(vault read ...)`): until
	 * the stage begins there is nothing to abort, so a signal simply ends
	 * us. */
	cli_signals_catch(false);
	for (size_t i = 0; i < a->n_env_opts && code == EX_OK; i++) {
		at[i] = env->n;
		if (a->env_kind[i] == 'e') {
			code = add_env_arg(a, env, a->env_opts[i]);
			continue;
		}
		if (a->env_kind[i] == 'K') {
			code = add_keep_arg(a, env, a->env_opts[i]);
			continue;
		}
		r = oci_env_read_file(env, a->env_opts[i], &err);
		if (r < 0)
			code = option_fail(a, "--env-file", a->env_opts[i], r, &err);
	}
	cli_signals_catch(true);
	return code;
}

/* What is said of a stage that now exists (r is sl_oci_stage()'s result):
 * a root on a disk, with -v where it is, and a process without a PATH. */
static void note_staged(const struct cli *cli, const struct cli_stage_args *a, struct sl_stage *stage,
			const struct sl_oci_notes *notes, int r)
{
	/* Said once, for a stage that exists (a root that could not be used
	 * has its own diagnostic): on a disk, a power loss, or a crash that
	 * no recovery follows, leaves the secrets on it. Only a disk known
	 * as one: unknown counts as memory, as a warning must not cry wolf. */
	if (cli->verbosity >= 0 && path_volatility(sl_stage_path(stage)) == FS_PERSISTENT) {
		cli_diag(LOG_WARNING);
		fputs("warning: staging root ", stderr);
		cli_fput_token(stderr, a->root, strlen(a->root));
		fputs(" is on a disk, not in memory: a power loss can leave secrets on it\n", stderr);
	}
	if (cli->verbosity >= 1) {
		cli_diag(LOG_INFO);
		fprintf(stderr, "staged %s at ", sl_stage_id(stage));
		cli_fput_token(stderr, sl_stage_path(stage), strlen(sl_stage_path(stage)));
		fputc('\n', stderr);
	}
	/* Once, here, for stage and run alike: a bundle from `runc spec`
	 * runs "sh" and finds it with the PATH that --env-keep PATH keeps. */
	if (r == 0 && notes->no_path)
		cli_say(LOG_WARNING,
			"warning: %s: process.args[0] is not an absolute path and the staged "
			"process.env has no PATH; to keep the packaged one, pass --env-keep PATH",
			a->cmd);
}

/* Stages the bundle with the variables in env (at: as read_env_options()
 * left it) into *ret. Returns an exit code. */
static int stage_bundle(struct cli *cli, const struct cli_stage_args *a, pid_t owner, const struct oci_env_list *env,
			const size_t *at, struct sl_stage **ret)
{
	struct sl_oci_options opts = { 0 };
	struct sl_oci_notes notes = { 0 };
	struct sl_error err = { 0 };
	struct cli_progress progress;
	const char *kept;
	int r;

	opts.root = a->root;
	opts.bundle = a->bundle;
	opts.stage.label = a->label;
	opts.stage.owner_pid = owner;
	opts.stage.cancel = cli_cancel_flag();
	opts.env = env->vars;
	opts.n_env = env->n;
	opts.notes = &notes;
	cli_progress_start(&progress, cli);
	if (progress.on) {
		opts.stage.progress = show_copy_progress;
		opts.stage.progress_userdata = &progress;
	}
	r = sl_oci_stage(cli->store, &opts, ret, &err);
	cli_progress_end(&progress);
	if (r >= 0) {
		note_staged(cli, a, *ret, &notes, r);
		return EX_OK;
	}
	kept = notes.missing_kept != SIZE_MAX ? kept_arg(a, at, notes.missing_kept) : NULL;
	if (cli_signal_caught())
		return cli_interrupted("staging");
	if (kept)
		/* The option and its position, never the name: a usage error
		 * repeats no argument. */
		return cli_usage_error("%s: --env-keep: argument #%d: not in the packaged config's process.env", a->cmd,
				       cli_arg_position(kept));
	return cli_fail(r, &err, "cannot stage the bundle");
}

int cli_stage_args_stage(struct cli *cli, struct cli_stage_args *a, pid_t owner, struct sl_stage **ret)
{
	_cleanup_free_ size_t *at = NULL;
	struct oci_env_list env = { 0 };
	int code;

	if (!a->bundle)
		return cli_usage_error("%s: missing --bundle", a->cmd);
	code = choose_root(a);
	if (code != EX_OK)
		return code;
	at = calloc(a->n_env_opts ? a->n_env_opts : 1, sizeof(*at));
	if (!at)
		return cli_fail(-ENOMEM, NULL, "cannot parse the options");

	code = read_env_options(a, &env, at);
	if (code == EX_OK)
		code = cli->store ? EX_OK : cli_open_store(cli);
	if (code == EX_OK)
		code = stage_bundle(cli, a, owner, &env, at, ret);
	oci_env_list_finish(&env);
	/* A signal that came after the last path still aborts the stage. */
	if (code == EX_OK && cli_signal_caught()) {
		(void)sl_stage_abort(*ret, NULL);
		sl_stage_free(*ret);
		*ret = NULL;
		code = cli_interrupted("staging");
	}
	return code;
}

/*
 * Prints the stage's id and path and makes sure they were delivered: a
 * failed write, flush or close of stdout (a full disk, a pipe whose reader
 * is gone, a closed stdout) means nobody has the id, so the stage is
 * aborted and the exit is 74. From the first byte written on, a signal no
 * longer aborts: the id may be out.
 */
static int deliver(struct cli *cli, struct sl_stage *stage)
{
	struct sl_error err = { 0 };
	int r, code = EX_OK;

	if (cli->json) {
		cJSON *doc = cJSON_CreateObject();

		code = cli_json_print(doc, doc && cJSON_AddStringToObject(doc, "id", sl_stage_id(stage)) &&
						   cJSON_AddStringToObject(doc, "label", sl_stage_label(stage)) &&
						   cli_json_add_bytes(doc, "path", sl_stage_path(stage),
								      strlen(sl_stage_path(stage))));
	} else {
		/* Raw, not escaped: scripts read this line with `read id path`. */
		printf("%s\t%s\n", sl_stage_id(stage), sl_stage_path(stage));
	}
	cli->stdout_closed = true;
	r = cli_deliver_stdout();
	if (code == EX_OK && r == 0) {
		cli->delivered = true;
		return EX_OK;
	}
	if (code == EX_OK) {
		cli_error("cannot write output: stdout: %s; the stage is aborted", strerror(-r));
		code = EX_IOERR;
	}
	r = sl_stage_abort(stage, &err);
	if (r < 0)
		cli_fail(r, &err, "cannot abort the stage");
	return code;
}

/* The options: the stage's, and --owner. */
struct stage_cmd_args {
	struct cli_stage_args stage;
	pid_t owner;
};

static void stage_cmd_args_finish(struct stage_cmd_args *a)
{
	cli_stage_args_finish(&a->stage);
}

static int stage_option(int c, char *arg, void *userdata)
{
	struct stage_cmd_args *a = userdata;
	char *end;
	long pid;
	int code;

	if (cli_stage_args_option(&a->stage, c, arg, &code))
		return code;
	/* 'o' */
	errno = 0;
	pid = strtol(arg, &end, 10);
	if (errno || end == arg || *end || pid <= 0 || pid > INT_MAX)
		return cli_usage_error("stage: --owner: argument #%d: expected a process id", cli_arg_position(arg));
	a->owner = (pid_t)pid;
	return EX_OK;
}

static const struct cli_options stage_options = {
	.cmd = "stage",
	.optstring = ":h",
	.longopts =
		(const struct option[]){
			STAGE_LONG_OPTIONS,
			{ "owner", required_argument, NULL, 'o' },
			CLI_COMMON_OPTIONS,
			{ 0 },
		},
	.usage = usage,
	.handle = stage_option,
};

int cmd_stage(struct cli *cli, int argc, char **argv)
{
	_cleanup_(stage_cmd_args_finish) struct stage_cmd_args a = { .stage = { .cmd = "stage" }, .owner = getppid() };
	struct sl_stage *stage = NULL;
	enum cli_stop stop;
	int code;

	code = cli_parse_options(cli, &stage_options, argc, argv, &a, &stop);
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;
	code = cli_want_operands("stage", argc, argv, 0, "");
	if (code == EX_OK)
		code = cli_stage_args_stage(cli, &a.stage, a.owner, &stage);
	if (code != EX_OK)
		return code;
	code = deliver(cli, stage);
	/* A ready stage is finished, so freeing it only drops our lock and
	 * handles; the stage stays ready for its owner. One whose id did not
	 * reach anyone was aborted: nobody would ever release it. */
	sl_stage_free(stage);
	return code;
}
