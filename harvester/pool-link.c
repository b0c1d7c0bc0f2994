/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The daemon's end of the link: see pool-link.h. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>

#include <sodium.h>

#include "gpu/gpu.h"
#include "harvester/fileio.h"
#include "harvester/gpu-jobs.h"
#include "harvester/log.h"
#include "harvester/macro.h"
#include "harvester/manager.h"
#include "harvester/pool-link.h"
#include "net/link.h"

/* A request waits this long for its reply; a pool that is down costs one
 * such wait per attempt, and the goodbye at stop at most this. */
#define POOL_TIMEOUT_MS 3000U
#define BACKOFF_MIN_USEC (500 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (30 * USEC_PER_SEC)
/* Between two fetches that brought nothing, whatever the pool says. */
#define FETCH_IDLE_MIN_USEC (200 * USEC_PER_MSEC)
#define FETCH_IDLE_MAX_USEC (30 * USEC_PER_SEC)
#define AGENT "harvesterd/" HARVESTER_VERSION
/* A GPU task's outputs must fit one result message, with room for the rest. */
#define GPU_RESULT_MAX_BYTES (LINK_MSG_MAX_BYTES - 64U * 1024U)

/* pool_task "state": the task's life on this side. */
#define PT_HELD     "held"       /* queued or running here; lease renewed */
#define PT_RESULT   "result"     /* finished; result on disk, not yet acknowledged */
#define PT_ACKED    "acked"      /* the pool answered the result: nothing left to do */
#define PT_RELEASED "released"   /* the pool took it back (goodbye, lease lost): not run here */

enum request { REQ_NONE, REQ_HELLO, REQ_FETCH, REQ_RENEW, REQ_RESULT };

struct pool_link {
	struct manager *m;
	LinkClient *client;
	char *url;                     /* as started: a reload does not redial */
	char *via;                     /* harvester-link's socket we dial instead, or NULL */
	uint8_t pool_pk[LINK_KEY_BYTES];
	sd_event_source *io, *timer;
	char *results_dir;

	enum request inflight;
	uint64_t inflight_jobs[LINK_RESULTS_MAX];  /* REQ_RESULT: the jobs whose results are out */
	size_t n_inflight_jobs;
	bool results_one_by_one;       /* the pool found a batch too large: one a request */
	bool stopping;

	bool welcomed, connected;
	char *worker_id;
	uint32_t lease_sec;
	char last_error[LINK_STR_MAX + 64];
	uint64_t since_realtime_usec, since_mono_usec;   /* of the connected/error state */

	uint64_t backoff_usec, next_try_usec;    /* CLOCK_MONOTONIC */
	uint64_t next_fetch_usec, next_renew_usec;

	unsigned refused;              /* tasks whose signature did not verify */
	unsigned refused_replies;      /* replies not signed by the pinned key, or replayed */
	unsigned unsupported;          /* verified tasks of a kind this worker does not run */
	unsigned results_sent, results_accepted;
	unsigned result_requests;      /* requests the pool acknowledged them in (several a request) */
};

static uint64_t mono_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

static uint64_t realtime_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

/* --- pool tasks in the spool ---------------------------------------------------- */

/* A pool task held here is an exec job (jobs.h, the exec spool) or a GPU
 * job (gpu-jobs.h); they share one id space. Exactly one is set, or neither
 * at the end of a walk. */
struct ptask {
	struct job *x;
	struct gpu_job *g;
};

#define FOREACH_PTASK(p, t) for (struct ptask t = ptask_first(p); t.x || t.g; ptask_next(p, &t))

static struct ptask ptask_first(struct pool_link *p)
{
	struct job *x = jobs_first(p->m->jobs);
	return x ? (struct ptask){ .x = x } : (struct ptask){ .g = gpu_jobs_first(p->m->gpu) };
}

static void ptask_next(struct pool_link *p, struct ptask *t)
{
	if (t->x) {
		t->x = t->x->next;
		if (!t->x)
			t->g = gpu_jobs_first(p->m->gpu);
	} else
		t->g = t->g->next;
}

static json_t *pt_obj(const struct ptask *t)
{
	return t->x ? t->x->pool_task : t->g->pool_task;
}

static uint64_t pt_id(const struct ptask *t)
{
	return t->x ? t->x->id : t->g->id;
}

static enum job_state pt_job_state(const struct ptask *t)
{
	return t->x ? t->x->state : t->g->state;
}

static const char *pt_str(const struct ptask *t, const char *key)
{
	json_t *o = pt_obj(t);
	return o ? json_string_value(json_object_get(o, key)) : NULL;
}

static bool pt_is(const struct ptask *t, const char *state)
{
	const char *s = pt_str(t, "state");
	return s && strcmp(s, state) == 0;
}

static bool job_live(const struct ptask *t)
{
	return pt_job_state(t) == JOB_QUEUED || pt_job_state(t) == JOB_RUNNING;
}

static void pt_set_state(struct pool_link *p, struct ptask *t, const char *state)
{
	json_object_set_new(pt_obj(t), "state", json_string(state));
	int r = t->x ? jobs_save(p->m->jobs, t->x) : gpu_jobs_save(p->m->gpu, t->g);
	if (r < 0)
		log_warning_errno(r, "Cannot save job %" PRIu64 " (pool task %s)", pt_id(t), pt_str(t, "task"));
}

static void pt_cancel(struct pool_link *p, struct ptask *t)
{
	if (t->x)
		jobs_cancel(p->m->jobs, t->x->id);
	else
		gpu_jobs_cancel(p->m->gpu, t->g->id);
}

static unsigned held_count(struct pool_link *p, bool running_only)
{
	unsigned n = 0;
	FOREACH_PTASK(p, t)
		if (pt_is(&t, PT_HELD) && (running_only ? pt_job_state(&t) == JOB_RUNNING : job_live(&t)))
			n++;
	return n;
}

static struct ptask find_job(struct pool_link *p, uint64_t id)
{
	FOREACH_PTASK(p, t)
		if (pt_id(&t) == id)
			return t;
	return (struct ptask){ 0 };
}

