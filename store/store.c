/* SPDX-License-Identifier: MIT */
/*
 * store.c: the SQLite log. Schema, migrations, and every statement the rest
 * of stagelog runs. SQLite's result codes become negative errno here and
 * nowhere else.
 */
#include <assert.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "fd-util.h"
#include "store-private.h"

#define BUSY_TIMEOUT_MS 5000
/* Records a gc deletes per write transaction (why batches: store_gc()). */
#define GC_BATCH 500
/* The ids a prefix lookup reads at most: it only needs to tell one match
 * from several and to fill a caller's short candidate list, and a short
 * prefix in a large store must not read every id. */
#define RESOLVE_MAX_IDS 17
/* The pause between two tries of a BEGIN IMMEDIATE or an open that SQLite
 * failed with SQLITE_BUSY without calling busy_wait(): about as long as a
 * stagelog write transaction lasts. */
#define BUSY_RETRY_US 1000
/* PRAGMA synchronous's own numbers, for sync_level. */
enum { SYNC_NORMAL = 1, SYNC_FULL = 2 };
/*
 * The WAL's bound (docs/design.md, "Store tuning"). Every process that
 * opens the store first reads every frame since the WAL last restarted, so
 * its length is what a `list` or an empty `recover` costs. A writing
 * process that leaves more than WAL_BOUND_FRAMES checkpoints on its way
 * out; a connection that lives on (a gateway linking the library) does so
 * within a commit once past WAL_HARD_FRAMES.
 */
#define WAL_BOUND_FRAMES 64
#define WAL_HARD_FRAMES 4000

/*
 * The states as SQL sees them. SQL text cannot name an enum value, so each
 * gets a number macro that a static_assert ties to the enum; the state
 * sets below are built from these, once as SQL and once as a mask, so the
 * SQL lists and sl_state_in_flight() cannot drift apart.
 */
#define ST_STAGING 0
#define ST_READY 1
#define ST_RELEASING 2
#define ST_RELEASED 3
#define ST_ABORTED 4
#define ST_RECOVERING 5
#define ST_RECOVERED 6
#define ST_FAILED 7
#define ST_PUBLISHED 8
static_assert(ST_STAGING == SL_STATE_STAGING && ST_READY == SL_STATE_READY && ST_RELEASING == SL_STATE_RELEASING &&
		      ST_RELEASED == SL_STATE_RELEASED && ST_ABORTED == SL_STATE_ABORTED &&
		      ST_RECOVERING == SL_STATE_RECOVERING && ST_RECOVERED == SL_STATE_RECOVERED &&
		      ST_FAILED == SL_STATE_FAILED && ST_PUBLISHED == SL_STATE_PUBLISHED && SL_STATE_COUNT_ == 9,
	      "the ST_* numbers are the enum sl_state values");
#define ST(x) STRINGIFY(ST_##x)
#define BIT(x) (1u << ST_##x)

/* In flight: may own files on disk. The order of the SQL list is the one
 * the partial index stages_inflight was created with, which a query must
 * repeat for SQLite to use it. */
#define IN_FLIGHT_SQL "state IN (" ST(STAGING) ", " ST(READY) ", " ST(RELEASING) ", " ST(RECOVERING) ", " ST(FAILED) ")"
#define IN_FLIGHT_MASK (BIT(STAGING) | BIT(READY) | BIT(RELEASING) | BIT(RECOVERING) | BIT(FAILED))
/* Finished: every other state (index stages_finished). */
#define FINISHED_SQL "state IN (" ST(RELEASED) ", " ST(ABORTED) ", " ST(RECOVERED) ", " ST(PUBLISHED) ")"
#define FINISHED_MASK (BIT(RELEASED) | BIT(ABORTED) | BIT(RECOVERED) | BIT(PUBLISHED))
static_assert((IN_FLIGHT_MASK & FINISHED_MASK) == 0 && (IN_FLIGHT_MASK | FINISHED_MASK) == (1u << SL_STATE_COUNT_) - 1,
	      "every state is either in flight or finished");

/* A stage record's columns, in the order read_record() reads them. */
#define STAGE_COLUMNS                                                                                       \
	"s.rowid, s.id, s.label, s.root, s.topdir, s.state, s.owner_boot, s.owner_pid, s.owner_start, "    \
	"s.owner_pidns, s.claim_boot, s.claim_pid, s.claim_start, s.claim_pidns, s.dev, s.ino, s.created_at, " \
	"s.updated_at, s.reason, s.btime, s.root_ino, s.root_btime, s.dest, s.root_volatile"
#define STAGE_NCOLUMNS 24

/* The listing of stages: in flight (the filter repeats the partial index's
 * WHERE clause word for word so that SQLite uses the index), or all. */
#define LIST_SQL(where)                                                                       \
	"SELECT " STAGE_COLUMNS ", (SELECT count(*) FROM entries e WHERE e.stage = s.rowid) " \
	"FROM stages s WHERE " where "(?1 IS NULL OR s.label = ?1) ORDER BY s.rowid"

enum cached_sql {
	SQL_INS_ENTRY,
	SQL_CONFIRM,
	SQL_TRANSITION,
	SQL_PAGE_ASC,
	SQL_PAGE_DESC,
	SQL_LIST_IN_FLIGHT,
	SQL_LIST_ALL,
	SQL_COUNT_
};

struct sl_store {
	sqlite3 *db;
	int sync_level; /* what PRAGMA synchronous is now: SYNC_NORMAL or SYNC_FULL */
	bool naive;
	bool readonly; /* another user's store, opened by root to inspect it */
	bool txn_durable;
	bool deadline_held; /* a begin() or the open owns s->deadline */
	int64_t deadline;   /* CLOCK_MONOTONIC ms: when a busy store is reported */
	unsigned long commits, durable_commits;
	int wal_frames; /* frames in the WAL after this connection's last commit */
	sqlite3_stmt *cached[SQL_COUNT_]; /* see cached() */
	struct store_identity identity;
};

static void sqlite3_finalizep(sqlite3_stmt **stmt)
{
	if (*stmt)
		sqlite3_finalize(*stmt);
}

/* The one place where SQLite result codes become negative errno. */
static int sqlite_to_errno(sqlite3 *db, int rc)
{
	switch (rc & 0xff) {
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
	case SQLITE_CANTOPEN: {
		int e = db ? sqlite3_system_errno(db) : 0;
		if (e == ENOSPC || e == EDQUOT)
			return -ENOSPC;
		if (e == EFBIG) /* the file size limit (ulimit -f) */
			return -EFBIG;
		if (e == EACCES || e == EPERM)
			return -EACCES;
		if ((rc & 0xff) == SQLITE_CANTOPEN && e == ENOENT)
			return -ENOENT;
		if ((rc & 0xff) == SQLITE_CANTOPEN && (e == ENAMETOOLONG || e == ELOOP))
			return -EINVAL;
		if (e == EMFILE || e == ENFILE)
			return -EAGAIN;
		return (rc & 0xff) == SQLITE_CANTOPEN && e > 0 ? -e : -EIO;
	}
	default:
		return -ENOTRECOVERABLE;
	}
}

int store_err(struct sl_error *reterr, int code, const char *what)
{
	return sl_err(reterr, code, "%s: store: %s", what, strerror(-code));
}

static int fail(struct sl_store *s, int rc, struct sl_error *reterr, const char *what)
{
	return store_err(reterr, sqlite_to_errno(s->db, rc), what);
}

