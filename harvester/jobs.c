/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "cgroup/cgroup.h"
#include "harvester/fileio.h"
#include "harvester/jobs.h"
#include "harvester/macro.h"
#include "harvester/sandbox.h"

#define JOB_MAX_ARGS 4096

struct jobs {
	sd_event *event;
	char *spool_dir;   /* STATE/spool */
	char *out_dir;     /* STATE/jobs */
	char *cg_jobs;
	struct job *head;  /* in id order: oldest first */
	uint64_t next_id;
	jobs_changed_fn changed;
	void *userdata;
};

static const char *const state_names[_JOB_STATE_MAX] = {
	[JOB_QUEUED] = "queued", [JOB_RUNNING] = "running", [JOB_DONE] = "done",
	[JOB_FAILED] = "failed", [JOB_CANCELLED] = "cancelled",
};

const char *job_state_name(enum job_state s)
{
	return s < _JOB_STATE_MAX ? state_names[s] : "unknown";
}

static int job_state_from_name(const char *n)
{
	for (int i = 0; i < _JOB_STATE_MAX; i++)
		if (strcmp(n, state_names[i]) == 0)
			return i;
	return -EINVAL;
}

static uint64_t now_realtime_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static char **strv_copy(char *const *v)
{
	size_t n = 0;
	while (v[n])
		n++;
	char **c = calloc(n + 1, sizeof(char *));
	if (!c)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!(c[i] = strdup(v[i]))) {
			strv_free(c);
			return NULL;
		}
	return c;
}

void job_set_reason(char **reason, const char *fmt, ...)
{
	char buf[JOB_REASON_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(*reason);
	*reason = strdup(buf);
}

static void job_free(struct job *j)
{
	if (!j)
		return;
	sd_event_source_disable_unref(j->child_source);
	sd_event_source_disable_unref(j->timeout_source);
	strv_free(j->argv);
	free(j->reason);
	free(j->kill_reason);
	free(j->cgroup);
	json_decref(j->pool_task);
	free(j);
}

/* --- persistence ---------------------------------------------------------- */

static json_t *job_to_json(const struct job *j)
{
	json_t *argv = json_array();
	for (char **a = j->argv; a && *a; a++)
		json_array_append_new(argv, json_string(*a));
	return json_pack("{s:I, s:s, s:o, s:I, s:I, s:I, s:i, s:i, s:s?, s:I, s:i, s:O*}",
			 "id", (json_int_t)j->id, "state", job_state_name(j->state), "argv", argv,
			 "submitted_usec", (json_int_t)j->submitted_usec,
			 "started_usec", (json_int_t)j->started_usec,
			 "finished_usec", (json_int_t)j->finished_usec,
			 "exit_code", j->exit_code, "signal", j->signal, "reason", j->reason,
			 "cpu_usec", (json_int_t)j->cpu_usec, "attempts", (int)j->attempts,
			 "pool_task", j->pool_task);
}

static int job_from_json(json_t *o, struct job **ret)
{
	json_int_t id = 0, sub = 0, start = 0, fin = 0, cpu = 0;
	const char *state = NULL, *reason = NULL;
	json_t *argv = NULL, *pool_task = NULL, *reason_j = NULL;
	int exit_code = -1, sig = 0, attempts = 0;

	/* "reason" is null for a job that did not fail: written by job_to_json. */
	if (json_unpack(o, "{s:I, s:s, s:o, s?I, s?I, s?I, s?i, s?i, s?o, s?I, s?i, s?o}",
			"id", &id, "state", &state, "argv", &argv, "submitted_usec", &sub,
			"started_usec", &start, "finished_usec", &fin, "exit_code", &exit_code,
			"signal", &sig, "reason", &reason_j, "cpu_usec", &cpu, "attempts", &attempts,
			"pool_task", &pool_task) < 0)
		return -EBADMSG;
	if (reason_j && !json_is_null(reason_j) && !(reason = json_string_value(reason_j)))
		return -EBADMSG;
	int s = job_state_from_name(state);
	if (s < 0 || id <= 0 || !json_is_array(argv) || json_array_size(argv) == 0 ||
	    json_array_size(argv) > JOB_MAX_ARGS)
		return -EBADMSG;

	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->argv = calloc(json_array_size(argv) + 1, sizeof(char *));
	if (!j->argv) {
		job_free(j);
		return -ENOMEM;
	}
	size_t i;
	json_t *v;
	json_array_foreach(argv, i, v) {
		if (!json_is_string(v) || !(j->argv[i] = strdup(json_string_value(v)))) {
			job_free(j);
			return -EBADMSG;
		}
	}
	j->id = (uint64_t)id;
	j->state = (enum job_state)s;
	j->submitted_usec = (uint64_t)sub;
	j->started_usec = (uint64_t)start;
	j->finished_usec = (uint64_t)fin;
	j->exit_code = exit_code;
	j->signal = sig;
	j->cpu_usec = (uint64_t)cpu;
	j->attempts = (unsigned)attempts;
	j->reason = reason ? strdup(reason) : NULL;
	j->pool_task = json_is_object(pool_task) ? json_incref(pool_task) : NULL;
	j->pid = 0;
	*ret = j;
	return 0;
}

static int job_save(struct jobs *js, const struct job *j)
{
	char path[PATH_MAX];
	json_t *o = job_to_json(j);
	_cleanup_free_ char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!text)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/%" PRIu64 ".json", js->spool_dir, j->id);

	struct iovec iov[] = {
		{ .iov_base = text, .iov_len = strlen(text) },
		{ .iov_base = (char *)"\n", .iov_len = 1 },
	};
	return write_file_atomic(path, iov, ELEMENTSOF(iov), 0600);
}

