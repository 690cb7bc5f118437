/* SPDX-License-Identifier: MIT */
/*
 * cli.h: what the stagelog program's files share, grouped by the file that
 * defines it: the global options, the one exit-code table and diagnostic
 * writer, signals, option parsing, opening the store, and the formatting
 * helpers for text and JSON output. Escaping is in escape.h, which
 * depends on nothing else here.
 */
#ifndef STAGELOG_CLI_H
#define STAGELOG_CLI_H

#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sysexits.h>
#include <syslog.h>

#include <cjson/cJSON.h>

#include "escape.h"
#include "json.h"
#include "macro.h"
#include "sl-oci.h"
#include "sl-recover.h"
#include "sl-stage.h"
#include "sl-store.h"

/* The global options, and the store once a command opened it. */
struct cli {
	const char *db; /* --db, or NULL for the default */
	bool json;
	int verbosity; /* -1 quiet, 0 normal, 1 or more verbose */
	bool nocreate; /* the command only reads: a missing store is not created */
	/* The command only reads (list, show, check without --remove-orphans,
	 * recover --dry-run, metrics, help, version): root opens another
	 * user's store read-only (SL_STORE_OPEN_INSPECT) instead of refusing
	 * it, and a stdout whose reader went away ends it with EX_IOERR and no
	 * message, as it ends `cat`. */
	bool read_only;
	bool checking; /* the command is `check`: a corrupt store is its finding */
	struct sl_store *store;
	bool delivered;            /* stage: its output reached stdout's reader */
	bool stdout_closed;        /* stdout was flushed and closed by the command */
	char store_path[PATH_MAX]; /* set by cli_open_store() and cli_open_store_readonly() */
};

struct cli_command {
	const char *name;
	int (*run)(struct cli *cli, int argc, char **argv);
	const char *summary;
};

/* ---- main.c and cmd-*.c: the commands ---- */

/* The commands, one file each. argv[0] is the command's name. */
int cmd_stage(struct cli *cli, int argc, char **argv);
int cmd_run(struct cli *cli, int argc, char **argv);
int cmd_release(struct cli *cli, int argc, char **argv);
int cmd_forget(struct cli *cli, int argc, char **argv);
int cmd_publish(struct cli *cli, int argc, char **argv);
int cmd_recover(struct cli *cli, int argc, char **argv);
int cmd_list(struct cli *cli, int argc, char **argv);
int cmd_show(struct cli *cli, int argc, char **argv);
int cmd_gc(struct cli *cli, int argc, char **argv);
int cmd_check(struct cli *cli, int argc, char **argv);
int cmd_metrics(struct cli *cli, int argc, char **argv);
int cmd_help(struct cli *cli, int argc, char **argv);

/* ---- exit.c: exit codes and diagnostics ---- */

/* Maps a negative errno (and the error's flags) to an exit code. */
int cli_exit_code(int r, const struct sl_error *err);
/* The exit codes no sysexits.h name says (stagelog(1), EXIT STATUS; run's
 * 125 to 127 are in cmd-run.c, beside what they mean). */
enum {
	/* recover, release or check left something it could not remove, or
	 * check found a problem it did not fix */
	CLI_EXIT_NOT_CLEAN = 1,
	/* run: the runtime ran but its stage could not be released, as
	 * podman's and docker's 125 say the tool, not the container, failed */
	CLI_EXIT_RUN_NOT_RELEASED = 125,
	/* run: the runtime is not executable (a shell's 126) */
	CLI_EXIT_RUNTIME_NOT_EXECUTABLE = 126,
	/* run: the runtime is not found (a shell's 127) */
	CLI_EXIT_RUNTIME_NOT_FOUND = 127,
	/* interrupted by signal N: CLI_EXIT_SIGNAL + N, as a shell says it */
	CLI_EXIT_SIGNAL = 128,
};

/* Writes the one-line diagnostic for a failed library call, "stagelog:
 * WHAT FAILED: WHERE: REASON", from err->msg when the library filled it,
 * else from what and strerror. Returns the exit code. */
int cli_fail(int r, const struct sl_error *err, const char *what);

/*
 * Starts a diagnostic line on stderr: "stagelog: ", after the
 * sd-daemon(3) prefix "<N>" for priority N (LOG_ERR for an error or a
 * failed stage, LOG_WARNING, LOG_INFO) when stderr is the journal
 * ($JOURNAL_STREAM names stderr's device and inode).
 */
