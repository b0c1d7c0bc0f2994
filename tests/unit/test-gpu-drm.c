/* SPDX-License-Identifier: GPL-2.0-or-later */
/* DRM fdinfo busy detection (gpu/drm.c) against a fake /proc and /sys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gpu/backend.h"

#define PDEV "0000:03:00.0"
#define SELF 4242

static char root[PATH_MAX];

static void put(const char *rel, const char *value)
{
	char path[PATH_MAX * 2], dir[PATH_MAX * 2];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(dir, sizeof(dir), "%s", path);
	for (char *p = dir + strlen(root) + 1; *p; p++)
		if (*p == '/') {
			*p = 0;
			mkdir(dir, 0755);
			*p = '/';
		}
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(value, f);
	fclose(f);
}

/* One DRM client's fdinfo, as amdgpu/i915 write it. */
static void client(const char *pid_fd, const char *pdev, unsigned id, unsigned long long gfx_ns,
		   unsigned long long video_ns)
{
	char text[512];
	snprintf(text, sizeof(text),
		 "pos:\t0\nflags:\t02100002\nmnt_id:\t25\nino:\t1043\n"
		 "drm-driver:\tamdgpu\ndrm-pdev:\t%s\ndrm-client-id:\t%u\n"
		 "drm-memory-vram:\t1024 KiB\n"
		 "drm-engine-gfx:\t%llu ns\ndrm-engine-capacity-gfx:\t4\ndrm-engine-video:\t%llu ns\n",
		 pdev, id, gfx_ns, video_ns);
	put(pid_fd, text);
}

static int setup(void **state)
{
	snprintf(root, sizeof(root), "/tmp/harvester-drm-test.XXXXXX");
	assert_non_null(mkdtemp(root));
	return 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_busy_from_engine_time(void **state)
{
	char proc[PATH_MAX + 8];
	struct gpu_drm_busy *b;

	snprintf(proc, sizeof(proc), "%s/proc", root);
	/* a compositor holding the GPU, a file that is no DRM client, our own
	 * client, and a client of another GPU */
	client("proc/100/fdinfo/5", PDEV, 1, 5000000, 0);
	put("proc/100/fdinfo/0", "pos:\t0\nflags:\t02\nmnt_id:\t1\nino:\t7\n");
	client("proc/4242/fdinfo/9", PDEV, 2, 1000, 0);
	client("proc/300/fdinfo/4", "0000:04:00.0", 3, 1000, 0);
	put("proc/self/fdinfo/1", "");             /* not a pid: ignored */

	assert_int_equal(gpu_drm_busy_new(proc, PDEV, SELF, &b), 0);
	assert_int_equal(gpu_drm_busy_sample(b), 1);   /* first sample: nothing to compare */
	assert_int_equal(gpu_drm_busy_sample(b), 0);   /* nothing grew: idle */

	/* our own client working is not "others" */
	client("proc/4242/fdinfo/9", PDEV, 2, 999999999, 0);
	assert_int_equal(gpu_drm_busy_sample(b), 0);
	/* nor another GPU's client */
	client("proc/300/fdinfo/4", "0000:04:00.0", 3, 999999999, 0);
	assert_int_equal(gpu_drm_busy_sample(b), 0);

	/* the compositor renders a frame: busy; then idle again */
	client("proc/100/fdinfo/5", PDEV, 1, 5100000, 0);
	assert_int_equal(gpu_drm_busy_sample(b), 1);
	assert_int_equal(gpu_drm_busy_sample(b), 0);
	/* any engine counts (video decode) */
	client("proc/100/fdinfo/5", PDEV, 1, 5100000, 10);
	assert_int_equal(gpu_drm_busy_sample(b), 1);

	/* a dup'ed fd of the same client is one client, not a new one */
	client("proc/100/fdinfo/6", PDEV, 1, 5100000, 10);
	assert_int_equal(gpu_drm_busy_sample(b), 0);

	/* a new process that has already spent engine time: busy */
	client("proc/500/fdinfo/3", PDEV, 7, 300, 0);
	assert_int_equal(gpu_drm_busy_sample(b), 1);
	/* a new client that has spent nothing yet: idle */
	client("proc/600/fdinfo/3", PDEV, 8, 0, 0);
	assert_int_equal(gpu_drm_busy_sample(b), 0);
	gpu_drm_busy_free(b);
}

static void test_missing_proc(void **state)
{
	char proc[PATH_MAX + 16];
	struct gpu_drm_busy *b;

	snprintf(proc, sizeof(proc), "%s/nonexistent", root);
	assert_int_equal(gpu_drm_busy_new(proc, PDEV, SELF, &b), 0);
	assert_true(gpu_drm_busy_sample(b) < 0);
	gpu_drm_busy_free(b);
}

static void test_is_drm_device(void **state)
{
	char sys[PATH_MAX + 8];

	snprintf(sys, sizeof(sys), "%s/sys", root);
	put("sys/bus/pci/devices/" PDEV "/drm/card0/dev", "226:0\n");
	put("sys/bus/pci/devices/0000:05:00.0/vendor", "0x8086\n");
	assert_true(gpu_drm_is_drm_device(sys, PDEV));
	assert_false(gpu_drm_is_drm_device(sys, "0000:05:00.0"));   /* no drm/ */
	assert_false(gpu_drm_is_drm_device(sys, "0000:06:00.0"));   /* no device */
	assert_false(gpu_drm_is_drm_device(sys, ""));
}

/* Without CAP_SYS_PTRACE, other users' clients cannot be seen: no DRM
 * busy detection then (the device runs only while the owner is idle). */
static void test_sees_all_clients(void **state)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof(path), "%s/status-root", root);
	put("status-root", "Name:\tharvesterd\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n"
			   "CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n");
	assert_true(gpu_drm_sees_all_clients(path));
	/* harvesterd.service's set before CAP_SYS_PTRACE joined it */
	snprintf(path, sizeof(path), "%s/status-unit", root);
	put("status-unit", "Name:\tharvesterd\nCapEff:\t000000c0002000eb\n");
	assert_false(gpu_drm_sees_all_clients(path));
	put("status-unit", "Name:\tharvesterd\nCapEff:\t000000c0002800eb\n");
	assert_true(gpu_drm_sees_all_clients(path));
	snprintf(path, sizeof(path), "%s/no-such-status", root);
	assert_false(gpu_drm_sees_all_clients(path));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_busy_from_engine_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_proc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_is_drm_device, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sees_all_clients, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
