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
	"                    [--env-file FILE] [--pass-env NAME]... -- RUNTIME [ARG]...\n"
	"\n"
	"Stages the OCI bundle PKG with stagelog as its owner, runs RUNTIME (found\n"
	"with stagelog's PATH) with every {bundle} in its ARGs replaced by the\n"
	"bundle path and {id} by the stage id, forwards SIGINT, SIGTERM, SIGHUP and\n"
	"SIGQUIT to it, and releases the stage when it exits. Exits with the\n"
	"runtime's status (128+N after signal N), or 127 if it was not found.\n"
	"\n"
	"  --root DIR        the staging root (default: /run/stagelog for root,\n"
	"                    else $XDG_RUNTIME_DIR/stagelog)\n"
	"  --bundle PKG      the packaged bundle: PKG/rootfs/ and PKG/config.json\n"
	"  --label L         the stage's label, [a-z0-9][a-z0-9_.-]{0,31} (default: stage)\n"
	"  --env NAME=VALUE  put NAME=VALUE in process.env\n"
	"  --env NAME        put NAME in process.env with its value from stagelog's environment\n"
	"  --env-file FILE   read NAME=VALUE lines (# comments, blank lines); a later name wins\n"
	"  --pass-env NAME   pass NAME from stagelog's environment to RUNTIME; RUNTIME gets\n"
	"                    no other variable\n"
	"  -h, --help        print this help\n";

static const int forwarded[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };

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
 * Runs the runtime and waits for it, forwarding signals. Returns its exit
 * code in shell convention, or a negative errno if it could not be started.
 */
static int spawn_and_wait(const char *path, char **args, char **envp)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL }, old_chld;
	sigset_t set, oldset;
	siginfo_t info;
	int status, sig;
	pid_t pid;

	/* Blocked before the fork, a signal that arrives early stays pending
	 * and is forwarded once the child exists; SIGCHLD is blocked too, so
	 * that sigwaitinfo() sees the child's exit. SIGCHLD must not be
	 * ignored, or the kernel would reap the child for us. */
	sigemptyset(&set);
	for (size_t i = 0; i < ELEMENTSOF(forwarded); i++)
		sigaddset(&set, forwarded[i]);
	sigaddset(&set, SIGCHLD);
	sigaction(SIGCHLD, &dfl, &old_chld);
	if (sigprocmask(SIG_BLOCK, &set, &oldset) < 0)
		return negerrno();
	/* Caught before the block (by the flag handler): the runtime never
	 * starts, and the caller aborts the stage. */
	if (cli_signal_caught())
		return -ECANCELED;

	pid = fork();
	if (pid < 0)
		return negerrno();
	if (pid == 0) {
		/* The runtime gets the signal state stagelog itself got. */
		sigaction(SIGCHLD, &old_chld, NULL);
		cli_signals_reset_child();
		sigprocmask(SIG_SETMASK, &oldset, NULL);
		execve(path, args, envp);
		fprintf(stderr, "stagelog: cannot run the runtime: %s: %s\n", args[0], strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}

	for (;;) {
		sig = sigwaitinfo(&set, &info);
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
		/* SIGCHLDs coalesce, so reap until the child is gone or
		 * merely stopped. */
		for (;;) {
			pid_t w = waitpid(pid, &status, WNOHANG);

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return negerrno();
			if (w == 0)
				break;
			if (WIFEXITED(status))
				return WEXITSTATUS(status);
			if (WIFSIGNALED(status))
				return 128 + WTERMSIG(status);
		}
	}
}

