/* SPDX-License-Identifier: MIT */
/*
 * stage.c: beginning a stage, creating paths inside it (each logged before
 * it exists), and finishing it: ready, release, abort, publish.
 */
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "stage-private.h"

#define BIT(s) (1u << (s))

/* The root's path is named: a path is no secret, and "staging root: No
 * such file or directory" leaves the reader to guess which one. */
static int fail_root(struct sl_error *reterr, const char *root, int r, const char *why)
{
	r = sl_err(reterr, r, "cannot begin stage: staging root %s: %s", root, why ? why : strerror(-r));
	if (reterr)
		reterr->flags |= SL_ERROR_CANTCREAT;
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
	r = canonical_root(root, canon, sizeof(canon));
	if (r == -ENOENT) {
		r = mkdir_parents(root);
		if (r < 0)
			return fail_root(reterr, root, r, NULL);
		r = canonical_root(root, canon, sizeof(canon));
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
	r = open_root_chain(canon, &fd, &bad);
	if (r == -EPERM && bad == strlen(canon) && lstat(canon, &st) == 0)
		return fail_root(reterr, root, -EPERM,
				 st.st_uid != geteuid() && st.st_uid != 0 ? "owned by another user; refused"
									   : "writable by group or others; refused");
	if (r == -EPERM) {
		r = sl_err(reterr, -EPERM,
			   "cannot begin stage: staging root %s: %.*s is owned or writable by another user; refused",
			   root, (int)bad, canon);
		if (reterr)
			reterr->flags |= SL_ERROR_CANTCREAT;
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

/* Makes root absolute without resolving symlinks, dropping "." components,
 * repeated and trailing slashes, so the stored root names the same
 * directory from anywhere. ".." is refused: it cannot be resolved
 * lexically without assuming no symlink on the way. */
int absolute_root(const char *root, char *buf, size_t size)
{
	char joined[PATH_MAX * 2];
	size_t len = 0;
	int n;

	if (root[0] == '/') {
		n = snprintf(joined, sizeof(joined), "%s", root);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)))
			return negerrno();
		n = snprintf(joined, sizeof(joined), "%s/%s", cwd, root);
	}
	if (n < 0 || (size_t)n >= sizeof(joined))
		return -ENAMETOOLONG;
	for (char *save = NULL, *c = strtok_r(joined, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		size_t cl = strlen(c);

		if (strcmp(c, ".") == 0)
			continue;
		if (strcmp(c, "..") == 0)
			return -EINVAL;
		/* Room for this component and a LABEL-ID below it. */
		if (len + 1 + cl + 1 + LABEL_MAX + 1 + STORE_ID_LEN >= size)
			return -ENAMETOOLONG;
		buf[len++] = '/';
		memcpy(buf + len, c, cl);
		len += cl;
	}
	/* "/" itself is no staging root: its stages would sit among the
	 * system's own directories, and records could not name it cleanly. */
	if (len == 0)
		return -EINVAL;
	buf[len] = '\0';
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

/* Gives up a top directory that a recovery claimed before the stager could
 * confirm it: the record is the recovery's now, so the directory (still
 * empty but for what a racing process put there) is removed here, by the
 * undo's safe tree removal, without touching the record. */
static int give_up_top(struct sl_stage *st, const struct fileid *id, struct sl_error *reterr)
{
	struct sl_error ignored = { 0 };

	st->top_fd = safe_close(st->top_fd);
	(void)undo_remove_tree(st->root_fd, ".", st->rec.topdir, true, id->dev, id->ino, &ignored);
	st->rec.state = SL_STATE_RECOVERING;
	return sl_err(reterr, -EAGAIN, "cannot begin stage: %s: a recovery claimed the stage meanwhile; try again",
		      st->rec.topdir);
}

/* Fills in a new stage's record: the root's identity, a random id, and the
 * top directory's name. */
static int name_stage(struct sl_stage *st, const char *label, struct sl_error *reterr)
{
	unsigned char raw[16];
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
		snprintf(st->rec.id + 2 * i, 3, "%02x", raw[i]);
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
		if (reterr && (r == -EEXIST || r == -EACCES || r == -EROFS))
			reterr->flags |= SL_ERROR_CANTCREAT;
		/* Nothing of ours to remove: only the record ends. */
		(void)store_stage_transition(st->store, st->rec.rowid, BIT(SL_STATE_STAGING), SL_STATE_ABORTED, NULL,
					     false, NULL);
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
		(void)stage_fail(st, -EAGAIN);
		return sl_err(reterr, -EAGAIN, "cannot begin stage: %s: a recovery claimed the stage meanwhile; try again",
			      st->rec.topdir);
	}
	if (st->top_fd < 0 || flock(st->top_fd, LOCK_EX) < 0 || fd_fileid(st->top_fd, &id) < 0 ||
	    fchmod(st->top_fd, 0700) < 0) {
		r = sl_err(reterr, negerrno(), "cannot begin stage: %s: %s", st->rec.topdir, strerror(errno));
		return stage_fail(st, r);
	}
	/* The marker, logged with the intent, before anything else goes in:
	 * from now on the directory says whose it is. */
	r = marker_write(st->top_fd, st->rec.id, store_identity(st->store));
	if (r < 0) {
		sl_err(reterr, r, "cannot begin stage: %s/%s: %s", st->rec.topdir, STAGE_MARKER_NAME, strerror(-r));
		return stage_fail(st, r);
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
		return stage_fail(st, r);
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
		return stage_fail(st, r);
	if (now.state != SL_STATE_STAGING || now.claimer.pid != 0)
		return give_up_top(st, &id, reterr);
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

int sl_stage_begin(struct sl_store *store, const char *root, const struct sl_stage_options *opts,
		   struct sl_stage **ret, struct sl_error *reterr)
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
	r = absolute_root(root, st->rec.root, sizeof(st->rec.root));
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

/* Commits the entries in memory, with the top directory's confirmation if
 * it is pending and the move to ready if ready: one commit however many of
 * the three there are. */
static int log_commit(struct sl_stage *st, bool ready, struct sl_error *reterr)
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
		return give_up_top(st, &st->top_id, reterr);
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
	return log_commit(st, false, reterr);
}

void stage_set_log_mode(struct sl_stage *st, enum stage_log_mode mode)
{
	st->log_mode = mode;
	store_set_naive(st->store, mode == LOG_NAIVE);
}

int stage_log(struct sl_stage *st, const char *path, size_t len, enum store_kind kind, struct sl_error *reterr)
{
	size_t tl = strlen(st->rec.topdir), total = tl + 1 + len;
	int r;

	if (stage_cancelled(st))
		return sl_err(reterr, -ECANCELED, "cannot log entry: %s: interrupted", st->rec.topdir);
	if (st->log_mode == LOG_OFF)
		return 0;
	if (total > STAGE_PATH_MAX)
		return sl_err(reterr, -ENAMETOOLONG, "cannot log entry: %s/...: %s", st->rec.topdir,
			      strerror(ENAMETOOLONG));
	if (st->n == LOG_BATCH || st->used + total > sizeof(st->arena)) {
		r = log_commit(st, false, reterr);
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
	return st->log_mode == LOG_NAIVE ? log_commit(st, false, reterr) : 0;
}

static void stage_close(struct sl_stage *st)
{
	st->top_fd = safe_close(st->top_fd);
}

/* Removes the stage with the undo routine, which moves its record to `to`
 * (from one of from_mask), or to failed with the reason when the removal
 * could not finish. */
static int stage_undo_to(struct sl_store *store, struct store_record *rec, unsigned from_mask, enum sl_state to,
			 const char *what, struct undo_progress *progress, struct sl_error *reterr)
{
	struct sl_error reason = { 0 };
	int r;

	r = undo_stage(store, rec, from_mask, to, progress, &reason);
	if (r < 0) {
		rec->state = SL_STATE_FAILED;
		sl_err(reterr, r, "cannot %s stage: %s", what, reason.msg);
		if (reterr)
			reterr->flags |= reason.flags & SL_ERROR_STAGE_FAILED;
		return r;
	}
	rec->state = to;
	return 0;
}

int stage_fail(struct sl_stage *st, int r)
{
	/* The entries still in memory name paths inside the top directory,
	 * which the undo removes in any case; try to log them for the record,
	 * but a store that fails here must not stop the removal. A stage a
	 * recovery took (give_up_top()) is the recovery's: nothing is added. */
	if (st->rec.state == SL_STATE_STAGING || st->rec.state == SL_STATE_READY)
		(void)log_commit(st, false, NULL);
	stage_close(st);
	if (st->rec.state == SL_STATE_STAGING || st->rec.state == SL_STATE_READY)
		(void)stage_undo_to(st->store, &st->rec, BIT(SL_STATE_STAGING) | BIT(SL_STATE_READY),
				    SL_STATE_ABORTED, "abort", NULL, NULL);
	return r;
}

static int check_staging(struct sl_stage *st, const char *what, struct sl_error *reterr)
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
	const char *slash, *why = path_check(path, len);
	int fd;

	if (why)
		return sl_err(reterr, -EINVAL, "bad path in stage: %s", why);
	slash = strrchr(path, '/');
	fd = open_beneath(st->top_fd, path, slash ? (size_t)(slash - path) : 0, O_PATH);
	if (fd < 0)
		return sl_err(reterr, fd, "cannot open: %s/%.*s: %s", st->rec.topdir,
			      slash ? (int)(slash - path) : 0, path, strerror(-fd));
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
	int pfd, r = check_staging(st, what, reterr);

	if (r < 0)
		return r;
	pfd = stage_open_parent(st, path, ret_name, reterr);
	if (pfd < 0)
		return stage_fail(st, pfd);
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
		return stage_fail(st, r);
	}
	return pfd;
}

int sl_stage_expect_file(struct sl_stage *st, const char *path, struct sl_error *reterr)
{
	size_t len = path ? strlen(path) : 0;
	const char *why;
	int r = check_staging(st, "expect file", reterr);

	if (r < 0)
		return r;
	why = path ? path_check(path, len) : "no path";
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
		return stage_fail(st, r);
	}
	return 0;
}