static void jobs_append(struct jobs *js, struct job *j)
{
	struct job **p = &js->head;
	while (*p && (*p)->id < j->id)
		p = &(*p)->next;
	j->next = *p;
	*p = j;
	j->owner = js;
	if (j->id >= js->next_id)
		js->next_id = j->id + 1;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return negative_errno();
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return negative_errno();
	return 0;
}

static int jobs_load(struct jobs *js)
{
	DIR *d = opendir(js->spool_dir);
	if (!d)
		return negative_errno();
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (n < 6 || strcmp(de->d_name + n - 5, ".json") != 0)
			continue;
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/%s", js->spool_dir, de->d_name);
		json_error_t err;
		json_t *o = json_load_file(path, 0, &err);
		struct job *j = NULL;
		int r = o ? job_from_json(o, &j) : -EBADMSG;
		json_decref(o);
		if (r < 0) {
			/* Keep the evidence, out of the way, rather than lose it silently. */
			char bad[PATH_MAX + 8];
			snprintf(bad, sizeof(bad), "%s.corrupt", path);
			rename(path, bad);
			continue;
		}
		if (j->state == JOB_RUNNING) {
			/* The daemon died while it ran: its cgroup and processes are gone
			 * with the old instance (or are killed below); run it again. */
			j->state = JOB_QUEUED;
			job_set_reason(&j->reason, "requeued: the daemon stopped while it ran");
			job_save(js, j);
		}
		jobs_append(js, j);
	}
	closedir(d);
	return 0;
}

int jobs_open(sd_event *e, const char *state_dir, const char *cg_jobs, jobs_changed_fn fn,
	      void *userdata, struct jobs **ret)
{
	struct jobs *js = calloc(1, sizeof(*js));
	int r;

	if (!js)
		return -ENOMEM;
	js->event = sd_event_ref(e);
	js->next_id = 1;
	js->changed = fn;
	js->userdata = userdata;
	if (asprintf(&js->spool_dir, "%s/spool", state_dir) < 0 ||
	    asprintf(&js->out_dir, "%s/jobs", state_dir) < 0 || !(js->cg_jobs = strdup(cg_jobs))) {
		jobs_free(js);
		return -ENOMEM;
	}
	if ((r = mkdir_p(js->spool_dir, 0700)) < 0 || (r = mkdir_p(js->out_dir, 0755)) < 0 ||
	    (r = jobs_load(js)) < 0) {
		jobs_free(js);
		return r;
	}
	*ret = js;
	return 0;
}

