/* SPDX-License-Identifier: MIT */
/*
 * stage-private.h: what recover/, cli/ and the tests need from stage/: the
 * path validators and root checks (path.c), safe resolution beneath a
 * directory (path.c), the one undo routine (undo.c, undo-entries.c) and the
 * tree removal it uses (rm-tree.h); and, at the end, what the files of
 * stage/ share about a stage in progress.
 */
#ifndef STAGELOG_STAGE_PRIVATE_H
#define STAGELOG_STAGE_PRIVATE_H

#include <stdbool.h>
#include <sys/types.h>

#include "fd-util.h"
#include "rm-tree.h"
#include "sl-stage.h"
#include "store-private.h"

/* The longest name (one path component) and the longest path, NUL not
 * included, that a stage logs: Linux's NAME_MAX, and PATH_MAX less its NUL. */
#define STAGE_NAME_MAX 255
#define STAGE_PATH_MAX 4095

/* True when id is 32 lowercase hex digits. */
HIDDEN bool stage_id_valid(const char *id);

/*
 * Checks a logged path lexically: relative, non-empty components, no "."
 * or "..", no NUL, no component over 255 bytes, at most 4095 bytes. Returns
 * NULL when it is clean, else a short reason (no path bytes in it).
 */
HIDDEN const char *stage_path_check(const char *path, size_t len);

/*
 * Opens the directory at path (len bytes, already checked by stage_path_check)
 * beneath dirfd, following no symlink and crossing no mount. Uses openat2
 * with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
 * RESOLVE_NO_XDEV, or, when openat2 is missing or filtered (ENOSYS, EPERM),
 * one component at a time with O_NOFOLLOW and a mount-id check. flags are
 * the open flags (O_PATH or O_RDONLY; O_DIRECTORY, O_NOFOLLOW and
 * O_CLOEXEC are added). A symlink on the way is -ELOOP, a mount -EXDEV.
 */
HIDDEN int stage_open_beneath(int dirfd, const char *path, size_t len, int flags);

/* Test seam: pretend openat2 is unavailable (as under seccomp). */
HIDDEN void stage_open_beneath_force_fallback(bool force);

/* The bound of the listing the logging walk keeps for the copy walk
 * (copy.c), in bytes; tests lower it to take the walk that reads every
 * directory a second time. */
HIDDEN extern size_t stage_copy_list_max;

/* True when id is the directory recorded as dev/ino/btime: the same inode
 * and birth time, or, where either birth time is unknown (0), the same
 * inode and device. */
HIDDEN bool stage_fileid_matches(uint64_t dev, uint64_t ino, int64_t btime, const struct fileid *id);

/* True when id is the staging root the record began in (always true for a
 * record without a recorded root identity). */
HIDDEN bool stage_root_matches(const struct store_record *rec, const struct fileid *id);

/* 0 when the record's root path still leads, through a chain nobody else
 * can write, to the directory the stage began in, or when the stage went
 * with an earlier boot; -ESTALE when it leads to another one, to nothing,
 * to something that is not a directory, or through another user's
 * directory; another negative errno when the root cannot be read. */
HIDDEN int stage_root_check(const struct store_record *rec);

/* Whether the stage's files went with an earlier boot: its root was
 * memory-backed when it began, in a boot that is not this one. */
HIDDEN bool stage_gone_with_boot(const struct store_record *rec);

/* NULL when the record's id, label, top directory name and root are
 * sound, else why not. Nothing is opened for a record that fails. */
HIDDEN const char *stage_record_check(const struct store_record *rec);

/* NULL when entry e of rec is a clean path inside the stage's own top
 * directory (entry 0 the top directory itself) of a known kind, else why
 * not. */
HIDDEN const char *stage_entry_check(const struct store_record *rec, const struct store_entry *e);

/*
 * The most descriptors the undo holds at once: the tree walk's open
 * directories (MAX_OPEN_DIRS, rm-tree.h), plus the one it is opening (its O_PATH fd and its fd for
 * reading, before the oldest ancestor is closed); the staging root, the
 * verified top directory, the cached parent of an entry and that parent
 * opened for reading; and stage_open_beneath()'s fd for the component it walks.
 */
