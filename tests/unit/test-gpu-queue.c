/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The GPU queue on a real OpenCL device (PoCL's CPU device here): sliced
 * runs give the bytes of an unsliced run, device time is charged chunk by
 * chunk, dispatch stops when the caller says no and resumes after,
 * priorities, cancel, build errors and their build log; listing devices in
 * a child process loads no driver here. Skips where no OpenCL device exists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu/gpu.h"

/* PoCL and the ICD loader keep some allocations for the process's life. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libpocl\nleak:libOpenCL\nleak:libLLVM\nleak:libclang\nleak:libhwloc\n";
}

static struct gpu_device **devices;
static int n_devices;
/* gpu_opencl_probe(), run before anything here loaded OpenCL's drivers */
static struct gpu_device_info *probed;
static int n_probed;
static bool driver_loaded_after_probe;

#define N_1D 1000003u   /* prime: no chunk size divides it */

static const char *src_1d =
	"__kernel void scramble(__global const uint *in, __global uint *out, uint rounds) {\n"
	"	uint i = (uint) get_global_id(0);\n"
	"	uint x = in[i] ^ (i * 2654435761u);\n"
	"	for (uint r = 0; r < rounds; r++)\n"
	"		x = x * 1664525u + 1013904223u + i;\n"
	"	out[i] = x;\n"
	"}\n";

static uint32_t mix_host(uint32_t in, uint32_t i, uint32_t rounds)
{
	uint32_t x = in ^ (i * 2654435761u);
	for (uint32_t r = 0; r < rounds; r++)
		x = x * 1664525u + 1013904223u + i;
	return x;
}

/* 2-D, with work-groups: the result names each item's group and local id
 * and the ND-range's size and group count, so it is only right if every
 * chunk starts on a work-group boundary and the queue makes the builtins
 * describe the whole range, not the chunk. */
#define W2 48u
#define H2 1000u
static const char *src_2d =
	"__kernel void grid(__global uint *out) {\n"
	"	uint x = get_global_id(0), y = get_global_id(1);\n"
	"	out[y * get_global_size(0) + x] = (get_group_id(1) << 20) ^ (get_local_id(1) << 16) ^\n"
	"		(get_group_id(0) << 8) ^ get_local_id(0) ^ (x * 7919u + y * 104729u) ^\n"
	"		(get_global_size(1) * 31u + get_num_groups(1) * 17u);\n"
	"}\n";

struct ctx {
	bool allow, owner_idle;
	unsigned charges, dones;
	uint64_t charged_ns, max_charge_ns;
	uint64_t *charge_list;
	unsigned charge_cap;
	uint64_t done_ids[8];
	int done_errors[8];
	struct gpu_queue *q;       /* set: done() keeps gpu_queue_done_log() */
	char *done_logs[8];
};

static bool may_dispatch(void *u) { return ((struct ctx *) u)->allow; }
static bool owner_idle(void *u) { return ((struct ctx *) u)->owner_idle; }
static void charge(void *u, uint64_t id, uint64_t ns)
{
	struct ctx *c = u;
	if (c->charges < c->charge_cap)
		c->charge_list[c->charges] = ns;
	c->charges++;
	c->charged_ns += ns;
	if (ns > c->max_charge_ns)
		c->max_charge_ns = ns;
}
static void done(void *u, uint64_t id, int error)
{
	struct ctx *c = u;
	if (c->dones < 8) {
		const char *log = c->q ? gpu_queue_done_log(c->q) : NULL;
		c->done_ids[c->dones] = id;
		c->done_errors[c->dones] = error;
		c->done_logs[c->dones] = log ? strdup(log) : NULL;
	}
	c->dones++;
}

static const struct gpu_queue_hooks hooks = {
	.may_dispatch = may_dispatch, .owner_idle = owner_idle, .charge = charge, .done = done,
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* The loop: poll the queue's fd and kick, as harvesterd's sd-event will. */
static void drive(struct gpu_queue *q, struct ctx *c, unsigned until_dones, uint64_t timeout_ns)
{
	uint64_t end = now_ns() + timeout_ns;

	gpu_queue_kick(q);
	while (c->dones < until_dones && now_ns() < end) {
		struct pollfd p = { .fd = gpu_queue_get_fd(q), .events = POLLIN };
		poll(&p, 1, 50);
		gpu_queue_kick(q);
	}
}

static struct gpu_task task_1d(uint64_t id, struct gpu_buffer *bufs, struct gpu_arg *args, uint32_t rounds)
{
	args[0] = (struct gpu_arg) { .kind = GPU_ARG_BUFFER, .buffer = 0 };
	args[1] = (struct gpu_arg) { .kind = GPU_ARG_BUFFER, .buffer = 1 };
	args[2] = (struct gpu_arg) { .kind = GPU_ARG_SCALAR, .size = sizeof(uint32_t) };
	memcpy(args[2].value, &rounds, sizeof(rounds));
	return (struct gpu_task) {
		.id = id, .source = src_1d, .kernel = "scramble", .work_dim = 1, .global = { N_1D },
		.buffers = bufs, .n_buffers = 2, .args = args, .n_args = 3,
	};
}

static uint32_t *input(void)
{
	uint32_t *in = malloc(N_1D * sizeof(*in));
	assert_non_null(in);
	for (uint32_t i = 0; i < N_1D; i++)
		in[i] = i * 2246822519u + 3266489917u;
	return in;
}

static void test_devices(void **state)
{
	for (int i = 0; i < n_devices; i++) {
		const struct gpu_device_info *info = gpu_device_get_info(devices[i]);
		printf("device %s: %s (%s), %s, %u CU, %llu MiB, low priority %s, busy source %d\n", info->id,
		       info->name, info->vendor, info->version, info->compute_units,
		       (unsigned long long) (info->global_mem_bytes >> 20), info->low_priority ? "yes" : "no",
		       info->busy_source);
		assert_int_equal(info->backend, GPU_BACKEND_OPENCL);
		assert_true(strncmp(info->id, "opencl:", 7) == 0);
		assert_true(info->name[0] && info->version[0]);
		assert_true(info->compute_units > 0 && info->global_mem_bytes > 0);
		if (info->busy_source == GPU_BUSY_NONE)
			assert_int_equal(gpu_device_others_busy(devices[i]), -EOPNOTSUPP);
	}
}

/* Sliced (2 ms) and unsliced runs give the same bytes, and both the bytes
 * the host computes; the charges are the chunks' device times. */
static void test_sliced_equals_unsliced(void **state)
{
	const uint32_t rounds = 64;
	uint32_t *in = input();
	uint32_t *out_sliced = calloc(N_1D, 4), *out_whole = calloc(N_1D, 4);
	struct gpu_buffer bs[2] = { { in, N_1D * 4, GPU_BUFFER_IN }, { out_sliced, N_1D * 4, GPU_BUFFER_OUT } };
	struct gpu_buffer bw[2] = { { in, N_1D * 4, GPU_BUFFER_IN }, { out_whole, N_1D * 4, GPU_BUFFER_OUT } };
	struct gpu_arg args[3];
	struct gpu_queue_config sliced = { .slice_ns = GPU_SLICE_DEFAULT_NS }, whole = { .slice_ns = 0 };
	uint64_t list[4096];
	struct ctx cs = { .allow = true, .owner_idle = true, .charge_list = list, .charge_cap = 4096 };
	struct ctx cw = { .allow = true, .owner_idle = true };
	struct gpu_queue *q;
	struct gpu_queue_stats st;
	struct gpu_task t;
	uint64_t t0, wall_ns;

	/* unsliced: one chunk */
	assert_int_equal(gpu_queue_new(devices[0], &whole, &hooks, &cw, &q), 0);
	t = task_1d(1, bw, args, rounds);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	drive(q, &cw, 1, 60ULL * 1000000000ULL);
	assert_int_equal(cw.dones, 1);
	assert_int_equal(cw.done_errors[0], 0);
	assert_int_equal(cw.charges, 1);
	gpu_queue_free(q);

	/* sliced, once unmeasured: the first build of each chunk shape can
	 * take the compiler longer than the whole run (PoCL with a cold
	 * kernel cache), and the wall-time bounds below are about running */
	struct ctx warm = { .allow = true, .owner_idle = true };
	assert_int_equal(gpu_queue_new(devices[0], &sliced, &hooks, &warm, &q), 0);
	t = task_1d(3, bs, args, rounds);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	drive(q, &warm, 1, 60ULL * 1000000000ULL);
	assert_int_equal(warm.dones, 1);
	gpu_queue_free(q);
	memset(out_sliced, 0, N_1D * 4);

	/* sliced */
	assert_int_equal(gpu_queue_new(devices[0], &sliced, &hooks, &cs, &q), 0);
	t = task_1d(2, bs, args, rounds);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	t0 = now_ns();
	drive(q, &cs, 1, 60ULL * 1000000000ULL);
	wall_ns = now_ns() - t0;
	assert_int_equal(cs.dones, 1);
	assert_int_equal(cs.done_ids[0], 2);
	assert_int_equal(cs.done_errors[0], 0);
	gpu_queue_get_stats(q, &st);
	gpu_queue_free(q);

	assert_memory_equal(out_sliced, out_whole, N_1D * 4);
	for (uint32_t i = 0; i < N_1D; i += 997)
		assert_int_equal(out_sliced[i], mix_host(in[i], i, rounds));
	assert_int_equal(out_sliced[N_1D - 1], mix_host(in[N_1D - 1], N_1D - 1, rounds));

	/* Every chunk was charged, with its own device time, and nothing else. */
	assert_true(cs.charges > 10);
	assert_int_equal(cs.charges, st.chunks);
	assert_int_equal(cs.charged_ns, st.device_ns);
	for (unsigned i = 0; i < cs.charges && i < 4096; i++)
		assert_true(list[i] > 0);
	/* Device time is within the wall time the run took, and about what
	 * the same work took unsliced (slicing adds launches, not work). */
	/* The device time is within the wall time the run took, and most of
	 * it on an idle machine; loosely here, where the 2 cores are shared
	 * and PoCL's device time is the wall time of its worker threads. It is
	 * not compared with the unsliced run's: for a prime-sized range PoCL
	 * picks a work-group size of 1 and so runs that one several times
	 * slower (test-gpu-queue-mock checks exact sums; make bench-gpu the
	 * cost of slicing on a fair size). */
	unsigned over = 0, n = 0;
	for (unsigned i = 8; i + 1 < cs.charges && i < 4096; i++, n++)
		over += list[i] > GPU_SLICE_DEFAULT_NS;
	printf("sliced: %u chunks, %.1f ms device in %.1f ms wall (unsliced %.1f ms device), max chunk %.3f ms, "
	       "%u of %u sized chunks over 2 ms\n", cs.charges, cs.charged_ns / 1e6, wall_ns / 1e6, cw.charged_ns / 1e6,
	       cs.max_charge_ns / 1e6, over, n);
	assert_true(cs.charged_ns <= wall_ns);
	assert_true(cs.charged_ns * 20 >= wall_ns);
	/* Chunks keep to the slice once sized (the first ones are growing):
	 * the median at least, on a machine shared with other work. */
	assert_true(over * 2 < n);
	free(in);
	free(out_sliced);
	free(out_whole);
}

static void test_2d_workgroups(void **state)
{
	uint32_t *out = calloc(W2 * H2, 4);
	struct gpu_buffer b = { out, W2 * H2 * 4, GPU_BUFFER_OUT };
	struct gpu_arg a = { .kind = GPU_ARG_BUFFER, .buffer = 0 };
	struct gpu_task t = {
		.id = 7, .source = src_2d, .kernel = "grid", .work_dim = 2,
		.global = { W2, H2 }, .local = { 8, 8 }, .buffers = &b, .n_buffers = 1, .args = &a, .n_args = 1,
	};
	/* A tiny slice forces one-work-group-row chunks at first. */
	struct gpu_queue_config cfg = { .slice_ns = 20000 };
	struct ctx c = { .allow = true, .owner_idle = true };
	struct gpu_queue *q;

	assert_int_equal(gpu_queue_new(devices[0], &cfg, &hooks, &c, &q), 0);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	drive(q, &c, 1, 60ULL * 1000000000ULL);
	gpu_queue_free(q);
	assert_int_equal(c.dones, 1);
	assert_int_equal(c.done_errors[0], 0);
	assert_true(c.charges > 1);
	for (uint32_t y = 0; y < H2; y++)
		for (uint32_t x = 0; x < W2; x++) {
			uint32_t want = ((y / 8) << 20) ^ ((y % 8) << 16) ^ ((x / 8) << 8) ^ (x % 8) ^
					(x * 7919u + y * 104729u) ^ (H2 * 31u + H2 / 8 * 17u);
			assert_int_equal(out[y * W2 + x], want);
		}
	printf("2-D 48x1000 in 8x8 groups: %u chunks\n", c.charges);
	free(out);
}

/* may_dispatch says no: dispatch stops after the chunk in flight and
 * resumes where it stopped when it says yes again; pause() the same. */
static void test_stop_and_resume(void **state)
{
	uint32_t *in = input(), *out = calloc(N_1D, 4);
	struct gpu_buffer b[2] = { { in, N_1D * 4, GPU_BUFFER_IN }, { out, N_1D * 4, GPU_BUFFER_OUT } };
	struct gpu_arg args[3];
	struct gpu_task t = task_1d(3, b, args, 512);  /* about 0.5 s of device time */
	struct gpu_queue_config cfg = { .slice_ns = 1000000 };
	struct ctx c = { .allow = true, .owner_idle = true };
	struct gpu_queue_stats st;
	struct gpu_queue *q;
	unsigned at_stop;

	assert_int_equal(gpu_queue_new(devices[0], &cfg, &hooks, &c, &q), 0);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	gpu_queue_kick(q);
	while (c.charges < 5) {
		struct pollfd p = { .fd = gpu_queue_get_fd(q), .events = POLLIN };
		poll(&p, 1, 100);
		gpu_queue_kick(q);
	}

	for (int round = 0; round < 2; round++) {
		/* round 0: the policy says no; round 1: pause() */
		if (round == 0)
			c.allow = false;
		else
			gpu_queue_pause(q);
		at_stop = c.charges;
		uint64_t end = now_ns() + 300000000ULL;
		while (now_ns() < end) {
			struct pollfd p = { .fd = gpu_queue_get_fd(q), .events = POLLIN };
			poll(&p, 1, 20);
			gpu_queue_kick(q);
		}
		gpu_queue_get_stats(q, &st);
		printf("stopped (%s): %u charges before, %u after 300 ms\n", round ? "pause" : "may_dispatch",
		       at_stop, c.charges);
		assert_true(c.charges <= at_stop + 1);    /* only the chunk in flight finished */
		assert_false(st.in_flight);
		assert_int_equal(c.dones, 0);
		assert_int_equal(st.queued, 1);
		assert_int_equal(gpu_queue_kick(q), 0);   /* still no */
		if (round == 0)
			c.allow = true;
		else
			gpu_queue_resume(q);
		assert_int_equal(gpu_queue_kick(q), 1);   /* resumes at once */
	}
	drive(q, &c, 1, 120ULL * 1000000000ULL);
	gpu_queue_free(q);
	assert_int_equal(c.dones, 1);
	assert_int_equal(c.done_errors[0], 0);
	for (uint32_t i = 0; i < N_1D; i += 101)
		assert_int_equal(out[i], mix_host(in[i], i, 512));
	free(in);
	free(out);
}

/* A device that cannot tell whether others use it runs only while the
 * owner is idle. */
static void test_owner_idle_gate(void **state)
{
	uint32_t *in = input(), *out = calloc(N_1D, 4);
	struct gpu_buffer b[2] = { { in, N_1D * 4, GPU_BUFFER_IN }, { out, N_1D * 4, GPU_BUFFER_OUT } };
	struct gpu_arg args[3];
	struct gpu_task t = task_1d(4, b, args, 1);
	struct ctx c = { .allow = true, .owner_idle = false };
	struct gpu_queue *q;

	if (gpu_device_get_info(devices[0])->busy_source != GPU_BUSY_NONE)
		skip();
	assert_int_equal(gpu_queue_new(devices[0], NULL, &hooks, &c, &q), 0);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	assert_int_equal(gpu_queue_kick(q), 0);
	c.owner_idle = true;
	drive(q, &c, 1, 60ULL * 1000000000ULL);
	gpu_queue_free(q);
	assert_int_equal(c.dones, 1);
	assert_int_equal(c.done_errors[0], 0);
	free(in);
	free(out);
}

static void test_priority_order_cancel_errors(void **state)
{
	uint32_t *in = input(), *o[3];
	struct gpu_buffer b[3][2];
	struct gpu_arg args[4][3];
	struct gpu_task t;
	struct ctx c = { .allow = false, .owner_idle = true };
	struct gpu_queue *q;

	assert_int_equal(gpu_queue_new(devices[0], NULL, &hooks, &c, &q), 0);
	c.q = q;
	for (int i = 0; i < 3; i++) {
		o[i] = calloc(N_1D, 4);
		b[i][0] = (struct gpu_buffer) { in, N_1D * 4, GPU_BUFFER_IN };
		b[i][1] = (struct gpu_buffer) { o[i], N_1D * 4, GPU_BUFFER_OUT };
	}
	t = task_1d(10, b[0], args[0], 1);
	t.priority = 0;
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	t = task_1d(11, b[1], args[1], 1);
	t.priority = 5;
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	t = task_1d(12, b[2], args[2], 1);
	t.priority = 5;
	assert_int_equal(gpu_queue_submit(q, &t), 0);

	/* Cancelling a task not running: done at once, -ECANCELED. */
	t = task_1d(13, b[0], args[3], 1);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	assert_int_equal(gpu_queue_cancel(q, 13), 0);
	assert_int_equal(c.dones, 1);
	assert_int_equal(c.done_ids[0], 13);
	assert_int_equal(c.done_errors[0], -ECANCELED);
	assert_int_equal(gpu_queue_cancel(q, 13), -ENOENT);

	/* Descriptions the device cannot run are refused at submit. */
	t = task_1d(14, b[0], args[3], 1);
	t.work_dim = 0;
	assert_int_equal(gpu_queue_submit(q, &t), -EINVAL);
	t = task_1d(14, b[0], args[3], 1);
	t.local[0] = 64;                            /* 1000003 is no multiple of 64 */
	assert_int_equal(gpu_queue_submit(q, &t), -EINVAL);
	t = task_1d(14, b[0], args[3], 1);
	args[3][0].buffer = 9;
	assert_int_equal(gpu_queue_submit(q, &t), -EINVAL);

	/* Higher priority first, then age. */
	c.allow = true;
	drive(q, &c, 4, 120ULL * 1000000000ULL);
	assert_int_equal(c.dones, 4);
	assert_int_equal(c.done_ids[1], 11);
	assert_int_equal(c.done_ids[2], 12);
	assert_int_equal(c.done_ids[3], 10);
	for (int i = 1; i < 4; i++)
		assert_int_equal(c.done_errors[i], 0);
	assert_int_equal(o[0][12345], mix_host(in[12345], 12345, 1));

	/* A source that does not build fails its task, not the queue. */
	struct gpu_arg a = { .kind = GPU_ARG_BUFFER, .buffer = 0 };
	struct gpu_task bad = {
		.id = 20, .source = "__kernel void k(__global uint *o) { o[0] = undeclared; }", .kernel = "k",
		.work_dim = 1, .global = { 16 }, .buffers = b[0] + 1, .n_buffers = 1, .args = &a, .n_args = 1,
	};
	assert_int_equal(gpu_queue_submit(q, &bad), 0);
	drive(q, &c, 5, 60ULL * 1000000000ULL);
	assert_int_equal(c.dones, 5);
	assert_int_equal(c.done_errors[4], -ENOEXEC);
	/* with the compiler's words, naming what it did not know */
	printf("build log: %s\n", c.done_logs[4] ? c.done_logs[4] : "(none)");
	assert_non_null(c.done_logs[4]);
	assert_non_null(strstr(c.done_logs[4], "undeclared"));
	for (int i = 0; i < 4; i++)
		assert_null(c.done_logs[i]);     /* nothing for a task that ran or was cancelled */
	/* and a missing kernel name */
	bad.id = 21;
	bad.source = "__kernel void k(__global uint *o) { o[0] = 1; }";
	bad.kernel = "nope";
	assert_int_equal(gpu_queue_submit(q, &bad), 0);
	drive(q, &c, 6, 60ULL * 1000000000ULL);
	assert_int_equal(c.done_errors[5], -ENOENT);

	gpu_queue_free(q);
	for (int i = 0; i < 8; i++)
		free(c.done_logs[i]);
	for (int i = 0; i < 3; i++)
		free(o[i]);
	free(in);
}

/* The child's list is the list this process makes, and making it loaded no
 * driver (PoCL, LLVM) here. */
static void test_probe_in_child(void **state)
{
	printf("probe: %d device(s) listed by a child; driver loaded here after it: %s\n", n_probed,
	       driver_loaded_after_probe ? "yes" : "no");
	assert_false(driver_loaded_after_probe);
	assert_int_equal(n_probed, n_devices);
	for (int i = 0; i < n_devices; i++) {
		const struct gpu_device_info *info = gpu_device_get_info(devices[i]);
		assert_string_equal(probed[i].id, info->id);
		assert_string_equal(probed[i].name, info->name);
		assert_int_equal(probed[i].global_mem_bytes, info->global_mem_bytes);
		assert_int_equal(probed[i].cpu_device, info->cpu_device);
	}
}

/* Any ICD driver's library mapped into this process? */
static bool driver_mapped(void)
{
	char line[512];
	bool found = false;
	FILE *f = fopen("/proc/self/maps", "re");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "libpocl") || strstr(line, "libLLVM") || strstr(line, "libnvidia-opencl"))
			found = true;
	fclose(f);
	return found;
}