struct jobs *jobs_free(struct jobs *js)
{
	if (!js)
		return NULL;
	while (js->head) {
		struct job *j = js->head;
		js->head = j->next;
		job_free(j);
	}
	sd_event_unref(js->event);
	free(js->spool_dir);
	free(js->out_dir);
	free(js->cg_jobs);
	free(js);
	return NULL;
}

/* A queued job with a copy of ARGV and the next id, not yet saved; NULL
 * when out of memory. */
static struct job *job_new(const struct jobs *js, char *const *argv)
{
	struct job *j = calloc(1, sizeof(*j));
	if (!j || !(j->argv = strv_copy(argv))) {
		job_free(j);
		return NULL;
	}
	j->id = js->next_id;
	j->state = JOB_QUEUED;
	j->exit_code = -1;
	j->submitted_usec = now_realtime_usec();
	return j;
}

int jobs_submit(struct jobs *js, char *const *argv, struct job **ret)
{
	size_t n = 0;
	while (argv[n])
		n++;
	if (n == 0 || n > JOB_MAX_ARGS)
		return -EINVAL;

	struct job *j = job_new(js, argv);
	if (!j)
		return -ENOMEM;
	int r = job_save(js, j);
	if (r < 0) {
		job_free(j);
		return r;
	}
	jobs_append(js, j);
	if (ret)
		*ret = j;
	return 0;
}

int jobs_submit_pool(struct jobs *js, char *const *argv, const struct job_file *files, size_t n_files,
		     json_t *pool_task, struct job **ret)
{
	char scratch[PATH_MAX], path[PATH_MAX];
	size_t n = 0;
	int r;

	while (argv[n])
		n++;
	if (n == 0 || n > JOB_MAX_ARGS || !json_is_object(pool_task))
		return -EINVAL;
	for (size_t i = 0; i < n_files; i++)
		if (!files[i].name[0] || strchr(files[i].name, '/') || !strcmp(files[i].name, ".") ||
		    !strcmp(files[i].name, ".."))
			return -EINVAL;

	struct job *j = job_new(js, argv);
	if (!j)
		return -ENOMEM;
	j->pool_task = json_incref(pool_task);

	/* Inputs first: a crash before the spool write leaves only an unused
	 * folder, and the pool hands the task out again when its lease lapses. */
	snprintf(scratch, sizeof(scratch), "%s/%" PRIu64 "/scratch", js->out_dir, j->id);
	r = mkdir_p(scratch, 0700);
	for (size_t i = 0; r >= 0 && i < n_files; i++) {
		snprintf(path, sizeof(path), "%s/%s", scratch, files[i].name);
		struct iovec iov = { .iov_base = (void *)files[i].data, .iov_len = files[i].len };
		/* In place, not write_file_atomic: nothing reads the scratch
		 * folder before the spool names the job, so there is no old file
		 * to keep whole (one a crash left is simply rewritten), and one
		 * fsync of the folder after all of them (below) is enough. */
		r = write_file_sync(path, &iov, 1, 0644);
	}
	if (r >= 0)
		r = fsync_dir(scratch);
	if (r >= 0)
		r = job_save(js, j);
	if (r < 0) {
		job_free(j);
		return r;
	}
	jobs_append(js, j);
	if (ret)
		*ret = j;
	return 0;
}

int jobs_save(struct jobs *js, struct job *j)
{
	return job_save(js, j);
}

struct job *jobs_first(const struct jobs *js)
{
	return js->head;
}

