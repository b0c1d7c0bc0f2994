/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * harvester.conf: /etc/harvester/harvester.conf plus drop-ins in
 * /etc/harvester/harvester.conf.d/NAME.conf (read in lexical order, later
 * wins), systemd style: [Section], Key=value, # and ; comments, units on
 * values. Every bad value, unknown section or unknown key is an error that
 * names file, line, key and what was expected. Pure apart from reading the
 * files; no logging: errors go to the caller's callback.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config {
	/* [Budget] */
	uint32_t cpu_ppm;            /* CPU=1%: long-run share of the machine's total CPU */
	uint32_t gpu_ppm;            /* GPU=1% */
	uint64_t window_usec;        /* Window=24h */
	uint32_t burst_ppm;          /* Burst=50%: >= CPU, highest instantaneous share */

	/* [Idle] */
	uint64_t input_idle_usec;    /* InputIdleSec=3min */
	uint32_t max_foreground_cpu_ppm; /* MaxForegroundCPU=20% (0% = no limit) */
	bool on_battery;             /* OnBattery=no: harvest while on battery? */
	int32_t max_temperature_mc;  /* MaxTemperature=80C, millidegrees (0C = no limit) */
	uint32_t max_memory_pressure_ppm; /* MaxMemoryPressure=10%: PSI memory "some" avg10 (0% = none) */

	/* [Jobs] */
	char *job_user;              /* User=harvester */
	uint64_t job_memory_max_bytes;   /* MemoryMax=512M per job */
	uint64_t job_tasks_max;      /* TasksMax=64 per job */
	uint64_t job_runtime_max_usec;   /* RuntimeMaxSec=0 (none); wall time */
	unsigned max_jobs;           /* MaxJobs=1 running at once */

	/* [Daemon] */
	char *cgroup_root;           /* CgroupRoot= the delegated subtree; NULL = our own cgroup */
	bool use_bpf;                /* BPF=yes */
	bool opencl_cpu_devices;     /* OpenCLCPUDevices=no: treat OpenCL CPU devices (PoCL) as GPUs?
				      * Their work runs in the daemon, outside the CPU cap: tests only. */

	/* [Pool] (used by the link; parsed and checked now) */
	char *pool_url;
	char *pool_key;
	unsigned pool_max_tasks;     /* MaxTasks=2: pool tasks held (queued or running) at once */
	char *pool_ca_file;          /* CAFile= PEM CA bundle or pinned certificate, for tls+tcp:// */
};

/* Called once per error, with "FILE:LINE: Key=VALUE: what was expected". */
typedef void (*config_error_fn)(void *userdata, const char *file, unsigned line, const char *msg);

/* Fill c with the defaults above. */
void config_defaults(struct config *c);
void config_free(struct config *c);

/* Load path, then every *.conf in dropin_dir (NULL: path + ".d"). A missing
 * main file is not an error (defaults hold); an unreadable one is. Returns 0,
 * or -EINVAL after reporting every error through fn (may be NULL), or -errno.
 * *ret need not be initialised and is written only on success (free it with
 * config_free). An empty value ("CPU=") resets the key to its default. */
int config_load(const char *path, const char *dropin_dir, struct config *ret,
		config_error_fn fn, void *userdata);

/* Value parsers, exported for tests and for harvestctl pause --for.
 * Each returns 0 or -EINVAL/-ERANGE. */
int parse_percent_ppm(const char *s, uint32_t *ret);      /* "0.5%" -> 5000; the % is required */
int parse_timespan_usec(const char *s, uint64_t *ret);    /* "90s", "3min", "1h 30min", "250ms", bare number = seconds */
int parse_bytes(const char *s, uint64_t *ret);            /* "512M", "2G" (1024-based), bare = bytes */
int parse_temperature_mc(const char *s, int32_t *ret);    /* "80C" -> 80000 */
int parse_boolean(const char *s, bool *ret);              /* yes/no/true/false/on/off/1/0 */
/* Format usec as a systemd-style span ("3min 20s", "0", "infinity" for
 * UINT64_MAX) into buf; parse_timespan_usec reads it back. Returns buf. */
#define FORMAT_TIMESPAN_MAX 64
const char *format_timespan(char *buf, size_t len, uint64_t usec);
/* Format ppm as a percentage without trailing zeros ("14.2%", "10%"). Returns buf. */
#define FORMAT_PERCENT_MAX 16
const char *format_percent(char *buf, size_t len, uint32_t ppm);
