/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The probe's time split against the kernel's own accounting: a CPU-bound
 * child in jobs/j1 and one busy 30% outside it run for a few seconds;
 * the probe's idle must match /proc/stat's idle+iowait, its harvest time
 * jobs/ cpu.stat usage_usec, its foreground the rest of /proc/stat's busy
 * time, each within TOLERANCE of the interval's CPU time.
 */
#include <bpf/bpf.h>

#include "tests/host/probe-util.h"
#include "bpf/sense-internal.h"

#define SECONDS 3.0
#define TOLERANCE 0.05 /* of ncpu x interval */

static double pct(uint64_t a, uint64_t b, uint64_t cap)
{
	return 100.0 * ((double)a - (double)b) / (double)cap;
}

int main(void)
{
	struct sense_opts o = { .tty_dir = "", .no_logind = true, .input_dir = "/nonexistent/input" };
	sd_event *e = NULL;
	struct sense *s = NULL;
	struct sense_times t0, t1;
	uint64_t idle0, busy0, idle1, busy1, use0, use1, w0, w1, cap, sum;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	pid_t harvest, fg;
	int r;

	make_tree();
	o.harvest_cgroup = tree_jobs;
	CHECK(sd_event_new(&e) >= 0, "sd_event_new");
	r = sense_new(e, &o, NULL, NULL, &s);
	CHECK(r == 0, "sense_new: %s", strerror(-r));
	if (strcmp(sense_time_source(s), "bpf") != 0)
		SKIP("the probe did not load here (%s)", sense_fallback_reason(s) ?: "?");

	/* Raised priority: the comparison needs harvest time well above the
	 * tolerance even when the machine is busy with other work. */
	harvest = spawn_hog_nice(tree_j1, -1, 100, SECONDS + 1, -10);
	fg = spawn_hog(NULL, -1, 30, SECONDS + 1);
	usleep(300000); /* let both settle into their cgroups */

	/* Count the probe's own run time over the interval. */
	int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	uint64_t cost_ns0 = 0, cost_cnt0 = 0, cost_ns1 = 0, cost_cnt1 = 0;
	(void)sense_probe_cost(s, &cost_ns0, &cost_cnt0);

	w0 = now_ns();
	CHECK(sense_read_times(s, &t0) == 0, "sense_read_times");
	proc_stat(&idle0, &busy0);
	use0 = cgroup_usage_usec(tree_jobs);
	usleep((useconds_t)(SECONDS * 1e6));
	w1 = now_ns();
	CHECK(sense_read_times(s, &t1) == 0, "sense_read_times");
	proc_stat(&idle1, &busy1);
	use1 = cgroup_usage_usec(tree_jobs);
	CHECK(use0 != UINT64_MAX && use1 != UINT64_MAX, "cannot read %s/cpu.stat", tree_jobs);
	CHECK(sense_probe_cost(s, &cost_ns1, &cost_cnt1) == 0, "sense_probe_cost");
	if (stats_fd >= 0) {
		close(stats_fd);
		printf("probe cost: %" PRIu64 " runs, %.0f ns per run, %.3f%% of the interval's CPU time\n",
		       cost_cnt1 - cost_cnt0,
		       cost_cnt1 > cost_cnt0 ? (double)(cost_ns1 - cost_ns0) / (double)(cost_cnt1 - cost_cnt0) : 0.0,
		       100.0 * (double)(cost_ns1 - cost_ns0) / ((double)ncpu * (double)(now_ns() - w0)));
	}

	cap = (uint64_t)ncpu * (w1 - w0);
	/* /proc/stat is tick-sampled; where ticks are lost (an emulated
	 * guest) it does not even account for the interval itself, and there
	 * is nothing trustworthy to compare with. */
	if (fabs(pct(idle1 - idle0 + busy1 - busy0, cap, cap)) > TOLERANCE * 100)
		SKIP("/proc/stat accounts for %.0f of %.0f ms of CPU time here (lost ticks?): no reference",
		     ms(idle1 - idle0 + busy1 - busy0), ms(cap));
	sum = (t1.idle_ns - t0.idle_ns) + (t1.harvest_ns - t0.harvest_ns) + (t1.foreground_ns - t0.foreground_ns);
	printf("interval %.0f ms x %ld CPUs = %.0f ms of CPU time; probe total %.0f ms\n", ms(w1 - w0),
	       ncpu, ms(cap), ms(sum));
	printf("idle:       probe %8.1f ms  /proc/stat idle+iowait %8.1f ms  diff %+.2f%%\n",
	       ms(t1.idle_ns - t0.idle_ns), ms(idle1 - idle0),
	       pct(t1.idle_ns - t0.idle_ns, idle1 - idle0, cap));
	printf("harvest:    probe %8.1f ms  jobs/ cpu.stat usage    %8.1f ms  diff %+.2f%%\n",
	       ms(t1.harvest_ns - t0.harvest_ns), (double)(use1 - use0) / 1e3,
	       pct(t1.harvest_ns - t0.harvest_ns, (use1 - use0) * 1000, cap));
	printf("foreground: probe %8.1f ms  /proc/stat busy-harvest %8.1f ms  diff %+.2f%%\n",
	       ms(t1.foreground_ns - t0.foreground_ns), ms(busy1 - busy0) - (double)(use1 - use0) / 1e3,
	       pct(t1.foreground_ns - t0.foreground_ns, (busy1 - busy0) - (use1 - use0) * 1000, cap));
	printf("tolerance: %.0f%% of the interval's CPU time (%.0f ms)\n", TOLERANCE * 100,
	       ms((uint64_t)(TOLERANCE * (double)cap)));

	CHECK(fabs(pct(sum, cap, cap)) < TOLERANCE * 100, "probe total is not the interval's CPU time");
	CHECK(fabs(pct(t1.idle_ns - t0.idle_ns, idle1 - idle0, cap)) < TOLERANCE * 100, "idle differs");
	CHECK(fabs(pct(t1.harvest_ns - t0.harvest_ns, (use1 - use0) * 1000, cap)) < TOLERANCE * 100,
	      "harvest differs");
	CHECK(fabs(pct(t1.foreground_ns - t0.foreground_ns, (busy1 - busy0) - (use1 - use0) * 1000, cap)) <
		      TOLERANCE * 100, "foreground differs");
	/* An implementation that put everything in one bucket would pass the
	 * sums above only if the workload did: make sure it did not. */
	/* The comparisons only mean something if each bucket is well above
	 * the tolerance: a probe that filed harvest under foreground must
	 * fail the harvest comparison. */
	if ((use1 - use0) * 1000 < 3 * (uint64_t)(TOLERANCE * (double)cap) / 2)
		SKIP("the harvest child got %.0f ms of CPU, too little for a conclusive test (machine busy?)",
		     (double)(use1 - use0) / 1e3);
	CHECK(t1.foreground_ns - t0.foreground_ns > (w1 - w0) / 8, "the foreground child was not seen");

	kill(harvest, SIGKILL);
	kill(fg, SIGKILL);
	waitpid(harvest, NULL, 0);
	waitpid(fg, NULL, 0);
	sense_free(s);
	sd_event_unref(e);
	printf("ok\n");
	return 0;
}