int jobs_output_path(const struct jobs *js, const struct job *j, const char *name, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%" PRIu64 "/%s", js->out_dir, j->id, name);
	return n >= 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

unsigned jobs_count(const struct jobs *js, enum job_state s)
{
	unsigned n = 0;
	for (const struct job *j = js->head; j; j = j->next)
		n += j->state == s;
	return n;
}

/* --- running ----------------------------------------------------------------- */

/* The last line of a job's stderr, to say in its failure reason. */
static void last_stderr_line(struct jobs *js, const struct job *j, char *buf, size_t len)
{
	char path[PATH_MAX];
	buf[0] = 0;
	snprintf(path, sizeof(path), "%s/%" PRIu64 "/stderr", js->out_dir, j->id);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	off_t size = lseek(fd, 0, SEEK_END);
	off_t from = size > (off_t)len ? size - (off_t)len + 1 : 0;
	ssize_t n = pread(fd, buf, len - 1, from);
	if (n <= 0) {
		buf[0] = 0;
		return;
	}
	buf[n] = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = 0;
	char *nl = strrchr(buf, '\n');
	if (nl)
		memmove(buf, nl + 1, strlen(nl + 1) + 1);
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
}

static void job_finish(struct jobs *js, struct job *j, const siginfo_t *si)
{
	struct cg_memory_events me = { 0 };
	uint64_t pids_max = 0, usage = 0;
	bool oom = false, pids_hit = false;

	j->child_source = sd_event_source_disable_unref(j->child_source);
	j->timeout_source = sd_event_source_disable_unref(j->timeout_source);

	if (j->cgroup) {
		if (cg_cpu_usage_usec(j->cgroup, &usage) >= 0)
			j->cpu_usec = usage;
		if (cg_memory_events(j->cgroup, &me) >= 0)
			oom = me.oom_kill > 0 || me.max > 0;
		if (cg_read_key(j->cgroup, "pids.events", "max", &pids_max) >= 0)
			pids_hit = pids_max > 0;
		/* A job's leftovers (a forked daemon) die with it. */
		cg_kill(j->cgroup);
		cg_remove(j->cgroup);
	}

	j->finished_usec = now_realtime_usec();
	j->pid = 0;
	if (si->si_code == CLD_EXITED) {
		j->exit_code = si->si_status;
		j->signal = 0;
	} else {
		j->exit_code = -1;
		j->signal = si->si_status;
	}

	char tail[160];
	if (j->state == JOB_CANCELLED) {
		/* reason set by jobs_cancel */
	} else if (j->kill_reason) {
		j->state = JOB_FAILED;
		job_set_reason(&j->reason, "%s", j->kill_reason);
	} else if (j->signal == 0 && j->exit_code == 0) {
		j->state = JOB_DONE;
		free(j->reason);
		j->reason = NULL;
	} else {
		j->state = JOB_FAILED;
		last_stderr_line(js, j, tail, sizeof(tail));
		if (oom && me.oom_kill > 0)
			job_set_reason(&j->reason, "memory limit reached (oom-kill, %" PRIu64 " kill(s)); %s %d",
				       me.oom_kill, j->signal ? "killed by signal" : "exit status",
				       j->signal ? j->signal : j->exit_code);
		else if (pids_hit)
			job_set_reason(&j->reason, "process limit reached (pids.max hit %" PRIu64 " time(s)); exit status %d%s%s",
				       pids_max, j->exit_code, tail[0] ? ": " : "", tail);
		else if (oom)
			job_set_reason(&j->reason, "memory limit reached (memory.max hit); %s %d%s%s",
				       j->signal ? "killed by signal" : "exit status",
				       j->signal ? j->signal : j->exit_code, tail[0] ? ": " : "", tail);
		else if (j->signal)
			job_set_reason(&j->reason, "killed by signal %d (%s)%s%s", j->signal, strsignal(j->signal),
				       tail[0] ? ": " : "", tail);
		else
			job_set_reason(&j->reason, "exit status %d%s%s", j->exit_code, tail[0] ? ": " : "", tail);
	}
	free(j->kill_reason);
	j->kill_reason = NULL;
	free(j->cgroup);
	j->cgroup = NULL;
	job_save(js, j);
	if (js->changed)
		js->changed(js->userdata, j);
}

static int on_child(sd_event_source *s, const siginfo_t *si, void *userdata)
{
	struct job *j = userdata;
	job_finish(j->owner, j, si);
	return 0;
}

static int on_job_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct job *j = userdata;
	free(j->kill_reason);
	j->kill_reason = strdup("runtime limit reached (RuntimeMaxSec)");
	if (j->cgroup)
		cg_kill(j->cgroup);
	else if (j->pid > 0)
		kill(j->pid, SIGKILL);
	return 0;
}