static const char *const state_names[SL_STATE_COUNT_] = {
	[SL_STATE_STAGING] = "staging",       [SL_STATE_READY] = "ready",
	[SL_STATE_RELEASING] = "releasing",   [SL_STATE_RELEASED] = "released",
	[SL_STATE_ABORTED] = "aborted",       [SL_STATE_RECOVERING] = "recovering",
	[SL_STATE_RECOVERED] = "recovered",   [SL_STATE_FAILED] = "failed",
	[SL_STATE_PUBLISHED] = "published",
};

const char *sl_state_name(enum sl_state state)
{
	return (unsigned)state < SL_STATE_COUNT_ ? state_names[state] : NULL;
}

int sl_state_in_flight(enum sl_state state)
{
	return (unsigned)state < SL_STATE_COUNT_ && (IN_FLIGHT_MASK >> state & 1u);
}

const char *sl_kind_name(enum sl_kind kind)
{
	switch (kind) {
	case SL_KIND_DIR:
		return "dir";
	case SL_KIND_FILE:
		return "file";
	case SL_KIND_SYMLINK:
		return "symlink";
	}
	return "unknown";
}

/*
 * Schema migrations: migrations[i] takes user_version i to i + 1. States
 * are stored as integers (enum sl_state) and the in-flight index is
 * partial, so `list` reads only in-flight rows however many finished ones
 * the store holds. Entry paths are BLOBs: raw bytes, never re-encoded.
 */
static const char *const migrations[] = {
	"CREATE TABLE stages ("
	"  rowid INTEGER PRIMARY KEY,"
	"  id TEXT NOT NULL UNIQUE,"
	"  label TEXT NOT NULL,"
	"  root BLOB NOT NULL,"
	"  topdir TEXT NOT NULL,"
	"  state INTEGER NOT NULL,"
	"  owner_boot TEXT NOT NULL,"
	"  owner_pid INTEGER NOT NULL,"
	"  owner_start INTEGER NOT NULL,"
	"  owner_pidns INTEGER NOT NULL,"
	"  claim_boot TEXT, claim_pid INTEGER, claim_start INTEGER, claim_pidns INTEGER,"
	"  dev INTEGER, ino INTEGER,"
	"  created_at INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL,"
	"  reason TEXT);"
	"CREATE INDEX stages_inflight ON stages(rowid) WHERE " IN_FLIGHT_SQL ";"
	"CREATE INDEX stages_finished ON stages(updated_at) WHERE " FINISHED_SQL ";"
	"CREATE TABLE entries ("
	"  stage INTEGER NOT NULL,"
	"  seq INTEGER NOT NULL,"
	"  path BLOB NOT NULL,"
	"  kind INTEGER NOT NULL,"
	"  state INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY (stage, seq)) WITHOUT ROWID;",
	/* 2: identities that survive a reboot. st_dev is renumbered when a
	 * disk is attached elsewhere, so the top directory is identified by
	 * its inode and birth time; the root is recorded the same way, so a
	 * root path that later leads to another directory is refused; and a
	 * publish records its destination before it renames. */
	"ALTER TABLE stages ADD COLUMN btime INTEGER;"
	"ALTER TABLE stages ADD COLUMN root_ino INTEGER;"
	"ALTER TABLE stages ADD COLUMN root_btime INTEGER;"
	"ALTER TABLE stages ADD COLUMN dest BLOB;",
	/* 3: whether the root was memory-backed (tmpfs, ramfs) when the stage
	 * began: such a root's contents cannot outlive the boot, so a stage of
	 * an earlier boot there is gone with it (docs/design.md, "Identity").
	 * NULL (a record of schema 2) is unknown, never volatile. */
	"ALTER TABLE stages ADD COLUMN root_volatile INTEGER;",
};

int sl_store_schema_version(void)
{
	return (int)ELEMENTSOF(migrations);
}

const char *sl_store_sqlite_version(void)
{
	return sqlite3_libversion();
}