static int result_path(struct pool_link *p, uint64_t job_id, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%" PRIu64 ".result", p->results_dir, job_id);
	return n >= 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

/* --- connection state ---------------------------------------------------------- */

static void set_connected(struct pool_link *p)
{
	if (!p->connected || p->last_error[0]) {
		p->since_realtime_usec = realtime_usec();
		p->since_mono_usec = mono_usec();
		if (!p->connected)
			log_info("Pool %s reached", p->url);
	}
	p->connected = true;
	p->last_error[0] = 0;
	p->backoff_usec = 0;
	p->next_try_usec = 0;
}

/* A failed request: say why, and wait longer before each next try. */
static void set_failed(struct pool_link *p, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_failed(struct pool_link *p, int err, const char *fmt, ...)
{
	char what[LINK_STR_MAX + 32];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	bool changed = p->connected || strcmp(p->last_error, what) != 0;
	if (p->connected || !p->last_error[0]) {
		p->since_realtime_usec = realtime_usec();
		p->since_mono_usec = mono_usec();
	}
	p->connected = false;
	snprintf(p->last_error, sizeof(p->last_error), "%s", what);
	p->backoff_usec = p->backoff_usec ? p->backoff_usec * 2 : BACKOFF_MIN_USEC;
	if (p->backoff_usec > BACKOFF_MAX_USEC)
		p->backoff_usec = BACKOFF_MAX_USEC;
	p->next_try_usec = mono_usec() + p->backoff_usec;
	/* Once per distinct failure, not once per retry. */
	if (changed)
		log_full(LOG_WARNING, 0, "Pool %s: %s; retrying with backoff", p->url, what);
}

/* --- requests -------------------------------------------------------------------- */

static void step(struct pool_link *p);
static void on_reply(LinkClient *c, int error, LinkMsg *reply, void *userdata);

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	step(userdata);
	return 0;
}

static void arm(struct pool_link *p, uint64_t when)
{
	if (!p->timer) {
		if (sd_event_add_time(p->m->event, &p->timer, CLOCK_MONOTONIC, when, 0, on_timer, p) >= 0)
			sd_event_source_set_description(p->timer, "pool-link-timer");
		return;
	}
	sd_event_source_set_time(p->timer, when);
	sd_event_source_set_enabled(p->timer, SD_EVENT_ONESHOT);
}

static int submit(struct pool_link *p, enum request what, const Hlink__Body *b)
{
	int r = link_client_submit(p->client, b, on_reply, p);
	if (r < 0) {
		set_failed(p, r, "cannot send a request");
		arm(p, p->next_try_usec);
		return r;
	}
	p->inflight = what;
	return 0;
}

static void send_hello(struct pool_link *p)
{
	Hlink__Body b = HLINK__BODY__INIT;
	Hlink__Hello h = HLINK__HELLO__INIT;
	Hlink__Capabilities caps = HLINK__CAPABILITIES__INIT;
	struct utsname u;
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);

	caps.arch = uname(&u) == 0 ? u.machine : "unknown";
	caps.cores = p->m->ncpus;
	caps.memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
	caps.cpu_budget_ppm = p->m->config.cpu_ppm;
	caps.gpu_budget_ppm = p->m->config.gpu_ppm;
	/* The devices whose queue runs: the pool matches OpenCL and CUDA tasks
	 * to them. A device left out (OpenCLCPUDevices=no, a queue that did not
	 * start) is never offered. */
	Hlink__Device devs[LINK_DEVICES_MAX], *dp[LINK_DEVICES_MAX];
	size_t nd = 0;
	for (unsigned i = 0; i < gpu_jobs_n_devices(p->m->gpu); i++) {
		bool cuda_too = false;
		const struct gpu_device_info *in = gpu_jobs_device(p->m->gpu, i, &cuda_too);
		/* One entry per API it runs: a GPU both see is offered to both. */
		for (int api = 0; in && api < 1 + cuda_too && nd < LINK_DEVICES_MAX; api++) {
			hlink__device__init(&devs[nd]);
			devs[nd].api = in->backend == GPU_BACKEND_CUDA || api == 1 ? HLINK__DEVICE_API__API_CUDA
										 : HLINK__DEVICE_API__API_OPENCL;
			devs[nd].name = (char *)in->name;
			devs[nd].memory_bytes = in->global_mem_bytes;
			devs[nd].compute_units = in->compute_units;
			dp[nd] = &devs[nd];
			nd++;
		}
	}
	caps.devices = dp;
	caps.n_devices = nd;
	h.caps = &caps;
	h.agent = AGENT;
	b.msg_case = HLINK__BODY__MSG_HELLO;
	b.hello = &h;
	submit(p, REQ_HELLO, &b);
}

static void send_fetch(struct pool_link *p, unsigned n)
{
	Hlink__Body b = HLINK__BODY__INIT;
	Hlink__Fetch f = HLINK__FETCH__INIT;
	f.max_tasks = n > LINK_TASKS_MAX ? LINK_TASKS_MAX : n;
	b.msg_case = HLINK__BODY__MSG_FETCH;
	b.fetch = &f;
	submit(p, REQ_FETCH, &b);
}

static void send_renew(struct pool_link *p)
{
	Hlink__Body b = HLINK__BODY__INIT;
	Hlink__Renew rn = HLINK__RENEW__INIT;
	const char *ids[LINK_RENEW_MAX];
	size_t n = 0;

	FOREACH_PTASK(p, t) {
		if (n >= LINK_RENEW_MAX)
			break;
		if (pt_is(&t, PT_HELD) && job_live(&t))
			ids[n++] = pt_str(&t, "task");
	}
	rn.task_ids = (char **)ids;
	rn.n_task_ids = n;
	b.msg_case = HLINK__BODY__MSG_RENEW;
	b.renew = &rn;
	submit(p, REQ_RENEW, &b);
}

static int write_result_file(struct pool_link *p, struct ptask *j);

/* Read the signed result of job J back from its file into *BUF (the
 * signature, then the body); rewritten once from the job if it is lost or
 * damaged on disk (the job's output is still there). */
static int read_result(struct pool_link *p, struct ptask *j, uint8_t **buf, size_t *len)
{
	char path[PATH_MAX];
	int r;

	for (int attempt = 0;; attempt++) {
		if ((r = result_path(p, pt_id(j), path, sizeof(path))) < 0)
			return r;
		void *b = NULL;
		r = read_file(path, LINK_MSG_MAX_BYTES, O_NOFOLLOW, &b, len, NULL);
		*buf = b;
		if (r == -EFBIG)
			r = -EBADMSG;   /* not one we wrote: damaged */
		if (r >= 0 && *len <= LINK_SIG_BYTES) {
			free(*buf);
			*buf = NULL;
			r = -EBADMSG;
		}
		if (r >= 0 || attempt > 0 || (r != -ENOENT && r != -EBADMSG))
			return r;
		log_warning_errno(r, "Result of job %" PRIu64 " unreadable; writing it again", pt_id(j));
		if ((r = write_result_file(p, j)) < 0)
			return r;
	}
}

