/* SPDX-License-Identifier: MIT */
/*
 * oci-config.c: turns a packaged config.json into the staged one, the one
 * entry point of the transform (oci-private.h). It finds the members it
 * edits as a case-insensitive decoder would, sets the hostIDs of the id
 * mappings and puts the staged process.env in; oci-json.c reads and prints
 * the document, oci-env.c builds the environment. The document is the
 * packager's and the environment is the deployer's; both may hold secrets,
 * so no message quotes either, and every buffer that held a byte of them is
 * wiped before it is freed.
 */
#include <assert.h>
#include <stdio.h>

#include "oci-config.h"

#define ROLE OCI_CONFIG_ROLE

/* What cJSON_PrintPreallocated() asks for beyond the printed length. */
#define CJSON_PRINT_RESERVE 5

/*
 * True when key could be taken for want (lowercase ASCII) by Go's
 * encoding/json, which matches keys case-insensitively and folds the
 * Kelvin sign to 'k', the long s to 's', and the dotted and dotless I
 * to 'i'.
 */
static bool key_folds_to(const char *key, const char *want)
{
	const unsigned char *k = (const unsigned char *)key;

	for (; *want; want++) {
		char c;

		if (k[0] < 0x80) {
			c = (char)(k[0] >= 'A' && k[0] <= 'Z' ? k[0] - 'A' + 'a' : k[0]);
			k += 1;
		} else if (k[0] == 0xe2 && k[1] == 0x84 && k[2] == 0xaa) {
			c = 'k';
			k += 3;
		} else if (k[0] == 0xc5 && k[1] == 0xbf) {
			c = 's';
			k += 2;
		} else if (k[0] == 0xc4 && (k[1] == 0xb0 || k[1] == 0xb1)) {
			c = 'i';
			k += 2;
		} else {
			return false;
		}
		if (c != (*want >= 'A' && *want <= 'Z' ? *want - 'A' + 'a' : *want))
			return false;
	}
	return *k == '\0';
}

/*
 * Finds the member want of obj. A second member that a case-insensitive
 * decoder could read as want (or the only one, spelt differently) is
 * refused: the runtime would take the last such member, which is not the
 * one written here, and a hostID left behind that way could map the
 * container to host root. *ret is NULL when there is no such member.
 */
static int member(cJSON *obj, const char *want, const char *where, cJSON **ret, struct sl_error *reterr)
{
	cJSON *found = NULL;
	unsigned n = 0;

	assert(cJSON_IsObject(obj));
	for (cJSON *c = obj->child; c; c = c->next) {
		if (!c->string || !key_folds_to(c->string, want))
			continue;
		n++;
		if (strcmp(c->string, want) == 0)
			found = c;
	}
	if (n > 1 || (n == 1 && !found))
		return sl_err(reterr, -EBADMSG, ROLE ": %s: ambiguous key \"%s\"", where, want);
	*ret = found;
	return 0;
}

/* Puts item into obj under key, in place of old (wiped first) or last. */
static int set_member(cJSON *obj, cJSON *old, const char *key, cJSON *item)
{
	if (!old)
		return cJSON_AddItemToObject(obj, key, item) ? 0 : -ENOMEM;
	item->string = strdup(key);
	if (!item->string)
		return -ENOMEM;
	oci_json_wipe(old->child);
	if (old->valuestring)
		explicit_bzero(old->valuestring, strlen(old->valuestring));
	return cJSON_ReplaceItemViaPointer(obj, old, item) ? 0 : -ENOMEM;
}

/* Sets hostID to id in every mapping of linux.<key>. */
static int set_host_ids(cJSON *linux_obj, const char *key, unsigned long id, struct sl_error *reterr)
{
	/* "linux.gidMappings[18446744073709551615]" at the longest. */
	char where[sizeof("linux.") + sizeof("gidMappings") + sizeof("[18446744073709551615]")];
	char lit[sizeof("18446744073709551615")];
	cJSON *arr, *m, *old;
	size_t i = 0;
	int r;

	r = member(linux_obj, key, "linux", &arr, reterr);
	if (r < 0 || !arr)
		return r;
	if (!cJSON_IsArray(arr))
		return sl_err(reterr, -EBADMSG, ROLE ": linux.%s: not an array", key);
	snprintf(lit, sizeof(lit), "%lu", id);
	cJSON_ArrayForEach(m, arr) {
		cJSON *num;

		snprintf(where, sizeof(where), "linux.%s[%zu]", key, i++);
		if (!cJSON_IsObject(m))
			return sl_err(reterr, -EBADMSG, ROLE ": %s: not an object", where);
		r = member(m, "hostID", where, &old, reterr);
		if (r < 0)
			return r;
		/* A raw literal prints exactly, with no trip through a double. */
		num = cJSON_CreateRaw(lit);
		if (!num)
			return sl_err(reterr, -ENOMEM, ROLE ": %s", strerror(ENOMEM));
		r = set_member(m, old, "hostID", num);
		if (r < 0) {
			cJSON_Delete(num);
			return sl_err(reterr, r, ROLE ": %s", strerror(-r));
		}
	}
	return 0;
}

