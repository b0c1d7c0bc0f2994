/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Private to the sensing layer (the .c files of bpf/) and its tests: the state behind
 * struct sense, the watchers each source file starts, and a few test hooks.
 * The daemon codes against sense.h only.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bpf/sense.h"

#define SENSE_COALESCE_NS (10ULL * 1000 * 1000) /* activity closer than this is one burst */

struct probe_bpf;
struct ring_buffer;

/* Counters of /proc/stat and jobs/ cpu.stat, for the "procstat" time source. */
struct procstat_sample {
	uint64_t idle_ns;     /* idle + iowait, all CPUs */
	uint64_t busy_ns;     /* everything else but guest (already in user) */
	uint64_t harvest_ns;  /* jobs/ cpu.stat usage_usec */
};

struct evdev_device {
	struct sense *sense;
	sd_event_source *source;
	int fd;
	char name[64];
};

struct sense {
	sd_event *event;
	sense_activity_fn fn;
	void *userdata;

	char *harvest_cgroup;
	uint64_t harvest_cgid;
	char *fallback_reason;

	/* BPF */
	struct probe_bpf *skel;
	struct ring_buffer *ring;
	sd_event_source *ring_source;
	int ncpus;               /* possible CPUs, the width of percpu values */
	bool fentry;             /* fentry/input_event attached */

	/* procstat */
	struct procstat_sample base;
	bool harvest_unknown;    /* jobs/ has no cpu.stat: all busy time is foreground */

	/* evdev */
	bool evdev_running;
	char *input_dir;
	int evdev_inotify_fd;
	int evdev_wd_dir, evdev_wd_parent;
	sd_event_source *evdev_inotify_source;
	struct evdev_device **devices;
	size_t n_devices;
	unsigned evdev_candidates; /* event* names looked at (scan or hot-plug) */

	/* terminals */
	char *tty_dir;
	int tty_inotify_fd;
	int tty_wd_dir;
	sd_event_source *tty_source;

	/* logind */
	sd_bus *bus;
	sd_bus_slot *logind_slot;
	bool logind;
	int idle_hint;           /* -1 unknown, 0, 1 */

	struct sense_times last_times; /* last returned by sense_read_times() */
	uint64_t last_activity_ns;
	uint64_t last_report_ns[SENSE_ACT_LOGIND_IDLE + 1];
};

uint64_t sense_now_ns(void);
/* Coalesce and hand one activity to the callback. */
void sense_report(struct sense *s, uint64_t event_ns, enum sense_activity kind);
/* Append "; reason" to the fallback reason (printf-style). */
void sense_add_reason(struct sense *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* evdev.c: watch dir (even one that does not exist yet) for event* devices. */
int evdev_start(struct sense *s, const char *dir);
void evdev_stop(struct sense *s);
/* tty.c: IN_ACCESS on the pty folder and the console/serial ttys. */
int tty_start(struct sense *s, const char *pts_dir);
void tty_stop(struct sense *s);
/* logind.c: 0 if logind answered and is watched, -errno if not. */
int logind_start(struct sense *s);
void logind_stop(struct sense *s);
/* procstat.c: read both files (cpu_stat may be NULL: harvest 0). */
int procstat_read(const char *proc_stat, const char *cpu_stat, struct procstat_sample *ret);

/* The probe's own cost, summed over its programs (bpf_prog_info run_time_ns
 * and run_cnt). The kernel counts only while stats are enabled
 * (sysctl kernel.bpf_stats_enabled=1, or an fd from bpf_enable_stats()).
 * -EOPNOTSUPP without the probe. */
int sense_probe_cost(struct sense *s, uint64_t *ret_run_ns, uint64_t *ret_run_cnt);

/* Test hooks. */
/* Treat fd as an evdev device (no capability check): events read from it are input. */
int sense_evdev_add_fd(struct sense *s, int fd, const char *name);
/* Number of event* names the evdev watcher looked at, and devices open. */
unsigned sense_evdev_candidates(const struct sense *s);
size_t sense_evdev_devices(const struct sense *s);
