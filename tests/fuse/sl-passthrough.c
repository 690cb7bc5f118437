/* SPDX-License-Identifier: MIT */
/*
 * sl-passthrough: a small FUSE file system for tests that serves a backing
 * directory as it is, so that a test can kill the daemon (the mount then
 * answers ENOTCONN) and start it again on the same files.
 *
 *   sl-passthrough BACKING MOUNTPOINT [FUSE OPTIONS, e.g. -f -s]
 *
 * Inode numbers are the backing file system's (use_ino, readdir_ino), so
 * they stay the same across restarts while the mount's device number does
 * not: the case docs/design.md ("Identity") calls "FUSE daemon back on the
 * same files". Every call is made relative to a descriptor of BACKING
 * opened at start, with the caller's path stripped of its leading '/',
 * never following a symlink in the last component where the call has a
 * choice. Nothing is cached by the kernel (all timeouts 0), so what the
 * test changes in BACKING is what stagelog sees. Modelled on libfuse's
 * example/passthrough.c; single-threaded use (-s) is enough.
 */
#define FUSE_USE_VERSION 31

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

static int backing_fd = -1;

/* The backing-relative name of a FUSE path: "/" is ".", "/a/b" is "a/b". */
static const char *rel(const char *path)
{
	while (*path == '/')
		path++;
	return *path ? path : ".";
}

static int neg(int r)
{
	return r < 0 ? -errno : r;
}

static void *sp_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->use_ino = 1;
	cfg->readdir_ino = 1;
	cfg->entry_timeout = 0;
	cfg->attr_timeout = 0;
	cfg->negative_timeout = 0;
	/* The backing file system's checks are the ones that count. */
	cfg->kernel_cache = 0;
	return NULL;
}

static int sp_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	if (fi)
		return neg(fstat((int)fi->fh, st));
	return neg(fstatat(backing_fd, rel(path), st, AT_SYMLINK_NOFOLLOW));
}

static int sp_access(const char *path, int mask)
{
	return neg(faccessat(backing_fd, rel(path), mask, AT_SYMLINK_NOFOLLOW));
}

static int sp_readlink(const char *path, char *buf, size_t size)
{
	ssize_t n;

	if (size == 0)
		return -EINVAL;
	n = readlinkat(backing_fd, rel(path), buf, size - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static int sp_opendir(const char *path, struct fuse_file_info *fi)
{
	int fd = openat(backing_fd, rel(path), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		int r = -errno;

		close(fd);
		return r;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	return 0;
}

static int sp_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	DIR *d = (DIR *)(uintptr_t)fi->fh;
	struct dirent *de;

	(void)path;
	(void)flags;
	/* Offset 0 mode: the whole directory in one call. */
	(void)off;
	rewinddir(d);
	errno = 0;
	while ((de = readdir(d))) {
		struct stat st = { .st_ino = de->d_ino, .st_mode = (mode_t)DTTOIF(de->d_type) };

		if (filler(buf, de->d_name, &st, 0, 0))
			break;
		errno = 0;
	}
	return errno ? -errno : 0;
}

static int sp_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	closedir((DIR *)(uintptr_t)fi->fh);
	return 0;
}

static int sp_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	DIR *d = (DIR *)(uintptr_t)fi->fh;

	(void)path;
	return neg(datasync ? fdatasync(dirfd(d)) : fsync(dirfd(d)));
}

static int sp_mkdir(const char *path, mode_t mode)
{
	return neg(mkdirat(backing_fd, rel(path), mode));
}

static int sp_rmdir(const char *path)
{
	return neg(unlinkat(backing_fd, rel(path), AT_REMOVEDIR));
}

static int sp_unlink(const char *path)
{
	return neg(unlinkat(backing_fd, rel(path), 0));
}

static int sp_symlink(const char *target, const char *path)
{
	return neg(symlinkat(target, backing_fd, rel(path)));
}

static int sp_rename(const char *from, const char *to, unsigned int flags)
{
	/* RENAME_NOREPLACE and RENAME_EXCHANGE are the kernel's to check. */
	return neg(renameat2(backing_fd, rel(from), backing_fd, rel(to), flags));
}

