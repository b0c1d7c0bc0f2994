/* SPDX-License-Identifier: GPL-2.0-or-later */
/* GPU devices, queues, budget and local OpenCL jobs in the daemon: see gpu-jobs.h. */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gpu/gpu.h"
#include "harvester/fileio.h"
#include "harvester/gpu-jobs.h"
#include "harvester/ledger.h"
#include "harvester/log.h"
#include "harvester/macro.h"
#include "harvester/manager.h"

#define GPU_SOURCE_MAX_BYTES (1 << 20)
/* At a stop, wait this long for the chunks in flight (a chunk is ~2 ms, but
 * a first chunk may be a PoCL build of seconds: its charge is then lost). */
#define GPU_DRAIN_USEC (2 * USEC_PER_SEC)

struct gpu_dev {
	struct gpu_jobs *owner;
	struct gpu_device *d;
	bool also_cuda;              /* CUDA sees the same GPU (PCI bus id) */
	struct gpu_device *cu;       /* ...through this handle: PTX tasks run on it, in d's queue */
	struct gpu_queue *q;
	sd_event_source *src;
	bool fault_logged;
};

struct gpu_jobs {
	struct manager *m;
	struct gpu_dev *devs;
	unsigned n_devs;
	const char *opencl_absent, *cuda_absent;   /* why a backend added nothing, NULL if it did */
	struct budget budget;
	uint64_t device_ns_total;    /* charged since start: the bucket's usage counter */
	uint64_t saved_spent_usec;   /* budget.spent_total_usec at the last ledger fill */
	bool saved_busy;             /* gpu_busy at the last ledger fill */
	bool dispatching;            /* what we last told the queues */
	char why[160];               /* why not, for status and the log */
	struct gpu_job *head;        /* in id order */
	char *jobs_dir;              /* STATE/jobs */
	bool started, stopped;
	gpu_jobs_done_fn done_fn;
	void *done_userdata;
};

static uint64_t now_mono_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

static uint64_t now_realtime_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

static const char *busy_detection_name(enum gpu_busy_source s)
{
	switch (s) {
	case GPU_BUSY_NVML: return "nvml";
	case GPU_BUSY_DRM_FDINFO: return "drm-fdinfo";
	default: return "none";
	}
}

static const char *opencl_absent_reason(int r)
{
	switch (r) {
	case -ENOENT: return "no OpenCL ICD loader or platform";
	case -ENODEV: return "no usable OpenCL device";
	case -ENOSYS: return "the OpenCL platform is too old";
	default: return "OpenCL failed";
	}
}

/* --- jobs on disk --------------------------------------------------------------- */

static void job_release_buffers(struct gpu_job *j)
{
	for (unsigned i = 0; i < j->n_args; i++) {
		free(j->args[i].host);
		j->args[i].host = NULL;
	}
	free(j->bufs);
	free(j->qargs);
	j->bufs = NULL;
	j->qargs = NULL;
	j->dev = NULL;
}

static void job_free(struct gpu_job *j)
{
	if (!j)
		return;
	job_release_buffers(j);
	for (unsigned i = 0; i < j->n_args; i++)
		free(j->args[i].name);
	free(j->args);
	free(j->source);
	free(j->kernel);
	free(j->reason);
	json_decref(j->pool_task);
	free(j);
}

static int job_path(const struct gpu_jobs *g, uint64_t id, const char *name, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%" PRIu64 "%s%s", g->jobs_dir, id, name ? "/" : "", name ? name : "");
	return n < (int)len ? 0 : -ENAMETOOLONG;
}

/* The file in STATE/jobs/<id>/ of argument I's first contents (IN, INOUT) or
 * of its result (OUT, INOUT). A local job has one of each: input, output. */
static void arg_file(const struct gpu_job *j, unsigned i, bool out, char *buf, size_t len)
{
	if (!j->pool_task)
		snprintf(buf, len, "%s", out ? "output" : "input");
	else
		snprintf(buf, len, "arg%u.%s", i, out ? "out" : "in");
}

static const char *source_file(const struct gpu_job *j)
{
	return j->backend == GPU_BACKEND_CUDA ? "source.ptx" : "source.cl";
}

static const char *backend_name(enum gpu_backend b)
{
	return b == GPU_BACKEND_CUDA ? "cuda" : "opencl";
}

/* One buffer, replacing PATH atomically (fileio.h): a crash leaves the old
 * file or the new one. */
static int write_file_buf(const char *path, const void *data, size_t len, mode_t mode)
{
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	return write_file_atomic(path, &iov, 1, mode);
}

static json_t *sizes_json(const size_t *v, unsigned n)
{
	json_t *a = json_array();
	for (unsigned i = 0; i < n; i++)
		json_array_append_new(a, json_integer((json_int_t)v[i]));
	return a;
}

static const char *karg_kind_name(const struct gpu_job_karg *a)
{
	switch (a->kind) {
	case GPU_ARG_SCALAR: return "scalar";
	case GPU_ARG_LOCAL: return "local";
	default: return a->dir == GPU_BUFFER_IN ? "in" : a->dir == GPU_BUFFER_OUT ? "out" : "inout";
	}
}

static json_t *args_json(const struct gpu_job *j)
{
	json_t *a = json_array();

	for (unsigned i = 0; i < j->n_args; i++) {
		const struct gpu_job_karg *k = &j->args[i];
		json_t *o = json_pack("{s:s, s:I}", "kind", karg_kind_name(k), "bytes", (json_int_t)k->bytes);
		if (k->name)
			json_object_set_new(o, "name", json_string(k->name));
		if (k->kind == GPU_ARG_SCALAR) {
			char hex[2 * sizeof(k->value) + 1];
			for (size_t b = 0; b < k->bytes && b < sizeof(k->value); b++)
				snprintf(hex + 2 * b, 3, "%02x", k->value[b]);
			hex[2 * (k->bytes < sizeof(k->value) ? k->bytes : sizeof(k->value))] = 0;
			json_object_set_new(o, "value", json_string(hex));
		}
		json_array_append_new(a, o);
	}
	return a;
}

/* What gpu-task.json holds, and the base of what "jobs" shows. input_bytes,
 * out_bytes, input and scalars sum the arguments up for the eye (and for
 * harvestctl); "args" is what a load reads. */
static json_t *job_to_json(const struct gpu_job *j)
{
	json_t *sc = json_array();
	size_t in_bytes = 0, out_bytes = 0;
	bool has_input = false;

	for (unsigned i = 0; i < j->n_args; i++) {
		const struct gpu_job_karg *a = &j->args[i];
		if (a->kind == GPU_ARG_SCALAR && a->bytes == sizeof(uint32_t)) {
			uint32_t v;
			memcpy(&v, a->value, sizeof(v));
			json_array_append_new(sc, json_integer(v));
		}
		if (a->kind != GPU_ARG_BUFFER)
			continue;
		if (a->dir & GPU_BUFFER_IN) {
			in_bytes += a->bytes;
			has_input = true;
		}
		if (a->dir & GPU_BUFFER_OUT)
			out_bytes += a->bytes;
	}
	return json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:I, s:I, s:b, s:o, s:o, s:i, s:i, s:I, s:I, s:I,"
			 " s:s?, s:I, s:I, s:s, s:O?}",
			 "id", (json_int_t)j->id, "kind", backend_name(j->backend), "state", job_state_name(j->state),
			 "kernel", j->kernel, "global", sizes_json(j->global, j->work_dim),
			 "local", sizes_json(j->local, j->work_dim),
			 "input_bytes", (json_int_t)in_bytes, "out_bytes", (json_int_t)out_bytes,
			 "input", has_input, "scalars", sc, "args", args_json(j),
			 "priority", j->priority, "attempts", (int)j->attempts,
			 "submitted_usec", (json_int_t)j->submitted_usec,
			 "started_usec", (json_int_t)j->started_usec,
			 "finished_usec", (json_int_t)j->finished_usec,
			 "reason", j->reason, "device_ns", (json_int_t)j->device_ns,
			 "chunks", (json_int_t)j->chunks, "device", j->device_id, "pool_task", j->pool_task);
}

