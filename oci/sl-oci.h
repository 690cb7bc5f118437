/* SPDX-License-Identifier: MIT */
/*
 * sl-oci.h: staging an OCI bundle in one call, built only on the public
 * stage API (sl-stage.h, which it includes).
 *
 * Threads: as for the stage calls (sl-stage.h): sl_oci_stage() uses its
 * store, so one thread at a time per store; calls on distinct stores run
 * at once, and may share the same read-only options, variables and bundle.
 */
#ifndef STAGELOG_SL_OCI_H
#define STAGELOG_SL_OCI_H

#include <stdbool.h>
#include <stddef.h>

#include "sl-stage.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * One NAME=VALUE environment variable for an OCI bundle. A NULL value
 * keeps NAME with its value from the packaged config.json's process.env
 * (the last NAME there, as a runtime that sets them in order would see it;
 * never a value from the caller's environment); NAME must be there.
 */
struct sl_env_var {
	const char *name;
	const char *value;
};

/* What sl_oci_stage() found out, for a caller that reports it (the library
 * never prints). */
struct sl_oci_notes {
	/* On -EINVAL because env[i] keeps a name (a NULL value) that the
	 * packaged process.env does not have: i, the first such. Else
	 * SIZE_MAX. */
	size_t missing_kept;
	/* On success: true when process.args[0] is a string that is not an
	 * absolute path and the staged process.env has no PATH, so that the
	 * runtime may not find the program (a bundle from `runc spec` runs
	 * "sh"): keeping the packaged PATH is the usual cure. */
	bool no_path;
};

/* Options for sl_oci_stage(). */
struct sl_oci_options {
	const char *root;              /* staging root */
	const char *bundle;            /* packaged bundle folder: rootfs/ and config.json */
	struct sl_stage_options stage; /* label and owner */
	const struct sl_env_var *env;  /* process.env, in order; a later name wins */
	size_t n_env;
	struct sl_oci_notes *notes; /* when not NULL, filled in (on success and failure) */
};

/*
 * Stages an OCI bundle in one call: validates the packaged bundle, begins a
 * stage, copies rootfs/, writes config.json (0600) with process.env replaced
 * by exactly opts->env and every hostID in linux.uidMappings/gidMappings set
 * to the bundle directory's uid/gid, and marks the stage ready. A variable
 * whose value is NULL keeps its packaged value (see struct sl_env_var); a
 * name given more than once, kept or not, takes its last value at the
 * place of its first. A missing input is -ENOENT, malformed data -EBADMSG,
 * a bad variable or a kept name the packaged process.env lacks -EINVAL
 * (opts->notes, when given, says which). On success *ret owns the stage;
 * on failure nothing is left on disk.
 */
SL_PUBLIC int sl_oci_stage(struct sl_store *store, const struct sl_oci_options *opts, struct sl_stage **ret,
			   struct sl_error *reterr);

#ifdef __cplusplus
}
#endif
#endif
