/* SPDX-License-Identifier: MIT */
/*
 * fd-util.c: what a file descriptor says about the file it names: its mount
 * and its identity, both from statx so that nothing is resolved twice;
 * whether its file system keeps files in memory only (and the same for a
 * path); and whether enough descriptors are left to open.
 */
#include <assert.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <poll.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include "fd-util.h"

#define NSEC_PER_SEC 1000000000

int fd_mount_id(int fd, uint64_t *ret_mnt_id, bool *ret_mount_root)
{
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &stx) < 0)
		return negerrno();
	if (!(stx.stx_mask & STATX_MNT_ID))
		return -EOPNOTSUPP;
	*ret_mnt_id = stx.stx_mnt_id;
	*ret_mount_root = (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
			  (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
	return 0;
}

int fd_fileid(int fd, struct fileid *ret)
{
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_BTIME, &stx) < 0)
		return negerrno();
	ret->dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
	ret->ino = stx.stx_ino;
	ret->btime = (stx.stx_mask & STATX_BTIME) ? (int64_t)stx.stx_btime.tv_sec * NSEC_PER_SEC + stx.stx_btime.tv_nsec
						  : 0;
	/* 0 means "unknown" in records: a birth time of exactly the epoch
	 * is one nanosecond off, which changes no comparison. */
	if (ret->btime == 0 && (stx.stx_mask & STATX_BTIME))
		ret->btime = 1;
	return 0;
}

/* Raises the soft RLIMIT_NOFILE by missing, up to the hard limit. False
 * when it is at the hard limit already or cannot be raised. */
static bool raise_nofile(size_t missing)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return false;
	rl.rlim_cur = rl.rlim_max - rl.rlim_cur > missing ? rl.rlim_cur + missing : rl.rlim_max;
	return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* True when the n highest descriptor numbers below the soft limit are all
 * free: then n numbers are free, and the lowest free ones, which the next
 * opens take, are below the limit. One poll(2), which flags each number
 * that names no open file POLLNVAL, where opening n and closing them takes
 * 2n calls. (An open descriptor polled for nothing may still report
 * POLLHUP or POLLERR: only POLLNVAL says free.) */
static bool top_free(size_t n)
{
	struct pollfd p[FD_RESERVE_MAX];
	struct rlimit rl;

	if (n == 0 || getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < n || rl.rlim_cur > INT_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		p[i] = (struct pollfd){ .fd = (int)(rl.rlim_cur - n + i) };
	if (poll(p, n, 0) != (int)n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(p[i].revents & POLLNVAL))
			return false;
	return true;
}

int fd_reserve(size_t n, size_t *ret_free)
{
	int fds[FD_RESERVE_MAX];
	size_t held = 0;
	int r = 0;

	/* A caller's constant, never input: more is a bug. */
	assert(n <= FD_RESERVE_MAX);
	if (n > FD_RESERVE_MAX)
		return -EINVAL;
	if (top_free(n))
		return 0;
	/* Opened for real and held all at once: counting what /proc lists
	 * would need a descriptor itself, and says nothing of numbers above
	 * the soft limit that are taken. A descriptor number must stay below
	 * the soft limit, so once the lowest free ones are all held, raising
	 * the limit by k frees exactly k more (fewer, if some above it were
	 * open already: then it is raised again). */
	while (held < n) {
		int fd = held ? fcntl(fds[0], F_DUPFD_CLOEXEC, 0) : open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);

		if (fd >= 0) {
			fds[held++] = fd;
			continue;
		}
		r = negerrno();
		if (r != -EMFILE || !raise_nofile(n - held))
			break;
		r = 0;
	}
	for (size_t i = 0; i < held; i++)
		close(fds[i]);
	if (r < 0 && ret_free)
		*ret_free = held;
	return r;
}

static enum fs_volatility volatility(const struct statfs *sfs)
{
	return sfs->f_type == TMPFS_MAGIC || sfs->f_type == RAMFS_MAGIC ? FS_VOLATILE : FS_PERSISTENT;
}

enum fs_volatility fd_volatility(int fd)
{
	struct statfs sfs;

	if (fstatfs(fd, &sfs) < 0)
		return FS_VOLATILITY_UNKNOWN;
	return volatility(&sfs);
}

enum fs_volatility path_volatility(const char *path)
{
	char buf[PATH_MAX];
	struct statfs sfs;
	char *slash;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return FS_VOLATILITY_UNKNOWN;
	/* The root of a stage that has not begun may not exist yet: its
	 * nearest existing folder is where it would be made. */
	for (;;) {
		if (statfs(buf[0] ? buf : "/", &sfs) == 0)
			return volatility(&sfs);
		if (errno != ENOENT)
			return FS_VOLATILITY_UNKNOWN;
		slash = strrchr(buf, '/');
		if (!slash)
			return statfs(".", &sfs) < 0 ? FS_VOLATILITY_UNKNOWN : volatility(&sfs);
		*slash = '\0';
	}
}
