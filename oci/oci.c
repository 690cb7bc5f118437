/* SPDX-License-Identifier: MIT */
/*
 * oci.c: staging an OCI bundle in one call, built only on the public stage
 * API. Everything that can be wrong with the packaged bundle is found
 * before the stage begins, so that bad input never creates anything.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "oci-private.h"

#define WHAT "cannot stage bundle"

/* Wipes and frees the packaged config's bytes. */
struct bytes {
	char *buf;
	size_t len;
};

static void bytes_wipep(struct bytes *b)
{
	erase_and_free(b->buf, b->len);
}

static int check_rootfs(int bundle_fd, const char *bundle, struct sl_error *reterr)
{
	struct stat st;

	/* Not followed: a rootfs symlink could point anywhere on the host,
	 * and the copy would then stage whatever it points to. */
	if (fstatat(bundle_fd, "rootfs", &st, AT_SYMLINK_NOFOLLOW) < 0)
		return sl_err(reterr, negerrno(), WHAT ": %s/rootfs: %s", bundle, strerror(errno));
	if (S_ISLNK(st.st_mode))
		return sl_err(reterr, -EBADMSG, WHAT ": %s/rootfs: a symbolic link, not a directory", bundle);
	if (!S_ISDIR(st.st_mode))
		return sl_err(reterr, -EBADMSG, WHAT ": %s/rootfs: not a directory", bundle);
	return 0;
}

/* Reads the packaged config.json of bundle (named in messages: the path the
 * caller gave, never a byte of the file) at most OCI_CONFIG_MAX bytes. */
static int read_config(int bundle_fd, const char *bundle, struct bytes *ret, struct sl_error *reterr)
{
	_cleanup_close_ int fd = -1;
	struct stat st;
	int r;

	/* O_NOFOLLOW: the packager must not make us read (and stage) a host
	 * file through a symlink. O_NONBLOCK: a FIFO must not hang the open;
	 * it is refused below as not regular. */
	fd = openat(bundle_fd, "config.json", O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 && errno == ELOOP)
		return sl_err(reterr, -EBADMSG, WHAT ": packaged config: %s/config.json: a symbolic link", bundle);
	if (fd < 0)
		return sl_err(reterr, negerrno(), WHAT ": packaged config: %s/config.json: %s", bundle,
			      strerror(errno));
	if (fstat(fd, &st) < 0)
		return sl_err(reterr, negerrno(), WHAT ": packaged config: %s/config.json: %s", bundle,
			      strerror(errno));
	if (!S_ISREG(st.st_mode))
		return sl_err(reterr, -EBADMSG, WHAT ": packaged config: %s/config.json: not a regular file", bundle);
	/* Refused before a byte is read when its size says so, and when it
	 * grows past the limit while it is read. */
	r = oci_read_fd(fd, OCI_CONFIG_MAX, &ret->buf, &ret->len);
	if (r == -EFBIG)
		return sl_err(reterr, -EBADMSG,
			      WHAT ": packaged config: %s/config.json: larger than the limit of %zu MiB", bundle,
			      OCI_CONFIG_MAX_MIB);
	if (r < 0)
		return sl_err(reterr, r, WHAT ": packaged config: %s/config.json: %s", bundle, strerror(-r));
	return 0;
}

/* Opens the bundle directory and stats it. O_PATH needs only search
 * permission on the bundle; every later lookup is relative to this fd, so
 * the bundle cannot be swapped for another directory between the checks
 * and the copy. */
static int open_bundle(const char *bundle, int *ret_fd, struct stat *ret_st, struct sl_error *reterr)
{
	_cleanup_close_ int fd = -1;

	fd = open(bundle, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOTDIR)
		return sl_err(reterr, -EBADMSG, WHAT ": %s: not a directory", bundle);
	if (fd < 0)
		return sl_err(reterr, negerrno(), WHAT ": %s: %s", bundle, strerror(errno));
	if (fstat(fd, ret_st) < 0)
		return sl_err(reterr, negerrno(), WHAT ": %s: %s", bundle, strerror(errno));
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Begins the stage and fills it: the bundle's rootfs/, then config (the
 * staged config.json), then ready. On failure nothing is left on disk. */
static int stage_bundle(struct sl_store *store, const struct sl_oci_options *opts, int bundle_fd,
			const struct bytes *config, struct sl_stage **ret, struct sl_error *reterr)
{
	struct sl_stage *stage = NULL;
	int r;

	r = sl_stage_begin(store, opts->root, &opts->stage, &stage, reterr);
	if (r < 0)
		return r;
	/* config.json goes last: a runtime that finds it may take the bundle
	 * as complete. Its entry goes in with the tree's, as their newest. */
	r = sl_stage_expect_file(stage, "config.json", reterr);
	if (r == 0)
		r = sl_stage_copy_tree(stage, bundle_fd, "rootfs", "rootfs", reterr);
	if (r == 0)
		r = sl_stage_write_file(stage, "config.json", config->buf, config->len, 0600, reterr);
	if (r == 0)
		r = sl_stage_ready(stage, reterr);
	if (r < 0) {
		/* The failing call aborted the stage already, and
		 * sl_stage_free() aborts one that is not finished, so nothing
		 * is left on disk either way. */
		sl_stage_free(stage);
		return r;
	}
	*ret = stage;
	return 0;
}

int sl_oci_stage(struct sl_store *store, const struct sl_oci_options *opts, struct sl_stage **ret,
		 struct sl_error *reterr)
{
	_cleanup_close_ int bundle_fd = -1;
	_cleanup_(bytes_wipep) struct bytes packaged = { 0 };
	_cleanup_(bytes_wipep) struct bytes config = { 0 };
	struct stat st;
	int r;

	if (opts && opts->notes)
		*opts->notes = (struct sl_oci_notes){ .missing_kept = SIZE_MAX };
	if (!store || !opts || !opts->root || !opts->bundle || (!opts->env && opts->n_env > 0) || !ret)
		return sl_err(reterr, -EINVAL, WHAT ": invalid argument");

	r = open_bundle(opts->bundle, &bundle_fd, &st, reterr);
	if (r < 0)
		return r;
	r = check_rootfs(bundle_fd, opts->bundle, reterr);
	if (r < 0)
		return r;
	r = read_config(bundle_fd, opts->bundle, &packaged, reterr);
	if (r < 0)
		return r;
	/* The mappings name the bundle directory's owner and never an id
	 * written in the config, which a packager could set to 0 (host root). */
	r = oci_config_transform_notes(packaged.buf, packaged.len, opts->env, opts->n_env, st.st_uid, st.st_gid,
				       opts->notes, &config.buf, &config.len, reterr);
	if (r < 0)
		return r;
	bytes_wipep(&packaged);
	packaged = (struct bytes){ 0 };
	return stage_bundle(store, opts, bundle_fd, &config, ret, reterr);
}
