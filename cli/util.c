/* SPDX-License-Identifier: MIT */
/*
 * util.c: helpers the command files share: option parsing, opening the
 * store, id resolution, the default root, and formatting for people and
 * for JSON.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/*
 * The command line as main() got it, before getopt_long() permuted it. A
 * diagnostic about an argument gives its position here, never its text:
 * a token typed in the wrong place would otherwise land in a log.
 */
static struct {
	const char *start, *end;
} *cmdline;
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

/* True when the n bytes at s look like an option's name, --[a-z0-9-]+,
 * and are short enough to be one: only then may a diagnostic repeat them. */
static bool option_name_like(const char *s, size_t n)
{
	if (n < 3 || n > 24 || strncmp(s, "--", 2) != 0)
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
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	return d[n][m];
}

const char *cli_suggest(const char *s, size_t n, const char *const *names, size_t n_names)
{
	const char *best = NULL;
	int best_d = 3;

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

/* The long option in longopts closest to the n bytes at s, or NULL. */
static const char *suggest_long(const struct option *longopts, const char *s, size_t n)
{
	const char *names[64];
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

int cli_getopt(struct cli *cli, const char *cmd, int argc, char **argv, const char *optstring,
	       const struct option *longopts)
{
	const struct option *o;
	const char *arg, *suggestion;
	size_t n;
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

	/*
	 * What follows an option may be a secret typed in the wrong place,
	 * and so may an unknown option (--evn=TOKEN). The line names an
	 * option by its name in longopts or by its letter, repeats argv text
	 * only when it looks like an option name, and else gives a position.
	 * A long option is the argument getopt just stepped over; a short
	 * one is optopt, and 0 there means a long option getopt knew nothing
	 * of.
	 */
	arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
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
	return '?';
}

int cli_parse_options(struct cli *cli, const struct cli_options *o, int argc, char **argv, void *userdata)
{
	int c, code;

	while ((c = cli_getopt(cli, o->cmd, argc, argv, o->optstring, o->longopts)) != -1) {
		if (c == 'h') {
			cli_help(o->usage);
			cli->read_only = true;
			return CLI_HELP_SHOWN;
		}
		if (c == '?' || !o->handle)
			return EX_USAGE;
		code = o->handle(c, optarg, userdata);
		if (code != EX_OK)
			return code;
	}
	return EX_OK;
}

int cli_id_command(struct cli *cli, const char *cmd, int argc, char **argv, const char *usage, int n,
		   const char *names, char id[SL_ID_SIZE])
{
	static const struct option longopts[] = { CLI_COMMON_OPTIONS, { 0 } };
	const struct cli_options o = { .cmd = cmd, .optstring = ":h", .longopts = longopts, .usage = usage };
	int code;

	code = cli_parse_options(cli, &o, argc, argv, NULL);
	if (code == EX_OK)
		code = cli_want_operands(cmd, argc, argv, n, names);
	/* A malformed id is a usage error whether or not a store exists. */
	if (code == EX_OK)
		code = cli_check_id(argv[optind]);
	if (code == EX_OK)
		code = cli_open_store(cli);
	if (code == EX_OK)
		code = cli_resolve_id(cli, argv[optind], id);
	return code;
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

int cli_write_atomic(const char *path, const void *data, size_t len, mode_t mode, bool durable)
{
	_cleanup_free_ char *tmp = NULL, *dir = NULL;
	_cleanup_close_ int fd = -1, dfd = -1;
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	int r;

	/* A hidden name, so that node_exporter's textfile collector (which
	 * reads *.prom) never reads the half-written file. */
	if (asprintf(&dir, "%.*s", slash ? (int)(slash - path) + (slash == path) : 1, slash ? path : ".") < 0 ||
	    asprintf(&tmp, "%s/.%s.XXXXXX", dir, base) < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, mode) < 0)
		goto fail;
	/* write_all() leaves errno as the failed write() set it. */
	if (write_all(fd, data, len) < 0)
		goto fail;
	if (durable && fsync(fd) < 0)
		goto fail;
	r = close(fd);
	fd = -1;
	if (r < 0)
		goto fail;
	if (rename(tmp, path) < 0)
		goto fail;
	/* The rename is durable only once the folder is. */
	dfd = durable ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (dfd >= 0)
		(void)fsync(dfd);
	return 0;
fail:
	r = -errno;
	(void)unlink(tmp);
	return r;
}

int cli_open_store(struct cli *cli)
{
	struct sl_error err = { 0 };
	int r;

	r = cli_store_path(cli, cli->store_path, sizeof(cli->store_path));
	if (r != EX_OK)
		return r;
	cli_verbose(cli, "store: %s", cli->store_path);
	r = sl_store_open_flags(cli->store_path,
				(cli->nocreate ? SL_STORE_OPEN_NOCREATE : 0) | (cli->read_only ? SL_STORE_OPEN_INSPECT : 0),
				&cli->store, &err);
	if (r == -ENOENT && cli->nocreate)
		return CLI_NO_STORE;
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

int cli_open_store_readonly(struct cli *cli)
{
	cli->nocreate = true;
	return cli_open_store(cli);
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
	bool hex = len >= 4 && len <= SL_ID_SIZE - 1;

	for (size_t i = 0; hex && i < len; i++)
		hex = isxdigit((unsigned char)prefix[i]);
	if (!hex)
		return cli_usage_error("bad id: argument #%d: an id or its prefix is 4 to %d hex digits",
				       cli_arg_position(prefix), SL_ID_SIZE - 1);
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

	r = sl_resolve_id(cli->store, lower, ret_id, cand, ELEMENTSOF(cand), &n, &err);
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

/*
 * /run/user/UID when it is a directory (not a symlink) owned by the caller
 * with mode 0700: what logind makes for a user, and what a unit's
 * tmpfiles.d entry makes for a service user without a session. Anything
 * else could be a directory another user prepared to watch our secrets.
 */
static bool user_run_dir(char *buf, size_t size)
{
	struct stat st;
	int n;

	n = snprintf(buf, size, "/run/user/%u", (unsigned)geteuid());
	if (n < 0 || (size_t)n >= size)
		return false;
	if (lstat(buf, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 07777) != 0700)
		return false;
	return true;
}

int cli_default_root(char *buf, size_t size, bool quiet)
{
	const char *env, *what;
	char run[64];
	int n;

	env = getenv("STAGELOG_ROOT");
	if (env && env[0]) {
		/* A relative root would depend on where a unit happens to
		 * start; refuse it rather than guess. */
		if (env[0] != '/')
			return quiet ? EX_USAGE
				     : cli_usage_error("cannot choose a staging root: STAGELOG_ROOT is not an "
						       "absolute path");
		n = snprintf(buf, size, "%s", env);
		what = "STAGELOG_ROOT";
	} else if (geteuid() == 0) {
		n = snprintf(buf, size, "/run/stagelog");
		what = "/run/stagelog";
	} else if ((env = getenv("XDG_RUNTIME_DIR")) && env[0] == '/') {
		n = snprintf(buf, size, "%s/stagelog", env);
		what = "XDG_RUNTIME_DIR";
	} else if (user_run_dir(run, sizeof(run))) {
		/* Never fall back to /tmp: a staging root must be a private
		 * tmpfs, and only a runtime directory is one. */
		n = snprintf(buf, size, "%s/stagelog", run);
		what = run;
	} else {
		if (quiet)
			return EX_USAGE;
		return cli_usage_error("cannot choose a staging root: XDG_RUNTIME_DIR is not set and "
				       "/run/user/%u is not a directory of yours with mode 0700 "
				       "(pass --root DIR or set STAGELOG_ROOT)",
				       (unsigned)geteuid());
	}
	if (n < 0 || (size_t)n >= size)
		return quiet ? EX_USAGE
			     : cli_usage_error("cannot choose a staging root: %s is too long (pass --root DIR or set "
					       "STAGELOG_ROOT)",
					       what);
	return EX_OK;
}

static int note_where(const struct sl_stage_info *info, void *userdata)
{
	struct cli_where *w = userdata;

	snprintf(w->label, sizeof(w->label), "%s", info->label);
	snprintf(w->path, sizeof(w->path), "%s", info->path);
	return 0;
}

int cli_stage_where(struct cli *cli, const char *id, struct cli_where *ret)
{
	struct sl_error err = { 0 };
	int r;

	snprintf(ret->label, sizeof(ret->label), "?");
	snprintf(ret->path, sizeof(ret->path), "?");
	r = sl_show(cli->store, id, note_where, NULL, ret, &err);
	return r < 0 ? r : 0;
}

void cli_fput_where(FILE *f, const char *id, const struct cli_where *w)
{
	fprintf(f, "%s ", id);
	cli_fput_token(f, w->label, strlen(w->label));
	fputc(' ', f);
	cli_fput_token(f, w->path, strlen(w->path));
}

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

/* True for the n-byte UTF-8 sequence at s when it is a space other than
 * U+0020 (Unicode's Zs, Zl and Zp: what Python's split() and some
 * terminals' word selection split at). */
static bool unicode_space(const unsigned char *s, size_t n)
{
	uint32_t cp = n == 2 ? (s[0] & 0x1fu) << 6 | (s[1] & 0x3fu)
		    : n == 3 ? (s[0] & 0x0fu) << 12 | (s[1] & 0x3fu) << 6 | (s[2] & 0x3fu)
			     : 0;

	return cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* cli_fput_escaped(), and with token also every space escaped. */
static void fput_escaped(FILE *f, const char *str, size_t len, bool token)
{
	const unsigned char *s = (const unsigned char *)str;

	for (size_t i = 0; i < len;) {
		size_t n = utf8_char_len(s + i, len - i);

		if (n == 1 && s[i] == '\\') {
			fputs("\\\\", f);
		} else if (n == 1 && s[i] == '\n') {
			fputs("\\n", f);
		} else if (n == 1 && s[i] == '\t') {
			fputs("\\t", f);
		} else if (n == 1 && s[i] >= 0x20 && s[i] < 0x7f && !(token && s[i] == ' ')) {
			fputc(s[i], f);
		} else if (n > 1 && !(n == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0) && !(token && unicode_space(s + i, n))) {
			/* Valid multibyte text passes, but not the C1 controls
			 * (U+0080..U+009F), which some terminals obey. */
			fwrite(s + i, 1, n, f);
			i += n;
			continue;
		} else {
			fprintf(f, "\\x%02x", s[i]);
		}
		i++;
	}
}

void cli_fput_escaped(FILE *f, const char *s, size_t len)
{
	fput_escaped(f, s, len, false);
}

void cli_fput_token(FILE *f, const char *s, size_t len)
{
	fput_escaped(f, s, len, true);
}

char *cli_json_quote(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	char *out, *p;

	/* At most 6 characters a byte (\udcXX, \u00XX), two quotes, a NUL. */
	if (len > (SIZE_MAX - 3) / 6)
		return NULL;
	out = p = malloc(len * 6 + 3);
	if (!out)
		return NULL;
	*p++ = '"';
	for (size_t i = 0; i < len;) {
		size_t n = utf8_char_len(s + i, len - i);

		if (n == 0) {
			/* PEP 383: byte b becomes U+DC80 + b - 0x80, a lone low
			 * surrogate that no valid UTF-8 decodes to, so that
			 * neither the text "\xff" nor any other collides with
			 * the byte 0xff. */
			p += sprintf(p, "\\udc%02x", s[i]);
			i++;
		} else if (n == 1 && (s[i] == '"' || s[i] == '\\')) {
			*p++ = '\\';
			*p++ = (char)s[i++];
		} else if (n == 1 && s[i] < 0x20) {
			p += sprintf(p, "\\u%04x", s[i]);
			i++;
		} else {
			memcpy(p, s + i, n);
			p += n;
			i += n;
		}
	}
	*p++ = '"';
	*p = '\0';
	return out;
}

cJSON *cli_json_add_bytes(cJSON *obj, const char *name, const char *s, size_t len)
{
	_cleanup_free_ char *quoted = cli_json_quote(s, len);

	return quoted ? cJSON_AddRawToObject(obj, name, quoted) : NULL;
}

bool cli_json_add_stage(cJSON *obj, const struct sl_stage_info *info)
{
	char created[CLI_TIME_MAX], updated[CLI_TIME_MAX];
	bool ok = true;

	cli_format_time(info->created_ms, created);
	cli_format_time(info->updated_ms, updated);
	ok &= cJSON_AddStringToObject(obj, "id", info->id) != NULL;
	ok &= cli_json_add_bytes(obj, "label", info->label, strlen(info->label)) != NULL;
	ok &= cJSON_AddStringToObject(obj, "state", info->state_name) != NULL;
	ok &= cli_json_add_bytes(obj, "root", info->root, strlen(info->root)) != NULL;
	ok &= cli_json_add_bytes(obj, "path", info->path, strlen(info->path)) != NULL;
	ok &= cJSON_AddNumberToObject(obj, "owner_pid", (double)info->owner_pid) != NULL;
	ok &= cJSON_AddBoolToObject(obj, "owner_alive", info->owner_alive) != NULL;
	ok &= cJSON_AddStringToObject(obj, "created_at", created) != NULL;
	ok &= cJSON_AddStringToObject(obj, "updated_at", updated) != NULL;
	if (info->state == SL_STATE_FAILED || (info->reason && info->reason[0]))
		ok &= cli_json_add_bytes(obj, "reason", info->reason ? info->reason : "",
					 info->reason ? strlen(info->reason) : 0) != NULL;
	return ok;
}

int cli_json_print(cJSON *doc, bool built)
{
	_cleanup_(cJSON_Deletep) cJSON *d = doc;
	_cleanup_free_ char *text = d && built ? cJSON_Print(d) : NULL;

	if (!text)
		return cli_fail(-ENOMEM, NULL, "cannot format JSON output");
	puts(text);
	return EX_OK;
}

int cli_failed_add(const struct sl_stage_info *info, void *userdata)
{
	struct cli_failed_list *l = userdata;
	struct cli_failed *v;

	if (info->state != SL_STATE_FAILED)
		return 0;
	v = reallocarray(l->v, l->n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	l->v = v;
	v = &l->v[l->n++];
	snprintf(v->id, sizeof(v->id), "%s", info->id);
	snprintf(v->where.label, sizeof(v->where.label), "%s", info->label);
	snprintf(v->where.path, sizeof(v->where.path), "%s", info->path);
	snprintf(v->reason, sizeof(v->reason), "%s", info->reason ? info->reason : "");
	return 0;
}

void cli_failed_list_finish(struct cli_failed_list *l)
{
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

bool cli_json_add_item(cJSON *obj, const char *name, cJSON *item)
{
	if (item && cJSON_AddItemToObject(obj, name, item))
		return true;
	cJSON_Delete(item);
	return false;
}

cJSON *cli_json_append_object(cJSON *a)
{
	cJSON *o = cJSON_CreateObject();

	if (o && cJSON_AddItemToArray(a, o))
		return o;
	cJSON_Delete(o);
	return NULL;
}

cJSON *cli_json_array(size_t n, cJSON *(*item)(const void *ctx, size_t i), const void *ctx)
{
	_cleanup_(cJSON_Deletep) cJSON *a = cJSON_CreateArray();

	for (size_t i = 0; a && i < n; i++) {
		cJSON *s = item(ctx, i);

		if (!s || !cJSON_AddItemToArray(a, s)) {
			cJSON_Delete(s);
			return NULL;
		}
	}
	return TAKE_PTR(a);
}

cJSON *cli_json_id_item(const void *ctx, size_t i)
{
	/* A char (*)[SL_ID_SIZE]: ids stand SL_ID_SIZE bytes apart. */
	const char *ids = ctx;

	return cJSON_CreateString(ids + i * SL_ID_SIZE);
}

cJSON *cli_json_path_item(const void *ctx, size_t i)
{
	char *const *paths = ctx;
	_cleanup_free_ char *quoted = cli_json_quote(paths[i], strlen(paths[i]));

	return quoted ? cJSON_CreateRaw(quoted) : NULL;
}

cJSON *cli_json_failed_item(const void *ctx, size_t i)
{
	const struct cli_failed *f = &((const struct cli_failed_list *)ctx)->v[i];
	_cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();

	if (!o || !cJSON_AddStringToObject(o, "id", f->id) ||
	    !cli_json_add_bytes(o, "label", f->where.label, strlen(f->where.label)) ||
	    !cli_json_add_bytes(o, "path", f->where.path, strlen(f->where.path)) ||
	    !cli_json_add_bytes(o, "reason", f->reason, strlen(f->reason)))
		return NULL;
	return TAKE_PTR(o);
}

void cli_failed_set(struct cli *cli, struct cli_failed *f, const char *id, const char *reason)
{
	snprintf(f->id, sizeof(f->id), "%s", id);
	snprintf(f->reason, sizeof(f->reason), "%.*s", (int)sizeof(f->reason) - 1, reason);
	(void)cli_stage_where(cli, f->id, &f->where);
}

void cli_print_failed(const struct cli_failed *f)
{
	cli_diag(LOG_ERR);
	fputs("failed ", stderr);
	cli_fput_where(stderr, f->id, &f->where);
	fputs(": ", stderr);
	cli_fput_escaped(stderr, f->reason, strlen(f->reason));
	fputc('\n', stderr);
}
