/* SPDX-License-Identifier: MIT */
/*
 * vfs.c: the one change stagelog makes to how SQLite reaches the disk. It
 * owns the "stagelog" VFS, a pass-through to the default one that decides
 * who syncs the directory of the store's WAL.
 *
 * SQLite opens a WAL with SQLITE_OPEN_CREATE whether or not it exists, and
 * on that flag alone syncs the WAL's directory on the first sync of every
 * connection: one more disk sync in every writing process, although the
 * store's WAL is created once and kept (NO_CKPT_ON_CLOSE). Here the rule
 * is: a frame goes into the WAL only after the WAL's name is durable.
 *
 * A WAL that holds frames was written by a process that kept the rule (or
 * by a SQLite that synced the directory with its first sync): it is opened
 * without the flag, and nothing more is synced. A WAL that is new or empty
 * may have been created a moment ago by a process that has not synced the
 * directory yet (an empty one is also what another program's SQLite leaves
 * when it checkpoints and truncates): its handle syncs the directory before
 * its first write, so a process that only reads it syncs nothing.
 * docs/design.md, "Store tuning".
 */
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
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

/*
 * A WAL whose name may not be durable yet: SQLite's own file (of the
 * wrapped VFS) follows this header in the same allocation, and every
 * method is passed to it; xWrite syncs the folder first, once.
 */
struct wal_file {
	sqlite3_file base;
	sqlite3_file *real;
	const char *name; /* SQLite keeps it valid until xClose */
	bool name_pending;
};

#define REAL(f) (((struct wal_file *)(f))->real)

static int wal_close(sqlite3_file *f)
{
	return REAL(f)->pMethods->xClose(REAL(f));
}

static int wal_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
	return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int wal_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
	struct wal_file *w = (struct wal_file *)f;

	if (w->name_pending) {
		int rc = sync_folder_of(w->name);

		if (rc != SQLITE_OK)
			return rc;
		w->name_pending = false;
	}
	return w->real->pMethods->xWrite(w->real, buf, n, off);
}

