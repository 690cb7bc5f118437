/* SPDX-License-Identifier: MIT */
/*
 * undo.c: the one routine that removes what a stage created. In-process
 * cleanup (release, abort, a failing call) and recovery all come here;
 * nothing else in stagelog removes a staged path. The entries are removed
 * by undo-entries.c, whatever the log does not name by rm-tree.c.
 *
 * The rules, each enforced where the comment stands (here, in
 * undo-entries.c or in rm-tree.c):
 *  - the record and every logged path are checked lexically before
 *    anything is removed;
 *  - the staging root is opened by its recorded path through a chain
 *    nobody else can write, and must be the directory the stage began in;
 *  - the top directory is opened and verified next (its inode and birth
 *    time, or inode and device where no birth time is known, match the
 *    record), every entry is resolved beneath that verified top directory,
 *    and it goes only if it is still that directory;
 *  - paths are resolved from a directory fd, never following a symlink and
 *    never crossing a mount; only directories are ever opened;
 *  - the root is synced before the record says the stage is gone, and a
 *    removal that cannot finish leaves the stage failed, with its reason.
 */
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "stage-private.h"

_Static_assert(RMTREE_REASON_MAX <= STAGE_REASON_MAX, "a tree removal's reason must fit the undo's");

/* Cuts the undo's reason in *reterr to STAGE_REASON_MAX bytes: the bound
 * the stored reason of a failed stage and recover/'s report rely on. */
static void reason_cut(struct sl_error *reterr)
{
	reterr->msg[STAGE_REASON_MAX - 1] = '\0';
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
	struct stage_marker m;

	if (!store || id->ino != rec->ino || (rec->btime != 0 && id->btime != 0))
		return false;
	return stage_marker_read(path_fd, &m) == 0 && stage_marker_names(&m, rec->id, store);
}

/* What verify_top() compares the top directory with, and where it puts
 * the identity it found. */
struct top_check {
	const struct store_record *rec;
	const struct store_identity *store;
	struct fileid *id;
};

/* rmtree_open_dir()'s check for the top directory: its identity goes to
 * c->id and must match the record's, when the record holds one. */
static int verify_top(int path_fd, void *userdata)
{
	const struct top_check *c = userdata;
	const struct store_record *rec = c->rec;
	int r = fd_fileid(path_fd, c->id);

	if (r < 0)
		return r;
	if (rec->have_inode && !stage_fileid_matches(rec->dev, rec->ino, rec->btime, c->id) &&
	    !same_by_marker(path_fd, rec, c->store, c->id))
		return -ESTALE;
	return 0;
}

/* Opens the stage's top directory, rec->topdir in the verified staging
 * root, and checks that it is the one the stage created: a real directory
 * (not a symlink), on the root's mount and not a mount itself, with the
 * recorded inode and birth time (or device) when they were recorded.
 * -ENOENT when it is gone. */
static int open_top(int root_fd, const struct store_record *rec, const struct store_identity *store, int *ret_fd,
		    struct fileid *ret_id, struct sl_error *reterr)
{
	struct top_check check = { .rec = rec, .store = store, .id = ret_id };
	int fd = rmtree_open_dir(root_fd, rec->topdir, NULL, verify_top, &check);

	if (fd >= 0) {
		*ret_fd = fd;
		return 0;
	}
	if (fd == -ENOENT)
		return fd;
	if (fd == -ENOTDIR)
		return sl_err_replace(reterr, -ESTALE, "%s: replaced by something that is not a directory; left alone",
				      rec->topdir);
	if (fd == -EXDEV)
		return sl_err_replace(reterr, -EXDEV, "%s: a mount is in the way; not entered", rec->topdir);
	if (fd == -ESTALE)
		return sl_err_replace(reterr, -ESTALE, "%s: not the directory the stage created; left alone",
				      rec->topdir);
	return sl_err_replace(reterr, fd, "%s: %s", rec->topdir, strerror(-fd));
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