static int job_save(struct gpu_jobs *g, const struct gpu_job *j)
{
	char path[PATH_MAX];
	int r;

	if ((r = job_path(g, j->id, "gpu-task.json", path, sizeof(path))) < 0)
		return r;
	json_t *o = job_to_json(j);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!text)
		return -ENOMEM;
	r = write_file_buf(path, text, strlen(text), 0600);
	free(text);
	if (r < 0)
		log_warning_errno(r, "Cannot save GPU job %" PRIu64 " in %s", j->id, path);
	return r;
}

static int sizes_from_json(json_t *a, unsigned n, size_t *ret)
{
	if (!json_is_array(a) || json_array_size(a) != n)
		return -EBADMSG;
	for (unsigned i = 0; i < n; i++) {
		json_t *v = json_array_get(a, i);
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return -EBADMSG;
		ret[i] = (size_t)json_integer_value(v);
	}
	return 0;
}

static int args_from_json(json_t *a, struct gpu_job *j)
{
	size_t n = json_array_size(a);

	if (!json_is_array(a) || n > GPU_JOB_MAX_ARGS)
		return -EBADMSG;
	j->args = calloc(n + 1, sizeof(*j->args));
	if (!j->args)
		return -ENOMEM;
	j->n_args = (unsigned)n;
	for (size_t i = 0; i < n; i++) {
		struct gpu_job_karg *k = &j->args[i];
		const char *kind = NULL, *name = NULL, *value = NULL;
		json_int_t bytes = -1;

		if (json_unpack(json_array_get(a, i), "{s:s, s:I, s?s, s?s}", "kind", &kind, "bytes", &bytes,
				"name", &name, "value", &value) < 0 || bytes < 0)
			return -EBADMSG;
		k->bytes = (size_t)bytes;
		k->kind = GPU_ARG_BUFFER;
		if (!strcmp(kind, "in"))
			k->dir = GPU_BUFFER_IN;
		else if (!strcmp(kind, "out"))
			k->dir = GPU_BUFFER_OUT;
		else if (!strcmp(kind, "inout"))
			k->dir = GPU_BUFFER_INOUT;
		else if (!strcmp(kind, "local"))
			k->kind = GPU_ARG_LOCAL;
		else if (!strcmp(kind, "scalar")) {
			k->kind = GPU_ARG_SCALAR;
			if (!value || k->bytes < 1 || k->bytes > sizeof(k->value) || strlen(value) != 2 * k->bytes)
				return -EBADMSG;
			for (size_t b = 0; b < k->bytes; b++) {
				unsigned v;
				if (sscanf(value + 2 * b, "%2x", &v) != 1)
					return -EBADMSG;
				k->value[b] = (uint8_t)v;
			}
		} else
			return -EBADMSG;
		if (name && !(k->name = strdup(name)))
			return -ENOMEM;
	}
	return 0;
}

static int job_from_json(json_t *o, struct gpu_job **ret)
{
	json_int_t id, sub = 0, start = 0, fin = 0, dns = 0, chunks = 0;
	const char *state, *kernel, *kind = "opencl", *reason = NULL, *device = "";
	json_t *global, *local, *args, *pool_task;
	int priority = 0, attempts = 0, r;

	if (json_unpack(o, "{s:I, s:s, s:s, s:o, s:o, s:o, s?s, s?i, s?i, s?I, s?I, s?I, s?I, s?I, s?s}",
			"id", &id, "state", &state, "kernel", &kernel, "global", &global, "local", &local,
			"args", &args, "kind", &kind, "priority", &priority, "attempts", &attempts,
			"submitted_usec", &sub, "started_usec", &start, "finished_usec", &fin, "device_ns", &dns,
			"chunks", &chunks, "device", &device) < 0)
		return -EBADMSG;
	/* null when there is none, which unpack's "s" refuses */
	reason = json_string_value(json_object_get(o, "reason"));
	pool_task = json_object_get(o, "pool_task");
	unsigned dim = (unsigned)json_array_size(global);
	if (id <= 0 || dim < 1 || dim > 3 || (strcmp(kind, "opencl") && strcmp(kind, "cuda")) ||
	    (pool_task && !json_is_object(pool_task) && !json_is_null(pool_task)))
		return -EBADMSG;
	struct gpu_job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->id = (uint64_t)id;
	j->work_dim = dim;
	j->backend = strcmp(kind, "cuda") ? GPU_BACKEND_OPENCL : GPU_BACKEND_CUDA;
	int s = -1;
	for (int i = 0; i < _JOB_STATE_MAX; i++)
		if (strcmp(job_state_name(i), state) == 0)
			s = i;
	if (s < 0 || sizes_from_json(global, dim, j->global) < 0 || sizes_from_json(local, dim, j->local) < 0) {
		job_free(j);
		return -EBADMSG;
	}
	j->state = (enum job_state)s;
	if ((r = args_from_json(args, j)) < 0) {
		job_free(j);
		return r;
	}
	j->priority = priority;
	j->attempts = (unsigned)attempts;
	j->submitted_usec = (uint64_t)sub;
	j->started_usec = (uint64_t)start;
	j->finished_usec = (uint64_t)fin;
	j->device_ns = (uint64_t)dns;
	j->chunks = (uint64_t)chunks;
	snprintf(j->device_id, sizeof(j->device_id), "%s", device);
	j->pool_task = json_is_object(pool_task) ? json_incref(pool_task) : NULL;
	j->kernel = strdup(kernel);
	j->reason = reason ? strdup(reason) : NULL;
	if (!j->kernel) {
		job_free(j);
		return -ENOMEM;
	}
	*ret = j;
	return 0;
}

