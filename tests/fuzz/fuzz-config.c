/* SPDX-License-Identifier: MIT */
/*
 * fuzz-config.c: libFuzzer target for the config.json transform. Whatever
 * the input, the transform must not crash, must answer 0 or -EBADMSG, and
 * on success must produce a document that parses again, keeps its own
 * process.env as given, transforms to itself a second time, and is no
 * larger than the bound of oci-private.h (OCI_CONFIG_GROWTH times the input
 * plus the environment): no input may amplify into the staging root.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#include "oci-private.h"

#define SECRET "FUZZ-SECRET-77"

static const struct sl_env_var env[] = {
	{ "PATH", "/bin" },
	{ "TOKEN", SECRET },
	{ "PATH", "/usr/bin" },
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The largest staged config an input of size bytes may become. */
static size_t bound(size_t size)
{
	size_t b = OCI_CONFIG_GROWTH * size + OCI_CONFIG_SLACK;

	for (size_t i = 0; i < ELEMENTSOF(env); i++)
		b += OCI_CONFIG_ESCAPE * (strlen(env[i].name) + 1 + strlen(env[i].value)) + 3;
	return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sl_error err = { 0 };
	char *out = NULL, *again = NULL;
	size_t len = 0, again_len = 0;
	cJSON *doc;
	int r;

	r = oci_config_transform((const char *)data, size, env, ELEMENTSOF(env), 1000, 1001, &out, &len, &err);
	if (r < 0) {
		if (r != -EBADMSG || err.code != r || strncmp(err.msg, "bad packaged config: ", 21) != 0 ||
		    strstr(err.msg, SECRET))
			abort();
		return 0;
	}
	if (err.code != 0 || !out || strlen(out) != len || len > bound(size))
		abort();
	doc = cJSON_ParseWithLength(out, len);
	if (!cJSON_IsObject(doc))
		abort();
	cJSON_Delete(doc);
	/* The output is itself a valid packaged config, and a fixed point. */
	r = oci_config_transform(out, len, env, ELEMENTSOF(env), 1000, 1001, &again, &again_len, &err);
	if (r != 0 || again_len != len || memcmp(out, again, len) != 0)
		abort();
	oci_config_free(again, again_len);
	oci_config_free(out, len);
	return 0;
}
