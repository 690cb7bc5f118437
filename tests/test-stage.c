/* SPDX-License-Identifier: MIT */
/* test-stage.c: staging calls, the copy, the finishing calls, fault
 * injection at every step, resource limits (file size, descriptors), and
 * the undo routine's basic safety. */
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "sl-recover.h"
#include "stage-private.h"
#include "store-private.h"

struct fixture {
	struct sandbox sb;
	struct sl_store *store;
	char src[400];
	char outside[400];
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct sl_error err = { 0 };

	sandbox_init(&fx->sb);
	assert_int_equal(sl_store_open(fx->sb.db, &fx->store, &err), 0);
	snprintf(fx->src, sizeof(fx->src), "%s/src", fx->sb.base);
	snprintf(fx->outside, sizeof(fx->outside), "%s/outside", fx->sb.base);
	make_sample_tree(fx->src);
	make_sample_tree(fx->outside);
	*state = fx;
	return 0;
}

/* The listing's bound as the library starts with it, for the teardown to
 * put back after a test that lowers it. */
static size_t default_copy_list_max;

static int teardown(void **state)
{
	struct fixture *fx = *state;
	memset(&fault_seam, 0, sizeof(fault_seam));
	stage_open_beneath_force_fallback(false);
	stage_copy_list_max = default_copy_list_max;
	sl_store_close(fx->store);
	sandbox_finish(&fx->sb);
	free(fx);
	return 0;
}

static enum sl_state state_of(struct sl_store *s, const char *id)
{
	struct store_record rec;
	assert_int_equal(store_stage_get(s, id, &rec, NULL), 0);
	return rec.state;
}

/* The ~20-path stage every fault and crash test uses: a copied tree, a
 * directory, a symlink and a secret-bearing file written last. */
static int stage_sample(struct fixture *fx, struct sl_stage **ret, struct sl_error *err)
{
	struct sl_stage *st = NULL;
	static const char config[] = "{\"process\":{\"env\":[\"TOKEN=" CANARY "\"]}}";
	int r;

	r = sl_stage_begin(fx->store, fx->sb.root, &(struct sl_stage_options){ .label = "gw" }, &st, err);
	if (r < 0)
		return r;
	if ((r = sl_stage_copy_tree(st, AT_FDCWD, fx->src, "rootfs", err)) < 0 ||
	    (r = sl_stage_mkdir(st, "extra", 0750, err)) < 0 ||
	    (r = sl_stage_symlink(st, "rootfs/etc", "etc-link", err)) < 0 ||
	    (r = sl_stage_write_file(st, "config.json", config, sizeof(config) - 1, 0600, err)) < 0 ||
	    (r = sl_stage_ready(st, err)) < 0) {
		*ret = st;
		return r;
	}
	*ret = st;
	return 0;
}

