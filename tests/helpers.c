/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

void sandbox_init(struct sandbox *sb)
{
	snprintf(sb->base, sizeof(sb->base), "/dev/shm/stagelog-test-XXXXXX");
	assert_non_null(mkdtemp(sb->base));
	chmod(sb->base, 0700);
	snprintf(sb->root, sizeof(sb->root), "%s/root", sb->base);
	snprintf(sb->dbdir, sizeof(sb->dbdir), "/tmp/stagelog-test-db-XXXXXX");
	assert_non_null(mkdtemp(sb->dbdir));
	snprintf(sb->db, sizeof(sb->db), "%s/stagelog.db", sb->dbdir);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP || flag == FTW_D)
		chmod(path, 0700);
	/* A name that cannot go stops the walk: the caller then fails. */
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

void remove_all(const char *path)
{
	/* Make every directory writable first so that read-only test trees
	 * can go. */
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", path, path);
	if (system(cmd) != 0)
		nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
	/* A test that left something it cannot remove (a mount, an immutable
	 * file) fails here, rather than leaving it for the next run. */
	struct stat st;
	if (lstat(path, &st) == 0)
		fail_msg("cannot remove %s", path);
	assert_int_equal(errno, ENOENT);
}

void sandbox_finish(struct sandbox *sb)
{
	remove_all(sb->base);
	remove_all(sb->dbdir);
}

void make_dir(const char *path, mode_t mode)
{
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(buf, 0755);
			*p = '/';
		}
	}
	if (mkdir(buf, mode) < 0)
		assert_int_equal(errno, EEXIST);
	assert_int_equal(chmod(buf, mode), 0);
}

void write_path(const char *path, const char *contents, mode_t mode)
{
	char dir[4096];
	char *slash;
	int fd;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		struct stat st;
		if (stat(dir, &st) < 0)
			make_dir(dir, 0755);
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	size_t len = strlen(contents);
	assert_int_equal(write(fd, contents, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static unsigned long long hash_file(const char *path)
{
	unsigned long long h = 1469598103934665603ULL;
	char buf[8192];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return 0;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
	close(fd);
	return h;
}

struct snap {
	char *buf;
	size_t len, cap;
	size_t base_len;
	bool mtime;
};
static struct snap *cur_snap;

static void snap_add(struct snap *s, const char *line)
{
	size_t n = strlen(line);
	if (s->len + n + 1 > s->cap) {
		s->cap = (s->len + n + 1) * 2;
		s->buf = realloc(s->buf, s->cap);
		assert_non_null(s->buf);
	}
	memcpy(s->buf + s->len, line, n + 1);
	s->len += n;
}

static int snap_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	char line[8192], extra[4200] = "";
	(void)flag;
	(void)ftw;
	if (S_ISREG(st->st_mode))
		snprintf(extra, sizeof(extra), "size=%lld hash=%llx", (long long)st->st_size, hash_file(path));
	else if (S_ISLNK(st->st_mode)) {
		char t[4096];
		ssize_t n = readlink(path, t, sizeof(t) - 1);
		t[n < 0 ? 0 : n] = '\0';
		snprintf(extra, sizeof(extra), "-> %s", t);
	}
	snprintf(line, sizeof(line), "%s mode=%o uid=%u gid=%u %s", path + cur_snap->base_len, (unsigned)st->st_mode,
		 (unsigned)st->st_uid, (unsigned)st->st_gid, extra);
	if (cur_snap->mtime && !S_ISLNK(st->st_mode)) {
		char m[64];
		snprintf(m, sizeof(m), " mtime=%lld.%09ld", (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
		strncat(line, m, sizeof(line) - strlen(line) - 1);
	}
	strncat(line, "\n", sizeof(line) - strlen(line) - 1);
	snap_add(cur_snap, line);
	return 0;
}

static int cmp_lines(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *tree_snapshot(const char *dir, bool with_mtime)
{
	struct snap s = { .base_len = strlen(dir), .mtime = with_mtime };
	char **lines = NULL, *out;
	size_t n = 0, total = 0;

	cur_snap = &s;
	snap_add(&s, "");
	nftw(dir, snap_one, 16, FTW_PHYS);
	/* nftw's order depends on readdir; sort the lines. */
	for (char *p = strtok(s.buf, "\n"); p; p = strtok(NULL, "\n")) {
		lines = realloc(lines, (n + 1) * sizeof(*lines));
		lines[n++] = p;
		total += strlen(p) + 1;
	}
	qsort(lines, n, sizeof(*lines), cmp_lines);
	out = calloc(1, total + 1);
	for (size_t i = 0; i < n; i++) {
		strcat(out, lines[i]);
		strcat(out, "\n");
	}
	free(lines);
	free(s.buf);
	return out;
}

bool file_contains(const char *path, const char *needle)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	char *buf;
	bool found;

	if (fd < 0)
		return false;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return false;
	}
	buf = malloc((size_t)st.st_size + 1);
	ssize_t n = read(fd, buf, (size_t)st.st_size);
	close(fd);
	found = n > 0 && memmem(buf, (size_t)n, needle, strlen(needle)) != NULL;
	free(buf);
	return found;
}

static const char *tc_needle;
static bool tc_found;
static int tc_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)flag;
	(void)ftw;
	if (S_ISREG(st->st_mode) && file_contains(path, tc_needle))
		tc_found = true;
	return 0;
}

bool tree_contains(const char *dir, const char *needle)
{
	tc_needle = needle;
	tc_found = false;
	nftw(dir, tc_one, 16, FTW_PHYS);
	return tc_found;
}

void make_sample_tree(const char *dir)
{
	char p[4096];
	const char *files[] = { "etc/passwd",    "etc/hosts",       "etc/ssl/cert.pem",
				"usr/bin/app",   "usr/lib/libx.so", "usr/share/doc/README",
				"var/lib/state", "secret.txt" };
	const char *dirs[] = { "etc",       "etc/ssl",       "usr", "usr/bin", "usr/lib",
			       "usr/share", "usr/share/doc", "var", "var/lib", "tmp" };

	make_dir(dir, 0755);
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, dirs[i]);
		make_dir(p, i == 9 ? 0700 : 0755);
	}
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
		write_path(p, i == 7 ? "token=" CANARY "\n" : "some contents\n", i == 3 ? 0755 : i == 7 ? 0600 : 0644);
	}
	snprintf(p, sizeof(p), "%s/usr/lib/libx.so.1", dir);
	assert_int_equal(symlink("libx.so", p), 0);
	snprintf(p, sizeof(p), "%s/empty", dir);
	write_path(p, "", 0640);
}
