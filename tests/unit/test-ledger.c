/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The budget ledger on disk, and the restore of the bucket at start-up. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harvester/ledger.h"
#include "harvester/macro.h"

#define BOOT_A "0f3a1c9e-6a43-4bd2-9a53-2f1c7e0d4b11"
#define BOOT_B "7c0d2e4f-1111-4a2b-8c3d-9e8f7a6b5c4d"

static char dir[64], path[128];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test-ledger.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/ledger", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct ledger sample(void)
{
	return (struct ledger) {
		.tokens_usec = -12345,            /* a debt survives a restart too */
		.spent_total_usec = 987654321012ULL,
		.saved_realtime_usec = 1764160000123456ULL,
		.boot_id = BOOT_A,
		.jobs_cgroup_id = 4242,
		.jobs_usage_usec = 55555555,
		.gpu_tokens_usec = -777,          /* a GPU debt too */
		.gpu_spent_total_usec = 123456789,
		.gpu_busy = true,
	};
}

static void write_text(const char *text)
{
	FILE *f = fopen(path, "we");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void assert_ledger_equal(const struct ledger *a, const struct ledger *b)
{
	assert_true(a->tokens_usec == b->tokens_usec);
	assert_true(a->spent_total_usec == b->spent_total_usec);
	assert_true(a->saved_realtime_usec == b->saved_realtime_usec);
	assert_string_equal(a->boot_id, b->boot_id);
	assert_true(a->jobs_cgroup_id == b->jobs_cgroup_id);
	assert_true(a->jobs_usage_usec == b->jobs_usage_usec);
	assert_true(a->gpu_tokens_usec == b->gpu_tokens_usec);
	assert_true(a->gpu_spent_total_usec == b->gpu_spent_total_usec);
	assert_true(a->gpu_busy == b->gpu_busy);
}

static void test_roundtrip(void **state)
{
	struct ledger l = sample(), back;
	char tmp[160];
	struct stat st;

	assert_int_equal(ledger_save(path, &l), 0);
	assert_int_equal(ledger_load(path, &back), 0);
	assert_ledger_equal(&l, &back);
	assert_true(back.has_gpu);

	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	assert_int_equal(access(tmp, F_OK), -1); /* renamed away */

	/* Saving again replaces it. */
	l.tokens_usec = 99;
	l.boot_id[0] = '\0'; /* unknown boot id is allowed */
	assert_int_equal(ledger_save(path, &l), 0);
	assert_int_equal(ledger_load(path, &back), 0);
	assert_ledger_equal(&l, &back);
}

static void test_missing(void **state)
{
	struct ledger back = { .tokens_usec = 7 };

	assert_int_equal(ledger_load(path, &back), -ENOENT);
	assert_true(back.tokens_usec == 7); /* untouched */
}

static void test_corrupt(void **state)
{
	static const char *const bad[] = {
		"",
		"\n",
		"garbage",
		"{\"version\":1,\"tokens_usec\":-12345,\"spent_total",   /* truncated mid-write */
		"[1,2,3]",
		"{\"version\":2,\"tokens_usec\":0,\"spent_total_usec\":0,\"saved_realtime_usec\":0,"
		"\"boot_id\":\"\",\"jobs_cgroup_id\":0,\"jobs_usage_usec\":0}",                  /* unknown version */
		"{\"version\":1,\"spent_total_usec\":0,\"saved_realtime_usec\":0,"
		"\"boot_id\":\"\",\"jobs_cgroup_id\":0,\"jobs_usage_usec\":0}",                  /* missing tokens */
		"{\"version\":1,\"tokens_usec\":\"5\",\"spent_total_usec\":0,\"saved_realtime_usec\":0,"
		"\"boot_id\":\"\",\"jobs_cgroup_id\":0,\"jobs_usage_usec\":0}",                  /* wrong type */
		"{\"version\":1,\"tokens_usec\":5,\"spent_total_usec\":-1,\"saved_realtime_usec\":0,"
		"\"boot_id\":\"\",\"jobs_cgroup_id\":0,\"jobs_usage_usec\":0}",                  /* negative count */
		"{\"version\":1,\"tokens_usec\":5,\"spent_total_usec\":0,\"saved_realtime_usec\":0,"
		"\"boot_id\":\"" BOOT_A "x\",\"jobs_cgroup_id\":0,\"jobs_usage_usec\":0}",      /* boot id too long */
		"{\"version\":1,\"tokens_usec\":5,\"tokens_usec\":6,\"spent_total_usec\":0,\"saved_realtime_usec\":0,"
		"\"boot_id\":\"\",\"jobs_cgroup_id\":0,\"jobs_usage_usec\":0}",                  /* duplicate key */
		"{\"version\":1,\"tokens_usec\":5,\"spent_total_usec\":0,\"saved_realtime_usec\":0,"
		"\"boot_id\":\"\",\"jobs_cgroup_id\":0,\"jobs_usage_usec\":0} trailing",         /* junk after */
	};
	struct ledger l = sample(), back = { .tokens_usec = 7 };
	char full[512];
	FILE *f;
	size_t n;

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		write_text(bad[i]);
		if (ledger_load(path, &back) != -EBADMSG)
			fail_msg("accepted: %s", bad[i]);
		assert_true(back.tokens_usec == 7);
	}

	/* A real ledger cut at every length is rejected, never half-read. */
	assert_int_equal(ledger_save(path, &l), 0);
	f = fopen(path, "re");
	assert_non_null(f);
	n = fread(full, 1, sizeof(full), f);
	fclose(f);
	assert_true(n > 100);
	for (size_t cut = 0; cut < n - 1; cut++) {
		assert_int_equal(truncate(path, (off_t)cut), 0);
		if (ledger_load(path, &back) != -EBADMSG)
			fail_msg("accepted a ledger cut at %zu of %zu bytes", cut, n);
	}
	print_message("  ledger is %zu bytes; every truncation of it is -EBADMSG\n", n);

	/* Too big to be ours. */
	f = fopen(path, "we");
	for (int i = 0; i < 5000; i++)
		fputc(' ', f);
	fclose(f);
	assert_int_equal(ledger_load(path, &back), -EBADMSG);
}

