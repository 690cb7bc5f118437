/* SPDX-License-Identifier: MIT */
/*
 * test-threads.c: the thread rule the public headers state, exercised.
 * Four threads of one process, each with its own struct sl_store on one
 * database file (and a second store of its own for releasing by id) and its
 * own staging root, open a fresh store together, recover, stage (paths, a
 * tree copy, an OCI bundle), list, show, resolve, publish, release, abort,
 * check and gc at the same time; some recoveries look at every root, so
 * they judge the other threads' live stages while those are being built.
 * No call may fail, no live stage may be touched (each thread reads its
 * stage back before it lets it go), and in the end every root is empty and
 * no record is in flight. `./dev test` runs this suite under
 * ThreadSanitizer too, where any data race in the library fails it.
 *
 * cmocka's assertions longjmp out of the failing test, which a thread
 * other than the test's own must not do: the workers note their first
 * failure instead, and the test asserts on the notes after the join.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "proc.h"
#include "sl-oci.h"
#include "sl-recover.h"

#define THREADS 4
#define ROUNDS 6         /* per thread; each kind of round runs twice */
#define STALE_PER_ROOT 2 /* stages left behind by dead processes */
#define PUBLISHED_PER_THREAD (ROUNDS / 3)

static const char packaged[] =
	"{\"ociVersion\":\"1.0.2\",\"process\":{\"args\":[\"/bin/sh\"],"
	"\"env\":[\"PATH=/bin\"]},\"root\":{\"path\":\"rootfs\"},"
	"\"linux\":{\"uidMappings\":[{\"containerID\":0,\"hostID\":0,\"size\":1}]}}";

struct fixture {
	struct sandbox sb;
	char src[400];
	char bundle[400];
	char fresh_db[400]; /* created by the threads, all at once */
	pthread_barrier_t start, recovered;
};

struct worker {
	struct fixture *fx;
	int n;
	pthread_t self;
	char root[400];
	char label[16];
	char failure[1024]; /* the first failure, "" when none */
	unsigned long progress_calls;
	bool progress_elsewhere; /* a progress callback ran in another thread */
	char published[PUBLISHED_PER_THREAD][600];
	size_t n_published;
};

static void note(struct worker *w, int line, const char *what, const struct sl_error *err)
{
	if (!w->failure[0])
		snprintf(w->failure, sizeof(w->failure), "thread %d, line %d: %s%s%s", w->n, line, what,
			 err && err->msg[0] ? ": " : "", err ? err->msg : "");
}

