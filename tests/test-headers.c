/* SPDX-License-Identifier: MIT */
/* test-headers.c: the public headers are self-contained and compile as C99
 * with -pedantic-errors (meson builds this file with exactly that), each on
 * its own and all together. */
#include <sl-store.h>
#include <sl-stage.h>
#include <sl-oci.h>
#include <sl-recover.h>

int main(void)
{
	struct sl_error err = {0, 0, {0}};
	struct sl_recover_options o = {0, 0, 0, 0, 0, 0, 0};

	(void)o;
	return err.code + (sl_state_name(SL_STATE_READY) ? 0 : 1);
}
