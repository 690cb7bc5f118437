/* SPDX-License-Identifier: MIT */
/*
 * stages-read.c: the reads of stage records, none in a write transaction.
 * It owns reading a record's columns (by store-internal.h's enum
 * stage_column), getting one stage by id or rowid, resolving an id prefix,
 * the listings of stages, and the distinct staging roots.
 */
#include <stdio.h>
#include <string.h>

#include "store-internal.h"

/* The fewest hex digits of an id that a prefix lookup accepts. */
#define ID_PREFIX_MIN 4
/* The ids a prefix lookup reads at most: it only needs to tell one match
 * from several and to fill a caller's short candidate list, and a short
 * prefix in a large store must not read every id. */
#define RESOLVE_MAX_IDS 17

/* Copies text or blob column col of st into the array dst. */
#define COPY_COLUMN(dst, st, col) \
	store_copy_text((dst), sizeof(dst), sqlite3_column_text((st), (col)), sqlite3_column_bytes((st), (col)))
#define COPY_BLOB_COLUMN(dst, st, col) \
	store_copy_text((dst), sizeof(dst), sqlite3_column_blob((st), (col)), sqlite3_column_bytes((st), (col)))

/* Reads one process identity: four columns from col (boot, pid, start,
 * pidns), in the order of the schema. */
static void read_owner(sqlite3_stmt *st, int col, struct proc_owner *o)
{
	COPY_COLUMN(o->boot_id, st, col);
	o->pid = sqlite3_column_int64(st, col + 1);
	o->start_time = (uint64_t)sqlite3_column_int64(st, col + 2);
	o->pidns = (uint64_t)sqlite3_column_int64(st, col + 3);
}
static_assert(COL_OWNER_PIDNS == COL_OWNER_BOOT + 3 && COL_CLAIM_PIDNS == COL_CLAIM_BOOT + 3,
	      "an owner's four columns follow each other");

/* Reads a row of STAGE_COLUMNS into rec. */
static void read_record(sqlite3_stmt *st, struct store_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->rowid = sqlite3_column_int64(st, COL_ROWID);
	COPY_COLUMN(rec->id, st, COL_ID);
	COPY_COLUMN(rec->label, st, COL_LABEL);
	COPY_BLOB_COLUMN(rec->root, st, COL_ROOT);
	COPY_COLUMN(rec->topdir, st, COL_TOPDIR);
	rec->state = (enum sl_state)sqlite3_column_int(st, COL_STATE);
	read_owner(st, COL_OWNER_BOOT, &rec->owner);
	read_owner(st, COL_CLAIM_BOOT, &rec->claimer);
	rec->have_inode = sqlite3_column_type(st, COL_INO) != SQLITE_NULL;
	rec->dev = (uint64_t)sqlite3_column_int64(st, COL_DEV);
	rec->ino = (uint64_t)sqlite3_column_int64(st, COL_INO);
	rec->created_ms = sqlite3_column_int64(st, COL_CREATED_AT);
	rec->updated_ms = sqlite3_column_int64(st, COL_UPDATED_AT);
	COPY_COLUMN(rec->reason, st, COL_REASON);
	rec->btime = sqlite3_column_int64(st, COL_BTIME);
	rec->have_root_id = sqlite3_column_type(st, COL_ROOT_INO) != SQLITE_NULL;
	rec->root_ino = (uint64_t)sqlite3_column_int64(st, COL_ROOT_INO);
	rec->root_btime = sqlite3_column_int64(st, COL_ROOT_BTIME);
	COPY_BLOB_COLUMN(rec->dest, st, COL_DEST);
	rec->root_volatile = sqlite3_column_type(st, COL_ROOT_VOLATILE) != SQLITE_NULL &&
			     sqlite3_column_int(st, COL_ROOT_VOLATILE) == 1;
}

/* Reads the one stage sql selects by its parameter: text, or num when text
 * is NULL. */
static int get_one(struct sl_store *s, const char *sql, const char *text, int64_t num, struct store_record *rec,
		   struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int r, rc;

	r = store_prepare(s, sql, &st);
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
		return store_fail(s, rc, reterr, "cannot read stage");
	read_record(st, rec);
	return 0;
}

int store_stage_get(struct sl_store *s, const char *id, struct store_record *rec, struct sl_error *reterr)
{
	return get_one(s, "SELECT " STAGE_COLUMNS " FROM stages s WHERE s.id = ?", id, 0, rec, reterr);
}

int store_stage_get_rowid(struct sl_store *s, int64_t rowid, struct store_record *rec, struct sl_error *reterr)
{
	return get_one(s, store_cached_text(SQL_GET_ROWID), NULL, rowid, rec, reterr);
}

