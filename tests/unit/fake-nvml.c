/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A stand-in for NVML (libnvidia-ml.so.1) with the five entry points
 * gpu/cuda.c loads, answering from a struct fake_nvml the test sets. The
 * types follow nvml.h's ABI (nvmlProcessInfo_t of the _v3 queries,
 * nvmlProcessUtilizationSample_t); they are written out here, not taken
 * from gpu/cuda-api.h, so a mistake there is not repeated here.
 */
#include <string.h>

#include "fake-nvml.h"

typedef struct {
	unsigned int pid;
	unsigned long long usedGpuMemory;
	unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
	unsigned int pid;
	unsigned long long timeStamp;
	unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

enum { OK = 0, NOT_FOUND = 6, INSUFFICIENT_SIZE = 7 };

static struct fake_nvml fake;
static int device;

void fake_nvml_set(const struct fake_nvml *f) { fake = *f; }
const struct fake_nvml *fake_nvml_get(void) { return &fake; }

unsigned nvmlInit_v2(void) { return OK; }

unsigned nvmlDeviceGetHandleByPciBusId_v2(const char *bus, void **dev)
{
	*dev = &device;
	return OK;
}

static unsigned list(const unsigned *pids, unsigned n, unsigned *count, nvmlProcessInfo_t *out)
{
	if (*count < n) {
		*count = n;
		return INSUFFICIENT_SIZE;
	}
	for (unsigned i = 0; i < n; i++)
		out[i] = (nvmlProcessInfo_t) { .pid = pids[i], .usedGpuMemory = 1 << 20 };
	*count = n;
	return OK;
}

unsigned nvmlDeviceGetComputeRunningProcesses_v3(void *dev, unsigned *count, nvmlProcessInfo_t *out)
{
	return list(fake.compute, fake.n_compute, count, out);
}

unsigned nvmlDeviceGetGraphicsRunningProcesses_v3(void *dev, unsigned *count, nvmlProcessInfo_t *out)
{
	return list(fake.graphics, fake.n_graphics, count, out);
}

unsigned nvmlDeviceGetProcessUtilization(void *dev, nvmlProcessUtilizationSample_t *out, unsigned *count,
					 unsigned long long since)
{
	unsigned store = fake.util_store > fake.n_samples ? fake.util_store : fake.n_samples;

	fake.util_calls++;
	if (fake.util_ret)
		return fake.util_ret;
	if (store == 0)
		return NOT_FOUND;
	if (!out || *count < store) {
		*count = store;
		return INSUFFICIENT_SIZE;
	}
	if (fake.n_samples == 0)
		return NOT_FOUND;
	for (unsigned i = 0; i < fake.n_samples; i++)
		out[i] = (nvmlProcessUtilizationSample_t) { .pid = fake.sample_pid[i], .timeStamp = since + 1,
							    .smUtil = fake.sample_sm[i] };
	*count = fake.n_samples;
	return OK;
}