void cli_diag(int priority);
/* Whether stderr is the journal, as cli_diag() judges it. */
bool cli_stderr_is_journal(void);
/* Writes "stagelog: MESSAGE" on stderr, as an error; cli_say() with
 * another priority (LOG_WARNING, LOG_INFO). */
void cli_error(const char *fmt, ...) PRINTF_FMT(1, 2);
void cli_say(int priority, const char *fmt, ...) PRINTF_FMT(2, 3);
/* As cli_error(), with the pointer to help that ends every usage
 * error ("; try 'stagelog help CMD'"), and returns EX_USAGE. */
int cli_usage_error(const char *fmt, ...) PRINTF_FMT(1, 2);
/* The command a usage error's pointer names (a name from the
 * command table; NULL: stagelog's own --help). main() sets it. */
void cli_set_command(const char *name);
/* Ends a usage error's line: "; try 'stagelog help CMD'" or
 * "; try 'stagelog --help'", and the newline. */
void cli_fput_try_help(FILE *f);
/* Writes "stagelog: MESSAGE" on stderr when -v was given. */
void cli_verbose(const struct cli *cli, const char *fmt, ...) PRINTF_FMT(2, 3);

/* ---- signals.c: signals and stdout ---- */

/*
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT set a flag (the first one
 * wins) instead of killing; SIGPIPE and SIGXFSZ are ignored (a write fails
 * with EPIPE or EFBIG instead); closed descriptors 0-2 are pointed at
 * /dev/null (stdout read-only, so output to it still fails).
 */
void cli_signals_init(void);
/* The four signals, in one list: what cli_signals_catch() catches is what
 * `run` forwards to its runtime. */
#define CLI_HANDLED_SIGNALS SIGINT, SIGTERM, SIGHUP, SIGQUIT
/* Catches the four signals (true) or gives them their default action back
 * (false: where nothing exists yet that a signal could leave behind, and a
 * blocking read must not outlive a Ctrl-C). */
void cli_signals_catch(bool catch);
/* The signal caught so far, or 0. */
int cli_signal_caught(void);
/* The flag, for the library's cancel options. */
const volatile sig_atomic_t *cli_cancel_flag(void);
/* In a child before exec: the default dispositions back, and the
 * descriptor limit stagelog was started with. */
void cli_signals_reset_child(void);
/* Says on stderr that a signal stopped what, and returns 128 + N. */
int cli_interrupted(const char *what);
/* Flushes and closes stdout; a negative errno when the output may not have
 * reached its reader. */
int cli_deliver_stdout(void);

/* ---- progress.c: the progress line ---- */

/*
 * The progress line of a long command (stage, run until the
 * runtime starts, recover): on stderr only when it is a terminal and -q was
 * not given, redrawn in place at most 10 times a second (the first time
 * 100 ms in, so that a quick command shows none), with the time elapsed,
 * and erased by cli_progress_end().
 */
struct cli_progress {
	bool on;             /* stderr is a terminal, and no -q */
	bool shown;          /* a line is on the screen */
	int64_t start, last; /* CLOCK_MONOTONIC, ms */
};
void cli_progress_start(struct cli_progress *p, const struct cli *cli);
/* Draws "stagelog: TEXT, 1.2s" in place when due; else does nothing. */
void cli_progress_show(struct cli_progress *p, const char *fmt, ...) PRINTF_FMT(2, 3);
void cli_progress_end(struct cli_progress *p);

/* ---- format.c: times, ages and sizes for people ---- */

/* The units of time the program converts between. */
#define CLI_MS_PER_S 1000
#define CLI_S_PER_MIN 60
#define CLI_S_PER_HOUR (60 * CLI_S_PER_MIN)
#define CLI_S_PER_DAY (24 * CLI_S_PER_HOUR)

/* RFC 3339 UTC with milliseconds, e.g. 2026-11-29T03:50:09.123Z. */
#define CLI_TIME_MAX 40
void cli_format_time(int64_t ms, char buf[CLI_TIME_MAX]);

/* An age for people: 45s, 3m, 2h, 5d. */
#define CLI_AGE_MAX 24
void cli_format_age(int64_t created_ms, int64_t now_ms, char buf[CLI_AGE_MAX]);

/* A size for people: 512 B, 1.5 KiB, 12.0 MiB, 3.2 GiB. */
#define CLI_BYTES_MAX 24
void cli_format_bytes(uint64_t n, char buf[CLI_BYTES_MAX]);

