/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Chunk sizing (gpu/slice.c) against injected device timings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpu/slice.h"

#define TARGET_NS 2000000ULL

/* A deterministic device: overhead_ns + ns_per_unit per unit, +-jitter_pct. */
struct model {
	double overhead_ns, ns_per_unit;
	unsigned jitter_pct;
	uint32_t rng;
};

static uint64_t model_time(struct model *m, uint64_t units)
{
	double t = m->overhead_ns + m->ns_per_unit * (double) units;
	if (m->jitter_pct) {
		m->rng = m->rng * 1103515245u + 12345u;
		int pct = (int) ((m->rng >> 16) % (2 * m->jitter_pct + 1)) - (int) m->jitter_pct;
		t *= 1.0 + pct / 100.0;
	}
	return (uint64_t) t;
}

struct run {
	unsigned chunks, over_after_warmup;
	uint64_t max_after_warmup_ns, sum_after_warmup_ns;
	unsigned n_after_warmup;
};

/* Run a whole range; check that chunks tile it exactly, in granules. */
static struct run run_range(struct model *m, uint64_t total, uint64_t granule, unsigned warmup)
{
	struct gpu_slicer s;
	struct run r = {};
	uint64_t expect = 0, off, n;

	gpu_slicer_init(&s, total, granule, TARGET_NS);
	while ((n = gpu_slicer_next(&s, &off))) {
		uint64_t t = model_time(m, n);
		assert_int_equal(off, expect);                  /* consecutive, no gap or overlap */
		assert_true(n % granule == 0 || off + n == total);
		assert_int_equal(off % granule, 0);
		expect += n;
		gpu_slicer_account(&s, n, t);
		if (++r.chunks > warmup && off + n < total) {   /* the short tail is no sample */
			r.n_after_warmup++;
			r.sum_after_warmup_ns += t;
			if (t > r.max_after_warmup_ns)
				r.max_after_warmup_ns = t;
			if (t > TARGET_NS)
				r.over_after_warmup++;
		}
	}
	assert_int_equal(expect, total);
	assert_true(gpu_slicer_finished(&s));
	return r;
}

static void test_unsliced(void **state)
{
	struct gpu_slicer s;
	uint64_t off = 99;

	gpu_slicer_init(&s, 1000003, 1, 0);
	assert_int_equal(gpu_slicer_next(&s, &off), 1000003);
	assert_int_equal(off, 0);
	assert_int_equal(gpu_slicer_next(&s, &off), 0);
	assert_false(gpu_slicer_finished(&s));          /* not accounted yet */
	gpu_slicer_account(&s, 1000003, 500 * TARGET_NS);
	assert_true(gpu_slicer_finished(&s));
}

static void test_starts_small_and_converges(void **state)
{
	struct model m = { .ns_per_unit = 37.0 };
	struct gpu_slicer s;
	uint64_t off;

	/* Nothing is known at first: the first chunk is one granule. */
	gpu_slicer_init(&s, 10000019, 1, TARGET_NS);
	assert_int_equal(gpu_slicer_next(&s, &off), 1);

	struct run r = run_range(&m, 10000019, 1, 12);
	printf("linear: %u chunks, after warm-up max %.3f ms, mean %.3f ms (target 2 ms)\n", r.chunks,
	       r.max_after_warmup_ns / 1e6, r.sum_after_warmup_ns / 1e6 / r.n_after_warmup);
	assert_int_equal(r.over_after_warmup, 0);
	/* Not needlessly small either: launch overhead is paid per chunk. */
	assert_true(r.sum_after_warmup_ns / r.n_after_warmup > TARGET_NS / 2);
	assert_true(r.n_after_warmup > 10);
}

static void test_granules(void **state)
{
	struct model m = { .overhead_ns = 20000, .ns_per_unit = 11.0 };
	struct run r = run_range(&m, 64 * 100003, 64, 12);

	assert_int_equal(r.over_after_warmup, 0);
	assert_true(r.sum_after_warmup_ns / r.n_after_warmup > TARGET_NS / 2);
}

static void test_jitter_stays_under_target(void **state)
{
	struct model m = { .overhead_ns = 5000, .ns_per_unit = 53.0, .jitter_pct = 20, .rng = 42 };
	struct run r = run_range(&m, 20000000, 1, 12);

	printf("jitter 20%%: %u chunks, max %.3f ms, mean %.3f ms\n", r.chunks,
	       r.max_after_warmup_ns / 1e6, r.sum_after_warmup_ns / 1e6 / r.n_after_warmup);
	assert_int_equal(r.over_after_warmup, 0);
}

