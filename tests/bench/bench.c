/* SPDX-License-Identifier: MIT */
/*
 * bench.c: the benchmarks of the performance issue, one subcommand each.
 *
 *   bench N [STAGELOG]    run benchmark N (1..16); `bench all` runs them all
 *
 * The stagelog program comes from argv[2] or $STAGELOG. Every benchmark
 * builds its own trees under a fresh /dev/shm/stagelog-bench-XXXXXX (tmpfs:
 * sources, staging roots and the trees cp and rm work on) and its stores
 * under a fresh /var/tmp/stagelog-bench-XXXXXX (disk), measures the two
 * sides A and B alternately (A, B, A, B, ...) with CLOCK_MONOTONIC after an
 * untimed warm-up, prints one block with the inputs, each side's median,
 * min and max, the ratio and the target, and removes everything it made.
 * It exits 1 when a target is missed and 2 when it could not measure.
 *
 * $STAGELOG_BENCH_RUNS (5..MAX_RUNS) overrides the number of pairs of every
 * benchmark, for a quick check; the defaults are what the figures in
 * docs/performance.md use (20 pairs or more from benchmark 10 on).
 */
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <linux/magic.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sl-oci.h"
#include "sl-recover.h"
#include "stage-private.h"
#include "store-private.h"

/* Benchmark 10 times 200 consecutive cycles, one pair each. */
#define MAX_RUNS 256
#define FILE_SIZE 64

/* ---- Workspace, failure and cleanup ---- */

static char shm_base[PATH_MAX];  /* tmpfs: trees and staging roots */
static char disk_base[PATH_MAX]; /* disk: stores */
static const char *stagelog;
static pid_t main_pid;
static int runs_override;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	/* Every tree here was made by this program with owner rwx, so a plain
	 * depth-first remove reaches everything. */
	remove(path);
	return 0;
}

