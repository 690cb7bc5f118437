/* SPDX-License-Identifier: MIT */
/*
 * stages.c: the writes to stage records. It owns the states' names, the
 * insert of a new stage with its intent, every move between states (plain
 * transitions, the recovery claim, the publish's reclaim and destination),
 * and deleting records, one at a time or by gc. Each is one transaction of
 * txn.c; which of them sync is said where they begin.
 */
#include <string.h>
#include <unistd.h>

#include "store-internal.h"

/* Records a gc deletes per write transaction (why batches: store_gc()). */
#define GC_BATCH 500
/* A reclaim's token is the pid shifted past the bits a millisecond clock
 * changes within a process's life, xor the time. */
#define RECLAIM_TOKEN_PID_SHIFT 20
/* The first entries of every stage, logged with its record: the intent for
 * its top directory, and the marker file's path. */
#define SEQ_TOPDIR 0
#define SEQ_MARKER 1

static const char *const state_names[SL_STATE_COUNT_] = {
	[SL_STATE_STAGING] = "staging",     [SL_STATE_READY] = "ready",     [SL_STATE_RELEASING] = "releasing",
	[SL_STATE_RELEASED] = "released",   [SL_STATE_ABORTED] = "aborted", [SL_STATE_RECOVERING] = "recovering",
	[SL_STATE_RECOVERED] = "recovered", [SL_STATE_FAILED] = "failed",   [SL_STATE_PUBLISHED] = "published",
};

const char *sl_store_state_name(enum sl_state state)
{
	return (unsigned)state < SL_STATE_COUNT_ ? state_names[state] : NULL;
}

int sl_store_state_in_flight(enum sl_state state)
{
	return (unsigned)state < SL_STATE_COUNT_ && (IN_FLIGHT_MASK >> state & 1u);
}

/* Binds an owner's four columns (boot, pid, start, pidns) from parameter i. */
static void bind_owner(sqlite3_stmt *st, int i, const struct proc_owner *o)
{
	sqlite3_bind_text(st, i, o->boot_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, i + 1, o->pid);
	sqlite3_bind_int64(st, i + 2, (sqlite3_int64)o->start_time);
	sqlite3_bind_int64(st, i + 3, (sqlite3_int64)o->pidns);
}

/* Inserts the stage record itself and fills rec->rowid, inside the open
 * transaction. */
static int insert_record(struct sl_store *s, struct store_record *rec)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int rc, r;

	r = store_prepare(s,
			  "INSERT INTO stages (id, label, root, topdir, state, owner_boot, owner_pid, owner_start, "
			  "owner_pidns, created_at, updated_at, root_ino, root_btime, root_volatile) "
			  "VALUES (?, ?, ?, ?, " ST(STAGING) ", ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			  &st);
	if (r < 0)
		return r;
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
	if (rc != SQLITE_DONE)
		return store_sqlite_errno(s->db, rc);
	rec->rowid = sqlite3_last_insert_rowid(s->db);
	return 0;
}

int store_stage_insert(struct sl_store *s, struct store_record *rec, const char *marker, struct sl_error *reterr)
{
	int r;

	r = store_begin(s, true);
	if (r < 0)
		return store_err(reterr, r, "cannot record stage");
	r = insert_record(s, rec);
	if (r == 0)
		r = store_insert_entry(s, rec->rowid, SEQ_TOPDIR, rec->topdir, strlen(rec->topdir), STORE_KIND_DIR);
	/* Entry 1, the marker, in the same transaction: it is logged before
	 * it exists like every other path (docs/design.md, "Identity"). */
	if (r == 0 && marker)
		r = store_insert_entry(s, rec->rowid, SEQ_MARKER, marker, strlen(marker), STORE_KIND_FILE);
	/* The one durable commit of staging: the intent for the top directory
	 * must be on disk before the directory can exist. */
	return store_txn_end(s, r, reterr, "cannot record stage");
}

int store_stage_set_dest(struct sl_store *s, int64_t rowid, const char *dest, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int r;

	/* Durable: the rename that follows may reach the disk, and recovery
	 * must then find the tree where it went rather than forget it. */
	r = store_begin(s, true);
	if (r == 0)
		r = store_prepare(s, "UPDATE stages SET dest = ? WHERE rowid = ? AND state = " ST(READY), &st);
	if (r == 0) {
		sqlite3_bind_blob(st, 1, dest, (int)strlen(dest), SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, rowid);
		r = store_step_done(s, st);
		if (r == 0 && sqlite3_changes(s->db) == 0)
			r = -ESTALE;
	}
	return store_txn_end(s, r, reterr, "cannot update stage");
}

/* Runs the prepared state change inside the open transaction: -ESTALE when
 * the stage was not in a state of from_mask. */
