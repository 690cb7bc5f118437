/* SPDX-License-Identifier: MIT */
/*
 * test-recover.c: liveness (boot id, pid and start time, pid namespace,
 * the inherited lock, a zombie owner), claims (a dead recoverer's claim is
 * taken over, two recoveries never share a stage), dry runs, forced ids,
 * and the record keeping around recovery: forget, gc, check.
 */
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "recover-private.h"
#include "stage-private.h"
#include "store-private.h"

struct fixture {
	struct sandbox sb;
	struct sl_store *store;
	char src[400];
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	sandbox_init(&fx->sb);
	snprintf(fx->src, sizeof(fx->src), "%s/src", fx->sb.base);
	make_sample_tree(fx->src);
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

/* Stages the sample as a ready stage in a child that then exits (stale
 * stage) or stays alive until killed (live stage, *ret_pid set). The id
 * comes back through a pipe. */
/* The "runtime" the last make_stage(..., true) left holding a stage's lock:
 * its own test stops it, by pid (a pattern would match another suite's
 * sleep running beside this one). */
static pid_t runtime_pid = -1;

static void make_stage(struct fixture *fx, char id[STORE_ID_LEN + 1], pid_t *ret_pid, bool inherit_to_grandchild)
{
	int p[2];
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sl_store *s = NULL;
		struct sl_stage *st = NULL;
		close(p[0]);
		if (sl_store_open(fx->sb.db, &s, NULL) < 0 || sl_stage_begin(s, fx->sb.root, NULL, &st, NULL) < 0 ||
		    sl_stage_copy_tree(st, AT_FDCWD, fx->src, "rootfs", NULL) < 0 || sl_stage_ready(st, NULL) < 0)
			_exit(1);
		if (inherit_to_grandchild) {
			/* The lock handed to a "runtime" that outlives us. */
			int fd = sl_stage_lock_inherit(st, NULL);
			char arg[32];
			snprintf(arg, sizeof(arg), "%d", fd);
			runtime_pid = fork();
			if (runtime_pid == 0) {
				execl("/bin/sleep", "sleep", "30", (char *)NULL);
				_exit(127);
			}
		}
		assert_int_equal(write(p[1], sl_stage_id(st), STORE_ID_LEN), STORE_ID_LEN);
		if (inherit_to_grandchild)
			assert_int_equal(write(p[1], &runtime_pid, sizeof(runtime_pid)), sizeof(runtime_pid));
		close(p[1]);
		if (ret_pid && !inherit_to_grandchild)
			pause();
		_exit(0);
	}
	close(p[1]);
	assert_int_equal(read(p[0], id, STORE_ID_LEN), STORE_ID_LEN);
	id[STORE_ID_LEN] = '\0';
	if (inherit_to_grandchild)
		assert_int_equal(read(p[0], &runtime_pid, sizeof(runtime_pid)), sizeof(runtime_pid));
	close(p[0]);
	if (ret_pid && !inherit_to_grandchild) {
		*ret_pid = pid;
	} else {
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
}

static enum sl_state state_of(struct fixture *fx, const char *id)
{
	struct store_record rec;
	assert_int_equal(store_stage_get(fx->store, id, &rec, NULL), 0);
	return rec.state;
}

static void exec_sql(struct fixture *fx, const char *sql)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(fx->sb.db, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static bool in_list(char (*ids)[SL_ID_SIZE], size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(ids[i], id) == 0)
			return true;
	return false;
}

static void recover(struct fixture *fx, struct sl_recover_report *rep, const struct sl_recover_options *o)
{
	struct sl_error err = { 0 };
	assert_int_equal(sl_recover_run(fx->store, o, rep, &err), 0);
}

static void test_live_and_stale(void **state)
{
	struct fixture *fx = *state;
	char live[STORE_ID_LEN + 1], stale[STORE_ID_LEN + 1];
	struct sl_recover_report rep;
	pid_t pid;

	make_stage(fx, live, &pid, false);
	make_stage(fx, stale, NULL, false);
	recover(fx, &rep, NULL);
	assert_int_equal(rep.examined, 2);
	assert_int_equal(rep.n_recovered, 1);
	assert_string_equal(rep.recovered[0], stale);
	assert_int_equal(rep.n_live, 1);
	assert_string_equal(rep.live[0], live);
	sl_recover_report_finish(&rep);
	assert_int_equal(state_of(fx, stale), SL_STATE_RECOVERED);
	assert_int_equal(state_of(fx, live), SL_STATE_READY);
	assert_int_equal(count_entries(fx->sb.root), 1);

	/* Once its owner is gone (and with it the lock), the stage is stale. */
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	recover(fx, &rep, NULL);
	assert_int_equal(rep.n_recovered, 1);
	assert_string_equal(rep.recovered[0], live);
	sl_recover_report_finish(&rep);
	assert_int_equal(count_entries(fx->sb.root), 0);
	printf("liveness: a live owner is left alone, a dead one recovered\n");
}

static void test_inherited_lock(void **state)
{
	struct fixture *fx = *state;
	char id[STORE_ID_LEN + 1];
	struct sl_recover_report rep;

	/* The owner exits, but a "runtime" it started holds the lock. */
	make_stage(fx, id, NULL, true);
	recover(fx, &rep, NULL);
	assert_int_equal(rep.n_live, 1);
	assert_int_equal(rep.n_recovered, 0);
	sl_recover_report_finish(&rep);
	assert_int_equal(state_of(fx, id), SL_STATE_READY);
	/* Forced, it goes regardless. */
	const char *force[] = { id };
	recover(fx, &rep, &(struct sl_recover_options){ .force = force, .n_force = 1 });
	assert_int_equal(rep.n_recovered, 1);
	sl_recover_report_finish(&rep);
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_true(runtime_pid > 0);
	assert_int_equal(kill(runtime_pid, SIGKILL), 0);
}

static void test_pid_reuse_boot_and_namespace(void **state)
{
	struct fixture *fx = *state;
	char a[STORE_ID_LEN + 1], b[STORE_ID_LEN + 1], c[STORE_ID_LEN + 1];
	struct sl_recover_report rep;
	char sql[512];

	/* Three stages whose recorded owner is THIS test process (alive),
	 * but: a different start time (pid reused), another boot, another
	 * pid namespace. Only the first two are stale. */
	make_stage(fx, a, NULL, false);
	make_stage(fx, b, NULL, false);
	make_stage(fx, c, NULL, false);
	struct proc_owner me;
	assert_int_equal(proc_identity(0, &me), 0);
	snprintf(sql, sizeof(sql),
		 "UPDATE stages SET owner_pid = %lld, owner_start = %llu, owner_pidns = %llu, owner_boot = '%s'",
		 (long long)me.pid, (unsigned long long)me.start_time, (unsigned long long)me.pidns, me.boot_id);
	exec_sql(fx, sql);
	/* Sanity: as recorded now, all three look live. */
	recover(fx, &rep, &(struct sl_recover_options){ .dry_run = true });
	assert_int_equal(rep.n_live, 3);
	sl_recover_report_finish(&rep);

	snprintf(sql, sizeof(sql), "UPDATE stages SET owner_start = owner_start + 1 WHERE id = '%s'", a);
	exec_sql(fx, sql);
	snprintf(sql, sizeof(sql),
		 "UPDATE stages SET owner_boot = '00000000-0000-0000-0000-000000000000' WHERE id = '%s'", b);
	exec_sql(fx, sql);
	snprintf(sql, sizeof(sql), "UPDATE stages SET owner_pidns = owner_pidns + 1 WHERE id = '%s'", c);
	exec_sql(fx, sql);

	/* Dry run: reports, changes nothing. */
	char *before = tree_snapshot(fx->sb.root, true);
	recover(fx, &rep, &(struct sl_recover_options){ .dry_run = true });
	assert_true(rep.dry_run);
	assert_int_equal(rep.n_recovered, 2);
	assert_int_equal(rep.n_live, 1);
	sl_recover_report_finish(&rep);
	char *after = tree_snapshot(fx->sb.root, true);
	assert_string_equal(before, after);
	free(before);
	free(after);
	assert_int_equal(state_of(fx, a), SL_STATE_READY);

	recover(fx, &rep, NULL);
	assert_int_equal(rep.n_recovered, 2);
	assert_true(in_list(rep.recovered, rep.n_recovered, a));
	assert_true(in_list(rep.recovered, rep.n_recovered, b));
	assert_true(in_list(rep.live, rep.n_live, c));
	sl_recover_report_finish(&rep);
	assert_int_equal(state_of(fx, c), SL_STATE_READY);
	printf("liveness: pid reuse and another boot are stale; another pid namespace is live\n");
}

/* The state letter of /proc/PID/stat, read after the last ')'. */
static char proc_state(pid_t pid)
{
	char path[64], buf[1024];
	const char *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n > 0);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	assert_non_null(p);
	return p[2];
}

