/* SPDX-License-Identifier: MIT */
/*
 * views.c: what operators and monitoring read: listings, one stage with its
 * entries, id prefixes; and the record keeping around them: forget and gc.
 * check, the scan for orphans, is check.c.
 */
#include <stdio.h>

#include "recover-private.h"

struct list_ctx {
	struct liveness_self here;
	sl_stage_fn fn;
	void *userdata;
};

/* A stage's path: ROOT/TOPDIR. */
static void record_path(const struct store_record *rec, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s", strcmp(rec->root, "/") ? rec->root : "", rec->topdir);
}

int recover_stage_where(struct sl_store *store, const char *id, char label[LABEL_MAX + 1], char *path, size_t path_size,
			struct sl_error *reterr)
{
	struct store_record rec;
	int r = store_stage_name(store, id, &rec, reterr);

	if (r < 0)
		return r;
	snprintf(label, LABEL_MAX + 1, "%s", rec.label);
	record_path(&rec, path, path_size);
	return 0;
}

static int emit(struct list_ctx *c, const struct store_record *rec)
{
	char path[STAGE_PATH_SIZE];
	struct sl_stage_info info = {
		.id = rec->id,
		.label = rec->label,
		.state = rec->state,
		.state_name = sl_store_state_name(rec->state) ? sl_store_state_name(rec->state) : "unknown",
		.root = rec->root,
		.path = path,
		.owner_pid = rec->owner.pid,
		.created_ms = rec->created_ms,
		.updated_ms = rec->updated_ms,
		.entries = rec->entries,
		.reason = rec->reason,
	};

	record_path(rec, path, sizeof(path));
	/* A finished stage has no owner to speak of; an in-flight one is
	 * live when recovery would leave it alone. */
	info.owner_alive = sl_store_state_in_flight(rec->state) && liveness_of(&c->here, rec) != LIVENESS_STALE;
	return c->fn(&info, c->userdata);
}

static int list_one(const struct store_record *rec, void *userdata)
{
	return emit(userdata, rec);
}

int sl_recover_list(struct sl_store *store, unsigned flags, const char *label, sl_stage_fn fn, void *userdata,
		    struct sl_error *reterr)
{
	struct list_ctx c = { .fn = fn, .userdata = userdata };
	int r = liveness_self_init(&c.here);

	if (r < 0)
		return sl_err(reterr, r, "cannot list stages: %s", strerror(-r));
	return store_stage_foreach(store, flags & SL_LIST_ALL, label, list_one, &c, reterr);
}

int sl_recover_show(struct sl_store *store, const char *id, sl_stage_fn stage_fn, sl_entry_fn entry_fn, void *userdata,
		    struct sl_error *reterr)
{
	_cleanup_free_ struct store_entry_page *page = NULL;
	struct list_ctx c = { .fn = stage_fn, .userdata = userdata };
	struct store_record rec;
	int64_t seq = -1;
	bool gone;
	int n, r;

	r = liveness_self_init(&c.here);
	if (r < 0)
		return sl_err(reterr, r, "cannot show stage: %s", strerror(-r));
	r = store_stage_get(store, id, &rec, reterr);
	if (r < 0)
		return r;
	page = malloc(sizeof(*page));
	if (!page)
		return sl_err(reterr, -ENOMEM, "cannot show stage: %s", strerror(ENOMEM));
	/* The entry count, for the stage line. */
	rec.entries = 0;
	while ((n = store_entries_page(store, rec.rowid, false, seq, page, reterr)) > 0) {
		rec.entries += n;
		seq = page->e[n - 1].seq;
	}
	if (n < 0)
		return n;
	if (stage_fn) {
		r = emit(&c, &rec);
		if (r < 0)
			return r;
	}
	/* An entry's state is derived, not stored: the undo does not rewrite
	 * the log, and a stage whose removal finished (released, recovered,
	 * aborted) has none of its paths left. Entries marked one by one by a
	 * stagelog before 0.2 keep their mark. */
	gone = rec.state == SL_STATE_RELEASED || rec.state == SL_STATE_RECOVERED || rec.state == SL_STATE_ABORTED;
	seq = -1;
	while (entry_fn && (n = store_entries_page(store, rec.rowid, false, seq, page, reterr)) > 0) {
		for (int i = 0; i < n; i++) {
			struct sl_entry_info e = {
				.seq = page->e[i].seq,
				.path = page->e[i].path,
				.path_len = page->e[i].path_len,
				.kind = store_kind_name(page->e[i].kind),
				.state = gone || page->e[i].state == STORE_ENTRY_REMOVED ? "removed" : "logged",
			};
			r = entry_fn(&e, userdata);
			if (r < 0)
				return r;
		}
		seq = page->e[n - 1].seq;
	}
	return n < 0 ? n : 0;
}

int sl_recover_resolve_id(struct sl_store *store, const char *prefix, char ret_id[SL_ID_SIZE], char (*cand)[SL_ID_SIZE],
			  size_t ncand, size_t *ret_ncand, struct sl_error *reterr)
{
	return store_resolve_prefix(store, prefix, ret_id, cand, ncand, ret_ncand, reterr);
}

int sl_recover_forget(struct sl_store *store, const char *id, struct sl_error *reterr)
{
	struct store_record rec;
	struct liveness_self here;
	int r;

	r = liveness_self_init(&here);
	if (r < 0)
		return sl_err(reterr, r, "cannot forget stage: %s", strerror(-r));
	r = store_stage_get(store, id, &rec, reterr);
	if (r < 0)
		return r;
	/* Only the record goes: the operator has dealt with the files. A live
	 * stage's record is what protects it, so it stays; a failed one is
	 * the operator's to drop whoever owns it. */
	if (sl_store_state_in_flight(rec.state) && rec.state != SL_STATE_FAILED &&
	    liveness_of(&here, &rec) != LIVENESS_STALE)
		return sl_err(reterr, -EINVAL, "cannot forget stage %s: it is live (owner or lock)", rec.id);
	return store_stage_delete(store, rec.rowid, reterr);
}

int sl_recover_gc(struct sl_store *store, int64_t older_than_ms, struct sl_error *reterr)
{
	if (older_than_ms < 0)
		return sl_err(reterr, -EINVAL, "cannot collect records: negative age");
	return store_gc(store, epoch_ms() - older_than_ms, reterr);
}
