/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Intrusion and the last harvest moment: a harvest CPU hog and a foreground
 * task that sleeps and wakes share CPU 0. Every wake-up of the foreground
 * task finds the hog on the CPU, so the probe must count about one wait per
 * wake-up, with a histogram that sums to the count. Then freezing the hog's
 * cgroup must leave sense_last_harvest_ns() at the moment of the freeze.
 */
#include "tests/host/probe-util.h"

#define FG_WAKEUPS 500
#define FREEZE_SLACK_NS 5000000ULL /* 5 ms: after the freeze completed */
#define RUN_GAP_NS 20000000ULL     /* 20 ms: before the write, on a busy CPU 0 */

/* Sleeps 1 ms FG_WAKEUPS times on CPU 0; exits with 0. */
static pid_t spawn_sleeper(void)
{
	pid_t pid = fork();

	if (pid < 0)
		FAIL("fork: %m");
	if (pid == 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(0, &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			_exit(2);
		for (int i = 0; i < FG_WAKEUPS; i++) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
			spin_until(now_ns() + 20000); /* a little work per wake-up */
		}
		_exit(0);
	}
	return pid;
}

static bool frozen(const char *dir)
{
	char path[1024], line[128];
	bool f = false;
	FILE *file;

	snprintf(path, sizeof(path), "%s/cgroup.events", dir);
	file = fopen(path, "re");
	if (!file)
		return false;
	while (fgets(line, sizeof(line), file))
		if (strcmp(line, "frozen 1\n") == 0)
			f = true;
	fclose(file);
	return f;
}

int main(void)
{
	struct sense_opts o = { .tty_dir = "", .no_logind = true, .input_dir = "/nonexistent/input" };
	struct sense_intrusion in0, in1;
	uint64_t t_hog, t_write, t_frozen, last = 1, hsum = 0, count;
	sd_event *e = NULL;
	struct sense *s = NULL;
	pid_t hog, fg;
	int r, status, busy = 0;

	make_tree();
	o.harvest_cgroup = tree_jobs;
	CHECK(sd_event_new(&e) >= 0, "sd_event_new");
	r = sense_new(e, &o, NULL, NULL, &s);
	CHECK(r == 0, "sense_new: %s", strerror(-r));
	if (strcmp(sense_time_source(s), "bpf") != 0)
		SKIP("the probe did not load here (%s)", sense_fallback_reason(s) ?: "?");

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		SKIP("needs two CPUs: the hog owns CPU 0 while the test reads from another");
	/* This process reads from CPU 1: on CPU 0 it would push the hog off
	 * the very CPU it is asking about. */
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(1, &set);
	CHECK(sched_setaffinity(0, sizeof(set), &set) == 0, "sched_setaffinity: %m");

	t_hog = now_ns();
	/* nice -10: on a busy machine the hog still holds CPU 0 nearly always. */
	hog = spawn_hog_nice(tree_j1, 0, 100, 30, -10);
	usleep(200000);
	CHECK(sense_read_intrusion(s, &in0) == 0, "sense_read_intrusion");

	fg = spawn_sleeper();
	CHECK(waitpid(fg, &status, 0) == fg && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "the sleeper failed");
	/* Other CPUs may be adding a wait while the per-CPU copy is taken:
	 * read again until the copy is consistent. */
	for (int i = 0; i < 5; i++) {
		CHECK(sense_read_intrusion(s, &in1) == 0, "sense_read_intrusion");
		hsum = 0;
		for (int j = 0; j < SENSE_HIST_SLOTS; j++)
			hsum += in1.hist[j];
		if (hsum == in1.count)
			break;
	}

	count = in1.count - in0.count;
	printf("intrusion over %d wake-ups behind a harvest hog: count %" PRIu64 ", total %.3f ms, "
	       "mean %.1f us, max %.1f us\n", FG_WAKEUPS, count, ms(in1.total_ns - in0.total_ns),
	       count ? (double)(in1.total_ns - in0.total_ns) / (double)count / 1e3 : 0.0,
	       (double)in1.max_ns / 1e3);
	printf("histogram (us):");
	for (int i = 0; i < SENSE_HIST_SLOTS; i++)
		if (in1.hist[i])
			printf(" [%llu,%llu):%" PRIu64, 1ULL << i, 2ULL << i, in1.hist[i]);
	printf("\n");
	CHECK(count >= FG_WAKEUPS / 2, "too few waits counted (%" PRIu64 ")", count);
	CHECK(hsum == in1.count, "histogram sums to %" PRIu64 ", count is %" PRIu64, hsum, in1.count);
	CHECK(in1.max_ns <= in1.total_ns && in1.max_ns > 0, "max is not within total");

	/* The hog holds CPU 0 now. */
	for (int i = 0; i < 200 && !busy; i++, usleep(2000))
		busy = sense_last_harvest_ns(s, &last) == -EBUSY;
	CHECK(busy && last == 0, "a running hog should read as -EBUSY with 0");

	t_write = now_ns();
	CHECK(write_file(tree_j1, "cgroup.freeze", "1") == 0, "freeze: %m");
	while (!frozen(tree_j1) && now_ns() - t_write < 2000000000ULL)
		;
	t_frozen = now_ns();
	CHECK(frozen(tree_j1), "the hog did not freeze");
	usleep(20000);
	r = sense_last_harvest_ns(s, &last);
	CHECK(r == 0, "sense_last_harvest_ns after the freeze: %s", strerror(-r));
	printf("freeze: write -> frozen %.3f ms; last harvest %.3f ms after the write "
	       "(%.3f ms before frozen was read), %.0f ms after the hog started\n",
	       ms(t_frozen - t_write), ((double)last - (double)t_write) / 1e6,
	       ((double)t_frozen - (double)last) / 1e6, ms(last - t_hog));
	CHECK(last > t_hog, "last harvest before the hog started");
	CHECK(last <= t_frozen + FREEZE_SLACK_NS, "last harvest after the freeze completed");
	/* The hog ran until the freeze: the last moment is the freeze, not
	 * some earlier switch. */
	CHECK(last + RUN_GAP_NS >= t_write, "last harvest long before the freeze");

	kill(hog, SIGKILL);
	cleanup_tree();
	waitpid(hog, NULL, 0);
	sense_free(s);
	sd_event_unref(e);
	printf("ok\n");
	return 0;
}
