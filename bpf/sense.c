/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The sensing layer's loader: loads probe.bpf.c, falls back piece by piece
 * (fentry -> evdev, BPF -> /proc/stat) and wires every source onto the
 * caller's sd-event loop.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/probe.h"
#include "bpf/probe.skel.h"
#include "bpf/sense-internal.h"
#include "harvester/macro.h"

_Static_assert(PROBE_HIST_SLOTS == SENSE_HIST_SLOTS, "histogram widths differ");

uint64_t sense_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

void sense_add_reason(struct sense *s, const char *fmt, ...)
{
	char *add = NULL, *joined = NULL;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&add, fmt, ap);
	va_end(ap);
	if (r < 0)
		return; /* out of memory: the reason is a nicety, not state */
	if (!s->fallback_reason) {
		s->fallback_reason = add;
		return;
	}
	if (asprintf(&joined, "%s; %s", s->fallback_reason, add) >= 0) {
		free(s->fallback_reason);
		s->fallback_reason = joined;
	}
	free(add);
}

void sense_report(struct sense *s, uint64_t event_ns, enum sense_activity kind)
{
	if (kind != SENSE_ACT_LOGIND_IDLE && event_ns > s->last_activity_ns)
		s->last_activity_ns = event_ns;
	/* Input and terminal reads come in bursts (a key press is several
	 * events, a pasted line many reads): one callback per burst. */
	if (kind == SENSE_ACT_INPUT || kind == SENSE_ACT_TTY) {
		uint64_t last = s->last_report_ns[kind];

		if (last && event_ns >= last && event_ns - last < SENSE_COALESCE_NS)
			return;
	}
	s->last_report_ns[kind] = event_ns;
	if (s->fn)
		s->fn(s->userdata, event_ns, kind);
}

/* libbpf logs to stderr by default; a library layer must not print. */
static int silent_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return 0;
}

static int on_ring_event(void *ctx, void *data, size_t size)
{
	struct sense *s = ctx;
	const struct probe_event *ev = data;

	if (size < sizeof(*ev))
		return 0;
	if (ev->kind == PROBE_EV_INPUT)
		sense_report(s, ev->ts_ns, SENSE_ACT_INPUT);
	return 0;
}

static int on_ring_ready(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct sense *s = userdata;

	(void)ring_buffer__consume(s->ring);
	return 0;
}

static void bpf_stop(struct sense *s)
{
	s->ring_source = sd_event_source_disable_unref(s->ring_source);
	ring_buffer__free(s->ring);
	s->ring = NULL;
	probe_bpf__destroy(s->skel);
	s->skel = NULL;
	s->fentry = false;
}

static int bpf_open_load(struct sense *s, bool with_fentry, struct probe_bpf **ret)
{
	struct probe_bpf *skel;
	int r;

	skel = probe_bpf__open();
	if (!skel)
		return negative_errno();
	skel->rodata->harvest_cgid = s->harvest_cgid;
	skel->rodata->coalesce_ns = SENSE_COALESCE_NS;
	bpf_program__set_autoload(skel->progs.handle_input, with_fentry);
	r = probe_bpf__load(skel);
	if (r < 0) {
		probe_bpf__destroy(skel);
		return r;
	}
	*ret = skel;
	return 0;
}