#define STAGE_UNDO_MAX_FDS (MAX_OPEN_DIRS + 2 + 4 + 1)

/* What a stage holds while a failing call aborts it: the stage's staging
 * root, and the call's parent directory and the file it was writing
 * (sl_stage_write_file()). The top directory's fd is closed first. */
#define STAGE_HELD_FDS 3

/*
 * The descriptors a stage must find free when it begins, beyond those
 * already open: enough for the worst case of its abort, the undo run from
 * inside a failing call, with the store's files too should they not be open
 * yet. A stage that begins with fewer would create its top directory and
 * then be unable to remove it; so sl_stage_begin() raises the soft
 * RLIMIT_NOFILE if needed, and refuses with -EMFILE before it records
 * anything when even the hard limit leaves fewer.
 */
#define STAGE_RESERVE_FDS (STAGE_UNDO_MAX_FDS + STORE_MAX_FDS + STAGE_HELD_FDS)

/* Makes sure that STAGE_RESERVE_FDS more descriptors can be open before
 * something that may have to undo a stage starts (begin, release, recover,
 * check --remove-orphans): too low a `ulimit -n` then fails cleanly, with
 * -EMFILE and nothing touched, instead of half way through a removal. */
HIDDEN int stage_reserve_fds(const char *what, struct sl_error *reterr);

/* The longest reason an undo gives (and a failed stage records), NUL
 * included: the rest of a struct sl_error's message is room for the
 * caller's own words around it. undo.c cuts the reason to it where it is
 * stored; a tree removal's reasons (RMTREE_REASON_MAX) fit it whole. */
#define STAGE_REASON_MAX 256

/* Where stage_undo() reports how far the removal of the logged paths has
 * come (sl_stage_release_id_progress()); NULL: nowhere. */
struct stage_undo_progress {
	void (*fn)(const struct sl_progress *progress, void *userdata);
	void *userdata;
	struct sl_progress p; /* total: the paths logged; bytes stay 0 */
};

/*
 * The undo routine: the only code in stagelog that removes a staged path.
 * Validates every entry of the record first (a bad one: -EBADMSG, nothing
 * removed), opens the staging root by its recorded path and checks its
 * identity, opens the stage's top directory in it and checks it is the one
 * the stage created (its inode and birth time, or inode and device where no
 * birth time is known, match the record), removes the entries newest first
 * beneath that verified top directory without following a symlink or
 * entering a mount, then the top directory's tree if it is still that
 * directory, and fsyncs the root; the store is only read meanwhile. At the end, in one
 * transaction, it marks the entries removed and moves the stage from a
 * state in from_mask to `done`. ENOENT counts as done. On failure (the
 * paths removed so far stay removed, and the stage moves to `failed` with
 * the reason where the store takes it) *reterr (not NULL) holds the code
 * and a redacted explanation, at most STAGE_REASON_MAX bytes, which is
 * also the failed stage's recorded reason, and the return value is
 * negative: -EBADMSG (a record fails validation), -EXDEV (a mount in the
 * way), -ESTALE (an identity mismatch), or the errno of the removal that
 * failed.
 */
HIDDEN int stage_undo(struct sl_store *store, const struct store_record *rec, unsigned from_mask, enum sl_state done,
		      struct stage_undo_progress *progress, struct sl_error *reterr);

/* Step 4 of the undo (undo-entries.c): removes the logged entries of rec
 * newest first beneath top_fd, the verified top directory, reading them
 * from the store (page, n entries already read into it when one_page).
 * Returns the first failure, with its reason in *reterr. */
HIDDEN int stage_undo_entries(struct sl_store *store, const struct store_record *rec, int top_fd,
			      struct store_entry_page *page, bool one_page, int n, struct stage_undo_progress *progress,
			      struct sl_error *reterr);

