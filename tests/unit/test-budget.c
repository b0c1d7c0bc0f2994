/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The CPU budget's token bucket, driven by an injected clock and usage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "harvester/budget.h"
#include "harvester/macro.h"

#define MIN_USEC (60 * USEC_PER_SEC)
#define HOUR_USEC (60 * MIN_USEC)
#define DAY_USEC (24 * HOUR_USEC)

/* A monotonic clock that starts at an awkward, non-round time, and one that
 * starts on a whole second where a test reads exact figures. */
#define T0 (123456789ULL)
#define TR (1000 * USEC_PER_SEC)

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* What the bucket should have earned from t0 to t1: the reference, in
 * 128-bit arithmetic the implementation does not use. */
static uint64_t ref_fill(uint64_t rate, uint64_t t0, uint64_t t1)
{
	return (uint64_t)((unsigned __int128)rate * t1 / USEC_PER_SEC - (unsigned __int128)rate * t0 / USEC_PER_SEC);
}

static void test_rates_and_quota(void **state)
{
	struct budget b;
	uint64_t period;

	budget_init(&b, 10000, 500000, DAY_USEC, 4, 0, T0, 0);
	assert_int_equal(budget_rate_usec_per_sec(&b), 40000);          /* 1% of 4 CPUs */
	assert_int_equal(budget_cpu_max(&b, &period), 196000);          /* 98% of 50% x 4 x 100 ms */
	assert_int_equal(period, 100000);
	assert_true(b.capacity_usec == 40000LL * 86400);

	budget_init(&b, 5000, 250000, DAY_USEC, 1, 0, T0, 0);
	assert_int_equal(budget_rate_usec_per_sec(&b), 5000);
	assert_int_equal(budget_cpu_max(&b, &period), 24500);

	budget_init(&b, 1000000, 1000000, 30 * DAY_USEC, 1024, 0, T0, 0);
	assert_int_equal(budget_cpu_max(&b, &period), 100352000);
	assert_true(b.capacity_usec == 1024LL * 1000000 * 30 * 86400);  /* no overflow */

	/* Under the kernel's 1 ms minimum per 100 ms: a 1 s period. */
	budget_init(&b, 10, 5000, DAY_USEC, 1, 0, T0, 0);
	assert_int_equal(budget_cpu_max(&b, &period), 4900);            /* 98% of 0.5% of 1 s */
	assert_int_equal(period, 1000000);
	/* ... and at least 1 ms of it. */
	budget_init(&b, 10, 500, DAY_USEC, 1, 0, T0, 0);
	assert_int_equal(budget_cpu_max(&b, &period), 1000);
	assert_int_equal(period, 1000000);
}

static void test_fresh_bucket_waits_resume(void **state)
{
	struct budget b, c;

	budget_init(&b, 10000, 500000, HOUR_USEC, 2, 0, TR, 1000);
	assert_true(b.exhausted);
	assert_true(b.tokens_usec == 0);
	assert_int_equal(budget_usec_until_resume(&b), BUDGET_RESUME_USEC);

	c = b;
	budget_update(&c, TR + BUDGET_RESUME_USEC - 1, 1000);
	assert_true(c.exhausted);
	budget_update(&c, TR + BUDGET_RESUME_USEC, 1000);
	assert_false(c.exhausted);
	assert_int_equal(budget_usec_until_resume(&c), 0);
	assert_true(c.tokens_usec == 20000); /* 1 s at 1% of 2 CPUs */
}

/* Usage at exactly the fill rate, in uneven steps: never exhausted. */
static void test_steady_at_fill_rate(void **state)
{
	struct budget b;
	uint64_t rate, now = T0, start_usage = 5000000;
	int64_t start;

	budget_init(&b, 7, 500000, HOUR_USEC, 3, 0, T0, start_usage); /* 21 usec/s: nothing divides evenly */
	rate = budget_rate_usec_per_sec(&b);
	/* Start at the resume level (the state after the first thaw). */
	budget_update(&b, T0 + BUDGET_RESUME_USEC, start_usage);
	assert_false(b.exhausted);
	start = b.tokens_usec;
	now = T0 + BUDGET_RESUME_USEC;
	for (int i = 0; i < 200000; i++) {
		now += 1 + rnd() % 50000;
		/* The kernel's usage: everything the fill has allowed so far. */
		budget_update(&b, now, start_usage + ref_fill(rate, T0 + BUDGET_RESUME_USEC, now));
		assert_false(b.exhausted);
		assert_true(b.tokens_usec == start);
	}
	print_message("  %.0f s at exactly the fill rate: tokens steady at %lld usec\n",
		      (double)(now - T0) / USEC_PER_SEC, (long long)b.tokens_usec);
}