/* Load the probe; 0 with s->skel set, or -errno with the reason recorded. */
static int bpf_start(struct sense *s, bool try_fentry)
{
	libbpf_print_fn_t old_print = libbpf_set_print(silent_print);
	struct probe_bpf *skel = NULL;
	int r, r_fentry = 0;

	if (try_fentry) {
		r = bpf_open_load(s, true, &skel);
		if (r < 0)
			r_fentry = r;
	}
	if (!skel) {
		r = bpf_open_load(s, false, &skel);
		if (r < 0) {
			libbpf_set_print(old_print);
			sense_add_reason(s, "BPF probe failed to load: %s", strerror(-r));
			return r;
		}
		/* The rest loads without it, so the first failure was fentry's. */
		if (r_fentry < 0)
			sense_add_reason(s, "fentry/input_event refused: %s", strerror(-r_fentry));
		else if (!try_fentry)
			sense_add_reason(s, "fentry/input_event disabled by option");
	}
	s->skel = skel;

	skel->links.handle_switch = bpf_program__attach(skel->progs.handle_switch);
	if (!skel->links.handle_switch) {
		r = negative_errno();
		goto fail;
	}
	skel->links.handle_wakeup = bpf_program__attach(skel->progs.handle_wakeup);
	if (!skel->links.handle_wakeup) {
		r = negative_errno();
		goto fail;
	}
	skel->links.handle_wakeup_new = bpf_program__attach(skel->progs.handle_wakeup_new);
	if (!skel->links.handle_wakeup_new) {
		r = negative_errno();
		goto fail;
	}
	if (bpf_program__autoload(skel->progs.handle_input)) {
		skel->links.handle_input = bpf_program__attach(skel->progs.handle_input);
		if (skel->links.handle_input)
			s->fentry = true;
		else
			sense_add_reason(s, "fentry/input_event attach refused: %s", strerror(errno));
	}
	libbpf_set_print(old_print);

	r = libbpf_num_possible_cpus();
	if (r <= 0) {
		r = r < 0 ? r : -EINVAL;
		bpf_stop(s);
		sense_add_reason(s, "cannot count CPUs: %s", strerror(-r));
		return r;
	}
	s->ncpus = r;

	if (s->fentry) {
		s->ring = ring_buffer__new(bpf_map__fd(skel->maps.events), on_ring_event, s, NULL);
		if (!s->ring) {
			r = negative_errno();
			goto fail_input;
		}
		r = sd_event_add_io(s->event, &s->ring_source, ring_buffer__epoll_fd(s->ring), EPOLLIN,
				    on_ring_ready, s);
		if (r < 0)
			goto fail_input;
		(void)sd_event_source_set_description(s->ring_source, "sense-bpf-input");
	}
	return 0;

fail_input:
	/* Input from BPF is lost, the time split is not: keep the probe. */
	bpf_link__destroy(skel->links.handle_input);
	skel->links.handle_input = NULL;
	s->fentry = false;
	ring_buffer__free(s->ring);
	s->ring = NULL;
	sense_add_reason(s, "BPF input ring buffer: %s", strerror(-r));
	return 0;
fail:
	libbpf_set_print(old_print);
	sense_add_reason(s, "BPF probe failed to attach: %s", strerror(-r));
	bpf_stop(s);
	return r;
}

static int cpu_stat_path(const struct sense *s, char **ret)
{
	char *p;

	if (asprintf(&p, "%s/cpu.stat", s->harvest_cgroup) < 0)
		return -ENOMEM;
	*ret = p;
	return 0;
}

int sense_new(sd_event *e, const struct sense_opts *o, sense_activity_fn fn, void *userdata,
	      struct sense **ret)
{
	struct sense *s;
	struct stat st;
	const char *tty_dir;
	int r;

	if (!e || !o || !ret || !o->harvest_cgroup || o->harvest_cgroup[0] != '/')
		return -EINVAL;
	if (stat(o->harvest_cgroup, &st) < 0)
		return negative_errno();
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->event = sd_event_ref(e);
	s->fn = fn;
	s->userdata = userdata;
	s->evdev_inotify_fd = -1;
	s->tty_inotify_fd = -1;
	s->evdev_wd_dir = s->evdev_wd_parent = s->tty_wd_dir = -1;
	s->idle_hint = -1;
	/* A cgroup's id is its kernfs node id, which is its inode number. */
	s->harvest_cgid = (uint64_t)st.st_ino;
	s->harvest_cgroup = strdup(o->harvest_cgroup);
	if (!s->harvest_cgroup) {
		r = -ENOMEM;
		goto fail;
	}

	if (o->no_bpf)
		sense_add_reason(s, "BPF disabled by option");
	else
		(void)bpf_start(s, !o->no_fentry);

	if (!s->skel) {
		_cleanup_free_ char *cpu_stat = NULL;

		r = cpu_stat_path(s, &cpu_stat);
		if (r < 0)
			goto fail;
		r = procstat_read("/proc/stat", cpu_stat, &s->base);
		if (r < 0 && r != -ENOMEM) {
			/* No cpu.stat (not a cgroup2 folder): split without harvest. */
			sense_add_reason(s, "%s: %s, harvest time unknown", cpu_stat, strerror(-r));
			s->harvest_unknown = true;
			r = procstat_read("/proc/stat", NULL, &s->base);
		}
		if (r < 0)
			goto fail;
	}