static int wal_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int wal_sync(sqlite3_file *f, int flags)
{
	return REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int wal_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int wal_lock(sqlite3_file *f, int level)
{
	return REAL(f)->pMethods->xLock(REAL(f), level);
}

static int wal_unlock(sqlite3_file *f, int level)
{
	return REAL(f)->pMethods->xUnlock(REAL(f), level);
}

static int wal_check_reserved_lock(sqlite3_file *f, int *out)
{
	return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int wal_file_control(sqlite3_file *f, int op, void *arg)
{
	return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int wal_sector_size(sqlite3_file *f)
{
	return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int wal_device_characteristics(sqlite3_file *f)
{
	return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

/* A WAL has no shared memory and no memory map of its own (SQLite maps
 * the -shm through the database's file, and fetches pages from the
 * database): these answer as a file without them would. */
static int wal_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **out)
{
	(void)f, (void)region, (void)size, (void)extend;
	*out = NULL;
	return SQLITE_IOERR_SHMMAP;
}

static int wal_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
	(void)f, (void)offset, (void)n, (void)flags;
	return SQLITE_IOERR_SHMLOCK;
}

static void wal_shm_barrier(sqlite3_file *f)
{
	(void)f;
}

static int wal_shm_unmap(sqlite3_file *f, int delete_flag)
{
	(void)f, (void)delete_flag;
	return SQLITE_OK;
}

static int wal_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **out)
{
	(void)f, (void)off, (void)n;
	*out = NULL;
	return SQLITE_OK;
}

static int wal_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	(void)f, (void)off, (void)p;
	return SQLITE_OK;
}

static const sqlite3_io_methods wal_methods = {
	.iVersion = 3,
	.xClose = wal_close,
	.xRead = wal_read,
	.xWrite = wal_write,
	.xTruncate = wal_truncate,
	.xSync = wal_sync,
	.xFileSize = wal_file_size,
	.xLock = wal_lock,
	.xUnlock = wal_unlock,
	.xCheckReservedLock = wal_check_reserved_lock,
	.xFileControl = wal_file_control,
	.xSectorSize = wal_sector_size,
	.xDeviceCharacteristics = wal_device_characteristics,
	.xShmMap = wal_shm_map,
	.xShmLock = wal_shm_lock,
	.xShmBarrier = wal_shm_barrier,
	.xShmUnmap = wal_shm_unmap,
	.xFetch = wal_fetch,
	.xUnfetch = wal_unfetch,
};

/* Closes f if its xOpen left it open (or half open). */
static void close_file(sqlite3_file *f)
{
	if (f->pMethods)
		f->pMethods->xClose(f);
	f->pMethods = NULL;
}

/*
 * Opens an existing file without SQLITE_OPEN_CREATE. SQLite retries a
 * read-write open that failed as a read-only one; that handle is refused
 * here: the file was missing when the first open ran, and the retry found
 * one that another process created just after.
 */
static int open_existing(sqlite3_vfs *real, const char *name, sqlite3_file *f, int flags, int *ret_flags)
{
	int out = 0, rc = real->xOpen(real, name, f, flags & ~SQLITE_OPEN_CREATE, &out);

	if (rc == SQLITE_OK && (flags & SQLITE_OPEN_READWRITE) && (out & SQLITE_OPEN_READONLY))
		rc = SQLITE_CANTOPEN;
	if (rc != SQLITE_OK) {
		close_file(f);
		return rc;
	}
	if (ret_flags)
		*ret_flags = out;
	return rc;
}

/*
 * Opens a new or empty WAL in the wrapper that syncs its folder before
 * the first write, and without SQLITE_OPEN_CREATE, on which SQLite would
 * sync the folder again at the first sync: a missing WAL is created as
 * SQLite creates it (its mode and owner), closed at once, and opened. If
 * it keeps vanishing (another program's SQLite deleting it), it is opened
 * as SQLite asked, flag and all.
 */
static int open_pending(sqlite3_vfs *real, const char *name, sqlite3_file *file, int flags, int *ret_flags)
{
	struct wal_file *w = (struct wal_file *)file;
	int rc;

	*w = (struct wal_file){ .real = (sqlite3_file *)(w + 1), .name = name, .name_pending = true };
	w->real->pMethods = NULL;
	rc = open_existing(real, name, w->real, flags, ret_flags);
	if (rc != SQLITE_OK) {
		rc = real->xOpen(real, name, w->real, flags, NULL);
		close_file(w->real);
		if (rc == SQLITE_OK)
			rc = open_existing(real, name, w->real, flags, ret_flags);
		if (rc != SQLITE_OK)
			rc = real->xOpen(real, name, w->real, flags, ret_flags);
	}
	/* SQLite calls xClose after a failed xOpen that set the methods. */
	file->pMethods = w->real->pMethods ? &wal_methods : NULL;
	return rc;
}

static int vfs_open(sqlite3_vfs *self, const char *name, sqlite3_file *file, int flags, int *ret_flags)
{
	sqlite3_vfs *real = self->pAppData;
	struct stat st;

	if (!(flags & SQLITE_OPEN_WAL) || !(flags & SQLITE_OPEN_CREATE) || !name)
		return real->xOpen(real, name, file, flags, ret_flags);
	if (stat(name, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
	    open_existing(real, name, file, flags, ret_flags) == SQLITE_OK)
		return SQLITE_OK;
	/* New or empty: its name may not be durable yet. */
	return open_pending(real, name, file, flags, ret_flags);
}

static void vfs_register(void)
{
	sqlite3_vfs *real = sqlite3_vfs_find(NULL);

	if (!real)
		return;
	vfs = *real;
	/* Room for either the wrapped VFS's file or a WAL in its wrapper,
	 * the wrapped file 8-byte aligned after it. */
	vfs.szOsFile = (int)((sizeof(struct wal_file) + 7) / 8 * 8) + real->szOsFile;
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
