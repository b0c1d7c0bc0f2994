/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the stand-in libnvidia-ml.so.1 (fake-nvml.c) answers; test-gpu-nvml
 * sets it through fake_nvml_set(), found with dlsym. NVML is part of
 * NVIDIA's driver, which cannot exist on a machine without the GPU. */
#ifndef HARVESTER_FAKE_NVML_H
#define HARVESTER_FAKE_NVML_H

#define FAKE_NVML_MAX 8

struct fake_nvml {
	unsigned n_compute, compute[FAKE_NVML_MAX];     /* compute processes' pids */
	unsigned n_graphics, graphics[FAKE_NVML_MAX];   /* graphics processes' pids */
	/* nvmlDeviceGetProcessUtilization: util_ret, when not 0, is returned
	 * as it is; else a buffer smaller than util_store entries (the
	 * driver's sample store) gets INSUFFICIENT_SIZE and the store's size,
	 * as an H100's driver does, and then the samples or NOT_FOUND. */
	unsigned util_ret, util_store;
	unsigned n_samples, sample_pid[FAKE_NVML_MAX], sample_sm[FAKE_NVML_MAX];
	unsigned util_calls;                            /* counted by the fake */
};

typedef void fake_nvml_set_fn(const struct fake_nvml *f);
typedef const struct fake_nvml *fake_nvml_get_fn(void);

#endif
