/* SPDX-License-Identifier: MIT */
/*
 * vfs.c: the one change stagelog makes to how SQLite reaches the disk. It
 * owns the "stagelog" VFS, a pass-through to the default one that decides
 * who syncs the directory of the store's WAL.
 *
 * SQLite opens a WAL with SQLITE_OPEN_CREATE whether or not it exists, and
 * on that flag alone syncs the WAL's directory on the first sync of every
 * connection: one more disk sync in every writing process, although the
 * store's WAL is created once and kept (NO_CKPT_ON_CLOSE). Here the
 * directory is synced when the WAL is created, by the process creating it,
 * before any frame can go in; an existing WAL is opened without the flag.
 *
 * "Existing" means not empty: frames in it were written by a process that
 * opened it through this VFS, which synced the directory first (or by a
 * SQLite that created it and synced the directory with its first sync). An
 * empty WAL may have been created a moment ago by a process that has not
 * synced the directory yet, so it is opened as SQLite would, and that
 * connection syncs the directory itself. docs/design.md, "Store tuning".
 */
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd-util.h"
#include "store-internal.h"

/* The default VFS when the first store opens is the one wrapped: unix,
 * or a test's own shim registered before (tests/test-durability.c). */
static sqlite3_vfs vfs;
static int vfs_rc = SQLITE_ERROR;
static pthread_once_t vfs_once = PTHREAD_ONCE_INIT;

/* Syncs the folder that holds path (a WAL's full name, which SQLite makes
 * absolute). */
static int sync_folder_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t len = slash ? (size_t)(slash - path) : 0;
	char dir[PATH_MAX];
	_cleanup_close_ int fd = -1;

	if (!slash || len >= sizeof(dir))
		return SQLITE_IOERR_DIR_FSYNC;
	memcpy(dir, path, len);
	dir[len] = '\0';
	fd = open(len ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (fsync(fd) < 0 && errno != EINVAL))
		return SQLITE_IOERR_DIR_FSYNC;
	return SQLITE_OK;
}

static int vfs_open(sqlite3_vfs *self, const char *name, sqlite3_file *file, int flags, int *ret_flags)
{
	sqlite3_vfs *real = self->pAppData;
	struct stat st;
	int rc;

	if (!(flags & SQLITE_OPEN_WAL) || !(flags & SQLITE_OPEN_CREATE) || !name)
		return real->xOpen(real, name, file, flags, ret_flags);
	if (stat(name, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
		rc = real->xOpen(real, name, file, flags & ~SQLITE_OPEN_CREATE, ret_flags);
		if (rc == SQLITE_OK)
			return rc;
	}
	/* New or empty: its name may not be durable yet. */
	rc = real->xOpen(real, name, file, flags, ret_flags);
	if (rc == SQLITE_OK) {
		rc = sync_folder_of(name);
		if (rc != SQLITE_OK && file->pMethods) {
			file->pMethods->xClose(file);
			file->pMethods = NULL;
		}
	}
	return rc;
}

static void vfs_register(void)
{
	sqlite3_vfs *real = sqlite3_vfs_find(NULL);

	if (!real)
		return;
	vfs = *real;
	vfs.zName = STORE_VFS_NAME;
	vfs.pAppData = real;
	vfs.pNext = NULL;
	vfs.xOpen = vfs_open;
	vfs_rc = sqlite3_vfs_register(&vfs, 0);
}

int store_vfs_register(void)
{
	pthread_once(&vfs_once, vfs_register);
	return vfs_rc;
}
