/* SPDX-License-Identifier: MIT */
/*
 * test-attack.c: the attack suite. Every test here tries to make the one
 * undo routine (release, abort and recovery all end in stage/undo.c) remove
 * or modify something it must not: canary trees outside the staging root,
 * a directory that replaced a staged one, what lies under a mount, another
 * stage, a file that merely has a hard link inside a stage.
 *
 * The canaries live beside the root (on the same tmpfs, so a hard link or
 * a rename can reach them) and mirror the stage's layout (rootfs/etc/passwd,
 * config.json, extra/, ...), so that whatever a symlink or a tampered
 * record points the undo at holds exactly the names the log expects. After
 * every attack they must be byte-identical, with the same modes, owners and
 * mtimes, and every canary file must have one link again.
 *
 * The binary is linked with -Wl,--wrap=unlinkat,chmod,fchmod,openat64,open64
 * (nm -u on stage/undo.c and stage/path.c: unlinkat is the only removal call,
 * chmod/fchmod the only mode changes, openat64/open64 the only opens), so a
 * test can count each removal and mode change per recovered stage, see any
 * open of a FIFO, socket or device, and act in the middle of a removal.
 *
 * Run as `test-attack --openat2-enosys` (test_openat2_filtered does so
 * under a seccomp filter) it runs cases 1-5 again on the fallback resolver.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "entries-db.h"
#include "helpers.h"
#include "recover-private.h"
#include "stage-private.h"
#include "store-private.h"

#define NOBODY 65534
#define RACE_ROUNDS 200
#define DEEP_LEVELS 10000
#define WIDE_ENTRIES 100000

/* True in the re-executed run under the openat2 seccomp filter. */
static bool filtered;
/* True in a forked child: a failed check exits instead of calling cmocka. */
static bool in_child;

static void say(const char *fmt, ...) PRINTF_FMT(1, 2);
static void say(const char *fmt, ...)
{
	va_list ap;

	printf("%s", filtered ? "[openat2=ENOSYS] " : "");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void check_failed(int line, const char *what)
{
	if (in_child) {
		fprintf(stderr, "    child: check failed at test-attack.c:%d: %s\n", line, what);
		fflush(stdout);
		fflush(stderr);
		_exit(1);
	}
	fail_msg("check failed at test-attack.c:%d: %s", line, what);
}

static void child_exit(int code)
{
	fflush(stdout);
	fflush(stderr);
	_exit(code);
}

/* Usable in the test process and in forked children alike. */
#define CHECK(c)                                    \
	do {                                        \
		if (!(c))                           \
			check_failed(__LINE__, #c); \
	} while (0)

/* ---- The wrapped calls ---- */

int __real_unlinkat(int dirfd, const char *name, int flags);
int __wrap_unlinkat(int dirfd, const char *name, int flags);
int __real_chmod(const char *path, mode_t mode);
int __wrap_chmod(const char *path, mode_t mode);
int __real_fchmod(int fd, mode_t mode);
int __wrap_fchmod(int fd, mode_t mode);
int __real_openat64(int dirfd, const char *path, int flags, ...);
int __wrap_openat64(int dirfd, const char *path, int flags, ...);
int __real_open64(const char *path, int flags, ...);
int __wrap_open64(const char *path, int flags, ...);

#define MAX_IDX 16

/* What the wrappers saw while `on`: removals and mode changes per claimed
 * stage (idx is advanced by recovery's progress callback after each one),
 * and opens of anything that is not a directory or a regular file. */
static struct {
	bool on;
	size_t idx;
	unsigned long unlinks[MAX_IDX], modes[MAX_IDX];
	char first[MAX_IDX][768];
	unsigned long special_opens;
	char special[512];
} W;

/* The replacement hook of case 11: at the first unlinkat in directory
 * `watch`, rename `victim` to `moved` and make a new directory with
 * contents at `victim`. */
static struct {
	bool armed, fired, empty;
	char watch[600], victim[600], moved[600];
	char *snap;
} R;

static void fd_path(int fd, char *buf, size_t size)
{
	char proc[64];
	ssize_t n;

	if (fd == AT_FDCWD) {
		snprintf(buf, size, ".");
		return;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, buf, size - 1);
	buf[n < 0 ? 0 : n] = '\0';
}

static void note(bool removal, int fd, const char *name)
{
	size_t i = W.idx < MAX_IDX ? W.idx : MAX_IDX - 1;
	char dir[512];

	if (!W.on)
		return;
	if (removal)
		W.unlinks[i]++;
	else
		W.modes[i]++;
	if (W.first[i][0] == '\0') {
		if (fd >= 0 || fd == AT_FDCWD)
			fd_path(fd, dir, sizeof(dir));
		else
			dir[0] = '\0';
		snprintf(W.first[i], sizeof(W.first[i]), "%s %.250s/%.250s", removal ? "unlinkat" : "chmod", dir,
			 name ? name : "");
	}
}

static void replace_victim(void)
{
	char p[700];

	CHECK(rename(R.victim, R.moved) == 0);
	make_dir(R.victim, 0755);
	if (R.empty) {
		/* Empty: only an identity check keeps rmdir off it. */
		R.snap = tree_snapshot(R.victim, true);
		return;
	}
	snprintf(p, sizeof(p), "%s/keep", R.victim);
	write_path(p, "the replacement's own data\n", 0644);
	snprintf(p, sizeof(p), "%s/inner", R.victim);
	make_dir(p, 0700);
	snprintf(p, sizeof(p), "%s/inner/README", R.victim);
	write_path(p, "also the replacement's\n", 0600);
	R.snap = tree_snapshot(R.victim, true);
}

int __wrap_unlinkat(int dirfd, const char *name, int flags)
{
	if (R.armed && !R.fired) {
		char dir[600];

		fd_path(dirfd, dir, sizeof(dir));
		if (strcmp(dir, R.watch) == 0) {
			R.fired = true;
			replace_victim();
		}
	}
	note(true, dirfd, name);
	return __real_unlinkat(dirfd, name, flags);
}

int __wrap_chmod(const char *path, mode_t mode)
{
	char target[512] = "";

	/* The undo changes modes through /proc/self/fd/N: name the target. */
	if (W.on && readlink(path, target, sizeof(target) - 1) < 0)
		snprintf(target, sizeof(target), "%s", path);
	note(false, -1, target);
	return __real_chmod(path, mode);
}

int __wrap_fchmod(int fd, mode_t mode)
{
	note(false, fd, "");
	return __real_fchmod(fd, mode);
}

static int seen_open(int fd, int flags, int dirfd, const char *path)
{
	struct stat st;
	int saved = errno;

	if (fd >= 0 && W.on && !(flags & O_PATH) && fstat(fd, &st) == 0 &&
	    (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))) {
		char dir[256];

		fd_path(dirfd, dir, sizeof(dir));
		W.special_opens++;
		snprintf(W.special, sizeof(W.special), "%.250s/%.250s", dir, path);
	}
	errno = saved;
	return fd;
}

int __wrap_openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;

	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	return seen_open(__real_openat64(dirfd, path, flags, mode), flags, dirfd, path);
}

int __wrap_open64(const char *path, int flags, ...)
{
	mode_t mode = 0;

	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	return seen_open(__real_open64(path, flags, mode), flags, AT_FDCWD, path);
}

static void watch_start(void)
{
	memset(&W, 0, sizeof(W));
	W.on = true;
}

static void watch_stop(void)
{
	W.on = false;
}

/* ---- Fixture: a sandbox, the sample source, the canaries ---- */

struct fixture {
	struct sandbox sb;
	struct sl_store *store;
	char src[400];
	char canary[400];
	char *canary_snap;
	int sub;
	char extra[2][300]; /* more directories for teardown to remove */
};

/* Canary files whose link count must be 1 after every attack. */
static const char *const canary_files[] = {
	"secret.txt",        "config.json",       "readonly.txt", "etc/passwd",
	"rootfs/etc/passwd", "rootfs/secret.txt", "extra/keep",   "locked/inside",
};

/* The canaries mirror the stage's layout: rootfs/ is the sample tree as
 * copied into a stage, and config.json, extra/ and etc-link sit where the
 * stage has them. Their own sample tree at the top mirrors rootfs/ too,
 * for a symlink that replaces rootfs itself. */
static void make_canaries(const char *dir)
{
	char p[700];

	make_sample_tree(dir);
	snprintf(p, sizeof(p), "%s/rootfs", dir);
	make_sample_tree(p);
	snprintf(p, sizeof(p), "%s/config.json", dir);
	write_path(p, "{\"process\":{\"env\":[\"TOKEN=" CANARY "\"]}}", 0600);
	snprintf(p, sizeof(p), "%s/extra/keep", dir);
	write_path(p, "canary in extra\n", 0640);
	snprintf(p, sizeof(p), "%s/extra", dir);
	CHECK(chmod(p, 0750) == 0);
	snprintf(p, sizeof(p), "%s/etc-link", dir);
	CHECK(symlink("rootfs/etc", p) == 0);
	snprintf(p, sizeof(p), "%s/readonly.txt", dir);
	write_path(p, CANARY " read-only\n", 0400);
	snprintf(p, sizeof(p), "%s/emptydir", dir);
	make_dir(p, 0755);
	snprintf(p, sizeof(p), "%s/locked/inside", dir);
	write_path(p, CANARY " locked\n", 0600);
	snprintf(p, sizeof(p), "%s/locked", dir);
	CHECK(chmod(p, 0500) == 0);
	snprintf(p, sizeof(p), "%s/sealed", dir);
	make_dir(p, 0755);
	snprintf(p, sizeof(p), "%s/sealed/inside", dir);
	write_path(p, CANARY " sealed\n", 0600);
	snprintf(p, sizeof(p), "%s/sealed", dir);
	CHECK(chmod(p, 0000) == 0);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct sl_error err = { 0 };

	sandbox_init(&fx->sb);
	snprintf(fx->src, sizeof(fx->src), "%s/src", fx->sb.base);
	snprintf(fx->canary, sizeof(fx->canary), "%s/canary", fx->sb.base);
	make_sample_tree(fx->src);
	make_canaries(fx->canary);
	fx->canary_snap = tree_snapshot(fx->canary, true);
	assert_int_equal(sl_store_open(fx->sb.db, &fx->store, &err), 0);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	memset(&W, 0, sizeof(W));
	free(R.snap);
	memset(&R, 0, sizeof(R));
	memset(&fault_seam, 0, sizeof(fault_seam));
	alarm(0);
	for (size_t i = 0; i < ELEMENTSOF(fx->extra); i++)
		if (fx->extra[i][0])
			remove_all(fx->extra[i]);
	sl_store_close(fx->store);
	sandbox_finish(&fx->sb);
	free(fx->canary_snap);
	free(fx);
	return 0;
}

/* The first line where two snapshots differ, for the failure message. */
static void first_diff(const char *a, const char *b, char *buf, size_t size)
{
	size_t i = 0, start = 0;

	while (a[i] && a[i] == b[i]) {
		if (a[i] == '\n')
			start = i + 1;
		i++;
	}
	const char *la = a + start, *lb = b + start;
	int na = (int)strcspn(la, "\n"), nb = (int)strcspn(lb, "\n");
	snprintf(buf, size, "was [%.*s] now [%.*s]", na > 200 ? 200 : na, la, nb > 200 ? 200 : nb, lb);
}

/* Names the first path of snapshot a that snapshot b lacks, if any. */
static bool missing_path(const char *a, const char *b, const char *label, char *buf, size_t size)
{
	size_t lb = strlen(b);
	char *nb = malloc(lb + 2);

	CHECK(nb != NULL);
	nb[0] = '\n';
	memcpy(nb + 1, b, lb + 1);
	for (const char *line = a; *line;) {
		const char *end = strchr(line, '\n'), *m = strstr(line, " mode=");
		char key[600];

		if (!end)
			end = line + strlen(line);
		if (m && m < end) {
			snprintf(key, sizeof(key), "\n%.*s mode=", (int)(m - line) > 500 ? 500 : (int)(m - line), line);
			if (!strstr(nb, key)) {
				snprintf(buf, size, "%s '%.*s'", label, (int)(m - line) > 300 ? 300 : (int)(m - line),
					 line);
				free(nb);
				return true;
			}
		}
		line = *end ? end + 1 : end;
	}
	free(nb);
	return false;
}

/* True when the tree at dir is as in snap; else says how it differs: a
 * path gone, a path new, or the first changed line. */
static bool same_tree(const char *dir, const char *snap, char *why, size_t size)
{
	char *now = tree_snapshot(dir, true);
	bool same = strcmp(now, snap) == 0;

	if (!same && !missing_path(snap, now, "gone:", why, size) && !missing_path(now, snap, "new:", why, size))
		first_diff(snap, now, why, size);
	free(now);
	return same;
}

