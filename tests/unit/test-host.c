/* SPDX-License-Identifier: GPL-2.0-or-later */
/* host.c against fake sysfs trees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

#include "harvester/host.h"

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

static int setup(void **state)
{
	snprintf(root, sizeof(root), "/tmp/harvester-host-test.XXXXXX");
	assert_non_null(mkdtemp(root));
	return 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_battery(void **state)
{
	char dir[PATH_MAX + 8];
	snprintf(dir, sizeof(dir), "%s/ps", root);
	assert_int_equal(host_on_battery(dir), 0);          /* no folder: a desktop */
	put("ps/BAT0/type", "Battery\n");
	put("ps/BAT0/status", "Discharging\n");
	put("ps/AC/type", "Mains\n");
	put("ps/AC/online", "0\n");
	assert_int_equal(host_on_battery(dir), 1);
	put("ps/AC/online", "1\n");
	assert_int_equal(host_on_battery(dir), 0);          /* plugged in */
	put("ps/AC/online", "0\n");
	put("ps/BAT0/status", "Full\n");
	assert_int_equal(host_on_battery(dir), 0);
}

static void test_temperature(void **state)
{
	char dir[PATH_MAX + 8];
	int32_t t = 0;
	snprintf(dir, sizeof(dir), "%s/thermal", root);
	mkdir(dir, 0755);
	assert_int_equal(host_max_temperature(dir, &t), -ENOENT);
	put("thermal/thermal_zone0/temp", "45000\n");
	put("thermal/thermal_zone1/temp", "81500\n");
	put("thermal/cooling_device0/temp", "99000\n");     /* not a zone */
	assert_int_equal(host_max_temperature(dir, &t), 0);
	assert_int_equal(t, 81500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_battery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_temperature, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
