/* SPDX-License-Identifier: MIT */
/*
 * file.c: the store file before SQLite opens it. It owns finding or
 * creating the file (0600) and its folder, the ownership and mode checks
 * that refuse another user's store, a symlink or a planted companion
 * (-wal, -shm, -journal), and the store's identity (its canonical path,
 * inode and birth time) that markers bind stage directories to.
 */
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd-util.h"
#include "store-internal.h"

/* The mode of a store file, and so of its -wal and -shm. */
#define STORE_FILE_MODE 0600
/* getpwuid_r()'s buffer for one passwd entry. */
#define PASSWD_BUF_SIZE 1024
/* Room for a companion's suffix ("-journal") and its NUL. */
#define COMPANION_SUFFIX_MAX 16

/* A failed system call on the store's path, as an errno that says what the
 * user can do about it: a path too long or looping through symlinks is a
 * bad path (-EINVAL), and no file descriptor left is temporary (-EAGAIN). */
static int path_err(struct sl_error *reterr, const char *what, const char *where, int e)
{
	int r = e == ENAMETOOLONG || e == ELOOP ? -EINVAL : e == EMFILE || e == ENFILE ? -EAGAIN : e > 0 ? -e : -EIO;

	return sl_err(reterr, r, "%s: %s: %s", what, where, strerror(e > 0 ? e : EIO));
}

/* The reason refuse() names the owner for, compared by address. */
static const char owned_by_other[] = "owned by another user";

/*
 * Refuses another user's store, naming the user and how to run stagelog as
 * that user: whoever opens a store with write access must be its owner,
 * root included (a root process writing it would leave files beside it that
 * its owner cannot use, and would trust a file its owner can rewrite).
 */
static int refuse_owner(struct sl_error *reterr, const char *path, const struct stat *st)
{
	char buf[PASSWD_BUF_SIZE];
	struct passwd pw, *p = NULL;
	unsigned long uid = st->st_uid;
	unsigned mode = st->st_mode & ALLPERMS;

	if (getpwuid_r(st->st_uid, &pw, buf, sizeof(buf), &p) != 0)
		p = NULL;
	if (geteuid() != 0)
		return sl_err(reterr, -EPERM,
			      "cannot open store: %s: owned by another user, %s (uid %lu, mode %04o); "
			      "refused: run stagelog as that user",
			      path, p ? p->pw_name : "without a name", uid, mode);
	if (p)
		return sl_err(reterr, -EPERM,
			      "cannot open store: %s: owned by another user, %s (uid %lu, mode %04o); "
			      "refused: run it as that user: runuser -u %s -- stagelog ...",
			      path, p->pw_name, uid, mode, p->pw_name);
	return sl_err(reterr, -EPERM,
		      "cannot open store: %s: owned by another user, uid %lu without a name (mode %04o); "
		      "refused: run it as that user: setpriv --reuid=%lu --regid=%lu --clear-groups -- stagelog ...",
		      path, uid, mode, uid, (unsigned long)st->st_gid);
}

/*
 * Why a store file or folder is not ours, or NULL when it is. The rules are
 * the staging root's: whoever else could write it could mark a stage
 * released and hide its secrets from recovery, or plant a hot journal that
 * SQLite would roll into the store. Root trusts only root's; another caller
 * trusts its own and root's.
 */
static const char *not_ours(const struct stat *st, unsigned flags, struct store_found *found)
{
	if (st->st_uid != geteuid() && st->st_uid != 0) {
		/* Root may read what it could read anyway, through a
		 * connection that cannot write (see sl_store_open_flags()). */
		if (!(flags & SL_STORE_OPEN_INSPECT) || geteuid() != 0)
			return owned_by_other;
		found->foreign = true;
	}
	if (st->st_mode & (S_IWGRP | S_IWOTH))
		return "writable by group or others";
	return NULL;
}

static int refuse(struct sl_error *reterr, const char *path, const char *why, const struct stat *st)
{
	if (st && why == owned_by_other)
		return refuse_owner(reterr, path, st);
	if (st)
		return sl_err(reterr, -EPERM, "cannot open store: %s: %s (uid %lu, mode %04o); refused", path, why,
			      (unsigned long)st->st_uid, (unsigned)(st->st_mode & ALLPERMS));
	return sl_err(reterr, -EPERM, "cannot open store: %s: %s; refused", path, why);
}

/* Refuses a store file (or companion) that is a symlink, not a regular file
 * or not ours. shown is the path as the user spelt it. */
static int check_store_file(const struct stat *st, const char *shown, unsigned flags, struct store_found *found,
			    struct sl_error *reterr)
{
	const char *why;

	if (S_ISLNK(st->st_mode))
		return refuse(reterr, shown, "is a symlink", NULL);
	if (S_ISDIR(st->st_mode))
		return sl_err(reterr, -EISDIR, "cannot open store: %s: %s", shown, strerror(EISDIR));
	if (!S_ISREG(st->st_mode))
		return refuse(reterr, shown, "not a regular file", NULL);
	why = not_ours(st, flags, found);
	return why ? refuse(reterr, shown, why, st) : 0;
}

/* Opens the folder that holds the store (creating it unless NOCREATE) and
 * refuses one that is not ours. */