/* Freeing a queue with work in flight and queued waits and releases it all. */
static void test_free_busy_queue(void **state)
{
	uint32_t *in = input(), *out = calloc(N_1D, 4);
	struct gpu_buffer b[2] = { { in, N_1D * 4, GPU_BUFFER_IN }, { out, N_1D * 4, GPU_BUFFER_OUT } };
	struct gpu_arg args[2][3];
	struct gpu_task t;
	struct ctx c = { .allow = true, .owner_idle = true };
	struct gpu_queue *q;

	assert_int_equal(gpu_queue_new(devices[0], NULL, &hooks, &c, &q), 0);
	t = task_1d(30, b, args[0], 64);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	t = task_1d(31, b, args[1], 64);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	while (c.charges < 3) {
		struct pollfd p = { .fd = gpu_queue_get_fd(q), .events = POLLIN };
		poll(&p, 1, 100);
		gpu_queue_kick(q);
	}
	gpu_queue_free(q);
	assert_int_equal(c.dones, 0);    /* free() calls no done hooks */
	free(in);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_devices),
		cmocka_unit_test(test_probe_in_child),
		cmocka_unit_test(test_sliced_equals_unsliced),
		cmocka_unit_test(test_2d_workgroups),
		cmocka_unit_test(test_stop_and_resume),
		cmocka_unit_test(test_owner_idle_gate),
		cmocka_unit_test(test_priority_order_cancel_errors),
		cmocka_unit_test(test_free_busy_queue),
	};
	int r;

	n_probed = gpu_opencl_probe(&probed);
	driver_loaded_after_probe = driver_mapped();
	n_devices = gpu_opencl_devices(&devices);
	if (n_devices <= 0) {
		printf("skip: no OpenCL device (%s)\n", n_devices == 0 || n_devices == -ENOENT ?
		       "no ICD installed: install pocl-opencl-icd" : strerror(-n_devices));
		return 77;
	}
	r = cmocka_run_group_tests(tests, NULL, NULL);
	gpu_devices_free(devices, n_devices);
	free(probed);
	return r;
}