int sl_stage_write_file(struct sl_stage *st, const char *path, const void *buf, size_t len, mode_t mode,
			struct sl_error *reterr)
{
	_cleanup_close_ int pfd = -1, fd = -1;
	bool named = false;
	const char *name;
	char proc[64];
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
		return stage_fail(st, r);
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
		return stage_fail(st, r);
	}
	return 0;
}

int sl_stage_ready(struct sl_stage *st, struct sl_error *reterr)
{
	int r = check_staging(st, "mark stage ready", reterr);

	if (r < 0)
		return r;
	/* An expected file never written needs no entry. */
	if (st->expect == EXPECT_PENDING)
		st->expect = EXPECT_NONE;
	r = log_commit(st, true, reterr);
	if (r < 0)
		return stage_fail(st, r);
	st->rec.state = SL_STATE_READY;
	return 0;
}

int sl_stage_abort(struct sl_stage *st, struct sl_error *reterr)
{
	if (!st)
		return sl_err(reterr, -EINVAL, "cannot abort stage: no stage");
	if (st->rec.state != SL_STATE_STAGING && st->rec.state != SL_STATE_READY)
		return st->rec.state == SL_STATE_ABORTED ? 0 : sl_err(reterr, -EINVAL, "cannot abort stage: it is %s",
									sl_store_state_name(st->rec.state));
	(void)stage_log_flush(st, NULL);
	stage_close(st);
	return stage_undo_to(st->store, &st->rec, BIT(SL_STATE_STAGING) | BIT(SL_STATE_READY), SL_STATE_ABORTED,
			     "abort", NULL, reterr);
}