/* True when the canaries are intact: snapshot and link counts. */
static bool canaries_ok(const struct fixture *fx, char *why, size_t size)
{
	if (!same_tree(fx->canary, fx->canary_snap, why, size))
		return false;
	for (size_t i = 0; i < ELEMENTSOF(canary_files); i++) {
		char p[700];
		struct stat st;

		snprintf(p, sizeof(p), "%s/%s", fx->canary, canary_files[i]);
		if (lstat(p, &st) < 0 || st.st_nlink != 1) {
			snprintf(why, size, "%s: link count %lu", canary_files[i], (unsigned long)st.st_nlink);
			return false;
		}
	}
	return true;
}

static void assert_canaries(const struct fixture *fx, const char *when)
{
	char why[600];

	if (!canaries_ok(fx, why, sizeof(why))) {
		if (in_child) {
			fprintf(stderr, "    child: %s: the canaries changed: %s\n", when, why);
			_exit(1);
		}
		fail_msg("%s: the canaries changed: %s", when, why);
	}
}

/* ---- Stages ---- */

typedef int (*build_fn)(struct sl_stage *st, const void *arg, struct sl_error *err);

/* The sample stage of test-stage.c: a copied tree, a directory, a symlink
 * and a secret-bearing file written last. arg is the source tree. */
static int build_sample(struct sl_stage *st, const void *arg, struct sl_error *err)
{
	static const char config[] = "{\"process\":{\"env\":[\"TOKEN=" CANARY "\"]}}";
	int r;

	if ((r = sl_stage_copy_tree(st, AT_FDCWD, arg, "rootfs", err)) < 0 ||
	    (r = sl_stage_mkdir(st, "extra", 0750, err)) < 0 ||
	    (r = sl_stage_symlink(st, "rootfs/etc", "etc-link", err)) < 0 ||
	    (r = sl_stage_write_file(st, "config.json", config, sizeof(config) - 1, 0600, err)) < 0)
		return r;
	return 0;
}

struct staged {
	char id[STORE_ID_LEN + 1];
	char topdir[LABEL_MAX + STORE_ID_LEN + 2];
	char path[512];
	int64_t rowid;
};

static void staged_from(const struct sl_stage *st, struct staged *ret)
{
	memset(ret, 0, sizeof(*ret));
	snprintf(ret->id, sizeof(ret->id), "%s", st->rec.id);
	snprintf(ret->topdir, sizeof(ret->topdir), "%s", st->rec.topdir);
	snprintf(ret->path, sizeof(ret->path), "%.511s", st->path);
	ret->rowid = st->rec.rowid;
}

/* A ready stage held by this process. */
static struct sl_stage *stage_here(struct sl_store *s, const char *root, build_fn build, const void *arg,
				   struct staged *ret)
{
	struct sl_stage *st = NULL;
	struct sl_error err = { 0 };
	int r;

	r = sl_stage_begin(s, root, &(struct sl_stage_options){ .label = "gw" }, &st, &err);
	if (r == 0)
		r = build(st, arg, &err);
	if (r == 0)
		r = sl_stage_ready(st, &err);
	if (r < 0) {
		if (in_child) {
			fprintf(stderr, "    child: staging failed: %s\n", err.msg);
			_exit(1);
		}
		fail_msg("staging failed: %s", err.msg);
	}
	staged_from(st, ret);
	return st;
}

/*
 * A stale stage: a child opens the store, stages, marks the stage ready and
 * dies without freeing it, so the stage stays ready, its owner is dead and
 * its lock is released. With owner set, the record names that process as
 * the owner instead (a live owner whose stager is gone).
 */
static void stale_stage(const char *db, const char *root, build_fn build, const void *arg, pid_t owner,
			struct staged *ret)
{
	int p[2], status;
	size_t got = 0;
	pid_t pid;

