/* SPDX-License-Identifier: MIT */
/*
 * entries.c: the paths a stage creates, each logged before it exists: the
 * entry log in memory and its commits (shared with the tree copy, copy.c),
 * a file announced ahead (sl_stage_expect_file()), and the one-path calls
 * sl_stage_mkdir(), sl_stage_write_file() and sl_stage_symlink().
 */
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "stage-private.h"

/* See stage-private.h: one commit however many of the three there are. */
int stage_log_commit(struct sl_stage *st, bool ready, struct sl_error *reterr)
{
	struct store_log log = {
		.first_seq = st->next_seq,
		.n = st->n,
		.arena = st->arena,
		.offs = st->offs,
		.lens = st->lens,
		.kinds = st->kinds,
		.confirm = st->confirm_pending ? &st->top_id : NULL,
		.ready = ready,
	};
	int r;

	if (st->n == 0 && !st->confirm_pending && !ready)
		return 0;
	r = store_stage_log(st->store, st->rec.rowid, &log, reterr);
	if (r == -ESTALE && log.confirm)
		return stage_give_up_top(st, &st->top_id, reterr);
	if (r < 0)
		return r;
	st->confirm_pending = false;
	st->next_seq += (int64_t)st->n;
	st->n = 0;
	st->used = 0;
	return 0;
}

int stage_log_flush(struct sl_stage *st, struct sl_error *reterr)
{
	/* An expected file goes in last, so that it stays the newest entry
	 * and the undo removes it first. */
	if (st->expect == EXPECT_PENDING) {
		int r = stage_log(st, st->expect_path, st->expect_len, STORE_KIND_FILE, reterr);

		if (r < 0)
			return r;
		st->expect = EXPECT_LOGGED;
	}
	return stage_log_commit(st, false, reterr);
}

void stage_set_log_mode(struct sl_stage *st, enum stage_log_mode mode)
{
	st->log_mode = mode;
	store_set_naive(st->store, mode == STAGE_LOG_NAIVE);
}

int stage_log(struct sl_stage *st, const char *path, size_t len, enum store_kind kind, struct sl_error *reterr)
{
	size_t tl = strlen(st->rec.topdir), total = tl + 1 + len;
	int r;

	if (stage_cancelled(st))
		return sl_err(reterr, -ECANCELED, "cannot log entry: %s: interrupted", st->rec.topdir);
	if (st->log_mode == STAGE_LOG_OFF)
		return 0;
	if (total > STAGE_PATH_MAX)
		return sl_err(reterr, -ENAMETOOLONG, "cannot log entry: %s/...: %s", st->rec.topdir,
			      strerror(ENAMETOOLONG));
	assert(st->n <= STAGE_LOG_BATCH && st->used <= sizeof(st->arena));
	if (st->n == STAGE_LOG_BATCH || st->used + total > sizeof(st->arena)) {
		r = stage_log_commit(st, false, reterr);
		if (r < 0)
			return r;
	}
	st->offs[st->n] = (uint32_t)st->used;
	st->lens[st->n] = (uint16_t)total;
	st->kinds[st->n] = (uint8_t)kind;
	memcpy(st->arena + st->used, st->rec.topdir, tl);
	st->arena[st->used + tl] = '/';
	memcpy(st->arena + st->used + tl + 1, path, len);
	st->used += total;
	st->n++;
	return st->log_mode == STAGE_LOG_NAIVE ? stage_log_commit(st, false, reterr) : 0;
}

int stage_check_staging(struct sl_stage *st, const char *what, struct sl_error *reterr)
{
	if (!st)
		return sl_err(reterr, -EINVAL, "cannot %s: no stage", what);
	if (st->rec.state != SL_STATE_STAGING)
		return sl_err(reterr, -EINVAL, "cannot %s: stage is %s, not staging", what,
			      sl_store_state_name(st->rec.state));
	return 0;
}

int stage_open_parent(struct sl_stage *st, const char *path, const char **ret_name, struct sl_error *reterr)
{
	size_t len = strlen(path);
	const char *slash, *why = stage_path_check(path, len);
	int fd;

	if (why)
		return sl_err(reterr, -EINVAL, "bad path in stage: %s", why);
	assert(st->top_fd >= 0); /* A staging stage holds its top directory. */
	slash = strrchr(path, '/');
	fd = stage_open_beneath(st->top_fd, path, slash ? (size_t)(slash - path) : 0, O_PATH);
	if (fd < 0)
		return sl_err(reterr, fd, "cannot open: %s/%.*s: %s", st->rec.topdir, slash ? (int)(slash - path) : 0,
			      path, strerror(-fd));
	*ret_name = slash ? slash + 1 : path;
	return fd;
}

/* The start of every call that creates one path: the stage must be
 * staging, the parent is opened beneath the top directory, and the entry
 * is logged before the caller creates it. Returns the parent fd, or a
 * negative errno with the stage aborted (unless it was not staging). */
