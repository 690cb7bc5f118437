/* SPDX-License-Identifier: MIT */
/*
 * fd-util.h: facts about an open file descriptor (and the one fact,
 * volatility, also about a path). Private: never installed.
 */
#ifndef STAGELOG_FD_UTIL_H
#define STAGELOG_FD_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

/* The mount id and whether fd is a mount root, from statx. */
HIDDEN int fd_mount_id(int fd, uint64_t *ret_mnt_id, bool *ret_mount_root);

/* A directory's identity: the device number (valid this boot only), the
 * inode, and the birth time in ns (0 where the file system has none). */
struct fileid {
	uint64_t dev, ino;
	int64_t btime;
};
HIDDEN int fd_fileid(int fd, struct fileid *ret);

/* The most descriptors fd_reserve() can be asked for. */
#define FD_RESERVE_MAX 256

/*
 * Checks that n (at most FD_RESERVE_MAX) more descriptor numbers are free
 * below the soft RLIMIT_NOFILE: the n highest are (one poll), or else by
 * opening n descriptors (one open, then duplicates of it) and closing them
 * again. When they are not, the soft limit is raised toward the hard limit,
 * by as much as is missing and no more (a process that execs another
 * program after this should give it back its own soft limit). Returns 0,
 * or -EMFILE when even the hard limit leaves fewer, with the number that
 * could be open at once in *ret_free (-ENFILE, or another errno, when the
 * one open fails). What it proves is the numbers: duplicates take no room
 * in the system's file table, and an open that later fails for want of
 * memory or of that room fails an undo like any other error, loudly.
 */
HIDDEN int fd_reserve(size_t n, size_t *ret_free);

/* Whether a file system keeps its files in memory only (tmpfs, ramfs), so
 * that they cannot outlive the boot. Each caller decides what "unknown"
 * means for it: a record must not claim volatile, a warning must not cry
 * wolf. */
enum fs_volatility {
	FS_VOLATILITY_UNKNOWN = -1, /* statfs failed */
	FS_PERSISTENT = 0,
	FS_VOLATILE = 1,
};

/* The volatility of the file system fd lies on. */
HIDDEN enum fs_volatility fd_volatility(int fd);

/* The volatility of the file system that holds path, or, when path does not
 * exist, its nearest existing parent (a relative path with none: the
 * working directory). Unknown when path is PATH_MAX bytes or longer, or an
 * error other than ENOENT stops the walk. */
HIDDEN enum fs_volatility path_volatility(const char *path);

/* Whether fd lies on a memory-backed file system; false when that cannot
 * be told (a stage record claims volatile only when it is known). */
static inline bool fd_volatile(int fd)
{
	return fd_volatility(fd) == FS_VOLATILE;
}

#endif
