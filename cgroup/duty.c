/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The freezer duty cycle: a CPU cap kept with cgroup.freeze where the cpu
 * controller (cpu.max) is missing. Pure logic; the caller reads cpu.stat,
 * calls duty_step, freezes or thaws, and sleeps until the returned time.
 *
 * Each period is thawed first, frozen after: it starts thawed with a budget
 * (the period's allowance, less the debt carried in, less the CPU a freeze
 * is expected to let through) and is frozen when the budget is spent at the
 * measured rate (looked at again halfway, and again if the job turns out
 * slower than planned).
 * At the end of the period the usage actually spent (freeze spill and late
 * wake-ups included) is compared with the allowance for the time that really
 * passed, and the difference is the debt the next period pays. Over whole
 * periods the usage therefore converges on the cap; what is left is one
 * period's spill jitter.
 *
 * Choosing the period (DUTY_ON_TARGET_USEC, clamped to [100 ms, 1 s]):
 * freezing takes 1.3-3.6 ms (p50) and up to 8 ms (p99) on the project's
 * machines, so an on-time near that is all noise; a long period makes the
 * job's bursts visible and lets the usage at an arbitrary moment run ahead
 * of the cap by up to one period's allowance. Aiming at 30 ms of on-time when
 * every CPU is busy (the worst case; a job with fewer threads gets longer)
 * gives: cap 1 % -> 1 s (10 ms on at 2 of 2 CPUs busy, 20 ms at 1), 3 % -> 1 s,
 * 5 % -> 600 ms, 10 % -> 300 ms, 25 % -> 120 ms, >= 30 % -> 100 ms. The p50
 * freeze spill is then 5-15 % of one period's budget, and its jitter (up to
 * 8 ms per busy CPU) is what a window of whole periods can go over by:
 * under 1 % of a 10 s window at caps >= 5 % on 2 CPUs, up to 8 % at 1 %.
 * Inside a period the usage runs ahead by up to one period's allowance, i.e.
 * period/10 s of a 10 s window: 10 % at caps <= 3 %, 6 % at 5 %, 1 % at
 * caps >= 30 %. Simulated (tests/unit/test-duty.c) the usage from the start
 * to a period end is within 1 % of the cap after 10 s and 60 s.
 */
#include <stdint.h>

#include "cgroup/cgroup.h"
#include "harvester/macro.h"

#define DUTY_ON_TARGET_USEC   30000ULL
#define DUTY_PERIOD_MIN_USEC  100000ULL
#define DUTY_PERIOD_MAX_USEC  1000000ULL
/* Unused allowance carried into the next period is capped at 100 ms worth of
 * the cap (1 % of a 10 s window): enough to make up a period cut short by a
 * wrong rate guess, too little to save up a burst while the job idled. */
#define DUTY_CREDIT_USEC      100000ULL
/* The job keeps running while a freeze lands (1.3-3.6 ms p50): plan to spend
 * that much less, so the usage at a period's end sits on the cap instead of
 * one spill above it. The debt corrects whatever the guess gets wrong. */
#define DUTY_SPILL_USEC       3000ULL
/* Credit must at least absorb a spill shorter than guessed (up to 8 ms), or
 * the clipping would lose allowance every period. */
#define DUTY_SPILL_MAX_USEC   8000ULL
/* Thawing for less than a freeze takes (about 2 ms) buys nothing that the
 * debt would not take back: freeze now and carry the remainder. */
#define DUTY_MIN_SLICE_USEC   2000ULL
/* A job seen idle while thawed must not get an unbounded on-time: plan as if
 * it used at least this many CPUs, and look again when that time is up. */
#define DUTY_RATE_MIN         0.05
/* Nor is a thawed job left alone longer than this: a job that idled (a low
 * measured rate) and turns busy can overrun its budget by at most ncpus x
 * 100 ms before the next look, at the price of up to 10 wake-ups a second
 * while it idles thawed. A busy job's on-time is shorter than this anyway. */
#define DUTY_CHECK_USEC       100000ULL
/* Other load changes the job's speed between looks, and a thaw planned at
 * the old speed overruns when it doubles. Look again halfway through any
 * planned on-time longer than this, so the last stretch, the one that can
 * overrun, is short. About doubles the wake-ups (up to ~45/s at 50 %); in a
 * simulation whose speed swings 4x every 20 ms it cut the worst 10 s window
 * at a 5 % cap from 4.7 % over to 1.2 %. */
#define DUTY_LOOK_USEC        10000ULL
/* Below this the measurement is mostly thaw latency: do not learn from it. */
#define DUTY_RATE_SAMPLE_USEC 1000ULL

static double cap_cpus(const struct duty *d) {
	return (double) d->cap_ppm * d->ncpus / PPM_ONE;
}

