/* SPDX-License-Identifier: MIT */
/*
 * liveness.c: is a stage's owner still alive? A pid alone cannot say: pids
 * are reused and restart with each boot. A stage is stale only when it is
 * from another boot, or when its owner process (pid AND start time) is gone
 * AND nobody holds the flock on its top directory: the lock is what keeps a
 * bundle alive while a runtime that inherited it still runs.
 */
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "recover-private.h"

int liveness_self_init(struct liveness_self *h)
{
	int r = proc_boot_id(h->boot_id);

	return r < 0 ? r : proc_pidns(&h->pidns);
}

/* False only when the process named by o is known to be gone: no such pid,
 * that pid with another start time, or that pid a zombie (proc.c: an owner
 * that exited keeps its pid until it is reaped). Any other error (a /proc
 * we cannot read) proves nothing, and a stage is never removed on a guess. */
static bool process_alive(const struct proc_owner *o)
{
	uint64_t start;
	int r;

	if (o->pid <= 0)
		return false;
	r = proc_start_time((pid_t)o->pid, &start);
	if (r == -ESRCH)
		return false;
	return r < 0 || start == o->start_time;
}

/* What the top directory says about its lock. (Not LOCK_*: that is
 * flock()'s namespace.) */
enum top_lock {
	TOP_LOCKED, /* someone holds it, or we cannot tell */
	TOP_UNLOCKED,
	TOP_MISSING, /* the root is the recorded one and holds no top directory */
};

/* Whether someone holds the top directory's lock. A shared lock on a fresh
 * fd is enough to prove there is no exclusive holder (the owner, or
 * children that inherited its fd), and, unlike an exclusive one, never
 * makes a stager or a release fail for the instant it is held. A top
 * directory replaced by something that is not a directory holds no lock;
 * any other error (EACCES, EIO) counts as held. A missing one is told
 * apart only when the root is still the directory the stage began in: a
 * root path repointed elsewhere proves nothing about the stage. */
static enum top_lock top_lock(const struct store_record *rec)
{
	_cleanup_close_ int root = -1, top = -1;
	struct fileid id;
	int r;

	r = stage_open_root(rec->root, &root);
	if (r < 0)
		return r == -ENOENT ? TOP_UNLOCKED : TOP_LOCKED;
	top = openat(root, rec->topdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (top < 0 && errno == ENOENT)
		return rec->have_inode && rec->have_root_id && fd_fileid(root, &id) == 0 && stage_root_matches(rec, &id)
			     ? TOP_MISSING
			     : TOP_UNLOCKED;
	if (top < 0)
		return errno == ELOOP || errno == ENOTDIR ? TOP_UNLOCKED : TOP_LOCKED;
	return flock(top, LOCK_SH | LOCK_NB) < 0 ? TOP_LOCKED : TOP_UNLOCKED;
}

enum liveness liveness_of(const struct liveness_self *h, const struct store_record *rec)
{
	const struct proc_owner *o = rec->state == SL_STATE_RECOVERING ? &rec->claimer : &rec->owner;
	enum top_lock lock = TOP_UNLOCKED;

	/* A record that fails validation opens nothing here: recovery claims
	 * it and the undo fails it with the reason, removing nothing. */
	if (stage_record_check(rec))
		return LIVENESS_STALE;
	/* Nothing of another boot is running: its pids mean nothing now. */
	if (strcmp(o->boot_id, h->boot_id) != 0)
		return LIVENESS_STALE;
	if (rec->state != SL_STATE_RECOVERING) {
		lock = top_lock(rec);
		if (lock == TOP_LOCKED)
			return LIVENESS_LIVE;
		/* A stage whose top directory was made and is gone has
		 * nothing left on disk: a removal finished while the store
		 * could not record it. Its record catches up now. */
		if (lock == TOP_MISSING)
			return LIVENESS_STALE;
		/* A failed stage's owner already gave it up: with its lock
		 * free, it is retried whoever the owner is. */
		if (rec->state == SL_STATE_FAILED)
			return LIVENESS_STALE;
	}
	/* A pid read in another pid namespace cannot be looked up here. */
	if (o->pidns != h->pidns)
		return LIVENESS_UNJUDGED;
	return process_alive(o) ? LIVENESS_LIVE : LIVENESS_STALE;
}