/* In a worker: note the failure and end the worker. */
#define CHECK(c, err)                               \
	do {                                        \
		if (!(c)) {                         \
			note(w, __LINE__, #c, err); \
			goto out;                   \
		}                                   \
	} while (0)

static void progress(const struct sl_progress *p, void *userdata)
{
	struct worker *w = userdata;

	(void)p;
	w->progress_calls++;
	if (!pthread_equal(pthread_self(), w->self))
		w->progress_elsewhere = true;
}

struct count {
	const char *label;
	const char *id;
	int n;
	char state[16];
};

/* Counts the stages of c->label (of id c->id, when set), noting the state
 * of the last. */
static int count_label(const struct sl_stage_info *info, void *userdata)
{
	struct count *c = userdata;

	if ((c->label && strcmp(info->label, c->label) != 0) || (c->id && strcmp(info->id, c->id) != 0))
		return 0;
	c->n++;
	snprintf(c->state, sizeof(c->state), "%s", info->state_name);
	return 0;
}

static int show_stage(const struct sl_stage_info *info, void *userdata)
{
	struct count *c = userdata;

	if (strcmp(info->id, c->id) != 0)
		return -EIO;
	snprintf(c->state, sizeof(c->state), "%s", info->state_name);
	return 0;
}

static int count_entry(const struct sl_entry_info *info, void *userdata)
{
	struct count *c = userdata;

	(void)info;
	c->n++;
	return 0;
}

/* The state of stage id, as sl_recover_show() reports it, into c->state, and as a
 * message into *seen (for a failure's note). */
static int state_of(struct sl_store *s, const char *id, struct count *c, struct sl_error *err, struct sl_error *seen)
{
	int r;

	*c = (struct count){ .id = id };
	r = sl_recover_show(s, id, show_stage, NULL, c, err);
	snprintf(seen->msg, sizeof(seen->msg), "the stage is %s", c->state);
	return r;
}

/* Whether the stage's token file holds exactly CANARY. */
static bool token_intact(const struct sl_stage *st, const char *path)
{
	char buf[64];
	int fd = openat(sl_stage_fd(st), path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	return n == (ssize_t)strlen(CANARY) && memcmp(buf, CANARY, (size_t)n) == 0;
}

static bool gone(const char *path)
{
	struct stat st;

	return lstat(path, &st) < 0 && errno == ENOENT;
}

/* One round: stage paths and a copy, read them back, list, show, resolve,
 * then release. */
static bool round_release(struct worker *w, struct sl_store *s)
{
	struct sl_stage_options o = { .label = w->label, .progress = progress, .progress_userdata = w };
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	struct count c;
	char id[SL_ID_SIZE], full[SL_ID_SIZE], path[600];
	bool ok = false;

	CHECK(sl_stage_begin(s, w->root, &o, &st, &err) == 0, &err);
	CHECK(sl_stage_mkdir(st, "etc", 0755, &err) == 0, &err);
	CHECK(sl_stage_write_file(st, "etc/token", CANARY, strlen(CANARY), 0600, &err) == 0, &err);
	CHECK(sl_stage_symlink(st, "token", "etc/link", &err) == 0, &err);
	CHECK(sl_stage_copy_tree(st, AT_FDCWD, w->fx->src, "rootfs", &err) == 0, &err);
	CHECK(sl_stage_ready(st, &err) == 0, &err);
	CHECK(token_intact(st, "etc/token"), NULL);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	snprintf(path, sizeof(path), "%s", sl_stage_path(st));

	/* (An earlier stage of ours may still be listed: a recovery in
	 * another thread that found its directory gone finishes its record.) */
	c = (struct count){ .label = w->label, .id = id };
	CHECK(sl_recover_list(s, 0, w->label, count_label, &c, &err) == 0, &err);
	CHECK(c.n == 1 && strcmp(c.state, "ready") == 0, NULL);
	c = (struct count){ .id = id };
	CHECK(sl_recover_show(s, id, show_stage, count_entry, &c, &err) == 0, &err);
	CHECK(strcmp(c.state, "ready") == 0, NULL);
	CHECK(c.n > 20, NULL); /* the top directory, three paths, the copy */
	char prefix[9];
	memcpy(prefix, id, 8);
	prefix[8] = '\0';
	CHECK(sl_recover_resolve_id(s, prefix, full, NULL, 0, NULL, &err) == 0, &err);
	CHECK(strcmp(full, id) == 0, NULL);

	CHECK(sl_stage_release(st, &err) == 0, &err);
	CHECK(gone(path), NULL);
	ok = true;
out:
	sl_stage_free(st);
	return ok;
}

/* One round: an OCI bundle staged in one call, let go, and released by id
 * through a second store of the same thread's. */
static bool round_oci(struct worker *w, struct sl_store *s, struct sl_store *other)
{
	const struct sl_env_var env[] = { { "TOKEN", CANARY }, { "PATH", NULL } };
	struct sl_oci_options o = {
		.root = w->root,
		.bundle = w->fx->bundle,
		.stage = { .label = w->label },
		.env = env,
		.n_env = 2,
	};
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	struct stat sb;
	char id[SL_ID_SIZE], path[600];
	bool ok = false;

	CHECK(sl_oci_stage(s, &o, &st, &err) == 0, &err);
	CHECK(fstatat(sl_stage_fd(st), "config.json", &sb, AT_SYMLINK_NOFOLLOW) == 0, NULL);
	CHECK(S_ISREG(sb.st_mode) && (sb.st_mode & 07777) == 0600, NULL);
	CHECK(fstatat(sl_stage_fd(st), "rootfs/etc", &sb, AT_SYMLINK_NOFOLLOW) == 0, NULL);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	snprintf(path, sizeof(path), "%s", sl_stage_path(st));
	/* A ready stage outlives its handle; its lock goes with it. */
	sl_stage_free(st);
	st = NULL;
	CHECK(!gone(path), NULL);
	CHECK(sl_stage_release_id(other, id, &err) == 1, &err);
	CHECK(gone(path), NULL);
	ok = true;
out:
	sl_stage_free(st);
	return ok;
}

/* One round: a stage published out of the root (its tree must arrive
 * whole), and one aborted half-way. */
static bool round_publish_abort(struct worker *w, struct sl_store *s)
{
	struct sl_stage_options o = { .label = w->label };
	struct sl_error err = { 0 }, seen = { 0 };
	struct sl_stage *st = NULL;
	struct count c;
	char id[SL_ID_SIZE], path[600], *dest = w->published[w->n_published];
	bool ok = false;

	snprintf(dest, sizeof(w->published[0]), "%s/published-%d-%zu", w->fx->sb.base, w->n, w->n_published);
	CHECK(sl_stage_begin(s, w->root, &o, &st, &err) == 0, &err);
	CHECK(sl_stage_write_file(st, "token", CANARY, strlen(CANARY), 0600, &err) == 0, &err);
	CHECK(sl_stage_ready(st, &err) == 0, &err);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	CHECK(sl_stage_publish(st, dest, &err) == 0, &err);
	w->n_published++;
	sl_stage_free(st);
	st = NULL;
	/* A recovery in another thread that saw the directory leave may hold
	 * the record for a moment; it finds the tree at its destination and
	 * marks it published (the main thread checks that it did). */
	CHECK(state_of(s, id, &c, &err, &seen) == 0, &err);
	CHECK(strcmp(c.state, "published") == 0 || strcmp(c.state, "recovering") == 0, &seen);

	CHECK(sl_stage_begin(s, w->root, &o, &st, &err) == 0, &err);
	CHECK(sl_stage_mkdir(st, "half", 0700, &err) == 0, &err);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	snprintf(path, sizeof(path), "%s", sl_stage_path(st));
	CHECK(sl_stage_abort(st, &err) == 0, &err);
	CHECK(gone(path), NULL);
	/* Once the directory is gone, another thread's recovery may have
	 * finished the record first (docs/design.md, "The store never stops
	 * a removal"): recovered then, but never in flight. */
	CHECK(state_of(s, id, &c, &err, &seen) == 0, &err);
	CHECK(strcmp(c.state, "aborted") == 0 || strcmp(c.state, "recovering") == 0 ||
		      strcmp(c.state, "recovered") == 0,
	      &seen);
	ok = true;
out:
	sl_stage_free(st);
	return ok;
}

/* A recovery of every root, while the other threads stage: their stages
 * are live (this process owns them) and must come through untouched, which
 * their own read-backs check. A stage whose directory another thread has
 * just removed may be finished here, so only failures count. */
static bool recover_all(struct worker *w, struct sl_store *s)
{
	struct sl_recover_report rep = { 0 };
	struct sl_error err = { 0 };
	bool ok = false;

	CHECK(sl_recover_run(s, NULL, &rep, &err) == 0, &err);
	CHECK(rep.n_failed == 0, NULL);
	ok = true;
out:
	sl_recover_report_finish(&rep);
	return ok;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct fixture *fx = w->fx;
	struct sl_store *s = NULL, *other = NULL, *fresh = NULL;
	struct sl_recover_options ro = { .root = w->root };
	struct sl_recover_report rep = { 0 };
	struct sl_check_report check = { 0 };
	struct sl_error err = { 0 };
	struct count c = { .label = w->label };
	const char *roots[] = { w->root };

	/* Every thread creates the same new store at the same moment. */
	pthread_barrier_wait(&fx->start);
	CHECK(sl_store_open(fx->fresh_db, &fresh, &err) == 0, &err);
	CHECK(sl_recover_list(fresh, SL_LIST_ALL, NULL, count_label, &c, &err) == 0, &err);
	CHECK(c.n == 0, NULL);

	CHECK(sl_store_open(fx->sb.db, &s, &err) == 0, &err);
	CHECK(sl_store_open(fx->sb.db, &other, &err) == 0, &err);
	/* This root's stages of dead processes, and nothing else. */
	CHECK(sl_recover_run(s, &ro, &rep, &err) == 0, &err);
	CHECK(rep.n_recovered == STALE_PER_ROOT && rep.n_failed == 0 && rep.n_live == 0, NULL);
	CHECK(count_entries(w->root) == 0, NULL);
	/* Past this point, a recovery of every root finds no dead process's
	 * stage that a thread still counts on recovering itself. */
	pthread_barrier_wait(&fx->recovered);

	for (int k = 0; k < ROUNDS; k++) {
		bool ok;

		switch (k % 3) {
		case 0:
			ok = round_release(w, s);
			break;
		case 1:
			ok = round_oci(w, s, other);
			break;
		default:
			ok = round_publish_abort(w, s);
			break;
		}
		if (!ok || (k % 2 == w->n % 2 && !recover_all(w, s)))
			goto out;
	}

	CHECK(sl_recover_check(s, roots, 1, 0, &check, &err) == 0, &err);
	CHECK(strcmp(check.integrity, "ok") == 0, NULL);
	CHECK(check.n_orphans == 0 && check.n_root_moved == 0, NULL);
	/* Every finished record is younger than a day: nothing to delete. */
	CHECK(sl_recover_gc(s, 86400000, &err) == 0, &err);
	CHECK(w->progress_calls > 0 && !w->progress_elsewhere, NULL);
out:
	sl_recover_check_report_finish(&check);
	sl_recover_report_finish(&rep);
	sl_store_close(fresh);
	sl_store_close(other);
	sl_store_close(s);
	/* A thread that failed before a barrier would leave the others
	 * waiting at it for ever: it fails the test at once instead. */
	if (w->failure[0]) {
		fprintf(stderr, "%s\n", w->failure);
		fflush(stderr);
		_exit(1);
	}
	return NULL;
}

/* A stage in root left by a process that died: ready, its lock gone. */
static void plant_stale(struct fixture *fx, const char *root)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct sl_store *s = NULL;
		struct sl_stage *st = NULL;
		if (sl_store_open(fx->sb.db, &s, NULL) < 0 || sl_stage_begin(s, root, NULL, &st, NULL) < 0 ||
		    sl_stage_write_file(st, "token", CANARY, strlen(CANARY), 0600, NULL) < 0 ||
		    sl_stage_ready(st, NULL) < 0)
			_exit(1);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int count_all(const struct sl_stage_info *info, void *userdata)
{
	(void)info;
	(*(int *)userdata)++;
	return 0;
}

static void test_threads_share_nothing_but_the_file(void **state)
{
	struct fixture *fx = *state;
	struct worker w[THREADS];
	struct sl_store *s = NULL;
	struct sl_error err = { 0 };
	int n;

	memset(w, 0, sizeof(w));
	for (int i = 0; i < THREADS; i++) {
		w[i].fx = fx;
		w[i].n = i;
		snprintf(w[i].root, sizeof(w[i].root), "%s/root-%d", fx->sb.base, i);
		snprintf(w[i].label, sizeof(w[i].label), "thread-%d", i);
		/* Forked before any thread exists. */
		for (int k = 0; k < STALE_PER_ROOT; k++)
			plant_stale(fx, w[i].root);
		assert_int_equal(count_entries(w[i].root), STALE_PER_ROOT);
	}
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&w[i].self, NULL, worker_main, &w[i]), 0);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(w[i].self, NULL), 0);
	for (int i = 0; i < THREADS; i++) {
		if (w[i].failure[0])
			fail_msg("%s", w[i].failure);
		assert_int_equal(count_entries(w[i].root), 0);
		assert_int_equal(w[i].n_published, PUBLISHED_PER_THREAD);
		for (size_t k = 0; k < w[i].n_published; k++) {
			char token[700];
			snprintf(token, sizeof(token), "%s/token", w[i].published[k]);
			assert_true(file_contains(token, CANARY));
			remove_all(w[i].published[k]);
		}
	}

	/* Nothing in flight; every finished record but the published ones
	 * goes to gc: the dead processes' stages, then per thread two
	 * releases, two bundles and two aborts. */
	assert_int_equal(sl_store_open(fx->sb.db, &s, &err), 0);
	n = 0;
	assert_int_equal(sl_recover_list(s, 0, NULL, count_all, &n, &err), 0);
	assert_int_equal(n, 0);
	assert_int_equal(sl_recover_gc(s, 0, &err), THREADS * (STALE_PER_ROOT + ROUNDS));
	n = 0;
	assert_int_equal(sl_recover_list(s, SL_LIST_ALL, NULL, count_all, &n, &err), 0);
	assert_int_equal(n, THREADS * PUBLISHED_PER_THREAD);
	sl_store_close(s);
}

