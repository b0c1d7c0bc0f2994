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
 * What a window of the usage sees: the usage runs ahead of the cap right
 * after each burst and behind it right before the next, by up to one burst,
 * so any window (10 s, say) is off by up to one burst against its own
 * allowance: period / window when the burst is one period's allowance. The
 * period is therefore short, 100 ms (1 % of a 10 s window), at every cap;
 * where one period's allowance is less than a thaw is worth (cap 1 % of 2
 * busy CPUs: 2 ms of CPU) the debt makes the cycle skip periods: short
 * bursts, as often as the cap allows. The spill (what the jobs use from the
 * freeze decision until the freeze lands, 0.1-0.5 ms per busy CPU measured
 * on the project's 2-core machine, 1.3-3.6 ms on others) is learned, and so
 * is how late the caller wakes for a planned freeze, which is then asked
 * for that much earlier.
 *
 * Aim: 98 % of the cap. Any window is off by up to about one burst either
 * way, and a cap is a ceiling: aiming 2 % under keeps 10 s windows between
 * 0.95 and 1.01 of the cap where aiming at 1.00 would put every unlucky
 * window over it. The long run converges on 0.98.
 *
 * The price of a short period is wake-ups: 2 per period while the jobs run
 * (thaw, freeze), more when an on-time is long enough to be looked at
 * halfway: 20-50 a second. Measured on the 2-core machine at a 1 % cap,
 * the daemon used 0.3 % of one core harvesting (0.07 % with the 1-s period
 * this replaced, which held 10 s windows only to within 4-8 %).
 */
#include <stdint.h>

#include "cgroup/cgroup.h"
#include "harvester/macro.h"

#define DUTY_PERIOD_USEC      100000ULL
/* The share of the cap aimed at, ppm (see above). */
#define DUTY_AIM_PPM          980000ULL
/* Unused allowance carried into the next period is capped at 100 ms worth of
 * the cap (1 % of a 10 s window): enough to make up a period cut short by a
 * wrong rate guess, too little to save up a burst while the job idled. */
#define DUTY_CREDIT_USEC      100000ULL
/* The job keeps running while a freeze lands (1.3-3.6 ms p50): plan to spend
 * that much less, so the usage at a period's end sits on the cap instead of
 * one spill above it. This is the first guess per busy CPU; the cycle then
 * learns it from each freeze, and the debt corrects what is left. */
#define DUTY_SPILL_USEC       3000.0
/* Credit must at least absorb a spill shorter than guessed (up to 8 ms), or
 * the clipping would lose allowance every period. Also the reserve kept in
 * the budget's bucket against a late freeze. */
#define DUTY_SPILL_MAX_USEC   8000ULL
/* A spill sample above this is an outlier (a stalled machine): learned at
 * this value, and the debt takes back the rest. */
#define DUTY_LEARN_MAX_USEC   20000.0
/* Lateness is learned to ask for a freeze earlier, so an outlier (a wake-up
 * tens of ms late, seen on a loaded 2-core VM) must not move every later
 * freeze: samples count up to this (typical lateness there: 2-7 ms). */
#define DUTY_LATE_MAX_USEC    5000.0
/* Thawing for less than this buys little: a wake-up costs the daemon about
 * as much, and the caller's timer is not that exact. Freeze now and carry
 * the remainder (the debt turns it into a longer slice later). */
#define DUTY_MIN_SLICE_USEC   500ULL
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
/* cpu.stat counts a running task's time at the scheduler tick (up to 4 ms
 * late at HZ=250, 10 ms at HZ=100), so a reading taken less than this long
 * into a thawed stretch says little: the job seems slower than it is, and
 * trusting that extends its on-time beyond the budget. Such a look assumes
 * the known rate instead, and learns nothing. */
#define DUTY_TRUST_USEC       10000ULL

/* The CPUs the cycle aims to give the jobs: DUTY_AIM_PPM of the cap. */
static double aim_cpus(const struct duty *d) {
	return (double) d->cap_ppm * d->ncpus / PPM_ONE * (double) DUTY_AIM_PPM / PPM_ONE;
}

static void learn_rate(struct duty *d, uint64_t used_usec, uint64_t elapsed_usec) {
	double r;

	if (elapsed_usec < DUTY_TRUST_USEC)
		return;
	r = (double) used_usec / (double) elapsed_usec;
	if (r > d->ncpus)
		r = d->ncpus;
	/* Up at once, down by halves: an underestimate overshoots the cap. */
	d->rate_cpus = r > d->rate_cpus ? r : (d->rate_cpus + r) / 2;
	if (d->rate_cpus < DUTY_RATE_MIN)
		d->rate_cpus = DUTY_RATE_MIN;
}

/* An exponential average with weight 1/4: a few periods to follow a change,
 * one outlier moves it by a quarter. */
static void learn(double *avg, double sample, double max) {
	if (sample < 0)
		sample = 0;
	if (sample > max)
		sample = max;
	*avg += (sample - *avg) / 4;
}

void duty_init(struct duty *d, uint64_t cap_ppm, unsigned ncpus, uint64_t now_usec, uint64_t usage_usec) {
	if (ncpus == 0)
		ncpus = 1;
	if (cap_ppm > PPM_ONE)
		cap_ppm = PPM_ONE;

	*d = (struct duty) {
		.cap_ppm = cap_ppm,
		.ncpus = ncpus,
		.period_usec = DUTY_PERIOD_USEC,
		/* The first period starts now, thawed; duty_step decides. */
		.period_start_usec = now_usec,
		.usage_at_start_usec = usage_usec,
		.debt_usec = 0,
		/* Assume every CPU busy until measured: the first on-time is the
		 * shortest, and a slower job is extended at the planned freeze. */
		.rate_cpus = ncpus,
		.spill_usec = DUTY_SPILL_USEC,
		.late_usec = 0,
		.frozen = false,
	};
}

void duty_set_bucket(struct duty *d, int64_t tokens_usec, uint64_t fill_usec_per_sec) {
	d->has_bucket = true;
	d->bucket_tokens_usec = tokens_usec;
	d->bucket_fill_cpus = (double) fill_usec_per_sec / USEC_PER_SEC;
}

/* Inside a period: keep it thawed while budget is left, else freeze it until
 * the period ends. */
static uint64_t plan(struct duty *d, uint64_t now, uint64_t used, uint64_t usage, bool *ret_frozen) {
	uint64_t end = d->period_start_usec + d->period_usec;
	double spill = d->rate_cpus * d->spill_usec;
	double left = aim_cpus(d) * (double) d->period_usec - (double) d->debt_usec - (double) used;
	double t;

	if (d->has_bucket) {
		/* What the bucket holds now and fills by the period's end (aimed
		 * under, as the cap is, so that a bucket that binds fills up
		 * again), less a reserve for a freeze that lands late: the
		 * cycle's own overshoot must not empty it. */
		double room = (double) d->bucket_tokens_usec +
			      d->bucket_fill_cpus * (double) DUTY_AIM_PPM / PPM_ONE * (double) (end - now) -
			      d->rate_cpus * DUTY_SPILL_MAX_USEC;

		if (room < left)
			left = room;
		/* A bound is for one step: the caller sets it afresh each time. */
		d->has_bucket = false;
	}
	left -= spill;
	d->planned_usec = 0;
	if (left > 0) {
		t = left / d->rate_cpus;
		if (t >= DUTY_MIN_SLICE_USEC) {
			bool freeze_point = true;

			d->frozen = false;
			*ret_frozen = false;
			if (t > DUTY_LOOK_USEC && t < (double) (end - now)) {
				t = t / 2 > DUTY_LOOK_USEC ? t / 2 : DUTY_LOOK_USEC;
				freeze_point = false;
			}
			if (t > DUTY_CHECK_USEC) {
				t = DUTY_CHECK_USEC;
				freeze_point = false;
			}
			if (t >= (double) (end - now))
				return end;
			if (freeze_point) {
				/* The wake-up that freezes: ask for it as early as the
				 * caller tends to be late, so the job stops on time. */
				t -= d->late_usec;
				if (t < 1)
					t = 1;
				d->planned_usec = now + (uint64_t) t;
				return d->planned_usec;
			}
			return now + (uint64_t) t;
		}
	}
	if (!d->frozen && !d->froze) {
		/* Thawed until now: what runs from here to the period's end is
		 * the spill of this freeze. */
		d->froze = true;
		d->freeze_usage_usec = usage;
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
		d->has_bucket = false;
		return now_usec + d->period_usec;
	}

	if (d->planned_usec) {
		learn(&d->late_usec, (double) now_usec - (double) d->planned_usec, DUTY_LATE_MAX_USEC);
		d->planned_usec = 0;
	}

	/* A counter that went backwards means a new cgroup: start afresh. */
	if (usage_usec < d->usage_at_start_usec || now_usec < d->period_start_usec) {
		d->period_start_usec = now_usec;
		d->usage_at_start_usec = usage_usec;
		d->debt_usec = 0;
		d->froze = false;
		return plan(d, now_usec, 0, usage_usec, ret_frozen);
	}

	end = d->period_start_usec + d->period_usec;
	used = usage_usec - d->usage_at_start_usec;
	elapsed = now_usec - d->period_start_usec;

	if (now_usec < end) {
		if (d->frozen) {
			/* Called early in the frozen part: nothing to decide. */
			d->has_bucket = false;
			*ret_frozen = true;
			return end;
		}
		/* The planned freeze point: thawed since the period began. */
		if (elapsed < DUTY_TRUST_USEC) {
			double expect = d->rate_cpus * (double) elapsed;

			if ((double) used < expect)
				used = (uint64_t) expect;
		} else
			learn_rate(d, used, elapsed);
		return plan(d, now_usec, used, usage_usec, ret_frozen);
	}

	/* The period is over: settle it against the time that really passed. */
	if (!d->frozen)
		learn_rate(d, used, elapsed);
	if (d->froze && d->rate_cpus > 0)
		learn(&d->spill_usec, (double) (usage_usec - d->freeze_usage_usec) / d->rate_cpus, DUTY_LEARN_MAX_USEC);
	d->froze = false;
	allowance = aim_cpus(d) * (double) elapsed;
	debt = (double) d->debt_usec + (double) used - allowance;
	credit_max = aim_cpus(d) * (double) DUTY_CREDIT_USEC;
	if (credit_max < d->rate_cpus * DUTY_SPILL_MAX_USEC)
		credit_max = d->rate_cpus * DUTY_SPILL_MAX_USEC;
	if (debt < -credit_max)
		debt = -credit_max;
	if (debt > (double) INT64_MAX / 2)
		debt = (double) INT64_MAX / 2;
	d->debt_usec = (int64_t) debt;
	d->period_start_usec = now_usec;
	d->usage_at_start_usec = usage_usec;
	return plan(d, now_usec, 0, usage_usec, ret_frozen);
}