	CHECK(pipe(p) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct sl_store *s = NULL;
		struct sl_stage *st = NULL;
		struct sl_error err = { 0 };
		struct staged out;
		int r;

		in_child = true;
		close(p[0]);
		r = sl_store_open(db, &s, &err);
		if (r == 0)
			r = sl_stage_begin(s, root, &(struct sl_stage_options){ .label = "gw", .owner_pid = owner },
					   &st, &err);
		if (r == 0)
			r = build(st, arg, &err);
		if (r == 0)
			r = sl_stage_ready(st, &err);
		if (r < 0) {
			fprintf(stderr, "    stager: %s\n", err.msg);
			_exit(1);
		}
		staged_from(st, &out);
		if (write(p[1], &out, sizeof(out)) != (ssize_t)sizeof(out))
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	while (got < sizeof(*ret)) {
		ssize_t n = read(p[0], (char *)ret + got, sizeof(*ret) - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(p[0]);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(got == sizeof(*ret));
}

static void on_progress(size_t done, size_t total, void *userdata)
{
	(void)total;
	(void)userdata;
	W.idx = done;
}

/* One recovery pass; W.idx follows the stage being recovered. */
static void recover(struct sl_store *s, struct sl_recover_report *rep)
{
	struct sl_recover_options o = { .progress = on_progress };
	struct sl_error err = { 0 };
	int r;

	W.idx = 0;
	r = sl_recover_run(s, &o, rep, &err);
	if (r < 0) {
		if (in_child) {
			fprintf(stderr, "    child: recovery could not run: %s\n", err.msg);
			_exit(1);
		}
		fail_msg("recovery could not run: %s", err.msg);
	}
}

static struct store_record record_of(struct sl_store *s, int64_t rowid)
{
	struct store_record rec;

	CHECK(store_stage_get_rowid(s, rowid, &rec, NULL) == 0);
	return rec;
}

static bool is_symlink(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* A sub-sandbox: its own root and store, for cases that need a clean
 * recovery pass of their own. */
struct sub {
	char root[400];
	char db[400];
	struct sl_store *s;
};

static void sub_init(struct fixture *fx, struct sub *u, const char *tag)
{
	int k = fx->sub++;
	struct sl_error err = { 0 };

	snprintf(u->root, sizeof(u->root), "%s/%s%d", fx->sb.base, tag, k);
	snprintf(u->db, sizeof(u->db), "%s/%s%d.db", fx->sb.dbdir, tag, k);
	u->s = NULL;
	if (sl_store_open(u->db, &u->s, &err) < 0) {
		fprintf(stderr, "cannot open store: %s\n", err.msg);
		check_failed(__LINE__, "sl_store_open");
	}
}

static void sub_finish(struct sub *u)
{
	sl_store_close(u->s);
	u->s = NULL;
}

/* Waits for a child; returns its exit status, or 128 + signal. */
static int wait_child(pid_t pid)
{
	int status;

	CHECK(waitpid(pid, &status, 0) == pid);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* ---- Case 1: a staged directory (or file) replaced by a symlink ---- */

struct swap {
	const char *path;   /* inside the top directory */
	const char *canary; /* what the symlink points at, in the canaries */
	const char *what;
};

static const struct swap swaps[] = {
	{ "rootfs/usr/share/doc", "rootfs/usr/share/doc", "leaf directory" },
	{ "rootfs/usr", "rootfs/usr", "middle directory" },
	{ "rootfs", "rootfs", "the copied tree" },
	{ "extra", "extra", "a made directory" },
	{ "config.json", "config.json", "a written file" },
	{ "rootfs/etc/passwd", "rootfs/etc/passwd", "a copied file" },
	{ "rootfs/etc/ssl", "", "a directory, pointed at the canaries' top" },
};

/* Moves the real thing aside inside the stage (so that it still has to be
 * removed) and puts a symlink to the matching canary in its place. */
static void swap_in_symlink(const struct fixture *fx, const char *top, const struct swap *sw, int k)
{
	char path[1024], moved[1024], target[1024];

	snprintf(path, sizeof(path), "%s/%s", top, sw->path);
	snprintf(moved, sizeof(moved), "%s/moved-aside-%d", top, k);
	snprintf(target, sizeof(target), "%s%s%s", fx->canary, *sw->canary ? "/" : "", sw->canary);
	CHECK(rename(path, moved) == 0);
	CHECK(symlink(target, path) == 0);
}

static void test_symlink_swap(void **state)
{
	struct fixture *fx = *state;
	int n = 0;

	for (int mode = 0; mode < 2; mode++) {
		for (size_t k = 0; k < ELEMENTSOF(swaps); k++) {
			struct sl_error err = { 0 };
			struct staged sd;
			struct sl_stage *st = NULL;

			if (mode == 0)
				st = stage_here(fx->store, fx->sb.root, build_sample, fx->src, &sd);
			else
				stale_stage(fx->sb.db, fx->sb.root, build_sample, fx->src, 0, &sd);
			swap_in_symlink(fx, sd.path, &swaps[k], (int)k);
			if (mode == 0) {
				int r = sl_stage_release(st, &err);
				if (r != 0)
					fail_msg("release with %s swapped for a symlink: %s", swaps[k].what, err.msg);
				sl_stage_free(st);
				assert_int_equal(record_of(fx->store, sd.rowid).state, SL_STATE_RELEASED);
			} else {
				struct sl_recover_report rep;
				recover(fx->store, &rep);
				if (rep.n_failed)
					fail_msg("recovery with %s swapped for a symlink: %s", swaps[k].what,
						 rep.failed[0].reason);
				assert_int_equal(rep.n_recovered, 1);
				sl_recover_report_finish(&rep);
				assert_int_equal(record_of(fx->store, sd.rowid).state, SL_STATE_RECOVERED);
			}
			assert_int_equal(count_entries(fx->sb.root), 0);
			assert_canaries(fx, swaps[k].what);
			n++;
		}
	}
	say("case 1: %d stages with a leaf dir, a middle dir, the copied tree, a made dir or a file swapped for a "
	    "symlink to the mirrored canaries (release and recovery): each fully removed, canaries intact",
	    n);
}

/* ---- Case 2: the top directory replaced ---- */

static void test_top_symlink(void **state)
{
	struct fixture *fx = *state;

	for (int mode = 0; mode < 2; mode++) {
		struct sl_stage *st = NULL;
		struct sl_error err = { 0 };
		struct staged sd;
		char away[600], target[1024];
		struct store_record rec;

		if (mode == 0)
			st = stage_here(fx->store, fx->sb.root, build_sample, fx->src, &sd);
		else
			stale_stage(fx->sb.db, fx->sb.root, build_sample, fx->src, 0, &sd);
		snprintf(away, sizeof(away), "%s/top-away-%d", fx->sb.base, mode);
		assert_int_equal(rename(sd.path, away), 0);
		assert_int_equal(symlink(fx->canary, sd.path), 0);
		if (mode == 0) {
			assert_int_equal(sl_stage_release(st, &err), -ESTALE);
			assert_non_null(strstr(err.msg, "left alone"));
			sl_stage_free(st);
		} else {
			struct sl_recover_report rep;
			recover(fx->store, &rep);
			assert_int_equal(rep.n_recovered, 0);
			assert_int_equal(rep.n_failed, 1);
			assert_non_null(strstr(rep.failed[0].reason, "left alone"));
			sl_recover_report_finish(&rep);
		}
		rec = record_of(fx->store, sd.rowid);
		assert_int_equal(rec.state, SL_STATE_FAILED);
		assert_non_null(strstr(rec.reason, "left alone"));
		/* The symlink itself is not touched either. */
		assert_true(is_symlink(sd.path));
		ssize_t n = readlink(sd.path, target, sizeof(target) - 1);
		assert_true(n > 0);
		target[n] = '\0';
		assert_string_equal(target, fx->canary);
		assert_canaries(fx, "top directory replaced by a symlink");
		/* Put the stage back and let the next pass finish it. */
		assert_int_equal(unlink(sd.path), 0);
		assert_int_equal(rename(away, sd.path), 0);
		if (mode == 0) {
			assert_true(sl_stage_release_id(fx->store, sd.id, &err) >= 0);
		} else {
			struct sl_recover_report rep;
			recover(fx->store, &rep);
			assert_int_equal(rep.n_recovered, 1);
			sl_recover_report_finish(&rep);
		}
		assert_int_equal(count_entries(fx->sb.root), 0);
	}
	say("case 2: top directory replaced by a symlink to the canaries (release and recovery): stage failed "
	    "'left alone', symlink untouched, canaries intact; restored, the next pass finished it");
}

/* The top directory renamed away and replaced by another directory that
 * shares no name with the log (so no entry reaches it), or by an empty
 * one: only the identity check before the top's removal protects it. */
static void test_top_replaced_unrelated(void **state)
{
	struct fixture *fx = *state;

	for (int v = 0; v < 4; v++) {
		bool empty = v >= 2, recovery = v % 2;
		struct sl_stage *st = NULL;
		struct sl_error err = { 0 };
		struct staged sd;
		char away[600], p[1024], why[600], *snap;
		int r;

		if (!recovery)
			st = stage_here(fx->store, fx->sb.root, build_sample, fx->src, &sd);
		else
			stale_stage(fx->sb.db, fx->sb.root, build_sample, fx->src, 0, &sd);
		snprintf(away, sizeof(away), "%s/top-away-%d", fx->sb.base, v);
		assert_int_equal(rename(sd.path, away), 0);
		make_dir(sd.path, 0700);
		if (!empty) {
			snprintf(p, sizeof(p), "%s/data", sd.path);
			make_sample_tree(p);
		}
		snap = tree_snapshot(sd.path, true);
		if (!recovery) {
			r = sl_stage_release(st, &err);
			sl_stage_free(st);
		} else {
			struct sl_recover_report rep;
			recover(fx->store, &rep);
			r = rep.n_failed == 1 ? -ESTALE : 0;
			if (rep.n_failed)
				snprintf(err.msg, sizeof(err.msg), "%s", rep.failed[0].reason);
			sl_recover_report_finish(&rep);
		}
		if (!exists(sd.path))
			fail_msg("%s replacement of the top was removed (%s)", empty ? "an empty" : "an unrelated",
				 recovery ? "recovery" : "release");
		if (!same_tree(sd.path, snap, why, sizeof(why)))
			fail_msg("the replacement of the top changed: %s", why);
		assert_int_equal(r, -ESTALE);
		assert_non_null(strstr(err.msg, "left alone"));
		assert_int_equal(record_of(fx->store, sd.rowid).state, SL_STATE_FAILED);
		free(snap);
		remove_all(sd.path);
		remove_all(away);
		if (!recovery) {
			assert_true(sl_stage_release_id(fx->store, sd.id, &err) >= 0);
		} else {
			struct sl_recover_report rep;
			recover(fx->store, &rep);
			assert_int_equal(rep.n_recovered, 1);
			sl_recover_report_finish(&rep);
		}
		assert_int_equal(count_entries(fx->sb.root), 0);
	}
	assert_canaries(fx, "top replaced by an unrelated directory");
	say("case 2a: top directory replaced by an unrelated directory and by an empty one (release and recovery): "
	    "stage failed 'left alone', replacement intact");
}

/* The top directory renamed away and replaced by another directory that
 * holds the very names the log lists (as a copy of the stage would). The
 * contract: "one that was replaced by something else (another inode ...) is
 * not touched". stage_undo() checks the top directory's identity before it
 * resolves any entry, and resolves every entry beneath that verified fd. */
static void test_top_replaced_by_directory(void **state)
{
	struct fixture *fx = *state;
	bool failed = false;

	for (int mode = 0; mode < 2; mode++) {
		struct sl_stage *st = NULL;
		struct sl_error err = { 0 };
		struct staged sd;
		char away[600], p[1024], why[600], *snap;
		int r;

		if (mode == 0)
			st = stage_here(fx->store, fx->sb.root, build_sample, fx->src, &sd);
		else
			stale_stage(fx->sb.db, fx->sb.root, build_sample, fx->src, 0, &sd);
		snprintf(away, sizeof(away), "%s/top-away-%d", fx->sb.base, mode);
		assert_int_equal(rename(sd.path, away), 0);
		make_dir(sd.path, 0700);
		snprintf(p, sizeof(p), "%s/rootfs", sd.path);
		make_sample_tree(p);
		snprintf(p, sizeof(p), "%s/extra/keep", sd.path);
		write_path(p, "not the stage's\n", 0600);
		snprintf(p, sizeof(p), "%s/config.json", sd.path);
		write_path(p, "not the stage's\n", 0600);
		snap = tree_snapshot(sd.path, true);

		if (mode == 0) {
			r = sl_stage_release(st, &err);
			sl_stage_free(st);
		} else {
			struct sl_recover_report rep;
			recover(fx->store, &rep);
			r = rep.n_failed == 1 ? -ESTALE : 0;
			if (rep.n_failed)
				snprintf(err.msg, sizeof(err.msg), "%s", rep.failed[0].reason);
			sl_recover_report_finish(&rep);
		}
		assert_int_equal(r, -ESTALE);
		assert_non_null(strstr(err.msg, "left alone"));
		assert_int_equal(record_of(fx->store, sd.rowid).state, SL_STATE_FAILED);
		if (!same_tree(sd.path, snap, why, sizeof(why))) {
			printf("    %s: the directory that replaced the top was emptied of the logged "
			       "names although the stage was 'left alone': %s\n",
			       mode == 0 ? "release" : "recovery", why);
			failed = true;
		}
		free(snap);
		assert_canaries(fx, "top directory replaced by a directory");
		remove_all(sd.path);
		remove_all(away);
		if (mode == 0) {
			assert_true(sl_stage_release_id(fx->store, sd.id, &err) >= 0);
		} else {
			struct sl_recover_report rep;
			recover(fx->store, &rep);
			sl_recover_report_finish(&rep);
		}
	}
	say("case 2b: top directory replaced by a directory with the stage's layout (release and recovery): %s",
	    failed ? "FAILED, the replacement lost its files" : "stage failed 'left alone', replacement intact");
	if (failed)
		fail_msg("stage_undo() removed logged entries from a directory that is not the stage's top");
}

/* ---- Case 3: a directory flipped between itself and a symlink ---- */

struct flipper {
	int pfd;
	char name[128], alt[160];
	char target[700];
	atomic_int stop;
	atomic_ulong flips;
	unsigned recreated;
};

/* Swaps NAME (the real directory) and NAME~ (a symlink to the matching
 * canary) with RENAME_EXCHANGE as fast as it can, so that at any instant
 * NAME is one or the other. When the undo removed one of them, puts a
 * symlink to the canaries back under both names (twice per round). */
static void *flip_main(void *arg)
{
	struct flipper *f = arg;

	while (!atomic_load(&f->stop)) {
		if (renameat2(f->pfd, f->name, f->pfd, f->alt, RENAME_EXCHANGE) == 0) {
			atomic_fetch_add(&f->flips, 1);
			continue;
		}
		if (errno == ENOENT && f->recreated < 2) {
			(void)symlinkat(f->target, f->pfd, f->name);
			(void)symlinkat(f->target, f->pfd, f->alt);
			f->recreated++;
		} else {
			sched_yield();
		}
	}
	return NULL;
}

struct race_stats {
	unsigned long flips;
	int first_ok, first_failed;
};

static void race_round(struct fixture *fx, int round, struct race_stats *rs)
{
	static const char *const targets[] = { "rootfs/usr/share/doc", "rootfs/usr", NULL };
	const char *rel = targets[(round / 2) % 3];
	bool recovery = round % 2;
	struct flipper f = { .pfd = -1 };
	struct sl_stage *st = NULL;
	struct sl_error err = { 0 };
	struct staged sd;
	char parent[1024], p[1200], q[1200], when[64];
	pthread_t th;
	bool ok;

	if (recovery)
		stale_stage(fx->sb.db, fx->sb.root, build_sample, fx->src, 0, &sd);
	else
		st = stage_here(fx->store, fx->sb.root, build_sample, fx->src, &sd);
	if (rel) {
		const char *slash = strrchr(rel, '/');
		snprintf(parent, sizeof(parent), "%s/%.*s", sd.path, (int)(slash - rel), rel);
		snprintf(f.name, sizeof(f.name), "%s", slash + 1);
		snprintf(f.target, sizeof(f.target), "%s/%s", fx->canary, rel);
	} else {
		snprintf(parent, sizeof(parent), "%s", fx->sb.root);
		snprintf(f.name, sizeof(f.name), "%s", sd.topdir);
		snprintf(f.target, sizeof(f.target), "%s", fx->canary);
	}
	snprintf(f.alt, sizeof(f.alt), "%s~", f.name);
	f.pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(f.pfd >= 0);
	CHECK(symlinkat(f.target, f.pfd, f.alt) == 0);
	CHECK(pthread_create(&th, NULL, flip_main, &f) == 0);
	while (atomic_load(&f.flips) == 0)
		sched_yield();

	if (recovery) {
		struct sl_recover_report rep;
		recover(fx->store, &rep);
		ok = rep.n_recovered == 1;
		CHECK(rep.n_recovered + rep.n_failed == 1);
		sl_recover_report_finish(&rep);
	} else {
		int r = sl_stage_release(st, &err);
		ok = r == 0;
		CHECK(r == 0 || err.msg[0] != '\0');
		sl_stage_free(st);
	}
	atomic_store(&f.stop, 1);
	CHECK(pthread_join(th, NULL) == 0);
	rs->flips += atomic_load(&f.flips);
	if (ok)
		rs->first_ok++;
	else
		rs->first_failed++;
	snprintf(when, sizeof(when), "race round %d", round);
	assert_canaries(fx, when);

	/* The test's own cleanup of what the flipper left in the root (the
	 * top case), then the next pass must finish a failed stage. */
	if (!rel) {
		snprintf(p, sizeof(p), "%s/%s", fx->sb.root, f.name);
		snprintf(q, sizeof(q), "%s/%s", fx->sb.root, f.alt);
		if (is_symlink(p) && exists(q) && !is_symlink(q))
			CHECK(renameat2(f.pfd, f.alt, f.pfd, f.name, RENAME_EXCHANGE) == 0);
		if (is_symlink(q))
			CHECK(unlink(q) == 0);
		if (is_symlink(p))
			CHECK(unlink(p) == 0);
	}
	close(f.pfd);
	enum sl_state s = record_of(fx->store, sd.rowid).state;
	if (!ok) {
		CHECK(s == SL_STATE_FAILED);
		if (recovery) {
			struct sl_recover_report rep;
			recover(fx->store, &rep);
			CHECK(rep.n_recovered == 1);
			sl_recover_report_finish(&rep);
		} else {
			CHECK(sl_stage_release_id(fx->store, sd.id, &err) >= 0);
		}
		s = record_of(fx->store, sd.rowid).state;
	}
	CHECK(s == (recovery ? SL_STATE_RECOVERED : SL_STATE_RELEASED));
	CHECK(count_entries(fx->sb.root) == 0);
}

static void test_race_flip(void **state)
{
	struct fixture *fx = *state;
	struct race_stats rs = { 0 };

	for (int round = 0; round < RACE_ROUNDS; round++)
		race_round(fx, round, &rs);
	say("case 3: %d rounds of release/recovery while a thread flipped a leaf dir, a middle dir or the top "
	    "between itself and a symlink to the canaries (%lu flips; %d finished at once, %d failed cleanly and "
	    "were finished by the next pass): canaries intact every round",
	    RACE_ROUNDS, rs.flips, rs.first_ok, rs.first_failed);
	assert_true(rs.flips >= (unsigned long)RACE_ROUNDS);
}

/* ---- Case 4: tampered records ---- */

struct bindv {
	char t; /* 'b' blob, 't' text, 'i' integer */
	const void *p;
	int n;
	int64_t i;
};

/* Opens the store file db for a raw edit. */
static sqlite3 *db_open_raw(const char *db)
{
	sqlite3 *h = NULL;

	CHECK(sqlite3_open(db, &h) == SQLITE_OK);
	sqlite3_busy_timeout(h, 5000);
	return h;
}

static void db_run(const char *db, const char *sql, const struct bindv *b, int nb)
{
	sqlite3 *h = NULL;
	sqlite3_stmt *st = NULL;
	int rc;

	CHECK(sqlite3_open(db, &h) == SQLITE_OK);
	sqlite3_busy_timeout(h, 5000);
	if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(h));
	for (int i = 0; i < nb; i++) {
		if (b[i].t == 'b')
			rc = b[i].n ? sqlite3_bind_blob(st, i + 1, b[i].p, b[i].n, SQLITE_TRANSIENT)
				    : sqlite3_bind_zeroblob(st, i + 1, 0);
		else if (b[i].t == 't')
			rc = sqlite3_bind_text(st, i + 1, b[i].p, b[i].n, SQLITE_TRANSIENT);
		else
			rc = sqlite3_bind_int64(st, i + 1, b[i].i);
		CHECK(rc == SQLITE_OK);
	}
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		fail_msg("%s: %s", sql, sqlite3_errmsg(h));
	CHECK(sqlite3_changes(h) >= 1);
	sqlite3_finalize(st);
	sqlite3_close(h);
}

#define TXT(s) ((struct bindv){ .t = 't', .p = (s), .n = -1 })
#define BLOB(s, len) ((struct bindv){ .t = 'b', .p = (s), .n = (int)(len) })
#define INT(v) ((struct bindv){ .t = 'i', .i = (v) })

/* The tampered entry values that are a path made of a base and a suffix:
 * base 0 is none, 'T' is T's top directory, 'H' another stage's, 'C' the
 * canary folder. Indexed by case number; the others are built by hand. */
static const struct {
	const char *what, *suffix;
	char base;
} simple_bad[] = {
	[0] = { "../x", "../x", 0 },
	[1] = { "/etc", "/etc", 0 },
	[2] = { "a/../../x", "a/../../x", 0 },
	[3] = { "a//b", "a//b", 0 },
	[4] = { "./a", "./a", 0 },
	[8] = { "TOP/../x", "/../x", 'T' },
	[9] = { "TOP/a/../../x", "/a/../../x", 'T' },
	[10] = { "TOP//rootfs", "//rootfs", 'T' },
	[11] = { "TOP/./rootfs", "/./rootfs", 'T' },
	[12] = { "TOP/..", "/..", 'T' },
	[13] = { "TOP/rootfs/ (trailing slash)", "/rootfs/", 'T' },
	[14] = { "TOP (as a later entry)", "", 'T' },
	[15] = { "OTHER-STAGE-TOP/rootfs", "/rootfs", 'H' },
	[16] = { "TOPx/rootfs (prefix look-alike)", "x/rootfs", 'T' },
	[17] = { "absolute canary path", "/rootfs/etc", 'C' },
	[19] = { "TOP/rootfs/etc/..", "/rootfs/etc/..", 'T' },
};

/* The tampered entry values, given T's top directory and another's. */
static size_t bad_entry(int k, const struct staged *t, const struct staged *h, const struct fixture *fx, char *buf,
			size_t size, const char **what)
{
	int n = 0;

	if (k >= 0 && (size_t)k < ELEMENTSOF(simple_bad) && simple_bad[k].what) {
		char b = simple_bad[k].base;
		const char *base = b == 'T' ? t->topdir : b == 'H' ? h->topdir : b == 'C' ? fx->canary : "";

		*what = simple_bad[k].what;
		return (size_t)snprintf(buf, size, "%s%s", base, simple_bad[k].suffix);
	}
	switch (k) {
	case 5:
		*what = "empty";
		buf[0] = '\0';
		break;
	case 6:
		*what = "TOP/a<NUL>/../../x";
		n = snprintf(buf, size, "%s/a", t->topdir);
		buf[n++] = '\0';
		n += snprintf(buf + n, size - (size_t)n, "/../../x");
		break;
	case 7:
		*what = "TOP/<300-byte component>";
		n = snprintf(buf, size, "%s/", t->topdir);
		memset(buf + n, 'a', 300);
		n += 300;
		break;
	case 18:
		*what = "TOP/<4200 bytes>";
		n = snprintf(buf, size, "%s", t->topdir);
		while (n < 4200)
			n += snprintf(buf + n, size - (size_t)n, "/a");
		break;
	default:
		return (size_t)-1;
	}
	return (size_t)n;
}

/* Runs one tampered recovery: T (tampered by `tamper`) and H (healthy)
 * both stale; checks that not one removal or mode change happened while T
 * was being recovered, that T ended failed with a reason, that T's own
 * directory and the canaries are as they were, and that H was recovered in
 * the same pass. Returns false with why on failure. */
typedef void (*tamper_fn)(const struct fixture *fx, const struct sub *u, const struct staged *t, const struct staged *h,
			  int k);

static bool tampered_run(struct fixture *fx, tamper_fn tamper, int k, const char *victim, bool expect_failed, char *why,
			 size_t size)
{
	struct sub u;
	struct staged t, h;
	struct sl_recover_report rep;
	struct store_record rec;
	char *tsnap, *vsnap = NULL, d[600];
	bool ok = false;

	sub_init(fx, &u, "tamper");
	stale_stage(u.db, u.root, build_sample, fx->src, 0, &t);
	stale_stage(u.db, u.root, build_sample, fx->src, 0, &h);
	tsnap = tree_snapshot(t.path, true);
	tamper(fx, &u, &t, &h, k);
	if (victim)
		vsnap = tree_snapshot(victim, true);

	watch_start();
	recover(u.s, &rep);
	watch_stop();

#define SOFT(cond, ...)                                   \
	do {                                              \
		if (!(cond)) {                            \
			snprintf(why, size, __VA_ARGS__); \
			goto out;                         \
		}                                         \
	} while (0)
	SOFT(W.unlinks[0] == 0 && W.modes[0] == 0,
	     "%lu removals and %lu mode changes while recovering the tampered "
	     "stage, first: %s",
	     W.unlinks[0], W.modes[0], W.first[0]);
	SOFT(!victim || same_tree(victim, vsnap, d, sizeof(d)), "the victim directory changed: %s", d);
	SOFT(same_tree(t.path, tsnap, d, sizeof(d)), "the tampered stage's own directory changed: %s", d);
	SOFT(canaries_ok(fx, d, sizeof(d)), "the canaries changed: %s", d);
	rec = record_of(u.s, t.rowid);
	if (expect_failed) {
		SOFT(rec.state == SL_STATE_FAILED && rec.reason[0],
		     "nothing was removed, but the tampered stage ended "
		     "%s, not failed with a reason (its real directory is left behind)",
		     sl_store_state_name(rec.state));
		SOFT(rep.n_failed == 1 && rep.failed[0].reason[0],
		     "the tampered stage is not reported failed "
		     "(%zu failed)",
		     rep.n_failed);
	}
	bool h_done = false;
	for (size_t i = 0; i < rep.n_recovered; i++)
		h_done = h_done || strcmp(rep.recovered[i], h.id) == 0;
	SOFT(h_done, "the healthy stage was not recovered in the same pass (%zu recovered, %zu failed%s%s)",
	     rep.n_recovered, rep.n_failed, rep.n_failed ? ": " : "", rep.n_failed ? rep.failed[0].reason : "");
	SOFT(W.unlinks[1] > 0, "the healthy stage's removal was not counted (the watch is broken)");
	SOFT(!exists(h.path), "the healthy stage's directory is still there");
	ok = true;
out:
#undef SOFT
	sl_recover_report_finish(&rep);
	free(tsnap);
	free(vsnap);
	sub_finish(&u);
	return ok;
}

/* Batch rows (kind 16) that do not decode: each must fail the stage's
 * validation before anything is removed. */
static const struct {
	const char *what, *sql;
} batch_tampers[] = {
	{ "a batch one entry short of its count", "UPDATE entries SET n = n + 1 WHERE stage = ?1 AND kind = 16" },
	{ "a batch cut by a byte",
	  "UPDATE entries SET path = substr(path, 1, length(path) - 1) WHERE stage = ?1 "
	  "AND kind = 16" },
	{ "a batch with a byte after its entries",
	  "UPDATE entries SET path = path || x'00' WHERE stage = ?1 "
	  "AND kind = 16" },
	{ "a batch of 100,000 entries", "UPDATE entries SET n = 100000 WHERE stage = ?1 AND kind = 16" },
	{ "a batch of 1 entry", "UPDATE entries SET n = 1 WHERE stage = ?1 AND kind = 16" },
	{ "a batch whose first length runs past its end",
	  "UPDATE entries SET path = substr(path, 1, 1) || x'ffff' "
	  "|| substr(path, 4) WHERE stage = ?1 AND kind = 16" },
	{ "a batch starting at INT64_MAX",
	  "UPDATE entries SET seq = 9223372036854775807 WHERE stage = ?1 AND "
	  "kind = 16 AND seq = (SELECT max(seq) FROM entries WHERE stage = ?1 "
	  "AND kind = 16)" },
};

static void tamper_entry(const struct fixture *fx, const struct sub *u, const struct staged *t, const struct staged *h,
			 int k)
{
	static char buf[8192];
	const char *what;

	sqlite3 *db = db_open_raw(u->db);

	if (k >= 22) { /* a batch row that does not decode */
		db_run(u->db, batch_tampers[k - 22].sql, (struct bindv[]){ INT(t->rowid) }, 1);
		sqlite3_close(db);
		return;
	}
	if (k == 20) { /* an unknown kind */
		db_tamper_entry(db, t->rowid, 3, 9, NULL, 0);
	} else if (k == 21) { /* entry 0, the top directory, moved down */
		snprintf(buf, sizeof(buf), "%s/rootfs", t->topdir);
		db_tamper_entry(db, t->rowid, 0, -1, buf, strlen(buf));
	} else {
		size_t n = bad_entry(k, t, h, fx, buf, sizeof(buf), &what);
		/* Entry 3 is old: everything newer would go first if
		 * validation were lazy. */
		db_tamper_entry(db, t->rowid, 3, -1, buf, n);
	}
	sqlite3_close(db);
}

static void test_tamper_entries(void **state)
{
	struct fixture *fx = *state;
	int failures = 0, n = 0;

	for (int k = 0; k < 22 + (int)ELEMENTSOF(batch_tampers); k++) {
		char why[1024], buf[8192];
		const char *what = k >= 22 ? batch_tampers[k - 22].what
				 : k == 20 ? "kind 9"
				 : k == 21 ? "entry 0 = TOP/rootfs"
					   : NULL;
		struct staged dummy = { .topdir = "x" };

		if (!what)
			bad_entry(k, &dummy, &dummy, fx, buf, sizeof(buf), &what);
		n++;
		if (!tampered_run(fx, tamper_entry, k, NULL, true, why, sizeof(why))) {
			printf("    tampered entry %s: %s\n", what, why);
			failures++;
		}
	}
	say("case 4a: %d tampered entries (../x, /etc, a/../../x, a//b, ./a, empty, NUL inside, 300-byte "
	    "component, TOP/.., another stage's top, a look-alike prefix, an absolute path, >4095 bytes, kind 9, "
	    "entry 0 moved, batch rows that do not decode ...): %d with a removal or a wrong outcome",
	    n, failures);
	assert_int_equal(failures, 0);
}

/* Stage-row tampers. */
struct row_tamper {
	const char *what;
	bool expect_failed;
	bool victim; /* root pointed at a directory holding a copy of T's top */
};

static const struct row_tamper row_tampers[] = {
	/* With no LABEL-ID under the tampered root, a missing top directory
	 * counts as removed (that is what makes a replayed undo idempotent),
	 * so the stage ends recovered; its real directory is left for `check`
	 * to find as an orphan. What matters holds: nothing is removed. See
	 * docs/threat-model.md, "a tampered store". */
	{ "root changed to the canary dir", false, false },
	{ "root changed to a dir holding a same-named copy of the stage", true, true },
	{ "root changed to /", true, false },
	{ "root changed to a relative path", true, false },
	{ "root changed to ROOT/../canary", true, false },
	{ "root changed to a path with //", true, false },
	{ "topdir changed to ..", true, false },
	{ "topdir changed to another stage's dir", true, false },
	{ "label changed (no longer matches topdir)", true, false },
	{ "id changed to another valid id (no longer matches topdir)", true, false },
	{ "id and topdir changed to ../../../../etc", true, false },
	{ "label and topdir changed to ../..", true, false },
	{ "device and inode changed", true, false },
};

static char victim_dir[700];

static void tamper_row(const struct fixture *fx, const struct sub *u, const struct staged *t, const struct staged *h,
		       int k)
{
	char buf[1024], top[256];
	int64_t r = t->rowid;

	switch (k) {
	case 0:
		db_run(u->db, "UPDATE stages SET root = ?1 WHERE rowid = ?2",
		       (struct bindv[]){ BLOB(fx->canary, strlen(fx->canary)), INT(r) }, 2);
		break;
	case 1: {
		/* A directory named like T's top, holding the same names, under
		 * another parent: as a copy (or a published stage renamed to
		 * that name) would be. */
		char p[1024];
		snprintf(victim_dir, sizeof(victim_dir), "%s/victim%d", fx->sb.base, fx->sub);
		snprintf(p, sizeof(p), "%s/%s/rootfs", victim_dir, t->topdir);
		make_sample_tree(p);
		snprintf(p, sizeof(p), "%s/%s/config.json", victim_dir, t->topdir);
		write_path(p, "victim\n", 0600);
		snprintf(p, sizeof(p), "%s/%s/extra/keep", victim_dir, t->topdir);
		write_path(p, "victim\n", 0600);
		db_run(u->db, "UPDATE stages SET root = ?1 WHERE rowid = ?2",
		       (struct bindv[]){ BLOB(victim_dir, strlen(victim_dir)), INT(r) }, 2);
		break;
	}
	case 2:
		db_run(u->db, "UPDATE stages SET root = ?1 WHERE rowid = ?2", (struct bindv[]){ BLOB("/", 1), INT(r) },
		       2);
		break;
	case 3:
		db_run(u->db, "UPDATE stages SET root = ?1 WHERE rowid = ?2",
		       (struct bindv[]){ BLOB("relative/root", 13), INT(r) }, 2);
		break;
	case 4:
		snprintf(buf, sizeof(buf), "%s/../canary", u->root);
		db_run(u->db, "UPDATE stages SET root = ?1 WHERE rowid = ?2",
		       (struct bindv[]){ BLOB(buf, strlen(buf)), INT(r) }, 2);
		break;
	case 5:
		snprintf(buf, sizeof(buf), "%s//%s", fx->sb.base, strrchr(u->root, '/') + 1);
		db_run(u->db, "UPDATE stages SET root = ?1 WHERE rowid = ?2",
		       (struct bindv[]){ BLOB(buf, strlen(buf)), INT(r) }, 2);
		break;
	case 6:
		db_run(u->db, "UPDATE stages SET topdir = '..' WHERE rowid = ?1", (struct bindv[]){ INT(r) }, 1);
		break;
	case 7:
		db_run(u->db, "UPDATE stages SET topdir = ?1 WHERE rowid = ?2",
		       (struct bindv[]){ TXT(h->topdir), INT(r) }, 2);
		break;
	case 8:
		db_run(u->db, "UPDATE stages SET label = 'xx' WHERE rowid = ?1", (struct bindv[]){ INT(r) }, 1);
		break;
	case 9:
		db_run(u->db, "UPDATE stages SET id = '0123456789abcdef0123456789abcdef' WHERE rowid = ?1",
		       (struct bindv[]){ INT(r) }, 1);
		break;
	case 10:
		db_run(u->db,
		       "UPDATE stages SET id = '../../../../etc', topdir = 'gw-../../../../etc' WHERE rowid = ?1",
		       (struct bindv[]){ INT(r) }, 1);
		break;
	case 11:
		snprintf(top, sizeof(top), "../..-%s", t->id);
		db_run(u->db, "UPDATE stages SET label = '../..', topdir = ?1 WHERE rowid = ?2",
		       (struct bindv[]){ TXT(top), INT(r) }, 2);
		break;
	case 12:
		db_run(u->db, "UPDATE stages SET ino = ino + 1 WHERE rowid = ?1", (struct bindv[]){ INT(r) }, 1);
		break;
	}
}

static void test_tamper_stages(void **state)
{
	struct fixture *fx = *state;
	int failures = 0;

	for (size_t k = 0; k < ELEMENTSOF(row_tampers); k++) {
		char why[1024];

		/* tamper_row() fills victim_dir before tampered_run() takes its
		 * snapshot. */
		victim_dir[0] = '\0';
		if (!tampered_run(fx, tamper_row, (int)k, row_tampers[k].victim ? victim_dir : NULL,
				  row_tampers[k].expect_failed, why, sizeof(why))) {
			printf("    %s: %s\n", row_tampers[k].what, why);
			failures++;
		}
	}
	say("case 4b: %zu tampered stage rows (root to the canaries, to /, relative, with .. or //; topdir to .. or "
	    "another stage's; label/id not matching; dev/ino changed): %d with a removal or a wrong outcome",
	    ELEMENTSOF(row_tampers), failures);
	assert_int_equal(failures, 0);
}

/* T takes over V's identity: id (stored as a BLOB, so UNIQUE does not
 * object), topdir, and entries re-prefixed. V is live (its owner, this
 * process, is alive) but its lock is free, as after `stagelog stage
 * --owner $$` returned. The top directory's identity (dev/ino of T's
 * record) does not match V's directory, so nothing is removed. */
static struct staged steal_v;

static void tamper_steal(const struct fixture *fx, const struct sub *u, const struct staged *t, const struct staged *h,
			 int k)
{
	(void)h;
	(void)k;
	(void)fx;
	stale_stage(u->db, u->root, build_sample, fx->src, getpid(), &steal_v);
	db_run(u->db, "UPDATE stages SET id = CAST(?1 AS BLOB), topdir = ?2 WHERE rowid = ?3",
	       (struct bindv[]){ TXT(steal_v.id), TXT(steal_v.topdir), INT(t->rowid) }, 3);
	sqlite3 *db = db_open_raw(u->db);
	db_reprefix_entries(db, t->rowid, strlen(t->topdir), steal_v.topdir);
	sqlite3_close(db);
}

static void test_tamper_steal(void **state)
{
	struct fixture *fx = *state;
	char why[1024];

	/* tamper_steal() stages V and fills steal_v.path before
	 * tampered_run() takes the victim's snapshot. */
	memset(&steal_v, 0, sizeof(steal_v));
	bool ok = tampered_run(fx, tamper_steal, 0, steal_v.path, true, why, sizeof(why));
	say("case 4c: a stale stage's record rewritten to a live stage's id, topdir and entries: %s",
	    ok ? "nothing removed, failed with a reason" : "FAILED");
	if (!ok)
		fail_msg("%s", why);
}

/* ---- Case 5: mounts inside a stage ---- */

enum mtype { BIND, TMPFS };

struct mvariant {
	const char *what;
	enum mtype type;
	const char *where;  /* inside the top directory; "" is the top itself */
	const char *source; /* inside the canaries, for a bind mount */
};

static const struct mvariant mvariants[] = {
	{ "canaries bound on a logged directory", BIND, "rootfs/etc", "rootfs/etc" },
	{ "a canary file bound on a logged file", BIND, "config.json", "config.json" },
	{ "canaries bound on the top directory", BIND, "", "" },
	{ "a tmpfs on a directory a runtime made", TMPFS, "rt/mnt", NULL },
	{ "a tmpfs on a logged directory", TMPFS, "extra", NULL },
};

static int mounts_child(struct fixture *fx)
{
	in_child = true;
	if (unshare(CLONE_NEWNS) < 0) {
		printf("    cannot unshare the mount namespace: %s\n", strerror(errno));
		return 77;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		printf("    cannot make / private: %s\n", strerror(errno));
		return 77;
	}
	for (size_t k = 0; k < ELEMENTSOF(mvariants); k++) {
		const struct mvariant *v = &mvariants[k];
		struct sl_recover_report rep;
		struct sub u;
		struct staged sd;
		struct store_record rec;
		char target[1024], src[1024], p[1200], why[600], *msnap = NULL;

		sub_init(fx, &u, "mount");
		stale_stage(u.db, u.root, build_sample, fx->src, 0, &sd);
		snprintf(target, sizeof(target), "%s%s%s", sd.path, *v->where ? "/" : "", v->where);
		if (v->type == BIND) {
			snprintf(src, sizeof(src), "%s%s%s", fx->canary, *v->source ? "/" : "", v->source);
			CHECK(mount(src, target, NULL, MS_BIND, NULL) == 0);
		} else {
			make_dir(target, 0755);
			CHECK(mount("tmpfs", target, "tmpfs", 0, "size=1m,mode=0755") == 0);
			snprintf(p, sizeof(p), "%s/secret", target);
			write_path(p, CANARY "\n", 0600);
			snprintf(p, sizeof(p), "%s/d/f", target);
			write_path(p, "under the mount\n", 0644);
			msnap = tree_snapshot(target, true);
		}

		recover(u.s, &rep);
		if (rep.n_failed != 1 || !strstr(rep.failed[0].reason, "mount")) {
			fprintf(stderr,
				"    child: %s: want one failure naming a mount, got %zu failed (%s), %zu "
				"recovered\n",
				v->what, rep.n_failed, rep.n_failed ? rep.failed[0].reason : "", rep.n_recovered);
			return 1;
		}
		sl_recover_report_finish(&rep);
		rec = record_of(u.s, sd.rowid);
		CHECK(rec.state == SL_STATE_FAILED);
		CHECK(strstr(rec.reason, "mount") != NULL);
		assert_canaries(fx, v->what);
		if (msnap && !same_tree(target, msnap, why, sizeof(why))) {
			fprintf(stderr, "    child: %s: the tmpfs changed: %s\n", v->what, why);
			return 1;
		}
		free(msnap);
		CHECK(umount2(target, 0) == 0);

		recover(u.s, &rep);
		if (rep.n_recovered != 1) {
			fprintf(stderr, "    child: %s: after unmounting, recovery did not finish: %s\n", v->what,
				rep.n_failed ? rep.failed[0].reason : "");
			return 1;
		}
		sl_recover_report_finish(&rep);
		CHECK(record_of(u.s, sd.rowid).state == SL_STATE_RECOVERED);
		CHECK(count_entries(u.root) == 0);
		assert_canaries(fx, v->what);
		sub_finish(&u);
	}
	return 0;
}

static void test_mounts(void **state)
{
	struct fixture *fx = *state;
	pid_t pid;
	int r;

	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		child_exit(mounts_child(fx));
	}
	r = wait_child(pid);
	if (r == 77)
		skip();
	assert_int_equal(r, 0);
	assert_canaries(fx, "after the mount namespace is gone");
	say("case 5: %zu mounts inside a stale stage (canaries bound on a logged dir, on a logged file, on the top; "
	    "tmpfs on a runtime dir and on a logged dir): nothing under them removed, stage failed naming a mount, "
	    "finished by the next pass after unmounting",
	    ELEMENTSOF(mvariants));
}

/* ---- Case 6: FIFOs, sockets and devices ---- */

static bool add_specials(const char *top)
{
	char p[1024];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	bool dev = true;
	int fd;

	snprintf(p, sizeof(p), "%s/rt", top);
	make_dir(p, 0755);
	snprintf(p, sizeof(p), "%s/rt/fifo", top);
	CHECK(mkfifo(p, 0600) == 0);
	/* A FIFO where a file was logged, and where a directory was. */
	snprintf(p, sizeof(p), "%s/config.json", top);
	CHECK(unlink(p) == 0);
	CHECK(mkfifo(p, 0600) == 0);
	snprintf(p, sizeof(p), "%s/extra", top);
	CHECK(rmdir(p) == 0);
	CHECK(mkfifo(p, 0600) == 0);
	/* Sockets: one a runtime made, one where a file was logged. */
	const char *socks[] = { "rt/sock", "rootfs/etc/hosts" };
	for (size_t i = 0; i < ELEMENTSOF(socks); i++) {
		snprintf(p, sizeof(p), "%s/%s", top, socks[i]);
		(void)unlink(p);
		CHECK(strlen(p) < sizeof(sa.sun_path));
		memcpy(sa.sun_path, p, strlen(p) + 1);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(fd >= 0);
		CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
		close(fd);
	}
	/* Devices like /dev/null: one a runtime made, one where a file was. */
	snprintf(p, sizeof(p), "%s/rt/null", top);
	if (mknod(p, S_IFCHR | 0666, makedev(1, 3)) < 0) {
		CHECK(errno == EPERM);
		dev = false;
	} else {
		snprintf(p, sizeof(p), "%s/rootfs/etc/passwd", top);
		CHECK(unlink(p) == 0);
		CHECK(mknod(p, S_IFCHR | 0600, makedev(1, 3)) == 0);
	}
	return dev;
}

static void test_special_files(void **state)
{
	struct fixture *fx = *state;
	bool dev = true;

	for (int mode = 0; mode < 2; mode++) {
		struct sl_stage *st = NULL;
		struct sl_error err = { 0 };
		struct staged sd;

		if (mode == 0)
			st = stage_here(fx->store, fx->sb.root, build_sample, fx->src, &sd);
		else
			stale_stage(fx->sb.db, fx->sb.root, build_sample, fx->src, 0, &sd);
		dev = add_specials(sd.path) && dev;
		/* The watchdog: opening a FIFO would block forever. */
		alarm(60);
		watch_start();
		if (mode == 0) {
			int r = sl_stage_release(st, &err);
			watch_stop();
			if (r < 0)
				fail_msg("release with FIFOs, sockets and devices: %s", err.msg);
			sl_stage_free(st);
		} else {
			struct sl_recover_report rep;
			recover(fx->store, &rep);
			watch_stop();
			if (rep.n_recovered != 1)
				fail_msg("recovery with FIFOs, sockets and devices: %s",
					 rep.n_failed ? rep.failed[0].reason : "?");
			sl_recover_report_finish(&rep);
		}
		alarm(0);
		if (W.special_opens)
			fail_msg("%lu opens of a FIFO, socket or device, e.g. %s", W.special_opens, W.special);
		assert_int_equal(count_entries(fx->sb.root), 0);
	}

	/* The top directory itself replaced by a FIFO: left alone, no hang. */
	struct staged sd;
	struct sl_recover_report rep;
	char away[600];
	stale_stage(fx->sb.db, fx->sb.root, build_sample, fx->src, 0, &sd);
	snprintf(away, sizeof(away), "%s/fifo-away", fx->sb.base);
	assert_int_equal(rename(sd.path, away), 0);
	assert_int_equal(mkfifo(sd.path, 0600), 0);
	alarm(60);
	watch_start();
	recover(fx->store, &rep);
	watch_stop();
	alarm(0);
	assert_int_equal(rep.n_failed, 1);
	assert_non_null(strstr(rep.failed[0].reason, "left alone"));
	sl_recover_report_finish(&rep);
	assert_int_equal(W.special_opens, 0);
	struct stat sb;
	assert_int_equal(lstat(sd.path, &sb), 0);
	assert_true(S_ISFIFO(sb.st_mode));
	assert_int_equal(unlink(sd.path), 0);
	assert_int_equal(rename(away, sd.path), 0);
	recover(fx->store, &rep);
	assert_int_equal(rep.n_recovered, 1);
	sl_recover_report_finish(&rep);
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_canaries(fx, "special files");
	say("case 6: FIFOs, sockets and %s (runtime-made and in place of logged files and dirs), release and "
	    "recovery: all removed, none opened, no hang; a FIFO in place of the top: left alone, no hang",
	    dev ? "char devices 1:3" : "(no mknod permission: no devices)");
}

/* ---- Case 7: an unprivileged user ---- */

struct nobody_env {
	char dir[256];    /* /dev/shm/..., owned by nobody */
	char dbdir[256];  /* /tmp/..., owned by nobody */
	char canary[300]; /* nobody's own canaries */
	char src[300];
};

static int chown_one(const char *path)
{
	return lchown(path, NOBODY, NOBODY);
}

static void chown_tree(const char *dir)
{
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "chown -R -h %d:%d '%s'", NOBODY, NOBODY, dir);
	CHECK(system(cmd) == 0);
}

static void become_nobody(void)
{
	CHECK(setgroups(0, NULL) == 0);
	CHECK(setgid(NOBODY) == 0);
	CHECK(setuid(NOBODY) == 0);
	CHECK(geteuid() == NOBODY);
}

/* What an unprivileged stager makes: read-only and sealed directories it
 * owns, with symlinks to nobody's own canaries (which nobody could damage
 * if the undo followed one), and a logged directory replaced by such a
 * symlink. arg is the nobody_env. */
static int build_nobody(struct sl_stage *st, const void *arg, struct sl_error *err)
{
	const struct nobody_env *ne = arg;
	char t1[600], t2[600];
	int r;

	snprintf(t1, sizeof(t1), "%s/locked", ne->canary);
	snprintf(t2, sizeof(t2), "%s/sealed", ne->canary);
	if ((r = sl_stage_copy_tree(st, AT_FDCWD, ne->src, "rootfs", err)) < 0 ||
	    (r = sl_stage_mkdir(st, "a", 0755, err)) < 0 || (r = sl_stage_mkdir(st, "a/ro", 0755, err)) < 0 ||
	    (r = sl_stage_write_file(st, "a/ro/f", "x", 1, 0400, err)) < 0 ||
	    (r = sl_stage_mkdir(st, "a/ro/deep", 0755, err)) < 0 ||
	    (r = sl_stage_write_file(st, "a/ro/deep/g", "x", 1, 0000, err)) < 0 ||
	    (r = sl_stage_symlink(st, t1, "a/ro/to-locked", err)) < 0 ||
	    (r = sl_stage_mkdir(st, "a/none", 0755, err)) < 0 ||
	    (r = sl_stage_write_file(st, "a/none/h", "x", 1, 0600, err)) < 0 ||
	    (r = sl_stage_mkdir(st, "a/none/sub", 0755, err)) < 0 ||
	    (r = sl_stage_symlink(st, t2, "a/none/sub/to-sealed", err)) < 0 ||
	    (r = sl_stage_mkdir(st, "b", 0755, err)) < 0)
		return r;
	return 0;
}

/* Narrows the modes (0000 and 0500 on logged directories, as a runtime
 * might) and swaps b for a symlink to nobody's locked canaries. */
static void narrow(const struct nobody_env *ne, const char *top)
{
	static const struct {
		const char *path;
		mode_t mode;
	} m[] = { { "a/ro/deep", 0000 }, { "a/ro", 0500 }, { "a/none/sub", 0000 },
		  { "a/none", 0000 },    { "a", 0500 },    { "rootfs/usr", 0500 } };
	char p[700], t[600];

	snprintf(p, sizeof(p), "%s/b", top);
	CHECK(rmdir(p) == 0);
	snprintf(t, sizeof(t), "%s/locked", ne->canary);
	CHECK(symlink(t, p) == 0);
	(void)lchown(p, NOBODY, NOBODY);
	for (size_t i = 0; i < ELEMENTSOF(m); i++) {
		snprintf(p, sizeof(p), "%s/%s", top, m[i].path);
		CHECK(chmod(p, m[i].mode) == 0);
	}
}

/* In-process release as nobody of a stage with narrowed directories:
 * success, or a clean failure with a reason and the stage failed. */
static int nobody_release_child(const struct nobody_env *ne, const char *root, const char *db)
{
	struct sl_store *s = NULL;
	struct sl_stage *st;
	struct sl_error err = { 0 };
	struct staged sd;
	int r;

	in_child = true;
	become_nobody();
	CHECK(sl_store_open(db, &s, &err) == 0);
	st = stage_here(s, root, build_nobody, ne, &sd);
	narrow(ne, sd.path);
	r = sl_stage_release(st, &err);
	sl_stage_free(st);
	if (r == 0) {
		CHECK(record_of(s, sd.rowid).state == SL_STATE_RELEASED);
		CHECK(count_entries(root) == 0);
		printf("    as nobody, narrowed dirs: released\n");
	} else {
		CHECK(err.msg[0] != '\0');
		CHECK(record_of(s, sd.rowid).state == SL_STATE_FAILED);
		printf("    as nobody, narrowed dirs: failed cleanly: %s\n", err.msg);
	}
	sl_store_close(s);
	return 0;
}

/* Recovery as nobody; want one failure that names a permission and the
 * root-owned directory, or the stage recovered. */
static int nobody_recover_child(const char *root, const char *db, int64_t rowid, bool want_failed)
{
	struct sl_store *s = NULL;
	struct sl_recover_report rep;
	struct sl_error err = { 0 };
	struct store_record rec;

	in_child = true;
	become_nobody();
	CHECK(sl_store_open(db, &s, &err) == 0);
	recover(s, &rep);
	rec = record_of(s, rowid);
	if (want_failed) {
		if (rep.n_failed != 1 || !strstr(rep.failed[0].reason, strerror(EACCES)) ||
		    (!strstr(rep.failed[0].reason, "/rootdir") && !strstr(rep.failed[0].reason, "/rootsealed")) ||
		    rec.state != SL_STATE_FAILED) {
			fprintf(stderr,
				"    child: want one failure for the root-owned dir, got %zu failed (%s), state %s\n",
				rep.n_failed, rep.n_failed ? rep.failed[0].reason : "", sl_store_state_name(rec.state));
			return 1;
		}
		printf("    as nobody, root-owned dirs inside the stage: failed cleanly: %s\n", rep.failed[0].reason);
	} else {
		if (rep.n_recovered != 1 || rec.state != SL_STATE_RECOVERED || count_entries(root) != 0) {
			fprintf(stderr, "    child: want the stage recovered, got %zu failed (%s)\n", rep.n_failed,
				rep.n_failed ? rep.failed[0].reason : "");
			return 1;
		}
	}
	sl_recover_report_finish(&rep);
	sl_store_close(s);
	return 0;
}

static void nobody_env_init(struct fixture *fx, struct nobody_env *ne)
{
	snprintf(ne->dir, sizeof(ne->dir), "/dev/shm/stagelog-attack-nobody-XXXXXX");
	snprintf(ne->dbdir, sizeof(ne->dbdir), "/tmp/stagelog-attack-nobody-XXXXXX");
	assert_non_null(mkdtemp(ne->dir));
	assert_non_null(mkdtemp(ne->dbdir));
	snprintf(fx->extra[0], sizeof(fx->extra[0]), "%s", ne->dir);
	snprintf(fx->extra[1], sizeof(fx->extra[1]), "%s", ne->dbdir);
	snprintf(ne->canary, sizeof(ne->canary), "%s/canary", ne->dir);
	snprintf(ne->src, sizeof(ne->src), "%s/src", ne->dir);
	make_canaries(ne->canary);
	make_sample_tree(ne->src);
	chown_tree(ne->dir);
	assert_int_equal(chown_one(ne->dbdir), 0);
}

static void test_unprivileged(void **state)
{
	struct fixture *fx = *state;
	struct nobody_env ne;
	char root[400], db[400], root2[400], db2[400], p[800], *nsnap, *rsnap, why[600];
	struct staged sd;
	pid_t pid;
	int p2[2];

	if (geteuid() != 0)
		skip(); /* Needs root to switch to nobody and to plant a root-owned directory. */
	nobody_env_init(fx, &ne);
	nsnap = tree_snapshot(ne.canary, true);
	snprintf(root, sizeof(root), "%s/root", ne.dir);
	snprintf(db, sizeof(db), "%s/a.db", ne.dbdir);
	snprintf(root2, sizeof(root2), "%s/root2", ne.dir);
	snprintf(db2, sizeof(db2), "%s/b.db", ne.dbdir);

	/* 1. In-process release of 0500/0000 directories nobody owns, with
	 * symlinks to nobody's own 0500/0000 canaries (which nobody could
	 * widen or empty, if the undo followed a symlink). */
	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_exit(nobody_release_child(&ne, root, db));
	assert_int_equal(wait_child(pid), 0);
	if (!same_tree(ne.canary, nsnap, why, sizeof(why)))
		fail_msg("nobody's canaries changed by release: %s", why);

	/* 2. A stale stage of nobody's with root-owned 0755 and 0000
	 * directories planted inside: recovery as nobody fails cleanly and
	 * touches neither. */
	assert_int_equal(pipe(p2), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		in_child = true;
		close(p2[0]);
		become_nobody();
		/* stale_stage() forks again: the stager dies, this child
		 * reports the stage. */
		stale_stage(db2, root2, build_nobody, &ne, 0, &sd);
		child_exit(write(p2[1], &sd, sizeof(sd)) == (ssize_t)sizeof(sd) ? 0 : 1);
	}
	close(p2[1]);
	assert_int_equal(read(p2[0], &sd, sizeof(sd)), (ssize_t)sizeof(sd));
	close(p2[0]);
	assert_int_equal(wait_child(pid), 0);
	snprintf(p, sizeof(p), "%s/rootdir/file", sd.path);
	write_path(p, "root's\n", 0644);
	snprintf(p, sizeof(p), "%s/rootsealed/file", sd.path);
	write_path(p, "root's\n", 0600);
	snprintf(p, sizeof(p), "%s/rootsealed", sd.path);
	assert_int_equal(chmod(p, 0000), 0);
	snprintf(p, sizeof(p), "%s/rootdir", sd.path);
	rsnap = tree_snapshot(p, true);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_exit(nobody_recover_child(root2, db2, sd.rowid, true));
	assert_int_equal(wait_child(pid), 0);
	if (!same_tree(p, rsnap, why, sizeof(why)))
		fail_msg("the root-owned directory changed: %s", why);
	snprintf(p, sizeof(p), "%s/rootsealed", sd.path);
	struct stat sb;
	assert_int_equal(lstat(p, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0000);
	assert_int_equal(sb.st_uid, 0);
	snprintf(p, sizeof(p), "%s/rootsealed/file", sd.path);
	assert_true(exists(p));
	if (!same_tree(ne.canary, nsnap, why, sizeof(why)))
		fail_msg("nobody's canaries changed by recovery: %s", why);
	/* The operator removes the foreign directories; the next pass
	 * finishes the stage. */
	snprintf(p, sizeof(p), "%s/rootdir", sd.path);
	remove_all(p);
	snprintf(p, sizeof(p), "%s/rootsealed", sd.path);
	remove_all(p);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_exit(nobody_recover_child(root2, db2, sd.rowid, false));
	assert_int_equal(wait_child(pid), 0);
	if (!same_tree(ne.canary, nsnap, why, sizeof(why)))
		fail_msg("nobody's canaries changed: %s", why);
	assert_canaries(fx, "unprivileged");
	free(nsnap);
	free(rsnap);
	say("case 7: as nobody, 0500/0000 dirs it owns with symlinks to its own 0500/0000 canaries: released or "
	    "failed cleanly, canaries unwidened; root-owned 0755/0000 dirs inside a stale stage: failed with EACCES, "
	    "root's dirs untouched, finished by the next pass once they were gone");
}

/*
 * An unprivileged user's stage whose own directories were narrowed must
 * still be removable: the undo widens (owner rwx, on EACCES, through the fd)
 * directories the caller owns:
 *  - a logged file in a 0000 logged dir (undo_entry());
 *  - a runtime-made 0500 dir holding a subdir (pop()'s rmdir);
 *  - a logged 0500 dir holding a logged subdir (undo_entry() falling back to
 *    rmtree_remove()).
 * Otherwise the stage would stay failed for good, its secrets on the tmpfs.
 */
static int narrowed_child(const char *base, const char *dbdir, int variant)
{
	char root[300], db[300], p[600];
	struct sl_store *s = NULL;
	struct sl_stage *st;
	struct sl_error err = { 0 };
	struct staged sd;
	int r;

	in_child = true;
	become_nobody();
	snprintf(root, sizeof(root), "%s/root%d", base, variant);
	snprintf(db, sizeof(db), "%s/db%d.db", dbdir, variant);
	CHECK(sl_store_open(db, &s, &err) == 0);
	CHECK(sl_stage_begin(s, root, NULL, &st, &err) == 0);
	staged_from(st, &sd);
	if (variant == 0) {
		CHECK(sl_stage_mkdir(st, "a", 0755, &err) == 0);
		CHECK(sl_stage_mkdir(st, "a/b", 0755, &err) == 0);
		CHECK(sl_stage_write_file(st, "a/b/f", "x", 1, 0600, &err) == 0);
		CHECK(sl_stage_ready(st, &err) == 0);
		snprintf(p, sizeof(p), "%s/a/b", sd.path);
		CHECK(chmod(p, 0000) == 0);
	} else if (variant == 1) {
		CHECK(sl_stage_ready(st, &err) == 0);
		snprintf(p, sizeof(p), "%s/rt/sub", sd.path);
		make_dir(p, 0755);
		snprintf(p, sizeof(p), "%s/rt", sd.path);
		CHECK(chmod(p, 0500) == 0);
	} else {
		CHECK(sl_stage_mkdir(st, "a", 0755, &err) == 0);
		CHECK(sl_stage_mkdir(st, "a/b", 0755, &err) == 0);
		CHECK(sl_stage_ready(st, &err) == 0);
		snprintf(p, sizeof(p), "%s/a", sd.path);
		CHECK(chmod(p, 0500) == 0);
	}
	r = sl_stage_release(st, &err);
	sl_stage_free(st);
	if (r < 0) {
		/* A failed stage is retried by the next pass; its owner (this
		 * process) is alive, so the pass is told to take it. */
		const char *ids[] = { sd.id };
		struct sl_recover_options o = { .force = ids, .n_force = 1 };
		struct sl_recover_report rep;
		char first[512];
		snprintf(first, sizeof(first), "%s", err.msg);
		CHECK(sl_recover_run(s, &o, &rep, &err) == 0);
		if (rep.n_recovered != 1) {
			printf("    variant %d: release failed (%s), and the next recovery too (%s) [examined %zu live "
			       "%zu]\n",
			       variant, first, rep.n_failed ? rep.failed[0].reason : "?", rep.examined, rep.n_live);
			return 1;
		}
		sl_recover_report_finish(&rep);
	}
	CHECK(count_entries(root) == 0);
	sl_store_close(s);
	return 0;
}

static void test_unprivileged_narrowed_dirs(void **state)
{
	static const char *const what[] = { "a logged file in a 0000 logged dir", "a 0500 runtime dir holding a dir",
					    "a 0500 logged dir holding a logged dir" };
	char base[] = "/dev/shm/stagelog-attack-narrow-XXXXXX", db[] = "/tmp/stagelog-attack-narrow-XXXXXX";
	struct fixture *fx = *state;
	int failures = 0;

	if (geteuid() != 0)
		skip();
	assert_non_null(mkdtemp(base));
	assert_non_null(mkdtemp(db));
	snprintf(fx->extra[0], sizeof(fx->extra[0]), "%s", base);
	snprintf(fx->extra[1], sizeof(fx->extra[1]), "%s", db);
	assert_int_equal(chown_one(base), 0);
	assert_int_equal(chown_one(db), 0);
	for (int v = 0; v < 3; v++) {
		pid_t pid;

		fflush(stdout);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			child_exit(narrowed_child(base, db, v) == 0 ? 0 : 1);
		if (wait_child(pid) != 0) {
			printf("    as nobody, %s: the stage can never be removed\n", what[v]);
			failures++;
		}
	}
	say("case 7b: as nobody, stages whose own dirs were narrowed (0000 logged dir with a file; 0500 dir with a "
	    "subdir, runtime-made and logged): %d of 3 stuck failed for good",
	    failures);
	if (failures)
		fail_msg("undo does not widen the caller's own narrowed directories");
}

/* ---- Case 8: hard links to canaries ---- */

static void test_hardlinks(void **state)
{
	struct fixture *fx = *state;
	static const struct {
		const char *canary, *in_stage;
		bool replace;
	} links[] = {
		{ "secret.txt", "rootfs/hl-secret", false },        { "config.json", "config.json", true },
		{ "rootfs/etc/passwd", "rootfs/etc/passwd", true }, { "readonly.txt", "rootfs/var/ro-link", false },
		{ "locked/inside", "extra/locked-link", false },
	};

	for (int mode = 0; mode < 2; mode++) {
		struct sl_stage *st = NULL;
		struct sl_error err = { 0 };
		struct staged sd;
		char a[1024], b[1024];
		struct stat sb;

		if (mode == 0)
			st = stage_here(fx->store, fx->sb.root, build_sample, fx->src, &sd);
		else
			stale_stage(fx->sb.db, fx->sb.root, build_sample, fx->src, 0, &sd);
		for (size_t i = 0; i < ELEMENTSOF(links); i++) {
			snprintf(a, sizeof(a), "%s/%s", fx->canary, links[i].canary);
			snprintf(b, sizeof(b), "%s/%s", sd.path, links[i].in_stage);
			if (links[i].replace)
				assert_int_equal(unlink(b), 0);
			assert_int_equal(link(a, b), 0);
			assert_int_equal(stat(a, &sb), 0);
			assert_int_equal(sb.st_nlink, 2);
		}
		/* Narrowed directories make the undo widen them: it must widen
		 * the directory, never the linked file. */
		snprintf(b, sizeof(b), "%s/rootfs/var", sd.path);
		assert_int_equal(chmod(b, 0500), 0);
		snprintf(b, sizeof(b), "%s/extra", sd.path);
		assert_int_equal(chmod(b, 0000), 0);
		if (mode == 0) {
			if (sl_stage_release(st, &err) < 0)
				fail_msg("release with hard links: %s", err.msg);
			sl_stage_free(st);
		} else {
			struct sl_recover_report rep;
			recover(fx->store, &rep);
			if (rep.n_recovered != 1)
				fail_msg("recovery with hard links: %s", rep.n_failed ? rep.failed[0].reason : "?");
			sl_recover_report_finish(&rep);
		}
		assert_int_equal(count_entries(fx->sb.root), 0);
		/* assert_canaries() checks content, mode, owner and nlink 1. */
		assert_canaries(fx, "hard links");
	}
	say("case 8: %zu hard links to canary files in a stage (runtime-made, in place of logged files, in 0500 and "
	    "0000 dirs), release and recovery: only the links went, each canary back to 1 link, same bytes and mode",
	    ELEMENTSOF(links));
}

/* ---- Case 9: a 10,000-level tree with 64 fds, a 100,000-entry dir ---- */

static void make_deep(const char *top, const char *canary, int levels)
{
	int fd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC), nfd;

	CHECK(fd >= 0);
	CHECK(mkdirat(fd, "deep", 0755) == 0);
	nfd = openat(fd, "deep", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	close(fd);
	fd = nfd;
	for (int i = 0; i < levels; i++) {
		CHECK(fd >= 0);
		if (i % 1000 == 0) {
			int f = openat(fd, "file", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
			CHECK(f >= 0);
			close(f);
			CHECK(symlinkat(canary, fd, "to-canary") == 0);
		}
		CHECK(mkdirat(fd, "d", 0755) == 0);
		nfd = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		fd = nfd;
	}
	CHECK(fd >= 0);
	CHECK(symlinkat(canary, fd, "bottom-to-canary") == 0);
	close(fd);
}

struct small_job {
	struct fixture *fx;
	const char *root, *db;
	int64_t rowid;
	int result;
	char msg[600];
};

static int count_fds(void)
{
	return count_entries("/proc/self/fd");
}

/* Runs on a 512 KiB stack: a recursive walk of 10,000 levels would not
 * fit. Stages a deep tree in-process and releases it, then recovers the
 * stale deep stage the parent prepared. */
static void *deep_job(void *arg)
{
	struct small_job *j = arg;
	struct sl_store *s = NULL;
	struct sl_error err = { 0 };
	struct sl_recover_report rep;
	struct sl_stage *st;
	struct staged sd;
	char root2[600];
	int before, after, r;

	j->result = 1;
	if (sl_store_open(j->db, &s, &err) < 0) {
		snprintf(j->msg, sizeof(j->msg), "store: %s", err.msg);
		return NULL;
	}
	before = count_fds();
	snprintf(root2, sizeof(root2), "%s-inproc", j->root);
	st = stage_here(s, root2, build_sample, j->fx->src, &sd);
	make_deep(sd.path, j->fx->canary, DEEP_LEVELS);
	r = sl_stage_release(st, &err);
	sl_stage_free(st);
	if (r < 0 || count_entries(root2) != 0) {
		snprintf(j->msg, sizeof(j->msg), "release of a %d-level tree: %s", DEEP_LEVELS, err.msg);
		return NULL;
	}
	after = count_fds();
	if (after != before) {
		snprintf(j->msg, sizeof(j->msg), "release leaked fds: %d before, %d after", before, after);
		return NULL;
	}
	recover(s, &rep);
	if (rep.n_recovered != 1 || count_entries(j->root) != 0) {
		snprintf(j->msg, sizeof(j->msg), "recovery of a %d-level tree: %zu recovered, %s", DEEP_LEVELS,
			 rep.n_recovered, rep.n_failed ? rep.failed[0].reason : "root not empty");
		return NULL;
	}
	sl_recover_report_finish(&rep);
	after = count_fds();
	if (after != before) {
		snprintf(j->msg, sizeof(j->msg), "recovery leaked fds: %d before, %d after", before, after);
		return NULL;
	}
	sl_store_close(s);
	j->result = 0;
	return NULL;
}

static void test_deep_tree(void **state)
{
	struct fixture *fx = *state;
	struct sub u;
	struct staged sd;
	struct timespec t0, t1;
	pid_t pid;

	sub_init(fx, &u, "deep");
	stale_stage(u.db, u.root, build_sample, fx->src, 0, &sd);
	make_deep(sd.path, fx->canary, DEEP_LEVELS);
	sub_finish(&u);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = { 64, 64 };
		struct small_job j = { .fx = fx, .root = u.root, .db = u.db };
		pthread_attr_t at;
		pthread_t th;

		in_child = true;
		alarm(240);
		CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
		CHECK(pthread_attr_init(&at) == 0);
		CHECK(pthread_attr_setstacksize(&at, 512 * 1024) == 0);
		CHECK(pthread_create(&th, &at, deep_job, &j) == 0);
		CHECK(pthread_join(th, NULL) == 0);
		if (j.result)
			fprintf(stderr, "    child: %s\n", j.msg);
		child_exit(j.result);
	}
	assert_int_equal(wait_child(pid), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(count_entries(u.root), 0);
	assert_canaries(fx, "deep tree");
	say("case 9a: %d-level trees with symlinks to the canaries, RLIMIT_NOFILE 64, a 512 KiB stack: released "
	    "and recovered, no fd leaked, root empty, canaries intact (%.1f s)",
	    DEEP_LEVELS, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

static void test_wide_dir(void **state)
{
	struct fixture *fx = *state;
	struct sl_recover_report rep;
	struct staged sd;
	struct timespec t0, t1;
	char p[700];
	int fd;

	stale_stage(fx->sb.db, fx->sb.root, build_sample, fx->src, 0, &sd);
	snprintf(p, sizeof(p), "%s/rootfs/wide", sd.path);
	make_dir(p, 0755);
	fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	for (int i = 0; i < WIDE_ENTRIES; i++) {
		char name[32];
		snprintf(name, sizeof(name), "%d", i);
		if (i % 10000 == 0) {
			assert_int_equal(symlinkat(fx->canary, fd, name), 0);
			continue;
		}
		int f = openat(fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		assert_true(f >= 0);
		close(f);
	}
	close(fd);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	recover(fx->store, &rep);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (rep.n_recovered != 1)
		fail_msg("recovery of a %d-entry directory: %s", WIDE_ENTRIES,
			 rep.n_failed ? rep.failed[0].reason : "?");
	sl_recover_report_finish(&rep);
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_canaries(fx, "wide directory");
	say("case 9b: a %d-entry directory (with symlinks to the canaries) in a stale stage: recovered in %.2f s, "
	    "root empty, canaries intact",
	    WIDE_ENTRIES, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

/* ---- Case 10: odd names ---- */

static int build_odd(struct sl_stage *st, const void *arg, struct sl_error *err)
{
	int r;

	(void)arg;
	if ((r = sl_stage_mkdir(st, "new\nline", 0755, err)) < 0 ||
	    (r = sl_stage_write_file(st, "new\nline/\xff\xfe", "x", 1, 0600, err)) < 0 ||
	    (r = sl_stage_write_file(st, "-rf", "x", 1, 0600, err)) < 0 ||
	    (r = sl_stage_mkdir(st, "--", 0755, err)) < 0 ||
	    (r = sl_stage_write_file(st, "--/-", "x", 1, 0600, err)) < 0 ||
	    (r = sl_stage_symlink(st, "/", "-n", err)) < 0 || (r = sl_stage_mkdir(st, "\xff\xfe", 0700, err)) < 0 ||
	    (r = sl_stage_write_file(st, "\xff\xfe/\n-\xfd", "x", 1, 0600, err)) < 0)
		return r;
	return 0;
}

static void add_odd_runtime(const char *top)
{
	static const char *const names[] = { "\n", "-", "--help", "\xfe\xff\xfd", "- -", "\x01\x02", "-\n\xff" };
	char p[1024];

	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		snprintf(p, sizeof(p), "%s/%s", top, names[i]);
		if (i % 2)
			make_dir(p, 0755);
		else
			write_path(p, "x", 0600);
	}
	snprintf(p, sizeof(p), "%s/-/-x\xff", top);
	write_path(p, "x", 0600);
}

static void test_odd_names(void **state)
{
	struct fixture *fx = *state;

	for (int mode = 0; mode < 2; mode++) {
		struct sl_stage *st = NULL;
		struct sl_error err = { 0 };
		struct staged sd;

		if (mode == 0)
			st = stage_here(fx->store, fx->sb.root, build_odd, NULL, &sd);
		else
			stale_stage(fx->sb.db, fx->sb.root, build_odd, NULL, 0, &sd);
		add_odd_runtime(sd.path);
		if (mode == 0) {
			if (sl_stage_release(st, &err) < 0)
				fail_msg("release with odd names: %s", err.msg);
			sl_stage_free(st);
			assert_int_equal(record_of(fx->store, sd.rowid).state, SL_STATE_RELEASED);
		} else {
			struct sl_recover_report rep;
			recover(fx->store, &rep);
			if (rep.n_recovered != 1)
				fail_msg("recovery with odd names: %s", rep.n_failed ? rep.failed[0].reason : "?");
			sl_recover_report_finish(&rep);
			assert_int_equal(record_of(fx->store, sd.rowid).state, SL_STATE_RECOVERED);
		}
		assert_int_equal(count_entries(fx->sb.root), 0);
	}
	assert_canaries(fx, "odd names");
	say("case 10: names with a newline, invalid UTF-8 (\\xff\\xfe) and leading dashes, logged and "
	    "runtime-made, release and recovery: all removed");
}

/* ---- Case 11: a directory renamed and replaced during removal ---- */

/* variant 0: during the walk of runtime-made content (rmtree_remove);
 * variant 1: during the removal of logged entries (undo_entry). */
static bool replaced_run(struct fixture *fx, int variant, int mode, char *why, size_t size)
{
	struct sl_stage *st = NULL;
	struct sl_error err = { 0 };
	struct staged sd;
	char p[1024], d[600];
	bool ok = false;

	if (mode == 0)
		st = stage_here(fx->store, fx->sb.root, build_sample, fx->src, &sd);
	else
		stale_stage(fx->sb.db, fx->sb.root, build_sample, fx->src, 0, &sd);
	memset(&R, 0, sizeof(R));
	R.empty = variant == 2;
	if (variant == 0 || variant == 2) {
		const char *files[] = { "f1", "f2", "f3", "sub/g" };
		for (size_t i = 0; i < ELEMENTSOF(files); i++) {
			snprintf(p, sizeof(p), "%s/rt/D/%s", sd.path, files[i]);
			write_path(p, "runtime's\n", 0600);
		}
		snprintf(R.watch, sizeof(R.watch), "%s/rt/D", sd.path);
		snprintf(R.victim, sizeof(R.victim), "%s/rt/D", sd.path);
		snprintf(R.moved, sizeof(R.moved), "%s/rt/D.old", sd.path);
	} else {
		snprintf(R.watch, sizeof(R.watch), "%s/rootfs/usr/share/doc", sd.path);
		snprintf(R.victim, sizeof(R.victim), "%s/rootfs/usr/share/doc", sd.path);
		snprintf(R.moved, sizeof(R.moved), "%s/rootfs/usr/share/doc.old", sd.path);
	}
	R.armed = true;
	if (mode == 0) {
		(void)sl_stage_release(st, &err);
		sl_stage_free(st);
	} else {
		struct sl_recover_report rep;
		recover(fx->store, &rep);
		if (rep.n_failed)
			snprintf(err.msg, sizeof(err.msg), "%s", rep.failed[0].reason);
		sl_recover_report_finish(&rep);
	}
	R.armed = false;
#define SOFT(cond, ...)                                   \
	do {                                              \
		if (!(cond)) {                            \
			snprintf(why, size, __VA_ARGS__); \
			goto out;                         \
		}                                         \
	} while (0)
	SOFT(R.fired, "the replacement hook never fired");
	SOFT(exists(R.victim), "the replacement was removed (stage %s: %.300s)",
	     sl_store_state_name(record_of(fx->store, sd.rowid).state), err.msg);
	SOFT(same_tree(R.victim, R.snap, d, sizeof(d)), "the replacement lost contents: %.400s (stage %s: %.300s)", d,
	     sl_store_state_name(record_of(fx->store, sd.rowid).state), err.msg);
	SOFT(record_of(fx->store, sd.rowid).state == SL_STATE_FAILED && err.msg[0],
	     "the stage is %s, not failed with a reason", sl_store_state_name(record_of(fx->store, sd.rowid).state));
	ok = true;
out:
#undef SOFT
	/* Clean up for the next run: the replacement is the test's. */
	remove_all(sd.path);
	if (record_of(fx->store, sd.rowid).state == SL_STATE_FAILED) {
		struct sl_recover_report rep;
		if (mode == 0) {
			CHECK(sl_stage_release_id(fx->store, sd.id, &err) >= 0);
		} else {
			recover(fx->store, &rep);
			sl_recover_report_finish(&rep);
		}
	}
	free(R.snap);
	R.snap = NULL;
	return ok;
}

static void test_replaced_during_walk(void **state)
{
	struct fixture *fx = *state;
	int failures = 0;

	for (int variant = 0; variant <= 2; variant += 2) {
		for (int mode = 0; mode < 2; mode++) {
			char why[1024];
			if (!replaced_run(fx, variant, mode, why, sizeof(why))) {
				printf("    %s, %s replacement: %s\n", mode == 0 ? "release" : "recovery",
				       variant ? "an empty" : "a full", why);
				failures++;
			}
		}
	}
	assert_canaries(fx, "replacement during the walk");
	say("case 11a: a runtime-made directory renamed away and replaced (by one with contents, and by an empty "
	    "one) at the first unlinkat inside it, during the tree walk, release and recovery: %s",
	    failures ? "FAILED" : "replacement intact, stage failed with a reason");
	assert_int_equal(failures, 0);
}

/* The entry pass remembers the identity of the directory it just emptied
 * through an fd (the parent of the entries before it), so the directory's
 * own entry finds a replacement and leaves it alone. */
static void test_replaced_during_entries(void **state)
{
	struct fixture *fx = *state;
	int failures = 0;

	for (int mode = 0; mode < 2; mode++) {
		char why[1024];
		if (!replaced_run(fx, 1, mode, why, sizeof(why))) {
			printf("    %s: %s\n", mode == 0 ? "release" : "recovery", why);
			failures++;
		}
	}
	assert_canaries(fx, "replacement during the entries");
	say("case 11b: a logged directory renamed away and replaced (with contents) at the first unlinkat inside "
	    "it, during the removal of logged entries, release and recovery: %s",
	    failures ? "FAILED" : "replacement intact, stage failed with a reason");
	assert_int_equal(failures, 0);
}

/* ---- Case 12: unsafe roots ---- */

static int count_cb(const struct sl_stage_info *info, void *userdata)
{
	(void)info;
	(*(int *)userdata)++;
	return 0;
}

static int count_stages(struct sl_store *s)
{
	int n = 0;
	CHECK(sl_recover_list(s, SL_LIST_ALL, NULL, count_cb, &n, NULL) == 0);
	return n;
}

static void test_unsafe_roots(void **state)
{
	struct fixture *fx = *state;
	struct {
		const char *what;
		int want;
	} cases[] = {
		{ "a symlink to the canaries", -ELOOP },
		{ "a dir 0777", -EPERM },
		{ "a dir 0770", -EPERM },
		{ "a dir 0702", -EPERM },
		{ "a dir 1777 (sticky)", -EPERM },
		{ "a dir owned by nobody", -EPERM },
		{ "a regular file", -ELOOP },
		{ "a path with ..", -EINVAL },
		{ "a symlink to a missing dir inside the canaries", -ELOOP },
	};
	int before = count_stages(fx->store);

	for (size_t k = 0; k < ELEMENTSOF(cases); k++) {
		struct sl_stage *st = NULL;
		struct sl_error err = { 0 };
		char root[700], tgt[700];
		int r;

		snprintf(root, sizeof(root), "%s/unsafe%zu", fx->sb.base, k);
		switch (k) {
		case 0:
			CHECK(symlink(fx->canary, root) == 0);
			break;
		case 1:
			make_dir(root, 0777);
			break;
		case 2:
			make_dir(root, 0770);
			break;
		case 3:
			make_dir(root, 0702);
			break;
		case 4:
			make_dir(root, 01777);
			break;
		case 5:
			make_dir(root, 0700);
			CHECK(geteuid() != 0 || chown(root, NOBODY, NOBODY) == 0);
			break;
		case 6:
			write_path(root, "", 0600);
			break;
		case 7:
			snprintf(root, sizeof(root), "%s/x/../canary", fx->sb.base);
			break;
		case 8:
			snprintf(tgt, sizeof(tgt), "%s/not-yet", fx->canary);
			CHECK(symlink(tgt, root) == 0);
			break;
		}
		if (k == 5 && geteuid() != 0)
			continue;
		r = sl_stage_begin(fx->store, root, NULL, &st, &err);
		if (r != cases[k].want)
			fail_msg("root that is %s: sl_stage_begin returned %d (%s), want %d", cases[k].what, r, err.msg,
				 cases[k].want);
		assert_null(st);
		assert_true(err.flags & SL_ERROR_CANTCREAT);
		assert_int_equal(count_stages(fx->store), before);
		if (k >= 1 && k <= 5)
			assert_int_equal(count_entries(root), 0);
		assert_canaries(fx, cases[k].what);
	}
	say("case 12: %zu unsafe roots (symlinks, 0777/0770/0702/1777, another owner, a file, '..'): refused "
	    "before anything, no record, nothing created, canaries intact",
	    ELEMENTSOF(cases));
}

/* ---- Case 13: the fallback resolver, under a seccomp filter ---- */

/* 0 when openat2 works, else its errno. */
static int openat2_errno(void)
{
	struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_BENEATH };
	long fd = syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof(how));

	if (fd >= 0) {
		close((int)fd);
		return 0;
	}
	return errno;
}

static int install_openat2_filter(void)
{
#if defined(__x86_64__)
	const unsigned arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
	const unsigned arch = AUDIT_ARCH_AARCH64;
#else
	return -EOPNOTSUPP;
#endif
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat2, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = (unsigned short)ELEMENTSOF(f), .filter = f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return -errno;
	return 0;
}

/* In the normal run: openat2 is what the attacks above went through. */
static void test_openat2_available(void **state)
{
	(void)state;
	int e = openat2_errno();
	if (e == ENOSYS)
		skip(); /* An old kernel: the fallback is all there is. */
	assert_int_equal(e, 0);
	say("openat2 is available: cases 1-5 above ran on openat2 with RESOLVE_BENEATH|NO_SYMLINKS|NO_XDEV");
}

/* In the filtered run: the filter is in force. */
static void test_filter_in_force(void **state)
{
	(void)state;
	assert_int_equal(openat2_errno(), ENOSYS);
	say("openat2 returns ENOSYS under the seccomp filter: cases 1-5 below run on the fallback walk");
}

static void test_openat2_filtered(void **state)
{
	pid_t pid;
	int r;

	(void)state;
	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		r = install_openat2_filter();
		if (r < 0) {
			printf("    cannot install a seccomp filter: %s\n", strerror(-r));
			child_exit(77);
		}
		if (openat2_errno() != ENOSYS)
			_exit(3);
		execl("/proc/self/exe", "test-attack", "--openat2-enosys", (char *)NULL);
		_exit(127);
	}
	r = wait_child(pid);
	if (r == 77)
		skip();
	if (r != 0)
		fail_msg("cases 1-5 under the openat2 seccomp filter: %d failed (exit status %d)", r, r);
	say("case 13: cases 1-5 re-run under prctl(NO_NEW_PRIVS) + a BPF filter making openat2 ENOSYS: all passed");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(int argc, char **argv)
{
	const struct CMUnitTest fallback_tests[] = {
		cmocka_unit_test(test_filter_in_force),
		T(test_symlink_swap),
		T(test_top_symlink),
		T(test_top_replaced_unrelated),
		T(test_top_replaced_by_directory),
		T(test_race_flip),
		T(test_tamper_entries),
		T(test_tamper_stages),
		T(test_tamper_steal),
		T(test_mounts),
	};
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_openat2_available),
		T(test_symlink_swap),
		T(test_top_symlink),
		T(test_top_replaced_unrelated),
		T(test_top_replaced_by_directory),
		T(test_race_flip),
		T(test_tamper_entries),
		T(test_tamper_stages),
		T(test_tamper_steal),
		T(test_mounts),
		T(test_special_files),
		T(test_unprivileged),
		T(test_unprivileged_narrowed_dirs),
		T(test_hardlinks),
		T(test_deep_tree),
		T(test_wide_dir),
		T(test_odd_names),
		T(test_replaced_during_walk),
		T(test_replaced_during_entries),
		T(test_unsafe_roots),
		cmocka_unit_test(test_openat2_filtered),
	};

	if (argc > 1 && strcmp(argv[1], "--openat2-enosys") == 0) {
		filtered = true;
		return cmocka_run_group_tests_name("attack, openat2 filtered", fallback_tests, NULL, NULL);
	}
	return cmocka_run_group_tests_name("attack", tests, NULL, NULL);
}
