/* SPDX-License-Identifier: MIT */
/*
 * test-oci.c: the pure parts of OCI staging: the config.json transform and
 * the env-file reader. A canary secret sits in env values and in the
 * packaged config's own fields; no message may ever contain it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "oci-private.h"

#define CANARY "CANARY-SECRET-5e1f"

static char tmpdir[64];

static int setup_dir(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-oci-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void assert_no_canary(const struct sl_error *err)
{
	if (strstr(err->msg, CANARY))
		fail_msg("message leaks the canary: %s", err->msg);
}

static const struct sl_env_var canary_env[] = {
	{ "PATH", "/usr/bin:/bin" },
	{ "TOKEN", CANARY },
};

/* Transforms json with canary_env as uid 1234, gid 5678. */
static int transform(const char *json, size_t len, char **out, size_t *out_len, struct sl_error *err)
{
	return oci_config_transform(json, len, canary_env, ELEMENTSOF(canary_env), 1234, 5678, out, out_len, err);
}

/* Transforms json, which must succeed, and returns the parsed result. */
static cJSON *transform_ok(const char *json, const struct sl_env_var *env, size_t n_env, uid_t uid, gid_t gid)
{
	struct sl_error err = { 0 };
	char *out = NULL;
	size_t len = 0;
	cJSON *doc;
	int r;

	r = oci_config_transform(json, strlen(json), env, n_env, uid, gid, &out, &len, &err);
	if (r != 0)
		fail_msg("transform failed: %d %s", r, err.msg);
	assert_int_equal(err.code, 0);
	assert_non_null(out);
	assert_int_equal(len, strlen(out));
	doc = cJSON_ParseWithLength(out, len);
	assert_non_null(doc);
	oci_config_free(out, len);
	return doc;
}

static void assert_env(const cJSON *doc, const char *const *want, size_t n)
{
	const cJSON *env = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "process"), "env");
	size_t i = 0;
	const cJSON *e;

	assert_true(cJSON_IsArray(env));
	assert_int_equal(cJSON_GetArraySize(env), n);
	cJSON_ArrayForEach(e, env) {
		assert_true(cJSON_IsString(e));
		assert_string_equal(e->valuestring, want[i]);
		i++;
	}
}

/* Transforms json with env, which must succeed, and returns the notes and
 * the parsed result. */
static cJSON *transform_notes_ok(const char *json, const struct sl_env_var *env, size_t n_env,
				 struct sl_oci_notes *notes)
{
	struct sl_error err = { 0 };
	char *out = NULL;
	size_t len = 0;
	cJSON *doc;
	int r;

	r = oci_config_transform_notes(json, strlen(json), env, n_env, 1, 2, notes, &out, &len, &err);
	if (r != 0)
		fail_msg("transform failed: %d %s", r, err.msg);
	assert_int_equal(notes->missing_kept, SIZE_MAX);
	doc = cJSON_ParseWithLength(out, len);
	assert_non_null(doc);
	oci_config_free(out, len);
	return doc;
}

/* A NULL value keeps the packaged value (the last one), never one from our
 * own environment; a later name wins across given and kept values. */
static void env_kept(void **state)
{
	static const char json[] =
		"{\"process\":{\"args\":[\"sh\"],\"env\":[\"PATH=/pkg/bin\",\"HOME=/root\","
		"\"TERM=xterm\",\"PATH=/pkg/last\",7,\"PATHX=no\"]}}";
	static const struct sl_env_var env[] = {
		{ "PATH", NULL }, { "TOKEN", CANARY }, { "TERM", "given" },
		{ "TERM", NULL }, { "A", NULL },       { "A", "x" },
	};
	static const char *const want_no_a[] = { "PATH=/pkg/last", ("TOKEN=" CANARY), "TERM=xterm" };
	struct sl_oci_notes notes;
	struct sl_error err = { 0 };
	char *out = NULL;
	size_t len = 0;
	cJSON *doc;

	(void)state;
	/* The caller's own values, which a kept variable must never take;
	 * the caller's PATH is put back at the end (the teardown runs rm). */
	_cleanup_free_ char *saved_path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
	assert_int_equal(setenv("PATH", "/caller/bin", 1), 0);
	assert_int_equal(setenv("TERM", "caller", 1), 0);
	/* A is kept but not packaged: refused, even though a later A is given,
	 * and the notes say which variable. */
	notes = (struct sl_oci_notes){ 0 };
	assert_int_equal(oci_config_transform_notes(json, strlen(json), env, ELEMENTSOF(env), 1, 2, &notes, &out, &len,
						    &err),
			 -EINVAL);
	assert_null(out);
	assert_int_equal(notes.missing_kept, 4);
	assert_string_equal(err.msg, "bad environment variable: variable 5: kept, but not in the packaged process.env");
	assert_no_canary(&err);

	doc = transform_notes_ok(json, env, 4, &notes);
	assert_env(doc, want_no_a, ELEMENTSOF(want_no_a));
	assert_false(notes.no_path);
	cJSON_Delete(doc);
	if (saved_path)
		assert_int_equal(setenv("PATH", saved_path, 1), 0);
}

