/* SPDX-License-Identifier: MIT */
/*
 * finish.c: how a stage in hand ends: ready, abort (also after a failing
 * call), release, publish, and freeing the handle; the accessors of the
 * handle. Every removal goes through the undo (undo.c).
 */
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "stage-private.h"

/* The states a stage in hand can be aborted from: nothing has left it. */
#define LIVE_STATES (STATE_BIT(SL_STATE_STAGING) | STATE_BIT(SL_STATE_READY))

static void stage_close(struct sl_stage *st)
{
	st->top_fd = safe_close(st->top_fd);
}

/* See stage-private.h. */
int stage_undo_to(struct sl_store *store, struct store_record *rec, unsigned from_mask, enum sl_state to,
		  const char *what, struct stage_undo_progress *progress, struct sl_error *reterr)
{
	struct sl_error reason = { 0 };
	int r;

	r = stage_undo(store, rec, from_mask, to, progress, &reason);
	if (r < 0) {
		rec->state = SL_STATE_FAILED;
		sl_err(reterr, r, "cannot %s stage: %s", what, reason.msg);
		sl_err_flag(reterr, reason.flags & SL_ERROR_STAGE_FAILED);
		return r;
	}
	rec->state = to;
	return 0;
}

int stage_abort_on_error(struct sl_stage *st, int r)
{
	/* The entries still in memory name paths inside the top directory,
	 * which the undo removes in any case; try to log them for the record,
	 * but a store that fails here must not stop the removal. A stage a
	 * recovery took (stage_give_up_top()) is the recovery's: nothing is
	 * added. */
	if (st->rec.state == SL_STATE_STAGING || st->rec.state == SL_STATE_READY)
		(void)stage_log_commit(st, false, NULL);
	stage_close(st);
	if (st->rec.state == SL_STATE_STAGING || st->rec.state == SL_STATE_READY)
		(void)stage_undo_to(st->store, &st->rec, LIVE_STATES, SL_STATE_ABORTED, "abort", NULL, NULL);
	return r;
}

int sl_stage_ready(struct sl_stage *st, struct sl_error *reterr)
{
	int r = stage_check_staging(st, "mark stage ready", reterr);

	if (r < 0)
		return r;
	/* An expected file never written needs no entry. */
	if (st->expect == EXPECT_PENDING)
		st->expect = EXPECT_NONE;
	r = stage_log_commit(st, true, reterr);
	if (r < 0)
		return stage_abort_on_error(st, r);
	st->rec.state = SL_STATE_READY;
	return 0;
}

int sl_stage_abort(struct sl_stage *st, struct sl_error *reterr)
{
	if (!st)
		return sl_err(reterr, -EINVAL, "cannot abort stage: no stage");
	if (st->rec.state != SL_STATE_STAGING && st->rec.state != SL_STATE_READY)
		return st->rec.state == SL_STATE_ABORTED ? 0
							 : sl_err(reterr, -EINVAL, "cannot abort stage: it is %s",
								  sl_store_state_name(st->rec.state));
	(void)stage_log_flush(st, NULL);
	stage_close(st);
	return stage_undo_to(st->store, &st->rec, LIVE_STATES, SL_STATE_ABORTED, "abort", NULL, reterr);
}

/* See stage-private.h. A store that cannot be written (full, busy) stops
 * nothing: the caller holds the stage's lock, so the removal goes on and
 * the record catches up at its end, or with the next recovery. */
unsigned stage_begin_release(struct sl_store *store, struct store_record *rec, struct sl_error *reterr)
{
	struct sl_error err = { 0 };
	unsigned from = LIVE_STATES | STATE_BIT(SL_STATE_FAILED) | STATE_BIT(SL_STATE_RELEASING);
	int r = store_stage_transition(store, rec->rowid, from, SL_STATE_RELEASING, NULL, false, &err);

	if (r == -ESTALE) {
		sl_err(reterr, r, "%s", err.msg);
		return 0;
	}
	if (r == 0)
		from = STATE_BIT(SL_STATE_RELEASING);
	rec->state = SL_STATE_RELEASING;
	return from;
}