static struct gpu_job *job_find(struct gpu_jobs *g, uint64_t id)
{
	for (struct gpu_job *j = g->head; j; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

static void job_append(struct gpu_jobs *g, struct gpu_job *j)
{
	struct gpu_job **p = &g->head;
	while (*p && (*p)->id < j->id)
		p = &(*p)->next;
	j->next = *p;
	*p = j;
}

/* --- dispatch rule and hooks ------------------------------------------------------------------ */

/* The policy allows harvesting. A CPU budget that is spent ("exhausted",
 * which only holds when every other rule passes) does not stop the GPU:
 * it has its own bucket. */
static bool policy_allows_gpu(const struct manager *m)
{
	return m->policy.state == POLICY_IDLE || m->policy.state == POLICY_EXHAUSTED;
}

static bool dispatch_allowed(struct gpu_jobs *g)
{
	struct manager *m = g->m;

	if (!policy_allows_gpu(m)) {
		snprintf(g->why, sizeof(g->why), "policy: %s (%s)", policy_state_name(m->policy.state), m->policy.reason);
		return false;
	}
	if (g->budget.exhausted) {
		snprintf(g->why, sizeof(g->why), "the GPU budget is exhausted");
		return false;
	}
	g->why[0] = 0;
	return true;
}

/* Pause or resume every queue; kick only from outside the queue's hooks. */
static void apply(struct gpu_jobs *g, bool kick)
{
	bool want;

	if (!g->started)
		return;
	want = dispatch_allowed(g);
	if (want != g->dispatching) {
		if (g->n_devs)
			log_info("GPU dispatch %s%s%s", want ? "resumes" : "stops after the chunks in flight",
				 want ? "" : ": ", want ? "" : g->why);
		g->dispatching = want;
	}
	for (unsigned i = 0; i < g->n_devs; i++) {
		struct gpu_dev *dv = &g->devs[i];
		if (!dv->q)
			continue;
		if (want)
			gpu_queue_resume(dv->q);
		else
			gpu_queue_pause(dv->q);
		if (kick)
			gpu_queue_kick(dv->q);
	}
}

static bool hook_may_dispatch(void *u)
{
	struct gpu_dev *dv = u;
	return dispatch_allowed(dv->owner);
}

static bool hook_owner_idle(void *u)
{
	struct gpu_dev *dv = u;
	const struct manager *m = dv->owner->m;
	uint64_t now = now_mono_usec(), last = m->last_activity_usec;

	return last == 0 || (now >= last && now - last >= m->config.input_idle_usec);
}

static void budget_step(struct gpu_jobs *g)
{
	budget_update(&g->budget, now_mono_usec(), g->device_ns_total / NSEC_PER_USEC);
}

static void hook_charge(void *u, uint64_t task_id, uint64_t device_ns)
{
	struct gpu_dev *dv = u;
	struct gpu_jobs *g = dv->owner;
	struct gpu_job *j = job_find(g, task_id);

	/* The bucket's usage counter is all device time in ns: no rounding
	 * per chunk is lost. */
	g->device_ns_total += device_ns;
	budget_step(g);
	if (j) {
		j->device_ns += device_ns;
		j->chunks++;
		if (j->state == JOB_QUEUED) {
			j->state = JOB_RUNNING;
			j->started_usec = now_realtime_usec();
			job_save(g, j);
		}
	}
	if (g->budget.exhausted)
		apply(g, false);
}

/* Every OUT and INOUT buffer of a finished job into its file. */
static int write_outputs(struct gpu_jobs *g, struct gpu_job *j)
{
	char name[32], path[PATH_MAX];
	int r;

	for (unsigned i = 0; i < j->n_args; i++) {
		const struct gpu_job_karg *a = &j->args[i];
		if (a->kind != GPU_ARG_BUFFER || !(a->dir & GPU_BUFFER_OUT))
			continue;
		arg_file(j, i, true, name, sizeof(name));
		if ((r = job_path(g, j->id, name, path, sizeof(path))) < 0 ||
		    (r = write_file_buf(path, a->host, a->bytes, 0644)) < 0)
			return r;
	}
	return 0;
}

/* The compiler's log, made to fit a reason: blank lines dropped, lines
 * joined with "; ", the runtime's temporary file names (PoCL's
 * /root/.cache/pocl/kcache/tempfile_X.cl) said as "source", and a note of
 * what was cut. The first lines are kept: they hold the first error. */
static void condense_log(const char *log, char *buf, size_t size)
{
	size_t n = 0, keep = size > 64 ? size - 48 : size;
	const char *p = log;

	buf[0] = 0;
	if (!log || size == 0)
		return;
	while (*p && n + 1 < keep) {
		const char *eol = p + strcspn(p, "\n");
		bool any = false;
		for (const char *c = p; c < eol; c++)
			any |= !isspace((unsigned char)*c);
		if (any && n > 0 && n + 3 < keep) {
			memcpy(buf + n, "; ", 2);
			n += 2;
		}
		while (any && p < eol && n + 1 < keep) {
			if (*p == '/' && (p == log || isspace((unsigned char)p[-1]))) {
				size_t len = strcspn(p, ": \n");
				if (p[len] == ':') {         /* a path with a line number after it */
					n += (size_t)snprintf(buf + n, keep - n, "source");
					if (n >= keep)
						n = keep - 1;
					p += len;
					continue;
				}
			}
			buf[n++] = *p == '\t' || *p == '\r' ? ' ' : *p;
			p++;
		}
		p = *eol ? eol + 1 : eol;
		if (!any)
			continue;
	}
	buf[n] = 0;
	if (*p)
		snprintf(buf + n, size - n, " [%zu more bytes of log]", strlen(p));
}

/* The driver's words on a kernel's fault, through either backend, or NULL. */
static const char *dev_fault(const struct gpu_dev *dv)
{
	const struct gpu_device_info *in = gpu_device_get_info(dv->d);

	if (!gpu_device_faulted(in) && dv->cu)
		in = gpu_device_get_info(dv->cu);
	return gpu_device_faulted(in) ? in->fault : NULL;
}

static void set_failure_reason(struct gpu_job *j, int error, const char *log, const char *fault)
{
	const char *lang = j->backend == GPU_BACKEND_CUDA ? "the PTX" : "the OpenCL C source";
	char words[JOB_REASON_MAX - 128];

	if (error == -ENOEXEC) {
		condense_log(log, words, sizeof(words));
		job_set_reason(&j->reason, "%s did not build on %s%s%s", lang, j->device_id, words[0] ? ": " : "",
			       words);
	} else if (error == -ENOENT)
		job_set_reason(&j->reason, "no kernel named '%s' in %s", j->kernel, lang);
	else if (error == -EFAULT && fault)
		job_set_reason(&j->reason, "the kernel faulted on %s: %s", j->device_id, fault);
	else
		job_set_reason(&j->reason, "the %s run failed on %s: %s", j->backend == GPU_BACKEND_CUDA ? "CUDA" : "OpenCL",
			       j->device_id, strerror(-error));
}

static void hook_done(void *u, uint64_t task_id, int error)
{
	struct gpu_dev *dv = u;
	struct gpu_jobs *g = dv->owner;
	struct gpu_job *j = job_find(g, task_id);
	int r;

	if (!j)
		return;
	if (error == 0 && (r = write_outputs(g, j)) < 0) {
		j->state = JOB_FAILED;
		job_set_reason(&j->reason, "cannot write the output: %s", strerror(-r));
	} else if (error == 0) {
		j->state = JOB_DONE;
		free(j->reason);
		j->reason = NULL;
	} else if (error == -ECANCELED) {
		j->state = JOB_CANCELLED;
		job_set_reason(&j->reason, "cancelled");
	} else {
		j->state = JOB_FAILED;
		set_failure_reason(j, error, gpu_queue_done_log(dv->q), dev_fault(dv));
	}
	if (error == -EFAULT && dev_fault(dv) && !dv->fault_logged) {
		dv->fault_logged = true;
		log_error("GPU %s: a kernel faulted: %s. The CUDA driver refuses all further work in this process, "
			  "so the device's other tasks wait, queued, until harvesterd restarts (it does, with exit status %d, "
			  "once no job is running)", j->device_id, dev_fault(dv), HARVESTERD_EXIT_RESTART);
	}
	j->finished_usec = now_realtime_usec();
	if (!j->started_usec)
		j->started_usec = j->finished_usec;
	job_save(g, j);
	job_release_buffers(j);
	if (j->state == JOB_FAILED)
		log_warning("GPU job %" PRIu64 " failed: %s", j->id, j->reason);
	else
		log_info("GPU job %" PRIu64 " %s: %" PRIu64 " us of device time in %" PRIu64 " chunks", j->id,
			 job_state_name(j->state), j->device_ns / 1000, j->chunks);
	if (g->done_fn)
		g->done_fn(g->done_userdata, j);
}

static const struct gpu_queue_hooks queue_hooks = {
	.may_dispatch = hook_may_dispatch,
	.owner_idle = hook_owner_idle,
	.charge = hook_charge,
	.done = hook_done,
};

static int on_queue_fd(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct gpu_dev *dv = userdata;
	gpu_queue_kick(dv->q);
	return 0;
}

/* --- putting a job on a queue ------------------------------------------------------------------ */

static struct gpu_dev *pick_device(struct gpu_jobs *g, enum gpu_backend backend)
{
	struct gpu_dev *best = NULL;
	unsigned best_n = UINT_MAX;

	for (unsigned i = 0; i < g->n_devs; i++) {
		struct gpu_dev *dv = &g->devs[i];
		struct gpu_queue_stats st;
		if (!dv->q || (gpu_device_get_info(dv->d)->backend != backend &&
				!(backend == GPU_BACKEND_CUDA && dv->cu)))
			continue;
		gpu_queue_get_stats(dv->q, &st);
		if (st.queued < best_n) {
			best = dv;
			best_n = st.queued;
		}
	}
	return best;
}

/* Hand j (with j->source and the IN buffers' host memory loaded) to a queue. */
static int job_enqueue(struct gpu_jobs *g, struct gpu_job *j)
{
	struct gpu_dev *dv = pick_device(g, j->backend);
	unsigned nb = 0;
	int r;

	if (!dv)
		return -ENODEV;
	j->bufs = calloc(j->n_args + 1, sizeof(*j->bufs));
	j->qargs = calloc(j->n_args + 1, sizeof(*j->qargs));
	if (!j->bufs || !j->qargs) {
		r = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < j->n_args; i++) {
		struct gpu_job_karg *a = &j->args[i];
		switch (a->kind) {
		case GPU_ARG_BUFFER:
			/* OUT only: zeroed, so unwritten bytes read back the same everywhere. */
			if (!a->host && !(a->host = calloc(1, a->bytes ? a->bytes : 1))) {
				r = -ENOMEM;
				goto fail;
			}
			j->bufs[nb] = (struct gpu_buffer) { a->host, a->bytes, a->dir };
			j->qargs[i] = (struct gpu_arg) { .kind = GPU_ARG_BUFFER, .buffer = nb++ };
			break;
		case GPU_ARG_SCALAR:
			j->qargs[i] = (struct gpu_arg) { .kind = GPU_ARG_SCALAR, .size = a->bytes };
			memcpy(j->qargs[i].value, a->value, sizeof(a->value));
			break;
		default:
			j->qargs[i] = (struct gpu_arg) { .kind = GPU_ARG_LOCAL, .size = a->bytes };
		}
	}
	struct gpu_task t = {
		.id = j->id, .priority = j->priority, .source = j->source, .kernel = j->kernel,
		.work_dim = j->work_dim, .buffers = j->bufs, .n_buffers = nb, .args = j->qargs, .n_args = j->n_args,
	};
	memcpy(t.global, j->global, sizeof(t.global));
	memcpy(t.local, j->local, sizeof(t.local));
	r = gpu_queue_submit_on(dv->q, &t, j->backend);
	if (r < 0)
		goto fail;
	j->dev = dv;
	j->attempts++;
	snprintf(j->device_id, sizeof(j->device_id), "%s", gpu_device_get_info(dv->d)->id);
	return 0;
fail:
	free(j->bufs);
	free(j->qargs);
	j->bufs = NULL;
	j->qargs = NULL;
	return r;
}

static int check_spec(const struct gpu_job_spec *s)
{
	if (!s->source || !s->kernel || !*s->kernel || s->work_dim < 1 || s->work_dim > 3 ||
	    s->n_scalars > GPU_JOB_MAX_SCALARS || s->out_bytes == 0 || (s->input_bytes && !s->input))
		return -EINVAL;
	if (strlen(s->source) > GPU_SOURCE_MAX_BYTES)
		return -EFBIG;
	for (unsigned i = 0; i < s->work_dim; i++)
		if (s->global[i] == 0 || (s->local[i] && s->global[i] % s->local[i]))
			return -EINVAL;
	if (s->out_bytes > GPU_JOB_MAX_BYTES || s->input_bytes > GPU_JOB_MAX_BYTES)
		return -EFBIG;
	return 0;
}

/* Source and IN buffers on disk first, so a job the record names can be run
 * again after a stop. */
static int job_write_inputs(struct gpu_jobs *g, struct gpu_job *j)
{
	char dir[PATH_MAX], name[32], path[PATH_MAX];
	int r;

	if ((r = job_path(g, j->id, NULL, dir, sizeof(dir))) < 0)
		return r;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return negative_errno();
	if ((r = job_path(g, j->id, source_file(j), path, sizeof(path))) < 0 ||
	    (r = write_file_buf(path, j->source, strlen(j->source), 0644)) < 0)
		return r;
	for (unsigned i = 0; i < j->n_args; i++) {
		const struct gpu_job_karg *a = &j->args[i];
		if (a->kind != GPU_ARG_BUFFER || !(a->dir & GPU_BUFFER_IN))
			continue;
		arg_file(j, i, false, name, sizeof(name));
		if ((r = job_path(g, j->id, name, path, sizeof(path))) < 0 ||
		    (r = write_file_buf(path, a->host, a->bytes, 0600)) < 0)
			return r;
	}
	return 0;
}

static int job_new(struct gpu_jobs *g, enum gpu_backend backend, const char *source, const char *kernel,
		   unsigned work_dim, const size_t *global, const size_t *local, unsigned n_args, struct gpu_job **ret)
{
	struct gpu_job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->id = jobs_new_id(g->m->jobs);
	j->state = JOB_QUEUED;
	j->backend = backend;
	j->work_dim = work_dim >= 1 && work_dim <= 3 ? work_dim : 1;
	memcpy(j->global, global, j->work_dim * sizeof(*global));
	memcpy(j->local, local, j->work_dim * sizeof(*local));
	j->submitted_usec = now_realtime_usec();
	j->source = strdup(source ? source : "");
	j->kernel = strdup(kernel ? kernel : "");
	j->args = calloc(n_args + 1, sizeof(*j->args));
	j->n_args = n_args;
	if (!j->source || !j->kernel || !j->args) {
		job_free(j);
		return -ENOMEM;
	}
	*ret = j;
	return 0;
}

/* Copy of data for an IN buffer's host memory (one byte for an empty one). */
static void *dup_data(const void *data, size_t len)
{
	void *p = malloc(len ? len : 1);
	if (p && len)
		memcpy(p, data, len);
	return p;
}

int gpu_jobs_submit(struct gpu_jobs *g, const struct gpu_job_spec *spec, uint64_t *ret_id)
{
	struct gpu_job *j;
	unsigned na = 0;
	int r;

	if ((r = check_spec(spec)) < 0)
		return r;
	if (!g || !pick_device(g, GPU_BACKEND_OPENCL))
		return -ENODEV;
	r = job_new(g, GPU_BACKEND_OPENCL, spec->source, spec->kernel, spec->work_dim, spec->global, spec->local,
		    (spec->input ? 1 : 0) + 1 + spec->n_scalars, &j);
	if (r < 0)
		return r;
	j->priority = spec->priority;
	if (spec->input) {
		j->args[na] = (struct gpu_job_karg) { .kind = GPU_ARG_BUFFER, .dir = GPU_BUFFER_IN,
						      .bytes = spec->input_bytes };
		if (!(j->args[na++].host = dup_data(spec->input, spec->input_bytes))) {
			r = -ENOMEM;
			goto fail;
		}
	}
	j->args[na++] = (struct gpu_job_karg) { .kind = GPU_ARG_BUFFER, .dir = GPU_BUFFER_OUT, .bytes = spec->out_bytes };
	for (unsigned i = 0; i < spec->n_scalars; i++) {
		j->args[na] = (struct gpu_job_karg) { .kind = GPU_ARG_SCALAR, .bytes = sizeof(uint32_t) };
		memcpy(j->args[na++].value, &spec->scalars[i], sizeof(uint32_t));
	}

	if ((r = job_write_inputs(g, j)) < 0)
		goto fail;
	if ((r = job_enqueue(g, j)) < 0)
		goto fail;
	if ((r = job_save(g, j)) < 0) {
		gpu_queue_cancel(j->dev->q, j->id);
		goto fail;
	}
	job_append(g, j);
	*ret_id = j->id;
	log_info("GPU job %" PRIu64 " queued on %s: kernel %s", j->id, j->device_id, j->kernel);
	gpu_queue_kick(j->dev->q);
	return 0;
fail:
	/* A cancel above reports through done(), which finds no job: fine. */
	job_free(j);
	return r;
}

/* What a pool task asks that no device could do, or NULL. */
static const char *pool_spec_invalid(const struct gpu_pool_spec *s)
{
	if (!s->kernel || !*s->kernel)
		return "no kernel name";
	if (!s->source || !*s->source)
		return "no source (input kernel.cl or kernel.ptx)";
	if (strlen(s->source) > GPU_SOURCE_MAX_BYTES)
		return "the source is over 1 MiB";
	if (s->work_dim < 1 || s->work_dim > 3)
		return "the ND-range must have 1 to 3 dimensions";
	for (unsigned i = 0; i < s->work_dim; i++) {
		if (s->global[i] == 0)
			return "a global size is 0";
		if (s->local[i] && s->global[i] % s->local[i])
			return "a global size is not a multiple of its local size";
		if (s->backend == GPU_BACKEND_CUDA && !s->local[i])
			return "a CUDA task needs its block size (local size)";
	}
	if (s->n_args > GPU_JOB_MAX_ARGS)
		return "more than 32 kernel arguments";
	for (unsigned i = 0; i < s->n_args; i++) {
		const struct gpu_job_arg *a = &s->args[i];
		switch (a->kind) {
		case GPU_ARG_BUFFER:
			if (a->dir < GPU_BUFFER_IN || a->dir > GPU_BUFFER_INOUT)
				return "a buffer without a direction";
			if (a->bytes > GPU_JOB_MAX_BYTES)
				return "a buffer over 256 MiB";
			if ((a->dir & GPU_BUFFER_OUT) && (!a->name || !*a->name))
				return "an output buffer without a name";
			if ((a->dir & GPU_BUFFER_IN) && a->bytes && !a->data)
				return "an input buffer without its input";
			break;
		case GPU_ARG_SCALAR:
			if (a->bytes < 1 || a->bytes > sizeof(a->value))
				return "a scalar of other than 1 to 16 bytes";
			break;
		case GPU_ARG_LOCAL:
			if (a->bytes == 0 || s->backend == GPU_BACKEND_CUDA)
				return "__local memory of 0 bytes, or on CUDA";
			break;
		default:
			return "an argument of unknown kind";
		}
	}
	return NULL;
}

int gpu_jobs_submit_pool(struct gpu_jobs *g, const struct gpu_pool_spec *spec, json_t *pool_task,
			 struct gpu_job **ret)
{
	const char *api = backend_name(spec->backend);
	const char *bad = spec->refuse_reason ? spec->refuse_reason : pool_spec_invalid(spec);
	struct gpu_job *j;
	int r;

	if (!g || !pool_task)
		return -EINVAL;
	r = job_new(g, spec->backend, spec->source, spec->kernel, spec->work_dim, spec->global, spec->local,
		    bad ? 0 : spec->n_args, &j);
	if (r < 0)
		return r;
	j->pool_task = json_incref(pool_task);
	for (unsigned i = 0; !bad && i < spec->n_args; i++) {
		const struct gpu_job_arg *a = &spec->args[i];
		struct gpu_job_karg *k = &j->args[i];
		*k = (struct gpu_job_karg) { .kind = a->kind, .dir = a->dir, .bytes = a->bytes };
		memcpy(k->value, a->value, sizeof(k->value));
		if ((a->kind == GPU_ARG_BUFFER && (a->dir & GPU_BUFFER_OUT) && !(k->name = strdup(a->name))) ||
		    (a->kind == GPU_ARG_BUFFER && (a->dir & GPU_BUFFER_IN) && !(k->host = dup_data(a->data, a->bytes)))) {
			job_free(j);
			return -ENOMEM;
		}
	}

	/* A task that cannot run here fails with its reason, so that the pool
	 * and its submitter learn why, rather than lapse and come back. */
	if (bad)
		job_set_reason(&j->reason, "the %s task cannot be run as described: %s", api, bad);
	else if (!pick_device(g, spec->backend))
		job_set_reason(&j->reason, "no %s device here (%s)", spec->backend == GPU_BACKEND_CUDA ? "CUDA" : "OpenCL",
			       (spec->backend == GPU_BACKEND_CUDA ? g->cuda_absent : g->opencl_absent) ?:
			       "none takes work");
	else if ((r = job_write_inputs(g, j)) < 0) {
		job_free(j);
		return r;
	} else if ((r = job_enqueue(g, j)) < 0) {
		if (r != -EINVAL) {
			job_free(j);
			return r;
		}
		job_set_reason(&j->reason, "the %s device cannot run the task as described "
			       "(sizes, work-groups or arguments)", api);
	}
	if (j->reason) {
		char dir[PATH_MAX];
		j->state = JOB_FAILED;
		j->finished_usec = now_realtime_usec();
		job_release_buffers(j);
		if ((r = job_path(g, j->id, NULL, dir, sizeof(dir))) < 0 ||
		    (mkdir(dir, 0755) < 0 && errno != EEXIST && (r = negative_errno()) < 0)) {
			job_free(j);
			return r;
		}
	}
	if ((r = job_save(g, j)) < 0) {
		if (j->dev)
			gpu_queue_cancel(j->dev->q, j->id);
		job_free(j);
		return r;
	}
	job_append(g, j);
	if (j->dev)
		gpu_queue_kick(j->dev->q);
	*ret = j;
	return 0;
}

int gpu_jobs_cancel(struct gpu_jobs *g, uint64_t id)
{
	struct gpu_job *j = g ? job_find(g, id) : NULL;

	if (!j)
		return -ENOENT;
	if (j->state != JOB_QUEUED && j->state != JOB_RUNNING)
		return -EALREADY;
	if (j->dev)
		/* done() marks it cancelled: at once, or after its chunk in flight. */
		return gpu_queue_cancel(j->dev->q, id);
	j->state = JOB_CANCELLED;
	job_set_reason(&j->reason, "cancelled");
	j->finished_usec = now_realtime_usec();
	job_save(g, j);
	return 0;
}

int gpu_jobs_save(struct gpu_jobs *g, struct gpu_job *j)
{
	return job_save(g, j);
}

struct gpu_job *gpu_jobs_first(const struct gpu_jobs *g)
{
	return g ? g->head : NULL;
}

int gpu_jobs_output_path(const struct gpu_jobs *g, const struct gpu_job *j, unsigned arg, char *buf, size_t len)
{
	char name[32];

	if (arg >= j->n_args)
		return -EINVAL;
	arg_file(j, arg, true, name, sizeof(name));
	return job_path(g, j->id, name, buf, len);
}

/* --- load at start ----------------------------------------------------------------------------- */

/* The source and IN buffers of a job to run again. */
static int job_read_inputs(struct gpu_jobs *g, struct gpu_job *j)
{
	char name[32], path[PATH_MAX];
	size_t len;
	void *text;
	int r;

	if ((r = job_path(g, j->id, source_file(j), path, sizeof(path))) < 0 ||
	    (r = read_file(path, GPU_SOURCE_MAX_BYTES, 0, &text, &len, NULL)) < 0)
		return r;
	free(j->source);
	j->source = text;
	for (unsigned i = 0; i < j->n_args; i++) {
		struct gpu_job_karg *a = &j->args[i];
		if (a->kind != GPU_ARG_BUFFER || !(a->dir & GPU_BUFFER_IN))
			continue;
		arg_file(j, i, false, name, sizeof(name));
		if ((r = job_path(g, j->id, name, path, sizeof(path))) < 0 ||
		    (r = read_file(path, GPU_JOB_MAX_BYTES, 0, &a->host, &len, NULL)) < 0)
			return r;
		if (len != a->bytes)
			return -EBADMSG;
	}
	return 0;
}

static void job_load_one(struct gpu_jobs *g, uint64_t id)
{
	char path[PATH_MAX];
	struct gpu_job *j = NULL;
	int r;

	if (job_path(g, id, "gpu-task.json", path, sizeof(path)) < 0 || access(path, F_OK) < 0)
		return;   /* an exec job's folder */
	json_error_t err;
	json_t *o = json_load_file(path, 0, &err);
	r = o ? job_from_json(o, &j) : -EBADMSG;
	json_decref(o);
	if (r >= 0 && j->id != id) {
		job_free(j);
		r = -EBADMSG;
	}
	if (r < 0) {
		log_warning_errno(r, "GPU job file %s is unreadable; ignored", path);
		return;
	}
	jobs_id_used(g->m->jobs, id);
	job_append(g, j);
	if (j->state != JOB_QUEUED && j->state != JOB_RUNNING)
		return;
	if (j->state == JOB_RUNNING) {
		/* The daemon stopped while it ran: the device's work is gone, run it again. */
		j->state = JOB_QUEUED;
		job_set_reason(&j->reason, "requeued: the daemon stopped while it ran");
	}
	r = job_read_inputs(g, j);
	if (r >= 0)
		r = job_enqueue(g, j);
	if (r < 0) {
		j->state = JOB_FAILED;
		if (r == -ENODEV)
			job_set_reason(&j->reason, "requeued, but no %s device is left",
				       j->backend == GPU_BACKEND_CUDA ? "CUDA" : "OpenCL");
		else
			job_set_reason(&j->reason, "requeued, but cannot be run again: %s", strerror(-r));
		j->finished_usec = now_realtime_usec();
		job_release_buffers(j);
	}
	job_save(g, j);
}

static void jobs_load(struct gpu_jobs *g)
{
	DIR *d = opendir(g->jobs_dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end;
		unsigned long long id = strtoull(de->d_name, &end, 10);
		if (*end || id == 0 || de->d_name[0] == '0')
			continue;
		job_load_one(g, (uint64_t)id);
	}
	closedir(d);
}

/* --- life ------------------------------------------------------------------------------------- */

static int ledger_file(const struct manager *m, char *buf, size_t len)
{
	return snprintf(buf, len, "%s/ledger", m->state_dir) < (int)len ? 0 : -ENAMETOOLONG;
}

void gpu_jobs_match_pci(struct gpu_device *const *cl, int ncl, struct gpu_device *const *cu, int ncu,
			int *ret_same)
{
	for (int i = 0; i < ncu; i++) {
		const char *bus = gpu_device_get_info(cu[i])->pci_bus_id;
		ret_same[i] = -1;
		/* An unknown bus id ("") names no device: never "the same". */
		for (int k = 0; bus[0] && k < ncl && ret_same[i] < 0; k++)
			if (strcasecmp(gpu_device_get_info(cl[k])->pci_bus_id, bus) == 0)
				ret_same[i] = k;
	}
}

/* One entry per physical GPU: a CUDA device whose PCI bus id an OpenCL
 * device has joins that entry (the OpenCL handle is the queue's device and
 * runs OpenCL C; the CUDA handle runs PTX in the same queue; both backends
 * are named). Takes both arrays. */
static int merge_devices(struct gpu_jobs *g, struct gpu_device **cl, int ncl, struct gpu_device **cu, int ncu)
{
	int *same = calloc((size_t)ncu + 1, sizeof(*same));

	g->devs = calloc((size_t)(ncl + ncu) + 1, sizeof(*g->devs));
	if (!g->devs || !same) {
		free(same);
		gpu_devices_free(cl, ncl);
		gpu_devices_free(cu, ncu);
		return -ENOMEM;
	}
	gpu_jobs_match_pci(cl, ncl, cu, ncu, same);
	for (int i = 0; i < ncl; i++)
		g->devs[g->n_devs++] = (struct gpu_dev) { .owner = g, .d = cl[i] };
	for (int i = 0; i < ncu; i++) {
		if (same[i] >= 0) {
			g->devs[same[i]].also_cuda = true;
			g->devs[same[i]].cu = cu[i];
		} else
			g->devs[g->n_devs++] = (struct gpu_dev) { .owner = g, .d = cu[i] };
	}
	free(same);
	free(cl);
	free(cu);
	return 0;
}

int gpu_jobs_new(struct manager *m, struct gpu_jobs **ret)
{
	struct gpu_device **cl = NULL, **cu = NULL;
	char path[PATH_MAX];
	struct ledger l;
	int64_t tokens = 0, unrecorded = 0;
	uint64_t spent = 0;
	int ncl, ncu, r;

	struct gpu_jobs *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->m = m;
	if (asprintf(&g->jobs_dir, "%s/jobs", m->state_dir) < 0) {
		free(g);
		return -ENOMEM;
	}

	/* Each backend on its own (as gpu_devices_find), to say why one is
	 * absent. OpenCL is listed in a child first: the ICD loader would load
	 * every driver into the daemon (PoCL with LLVM: ~70 MB resident) even
	 * when none of their devices is one we use. */
	struct gpu_device_info *probed = NULL;
	int np = gpu_opencl_probe(&probed), usable = 0;
	for (int i = 0; i < np; i++)
		usable += !probed[i].cpu_device || m->config.opencl_cpu_devices;
	free(probed);
	if (np == 0 || (np > 0 && usable == 0)) {
		ncl = 0;
		if (np > 0)
			g->opencl_absent = "only OpenCL CPU devices (OpenCLCPUDevices=no)";
	} else if (np == -ENOENT || np == -ENODEV || np == -ENOSYS)
		ncl = np;
	else {
		if (np < 0)
			log_warning_errno(np, "Listing the OpenCL devices in a child failed; listing them here");
		ncl = gpu_opencl_devices(&cl);
	}
	if (ncl > 0 && !m->config.opencl_cpu_devices) {
		/* A CPU "GPU" (PoCL) would run harvest work in the daemon itself,
		 * outside jobs/ and its cap: only tests ask for that. */
		int keep = 0;
		for (int i = 0; i < ncl; i++) {
			if (gpu_device_get_info(cl[i])->cpu_device) {
				struct gpu_device **one = malloc(sizeof(*one));
				if (one) {
					one[0] = cl[i];
					gpu_devices_free(one, 1);
				}
			} else
				cl[keep++] = cl[i];
		}
		if (keep == 0 && ncl > 0) {
			free(cl);
			cl = NULL;
			g->opencl_absent = "only OpenCL CPU devices (OpenCLCPUDevices=no)";
		}
		ncl = keep;
	}
	if (ncl <= 0) {
		if (!g->opencl_absent)
			g->opencl_absent = ncl == 0 ? "no OpenCL device" : opencl_absent_reason(ncl);
		ncl = 0;
	}
	ncu = gpu_cuda_devices(&cu);
	if (ncu <= 0) {
		g->cuda_absent = ncu == 0 ? "no CUDA device" : gpu_cuda_absent_reason(ncu);
		ncu = 0;
	}
	if ((r = merge_devices(g, cl, ncl, cu, ncu)) < 0) {
		gpu_jobs_free(g);
		return r;
	}
	for (unsigned i = 0; i < g->n_devs; i++) {
		const struct gpu_device_info *in = gpu_device_get_info(g->devs[i].d);
		log_info("GPU %s: %s (%s%s), low priority %s, busy detection %s%s%s", in->id, in->name,
			 in->backend == GPU_BACKEND_OPENCL ? "opencl" : "cuda", g->devs[i].also_cuda ? ", cuda" : "",
			 in->low_priority ? "yes" : "no", busy_detection_name(in->busy_source),
			 in->busy_note[0] ? ": " : "", in->busy_note);
	}
	if (!g->n_devs)
		log_info("No GPU: OpenCL: %s; CUDA: %s", g->opencl_absent, g->cuda_absent);

	if ((r = ledger_file(m, path, sizeof(path))) >= 0 && (r = ledger_load(path, &l)) >= 0 && l.has_gpu) {
		tokens = l.gpu_tokens_usec;
		spent = l.gpu_spent_total_usec;
		unrecorded = ledger_gpu_unrecorded_usec(&l, now_realtime_usec(), g->n_devs);
		log_info("GPU budget restored: %" PRId64 " us of device time in the bucket, %" PRIu64
			 " us spent in all, %" PRId64 " us charged for the time since the last save",
			 tokens, spent, unrecorded);
	}
	/* Else a new bucket starts empty, as the CPU's; an unreadable ledger
	 * the manager reports. Burst has no meaning for the GPU. */
	budget_init(&g->budget, m->config.gpu_ppm, PPM_ONE, m->config.window_usec, g->n_devs, tokens,
		    now_mono_usec(), 0);
	g->budget.spent_total_usec = spent;
	if (unrecorded > 0)
		budget_charge(&g->budget, (uint64_t)unrecorded);
	g->saved_spent_usec = spent;
	*ret = g;
	return 0;
}

int gpu_jobs_start(struct gpu_jobs *g)
{
	struct gpu_queue_config qc = { .slice_ns = GPU_SLICE_DEFAULT_NS, .busy_poll_ns = GPU_BUSY_POLL_DEFAULT_NS };
	int r;

	for (unsigned i = 0; i < g->n_devs; i++) {
		struct gpu_dev *dv = &g->devs[i];
		const char *id = gpu_device_get_info(dv->d)->id;
		r = gpu_queue_new(dv->d, &qc, &queue_hooks, dv, &dv->q);
		if (r < 0) {
			log_warning_errno(r, "GPU %s: cannot start its queue; it takes no work", id);
			dv->q = NULL;
			continue;
		}
		r = sd_event_add_io(g->m->event, &dv->src, gpu_queue_get_fd(dv->q), EPOLLIN, on_queue_fd, dv);
		if (r < 0) {
			log_warning_errno(r, "GPU %s: cannot watch its queue; it takes no work", id);
			gpu_queue_free(dv->q);
			dv->q = NULL;
			continue;
		}
		sd_event_source_set_description(dv->src, "gpu-queue");
		if (dv->cu && (r = gpu_queue_add_backend(dv->q, dv->cu)) < 0)
			log_warning_errno(r, "GPU %s: its CUDA handle cannot join its queue; it runs no PTX", id);
		gpu_queue_pause(dv->q);   /* until the first evaluation */
	}
	g->started = true;
	g->dispatching = false;
	jobs_load(g);
	apply(g, true);
	return 0;
}

static bool any_in_flight(struct gpu_jobs *g)
{
	for (unsigned i = 0; i < g->n_devs; i++) {
		struct gpu_queue_stats st;
		if (!g->devs[i].q)
			continue;
		gpu_queue_get_stats(g->devs[i].q, &st);
		if (st.in_flight)
			return true;
	}
	return false;
}

void gpu_jobs_stop(struct gpu_jobs *g)
{
	if (!g || !g->started)
		return;
	for (unsigned i = 0; i < g->n_devs; i++)
		if (g->devs[i].q)
			gpu_queue_pause(g->devs[i].q);
	/* Take the charges of the chunks in flight, so the ledger has them. */
	for (uint64_t end = now_mono_usec() + GPU_DRAIN_USEC; any_in_flight(g) && now_mono_usec() < end;) {
		struct pollfd p[16];
		unsigned n = 0;
		for (unsigned i = 0; i < g->n_devs && n < ELEMENTSOF(p); i++)
			if (g->devs[i].q)
				p[n++] = (struct pollfd) { .fd = gpu_queue_get_fd(g->devs[i].q), .events = POLLIN };
		poll(p, n, 50);
		for (unsigned i = 0; i < g->n_devs; i++)
			if (g->devs[i].q)
				gpu_queue_kick(g->devs[i].q);
	}
	budget_step(g);
	for (unsigned i = 0; i < g->n_devs; i++) {
		struct gpu_dev *dv = &g->devs[i];
		dv->src = sd_event_source_disable_unref(dv->src);
		gpu_queue_free(dv->q);
		dv->q = NULL;
	}
	/* The jobs stay queued (or running: requeued at the next start) on disk. */
	for (struct gpu_job *j = g->head; j; j = j->next)
		job_release_buffers(j);
	g->started = false;
	g->stopped = true;
}

struct gpu_jobs *gpu_jobs_free(struct gpu_jobs *g)
{
	if (!g)
		return NULL;
	gpu_jobs_stop(g);
	while (g->head) {
		struct gpu_job *j = g->head;
		g->head = j->next;
		job_free(j);
	}
	if (g->devs) {
		struct gpu_device **all = calloc(2 * g->n_devs + 1, sizeof(*all));
		int n = 0;
		if (all) {
			for (unsigned i = 0; i < g->n_devs; i++) {
				all[n++] = g->devs[i].d;
				if (g->devs[i].cu)
					all[n++] = g->devs[i].cu;
			}
			gpu_devices_free(all, n);
		}
		free(g->devs);
	}
	free(g->jobs_dir);
	free(g);
	return NULL;
}

/* --- the manager's calls ------------------------------------------------------------------------- */

void gpu_jobs_evaluate(struct gpu_jobs *g)
{
	if (g)
		apply(g, true);
}

static bool gpu_busy(struct gpu_jobs *g)
{
	for (const struct gpu_job *j = g->head; j; j = j->next)
		if (j->dev)
			return true;
	return false;
}

int gpu_jobs_tick(struct gpu_jobs *g)
{
	if (!g)
		return 0;
	budget_step(g);
	apply(g, true);
	bool busy = g->started && gpu_busy(g);
	/* Work arrived on an idle GPU: until a ledger says so, a crash would
	 * lose what it spends. */
	if (busy && !g->saved_busy)
		return 2;
	return g->budget.spent_total_usec != g->saved_spent_usec || busy != g->saved_busy;
}

void gpu_jobs_fill_ledger(struct gpu_jobs *g, struct ledger *l)
{
	if (!g)
		return;
	budget_step(g);
	l->has_gpu = true;
	l->gpu_tokens_usec = g->budget.tokens_usec;
	l->gpu_spent_total_usec = g->budget.spent_total_usec;
	/* Work on a queue may spend device time the next save would record: if
	 * we crash first, the next start charges the worst case for it. Before
	 * the queues start, the spool is not read yet: assume work. */
	l->gpu_busy = !g->stopped && (!g->started || gpu_busy(g));
	g->saved_spent_usec = g->budget.spent_total_usec;
	g->saved_busy = l->gpu_busy;
}

void gpu_jobs_reconfigure(struct gpu_jobs *g)
{
	if (!g)
		return;
	budget_step(g);
	budget_reconfigure(&g->budget, g->m->config.gpu_ppm, PPM_ONE, g->m->config.window_usec);
	apply(g, true);
}

void gpu_jobs_set_done_callback(struct gpu_jobs *g, gpu_jobs_done_fn fn, void *userdata)
{
	g->done_fn = fn;
	g->done_userdata = userdata;
}

unsigned gpu_jobs_n_devices(const struct gpu_jobs *g)
{
	return g ? g->n_devs : 0;
}

const struct gpu_device_info *gpu_jobs_device(const struct gpu_jobs *g, unsigned i, bool *ret_cuda_too)
{
	/* A device without a queue (it failed to start) takes no work: the
	 * pool must not be told it is here. */
	if (!g || i >= g->n_devs || !g->devs[i].q)
		return NULL;
	if (ret_cuda_too)
		*ret_cuda_too = g->devs[i].cu != NULL;
	return gpu_device_get_info(g->devs[i].d);
}

/* --- JSON ---------------------------------------------------------------------------------------- */

static json_t *backends_json(const struct gpu_dev *dv)
{
	const struct gpu_device_info *in = gpu_device_get_info(dv->d);
	json_t *a = json_array();
	json_array_append_new(a, json_string(in->backend == GPU_BACKEND_OPENCL ? "opencl" : "cuda"));
	if (dv->also_cuda)
		json_array_append_new(a, json_string("cuda"));
	return a;
}

bool gpu_jobs_faulted(const struct gpu_jobs *g)
{
	for (unsigned i = 0; g && i < g->n_devs; i++)
		if (dev_fault(&g->devs[i]))
			return true;
	return false;
}

static json_t *device_json(const struct gpu_dev *dv)
{
	const struct gpu_device_info *in = gpu_device_get_info(dv->d);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:I, s:i, s:b, s:s, s:s?, s:b, s:s?}",
			 "id", in->id, "name", in->name, "vendor", in->vendor, "version", in->version,
			 "backend", in->backend == GPU_BACKEND_OPENCL ? "opencl" : "cuda",
			 "backends", backends_json(dv), "pci_bus_id", in->pci_bus_id,
			 "global_mem_bytes", (json_int_t)in->global_mem_bytes, "compute_units", (int)in->compute_units,
			 "low_priority", in->low_priority, "busy_detection", busy_detection_name(in->busy_source),
			 "busy_detection_note", in->busy_note[0] ? in->busy_note : NULL,
			 "cpu_device", in->cpu_device, "fault", dev_fault(dv));
}

