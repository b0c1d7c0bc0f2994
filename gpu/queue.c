/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The GPU priority queue of one device. The loop thread owns the task list,
 * the slicers and every hook call; the worker thread owns the backend calls.
 * They meet in one request slot and one result slot under a mutex (at most
 * one chunk is ever granted, so one slot each is enough), and the worker
 * wakes the loop through an eventfd. See gpu.h for why a worker at all.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "gpu/backend.h"
#include "gpu/slice.h"
#include "harvester/macro.h"

struct qtask {
	struct gpu_task t;         /* deep copy, strings and arrays owned */
	struct gpu_device *dev;    /* the queue's device, or its other backend's handle */
	uint64_t seq;              /* submission order: age */
	struct gpu_slicer slicer;
	void *state;               /* backend's; touched by the worker only while granted */
	bool cancelled;
	struct qtask *next;
};

enum result_kind { RESULT_NONE, RESULT_CHUNK, RESULT_BUSY };

struct gpu_queue {
	struct gpu_device *dev;
	struct gpu_device *alt;    /* the same GPU through another backend, or NULL */
	struct gpu_queue_config config;
	struct gpu_queue_hooks hooks;
	void *userdata;
	int efd;
	pthread_t thread;
	bool thread_started;

	/* loop thread only */
	struct qtask *tasks;
	uint64_t seq;
	bool paused, in_flight, device_busy;
	struct qtask *flight;      /* the task of the chunk in flight */
	uint64_t flight_offset;
	struct gpu_queue_stats stats;
	const char *done_log;      /* during the done hook: gpu_queue_done_log() */

