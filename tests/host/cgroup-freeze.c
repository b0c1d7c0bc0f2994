/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Freeze, thaw, kill and remove on the machine's real cgroup2 hierarchy:
 * a CPU-bound child in jobs/j1 stops using CPU while jobs/ is frozen
 * (utime from /proc/PID/stat), cgroup.events reports it both by reading and
 * by POLLPRI, cg_kill reaps it with SIGKILL (cgroup.kill, and the SIGKILL
 * loop for older kernels), and cg_remove leaves nothing. Prints the freeze
 * latency figures.
 */
#include <poll.h>

#include "tests/host/cgroup-test.h"

int cg_kill_by_signal(const char *path);   /* cgroup.c: the pre-5.14 path */

static uint64_t utime_ticks(pid_t pid) {
	char file[64], buf[1024], *p;
	unsigned long long ut = 0;
	FILE *f;

	snprintf(file, sizeof file, "/proc/%d/stat", (int) pid);
	f = fopen(file, "re");
	CHECK(f);
	CHECK(fgets(buf, sizeof buf, f));
	fclose(f);
	/* the command name may hold blanks: fields count from the last ')' */
	p = strrchr(buf, ')');
	CHECK(p);
	/* field 14 is utime; after ')' come fields 3.. */
	CHECK(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu", &ut) == 1);
	return ut;
}

/* Re-arm the fd: kernfs flags it on each change until it is read again. */
static void rearm(int fd) {
	char buf[256];

	CHECK(pread(fd, buf, sizeof buf, 0) > 0);
}

/* poll(POLLPRI) until cgroup.events of cg says frozen = want: a wake-up may
 * be the (deferred) notification of an earlier change. */
static void poll_frozen(int fd, const char *cg, bool want) {
	struct pollfd pfd = { .fd = fd, .events = POLLPRI };
	bool b;

	for (;;) {
		CHECK(poll(&pfd, 1, 1000) == 1);
		CHECK(pfd.revents & POLLPRI);
		rearm(fd);
		CHECK_R(cg_is_frozen(cg, &b), 0);
		if (b == want)
			return;
	}
}

static uint64_t pct(uint64_t *v, size_t n, double q) {
	qsort(v, n, sizeof *v, cmp_u64);
	return v[(size_t) ((double) (n - 1) * q + 0.5)];
}

int main(void) {
	const char *base = test_setup("freeze");
	char *jobs = join(base, "jobs"), *j1 = join(jobs, "j1"), *j2 = join(jobs, "j2"), *path = NULL;
	uint64_t spin_us[20], poll_us[20], u0, u1;
	bool b;
	pid_t child, child2;
	int fd, status;

	CHECK_R(cg_create(jobs), 0);
	CHECK_R(cg_create(j1), 0);
	CHECK_R(cg_create(j1), 0);        /* exists: still 0 */
	child = start_busy(j1, 1);
	CHECK_R(cg_pid_path(child, &path), 0);
	CHECK(strcmp(path, j1) == 0);
	free(path);
	CHECK_R(cg_is_populated(jobs, &b), 0);
	CHECK(b);
	CHECK_R(cg_is_frozen(j1, &b), 0);
	CHECK(!b);
	sleep_usec(100000);

	/* Latency of the freeze itself: spin on cgroup.events until frozen. */
	for (int i = 0; i < 20; i++) {
		uint64_t t0 = now_usec();

		CHECK_R(cg_freeze(jobs, true), 0);
		do
			CHECK_R(cg_is_frozen(j1, &b), 0);
		while (!b && now_usec() - t0 < 1000000);
		CHECK(b);
		spin_us[i] = now_usec() - t0;
		CHECK_R(cg_freeze(jobs, false), 0);
		sleep_usec(20000);
	}

	/* The same through poll(POLLPRI) on cgroup.events, as the daemon
	 * watches it: the kernel rate-limits the notification. */
	fd = cg_events_open(j1);
	CHECK(fd >= 0);
	for (int i = 0; i < 20; i++) {
		uint64_t t0;

		rearm(fd);
		t0 = now_usec();
		CHECK_R(cg_freeze(jobs, true), 0);
		poll_frozen(fd, j1, true);
		poll_us[i] = now_usec() - t0;
		CHECK_R(cg_freeze(jobs, false), 0);
		sleep_usec(20000);
	}
	printf("freeze latency, 1 busy thread, 20 runs: spin on cgroup.events p50 %.2f ms max %.2f ms; "
	       "poll(POLLPRI) wake p50 %.2f ms max %.2f ms\n",
	       pct(spin_us, 20, 0.5) / 1e3, pct(spin_us, 20, 1) / 1e3,
	       pct(poll_us, 20, 0.5) / 1e3, pct(poll_us, 20, 1) / 1e3);

	/* Frozen: no user time at all; thawed: it runs again. */
	CHECK_R(cg_freeze(jobs, true), 0);
	poll_frozen(fd, j1, true);
	CHECK_R(cg_is_frozen(jobs, &b), 0);
	CHECK(b);
	u0 = utime_ticks(child);
	sleep_usec(300000);
	u1 = utime_ticks(child);
	printf("utime over 300 ms frozen: %llu ticks\n", (unsigned long long) (u1 - u0));
	CHECK(u1 == u0);
	CHECK_R(cg_freeze(jobs, false), 0);
	poll_frozen(fd, j1, false);
	u0 = utime_ticks(child);
	sleep_usec(300000);
	u1 = utime_ticks(child);
	printf("utime over 300 ms thawed: %llu ticks\n", (unsigned long long) (u1 - u0));
	CHECK(u1 >= u0 + 5);

	/* cg_kill on a frozen tree (cgroup.kill here): reaped by SIGKILL. */
	CHECK_R(cg_freeze(jobs, true), 0);
	CHECK_R(cg_kill(jobs), 0);
	status = reap(child, 2000000);
	CHECK(status != -1);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK(wait_populated(jobs, false, 1000000));
	close(fd);
	CHECK_R(cg_freeze(jobs, false), 0);

	/* The SIGKILL loop, used where cgroup.kill is missing: children in
	 * two cgroups of the subtree, one with two threads. */
	CHECK_R(cg_create(j2), 0);
	child = start_busy(j1, 2);
	child2 = start_busy(j2, 1);
	sleep_usec(50000);
	CHECK_R(cg_kill_by_signal(jobs), 0);
	status = reap(child, 2000000);
	CHECK(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	status = reap(child2, 2000000);
	CHECK(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK(wait_populated(jobs, false, 1000000));
	/* an empty tree: nothing to do */
	CHECK_R(cg_kill_by_signal(jobs), 0);
	CHECK_R(cg_kill(jobs), 0);

	/* cg_remove: depth first, nothing left. */
	CHECK_R(cg_create(path = join(j2, "deeper")), 0);
	free(path);
	CHECK_R(cg_remove(base), 0);
	CHECK(access(base, F_OK) < 0 && errno == ENOENT);
	CHECK_R(cg_remove(base), 0);       /* gone already: still 0 */
	CHECK_R(cg_kill(base), -ENOENT);
	test_base[0] = '\0';
	free(jobs);
	free(j1);
	free(j2);
	printf("ok\n");
	return 0;
}
