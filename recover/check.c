/* SPDX-License-Identifier: MIT */
/*
 * check.c: the store's integrity, in-flight stages whose root moved, and
 * the scan of staging roots for orphans: stage directories that this
 * store's marker names and no record owns, removed on request with the
 * stage undo's safe tree removal. A directory the store cannot vouch for is
 * never an orphan.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "recover-private.h"

struct roots {
	char **v;
	size_t n;
};

static int add_root(const char *root, void *userdata)
{
	struct roots *rs = userdata;
	char **v;

	for (size_t i = 0; i < rs->n; i++)
		if (strcmp(rs->v[i], root) == 0)
			return 0;
	v = realloc(rs->v, (rs->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	rs->v = v;
	rs->v[rs->n] = strdup(root);
	if (!rs->v[rs->n])
		return -ENOMEM;
	rs->n++;
	return 0;
}

static int push_path(char ***arr, size_t *n, const char *root, const char *name)
{
	char **a = realloc(*arr, (*n + 1) * sizeof(**arr));

	if (!a)
		return -ENOMEM;
	*arr = a;
	if (asprintf(&a[*n], "%s/%s", strcmp(root, "/") ? root : "", name) < 0)
		return -ENOMEM;
	(*n)++;
	return 0;
}

/* True when name looks like a stage directory, LABEL-ID; then id and label
 * hold its parts. */
static bool split_stage_dir(const char *name, char id[STORE_ID_LEN + 1], char label[LABEL_MAX + 1])
{
	size_t len = strlen(name);

	if (len < STORE_ID_LEN + 2 || len > LABEL_MAX + 1 + STORE_ID_LEN || name[len - STORE_ID_LEN - 1] != '-')
		return false;
	memcpy(id, name + len - STORE_ID_LEN, STORE_ID_LEN + 1);
	memcpy(label, name, len - STORE_ID_LEN - 1);
	label[len - STORE_ID_LEN - 1] = '\0';
	return stage_id_valid(id) && label_valid(label);
}

/*
 * Whether root_fd/name is an orphan of this store (docs/design.md,
 * "Identity"): a directory that carries this store's marker for the id its
 * name holds, that no in-flight or published record owns, and whose lock
 * nobody holds. A directory without a marker, or with another store's,
 * belongs to someone else (another store, a mistyped --db); one the store
 * cannot judge is never an orphan either. 1, 0, or a negative errno.
 */
