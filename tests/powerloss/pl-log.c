/* SPDX-License-Identifier: MIT */
/*
 * pl-log.c: reading the daemon's log and building crash images from it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pl-log.h"

static int negerrno(void)
{
	return errno > 0 ? -errno : -EIO;
}

int pl_pwrite_all(int fd, const void *buf, uint64_t len, uint64_t off)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negerrno();
		}
		p += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

int pl_log_open(struct pl_log *log, const char *path, uint64_t start)
{
	struct stat sb;
	size_t cap = 0;
	uint64_t pos = start;
	int fd, r = 0;

	memset(log, 0, sizeof(*log));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	if (fstat(fd, &sb) < 0) {
		r = negerrno();
		close(fd);
		return r;
	}
	log->map_len = (size_t)sb.st_size;
	if (log->map_len > 0) {
		log->map = mmap(NULL, log->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
		if (log->map == MAP_FAILED) {
			r = negerrno();
			log->map = NULL;
		}
	}
	close(fd);
	if (r < 0)
		return r;

	while (pos + sizeof(struct pl_rec_hdr) <= log->map_len) {
		struct pl_rec_hdr h;

		memcpy(&h, (unsigned char *)log->map + pos, sizeof(h));
		pos += sizeof(h);
		if (h.magic != PL_REC_MAGIC || h.dev >= PL_MAX_DEV ||
		    (h.type != PL_REC_WRITE && h.type != PL_REC_FSYNC && h.type != PL_REC_FLUSH) ||
		    (h.type == PL_REC_WRITE && h.len > log->map_len - pos)) {
			r = -EBADMSG;
			break;
		}
		if (log->nr == cap) {
			struct pl_rec *n;

			cap = cap ? 2 * cap : 1024;
			n = realloc(log->r, cap * sizeof(*n));
			if (!n) {
				r = -ENOMEM;
				break;
			}
			log->r = n;
		}
		log->r[log->nr++] = (struct pl_rec){ h.type, h.dev, h.off, h.type == PL_REC_WRITE ? h.len : 0,
						     (unsigned char *)log->map + pos };
		if (h.type == PL_REC_WRITE)
			pos += h.len;
	}
	if (r < 0)
		pl_log_close(log);
	return r;
}

void pl_log_close(struct pl_log *log)
{
	if (log->map)
		munmap(log->map, log->map_len);
	free(log->r);
	memset(log, 0, sizeof(*log));
}

int pl_log_apply_prefix(const char *path, uint64_t end, const int *fds, unsigned ndev)
{
	unsigned char *buf = NULL;
	uint64_t pos = 0;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	while (pos < end) {
		struct pl_rec_hdr h;

		if (pread(fd, &h, sizeof(h), (off_t)pos) != (ssize_t)sizeof(h) || h.magic != PL_REC_MAGIC ||
		    h.dev >= ndev) {
			r = -EBADMSG;
			break;
		}
		pos += sizeof(h);
		if (h.type != PL_REC_WRITE)
			continue;
		unsigned char *nb = realloc(buf, h.len ? h.len : 1);
		if (!nb) {
			r = -ENOMEM;
			break;
		}
		buf = nb;
		if (pread(fd, buf, h.len, (off_t)pos) != (ssize_t)h.len) {
			r = -EBADMSG;
			break;
		}
		r = pl_pwrite_all(fds[h.dev], buf, h.len, h.off);
		if (r < 0)
			break;
		pos += h.len;
	}
	free(buf);
	close(fd);
	return r;
}

int pl_sparse_copy(int src_fd, int dst_fd)
{
	static const unsigned char zero[65536];
	unsigned char buf[65536];
	struct stat sb;
	off_t pos = 0;
	int r;

	if (fstat(src_fd, &sb) < 0 || ftruncate(dst_fd, sb.st_size) < 0)
		return negerrno();
	for (;;) {
		off_t data = lseek(src_fd, pos, SEEK_DATA), hole;

		if (data < 0)
			return errno == ENXIO ? 0 : negerrno();
		hole = lseek(src_fd, data, SEEK_HOLE);
		if (hole < 0)
			return negerrno();
		for (pos = data; pos < hole;) {
			size_t n = (size_t)(hole - pos) < sizeof(buf) ? (size_t)(hole - pos) : sizeof(buf);
			ssize_t got = pread(src_fd, buf, n, pos);

			if (got <= 0)
				return got < 0 ? negerrno() : -EIO;
			if (memcmp(buf, zero, (size_t)got) != 0) {
				r = pl_pwrite_all(dst_fd, buf, (uint64_t)got, (uint64_t)pos);
				if (r < 0)
					return r;
			}
			pos += got;
		}
	}
}
