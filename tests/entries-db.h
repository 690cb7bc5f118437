/* SPDX-License-Identifier: MIT */
/*
 * entries-db.h: the tests' own reading and rewriting of the entries table,
 * straight through SQLite, as docs/design.md describes its rows ("The
 * store"): a row is one entry, or a batch of n entries numbered from its
 * seq, each as its kind (1 byte), its path's length (2 bytes,
 * little-endian) and the path. It is written apart from store/entries.c on
 * purpose, so that a test checks the format rather than the code.
 */
#ifndef STAGELOG_TESTS_ENTRIES_DB_H
#define STAGELOG_TESTS_ENTRIES_DB_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

struct db_entry {
	int64_t seq;
	int kind;
	int state;
	size_t len;
	char path[16384]; /* more than any tampered entry the tests write */
};

/* Calls fn with every entry of stage rowid, oldest first; a row that does
 * not decode fails the test. */
void db_entries(sqlite3 *db, int64_t stage, void (*fn)(const struct db_entry *e, void *userdata), void *userdata);

/* Rewrites entry seq of stage rowid wherever it is stored: its kind when
 * kind >= 0, its path (len bytes) when path is not NULL. */
void db_tamper_entry(sqlite3 *db, int64_t stage, int64_t seq, int kind, const void *path, size_t len);

/* Rewrites every entry path of stage rowid as prefix followed by what
 * comes after its first cut bytes. */
void db_reprefix_entries(sqlite3 *db, int64_t stage, size_t cut, const char *prefix);

#endif
