/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Private to gpu/: what a backend implements for the queue. */
#pragma once

#include "gpu/gpu.h"

struct gpu_device;

struct gpu_backend_ops {
	/* Build the source, create buffers and upload the IN ones. Blocks. On
	 * failure *ret_log may get a malloc'ed message in the device's own
	 * words (the compiler's build log), which the queue hands to done(). */
	int (*prepare)(struct gpu_device *d, const struct gpu_task *t, void **ret_state, char **ret_log);
	/* Run the work-groups [offset, offset + count) of dimension work_dim - 1
	 * (counted in work-items/threads, multiples of local), wait for them,
	 * and give the device time the profiling measured. */
	int (*run_chunk)(struct gpu_device *d, void *state, const struct gpu_task *t,
			 uint64_t offset, uint64_t count, uint64_t *ret_device_ns);
	/* Read the OUT buffers back into the task's host memory. */
	int (*finish)(struct gpu_device *d, void *state, const struct gpu_task *t);
	void (*release)(struct gpu_device *d, void *state);
	/* gpu_device_others_busy() */
	int (*others_busy)(struct gpu_device *d);
	void (*free)(struct gpu_device *d);
};

/* 1-D OpenCL tasks that leave the work-group size to the runtime are cut
 * into multiples of this, and launched with it as their work-group size
 * (the short tail excepted): runtimes that compile a kernel per work-group
 * size (PoCL does, taking tens of ms, inside the command's profiled time)
 * would otherwise compile anew for nearly every chunk size. */
#define GPU_OPENCL_AUTO_GRANULE 64

/* Every backend's device starts with this. */
struct gpu_device {
	const struct gpu_backend_ops *ops;
	struct gpu_device_info info;
	struct gpu_drm_busy *drm;  /* busy_source DRM_FDINFO */
	bool context_open;         /* this process holds a context on the GPU through it */
	struct gpu_device *sibling;/* the same GPU through the other backend (one queue), or NULL */
};

/* Whether one of the GPU's compute processes is this one, through either
 * backend: NVML then lists us, and must not count us as another user. */
static inline bool gpu_self_present(const struct gpu_device *d)
{
	return d->context_open || (d->sibling && d->sibling->context_open);
}

/* DRM fdinfo busy detection (drm.c). proc is "/proc" except in tests. */
struct gpu_drm_busy;
int gpu_drm_busy_new(const char *proc, const char *pdev, int self_pid, struct gpu_drm_busy **ret);
void gpu_drm_busy_free(struct gpu_drm_busy *b);
/* 1 if some other process's drm-engine-* time on pdev grew since the last
 * call (the first call: 1, as nothing is known yet), else 0. */
int gpu_drm_busy_sample(struct gpu_drm_busy *b);
/* Is the PCI device pdev driven by a DRM driver (sys is "/sys")? Such a
 * driver reports per-client engine time in fdinfo (Linux 5.19 and newer). */
bool gpu_drm_is_drm_device(const char *sys, const char *pdev);
/* Can this process read every other process's fdinfo? Another user's
 * /proc/PID/fdinfo needs CAP_SYS_PTRACE (and a /proc mounted with
 * hidepid= lists such processes only to a holder of it): without it the
 * other users' DRM clients would be invisible, and the GPU would look idle
 * while the owner's game runs on it. status is "/proc/self/status" except
 * in tests. */
bool gpu_drm_sees_all_clients(const char *status);

/* NVML (cuda.c): 1 if processes other than self use the GPU at this PCI
 * address, 0 if not; -ENOENT without NVML, -ENODEV for an unknown device.
 * self_present: we hold a context on it (so one compute process is us,
 * whatever pid NVML, which sees the host's pid namespace, gives it). */
int gpu_nvml_others_busy(const char *pci_bus_id, bool self_present);