/* A save that fails leaves the old ledger whole. */
static void test_failed_save_keeps_old(void **state)
{
	struct ledger l = sample(), back;
	char tmp[160], missing[160];

	assert_int_equal(ledger_save(path, &l), 0);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	assert_int_equal(mkdir(tmp, 0700), 0); /* the temp file cannot be created */
	l.tokens_usec = 1;
	assert_int_equal(ledger_save(path, &l), -EISDIR);
	assert_int_equal(ledger_load(path, &back), 0);
	assert_true(back.tokens_usec == -12345);
	assert_int_equal(rmdir(tmp), 0);

	/* A stale temp file from a crash is simply overwritten. */
	FILE *f = fopen(tmp, "we");
	fputs("half a ledg", f);
	fclose(f);
	assert_int_equal(ledger_save(path, &l), 0);
	assert_int_equal(ledger_load(path, &back), 0);
	assert_true(back.tokens_usec == 1);
	assert_int_equal(access(tmp, F_OK), -1);

	snprintf(missing, sizeof(missing), "%s/no/such/dir/ledger", dir);
	assert_int_equal(ledger_save(missing, &l), -ENOENT);

	/* Counts JSON cannot hold are refused, not wrapped. */
	l.jobs_cgroup_id = UINT64_MAX;
	assert_int_equal(ledger_save(path, &l), -ERANGE);
	assert_int_equal(ledger_load(path, &back), 0);
	assert_true(back.jobs_cgroup_id == 4242);
}

/* A ledger written before the GPU budget loads, with an empty GPU part;
 * a ledger with only some of the GPU keys, or of the wrong type, is not ours. */
