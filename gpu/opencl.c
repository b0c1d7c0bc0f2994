/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The OpenCL backend, through the ICD loader (ocl-icd). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CL/cl.h>
#include <CL/cl_ext.h>

#include "gpu/backend.h"
#include "harvester/macro.h"

struct cl_device {
	struct gpu_device base;
	cl_platform_id platform;
	cl_device_id device;
	bool priority_hints;
	cl_uint vendor_id;
	/* Made on first use, on the queue's worker: a context costs memory on
	 * the device, and listing devices should not. */
	cl_context context;
	cl_command_queue queue;
};

struct cl_task {
	cl_program program;
	cl_kernel kernel;
	cl_mem *mems;
	unsigned n_mems;
};

static int cl_errno(cl_int e)
{
	switch (e) {
	case CL_SUCCESS:
		return 0;
	case CL_OUT_OF_HOST_MEMORY:
	case CL_OUT_OF_RESOURCES:
	case CL_MEM_OBJECT_ALLOCATION_FAILURE:
		return -ENOMEM;
	case CL_BUILD_PROGRAM_FAILURE:
	case CL_COMPILER_NOT_AVAILABLE:
	case CL_INVALID_PROGRAM_EXECUTABLE:
		return -ENOEXEC;
	case CL_INVALID_KERNEL_NAME:
		return -ENOENT;
	case CL_DEVICE_NOT_AVAILABLE:
		return -ENODEV;
	case CL_PLATFORM_NOT_FOUND_KHR:
		return -ENOENT;
	default:
		return e <= CL_INVALID_VALUE ? -EINVAL : -EIO;
	}
}

static void cl_release(struct gpu_device *d, void *state)
{
	struct cl_task *t = state;

	if (!t)
		return;
	for (unsigned i = 0; i < t->n_mems; i++)
		if (t->mems[i])
			clReleaseMemObject(t->mems[i]);
	free(t->mems);
	if (t->kernel)
		clReleaseKernel(t->kernel);
	if (t->program)
		clReleaseProgram(t->program);
	free(t);
}

static int cl_open(struct cl_device *d)
{
	cl_context_properties cprops[] = { CL_CONTEXT_PLATFORM, (cl_context_properties) d->platform, 0 };
	cl_queue_properties low[] = { CL_QUEUE_PROPERTIES, CL_QUEUE_PROFILING_ENABLE,
				      CL_QUEUE_PRIORITY_KHR, CL_QUEUE_PRIORITY_LOW_KHR, 0 };
	cl_queue_properties plain[] = { CL_QUEUE_PROPERTIES, CL_QUEUE_PROFILING_ENABLE, 0 };
	cl_int e;

	if (d->queue)
		return 0;
	if (!d->context) {
		d->context = clCreateContext(cprops, 1, &d->device, NULL, NULL, &e);
		if (!d->context)
			return cl_errno(e);
		d->base.context_open = true;
	}
	/* Lowest priority where offered, so a foreground GPU job's work goes
	 * first between (and, where the device preempts, within) our chunks. */
	d->queue = clCreateCommandQueueWithProperties(d->context, d->device,
						      d->priority_hints ? low : plain, &e);
	if (!d->queue && d->priority_hints) {
		d->priority_hints = false;
		d->base.info.low_priority = false;
		d->queue = clCreateCommandQueueWithProperties(d->context, d->device, plain, &e);
	}
	return d->queue ? 0 : cl_errno(e);
}

/* The compiler's build log of a program that did not build: malloc'ed,
 * NULL if the runtime has none. */
static char *build_log(cl_program program, cl_device_id device)
{
	size_t n = 0;
	char *log;

	if (clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) != CL_SUCCESS || n <= 1)
		return NULL;
	log = malloc(n + 1);
	if (!log)
		return NULL;
	if (clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, n, log, NULL) != CL_SUCCESS) {
		free(log);
		return NULL;
	}
	log[n] = 0;
	return log;
}

