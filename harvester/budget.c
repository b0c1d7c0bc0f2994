/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The CPU budget's token bucket. All arithmetic is integer and bounded for
 * Window <= 30 d, up to 2^24 CPUs and years of monotonic time: products are
 * split at one second (the rate is in CPU-usec per wall second) so that no
 * intermediate exceeds 2^63.
 *
 * Rounding never drifts: the fill from t0 to t1 is exactly
 * floor(rate x t1 / 1e6) - floor(rate x t0 / 1e6), so the fills of any run
 * of updates add up to the fill of the whole span, however they are sliced.
 */
#include "harvester/budget.h"

#include "harvester/macro.h"

/* CPU-usec per wall second: 1 ppm of one CPU is 1 usec per second. */
static uint64_t rate_of(uint32_t ppm, unsigned ncpus)
{
	return (uint64_t)ppm * (ncpus > 0 ? ncpus : 1);
}

static int64_t capacity_of(uint64_t rate, uint64_t window_usec)
{
	uint64_t secs = window_usec / USEC_PER_SEC, rest = window_usec % USEC_PER_SEC;
	uint64_t cap;

	if (rate != 0 && secs > (uint64_t)INT64_MAX / 2 / rate)
		return INT64_MAX / 2;
	cap = rate * secs + rate * rest / USEC_PER_SEC;
	return cap > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)cap;
}

/* The tokens earned from t0 to t0 + dt, exactly as the telescoping
 * floor(rate x t / 1e6) gives them, saturating at limit. */
static uint64_t fill_between(uint64_t rate, uint64_t t0, uint64_t dt, uint64_t limit)
{
	/* (rate x t0) mod 1e6, without forming rate x t0 */
	uint64_t r0 = (rate % USEC_PER_SEC) * (t0 % USEC_PER_SEC) % USEC_PER_SEC;
	uint64_t secs = dt / USEC_PER_SEC, rest = dt % USEC_PER_SEC;

	if (rate == 0)
		return 0;
	if (secs >= limit / rate)
		return limit; /* a long sleep: the bucket is full anyway */
	return rate * secs + (r0 + rate * rest) / USEC_PER_SEC;
}

static int64_t add_sat(int64_t a, int64_t b)
{
	int64_t r;

	if (__builtin_add_overflow(a, b, &r))
		return b > 0 ? INT64_MAX : INT64_MIN;
	return r;
}

/* Tokens needed to thaw an exhausted bucket: the fill of BUDGET_RESUME_USEC,
 * never more than the bucket holds. */
static int64_t resume_level(const struct budget *b)
{
	int64_t lvl = (int64_t)(rate_of(b->cpu_ppm, b->ncpus) * BUDGET_RESUME_USEC / USEC_PER_SEC);

	return lvl < b->capacity_usec ? lvl : b->capacity_usec;
}

static void update_exhausted(struct budget *b)
{
	if (b->tokens_usec <= 0)
		b->exhausted = true;
	else if (b->exhausted && b->tokens_usec >= resume_level(b))
		b->exhausted = false;
}

void budget_init(struct budget *b, uint32_t cpu_ppm, uint32_t burst_ppm, uint64_t window_usec,
		 unsigned ncpus, int64_t tokens_usec, uint64_t now_usec, uint64_t usage_usec)
{
	*b = (struct budget) {
		.cpu_ppm = cpu_ppm,
		.burst_ppm = burst_ppm,
		.ncpus = ncpus > 0 ? ncpus : 1,
		.last_now_usec = now_usec,
		.last_usage_usec = usage_usec,
	};
	b->capacity_usec = capacity_of(rate_of(cpu_ppm, b->ncpus), window_usec);
	b->tokens_usec = tokens_usec < b->capacity_usec ? tokens_usec : b->capacity_usec;
	/* A bucket that starts empty waits for RESUME_USEC of fill, like any other. */
	b->exhausted = b->tokens_usec < resume_level(b);
}

