/* SPDX-License-Identifier: MIT */
/*
 * envfile.c: lists of NAME=VALUE variables and the env-file reader. Values
 * are secrets: they never reach a message, and every buffer that held one
 * is wiped before it is freed.
 */
#include <assert.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/stat.h>

#include "oci-private.h"

/* The first capacity of a list, doubled as it fills. */
#define LIST_FIRST_CAP 16

bool oci_env_name_valid(const char *name, size_t len)
{
	if (len == 0 || !((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z') || name[0] == '_'))
		return false;
	for (size_t i = 1; i < len; i++) {
		char c = name[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return true;
}

const char *oci_env_value_problem(const char *value, size_t len)
{
	if (memchr(value, '\0', len))
		return "value contains a NUL byte";
	if (!utf8_valid(value, len))
		return "value is not valid UTF-8";
	return NULL;
}

static void wipe_free(const char *s)
{
	erase_and_free_str((char *)s);
}

/* Drops the variables from index n on, wiping them, so that a failed parse
 * leaves the list as it found it. */
static void list_truncate(struct oci_env_list *l, size_t n)
{
	assert(n <= l->n);
	while (l->n > n) {
		l->n--;
		wipe_free(l->vars[l->n].name);
		wipe_free(l->vars[l->n].value);
		l->vars[l->n] = (struct sl_env_var){ NULL, NULL };
	}
}

int oci_env_add(struct oci_env_list *l, const char *name, size_t name_len, const char *value, size_t value_len,
		struct sl_error *reterr)
{
	const char *problem;
	char *n, *v;

	/* Neither the name nor the value goes into a message: a name that
	 * fails the check may well be a secret typed in the wrong place. */
	if (!l || !name || !value)
		return sl_err(reterr, -EINVAL, "bad environment variable: missing name or value");
	if (!oci_env_name_valid(name, name_len))
		return sl_err(reterr, -EINVAL, "bad environment variable: name does not match [A-Za-z_][A-Za-z0-9_]*");
	problem = oci_env_value_problem(value, value_len);
	if (problem)
		return sl_err(reterr, -EINVAL, "bad environment variable: %s", problem);
	if (value_len == SIZE_MAX)
		return sl_err(reterr, -ENOMEM, "cannot add environment variable: %s", strerror(ENOMEM));

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : LIST_FIRST_CAP;
		struct sl_env_var *vars;

		if (cap > SIZE_MAX / sizeof(*vars))
			return sl_err(reterr, -ENOMEM, "cannot add environment variable: %s", strerror(ENOMEM));
		/* Only pointers move here, never a value, so realloc may leave
		 * the old array behind unwiped. */
		vars = realloc(l->vars, cap * sizeof(*vars));
		if (!vars)
			return sl_err(reterr, -ENOMEM, "cannot add environment variable: %s", strerror(ENOMEM));
		l->vars = vars;
		l->cap = cap;
	}
	n = strndup(name, name_len);
	v = malloc(value_len + 1);
	if (!n || !v) {
		free(n);
		free(v);
		return sl_err(reterr, -ENOMEM, "cannot add environment variable: %s", strerror(ENOMEM));
	}
	memcpy(v, value, value_len);
	v[value_len] = '\0';
	l->vars[l->n++] = (struct sl_env_var){ n, v };
	/* cppcheck: the list takes n and v: l->vars[l->n++] = { n, v }. */
	// cppcheck-suppress memleak
	return 0;
}

int oci_env_add_kept(struct oci_env_list *l, const char *name, size_t name_len, struct sl_error *reterr)
{
	int r = oci_env_add(l, name, name_len, "", 0, reterr);

	if (r < 0)
		return r;
	/* The empty value held no secret; NULL means "the packaged one". */
	free((char *)l->vars[l->n - 1].value);
	l->vars[l->n - 1].value = NULL;
	return 0;
}

static bool blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t')
			return false;
	return true;
}

int oci_env_parse(struct oci_env_list *l, const char *buf, size_t len, struct sl_error *reterr)
{
	size_t n0 = l->n, pos = 0;
	unsigned long line = 0;
	int r;

	assert(buf || len == 0);
	while (pos < len) {
		const char *s = buf + pos, *nl, *eq;
		size_t slen;
		const char *problem;

		nl = memchr(s, '\n', len - pos);
		slen = nl ? (size_t)(nl - s) : len - pos;
		pos += slen + (nl ? 1 : 0);
		line++;

		if (blank(s, slen) || s[0] == '#')
			continue;
		/* The line number is the only detail a message gives: the line
		 * itself may be a secret with a typo in it. */
		eq = memchr(s, '=', slen);
		if (!eq) {
			r = sl_err(reterr, -EBADMSG, "bad env file: line %lu: expected NAME=VALUE", line);
			goto fail;
		}
		if (!oci_env_name_valid(s, (size_t)(eq - s))) {
			r = sl_err(reterr, -EBADMSG,
				   "bad env file: line %lu: name does not match [A-Za-z_][A-Za-z0-9_]*", line);
			goto fail;
		}
		problem = oci_env_value_problem(eq + 1, slen - (size_t)(eq - s) - 1);
		if (problem) {
			r = sl_err(reterr, -EBADMSG, "bad env file: line %lu: %s", line, problem);
			goto fail;
		}
		r = oci_env_add(l, s, (size_t)(eq - s), eq + 1, slen - (size_t)(eq - s) - 1, reterr);
		if (r < 0)
			goto fail;
	}
	return 0;
fail:
	list_truncate(l, n0);
	return r;
}

int oci_read_fd(int fd, size_t max, char **ret, size_t *ret_len)
{
	struct stat st;
	size_t size = 0;
	char *buf;

	assert(ret && ret_len);
	if (fstat(fd, &st) < 0)
		return negerrno();
	if (st.st_size < 0 || (uintmax_t)st.st_size > max)
		return -EFBIG;
	/* One buffer of max + 1 bytes, never grown: growing would leave
	 * unwiped copies behind, and a file that grows after fstat() still
	 * meets the limit. Untouched pages of it cost nothing. */
	buf = malloc(max + 1);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t k = read(fd, buf + size, max + 1 - size);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int r = negerrno();
			erase_and_free(buf, size);
			return r;
		}
		if (k == 0)
			break;
		size += (size_t)k;
		if (size > max) {
			erase_and_free(buf, size);
			return -EFBIG;
		}
	}
	buf[size] = '\0';
	*ret = buf;
	*ret_len = size;
	return 0;
}

int oci_env_read_file(struct oci_env_list *l, const char *path, struct sl_error *reterr)
{
	_cleanup_close_ int fd = -1;
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int r;

	if (!l || !path)
		return sl_err(reterr, -EINVAL, "cannot read env file: no path");
	/* No message names path: it came from the command line, where it
	 * may be a token that lost its own option. The caller names the
	 * option instead. O_NONBLOCK keeps the open from blocking on a FIFO without a
	 * writer. A pipe is welcome (`--env-file <(vault read ...)` keeps the
	 * tokens off any disk), so it is read blocking from then on; anything
	 * else that is not a regular file (a device, a socket) is refused. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return sl_err(reterr, negerrno(), "cannot read env file: %s", strerror(errno));
	if (fstat(fd, &st) < 0)
		return sl_err(reterr, negerrno(), "cannot read env file: %s", strerror(errno));
	if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
		return sl_err(reterr, -EBADMSG, "bad env file: not a regular file or a pipe");
	if (S_ISFIFO(st.st_mode) && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
		return sl_err(reterr, negerrno(), "cannot read env file: %s", strerror(errno));
	/* A named FIFO whose writer has not opened it yet reads as empty:
	 * wait until there is data, or a writer that came and went. */
	if (S_ISFIFO(st.st_mode)) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		while (poll(&p, 1, -1) < 0)
			if (errno != EINTR)
				return sl_err(reterr, negerrno(), "cannot read env file: %s", strerror(errno));
	}
	r = oci_read_fd(fd, OCI_ENV_FILE_MAX, &buf, &len);
	if (r == -EFBIG)
		return sl_err(reterr, -EBADMSG, "bad env file: larger than the limit of %zu MiB", OCI_ENV_FILE_MAX_MIB);
	if (r < 0)
		return sl_err(reterr, r, "cannot read env file: %s", strerror(-r));
	r = oci_env_parse(l, buf, len, reterr);
	erase_and_free(buf, len);
	return r;
}

void oci_env_list_finish(struct oci_env_list *l)
{
	if (!l)
		return;
	list_truncate(l, 0);
	free(l->vars);
	*l = (struct oci_env_list){ 0 };
}
