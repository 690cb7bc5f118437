/* SPDX-License-Identifier: MIT */
/*
 * schema.c: the store's schema and the setup of an opened file. It owns the
 * migrations (the tables and their indexes; store-internal.h names the
 * stage record's columns), the check that refuses a newer, corrupt or
 * foreign file before anything writes it, the switch to WAL and the
 * connection's settings, and PRAGMA quick_check.
 */
#include <stdio.h>
#include <string.h>

#include "store-internal.h"

/* A log is written once and read rarely: a small page cache keeps a
 * 100,000-entry stage from growing the process by SQLite's 2 MiB default
 * (benchmark 9). */
#define CACHE_SIZE_KIB 256
/* Room for "PRAGMA user_version=" and any int64. */
#define USER_VERSION_SQL_SIZE 64

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
	"CREATE INDEX stages_inflight ON stages(rowid) WHERE " IN_FLIGHT_SQL
	";"
	"CREATE INDEX stages_finished ON stages(updated_at) WHERE " FINISHED_SQL
	";"
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
	/* 4: entries logged a batch to a row (store-internal.h): one
	 * INSERT per 128 entries, not one per entry. A row of schema 3 is
	 * one entry, and stays one. */
	"ALTER TABLE entries ADD COLUMN n INTEGER NOT NULL DEFAULT 1;",
};
#define SCHEMA_VERSION ((int64_t)ELEMENTSOF(migrations))

int sl_store_schema_version(void)
{
	return (int)SCHEMA_VERSION;
}

/* Writes PRAGMA user_version, inside the open transaction. A PRAGMA takes
 * no bound parameter; version is our own number. */
int store_set_user_version(struct sl_store *s, int64_t version)
{
	char sql[USER_VERSION_SQL_SIZE];

	snprintf(sql, sizeof(sql), "PRAGMA user_version=%lld", (long long)version);
	return store_exec(s, sql);
}

/*
 * Reads the schema version and refuses a store this program must not
 * touch: not a database or corrupt (-EBADMSG), written by a newer program
 * (-EPROTO), or a SQLite database with tables but no stagelog version
 * (-EBADMSG, someone else's). path is for the messages.
 */
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
	rc = store_read_int(s, "SELECT count(*) FROM sqlite_schema", &tables);
	if (rc == SQLITE_ROW)
		rc = store_read_int(s, "PRAGMA user_version", &version);
	if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT || rc == SQLITE_DONE)
		/* In words: "Bad message" tells a user nothing. */
		return sl_err(reterr, -EBADMSG,
			      "cannot open store: %s: not a stagelog store (corrupt or another kind of file)", path);
	if (rc != SQLITE_ROW)
		return store_sqlite_errno(s->db, rc);
	if (version > SCHEMA_VERSION)
		return sl_err(reterr, -EPROTO,
			      "cannot open store: %s: schema version %lld is newer than this program's %d", path,
			      (long long)version, sl_store_schema_version());
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

	r = store_begin(s, true);
	if (r == 0)
		r = read_schema(s, path, &version, reterr);
	for (int64_t v = version; r == 0 && v < SCHEMA_VERSION; v++) {
		r = store_exec(s, migrations[v]);
		if (r == 0)
			r = store_set_user_version(s, v + 1);
	}
	return store_txn_finish(s, r);
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
		return store_sqlite_errno(s->db, rc == SQLITE_DONE ? SQLITE_BUSY : rc);
	mode = sqlite3_column_text(st, 0);
	if (mode && strcmp((const char *)mode, "wal") == 0)
		return 0;
	return sqlite3_db_readonly(s->db, "main") == 1 ? -EROFS : -EBUSY;
}

/*
 * The setup of another user's store, opened read-only to inspect it (see
 * sl_store_open_flags()): no switch to WAL, no migration (its authorizer
 * lets only reads run). A store of an older schema cannot be read by this
 * program's queries, and upgrading it would write it: its owner does that.
 */
static int setup_readonly(const char *path, int64_t version, struct sl_error *reterr)
{
	if (version < SCHEMA_VERSION)
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
int store_setup(struct sl_store *s, const char *path, struct sl_error *reterr)
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
		r = store_exec(s, "PRAGMA synchronous=FULL");
	if (r == 0)
		r = store_exec(s, "PRAGMA cache_size=-" STRINGIFY(CACHE_SIZE_KIB));
	if (r < 0)
		return r;
	/* Replaces SQLite's automatic checkpoint (every 1,000 frames, inside
	 * whichever commit crosses it) with the WAL's bound (WAL_*_FRAMES). */
	sqlite3_wal_hook(s->db, wal_committed, s);
	s->sync_level = STORE_SYNC_FULL;
	/* Only a store that needs it takes the write lock to migrate: a
	 * reader (list, show) never waits behind a writer here. */
	if (version < SCHEMA_VERSION) {
		r = migrate(s, path, reterr);
		if (r < 0)
			return r;
	}
	return 0;
}

int store_quick_check(struct sl_store *s, char *buf, size_t size, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int r, rc;

	r = store_prepare(s, "PRAGMA quick_check(1)", &st);
	if (r < 0)
		return store_err(reterr, r, "cannot check store");
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW)
		return store_fail(s, rc, reterr, "cannot check store");
	store_copy_text(buf, size, sqlite3_column_text(st, 0), sqlite3_column_bytes(st, 0));
	return 0;
}