static void copy_text(char *dst, size_t size, const unsigned char *src, int len)
{
	size_t n = src && len > 0 ? (size_t)len : 0;

	if (n >= size)
		n = size - 1;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

static int exec(struct sl_store *s, const char *sql)
{
	return sqlite_to_errno(s->db, sqlite3_exec(s->db, sql, NULL, NULL, NULL));
}

static int set_sync(struct sl_store *s, int level)
{
	int r;

	if (s->sync_level == level)
		return 0;
	r = exec(s, level == SYNC_FULL ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
	if (r == 0)
		s->sync_level = level;
	return r;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Waits for a busy store: short sleeps first, since a stagelog write
 * transaction lasts well under a millisecond, growing to 2 ms. SQLite's own
 * handler sleeps 1, 2, 5, 10, 15, 20, 25 ms..., which leaves concurrent
 * stagers mostly asleep. The wait ends at s->deadline: one deadline for a
 * whole begin() with its retries, one for the whole open (creation, WAL
 * switch and migration), or BUSY_TIMEOUT_MS for any other statement, so
 * "busy" is reported after BUSY_TIMEOUT_MS, not a multiple.
 */
static int busy_wait(void *userdata, int count)
{
	static const unsigned steps_us[] = {50, 100, 200, 400, 800, 1000, 2000};
	struct sl_store *s = userdata;
	int64_t now = mono_ms();

	if (count == 0 && !s->deadline_held)
		s->deadline = now + BUSY_TIMEOUT_MS;
	if (now >= s->deadline)
		return 0;
	usleep(steps_us[count < (int)ELEMENTSOF(steps_us) ? count : (int)ELEMENTSOF(steps_us) - 1]);
	return 1;
}

/* BEGIN IMMEDIATE takes the write lock up front, so a transaction never
 * fails half-way with SQLITE_BUSY on its first write. The busy handler
 * waits; a few retries cover the cases where SQLite returns BUSY without
 * calling it; all within one deadline. */
static int begin(struct sl_store *s, bool durable)
{
	bool outer = s->deadline_held; /* the open's deadline covers a migration */
	int r;

	/* SQLite reads the safety level when a transaction starts and refuses
	 * to change it inside one, so it is chosen here. */
	durable = durable || s->naive;
	r = set_sync(s, durable ? SYNC_FULL : SYNC_NORMAL);
	if (r < 0)
		return r;
	s->txn_durable = durable;
	if (!outer) {
		s->deadline_held = true;
		s->deadline = mono_ms() + BUSY_TIMEOUT_MS;
	}
	for (;;) {
		r = exec(s, "BEGIN IMMEDIATE");
		if (r != -EBUSY || mono_ms() >= s->deadline)
			break;
		usleep(BUSY_RETRY_US);
	}
	s->deadline_held = outer;
	return r;
}

static void rollback(struct sl_store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Commits the open transaction. Durable ones (begun with durable) sync the
 * WAL before they return (synchronous=FULL); the others only reach the WAL
 * and become durable with the next durable commit or checkpoint. */
static int commit(struct sl_store *s)
{
	int r;

	r = sl_fault_step();
	if (r == 0)
		r = exec(s, "COMMIT");
	if (r < 0) {
		rollback(s);
		return r;
	}
	s->commits++;
	if (s->txn_durable)
		s->durable_commits++;
	return 0;
}

/* The one way a write transaction ends: committed when r is 0, else
 * rolled back. Returns r, or commit's error. */
static int finish(struct sl_store *s, int r)
{
	if (r == 0)
		r = commit(s);
	if (r < 0)
		rollback(s);
	return r;
}

/* As finish(), with the message: what (the operation) and the store's
 * error, or, for -ESTALE, that the stage changed state meanwhile. */
static int end_txn(struct sl_store *s, int r, struct sl_error *reterr, const char *what)
{
	r = finish(s, r);
	if (r == -ESTALE)
		return sl_err(reterr, r, "%s: record: it changed state meanwhile", what);
	return r < 0 ? store_err(reterr, r, what) : 0;
}

static int prepare(struct sl_store *s, const char *sql, sqlite3_stmt **ret)
{
	return sqlite_to_errno(s->db, sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL));
}

static int step_done(struct sl_store *s, sqlite3_stmt *stmt)
{
	int rc = sqlite3_step(stmt);
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
	return rc == SQLITE_DONE ? 0 : sqlite_to_errno(s->db, rc);
}

/*
 * Reads the schema version and refuses a store this program must not touch.
 * The version and the table count come from ONE statement, so from one
 * snapshot: read apart, a creator committing its first migration between
 * the two reads made a brand-new store look like someone else's database
 * (version 0, tables present). A migration sets both in one transaction,
 * so version 0 with tables in one snapshot is really a foreign database.
 */
/* Steps sql (one row of one integer column) into *ret; returns SQLite's
 * code of the step: SQLITE_ROW when *ret was read. */
static int read_int(struct sl_store *s, const char *sql, int64_t *ret)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	return rc;
}

static int read_schema(struct sl_store *s, const char *path, int64_t *ret_version, struct sl_error *reterr)
{
	int64_t version = 0, tables = 0;
	int rc;

	/* Two plain statements (the table-valued pragma_user_version in one
	 * SELECT costs a virtual table's setup in every process), each its own
	 * snapshot outside a transaction: tables first. A first migration
	 * commits its tables and its version together, so tables seen before
	 * it are seen with a version after it; the other order would take a
	 * store being created for a foreign one. */
	rc = read_int(s, "SELECT count(*) FROM sqlite_schema", &tables);
	if (rc == SQLITE_ROW)
		rc = read_int(s, "PRAGMA user_version", &version);
	if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT || rc == SQLITE_DONE)
		/* In words: "Bad message" tells a user nothing. */
		return sl_err(reterr, -EBADMSG,
			      "cannot open store: %s: not a stagelog store (corrupt or another kind of file)", path);
	if (rc != SQLITE_ROW)
		return sqlite_to_errno(s->db, rc);
	if (version > (int64_t)ELEMENTSOF(migrations))
		return sl_err(reterr, -EPROTO, "cannot open store: %s: schema version %lld is newer than this program's %d",
			      path, (long long)version, sl_store_schema_version());
	if (version == 0 && tables > 0)
		return sl_err(reterr, -EBADMSG, "cannot open store: %s: a SQLite database, but not a stagelog store",
			      path);
	*ret_version = version;
	return 0;
}

/* Brings the schema up to date inside BEGIN IMMEDIATE. The version is read
 * again under the write lock: another process may have migrated (or a
 * newer stagelog written) since the first read, and only the writer that
 * sees the old version under the lock applies a migration. */
static int migrate(struct sl_store *s, const char *path, struct sl_error *reterr)
{
	int64_t version = 0;
	int r;

	r = begin(s, true);
	if (r == 0)
		r = read_schema(s, path, &version, reterr);
	for (int64_t v = version; r == 0 && v < (int64_t)ELEMENTSOF(migrations); v++) {
		char sql[64];

		r = exec(s, migrations[v]);
		/* A PRAGMA takes no bound parameter; v is our own counter. */
		snprintf(sql, sizeof(sql), "PRAGMA user_version=%lld", (long long)v + 1);
		if (r == 0)
			r = exec(s, sql);
	}
	return finish(s, r);
}

/* Switches the store to WAL. The switch needs an exclusive lock, and SQLite
 * answers a switch it could not make with the mode it kept rather than
 * always with SQLITE_BUSY: anything but "wal" on a writable store is a
 * busy store, retried by the caller within the open's deadline. */
static int set_wal(struct sl_store *s)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	const unsigned char *mode;
	int rc;

	rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW)
		return sqlite_to_errno(s->db, rc == SQLITE_DONE ? SQLITE_BUSY : rc);
	mode = sqlite3_column_text(st, 0);
	if (mode && strcmp((const char *)mode, "wal") == 0)
		return 0;
	return sqlite3_db_readonly(s->db, "main") == 1 ? -EROFS : -EBUSY;
}

static void finalize_statements(struct sl_store *s)
{
	for (size_t i = 0; i < ELEMENTSOF(s->cached); i++) {
		sqlite3_finalize(s->cached[i]);
		s->cached[i] = NULL;
	}
}

/* Prepares statement id on its first use (a `list` or an empty `recover`
 * prepares none of these) and keeps it until the store closes. */
static const char *cached_text(enum cached_sql id)
{
	static const char *const sql[SQL_COUNT_] = {
		[SQL_INS_ENTRY] = "INSERT INTO entries (stage, seq, path, kind, state) VALUES (?, ?, ?, ?, 0)",
		[SQL_CONFIRM] = "UPDATE stages SET dev = ?, ino = ?, btime = ? WHERE rowid = ? AND state = " ST(STAGING) " "
				"AND claim_pid IS NULL",
		[SQL_TRANSITION] = "UPDATE stages SET state = ?, updated_at = ?, reason = coalesce(?, reason) "
				   "WHERE rowid = ? AND ((1 << state) & ?) != 0",
		[SQL_PAGE_ASC] = "SELECT seq, path, kind, state FROM entries WHERE stage = ? AND seq > ? "
				 "ORDER BY seq ASC LIMIT " STRINGIFY(SL_PAGE_ENTRIES),
		[SQL_PAGE_DESC] = "SELECT seq, path, kind, state FROM entries WHERE stage = ? AND seq < ? "
				  "ORDER BY seq DESC LIMIT " STRINGIFY(SL_PAGE_ENTRIES),
		[SQL_LIST_IN_FLIGHT] = LIST_SQL(IN_FLIGHT_SQL " AND "),
		[SQL_LIST_ALL] = LIST_SQL(""),
	};

	assert(id < SQL_COUNT_);
	return sql[id];
}

static int cached(struct sl_store *s, enum cached_sql id, sqlite3_stmt **ret)
{
	if (!s->cached[id]) {
		int r = prepare(s, cached_text(id), &s->cached[id]);

		if (r < 0)
			return r;
	}
	*ret = s->cached[id];
	return 0;
}

/*
 * Readers only, on another user's store (SL_STORE_OPEN_INSPECT): whatever
 * its schema holds, a statement may read and nothing else. The connection
 * is read-only already; this is the second wall, and it also keeps out
 * what a read-only connection would still do: ATTACH another file (which
 * may create it), or change a setting of the connection.
 */
static int authorize_read(void *userdata, int action, const char *a, const char *b, const char *c,
			  const char *d)
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

/*
 * The setup of another user's store, opened read-only to inspect it (see
 * sl_store_open_flags()): no switch to WAL, no migration (its authorizer
 * lets only reads run). A store of an older schema cannot be read by this
 * program's queries, and upgrading it would write it: its owner does that.
 */
static int setup_readonly(const char *path, int64_t version, struct sl_error *reterr)
{
	if (version < (int64_t)ELEMENTSOF(migrations))
		return sl_err(reterr, -EPERM,
			      "cannot read store: %s: schema version %lld is older than this program's %d, and "
			      "the store is another user's: upgrade it by running stagelog as that user",
			      path, (long long)version, sl_store_schema_version());
	return 0;
}