/* Removes a tree in-process, for untimed cleanup only. */
static void rm_tree(const char *path)
{
	nftw(path, rm_one, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static void cleanup(void)
{
	/* Forked children share the atexit list; only the main process owns
	 * the workspace. */
	if (getpid() != main_pid)
		return;
	if (shm_base[0])
		rm_tree(shm_base);
	if (disk_base[0])
		rm_tree(disk_base);
	shm_base[0] = disk_base[0] = '\0';
}

/* meson stops a benchmark past its timeout with SIGTERM. nftw is not
 * async-signal-safe, but the process exits right after: leaving nothing
 * behind in /dev/shm is worth that. */
static void on_signal(int sig)
{
	cleanup();
	_exit(128 + sig);
}

static _Noreturn void die(const char *fmt, ...) PRINTF_FMT(1, 2);
static _Noreturn void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (getpid() != main_pid)
		_exit(2);
	exit(2);
}

static void check(int r, const struct sl_error *err, const char *what)
{
	if (r < 0)
		die("%s: %s", what, err && err->msg[0] ? err->msg : strerror(-r));
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double secs_since(int64_t t0)
{
	return (double)(now_ns() - t0) / 1e9;
}

/* Writes base/name into buf (PATH_MAX bytes). */
static char *pjoin(char *buf, const char *base, const char *name)
{
	if (snprintf(buf, PATH_MAX, "%s/%s", base, name) >= PATH_MAX)
		die("path too long");
	return buf;
}

static const char *fs_name(const char *path)
{
	static char buf[32];
	struct statfs sf;

	if (statfs(path, &sf) < 0)
		return "unknown";
	switch ((unsigned long)sf.f_type) {
	case TMPFS_MAGIC:
		return "tmpfs";
	case EXT4_SUPER_MAGIC:
		return "ext4";
	case BTRFS_SUPER_MAGIC:
		return "btrfs";
	case XFS_SUPER_MAGIC:
		return "xfs";
	case OVERLAYFS_SUPER_MAGIC:
		return "overlayfs";
	default:
		snprintf(buf, sizeof(buf), "fs 0x%lx", (unsigned long)sf.f_type);
		return buf;
	}
}

/* Deletes a store and its -wal and -shm files. */
static void rm_store(const char *db)
{
	char p[PATH_MAX + 8];

	unlink(db);
	snprintf(p, sizeof(p), "%s-wal", db);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", db);
	unlink(p);
}

/* ---- Trees ---- */

/* Makes dir with ndirs folders of nfiles files each (FILE_SIZE bytes). */
static void make_tree(const char *dir, int ndirs, int nfiles)
{
	char content[FILE_SIZE];
	int top;

	memset(content, 'x', sizeof(content));
	content[FILE_SIZE - 1] = '\n';
	if (mkdir(dir, 0755) < 0)
		die("mkdir %s: %s", dir, strerror(errno));
	top = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (top < 0)
		die("open %s: %s", dir, strerror(errno));
	for (int d = 0; d < ndirs; d++) {
		char name[32];
		int sub;

		snprintf(name, sizeof(name), "d%04d", d);
		if (mkdirat(top, name, 0755) < 0 || (sub = openat(top, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			die("mkdir %s/%s: %s", dir, name, strerror(errno));
		for (int f = 0; f < nfiles; f++) {
			int fd;

			snprintf(name, sizeof(name), "f%04d", f);
			fd = openat(sub, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
			if (fd < 0 || write(fd, content, sizeof(content)) != (ssize_t)sizeof(content))
				die("write %s/%s: %s", dir, name, strerror(errno));
			close(fd);
		}
		close(sub);
	}
	close(top);
}

static const char config_json[] =
	"{\"ociVersion\": \"1.0.2\", \"process\": {\"args\": [\"/bin/sh\"], \"env\": [\"A=1\"], \"cwd\": \"/\"},"
	" \"root\": {\"path\": \"rootfs\"}}\n";

/* Makes a packaged bundle: pkg/rootfs (make_tree) and pkg/config.json. */
static void make_bundle(const char *pkg, int ndirs, int nfiles)
{
	char p[PATH_MAX];
	int fd;

	if (mkdir(pkg, 0755) < 0)
		die("mkdir %s: %s", pkg, strerror(errno));
	make_tree(pjoin(p, pkg, "rootfs"), ndirs, nfiles);
	fd = open(pjoin(p, pkg, "config.json"), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, config_json, sizeof(config_json) - 1) != (ssize_t)sizeof(config_json) - 1)
		die("write %s: %s", p, strerror(errno));
	close(fd);
}

/* ---- Processes ---- */

/* What a process wrote on stdout: the first bytes, and a count of all
 * lines (the rest is read and dropped, so the writer never blocks). */
struct proc_out {
	char buf[8192];
	size_t len;
	int lines;
};

/* Runs argv with stdin from /dev/null, stdout into out (or /dev/null) and
 * stderr inherited. Returns the seconds from fork to reaping; the wait
 * status goes to *ret_status. */
static double run_proc(char *const argv[], struct proc_out *out, int *ret_status)
{
	int pipefd[2] = { -1, -1 }, status;
	int64_t t0;
	pid_t pid;

	if (out && pipe2(pipefd, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	t0 = now_ns();
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		dup2(null, 0);
		dup2(out ? pipefd[1] : null, 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (out) {
		char chunk[16384];
		ssize_t n;

		close(pipefd[1]);
		out->len = 0;
		out->lines = 0;
		while ((n = read(pipefd[0], chunk, sizeof(chunk))) > 0 || (n < 0 && errno == EINTR)) {
			size_t keep = sizeof(out->buf) - 1 - out->len;

			if (n < 0)
				continue;
			if (keep > (size_t)n)
				keep = (size_t)n;
			memcpy(out->buf + out->len, chunk, keep);
			out->len += keep;
			for (ssize_t i = 0; i < n; i++)
				out->lines += chunk[i] == '\n';
		}
		out->buf[out->len] = '\0';
		close(pipefd[0]);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid: %s", strerror(errno));
	*ret_status = status;
	return secs_since(t0);
}

/* As run_proc(), and dies unless the process exited 0. */
static double run_ok(char *const argv[], struct proc_out *out)
{
	int status;
	double t = run_proc(argv, out, &status);

	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("%s %s failed (%s %d)", argv[0], argv[1] ? argv[1] : "", WIFEXITED(status) ? "exit" : "signal",
		    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	return t;
}

static double cp_a(const char *src, const char *dst)
{
	char *argv[] = { "cp", "-a", (char *)src, (char *)dst, NULL };

	return run_ok(argv, NULL);
}

static double rm_rf(const char *path)
{
	char *argv[] = { "rm", "-rf", (char *)path, NULL };

	return run_ok(argv, NULL);
}

/* `stagelog --db DB stage --root ROOT --bundle PKG --owner PID`; the id it
 * printed goes to id. */
static double cli_stage(const char *db, const char *root, const char *pkg, char id[SL_ID_SIZE])
{
	char owner[24];
	char *argv[] = { (char *)stagelog, "--db",      (char *)db, "stage", "--root", (char *)root,
			 "--bundle",       (char *)pkg, "--owner",  owner,   NULL };
	struct proc_out out;
	double t;

	snprintf(owner, sizeof(owner), "%d", (int)getpid());
	t = run_ok(argv, &out);
	if (out.len < STORE_ID_LEN + 1 || out.buf[STORE_ID_LEN] != '\t')
		die("stagelog stage printed no id");
	memcpy(id, out.buf, STORE_ID_LEN);
	id[STORE_ID_LEN] = '\0';
	return t;
}

static double cli_release(const char *db, const char *id)
{
	char *argv[] = { (char *)stagelog, "--db", (char *)db, "release", (char *)id, NULL };

	return run_ok(argv, NULL);
}

/* ---- Library helpers ---- */

static struct sl_store *store_open(const char *db)
{
	struct sl_error err = { 0 };
	struct sl_store *s = NULL;

	check(sl_store_open(db, &s, &err), &err, "open store");
	return s;
}

/* Stages src as rootfs with the library (begin, copy, ready) in the given
 * log mode; returns the seconds it took and the ready stage. */
static double lib_stage_tree(struct sl_store *store, const char *root, const char *src, enum stage_log_mode mode,
			     struct sl_stage **ret)
{
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;
	int64_t t0 = now_ns();
	double t;

	check(sl_stage_begin(store, root, NULL, &st, &err), &err, "begin");
	if (mode != STAGE_LOG_BATCHED)
		stage_set_log_mode(st, mode);
	check(sl_stage_copy_tree(st, AT_FDCWD, src, "rootfs", &err), &err, "copy tree");
	check(sl_stage_ready(st, &err), &err, "ready");
	t = secs_since(t0);
	/* Naive mode is a property of the store handle too: switch it back
	 * so that the release (and the next stage) run as shipped. */
	stage_set_log_mode(st, STAGE_LOG_BATCHED);
	*ret = st;
	return t;
}

/* Stages the bundle pkg as `stagelog stage` does (sl_oci_stage). */
static struct sl_stage *lib_stage_bundle(struct sl_store *store, const char *root, const char *pkg)
{
	struct sl_oci_options o = { .root = root, .bundle = pkg };
	struct sl_error err = { 0 };
	struct sl_stage *st = NULL;

	check(sl_oci_stage(store, &o, &st, &err), &err, "stage bundle");
	return st;
}

static void lib_release(struct sl_stage *st)
{
	struct sl_error err = { 0 };

	check(sl_stage_release(st, &err), &err, "release");
	sl_stage_free(st);
}

/* Releases a stage by id with a store handle of its own, closed again so
 * that the next timed process finds the store as a lone user would. */
static void release_id(const char *db, const char *id)
{
	struct sl_error err = { 0 };
	struct sl_store *s = store_open(db);

	check(sl_stage_release_id(s, id, &err), &err, "release by id");
	sl_store_close(s);
}

/* ---- Series and reports ---- */

struct series {
	double v[MAX_RUNS];
	int n;
};

static void add(struct series *s, double v)
{
	if (s->n < MAX_RUNS)
		s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The median of the values from index `from` up to (not including) `to`. */
static double median_part(const struct series *s, int from, int to)
{
	double v[MAX_RUNS];
	int n = to - from;

	if (n <= 0)
		return 0;
	memcpy(v, s->v + from, sizeof(double) * (size_t)n);
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double median(const struct series *s)
{
	return median_part(s, 0, s->n);
}

static double vmin(const struct series *s)
{
	double m = s->n ? s->v[0] : 0;

	for (int i = 1; i < s->n; i++)
		m = s->v[i] < m ? s->v[i] : m;
	return m;
}

static double vmax(const struct series *s)
{
	double m = s->n ? s->v[0] : 0;

	for (int i = 1; i < s->n; i++)
		m = s->v[i] > m ? s->v[i] : m;
	return m;
}

/* Prints one side: scale converts seconds (or KiB) to the printed unit. */
static void print_series(const char *label, const struct series *s, double scale, const char *unit)
{
	printf("  %-34s median %9.2f %-3s  min %9.2f  max %9.2f  (n=%d)\n", label, median(s) * scale, unit,
	       vmin(s) * scale, vmax(s) * scale, s->n);
}

struct result {
	int num;
	const char *what;
	char figure[96];
	char target[48];
	bool pass;
};

/* One line of the summary each; a benchmark may add more than one. */
static struct result results[32];
static int n_results;

/* Adds a line to the summary and prints the verdict line for it. */
static int record(int num, const char *what, const char *figure, const char *target, bool pass)
{
	struct result *r = &results[n_results < 31 ? n_results++ : 31];

	r->num = num;
	r->what = what;
	r->pass = pass;
	snprintf(r->figure, sizeof(r->figure), "%s", figure);
	snprintf(r->target, sizeof(r->target), "%s", target);
	printf("  ratio  : %s   target %s   %s\n", r->figure, r->target, r->pass ? "PASS" : "MISS");
	return r->pass ? 0 : 1;
}

static void header(int num, const char *title)
{
	printf("\nbench %d: %s\n", num, title);
}

static void print_places(const char *db)
{
	printf("  places : trees and staging roots on %s (%s); store %s on %s (%s)\n", shm_base, fs_name(shm_base), db,
	       disk_base, fs_name(disk_base));
}

static int runs(int dflt)
{
	return runs_override ? runs_override : dflt;
}

/* Adds a ratio against a bound to the summary and prints the verdict. */
static int verdict(int num, const char *what, const char *ratio_name, double ratio, bool at_most, double bound)
{
	char figure[96], target[48];

	snprintf(figure, sizeof(figure), "%s = %.2fx", ratio_name, ratio);
	snprintf(target, sizeof(target), "%s %.2fx", at_most ? "<=" : ">=", bound);
	return record(num, what, figure, target, at_most ? ratio <= bound : ratio >= bound);
}

/* ---- The benchmarks ---- */

/* 1: staging 10,000 files with logging on, against the same copy code with
 * logging off. */
static int bench1(void)
{
	char pkg[PATH_MAX], src[PATH_MAX], root[PATH_MAX], db[PATH_MAX];
	struct series a = { 0 }, b = { 0 };
	struct store_counts s0, s1;
	struct sl_store *store;
	struct sl_stage *st;
	int n = runs(21);

	header(1, "stage a 10,000-file bundle, logging on vs off (library)");
	make_bundle(pjoin(pkg, shm_base, "pkg1"), 100, 100);
	pjoin(src, pkg, "rootfs");
	pjoin(root, shm_base, "root1");
	pjoin(db, disk_base, "b1.db");
	store = store_open(db);
	printf("  inputs : rootfs of 100 folders x 100 files x %d B = 10,100 paths; sl_stage_begin +\n"
	       "           sl_stage_copy_tree + sl_stage_ready; the release after each run is not timed\n",
	       FILE_SIZE);
	print_places(db);
	printf("  runs   : %d alternating pairs (A, B, A, B, ...) after 1 warm-up pair\n", n);
	for (int i = -1; i < n; i++) {
		double t;

		store_stats(store, &s0);
		t = lib_stage_tree(store, root, src, STAGE_LOG_BATCHED, &st);
		store_stats(store, &s1);
		lib_release(st);
		if (i >= 0)
			add(&a, t);
		t = lib_stage_tree(store, root, src, STAGE_LOG_OFF, &st);
		lib_release(st);
		if (i >= 0)
			add(&b, t);
	}
	print_series("A logged (batched, as shipped)", &a, 1e3, "ms");
	print_series("B logging off (STAGE_LOG_OFF)", &b, 1e3, "ms");
	printf("  store  : A commits %lu per stage, %lu durable\n", s1.commits - s0.commits,
	       s1.durable_commits - s0.durable_commits);
	sl_store_close(store);
	rm_tree(pkg);
	rm_tree(root);
	rm_store(db);
	return verdict(1, "stage 10k files: logged vs logging off", "A/B", median(&a) / median(&b), true, 1.05);
}

/* 2: `stagelog stage` of the 10,000-file bundle against `cp -a` of it. */
static int bench2(void)
{
	char pkg[PATH_MAX], root[PATH_MAX], db[PATH_MAX], dst[PATH_MAX], id[SL_ID_SIZE];
	struct series a = { 0 }, b = { 0 };
	int n = runs(7);

	header(2, "stage a 10,000-file bundle: `stagelog stage` vs `cp -a` (processes)");
	make_bundle(pjoin(pkg, shm_base, "pkg2"), 100, 100);
	pjoin(root, shm_base, "root2");
	pjoin(db, disk_base, "b2.db");
	pjoin(dst, shm_base, "cp2");
	printf("  inputs : bundle = rootfs/ (100 folders x 100 files x %d B) + config.json; A: stagelog --db DB\n"
	       "           stage --root ROOT --bundle PKG --owner PID; B: cp -a PKG DST (same tmpfs); cleanup "
	       "untimed\n",
	       FILE_SIZE);
	print_places(db);
	printf("  runs   : %d alternating pairs after 1 warm-up pair\n", n);
	for (int i = -1; i < n; i++) {
		double t = cli_stage(db, root, pkg, id);

		release_id(db, id);
		if (i >= 0)
			add(&a, t);
		t = cp_a(pkg, dst);
		rm_tree(dst);
		if (i >= 0)
			add(&b, t);
	}
	print_series("A stagelog stage", &a, 1e3, "ms");
	print_series("B cp -a", &b, 1e3, "ms");
	rm_tree(pkg);
	rm_tree(root);
	rm_store(db);
	return verdict(2, "stage 10k files (CLI) vs cp -a", "A/B", median(&a) / median(&b), true, 1.25);
}

/* 3: releasing that stage against `rm -rf` of the same tree. */
static int bench3(void)
{
	char pkg[PATH_MAX], root[PATH_MAX], db[PATH_MAX], dst[PATH_MAX], id[SL_ID_SIZE];
	struct series a = { 0 }, b = { 0 }, c = { 0 };
	struct sl_store *store;
	struct sl_stage *st;
	int n = runs(7);

	header(3, "release a 10,000-file stage vs `rm -rf` of the same tree");
	make_bundle(pjoin(pkg, shm_base, "pkg3"), 100, 100);
	pjoin(root, shm_base, "root3");
	pjoin(db, disk_base, "b3.db");
	pjoin(dst, root, "rm3");
	printf("  inputs : the stage of bench 2 (10,100 paths + config.json), made with sl_oci_stage (untimed);\n"
	       "           A: sl_stage_release; B: rm -rf of a cp -a copy of the bundle (untimed copy);\n"
	       "           C: `stagelog release ID` process (store not held open by anyone else)\n");
	print_places(db);
	printf("  runs   : %d alternating triples (A, B, C, ...) after 1 warm-up triple\n", n);
	for (int i = -1; i < n; i++) {
		int64_t t0;
		double t;

		store = store_open(db);
		st = lib_stage_bundle(store, root, pkg);
		t0 = now_ns();
		{
			struct sl_error err = { 0 };
			check(sl_stage_release(st, &err), &err, "release");
		}
		t = secs_since(t0);
		sl_stage_free(st);
		if (i >= 0)
			add(&a, t);

		cp_a(pkg, dst);
		t = rm_rf(dst);
		if (i >= 0)
			add(&b, t);

		st = lib_stage_bundle(store, root, pkg);
		snprintf(id, sizeof(id), "%s", sl_stage_id(st));
		sl_stage_free(st);
		sl_store_close(store);
		t = cli_release(db, id);
		if (i >= 0)
			add(&c, t);
	}
	print_series("A sl_stage_release (library)", &a, 1e3, "ms");
	print_series("B rm -rf", &b, 1e3, "ms");
	print_series("C stagelog release (process)", &c, 1e3, "ms");
	printf("  info   : C/B = %.2fx (process figure, not the target)\n", median(&c) / median(&b));
	rm_tree(pkg);
	rm_tree(root);
	rm_store(db);
	return verdict(3, "release 10k files (library) vs rm -rf", "A/B", median(&a) / median(&b), true, 1.25);
}

/* Counts fsync and fdatasync calls in an strace -y log, by what they
 * synced: a store file, the store's folder, the staging root, or other. */
struct syncs {
	int total, store_file, store_dir, root_dir, other;
};

static void count_syncs(const char *log, const char *db, const char *root, struct syncs *ret)
{
	char line[PATH_MAX + 256], dbdir[PATH_MAX];
	FILE *f = fopen(log, "re");

	memset(ret, 0, sizeof(*ret));
	snprintf(dbdir, sizeof(dbdir), "%s", db);
	dirname(dbdir);
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *lt, *gt;

		if (!strstr(line, "fsync(") && !strstr(line, "fdatasync("))
			continue;
		ret->total++;
		lt = strchr(line, '<');
		gt = lt ? strchr(lt, '>') : NULL;
		if (!lt || !gt) {
			ret->other++;
			continue;
		}
		*gt = '\0';
		lt++;
		if (strncmp(lt, db, strlen(db)) == 0)
			ret->store_file++;
		else if (strcmp(lt, dbdir) == 0)
			ret->store_dir++;
		else if (strcmp(lt, root) == 0)
			ret->root_dir++;
		else
			ret->other++;
	}
	fclose(f);
}

static bool have_strace(void)
{
	char *argv[] = { "strace", "-V", NULL };
	int status;

	run_proc(argv, NULL, &status);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Runs argv under strace, counting its syncs. */
static void strace_syncs(char **argv, const char *db, const char *root, struct syncs *ret, struct proc_out *out)
{
	char log[PATH_MAX], *sargv[32];
	int k = 0;

	pjoin(log, shm_base, "strace.log");
	sargv[k++] = "strace";
	sargv[k++] = "-f";
	sargv[k++] = "-qq";
	sargv[k++] = "-y";
	sargv[k++] = "-e";
	sargv[k++] = "trace=fsync,fdatasync";
	sargv[k++] = "-o";
	sargv[k++] = log;
	for (int i = 0; argv[i] && k < 31; i++)
		sargv[k++] = argv[i];
	sargv[k] = NULL;
	run_ok(sargv, out);
	count_syncs(log, db, root, ret);
	unlink(log);
}

static void print_syncs(const char *what, const struct syncs *s)
{
	printf("           %-8s %d fsync/fdatasync: %d store file, %d store folder, %d staging root, %d other\n", what,
	       s->total, s->store_file, s->store_dir, s->root_dir, s->other);
}

/* 4: stage + release of a 20-path bundle as processes, with the syncs. */
static int bench4(void)
{
	char pkg[PATH_MAX], root[PATH_MAX], db[PATH_MAX], dst[PATH_MAX], id[SL_ID_SIZE];
	struct series a = { 0 }, b = { 0 };
	struct store_counts s0, s1, s2;
	struct sl_store *store;
	struct sl_stage *st;
	int n = runs(15);

	header(4, "stage + release of a 20-path bundle: stagelog vs cp -a + rm -rf (processes)");
	make_bundle(pjoin(pkg, shm_base, "pkg4"), 4, 4);
	pjoin(root, shm_base, "root4");
	pjoin(db, disk_base, "b4.db");
	pjoin(dst, shm_base, "cp4");
	printf("  inputs : rootfs of 4 folders x 4 files = 20 paths, + config.json (a stage logs 23 entries);\n"
	       "           A: `stagelog stage` then `stagelog release ID`; B: `cp -a` then `rm -rf`\n");
	print_places(db);
	printf("  runs   : %d alternating pairs after 2 warm-up pairs; the store is held by no other process\n", n);
	for (int i = -2; i < n; i++) {
		double t = cli_stage(db, root, pkg, id);

		t += cli_release(db, id);
		if (i >= 0)
			add(&a, t);
		t = cp_a(pkg, dst) + rm_rf(dst);
		if (i >= 0)
			add(&b, t);
	}
	print_series("A stagelog stage + release", &a, 1e3, "ms");
	print_series("B cp -a + rm -rf", &b, 1e3, "ms");

	/* Durable commits, from the store's own counters in a library run. */
	store = store_open(db);
	store_stats(store, &s0);
	st = lib_stage_bundle(store, root, pkg);
	store_stats(store, &s1);
	lib_release(st);
	store_stats(store, &s2);
	sl_store_close(store);
	printf("  syncs  : library run (store_stats): stage %lu commits, %lu durable; release %lu commits, %lu\n"
	       "           durable; (sl_store_open: %lu commit counted durable, the schema check, which writes\n"
	       "           nothing and so syncs nothing)\n",
	       s1.commits - s0.commits, s1.durable_commits - s0.durable_commits, s2.commits - s1.commits,
	       s2.durable_commits - s1.durable_commits, s0.durable_commits);
	if (have_strace()) {
		char owner[24];
		char *sargv[] = { (char *)stagelog, "--db", db,        "stage", "--root", root,
				  "--bundle",       pkg,    "--owner", owner,   NULL };
		char *rargv[] = { (char *)stagelog, "--db", db, "release", id, NULL };
		struct proc_out out;
		struct syncs ss, rs;

		snprintf(owner, sizeof(owner), "%d", (int)getpid());
		strace_syncs(sargv, db, root, &ss, &out);
		if (out.len < STORE_ID_LEN)
			die("stagelog stage printed no id");
		memcpy(id, out.buf, STORE_ID_LEN);
		id[STORE_ID_LEN] = '\0';
		strace_syncs(rargv, db, root, &rs, NULL);
		printf("           CLI run (strace -f -y -e trace=fsync,fdatasync):\n");
		print_syncs("stage", &ss);
		print_syncs("release", &rs);
	} else {
		printf("           strace not found: no count of the CLI's syncs\n");
	}
	rm_tree(pkg);
	rm_tree(root);
	rm_store(db);
	return verdict(4, "stage+release 20 paths (CLI) vs cp+rm", "A/B", median(&a) / median(&b), true, 3.0);
}

/* Makes `count` ready stages of pkg in a child that then dies, so that
 * their owner is gone and their locks free: stale stages. */
static void make_stale(const char *db, const char *root, const char *pkg, int count)
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		struct sl_store *s = store_open(db);

		for (int i = 0; i < count; i++)
			sl_stage_free(lib_stage_bundle(s, root, pkg));
		sl_store_close(s);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("the child making stale stages failed");
}

/* 5: recovery of 1,000 stale 20-path stages against rm -rf of them. */
static int bench5(void)
{
	char pkg[PATH_MAX], root[PATH_MAX], db[PATH_MAX], set[PATH_MAX], dst[PATH_MAX], p[PATH_MAX];
	struct series a = { 0 }, b = { 0 };
	int n = runs(5);

	header(5, "recovery of 1,000 stale 20-path stages vs rm -rf of the same trees");
	make_bundle(pjoin(pkg, shm_base, "pkg5"), 4, 4);
	pjoin(root, shm_base, "root5");
	pjoin(db, disk_base, "b5.db");
	pjoin(set, shm_base, "set5");
	pjoin(dst, shm_base, "rm5");
	/* The rm side: 1,000 trees of the stages' shape in one folder. */
	if (mkdir(set, 0700) < 0)
		die("mkdir %s: %s", set, strerror(errno));
	for (int i = 0; i < 1000; i++) {
		char name[32];

		snprintf(name, sizeof(name), "stage-%04d", i);
		make_bundle(pjoin(p, set, name), 4, 4);
	}
	printf("  inputs : 1,000 ready stages of a 20-path bundle (23 entries each) made by a child that then\n"
	       "           exited; a fresh store per run. A: sl_recover_run (root filter); B: rm -rf of a folder\n"
	       "           holding 1,000 trees of the same shape, made with cp -a (untimed)\n");
	print_places(db);
	printf("  runs   : %d alternating pairs after 1 warm-up pair\n", n);
	for (int i = -1; i < n; i++) {
		struct sl_recover_options o = { .root = root };
		struct sl_recover_report rep;
		struct sl_error err = { 0 };
		struct sl_store *store;
		int64_t t0;
		double t;

		rm_store(db);
		make_stale(db, root, pkg, 1000);
		store = store_open(db);
		t0 = now_ns();
		check(sl_recover_run(store, &o, &rep, &err), &err, "recover");
		t = secs_since(t0);
		if (rep.n_recovered != 1000 || rep.n_failed != 0)
			die("recovery recovered %zu, failed %zu, live %zu of 1000", rep.n_recovered, rep.n_failed,
			    rep.n_live);
		sl_recover_report_finish(&rep);
		sl_store_close(store);
		if (i >= 0)
			add(&a, t);

		cp_a(set, dst);
		t = rm_rf(dst);
		if (i >= 0)
			add(&b, t);
	}
	print_series("A sl_recover_run", &a, 1e3, "ms");
	print_series("B rm -rf", &b, 1e3, "ms");
	printf("  info   : A per stage %.1f us\n", median(&a) / 1000 * 1e6);
	rm_tree(pkg);
	rm_tree(set);
	rm_tree(root);
	rm_store(db);
	return verdict(5, "recover 1,000 stale stages vs rm -rf", "A/B", median(&a) / median(&b), true, 2.0);
}

/* Adds `count` finished (released) stage records with 23 removed entries
 * each straight into the store, in one transaction, as store/ would have
 * written them. */
static void add_finished(const char *db, const char *root, int count)
{
	static const char *const ins_stage =
		"INSERT INTO stages (id, label, root, topdir, state, owner_boot, owner_pid, owner_start, owner_pidns, "
		"dev, ino, created_at, updated_at) VALUES (?1, 'stage', ?2, 'stage-' || ?1, 3, ?3, ?4, ?5, ?6, ?7, "
		"?8, ?9, ?10)";
	static const char *const ins_entry =
		"INSERT INTO entries (stage, seq, path, kind, state) VALUES (?, ?, ?, ?, 1)";
	sqlite3_stmt *st = NULL, *en = NULL;
	char boot[BOOT_ID_LEN + 1];
	int64_t now = epoch_ms();
	sqlite3 *h = NULL;

	if (proc_boot_id(boot) < 0)
		die("cannot read the boot id");
	sl_store_close(store_open(db)); /* the schema */
	if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_exec(h, "PRAGMA journal_mode=DELETE; PRAGMA synchronous=OFF; BEGIN", NULL, NULL, NULL) !=
		    SQLITE_OK ||
	    sqlite3_prepare_v2(h, ins_stage, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(h, ins_entry, -1, &en, NULL) != SQLITE_OK)
		die("sqlite: %s", sqlite3_errmsg(h));
	for (int i = 0; i < count; i++) {
		char id[STORE_ID_LEN + 1], path[256];
		int64_t rowid;
		int seq = 0;

		snprintf(id, sizeof(id), "%016" PRIx64 "%016" PRIx64, (uint64_t)i * 0x9e3779b97f4a7c15u, (uint64_t)i);
		sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_blob(st, 2, root, (int)strlen(root), SQLITE_STATIC);
		sqlite3_bind_text(st, 3, boot, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, 100000 + i);
		sqlite3_bind_int64(st, 5, 1000 + i);
		sqlite3_bind_int64(st, 6, 4026531836);
		sqlite3_bind_int64(st, 7, 42);
		sqlite3_bind_int64(st, 8, 1000 + i);
		sqlite3_bind_int64(st, 9, now - 86400000 + i);
		sqlite3_bind_int64(st, 10, now - 86400000 + i + 50);
		if (sqlite3_step(st) != SQLITE_DONE)
			die("sqlite: %s", sqlite3_errmsg(h));
		sqlite3_reset(st);
		rowid = sqlite3_last_insert_rowid(h);
		/* top, rootfs, 4 folders of 4 files, config.json: 23 entries. */
		for (int d = -2; d < 5; d++) {
			for (int f = (d >= 0 && d < 4) ? -1 : 0; f < ((d >= 0 && d < 4) ? 4 : 1); f++) {
				int kind = 1;

				if (d == -2)
					snprintf(path, sizeof(path), "stage-%s", id);
				else if (d == -1)
					snprintf(path, sizeof(path), "stage-%s/rootfs", id);
				else if (d == 4)
					snprintf(path, sizeof(path), "stage-%s/config.json", id), kind = 2;
				else if (f < 0)
					snprintf(path, sizeof(path), "stage-%s/rootfs/d%04d", id, d);
				else
					snprintf(path, sizeof(path), "stage-%s/rootfs/d%04d/f%04d", id, d, f), kind = 2;
				sqlite3_bind_int64(en, 1, rowid);
				sqlite3_bind_int(en, 2, seq++);
				sqlite3_bind_blob(en, 3, path, (int)strlen(path), SQLITE_TRANSIENT);
				sqlite3_bind_int(en, 4, kind);
				if (sqlite3_step(en) != SQLITE_DONE)
					die("sqlite: %s", sqlite3_errmsg(h));
				sqlite3_reset(en);
			}
		}
	}
	if (sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		die("sqlite: %s", sqlite3_errmsg(h));
	sqlite3_finalize(st);
	sqlite3_finalize(en);
	sqlite3_close(h);
}

/* 6: `list` over 100,000 finished records and 100 in flight. */
static int bench6(void)
{
	char pkg[PATH_MAX], root_l[PATH_MAX], root_s[PATH_MAX], db_l[PATH_MAX], db_s[PATH_MAX];
	struct series a = { 0 }, b = { 0 };
	struct stat sb;
	int64_t t0;
	int n = runs(11);

	header(6, "`stagelog list`: 100,000 finished + 100 in flight vs the 100 only (processes)");
	make_bundle(pjoin(pkg, shm_base, "pkg6"), 4, 4);
	pjoin(root_l, shm_base, "root6l");
	pjoin(root_s, shm_base, "root6s");
	pjoin(db_l, disk_base, "b6-large.db");
	pjoin(db_s, disk_base, "b6-small.db");
	t0 = now_ns();
	add_finished(db_l, root_l, 100000);
	printf("  setup  : 100,000 released records with 23 entries each inserted in %.1f s\n", secs_since(t0));
	make_stale(db_l, root_l, pkg, 100);
	make_stale(db_s, root_s, pkg, 100);
	stat(db_l, &sb);
	printf("  inputs : A: store with 100,000 released stages (2.3 M entries, %.0f MB) + 100 stale ready\n"
	       "           stages of a 20-path bundle made by a dead child; B: a store with the 100 only;\n"
	       "           `stagelog --db DB list`, stdout into a pipe\n",
	       (double)sb.st_size / 1e6);
	print_places(db_l);
	printf("  runs   : %d alternating pairs after 1 warm-up pair\n", n);
	for (int i = -1; i < n; i++) {
		char *la[] = { (char *)stagelog, "--db", db_l, "list", NULL };
		char *lb[] = { (char *)stagelog, "--db", db_s, "list", NULL };
		struct proc_out out;
		double t;

		t = run_ok(la, &out);
		if (i < 0 && out.lines != 101)
			die("list printed %d lines, not 101", out.lines);
		if (i >= 0)
			add(&a, t);
		t = run_ok(lb, &out);
		if (i < 0 && out.lines != 101)
			die("list printed %d lines, not 101", out.lines);
		if (i >= 0)
			add(&b, t);
	}
	print_series("A list, 100,000 finished + 100", &a, 1e3, "ms");
	print_series("B list, 100 only", &b, 1e3, "ms");
	rm_tree(pkg);
	rm_tree(root_l);
	rm_tree(root_s);
	rm_store(db_l);
	rm_store(db_s);
	return verdict(6, "list: 100k finished + 100 vs 100", "A/B", median(&a) / median(&b), true, 1.5);
}

/* One process's share of benchmark 7: `cycles` stage/release cycles. Exits
 * with the number of failed cycles (at most 255). */
static _Noreturn void cycles_child(const char *db, const char *root, const char *pkg, int cycles)
{
	struct sl_oci_options o = { .root = root, .bundle = pkg };
	struct sl_store *s = NULL;
	struct sl_error err = { 0 };
	int errors = 0;

	if (sl_store_open(db, &s, &err) < 0) {
		fprintf(stderr, "bench: child: %s\n", err.msg);
		_exit(255);
	}
	for (int i = 0; i < cycles; i++) {
		struct sl_stage *st = NULL;

		memset(&err, 0, sizeof(err));
		if (sl_oci_stage(s, &o, &st, &err) < 0 || sl_stage_release(st, &err) < 0) {
			if (errors++ == 0)
				fprintf(stderr, "bench: child %d: cycle %d: %s\n", (int)getpid(), i, err.msg);
		}
		sl_stage_free(st);
	}
	sl_store_close(s);
	_exit(errors > 255 ? 255 : errors);
}

static double cpu_children(void)
{
	struct rusage ru;

	getrusage(RUSAGE_CHILDREN, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}

/* What one of run_cycles' processes does: `cycles` cycles, then it exits
 * with the number that failed. */
typedef void cycles_fn(const char *db, const char *root, const char *pkg, int cycles);

/* Runs nproc processes of `cycles` cycles each; returns the seconds from the
 * first fork to the last exit, adds their failures to *errors, and puts the
 * CPUs they kept busy on average (CPU seconds / wall seconds) in *ret_cpus. */
static double run_cycles(cycles_fn *child, const char *db, const char *root, const char *pkg, int nproc, int cycles,
			 int *errors, double *ret_cpus)
{
	double cpu0 = cpu_children(), wall;
	pid_t pids[8];
	int64_t t0;

	fflush(stdout);
	fflush(stderr);
	t0 = now_ns();
	for (int i = 0; i < nproc; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			die("fork: %s", strerror(errno));
		if (pids[i] == 0) {
			child(db, root, pkg, cycles);
			_exit(2); /* a cycles_fn exits, but the type cannot say so */
		}
	}
	for (int i = 0; i < nproc; i++) {
		int status;

		if (waitpid(pids[i], &status, 0) < 0)
			die("waitpid: %s", strerror(errno));
		if (!WIFEXITED(status))
			*errors += cycles;
		else
			*errors += WEXITSTATUS(status);
	}
	wall = secs_since(t0);
	*ret_cpus = (cpu_children() - cpu0) / wall;
	return wall;
}

/*
 * Runs `n` alternating pairs (after 1 warm-up pair) of 4 processes x
 * `cycles` cycles against 1 process x `cycles` on the store db, prints
 * wall time, throughput and CPUs busy of each side, and returns the
 * throughput gain (A/B) and, in *errors, the failed cycles of all runs.
 */
static double four_vs_one(cycles_fn *child, const char *db, const char *root, const char *pkg, int cycles, int n,
			  int *errors)
{
	struct series a = { 0 }, b = { 0 }, ta = { 0 }, tb = { 0 }, ca = { 0 }, cb = { 0 };
	char la[64], lb[64];

	printf("  runs   : %d alternating pairs after 1 warm-up pair\n", n);
	for (int i = -1; i < n; i++) {
		double cpus, t = run_cycles(child, db, root, pkg, 4, cycles, errors, &cpus);

		if (i >= 0) {
			add(&a, t);
			add(&ta, 4 * cycles / t);
			add(&ca, cpus);
		}
		t = run_cycles(child, db, root, pkg, 1, cycles, errors, &cpus);
		if (i >= 0) {
			add(&b, t);
			add(&tb, cycles / t);
			add(&cb, cpus);
		}
	}
	snprintf(la, sizeof(la), "A 4 x %d cycles (wall)", cycles);
	snprintf(lb, sizeof(lb), "B 1 x %d cycles (wall)", cycles);
	print_series(la, &a, 1e3, "ms");
	print_series(lb, &b, 1e3, "ms");
	print_series("A throughput", &ta, 1, "c/s");
	print_series("B throughput", &tb, 1, "c/s");
	print_series("A CPUs busy (CPU s / wall s)", &ca, 1, "");
	print_series("B CPUs busy (CPU s / wall s)", &cb, 1, "");
	printf("  errors : %d failed cycles in all runs\n", *errors);
	return median(&ta) / median(&tb);
}

/* 7: 4 processes x 250 stage/release cycles on one store against one
 * process doing 250. */
static int bench7(void)
{
	char pkg[PATH_MAX], root[PATH_MAX], db[PATH_MAX];
	int errors = 0;
	char figure[96];
	double gain;

	header(7, "4 processes x 250 stage/release cycles vs 1 process x 250 (library, one store)");
	make_bundle(pjoin(pkg, shm_base, "pkg7"), 4, 4);
	pjoin(root, shm_base, "root7");
	pjoin(db, disk_base, "b7.db");
	sl_store_close(store_open(db));
	printf("  inputs : cycle = sl_oci_stage of a 20-path bundle + sl_stage_release + sl_stage_free; each\n"
	       "           process opens the store once; one staging root; %ld CPUs online\n",
	       sysconf(_SC_NPROCESSORS_ONLN));
	print_places(db);
	gain = four_vs_one(cycles_child, db, root, pkg, 250, runs(5), &errors);
	rm_tree(pkg);
	rm_tree(root);
	rm_store(db);
	snprintf(figure, sizeof(figure), "throughput gain A/B = %.2fx, %d errors", gain, errors);
	return record(7, "4 x 250 cycles vs 1 x 250", figure, "zero errors", errors == 0);
}

/* 8: batched logging against one durable commit per entry. */
static int bench8(void)
{
	char pkg[PATH_MAX], src[PATH_MAX], root[PATH_MAX], db[PATH_MAX];
	struct series a = { 0 }, b = { 0 };
	struct store_counts s0, s1, s2;
	struct sl_store *store;
	struct sl_stage *st;
	int n = runs(5);

	header(8, "stage a 10,000-file bundle: batched log vs naive (one durable commit per entry)");
	make_bundle(pjoin(pkg, shm_base, "pkg8"), 100, 100);
	pjoin(src, pkg, "rootfs");
	pjoin(root, shm_base, "root8");
	pjoin(db, disk_base, "b8.db");
	store = store_open(db);
	printf("  inputs : as bench 1 (10,100 paths, library begin + copy + ready); B: STAGE_LOG_NAIVE\n");
	print_places(db);
	printf("  runs   : %d alternating pairs after a warm-up of A only\n", n);
	lib_stage_tree(store, root, src, STAGE_LOG_BATCHED, &st);
	lib_release(st);
	for (int i = 0; i < n; i++) {
		double t;

		store_stats(store, &s0);
		t = lib_stage_tree(store, root, src, STAGE_LOG_BATCHED, &st);
		store_stats(store, &s1);
		lib_release(st);
		add(&a, t);
		t = lib_stage_tree(store, root, src, STAGE_LOG_NAIVE, &st);
		store_stats(store, &s2);
		lib_release(st);
		add(&b, t);
	}
	print_series("A batched (as shipped)", &a, 1e3, "ms");
	print_series("B naive (STAGE_LOG_NAIVE)", &b, 1e3, "ms");
	printf("  store  : durable commits per stage: A %lu, B %lu\n", s1.durable_commits - s0.durable_commits,
	       s2.durable_commits - s1.durable_commits);
	sl_store_close(store);
	rm_tree(pkg);
	rm_tree(root);
	rm_store(db);
	return verdict(8, "stage 10k files: naive vs batched (speed-up)", "B/A", median(&b) / median(&a), false, 10.0);
}

/* Reads "Name:   N kB" from /proc/self/status. */
static long status_kb(const char *name)
{
	char line[256];
	size_t len = strlen(name);
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "re");

	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, name, len) == 0 && line[len] == ':')
			kb = strtol(line + len + 1, NULL, 10);
	if (f)
		fclose(f);
	return kb;
}

/* The child of benchmark 9, run through exec so that its peak RSS is its
 * own: stages src and leaves the stage ready. Prints the id, SQLite's heap
 * high-water mark, and where its resident pages are at the end (anonymous,
 * file, shared memory), so that a miss can be attributed. */
static int rss_child(const char *db, const char *root, const char *src)
{
	struct sl_store *s = store_open(db);
	struct sl_stage *st;

	lib_stage_tree(s, root, src, STAGE_LOG_BATCHED, &st);
	printf("%s %lld %ld %ld %ld %ld\n", sl_stage_id(st), (long long)sqlite3_memory_highwater(0),
	       status_kb("RssAnon"), status_kb("RssFile"), status_kb("RssShmem"), status_kb("VmHWM"));
	sl_stage_free(st);
	sl_store_close(s);
	return 0;
}

/*
 * The middle process of benchmark 9. ru_maxrss is kept across exec and
 * starts from the resident size of the mm that fork copied, so a child
 * forked straight from this (by then large) benchmark process would report
 * the parent's size. This process is freshly exec'd and small: it forks
 * and execs the staging child, and prints the child's ru_maxrss from wait4
 * after the child's own line.
 */
static int rss_launch(char **args)
{
	char *argv[] = { "/proc/self/exe", "--rss-child", args[0], args[1], args[2], NULL };
	struct rusage ru;
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return 2;
	if (pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return 2;
	printf("%ld\n", ru.ru_maxrss);
	return 0;
}

struct rss {
	double maxrss_kb, hwm_kb;
	double sqlite_hw_kb, anon_kb, file_kb, shmem_kb;
	double secs;
};

/* Runs the child of benchmark 9 (through rss_launch) and reads its figures. */
static void rss_run(const char *db, const char *root, const char *src, struct rss *ret)
{
	char *argv[] = { "/proc/self/exe", "--rss-run", (char *)db, (char *)root, (char *)src, NULL };
	char id[SL_ID_SIZE];
	long long hw;
	long anon, file, shmem, hwm, maxrss;
	struct proc_out out;
	int status;
	double t;

	t = run_proc(argv, &out, &status);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
	    sscanf(out.buf, "%32s %lld %ld %ld %ld %ld %ld", id, &hw, &anon, &file, &shmem, &hwm, &maxrss) != 7)
		die("the staging child failed");
	ret->secs = t;
	ret->maxrss_kb = (double)maxrss;
	ret->hwm_kb = (double)hwm;
	ret->sqlite_hw_kb = (double)hw / 1024;
	ret->anon_kb = (double)anon;
	ret->file_kb = (double)file;
	ret->shmem_kb = (double)shmem;
	release_id(db, id);
}

/* 9: peak RSS staging 100,000 files against 1,000. */
static int bench9(void)
{
	char big[PATH_MAX], small[PATH_MAX], root[PATH_MAX], db[PATH_MAX];
	struct series a = { 0 }, b = { 0 }, ta = { 0 }, ha = { 0 }, hb = { 0 }, hwa = { 0 }, hwb = { 0 }, ana = { 0 },
		      anb = { 0 }, fia = { 0 }, fib = { 0 };
	int n = runs(21);

	header(9, "peak RSS staging a 100,000-file tree vs a 1,000-file tree (library, own process)");
	pjoin(big, shm_base, "tree9-100k");
	pjoin(small, shm_base, "tree9-1k");
	make_tree(big, 1000, 100);
	make_tree(small, 10, 100);
	pjoin(root, shm_base, "root9");
	pjoin(db, disk_base, "b9.db");
	sl_store_close(store_open(db));
	printf("  inputs : A: 1,000 folders x 100 files (101,000 paths); B: 10 folders x 100 files (1,010 paths);\n"
	       "           a fresh exec'd process opens the store, begin + copy + ready; ru_maxrss from wait4 in\n"
	       "           a small exec'd launcher (ru_maxrss counts the mm that fork copied)\n");
	print_places(db);
	printf("  runs   : %d alternating pairs after 1 warm-up pair\n", n);
	for (int i = -1; i < n; i++) {
		struct rss ra, rb;

		rss_run(db, root, big, &ra);
		rss_run(db, root, small, &rb);
		if (i < 0)
			continue;
		add(&a, ra.maxrss_kb);
		add(&b, rb.maxrss_kb);
		add(&ha, ra.hwm_kb);
		add(&hb, rb.hwm_kb);
		add(&ta, ra.secs);
		add(&hwa, ra.sqlite_hw_kb);
		add(&hwb, rb.sqlite_hw_kb);
		add(&ana, ra.anon_kb);
		add(&anb, rb.anon_kb);
		add(&fia, ra.file_kb + ra.shmem_kb);
		add(&fib, rb.file_kb + rb.shmem_kb);
	}
	print_series("A peak RSS, 100,000 files", &a, 1, "KiB");
	print_series("B peak RSS, 1,000 files", &b, 1, "KiB");
	print_series("A wall time (process)", &ta, 1e3, "ms");
	printf("  where  : the child's own figures at the end of the stage (VmHWM: peak since its exec)\n");
	print_series("A VmHWM", &ha, 1, "KiB");
	print_series("B VmHWM", &hb, 1, "KiB");
	print_series("A SQLite heap high-water", &hwa, 1, "KiB");
	print_series("B SQLite heap high-water", &hwb, 1, "KiB");
	print_series("A RssAnon", &ana, 1, "KiB");
	print_series("B RssAnon", &anb, 1, "KiB");
	print_series("A RssFile + RssShmem", &fia, 1, "KiB");
	print_series("B RssFile + RssShmem", &fib, 1, "KiB");
	rm_tree(big);
	rm_tree(small);
	rm_tree(root);
	rm_store(db);
	return verdict(9, "peak RSS 100k vs 1k files", "A/B", median(&a) / median(&b), true, 1.5);
}

/* ---- Benchmarks 10-16: the targets of issue 17 ---- */

/* Paths in make_small_bundle()'s bundle: rootfs, 10 folders, 100 files,
 * 10 symlinks, config.json. */
#define SMALL_PATHS 122

/* Makes a bundle shaped like a small busybox image: rootfs/ with 10
 * folders of 10 files and one symlink each (to /bin/busybox, absolute and
 * dangling here, as the applet links of an image are), and config.json. */
static void make_small_bundle(const char *pkg)
{
	char p[PATH_MAX];

	make_bundle(pkg, 10, 10);
	for (int d = 0; d < 10; d++) {
		char name[32];

		snprintf(name, sizeof(name), "rootfs/d%04d/l0000", d);
		if (symlink("/bin/busybox", pjoin(p, pkg, name)) < 0)
			die("symlink %s: %s", p, strerror(errno));
	}
}

/* Fills argv (11 slots) with `stagelog --db DB run --root ROOT --bundle
 * PKG -- /bin/true`. */
static void run_argv(char *argv[11], const char *db, const char *root, const char *pkg)
{
	char *const v[] = { (char *)stagelog, "--db",      (char *)db, "run",       "--root", (char *)root,
			    "--bundle",       (char *)pkg, "--",       "/bin/true", NULL };

	memcpy(argv, v, sizeof(v));
}

/* One `stagelog run ... -- /bin/true` process: stage, run, release. */
static double cli_run(const char *db, const char *root, const char *pkg)
{
	char *argv[11];

	run_argv(argv, db, root, pkg);
	return run_ok(argv, NULL);
}

static double true_proc(void)
{
	char *argv[] = { "/bin/true", NULL };

	return run_ok(argv, NULL);
}

/* `stagelog --db DB recover`; dies unless it recovered `expect` stages. */
static double cli_recover(const char *db, size_t expect)
{
	char *argv[] = { (char *)stagelog, "--db", (char *)db, "recover", NULL };
	size_t examined = 0, recovered = SIZE_MAX;
	struct proc_out out;
	double t = run_ok(argv, &out);
	const char *sum = strstr(out.buf, " examined, ");

	/* The summary is the last line: "N examined, N recovered, ...". */
	while (sum && sum > out.buf && sum[-1] != '\n')
		sum--;
	if (!sum || sscanf(sum, "%zu examined, %zu recovered", &examined, &recovered) != 2 || recovered != expect)
		die("stagelog recover did not recover %zu stage(s): %.200s", expect, out.buf);
	return t;
}

/*
 * The inputs of one of benchmarks 10-16, named after its number: the bundle
 * pkgN and staging root rootN on tmpfs, the store bN.db on disk, and dst
 * (cpN on tmpfs) for the copies of the plain tools.
 */
struct bench_io {
	char pkg[PATH_MAX], root[PATH_MAX], db[PATH_MAX], dst[PATH_MAX];
	int db_writes; /* A cycles in which the store file was written */
};

static void io_init(struct bench_io *io, int num)
{
	char name[32];

	memset(io, 0, sizeof(*io));
	snprintf(name, sizeof(name), "pkg%d", num);
	pjoin(io->pkg, shm_base, name);
	snprintf(name, sizeof(name), "root%d", num);
	pjoin(io->root, shm_base, name);
	snprintf(name, sizeof(name), "b%d.db", num);
	pjoin(io->db, disk_base, name);
	snprintf(name, sizeof(name), "cp%d", num);
	pjoin(io->dst, shm_base, name);
}

static void io_finish(struct bench_io *io)
{
	rm_tree(io->pkg);
	rm_tree(io->root);
	rm_tree(io->dst);
	rm_store(io->db);
}

/* One timed side of a pair: returns its seconds. */
typedef double side_fn(void *userdata);

/* Runs `n` alternating pairs (A, B, A, B, ...) after `warmup` untimed ones,
 * into *a and *b. */
static void pairs(int warmup, int n, side_fn *fa, void *ua, side_fn *fb, void *ub, struct series *a, struct series *b)
{
	for (int i = -warmup; i < n; i++) {
		double t = fa(ua);

		if (i >= 0)
			add(a, t);
		t = fb(ub);
		if (i >= 0)
			add(b, t);
	}
}

static void print_pair(const char *la, const struct series *a, const char *lb, const struct series *b)
{
	print_series(la, a, 1e3, "ms");
	print_series(lb, b, 1e3, "ms");
}

/* A process that must exit 0; userdata is its argv. */
static double side_proc(void *userdata)
{
	return run_ok(userdata, NULL);
}

/* A CLI stage + release cycle, as processes; notes whether the store file
 * was written (with SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE only a WAL checkpoint
 * writes it). */
static double side_cli_cycle(void *userdata)
{
	struct bench_io *io = userdata;
	struct stat s0 = { 0 }, s1 = { 0 };
	bool existed = stat(io->db, &s0) == 0;
	char id[SL_ID_SIZE];
	double t;

	t = cli_stage(io->db, io->root, io->pkg, id);
	t += cli_release(io->db, id);
	/* The first cycle creates the store: that is no checkpoint. */
	if (existed && stat(io->db, &s1) == 0)
		io->db_writes += s0.st_size != s1.st_size || s0.st_mtim.tv_sec != s1.st_mtim.tv_sec ||
				 s0.st_mtim.tv_nsec != s1.st_mtim.tv_nsec;
	return t;
}

/* `cp -a PKG DST` + `rm -rf DST`, as processes. */
static double side_cp_rm(void *userdata)
{
	struct bench_io *io = userdata;

	return cp_a(io->pkg, io->dst) + rm_rf(io->dst);
}

static double side_cli_run(void *userdata)
{
	struct bench_io *io = userdata;

	return cli_run(io->db, io->root, io->pkg);
}

/* `cp -a PKG DST` + `/bin/true` + `rm -rf DST`, as processes. */
static double side_cp_true_rm(void *userdata)
{
	struct bench_io *io = userdata;

	return cp_a(io->pkg, io->dst) + true_proc() + rm_rf(io->dst);
}

/* `stagelog recover` of one stale stage of pkg, made untimed by a child
 * that then exits (as for bench 5). */
static double side_recover_one(void *userdata)
{
	struct bench_io *io = userdata;

	make_stale(io->db, io->root, io->pkg, 1);
	return cli_recover(io->db, 1);
}

/* `rm -rf` of a copy of pkg made untimed with `cp -a`. */
static double side_rm_copy(void *userdata)
{
	struct bench_io *io = userdata;

	cp_a(io->pkg, io->dst);
	return rm_rf(io->dst);
}

static off_t file_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* Prints the store file and its WAL's sizes. */
static void print_store_size(const char *label, const char *db)
{
	char wal[PATH_MAX + 8];

	snprintf(wal, sizeof(wal), "%s-wal", db);
	printf("  store  : %s: %lld KiB, WAL %lld KiB\n", label, (long long)file_size(db) / 1024,
	       (long long)file_size(wal) / 1024);
}

/* 10: 200 consecutive stage + release cycles of a small bundle on one
 * store, each paired with a cp -a + rm -rf cycle. */
static int bench10(void)
{
	struct series a = { 0 }, b = { 0 };
	struct bench_io io;
	int n = runs(200), block = n / 8 > 0 ? n / 8 : 1, r;

	header(10, "200 stage + release cycles of a 122-path bundle, one store: stagelog vs cp -a + rm -rf");
	io_init(&io, 10);
	make_small_bundle(io.pkg);
	printf("  inputs : bundle like a busybox image: rootfs/ with 10 folders x (10 files + 1 symlink), +\n"
	       "           config.json = %d paths; A: `stagelog stage` then `stagelog release ID`; B: `cp -a`\n"
	       "           then `rm -rf`; all processes; one store for every cycle, so that its WAL grows and\n"
	       "           is checkpointed inside the measured cycles\n",
	       SMALL_PATHS);
	print_places(io.db);
	printf("  runs   : %d consecutive alternating pairs (A, B, A, B, ...) after 2 warm-up pairs; the\n"
	       "           figures are over all %d\n",
	       n, n);
	pairs(2, n, side_cli_cycle, &io, side_cp_rm, &io, &a, &b);
	print_pair("A stagelog stage + release", &a, "B cp -a + rm -rf", &b);
	/* The WAL grows with every cycle until a checkpoint lets it start
	 * over, so the cost of a cycle may follow a saw-tooth: show it. */
	printf("  trend  : A median per block of %d cycles, in order (ms):", block);
	for (int i = 0; i < a.n; i += block)
		printf(" %.1f", median_part(&a, i, i + block < a.n ? i + block : a.n) * 1e3);
	printf("\n  info   : the store file was written (a WAL checkpoint) in %d of the 2 + %d A cycles\n",
	       io.db_writes, a.n);
	print_store_size("after the cycles", io.db);
	r = verdict(10, "200 stage+release 122 paths (CLI) vs cp+rm", "A/B", median(&a) / median(&b), true, 1.5);
	io_finish(&io);
	return r;
}

/* 11: one `stagelog run -- /bin/true` against cp -a + true + rm -rf. */
static int bench11(void)
{
	struct series a = { 0 }, b = { 0 };
	struct bench_io io;
	int n = runs(41);

	header(11, "`stagelog run -- /bin/true` of a 122-path bundle vs cp -a + true + rm -rf (processes)");
	io_init(&io, 11);
	make_small_bundle(io.pkg);
	printf("  inputs : the bundle of bench 10 (%d paths); A: stagelog --db DB run --root ROOT --bundle PKG\n"
	       "           -- /bin/true (one process: stage, run, release); B: `cp -a PKG DST`, `/bin/true`,\n"
	       "           `rm -rf DST` (three processes, times added); one store for every run\n",
	       SMALL_PATHS);
	print_places(io.db);
	printf("  runs   : %d alternating pairs after 2 warm-up pairs\n", n);
	pairs(2, n, side_cli_run, &io, side_cp_true_rm, &io, &a, &b);
	print_pair("A stagelog run -- /bin/true", &a, "B cp -a + true + rm -rf", &b);
	io_finish(&io);
	return verdict(11, "run -- /bin/true 122 paths vs cp+true+rm", "A/B", median(&a) / median(&b), true, 1.3);
}

/* 12 and 13: `stagelog recover` of one stale stage of io->pkg against
 * `rm -rf` of a copy of it. One store for every pair, as on a machine that
 * crashes now and then. */
static int recover_vs_rm(int num, struct bench_io *io, const char *shape, const char *what, int n, double bound)
{
	struct series a = { 0 }, b = { 0 };

	printf("  inputs : %s;\n"
	       "           A: one ready stage of it left by a child that exited (untimed), then `stagelog\n"
	       "           --db DB recover`; B: `rm -rf` of a `cp -a` copy of the bundle (untimed copy); one\n"
	       "           store for every pair\n",
	       shape);
	print_places(io->db);
	printf("  runs   : %d alternating pairs after 1 warm-up pair\n", n);
	pairs(1, n, side_recover_one, io, side_rm_copy, io, &a, &b);
	print_pair("A stagelog recover", &a, "B rm -rf", &b);
	io_finish(io);
	return verdict(num, what, "A/B", median(&a) / median(&b), true, bound);
}

/* 12: recovery of one stale 10,100-path stage against rm -rf. */
static int bench12(void)
{
	struct bench_io io;

	header(12, "`stagelog recover` of one stale 10,100-path stage vs rm -rf of the same tree (processes)");
	io_init(&io, 12);
	make_bundle(io.pkg, 100, 100);
	return recover_vs_rm(12, &io, "the bundle of bench 2 (rootfs of 100 folders x 100 files, + config.json)",
			     "recover 1 stale 10k-path stage vs rm -rf", runs(21), 1.15);
}

/* 13: recovery of one stale small stage against rm -rf. */
static int bench13(void)
{
	struct bench_io io;

	header(13, "`stagelog recover` of one stale 122-path stage vs rm -rf of the same tree (processes)");
	io_init(&io, 13);
	make_small_bundle(io.pkg);
	return recover_vs_rm(13, &io, "the bundle of bench 10 (122 paths: 10 folders x (10 files + 1 symlink))",
			     "recover 1 stale 122-path stage vs rm -rf", runs(201), 2.0);
}

/* 14: `stagelog recover` with nothing to do against `stagelog --version`. */
static int bench14(void)
{
	char db[PATH_MAX];
	char *pa[] = { (char *)stagelog, "--db", db, "recover", NULL };
	char *pb[] = { (char *)stagelog, "--version", NULL };
	struct series a = { 0 }, b = { 0 };
	int n = runs(201);

	header(14, "`stagelog recover` on an empty store vs `stagelog --version` (processes)");
	pjoin(db, disk_base, "b14.db");
	sl_store_close(store_open(db));
	printf("  inputs : A: stagelog --db DB recover on a store that holds no stage (made by sl_store_open);\n"
	       "           B: stagelog --version (the process start alone); stdout to /dev/null\n");
	print_places(db);
	printf("  runs   : %d alternating pairs after 2 warm-up pairs\n", n);
	pairs(2, n, side_proc, pa, side_proc, pb, &a, &b);
	print_pair("A stagelog recover (empty store)", &a, "B stagelog --version", &b);
	rm_store(db);
	return verdict(14, "recover on an empty store vs --version", "A/B", median(&a) / median(&b), true, 1.5);
}

/* 15: `list` and an empty `recover` on a store after 1,000 stage/release
 * cycles, against the same on a fresh store. */
static int bench15(void)
{
	char fresh[PATH_MAX];
	struct bench_io io;
	char *la[] = { (char *)stagelog, "--db", io.db, "list", NULL };
	char *lb[] = { (char *)stagelog, "--db", fresh, "list", NULL };
	char *ra[] = { (char *)stagelog, "--db", io.db, "recover", NULL };
	char *rb[] = { (char *)stagelog, "--db", fresh, "recover", NULL };
	struct series a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
	int n = runs(201), cycles = 1000, misses;
	struct proc_out out;
	int64_t t0;

	header(15, "`stagelog list` and an empty `stagelog recover`: after 1,000 cycles vs a fresh store");
	io_init(&io, 15);
	make_small_bundle(io.pkg);
	pjoin(fresh, disk_base, "b15-fresh.db");
	t0 = now_ns();
	for (int i = 0; i < cycles; i++)
		side_cli_cycle(&io);
	printf("  setup  : %d `stagelog stage` + `stagelog release` cycles of the bundle of bench 10 in %.1f s\n",
	       cycles, secs_since(t0));
	print_store_size("used store", io.db);
	sl_store_close(store_open(fresh));
	print_store_size("fresh store", fresh);
	run_ok(la, &out);
	if (out.lines != 1)
		die("list printed %d lines, not the header alone", out.lines);
	printf("  inputs : A: the store the CLI left after the cycles (nothing in flight); B: a fresh store\n"
	       "           made by sl_store_open; `stagelog --db DB list` (stdout to /dev/null), then\n"
	       "           `stagelog --db DB recover` (nothing to recover)\n");
	print_places(io.db);
	printf("  runs   : %d alternating pairs of list, then %d of recover, each after 2 warm-up pairs\n", n, n);
	pairs(2, n, side_proc, la, side_proc, lb, &a, &b);
	pairs(2, n, side_proc, ra, side_proc, rb, &c, &d);
	print_pair("A list, after 1,000 cycles", &a, "B list, fresh store", &b);
	print_pair("A recover, after 1,000 cycles", &c, "B recover, fresh store", &d);
	io_finish(&io);
	rm_store(fresh);
	misses = verdict(15, "list after 1,000 cycles vs fresh store", "list A/B", median(&a) / median(&b), true, 1.1);
	return misses + verdict(15, "recover after 1,000 cycles vs fresh store", "recover A/B", median(&c) / median(&d),
				true, 1.1);
}

/* One process's share of benchmark 16: `cycles` `stagelog run -- /bin/true`
 * processes, one after the other. Exits with the number that failed (at
 * most 255). */
static _Noreturn void run_child(const char *db, const char *root, const char *pkg, int cycles)
{
	char *argv[11];
	int errors = 0;

	run_argv(argv, db, root, pkg);
	for (int i = 0; i < cycles; i++) {
		int status;

		run_proc(argv, NULL, &status);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			if (errors++ == 0)
				fprintf(stderr, "bench: child %d: run %d: status 0x%x\n", (int)getpid(), i, status);
		}
	}
	_exit(errors > 255 ? 255 : errors);
}

/* 16: 4 processes running `stagelog run` cycles on one store against 1. */
static int bench16(void)
{
	struct bench_io io;
	int errors = 0, cycles = 25;
	char figure[96];
	double gain;

	header(16, "4 processes x 25 `stagelog run -- /bin/true` cycles vs 1 process x 25 (one store)");
	io_init(&io, 16);
	make_small_bundle(io.pkg);
	cli_run(io.db, io.root, io.pkg);
	printf("  inputs : cycle = one `stagelog --db DB run --root ROOT --bundle PKG -- /bin/true` process on\n"
	       "           the bundle of bench 10 (%d paths); each of the 4 (or 1) processes starts its %d one\n"
	       "           after the other; one store, one staging root; %ld CPUs online\n",
	       SMALL_PATHS, cycles, sysconf(_SC_NPROCESSORS_ONLN));
	print_places(io.db);
	gain = four_vs_one(run_child, io.db, io.root, io.pkg, cycles, runs(21), &errors);
	io_finish(&io);
	snprintf(figure, sizeof(figure), "throughput gain A/B = %.2fx, %d errors", gain, errors);
	return record(16, "4 x 25 run cycles vs 1 x 25", figure, ">= 1.40x, 0 errors", gain >= 1.4 && errors == 0);
}

/* ---- Main ---- */

static int (*const benches[])(void) = {
	NULL,   bench1,  bench2,  bench3,  bench4,  bench5,  bench6,  bench7,  bench8,
	bench9, bench10, bench11, bench12, bench13, bench14, bench15, bench16,
};
#define N_BENCHES ((int)(sizeof(benches) / sizeof(benches[0])) - 1)

static void make_workspace(void)
{
	snprintf(shm_base, sizeof(shm_base), "/dev/shm/stagelog-bench-XXXXXX");
	if (!mkdtemp(shm_base)) {
		shm_base[0] = '\0';
		die("mkdtemp /dev/shm: %s", strerror(errno));
	}
	snprintf(disk_base, sizeof(disk_base), "/var/tmp/stagelog-bench-XXXXXX");
	if (!mkdtemp(disk_base)) {
		disk_base[0] = '\0';
		die("mkdtemp /var/tmp: %s", strerror(errno));
	}
}

static int usage(void)
{
	fprintf(stderr, "usage: bench 1..%d | all [STAGELOG]\n", N_BENCHES);
	return 64;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	int first, last, misses = 0;
	const char *env;

	if (argc == 5 && strcmp(argv[1], "--rss-child") == 0)
		return rss_child(argv[2], argv[3], argv[4]);
	if (argc == 5 && strcmp(argv[1], "--rss-run") == 0)
		return rss_launch(argv + 2);
	if (argc < 2 || argc > 3)
		return usage();
	if (strcmp(argv[1], "all") == 0) {
		first = 1;
		last = N_BENCHES;
	} else {
		char *end;
		long k = strtol(argv[1], &end, 10);

		if (*end || k < 1 || k > N_BENCHES)
			return usage();
		first = last = (int)k;
	}
	stagelog = argc == 3 ? argv[2] : getenv("STAGELOG");
	if (!stagelog || !*stagelog) {
		fprintf(stderr, "bench: give the stagelog program as argument or in $STAGELOG\n");
		return 64;
	}
	if (access(stagelog, X_OK) < 0) {
		fprintf(stderr, "bench: %s: %s\n", stagelog, strerror(errno));
		return 64;
	}
	env = getenv("STAGELOG_BENCH_RUNS");
	if (env && *env) {
		runs_override = atoi(env);
		if (runs_override < 5 || runs_override > MAX_RUNS) {
			fprintf(stderr, "bench: STAGELOG_BENCH_RUNS must be 5..%d\n", MAX_RUNS);
			return 64;
		}
	}
	/* Line-buffered even into meson's pipe, so a long run shows progress. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	main_pid = getpid();
	atexit(cleanup);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	umask(022);
	make_workspace();
	printf("stagelog benchmarks: %s; %ld CPUs; ", stagelog, sysconf(_SC_NPROCESSORS_ONLN));
	{
		char rel[128] = "?";
		FILE *f = fopen("/proc/sys/kernel/osrelease", "re");

		if (f && fgets(rel, sizeof(rel), f))
			rel[strcspn(rel, "\n")] = '\0';
		if (f)
			fclose(f);
		printf("kernel %s; SQLite %s\n", rel, sqlite3_libversion());
	}
	for (int k = first; k <= last; k++)
		misses += benches[k]();
	if (first != last) {
		printf("\nsummary\n");
		for (int k = 0; k < n_results; k++)
			printf("  %-2d %-44s %-40s target %-18s %s\n", results[k].num, results[k].what,
			       results[k].figure, results[k].target, results[k].pass ? "PASS" : "MISS");
	}
	cleanup();
	return misses ? 1 : 0;
}
