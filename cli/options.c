/* SPDX-License-Identifier: MIT */
/*
 * options.c: parsing a command line: the saved argv that diagnostics give
 * positions in, getopt_long() with stagelog's own one-line messages and
 * typo suggestions, the option loop every command shares, and its
 * operands.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/*
 * The command line as main() got it, before getopt_long() permuted it. A
 * diagnostic about an argument gives its position here, never its text:
 * a token typed in the wrong place would otherwise land in a log.
 */
static struct {
	const char *start, *end;
} * cmdline;
static int cmdline_n;

void cli_save_argv(int argc, char **argv)
{
	cmdline = calloc((size_t)argc + 1, sizeof(*cmdline));
	if (!cmdline)
		return; /* positions are then unknown (0) */
	for (int i = 0; i < argc; i++) {
		cmdline[i].start = argv[i];
		/* The end now: --env wipes a value in argv later. */
		cmdline[i].end = argv[i] + strlen(argv[i]);
	}
	cmdline_n = argc;
}

int cli_arg_position(const char *p)
{
	uintptr_t u = (uintptr_t)p;

	for (int i = 1; p && i < cmdline_n; i++)
		if (u >= (uintptr_t)cmdline[i].start && u <= (uintptr_t)cmdline[i].end)
			return i;
	return 0;
}

/* The longest "--name" a diagnostic repeats: longer than any of the
 * program's option names, too short to carry much of a token. */
#define OPTION_NAME_MAX 24

/* True when the n bytes at s look like an option's name, --[a-z0-9-]+,
 * and are short enough to be one: only then may a diagnostic repeat them. */
