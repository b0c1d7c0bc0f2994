/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The budget ledger on disk (STATE/ledger): written atomically (temp file,
 * fsync, rename), so a crash leaves the old or the new one, never half.
 * With it the daemon restores the bucket so that no restart, crash or reboot
 * hands out budget twice: spending since the last save that the kernel still
 * knows (same boot, same jobs/ cgroup) is read back from cpu.stat; spending
 * it cannot know any more is charged at the worst case (Burst for the time
 * since the last save, at most LEDGER_SAVE_USEC).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define LEDGER_SAVE_USEC (5 * 1000000ULL)  /* how often the daemon saves the ledger */

struct ledger {
	int64_t  tokens_usec;
	uint64_t spent_total_usec;
	uint64_t saved_realtime_usec;  /* CLOCK_REALTIME at save */
	char     boot_id[37];          /* /proc/sys/kernel/random/boot_id at save */
	uint64_t jobs_cgroup_id;       /* inode of jobs/ at save */
	uint64_t jobs_usage_usec;      /* its cpu.stat usage_usec at save */
	/* The GPU bucket (device-usec). A ledger written before the GPU budget
	 * lacks these keys: it loads with has_gpu false and them 0. */
	bool     has_gpu;              /* load: the keys were there; save: ignored, always written */
	int64_t  gpu_tokens_usec;
	uint64_t gpu_spent_total_usec;
	bool     gpu_busy;             /* GPU work was queued or running at save */
};

/* 0, -ENOENT if there is no ledger yet, -EBADMSG if it is corrupt, -errno.
 * The file is one JSON object; *ret is written only on success. */
int ledger_load(const char *path, struct ledger *ret);
/* Write path.tmp (mode 0600), fsync it, rename it over path, fsync the
 * directory. 0 or -errno (-ERANGE for a count above INT64_MAX). */
int ledger_save(const char *path, const struct ledger *l);
/* Device usec spent since l was saved and not in it, at start-up. No
 * kernel counter survives for device time, so: 0 if no GPU work was queued
 * or running at the save (a clean stop saves after the queues drained); else
 * the worst case, every one of n_devices busy for the wall time since the
 * save, at most LEDGER_SAVE_USEC (all of it if the clock went backwards). */
int64_t ledger_gpu_unrecorded_usec(const struct ledger *l, uint64_t realtime_now_usec, unsigned n_devices);
/* CPU usec spent by jobs since l was saved and not in it, at start-up:
 * exact (usage_now - saved usage) when the boot, the jobs/ cgroup id are the
 * same and the usage did not go backwards; else the worst case, Burst
 * (burst_cpu_usec_per_sec = burst_ppm x ncpus) for the wall time since the
 * save, at most LEDGER_SAVE_USEC (all of it if the clock went backwards). */
int64_t ledger_unrecorded_usec(const struct ledger *l, const char *boot_id_now, uint64_t jobs_cgroup_id_now,
			       uint64_t jobs_usage_now, uint64_t realtime_now_usec,
			       uint64_t burst_cpu_usec_per_sec);