static int cl_prepare(struct gpu_device *dev, const struct gpu_task *task, void **ret_state, char **ret_log)
{
	struct cl_device *d = (struct cl_device *) dev;
	struct cl_task *t;
	unsigned last = task->work_dim - 1;
	char prelude[512];
	int k;
	const char *src[2] = { prelude, task->source };
	size_t len[2];
	cl_int e;
	int r;

	r = cl_open(d);
	if (r < 0)
		return r;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	/* A chunk is a launch of its own, so get_global_size(), get_num_groups()
	 * and get_group_id() would describe the chunk; make them describe the
	 * whole ND-range, as the unsliced launch would (a macro is not
	 * expanded again inside its own expansion, so the builtin is called).
	 * get_global_id() needs nothing: the global work offset keeps it. */
	k = snprintf(prelude, sizeof(prelude),
		     "#define get_global_size(d) ((d) == %u ? (size_t) %zuUL : get_global_size(d))\n"
		     "#define get_group_id(d) (get_group_id(d) + get_global_offset(d) / get_local_size(d))\n",
		     last, task->global[last]);
	if (task->local[0])
		k += snprintf(prelude + k, sizeof(prelude) - k,
			      "#define get_num_groups(d) ((d) == %u ? (size_t) %zuUL : get_num_groups(d))\n",
			      last, task->global[last] / task->local[last]);
	snprintf(prelude + k, sizeof(prelude) - k, "#line 1\n");
	len[0] = strlen(prelude);
	len[1] = strlen(task->source);
	t->program = clCreateProgramWithSource(d->context, 2, src, len, &e);
	if (!t->program)
		goto fail;
	e = clBuildProgram(t->program, 1, &d->device, task->build_options ? task->build_options : "", NULL, NULL);
	if (e != CL_SUCCESS) {
		/* The submitter needs the compiler's words, not just "did not build". */
		if (e == CL_BUILD_PROGRAM_FAILURE)
			*ret_log = build_log(t->program, d->device);
		goto fail;
	}
	t->kernel = clCreateKernel(t->program, task->kernel, &e);
	if (!t->kernel)
		goto fail;

	t->mems = calloc(task->n_buffers ? task->n_buffers : 1, sizeof(cl_mem));
	if (!t->mems) {
		e = CL_OUT_OF_HOST_MEMORY;
		goto fail;
	}
	t->n_mems = task->n_buffers;
	for (unsigned i = 0; i < task->n_buffers; i++) {
		const struct gpu_buffer *b = &task->buffers[i];
		cl_mem_flags fl = b->dir == GPU_BUFFER_IN ? CL_MEM_READ_ONLY :
				  b->dir == GPU_BUFFER_OUT ? CL_MEM_WRITE_ONLY : CL_MEM_READ_WRITE;
		if (b->dir & GPU_BUFFER_IN)
			fl |= CL_MEM_COPY_HOST_PTR;
		t->mems[i] = clCreateBuffer(d->context, fl, b->size_bytes ? b->size_bytes : 1,
					    (b->dir & GPU_BUFFER_IN) && b->size_bytes ? b->host : NULL, &e);
		if (!t->mems[i])
			goto fail;
	}
	for (unsigned i = 0; i < task->n_args; i++) {
		const struct gpu_arg *a = &task->args[i];
		switch (a->kind) {
		case GPU_ARG_BUFFER:
			e = clSetKernelArg(t->kernel, i, sizeof(cl_mem), &t->mems[a->buffer]);
			break;
		case GPU_ARG_SCALAR:
			e = clSetKernelArg(t->kernel, i, a->size, a->value);
			break;
		case GPU_ARG_LOCAL:
			e = clSetKernelArg(t->kernel, i, a->size, NULL);
			break;
		default:
			e = CL_INVALID_VALUE;
		}
		if (e != CL_SUCCESS)
			goto fail;
	}
	*ret_state = t;
	return 0;
fail:
	r = cl_errno(e);
	cl_release(dev, t);
	return r < 0 ? r : -EIO;
}

