/*
 * test-path.c: the lexical rules, table-driven: stage_path_check() for a
 * logged path (relative to the top directory), stage_absolute_root() for a
 * staging root as it is recorded, and the marker file as
 * stage_marker_read() accepts it.
 *//* SPDX-License-Identifier: MIT */
/*
 * test-path.c: the two lexical path rules, table-driven: stage_path_check() for a
 * logged path (relative to the top directory) and stage_absolute_root() for a
 * staging root as it is recorded.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "stage-private.h"

/* A string of n copies of c, in a static buffer per slot. */
static char *rep(int slot, char c, size_t n)
{
	static char bufs[8][2 * PATH_MAX + 2];

	assert_true(n < sizeof(bufs[0]));
	memset(bufs[slot], c, n);
	bufs[slot][n] = '\0';
	return bufs[slot];
}

/* Components of `comp` bytes joined by '/', `total` bytes in all (the last
 * component takes what is left). */
static char *path_of(int slot, size_t comp, size_t total)
{
	char *p = rep(slot, 'a', total);

	for (size_t i = comp; i < total; i += comp + 1)
		p[i] = '/';
	if (p[total - 1] == '/')
		p[total - 1] = 'a';
	return p;
}

static void path_check_table(void **state)
{
	static const char nul[] = "a\0b";
	const struct {
		const char *path;
		size_t len;       /* 0: strlen(path) */
		const char *want; /* NULL: clean */
	} cases[] = {
		{ "a", 0, NULL },
		{ "a/b/c", 0, NULL },
		{ "rootfs/etc/passwd", 0, NULL },
		{ "...", 0, NULL },
		{ ".a", 0, NULL },
		{ "a.", 0, NULL },
		{ "..a", 0, NULL },
		{ "a/..b/c", 0, NULL },
		{ "a b/\tc", 0, NULL },
		{ "", 0, "empty path" },
		{ "/", 0, "absolute path" },
		{ "/a", 0, "absolute path" },
		{ "//a", 0, "absolute path" },
		{ ".", 0, "'.' or '..' in path" },
		{ "..", 0, "'.' or '..' in path" },
		{ "a/.", 0, "'.' or '..' in path" },
		{ "a/..", 0, "'.' or '..' in path" },
		{ "./a", 0, "'.' or '..' in path" },
		{ "../a", 0, "'.' or '..' in path" },
		{ "a/./b", 0, "'.' or '..' in path" },
		{ "a/../b", 0, "'.' or '..' in path" },
		{ "a//b", 0, "empty path component" },
		{ "a/", 0, "empty path component" },
		{ "a//", 0, "empty path component" },
		{ nul, 3, "NUL byte in path" },
		{ nul, 1, NULL }, /* the length, not the NUL, ends the path */
		{ rep(0, 'n', 255), 0, NULL },
		{ rep(1, 'n', 256), 0, "path component longer than 255 bytes" },
		{ path_of(2, 255, 4095), 0, NULL },
		{ path_of(3, 255, 4096), 0, "path longer than 4095 bytes" },
		{ path_of(4, 1, 4095), 0, NULL },
		{ path_of(5, 1, 4096), 0, "path longer than 4095 bytes" },
	};

	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].path);
		const char *got = stage_path_check(cases[i].path, len);

		if (!cases[i].want ? got != NULL : !got || strcmp(got, cases[i].want) != 0)
			fail_msg("case %zu (%zu bytes): got \"%s\", want \"%s\"", i, len, got ? got : "(clean)",
				 cases[i].want ? cases[i].want : "(clean)");
	}
}

