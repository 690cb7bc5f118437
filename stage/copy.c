/* SPDX-License-Identifier: MIT */
/*
 * copy.c: copying a source tree into a stage. Each path is logged before it
 * is created; the source is walked by directory fds and never through a
 * symlink; memory stays bounded however large the tree is (the listing the
 * logging walk keeps for the copy walk is at most COPY_LIST_MAX bytes).
 */
#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "stage-private.h"

/* Deeper source trees are refused: each level holds two fds open. */
#define COPY_MAX_DEPTH 256
/* The buffer of the read/write fallback of copy_bytes(). */
#define COPY_CHUNK (64 * 1024)
/* The listing's first size, and its bound: about 40,000 names of a dozen
 * bytes. A larger tree is read from its directories a second time. */
#define COPY_LIST_FIRST (16 * 1024)
#define COPY_LIST_MAX (256 * 1024)
/* The listing's record that closes a directory. */
#define COPY_LIST_END 0xff

/*
 * What the logging walk read, for the copy walk: every directory's names
 * in the order both walks visit them (depth first, a directory's children
 * right after it), each as its kind's byte and the name with its NUL, and
 * COPY_LIST_END where a directory ends. The copy walk then reads no
 * directory twice. Off (on == false) when the tree is past COPY_LIST_MAX,
 * when memory ran short, and when nothing is logged.
 */
struct copy_list {
	unsigned char *buf;
	size_t size, used, pos;
	bool on;
};

struct copy_frame {
	DIR *src;
	int dst;
	size_t rel_len; /* length of the relative path of this directory */
	struct stat st;
};

struct copy {
	struct sl_stage *st;
	struct copy_frame f[COPY_MAX_DEPTH];
	size_t n;
	char rel[STAGE_PATH_MAX + 1];
	size_t rel_len;
	bool chown;
	struct sl_error *reterr;
	struct sl_progress progress; /* for st->progress */
	struct copy_list list;
};

size_t stage_copy_list_max = COPY_LIST_MAX;

/* Drops the listing: the copy walk reads the directories instead. */
static void list_drop(struct copy_list *l)
{
	free(l->buf);
	*l = (struct copy_list){ 0 };
}

/* Appends a record, a name of kind (name NULL: COPY_LIST_END), growing the
 * listing; past stage_copy_list_max, or out of memory, it is dropped. */
static void list_add(struct copy_list *l, unsigned char kind, const char *name)
{
	size_t need = 1 + (name ? strlen(name) + 1 : 0);

	if (!l->on)
		return;
	if (l->used + need > l->size) {
		size_t size = l->size ? l->size : COPY_LIST_FIRST;
		unsigned char *buf;

		while (size < l->used + need)
			size *= 2;
		buf = size <= stage_copy_list_max ? realloc(l->buf, size) : NULL;
		if (!buf) {
			list_drop(l);
			return;
		}
		l->buf = buf;
		l->size = size;
	}
	l->buf[l->used++] = kind;
	if (name) {
		memcpy(l->buf + l->used, name, need - 1);
		l->used += need - 1;
	}
}

/* Tells the caller's progress callback, if any, where the copy is. */
static void report(struct copy *c)
{
	if (c->st->progress)
		c->st->progress(&c->progress, c->st->progress_userdata);
}

static int copy_fail(struct copy *c, int r, const char *why)
{
	return sl_err(c->reterr, r, "cannot copy: %s/%.*s: %s", c->st->rec.topdir, (int)c->rel_len, c->rel,
		      why ? why : strerror(-r));
}

/* Copies the bytes of an open regular file. copy_file_range keeps them in
 * the kernel (and clones where the filesystem can); read/write covers the
 * filesystems and kernels where it cannot. */