static void test_stage_success(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char path[1024], id[STORE_ID_LEN + 1];
	struct stat sb;

	assert_int_equal(stage_sample(fx, &st, &err), 0);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	assert_true(stage_id_valid(id));
	assert_int_equal(state_of(fx->store, id), SL_STATE_READY);

	/* The top directory: 0700, named LABEL-ID, locked. */
	snprintf(path, sizeof(path), "%s/gw-%s", fx->sb.root, id);
	assert_string_equal(sl_stage_path(st), path);
	assert_int_equal(lstat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700);
	int fd = open(path, O_RDONLY | O_DIRECTORY);
	assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), -1);
	close(fd);

	/* The copy equals its source: names, kinds, modes, owners, contents,
	 * mtimes. */
	char *a = tree_snapshot(fx->src, true);
	snprintf(path, sizeof(path), "%s/gw-%s/rootfs", fx->sb.root, id);
	char *b = tree_snapshot(path, true);
	assert_string_equal(a, b);
	free(a);
	free(b);

	snprintf(path, sizeof(path), "%s/gw-%s/config.json", fx->sb.root, id);
	assert_int_equal(lstat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
	assert_true(file_contains(path, CANARY));
	snprintf(path, sizeof(path), "%s/gw-%s/extra", fx->sb.root, id);
	assert_int_equal(lstat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0750);
	snprintf(path, sizeof(path), "%s/gw-%s/etc-link", fx->sb.root, id);
	assert_int_equal(lstat(path, &sb), 0);
	assert_true(S_ISLNK(sb.st_mode));

	/* Every path was logged: 1 top + 21 copied + 3 more. */
	struct store_record rec;
	assert_int_equal(store_stage_get(fx->store, id, &rec, NULL), 0);
	assert_true(rec.have_inode);
	int total = 0, n;
	int64_t seq = -1;
	struct store_entry_page *page = malloc(sizeof(*page));
	while ((n = store_entries_page(fx->store, rec.rowid, false, seq, page, NULL)) > 0) {
		total += n;
		seq = page->e[n - 1].seq;
	}
	free(page);
	assert_int_equal(total, 1 + 1 + 21 + 3); /* top, marker, copies, more */

	assert_int_equal(sl_stage_release(st, &err), 0);
	assert_int_equal(state_of(fx->store, id), SL_STATE_RELEASED);
	assert_int_equal(count_entries(fx->sb.root), 0);
	/* Release is idempotent. */
	assert_int_equal(sl_stage_release_id(fx->store, id, &err), 0);
	sl_stage_free(st);
	assert_false(tree_contains(fx->sb.base, "never-there"));
}

/* The copy walk without the logging walk's listing (a tree past its
 * bound reads every directory again): the same copy. */
static void test_copy_listing_bound(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char path[1024];

	stage_copy_list_max = 64; /* less than the sample tree's listing */
	assert_int_equal(stage_sample(fx, &st, &err), 0);
	char *a = tree_snapshot(fx->src, true);
	snprintf(path, sizeof(path), "%s/rootfs", sl_stage_path(st));
	char *b = tree_snapshot(path, true);
	assert_string_equal(a, b);
	free(a);
	free(b);
	assert_int_equal(sl_stage_release(st, &err), 0);
	sl_stage_free(st);
	assert_int_equal(count_entries(fx->sb.root), 0);
}

struct swap {
	char path[600];
	bool to_dir, done;
};

/* Once the source is listed (the first call), turns a file of it into a
 * directory or a directory into a file. */
static void swap_after_listing(const struct sl_progress *p, void *userdata)
{
	struct swap *w = userdata;

	if (w->done || p->done != 0)
		return;
	w->done = true;
	if (w->to_dir) {
		assert_int_equal(unlink(w->path), 0);
		assert_int_equal(mkdir(w->path, 0755), 0);
		char sub[700];
		snprintf(sub, sizeof(sub), "%s/never-there", w->path);
		write_path(sub, "x", 0644);
	} else {
		char sub[700];
		snprintf(sub, sizeof(sub), "%s/doc/README", w->path);
		assert_int_equal(unlink(sub), 0);
		snprintf(sub, sizeof(sub), "%s/doc", w->path);
		assert_int_equal(rmdir(sub), 0);
		assert_int_equal(rmdir(w->path), 0);
		write_path(w->path, "x", 0644);
	}
}

/* A name whose kind changed between the logging walk and the copy walk is
 * refused (the listing's next names would be read as another directory's)
 * and the stage aborted, nothing of it left. */
