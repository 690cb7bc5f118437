/* SPDX-License-Identifier: MIT */
/*
 * json.c: building and printing the one JSON document of --json: strings
 * of any bytes, a stage's fields, arrays of ids, paths and failed stages,
 * and the printer that reports running out of memory.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

cJSON *cli_json_add_bytes(cJSON *obj, const char *name, const char *s, size_t len)
{
	_cleanup_free_ char *quoted = cli_json_quote(s, len);

	return quoted ? cJSON_AddRawToObject(obj, name, quoted) : NULL;
}

bool cli_json_add_stage(cJSON *obj, const struct sl_stage_info *info)
{
	char created[CLI_TIME_MAX], updated[CLI_TIME_MAX];
	bool ok = true;

	cli_format_time(info->created_ms, created);
	cli_format_time(info->updated_ms, updated);
	ok &= cJSON_AddStringToObject(obj, "id", info->id) != NULL;
	ok &= cli_json_add_bytes(obj, "label", info->label, strlen(info->label)) != NULL;
	ok &= cJSON_AddStringToObject(obj, "state", info->state_name) != NULL;
	ok &= cli_json_add_bytes(obj, "root", info->root, strlen(info->root)) != NULL;
	ok &= cli_json_add_bytes(obj, "path", info->path, strlen(info->path)) != NULL;
	ok &= cJSON_AddNumberToObject(obj, "owner_pid", (double)info->owner_pid) != NULL;
	ok &= cJSON_AddBoolToObject(obj, "owner_alive", info->owner_alive) != NULL;
	ok &= cJSON_AddStringToObject(obj, "created_at", created) != NULL;
	ok &= cJSON_AddStringToObject(obj, "updated_at", updated) != NULL;
	if (info->state == SL_STATE_FAILED || (info->reason && info->reason[0]))
		ok &= cli_json_add_bytes(obj, "reason", info->reason ? info->reason : "",
					 info->reason ? strlen(info->reason) : 0) != NULL;
	return ok;
}

int cli_json_print(cJSON *doc, bool built)
{
	_cleanup_(cJSON_Deletep) cJSON *d = doc;
	_cleanup_free_ char *text = d && built ? cJSON_Print(d) : NULL;

	if (!text)
		return cli_fail(-ENOMEM, NULL, "cannot format JSON output");
	puts(text);
	return EX_OK;
}

bool cli_json_add_item(cJSON *obj, const char *name, cJSON *item)
{
	if (item && cJSON_AddItemToObject(obj, name, item))
		return true;
	cJSON_Delete(item);
	return false;
}

cJSON *cli_json_append_object(cJSON *a)
{
	cJSON *o = cJSON_CreateObject();

	if (o && cJSON_AddItemToArray(a, o))
		return o;
	cJSON_Delete(o);
	return NULL;
}

cJSON *cli_json_array(size_t n, cJSON *(*item)(const void *ctx, size_t i), const void *ctx)
{
	_cleanup_(cJSON_Deletep) cJSON *a = cJSON_CreateArray();

	for (size_t i = 0; a && i < n; i++) {
		cJSON *s = item(ctx, i);

		if (!s || !cJSON_AddItemToArray(a, s)) {
			cJSON_Delete(s);
			return NULL;
		}
	}
	return TAKE_PTR(a);
}

cJSON *cli_json_id_item(const void *ctx, size_t i)
{
	/* A char (*)[SL_ID_SIZE]: ids stand SL_ID_SIZE bytes apart. */
	const char *ids = ctx;

	return cJSON_CreateString(ids + i * SL_ID_SIZE);
}

cJSON *cli_json_path_item(const void *ctx, size_t i)
{
	char *const *paths = ctx;
	_cleanup_free_ char *quoted = cli_json_quote(paths[i], strlen(paths[i]));

	return quoted ? cJSON_CreateRaw(quoted) : NULL;
}

cJSON *cli_json_failed_item(const void *ctx, size_t i)
{
	const struct cli_failed *f = &((const struct cli_failed_list *)ctx)->v[i];
	_cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();

	if (!o || !cJSON_AddStringToObject(o, "id", f->id) ||
	    !cli_json_add_bytes(o, "label", f->where.label, strlen(f->where.label)) ||
	    !cli_json_add_bytes(o, "path", f->where.path, strlen(f->where.path)) ||
	    !cli_json_add_bytes(o, "reason", f->reason, strlen(f->reason)))
		return NULL;
	return TAKE_PTR(o);
}
