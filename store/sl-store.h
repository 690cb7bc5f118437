/* SPDX-License-Identifier: MIT */
/*
 * sl-store.h: the stagelog store, a SQLite log of stages and their entries.
 *
 * Every function returns 0 (or a non-negative count) on success and a
 * negative errno on failure. Detail goes into an optional caller-owned
 * struct sl_error, which never holds a secret, file contents or SQL text.
 *
 * Threads: distinct stores may be used at the same time from different
 * threads, on the same database file or not; open one per thread. One store
 * (a SQLite connection opened without its own mutex) and every stage begun
 * on it must not be used by two threads at once: a store passed from one
 * thread to another needs the caller's lock or join in between. The
 * functions that take no store (sl_store_state_name(), sl_store_state_in_flight(),
 * sl_store_schema_version(), sl_store_default_path()) are safe in any
 * thread; sl_store_default_path() reads the environment, which no thread
 * may change (setenv) meanwhile.
 */
#ifndef STAGELOG_SL_STORE_H
#define STAGELOG_SL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "sl-basic.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The size of a stage id: 32 lowercase hex digits and a NUL. */
#define SL_ID_SIZE 33

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
SL_PUBLIC const char *sl_store_state_name(enum sl_state state);

/* True when a stage in this state is in flight (may own files on disk). */
SL_PUBLIC int sl_store_state_in_flight(enum sl_state state);

struct sl_store;

/*
 * Opens the store at path, creating it (0600, missing parent folders 0700)
 * when it does not exist, and migrating an older schema. Equivalent to
 * sl_store_open_flags(path, 0, ret, reterr).
 *
 * Any number of processes may open (and so create) the same store at once;
 * creation, the switch to WAL and migration wait for each other within one
 * 5 s deadline, after which the open fails with -EBUSY.
 *
 * The store must be ours. It is refused with -EPERM, before SQLite opens
 * it, when the file or the folder holding it is owned by a user other than
 * the caller or root (a caller running as root accepts only root's, except
 * with SL_STORE_OPEN_INSPECT, below), or is
 * writable by group or others; when the path's last component is a symlink
 * or not a regular file; and when an existing -wal, -shm or -journal file
 * beside it breaks the same rules. The folders above the one holding the
 * file are not judged. A store refused for its owner is named with the
 * owner's name and uid, and how to run stagelog as that user.
 *
 * A store written by a newer program is refused with -EPROTO, a corrupt
 * one with -EBADMSG, and a SQLite database that holds tables but no
 * stagelog schema with -EBADMSG; in these cases nothing on disk is
 * changed. A path naming a directory gives -EISDIR. On success *ret owns
 * the handle; on failure *ret is untouched.
 */
SL_PUBLIC int sl_store_open(const char *path, struct sl_store **ret, struct sl_error *reterr);

/*
 * Flags for sl_store_open_flags().
 *
 * SL_STORE_OPEN_NOCREATE opens an existing store only, for callers that
 * only read (listing, showing, checking, metrics, completion): it creates
 * no file and no folder, and fails with -ENOENT when the store or its
 * folder does not exist. An existing store may still be written by the
 * open itself: SQLite may add its -wal and -shm files beside it, and an
 * empty or older store is brought to the current schema.
 */
#define SL_STORE_OPEN_NOCREATE 0x1u

/*
 * SL_STORE_OPEN_INSPECT implies SL_STORE_OPEN_NOCREATE and lets root (an
 * effective uid of 0) open a store that another user owns, for reading
 * only, where it would otherwise be refused with -EPERM. Such a store is
 * opened read-only and defensively: SQLite's read-only mode with the -shm
 * mapped read-only (or, when no WAL holds data, as an immutable file), no
 * schema migration, no trusted schema, no triggers, views or ATTACH, and an
 * authorizer that admits reads only. Nothing is created or written beside
 * it. Such a store is refused with -EPERM when its schema is older than
 * this program's (its owner upgrades it by opening it) or when its -wal
 * holds data but no -shm is beside it (SQLite would create one). Any call
 * that writes fails on such a handle. For any other caller or store the
 * flag is SL_STORE_OPEN_NOCREATE.
 */
#define SL_STORE_OPEN_INSPECT 0x2u

/*
 * As sl_store_open(), with flags (a bitwise or of SL_STORE_OPEN_*; an
 * unknown flag gives -EINVAL).
 */
SL_PUBLIC int sl_store_open_flags(const char *path, unsigned flags, struct sl_store **ret, struct sl_error *reterr);

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

/* The version of the SQLite library loaded at run time ("3.40.1"; static
 * storage, never NULL), for a program that reports what it runs on. */
SL_PUBLIC const char *sl_store_sqlite_version(void);

/* The names these functions had during 0.1.0's development, before they
 * took this header's prefix: exported still, each calling its new name,
 * for programs built with them. New code uses the names above. */
SL_PUBLIC SL_DEPRECATED("sl_store_state_name") const char *sl_state_name(enum sl_state state);
SL_PUBLIC SL_DEPRECATED("sl_store_state_in_flight") int sl_state_in_flight(enum sl_state state);

#ifdef __cplusplus
}
#endif
#endif
