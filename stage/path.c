/* SPDX-License-Identifier: MIT */
/*
 * path.c: the validators (ids, logged paths, records and their entries,
 * staging roots as written and as found on disk), the one way to resolve a
 * logged path, and the one way to open a staging root. Nothing in stagelog
 * hands a path glued from a root and a record to a syscall: it is checked
 * here, then resolved from a directory fd.
 */
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "stage-private.h"

/* For tests only (stage_open_beneath() without openat2): set before the calls it
 * is meant for and never while another thread stages, so that the threads
 * that read it need no synchronisation. */
static bool force_fallback;

void stage_open_beneath_force_fallback(bool force)
{
	force_fallback = force;
}

bool stage_id_valid(const char *id)
{
	return strlen(id) == STORE_ID_LEN && strspn(id, "0123456789abcdef") == STORE_ID_LEN;
}

const char *stage_path_check(const char *path, size_t len)
{
	size_t comp = 0;

	if (len == 0)
		return "empty path";
	if (len > STAGE_PATH_MAX)
		return "path longer than " STRINGIFY(STAGE_PATH_MAX) " bytes";
	if (memchr(path, '\0', len))
		return "NUL byte in path";
	if (path[0] == '/')
		return "absolute path";
	for (size_t i = 0; i <= len; i++) {
		if (i < len && path[i] != '/') {
			comp++;
			continue;
		}
		if (comp == 0)
			return "empty path component";
		if (comp > STAGE_NAME_MAX)
			return "path component longer than " STRINGIFY(STAGE_NAME_MAX) " bytes";
		if ((comp == 1 && path[i - 1] == '.') || (comp == 2 && path[i - 1] == '.' && path[i - 2] == '.'))
			return "'.' or '..' in path";
		comp = 0;
	}
	return NULL;
}

/* Checks the record itself: a tampered id, label, top directory name or
 * root must not steer a removal anywhere. */
const char *stage_record_check(const struct store_record *rec)
{
	char top[sizeof(rec->topdir)];

	if (!stage_id_valid(rec->id))
		return "bad stage id";
	if (!label_valid(rec->label))
		return "bad label";
	snprintf(top, sizeof(top), "%s-%s", rec->label, rec->id);
	if (strcmp(top, rec->topdir) != 0)
		return "top directory name does not match label and id";
	if (rec->root[0] != '/' || stage_path_check(rec->root + 1, strlen(rec->root + 1)) != NULL)
		return "staging root is not a clean absolute path";
	return NULL;
}

/* Checks that an entry lies inside the stage's own top directory. */
const char *stage_entry_check(const struct store_record *rec, const struct store_entry *e)
{
	size_t tl = strlen(rec->topdir);
	const char *why;

	if (e->kind == STORE_KIND_BAD)
		return "a batch of entries that does not decode";
	why = stage_path_check(e->path, e->path_len);
	if (why)
		return why;
	if (e->path_len < tl || memcmp(e->path, rec->topdir, tl) != 0 || (e->path_len > tl && e->path[tl] != '/'))
		return "outside the stage's top directory";
	if ((e->seq == 0) != (e->path_len == tl))
		return "top directory entry out of place";
	if (e->kind != STORE_KIND_DIR && e->kind != STORE_KIND_FILE && e->kind != STORE_KIND_SYMLINK)
		return "unknown kind";
	return NULL;
}

bool stage_fileid_matches(uint64_t dev, uint64_t ino, int64_t btime, const struct fileid *id)
{
	if (ino != id->ino)
		return false;
	/* Inode and birth time name one directory on one file system, across
	 * reboots and whatever number its disk gets. Without a birth time
	 * (recorded or readable) only the device number can tell. */
	if (btime != 0 && id->btime != 0)
		return btime == id->btime;
	return dev == id->dev;
}

bool stage_root_matches(const struct store_record *rec, const struct fileid *id)
{
	if (!rec->have_root_id)
		return true; /* recorded before schema 2: nothing to compare */
	return id->ino == rec->root_ino && (rec->root_btime == 0 || id->btime == 0 || id->btime == rec->root_btime);
}