/* notes.no_path: a relative args[0] without a staged PATH, and only then. */
static void env_no_path(void **state)
{
	static const struct sl_env_var token[] = { { "TOKEN", CANARY } };
	static const struct sl_env_var path[] = { { "TOKEN", CANARY }, { "PATH", "/bin" } };
	static const struct {
		const char *json;
		const struct sl_env_var *env;
		size_t n;
		bool no_path;
	} cases[] = {
		{ "{\"process\":{\"args\":[\"sh\"],\"env\":[\"PATH=/bin\"]}}", token, 1, true },
		{ "{\"process\":{\"args\":[\"bin/sh\"]}}", token, 1, true },
		{ "{\"process\":{\"args\":[\"sh\"]}}", path, 2, false },
		{ "{\"process\":{\"args\":[\"/bin/sh\"]}}", token, 1, false },
		{ "{\"process\":{}}", token, 1, false },
		{ "{\"process\":{\"args\":[]}}", token, 1, false },
	};

	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct sl_oci_notes notes = { .no_path = !cases[i].no_path };

		cJSON_Delete(transform_notes_ok(cases[i].json, cases[i].env, cases[i].n, &notes));
		if (notes.no_path != cases[i].no_path)
			fail_msg("case %zu: no_path is %d", i, notes.no_path);
	}
}

static void env_replaced(void **state)
{
	static const char *const want[] = { "PATH=/usr/bin:/bin", "TOKEN=" CANARY };
	cJSON *doc;
	char *text;

	(void)state;
	doc = transform_ok("{\"process\":{\"args\":[\"sh\"],\"env\":[\"OLD=gone\",\"PATH=/old\"]}}", canary_env,
			   ELEMENTSOF(canary_env), 0, 0);
	assert_env(doc, want, ELEMENTSOF(want));
	text = cJSON_PrintUnformatted(doc);
	assert_null(strstr(text, "OLD=gone"));
	assert_null(strstr(text, "/old"));
	free(text);
	cJSON_Delete(doc);
}

static void env_added_when_absent(void **state)
{
	static const struct sl_env_var env[] = { { "A", "1" } };
	static const char *const want[] = { "A=1" };
	cJSON *doc;

	(void)state;
	doc = transform_ok("{\"process\":{\"cwd\":\"/\"}}", env, 1, 0, 0);
	assert_env(doc, want, 1);
	cJSON_Delete(doc);
}

static void env_emptied(void **state)
{
	cJSON *doc;

	(void)state;
	doc = transform_ok("{\"process\":{\"env\":[\"X=" CANARY "\"]}}", NULL, 0, 0, 0);
	assert_env(doc, NULL, 0);
	cJSON_Delete(doc);
}

static void repeated_name_last_wins(void **state)
{
	static const struct sl_env_var env[] = {
		{ "A", "first" }, { "B", "b" }, { "A", "second" }, { "C", "c" }, { "A", "third" }, { "B", "bb" },
	};
	static const char *const want[] = { "A=third", "B=bb", "C=c" };
	cJSON *doc;

	(void)state;
	doc = transform_ok("{\"process\":{}}", env, ELEMENTSOF(env), 0, 0);
	assert_env(doc, want, ELEMENTSOF(want));
	cJSON_Delete(doc);
}

static void assert_host_ids(const cJSON *doc, const char *key, double id, size_t n)
{
	const cJSON *arr = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "linux"), key);
	const cJSON *m;
	size_t i = 0;

	assert_true(cJSON_IsArray(arr));
	assert_int_equal(cJSON_GetArraySize(arr), n);
	cJSON_ArrayForEach(m, arr) {
		const cJSON *h = cJSON_GetObjectItemCaseSensitive(m, "hostID");

		assert_true(cJSON_IsNumber(h));
		assert_true(h->valuedouble == id);
		assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(m, "containerID")));
		assert_true(cJSON_GetObjectItemCaseSensitive(m, "containerID")->valuedouble == (double)(i * 1000));
		i++;
	}
}

static void host_ids_rewritten(void **state)
{
	cJSON *doc;

	(void)state;
	doc = transform_ok(
		"{\"process\":{},\"linux\":{"
		"\"uidMappings\":[{\"containerID\":0,\"hostID\":0,\"size\":1},"
		"{\"containerID\":1000,\"size\":1}],"
		"\"gidMappings\":[{\"hostID\":\"" CANARY "\",\"containerID\":0,\"size\":65536}]}}",
		NULL, 0, 1234, 5678);
	assert_host_ids(doc, "uidMappings", 1234, 2);
	assert_host_ids(doc, "gidMappings", 5678, 1);
	cJSON_Delete(doc);
}

