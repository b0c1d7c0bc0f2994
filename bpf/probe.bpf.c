// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The sensing probe: splits each CPU's time into idle, harvest and
 * foreground at every context switch, measures how long foreground tasks
 * waited for a CPU that a harvest task held, and reports user input.
 *
 * Built once, CO-RE: the same object loads on the build host's kernel and on
 * Debian 12's 6.1, so every kernel struct is read through BPF_CORE_READ and
 * only fields both have are touched.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "bpf/probe.h"

/* From <linux/input-event-codes.h>, which vmlinux.h cannot carry (macros). */
#define EV_KEY 0x01
#define EV_REL 0x02
#define EV_ABS 0x03
#define INPUT_PROP_ACCELEROMETER 0x06

#define TASK_RUNNING 0

/* Load-time settings, written by sense.c before load. */
const volatile __u64 harvest_cgid = 0;            /* kernfs id (inode) of jobs/ */
const volatile __u64 coalesce_ns = 10000000ULL;   /* input events closer than this are one */

/* Read by user space through the skeleton's mmap'ed .bss. */
__u64 last_input_ns = 0;
__u64 last_sent_ns = 0;

/* CPUs running a harvest task right now, and how many times that count has
 * left zero. Wake-ups are timed only while a harvest task holds some CPU:
 * otherwise none can make a foreground task wait, and at a small cap (jobs
 * frozen nearly all the time) the map update was most of the probe's cost
 * on a busy machine. A wake-up stamped in an earlier epoch is stale. */
__u64 harvest_running = 0;
__u64 harvest_epoch = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct probe_cpu);
} cpus SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct probe_intrusion);
} intrusion SEC(".maps");

/* Foreground tasks waiting for a CPU: pid -> when they became runnable,
 * and in which epoch. LRU, so a task that never runs again (exited) cannot
 * fill it. */
struct wakeup {
	__u64 ns;
	__u64 epoch;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PROBE_WAKEUP_ENTRIES);
	__type(key, __u32);
	__type(value, struct wakeup);
} wakeups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 4096);
} events SEC(".maps");

/* Harvest if the task's cgroup v2 is jobs/ or below it. The walk is bounded
 * (the verifier needs it, and jobs/<id>/ is one or two levels down); a task
 * deeper than PROBE_CGROUP_DEPTH below jobs/ would count as foreground.
 * tp_btf hands us BTF-typed pointers, so the fields are plain loads (still
 * relocated by CO-RE), not bpf_probe_read_kernel() calls: this runs at
 * every context switch, and the helper calls were most of its cost. */
static __always_inline __u32 classify(struct task_struct *t)
{
	struct cgroup *cg;
	int i;

	if (t->pid == 0)
		return PROBE_IDLE;
	if (!harvest_cgid)
		return PROBE_FOREGROUND;

	cg = t->cgroups->dfl_cgrp;
	for (i = 0; i < PROBE_CGROUP_DEPTH && cg; i++) {
		struct cgroup_subsys_state *parent;

		if (cg->kn->id == harvest_cgid)
			return PROBE_HARVEST;
		parent = cg->self.parent;
		if (!parent)
			break;
		cg = parent->cgroup;
	}
	return PROBE_FOREGROUND;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

#pragma unroll
	for (int shift = 32; shift > 0; shift >>= 1) {
		if (v >= (1ULL << shift)) {
			v >>= shift;
			r += shift;
		}
	}
	return r;
}

static __always_inline void note_runnable(struct task_struct *t, __u64 now)
{
	struct wakeup w = { .ns = now, .epoch = harvest_epoch };
	__u32 pid = t->pid;

	bpf_map_update_elem(&wakeups, &pid, &w, BPF_ANY);
}

