/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The queue's own logic on a mock backend whose device time is exact and
 * whose "other processes" are a switch: yielding to a busy device (the chunk
 * goes back unrun, dispatch resumes when the device is idle again), exact
 * charging, cancel in flight, failures, and release of backend state on
 * the worker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu/backend.h"

#define NS_PER_UNIT 1000u   /* the mock device: 1 us per work-item, no overhead */

static atomic_int busy, prepared, released, finished, fail_at_chunk, chunks_run, prepared_alt;
static atomic_bool hold;         /* run_chunk waits while set */
static pthread_t worker_thread;
static atomic_bool worker_known;

static int mock_prepare(struct gpu_device *d, const struct gpu_task *t, void **ret, char **ret_log)
{
	int *state = malloc(sizeof(int));
	if (!state)
		return -ENOMEM;
	*state = 0;
	prepared++;
	worker_thread = pthread_self();
	worker_known = true;
	*ret = state;
	return 0;
}

static int mock_run(struct gpu_device *d, void *state, const struct gpu_task *t, uint64_t offset, uint64_t count,
		    uint64_t *ret_ns)
{
	uint32_t *out = t->buffers[0].host;

	while (hold) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (++chunks_run == fail_at_chunk)
		return -EIO;
	for (uint64_t i = offset; i < offset + count; i++)
		out[i] += (uint32_t) (i * 3 + 1);   /* += : a unit run twice shows */
	*ret_ns = count * NS_PER_UNIT;
	return 0;
}

static int mock_finish(struct gpu_device *d, void *state, const struct gpu_task *t)
{
	finished++;
	return 0;
}

static void mock_release(struct gpu_device *d, void *state)
{
	/* backend state goes away on the worker (CUDA needs its context there) */
	assert_true(worker_known && pthread_equal(pthread_self(), worker_thread));
	released++;
	free(state);
}

static int mock_busy(struct gpu_device *d)
{
	return busy;
}

static void mock_free(struct gpu_device *d) {}

static const struct gpu_backend_ops mock_ops = {
	.prepare = mock_prepare, .run_chunk = mock_run, .finish = mock_finish,
	.release = mock_release, .others_busy = mock_busy, .free = mock_free,
};

static struct gpu_device mock = {
	.ops = &mock_ops,
	.info = { .backend = GPU_BACKEND_OPENCL, .id = "mock:0", .name = "mock", .busy_source = GPU_BUSY_NVML },
};

/* The same GPU through a second backend (as CUDA beside OpenCL). */
static int alt_prepare(struct gpu_device *d, const struct gpu_task *t, void **ret, char **ret_log)
{
	prepared_alt++;
	return mock_prepare(d, t, ret, ret_log);
}

static const struct gpu_backend_ops alt_ops = {
	.prepare = alt_prepare, .run_chunk = mock_run, .finish = mock_finish,
	.release = mock_release, .others_busy = mock_busy, .free = mock_free,
};

static struct gpu_device mock_alt = {
	.ops = &alt_ops,
	.info = { .backend = GPU_BACKEND_CUDA, .id = "mock-cuda:0", .name = "mock", .busy_source = GPU_BUSY_NVML },
};

struct ctx {
	unsigned charges, dones;
	uint64_t charged_ns, max_ns;
	int error;
	uint64_t done_id;
};
static bool yes(void *u) { return true; }
static void charge(void *u, uint64_t id, uint64_t ns)
{
	struct ctx *c = u;
	c->charges++;
	c->charged_ns += ns;
	if (ns > c->max_ns)
		c->max_ns = ns;
}
static void done(void *u, uint64_t id, int error)
{
	struct ctx *c = u;
	c->dones++;
	c->error = error;
	c->done_id = id;
}
static const struct gpu_queue_hooks hooks = { .may_dispatch = yes, .charge = charge, .done = done };

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void spin(struct gpu_queue *q, uint64_t for_ns)
{
	uint64_t end = now_ns() + for_ns;
	while (now_ns() < end) {
		struct pollfd p = { .fd = gpu_queue_get_fd(q), .events = POLLIN };
		poll(&p, 1, 5);
		gpu_queue_kick(q);
	}
}

