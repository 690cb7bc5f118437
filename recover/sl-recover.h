/* SPDX-License-Identifier: MIT */
/*
 * sl-recover.h: owner liveness, recovery of stale stages, and the read-side
 * views (listing, showing, id lookup, gc, check) built on them.
 *
 * Threads: every function here takes a store, and a store is used by one
 * thread at a time (sl-store.h); recoveries, listings and checks on
 * distinct stores run at once, also beside stages that other threads of
 * the process build, which a recovery counts as live (their owner is this
 * process). Callbacks run in the calling thread and must not use the store
 * they were called for. A report belongs to one call.
 */
#ifndef STAGELOG_SL_RECOVER_H
#define STAGELOG_SL_RECOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sl-stage.h"
#include "sl-store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SL_ID_SIZE, the size of a stage id with its NUL, comes from sl-store.h. */

/* One stage as listed. Pointers are valid during the callback only. */
struct sl_stage_info {
	const char *id;
	const char *label;
	enum sl_state state;
	const char *state_name;
	const char *root;
	const char *path; /* ROOT/LABEL-ID */
	long long owner_pid;
	bool owner_alive;   /* the stage counts as live: owner process or lock */
	int64_t created_ms; /* milliseconds since the epoch, UTC */
	int64_t updated_ms;
	int64_t entries;    /* number of logged entries */
	const char *reason; /* "" unless failed */
};

/* One entry as shown; path is relative to the root, raw bytes. */
struct sl_entry_info {
	int64_t seq;
	const char *path;
	size_t path_len;
	const char *kind;  /* "dir", "file", "symlink" */
	const char *state; /* "logged", "removed" */
};

typedef int (*sl_stage_fn)(const struct sl_stage_info *info, void *userdata);
typedef int (*sl_entry_fn)(const struct sl_entry_info *info, void *userdata);

#define SL_LIST_ALL 0x1u

/* Calls fn for each in-flight stage (every stage with SL_LIST_ALL), of one
 * label if label is not NULL, oldest first. Stops early and returns fn's
 * value when it is negative. */
SL_PUBLIC int sl_recover_list(struct sl_store *store, unsigned flags, const char *label, sl_stage_fn fn, void *userdata,
			      struct sl_error *reterr);

/* Calls stage_fn once for the stage with full id `id`, then entry_fn for
 * each of its entries in creation order (either may be NULL). -ENOENT if
 * there is no such stage. Stops early and returns a callback's value when
 * it is negative. */
SL_PUBLIC int sl_recover_show(struct sl_store *store, const char *id, sl_stage_fn stage_fn, sl_entry_fn entry_fn,
			      void *userdata, struct sl_error *reterr);

/*
 * Resolves an id or a unique prefix of at least 4 characters to the full id
 * in ret_id. -EINVAL for a malformed prefix, -ENOENT when nothing matches,
 * -ENOTUNIQ when several do: then up to ncand candidates are copied to cand
 * and their number to *ret_ncand.
 */
SL_PUBLIC int sl_recover_resolve_id(struct sl_store *store, const char *prefix, char ret_id[SL_ID_SIZE],
				    char (*cand)[SL_ID_SIZE], size_t ncand, size_t *ret_ncand, struct sl_error *reterr);

struct sl_recover_options {
	bool dry_run;             /* report only, change nothing */
	const char *root;         /* only stages under this root; NULL: all */
	const char *const *force; /* full ids to treat as stale even if live */
	size_t n_force;
	/* Called now and then with progress; may be NULL. */
	void (*progress)(size_t done, size_t total, void *userdata);
	void *userdata;
	/* When not NULL and it becomes non-zero (a signal handler sets it),
	 * the pass stops after the stage it is removing; stages it claimed
	 * and did not reach stay recovering and the next pass takes them. */
	const volatile sig_atomic_t *cancel;
};

struct sl_recover_failure {
	char id[SL_ID_SIZE];
	char reason[256];
};

/* Filled by sl_recover_run(); release with sl_recover_report_finish(). */
struct sl_recover_report {
	size_t examined;
	char (*recovered)[SL_ID_SIZE];
	size_t n_recovered;
	char (*live)[SL_ID_SIZE];
	size_t n_live;
	struct sl_recover_failure *failed;
	size_t n_failed;
	bool dry_run;
};