/* An owner that exited but that its parent (us) has not reaped is a
 * zombie: its pid and start time are still in /proc, yet nothing of it
 * runs and its lock went with its descriptors. Its stage is stale. */
static void test_zombie_owner(void **state)
{
	struct fixture *fx = *state;
	char id[STORE_ID_LEN + 1];
	struct sl_recover_report rep;
	siginfo_t info;
	pid_t pid;

	make_stage(fx, id, &pid, false);
	assert_int_equal(kill(pid, SIGKILL), 0);
	/* Wait for its exit without reaping it. */
	assert_int_equal(waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT), 0);
	assert_int_equal(proc_state(pid), 'Z');
	recover(fx, &rep, NULL);
	assert_int_equal(rep.n_live, 0);
	assert_int_equal(rep.n_recovered, 1);
	assert_string_equal(rep.recovered[0], id);
	sl_recover_report_finish(&rep);
	assert_int_equal(state_of(fx, id), SL_STATE_RECOVERED);
	assert_int_equal(count_entries(fx->sb.root), 0);
	/* Still a zombie: the recovery judged it as one. */
	assert_int_equal(proc_state(pid), 'Z');
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	printf("liveness: an exited, unreaped owner (zombie) is stale\n");
}

/* The command name in /proc/PID/stat is the process's to choose: one that
 * reads "x) Z (y" must not make a live owner look like a zombie. */
