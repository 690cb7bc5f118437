/* SPDX-License-Identifier: MIT */
/*
 * txn.c: the store's write transactions. It owns their one beginning
 * (store_begin(): the sync level, BEGIN IMMEDIATE and its retries) and
 * their one end (store_txn_finish(): commit, or roll back), the busy
 * handler and the deadlines that bound every wait for a busy store, and
 * the commit counters that tests and benchmarks read.
 */
#include <time.h>
#include <unistd.h>

#include "store-internal.h"

#define MSEC_PER_SEC 1000
#define NSEC_PER_MSEC 1000000

int64_t store_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * MSEC_PER_SEC + ts.tv_nsec / NSEC_PER_MSEC;
}

/*
 * Waits for a busy store: short sleeps first, since a stagelog write
 * transaction lasts well under a millisecond, growing to 2 ms. SQLite's own
 * handler sleeps 1, 2, 5, 10, 15, 20, 25 ms..., which leaves concurrent
 * stagers mostly asleep. The wait ends at s->deadline: one deadline for a
 * whole store_begin() with its retries, one for the whole open (creation,
 * WAL switch and migration), now for the WAL's bound at close, or
 * BUSY_TIMEOUT_MS for any other statement, so "busy" is reported after
 * BUSY_TIMEOUT_MS, not a multiple. The open registers it with SQLite.
 */
int store_busy_wait(void *userdata, int count)
{
	static const unsigned steps_us[] = { 50, 100, 200, 400, 800, 1000, 2000 };
	struct sl_store *s = userdata;
	int64_t now = store_mono_ms();

	assert(count >= 0);
	if (count == 0 && !s->deadline_held)
		s->deadline = now + BUSY_TIMEOUT_MS;
	if (now >= s->deadline)
		return 0;
	usleep(steps_us[count < (int)ELEMENTSOF(steps_us) ? count : (int)ELEMENTSOF(steps_us) - 1]);
	return 1;
}

static int set_sync(struct sl_store *s, enum store_sync level)
{
	int r;

	if (s->sync_level == level)
		return 0;
	r = store_exec(s, level == STORE_SYNC_FULL ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
	if (r == 0)
		s->sync_level = level;
	return r;
}

/* BEGIN IMMEDIATE takes the write lock up front, so a transaction never
 * fails half-way with SQLITE_BUSY on its first write. The busy handler
 * waits; a few retries cover the cases where SQLite returns BUSY without
 * calling it; all within one deadline: the caller's when it holds one (the
 * open's covers a migration; the bound at close sets its own), else a new
 * one. Durable transactions (or every one, in naive mode) commit with
 * synchronous=FULL. */
int store_begin(struct sl_store *s, bool durable)
{
	bool outer = s->deadline_held;
	int r;

	assert(sqlite3_get_autocommit(s->db)); /* transactions do not nest */
	/* SQLite reads the safety level when a transaction starts and refuses
	 * to change it inside one, so it is chosen here. */
	durable = durable || s->naive;
	r = set_sync(s, durable ? STORE_SYNC_FULL : STORE_SYNC_NORMAL);
	if (r < 0)
		return r;
	s->txn_durable = durable;
	if (!outer) {
		s->deadline_held = true;
		s->deadline = store_mono_ms() + BUSY_TIMEOUT_MS;
	}
	for (;;) {
		r = store_exec(s, "BEGIN IMMEDIATE");
		if (r != -EBUSY || store_mono_ms() >= s->deadline)
			break;
		usleep(BUSY_RETRY_US);
	}
	s->deadline_held = outer;
	return r;
}

/* Rolls back the open transaction, if any. */
void store_rollback(struct sl_store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Commits the open transaction. Durable ones (begun with durable) sync the
 * WAL before they return (synchronous=FULL); the others only reach the WAL
 * and become durable with the next durable commit or checkpoint. The fault
 * seam counts every commit as a step. */
static int commit(struct sl_store *s)
{
	int r;

	r = fault_step();
	if (r == 0)
		r = store_exec(s, "COMMIT");
	if (r < 0) {
		store_rollback(s);
		return r;
	}
	s->commits++;
	if (s->txn_durable)
		s->durable_commits++;
	return 0;
}

/* The one way a write transaction ends: committed when r is 0, else
 * rolled back. Returns r, or commit's error. */
int store_txn_finish(struct sl_store *s, int r)
{
	if (r == 0)
		r = commit(s);
	if (r < 0)
		store_rollback(s);
	return r;
}

/* As store_txn_finish(), with the message: what (the operation) and the
 * store's error, or, for -ESTALE, that the stage changed state meanwhile. */
int store_txn_end(struct sl_store *s, int r, struct sl_error *reterr, const char *what)
{
	r = store_txn_finish(s, r);
	if (r == -ESTALE)
		return sl_err(reterr, r, "%s: record: it changed state meanwhile", what);
	return r < 0 ? store_err(reterr, r, what) : 0;
}

void store_stats(struct sl_store *s, struct store_counts *ret)
{
	ret->commits = s->commits;
	ret->durable_commits = s->durable_commits;
}

void store_set_naive(struct sl_store *s, bool naive)
{
	s->naive = naive;
}
