/* SPDX-License-Identifier: MIT */
/*
 * cmd-run.c: `stagelog run`: stage a bundle, run a runtime on it with the
 * stage's lock, forward signals, release the stage when the runtime exits.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cli.h"

static const char usage[] =
	"usage: stagelog run [--root DIR] --bundle PKG [--label L] [--env NAME[=VALUE]]...\n"
	"                    [--env-file FILE]... [--env-keep NAME]... [--pass-env NAME]...\n"
	"                    -- RUNTIME [ARG]...\n"
	"\n"
	"Stages the OCI bundle PKG with stagelog as its owner, runs RUNTIME (found\n"
	"with stagelog's PATH) with every {bundle} in its ARGs replaced by the\n"
	"bundle path and {id} by the stage id, forwards SIGINT, SIGTERM, SIGHUP and\n"
	"SIGQUIT to it, and releases the stage when it exits. Exits with the\n"
	"runtime's status (128+N after signal N), 127 if it was not found, or 125\n"
	"if it exited but its stage could not be released (its status on stderr).\n"
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
	"  --pass-env NAME   pass NAME from stagelog's environment to RUNTIME; RUNTIME gets\n"
	"                    no other variable\n"
	"  -h, --help        print this help\n";

static const int forwarded[] = { CLI_HANDLED_SIGNALS };

/* Finds name as execvp would, but before forking, so that "not found" is
 * known while the stage can still be released. */
static int find_runtime(const char *name, char **ret)
{
	const char *path = getenv("PATH"), *p, *colon;
	int r = -ENOENT;
	struct stat st;
	char *full;

	if (strchr(name, '/')) {
		if (access(name, F_OK) < 0)
			return negerrno();
		*ret = strdup(name);
		return *ret ? 0 : -ENOMEM;
	}
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path;; p = colon + 1) {
		colon = strchrnul(p, ':');
		/* An empty element means the current directory, as in POSIX. */
		if (asprintf(&full, "%.*s%s%s", (int)(colon - p), p, colon == p ? "" : "/", name) < 0)
			return -ENOMEM;
		if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
			if (access(full, X_OK) == 0) {
				*ret = full;
				return 0;
			}
			r = -EACCES;
		}
		free(full);
		if (*colon == '\0')
			return r;
	}
}

/* Returns arg with every {bundle} and {id} replaced. */
static char *substitute(const char *arg, const char *bundle, const char *id)
{
	size_t len = 0, nb = strlen(bundle), ni = strlen(id);
	const char *s;
	char *out, *p;

	for (s = arg; *s;) {
		if (strncmp(s, "{bundle}", 8) == 0) {
			len += nb;
			s += 8;
		} else if (strncmp(s, "{id}", 4) == 0) {
			len += ni;
			s += 4;
		} else {
			len++;
			s++;
		}
	}
	out = p = malloc(len + 1);
	if (!out)
		return NULL;
	for (s = arg; *s;) {
		if (strncmp(s, "{bundle}", 8) == 0) {
			p = mempcpy(p, bundle, nb);
			s += 8;
		} else if (strncmp(s, "{id}", 4) == 0) {
			p = mempcpy(p, id, ni);
			s += 4;
		} else {
			*p++ = *s++;
		}
	}
	*p = '\0';
	return out;
}

static void strv_free_wiped(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		erase_and_free_str(v[i]);
	free(v);
}

static void strv_free_wipedp(char ***v)
{
	strv_free_wiped(*v);
}

/* RUNTIME and its n - 1 ARGs, with {bundle} and {id} replaced in the
 * ARGs. */
static char **build_args(struct sl_stage *stage, int n, char **argv)
{
	_cleanup_(strv_free_wipedp) char **args = calloc((size_t)n + 1, sizeof(*args));

	for (int i = 0; args && i < n; i++) {
		args[i] = i == 0 ? strdup(argv[0]) : substitute(argv[i], sl_stage_path(stage), sl_stage_id(stage));
		if (!args[i])
			return NULL;
	}
	return TAKE_PTR(args);
}

/* The runtime's environment: only the --pass-env names that are set. */
static char **build_env(char **names, size_t n)
{
	char **envp = calloc(n + 1, sizeof(*envp));
	size_t k = 0;

	if (!envp)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const char *v = getenv(names[i]);

		if (!v)
			continue;
		if (asprintf(&envp[k], "%s=%s", names[i], v) < 0) {
			envp[k] = NULL;
			strv_free_wiped(envp);
			return NULL;
		}
		k++;
	}
	return envp;
}

/*
 * Blocks the forwarded signals and SIGCHLD, all of them in *set, and
 * remembers the old mask and SIGCHLD action for the child. Blocked before
 * the fork, a signal that arrives early stays pending and is forwarded
 * once the child exists; SIGCHLD is blocked too, so that sigwaitinfo()
 * sees the child's exit. SIGCHLD must not be ignored, or the kernel would
 * reap the child for us.
 */
