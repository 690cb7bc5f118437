/* SPDX-License-Identifier: MIT */
/*
 * sql.c: how the other files of store/ run SQL. It owns the one mapping of
 * SQLite result codes to negative errno (no SQLITE_* leaves store/), the
 * store's error messages, preparing and stepping statements, and the cache
 * of statements a store prepares once and keeps.
 */
#include <errno.h>
#include <string.h>

#include "store-internal.h"

/* An extended result code's low byte is its primary code (SQLITE_IOERR for
 * SQLITE_IOERR_FSYNC). */
#define PRIMARY_RC_MASK 0xff

/* The listing of stages: in flight (the filter repeats the partial index's
 * WHERE clause word for word so that SQLite uses the index), or all. */
#define LIST_SQL(where)                                                 \
	"SELECT " STAGE_COLUMNS                                         \
	", (SELECT total(e.n) FROM entries e WHERE e.stage = s.rowid) " \
	"FROM stages s WHERE " where "(?1 IS NULL OR s.label = ?1) ORDER BY s.rowid"

/* An I/O or open failure, by the errno SQLite met (db may be NULL). */
static int io_errno(sqlite3 *db, int primary)
{
	int e = db ? sqlite3_system_errno(db) : 0;

	if (e == ENOSPC || e == EDQUOT)
		return -ENOSPC;
	if (e == EFBIG) /* the file size limit (ulimit -f) */
		return -EFBIG;
	if (e == EACCES || e == EPERM)
		return -EACCES;
	if (primary == SQLITE_CANTOPEN && e == ENOENT)
		return -ENOENT;
	if (primary == SQLITE_CANTOPEN && (e == ENAMETOOLONG || e == ELOOP))
		return -EINVAL;
	if (e == EMFILE || e == ENFILE)
		return -EAGAIN;
	return primary == SQLITE_CANTOPEN && e > 0 ? -e : -EIO;
}

/* The one place where SQLite result codes become negative errno. */
int store_sqlite_errno(sqlite3 *db, int rc)
{
	int primary = rc & PRIMARY_RC_MASK;

	switch (primary) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_PROTOCOL: /* WAL locks still contended after SQLite's own retries */
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EBADMSG;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_TOOBIG:
		return -E2BIG;
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
		return io_errno(db, primary);
	default:
		return -ENOTRECOVERABLE;
	}
}

/* "what: store: reason", for an errno code; returns code. */
int store_err(struct sl_error *reterr, int code, const char *what)
{
	return sl_err(reterr, code, "%s: store: %s", what, strerror(-code));
}

/* As store_err(), for SQLite's result code rc on s. */
int store_fail(struct sl_store *s, int rc, struct sl_error *reterr, const char *what)
{
	return store_err(reterr, store_sqlite_errno(s->db, rc), what);
}

/* Copies a column's len bytes (src may be NULL) into dst as a string, cut
 * to fit size bytes with its NUL. */
void store_copy_text(char *dst, size_t size, const unsigned char *src, int len)
{
	size_t n = src && len > 0 ? (size_t)len : 0;

	assert(size > 0);
	if (n >= size)
		n = size - 1;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

int store_exec(struct sl_store *s, const char *sql)
{
	return store_sqlite_errno(s->db, sqlite3_exec(s->db, sql, NULL, NULL, NULL));
}

int store_prepare(struct sl_store *s, const char *sql, sqlite3_stmt **ret)
{
	return store_sqlite_errno(s->db, sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL));
}

/* Steps a statement that returns no row, then resets it and clears its
 * bindings for the next use. */
int store_step_done(struct sl_store *s, sqlite3_stmt *stmt)
{
	int rc = sqlite3_step(stmt);
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	return rc == SQLITE_DONE ? 0 : store_sqlite_errno(s->db, rc);
}

/* Steps sql (one row of one integer column) into *ret; returns SQLite's
 * code of the step: SQLITE_ROW when *ret was read. */
int store_read_int(struct sl_store *s, const char *sql, int64_t *ret)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	return rc;
}

void store_finalize_statements(struct sl_store *s)
{
	for (size_t i = 0; i < ELEMENTSOF(s->cached); i++) {
		sqlite3_finalize(s->cached[i]);
		s->cached[i] = NULL;
	}
}

/* The text of kept statement id. */
const char *store_cached_text(enum cached_sql id)
{
	static const char *const sql[SQL_COUNT_] = {
		[SQL_INS_ENTRY] = "INSERT INTO entries (stage, seq, path, kind, state) VALUES (?, ?, ?, ?, 0)",
		[SQL_INS_BATCH] = "INSERT INTO entries (stage, seq, path, kind, state, n) "
				  "VALUES (?, ?, ?, " STRINGIFY(STORE_ROW_BATCH) ", 0, ?)",
		[SQL_CONFIRM] = "UPDATE stages SET dev = ?, ino = ?, btime = ? WHERE rowid = ? AND state = " ST(STAGING) " "
				"AND claim_pid IS NULL",
		[SQL_TRANSITION] = "UPDATE stages SET state = ?, updated_at = ?, reason = coalesce(?, reason) "
				   "WHERE rowid = ? AND ((1 << state) & ?) != 0",
		[SQL_PAGE_ASC] = "SELECT seq, path, kind, state, n FROM entries WHERE stage = ? AND seq > ? "
				 "ORDER BY seq ASC LIMIT " STRINGIFY(STORE_PAGE_ENTRIES),
		[SQL_PAGE_DESC] = "SELECT seq, path, kind, state, n FROM entries WHERE stage = ? AND seq < ? "
				  "ORDER BY seq DESC LIMIT " STRINGIFY(STORE_PAGE_ENTRIES),
		[SQL_LIST_IN_FLIGHT] = LIST_SQL(IN_FLIGHT_SQL " AND "),
		[SQL_LIST_ALL] = LIST_SQL(""),
		[SQL_IN_FLIGHT_ROWIDS] = "SELECT rowid FROM stages WHERE " IN_FLIGHT_SQL " ORDER BY rowid",
		[SQL_GET_ROWID] = "SELECT " STAGE_COLUMNS " FROM stages s WHERE s.rowid = ?",
		[SQL_NAME] = "SELECT label, root, topdir FROM stages WHERE id = ?",
	};

	assert(id < SQL_COUNT_);
	return sql[id];
}

/* Prepares statement id on its first use (a `list` or an empty `recover`
 * prepares none of these) and keeps it until the store closes. */
int store_cached(struct sl_store *s, enum cached_sql id, sqlite3_stmt **ret)
{
	assert(id < SQL_COUNT_);
	if (!s->cached[id]) {
		int r = store_prepare(s, store_cached_text(id), &s->cached[id]);

		if (r < 0)
			return r;
	}
	*ret = s->cached[id];
	return 0;
}

void store_tune_process(void)
{
	/* Before SQLite is initialised; an error (it was) changes nothing. */
	(void)sqlite3_config(SQLITE_CONFIG_PAGECACHE, NULL, 0, 0);
	/* No count of the bytes SQLite holds, which nothing here reads: the
	 * count takes a global mutex around every malloc and free (about a
	 * tenth of an empty recover's instructions inside SQLite). */
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

const char *sl_store_sqlite_version(void)
{
	return sqlite3_libversion();
}
