/* SPDX-License-Identifier: MIT */
/*
 * files.c: the places outside the store that the program chooses or
 * writes itself: the default staging root, and a file replaced atomically
 * (metrics' --output).
 */
#include <stdio.h>
#include <string.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

int cli_write_atomic(const char *path, const void *data, size_t len, mode_t mode, bool durable)
{
	_cleanup_free_ char *tmp = NULL, *dir = NULL;
	_cleanup_close_ int fd = -1, dfd = -1;
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	int r;

	/* A hidden name, so that node_exporter's textfile collector (which
	 * reads *.prom) never reads the half-written file. */
	if (asprintf(&dir, "%.*s", slash ? (int)(slash - path) + (slash == path) : 1, slash ? path : ".") < 0 ||
	    asprintf(&tmp, "%s/.%s.XXXXXX", dir, base) < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, mode) < 0)
		goto fail;
	/* write_all() leaves errno as the failed write() set it. */
	if (write_all(fd, data, len) < 0)
		goto fail;
	if (durable && fsync(fd) < 0)
		goto fail;
	r = close(fd);
	fd = -1;
	if (r < 0)
		goto fail;
	if (rename(tmp, path) < 0)
		goto fail;
	/* The rename is durable only once the folder is. */
	dfd = durable ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (dfd >= 0)
		(void)fsync(dfd);
	return 0;
fail:
	r = -errno;
	(void)unlink(tmp);
	return r;
}

/*
 * /run/user/UID when it is a directory (not a symlink) owned by the caller
 * with mode 0700: what logind makes for a user, and what a unit's
 * tmpfiles.d entry makes for a service user without a session. Anything
 * else could be a directory another user prepared to watch our secrets.
 */
static bool user_run_dir(char *buf, size_t size)
{
	struct stat st;
	int n;

	n = snprintf(buf, size, "/run/user/%u", (unsigned)geteuid());
	if (n < 0 || (size_t)n >= size)
		return false;
	if (lstat(buf, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 07777) != 0700)
		return false;
	return true;
}

int cli_default_root(char *buf, size_t size, bool quiet)
{
	const char *env, *what;
	char run[sizeof("/run/user/") + 10]; /* a 32-bit uid is at most 10 digits */
	int n;

	env = getenv("STAGELOG_ROOT");
	if (env && env[0]) {
		/* A relative root would depend on where a unit happens to
		 * start; refuse it rather than guess. */
		if (env[0] != '/')
			return quiet ? EX_USAGE
				     : cli_usage_error(
					       "cannot choose a staging root: STAGELOG_ROOT is not an "
					       "absolute path");
		n = snprintf(buf, size, "%s", env);
		what = "STAGELOG_ROOT";
	} else if (geteuid() == 0) {
		n = snprintf(buf, size, "/run/stagelog");
		what = "/run/stagelog";
	} else if ((env = getenv("XDG_RUNTIME_DIR")) && env[0] == '/') {
		n = snprintf(buf, size, "%s/stagelog", env);
		what = "XDG_RUNTIME_DIR";
	} else if (user_run_dir(run, sizeof(run))) {
		/* Never fall back to /tmp: a staging root must be a private
		 * tmpfs, and only a runtime directory is one. */
		n = snprintf(buf, size, "%s/stagelog", run);
		what = run;
	} else {
		if (quiet)
			return EX_USAGE;
		return cli_usage_error(
			"cannot choose a staging root: XDG_RUNTIME_DIR is not set and "
			"/run/user/%u is not a directory of yours with mode 0700 "
			"(pass --root DIR or set STAGELOG_ROOT)",
			(unsigned)geteuid());
	}
	if (n < 0 || (size_t)n >= size)
		return quiet ? EX_USAGE
			     : cli_usage_error(
				       "cannot choose a staging root: %s is too long (pass --root DIR or set "
				       "STAGELOG_ROOT)",
				       what);
	return EX_OK;
}
