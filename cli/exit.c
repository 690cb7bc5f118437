/* SPDX-License-Identifier: MIT */
/*
 * exit.c: the one table from errors to exit codes (the man page's EXIT
 * STATUS section mirrors it) and the one diagnostic writer.
 *
 * The dependency runs one way: every other file in cli/ may call these
 * functions, and they call nothing in cli/ but escape.c's (which calls
 * nothing in cli/ at all), so that writing a diagnostic can never come
 * back round to a helper that writes one.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const struct {
	int err;
	int code;
} exit_table[] = {
	{ -EINVAL, EX_USAGE },
	{ -ENOTUNIQ, EX_USAGE },
	{ -EBADMSG, EX_DATAERR },
	{ -ENOENT, EX_NOINPUT },
	{ -EEXIST, EX_CANTCREAT },
	{ -EROFS, EX_CANTCREAT },
	{ -EISDIR, EX_CANTCREAT }, /* --db names a directory */
	{ -ENOTDIR, EX_NOINPUT },  /* a path that should lead to a directory does not */
	{ -ENOSPC, EX_IOERR },
	{ -EIO, EX_IOERR },
	{ -EDQUOT, EX_IOERR },
	{ -EFBIG, EX_IOERR },
	{ -EBUSY, EX_TEMPFAIL },
	{ -EAGAIN, EX_TEMPFAIL },
	{ -EACCES, EX_NOPERM },
	{ -EPERM, EX_NOPERM },
	{ -EPROTO, EX_CONFIG },
	/* What a bundle or the file system can cause is never EX_SOFTWARE:
	 * 70 is kept for bugs. */
	{ -ELOOP, EX_DATAERR },        /* a tree too deep, a symlink where a directory belongs */
	{ -ENAMETOOLONG, EX_DATAERR }, /* a path longer than PATH_MAX */
	{ -EOVERFLOW, EX_DATAERR },
	{ -EILSEQ, EX_DATAERR },
	{ -EXDEV, EX_CANTCREAT }, /* publish to another file system */
	{ -EMLINK, EX_CANTCREAT },
	{ -ENOTEMPTY, EX_IOERR },
	{ -EOPNOTSUPP, EX_IOERR },
	{ -ENXIO, EX_IOERR },
	{ -ENODEV, EX_IOERR },
	{ -EUCLEAN, EX_IOERR },
	{ -EPIPE, EX_IOERR },
	{ -ENOTCONN, EX_IOERR }, /* a FUSE root whose daemon died */
	{ -ECONNABORTED, EX_IOERR },
	{ -EREMOTEIO, EX_IOERR },
	{ -ETXTBSY, EX_TEMPFAIL },
	{ -ESTALE, EX_TEMPFAIL }, /* the record changed state meanwhile */
	{ -ECANCELED, EX_TEMPFAIL },
	{ -EINTR, EX_TEMPFAIL },
	{ -ETIMEDOUT, EX_TEMPFAIL },
	{ -ENOMEM, EX_TEMPFAIL },
	{ -EMFILE, EX_TEMPFAIL },
	{ -ENFILE, EX_TEMPFAIL },
};

int cli_exit_code(int r, const struct sl_error *err)
{
	if (r >= 0)
		return EX_OK;
	/* The flag wins over the errno: an unwritable root is EACCES to the
	 * kernel but "cannot create" to the user. */
	if (err && (err->flags & SL_ERROR_CANTCREAT))
		return EX_CANTCREAT;
	for (size_t i = 0; i < ELEMENTSOF(exit_table); i++)
		if (exit_table[i].err == r)
			return exit_table[i].code;
	return EX_SOFTWARE;
}

/*
 * Whether stderr is the journal. systemd sets $JOURNAL_STREAM to the
 * DEVICE:INODE of the stream it connects stdout and stderr to
 * (sd_journal_stream_fd(3)); a child whose stderr was redirected still
 * inherits the variable, so only a match with stderr's own counts. Judged
 * once: stderr does not change under a running command.
 */
bool cli_stderr_is_journal(void)
{
	static int journal = -1;

	if (journal < 0) {
		const char *v = getenv("JOURNAL_STREAM");
		unsigned long long dev, ino;
		struct stat st;

		/* "DEV:INO", both decimal, nothing else. */
		journal = v && read_ull(&v, &dev) && *v++ == ':' && read_ull(&v, &ino) && *v == '\0' &&
			  fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
			  (unsigned long long)st.st_ino == ino;
	}
	return journal;
}

void cli_diag(int priority)
{
	/* sd-daemon(3): the journal reads a leading <N> as the line's
	 * priority, so a failed stage is an error there, not an info line. */
	if (cli_stderr_is_journal())
		fprintf(stderr, "<%d>", priority);
	fputs("stagelog: ", stderr);
}

int cli_fail(int r, const struct sl_error *err, const char *what)
{
	cli_diag(LOG_ERR);
	/* The library's message names a path relative to the root, which may
	 * hold any byte: escape it so that the diagnostic stays one line. */
	if (err && err->msg[0])
		cli_fput_escaped(stderr, err->msg, strnlen(err->msg, sizeof(err->msg)));
	else
		fprintf(stderr, "%s: %s", what, strerror(r < 0 ? -r : r));
	fputc('\n', stderr);
	return cli_exit_code(r, err);
}

/* PRINTF_FMT(1, 0): its callers' formats are checked where they are
 * literals, and clang's -Wformat-nonliteral accepts the va_list here. */
PRINTF_FMT(2, 0) static void verror(int priority, const char *fmt, va_list ap)
{
	cli_diag(priority);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(LOG_ERR, fmt, ap);
	va_end(ap);
}

void cli_say(int priority, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(priority, fmt, ap);
	va_end(ap);
}

/* The command whose help a usage error points to, or NULL before one. */
static const char *usage_command;

void cli_set_command(const char *name)
{
	usage_command = name;
}

void cli_fput_try_help(FILE *f)
{
	/* The command's name comes from the program's table, never from
	 * argv: the pointer is what main() found there. */
	if (usage_command)
		fprintf(f, "; try 'stagelog help %s'\n", usage_command);
	else
		fputs("; try 'stagelog --help'\n", f);
}

int cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	cli_diag(LOG_ERR);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	cli_fput_try_help(stderr);
	return EX_USAGE;
}

void cli_verbose(const struct cli *cli, const char *fmt, ...)
{
	va_list ap;

	if (cli->verbosity < 1)
		return;
	va_start(ap, fmt);
	verror(LOG_INFO, fmt, ap);
	va_end(ap);
}