/* Send the results waiting for an answer, as many as one request takes
 * (LINK_RESULTS_MAX, and the message size), so tasks finished together
 * cost the pool one request. Returns -EAGAIN when there are none. */
static int send_results(struct pool_link *p)
{
	uint8_t *bufs[LINK_RESULTS_MAX] = {};
	size_t lens[LINK_RESULTS_MAX], n = 0, total = 0;
	size_t max = p->results_one_by_one ? 1 : LINK_RESULTS_MAX;
	int r = -EAGAIN;

	FOREACH_PTASK(p, t) {
		if (!pt_is(&t, PT_RESULT))
			continue;
		if (n == max)
			break;
		uint8_t *buf = NULL;
		size_t len = 0;
		r = read_result(p, &t, &buf, &len);
		if (r < 0) {
			log_warning_errno(r, "Cannot send the result of job %" PRIu64, pt_id(&t));
			continue;
		}
		/* Room for the envelope and the per-result framing. */
		if (n > 0 && total + len + 64 * 1024 > LINK_MSG_MAX_BYTES) {
			free(buf);
			break;
		}
		bufs[n] = buf;
		lens[n] = len;
		p->inflight_jobs[n++] = pt_id(&t);
		total += len;
	}
	if (n == 0)
		return r;

	Hlink__Body b = HLINK__BODY__INIT;
	Hlink__Result res = HLINK__RESULT__INIT;
	Hlink__SignedResult more[LINK_RESULTS_MAX - 1], *mp[LINK_RESULTS_MAX - 1];
	res.signature = (ProtobufCBinaryData){ LINK_SIG_BYTES, bufs[0] };
	res.body = (ProtobufCBinaryData){ lens[0] - LINK_SIG_BYTES, bufs[0] + LINK_SIG_BYTES };
	for (size_t i = 1; i < n; i++) {
		hlink__signed_result__init(&more[i - 1]);
		more[i - 1].signature = (ProtobufCBinaryData){ LINK_SIG_BYTES, bufs[i] };
		more[i - 1].body = (ProtobufCBinaryData){ lens[i] - LINK_SIG_BYTES, bufs[i] + LINK_SIG_BYTES };
		mp[i - 1] = &more[i - 1];
	}
	res.n_more = n - 1;
	res.more = mp;
	/* Several: one batch signature too, so the pool checks one signature,
	 * not n. Each keeps its own, for a pool older than batch signatures;
	 * one whose own no longer verifies (the file changed) gets no batch
	 * signature, and the pool judges each alone. */
	uint8_t batch_sig[LINK_SIG_BYTES];
	if (n > 1) {
		ProtobufCBinaryData bodies[LINK_RESULTS_MAX], sigs[LINK_RESULTS_MAX];
		bodies[0] = res.body;
		sigs[0] = res.signature;
		for (size_t i = 1; i < n; i++) {
			bodies[i] = more[i - 1].body;
			sigs[i] = more[i - 1].signature;
		}
		if (link_client_sign_batch(p->client, bodies, sigs, n, batch_sig) >= 0)
			res.batch_signature = (ProtobufCBinaryData){ LINK_SIG_BYTES, batch_sig };
		else
			log_warning("Pool %s: a result on disk no longer matches its signature; sent without a batch "
				    "signature", p->url);
	}
	b.msg_case = HLINK__BODY__MSG_RESULT;
	b.result = &res;
	p->n_inflight_jobs = n;
	r = submit(p, REQ_RESULT, &b);
	for (size_t i = 0; i < n; i++)
		free(bufs[i]);
	return r;
}

static bool fetch_allowed(struct pool_link *p)
{
	struct manager *m = p->m;
	return policy_allows_harvest(m->policy.state) && !m->budget.exhausted;
}

/* Pick the next request: hello first, then results awaiting an answer, then
 * lease renewals, then more work. */
static void step(struct pool_link *p)
{
	uint64_t now = mono_usec(), wake = UINT64_MAX;

	if (!p || !p->client || p->inflight != REQ_NONE || p->stopping)
		return;
	if (now < p->next_try_usec) {
		arm(p, p->next_try_usec);
		return;
	}
	if (!p->welcomed) {
		send_hello(p);
		return;
	}
	int r = send_results(p);
	if (r != -EAGAIN)
		return;         /* sent, or results that cannot be sent yet: those first */
	unsigned held = held_count(p, false);
	if (held > 0) {
		if (now >= p->next_renew_usec) {
			send_renew(p);
			return;
		}
		wake = p->next_renew_usec;
	}
	if (fetch_allowed(p) && held < p->m->config.pool_max_tasks) {
		if (now >= p->next_fetch_usec) {
			send_fetch(p, p->m->config.pool_max_tasks - held);
			return;
		}
		if (p->next_fetch_usec < wake)
			wake = p->next_fetch_usec;
	}
	/* Otherwise the manager's next evaluation (every tick) kicks us. */
	if (wake != UINT64_MAX)
		arm(p, wake);
}

void pool_link_kick(struct pool_link *p)
{
	step(p);
}

/* --- results ---------------------------------------------------------------------- */

static int hex_to_hash(const char *hex, uint8_t out[LINK_HASH_BYTES])
{
	size_t n = 0;
	if (!hex || sodium_hex2bin(out, LINK_HASH_BYTES, hex, strlen(hex), NULL, &n, NULL) < 0 || n != LINK_HASH_BYTES)
		return -EBADMSG;
	return 0;
}

static Hlink__Status result_status(const struct job *j)
{
	if (j->state == JOB_DONE)
		return HLINK__STATUS__STATUS_OK;
	if (j->state == JOB_CANCELLED)
		return HLINK__STATUS__STATUS_KILLED;
	if (j->signal == 0 && j->exit_code >= 0)
		return HLINK__STATUS__STATUS_OK;        /* it ran; the exit code says how */
	if (j->reason && strstr(j->reason, "runtime limit"))
		return HLINK__STATUS__STATUS_TIMEOUT;
	if (j->signal)
		return HLINK__STATUS__STATUS_KILLED;
	return HLINK__STATUS__STATUS_FAILED;            /* could not start */
}

/* Sign RB (its task id, spec hash and outputs filled in by the caller) and
 * write it durably to STATE/results/<job id>.result. */