static void host_id_large(void **state)
{
	struct sl_error err = { 0 };
	const char *json = "{\"process\":{},\"linux\":{\"uidMappings\":[{\"hostID\":0}],\"gidMappings\":[{}]}}";
	char *out = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(oci_config_transform(json, strlen(json), NULL, 0, 4294967294u, 2147483648u, &out, &len, &err),
			 0);
	assert_non_null(memmem(out, len, "\"hostID\":4294967294", 19));
	assert_non_null(memmem(out, len, "\"hostID\":2147483648", 19));
	oci_config_free(out, len);
}

/* Deletes process.env and every mapping's hostID. */
static void strip_changed(cJSON *doc)
{
	cJSON *linux_obj = cJSON_GetObjectItemCaseSensitive(doc, "linux");
	const char *keys[] = { "uidMappings", "gidMappings" };

	cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "process"), "env");
	for (size_t k = 0; k < ELEMENTSOF(keys); k++) {
		cJSON *m;

		cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(linux_obj, keys[k]))
			cJSON_DeleteItemFromObjectCaseSensitive(m, "hostID");
	}
}

static const char rich_config[] =
	"{\n"
	"  \"ociVersion\": \"1.0.2\",\n"
	"  \"process\": {\n"
	"    \"terminal\": false,\n"
	"    \"user\": {\"uid\": 0, \"gid\": 0, \"additionalGids\": [1, 2]},\n"
	"    \"args\": [\"/bin/sh\", \"-c\", \"echo " CANARY
	" \\\"q\\\" \\u00e9 \\ud83d\\ude00 tab\\t\", \"not a NUL: \\\\u0000\"],\n"
	"    \"env\": [\"PACKAGED=" CANARY
	"\"],\n"
	"    \"cwd\": \"/\",\n"
	"    \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"hard\": 18446744073709551615, \"soft\": 1024}],\n"
	"    \"noNewPrivileges\": true\n"
	"  },\n"
	"  \"root\": {\"path\": \"rootfs\", \"readonly\": true},\n"
	"  \"hostname\": \"h\\u00e9\",\n"
	"  \"annotations\": {\"secret\": \"" CANARY
	"\", \"empty\": \"\", \"n\": null},\n"
	"  \"mounts\": [],\n"
	"  \"linux\": {\n"
	"    \"uidMappings\": [{\"containerID\": 0, \"hostID\": 100000, \"size\": 65536}],\n"
	"    \"gidMappings\": [{\"containerID\": 0, \"size\": 65536}],\n"
	"    \"resources\": {\"memory\": {\"limit\": 9223372036854771712, \"swappiness\": 0},"
	" \"cpu\": {\"shares\": 1.5e3, \"quota\": -1, \"x\": -0.25E-2}},\n"
	"    \"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"user\"}]\n"
	"  }\n"
	"}\n";

static void other_fields_kept(void **state)
{
	struct sl_error err = { 0 };
	cJSON *before, *after;
	char *out = NULL, *a, *b;
	size_t len = 0;
	int env_pos = 0;
	cJSON *c;

	(void)state;
	assert_int_equal(transform(rich_config, strlen(rich_config), &out, &len, &err), 0);
	/* Number literals come back byte for byte, not through a double. */
	assert_non_null(memmem(out, len, "18446744073709551615", 20));
	assert_non_null(memmem(out, len, "9223372036854771712", 19));
	assert_non_null(memmem(out, len, "1.5e3", 5));
	assert_non_null(memmem(out, len, "-0.25E-2", 8));
	assert_null(memmem(out, len, "PACKAGED=", 9));

	before = cJSON_ParseWithLength(rich_config, strlen(rich_config));
	after = cJSON_ParseWithLength(out, len);
	assert_non_null(before);
	assert_non_null(after);
	/* process.env keeps its place among its siblings. */
	cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(after, "process")) {
		if (strcmp(c->string, "env") == 0)
			break;
		env_pos++;
	}
	assert_int_equal(env_pos, 3);
	strip_changed(before);
	strip_changed(after);
	a = cJSON_PrintUnformatted(before);
	b = cJSON_PrintUnformatted(after);
	assert_string_equal(a, b);
	free(a);
	free(b);
	cJSON_Delete(before);
	cJSON_Delete(after);
	oci_config_free(out, len);
}

struct bad_case {
	const char *json;
	int code;
	const char *msg;
};