/* Running at Burst from a full bucket empties it when predicted. */
static void test_burst_exhausts_on_time(void **state)
{
	const uint64_t step = 10 * USEC_PER_MSEC;
	struct budget b;
	uint64_t now = T0, usage = 0, predicted, resume_at;
	double exhausted_at = -1;

	/* 1% of 2 CPUs over 1 h: 72 s of CPU; at Burst 50% of 2 CPUs it drains
	 * at 1e6 - 2e4 = 980000 usec/s, so empty after 72e6 / 980000 = 73.469 s. */
	budget_init(&b, 10000, 500000, HOUR_USEC, 2, INT64_MAX, T0, 0);
	assert_true(b.tokens_usec == 72000000);
	predicted = 72000000ULL * USEC_PER_SEC / 980000;
	while (!b.exhausted && now - T0 < 200 * USEC_PER_SEC) {
		now += step;
		usage += 1000000ULL * step / USEC_PER_SEC; /* Burst x ncpus */
		budget_update(&b, now, usage);
	}
	exhausted_at = (double)(now - T0) / USEC_PER_SEC;
	print_message("  exhausted after %.3f s (predicted %.3f s)\n", exhausted_at, (double)predicted / USEC_PER_SEC);
	assert_true(b.exhausted);
	assert_true(now - T0 >= predicted);
	assert_true(now - T0 < predicted + step);
	assert_true(b.tokens_usec <= 0);
	assert_true(b.tokens_usec > -(int64_t)(1000000ULL * step / USEC_PER_SEC));

	/* Frozen: no more usage. It thaws exactly when the fill of RESUME_USEC is back. */
	resume_at = now + budget_usec_until_resume(&b);
	assert_true(budget_usec_until_resume(&b) >= BUDGET_RESUME_USEC);
	budget_update(&b, resume_at - 1, usage);
	assert_true(b.exhausted);
	budget_update(&b, resume_at, usage);
	assert_false(b.exhausted);
	assert_true(b.tokens_usec >= 20000);
}

/* Hysteresis: a bucket just above 0 stays exhausted until the resume level. */
static void test_hysteresis(void **state)
{
	struct budget b;

	budget_init(&b, 10000, 500000, HOUR_USEC, 1, 5000, TR, 0); /* resume level: 10000 */
	assert_true(b.exhausted); /* below the resume level at start */
	budget_update(&b, TR + 500 * USEC_PER_MSEC, 0);
	assert_true(b.tokens_usec == 10000);
	assert_false(b.exhausted);
	budget_update(&b, TR + 500 * USEC_PER_MSEC, 9999); /* 1 token left: still running */
	assert_false(b.exhausted);
	budget_update(&b, TR + 500 * USEC_PER_MSEC, 10000); /* 0: exhausted */
	assert_true(b.exhausted);
	budget_update(&b, TR + 1400 * USEC_PER_MSEC, 10000); /* 9000: not yet */
	assert_true(b.tokens_usec == 9000);
	assert_true(b.exhausted);
	assert_int_equal(budget_usec_until_resume(&b), 100 * USEC_PER_MSEC);
	budget_update(&b, TR + 1500 * USEC_PER_MSEC, 10000);
	assert_false(b.exhausted);
}

/* Days of on/off running: the CPU spent never exceeds what the bucket was
 * given (initial tokens + fill), beyond the one step that a freeze takes to
 * land, and the long-run share converges on CPU. */