static void test_copy_source_changed(void **state)
{
	struct fixture *fx = *state;

	for (int k = 0; k < 2; k++) {
		struct swap w = { .to_dir = k == 0 };
		struct sl_stage_options o = { .progress = swap_after_listing, .progress_userdata = &w };
		struct sl_error err = { 0 };
		struct sl_stage *st = NULL;

		snprintf(w.path, sizeof(w.path), "%s/%s", fx->src, k == 0 ? "var/lib/state" : "usr/share");
		assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, &o, &st, &err), 0);
		assert_int_equal(sl_stage_copy_tree(st, AT_FDCWD, fx->src, "rootfs", &err), -EBADMSG);
		assert_true(w.done);
		assert_non_null(strstr(err.msg, "changed while it was copied"));
		assert_int_equal(state_of(fx->store, sl_stage_id(st)), SL_STATE_ABORTED);
		sl_stage_free(st);
		assert_int_equal(count_entries(fx->sb.root), 0);
		assert_false(tree_contains(fx->sb.root, "never-there"));
	}
}

static void test_abort_and_free(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char id[STORE_ID_LEN + 1];

	assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, NULL, &st, &err), 0);
	assert_int_equal(sl_stage_copy_tree(st, AT_FDCWD, fx->src, "rootfs", &err), 0);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	assert_int_equal(sl_stage_abort(st, &err), 0);
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_int_equal(state_of(fx->store, id), SL_STATE_ABORTED);
	sl_stage_free(st);

	/* Freeing an unfinished stage aborts it. */
	st = NULL;
	assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, NULL, &st, &err), 0);
	assert_int_equal(sl_stage_mkdir(st, "d", 0755, &err), 0);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	sl_stage_free(st);
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_int_equal(state_of(fx->store, id), SL_STATE_ABORTED);
}

/* The number of stage records in state (-1: any) in the store at path. */
static int count_records(const char *path, int state)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	char sql[128];
	int n;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM stages WHERE %d IN (-1, state)", state);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

/* Runs fn(fx) in a child and returns its exit status: resource limits
 * stay with the child. */
static int in_child(struct fixture *fx, int (*fn)(struct fixture *))
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(fn(fx));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* Under a file size limit, with SIGXFSZ ignored as the CLI does, a write
 * past it is an ordinary EFBIG: the copy's and the file writer's. */
static int stage_past_fsize(struct fixture *fx)
{
	struct rlimit rl = { 128 * 1024, 128 * 1024 };
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	struct sl_error err = { 0 };
	static char big[256 * 1024];
	int r;

	signal(SIGXFSZ, SIG_IGN);
	if (sl_store_open(fx->sb.db, &s, NULL) < 0 || setrlimit(RLIMIT_FSIZE, &rl) < 0)
		return 10;
	memcpy(big, CANARY, strlen(CANARY));
	if (sl_stage_begin(s, fx->sb.root, NULL, &st, &err) < 0)
		return 11;
	r = sl_stage_write_file(st, "config.json", big, sizeof(big), 0600, &err);
	if (r != -EFBIG || err.code != -EFBIG || strstr(err.msg, CANARY) || !strstr(err.msg, "config.json"))
		return 12;
	sl_stage_free(st);
	err = (struct sl_error){ 0 };
	if (sl_stage_begin(s, fx->sb.root, NULL, &st, &err) < 0)
		return 13;
	r = sl_stage_copy_tree(st, AT_FDCWD, fx->outside, "rootfs", &err);
	if (r != -EFBIG || !strstr(err.msg, "rootfs/big"))
		return 14;
	sl_stage_free(st);
	sl_store_close(s);
	return 0;
}

static void test_file_size_limit(void **state)
{
	struct fixture *fx = *state;
	char path[500];
	int fd;

	snprintf(path, sizeof(path), "%s/big", fx->outside);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 256 * 1024), 0);
	close(fd);
	assert_int_equal(in_child(fx, stage_past_fsize), 0);
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_int_equal(count_records(fx->sb.db, -1), 2);
	assert_int_equal(count_records(fx->sb.db, SL_STATE_ABORTED), 2);
}

/* soft = hard = 20 descriptors: too few for a stage's undo, refused before
 * anything exists; soft 20 under a higher hard limit: raised, and the
 * stage goes ahead. */
