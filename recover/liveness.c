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

int here_init(struct here *h)
{
	int r = proc_boot_id(h->boot_id);

	return r < 0 ? r : proc_pidns(&h->pidns);
}

/* False only when the process named by o is known to be gone: no such pid,
 * or that pid with another start time. Any other error (a /proc we cannot
 * read) proves nothing, and a stage is never removed on a guess. */
static bool process_alive(const struct sl_owner *o)
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

/* True when someone holds the top directory's lock. A shared lock on a
 * fresh fd is enough to prove there is no exclusive holder (the owner, or
 * children that inherited its fd), and, unlike an exclusive one, never
 * makes a stager or a release fail for the instant it is held. A missing
 * top directory, or one replaced by something that is not a directory,
 * holds no lock; any other error (EACCES, EIO) counts as held. */
static bool lock_held(const struct sl_record *rec)
{
	_cleanup_close_ int root = -1, top = -1;
	int r;

	r = open_root(rec->root, &root);
	if (r < 0)
		return r != -ENOENT;
	top = openat(root, rec->topdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (top < 0)
		return errno != ENOENT && errno != ELOOP && errno != ENOTDIR;
	return flock(top, LOCK_SH | LOCK_NB) < 0;
}

enum liveness judge(const struct here *h, const struct sl_record *rec)
{
	const struct sl_owner *o = rec->state == SL_STATE_RECOVERING ? &rec->claimer : &rec->owner;

	/* A record that fails validation opens nothing here: recovery claims
	 * it and the undo fails it with the reason, removing nothing. */
	if (record_check(rec))
		return STALE;
	/* Nothing of another boot is running: its pids mean nothing now. */
	if (strcmp(o->boot_id, h->boot_id) != 0)
		return STALE;
	if (rec->state != SL_STATE_RECOVERING && lock_held(rec))
		return LIVE;
	/* A pid read in another pid namespace cannot be looked up here. */
	if (o->pidns != h->pidns)
		return UNJUDGED;
	return process_alive(o) ? LIVE : STALE;
}