json_t *gpu_jobs_status_json(struct gpu_jobs *g)
{
	json_t *devs = json_array();
	unsigned count[_JOB_STATE_MAX] = { 0 };

	if (!g)
		return json_null();
	budget_step(g);
	bool dispatch = g->started && dispatch_allowed(g);
	for (unsigned i = 0; i < g->n_devs; i++) {
		struct gpu_dev *dv = &g->devs[i];
		json_t *o = device_json(dv);
		struct gpu_queue_stats st = { 0 };
		if (dv->q)
			gpu_queue_get_stats(dv->q, &st);
		json_object_set_new(o, "queue", json_pack("{s:b, s:i, s:b, s:b, s:b, s:I, s:I, s:I, s:I}",
							   "running", dv->q != NULL, "queued", (int)st.queued,
							   "in_flight", st.in_flight, "paused", st.paused,
							   "device_busy", st.device_busy, "chunks", (json_int_t)st.chunks,
							   "chunks_over_slice", (json_int_t)st.chunks_over_slice,
							   "max_chunk_usec", (json_int_t)(st.max_chunk_ns / NSEC_PER_USEC),
							   "device_usec", (json_int_t)(st.device_ns / NSEC_PER_USEC)));
		json_array_append_new(devs, o);
	}
	for (const struct gpu_job *j = g->head; j; j = j->next)
		count[j->state]++;
	struct budget *b = &g->budget;
	return json_pack("{s:o, s:s?, s:s?, s:b, s:s?, s:{s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:b, s:I},"
			 " s:{s:i, s:i, s:i, s:i, s:i}}",
			 "devices", devs, "opencl_absent", g->opencl_absent, "cuda_absent", g->cuda_absent,
			 "dispatch", dispatch, "not_dispatching_because", dispatch ? NULL : g->why,
			 "budget", "gpu_ppm", (int)b->cpu_ppm, "devices", (int)g->n_devs,
			 "window_usec", (json_int_t)g->m->config.window_usec,
			 "capacity_usec", (json_int_t)b->capacity_usec, "tokens_usec", (json_int_t)b->tokens_usec,
			 "rate_usec_per_sec", (json_int_t)budget_rate_usec_per_sec(b),
			 "spent_total_usec", (json_int_t)b->spent_total_usec, "exhausted", b->exhausted,
			 "resume_in_usec", (json_int_t)budget_usec_until_resume(b),
			 "jobs", "queued", (int)count[JOB_QUEUED], "running", (int)count[JOB_RUNNING],
			 "done", (int)count[JOB_DONE], "failed", (int)count[JOB_FAILED],
			 "cancelled", (int)count[JOB_CANCELLED]);
}