	/* shared, under lock */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	struct {
		struct qtask *task;    /* NULL: none */
		uint64_t offset, count;
		bool last;
	} req;
	struct {
		enum result_kind kind;
		int error;
		uint64_t device_ns;
		char *log;             /* the backend's words on the error, or NULL */
	} res;
	bool became_idle;          /* the worker saw the device turn idle */
	struct qtask *graveyard;   /* tasks whose backend state the worker releases */
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

static void qtask_free(struct qtask *t)
{
	if (!t)
		return;
	free((void *) t->t.source);
	free((void *) t->t.kernel);
	free((void *) t->t.build_options);
	free((void *) t->t.buffers);
	free((void *) t->t.args);
	free(t);
}

static void notify(struct gpu_queue *q)
{
	uint64_t one = 1;
	/* EAGAIN means the counter is already non-zero: the loop will wake. */
	_unused_ ssize_t n = write(q->efd, &one, sizeof(one));
}

/* --- the worker ------------------------------------------------------------ */

static void release_graveyard(struct gpu_queue *q, struct qtask *list)
{
	while (list) {
		struct qtask *next = list->next;
		if (list->state)
			list->dev->ops->release(list->dev, list->state);
		qtask_free(list);
		list = next;
	}
}

static void *worker(void *userdata)
{
	struct gpu_queue *q = userdata;
	const struct gpu_backend_ops *ops = q->dev->ops;   /* the busy check */
	bool polling = false;       /* waiting for others to leave the device */
	uint64_t last_check_ns = 0;

	for (;;) {
		struct qtask *task, *dead;
		uint64_t offset, count, device_ns = 0;
		char *log = NULL;
		bool last, stop;
		int r;

		pthread_mutex_lock(&q->lock);
		while (!q->stop && !q->req.task && !q->graveyard && !polling)
			pthread_cond_wait(&q->cond, &q->lock);
		if (polling && !q->stop && !q->graveyard) {
			struct timespec ts;
			uint64_t until = now_ns() + q->config.busy_poll_ns;
			ts.tv_sec = until / NSEC_PER_SEC;
			ts.tv_nsec = until % NSEC_PER_SEC;
			pthread_cond_timedwait(&q->cond, &q->lock, &ts);
		}
		dead = TAKE_PTR(q->graveyard);
		task = q->req.task;
		offset = q->req.offset;
		count = q->req.count;
		last = q->req.last;
		q->req.task = NULL;
		stop = q->stop;
		pthread_mutex_unlock(&q->lock);
		/* gpu_queue_free() put every task, this one too, in the graveyard. */
		if (stop)
			task = NULL;

		release_graveyard(q, dead);
		if (stop && !task)
			break;

		if (polling && !stop) {
			r = ops->others_busy(q->dev);
			last_check_ns = now_ns();
			if (r == 0) {
				polling = false;
				pthread_mutex_lock(&q->lock);
				q->became_idle = true;
				pthread_mutex_unlock(&q->lock);
				notify(q);
			}
		}
		if (!task)
			continue;

		/* Fresh enough a "nobody else" is trusted for busy_poll_ns: a
		 * check costs an NVML call or a scan of /proc. */
		if (q->dev->info.busy_source != GPU_BUSY_NONE && !q->config.ignore_others_busy &&
		    now_ns() - last_check_ns >= q->config.busy_poll_ns) {
			r = ops->others_busy(q->dev);
			last_check_ns = now_ns();
			if (r > 0) {
				polling = true;
				pthread_mutex_lock(&q->lock);
				q->res.kind = RESULT_BUSY;
				q->res.error = 0;
				pthread_mutex_unlock(&q->lock);
				notify(q);
				continue;
			}
		}

		/* The task's own backend runs it; the busy check above is the GPU's. */
		const struct gpu_backend_ops *tops = task->dev->ops;
		r = 0;
		if (!task->state)
			r = tops->prepare(task->dev, &task->t, &task->state, &log);
		if (r >= 0)
			r = tops->run_chunk(task->dev, task->state, &task->t, offset, count, &device_ns);
		if (r >= 0 && last)
			r = tops->finish(task->dev, task->state, &task->t);
		if (last && task->state) {
			tops->release(task->dev, task->state);
			task->state = NULL;
		}

		pthread_mutex_lock(&q->lock);
		q->res.kind = RESULT_CHUNK;
		q->res.error = r < 0 ? r : 0;
		q->res.device_ns = device_ns;
		free(q->res.log);
		q->res.log = r < 0 ? log : NULL;
		if (r >= 0)
			free(log);
		pthread_mutex_unlock(&q->lock);
		notify(q);
	}
	return NULL;
}

/* --- the loop side ------------------------------------------------------------- */

int gpu_queue_new(struct gpu_device *device, const struct gpu_queue_config *config,
		  const struct gpu_queue_hooks *hooks, void *userdata, struct gpu_queue **ret)
{
	struct gpu_queue *q;
	int r;

	if (!device || !ret)
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->dev = device;
	q->config = config ? *config : (struct gpu_queue_config) { .slice_ns = GPU_SLICE_DEFAULT_NS };
	if (q->config.busy_poll_ns == 0)
		q->config.busy_poll_ns = GPU_BUSY_POLL_DEFAULT_NS;
	if (hooks)
		q->hooks = *hooks;
	q->userdata = userdata;
	pthread_mutex_init(&q->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &ca);
	pthread_condattr_destroy(&ca);
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0) {
		r = negative_errno();
		gpu_queue_free(q);
		return r;
	}
	r = -pthread_create(&q->thread, NULL, worker, q);
	if (r < 0) {
		gpu_queue_free(q);
		return r;
	}
	q->thread_started = true;
	*ret = q;
	return 0;
}

