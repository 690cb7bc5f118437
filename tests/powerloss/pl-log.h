/* SPDX-License-Identifier: MIT */
/*
 * pl-log.h: the power-loss harness's write log and crash-image builder.
 *
 * The logging FUSE daemon (pl-fused) appends one record per block write and
 * one per flush, in the order they reached it. A crash image "at record K"
 * is the base image, plus every write before the last flush before K (those
 * are durable), plus any subset of the writes after that flush and before K
 * (a volatile write cache may have written any of them, in any order).
 */
#ifndef STAGELOG_PL_LOG_H
#define STAGELOG_PL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PL_REC_MAGIC 0x706c7231u /* "plr1" */

enum pl_rec_type {
	PL_REC_WRITE = 1,
	PL_REC_FSYNC = 2, /* FUSE fsync: a block-layer flush (REQ_PREFLUSH) */
	PL_REC_FLUSH = 3, /* FUSE flush: close(2) of the image */
};

#define PL_MAX_DEV 2

/* On-disk record header; a write's data follows it. */
struct pl_rec_hdr {
	uint32_t magic;
	uint16_t type;
	uint16_t dev; /* which served image: the daemon serves disk0, disk1 */
	uint64_t off;
	uint64_t len;
};

struct pl_rec {
	uint32_t type;
	uint32_t dev;
	uint64_t off;
	uint64_t len;
	const unsigned char *data; /* a write's data, in the mapped log */
};

/* Every record after the scenario's start, in the order the daemon saw
 * them. A write of device d is durable once a flush of d follows it; until
 * then the disk may hold it or not, independently of its neighbours. */
struct pl_log {
	void *map;
	size_t map_len;
	struct pl_rec *r;
	size_t nr;
};

/* Maps the log file and indexes it, starting at byte offset start (a
 * record boundary: what the log held when the scenario began). Returns 0 or
 * a negative errno; on failure *log is left empty. */
int pl_log_open(struct pl_log *log, const char *path, uint64_t start);
void pl_log_close(struct pl_log *log);

/* Applies every write of the log file before byte offset end to the image
 * of its device, fds[dev] (brings the base images up to the scenario's
 * start). */
int pl_log_apply_prefix(const char *path, uint64_t end, const int *fds, unsigned ndev);

/* Copies src to dst (which must be empty) without writing zero blocks: a
 * 300 MB XFS image holds a few hundred KiB of data, so a crash image costs a
 * few milliseconds to build from a sparse copy. */
int pl_sparse_copy(int src_fd, int dst_fd);

/* pwrite(2) of all len bytes, or a negative errno. */
int pl_pwrite_all(int fd, const void *buf, uint64_t len, uint64_t off);

#endif