static int sign_and_write(struct pool_link *p, uint64_t job_id, Hlink__ResultBody *rb)
{
	char path[PATH_MAX];
	_cleanup_free_ void *body = NULL;
	uint8_t sig[LINK_SIG_BYTES];
	size_t body_len = 0;
	int r;

	if ((r = link_client_sign_result(p->client, rb, &body, &body_len, sig)) < 0)
		return r;
	if ((r = result_path(p, job_id, path, sizeof(path))) < 0)
		return r;
	struct iovec iov[] = {
		{ .iov_base = sig, .iov_len = sizeof(sig) },
		{ .iov_base = body, .iov_len = body_len },
	};
	return write_file_atomic(path, iov, ELEMENTSOF(iov), 0600);
}

/* A GPU task's result: each OUT/INOUT buffer as the output of its name, or,
 * when it did not finish, one output "reason" saying why (the compiler's
 * log for a source that did not build); device_usec is its device time.
 * cpu_usec is 0: the daemon's own CPU spent feeding the queue is not
 * measured per job, and a CPU-backed OpenCL device (PoCL) reports its
 * compute as device time already. */
static int write_gpu_result_file(struct pool_link *p, struct gpu_job *j)
{
	const struct ptask t = { .g = j };
	uint8_t spec_hash[LINK_HASH_BYTES];
	Hlink__File files[LINK_FILES_MAX], *outs[LINK_FILES_MAX];
	uint8_t *data[LINK_FILES_MAX] = { 0 };
	char missing[LINK_STR_MAX] = "";
	size_t n = 0;
	bool truncated = false;
	int r;

	if ((r = hex_to_hash(pt_str(&t, "spec_sha256"), spec_hash)) < 0)
		return r;
	Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT;
	rb.task_id = (char *)pt_str(&t, "task");
	rb.status = j->state == JOB_DONE ? HLINK__STATUS__STATUS_OK :
		    j->state == JOB_CANCELLED ? HLINK__STATUS__STATUS_KILLED : HLINK__STATUS__STATUS_FAILED;
	rb.exit_code = j->state == JOB_DONE ? 0 : -1;
	rb.cpu_usec = 0;
	rb.device_usec = j->device_ns / NSEC_PER_USEC;
	rb.wall_usec = j->finished_usec > j->started_usec && j->started_usec ? j->finished_usec - j->started_usec : 0;
	rb.spec_sha256 = (ProtobufCBinaryData){ LINK_HASH_BYTES, spec_hash };
	for (unsigned i = 0; j->state == JOB_DONE && i < j->n_args && r >= 0; i++) {
		const struct gpu_job_karg *a = &j->args[i];
		char path[PATH_MAX];
		size_t len = 0;
		bool cut = false;
		if (a->kind != GPU_ARG_BUFFER || !(a->dir & GPU_BUFFER_OUT) || !a->name)
			continue;
		if (n >= LINK_FILES_MAX) {
			truncated = true;
			break;
		}
		void *b = NULL;
		if ((r = gpu_jobs_output_path(p->m->gpu, j, i, path, sizeof(path))) >= 0 &&
		    (r = read_file(path, LINK_FILE_MAX_BYTES, O_NOFOLLOW, &b, &len, &cut)) == -ENOENT) {
			/* Lost (a disk cleaned behind our back): the task failed,
			 * which the pool must hear, not a retry at every start. */
			snprintf(missing, sizeof(missing), "the output buffer %s is missing on the worker", a->name);
			r = 0;
			break;
		}
		if (r >= 0) {
			data[n] = b;
			hlink__file__init(&files[n]);
			files[n].name = a->name;
			files[n].data = (ProtobufCBinaryData){ len, data[n] };
			outs[n] = &files[n];
			n++;
			truncated |= cut;
		}
	}
	if (r >= 0 && (j->state != JOB_DONE || missing[0])) {
		const char *why = missing[0] ? missing : j->reason ? j->reason : "failed";
		if (missing[0]) {
			rb.status = HLINK__STATUS__STATUS_FAILED;
			rb.exit_code = -1;
		}
		hlink__file__init(&files[0]);
		files[0].name = "reason";
		files[0].data = (ProtobufCBinaryData){ strlen(why), (uint8_t *)why };
		outs[0] = &files[0];
		n = 1;
	}
	/* Output past the link's limits cannot travel: the task failed. */
	if (truncated)
		rb.status = HLINK__STATUS__STATUS_FAILED;
	rb.outputs = outs;
	rb.n_outputs = n;
	if (r >= 0)
		r = sign_and_write(p, j->id, &rb);
	for (size_t i = 0; i < ELEMENTSOF(data); i++)
		free(data[i]);
	return r;
}

static int write_exec_result_file(struct pool_link *p, struct job *j);

static int write_result_file(struct pool_link *p, struct ptask *t)
{
	return t->x ? write_exec_result_file(p, t->x) : write_gpu_result_file(p, t->g);
}

/* Sign J's result (stdout is the output "stdout", as pool workers do) and
 * write it durably to STATE/results/<job id>.result. */
static int write_exec_result_file(struct pool_link *p, struct job *j)
{
	const struct ptask t = { .x = j };
	char out_path[PATH_MAX];
	_cleanup_free_ uint8_t *data = NULL;
	uint8_t spec_hash[LINK_HASH_BYTES];
	size_t len = 0;
	bool truncated = false;
	int r;

	if ((r = hex_to_hash(pt_str(&t, "spec_sha256"), spec_hash)) < 0)
		return r;
	if ((r = jobs_output_path(p->m->jobs, j, "stdout", out_path, sizeof(out_path))) < 0)
		return r;
	void *b = NULL;
	r = read_file(out_path, LINK_FILE_MAX_BYTES, O_NOFOLLOW, &b, &len, &truncated);
	data = b;
	if (r == -ENOENT) {
		len = 0;                /* never started: no output */
		r = 0;
	}
	if (r < 0)
		return r;

	Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT;
	Hlink__File out = HLINK__FILE__INIT, *outs[] = { &out };
	rb.task_id = (char *)pt_str(&t, "task");
	rb.status = result_status(j);
	/* Output past the link's file limit cannot travel: the task failed. */
	if (truncated)
		rb.status = HLINK__STATUS__STATUS_FAILED;
	rb.exit_code = j->signal ? 128 + j->signal : j->exit_code;
	rb.cpu_usec = j->cpu_usec;
	rb.wall_usec = j->finished_usec > j->started_usec && j->started_usec ? j->finished_usec - j->started_usec : 0;
	rb.spec_sha256 = (ProtobufCBinaryData){ LINK_HASH_BYTES, spec_hash };
	out.name = "stdout";
	out.data = (ProtobufCBinaryData){ len, data };
	rb.outputs = outs;
	rb.n_outputs = 1;
	return sign_and_write(p, j->id, &rb);
}

