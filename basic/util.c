/* SPDX-License-Identifier: MIT */
/*
 * util.c: the bodies of macro.h's shared helpers: the fault seam's slow
 * path, the error-report writers (sl_err() keeps the first error,
 * sl_err_replace() the last, sl_err_wrap() adds context in front,
 * sl_err_flag() ORs in SL_ERROR_* flags), the clock, mkdir -p, the write
 * loop, secret wiping, strict number reading, and the UTF-8 and label
 * rules.
 */
#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/stat.h>

#include "macro.h"

#define MSEC_PER_SEC 1000
#define NSEC_PER_MSEC 1000000

_Thread_local struct fault_seam fault_seam;

int fault_step_slow(void)
{
	if (fault_seam.kill_at && fault_seam.steps == fault_seam.kill_at)
		raise(SIGKILL);
	if (fault_seam.fail_at && fault_seam.steps == fault_seam.fail_at)
		return -fault_seam.fail_errno;
	return 0;
}

int sl_err(struct sl_error *reterr, int code, const char *fmt, ...)
{
	va_list ap;

	if (!reterr || reterr->code != 0)
		return code;
	reterr->code = code;
	va_start(ap, fmt);
	vsnprintf(reterr->msg, sizeof(reterr->msg), fmt, ap);
	va_end(ap);
	return code;
}

int sl_err_replace(struct sl_error *reterr, int code, const char *fmt, ...)
{
	va_list ap;

	if (!reterr)
		return code;
	reterr->code = code;
	va_start(ap, fmt);
	vsnprintf(reterr->msg, sizeof(reterr->msg), fmt, ap);
	va_end(ap);
	return code;
}

int sl_err_wrap(struct sl_error *reterr, const char *fmt, ...)
{
	char out[sizeof(reterr->msg)];
	size_t n, m;
	va_list ap;

	if (!reterr || reterr->code == 0)
		return reterr ? reterr->code : 0;
	va_start(ap, fmt);
	vsnprintf(out, sizeof(out), fmt, ap);
	va_end(ap);
	/* "context: inner", cut at the size of msg. */
	n = strlen(out);
	if (n + 2 < sizeof(out)) {
		memcpy(out + n, ": ", 2);
		n += 2;
		m = strnlen(reterr->msg, sizeof(reterr->msg));
		if (m > sizeof(out) - 1 - n)
			m = sizeof(out) - 1 - n;
		memcpy(out + n, reterr->msg, m);
		n += m;
	}
	out[n] = '\0';
	memcpy(reterr->msg, out, n + 1);
	return reterr->code;
}

void sl_err_flag(struct sl_error *reterr, unsigned flags)
{
	if (reterr)
		reterr->flags |= flags;
}

bool read_ll(const char **s, long long *ret)
{
	const char *p = *s + (**s == '-');
	char *end;
	long long v;

	if (*p < '0' || *p > '9')
		return false;
	errno = 0;
	v = strtoll(*s, &end, 10);
	if (errno == ERANGE)
		return false;
	*ret = v;
	*s = end;
	return true;
}

bool read_ull(const char **s, unsigned long long *ret)
{
	char *end;
	unsigned long long v;

	if (**s < '0' || **s > '9')
		return false;
	errno = 0;
	v = strtoull(*s, &end, 10);
	if (errno == ERANGE)
		return false;
	*ret = v;
	*s = end;
	return true;
}

void sl_err_clear(struct sl_error *reterr)
{
	if (reterr) {
		reterr->code = 0;
		reterr->flags = 0;
		reterr->msg[0] = '\0';
	}
}

int64_t epoch_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * MSEC_PER_SEC + ts.tv_nsec / NSEC_PER_MSEC;
}

int mkdir_parents(char *path)
{
	/* The loop starts past the first byte. */
	assert(path[0] != '\0');
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		int r = mkdir(path, 0700) < 0 && errno != EEXIST ? negerrno() : 0;
		*p = c;
		if (r < 0 || c == '\0')
			return r;
	}
}

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negerrno();
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

void erase_and_free(void *p, size_t len)
{
	if (p) {
		explicit_bzero(p, len);
		free(p);
	}
}

size_t utf8_char_len(const unsigned char *s, size_t len)
{
	unsigned char b, lo = 0x80, hi = 0xbf;
	size_t n;

	assert(len > 0);
	b = s[0];
	if (b < 0x80)
		return 1;
	if (b >= 0xc2 && b <= 0xdf)
		n = 2;
	else if (b >= 0xe0 && b <= 0xef)
		n = 3;
	else if (b >= 0xf0 && b <= 0xf4)
		n = 4;
	else
		return 0;
	/* The second byte's range shuts out what RFC 3629 forbids: overlong
	 * forms after 0xe0 and 0xf0, surrogates after 0xed, and code points
	 * above U+10FFFF after 0xf4. */
	if (b == 0xe0)
		lo = 0xa0;
	else if (b == 0xed)
		hi = 0x9f;
	else if (b == 0xf0)
		lo = 0x90;
	else if (b == 0xf4)
		hi = 0x8f;
	if (len < n || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

bool utf8_valid(const char *buf, size_t len)
{
	const unsigned char *s = (const unsigned char *)buf;

	for (size_t i = 0, n; i < len; i += n) {
		n = utf8_char_len(s + i, len - i);
		if (n == 0)
			return false;
	}
	return true;
}

bool label_valid(const char *label)
{
	size_t len = strlen(label);

	/* Spelt out rather than islower(): a locale must not widen it. */
	if (len == 0 || len > LABEL_MAX)
		return false;
	if (!((label[0] >= 'a' && label[0] <= 'z') || (label[0] >= '0' && label[0] <= '9')))
		return false;
	return strspn(label, "abcdefghijklmnopqrstuvwxyz0123456789_.-") == len;
}