int sl_stage_release(struct sl_stage *st, struct sl_error *reterr)
{
	unsigned from;

	if (!st)
		return sl_err(reterr, -EINVAL, "cannot release stage: no stage");
	if (st->rec.state == SL_STATE_STAGING)
		return sl_stage_abort(st, reterr);
	if (st->rec.state == SL_STATE_RELEASED)
		return 0;
	if (st->rec.state != SL_STATE_READY && st->rec.state != SL_STATE_FAILED)
		return sl_err(reterr, -EINVAL, "cannot release stage: it is %s", sl_store_state_name(st->rec.state));
	from = stage_begin_release(st->store, &st->rec, reterr);
	if (from == 0)
		return -ESTALE;
	stage_close(st);
	return stage_undo_to(st->store, &st->rec, from, SL_STATE_RELEASED, "release", NULL, reterr);
}

/* The checks a destination must pass before anything changes: a new name
 * (absolute, no "." or ".."), in an existing folder, on the staging root's
 * own mount (a rename cannot cross one). Opens the folder into *ret_pfd and
 * writes the normalised destination into abs. */
static int publish_check(int root_fd, const char *dest, char abs[PATH_MAX], int *ret_pfd, const char **ret_base,
			 struct sl_error *reterr)
{
	_cleanup_close_ int pfd = -1;
	uint64_t mnt, root_mnt;
	bool mount_root;
	struct stat st;
	char *slash;
	int r;

	r = stage_absolute_root(dest, abs, PATH_MAX);
	if (r == -EINVAL)
		return sl_err(reterr, r,
			      "cannot publish stage: destination %s: not a new name ('.', '..' or '/'); refused", dest);
	if (r < 0)
		return sl_err(reterr, r, "cannot publish stage: destination %s: %s", dest, strerror(-r));
	slash = strrchr(abs, '/');
	*slash = '\0';
	pfd = open(slash == abs ? "/" : abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0)
		r = sl_err(reterr, negerrno(), "cannot publish stage: destination folder %s: %s",
			   slash == abs ? "/" : abs, strerror(errno));
	*slash = '/';
	if (r < 0)
		goto cantcreat;
	if (fstatat(pfd, slash + 1, &st, AT_SYMLINK_NOFOLLOW) == 0)
		r = -EEXIST;
	else if (errno != ENOENT)
		r = negerrno();
	if (r < 0) {
		sl_err(reterr, r, "cannot publish stage: destination %s: %s", abs, strerror(-r));
		goto cantcreat;
	}
	r = fd_mount_id(root_fd, &root_mnt, &mount_root);
	if (r == 0)
		r = fd_mount_id(pfd, &mnt, &mount_root);
	if (r == 0 && mnt != root_mnt)
		r = -EXDEV;
	if (r < 0) {
		sl_err(reterr, r, "cannot publish stage: destination %s: %s", abs,
		       r == -EXDEV ? "must be on the same filesystem as the staging root" : strerror(-r));
		goto cantcreat;
	}
	*ret_base = slash + 1;
	*ret_pfd = TAKE_FD(pfd);
	return 0;
cantcreat:
	sl_err_flag(reterr, SL_ERROR_CANTCREAT);
	return r;
}

/* Makes the tree the caller's: stagelog's marker does not go with it (and
 * a tree without one is never taken for an orphan), and its data is on the
 * disk before anything records where it goes. */
static int publish_hand_over(const struct store_record *rec, int top_fd, struct sl_error *reterr)
{
	int r = fault_step();

	if (r == 0 && unlinkat(top_fd, STAGE_MARKER_NAME, 0) < 0 && errno != ENOENT)
		r = negerrno();
	if (r < 0)
		return sl_err(reterr, r, "cannot publish stage: %s/%s: %s", rec->topdir, STAGE_MARKER_NAME,
			      strerror(-r));
	r = fault_step();
	if (r == 0 && syncfs(top_fd) < 0)
		r = negerrno();
	if (r < 0)
		return sl_err(reterr, r, "cannot publish stage: %s: cannot sync its files: %s", rec->topdir,
			      strerror(-r));
	return 0;
}

/*
 * Moves a ready stage's top directory (top_fd, in root_fd) to dest and
 * records it published. The order is what makes it safe against a power
 * cut: the tree's data is synced first (a published tree must never come
 * back with empty files); the destination is recorded durably before the
 * rename (so that recovery finds a tree whose rename reached the disk and
 * marks it published instead of forgetting it); the rename never replaces
 * anything; both folders are synced; then the state moves on. Every refusal
 * before the rename leaves the stage ready and untouched. Only a rename
 * followed by a failed record update ends otherwise: the directory is
 * renamed back (the stage stays ready), and if even that fails the tree
 * stays at dest, where the next recovery finds it and marks it published.
 */