static int sp_link(const char *from, const char *to)
{
	return neg(linkat(backing_fd, rel(from), backing_fd, rel(to), 0));
}

static int sp_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	if (fi)
		return neg(fchmod((int)fi->fh, mode));
	/* A symlink has no mode of its own: fchmodat refuses to follow one. */
	return neg(fchmodat(backing_fd, rel(path), mode, 0));
}

static int sp_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	if (fi)
		return neg(fchown((int)fi->fh, uid, gid));
	return neg(fchownat(backing_fd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW));
}

static int sp_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	int fd, r;

	if (fi)
		return neg(ftruncate((int)fi->fh, size));
	fd = openat(backing_fd, rel(path), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = neg(ftruncate(fd, size));
	close(fd);
	return r;
}

static int sp_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	if (fi)
		return neg(futimens((int)fi->fh, tv));
	return neg(utimensat(backing_fd, rel(path), tv, AT_SYMLINK_NOFOLLOW));
}

static int sp_open(const char *path, struct fuse_file_info *fi)
{
	int fd = openat(backing_fd, rel(path), (fi->flags & ~O_CREAT) | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	fi->direct_io = 1;
	return 0;
}

static int sp_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	int fd = openat(backing_fd, rel(path), fi->flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode);

	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	fi->direct_io = 1;
	return 0;
}

static int sp_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	ssize_t n = pread((int)fi->fh, buf, size, off);

	(void)path;
	return n < 0 ? -errno : (int)n;
}

static int sp_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	ssize_t n = pwrite((int)fi->fh, buf, size, off);

	(void)path;
	return n < 0 ? -errno : (int)n;
}

static int sp_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return neg(fstatvfs(backing_fd, st));
}

static int sp_flush(const char *path, struct fuse_file_info *fi)
{
	int fd = dup((int)fi->fh);

	/* close() of a dup: errors of a close reach the caller's close. */
	(void)path;
	if (fd < 0)
		return -errno;
	return neg(close(fd));
}

static int sp_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	close((int)fi->fh);
	return 0;
}

static int sp_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	return neg(datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh));
}

static const struct fuse_operations ops = {
	.init = sp_init,
	.getattr = sp_getattr,
	.access = sp_access,
	.readlink = sp_readlink,
	.opendir = sp_opendir,
	.readdir = sp_readdir,
	.releasedir = sp_releasedir,
	.fsyncdir = sp_fsyncdir,
	.mkdir = sp_mkdir,
	.rmdir = sp_rmdir,
	.unlink = sp_unlink,
	.symlink = sp_symlink,
	.rename = sp_rename,
	.link = sp_link,
	.chmod = sp_chmod,
	.chown = sp_chown,
	.truncate = sp_truncate,
	.utimens = sp_utimens,
	.open = sp_open,
	.create = sp_create,
	.read = sp_read,
	.write = sp_write,
	.statfs = sp_statfs,
	.flush = sp_flush,
	.release = sp_release,
	.fsync = sp_fsync,
};

int main(int argc, char *argv[])
{
	char **fargv;
	int r;

	if (argc < 3) {
		fprintf(stderr, "usage: %s BACKING MOUNTPOINT [FUSE OPTIONS]\n", argv[0]);
		return 2;
	}
	backing_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (backing_fd < 0) {
		fprintf(stderr, "%s: %s: %s\n", argv[0], argv[1], strerror(errno));
		return 1;
	}
	/* The file modes are the backing directory's: no umask of ours. */
	umask(0);
	/* fuse_main sees: PROG MOUNTPOINT [OPTIONS] -o default_permissions */
	fargv = calloc((size_t)argc + 3, sizeof(*fargv));
	if (!fargv)
		return 1;
	fargv[0] = argv[0];
	for (int i = 2; i < argc; i++)
		fargv[i - 1] = argv[i];
	fargv[argc - 1] = "-o";
	fargv[argc] = "default_permissions";
	r = fuse_main(argc + 1, fargv, &ops, NULL);
	free(fargv);
	close(backing_fd);
	return r;
}
