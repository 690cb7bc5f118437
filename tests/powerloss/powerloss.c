/* SPDX-License-Identifier: MIT */
/*
 * powerloss: records stagelog scenarios on a logged disk, then replays every
 * crash state of that disk and checks what a power cut could leave.
 *
 *   powerloss --stagelog PATH --fused PATH [options]
 *
 * Recording: a sparse image made by mkfs is served by pl-fused, attached to a
 * loop device (LOOP_CONFIGURE) and mounted (mount(2)); the store, and in the
 * "disk" root mode the staging root, live on it. The scenario runs the real
 * stagelog binary given with --stagelog, so a mutated build is tested the
 * same way as a good one.
 *
 * Replay: for every flush interval of the scenario's log, the disk at the
 * flush boundary, random subsets of the interval's writes (a volatile cache
 * may have written any of them) and a torn last write (4 KiB units) are
 * rebuilt into a fresh image, attached to a loop device and mounted at the
 * original path in a private mount namespace, where the oracle checks the
 * invariants of docs/design.md ("Power loss").
 *
 * Exit status: 0 no violation, 1 violations, 2 a harness error, 77 skipped
 * (not root, no /dev/fuse, no loop devices, no mkfs): a skip is never a pass.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/loop.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "pl-log.h"

/* The project's cleanup helpers (freep, closep, _cleanup_*, ELEMENTSOF,
 * PRINTF_FMT); the harness links none of stagelog's code. */
#include "macro.h"

enum { FS_EXT4, FS_XFS, FS_N };
static const char *const fs_names[FS_N] = { "ext4", "xfs" };
/* XFS refuses file systems under 300 MB; the images stay sparse. */
static const uint64_t fs_sizes[FS_N] = { 64ull << 20, 300ull << 20 };

/* Where the staging root lives: on the store's disk, on a tmpfs (the
 * default: a power cut empties it), or on a second disk that loses its
 * unflushed writes at the same instant as the store's ("split": no journal
 * orders the root's changes against the store's). */
enum { ROOT_DISK, ROOT_TMPFS, ROOT_SPLIT, ROOT_REBOOT, ROOT_N };
static const char *const root_names[ROOT_N] = { "disk", "tmpfs", "split", "reboot" };

/* How the oracle sees a crash state. The first three serve the disk, tmpfs
 * and split roots: as recorded, as another boot, on another loop device.
 * A tmpfs root is emptied only by a reboot, so with that root "same" does
 * not run and "otherloop" runs as another boot too (a stage begun on a
 * volatile root whose root is missing in the same boot is failed, by
 * design: docs/design.md, "Identity").
 *
 * The "reboot" root (the production layout: the staging root a 0700
 * directory on a tmpfs, the store on disk) has its own four: another boot
 * with the root recreated as a fresh tmpfs mounted at the root path, as an
 * empty 0700 directory on a fresh tmpfs (tmpfiles.d, RuntimeDirectory=),
 * or not recreated at all; and the negative control: the same boot with the
 * root recreated, where a stage in flight must end failed (recover exits
 * 1), which shows that the oracle can tell the boot rule from its absence. */
enum { VAR_SAME, VAR_BOOT, VAR_LOOP, VAR_RB_TMPFS, VAR_RB_DIR, VAR_RB_ABSENT, VAR_RB_CONTROL, VAR_N };
static const char *const var_names[VAR_N] = {
	"same", "newboot", "otherloop", "reboot-newtmpfs", "reboot-tmpfiles", "reboot-absent", "control-sameboot"
};

static bool var_applies(int rootk, int var)
{
	if (rootk == ROOT_REBOOT)
		return var >= VAR_RB_TMPFS;
	if (rootk == ROOT_TMPFS && var == VAR_SAME)
		return false;
	return var < VAR_RB_TMPFS;
}

/* Whether the oracle runs as another boot. */
static bool var_new_boot(int rootk, int var)
{
	return var == VAR_BOOT || (rootk == ROOT_TMPFS && var == VAR_LOOP) ||
	       (var >= VAR_RB_TMPFS && var <= VAR_RB_ABSENT);
}

#define N_SCENARIOS 5
static const char *const sc_names[N_SCENARIOS + 1] = {
	"", "stage+release", "run", "stage+publish", "killed-owner+recover", "concurrent+recover"
};

static struct opts {
	const char *stagelog;
	const char *fused;
	const char *work_parent;
	unsigned fs_mask, sc_mask, root_mask, var_mask;
	unsigned subsets;
	bool boundaries_only;
	uint64_t seed;
	bool verbose;
	bool keep;
} o = {
	.work_parent = "/dev/shm",
	.fs_mask = 3,
	.sc_mask = 0x3e,
	.root_mask = (1u << ROOT_N) - 1,
	.var_mask = (1u << VAR_N) - 1,
	.subsets = 5,
	.seed = 11,
};

/* Paths of one harness run, all on tmpfs except what is mounted on disk. */
static struct ctx {
	char work[PATH_MAX];
	char bundle[PATH_MAX];                 /* the packaged bundle, on tmpfs */
	char runtime[PATH_MAX];                /* scenario 2's runtime script */
	char fusemnt[PATH_MAX];                /* pl-fused's mount point */
	char served[PL_MAX_DEV][PATH_MAX];     /* the images pl-fused serves */
	char logpath[PATH_MAX];                /* its write log */
	char base[FS_N][PL_MAX_DEV][PATH_MAX]; /* mkfs output, sparse */
	char prefix[PL_MAX_DEV][PATH_MAX];     /* each disk with what is durable so far */
	char crash[PL_MAX_DEV][PATH_MAX];      /* the crash images being checked */
	char mnt[PL_MAX_DEV][PATH_MAX];        /* where the disks are mounted: the original paths */
	char tmproot[PATH_MAX];                /* a tmpfs staging root's parent */
	char canary[64];
	int loop_rec[PL_MAX_DEV];   /* the loop devices that recorded */
	int loop_other[PL_MAX_DEV]; /* others, for VAR_LOOP */
} c;

/* One recorded scenario. */
struct run {
	int fs, rootk, sc;
	unsigned ndev; /* 2 when the root has its own disk */
	char root[PATH_MAX];
	char db[PATH_MAX];
	char dest[PATH_MAX]; /* scenario 3's publish destination */
	char *dest_config;   /* the published config.json, as publish left it */
	size_t dest_config_len;
	uint64_t marker; /* log offset where the scenario began */
};

static struct totals {
	unsigned long states, oracle_runs, violations, errors;
	unsigned long sc_states[N_SCENARIOS + 1], sc_viol[N_SCENARIOS + 1];
	unsigned long control_runs, control_inflight; /* the negative control */
	unsigned fs_used;
} t;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static PRINTF_FMT(1, 2) int err(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("powerloss: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -1;
}

static PRINTF_FMT(3, 4) void pathf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size) {
		err("path too long");
		exit(2);
	}
}

/* splitmix64: a small PRNG whose whole state is the printed seed. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---- processes ---- */

