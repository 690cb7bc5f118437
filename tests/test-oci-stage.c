/* SPDX-License-Identifier: MIT */
/*
 * test-oci-stage.c: sl_oci_stage() against a real store. A bad bundle must
 * be refused before anything is created, a failure after the stage began
 * must leave nothing behind, and the canary secret (in env values, the
 * packaged config and a rootfs file) must reach no message and no byte of
 * the store.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "helpers.h"
#include "oci-private.h"
#include "sl-oci.h"

struct fixture {
	struct sandbox sb;
	struct sl_store *store;
	char bundle[400];
	char path[600];
};

static const char packaged[] =
	"{\"ociVersion\":\"1.0.2\",\"process\":{\"args\":[\"sh\"],"
	"\"env\":[\"PACKAGED=" CANARY
	"\"]},\"root\":{\"path\":\"rootfs\"},"
	"\"annotations\":{\"note\":\"" CANARY
	"\"},"
	"\"linux\":{\"uidMappings\":[{\"containerID\":0,\"hostID\":0,\"size\":1}],"
	"\"gidMappings\":[{\"containerID\":0,\"size\":1}]}}";

static const struct sl_env_var env[] = {
	{ "PATH", "/bin" },
	{ "TOKEN", CANARY },
};

static const char *bundle_path(struct fixture *fx, const char *rel)
{
	snprintf(fx->path, sizeof(fx->path), "%s/%s", fx->bundle, rel);
	return fx->path;
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct sl_error err = { 0 };

	assert_non_null(fx);
	sandbox_init(&fx->sb);
	assert_int_equal(sl_store_open(fx->sb.db, &fx->store, &err), 0);
	snprintf(fx->bundle, sizeof(fx->bundle), "%s/bundle", fx->sb.base);
	make_sample_tree(bundle_path(fx, "rootfs"));
	write_path(bundle_path(fx, "config.json"), packaged, 0644);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	sl_store_close(fx->store);
	sandbox_finish(&fx->sb);
	free(fx);
	return 0;
}

static int stage_bundle(struct fixture *fx, const struct sl_env_var *vars, size_t n, struct sl_stage **ret,
			struct sl_error *err)
{
	struct sl_oci_options opts = {
		.root = fx->sb.root,
		.bundle = fx->bundle,
		.stage = { .label = "oci" },
		.env = vars,
		.n_env = n,
	};

	return sl_oci_stage(fx->store, &opts, ret, err);
}

/* The canary is in no message and in no file of the store. */
static void assert_no_leak(struct fixture *fx, const struct sl_error *err)
{
	static const char *const suffixes[] = { "", "-wal", "-shm", "-journal" };
	char p[400];

	if (strstr(err->msg, CANARY))
		fail_msg("message leaks the canary: %s", err->msg);
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", fx->sb.db, suffixes[i]);
		if (file_contains(p, CANARY))
			fail_msg("%s holds the canary", p);
	}
}

/* A refusal of the input: nothing at all was created, not even the root. */
static void assert_refused(struct fixture *fx, int r, const struct sl_error *err, int code, const char *msg,
			   struct sl_stage *stage)
{
	struct stat st;

	if (r != code || err->code != code || strcmp(err->msg, msg) != 0)
		fail_msg("got %d %d \"%s\", want %d \"%s\"", r, err->code, err->msg, code, msg);
	assert_null(stage);
	assert_int_equal(lstat(fx->sb.root, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_no_leak(fx, err);
}

static void success(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };
	char p[700], *want, *got, *text;
	struct stat st, bundle_st;
	const cJSON *e, *m;
	cJSON *doc;
	int fd, i = 0;
	ssize_t n;

	/* The hostIDs must be the bundle's owner, and one that differs from
	 * the packaged 0, or a transform that ignored the owner would pass. */
	if (geteuid() == 0)
		assert_int_equal(chown(fx->bundle, 4242, 4343), 0);
	assert_int_equal(stat(fx->bundle, &bundle_st), 0);
	assert_true(bundle_st.st_uid != 0);

	assert_int_equal(stage_bundle(fx, env, 2, &stage, &err), 0);
	assert_int_equal(err.code, 0);
	assert_non_null(stage);
	assert_int_equal(count_entries(fx->sb.root), 1);
	assert_int_equal(strncmp(sl_stage_path(stage), fx->sb.root, strlen(fx->sb.root)), 0);

	snprintf(p, sizeof(p), "%s/rootfs", sl_stage_path(stage));
	want = tree_snapshot(bundle_path(fx, "rootfs"), true);
	got = tree_snapshot(p, true);
	assert_string_equal(got, want);
	free(want);
	free(got);

	snprintf(p, sizeof(p), "%s/config.json", sl_stage_path(stage));
	assert_int_equal(lstat(p, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	text = calloc(1, (size_t)st.st_size + 1);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	n = read(fd, text, (size_t)st.st_size);
	assert_int_equal(n, st.st_size);
	close(fd);
	assert_null(strstr(text, "PACKAGED="));
	doc = cJSON_Parse(text);
	assert_non_null(doc);
	cJSON_ArrayForEach(e,
			   cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "process"), "env")) {
		static const char *const want_env[] = { "PATH=/bin", "TOKEN=" CANARY };

		assert_true(i < 2);
		assert_string_equal(cJSON_GetStringValue(e), want_env[i]);
		i++;
	}
	assert_int_equal(i, 2);
	cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "linux"),
							       "uidMappings"))
		assert_true(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(m, "hostID")) ==
			    (double)bundle_st.st_uid);
	cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "linux"),
							       "gidMappings"))
		assert_true(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(m, "hostID")) ==
			    (double)bundle_st.st_gid);
	assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
				    cJSON_GetObjectItemCaseSensitive(doc, "annotations"), "note")),
			    CANARY);
	cJSON_Delete(doc);
	free(text);

	assert_no_leak(fx, &err);
	assert_int_equal(sl_stage_release(stage, &err), 0);
	sl_stage_free(stage);
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_no_leak(fx, &err);
}