	r = stage_open_root_chain(rec->root, &fd, &bad);
	if (r == 0) {
		r = fd_fileid(fd, &id);
		if (r < 0)
			return sl_err_replace(reterr, r, "staging root %s: %s", rec->root, strerror(-r));
		if (stage_root_matches(rec, &id)) {
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
		return sl_err_replace(reterr, -ESTALE, "staging root %s: missing; cannot prove the stage is gone",
				      rec->root);
	case -ESTALE:
		return sl_err_replace(reterr, -ESTALE, "staging root %s: now leads to another directory; left alone",
				      rec->root);
	case -ELOOP:
	case -ENOTDIR:
		return sl_err_replace(reterr, -ESTALE, "staging root %s: no longer a directory; left alone", rec->root);
	case -EPERM:
		return sl_err_replace(reterr, -EPERM,
				      "staging root %s: %.*s is owned or writable by another user; left alone",
				      rec->root, (int)bad, rec->root);
	default:
		return sl_err_replace(reterr, r, "staging root %s: %s", rec->root, strerror(-r));
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
	return fd >= 0 && fd_fileid(fd, &id) == 0 && stage_fileid_matches(rec->dev, rec->ino, rec->btime, &id);
}

/* The last step of an undo: the state moved on, one commit whatever the
 * size of the stage. Its entries are not rewritten: a finished state
 * (released, recovered, aborted) says they are gone (docs/design.md,
 * "Entries"). A stage that another process finished meanwhile (a recovery
 * that found the directory gone) is a success too. */
static int mark_stage_done(struct sl_store *store, const struct store_record *rec, unsigned from_mask,
			   enum sl_state done, struct sl_error *reterr)
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
		return sl_err_replace(reterr, r, "removed, but the record could not be updated: %s", strerror(-r));
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
		return r < 0 ? sl_err_replace(reterr, r, "published, but the record could not be updated: %s",
					      strerror(-r))
			     : 0;
	}
	placeholder = root_fd >= 0 && !rec->have_inode && mkdirat(root_fd, rec->topdir, 0700) == 0;
	if (root_fd >= 0 && !rec->have_inode && !placeholder && errno == EEXIST)
		return -EAGAIN; /* The stager made it just now: undo it. */
	r = mark_stage_done(store, rec, from_mask, done, reterr);
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
			return sl_err_replace(reterr, n, "cannot read entries: %s", strerror(-n));
		if (n == 0 && pages == 0)
			return sl_err_replace(reterr, -EBADMSG, "record fails validation: no entries");
		for (int i = 0; i < n; i++) {
			why = stage_entry_check(rec, &page->e[i]);
			if (!why && page->e[i].seq != expect++)
				why = "entries not numbered 0, 1, 2, ...";
			if (why)
				return sl_err_replace(reterr, -EBADMSG, "record fails validation: %s (entry %lld)", why,
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

/* Moves a stage whose removal could not finish to failed, with the reason
 * (cut to STAGE_REASON_MAX here, where it is stored): the next recovery
 * retries it. Returns r. */
static int mark_stage_failed(struct sl_store *store, const struct store_record *rec, unsigned from_mask, int r,
			     struct sl_error *reason)
{
	assert(r < 0 && reason->code != 0);
	reason_cut(reason);
	if (store_stage_transition(store, rec->rowid, from_mask, SL_STATE_FAILED, reason->msg, false, NULL) == 0)
		sl_err_flag(reason, SL_ERROR_STAGE_FAILED);
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
			struct stage_undo_progress *progress, struct sl_error *reterr)
{
	struct sl_error scratch = { 0 };
	int r, first;

	first = stage_undo_entries(store, rec, top_fd, page, one_page, n, progress, reterr);
	closep(&top_fd);

	/* The top directory, and whatever a runtime left in it, only if it is
	 * still the directory verified above. */
	if (first != -ESTALE) {
		r = rmtree_remove(root_fd, ".", rec->topdir, true, top_id->dev, top_id->ino, first ? &scratch : reterr);
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
		return sl_err_replace(reterr, r, "cannot sync staging root %s: %s", rec->root, strerror(-r));
	return 0;
}

int stage_undo(struct sl_store *store, const struct store_record *rec, unsigned from_mask, enum sl_state done,
	       struct stage_undo_progress *progress, struct sl_error *reterr)
{
	_cleanup_free_ struct store_entry_page *page = NULL;
	_cleanup_close_ int root_fd = -1, top_fd = -1;
	struct fileid top_id;
	const char *why;
	bool one_page = false;
	int r, n;

	assert(reterr);
	sl_err_clear(reterr);
	why = stage_record_check(rec);
	if (why)
		return mark_stage_failed(store, rec, from_mask,
					 sl_err_replace(reterr, -EBADMSG, "record fails validation: %s", why), reterr);
	page = malloc(sizeof(*page));
	if (!page)
		return sl_err_replace(reterr, -ENOMEM, "%s", strerror(ENOMEM));
	n = validate_entries(store, rec, page, &one_page, reterr);
	if (n == -EBADMSG)
		return mark_stage_failed(store, rec, from_mask, n, reterr);
	if (n < 0)
		one_page = false; /* Unreadable log: the tree removal alone. */

	r = open_checked_root(rec, &root_fd, reterr);
	if (r == -ENOENT && root_fd >= 0 && faccessat(root_fd, rec->topdir, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		/* Gone with the old boot, yet something has its name now: not
		 * the stage's, and not ours to remove. */
		r = sl_err_replace(reterr, -ESTALE, "%s: not the directory the stage created; left alone", rec->topdir);
	else if (r == -ENOENT)
		return mark_stage_done(store, rec, from_mask, done, reterr);
	if (r < 0)
		return mark_stage_failed(store, rec, from_mask, r, reterr);

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
			return mark_stage_done(store, rec, from_mask, done, reterr);
	}
	if (r < 0)
		return mark_stage_failed(store, rec, from_mask, r, reterr);

	/* From here on the removal runs to its end whatever the store does. */
	r = remove_stage(store, rec, root_fd, TAKE_FD(top_fd), &top_id, page, one_page, n, progress, reterr);
	if (r < 0)
		return mark_stage_failed(store, rec, from_mask, r, reterr);
	return mark_stage_done(store, rec, from_mask, done, reterr);
}
