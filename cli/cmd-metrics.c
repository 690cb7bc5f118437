/* SPDX-License-Identifier: MIT */
/*
 * cmd-metrics.c: `stagelog metrics`: the store's state in the Prometheus
 * text exposition format, for node_exporter's textfile collector.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char usage[] =
	"usage: stagelog metrics [--output FILE]\n"
	"\n"
	"Prints metrics in the Prometheus text format: stages in flight by state\n"
	"and label, failed stages, the age of the oldest in-flight stage, the\n"
	"time and outcome of the last recover, and the versions of stagelog and\n"
	"SQLite. Never creates a store.\n"
	"\n"
	"  --output FILE  write FILE atomically (beside it, then rename), mode 0644,\n"
	"                 e.g. for node_exporter's textfile collector\n"
	"  -h, --help     print this help\n";

/* One (state, label) pair and how many stages are in it. */
struct series {
	enum sl_state state;
	char label[LABEL_MAX + 1];
	long long n;
};

struct tally {
	struct series *v;
	size_t n;
	long long failed;
	int64_t oldest_ms; /* created_at of the oldest in-flight stage, 0: none */
};

static int count_stage(const struct sl_stage_info *info, void *userdata)
{
	struct tally *t = userdata;
	struct series *v;

	if (!sl_store_state_in_flight(info->state))
		return 0;
	if (info->state == SL_STATE_FAILED)
		t->failed++;
	if (t->oldest_ms == 0 || info->created_ms < t->oldest_ms)
		t->oldest_ms = info->created_ms;
	for (size_t i = 0; i < t->n; i++) {
		if (t->v[i].state == info->state && strcmp(t->v[i].label, info->label) == 0) {
			t->v[i].n++;
			return 0;
		}
	}
	v = reallocarray(t->v, t->n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	t->v = v;
	v = &t->v[t->n++];
	v->state = info->state;
	snprintf(v->label, sizeof(v->label), "%s", info->label);
	v->n = 1;
	return 0;
}

/* Parses the outcome line "v1 TIME OUTCOME RECOVERED FAILED" (single
 * spaces; padded with spaces to its fixed width) into *ret_time and ret:
 * false on anything else, a number that does not fit included. */
static bool parse_outcome(const char *p, long long *ret_time, struct cli_last_recover *ret)
{
	size_t n = 0;

	if (strncmp(p, "v1 ", 3) != 0)
		return false;
	p += 3;
	if (!read_ll(&p, ret_time) || *p++ != ' ')
		return false;
	while (p[n] >= 'a' && p[n] <= 'z' && n < sizeof(ret->outcome) - 1)
		n++;
	if (n == 0 || p[n] != ' ')
		return false;
	memcpy(ret->outcome, p, n);
	ret->outcome[n] = '\0';
	p += n + 1;
	if (!read_ll(&p, &ret->recovered) || *p++ != ' ' || !read_ll(&p, &ret->failed))
		return false;
	return ret->recovered >= 0 && ret->failed >= 0;
}

/* Reads the last recover's outcome; false when there is none (or it is
 * unreadable: a metric that is absent beats one that lies). */
static bool read_last_recover(const char *db, struct cli_last_recover *ret)
{
	char path[CLI_LAST_RECOVER_PATH_MAX], buf[CLI_OUTCOME_WIDTH + 1];
	_cleanup_close_ int fd = -1;
	ssize_t n;
	long long t;

	if (cli_last_recover_path(db, path, sizeof(path)) < 0)
		return false;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	/* Shared: recover writes the line in place under an exclusive lock. */
	if (fd < 0 || flock(fd, LOCK_SH) < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	if (!parse_outcome(buf, &t, ret))
		return false;
	ret->time_ms = t;
	return strcmp(ret->outcome, "ok") == 0 || strcmp(ret->outcome, "failed") == 0 ||
	       strcmp(ret->outcome, "error") == 0;
}

static void header(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void format(FILE *f, const struct tally *t, const struct cli_last_recover *last, bool store_present)
{
	static const char *const outcomes[] = { "ok", "failed", "error" };
	int64_t now = epoch_ms();

	/* The Prometheus convention for versions: a constant 1 whose labels
	 * say what runs. Both are dotted numbers from the libraries
	 * themselves, so neither needs escaping. */
	header(f, "stagelog_build_info", "gauge",
	       "Always 1; the labels give the versions of stagelog and of the SQLite it loaded.");
	fprintf(f, "stagelog_build_info{version=\"%s\",sqlite=\"%s\"} 1\n", sl_version(), sl_store_sqlite_version());

	header(f, "stagelog_store_present", "gauge", "1 when the store exists, 0 when it does not.");
	fprintf(f, "stagelog_store_present %d\n", store_present ? 1 : 0);

	/* Labels match [a-z0-9][a-z0-9_.-]* and states are fixed words:
	 * nothing in a label value needs escaping. */
	header(f, "stagelog_stages_in_flight", "gauge", "Stages in flight, by state and label.");
	for (size_t i = 0; i < t->n; i++)
		fprintf(f, "stagelog_stages_in_flight{state=\"%s\",label=\"%s\"} %lld\n",
			sl_store_state_name(t->v[i].state), t->v[i].label, t->v[i].n);

	header(f, "stagelog_stages_failed", "gauge",
	       "Stages whose removal could not finish; their files may still be on disk.");
	fprintf(f, "stagelog_stages_failed %lld\n", t->failed);

	header(f, "stagelog_oldest_in_flight_age_seconds", "gauge",
	       "Age of the oldest in-flight stage in seconds, 0 when none is in flight.");
	fprintf(f, "stagelog_oldest_in_flight_age_seconds %.3f\n",
		t->oldest_ms && now > t->oldest_ms ? (double)(now - t->oldest_ms) / CLI_MS_PER_S : 0.0);

	if (!last)
		return;
	header(f, "stagelog_last_recover_timestamp_seconds", "gauge",
	       "When the last recover pass ended, in seconds since the epoch.");
	fprintf(f, "stagelog_last_recover_timestamp_seconds %.3f\n", (double)last->time_ms / CLI_MS_PER_S);
	header(f, "stagelog_last_recover_success", "gauge",
	       "1 when the last recover pass left no failed stage, else 0.");
	fprintf(f, "stagelog_last_recover_success %d\n", strcmp(last->outcome, "ok") == 0 ? 1 : 0);
	header(f, "stagelog_last_recover_outcome", "gauge",
	       "1 for the outcome of the last recover pass (ok, failed or error), 0 for the others.");
	for (size_t i = 0; i < ELEMENTSOF(outcomes); i++)
		fprintf(f, "stagelog_last_recover_outcome{outcome=\"%s\"} %d\n", outcomes[i],
			strcmp(last->outcome, outcomes[i]) == 0 ? 1 : 0);
	header(f, "stagelog_last_recover_recovered_stages", "gauge", "Stages the last recover pass removed.");
	fprintf(f, "stagelog_last_recover_recovered_stages %lld\n", last->recovered);
}

static int metrics_option(int c, char *arg, void *userdata)
{
	(void)c; /* 'o', the only option */
	*(const char **)userdata = arg;
	return EX_OK;
}

static const struct cli_options metrics_options = {
	.cmd = "metrics",
	.optstring = ":ho:",
	.longopts =
		(const struct option[]){
			{ "output", required_argument, NULL, 'o' },
			CLI_COMMON_OPTIONS,
			{ 0 },
		},
	.usage = usage,
	.handle = metrics_option,
};

static void tally_finish(struct tally *t)
{
	free(t->v);
}

/* Counts the stages into t, when there is a store (*ret_present). Read-only:
 * a missing store is reported as such and never created. Returns an exit
 * code. */
static int count_stages(struct cli *cli, const char *db, struct tally *t, bool *ret_present)
{
	struct sl_error err = { 0 };
	enum cli_stop stop;
	int r, code;

	cli->read_only = true;
	code = cli_open_store_readonly(cli, &stop);
	if (code != EX_OK)
		return code;
	*ret_present = stop != CLI_NO_STORE;
	if (*ret_present) {
		r = sl_recover_list(cli->store, 0, NULL, count_stage, t, &err);
		return r < 0 ? cli_fail(r, &err, "cannot list the stages") : EX_OK;
	}
	if (cli->verbosity >= 0) {
		cli_diag(LOG_INFO);
		fputs("metrics: no store at ", stderr);
		cli_fput_escaped(stderr, db, strlen(db));
		fputs(": nothing in flight\n", stderr);
	}
	return EX_OK;
}

/* The metrics as text in *ret (free it). Returns an exit code. */
static int format_text(const struct tally *t, const char *db, bool present, char **ret, size_t *ret_len)
{
	struct cli_last_recover last;
	bool have_last = read_last_recover(db, &last);
	FILE *f = open_memstream(ret, ret_len);

	if (!f)
		return cli_fail(-ENOMEM, NULL, "cannot format the metrics");
	format(f, t, have_last ? &last : NULL, present);
	if (fclose(f) != 0)
		return cli_fail(-ENOMEM, NULL, "cannot format the metrics");
	return EX_OK;
}

/* Writes text to stdout, or atomically to output. Returns an exit code. */
static int write_text(const char *output, const char *text, size_t len)
{
	int r, code;

	if (!output) {
		fwrite(text, 1, len, stdout);
		return EX_OK;
	}
	/* Metrics hold counts and labels, no secret: 0644 lets the
	 * collector, which runs as another user, read them. */
	r = cli_write_atomic(output, text, len, 0644, true);
	if (r >= 0)
		return EX_OK;
	cli_diag(LOG_ERR);
	fputs("cannot write the metrics: ", stderr);
	cli_fput_escaped(stderr, output, strlen(output));
	fprintf(stderr, ": %s\n", strerror(-r));
	code = cli_exit_code(r, NULL);
	return code == EX_SOFTWARE ? EX_CANTCREAT : code;
}

int cmd_metrics(struct cli *cli, int argc, char **argv)
{
	_cleanup_(tally_finish) struct tally t = { 0 };
	_cleanup_free_ char *text = NULL;
	const char *output = NULL;
	size_t len = 0;
	char db[PATH_MAX];
	bool present = false;
	enum cli_stop stop;
	int code;

	code = cli_parse_options(cli, &metrics_options, argc, argv, &output, &stop);
	if (code != EX_OK || stop != CLI_GO_ON)
		return code;
	code = cli_want_operands("metrics", argc, argv, 0, "");
	if (code == EX_OK)
		code = cli_store_path(cli, db, sizeof(db));
	if (code == EX_OK)
		code = count_stages(cli, db, &t, &present);
	if (code == EX_OK)
		code = format_text(&t, db, present, &text, &len);
	if (code == EX_OK)
		code = write_text(output, text, len);
	return code;
}
