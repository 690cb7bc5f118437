/* SPDX-License-Identifier: MIT */
#include "cli.h"
int cmd_metrics(struct cli *cli, int argc, char **argv)
{
	(void)cli; (void)argc; (void)argv;
	return EX_USAGE;
}
