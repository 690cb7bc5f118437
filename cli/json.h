/* SPDX-License-Identifier: MIT */
/*
 * json.h: the --json document (json.c): building a command's JSON object
 * from stage records and lists, and printing it once on stdout. Included
 * by cli.h.
 */
#ifndef STAGELOG_CLI_JSON_H
#define STAGELOG_CLI_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "sl-recover.h"

/* Adds the string cli_json_quote() makes, as raw JSON. */
cJSON *cli_json_add_bytes(cJSON *obj, const char *name, const char *s, size_t len);
/* Adds a stage's fixed fields (every field but "entries"). */
bool cli_json_add_stage(cJSON *obj, const struct sl_stage_info *info);

/*
 * Prints one JSON document on stdout and frees it, so that a
 * command builds its document in one expression and hands it over:
 * `return cli_json_print(doc, doc && cJSON_Add...(doc, ...) && ...)`.
 * With built false (or doc NULL) it prints nothing and reports running out
 * of memory. Returns an exit code.
 */
int cli_json_print(cJSON *doc, bool built);

/* Adds item (which may be NULL) to obj as name; on failure deletes
 * item and returns false, so that a caller never holds an orphan. */
bool cli_json_add_item(cJSON *obj, const char *name, cJSON *item);
/* Appends a new object to the array a; NULL when out of memory. */
cJSON *cli_json_append_object(cJSON *a);
/* An array of n items, item i made by item(ctx, i) (NULL when out of
 * memory). Returns NULL, and frees what it built, on failure. */
cJSON *cli_json_array(size_t n, cJSON *(*item)(const void *ctx, size_t i), const void *ctx);

/* cli_json_array()'s item makers: ctx is a char (*)[SL_ID_SIZE]
 * of ids; a char ** of paths (quoted with cli_json_quote()); a struct
 * cli_failed_list (objects with id, label, path and reason). */
cJSON *cli_json_id_item(const void *ctx, size_t i);
cJSON *cli_json_path_item(const void *ctx, size_t i);
cJSON *cli_json_failed_item(const void *ctx, size_t i);

static inline void cJSON_Deletep(cJSON **p)
{
	cJSON_Delete(*p);
}

#endif