/* ---- options.c: the command line ---- */

/*
 * Why a command stops short of its work although nothing failed: told
 * apart from the exit code (an out-parameter), so that an exit code is
 * only ever an exit code. With CLI_GO_ON, a step's exit code says whether
 * to go on (EX_OK) or to return it.
 */
enum cli_stop {
	CLI_GO_ON,      /* nothing stops the command */
	CLI_HELP_SHOWN, /* --help (or --version) printed its text: exit EX_OK */
	CLI_NO_STORE,   /* a read-only command found no store, and said nothing yet (cli_no_store()) */
};

/*
 * No usage error repeats an argument: what follows an option, or stands
 * where an operand goes, may be a token typed in the wrong place. A
 * diagnostic names the option and the argument's position instead:
 * "argument #N" is argv[N] of the command line as main() got it (#1 is
 * the first word after the program's name).
 *
 * Remembers argv, before getopt_long() permutes it, for
 * cli_arg_position(). Called once, first thing in main().
 */
void cli_save_argv(int argc, char **argv);

/* N, for the argument that p points into (its start, or inside it
 * as for --env=VALUE), or 0 when p is not in the saved argv. */
int cli_arg_position(const char *p);

/*
 * getopt_long with getopt's own messages off. On an unknown option
 * or a missing argument it writes one line naming cmd (NULL for the global
 * options) and returns '?'. The line names the option from longopts (or
 * its letter); of an unknown long option it repeats the part before '='
 * only when that looks like an option's name (--[a-z0-9-]+), else it gives
 * the position. optstring must start with ":" or "+:". With a cli, it
 * handles --json (CLI_COMMON_OPTIONS) itself and never returns 'j'.
 */
int cli_getopt(struct cli *cli, const char *cmd, int argc, char **argv, const char *optstring,
	       const struct option *longopts);

/* After cli_getopt() returned -1 with optstring "+:...", true when
 * the options ended at "--" rather than at an operand. */
bool cli_getopt_ended_at_dashdash(void);

/* The options every command takes: --help, and --json as a courtesy to
 * those who write it after the command. */
/* One option a line, as tests/cli/test_redaction.py reads the table:
 * clang-format 14 breaks a brace list in a macro. */
/* clang-format off */
#define CLI_COMMON_OPTIONS                  \
	{ "help", no_argument, NULL, 'h' }, \
	{ "json", no_argument, NULL, 'j' }
/* clang-format on */

/* Prints a command's usage text to stdout and returns 0. */
int cli_help(const char *usage);

/*
 * A command's options: what cli_parse_options() needs to parse them.
 * handle (NULL when the command has none but the common ones) gets every
 * option but --help and --json with its argument, and returns EX_OK to go
 * on or the exit code to stop with.
 */
struct cli_options {
	const char *cmd;               /* for messages */
	const char *optstring;         /* starts with ":" or "+:", holds "h" */
	const struct option *longopts; /* ends with CLI_COMMON_OPTIONS, { 0 } */
	const char *usage;             /* printed for --help */
	int (*handle)(int c, char *arg, void *userdata);
};

/*
 * The option loop every command shares: cli_getopt() until the
 * options end. --help prints o->usage and returns EX_OK with *ret_stop
 * CLI_HELP_SHOWN; an unknown option or a missing argument returns
 * EX_USAGE (the line is written); the others go to o->handle. Returns
 * EX_OK with *ret_stop CLI_GO_ON when the options ended, with optind at
 * the first operand.
 */
int cli_parse_options(struct cli *cli, const struct cli_options *o, int argc, char **argv, void *userdata,
		      enum cli_stop *ret_stop);

/* A usage error unless exactly n operands remain after the options; names
 * lists them, space-separated, for the message ("ID DEST"). Returns an
 * exit code. */
int cli_want_operands(const char *cmd, int argc, char **argv, int n, const char *names);

/*
 * The name in names (NULL-terminated) closest to the n bytes at s
 * by Damerau-Levenshtein distance, when that distance is 1 or 2 and at
 * most a third of the name's length plus one; else NULL. What it returns
 * is a name from the program's own table, so a diagnostic may show it: it
 * never repeats what was typed, and the small distance keeps a token from
 * being "corrected" into view.
 */
const char *cli_suggest(const char *s, size_t n, const char *const *names, size_t n_names);

