/* SPDX-License-Identifier: MIT */
/* test-headers.c: the public headers are self-contained and compile as C99
 * with -pedantic-errors (meson builds this file with exactly that), each on
 * its own and all together; and sl-version.h, which they bring, agrees with
 * itself and with sl_version(). */
#include <stdio.h>
#include <string.h>

#include <sl-store.h>
#include <sl-stage.h>
#include <sl-oci.h>
#include <sl-recover.h>

#if !defined(SL_VERSION) || SL_VERSION != SL_VERSION_MAJOR * 10000 + SL_VERSION_MINOR * 100 + SL_VERSION_PATCH
#error "SL_VERSION is not major * 10000 + minor * 100 + patch"
#endif

int main(void)
{
	struct sl_error err = { 0, 0, { 0 } };
	struct sl_recover_options o = { 0, 0, 0, 0, 0, 0, 0 };
	char v[32];

	(void)o;
	snprintf(v, sizeof(v), "%d.%d.%d", SL_VERSION_MAJOR, SL_VERSION_MINOR, SL_VERSION_PATCH);
	if (strcmp(v, SL_VERSION_STRING) != 0 || strcmp(sl_version(), SL_VERSION_STRING) != 0) {
		fprintf(stderr, "versions disagree: macros %s, SL_VERSION_STRING %s, sl_version() %s\n", v,
			SL_VERSION_STRING, sl_version());
		return 1;
	}
	return err.code + (sl_store_state_name(SL_STATE_READY) ? 0 : 1);
}