static int begin_with_few_fds(struct fixture *fx)
{
	struct rlimit rl = { 20, 20 };
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	struct sl_error err = { 0 };

	if (sl_store_open(fx->sb.db, &s, NULL) < 0 || setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 10;
	if (sl_stage_begin(s, fx->sb.root, NULL, &st, &err) != -EMFILE || err.code != -EMFILE ||
	    !strstr(err.msg, "too few file descriptors"))
		return 11;
	sl_store_close(s);
	return access(fx->sb.root, F_OK) == 0 ? 12 : 0;
}

static int begin_with_low_soft_limit(struct fixture *fx)
{
	struct rlimit rl;
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	struct sl_error err = { 0 };

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_max < 200)
		return 77;
	rl.rlim_cur = 20;
	if (sl_store_open(fx->sb.db, &s, NULL) < 0 || setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 10;
	if (sl_stage_begin(s, fx->sb.root, NULL, &st, &err) < 0 ||
	    sl_stage_copy_tree(st, AT_FDCWD, fx->src, "rootfs", &err) < 0 || sl_stage_ready(st, &err) < 0 ||
	    sl_stage_release(st, &err) < 0)
		return 11;
	sl_stage_free(st);
	sl_store_close(s);
	/* Raised by what was missing, no more than needed. */
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur <= 20 || rl.rlim_cur > 20 + STAGE_RESERVE_FDS)
		return 12;
	return 0;
}

static void test_descriptor_reserve(void **state)
{
	struct fixture *fx = *state;
	int r;

	assert_int_equal(in_child(fx, begin_with_few_fds), 0);
	assert_int_equal(count_records(fx->sb.db, -1), 0);
	r = in_child(fx, begin_with_low_soft_limit);
	if (r == 77)
		skip();
	assert_int_equal(r, 0);
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_int_equal(count_records(fx->sb.db, SL_STATE_RELEASED), 1);
}

static void test_failed_call_aborts(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char id[STORE_ID_LEN + 1];

	assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, NULL, &st, &err), 0);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	assert_int_equal(sl_stage_mkdir(st, "d", 0755, &err), 0);
	/* Creating over an existing path fails, and the stage is aborted. */
	assert_int_equal(sl_stage_mkdir(st, "d", 0755, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "stage-"));
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_int_equal(state_of(fx->store, id), SL_STATE_ABORTED);
	/* Further calls refuse. */
	assert_int_equal(sl_stage_mkdir(st, "e", 0755, NULL), -EINVAL);
	sl_stage_free(st);

	/* A path escaping the stage is refused before anything. */
	st = NULL;
	memset(&err, 0, sizeof(err));
	assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, NULL, &st, &err), 0);
	assert_int_equal(sl_stage_write_file(st, "../x", "a", 1, 0600, &err), -EINVAL);
	assert_int_equal(count_entries(fx->sb.root), 0);
	sl_stage_free(st);

	/* A source with a FIFO is refused with a clear error. */
	char fifo[600];
	snprintf(fifo, sizeof(fifo), "%s/etc/fifo", fx->src);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	st = NULL;
	memset(&err, 0, sizeof(err));
	assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, NULL, &st, &err), 0);
	assert_int_equal(sl_stage_copy_tree(st, AT_FDCWD, fx->src, "rootfs", &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "FIFO"));
	assert_int_equal(count_entries(fx->sb.root), 0);
	sl_stage_free(st);
}

static void test_publish(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char dest[600], id[STORE_ID_LEN + 1];

	snprintf(dest, sizeof(dest), "%s/published", fx->sb.base);
	assert_int_equal(stage_sample(fx, &st, &err), 0);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	/* Never onto an existing path. */
	assert_int_equal(sl_stage_publish(st, fx->outside, &err), -EEXIST);
	assert_true(err.flags & SL_ERROR_CANTCREAT);
	assert_int_equal(state_of(fx->store, id), SL_STATE_READY);
	memset(&err, 0, sizeof(err));
	assert_int_equal(sl_stage_publish(st, dest, &err), 0);
	assert_int_equal(state_of(fx->store, id), SL_STATE_PUBLISHED);
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_true(file_contains(strcat(dest, "/config.json"), CANARY));
	/* A published stage belongs to its destination: release refuses. */
	assert_int_equal(sl_stage_release_id(fx->store, id, &err), -EINVAL);
	sl_stage_free(st);
}

