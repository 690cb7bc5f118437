/* SPDX-License-Identifier: MIT */
/*
 * store-internal.h: what the files of store/ share and nothing outside
 * store/ sees: the connection (struct sl_store), the SQL spelling of the
 * states, the stage record's columns, and the helpers every statement runs
 * through. store-private.h is the store's interface for stage/, recover/,
 * cli/ and the tests; SQLite's types and result codes appear only here and
 * in the .c files of store/.
 *
 * Who owns what:
 *   sql.c          SQLite result codes to errno, statements and their cache
 *   txn.c          write transactions (one begin, one commit path), the busy
 *                  handler and its deadlines, the commit counters
 *   schema.c       migrations, the schema check, the setup of an opened file
 *   open.c         ownership checks, opening and closing a store, the WAL's
 *                  bound at close
 *   stages.c       stage-record writes: insert, transitions, claims, delete, gc
 *   stages-read.c  stage-record reads: get, prefix lookup, listings, roots
 *   entries.c      the entry log: logging commits and pages of entries
 *   vfs.c          the "stagelog" VFS
 */
#ifndef STAGELOG_STORE_INTERNAL_H
#define STAGELOG_STORE_INTERNAL_H

/* Only store/'s own files are compiled with this (store/meson.build): the
 * layers above see store/ on their include path for store-private.h, and
 * this keeps them from reaching in further (checked by meson.build's
 * layering probes). */
#ifndef STAGELOG_BUILDING_STORE
#error "store-internal.h is for the files of store/ only; include store-private.h"
#endif

#include <assert.h>
#include <sqlite3.h>

#include "store-private.h"

/* How long a busy store is waited for before -EBUSY: one deadline for an
 * open, one for a begin() with its retries, one for any other statement. */
#define BUSY_TIMEOUT_MS 5000
#define BUSY_TIMEOUT_S (BUSY_TIMEOUT_MS / 1000)
/* The pause between two tries of a BEGIN IMMEDIATE or an open that SQLite
 * failed with SQLITE_BUSY without calling store_busy_wait(): about as long
 * as a stagelog write transaction lasts. */
#define BUSY_RETRY_US 1000

/* PRAGMA synchronous's own numbers, for sl_store.sync_level. */
enum store_sync { STORE_SYNC_NORMAL = 1, STORE_SYNC_FULL = 2 };

/*
 * The WAL's bound (docs/design.md, "Store tuning"). Every process that
 * opens the store first reads every frame since the WAL last restarted, so
 * its length is what a `list` or an empty `recover` costs. A writing
 * process that leaves more than WAL_BOUND_FRAMES checkpoints on its way
 * out (open.c); a connection that lives on (a gateway linking the library)
 * does so within a commit once past WAL_HARD_FRAMES (schema.c).
 */
#define WAL_BOUND_FRAMES 64
#define WAL_HARD_FRAMES 4000

/*
 * The states as SQL sees them. SQL text cannot name an enum value, so each
 * gets a number macro that a static_assert ties to the enum; the state
 * sets below are built from these, once as SQL and once as a mask, so the
 * SQL lists and sl_store_state_in_flight() cannot drift apart.
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
/* A state as SQL text ("1"), and as its bit in a mask of states. */
#define ST(x) STRINGIFY(ST_##x)
#define ST_BIT(x) (1u << ST_##x)

/* In flight: may own files on disk. The order of the SQL list is the one
 * the partial index stages_inflight was created with, which a query must
 * repeat for SQLite to use it. */
#define IN_FLIGHT_SQL "state IN (" ST(STAGING) ", " ST(READY) ", " ST(RELEASING) ", " ST(RECOVERING) ", " ST(FAILED) ")"
#define IN_FLIGHT_MASK (ST_BIT(STAGING) | ST_BIT(READY) | ST_BIT(RELEASING) | ST_BIT(RECOVERING) | ST_BIT(FAILED))
/* Finished: every other state (index stages_finished). */
#define FINISHED_SQL "state IN (" ST(RELEASED) ", " ST(ABORTED) ", " ST(RECOVERED) ", " ST(PUBLISHED) ")"
#define FINISHED_MASK (ST_BIT(RELEASED) | ST_BIT(ABORTED) | ST_BIT(RECOVERED) | ST_BIT(PUBLISHED))
static_assert((IN_FLIGHT_MASK & FINISHED_MASK) == 0 && (IN_FLIGHT_MASK | FINISHED_MASK) == (1u << SL_STATE_COUNT_) - 1,
	      "every state is either in flight or finished");

/*
 * A stage record's columns, as a query reads them (after s.rowid, which is
 * always first): one list makes both the SQL text (STAGE_COLUMNS) and the
 * column numbers (enum stage_column) that stages-read.c reads them by, so
 * the two cannot drift apart. The tables themselves are schema.c's
 * migrations.
 */
#define STAGE_COLUMN_LIST(X)        \
	X(ID, id)                   \
	X(LABEL, label)             \
	X(ROOT, root)               \
	X(TOPDIR, topdir)           \
	X(STATE, state)             \
	X(OWNER_BOOT, owner_boot)   \
	X(OWNER_PID, owner_pid)     \
	X(OWNER_START, owner_start) \
	X(OWNER_PIDNS, owner_pidns) \
	X(CLAIM_BOOT, claim_boot)   \
	X(CLAIM_PID, claim_pid)     \
	X(CLAIM_START, claim_start) \
	X(CLAIM_PIDNS, claim_pidns) \
	X(DEV, dev)                 \
	X(INO, ino)                 \
	X(CREATED_AT, created_at)   \
	X(UPDATED_AT, updated_at)   \
	X(REASON, reason)           \
	X(BTIME, btime)             \
	X(ROOT_INO, root_ino)       \
	X(ROOT_BTIME, root_btime)   \
	X(DEST, dest)               \
	X(ROOT_VOLATILE, root_volatile)