static void missing_bundle(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };

	remove_all(fx->bundle);
	char want[4200];

	/* The bundle is a path the user named: the message gives it. */
	snprintf(want, sizeof(want), "cannot stage bundle: %s: No such file or directory", fx->bundle);
	assert_refused(fx, stage_bundle(fx, env, 2, &stage, &err), &err, -ENOENT, want, stage);
}

static void bundle_not_directory(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };

	remove_all(fx->bundle);
	write_path(fx->bundle, CANARY, 0600);
	char want[4200];

	/* The bundle is a path the user named: the message gives it. */
	snprintf(want, sizeof(want), "cannot stage bundle: %s: not a directory", fx->bundle);
	assert_refused(fx, stage_bundle(fx, env, 2, &stage, &err), &err, -EBADMSG, want, stage);
}

static void missing_rootfs(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };
	char want[700];

	remove_all(bundle_path(fx, "rootfs"));
	snprintf(want, sizeof(want), "cannot stage bundle: %s/rootfs: No such file or directory", fx->bundle);
	assert_refused(fx, stage_bundle(fx, env, 2, &stage, &err), &err, -ENOENT, want, stage);
}

static void rootfs_symlink(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };
	char want[700];
	char target[600];

	snprintf(target, sizeof(target), "%s/real-rootfs", fx->sb.base);
	assert_int_equal(rename(bundle_path(fx, "rootfs"), target), 0);
	assert_int_equal(symlink(target, bundle_path(fx, "rootfs")), 0);
	snprintf(want, sizeof(want), "cannot stage bundle: %s/rootfs: a symbolic link, not a directory", fx->bundle);
	assert_refused(fx, stage_bundle(fx, env, 2, &stage, &err), &err, -EBADMSG, want, stage);
}

static void missing_config(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };
	char want[700];

	assert_int_equal(unlink(bundle_path(fx, "config.json")), 0);
	snprintf(want, sizeof(want), "cannot stage bundle: packaged config: %s/config.json: No such file or directory",
		 fx->bundle);
	assert_refused(fx, stage_bundle(fx, env, 2, &stage, &err), &err, -ENOENT, want, stage);
}

static void config_symlink(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };
	char want[700];
	char target[600];

	/* A good config behind the link: only the link is wrong. */
	snprintf(target, sizeof(target), "%s/elsewhere.json", fx->sb.base);
	assert_int_equal(rename(bundle_path(fx, "config.json"), target), 0);
	assert_int_equal(symlink(target, bundle_path(fx, "config.json")), 0);
	snprintf(want, sizeof(want), "cannot stage bundle: packaged config: %s/config.json: a symbolic link",
		 fx->bundle);
	assert_refused(fx, stage_bundle(fx, env, 2, &stage, &err), &err, -EBADMSG, want, stage);
}

static void config_too_large(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };
	size_t size = OCI_CONFIG_MAX + 1;
	char *big = malloc(size + 1), want[600];

	/* Valid JSON padded with blanks: only the size is wrong, by one byte. */
	assert_non_null(big);
	memset(big, ' ', size);
	memcpy(big, packaged, sizeof(packaged) - 1);
	big[size] = '\0';
	write_path(bundle_path(fx, "config.json"), big, 0644);
	snprintf(want, sizeof(want),
		 "cannot stage bundle: packaged config: %s/config.json: larger than the limit of 1 MiB", fx->bundle);
	assert_refused(fx, stage_bundle(fx, env, 2, &stage, &err), &err, -EBADMSG, want, stage);

	/* Exactly the limit is staged. */
	big[size - 1] = '\0';
	write_path(bundle_path(fx, "config.json"), big, 0644);
	free(big);
	assert_int_equal(stage_bundle(fx, env, 2, &stage, &err), 0);
	assert_int_equal(sl_stage_release(stage, &err), 0);
	sl_stage_free(stage);
}

