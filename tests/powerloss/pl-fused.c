/* SPDX-License-Identifier: MIT */
/*
 * pl-fused: serves image files as /disk0, /disk1 through FUSE and logs every
 * write and every flush of each, in one log, in the order they arrive.
 *
 *   pl-fused LOG MOUNTPOINT IMAGE [IMAGE]
 *
 * A loop device on MOUNTPOINT/disk0 turns every block write of a file system
 * into one FUSE write and every block-layer flush (journal commit, fsync,
 * syncfs) into one FUSE fsync. The daemon is single-threaded (-s) and opens
 * the file with direct_io and no writeback cache, so the kernel neither
 * reorders nor merges writes behind its back: the log is the order in which
 * the disk saw them. A multi-threaded daemon was seen to reorder writes
 * inside a flush interval. One log for both disks keeps the order between
 * them: a store on one disk and a staging root on another lose their
 * unflushed writes at the same instant.
 */
#define FUSE_USE_VERSION 31

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pl-log.h"

static int image_fd[PL_MAX_DEV];
static unsigned n_images;
static FILE *log_file;

/* "/diskN" to N, or -1. */
static int disk_index(const char *path)
{
	if (strncmp(path, "/disk", 5) != 0 || path[5] < '0' || path[5] >= (char)('0' + n_images) || path[6])
		return -1;
	return path[5] - '0';
}

static int log_rec(uint16_t type, uint64_t dev, uint64_t off, const void *data, uint64_t len)
{
	struct pl_rec_hdr h = { .magic = PL_REC_MAGIC, .type = type, .dev = (uint16_t)dev, .off = off, .len = len };

	if (fwrite(&h, sizeof(h), 1, log_file) != 1 || (len && fwrite(data, len, 1, log_file) != 1))
		return -EIO;
	/* The orchestrator reads the log's size after a syncfs to learn
	 * where a scenario begins, so a flush record reaches the file at
	 * once. */
	if (type != PL_REC_WRITE && fflush(log_file) != 0)
		return -EIO;
	return 0;
}

static void *pl_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	/* Every write must reach us when the loop device issues it: no
	 * writeback cache, no page cache for the image. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	cfg->direct_io = 1;
	cfg->kernel_cache = 0;
	cfg->attr_timeout = 0;
	cfg->entry_timeout = 0;
	return NULL;
}

static int pl_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	(void)fi;
	memset(st, 0, sizeof(*st));
	if (strcmp(path, "/") == 0) {
		st->st_mode = S_IFDIR | 0700;
		st->st_nlink = 2;
		return 0;
	}
	int d = disk_index(path);

	if (d < 0)
		return -ENOENT;
	if (fstat(image_fd[d], st) < 0)
		return -errno;
	st->st_mode = S_IFREG | 0600;
	st->st_nlink = 1;
	return 0;
}

static int pl_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	(void)off, (void)fi, (void)flags;
	if (strcmp(path, "/") != 0)
		return -ENOTDIR;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	for (unsigned i = 0; i < n_images; i++) {
		char name[16];

		snprintf(name, sizeof(name), "disk%u", i);
		fill(buf, name, NULL, 0, 0);
	}
	return 0;
}

static int pl_open(const char *path, struct fuse_file_info *fi)
{
	int d = disk_index(path);

	if (d < 0)
		return -ENOENT;
	fi->fh = (uint64_t)d;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	return 0;
}

static int pl_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	ssize_t n;

	(void)path;
	n = pread(image_fd[fi->fh], buf, size, off);
	return n < 0 ? -errno : (int)n;
}

static int pl_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	int r;

	(void)path;
	r = pl_pwrite_all(image_fd[fi->fh], buf, size, (uint64_t)off);
	if (r < 0)
		return r;
	/* Logged only once it is in the image: the log never claims a
	 * write the image does not hold. */
	r = log_rec(PL_REC_WRITE, fi->fh, (uint64_t)off, buf, size);
	return r < 0 ? r : (int)size;
}

static int pl_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path, (void)datasync;
	return log_rec(PL_REC_FSYNC, fi->fh, 0, NULL, 0);
}

static int pl_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	return log_rec(PL_REC_FLUSH, fi->fh, 0, NULL, 0);
}

static int pl_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	(void)path, (void)size, (void)fi;
	return -EPERM; /* a disk does not change size */
}

static void pl_destroy(void *data)
{
	(void)data;
	if (log_file)
		fflush(log_file);
}

static const struct fuse_operations ops = {
	.init = pl_init,
	.getattr = pl_getattr,
	.readdir = pl_readdir,
	.open = pl_open,
	.read = pl_read,
	.write = pl_write,
	.fsync = pl_fsync,
	.flush = pl_flush,
	.truncate = pl_truncate,
	.destroy = pl_destroy,
};

int main(int argc, char **argv)
{
	static char buf[1 << 20];
	int r;

	if (argc < 4 || argc > 3 + PL_MAX_DEV) {
		fprintf(stderr, "usage: pl-fused LOG MOUNTPOINT IMAGE [IMAGE]\n");
		return 64;
	}
	for (int i = 3; i < argc; i++) {
		image_fd[n_images] = open(argv[i], O_RDWR | O_CLOEXEC);
		if (image_fd[n_images] < 0) {
			fprintf(stderr, "pl-fused: %s: %s\n", argv[i], strerror(errno));
			return 66;
		}
		n_images++;
	}
	log_file = fopen(argv[1], "wbe");
	if (!log_file) {
		fprintf(stderr, "pl-fused: %s: %s\n", argv[1], strerror(errno));
		return 73;
	}
	setvbuf(log_file, buf, _IOFBF, sizeof(buf));
	/* -s: one thread, so requests are handled in arrival order; -f: the
	 * orchestrator owns our lifetime. */
	char *fargv[] = { argv[0], "-s", "-f", "-o", "fsname=pl-fused,subtype=pl", argv[2], NULL };
	r = fuse_main(6, fargv, &ops, NULL);
	if (fclose(log_file) != 0)
		r = r ? r : 74;
	return r;
}