static int block_signals(sigset_t *set, sigset_t *ret_oldset, struct sigaction *ret_old_chld)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	sigemptyset(set);
	for (size_t i = 0; i < ELEMENTSOF(forwarded); i++)
		sigaddset(set, forwarded[i]);
	sigaddset(set, SIGCHLD);
	sigaction(SIGCHLD, &dfl, ret_old_chld);
	if (sigprocmask(SIG_BLOCK, set, ret_oldset) < 0)
		return negerrno();
	return 0;
}

/* In the child: the runtime gets the signal state stagelog itself got. */
_Noreturn static void exec_runtime(const char *path, char **args, char **envp, const struct sigaction *old_chld,
				   const sigset_t *oldset)
{
	sigaction(SIGCHLD, old_chld, NULL);
	cli_signals_reset_child();
	sigprocmask(SIG_SETMASK, oldset, NULL);
	execve(path, args, envp);
	cli_diag(LOG_ERR);
	fprintf(stderr, "cannot run the runtime: %s: %s\n", args[0], strerror(errno));
	_exit(errno == ENOENT ? CLI_EXIT_RUNTIME_NOT_FOUND : CLI_EXIT_RUNTIME_NOT_EXECUTABLE);
}

/*
 * Reaps the child if it ended. SIGCHLDs coalesce, so it reaps until the
 * child is gone or merely stopped. Returns 1 with its exit code in
 * *ret_code (shell convention), 0 while it runs, or a negative errno.
 */
static int reap(pid_t pid, int *ret_code)
{
	int status;

	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return negerrno();
		if (w == 0)
			return 0;
		if (WIFEXITED(status)) {
			*ret_code = WEXITSTATUS(status);
			return 1;
		}
		if (WIFSIGNALED(status)) {
			*ret_code = CLI_EXIT_SIGNAL + WTERMSIG(status);
			return 1;
		}
	}
}

/* Waits for the child, forwarding the signals in set but SIGCHLD. Returns
 * its exit code, or a negative errno. */
static int wait_child(pid_t pid, const sigset_t *set)
{
	siginfo_t info;
	int sig, r, code;

	for (;;) {
		sig = sigwaitinfo(set, &info);
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			return negerrno();
		}
		if (sig != SIGCHLD) {
			/* A terminal sends SIGINT and friends to the whole
			 * foreground process group, the child included
			 * (SI_KERNEL): forwarding it again would deliver it
			 * twice. */
			if (info.si_code != SI_KERNEL)
				kill(pid, sig);
			continue;
		}
		r = reap(pid, &code);
		if (r < 0)
			return r;
		if (r > 0)
			return code;
	}
}

/*
 * Runs the runtime and waits for it, forwarding signals. Returns its exit
 * code in shell convention, or a negative errno if it could not be started.
 */
static int spawn_and_wait(const char *path, char **args, char **envp)
{
	struct sigaction old_chld;
	sigset_t set, oldset;
	pid_t pid;
	int r;

	r = block_signals(&set, &oldset, &old_chld);
	if (r < 0)
		return r;
	/* Caught before the block (by the flag handler): the runtime never
	 * starts, and the caller aborts the stage. */
	if (cli_signal_caught())
		return -ECANCELED;

	/* Nothing buffered may be written twice, by the child's diagnostic
	 * if its exec fails. */
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return negerrno();
	if (pid == 0)
		exec_runtime(path, args, envp, &old_chld, &oldset);
	return wait_child(pid, &set);
}

/* The options: the stage's, and --pass-env. */
struct run_args {
	struct cli_stage_args stage;
	char **pass;
	size_t n_pass;
};

static void run_args_finish(struct run_args *a)
{
	cli_stage_args_finish(&a->stage);
	free(a->pass);
}

static int run_option(int c, char *arg, void *userdata)
{
	struct run_args *a = userdata;
	char **v;
	int code;

	if (cli_stage_args_option(&a->stage, c, arg, &code))
		return code;
	/* 'p' */
	if (!arg[0] || strchr(arg, '='))
		return cli_usage_error("run: --pass-env: argument #%d: expected a variable name",
				       cli_arg_position(arg));
	v = reallocarray(a->pass, a->n_pass + 1, sizeof(*v));
	if (!v)
		return cli_fail(-ENOMEM, NULL, "cannot parse the options");
	a->pass = v;
	a->pass[a->n_pass++] = arg;
	return EX_OK;
}

/* "+": the options end at "--" or at the first operand, which
 * cmd_run() refuses: RUNTIME comes after "--". */
static const struct cli_options run_options = {
	.cmd = "run",
	.optstring = "+:h",
	.longopts =
		(const struct option[]){
			STAGE_LONG_OPTIONS,
			{ "pass-env", required_argument, NULL, 'p' },
			CLI_COMMON_OPTIONS,
			{ 0 },
		},
	.usage = usage,
	.handle = run_option,
};

