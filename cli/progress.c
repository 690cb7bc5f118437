/* SPDX-License-Identifier: MIT */
/*
 * progress.c: the one progress line of stage, run, recover: on stderr, for
 * a person at a terminal only, at most 10 times a second, erased when done.
 */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* 100 ms between two drawings: at most 10 a second. */
#define PROGRESS_INTERVAL_MS 100

#define NS_PER_MS 1000000

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * CLI_MS_PER_S + ts.tv_nsec / NS_PER_MS;
}

void cli_progress_start(struct cli_progress *p, const struct cli *cli)
{
	/* Never into a log or a pipe: a line redrawn with \r is noise there. */
	*p = (struct cli_progress){ .on = cli->verbosity >= 0 && isatty(STDERR_FILENO) == 1 };
	p->start = p->last = mono_ms();
}

void cli_progress_show(struct cli_progress *p, const char *fmt, ...)
{
	int64_t now;
	va_list ap;

	if (!p->on)
		return;
	/* The first line waits too: a quick copy shows nothing at all. */
	now = mono_ms();
	if (now - p->last < PROGRESS_INTERVAL_MS)
		return;
	p->last = now;
	/* \r and erase to the end of the line: a shorter line leaves no
	 * tail of the longer one before it. */
	fputs("\r\033[Kstagelog: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	/* Seconds and tenths. */
	fprintf(stderr, ", %lld.%llds", (long long)((now - p->start) / CLI_MS_PER_S),
		(long long)((now - p->start) % CLI_MS_PER_S / (CLI_MS_PER_S / 10)));
	fflush(stderr);
	p->shown = true;
}

void cli_progress_end(struct cli_progress *p)
{
	/* Erased, so that what follows (a diagnostic, the shell's prompt)
	 * starts on a clean line. */
	if (p->shown) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	p->shown = false;
}
