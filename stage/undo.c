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
 *  - the top directory goes only if its device and inode match the record;
 *  - an entry is marked removed only after its path is gone.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "stage-private.h"

/* At most this many directories are held open while removing a tree; deeper
 * ones are reached again through ".." with an identity check. */
#define MAX_OPEN_DIRS 32
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
	char path[SL_PATH_MAX + 1];
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

/* Opens name in dfd as a directory to descend into: never following a
 * symlink, never blocking on a FIFO (O_DIRECTORY fails first), and never a
 * mount root or another mount. Returns -ENOTDIR when it is not a directory
 * (it can then be unlinked) and -EXDEV for a mount. */
static int open_child(struct tree *t, int dfd, const char *name, struct stat *ret_st)
{
	_cleanup_close_ int path_fd = -1;
	uint64_t mnt;
	bool mount_root;
	int fd, r;

	/* O_PATH first: the mount and type checks come before anything that
	 * could block (a FUSE open) or change a mode (widening on EACCES). */
	path_fd = openat(dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (path_fd < 0)
		return errno == ELOOP || errno == ENOTDIR ? -ENOTDIR : negerrno();
	r = fd_mount_id(path_fd, &mnt, &mount_root);
	if (r < 0)
		return r;
	if (mount_root || mnt != t->mnt_id)
		return -EXDEV;
	fd = openat(path_fd, ".", O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno == EACCES && grant_self(path_fd) == 0)
		fd = openat(path_fd, ".", O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	if (fstat(fd, ret_st) < 0) {
		r = negerrno();
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

/*
 * Finishes the top frame once a pass over it found no more names: reopens
 * the parent through ".." if it was closed (checking it is the same
 * directory), then removes the frame's directory if it is still the one we
 * emptied. A directory that filled up again meanwhile is scanned again, at
 * most MAX_RESCANS times. Returns 1 when the frame stays for another pass.
 */
static int pop(struct tree *t)
{
	struct frame *f = &t->f[t->n - 1], *parent = t->n > 1 ? &t->f[t->n - 2] : NULL;
	struct stat st;
	int pfd, r;

	if (!f->d)
		goto done; /* Could not be reopened; the failure is recorded. */
	if (parent && !parent->d) {
		int fd = openat(dirfd(f->d), "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == parent->dev && st.st_ino == parent->ino &&
		    (parent->d = fdopendir(fd)) != NULL) {
			t->open++;
		} else {
			if (fd >= 0)
				close(fd);
			tree_fail(t, -ESTALE, NULL, "a directory was moved during removal");
			goto done;
		}
	}
	pfd = parent ? dirfd(parent->d) : t->base_fd;
	if (t->error)
		goto done; /* Its subtree holds what we could not remove. */

	/* The identity check before rmdir: a directory renamed away and
	 * replaced by another during the walk is not ours to remove. rmdir
	 * never removes a non-empty directory, so the window between this
	 * check and the rmdir cannot cost data. */
	if (fstatat(pfd, f->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			tree_fail(t, negerrno(), f->name, NULL);
		goto done;
	}
	if (st.st_dev != f->dev || st.st_ino != f->ino) {
		tree_fail(t, -ESTALE, f->name, "replaced during removal; left alone");
		goto done;
	}
	r = sl_fault_step();
	if (r == 0 && unlinkat(pfd, f->name, AT_REMOVEDIR) < 0)
		r = negerrno();
	if (r == -EACCES && grant_self(pfd) == 0)
		r = unlinkat(pfd, f->name, AT_REMOVEDIR) < 0 ? negerrno() : 0;
	if (r == -ENOTEMPTY && f->rescans < MAX_RESCANS) {
		rewinddir(f->d);
		f->rescans++;
		return 1;
	}
	if (r < 0 && r != -ENOENT)
		tree_fail(t, r, NULL, r == -EBUSY ? "a mount is in the way" : NULL);
done:
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

/* Removes one name found in a directory being emptied. */
static int remove_name(struct tree *t, int fd, const struct dirent *de)
{
	struct stat st;
	int r, cfd;

	if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) {
		r = sl_fault_step();
		if (r < 0)
			return tree_fail(t, r, de->d_name, NULL);
		if (unlinkat(fd, de->d_name, 0) == 0 || errno == ENOENT)
			return 0;
		if (errno == EACCES && grant_self(fd) == 0 && unlinkat(fd, de->d_name, 0) == 0)
			return 0;
		if (errno != EISDIR)
			return tree_fail(t, negerrno(), de->d_name, errno == EBUSY ? "a mount is in the way" : NULL);
	}
	cfd = open_child(t, fd, de->d_name, &st);
	if (cfd == -ENOTDIR) {
		/* Not a directory (or a symlink to one): unlink the name. */
		r = sl_fault_step();
		if (r < 0)
			return tree_fail(t, r, de->d_name, NULL);
		if (unlinkat(fd, de->d_name, 0) == 0 || errno == ENOENT)
			return 0;
		if (errno == EACCES && grant_self(fd) == 0 && unlinkat(fd, de->d_name, 0) == 0)
			return 0;
		return tree_fail(t, negerrno(), de->d_name, errno == EBUSY ? "a mount is in the way" : NULL);
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

int undo_remove_tree(int parent_fd, const char *prefix, const char *name, bool have_id, uint64_t dev, uint64_t ino,
		     struct sl_error *reterr)
{
	struct tree t = {.base_fd = parent_fd, .prefix = prefix, .reterr = reterr};
	struct stat st;
	bool mount_root;
	int fd, r;

	/* A name, never a path: "." or ".." would reach the parent itself or
	 * above it. Callers pass logged or listed names; this is the backstop. */
	if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return fail_reason(reterr, -EBADMSG, "%s: '%s' is not a name; refused", prefix, name);
	r = fd_mount_id(parent_fd, &t.mnt_id, &mount_root);
	if (r < 0)
		return tree_fail(&t, r, NULL, NULL);
	fd = open_child(&t, parent_fd, name, &st);
	if (fd == -ENOENT)
		return 0;
	if (fd == -ENOTDIR)
		return tree_fail(&t, -ESTALE, name, "not a directory (replaced?); left alone");
	if (fd == -EXDEV)
		return tree_fail(&t, -EXDEV, name, "a mount is in the way; not entered");
	if (fd < 0)
		return tree_fail(&t, fd, name, NULL);
	if (have_id && (st.st_dev != dev || st.st_ino != ino)) {
		close(fd);
		return tree_fail(&t, -ESTALE, name, "not the directory the stage created; left alone");
	}
	r = push(&t, fd, &st, name);
	if (r < 0)
		return tree_fail(&t, r, name, NULL);

	/* An explicit heap stack instead of recursion: a 10,000-level tree
	 * costs heap, not stack, and MAX_OPEN_DIRS fds at most. */
	while (t.n > 0) {
		struct frame *f = &t.f[t.n - 1];
		struct dirent *de;

		errno = 0;
		de = f->d ? readdir(f->d) : NULL;
		if (!de) {
			if (errno)
				tree_fail(&t, negerrno(), NULL, NULL);
			pop(&t);
			continue;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (++t.names > MAX_TREE_NAMES || t.n_unbounded) {
			tree_fail(&t, -ELOOP, de->d_name, "more names than a removal looks at; something keeps adding them");
			break;
		}
		remove_name(&t, dirfd(f->d), de);
	}
	/* Only after a break: close what is still open. */
	while (t.n > 0) {
		struct frame *f = &t.f[--t.n];
		if (f->d)
			closedir(f->d);
		free(f->name);
	}
	free(t.f);
	free(t.failed.slot);
	return t.error;
}

/* ---- The stage-level undo: entries newest first, then the top. ---- */


/* Checks the record itself: a tampered id, label, top directory name or
 * root must not steer a removal anywhere. */
const char *record_check(const struct sl_record *rec)
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
static const char *entry_check(const struct sl_record *rec, const struct sl_entry *e)
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
	if (e->kind != SL_KIND_DIR && e->kind != SL_KIND_FILE && e->kind != SL_KIND_SYMLINK)
		return "unknown kind";
	return NULL;
}

/* A cached parent directory: consecutive entries (newest first) mostly
 * share one, so resolving it once per run keeps removal near rm -rf. */
struct parent {
	int fd;
	char path[SL_PATH_MAX + 1];
	size_t len;
	int error; /* why it could not be opened, if fd < 0 */
	dev_t dev; /* its identity, while fd >= 0 */
	ino_t ino;
	/* The parent before this one: newest first, a directory's own entry
	 * comes right after the entries inside it, so this is usually that
	 * directory, and its identity lets us tell it from a replacement. */
	char prev_path[SL_PATH_MAX + 1];
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
	closep(&p->fd);
	p->fd = -1;
	p->len = (size_t)-1;
}

/* Removes one logged entry beneath the stage's verified top directory.
 * path/len is the entry's path below the top directory. */
static int undo_entry(int top_fd, const char *topdir, const struct sl_entry *e, const char *path, size_t len,
		      struct parent *p, struct sl_error *reterr)
{
	const char *slash = memrchr(path, '/', len);
	size_t plen = slash ? (size_t)(slash - path) : 0;
	const char *base = slash ? slash + 1 : path;
	char name[SL_NAME_MAX + 1];
	char prefix[SL_PATH_MAX + SL_LABEL_MAX + SL_ID_LEN + 4];
	bool known;
	int r;

	memcpy(name, base, len - (size_t)(base - path));
	name[len - (size_t)(base - path)] = '\0';
	if (p->len != plen || memcmp(p->path, path, plen) != 0) {
		parent_close(p);
		memcpy(p->path, path, plen);
		p->path[plen] = '\0';
		p->len = plen;
		r = open_beneath(top_fd, path, plen, O_PATH);
		p->fd = r < 0 ? -1 : r;
		p->error = r < 0 ? r : 0;
		if (p->fd >= 0) {
			struct stat st;
			if (fstat(p->fd, &st) < 0) {
				p->error = negerrno();
				closep(&p->fd);
				p->fd = -1;
			} else {
				p->dev = st.st_dev;
				p->ino = st.st_ino;
			}
		}
	}
	snprintf(prefix, sizeof(prefix), "%s%s%s", topdir, plen ? "/" : "", p->path);
	if (p->fd < 0) {
		/* A missing parent means a missing entry; a symlink on the way
		 * means the logged path names nothing inside the stage (the
		 * symlink itself is an older entry, unlinked in its turn). */
		if (p->error == -ENOENT || p->error == -ELOOP)
			return 0;
		/* A directory on the way narrowed to 0000: the final tree walk,
		 * which widens what we own, reaches the entry from above. */
		if (p->error == -EACCES)
			return 0;
		if (p->error == -EXDEV)
			return fail_reason(reterr, -EXDEV, "%s: a mount is in the way (entry %lld); not entered",
					   prefix, (long long)e->seq);
		return fail_reason(reterr, p->error, "%s: %s", prefix, strerror(-p->error));
	}
	/* A directory we just emptied through an fd must still be that
	 * directory: one renamed away and replaced meanwhile is not ours. */
	known = e->kind == SL_KIND_DIR && p->prev_len == len && memcmp(p->prev_path, path, len) == 0;
	if (known) {
		struct stat st;
		if (fstatat(p->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    (st.st_dev != p->prev_dev || st.st_ino != p->prev_ino))
			return fail_reason(reterr, -ESTALE, "%s/%s: replaced during removal; left alone", prefix,
					   name);
	}
	r = sl_fault_step();
	if (r < 0)
		goto fail;
	if (unlinkat(p->fd, name, e->kind == SL_KIND_DIR ? AT_REMOVEDIR : 0) == 0 || errno == ENOENT)
		return 0;
	r = negerrno();
	/* A parent narrowed to 0500 or 0000: widen it (if ours) and retry. */
	if (r == -EACCES && grant_self(p->fd) == 0) {
		if (unlinkat(p->fd, name, e->kind == SL_KIND_DIR ? AT_REMOVEDIR : 0) == 0 || errno == ENOENT)
			return 0;
		r = negerrno();
	}
	if (r == -ENOTDIR && e->kind == SL_KIND_DIR) {
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
		if (dfd < 0) {
			r = negerrno();
			goto fail;
		}
		return undo_remove_tree(dfd, prefix, name, known, known ? p->prev_dev : 0, known ? p->prev_ino : 0,
					reterr);
	}
fail:
	if (r == -EBUSY)
		return fail_reason(reterr, -EXDEV, "%s/%s: a mount is in the way (entry %lld)", prefix, name,
				   (long long)e->seq);
	return fail_reason(reterr, r, "%s/%s: %s", prefix, name, strerror(-r));
}

/* Opens the stage's top directory beneath the root and checks that it is
 * the one the stage created: a real directory (not a symlink), on the
 * root's mount and not a mount itself, with the recorded inode and birth
 * time (or device) when they were recorded. -ENOENT when it is gone. */
static int open_top(int root_fd, const struct sl_record *rec, int *ret_fd, struct fileid *ret_id, struct sl_error *reterr)
{
	_cleanup_close_ int path_fd = -1, fd = -1;
	uint64_t root_mnt, mnt;
	bool mount_root;
	int r;

	/* O_PATH first, then the mount and identity checks, and only then an
	 * open for reading (with owner permissions added if needed): nothing
	 * is opened for real, or widened, before it is known to be ours. */
	path_fd = openat(root_fd, rec->topdir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (path_fd < 0) {
		r = negerrno();
		if (r == -ENOENT)
			return r;
		if (r == -ELOOP || r == -ENOTDIR)
			return fail_reason(reterr, -ESTALE, "%s: replaced by something that is not a directory; left alone",
					   rec->topdir);
		return fail_reason(reterr, r, "%s: %s", rec->topdir, strerror(-r));
	}
	r = fd_mount_id(root_fd, &root_mnt, &mount_root);
	if (r == 0)
		r = fd_mount_id(path_fd, &mnt, &mount_root);
	if (r < 0)
		return fail_reason(reterr, r, "%s: %s", rec->topdir, strerror(-r));
	if (mount_root || mnt != root_mnt)
		return fail_reason(reterr, -EXDEV, "%s: a mount is in the way; not entered", rec->topdir);
	r = fd_fileid(path_fd, ret_id);
	if (r < 0)
		return fail_reason(reterr, r, "%s: %s", rec->topdir, strerror(-r));
	if (rec->have_inode && !fileid_matches(rec->dev, rec->ino, rec->btime, ret_id))
		return fail_reason(reterr, -ESTALE, "%s: not the directory the stage created; left alone",
				   rec->topdir);
	fd = openat(path_fd, ".", O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno == EACCES && grant_self(path_fd) == 0)
		fd = openat(path_fd, ".", O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return fail_reason(reterr, negerrno(), "%s: %s", rec->topdir, strerror(errno));
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Opens the staging root and, when the record holds its identity, refuses
 * a root path that now leads to another directory (a symlink repointed, a
 * directory replaced): the stage's files may still sit in the old one, and
 * a missing top directory there must not pass for a removed one. */
static int open_checked_root(const struct sl_record *rec, int *ret_fd, struct sl_error *reterr)
{
	_cleanup_close_ int fd = -1;
	struct fileid id;
	int r;

	r = open_root(rec->root, &fd);
	if (r == -ENOENT)
		return r;
	if (r == -ELOOP || r == -ENOTDIR)
		return fail_reason(reterr, -ESTALE, "staging root %s: no longer a directory; left alone", rec->root);
	if (r < 0)
		return fail_reason(reterr, r, "cannot open staging root: %s", strerror(-r));
	r = fd_fileid(fd, &id);
	if (r < 0)
		return fail_reason(reterr, r, "cannot open staging root: %s", strerror(-r));
	if (!root_matches(rec, &id))
		return fail_reason(reterr, -ESTALE, "staging root %s: now leads to another directory; left alone",
				   rec->root);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* True when a publish recorded a destination and the stage's top directory
 * is there: the rename reached the disk but its record did not. */
static bool found_at_dest(const struct sl_record *rec)
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

/* The last step of an undo: all entries removed and the state moved on, in
 * one transaction. A stage that another process finished meanwhile (a
 * recovery that found the directory gone) is a success too. */
static int finish(struct sl_store *store, const struct sl_record *rec, unsigned from_mask, enum sl_state done,
		  struct sl_error *reterr)
{
	struct sl_record now;
	int r;

	r = store_stage_finish(store, rec->rowid, from_mask, done, NULL);
	/* Once the top directory is gone a recovery may take the stage
	 * (nothing of it is left on disk) and finish its record: the removal
	 * succeeded all the same. */
	if (r == -ESTALE && store_stage_get_rowid(store, rec->rowid, &now, NULL) == 0 &&
	    (!sl_state_in_flight(now.state) || now.state == SL_STATE_RECOVERING))
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
static int finish_missing_top(struct sl_store *store, const struct sl_record *rec, int root_fd, unsigned from_mask,
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
static int validate_entries(struct sl_store *store, const struct sl_record *rec, struct sl_entry_page *page,
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
 * tree removal. The store is only read and, page by page, told what is
 * gone: a store that cannot be read or written stops nothing, since the
 * tree removal that follows reaches every entry from above. A failing entry
 * does not stop the others; the first failure is returned with its reason.
 */
static int remove_entries(struct sl_store *store, const struct sl_record *rec, int top_fd, struct sl_entry_page *page,
			  bool one_page, int n, struct sl_error *reterr)
{
	struct parent parent = {.fd = -1, .len = (size_t)-1, .prev_len = (size_t)-1};
	size_t tl = strlen(rec->topdir);
	struct sl_error scratch = { 0 };
	int64_t seq = INT64_MAX;
	bool store_down = false;
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
		for (int k = 0; k < n; k++) {
			const struct sl_entry *e = &page->e[one_page ? n - 1 - k : k];
			const char *why;

			if (e->seq <= 0)
				break;
			/* Checked again where it is used: a second read of the
			 * store may not return what the first one checked. */
			why = entry_check(rec, e);
			if (why) {
				parent_close(&parent);
				return fail_reason(reterr, -EBADMSG, "record fails validation: %s (entry %lld)", why,
						   (long long)e->seq);
			}
			lo = e->seq;
			if (e->state == SL_ENTRY_REMOVED)
				continue;
			r = undo_entry(top_fd, rec->topdir, e, e->path + tl + 1, e->path_len - tl - 1, &parent,
				       first ? &scratch : reterr);
			if (r < 0 && !first)
				first = r;
			/* Something swapped in under a logged name: someone
			 * is at work in the tree, and nothing more is touched. */
			if (r == -ESTALE) {
				parent_close(&parent);
				return r;
			}
		}
		if (one_page || !page->more || lo <= 1)
			break;
		/* What is gone is gone; the record catches up if it can. A
		 * store that failed once (busy past its deadline, full) is not
		 * asked again page after page. */
		if (!first && !store_down && store_entries_mark_removed(store, rec->rowid, lo, hi, NULL) < 0)
			store_down = true;
		seq = lo;
	}
	parent_close(&parent);
	return first;
}

/* Moves a stage whose removal could not finish to failed, with the reason:
 * the next recovery retries it. */
static int fail_stage(struct sl_store *store, const struct sl_record *rec, unsigned from_mask, int r,
		      struct sl_error *reason)
{
	if (store_stage_transition(store, rec->rowid, from_mask, SL_STATE_FAILED, reason->msg, false, NULL) == 0)
		reason->flags |= SL_ERROR_STAGE_FAILED;
	return r;
}

int undo_stage(struct sl_store *store, const struct sl_record *rec, unsigned from_mask, enum sl_state done,
	       struct sl_error *reterr)
{
	_cleanup_free_ struct sl_entry_page *page = NULL;
	_cleanup_close_ int root_fd = -1, top_fd = -1;
	struct fileid top_id;
	struct sl_error scratch = { 0 };
	const char *why;
	bool one_page = false;
	int r, n, first;

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
	if (r == -ENOENT)
		return finish_missing_top(store, rec, -1, from_mask, done, reterr);
	if (r < 0)
		return fail_stage(store, rec, from_mask, r, reterr);

	/* The top directory is opened and its identity checked BEFORE any
	 * entry is touched, and every entry is resolved beneath that verified
	 * fd: a directory swapped in under the stage's name (or a record
	 * pointed at another stage's name) loses nothing. */
	r = open_top(root_fd, rec, &top_fd, &top_id, reterr);
	if (r == -ENOENT) {
		r = finish_missing_top(store, rec, root_fd, from_mask, done, reterr);
		if (r != -EAGAIN)
			return r;
		r = open_top(root_fd, rec, &top_fd, &top_id, reterr);
		if (r == -ENOENT)
			return finish(store, rec, from_mask, done, reterr);
	}
	if (r < 0)
		return fail_stage(store, rec, from_mask, r, reterr);

	/* From here on the removal runs to its end whatever the store does. */
	first = remove_entries(store, rec, top_fd, page, one_page, n, reterr);
	closep(&top_fd);
	top_fd = -1;

	/* The top directory, and whatever a runtime left in it, only if it is
	 * still the directory verified above. */
	if (first != -ESTALE) {
		r = undo_remove_tree(root_fd, ".", rec->topdir, true, top_id.dev, top_id.ino,
				     first ? &scratch : reterr);
		if (!first)
			first = r;
	}
	if (first < 0)
		return fail_stage(store, rec, from_mask, first, reterr);
	/* Make the removal durable before the record says it happened. */
	r = sl_fault_step();
	if (r == 0 && fsync(root_fd) < 0 && errno != EINVAL && errno != EROFS)
		r = negerrno();
	if (r < 0)
		return fail_stage(store, rec, from_mask,
				  fail_reason(reterr, r, "cannot sync staging root: %s", strerror(-r)), reterr);
	return finish(store, rec, from_mask, done, reterr);
}
