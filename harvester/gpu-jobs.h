/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * GPU work in the daemon (issue 6), on the manager's one sd-event loop:
 *
 *  - The devices found at start, one entry per physical GPU: a GPU that both
 *    OpenCL and CUDA see (same PCI bus id) is listed once, on its OpenCL
 *    handle, with both backends named. An absent backend is no error.
 *  - One gpu_queue per device; its worker's eventfd is an sd-event source
 *    that calls gpu_queue_kick().
 *  - The GPU budget, [Budget] GPU=: a second struct budget, in device-usec
 *    per wall usec, one device counting as one CPU (capacity GPU x devices x
 *    Window), spent by the device time each chunk measured, kept in the same
 *    ledger file as the CPU bucket.
 *  - Dispatch: the policy allows harvesting (state idle; a CPU budget that is
 *    exhausted does not stop the GPU, which has its own) && the GPU bucket is
 *    not exhausted; devices that cannot tell whether others use them run only
 *    while no input came within InputIdleSec. Anything else pauses every
 *    queue after its chunk in flight.
 *  - Local OpenCL jobs (harvestctl submit-gpu), kept in STATE/jobs/<id>/
 *    (gpu-task.json, source.cl, input, and output when done) beside the exec
 *    jobs, sharing their ids; a job queued or running at a stop is queued
 *    again at the next start.
 *
 * Kernel arguments of a local job, in order: the input buffer (if any), the
 * output buffer, then each scalar as a 32-bit unsigned int.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GPU_JOB_MAX_BYTES (256ULL << 20)   /* per buffer */
#define GPU_JOB_MAX_SCALARS 8

struct gpu_jobs;
struct gpu_device;
struct manager;
struct ledger;

struct gpu_job_spec {
	const char *source;          /* OpenCL C */
	const char *kernel;
	unsigned work_dim;           /* 1 to 3 */
	size_t global[3];
	size_t local[3];             /* 0: the device picks */
	const void *input;           /* NULL: no input buffer */
	size_t input_bytes;
	size_t out_bytes;            /* > 0 */
	const uint32_t *scalars;
	unsigned n_scalars;
	int priority;                /* higher first */
};

/* A GPU both backends see: for each CUDA device, ret_same[i] is the index
 * of the OpenCL device with the same PCI bus id (any case), or -1 (also for
 * an unknown bus id). ret_same has ncu entries. */
void gpu_jobs_match_pci(struct gpu_device *const *cl, int ncl, struct gpu_device *const *cu, int ncu,
			int *ret_same);
/* Find the devices and restore the GPU bucket from STATE/ledger (call before
 * the manager's own ledger load, which saves the ledger with both buckets).
 * Absent backends are fine: 0 devices is a working state. */
int gpu_jobs_new(struct manager *m, struct gpu_jobs **ret);
/* Queues on m->event, and the jobs of STATE/jobs/ (m->jobs must be open:
 * their ids are registered there). */
int gpu_jobs_start(struct gpu_jobs *g);
/* Pause every queue, take the charges of the chunks in flight, free the
 * queues. Unfinished jobs stay queued on disk. Idempotent; NULL is fine. */
void gpu_jobs_stop(struct gpu_jobs *g);
struct gpu_jobs *gpu_jobs_free(struct gpu_jobs *g);

/* Apply the manager's state to the queues (from manager_evaluate). */
void gpu_jobs_evaluate(struct gpu_jobs *g);
/* Refill the bucket for the time since the last update and re-evaluate (the
 * budget may have resumed). 2: work arrived on an idle GPU since the ledger
 * was last written (save it now); 1: device time was spent or the GPU went
 * idle since then (save it on the usual schedule); 0: the ledger is current. */
int gpu_jobs_tick(struct gpu_jobs *g);
/* Put the GPU bucket into l before the manager saves it. */
void gpu_jobs_fill_ledger(struct gpu_jobs *g, struct ledger *l);
/* New [Budget] GPU= or Window= (SIGHUP). */
void gpu_jobs_reconfigure(struct gpu_jobs *g);

/* Queue an OpenCL job on the OpenCL device with the least work. -ENODEV
 * without an OpenCL device, -EINVAL for a bad description, -EFBIG for a
 * buffer over GPU_JOB_MAX_BYTES. */
int gpu_jobs_submit(struct gpu_jobs *g, const struct gpu_job_spec *spec, uint64_t *ret_id);
/* -ENOENT if no GPU job has the id, -EALREADY if it has ended. */
int gpu_jobs_cancel(struct gpu_jobs *g, uint64_t id);

/* Called on the loop when a GPU job ends (for the pool link: send the
 * result back): error 0 with its output (valid only during the call; also
 * in STATE/jobs/<id>/output), -ECANCELED, or the failure's -errno. */
typedef void (*gpu_jobs_done_fn)(void *userdata, uint64_t id, int error, const void *output, size_t out_bytes);
void gpu_jobs_set_done_callback(struct gpu_jobs *g, gpu_jobs_done_fn fn, void *userdata);

unsigned gpu_jobs_n_devices(const struct gpu_jobs *g);
/* status "gpu" object (control.h) */
json_t *gpu_jobs_status_json(struct gpu_jobs *g);
/* The exec jobs' array (consumed) and the GPU jobs, in id order; every entry
 * gets "kind": "exec" or "opencl". */
json_t *gpu_jobs_merge_json(struct gpu_jobs *g, json_t *exec_jobs);
/* What the devices can run, for the pool link's capabilities:
 * [{id, name, vendor, backends:["opencl",...], kinds:["opencl",...],
 *   global_mem_bytes, compute_units, low_priority, busy_detection}] */
json_t *gpu_jobs_capabilities_json(const struct gpu_jobs *g);
/* The control socket's "submit-gpu" verb (caller already checked uid 0). */
json_t *gpu_jobs_control_submit(struct gpu_jobs *g, uid_t uid, json_t *req);