/* ---- store-open.c: the store and stage ids ---- */

/* The store's path (--db, $STAGELOG_DB, or the default) into
 * buf. Returns an exit code, with a diagnostic on failure. */
int cli_store_path(const struct cli *cli, char *buf, size_t size);

/*
 * Opens the store (--db, $STAGELOG_DB, or the default) for a command that
 * writes: sets cli->store and cli->store_path, and creates a missing store
 * and its folders. Returns an exit code.
 */
int cli_open_store(struct cli *cli);

/*
 * cli_open_store() for a command that only reads (list, show,
 * check without --remove-orphans, recover, metrics): sets cli->nocreate,
 * so that it never creates a file or folder. A missing store (or store
 * folder) returns EX_OK with *ret_stop CLI_NO_STORE, cli->store NULL and
 * nothing printed: the command then reports it with cli_no_store().
 */
int cli_open_store_readonly(struct cli *cli, enum cli_stop *ret_stop);

/*
 * Reports a missing store after CLI_NO_STORE. With what NULL, a
 * command for which no store means nothing in flight (list, recover,
 * metrics) gets a note on stderr unless -q, and EX_OK back. Otherwise one
 * diagnostic "stagelog: WHAT: PATH: no store" and EX_NOINPUT (66).
 */
int cli_no_store(const struct cli *cli, const char *what);

/* The fewest hex digits of an id that a command takes for it. */
#define CLI_ID_PREFIX_MIN 4
/* A usage error (with its line) unless prefix is CLI_ID_PREFIX_MIN to
 * SL_ID_SIZE - 1 hex digits. Returns an exit code. */
int cli_check_id(const char *prefix);

/*
 * Resolves an id or a unique prefix to a full id. An unknown,
 * ambiguous or malformed one is a usage error whose message names the
 * candidates. Returns an exit code.
 */
int cli_resolve_id(struct cli *cli, const char *prefix, char ret_id[SL_ID_SIZE]);

/* A command that takes an ID and nothing but --help and --json (release,
 * forget, publish, show): what cli_id_command() needs of it. */
struct cli_id_command {
	const char *cmd;   /* for messages */
	const char *usage; /* printed for --help */
	int n;             /* the operands it wants, the first an ID */
	const char *names; /* the operands, space-separated, for messages ("ID DEST") */
	bool readonly;     /* it only reads: cli_open_store_readonly(), never a store created */
};

/*
 * Their prologue: parses the options, wants exactly c->n operands, opens
 * the store and resolves the ID into ret_id. Returns EX_OK to go on, or
 * the exit code to return now; *ret_stop says CLI_HELP_SHOWN after --help
 * and, for a readonly command, CLI_NO_STORE without a store (and ret_id
 * is then not set).
 */
int cli_id_command(struct cli *cli, const struct cli_id_command *c, int argc, char **argv, char ret_id[SL_ID_SIZE],
		   enum cli_stop *ret_stop);

/* ---- files.c: the staging root and files outside the store ---- */

/* The default staging root: $STAGELOG_ROOT; else /run/stagelog
 * for euid 0; else $XDG_RUNTIME_DIR/stagelog; else /run/user/UID/stagelog
 * when /run/user/UID is the caller's own 0700 directory. Returns an exit
 * code (usage error when there is none, with a diagnostic unless quiet). */
int cli_default_root(char *buf, size_t size, bool quiet);

/*
 * Writes len bytes to path atomically: a temporary file beside it,
 * mode, rename over path; with durable, an fsync of the file before the
 * rename and of the folder after it. A reader sees the old file or the new
 * one, never a part. Returns 0 or a negative errno.
 */
int cli_write_atomic(const char *path, const void *data, size_t len, mode_t mode, bool durable);

/* ---- failed.c: naming a stage, failed-stage lists ---- */

/* A stage's label and path, for lines that name a stage to a person. */
struct cli_where {
	char label[LABEL_MAX + 1];
	char path[PATH_MAX];
};

/* Looks up the label and path of the stage with full id `id`. Returns 0,
 * or a negative errno when the record cannot be read; the fields are then
 * "?" so that a line can still be printed. */
int cli_stage_where(struct cli *cli, const char *id, struct cli_where *ret);

/* A failed stage's reason as the store keeps it: the undo cuts it to 256
 * bytes (stage-private.h, STAGE_REASON_MAX). */
#define CLI_REASON_MAX 256