static const struct bad_case bad_cases[] = {
	{ "{\"ociVersion\":\"" CANARY "\"}", -EBADMSG, "bad packaged config: process: missing" },
	{ "{\"process\":\"" CANARY "\"}", -EBADMSG, "bad packaged config: process: not an object" },
	{ "{\"process\":[\"" CANARY "\"]}", -EBADMSG, "bad packaged config: process: not an object" },
	{ "{\"process\":{\"env\":\"X=" CANARY "\"}}", -EBADMSG, "bad packaged config: process.env: not an array" },
	{ "{\"process\":{\"env\":{\"X\":\"" CANARY "\"}}}", -EBADMSG,
	  "bad packaged config: process.env: not an array" },
	{ "{\"process\":{\"env\":null}}", -EBADMSG, "bad packaged config: process.env: not an array" },
	{ "{\"process\":{},\"linux\":[\"" CANARY "\"]}", -EBADMSG, "bad packaged config: linux: not an object" },
	{ "{\"process\":{},\"linux\":{\"uidMappings\":{\"hostID\":\"" CANARY "\"}}}", -EBADMSG,
	  "bad packaged config: linux.uidMappings: not an array" },
	{ "{\"process\":{},\"linux\":{\"gidMappings\":\"" CANARY "\"}}", -EBADMSG,
	  "bad packaged config: linux.gidMappings: not an array" },
	{ "{\"process\":{},\"linux\":{\"gidMappings\":[{\"hostID\":1},\"" CANARY "\"]}}", -EBADMSG,
	  "bad packaged config: linux.gidMappings[1]: not an object" },
	{ "{\"process\":{},\"linux\":{\"uidMappings\":[[\"" CANARY "\"]]}}", -EBADMSG,
	  "bad packaged config: linux.uidMappings[0]: not an object" },
	{ "[\"" CANARY "\"]", -EBADMSG, "bad packaged config: top level: not an object" },
	{ "\"" CANARY "\"", -EBADMSG, "bad packaged config: top level: not an object" },
	{ "{\"process\":{\"args\":[\"" CANARY "\xff\"]}}", -EBADMSG, "bad packaged config: not valid UTF-8" },
	{ "{\"process\":{\"args\":[\"" CANARY "\xc0\xaf\"]}}", -EBADMSG, "bad packaged config: not valid UTF-8" },
	{ "{\"process\":{\"args\":[\"" CANARY "\xed\xa0\x80\"]}}", -EBADMSG, "bad packaged config: not valid UTF-8" },
	{ "{\"process\":{}} \"" CANARY "\"", -EBADMSG, "bad packaged config: byte 15: data after the document" },
	{ "{\"process\":{}}{}", -EBADMSG, "bad packaged config: byte 14: data after the document" },
	{ "{\"process\":{\"args\":[\"a\\u0000" CANARY "\"]}}", -EBADMSG,
	  "bad packaged config: byte 22: NUL character in a string" },
	{ "{\"process\":{\"args\":[\"" CANARY "\n\"]}}", -EBADMSG, "bad packaged config: byte 39: control character" },
	{ "{\"process\":{\"x\":01}}", -EBADMSG, "bad packaged config: byte 16: malformed number" },
	{ "{\"process\":{\"x\":1.}}", -EBADMSG, "bad packaged config: byte 16: malformed number" },
	{ "{\"process\":{\"env\":[],\"Env\":[\"X=" CANARY "\"]}}", -EBADMSG,
	  "bad packaged config: process: ambiguous key \"env\"" },
	{ "{\"Process\":{\"env\":[\"X=" CANARY "\"]}}", -EBADMSG,
	  "bad packaged config: top level: ambiguous key \"process\"" },
	{ "{\"process\":{},\"proce\xc5\xbfs\":{\"x\":\"" CANARY "\"}}", -EBADMSG,
	  "bad packaged config: top level: ambiguous key \"process\"" },
	{ "{\"process\":{},\"process\":{}}", -EBADMSG, "bad packaged config: top level: ambiguous key \"process\"" },
	{ "{\"process\":{},\"linux\":{\"uidMappings\":[{\"hostID\":1,\"HostId\":0}]}}", -EBADMSG,
	  "bad packaged config: linux.uidMappings[0]: ambiguous key \"hostID\"" },
	{ "{\"process\":{},\"linux\":{\"uidMappings\":[{\"hostID\":1}],\"uıdMappings\":[{\"hostID\":0}]}}", -EBADMSG,
	  "bad packaged config: linux: ambiguous key \"uidMappings\"" },
};

static void bad_config(void **state)
{
	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++) {
		struct sl_error err = { 0 };
		char *out = (char *)"untouched";
		size_t len = 7;
		int r;

		r = transform(bad_cases[i].json, strlen(bad_cases[i].json), &out, &len, &err);
		if (r != bad_cases[i].code || err.code != r || strcmp(err.msg, bad_cases[i].msg) != 0)
			fail_msg("case %zu: got %d %d \"%s\", want %d \"%s\"", i, r, err.code, err.msg,
				 bad_cases[i].code, bad_cases[i].msg);
		assert_no_canary(&err);
		assert_string_equal(out, "untouched");
		assert_int_equal(len, 7);
	}
}

/* The bound of oci-private.h on the staged config's size, for canary_env. */
static size_t staged_bound(size_t len)
{
	size_t b = OCI_CONFIG_GROWTH * len + OCI_CONFIG_SLACK;

	for (size_t i = 0; i < ELEMENTSOF(canary_env); i++)
		b += OCI_CONFIG_ESCAPE * (strlen(canary_env[i].name) + 1 + strlen(canary_env[i].value)) + 3;
	return b;
}