static void test_gpu_backward_compatible(void **state)
{
	static const char *const bad[] = {
		"{\"version\":1,\"tokens_usec\":5,\"spent_total_usec\":0,\"saved_realtime_usec\":0,"
		"\"boot_id\":\"\",\"jobs_cgroup_id\":0,\"jobs_usage_usec\":0,\"gpu_tokens_usec\":1}",
		"{\"version\":1,\"tokens_usec\":5,\"spent_total_usec\":0,\"saved_realtime_usec\":0,"
		"\"boot_id\":\"\",\"jobs_cgroup_id\":0,\"jobs_usage_usec\":0,\"gpu_tokens_usec\":1,"
		"\"gpu_spent_total_usec\":-1,\"gpu_busy\":false}",
		"{\"version\":1,\"tokens_usec\":5,\"spent_total_usec\":0,\"saved_realtime_usec\":0,"
		"\"boot_id\":\"\",\"jobs_cgroup_id\":0,\"jobs_usage_usec\":0,\"gpu_tokens_usec\":1,"
		"\"gpu_spent_total_usec\":2,\"gpu_busy\":1}",
	};
	struct ledger back = { .gpu_tokens_usec = 9, .gpu_spent_total_usec = 9, .has_gpu = true };

	write_text("{\"version\":1,\"tokens_usec\":-12345,\"spent_total_usec\":987654321012,"
		   "\"saved_realtime_usec\":1764160000123456,\"boot_id\":\"" BOOT_A "\","
		   "\"jobs_cgroup_id\":4242,\"jobs_usage_usec\":55555555}\n");
	assert_int_equal(ledger_load(path, &back), 0);
	assert_false(back.has_gpu);
	assert_true(back.tokens_usec == -12345 && back.spent_total_usec == 987654321012ULL);
	assert_true(back.gpu_tokens_usec == 0 && back.gpu_spent_total_usec == 0 && !back.gpu_busy);
	assert_true(ledger_gpu_unrecorded_usec(&back, back.saved_realtime_usec + USEC_PER_SEC, 4) == 0);

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		write_text(bad[i]);
		if (ledger_load(path, &back) != -EBADMSG)
			fail_msg("accepted: %s", bad[i]);
	}

	/* And a GPU part that is there round-trips, an idle one too. */
	struct ledger l = sample();
	l.gpu_busy = false;
	l.gpu_tokens_usec = 3600000000LL;
	assert_int_equal(ledger_save(path, &l), 0);
	assert_int_equal(ledger_load(path, &back), 0);
	assert_true(back.has_gpu);
	assert_ledger_equal(&l, &back);
	l.gpu_spent_total_usec = (uint64_t)INT64_MAX + 1;
	assert_int_equal(ledger_save(path, &l), -ERANGE);
}

/* No kernel counter for device time: nothing if the GPU was idle at the
 * save, else every device busy since the save, at most one save interval. */
static void test_gpu_unrecorded(void **state)
{
	struct ledger l = sample();
	const uint64_t t = l.saved_realtime_usec;

	assert_true(ledger_gpu_unrecorded_usec(&l, t + 2 * USEC_PER_SEC, 1) == 2000000);
	assert_true(ledger_gpu_unrecorded_usec(&l, t + 2 * USEC_PER_SEC, 3) == 6000000);
	assert_true(ledger_gpu_unrecorded_usec(&l, t + 3600 * USEC_PER_SEC, 2) == (int64_t)(2 * LEDGER_SAVE_USEC));
	assert_true(ledger_gpu_unrecorded_usec(&l, t - 1, 1) == (int64_t)LEDGER_SAVE_USEC);
	assert_true(ledger_gpu_unrecorded_usec(&l, t, 1) == 0);
	assert_true(ledger_gpu_unrecorded_usec(&l, t + USEC_PER_SEC, 0) == 0);
	l.gpu_busy = false;
	assert_true(ledger_gpu_unrecorded_usec(&l, t + 2 * USEC_PER_SEC, 1) == 0);
	assert_true(ledger_gpu_unrecorded_usec(&l, t - 1, 8) == 0);
}