static char *const *child_env(void)
{
	static char canary_env[96];
	static char *env[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", canary_env, "LC_ALL=C", NULL };

	snprintf(canary_env, sizeof(canary_env), "PL_CANARY=%s", c.canary);
	return env;
}

struct proc {
	pid_t pid;
	int out_fd;
	char err_path[PATH_MAX];
};

/* Starts argv with stdout on a pipe and stderr in a file, with a clean
 * environment and a 60 s alarm (kept across execve) so that a stuck command
 * cannot hang the matrix. */
static int proc_start(struct proc *p, char *const argv[])
{
	static unsigned long n;
	int fds[2];

	pathf(p->err_path, sizeof(p->err_path), "%s/stderr-%ld-%lu", c.work, (long)getpid(), n++);
	if (pipe2(fds, O_CLOEXEC) < 0)
		return negerrno();
	fflush(NULL);
	p->pid = fork();
	if (p->pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return negerrno();
	}
	if (p->pid == 0) {
		int e = open(p->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		dup2(fds[1], 1);
		if (e >= 0)
			dup2(e, 2);
		alarm(60);
		execve(argv[0], argv, child_env());
		_exit(127);
	}
	close(fds[1]);
	p->out_fd = fds[0];
	return 0;
}

/* Collects the output (NUL-terminated, cut at outsize) and the status:
 * the exit code, or 128+N after signal N. */
static int proc_finish(struct proc *p, char *out, size_t outsize, char *errtext, size_t errsize)
{
	size_t used = 0;
	char sink[4096];
	int status;

	for (;;) {
		ssize_t n = used + 1 < outsize ? read(p->out_fd, out + used, outsize - 1 - used)
					       : read(p->out_fd, sink, sizeof(sink));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (used + 1 < outsize)
			used += (size_t)n;
	}
	if (outsize)
		out[used] = '\0';
	close(p->out_fd);
	while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
		;
	if (errtext && errsize) {
		_cleanup_close_ int fd = open(p->err_path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, errtext, errsize - 1) : 0;

		errtext[n > 0 ? n : 0] = '\0';
		/* One line is enough for a report. */
		errtext[strcspn(errtext, "\n")] = '\0';
	}
	unlink(p->err_path);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int proc_run(char *const argv[], char *out, size_t outsize, char *errtext, size_t errsize)
{
	struct proc p;
	int r = proc_start(&p, argv);

	if (r < 0)
		return 255;
	return proc_finish(&p, out, outsize, errtext, errsize);
}

/* A process that only sleeps: the owner of a stage, killed at will. */
static pid_t sleeper(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		for (;;)
			pause();
	}
	return pid;
}

static void kill_wait(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

/* Drops every whitespace byte, so that JSON from cJSON's formatted printer
 * can be matched with strstr. Paths in the harness hold no whitespace. */
static void squeeze(char *s)
{
	char *d = s;

	for (; *s; s++)
		if (!isspace((unsigned char)*s))
			*d++ = *s;
	*d = '\0';
}

/* ---- files ---- */

static int write_file(const char *path, const char *data, size_t len, mode_t mode)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	if (fd < 0)
		return negerrno();
	return pl_pwrite_all(fd, data, len, 0);
}

/* Reads a whole file; *ret is malloc'ed and NUL-terminated. */
static int read_file(int dirfd, const char *path, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_free_ char *buf = NULL;
	size_t used = 0, cap = 0;

	if (fd < 0)
		return negerrno();
	for (;;) {
		if (used + 65536 + 1 > cap) {
			char *nb;

			cap = cap ? 2 * cap : 65536 + 1;
			nb = realloc(buf, cap);
			if (!nb)
				return -ENOMEM;
			buf = nb;
		}
		ssize_t n = read(fd, buf + used, cap - used - 1);
		if (n < 0)
			return negerrno();
		if (n == 0)
			break;
		used += (size_t)n;
	}
	if (!buf && !(buf = malloc(1)))
		return -ENOMEM;
	buf[used] = '\0';
	*ret = buf;
	buf = NULL;
	*ret_len = used;
	return 0;
}

/* rm -rf of a tmpfs folder of ours, never crossing a mount. */
static void remove_tree(const char *path)
{
	char *argv[] = { "/bin/rm", "-rf", "--one-file-system", (char *)path, NULL };

	(void)proc_run(argv, NULL, 0, NULL, 0);
}

static int sparse_copy_path(const char *src, const char *dst)
{
	_cleanup_close_ int s = open(src, O_RDONLY | O_CLOEXEC);
	_cleanup_close_ int d = -1;

	if (s < 0)
		return negerrno();
	(void)unlink(dst);
	d = open(dst, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (d < 0)
		return negerrno();
	return pl_sparse_copy(s, d);
}

/* ---- loop devices and mounts ---- */

static int loop_attach(int index, const char *image)
{
	char dev[64];
	_cleanup_close_ int ctl = -1, fd = -1, lfd = -1;
	struct loop_config cfg;

	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return negerrno();
	if (index < 0) {
		index = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (index < 0)
			return negerrno();
	} else {
		/* Creates /dev/loopN if it does not exist yet; EEXIST is fine. */
		(void)ioctl(ctl, LOOP_CTL_ADD, index);
	}
	snprintf(dev, sizeof(dev), "/dev/loop%d", index);
	fd = open(image, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	lfd = open(dev, O_RDWR | O_CLOEXEC);
	if (lfd < 0)
		return negerrno();
	memset(&cfg, 0, sizeof(cfg));
	cfg.fd = (uint32_t)fd;
	/* Buffered loop I/O: with pl-fused's direct_io the image is not
	 * cached twice, and every bio reaches the daemon when issued. */
	cfg.info.lo_flags = 0;
	if (ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0) {
		/* Kernels before 5.8: the two-step way. */
		if (errno != EINVAL && errno != ENOTTY)
			return negerrno();
		if (ioctl(lfd, LOOP_SET_FD, fd) < 0)
			return negerrno();
	}
	return index;
}

static int loop_detach(int index)
{
	char dev[64];
	_cleanup_close_ int lfd = -1;

	snprintf(dev, sizeof(dev), "/dev/loop%d", index);
	lfd = open(dev, O_RDWR | O_CLOEXEC);
	if (lfd < 0)
		return negerrno();
	/* A detach right after an umount can see the device still busy for
	 * an instant. */
	for (int i = 0; i < 200; i++) {
		if (ioctl(lfd, LOOP_CLR_FD, 0) == 0 || errno == ENXIO)
			return 0;
		if (errno != EBUSY)
			return negerrno();
		usleep(5000);
	}
	return -EBUSY;
}

static int do_mount(int index, int fs, const char *where)
{
	char dev[64];

	snprintf(dev, sizeof(dev), "/dev/loop%d", index);
	if (mount(dev, where, fs_names[fs], MS_NOSUID | MS_NODEV, NULL) < 0)
		return negerrno();
	return 0;
}

static int do_syncfs(const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || syncfs(fd) < 0)
		return negerrno();
	return 0;
}

/* ---- setup ---- */

static const char *const bundle_dirs[] = { "rootfs/etc", "rootfs/bin", "rootfs/usr", "rootfs/usr/lib", "rootfs/var" };

/* The packaged bundle: 20 paths in rootfs/ (5 directories, 14 files of
 * 1 byte to 40 KiB so that some span several blocks, one symlink), and a
 * config.json whose process.env stagelog replaces with the canary. */
static int make_bundle(void)
{
	char p[PATH_MAX];
	static const char config[] =
		"{\"ociVersion\":\"1.0.2\",\"process\":{\"args\":[\"/bin/app\"],\"env\":[\"PATH=/bin\"]},"
		"\"root\":{\"path\":\"rootfs\"},\"linux\":{\"uidMappings\":[{\"containerID\":0,\"hostID\":100000,"
		"\"size\":1}]}}\n";
	int r;

	pathf(p, sizeof(p), "%s/rootfs", c.bundle);
	if (mkdir(c.bundle, 0755) < 0 || mkdir(p, 0755) < 0)
		return negerrno();
	for (size_t i = 0; i < ELEMENTSOF(bundle_dirs); i++) {
		pathf(p, sizeof(p), "%s/%s", c.bundle, bundle_dirs[i]);
		if (mkdir(p, 0755) < 0)
			return negerrno();
	}
	for (int i = 0; i < 14; i++) {
		size_t len = i == 0 ? 1 : (size_t)(i * 3001) % 40960 + 1;
		_cleanup_free_ char *buf = malloc(len);

		if (!buf)
			return -ENOMEM;
		for (size_t k = 0; k < len; k++)
			buf[k] = (char)('a' + (k * 7 + (size_t)i) % 26);
		pathf(p, sizeof(p), "%s/%s/file%02d", c.bundle, bundle_dirs[i % ELEMENTSOF(bundle_dirs)], i);
		r = write_file(p, buf, len, 0644);
		if (r < 0)
			return r;
	}
	pathf(p, sizeof(p), "%s/rootfs/bin/sh", c.bundle);
	if (symlink("../usr/lib/file03", p) < 0)
		return negerrno();
	pathf(p, sizeof(p), "%s/config.json", c.bundle);
	return write_file(p, config, sizeof(config) - 1, 0644);
}

/* Scenario 2's runtime writes into the bundle it was given (and copies the
 * secret-bearing config.json, as a careless runtime might), then forces the
 * file system's writeback so that its files reach the disk. */
static int make_runtime(void)
{
	static const char script[] =
		"#!/bin/sh\n"
		"set -e\n"
		"b=$1\n"
		"mkdir \"$b/rootfs/run-out\"\n"
		"for i in 1 2 3 4 5; do\n"
		"\techo \"runtime output $i\" >\"$b/rootfs/run-out/f$i\"\n"
		"done\n"
		"cat \"$b/config.json\" >\"$b/rootfs/run-out/config-copy\"\n"
		"sync -f \"$b\"\n";

	return write_file(c.runtime, script, sizeof(script) - 1, 0755);
}

static int make_base(int fs, int d)
{
	char raw[PATH_MAX];
	_cleanup_close_ int fd = -1;
	char size[32];
	int st;

	pathf(raw, sizeof(raw), "%s/mkfs-%s.img", c.work, fs_names[fs]);
	fd = open(raw, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)fs_sizes[fs]) < 0)
		return err("%s: %s", raw, strerror(errno));
	closep(&fd);
	fd = -1;
	snprintf(size, sizeof(size), "%" PRIu64, fs_sizes[fs]);
	if (fs == FS_EXT4) {
		/* No lazy init: ext4lazyinit would write inode tables in the
		 * background, in the middle of a scenario. */
		char *argv[] = { "/sbin/mkfs.ext4",
				 "-q",
				 "-F",
				 "-E",
				 "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
				 raw,
				 NULL };
		st = proc_run(argv, NULL, 0, NULL, 0);
	} else {
		char *argv[] = { "/sbin/mkfs.xfs", "-q", "-f", "-K", raw, NULL };
		st = proc_run(argv, NULL, 0, NULL, 0);
	}
	if (st != 0)
		return err("mkfs.%s failed (status %d)", fs_names[fs], st);
	/* mkfs zeroes the XFS log: 65 MB of zeros that the sparse copy
	 * drops. */
	if (sparse_copy_path(raw, c.base[fs][d]) < 0)
		return err("%s: cannot copy", c.base[fs][d]);
	unlink(raw);
	return 0;
}

/* ---- recording ---- */

static pid_t fused_pid = -1;

static int fused_start(unsigned ndev)
{
	struct stat a, b;

	if (mkdir(c.fusemnt, 0700) < 0 && errno != EEXIST)
		return negerrno();
	fflush(NULL);
	fused_pid = fork();
	if (fused_pid < 0)
		return negerrno();
	if (fused_pid == 0) {
		if (ndev == 1)
			execl(o.fused, o.fused, c.logpath, c.fusemnt, c.served[0], (char *)NULL);
		else
			execl(o.fused, o.fused, c.logpath, c.fusemnt, c.served[0], c.served[1], (char *)NULL);
		_exit(127);
	}
	if (stat(c.work, &a) < 0)
		return negerrno();
	for (int i = 0; i < 500; i++) {
		char disk[PATH_MAX];

		pathf(disk, sizeof(disk), "%s/disk0", c.fusemnt);
		if (stat(disk, &b) == 0 && b.st_dev != a.st_dev)
			return 0;
		if (waitpid(fused_pid, NULL, WNOHANG) == fused_pid) {
			fused_pid = -1;
			return -ECHILD;
		}
		usleep(10000);
	}
	return -ETIMEDOUT;
}

static void fused_stop(void)
{
	if (fused_pid <= 0)
		return;
	/* Unmounting ends fuse_main; a daemon that was killed instead would
	 * leave the file system read-only and writers stuck. */
	if (umount2(c.fusemnt, 0) < 0)
		(void)umount2(c.fusemnt, MNT_DETACH);
	for (int i = 0; i < 500; i++) {
		if (waitpid(fused_pid, NULL, WNOHANG) == fused_pid) {
			fused_pid = -1;
			return;
		}
		usleep(10000);
	}
	kill_wait(fused_pid);
	fused_pid = -1;
}

#define SL(...)                                                               \
	(char *[])                                                            \
	{                                                                     \
		(char *)o.stagelog, "--db", (char *)rn->db, __VA_ARGS__, NULL \
	}

static char rec_err[1600];

/* Runs one recording step; a failing step ends the recording: a build that
 * cannot even run the scenario is reported, never skipped. */
static int rec_cmd(const struct run *rn, char *const argv[], char *out, size_t outsize, int expect)
{
	char errtext[400];
	int st = proc_run(argv, out, outsize, errtext, sizeof(errtext));

	(void)rn;
	if (st != expect) {
		snprintf(rec_err, sizeof(rec_err), "%s %s exited %d: %s", argv[3], argv[4] ? argv[4] : "", st, errtext);
		return -1;
	}
	return 0;
}

/* stage's output is "ID<TAB>PATH". */
static int parse_id(const char *out, char id[64])
{
	size_t n = strcspn(out, "\t\n");

	if (n == 0 || n >= 64)
		return -EBADMSG;
	memcpy(id, out, n);
	id[n] = '\0';
	return 0;
}

static int stage_cmd(const struct run *rn, pid_t owner, char id[64])
{
	char pid[32], out[1024];

	snprintf(pid, sizeof(pid), "%ld", (long)owner);
	if (rec_cmd(rn,
		    SL("stage", "--root", (char *)rn->root, "--bundle", c.bundle, "--env", "PL_CANARY", "--owner", pid),
		    out, sizeof(out), 0) < 0)
		return -1;
	return parse_id(out, id);
}

/* Forces writeback of every simulated disk (syncfs), so that states with
 * the secrets on the disk are reached. */
static int sync_all(const struct run *rn)
{
	for (unsigned d = 0; d < rn->ndev; d++)
		if (do_syncfs(c.mnt[d]) < 0)
			return -1;
	return 0;
}

static int scenario(struct run *rn)
{
	char id[64], id2[64], id3[64], out[4096];
	pid_t s1 = -1, s2 = -1, s3 = -1;
	int r = -1;

	switch (rn->sc) {
	case 1:
		/* A stage whose secrets reach the disk, then its release. */
		s1 = sleeper();
		if (stage_cmd(rn, s1, id) < 0 || sync_all(rn) < 0)
			break;
		if (rec_cmd(rn, SL("release", id), out, sizeof(out), 0) < 0)
			break;
		r = 0;
		break;
	case 2: {
		char *argv[] = { (char *)o.stagelog, "--db",     rn->db,  "run",       "--root", rn->root,
				 "--bundle",         c.bundle,   "--env", "PL_CANARY", "--",     "/bin/sh",
				 c.runtime,          "{bundle}", NULL };
		if (rec_cmd(rn, argv, out, sizeof(out), 0) < 0)
			break;
		r = 0;
		break;
	}
	case 3: {
		/* No writeback between stage and publish: publish itself must
		 * make the tree durable before it moves it. */
		_cleanup_close_ int dfd = -1;

		s1 = sleeper();
		if (stage_cmd(rn, s1, id) < 0)
			break;
		if (rec_cmd(rn, SL("publish", id, rn->dest), out, sizeof(out), 0) < 0)
			break;
		dfd = open(rn->dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || read_file(dfd, "config.json", &rn->dest_config, &rn->dest_config_len) < 0) {
			snprintf(rec_err, sizeof(rec_err), "published config.json unreadable");
			break;
		}
		r = 0;
		break;
	}
	case 4:
		/* The owner dies with its stage ready and on the disk. */
		s1 = sleeper();
		if (stage_cmd(rn, s1, id) < 0 || sync_all(rn) < 0)
			break;
		kill_wait(s1);
		s1 = -1;
		if (rec_cmd(rn, SL("recover", "--root", rn->root), out, sizeof(out), 0) < 0)
			break;
		r = 0;
		break;
	case 5: {
		/* A dead owner's stage, then two stages and a recover at
		 * once, then the two released. */
		char p2[32], p3[32], o2[1024], o3[1024], e[3][400];
		struct proc pr[3];
		int st[3];

		s1 = sleeper();
		s2 = sleeper();
		s3 = sleeper();
		if (stage_cmd(rn, s1, id) < 0 || sync_all(rn) < 0)
			break;
		kill_wait(s1);
		s1 = -1;
		snprintf(p2, sizeof(p2), "%ld", (long)s2);
		snprintf(p3, sizeof(p3), "%ld", (long)s3);
		if (proc_start(&pr[0], SL("stage", "--root", rn->root, "--bundle", c.bundle, "--env", "PL_CANARY",
					  "--owner", p2)) < 0 ||
		    proc_start(&pr[1], SL("stage", "--root", rn->root, "--bundle", c.bundle, "--env", "PL_CANARY",
					  "--owner", p3)) < 0 ||
		    proc_start(&pr[2], SL("recover", "--root", rn->root)) < 0) {
			snprintf(rec_err, sizeof(rec_err), "cannot start processes");
			break;
		}
		st[0] = proc_finish(&pr[0], o2, sizeof(o2), e[0], sizeof(e[0]));
		st[1] = proc_finish(&pr[1], o3, sizeof(o3), e[1], sizeof(e[1]));
		st[2] = proc_finish(&pr[2], out, sizeof(out), e[2], sizeof(e[2]));
		if (st[0] || st[1] || st[2]) {
			snprintf(rec_err, sizeof(rec_err), "concurrent stage/stage/recover exited %d/%d/%d: %s%s%s",
				 st[0], st[1], st[2], e[0], e[1], e[2]);
			break;
		}
		if (parse_id(o2, id2) < 0 || parse_id(o3, id3) < 0 || sync_all(rn) < 0)
			break;
		if (rec_cmd(rn, SL("release", id2), out, sizeof(out), 0) < 0 ||
		    rec_cmd(rn, SL("release", id3), out, sizeof(out), 0) < 0)
			break;
		r = 0;
		break;
	}
	default:
		break;
	}
	/* Every owner is dead before replay: in the "same boot" variant the
	 * oracle may then demand that nothing stays in flight. */
	kill_wait(s1);
	kill_wait(s2);
	kill_wait(s3);
	return r;
}

static int record(struct run *rn)
{
	struct stat sb;
	char out[4096];
	unsigned attached = 0, mounted = 0;
	int r = 0;

	rec_err[0] = '\0';
	for (unsigned d = 0; d < rn->ndev; d++)
		if (sparse_copy_path(c.base[rn->fs][d], c.served[d]) < 0)
			return err("cannot copy the base image");
	r = fused_start(rn->ndev);
	if (r < 0)
		return err("pl-fused did not start: %s", strerror(-r));
	for (; r == 0 && attached < rn->ndev; attached++) {
		char disk[PATH_MAX];

		pathf(disk, sizeof(disk), "%s/disk%u", c.fusemnt, attached);
		r = loop_attach(-1, disk);
		if (r < 0) {
			err("cannot attach a loop device: %s", strerror(-r));
			break;
		}
		c.loop_rec[attached] = r;
		r = 0;
	}
	for (; r == 0 && mounted < rn->ndev; mounted++) {
		r = do_mount(c.loop_rec[mounted], rn->fs, c.mnt[mounted]);
		if (r < 0) {
			err("cannot mount %s: %s", fs_names[rn->fs], strerror(-r));
			break;
		}
	}
	if (r < 0) {
		while (mounted > 0)
			umount2(c.mnt[--mounted], 0);
		while (attached > 0)
			loop_detach(c.loop_rec[--attached]);
		fused_stop();
		return -1;
	}

	/* The world before the scenario: a store (recover creates it), the
	 * destination folder, a staging root that exists only when it is on
	 * the disk. */
	{
		char p[PATH_MAX];

		pathf(p, sizeof(p), "%s/store", c.mnt[0]);
		mkdir(p, 0700);
		pathf(p, sizeof(p), "%s/pub", c.mnt[rn->ndev - 1]);
		mkdir(p, 0700);
	}
	if (rn->rootk == ROOT_TMPFS || rn->rootk == ROOT_REBOOT) {
		char p[PATH_MAX];

		remove_tree(c.tmproot);
		mkdir(c.tmproot, 0755);
		/* The reboot layout: a tmpfs of its own (/run), on which the
		 * staging root is an empty 0700 directory made before the
		 * first stage (tmpfiles.d, RuntimeDirectory=); publish stays on
		 * that tmpfs. Nothing of it is in the recorded image. */
		if (rn->rootk == ROOT_REBOOT &&
		    (r = mount("tmpfs", c.tmproot, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")) < 0)
			err("cannot mount a tmpfs on %s: %s", c.tmproot, strerror(errno));
		pathf(p, sizeof(p), "%s/pub", c.tmproot);
		mkdir(p, 0700);
		if (rn->rootk == ROOT_REBOOT && mkdir(rn->root, 0700) < 0 && r == 0)
			r = err("cannot make %s: %s", rn->root, strerror(errno));
	}
	if (r < 0)
		snprintf(rec_err, sizeof(rec_err), "cannot set up the reboot layout's tmpfs");
	else
		r = rec_cmd(rn, SL("recover", "--root", rn->root), out, sizeof(out), 0);
	for (unsigned d = 0; r == 0 && d < rn->ndev; d++)
		r = do_syncfs(c.mnt[d]);
	if (r == 0 && stat(c.logpath, &sb) == 0)
		rn->marker = (uint64_t)sb.st_size;
	if (r == 0)
		r = scenario(rn);
	/* What the last step left in caches reaches the disk too: the states
	 * after the scenario are checked as well. */
	for (unsigned d = 0; d < rn->ndev; d++) {
		if (do_syncfs(c.mnt[d]) < 0 && r == 0)
			r = -1;
		if (umount2(c.mnt[d], 0) < 0)
			(void)umount2(c.mnt[d], MNT_DETACH);
		loop_detach(c.loop_rec[d]);
	}
	fused_stop();
	if (rn->rootk == ROOT_REBOOT && umount2(c.tmproot, 0) < 0)
		(void)umount2(c.tmproot, MNT_DETACH);
	if (r < 0)
		return -1;
	return 0;
}

/* ---- the oracle ---- */

struct verdict {
	char first[64];
	char text[1024];
	int n;
};

static PRINTF_FMT(3, 4) void violate(struct verdict *v, const char *inv, const char *fmt, ...)
{
	size_t used = strlen(v->text);
	va_list ap;

	if (v->n++ == 0)
		snprintf(v->first, sizeof(v->first), "%s", inv);
	if (used + 8 >= sizeof(v->text))
		return;
	snprintf(v->text + used, sizeof(v->text) - used, "%s[%s] ", used ? "; " : "", inv);
	used = strlen(v->text);
	va_start(ap, fmt);
	vsnprintf(v->text + used, sizeof(v->text) - used, fmt, ap);
	va_end(ap);
}

static bool has_canary(const char *buf, size_t len)
{
	return memmem(buf, len, c.canary, strlen(c.canary)) != NULL;
}

/* Finds the canary in any regular file under dirfd, outside skip (a
 * published tree, which holds it by right). Never follows a symlink or
 * leaves the file system. */
static void scan_canary(int dirfd, const char *rel, const char *skip, dev_t dev, struct verdict *v)
{
	DIR *d;
	struct dirent *de;
	int fd = dup(dirfd);

	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		char sub[PATH_MAX];
		struct stat sb;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
		if (skip && !strcmp(sub, skip))
			continue;
		if (fstatat(dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 || sb.st_dev != dev)
			continue;
		if (S_ISDIR(sb.st_mode)) {
			_cleanup_close_ int sfd =
				openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sfd >= 0)
				scan_canary(sfd, sub, skip, dev, v);
		} else if (S_ISREG(sb.st_mode)) {
			_cleanup_free_ char *buf = NULL;
			size_t len;

			if (read_file(dirfd, de->d_name, &buf, &len) == 0 && has_canary(buf, len))
				violate(v, "canary-leak", "the secret is in %s", sub);
		}
	}
	closedir(d);
}

/* Compares a published tree with the bundle it came from: every directory,
 * every file with its full content, the symlink, and config.json as publish
 * left it. Returns the first difference, or NULL when whole. */
static const char *compare_tree(int src, int dst, const char *rel, char *why, size_t whysize)
{
	DIR *d;
	struct dirent *de;
	int fd = dup(src);
	const char *res = NULL;

	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		snprintf(why, whysize, "%s: cannot read the bundle", rel);
		return why;
	}
	while (!res && (de = readdir(d))) {
		char sub[PATH_MAX];
		struct stat a, b;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", rel, de->d_name);
		if (fstatat(src, de->d_name, &a, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (fstatat(dst, de->d_name, &b, AT_SYMLINK_NOFOLLOW) < 0) {
			snprintf(why, whysize, "%s missing", sub);
			res = why;
		} else if ((a.st_mode & S_IFMT) != (b.st_mode & S_IFMT)) {
			snprintf(why, whysize, "%s has another type", sub);
			res = why;
		} else if (S_ISDIR(a.st_mode)) {
			_cleanup_close_ int s2 = openat(src, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			_cleanup_close_ int d2 =
				openat(dst, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (s2 < 0 || d2 < 0) {
				snprintf(why, whysize, "%s unreadable", sub);
				res = why;
			} else {
				res = compare_tree(s2, d2, sub, why, whysize);
			}
		} else if (S_ISREG(a.st_mode)) {
			_cleanup_free_ char *x = NULL, *y = NULL;
			size_t xl, yl;

			if (read_file(src, de->d_name, &x, &xl) < 0 || read_file(dst, de->d_name, &y, &yl) < 0) {
				snprintf(why, whysize, "%s unreadable", sub);
				res = why;
			} else if (xl != yl || memcmp(x, y, xl) != 0) {
				snprintf(why, whysize, "%s has %zu of %zu bytes%s", sub, yl, xl,
					 xl == yl ? ", not the same ones" : "");
				res = why;
			}
		} else if (S_ISLNK(a.st_mode)) {
			char x[PATH_MAX], y[PATH_MAX];
			ssize_t xl = readlinkat(src, de->d_name, x, sizeof(x)),
				yl = readlinkat(dst, de->d_name, y, sizeof(y));

			if (xl < 0 || yl != xl || memcmp(x, y, (size_t)xl) != 0) {
				snprintf(why, whysize, "%s: another link target", sub);
				res = why;
			}
		}
	}
	closedir(d);
	return res;
}

static void check_published(const struct run *rn, struct verdict *v, bool *ret_present)
{
	_cleanup_close_ int dfd = open(rn->dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int sfd = -1;
	_cleanup_free_ char *cfg = NULL;
	char why[PATH_MAX + 64], out[8192];
	size_t len;

	*ret_present = dfd >= 0;
	{
		/* list --state is in the contract but not in the CLI yet:
		 * every record, then the state is looked for. */
		char *argv[] = { (char *)o.stagelog, "--db", (char *)rn->db, "--json", "list", "--all", NULL };
		int st = proc_run(argv, out, sizeof(out), NULL, 0);
		bool any;

		squeeze(out);
		any = strstr(out, "\"state\":\"published\"") != NULL;
		if (st != 0)
			violate(v, "list", "list --all exited %d", st);
		else if (dfd >= 0 && !any)
			violate(v, "publish-untracked", "the destination exists but no stage is published");
		else if (dfd < 0 && any && rn->rootk != ROOT_TMPFS &&
			 rn->rootk != ROOT_REBOOT) /* a tmpfs tree dies with the power */
			violate(v, "publish-lost", "a stage is published but its destination is gone");
	}
	if (dfd < 0)
		return;
	/* Whole or absent: a destination that exists must hold every file of
	 * the bundle with its full content. */
	if (read_file(dfd, "config.json", &cfg, &len) < 0)
		violate(v, "publish-partial", "config.json missing");
	else if (len != rn->dest_config_len || memcmp(cfg, rn->dest_config, len) != 0)
		violate(v, "publish-partial", "config.json has %zu of %zu bytes%s", len, rn->dest_config_len,
			len == rn->dest_config_len ? ", not the same ones" : "");
	{
		char p[PATH_MAX];
		_cleanup_close_ int d2 = openat(dfd, "rootfs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		pathf(p, sizeof(p), "%s/rootfs", c.bundle);
		sfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (d2 < 0)
			violate(v, "publish-partial", "rootfs missing");
		else if (sfd >= 0 && compare_tree(sfd, d2, "rootfs", why, sizeof(why)))
			violate(v, "publish-partial", "%s", why);
	}
}

/* Lists what is left in the staging root. */
static void check_root_empty(const struct run *rn, const char *when, struct verdict *v)
{
	DIR *d = opendir(rn->root);
	struct dirent *de;
	char names[600] = "";
	int n = 0;

	if (!d)
		return; /* no root: a tmpfs after the cut */
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n++ < 2) {
			strcat(names, n > 1 ? ", " : "");
			strncat(names, de->d_name, 256);
		}
	}
	closedir(d);
	if (n)
		violate(v, "root-leftover", "%s: %d name(s) left in the staging root: %s", when, n, names);
}

/* Returns false when there is no store at all: a cut before its first
 * durable creation. That is sound only if nothing was staged either, which
 * the caller checks. */
static bool check_store(const struct run *rn, struct verdict *v)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int rc;

	if (access(rn->db, F_OK) < 0)
		return false;
	rc = sqlite3_open_v2(rn->db, &db, SQLITE_OPEN_READWRITE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW)
		violate(v, "store-open", "%s", sqlite3_errstr(rc));
	else if (strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0)
		violate(v, "store-integrity", "integrity_check: %.100s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
	return true;
}

/* The negative control of the reboot layout: the same boot, the root
 * recreated empty. A stage in flight in the store cannot be proven gone, so
 * recover must exit 1 and leave it failed; with none in flight, recover
 * exits 0. Returns whether a stage was in flight. */
static bool control_checks(const struct run *rn, struct verdict *v)
{
	char out[16384], errtext[400];
	bool inflight;
	int st;

	if (!check_store(rn, v))
		return false;
	{
		char *argv[] = { (char *)o.stagelog, "--db", (char *)rn->db, "--json", "list", NULL };
		st = proc_run(argv, out, sizeof(out), errtext, sizeof(errtext));
		squeeze(out);
		if (st != 0) {
			violate(v, "list", "list exited %d: %s", st, errtext);
			return false;
		}
		inflight = strcmp(out, "[]") != 0;
	}
	{
		char *argv[] = { (char *)o.stagelog, "--db",   (char *)rn->db,   "--json",
				 "recover",          "--root", (char *)rn->root, NULL };
		st = proc_run(argv, out, sizeof(out), errtext, sizeof(errtext));
		if (inflight && st != 1)
			violate(v, "control", "same boot, root recreated, a stage in flight: recover exited %d, not 1",
				st);
		else if (!inflight && st != 0)
			violate(v, "control", "same boot, root recreated, nothing in flight: recover exited %d: %s", st,
				errtext);
	}
	if (inflight) {
		char *argv[] = { (char *)o.stagelog, "--db", (char *)rn->db, "--json", "list", "--all", NULL };
		st = proc_run(argv, out, sizeof(out), errtext, sizeof(errtext));
		squeeze(out);
		if (st != 0 || !strstr(out, "\"state\":\"failed\""))
			violate(v, "control",
				"same boot, root recreated: no stage failed (list --all exited %d: %.200s)", st, out);
	}
	return inflight;
}

static void oracle_checks(const struct run *rn, int var, struct verdict *v)
{
	char out[16384], errtext[400];
	bool published = false;
	int st;

	if (!check_store(rn, v)) {
		/* No store: nothing can have been staged (the record comes
		 * first). The root must hold nothing. */
		check_root_empty(rn, "with no store", v);
		goto scan;
	}
	{
		char *argv[] = { (char *)o.stagelog, "--db", (char *)rn->db, "--json", "check", "--root",
				 (char *)rn->root,   NULL };
		st = proc_run(argv, out, sizeof(out), errtext, sizeof(errtext));
		squeeze(out);
		if (!strstr(out, "\"integrity\":\"ok\""))
			violate(v, "check-integrity", "check exited %d: %.200s %s", st, out, errtext);
		else if (!strstr(out, "\"orphans\":[]"))
			violate(v, "orphan", "a stage directory no record names: %.200s", strstr(out, "\"orphans\""));
	}
	{
		char *argv[] = { (char *)o.stagelog, "--db",   (char *)rn->db,   "--json",
				 "recover",          "--root", (char *)rn->root, NULL };
		st = proc_run(argv, out, sizeof(out), errtext, sizeof(errtext));
		squeeze(out);
		if (st != 0)
			violate(v, "recover", "recover exited %d: %.300s %s", st,
				strstr(out, "\"failed\"") ? strstr(out, "\"failed\"") : out, errtext);
	}
	{
		char *argv[] = { (char *)o.stagelog, "--db", (char *)rn->db, "--json", "list", NULL };
		st = proc_run(argv, out, sizeof(out), errtext, sizeof(errtext));
		squeeze(out);
		if (st != 0 || strcmp(out, "[]") != 0)
			violate(v, "in-flight", "after recover, list exited %d: %.200s", st, out);
	}
	if (rn->rootk == ROOT_REBOOT) {
		/* Gone with the old boot: every record final, none failed. */
		char *argv[] = { (char *)o.stagelog, "--db", (char *)rn->db, "--json", "list", "--all", NULL };
		st = proc_run(argv, out, sizeof(out), errtext, sizeof(errtext));
		squeeze(out);
		if (st != 0 || strstr(out, "\"state\":\"failed\""))
			violate(v, "failed-stage", "after recover, list --all exited %d: %.200s", st, out);
	}
	check_root_empty(rn, "after recover", v);
	if (rn->sc == 3)
		check_published(rn, v, &published);
scan:
	/* Every file on every simulated disk, but a published tree. */
	for (unsigned d = 0; d < rn->ndev; d++) {
		_cleanup_close_ int dfd = open(c.mnt[d], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		size_t ml = strlen(c.mnt[d]);
		const char *skip = NULL;
		struct stat sb;

		if (published && !strncmp(rn->dest, c.mnt[d], ml) && rn->dest[ml] == '/')
			skip = rn->dest + ml + 1;
		if (dfd >= 0 && fstat(dfd, &sb) == 0)
			scan_canary(dfd, "", skip, sb.st_dev, v);
	}
	if (rn->rootk == ROOT_REBOOT) {
		/* And on the new boot's tmpfs (and the root's own, if any). */
		_cleanup_close_ int dfd = open(c.tmproot, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		_cleanup_close_ int rfd = var == VAR_RB_TMPFS ? open(rn->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
		struct stat sb;

		if (dfd >= 0 && fstat(dfd, &sb) == 0)
			scan_canary(dfd, "", NULL, sb.st_dev, v);
		if (rfd >= 0 && fstat(rfd, &sb) == 0)
			scan_canary(rfd, "", NULL, sb.st_dev, v);
	}
	if (access(rn->db, F_OK) == 0) {
		char *argv[] = { (char *)o.stagelog, "--db", (char *)rn->db, "check", "--root", (char *)rn->root, NULL };
		st = proc_run(argv, out, sizeof(out), errtext, sizeof(errtext));
		if (st != 0)
			violate(v, "check-after-recover", "check exited %d: %s", st, errtext);
	}
	/* The store still works: a fresh stage and its release. */
	{
		char pid[32], id[64];

		snprintf(pid, sizeof(pid), "%ld", (long)getpid());
		char *sargv[] = { (char *)o.stagelog,
				  "--db",
				  (char *)rn->db,
				  "stage",
				  "--root",
				  (char *)rn->root,
				  "--bundle",
				  c.bundle,
				  "--env",
				  "PL_CANARY",
				  "--owner",
				  pid,
				  NULL };
		st = proc_run(sargv, out, sizeof(out), errtext, sizeof(errtext));
		if (st != 0 || parse_id(out, id) < 0) {
			violate(v, "fresh-stage", "stage exited %d: %s", st, errtext);
		} else {
			char *rargv[] = { (char *)o.stagelog, "--db", (char *)rn->db, "release", id, NULL };
			st = proc_run(rargv, out, sizeof(out), errtext, sizeof(errtext));
			if (st != 0)
				violate(v, "fresh-stage", "release exited %d: %s", st, errtext);
			else
				check_root_empty(rn, "after a fresh stage and release", v);
		}
	}
}

/* Runs the oracle on the crash image attached to loop device index, in a
 * child with its own mount namespace. Returns the number of broken
 * invariants (the child prints them), or -1 on a harness error. */
/* Violations printed in full per scenario and first invariant; the rest
 * are counted. */
#define SHOW_PER_KIND 3
#define MAX_KINDS 64
static struct kind {
	int sc, var;
	char name[64];
	unsigned long n;
} kinds[MAX_KINDS];
static size_t nkinds;

static void report(const struct run *rn, int var, const char *point, const char *first, const char *text)
{
	size_t i;

	for (i = 0; i < nkinds; i++)
		if (kinds[i].sc == rn->sc && kinds[i].var == var && !strcmp(kinds[i].name, first))
			break;
	if (i == nkinds && nkinds < MAX_KINDS) {
		kinds[nkinds].sc = rn->sc;
		kinds[nkinds].var = var;
		snprintf(kinds[nkinds].name, sizeof(kinds[nkinds].name), "%.63s", first);
		nkinds++;
	}
	if (i < MAX_KINDS && kinds[i].n++ >= SHOW_PER_KIND && !o.verbose)
		return;
	printf("VIOLATION %s: first broken invariant: %s: %s\n", point, first, text);
	fflush(stdout);
}

static int oracle(const struct run *rn, const int *index, int var, const char *point)
{
	char msg[sizeof(((struct verdict *)0)->first) + sizeof(((struct verdict *)0)->text) + 2]; /* < PIPE_BUF */
	size_t used = 0;
	pid_t pid;
	int status, fds[2];

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		struct verdict v = { .n = 0 };
		int r;

		/* A private mount namespace: the crash image appears at the
		 * original path, so the roots and destinations the store
		 * recorded resolve, and nothing leaks to the host. */
		if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			_exit(200);
		/* A power cut empties a tmpfs root. */
		if ((rn->rootk == ROOT_TMPFS || rn->rootk == ROOT_REBOOT) &&
		    mount("tmpfs", c.tmproot, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
			_exit(201);
		/* The reboot layout's root, as the new boot makes it. */
		if ((var == VAR_RB_TMPFS || var == VAR_RB_DIR || var == VAR_RB_CONTROL) && mkdir(rn->root, 0700) < 0)
			_exit(203);
		if (var == VAR_RB_TMPFS && mount("tmpfs", rn->root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") < 0)
			_exit(204);
		if (var_new_boot(rn->rootk, var)) {
			char path[PATH_MAX], id[40];
			uint8_t b[16];
			uint64_t s = o.seed ^ (uint64_t)time(NULL) ^ (uint64_t)getpid() << 20;

			for (int i = 0; i < 16; i += 8) {
				uint64_t x = rng_next(&s);
				memcpy(b + i, &x, 8);
			}
			snprintf(id, sizeof(id),
				 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\n", b[0], b[1],
				 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
				 b[15]);
			pathf(path, sizeof(path), "%s/boot_id-%ld", c.work, (long)getpid());
			if (write_file(path, id, strlen(id), 0644) < 0 ||
			    mount(path, "/proc/sys/kernel/random/boot_id", NULL, MS_BIND, NULL) < 0)
				_exit(202);
			unlink(path); /* the bind mount keeps it */
		}
		r = 0;
		for (unsigned d = 0; r == 0 && d < rn->ndev; d++) {
			r = do_mount(index[d], rn->fs, c.mnt[d]);
			if (r < 0)
				violate(&v, "mount", "crash image %u does not mount: %s", d, strerror(-r));
		}
		bool inflight = false;

		if (r == 0 && var == VAR_RB_CONTROL) {
			inflight = control_checks(rn, &v);
		} else if (r == 0) {
			oracle_checks(rn, var, &v);
		}
		if (v.n) {
			char m[sizeof(msg)];
			int n = snprintf(m, sizeof(m), "%s\t%s", v.first, v.text);

			/* Under PIPE_BUF bytes: one write, never split. */
			(void)!write(fds[1], m, (size_t)(n < (int)sizeof(m) ? n : (int)sizeof(m) - 1));
		}
		for (unsigned d = 0; d < rn->ndev; d++)
			if (umount2(c.mnt[d], 0) < 0)
				(void)umount2(c.mnt[d], MNT_DETACH);
		/* 101: no violation, and the control saw a stage in flight
		 * fail as it must. */
		_exit(v.n > 100 ? 100 : v.n ? v.n : inflight ? 101 : 0);
	}
	close(fds[1]);
	for (;;) {
		ssize_t n = read(fds[0], msg + used, sizeof(msg) - 1 - used);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || (used += (size_t)n) == sizeof(msg) - 1)
			break;
	}
	msg[used] = '\0';
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (used) {
		char *tab = strchr(msg, '\t');

		if (tab)
			*tab++ = '\0';
		report(rn, var, point, msg, tab ? tab : "");
	}
	if (var == VAR_RB_CONTROL && WIFEXITED(status) && WEXITSTATUS(status) <= 101) {
		t.control_runs++;
		if (WEXITSTATUS(status) == 101) {
			t.control_inflight++;
			return 0;
		}
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) > 100) {
		err("%s: oracle child failed (status %d)", point, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		return -1;
	}
	return WEXITSTATUS(status);
}

/* ---- replay ---- */

/*
 * A crash state: each disk's durable image (every write followed by a flush
 * of that disk) plus a choice among the pending writes (issued, not yet
 * flushed): pick[i] is 0 (lost), 1 (landed) or 2 (torn: only the 4 KiB
 * units in torn_mask landed).
 */
struct pending {
	size_t *idx; /* record indices, in log order */
	size_t n, cap;
};

static int build_crash(const struct run *rn, const struct pl_log *log, const struct pending *pd, const uint8_t *pick,
		       uint64_t torn_mask)
{
	for (unsigned d = 0; d < rn->ndev; d++) {
		_cleanup_close_ int p = open(c.prefix[d], O_RDONLY | O_CLOEXEC);
		_cleanup_close_ int w = -1;
		int r;

		if (p < 0)
			return negerrno();
		(void)unlink(c.crash[d]);
		w = open(c.crash[d], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (w < 0)
			return negerrno();
		r = pl_sparse_copy(p, w);
		if (r < 0)
			return r;
		for (size_t k = 0; pick && k < pd->n; k++) {
			const struct pl_rec *wr = &log->r[pd->idx[k]];

			if (!pick[k] || wr->dev != d)
				continue;
			if (pick[k] == 2) {
				for (uint64_t u = 0; u * 4096 < wr->len; u++) {
					uint64_t len = wr->len - u * 4096 < 4096 ? wr->len - u * 4096 : 4096;

					if (torn_mask & (1ull << (u % 64)))
						r = pl_pwrite_all(w, wr->data + u * 4096, len, wr->off + u * 4096);
					if (r < 0)
						return r;
				}
				continue;
			}
			r = pl_pwrite_all(w, wr->data, wr->len, wr->off);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int check_state(const struct run *rn, const struct pl_log *log, const struct pending *pd, const uint8_t *pick,
		       uint64_t torn_mask, const char *what, uint64_t seed)
{
	int worst = 0;

	t.states++;
	t.sc_states[rn->sc]++;
	for (int var = 0; var < VAR_N; var++) {
		char point[512];
		int index[PL_MAX_DEV] = { -1, -1 };
		unsigned att = 0;
		int n = 0;

		if (!(o.var_mask & (1u << var)) || !var_applies(rn->rootk, var) || interrupted)
			continue;
		/* Each variant gets pristine images: the oracle's mount,
		 * recovery and fresh stage all write to them. */
		if (build_crash(rn, log, pd, pick, torn_mask) < 0)
			return err("cannot build the crash image");
		for (; att < rn->ndev; att++) {
			int want = var == VAR_LOOP ? c.loop_other[att] : c.loop_rec[att];

			index[att] = loop_attach(want, c.crash[att]);
			if (index[att] < 0) {
				err("cannot attach loop%d: %s", want, strerror(-index[att]));
				n = -1;
				break;
			}
		}
		if (n == 0) {
			snprintf(point, sizeof(point),
				 "fs=%s root=%s scenario=%d(%s) %s seed=%#" PRIx64 " variant=%s loop%d",
				 fs_names[rn->fs], root_names[rn->rootk], rn->sc, sc_names[rn->sc], what, seed,
				 var_names[var], index[0]);
			n = oracle(rn, index, var, point);
		}
		while (att > 0)
			loop_detach(index[--att]);
		t.oracle_runs++;
		if (n < 0) {
			t.errors++;
			return -1;
		}
		if (n > 0) {
			t.violations++;
			t.sc_viol[rn->sc]++;
			worst = n;
		}
		if (o.verbose)
			fprintf(stderr, "  %s: %s\n", point, n ? "VIOLATION" : "ok");
	}
	return worst;
}

/* The states inside one flush interval: random subsets of the pending
 * writes (a volatile cache may have written any of them, in any order) and
 * a torn last write. */
static int interval_states(const struct run *rn, const struct pl_log *log, const struct pending *pd, size_t at,
			   uint64_t seed)
{
	_cleanup_free_ uint8_t *pick = NULL;
	char what[160];

	if (o.boundaries_only || pd->n == 0)
		return 0;
	pick = calloc(pd->n, 1);
	if (!pick)
		return -1;
	/* With one pending write, the boundaries before and after are its
	 * only subsets. */
	for (unsigned k = 0; pd->n > 1 && k < o.subsets && !interrupted; k++) {
		uint64_t s = seed ^ ((uint64_t)at << 8 | k), st = s;

		for (size_t w = 0; w < pd->n; w++)
			pick[w] = rng_next(&st) & 1;
		snprintf(what, sizeof(what), "record=%zu subset %u of %zu pending writes", at, k, pd->n);
		if (check_state(rn, log, pd, pick, 0, what, s) < 0)
			return -1;
	}
	const struct pl_rec *last = &log->r[pd->idx[pd->n - 1]];
	if (last->len > 4096 && !interrupted) {
		uint64_t s = seed ^ ((uint64_t)at << 8 | 0xff), st = s, mask = rng_next(&st);

		memset(pick, 1, pd->n);
		pick[pd->n - 1] = 2;
		if (mask == UINT64_MAX || mask == 0)
			mask = 0x5555555555555555ull;
		snprintf(what, sizeof(what), "record=%zu torn last write (%" PRIu64 " bytes) of %zu pending", at,
			 last->len, pd->n);
		if (check_state(rn, log, pd, pick, mask, what, s) < 0)
			return -1;
	}
	return 0;
}

static int replay(const struct run *rn)
{
	struct pl_log log;
	struct pending pd = { .n = 0 };
	uint64_t seed = o.seed ^ ((uint64_t)rn->fs << 40 | (uint64_t)rn->rootk << 32 | (uint64_t)rn->sc << 24);
	size_t nflush = 0, nwrites = 0;
	int r;

	r = pl_log_open(&log, c.logpath, rn->marker);
	if (r < 0)
		return err("cannot read the log: %s", strerror(-r));
	{
		int fds[PL_MAX_DEV] = { -1, -1 };

		r = 0;
		for (unsigned d = 0; r == 0 && d < rn->ndev; d++)
			if (sparse_copy_path(c.base[rn->fs][d], c.prefix[d]) < 0 ||
			    (fds[d] = open(c.prefix[d], O_RDWR | O_CLOEXEC)) < 0)
				r = -1;
		if (r == 0)
			r = pl_log_apply_prefix(c.logpath, rn->marker, fds, rn->ndev);
		for (unsigned d = 0; d < rn->ndev; d++)
			if (fds[d] >= 0)
				close(fds[d]);
		if (r < 0) {
			pl_log_close(&log);
			return err("cannot build the scenario's start images");
		}
	}
	for (size_t i = 0; i < log.nr; i++) {
		if (log.r[i].type == PL_REC_WRITE)
			nwrites++;
		else
			nflush++;
	}
	printf("powerloss: %s root=%s scenario %d (%s): %zu writes, %zu flushes, seed %#" PRIx64 "\n", fs_names[rn->fs],
	       root_names[rn->rootk], rn->sc, sc_names[rn->sc], nwrites, nflush, seed);
	fflush(stdout);

	if (check_state(rn, &log, &pd, NULL, 0, "record=0 boundary (start)", seed) < 0)
		goto out;
	for (size_t i = 0; i < log.nr && !interrupted; i++) {
		const struct pl_rec *rec = &log.r[i];
		size_t kept = 0, applied = 0;
		char what[96];

		if (rec->type == PL_REC_WRITE) {
			if (pd.n == pd.cap) {
				size_t cap = pd.cap ? 2 * pd.cap : 256;
				size_t *n = realloc(pd.idx, cap * sizeof(*n));

				if (!n)
					goto out;
				pd.idx = n;
				pd.cap = cap;
			}
			pd.idx[pd.n++] = i;
			continue;
		}
		/* A flush of one disk: first the states before it returned,
		 * then its writes become durable. */
		if (interval_states(rn, &log, &pd, i, seed) < 0)
			goto out;
		{
			_cleanup_close_ int p = open(c.prefix[rec->dev], O_RDWR | O_CLOEXEC);

			if (p < 0)
				goto out;
			for (size_t k = 0; k < pd.n; k++) {
				const struct pl_rec *w = &log.r[pd.idx[k]];

				if (w->dev != rec->dev) {
					pd.idx[kept++] = pd.idx[k];
					continue;
				}
				if (pl_pwrite_all(p, w->data, w->len, w->off) < 0)
					goto out;
				applied++;
			}
			pd.n = kept;
		}
		/* The flush boundary (back-to-back flushes add nothing). */
		snprintf(what, sizeof(what), "record=%zu boundary (after a flush of disk %u)", i, rec->dev);
		if (applied && check_state(rn, &log, &pd, NULL, 0, what, seed) < 0)
			goto out;
	}
	/* Writes never flushed: the cut came after the last record. */
	if (pd.n && !interrupted) {
		_cleanup_free_ uint8_t *all = malloc(pd.n);

		if (interval_states(rn, &log, &pd, log.nr, seed) < 0 || !all)
			goto out;
		memset(all, 1, pd.n);
		(void)check_state(rn, &log, &pd, all, 0, "end (every pending write landed)", seed);
	}
out:
	free(pd.idx);
	pl_log_close(&log);
	return 0;
}

/* ---- main ---- */

static int skip(const char *why)
{
	printf("powerloss: SKIP: %s\n", why);
	return 77;
}

static unsigned parse_list(const char *arg, const char *const *names, unsigned n)
{
	unsigned mask = 0;
	_cleanup_free_ char *copy = strdup(arg);
	char *save = NULL;

	if (!copy)
		exit(2);
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned i;

		for (i = 0; i < n; i++)
			if (!strcmp(tok, names[i]) || (tok[0] >= '0' && tok[0] <= '9' && (unsigned)atoi(tok) == i))
				break;
		if (i == n) {
			err("unknown value: %s", tok);
			exit(64);
		}
		mask |= 1u << i;
	}
	return mask;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: powerloss --stagelog PATH --fused PATH [--fs ext4,xfs] [--scenarios 1,2,3,4,5]\n"
		"                 [--roots disk,tmpfs,split,reboot]\n"
		"                 [--variants same,newboot,otherloop,reboot-newtmpfs,reboot-tmpfiles,reboot-absent,\n"
		"                             control-sameboot] [--subsets N]\n"
		"                 [--boundaries-only] [--seed N] [--work DIR] [--keep] [-v]\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "stagelog", required_argument, NULL, 's' }, { "fused", required_argument, NULL, 'F' },
		{ "fs", required_argument, NULL, 'f' },       { "scenarios", required_argument, NULL, 'S' },
		{ "roots", required_argument, NULL, 'r' },    { "variants", required_argument, NULL, 'V' },
		{ "subsets", required_argument, NULL, 'n' },  { "boundaries-only", no_argument, NULL, 'b' },
		{ "seed", required_argument, NULL, 'e' },     { "work", required_argument, NULL, 'w' },
		{ "keep", no_argument, NULL, 'k' },           { "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },           { NULL, 0, NULL, 0 },
	};
	struct timespec t0, t1;
	int ch, rc = 0;

	while ((ch = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			o.stagelog = optarg;
			break;
		case 'F':
			o.fused = optarg;
			break;
		case 'f':
			o.fs_mask = parse_list(optarg, fs_names, FS_N);
			break;
		case 'S':
			o.sc_mask = parse_list(optarg, sc_names, N_SCENARIOS + 1) & 0x3e;
			break;
		case 'r':
			o.root_mask = parse_list(optarg, root_names, ROOT_N);
			break;
		case 'V':
			o.var_mask = parse_list(optarg, var_names, VAR_N);
			break;
		case 'n':
			o.subsets = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'b':
			o.boundaries_only = true;
			break;
		case 'e':
			o.seed = strtoull(optarg, NULL, 0);
			break;
		case 'w':
			o.work_parent = optarg;
			break;
		case 'k':
			o.keep = true;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 64;
		}
	}
	if (!o.stagelog || !o.fused || optind != argc) {
		usage(stderr);
		return 64;
	}
	if (geteuid() != 0)
		return skip("needs root (loop devices, mount(2), FUSE)");
	if (access("/dev/fuse", R_OK | W_OK) < 0)
		return skip("no usable /dev/fuse");
	if (access("/dev/loop-control", R_OK | W_OK) < 0)
		return skip("no /dev/loop-control");
	if ((o.fs_mask & (1u << FS_EXT4)) && access("/sbin/mkfs.ext4", X_OK) < 0)
		return skip("no mkfs.ext4 (e2fsprogs)");
	if ((o.fs_mask & (1u << FS_XFS)) && access("/sbin/mkfs.xfs", X_OK) < 0)
		return skip("no mkfs.xfs (xfsprogs)");
	if (access(o.stagelog, X_OK) < 0 || access(o.fused, X_OK) < 0)
		return err("%s or %s is not executable", o.stagelog, o.fused), 2;

	{
		_cleanup_free_ char *abs = realpath(o.stagelog, NULL);
		_cleanup_free_ char *absf = realpath(o.fused, NULL);
		static char sl_path[PATH_MAX], fu_path[PATH_MAX];

		if (!abs || !absf)
			return 2;
		snprintf(sl_path, sizeof(sl_path), "%s", abs);
		snprintf(fu_path, sizeof(fu_path), "%s", absf);
		o.stagelog = sl_path;
		o.fused = fu_path;
	}
	pathf(c.work, sizeof(c.work), "%s/stagelog-powerloss.XXXXXX", o.work_parent);
	if (!mkdtemp(c.work))
		return err("%s: %s", c.work, strerror(errno)), 2;
	pathf(c.bundle, sizeof(c.bundle), "%s/bundle", c.work);
	pathf(c.runtime, sizeof(c.runtime), "%s/runtime.sh", c.work);
	pathf(c.fusemnt, sizeof(c.fusemnt), "%s/fuse", c.work);
	for (int d = 0; d < PL_MAX_DEV; d++) {
		pathf(c.served[d], sizeof(c.served[d]), "%s/served%d.img", c.work, d);
		pathf(c.prefix[d], sizeof(c.prefix[d]), "%s/prefix%d.img", c.work, d);
		pathf(c.crash[d], sizeof(c.crash[d]), "%s/crash%d.img", c.work, d);
		pathf(c.mnt[d], sizeof(c.mnt[d]), "%s/disk%d", c.work, d);
		for (int fs = 0; fs < FS_N; fs++)
			pathf(c.base[fs][d], sizeof(c.base[fs][d]), "%s/base-%s-%d.img", c.work, fs_names[fs], d);
	}
	pathf(c.logpath, sizeof(c.logpath), "%s/write.log", c.work);
	pathf(c.tmproot, sizeof(c.tmproot), "%s/tmp", c.work);
	{
		uint8_t b[8];
		uint64_t s = (uint64_t)time(NULL) ^ (uint64_t)getpid();

		for (int i = 0; i < 8; i++)
			b[i] = (uint8_t)rng_next(&s);
		snprintf(c.canary, sizeof(c.canary), "pl-canary-%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
			 b[3], b[4], b[5], b[6], b[7]);
	}
	if (mkdir(c.mnt[0], 0755) < 0 || mkdir(c.mnt[1], 0755) < 0 || make_bundle() < 0 || make_runtime() < 0)
		return err("cannot set up %s", c.work), 2;

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	printf("powerloss: stagelog %s, seed %" PRIu64 ", work %s\n", o.stagelog, o.seed, c.work);
	clock_gettime(CLOCK_MONOTONIC, &t0);

	for (int fs = 0; fs < FS_N && !interrupted; fs++) {
		if (!(o.fs_mask & (1u << fs)))
			continue;
		/* Two file systems of a kind, with their own UUIDs: XFS will not
		 * mount two at once that share one. */
		if (make_base(fs, 0) < 0 || make_base(fs, 1) < 0) {
			rc = 2;
			break;
		}
		t.fs_used++;
		for (int rk = 0; rk < ROOT_N && !interrupted; rk++) {
			if (!(o.root_mask & (1u << rk)))
				continue;
			for (int sc = 1; sc <= N_SCENARIOS && !interrupted; sc++) {
				struct run rn = { .fs = fs, .rootk = rk, .sc = sc, .ndev = rk == ROOT_SPLIT ? 2 : 1 };

				if (!(o.sc_mask & (1u << sc)))
					continue;
				pathf(rn.db, sizeof(rn.db), "%s/store/stagelog.db", c.mnt[0]);
				{
					/* publish stays on the root's file system. */
					const char *rootfs = rk == ROOT_DISK  ? c.mnt[0]
							   : rk == ROOT_SPLIT ? c.mnt[1]
									      : c.tmproot;
					/* ROOT_TMPFS and ROOT_REBOOT: c.tmproot,
					 * a tmpfs (under /dev/shm, or one of its
					 * own for "reboot"). */

					pathf(rn.root, sizeof(rn.root), "%s/root", rootfs);
					pathf(rn.dest, sizeof(rn.dest), "%s/pub/out", rootfs);
				}
				if (record(&rn) < 0) {
					/* A build that cannot run the scenario
					 * fails it: that is a finding too. */
					printf("VIOLATION fs=%s root=%s scenario=%d(%s) recording: record-cmd: %s\n",
					       fs_names[fs], root_names[rk], sc, sc_names[sc],
					       rec_err[0] ? rec_err : "harness error");
					t.violations++;
					t.sc_viol[sc]++;
					free(rn.dest_config);
					continue;
				}
				/* The other loop device: one the recording did
				 * not use. */
				for (unsigned d = 0; d < rn.ndev; d++)
					c.loop_other[d] = c.loop_rec[rn.ndev - 1] + 1 + (int)d;
				if (replay(&rn) < 0)
					rc = 2;
				free(rn.dest_config);
				if (rk == ROOT_TMPFS || rk == ROOT_REBOOT)
					remove_tree(c.tmproot);
			}
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);

	for (int sc = 1; sc <= N_SCENARIOS; sc++)
		if (o.sc_mask & (1u << sc))
			printf("powerloss: scenario %d (%s): %lu crash states, %lu violations\n", sc, sc_names[sc],
			       t.sc_states[sc], t.sc_viol[sc]);
	for (size_t i = 0; i < nkinds; i++)
		printf("powerloss: scenario %d (%s), variant %s: %lu violations whose first broken invariant is %s\n",
		       kinds[i].sc, sc_names[kinds[i].sc], var_names[kinds[i].var], kinds[i].n, kinds[i].name);
	if (o.root_mask & (1u << ROOT_REBOOT) && o.var_mask & (1u << VAR_RB_CONTROL)) {
		printf("powerloss: negative control (root=reboot, same boot, root recreated): %lu runs, %lu with a "
		       "stage "
		       "in flight that ended failed as it must\n",
		       t.control_runs, t.control_inflight);
		/* A control that never saw a stage in flight proved nothing. */
		if (t.control_runs && !t.control_inflight && !interrupted) {
			printf("VIOLATION root=reboot: control-untested: no crash state of the control had a stage in "
			       "flight\n");
			t.violations++;
		}
	}
	printf("powerloss: %lu crash states (%lu oracle runs, %.0f s), %u file systems, %lu violations\n", t.states,
	       t.oracle_runs, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, t.fs_used,
	       t.violations);
	printf("powerloss: %lu crash states, %u file systems, %lu violations\n", t.states, t.fs_used, t.violations);
	if (!o.keep)
		remove_tree(c.work);
	if (interrupted)
		return 2;
	if (t.errors || rc)
		return 2;
	return t.violations ? 1 : 0;
}