static __always_inline int on_wakeup(struct task_struct *p)
{
	/* Without jobs/, or with no harvest task on a CPU, there is no
	 * intrusion to measure: save the map work. */
	if (!harvest_cgid || !harvest_running)
		return 0;
	if (classify(p) != PROBE_FOREGROUND)
		return 0;
	note_runnable(p, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(handle_wakeup, struct task_struct *p)
{
	return on_wakeup(p);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(handle_wakeup_new, struct task_struct *p)
{
	return on_wakeup(p);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(handle_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u32 zero = 0, prev_kind, next_kind;
	struct probe_cpu *c;
	__u64 now;

	c = bpf_map_lookup_elem(&cpus, &zero);
	if (!c)
		return 0;
	now = bpf_ktime_get_ns();

	prev_kind = c->kind;
	if (c->last_ns && prev_kind < PROBE_KINDS)
		c->ns[prev_kind] += now - c->last_ns;
	else
		prev_kind = classify(prev); /* first switch seen on this CPU */
	if (prev_kind == PROBE_HARVEST)
		c->harvest_out_ns = now;

	next_kind = classify(next);

	/* Each CPU adds one to harvest_running while it runs a harvest task, by
	 * its own record of what it ran (never by a first guess), so the sum
	 * cannot drift. */
	if (c->last_ns && c->kind == PROBE_HARVEST && next_kind != PROBE_HARVEST)
		__sync_fetch_and_add(&harvest_running, -1);
	else if (next_kind == PROBE_HARVEST && !(c->last_ns && c->kind == PROBE_HARVEST) &&
		 __sync_fetch_and_add(&harvest_running, 1) == 0)
		__sync_fetch_and_add(&harvest_epoch, 1);
	c->kind = next_kind;
	c->last_ns = now;

	if (!harvest_cgid)
		return 0;

	/* A preempted foreground task starts waiting now, as a woken one does. */
	if (prev_kind == PROBE_FOREGROUND && prev_state == TASK_RUNNING && harvest_running)
		note_runnable(prev, now);

	/* Only a wait ended by a harvest task leaving the CPU is intrusion; a
	 * stamp left behind by other switch-ins is made stale by the epoch. */
	if (next_kind == PROBE_FOREGROUND && prev_kind == PROBE_HARVEST) {
		__u32 pid = next->pid;
		struct wakeup *since = bpf_map_lookup_elem(&wakeups, &pid);

		if (since && since->epoch == harvest_epoch) {
			__u64 wait = now > since->ns ? now - since->ns : 0;
			struct probe_intrusion *in = bpf_map_lookup_elem(&intrusion, &zero);

			bpf_map_delete_elem(&wakeups, &pid);
			if (in) {
				__u32 slot = log2_u64(wait / 1000);

				if (slot >= PROBE_HIST_SLOTS)
					slot = PROBE_HIST_SLOTS - 1;
				in->hist[slot]++;
				in->total_ns += wait;
				in->count++;
				if (wait > in->max_ns)
					in->max_ns = wait;
			}
		}
	}
	return 0;
}

/* void input_event(struct input_dev *dev, unsigned int type, unsigned int code, int value) */
SEC("fentry/input_event")
int BPF_PROG(handle_input, struct input_dev *dev, unsigned int type, unsigned int code, int value)
{
	struct probe_event ev = {};
	__u64 now;

	if (type != EV_KEY && type != EV_REL && type != EV_ABS)
		return 0;
	/* A laptop's accelerometer reports EV_ABS all the time: not a person. */
	if (BPF_CORE_READ(dev, propbit[0]) & (1UL << INPUT_PROP_ACCELEROMETER))
		return 0;
	now = bpf_ktime_get_ns();
	last_input_ns = now;
	/* One wake-up per burst: a key press is ~8 calls within microseconds.
	 * A race between CPUs can let two through, which is harmless. */
	if (last_sent_ns && now - last_sent_ns < coalesce_ns)
		return 0;
	last_sent_ns = now;
	ev.ts_ns = now;
	ev.kind = PROBE_EV_INPUT;
	ev.type = type;
	bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