/* A launch that costs most of the slice by itself (PoCL's CPU device: a
 * fraction of a millisecond per launch): the chunks must not shrink to one
 * work-item, which would make the overhead everything. */
static void test_launch_overhead_does_not_collapse(void **state)
{
	struct model m = { .overhead_ns = 1200000, .ns_per_unit = 2.0 };
	struct run r = run_range(&m, 50000000, 1, 12);
	double work_share;

	printf("overhead 1.2 ms: %u chunks, max %.3f ms\n", r.chunks, r.max_after_warmup_ns / 1e6);
	/* Work fills the rest of the budget: 1.5 ms - 1.2 ms = 0.3 ms per chunk,
	 * i.e. 150000 units; allow half of it. */
	work_share = (double) (r.sum_after_warmup_ns - r.n_after_warmup * 1200000ULL) / r.sum_after_warmup_ns;
	assert_true(work_share > 0.1);
	assert_true(r.chunks < 50000000 / 75000);
	assert_int_equal(r.over_after_warmup, 0);

	/* and beyond the slice: the work gets half the budget */
	struct model m2 = { .overhead_ns = 2500000, .ns_per_unit = 2.0 };
	struct run r2 = run_range(&m2, 50000000, 1, 12);
	assert_true(r2.chunks < 50000000 / 150000);
	assert_true(r2.max_after_warmup_ns < 2500000 + TARGET_NS);
}

static void test_slowdown_shrinks_at_once(void **state)
{
	struct gpu_slicer s;
	uint64_t off, n = 0;

	gpu_slicer_init(&s, 100000000, 1, TARGET_NS);
	for (int i = 0; i < 30; i++) {
		n = gpu_slicer_next(&s, &off);
		gpu_slicer_account(&s, n, n * 10);          /* 10 ns per unit */
	}
	assert_true(n * 10 <= TARGET_NS && n * 10 > TARGET_NS / 2);
	/* The device becomes 10x slower (the owner's game started). One
	 * chunk overshoots, unavoidably; the very next one fits again. */
	n = gpu_slicer_next(&s, &off);
	gpu_slicer_account(&s, n, n * 100);
	assert_true(n * 100 > TARGET_NS);
	n = gpu_slicer_next(&s, &off);
	assert_true(n * 100 <= TARGET_NS);
}

static void test_growth_is_bounded(void **state)
{
	struct gpu_slicer s;
	uint64_t off, n, prev;

	gpu_slicer_init(&s, 100000000, 1, TARGET_NS);
	prev = gpu_slicer_next(&s, &off);
	gpu_slicer_account(&s, prev, 1);                 /* absurdly fast */
	n = gpu_slicer_next(&s, &off);
	assert_int_equal(n, prev * GPU_SLICE_MAX_GROWTH);
}

static void test_one_granule_too_slow(void **state)
{
	struct gpu_slicer s;
	uint64_t off, n;

	unsigned twos = 0;

	gpu_slicer_init(&s, 256 * 100, 256, TARGET_NS);
	while ((n = gpu_slicer_next(&s, &off))) {
		/* never below one work-group; one try of two, to learn whether
		 * the time is launch overhead or work (it is work) */
		assert_true(n == 256 || n == 512);
		twos += n == 512;
		gpu_slicer_account(&s, n, n / 256 * 3 * TARGET_NS);
	}
	assert_int_equal(twos, 1);
	assert_true(gpu_slicer_finished(&s));
}

static void test_giveback(void **state)
{
	struct gpu_slicer s;
	uint64_t off, off2, n, n2;

	gpu_slicer_init(&s, 1000, 10, TARGET_NS);
	n = gpu_slicer_next(&s, &off);
	gpu_slicer_account(&s, n, 100);
	n = gpu_slicer_next(&s, &off);
	gpu_slicer_giveback(&s, off);                    /* the device was busy: not run */
	n2 = gpu_slicer_next(&s, &off2);
	assert_int_equal(off2, off);
	assert_int_equal(n2, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unsliced),
		cmocka_unit_test(test_starts_small_and_converges),
		cmocka_unit_test(test_granules),
		cmocka_unit_test(test_jitter_stays_under_target),
		cmocka_unit_test(test_launch_overhead_does_not_collapse),
		cmocka_unit_test(test_slowdown_shrinks_at_once),
		cmocka_unit_test(test_growth_is_bounded),
		cmocka_unit_test(test_one_granule_too_slow),
		cmocka_unit_test(test_giveback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