	if (!s->fentry) {
		const char *dir = o->input_dir ? o->input_dir : "/dev/input";

		r = evdev_start(s, dir);
		if (r == -ENOMEM)
			goto fail;
		if (r < 0)
			sense_add_reason(s, "evdev watcher on %s: %s", dir, strerror(-r));
	}

	tty_dir = o->tty_dir ? o->tty_dir : "/dev/pts";
	if (tty_dir[0]) {
		r = tty_start(s, tty_dir);
		if (r == -ENOMEM)
			goto fail;
	}

	/* Absent bus or logind is a normal state: say nothing. */
	if (!o->no_logind)
		(void)logind_start(s);

	*ret = s;
	return 0;
fail:
	sense_free(s);
	return r;
}

struct sense *sense_free(struct sense *s)
{
	if (!s)
		return NULL;
	logind_stop(s);
	tty_stop(s);
	evdev_stop(s);
	bpf_stop(s);
	sd_event_unref(s->event);
	free(s->harvest_cgroup);
	free(s->fallback_reason);
	free(s);
	return NULL;
}

const char *sense_input_source(const struct sense *s)
{
	if (s->fentry)
		return "bpf";
	if (s->evdev_running)
		return "evdev";
	if (s->logind)
		return "logind";
	return "none";
}

const char *sense_time_source(const struct sense *s)
{
	return s->skel ? "bpf" : "procstat";
}

const char *sense_fallback_reason(const struct sense *s)
{
	return s->fallback_reason;
}

/* The per-CPU state, one entry per possible CPU; caller frees. */
static int read_cpus(struct sense *s, struct probe_cpu **ret)
{
	struct probe_cpu *v;
	uint32_t key = 0;

	v = calloc((size_t)s->ncpus, sizeof(*v));
	if (!v)
		return -ENOMEM;
	if (bpf_map_lookup_elem(bpf_map__fd(s->skel->maps.cpus), &key, v) < 0) {
		int r = negative_errno();

		free(v);
		return r;
	}
	*ret = v;
	return 0;
}

int sense_read_times(struct sense *s, struct sense_times *ret)
{
	struct sense_times t = {};
	int r;

	if (!s || !ret)
		return -EINVAL;

	if (s->skel) {
		_cleanup_free_ struct probe_cpu *v = NULL;
		uint64_t now;

		/* The clock first: a switch that lands between it and the copy
		 * is then in the copy, never counted twice. */
		now = sense_now_ns();
		r = read_cpus(s, &v);
		if (r < 0)
			return r;
		for (int i = 0; i < s->ncpus; i++) {
			uint64_t ns[PROBE_KINDS];

			memcpy(ns, v[i].ns, sizeof(ns));
			/* The task on the CPU now has run since the last switch;
			 * an idle CPU may not switch for seconds. */
			if (v[i].last_ns && v[i].kind < PROBE_KINDS && now > v[i].last_ns)
				ns[v[i].kind] += now - v[i].last_ns;
			t.idle_ns += ns[PROBE_IDLE];
			t.harvest_ns += ns[PROBE_HARVEST];
			t.foreground_ns += ns[PROBE_FOREGROUND];
		}
	} else {
		_cleanup_free_ char *cpu_stat = NULL;
		struct procstat_sample now;
		uint64_t busy;

		r = cpu_stat_path(s, &cpu_stat);
		if (r < 0)
			return r;
		r = procstat_read("/proc/stat", s->harvest_unknown ? NULL : cpu_stat, &now);
		if (r < 0)
			return r;
		/* Counters may step back a little (nohz iowait): clamp. */
		t.idle_ns = now.idle_ns > s->base.idle_ns ? now.idle_ns - s->base.idle_ns : 0;
		busy = now.busy_ns > s->base.busy_ns ? now.busy_ns - s->base.busy_ns : 0;
		t.harvest_ns = now.harvest_ns > s->base.harvest_ns ? now.harvest_ns - s->base.harvest_ns : 0;
		/* Harvest time is part of the busy time; the two counters
		 * tick differently (ticks vs exact), so never exceed it. */
		if (t.harvest_ns > busy)
			t.harvest_ns = busy;
		t.foreground_ns = busy - t.harvest_ns;
	}
	/* Callers take deltas: never step back. The per-CPU copy is not
	 * atomic against the probe, and in procstat mode the tick-counted
	 * busy time can lag the exact harvest usage, so a field may read a
	 * little lower than last time; hold it at the last value instead. */
	if (t.idle_ns < s->last_times.idle_ns)
		t.idle_ns = s->last_times.idle_ns;
	if (t.harvest_ns < s->last_times.harvest_ns)
		t.harvest_ns = s->last_times.harvest_ns;
	if (t.foreground_ns < s->last_times.foreground_ns)
		t.foreground_ns = s->last_times.foreground_ns;
	s->last_times = t;
	*ret = t;
	return 0;
}

