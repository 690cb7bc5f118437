/* SPDX-License-Identifier: MIT */
/*
 * test-crash.c: the crash matrix. A child stages the sample bundle and is
 * SIGKILLed at step k, for every step k of staging, of release and of
 * publish; then recovery runs and nothing of the stage may remain. The
 * compound sweep kills recovery itself at each of its steps and runs it
 * again. The number of steps comes from the fault seam, so a change that
 * adds a step grows the matrix by itself.
 */
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "entries-db.h"
#include "helpers.h"
#include "recover-private.h"
#include "stage-private.h"
#include "store-private.h"

enum path { PATH_READY, PATH_RELEASE, PATH_PUBLISH };

struct fixture {
	struct sandbox sb;
	char src[400];
	char dest[400];
	char *published; /* snapshot of a complete published stage */
	int64_t seen;    /* the newest stage record already judged */
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct sl_store *s = NULL;

	sandbox_init(&fx->sb);
	snprintf(fx->src, sizeof(fx->src), "%s/src", fx->sb.base);
	snprintf(fx->dest, sizeof(fx->dest), "%s/dest", fx->sb.base);
	make_sample_tree(fx->src);
	assert_int_equal(sl_store_open(fx->sb.db, &s, NULL), 0);
	sl_store_close(s);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	sandbox_finish(&fx->sb);
	free(fx->published);
	free(fx);
	return 0;
}

/* Runs in the child: stage the sample, then release or publish. */
static int child_stage(struct fixture *fx, enum path path)
{
	static const char config[] = "{\"process\":{\"env\":[\"TOKEN=" CANARY "\"]}}";
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	int r;

	r = sl_store_open(fx->sb.db, &s, NULL);
	if (r == 0)
		r = sl_stage_begin(s, fx->sb.root, &(struct sl_stage_options){ .label = "gw" }, &st, NULL);
	if (r == 0)
		r = sl_stage_copy_tree(st, AT_FDCWD, fx->src, "rootfs", NULL);
	if (r == 0)
		r = sl_stage_mkdir(st, "extra", 0750, NULL);
	if (r == 0)
		r = sl_stage_symlink(st, "rootfs/etc", "etc-link", NULL);
	if (r == 0)
		r = sl_stage_write_file(st, "config.json", config, sizeof(config) - 1, 0600, NULL);
	if (r == 0)
		r = sl_stage_ready(st, NULL);
	if (r == 0 && path == PATH_RELEASE)
		r = sl_stage_release(st, NULL);
	if (r == 0 && path == PATH_PUBLISH)
		r = sl_stage_publish(st, fx->dest, NULL);
	/* No cleanup on purpose: a ready stage must outlive its process. */
	return r == 0 ? 0 : 1;
}

/* Forks a child that runs fn and is killed at step kill_at (0: never).
 * Returns true when the kill happened. */
static bool run_killed(struct fixture *fx, enum path path, unsigned long kill_at, bool recovery)
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		memset(&fault_seam, 0, sizeof(fault_seam));
		fault_seam.kill_at = kill_at;
		if (recovery) {
			struct sl_store *s = NULL;
			struct sl_recover_report rep;
			if (sl_store_open(fx->sb.db, &s, NULL) < 0 || sl_recover_run(s, NULL, &rep, NULL) < 0)
				_exit(1);
			_exit(rep.n_failed ? 1 : 0);
		}
		_exit(child_stage(fx, path));
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status)) {
		assert_int_equal(WTERMSIG(status), SIGKILL);
		return true;
	}
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	return false;
}

static void recover_all(struct fixture *fx)
{
	struct sl_store *s = NULL;
	struct sl_recover_report rep;
	struct sl_error err = { 0 };

	assert_int_equal(sl_store_open(fx->sb.db, &s, &err), 0);
	assert_int_equal(sl_recover_run(s, NULL, &rep, &err), 0);
	if (rep.n_failed)
		fail_msg("recovery failed: %s", rep.failed[0].reason);
	assert_int_equal(rep.n_live, 0);
	sl_recover_report_finish(&rep);
	sl_store_close(s);
}

