/* SPDX-License-Identifier: MIT */
/*
 * compat.c: owns the public names the library's functions had before they
 * took their header's module prefix (sl-stage.h: sl_stage_*, sl-recover.h:
 * sl_recover_*, sl-store.h: sl_store_*). Each is exported, under the same
 * version node, as a call of its new name, so that a program built with
 * the old name still loads and runs (docs/interface.md, "Library"); the
 * headers mark them deprecated.
 */
#include "sl-recover.h"
#include "sl-stage.h"
#include "sl-store.h"

int sl_release_id(struct sl_store *store, const char *id, struct sl_error *reterr)
{
	return sl_stage_release_id(store, id, reterr);
}

int sl_release_id_progress(struct sl_store *store, const char *id,
			   void (*progress)(const struct sl_progress *progress, void *userdata), void *userdata,
			   struct sl_error *reterr)
{
	return sl_stage_release_id_progress(store, id, progress, userdata, reterr);
}

int sl_publish_id(struct sl_store *store, const char *id, const char *dest, struct sl_error *reterr)
{
	return sl_stage_publish_id(store, id, dest, reterr);
}

int sl_list(struct sl_store *store, unsigned flags, const char *label, sl_stage_fn fn, void *userdata,
	    struct sl_error *reterr)
{
	return sl_recover_list(store, flags, label, fn, userdata, reterr);
}

int sl_show(struct sl_store *store, const char *id, sl_stage_fn stage_fn, sl_entry_fn entry_fn, void *userdata,
	    struct sl_error *reterr)
{
	return sl_recover_show(store, id, stage_fn, entry_fn, userdata, reterr);
}

int sl_resolve_id(struct sl_store *store, const char *prefix, char ret_id[SL_ID_SIZE], char (*cand)[SL_ID_SIZE],
		  size_t ncand, size_t *ret_ncand, struct sl_error *reterr)
{
	return sl_recover_resolve_id(store, prefix, ret_id, cand, ncand, ret_ncand, reterr);
}

int sl_forget(struct sl_store *store, const char *id, struct sl_error *reterr)
{
	return sl_recover_forget(store, id, reterr);
}

int sl_gc(struct sl_store *store, int64_t older_than_ms, struct sl_error *reterr)
{
	return sl_recover_gc(store, older_than_ms, reterr);
}

int sl_check(struct sl_store *store, const char *const *roots, size_t n_roots, unsigned flags,
	     struct sl_check_report *report, struct sl_error *reterr)
{
	return sl_recover_check(store, roots, n_roots, flags, report, reterr);
}

void sl_check_report_finish(struct sl_check_report *report)
{
	sl_recover_check_report_finish(report);
}

const char *sl_state_name(enum sl_state state)
{
	return sl_store_state_name(state);
}

int sl_state_in_flight(enum sl_state state)
{
	return sl_store_state_in_flight(state);
}
