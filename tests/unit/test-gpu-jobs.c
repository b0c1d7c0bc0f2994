/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The daemon lists a GPU that both OpenCL and CUDA see once: matched by PCI
 * bus id, whatever the case of its hex digits, never by an unknown one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "gpu/backend.h"
#include "harvester/gpu-jobs.h"

static struct gpu_device dev(enum gpu_backend b, const char *bus)
{
	struct gpu_device d = { .info = { .backend = b } };
	snprintf(d.info.pci_bus_id, sizeof(d.info.pci_bus_id), "%s", bus);
	return d;
}

static void test_match(void **state)
{
	/* OpenCL prints lower-case hex, CUDA upper-case. */
	struct gpu_device cl[3] = { dev(GPU_BACKEND_OPENCL, "0000:3b:00.0"), dev(GPU_BACKEND_OPENCL, ""),
				    dev(GPU_BACKEND_OPENCL, "0000:af:00.0") };
	struct gpu_device cu[4] = { dev(GPU_BACKEND_CUDA, "0000:AF:00.0"), dev(GPU_BACKEND_CUDA, "0000:3B:00.0"),
				    dev(GPU_BACKEND_CUDA, "0000:d8:00.0"), dev(GPU_BACKEND_CUDA, "") };
	struct gpu_device *pcl[3] = { &cl[0], &cl[1], &cl[2] }, *pcu[4] = { &cu[0], &cu[1], &cu[2], &cu[3] };
	int same[4] = { 7, 7, 7, 7 };

	gpu_jobs_match_pci(pcl, 3, pcu, 4, same);
	assert_int_equal(same[0], 2);
	assert_int_equal(same[1], 0);
	assert_int_equal(same[2], -1);   /* a GPU only CUDA sees */
	assert_int_equal(same[3], -1);   /* unknown bus ids are not "the same" as each other */

	/* No OpenCL at all: every CUDA device is its own. */
	gpu_jobs_match_pci(pcl, 0, pcu, 4, same);
	for (int i = 0; i < 4; i++)
		assert_int_equal(same[i], -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