static void test_unsafe_roots(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char root[600];

	/* A symlink as the root. */
	snprintf(root, sizeof(root), "%s/linkroot", fx->sb.base);
	assert_int_equal(symlink(fx->outside, root), 0);
	assert_int_equal(sl_stage_begin(fx->store, root, NULL, &st, &err), -ELOOP);
	assert_true(err.flags & SL_ERROR_CANTCREAT);
	/* A world-writable root. */
	snprintf(root, sizeof(root), "%s/open", fx->sb.base);
	make_dir(root, 0777);
	memset(&err, 0, sizeof(err));
	assert_int_equal(sl_stage_begin(fx->store, root, NULL, &st, &err), -EPERM);
	assert_int_equal(count_entries(root), 0);
	/* A bad label. */
	assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, &(struct sl_stage_options){ .label = "Bad" }, &st,
					NULL),
			 -EINVAL);
	/* A root spelt with "//", "." and a trailing slash is recorded as the
	 * one directory it names. */
	char messy[700];
	snprintf(messy, sizeof(messy), "%s//./root/", fx->sb.base);
	assert_int_equal(sl_stage_begin(fx->store, messy, NULL, &st, &err), 0);
	assert_int_equal(strncmp(sl_stage_path(st), fx->sb.root, strlen(fx->sb.root)), 0);
	assert_int_equal(sl_stage_path(st)[strlen(fx->sb.root)], '/');
	sl_stage_free(st);
	remove_all(fx->sb.root);
	/* A missing root is created 0700. */
	struct stat sb;
	assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, NULL, &st, &err), 0);
	assert_int_equal(stat(fx->sb.root, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700);
	sl_stage_free(st);
}

/*
 * Fault injection: every filesystem call and every store commit of the
 * sample stage fails in turn, with ENOSPC, EIO and EACCES. Each run must
 * return that error, leave nothing under the root, say nothing secret and
 * leave its record aborted (or no record, when the very first commit
 * failed).
 */
static void test_fault_every_step(void **state)
{
	struct fixture *fx = *state;
	const int errs[] = { ENOSPC, EIO, EACCES };
	unsigned long total = 0, steps;

	for (size_t e = 0; e < sizeof(errs) / sizeof(errs[0]); e++) {
		for (unsigned long k = 1;; k++) {
			struct sl_error err = { 0 };
			struct sl_stage *st = NULL;
			int r;

			memset(&fault_seam, 0, sizeof(fault_seam));
			fault_seam.fail_at = k;
			fault_seam.fail_errno = errs[e];
			r = stage_sample(fx, &st, &err);
			steps = fault_seam.steps;
			memset(&fault_seam, 0, sizeof(fault_seam));
			if (r == 0) {
				/* Past the last step of staging: the fault
				 * hit nothing (or hit release, below). */
				assert_true(k > steps);
				assert_int_equal(sl_stage_release(st, &err), 0);
				sl_stage_free(st);
				break;
			}
			total++;
			assert_int_equal(r, -errs[e]);
			assert_true(err.code < 0);
			assert_non_null(strstr(err.msg, strerror(errs[e])));
			assert_null(strstr(err.msg, CANARY));
			assert_int_equal(count_entries(fx->sb.root), 0);
			if (st) {
				assert_int_equal(state_of(fx->store, sl_stage_id(st)), SL_STATE_ABORTED);
				sl_stage_free(st);
			}
		}
	}
	printf("fault injection: %lu failure points covered (3 errnos x %lu steps)\n", total, total / 3);
	assert_true(total >= 3 * 40);
}

