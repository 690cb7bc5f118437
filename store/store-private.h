/* SPDX-License-Identifier: MIT */
/*
 * store-private.h: the store's internal API for stage/, recover/, cli/ and
 * the tests. No SQLite type, result code or SQL text crosses this header;
 * what only the files of store/ share is in store-internal.h.
 */
#ifndef STAGELOG_STORE_PRIVATE_H
#define STAGELOG_STORE_PRIVATE_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "fd-util.h"
#include "macro.h"
#include "proc.h"
#include "sl-store.h"

/* A stage id's length without its NUL. */
#define STORE_ID_LEN (SL_ID_SIZE - 1)

/* The most descriptors an open store holds: the database, its WAL and its
 * shared memory, and two temporary files SQLite may open for a statement
 * (a statement journal, a sorter). */
#define STORE_MAX_FDS 5

/* An entry's kind. STORE_KIND_BAD is none: what a row of the store that
 * does not decode (a tampered batch) reads as, and no check lets it by. */
enum store_kind { STORE_KIND_BAD = 0, STORE_KIND_DIR = 1, STORE_KIND_FILE = 2, STORE_KIND_SYMLINK = 3 };
enum store_entry_state { STORE_ENTRY_LOGGED = 0, STORE_ENTRY_REMOVED = 1 };

/* The room for a record's reason (redacted: why it failed), with its NUL;
 * a longer one is cut. */
#define STORE_REASON_SIZE 256

/* One stage record, as stored. */
struct store_record {
	int64_t rowid;
	char id[STORE_ID_LEN + 1];
	char label[LABEL_MAX + 1];
	char root[PATH_MAX];
	char topdir[LABEL_MAX + 1 + STORE_ID_LEN + 1];
	enum sl_state state;
	struct proc_owner owner;
	struct proc_owner claimer; /* valid when claimer.pid != 0 */
	bool have_inode;
	uint64_t dev, ino;
	int64_t btime;     /* the top directory's birth time in ns, 0 if unknown */
	bool have_root_id; /* the root's identity was recorded */
	uint64_t root_ino;
	int64_t root_btime;
	char dest[PATH_MAX]; /* where a publish is moving it, "" if none */
	bool root_volatile;  /* the root was tmpfs or ramfs when the stage began */
	int64_t created_ms, updated_ms;
	char reason[STORE_REASON_SIZE];
	int64_t entries; /* filled by listings */
};

/* One entry as read back; path points into storage owned by the reader. */
struct store_entry {
	int64_t seq;
	const char *path; /* raw bytes, not NUL-terminated in the store */
	size_t path_len;
	enum store_kind kind;
	enum store_entry_state state;
};

HIDDEN const char *store_kind_name(enum store_kind kind);

/* Inserts a new stage in state staging together with entry 0, the intent
 * for its top directory, and (when marker is not NULL) entry 1, the
 * marker file's path, in ONE durable (synchronous=FULL) transaction.
 * Fills rec->rowid. */
HIDDEN int store_stage_insert(struct sl_store *s, struct store_record *rec, const char *marker,
			      struct sl_error *reterr);

/* Which store this is, for the markers that bind a stage directory to it:
 * the store file's canonical path and its identity (inode and birth time,
 * which no other file shares, and which a rename keeps). */
struct store_identity {
	char path[PATH_MAX];
	uint64_t ino;
	int64_t btime;
};
HIDDEN const struct store_identity *store_identity(const struct sl_store *s);

/* Records, durably, where a ready stage is about to be renamed to;
 * -ESTALE when it is not ready any more. */
HIDDEN int store_stage_set_dest(struct sl_store *s, int64_t rowid, const char *dest, struct sl_error *reterr);

/*
 * Moves a stage from a state in from_mask (bit 1 << state) to state `to`,
 * with an optional redacted reason. Returns -ESTALE when the stage is not in
 * one of those states any more. durable asks for synchronous=FULL.
 */
HIDDEN int store_stage_transition(struct sl_store *s, int64_t rowid, unsigned from_mask, enum sl_state to,
				  const char *reason, bool durable, struct sl_error *reterr);

/*
 * Claims a batch of stages for recovery in one durable transaction. Each
 * claim is a compare-and-swap: stage i moves to recovering with claimer as
 * its claimer only if it is still in flight and its state and previous
 * claimer are still those in recs[i], so two recoverers never both win one
 * stage. ret_claimed[i] says which claims won (all false on failure).
 */
HIDDEN int store_stage_claim_batch(struct sl_store *s, const struct store_record *const *recs, size_t n,
				   const struct proc_owner *claimer, bool *ret_claimed, struct sl_error *reterr);

/* Marks a ready stage as claimed by a publish: claim_pid -1 (no recovery's
 * claim) and a fresh token as claim_start, a compare-and-swap on its state
 * and on the previous claimer read into rec (rec itself is not changed): a
 * recovery that read the old claim can no longer claim it. -ESTALE if it
 * changed meanwhile. Not durable. */
HIDDEN int store_stage_reclaim(struct sl_store *s, const struct store_record *rec, struct sl_error *reterr);

/* Calls fn with each distinct staging root named by a record. */
HIDDEN int store_roots_foreach(struct sl_store *s, int (*fn)(const char *root, void *userdata), void *userdata,
			       struct sl_error *reterr);

