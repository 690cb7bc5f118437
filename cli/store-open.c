/* SPDX-License-Identifier: MIT */
/*
 * store-open.c: finding and opening the store (cli_store_path,
 * cli_open_store, cli_open_store_readonly, cli_no_store), turning what a
 * user typed into a stage id (cli_check_id, cli_resolve_id), and the
 * prologue of the commands that take an ID (cli_id_command).
 */
#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cli_store_path(const struct cli *cli, char *buf, size_t size)
{
	int r;

	/* A path too long (--db, $STAGELOG_DB, $XDG_STATE_HOME or $HOME) is
	 * the user's to fix, not a bug. */
	if (cli->db) {
		if (snprintf(buf, size, "%s", cli->db) >= (int)size)
			return cli_usage_error("cannot find the store: --db: %s", strerror(ENAMETOOLONG));
		return EX_OK;
	}
	r = sl_store_default_path(buf, size);
	if (r == -ENOENT)
		return cli_usage_error("cannot find the store: HOME is not set (pass --db)");
	if (r < 0)
		return cli_usage_error("cannot find the store: %s (pass --db)", strerror(-r));
	return EX_OK;
}

/* Opens the store at cli->store_path. Sets *ret_missing (and returns
 * EX_OK) when cli->nocreate is set and there is no store. */
static int open_store(struct cli *cli, bool *ret_missing)
{
	struct sl_error err = { 0 };
	int r;

	*ret_missing = false;
	r = cli_store_path(cli, cli->store_path, sizeof(cli->store_path));
	if (r != EX_OK)
		return r;
	cli_verbose(cli, "store: %s", cli->store_path);
	r = sl_store_open_flags(cli->store_path,
				(cli->nocreate ? SL_STORE_OPEN_NOCREATE : 0) |
					(cli->read_only ? SL_STORE_OPEN_INSPECT : 0),
				&cli->store, &err);
	if (r == -ENOENT && cli->nocreate) {
		*ret_missing = true;
		return EX_OK;
	}
	/* A store that is not one (or no longer is): one line, with the
	 * command that looks into it; `check` itself says no more. */
	if (r == -EBADMSG && err.msg[0] && !cli->checking) {
		fputs("stagelog: ", stderr);
		cli_fput_escaped(stderr, err.msg, strnlen(err.msg, sizeof(err.msg)));
		fputs("; see 'stagelog check'\n", stderr);
		return cli_exit_code(r, &err);
	}
	if (r < 0)
		return cli_fail(r, &err, "cannot open the store");
	return EX_OK;
}

int cli_open_store(struct cli *cli)
{
	bool missing;

	/* Without cli->nocreate a missing store is created, never missing. */
	assert(!cli->nocreate);
	return open_store(cli, &missing);
}

int cli_open_store_readonly(struct cli *cli, enum cli_stop *ret_stop)
{
	bool missing;
	int code;

	cli->nocreate = true;
	code = open_store(cli, &missing);
	*ret_stop = code == EX_OK && missing ? CLI_NO_STORE : CLI_GO_ON;
	return code;
}

int cli_no_store(const struct cli *cli, const char *what)
{
	if (!what) {
		if (cli->verbosity >= 0)
			cli_say(LOG_INFO, "no store at %s: nothing in flight", cli->store_path);
		return EX_OK;
	}
	cli_error("%s: %s: no store", what, cli->store_path);
	return EX_NOINPUT;
}

int cli_check_id(const char *prefix)
{
	size_t len = strlen(prefix);
	bool hex = len >= CLI_ID_PREFIX_MIN && len <= SL_ID_SIZE - 1;

	for (size_t i = 0; hex && i < len; i++)
		hex = isxdigit((unsigned char)prefix[i]);
	if (!hex)
		return cli_usage_error("bad id: argument #%d: an id or its prefix is %d to %d hex digits",
				       cli_arg_position(prefix), CLI_ID_PREFIX_MIN, SL_ID_SIZE - 1);
	return EX_OK;
}

/* The candidates an ambiguous id lists at most, then "...": enough to
 * pick the right one from, few enough for one line. */
#define CLI_ID_CANDIDATES 8

int cli_resolve_id(struct cli *cli, const char *prefix, char ret_id[SL_ID_SIZE])
{
	struct sl_error err = { 0 };
	char lower[SL_ID_SIZE], cand[CLI_ID_CANDIDATES][SL_ID_SIZE];
	size_t len = strlen(prefix), n = 0;
	int r, pos = cli_arg_position(prefix);

	/* Ids are lowercase hex; accept what a user copied in uppercase, and
	 * refuse anything else here so that it never reaches a query. The
	 * prefix is named by its position only: 4 to 32 hex digits may just
	 * as well be a token pasted in the wrong place. The candidates of an
	 * ambiguous one come from the store, and are ids. */
	r = cli_check_id(prefix);
	if (r != EX_OK)
		return r;
	for (size_t i = 0; i <= len; i++)
		lower[i] = (char)tolower((unsigned char)prefix[i]);

	r = sl_recover_resolve_id(cli->store, lower, ret_id, cand, ELEMENTSOF(cand), &n, &err);
	if (r == -ENOENT)
		return cli_usage_error("unknown id: argument #%d: no stage has it", pos);
	if (r == -EINVAL)
		return cli_usage_error("bad id: argument #%d", pos);
	if (r == -ENOTUNIQ) {
		cli_diag(LOG_ERR);
		fprintf(stderr, "ambiguous id: argument #%d: candidates:", pos);
		for (size_t i = 0; i < n && i < ELEMENTSOF(cand); i++)
			fprintf(stderr, " %s", cand[i]);
		if (n >= ELEMENTSOF(cand))
			fputs(" ...", stderr);
		cli_fput_try_help(stderr);
		return EX_USAGE;
	}
	if (r < 0)
		return cli_fail(r, &err, "cannot look up the id");
	cli_verbose(cli, "id: %s", ret_id);
	return EX_OK;
}

int cli_id_command(struct cli *cli, const struct cli_id_command *c, int argc, char **argv, char ret_id[SL_ID_SIZE],
		   enum cli_stop *ret_stop)
{
	static const struct option longopts[] = { CLI_COMMON_OPTIONS, { 0 } };
	const struct cli_options o = { .cmd = c->cmd, .optstring = ":h", .longopts = longopts, .usage = c->usage };
	int code;

	code = cli_parse_options(cli, &o, argc, argv, NULL, ret_stop);
	if (code != EX_OK || *ret_stop != CLI_GO_ON)
		return code;
	code = cli_want_operands(c->cmd, argc, argv, c->n, c->names);
	/* A malformed id is a usage error whether or not a store exists. */
	if (code == EX_OK)
		code = cli_check_id(argv[optind]);
	if (code == EX_OK)
		code = c->readonly ? cli_open_store_readonly(cli, ret_stop) : cli_open_store(cli);
	if (code == EX_OK && *ret_stop == CLI_GO_ON)
		code = cli_resolve_id(cli, argv[optind], ret_id);
	return code;
}
