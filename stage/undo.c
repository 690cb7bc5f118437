/* SPDX-License-Identifier: MIT */
/*
 * undo.c: the one routine that removes what a stage created. In-process
 * cleanup (release, abort) and recovery both come here; nothing else in
 * stagelog removes a staged path.
 *
 * The rules, each enforced where the comment stands below:
 *  - every logged path is checked lexically before anything is removed;
 *  - paths are resolved from a directory fd, never following a symlink and
 *    never crossing a mount;
 *  - only directories are ever opened, so a FIFO cannot block us and a
 *    device cannot be touched; files, symlinks, FIFOs, sockets and devices
 *    are only unlinked, so a hard link to an outside file loses its name
 *    here and nothing else;
 *  - the top directory is opened and verified first (its inode and birth
 *    time, or inode and device where no birth time is known, match the
 *    record), every entry is resolved beneath it, and it goes only if it
 *    is still that verified directory;
 *  - an entry is marked removed only after its path is gone.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "stage-private.h"

/* How often one directory may be scanned again because it still held names
 * after a full pass (something kept creating them). */
#define MAX_RESCANS 16
/* How many names one tree removal looks at before it gives up: far more
 * than any bundle holds, and an end even for a tree that a live process
 * keeps filling. */
#define MAX_TREE_NAMES (64UL * 1024 * 1024)

/* Sets the undo's reason in *reterr (replacing one set before: the undo
 * reports the failure that decided its outcome) and returns error. */
static int fail_reason(struct sl_error *reterr, int error, const char *fmt, ...) PRINTF_FMT(3, 4);
static int fail_reason(struct sl_error *reterr, int error, const char *fmt, ...)
{
	va_list ap;

	reterr->code = error;
	va_start(ap, fmt);
	vsnprintf(reterr->msg, UNDO_REASON_MAX, fmt, ap);
	va_end(ap);
	return error;
}

struct frame {
	DIR *d;          /* NULL while closed to bound open fds */
	uint64_t dev, ino;
	char *name;      /* name in the parent */
	unsigned rescans;
};

/* Directories known to hold something we cannot remove, by device and
 * inode: a parent read again from its start (after it was reopened through
 * "..", or rescanned) must not walk into them again, or a deep chain with a
 * mount at its bottom would be walked forever. Open addressing; ino 0 marks
 * a free slot (no directory has inode 0). */
struct idset {
	struct {
		uint64_t dev, ino;
	} *slot;
	size_t n, cap;
};

static size_t idset_hash(const struct idset *s, uint64_t dev, uint64_t ino)
{
	return (size_t)((ino * 0x9e3779b97f4a7c15ULL) ^ dev) & (s->cap - 1);
}

static bool idset_has(const struct idset *s, uint64_t dev, uint64_t ino)
{
	for (size_t i = s->cap ? idset_hash(s, dev, ino) : 0; s->cap && s->slot[i].ino; i = (i + 1) & (s->cap - 1))
		if (s->slot[i].ino == ino && s->slot[i].dev == dev)
			return true;
	return false;
}

static int idset_add(struct idset *s, uint64_t dev, uint64_t ino)
{
	if (ino == 0 || idset_has(s, dev, ino))
		return 0;
	if (2 * (s->n + 1) > s->cap) {
		struct idset bigger = {.cap = s->cap ? 2 * s->cap : 64};

		bigger.slot = calloc(bigger.cap, sizeof(*bigger.slot));
		if (!bigger.slot)
			return -ENOMEM;
		for (size_t i = 0; i < s->cap; i++)
			if (s->slot[i].ino)
				(void)idset_add(&bigger, s->slot[i].dev, s->slot[i].ino);
		free(s->slot);
		*s = bigger;
	}
	size_t i = idset_hash(s, dev, ino);
	while (s->slot[i].ino)
		i = (i + 1) & (s->cap - 1);
	s->slot[i].dev = dev;
	s->slot[i].ino = ino;
	s->n++;
	return 0;
}

struct tree {
	struct frame *f;
	size_t n, cap;
	size_t open;
	struct idset failed; /* directories left behind; never entered again */
	unsigned long names;  /* names looked at so far, against MAX_TREE_NAMES */
	bool n_unbounded;     /* the failed set could not grow: stop at once */
	uint64_t mnt_id;
	int base_fd; /* the parent of the tree's top */
	const char *prefix;
	struct sl_error *reterr;
	int error; /* first failure; the walk goes on with the rest */
};

/* Writes the root-relative path of the current frame plus name into the
 * reason: only names the stage (or its runtime) created, never contents. */
static int tree_fail(struct tree *t, int error, const char *name, const char *why)
{
	char path[STAGE_PATH_MAX + 1];
	size_t len, room;

	if (t->error)
		return error;
	t->error = error;
	len = (size_t)snprintf(path, sizeof(path), "%s", t->prefix);
	for (size_t i = 0; i < t->n && len < sizeof(path); i++)
		len += (size_t)snprintf(path + len, sizeof(path) - len, "/%s", t->f[i].name);
	if (name && len < sizeof(path))
		snprintf(path + len, sizeof(path) - len, "/%s", name);
	len = strlen(path);
	if (!why)
		why = strerror(-error);
	/* The deepest part names what is in the way: a path too long for the
	 * reason keeps its end. */
	room = UNDO_REASON_MAX > strlen(why) + 8 ? UNDO_REASON_MAX - strlen(why) - 8 : 0;
	if (len > room)
		return fail_reason(t->reterr, error, "...%s: %s", path + len - room, why);
	return fail_reason(t->reterr, error, "%s: %s", path, why);
}