static void test_owner_name_like_zombie(void **state)
{
	struct fixture *fx = *state;
	char id[STORE_ID_LEN + 1], old[17] = { 0 }, sql[512];
	struct sl_recover_report rep;
	struct proc_owner me;

	make_stage(fx, id, NULL, false);
	assert_int_equal(prctl(PR_GET_NAME, old), 0);
	assert_int_equal(prctl(PR_SET_NAME, "x) Z (y"), 0);
	assert_int_equal(proc_identity(0, &me), 0);
	snprintf(sql, sizeof(sql),
		 "UPDATE stages SET owner_pid = %lld, owner_start = %llu, owner_pidns = %llu, owner_boot = '%s'",
		 (long long)me.pid, (unsigned long long)me.start_time, (unsigned long long)me.pidns, me.boot_id);
	exec_sql(fx, sql);
	recover(fx, &rep, NULL);
	assert_int_equal(prctl(PR_SET_NAME, old), 0);
	assert_int_equal(rep.n_live, 1);
	assert_int_equal(rep.n_recovered, 0);
	sl_recover_report_finish(&rep);
	assert_int_equal(state_of(fx, id), SL_STATE_READY);
	printf("liveness: a live owner named \"x) Z (y\" stays live\n");
}

static void test_dead_recoverer_reclaimed(void **state)
{
	struct fixture *fx = *state;
	char id[STORE_ID_LEN + 1];
	struct sl_recover_report rep;
	char sql[256];

	make_stage(fx, id, NULL, false);
	/* A recoverer that died mid-way: pid 1 with a wrong start time. */
	snprintf(sql, sizeof(sql),
		 "UPDATE stages SET state = 5, claim_boot = owner_boot, claim_pid = 1, claim_start = 1, "
		 "claim_pidns = owner_pidns WHERE id = '%s'",
		 id);
	exec_sql(fx, sql);
	recover(fx, &rep, NULL);
	assert_int_equal(rep.n_recovered, 1);
	sl_recover_report_finish(&rep);
	assert_int_equal(state_of(fx, id), SL_STATE_RECOVERED);

	/* A claim by a live recoverer (us) is left alone. */
	make_stage(fx, id, NULL, false);
	struct proc_owner me;
	proc_identity(0, &me);
	snprintf(sql, sizeof(sql),
		 "UPDATE stages SET state = 5, claim_boot = owner_boot, claim_pid = %lld, claim_start = %llu, "
		 "claim_pidns = %llu WHERE id = '%s'",
		 (long long)me.pid, (unsigned long long)me.start_time, (unsigned long long)me.pidns, id);
	exec_sql(fx, sql);
	recover(fx, &rep, NULL);
	assert_int_equal(rep.n_recovered, 0);
	assert_int_equal(rep.n_live, 1);
	sl_recover_report_finish(&rep);
}

