/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Types shared by probe.bpf.c and its loader (sense.c). Only __u32/__u64 so
 * both sides agree on the layout without the kernel's headers.
 */
#pragma once

#define PROBE_HIST_SLOTS 32      /* must equal SENSE_HIST_SLOTS */
#define PROBE_CGROUP_DEPTH 16    /* levels walked up looking for jobs/ */
#define PROBE_WAKEUP_ENTRIES 16384

enum probe_kind {
	PROBE_IDLE = 0,
	PROBE_HARVEST = 1,
	PROBE_FOREGROUND = 2,
	PROBE_KINDS = 3,
	PROBE_UNKNOWN = 4, /* no switch seen on this CPU since load */
};

/* One per CPU (percpu array, key 0). */
struct probe_cpu {
	__u64 last_ns;          /* time of the last switch on this CPU, 0 before the first */
	__u64 ns[PROBE_KINDS];  /* accumulated time, indexed by enum probe_kind */
	__u64 harvest_out_ns;   /* last time a harvest task was switched out here */
	__u32 kind;             /* kind of the task on the CPU since last_ns */
	__u32 pad;
};

/* One per CPU (percpu array, key 0); user space sums them. */
struct probe_intrusion {
	__u64 total_ns;
	__u64 count;
	__u64 max_ns;
	__u64 hist[PROBE_HIST_SLOTS];
};

enum probe_event_kind {
	PROBE_EV_INPUT = 1,
};

/* Sent over the ring buffer. */
struct probe_event {
	__u64 ts_ns;
	__u32 kind;   /* enum probe_event_kind */
	__u32 type;   /* EV_KEY, EV_REL, EV_ABS */
};