int sense_read_intrusion(struct sense *s, struct sense_intrusion *ret)
{
	_cleanup_free_ struct probe_intrusion *v = NULL;
	struct sense_intrusion in = {};
	uint32_t key = 0;

	if (!s || !ret)
		return -EINVAL;
	if (!s->skel)
		return -EOPNOTSUPP;
	v = calloc((size_t)s->ncpus, sizeof(*v));
	if (!v)
		return -ENOMEM;
	if (bpf_map_lookup_elem(bpf_map__fd(s->skel->maps.intrusion), &key, v) < 0)
		return negative_errno();
	for (int i = 0; i < s->ncpus; i++) {
		in.total_ns += v[i].total_ns;
		in.count += v[i].count;
		if (v[i].max_ns > in.max_ns)
			in.max_ns = v[i].max_ns;
		for (int j = 0; j < SENSE_HIST_SLOTS; j++)
			in.hist[j] += v[i].hist[j];
	}
	*ret = in;
	return 0;
}

int sense_last_harvest_ns(struct sense *s, uint64_t *ret)
{
	_cleanup_free_ struct probe_cpu *v = NULL;
	uint64_t last = 0;
	int r;

	if (!s || !ret)
		return -EINVAL;
	if (!s->skel)
		return -EOPNOTSUPP;
	r = read_cpus(s, &v);
	if (r < 0)
		return r;
	for (int i = 0; i < s->ncpus; i++) {
		if (v[i].last_ns && v[i].kind == PROBE_HARVEST) {
			*ret = 0;
			return -EBUSY;
		}
		if (v[i].harvest_out_ns > last)
			last = v[i].harvest_out_ns;
	}
	*ret = last;
	return 0;
}

uint64_t sense_last_activity_ns(const struct sense *s)
{
	uint64_t last = s->last_activity_ns;

	/* The probe sees every input event, the ring buffer only the first
	 * of each burst. */
	if (s->fentry && s->skel->bss->last_input_ns > last)
		last = s->skel->bss->last_input_ns;
	return last;
}

int sense_probe_cost(struct sense *s, uint64_t *ret_run_ns, uint64_t *ret_run_cnt)
{
	struct bpf_program *progs[] = {
		s->skel ? s->skel->progs.handle_switch : NULL,
		s->skel ? s->skel->progs.handle_wakeup : NULL,
		s->skel ? s->skel->progs.handle_wakeup_new : NULL,
		s->skel ? s->skel->progs.handle_input : NULL,
	};
	uint64_t ns = 0, cnt = 0;

	if (!s->skel)
		return -EOPNOTSUPP;
	for (size_t i = 0; i < ELEMENTSOF(progs); i++) {
		struct bpf_prog_info info = {};
		uint32_t len = sizeof(info);
		int fd = bpf_program__fd(progs[i]);

		if (fd < 0) /* not loaded (fentry refused) */
			continue;
		if (bpf_obj_get_info_by_fd(fd, &info, &len) < 0)
			return negative_errno();
		ns += info.run_time_ns;
		cnt += info.run_cnt;
	}
	*ret_run_ns = ns;
	*ret_run_cnt = cnt;
	return 0;
}