struct identity_job {
	pthread_barrier_t *go;
	struct proc_owner owner;
	char boot_id[BOOT_ID_LEN + 1];
	uint64_t pidns;
	int r;
};

static void *identity_main(void *arg)
{
	struct identity_job *j = arg;

	pthread_barrier_wait(j->go);
	j->r = proc_identity(0, &j->owner);
	if (j->r == 0)
		j->r = proc_boot_id(j->boot_id);
	if (j->r == 0)
		j->r = proc_pidns(&j->pidns);
	return NULL;
}

/* The first reads of this process's identity, which basic/proc.c keeps,
 * made by several threads at the same instant (this test runs first, so
 * nothing has read it yet): each gets the same, whole answer, and under
 * ThreadSanitizer the cache must not race. */
static void test_identity_read_by_threads_at_once(void **state)
{
	struct identity_job j[THREADS];
	pthread_t th[THREADS];
	pthread_barrier_t go;

	(void)state;
	memset(j, 0, sizeof(j));
	assert_int_equal(pthread_barrier_init(&go, NULL, THREADS), 0);
	for (int i = 0; i < THREADS; i++) {
		j[i].go = &go;
		assert_int_equal(pthread_create(&th[i], NULL, identity_main, &j[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&go);
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(j[i].r, 0);
		assert_int_equal(strlen(j[i].boot_id), BOOT_ID_LEN);
		assert_string_equal(j[i].boot_id, j[0].boot_id);
		assert_string_equal(j[i].owner.boot_id, j[0].boot_id);
		assert_true(j[i].pidns != 0);
		assert_true(j[i].pidns == j[0].pidns && j[i].owner.pidns == j[0].pidns);
		assert_int_equal(j[i].owner.pid, getpid());
	}
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	sandbox_init(&fx->sb);
	snprintf(fx->src, sizeof(fx->src), "%s/src", fx->sb.base);
	make_sample_tree(fx->src);
	snprintf(fx->bundle, sizeof(fx->bundle), "%s/bundle", fx->sb.base);
	char p[600];
	snprintf(p, sizeof(p), "%s/rootfs", fx->bundle);
	make_sample_tree(p);
	snprintf(p, sizeof(p), "%s/config.json", fx->bundle);
	write_path(p, packaged, 0644);
	snprintf(fx->fresh_db, sizeof(fx->fresh_db), "%s/fresh/stagelog.db", fx->sb.dbdir);
	assert_int_equal(pthread_barrier_init(&fx->start, NULL, THREADS), 0);
	assert_int_equal(pthread_barrier_init(&fx->recovered, NULL, THREADS), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	pthread_barrier_destroy(&fx->start);
	pthread_barrier_destroy(&fx->recovered);
	sandbox_finish(&fx->sb);
	free(fx);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identity_read_by_threads_at_once),
		cmocka_unit_test_setup_teardown(test_threads_share_nothing_but_the_file, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