static int orphan(struct sl_store *store, int root_fd, const char *name, const char *id)
{
	_cleanup_close_ int fd = -1;
	struct store_record rec;
	struct stage_marker m;
	int r;

	fd = openat(root_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (stage_marker_read(fd, &m) < 0 || !stage_marker_names(&m, id, store_identity(store)))
		return 0;
	r = store_stage_get(store, id, &rec, NULL);
	if (r == 0)
		return !sl_store_state_in_flight(rec.state) && rec.state != SL_STATE_PUBLISHED &&
		       strcmp(rec.topdir, name) == 0;
	if (r != -ENOENT)
		return r;
	/* A live stager or runtime holds the lock (its record may be in a
	 * store this one cannot see). */
	return flock(fd, LOCK_SH | LOCK_NB) == 0;
}

/* Removes one orphan with the undo's safe tree removal, unless someone
 * holds it locked (a live stager or runtime whose record is in another
 * store); the lock is held while the removal runs. True when it is gone. */
static bool remove_orphan(int root_fd, const char *name, const struct stat *st)
{
	_cleanup_close_ int top = -1;
	struct sl_error ignored = { 0 };

	top = openat(root_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (top < 0 || stage_try_lock(top) < 0)
		return false;
	if (rmtree_remove(root_fd, ".", name, true, st->st_dev, st->st_ino, &ignored) < 0)
		return false;
	(void)fsync(root_fd);
	return true;
}

static int scan_root(struct sl_store *store, const char *root, bool remove, struct sl_check_report *rep)
{
	_cleanup_close_ int root_fd = -1;
	struct dirent *de;
	_cleanup_closedir_ DIR *d = NULL;
	int fd, r = stage_open_root(root, &root_fd);

	if (r == -ENOENT)
		return 0;
	/* A symlink or a file given as a root is missing input, not bad data. */
	if (r == -ELOOP)
		return -ENOTDIR;
	if (r < 0)
		return r;
	fd = dup(root_fd);
	d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		r = negerrno();
		(void)safe_close(fd);
		return r;
	}
	while ((de = readdir(d))) {
		char id[STORE_ID_LEN + 1], label[LABEL_MAX + 1];
		struct stat st;
		int o;

		if (!split_stage_dir(de->d_name, id, label))
			continue;
		/* A tree published here looks like a stage directory, but
		 * publish took its marker: never an orphan. */
		o = orphan(store, root_fd, de->d_name, id);
		if (o < 0) {
			r = o; /* The store cannot say: never an orphan. */
			continue;
		}
		if (o == 0 || fstatat(root_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			continue;
		if (push_path(&rep->orphans, &rep->n_orphans, root, de->d_name) < 0) {
			r = -ENOMEM;
			break;
		}
		if (remove && st.st_uid == geteuid() && remove_orphan(root_fd, de->d_name, &st) &&
		    push_path(&rep->removed, &rep->n_removed, root, de->d_name) < 0) {
			r = -ENOMEM;
			break;
		}
	}
	return r < 0 ? r : 0;
}

/* Notes an in-flight stage whose root path now leads elsewhere. */
static int check_root_of(const struct store_record *rec, void *userdata)
{
	struct sl_check_report *rep = userdata;
	char(*v)[SL_ID_SIZE];

	if (stage_record_check(rec) || stage_root_check(rec) != -ESTALE)
		return 0;
	v = realloc(rep->root_moved, (rep->n_root_moved + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	rep->root_moved = v;
	snprintf(v[rep->n_root_moved++], SL_ID_SIZE, "%s", rec->id);
	return 0;
}

int sl_recover_check(struct sl_store *store, const char *const *roots, size_t n_roots, unsigned flags,
		     struct sl_check_report *report, struct sl_error *reterr)
{
	struct roots rs = { 0 };
	size_t n_named;
	bool remove;
	int r, first = 0;

	if (!store || !report)
		return sl_err(reterr, -EINVAL, "cannot check: missing argument");
	memset(report, 0, sizeof(*report));
	r = store_quick_check(store, report->integrity, sizeof(report->integrity), reterr);
	if (r < 0)
		return r;
	r = store_stage_scan(store, check_root_of, report, reterr);
	if (r < 0)
		return r == -ENOMEM ? sl_err(reterr, r, "cannot check: %s", strerror(ENOMEM)) : r;
	/* Orphans are judged by the store: a store that is not sound cannot
	 * vouch that a directory is nobody's, so nothing is removed. */
	remove = (flags & SL_CHECK_REMOVE_ORPHANS) && strcmp(report->integrity, "ok") == 0;
	if (remove) {
		r = stage_reserve_fds("check", reterr);
		if (r < 0)
			return r;
	}
	/* A root the caller names is scanned by its canonical path: any
	 * spelling of one directory is that directory. */
	for (size_t i = 0; i < n_roots && r == 0; i++) {
		char canon[PATH_MAX];

		r = add_root(stage_canonical_root(roots[i], canon, sizeof(canon)) == 0 ? canon : roots[i], &rs);
	}
	n_named = rs.n;
	if ((flags & SL_CHECK_RECORD_ROOTS) && r == 0)
		r = store_roots_foreach(store, add_root, &rs, reterr);
	/* Every root is scanned even when one fails; the first failure is
	 * the one reported. */
	for (size_t i = 0; i < rs.n && r == 0; i++) {
		int k = scan_root(store, rs.v[i], remove, report);
		/* A recorded root that is no longer a directory is the failed
		 * stages' business (reported with them), not a reason to stop;
		 * one the caller named must be a directory. */
		if (k == -ENOTDIR && i >= n_named)
			k = 0;
		if (k < 0 && first == 0) {
			first = k;
			sl_err(reterr, k, "cannot check: %s: %s", rs.v[i], strerror(-k));
		}
	}
	for (size_t i = 0; i < rs.n; i++)
		free(rs.v[i]);
	free(rs.v);
	if (r == -ENOMEM)
		sl_err(reterr, r, "cannot check: %s", strerror(ENOMEM));
	return r < 0 ? r : first;
}

void sl_recover_check_report_finish(struct sl_check_report *report)
{
	if (!report)
		return;
	free(report->root_moved);
	for (size_t i = 0; i < report->n_orphans; i++)
		free(report->orphans[i]);
	for (size_t i = 0; i < report->n_removed; i++)
		free(report->removed[i]);
	free(report->orphans);
	free(report->removed);
	memset(report, 0, sizeof(*report));
}