int cmd_run(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = {
		STAGE_LONG_OPTIONS,
		{ "pass-env", required_argument, NULL, 'p' },
		CLI_COMMON_OPTIONS,
		{ 0 },
	};
	struct stage_args a = { .cmd = "run" };
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };
	_cleanup_free_ char **pass = NULL;
	_cleanup_free_ char *path = NULL;
	char **args = NULL, **envp = NULL, **tmp;
	size_t n_pass = 0;
	int c, r, code, status, nargs;

	/* "+": everything from RUNTIME on belongs to the runtime, even
	 * without "--". */
	while ((c = cli_getopt(cli, "run", argc, argv, "+:h", options)) != -1) {
		r = stage_args_option(&a, c, optarg);
		if (r < 0) {
			code = cli_fail(r, NULL, "cannot parse the options");
			goto out;
		}
		if (r > 0)
			continue;
		switch (c) {
		case 'p':
			if (!optarg[0] || strchr(optarg, '=')) {
				code = cli_usage_error("run: bad --pass-env: expected a variable name");
				goto out;
			}
			tmp = reallocarray(pass, n_pass + 1, sizeof(*pass));
			if (!tmp) {
				code = cli_fail(-ENOMEM, NULL, "cannot parse the options");
				goto out;
			}
			pass = tmp;
			pass[n_pass++] = optarg;
			break;
		case 'h':
			code = cli_help(usage);
			goto out;
		default:
			code = EX_USAGE;
			goto out;
		}
	}
	if (optind >= argc) {
		code = cli_usage_error("run: missing RUNTIME");
		goto out;
	}
	nargs = argc - optind;

	/* Staging comes first: if it fails, the runtime is never started. */
	code = stage_args_stage(cli, &a, 0, &stage);
	if (code != EX_OK)
		goto out;

	if (cli->verbosity >= 1) {
		fprintf(stderr, "stagelog: staged %s %s ", sl_stage_id(stage), sl_stage_label(stage));
		cli_fput_escaped(stderr, sl_stage_path(stage), strlen(sl_stage_path(stage)));
		fputc('\n', stderr);
	}
	r = find_runtime(argv[optind], &path);
	if (r < 0) {
		fprintf(stderr, "stagelog: cannot run the runtime: ");
		cli_fput_escaped(stderr, argv[optind], strlen(argv[optind]));
		fprintf(stderr, ": %s\n", r == -ENOENT ? "not found" : strerror(-r));
		code = r == -ENOENT ? 127 : 126;
		goto release;
	}
	r = sl_stage_lock_inherit(stage, &err);
	if (r < 0) {
		code = cli_fail(r, &err, "cannot hand the stage's lock to the runtime");
		goto release;
	}

	args = calloc((size_t)nargs + 1, sizeof(*args));
	envp = build_env(pass, n_pass);
	if (!args || !envp) {
		code = cli_fail(-ENOMEM, NULL, "cannot start the runtime");
		goto release;
	}
	for (int i = 0; i < nargs; i++) {
		args[i] = i == 0 ? strdup(argv[optind]) : substitute(argv[optind + i], sl_stage_path(stage),
								      sl_stage_id(stage));
		if (!args[i]) {
			code = cli_fail(-ENOMEM, NULL, "cannot start the runtime");
			goto release;
		}
	}

	status = spawn_and_wait(path, args, envp);
	/* The parent's copies of the passed values are not needed any more. */
	strv_free_wiped(envp);
	envp = NULL;
	if (status == -ECANCELED) {
		code = cli_interrupted("run (before the runtime started)");
		goto release;
	}
	if (status < 0) {
		code = cli_fail(status, NULL, "cannot start the runtime");
		goto release;
	}
	code = status;

release:
	err = (struct sl_error){ 0 };
	r = sl_stage_release(stage, &err);
	if (r >= 0 && cli->verbosity >= 1) {
		fprintf(stderr, "stagelog: released %s %s ", sl_stage_id(stage), sl_stage_label(stage));
		cli_fput_escaped(stderr, sl_stage_path(stage), strlen(sl_stage_path(stage)));
		fputc('\n', stderr);
	}
	if (r < 0) {
		cli_fail(r, &err, "cannot release the stage");
		/* The runtime's own failure says more than ours; a clean
		 * exit must not hide that something was left behind. */
		if (code == EX_OK)
			code = 1;
	}
	sl_stage_free(stage);
out:
	strv_free_wiped(args);
	strv_free_wiped(envp);
	stage_args_finish(&a);
	return code;
}
