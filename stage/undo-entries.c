/* SPDX-License-Identifier: MIT */
/*
 * undo-entries.c: step 4 of the undo (undo.c): the logged entries of a
 * stage removed newest first, each resolved beneath the stage's verified
 * top directory, with the parent directory of consecutive entries opened
 * once. What the log does not know (a runtime's files, a replaced type, a
 * narrowed mode) is left to the tree removal (rm-tree.c).
 */
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "stage-private.h"

/* p->len and p->prev_len while nothing is cached. */
#define PARENT_NONE ((size_t)-1)
/* The size of an entry's parent as its reasons name it: the top directory
 * (LABEL-ID), "/" and a path below it, NUL included. */
#define ENTRY_PREFIX_SIZE (LABEL_MAX + 1 + STORE_ID_LEN + 1 + STAGE_PATH_MAX + 1)

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
	if (p->fd >= 0 && p->len != PARENT_NONE) {
		memcpy(p->prev_path, p->path, p->len);
		p->prev_len = p->len;
		p->prev_dev = p->dev;
		p->prev_ino = p->ino;
	} else {
		p->prev_len = PARENT_NONE;
	}
	p->fd = safe_close(p->fd);
	p->len = PARENT_NONE;
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
	r = stage_open_beneath(top_fd, path, plen, O_PATH);
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
		return sl_err_replace(reterr, -EXDEV, "%s: a mount is in the way (entry %lld); not entered", prefix,
				      (long long)e->seq);
	return sl_err_replace(reterr, p->error, "%s: %s", prefix, strerror(-p->error));
}

static int entry_fail(const struct store_entry *e, const char *prefix, const char *name, int r, struct sl_error *reterr)
{
	if (r == -EBUSY)
		return sl_err_replace(reterr, -EXDEV, "%s/%s: a mount is in the way (entry %lld)", prefix, name,
				      (long long)e->seq);
	return sl_err_replace(reterr, r, "%s/%s: %s", prefix, name, strerror(-r));
}

/* Removes entry e, name in the open parent p. known: e is the directory
 * just emptied through an fd, and p->prev_dev/prev_ino its identity. */
static int remove_logged(const struct parent *p, const struct store_entry *e, const char *prefix, const char *name,
			 bool known, struct sl_error *reterr)
{
	int r = fault_step();

	if (r < 0)
		return entry_fail(e, prefix, name, r, reterr);
	r = rmtree_unlinkat(p->fd, name, e->kind == STORE_KIND_DIR ? AT_REMOVEDIR : 0);
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
		return rmtree_remove(dfd, prefix, name, known, known ? p->prev_dev : 0, known ? p->prev_ino : 0,
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
	char prefix[ENTRY_PREFIX_SIZE];
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
			return sl_err_replace(reterr, -ESTALE, "%s/%s: replaced during removal; left alone", prefix,
					      name);
	}
	return remove_logged(p, e, prefix, name, known, reterr);
}

/* Tells the caller's progress callback, if any, that one more entry is
 * done. */
static void progress_step(struct stage_undo_progress *progress)
{
	if (progress) {
		progress->p.done++;
		progress->fn(&progress->p, progress->userdata);
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
int stage_undo_entries(struct sl_store *store, const struct store_record *rec, int top_fd,
		       struct store_entry_page *page, bool one_page, int n, struct stage_undo_progress *progress,
		       struct sl_error *reterr)
{
	_cleanup_(parent_close) struct parent parent = { .fd = -1, .len = PARENT_NONE, .prev_len = PARENT_NONE };
	size_t tl = strlen(rec->topdir);
	struct sl_error scratch = { 0 };
	int64_t seq = INT64_MAX;
	int first = 0, r;

	assert(top_fd >= 0 && (!one_page || n > 0));
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
			why = stage_entry_check(rec, e);
			if (why)
				return sl_err_replace(reterr, -EBADMSG, "record fails validation: %s (entry %lld)", why,
						      (long long)e->seq);
			lo = e->seq;
			progress_step(progress);
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