static int open_output(const char *dir, const char *name, uid_t uid, gid_t gid)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0)
		return negative_errno();
	return fd;
}

static int job_start(struct jobs *js, struct job *j, const struct job_limits *lim)
{
	char dir[PATH_MAX], scratch[PATH_MAX], num[32];
	char cg[PATH_MAX];
	int r;

	snprintf(dir, sizeof(dir), "%s/%" PRIu64, js->out_dir, j->id);
	snprintf(scratch, sizeof(scratch), "%s/scratch", dir);
	snprintf(cg, sizeof(cg), "%s/%" PRIu64, js->cg_jobs, j->id);

	if ((r = mkdir_p(dir, 0755)) < 0 || (r = mkdir_p(scratch, 0700)) < 0) {
		job_set_reason(&j->reason, "cannot create %s: %s", scratch, strerror(-r));
		return r;
	}
	if (chown(scratch, lim->uid, lim->gid) < 0) {
		r = negative_errno();
		job_set_reason(&j->reason, "cannot give %s to uid %u: %s", scratch, (unsigned)lim->uid, strerror(-r));
		return r;
	}

	/* A cgroup left behind by a crash: empty it first. */
	cg_kill(cg);
	cg_remove(cg);
	if ((r = cg_create(cg)) < 0) {
		job_set_reason(&j->reason, "cannot create cgroup %s: %s", cg, strerror(-r));
		return r;
	}
	/* Limits where the controllers exist; where they do not (a hybrid host)
	 * the files are missing and the limit is reported as unavailable. */
	if (lim->memory_max_bytes) {
		snprintf(num, sizeof(num), "%" PRIu64, lim->memory_max_bytes);
		if (cg_write(cg, "memory.max", num) >= 0) {
			/* No memory.high: with no swap it would throttle a runaway
			 * job forever (and hold the host in memory pressure) instead
			 * of letting the OOM killer end it at memory.max. */
			cg_write(cg, "memory.swap.max", "0");
			cg_write(cg, "memory.oom.group", "1");
		}
	}
	if (lim->tasks_max) {
		snprintf(num, sizeof(num), "%" PRIu64, lim->tasks_max);
		cg_write(cg, "pids.max", num);
	}

	_cleanup_close_ int out = open_output(dir, "stdout", lim->uid, lim->gid);
	_cleanup_close_ int err = open_output(dir, "stderr", lim->uid, lim->gid);
	if (out < 0 || err < 0) {
		r = out < 0 ? out : err;
		job_set_reason(&j->reason, "cannot open output in %s: %s", dir, strerror(-r));
		cg_remove(cg);
		return r;
	}

	struct sandbox_opts so = {
		.argv = j->argv,
		.uid = lim->uid,
		.gid = lim->gid,
		.cgroup = cg,
		.scratch_dir = scratch,
		.stdout_fd = out,
		.stderr_fd = err,
		.sched_idle = lim->sched_idle,
	};
	pid_t pid;
	int pidfd = -1;
	const char *step = NULL;
	r = sandbox_spawn(&so, &pid, &pidfd, &step);
	if (pidfd >= 0)
		close(pidfd);
	if (r < 0) {
		job_set_reason(&j->reason, "sandbox: %s: %s", step ? step : "spawn", strerror(-r));
		cg_kill(cg);
		cg_remove(cg);
		return r;
	}

	j->pid = pid;
	j->cgroup = strdup(cg);
	j->state = JOB_RUNNING;
	j->attempts++;
	j->started_usec = now_realtime_usec();
	j->exit_code = -1;
	j->signal = 0;
	free(j->reason);
	j->reason = NULL;

	r = sd_event_add_child(js->event, &j->child_source, pid, WEXITED, on_child, j);
	if (r < 0) {
		kill(pid, SIGKILL);
		return r;
	}
	sd_event_source_set_description(j->child_source, "job-child");
	if (lim->runtime_max_usec) {
		uint64_t now;
		sd_event_now(js->event, CLOCK_MONOTONIC, &now);
		if (sd_event_add_time(js->event, &j->timeout_source, CLOCK_MONOTONIC,
				      now + lim->runtime_max_usec, 0, on_job_timeout, j) >= 0)
			sd_event_source_set_description(j->timeout_source, "job-runtime-max");
	}
	job_save(js, j);
	return 0;
}

