/* SPDX-License-Identifier: MIT */
/* test-store.c: the SQLite log: creation and modes, reopening, refusing a
 * newer or corrupt store untouched, and concurrent writers. */
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "stage-private.h"
#include "store-private.h"

static int setup(void **state)
{
	struct sandbox *sb = calloc(1, sizeof(*sb));
	sandbox_init(sb);
	*state = sb;
	return 0;
}

static int teardown(void **state)
{
	sandbox_finish(*state);
	free(*state);
	return 0;
}

static void test_create_modes(void **state)
{
	struct sandbox *sb = *state;
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;
	char path[700], nested[600];
	struct stat st;

	/* Missing parent folders are created 0700, the file 0600, whatever
	 * the umask says. */
	mode_t old = umask(0);
	snprintf(nested, sizeof(nested), "%s/a/b/stagelog.db", sb->dbdir);
	assert_int_equal(sl_store_open(nested, &s, &err), 0);
	umask(old);
	assert_int_equal(stat(nested, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	snprintf(path, sizeof(path), "%s/a/b", sb->dbdir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	snprintf(path, sizeof(path), "%s-wal", nested);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	sl_store_close(s);

	/* Reopen: same schema, no error. */
	s = NULL;
	assert_int_equal(sl_store_open(nested, &s, &err), 0);
	sl_store_close(s);
}

static void test_symlink_refused(void **state)
{
	struct sandbox *sb = *state;
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;
	char real[512], wal[600];

	snprintf(real, sizeof(real), "%s/real.db", sb->dbdir);
	assert_int_equal(sl_store_open(real, &s, &err), 0);
	sl_store_close(s);
	assert_int_equal(symlink(real, sb->db), 0);
	s = NULL;
	assert_int_equal(sl_store_open(sb->db, &s, &err), -EPERM);
	assert_null(s);
	assert_non_null(strstr(err.msg, "is a symlink"));
	assert_non_null(strstr(err.msg, sb->db));
	/* Not created through it either, dangling or read-only. */
	assert_int_equal(unlink(sb->db), 0);
	assert_int_equal(symlink("missing.db", sb->db), 0);
	memset(&err, 0, sizeof(err));
	assert_int_equal(sl_store_open(sb->db, &s, &err), -EPERM);
	assert_non_null(strstr(err.msg, "is a symlink"));
	memset(&err, 0, sizeof(err));
	assert_int_equal(sl_store_open_flags(sb->db, SL_STORE_OPEN_NOCREATE, &s, &err), -EPERM);
	assert_non_null(strstr(err.msg, "is a symlink"));
	snprintf(wal, sizeof(wal), "%s/missing.db", sb->dbdir);
	assert_int_equal(access(wal, F_OK), -1);
	/* A -wal that is a symlink would have SQLite write through it. */
	assert_int_equal(unlink(sb->db), 0);
	snprintf(wal, sizeof(wal), "%s-wal", real);
	assert_int_equal(unlink(wal), 0);
	assert_int_equal(symlink("/dev/null", wal), 0);
	memset(&err, 0, sizeof(err));
	assert_int_equal(sl_store_open(real, &s, &err), -EPERM);
	assert_non_null(strstr(err.msg, "-wal: is a symlink"));
}

/* Opens path expecting a refusal whose message holds what and where. */
static void assert_refused(const char *path, const char *what, const char *where)
{
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;

	assert_int_equal(sl_store_open(path, &s, &err), -EPERM);
	assert_null(s);
	if (!strstr(err.msg, what) || !strstr(err.msg, where))
		fail_msg("message '%s' lacks '%s' or '%s'", err.msg, what, where);
	memset(&err, 0, sizeof(err));
	assert_int_equal(sl_store_open_flags(path, SL_STORE_OPEN_NOCREATE, &s, &err), -EPERM);
	assert_null(s);
}

/*
 * The store is ours (issue 10, point 2): a store file or folder that
 * another user owns or that group or others may write is refused, and
 * nothing is written to it. The chown cases need root; as another user the
 * rules are checked in a child that becomes nobody.
 */
static void test_foreign_refused(void **state)
{
	struct sandbox *sb = *state;
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;
	char dir[512], db[600], wal[620];
	struct stat st;

	assert_int_equal(sl_store_open(sb->db, &s, &err), 0);
	sl_store_close(s);

	/* The file writable by group or others. */
	assert_int_equal(chmod(sb->db, 0660), 0);
	assert_refused(sb->db, "writable by group or others", sb->db);
	assert_int_equal(chmod(sb->db, 0606), 0);
	assert_refused(sb->db, "writable by group or others", sb->db);
	/* Readable by others is not a refusal. */
	assert_int_equal(chmod(sb->db, 0644), 0);
	assert_int_equal(sl_store_open(sb->db, &s, &err), 0);
	sl_store_close(s);
	assert_int_equal(chmod(sb->db, 0600), 0);

	/* The folder writable by group or others, sticky or not: another
	 * user could replace the file or plant a -wal or a hot -journal. */
	for (int i = 0; i < 3; i++) {
		static const mode_t modes[] = { 0770, 0707, 01777 };
		assert_int_equal(chmod(sb->dbdir, modes[i]), 0);
		assert_refused(sb->db, "writable by group or others", sb->dbdir);
	}
	assert_int_equal(chmod(sb->dbdir, 0700), 0);
	/* A missing store in such a folder is not created. */
	snprintf(dir, sizeof(dir), "%s/shared", sb->dbdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chmod(dir, 0777), 0);
	snprintf(db, sizeof(db), "%s/new.db", dir);
	assert_refused(db, "writable by group or others", dir);
	assert_int_equal(access(db, F_OK), -1);

	/* A -wal that is not ours. */
	snprintf(wal, sizeof(wal), "%s-wal", sb->db);
	assert_int_equal(stat(wal, &st), 0);
	assert_int_equal(chmod(wal, 0666), 0);
	assert_refused(sb->db, "writable by group or others", wal);
	assert_int_equal(chmod(wal, 0600), 0);

	if (geteuid() != 0) {
		print_message("not root: the ownership cases are skipped\n");
		return;
	}
	/* Root accepts only root's: a file or folder of uid 65534. */
	assert_int_equal(chown(sb->db, 65534, 65534), 0);
	assert_refused(sb->db, "owned by another user", sb->db);
	assert_int_equal(chown(sb->db, 0, 0), 0);
	assert_int_equal(chown(wal, 65534, 65534), 0);
	assert_refused(sb->db, "owned by another user", wal);
	assert_int_equal(chown(wal, 0, 0), 0);
	assert_int_equal(chown(sb->dbdir, 65534, 65534), 0);
	assert_refused(sb->db, "owned by another user", sb->dbdir);
	assert_int_equal(chown(sb->dbdir, 0, 0), 0);
	assert_int_equal(sl_store_open(sb->db, &s, &err), 0);
	sl_store_close(s);

	/* Another user: its own store is used, one owned by a third user is
	 * refused, and one owned by root is trusted (root could do anything
	 * anyway), like a staging root. */
	snprintf(dir, sizeof(dir), "%s/nobody", sb->dbdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chown(dir, 65534, 65534), 0);
	assert_int_equal(chmod(sb->dbdir, 0711), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sl_error e = { 0 };
		struct sl_store *cs = NULL;
		char mine[700];
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		snprintf(mine, sizeof(mine), "%s/mine.db", dir);
		if (sl_store_open(mine, &cs, &e) < 0) {
			fprintf(stderr, "nobody: %s\n", e.msg);
			_exit(11);
		}
		sl_store_close(cs);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	snprintf(db, sizeof(db), "%s/mine.db", dir);
	assert_int_equal(chown(db, 65533, 65533), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sl_error e = { 0 };
		struct sl_store *cs = NULL;
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		_exit(sl_store_open(db, &cs, &e) == -EPERM && strstr(e.msg, "owned by another user") ? 0 : 12);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(*len + 1);
	assert_int_equal(fread(buf, 1, *len, f), *len);
	fclose(f);
	return buf;
}

static void assert_untouched(const struct sandbox *sb, const char *before, size_t len)
{
	char path[512];
	size_t n;
	char *after = slurp(sb->db, &n);

	assert_int_equal(n, len);
	assert_memory_equal(after, before, len);
	free(after);
	snprintf(path, sizeof(path), "%s-wal", sb->db);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s-journal", sb->db);
	assert_int_equal(access(path, F_OK), -1);
}

static void test_newer_refused(void **state)
{
	struct sandbox *sb = *state;
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;
	sqlite3 *db;
	size_t len;
	char *before;

	/* A plain rollback-journal database, as a newer stagelog might leave. */
	assert_int_equal(sqlite3_open(sb->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "CREATE TABLE future(x); PRAGMA user_version=99", NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	before = slurp(sb->db, &len);
	assert_int_equal(sl_store_open(sb->db, &s, &err), -EPROTO);
	assert_null(s);
	assert_non_null(strstr(err.msg, "newer"));
	assert_untouched(sb, before, len);
	free(before);
}

static void test_corrupt_refused(void **state)
{
	struct sandbox *sb = *state;
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;
	char junk[8192];
	size_t len;
	char *before;

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 7 + 13);
	int fd = open(sb->db, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	before = slurp(sb->db, &len);
	assert_int_equal(sl_store_open(sb->db, &s, &err), -EBADMSG);
	assert_null(s);
	assert_untouched(sb, before, len);
	free(before);
}

static void test_corrupt_header_of_real_db(void **state)
{
	struct sandbox *sb = *state;
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;
	sqlite3 *db;
	size_t len;
	char *before;

	/* A real database whose header was overwritten. */
	assert_int_equal(sqlite3_open(sb->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	int fd = open(sb->db, O_WRONLY);
	assert_int_equal(pwrite(fd, "garbage garbage!", 16, 0), 16);
	close(fd);
	before = slurp(sb->db, &len);
	assert_int_equal(sl_store_open(sb->db, &s, &err), -EBADMSG);
	assert_null(s);
	/* Refused, and left exactly as it was: no byte rewritten, no WAL or
	 * journal made beside it. */
	assert_untouched(sb, before, len);
	free(before);
}

/* Two processes inserting and updating stages at once: BEGIN IMMEDIATE,
 * the busy timeout and the retry keep every call from failing busy. */
static void test_concurrent_writers(void **state)
{
	struct sandbox *sb = *state;
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;
	pid_t pids[2];

	assert_int_equal(sl_store_open(sb->db, &s, &err), 0);
	sl_store_close(s);
	for (int p = 0; p < 2; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			struct sl_store *cs = NULL;
			if (sl_store_open(sb->db, &cs, NULL) < 0)
				_exit(2);
			for (int i = 0; i < 200; i++) {
				struct store_record rec = { 0 };
				snprintf(rec.id, sizeof(rec.id), "%08x%08x%016x", p, i, 0);
				snprintf(rec.label, sizeof(rec.label), "stage");
				snprintf(rec.root, sizeof(rec.root), "/dev/shm/x");
				snprintf(rec.topdir, sizeof(rec.topdir), "stage-%s", rec.id);
				proc_identity(0, &rec.owner);
				rec.created_ms = epoch_ms();
				if (store_stage_insert(cs, &rec, NULL, NULL) < 0)
					_exit(3);
				struct sl_error e = { 0 };
				if (store_stage_transition(cs, rec.rowid, 1u << SL_STATE_STAGING, SL_STATE_ABORTED,
							   NULL, false, &e) < 0) {
					fprintf(stderr, "child %d: %s\n", p, e.msg);
					_exit(4);
				}
			}
			sl_store_close(cs);
			_exit(0);
		}
	}
	for (int p = 0; p < 2; p++) {
		int status;
		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
}

/* A writer that leaves the WAL past its bound checkpoints as it closes
 * the store, but that is optional work: with another process holding the
 * write lock, sl_store_close() returns at once instead of waiting out the
 * busy deadline (5 s). */
static void test_close_never_waits(void **state)
{
	struct sandbox *sb = *state;
	struct sl_store *s = NULL;
	sqlite3 *db = NULL;
	int64_t t0;

	assert_int_equal(sl_store_open(sb->db, &s, NULL), 0);
	for (int i = 0; i < 40; i++) {
		struct store_record rec = { 0 };
		snprintf(rec.id, sizeof(rec.id), "%016x%016x", i, 0);
		snprintf(rec.label, sizeof(rec.label), "stage");
		snprintf(rec.root, sizeof(rec.root), "/dev/shm/x");
		snprintf(rec.topdir, sizeof(rec.topdir), "stage-%s", rec.id);
		proc_identity(0, &rec.owner);
		rec.created_ms = epoch_ms();
		assert_int_equal(store_stage_insert(s, &rec, NULL, NULL), 0);
	}
	/* Another connection reads (so that the checkpoint cannot finish
	 * either) and holds the write lock. */
	assert_int_equal(sqlite3_open(sb->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE; SELECT count(*) FROM stages;", NULL, NULL, NULL),
			 SQLITE_OK);
	t0 = epoch_ms();
	sl_store_close(s);
	assert_true(epoch_ms() - t0 < 1000);
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db);
}

/*
 * Many processes opening one missing store at once all succeed: the file's
 * creation, the switch to WAL and the first migration race each other
 * (issue 9, point 6). Each round uses a fresh path with missing folders, and
 * the children start together: each blocks on a pipe the parent closes.
 * STAGELOG_RACE_ROUNDS and STAGELOG_RACE_PROCS change the defaults.
 */
static int env_int(const char *name, int def)
{
	const char *v = getenv(name);
	return v && atoi(v) > 0 ? atoi(v) : def;
}

static int count_stage(const struct store_record *rec, void *userdata)
{
	(void)rec;
	(*(int *)userdata)++;
	return 0;
}

static void test_open_race(void **state)
{
	struct sandbox *sb = *state;
	int rounds = env_int("STAGELOG_RACE_ROUNDS", 40), nproc = env_int("STAGELOG_RACE_PROCS", 6);
	int failures = 0;

	for (int round = 0; round < rounds; round++) {
		char path[512];
		int go[2];
		pid_t pids[64];

		snprintf(path, sizeof(path), "%s/r%d/state/stagelog.db", sb->dbdir, round);
		assert_int_equal(pipe(go), 0);
		for (int p = 0; p < nproc && p < 64; p++) {
			pids[p] = fork();
			assert_true(pids[p] >= 0);
			if (pids[p] == 0) {
				struct sl_error e = { 0 };
				struct sl_store *cs = NULL;
				char c;
				int r;

				close(go[1]);
				(void)!read(go[0], &c, 1);
				r = sl_store_open(path, &cs, &e);
				if (r < 0) {
					fprintf(stderr, "round %d child %d: %d %s\n", round, p, r, e.msg);
					_exit(1);
				}
				/* A read after the open: the schema is there. */
				int n = 0;
				r = store_stage_foreach(cs, true, NULL, count_stage, &n, &e);
				if (r < 0) {
					fprintf(stderr, "round %d child %d: list: %d %s\n", round, p, r, e.msg);
					_exit(2);
				}
				sl_store_close(cs);
				_exit(0);
			}
		}
		close(go[0]);
		close(go[1]);
		for (int p = 0; p < nproc && p < 64; p++) {
			int status;
			assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				failures++;
		}
	}
	if (failures)
		fprintf(stderr, "open race: %d failed opens in %d rounds of %d processes\n", failures, rounds, nproc);
	assert_int_equal(failures, 0);
}

/* SL_STORE_OPEN_NOCREATE (issue 10, point 3): a missing store or folder is
 * -ENOENT and nothing is created; an existing store, even an empty file
 * whose creator has not written it yet, opens and is usable. */
static void test_open_nocreate(void **state)
{
	struct sandbox *sb = *state;
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;
	char path[700], dir[600];
	int n = 0;

	snprintf(dir, sizeof(dir), "%s/missing", sb->dbdir);
	snprintf(path, sizeof(path), "%s/sub/stagelog.db", dir);
	assert_int_equal(sl_store_open_flags(path, SL_STORE_OPEN_NOCREATE, &s, &err), -ENOENT);
	assert_null(s);
	assert_non_null(strstr(err.msg, dir));
	assert_int_equal(access(dir, F_OK), -1);
	memset(&err, 0, sizeof(err));
	assert_int_equal(sl_store_open_flags(sb->db, SL_STORE_OPEN_NOCREATE, &s, &err), -ENOENT);
	assert_null(s);
	assert_int_equal(count_entries(sb->dbdir), 0);
	assert_int_equal(sl_store_open_flags(sb->db, 0x80, &s, &err), -EINVAL);
	assert_int_equal(count_entries(sb->dbdir), 0);

	/* An empty file is an empty store. */
	int fd = open(sb->db, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(sl_store_open_flags(sb->db, SL_STORE_OPEN_NOCREATE, &s, &err), 0);
	assert_int_equal(store_stage_foreach(s, true, NULL, count_stage, &n, &err), 0);
	assert_int_equal(n, 0);
	sl_store_close(s);
	s = NULL;
	assert_int_equal(sl_store_open_flags(sb->db, SL_STORE_OPEN_NOCREATE, &s, &err), 0);
	sl_store_close(s);
}

static void test_prefix_and_errno(void **state)
{
	struct sandbox *sb = *state;
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;
	char id[STORE_ID_LEN + 1], cand[4][STORE_ID_LEN + 1];
	size_t n = 0;

	assert_int_equal(sl_store_open(sb->db, &s, &err), 0);
	const char *ids[] = { "abcd0000000000000000000000000001", "abcd0000000000000000000000000002",
			      "ef01000000000000000000000000000f" };
	for (int i = 0; i < 3; i++) {
		struct store_record rec = { 0 };
		snprintf(rec.id, sizeof(rec.id), "%s", ids[i]);
		snprintf(rec.label, sizeof(rec.label), "stage");
		snprintf(rec.root, sizeof(rec.root), "/dev/shm/x");
		snprintf(rec.topdir, sizeof(rec.topdir), "stage-%s", rec.id);
		assert_int_equal(store_stage_insert(s, &rec, NULL, NULL), 0);
	}
	assert_int_equal(store_resolve_prefix(s, "ef01", id, cand, 4, &n, NULL), 0);
	assert_string_equal(id, ids[2]);
	assert_int_equal(store_resolve_prefix(s, "abcd", id, cand, 4, &n, NULL), -ENOTUNIQ);
	assert_int_equal(n, 2);
	assert_string_equal(cand[1], ids[1]);
	assert_int_equal(store_resolve_prefix(s, "abc", id, cand, 4, &n, NULL), -EINVAL);
	assert_int_equal(store_resolve_prefix(s, "9999", id, cand, 4, &n, NULL), -ENOENT);
	assert_int_equal(store_resolve_prefix(s, "ABCD", id, cand, 4, &n, NULL), -EINVAL);
	/* A stage moves only from the states it is allowed to leave. */
	struct store_record rec;
	assert_int_equal(store_stage_get(s, ids[0], &rec, NULL), 0);
	assert_int_equal(store_stage_transition(s, rec.rowid, 1u << SL_STATE_READY, SL_STATE_RELEASING, NULL, false,
						&err),
			 -ESTALE);
	sl_store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_header_of_real_db, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_never_waits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prefix_and_errno, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_race, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_nocreate, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
