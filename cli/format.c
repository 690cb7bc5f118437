/* SPDX-License-Identifier: MIT */
/*
 * format.c: times, ages and sizes as text for people and for JSON.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"

void cli_format_time(int64_t ms, char buf[CLI_TIME_MAX])
{
	/* Floor division, so that times before 1970 still print sensibly. */
	int64_t sec = ms / CLI_MS_PER_S, frac = ms % CLI_MS_PER_S;
	struct tm tm;
	time_t t;

	if (frac < 0) {
		frac += CLI_MS_PER_S;
		sec--;
	}
	t = (time_t)sec;
	if (!gmtime_r(&t, &tm) || strftime(buf, CLI_TIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(buf, CLI_TIME_MAX, "invalid");
		return;
	}
	snprintf(buf + strlen(buf), CLI_TIME_MAX - strlen(buf), ".%03dZ", (int)frac);
}

void cli_format_age(int64_t created_ms, int64_t now_ms, char buf[CLI_AGE_MAX])
{
	int64_t s = now_ms > created_ms ? (now_ms - created_ms) / CLI_MS_PER_S : 0;

	if (s < CLI_S_PER_MIN)
		snprintf(buf, CLI_AGE_MAX, "%llds", (long long)s);
	else if (s < CLI_S_PER_HOUR)
		snprintf(buf, CLI_AGE_MAX, "%lldm", (long long)(s / CLI_S_PER_MIN));
	else if (s < CLI_S_PER_DAY)
		snprintf(buf, CLI_AGE_MAX, "%lldh", (long long)(s / CLI_S_PER_HOUR));
	else
		snprintf(buf, CLI_AGE_MAX, "%lldd", (long long)(s / CLI_S_PER_DAY));
}

#define KIB UINT64_C(1024)
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

void cli_format_bytes(uint64_t n, char buf[CLI_BYTES_MAX])
{
	if (n < KIB)
		snprintf(buf, CLI_BYTES_MAX, "%llu B", (unsigned long long)n);
	else if (n < MIB)
		snprintf(buf, CLI_BYTES_MAX, "%.1f KiB", (double)n / KIB);
	else if (n < GIB)
		snprintf(buf, CLI_BYTES_MAX, "%.1f MiB", (double)n / MIB);
	else
		snprintf(buf, CLI_BYTES_MAX, "%.1f GiB", (double)n / GIB);
}