/* A held task that finished: its result on disk, to be sent. 0 if nothing
 * was to be done or it was written. */
static int task_finished(struct pool_link *p, struct ptask *t)
{
	if (!pt_is(t, PT_HELD) || job_live(t))
		return 0;
	int r = write_result_file(p, t);
	if (r < 0)
		/* Stays "held" and finished: written again at the next start. */
		return log_error_errno(r, "Cannot write the result of pool task %s (job %" PRIu64 ")", pt_str(t, "task"),
				       pt_id(t));
	pt_set_state(p, t, PT_RESULT);
	if (t->g && t->g->state != JOB_DONE)
		log_info("Pool task %s (GPU job %" PRIu64 ") %s: %s; result written, to be sent", pt_str(t, "task"),
			 pt_id(t), job_state_name(pt_job_state(t)), t->g->reason ? t->g->reason : "");
	else
		log_info("Pool task %s (job %" PRIu64 ") %s; result written, to be sent", pt_str(t, "task"), pt_id(t),
			 job_state_name(pt_job_state(t)));
	return 1;
}

void pool_link_job_changed(struct pool_link *p, struct job *j)
{
	struct ptask t = { .x = j };
	if (p && task_finished(p, &t) > 0)
		step(p);
}

static void on_gpu_done(void *userdata, struct gpu_job *j)
{
	struct pool_link *p = userdata;
	struct ptask t = { .g = j };
	if (task_finished(p, &t) > 0)
		step(p);
}

static void result_answered(struct pool_link *p, struct ptask *j, bool accepted, const char *reason)
{
	char path[PATH_MAX];
	if (result_path(p, pt_id(j), path, sizeof(path)) >= 0 && unlink(path) < 0 && errno != ENOENT)
		log_warning_errno(negative_errno(), "Cannot delete %s", path);
	else
		(void)fsync_dir(p->results_dir);
	json_object_set_new(pt_obj(j), "accepted", json_boolean(accepted));
	pt_set_state(p, j, PT_ACKED);
	p->results_sent++;
	p->results_accepted += accepted;
	log_info("Pool %s result of task %s (job %" PRIu64 ")%s%s", accepted ? "accepted the" : "did not want the",
		 pt_str(j, "task"), pt_id(j), reason && *reason ? ": " : "", reason ? reason : "");
}

/* --- work ----------------------------------------------------------------------------- */

static const Hlink__File *find_input(const Hlink__TaskSpec *spec, const char *name)
{
	for (size_t i = 0; i < spec->n_inputs; i++)
		if (spec->inputs[i]->name && strcmp(spec->inputs[i]->name, name) == 0)
			return spec->inputs[i];
	return NULL;
}

/* An output name the result can carry: a plain file name. */
static bool output_name_ok(const char *s)
{
	return s && *s && strlen(s) <= LINK_STR_MAX && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..") &&
	       link_utf8_ok(s, LINK_STR_MAX);
}

/* The spec's kernel arguments into ARGS (N_ARGS of them); what the link's
 * own limits forbid (outputs that would not fit a result, an argument
 * naming no input) is said in *ret_why, for the job to fail with. */
static void gpu_args_from_spec(const Hlink__TaskSpec *spec, struct gpu_job_arg *args, const char **ret_why)
{
	size_t outs = 0, out_bytes = 0;

	for (size_t i = 0; i < spec->n_args && !*ret_why; i++) {
		const Hlink__KernelArg *ka = spec->args[i];
		struct gpu_job_arg *a = &args[i];
		const Hlink__File *in;

		*a = (struct gpu_job_arg){ .kind = GPU_ARG_BUFFER, .name = ka->name, .bytes = ka->bytes };
		switch (ka->kind) {
		case HLINK__ARG_KIND__ARG_IN:
		case HLINK__ARG_KIND__ARG_INOUT:
			a->dir = ka->kind == HLINK__ARG_KIND__ARG_IN ? GPU_BUFFER_IN : GPU_BUFFER_INOUT;
			if (!ka->name || !(in = find_input(spec, ka->name))) {
				*ret_why = "a buffer argument names no input of the task";
				break;
			}
			a->data = in->data.data;
			a->bytes = in->data.len;
			break;
		case HLINK__ARG_KIND__ARG_OUT:
			a->dir = GPU_BUFFER_OUT;
			break;
		case HLINK__ARG_KIND__ARG_SCALAR:
			a->kind = GPU_ARG_SCALAR;
			a->bytes = ka->value.len;
			if (ka->value.len >= 1 && ka->value.len <= sizeof(a->value))
				memcpy(a->value, ka->value.data, ka->value.len);
			break;
		case HLINK__ARG_KIND__ARG_LOCAL:
			a->kind = GPU_ARG_LOCAL;
			break;
		default:
			*ret_why = "an argument of unknown kind";
		}
		if (*ret_why || a->kind != GPU_ARG_BUFFER || !(a->dir & GPU_BUFFER_OUT))
			continue;
		if (!output_name_ok(a->name)) {
			*ret_why = "an output buffer needs a plain file name";
			continue;
		}
		for (size_t k = 0; k < i; k++)
			if (args[k].kind == GPU_ARG_BUFFER && (args[k].dir & GPU_BUFFER_OUT) && !strcmp(args[k].name, a->name))
				*ret_why = "two output buffers of one name";
		outs++;
		out_bytes += a->bytes;
		if (a->bytes > LINK_FILE_MAX_BYTES || outs > LINK_FILES_MAX || out_bytes > GPU_RESULT_MAX_BYTES)
			*ret_why = "its outputs would not fit a result (at most 16 of 256 KiB, 960 KiB in all)";
	}
}

/* An OpenCL or CUDA task: through the GPU queue, slicing, budget and policy
 * of local GPU jobs; one that cannot run here fails at once with why. */