/*
 * Moves a stage to releasing before its removal and returns the states the
 * removal may then finish it from, or 0 (with reterr set) when the stage
 * changed state meanwhile. A store that cannot be written (full, busy)
 * stops nothing: the caller holds the stage's lock, so the removal goes on
 * and the record catches up at its end, or with the next recovery.
 */
static unsigned begin_release(struct sl_store *store, struct store_record *rec, struct sl_error *reterr)
{
	struct sl_error err = {0};
	unsigned from = BIT(SL_STATE_STAGING) | BIT(SL_STATE_READY) | BIT(SL_STATE_FAILED) | BIT(SL_STATE_RELEASING);
	int r = store_stage_transition(store, rec->rowid, from, SL_STATE_RELEASING, NULL, false, &err);

	if (r == -ESTALE) {
		sl_err(reterr, r, "%s", err.msg);
		return 0;
	}
	if (r == 0)
		from = BIT(SL_STATE_RELEASING);
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
	from = begin_release(st->store, &st->rec, reterr);
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

	r = absolute_root(dest, abs, PATH_MAX);
	if (r == -EINVAL)
		return sl_err(reterr, r, "cannot publish stage: destination %s: not a new name ('.', '..' or '/'); refused",
			      dest);
	if (r < 0)
		return sl_err(reterr, r, "cannot publish stage: destination %s: %s", dest, strerror(-r));
	slash = strrchr(abs, '/');
	*slash = '\0';
	pfd = open(slash == abs ? "/" : abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0)
		r = sl_err(reterr, negerrno(), "cannot publish stage: destination folder %s: %s", slash == abs ? "/" : abs,
			   strerror(errno));
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
	if (reterr)
		reterr->flags |= SL_ERROR_CANTCREAT;
	return r;
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
static int publish(struct sl_store *store, struct store_record *rec, int root_fd, int top_fd, const char *dest,
		   struct sl_error *reterr)
{
	_cleanup_close_ int pfd = -1;
	char abs[PATH_MAX];
	const char *base = NULL;
	int r;

	r = publish_check(root_fd, dest, abs, &pfd, &base, reterr);
	if (r < 0)
		return r;
	/* The tree is the caller's from here on: stagelog's marker does not
	 * go with it (and a tree without one is never taken for an orphan). */
	r = fault_step();
	if (r == 0 && unlinkat(top_fd, STAGE_MARKER_NAME, 0) < 0 && errno != ENOENT)
		r = negerrno();
	if (r < 0)
		return sl_err(reterr, r, "cannot publish stage: %s/%s: %s", rec->topdir, STAGE_MARKER_NAME, strerror(-r));
	r = fault_step();
	if (r == 0 && syncfs(top_fd) < 0)
		r = negerrno();
	if (r < 0)
		return sl_err(reterr, r, "cannot publish stage: %s: cannot sync its files: %s", rec->topdir, strerror(-r));
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
		if (reterr && (r == -EEXIST || r == -EXDEV || r == -EACCES || r == -EROFS || r == -ENOENT))
			reterr->flags |= SL_ERROR_CANTCREAT;
		return r;
	}
	r = fault_step();
	if (r == 0 && (fsync(pfd) < 0 || fsync(root_fd) < 0) && errno != EINVAL)
		r = negerrno();
	if (r == 0)
		r = store_stage_transition(store, rec->rowid, BIT(SL_STATE_READY), SL_STATE_PUBLISHED, NULL, true,
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
	r = publish(st->store, &st->rec, st->root_fd, st->top_fd, dest, reterr);
	if (r == 0)
		stage_close(st);
	return r;
}

void sl_stage_free(struct sl_stage *st)
{
	if (!st)
		return;
	if (st->rec.state == SL_STATE_STAGING)
		(void)stage_fail(st, 0);
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
	const char *why = record_check(rec);
	int r;

	if (why)
		return sl_err(reterr, -EBADMSG, "cannot %s stage: record: fails validation: %s", what, why);
	r = open_root(rec->root, &root_fd);
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
	if (reterr && state == SL_STATE_FAILED)
		reterr->flags |= SL_ERROR_STAGE_FAILED;
	if (reterr && state == SL_STATE_PUBLISHED)
		reterr->flags |= SL_ERROR_STAGE_PUBLISHED;
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
	struct undo_progress undo_progress = { .fn = progress, .userdata = userdata };
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
	from = begin_release(store, &rec, reterr);
	if (from == 0) {
		/* Another process moved it on meanwhile: say where to. */
		if (store_stage_get_rowid(store, rec.rowid, &rec, NULL) < 0)
			rec.state = SL_STATE_COUNT_;
		return release_failed(reterr, -ESTALE, rec.state);
	}
	r = stage_undo_to(store, &rec, from, SL_STATE_RELEASED, "release", progress ? &undo_progress : NULL, reterr);
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
	return publish(store, &rec, root_fd, top, dest, reterr);
}