int store_transition(struct sl_store *s, int64_t rowid, unsigned from_mask, enum sl_state to, const char *reason)
{
	sqlite3_stmt *st;
	int r = store_cached(s, SQL_TRANSITION, &st);

	assert((unsigned)to < SL_STATE_COUNT_);
	if (r < 0)
		return r;
	sqlite3_bind_int(st, 1, (int)to);
	sqlite3_bind_int64(st, 2, epoch_ms());
	if (reason)
		sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, rowid);
	sqlite3_bind_int64(st, 5, from_mask);
	r = store_step_done(s, st);
	return r == 0 && sqlite3_changes(s->db) == 0 ? -ESTALE : r;
}

int store_stage_transition(struct sl_store *s, int64_t rowid, unsigned from_mask, enum sl_state to, const char *reason,
			   bool durable, struct sl_error *reterr)
{
	int r;

	r = store_begin(s, durable);
	if (r < 0)
		return store_err(reterr, r, "cannot update stage");
	return store_txn_end(s, store_transition(s, rowid, from_mask, to, reason), reterr, "cannot update stage");
}

int store_stage_claim_batch(struct sl_store *s, const struct store_record *const *recs, size_t n,
			    const struct proc_owner *claimer, bool *ret_claimed, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int64_t now = epoch_ms();
	int r;

	assert(n == 0 || (recs && ret_claimed));
	r = store_begin(s, true);
	if (r < 0)
		return store_err(reterr, r, "cannot claim stages");
	r = store_prepare(s,
			  "UPDATE stages SET state = " ST(RECOVERING) ", updated_at = ?, claim_boot = ?, "
			  "claim_pid = ?, claim_start = ?, "
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
		r = store_step_done(s, st);
		ret_claimed[i] = r == 0 && sqlite3_changes(s->db) == 1;
	}
	/* Durable: a claim must not be lost while its removal goes on, or a
	 * second recoverer could start on the same stage after a power loss. */
	r = store_txn_end(s, r, reterr, "cannot claim stages");
	for (size_t i = 0; r < 0 && i < n; i++)
		ret_claimed[i] = false;
	return r;
}

int store_stage_reclaim(struct sl_store *s, const struct store_record *rec, struct sl_error *reterr)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
	int r;

	/* claim_pid -1 marks a claim that is not a recovery's (stage_liveness() looks
	 * at claims only while recovering); claim_start is a fresh token. */
	r = store_begin(s, false);
	if (r == 0)
		r = store_prepare(s,
				  "UPDATE stages SET claim_pid = -1, claim_start = ?, updated_at = ? WHERE rowid = ? "
				  "AND state = " ST(READY) " AND coalesce(claim_pid, 0) = ? "
				  "AND coalesce(claim_start, 0) = ?",
				  &st);
	if (r == 0) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)getpid() << RECLAIM_TOKEN_PID_SHIFT ^ epoch_ms());
		sqlite3_bind_int64(st, 2, epoch_ms());
		sqlite3_bind_int64(st, 3, rec->rowid);
		sqlite3_bind_int64(st, 4, rec->claimer.pid);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)rec->claimer.start_time);
		r = store_step_done(s, st);
		if (r == 0 && sqlite3_changes(s->db) == 0)
			r = -ESTALE;
	}
	return store_txn_end(s, r, reterr, "cannot publish stage");
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
		int r = store_prepare(s, sql[i], &st);

		if (r == 0) {
			sqlite3_bind_int64(st, 1, rowid);
			r = store_step_done(s, st);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

int store_stage_delete(struct sl_store *s, int64_t rowid, struct sl_error *reterr)
{
	int r = store_begin(s, false);

	if (r == 0)
		r = delete_record(s, rowid);
	return store_txn_end(s, r, reterr, "cannot delete stage record");
}

/* Reads up to GC_BATCH rowids of records gc may delete into ids, inside
 * the open transaction; *ret_n says how many. */
static int select_gc_batch(struct sl_store *s, int64_t cutoff_ms, int64_t ids[GC_BATCH], int *ret_n)
{
	_cleanup_(sqlite3_finalizep) sqlite3_stmt *sel = NULL;
	int n = 0, rc, r;

	r = store_prepare(s,
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
			r = store_sqlite_errno(s->db, rc);
	}
	*ret_n = n;
	return r;
}

int store_gc(struct sl_store *s, int64_t cutoff_ms, struct sl_error *reterr)
{
	int total = 0;

	/* Batches keep each write transaction short, so a gc of a large store
	 * never holds the write lock for long against a staging gateway. */
	for (;;) {
		int64_t ids[GC_BATCH];
		int n = 0, r;

		r = store_begin(s, false);
		if (r < 0)
			return store_err(reterr, r, "cannot collect records");
		r = select_gc_batch(s, cutoff_ms, ids, &n);
		for (int i = 0; r == 0 && i < n; i++)
			r = delete_record(s, ids[i]);
		r = store_txn_end(s, r, reterr, "cannot collect records");
		if (r < 0)
			return r;
		total += n;
		if (n < GC_BATCH)
			return total;
	}
}
