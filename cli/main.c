/* SPDX-License-Identifier: MIT */
/*
 * main.c: stagelog's entry point: the global options and the command table.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
/* The program alone sets SQLite's process-wide settings. */
#include "store-private.h"

static const struct cli_command commands[] = {
	{ "stage", cmd_stage, "stage an OCI bundle and leave it ready" },
	{ "run", cmd_run, "stage a bundle, run a runtime on it, release it" },
	{ "release", cmd_release, "remove a stage and mark it released" },
	{ "forget", cmd_forget, "drop the record of a failed or stale stage" },
	{ "publish", cmd_publish, "move a ready stage to a destination" },
	{ "recover", cmd_recover, "remove stale stages" },
	{ "list", cmd_list, "list in-flight stages" },
	{ "show", cmd_show, "show one stage and its entries" },
	{ "gc", cmd_gc, "delete old records of finished stages" },
	{ "check", cmd_check, "check the store and look for orphans" },
	{ "metrics", cmd_metrics, "print metrics in the Prometheus text format" },
	{ "help", cmd_help, "print the help of stagelog or of a command" },
};

static const struct cli_command *find_command(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		if (strcmp(name, commands[i].name) == 0)
			return &commands[i];
	return NULL;
}

/* "unknown command: argument #N", with a command the table holds that is
 * a typo away, and the pointer to help. Not echoed: a token could have
 * been typed where the command goes, and the suggestion is a table name. */
static int unknown_command(const char *prefix, const char *arg)
{
	const char *names[ELEMENTSOF(commands)];
	const char *suggestion;

	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		names[i] = commands[i].name;
	suggestion = cli_suggest(arg, strlen(arg), names, ELEMENTSOF(names));
	fprintf(stderr, "stagelog: %sunknown command (argument #%d)", prefix, cli_arg_position(arg));
	if (suggestion)
		fprintf(stderr, "; did you mean '%s'?", suggestion);
	cli_fput_try_help(stderr);
	return EX_USAGE;
}

/* The usage goes to stdout when asked for, and to stderr (with exit 64)
 * when a command is missing, as a reader of a script's log expects. */
static int usage(FILE *f)
{
	fprintf(f,
		"usage: stagelog [--db PATH] [--json] [-q | -v] COMMAND [OPTIONS] [ARGS]\n"
		"       stagelog COMMAND --help\n"
		"       stagelog help [COMMAND]\n"
		"       stagelog --version\n"
		"\n"
		"Global options:\n"
		"  --db PATH      the store (default: $STAGELOG_DB, else a per-user path)\n"
		"  --json         print one JSON document on stdout\n"
		"  -q, --quiet    print less on stderr\n"
		"  -v, --verbose  print more on stderr\n"
		"  -h, --help     print this help\n"
		"  --version      print the versions of stagelog and SQLite (with --json\n"
		"                 before it: as one JSON object)\n"
		"\n"
		"Commands:\n");
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
	return EX_OK;
}

/* The usage on stderr for a missing command. In the journal each of its
 * lines is an error line of its own, so each gets the <3> prefix. */
static void usage_error(void)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	FILE *m = cli_stderr_is_journal() ? open_memstream(&text, &len) : NULL;

	if (!m) {
		usage(stderr);
		return;
	}
	usage(m);
	if (fclose(m) != 0 || !text)
		return;
	for (char *line = text, *nl; *line; line = nl + 1) {
		nl = strchrnul(line, '\n');
		fprintf(stderr, "<%d>%.*s\n", LOG_ERR, (int)(nl - line), line);
		if (!*nl)
			break;
	}
}

/* `stagelog help [COMMAND]`: the command's own --help, which never opens
 * the store. */
int cmd_help(struct cli *cli, int argc, char **argv)
{
	static const struct option longopts[] = { CLI_COMMON_OPTIONS, { 0 } };
	static const struct cli_options options = {
		.cmd = "help",
		.optstring = ":h",
		.longopts = longopts,
		.usage = "usage: stagelog help [COMMAND]\n"
			 "\n"
			 "Prints the help of stagelog, or of COMMAND.\n",
	};
	const struct cli_command *cmd;
	char *help_argv[3];
	enum cli_stop stop;
	int code;

	cli->read_only = true;
	code = cli_parse_options(cli, &options, argc, argv, NULL, &stop);
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;
	if (argc - optind > 1)
		return cli_usage_error("help: unexpected argument #%d", cli_arg_position(argv[optind + 1]));
	if (argc - optind == 0)
		return usage(stdout);
	cmd = find_command(argv[optind]);
	if (!cmd) {
		cli_set_command(NULL); /* the list of commands is in --help */
		return unknown_command("help: ", argv[optind]);
	}
	help_argv[0] = (char *)cmd->name;
	help_argv[1] = (char *)"--help";
	help_argv[2] = NULL;
	optind = 0;
	return cmd->run(cli, 2, help_argv);
}

/*
 * `stagelog --version`: the version of the stagelog library this program
 * runs (sl_version()) and of the SQLite library it loaded, which a
 * distribution may have upgraded under it. The first line stays
 * "stagelog VERSION": scripts read it. Returns an exit code.
 */