static int copy_bytes(int in, int out, off_t size)
{
	char buf[COPY_CHUNK];
	bool fallback = false;

	while (size > 0) {
		ssize_t n;

		if (!fallback) {
			n = copy_file_range(in, NULL, out, NULL, (size_t)size, 0);
			if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
				fallback = true;
				continue;
			}
		} else {
			n = read(in, buf, sizeof(buf) < (size_t)size ? sizeof(buf) : (size_t)size);
			if (n > 0) {
				int r = write_all(out, buf, (size_t)n);

				if (r < 0)
					return r;
			}
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negerrno();
		}
		if (n == 0)
			break; /* The source shrank; copy what it holds. */
		size -= n;
	}
	return 0;
}

static int set_times(int fd, const struct stat *sb)
{
	struct timespec ts[2] = { sb->st_atim, sb->st_mtim };

	return futimens(fd, ts) < 0 ? negerrno() : 0;
}

static int copy_file(struct copy *c, int sfd, int dfd, const char *name, const struct stat *sb)
{
	_cleanup_close_ int in = -1, out = -1;
	int r;

	struct stat now;

	/* O_NONBLOCK: a file swapped for a FIFO since it was listed must not
	 * hang the stager; and the open file must be the one that was listed,
	 * so that its owner and mode are the ones copied. */
	in = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (in < 0)
		return copy_fail(c, negerrno(), NULL);
	if (fstat(in, &now) < 0)
		return copy_fail(c, negerrno(), NULL);
	if (!S_ISREG(now.st_mode) || now.st_dev != sb->st_dev || now.st_ino != sb->st_ino)
		return copy_fail(c, -EBADMSG, "changed while it was copied; refused");
	r = fault_step();
	if (r == 0) {
		out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (out < 0)
			r = negerrno();
	}
	if (r == 0)
		r = fault_step();
	if (r == 0)
		r = copy_bytes(in, out, sb->st_size);
	/* Owner before mode: chown clears set-id bits. */
	if (r == 0 && c->chown && fchown(out, sb->st_uid, sb->st_gid) < 0)
		r = negerrno();
	if (r == 0 && fchmod(out, sb->st_mode & 07777) < 0)
		r = negerrno();
	if (r == 0)
		r = set_times(out, sb);
	return r < 0 ? copy_fail(c, r, NULL) : 0;
}

