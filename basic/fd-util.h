/* SPDX-License-Identifier: MIT */
/*
 * fd-util.h: facts about an open file descriptor. Private: never installed.
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

/* Whether fd lies on a memory-backed file system (tmpfs, ramfs), whose
 * contents cannot outlive the boot. False when it cannot tell. */
HIDDEN bool fd_volatile(int fd);

#endif
