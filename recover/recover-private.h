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

#endif
