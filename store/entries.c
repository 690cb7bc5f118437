/* SPDX-License-Identifier: MIT */
/*
 * entries.c: the entry log, each path of a stage logged before it exists.
 * It owns inserting entries, the non-durable logging commits of a stage
 * being built (with the top directory's identity and the move to ready),
 * and reading the entries back a page at a time.
 */
#include <string.h>

#include "store-internal.h"

const char *store_kind_name(enum store_kind kind)
{
	switch (kind) {
	case STORE_KIND_DIR:
		return "dir";
	case STORE_KIND_FILE:
		return "file";
	case STORE_KIND_SYMLINK:
		return "symlink";
	}
	return "unknown";
}

/* Inserts entry seq of stage rowid, path's len raw bytes of kind, in state
 * logged, inside the open transaction. */
int store_insert_entry(struct sl_store *s, int64_t rowid, int64_t seq, const void *path, size_t len,
		       enum store_kind kind)
{
	sqlite3_stmt *ins;
	int r = store_cached(s, SQL_INS_ENTRY, &ins);

	if (r < 0)
		return r;
	sqlite3_bind_int64(ins, 1, rowid);
	sqlite3_bind_int64(ins, 2, seq);
	sqlite3_bind_blob(ins, 3, path, (int)len, SQLITE_STATIC);
	sqlite3_bind_int(ins, 4, kind);
	return store_step_done(s, ins);
}

/* Records the top directory's identity on the stager's own staging record,
 * inside the open transaction: -ESTALE when a recovery claimed it. */
static int confirm_topdir(struct sl_store *s, int64_t rowid, const struct fileid *id)
{
	sqlite3_stmt *st;
	int r = store_cached(s, SQL_CONFIRM, &st);

	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, (int64_t)id->dev);
	sqlite3_bind_int64(st, 2, (int64_t)id->ino);
	sqlite3_bind_int64(st, 3, id->btime);
	sqlite3_bind_int64(st, 4, rowid);
	r = store_step_done(s, st);
	return r == 0 && sqlite3_changes(s->db) == 0 ? -ESTALE : r;
}

int store_stage_log(struct sl_store *s, int64_t rowid, const struct store_log *log, struct sl_error *reterr)
{
	int r;

	assert(log->n == 0 || (log->arena && log->offs && log->lens && log->kinds));
	r = store_begin(s, false);
	if (r == 0 && log->confirm) {
		r = confirm_topdir(s, rowid, log->confirm);
		if (r == -ESTALE) {
			store_rollback(s);
			return sl_err(reterr, -ESTALE, "cannot begin stage: record: a recovery claimed it meanwhile");
		}
	}
	for (size_t i = 0; r == 0 && i < log->n; i++)
		r = store_insert_entry(s, rowid, log->first_seq + (int64_t)i, log->arena + log->offs[i], log->lens[i],
				       (enum store_kind)log->kinds[i]);
	if (r == 0 && log->ready)
		r = store_transition(s, rowid, 1u << SL_STATE_STAGING, SL_STATE_READY, NULL);
	return store_txn_end(s, r, reterr, log->ready ? "cannot mark stage ready" : "cannot log entries");
}

/* Copies the row st is on into page's next entry; false when its path does
 * not fit what is left of the arena and the page already holds one, so
 * that it starts the next page instead of being cut short. */
static bool page_add(sqlite3_stmt *st, struct store_entry_page *page, int n)
{
	const void *p = sqlite3_column_blob(st, 1);
	size_t len = (size_t)sqlite3_column_bytes(st, 1);
	struct store_entry *e;

	assert(n >= 0 && n < (int)ELEMENTSOF(page->e));
	e = &page->e[n];
	/* One longer than the whole arena (only a tampered record has one)
	 * keeps its true length, which the validator refuses before reading
	 * a byte. */
	if (len > sizeof(page->arena) - page->used) {
		if (n > 0)
			return false;
		e->path_len = len;
		len = 0;
	} else {
		e->path_len = len;
	}
	if (len)
		memcpy(page->arena + page->used, p, len);
	e->seq = sqlite3_column_int64(st, 0);
	e->path = page->arena + page->used;
	e->kind = (enum store_kind)sqlite3_column_int(st, 2);
	e->state = (enum store_entry_state)sqlite3_column_int(st, 3);
	page->used += len;
	return true;
}

int store_entries_page(struct sl_store *s, int64_t rowid, bool descending, int64_t from_seq,
		       struct store_entry_page *page, struct sl_error *reterr)
{
	sqlite3_stmt *st;
	int n = 0, rc, r;

	page->used = 0;
	page->more = false;
	r = store_cached(s, descending ? SQL_PAGE_DESC : SQL_PAGE_ASC, &st);
	if (r < 0)
		return store_err(reterr, r, "cannot read entries");
	sqlite3_bind_int64(st, 1, rowid);
	sqlite3_bind_int64(st, 2, from_seq);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (!page_add(st, page, n)) {
			page->more = true;
			break;
		}
		if (++n == (int)ELEMENTSOF(page->e) || page->used == sizeof(page->arena)) {
			page->more = true;
			break;
		}
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_fail(s, rc, reterr, "cannot read entries");
	return n;
}