/* After every commit: nframes is the WAL's length in frames. */
static int wal_committed(void *userdata, sqlite3 *db, const char *name, int nframes)
{
	struct sl_store *s = userdata;

	s->wal_frames = nframes;
	if (nframes >= WAL_HARD_FRAMES)
		(void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	return SQLITE_OK;
}

/*
 * One attempt at making an opened file a usable store: refuse what is not
 * ours to change, switch to WAL, migrate. Any step may meet
 * another process creating the same store and fail with -EBUSY; the caller
 * then retries the whole attempt until the open's deadline.
 */
static int setup(struct sl_store *s, const char *path, struct sl_error *reterr)
{
	int64_t version = 0;
	int r;

	/* Read before anything that writes: a corrupt file fails here
	 * (SQLITE_NOTADB), and a newer or foreign one is refused, all three
	 * untouched. quick_check would read the whole file; this is enough. */
	r = read_schema(s, path, &version, reterr);
	if (r == 0 && s->readonly)
		return setup_readonly(path, version, reterr);
	if (r == 0)
		r = set_wal(s);
	if (r == 0)
		r = exec(s, "PRAGMA synchronous=FULL");
	/* A log is written once and read rarely: a small page cache keeps a
	 * 100,000-entry stage from growing the process by SQLite's 2 MiB
	 * default (benchmark 9). */
	if (r == 0)
		r = exec(s, "PRAGMA cache_size=-256");
	if (r < 0)
		return r;
	/* Replaces SQLite's automatic checkpoint (every 1,000 frames, inside
	 * whichever commit crosses it) with the bound above. */
	sqlite3_wal_hook(s->db, wal_committed, s);
	s->sync_level = SYNC_FULL;
	/* Only a store that needs it takes the write lock to migrate: a
	 * reader (list, show) never waits behind a writer here. */
	if (version < (int64_t)ELEMENTSOF(migrations)) {
		r = migrate(s, path, reterr);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A failed system call on the store's path, as an errno that says what the
 * user can do about it: a path too long or looping through symlinks is a
 * bad path (-EINVAL), and no file descriptor left is temporary (-EAGAIN). */
static int path_err(struct sl_error *reterr, const char *what, const char *where, int e)
{
	int r = e == ENAMETOOLONG || e == ELOOP ? -EINVAL : e == EMFILE || e == ENFILE ? -EAGAIN : e > 0 ? -e : -EIO;

	return sl_err(reterr, r, "%s: %s: %s", what, where, strerror(e > 0 ? e : EIO));
}

/* What prepare_file() found beside the judging: whether the store (file or
 * folder) is another user's, opened by root to inspect it, and what of its
 * WAL is there. */
struct found {
	bool foreign;
	uid_t owner;
	bool wal_data; /* a -wal file that is not empty */
	bool shm;      /* a -shm file */
};

/* The reason refuse() names the owner for, compared by address. */
static const char owned_by_other[] = "owned by another user";

/*
 * Refuses another user's store, naming the user and how to run stagelog as
 * that user: whoever opens a store with write access must be its owner,
 * root included (a root process writing it would leave files beside it that
 * its owner cannot use, and would trust a file its owner can rewrite).
 */
static int refuse_owner(struct sl_error *reterr, const char *path, const struct stat *st)
{
	char buf[1024];
	struct passwd pw, *p = NULL;
	unsigned long uid = st->st_uid;
	unsigned mode = st->st_mode & 07777;

	if (getpwuid_r(st->st_uid, &pw, buf, sizeof(buf), &p) != 0)
		p = NULL;
	if (geteuid() != 0)
		return sl_err(reterr, -EPERM, "cannot open store: %s: owned by another user, %s (uid %lu, mode %04o); "
			      "refused: run stagelog as that user", path, p ? p->pw_name : "without a name", uid, mode);
	if (p)
		return sl_err(reterr, -EPERM, "cannot open store: %s: owned by another user, %s (uid %lu, mode %04o); "
			      "refused: run it as that user: runuser -u %s -- stagelog ...", path, p->pw_name, uid, mode,
			      p->pw_name);
	return sl_err(reterr, -EPERM, "cannot open store: %s: owned by another user, uid %lu without a name (mode %04o); "
		      "refused: run it as that user: setpriv --reuid=%lu --regid=%lu --clear-groups -- stagelog ...",
		      path, uid, mode, uid, (unsigned long)st->st_gid);
}

/*
 * Why a store file or folder is not ours, or NULL when it is. The rules are
 * the staging root's: whoever else could write it could mark a stage
 * released and hide its secrets from recovery, or plant a hot journal that
 * SQLite would roll into the store. Root trusts only root's; another caller
 * trusts its own and root's.
 */
static const char *not_ours(const struct stat *st, unsigned flags, struct found *found)
{
	if (st->st_uid != geteuid() && st->st_uid != 0) {
		/* Root may read what it could read anyway, through a
		 * connection that cannot write (see sl_store_open_flags()). */
		if (!(flags & SL_STORE_OPEN_INSPECT) || geteuid() != 0)
			return owned_by_other;
		found->foreign = true;
		found->owner = st->st_uid;
	}
	if (st->st_mode & (S_IWGRP | S_IWOTH))
		return "writable by group or others";
	return NULL;
}

static int refuse(struct sl_error *reterr, const char *path, const char *why, const struct stat *st)
{
	if (st && why == owned_by_other)
		return refuse_owner(reterr, path, st);
	if (st)
		return sl_err(reterr, -EPERM, "cannot open store: %s: %s (uid %lu, mode %04o); refused", path, why,
			      (unsigned long)st->st_uid, (unsigned)(st->st_mode & 07777));
	return sl_err(reterr, -EPERM, "cannot open store: %s: %s; refused", path, why);
}

/*
 * Finds or creates the store file and checks that it and its folder are
 * ours, before SQLite opens anything. The folder is held open so that the
 * file and its -wal, -shm and -journal are judged in the folder that was
 * judged; a folder no other user can write keeps those names stable until
 * SQLite opens them.
 *
 * The file is created 0600 with O_EXCL: SQLite would create a missing
 * database with the umask's mode, and gives -wal and -shm the database's
 * mode, so this one open decides the mode of all three. A process that
 * finds the file already there, even empty because its creator has not
 * written it yet, opens it as it is: an empty file is an empty store, and
 * the schema is settled under SQLite's locks, not here.
 */
/* Refuses a store file (or companion) that is a symlink, not a regular file
 * or not ours. shown is the path as the user spelt it. */
static int check_store_file(const struct stat *st, const char *shown, unsigned flags, struct found *found,
			    struct sl_error *reterr)
{
	const char *why;

	if (S_ISLNK(st->st_mode))
		return refuse(reterr, shown, "is a symlink", NULL);
	if (S_ISDIR(st->st_mode))
		return sl_err(reterr, -EISDIR, "cannot open store: %s: %s", shown, strerror(EISDIR));
	if (!S_ISREG(st->st_mode))
		return refuse(reterr, shown, "not a regular file", NULL);
	why = not_ours(st, flags, found);
	return why ? refuse(reterr, shown, why, st) : 0;
}

/* Opens the folder that holds the store (creating it unless NOCREATE) and
 * refuses one that is not ours. */
static int open_store_folder(char *dir, unsigned flags, struct found *found, struct sl_error *reterr)
{
	_cleanup_close_ int dfd = -1;
	const char *why;
	struct stat st;

	if (!(flags & SL_STORE_OPEN_NOCREATE)) {
		int r = mkdir_parents(dir);
		if (r < 0)
			return path_err(reterr, "cannot create store", dir, -r);
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fstat(dfd, &st) < 0)
		return path_err(reterr, "cannot open store", dir, errno);
	why = not_ours(&st, flags, found);
	if (why)
		return refuse(reterr, dir, why, &st);
	return TAKE_FD(dfd);
}

/* SQLite opens the companions by name and would follow a symlink there or
 * roll a planted hot journal into the store. The folder rule keeps other
 * users from placing them; this refuses what was left while the folder was
 * open to them. */
static int check_companions(int dfd, const char *path, const char *base, unsigned flags, struct found *found,
			    struct sl_error *reterr)
{
	static const char *const suffixes[] = {"-wal", "-shm", "-journal"};

	for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
		char name[NAME_MAX + 16], shown[PATH_MAX + 16];
		struct stat st;
		int r;

		snprintf(name, sizeof(name), "%s%s", base, suffixes[i]);
		snprintf(shown, sizeof(shown), "%s%s", path, suffixes[i]);
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT || errno == ENAMETOOLONG)
				continue;
			return path_err(reterr, "cannot open store", shown, errno);
		}
		r = check_store_file(&st, shown, flags, found, reterr);
		if (r < 0)
			return r;
		if (i == 0 && st.st_size > 0)
			found->wal_data = true;
		if (i == 1)
			found->shm = true;
	}
	return 0;
}