static void learn_rate(struct duty *d, uint64_t used_usec, uint64_t elapsed_usec) {
	double r;

	if (elapsed_usec < DUTY_RATE_SAMPLE_USEC)
		return;
	r = (double) used_usec / (double) elapsed_usec;
	if (r > d->ncpus)
		r = d->ncpus;
	/* Up at once, down by halves: an underestimate overshoots the cap. */
	d->rate_cpus = r > d->rate_cpus ? r : (d->rate_cpus + r) / 2;
	if (d->rate_cpus < DUTY_RATE_MIN)
		d->rate_cpus = DUTY_RATE_MIN;
}

void duty_init(struct duty *d, uint64_t cap_ppm, unsigned ncpus, uint64_t now_usec, uint64_t usage_usec) {
	double frac;
	uint64_t period;

	if (ncpus == 0)
		ncpus = 1;
	if (cap_ppm > PPM_ONE)
		cap_ppm = PPM_ONE;
	frac = (double) cap_ppm / PPM_ONE;
	period = frac > 0 ? (uint64_t) (DUTY_ON_TARGET_USEC / frac) : DUTY_PERIOD_MAX_USEC;
	if (period < DUTY_PERIOD_MIN_USEC)
		period = DUTY_PERIOD_MIN_USEC;
	if (period > DUTY_PERIOD_MAX_USEC)
		period = DUTY_PERIOD_MAX_USEC;

	*d = (struct duty) {
		.cap_ppm = cap_ppm,
		.ncpus = ncpus,
		.period_usec = period,
		/* The first period starts now, thawed; duty_step decides. */
		.period_start_usec = now_usec,
		.usage_at_start_usec = usage_usec,
		.debt_usec = 0,
		/* Assume every CPU busy until measured: the first on-time is the
		 * shortest, and a slower job is extended at the planned freeze. */
		.rate_cpus = ncpus,
		.frozen = false,
	};
}

/* Inside a period: keep it thawed while budget is left, else freeze it until
 * the period ends. */
static uint64_t plan(struct duty *d, uint64_t now, uint64_t used, bool *ret_frozen) {
	uint64_t end = d->period_start_usec + d->period_usec;
	double budget = cap_cpus(d) * (double) d->period_usec - (double) d->debt_usec;
	double left = budget - (double) used - d->rate_cpus * DUTY_SPILL_USEC;
	double t;

	if (left > 0) {
		t = left / d->rate_cpus;
		if (t >= DUTY_MIN_SLICE_USEC) {
			d->frozen = false;
			*ret_frozen = false;
			if (t > DUTY_LOOK_USEC && t < (double) (end - now))
				t = t / 2 > DUTY_LOOK_USEC ? t / 2 : DUTY_LOOK_USEC;
			if (t > DUTY_CHECK_USEC)
				t = DUTY_CHECK_USEC;
			if (t >= (double) (end - now))
				return end;
			return now + (uint64_t) t;
		}
	}
	d->frozen = true;
	*ret_frozen = true;
	return end;
}

uint64_t duty_step(struct duty *d, uint64_t now_usec, uint64_t usage_usec, bool *ret_frozen) {
	uint64_t end, elapsed, used;
	double allowance, debt, credit_max;

	if (d->cap_ppm == 0 || d->cap_ppm >= PPM_ONE) {
		d->frozen = d->cap_ppm == 0;
		*ret_frozen = d->frozen;
		d->period_start_usec = now_usec;
		d->usage_at_start_usec = usage_usec;
		return now_usec + d->period_usec;
	}

	/* A counter that went backwards means a new cgroup: start afresh. */
	if (usage_usec < d->usage_at_start_usec || now_usec < d->period_start_usec) {
		d->period_start_usec = now_usec;
		d->usage_at_start_usec = usage_usec;
		d->debt_usec = 0;
		return plan(d, now_usec, 0, ret_frozen);
	}

	end = d->period_start_usec + d->period_usec;
	used = usage_usec - d->usage_at_start_usec;
	elapsed = now_usec - d->period_start_usec;

	if (now_usec < end) {
		if (d->frozen) {
			/* Called early in the frozen part: nothing to decide. */
			*ret_frozen = true;
			return end;
		}
		/* The planned freeze point: thawed since the period began. */
		learn_rate(d, used, elapsed);
		return plan(d, now_usec, used, ret_frozen);
	}

	/* The period is over: settle it against the time that really passed. */
	if (!d->frozen)
		learn_rate(d, used, elapsed);
	allowance = cap_cpus(d) * (double) elapsed;
	debt = (double) d->debt_usec + (double) used - allowance;
	credit_max = cap_cpus(d) * (double) DUTY_CREDIT_USEC;
	if (credit_max < d->rate_cpus * DUTY_SPILL_MAX_USEC)
		credit_max = d->rate_cpus * DUTY_SPILL_MAX_USEC;
	if (debt < -credit_max)
		debt = -credit_max;
	if (debt > (double) INT64_MAX / 2)
		debt = (double) INT64_MAX / 2;
	d->debt_usec = (int64_t) debt;
	d->period_start_usec = now_usec;
	d->usage_at_start_usec = usage_usec;
	return plan(d, now_usec, 0, ret_frozen);
}
