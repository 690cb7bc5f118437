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
	struct stat st;
	int r = proc_boot_id(h->boot_id);

	if (r < 0)
		return r;
	if (stat("/proc/self/ns/pid", &st) < 0)
		return negerrno();
	h->pidns = (uint64_t)st.st_ino;
	return 0;
}

/* True when the process named by o is running now: same pid, same start
 * time. */
static bool process_alive(const struct sl_owner *o)
{
	struct sl_owner now;

	if (o->pid <= 0 || proc_identity((pid_t)o->pid, &now) < 0)
		return false;
	return now.start_time == o->start_time;
}

/* True when someone holds the top directory's lock. Getting the lock on a
 * fresh fd proves there is no holder, including children that inherited
 * the owner's fd; it is dropped at once. */
static bool lock_held(const struct sl_record *rec)
{
	_cleanup_close_ int root = -1, top = -1;

	if (open_root(rec->root, &root) < 0)
		return false;
	top = openat(root, rec->topdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (top < 0)
		return false;
	return flock(top, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
}

enum liveness judge(const struct here *h, const struct sl_record *rec)
{
	const struct sl_owner *o = rec->state == SL_STATE_RECOVERING ? &rec->claimer : &rec->owner;

	/* Nothing of another boot is running: its pids mean nothing now. */
	if (strcmp(o->boot_id, h->boot_id) != 0)
		return STALE;
	if (rec->state != SL_STATE_RECOVERING && lock_held(rec))
		return LIVE;
	/* Our /proc shows our pid namespace; an owner recorded in another one
	 * cannot be looked up here. */
	if (o->pidns != h->pidns)
		return UNJUDGED;
	return process_alive(o) ? LIVE : STALE;
}