static int entry_start(struct sl_stage *st, const char *what, const char *path, enum store_kind kind,
		       const char **ret_name, struct sl_error *reterr)
{
	int pfd, r = stage_check_staging(st, what, reterr);

	if (r < 0)
		return r;
	pfd = stage_open_parent(st, path, ret_name, reterr);
	if (pfd < 0)
		return stage_abort_on_error(st, pfd);
	/* Committed (not synced) before the path exists: a process that dies
	 * right after creating it leaves a log that names it. An expected
	 * file was logged already. */
	if (kind == STORE_KIND_FILE && st->expect != EXPECT_NONE && st->expect_len == strlen(path) &&
	    memcmp(st->expect_path, path, st->expect_len) == 0) {
		r = st->expect == EXPECT_PENDING ? stage_log(st, path, st->expect_len, kind, reterr) : 0;
		st->expect = EXPECT_NONE;
	} else {
		r = stage_log(st, path, strlen(path), kind, reterr);
	}
	if (r == 0)
		r = stage_log_flush(st, reterr);
	if (r < 0) {
		close(pfd);
		return stage_abort_on_error(st, r);
	}
	return pfd;
}

int sl_stage_expect_file(struct sl_stage *st, const char *path, struct sl_error *reterr)
{
	size_t len = path ? strlen(path) : 0;
	const char *why;
	int r = stage_check_staging(st, "expect file", reterr);

	if (r < 0)
		return r;
	why = path ? stage_path_check(path, len) : "no path";
	if (why)
		return sl_err(reterr, -EINVAL, "bad path in stage: %s", why);
	if (strlen(st->rec.topdir) + 1 + len > STAGE_PATH_MAX)
		return sl_err(reterr, -ENAMETOOLONG, "cannot expect file: %s/...: %s", st->rec.topdir,
			      strerror(ENAMETOOLONG));
	memcpy(st->expect_path, path, len);
	st->expect_len = len;
	st->expect = EXPECT_PENDING;
	return 0;
}

int sl_stage_mkdir(struct sl_stage *st, const char *path, mode_t mode, struct sl_error *reterr)
{
	_cleanup_close_ int pfd = -1, fd = -1;
	const char *name;
	int r;

	pfd = entry_start(st, "make directory", path, STORE_KIND_DIR, &name, reterr);
	if (pfd < 0)
		return pfd;
	r = fault_step();
	if (r == 0 && mkdirat(pfd, name, 0700) < 0)
		r = negerrno();
	/* umask applies to mkdirat; the caller asked for exactly mode. */
	if (r == 0 && ((fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
		       fchmod(fd, mode & 07777) < 0))
		r = negerrno();
	if (r < 0) {
		sl_err(reterr, r, "cannot make directory: %s/%s: %s", st->rec.topdir, path, strerror(-r));
		return stage_abort_on_error(st, r);
	}
	return 0;
}

int sl_stage_write_file(struct sl_stage *st, const char *path, const void *buf, size_t len, mode_t mode,
			struct sl_error *reterr)
{
	_cleanup_close_ int pfd = -1, fd = -1;
	bool named = false;
	const char *name;
	char proc[PROC_FD_PATH_SIZE];
	int r;

	pfd = entry_start(st, "write file", path, STORE_KIND_FILE, &name, reterr);
	if (pfd < 0)
		return pfd;

	/* The file is written without a name and linked in only when whole:
	 * a crash or a reader never sees half a config. Where O_TMPFILE is
	 * not supported, a named 0600 file is the fallback; the undo removes
	 * it like any other entry. */
	r = fault_step();
	if (r == 0) {
		fd = openat(pfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
		if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
			fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
			named = true;
		}
		if (fd < 0)
			r = negerrno();
	}
	if (r == 0)
		r = fault_step();
	if (r == 0)
		r = write_all(fd, buf, len);
	if (r == 0 && fchmod(fd, mode ? mode & 07777 : 0600) < 0)
		r = negerrno();
	if (r == 0 && !named) {
		r = fault_step();
		if (r == 0 && linkat(fd, "", pfd, name, AT_EMPTY_PATH) < 0) {
			/* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc
			 * link does the same for everyone else. */
			snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
			if (linkat(AT_FDCWD, proc, pfd, name, AT_SYMLINK_FOLLOW) < 0)
				r = negerrno();
		}
	}
	if (r < 0) {
		sl_err(reterr, r, "cannot write file: %s/%s: %s", st->rec.topdir, path, strerror(-r));
		return stage_abort_on_error(st, r);
	}
	return 0;
}

int sl_stage_symlink(struct sl_stage *st, const char *target, const char *path, struct sl_error *reterr)
{
	_cleanup_close_ int pfd = -1;
	const char *name;
	int r;

	pfd = entry_start(st, "make symlink", path, STORE_KIND_SYMLINK, &name, reterr);
	if (pfd < 0)
		return pfd;
	r = fault_step();
	if (r == 0 && symlinkat(target, pfd, name) < 0)
		r = negerrno();
	if (r < 0) {
		sl_err(reterr, r, "cannot make symlink: %s/%s: %s", st->rec.topdir, path, strerror(-r));
		return stage_abort_on_error(st, r);
	}
	return 0;
}
