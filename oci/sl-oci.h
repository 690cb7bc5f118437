/* SPDX-License-Identifier: MIT */
/*
 * sl-oci.h: staging an OCI bundle in one call, built only on the public
 * stage API (sl-stage.h, which it includes).
 */
#ifndef STAGELOG_SL_OCI_H
#define STAGELOG_SL_OCI_H

#include <stddef.h>

#include "sl-stage.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One NAME=VALUE environment variable for an OCI bundle. */
struct sl_env_var {
	const char *name;
	const char *value;
};

/* Options for sl_oci_stage(). */
struct sl_oci_options {
	const char *root;                /* staging root */
	const char *bundle;              /* packaged bundle folder: rootfs/ and config.json */
	struct sl_stage_options stage;   /* label and owner */
	const struct sl_env_var *env;    /* process.env, in order; a later name wins */
	size_t n_env;
};

/*
 * Stages an OCI bundle in one call: validates the packaged bundle, begins a
 * stage, copies rootfs/, writes config.json (0600) with process.env replaced
 * by exactly opts->env and every hostID in linux.uidMappings/gidMappings set
 * to the bundle directory's uid/gid, and marks the stage ready. A missing
 * input is -ENOENT, malformed data -EBADMSG. On success *ret owns the
 * stage; on failure nothing is left on disk.
 */
SL_PUBLIC int sl_oci_stage(struct sl_store *store, const struct sl_oci_options *opts, struct sl_stage **ret,
			   struct sl_error *reterr);

#ifdef __cplusplus
}
#endif
#endif
