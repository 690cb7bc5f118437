/* SPDX-License-Identifier: MIT */
/*
 * oci-config.h: the inside of the config.json transform, shared by its three
 * files and nothing else: oci-json.c reads the packaged document strictly
 * and prints the staged one, oci-env.c builds the staged process.env, and
 * oci-config.c edits the tree between them. Every cJSON tree here may hold
 * secrets, so it is wiped before it is freed.
 */
#ifndef STAGELOG_OCI_CONFIG_H
#define STAGELOG_OCI_CONFIG_H

#include <cjson/cJSON.h>

#include "oci-private.h"

/* The role every message about the packaged document names: never a byte
 * of the document. */
#define OCI_CONFIG_ROLE "bad packaged config"

/* Zeroes every string of the tree item and its siblings (keys, strings,
 * raw numbers), so that cJSON_Delete() frees nothing that still holds a
 * packaged or env value. */
HIDDEN void oci_json_wipe(cJSON *item);

/* Wipes and deletes *item, for _cleanup_(). Accepts a NULL *item. */
HIDDEN void oci_json_wipe_deletep(cJSON **item);

/*
 * Parses the packaged config (len bytes, not NUL-terminated) strictly: the
 * rules of a strict decoder (runc's Go) where cJSON is lax, every number
 * kept as written (a raw item), no trailing data, a top-level object. A bad
 * document is -EBADMSG with a message naming the byte. On success *ret owns
 * the tree.
 */
HIDDEN int oci_json_parse(const char *json, size_t len, cJSON **ret, struct sl_error *reterr);

/* Prints the tree compactly into a new buffer of at first hint bytes
 * (doubled while it falls short), wiping every buffer it gives up. On
 * success *ret is the NUL-terminated document and *ret_len its length. */
HIDDEN int oci_json_print(cJSON *root, size_t hint, char **ret, size_t *ret_len);

/*
 * Builds the staged process.env from the n variables env: one "NAME=VALUE"
 * per distinct name, at the position of its first occurrence with the
 * value of its last; a NULL value takes the packaged one from old (the
 * packaged process.env, an array, or NULL). A bad variable, or a kept name
 * old lacks, is -EINVAL (notes->missing_kept then says which, when notes is
 * not NULL). On success *ret owns the array.
 */
HIDDEN int oci_process_env(const struct sl_env_var *env, size_t n, const cJSON *old, struct sl_oci_notes *notes,
			   cJSON **ret, struct sl_error *reterr);

/* True when process.args[0] is a string that is not an absolute path and
 * env (the staged process.env) holds no PATH (struct sl_oci_notes). */
HIDDEN bool oci_process_lacks_path(const cJSON *process, const cJSON *env);

/* The most bytes the n variables env add to the printed document: each
 * NAME=VALUE escaped (OCI_CONFIG_ESCAPE), between quotes, and a comma. A
 * kept value counts nothing: it prints no longer than it was written in the
 * packaged document. */
HIDDEN size_t oci_process_env_print_size(const struct sl_env_var *env, size_t n);

#endif