/* The store's identity, from the file judged above (fd): its inode and
 * birth time, and its canonical path. */
static int identify(int fd, const char *path, struct store_identity *ret, struct sl_error *reterr)
{
	_cleanup_free_ char *real = realpath(path, NULL);
	struct fileid id;
	int r = fd_fileid(fd, &id);

	if (r < 0)
		return path_err(reterr, "cannot open store", path, -r);
	if (!real)
		return path_err(reterr, "cannot open store", path, errno);
	if (strlen(real) >= sizeof(ret->path))
		return path_err(reterr, "cannot open store", path, ENAMETOOLONG);
	strcpy(ret->path, real);
	ret->ino = id.ino;
	ret->btime = id.btime;
	return 0;
}

const struct store_identity *store_identity(const struct sl_store *s)
{
	return &s->identity;
}

/* Makes sure the store file at path exists (unless NOCREATE) and is ours,
 * with its folder and companions, before SQLite opens anything. */
static int prepare_file(const char *path, unsigned flags, struct store_identity *ret_id, struct found *found,
			struct sl_error *reterr)
{
	_cleanup_free_ char *dir = strdup(path);
	_cleanup_close_ int dfd = -1, fd = -1;
	const char *base;
	char *slash;
	struct stat st;
	int r;

	if (!dir)
		return sl_err(reterr, -ENOMEM, "cannot open store: %s: %s", path, strerror(ENOMEM));
	slash = strrchr(dir, '/');
	if (!slash) {
		base = path;
		strcpy(dir, ".");
	} else {
		base = path + (slash - dir) + 1;
		slash[slash == dir ? 1 : 0] = '\0';
	}
	if (!*base)
		return sl_err(reterr, -EISDIR, "cannot open store: %s: %s", path, strerror(EISDIR));
	dfd = open_store_folder(dir, flags, found, reterr);
	if (dfd < 0)
		return dfd;
	if (!(flags & SL_STORE_OPEN_NOCREATE)) {
		fd = openat(dfd, base, O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			return path_err(reterr, "cannot create store", path, errno);
		/* The umask may have taken bits 0600 needs. */
		if (fd >= 0 && fchmod(fd, 0600) < 0)
			return path_err(reterr, "cannot create store", path, errno);
	}
	/* O_PATH with O_NOFOLLOW opens a symlink itself, so that one is named
	 * as such instead of failing as "File exists". */
	if (fd < 0 && (fd = openat(dfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return path_err(reterr, "cannot open store", path, errno);
	if (fstat(fd, &st) < 0)
		return path_err(reterr, "cannot open store", path, errno);
	r = check_store_file(&st, path, flags, found, reterr);
	if (r == 0)
		r = check_companions(dfd, path, base, flags, found, reterr);
	if (r == 0)
		r = identify(fd, path, ret_id, reterr);
	return r;
}

static void store_finish(struct sl_store *s)
{
	finalize_statements(s);
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
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int nlog = 0, nckpt = 0, r;
	char sql[64];

	if (s->readonly || s->commits == 0 || s->wal_frames < WAL_BOUND_FRAMES)
		return;
	/* Optional work on the way out: it never waits for the store. The
	 * passive checkpoint does not; the restart write gets a deadline of
	 * now, so a store busy with another writer is left to the next one. */
	s->deadline_held = true;
	s->deadline = mono_ms();
	if (sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt) != SQLITE_OK ||
	    nlog != nckpt || begin(s, false) < 0)
		return;
	/* The write: the schema version, read and written back under the
	 * write lock, so that it is the same value whoever migrated last. */
	r = prepare(s, "PRAGMA user_version", &st);
	if (r == 0 && sqlite3_step(st) != SQLITE_ROW)
		r = -EIO;
	if (r == 0) {
		snprintf(sql, sizeof(sql), "PRAGMA user_version=%lld", (long long)sqlite3_column_int64(st, 0));
		sqlite3_reset(st);
		r = exec(s, sql);
	}
	(void)finish(s, r);
}

void sl_store_close(struct sl_store *s)
{
	if (!s)
		return;
	bound_wal(s);
	store_finish(s);
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
 *   (no checkpoint on close), so an owner's store normally has both;
 * - with no WAL data, every committed row is in the database file, and
 *   immutable=1 reads it alone: no locks, no -wal or -shm. An owner that
 *   checkpoints (after 4,000 pages of WAL) during the read could make it
 *   see a mixture, so the reader may then fail as a corrupt store; it never
 *   writes.
 *
 * Every byte but the unreserved ones is %-escaped, so no path can add a
 * parameter. Returns NULL when out of memory.
 */
static char *readonly_uri(const char *path, const struct found *found)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *params = found->wal_data ? "?mode=ro&readonly_shm=1" : "?mode=ro&immutable=1";
	size_t len = strlen(path);
	char *uri = malloc(strlen("file://") + 3 * len + strlen(params) + 1), *p;

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
 * file exists (prepare_file made it or found it), and a store that vanished
 * since is not recreated here.
 */
static int open_db(struct sl_store *s, const char *path, const struct found *found, struct sl_error *reterr)
{
	_cleanup_free_ char *uri = NULL;
	int rc, r = 0;

	if (!s->readonly) {
		rc = store_vfs_register();
		if (rc != SQLITE_OK)
			return sqlite_to_errno(NULL, rc);
		return sqlite_to_errno(s->db, sqlite3_open_v2(path, &s->db,
							      SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW |
								      SQLITE_OPEN_NOMUTEX,
							      STORE_VFS_NAME));
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
		return sqlite_to_errno(s->db, rc);
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

int sl_store_open_flags(const char *path, unsigned flags, struct sl_store **ret, struct sl_error *reterr)
{
	struct sl_error e = {0};
	struct found found = {0};
	struct sl_store *s;
	int r;

	if (!path || !*path || !ret || (flags & ~(unsigned)(SL_STORE_OPEN_NOCREATE | SL_STORE_OPEN_INSPECT)))
		return sl_err(reterr, -EINVAL, "cannot open store: no path");
	if (flags & SL_STORE_OPEN_INSPECT)
		flags |= SL_STORE_OPEN_NOCREATE;
	s = calloc(1, sizeof(*s));
	if (!s)
		return sl_err(reterr, -ENOMEM, "cannot open store: %s: %s", path, strerror(ENOMEM));
	r = prepare_file(path, flags, &s->identity, &found, reterr);
	if (r < 0) {
		free(s);
		return r;
	}
	s->readonly = found.foreign;
	r = open_db(s, path, &found, &e);
	if (r < 0)
		goto out;
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_handler(s->db, busy_wait, s);
	/* The last connection to close would checkpoint the WAL and delete
	 * it: two more syncs for every short-lived `stagelog` process. The WAL
	 * stays instead; automatic checkpoints and `recover` keep it short. */
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);

	/*
	 * Processes opening a new store race: for the switch to WAL (an
	 * exclusive lock, and SQLite returns SQLITE_BUSY there without always
	 * calling the busy handler), for the first migration, and through
	 * WAL recovery (SQLITE_BUSY_RECOVERY). Each busy attempt is undone
	 * and the whole setup retried, every wait within one deadline.
	 */
	s->deadline_held = true;
	s->deadline = mono_ms() + BUSY_TIMEOUT_MS;
	for (;;) {
		sl_err_clear(&e);
		r = setup(s, path, &e);
		if (r != -EBUSY || mono_ms() >= s->deadline)
			break;
		rollback(s);
		finalize_statements(s);
		usleep(BUSY_RETRY_US);
	}
	s->deadline_held = false;
	if (r < 0)
		goto out;
	*ret = s;
	return 0;
out:
	if (e.code)
		sl_err(reterr, e.code, "%s", e.msg);
	else if (r == -EBUSY)
		sl_err(reterr, r, "cannot open store: %s: still busy after %d s", path, BUSY_TIMEOUT_MS / 1000);
	else
		sl_err(reterr, r, "cannot open store: %s: %s", path, strerror(-r));
	sl_store_close(s);
	return r;
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

static void bind_owner(sqlite3_stmt *st, int i, const struct sl_owner *o)
{
	sqlite3_bind_text(st, i, o->boot_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, i + 1, o->pid);
	sqlite3_bind_int64(st, i + 2, (sqlite3_int64)o->start_time);
	sqlite3_bind_int64(st, i + 3, (sqlite3_int64)o->pidns);
}

int store_stage_insert(struct sl_store *s, struct sl_record *rec, const char *marker, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	sqlite3_stmt *ins;
	int rc, r;

	r = begin(s, true);
	if (r < 0)
		return store_err(reterr, r, "cannot record stage");
	r = prepare(s,
		    "INSERT INTO stages (id, label, root, topdir, state, owner_boot, owner_pid, owner_start, "
		    "owner_pidns, created_at, updated_at, root_ino, root_btime, root_volatile) "
		    "VALUES (?, ?, ?, ?, " ST(STAGING) ", ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_text(st, 1, rec->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, rec->label, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 3, rec->root, (int)strlen(rec->root), SQLITE_STATIC);
	sqlite3_bind_text(st, 4, rec->topdir, -1, SQLITE_STATIC);
	bind_owner(st, 5, &rec->owner);
	sqlite3_bind_int64(st, 9, rec->created_ms);
	sqlite3_bind_int64(st, 10, rec->created_ms);
	if (rec->have_root_id) {
		sqlite3_bind_int64(st, 11, (sqlite3_int64)rec->root_ino);
		sqlite3_bind_int64(st, 12, rec->root_btime);
		sqlite3_bind_int(st, 13, rec->root_volatile ? 1 : 0);
	}
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE) {
		r = sqlite_to_errno(s->db, rc);
		goto out;
	}
	rec->rowid = sqlite3_last_insert_rowid(s->db);
	r = cached(s, SQL_INS_ENTRY, &ins);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(ins, 1, rec->rowid);
	sqlite3_bind_int64(ins, 2, 0);
	sqlite3_bind_blob(ins, 3, rec->topdir, (int)strlen(rec->topdir), SQLITE_STATIC);
	sqlite3_bind_int(ins, 4, SL_KIND_DIR);
	r = step_done(s, ins);
	/* Entry 1, the marker, in the same transaction: it is logged before
	 * it exists like every other path (docs/design.md, "Identity"). */
	if (r == 0 && marker) {
		sqlite3_bind_int64(ins, 1, rec->rowid);
		sqlite3_bind_int64(ins, 2, 1);
		sqlite3_bind_blob(ins, 3, marker, (int)strlen(marker), SQLITE_STATIC);
		sqlite3_bind_int(ins, 4, SL_KIND_FILE);
		r = step_done(s, ins);
	}
out:
	/* The one durable commit of staging: the intent for the top directory
	 * must be on disk before the directory can exist. */
	return end_txn(s, r, reterr, "cannot record stage");
}

/* Binds args to the prepared st and runs it, inside the open transaction. */
static int bind_step(struct sl_store *s, sqlite3_stmt *st, const int64_t *args, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sqlite3_bind_int64(st, (int)i + 1, args[i]);
	return step_done(s, st);
}

int store_stage_set_dest(struct sl_store *s, int64_t rowid, const char *dest, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int r;

	/* Durable: the rename that follows may reach the disk, and recovery
	 * must then find the tree where it went rather than forget it. */
	r = begin(s, true);
	if (r == 0)
		r = prepare(s, "UPDATE stages SET dest = ? WHERE rowid = ? AND state = " ST(READY), &st);
	if (r == 0) {
		sqlite3_bind_blob(st, 1, dest, (int)strlen(dest), SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, rowid);
		r = step_done(s, st);
		if (r == 0 && sqlite3_changes(s->db) == 0)
			r = -ESTALE;
	}
	return end_txn(s, r, reterr, "cannot update stage");
}

/* Runs the prepared state change inside the open transaction: -ESTALE when
 * the stage was not in a state of from_mask. */
static int transition(struct sl_store *s, int64_t rowid, unsigned from_mask, enum sl_state to, const char *reason)
{
	sqlite3_stmt *st;
	int r = cached(s, SQL_TRANSITION, &st);

	if (r < 0)
		return r;
	sqlite3_bind_int(st, 1, (int)to);
	sqlite3_bind_int64(st, 2, sl_now_ms());
	if (reason)
		sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, rowid);
	sqlite3_bind_int64(st, 5, from_mask);
	r = step_done(s, st);
	return r == 0 && sqlite3_changes(s->db) == 0 ? -ESTALE : r;
}

int store_stage_transition(struct sl_store *s, int64_t rowid, unsigned from_mask, enum sl_state to,
			   const char *reason, bool durable, struct sl_error *reterr)
{
	int r;

	r = begin(s, durable);
	if (r < 0)
		return store_err(reterr, r, "cannot update stage");
	return end_txn(s, transition(s, rowid, from_mask, to, reason), reterr, "cannot update stage");
}

int store_stage_claim_batch(struct sl_store *s, const struct sl_record *const *recs, size_t n,
			    const struct sl_owner *claimer, bool *ret_claimed, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int64_t now = sl_now_ms();
	int r;

	r = begin(s, true);
	if (r < 0)
		return store_err(reterr, r, "cannot claim stages");
	r = prepare(s,
		    "UPDATE stages SET state = " ST(RECOVERING) ", updated_at = ?, claim_boot = ?, claim_pid = ?, claim_start = ?, "
		    "claim_pidns = ? WHERE rowid = ? AND state = ? AND coalesce(claim_pid, 0) = ? "
		    "AND coalesce(claim_start, 0) = ? AND " IN_FLIGHT_SQL,
		    &st);
	for (size_t i = 0; r == 0 && i < n; i++) {
		sqlite3_bind_int64(st, 1, now);
		bind_owner(st, 2, claimer);
		sqlite3_bind_int64(st, 6, recs[i]->rowid);
		sqlite3_bind_int(st, 7, (int)recs[i]->state);
		sqlite3_bind_int64(st, 8, recs[i]->claimer.pid);
		sqlite3_bind_int64(st, 9, (sqlite3_int64)recs[i]->claimer.start_time);
		r = step_done(s, st);
		ret_claimed[i] = r == 0 && sqlite3_changes(s->db) == 1;
	}
	/* Durable: a claim must not be lost while its removal goes on, or a
	 * second recoverer could start on the same stage after a power loss. */
	r = end_txn(s, r, reterr, "cannot claim stages");
	for (size_t i = 0; r < 0 && i < n; i++)
		ret_claimed[i] = false;
	return r;
}

int store_stage_reclaim(struct sl_store *s, struct sl_record *rec, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int r;

	/* claim_pid -1 marks a claim that is not a recovery's (stage_liveness() looks
	 * at claims only while recovering); claim_start is a fresh token. */
	r = begin(s, false);
	if (r == 0)
		r = prepare(s,
			    "UPDATE stages SET claim_pid = -1, claim_start = ?, updated_at = ? WHERE rowid = ? "
			    "AND state = " ST(READY) " AND coalesce(claim_pid, 0) = ? AND coalesce(claim_start, 0) = ?",
			    &st);
	if (r == 0) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)getpid() << 20 ^ sl_now_ms());
		sqlite3_bind_int64(st, 2, sl_now_ms());
		sqlite3_bind_int64(st, 3, rec->rowid);
		sqlite3_bind_int64(st, 4, rec->claimer.pid);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)rec->claimer.start_time);
		r = step_done(s, st);
		if (r == 0 && sqlite3_changes(s->db) == 0)
			r = -ESTALE;
	}
	return end_txn(s, r, reterr, "cannot publish stage");
}


