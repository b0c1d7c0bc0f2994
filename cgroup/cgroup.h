/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cgroup v2 control. Every path is an absolute path inside the cgroup2 file
 * system (as "/sys/fs/cgroup/system.slice/harvesterd.service/jobs"), so tests
 * can point the functions at any subtree. Functions return 0 (or a count) on
 * success and -errno on failure; ret_* parameters are written only on success.
 * This layer never prints.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define CG_CPU_MAX_UNLIMITED UINT64_MAX

/* The cgroup2 mount point: /sys/fs/cgroup on a unified system,
 * /sys/fs/cgroup/unified on a hybrid one; -ENOENT if there is none. */
int cg_mount_point(char **ret);
/* Absolute path of the cgroup v2 of pid (0 = self), from /proc/PID/cgroup's "0::" line. */
int cg_pid_path(pid_t pid, char **ret);

int cg_create(const char *path);                      /* mkdir; 0 if it exists */
int cg_remove(const char *path);                      /* rmdir it and its child cgroups, deepest first */
int cg_attach(const char *path, pid_t pid);           /* write pid to cgroup.procs */
/* Write "+c" for each controller of the space-separated list want into
 * path/cgroup.subtree_control, one at a time; *ret_enabled (may be NULL) gets
 * the ones now enabled, space-separated. Missing ones are not an error. */
int cg_enable_controllers(const char *path, const char *want, char **ret_enabled);
/* 1 if ctrl is in path/cgroup.controllers, 0 if not, -errno. */
int cg_has_controller(const char *path, const char *ctrl);

int cg_write(const char *path, const char *file, const char *value);
int cg_read(const char *path, const char *file, char **ret);   /* whole file, NUL-terminated */
/* Value of "key N" in a flat-keyed file (cpu.stat, memory.events, cgroup.events). */
int cg_read_key(const char *path, const char *file, const char *key, uint64_t *ret);

int cg_set_cpu_max(const char *path, uint64_t quota_usec, uint64_t period_usec); /* quota CG_CPU_MAX_UNLIMITED = "max" */
int cg_set_cpu_idle(const char *path, bool idle);
int cg_cpu_usage_usec(const char *path, uint64_t *ret);        /* cpu.stat usage_usec */

int cg_freeze(const char *path, bool frozen);                  /* cgroup.freeze */
int cg_is_frozen(const char *path, bool *ret);                 /* cgroup.events "frozen" */
int cg_is_populated(const char *path, bool *ret);              /* cgroup.events "populated" */
/* An fd on cgroup.events for poll(POLLPRI)/sd-event EPOLLPRI; the kernel
 * rate-limits these notifications (about 8 ms), see ../shared/TESTING.md. */
int cg_events_open(const char *path);
/* Kill every process in path and below: cgroup.kill where it exists, else
 * SIGKILL to each pid of cgroup.procs of the subtree until it is empty. */
int cg_kill(const char *path);

struct cg_memory_events { uint64_t low, high, max, oom, oom_kill; };
int cg_memory_events(const char *path, struct cg_memory_events *ret);

struct psi_line { double avg10, avg60, avg300; uint64_t total_usec; };
struct psi { struct psi_line some, full; bool has_full; };
/* Parse the text of a PSI file (/proc/pressure/memory, memory.pressure). Pure. */
int psi_parse(const char *text, struct psi *ret);
int psi_read(const char *file, struct psi *ret);

/*
 * The freezer duty cycle: keeps a CPU cap with cgroup.freeze where the cpu
 * controller is missing. Pure logic; the caller freezes and thaws and feeds
 * back the measured cpu.stat usage, so errors (freeze latency, late
 * wake-ups, fewer busy threads than CPUs) are corrected in the next period
 * and the long-run usage converges on the cap (aimed 2 % under it, see
 * duty.c).
 */
struct duty {
	uint64_t cap_ppm;        /* allowed share of ncpus CPUs, ppm */
	unsigned ncpus;
	uint64_t period_usec;    /* 100 ms */
	uint64_t period_start_usec;
	uint64_t usage_at_start_usec;
	int64_t  debt_usec;      /* CPU used beyond the allowance so far (<0: unused allowance, capped) */
	double   rate_cpus;      /* measured CPUs used while thawed (estimate) */
	double   spill_usec;     /* learned wall time the jobs run on after a freeze is decided */
	double   late_usec;      /* learned lateness of the caller's wake-up for a planned freeze */
	uint64_t planned_usec;   /* the planned freeze wake-up asked for last (0: none) */
	uint64_t freeze_usage_usec; /* usage read when this period's freeze was decided */
	bool     froze;          /* this period was thawed, then frozen: a spill sample is due */
	bool     has_bucket;     /* duty_set_bucket was called: plans stay within the budget */
	int64_t  bucket_tokens_usec;
	double   bucket_fill_cpus;
	bool     frozen;
};
void duty_init(struct duty *d, uint64_t cap_ppm, unsigned ncpus, uint64_t now_usec, uint64_t usage_usec);
/* Bound the next duty_step by the budget's token bucket: tokens_usec it
 * holds at the time and usage of that step, filling at fill_usec_per_sec.
 * The cycle then never plans to spend more than the bucket will hold by the
 * period's end (less a reserve for a late freeze), so its own spill does not
 * empty the bucket, which would freeze the jobs for the bucket's resume time
 * and restart the cycle from scratch. */
void duty_set_bucket(struct duty *d, int64_t tokens_usec, uint64_t fill_usec_per_sec);
/* Given the time and the cgroup's usage now, decide: *ret_frozen is the state
 * to put the cgroup in, and the return value is the absolute time (usec) at
 * which to call duty_step again. */
uint64_t duty_step(struct duty *d, uint64_t now_usec, uint64_t usage_usec, bool *ret_frozen);
