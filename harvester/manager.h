/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The daemon's state and its one sd-event loop (as systemd-oomd's manager). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "bpf/sense.h"
#include "cgroup/cgroup.h"
#include "harvester/budget.h"
#include "harvester/config.h"
#include "harvester/jobs.h"
#include "harvester/policy.h"

#define REACTION_SAMPLES 64

struct gpu_jobs;

struct reaction {
	int64_t to_last_run_usec;   /* -1: unknown (no BPF) */
	int64_t to_frozen_usec;
};

struct manager {
	sd_event *event;
	char *config_path;
	char *state_dir, *runtime_dir;
	struct config config;
	bool no_bpf;
	char *input_dir, *tty_dir;

	unsigned ncpus;
	char *cg_base, *cg_supervisor, *cg_jobs;
	bool have_cpu;                 /* cpu controller on jobs/: cpu.max keeps the cap */
	uint64_t jobs_cgroup_id;

	struct sense *sense;
	struct budget budget;
	struct policy policy;
	struct jobs *jobs;
	struct job_limits limits;
	struct pool_link *pool;        /* NULL without [Pool] URL= */
	struct gpu_jobs *gpu;          /* devices, queues, GPU budget, OpenCL jobs (gpu-jobs.h) */

	/* freezing */
	bool frozen;                   /* what we last wrote to jobs/cgroup.freeze */
	struct duty duty;
	bool duty_frozen;
	sd_event_source *duty_timer;

	/* inputs gathered for the policy */
	uint64_t last_activity_usec;
	bool logind_idle_known, logind_idle;
	uint64_t paused_until_usec;
	uint32_t foreground_ppm;
	struct sense_times last_times;
	bool on_battery;
	int32_t temperature_mc;
	uint32_t memory_pressure_ppm;

	/* reaction measurement: set on an input that froze running jobs */
	uint64_t pending_input_ns;
	sd_event_source *events_source;  /* jobs/cgroup.events, while waiting for frozen */
	struct reaction reactions[REACTION_SAMPLES];
	unsigned n_reactions;          /* total ever; ring index = n % REACTION_SAMPLES */

	sd_event_source *tick, *policy_timer, *control_source;
	uint64_t last_ledger_save_usec, last_saved_spent_usec;
	int control_fd;
};

struct manager_opts {
	const char *config_path, *state_dir, *runtime_dir;
	bool no_bpf;
	const char *input_dir, *tty_dir;   /* NULL: /dev/input, /dev/pts (tests point them elsewhere) */
};

/* Load the configuration (errors are logged; -EINVAL if it has any). */
int manager_new(const struct manager_opts *o, struct manager **ret);
struct manager *manager_free(struct manager *m);
/* Set up cgroups, probe, spool, control socket; then run the loop until SIGTERM. */
int manager_run(struct manager *m);

/* For the control socket. */
json_t *manager_status_json(struct manager *m);
json_t *manager_budget_json(struct manager *m);
int manager_pause(struct manager *m, uint64_t for_usec);
int manager_resume(struct manager *m);
/* Re-evaluate the policy now and apply it (freeze/thaw, start jobs). */
void manager_evaluate(struct manager *m, const char *why);

/* control.c */
int control_listen(struct manager *m);