/* A legal config nested to the depth limit, with many members at the
 * bottom (what cJSON's formatted print blew up a hundredfold), is staged
 * compactly: within OCI_CONFIG_GROWTH of its size, and in fact no larger
 * than it was plus the environment. */
static void config_deep_staged_compact(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };
	size_t cap = 512 * 1024, len;
	char *buf = malloc(cap), *p, staged[700];
	struct stat st;

	assert_non_null(buf);
	p = stpcpy(buf, "{\"process\":{\"args\":[\"sh\"]}");
	for (int i = 1; i < OCI_CONFIG_MAX_DEPTH; i++)
		p = stpcpy(p, ",\"n\":{\"x\":0");
	while ((size_t)(p - buf) < cap - 1024)
		p = stpcpy(p, ",\"k\":1");
	for (int i = 0; i < OCI_CONFIG_MAX_DEPTH; i++)
		*p++ = '}';
	*p = '\0';
	len = (size_t)(p - buf);
	write_path(bundle_path(fx, "config.json"), buf, 0644);
	free(buf);
	assert_int_equal(stage_bundle(fx, env, 2, &stage, &err), 0);
	snprintf(staged, sizeof(staged), "%s/config.json", sl_stage_path(stage));
	assert_int_equal(stat(staged, &st), 0);
	printf("a %zu-byte config nested %d levels deep was staged as %lld bytes\n", len, OCI_CONFIG_MAX_DEPTH,
	       (long long)st.st_size);
	assert_true((size_t)st.st_size <= OCI_CONFIG_GROWTH * len + OCI_CONFIG_SLACK + 128);
	assert_true((size_t)st.st_size <= len + 128);
	assert_int_equal(sl_stage_release(stage, &err), 0);
	sl_stage_free(stage);
	assert_int_equal(count_entries(fx->sb.root), 0);
}

static void config_malformed(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };

	write_path(bundle_path(fx, "config.json"), "{\"process\":\"" CANARY "\"}", 0644);
	assert_refused(fx, stage_bundle(fx, env, 2, &stage, &err), &err, -EBADMSG,
		       "bad packaged config: process: not an object", stage);
}

static void config_truncated(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };
	char half[sizeof(packaged)];

	memcpy(half, packaged, sizeof(packaged) / 2);
	half[sizeof(packaged) / 2] = '\0';
	write_path(bundle_path(fx, "config.json"), half, 0644);
	/* The cut falls inside a string: the message names the byte where
	 * that unterminated string's text begins, and nothing of the
	 * document. */
	char want[128];
	snprintf(want, sizeof(want), "bad packaged config: byte %zu: not valid JSON",
		 (size_t)(strrchr(half, '"') - half) + 1);
	assert_refused(fx, stage_bundle(fx, env, 2, &stage, &err), &err, -EBADMSG, want, stage);
}

static void bad_env_name(void **state)
{
	static const struct sl_env_var bad[] = { { "TOKEN", CANARY }, { "NOT-A-NAME", CANARY } };
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };

	assert_refused(fx, stage_bundle(fx, bad, 2, &stage, &err), &err, -EINVAL,
		       "bad environment variable: variable 2: name does not match [A-Za-z_][A-Za-z0-9_]*", stage);
}

/* A rootfs the copy refuses (a FIFO) fails after the stage began: the
 * stage is gone again and nothing is left under the root. */
static void copy_fails(void **state)
{
	struct fixture *fx = *state;
	struct sl_stage *stage = NULL;
	struct sl_error err = { 0 };
	int r;

	assert_int_equal(mkfifo(bundle_path(fx, "rootfs/usr/fifo"), 0600), 0);
	r = stage_bundle(fx, env, 2, &stage, &err);
	assert_true(r < 0);
	assert_int_equal(err.code, r);
	assert_null(stage);
	assert_int_equal(count_entries(fx->sb.root), 0);
	assert_no_leak(fx, &err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(success, setup, teardown),
		cmocka_unit_test_setup_teardown(missing_bundle, setup, teardown),
		cmocka_unit_test_setup_teardown(bundle_not_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(missing_rootfs, setup, teardown),
		cmocka_unit_test_setup_teardown(rootfs_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(missing_config, setup, teardown),
		cmocka_unit_test_setup_teardown(config_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(config_too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(config_deep_staged_compact, setup, teardown),
		cmocka_unit_test_setup_teardown(config_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(config_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_env_name, setup, teardown),
		cmocka_unit_test_setup_teardown(copy_fails, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