static void until_done(struct gpu_queue *q, struct ctx *c, unsigned dones)
{
	uint64_t end = now_ns() + 20ULL * 1000000000ULL;
	gpu_queue_kick(q);
	while (c->dones < dones && now_ns() < end) {
		struct pollfd p = { .fd = gpu_queue_get_fd(q), .events = POLLIN };
		poll(&p, 1, 50);
		gpu_queue_kick(q);
	}
	assert_true(c->dones >= dones);
}

#define N 200003u
static uint32_t out[N];
static struct gpu_buffer buf = { out, sizeof(out), GPU_BUFFER_OUT };
static struct gpu_arg arg = { .kind = GPU_ARG_BUFFER, .buffer = 0 };

static struct gpu_task task(uint64_t id)
{
	return (struct gpu_task) { .id = id, .source = "mock", .kernel = "k", .work_dim = 1, .global = { N },
				   .buffers = &buf, .n_buffers = 1, .args = &arg, .n_args = 1 };
}

static int reset(void **state)
{
	busy = prepared = released = finished = fail_at_chunk = chunks_run = prepared_alt = 0;
	mock.sibling = mock_alt.sibling = NULL;
	hold = false;
	memset(out, 0, sizeof(out));
	return 0;
}

static void check_out(void)
{
	for (uint32_t i = 0; i < N; i++)
		if (out[i] != i * 3 + 1)
			fail_msg("work-item %u ran %s", i, out[i] ? "twice or wrongly" : "never");
}

/* Exact device time: every chunk charged, all of it adding up to the
 * units' time, chunks within the slice once sized. */
static void test_exact_charges(void **state)
{
	struct gpu_queue_config cfg = { .slice_ns = 200000 };   /* 200 us: 200 units */
	struct ctx c = {};
	struct gpu_queue *q;
	struct gpu_queue_stats st;
	struct gpu_task t = task(1);

	assert_int_equal(gpu_queue_new(&mock, &cfg, &hooks, &c, &q), 0);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	until_done(q, &c, 1);
	gpu_queue_get_stats(q, &st);
	gpu_queue_free(q);
	assert_int_equal(c.error, 0);
	check_out();
	assert_int_equal(c.charged_ns, (uint64_t) N * NS_PER_UNIT);
	assert_int_equal(c.charges, st.chunks);
	assert_int_equal(st.chunks_over_slice, 0);
	assert_true(c.max_ns <= cfg.slice_ns);
	assert_true(c.charges > N / 200 && c.charges < N / 100);   /* sized near the slice, not tiny */
	assert_int_equal(prepared, 1);
	assert_int_equal(finished, 1);
	assert_int_equal(released, 1);
}

/* Another process starts using the GPU: the queue stops after the chunk in
 * flight, runs nothing while it lasts, and resumes by itself afterwards. */
static void test_yields_to_busy_device(void **state)
{
	struct gpu_queue_config cfg = { .slice_ns = 200000, .busy_poll_ns = 2000000 };
	struct ctx c = {};
	struct gpu_queue *q;
	struct gpu_queue_stats st;
	struct gpu_task t = task(2);
	unsigned before;

	assert_int_equal(gpu_queue_new(&mock, &cfg, &hooks, &c, &q), 0);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	gpu_queue_kick(q);
	while (c.charges < 20)
		spin(q, 1000000);
	busy = 1;
	spin(q, 30000000);          /* the worker notices within busy_poll_ns */
	before = chunks_run;
	spin(q, 100000000);
	gpu_queue_get_stats(q, &st);
	assert_true(st.device_busy);
	assert_false(st.in_flight);
	assert_int_equal(chunks_run, before);   /* nothing ran while busy */
	assert_int_equal(c.dones, 0);
	busy = 0;
	until_done(q, &c, 1);
	gpu_queue_free(q);
	assert_int_equal(c.error, 0);
	check_out();                             /* the chunk given back ran once, later */
	assert_int_equal(c.charged_ns, (uint64_t) N * NS_PER_UNIT);
}

