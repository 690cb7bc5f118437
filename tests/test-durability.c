/* SPDX-License-Identifier: MIT */
/*
 * test-durability.c: the orderings a crash or a power loss would expose,
 * observed as they happen instead of by pulling the plug: which syncs come
 * before which directory changes, what a reader can see while a file is
 * written, what the record says after a removal that stopped half-way, and
 * whether the heap blocks that held a secret are wiped before release.
 *
 * How it observes:
 *  - fsync() is defined here, so the library's calls (it is linked in
 *    statically) come here; it logs the path of the fd and makes the real
 *    system call.
 *  - the store's syncs are seen through a SQLite VFS that wraps the
 *    default one (libsqlite3's own system calls are out of reach).
 *  - mkdirat, unlinkat, write, read and free are wrapped with -Wl,--wrap
 *    (see tests/meson.build): the first two log (unlinkat can also refill
 *    the directory it is asked to remove, as a live process would), write
 *    checks what a reader of the stage could see, read can fail on demand,
 *    free scans the block it is about to release.
 */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "entries-db.h"
#include "envfile.h"
#include "helpers.h"
#include "macro.h"
#include "sl-oci.h"
#include "sl-store.h"
#include "store-private.h"

/* ---- The event log. ---- */

enum ev_kind { EV_SYNC, EV_MKDIR, EV_RMDIR, EV_UNLINK };

struct event {
	enum ev_kind kind;
	char path[512]; /* EV_SYNC: what the fd names; else the name given */
};

static struct event events[4096];
static size_t n_events;
static bool logging;

static void log_event(enum ev_kind kind, const char *path)
{
	if (!logging || n_events == ELEMENTSOF(events))
		return;
	events[n_events].kind = kind;
	snprintf(events[n_events].path, sizeof(events[n_events].path), "%s", path);
	n_events++;
}

static void log_sync(int fd)
{
	char proc[64], path[512];
	ssize_t n;

	if (!logging)
		return;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, path, sizeof(path) - 1);
	path[n < 0 ? 0 : n] = '\0';
	log_event(EV_SYNC, path);
}

static void log_start(void)
{
	n_events = 0;
	logging = true;
}

/* The index of the first event of kind for path at or after from, or -1. */
static ssize_t find_event(size_t from, enum ev_kind kind, const char *path)
{
	for (size_t i = from; i < n_events; i++)
		if (events[i].kind == kind && strcmp(events[i].path, path) == 0)
			return (ssize_t)i;
	return -1;
}

static void dump_events(void)
{
	static const char *names[] = { "sync", "mkdir", "rmdir", "unlink" };

	for (size_t i = 0; i < n_events; i++)
		print_message("  %zu %s %s\n", i, names[events[i].kind], events[i].path);
}

int fsync(int fd);
int fsync(int fd)
{
	log_sync(fd);
	return (int)syscall(SYS_fsync, fd);
}

/*
 * The store's syncs. libsqlite3 makes its own system calls, out of reach
 * of both --wrap and interposition, so this is SQLite's own seam: a VFS
 * registered as the default, which hands every call to the real one and
 * logs each xSync with the name of the file (the database or its -wal).
 */
struct shim_file {
	sqlite3_file base;
	const char *name;
	sqlite3_file *real; /* points just past this struct */
};

static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;
static sqlite3_io_methods shim_methods;

#define REAL(f) (((struct shim_file *)(f))->real)

static int shim_close(sqlite3_file *f)
{
	return REAL(f)->pMethods->xClose(REAL(f));
}

static int shim_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
	return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int shim_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
	return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}

static int shim_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

static int shim_sync(sqlite3_file *f, int flags)
{
	log_event(EV_SYNC, ((struct shim_file *)f)->name);
	return REAL(f)->pMethods->xSync(REAL(f), flags);
}

static int shim_size(sqlite3_file *f, sqlite3_int64 *size)
{
	return REAL(f)->pMethods->xFileSize(REAL(f), size);
}

static int shim_lock(sqlite3_file *f, int lock)
{
	return REAL(f)->pMethods->xLock(REAL(f), lock);
}

static int shim_unlock(sqlite3_file *f, int lock)
{
	return REAL(f)->pMethods->xUnlock(REAL(f), lock);
}