/* Two recoveries at once over 60 stale stages: each stage is recovered by
 * exactly one of them. */
static void test_two_recoverers(void **state)
{
	struct fixture *fx = *state;
	char id[STORE_ID_LEN + 1];
	int p[2][2];
	pid_t pids[2];
	size_t counts[2] = { 0, 0 };

	for (int i = 0; i < 60; i++)
		make_stage(fx, id, NULL, false);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(pipe(p[k]), 0);
		pids[k] = fork();
		if (pids[k] == 0) {
			struct sl_store *s = NULL;
			struct sl_recover_report rep;
			if (sl_store_open(fx->sb.db, &s, NULL) < 0 || sl_recover_run(s, NULL, &rep, NULL) < 0)
				_exit(1);
			for (size_t i = 0; i < rep.n_recovered; i++)
				if (write(p[k][1], rep.recovered[i], SL_ID_SIZE) != SL_ID_SIZE)
					_exit(2);
			_exit(rep.n_failed ? 3 : 0);
		}
		close(p[k][1]);
	}
	char(*all)[SL_ID_SIZE] = calloc(200, SL_ID_SIZE);
	size_t n = 0;
	for (int k = 0; k < 2; k++) {
		char buf[SL_ID_SIZE];
		while (read(p[k][0], buf, SL_ID_SIZE) == SL_ID_SIZE) {
			assert_false(in_list(all, n, buf));
			memcpy(all[n++], buf, SL_ID_SIZE);
			counts[k]++;
		}
		close(p[k][0]);
		int status;
		waitpid(pids[k], &status, 0);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	free(all);
	assert_int_equal(n, 60);
	assert_int_equal(count_entries(fx->sb.root), 0);
	printf("two recoverers: %zu + %zu stages, none twice\n", counts[0], counts[1]);
}

/* A tampered multi-page record: entry 0 gone, 130 plausible entries, and a
 * negative seq naming "TOP/..". Nothing may be removed (the staging root
 * holds another, live stage), and the stage ends failed with a reason. */
static void test_tampered_negative_seq(void **state)
{
	struct fixture *fx = *state;
	char id[STORE_ID_LEN + 1], live[STORE_ID_LEN + 1], sql[512];
	struct sl_recover_report rep;
	struct store_record rec;
	pid_t pid;

	make_stage(fx, live, &pid, false);
	make_stage(fx, id, NULL, false);
	assert_int_equal(store_stage_get(fx->store, id, &rec, NULL), 0);
	char *before = tree_snapshot(fx->sb.root, true);
	snprintf(sql, sizeof(sql), "DELETE FROM entries WHERE stage = %lld AND seq = 0", (long long)rec.rowid);
	exec_sql(fx, sql);
	for (int i = 0; i < 130; i++) {
		snprintf(sql, sizeof(sql),
			 "INSERT INTO entries (stage, seq, path, kind, state) VALUES (%lld, %d, CAST('%s/x%d' AS "
			 "BLOB), 2, 0)",
			 (long long)rec.rowid, 1000 + i, rec.topdir, i);
		exec_sql(fx, sql);
	}
	snprintf(sql, sizeof(sql),
		 "INSERT INTO entries (stage, seq, path, kind, state) VALUES (%lld, -1, CAST('%s/..' AS BLOB), 1, 0)",
		 (long long)rec.rowid, rec.topdir);
	exec_sql(fx, sql);

	recover(fx, &rep, NULL);
	assert_int_equal(rep.n_failed, 1);
	assert_string_equal(rep.failed[0].id, id);
	assert_non_null(strstr(rep.failed[0].reason, "fails validation"));
	sl_recover_report_finish(&rep);
	char *after = tree_snapshot(fx->sb.root, true);
	assert_string_equal(before, after);
	free(before);
	free(after);
	assert_int_equal(state_of(fx, id), SL_STATE_FAILED);
	assert_int_equal(state_of(fx, live), SL_STATE_READY);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	printf("tampered record (no entry 0, a negative seq naming '..'): failed, nothing removed\n");
}