static void take_gpu_task(struct pool_link *p, const Hlink__Task *t, const Hlink__TaskSpec *spec,
			  const uint8_t hash[LINK_HASH_BYTES])
{
	bool cuda = spec->kind == HLINK__KIND__KIND_CUDA;
	const char *why = NULL;
	char hex[2 * LINK_HASH_BYTES + 1];
	_cleanup_free_ char *source = NULL;
	struct gpu_job_arg args[GPU_JOB_MAX_ARGS];
	struct gpu_pool_spec gs = {
		.backend = cuda ? GPU_BACKEND_CUDA : GPU_BACKEND_OPENCL,
		.kernel = spec->kernel,
		.work_dim = (unsigned)spec->n_global_size,
		.args = args,
	};
	const Hlink__File *src = find_input(spec, cuda ? "kernel.ptx" : "kernel.cl");

	if (src && (source = malloc(src->data.len + 1))) {
		memcpy(source, src->data.data, src->data.len);
		source[src->data.len] = 0;
		gs.source = source;
	}
	if (spec->n_global_size < 1 || spec->n_global_size > 3 ||
	    (spec->n_local_size && spec->n_local_size != spec->n_global_size))
		why = "the ND-range needs 1 to 3 global sizes, and as many local sizes or none";
	else if (spec->n_args > GPU_JOB_MAX_ARGS)
		why = "more than 32 kernel arguments";
	for (size_t i = 0; !why && i < spec->n_global_size; i++) {
		gs.global[i] = (size_t)spec->global_size[i];
		gs.local[i] = spec->n_local_size ? (size_t)spec->local_size[i] : 0;
	}
	if (!why) {
		gs.n_args = (unsigned)spec->n_args;
		gpu_args_from_spec(spec, args, &why);
	}
	gs.refuse_reason = why;     /* gpu-jobs keeps it failed with this reason */

	sodium_bin2hex(hex, sizeof(hex), hash, LINK_HASH_BYTES);
	json_t *pt = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "task", spec->id, "state", PT_HELD,
			       "kind", cuda ? "cuda" : "opencl", "spec_sha256", hex,
			       "lease_expires_usec", (json_int_t)t->lease_expires_usec,
			       "deadline_usec", (json_int_t)spec->deadline_usec, "fetched_usec", (json_int_t)realtime_usec());
	struct gpu_job *j = NULL;
	int r = pt ? gpu_jobs_submit_pool(p->m->gpu, &gs, pt, &j) : -ENOMEM;
	json_decref(pt);
	if (r < 0) {
		/* Not stored: the lease lapses and it is handed out again. */
		log_error_errno(r, "Cannot queue pool task %s", spec->id);
		return;
	}
	if (j->state == JOB_FAILED) {
		struct ptask pt_ = { .g = j };
		log_warning("Pool task %s (GPU job %" PRIu64 ") cannot run here: %s", spec->id, j->id, j->reason);
		task_finished(p, &pt_);    /* sent by the step after this reply */
	} else
		log_info("Pool task %s queued as GPU job %" PRIu64 " on %s: kernel %s", spec->id, j->id, j->device_id,
			 spec->kernel);
}

static void take_task(struct pool_link *p, const Hlink__Task *t)
{
	Hlink__TaskSpec *spec = NULL;
	uint8_t hash[LINK_HASH_BYTES];
	char hex[2 * LINK_HASH_BYTES + 1];

	/* Checked against the pinned key before anything of it is parsed, let
	 * alone written to disk or run. */
	int r = link_task_verify(t, p->pool_pk, &spec, hash);
	if (r < 0) {
		p->refused++;
		log_warning_errno(r, "Refused a task from the pool: its signature does not verify against the pinned [Pool] Key= (%u refused)",
				  p->refused);
		return;
	}
	if (spec->kind == HLINK__KIND__KIND_OPENCL || spec->kind == HLINK__KIND__KIND_CUDA) {
		take_gpu_task(p, t, spec, hash);
		hlink__task_spec__free_unpacked(spec, NULL);
		return;
	}
	if (spec->kind != HLINK__KIND__KIND_EXEC || spec->n_argv == 0) {
		/* Not a kind we know: the lease lapses and the pool hands it on. */
		p->unsupported++;
		log_warning("Pool task %s: kind %d is not run here; left to lapse", spec->id, spec->kind);
		hlink__task_spec__free_unpacked(spec, NULL);
		return;
	}
	_cleanup_free_ char **argv = calloc(spec->n_argv + 1, sizeof(char *));
	_cleanup_free_ struct job_file *files = calloc(spec->n_inputs + 1, sizeof(*files));
	if (!argv || !files) {
		hlink__task_spec__free_unpacked(spec, NULL);
		return;
	}
	memcpy(argv, spec->argv, spec->n_argv * sizeof(char *));
	for (size_t i = 0; i < spec->n_inputs; i++)
		files[i] = (struct job_file){ spec->inputs[i]->name, spec->inputs[i]->data.data, spec->inputs[i]->data.len };
	sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
	json_t *pt = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}", "task", spec->id, "state", PT_HELD, "spec_sha256", hex,
			       "lease_expires_usec", (json_int_t)t->lease_expires_usec,
			       "deadline_usec", (json_int_t)spec->deadline_usec, "fetched_usec", (json_int_t)realtime_usec());
	struct job *j = NULL;
	r = pt ? jobs_submit_pool(p->m->jobs, argv, files, spec->n_inputs, pt, &j) : -ENOMEM;
	json_decref(pt);
	if (r < 0)
		/* Not in the spool: the lease lapses and it is handed out again. */
		log_error_errno(r, "Cannot queue pool task %s", spec->id);
	else
		log_info("Pool task %s queued as job %" PRIu64 ": %s", spec->id, j->id, argv[0]);
	hlink__task_spec__free_unpacked(spec, NULL);
}

static void on_lease_lost(struct pool_link *p, const char *task_id)
{
	FOREACH_PTASK(p, t) {
		if (!pt_is(&t, PT_HELD) || !job_live(&t) || strcmp(pt_str(&t, "task"), task_id) != 0)
			continue;
		log_notice("Pool task %s (job %" PRIu64 "): the pool no longer wants it; dropped", task_id, pt_id(&t));
		pt_set_state(p, &t, PT_RELEASED);
		pt_cancel(p, &t);
	}
}

/* Error replies to a result that a resend would only get again. A replay
 * (our resend of a request the pool did see) or an internal error is not. */
static bool result_error_is_final(int code)
{
	switch (code) {
	case HLINK__ERROR_CODE__ERR_UNKNOWN_TASK:
	case HLINK__ERROR_CODE__ERR_LEASE_EXPIRED:
	case HLINK__ERROR_CODE__ERR_MALFORMED:
	case HLINK__ERROR_CODE__ERR_TOO_LARGE:
	case HLINK__ERROR_CODE__ERR_BAD_SIGNATURE:
		return true;
	default:
		return false;
	}
}