/* Writes a legal config nested exactly depth levels deep (the top-level
 * object is level 1) with `members` short members at the deepest level:
 * the shape that cJSON's formatted print amplified, each member's line
 * indented by its depth. Returns the length. */
static size_t deep_config(char *buf, size_t depth, size_t members)
{
	char *p = stpcpy(buf, "{\"process\":{\"args\":[\"" CANARY "\"]}");

	for (size_t i = 1; i < depth; i++)
		p = stpcpy(p, ",\"n\":{\"x\":0");
	for (size_t i = 0; i < members; i++)
		p = stpcpy(p, ",\"k\":1");
	for (size_t i = 0; i < depth; i++)
		*p++ = '}';
	*p = '\0';
	return (size_t)(p - buf);
}

/* OCI_CONFIG_MAX_DEPTH levels are fine, one more is refused, before cJSON
 * recurses into it, with the byte and the limit but no content. */
static void config_depth_limit(void **state)
{
	char *buf = malloc(64 * 1024), *out = NULL, want[128];
	struct sl_error err = { 0 };
	size_t len, out_len = 0;

	(void)state;
	assert_non_null(buf);
	len = deep_config(buf, OCI_CONFIG_MAX_DEPTH, 1);
	assert_int_equal(transform(buf, len, &out, &out_len, &err), 0);
	oci_config_free(out, out_len);

	len = deep_config(buf, OCI_CONFIG_MAX_DEPTH + 1, 1);
	out = (char *)"untouched";
	assert_int_equal(transform(buf, len, &out, &out_len, &err), -EBADMSG);
	/* The byte named is the brace that opens level 65: the last one. */
	snprintf(want, sizeof(want), "bad packaged config: byte %zu: nested deeper than the limit of %d levels",
		 (size_t)(strrchr(buf, '{') - buf), OCI_CONFIG_MAX_DEPTH);
	assert_string_equal(err.msg, want);
	assert_no_canary(&err);
	assert_string_equal(out, "untouched");

	/* Arrays count as levels too. */
	err = (struct sl_error){ 0 };
	memset(buf, 0, 64 * 1024);
	strcpy(buf, "{\"process\":{},\"a\":");
	memset(buf + strlen(buf), '[', OCI_CONFIG_MAX_DEPTH);
	assert_int_equal(transform(buf, strlen(buf), &out, &out_len, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "nested deeper than the limit of 64 levels"));
	free(buf);
}

/* A packaged config of exactly OCI_CONFIG_MAX bytes is transformed; one
 * byte more is refused, naming the limit. */
static void config_size_limit(void **state)
{
	char *buf = malloc(OCI_CONFIG_MAX + 2), *out = NULL;
	struct sl_error err = { 0 };
	size_t out_len = 0;
	static const char doc[] = "{\"process\":{},\"note\":\"" CANARY "\"}";

	(void)state;
	assert_non_null(buf);
	/* Valid JSON padded with blanks: only the size differs. */
	memset(buf, ' ', OCI_CONFIG_MAX + 1);
	memcpy(buf, doc, sizeof(doc) - 1);
	assert_int_equal(transform(buf, OCI_CONFIG_MAX, &out, &out_len, &err), 0);
	oci_config_free(out, out_len);
	out = (char *)"untouched";
	assert_int_equal(transform(buf, OCI_CONFIG_MAX + 1, &out, &out_len, &err), -EBADMSG);
	assert_string_equal(err.msg, "bad packaged config: larger than the limit of 1 MiB");
	assert_string_equal(out, "untouched");
	free(buf);
}

/* The staged config is compact: a 512 KiB config nested to the depth limit
 * (which cJSON's formatted print turned into some 40 MB) comes out no
 * longer than it went in, plus the environment, and within the bound of
 * oci-private.h; so does the shape that grows most, a long array of empty
 * mappings that each gain a hostID. */
static void config_compact(void **state)
{
	size_t cap = 512 * 1024, len, out_len = 0, members = (cap - 4096) / 6;
	char *buf = malloc(cap), *out = NULL, *p;
	struct sl_error err = { 0 };

	(void)state;
	assert_non_null(buf);
	len = deep_config(buf, OCI_CONFIG_MAX_DEPTH, members);
	assert_true(len > cap - 4096 && len < cap);
	assert_int_equal(transform(buf, len, &out, &out_len, &err), 0);
	printf("a %zu-byte config nested %d levels deep is staged as %zu bytes\n", len, OCI_CONFIG_MAX_DEPTH, out_len);
	assert_true(out_len <= staged_bound(len));
	assert_true(out_len <= staged_bound(0) + len);
	oci_config_free(out, out_len);

	p = stpcpy(buf, "{\"process\":{},\"linux\":{\"uidMappings\":[{}");
	while ((size_t)(p - buf) < cap - 16)
		p = stpcpy(p, ",{}");
	p = stpcpy(p, "]}}");
	len = (size_t)(p - buf);
	assert_int_equal(oci_config_transform(buf, len, canary_env, ELEMENTSOF(canary_env), 4294967294u, 5678, &out,
					      &out_len, &err),
			 0);
	printf("a %zu-byte config of empty mappings is staged as %zu bytes (%.2f times)\n", len, out_len,
	       (double)out_len / (double)len);
	assert_true(out_len > 7 * len);
	assert_true(out_len <= staged_bound(len));
	oci_config_free(out, out_len);
	free(buf);
}