static int count_cb(const struct sl_stage_info *info, void *userdata)
{
	(void)info;
	(*(int *)userdata)++;
	return 0;
}

struct nested {
	struct sl_store *store;
	int outer, inner;
};

/* Lists again from inside a listing: each level must see every stage. */
static int nested_cb(const struct sl_stage_info *info, void *userdata)
{
	struct nested *n = userdata;
	int inner = 0;

	(void)info;
	n->outer++;
	if (sl_recover_list(n->store, 0, NULL, count_cb, &inner, NULL) < 0)
		return -EIO;
	n->inner += inner;
	return 0;
}

static int stop_cb(const struct sl_stage_info *info, void *userdata)
{
	(void)info;
	(*(int *)userdata)++;
	return -ECANCELED;
}

/* The listing's statement is kept for the next listing (recover lists
 * twice): a listing from inside a listing's callback, a callback that
 * stops one, and the listing after, each see the whole list. */
static void test_list_nested_and_again(void **state)
{
	struct fixture *fx = *state;
	char a[STORE_ID_LEN + 1], b[STORE_ID_LEN + 1], c[STORE_ID_LEN + 1];
	struct nested n = { .store = fx->store };
	int k = 0;

	make_stage(fx, a, NULL, false);
	make_stage(fx, b, NULL, false);
	make_stage(fx, c, NULL, false);
	assert_int_equal(sl_recover_list(fx->store, 0, NULL, nested_cb, &n, NULL), 0);
	assert_int_equal(n.outer, 3);
	assert_int_equal(n.inner, 9);
	assert_int_equal(sl_recover_list(fx->store, 0, NULL, stop_cb, &k, NULL), -ECANCELED);
	assert_int_equal(k, 1);
	k = 0;
	assert_int_equal(sl_recover_list(fx->store, 0, NULL, count_cb, &k, NULL), 0);
	assert_int_equal(k, 3);
	k = 0;
	assert_int_equal(sl_recover_list(fx->store, SL_LIST_ALL, NULL, count_cb, &k, NULL), 0);
	assert_int_equal(k, 3);
}

struct scan_seen {
	struct fixture *fx;
	const char *finish; /* the stage another connection finishes mid-scan */
	char ids[4][STORE_ID_LEN + 1];
	enum sl_state states[4];
	int64_t entries[4];
	int n, inner;
};

static int count_scan_cb(const struct store_record *rec, void *userdata)
{
	(void)rec;
	(*(int *)userdata)++;
	return 0;
}

/* Keeps what the scan read; at the first stage, scans again from inside
 * and lets another connection finish a later stage. */
static int scan_seen_cb(const struct store_record *rec, void *userdata)
{
	struct scan_seen *s = userdata;
	char sql[200];

	if (s->n == 4)
		return -E2BIG;
	memcpy(s->ids[s->n], rec->id, sizeof(s->ids[0]));
	s->states[s->n] = rec->state;
	s->entries[s->n] = rec->entries;
	if (s->n++ == 0 && s->finish) {
		if (store_stage_scan(s->fx->store, count_scan_cb, &s->inner, NULL) < 0)
			return -EIO;
		snprintf(sql, sizeof(sql), "UPDATE stages SET state = %d WHERE id = '%s'", SL_STATE_RELEASED,
			 s->finish);
		exec_sql(s->fx, sql);
	}
	return 0;
}

/* recover's and check's scan: in-flight stages only, oldest first, no
 * entry counts, a scan inside a scan sees them all, and each record is
 * read from the listing's snapshot: a stage another process finishes
 * while the scan runs is read as it was listed. */