/* With -v: "stagelog: WHAT ID LABEL PATH" on stderr. */
static void note_stage(const struct cli *cli, const char *what, struct sl_stage *stage)
{
	if (cli->verbosity < 1)
		return;
	cli_diag(LOG_INFO);
	fprintf(stderr, "%s %s ", what, sl_stage_id(stage));
	cli_fput_token(stderr, sl_stage_label(stage), strlen(sl_stage_label(stage)));
	fputc(' ', stderr);
	cli_fput_token(stderr, sl_stage_path(stage), strlen(sl_stage_path(stage)));
	fputc('\n', stderr);
}

/*
 * Runs the runtime argv[0] with its n - 1 ARGs on the stage, which it gets
 * the lock of, and waits for it. Returns an exit code: the runtime's (and
 * sets *ret_ran), or ours when it could not run. A runtime that exec could
 * not start (the child's 126 or 127) counts as run: the parent cannot tell.
 */
static int run_runtime(struct sl_stage *stage, const struct run_args *a, int n, char **argv, bool *ret_ran)
{
	_cleanup_(strv_free_wipedp) char **args = NULL;
	_cleanup_(strv_free_wipedp) char **envp = NULL;
	_cleanup_free_ char *path = NULL;
	struct sl_error err = { 0 };
	int r, status;

	r = find_runtime(argv[0], &path);
	if (r < 0) {
		cli_diag(LOG_ERR);
		fputs("cannot run the runtime: ", stderr);
		cli_fput_escaped(stderr, argv[0], strlen(argv[0]));
		fprintf(stderr, ": %s\n", r == -ENOENT ? "not found" : strerror(-r));
		return r == -ENOENT ? CLI_EXIT_RUNTIME_NOT_FOUND : CLI_EXIT_RUNTIME_NOT_EXECUTABLE;
	}
	r = sl_stage_lock_inherit(stage, &err);
	if (r < 0)
		return cli_fail(r, &err, "cannot hand the stage's lock to the runtime");

	args = build_args(stage, n, argv);
	envp = build_env(a->pass, a->n_pass);
	if (!args || !envp)
		return cli_fail(-ENOMEM, NULL, "cannot start the runtime");
	status = spawn_and_wait(path, args, envp);
	/* The parent's copies of the passed values are not needed any more. */
	strv_free_wiped(TAKE_PTR(envp));
	if (status == -ECANCELED)
		return cli_interrupted("run (before the runtime started)");
	if (status < 0)
		return cli_fail(status, NULL, "cannot start the runtime");
	*ret_ran = true;
	return status;
}

/*
 * Releases and frees the stage the runtime used. code is the runtime's
 * exit status when ran, else ours (it could not be started). Returns the
 * exit code: code, or 125 when the runtime ran but its stage could not be
 * released (it is failed, its secrets may be on disk): the runtime's own
 * status then goes to stderr and, with --json, into the one document on
 * stdout, which the runtime no longer uses.
 */
static int release(struct cli *cli, struct sl_stage *stage, int code, bool ran)
{
	struct sl_error err = { 0 };
	int r;

	r = sl_stage_release(stage, &err);
	if (r >= 0) {
		note_stage(cli, "released", stage);
		sl_stage_free(stage);
		return code;
	}
	cli_fail(r, &err, "cannot release the stage");
	if (!ran) {
		/* Our own failure to start it says more; a clean exit must
		 * not hide that something was left behind. */
		sl_stage_free(stage);
		return code == EX_OK ? CLI_EXIT_NOT_CLEAN : code;
	}
	cli_error("run: the runtime exited with status %d, but stage %s could not be released: it is failed", code,
		  sl_stage_id(stage));
	if (cli->json) {
		cJSON *doc = cJSON_CreateObject();

		(void)cli_json_print(doc, doc && cJSON_AddStringToObject(doc, "id", sl_stage_id(stage)) &&
						  cJSON_AddStringToObject(doc, "state", "failed") &&
						  cJSON_AddNumberToObject(doc, "runtime_status", code));
	}
	sl_stage_free(stage);
	return CLI_EXIT_RUN_NOT_RELEASED;
}

int cmd_run(struct cli *cli, int argc, char **argv)
{
	_cleanup_(run_args_finish) struct run_args a = { .stage = { .cmd = "run" } };
	struct sl_stage *stage = NULL;
	bool ran = false;
	enum cli_stop stop;
	int code;

	code = cli_parse_options(cli, &run_options, argc, argv, &a, &stop);
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;
	/* Only what follows "--" is the runtime's. A word before it is a
	 * mistake, maybe a value that lost its option (--env NAME= TOKEN):
	 * run as the runtime's name, it would land in a log. */
	if (optind < argc && !cli_getopt_ended_at_dashdash())
		return cli_usage_error("run: unexpected argument #%d: RUNTIME and its ARGs follow '--'",
				       cli_arg_position(argv[optind]));
	if (optind >= argc)
		return cli_usage_error("run: missing RUNTIME (after '--')");

	/* Staging comes first: if it fails, the runtime is never started. */
	code = cli_stage_args_stage(cli, &a.stage, 0, &stage);
	if (code != EX_OK)
		return code;
	note_stage(cli, "staged", stage);
	code = run_runtime(stage, &a, argc - optind, argv + optind, &ran);
	return release(cli, stage, code, ran);
}