static json_t *job_public_json(const struct gpu_jobs *g, const struct gpu_job *j)
{
	char path[PATH_MAX];
	json_t *o = job_to_json(j);

	json_object_set_new(o, "device_usec", json_integer((json_int_t)(j->device_ns / NSEC_PER_USEC)));
	json_object_del(o, "args");
	if (!j->pool_task && job_path(g, j->id, "output", path, sizeof(path)) >= 0)
		json_object_set_new(o, "output", json_string(path));
	if (job_path(g, j->id, source_file(j), path, sizeof(path)) >= 0)
		json_object_set_new(o, "source", json_string(path));
	return o;
}

json_t *gpu_jobs_merge_json(struct gpu_jobs *g, json_t *exec_jobs)
{
	json_t *a = json_array(), *e;
	const struct gpu_job *j = g ? g->head : NULL;
	size_t i = 0, n = json_array_size(exec_jobs);

	/* Both lists are in id order. */
	while (i < n || j) {
		e = i < n ? json_array_get(exec_jobs, i) : NULL;
		if (e && (!j || (uint64_t)json_integer_value(json_object_get(e, "id")) < j->id)) {
			json_object_set_new(e, "kind", json_string("exec"));
			json_array_append(a, e);
			i++;
		} else {
			json_array_append_new(a, job_public_json(g, j));
			j = j->next;
		}
	}
	json_decref(exec_jobs);
	return a;
}