/*
 * For every stale in-flight stage: claims it (in batches), removes it with
 * the stage undo routine newest entry first, and marks it recovered; a
 * stage that cannot be removed becomes failed with a reason and recovery
 * goes on. Returns 0 when the pass ran (look at report->n_failed), or a
 * negative errno when it could not run at all.
 */
SL_PUBLIC int sl_recover_run(struct sl_store *store, const struct sl_recover_options *opts,
			     struct sl_recover_report *report, struct sl_error *reterr);

/* Frees what a report holds and zeroes it. Accepts NULL. */
SL_PUBLIC void sl_recover_report_finish(struct sl_recover_report *report);

/* Drops the record of a failed, stale or finished stage (full id) without
 * touching the filesystem. A live stage is refused with -EINVAL. */
SL_PUBLIC int sl_recover_forget(struct sl_store *store, const char *id, struct sl_error *reterr);

/* Deletes records of finished stages last updated at or before
 * now - older_than_ms. Returns the number deleted. */
SL_PUBLIC int sl_recover_gc(struct sl_store *store, int64_t older_than_ms, struct sl_error *reterr);

/* Filled by sl_recover_check(); release with sl_recover_check_report_finish(). */
struct sl_check_report {
	char integrity[256]; /* "ok" or SQLite's first complaint */
	char **orphans;      /* absolute paths */
	size_t n_orphans;
	char **removed;
	size_t n_removed;
	/* In-flight stages whose root path now leads to another directory
	 * (a symlink repointed, a directory replaced): full ids. */
	char (*root_moved)[SL_ID_SIZE];
	size_t n_root_moved;
};

#define SL_CHECK_REMOVE_ORPHANS 0x1u /* remove the orphans found */
#define SL_CHECK_RECORD_ROOTS 0x2u   /* scan the roots records name, too */

/*
 * Checks the store's integrity and scans each root in roots (and, with
 * SL_CHECK_RECORD_ROOTS, every root a record names) for orphans:
 * directories named like stage directories that no in-flight record owns.
 * With SL_CHECK_REMOVE_ORPHANS, and only when the store is sound, removes
 * each one that the caller owns and nobody holds locked, with the stage
 * undo routine's safe removal. A directory the store cannot vouch for is
 * never removed.
 */
SL_PUBLIC int sl_recover_check(struct sl_store *store, const char *const *roots, size_t n_roots, unsigned flags,
			       struct sl_check_report *report, struct sl_error *reterr);

/* Frees what a report holds and zeroes it. Accepts NULL. */
SL_PUBLIC void sl_recover_check_report_finish(struct sl_check_report *report);

/*
 * The names these functions had during 0.1.0's development, before they
 * took this header's prefix: exported still, each calling its new name,
 * for programs built with them. New code uses the names above.
 */
SL_PUBLIC SL_DEPRECATED("sl_recover_list") int sl_list(struct sl_store *store, unsigned flags, const char *label,
						       sl_stage_fn fn, void *userdata, struct sl_error *reterr);
SL_PUBLIC SL_DEPRECATED("sl_recover_show") int sl_show(struct sl_store *store, const char *id, sl_stage_fn stage_fn,
						       sl_entry_fn entry_fn, void *userdata, struct sl_error *reterr);
SL_PUBLIC SL_DEPRECATED("sl_recover_resolve_id") int sl_resolve_id(struct sl_store *store, const char *prefix,
								   char ret_id[SL_ID_SIZE], char (*cand)[SL_ID_SIZE],
								   size_t ncand, size_t *ret_ncand,
								   struct sl_error *reterr);
SL_PUBLIC SL_DEPRECATED("sl_recover_forget") int sl_forget(struct sl_store *store, const char *id,
							   struct sl_error *reterr);
SL_PUBLIC SL_DEPRECATED("sl_recover_gc") int sl_gc(struct sl_store *store, int64_t older_than_ms,
						   struct sl_error *reterr);
SL_PUBLIC SL_DEPRECATED("sl_recover_check") int sl_check(struct sl_store *store, const char *const *roots,
							 size_t n_roots, unsigned flags, struct sl_check_report *report,
							 struct sl_error *reterr);
SL_PUBLIC SL_DEPRECATED("sl_recover_check_report_finish") void sl_check_report_finish(struct sl_check_report *report);

#ifdef __cplusplus
}
#endif
#endif
