/* SPDX-License-Identifier: MIT */
/* entries-db.c: see entries-db.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "entries-db.h"

/* A batch row's kind column (store-internal.h's STORE_ROW_BATCH). */
#define ROW_BATCH 16
#define HEAD 3

struct row {
	int64_t seq;
	bool batch;
	size_t n;
	struct db_entry *e;
};

/* Reads every row of stage, decoded; returns how many, in *ret. */
static size_t read_rows(sqlite3 *db, int64_t stage, struct row **ret)
{
	sqlite3_stmt *q;
	struct row *rows = NULL;
	size_t nrows = 0;

	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT seq, path, kind, state, n FROM entries WHERE stage = ? ORDER BY "
					    "seq",
					    -1, &q, NULL),
			 SQLITE_OK);
	sqlite3_bind_int64(q, 1, stage);
	while (sqlite3_step(q) == SQLITE_ROW) {
		const unsigned char *p = sqlite3_column_blob(q, 1);
		size_t size = (size_t)sqlite3_column_bytes(q, 1), off = 0;
		struct row *r;

		rows = realloc(rows, (nrows + 1) * sizeof(*rows));
		assert_non_null(rows);
		r = &rows[nrows++];
		r->seq = sqlite3_column_int64(q, 0);
		r->batch = sqlite3_column_int(q, 2) == ROW_BATCH;
		r->n = r->batch ? (size_t)sqlite3_column_int64(q, 4) : 1;
		r->e = calloc(r->n, sizeof(*r->e));
		assert_non_null(r->e);
		for (size_t i = 0; i < r->n; i++) {
			struct db_entry *e = &r->e[i];

			e->seq = r->seq + (int64_t)i;
			e->state = sqlite3_column_int(q, 3);
			if (!r->batch) {
				e->kind = sqlite3_column_int(q, 2);
				e->len = size;
				assert_true(size < sizeof(e->path));
				memcpy(e->path, p, size);
				continue;
			}
			assert_true(size - off >= HEAD);
			e->kind = p[off];
			e->len = (size_t)p[off + 1] | (size_t)p[off + 2] << 8;
			assert_true(e->len <= size - off - HEAD && e->len < sizeof(e->path));
			memcpy(e->path, p + off + HEAD, e->len);
			off += HEAD + e->len;
		}
		if (r->batch)
			assert_int_equal(off, size);
	}
	sqlite3_finalize(q);
	*ret = rows;
	return nrows;
}

static void free_rows(struct row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(rows[i].e);
	free(rows);
}

/* Writes row r back as it now is. */
static void write_row(sqlite3 *db, int64_t stage, const struct row *r)
{
	unsigned char *blob = NULL;
	size_t size = 0;
	sqlite3_stmt *q;
	int kind;

	if (r->batch) {
		for (size_t i = 0; i < r->n; i++) {
			const struct db_entry *e = &r->e[i];

			blob = realloc(blob, size + HEAD + e->len);
			assert_non_null(blob);
			blob[size] = (unsigned char)e->kind;
			blob[size + 1] = (unsigned char)(e->len & 0xff);
			blob[size + 2] = (unsigned char)(e->len >> 8);
			memcpy(blob + size + HEAD, e->path, e->len);
			size += HEAD + e->len;
		}
		kind = ROW_BATCH;
	} else {
		kind = r->e[0].kind;
	}
	assert_int_equal(sqlite3_prepare_v2(db, "UPDATE entries SET path = ?, kind = ? WHERE stage = ? AND seq = ?", -1,
					    &q, NULL),
			 SQLITE_OK);
	if (r->batch)
		sqlite3_bind_blob(q, 1, blob, (int)size, SQLITE_TRANSIENT);
	else
		sqlite3_bind_blob(q, 1, r->e[0].path, (int)r->e[0].len, SQLITE_TRANSIENT);
	sqlite3_bind_int(q, 2, kind);
	sqlite3_bind_int64(q, 3, stage);
	sqlite3_bind_int64(q, 4, r->seq);
	assert_int_equal(sqlite3_step(q), SQLITE_DONE);
	assert_int_equal(sqlite3_changes(db), 1);
	sqlite3_finalize(q);
	free(blob);
}

void db_entries(sqlite3 *db, int64_t stage, void (*fn)(const struct db_entry *e, void *userdata), void *userdata)
{
	struct row *rows;
	size_t n = read_rows(db, stage, &rows);

	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < rows[i].n; k++)
			fn(&rows[i].e[k], userdata);
	free_rows(rows, n);
}

void db_tamper_entry(sqlite3 *db, int64_t stage, int64_t seq, int kind, const void *path, size_t len)
{
	struct row *rows;
	size_t n = read_rows(db, stage, &rows);
	bool found = false;

	for (size_t i = 0; i < n && !found; i++) {
		struct row *r = &rows[i];

		if (seq < r->seq || seq >= r->seq + (int64_t)r->n)
			continue;
		struct db_entry *e = &r->e[seq - r->seq];
		if (kind >= 0)
			e->kind = kind;
		if (path) {
			assert_true(len < sizeof(e->path));
			memcpy(e->path, path, len);
			e->len = len;
		}
		write_row(db, stage, r);
		found = true;
	}
	free_rows(rows, n);
	assert_true(found);
}

void db_reprefix_entries(sqlite3 *db, int64_t stage, size_t cut, const char *prefix)
{
	struct row *rows;
	size_t n = read_rows(db, stage, &rows), pl = strlen(prefix);

	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < rows[i].n; k++) {
			struct db_entry *e = &rows[i].e[k];
			char tail[sizeof(e->path)];
			size_t tl = e->len > cut ? e->len - cut : 0;

			memcpy(tail, e->path + (e->len - tl), tl);
			assert_true(pl + tl < sizeof(e->path));
			memcpy(e->path, prefix, pl);
			memcpy(e->path + pl, tail, tl);
			e->len = pl + tl;
		}
		write_row(db, stage, &rows[i]);
	}
	free_rows(rows, n);
}
