/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Helpers shared by the cgroup host tests: a scratch subtree
 * <cgroup2 mount>/harvester-test-PID-NAME that is killed and removed at exit
 * (whatever the outcome), busy child processes, and a CHECK that says where.
 */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup/cgroup.h"

static char test_base[512];
static pid_t test_children[16];
static unsigned test_nchildren;

static inline void test_cleanup(void) {
	if (test_base[0]) {
		(void) cg_freeze(test_base, false);
		(void) cg_kill(test_base);
	}
	for (unsigned i = 0; i < test_nchildren; i++)
		if (test_children[i] > 0) {
			kill(test_children[i], SIGKILL);
			waitpid(test_children[i], NULL, 0);
		}
	if (test_base[0])
		(void) cg_remove(test_base);
}

#define CHECK(expr) do {                                                     \
		if (!(expr)) {                                               \
			fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #expr); \
			exit(1);                                             \
		}                                                            \
	} while (0)
#define CHECK_R(call, want) do {                                             \
		long _r = (long) (call), _w = (long) (want);                 \
		if (_r != _w) {                                              \
			fprintf(stderr, "%s:%d: FAILED: %s = %ld (%s), want %ld\n", __FILE__, __LINE__, \
				#call, _r, _r < 0 ? strerror((int) -_r) : "", _w); \
			exit(1);                                             \
		}                                                            \
	} while (0)

static inline void skip(const char *fmt, ...) {
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(77);
}

/* Make the scratch subtree, or skip where the machine cannot have one. */
static inline const char *test_setup(const char *name) {
	char *mnt = NULL, probe[600];
	int r;

	if (geteuid() != 0)
		skip("skip: needs root to create cgroups");
	r = cg_mount_point(&mnt);
	if (r == -ENOENT)
		skip("skip: no cgroup2 file system mounted");
	CHECK_R(r, 0);
	snprintf(test_base, sizeof test_base, "%s/harvester-test-%d-%s", mnt, (int) getpid(), name);
	free(mnt);
	r = cg_create(test_base);
	if (r == -EACCES || r == -EPERM || r == -EROFS) {
		test_base[0] = '\0';
		skip("skip: cannot create a cgroup under the cgroup2 mount (%s)", strerror(-r));
	}
	CHECK_R(r, 0);
	atexit(test_cleanup);
	snprintf(probe, sizeof probe, "%s/cgroup.freeze", test_base);
	if (access(probe, F_OK) < 0)
		skip("skip: no cgroup.freeze (kernel < 5.2)");
	return test_base;
}

static inline uint64_t now_usec(void) {
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static inline void sleep_usec(uint64_t us) {
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static inline void sleep_until_usec(uint64_t t) {
	struct timespec ts = { .tv_sec = t / 1000000, .tv_nsec = (t % 1000000) * 1000 };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static inline void *spin_thread(void *arg) {
	volatile uint64_t x = 0;

	for (;;)
		x++;
	return arg;
}

/* Fork a child with `threads` busy threads, attached to cg before it spins
 * (it waits on a pipe until the parent has moved it). */
static inline pid_t start_busy(const char *cg, int threads) {
	int p[2];
	pid_t pid;
	char c;

	CHECK(pipe(p) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			_exit(3);
		for (int i = 1; i < threads; i++) {
			pthread_t t;
			pthread_create(&t, NULL, spin_thread, NULL);
		}
		spin_thread(NULL);
		_exit(0);
	}
	close(p[0]);
	CHECK(test_nchildren < 16);
	test_children[test_nchildren++] = pid;
	CHECK_R(cg_attach(cg, pid), 0);
	CHECK(write(p[1], "x", 1) == 1);
	close(p[1]);
	return pid;
}

/* Reap pid (within timeout_usec); returns the wait status, or -1 on timeout. */
static inline int reap(pid_t pid, uint64_t timeout_usec) {
	uint64_t end = now_usec() + timeout_usec;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid) {
			for (unsigned i = 0; i < test_nchildren; i++)
				if (test_children[i] == pid)
					test_children[i] = 0;
			return status;
		}
		if (now_usec() > end)
			return -1;
		sleep_usec(1000);
	}
}

/* Wait until cgroup.events says populated = want. */
static inline bool wait_populated(const char *cg, bool want, uint64_t timeout_usec) {
	uint64_t end = now_usec() + timeout_usec;
	bool pop;

	for (;;) {
		if (cg_is_populated(cg, &pop) == 0 && pop == want)
			return true;
		if (now_usec() > end)
			return false;
		sleep_usec(1000);
	}
}

static inline char *join(const char *a, const char *b) {
	char *p;

	CHECK(asprintf(&p, "%s/%s", a, b) > 0);
	return p;
}

static inline int cmp_u64(const void *a, const void *b) {
	uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

	return x < y ? -1 : x > y;
}
