/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The CPU budget: a token bucket in microseconds of CPU time. It fills at
 * CPU share x ncpus x wall time and holds at most Window worth. Spending is
 * the kernel's cpu.stat usage_usec of jobs/, never an estimate. While it has
 * tokens the jobs may run at Burst; when it is empty the budget is exhausted
 * (jobs frozen) until it has refilled for RESUME_USEC of wall time, so the
 * long-run share converges on CPU. Pure: the clock and the usage are inputs.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define BUDGET_RESUME_USEC (1 * 1000000ULL) /* refill this long before thawing an exhausted budget */
#define BUDGET_CPU_PERIOD_USEC 100000ULL    /* cpu.max period */
#define BUDGET_CPU_MAX_AIM_PCT 98ULL        /* cpu.max quota, percent of Burst */

struct budget {
	uint32_t cpu_ppm, burst_ppm;
	unsigned ncpus;
	int64_t  capacity_usec;    /* CPU x ncpus x Window */
	int64_t  tokens_usec;      /* may dip below 0 by what was spent before a freeze took */
	uint64_t last_now_usec;    /* monotonic time of the last update */
	uint64_t last_usage_usec;  /* cpu.stat usage_usec at the last update */
	uint64_t spent_total_usec; /* all CPU spent by jobs, ever (persisted) */
	bool     exhausted;
};

/* Start a bucket with tokens_usec (a fresh ledger starts empty: 0), clamped
 * to the capacity; it starts exhausted unless it holds the resume level.
 * spent_total_usec starts at 0: set it from the ledger after init. */
void budget_init(struct budget *b, uint32_t cpu_ppm, uint32_t burst_ppm, uint64_t window_usec,
		 unsigned ncpus, int64_t tokens_usec, uint64_t now_usec, uint64_t usage_usec);
/* New CPU/Burst/Window (SIGHUP): keeps the tokens, clamped to the new capacity. */
void budget_reconfigure(struct budget *b, uint32_t cpu_ppm, uint32_t burst_ppm, uint64_t window_usec);
/* Fill for the time since the last update, spend the usage since then (a
 * usage that went backwards, as after the cgroup was recreated, spends 0
 * and resets the baseline), then update exhausted with hysteresis. */
void budget_update(struct budget *b, uint64_t now_usec, uint64_t usage_usec);
/* Charge CPU time that the kernel can no longer tell us (spent before a crash). */
void budget_charge(struct budget *b, uint64_t usec);
/* cpu.max for jobs/: a quota of 98 % of Burst x ncpus per
 * BUDGET_CPU_PERIOD_USEC, or per 1 s where that would be under the kernel's
 * 1 ms minimum (and then at least 1 ms). Returns the quota; sets the period. */
uint64_t budget_cpu_max(const struct budget *b, uint64_t *ret_period_usec);
/* Fill rate in CPU-usec per wall second. */
uint64_t budget_rate_usec_per_sec(const struct budget *b);
/* When exhausted: wall usec after the last update at which an update with
 * no further usage resumes it (exact to the usec); else 0. */
uint64_t budget_usec_until_resume(const struct budget *b);
