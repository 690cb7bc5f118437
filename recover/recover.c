/* SPDX-License-Identifier: MIT */
/*
 * recover.c: the recovery pass. Finds stale in-flight stages, claims them in
 * batches, and removes each with the stage undo routine; recovery itself
 * removes nothing. A stage that cannot be removed becomes failed with a
 * reason and the pass goes on; the next pass retries it.
 */
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>

#include "recover-private.h"

/* Stages claimed in one durable transaction. */
#define CLAIM_BATCH 256

/* The first capacity of the candidate list, doubled as it fills. */
#define CANDIDATES_FIRST_CAP 4

/* A claimed stage: the state recovery moves a stage from. */
#define FROM_RECOVERING (1u << SL_STATE_RECOVERING)

/* The reason a stage locked after its claim is left with. It is a record's
 * reason, so it must fit as the undo's do. */
#define LEFT_ALONE ": locked by a live process; left alone"
static_assert(sizeof(((struct store_record *)0)->topdir) + sizeof(LEFT_ALONE) <= STAGE_REASON_MAX,
	      "a top directory's name and LEFT_ALONE fit a reason");

struct candidates {
	struct store_record *recs;
	size_t n, cap;
};

struct scan {
	const struct sl_recover_options *opts;
	const char *root; /* the root filter, canonical */
	bool have_root_id;
	struct fileid root_id;
	struct sl_recover_report *report;
	/* This process's boot and pid namespace, read at the first record:
	 * a pass over an empty store reads nothing of /proc. */
	struct liveness_self here;
	bool here_known;
	int here_error;
	struct candidates c;
};

static int push_id(char (**arr)[SL_ID_SIZE], size_t *n, const char *id)
{
	char(*a)[SL_ID_SIZE] = realloc(*arr, (*n + 1) * sizeof(**arr));

	if (!a)
		return -ENOMEM;
	*arr = a;
	snprintf(a[*n], SL_ID_SIZE, "%s", id);
	(*n)++;
	return 0;
}

static int push_failure(struct sl_recover_report *rep, const char *id, const char *reason)
{
	struct sl_recover_failure *f = realloc(rep->failed, (rep->n_failed + 1) * sizeof(*f));

	if (!f)
		return -ENOMEM;
	rep->failed = f;
	snprintf(f[rep->n_failed].id, sizeof(f->id), "%s", id);
	/* The undo's reasons fit (it cuts them at STAGE_REASON_MAX); the
	 * precision says so to the compiler too. */
	snprintf(f[rep->n_failed].reason, sizeof(f->reason), "%.*s", (int)sizeof(f->reason) - 1, reason);
	rep->n_failed++;
	return 0;
}

static bool forced(const struct sl_recover_options *o, const char *id)
{
	for (size_t i = 0; o && i < o->n_force; i++)
		if (o->force[i] && strcmp(o->force[i], id) == 0)
			return true;
	return false;
}

/* Whether a record's root is the filter's: the same canonical path, or the
 * same directory (inode and birth time) under another name. */
static bool root_filter_matches(const struct scan *sc, const struct store_record *rec)
{
	if (strcmp(sc->root, rec->root) == 0)
		return true;
	return sc->have_root_id && rec->have_root_id && rec->root_ino == sc->root_id.ino && rec->root_btime != 0 &&
	       rec->root_btime == sc->root_id.btime;
}