/*
 * Whether the stage's files went with an earlier boot: its root was
 * memory-backed when it began, and the stage was begun in another boot.
 * Nothing on a tmpfs or ramfs outlives a reboot, so whatever the root path
 * holds now (nothing, or a directory that tmpfiles.d or RuntimeDirectory=
 * made anew) cannot hold the stage.
 */
bool stage_gone_with_boot(const struct store_record *rec)
{
	char boot[BOOT_ID_LEN + 1];

	return rec->root_volatile && proc_boot_id(boot) == 0 && strcmp(boot, rec->owner.boot_id) != 0;
}

int stage_root_check(const struct store_record *rec)
{
	_cleanup_close_ int fd = -1;
	struct fileid id;
	int r = stage_open_root(rec->root, &fd);

	if (r == 0) {
		r = fd_fileid(fd, &id);
		if (r < 0)
			return r;
		if (stage_root_matches(rec, &id))
			return 0;
		r = -ESTALE;
	}
	if (r != -ENOENT && r != -ESTALE && r != -ELOOP && r != -ENOTDIR && r != -EPERM)
		return r;
	/* Only the boot rule proves a stage gone without its root. */
	return stage_gone_with_boot(rec) ? 0 : -ESTALE;
}

/* One step of a walk down path (len bytes) from *cur: opens the component
 * at *i beneath *cur, never through a symlink (-ELOOP) and never up (".."
 * and "." are -EINVAL: the validators refuse them already), with flags if
 * it is the last one and O_PATH otherwise, and puts it in *cur. *i moves to
 * the next component; *ret_end, when given, gets the end of this one. */