void budget_reconfigure(struct budget *b, uint32_t cpu_ppm, uint32_t burst_ppm, uint64_t window_usec)
{
	b->cpu_ppm = cpu_ppm;
	b->burst_ppm = burst_ppm;
	b->capacity_usec = capacity_of(rate_of(cpu_ppm, b->ncpus), window_usec);
	if (b->tokens_usec > b->capacity_usec)
		b->tokens_usec = b->capacity_usec;
	update_exhausted(b);
}

void budget_update(struct budget *b, uint64_t now_usec, uint64_t usage_usec)
{
	if (now_usec > b->last_now_usec) {
		uint64_t fill = fill_between(rate_of(b->cpu_ppm, b->ncpus), b->last_now_usec,
					     now_usec - b->last_now_usec, (uint64_t)INT64_MAX / 2);

		b->tokens_usec = add_sat(b->tokens_usec, (int64_t)fill);
		b->last_now_usec = now_usec;
	}
	/* A clock that went backwards fills nothing and keeps the later time, so
	 * no interval is ever filled twice. */

	if (usage_usec >= b->last_usage_usec) {
		uint64_t spent = usage_usec - b->last_usage_usec;

		b->spent_total_usec += spent;
		b->tokens_usec = add_sat(b->tokens_usec, spent > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)spent);
	}
	/* Else the cgroup was recreated and its counter restarted: spend
	 * nothing, count from the new baseline. */
	b->last_usage_usec = usage_usec;

	/* Clamp after spending: the usage was spread over the interval, during
	 * which the bucket was below full and kept filling. */
	if (b->tokens_usec > b->capacity_usec)
		b->tokens_usec = b->capacity_usec;
	update_exhausted(b);
}

void budget_charge(struct budget *b, uint64_t usec)
{
	b->spent_total_usec += usec;
	b->tokens_usec = add_sat(b->tokens_usec, usec > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)usec);
	update_exhausted(b);
}

uint64_t budget_cpu_max(const struct budget *b, uint64_t *ret_period_usec)
{
	/* Aimed a little under the cap: the kernel enforces cpu.max at tick
	 * granularity, so a small quota overruns by a few percent (1.03x over
	 * 10 s at 1 % of 2 CPUs with the quota at exactly the cap). */
	uint64_t per_sec = (uint64_t)b->burst_ppm * b->ncpus * USEC_PER_SEC * BUDGET_CPU_MAX_AIM_PCT / (PPM_ONE * 100);
	uint64_t q = per_sec / (USEC_PER_SEC / BUDGET_CPU_PERIOD_USEC);

	/* The kernel refuses a quota under 1 ms (EINVAL): a tiny cap takes
	 * the longest period it allows, 1 s, and at least 1 ms of it. */
	if (q >= 1000) {
		*ret_period_usec = BUDGET_CPU_PERIOD_USEC;
		return q;
	}
	*ret_period_usec = USEC_PER_SEC;
	return per_sec < 1000 ? 1000 : per_sec;
}

uint64_t budget_rate_usec_per_sec(const struct budget *b)
{
	return rate_of(b->cpu_ppm, b->ncpus);
}

uint64_t budget_usec_until_resume(const struct budget *b)
{
	uint64_t rate = rate_of(b->cpu_ppm, b->ncpus), need, q, rem, r0;
	int64_t x, extra;

	if (!b->exhausted)
		return 0;
	if (b->tokens_usec >= resume_level(b))
		return 1; /* thaws at the next update */
	need = (uint64_t)(resume_level(b) - b->tokens_usec);
	/* Smallest dt with fill_between(last, dt) >= need, i.e.
	 * r0 + rate x dt >= need x 1e6, split so nothing overflows. */
	r0 = (rate % USEC_PER_SEC) * (b->last_now_usec % USEC_PER_SEC) % USEC_PER_SEC;
	q = need / rate;
	rem = need % rate;
	if (q > UINT64_MAX / USEC_PER_SEC / 2)
		return UINT64_MAX;
	x = (int64_t)(rem * USEC_PER_SEC) - (int64_t)r0;
	/* ceil(x / rate) for either sign of x; q >= 1 when x < 0, so the sum stays positive */
	extra = x >= 0 ? (x + (int64_t)rate - 1) / (int64_t)rate : -((-x) / (int64_t)rate);
	return (uint64_t)((int64_t)(q * USEC_PER_SEC) + extra);
}
