/* SPDX-License-Identifier: MIT */
/*
 * recover-private.h: what the files of recover/ share, and the tests read:
 * liveness (liveness.c), by which recovery and the views judge a stage.
 */
#ifndef STAGELOG_RECOVER_PRIVATE_H
#define STAGELOG_RECOVER_PRIVATE_H

#include "sl-recover.h"
#include "stage-private.h"

/* What recovery may do with a stage. */
enum liveness {
	LIVENESS_LIVE,     /* owner alive, or its lock held */
	LIVENESS_STALE,    /* another boot, or owner gone and lock free */
	LIVENESS_UNJUDGED, /* owner in another pid namespace: live unless forced */
};

/* The facts about this process that liveness compares records with. */
struct liveness_self {
	char boot_id[BOOT_ID_LEN + 1];
	uint64_t pidns;
};

/* Reads the facts about this process (boot id, pid namespace) into *h. */
HIDDEN int liveness_self_init(struct liveness_self *h);

/* The liveness of a record. For a recovering stage the claimer is judged
 * (and no lock: the recoverer holds none after it died); for any other the
 * owner and the top directory's lock. */
HIDDEN enum liveness liveness_of(const struct liveness_self *h, const struct store_record *rec);

/* ROOT/TOPDIR of any record, and its NUL. */
#define STAGE_PATH_SIZE (sizeof(((struct store_record *)0)->root) + sizeof(((struct store_record *)0)->topdir))

/* The label and path of the stage with full id `id`, read without its
 * entries or liveness: how the program names a stage in a line. */
HIDDEN int recover_stage_where(struct sl_store *store, const char *id, char label[LABEL_MAX + 1], char *path,
			       size_t path_size, struct sl_error *reterr);

#endif