static void on_reply(LinkClient *c, int error, LinkMsg *reply, void *userdata)
{
	struct pool_link *p = userdata;
	enum request what = p->inflight;
	uint64_t now = mono_usec();
	bool work = false;

	p->inflight = REQ_NONE;
	if (error < 0) {
		if (error == -EKEYREJECTED || error == -ESTALE || error == -EBADMSG || error == -EMSGSIZE ||
		    error == -EPROTONOSUPPORT) {
			p->refused_replies++;
			set_failed(p, error, "a reply was refused (%s)%s", strerror(-error),
				   error == -EKEYREJECTED ? ": not signed by the pinned [Pool] Key=" : "");
		} else
			set_failed(p, error, "%s", strerror(-error));
		goto next;
	}
	const Hlink__Body *b = reply->body;
	if (b->msg_case == HLINK__BODY__MSG_ERROR) {
		int code = b->error->code;
		if (code == HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER) {
			set_connected(p);
			p->welcomed = false;         /* a new pool database: hello again */
		} else if (what == REQ_RESULT && code == HLINK__ERROR_CODE__ERR_TOO_LARGE && p->n_inflight_jobs > 1) {
			/* The batch, not a result: one a request from now on. */
			set_connected(p);
			p->results_one_by_one = true;
		} else if (what == REQ_RESULT && result_error_is_final(code)) {
			/* Sending it again cannot change the answer: keep the job's
			 * record of it, drop the file. The others in the request
			 * were not judged: they go again. */
			struct ptask j = find_job(p, p->inflight_jobs[0]);
			set_connected(p);
			if (j.x || j.g)
				result_answered(p, &j, false, b->error->message);
		} else {
			set_failed(p, 0, "the pool answered %s: %s", link_error_name(code), b->error->message);
			/* Busy says when it will take us: not sooner than that,
			 * and not later than our own longest backoff. */
			uint64_t wait = (uint64_t)b->error->retry_after_ms * USEC_PER_MSEC;
			uint64_t later = now + (wait < BACKOFF_MAX_USEC ? wait : BACKOFF_MAX_USEC);
			if (code == HLINK__ERROR_CODE__ERR_BUSY && later > p->next_try_usec)
				p->next_try_usec = later;
		}
		goto next;
	}
	set_connected(p);
	switch (what) {
	case REQ_HELLO:
		if (b->msg_case != HLINK__BODY__MSG_WELCOME)
			break;
		p->welcomed = true;
		p->lease_sec = b->welcome->lease_sec;
		free(p->worker_id);
		p->worker_id = strdup(b->welcome->worker_id);
		p->next_renew_usec = now;        /* leases held from before a restart */
		p->next_fetch_usec = now;
		log_info("Pool %s: welcome as %s, leases of %u s", p->url, b->welcome->worker_id,
			 p->lease_sec);
		break;
	case REQ_FETCH: {
		if (b->msg_case != HLINK__BODY__MSG_WORK)
			break;
		const Hlink__Work *w = b->work;
		for (size_t i = 0; i < w->n_tasks; i++)
			take_task(p, w->tasks[i]);
		work = w->n_tasks > 0;
		uint64_t wait = (uint64_t)w->retry_after_ms * USEC_PER_MSEC;
		if (wait < FETCH_IDLE_MIN_USEC)
			wait = FETCH_IDLE_MIN_USEC;
		if (wait > FETCH_IDLE_MAX_USEC)
			wait = FETCH_IDLE_MAX_USEC;
		p->next_fetch_usec = work ? now : now + wait;
		break;
	}
	case REQ_RENEW:
		if (b->msg_case != HLINK__BODY__MSG_RENEW_REPLY)
			break;
		for (size_t i = 0; i < b->renew_reply->n_leases; i++)
			if (!b->renew_reply->leases[i]->valid)
				on_lease_lost(p, b->renew_reply->leases[i]->task_id);
		/* Three tries before a lease lapses. */
		p->next_renew_usec = now + (p->lease_sec ? p->lease_sec : 30) * USEC_PER_SEC / 3;
		break;
	case REQ_RESULT: {
		if (b->msg_case != HLINK__BODY__MSG_RESULT_ACK)
			break;
		const Hlink__ResultAck *a = b->result_ack;
		struct ptask j = find_job(p, p->inflight_jobs[0]);
		p->result_requests++;
		if ((j.x || j.g) && pt_is(&j, PT_RESULT))
			result_answered(p, &j, a->accepted, a->reason);
		/* One verdict per result in more; one missing (an older pool
		 * answers only the first) or not judged for a passing reason
		 * leaves that result waiting: it goes again. */
		for (size_t i = 1; i < p->n_inflight_jobs && i - 1 < a->n_more; i++) {
			const Hlink__ResultVerdict *v = a->more[i - 1];
			j = find_job(p, p->inflight_jobs[i]);
			if (!(j.x || j.g) || !pt_is(&j, PT_RESULT))
				continue;
			if (v->error == HLINK__ERROR_CODE__ERR_NONE)
				result_answered(p, &j, v->accepted, v->reason);
			else if (result_error_is_final(v->error))
				result_answered(p, &j, false, v->reason);
		}
		break;
	}
	default:
		break;
	}
next:
	link_msg_free(reply);
	if (work)
		manager_evaluate(p->m, "pool work");   /* starts the jobs, and steps */
	step(p);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct pool_link *p = userdata;
	link_client_dispatch(p->client);
	return 0;
}

/* --- life -------------------------------------------------------------------------------- */

/* harvesterd --pool-via: a command-line setting, fixed for the process. */
static const char *arg_via;

void pool_link_set_via(const char *url)
{
	arg_via = url;
}

