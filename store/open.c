/* SPDX-License-Identifier: MIT */
/*
 * open.c: opening and closing a store. It owns the SQLite connection's
 * life: read-write through the "stagelog" VFS, or, for another user's
 * store, read-only and defensively behind an authorizer; the retried setup
 * within one deadline; and, at close, the WAL's bound. The file itself is
 * judged before this opens it (file.c), the schema settled by schema.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store-internal.h"

/* The most bytes one byte of a path takes in a URI: "%XX". */
#define URI_ESCAPE_MAX 3

/*
 * Readers only, on another user's store (SL_STORE_OPEN_INSPECT): whatever
 * its schema holds, a statement may read and nothing else. The connection
 * is read-only already; this is the second wall, and it also keeps out
 * what a read-only connection would still do: ATTACH another file (which
 * may create it), or change a setting of the connection.
 */
static int authorize_read(void *userdata, int action, const char *a, const char *b, const char *c, const char *d)
{
	(void)userdata, (void)a, (void)c, (void)d;
	switch (action) {
	case SQLITE_SELECT:
	case SQLITE_READ:
	case SQLITE_FUNCTION:
	case SQLITE_RECURSIVE:
	case SQLITE_TRANSACTION: /* a read snapshot; a read-only store refuses writes */
	case SQLITE_SAVEPOINT:
		return SQLITE_OK;
	case SQLITE_PRAGMA:
		/* A query (PRAGMA x), never a setting (PRAGMA x=y); the one
		 * with an argument is check's quick_check(N), which reads. */
		return !b || (a && strcmp(a, "quick_check") == 0) ? SQLITE_OK : SQLITE_DENY;
	case SQLITE_UPDATE:
		/* SQLite asks this of the schema table's columns while it
		 * loads the schema for a first statement; the connection is
		 * read-only, so no update could happen anyway. */
		return a && strcmp(a, "sqlite_master") == 0 ? SQLITE_IGNORE : SQLITE_DENY;
	default:
		return SQLITE_DENY;
	}
}

/* Finalizes the kept statements and closes the connection. */
static void close_db(struct sl_store *s)
{
	store_finalize_statements(s);
	sqlite3_close_v2(s->db);
}

/*
 * Keeps the WAL within its bound, on the way out of a process that wrote
 * past it: a passive checkpoint (a sync of the WAL and one of the database
 * file; it waits for nobody and gives up where a reader still needs old
 * frames), then, if every frame went back, one small write that restarts
 * the WAL from its start. The restart syncs the WAL's new header (SQLite
 * does, whoever writes first after a checkpoint), here rather than in the
 * next process to stage.
 */
static void bound_wal(struct sl_store *s)
{
	int64_t version = 0;
	int nlog = 0, nckpt = 0, r;

	if (s->readonly || s->commits == 0 || s->wal_frames < WAL_BOUND_FRAMES)
		return;
	/* Optional work on the way out: it never waits for the store. The
	 * passive checkpoint does not; the restart write gets a deadline of
	 * now, so a store busy with another writer is left to the next one. */
	s->deadline_held = true;
	s->deadline = store_mono_ms();
	if (sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt) != SQLITE_OK ||
	    nlog != nckpt || store_begin(s, false) < 0)
		return;
	/* The write: the schema version, read and written back under the
	 * write lock, so that it is the same value whoever migrated last. */
	r = store_read_int(s, "PRAGMA user_version", &version) == SQLITE_ROW ? 0 : -EIO;
	if (r == 0)
		r = store_set_user_version(s, version);
	(void)store_txn_finish(s, r);
}

void sl_store_close(struct sl_store *s)
{
	if (!s)
		return;
	bound_wal(s);
	close_db(s);
	free(s);
}

/*
 * The URI that opens another user's store for reading only. SQLite's
 * read-only mode alone still creates a missing -wal and -shm (and opens an
 * existing -shm for writing) when the directory lets it, as it does root:
 *
 * - a -wal that holds data is read through the -shm beside it, mapped
 *   read-only (readonly_shm=1); without a -shm the store is refused, as
 *   SQLite would create one. stagelog keeps both files after it closes
 *   (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE: SQLite's checkpoint and delete at
 *   the last close is off), so an owner's store normally has both;
 * - with no WAL data, every committed row is in the database file, and
 *   immutable=1 reads it alone: no locks, no -wal or -shm. An owner that
 *   checkpoints during the read (at close past WAL_BOUND_FRAMES, or in a
 *   commit past WAL_HARD_FRAMES) could make it see a mixture, so the
 *   reader may then fail as a corrupt store; it never writes.
 *
 * Every byte but the unreserved ones is %-escaped, so no path can add a
 * parameter. Returns NULL when out of memory.
 */
static char *readonly_uri(const char *path, const struct store_found *found)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *params = found->wal_data ? "?mode=ro&readonly_shm=1" : "?mode=ro&immutable=1";
	size_t len = strlen(path);
	char *uri = malloc(strlen("file://") + URI_ESCAPE_MAX * len + strlen(params) + 1), *p;

	if (!uri)
		return NULL;
	p = stpcpy(uri, path[0] == '/' ? "file://" : "file:");
	for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
		if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
		    strchr("/._-~", *c)) {
			*p++ = (char)*c;
		} else {
			*p++ = '%';
			*p++ = hex[*c >> 4];
			*p++ = hex[*c & 0xf];
		}
	}
	strcpy(p, params);
	return uri;
}

/*
 * Opens the SQLite connection: read-write, or, for another user's store
 * (s->readonly), read-only and defensively. Never SQLITE_OPEN_CREATE: the
 * file exists (store_prepare_file() made it or found it), and a store that
 * vanished since is not recreated here.
 */