/* A failed stage, as recover and check report it: a removal that could not
 * finish, so secrets may remain. */
struct cli_failed {
	char id[SL_ID_SIZE];
	struct cli_where where;
	char reason[CLI_REASON_MAX];
};

struct cli_failed_list {
	struct cli_failed *v;
	size_t n;
};

/* Fills f with id, reason and the stage's label and path. */
void cli_failed_set(struct cli *cli, struct cli_failed *f, const char *id, const char *reason);
/* An sl_recover_list() callback that appends each failed stage to the
 * struct cli_failed_list in userdata (free its v). */
int cli_failed_add(const struct sl_stage_info *info, void *userdata);
/* Frees l->v, for _cleanup_(). */
void cli_failed_list_finish(struct cli_failed_list *l);
/* Prints "stagelog: failed ID LABEL PATH: REASON" on stderr, an
 * error (cli_diag()). */
void cli_print_failed(const struct cli_failed *f);
/* Prints "ID LABEL PATH" (label and path as cli_fput_token()
 * tokens) to f. */
void cli_fput_where(FILE *f, const char *id, const struct cli_where *w);

/* ---- cmd-stage.c: the stage options stage and run share ---- */

/*
 * The stage options that `stage` and `run` share. Env options
 * are remembered in command-line order and applied by cli_stage_args_stage(),
 * so that a later name wins across --env, --env-file and --env-keep alike.
 */
struct cli_stage_args {
	const char *cmd; /* "stage" or "run", for messages */
	const char *root;
	const char *bundle;
	const char *label;
	char **env_opts; /* argv strings of --env / --env-file / --env-keep, in order */
	int *env_kind;   /* 'e', 'E' or 'K': the option each came with */
	size_t n_env_opts;
	char root_buf[PATH_MAX];
};

/* label_valid()'s rule as a usage text prints it. */
#define CLI_LABEL_RULE "[a-z0-9][a-z0-9_.-]{0,31}"
_Static_assert(LABEL_MAX == 32, "CLI_LABEL_RULE says {0,31}: LABEL_MAX - 1");

/* One option a line, as tests/cli/test_redaction.py reads the table:
 * clang-format 14 breaks a brace list in a macro. */
/* clang-format off */
#define STAGE_LONG_OPTIONS                            \
	{ "root", required_argument, NULL, 'r' },     \
	{ "bundle", required_argument, NULL, 'b' },   \
	{ "label", required_argument, NULL, 'l' },    \
	{ "env", required_argument, NULL, 'e' },      \
	{ "env-file", required_argument, NULL, 'E' }, \
	{ "env-keep", required_argument, NULL, 'K' }
/* clang-format on */

/* Handles option c if it is a stage option: returns true when it is one,
 * with *ret_code EX_OK, or the exit code (with its diagnostic) of a bad
 * argument; false when it is not one. */
bool cli_stage_args_option(struct cli_stage_args *a, int c, char *arg, int *ret_code);

/* Stages the bundle for owner (0: the calling process). Returns an exit
 * code; on success *ret owns the ready stage. */
int cli_stage_args_stage(struct cli *cli, struct cli_stage_args *a, pid_t owner, struct sl_stage **ret);

void cli_stage_args_finish(struct cli_stage_args *a);

/* ---- cmd-recover.c: the outcome of the last recover pass ---- */

/* The longest outcome name, "failed", and its NUL, with room to spare. */
#define CLI_OUTCOME_NAME_MAX 16

/*
 * The outcome of the last `recover` pass, kept in a small file beside the
 * store (STORE.last-recover) for `metrics`: one line "v1 TIME_MS OUTCOME
 * RECOVERED FAILED", OUTCOME being ok, failed (a failed stage remained) or
 * error (the pass could not run).
 */
struct cli_last_recover {
	int64_t time_ms;
	char outcome[CLI_OUTCOME_NAME_MAX]; /* "ok", "failed" or "error" */
	long long recovered;
	long long failed;
};

/* The file's path for the store at db. */
int cli_last_recover_path(const char *db, char *buf, size_t size);
/* A buffer for that path: a store path of up to PATH_MAX bytes and
 * ".last-recover", with room to spare. */
#define CLI_LAST_RECOVER_PATH_MAX 4200
/* The outcome file's one line, '\n' included, padded with spaces: recover
 * rewrites it in place. */
#define CLI_OUTCOME_WIDTH 64

#endif