/* Every proper prefix of a good document is refused as not JSON. */
static void truncated_config(void **state)
{
	const char *json = "{\"process\":{\"env\":[\"X=" CANARY "\"],\"args\":[1,2.5]}}";

	(void)state;
	for (size_t n = 0; n < strlen(json); n++) {
		struct sl_error err = { 0 };
		char *out = NULL;
		size_t len = 0;
		int r;

		r = transform(json, n, &out, &len, &err);
		assert_int_equal(r, -EBADMSG);
		assert_null(out);
		assert_non_null(strstr(err.msg, "bad packaged config: "));
		assert_no_canary(&err);
	}
	{
		struct sl_error err = { 0 };
		char *out = NULL;
		size_t len = 0;

		assert_int_equal(transform(json, strlen(json), &out, &len, &err), 0);
		oci_config_free(out, len);
	}
}

/* The length bounds the document: a NUL-free buffer is never read past. */
static void config_not_nul_terminated(void **state)
{
	const char json[] = "{\"process\":{}}";
	char *copy = malloc(sizeof(json) - 1);
	struct sl_error err = { 0 };
	char *out = NULL;
	size_t len = 0;

	(void)state;
	memcpy(copy, json, sizeof(json) - 1);
	assert_int_equal(transform(copy, sizeof(json) - 1, &out, &len, &err), 0);
	oci_config_free(out, len);
	free(copy);
}

static void bad_env_for_config(void **state)
{
	static const struct {
		struct sl_env_var var;
		const char *msg;
	} cases[] = {
		{ { "1" CANARY, "x" },
		  "bad environment variable: variable 2: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ { "", "x" }, "bad environment variable: variable 2: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ { "A=B", "x" }, "bad environment variable: variable 2: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ { "A", CANARY "\xff" }, "bad environment variable: variable 2: value is not valid UTF-8" },
		{ { NULL, "x" }, "bad environment variable: variable 2: missing name or value" },
		/* A NULL value keeps the packaged one, and there is none. */
		{ { "A", NULL }, "bad environment variable: variable 2: kept, but not in the packaged process.env" },
	};
	const char *json = "{\"process\":{}}";

	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct sl_env_var env[2] = { { "OK", CANARY }, cases[i].var };
		struct sl_error err = { 0 };
		char *out = NULL;
		size_t len = 0;

		assert_int_equal(oci_config_transform(json, strlen(json), env, 2, 0, 0, &out, &len, &err), -EINVAL);
		assert_string_equal(err.msg, cases[i].msg);
		assert_null(out);
	}
}

/* An empty config given as NULL is refused like any empty one (not a JSON
 * object), and read from nowhere: UBSan, in CI's sanitizer run, fails a
 * copy from NULL even of 0 bytes. */
static void config_null_and_empty(void **state)
{
	struct sl_error err = { 0 };
	char *out = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(oci_config_transform(NULL, 0, NULL, 0, 0, 0, &out, &len, &err), -EBADMSG);
	assert_null(out);
	assert_true(err.msg[0] != '\0');
}

static void env_add_bad(void **state)
{
	static const struct {
		const char *name, *value;
		size_t value_len;
		const char *msg;
	} cases[] = {
		{ "", "v", 1, "bad environment variable: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ "1A", "v", 1, "bad environment variable: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ "A-B", "v", 1, "bad environment variable: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ "A B", "v", 1, "bad environment variable: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ "A=B", "v", 1, "bad environment variable: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ CANARY, "v", 1, "bad environment variable: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ "A", CANARY "\0x", sizeof(CANARY) + 1, "bad environment variable: value contains a NUL byte" },
		{ "A", CANARY "\xe2\x82", sizeof(CANARY) + 1, "bad environment variable: value is not valid UTF-8" },
	};
	struct oci_env_list l = { 0 };

	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct sl_error err = { 0 };

		assert_int_equal(oci_env_add(&l, cases[i].name, strlen(cases[i].name), cases[i].value,
					     cases[i].value_len, &err),
				 -EINVAL);
		assert_int_equal(err.code, -EINVAL);
		assert_string_equal(err.msg, cases[i].msg);
		assert_int_equal(l.n, 0);
	}
	oci_env_list_finish(&l);
}