static int scan_one(const struct store_record *rec, void *userdata)
{
	struct scan *sc = userdata;
	enum liveness l;

	if (sc->root && !root_filter_matches(sc, rec))
		return 0;
	sc->report->examined++;
	if (!sc->here_known) {
		sc->here_error = liveness_self_init(&sc->here);
		if (sc->here_error < 0)
			return sc->here_error;
		sc->here_known = true;
	}
	l = liveness_of(&sc->here, rec);
	if (l != LIVENESS_STALE && !forced(sc->opts, rec->id))
		return push_id(&sc->report->live, &sc->report->n_live, rec->id);
	if (sc->c.n == sc->c.cap) {
		size_t cap = sc->c.cap ? sc->c.cap * 2 : CANDIDATES_FIRST_CAP;
		struct store_record *r = realloc(sc->c.recs, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		sc->c.recs = r;
		sc->c.cap = cap;
	}
	sc->c.recs[sc->c.n++] = *rec;
	return 0;
}

/* Removes one claimed stage and records the outcome. The recoverer holds
 * the top directory's lock while it works, so that its own liveness is
 * visible the same way an owner's is. */
static int recover_one(struct sl_store *store, struct store_record *rec, bool force, struct sl_recover_report *rep)
{
	_cleanup_close_ int root = -1, top = -1;
	struct sl_error err = { 0 };
	int r;

	/* Only a stage this pass claimed is removed here. */
	assert(rec->state == SL_STATE_RECOVERING);
	/* Someone took the lock between the judgement and the claim (a
	 * publisher, a runtime): the stage is not ours to remove now. It is
	 * left failed, so that the next recovery judges it again. */
	if (!stage_record_check(rec) && stage_open_root(rec->root, &root) == 0) {
		top = openat(root, rec->topdir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (top >= 0 && stage_try_lock(top) < 0 && !force) {
			sl_err_replace(&err, -EBUSY, "%s" LEFT_ALONE, rec->topdir);
			(void)store_stage_transition(store, rec->rowid, FROM_RECOVERING, SL_STATE_FAILED, err.msg,
						     false, NULL);
			return push_failure(rep, rec->id, err.msg);
		}
	}
	r = stage_undo(store, rec, FROM_RECOVERING, SL_STATE_RECOVERED, NULL, &err);
	if (r < 0)
		return push_failure(rep, rec->id, err.msg);
	return push_id(&rep->recovered, &rep->n_recovered, rec->id);
}

/* Finds the candidates: every in-flight stage under the root filter that
 * is stale (or forced). Live ones go to the report. */
static int find_candidates(struct sl_store *store, struct scan *sc, char root[PATH_MAX], struct sl_error *reterr)
{
	const struct sl_recover_options *opts = sc->opts;
	int r;

	/* Any spelling of a root names it: the filter is compared with the
	 * records by canonical path and by identity. A root that is gone is
	 * matched by its spelling alone. */
	if (opts && opts->root) {
		_cleanup_close_ int fd = -1;

		r = stage_canonical_root(opts->root, root, PATH_MAX);
		if (r == -ENOENT || r == -ENOTDIR)
			r = stage_absolute_root(opts->root, root, PATH_MAX);
		else if (r == 0 && stage_open_root(root, &fd) == 0 && fd_fileid(fd, &sc->root_id) == 0)
			sc->have_root_id = true;
		if (r < 0)
			return sl_err(reterr, r, "cannot recover: bad root '%s'", opts->root);
		sc->root = root;
	}
	/* Forced ids must name in-flight stages; a finished one is never
	 * touched and an unknown one is a usage error. */
	for (size_t i = 0; opts && i < opts->n_force; i++) {
		struct store_record rec;
		r = store_stage_get(store, opts->force[i], &rec, reterr);
		if (r < 0)
			return r;
	}
	r = store_stage_scan(store, scan_one, sc, reterr);
	if (r < 0 && sc->here_error < 0)
		return sl_err(reterr, r, "cannot recover: reading this process's identity: %s", strerror(-r));
	return r == -ENOMEM ? sl_err(reterr, r, "cannot recover: %s", strerror(ENOMEM)) : r;
}

/* Claims the candidates in batches (one durable transaction per
 * CLAIM_BATCH stages, not one per stage) and removes each one it won. Each
 * claim is a compare-and-swap, so a stage another recoverer won meanwhile
 * is skipped. A cancel stops after the stage in hand. */
static int claim_and_remove(struct sl_store *store, struct scan *sc, const struct proc_owner *me,
			    struct sl_error *reterr)
{
	const struct sl_recover_options *opts = sc->opts;
	size_t done = 0;
	int r = 0;

	for (size_t b = 0; b < sc->c.n && r == 0; b += CLAIM_BATCH) {
		const struct store_record *batch[CLAIM_BATCH];
		bool claimed[CLAIM_BATCH];
		size_t n = sc->c.n - b < CLAIM_BATCH ? sc->c.n - b : CLAIM_BATCH;

		for (size_t i = 0; i < n; i++)
			batch[i] = &sc->c.recs[b + i];
		r = store_stage_claim_batch(store, batch, n, me, claimed, reterr);
		for (size_t i = 0; i < n && r == 0; i++) {
			struct store_record *rec = &sc->c.recs[b + i];

			if (opts && opts->cancel && *opts->cancel)
				return sl_err(reterr, -ECANCELED, "recovery interrupted; the next pass finishes it");
			if (claimed[i]) {
				rec->state = SL_STATE_RECOVERING;
				rec->claimer = *me;
				r = recover_one(store, rec, forced(opts, rec->id), sc->report);
			}
			done++;
			if (opts && opts->progress)
				opts->progress(done, sc->c.n, opts->userdata);
		}
	}
	return r == -ENOMEM ? sl_err(reterr, r, "cannot recover: %s", strerror(ENOMEM)) : r;
}

int sl_recover_run(struct sl_store *store, const struct sl_recover_options *opts, struct sl_recover_report *report,
		   struct sl_error *reterr)
{
	struct proc_owner me = { 0 };
	char root[PATH_MAX];
	struct scan sc = { .opts = opts, .report = report };
	int r;

	if (!store || !report)
		return sl_err(reterr, -EINVAL, "cannot recover: missing argument");
	memset(report, 0, sizeof(*report));
	report->dry_run = opts && opts->dry_run;
	r = find_candidates(store, &sc, root, reterr);
	if (r == 0 && report->dry_run) {
		for (size_t i = 0; i < sc.c.n && r == 0; i++)
			r = push_id(&report->recovered, &report->n_recovered, sc.c.recs[i].id);
		if (r < 0)
			sl_err(reterr, r, "cannot recover: %s", strerror(-r));
	} else if (r == 0) {
		/* Nothing is claimed that could not then be removed, nor
		 * without this process's identity, which a claim records. */
		if (sc.c.n > 0)
			r = stage_reserve_fds("recover", reterr);
		if (r == 0 && sc.c.n > 0 && (r = proc_identity(0, &me)) < 0)
			r = sl_err(reterr, r, "cannot recover: reading this process's identity: %s", strerror(-r));
		/* A pass that found nothing writes and syncs nothing; the
		 * WAL's length is the store's business when it closes. */
		if (r == 0)
			r = claim_and_remove(store, &sc, &me, reterr);
	}
	free(sc.c.recs);
	return r;
}

void sl_recover_report_finish(struct sl_recover_report *report)
{
	if (!report)
		return;
	free(report->recovered);
	free(report->live);
	free(report->failed);
	memset(report, 0, sizeof(*report));
}
