/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The sensing layer: what the host is doing and whether its owner is there.
 *
 * The eBPF probe (probe.bpf.c) splits each CPU's time into idle, harvest
 * (a task in the jobs/ cgroup subtree) and foreground, measures how long
 * foreground tasks waited on a CPU held by a harvest task, and reports user
 * input from fentry/input_event through a ring buffer. Each piece has a
 * fallback chosen at run time, and the chosen source is reported by name:
 *   input:  bpf (fentry/input_event) -> evdev (epoll on /dev/input/event*,
 *           inotify for hot-plug); logind's IdleHint where a session exists;
 *           terminal input (reads of /dev/pts/N and /dev/ttyN) always.
 *   times:  bpf (tp_btf/sched_switch) -> procstat (/proc/stat, with harvest
 *           time from jobs/ cpu.stat).
 * All timestamps are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns()).
 * This layer never prints; errors come back as -errno.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#define SENSE_HIST_SLOTS 32   /* log2 buckets of microseconds: slot i = [2^i, 2^(i+1)) us */

enum sense_activity {
	SENSE_ACT_INPUT,         /* keyboard, mouse, touchpad, tablet (bpf or evdev) */
	SENSE_ACT_TTY,           /* a read of terminal input: ssh, local tty */
	SENSE_ACT_LOGIND_ACTIVE, /* logind's IdleHint went false */
	SENSE_ACT_LOGIND_IDLE,   /* logind's IdleHint went true */
};

struct sense_opts {
	const char *harvest_cgroup; /* absolute path of jobs/ in the cgroup2 fs; its subtree is "harvest" */
	bool no_bpf;                /* do not try BPF at all (tests, --no-bpf) */
	bool no_fentry;             /* load the probe but do not try fentry/input_event */
	const char *input_dir;      /* evdev folder; NULL means /dev/input */
	const char *tty_dir;        /* pty folder; NULL means /dev/pts ("" disables tty watching) */
	bool no_logind;             /* do not ask logind over sd-bus */
};

struct sense_times {
	uint64_t idle_ns;        /* summed over all CPUs since sense_new() */
	uint64_t harvest_ns;
	uint64_t foreground_ns;
};

struct sense_intrusion {
	uint64_t total_ns;   /* foreground wait on CPUs held by harvest tasks */
	uint64_t count;      /* number of such waits */
	uint64_t max_ns;
	uint64_t hist[SENSE_HIST_SLOTS];
};

struct sense;

/* Called on the event loop for each burst of activity (the probe coalesces
 * events closer than a few ms, so a key press is one call, not eight). */
typedef void (*sense_activity_fn)(void *userdata, uint64_t event_ns, enum sense_activity kind);

/* Start sensing on loop e; the harvest cgroup must exist. Never fails for a
 * missing feature: it falls back and names the source. Returns 0 or -errno
 * for real errors (out of memory, bad options). */
int sense_new(sd_event *e, const struct sense_opts *o, sense_activity_fn fn, void *userdata,
	      struct sense **ret);
/* Stop and free; returns NULL. */
struct sense *sense_free(struct sense *s);

/* "bpf", "evdev", "logind" or "none": where user input is seen. */
const char *sense_input_source(const struct sense *s);
/* "bpf" or "procstat": where the time split comes from. */
const char *sense_time_source(const struct sense *s);
/* Why the preferred source was not used ("fentry refused: Operation not permitted"), or NULL. */
const char *sense_fallback_reason(const struct sense *s);

/* Idle/harvest/foreground time, summed over CPUs, since sense_new(). */
int sense_read_times(struct sense *s, struct sense_times *ret);
/* Foreground waits caused by harvest tasks; -EOPNOTSUPP without BPF. */
int sense_read_intrusion(struct sense *s, struct sense_intrusion *ret);
/* The last moment (ns) a harvest task held any CPU: the max over CPUs of the
 * time a harvest task was switched out (or now, if one is on a CPU right
 * now: then *ret is 0 and the return is -EBUSY). -EOPNOTSUPP without BPF. */
int sense_last_harvest_ns(struct sense *s, uint64_t *ret);
/* Time (ns) of the last activity of any kind seen, 0 if none yet. */
uint64_t sense_last_activity_ns(const struct sense *s);
