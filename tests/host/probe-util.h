/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Helpers shared by the probe's host tests (header only: every .c in
 * tests/host is a test program of its own). */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <math.h>

#include <systemd/sd-event.h>

#include "bpf/sense.h"

#define SKIP(...) do { printf(__VA_ARGS__); printf("\n"); exit(77); } while (0)
#define FAIL(...) do { printf("FAIL: " __VA_ARGS__); printf("\n"); cleanup_tree(); exit(1); } while (0)
#define CHECK(cond, ...) do { if (!(cond)) FAIL(__VA_ARGS__); } while (0)

static char tree_root[600];  /* <cgroup2>/harvester-test-PID */
static char tree_jobs[700];
static char tree_j1[800];

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline double ms(uint64_t ns) { return (double)ns / 1e6; }

/* Where cgroup2 is mounted (/sys/fs/cgroup, or .../unified on hybrids). */
static inline int find_cgroup2(char *buf, size_t size)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[1024];
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char mnt[512], fstype[64];
		const char *sep = strstr(line, " - ");

		if (!sep || sscanf(sep, " - %63s", fstype) != 1 || strcmp(fstype, "cgroup2") != 0)
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %511s", mnt) != 1)
			continue;
		snprintf(buf, size, "%s", mnt);
		r = 0;
		break;
	}
	fclose(f);
	return r;
}

static inline int write_file(const char *dir, const char *file, const char *fmt, ...)
{
	char path[1024], val[128];
	va_list ap;
	int fd, n;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	va_start(ap, fmt);
	n = vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, (size_t)n) != n) {
		int r = -errno;
		close(fd);
		return r;
	}
	close(fd);
	return 0;
}

/* usage_usec of a cgroup's cpu.stat, or UINT64_MAX. */
static inline uint64_t cgroup_usage_usec(const char *dir)
{
	char path[1024], line[256];
	uint64_t v = UINT64_MAX;
	FILE *f;

	snprintf(path, sizeof(path), "%s/cpu.stat", dir);
	f = fopen(path, "re");
	if (!f)
		return v;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "usage_usec %" SCNu64, &v) == 1)
			break;
	fclose(f);
	return v;
}

static inline void kill_cgroup(const char *dir)
{
	(void)write_file(dir, "cgroup.freeze", "0");
	(void)write_file(dir, "cgroup.kill", "1");
	/* A killed child stays in the cgroup until it is reaped. */
	for (int i = 0; i < 200 && rmdir(dir) < 0 && errno == EBUSY; i++) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		usleep(10000);
	}
}

static inline void cleanup_tree(void)
{
	if (!tree_root[0])
		return;
	kill_cgroup(tree_j1);
	kill_cgroup(tree_jobs);
	kill_cgroup(tree_root);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	tree_root[0] = 0;
}

/* <cgroup2>/harvester-test-PID/jobs/j1, or exit 77 where cgroup2 is missing. */
static inline void make_tree(void)
{
	char mnt[512];

	if (geteuid() != 0)
		SKIP("needs root to create cgroups");
	if (find_cgroup2(mnt, sizeof(mnt)) < 0)
		SKIP("no cgroup2 mount in /proc/self/mountinfo");
	snprintf(tree_root, sizeof(tree_root), "%s/harvester-test-%d", mnt, (int)getpid());
	snprintf(tree_jobs, sizeof(tree_jobs), "%s/jobs", tree_root);
	snprintf(tree_j1, sizeof(tree_j1), "%s/j1", tree_jobs);
	if (mkdir(tree_root, 0755) < 0 || mkdir(tree_jobs, 0755) < 0 || mkdir(tree_j1, 0755) < 0) {
		int e = errno;
		cleanup_tree();
		SKIP("cannot create test cgroups under %s: %s", mnt, strerror(e));
	}
	atexit(cleanup_tree);
}

static inline void spin_until(uint64_t deadline)
{
	while (now_ns() < deadline)
		;
}

/* A child that burns CPU (duty_pct of each 10 ms) for secs, pinned to cpu
 * (-1: anywhere), in cgroup dir (NULL: stays where it is), at nice. */
static inline pid_t spawn_hog_nice(const char *cgroup, int cpu, int duty_pct, double secs, int nice)
{
	pid_t pid = fork();

	if (pid < 0)
		FAIL("fork: %m");
	if (pid == 0) {
		uint64_t end = now_ns() + (uint64_t)(secs * 1e9);

		if (cpu >= 0) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(cpu, &set);
			if (sched_setaffinity(0, sizeof(set), &set) < 0)
				_exit(2);
		}
		if (cgroup && write_file(cgroup, "cgroup.procs", "0") < 0)
			_exit(3);
		if (nice && setpriority(PRIO_PROCESS, 0, nice) < 0)
			_exit(4);
		while (now_ns() < end) {
			uint64_t t = now_ns();

			spin_until(t + (uint64_t)duty_pct * 100000ULL);
			if (duty_pct < 100)
				usleep((useconds_t)(100 - duty_pct) * 100);
		}
		_exit(0);
	}
	return pid;
}

static inline pid_t spawn_hog(const char *cgroup, int cpu, int duty_pct, double secs)
{
	return spawn_hog_nice(cgroup, cpu, duty_pct, secs, 0);
}

/* Run the loop until deadline (CLOCK_MONOTONIC ns) or *stop. */
static inline void run_loop_until(sd_event *e, uint64_t deadline, const bool *stop)
{
	for (;;) {
		uint64_t t = now_ns();

		if (t >= deadline || (stop && *stop))
			return;
		(void)sd_event_run(e, (deadline - t) / 1000);
	}
}

/* /proc/stat: idle (idle+iowait) and busy, in ns over all CPUs. */
static inline void proc_stat(uint64_t *idle, uint64_t *busy)
{
	unsigned long long v[8] = {};
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f = fopen("/proc/stat", "re");

	if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
			 &v[4], &v[5], &v[6], &v[7]) < 5)
		FAIL("cannot read /proc/stat");
	fclose(f);
	*idle = (v[3] + v[4]) * (1000000000ULL / (uint64_t)hz);
	*busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) * (1000000000ULL / (uint64_t)hz);
}