/* Writes root as stagelog records it: absolute (from the working directory,
 * symlinks not resolved), "." and empty components dropped, without
 * trailing slashes. -EINVAL for a path with a ".." component or one that
 * comes down to "/" itself, -ENAMETOOLONG when it leaves no room for a
 * LABEL-ID below it in size bytes (tests/test-path.c holds the table). */
HIDDEN int stage_absolute_root(const char *root, char *buf, size_t size);

/* Takes the exclusive lock on a stage's top directory without waiting for
 * its holder: a few short retries ride over a liveness probe's shared lock
 * (held for microseconds); a real holder still gets -EWOULDBLOCK. */
HIDDEN int stage_try_lock(int top_fd);

/*
 * Opens a staging root (O_RDONLY, so that it can be fsynced) by its
 * canonical absolute path, one component at a time from "/", and proves
 * that nobody else can move it: -ELOOP when any component is a symlink or
 * not a directory, -EPERM when any directory on the way is owned by another
 * user, or writable by group or others without the sticky bit, or the root
 * itself is writable by group or others (*ret_bad, when given, is then the
 * length of the offending prefix of root), -ENOENT when a component is
 * missing. Every root stagelog acts on is opened here (docs/design.md,
 * "Identity").
 */
HIDDEN int stage_open_root_chain(const char *root, int *ret_fd, size_t *ret_bad);
HIDDEN int stage_open_root(const char *root, int *ret_fd);

/* The canonical spelling of an existing root: stage_absolute_root() of its
 * realpath(). Two spellings of one directory give one string. */
HIDDEN int stage_canonical_root(const char *root, char *buf, size_t size);

/* The marker: a small file in every stage's top directory, logged as
 * entry 1 and written right after the directory is made and locked, that
 * binds the directory to its store and its id (marker.c). */
#define STAGE_MARKER_NAME ".stagelog"
/* A marker's size at most: its store's path, and room for the magic line,
 * the stage id and the store's inode and birth time. */
#define STAGE_MARKER_MAX (PATH_MAX + 128)
struct stage_marker {
	char id[STORE_ID_LEN + 1];
	struct store_identity store;
};
HIDDEN int stage_marker_write(int top_fd, const char *id, const struct store_identity *store);
/* -ENOENT without a marker, -EBADMSG for one that is not a marker. */
HIDDEN int stage_marker_read(int top_fd, struct stage_marker *ret);
/* Whether m binds its directory to stage id of this store. */
HIDDEN bool stage_marker_names(const struct stage_marker *m, const char *id, const struct store_identity *store);

/* ---- Inside stage/: the stage object and its entry log. ---- */

/* A state as a bit of a from_mask (store_stage_transition()). */
#define STATE_BIT(s) (1u << (s))

#define STAGE_LOG_BATCH 1024
#define STAGE_LOG_ARENA (128 * 1024)

/* How entries are logged: the default batches them; the other two exist so
 * that benchmarks measure, rather than assume, what logging costs. */
enum stage_log_mode {
	STAGE_LOG_BATCHED, /* one transaction per STAGE_LOG_BATCH entries, no sync */
	STAGE_LOG_OFF,     /* no entries at all (benchmark 1's baseline) */
	STAGE_LOG_NAIVE,   /* one durable transaction per entry (benchmark 8) */
};

struct sl_stage {
	struct sl_store *store;
	enum stage_log_mode log_mode;
	const volatile sig_atomic_t *cancel;                                  /* see struct sl_stage_options */
	void (*progress)(const struct sl_progress *progress, void *userdata); /* likewise */
	void *progress_userdata;
	struct store_record rec;
	int root_fd; /* the staging root, O_RDONLY so that it can be fsynced */
	int top_fd;  /* the top directory; holds the stage's flock */
	char path[PATH_MAX];
	int64_t next_seq;
	/* The top directory's identity, recorded with the next commit
	 * (stage_log_flush()): set by sl_stage_begin(), cleared once in. */
	bool confirm_pending;
	struct fileid top_id;
	/* A file the caller will write, logged with the next commit before
	 * creation (sl_stage_expect_file()), so that it costs none of its own. */
	enum { EXPECT_NONE, EXPECT_PENDING, EXPECT_LOGGED } expect;
	size_t expect_len;
	char expect_path[STAGE_PATH_MAX];
	/* Entries logged but not yet committed; see stage_log(). */
	size_t n;
	size_t used;
	uint32_t offs[STAGE_LOG_BATCH];
	uint16_t lens[STAGE_LOG_BATCH];
	uint8_t kinds[STAGE_LOG_BATCH];
	char arena[STAGE_LOG_ARENA];
};

