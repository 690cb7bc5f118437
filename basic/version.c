/* SPDX-License-Identifier: MIT */
/*
 * version.c: the version of the library that is loaded, as opposed to the
 * headers a program was compiled against (SL_VERSION in sl-version.h).
 */
#include "sl-basic.h"

const char *sl_version(void)
{
	return SL_VERSION_STRING;
}