/* Faults during release: the stage is left failed with a reason, and a
 * second release finishes it. */
static void test_fault_in_release(void **state)
{
	struct fixture *fx = *state;
	unsigned long covered = 0;

	for (unsigned long k = 1;; k++) {
		struct sl_error err = { 0 };
		struct sl_stage *st = NULL;
		char id[STORE_ID_LEN + 1];
		int r;

		assert_int_equal(stage_sample(fx, &st, &err), 0);
		snprintf(id, sizeof(id), "%s", sl_stage_id(st));
		memset(&fault_seam, 0, sizeof(fault_seam));
		fault_seam.fail_at = k;
		fault_seam.fail_errno = EIO;
		r = sl_stage_release(st, &err);
		unsigned long steps = fault_seam.steps;
		memset(&fault_seam, 0, sizeof(fault_seam));
		sl_stage_free(st);
		if (r == 0 && k > steps) {
			assert_int_equal(count_entries(fx->sb.root), 0);
			break;
		}
		covered++;
		if (r == 0) {
			/* The store failed before the removal began: the
			 * removal went on regardless and the record caught
			 * up at its end. */
			assert_int_equal(count_entries(fx->sb.root), 0);
			assert_int_equal(state_of(fx->store, id), SL_STATE_RELEASED);
			continue;
		}
		assert_int_equal(r, -EIO);
		assert_null(strstr(err.msg, CANARY));
		enum sl_state s = state_of(fx->store, id);
		assert_true(s == SL_STATE_FAILED || s == SL_STATE_READY || s == SL_STATE_RELEASING);
		memset(&err, 0, sizeof(err));
		assert_true(sl_stage_release_id(fx->store, id, &err) >= 0);
		assert_int_equal(count_entries(fx->sb.root), 0);
		assert_int_equal(state_of(fx->store, id), SL_STATE_RELEASED);
	}
	printf("release faults: %lu points covered\n", covered);
	assert_true(covered >= 20);
}

struct entry_states {
	int removed, logged;
};

static int count_entry_states(const struct sl_entry_info *e, void *userdata)
{
	struct entry_states *es = userdata;

	if (strcmp(e->state, "removed") == 0)
		es->removed++;
	else if (strcmp(e->state, "logged") == 0)
		es->logged++;
	return 0;
}

/* A stage of three pages of entries (300 files): faults at every step of
 * its release, each followed by a release that must finish the job, and
 * every entry reported removed in the end. */
static void test_fault_in_multipage_release(void **state)
{
	struct fixture *fx = *state;
	char big[600];
	unsigned long covered = 0;

	snprintf(big, sizeof(big), "%s/big", fx->sb.base);
	make_dir(big, 0755);
	for (int i = 0; i < 300; i++) {
		char p[700];
		snprintf(p, sizeof(p), "%s/d%d/f%d", big, i / 100, i);
		write_path(p, "x", 0644);
	}
	for (unsigned long k = 1;; k += 7) {
		struct sl_error err = { 0 };
		struct sl_stage *st = NULL;
		struct store_record rec;
		char id[STORE_ID_LEN + 1];
		int r;

		assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, NULL, &st, &err), 0);
		assert_int_equal(sl_stage_copy_tree(st, AT_FDCWD, big, "big", &err), 0);
		assert_int_equal(sl_stage_ready(st, &err), 0);
		snprintf(id, sizeof(id), "%s", sl_stage_id(st));
		memset(&fault_seam, 0, sizeof(fault_seam));
		fault_seam.fail_at = k;
		fault_seam.fail_errno = EIO;
		r = sl_stage_release(st, &err);
		unsigned long steps = fault_seam.steps;
		memset(&fault_seam, 0, sizeof(fault_seam));
		sl_stage_free(st);
		if (r < 0) {
			struct entry_states failed = { 0 };

			covered++;
			assert_int_equal(r, -EIO);
			/* A removal cut short proves nothing gone: show says
			 * "logged" for every entry until a removal finishes. */
			assert_int_equal(sl_recover_show(fx->store, id, NULL, count_entry_states, &failed, &err), 0);
			assert_int_equal(failed.removed, 0);
			assert_int_equal(failed.logged, 1 + 1 + 1 + 3 + 300);
			assert_true(sl_stage_release_id(fx->store, id, &err) >= 0);
		}
		assert_int_equal(count_entries(fx->sb.root), 0);
		assert_int_equal(store_stage_get(fx->store, id, &rec, NULL), 0);
		assert_int_equal(rec.state, SL_STATE_RELEASED);
		/* show reports every entry removed: none left logged. */
		struct entry_states es = { 0 };
		assert_int_equal(sl_recover_show(fx->store, id, NULL, count_entry_states, &es, &err), 0);
		assert_int_equal(es.removed, 1 + 1 + 1 + 3 + 300);
		assert_int_equal(es.logged, 0);
		if (r == 0 && k > steps)
			break;
	}
	printf("multi-page release faults: %lu points covered\n", covered);
	assert_true(covered >= 40);
}