/* Finds process (an object) and its env (an array, or absent). */
static int find_process(cJSON *root, cJSON **ret_process, cJSON **ret_env, struct sl_error *reterr)
{
	cJSON *process, *old_env;
	int r;

	r = member(root, "process", "top level", &process, reterr);
	if (r < 0)
		return r;
	if (!process)
		return sl_err(reterr, -EBADMSG, ROLE ": process: missing");
	if (!cJSON_IsObject(process))
		return sl_err(reterr, -EBADMSG, ROLE ": process: not an object");
	r = member(process, "env", "process", &old_env, reterr);
	if (r < 0)
		return r;
	if (old_env && !cJSON_IsArray(old_env))
		return sl_err(reterr, -EBADMSG, ROLE ": process.env: not an array");
	*ret_process = process;
	*ret_env = old_env;
	return 0;
}

/* Sets every hostID of linux.uidMappings and gidMappings, when linux is
 * there. */
static int set_mappings(cJSON *root, uid_t uid, gid_t gid, struct sl_error *reterr)
{
	cJSON *linux_obj;
	int r;

	r = member(root, "linux", "top level", &linux_obj, reterr);
	if (r < 0 || !linux_obj)
		return r;
	if (!cJSON_IsObject(linux_obj))
		return sl_err(reterr, -EBADMSG, ROLE ": linux: not an object");
	r = set_host_ids(linux_obj, "uidMappings", (unsigned long)uid, reterr);
	return r < 0 ? r : set_host_ids(linux_obj, "gidMappings", (unsigned long)gid, reterr);
}

int oci_config_transform_notes(const char *json, size_t len, const struct sl_env_var *env, size_t n_env, uid_t uid,
			       gid_t gid, struct sl_oci_notes *notes, char **ret, size_t *ret_len,
			       struct sl_error *reterr)
{
	_cleanup_(oci_json_wipe_deletep) cJSON *root = NULL;
	cJSON *process = NULL, *old_env = NULL, *new_env = NULL;
	size_t hint;
	int r;

	if (notes)
		*notes = (struct sl_oci_notes){ .missing_kept = SIZE_MAX };
	if ((!json && len > 0) || (!env && n_env > 0) || !ret || !ret_len)
		return sl_err(reterr, -EINVAL, ROLE ": invalid argument");
	if (len > OCI_CONFIG_MAX)
		return sl_err(reterr, -EBADMSG, ROLE ": larger than the limit of %zu MiB", OCI_CONFIG_MAX_MIB);
	r = oci_json_parse(json, len, &root, reterr);
	if (r == 0)
		r = find_process(root, &process, &old_env, reterr);
	if (r == 0)
		r = set_mappings(root, uid, gid, reterr);
	if (r < 0)
		return r;

	/* The environment goes in last, after every check of the document,
	 * so that it is in the tree for as short a time as possible. */
	r = oci_process_env(env, n_env, old_env, notes, &new_env, reterr);
	if (r < 0)
		return r;
	if (notes)
		notes->no_path = oci_process_lacks_path(process, new_env);
	r = set_member(process, old_env, "env", new_env);
	if (r < 0) {
		oci_json_wipe_deletep(&new_env);
		return sl_err(reterr, r, ROLE ": %s", strerror(-r));
	}

	/* Printed compactly, a document is mostly no longer than it was
	 * written, plus the environment (escapes may grow it up to six times)
	 * and what cJSON_PrintPreallocated() asks for; oci_json_print()
	 * doubles the buffer in the rare case (many mappings gaining a hostID,
	 * see OCI_CONFIG_GROWTH) where this falls short. */
	hint = len + OCI_CONFIG_SLACK + CJSON_PRINT_RESERVE + oci_process_env_print_size(env, n_env);
	r = oci_json_print(root, hint, ret, ret_len);
	if (r < 0)
		return sl_err(reterr, r, ROLE ": cannot print: %s", strerror(-r));
	return 0;
}

int oci_config_transform(const char *json, size_t len, const struct sl_env_var *env, size_t n_env, uid_t uid, gid_t gid,
			 char **ret, size_t *ret_len, struct sl_error *reterr)
{
	return oci_config_transform_notes(json, len, env, n_env, uid, gid, NULL, ret, ret_len, reterr);
}

void oci_config_free(char *buf, size_t len)
{
	erase_and_free(buf, len);
}
