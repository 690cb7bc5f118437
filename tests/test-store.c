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
	struct sl_error err = {0};
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
	struct sl_error err = {0};
	struct sl_store *s = NULL;
	char real[512];

	snprintf(real, sizeof(real), "%s/real.db", sb->dbdir);
	assert_int_equal(sl_store_open(real, &s, &err), 0);
	sl_store_close(s);
	assert_int_equal(symlink(real, sb->db), 0);
	s = NULL;
	assert_true(sl_store_open(sb->db, &s, &err) < 0);
	assert_null(s);
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
	struct sl_error err = {0};
	struct sl_store *s = NULL;
	sqlite3 *db;
	size_t len;
	char *before;

	/* A plain rollback-journal database, as a newer stagelog might leave. */
	assert_int_equal(sqlite3_open(sb->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "CREATE TABLE future(x); PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
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
	struct sl_error err = {0};
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
	struct sl_error err = {0};
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
	struct sl_error err = {0};
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
				struct sl_record rec = {0};
				snprintf(rec.id, sizeof(rec.id), "%08x%08x%016x", p, i, 0);
				snprintf(rec.label, sizeof(rec.label), "stage");
				snprintf(rec.root, sizeof(rec.root), "/dev/shm/x");
				snprintf(rec.topdir, sizeof(rec.topdir), "stage-%s", rec.id);
				proc_identity(0, &rec.owner);
				rec.created_ms = sl_now_ms();
				if (store_stage_insert(cs, &rec, NULL) < 0)
					_exit(3);
				struct sl_error e = {0};
				if (store_stage_transition(cs, rec.rowid, 1u << SL_STATE_STAGING, SL_STATE_ABORTED, NULL,
							   false, &e) < 0) {
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

static void test_prefix_and_errno(void **state)
{
	struct sandbox *sb = *state;
	struct sl_error err = {0};
	struct sl_store *s = NULL;
	char id[SL_ID_LEN + 1], cand[4][SL_ID_LEN + 1];
	size_t n = 0;

	assert_int_equal(sl_store_open(sb->db, &s, &err), 0);
	const char *ids[] = {"abcd0000000000000000000000000001", "abcd0000000000000000000000000002",
			     "ef01000000000000000000000000000f"};
	for (int i = 0; i < 3; i++) {
		struct sl_record rec = {0};
		snprintf(rec.id, sizeof(rec.id), "%s", ids[i]);
		snprintf(rec.label, sizeof(rec.label), "stage");
		snprintf(rec.root, sizeof(rec.root), "/dev/shm/x");
		snprintf(rec.topdir, sizeof(rec.topdir), "stage-%s", rec.id);
		assert_int_equal(store_stage_insert(s, &rec, NULL), 0);
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
	struct sl_record rec;
	assert_int_equal(store_stage_get(s, ids[0], &rec, NULL), 0);
	assert_int_equal(store_stage_transition(s, rec.rowid, 1u << SL_STATE_READY, SL_STATE_RELEASING, NULL, false, &err),
			 -ESTALE);
	sl_store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_symlink_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_header_of_real_db, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prefix_and_errno, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
