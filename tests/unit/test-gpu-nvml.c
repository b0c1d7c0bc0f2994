/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * gpu_nvml_others_busy() (gpu/cuda.c), the check that keeps pool work off
 * an NVIDIA GPU someone else is using, against a stand-in NVML
 * (fake-nvml.c): the driver's library cannot exist on a machine without
 * the GPU. The cases are what an H100 showed in tests/gpu/run-on-gpu.sh:
 * the utilization query wants a buffer as large as the driver's sample
 * store (a fixed 64 entries read "busy" forever, and no CUDA or NVIDIA
 * OpenCL task ever ran), and our own context is one of the compute
 * processes, under a pid of another namespace inside a container.
 * The test re-executes itself with LD_LIBRARY_PATH at the stand-in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake-nvml.h"
#include "gpu/backend.h"

#define BUS "00000000:00:06.0"
#define OTHER 7001u
#define OURS_OUTSIDE 9001u   /* our pid to NVML, from outside a container */

static fake_nvml_set_fn *set;
static fake_nvml_get_fn *get;

static int ask(const struct fake_nvml *f, bool self_present)
{
	set(f);
	return gpu_nvml_others_busy(BUS, self_present);
}

static void test_nothing_runs(void **state)
{
	/* the sample store is large and empty: not busy, in two calls */
	assert_int_equal(ask(&(struct fake_nvml) { .util_store = 512 }, false), 0);
	assert_int_equal(get()->util_calls, 2);
	assert_int_equal(ask(&(struct fake_nvml) { 0 }, false), 0);
}

static void test_compute_processes(void **state)
{
	unsigned self = (unsigned) getpid();

	/* someone else's CUDA program */
	assert_int_equal(ask(&(struct fake_nvml) { .n_compute = 1, .compute = { OTHER }, .util_store = 512 }, false), 1);
	/* ours, by our own pid */
	assert_int_equal(ask(&(struct fake_nvml) { .n_compute = 1, .compute = { self }, .util_store = 512 }, true), 0);
	assert_int_equal(ask(&(struct fake_nvml) { .n_compute = 1, .compute = { self }, .util_store = 512 }, false), 0);
	/* ours under another namespace's pid: one process while we hold a
	 * context is us, but not while we hold none */
	assert_int_equal(ask(&(struct fake_nvml) { .n_compute = 1, .compute = { OURS_OUTSIDE } }, true), 0);
	assert_int_equal(ask(&(struct fake_nvml) { .n_compute = 1, .compute = { OURS_OUTSIDE } }, false), 1);
	/* two, one of them us: the other is someone else */
	assert_int_equal(ask(&(struct fake_nvml) { .n_compute = 2, .compute = { OURS_OUTSIDE, OTHER } }, true), 1);
	assert_int_equal(ask(&(struct fake_nvml) { .n_compute = 2, .compute = { self, OTHER } }, true), 1);
}

static void test_samples(void **state)
{
	/* our own kernels' SM time, under the container's outside pid */
	assert_int_equal(ask(&(struct fake_nvml) { .n_compute = 1, .compute = { OURS_OUTSIDE }, .util_store = 512,
						 .n_samples = 1, .sample_pid = { OURS_OUTSIDE }, .sample_sm = { 90 } },
			     true), 0);
	/* a graphics client drawing: busy; one holding the GPU idle: not */
	assert_int_equal(ask(&(struct fake_nvml) { .n_graphics = 1, .graphics = { OTHER }, .util_store = 512,
						 .n_samples = 1, .sample_pid = { OTHER }, .sample_sm = { 12 } },
			     false), 1);
	assert_int_equal(ask(&(struct fake_nvml) { .n_graphics = 1, .graphics = { OTHER }, .util_store = 512,
						 .n_samples = 1, .sample_pid = { OTHER }, .sample_sm = { 0 } },
			     false), 0);
	/* a store larger than any fixed buffer would be */
	assert_int_equal(ask(&(struct fake_nvml) { .util_store = 4000, .n_samples = 2,
						 .sample_pid = { OTHER, OTHER + 1 }, .sample_sm = { 0, 30 } },
			     false), 1);
	assert_int_equal(ask(&(struct fake_nvml) { .util_store = 4000, .n_samples = 2,
						 .sample_pid = { OTHER, OTHER + 1 }, .sample_sm = { 0, 0 } },
			     false), 0);
	/* one that says it is larger than anything sane: busy, to be safe */
	assert_int_equal(ask(&(struct fake_nvml) { .util_store = 1u << 30 }, false), 1);
}

/* Where the device keeps no samples, a graphics client's presence counts;
 * our own entry (by either pid) does not. */
static void test_no_samples(void **state)
{
	assert_int_equal(ask(&(struct fake_nvml) { .util_ret = 3, .n_graphics = 1, .graphics = { OTHER } }, false), 1);
	assert_int_equal(ask(&(struct fake_nvml) { .util_ret = 3, .n_compute = 1, .compute = { OURS_OUTSIDE },
						 .n_graphics = 1, .graphics = { OURS_OUTSIDE } },
			     true), 0);
	assert_int_equal(ask(&(struct fake_nvml) { .util_ret = 3 }, false), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nothing_runs),
		cmocka_unit_test(test_compute_processes),
		cmocka_unit_test(test_samples),
		cmocka_unit_test(test_no_samples),
	};
	char exe[PATH_MAX], dir[PATH_MAX + 16];
	ssize_t len;
	void *lib;

	if (!getenv("FAKE_NVML_REEXEC")) {
		len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		if (len < 0)
			return 1;
		exe[len] = 0;
		snprintf(dir, sizeof(dir), "%s/fake-nvml", dirname(exe));
		setenv("LD_LIBRARY_PATH", dir, 1);
		setenv("FAKE_NVML_REEXEC", "1", 1);
		execv("/proc/self/exe", argv);
		perror("execv");
		return 1;
	}
	lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
	set = lib ? (fake_nvml_set_fn *) dlsym(lib, "fake_nvml_set") : NULL;
	get = lib ? (fake_nvml_get_fn *) dlsym(lib, "fake_nvml_get") : NULL;
	if (!set || !get) {
		printf("the stand-in NVML did not load (%s): build it with the test (make)\n",
		       lib ? "a real libnvidia-ml.so.1 came first" : dlerror());
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
