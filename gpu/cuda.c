/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The CUDA backend: the driver API (libcuda.so.1) and NVML
 * (libnvidia-ml.so.1), both opened at run time, so the package installs and
 * runs where there is no NVIDIA driver; absence is a normal state.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "gpu/backend.h"
#include "gpu/cuda-api.h"
#include "harvester/macro.h"

#define FIELD(field, symbol, type) __typeof__(type) field;
static struct {
	GCU_FUNCTIONS(FIELD)
} cu;
static struct {
	GNV_FUNCTIONS(FIELD)
} nv;
#undef FIELD

static pthread_once_t cu_once = PTHREAD_ONCE_INIT, nv_once = PTHREAD_ONCE_INIT;
static int cu_error = -ENOENT, nv_error = -ENOENT;

static void *symbol(void *lib, const char *name, const char *fallback)
{
	void *p = dlsym(lib, name);
	return p || !fallback ? p : dlsym(lib, fallback);
}


static void cu_load(void)
{
	/* HARVESTER_LIBCUDA: tests point it at a library that is not CUDA. */
	const char *name = secure_getenv("HARVESTER_LIBCUDA");
	void *lib = dlopen(name && *name ? name : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	gcu_result r;

	if (!lib) {
		cu_error = -ENOENT;
		return;
	}
#define LOAD(field, sym, type) \
	cu.field = (type) symbol(lib, #sym, !strcmp(#field, "EventElapsedTime") ? GCU_FALLBACK_EventElapsedTime : NULL); \
	if (!cu.field) { cu_error = -ENOSYS; dlclose(lib); return; }
	GCU_FUNCTIONS(LOAD)
#undef LOAD
	r = cu.Init(0);
	switch (r) {
	case GCU_SUCCESS:
		cu_error = 0;    /* the library stays loaded for the process's life */
		return;
	case GCU_ERROR_NO_DEVICE:
	case GCU_ERROR_INVALID_DEVICE:
		cu_error = -ENODEV;
		break;
	case GCU_ERROR_STUB_LIBRARY:
		cu_error = -ENOENT;
		break;
	case GCU_ERROR_SYSTEM_DRIVER_MISMATCH:
		cu_error = -ENOSYS;
		break;
	default:
		cu_error = -EIO;
	}
	memset(&cu, 0, sizeof(cu));
	dlclose(lib);
}

const char *gpu_cuda_absent_reason(int error)
{
	switch (error) {
	case 0:
		return "present";
	case -ENOENT:
		return "no driver: libcuda.so.1 not found";
	case -ENOSYS:
		return "driver too old: libcuda.so.1 lacks a function the backend needs";
	case -ENODEV:
		return "driver loaded but cuInit() found no CUDA device";
	case -ENOMEM:
		return "out of memory";
	default:
		return "driver present but cuInit() failed";
	}
}

static int cu_errno(gcu_result r)
{
	switch (r) {
	case GCU_SUCCESS:
		return 0;
	case GCU_ERROR_OUT_OF_MEMORY:
		return -ENOMEM;
	case GCU_ERROR_INVALID_VALUE:
		return -EINVAL;
	case GCU_ERROR_INVALID_IMAGE:
	case GCU_ERROR_NO_BINARY_FOR_GPU:
	case GCU_ERROR_INVALID_PTX:
	case GCU_ERROR_UNSUPPORTED_PTX_VERSION:
		return -ENOEXEC;
	case GCU_ERROR_NOT_FOUND:
		return -ENOENT;
	case GCU_ERROR_NO_DEVICE:
	case GCU_ERROR_INVALID_DEVICE:
		return -ENODEV;
	default:
		return -EIO;
	}
}

/* --- NVML --------------------------------------------------------------------- */

static bool nv_trace;

static void nv_load(void)
{
	void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);

	nv_trace = getenv("HARVESTER_GPU_DEBUG") != NULL;
	if (!lib)
		return;
#define LOAD(field, sym, type) \
	nv.field = (type) symbol(lib, #sym, \
		!strcmp(#field, "DeviceGetComputeRunningProcesses") ? GNV_FALLBACK_DeviceGetComputeRunningProcesses : \
		!strcmp(#field, "DeviceGetGraphicsRunningProcesses") ? GNV_FALLBACK_DeviceGetGraphicsRunningProcesses : NULL); \
	if (!nv.field) { nv_error = -ENOSYS; dlclose(lib); return; }
	GNV_FUNCTIONS(LOAD)
#undef LOAD
	if (nv.Init() != GNV_SUCCESS) {
		nv_error = -ENODEV;
		memset(&nv, 0, sizeof(nv));
		dlclose(lib);
		return;
	}
	nv_error = 0;
}

#define MAX_PROCS 64

/* HARVESTER_GPU_DEBUG=1 traces, on stderr, why NVML made the GPU busy. */
static int busy(const char *why, unsigned pid, pid_t self, long self_nvml)
{
	if (nv_trace)
		fprintf(stderr, "gpu: NVML: busy: %s pid %u (this process: pid %d here, %ld to NVML)\n",
			why, pid, (int) self, self_nvml);
	return 1;
}

/* The SM-time samples of the last second. NVML wants a buffer as large as
 * the driver's whole sample store (hundreds of entries on an H100, however
 * few processes ran), and says INSUFFICIENT_SIZE with the size it wants
 * to anything smaller: ask for the size, then for the samples. On
 * GNV_SUCCESS *ret (malloc'd) holds *count samples. */
#define MAX_SAMPLES 65536

static gnv_return nvml_samples(gnv_device dev, gnv_process_utilization **ret, unsigned int *count)
{
	gnv_process_utilization *buf = NULL;
	struct timeval tv;
	unsigned long long since;
	gnv_return r;

	gettimeofday(&tv, NULL);
	since = (unsigned long long) tv.tv_sec * USEC_PER_SEC + tv.tv_usec - USEC_PER_SEC;
	*ret = NULL;
	*count = 0;
	r = nv.DeviceGetProcessUtilization(dev, NULL, count, since);
	/* the store can grow between the two calls: one more try */
	for (int tries = 0; r == GNV_ERROR_INSUFFICIENT_SIZE && tries < 2; tries++) {
		unsigned int want = *count;

		if (want == 0 || want > MAX_SAMPLES)
			return GNV_ERROR_INSUFFICIENT_SIZE;
		free(buf);
		buf = calloc(want, sizeof(*buf));
		if (!buf)
			return GNV_ERROR_INSUFFICIENT_SIZE;
		r = nv.DeviceGetProcessUtilization(dev, buf, count, since);
		if (r == GNV_SUCCESS && *count > want)
			*count = want;
	}
	if (r == GNV_SUCCESS && !buf)   /* a NULL buffer and nothing to say */
		r = GNV_ERROR_NOT_FOUND;
	if (r != GNV_SUCCESS) {
		free(buf);
		return r;
	}
	*ret = buf;
	return r;
}

int gpu_nvml_others_busy(const char *pci_bus_id, bool self_present)
{
	gnv_process_info procs[MAX_PROCS];
	gnv_process_utilization *samples = NULL;
	unsigned int n = MAX_PROCS, ns = 0;
	long self_nvml = -1;         /* our pid as NVML gives it, once known */
	pid_t self = getpid();
	gnv_device dev;
	gnv_return r;

	pthread_once(&nv_once, nv_load);
	if (nv_error < 0)
		return nv_error;
	if (!pci_bus_id || !*pci_bus_id || nv.DeviceGetHandleByPciBusId(pci_bus_id, &dev) != GNV_SUCCESS)
		return -ENODEV;

	/* Someone else's CUDA program is foreground GPU work. NVML reports
	 * pids of the host's namespace: inside a container none is ours by
	 * number. While we hold a context we are one of the compute
	 * processes, so a list of one is us alone, and that entry's pid is
	 * ours to NVML (self_nvml) in the lists below too. */
	r = nv.DeviceGetComputeRunningProcesses(dev, &n, procs);
	if (r == GNV_ERROR_INSUFFICIENT_SIZE)
		return busy("more compute processes than fit in the list, first", 0, self, -1);
	if (r != GNV_SUCCESS)
		n = 0;
	if (n > MAX_PROCS)
		n = MAX_PROCS;
	for (unsigned i = 0; i < n; i++)
		if ((pid_t) procs[i].pid == self)
			self_nvml = procs[i].pid;
	if (self_nvml < 0 && self_present && n == 1)
		self_nvml = procs[0].pid;
	for (unsigned i = 0; i < n; i++)
		if (procs[i].pid != self_nvml)
			return busy("compute process", procs[i].pid, self, self_nvml);

	/* Graphics clients are different: a desktop's display server and
	 * compositor hold the GPU all the time. They count only while they
	 * spend SM time (utilization samples of the last second); compute
	 * processes (ours) were judged above. Where the device keeps no
	 * samples, a graphics client's presence alone counts. */
	r = nvml_samples(dev, &samples, &ns);
	if (r == GNV_ERROR_NOT_FOUND)   /* no samples in that second: nothing ran */
		return 0;
	if (r == GNV_SUCCESS) {
		int ret = 0;

		for (unsigned i = 0; i < ns && !ret; i++) {
			bool compute = (pid_t) samples[i].pid == self || samples[i].pid == self_nvml;
			for (unsigned j = 0; j < n; j++)
				compute |= samples[i].pid == procs[j].pid;
			if (!compute && samples[i].smUtil > 0)
				ret = busy("graphics client spending SM time,", samples[i].pid, self, self_nvml);
		}
		free(samples);
		return ret;
	}
	if (r == GNV_ERROR_INSUFFICIENT_SIZE)
		return busy("more utilization samples than fit in the list", 0, self, self_nvml);

	ns = MAX_PROCS;
	r = nv.DeviceGetGraphicsRunningProcesses(dev, &ns, procs);
	if (r == GNV_ERROR_INSUFFICIENT_SIZE)
		return busy("more graphics processes than fit in the list", 0, self, self_nvml);
	if (r != GNV_SUCCESS)
		return 0;
	for (unsigned i = 0; i < ns && i < MAX_PROCS; i++)
		if ((pid_t) procs[i].pid != self && procs[i].pid != self_nvml)
			return busy("graphics process (no utilization samples)", procs[i].pid, self, self_nvml);
	return 0;
}

/* --- the backend -------------------------------------------------------------- */

struct cuda_device {
	struct gpu_device base;
	gcu_device dev;
	gcu_context ctx;      /* the primary context, retained on first use */
	gcu_stream stream;
};

struct cuda_task {
	gcu_module module;
	gcu_function function;
	gcu_deviceptr *mems;
	unsigned n_mems;
	gcu_event start, end;
	char log[1024];
};

/* A kernel's fault, after which the driver refuses every call in this
 * process: remember the driver's words on the device (the queue then runs
 * none of its tasks) and say -EFAULT. */
static bool cu_sticky(gcu_result r)
{
	switch (r) {
	case GCU_ERROR_ILLEGAL_ADDRESS:
	case GCU_ERROR_LAUNCH_TIMEOUT:
	case GCU_ERROR_ASSERT:
	case GCU_ERROR_HARDWARE_STACK_ERROR:
	case GCU_ERROR_ILLEGAL_INSTRUCTION:
	case GCU_ERROR_MISALIGNED_ADDRESS:
	case GCU_ERROR_INVALID_ADDRESS_SPACE:
	case GCU_ERROR_INVALID_PC:
	case GCU_ERROR_LAUNCH_FAILED:
		return true;
	default:
		return false;
	}
}

static int cu_dev(struct cuda_device *d, gcu_result r)
{
	const char *words = NULL;

	if (!cu_sticky(r))
		return cu_errno(r);
	if (!gpu_device_faulted(&d->base.info)) {
		if (cu.GetErrorString(r, &words) != GCU_SUCCESS || !words)
			words = "a kernel faulted";
		snprintf(d->base.info.fault, sizeof(d->base.info.fault), "%s (CUDA error %u)", words, r);
		__atomic_store_n(&d->base.info.faulted, true, __ATOMIC_RELEASE);
	}
	return -EFAULT;
}

static int cuda_open(struct cuda_device *d)
{
	int least = 0, greatest = 0, r;

	if (d->stream)
		return cu_dev(d, cu.CtxSetCurrent(d->ctx));
	if (!d->ctx) {
		r = cu_dev(d, cu.DevicePrimaryCtxRetain(&d->ctx, d->dev));
		if (r < 0)
			return r;
		d->base.context_open = true;
	}
	r = cu_dev(d, cu.CtxSetCurrent(d->ctx));
	if (r < 0)
		return r;
	/* "least" is the numerically greatest value: the lowest priority. A
	 * foreground job's streams (default priority) are scheduled first. */
	r = cu_dev(d, cu.CtxGetStreamPriorityRange(&least, &greatest));
	if (r < 0)
		return r;
	r = cu_dev(d, cu.StreamCreateWithPriority(&d->stream, GCU_STREAM_NON_BLOCKING, least));
	if (r < 0)
		return r;
	d->base.info.low_priority = least != greatest;
	return 0;
}

static void cuda_release(struct gpu_device *dev, void *state)
{
	struct cuda_task *t = state;

	if (!t)
		return;
	for (unsigned i = 0; i < t->n_mems; i++)
		if (t->mems[i])
			cu.MemFree(t->mems[i]);
	free(t->mems);
	if (t->start)
		cu.EventDestroy(t->start);
	if (t->end)
		cu.EventDestroy(t->end);
	if (t->module)
		cu.ModuleUnload(t->module);
	free(t);
}

static int cuda_prepare(struct gpu_device *dev, const struct gpu_task *task, void **ret_state, char **ret_log)
{
	struct cuda_device *d = (struct cuda_device *) dev;
	unsigned int opts[] = { GCU_JIT_ERROR_LOG_BUFFER, GCU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES };
	struct cuda_task *t;
	void *vals[2];
	int r;

	if (gpu_device_faulted(&d->base.info))
		return -EFAULT;
	r = cuda_open(d);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < task->n_args; i++)
		if (task->args[i].kind == GPU_ARG_LOCAL)
			return -EINVAL;   /* CUDA has shared_bytes instead */
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	vals[0] = t->log;
	vals[1] = (void *) (uintptr_t) sizeof(t->log);
	r = cu_dev(d, cu.ModuleLoadDataEx(&t->module, task->source, ELEMENTSOF(opts), opts, vals));
	if (r < 0) {
		/* The JIT's words on the PTX, for the submitter. */
		t->log[sizeof(t->log) - 1] = 0;
		if (t->log[0])
			*ret_log = strdup(t->log);
		goto fail;
	}
	r = cu_dev(d, cu.ModuleGetFunction(&t->function, t->module, task->kernel));
	if (r < 0)
		goto fail;
	r = cu_dev(d, cu.EventCreate(&t->start, GCU_EVENT_DEFAULT));
	if (r < 0)
		goto fail;
	r = cu_dev(d, cu.EventCreate(&t->end, GCU_EVENT_DEFAULT));
	if (r < 0)
		goto fail;
	t->mems = calloc(task->n_buffers ? task->n_buffers : 1, sizeof(*t->mems));
	if (!t->mems) {
		r = -ENOMEM;
		goto fail;
	}
	t->n_mems = task->n_buffers;
	for (unsigned i = 0; i < task->n_buffers; i++) {
		const struct gpu_buffer *b = &task->buffers[i];
		r = cu_dev(d, cu.MemAlloc(&t->mems[i], b->size_bytes ? b->size_bytes : 1));
		if (r < 0)
			goto fail;
		if ((b->dir & GPU_BUFFER_IN) && b->size_bytes) {
			r = cu_dev(d, cu.MemcpyHtoD(t->mems[i], b->host, b->size_bytes));
			if (r < 0)
				goto fail;
		}
	}
	*ret_state = t;
	return 0;
fail:
	cuda_release(dev, t);
	return r;
}

static int cuda_run_chunk(struct gpu_device *dev, void *state, const struct gpu_task *task,
			  uint64_t offset, uint64_t count, uint64_t *ret_device_ns)
{
	struct cuda_device *d = (struct cuda_device *) dev;
	struct cuda_task *t = state;
	unsigned last = task->work_dim - 1, grid[3] = { 1, 1, 1 }, block[3] = { 1, 1, 1 }, boff[3] = {};
	void *params[task->n_args + 3];
	float ms = 0;
	int r;

	r = cu_dev(d, cu.CtxSetCurrent(d->ctx));
	if (r < 0)
		return r;
	for (unsigned i = 0; i < task->work_dim; i++) {
		block[i] = task->local[i];
		grid[i] = task->global[i] / task->local[i];
	}
	grid[last] = count / task->local[last];
	boff[last] = offset / task->local[last];
	for (unsigned i = 0; i < task->n_args; i++)
		params[i] = task->args[i].kind == GPU_ARG_BUFFER ? (void *) &t->mems[task->args[i].buffer]
								 : (void *) task->args[i].value;
	for (unsigned i = 0; i < 3; i++)
		params[task->n_args + i] = &boff[i];

	r = cu_dev(d, cu.EventRecord(t->start, d->stream));
	if (r >= 0)
		r = cu_dev(d, cu.LaunchKernel(t->function, grid[0], grid[1], grid[2], block[0], block[1], block[2],
					     task->shared_bytes, d->stream, params, NULL));
	if (r >= 0)
		r = cu_dev(d, cu.EventRecord(t->end, d->stream));
	if (r >= 0)
		r = cu_dev(d, cu.EventSynchronize(t->end));
	if (r >= 0)
		r = cu_dev(d, cu.EventElapsedTime(&ms, t->start, t->end));
	if (r < 0)
		return r;
	*ret_device_ns = ms > 0 ? (uint64_t) ((double) ms * 1e6) : 0;
	return 0;
}

static int cuda_finish(struct gpu_device *dev, void *state, const struct gpu_task *task)
{
	struct cuda_device *d = (struct cuda_device *) dev;
	struct cuda_task *t = state;
	int r = cu_dev(d, cu.CtxSetCurrent(d->ctx));

	for (unsigned i = 0; r >= 0 && i < task->n_buffers; i++) {
		const struct gpu_buffer *b = &task->buffers[i];
		if ((b->dir & GPU_BUFFER_OUT) && b->size_bytes)
			r = cu_dev(d, cu.MemcpyDtoH(b->host, t->mems[i], b->size_bytes));
	}
	return r;
}

static int cuda_others_busy(struct gpu_device *dev)
{
	return dev->info.busy_source == GPU_BUSY_NVML ? gpu_nvml_others_busy(dev->info.pci_bus_id, gpu_self_present(dev))
						    : -EOPNOTSUPP;
}

static void cuda_free(struct gpu_device *dev)
{
	struct cuda_device *d = (struct cuda_device *) dev;

	if (d->stream)
		cu.StreamDestroy(d->stream);
	if (d->ctx)
		cu.DevicePrimaryCtxRelease(d->dev);
	free(d);
}

static const struct gpu_backend_ops cuda_ops = {
	.prepare = cuda_prepare,
	.run_chunk = cuda_run_chunk,
	.finish = cuda_finish,
	.release = cuda_release,
	.others_busy = cuda_others_busy,
	.free = cuda_free,
};

int gpu_cuda_devices(struct gpu_device ***ret_devices)
{
	struct gpu_device **v;
	int n = 0, r, version = 0;

	pthread_once(&cu_once, cu_load);
	if (cu_error < 0)
		return cu_error;
	r = cu_errno(cu.DeviceGetCount(&n));
	if (r < 0)
		return r;
	if (n == 0)
		return -ENODEV;
	cu.DriverGetVersion(&version);
	v = calloc(n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		struct cuda_device *d = calloc(1, sizeof(*d));
		struct gpu_device_info *info;
		int major = 0, minor = 0, sms = 0;
		size_t mem = 0;

		if (!d) {
			gpu_devices_free(v, i);
			return -ENOMEM;
		}
		v[i] = &d->base;
		d->base.ops = &cuda_ops;
		info = &d->base.info;
		info->backend = GPU_BACKEND_CUDA;
		snprintf(info->id, sizeof(info->id), "cuda:%d", i);
		r = cu_errno(cu.DeviceGet(&d->dev, i));
		if (r < 0) {
			gpu_devices_free(v, i + 1);
			return r;
		}
		cu.DeviceGetName(info->name, sizeof(info->name), d->dev);
		info->name[sizeof(info->name) - 1] = 0;
		snprintf(info->vendor, sizeof(info->vendor), "NVIDIA Corporation");
		cu.DeviceGetAttribute(&major, GCU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d->dev);
		cu.DeviceGetAttribute(&minor, GCU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d->dev);
		cu.DeviceGetAttribute(&sms, GCU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d->dev);
		snprintf(info->version, sizeof(info->version), "CUDA %d.%d sm_%d%d",
			 version / 1000, version % 1000 / 10, major, minor);
		if (cu.DeviceTotalMem(&mem, d->dev) == GCU_SUCCESS)
			info->global_mem_bytes = mem;
		info->compute_units = sms;
		if (cu.DeviceGetPCIBusId(info->pci_bus_id, sizeof(info->pci_bus_id), d->dev) != GCU_SUCCESS)
			info->pci_bus_id[0] = 0;
		info->pci_bus_id[sizeof(info->pci_bus_id) - 1] = 0;
		info->low_priority = true;   /* confirmed (or not) when the stream is made */
		info->busy_source = gpu_nvml_others_busy(info->pci_bus_id, false) >= 0 ? GPU_BUSY_NVML : GPU_BUSY_NONE;
	}
	*ret_devices = v;
	return n;
}
