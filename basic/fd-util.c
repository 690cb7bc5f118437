/* SPDX-License-Identifier: MIT */
/*
 * fd-util.c: what a file descriptor says about the file it names: its mount
 * and its identity, both from statx so that nothing is resolved twice.
 */
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include "fd-util.h"

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
	ret->btime = (stx.stx_mask & STATX_BTIME)
			     ? (int64_t)stx.stx_btime.tv_sec * 1000000000 + stx.stx_btime.tv_nsec
			     : 0;
	/* 0 means "unknown" in records: a birth time of exactly the epoch
	 * is one nanosecond off, which changes no comparison. */
	if (ret->btime == 0 && (stx.stx_mask & STATX_BTIME))
		ret->btime = 1;
	return 0;
}

bool fd_volatile(int fd)
{
	struct statfs sfs;

	if (fstatfs(fd, &sfs) < 0)
		return false;
	return sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC;
}