int store_roots_foreach(struct sl_store *s, int (*fn)(const char *root, void *userdata), void *userdata,
			struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int r, rc;

	r = prepare(s, "SELECT DISTINCT root FROM stages", &st);
	if (r < 0)
		return store_err(reterr, r, "cannot list roots");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		char root[PATH_MAX];
		copy_text(root, sizeof(root), sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0));
		r = fn(root, userdata);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : fail(s, rc, reterr, "cannot list roots");
}

int store_stage_log(struct sl_store *s, int64_t rowid, const struct store_log *log, struct sl_error *reterr)
{
	sqlite3_stmt *st, *ins = NULL;
	int r = begin(s, false);

	if (r == 0 && log->confirm) {
		int64_t args[] = {(int64_t)log->confirm->dev, (int64_t)log->confirm->ino, log->confirm->btime, rowid};

		r = cached(s, SQL_CONFIRM, &st);
		if (r == 0)
			r = bind_step(s, st, args, ELEMENTSOF(args));
		if (r == 0 && sqlite3_changes(s->db) == 0) {
			rollback(s);
			return sl_err(reterr, -ESTALE, "cannot begin stage: record: a recovery claimed it meanwhile");
		}
	}
	if (r == 0 && log->n > 0)
		r = cached(s, SQL_INS_ENTRY, &ins);
	for (size_t i = 0; r == 0 && i < log->n; i++) {
		sqlite3_bind_int64(ins, 1, rowid);
		sqlite3_bind_int64(ins, 2, log->first_seq + (int64_t)i);
		sqlite3_bind_blob(ins, 3, log->arena + log->offs[i], log->lens[i], SQLITE_STATIC);
		sqlite3_bind_int(ins, 4, log->kinds[i]);
		r = step_done(s, ins);
	}
	if (r == 0 && log->ready)
		r = transition(s, rowid, 1u << SL_STATE_STAGING, SL_STATE_READY, NULL);
	return end_txn(s, r, reterr, log->ready ? "cannot mark stage ready" : "cannot log entries");
}

