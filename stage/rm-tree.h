/* SPDX-License-Identifier: MIT */
/*
 * rm-tree.h: removing a directory tree beneath a directory fd (rm-tree.c).
 * Private to stage/; stage-private.h includes it for the undo's descriptor
 * bound and for recover/'s orphan scan.
 */
#ifndef STAGELOG_RM_TREE_H
#define STAGELOG_RM_TREE_H

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

/* At most this many directories are held open while removing a tree;
 * deeper ones are reached again through ".." with an identity check. */
#define MAX_OPEN_DIRS 32

/* The longest reason a tree removal writes, NUL included: a path too long
 * for it keeps its end (the deepest part names what is in the way). */
#define RMTREE_REASON_MAX 256

/* The size of "/proc/self/fd/N", NUL included, for any int N: the magic
 * link through which an fd (an O_PATH one too) is named to a call that
 * takes a path. */
#define PROC_FD_PATH_SIZE (sizeof("/proc/self/fd/") + 3 * sizeof(int))

/* Checks that path_fd (an O_PATH fd of a directory about to be opened for
 * reading) is the directory the caller expects: 0, or a negative errno
 * (-ESTALE for another directory). */
typedef int rmtree_verify_fn(int path_fd, void *userdata);

/* Unlinks name in dfd (flags as for unlinkat). A name that is already gone
 * counts as removed. After EACCES, a parent narrowed to 0500 or 0000 is
 * widened (only if it is a directory we own) and the unlink tried once
 * more. Returns 0 or the unlink's negative errno. */
HIDDEN int rmtree_unlinkat(int dfd, const char *name, int flags);

/*
 * Opens name in dfd as a directory to read: never following a symlink,
 * never blocking on a FIFO (O_DIRECTORY fails first), and never a mount
 * root or a directory on another mount than *mnt_id (NULL: dfd's own).
 * With verify, the directory is opened for reading only once
 * verify(path_fd, userdata) accepts it. Returns the fd; -ENOTDIR when
 * name is not a directory (it can then be unlinked), -EXDEV for a mount,
 * or verify's error.
 */
HIDDEN int rmtree_open_dir(int dfd, const char *name, const uint64_t *mnt_id, rmtree_verify_fn *verify, void *userdata);

/*
 * Removes the directory `name` in dirfd and everything beneath it, never
 * following a symlink, never entering a mount, never opening anything but
 * directories. When have_id, the directory is removed only if fstat gives
 * it device dev and inode ino (stage_undo() passes those of the top
 * directory it has just opened and verified against the record by inode
 * and birth time). prefix is the root-relative path of dirfd, used in the
 * reason. Returns 0 (also when name does not exist) or a negative errno
 * with *reterr (not NULL) set, replacing any reason it held: the path of
 * what is in the way, cut at its start to fit RMTREE_REASON_MAX bytes.
 */
HIDDEN int rmtree_remove(int dirfd, const char *prefix, const char *name, bool have_id, uint64_t dev, uint64_t ino,
			 struct sl_error *reterr);

#endif
