/* SPDX-License-Identifier: MIT */
/*
 * rm-tree.c: removing a directory and everything beneath it, from the fd of
 * its parent (like systemd's rm-rf.c, with stagelog's rules). The undo
 * (undo.c, undo-entries.c), a begin that lost its stage to a recovery
 * (begin.c) and the orphan scan (recover/) come here; nothing else in
 * stagelog walks a tree to remove it.
 *
 * The rules, each enforced where the comment stands below:
 *  - names are resolved from a directory fd, never following a symlink and
 *    never crossing a mount;
 *  - only directories are ever opened, so a FIFO cannot block us and a
 *    device cannot be touched; files, symlinks, FIFOs, sockets and devices
 *    are only unlinked, so a hard link to an outside file loses its name
 *    here and nothing else;
 *  - a directory is removed only while it is the one that was emptied (its
 *    device and inode, as fstat reports them during the walk);
 *  - the walk is bounded: MAX_OPEN_DIRS descriptors, MAX_RESCANS passes
 *    over one directory, MAX_TREE_NAMES names in all.
 */
#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fd-util.h"
#include "rm-tree.h"
/* How often one directory may be scanned again because it still held names
 * after a full pass (something kept creating them). */
#define MAX_RESCANS 16
/* How many names one tree removal looks at before it gives up: far more
 * than any bundle holds, and an end even for a tree that a live process
 * keeps filling. */
#define MAX_TREE_NAMES (64UL * 1024 * 1024)
/* The first sizes of the frame stack and of the stuck set (both double as
 * they fill; the set's stays a power of two for idset_hash()). */
#define FRAMES_FIRST_CAP 64
#define IDSET_FIRST_CAP 64
/* 2^64 divided by the golden ratio: a multiplier that spreads consecutive
 * inode numbers over the whole table (Fibonacci hashing). */
#define IDSET_HASH_MUL 0x9e3779b97f4a7c15ULL
/* What a reason adds around the path and the why: "...", ": " and room to
 * spare. */
#define REASON_FRAME 8

struct frame {
	DIR *d; /* NULL while closed to bound open fds */
	uint64_t dev, ino;
	char *name; /* name in the parent */
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
	} * slot;
	size_t n, cap;
};

static size_t idset_hash(const struct idset *s, uint64_t dev, uint64_t ino)
{
	assert(s->cap > 0 && (s->cap & (s->cap - 1)) == 0);
	return (size_t)((ino * IDSET_HASH_MUL) ^ dev) & (s->cap - 1);
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
		struct idset bigger = { .cap = s->cap ? 2 * s->cap : IDSET_FIRST_CAP };

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
	unsigned long names; /* names looked at so far, against MAX_TREE_NAMES */
	bool n_unbounded;    /* the failed set could not grow: stop at once */
	uint64_t mnt_id;
	int base_fd; /* the parent of the tree's top */
	const char *prefix;
	struct sl_error *reterr;
	int error; /* first failure; the walk goes on with the rest */
};

/* Writes the root-relative path of the current frame plus name into the
 * reason: only names (for the undo, those the stage or its runtime
 * created), never contents. */
static int tree_fail(struct tree *t, int error, const char *name, const char *why)
{
	char path[PATH_MAX];
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
	 * reason keeps its end. Replaced, not kept: the reason is the failure
	 * that decided the removal's outcome. */
	room = RMTREE_REASON_MAX > strlen(why) + REASON_FRAME ? RMTREE_REASON_MAX - strlen(why) - REASON_FRAME : 0;
	if (len > room)
		return sl_err_replace(t->reterr, error, "...%s: %s", path + len - room, why);
	return sl_err_replace(t->reterr, error, "%s: %s", path, why);
}

/* Adds owner rwx to a directory the caller owns, through its fd's /proc
 * magic link, so that it works on O_PATH fds too and no name is resolved
 * twice. Only after EACCES, only for directories, only when we own them:
 * never a file's mode, never someone else's directory. */
static int grant_self(int fd)
{
	char proc[PROC_FD_PATH_SIZE];
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

/* See rm-tree.h; the parent is widened by grant_self(). */
int rmtree_unlinkat(int dfd, const char *name, int flags)
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

/* See rm-tree.h. */
int rmtree_open_dir(int dfd, const char *name, const uint64_t *mnt_id, rmtree_verify_fn *verify, void *userdata)
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
	r = verify ? verify(path_fd, userdata) : 0;
	if (r < 0)
		return r;
	fd = openat(path_fd, ".", O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno == EACCES && grant_self(path_fd) == 0)
		fd = openat(path_fd, ".", O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
	/* cppcheck: fd is opened again only when the first openat() failed (fd < 0). */
	// cppcheck-suppress resourceLeak
	return fd < 0 ? negerrno() : fd;
}

/* Opens name in dfd as a directory to descend into, on the tree's mount
 * (see rmtree_open_dir), and stats it. */
static int open_child(struct tree *t, int dfd, const char *name, struct stat *ret_st)
{
	int fd = rmtree_open_dir(dfd, name, &t->mnt_id, NULL, NULL);

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
		size_t cap = t->cap ? t->cap * 2 : FRAMES_FIRST_CAP;
		f = realloc(t->f, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		t->f = f;
		t->cap = cap;
	}
	/* Bound the open fds: close the oldest open ancestor. It is reached
	 * again through ".." and its identity checked when we come back. */
	assert(t->open <= MAX_OPEN_DIRS && t->open <= t->n);
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
		r = rmtree_unlinkat(pfd, f->name, AT_REMOVEDIR);
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
	r = rmtree_unlinkat(fd, name, 0);
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
			tree_fail(t, -ELOOP, de->d_name,
				  "more names than a removal looks at; something keeps adding them");
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

int rmtree_remove(int parent_fd, const char *prefix, const char *name, bool have_id, uint64_t dev, uint64_t ino,
		  struct sl_error *reterr)
{
	_cleanup_(tree_free) struct tree t = { .base_fd = parent_fd, .prefix = prefix, .reterr = reterr };

	assert(prefix && name && reterr);

	/* A name, never a path: "." or ".." would reach the parent itself or
	 * above it. Callers pass logged or listed names; this is the backstop. */
	if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return sl_err_replace(reterr, -EBADMSG, "%s: '%s' is not a name; refused", prefix, name);
	if (tree_start(&t, name, have_id, dev, ino) > 0)
		tree_walk(&t);
	return t.error;
}