/* Logs the entry topdir/path (path relative to the top directory) before
 * the caller creates it (entries.c). See docs/design.md for why entries
 * inside the top directory are batched, not committed one by one. */
HIDDEN int stage_log(struct sl_stage *st, const char *path, size_t len, enum store_kind kind, struct sl_error *reterr);

/* Benchmarks only: sets how the stage logs entries from now on. */
HIDDEN void stage_set_log_mode(struct sl_stage *st, enum stage_log_mode mode);

/* Commits the logged entries not yet in the store, an expected file last. */
HIDDEN int stage_log_flush(struct sl_stage *st, struct sl_error *reterr);

/* Commits the entries in memory, with the top directory's confirmation if
 * it is pending and the move to ready if ready: one commit. A confirmation
 * that finds the stage claimed by a recovery gives the top directory up
 * (stage_give_up_top()): -EAGAIN. */
HIDDEN int stage_log_commit(struct sl_stage *st, bool ready, struct sl_error *reterr);

/* 0 when st is a stage still staging, else -EINVAL saying why `what` (the
 * operation, for the message) cannot go on. */
HIDDEN int stage_check_staging(struct sl_stage *st, const char *what, struct sl_error *reterr);

/* True when the caller asked the stage to stop (a signal arrived). */
static inline bool stage_cancelled(const struct sl_stage *st)
{
	return st->cancel && *st->cancel;
}

/* Aborts the stage after a failure inside one of its calls (the entries
 * in memory logged if the store takes them, everything removed by the
 * undo, the record aborted or failed) and returns r, the call's error. */
HIDDEN int stage_abort_on_error(struct sl_stage *st, int r);

/* Gives up a top directory that a recovery claimed before the stager could
 * confirm it (begin.c): the record is the recovery's now, so the directory
 * (still empty but for what a racing process put there) is removed, id
 * being its identity, and the stage is left recovering. Returns -EAGAIN
 * with *reterr set. */
HIDDEN int stage_give_up_top(struct sl_stage *st, const struct fileid *id, struct sl_error *reterr);

/* Removes the stage with the undo routine, which moves its record to `to`
 * (from one of from_mask), or to failed with the reason when the removal
 * could not finish; rec->state follows. `what` names the operation in
 * *reterr ("release"). */
HIDDEN int stage_undo_to(struct sl_store *store, struct store_record *rec, unsigned from_mask, enum sl_state to,
			 const char *what, struct stage_undo_progress *progress, struct sl_error *reterr);

/* Moves a stage to releasing before its removal and returns the states the
 * removal may then finish it from, or 0 (with *reterr set) when the stage
 * changed state meanwhile. */
HIDDEN unsigned stage_begin_release(struct sl_store *store, struct store_record *rec, struct sl_error *reterr);

/* Moves a ready stage's top directory (top_fd, rec->topdir in root_fd) to
 * dest and records it published, in the order finish.c explains; every
 * refusal before the rename leaves the stage ready and untouched. */
HIDDEN int stage_publish(struct sl_store *store, struct store_record *rec, int root_fd, int top_fd, const char *dest,
			 struct sl_error *reterr);

/* Opens the directory holding path (relative to the top directory) beneath
 * the top directory, and points *ret_name at path's last component. */
HIDDEN int stage_open_parent(struct sl_stage *st, const char *path, const char **ret_name, struct sl_error *reterr);

#endif
