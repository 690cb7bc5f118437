/* SPDX-License-Identifier: MIT */
/*
 * oci-private.h: the pure parts of OCI staging, shared by oci.c, the unit
 * tests and the fuzz targets: environment lists, the env-file reader and
 * the config.json transform. Nothing here touches a stage or the store.
 */
#ifndef STAGELOG_OCI_PRIVATE_H
#define STAGELOG_OCI_PRIVATE_H

#include <stddef.h>
#include <sys/types.h>

#include "sl-stage.h"
#include "macro.h"

/* The largest env file and packaged config.json that are read. */
#define OCI_ENV_FILE_MAX ((size_t)1 << 20)
#define OCI_CONFIG_MAX ((size_t)4 << 20)

/*
 * A growable list of environment variables. Every name and value is a
 * malloc'd copy owned by the list; zero-initialise it, release it with
 * oci_env_list_finish().
 */
struct sl_env_list {
	struct sl_env_var *vars;
	size_t n, cap;
};

/*
 * Appends a copy of NAME=VALUE. Names must match [A-Za-z_][A-Za-z0-9_]*
 * and values must be valid UTF-8 without a NUL byte (a JSON string cannot
 * carry anything else faithfully). A bad name or value is -EINVAL whose
 * message names the problem but never the name or the value (a mistyped
 * argument may put the secret where the name belongs); -ENOMEM otherwise.
 * On failure the list is unchanged.
 */
HIDDEN int oci_env_add(struct sl_env_list *l, const char *name, size_t name_len, const char *value,
		       size_t value_len, struct sl_error *reterr);

/*
 * Parses the contents of an env file (len bytes, not NUL-terminated) and
 * appends its variables in order. The format: lines separated by "\n";
 * an empty line or one of only spaces and tabs is skipped; a line whose
 * first byte is '#' is a comment; every other line is NAME=VALUE, where
 * NAME is everything before the first '=' and VALUE everything after it up
 * to the end of the line. No quotes, escapes or whitespace are processed,
 * so " NAME=x" is malformed and a trailing "\r" (a file written on
 * Windows) stays part of the value. A malformed line is -EBADMSG with a
 * message giving its line number and never its content. On failure the
 * list is unchanged.
 */
HIDDEN int oci_env_parse(struct sl_env_list *l, const char *buf, size_t len, struct sl_error *reterr);

/*
 * Reads the env file at path (see oci_env_parse() for the format), at most
 * OCI_ENV_FILE_MAX bytes. A missing file is -ENOENT, a file that is not
 * regular or is too large -EBADMSG, a read error its negative errno. The
 * message names path as given. On failure the list is unchanged.
 */
HIDDEN int oci_env_read_file(struct sl_env_list *l, const char *path, struct sl_error *reterr);

/* Wipes every name and value, frees them and zeroes *l. Accepts a zeroed
 * list. */
HIDDEN void oci_env_list_finish(struct sl_env_list *l);

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
 * On success *ret is a malloc'd, NUL-terminated, formatted document and
 * *ret_len its length; free it with oci_config_free(). A bad document is
 * -EBADMSG and a bad variable -EINVAL, with a message naming the role and
 * the problem but never a value from the document or the environment.
 */
HIDDEN int oci_config_transform(const char *json, size_t len, const struct sl_env_var *env, size_t n_env,
				uid_t uid, gid_t gid, char **ret, size_t *ret_len, struct sl_error *reterr);

/* Wipes and frees a buffer returned by oci_config_transform(). Accepts
 * NULL. */
HIDDEN void oci_config_free(char *buf, size_t len);

/* True when name (len bytes) matches [A-Za-z_][A-Za-z0-9_]*. */
HIDDEN bool oci_env_name_valid(const char *name, size_t len);

/* NULL when value (len bytes) can be a variable's value, else the reason,
 * which holds no byte of the value. */
HIDDEN const char *oci_env_value_problem(const char *value, size_t len);

/* True when buf (len bytes) is valid UTF-8: no overlong form, surrogate or
 * code point above U+10FFFF. */
HIDDEN bool oci_utf8_valid(const char *buf, size_t len);

#endif