static void test_scan_one_snapshot(void **state)
{
	struct fixture *fx = *state;
	char a[STORE_ID_LEN + 1], b[STORE_ID_LEN + 1], c[STORE_ID_LEN + 1], sql[200];
	struct scan_seen s = { .fx = fx, .finish = c };

	make_stage(fx, a, NULL, false);
	make_stage(fx, b, NULL, false);
	make_stage(fx, c, NULL, false);
	snprintf(sql, sizeof(sql), "UPDATE stages SET state = %d WHERE id = '%s'", SL_STATE_RELEASED, b);
	exec_sql(fx, sql);
	assert_int_equal(store_stage_scan(fx->store, scan_seen_cb, &s, NULL), 0);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.ids[0], a);
	assert_string_equal(s.ids[1], c);
	assert_int_equal(s.states[0], SL_STATE_READY);
	assert_int_equal(s.states[1], SL_STATE_READY);
	assert_int_equal(s.entries[0], -1);
	assert_int_equal(s.inner, 2);
	/* The next scan sees the finished stage gone from the list. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(store_stage_scan(fx->store, scan_seen_cb, &s, NULL), 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.ids[0], a);
}

/* The old names of 0.1.0's development still answer, as their new ones. */
static void test_old_names(void **state)
{
	struct fixture *fx = *state;
	char id[STORE_ID_LEN + 1], full[SL_ID_SIZE];
	struct sl_error err = { 0 };
	int n_old = 0, n_new = 0;

	make_stage(fx, id, NULL, false);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	assert_int_equal(sl_list(fx->store, 0, NULL, count_cb, &n_old, NULL), 0);
	assert_int_equal(sl_resolve_id(fx->store, id, full, NULL, 0, NULL, &err), 0);
	assert_string_equal(sl_state_name(SL_STATE_READY), sl_store_state_name(SL_STATE_READY));
	assert_int_equal(sl_state_in_flight(SL_STATE_READY), 1);
	assert_int_equal(sl_release_id(fx->store, id, &err), 1);
	assert_int_equal(sl_gc(fx->store, 0, &err), 1);
#pragma GCC diagnostic pop
	assert_int_equal(n_old, 1);
	assert_string_equal(full, id);
	assert_int_equal(sl_recover_list(fx->store, SL_LIST_ALL, NULL, count_cb, &n_new, NULL), 0);
	assert_int_equal(n_new, 0);
}

