/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The CUDA backend through the queue: a PTX kernel sliced by the queue
 * gives the bytes of the unsliced run, every chunk's device time (CUDA
 * events) is charged, the stream is at the lowest priority, NVML answers,
 * PTX that does not assemble fails its task with the JIT's words.
 * On a machine with an NVIDIA GPU it runs against the real driver (tests/
 * gpu/run-on-gpu.sh runs it there, with HARVESTER_REQUIRE_CUDA=1 so that a
 * driver that does not load fails instead). Where there is no libcuda.so.1
 * it re-executes itself against the stand-in driver and NVML (fake-cuda.c,
 * fake-nvml.c), smaller, and checks what only the stand-in can see: every
 * call made with the context current, nothing left allocated after a
 * task, one launch a chunk. Skips, saying why, where a driver is present
 * but finds no device.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake-cuda.h"
#include "gpu/gpu.h"
#include "tests/gpu/kernels.h"

/* The CUDA driver maps memory where ASan keeps its shadow gap. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "protect_shadow_gap=0";
}

static struct gpu_device *dev;
static fake_cuda_stats_fn *stand_in;   /* the stand-in's counters, or NULL: a real driver */

/* Big enough that an H100 needs tens of ms for it all (so 2 ms slices
 * mean many chunks), not a multiple of the block or of any chunk. The
 * stand-in runs the kernel on this CPU: smaller, for about 100 ms. */
static uint32_t N = 64u * 1024 * 1024 + 3, ROUNDS = 16384;
#define BLOCK 256u

struct ctx {
	struct gpu_queue *q;
	char log[512];             /* the backend's words on a failed task */
	bool allow;
	unsigned charges, dones;
	uint64_t charged_ns, max_ns, *list;
	unsigned cap;
	int error;
};