static void test_long_run_never_overspends(void **state)
{
	const uint64_t step = 100 * USEC_PER_MSEC;
	const unsigned ncpus = 2;
	const uint64_t max_step_spend = 500000ULL * ncpus * step / USEC_PER_SEC;
	struct budget b;
	uint64_t now = T0, usage = 0, rate, fill_total = 0, wall, resets = 0, base = 0;
	int64_t initial;
	bool owner_here = false;
	unsigned cycles = 0;
	bool was_exhausted;

	budget_init(&b, 10000, 500000, 10 * MIN_USEC, ncpus, 3000000, T0, 0);
	initial = b.tokens_usec;
	rate = budget_rate_usec_per_sec(&b);
	was_exhausted = b.exhausted;
	for (wall = 0; wall < 2 * DAY_USEC; wall += step) {
		uint64_t prev = now;

		now += step;
		fill_total += ref_fill(rate, prev, now);
		/* The owner comes and goes; jobs run only while the budget allows
		 * and the owner is away, at up to Burst. */
		if (rnd() % 3000 == 0)
			owner_here = !owner_here;
		if (!b.exhausted && !owner_here)
			usage += rnd() % (max_step_spend + 1);
		/* Now and then the jobs cgroup is recreated: its counter restarts. */
		if (rnd() % 200000 == 0) {
			base = usage;
			resets++;
		}
		budget_update(&b, now, usage - base);
		if (b.exhausted && !was_exhausted)
			cycles++;
		was_exhausted = b.exhausted;
		assert_true(b.spent_total_usec <= (uint64_t)initial + fill_total + max_step_spend);
		assert_true(b.tokens_usec <= b.capacity_usec);
	}
	print_message("  %.0f h simulated, %u exhaustions, %llu counter resets: spent %.3f s of CPU, "
		      "given %.3f s (initial %.3f + fill %.3f), share %.4f%% of the machine\n",
		      (double)wall / HOUR_USEC, cycles, (unsigned long long)resets,
		      (double)b.spent_total_usec / USEC_PER_SEC, (double)(initial + (int64_t)fill_total) / USEC_PER_SEC,
		      (double)initial / USEC_PER_SEC, (double)fill_total / USEC_PER_SEC,
		      100.0 * (double)b.spent_total_usec / ((double)wall * ncpus));
	assert_true(cycles > 10);
	/* The jobs always want to run, so the share ends close to CPU=1%, never above. */
	assert_true(b.spent_total_usec <= (uint64_t)initial + fill_total + max_step_spend);
	assert_true(b.spent_total_usec * 100 >= ((uint64_t)initial + fill_total) * 90);
}

/* However the time is sliced, the fill is the same: no rounding drift. */
static void test_no_drift(void **state)
{
	struct budget a, b;
	uint64_t now = T0;

	budget_init(&a, 7, 500000, 30 * DAY_USEC, 3, 0, T0, 0);  /* 21 usec/s */
	budget_init(&b, 7, 500000, 30 * DAY_USEC, 3, 0, T0, 0);
	for (int i = 0; i < 300000; i++) {
		now += 1 + rnd() % 20000; /* 1 us to 20 ms: each step earns less than 1 usec */
		budget_update(&a, now, 0);
	}
	budget_update(&b, now, 0);
	assert_true(a.tokens_usec == b.tokens_usec);
	assert_true((uint64_t)a.tokens_usec == ref_fill(21, T0, now));
	print_message("  %.0f s in 300000 steps: %lld tokens, one step gives %lld\n",
		      (double)(now - T0) / USEC_PER_SEC, (long long)a.tokens_usec, (long long)b.tokens_usec);
}

static void test_capacity_clamps_and_no_overflow(void **state)
{
	struct budget b;
	uint64_t late = 10 * 366 * DAY_USEC; /* ten years of uptime */

	budget_init(&b, 10000, 500000, HOUR_USEC, 1, 0, T0, 0);
	budget_update(&b, T0 + 7 * DAY_USEC, 0);
	assert_true(b.tokens_usec == 36000000);  /* a week idle holds only Window worth */
	budget_update(&b, UINT64_MAX / 2, 0);     /* centuries: still no overflow */
	assert_true(b.tokens_usec == b.capacity_usec);
	assert_false(b.exhausted);

	/* 100% of 1024 CPUs, Window=30d, ten years into the monotonic clock. */
	budget_init(&b, 1000000, 1000000, 30 * DAY_USEC, 1024, 0, late, 0);
	budget_update(&b, late + 29 * DAY_USEC + 1, 0);
	assert_true((uint64_t)b.tokens_usec == ref_fill(1024000000ULL, late, late + 29 * DAY_USEC + 1));
	budget_update(&b, late + 31 * DAY_USEC, 0);
	assert_true(b.tokens_usec == b.capacity_usec);
	assert_true(b.capacity_usec == 1024LL * 1000000 * 30 * 86400);
	/* Spend it all at 1024 CPUs for 30 days in one update. */
	budget_update(&b, late + 31 * DAY_USEC, (uint64_t)b.capacity_usec);
	assert_true(b.tokens_usec == 0);
	assert_true(b.exhausted);
	assert_true(b.spent_total_usec == (uint64_t)b.capacity_usec);

	/* Initial tokens above capacity (a ledger from a larger Window) are clamped. */
	budget_init(&b, 10000, 500000, MIN_USEC, 1, 999999999, T0, 0);
	assert_true(b.tokens_usec == 600000);
}