/*
 * One non-durable commit of a stage being built: entries first_seq.. (n of
 * them; paths packed in arena, offs[i]/lens[i] locating path i, kinds[i]
 * its enum store_kind), after the top directory's identity when confirm is
 * set, and before the move to ready when ready is. The identity is a compare-and-swap on the stager's
 * own staging record: a recovery that claimed the stage meanwhile has moved
 * it on, and the whole commit then fails with -ESTALE, the stager giving
 * the directory up rather than filling it.
 */
struct store_log {
	int64_t first_seq;
	size_t n;
	const char *arena;
	const uint32_t *offs;
	const uint16_t *lens;
	const uint8_t *kinds;
	const struct fileid *confirm;
	bool ready;
};
HIDDEN int store_stage_log(struct sl_store *s, int64_t rowid, const struct store_log *log, struct sl_error *reterr);

/*
 * Reads one page of the entries of stage rowid into page: those with seq <
 * from_seq, newest first, when descending, else those with seq > from_seq,
 * oldest first. At most STORE_PAGE_ENTRIES of them, their paths copied into
 * page->arena; a path that does not fit starts the next page, and
 * page->more says that one may follow. Returns the number read (0 at the
 * end).
 */
#define STORE_PAGE_ENTRIES 128
/* Small enough to stay off mmap, big enough for any path. */
#define STORE_PAGE_ARENA_SIZE (32 * 1024)
struct store_entry_page {
	struct store_entry e[STORE_PAGE_ENTRIES];
	char arena[STORE_PAGE_ARENA_SIZE];
	size_t used;
	bool more; /* the page filled up: more entries may follow */
};
HIDDEN int store_entries_page(struct sl_store *s, int64_t rowid, bool descending, int64_t from_seq,
			      struct store_entry_page *page, struct sl_error *reterr);

/* Fills rec from the stage whose id is exactly `id`; -ENOENT if none. */
HIDDEN int store_stage_get(struct sl_store *s, const char *id, struct store_record *rec, struct sl_error *reterr);
HIDDEN int store_stage_get_rowid(struct sl_store *s, int64_t rowid, struct store_record *rec, struct sl_error *reterr);
/* Fills only rec's id, label, root and topdir, for naming the stage to a
 * person: a statement of three columns, kept for the next. */
HIDDEN int store_stage_name(struct sl_store *s, const char *id, struct store_record *rec, struct sl_error *reterr);

/*
 * Resolves an id prefix (4 to STORE_ID_LEN lowercase hex digits, else -EINVAL)
 * to a full id in ret_id. Returns -ENOENT when none matches, -ENOTUNIQ when several do, with up to ncand
 * candidates copied to cand (each STORE_ID_LEN + 1 bytes) and *ret_ncand set.
 */
HIDDEN int store_resolve_prefix(struct sl_store *s, const char *prefix, char ret_id[STORE_ID_LEN + 1],
				char (*cand)[STORE_ID_LEN + 1], size_t ncand, size_t *ret_ncand,
				struct sl_error *reterr);

/* Calls fn for each stage (in-flight only unless all), optionally of one
 * label, oldest first, with rec->entries set. Stops when fn returns < 0,
 * and returns that. fn may list again (a nested listing). */
typedef int (*store_stage_fn)(const struct store_record *rec, void *userdata);
HIDDEN int store_stage_foreach(struct sl_store *s, bool all, const char *label, store_stage_fn fn, void *userdata,
			       struct sl_error *reterr);

/*
 * Calls fn for each in-flight stage, oldest first, as store_stage_foreach()
 * does but without entry counts (rec->entries is -1): recover's and
 * check's scan. It lists rowids, then reads each record by its rowid; the
 * listing of every column with the count costs SQLite about six times as
 * much to prepare (each result column gets its names and origin), which
 * a pass that finds nothing would pay for nothing. Both statements read
 * one snapshot, so fn must not write through s (a write would end it).
 */
HIDDEN int store_stage_scan(struct sl_store *s, store_stage_fn fn, void *userdata, struct sl_error *reterr);

/* Deletes the records (and entries) of finished stages updated at or
 * before cutoff_ms, in batches of short transactions, except published
 * ones: their destination is how check tells a published tree from an
 * orphan. Returns the number deleted. */
HIDDEN int store_gc(struct sl_store *s, int64_t cutoff_ms, struct sl_error *reterr);

/* Deletes one stage record and its entries. */
HIDDEN int store_stage_delete(struct sl_store *s, int64_t rowid, struct sl_error *reterr);

/*
 * For a program that is stagelog alone (cli/), called first thing in
 * main(): SQLite's process-wide settings, which the library leaves to the
 * program that links it. Each page cache starts without SQLite's bulk
 * allocation of 20 pages, which a short-lived process touches (about 17
 * page faults) and mostly never uses; and SQLite keeps no count of the
 * memory it holds (a global mutex around every malloc and free).
 */
HIDDEN void store_tune_process(void);

/* PRAGMA quick_check: writes "ok" or the first problem into buf. */
HIDDEN int store_quick_check(struct sl_store *s, char *buf, size_t size, struct sl_error *reterr);

/* Durability counters, for benchmarks and tests. */
struct store_counts {
	unsigned long commits;
	unsigned long durable_commits;
};
HIDDEN void store_stats(struct sl_store *s, struct store_counts *ret);

/* Test/benchmark only: make every commit durable (the naive mode). */
HIDDEN void store_set_naive(struct sl_store *s, bool naive);

#endif