static int count_in_flight(struct fixture *fx)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int n;

	assert_int_equal(sqlite3_open(fx->sb.db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM stages WHERE state IN (0,1,2,5,7)", -1, &st,
					    NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

/* Log before create, as a crashed stager leaves it: every path under the
 * staging root is named by an entry committed to the store. */
static char **logged;
static size_t n_logged;
static size_t root_len;
static unsigned long unlogged;

static void add_logged(const struct db_entry *e, void *userdata)
{
	(void)userdata;
	logged = realloc(logged, (n_logged + 1) * sizeof(*logged));
	assert_non_null(logged);
	logged[n_logged] = strndup(e->path, e->len);
	assert_non_null(logged[n_logged++]);
}

static int check_logged(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	const char *rel = path + root_len + 1;
	bool found = false;

	(void)st;
	(void)flag;
	if (ftw->level == 0)
		return 0;
	for (size_t i = 0; i < n_logged && !found; i++)
		found = strcmp(logged[i], rel) == 0;
	if (!found) {
		printf("    not logged: %s\n", rel);
		unlogged++;
	}
	return 0;
}

static void assert_logged(struct fixture *fx, unsigned long k)
{
	struct stat st;

	if (stat(fx->sb.root, &st) < 0)
		return;
	sqlite3 *db;
	sqlite3_stmt *q;

	assert_int_equal(sqlite3_open(fx->sb.db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT rowid FROM stages", -1, &q, NULL), SQLITE_OK);
	while (sqlite3_step(q) == SQLITE_ROW)
		db_entries(db, sqlite3_column_int64(q, 0), add_logged, NULL);
	sqlite3_finalize(q);
	sqlite3_close(db);
	root_len = strlen(fx->sb.root);
	unlogged = 0;
	nftw(fx->sb.root, check_logged, 16, FTW_PHYS);
	for (size_t i = 0; i < n_logged; i++)
		free(logged[i]);
	free(logged);
	logged = NULL;
	n_logged = 0;
	if (unlogged)
		fail_msg("step %lu: %lu paths exist that the store does not name", k, unlogged);
}

/* The state of the newest stage record not judged before, or -1 when there
 * is none; it counts as judged from now on. */
static int newest_state(struct fixture *fx)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int state = -1;

	assert_int_equal(sqlite3_open(fx->sb.db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT state, rowid FROM stages WHERE rowid > ? ORDER BY rowid DESC LIMIT "
					    "1",
					    -1, &st, NULL),
			 SQLITE_OK);
	sqlite3_bind_int64(st, 1, fx->seen);
	if (sqlite3_step(st) == SQLITE_ROW) {
		state = sqlite3_column_int(st, 0);
		fx->seen = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return state;
}

/* After a crash and a recovery: nothing under the root, every record
 * final; for publish, the destination complete or absent, and present
 * exactly when the stage's record says published (a tree at its
 * destination that the store calls recovered is a tree stagelog forgot;
 * a published record without its tree lost it). */
static void assert_clean(struct fixture *fx, enum path path, unsigned long k)
{
	if (count_entries(fx->sb.root) != 0)
		fail_msg("step %lu: the root is not empty after recovery", k);
	assert_int_equal(count_in_flight(fx), 0);
	assert_false(tree_contains(fx->sb.base, "never"));
	if (path == PATH_PUBLISH) {
		struct stat st;
		int state = newest_state(fx);
		if (lstat(fx->dest, &st) == 0) {
			char *snap = tree_snapshot(fx->dest, false);
			if (strcmp(snap, fx->published) != 0)
				fail_msg("step %lu: destination is half there", k);
			free(snap);
			if (state != SL_STATE_PUBLISHED)
				fail_msg("step %lu: the tree is at its destination but its stage is %s, not published",
					 k, state < 0 ? "unrecorded" : sl_store_state_name((enum sl_state)state));
			remove_all(fx->dest);
		} else if (state == SL_STATE_PUBLISHED) {
			fail_msg("step %lu: the stage is published but its destination does not exist", k);
		}
	}
}

static unsigned long sweep(struct fixture *fx, enum path path)
{
	unsigned long k;

	if (path == PATH_PUBLISH && !fx->published) {
		/* A reference: a publish that was not interrupted. */
		assert_false(run_killed(fx, PATH_PUBLISH, 0, false));
		fx->published = tree_snapshot(fx->dest, false);
		assert_int_equal(newest_state(fx), SL_STATE_PUBLISHED);
		remove_all(fx->dest);
	}
	for (k = 1;; k++) {
		if (!run_killed(fx, path, k, false)) {
			/* Ran to the end: k is past the last step. */
			recover_all(fx);
			if (path == PATH_PUBLISH) {
				assert_clean(fx, path, k);
			} else {
				assert_clean(fx, path, k);
			}
			break;
		}
		assert_logged(fx, k);
		recover_all(fx);
		assert_clean(fx, path, k);
	}
	return k - 1;
}

static void test_crash_release(void **state)
{
	struct fixture *fx = *state;
	unsigned long n = sweep(fx, PATH_RELEASE);

	printf("crash matrix (stage + release): %lu crash points covered\n", n);
	assert_true(n >= 40);
}

static void test_crash_publish(void **state)
{
	struct fixture *fx = *state;
	unsigned long n = sweep(fx, PATH_PUBLISH);

	printf("crash matrix (stage + publish): %lu crash points covered\n", n);
	assert_true(n >= 30);
}

/*
 * The compound sweep: a stage is left behind (its stager killed once
 * mid-copy, or once ready), then recovery is killed at each of its steps j,
 * then run again, which must finish the job.
 */
static void test_crash_recovery(void **state)
{
	struct fixture *fx = *state;
	unsigned long total = 0;
	const unsigned long stager_kill[] = { 20, 0 };

	for (size_t v = 0; v < sizeof(stager_kill) / sizeof(stager_kill[0]); v++) {
		for (unsigned long j = 1;; j++) {
			if (stager_kill[v])
				assert_true(run_killed(fx, PATH_READY, stager_kill[v], false));
			else
				assert_false(run_killed(fx, PATH_READY, 0, false));
			assert_int_equal(count_in_flight(fx), 1);
			bool killed = run_killed(fx, PATH_READY, j, true);
			recover_all(fx);
			assert_clean(fx, PATH_READY, j);
			if (!killed)
				break;
			total++;
		}
	}
	printf("compound sweep: %lu recovery crash points covered\n", total);
	assert_true(total >= 20);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_crash_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_publish, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_recovery, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