int pool_link_new(struct manager *m, struct pool_link **ret)
{
	/* Via harvester-link, TLS to the pool is the link's job; the hop to it
	 * is a local socket. The pinned key is checked here either way. */
	LinkClientConfig cfg = {
		.url = arg_via ? arg_via : m->config.pool_url,
		.state_dir = m->state_dir,
		.tls_ca_file = arg_via ? NULL : m->config.pool_ca_file,
		.timeout_ms = POOL_TIMEOUT_MS,
	};
	int r;

	if (!m->config.pool_key)
		return log_error_errno(-EINVAL, "[Pool] URL=%s is set but Key= is not: pin the pool's public key",
				       m->config.pool_url);
	if (!strncmp(cfg.url, "tls+", 4) && !cfg.tls_ca_file)
		return log_error_errno(-EINVAL, "[Pool] URL=%s needs CAFile= (the pool's CA or certificate)",
				       m->config.pool_url);
	if ((r = link_key_from_base64(m->config.pool_key, cfg.pool_key)) < 0)
		return log_error_errno(r, "[Pool] Key= is not a public key");

	struct pool_link *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->m = m;
	if (!(p->url = strdup(m->config.pool_url)) || (arg_via && !(p->via = strdup(arg_via)))) {
		free(p->url);
		free(p);
		return -ENOMEM;
	}
	memcpy(p->pool_pk, cfg.pool_key, LINK_KEY_BYTES);
	p->since_realtime_usec = realtime_usec();
	p->since_mono_usec = mono_usec();
	snprintf(p->last_error, sizeof(p->last_error), "not reached yet");
	if (asprintf(&p->results_dir, "%s/results", m->state_dir) < 0) {
		p->results_dir = NULL;
		r = -ENOMEM;
		goto fail;
	}
	if (mkdir(p->results_dir, 0700) < 0 && errno != EEXIST) {
		r = log_error_errno(negative_errno(), "Cannot create %s", p->results_dir);
		goto fail;
	}
	/* The worker identity lives in the state dir: link-identity.key, 0600. */
	if ((r = link_client_new(&cfg, &p->client)) < 0) {
		log_error_errno(r, "Cannot set up the link to %s", cfg.url);
		goto fail;
	}
	r = sd_event_add_io(m->event, &p->io, link_client_fd(p->client), EPOLLIN, on_io, p);
	if (r < 0)
		goto fail;
	sd_event_source_set_description(p->io, "pool-link");

	/* Pick up where an earlier run stopped: finished tasks whose result was
	 * never written get it now; results on disk are sent once welcomed. */
	unsigned held = 0, pending = 0;
	if (m->gpu)
		gpu_jobs_set_done_callback(m->gpu, on_gpu_done, p);
	FOREACH_PTASK(p, t) {
		task_finished(p, &t);
		held += pt_is(&t, PT_HELD) && job_live(&t);
		pending += pt_is(&t, PT_RESULT);
	}
	char b64[64] = "";
	link_key_to_base64(link_client_key(p->client), b64, sizeof(b64));
	log_info("Pool link to %s%s%s as worker %s: %u task(s) held, %u result(s) awaiting acknowledgement",
		 p->url, p->via ? " via " : "", p->via ? p->via : "", b64, held, pending);
	*ret = p;
	return 0;
fail:
	pool_link_free(p);
	return r;
}

void pool_link_stop(struct pool_link *p)
{
	if (!p || !p->client)
		return;
	p->stopping = true;
	/* The request in flight ends within its timeout. */
	uint64_t end = mono_usec() + (POOL_TIMEOUT_MS + 500) * USEC_PER_MSEC;
	while (p->inflight != REQ_NONE && mono_usec() < end) {
		struct pollfd pfd = { .fd = link_client_fd(p->client), .events = POLLIN };
		if (poll(&pfd, 1, 100) > 0)
			link_client_dispatch(p->client);
	}
	if (p->inflight != REQ_NONE || !p->welcomed || !p->connected)
		return;         /* leases stay ours: the held tasks run after a restart */
	int r = link_client_goodbye(p->client, "harvesterd stopping");
	if (r < 0) {
		log_warning_errno(r, "Pool %s: goodbye not delivered; held tasks stay leased to us", p->url);
		return;
	}
	/* The pool hands our leases out again: do not run those here too. */
	unsigned n = 0;
	FOREACH_PTASK(p, t)
		if (pt_is(&t, PT_HELD) && pt_job_state(&t) == JOB_QUEUED) {
			pt_set_state(p, &t, PT_RELEASED);
			pt_cancel(p, &t);
			n++;
		}
	log_info("Pool %s: goodbye; %u held task(s) given back", p->url, n);
}

struct pool_link *pool_link_free(struct pool_link *p)
{
	if (!p)
		return NULL;
	if (p->m && p->m->gpu)
		gpu_jobs_set_done_callback(p->m->gpu, NULL, NULL);
	sd_event_source_disable_unref(p->io);
	sd_event_source_disable_unref(p->timer);
	link_client_free(p->client);
	free(p->results_dir);
	free(p->worker_id);
	free(p->url);
	free(p->via);
	free(p);
	return NULL;
}

json_t *pool_link_status_json(struct pool_link *p)
{
	unsigned done = 0, failed = 0, pending = 0, acked = 0, accepted = 0, gpu = 0;
	uint64_t cpu = 0, device = 0, now = mono_usec();

	FOREACH_PTASK(p, t) {
		if (!pt_obj(&t) || pt_is(&t, PT_RELEASED))
			continue;
		gpu += t.g != NULL;
		if (!job_live(&t)) {
			done += pt_job_state(&t) == JOB_DONE;
			failed += pt_job_state(&t) != JOB_DONE;
			if (t.x)
				cpu += t.x->cpu_usec;
		}
		/* device time is spent while it runs, not only once it ended */
		if (t.g)
			device += t.g->device_ns / NSEC_PER_USEC;
		pending += pt_is(&t, PT_RESULT);
		if (pt_is(&t, PT_ACKED)) {
			acked++;
			accepted += json_is_true(json_object_get(pt_obj(&t), "accepted"));
		}
	}
	json_t *o = json_pack("{s:s, s:b, s:s?, s:s?, s:I, s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:I, s:I,"
			      " s:i, s:I}",
			 "url", p->url, "connected", p->connected, "worker_id", p->worker_id,
			 "last_error", p->last_error[0] ? p->last_error : NULL,
			 "since_usec", (json_int_t)p->since_realtime_usec,
			 "state_for_usec", (json_int_t)(now - p->since_mono_usec),
			 "lease_sec", (int)p->lease_sec, "max_tasks", (int)p->m->config.pool_max_tasks,
			 "tasks_held", (int)held_count(p, false), "tasks_running", (int)held_count(p, true),
			 "done", (int)done, "failed", (int)failed, "refused", (int)p->refused,
			 "refused_replies", (int)p->refused_replies, "unsupported", (int)p->unsupported,
			 "results_pending", (int)pending, "results_acked", (int)acked, "results_accepted", (int)accepted,
			 "result_requests", (int)p->result_requests,
			 "cpu_contributed_usec", (json_int_t)cpu,
			 "retry_in_usec", (json_int_t)(p->next_try_usec > now ? p->next_try_usec - now : 0),
			 "gpu_tasks", (int)gpu, "device_contributed_usec", (json_int_t)device);
	if (o)
		json_object_set_new(o, "via", p->via ? json_string(p->via) : json_null());
	return o;
}
