/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Duty-cycle cap precision on the real hierarchy: a CPU-bound child (1 or 2
 * busy threads) runs under duty_step's decisions, applied with cg_freeze on
 * its parent jobs/ and timed with clock_nanosleep, at caps of 1 % (20 s),
 * 5 % and 25 % (10 s each) of the machine's CPUs. Measured with cpu.stat
 * usage_usec (cg_cpu_usage_usec):
 *
 *   used/cap = (usage at the first period end at or after the run's length
 *              - usage at the start) / (cap x CPUs x the wall time between)
 *
 * and, for 10 s windows that start and end anywhere (not at period ends),
 * the lowest and highest used/cap: the usage is sampled at every step and
 * again 15 ms after each freeze, once it has landed, so the curve between
 * samples is a straight line (thawed) or flat (frozen). Printed beside them:
 * the freezes, the share of the time thawed, the driver's latest wake-up,
 * and the spill (CPU used after a freeze was decided) the cycle learned.
 *
 * Asserted: the whole run within [0.93, 1.01] (the cycle aims at 0.98 of the
 * cap) and every 10 s window at or under 1.06. Those bounds are wider than
 * what a quiet machine gives (about 0.98 and 1.00-1.02; README, `make
 * bench`) because this one is shared: a wake-up of the driver 10-30 ms late,
 * seen under other load, is one freeze that lands 20-60 ms of CPU late,
 * 10-30 % of a 1 % cap's 10 s window, and the debt pays it back only after.
 * A shortfall while the job was thawed for as long as it needed at full
 * speed is other load's doing (the cap is a ceiling) and is reported, not
 * failed. The driver runs SCHED_FIFO (else nice -10), as a daemon whose
 * wake-ups must not queue behind its jobs.
 *
 * HARVESTER_DUTY_CASES="cap%:threads:seconds,...": other cases (for
 * measuring; the bounds then still apply).
 */
#include <sched.h>
#include <sys/resource.h>

#include "tests/host/cgroup-test.h"

#define SAMPLES_MAX 20000

struct figures {
	double ratio, w10_min, w10_max;
	double thawed_frac, need_frac;   /* share of the time thawed; share needed at full speed */
	unsigned freezes;
	uint64_t late_max_usec;          /* the driver's latest wake-up */
	uint64_t period_usec;
	double spill_usec, late_usec;    /* what the cycle learned */
};

static uint64_t st[SAMPLES_MAX], su[SAMPLES_MAX];

