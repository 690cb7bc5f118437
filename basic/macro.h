/* SPDX-License-Identifier: MIT */
/*
 * macro.h: the few helpers every folder shares: cleanup attributes, the
 * error-report writers, the fault seam, errno and fd helpers, the UTF-8 and
 * label rules, secret wiping (their bodies are util.c's). Private: never
 * installed.
 */
#ifndef STAGELOG_MACRO_H
#define STAGELOG_MACRO_H

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stdint.h>

#include "sl-basic.h"

#define HIDDEN __attribute__((visibility("hidden")))
#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define PRINTF_FMT(a, b) __attribute__((format(printf, a, b)))
/* A macro's value as a string literal, for a limit inside a message or an
 * SQL statement: STRINGIFY(STAGE_PATH_MAX) is "4095". */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

static inline void freep(void *p)
{
	free(*(void **)p);
}

/* Closes fd if it is one, keeping errno, and returns -1, so that
 * `fd = safe_close(fd);` leaves no stale descriptor behind. */
static inline int safe_close(int fd)
{
	if (fd >= 0) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return -1;
}

static inline void closep(int *fd)
{
	(void)safe_close(*fd);
}

static inline void closedirp(DIR **d)
{
	if (*d) {
		int saved = errno;
		closedir(*d);
		errno = saved;
	}
}

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_closedir_ _cleanup_(closedirp)

/* Hands ownership out of a cleanup variable. */
#define TAKE_PTR(p)                            \
	__extension__({                        \
		__typeof__(p) take_ptr_ = (p); \
		(p) = NULL;                    \
		take_ptr_;                     \
	})
#define TAKE_FD(fd)                  \
	__extension__({              \
		int take_fd_ = (fd); \
		(fd) = -1;           \
		take_fd_;            \
	})

/* Converts libc's -1/errno convention to a negative errno at once. */
static inline int negerrno(void)
{
	return errno > 0 ? -errno : -EIO;
}

/*
 * Fills *reterr (if not NULL) with code and a formatted, redacted message,
 * and returns code so that callers can write `return sl_err(...)`. The
 * format must never receive a secret, file contents or SQL text. When
 * reterr already holds an error, the first (innermost) one is kept.
 */
HIDDEN int sl_err(struct sl_error *reterr, int code, const char *fmt, ...) PRINTF_FMT(3, 4);

/* Like sl_err(), but replaces an error set before: for a report whose last
 * failure is the one that decided the outcome. */
HIDDEN int sl_err_replace(struct sl_error *reterr, int code, const char *fmt, ...) PRINTF_FMT(3, 4);

/* Adds context in front of the error *reterr holds ("context: inner"),
 * like crun's crun_error_wrap(); returns its code, or 0 when it holds none
 * (and then changes nothing). The same redaction rule as sl_err(). */
HIDDEN int sl_err_wrap(struct sl_error *reterr, const char *fmt, ...) PRINTF_FMT(2, 3);

/* Sets flags (SL_ERROR_*) in *reterr, if not NULL. */
HIDDEN void sl_err_flag(struct sl_error *reterr, unsigned flags);

/* Read a decimal number at *s (digits, after an optional '-' for the
 * signed one; no spaces, no '+') into *ret and move *s past it. False,
 * with *s unmoved, when there is none or it does not fit: sscanf's %lld
 * and %llu would wrap or clamp without a word (CERT ERR34-C). */
HIDDEN bool read_ll(const char **s, long long *ret);
HIDDEN bool read_ull(const char **s, unsigned long long *ret);

/* Clears *reterr (if not NULL). */
HIDDEN void sl_err_clear(struct sl_error *reterr);

/*
 * The fault seam. Every filesystem call that creates or removes something
 * and every store commit first calls fault_step(), which counts steps
 * and, when a test armed it, returns a negative errno at step fail_at or
 * kills the process with SIGKILL at step kill_at. Disarmed (the default),
 * it costs one increment and two compares.
 *
 * Each thread has its own seam (C11 _Thread_local): the count is written
 * on every step, and one shared counter would be a data race between two
 * threads that stage at once (sl-basic.h's thread rule allows that). A
 * test arms the seam of the thread that makes the calls.
 */
struct fault_seam {
	unsigned long steps;
	unsigned long fail_at;
	int fail_errno;
	unsigned long kill_at;
};
extern HIDDEN _Thread_local struct fault_seam fault_seam;
HIDDEN int fault_step_slow(void);

static inline int fault_step(void)
{
	fault_seam.steps++;
	if (fault_seam.fail_at == 0 && fault_seam.kill_at == 0)
		return 0;
	return fault_step_slow();
}

/* Creates the missing folders of path (absolute, or relative to the
 * working directory; not empty) 0700, like mkdir -p; path is modified while
 * it runs and restored. */
HIDDEN int mkdir_parents(char *path);

/* Milliseconds since the epoch, from CLOCK_REALTIME. */
HIDDEN int64_t epoch_ms(void);

/* Writes all of buf to fd, retrying on EINTR and short writes. */
HIDDEN int write_all(int fd, const void *buf, size_t len);

/* The length of the valid UTF-8 sequence at s (len > 0 bytes; RFC 3629:
 * no overlong form, no surrogate, nothing above U+10FFFF), or 0 if there
 * is none. */
HIDDEN size_t utf8_char_len(const unsigned char *s, size_t len);

/* True when buf (len bytes) is valid UTF-8 throughout. */
HIDDEN bool utf8_valid(const char *buf, size_t len);

/* The longest stage label: a label names the stage's top directory,
 * LABEL-ID, and a short one keeps that name readable in a listing. */
#define LABEL_MAX 32

/* True when label is [a-z0-9][a-z0-9_.-]{0,LABEL_MAX - 1}. */
HIDDEN bool label_valid(const char *label);

/* Wipes len bytes at p (a secret) and frees p. Accepts NULL. */
HIDDEN void erase_and_free(void *p, size_t len);

/* Wipes and frees a NUL-terminated secret string. Accepts NULL. */
static inline void erase_and_free_str(char *s)
{
	if (s)
		erase_and_free(s, strlen(s));
}

#endif
