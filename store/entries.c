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
	case STORE_KIND_BAD:
		break;
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

/* Inserts log's entries first .. first + n - 1 as one batch row (a single
 * entry as a row of its own), inside the open transaction; bytes is the
 * length of their paths. */
static int insert_batch(struct sl_store *s, int64_t rowid, const struct store_log *log, size_t first, size_t n,
			size_t bytes)
{
	_cleanup_free_ unsigned char *blob = NULL;
	sqlite3_stmt *ins;
	size_t used = 0;
	int r;

	assert(n > 0 && n <= STORE_PAGE_ENTRIES && bytes <= STORE_PAGE_ARENA_SIZE);
	if (n == 1)
		return store_insert_entry(s, rowid, log->first_seq + (int64_t)first, log->arena + log->offs[first],
					  log->lens[first], (enum store_kind)log->kinds[first]);
	r = store_cached(s, SQL_INS_BATCH, &ins);
	if (r < 0)
		return r;
	blob = malloc(n * STORE_BATCH_HEAD + bytes);
	if (!blob)
		return -ENOMEM;
	for (size_t i = first; i < first + n; i++) {
		blob[used++] = log->kinds[i];
		blob[used++] = (unsigned char)(log->lens[i] & 0xff);
		blob[used++] = (unsigned char)(log->lens[i] >> 8);
		memcpy(blob + used, log->arena + log->offs[i], log->lens[i]);
		used += log->lens[i];
	}
	sqlite3_bind_int64(ins, 1, rowid);
	sqlite3_bind_int64(ins, 2, log->first_seq + (int64_t)first);
	sqlite3_bind_blob(ins, 3, blob, (int)used, SQLITE_STATIC);
	sqlite3_bind_int64(ins, 4, (int64_t)n);
	/* Reset and unbound: no pointer to the blob outlives it. */
	return store_step_done(s, ins);
}

/* Inserts every entry of log, a batch to a row: as many as one page of
 * store_entries_page() holds. */
static int insert_log(struct sl_store *s, int64_t rowid, const struct store_log *log)
{
	size_t first = 0, bytes = 0;
	int r = 0;

	for (size_t i = 0; r == 0 && i < log->n; i++) {
		if (i - first == STORE_PAGE_ENTRIES || bytes + log->lens[i] > STORE_PAGE_ARENA_SIZE) {
			r = insert_batch(s, rowid, log, first, i - first, bytes);
			first = i;
			bytes = 0;
		}
		bytes += log->lens[i];
	}
	if (r == 0 && log->n > first)
		r = insert_batch(s, rowid, log, first, log->n - first, bytes);
	return r;
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
	if (r == 0)
		r = insert_log(s, rowid, log);
	if (r == 0 && log->ready)
		r = store_transition(s, rowid, 1u << SL_STATE_STAGING, SL_STATE_READY, NULL);
	return store_txn_end(s, r, reterr, log->ready ? "cannot mark stage ready" : "cannot log entries");
}

/* Makes page's entry n the one a row that does not decode reads as: kind
 * STORE_KIND_BAD, which every check refuses. */
static void page_add_bad(struct store_entry_page *page, int n, int64_t seq)
{
	struct store_entry *e = &page->e[n];

	*e = (struct store_entry){ .seq = seq, .path = page->arena + page->used, .kind = STORE_KIND_BAD };
}

/* Copies one entry, its path of len bytes at p, into page's entry n
 * (checked to fit by the caller). */
static void page_put(struct store_entry_page *page, int n, int64_t seq, const void *p, size_t len, int kind, int state)
{
	struct store_entry *e = &page->e[n];

	if (len)
		memcpy(page->arena + page->used, p, len);
	*e = (struct store_entry){ .seq = seq,
				   .path = page->arena + page->used,
				   .path_len = len,
				   .kind = (enum store_kind)kind,
				   .state = (enum store_entry_state)state };
	page->used += len;
}

/*
 * Decodes the batch row st is on into page from entry *n on, newest first
 * when descending; false when it does not fit what is left of the page
 * and the page already holds entries, so that it starts the next page. A
 * batch that does not decode (only a tampered one) reads as one
 * STORE_KIND_BAD entry.
 */
static bool page_add_batch(sqlite3_stmt *st, struct store_entry_page *page, int *n, bool descending)
{
	const unsigned char *blob = sqlite3_column_blob(st, 1);
	size_t size = (size_t)sqlite3_column_bytes(st, 1), off = 0, bytes;
	int64_t seq = sqlite3_column_int64(st, 0), count = sqlite3_column_int64(st, 4);
	int room = (int)ELEMENTSOF(page->e) - *n;

	if (count < 2 || count > STORE_PAGE_ENTRIES || size < (size_t)count * STORE_BATCH_HEAD ||
	    seq > INT64_MAX - count) {
		page_add_bad(page, (*n)++, seq);
		return true;
	}
	bytes = size - (size_t)count * STORE_BATCH_HEAD;
	if (count > room || bytes > sizeof(page->arena) - page->used) {
		if (*n > 0)
			return false;
		page_add_bad(page, (*n)++, seq);
		return true;
	}
	for (int64_t i = 0; i < count; i++) {
		size_t len;
		int k = descending ? (int)(count - 1 - i) : (int)i;

		if (size - off < STORE_BATCH_HEAD ||
		    (len = (size_t)blob[off + 1] | (size_t)blob[off + 2] << 8) > size - off - STORE_BATCH_HEAD) {
			page_add_bad(page, (*n)++, seq);
			return true;
		}
		page_put(page, *n + k, seq + i, blob + off + STORE_BATCH_HEAD, len, blob[off], STORE_ENTRY_LOGGED);
		off += STORE_BATCH_HEAD + len;
	}
	if (off != size) {
		page_add_bad(page, (*n)++, seq);
		return true;
	}
	*n += (int)count;
	return true;
}

/* Copies the row st is on into page from entry *n on; false when it does
 * not fit what is left and the page already holds one, so that it starts
 * the next page instead of being cut short. */
static bool page_add(sqlite3_stmt *st, struct store_entry_page *page, int *n, bool descending)
{
	const void *p = sqlite3_column_blob(st, 1);
	size_t len = (size_t)sqlite3_column_bytes(st, 1);

	assert(*n >= 0 && *n < (int)ELEMENTSOF(page->e));
	if (sqlite3_column_int(st, 2) == STORE_ROW_BATCH)
		return page_add_batch(st, page, n, descending);
	/* One longer than the whole arena (only a tampered record has one)
	 * keeps its true length, which the validator refuses before reading
	 * a byte. */
	if (len > sizeof(page->arena) - page->used) {
		if (*n > 0)
			return false;
		page_put(page, *n, sqlite3_column_int64(st, 0), p, 0, sqlite3_column_int(st, 2),
			 sqlite3_column_int(st, 3));
		page->e[(*n)++].path_len = len;
		return true;
	}
	page_put(page, (*n)++, sqlite3_column_int64(st, 0), p, len, sqlite3_column_int(st, 2),
		 sqlite3_column_int(st, 3));
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
		if (!page_add(st, page, &n, descending) || n == (int)ELEMENTSOF(page->e) ||
		    page->used == sizeof(page->arena)) {
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
