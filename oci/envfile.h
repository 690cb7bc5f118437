/* SPDX-License-Identifier: MIT */
/*
 * envfile.h: environment lists for an OCI bundle and the env-file reader,
 * for oci/ and the command line. Private: never installed.
 */
#ifndef STAGELOG_ENVFILE_H
#define STAGELOG_ENVFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"
#include "sl-oci.h"

/* The largest env file that is read. */
#define OCI_ENV_FILE_MAX ((size_t)1 << 20)
#define OCI_ENV_FILE_MAX_MIB (OCI_ENV_FILE_MAX >> 20)

/*
 * A growable list of environment variables. Every name and value is a
 * malloc'd copy owned by the list; zero-initialise it, release it with
 * oci_env_list_finish().
 */
struct oci_env_list {
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
HIDDEN int oci_env_add(struct oci_env_list *l, const char *name, size_t name_len, const char *value, size_t value_len,
		       struct sl_error *reterr);

/* Appends NAME with a NULL value: kept with its packaged value (struct
 * sl_env_var). A bad name is -EINVAL, as in oci_env_add(). */
HIDDEN int oci_env_add_kept(struct oci_env_list *l, const char *name, size_t name_len, struct sl_error *reterr);

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
HIDDEN int oci_env_parse(struct oci_env_list *l, const char *buf, size_t len, struct sl_error *reterr);

/*
 * Reads the env file at path (see oci_env_parse() for the format), at most
 * OCI_ENV_FILE_MAX bytes. A missing file is -ENOENT, a file that is not
 * regular or is too large -EBADMSG, a read error its negative errno. The
 * message never names path (the caller names the option it came from); it
 * says the line number of a bad line. On failure the list is unchanged.
 */
HIDDEN int oci_env_read_file(struct oci_env_list *l, const char *path, struct sl_error *reterr);

/* Wipes every name and value, frees them and zeroes *l. Accepts a zeroed
 * list. */
HIDDEN void oci_env_list_finish(struct oci_env_list *l);

/* True when name (len bytes) matches [A-Za-z_][A-Za-z0-9_]*. */
HIDDEN bool oci_env_name_valid(const char *name, size_t len);

/* NULL when value (len bytes) can be a variable's value, else the reason,
 * which holds no byte of the value. */
HIDDEN const char *oci_env_value_problem(const char *value, size_t len);

#endif