static void test_reconfigure_keeps_tokens(void **state)
{
	struct budget b;
	uint64_t period;

	budget_init(&b, 10000, 500000, HOUR_USEC, 2, 5000000, T0, 0);
	budget_reconfigure(&b, 20000, 600000, 2 * HOUR_USEC);
	assert_true(b.tokens_usec == 5000000);
	assert_true(b.capacity_usec == 40000LL * 7200);
	assert_int_equal(budget_rate_usec_per_sec(&b), 40000);
	assert_int_equal(budget_cpu_max(&b, &period), 117600);
	budget_update(&b, T0 + USEC_PER_SEC, 0); /* fills at the new rate */
	assert_true(b.tokens_usec == 5040000);

	/* A smaller Window clamps. */
	budget_reconfigure(&b, 10000, 500000, MIN_USEC);
	assert_true(b.tokens_usec == 1200000);
	assert_false(b.exhausted);

	/* Exhausted stays exhausted across a reconfigure that keeps tokens low. */
	budget_update(&b, T0 + USEC_PER_SEC, 1200000);
	assert_true(b.exhausted);
	budget_reconfigure(&b, 10000, 500000, HOUR_USEC);
	assert_true(b.exhausted);
	assert_true(b.tokens_usec == 0);
}

static void test_usage_backwards_and_clock(void **state)
{
	struct budget b;

	budget_init(&b, 10000, 500000, HOUR_USEC, 1, 1000000, T0, 1000);
	budget_update(&b, T0, 1500);
	assert_true(b.tokens_usec == 999500);
	assert_true(b.spent_total_usec == 500);
	budget_update(&b, T0, 200);   /* the cgroup was recreated */
	assert_true(b.tokens_usec == 999500);
	assert_true(b.last_usage_usec == 200);
	budget_update(&b, T0, 300);   /* counts from the new baseline */
	assert_true(b.tokens_usec == 999400);
	assert_true(b.spent_total_usec == 600);

	/* A clock that goes backwards fills nothing and fills no span twice. */
	budget_update(&b, T0 + 10 * USEC_PER_SEC, 300);
	assert_true(b.tokens_usec == 999400 + 100000);
	budget_update(&b, T0 + 5 * USEC_PER_SEC, 300);
	assert_true(b.tokens_usec == 1099400);
	budget_update(&b, T0 + 11 * USEC_PER_SEC, 300);
	assert_true(b.tokens_usec == 1109400);
}

static void test_charge(void **state)
{
	struct budget b;

	budget_init(&b, 10000, 500000, HOUR_USEC, 1, 30000, TR, 0);
	assert_false(b.exhausted);
	budget_charge(&b, 25000);
	assert_true(b.tokens_usec == 5000);
	assert_true(b.spent_total_usec == 25000);
	assert_false(b.exhausted);
	budget_charge(&b, 6000);
	assert_true(b.tokens_usec == -1000);
	assert_true(b.exhausted);
	/* The debt is repaid before it resumes: 11000 usec at 10000 usec/s. */
	assert_int_equal(budget_usec_until_resume(&b), 1100 * USEC_PER_MSEC);
}

/* usec_until_resume is exact for any rate and any clock phase. */
static void test_until_resume_exact(void **state)
{
	for (int i = 0; i < 20000; i++) {
		struct budget b, c;
		uint32_t ppm = 1 + (uint32_t)(rnd() % 1000000);
		unsigned ncpus = 1 + (unsigned)(rnd() % 64);
		uint64_t now = rnd() % (100 * DAY_USEC), d;

		budget_init(&b, ppm, 1000000, 1 + rnd() % (30 * DAY_USEC), ncpus,
			    -(int64_t)(rnd() % 100000000), now, 0);
		if (b.capacity_usec < 1)
			continue;
		assert_true(b.exhausted);
		d = budget_usec_until_resume(&b);
		assert_true(d > 0);
		c = b;
		budget_update(&c, now + d - 1, 0);
		assert_true(c.exhausted);
		c = b;
		budget_update(&c, now + d, 0);
		if (c.exhausted)
			fail_msg("ppm %u ncpus %u now %llu tokens %lld: not resumed after %llu", ppm, ncpus,
				 (unsigned long long)now, (long long)b.tokens_usec, (unsigned long long)d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rates_and_quota),
		cmocka_unit_test(test_fresh_bucket_waits_resume),
		cmocka_unit_test(test_steady_at_fill_rate),
		cmocka_unit_test(test_burst_exhausts_on_time),
		cmocka_unit_test(test_hysteresis),
		cmocka_unit_test(test_long_run_never_overspends),
		cmocka_unit_test(test_no_drift),
		cmocka_unit_test(test_capacity_clamps_and_no_overflow),
		cmocka_unit_test(test_reconfigure_keeps_tokens),
		cmocka_unit_test(test_usage_backwards_and_clock),
		cmocka_unit_test(test_charge),
		cmocka_unit_test(test_until_resume_exact),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