/* Cancel while a chunk runs: it finishes, then the task leaves with
 * -ECANCELED and its backend state is released; nothing more runs. */
static void test_cancel_in_flight(void **state)
{
	struct ctx c = {};
	struct gpu_queue *q;
	struct gpu_task t = task(3);

	assert_int_equal(gpu_queue_new(&mock, NULL, &hooks, &c, &q), 0);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	hold = true;
	assert_int_equal(gpu_queue_kick(q), 1);
	spin(q, 20000000);
	assert_int_equal(gpu_queue_cancel(q, 3), 0);
	assert_int_equal(c.dones, 0);            /* not while its chunk runs */
	hold = false;
	until_done(q, &c, 1);
	assert_int_equal(c.error, -ECANCELED);
	assert_int_equal(chunks_run, 1);
	spin(q, 20000000);
	assert_int_equal(released, 1);
	gpu_queue_free(q);
	assert_int_equal(finished, 0);
}

/* A chunk that fails ends its task with the error; the next task runs. */
static void test_failure_then_next(void **state)
{
	struct ctx c = {};
	struct gpu_queue *q;
	struct gpu_task t = task(4);

	fail_at_chunk = 3;
	assert_int_equal(gpu_queue_new(&mock, NULL, &hooks, &c, &q), 0);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	until_done(q, &c, 1);
	assert_int_equal(c.error, -EIO);
	assert_int_equal(c.done_id, 4);
	memset(out, 0, sizeof(out));
	t = task(5);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	until_done(q, &c, 2);
	assert_int_equal(c.error, 0);
	check_out();
	gpu_queue_free(q);
	assert_int_equal(prepared, 2);
	assert_int_equal(released, 2);
}

/* Freed while the device is busy and tasks wait: returns, releases all. */
static void test_free_while_busy(void **state)
{
	struct gpu_queue_config cfg = { .slice_ns = 200000, .busy_poll_ns = 1000000 };
	struct ctx c = {};
	struct gpu_queue *q;
	struct gpu_task t = task(6);

	assert_int_equal(gpu_queue_new(&mock, &cfg, &hooks, &c, &q), 0);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	t = task(7);
	assert_int_equal(gpu_queue_submit(q, &t), 0);
	gpu_queue_kick(q);
	spin(q, 10000000);
	busy = 1;
	spin(q, 20000000);
	gpu_queue_free(q);
	assert_int_equal(released, prepared);
	assert_int_equal(c.dones, 0);
}

/* One GPU through two backends: a task in the other backend's language runs
 * through that handle, in the same queue; a backend the queue lacks, or a
 * second handle, is refused. */
static void test_second_backend(void **state)
{
	struct ctx c = {};
	struct gpu_queue *q;
	struct gpu_task t = task(7);

	t.local[0] = 1;    /* CUDA wants its block size */
	assert_int_equal(gpu_queue_new(&mock, NULL, &hooks, &c, &q), 0);
	assert_int_equal(gpu_queue_submit_on(q, &t, GPU_BACKEND_CUDA), -ENODEV);
	assert_int_equal(gpu_queue_add_backend(q, &mock), -EINVAL);
	assert_int_equal(gpu_queue_add_backend(q, &mock_alt), 0);
	assert_int_equal(gpu_queue_add_backend(q, &mock_alt), -EINVAL);
	assert_ptr_equal(mock.sibling, &mock_alt);
	assert_int_equal(gpu_queue_submit_on(q, &t, GPU_BACKEND_CUDA), 0);
	until_done(q, &c, 1);
	gpu_queue_free(q);
	assert_int_equal(c.error, 0);
	assert_int_equal(c.done_id, 7);
	check_out();
	assert_int_equal(prepared_alt, 1);
	assert_int_equal(prepared, 1);
	assert_int_equal(released, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_exact_charges, reset),
		cmocka_unit_test_setup(test_yields_to_busy_device, reset),
		cmocka_unit_test_setup(test_cancel_in_flight, reset),
		cmocka_unit_test_setup(test_failure_then_next, reset),
		cmocka_unit_test_setup(test_free_while_busy, reset),
		cmocka_unit_test_setup(test_second_backend, reset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