static void env_add_good(void **state)
{
	struct oci_env_list l = { 0 };
	struct sl_error err = { 0 };

	(void)state;
	/* The lengths bound the name and value: bytes past them are ignored. */
	assert_int_equal(oci_env_add(&l, "_a1XYZ", 3, "value\xc3\xa9rest", 7, &err), 0);
	for (int i = 0; i < 40; i++)
		assert_int_equal(oci_env_add(&l, "N", 1, "", 0, &err), 0);
	assert_int_equal(l.n, 41);
	assert_string_equal(l.vars[0].name, "_a1");
	assert_string_equal(l.vars[0].value, "value\xc3\xa9");
	assert_string_equal(l.vars[40].value, "");
	oci_env_list_finish(&l);
	assert_null(l.vars);
	assert_int_equal(l.n, 0);
	assert_int_equal(l.cap, 0);
	oci_env_list_finish(&l);
	oci_config_free(NULL, 0);
}

static void write_file(const char *path, const char *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static void env_file_good(void **state)
{
	static const char text[] = "# a comment with " CANARY
				   "\n"
				   "\n"
				   "A=1\n"
				   "B=x=y=" CANARY
				   "\n"
				   "EMPTY=\n"
				   " \t \n"
				   "#\n"
				   "_c9=with spaces \n"
				   "CR=last\r\n"
				   "NOEOL=end";
	static const char *const want[][2] = {
		{ "A", "1" },       { "B", "x=y=" CANARY }, { "EMPTY", "" }, { "_c9", "with spaces " },
		{ "CR", "last\r" }, { "NOEOL", "end" },
	};
	struct oci_env_list l = { 0 };
	struct sl_error err = { 0 };
	char path[128];

	(void)state;
	snprintf(path, sizeof(path), "%s/good.env", tmpdir);
	write_file(path, text, sizeof(text) - 1);
	/* What is read is appended to what the list already holds. */
	assert_int_equal(oci_env_add(&l, "FIRST", 5, "0", 1, &err), 0);
	assert_int_equal(oci_env_read_file(&l, path, &err), 0);
	assert_int_equal(err.code, 0);
	assert_int_equal(l.n, 1 + ELEMENTSOF(want));
	for (size_t i = 0; i < ELEMENTSOF(want); i++) {
		assert_string_equal(l.vars[i + 1].name, want[i][0]);
		assert_string_equal(l.vars[i + 1].value, want[i][1]);
	}
	oci_env_list_finish(&l);
}

static void env_file_empty(void **state)
{
	struct oci_env_list l = { 0 };
	struct sl_error err = { 0 };
	char path[128];

	(void)state;
	snprintf(path, sizeof(path), "%s/empty.env", tmpdir);
	write_file(path, "", 0);
	assert_int_equal(oci_env_read_file(&l, path, &err), 0);
	assert_int_equal(l.n, 0);
	oci_env_list_finish(&l);
}

static void env_file_bad(void **state)
{
	static const struct {
		const char *text;
		size_t len;
		const char *msg;
	} cases[] = {
#define T(s) s, sizeof(s) - 1
		{ T("A=1\n\n" CANARY "\n"), "bad env file: line 3: expected NAME=VALUE" },
		{ T("A=1\n1BAD=" CANARY "\n"), "bad env file: line 2: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ T(" A=" CANARY), "bad env file: line 1: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ T("A=1\n =" CANARY "\n"), "bad env file: line 2: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ T("A=1\nexport B=" CANARY "\n"), "bad env file: line 2: name does not match [A-Za-z_][A-Za-z0-9_]*" },
		{ T("#\n#\n\nB=" CANARY "\0tail\n"), "bad env file: line 4: value contains a NUL byte" },
		{ T("A=1\nB=" CANARY "\xff\n"), "bad env file: line 2: value is not valid UTF-8" },
		{ T("A=1\r\n\r\n"), "bad env file: line 2: expected NAME=VALUE" },
#undef T
	};
	char path[128];

	(void)state;
	snprintf(path, sizeof(path), "%s/bad.env", tmpdir);
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct oci_env_list l = { 0 };
		struct sl_error err = { 0 };

		write_file(path, cases[i].text, cases[i].len);
		assert_int_equal(oci_env_read_file(&l, path, &err), -EBADMSG);
		assert_int_equal(err.code, -EBADMSG);
		/* The parser's message as it is: the path is not named (it came
		 * from the command line, where a token may stand instead). */
		assert_string_equal(err.msg, cases[i].msg);
		assert_null(strstr(err.msg, path));
		assert_no_canary(&err);
		/* Nothing from the earlier good lines stays behind. */
		assert_int_equal(l.n, 0);
		oci_env_list_finish(&l);
	}
}

static void env_file_missing(void **state)
{
	struct oci_env_list l = { 0 };
	struct sl_error err = { 0 };
	char path[128];

	(void)state;
	snprintf(path, sizeof(path), "%s/missing.env", tmpdir);
	assert_int_equal(oci_env_read_file(&l, path, &err), -ENOENT);
	assert_int_equal(err.code, -ENOENT);
	assert_string_equal(err.msg, "cannot read env file: No such file or directory");
	assert_int_equal(l.n, 0);
}

static void env_file_not_regular(void **state)
{
	struct oci_env_list l = { 0 };
	struct sl_error err = { 0 };
	char path[128];
	pid_t pid;
	int status;

	(void)state;
	/* A pipe is read (as `--env-file <(...)` gives one). The writer has
	 * written and gone before the read starts, as with <(...): a read
	 * that opened the FIFO before any writer would see end-of-file at
	 * once, and the writer would then block in open() for ever. The
	 * holder keeps the pipe (and its bytes) alive meanwhile. */
	snprintf(path, sizeof(path), "%s/fifo.env", tmpdir);
	assert_int_equal(mkfifo(path, 0600), 0);
	int holder = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	assert_true(holder >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(path, O_WRONLY);
		_exit(fd >= 0 && write(fd, "PIPED=1\n", 8) == 8 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(oci_env_read_file(&l, path, &err), 0);
	close(holder);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.vars[0].name, "PIPED");
	oci_env_list_finish(&l);

	/* Neither a regular file nor a pipe: refused. */
	assert_int_equal(oci_env_read_file(&l, tmpdir, &err), -EBADMSG);
	assert_string_equal(err.msg, "bad env file: not a regular file or a pipe");
	assert_int_equal(l.n, 0);
}

static void env_file_too_large(void **state)
{
	struct oci_env_list l = { 0 };
	struct sl_error err = { 0 };
	char path[128];
	size_t n = OCI_ENV_FILE_MAX + 1;
	char *big = malloc(n);

	(void)state;
	/* Good lines all the way: only the size is wrong. */
	for (size_t i = 0; i < n; i += 4)
		memcpy(big + i, "A=1\n", n - i < 4 ? n - i : 4);
	snprintf(path, sizeof(path), "%s/big.env", tmpdir);
	write_file(path, big, n);
	assert_int_equal(oci_env_read_file(&l, path, &err), -EBADMSG);
	assert_string_equal(err.msg, "bad env file: larger than the limit of 1 MiB");
	assert_int_equal(l.n, 0);

	/* Exactly the limit is fine. */
	write_file(path, big, n - 1);
	err = (struct sl_error){ 0 };
	assert_int_equal(oci_env_read_file(&l, path, &err), 0);
	assert_int_equal(l.n, OCI_ENV_FILE_MAX / 4);
	oci_env_list_finish(&l);
	free(big);
}

/* A file that reads as the command line would: the later name wins when
 * the list goes into the config. */
static void env_file_into_config(void **state)
{
	static const char text[] = "A=1\nB=2\nA=" CANARY "\n";
	static const char *const want[] = { "A=" CANARY, "B=2" };
	struct oci_env_list l = { 0 };
	struct sl_error err = { 0 };
	cJSON *doc;

	(void)state;
	assert_int_equal(oci_env_parse(&l, text, sizeof(text) - 1, &err), 0);
	doc = transform_ok("{\"process\":{\"env\":[]}}", l.vars, l.n, 0, 0);
	assert_env(doc, want, ELEMENTSOF(want));
	cJSON_Delete(doc);
	oci_env_list_finish(&l);
}

static void utf8(void **state)
{
	(void)state;
	assert_true(utf8_valid("", 0));
	assert_true(utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
	assert_true(utf8_valid("\xf4\x8f\xbf\xbf", 4));
	assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
	assert_false(utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
	assert_false(utf8_valid("\xc1\xbf", 2));         /* overlong */
	assert_false(utf8_valid("\xed\xbf\xbf", 3));     /* surrogate */
	assert_false(utf8_valid("\xe2\x82", 2));         /* truncated */
	assert_false(utf8_valid("\x80", 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(config_null_and_empty),
		cmocka_unit_test(env_replaced),
		cmocka_unit_test(env_added_when_absent),
		cmocka_unit_test(env_emptied),
		cmocka_unit_test(repeated_name_last_wins),
		cmocka_unit_test(host_ids_rewritten),
		cmocka_unit_test(host_id_large),
		cmocka_unit_test(other_fields_kept),
		cmocka_unit_test(bad_config),
		cmocka_unit_test(truncated_config),
		cmocka_unit_test(config_depth_limit),
		cmocka_unit_test(config_size_limit),
		cmocka_unit_test(config_compact),
		cmocka_unit_test(config_not_nul_terminated),
		cmocka_unit_test(bad_env_for_config),
		cmocka_unit_test(env_add_bad),
		cmocka_unit_test(env_add_good),
		cmocka_unit_test(env_file_good),
		cmocka_unit_test(env_file_empty),
		cmocka_unit_test(env_file_bad),
		cmocka_unit_test(env_file_missing),
		cmocka_unit_test(env_file_not_regular),
		cmocka_unit_test(env_file_too_large),
		cmocka_unit_test(env_file_into_config),
		cmocka_unit_test(utf8),
		cmocka_unit_test(env_kept),
		cmocka_unit_test(env_no_path),
	};

	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
