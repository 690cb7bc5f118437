/* SPDX-License-Identifier: MIT */
/*
 * oci-env.c: the staged process.env, built from the variables the caller
 * gives and, for a kept one, the packaged value. The values are the
 * deployer's secrets and the packager's: no message names one, never is one
 * taken from our own environment, and every buffer that held one is wiped
 * before it is freed.
 */
#include <assert.h>
#include <stdio.h>

#include "oci-config.h"

/* Two quotes and a comma: what a variable's string adds to the printed
 * array around its escaped NAME=VALUE. */
#define ENV_ITEM_FRAME 3

struct env_ref {
	const char *name;
	size_t idx;
};

static int env_ref_cmp(const void *a, const void *b)
{
	const struct env_ref *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c != 0)
		return c;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * The value of name (len bytes) in the packaged process.env, old (an array,
 * or NULL): that of its last "NAME=VALUE" string, which is what a runtime
 * that sets the variables in order (runc does) gives the process. NULL when
 * it is not there.
 */
static const char *packaged_value(const cJSON *old, const char *name, size_t len)
{
	const char *found = NULL;
	const cJSON *item;

	cJSON_ArrayForEach(item, old) {
		const char *s = cJSON_GetStringValue(item);

		if (s && strncmp(s, name, len) == 0 && s[len] == '=')
			found = s + len + 1;
	}
	return found;
}

/* Checks every variable before anything is built. A message names a
 * variable by its index, never by its name or value. */
static int check_vars(const struct sl_env_var *env, size_t n, const cJSON *old, struct sl_oci_notes *notes,
		      struct sl_error *reterr)
{
	for (size_t i = 0; i < n; i++) {
		const char *problem;

		if (!env[i].name)
			return sl_err(reterr, -EINVAL, "bad environment variable: variable %zu: missing name or value",
				      i + 1);
		if (!oci_env_name_valid(env[i].name, strlen(env[i].name)))
			return sl_err(reterr, -EINVAL,
				      "bad environment variable: variable %zu: name does not match "
				      "[A-Za-z_][A-Za-z0-9_]*",
				      i + 1);
		if (!env[i].value) {
			/* The name is not secret, but the caller names the
			 * option it came from; the index is enough. */
			if (!packaged_value(old, env[i].name, strlen(env[i].name))) {
				if (notes)
					notes->missing_kept = i;
				return sl_err(reterr, -EINVAL,
					      "bad environment variable: variable %zu: kept, but not in the packaged "
					      "process.env",
					      i + 1);
			}
			continue;
		}
		problem = oci_env_value_problem(env[i].value, strlen(env[i].value));
		if (problem)
			return sl_err(reterr, -EINVAL, "bad environment variable: variable %zu: %s", i + 1, problem);
	}
	return 0;
}

/*
 * For each variable i that is the first of its name, the index of the last
 * of that name; SIZE_MAX for every later one. A malloc'd array of n, or
 * NULL when memory runs out. Sorting makes this linear-logarithmic even for
 * an env file with a quarter million lines.
 */
static size_t *pick_last(const struct sl_env_var *env, size_t n)
{
	_cleanup_free_ struct env_ref *refs = calloc(n ? n : 1, sizeof(*refs));
	size_t *pick = calloc(n ? n : 1, sizeof(*pick));

	if (!refs || !pick) {
		free(pick);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		refs[i] = (struct env_ref){ env[i].name, i };
		pick[i] = SIZE_MAX;
	}
	qsort(refs, n, sizeof(*refs), env_ref_cmp);
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && strcmp(refs[j].name, refs[i].name) == 0; j++)
			;
		pick[refs[i].idx] = refs[j - 1].idx;
	}
	return pick;
}

/* Appends the string "NAME=VALUE" (nl and vl bytes) to arr, wiping the
 * buffer it is glued in. */
static int append_var(cJSON *arr, const char *name, size_t nl, const char *value, size_t vl)
{
	char *s = malloc(nl + vl + 2);
	cJSON *str;

	if (!s)
		return -ENOMEM;
	memcpy(s, name, nl);
	s[nl] = '=';
	memcpy(s + nl + 1, value, vl + 1);
	str = cJSON_CreateString(s);
	erase_and_free(s, nl + vl + 2);
	if (!str || !cJSON_AddItemToArray(arr, str)) {
		oci_json_wipe_deletep(&str);
		return -ENOMEM;
	}
	return 0;
}

/*
 * A repeated name means the later value, as on a command line, while the
 * variable keeps its first place. A variable with a NULL value is kept: its
 * value is the packaged one, from old, and never one from our own
 * environment, which is the deployer's and may hold anything.
 */
int oci_process_env(const struct sl_env_var *env, size_t n, const cJSON *old, struct sl_oci_notes *notes, cJSON **ret,
		    struct sl_error *reterr)
{
	_cleanup_(oci_json_wipe_deletep) cJSON *arr = NULL;
	_cleanup_free_ size_t *pick = NULL;
	int r;

	assert(env || n == 0);
	r = check_vars(env, n, old, notes, reterr);
	if (r < 0)
		return r;
	arr = cJSON_CreateArray();
	pick = pick_last(env, n);
	if (!arr || !pick)
		return sl_err(reterr, -ENOMEM, "cannot build process.env: %s", strerror(ENOMEM));
	for (size_t i = 0; i < n; i++) {
		const char *value;
		size_t nl;

		if (pick[i] == SIZE_MAX)
			continue;
		nl = strlen(env[i].name);
		value = env[pick[i]].value;
		if (!value)
			value = packaged_value(old, env[i].name, nl);
		/* check_vars() found every kept name in old. */
		assert(value);
		if (append_var(arr, env[i].name, nl, value, strlen(value)) < 0)
			return sl_err(reterr, -ENOMEM, "cannot build process.env: %s", strerror(ENOMEM));
	}
	*ret = TAKE_PTR(arr);
	return 0;
}

/*
 * The runtime looks a program whose name is not an absolute path up with
 * the process's PATH, and without one it may not find it. The exact key
 * "args" is read, as a check that warns and never refuses.
 */
bool oci_process_lacks_path(const cJSON *process, const cJSON *env)
{
	const cJSON *args = cJSON_GetObjectItemCaseSensitive(process, "args");
	const char *arg0 = cJSON_GetStringValue(cJSON_GetArrayItem(args, 0));
	const cJSON *item;

	if (!cJSON_IsArray(args) || !arg0 || arg0[0] == '/')
		return false;
	cJSON_ArrayForEach(item, env) {
		const char *s = cJSON_GetStringValue(item);

		if (s && strncmp(s, "PATH=", sizeof("PATH=") - 1) == 0)
			return false;
	}
	return true;
}

size_t oci_process_env_print_size(const struct sl_env_var *env, size_t n)
{
	size_t size = 0;

	for (size_t i = 0; i < n; i++)
		size += OCI_CONFIG_ESCAPE * (strlen(env[i].name) + 1 + (env[i].value ? strlen(env[i].value) : 0)) +
			ENV_ITEM_FRAME;
	return size;
}
