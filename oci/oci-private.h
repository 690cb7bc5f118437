/* SPDX-License-Identifier: MIT */
/*
 * oci-private.h: the parts of OCI staging that touch no stage and no
 * store, shared by oci.c, envfile.c, the unit tests and the fuzz targets:
 * the limits on a packaged config.json, the bounded reader of a file, the
 * config.json transform (whose inside is oci-config.h), plus the
 * environment lists of envfile.h.
 */
#ifndef STAGELOG_OCI_PRIVATE_H
#define STAGELOG_OCI_PRIVATE_H

#include <stddef.h>
#include <sys/types.h>

#include "envfile.h"
#include "macro.h"
#include "sl-oci.h"

/* The largest packaged config.json that is read (docs/design.md, "Input
 * limits"): an OCI config is a few KiB; 1 MiB leaves room for large
 * annotations and hooks while keeping the parsed tree, the staged copy and
 * the wiped buffers of one stage to a few MiB. */
#define OCI_CONFIG_MAX ((size_t)1 << 20)
#define OCI_CONFIG_MAX_MIB (OCI_CONFIG_MAX >> 20)

/* The deepest nesting of objects and arrays a packaged config.json may
 * have (the top-level object is depth 1). The OCI runtime spec's deepest
 * objects, a seccomp rule's arguments (linux.seccomp.syscalls[].args[]),
 * are at level 7; the limit also bounds the transform's recursion. */
#define OCI_CONFIG_MAX_DEPTH 64

/*
 * The staged config.json is printed compactly, so it is never larger than
 * OCI_CONFIG_GROWTH times the packaged one, plus OCI_CONFIG_SLACK, plus
 * what the environment adds: for each variable, its NAME=VALUE escaped (at
 * most OCI_CONFIG_ESCAPE bytes per byte) between quotes, and a comma.
 * Strings, numbers and literals print at most as long as they were
 * written; the one thing that grows is a mapping object, which gains a
 * "hostID" of up to ten digits: "{}," (3 bytes) becomes 22.
 */
#define OCI_CONFIG_GROWTH 8
#define OCI_CONFIG_SLACK 64
#define OCI_CONFIG_ESCAPE 6

/*
 * Reads fd (a regular file) to its end into a new buffer that holds the
 * bytes and a terminating NUL. More than max bytes is -EFBIG, with nothing
 * returned. On success the caller owns *ret and wipes it before freeing.
 */
HIDDEN int oci_read_fd(int fd, size_t max, char **ret, size_t *ret_len);

/*
 * Transforms a packaged config.json (len bytes, not NUL-terminated): it
 * must be strict JSON in UTF-8 whose top level is an object with a
 * "process" object. process.env (absent, or an array) becomes exactly the
 * given variables, a repeated name taking its last value at the position of
 * its first occurrence; "linux", when present, must be an object, and its
 * uidMappings and gidMappings, when present, arrays of objects, each of
 * which gets "hostID" set to uid or gid (replacing any value in place, or
 * appended). Every other field, numbers included, keeps its value. A key
 * that a case-insensitive decoder (Go's encoding/json, used by runc) could
 * confuse with one of those is refused, so that the runtime reads what was
 * written.
 *
 * A document larger than OCI_CONFIG_MAX or nested deeper than
 * OCI_CONFIG_MAX_DEPTH is refused.
 *
 * On success *ret is a malloc'd, NUL-terminated, compact document (no
 * whitespace; see OCI_CONFIG_GROWTH for its size) and *ret_len its length;
 * free it with oci_config_free(). A bad document is
 * -EBADMSG and a bad variable -EINVAL, with a message naming the role and
 * the problem but never a value from the document or the environment.
 */
HIDDEN int oci_config_transform(const char *json, size_t len, const struct sl_env_var *env, size_t n_env, uid_t uid,
				gid_t gid, char **ret, size_t *ret_len, struct sl_error *reterr);

/*
 * As oci_config_transform(), and env may keep packaged values: a variable
 * whose value is NULL takes NAME's last value in the packaged process.env
 * (strings "NAME=VALUE"); a name not there is -EINVAL. notes, when not
 * NULL, is filled in as struct sl_oci_notes says.
 */
HIDDEN int oci_config_transform_notes(const char *json, size_t len, const struct sl_env_var *env, size_t n_env,
				      uid_t uid, gid_t gid, struct sl_oci_notes *notes, char **ret, size_t *ret_len,
				      struct sl_error *reterr);

/* Wipes and frees a buffer returned by oci_config_transform(). Accepts
 * NULL. */
HIDDEN void oci_config_free(char *buf, size_t len);

#endif
