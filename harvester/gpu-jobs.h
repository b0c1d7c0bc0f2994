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
 *  - GPU tasks from the pool (pool-link.c): the same queues, slicing, budget
 *    and policy, kept the same way (gpu-task.json has their "pool_task";
 *    buffers are argN.in and argN.out, the source source.cl or source.ptx).
 *
 * Kernel arguments of a local job, in order: the input buffer (if any), the
 * output buffer, then each scalar as a 32-bit unsigned int. A pool task
 * names its own (struct gpu_job_arg).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "gpu/gpu.h"
#include "harvester/jobs.h"

/* harvesterd's exit status when it stops to be started again (EX_TEMPFAIL):
 * harvesterd.service has RestartForceExitStatus= for it. */
#define HARVESTERD_EXIT_RESTART 75

#define GPU_JOB_MAX_BYTES (256ULL << 20)   /* per buffer */
#define GPU_JOB_MAX_SCALARS 8
#define GPU_JOB_MAX_ARGS 32

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

/* One kernel argument of a pool task, in the kernel's order. */
struct gpu_job_arg {
	enum gpu_arg_kind kind;      /* BUFFER, SCALAR or LOCAL */
	enum gpu_buffer_dir dir;     /* BUFFER */
	const char *name;            /* BUFFER OUT and INOUT: the output it is returned as */
	const void *data;            /* BUFFER IN and INOUT: its first contents, bytes long */
	size_t bytes;                /* BUFFER: its size; LOCAL: __local bytes; SCALAR: 1 to 16 */
	uint8_t value[16];           /* SCALAR, as the kernel's type (little-endian) */
};

/* A GPU task from the pool. */
struct gpu_pool_spec {
	enum gpu_backend backend;    /* OPENCL: source is OpenCL C; CUDA: PTX */
	const char *source;
	const char *kernel;
	unsigned work_dim;           /* 1 to 3 */
	size_t global[3];
	size_t local[3];             /* 0: the device picks (OpenCL only) */
	const struct gpu_job_arg *args;
	unsigned n_args;
	const char *refuse_reason;   /* set: the caller found it cannot run (the
				      * link's own limits); kept failed with this */
};

/* A kernel argument as the job keeps it. */
struct gpu_job_karg {
	enum gpu_arg_kind kind;
	enum gpu_buffer_dir dir;
	char *name;                  /* BUFFER OUT/INOUT of a pool task; else NULL */
	size_t bytes;
	uint8_t value[16];
	void *host;                  /* BUFFER, while on a queue */
};

/* A GPU job, local or from the pool. Only gpu-jobs.c changes it, except
 * pool_task, whose content pool-link.c owns (saved with gpu_jobs_save()). */
struct gpu_job {
	struct gpu_job *next;
	uint64_t id;
	enum job_state state;
	enum gpu_backend backend;
	char *source, *kernel, *reason;
	unsigned work_dim;
	size_t global[3], local[3];
	struct gpu_job_karg *args;
	unsigned n_args;
	int priority;
	unsigned attempts;
	uint64_t submitted_usec, started_usec, finished_usec;  /* CLOCK_REALTIME */
	uint64_t device_ns, chunks;
	char device_id[32];
	json_t *pool_task;           /* NULL for a local job */
	/* While on a queue: */
	struct gpu_dev *dev;
	struct gpu_buffer *bufs;
	struct gpu_arg *qargs;
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
/* A kernel faulted on some device: the CUDA driver refuses all further
 * work in this process, and only a restart of harvesterd gives the device
 * back (the device's tasks wait, queued, until then). */
bool gpu_jobs_faulted(const struct gpu_jobs *g);
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

/* Take a verified pool task: always a job (0 and *ret), which is queued on a
 * device of the spec's backend with the least work, or, when it cannot run
 * here (no such device, a description the device cannot run, a buffer too
 * large), already failed with the reason; POOL_TASK is referenced and kept
 * with it. -errno (nothing kept) only when it cannot be stored. */
int gpu_jobs_submit_pool(struct gpu_jobs *g, const struct gpu_pool_spec *spec, json_t *pool_task,
			 struct gpu_job **ret);
/* Write J's record again (after its pool_task changed). */
int gpu_jobs_save(struct gpu_jobs *g, struct gpu_job *j);
/* The first GPU job (lowest id); follow ->next. */
struct gpu_job *gpu_jobs_first(const struct gpu_jobs *g);
/* STATE/jobs/<id>/<file of argument ARG's result> into BUF: what an OUT or
 * INOUT buffer held when J was done. */
int gpu_jobs_output_path(const struct gpu_jobs *g, const struct gpu_job *j, unsigned arg, char *buf, size_t len);

/* Called on the loop when a GPU job has ended (done, failed, cancelled on
 * its queue) and its record and outputs are on disk: for the pool link. */
typedef void (*gpu_jobs_done_fn)(void *userdata, struct gpu_job *j);
void gpu_jobs_set_done_callback(struct gpu_jobs *g, gpu_jobs_done_fn fn, void *userdata);

unsigned gpu_jobs_n_devices(const struct gpu_jobs *g);
/* Device I (< gpu_jobs_n_devices()) if it takes work (its queue runs), else
 * NULL. It runs the task kind of its info->backend, and CUDA's too where
 * *ret_cuda_too (optional) says so (the same GPU through both backends). */
const struct gpu_device_info *gpu_jobs_device(const struct gpu_jobs *g, unsigned i, bool *ret_cuda_too);
/* status "gpu" object (control.h) */
json_t *gpu_jobs_status_json(struct gpu_jobs *g);
/* The exec jobs' array (consumed) and the GPU jobs, in id order; every entry
 * gets "kind": "exec" or "opencl". */
json_t *gpu_jobs_merge_json(struct gpu_jobs *g, json_t *exec_jobs);
/* The control socket's "submit-gpu" verb (caller already checked uid 0).
 * in_fd: the descriptor the request came with, or -1 (borrowed). */
json_t *gpu_jobs_control_submit(struct gpu_jobs *g, uid_t uid, json_t *req, int in_fd);