static void test_load_directory(void **state)
{
	struct ledger back;

	assert_int_equal(ledger_load(dir, &back), -EISDIR);
}

/* Same boot, same jobs/ cgroup, usage not gone backwards: exact. */
static void test_unrecorded_exact(void **state)
{
	struct ledger l = sample();

	/* However long ago the save was: the kernel counted all of it. */
	assert_true(ledger_unrecorded_usec(&l, BOOT_A, 4242, 55555555 + 1234567, l.saved_realtime_usec + 3600 * USEC_PER_SEC,
					   1000000) == 1234567);
	assert_true(ledger_unrecorded_usec(&l, BOOT_A, 4242, 55555555, l.saved_realtime_usec, 1000000) == 0);
	/* Even with the wall clock set back. */
	assert_true(ledger_unrecorded_usec(&l, BOOT_A, 4242, 55555555 + 10, 0, 1000000) == 10);
}

/* Otherwise: Burst for the time since the save, at most LEDGER_SAVE_USEC. */
static void test_unrecorded_worst_case(void **state)
{
	struct ledger l = sample();
	const uint64_t burst = 2 * 500000; /* Burst=50% of 2 CPUs: 1e6 CPU-usec per second */
	const uint64_t t = l.saved_realtime_usec;
	const int64_t full = (int64_t)(LEDGER_SAVE_USEC * burst / USEC_PER_SEC);

	assert_true(full == 5000000);
	/* Another boot: 2 s since the save at Burst. */
	assert_true(ledger_unrecorded_usec(&l, BOOT_B, 4242, 99999999, t + 2 * USEC_PER_SEC, burst) == 2000000);
	/* Long since: capped at one save interval. */
	assert_true(ledger_unrecorded_usec(&l, BOOT_B, 4242, 0, t + 3600 * USEC_PER_SEC, burst) == full);
	/* Same boot, jobs/ recreated (new id). */
	assert_true(ledger_unrecorded_usec(&l, BOOT_A, 4243, 99999999, t + 1500 * USEC_PER_MSEC, burst) == 1500000);
	/* Same boot and id, but the counter went backwards. */
	assert_true(ledger_unrecorded_usec(&l, BOOT_A, 4242, 55555554, t + 3 * USEC_PER_SEC, burst) == 3000000);
	/* The wall clock went backwards: the whole interval. */
	assert_true(ledger_unrecorded_usec(&l, BOOT_B, 4242, 0, t - 1, burst) == full);
	/* No time passed. */
	assert_true(ledger_unrecorded_usec(&l, BOOT_B, 4242, 0, t, burst) == 0);
	/* Unknown boot ids or cgroup ids never count as "the same". */
	assert_true(ledger_unrecorded_usec(&l, NULL, 4242, 55555556, t + USEC_PER_SEC, burst) == 1000000);
	l.boot_id[0] = '\0';
	assert_true(ledger_unrecorded_usec(&l, "", 4242, 55555556, t + USEC_PER_SEC, burst) == 1000000);
	l = sample();
	l.jobs_cgroup_id = 0;
	assert_true(ledger_unrecorded_usec(&l, BOOT_A, 0, 55555556, t + USEC_PER_SEC, burst) == 1000000);
	/* 1024 CPUs at 100%: no overflow. */
	assert_true(ledger_unrecorded_usec(&l, BOOT_B, 1, 0, t + 10 * USEC_PER_SEC, 1024ULL * 1000000) ==
		    (int64_t)(5ULL * 1024 * 1000000));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_save_keeps_old, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gpu_backward_compatible, setup, teardown),
		cmocka_unit_test(test_gpu_unrecorded),
		cmocka_unit_test(test_unrecorded_exact),
		cmocka_unit_test(test_unrecorded_worst_case),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
