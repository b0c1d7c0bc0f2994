/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The control socket (/run/harvester/control.sock, SOCK_STREAM, mode 0666):
 * one request per connection. The client writes one JSON object and shuts
 * down its write side; the daemon answers one JSON object and closes.
 * Read-only verbs are for everyone; changing verbs need uid 0 (SO_PEERCRED).
 *
 * Requests:
 *   {"verb":"status"}            {"verb":"jobs"}         {"verb":"budget"}
 *   {"verb":"pause","for_usec":N}   (for_usec absent or 0: until resume)
 *   {"verb":"resume"}
 *   {"verb":"submit","argv":["cmd","arg",...]}   -> {"ok":true,"id":"<job id>"}
 *   {"verb":"cancel","id":"<job id>"}
 * Every answer has "ok" (bool); on failure "error" (a sentence) too.
 *
 * status answer (times in usec unless the name says otherwise; null = unknown):
 *   version, pid, state ("idle","active","exhausted","paused","on-battery",
 *   "hot","pressure","busy"), reason, state_for_usec,
 *   last_activity_ago_usec (null: none seen), input_source ("bpf","evdev",
 *   "logind","none"), time_source ("bpf","procstat"), fallback_reason,
 *   cap_mechanism ("cpu.max" or "freezer duty cycle"), cgroup (jobs/ path),
 *   frozen (bool, jobs/ cgroup.events), paused_until_usec,
 *   budget {cpu_ppm, burst_ppm, window_usec, capacity_usec, tokens_usec,
 *           rate_usec_per_sec, spent_total_usec, exhausted},
 *   jobs {queued, running, done, failed},
 *   times {idle_ns, harvest_ns, foreground_ns},
 *   intrusion {total_usec, count, max_usec} (null without BPF),
 *   reaction {count, last_to_last_run_usec, last_to_frozen_usec,
 *             samples: [[to_last_run_usec|null, to_frozen_usec], ...] (last 64)},
 *   daemon {cpu_usec, rss_bytes},
 *   pool (null without [Pool] URL=): {url, connected (bool: the last request
 *         was answered), worker_id (the pool's name for us, null before a
 *         welcome), last_error (null when connected), since_usec
 *         (CLOCK_REALTIME when the connected/error state began),
 *         state_for_usec, lease_sec, max_tasks ([Pool] MaxTasks=),
 *         tasks_held (pool tasks queued or running here), tasks_running,
 *         done, failed (pool tasks finished here, from the spool),
 *         refused (tasks whose signature did not verify against [Pool] Key=,
 *         since start), refused_replies (replies not signed by the pinned
 *         key, replayed or malformed, since start), unsupported (verified
 *         tasks of a kind not run here), results_pending (on disk in
 *         STATE/results, awaiting the pool's acknowledgement),
 *         results_acked, results_accepted, cpu_contributed_usec (CPU of the
 *         pool tasks finished here), retry_in_usec (backoff left)}
 *
 * jobs answer: {"ok":true,"jobs":[{id, state ("queued","running","done",
 *   "failed","cancelled"), argv, submitted_usec, started_usec, finished_usec
 *   (CLOCK_REALTIME), exit_code, signal, reason (why it failed), cpu_usec,
 *   stdout, stderr (paths), pool_task (absent for a local job; for a task
 *   from the pool: {task, state ("held","result","acked","released"),
 *   spec_sha256, lease_expires_usec, deadline_usec, fetched_usec,
 *   accepted (once acked)})}]}
 */
#pragma once

#define CONTROL_MAX_REQUEST (64 * 1024)