int store_entries_page(struct sl_store *s, int64_t rowid, bool descending, int64_t from_seq,
		       struct sl_entry_page *page, struct sl_error *reterr)
{
	sqlite3_stmt *st;
	int n = 0, rc, r;

	page->used = 0;
	page->more = false;
	r = cached(s, descending ? SQL_PAGE_DESC : SQL_PAGE_ASC, &st);
	if (r < 0)
		return store_err(reterr, r, "cannot read entries");
	sqlite3_bind_int64(st, 1, rowid);
	sqlite3_bind_int64(st, 2, from_seq);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const void *p = sqlite3_column_blob(st, 1);
		size_t len = (size_t)sqlite3_column_bytes(st, 1);
		struct sl_entry *e = &page->e[n];

		/* A path that does not fit what is left of the arena starts the
		 * next page instead of being cut short. One longer than the
		 * whole arena (only a tampered record has one) keeps its true
		 * length, which the validator refuses before reading a byte. */
		if (len > sizeof(page->arena) - page->used) {
			if (n > 0) {
				page->more = true;
				break;
			}
			e->path_len = len;
			len = 0;
		} else {
			e->path_len = len;
		}
		if (len)
			memcpy(page->arena + page->used, p, len);
		e->seq = sqlite3_column_int64(st, 0);
		e->path = page->arena + page->used;
		e->kind = (enum sl_kind)sqlite3_column_int(st, 2);
		e->state = (enum sl_entry_state)sqlite3_column_int(st, 3);
		page->used += len;
		if (++n == (int)ELEMENTSOF(page->e) || page->used == sizeof(page->arena)) {
			page->more = true;
			break;
		}
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return fail(s, rc, reterr, "cannot read entries");
	return n;
}



static void read_record(sqlite3_stmt *st, struct sl_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->rowid = sqlite3_column_int64(st, 0);
	copy_text(rec->id, sizeof(rec->id), sqlite3_column_text(st, 1), sqlite3_column_bytes(st, 1));
	copy_text(rec->label, sizeof(rec->label), sqlite3_column_text(st, 2), sqlite3_column_bytes(st, 2));
	copy_text(rec->root, sizeof(rec->root), sqlite3_column_blob(st, 3), sqlite3_column_bytes(st, 3));
	copy_text(rec->topdir, sizeof(rec->topdir), sqlite3_column_text(st, 4), sqlite3_column_bytes(st, 4));
	rec->state = (enum sl_state)sqlite3_column_int(st, 5);
	copy_text(rec->owner.boot_id, sizeof(rec->owner.boot_id), sqlite3_column_text(st, 6),
		  sqlite3_column_bytes(st, 6));
	rec->owner.pid = sqlite3_column_int64(st, 7);
	rec->owner.start_time = (uint64_t)sqlite3_column_int64(st, 8);
	rec->owner.pidns = (uint64_t)sqlite3_column_int64(st, 9);
	copy_text(rec->claimer.boot_id, sizeof(rec->claimer.boot_id), sqlite3_column_text(st, 10),
		  sqlite3_column_bytes(st, 10));
	rec->claimer.pid = sqlite3_column_int64(st, 11);
	rec->claimer.start_time = (uint64_t)sqlite3_column_int64(st, 12);
	rec->claimer.pidns = (uint64_t)sqlite3_column_int64(st, 13);
	rec->have_inode = sqlite3_column_type(st, 15) != SQLITE_NULL;
	rec->dev = (uint64_t)sqlite3_column_int64(st, 14);
	rec->ino = (uint64_t)sqlite3_column_int64(st, 15);
	rec->created_ms = sqlite3_column_int64(st, 16);
	rec->updated_ms = sqlite3_column_int64(st, 17);
	copy_text(rec->reason, sizeof(rec->reason), sqlite3_column_text(st, 18), sqlite3_column_bytes(st, 18));
	rec->btime = sqlite3_column_int64(st, 19);
	rec->have_root_id = sqlite3_column_type(st, 20) != SQLITE_NULL;
	rec->root_ino = (uint64_t)sqlite3_column_int64(st, 20);
	rec->root_btime = sqlite3_column_int64(st, 21);
	copy_text(rec->dest, sizeof(rec->dest), sqlite3_column_blob(st, 22), sqlite3_column_bytes(st, 22));
	rec->root_volatile = sqlite3_column_type(st, 23) != SQLITE_NULL && sqlite3_column_int(st, 23) == 1;
}