static int cl_run_chunk(struct gpu_device *dev, void *state, const struct gpu_task *task,
			uint64_t offset, uint64_t count, uint64_t *ret_device_ns)
{
	struct cl_device *d = (struct cl_device *) dev;
	struct cl_task *t = state;
	unsigned last = task->work_dim - 1;
	size_t goff[3] = {}, gsize[3], lsize[3];
	cl_ulong start = 0, end = 0;
	cl_event ev = NULL;
	cl_int e;

	for (unsigned i = 0; i < task->work_dim; i++) {
		gsize[i] = task->global[i];
		lsize[i] = task->local[i];
	}
	goff[last] = offset;
	gsize[last] = count;
	if (task->work_dim == 1 && !task->local[0] && count % GPU_OPENCL_AUTO_GRANULE == 0)
		lsize[0] = GPU_OPENCL_AUTO_GRANULE;
	e = clEnqueueNDRangeKernel(d->queue, t->kernel, task->work_dim, goff, gsize,
				   lsize[0] ? lsize : NULL, 0, NULL, &ev);
	if (e != CL_SUCCESS)
		return cl_errno(e);
	e = clWaitForEvents(1, &ev);
	if (e == CL_SUCCESS)
		e = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof(start), &start, NULL);
	if (e == CL_SUCCESS)
		e = clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof(end), &end, NULL);
	clReleaseEvent(ev);
	if (e != CL_SUCCESS)
		return cl_errno(e);
	*ret_device_ns = end > start ? end - start : 0;
	return 0;
}

static int cl_finish(struct gpu_device *dev, void *state, const struct gpu_task *task)
{
	struct cl_device *d = (struct cl_device *) dev;
	struct cl_task *t = state;

	for (unsigned i = 0; i < task->n_buffers; i++) {
		const struct gpu_buffer *b = &task->buffers[i];
		cl_int e;

		if (!(b->dir & GPU_BUFFER_OUT) || b->size_bytes == 0)
			continue;
		e = clEnqueueReadBuffer(d->queue, t->mems[i], CL_TRUE, 0, b->size_bytes, b->host, 0, NULL, NULL);
		if (e != CL_SUCCESS)
			return cl_errno(e);
	}
	return 0;
}

static int cl_others_busy(struct gpu_device *dev)
{
	switch (dev->info.busy_source) {
	case GPU_BUSY_NVML:
		return gpu_nvml_others_busy(dev->info.pci_bus_id, gpu_self_present(dev));
	case GPU_BUSY_DRM_FDINFO:
		return gpu_drm_busy_sample(dev->drm);
	default:
		return -EOPNOTSUPP;
	}
}

static void cl_free(struct gpu_device *dev)
{
	struct cl_device *d = (struct cl_device *) dev;

	if (d->queue)
		clReleaseCommandQueue(d->queue);
	if (d->context)
		clReleaseContext(d->context);
	gpu_drm_busy_free(dev->drm);
	free(d);
}

static const struct gpu_backend_ops cl_ops = {
	.prepare = cl_prepare,
	.run_chunk = cl_run_chunk,
	.finish = cl_finish,
	.release = cl_release,
	.others_busy = cl_others_busy,
	.free = cl_free,
};

static void device_string(cl_device_id dev, cl_device_info what, char *buf, size_t size)
{
	_cleanup_free_ char *all = NULL;
	size_t n = 0;

	buf[0] = 0;
	/* Ask the length first: a buffer that is too short is an error, not a
	 * truncation (PoCL's version string is 65 bytes). */
	if (clGetDeviceInfo(dev, what, 0, NULL, &n) != CL_SUCCESS || n == 0)
		return;
	all = malloc(n + 1);
	if (!all || clGetDeviceInfo(dev, what, n, all, NULL) != CL_SUCCESS)
		return;
	all[n] = 0;
	snprintf(buf, size, "%s", all);
}

