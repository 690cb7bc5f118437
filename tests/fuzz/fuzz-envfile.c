/* SPDX-License-Identifier: MIT */
/*
 * fuzz-envfile.c: libFuzzer target for the env-file parser. Whatever the
 * input, it must not crash, must answer 0 or -EBADMSG (a failure leaving
 * the list as it was), must never quote the input in a message, and every
 * variable it returns must be acceptable to the config transform.
 */
#include <stdint.h>
#include <stdio.h>

#include "oci-private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool known_message(const char *msg)
{
	static const char *const reasons[] = {
		"expected NAME=VALUE",
		"name does not match [A-Za-z_][A-Za-z0-9_]*",
		"value contains a NUL byte",
		"value is not valid UTF-8",
	};
	unsigned long line;
	int end = 0;

	if (sscanf(msg, "bad env file: line %lu: %n", &line, &end) != 1 || end == 0 || line == 0)
		return false;
	for (size_t i = 0; i < ELEMENTSOF(reasons); i++)
		if (strcmp(msg + end, reasons[i]) == 0)
			return true;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char config[] = "{\"process\":{}}";
	struct oci_env_list l = { 0 };
	struct sl_error err = { 0 };
	char *out = NULL;
	size_t len = 0;
	int r;

	if (oci_env_add(&l, "KEEP", 4, "x", 1, &err) != 0)
		abort();
	r = oci_env_parse(&l, (const char *)data, size, &err);
	if (r < 0) {
		if (r != -EBADMSG || err.code != r || strncmp(err.msg, "bad env file: line ", 19) != 0 || l.n != 1)
			abort();
		/* The message is fixed text around a line number, so it
		 * cannot quote the input. */
		if (!known_message(err.msg))
			abort();
		oci_env_list_finish(&l);
		return 0;
	}
	for (size_t i = 1; i < l.n; i++)
		if (!oci_env_name_valid(l.vars[i].name, strlen(l.vars[i].name)) ||
		    oci_env_value_problem(l.vars[i].value, strlen(l.vars[i].value)))
			abort();
	if (oci_config_transform(config, sizeof(config) - 1, l.vars, l.n, 0, 0, &out, &len, &err) != 0)
		abort();
	oci_config_free(out, len);
	oci_env_list_finish(&l);
	return 0;
}