int store_stage_name(struct sl_store *s, const char *id, struct store_record *rec, struct sl_error *reterr)
{
	sqlite3_stmt *st;
	int r, rc;

	r = store_cached(s, SQL_NAME, &st);
	if (r < 0)
		return store_err(reterr, r, "cannot read stage");
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		memset(rec, 0, sizeof(*rec));
		snprintf(rec->id, sizeof(rec->id), "%s", id);
		COPY_COLUMN(rec->label, st, 0);
		COPY_BLOB_COLUMN(rec->root, st, 1);
		COPY_COLUMN(rec->topdir, st, 2);
	} else {
		r = rc == SQLITE_DONE ? sl_err(reterr, -ENOENT, "no such stage")
				      : store_fail(s, rc, reterr, "cannot read stage");
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

int store_resolve_prefix(struct sl_store *s, const char *prefix, char ret_id[STORE_ID_LEN + 1],
			 char (*cand)[STORE_ID_LEN + 1], size_t ncand, size_t *ret_ncand, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	char hi[STORE_ID_LEN + 2];
	size_t len = strlen(prefix), n = 0;
	int r, rc;

	if (len < ID_PREFIX_MIN || len > STORE_ID_LEN || strspn(prefix, "0123456789abcdef") != len)
		return sl_err(reterr, -EINVAL, "bad stage id '%s': want at least %d of its %d lowercase hex digits",
			      len <= STORE_ID_LEN ? prefix : "(too long)", ID_PREFIX_MIN, STORE_ID_LEN);
	/* A range scan on the unique index: prefix <= id < prefix + '~'. */
	snprintf(hi, sizeof(hi), "%s~", prefix);
	r = store_prepare(s,
			  "SELECT id FROM stages WHERE id >= ? AND id < ? ORDER BY id "
			  "LIMIT " STRINGIFY(RESOLVE_MAX_IDS),
			  &st);
	if (r < 0)
		return store_err(reterr, r, "cannot look up stage");
	sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *id = sqlite3_column_text(st, 0);
		if (n == 0)
			store_copy_text(ret_id, STORE_ID_LEN + 1, id, sqlite3_column_bytes(st, 0));
		if (n < ncand)
			store_copy_text(cand[n], STORE_ID_LEN + 1, id, sqlite3_column_bytes(st, 0));
		n++;
	}
	if (rc != SQLITE_DONE)
		return store_fail(s, rc, reterr, "cannot look up stage");
	if (ret_ncand)
		*ret_ncand = n < ncand ? n : ncand;
	if (n == 0)
		return sl_err(reterr, -ENOENT, "unknown stage id '%s'", prefix);
	if (n > 1)
		return sl_err(reterr, -ENOTUNIQ, "ambiguous stage id '%s'", prefix);
	return 0;
}

/* Takes the kept statement id, or, when a caller is stepping it (a nested
 * listing), prepares one of its own into *own. */
static int take_statement(struct sl_store *s, enum cached_sql id, sqlite3_stmt **own, sqlite3_stmt **ret)
{
	int r;

	if (!(s->cached[id] && sqlite3_stmt_busy(s->cached[id])))
		return store_cached(s, id, ret);
	r = store_prepare(s, store_cached_text(id), own);
	*ret = *own;
	return r;
}

/* Reads the record of a listed rowid with the kept statement. The listing
 * is still stepping, so the read sees its snapshot: the row is there. */
static int read_listed(struct sl_store *s, int64_t rowid, struct store_record *rec, struct sl_error *reterr)
{
	sqlite3_stmt *st;
	int r, rc;

	r = store_cached(s, SQL_GET_ROWID, &st);
	if (r < 0)
		return store_err(reterr, r, "cannot list stages");
	sqlite3_bind_int64(st, 1, rowid);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		read_record(st, rec);
	else
		r = store_fail(s, rc == SQLITE_DONE ? SQLITE_CORRUPT : rc, reterr, "cannot list stages");
	sqlite3_reset(st);
	return r;
}

/* Steps the listing st and calls fn with each stage's record: read from
 * the row (a record's columns, then its entry count) or, when by_rowid,
 * by the one rowid the row holds. */
static int step_listing(struct sl_store *s, sqlite3_stmt *st, bool by_rowid, store_stage_fn fn, void *userdata,
			struct sl_error *reterr)
{
	int r = 0, rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_record rec;

		if (by_rowid) {
			r = read_listed(s, sqlite3_column_int64(st, 0), &rec, reterr);
			rec.entries = -1;
		} else {
			read_record(st, &rec);
			rec.entries = sqlite3_column_int64(st, STAGE_NCOLUMNS);
		}
		if (r == 0)
			r = fn(&rec, userdata);
		if (r < 0)
			break;
	}
	if (r >= 0 && rc != SQLITE_DONE)
		r = store_fail(s, rc, reterr, "cannot list stages");
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r < 0 ? r : 0;
}

int store_stage_foreach(struct sl_store *s, bool all, const char *label, store_stage_fn fn, void *userdata,
			struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *own = NULL;
	sqlite3_stmt *st = NULL;
	int r;

	/* The kept statement, unless a caller lists again from inside fn
	 * while it is stepping: then this listing gets its own. */
	r = take_statement(s, all ? SQL_LIST_ALL : SQL_LIST_IN_FLIGHT, &own, &st);
	if (r < 0)
		return store_err(reterr, r, "cannot list stages");
	if (label)
		sqlite3_bind_text(st, 1, label, -1, SQLITE_STATIC);
	return step_listing(s, st, false, fn, userdata, reterr);
}

int store_stage_scan(struct sl_store *s, store_stage_fn fn, void *userdata, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *own = NULL;
	sqlite3_stmt *st = NULL;
	int r;

	r = take_statement(s, SQL_IN_FLIGHT_ROWIDS, &own, &st);
	if (r < 0)
		return store_err(reterr, r, "cannot list stages");
	return step_listing(s, st, true, fn, userdata, reterr);
}

int store_roots_foreach(struct sl_store *s, int (*fn)(const char *root, void *userdata), void *userdata,
			struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int r, rc;

	r = store_prepare(s, "SELECT DISTINCT root FROM stages", &st);
	if (r < 0)
		return store_err(reterr, r, "cannot list roots");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		char root[PATH_MAX];
		COPY_BLOB_COLUMN(root, st, 0);
		r = fn(root, userdata);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : store_fail(s, rc, reterr, "cannot list roots");
}