static bool has_extension(cl_device_id dev, const char *ext)
{
	_cleanup_free_ char *all = NULL;
	size_t size = 0, n = strlen(ext);

	if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &size) != CL_SUCCESS || size == 0)
		return false;
	all = malloc(size + 1);
	if (!all || clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, size, all, NULL) != CL_SUCCESS)
		return false;
	all[size] = 0;
	for (const char *p = all; (p = strstr(p, ext)); p += n)
		if ((p == all || p[-1] == ' ') && (p[n] == 0 || p[n] == ' '))
			return true;
	return false;
}

static int make_device(cl_platform_id platform, cl_device_id device, unsigned pi, unsigned di,
		       struct gpu_device **ret)
{
	struct cl_device *d = calloc(1, sizeof(*d));
	struct gpu_device_info *info;
	cl_ulong mem = 0;
	cl_uint cu = 0;

	if (!d)
		return -ENOMEM;
	d->base.ops = &cl_ops;
	d->platform = platform;
	d->device = device;
	info = &d->base.info;
	info->backend = GPU_BACKEND_OPENCL;
	snprintf(info->id, sizeof(info->id), "opencl:%u:%u", pi, di);
	device_string(device, CL_DEVICE_NAME, info->name, sizeof(info->name));
	device_string(device, CL_DEVICE_VENDOR, info->vendor, sizeof(info->vendor));
	device_string(device, CL_DEVICE_VERSION, info->version, sizeof(info->version));
	if (clGetDeviceInfo(device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof(mem), &mem, NULL) == CL_SUCCESS)
		info->global_mem_bytes = mem;
	if (clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof(cu), &cu, NULL) == CL_SUCCESS)
		info->compute_units = cu;
	cl_device_type type = 0;
	if (clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof(type), &type, NULL) == CL_SUCCESS)
		info->cpu_device = (type & CL_DEVICE_TYPE_CPU) != 0;
	clGetDeviceInfo(device, CL_DEVICE_VENDOR_ID, sizeof(d->vendor_id), &d->vendor_id, NULL);
	d->priority_hints = has_extension(device, "cl_khr_priority_hints");
	info->low_priority = d->priority_hints;

	if (has_extension(device, "cl_khr_pci_bus_info")) {
		cl_device_pci_bus_info_khr pci;
		if (clGetDeviceInfo(device, CL_DEVICE_PCI_BUS_INFO_KHR, sizeof(pci), &pci, NULL) == CL_SUCCESS)
			snprintf(info->pci_bus_id, sizeof(info->pci_bus_id), "%04x:%02x:%02x.%x",
				 pci.pci_domain, pci.pci_bus, pci.pci_device, pci.pci_function);
	}
	info->busy_source = GPU_BUSY_NONE;
	/* NVIDIA's driver keeps its clients out of DRM fdinfo; NVML knows them. */
	if (info->pci_bus_id[0] && d->vendor_id == 0x10de && gpu_nvml_others_busy(info->pci_bus_id, false) >= 0)
		info->busy_source = GPU_BUSY_NVML;
	else if (!gpu_drm_is_drm_device("/sys", info->pci_bus_id))
		;   /* says nothing: runs only while the owner is idle */
	else if (!gpu_drm_sees_all_clients("/proc/self/status"))
		snprintf(info->busy_note, sizeof(info->busy_note),
			 "DRM fdinfo of other users' processes needs CAP_SYS_PTRACE");
	else if (gpu_drm_busy_new("/proc", info->pci_bus_id, getpid(), &d->base.drm) >= 0)
		info->busy_source = GPU_BUSY_DRM_FDINFO;
	*ret = &d->base;
	return 0;
}