static int shim_check_lock(sqlite3_file *f, int *out)
{
	return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int shim_control(sqlite3_file *f, int op, void *arg)
{
	return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int shim_sector(sqlite3_file *f)
{
	return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int shim_device(sqlite3_file *f)
{
	return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int shim_shm_map(sqlite3_file *f, int pg, int size, int extend, void volatile **p)
{
	return REAL(f)->pMethods->xShmMap(REAL(f), pg, size, extend, p);
}

static int shim_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
	return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}

static void shim_shm_barrier(sqlite3_file *f)
{
	REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int shim_shm_unmap(sqlite3_file *f, int del)
{
	return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static int shim_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **p)
{
	return REAL(f)->pMethods->xFetch(REAL(f), off, n, p);
}

static int shim_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
	struct shim_file *sf = (struct shim_file *)f;
	int rc;

	(void)vfs;
	sf->real = (sqlite3_file *)(sf + 1);
	sf->name = name ? name : "";
	rc = real_vfs->xOpen(real_vfs, name, sf->real, flags, out_flags);
	/* xClose is called exactly when pMethods is set, whatever rc is. */
	sf->base.pMethods = sf->real->pMethods ? &shim_methods : NULL;
	return rc;
}

static void shim_install(void)
{
	real_vfs = sqlite3_vfs_find(NULL);
	assert_non_null(real_vfs);
	assert_true(real_vfs->iVersion >= 3 && real_vfs->pAppData != &shim_vfs);
	shim_methods = (sqlite3_io_methods){
		.iVersion = 3,
		.xClose = shim_close,
		.xRead = shim_read,
		.xWrite = shim_write,
		.xTruncate = shim_truncate,
		.xSync = shim_sync,
		.xFileSize = shim_size,
		.xLock = shim_lock,
		.xUnlock = shim_unlock,
		.xCheckReservedLock = shim_check_lock,
		.xFileControl = shim_control,
		.xSectorSize = shim_sector,
		.xDeviceCharacteristics = shim_device,
		.xShmMap = shim_shm_map,
		.xShmLock = shim_shm_lock,
		.xShmBarrier = shim_shm_barrier,
		.xShmUnmap = shim_shm_unmap,
		.xFetch = shim_fetch,
		.xUnfetch = shim_unfetch,
	};
	shim_vfs = *real_vfs;
	shim_vfs.zName = "stagelog-test-shim";
	shim_vfs.pAppData = &shim_vfs;
	shim_vfs.szOsFile = (int)sizeof(struct shim_file) + real_vfs->szOsFile;
	shim_vfs.xOpen = shim_open;
	assert_int_equal(sqlite3_vfs_register(&shim_vfs, 1), SQLITE_OK);
}

int __real_mkdirat(int dfd, const char *name, mode_t mode);
int __wrap_mkdirat(int dfd, const char *name, mode_t mode);
int __wrap_mkdirat(int dfd, const char *name, mode_t mode)
{
	log_event(EV_MKDIR, name);
	return __real_mkdirat(dfd, name, mode);
}

/* A name whose removal fails with EIO, as a failing disk would. */
static const char *unlink_fails;

/* A directory that keeps filling: each rmdir of a directory with this
 * name first creates a new file in it (at most refill_cap times, so that a
 * removal that never gives up still ends here). */
static const char *refill_name;
static unsigned refills, refill_cap;

int __real_unlinkat(int dfd, const char *name, int flags);
int __wrap_unlinkat(int dfd, const char *name, int flags);
int __wrap_unlinkat(int dfd, const char *name, int flags)
{
	int r;

	if (unlink_fails && strcmp(name, unlink_fails) == 0) {
		errno = EIO;
		return -1;
	}
	if (refill_name && (flags & AT_REMOVEDIR) && strcmp(name, refill_name) == 0 && refills < refill_cap) {
		char child[300];
		int fd;

		snprintf(child, sizeof(child), "%s/new%u", name, refills++);
		fd = openat(dfd, child, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		close(fd);
	}
	r = __real_unlinkat(dfd, name, flags);

	/* Logged once done: what matters is what follows the removal. */
	if (r == 0)
		log_event(flags & AT_REMOVEDIR ? EV_RMDIR : EV_UNLINK, name);
	return r;
}

/* ---- Reads that fail. ---- */

/* While armed, the read_fail_at-th read (counting from 1) fails with EIO,
 * as a disk that fails half-way through a file would. */
static unsigned read_fail_at, reads;

ssize_t __real_read(int fd, void *buf, size_t len);
ssize_t __wrap_read(int fd, void *buf, size_t len);
ssize_t __wrap_read(int fd, void *buf, size_t len)
{
	if (read_fail_at && ++reads == read_fail_at) {
		errno = EIO;
		return -1;
	}
	return __real_read(fd, buf, len);
}

/* ---- What a reader sees while a file is written. ---- */

static int watch_fd = -1;      /* the stage's top directory, while watched */
static const char *watch_name; /* the name that must not exist yet */
static unsigned watch_writes, watch_seen;

ssize_t __real_write(int fd, const void *buf, size_t len);
ssize_t __wrap_write(int fd, const void *buf, size_t len);
ssize_t __wrap_write(int fd, const void *buf, size_t len)
{
	struct stat st;

	if (watch_fd >= 0) {
		watch_writes++;
		if (fstatat(watch_fd, watch_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			watch_seen++;
	}
	return __real_write(fd, buf, len);
}

/* ---- Heap blocks released with a secret in them. ---- */

static bool free_armed;
static unsigned free_scanned, free_with_secret;

void __real_free(void *p);
void __wrap_free(void *p);
void __wrap_free(void *p)
{
	if (free_armed && p) {
		free_scanned++;
		if (memmem(p, malloc_usable_size(p), CANARY, strlen(CANARY)))
			free_with_secret++;
	}
	__real_free(p);
}

/* libcjson is a shared library: its own free() calls are out of reach of
 * --wrap. Its hooks bring the blocks of a parsed tree here too. */
static void cjson_free(void *p)
{
	__wrap_free(p);
}

static void watch_cjson(bool on)
{
	cJSON_Hooks hooks = { .malloc_fn = malloc, .free_fn = on ? cjson_free : free };

	cJSON_InitHooks(on ? &hooks : NULL);
}

/* ---- Fixture. ---- */

static int setup(void **state)
{
	struct sandbox *sb = calloc(1, sizeof(*sb));
	struct sl_store *s = NULL;

	sandbox_init(sb);
	/* Created and migrated here, so that a test sees only its own
	 * commits. */
	assert_int_equal(sl_store_open(sb->db, &s, NULL), 0);
	sl_store_close(s);
	*state = sb;
	return 0;
}

static int teardown(void **state)
{
	struct sandbox *sb = *state;

	logging = false;
	free_armed = false;
	watch_fd = -1;
	unlink_fails = NULL;
	refill_name = NULL;
	read_fail_at = 0;
	sandbox_finish(sb);
	free(sb);
	return 0;
}

static const char *top_name(struct sl_stage *st)
{
	return strrchr(sl_stage_path(st), '/') + 1;
}

/* The stage's record, with the entry for its top directory, is synced to
 * the store's WAL before the top directory is created: after a power loss,
 * a directory on a disk-backed root always has a record that names it. */
static void test_intent_synced_before_top_mkdir(void **state)
{
	struct sandbox *sb = *state;
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	char wal[512];
	ssize_t mk, sync;

	snprintf(wal, sizeof(wal), "%s-wal", sb->db);
	assert_int_equal(sl_store_open(sb->db, &s, NULL), 0);
	log_start();
	assert_int_equal(sl_stage_begin(s, sb->root, NULL, &st, NULL), 0);
	logging = false;
	mk = find_event(0, EV_MKDIR, top_name(st));
	sync = find_event(0, EV_SYNC, wal);
	if (mk < 0 || sync < 0 || sync > mk) {
		dump_events();
		fail_msg("want a sync of %s before the mkdir of %s", wal, top_name(st));
	}
	assert_int_equal(sl_stage_abort(st, NULL), 0);
	sl_stage_free(st);
	sl_store_close(s);
}

/* After the top directory's removal the root is synced before the call
 * returns (and before the record says released), so that a power loss
 * cannot bring back a directory whose record is finished. */
static void test_root_synced_after_removal(void **state)
{
	struct sandbox *sb = *state;
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	char top[300];
	ssize_t rm;

	assert_int_equal(sl_store_open(sb->db, &s, NULL), 0);
	assert_int_equal(sl_stage_begin(s, sb->root, NULL, &st, NULL), 0);
	snprintf(top, sizeof(top), "%s", top_name(st));
	assert_int_equal(sl_stage_mkdir(st, "d", 0755, NULL), 0);
	assert_int_equal(sl_stage_write_file(st, "d/f", "x", 1, 0600, NULL), 0);
	assert_int_equal(sl_stage_ready(st, NULL), 0);
	log_start();
	assert_int_equal(sl_stage_release(st, NULL), 0);
	logging = false;
	rm = find_event(0, EV_RMDIR, top);
	if (rm < 0 || find_event((size_t)rm, EV_SYNC, sb->root) < 0) {
		dump_events();
		fail_msg("want a sync of %s after the removal of %s", sb->root, top);
	}
	sl_stage_free(st);
	sl_store_close(s);
}

/* A staged file is written without a name and linked in only when whole:
 * while its bytes are written, nothing under its name exists for a
 * runtime (or a crash) to find half-written. */
static void test_file_named_only_when_whole(void **state)
{
	static const char config[] = "{\"process\":{\"env\":[\"TOKEN=" CANARY "\"]}}";
	struct sandbox *sb = *state;
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	char path[600];

	assert_int_equal(sl_store_open(sb->db, &s, NULL), 0);
	assert_int_equal(sl_stage_begin(s, sb->root, NULL, &st, NULL), 0);
	watch_fd = sl_stage_fd(st);
	watch_name = "config.json";
	watch_writes = watch_seen = 0;
	assert_int_equal(sl_stage_write_file(st, "config.json", config, sizeof(config) - 1, 0600, NULL), 0);
	watch_fd = -1;
	assert_true(watch_writes > 0);
	assert_int_equal(watch_seen, 0);
	/* And once the call returned, the whole file is there. */
	snprintf(path, sizeof(path), "%s/config.json", sl_stage_path(st));
	assert_true(file_contains(path, config));
	assert_int_equal(sl_stage_abort(st, NULL), 0);
	sl_stage_free(st);
	sl_store_close(s);
}

struct removed_check {
	const char *root;
	int present;
};

static void check_removed(const struct db_entry *e, void *userdata)
{
	struct removed_check *c = userdata;
	char path[8192];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%.*s", c->root, (int)e->len, e->path);
	if (e->state == 0) {
		c->present++;
		return;
	}
	if (lstat(path, &st) == 0)
		fail_msg("entry %lld marked removed, but %s is still there", (long long)e->seq, path);
}

/* Checks the store against the disk: no entry of the stage is marked
 * removed while its path still exists. Returns how many entries are still
 * marked present. */
static int assert_removed_means_gone(const struct sandbox *sb, const char *id)
{
	struct removed_check c = { .root = sb->root };
	sqlite3 *db;
	sqlite3_stmt *q;

	assert_int_equal(sqlite3_open_v2(sb->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT rowid FROM stages WHERE id = ?", -1, &q, NULL), SQLITE_OK);
	sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	db_entries(db, sqlite3_column_int64(q, 0), check_removed, &c);
	sqlite3_finalize(q);
	sqlite3_close(db);
	return c.present;
}

/* A removal that fails half-way marks removed exactly what is gone: the
 * entry it could not remove stays marked present, so the next pass (and
 * an operator reading `show`) knows it is there. The stage spans several
 * pages of entries, which the removal marks page by page. */
static void test_failed_removal_marks_only_what_is_gone(void **state)
{
	struct sandbox *sb = *state;
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	struct sl_error err = { 0 };
	char id[64], name[32], path[700];
	const int files = 2 * STORE_PAGE_ENTRIES + 10;
	struct stat sb_st;

	assert_int_equal(sl_store_open(sb->db, &s, NULL), 0);
	assert_int_equal(sl_stage_begin(s, sb->root, NULL, &st, NULL), 0);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	for (int i = 0; i < files; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		assert_int_equal(sl_stage_write_file(st, name, "x", 1, 0600, NULL), 0);
	}
	assert_int_equal(sl_stage_ready(st, NULL), 0);

	/* In the newest page, removed first: one file cannot go. */
	snprintf(name, sizeof(name), "f%d", files - 10);
	unlink_fails = name;
	assert_int_equal(sl_stage_release(st, &err), -EIO);
	unlink_fails = NULL;
	assert_non_null(strstr(err.msg, name));
	snprintf(path, sizeof(path), "%s/%s", sl_stage_path(st), name);
	assert_int_equal(lstat(path, &sb_st), 0);
	/* Every entry the store calls removed is gone, that one included. */
	assert_true(assert_removed_means_gone(sb, id) > 0);
	sl_stage_free(st);

	/* The next release finishes it. */
	assert_true(sl_stage_release_id(s, id, NULL) >= 0);
	assert_int_equal(count_entries(sb->root), 0);
	sl_store_close(s);
}

/* Every heap block that held a secret (the packaged config, the config
 * with the given env, env values) is wiped before it is released. */
static void test_secrets_wiped_before_free(void **state)
{
	static const struct sl_env_var env[] = { { "TOKEN", CANARY }, { "PATH", "/bin" } };
	struct sandbox *sb = *state;
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	struct sl_oci_options o = { .root = sb->root, .env = env, .n_env = ELEMENTSOF(env) };
	char bundle[400], p[500];
	int r;

	snprintf(bundle, sizeof(bundle), "%s/bundle", sb->base);
	snprintf(p, sizeof(p), "%s/rootfs/etc/hostname", bundle);
	write_path(p, "box\n", 0644);
	snprintf(p, sizeof(p), "%s/config.json", bundle);
	write_path(p,
		   "{\"ociVersion\":\"1.0.2\",\"process\":{\"args\":[\"sh\"],\"env\":[\"PACKAGED=" CANARY
		   "\"]},"
		   "\"annotations\":{\"note\":\"" CANARY "\"},\"root\":{\"path\":\"rootfs\"}}",
		   0644);
	o.bundle = bundle;
	assert_int_equal(sl_store_open(sb->db, &s, NULL), 0);
	free_scanned = free_with_secret = 0;
	free_armed = true;
	r = sl_oci_stage(s, &o, &st, NULL);
	free_armed = false;
	assert_int_equal(r, 0);
	/* The check ran, and the secret did reach the stage. */
	assert_true(free_scanned > 0);
	snprintf(p, sizeof(p), "%s/config.json", sl_stage_path(st));
	assert_true(file_contains(p, CANARY));
	assert_int_equal(free_with_secret, 0);
	assert_int_equal(sl_stage_release(st, NULL), 0);
	sl_stage_free(st);
	sl_store_close(s);
}

/* ---- The undo's order. ---- */

/* The removals (unlinks and rmdirs that succeeded) logged since log_start(),
 * as names, must be exactly want[0..n). */
static void assert_removals(const char *const *want, size_t n)
{
	size_t k = 0;
	bool ok = true;

	for (size_t i = 0; i < n_events; i++) {
		if (events[i].kind != EV_UNLINK && events[i].kind != EV_RMDIR)
			continue;
		if (k >= n || strcmp(events[i].path, want[k]) != 0)
			ok = false;
		k++;
	}
	if (!ok || k != n) {
		dump_events();
		for (size_t i = 0; i < n; i++)
			print_message("  want %zu: %s\n", i, want[i]);
		fail_msg("the removals are not the logged entries newest first, then the top directory");
	}
}

/* The undo removes the logged entries newest first (config.json, written
 * last, before anything of rootfs/; a directory after everything the log
 * put in it), then the top directory. The second stage interleaves its
 * entries across directories, an order no tree walk can reproduce: only
 * the log gives it. */
static void test_undo_newest_first(void **state)
{
	static const char config[] = "{\"process\":{\"env\":[\"TOKEN=" CANARY "\"]}}";
	struct sandbox *sb = *state;
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	char top[300];

	assert_int_equal(sl_store_open(sb->db, &s, NULL), 0);

	/* An OCI bundle's shape: rootfs/ first, config.json last. */
	assert_int_equal(sl_stage_begin(s, sb->root, NULL, &st, NULL), 0);
	snprintf(top, sizeof(top), "%s", top_name(st));
	assert_int_equal(sl_stage_mkdir(st, "rootfs", 0755, NULL), 0);
	assert_int_equal(sl_stage_write_file(st, "rootfs/a", "a", 1, 0644, NULL), 0);
	assert_int_equal(sl_stage_mkdir(st, "rootfs/etc", 0755, NULL), 0);
	assert_int_equal(sl_stage_write_file(st, "rootfs/etc/passwd", "p", 1, 0644, NULL), 0);
	assert_int_equal(sl_stage_symlink(st, "etc", "rootfs/name", NULL), 0);
	assert_int_equal(sl_stage_write_file(st, "config.json", config, sizeof(config) - 1, 0600, NULL), 0);
	assert_int_equal(sl_stage_ready(st, NULL), 0);
	log_start();
	assert_int_equal(sl_stage_release(st, NULL), 0);
	logging = false;
	{
		const char *want[] = { "config.json", "name", "passwd", "etc", "a", "rootfs", ".stagelog", top };
		assert_removals(want, ELEMENTSOF(want));
	}
	sl_stage_free(st);

	/* Interleaved: rootfs/a, config.json, rootfs/b. */
	assert_int_equal(sl_stage_begin(s, sb->root, NULL, &st, NULL), 0);
	snprintf(top, sizeof(top), "%s", top_name(st));
	assert_int_equal(sl_stage_mkdir(st, "rootfs", 0755, NULL), 0);
	assert_int_equal(sl_stage_write_file(st, "rootfs/a", "a", 1, 0644, NULL), 0);
	assert_int_equal(sl_stage_write_file(st, "config.json", config, sizeof(config) - 1, 0600, NULL), 0);
	assert_int_equal(sl_stage_write_file(st, "rootfs/b", "b", 1, 0644, NULL), 0);
	assert_int_equal(sl_stage_ready(st, NULL), 0);
	log_start();
	assert_int_equal(sl_stage_release(st, NULL), 0);
	logging = false;
	{
		const char *want[] = { "b", "config.json", "a", "rootfs", ".stagelog", top };
		assert_removals(want, ELEMENTSOF(want));
	}
	sl_stage_free(st);
	assert_int_equal(count_entries(sb->root), 0);
	sl_store_close(s);
}

/* A directory that keeps filling while it is removed (a runtime still
 * writing into its spool) is rescanned a bounded number of times: the
 * removal ends, the stage is failed with a reason, and once the writer
 * stops the next release finishes it. */
static void test_refilling_directory_bounded(void **state)
{
	struct sandbox *sb = *state;
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	struct sl_error err = { 0 };
	struct store_record rec;
	char id[64];
	int r;

	assert_int_equal(sl_store_open(sb->db, &s, NULL), 0);
	assert_int_equal(sl_stage_begin(s, sb->root, NULL, &st, NULL), 0);
	snprintf(id, sizeof(id), "%s", sl_stage_id(st));
	assert_int_equal(sl_stage_mkdir(st, "rootfs", 0755, NULL), 0);
	assert_int_equal(sl_stage_mkdir(st, "rootfs/spool", 0755, NULL), 0);
	assert_int_equal(sl_stage_write_file(st, "rootfs/spool/f", "x", 1, 0644, NULL), 0);
	assert_int_equal(sl_stage_ready(st, NULL), 0);

	refill_name = "spool";
	refills = 0;
	refill_cap = 10000;
	r = sl_stage_release(st, &err);
	refill_name = NULL;
	print_message("a directory refilled at each rmdir: %u refills, then: %s\n", refills, err.msg);
	/* 16 rescans per walk, and a handful of walks reach the directory. */
	assert_true(refills > 16);
	if (refills >= 200)
		fail_msg("the refilling directory was rescanned %u times: no bound", refills);
	assert_true(r < 0);
	assert_true(err.flags & SL_ERROR_STAGE_FAILED);
	assert_int_equal(store_stage_get(s, id, &rec, NULL), 0);
	assert_int_equal(rec.state, SL_STATE_FAILED);
	sl_stage_free(st);

	/* The writer stopped: the next release removes everything. */
	assert_true(sl_stage_release_id(s, id, NULL) >= 0);
	assert_int_equal(count_entries(sb->root), 0);
	sl_store_close(s);
}

/* ---- Env files: every error path wipes. ---- */

static void write_bytes(const char *path, const char *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(__real_write(fd, buf, len), (ssize_t)len);
	close(fd);
}

/* Reads path as an env file with free() watched; the read must fail with
 * want, leave the list empty and release no block holding the canary. */
static void env_file_fails_wiped(const char *path, int want, const char *what)
{
	struct oci_env_list l = { 0 };
	struct sl_error err = { 0 };
	int r;

	free_scanned = free_with_secret = 0;
	free_armed = true;
	r = oci_env_read_file(&l, path, &err);
	free_armed = false;
	if (r != want)
		fail_msg("%s: got %d (%s), want %d", what, r, err.msg, want);
	assert_int_equal(l.n, 0);
	assert_null(strstr(err.msg, CANARY));
	if (free_scanned == 0)
		fail_msg("%s: nothing was freed: the check did not run", what);
	if (free_with_secret)
		fail_msg("%s: %u freed blocks still held the secret", what, free_with_secret);
	oci_env_list_finish(&l);
}

static void test_env_file_error_paths_wipe(void **state)
{
	static const struct {
		const char *what, *text;
		size_t len;
	} bad[] = {
#define T(s) s, sizeof(s) - 1
		/* A good line first, so that a variable was parsed (and is
		 * dropped) before the failure. */
		{ "missing '='", T("TOKEN=" CANARY "\n" CANARY "\n") },
		{ "bad name", T("TOKEN=" CANARY "\n1BAD=" CANARY "\n") },
		{ "bad name (leading space)", T("TOKEN=" CANARY "\n A=" CANARY "\n") },
		{ "invalid UTF-8", T("TOKEN=" CANARY "\nB=" CANARY "\xff\n") },
		{ "a NUL byte", T("TOKEN=" CANARY "\nB=" CANARY "\0tail\n") },
		{ "bad last line, no newline", T("A=1\nTOKEN=" CANARY "\nexport B=" CANARY) },
#undef T
	};
	struct sandbox *sb = *state;
	char path[400], fifo[400];
	int status;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/bad.env", sb->base);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		write_bytes(path, bad[i].text, bad[i].len);
		env_file_fails_wiped(path, -EBADMSG, bad[i].what);
	}

	/* A read that fails half-way: the first read got the secrets. */
	write_bytes(path, "TOKEN=" CANARY "\n", strlen(CANARY) + 7);
	reads = 0;
	read_fail_at = 2;
	env_file_fails_wiped(path, -EIO, "read error");
	read_fail_at = 0;
	assert_int_equal(reads, 2);

	/* Longer than 1 MiB, through a pipe (a regular file that large is
	 * refused before it is read): the first MiB read holds the secret. */
	snprintf(fifo, sizeof(fifo), "%s/big.fifo", sb->base);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static char chunk[64 * 1024];
		int w = open(fifo, O_WRONLY | O_CLOEXEC);

		signal(SIGPIPE, SIG_DFL);
		memset(chunk, 'x', sizeof(chunk));
		if (w < 0 || __real_write(w, "TOKEN=" CANARY "\nPAD=", strlen(CANARY) + 12) < 0)
			_exit(1);
		for (size_t sent = 0; sent <= OCI_ENV_FILE_MAX; sent += sizeof(chunk))
			if (__real_write(w, chunk, sizeof(chunk)) < 0)
				_exit(0); /* the reader stopped: fine */
		_exit(0);
	}
	env_file_fails_wiped(fifo, -EBADMSG, "longer than 1 MiB");
	assert_int_equal(waitpid(pid, &status, 0), pid);

	/* And the way it should end: read, used, wiped. */
	{
		struct oci_env_list l = { 0 };

		write_bytes(path, "TOKEN=" CANARY "\n", strlen(CANARY) + 7);
		free_scanned = free_with_secret = 0;
		free_armed = true;
		assert_int_equal(oci_env_read_file(&l, path, NULL), 0);
		assert_int_equal(l.n, 1);
		oci_env_list_finish(&l);
		free_armed = false;
		assert_true(free_scanned > 0);
		assert_int_equal(free_with_secret, 0);
	}
}

/* Every way the packaged config.json can be refused: its bytes, the parsed
 * tree (libcjson's blocks included) and the env given are wiped before
 * they are freed, and nothing is left on disk. The secret sits in the
 * packaged env, an annotation and the env given. */
static void test_config_error_paths_wipe(void **state)
{
	static const struct sl_env_var env[] = { { "TOKEN", CANARY } };
	static const struct {
		const char *what, *json;
	} bad[] = {
		{ "not valid JSON half-way", "{\"annotations\":{\"note\":\"" CANARY "\"},\"process\":{\"env\":["
					     "\"P=" CANARY "\"]}, oops" },
		{ "data after the document", "{\"annotations\":{\"note\":\"" CANARY "\"},\"process\":{}} []" },
		{ "top level not an object", "[\"" CANARY "\"]" },
		{ "process not an object", "{\"annotations\":{\"note\":\"" CANARY "\"},\"process\":\"" CANARY "\"}" },
		{ "process.env not an array", "{\"annotations\":{\"note\":\"" CANARY "\"},\"process\":{\"env\":"
					      "\"" CANARY "\"}}" },
		{ "bad uidMappings", "{\"annotations\":{\"note\":\"" CANARY "\"},\"process\":{\"env\":[\"P=" CANARY "\""
				     "]}"
				     ","
				     "\"linux\":{\"uidMappings\":[\"" CANARY "\"]}}" },
		{ "a secret in escapes, then not valid JSON",
		  "{\"annotations\":{\"note\":\"\\u0043\\u0041\\u004e\\u0041\\u0052\\u0059-SECRET-5e1f\"},\"process\":{"
		  "} ,}" },
	};
	struct sandbox *sb = *state;
	struct sl_store *s = NULL;
	struct sl_stage *st = NULL;
	struct sl_oci_options o = { .root = sb->root, .env = env, .n_env = ELEMENTSOF(env) };
	struct sl_error err;
	char bundle[400], p[500];
	int r;

	snprintf(bundle, sizeof(bundle), "%s/bundle", sb->base);
	snprintf(p, sizeof(p), "%s/rootfs/etc/hostname", bundle);
	write_path(p, "box\n", 0644);
	snprintf(p, sizeof(p), "%s/config.json", bundle);
	o.bundle = bundle;
	assert_int_equal(sl_store_open(sb->db, &s, NULL), 0);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		write_path(p, bad[i].json, 0644);
		memset(&err, 0, sizeof(err));
		free_scanned = free_with_secret = 0;
		watch_cjson(true);
		free_armed = true;
		r = sl_oci_stage(s, &o, &st, &err);
		free_armed = false;
		watch_cjson(false);
		if (r != -EBADMSG)
			fail_msg("%s: got %d (%s), want -EBADMSG", bad[i].what, r, err.msg);
		assert_null(strstr(err.msg, CANARY));
		assert_true(free_scanned > 0);
		if (free_with_secret)
			fail_msg("%s: %u freed blocks still held the secret", bad[i].what, free_with_secret);
		assert_int_equal(count_entries(sb->root), 0);
	}

	/* The same watch on a config that is accepted. */
	write_path(p, "{\"annotations\":{\"note\":\"" CANARY "\"},\"process\":{\"env\":[\"P=" CANARY "\"]}}", 0644);
	free_scanned = free_with_secret = 0;
	watch_cjson(true);
	free_armed = true;
	r = sl_oci_stage(s, &o, &st, NULL);
	free_armed = false;
	watch_cjson(false);
	assert_int_equal(r, 0);
	if (free_with_secret)
		fail_msg("accepted config: %u freed blocks still held the secret", free_with_secret);
	assert_int_equal(sl_stage_release(st, NULL), 0);
	sl_stage_free(st);
	sl_store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_intent_synced_before_top_mkdir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_root_synced_after_removal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_named_only_when_whole, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_removal_marks_only_what_is_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secrets_wiped_before_free, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undo_newest_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refilling_directory_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_env_file_error_paths_wipe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_error_paths_wipe, setup, teardown),
	};

	shim_install();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