int stage_publish(struct sl_store *store, struct store_record *rec, int root_fd, int top_fd, const char *dest,
		  struct sl_error *reterr)
{
	_cleanup_close_ int pfd = -1;
	char abs[PATH_MAX];
	const char *base = NULL;
	int r;

	assert(root_fd >= 0 && top_fd >= 0); /* Both callers hold the stage's top directory open. */
	r = publish_check(root_fd, dest, abs, &pfd, &base, reterr);
	if (r < 0)
		return r;
	r = publish_hand_over(rec, top_fd, reterr);
	if (r < 0)
		return r;
	r = store_stage_set_dest(store, rec->rowid, abs, reterr);
	if (r < 0)
		return r;
	snprintf(rec->dest, sizeof(rec->dest), "%s", abs);
	r = fault_step();
	if (r == 0 && renameat2(root_fd, rec->topdir, pfd, base, RENAME_NOREPLACE) < 0)
		r = negerrno();
	if (r < 0) {
		sl_err(reterr, r, "cannot publish stage: destination %s: %s", abs,
		       r == -EXDEV ? "must be on the same filesystem as the staging root" : strerror(-r));
		if (r == -EEXIST || r == -EXDEV || r == -EACCES || r == -EROFS || r == -ENOENT)
			sl_err_flag(reterr, SL_ERROR_CANTCREAT);
		return r;
	}
	r = fault_step();
	if (r == 0 && (fsync(pfd) < 0 || fsync(root_fd) < 0) && errno != EINVAL)
		r = negerrno();
	if (r == 0)
		r = store_stage_transition(store, rec->rowid, STATE_BIT(SL_STATE_READY), SL_STATE_PUBLISHED, NULL, true,
					   reterr);
	/* A recovery saw the top directory gone and took the record: it finds
	 * the tree at the recorded destination and marks it published. The
	 * tree must stay where it went. */
	if (r == -ESTALE) {
		sl_err_clear(reterr);
		r = 0;
	}
	if (r < 0) {
		if (renameat2(pfd, base, root_fd, rec->topdir, RENAME_NOREPLACE) == 0)
			(void)fsync(root_fd);
		return sl_err(reterr, r, "cannot publish stage: %s", strerror(-r));
	}
	rec->state = SL_STATE_PUBLISHED;
	return 0;
}

int sl_stage_publish(struct sl_stage *st, const char *dest, struct sl_error *reterr)
{
	int r;

	if (!st || !dest)
		return sl_err(reterr, -EINVAL, "cannot publish stage: missing argument");
	if (st->rec.state != SL_STATE_READY)
		return sl_err(reterr, -EINVAL, "cannot publish stage: %s: it is %s, not ready", st->rec.topdir,
			      sl_store_state_name(st->rec.state));
	/* A failed publish leaves the stage ready: the caller may try another
	 * destination, or release it. */
	r = stage_publish(st->store, &st->rec, st->root_fd, st->top_fd, dest, reterr);
	if (r == 0)
		stage_close(st);
	return r;
}

void sl_stage_free(struct sl_stage *st)
{
	if (!st)
		return;
	if (st->rec.state == SL_STATE_STAGING)
		(void)stage_abort_on_error(st, 0);
	stage_close(st);
	closep(&st->root_fd);
	free(st);
}

const char *sl_stage_id(const struct sl_stage *st)
{
	return st->rec.id;
}

const char *sl_stage_label(const struct sl_stage *st)
{
	return st->rec.label;
}

const char *sl_stage_path(const struct sl_stage *st)
{
	return st->path;
}

int sl_stage_fd(const struct sl_stage *st)
{
	return st->top_fd;
}

int sl_stage_lock_inherit(struct sl_stage *st, struct sl_error *reterr)
{
	int flags;

	if (!st || st->top_fd < 0)
		return sl_err(reterr, -EINVAL, "cannot pass stage lock: stage is not open");
	flags = fcntl(st->top_fd, F_GETFD);
	if (flags < 0 || fcntl(st->top_fd, F_SETFD, flags & ~FD_CLOEXEC) < 0)
		return sl_err(reterr, negerrno(), "cannot pass stage lock: %s", strerror(errno));
	return st->top_fd;
}
