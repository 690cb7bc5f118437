/* SPDX-License-Identifier: MIT */
/*
 * sl-store.h: the stagelog store, a SQLite log of stages and their entries.
 *
 * Every function returns 0 (or a non-negative count) on success and a
 * negative errno on failure. Detail goes into an optional caller-owned
 * struct sl_error, which never holds a secret, file contents or SQL text.
 */
#ifndef STAGELOG_SL_STORE_H
#define STAGELOG_SL_STORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(SL_PUBLIC)
#define SL_PUBLIC __attribute__((visibility("default")))
#elif !defined(SL_PUBLIC)
#define SL_PUBLIC
#endif

/* Set in struct sl_error.flags when the failure was about creating an output
 * (the staging root is unusable, a destination exists), not about reading. */
#define SL_ERROR_CANTCREAT 0x1u

/*
 * A caller-owned error report. code is the negative errno also returned;
 * msg is one redacted line ("what failed: where: reason") naming a path
 * relative to the staging root or a role, never a value.
 */
struct sl_error {
	int code;
	unsigned flags;
	char msg[512];
};

/* Stage states, as stored and as printed. */
enum sl_state {
	SL_STATE_STAGING,
	SL_STATE_READY,
	SL_STATE_RELEASING,
	SL_STATE_RELEASED,
	SL_STATE_ABORTED,
	SL_STATE_RECOVERING,
	SL_STATE_RECOVERED,
	SL_STATE_FAILED,
	SL_STATE_PUBLISHED,
	SL_STATE_COUNT_
};

/* The name of a state ("ready"), or NULL when out of range. */
SL_PUBLIC const char *sl_state_name(enum sl_state state);

/* True when a stage in this state is in flight (may own files on disk). */
SL_PUBLIC int sl_state_in_flight(enum sl_state state);

struct sl_store;

/*
 * Opens the store at path, creating it (0600, parent folders 0700) when it
 * does not exist, and migrating an older schema. A store written by a newer
 * program is refused with -EPROTO and a corrupt one with -EBADMSG; in both
 * cases nothing on disk is changed. On success *ret owns the handle.
 */
SL_PUBLIC int sl_store_open(const char *path, struct sl_store **ret, struct sl_error *reterr);

/* Closes the store. Accepts NULL. */
SL_PUBLIC void sl_store_close(struct sl_store *store);

/*
 * Writes the default store path into buf: $STAGELOG_DB, else
 * /var/lib/stagelog/stagelog.db for uid 0, else
 * ${XDG_STATE_HOME:-$HOME/.local/state}/stagelog/stagelog.db.
 * Returns -ENAMETOOLONG or -ENOENT (no HOME) on failure.
 */
SL_PUBLIC int sl_store_default_path(char *buf, size_t size);

/* The schema version this program writes. */
SL_PUBLIC int sl_store_schema_version(void);

#ifdef __cplusplus
}
#endif
#endif
