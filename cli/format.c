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
	int64_t sec = ms / 1000, frac = ms % 1000;
	struct tm tm;
	time_t t;

	if (frac < 0) {
		frac += 1000;
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
	int64_t s = now_ms > created_ms ? (now_ms - created_ms) / 1000 : 0;

	if (s < 60)
		snprintf(buf, CLI_AGE_MAX, "%llds", (long long)s);
	else if (s < 3600)
		snprintf(buf, CLI_AGE_MAX, "%lldm", (long long)(s / 60));
	else if (s < 86400)
		snprintf(buf, CLI_AGE_MAX, "%lldh", (long long)(s / 3600));
	else
		snprintf(buf, CLI_AGE_MAX, "%lldd", (long long)(s / 86400));
}

void cli_format_bytes(uint64_t n, char buf[CLI_BYTES_MAX])
{
	if (n < 1024)
		snprintf(buf, CLI_BYTES_MAX, "%llu B", (unsigned long long)n);
	else if (n < 1024 * 1024)
		snprintf(buf, CLI_BYTES_MAX, "%.1f KiB", (double)n / 1024);
	else if (n < 1024ull * 1024 * 1024)
		snprintf(buf, CLI_BYTES_MAX, "%.1f MiB", (double)n / (1024 * 1024));
	else
		snprintf(buf, CLI_BYTES_MAX, "%.1f GiB", (double)n / (1024 * 1024 * 1024));
}