/* Long names fill a page of entries before its 128 rows: each page must
 * end before a path that does not fit, never cut it (a cut path would fail
 * validation, or name another file). */
static void test_long_paths_release(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char dir[600], name[200];

	snprintf(dir, sizeof(dir), "%s/long/%0200d", fx->sb.base, 7);
	make_dir(dir, 0755);
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	for (int i = 0; i < 200; i++) {
		char p[900];
		snprintf(p, sizeof(p), "%s/%03d.%s", dir, i, name + 10);
		write_path(p, CANARY, 0600);
	}
	snprintf(dir, sizeof(dir), "%s/long", fx->sb.base);
	assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, NULL, &st, &err), 0);
	assert_int_equal(sl_stage_copy_tree(st, AT_FDCWD, dir, "long", &err), 0);
	assert_int_equal(sl_stage_ready(st, &err), 0);
	if (sl_stage_release(st, &err) != 0)
		fail_msg("release of long paths: %s", err.msg);
	assert_int_equal(count_entries(fx->sb.root), 0);
	sl_stage_free(st);

	/* "/" itself is no staging root. */
	assert_int_equal(sl_stage_begin(fx->store, "/", NULL, &st, &err), -EINVAL);
}

/* ---- undo basics ---- */

static void snapshot_outside(struct fixture *fx, char **ret)
{
	*ret = tree_snapshot(fx->outside, true);
}

static void test_undo_symlink_swap(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char path[1024], *before, *after;

	snapshot_outside(fx, &before);
	for (int fallback = 0; fallback < 2; fallback++) {
		stage_open_beneath_force_fallback(fallback);
		st = NULL;
		assert_int_equal(stage_sample(fx, &st, &err), 0);
		/* A staged directory replaced by a symlink to the canaries. */
		snprintf(path, sizeof(path), "%s/rootfs/etc", sl_stage_path(st));
		remove_all(path);
		assert_int_equal(symlink(fx->outside, path), 0);
		snprintf(path, sizeof(path), "%s/rootfs/usr/share", sl_stage_path(st));
		remove_all(path);
		snprintf(path, sizeof(path), "%s/etc", fx->outside);
		char link[1024];
		snprintf(link, sizeof(link), "%s/rootfs/usr/share", sl_stage_path(st));
		assert_int_equal(symlink(path, link), 0);
		assert_int_equal(sl_stage_release(st, &err), 0);
		sl_stage_free(st);
		assert_int_equal(count_entries(fx->sb.root), 0);
		snapshot_outside(fx, &after);
		assert_string_equal(before, after);
		free(after);
	}
	free(before);
}