static int print_version(const struct cli *cli)
{
	cJSON *doc;

	if (!cli->json) {
		printf("stagelog %s\nsqlite %s\n", sl_version(), sl_store_sqlite_version());
		return EX_OK;
	}
	doc = cJSON_CreateObject();
	return cli_json_print(doc, doc && cJSON_AddStringToObject(doc, "version", sl_version()) &&
					   cJSON_AddStringToObject(doc, "sqlite", sl_store_sqlite_version()));
}

/* Parses the global options into cli. Returns EX_OK to go on, or the exit
 * code to return now; *ret_stop is CLI_HELP_SHOWN after --help or
 * --version (with EX_OK), else CLI_GO_ON. */
static int parse_global_options(struct cli *cli, int argc, char **argv, enum cli_stop *ret_stop)
{
	enum { OPT_DB = 0x100, OPT_JSON, OPT_VERSION };
	static const struct option options[] = {
		{ "db", required_argument, NULL, OPT_DB },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ 0 },
	};
	int c;

	*ret_stop = CLI_GO_ON;
	/* "+": the first non-option is the command; what follows is its own. */
	while ((c = cli_getopt(NULL, NULL, argc, argv, "+:qvh", options)) != -1) {
		switch (c) {
		case OPT_DB:
			cli->db = optarg;
			break;
		case OPT_JSON:
			cli->json = true;
			break;
		case 'q':
			cli->verbosity = -1;
			break;
		case 'v':
			cli->verbosity = cli->verbosity < 0 ? 1 : cli->verbosity + 1;
			break;
		case 'h':
			*ret_stop = CLI_HELP_SHOWN;
			return usage(stdout);
		case OPT_VERSION: {
			int code = print_version(cli);

			if (code == EX_OK)
				*ret_stop = CLI_HELP_SHOWN;
			return code;
		}
		default:
			return EX_USAGE;
		}
	}
	return EX_OK;
}

/*
 * Whether stdout's reader went away: the failed flush said EPIPE, or (when
 * the write that failed came earlier and errno has moved on) stdout is a
 * pipe or socket that reports an error to poll(), as a pipe does once its
 * last reader closed it.
 */
static bool reader_gone(int e)
{
	struct pollfd p = { .fd = STDOUT_FILENO, .events = 0 };

	if (e == EPIPE)
		return true;
	return poll(&p, 1, 0) == 1 && (p.revents & POLLERR);
}

/* The exit code of a command that returned code, once a caught signal and
 * stdout's fate are taken into account. */
static int finish(const struct cli *cli, int code)
{
	/* A command ends the step it is in and then honours the signal; a
	 * stage that printed its id was delivered and ends as a success. */
	if (cli_signal_caught() && code == EX_OK && !cli->delivered)
		code = CLI_EXIT_SIGNAL + cli_signal_caught();

	/* Output that did not reach its reader (a full disk, a closed pipe)
	 * is a failure, not a success. A command that only reads, whose
	 * reader went away (`stagelog list | head -1`), says nothing about it:
	 * the reader had what it wanted, and a line on stderr would be noise in
	 * every pipeline. stage and run (not read-only) still say it: a stage
	 * whose id was lost is aborted. */
	if (!cli->stdout_closed && (fflush(stdout) != 0 || ferror(stdout))) {
		int e = errno;

		if (!(cli->read_only && reader_gone(e)))
			cli_error("cannot write output: stdout: %s", strerror(e));
		if (code == EX_OK)
			code = EX_IOERR;
	}
	return code;
}

/* stderr's buffer: room for the longest line stagelog writes, a failed
 * stage's line with its path escaped (up to 4 bytes a byte) and its
 * reason, so that it too leaves in one write. */
static char stderr_buf[8 * PATH_MAX];

int main(int argc, char **argv)
{
	struct cli cli = { 0 };
	const struct cli_command *cmd = NULL;
	enum cli_stop stop;
	int code;

	/* Each line of stderr leaves in one write(2), not a byte at a time
	 * (stderr is unbuffered, and an escaped path is written a character
	 * at a time): a diagnostic reaches a pipe or the journal whole, and is
	 * not torn by another process writing to the same one. */
	setvbuf(stderr, stderr_buf, _IOLBF, sizeof(stderr_buf));
	store_tune_process();
	cli_signals_init();
	cli_save_argv(argc, argv);
	code = parse_global_options(&cli, argc, argv, &stop);
	if (code == EX_OK && stop == CLI_HELP_SHOWN) {
		cli.read_only = true;
		return finish(&cli, EX_OK);
	}
	if (code != EX_OK)
		return code;
	if (optind >= argc) {
		usage_error();
		return EX_USAGE;
	}

	cmd = find_command(argv[optind]);
	if (!cmd)
		return unknown_command("", argv[optind]);
	cli_set_command(cmd->name);

	argc -= optind;
	argv += optind;
	optind = 0; /* glibc: start the command's parse afresh */
	code = cmd->run(&cli, argc, argv);
	sl_store_close(cli.store);
	return finish(&cli, code);
}