static int open_store_folder(char *dir, unsigned flags, struct store_found *found, struct sl_error *reterr)
{
	_cleanup_close_ int dfd = -1;
	const char *why;
	struct stat st;

	if (!(flags & SL_STORE_OPEN_NOCREATE)) {
		int r = mkdir_parents(dir);
		if (r < 0)
			return path_err(reterr, "cannot create store", dir, -r);
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fstat(dfd, &st) < 0)
		return path_err(reterr, "cannot open store", dir, errno);
	why = not_ours(&st, flags, found);
	if (why)
		return refuse(reterr, dir, why, &st);
	return TAKE_FD(dfd);
}

/* SQLite opens the companions by name and would follow a symlink there or
 * roll a planted hot journal into the store. The folder rule keeps other
 * users from placing them; this refuses what was left while the folder was
 * open to them. */
static int check_companions(int dfd, const char *path, const char *base, unsigned flags, struct store_found *found,
			    struct sl_error *reterr)
{
	static const char *const suffixes[] = { "-wal", "-shm", "-journal" };

	for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
		char name[NAME_MAX + COMPANION_SUFFIX_MAX], shown[PATH_MAX + COMPANION_SUFFIX_MAX];
		struct stat st;
		int r;

		snprintf(name, sizeof(name), "%s%s", base, suffixes[i]);
		snprintf(shown, sizeof(shown), "%s%s", path, suffixes[i]);
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT || errno == ENAMETOOLONG)
				continue;
			return path_err(reterr, "cannot open store", shown, errno);
		}
		r = check_store_file(&st, shown, flags, found, reterr);
		if (r < 0)
			return r;
		if (i == 0 && st.st_size > 0)
			found->wal_data = true;
		if (i == 1)
			found->shm = true;
	}
	return 0;
}

/* The store's identity, from the file judged above (fd): its inode and
 * birth time, and its canonical path. */
static int identify(int fd, const char *path, struct store_identity *ret, struct sl_error *reterr)
{
	_cleanup_free_ char *real = realpath(path, NULL);
	struct fileid id;
	int r = fd_fileid(fd, &id);

	if (r < 0)
		return path_err(reterr, "cannot open store", path, -r);
	if (!real)
		return path_err(reterr, "cannot open store", path, errno);
	if (strlen(real) >= sizeof(ret->path))
		return path_err(reterr, "cannot open store", path, ENAMETOOLONG);
	strcpy(ret->path, real);
	ret->ino = id.ino;
	ret->btime = id.btime;
	return 0;
}

const struct store_identity *store_identity(const struct sl_store *s)
{
	return &s->identity;
}

/*
 * Finds or creates the store file and checks that it and its folder are
 * ours, before SQLite opens anything. The folder is held open so that the
 * file and its -wal, -shm and -journal are judged in the folder that was
 * judged; a folder no other user can write keeps those names stable until
 * SQLite opens them.
 *
 * The file is created 0600 with O_EXCL: SQLite would create a missing
 * database with the umask's mode, and gives -wal and -shm the database's
 * mode, so this one open decides the mode of all three. A process that
 * finds the file already there, even empty because its creator has not
 * written it yet, opens it as it is: an empty file is an empty store, and
 * the schema is settled under SQLite's locks, not here.
 *
 * Fills *ret_id with the store's identity, and *found with what it saw.
 */
int store_prepare_file(const char *path, unsigned flags, struct store_identity *ret_id, struct store_found *found,
		       struct sl_error *reterr)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int dfd = -1, fd = -1;
	const char *base;
	char *slash;
	struct stat st;
	int r;

	assert(path && *path);
	dir = strdup(path);
	if (!dir)
		return sl_err(reterr, -ENOMEM, "cannot open store: %s: %s", path, strerror(ENOMEM));
	slash = strrchr(dir, '/');
	if (!slash) {
		base = path;
		strcpy(dir, ".");
	} else {
		base = path + (slash - dir) + 1;
		slash[slash == dir ? 1 : 0] = '\0';
	}
	if (!*base)
		return sl_err(reterr, -EISDIR, "cannot open store: %s: %s", path, strerror(EISDIR));
	dfd = open_store_folder(dir, flags, found, reterr);
	if (dfd < 0)
		return dfd;
	if (!(flags & SL_STORE_OPEN_NOCREATE)) {
		fd = openat(dfd, base, O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, STORE_FILE_MODE);
		if (fd < 0 && errno != EEXIST)
			return path_err(reterr, "cannot create store", path, errno);
		/* The umask may have taken bits STORE_FILE_MODE needs. */
		if (fd >= 0 && fchmod(fd, STORE_FILE_MODE) < 0)
			return path_err(reterr, "cannot create store", path, errno);
	}
	/* O_PATH with O_NOFOLLOW opens a symlink itself, so that one is named
	 * as such instead of failing as "File exists". */
	if (fd < 0 && (fd = openat(dfd, base, O_PATH | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return path_err(reterr, "cannot open store", path, errno);
	if (fstat(fd, &st) < 0)
		return path_err(reterr, "cannot open store", path, errno);
	r = check_store_file(&st, path, flags, found, reterr);
	if (r == 0)
		r = check_companions(dfd, path, base, flags, found, reterr);
	if (r == 0)
		r = identify(fd, path, ret_id, reterr);
	return r;
}