/* Symlinks the log does not know (a runtime made them) to directories
 * outside, found by the tree walk: in the top directory and in a staged
 * directory. Each loses its name; nothing is followed. */
static void test_undo_runtime_symlinks(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char path[1024], target[1024], *before, *after;

	snapshot_outside(fx, &before);
	assert_int_equal(stage_sample(fx, &st, &err), 0);
	snprintf(path, sizeof(path), "%s/runtime-link", sl_stage_path(st));
	assert_int_equal(symlink(fx->outside, path), 0);
	snprintf(target, sizeof(target), "%s/etc", fx->outside);
	snprintf(path, sizeof(path), "%s/rootfs/var/runtime-link", sl_stage_path(st));
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(sl_stage_release(st, &err), 0);
	sl_stage_free(st);
	assert_int_equal(count_entries(fx->sb.root), 0);
	snapshot_outside(fx, &after);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

static void test_undo_readonly_fifo_hardlink(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char path[1024], target[1024], *before, *after;

	snapshot_outside(fx, &before);
	assert_int_equal(stage_sample(fx, &st, &err), 0);
	/* A FIFO (never opened: the undo would hang), a hard link to an
	 * outside file (only the link goes), read-only directories. */
	snprintf(path, sizeof(path), "%s/rootfs/var/fifo", sl_stage_path(st));
	assert_int_equal(mkfifo(path, 0600), 0);
	snprintf(target, sizeof(target), "%s/etc/passwd", fx->outside);
	snprintf(path, sizeof(path), "%s/rootfs/var/hardlink", sl_stage_path(st));
	assert_int_equal(link(target, path), 0);
	snprintf(path, sizeof(path), "%s/rootfs/var/lib", sl_stage_path(st));
	assert_int_equal(chmod(path, 0500), 0);
	snprintf(path, sizeof(path), "%s/rootfs/usr/share/doc", sl_stage_path(st));
	assert_int_equal(chmod(path, 0000), 0);
	snprintf(path, sizeof(path), "%s/rootfs/usr", sl_stage_path(st));
	assert_int_equal(chmod(path, 0500), 0);
	assert_int_equal(sl_stage_release(st, &err), 0);
	sl_stage_free(st);
	assert_int_equal(count_entries(fx->sb.root), 0);
	snapshot_outside(fx, &after);
	assert_string_equal(before, after);
	struct stat sb;
	assert_int_equal(stat(target, &sb), 0);
	assert_int_equal(sb.st_nlink, 1);
	free(before);
	free(after);
}

static void test_undo_top_replaced(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	char path[1024], moved[1024], *before, *after;

	assert_int_equal(stage_sample(fx, &st, &err), 0);
	/* The top directory swapped for another directory: not ours. */
	snprintf(path, sizeof(path), "%s", sl_stage_path(st));
	snprintf(moved, sizeof(moved), "%s/moved", fx->sb.base);
	assert_int_equal(rename(path, moved), 0);
	make_sample_tree(path);
	before = tree_snapshot(path, true);
	char id[STORE_ID_LEN + 1];
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	assert_int_equal(sl_stage_release(st, &err), -ESTALE);
	assert_non_null(strstr(err.msg, "left alone"));
	assert_int_equal(state_of(fx->store, id), SL_STATE_FAILED);
	after = tree_snapshot(path, true);
	assert_string_equal(before, after);
	sl_stage_free(st);
	free(before);
	free(after);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stage_success, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_and_free, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_listing_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_source_changed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_call_aborts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_size_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_descriptor_reserve, setup, teardown),
		cmocka_unit_test_setup_teardown(test_publish, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsafe_roots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_every_step, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_in_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_in_multipage_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_paths_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo_symlink_swap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo_runtime_symlinks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo_readonly_fifo_hardlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo_top_replaced, setup, teardown),
	};
	default_copy_list_max = stage_copy_list_max;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
