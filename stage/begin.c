/* SPDX-License-Identifier: MIT */
/*
 * begin.c: beginning a stage (sl_stage_begin()): the staging root checked
 * (and made) and opened, the descriptor preflight, the stage's record and
 * the intent for its top directory committed, and only then the top
 * directory made, locked, marked and confirmed (docs/design.md, "Log before
 * create").
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "stage-private.h"

/* The random bytes of a stage id: two hex digits each. */
#define ID_RANDOM_BYTES (STORE_ID_LEN / 2)
_Static_assert(2 * ID_RANDOM_BYTES + 1 <= sizeof(((struct store_record *)0)->id),
	       "a stage id's hex digits fit its record");

/* The root's path is named: a path is no secret, and "staging root: No
 * such file or directory" leaves the reader to guess which one. */
static int fail_root(struct sl_error *reterr, const char *root, int r, const char *why)
{
	r = sl_err(reterr, r, "cannot begin stage: staging root %s: %s", root, why ? why : strerror(-r));
	sl_err_flag(reterr, SL_ERROR_CANTCREAT);
	return r;
}

/* fsyncs path and every directory above it: after mkdir_parents, the new
 * entries are in their parents, which a later fsync of path alone does not
 * make durable on every file system. */
static int sync_chain(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (;;) {
		_cleanup_close_ int fd = open(len ? buf : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (fd < 0)
			return negerrno();
		if (fsync(fd) < 0 && errno != EINVAL && errno != EROFS)
			return negerrno();
		if (len == 0)
			return 0;
		while (len > 0 && buf[len - 1] != '/')
			len--;
		while (len > 0 && buf[len - 1] == '/')
			len--;
		buf[len] = '\0';
	}
}

/* Opens the staging root, creating it 0700 when missing, and records it by
 * its canonical path (symlinks resolved once, here): every later use opens
 * that path component by component and checks the root's identity. Refuses
 * a root that another user could use to swap names under us: one whose
 * path holds a directory another user owns or can write (but for a sticky
 * one), one writable by group or others, or owned by another user. */
static int prepare_root(char *root, int *ret_fd, struct sl_error *reterr)
{
	_cleanup_close_ int fd = -1;
	char canon[PATH_MAX];
	size_t bad = 0;
	struct stat st;
	int r;

	/* A symlink named as the root is refused as before; symlinks above it
	 * (/var/run) are resolved once, here. */
	if (lstat(root, &st) == 0 && !S_ISDIR(st.st_mode))
		return fail_root(reterr, root, -ELOOP, "is a symlink or not a directory; refused");
	r = stage_canonical_root(root, canon, sizeof(canon));
	if (r == -ENOENT) {
		r = mkdir_parents(root);
		if (r < 0)
			return fail_root(reterr, root, r, NULL);
		r = stage_canonical_root(root, canon, sizeof(canon));
		/* The record will name this root and its identity: the new
		 * directories must be durable before it is (a power cut that
		 * kept the record and lost the root would leave a stage that
		 * recovery cannot prove gone). */
		if (r == 0)
			r = sync_chain(canon);
	}
	if (r == -ENOTDIR)
		return fail_root(reterr, root, -ELOOP, "is a symlink or not a directory; refused");
	if (r < 0)
		return fail_root(reterr, root, r, NULL);
	r = stage_open_root_chain(canon, &fd, &bad);
	if (r == -EPERM && bad == strlen(canon) && lstat(canon, &st) == 0)
		return fail_root(reterr, root, -EPERM,
				 st.st_uid != geteuid() && st.st_uid != 0 ? "owned by another user; refused"
									  : "writable by group or others; refused");
	if (r == -EPERM) {
		r = sl_err(reterr, -EPERM,
			   "cannot begin stage: staging root %s: %.*s is owned or writable by another user; refused",
			   root, (int)bad, canon);
		sl_err_flag(reterr, SL_ERROR_CANTCREAT);
		return r;
	}
	if (r == -ELOOP)
		return fail_root(reterr, root, -ELOOP, "is a symlink or not a directory; refused");
	if (r < 0)
		return fail_root(reterr, root, r, NULL);
	if (fstat(fd, &st) < 0)
		return fail_root(reterr, root, negerrno(), NULL);
	if (st.st_uid != geteuid() && st.st_uid != 0)
		return fail_root(reterr, root, -EPERM, "owned by another user; refused");
	if (faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) < 0)
		return fail_root(reterr, root, negerrno(), "not writable");
	strcpy(root, canon);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int stage_reserve_fds(const char *what, struct sl_error *reterr)
{
	size_t free_fds = 0;
	int r = fd_reserve(STAGE_RESERVE_FDS, &free_fds);

	if (r == -EMFILE)
		return sl_err(reterr, r, "cannot %s: too few file descriptors: %zu free, an undo needs %d (ulimit -n)",
			      what, free_fds, STAGE_RESERVE_FDS);
	if (r < 0)
		return sl_err(reterr, r, "cannot %s: file descriptors: %s", what, strerror(-r));
	return 0;
}

/* See stage-private.h: the directory goes by the tree removal, and the
 * record is left as the recovery has it. */
int stage_give_up_top(struct sl_stage *st, const struct fileid *id, struct sl_error *reterr)
{
	struct sl_error ignored = { 0 };

	st->top_fd = safe_close(st->top_fd);
	(void)rmtree_remove(st->root_fd, ".", st->rec.topdir, true, id->dev, id->ino, &ignored);
	st->rec.state = SL_STATE_RECOVERING;
	return sl_err(reterr, -EAGAIN, "cannot begin stage: %s: a recovery claimed the stage meanwhile; try again",
		      st->rec.topdir);
}

/* Fills in a new stage's record: the root's identity, a random id, and the
 * top directory's name. */
static int name_stage(struct sl_stage *st, const char *label, struct sl_error *reterr)
{
	unsigned char raw[ID_RANDOM_BYTES];
	struct fileid id;
	int r;

	r = fd_fileid(st->root_fd, &id);
	if (r < 0)
		return fail_root(reterr, st->rec.root, r, NULL);
	st->rec.have_root_id = true;
	st->rec.root_ino = id.ino;
	st->rec.root_btime = id.btime;
	st->rec.root_volatile = fd_volatile(st->root_fd);

	/* 128 random bits: the id is also the top directory's name, so it
	 * must be unguessable as well as unique. */
	arc4random_buf(raw, sizeof(raw));
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(st->rec.id + 2 * i, sizeof("ff"), "%02x", raw[i]);
	snprintf(st->rec.label, sizeof(st->rec.label), "%s", label);
	snprintf(st->rec.topdir, sizeof(st->rec.topdir), "%s-%s", label, st->rec.id);
	if (snprintf(st->path, sizeof(st->path), "%s/%s", st->rec.root, st->rec.topdir) >= (int)sizeof(st->path))
		return fail_root(reterr, st->rec.root, -ENAMETOOLONG, NULL);
	st->rec.state = SL_STATE_STAGING;
	st->rec.created_ms = epoch_ms();
	return 0;
}

/* Records the stage, then creates its top directory. */
static int create_top(struct sl_stage *st, struct sl_error *reterr)
{
	/* Log before create: the stage and the intent for its top directory
	 * are durable before the directory can exist, so no crash can leave a
	 * directory that no record names. */
	char marker[sizeof(st->rec.topdir) + sizeof(STAGE_MARKER_NAME)];
	int r;

	snprintf(marker, sizeof(marker), "%s/%s", st->rec.topdir, STAGE_MARKER_NAME);
	r = store_stage_insert(st->store, &st->rec, marker, reterr);
	if (r < 0)
		return r;
	st->next_seq = 2;
	r = fault_step();
	if (r == 0 && mkdirat(st->root_fd, st->rec.topdir, 0700) < 0)
		r = negerrno();
	if (r < 0) {
		/* EEXIST included: a path is never adopted. */
		sl_err(reterr, r, "cannot begin stage: %s: %s", st->rec.topdir, strerror(-r));
		if (r == -EEXIST || r == -EACCES || r == -EROFS)
			sl_err_flag(reterr, SL_ERROR_CANTCREAT);
		/* Nothing of ours to remove: only the record ends. */
		(void)store_stage_transition(st->store, st->rec.rowid, STATE_BIT(SL_STATE_STAGING), SL_STATE_ABORTED,
					     NULL, false, NULL);
		st->rec.state = SL_STATE_ABORTED;
		return r;
	}
	return 0;
}

/* Opens and locks the new top directory, makes its name durable and
 * confirms the record with its identity. */
static int confirm_top(struct sl_stage *st, struct sl_error *reterr)
{
	struct store_record now;
	struct fileid id;
	int r;

	st->top_fd = openat(st->root_fd, st->rec.topdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	/* Blocking: the directory is brand new, so the only other holder can
	 * be a liveness probe's shared lock, for microseconds. */
	if (st->top_fd < 0 && errno == ENOENT) {
		/* Gone before we could lock it: only a recovery that claimed
		 * the stage removes a top directory it did not lock. */
		(void)stage_abort_on_error(st, -EAGAIN);
		return sl_err(reterr, -EAGAIN,
			      "cannot begin stage: %s: a recovery claimed the stage meanwhile; try again",
			      st->rec.topdir);
	}
	if (st->top_fd < 0 || flock(st->top_fd, LOCK_EX) < 0 || fd_fileid(st->top_fd, &id) < 0 ||
	    fchmod(st->top_fd, 0700) < 0) {
		r = sl_err(reterr, negerrno(), "cannot begin stage: %s: %s", st->rec.topdir, strerror(errno));
		return stage_abort_on_error(st, r);
	}
	/* The marker, logged with the intent, before anything else goes in:
	 * from now on the directory says whose it is. */
	r = stage_marker_write(st->top_fd, st->rec.id, store_identity(st->store));
	if (r < 0) {
		sl_err(reterr, r, "cannot begin stage: %s/%s: %s", st->rec.topdir, STAGE_MARKER_NAME, strerror(-r));
		return stage_abort_on_error(st, r);
	}
	st->rec.have_inode = true;
	st->rec.dev = id.dev;
	st->rec.ino = id.ino;
	st->rec.btime = id.btime;
	/* The directory's name must be durable before anything relies on it
	 * (a disk-backed root); the store's sync of the insert (create_top)
	 * already covers its record. */
	r = fault_step();
	if (r == 0 && fsync(st->root_fd) < 0 && errno != EINVAL)
		r = negerrno();
	if (r < 0) {
		sl_err(reterr, r, "cannot begin stage: %s: %s", st->rec.topdir, strerror(-r));
		return stage_abort_on_error(st, r);
	}
	/* The confirmation, a compare-and-swap on our own staging record,
	 * rides on the next commit, which comes before anything but the
	 * marker goes in (stage_log_flush()): between the insert and then, a
	 * recovery that judged the owner dead may have claimed the stage; it
	 * then owns the record and we own nothing. */
	st->confirm_pending = true;
	st->top_id = id;
	/* A read, no commit: a claim made before now fails the begin itself
	 * (the compare-and-swap still decides, for one made after). */
	r = store_stage_get_rowid(st->store, st->rec.rowid, &now, reterr);
	if (r < 0)
		return stage_abort_on_error(st, r);
	if (now.state != SL_STATE_STAGING || now.claimer.pid != 0)
		return stage_give_up_top(st, &id, reterr);
	return 0;
}

/* Records the stage, then creates, locks and confirms its top directory. */
static int begin_top(struct sl_stage *st, const char *label, struct sl_error *reterr)
{
	int r = name_stage(st, label, reterr);

	if (r == 0)
		r = create_top(st, reterr);
	if (r == 0)
		r = confirm_top(st, reterr);
	return r;
}

int sl_stage_begin(struct sl_store *store, const char *root, const struct sl_stage_options *opts, struct sl_stage **ret,
		   struct sl_error *reterr)
{
	const char *label = opts && opts->label ? opts->label : "stage";
	_cleanup_free_ struct sl_stage *st = NULL;
	int r;

	if (!store || !root || !ret)
		return sl_err(reterr, -EINVAL, "cannot begin stage: missing argument");
	if (!label_valid(label))
		return sl_err(reterr, -EINVAL, "cannot begin stage: bad label: want [a-z0-9][a-z0-9_.-]{0,%d}",
			      LABEL_MAX - 1);
	st = calloc(1, sizeof(*st));
	if (!st)
		return sl_err(reterr, -ENOMEM, "cannot begin stage: %s", strerror(ENOMEM));
	st->store = store;
	st->cancel = opts ? opts->cancel : NULL;
	st->progress = opts ? opts->progress : NULL;
	st->progress_userdata = opts ? opts->progress_userdata : NULL;
	st->root_fd = st->top_fd = -1;
	r = proc_identity(opts ? opts->owner_pid : 0, &st->rec.owner);
	if (r == -ESRCH)
		return sl_err(reterr, -EINVAL, "cannot begin stage: owner: no such process");
	if (r < 0)
		return sl_err(reterr, r, "cannot begin stage: owner: %s", strerror(-r));
	r = stage_absolute_root(root, st->rec.root, sizeof(st->rec.root));
	if (r < 0)
		return fail_root(reterr, root, r, r == -EINVAL ? "'..' in the path, or '/' itself; refused" : NULL);
	r = stage_reserve_fds("begin stage", reterr);
	if (r < 0)
		return r;
	r = prepare_root(st->rec.root, &st->root_fd, reterr);
	if (r == 0)
		r = begin_top(st, label, reterr);
	if (r < 0) {
		closep(&st->root_fd);
		return r;
	}
	*ret = TAKE_PTR(st);
	return 0;
}
