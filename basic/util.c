/* SPDX-License-Identifier: MIT */
#include <signal.h>
#include <stdio.h>
#include <time.h>

#include <sys/stat.h>

#include "macro.h"

_Thread_local struct sl_fault sl_fault;

int sl_fault_step_slow(void)
{
	if (sl_fault.kill_at && sl_fault.steps == sl_fault.kill_at)
		raise(SIGKILL);
	if (sl_fault.fail_at && sl_fault.steps == sl_fault.fail_at)
		return -sl_fault.fail_errno;
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

void sl_err_clear(struct sl_error *reterr)
{
	if (reterr) {
		reterr->code = 0;
		reterr->flags = 0;
		reterr->msg[0] = '\0';
	}
}

int64_t sl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mkdir_parents(char *path)
{
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