static int get_one(struct sl_store *s, const char *sql, const char *text, int64_t num, struct sl_record *rec,
		   struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int r, rc;

	r = prepare(s, sql, &st);
	if (r < 0)
		return store_err(reterr, r, "cannot read stage");
	if (text)
		sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 1, num);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		return sl_err(reterr, -ENOENT, "no such stage");
	if (rc != SQLITE_ROW)
		return fail(s, rc, reterr, "cannot read stage");
	read_record(st, rec);
	return 0;
}

int store_stage_get(struct sl_store *s, const char *id, struct sl_record *rec, struct sl_error *reterr)
{
	return get_one(s, "SELECT " STAGE_COLUMNS " FROM stages s WHERE s.id = ?", id, 0, rec, reterr);
}

int store_stage_get_rowid(struct sl_store *s, int64_t rowid, struct sl_record *rec, struct sl_error *reterr)
{
	return get_one(s, "SELECT " STAGE_COLUMNS " FROM stages s WHERE s.rowid = ?", NULL, rowid, rec, reterr);
}

int store_resolve_prefix(struct sl_store *s, const char *prefix, char ret_id[SL_ID_LEN + 1],
			 char (*cand)[SL_ID_LEN + 1], size_t ncand, size_t *ret_ncand, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	char hi[SL_ID_LEN + 2];
	size_t len = strlen(prefix), n = 0;
	int r, rc;

	if (len < 4 || len > SL_ID_LEN || strspn(prefix, "0123456789abcdef") != len)
		return sl_err(reterr, -EINVAL, "bad stage id '%s': want at least 4 of its %d lowercase hex digits",
			      len <= SL_ID_LEN ? prefix : "(too long)", SL_ID_LEN);
	/* A range scan on the unique index: prefix <= id < prefix + '~'. */
	snprintf(hi, sizeof(hi), "%s~", prefix);
	r = prepare(s, "SELECT id FROM stages WHERE id >= ? AND id < ? ORDER BY id LIMIT " STRINGIFY(RESOLVE_MAX_IDS), &st);
	if (r < 0)
		return store_err(reterr, r, "cannot look up stage");
	sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *id = sqlite3_column_text(st, 0);
		if (n == 0)
			copy_text(ret_id, SL_ID_LEN + 1, id, sqlite3_column_bytes(st, 0));
		if (n < ncand)
			copy_text(cand[n], SL_ID_LEN + 1, id, sqlite3_column_bytes(st, 0));
		n++;
	}
	if (rc != SQLITE_DONE)
		return fail(s, rc, reterr, "cannot look up stage");
	if (ret_ncand)
		*ret_ncand = n < ncand ? n : ncand;
	if (n == 0)
		return sl_err(reterr, -ENOENT, "unknown stage id '%s'", prefix);
	if (n > 1)
		return sl_err(reterr, -ENOTUNIQ, "ambiguous stage id '%s'", prefix);
	return 0;
}

int store_stage_foreach(struct sl_store *s, bool all, const char *label, store_stage_fn fn, void *userdata,
			struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *own = NULL;
	enum cached_sql id = all ? SQL_LIST_ALL : SQL_LIST_IN_FLIGHT;
	sqlite3_stmt *st = NULL;
	int r, rc;

	/* The kept statement, unless a caller lists again from inside fn
	 * while it is stepping: then this listing gets its own. `recover`
	 * lists twice (its scan, then the failed stages) and parses once. */
	r = s->cached[id] && sqlite3_stmt_busy(s->cached[id]) ? prepare(s, cached_text(id), &own)
							      : cached(s, id, &st);
	if (r < 0)
		return store_err(reterr, r, "cannot list stages");
	if (own)
		st = own;
	if (label)
		sqlite3_bind_text(st, 1, label, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct sl_record rec;

		read_record(st, &rec);
		rec.entries = sqlite3_column_int64(st, STAGE_NCOLUMNS);
		r = fn(&rec, userdata);
		if (r < 0)
			break;
	}
	if (r >= 0 && rc != SQLITE_DONE)
		r = fail(s, rc, reterr, "cannot list stages");
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r < 0 ? r : 0;
}

/* Deletes a stage's record and its entries, inside the open transaction. */
static int delete_record(struct sl_store *s, int64_t rowid)
{
	static const char *const sql[] = {
		"DELETE FROM entries WHERE stage = ?",
		"DELETE FROM stages WHERE rowid = ?",
	};

	for (size_t i = 0; i < ELEMENTSOF(sql); i++) {
		_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
		int r = prepare(s, sql[i], &st);

		if (r == 0) {
			sqlite3_bind_int64(st, 1, rowid);
			r = step_done(s, st);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

int store_stage_delete(struct sl_store *s, int64_t rowid, struct sl_error *reterr)
{
	int r = begin(s, false);

	if (r == 0)
		r = delete_record(s, rowid);
	return end_txn(s, r, reterr, "cannot delete stage record");
}

int store_gc(struct sl_store *s, int64_t cutoff_ms, struct sl_error *reterr)
{
	int total = 0;

	/* Batches keep each write transaction short, so a gc of a large store
	 * never holds the write lock for long against a staging gateway. */
	for (;;) {
		_cleanup_(sqlite3_finalizep) sqlite3_stmt *sel = NULL;
		int64_t ids[GC_BATCH];
		int n = 0, rc, r;

		r = begin(s, false);
		if (r < 0)
			return store_err(reterr, r, "cannot collect records");
		r = prepare(s,
			    /* Not published ones: their destination is how
			     * check tells a published tree from an orphan. */
			    "SELECT rowid FROM stages WHERE " FINISHED_SQL " AND state != " ST(PUBLISHED) " "
			    "AND updated_at <= ? LIMIT " STRINGIFY(GC_BATCH),
			    &sel);
		if (r == 0) {
			sqlite3_bind_int64(sel, 1, cutoff_ms);
			while ((rc = sqlite3_step(sel)) == SQLITE_ROW && n < GC_BATCH)
				ids[n++] = sqlite3_column_int64(sel, 0);
			if (rc != SQLITE_ROW && rc != SQLITE_DONE)
				r = sqlite_to_errno(s->db, rc);
		}
		for (int i = 0; r == 0 && i < n; i++)
			r = delete_record(s, ids[i]);
		r = end_txn(s, r, reterr, "cannot collect records");
		if (r < 0)
			return r;
		total += n;
		if (n < GC_BATCH)
			return total;
	}
}

int store_quick_check(struct sl_store *s, char *buf, size_t size, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int r, rc;

	r = prepare(s, "PRAGMA quick_check(1)", &st);
	if (r < 0)
		return store_err(reterr, r, "cannot check store");
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW)
		return fail(s, rc, reterr, "cannot check store");
	copy_text(buf, size, sqlite3_column_text(st, 0), sqlite3_column_bytes(st, 0));
	return 0;
}

void store_stats(struct sl_store *s, struct sl_store_stats *ret)
{
	ret->commits = s->commits;
	ret->durable_commits = s->durable_commits;
}

void store_set_naive(struct sl_store *s, bool naive)
{
	s->naive = naive;
}
