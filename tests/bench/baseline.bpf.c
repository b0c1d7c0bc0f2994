// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The floor under the probe's cost figure: programs on the same
 * tracepoints that do nothing (the price of entering a BPF program with
 * run-time stats on, which includes two clock reads of its own), and one
 * that reads the clock once, as every probe program does. bench-probe runs
 * them beside the probe, on the same events.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 sink = 0;

SEC("tp_btf/sched_switch")
int BPF_PROG(base_switch_empty)
{
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(base_wakeup_empty)
{
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(base_switch_clock)
{
	sink = bpf_ktime_get_ns();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
