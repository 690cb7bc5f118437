/* SPDX-License-Identifier: MIT */
/*
 * sl-basic.h: what every public stagelog header shares: the version, the
 * export marker and the caller-owned error report. Included by sl-store.h;
 * a user never needs to include it directly.
 *
 * Threads (the rule of every stagelog header; stagelog(3), THREAD SAFETY):
 * the library keeps no state that threads share but two caches of the
 * process's identity, published atomically, so any number of threads may
 * call it at once, each with its own objects. A struct sl_store (one SQLite
 * connection) and the stages begun on it are used by one thread at a time;
 * give each thread its own store, on the same database file or another. A
 * struct sl_error, like every report and options struct, belongs to one
 * call at a time: one per thread.
 */
#ifndef STAGELOG_SL_BASIC_H
#define STAGELOG_SL_BASIC_H

#include "sl-version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(SL_PUBLIC)
#define SL_PUBLIC __attribute__((visibility("default")))
#elif !defined(SL_PUBLIC)
#define SL_PUBLIC
#endif

/* Marks a function's old name, kept for programs built with it; the
 * compiler's warning names the new one. */
#if defined(__GNUC__)
#define SL_DEPRECATED(use) __attribute__((deprecated("use " use)))
#else
#define SL_DEPRECATED(use)
#endif

/*
 * The version of the stagelog library loaded at run time, "MAJOR.MINOR.PATCH"
 * (static storage, never NULL). It may be newer than the headers the program
 * was compiled against (SL_VERSION_STRING): the soname changes only when the
 * ABI breaks, and a minor release only adds (docs/interface.md, "Library").
 */
SL_PUBLIC const char *sl_version(void);

/* Set in struct sl_error.flags when the failure was about creating an output
 * (the staging root is unusable, a destination exists), not about reading. */
#define SL_ERROR_CANTCREAT 0x1u
/* Set by a failed release (sl_stage_release_id()) when the stage is left failed:
 * its removal could not finish, and the record says why. */
#define SL_ERROR_STAGE_FAILED 0x2u
/* Set by a failed release when the stage is published: it belongs to its
 * destination. */
#define SL_ERROR_STAGE_PUBLISHED 0x4u

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

#ifdef __cplusplus
}
#endif
#endif
