/* SPDX-License-Identifier: MIT */
/*
 * by-id.c: releasing and publishing a stage by its id, from another process
 * than the one that staged it (sl_stage_release_id(), sl_stage_publish_id()): the
 * stage's lock taken first, so that no live stager or runtime has its
 * stage pulled from under it; and stage_try_lock(), that lock taken
 * without waiting, which recover/ takes too.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>

#include "stage-private.h"

/* stage_try_lock()'s retries: 20 of 2 ms, some 40 ms in all, far longer
 * than a liveness probe holds its shared lock, and short enough that a
 * recovery waits on no real holder. */
#define TRY_LOCK_RETRIES 20
#define TRY_LOCK_PAUSE_US 2000

int stage_try_lock(int top_fd)
{
	for (int i = 0;; i++) {
		if (flock(top_fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK || i == TRY_LOCK_RETRIES)
			return negerrno();
		usleep(TRY_LOCK_PAUSE_US);
	}
}

/* Opens a stage's top directory from its record and takes its lock, so
 * that no live process (a stager, a runtime) has the stage pulled from
 * under it. -ENOENT when it is gone, -EBUSY when someone holds it. */
static int lock_top(const struct store_record *rec, int *ret_root, int *ret_top, struct sl_error *reterr,
		    const char *what)
{
	_cleanup_close_ int root_fd = -1, top = -1;
	const char *why = stage_record_check(rec);
	int r;

	if (why)
		return sl_err(reterr, -EBADMSG, "cannot %s stage: record: fails validation: %s", what, why);
	r = stage_open_root(rec->root, &root_fd);
	/* A root that is gone, is no longer a directory, or lies where
	 * another user can move it holds no lock we could trust: the undo then
	 * judges it (and fails the stage unless it can prove it gone). */
	if (r == -ENOENT || r == -ELOOP || r == -ENOTDIR || r == -EPERM)
		return -ENOENT;
	if (r < 0)
		return sl_err(reterr, r, "cannot %s stage: staging root %s: %s", what, rec->root, strerror(-r));
	top = openat(root_fd, rec->topdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (top >= 0 && (r = stage_try_lock(top)) < 0)
		return sl_err(reterr, r == -EWOULDBLOCK ? -EBUSY : r, "cannot %s stage: %s: in use by a live process",
			      what, rec->topdir);
	*ret_root = TAKE_FD(root_fd);
	*ret_top = TAKE_FD(top);
	return 0;
}

/* Returns r from a release that failed with the stage in state, flagging
 * in *reterr a stage left failed or published (sl-stage.h). */
static int release_failed(struct sl_error *reterr, int r, enum sl_state state)
{
	if (state == SL_STATE_FAILED)
		sl_err_flag(reterr, SL_ERROR_STAGE_FAILED);
	if (state == SL_STATE_PUBLISHED)
		sl_err_flag(reterr, SL_ERROR_STAGE_PUBLISHED);
	return r;
}

int sl_stage_release_id(struct sl_store *store, const char *id, struct sl_error *reterr)
{
	return sl_stage_release_id_progress(store, id, NULL, NULL, reterr);
}

int sl_stage_release_id_progress(struct sl_store *store, const char *id,
				 void (*progress)(const struct sl_progress *progress, void *userdata), void *userdata,
				 struct sl_error *reterr)
{
	struct stage_undo_progress stage_undo_progress = { .fn = progress, .userdata = userdata };
	_cleanup_close_ int root_fd = -1, top = -1;
	struct store_record rec;
	unsigned from;
	int r;

	r = store_stage_get(store, id, &rec, reterr);
	if (r < 0)
		return r;
	switch (rec.state) {
	case SL_STATE_RELEASED:
	case SL_STATE_ABORTED:
	case SL_STATE_RECOVERED:
		return 0;
	case SL_STATE_PUBLISHED:
		return release_failed(reterr,
				      sl_err(reterr, -EINVAL,
					     "cannot release stage: %s: it is published; it belongs to its destination",
					     rec.topdir),
				      rec.state);
	case SL_STATE_RECOVERING:
		return sl_err(reterr, -EBUSY, "cannot release stage: %s: recovery is working on it", rec.topdir);
	default:
		break;
	}
	r = stage_reserve_fds("release stage", reterr);
	if (r < 0)
		return r;
	r = lock_top(&rec, &root_fd, &top, reterr, "release");
	if (r < 0 && r != -ENOENT)
		return release_failed(reterr, r, rec.state);
	from = stage_begin_release(store, &rec, reterr);
	if (from == 0) {
		/* Another process moved it on meanwhile: say where to. */
		if (store_stage_get_rowid(store, rec.rowid, &rec, NULL) < 0)
			rec.state = SL_STATE_COUNT_;
		return release_failed(reterr, -ESTALE, rec.state);
	}
	r = stage_undo_to(store, &rec, from, SL_STATE_RELEASED, "release", progress ? &stage_undo_progress : NULL,
			  reterr);
	return r < 0 ? r : 1;
}

int sl_stage_publish_id(struct sl_store *store, const char *id, const char *dest, struct sl_error *reterr)
{
	_cleanup_close_ int root_fd = -1, top = -1;
	struct store_record rec;
	int r;

	r = store_stage_get(store, id, &rec, reterr);
	if (r < 0)
		return r;
	if (rec.state != SL_STATE_READY)
		return sl_err(reterr, -EINVAL, "cannot publish stage: %s: it is %s, not ready", rec.topdir,
			      sl_store_state_name(rec.state));
	r = lock_top(&rec, &root_fd, &top, reterr, "publish");
	if (r == -ENOENT || (r == 0 && top < 0))
		return sl_err(reterr, -ENOENT, "cannot publish stage: %s: %s", rec.topdir, strerror(ENOENT));
	if (r < 0)
		return r;
	/* Claim it for this publisher first: a recovery that judged it stale
	 * before we took the lock then fails its compare-and-swap claim, so
	 * it cannot mark the stage recovered while we rename it away. */
	r = store_stage_reclaim(store, &rec, reterr);
	if (r < 0)
		return r;
	return stage_publish(store, &rec, root_fd, top, dest, reterr);
}