static bool option_name_like(const char *s, size_t n)
{
	if (n < strlen("--x") || n > OPTION_NAME_MAX || strncmp(s, "--", 2) != 0)
		return false;
	for (size_t i = 2; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* The long option that arg (--NAME or --NAME=VALUE) chose, with value val,
 * or NULL: getopt_long() accepts any unique prefix of a name. */
static const struct option *long_option(const struct option *longopts, const char *arg, int val)
{
	size_t n;

	if (strncmp(arg, "--", 2) != 0)
		return NULL;
	n = strcspn(arg + 2, "=");
	for (const struct option *o = longopts; o->name; o++)
		if (o->val == val && strncmp(o->name, arg + 2, n) == 0)
			return o;
	return NULL;
}

/* The longest name edit_distance() compares: longer than any command or
 * option name, and a table of its square stays small on the stack. */
#define EDIT_NAME_MAX 32
/* What edit_distance() says of a longer name: more edits than any
 * suggestion allows. */
#define EDIT_TOO_FAR 99

/* The optimal-string-alignment distance (Levenshtein with adjacent
 * transpositions) between the n bytes at a and the string b, both at most
 * EDIT_NAME_MAX bytes long (else EDIT_TOO_FAR). */
static int edit_distance(const char *a, size_t n, const char *b)
{
	size_t m = strlen(b);
	int d[EDIT_NAME_MAX + 1][EDIT_NAME_MAX + 1];

	if (n > EDIT_NAME_MAX || m > EDIT_NAME_MAX)
		return EDIT_TOO_FAR;
	for (size_t i = 0; i <= n; i++)
		d[i][0] = (int)i;
	for (size_t j = 0; j <= m; j++)
		d[0][j] = (int)j;
	for (size_t i = 1; i <= n; i++)
		for (size_t j = 1; j <= m; j++) {
			int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);

			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	return d[n][m];
}

/* The most edits a suggestion is away from what was typed. */
#define SUGGEST_MAX_EDITS 2

const char *cli_suggest(const char *s, size_t n, const char *const *names, size_t n_names)
{
	const char *best = NULL;
	int best_d = SUGGEST_MAX_EDITS + 1;

	for (size_t i = 0; i < n_names; i++) {
		int d = edit_distance(s, n, names[i]);

		/* At most 2 edits, and fewer on a short name: "foo" is no
		 * typo of "root", nor "xy" of "gc". */
		if (d >= 1 && d < best_d && (size_t)d * 3 <= strlen(names[i]) + 1) {
			best = names[i];
			best_d = d;
		}
	}
	return best;
}

/* The most long options suggest_long() compares: more than any command
 * has. */
#define LONGOPTS_MAX 64

/* The long option in longopts closest to the n bytes at s, or NULL. */
static const char *suggest_long(const struct option *longopts, const char *s, size_t n)
{
	const char *names[LONGOPTS_MAX];
	size_t k = 0;

	for (const struct option *o = longopts; o->name && k < ELEMENTSOF(names); o++)
		names[k++] = o->name;
	return cli_suggest(s, n, names, k);
}

static bool ended_at_dashdash;

bool cli_getopt_ended_at_dashdash(void)
{
	return ended_at_dashdash;
}

/* A short option's letter as a diagnostic may show it. */
static char letter(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ? (char)c : '?';
}

/* How many long options start with the n bytes at name. */
static int long_matches(const struct option *longopts, const char *name, size_t n)
{
	int k = 0;

	for (const struct option *o = longopts; o->name; o++)
		if (strncmp(o->name, name, n) == 0 && o->name[n] == '\0')
			return 1; /* an exact match wins */
		else if (strncmp(o->name, name, n) == 0)
			k++;
	return k;
}

/*
 * Writes the one line for what getopt_long() returned as c ('?' or ':')
 * about arg, the argument it just stepped over. What follows an option may
 * be a secret typed in the wrong place, and so may an unknown option
 * (--evn=TOKEN). The line names an option by its name in longopts or by
 * its letter, repeats argv text only when it looks like an option name,
 * and else gives a position. A long option is the argument getopt just
 * stepped over; a short one is optopt, and 0 there means a long option
 * getopt knew nothing of.
 */
static void complain(const char *cmd, int c, const char *arg, const struct option *longopts)
{
	const struct option *o;
	const char *suggestion;
	size_t n;

	o = c == ':' || strchr(arg, '=') ? long_option(longopts, arg, optopt) : NULL;
	cli_diag(LOG_ERR);
	if (cmd)
		fprintf(stderr, "%s: ", cmd);
	if (c == ':' && o)
		fprintf(stderr, "option '--%s' requires an argument", o->name);
	else if (c == ':')
		fprintf(stderr, "option '-%c' requires an argument", letter(optopt));
	else if (o)
		fprintf(stderr, "option '--%s' takes no argument (argument #%d)", o->name, cli_arg_position(arg));
	else if (optopt && letter(optopt) != '?')
		fprintf(stderr, "unrecognized option '-%c'", optopt);
	else if (optopt)
		fputs("unrecognized option", stderr);
	else if ((n = strcspn(arg, "=")) && option_name_like(arg, n) && long_matches(longopts, arg + 2, n - 2) > 1)
		fprintf(stderr, "ambiguous option '%.*s'", (int)n, arg);
	else if (option_name_like(arg, n))
		fprintf(stderr, "unrecognized option '%.*s'", (int)n, arg);
	else
		fprintf(stderr, "unrecognized option (argument #%d)", cli_arg_position(arg));
	/* A suggestion is a name from longopts, never what was typed. */
	if (c == '?' && !o && !optopt && strncmp(arg, "--", 2) == 0 &&
	    long_matches(longopts, arg + 2, strcspn(arg + 2, "=")) == 0 &&
	    (suggestion = suggest_long(longopts, arg + 2, strcspn(arg + 2, "="))))
		fprintf(stderr, "; did you mean '--%s'?", suggestion);
	cli_fput_try_help(stderr);
}

int cli_getopt(struct cli *cli, const char *cmd, int argc, char **argv, const char *optstring,
	       const struct option *longopts)
{
	int c, before;

	opterr = 0;
	/* --json after a command means what it means before it. */
	for (;;) {
		before = optind > 0 ? optind : 1;
		c = getopt_long(argc, argv, optstring, longopts, NULL);
		if (c != 'j' || !cli)
			break;
		cli->json = true;
	}
	/* getopt_long() steps over a "--" that ends the options, and stops
	 * in front of any other operand. */
	if (c == -1)
		ended_at_dashdash = optind == before + 1 && strcmp(argv[before], "--") == 0;
	if (c != '?' && c != ':')
		return c;
	complain(cmd, c, optind > 0 && optind <= argc ? argv[optind - 1] : "", longopts);
	return '?';
}

int cli_parse_options(struct cli *cli, const struct cli_options *o, int argc, char **argv, void *userdata,
		      enum cli_stop *ret_stop)
{
	int c, code;

	*ret_stop = CLI_GO_ON;
	while ((c = cli_getopt(cli, o->cmd, argc, argv, o->optstring, o->longopts)) != -1) {
		if (c == 'h') {
			cli_help(o->usage);
			cli->read_only = true;
			*ret_stop = CLI_HELP_SHOWN;
			return EX_OK;
		}
		if (c == '?' || !o->handle)
			return EX_USAGE;
		code = o->handle(c, optarg, userdata);
		if (code != EX_OK)
			return code;
	}
	return EX_OK;
}

int cli_help(const char *usage)
{
	fputs(usage, stdout);
	return EX_OK;
}

int cli_want_operands(const char *cmd, int argc, char **argv, int n, const char *names)
{
	int have = argc - optind;

	if (have > n)
		return cli_usage_error("%s: unexpected argument #%d", cmd, cli_arg_position(argv[optind + n]));
	if (have < n) {
		/* Skip the names already given to find the first missing one. */
		const char *name = names;
		for (int i = 0; i < have; i++)
			name = strchr(name, ' ') + 1;
		return cli_usage_error("%s: missing %.*s", cmd, (int)strcspn(name, " "), name);
	}
	return EX_OK;
}
