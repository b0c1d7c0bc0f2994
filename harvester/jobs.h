/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The job spool and runner. Every job is a file STATE/spool/<id>.json,
 * written atomically (temp, fsync, rename, fsync dir) at each change of
 * state, so a crash loses no job: at start-up a job found "running" is
 * queued again. Output goes to STATE/jobs/<id>/{stdout,stderr}; the job's
 * private scratch folder is STATE/jobs/<id>/scratch. Each running job has
 * its own cgroup jobs/<id>/ with its limits; the caller (the manager) owns
 * jobs/ and its freezing.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED, _JOB_STATE_MAX };

struct job {
	struct job *next;
	uint64_t id;
	enum job_state state;
	char **argv;
	uint64_t submitted_usec, started_usec, finished_usec; /* CLOCK_REALTIME */
	int exit_code;       /* -1 when it did not exit normally */
	int signal;          /* 0 when not killed */
	char *reason;        /* why it failed or was requeued, NULL if none */
	uint64_t cpu_usec;
	unsigned attempts;   /* starts, counting restarts after a crash */
	json_t *pool_task;   /* NULL for a local job; for a pool task an object kept
			      * in the spool with the job (harvester/pool-link.c
			      * owns its content: task id, lease, spec hash, ...) */
	/* While running: */
	pid_t pid;
	char *cgroup;
	char *kill_reason;   /* set when we killed it (runtime limit, cancel) */
	sd_event_source *child_source, *timeout_source;
	struct jobs *owner;
};

struct job_limits {
	uid_t uid;
	gid_t gid;
	uint64_t memory_max_bytes;  /* 0: no limit */
	uint64_t tasks_max;         /* 0: no limit */
	uint64_t runtime_max_usec;  /* 0: no limit */
	bool sched_idle;            /* no cpu controller: SCHED_IDLE + nice 19 */
};

struct jobs;
/* Called on the loop after a job finished (to start the next, update status). */
typedef void (*jobs_changed_fn)(void *userdata, struct job *j);

/* Open the spool under state_dir (creating spool/ and jobs/), load every job
 * and requeue the ones that were running. cg_jobs is the jobs/ cgroup. */
int jobs_open(sd_event *e, const char *state_dir, const char *cg_jobs, jobs_changed_fn fn,
	      void *userdata, struct jobs **ret);
struct jobs *jobs_free(struct jobs *js);

/* Queue a new exec job; the argv is copied. */
int jobs_submit(struct jobs *js, char *const *argv, struct job **ret);

/* An input file, written into the job's scratch folder before it is queued. */
struct job_file {
	const char *name;    /* a plain file name: no '/', not "." or ".." */
	const void *data;
	size_t len;
};
/* Queue a job fetched from the pool: FILES are written (and fsync'd) into
 * its scratch folder first, so that once the spool has the job its inputs
 * are there too; POOL_TASK is referenced and kept in the spool with it. */
int jobs_submit_pool(struct jobs *js, char *const *argv, const struct job_file *files, size_t n_files,
		     json_t *pool_task, struct job **ret);
/* Write J to the spool again (after its pool_task changed). */
int jobs_save(struct jobs *js, struct job *j);
/* The first job (oldest); follow ->next for the rest. */
struct job *jobs_first(const struct jobs *js);
/* STATE/jobs/<id>/NAME into BUF. */
int jobs_output_path(const struct jobs *js, const struct job *j, const char *name, char *buf, size_t len);
/* Ids for jobs kept elsewhere (GPU jobs, gpu-jobs.h) that share this id
 * space and STATE/jobs/<id>/: take a fresh id, or say that id is held, so
 * that no exec job is ever given it. */
uint64_t jobs_new_id(struct jobs *js);
void jobs_id_used(struct jobs *js, uint64_t id);
/* Start the oldest queued job if fewer than max_running run. Returns 1 if one
 * started, 0 if none could (nothing queued, or enough running), -errno if the
 * start failed (the job is then marked failed with the reason). */
int jobs_start_next(struct jobs *js, const struct job_limits *lim, unsigned max_running);
/* Cancel a queued or running job (running: killed; it becomes "cancelled"). */
int jobs_cancel(struct jobs *js, uint64_t id);
/* Kill every running job and queue it again (SIGTERM, stop): nothing lost. */
void jobs_requeue_all(struct jobs *js);

/* Longest reason kept (bytes, with the NUL): a GPU job's may quote a build log. */
#define JOB_REASON_MAX 1024
/* Set *reason (an exec or GPU job's, freed and replaced) from a format,
 * truncated to JOB_REASON_MAX. */
void job_set_reason(char **reason, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

unsigned jobs_count(const struct jobs *js, enum job_state s);
const char *job_state_name(enum job_state s);
/* [{id, state, argv, ...}] as in control.h */
json_t *jobs_to_json(const struct jobs *js);