/* Usage at time t by linear interpolation between the samples. */
static double usage_at(size_t n, uint64_t t) {
	size_t lo = 0, hi = n - 1;

	if (t <= st[0])
		return (double) su[0];
	if (t >= st[hi])
		return (double) su[hi];
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;
		if (st[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	return (double) su[lo] + (double) (su[hi] - su[lo]) * (double) (t - st[lo]) / (double) (st[hi] - st[lo]);
}

static struct figures run_case(const char *jobs, const char *job, uint64_t cap_ppm, unsigned ncpus, int threads,
			       uint64_t seconds) {
	struct figures f = { .w10_min = 1e9 };
	struct duty d;
	uint64_t t_start, u_start, next, end, usage, last, thawed = 0, t_end = 0, u_end = 0, peek = 0;
	size_t n = 0;
	bool cur = false, frozen;
	double cap_cpus = (double) cap_ppm * ncpus / 1e6;
	pid_t child;

	CHECK_R(cg_create(job), 0);
	child = start_busy(job, threads);
	sleep_usec(50000);

	t_start = now_usec();
	CHECK_R(cg_cpu_usage_usec(jobs, &u_start), 0);
	duty_init(&d, cap_ppm, ncpus, t_start, u_start);
	f.period_usec = d.period_usec;
	end = t_start + seconds * 1000000;
	next = last = t_start;
	for (;;) {
		uint64_t now, before = d.period_start_usec;
		bool is_peek = peek && peek < next;

		sleep_until_usec(is_peek ? peek : next);
		now = now_usec();
		CHECK_R(cg_cpu_usage_usec(jobs, &usage), 0);
		if (n < SAMPLES_MAX) {
			st[n] = now;
			su[n++] = usage;
		}
		if (is_peek) {
			/* Only a sample of the usage once the freeze has landed. */
			peek = 0;
			continue;
		}
		if (now - next > f.late_max_usec)
			f.late_max_usec = now - next;
		if (!cur)
			thawed += now - last;
		last = now;
		next = duty_step(&d, now, usage, &frozen);
		if (d.period_start_usec != before && now >= end && !t_end) {
			t_end = now;
			u_end = usage;
			break;
		}
		if (frozen != cur) {
			CHECK_R(cg_freeze(jobs, frozen), 0);
			cur = frozen;
			f.freezes += frozen;
			if (frozen && now + 15000 < next)
				peek = now + 15000;
		}
	}
	CHECK_R(cg_freeze(jobs, true), 0);
	f.spill_usec = d.spill_usec;
	f.late_usec = d.late_usec;
	f.thawed_frac = (double) thawed / (double) (last - t_start);
	f.need_frac = cap_cpus / ((unsigned) threads < ncpus ? (unsigned) threads : ncpus);
	f.ratio = (double) (u_end - u_start) / (cap_cpus * (double) (t_end - t_start));
	/* The extremes of a piecewise linear curve's 10 s differences lie where
	 * one end of the window is at a sample. */
	for (size_t i = 0; i < n; i++) {
		uint64_t a[2] = { st[i], st[i] - 10000000 };

		for (int k = 0; k < 2; k++) {
			double r;

			if (a[k] < t_start || a[k] + 10000000 > t_end || st[i] < 10000000)
				continue;
			r = (usage_at(n, a[k] + 10000000) - usage_at(n, a[k])) / (cap_cpus * 10e6);
			if (r > f.w10_max)
				f.w10_max = r;
			if (r < f.w10_min)
				f.w10_min = r;
		}
	}
	if (getenv("HARVESTER_DUTY_TRACE")) {
		FILE *tf = fopen(getenv("HARVESTER_DUTY_TRACE"), "w");

		for (size_t i = 0; tf && i < n; i++)
			fprintf(tf, "%llu %llu\n", (unsigned long long) (st[i] - t_start), (unsigned long long) (su[i] - u_start));
		if (tf)
			fclose(tf);
	}
	CHECK_R(cg_kill(jobs), 0);
	/* On a loaded machine the child's exit path can wait seconds for a
	 * CPU, so give the reaping room. */
	CHECK(reap(child, 15000000) != -1);
	CHECK(wait_populated(jobs, false, 5000000));
	CHECK_R(cg_freeze(jobs, false), 0);
	CHECK_R(cg_remove(job), 0);
	printf("duty cap %.0f%% of %u CPUs (%.2f CPUs), %d busy thread%s, period %llu ms: used/cap %.4f over %.2f s, "
	       "10 s windows %.4f-%.4f; %u freezes, thawed %.1f%% of the time, wake-ups up to %.1f ms late; "
	       "learned spill %.2f ms, lateness %.3f ms; load %.2f\n",
	       cap_ppm / 1e4, ncpus, cap_cpus, threads, threads > 1 ? "s" : "",
	       (unsigned long long) f.period_usec / 1000, f.ratio, (t_end - t_start) / 1e6,
	       f.w10_min, f.w10_max, f.freezes, f.thawed_frac * 100, f.late_max_usec / 1e3,
	       f.spill_usec / 1e3, f.late_usec / 1e3, ({ double la[1] = { 0 }; getloadavg(la, 1); la[0]; }));
	fflush(stdout);
	return f;
}

struct tcase { uint64_t cap_ppm; int threads; uint64_t seconds; };

int main(void) {
	const char *base = test_setup("duty");
	char *jobs = join(base, "jobs"), *job = join(jobs, "j");
	long nc = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned ncpus = nc > 0 ? (unsigned) nc : 1;
	struct tcase cases[16] = {
		{ 10000, 2, 20 }, { 50000, 2, 10 }, { 250000, 1, 10 },
	};
	size_t ncases = 3;
	const char *env = getenv("HARVESTER_DUTY_CASES");
	int fail = 0;

	if (env && *env) {
		char *dup = strdup(env), *save = NULL;

		ncases = 0;
		for (char *tok = strtok_r(dup, ",", &save); tok && ncases < 16; tok = strtok_r(NULL, ",", &save)) {
			double cap;
			int th;
			unsigned long long sec;

			CHECK(sscanf(tok, "%lf%%:%d:%llu", &cap, &th, &sec) == 3);
			cases[ncases++] = (struct tcase) { (uint64_t) (cap * 1e4), th, sec };
		}
		free(dup);
	}
	/* The driver plays the daemon, whose timer wake-ups must not queue
	 * behind the jobs: a late freeze is CPU the job gets beyond its cap
	 * (on a loaded machine, wake-ups 30-90 ms late were seen at nice 0).
	 * The busy children do not inherit it. */
	{
		struct sched_param sp = { .sched_priority = 10 };

		if (sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &sp) < 0) {
			printf("note: no SCHED_FIFO (%s): driving at nice -10\n", strerror(errno));
			(void) setpriority(PRIO_PROCESS, 0, -10);
		}
	}
	CHECK_R(cg_create(jobs), 0);
	{
		uint64_t u;
		int r = cg_cpu_usage_usec(jobs, &u);
		if (r == -ENOENT)
			skip("skip: no cpu.stat in the cgroup2 hierarchy");
		CHECK_R(r, 0);
	}
	for (size_t i = 0; i < ncases; i++) {
		struct figures f = run_case(jobs, job, cases[i].cap_ppm, ncpus, cases[i].threads, cases[i].seconds);

		/* Short of the cap although thawed as long as the job needed at
		 * full speed: other load took the CPU; not the duty cycle's doing. */
		if (f.ratio < 0.93 && f.thawed_frac >= f.need_frac * 0.95) {
			printf("note: the machine is busy: the job was thawed %.1f%% of the time (needs %.1f%% at full speed) "
			       "and still got only %.2f of its cap\n", f.thawed_frac * 100, f.need_frac * 100, f.ratio);
		} else if (f.ratio < 0.93) {
			fprintf(stderr, "FAILED: cap %.0f%% %d threads: used/cap %.4f under 0.93\n",
				cases[i].cap_ppm / 1e4, cases[i].threads, f.ratio);
			fail = 1;
		}
		if (f.ratio > 1.01 || f.w10_max > 1.06) {
			fprintf(stderr, "FAILED: cap %.0f%% %d threads: used/cap %.4f (at most 1.01), "
				"highest 10 s window %.4f (at most 1.06)\n",
				cases[i].cap_ppm / 1e4, cases[i].threads, f.ratio, f.w10_max);
			fail = 1;
		}
	}
	CHECK_R(cg_remove(base), 0);
	test_base[0] = '\0';
	free(jobs);
	free(job);
	if (!fail)
		printf("ok\n");
	return fail;
}