int gpu_opencl_devices(struct gpu_device ***ret_devices)
{
	_cleanup_free_ cl_platform_id *platforms = NULL;
	struct gpu_device **v = NULL;
	cl_uint np = 0;
	int n = 0, r;
	cl_int e;

	e = clGetPlatformIDs(0, NULL, &np);
	if (e == CL_PLATFORM_NOT_FOUND_KHR || (e == CL_SUCCESS && np == 0))
		return -ENOENT;   /* the loader found no ICD */
	if (e != CL_SUCCESS)
		return cl_errno(e);
	platforms = calloc(np, sizeof(*platforms));
	if (!platforms)
		return -ENOMEM;
	e = clGetPlatformIDs(np, platforms, NULL);
	if (e != CL_SUCCESS)
		return cl_errno(e);

	for (cl_uint pi = 0; pi < np; pi++) {
		_cleanup_free_ cl_device_id *devs = NULL;
		cl_uint nd = 0;

		if (clGetDeviceIDs(platforms[pi], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || nd == 0)
			continue;
		devs = calloc(nd, sizeof(*devs));
		if (!devs) {
			r = -ENOMEM;
			goto fail;
		}
		if (clGetDeviceIDs(platforms[pi], CL_DEVICE_TYPE_ALL, nd, devs, NULL) != CL_SUCCESS)
			continue;
		for (cl_uint di = 0; di < nd; di++) {
			struct gpu_device **nv = realloc(v, (n + 1) * sizeof(*v));
			if (!nv) {
				r = -ENOMEM;
				goto fail;
			}
			v = nv;
			r = make_device(platforms[pi], devs[di], pi, di, &v[n]);
			if (r < 0)
				goto fail;
			n++;
		}
	}
	*ret_devices = v;
	return n;
fail:
	gpu_devices_free(v, n);
	return r;
}

/* --- listing in a child ----------------------------------------------------------- */

#define PROBE_TIMEOUT_MS 20000   /* PoCL's first start may compile its kernel library */

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EIO;
		p += n;
		len -= (size_t) n;
	}
	return 0;
}

static __attribute__((noreturn)) void probe_child(int fd)
{
	struct gpu_device **v = NULL;
	int n = gpu_opencl_devices(&v);

	if (write_all(fd, &n, sizeof(n)) < 0)
		_exit(1);
	for (int i = 0; i < n; i++)
		if (write_all(fd, &v[i]->info, sizeof(v[i]->info)) < 0)
			_exit(1);
	/* No clean-up: the process ends here, and the drivers' own destructors
	 * are not worth their time. */
	_exit(0);
}

int gpu_opencl_probe(struct gpu_device_info **ret_infos)
{
	_cleanup_free_ struct gpu_device_info *v = NULL;
	int fds[2], n = 0, r = 0, status;
	size_t want = sizeof(n), got = 0;
	char *buf = (char *) &n;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return negative_errno();
	pid = fork();
	if (pid < 0) {
		r = negative_errno();
		close(fds[0]);
		close(fds[1]);
		return r;
	}
	if (pid == 0) {
		close(fds[0]);
		probe_child(fds[1]);
	}
	close(fds[1]);

	/* First the count, then that many records. */
	for (bool counted = false;;) {
		struct pollfd p = { .fd = fds[0], .events = POLLIN };
		ssize_t k;

		if (got == want) {
			if (counted || n <= 0)
				break;
			counted = true;
			if (n > 1024) {
				r = -EBADMSG;
				break;
			}
			v = calloc((size_t) n, sizeof(*v));
			if (!v) {
				r = -ENOMEM;
				break;
			}
			buf = (char *) v;
			want = (size_t) n * sizeof(*v);
			got = 0;
		}
		k = poll(&p, 1, PROBE_TIMEOUT_MS);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			r = k < 0 ? negative_errno() : -ETIMEDOUT;
			break;
		}
		k = read(fds[0], buf + got, want - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			r = k < 0 ? negative_errno() : -EPIPE;   /* the child died: a driver crashed */
			break;
		}
		got += (size_t) k;
	}
	close(fds[0]);
	if (r < 0)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (r < 0)
		return r;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -EPIPE;
	if (n < 0)
		return n;
	*ret_infos = TAKE_PTR(v);
	return n;
}
