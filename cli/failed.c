/* SPDX-License-Identifier: MIT */
/*
 * failed.c: naming a stage to a person (its label and path, and the
 * "ID LABEL PATH" words of a line) and the list of failed stages that
 * recover and check report.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "recover-private.h"

int cli_stage_where(struct cli *cli, const char *id, struct cli_where *ret)
{
	int r = recover_stage_where(cli->store, id, ret->label, ret->path, sizeof(ret->path), NULL);

	if (r < 0) {
		snprintf(ret->label, sizeof(ret->label), "?");
		snprintf(ret->path, sizeof(ret->path), "?");
	}
	return r;
}

void cli_fput_where(FILE *f, const char *id, const struct cli_where *w)
{
	fprintf(f, "%s ", id);
	cli_fput_token(f, w->label, strlen(w->label));
	fputc(' ', f);
	cli_fput_token(f, w->path, strlen(w->path));
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
