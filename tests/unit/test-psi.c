/* SPDX-License-Identifier: GPL-2.0-or-later */
/* psi_parse on the kernel's format, with and without the "full" line, and on
 * text it must refuse rather than read as no pressure. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cgroup/cgroup.h"

static void test_some_and_full(void **state) {
	struct psi p;

	assert_int_equal(psi_parse(
		"some avg10=1.52 avg60=0.31 avg300=0.07 total=2751393\n"
		"full avg10=0.88 avg60=0.20 avg300=0.04 total=1802412\n", &p), 0);
	assert_true(p.some.avg10 > 1.519 && p.some.avg10 < 1.521);
	assert_true(p.some.avg60 > 0.309 && p.some.avg60 < 0.311);
	assert_true(p.some.avg300 > 0.069 && p.some.avg300 < 0.071);
	assert_int_equal(p.some.total_usec, 2751393);
	assert_true(p.has_full);
	assert_true(p.full.avg10 > 0.879 && p.full.avg10 < 0.881);
	assert_int_equal(p.full.total_usec, 1802412);
}

/* /proc/pressure/cpu before 5.13 has no "full" line. */
static void test_some_only(void **state) {
	struct psi p;

	memset(&p, 0x55, sizeof p);
	assert_int_equal(psi_parse("some avg10=100.00 avg60=99.99 avg300=0.00 total=18446744073709551615\n", &p), 0);
	assert_false(p.has_full);
	assert_true(p.some.avg10 == 100.0);
	assert_int_equal(p.some.total_usec, UINT64_MAX);
	assert_true(p.full.avg10 == 0 && p.full.total_usec == 0);
	/* no final newline */
	assert_int_equal(psi_parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=0", &p), 0);
	assert_int_equal(p.some.total_usec, 0);
}

static void test_garbage(void **state) {
	static const char *bad[] = {
		"",
		"\n",
		"hello world\n",
		"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",           /* no "some" */
		"some avg10=0.00 avg60=0.00 total=0\n",                       /* a field missing */
		"some avg10=x avg60=0.00 avg300=0.00 total=0\n",
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=12abc\n",
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=\n",
		"some avg10=-1.00 avg60=0.00 avg300=0.00 total=5\n",           /* not a share */
		"some avg10=nan avg60=0.00 avg300=0.00 total=5\n",
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nfull junk\n",
		"some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nextra line\n",
	};
	struct psi p = { .has_full = true, .some.total_usec = 99 };

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int r = psi_parse(bad[i], &p);
		if (r != -EINVAL)
			fail_msg("accepted #%zu: \"%s\" (%d)", i, bad[i], r);
	}
	/* failures leave the output alone */
	assert_true(p.has_full);
	assert_int_equal(p.some.total_usec, 99);
	assert_int_equal(psi_parse(NULL, &p), -EINVAL);
}

/* psi_read on a file, and on the machine's own /proc/pressure if it has one. */
static void test_read(void **state) {
	char tmpl[] = "/tmp/psi-test-XXXXXX";
	const char *text = "some avg10=2.00 avg60=1.00 avg300=0.50 total=42\n"
			   "full avg10=0.00 avg60=0.00 avg300=0.00 total=7\n";
	struct psi p;
	int fd;

	fd = mkstemp(tmpl);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
	close(fd);
	assert_int_equal(psi_read(tmpl, &p), 0);
	assert_int_equal(p.some.total_usec, 42);
	assert_int_equal(p.full.total_usec, 7);
	unlink(tmpl);
	assert_int_equal(psi_read("/nonexistent/pressure", &p), -ENOENT);
	if (access("/proc/pressure/memory", R_OK) == 0) {
		assert_int_equal(psi_read("/proc/pressure/memory", &p), 0);
		assert_true(p.has_full);
	}
}

int main(void) {
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_some_and_full),
		cmocka_unit_test(test_some_only),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_read),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