#define STAGE_COLUMN_ENUM_(name, column) COL_##name,
#define STAGE_COLUMN_SQL_(name, column) ", s." #column
enum stage_column {
	COL_ROWID,
	STAGE_COLUMN_LIST(STAGE_COLUMN_ENUM_)
	/* The number of a record's columns: a listing reads its entry count
	 * in the column after them. */
	STAGE_NCOLUMNS
};
#define STAGE_COLUMNS "s.rowid" STAGE_COLUMN_LIST(STAGE_COLUMN_SQL_)
static_assert(STAGE_NCOLUMNS == 24 && COL_ROOT_VOLATILE == STAGE_NCOLUMNS - 1,
	      "schema 3's stages table has 24 columns, rowid first and root_volatile last");

/* The statements a store prepares once and keeps (store_cached()). */
enum cached_sql {
	SQL_INS_ENTRY,
	SQL_INS_BATCH,
	SQL_CONFIRM,
	SQL_TRANSITION,
	SQL_PAGE_ASC,
	SQL_PAGE_DESC,
	SQL_LIST_IN_FLIGHT,
	SQL_LIST_ALL,
	SQL_IN_FLIGHT_ROWIDS,
	SQL_GET_ROWID,
	SQL_NAME,
	SQL_COUNT_
};

struct sl_store {
	sqlite3 *db;
	enum store_sync sync_level; /* what PRAGMA synchronous is now */
	bool naive;
	bool readonly; /* another user's store, opened by root to inspect it */
	bool txn_durable;
	/* A store_begin(), the open or the WAL's bound at close owns
	 * s->deadline: store_busy_wait() keeps it instead of starting its own. */
	bool deadline_held;
	int64_t deadline; /* CLOCK_MONOTONIC ms: when a busy store is reported */
	unsigned long commits, durable_commits;
	int wal_frames;                   /* frames in the WAL after this connection's last commit */
	sqlite3_stmt *cached[SQL_COUNT_]; /* see store_cached() */
	struct store_identity identity;
};

/* For _cleanup_(): finalizes a statement, if any. */
static inline void sqlite3_finalizep(sqlite3_stmt **stmt)
{
	if (*stmt)
		sqlite3_finalize(*stmt);
}

/* What store_prepare_file() found beside the judging: whether the store
 * (file or folder) is another user's, opened by root to inspect it, and
 * what of its WAL is there. */
struct store_found {
	bool foreign;
	bool wal_data; /* a -wal file that is not empty */
	bool shm;      /* a -shm file */
};

/* file.c */
HIDDEN int store_prepare_file(const char *path, unsigned flags, struct store_identity *ret_id,
			      struct store_found *found, struct sl_error *reterr);

/* sql.c */
HIDDEN int store_err(struct sl_error *reterr, int code, const char *what);
HIDDEN int store_sqlite_errno(sqlite3 *db, int rc);
HIDDEN int store_fail(struct sl_store *s, int rc, struct sl_error *reterr, const char *what);
HIDDEN void store_copy_text(char *dst, size_t size, const unsigned char *src, int len);
HIDDEN int store_exec(struct sl_store *s, const char *sql);
HIDDEN int store_prepare(struct sl_store *s, const char *sql, sqlite3_stmt **ret);
HIDDEN int store_step_done(struct sl_store *s, sqlite3_stmt *stmt);
HIDDEN int store_read_int(struct sl_store *s, const char *sql, int64_t *ret);
HIDDEN const char *store_cached_text(enum cached_sql id);
HIDDEN int store_cached(struct sl_store *s, enum cached_sql id, sqlite3_stmt **ret);
HIDDEN void store_finalize_statements(struct sl_store *s);

/* txn.c */
HIDDEN int64_t store_mono_ms(void);
HIDDEN int store_busy_wait(void *userdata, int count);
HIDDEN int store_begin(struct sl_store *s, bool durable);
HIDDEN void store_rollback(struct sl_store *s);
HIDDEN int store_txn_finish(struct sl_store *s, int r);
HIDDEN int store_txn_end(struct sl_store *s, int r, struct sl_error *reterr, const char *what);

/* schema.c */
HIDDEN int store_setup(struct sl_store *s, const char *path, struct sl_error *reterr);
HIDDEN int store_set_user_version(struct sl_store *s, int64_t version);

/* vfs.c: registers the "stagelog" VFS once per process; SQLITE_OK or
 * SQLite's error. Read-write stores open through it. */
#define STORE_VFS_NAME "stagelog"
HIDDEN int store_vfs_register(void);

/* stages.c, for the logging commit of entries.c */
HIDDEN int store_transition(struct sl_store *s, int64_t rowid, unsigned from_mask, enum sl_state to,
			    const char *reason);

/*
 * A row of the entries table holds one entry (its kind column is the
 * entry's kind, its n column 1) or, from schema 4 on, a batch: kind
 * STORE_ROW_BATCH, n entries numbered from its seq, and its path column
 * the entries one after another, each as its kind (1 byte), its path's
 * length (2 bytes, little-endian) and the path's bytes. A batch holds at
 * most STORE_PAGE_ENTRIES entries and STORE_PAGE_ARENA_SIZE bytes of
 * paths, so that it always fits one page of store_entries_page().
 */
#define STORE_ROW_BATCH 16
#define STORE_BATCH_HEAD 3

/* entries.c, for the stage insert of stages.c */
HIDDEN int store_insert_entry(struct sl_store *s, int64_t rowid, int64_t seq, const void *path, size_t len,
			      enum store_kind kind);

#endif