static int walk_step(int *cur, const char *path, size_t len, size_t *i, int flags, size_t *ret_end)
{
	char name[STAGE_NAME_MAX + 1];
	size_t n = 0;
	int next;

	while (*i < len && path[*i] != '/' && n < STAGE_NAME_MAX)
		name[n++] = path[(*i)++];
	name[n] = '\0';
	if (ret_end)
		*ret_end = *i;
	while (*i < len && path[*i] == '/')
		(*i)++;
	if (n == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EINVAL;
	/* O_NOFOLLOW | O_DIRECTORY: a symlink is ENOTDIR, refused like any
	 * other non-directory. */
	next = openat(*cur, name, (*i >= len ? flags : O_PATH) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (next < 0)
		return errno == ENOTDIR ? -ELOOP : negerrno();
	closep(cur);
	*cur = next;
	return 0;
}

/* The fallback walk: one component at a time with O_PATH | O_NOFOLLOW, so a
 * symlink anywhere fails with ELOOP, and a mount-id compare after each step,
 * so a mount anywhere fails with EXDEV. */
static int open_beneath_walk(int dirfd, const char *path, size_t len, int flags)
{
	_cleanup_close_ int cur = -1;
	uint64_t mnt, m;
	bool root;
	size_t i = 0;
	int r;

	cur = openat(dirfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0)
		return negerrno();
	r = fd_mount_id(cur, &mnt, &root);
	if (r < 0)
		return r;
	while (i < len) {
		r = walk_step(&cur, path, len, &i, flags, NULL);
		if (r < 0)
			return r;
		r = fd_mount_id(cur, &m, &root);
		if (r < 0)
			return r;
		if (m != mnt || root)
			return -EXDEV;
	}
	if (len == 0) {
		int fd = openat(cur, ".", flags | O_DIRECTORY | O_CLOEXEC);
		return fd < 0 ? negerrno() : fd;
	}
	return TAKE_FD(cur);
}

int stage_open_beneath(int dirfd, const char *path, size_t len, int flags)
{
	char buf[STAGE_PATH_MAX + 1];
	struct open_how how = {
		.flags = (uint64_t)(flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	long fd;

	if (len > STAGE_PATH_MAX)
		return -ENAMETOOLONG;
	if (!force_fallback) {
		memcpy(buf, path, len);
		buf[len] = '\0';
		fd = syscall(SYS_openat2, dirfd, len ? buf : ".", &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		/* A symlink as the last component is ENOTDIR with O_DIRECTORY
		 * | O_NOFOLLOW; report every symlink on the way alike. */
		if (errno == ENOTDIR)
			return -ELOOP;
		if (errno != ENOSYS && errno != EPERM)
			return negerrno();
	}
	return open_beneath_walk(dirfd, path, len, flags);
}

/* A directory on a staging root's path that nobody but root and us can
 * change: owned by root or by us, and not writable by group or others
 * unless sticky (/tmp, /dev/shm), where nobody else may rename or remove
 * what they do not own, and the next component is ours or root's. */
static bool dir_trusted(const struct stat *st)
{
	if (st->st_uid != 0 && st->st_uid != geteuid())
		return false;
	return !(st->st_mode & (S_IWGRP | S_IWOTH)) || (st->st_mode & S_ISVTX);
}

int stage_open_root_chain(const char *root, int *ret_fd, size_t *ret_bad)
{
	_cleanup_close_ int cur = -1;
	struct stat st;
	size_t i = 1, end = 0, len = strlen(root);

	if (root[0] != '/' || len >= PATH_MAX)
		return -EINVAL;
	cur = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0 || fstat(cur, &st) < 0)
		return negerrno();
	if (!dir_trusted(&st)) {
		if (ret_bad)
			*ret_bad = 1;
		return -EPERM;
	}
	while (i < len) {
		bool last;
		int r = walk_step(&cur, root, len, &i, O_RDONLY, &end);

		if (r < 0)
			return r;
		last = i >= len;
		if (fstat(cur, &st) < 0)
			return negerrno();
		/* The root itself must be ours alone (prepare_root says more);
		 * its ancestors may be shared only where sticky. */
		if (!dir_trusted(&st) || (last && (st.st_mode & (S_IWGRP | S_IWOTH)))) {
			if (ret_bad)
				*ret_bad = end;
			return -EPERM;
		}
	}
	if (len == 1)
		return -EINVAL; /* "/" is no staging root */
	*ret_fd = TAKE_FD(cur);
	return 0;
}

int stage_open_root(const char *root, int *ret_fd)
{
	return stage_open_root_chain(root, ret_fd, NULL);
}

/* Makes root absolute without resolving symlinks, dropping "." components,
 * repeated and trailing slashes, so the stored root names the same
 * directory from anywhere. ".." is refused: it cannot be resolved
 * lexically without assuming no symlink on the way. */
int stage_absolute_root(const char *root, char *buf, size_t size)
{
	char joined[PATH_MAX * 2];
	size_t len = 0;
	int n;

	if (root[0] == '/') {
		n = snprintf(joined, sizeof(joined), "%s", root);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)))
			return negerrno();
		n = snprintf(joined, sizeof(joined), "%s/%s", cwd, root);
	}
	if (n < 0 || (size_t)n >= sizeof(joined))
		return -ENAMETOOLONG;
	for (char *save = NULL, *c = strtok_r(joined, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		size_t cl = strlen(c);

		if (strcmp(c, ".") == 0)
			continue;
		if (strcmp(c, "..") == 0)
			return -EINVAL;
		/* Room for this component and a LABEL-ID below it. */
		if (len + 1 + cl + 1 + LABEL_MAX + 1 + STORE_ID_LEN >= size)
			return -ENAMETOOLONG;
		buf[len++] = '/';
		memcpy(buf + len, c, cl);
		len += cl;
	}
	/* "/" itself is no staging root: its stages would sit among the
	 * system's own directories, and records could not name it cleanly. */
	if (len == 0)
		return -EINVAL;
	buf[len] = '\0';
	return 0;
}

int stage_canonical_root(const char *root, char *buf, size_t size)
{
	char abs[PATH_MAX];
	_cleanup_free_ char *real = NULL;
	int r = stage_absolute_root(root, abs, sizeof(abs));

	if (r < 0)
		return r;
	real = realpath(abs, NULL);
	if (!real)
		return negerrno();
	/* Canonical, then checked again for the room a LABEL-ID needs. */
	return stage_absolute_root(real, buf, size);
}