static int open_db(struct sl_store *s, const char *path, const struct store_found *found, struct sl_error *reterr)
{
	_cleanup_free_ char *uri = NULL;
	int rc, r = 0;

	if (!s->readonly) {
		rc = store_vfs_register();
		if (rc != SQLITE_OK)
			return store_sqlite_errno(NULL, rc);
		rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX,
				     STORE_VFS_NAME);
		return store_sqlite_errno(s->db, rc);
	}
	if (found->wal_data && !found->shm)
		return sl_err(reterr, -EPERM,
			      "cannot read store: %s: its -wal holds data but it has no -shm, which reading it "
			      "would create, and the store is another user's: run stagelog as that user",
			      path);
	uri = readonly_uri(path, found);
	if (!uri)
		return -ENOMEM;
	rc = sqlite3_open_v2(uri, &s->db,
			     SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_errno(s->db, rc);
	/* Whatever the schema holds runs as root: a trigger or view that
	 * calls a function with side effects, a virtual table. Defensive mode
	 * keeps the schema and the file's raw pages from being changed, an
	 * untrusted schema may call only innocuous functions, triggers and
	 * views (stagelog's schema has neither) do not run at all, and no
	 * other database can be attached. */
	if (sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL) != SQLITE_OK ||
	    sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL) != SQLITE_OK ||
	    sqlite3_db_config(s->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL) != SQLITE_OK ||
	    sqlite3_db_config(s->db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, NULL) != SQLITE_OK ||
	    sqlite3_set_authorizer(s->db, authorize_read, NULL) != SQLITE_OK)
		r = -ENOTRECOVERABLE;
	sqlite3_limit(s->db, SQLITE_LIMIT_ATTACHED, 0);
	return r;
}

/*
 * Runs store_setup() until the store is not busy, within one deadline.
 * Processes opening a new store race: for the switch to WAL (an exclusive
 * lock, and SQLite returns SQLITE_BUSY there without always calling the
 * busy handler), for the first migration, and through WAL recovery
 * (SQLITE_BUSY_RECOVERY). Each busy attempt is undone and the whole setup
 * retried, every wait within the one deadline. e holds the last attempt's
 * detail.
 */
static int setup_until_ready(struct sl_store *s, const char *path, struct sl_error *e)
{
	int r;

	s->deadline_held = true;
	s->deadline = store_mono_ms() + BUSY_TIMEOUT_MS;
	for (;;) {
		sl_err_clear(e);
		r = store_setup(s, path, e);
		if (r != -EBUSY || store_mono_ms() >= s->deadline)
			break;
		store_rollback(s);
		store_finalize_statements(s);
		usleep(BUSY_RETRY_US);
	}
	s->deadline_held = false;
	return r;
}

/* Opens the connection to the judged file, configures it and sets the
 * store up; e gets the detail of a failure. */
static int open_connection(struct sl_store *s, const char *path, const struct store_found *found, struct sl_error *e)
{
	int r = open_db(s, path, found, e);

	if (r < 0)
		return r;
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_handler(s->db, store_busy_wait, s);
	/* The last connection to close would checkpoint the WAL and delete
	 * it: two more syncs for every short-lived `stagelog` process. The WAL
	 * stays instead; automatic checkpoints and the bound at close keep it
	 * short. */
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	return setup_until_ready(s, path, e);
}

/* Reports a failed open (the detail in e, else r in words), closes s and
 * returns r. */
static int open_failed(struct sl_store *s, const char *path, int r, const struct sl_error *e, struct sl_error *reterr)
{
	if (e->code)
		sl_err(reterr, e->code, "%s", e->msg);
	else if (r == -EBUSY)
		sl_err(reterr, r, "cannot open store: %s: still busy after %d s", path, BUSY_TIMEOUT_S);
	else
		sl_err(reterr, r, "cannot open store: %s: %s", path, strerror(-r));
	sl_store_close(s);
	return r;
}

int sl_store_open_flags(const char *path, unsigned flags, struct sl_store **ret, struct sl_error *reterr)
{
	struct sl_error e = { 0 };
	struct store_found found = { 0 };
	struct sl_store *s;
	int r;

	if (!path || !*path || !ret || (flags & ~(unsigned)(SL_STORE_OPEN_NOCREATE | SL_STORE_OPEN_INSPECT)))
		return sl_err(reterr, -EINVAL, "cannot open store: no path");
	if (flags & SL_STORE_OPEN_INSPECT)
		flags |= SL_STORE_OPEN_NOCREATE;
	s = calloc(1, sizeof(*s));
	if (!s)
		return sl_err(reterr, -ENOMEM, "cannot open store: %s: %s", path, strerror(ENOMEM));
	r = store_prepare_file(path, flags, &s->identity, &found, reterr);
	if (r < 0) {
		free(s);
		return r;
	}
	s->readonly = found.foreign;
	r = open_connection(s, path, &found, &e);
	if (r < 0)
		return open_failed(s, path, r, &e, reterr);
	*ret = s;
	return 0;
}

int sl_store_open(const char *path, struct sl_store **ret, struct sl_error *reterr)
{
	return sl_store_open_flags(path, 0, ret, reterr);
}

int sl_store_default_path(char *buf, size_t size)
{
	const char *env = getenv("STAGELOG_DB"), *state, *home;
	int n;

	if (env && *env)
		n = snprintf(buf, size, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(buf, size, "/var/lib/stagelog/stagelog.db");
	else if ((state = getenv("XDG_STATE_HOME")) && *state == '/')
		n = snprintf(buf, size, "%s/stagelog/stagelog.db", state);
	else if ((home = getenv("HOME")) && *home)
		n = snprintf(buf, size, "%s/.local/state/stagelog/stagelog.db", home);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
