/* SPDX-License-Identifier: MIT */
/*
 * sl-stage.h: creating paths under a staging root, each logged in the store
 * before it exists, and removing them again.
 *
 * A stage owns one top directory ROOT/LABEL-ID (0700). Paths given to the
 * functions below are relative to that top directory. Every function
 * returns 0 or a negative errno; any failure inside a stage aborts it
 * before returning (its directory is gone and its record says aborted), and
 * *reterr says what failed, where (relative to the staging root) and why.
 *
 * Threads: a stage works through the store it was begun on, so a call on a
 * stage is a call on that store: one thread at a time for the store and its
 * stages together (sl-store.h). Stages of distinct stores may be built,
 * released and published at the same time in different threads. The owner
 * of a stage is the process, not the thread: a recovery in any thread of
 * the process counts the others' stages as live and leaves them alone.
 * Callbacks (progress) run in the calling thread. The cancel flag is for a
 * signal handler: another thread that wants to cancel sends the working
 * thread a signal (pthread_kill) rather than write the flag itself, which
 * C11 calls a data race.
 */
#ifndef STAGELOG_SL_STAGE_H
#define STAGELOG_SL_STAGE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sl-store.h"

#ifdef __cplusplus
extern "C" {
#endif

struct sl_stage;

/* How far a copy has come, for a person watching (see
 * struct sl_stage_options' progress). */
struct sl_progress {
	uint64_t done;  /* paths copied so far */
	uint64_t total; /* paths to copy in all, as the source was listed */
	uint64_t bytes; /* bytes of regular files copied so far */
};

/* Options for sl_stage_begin(); zero-initialise for the defaults. */
struct sl_stage_options {
	const char *label; /* [a-z0-9][a-z0-9_.-]{0,31}; NULL: "stage" */
	pid_t owner_pid;   /* 0: the calling process */
	/* When not NULL and it becomes non-zero (a signal handler sets it),
	 * the stage's calls fail with -ECANCELED between two paths and the
	 * stage is aborted: nothing is left on disk. */
	const volatile sig_atomic_t *cancel;
	/*
	 * When not NULL, sl_stage_copy_tree() (and so sl_oci_stage()) calls
	 * it in the caller's thread once the source is listed, then after
	 * every path it copied, with progress_userdata. It is called often
	 * (once a path): limit what it prints itself. It must not call back
	 * into the stage. Added after 0.1.0 at the end of the struct, so that
	 * a caller that zero-initialises the options is unaffected.
	 */
	void (*progress)(const struct sl_progress *progress, void *userdata);
	void *progress_userdata;
};

/*
 * Begins a stage under root (created 0700 if missing; refused if it is a
 * symlink, not a directory, group- or world-writable, or owned by another
 * user than the caller or root). Records the stage durably, then creates
 * the top directory and holds an exclusive flock on it until the stage is
 * freed. On success *ret owns the stage (free it with sl_stage_free()).
 *
 * First, before anything is created or recorded, it makes sure that the
 * stage could be undone: an abort needs a few dozen file descriptors
 * beyond those already open (a deep tree's removal holds up to 32
 * directories open). When the soft RLIMIT_NOFILE leaves fewer free, it is
 * raised toward the hard limit, by what is missing (a caller that execs
 * another program may want to give it its own limit back); when even the
 * hard limit leaves fewer, the call fails with -EMFILE.
 */
SL_PUBLIC int sl_stage_begin(struct sl_store *store, const char *root, const struct sl_stage_options *opts,
			     struct sl_stage **ret, struct sl_error *reterr);

/* Makes directory path (mode, e.g. 0755) inside the stage. */
SL_PUBLIC int sl_stage_mkdir(struct sl_stage *stage, const char *path, mode_t mode, struct sl_error *reterr);

/*
 * Writes a file at path from buf (len bytes) with mode (0 means 0600). The
 * file never has a name while it is incomplete: it is written unnamed
 * (O_TMPFILE) and linked in when whole. The contents never reach the store
 * or a message.
 */
SL_PUBLIC int sl_stage_write_file(struct sl_stage *stage, const char *path, const void *buf, size_t len, mode_t mode,
				  struct sl_error *reterr);

/*
 * Declares that a later sl_stage_write_file() will create the file at path:
 * its entry is logged with the next commit of entries (the one a
 * following sl_stage_copy_tree() makes before it creates anything), as the
 * newest of them, so that the file costs no commit of its own and is still
 * the first path the undo removes. The file itself is not created; an
 * expected file that is never written is forgotten by sl_stage_ready().
 * One expected file at a time: a second call replaces the first.
 */
SL_PUBLIC int sl_stage_expect_file(struct sl_stage *stage, const char *path, struct sl_error *reterr);

/* Makes a symlink at path pointing to target (never followed by stagelog). */
SL_PUBLIC int sl_stage_symlink(struct sl_stage *stage, const char *target, const char *path, struct sl_error *reterr);

/*
 * Copies the tree at src_dirfd (a directory fd, or AT_FDCWD with src) into
 * a new directory path inside the stage: directories, regular files and
 * symlinks (as links), with modes and mtimes, and ownership when running as
 * root. Never follows a symlink in the source; device nodes, FIFOs and
 * sockets are refused.
 */
SL_PUBLIC int sl_stage_copy_tree(struct sl_stage *stage, int src_dirfd, const char *src, const char *path,
				 struct sl_error *reterr);

/* Marks the stage ready (staging → ready). */
SL_PUBLIC int sl_stage_ready(struct sl_stage *stage, struct sl_error *reterr);

/* Removes the stage and marks it released (→ releasing → released). */
SL_PUBLIC int sl_stage_release(struct sl_stage *stage, struct sl_error *reterr);

/* Removes the stage and marks it aborted. */
SL_PUBLIC int sl_stage_abort(struct sl_stage *stage, struct sl_error *reterr);

/*
 * Renames the top directory of a ready stage to dest (never replacing an
 * existing path: -EEXIST), fsyncs both parents and marks it published.
 * stagelog never removes a published stage.
 */
SL_PUBLIC int sl_stage_publish(struct sl_stage *stage, const char *dest, struct sl_error *reterr);

/* Frees the stage, aborting it first if it was never finished (ready,
 * released, aborted or published). Accepts NULL. */
SL_PUBLIC void sl_stage_free(struct sl_stage *stage);

/* The stage's 32-hex-digit id, its label, and its top directory's path. */
SL_PUBLIC const char *sl_stage_id(const struct sl_stage *stage);
SL_PUBLIC const char *sl_stage_label(const struct sl_stage *stage);
SL_PUBLIC const char *sl_stage_path(const struct sl_stage *stage);

/* A directory fd of the top directory, owned by the stage. */
SL_PUBLIC int sl_stage_fd(const struct sl_stage *stage);

/*
 * Makes the stage's lock fd inheritable (clears FD_CLOEXEC) so that a
 * process started with exec keeps the stage alive while it runs, even if
 * the caller dies. Returns the fd.
 */
SL_PUBLIC int sl_stage_lock_inherit(struct sl_stage *stage, struct sl_error *reterr);

/*
 * Releases the stage with the given full id from another process (as
 * `stagelog release` does). A released, aborted or recovered stage is a
 * success with nothing to do (returns 0); a published one is -EINVAL (it
 * belongs to its destination); one whose lock is held by a live process, or
 * that a recovery is working on, is -EBUSY. Returns 1 when it removed
 * something; a removal that could not finish leaves the stage failed with a
 * reason and returns its negative errno. On failure, reterr->flags has
 * SL_ERROR_STAGE_FAILED when the stage is left failed (so also when it was
 * failed and could not be taken) and SL_ERROR_STAGE_PUBLISHED when it is
 * published.
 */
SL_PUBLIC int sl_stage_release_id(struct sl_store *store, const char *id, struct sl_error *reterr);

/*
 * sl_stage_release_id(), and when progress is not NULL, it is called with
 * userdata (in the caller's thread, once a logged path, so limit what it
 * prints) while the stage's logged paths are removed: done of total, the
 * paths the stage logged; bytes stay 0. Added after 0.1.0.
 */
SL_PUBLIC int sl_stage_release_id_progress(struct sl_store *store, const char *id,
					   void (*progress)(const struct sl_progress *progress, void *userdata),
					   void *userdata, struct sl_error *reterr);

/*
 * Publishes the ready stage with the given full id to dest (as `stagelog
 * publish` does).
 */
SL_PUBLIC int sl_stage_publish_id(struct sl_store *store, const char *id, const char *dest, struct sl_error *reterr);

/*
 * The names these functions had during 0.1.0's development, before they
 * took this header's prefix: exported still, each calling its new name,
 * for programs built with them. New code uses the names above.
 */
SL_PUBLIC SL_DEPRECATED("sl_stage_release_id") int sl_release_id(struct sl_store *store, const char *id,
								 struct sl_error *reterr);
SL_PUBLIC SL_DEPRECATED("sl_stage_release_id_progress") int sl_release_id_progress(
	struct sl_store *store, const char *id, void (*progress)(const struct sl_progress *progress, void *userdata),
	void *userdata, struct sl_error *reterr);
SL_PUBLIC SL_DEPRECATED("sl_stage_publish_id") int sl_publish_id(struct sl_store *store, const char *id,
								 const char *dest, struct sl_error *reterr);

#ifdef __cplusplus
}
#endif
#endif
