/* SPDX-License-Identifier: MIT */
/*
 * test-races.c: a recovery that runs while a stager is between its durable
 * record and the creation of its top directory (issue 9, item 5).
 *
 * The stager's owner (--owner PID) dies in that window, so a recovery
 * judges the stage stale and claims it. mkdirat is wrapped so that the
 * recovery runs exactly there, on a second store connection, before (or,
 * in the second case, just after) the real mkdirat. Whatever the order, the
 * stager must fail clearly and leave nothing, and the recovery must never
 * mark the stage recovered while its directory exists.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "recover-private.h"
#include "stage-private.h"
#include "store-private.h"

int __real_mkdirat(int dirfd, const char *path, mode_t mode);
int __wrap_mkdirat(int dirfd, const char *path, mode_t mode);

static struct race {
	bool armed;
	bool after;  /* run the recovery after the real mkdirat */
	pid_t owner; /* killed before the recovery runs */
	const char *db;
	const char *root;
	int recovered;    /* stages the recovery marked recovered */
	bool dir_existed; /* the top directory existed when it did */
} R;

static void run_recovery(const char *topdir)
{
	struct sl_recover_report rep;
	struct sl_store *s = NULL;
	char path[600];
	struct stat st;
	int status;

	R.armed = false;
	kill(R.owner, SIGKILL);
	assert_int_equal(waitpid(R.owner, &status, 0), R.owner);
	assert_int_equal(sl_store_open(R.db, &s, NULL), 0);
	assert_int_equal(sl_recover_run(s, NULL, &rep, NULL), 0);
	R.recovered = (int)rep.n_recovered;
	snprintf(path, sizeof(path), "%s/%s", R.root, topdir);
	R.dir_existed = stat(path, &st) == 0;
	sl_recover_report_finish(&rep);
	sl_store_close(s);
}

int __wrap_mkdirat(int dirfd, const char *path, mode_t mode)
{
	int r;

	/* Only the stager's top directory (LABEL-ID in the root). */
	if (!R.armed || strncmp(path, "race-", 5) != 0)
		return __real_mkdirat(dirfd, path, mode);
	if (!R.after)
		run_recovery(path);
	r = __real_mkdirat(dirfd, path, mode);
	if (R.after)
		run_recovery(path);
	return r;
}

struct fixture {
	struct sandbox sb;
	struct sl_store *store;
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	sandbox_init(&fx->sb);
	assert_int_equal(sl_store_open(fx->sb.db, &fx->store, NULL), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	sl_store_close(fx->store);
	sandbox_finish(&fx->sb);
	free(fx);
	return 0;
}

static int state_cb(const struct sl_stage_info *info, void *userdata)
{
	*(enum sl_state *)userdata = info->state;
	return 0;
}

static void race(struct fixture *fx, bool after)
{
	struct sl_stage_options o = { .label = "race" };
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	enum sl_state state = SL_STATE_COUNT_;
	pid_t owner;
	int r;

	owner = fork();
	assert_true(owner >= 0);
	if (owner == 0) {
		pause();
		_exit(0);
	}
	R = (struct race){ .armed = true, .after = after, .owner = owner, .db = fx->sb.db, .root = fx->sb.root };
	o.owner_pid = owner;
	r = sl_stage_begin(fx->store, fx->sb.root, &o, &st, &err);

	/* The recovery ran and won the stage. */
	assert_false(R.armed);
	assert_int_equal(R.recovered, 1);
	/* It never called the stage recovered while its directory was there
	 * (before: its placeholder held the name; after: it removed the
	 * stager's directory first). */
	assert_false(R.dir_existed);
	/* The stager failed clearly, and nothing of it is left. */
	assert_int_equal(r, -EAGAIN);
	assert_null(st);
	assert_non_null(strstr(err.msg, "recovery"));
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_int_equal(sl_recover_list(fx->store, 0, NULL, state_cb, &state, NULL), 0);
	assert_int_equal(state, SL_STATE_COUNT_); /* nothing in flight */
	printf("recovery %s the stager's mkdirat: stager -EAGAIN, root empty, stage recovered\n",
	       after ? "after" : "before");
}

static void test_recovery_before_mkdirat(void **state)
{
	race(*state, false);
}

static void test_recovery_after_mkdirat(void **state)
{
	race(*state, true);
}

/* A recovery forced onto a stage between its begin and its first commit
 * of entries (which carries the top directory's identity, a
 * compare-and-swap): the stager learns it there, before anything of its
 * own goes in, and fails with -EAGAIN; nothing is left. */
static void test_claim_before_first_commit(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage_options o = { .label = "race" };
	struct sl_recover_options ro = { 0 };
	struct sl_recover_report rep;
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	struct sl_store *other = NULL;
	const char *force[1];

	assert_int_equal(sl_stage_begin(fx->store, fx->sb.root, &o, &st, &err), 0);
	force[0] = sl_stage_id(st);
	ro.force = force;
	ro.n_force = 1;
	assert_int_equal(sl_store_open(fx->sb.db, &other, NULL), 0);
	assert_int_equal(sl_recover_run(other, &ro, &rep, NULL), 0);
	assert_int_equal(rep.n_recovered, 1);
	sl_recover_report_finish(&rep);
	sl_store_close(other);

	assert_int_equal(sl_stage_mkdir(st, "etc", 0755, &err), -EAGAIN);
	assert_non_null(strstr(err.msg, "recovery"));
	sl_stage_free(st);
	assert_int_equal(count_entries(fx->sb.root), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_recovery_before_mkdirat, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_after_mkdirat, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_before_first_commit, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
