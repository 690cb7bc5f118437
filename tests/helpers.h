/* SPDX-License-Identifier: MIT */
/* helpers.h: what the C test suites share: temporary roots and stores,
 * tree snapshots and comparisons, and searches for canary bytes. */
#ifndef STAGELOG_TEST_HELPERS_H
#define STAGELOG_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>

#define CANARY "CANARY-SECRET-5e1f"

/* A per-test sandbox: base is a fresh directory under /dev/shm (tmpfs),
 * root = base/root (not created), db = a fresh file path under /tmp (disk). */
struct sandbox {
	char base[256];
	char root[300];
	char dbdir[256];
	char db[300];
};

void sandbox_init(struct sandbox *sb);
void sandbox_finish(struct sandbox *sb);

/* Writes a file (creating parents) with contents and mode. */
void write_path(const char *path, const char *contents, mode_t mode);
/* mkdir -p with mode for the last component. */
void make_dir(const char *path, mode_t mode);

/* Number of names in a directory (0 when it does not exist). */
int count_entries(const char *dir);

/* A canonical listing of a tree: one line per path with kind, mode,
 * owner, size, a content hash (files) or target (symlinks), and the mtime
 * when with_mtime. Returns a malloc'd string. */
char *tree_snapshot(const char *dir, bool with_mtime);

/* True when needle occurs in the file's bytes (missing file: false). */
bool file_contains(const char *path, const char *needle);

/* True when needle occurs in any file under dir. */
bool tree_contains(const char *dir, const char *needle);

/* Builds the ~20-path sample tree used by many suites under dir:
 * directories, files (one holding CANARY), a symlink, modes 0755/0644/0600. */
void make_sample_tree(const char *dir);

/* rm -rf, for test cleanup only (never code under test). */
void remove_all(const char *path);

#endif