static void test_forget_gc_check(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	char id[STORE_ID_LEN + 1], live[STORE_ID_LEN + 1];
	struct sl_recover_report rep;
	pid_t pid;
	int n;

	make_stage(fx, live, &pid, false);
	make_stage(fx, id, NULL, false);
	/* A live stage's record stays. */
	assert_int_equal(sl_recover_forget(fx->store, live, &err), -EINVAL);
	n = 0;
	assert_int_equal(sl_recover_list(fx->store, 0, NULL, count_cb, &n, NULL), 0);
	assert_int_equal(n, 2);

	recover(fx, &rep, NULL);
	sl_recover_report_finish(&rep);
	n = 0;
	assert_int_equal(sl_recover_list(fx->store, 0, NULL, count_cb, &n, NULL), 0);
	assert_int_equal(n, 1);
	n = 0;
	assert_int_equal(sl_recover_list(fx->store, SL_LIST_ALL, NULL, count_cb, &n, NULL), 0);
	assert_int_equal(n, 2);
	/* gc keeps recent records, deletes old enough ones. */
	assert_int_equal(sl_recover_gc(fx->store, 60 * 1000, &err), 0);
	assert_int_equal(sl_recover_gc(fx->store, 0, &err), 1);
	n = 0;
	assert_int_equal(sl_recover_list(fx->store, SL_LIST_ALL, NULL, count_cb, &n, NULL), 0);
	assert_int_equal(n, 1);

	/* check: an orphan is a directory with this store's marker that no
	 * record owns and nobody holds locked (docs/design.md, "Identity").
	 * A stage whose record was lost is one; a stage-like directory
	 * without a marker, a locked one, and another store's stale stage are
	 * not; nor is the live stage. */
	char orphan_id[STORE_ID_LEN + 1], locked_id[STORE_ID_LEN + 1], foreign_id[STORE_ID_LEN + 1];
	char orphan[600], locked[600], handmade[600], other_db[600];
	struct store_record rec;
	make_stage(fx, orphan_id, NULL, false);
	make_stage(fx, locked_id, NULL, false);
	for (const char *lost = orphan_id; lost; lost = lost == orphan_id ? locked_id : NULL) {
		assert_int_equal(store_stage_get(fx->store, lost, &rec, NULL), 0);
		assert_int_equal(store_stage_delete(fx->store, rec.rowid, NULL), 0);
	}
	snprintf(orphan, sizeof(orphan), "%s/stage-%s", fx->sb.root, orphan_id);
	snprintf(locked, sizeof(locked), "%s/stage-%s", fx->sb.root, locked_id);
	snprintf(handmade, sizeof(handmade), "%s/stage-0123456789abcdef0123456789abcdef", fx->sb.root);
	make_sample_tree(handmade);
	int lfd = open(locked, O_RDONLY | O_DIRECTORY);
	assert_int_equal(flock(lfd, LOCK_EX), 0);
	/* Another store's stage in the same root, its owner gone. */
	snprintf(other_db, sizeof(other_db), "%s/other.db", fx->sb.base);
	struct sl_store *other = NULL;
	struct sl_stage *ost = NULL;
	assert_int_equal(sl_store_open(other_db, &other, NULL), 0);
	assert_int_equal(sl_stage_begin(other, fx->sb.root, NULL, &ost, NULL), 0);
	snprintf(foreign_id, sizeof(foreign_id), "%s", sl_stage_id(ost));
	assert_int_equal(sl_stage_ready(ost, NULL), 0);
	sl_stage_free(ost); /* the lock goes; the stage stays ready */

	struct sl_check_report cr;
	const char *roots[] = { fx->sb.root };
	assert_int_equal(sl_recover_check(fx->store, roots, 1, 0, &cr, &err), 0);
	assert_string_equal(cr.integrity, "ok");
	assert_int_equal(cr.n_orphans, 1);
	assert_string_equal(cr.orphans[0], orphan);
	assert_int_equal(cr.n_removed, 0);
	sl_recover_check_report_finish(&cr);
	assert_int_equal(sl_recover_check(fx->store, NULL, 0, SL_CHECK_REMOVE_ORPHANS | SL_CHECK_RECORD_ROOTS, &cr,
					  &err),
			 0);
	assert_int_equal(cr.n_orphans, 1);
	assert_int_equal(cr.n_removed, 1);
	assert_string_equal(cr.removed[0], orphan);
	sl_recover_check_report_finish(&cr);
	assert_int_equal(access(orphan, F_OK), -1);
	assert_int_equal(access(locked, F_OK), 0);
	assert_int_equal(access(handmade, F_OK), 0);
	close(lfd);
	/* The other store, checking the same root, sees its own ready stage
	 * and no orphan of its own: ours are not its to remove either. */
	assert_int_equal(sl_recover_check(other, roots, 1, SL_CHECK_REMOVE_ORPHANS, &cr, &err), 0);
	if (cr.n_orphans)
		fail_msg("the other store takes %s for its orphan", cr.orphans[0]);
	sl_recover_check_report_finish(&cr);
	assert_int_equal(sl_stage_release_id(other, foreign_id, &err), 1);
	sl_store_close(other);
	assert_int_equal(count_entries(fx->sb.root), 3); /* live, locked, handmade */

	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	/* Now stale: forget drops the record only. */
	assert_int_equal(sl_recover_forget(fx->store, live, &err), 0);
	assert_int_equal(count_entries(fx->sb.root), 3);
	printf("forget, gc and check: live records kept, orphans found, locked ones spared\n");
}

/* gc deletes the records of released, aborted and recovered stages, and
 * only those: a failed stage may still hold its secrets on disk (the next
 * recovery retries it), an in-flight one is in use, and a published one's
 * destination is how check tells a published tree from an orphan. Every
 * state is tried, each record as old as can be. */