static int copy_symlink(struct copy *c, int sfd, int dfd, const char *name, const struct stat *sb)
{
	char target[PATH_MAX];
	struct timespec ts[2] = { sb->st_atim, sb->st_mtim };
	ssize_t n;
	int r;

	n = readlinkat(sfd, name, target, sizeof(target) - 1);
	if (n < 0)
		return copy_fail(c, negerrno(), NULL);
	target[n] = '\0';
	r = fault_step();
	if (r == 0 && symlinkat(target, dfd, name) < 0)
		r = negerrno();
	if (r == 0 && c->chown && fchownat(dfd, name, sb->st_uid, sb->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
		r = negerrno();
	if (r == 0 && utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		r = negerrno();
	return r < 0 ? copy_fail(c, r, NULL) : 0;
}

/* Creates directory name in dfd (0700 until its contents are in) and pushes
 * a frame with it and src, the source directory (taken over). */
static int copy_enter(struct copy *c, int src, int dfd, const char *name, const struct stat *sb)
{
	struct copy_frame *f;
	int dst, r;

	if (c->n == COPY_MAX_DEPTH) {
		close(src);
		return copy_fail(c, -ELOOP, "source tree deeper than " STRINGIFY(COPY_MAX_DEPTH) " levels");
	}
	r = fault_step();
	if (r == 0 && mkdirat(dfd, name, 0700) < 0)
		r = negerrno();
	dst = r < 0 ? -1 : openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (r == 0 && dst < 0)
		r = negerrno();
	f = &c->f[c->n];
	f->src = r < 0 ? NULL : fdopendir(src);
	if (r == 0 && !f->src)
		r = negerrno();
	if (r < 0) {
		if (!f->src)
			close(src);
		if (dst >= 0)
			close(dst);
		return copy_fail(c, r, NULL);
	}
	f->dst = dst;
	f->rel_len = c->rel_len;
	f->st = *sb;
	c->n++;
	return 0;
}

/* Leaves a directory: its mode, owner and times are set last, once nothing
 * more is written into it. */
static int copy_leave(struct copy *c)
{
	struct copy_frame *f = &c->f[--c->n];
	int r = 0;

	if (c->chown && fchown(f->dst, f->st.st_uid, f->st.st_gid) < 0)
		r = negerrno();
	if (r == 0 && fchmod(f->dst, f->st.st_mode & 07777) < 0)
		r = negerrno();
	if (r == 0)
		r = set_times(f->dst, &f->st);
	closedir(f->src);
	close(f->dst);
	c->rel_len = f->rel_len;
	return r < 0 ? copy_fail(c, r, NULL) : 0;
}

static void copy_unwind(struct copy *c)
{
	while (c->n > 0) {
		struct copy_frame *f = &c->f[--c->n];
		closedir(f->src);
		close(f->dst);
	}
}

/* Appends name to the relative path of frame f, in c->rel. */
static int rel_set(struct copy *c, const struct copy_frame *f, const char *name)
{
	size_t len = strlen(name);

	c->rel_len = f->rel_len;
	if (c->rel_len + 1 + len > STAGE_PATH_MAX - LABEL_MAX - STORE_ID_LEN - 2)
		return copy_fail(c, -ENAMETOOLONG, NULL);
	c->rel[c->rel_len++] = '/';
	memcpy(c->rel + c->rel_len, name, len);
	c->rel_len += len;
	return 0;
}

/* Refuses what is neither a directory, a file nor a symlink. */
static int refuse_special(struct copy *c)
{
	return copy_fail(c, -EBADMSG, "a device node, FIFO or socket; only directories, files and symlinks are copied");
}

/* The kind of what sb describes, STORE_KIND_BAD for what is never
 * copied. */
static enum store_kind kind_of(const struct stat *sb)
{
	return S_ISDIR(sb->st_mode) ? STORE_KIND_DIR
	     : S_ISREG(sb->st_mode) ? STORE_KIND_FILE
	     : S_ISLNK(sb->st_mode) ? STORE_KIND_SYMLINK
				    : STORE_KIND_BAD;
}

/* The kind a source entry is logged as: getdents' type, or fstatat's
 * where the filesystem gives none. */
static int log_kind(struct copy *c, int dfd, const struct dirent *de, enum store_kind *ret_kind)
{
	struct stat sb;

	switch (de->d_type) {
	case DT_DIR:
		*ret_kind = STORE_KIND_DIR;
		break;
	case DT_REG:
		*ret_kind = STORE_KIND_FILE;
		break;
	case DT_LNK:
		*ret_kind = STORE_KIND_SYMLINK;
		break;
	case DT_UNKNOWN:
		if (fstatat(dfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
			return copy_fail(c, negerrno(), NULL);
		*ret_kind = kind_of(&sb);
		break;
	default:
		*ret_kind = STORE_KIND_BAD;
	}
	return *ret_kind == STORE_KIND_BAD ? refuse_special(c) : 0;
}

/* Opens directory name in dfd for the logging walk, never through a
 * symlink. */
static int log_opendir(struct copy *c, int dfd, const char *name, DIR **ret)
{
	_cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	*ret = fd < 0 ? NULL : fdopendir(fd);
	if (!*ret)
		return copy_fail(c, negerrno(), NULL);
	fd = -1; /* The DIR owns it now. */
	return 0;
}

/*
 * Logs every path of the source tree, and commits the log, before the copy
 * creates any of them: a first walk (names and types only, from getdents)
 * logs (and keeps the names it read, in c->list), a second one copies.
 * Entries are committed, not synced, before
 * their paths exist, in batches of STAGE_LOG_BATCH: a dozen commits for 10,000
 * files, where a commit per directory would be a hundred.
 */
static int log_tree(struct copy *c, int sfd)
{
	struct {
		DIR *d;
		size_t rel_len;
	} lf[COPY_MAX_DEPTH];
	size_t n = 0, base = c->rel_len;
	int r;

	if (c->st->log_mode == STAGE_LOG_OFF)
		return 0; /* The benchmarks' baseline: no log, no logging walk. */
	c->list.on = true;
	/* A fresh open, not dup(): a dup shares the directory offset with
	 * sfd, which the copy walk reads from the start afterwards. */
	r = log_opendir(c, sfd, ".", &lf[0].d);
	if (r < 0)
		return r;
	lf[0].rel_len = base;
	n = 1;
	while (n > 0 && r == 0) {
		struct copy_frame cf = { .rel_len = lf[n - 1].rel_len };
		struct dirent *de;
		enum store_kind kind;

		errno = 0;
		de = readdir(lf[n - 1].d);
		if (!de) {
			if (errno)
				r = copy_fail(c, negerrno(), NULL);
			list_add(&c->list, COPY_LIST_END, NULL);
			closedir(lf[--n].d);
			continue;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		r = rel_set(c, &cf, de->d_name);
		if (r == 0)
			r = log_kind(c, dirfd(lf[n - 1].d), de, &kind);
		if (r < 0)
			break;
		r = stage_log(c->st, c->rel, c->rel_len, kind, c->reterr);
		list_add(&c->list, (unsigned char)kind, de->d_name);
		c->progress.total++;
		if (r < 0 || kind != STORE_KIND_DIR)
			continue;
		if (n == COPY_MAX_DEPTH) {
			r = copy_fail(c, -ELOOP, "source tree deeper than " STRINGIFY(COPY_MAX_DEPTH) " levels");
			break;
		}
		r = log_opendir(c, dirfd(lf[n - 1].d), de->d_name, &lf[n].d);
		if (r < 0)
			break;
		lf[n++].rel_len = c->rel_len;
	}
	while (n > 0)
		closedir(lf[--n].d);
	c->rel_len = base;
	return r < 0 ? r : stage_log_flush(c->st, c->reterr);
}

/* Copies one name of the source directory of frame f: a directory is
 * made and entered (its children come next), a file or a symlink copied.
 * Each name was logged (and committed) by log_tree(). A source that
 * changed between the two walks may bring a name the log lacks; it lies
 * inside the top directory all the same, which the undo removes whole. */
static int copy_name(struct copy *c, struct copy_frame *f, const char *name, const struct stat *sb)
{
	int r;

	switch (sb->st_mode & S_IFMT) {
	case S_IFDIR: {
		int src = openat(dirfd(f->src), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		r = src < 0 ? copy_fail(c, negerrno(), NULL) : copy_enter(c, src, f->dst, name, sb);
		/* The new frame's children append to this path. */
		if (r == 0)
			c->f[c->n - 1].rel_len = c->rel_len;
		return r;
	}
	case S_IFREG:
		r = copy_file(c, dirfd(f->src), f->dst, name, sb);
		if (r == 0)
			c->progress.bytes += (uint64_t)sb->st_size;
		return r;
	case S_IFLNK:
		return copy_symlink(c, dirfd(f->src), f->dst, name, sb);
	default:
		return refuse_special(c);
	}
}

/* The kind next_name() gives a name read again with readdir(), which says
 * nothing of how it was logged. No logged name has it: a name of no kind
 * is refused before it is logged. */
#define COPY_KIND_NOT_LISTED STORE_KIND_BAD

/* Reads the next name of frame f's source directory into *ret_name: from
 * the listing (with the kind it was logged as in *ret_kind), else from
 * readdir() (*ret_kind COPY_KIND_NOT_LISTED). Returns 1, 0 at the
 * directory's end, or an error. */
static int next_name(struct copy *c, struct copy_frame *f, const char **ret_name, unsigned *ret_kind)
{
	struct copy_list *l = &c->list;
	struct dirent *de;

	if (l->on) {
		/* The walks visit the same directories in the same order,
		 * and every directory's names end with COPY_LIST_END. */
		assert(l->pos < l->used);
		if (l->pos >= l->used)
			return copy_fail(c, -EIO, "the listing ended early");
		*ret_kind = l->buf[l->pos++];
		if (*ret_kind == COPY_LIST_END)
			return 0;
		*ret_name = (const char *)l->buf + l->pos;
		l->pos += strlen(*ret_name) + 1;
		return 1;
	}
	do {
		errno = 0;
		de = readdir(f->src);
		if (!de)
			return errno ? copy_fail(c, negerrno(), NULL) : 0;
	} while (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0);
	*ret_name = de->d_name;
	*ret_kind = COPY_KIND_NOT_LISTED;
	return 1;
}

/* The copy walk: every frame's source directory read to its end (from the
 * listing, or again), depth first, each name copied by copy_name(). A name
 * whose kind changed since it was logged is refused: the listing's next
 * names would be read as another directory's. */
static int copy_walk(struct copy *c)
{
	while (c->n > 0) {
		struct copy_frame *f = &c->f[c->n - 1];
		const char *name = NULL;
		unsigned kind = COPY_KIND_NOT_LISTED;
		struct stat sb;
		int r;

		r = next_name(c, f, &name, &kind);
		if (r < 0)
			return r;
		if (r == 0) {
			c->rel_len = f->rel_len;
			r = copy_leave(c);
			if (r < 0)
				return r;
			continue;
		}
		/* Between two paths, never inside one: an interrupted copy
		 * is aborted whole by the caller's undo. */
		if (stage_cancelled(c->st))
			return copy_fail(c, -ECANCELED, "interrupted");
		r = rel_set(c, f, name);
		if (r < 0)
			return r;
		if (fstatat(dirfd(f->src), name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
			return copy_fail(c, negerrno(), NULL);
		if (kind != COPY_KIND_NOT_LISTED && kind != kind_of(&sb))
			return copy_fail(c, -EBADMSG, "changed while it was copied; refused");
		r = copy_name(c, f, name, &sb);
		if (r < 0)
			return r;
		c->progress.done++;
		report(c);
	}
	return 0;
}

int sl_stage_copy_tree(struct sl_stage *st, int src_dirfd, const char *src, const char *path, struct sl_error *reterr)
{
	_cleanup_close_ int pfd = -1;
	_cleanup_free_ struct copy *c = NULL;
	struct stat sb;
	const char *name;
	int sfd, r;

	if (!st || st->rec.state != SL_STATE_STAGING)
		return sl_err(reterr, -EINVAL, "cannot copy: stage is not staging");
	c = calloc(1, sizeof(*c));
	if (!c)
		return stage_abort_on_error(st, sl_err(reterr, -ENOMEM, "cannot copy: %s", strerror(ENOMEM)));
	c->st = st;
	c->reterr = reterr;
	c->chown = geteuid() == 0;

	sfd = openat(src_dirfd, src ? src : ".", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0 || fstat(sfd, &sb) < 0) {
		r = negerrno();
		if (sfd >= 0)
			close(sfd);
		sl_err(reterr, r == -ENOTDIR ? -ELOOP : r, "cannot copy: source: %s",
		       r == -ENOTDIR || r == -ELOOP ? "not a directory (or a symlink); refused" : strerror(-r));
		return stage_abort_on_error(st, r == -ENOTDIR ? -ELOOP : r);
	}
	pfd = stage_open_parent(st, path, &name, reterr);
	if (pfd < 0) {
		close(sfd);
		return stage_abort_on_error(st, pfd);
	}
	c->rel_len = strlen(path);
	memcpy(c->rel, path, c->rel_len);
	r = stage_log(st, c->rel, c->rel_len, STORE_KIND_DIR, reterr);
	if (r == 0)
		r = log_tree(c, sfd);
	if (r == 0)
		report(c); /* listed: the total is known */
	if (r == 0) {
		r = copy_enter(c, sfd, pfd, name, &sb);
		if (r == 0)
			c->f[0].rel_len = c->rel_len;
	} else {
		close(sfd);
	}
	if (r == 0)
		r = copy_walk(c);
	list_drop(&c->list);
	if (r < 0) {
		copy_unwind(c);
		return stage_abort_on_error(st, r);
	}
	return 0;
}