/* --- the control verb ---------------------------------------------------------------------------- */

static json_t *error_reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *error_reply(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

static int sizes_arg(json_t *a, size_t *ret, unsigned *ret_n)
{
	size_t n = json_array_size(a);
	if (!json_is_array(a) || n < 1 || n > 3)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_array_get(a, i);
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return -EINVAL;
		ret[i] = (size_t)json_integer_value(v);
	}
	*ret_n = (unsigned)n;
	return 0;
}

json_t *gpu_jobs_control_submit(struct gpu_jobs *g, uid_t uid, json_t *req, int in_fd)
{
	struct gpu_job_spec s = { 0 };
	const char *in_path = json_string_value(json_object_get(req, "input_path"));
	json_t *local = json_object_get(req, "local"), *scal = json_object_get(req, "scalars");
	json_t *out = json_object_get(req, "out_bytes"), *prio = json_object_get(req, "priority");
	uint32_t scalars[GPU_JOB_MAX_SCALARS];
	unsigned nl = 0;
	void *input = NULL;
	uint64_t id;
	int r;

	s.source = json_string_value(json_object_get(req, "source"));
	s.kernel = json_string_value(json_object_get(req, "kernel"));
	if (!s.source || !s.kernel)
		return error_reply("\"source\" (OpenCL C) and \"kernel\" (a name) must be strings");
	if (sizes_arg(json_object_get(req, "global"), s.global, &s.work_dim) < 0)
		return error_reply("\"global\" must be 1 to 3 work-item counts");
	if (local && (sizes_arg(local, s.local, &nl) < 0 || nl != s.work_dim))
		return error_reply("\"local\" must have as many sizes as \"global\"");
	if (!json_is_integer(out) || json_integer_value(out) <= 0)
		return error_reply("\"out_bytes\" must be a positive integer");
	s.out_bytes = (size_t)json_integer_value(out);
	if (prio && !json_is_integer(prio))
		return error_reply("\"priority\" must be an integer");
	s.priority = prio ? (int)json_integer_value(prio) : 0;
	if (scal) {
		if (!json_is_array(scal) || json_array_size(scal) > GPU_JOB_MAX_SCALARS)
			return error_reply("\"scalars\" must be an array of at most %d unsigned ints", GPU_JOB_MAX_SCALARS);
		for (size_t i = 0; i < json_array_size(scal); i++) {
			json_t *v = json_array_get(scal, i);
			if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
				return error_reply("scalars[%zu] is not a 32-bit unsigned int", i);
			scalars[i] = (uint32_t)json_integer_value(v);
		}
		s.scalars = scalars;
		s.n_scalars = (unsigned)json_array_size(scal);
	}
	if (json_is_true(json_object_get(req, "input_fd"))) {
		/* The caller opened it: its mounts, its /tmp (the daemon's are private). */
		if (in_fd < 0)
			return error_reply("\"input_fd\" is set, but no descriptor came with the request");
		r = read_fd(in_fd, GPU_JOB_MAX_BYTES, &input, &s.input_bytes, NULL);
		if (r < 0)
			return error_reply("cannot read the input: %s", r == -EFBIG ? "larger than 256 MiB" :
					   r == -EINVAL ? "not a regular file" : strerror(-r));
		s.input = input;
	} else if (in_path) {
		/* Root asked (the verb is privileged): the daemon reads the file itself,
		 * so inputs are not bound by the control socket's request size. */
		if (in_path[0] != '/')
			return error_reply("\"input_path\" must be an absolute path");
		r = read_file(in_path, GPU_JOB_MAX_BYTES, 0, &input, &s.input_bytes, NULL);
		if (r < 0)
			return error_reply("cannot read the input %s: %s", in_path,
					   r == -EFBIG ? "larger than 256 MiB" : strerror(-r));
		s.input = input;
	}
	r = gpu_jobs_submit(g, &s, &id);
	free(input);
	if (r == -ENODEV)
		return error_reply("no OpenCL device to run it (%s)", g && g->opencl_absent ? g->opencl_absent : "none has a queue");
	if (r == -EFBIG)
		return error_reply("a buffer or the source is too large (at most 256 MiB per buffer, 1 MiB of source)");
	if (r == -EINVAL)
		return error_reply("the job is not valid: each global size must be > 0 and a multiple of its local size, "
				   "and the device must be able to run it");
	if (r < 0)
		return error_reply("cannot queue the GPU job: %s", strerror(-r));
	log_info("GPU job %" PRIu64 " queued by uid %u", id, (unsigned)uid);
	return json_pack("{s:b, s:I}", "ok", 1, "id", (json_int_t)id);
}