int jobs_start_next(struct jobs *js, const struct job_limits *lim, unsigned max_running)
{
	if (jobs_count(js, JOB_RUNNING) >= max_running)
		return 0;
	for (struct job *j = js->head; j; j = j->next) {
		if (j->state != JOB_QUEUED)
			continue;
		int r = job_start(js, j, lim);
		if (r < 0) {
			j->state = JOB_FAILED;
			j->finished_usec = now_realtime_usec();
			job_save(js, j);
			if (js->changed)
				js->changed(js->userdata, j);
			return r;
		}
		return 1;
	}
	return 0;
}

int jobs_cancel(struct jobs *js, uint64_t id)
{
	for (struct job *j = js->head; j; j = j->next) {
		if (j->id != id)
			continue;
		if (j->state == JOB_QUEUED) {
			j->state = JOB_CANCELLED;
			j->finished_usec = now_realtime_usec();
			job_set_reason(&j->reason, "cancelled by the operator");
			return job_save(js, j);
		}
		if (j->state == JOB_RUNNING) {
			j->state = JOB_CANCELLED;
			job_set_reason(&j->reason, "cancelled by the operator");
			if (j->cgroup)
				cg_kill(j->cgroup);
			return 0;
		}
		return -EALREADY;
	}
	return -ENOENT;
}

void jobs_requeue_all(struct jobs *js)
{
	for (struct job *j = js->head; j; j = j->next) {
		if (j->state != JOB_RUNNING)
			continue;
		j->child_source = sd_event_source_disable_unref(j->child_source);
		j->timeout_source = sd_event_source_disable_unref(j->timeout_source);
		if (j->cgroup) {
			cg_kill(j->cgroup);
			/* Reap so the cgroup empties and can go. */
			if (j->pid > 0)
				waitpid(j->pid, NULL, 0);
			cg_remove(j->cgroup);
		} else if (j->pid > 0) {
			kill(j->pid, SIGKILL);
			waitpid(j->pid, NULL, 0);
		}
		j->pid = 0;
		j->state = JOB_QUEUED;
		job_set_reason(&j->reason, "requeued: the daemon stopped while it ran");
		job_save(js, j);
	}
}

json_t *jobs_to_json(const struct jobs *js)
{
	json_t *a = json_array();
	char path[PATH_MAX];

	for (const struct job *j = js->head; j; j = j->next) {
		json_t *o = job_to_json(j);
		snprintf(path, sizeof(path), "%s/%" PRIu64 "/stdout", js->out_dir, j->id);
		json_object_set_new(o, "stdout", json_string(path));
		snprintf(path, sizeof(path), "%s/%" PRIu64 "/stderr", js->out_dir, j->id);
		json_object_set_new(o, "stderr", json_string(path));
		if (j->state == JOB_RUNNING && j->cgroup) {
			uint64_t u;
			if (cg_cpu_usage_usec(j->cgroup, &u) >= 0)
				json_object_set_new(o, "cpu_usec", json_integer((json_int_t)u));
			json_object_set_new(o, "pid", json_integer(j->pid));
		}
		json_array_append_new(a, o);
	}
	return a;
}

uint64_t jobs_new_id(struct jobs *js)
{
	return js->next_id++;
}

void jobs_id_used(struct jobs *js, uint64_t id)
{
	if (id >= js->next_id)
		js->next_id = id + 1;
}