static void test_gc_every_state(void **state)
{
	struct fixture *fx = *state;
	struct sl_error err = { 0 };
	char ids[SL_STATE_COUNT_][STORE_ID_LEN + 1];
	struct store_record rec;
	char sql[300];
	sqlite3 *db;
	sqlite3_stmt *q;

	for (int st = 0; st < SL_STATE_COUNT_; st++) {
		make_stage(fx, ids[st], NULL, false);
		snprintf(sql, sizeof(sql),
			 "UPDATE stages SET state = %d, updated_at = 0, reason = %s WHERE id = '%.*s'", st,
			 st == SL_STATE_FAILED ? "'cannot remove: test'" : "reason", STORE_ID_LEN, ids[st]);
		exec_sql(fx, sql);
	}
	int deleted = sl_recover_gc(fx->store, 0, &err);

	for (int st = 0; st < SL_STATE_COUNT_; st++) {
		bool gone = st == SL_STATE_RELEASED || st == SL_STATE_ABORTED || st == SL_STATE_RECOVERED;
		int r = store_stage_get(fx->store, ids[st], &rec, NULL);

		if (gone && r != -ENOENT)
			fail_msg("gc kept a %s stage (%d)", sl_store_state_name(st), r);
		if (!gone && r != 0)
			fail_msg("gc deleted a %s stage (%d)", sl_store_state_name(st), r);
		if (!gone)
			assert_int_equal(rec.state, st);
	}
	assert_int_equal(deleted, 3);
	/* Their entries went with them, and only theirs. */
	assert_int_equal(sqlite3_open(fx->sb.db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT count(*) FROM entries WHERE stage NOT IN (SELECT rowid FROM "
					    "stages)",
					    -1, &q, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(q, 0), 0);
	sqlite3_finalize(q);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(DISTINCT stage) FROM entries", -1, &q, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(q, 0), SL_STATE_COUNT_ - 3);
	sqlite3_finalize(q);
	sqlite3_close(db);
	/* A second pass finds nothing more. */
	assert_int_equal(sl_recover_gc(fx->store, 0, &err), 0);
	printf("gc: released, aborted and recovered records deleted; the other %d states kept\n", SL_STATE_COUNT_ - 3);
}

/* A FUSE root whose daemon died and came back on the same files: a new
 * device number and no birth time. The stage's own directory is known by
 * its inode and its marker; without the marker (or with another stage's)
 * the same inode proves nothing. */
static void test_new_device_without_birth_time(void **state)
{
	struct fixture *fx = *state;
	char id[STORE_ID_LEN + 1], sql[256], top[600], marker[700];
	struct sl_recover_report rep;
	sqlite3 *db;

	for (int with_marker = 1; with_marker >= 0; with_marker--) {
		make_stage(fx, id, NULL, false);
		snprintf(top, sizeof(top), "%s/stage-%s", fx->sb.root, id);
		snprintf(marker, sizeof(marker), "%s/.stagelog", top);
		if (!with_marker)
			write_path(marker, "stagelog stage marker 1\nstage 0123456789abcdef0123456789abcdef\n", 0600);
		assert_int_equal(sqlite3_open(fx->sb.db, &db), SQLITE_OK);
		snprintf(sql, sizeof(sql), "UPDATE stages SET dev = dev + 1, btime = 0 WHERE id = '%s'", id);
		assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
		sqlite3_close(db);
		recover(fx, &rep, NULL);
		if (with_marker) {
			assert_int_equal(rep.n_recovered, 1);
			assert_int_equal(access(top, F_OK), -1);
		} else {
			assert_int_equal(rep.n_failed, 1);
			assert_non_null(strstr(rep.failed[0].reason, "not the directory the stage created"));
			assert_int_equal(access(top, F_OK), 0);
		}
		sl_recover_report_finish(&rep);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_live_and_stale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inherited_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pid_reuse_boot_and_namespace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zombie_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_owner_name_like_zombie, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_recoverer_reclaimed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_recoverers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forget_gc_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_nested_and_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_one_snapshot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_old_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_every_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampered_negative_seq, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_device_without_birth_time, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