static void absolute_root_table(void **state)
{
	char cwd[PATH_MAX], cwd_a[PATH_MAX + 2], longest[PATH_MAX + 1], too_long[PATH_MAX + 1];
	/* A root leaves room for "/LABEL-ID" (1 + 32 + 1 + 32) below it, and
	 * for its terminating NUL, in PATH_MAX bytes. */
	const size_t room = PATH_MAX - 1 - (1 + LABEL_MAX + 1 + STORE_ID_LEN);

	(void)state;
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	snprintf(cwd_a, sizeof(cwd_a), "%s/a", strcmp(cwd, "/") == 0 ? "" : cwd);
	longest[0] = too_long[0] = '/';
	memcpy(longest + 1, rep(0, 'r', room - 1), room);
	memcpy(too_long + 1, rep(1, 'r', room), room + 1);

	const struct {
		const char *root;
		int want;        /* 0 or the negative errno */
		const char *out; /* the recorded root when want is 0 */
	} cases[] = {
		{ "/run/stagelog", 0, "/run/stagelog" },
		{ "/run/stagelog/", 0, "/run/stagelog" },
		{ "/run/stagelog///", 0, "/run/stagelog" },
		{ "//run//stagelog", 0, "/run/stagelog" },
		{ "/run/./stagelog/.", 0, "/run/stagelog" },
		{ "/a/...", 0, "/a/..." },
		{ "/a/..b", 0, "/a/..b" },
		{ "a", 0, cwd_a },
		{ "./a", 0, cwd_a },
		{ "a/", 0, cwd_a },
		{ "/", -EINVAL, NULL },
		{ "//", -EINVAL, NULL },
		{ "/.", -EINVAL, NULL },
		{ "/./", -EINVAL, NULL },
		{ "/..", -EINVAL, NULL },
		{ "/run/..", -EINVAL, NULL },
		{ "/run/../tmp", -EINVAL, NULL },
		{ "../a", -EINVAL, NULL },
		{ "a/..", -EINVAL, NULL },
		{ longest, 0, longest },
		{ too_long, -ENAMETOOLONG, NULL },
		{ rep(2, '/', 2 * PATH_MAX), -ENAMETOOLONG, NULL }, /* longer than any join */
		{ path_of(3, 255, 4095), 0, NULL },                 /* relative: under the cwd */
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char buf[PATH_MAX];
		int r;

		memset(buf, 'x', sizeof(buf));
		r = stage_absolute_root(cases[i].root, buf, sizeof(buf));
		/* A relative root of 4095 bytes under any cwd is too long. */
		if (i == ELEMENTSOF(cases) - 1) {
			assert_int_equal(r, -ENAMETOOLONG);
			continue;
		}
		if (r != cases[i].want)
			fail_msg("case %zu (\"%.40s\"...): got %d, want %d", i, cases[i].root, r, cases[i].want);
		if (r == 0 && strcmp(buf, cases[i].out) != 0)
			fail_msg("case %zu: got \"%.60s\", want \"%.60s\"", i, buf, cases[i].out);
	}
}

/* The marker is read back only as stage_marker_write() wrote it: four
 * exact lines. A cut, a number that does not fit, or anything after is
 * no proof of whose the directory is. */
static void marker_read_table(void **state)
{
	static const char id[] = "0123456789abcdef0123456789abcdef";
	static const char *const bad[] = {
		"stagelog stage marker 1\nstage 0123456789abcdef0123456789abcdef\nstore 7 8\npath /s/db",
		("stagelog stage marker 1\nstage 0123456789abcdef0123456789abcdef\nstore 18446744073709551616 8\n"
		 "path /s/db\n"),
		"stagelog stage marker 1\nstage 0123456789abcdef0123456789abcdef\nstore -7 8\npath /s/db\n",
		"stagelog stage marker 1\nstage 0123456789abcdef0123456789abcdef\nstore 7  8\npath /s/db\n",
		"stagelog stage marker 1\nstage 0123456789abcdef0123456789abcdef\nstore 7 8\npath /s/db\nmore\n",
		"stagelog stage marker 1\nstage 0123456789abcdef0123456789abcde\nstore 7 8\npath /s/db\n",
		"stagelog stage marker 1\nstage 0123456789abcdef0123456789abcdef\nstore 7 8\npath \n",
		"stagelog stage marker 2\nstage 0123456789abcdef0123456789abcdef\nstore 7 8\npath /s/db\n",
	};
	const struct store_identity store = { .path = "/s/db", .ino = 7, .btime = -8 };
	char dir[] = "/tmp/stagelog-test-marker-XXXXXX";
	struct stage_marker m;
	int dfd, fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(stage_marker_write(dfd, id, &store), 0);
	assert_int_equal(stage_marker_read(dfd, &m), 0);
	assert_string_equal(m.id, id);
	assert_true(m.store.ino == 7 && m.store.btime == -8);
	assert_string_equal(m.store.path, "/s/db");
	assert_true(stage_marker_names(&m, id, &store));
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		assert_int_equal(unlinkat(dfd, STAGE_MARKER_NAME, 0), 0);
		fd = openat(dfd, STAGE_MARKER_NAME, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, bad[i], strlen(bad[i])), (ssize_t)strlen(bad[i]));
		close(fd);
		if (stage_marker_read(dfd, &m) != -EBADMSG)
			fail_msg("case %zu: read as a marker", i);
	}
	assert_int_equal(unlinkat(dfd, STAGE_MARKER_NAME, 0), 0);
	close(dfd);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(path_check_table),
		cmocka_unit_test(absolute_root_table),
		cmocka_unit_test(marker_read_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
