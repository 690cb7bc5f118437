/* SPDX-License-Identifier: MIT */
/*
 * test-concurrency.c: four processes stage and release in loops on one
 * store and one root, a recovery loop runs beside them, and workers are
 * SIGKILLed at random moments and replaced. No live stage may be touched
 * (each worker checks its whole tree before releasing it), no call may fail
 * (a busy store included), and in the end every killed worker's stage is
 * recovered: the root is empty and no record is in flight.
 */
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "sl-recover.h"
#include "stage-private.h"
#include "store-private.h"

#define WORKERS 4
#define RUN_SECONDS 6

/* Every child, so that a failing assertion cannot leave them running (and
 * holding the test's output open). */
static pid_t children[WORKERS + 1];

static void kill_children(void)
{
	for (size_t i = 0; i < ELEMENTSOF(children); i++)
		if (children[i] > 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
			children[i] = 0;
		}
}

struct fixture {
	struct sandbox sb;
	char src[400];
	char *expected; /* snapshot of a staged rootfs */
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct sl_store *s = NULL;

	sandbox_init(&fx->sb);
	snprintf(fx->src, sizeof(fx->src), "%s/src", fx->sb.base);
	make_sample_tree(fx->src);
	fx->expected = tree_snapshot(fx->src, true);
	assert_int_equal(sl_store_open(fx->sb.db, &s, NULL), 0);
	sl_store_close(s);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	kill_children();
	sandbox_finish(&fx->sb);
	free(fx->expected);
	free(fx);
	return 0;
}

static void die(const char *who, const struct sl_error *err)
{
	fprintf(stderr, "%s: %s\n", who, err->msg);
	_exit(1);
}

/* A worker: stage, check the whole stage is there, release; forever. */
static void worker(struct fixture *fx)
{
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;
	char path[1024];

	if (sl_store_open(fx->sb.db, &s, &err) < 0)
		die("worker open", &err);
	for (;;) {
		struct sl_stage *st = NULL;
		static const char config[] = "{\"process\":{}}";

		if (sl_stage_begin(s, fx->sb.root, NULL, &st, &err) < 0 ||
		    sl_stage_copy_tree(st, AT_FDCWD, fx->src, "rootfs", &err) < 0 ||
		    sl_stage_write_file(st, "config.json", config, sizeof(config) - 1, 0600, &err) < 0 ||
		    sl_stage_ready(st, &err) < 0)
			die("worker stage", &err);
		/* Recovery runs beside us: our live stage must be whole. */
		snprintf(path, sizeof(path), "%s/rootfs", sl_stage_path(st));
		char *snap = tree_snapshot(path, true);
		if (strcmp(snap, fx->expected) != 0) {
			fprintf(stderr, "worker: a live stage was touched\n");
			_exit(2);
		}
		free(snap);
		if (sl_stage_release(st, &err) < 0)
			die("worker release", &err);
		sl_stage_free(st);
	}
}

static void recoverer(struct fixture *fx)
{
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;

	if (sl_store_open(fx->sb.db, &s, &err) < 0)
		die("recoverer open", &err);
	for (;;) {
		struct sl_recover_report rep;
		if (sl_recover_run(s, NULL, &rep, &err) < 0)
			die("recoverer", &err);
		if (rep.n_failed) {
			fprintf(stderr, "recoverer: %s: %s\n", rep.failed[0].id, rep.failed[0].reason);
			_exit(3);
		}
		sl_recover_report_finish(&rep);
		usleep(20000);
	}
}

static pid_t spawn(struct fixture *fx, void (*fn)(struct fixture *))
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		fn(fx);
		_exit(0);
	}
	return pid;
}

/* A process that died on its own (not by our SIGKILL) is a failure. */
static void assert_running(pid_t pid)
{
	int status;
	pid_t r = waitpid(pid, &status, WNOHANG);
	if (r == pid)
		fail_msg("process %d exited on its own (status %d)", (int)pid, status);
}

static void test_concurrent_stage_release_recover(void **state)
{
	struct fixture *fx = *state;
	pid_t *w = children, *rec = &children[WORKERS];
	unsigned kills = 0;
	time_t end = time(NULL) + RUN_SECONDS;

	srand((unsigned)getpid());
	for (int i = 0; i < WORKERS; i++)
		w[i] = spawn(fx, worker);
	*rec = spawn(fx, recoverer);
	while (time(NULL) < end) {
		usleep(50000 + (useconds_t)(rand() % 150000));
		for (int i = 0; i < WORKERS; i++)
			assert_running(w[i]);
		assert_running(*rec);
		/* Kill one worker at a random moment and replace it. */
		int victim = rand() % WORKERS;
		kill(w[victim], SIGKILL);
		waitpid(w[victim], NULL, 0);
		w[victim] = spawn(fx, worker);
		kills++;
	}
	for (int i = 0; i < WORKERS; i++)
		assert_running(w[i]);
	assert_running(*rec);
	kill_children();

	/* One last recovery collects every killed worker's stage. */
	struct sl_store *s = NULL;
	struct sl_recover_report rep;
	struct sl_error err = { 0 };
	assert_int_equal(sl_store_open(fx->sb.db, &s, &err), 0);
	assert_int_equal(sl_recover_run(s, NULL, &rep, &err), 0);
	assert_int_equal(rep.n_failed, 0);
	assert_int_equal(rep.n_live, 0);
	sl_recover_report_finish(&rep);
	if (count_entries(fx->sb.root) != 0) {
		/* What was left, and the records, for whoever reads the log. */
		char *left = tree_snapshot(fx->sb.root, false);
		printf("left in the staging root after the last recovery:\n%s\n", left);
		free(left);
		sqlite3 *d;
		sqlite3_stmt *q;
		assert_int_equal(sqlite3_open(fx->sb.db, &d), SQLITE_OK);
		assert_int_equal(sqlite3_prepare_v2(d,
						    "SELECT id, state, owner_pid, claim_pid, ino, reason FROM stages "
						    "WHERE state NOT IN (3, 6)",
						    -1, &q, NULL),
				 SQLITE_OK);
		while (sqlite3_step(q) == SQLITE_ROW)
			printf("record %s state %d owner %d claimer %d ino %lld reason %s\n", sqlite3_column_text(q, 0),
			       sqlite3_column_int(q, 1), sqlite3_column_int(q, 2), sqlite3_column_int(q, 3),
			       (long long)sqlite3_column_int64(q, 4), (const char *)sqlite3_column_text(q, 5));
		sqlite3_finalize(q);
		sqlite3_close(d);
	}
	assert_int_equal(count_entries(fx->sb.root), 0);

	sqlite3 *db;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open(fx->sb.db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT sum(state IN (0,1,2,5,7)), sum(state = 6), sum(state = 3), "
					    "count(*) FROM stages",
					    -1, &st, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int inflight = sqlite3_column_int(st, 0), recovered = sqlite3_column_int(st, 1),
	    released = sqlite3_column_int(st, 2), total = sqlite3_column_int(st, 3);
	sqlite3_finalize(st);
	sqlite3_close(db);
	sl_store_close(s);
	assert_int_equal(inflight, 0);
	printf("concurrency: %d workers for %d s, %u kills; %d stages: %d released, %d recovered, 0 in flight, no "
	       "error\n",
	       WORKERS, RUN_SECONDS, kills, total, released, recovered);
	assert_true(released > 20);
	assert_true(recovered > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_concurrent_stage_release_recover, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
