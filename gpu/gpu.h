/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * GPU work for the pool: devices of every backend (OpenCL through the ICD
 * loader, CUDA's driver API through dlopen), and one priority queue per
 * device that runs each kernel in short slices of its ND-range, so the owner
 * gets the GPU back within one slice.
 *
 * Threading model (one sd-event loop drives the daemon):
 *
 *   Each queue owns one worker thread, and the loop owns everything else.
 *   The worker only executes what the loop grants it, one chunk at a time;
 *   every hook below runs on the loop thread, inside gpu_queue_kick(), so
 *   the caller's policy, budget and ledger need no locks.
 *
 *   Why a worker and not a "run one chunk and return" step on the loop:
 *   a chunk is at most a slice (2 ms), but around it sit calls that block for
 *   far longer and cannot be cut: building the OpenCL C source (PoCL runs
 *   LLVM: 100 ms to seconds), loading PTX, uploading and reading back
 *   buffers, and the device-busy check (NVML calls, a scan of every
 *   /proc/PID/fdinfo). The loop must keep reacting to user input within
 *   milliseconds, so none of that may run on it. The worker reports through
 *   an eventfd (gpu_queue_get_fd()) that the loop watches with EPOLLIN and
 *   answers with gpu_queue_kick().
 *
 * Dispatch rule, evaluated by gpu_queue_kick() before every chunk:
 *   not paused, && hooks.may_dispatch() (policy allows harvesting and the
 *   GPU budget has room: the caller's), && the device is otherwise idle
 *   (NVML or DRM fdinfo, checked on the worker right before the chunk runs;
 *   devices that say nothing: hooks.owner_idle()).
 * A "no" stops dispatch after the chunk in flight; the loop calls
 * gpu_queue_kick() again when its answer may have changed (policy change,
 * budget refill timer), and the queue resumes where it stopped.
 *
 * Library code: never prints; functions return 0 (or a count) or -errno.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GPU_SLICE_DEFAULT_NS (2 * 1000 * 1000ULL)  /* 2 ms */
#define GPU_BUSY_POLL_DEFAULT_NS (50 * 1000 * 1000ULL)

enum gpu_backend {
	GPU_BACKEND_OPENCL,
	GPU_BACKEND_CUDA,
};

/* How a device tells whether processes other than ours are using it. */
enum gpu_busy_source {
	GPU_BUSY_NONE,        /* says nothing: dispatch only while the owner is idle */
	GPU_BUSY_NVML,        /* nvmlDeviceGet{Compute,Graphics}RunningProcesses */
	GPU_BUSY_DRM_FDINFO,  /* drm-engine-* counters in /proc/PID/fdinfo, matched by drm-pdev */
};

struct gpu_device_info {
	enum gpu_backend backend;
	char id[32];              /* stable within a boot: "opencl:P:D", "cuda:N" */
	char name[128];
	char vendor[64];
	char version[64];         /* "OpenCL 3.0 ...", "CUDA 12.4 sm_90" */
	char pci_bus_id[20];      /* "0000:01:00.0", "" where unknown */
	uint64_t global_mem_bytes;
	unsigned compute_units;
	bool low_priority;        /* queue/stream at the lowest priority the device offers */
	bool cpu_device;          /* an OpenCL CPU device (PoCL): its work runs on the host's CPUs */
	enum gpu_busy_source busy_source;
	/* A kernel faulted (CUDA: an illegal address, a trap, a timeout): the
	 * driver's words. The driver keeps the process's CUDA unusable from
	 * then on, so the queue runs none of this device's tasks until
	 * harvesterd restarts; they stay queued. "" while all is well.
	 * Written once, by the queue's worker thread, then faulted is set
	 * (release); others read faulted (gpu_device_faulted) before it. */
	char fault[96];
	bool faulted;
	/* Why busy_source is NONE on a device that could say more, or "". */
	char busy_note[96];
};

struct gpu_device;

/* Whether info->fault holds a kernel's fault (safe from any thread). */
static inline bool gpu_device_faulted(const struct gpu_device_info *info)
{
	return __atomic_load_n(&info->faulted, __ATOMIC_ACQUIRE);
}

/* Every device of every backend present. A backend that is absent (no ICD,
 * no libcuda) adds none and is no error. ret_devices is a malloc'ed array;
 * free it with gpu_devices_free(). Returns the count. */
int gpu_devices_find(struct gpu_device ***ret_devices);
/* One backend: 0 devices is a count of 0; an absent backend is -ENOENT (no
 * driver/loader), -ENODEV (driver, no usable device) or -ENOSYS (a driver
 * too old for a function we need). */
int gpu_opencl_devices(struct gpu_device ***ret_devices);
/* What gpu_opencl_devices() would find, listed by a short-lived child
 * process: the ICD loader loads every installed driver into the process that
 * asks (PoCL brings LLVM, tens of MB), so a daemon asks here first and loads
 * OpenCL itself only when a device it will use is there. Returns the count
 * with ret_infos a malloc'ed array (NULL for 0), or the child's error, or
 * -EPIPE/-ETIMEDOUT when it died or hung (a broken driver). Forks: call it
 * before starting threads. */
int gpu_opencl_probe(struct gpu_device_info **ret_infos);
int gpu_cuda_devices(struct gpu_device ***ret_devices);
/* Why the CUDA backend is absent, for harvestctl status and test skips:
 * a constant string for an error gpu_cuda_devices() returned. */
const char *gpu_cuda_absent_reason(int error);
void gpu_devices_free(struct gpu_device **devices, int n);
const struct gpu_device_info *gpu_device_get_info(const struct gpu_device *d);
/* 1 when processes other than self use the device, 0 when none does,
 * -EOPNOTSUPP when the device cannot tell (busy_source NONE). Blocks (NVML,
 * /proc scan): the queue calls it on its worker. DRM fdinfo needs two
 * samples: the first call after open returns 1. */
int gpu_device_others_busy(struct gpu_device *d);

/* --- tasks ------------------------------------------------------------------ */

enum gpu_buffer_dir {
	GPU_BUFFER_IN = 1,     /* uploaded before the first chunk */
	GPU_BUFFER_OUT = 2,    /* read back after the last chunk; unwritten bytes undefined */
	GPU_BUFFER_INOUT = 3,
};

struct gpu_buffer {
	void *host;            /* the caller's memory: must live until the done hook */
	size_t size_bytes;
	enum gpu_buffer_dir dir;
};

enum gpu_arg_kind {
	GPU_ARG_BUFFER,        /* buffers[buffer] */
	GPU_ARG_SCALAR,        /* value[0..size) by value */
	GPU_ARG_LOCAL,         /* OpenCL __local memory of size bytes (CUDA: use shared_bytes) */
};

struct gpu_arg {
	enum gpu_arg_kind kind;
	unsigned buffer;
	size_t size;
	uint8_t value[16];
};

/*
 * One kernel over one ND-range. The queue slices dimension work_dim - 1 (the
 * slowest-varying one) in multiples of local[work_dim - 1] (1 where local is
 * 0), so every work-group runs whole and exactly once:
 *   OpenCL: chunks are launched with a global work offset, so get_global_id()
 *     is what the unsliced launch gives; the kernel needs no change.
 *   CUDA: there is no launch offset, so the queue appends three unsigned int
 *     parameters after the task's own: the chunk's first block in x, y, z.
 *     The kernel adds them to blockIdx (the pool's CUDA task contract).
 * The result is identical to running the whole ND-range at once, for kernels
 * whose work-items do not depend on running concurrently with others of
 * another chunk (no cross-work-group synchronisation, as OpenCL requires).
 */
struct gpu_task {
	uint64_t id;              /* the caller's; given back in the hooks */
	int priority;             /* higher first; equal priorities run oldest first */
	const char *source;       /* OpenCL C source, or PTX text for CUDA */
	const char *kernel;
	const char *build_options;/* OpenCL only; may be NULL */
	unsigned work_dim;        /* 1 to 3 */
	size_t global[3];         /* work-items (OpenCL) / threads (CUDA) per dimension */
	size_t local[3];          /* 0: OpenCL picks; CUDA requires it (block size) */
	unsigned shared_bytes;    /* CUDA dynamic shared memory */
	const struct gpu_buffer *buffers;
	unsigned n_buffers;
	const struct gpu_arg *args;
	unsigned n_args;
};

/* --- the queue ------------------------------------------------------------------ */

struct gpu_queue_hooks {
	/* Policy allows harvesting and the GPU budget has room. NULL: always. */
	bool (*may_dispatch)(void *userdata);
	/* For a device with busy_source NONE: the owner is idle (no input, no
	 * foreground load). NULL: never, so such a device never runs work. */
	bool (*owner_idle)(void *userdata);
	/* Device time of one finished chunk, measured by the device's own
	 * profiling (OpenCL events, CUDA events), for the GPU token bucket. */
	void (*charge)(void *userdata, uint64_t task_id, uint64_t device_ns);
	/* A task left the queue: 0 with its OUT buffers read back, -ECANCELED
	 * after gpu_queue_cancel(), or the -errno of the step that failed. */
	void (*done)(void *userdata, uint64_t task_id, int error);
};

struct gpu_queue_config {
	uint64_t slice_ns;        /* most device time a chunk may take; 0: run unsliced */
	uint64_t busy_poll_ns;    /* while others use the device, recheck this often;
				   * a "nobody else" is trusted this long */
	bool ignore_others_busy;  /* benchmarks only: measure what slicing alone costs
				   * a foreground job, with the queue not yielding */
};

struct gpu_queue_stats {
	uint64_t chunks, chunks_over_slice;
	uint64_t device_ns;       /* all charged */
	uint64_t max_chunk_ns;
	unsigned queued;          /* tasks not yet done */
	bool in_flight, paused, device_busy;
};

struct gpu_queue;

/* A queue on device (borrowed: it must outlive the queue); starts the
 * worker. config NULL: defaults (2 ms slices). */
int gpu_queue_new(struct gpu_device *device, const struct gpu_queue_config *config,
		  const struct gpu_queue_hooks *hooks, void *userdata, struct gpu_queue **ret);
/* Waits for the chunk in flight, releases every task (without their done
 * hooks) and the worker. NULL is fine. */
void gpu_queue_free(struct gpu_queue *q);
/* Readable (EPOLLIN) when the worker has something for gpu_queue_kick(). */
int gpu_queue_get_fd(const struct gpu_queue *q);
/* Add a task; the queue copies the description (not the buffers' memory).
 * -EINVAL for a task the device cannot run as described. Call
 * gpu_queue_kick() to start it. */
int gpu_queue_submit(struct gpu_queue *q, const struct gpu_task *task);
/* The queue's GPU as another backend sees it (its CUDA handle beside the
 * OpenCL one: same PCI bus id): tasks for that backend run through it in
 * this same queue, so one GPU keeps one order, one busy check and one chunk
 * in flight. Borrowed: it must outlive the queue. -EINVAL for a second one
 * or the queue's own backend. */
int gpu_queue_add_backend(struct gpu_queue *q, struct gpu_device *same_gpu);
/* gpu_queue_submit() for a task in BACKEND's language (OpenCL C, PTX): on
 * the queue's device or the one gpu_queue_add_backend() gave; -ENODEV if
 * neither is of that backend. */
int gpu_queue_submit_on(struct gpu_queue *q, const struct gpu_task *task, enum gpu_backend backend);
/* Drop a task: at once if it is not running, else after its chunk in
 * flight; done() reports -ECANCELED. -ENOENT if unknown. */
int gpu_queue_cancel(struct gpu_queue *q, uint64_t task_id);
/* Stop dispatch after the chunk in flight (user input, foreground GPU
 * process, exhausted budget) until gpu_queue_resume(). */
void gpu_queue_pause(struct gpu_queue *q);
void gpu_queue_resume(struct gpu_queue *q);
/* The loop's step: take what the worker finished (charge and done hooks),
 * then grant the next chunk if the dispatch rule allows. Never blocks.
 * Hooks may call submit, cancel, pause and resume, not gpu_queue_free().
 * Call on EPOLLIN of the fd and whenever may_dispatch()/owner_idle() may
 * have changed. Returns 1 if a chunk is in flight afterwards, 0 if not. */
int gpu_queue_kick(struct gpu_queue *q);
void gpu_queue_get_stats(const struct gpu_queue *q, struct gpu_queue_stats *ret);
/* Only during the done hook of a task that failed: the device's own words on
 * why (an OpenCL program's build log, CUDA's JIT error log), untruncated, or
 * NULL when it said nothing. */
const char *gpu_queue_done_log(const struct gpu_queue *q);