void gpu_queue_free(struct gpu_queue *q)
{
	if (!q)
		return;
	if (q->thread_started) {
		pthread_mutex_lock(&q->lock);
		q->stop = true;
		while (q->tasks) {
			struct qtask *t = q->tasks;
			q->tasks = t->next;
			t->next = q->graveyard;
			q->graveyard = t;
		}
		pthread_cond_signal(&q->cond);
		pthread_mutex_unlock(&q->lock);
		pthread_join(q->thread, NULL);
	} else {
		release_graveyard(q, q->tasks);
	}
	if (q->efd >= 0)
		close(q->efd);
	free(q->res.log);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

int gpu_queue_get_fd(const struct gpu_queue *q)
{
	return q->efd;
}

static int validate(const struct gpu_device *dev, const struct gpu_task *t)
{
	if (!t->source || !t->kernel || t->work_dim < 1 || t->work_dim > 3)
		return -EINVAL;
	for (unsigned i = 0; i < t->work_dim; i++) {
		if (t->global[i] == 0)
			return -EINVAL;
		if ((t->local[0] != 0 || dev->info.backend == GPU_BACKEND_CUDA) &&
		    (t->local[i] == 0 || t->global[i] % t->local[i] != 0))
			return -EINVAL;
	}
	if (t->n_buffers && !t->buffers)
		return -EINVAL;
	for (unsigned i = 0; i < t->n_buffers; i++)
		if ((t->buffers[i].size_bytes && !t->buffers[i].host) ||
		    t->buffers[i].dir < GPU_BUFFER_IN || t->buffers[i].dir > GPU_BUFFER_INOUT)
			return -EINVAL;
	if (t->n_args && !t->args)
		return -EINVAL;
	for (unsigned i = 0; i < t->n_args; i++) {
		const struct gpu_arg *a = &t->args[i];
		if ((a->kind == GPU_ARG_BUFFER && a->buffer >= t->n_buffers) ||
		    (a->kind == GPU_ARG_SCALAR && (a->size == 0 || a->size > sizeof(a->value))) ||
		    (a->kind == GPU_ARG_LOCAL && (a->size == 0 || dev->info.backend == GPU_BACKEND_CUDA)) ||
		    a->kind > GPU_ARG_LOCAL)
			return -EINVAL;
	}
	return 0;
}

int gpu_queue_add_backend(struct gpu_queue *q, struct gpu_device *same_gpu)
{
	if (!same_gpu || q->alt || same_gpu->info.backend == q->dev->info.backend)
		return -EINVAL;
	q->alt = same_gpu;
	q->dev->sibling = same_gpu;
	same_gpu->sibling = q->dev;
	return 0;
}

int gpu_queue_submit(struct gpu_queue *q, const struct gpu_task *task)
{
	return gpu_queue_submit_on(q, task, q->dev->info.backend);
}

int gpu_queue_submit_on(struct gpu_queue *q, const struct gpu_task *task, enum gpu_backend backend)
{
	struct gpu_device *dev = q->dev->info.backend == backend ? q->dev :
				 q->alt && q->alt->info.backend == backend ? q->alt : NULL;
	struct qtask *t;
	unsigned last;
	int r;

	if (!dev)
		return -ENODEV;
	r = validate(dev, task);
	if (r < 0)
		return r;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->dev = dev;
	t->t = *task;
	t->t.source = strdup(task->source);
	t->t.kernel = strdup(task->kernel);
	t->t.build_options = task->build_options ? strdup(task->build_options) : NULL;
	t->t.buffers = task->n_buffers ? malloc(task->n_buffers * sizeof(*task->buffers)) : NULL;
	t->t.args = task->n_args ? malloc(task->n_args * sizeof(*task->args)) : NULL;
	if (!t->t.source || !t->t.kernel || (task->build_options && !t->t.build_options) ||
	    (task->n_buffers && !t->t.buffers) || (task->n_args && !t->t.args)) {
		qtask_free(t);
		return -ENOMEM;
	}
	if (task->n_buffers)
		memcpy((void *) t->t.buffers, task->buffers, task->n_buffers * sizeof(*task->buffers));
	if (task->n_args)
		memcpy((void *) t->t.args, task->args, task->n_args * sizeof(*task->args));
	last = task->work_dim - 1;
	gpu_slicer_init(&t->slicer, task->global[last], task->local[last] ? task->local[last] :
			task->work_dim == 1 ? GPU_OPENCL_AUTO_GRANULE : 1, q->config.slice_ns);
	t->seq = q->seq++;
	t->next = q->tasks;
	q->tasks = t;
	return 0;
}

static void unlink_task(struct gpu_queue *q, struct qtask *t)
{
	for (struct qtask **p = &q->tasks; *p; p = &(*p)->next)
		if (*p == t) {
			*p = t->next;
			t->next = NULL;
			return;
		}
}

/* Hand a task that left the list to the worker, which releases its backend
 * state (CUDA wants its context current on the releasing thread). */
static void bury(struct gpu_queue *q, struct qtask *t)
{
	if (!t->state) {
		qtask_free(t);
		return;
	}
	pthread_mutex_lock(&q->lock);
	t->next = q->graveyard;
	q->graveyard = t;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

static void finish_task_log(struct gpu_queue *q, struct qtask *t, int error, const char *log)
{
	uint64_t id = t->t.id;

	unlink_task(q, t);
	bury(q, t);
	q->done_log = log;
	if (q->hooks.done)
		q->hooks.done(q->userdata, id, error);
	q->done_log = NULL;
}

static void finish_task(struct gpu_queue *q, struct qtask *t, int error)
{
	finish_task_log(q, t, error, NULL);
}

const char *gpu_queue_done_log(const struct gpu_queue *q)
{
	return q->done_log;
}

int gpu_queue_cancel(struct gpu_queue *q, uint64_t task_id)
{
	for (struct qtask *t = q->tasks; t; t = t->next) {
		if (t->t.id != task_id || t->cancelled)
			continue;
		t->cancelled = true;
		if (!(q->in_flight && q->flight == t))
			finish_task(q, t, -ECANCELED);
		return 0;
	}
	return -ENOENT;
}

void gpu_queue_pause(struct gpu_queue *q)
{
	q->paused = true;
}

void gpu_queue_resume(struct gpu_queue *q)
{
	q->paused = false;
}

static struct qtask *pick(struct gpu_queue *q)
{
	struct qtask *best = NULL;

	for (struct qtask *t = q->tasks; t; t = t->next)
		if (!t->cancelled && !gpu_device_faulted(&t->dev->info) &&   /* a faulted backend's tasks wait */
		    (!best || t->t.priority > best->t.priority ||
		     (t->t.priority == best->t.priority && t->seq < best->seq)))
			best = t;
	return best;
}

static void take_chunk(struct gpu_queue *q, enum result_kind kind, int error, uint64_t device_ns, const char *log);

static void take_result(struct gpu_queue *q)
{
	enum result_kind kind;
	uint64_t device_ns;
	_cleanup_free_ char *log = NULL;
	bool idle;
	int error;

	pthread_mutex_lock(&q->lock);
	kind = q->res.kind;
	error = q->res.error;
	device_ns = q->res.device_ns;
	log = TAKE_PTR(q->res.log);
	q->res.kind = RESULT_NONE;
	idle = q->became_idle;
	q->became_idle = false;
	pthread_mutex_unlock(&q->lock);

	if (kind != RESULT_NONE)
		take_chunk(q, kind, error, device_ns, log);
	/* After the result: the worker reports "idle" only after "busy". */
	if (idle)
		q->device_busy = false;
}

static void take_chunk(struct gpu_queue *q, enum result_kind kind, int error, uint64_t device_ns, const char *log)
{
	uint64_t count;
	struct qtask *t;

	t = q->flight;
	q->in_flight = false;
	q->flight = NULL;

	if (kind == RESULT_BUSY) {
		q->device_busy = true;
		gpu_slicer_giveback(&t->slicer, q->flight_offset);
		if (t->cancelled)
			finish_task(q, t, -ECANCELED);
		return;
	}

	count = t->slicer.next - q->flight_offset;
	if (error == 0) {
		q->stats.chunks++;
		q->stats.device_ns += device_ns;
		if (device_ns > q->stats.max_chunk_ns)
			q->stats.max_chunk_ns = device_ns;
		if (q->config.slice_ns && device_ns > q->config.slice_ns)
			q->stats.chunks_over_slice++;
		gpu_slicer_account(&t->slicer, count, device_ns);
		if (q->hooks.charge)
			q->hooks.charge(q->userdata, t->t.id, device_ns);
	}
	if (error < 0)
		finish_task_log(q, t, error, log);
	else if (t->cancelled)
		finish_task(q, t, -ECANCELED);
	else if (gpu_slicer_finished(&t->slicer))
		finish_task(q, t, 0);
}

int gpu_queue_kick(struct gpu_queue *q)
{
	uint64_t counter, offset, count;
	struct qtask *t;

	_unused_ ssize_t n = read(q->efd, &counter, sizeof(counter));
	take_result(q);

	if (q->in_flight || q->paused || q->device_busy)
		return q->in_flight;
	t = pick(q);
	if (!t)
		return 0;
	if (q->hooks.may_dispatch && !q->hooks.may_dispatch(q->userdata))
		return 0;
	if (q->dev->info.busy_source == GPU_BUSY_NONE &&
	    !(q->hooks.owner_idle && q->hooks.owner_idle(q->userdata)))
		return 0;

	count = gpu_slicer_next(&t->slicer, &offset);
	if (count == 0)      /* cannot happen: a finished task has left */
		return 0;
	q->in_flight = true;
	q->flight = t;
	q->flight_offset = offset;
	pthread_mutex_lock(&q->lock);
	q->req.task = t;
	q->req.offset = offset;
	q->req.count = count;
	q->req.last = t->slicer.next >= t->slicer.total;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return 1;
}

void gpu_queue_get_stats(const struct gpu_queue *q, struct gpu_queue_stats *ret)
{
	unsigned n = 0;

	for (const struct qtask *t = q->tasks; t; t = t->next)
		n++;
	*ret = q->stats;
	ret->queued = n;
	ret->in_flight = q->in_flight;
	ret->paused = q->paused;
	ret->device_busy = q->device_busy;
}
