/* SPDX-License-Identifier: MIT */
/*
 * test-basic.c: basic/'s error channel. Each writer of struct sl_error
 * (keep the first, replace, add context, set flags) is checked for what
 * it keeps, what it changes and what it returns. And the reserve of
 * descriptors, by what it finds free.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fd-util.h"
#include "macro.h"

static void err_keeps_the_first(void **state)
{
	struct sl_error e = { 0 };

	(void)state;
	assert_int_equal(sl_err(&e, -ENOENT, "inner: %s", "gone"), -ENOENT);
	assert_int_equal(sl_err(&e, -EIO, "outer"), -EIO);
	assert_int_equal(e.code, -ENOENT);
	assert_string_equal(e.msg, "inner: gone");
	assert_int_equal(sl_err(NULL, -EIO, "nowhere"), -EIO);
}

static void replace_keeps_the_last(void **state)
{
	struct sl_error e = { 0 };

	(void)state;
	sl_err(&e, -ENOENT, "first");
	assert_int_equal(sl_err_replace(&e, -EBUSY, "last %d", 2), -EBUSY);
	assert_int_equal(e.code, -EBUSY);
	assert_string_equal(e.msg, "last 2");
	assert_int_equal(sl_err_replace(NULL, -EIO, "nowhere"), -EIO);
}

static void wrap_adds_context(void **state)
{
	struct sl_error e = { 0 }, none = { 0 };
	char big[sizeof(e.msg) + 10];

	(void)state;
	sl_err(&e, -EACCES, "open: /x: denied");
	assert_int_equal(sl_err_wrap(&e, "cannot stage '%s'", "gw"), -EACCES);
	assert_string_equal(e.msg, "cannot stage 'gw': open: /x: denied");
	assert_int_equal(e.code, -EACCES);
	/* Nothing to wrap: nothing changes, and the code says so. */
	assert_int_equal(sl_err_wrap(&none, "context"), 0);
	assert_int_equal(none.code, 0);
	assert_string_equal(none.msg, "");
	assert_int_equal(sl_err_wrap(NULL, "context"), 0);
	/* A long message is cut, never overrun, and stays a string. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	sl_err_replace(&e, -EIO, "%s", big);
	sl_err_wrap(&e, "ctx");
	assert_int_equal(strlen(e.msg), sizeof(e.msg) - 1);
	assert_memory_equal(e.msg, "ctx: aaa", 8);
}

static void flag_ors_in(void **state)
{
	struct sl_error e = { 0 };

	(void)state;
	sl_err_flag(&e, SL_ERROR_CANTCREAT);
	sl_err_flag(&e, SL_ERROR_STAGE_FAILED);
	assert_int_equal(e.flags, SL_ERROR_CANTCREAT | SL_ERROR_STAGE_FAILED);
	sl_err_flag(NULL, SL_ERROR_CANTCREAT);
	sl_err_clear(&e);
	assert_int_equal(e.flags, 0);
	assert_int_equal(e.code, 0);
}

static void numbers_read_strictly(void **state)
{
	const char *s;
	long long v = 7;
	unsigned long long u = 7;

	(void)state;
	s = "123 rest";
	assert_true(read_ll(&s, &v));
	assert_int_equal(v, 123);
	assert_string_equal(s, " rest");
	s = "-9223372036854775808:";
	assert_true(read_ll(&s, &v));
	assert_true(v == INT64_MIN);
	assert_string_equal(s, ":");
	/* One past the end either way, and no number at all: refused, and
	 * neither the value nor the position moves. */
	for (const char *const *bad = (const char *const[]){ "9223372036854775808", "-9223372036854775809", "", " 1",
							     "+1", "-", "x1", NULL };
	     *bad; bad++) {
		s = *bad;
		v = 7;
		assert_false(read_ll(&s, &v));
		assert_ptr_equal(s, *bad);
		assert_int_equal(v, 7);
	}
	s = "18446744073709551615";
	assert_true(read_ull(&s, &u));
	assert_true(u == UINT64_MAX);
	assert_string_equal(s, "");
	for (const char *const *bad = (const char *const[]){ "18446744073709551616", "-1", " 1", "", NULL }; *bad;
	     bad++) {
		s = *bad;
		u = 7;
		assert_false(read_ull(&s, &u));
		assert_ptr_equal(s, *bad);
		assert_int_equal(u, 7);
	}
}

/* In a child (it lowers its limit): 100 descriptors, the numbers up to
 * 52 open, 99 the read end of a pipe whose writer is gone (it polls
 * POLLHUP, not POLLNVAL): 46 free, and the limit cannot be raised. */
static int reserve_in_child(void)
{
	struct rlimit rl = { 100, 100 };
	size_t free_fds = 0;
	int p[2], fd;

	if (pipe(p) < 0 || setrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 10;
	if (close(p[1]) < 0 || dup2(p[0], 99) != 99 || close(p[0]) < 0)
		return 11;
	/* Each open takes the lowest free number: once one gets 52, every
	 * number below it is open. */
	do
		fd = dup(STDIN_FILENO);
	while (fd >= 0 && fd < 52);
	if (fd != 52)
		return 12;
	if (fd_reserve(47, &free_fds) != -EMFILE || free_fds != 46)
		return 13;
	/* 54 to 99 free: 46, though every number from 54 up, past the
	 * limit too, names nothing. */
	if (close(99) < 0 || dup2(STDIN_FILENO, 53) != 53 || fd_reserve(47, &free_fds) != -EMFILE || free_fds != 46)
		return 17;
	/* 53 to 99 free: the highest 47 numbers, found by the poll. */
	if (close(53) < 0 || fd_reserve(47, NULL) != 0)
		return 14;
	/* Still 47 free, but one of the highest is open: counted by opening. */
	if (dup2(STDIN_FILENO, 60) != 60 || close(10) < 0 || fd_reserve(47, NULL) != 0)
		return 15;
	/* 46 free again (10, 11, 53 to 59, 61 to 97), counted by opening. */
	if (close(11) < 0 || dup2(STDIN_FILENO, 99) != 99 || dup2(STDIN_FILENO, 98) != 98 ||
	    fd_reserve(47, &free_fds) != -EMFILE || free_fds != 46)
		return 16;
	return 0;
}

static void reserve_counts_what_is_free(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(reserve_in_child());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(err_keeps_the_first),   cmocka_unit_test(replace_keeps_the_last),
		cmocka_unit_test(wrap_adds_context),     cmocka_unit_test(flag_ors_in),
		cmocka_unit_test(numbers_read_strictly), cmocka_unit_test(reserve_counts_what_is_free),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