static bool may(void *u) { return ((struct ctx *) u)->allow; }
static bool idle(void *u) { return true; }
static void charge(void *u, uint64_t id, uint64_t ns)
{
	struct ctx *c = u;
	if (c->charges < c->cap)
		c->list[c->charges] = ns;
	c->charges++;
	c->charged_ns += ns;
	if (ns > c->max_ns)
		c->max_ns = ns;
}
static void done(void *u, uint64_t id, int error)
{
	struct ctx *c = u;
	const char *log = c->q ? gpu_queue_done_log(c->q) : NULL;

	c->dones++;
	c->error = error;
	snprintf(c->log, sizeof(c->log), "%s", log ? log : "");
}
static const struct gpu_queue_hooks hooks = { .may_dispatch = may, .owner_idle = idle, .charge = charge, .done = done };

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* A task that never finished: say whether the queue thought someone else
 * was using the GPU (run with HARVESTER_GPU_DEBUG=1 for NVML's answer). */
static void stuck(struct gpu_queue *q, unsigned dones)
{
	struct gpu_queue_stats st;

	if (dones)
		return;
	gpu_queue_get_stats(q, &st);
	printf("the task did not finish: %lu chunks run, device %s\n", (unsigned long) st.chunks,
	       st.device_busy ? "busy with another process's work (by its busy check)" : "not reported busy");
}

static void run(uint64_t slice_ns, const uint32_t *in, uint32_t *out, struct ctx *c)
{
	struct gpu_buffer b[2] = { { (void *) in, (size_t) N * 4, GPU_BUFFER_IN }, { out, (size_t) N * 4, GPU_BUFFER_OUT } };
	uint32_t n = N, rounds = ROUNDS;
	struct gpu_arg a[4] = {
		{ .kind = GPU_ARG_BUFFER, .buffer = 0 }, { .kind = GPU_ARG_BUFFER, .buffer = 1 },
		{ .kind = GPU_ARG_SCALAR, .size = 4 }, { .kind = GPU_ARG_SCALAR, .size = 4 },
	};
	struct gpu_task t = {
		.id = 1, .source = gpu_test_scramble_ptx, .kernel = "scramble", .work_dim = 1,
		.global = { (N + BLOCK - 1) / BLOCK * BLOCK }, .local = { BLOCK },
		.buffers = b, .n_buffers = 2, .args = a, .n_args = 4,
	};
	struct gpu_queue_config cfg = { .slice_ns = slice_ns };
	struct gpu_queue *q;
	uint64_t end = now_ns() + 50ULL * 1000000000ULL;

	memcpy(a[2].value, &n, 4);
	memcpy(a[3].value, &rounds, 4);
	assert_int_equal(gpu_queue_new(dev, &cfg, &hooks, c, &q), 0);
	c->q = q;
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	gpu_queue_kick(q);
	while (c->dones == 0 && now_ns() < end) {
		struct pollfd p = { .fd = gpu_queue_get_fd(q), .events = POLLIN };
		poll(&p, 1, 100);
		gpu_queue_kick(q);
	}
	stuck(q, c->dones);
	gpu_queue_free(q);
	assert_int_equal(c->dones, 1);
	assert_int_equal(c->error, 0);
}

static void test_sliced_equals_unsliced(void **state)
{
	uint32_t *in = malloc((size_t) N * 4), *whole = calloc(N, 4), *sliced = calloc(N, 4);
	uint64_t list[1 << 16];
	struct ctx cw = { .allow = true }, cs = { .allow = true, .list = list, .cap = 1 << 16 };
	unsigned over = 0;

	assert_non_null(in);
	assert_non_null(whole);
	assert_non_null(sliced);
	for (uint32_t i = 0; i < N; i++)
		in[i] = gpu_test_input(i);
	run(0, in, whole, &cw);
	run(GPU_SLICE_DEFAULT_NS, in, sliced, &cs);
	assert_memory_equal(whole, sliced, (size_t) N * 4);
	for (uint32_t i = 0; i < N; i += 9973)
		assert_int_equal(sliced[i], gpu_test_scramble_host(in[i], i, ROUNDS));
	assert_int_equal(sliced[N - 1], gpu_test_scramble_host(in[N - 1], N - 1, ROUNDS));

	for (unsigned i = 8; i + 1 < cs.charges && i < cs.cap; i++)
		over += list[i] > GPU_SLICE_DEFAULT_NS;
	printf("CUDA: unsliced %.2f ms device in 1 chunk; sliced %.2f ms in %u chunks (max %.3f ms, %u over 2 ms)\n",
	       cw.charged_ns / 1e6, cs.charged_ns / 1e6, cs.charges, cs.max_ns / 1e6, over);
	assert_int_equal(cw.charges, 1);
	assert_true(cs.charges > 1);
	assert_true(cs.charged_ns * 2 >= cw.charged_ns);
	assert_true(over * 10 <= cs.charges);    /* a real GPU is steady: 90 % within the slice */
	if (stand_in) {
		struct fake_cuda_stats f;

		stand_in(&f);
		printf("stand-in: %u launches, stream priority %d of [%d, %d]; live: %u modules, %u allocations, "
		       "%u events, %u streams; refused: %u without a context, %u bad handles\n",
		       f.launches, f.stream_priority, f.least, f.greatest, f.modules, f.allocations, f.events,
		       f.streams, f.no_context, f.bad_handle);
		assert_int_equal(f.launches, cw.charges + cs.charges);   /* one launch a chunk */
		assert_int_equal(f.stream_priority, f.least);            /* the lowest priority */
		assert_int_equal(f.modules + f.allocations + f.events, 0);
		assert_int_equal(f.streams, 1);
		assert_int_equal(f.no_context + f.bad_handle, 0);
	}
	free(in);
	free(whole);
	free(sliced);
}

static void test_info_and_nvml(void **state)
{
	const struct gpu_device_info *info = gpu_device_get_info(dev);
	int busy = gpu_device_others_busy(dev);

	printf("%s: %s, %s, PCI %s, %u SMs, %llu MiB, lowest-priority stream %s, busy source %s, others busy %d\n",
	       info->id, info->name, info->version, info->pci_bus_id, info->compute_units,
	       (unsigned long long) (info->global_mem_bytes >> 20), info->low_priority ? "yes" : "no",
	       info->busy_source == GPU_BUSY_NVML ? "NVML" : "none", busy);
	assert_int_equal(info->backend, GPU_BACKEND_CUDA);
	assert_true(info->name[0] && info->compute_units > 0);
	/* after a run the stream exists: every GPU since Kepler has a range */
	assert_true(info->low_priority);
	if (info->busy_source == GPU_BUSY_NVML)
		assert_true(busy == 0 || busy == 1);
	else
		assert_int_equal(busy, -EOPNOTSUPP);
}

/* A PTX that does not load fails its task, not the queue. */
static void test_bad_ptx(void **state)
{
	struct ctx c = { .allow = true };
	uint32_t out[256];
	struct gpu_buffer b = { out, sizeof(out), GPU_BUFFER_OUT };
	struct gpu_arg a = { .kind = GPU_ARG_BUFFER, .buffer = 0 };
	struct gpu_task t = {
		.id = 2, .source = ".version 7.0\n.target sm_75\n.address_size 64\nthis is not ptx\n",
		.kernel = "k", .work_dim = 1, .global = { 256 }, .local = { 256 },
		.buffers = &b, .n_buffers = 1, .args = &a, .n_args = 1,
	};
	struct gpu_queue *q;
	uint64_t end = now_ns() + 20ULL * 1000000000ULL;

	assert_int_equal(gpu_queue_new(dev, NULL, &hooks, &c, &q), 0);
	c.q = q;
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	t.local[0] = 0;
	assert_int_equal(gpu_queue_submit(q, &t), -EINVAL);   /* CUDA needs a block size */
	gpu_queue_kick(q);
	while (c.dones == 0 && now_ns() < end) {
		struct pollfd p = { .fd = gpu_queue_get_fd(q), .events = POLLIN };
		poll(&p, 1, 100);
		gpu_queue_kick(q);
	}
	stuck(q, c.dones);
	gpu_queue_free(q);
	assert_int_equal(c.dones, 1);
	printf("bad PTX: %s; the JIT's log: %s\n", strerror(-c.error), c.log);
	assert_true(c.error == -ENOEXEC || c.error == -EINVAL);
	if (stand_in) {
		struct fake_cuda_stats f;

		/* the line that did not assemble, in the task's log */
		assert_non_null(strstr(c.log, "line 4"));
		assert_non_null(strstr(c.log, "'this'"));
		stand_in(&f);
		assert_int_equal(f.modules + f.allocations + f.events, 0);
	}
}

/* A kernel that strays outside its buffers faults: on the stand-in, as the
 * driver documents, every later call in the process fails the same way.
 * The task fails with -EFAULT and the driver's words on the device; the
 * queue runs none of the device's other tasks (they wait, queued, for a
 * restart) and asks the driver nothing more. Stand-in only: a real GPU
 * need not fault on a small overrun (allocations are rounded up), and a
 * fault would end CUDA in this process; it runs last. */
static void test_fault(void **state)
{
	uint32_t in[1024] = { 0 }, out[1024], small[256];
	struct gpu_buffer b[2] = { { in, sizeof(in), GPU_BUFFER_IN }, { out, sizeof(out), GPU_BUFFER_OUT } };
	struct gpu_buffer sb[2] = { { in, sizeof(small), GPU_BUFFER_IN }, { small, sizeof(small), GPU_BUFFER_OUT } };
	uint32_t n = 4096, good_n = 256, rounds = 1;
	struct gpu_arg a[4] = {
		{ .kind = GPU_ARG_BUFFER, .buffer = 0 }, { .kind = GPU_ARG_BUFFER, .buffer = 1 },
		{ .kind = GPU_ARG_SCALAR, .size = 4 }, { .kind = GPU_ARG_SCALAR, .size = 4 },
	}, ga[4];
	struct gpu_task bad = {
		.id = 3, .source = gpu_test_scramble_ptx, .kernel = "scramble", .work_dim = 1,
		.global = { 4096 }, .local = { BLOCK }, .buffers = b, .n_buffers = 2, .args = a, .n_args = 4,
	}, good;
	struct ctx c = { .allow = true };
	struct gpu_queue_config cfg = { .slice_ns = 0 };
	struct gpu_queue_stats qs;
	struct fake_cuda_stats f0, f1;
	struct gpu_queue *q;
	uint64_t end = now_ns() + 20ULL * 1000000000ULL;

	if (!stand_in)
		skip();
	memcpy(a[2].value, &n, 4);
	memcpy(a[3].value, &rounds, 4);
	memcpy(ga, a, sizeof(a));
	memcpy(ga[2].value, &good_n, 4);
	good = bad;
	good.id = 4;
	good.global[0] = 256;
	good.buffers = sb;
	good.args = ga;

	assert_int_equal(gpu_queue_new(dev, &cfg, &hooks, &c, &q), 0);
	c.q = q;
	assert_int_equal(gpu_queue_submit(q, &bad), 0);
	assert_int_equal(gpu_queue_submit(q, &good), 0);
	gpu_queue_kick(q);
	while (c.dones == 0 && now_ns() < end) {
		struct pollfd p = { .fd = gpu_queue_get_fd(q), .events = POLLIN };
		poll(&p, 1, 100);
		gpu_queue_kick(q);
	}
	stand_in(&f0);
	/* the good task's turn, were the device usable */
	for (int i = 0; i < 5; i++) {
		struct pollfd p = { .fd = gpu_queue_get_fd(q), .events = POLLIN };
		poll(&p, 1, 50);
		gpu_queue_kick(q);
	}
	gpu_queue_get_stats(q, &qs);
	stand_in(&f1);
	printf("faulted: %s; task %s; the device says: %s; %u queued after it\n", strerror(-c.error),
	       c.dones == 1 ? "failed" : "?", gpu_device_get_info(dev)->fault, qs.queued);
	assert_int_equal(c.dones, 1);                    /* the good task did not finish, nor fail */
	assert_int_equal(c.error, -EFAULT);
	assert_non_null(strstr(gpu_device_get_info(dev)->fault, "illegal memory access"));
	assert_int_equal(f1.sticky, 700);
	assert_int_equal(qs.queued, 1);
	assert_false(qs.in_flight);
	assert_int_equal(f1.launches, f0.launches);      /* nothing more was launched */
	gpu_queue_free(q);
}

/* No libcuda.so.1 here: run again against the stand-ins built beside this
 * test, unless HARVESTER_REQUIRE_CUDA says a real driver must be used. */
static int stand_in_exec(char **argv)
{
	char exe[PATH_MAX], lib[PATH_MAX + 32], nvml[PATH_MAX + 16], *dir;
	ssize_t len;

	if (getenv("HARVESTER_LIBCUDA") || getenv("HARVESTER_REQUIRE_CUDA"))
		return -1;
	len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (len < 0)
		return -1;
	exe[len] = 0;
	dir = dirname(exe);
	snprintf(lib, sizeof(lib), "%s/fake-cuda/libcuda.so.1", dir);
	snprintf(nvml, sizeof(nvml), "%s/fake-nvml", dir);
	if (access(lib, R_OK) < 0)
		return -1;
	setenv("HARVESTER_LIBCUDA", lib, 1);
	setenv("LD_LIBRARY_PATH", nvml, 1);
	execv("/proc/self/exe", argv);
	perror("execv");
	return -1;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sliced_equals_unsliced),
		cmocka_unit_test(test_info_and_nvml),
		cmocka_unit_test(test_bad_ptx),
		cmocka_unit_test(test_fault),   /* last: it ends CUDA in this process */
	};
	struct gpu_device **devs = NULL;
	const char *lib = getenv("HARVESTER_LIBCUDA");
	void *h;
	int n, r;

	n = gpu_cuda_devices(&devs);
	if (n == -ENOENT && stand_in_exec(argv) < 0 && getenv("HARVESTER_REQUIRE_CUDA")) {
		printf("HARVESTER_REQUIRE_CUDA is set, and the CUDA backend is absent: %s\n", gpu_cuda_absent_reason(n));
		return 1;
	}
	if (n <= 0) {
		printf("skip: CUDA backend absent: %s\n", gpu_cuda_absent_reason(n < 0 ? n : -ENODEV));
		return 77;
	}
	h = lib ? dlopen(lib, RTLD_NOW | RTLD_NOLOAD) : NULL;
	stand_in = h ? (fake_cuda_stats_fn *) dlsym(h, "fake_cuda_stats") : NULL;
	if (stand_in) {
		N = 256u * 1024 + 3;
		ROUNDS = 128;
		printf("against the stand-in driver %s (no libcuda.so.1 here), not a GPU\n", lib);
	}
	dev = devs[0];
	r = cmocka_run_group_tests(tests, NULL, NULL);
	gpu_devices_free(devs, n);
	if (stand_in) {
		struct fake_cuda_stats f;

		stand_in(&f);
		printf("stand-in after the devices were freed: %u context references, %u streams\n", f.ctx_refs, f.streams);
		if (!f.sticky && (f.ctx_refs || f.streams))
			r = 1;
	}
	return r;
}
