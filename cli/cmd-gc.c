/* SPDX-License-Identifier: MIT */
/*
 * cmd-gc.c: `stagelog gc`.
 */
#include <ctype.h>
#include <stdio.h>

#include "cli.h"

static const char usage[] =
	"usage: stagelog gc [--older-than DURATION]\n"
	"\n"
	"Deletes the records of finished stages (released, aborted, recovered)\n"
	"last updated at or before now - DURATION. Records of published stages\n"
	"are kept: their destination tells check a published tree from an orphan.\n"
	"\n"
	"  --older-than DURATION  a whole number and a unit: s, m, h or d\n"
	"                         (default: 7d)\n"
	"  -h, --help             print this help\n";

/* --older-than's default, in days (the usage says "7d"). */
#define GC_DEFAULT_DAYS 7

/* Parses DURATION: digits then exactly one unit, nothing else (no sign, no
 * space, no bare number), without overflowing milliseconds. */
static int parse_duration(const char *s, int64_t *ret_ms)
{
	static const struct {
		char unit;
		int64_t ms;
	} units[] = {
		{ 's', CLI_MS_PER_S },
		{ 'm', CLI_S_PER_MIN * CLI_MS_PER_S },
		{ 'h', CLI_S_PER_HOUR * CLI_MS_PER_S },
		{ 'd', CLI_S_PER_DAY * CLI_MS_PER_S },
	};
	int64_t n = 0;
	size_t i;

	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	for (i = 0; isdigit((unsigned char)s[i]); i++) {
		if (n > (INT64_MAX - 9) / 10)
			return -ERANGE;
		n = n * 10 + (s[i] - '0');
	}
	if (s[i] == '\0' || s[i + 1] != '\0')
		return -EINVAL;
	for (size_t u = 0; u < ELEMENTSOF(units); u++) {
		if (s[i] != units[u].unit)
			continue;
		if (n > INT64_MAX / units[u].ms)
			return -ERANGE;
		*ret_ms = n * units[u].ms;
		return 0;
	}
	return -EINVAL;
}

/* --older-than, the only option; userdata is the int64_t it sets. */
static int gc_option(int c, char *arg, void *userdata)
{
	int r;

	(void)c;
	r = parse_duration(arg, userdata);
	if (r == -ERANGE)
		return cli_usage_error("gc: --older-than: argument #%d: too large", cli_arg_position(arg));
	if (r < 0)
		return cli_usage_error("gc: --older-than: argument #%d: expected a number and a unit (s, m, h, d)",
				       cli_arg_position(arg));
	return EX_OK;
}

static const struct cli_options gc_options = {
	.cmd = "gc",
	.optstring = ":h",
	.longopts =
		(const struct option[]){
			{ "older-than", required_argument, NULL, 'o' },
			CLI_COMMON_OPTIONS,
			{ 0 },
		},
	.usage = usage,
	.handle = gc_option,
};

int cmd_gc(struct cli *cli, int argc, char **argv)
{
	struct sl_error err = { 0 };
	int64_t older_than = (int64_t)GC_DEFAULT_DAYS * CLI_S_PER_DAY * CLI_MS_PER_S;
	enum cli_stop stop;
	cJSON *doc;
	int r, code;

	code = cli_parse_options(cli, &gc_options, argc, argv, &older_than, &stop);
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;
	code = cli_want_operands("gc", argc, argv, 0, "");
	if (code == EX_OK)
		code = cli_open_store(cli);
	if (code != EX_OK)
		return code;

	r = sl_recover_gc(cli->store, older_than, &err);
	if (r < 0)
		return cli_fail(r, &err, "cannot delete old records");
	if (cli->json) {
		doc = cJSON_CreateObject();
		return cli_json_print(doc, doc && cJSON_AddNumberToObject(doc, "deleted", r));
	}
	printf("deleted %d records\n", r);
	return EX_OK;
}