/* Adds owner rwx to a directory the caller owns, through its fd's /proc
 * magic link, so that it works on O_PATH fds too and no name is resolved
 * twice. Only after EACCES, only for directories, only when we own them:
 * never a file's mode, never someone else's directory. */
static int grant_self(int fd)
{
	char proc[64];
	struct stat st;

	if (fstat(fd, &st) < 0)
		return negerrno();
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
		return -EACCES;
	if ((st.st_mode & S_IRWXU) == S_IRWXU)
		return -EACCES; /* Not a matter of its mode. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return chmod(proc, (st.st_mode & 07777) | S_IRWXU) < 0 ? negerrno() : 0;
}

/* Unlinks name in dfd (flags as for unlinkat). A name that is already gone
 * counts as removed. After EACCES, a parent narrowed to 0500 or 0000 is
 * widened (only if it is our own directory, see grant_self) and the unlink
 * tried once more. Returns 0 or the unlink's negative errno. */
static int unlinkat_harder(int dfd, const char *name, int flags)
{
	int r;

	if (unlinkat(dfd, name, flags) == 0 || errno == ENOENT)
		return 0;
	r = negerrno();
	if (r != -EACCES || grant_self(dfd) < 0)
		return r;
	if (unlinkat(dfd, name, flags) == 0 || errno == ENOENT)
		return 0;
	return negerrno();
}

/*
 * The one case where a device number that changed is forgiven: no birth
 * time to compare (FUSE, whose daemon came back on the same files with a
 * new device number), the same inode, and the stage's marker inside, naming
 * this stage of this store.
 */
static bool same_by_marker(int path_fd, const struct store_record *rec, const struct store_identity *store,
			   const struct fileid *id)
{
	struct marker m;

	if (!store || id->ino != rec->ino || (rec->btime != 0 && id->btime != 0))
		return false;
	return marker_read(path_fd, &m) == 0 && marker_names(&m, rec->id, store);
}

/*
 * Opens name in dfd as a directory to read: never following a symlink,
 * never blocking on a FIFO (O_DIRECTORY fails first), and never a mount
 * root or a directory on another mount than *mnt_id (NULL: dfd's own).
 * With rec, it must also be the stage's top directory: its identity goes
 * to *ret_id and must match the record's, when the record holds one.
 * Returns the fd; -ENOTDIR when name is not a directory (it can then be
 * unlinked), -EXDEV for a mount, -ESTALE for another directory.
 */
static int open_verified_dir(int dfd, const char *name, const uint64_t *mnt_id, const struct store_record *rec,
			     const struct store_identity *store, struct fileid *ret_id)
{
	_cleanup_close_ int path_fd = -1;
	uint64_t dfd_mnt = 0, mnt;
	bool mount_root;
	int fd, r;

	/* O_PATH first, then the mount and identity checks, and only then an
	 * open for reading: nothing is opened for real (a FUSE open could
	 * block) or widened before it is known to be ours. */
	path_fd = openat(dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (path_fd < 0)
		return errno == ELOOP || errno == ENOTDIR ? -ENOTDIR : negerrno();
	r = mnt_id ? 0 : fd_mount_id(dfd, &dfd_mnt, &mount_root);
	if (r == 0)
		r = fd_mount_id(path_fd, &mnt, &mount_root);
	if (r < 0)
		return r;
	if (mount_root || mnt != (mnt_id ? *mnt_id : dfd_mnt))
		return -EXDEV;
	if (rec) {
		r = fd_fileid(path_fd, ret_id);
		if (r < 0)
			return r;
		if (rec->have_inode && !fileid_matches(rec->dev, rec->ino, rec->btime, ret_id) &&
		    !same_by_marker(path_fd, rec, store, ret_id))
			return -ESTALE;
	}
	fd = openat(path_fd, ".", O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno == EACCES && grant_self(path_fd) == 0)
		fd = openat(path_fd, ".", O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
	return fd < 0 ? negerrno() : fd;
}

/* Opens name in dfd as a directory to descend into, on the tree's mount
 * (see open_verified_dir), and stats it. */
static int open_child(struct tree *t, int dfd, const char *name, struct stat *ret_st)
{
	int fd = open_verified_dir(dfd, name, &t->mnt_id, NULL, NULL, NULL);

	if (fd >= 0 && fstat(fd, ret_st) < 0) {
		int r = negerrno();

		close(fd);
		return r;
	}
	return fd;
}

static int push(struct tree *t, int fd, const struct stat *st, const char *name)
{
	struct frame *f;

	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		f = realloc(t->f, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		t->f = f;
		t->cap = cap;
	}
	/* Bound the open fds: close the oldest open ancestor. It is reached
	 * again through ".." and its identity checked when we come back. */
	if (t->open == MAX_OPEN_DIRS) {
		struct frame *old = &t->f[t->n - MAX_OPEN_DIRS];
		closedir(old->d);
		old->d = NULL;
		t->open--;
	}
	f = &t->f[t->n];
	memset(f, 0, sizeof(*f));
	f->name = strdup(name);
	f->d = f->name ? fdopendir(fd) : NULL;
	if (!f->d) {
		free(f->name);
		close(fd);
		return -ENOMEM;
	}
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	t->n++;
	t->open++;
	return 0;
}

/* Reopens the closed parent of frame f through f's "..", checking that it
 * is the same directory. */
static int reopen_parent(struct tree *t, struct frame *f, struct frame *parent)
{
	struct stat st;
	int fd = openat(dirfd(f->d), "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == parent->dev && st.st_ino == parent->ino &&
	    (parent->d = fdopendir(fd)) != NULL) {
		t->open++;
		return 0;
	}
	if (fd >= 0)
		close(fd);
	return tree_fail(t, -ESTALE, NULL, "a directory was moved during removal");
}

/* Removes frame f's directory, just emptied, from pfd if it is still the
 * one we emptied. Returns 1 when it filled up again and gets another pass. */
static int rmdir_frame(struct tree *t, struct frame *f, int pfd)
{
	struct stat st;
	int r;

	/* The identity check before rmdir: a directory renamed away and
	 * replaced by another during the walk is not ours to remove. rmdir
	 * never removes a non-empty directory, so the window between this
	 * check and the rmdir cannot cost data. */
	if (fstatat(pfd, f->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			tree_fail(t, negerrno(), f->name, NULL);
		return 0;
	}
	if (st.st_dev != f->dev || st.st_ino != f->ino) {
		tree_fail(t, -ESTALE, f->name, "replaced during removal; left alone");
		return 0;
	}
	r = fault_step();
	if (r == 0)
		r = unlinkat_harder(pfd, f->name, AT_REMOVEDIR);
	if (r == -ENOTEMPTY && f->rescans < MAX_RESCANS) {
		rewinddir(f->d);
		f->rescans++;
		return 1;
	}
	if (r < 0)
		tree_fail(t, r, NULL, r == -EBUSY ? "a mount is in the way" : NULL);
	return 0;
}

/*
 * Finishes the top frame once a pass over it found no more names: reopens
 * the parent through ".." if it was closed, then removes the frame's
 * directory (see rmdir_frame). A directory that filled up again meanwhile
 * is scanned again, at most MAX_RESCANS times. Returns 1 when the frame
 * stays for another pass.
 */
static int pop(struct tree *t)
{
	struct frame *f = &t->f[t->n - 1], *parent = t->n > 1 ? &t->f[t->n - 2] : NULL;
	int r = 0;

	/* A frame without a DIR could not be reopened; its failure is
	 * recorded. */
	if (f->d && parent && !parent->d)
		r = reopen_parent(t, f, parent);
	/* After a failure nothing is removed: its subtree holds what we could
	 * not remove. */
	if (f->d && r == 0 && !t->error && rmdir_frame(t, f, parent ? dirfd(parent->d) : t->base_fd) > 0)
		return 1;

	/* Whatever stays of this directory stays: a later pass over its
	 * parent skips it. (After the first failure no directory is removed,
	 * so each one is entered at most once more than it is rescanned.) */
	if (t->error && idset_add(&t->failed, f->dev, f->ino) < 0)
		t->n_unbounded = true;
	if (f->d) {
		closedir(f->d);
		t->open--;
	}
	free(f->name);
	t->n--;
	return 0;
}

/* Unlinks a name found in a directory being emptied. Returns 1, with no
 * failure recorded, when it turns out to be a directory. */
static int unlink_name(struct tree *t, int fd, const char *name)
{
	int r = fault_step();

	if (r < 0)
		return tree_fail(t, r, name, NULL);
	r = unlinkat_harder(fd, name, 0);
	if (r == -EISDIR)
		return 1;
	return r < 0 ? tree_fail(t, r, name, r == -EBUSY ? "a mount is in the way" : NULL) : 0;
}

/* Removes one name found in a directory being emptied. Returns 1 when it
 * was a directory, now pushed to be emptied in turn. */
static int remove_name(struct tree *t, int fd, const struct dirent *de)
{
	struct stat st;
	int r, cfd;

	if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) {
		r = unlink_name(t, fd, de->d_name);
		if (r <= 0)
			return r;
	}
	cfd = open_child(t, fd, de->d_name, &st);
	if (cfd == -ENOTDIR) {
		/* Not a directory (or a symlink to one): unlink the name. */
		r = unlink_name(t, fd, de->d_name);
		return r > 0 ? tree_fail(t, -EISDIR, de->d_name, NULL) : r;
	}
	if (cfd == -ENOENT)
		return 0;
	if (cfd == -EXDEV)
		return tree_fail(t, -EXDEV, de->d_name, "a mount is in the way; not entered");
	if (cfd < 0)
		return tree_fail(t, cfd, de->d_name, NULL);
	if (idset_has(&t->failed, st.st_dev, st.st_ino)) {
		close(cfd);
		return 0; /* Known to hold what cannot go; the reason is set. */
	}
	r = push(t, cfd, &st, de->d_name);
	return r < 0 ? tree_fail(t, r, de->d_name, NULL) : 1;
}

/* Opens and pushes the tree's top, name in t->base_fd, checking its
 * identity when have_id. Returns 1 when pushed, 0 when there is nothing
 * to remove, or the failure (recorded). */
static int tree_start(struct tree *t, const char *name, bool have_id, uint64_t dev, uint64_t ino)
{
	struct stat st;
	bool mount_root;
	int fd, r;

	r = fd_mount_id(t->base_fd, &t->mnt_id, &mount_root);
	if (r < 0)
		return tree_fail(t, r, NULL, NULL);
	fd = open_child(t, t->base_fd, name, &st);
	if (fd == -ENOENT)
		return 0;
	if (fd == -ENOTDIR)
		return tree_fail(t, -ESTALE, name, "not a directory (replaced?); left alone");
	if (fd == -EXDEV)
		return tree_fail(t, -EXDEV, name, "a mount is in the way; not entered");
	if (fd < 0)
		return tree_fail(t, fd, name, NULL);
	if (have_id && (st.st_dev != dev || st.st_ino != ino)) {
		close(fd);
		return tree_fail(t, -ESTALE, name, "not the directory the stage created; left alone");
	}
	r = push(t, fd, &st, name);
	return r < 0 ? tree_fail(t, r, name, NULL) : 1;
}

/* Empties and removes the pushed frames, deepest first. An explicit heap
 * stack instead of recursion: a 10,000-level tree costs heap, not stack,
 * and MAX_OPEN_DIRS fds at most. */
static void tree_walk(struct tree *t)
{
	while (t->n > 0) {
		struct frame *f = &t->f[t->n - 1];
		struct dirent *de;

		errno = 0;
		de = f->d ? readdir(f->d) : NULL;
		if (!de) {
			if (errno)
				tree_fail(t, negerrno(), NULL, NULL);
			pop(t);
			continue;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (++t->names > MAX_TREE_NAMES || t->n_unbounded) {
			tree_fail(t, -ELOOP, de->d_name, "more names than a removal looks at; something keeps adding them");
			break;
		}
		remove_name(t, dirfd(f->d), de);
	}
}

/* Closes what is still open after a walk that stopped early. */
static void tree_free(struct tree *t)
{
	while (t->n > 0) {
		struct frame *f = &t->f[--t->n];
		if (f->d)
			closedir(f->d);
		free(f->name);
	}
	free(t->f);
	free(t->failed.slot);
}

int undo_remove_tree(int parent_fd, const char *prefix, const char *name, bool have_id, uint64_t dev, uint64_t ino,
		     struct sl_error *reterr)
{
	_cleanup_(tree_free) struct tree t = {.base_fd = parent_fd, .prefix = prefix, .reterr = reterr};

	/* A name, never a path: "." or ".." would reach the parent itself or
	 * above it. Callers pass logged or listed names; this is the backstop. */
	if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return fail_reason(reterr, -EBADMSG, "%s: '%s' is not a name; refused", prefix, name);
	if (tree_start(&t, name, have_id, dev, ino) > 0)
		tree_walk(&t);
	return t.error;
}

/* ---- The stage-level undo: entries newest first, then the top. ---- */


/* Checks the record itself: a tampered id, label, top directory name or
 * root must not steer a removal anywhere. */
const char *record_check(const struct store_record *rec)
{
	char top[sizeof(rec->topdir)];

	if (!id_valid(rec->id))
		return "bad stage id";
	if (!label_valid(rec->label))
		return "bad label";
	snprintf(top, sizeof(top), "%s-%s", rec->label, rec->id);
	if (strcmp(top, rec->topdir) != 0)
		return "top directory name does not match label and id";
	if (rec->root[0] != '/' || path_check(rec->root + 1, strlen(rec->root + 1)) != NULL)
		return "staging root is not a clean absolute path";
	return NULL;
}

/* Checks that an entry lies inside the stage's own top directory. */
static const char *entry_check(const struct store_record *rec, const struct store_entry *e)
{
	size_t tl = strlen(rec->topdir);
	const char *why = path_check(e->path, e->path_len);

	if (why)
		return why;
	if (e->path_len < tl || memcmp(e->path, rec->topdir, tl) != 0 ||
	    (e->path_len > tl && e->path[tl] != '/'))
		return "outside the stage's top directory";
	if ((e->seq == 0) != (e->path_len == tl))
		return "top directory entry out of place";
	if (e->kind != STORE_KIND_DIR && e->kind != STORE_KIND_FILE && e->kind != STORE_KIND_SYMLINK)
		return "unknown kind";
	return NULL;
}

/* A cached parent directory: consecutive entries (newest first) mostly
 * share one, so resolving it once per run keeps removal near rm -rf. */
struct parent {
	int fd;
	char path[STAGE_PATH_MAX + 1];
	size_t len;
	int error; /* why it could not be opened, if fd < 0 */
	dev_t dev; /* its identity, while fd >= 0 */
	ino_t ino;
	/* The parent before this one: newest first, a directory's own entry
	 * comes right after the entries inside it, so this is usually that
	 * directory, and its identity lets us tell it from a replacement. */
	char prev_path[STAGE_PATH_MAX + 1];
	size_t prev_len;
	dev_t prev_dev;
	ino_t prev_ino;
};

static void parent_close(struct parent *p)
{
	if (p->fd >= 0 && p->len != (size_t)-1) {
		memcpy(p->prev_path, p->path, p->len);
		p->prev_len = p->len;
		p->prev_dev = p->dev;
		p->prev_ino = p->ino;
	} else {
		p->prev_len = (size_t)-1;
	}
	p->fd = safe_close(p->fd);
	p->len = (size_t)-1;
}

/* Opens the parent path/plen of the next entries beneath the verified top
 * directory, in place of the one cached; a failure is kept in p->error. */
static void parent_open(struct parent *p, int top_fd, const char *path, size_t plen)
{
	struct stat st;
	int r;

	parent_close(p);
	memcpy(p->path, path, plen);
	p->path[plen] = '\0';
	p->len = plen;
	r = open_beneath(top_fd, path, plen, O_PATH);
	p->fd = r < 0 ? -1 : r;
	p->error = r < 0 ? r : 0;
	if (p->fd < 0)
		return;
	if (fstat(p->fd, &st) < 0) {
		p->error = negerrno();
		p->fd = safe_close(p->fd);
		return;
	}
	p->dev = st.st_dev;
	p->ino = st.st_ino;
}

/* What an entry whose parent could not be opened comes to. */
static int parent_missing(const struct parent *p, const struct store_entry *e, const char *prefix,
			  struct sl_error *reterr)
{
	/* A missing parent means a missing entry; a symlink on the way means
	 * the logged path names nothing inside the stage (the symlink itself
	 * is an older entry, unlinked in its turn). */
	if (p->error == -ENOENT || p->error == -ELOOP)
		return 0;
	/* A directory on the way narrowed to 0000: the final tree walk, which
	 * widens what we own, reaches the entry from above. */
	if (p->error == -EACCES)
		return 0;
	if (p->error == -EXDEV)
		return fail_reason(reterr, -EXDEV, "%s: a mount is in the way (entry %lld); not entered", prefix,
				   (long long)e->seq);
	return fail_reason(reterr, p->error, "%s: %s", prefix, strerror(-p->error));
}

static int entry_fail(const struct store_entry *e, const char *prefix, const char *name, int r, struct sl_error *reterr)
{
	if (r == -EBUSY)
		return fail_reason(reterr, -EXDEV, "%s/%s: a mount is in the way (entry %lld)", prefix, name,
				   (long long)e->seq);
	return fail_reason(reterr, r, "%s/%s: %s", prefix, name, strerror(-r));
}

/* Removes entry e, name in the open parent p. known: e is the directory
 * just emptied through an fd, and p->prev_dev/prev_ino its identity. */
static int remove_logged(const struct parent *p, const struct store_entry *e, const char *prefix, const char *name,
			 bool known, struct sl_error *reterr)
{
	int r = fault_step();

	if (r < 0)
		return entry_fail(e, prefix, name, r, reterr);
	r = unlinkat_harder(p->fd, name, e->kind == STORE_KIND_DIR ? AT_REMOVEDIR : 0);
	if (r == 0)
		return 0;
	if (r == -ENOTDIR && e->kind == STORE_KIND_DIR) {
		/* Logged as a directory, now something else: unlink never
		 * follows it. */
		if (unlinkat(p->fd, name, 0) == 0 || errno == ENOENT)
			return 0;
		r = negerrno();
	} else if (r == -ENOTEMPTY || r == -EEXIST || r == -EISDIR || r == -EACCES || r == -EPERM) {
		/* Holds names the log does not know (a runtime made them), a
		 * file was replaced by a directory, or its own permissions
		 * were narrowed: the safe tree removal handles all three.
		 * Everything below the verified top directory is the stage's
		 * to remove, whoever made it. O_PATH fds cannot be read, so
		 * the parent is opened for real. */
		_cleanup_close_ int dfd = openat(p->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return entry_fail(e, prefix, name, negerrno(), reterr);
		return undo_remove_tree(dfd, prefix, name, known, known ? p->prev_dev : 0, known ? p->prev_ino : 0,
					reterr);
	}
	return entry_fail(e, prefix, name, r, reterr);
}

/* Removes one logged entry beneath the stage's verified top directory.
 * path/len is the entry's path below the top directory. */
static int undo_entry(int top_fd, const char *topdir, const struct store_entry *e, const char *path, size_t len,
		      struct parent *p, struct sl_error *reterr)
{
	const char *slash = memrchr(path, '/', len);
	size_t plen = slash ? (size_t)(slash - path) : 0;
	const char *base = slash ? slash + 1 : path;
	char name[STAGE_NAME_MAX + 1];
	char prefix[STAGE_PATH_MAX + LABEL_MAX + STORE_ID_LEN + 4];
	bool known;

	memcpy(name, base, len - (size_t)(base - path));
	name[len - (size_t)(base - path)] = '\0';
	if (p->len != plen || memcmp(p->path, path, plen) != 0)
		parent_open(p, top_fd, path, plen);
	snprintf(prefix, sizeof(prefix), "%s%s%s", topdir, plen ? "/" : "", p->path);
	if (p->fd < 0)
		return parent_missing(p, e, prefix, reterr);
	/* A directory we just emptied through an fd must still be that
	 * directory: one renamed away and replaced meanwhile is not ours. */
	known = e->kind == STORE_KIND_DIR && p->prev_len == len && memcmp(p->prev_path, path, len) == 0;
	if (known) {
		struct stat st;
		if (fstatat(p->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    (st.st_dev != p->prev_dev || st.st_ino != p->prev_ino))
			return fail_reason(reterr, -ESTALE, "%s/%s: replaced during removal; left alone", prefix,
					   name);
	}
	return remove_logged(p, e, prefix, name, known, reterr);
}

/* Opens the stage's top directory beneath the root and checks that it is
 * the one the stage created: a real directory (not a symlink), on the
 * root's mount and not a mount itself, with the recorded inode and birth
 * time (or device) when they were recorded. -ENOENT when it is gone. */
static int open_top(int root_fd, const struct store_record *rec, const struct store_identity *store, int *ret_fd,
		    struct fileid *ret_id, struct sl_error *reterr)
{
	int fd = open_verified_dir(root_fd, rec->topdir, NULL, rec, store, ret_id);

	if (fd >= 0) {
		*ret_fd = fd;
		return 0;
	}
	if (fd == -ENOENT)
		return fd;
	if (fd == -ENOTDIR)
		return fail_reason(reterr, -ESTALE, "%s: replaced by something that is not a directory; left alone",
				   rec->topdir);
	if (fd == -EXDEV)
		return fail_reason(reterr, -EXDEV, "%s: a mount is in the way; not entered", rec->topdir);
	if (fd == -ESTALE)
		return fail_reason(reterr, -ESTALE, "%s: not the directory the stage created; left alone", rec->topdir);
	return fail_reason(reterr, fd, "%s: %s", rec->topdir, strerror(-fd));
}

/*
 * Opens the staging root through a chain nobody else can write and checks
 * that it is the directory the stage began in (docs/design.md, "Identity").
 * Anything else proves nothing about the stage: a root that is missing, was
 * replaced, or lies where another user could have moved it leaves the
 * stage failed, except where the boot rule proves it gone (-ENOENT then,
 * with *ret_fd the root that is there now, or -1).
 */
static int open_checked_root(const struct store_record *rec, int *ret_fd, struct sl_error *reterr)
{
	_cleanup_close_ int fd = -1;
	struct fileid id;
	size_t bad = 0;
	int r;

	r = open_root_chain(rec->root, &fd, &bad);
	if (r == 0) {
		r = fd_fileid(fd, &id);
		if (r < 0)
			return fail_reason(reterr, r, "staging root %s: %s", rec->root, strerror(-r));
		if (root_matches(rec, &id)) {
			*ret_fd = TAKE_FD(fd);
			return 0;
		}
		r = -ESTALE;
	}
	if ((r == -ENOENT || r == -ESTALE) && stage_gone_with_boot(rec)) {
		*ret_fd = r == -ESTALE ? TAKE_FD(fd) : -1;
		return -ENOENT;
	}
	switch (r) {
	case -ENOENT:
		return fail_reason(reterr, -ESTALE, "staging root %s: missing; cannot prove the stage is gone",
				   rec->root);
	case -ESTALE:
		return fail_reason(reterr, -ESTALE, "staging root %s: now leads to another directory; left alone",
				   rec->root);
	case -ELOOP:
	case -ENOTDIR:
		return fail_reason(reterr, -ESTALE, "staging root %s: no longer a directory; left alone", rec->root);
	case -EPERM:
		return fail_reason(reterr, -EPERM,
				   "staging root %s: %.*s is owned or writable by another user; left alone", rec->root,
				   (int)bad, rec->root);
	default:
		return fail_reason(reterr, r, "staging root %s: %s", rec->root, strerror(-r));
	}
}

/* True when a publish recorded a destination and the stage's top directory
 * is there: the rename reached the disk but its record did not. */
static bool found_at_dest(const struct store_record *rec)
{
	_cleanup_free_ char *copy = NULL;
	_cleanup_close_ int pfd = -1, fd = -1;
	struct fileid id;
	char *slash;

	if (!rec->dest[0] || !rec->have_inode || !(copy = strdup(rec->dest)))
		return false;
	slash = strrchr(copy, '/');
	if (!slash || !slash[1])
		return false;
	*slash = '\0';
	pfd = open(slash == copy ? "/" : copy, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0)
		return false;
	fd = openat(pfd, slash + 1, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd >= 0 && fd_fileid(fd, &id) == 0 && fileid_matches(rec->dev, rec->ino, rec->btime, &id);
}

/* The last step of an undo: the state moved on, one commit whatever the
 * size of the stage. Its entries are not rewritten: a finished state
 * (released, recovered, aborted) says they are gone (docs/design.md,
 * "Entries"). A stage that another process finished meanwhile (a recovery
 * that found the directory gone) is a success too. */
static int finish(struct sl_store *store, const struct store_record *rec, unsigned from_mask, enum sl_state done,
		  struct sl_error *reterr)
{
	struct store_record now;
	int r;

	r = store_stage_transition(store, rec->rowid, from_mask, done, NULL, false, NULL);
	/* Once the top directory is gone a recovery may take the stage
	 * (nothing of it is left on disk) and finish its record: the removal
	 * succeeded all the same. */
	if (r == -ESTALE && store_stage_get_rowid(store, rec->rowid, &now, NULL) == 0 &&
	    (!sl_store_state_in_flight(now.state) || now.state == SL_STATE_RECOVERING))
		return 0;
	if (r < 0)
		return fail_reason(reterr, r, "removed, but the record could not be updated: %s", strerror(-r));
	return 0;
}

/*
 * A stage whose top directory was never recorded may be between its
 * durable record and its mkdirat: a stager that is still running creates
 * it next. Recovery takes the name first with a directory of its own, so
 * that the stager's mkdirat fails (a path is never adopted), ends the
 * record, and only then removes its placeholder. A stager that makes the
 * directory after that finds its record ended when it confirms it, and
 * removes the directory itself before anything goes into it.
 */
static int finish_missing_top(struct sl_store *store, const struct store_record *rec, int root_fd, unsigned from_mask,
			      enum sl_state done, struct sl_error *reterr)
{
	bool placeholder;
	int r;

	if (found_at_dest(rec)) {
		/* Moved by a publish whose record did not reach the disk: it
		 * belongs to its destination, never to a removal. */
		r = store_stage_transition(store, rec->rowid, from_mask, SL_STATE_PUBLISHED, NULL, true, NULL);
		return r < 0 ? fail_reason(reterr, r, "published, but the record could not be updated: %s",
					   strerror(-r))
			     : 0;
	}
	placeholder = root_fd >= 0 && !rec->have_inode && mkdirat(root_fd, rec->topdir, 0700) == 0;
	if (root_fd >= 0 && !rec->have_inode && !placeholder && errno == EEXIST)
		return -EAGAIN; /* The stager made it just now: undo it. */
	r = finish(store, rec, from_mask, done, reterr);
	if (placeholder)
		(void)unlinkat(root_fd, rec->topdir, AT_REMOVEDIR);
	return r;
}

/* Pass 1: every entry is checked before anything is removed, so a tampered
 * record removes nothing at all. Entries are numbered 0, 1, 2, ... with no
 * gap: anything else was not written by stagelog. Sets *ret_one_page when
 * the first page holds them all, and then returns how many it holds. */
static int validate_entries(struct sl_store *store, const struct store_record *rec, struct store_entry_page *page,
			    bool *ret_one_page, struct sl_error *reterr)
{
	int64_t seq = INT64_MIN, expect = 0;
	const char *why;

	for (int pages = 0;; pages++) {
		int n = store_entries_page(store, rec->rowid, false, seq, page, NULL);

		if (n < 0)
			return fail_reason(reterr, n, "cannot read entries: %s", strerror(-n));
		if (n == 0 && pages == 0)
			return fail_reason(reterr, -EBADMSG, "record fails validation: no entries");
		for (int i = 0; i < n; i++) {
			why = entry_check(rec, &page->e[i]);
			if (!why && page->e[i].seq != expect++)
				why = "entries not numbered 0, 1, 2, ...";
			if (why)
				return fail_reason(reterr, -EBADMSG, "record fails validation: %s (entry %lld)", why,
						   (long long)page->e[i].seq);
		}
		if (!page->more) {
			/* A stage that fits one page (most do) is removed from
			 * this very page: no second read. */
			*ret_one_page = pages == 0;
			return n;
		}
		seq = page->e[n - 1].seq;
	}
}

/*
 * Pass 2: the logged entries newest first, so a directory comes after
 * everything the log put in it; entry 0, the top directory, is left for the
 * tree removal. The store is only read, never written: replay is
 * idempotent (a path already gone is skipped), so a removal cut short is
 * simply replayed from the top, and a store that cannot be read stops
 * nothing, since the tree removal that follows reaches every entry from
 * above. A failing entry does not stop the others; the first failure is
 * returned with its reason.
 */
static int remove_entries(struct sl_store *store, const struct store_record *rec, int top_fd, struct store_entry_page *page,
			  bool one_page, int n, struct undo_progress *progress, struct sl_error *reterr)
{
	_cleanup_(parent_close) struct parent parent = {.fd = -1, .len = (size_t)-1, .prev_len = (size_t)-1};
	size_t tl = strlen(rec->topdir);
	struct sl_error scratch = { 0 };
	int64_t seq = INT64_MAX;
	int first = 0, r;

	for (;;) {
		int64_t hi, lo;

		if (!one_page) {
			n = store_entries_page(store, rec->rowid, true, seq, page, NULL);
			if (n <= 0)
				break;
		}
		/* Ascending pages (the one_page case) are walked backwards. */
		hi = lo = one_page ? page->e[n - 1].seq : page->e[0].seq;
		/* Entries are numbered from 1: the first page's highest is
		 * how many were logged. */
		if (progress && progress->p.total == 0 && hi > 0)
			progress->p.total = (uint64_t)hi;
		for (int k = 0; k < n; k++) {
			const struct store_entry *e = &page->e[one_page ? n - 1 - k : k];
			const char *why;

			if (e->seq <= 0)
				break;
			/* Checked again where it is used: a second read of the
			 * store may not return what the first one checked. */
			why = entry_check(rec, e);
			if (why)
				return fail_reason(reterr, -EBADMSG, "record fails validation: %s (entry %lld)", why,
						   (long long)e->seq);
			lo = e->seq;
			if (progress) {
				progress->p.done++;
				progress->fn(&progress->p, progress->userdata);
			}
			/* Marked by a stagelog before 0.2, which marked
			 * entries page by page as it removed them. */
			if (e->state == STORE_ENTRY_REMOVED)
				continue;
			r = undo_entry(top_fd, rec->topdir, e, e->path + tl + 1, e->path_len - tl - 1, &parent,
				       first ? &scratch : reterr);
			if (r < 0 && !first)
				first = r;
			/* Something swapped in under a logged name: someone
			 * is at work in the tree, and nothing more is touched. */
			if (r == -ESTALE)
				return r;
		}
		if (one_page || !page->more || lo <= 1)
			break;
		seq = lo;
	}
	return first;
}

/* Moves a stage whose removal could not finish to failed, with the reason:
 * the next recovery retries it. */
static int fail_stage(struct sl_store *store, const struct store_record *rec, unsigned from_mask, int r,
		      struct sl_error *reason)
{
	if (store_stage_transition(store, rec->rowid, from_mask, SL_STATE_FAILED, reason->msg, false, NULL) == 0)
		reason->flags |= SL_ERROR_STAGE_FAILED;
	return r;
}

/*
 * Steps 4 and 5 of docs/design.md's undo: the logged entries, then the top
 * directory's tree walk (only if it is still the directory verified as
 * top_id), then the root synced. top_fd is closed here. Returns the first
 * failure, with its reason.
 */
static int remove_stage(struct sl_store *store, const struct store_record *rec, int root_fd, int top_fd,
			const struct fileid *top_id, struct store_entry_page *page, bool one_page, int n,
			struct undo_progress *progress, struct sl_error *reterr)
{
	struct sl_error scratch = { 0 };
	int r, first;

	first = remove_entries(store, rec, top_fd, page, one_page, n, progress, reterr);
	closep(&top_fd);

	/* The top directory, and whatever a runtime left in it, only if it is
	 * still the directory verified above. */
	if (first != -ESTALE) {
		r = undo_remove_tree(root_fd, ".", rec->topdir, true, top_id->dev, top_id->ino,
				     first ? &scratch : reterr);
		if (!first)
			first = r;
	}
	if (first < 0)
		return first;
	/* Make the removal durable before the record says it happened. */
	r = fault_step();
	if (r == 0 && fsync(root_fd) < 0 && errno != EINVAL && errno != EROFS)
		r = negerrno();
	if (r < 0)
		return fail_reason(reterr, r, "cannot sync staging root %s: %s", rec->root, strerror(-r));
	return 0;
}

int undo_stage(struct sl_store *store, const struct store_record *rec, unsigned from_mask, enum sl_state done,
	       struct undo_progress *progress, struct sl_error *reterr)
{
	_cleanup_free_ struct store_entry_page *page = NULL;
	_cleanup_close_ int root_fd = -1, top_fd = -1;
	struct fileid top_id;
	const char *why;
	bool one_page = false;
	int r, n;

	sl_err_clear(reterr);
	why = record_check(rec);
	if (why)
		return fail_stage(store, rec, from_mask,
				  fail_reason(reterr, -EBADMSG, "record fails validation: %s", why), reterr);
	page = malloc(sizeof(*page));
	if (!page)
		return fail_reason(reterr, -ENOMEM, "%s", strerror(ENOMEM));
	n = validate_entries(store, rec, page, &one_page, reterr);
	if (n == -EBADMSG)
		return fail_stage(store, rec, from_mask, n, reterr);
	if (n < 0)
		one_page = false; /* Unreadable log: the tree removal alone. */

	r = open_checked_root(rec, &root_fd, reterr);
	if (r == -ENOENT && root_fd >= 0 && faccessat(root_fd, rec->topdir, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		/* Gone with the old boot, yet something has its name now: not
		 * the stage's, and not ours to remove. */
		r = fail_reason(reterr, -ESTALE, "%s: not the directory the stage created; left alone", rec->topdir);
	else if (r == -ENOENT)
		return finish(store, rec, from_mask, done, reterr);
	if (r < 0)
		return fail_stage(store, rec, from_mask, r, reterr);

	/* The top directory is opened and its identity checked BEFORE any
	 * entry is touched, and every entry is resolved beneath that verified
	 * fd: a directory swapped in under the stage's name (or a record
	 * pointed at another stage's name) loses nothing. */
	r = open_top(root_fd, rec, store_identity(store), &top_fd, &top_id, reterr);
	if (r == -ENOENT) {
		r = finish_missing_top(store, rec, root_fd, from_mask, done, reterr);
		if (r != -EAGAIN)
			return r;
		r = open_top(root_fd, rec, store_identity(store), &top_fd, &top_id, reterr);
		if (r == -ENOENT)
			return finish(store, rec, from_mask, done, reterr);
	}
	if (r < 0)
		return fail_stage(store, rec, from_mask, r, reterr);

	/* From here on the removal runs to its end whatever the store does. */
	r = remove_stage(store, rec, root_fd, TAKE_FD(top_fd), &top_id, page, one_page, n, progress, reterr);
	if (r < 0)
		return fail_stage(store, rec, from_mask, r, reterr);
	return finish(store, rec, from_mask, done, reterr);
}
