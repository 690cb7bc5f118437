/* SPDX-License-Identifier: MIT */
/*
 * signals.c: how stagelog meets SIGINT, SIGTERM, SIGHUP and SIGQUIT, and
 * the standard descriptors it finds closed; and what a child gets back
 * before exec.
 *
 * No command dies in the middle of a step. The four signals only set a
 * flag: `stage` and `run` pass it to the library, which stops between two
 * paths and aborts the stage, and they then exit 128+N; every other command
 * finishes the step it is in (recover: the stage it is removing) and exits
 * 128+N. SIGPIPE is ignored, so that a write to a pipe nobody reads fails
 * with EPIPE and is handled like any other failed write, never killing the
 * process between two steps. SIGXFSZ is ignored for the same reason: a
 * write past the file size limit (`ulimit -f`) then fails with EFBIG and
 * the stage is aborted (exit 74), where the signal would kill us mid-copy
 * with the stage `staging` and, on a root without O_TMPFILE, half a
 * config.json with its secrets on disk.
 */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"

static volatile sig_atomic_t caught;

/* The descriptor limit we were started with: the library may raise the
 * soft one (sl_stage_begin() reserves what an abort needs), and run's
 * runtime gets the one its caller gave. */
static struct rlimit nofile;
static bool have_nofile;

static const int handled[] = { CLI_HANDLED_SIGNALS };

static void on_signal(int sig)
{
	if (!caught)
		caught = sig;
}

void cli_signals_catch(bool catch)
{
	struct sigaction sa = { .sa_handler = catch ? on_signal : SIG_DFL, .sa_flags = SA_RESTART };

	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < ELEMENTSOF(handled); i++)
		sigaction(handled[i], &sa, NULL);
}

void cli_signals_init(void)
{
	/* A core file (SIGQUIT while a signal's default action is in force,
	 * a crash) would hold whatever secret was in memory. */
	struct rlimit no_core = { 0, 0 };

	(void)setrlimit(RLIMIT_CORE, &no_core);
	have_nofile = getrlimit(RLIMIT_NOFILE, &nofile) == 0;
	cli_signals_catch(true);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);

	/* A descriptor 0, 1 or 2 that was closed would be handed to the next
	 * file we open (the store!), and our output would land in it. Each is
	 * pointed at /dev/null: stdin and stdout read-only, so that output to
	 * a closed stdout still fails, as it must when nobody gets it. */
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int nfd = open("/dev/null", fd == 2 ? O_WRONLY : O_RDONLY);
		if (nfd >= 0 && nfd != fd) {
			dup2(nfd, fd);
			close(nfd);
		}
	}
}

int cli_signal_caught(void)
{
	return caught;
}

const volatile sig_atomic_t *cli_cancel_flag(void)
{
	return &caught;
}

void cli_signals_reset_child(void)
{
	/* An ignored signal stays ignored across exec: the runtime must get
	 * the default actions back, as a shell would have given them. */
	signal(SIGPIPE, SIG_DFL);
	signal(SIGXFSZ, SIG_DFL);
	for (size_t i = 0; i < ELEMENTSOF(handled); i++)
		signal(handled[i], SIG_DFL);
	/* Lowering a soft limit needs no privilege. */
	if (have_nofile)
		(void)setrlimit(RLIMIT_NOFILE, &nofile);
}

int cli_deliver_stdout(void)
{
	/* Written, flushed and closed without an error: only then did the
	 * output reach whoever reads it (as far as we can ever know). */
	if (fflush(stdout) != 0 || ferror(stdout))
		return negerrno();
	if (fclose(stdout) != 0)
		return negerrno();
	return 0;
}

int cli_interrupted(const char *what)
{
	int sig = caught;

	cli_error("%s interrupted by %s; the stage is aborted", what, strsignal(sig));
	return CLI_EXIT_SIGNAL + sig;
}
