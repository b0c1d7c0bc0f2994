/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "harvester/gpu-jobs.h"
#include "harvester/host.h"
#include "harvester/ledger.h"
#include "harvester/log.h"
#include "harvester/macro.h"
#include "harvester/fileio.h"
#include "harvester/manager.h"
#include "harvester/pool-link.h"

#define TICK_USEC USEC_PER_SEC
#define LEDGER_IDLE_SAVE_USEC (300 * USEC_PER_SEC)
/* Foreground share is smoothed over about 5 ticks: "sustained" load. */
#define FOREGROUND_EWMA_NUM 1
#define FOREGROUND_EWMA_DEN 5
/* After a freeze write, how long to watch cgroup.events directly before
 * falling back to its (rate-limited, ~8 ms late) notification. */
#define FREEZE_SPIN_NS (20 * 1000000ULL)
#define FREEZE_SPIN_STEP_NS 100000ULL

static uint64_t now_mono_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

static uint64_t now_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

static uint64_t now_realtime_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / NSEC_PER_USEC;
}

static void on_config_error(void *userdata, const char *file, unsigned line, const char *msg)
{
	log_error("%s", msg);
}

int manager_new(const struct manager_opts *o, struct manager **ret)
{
	struct manager *m = calloc(1, sizeof(*m));
	int r;

	if (!m)
		return -ENOMEM;
	m->control_fd = -1;
	m->no_bpf = o->no_bpf;
	m->temperature_mc = INT32_MIN;
	if (!(m->config_path = strdup(o->config_path)) || !(m->state_dir = strdup(o->state_dir)) ||
	    !(m->runtime_dir = strdup(o->runtime_dir)) ||
	    (o->input_dir && !(m->input_dir = strdup(o->input_dir))) ||
	    (o->tty_dir && !(m->tty_dir = strdup(o->tty_dir)))) {
		manager_free(m);
		return -ENOMEM;
	}
	r = config_load(m->config_path, NULL, &m->config, on_config_error, NULL);
	if (r < 0) {
		manager_free(m);
		return r;
	}
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	m->ncpus = n > 0 ? (unsigned)n : 1;
	*ret = m;
	return 0;
}

/* --- ledger ------------------------------------------------------------------ */

static int ledger_path(struct manager *m, char *buf, size_t len)
{
	return snprintf(buf, len, "%s/ledger", m->state_dir) < (int)len ? 0 : -ENAMETOOLONG;
}

static int manager_save_ledger(struct manager *m)
{
	struct ledger l = {
		.tokens_usec = m->budget.tokens_usec,
		.spent_total_usec = m->budget.spent_total_usec,
		.saved_realtime_usec = now_realtime_usec(),
		.jobs_cgroup_id = m->jobs_cgroup_id,
		.jobs_usage_usec = m->budget.last_usage_usec,
	};
	char path[PATH_MAX];
	int r;

	host_boot_id(l.boot_id);
	gpu_jobs_fill_ledger(m->gpu, &l);
	if ((r = ledger_path(m, path, sizeof(path))) < 0)
		return r;
	r = ledger_save(path, &l);
	if (r < 0)
		return log_warning_errno(r, "Cannot save the budget ledger %s", path);
	m->last_ledger_save_usec = now_mono_usec();
	m->last_saved_spent_usec = m->budget.spent_total_usec;
	return 0;
}

static uint64_t burst_usec_per_sec(const struct manager *m)
{
	return (uint64_t)m->config.burst_ppm * m->ncpus / (PPM_ONE / USEC_PER_SEC);
}

static int manager_load_budget(struct manager *m)
{
	struct ledger l;
	char path[PATH_MAX], boot[37] = "";
	uint64_t usage = 0;
	int64_t tokens = 0;
	uint64_t spent = 0, unrecorded = 0;
	int r;

	if ((r = ledger_path(m, path, sizeof(path))) < 0)
		return r;
	cg_cpu_usage_usec(m->cg_jobs, &usage);
	host_boot_id(boot);

	r = ledger_load(path, &l);
	if (r == -ENOENT) {
		/* A new bucket starts empty: reinstalling never yields a full one. */
		log_info("No budget ledger at %s yet: starting with an empty bucket", path);
	} else if (r < 0) {
		log_warning_errno(r, "Budget ledger %s is unreadable; starting with an empty bucket", path);
	} else {
		unrecorded = (uint64_t)ledger_unrecorded_usec(&l, boot, m->jobs_cgroup_id, usage,
							     now_realtime_usec(), burst_usec_per_sec(m));
		tokens = l.tokens_usec;
		spent = l.spent_total_usec;
		log_info("Budget ledger restored: %" PRId64 " us of CPU in the bucket, %" PRIu64
			 " us spent in all, %" PRIu64 " us charged for the time since the last save",
			 tokens, spent, unrecorded);
	}
	budget_init(&m->budget, m->config.cpu_ppm, m->config.burst_ppm, m->config.window_usec,
		    m->ncpus, tokens, now_mono_usec(), usage);
	m->budget.spent_total_usec = spent;
	if (unrecorded)
		budget_charge(&m->budget, unrecorded);
	return manager_save_ledger(m);
}

/* --- cgroups ------------------------------------------------------------------ */

static int join_path(const char *a, const char *b, char **ret)
{
	return asprintf(ret, "%s/%s", a, b) < 0 ? -ENOMEM : 0;
}

static int manager_setup_cgroups(struct manager *m)
{
	_cleanup_free_ char *mnt = NULL, *self = NULL, *enabled = NULL;
	int r;

	r = cg_mount_point(&mnt);
	if (r < 0)
		return log_error_errno(r, "No cgroup2 file system is mounted");

	if (m->config.cgroup_root) {
		if (strncmp(m->config.cgroup_root, mnt, strlen(mnt)) == 0)
			m->cg_base = strdup(m->config.cgroup_root);
		else
			r = asprintf(&m->cg_base, "%s/%s", mnt,
				     m->config.cgroup_root + (m->config.cgroup_root[0] == '/'));
	} else {
		r = cg_pid_path(0, &self);
		if (r < 0)
			return log_error_errno(r, "Cannot find our own cgroup");
		size_t n = strlen(self);
		if (strcmp(self, mnt) == 0 || strcmp(self, "/") == 0)
			/* Not delegated (run by hand at the root): take a subtree of our own. */
			r = asprintf(&m->cg_base, "%s/harvester", mnt);
		else if (n > 11 && strcmp(self + n - 11, "/supervisor") == 0) {
			self[n - 11] = 0;      /* restarted in place */
			m->cg_base = strdup(self);
		} else
			m->cg_base = strdup(self);
	}
	if (!m->cg_base || r < 0)
		return -ENOMEM;

	if ((r = join_path(m->cg_base, "supervisor", &m->cg_supervisor)) < 0 ||
	    (r = join_path(m->cg_base, "jobs", &m->cg_jobs)) < 0)
		return r;
	if ((r = cg_create(m->cg_base)) < 0)
		return log_error_errno(r, "Cannot create cgroup %s", m->cg_base);
	if ((r = cg_create(m->cg_supervisor)) < 0)
		return log_error_errno(r, "Cannot create cgroup %s", m->cg_supervisor);
	/* cgroup v2's no-internal-process rule: the daemon leaves the delegated
	 * cgroup so controllers can be enabled for its children. */
	if ((r = cg_attach(m->cg_supervisor, getpid())) < 0)
		return log_error_errno(r, "Cannot move the daemon into %s", m->cg_supervisor);
	cg_enable_controllers(m->cg_base, "cpu memory pids", &enabled);
	if ((r = cg_create(m->cg_jobs)) < 0)
		return log_error_errno(r, "Cannot create cgroup %s", m->cg_jobs);
	cg_enable_controllers(m->cg_jobs, "cpu memory pids", NULL);

	struct stat st;
	if (stat(m->cg_jobs, &st) < 0)
		return log_error_errno(negative_errno(), "Cannot stat %s", m->cg_jobs);
	m->jobs_cgroup_id = st.st_ino;

	m->have_cpu = cg_has_controller(m->cg_jobs, "cpu") > 0;
	if (m->have_cpu) {
		/* Any foreground wakeup preempts harvest work. */
		r = cg_set_cpu_idle(m->cg_jobs, true);
		if (r < 0)
			log_warning_errno(r, "Cannot set cpu.idle on %s; jobs run SCHED_IDLE instead", m->cg_jobs);
		m->limits.sched_idle = r < 0;
	} else {
		m->limits.sched_idle = true;
		log_notice("No cpu controller for %s: the cap is kept by a freezer duty cycle, jobs run SCHED_IDLE at nice 19",
			   m->cg_jobs);
	}
	if (cg_has_controller(m->cg_jobs, "memory") <= 0)
		log_notice("No memory controller for %s: MemoryMax= cannot be enforced", m->cg_jobs);
	if (cg_has_controller(m->cg_jobs, "pids") <= 0)
		log_notice("No pids controller for %s: TasksMax= cannot be enforced", m->cg_jobs);

	/* Start frozen; the first evaluation thaws if the policy allows. */
	m->frozen = true;
	cg_freeze(m->cg_jobs, true);
	log_info("Cgroups: jobs in %s (controllers: %s)", m->cg_jobs, enabled && *enabled ? enabled : "none");
	return 0;
}

static void manager_apply_cap(struct manager *m)
{
	if (!m->have_cpu)
		return;
	uint64_t period, quota = budget_cpu_max(&m->budget, &period);
	int r = cg_set_cpu_max(m->cg_jobs, quota, period);
	if (r < 0)
		log_warning_errno(r, "Cannot set cpu.max on %s", m->cg_jobs);
}

static int manager_resolve_user(struct manager *m)
{
	struct passwd *pw = getpwnam(m->config.job_user);
	if (!pw)
		return log_error_errno(-ESRCH, "[Jobs] User=%s: no such user", m->config.job_user);
	if (pw->pw_uid == 0 || pw->pw_gid == 0)
		return log_error_errno(-EPERM, "[Jobs] User=%s: jobs never run as root", m->config.job_user);
	m->limits.uid = pw->pw_uid;
	m->limits.gid = pw->pw_gid;
	m->limits.memory_max_bytes = m->config.job_memory_max_bytes;
	m->limits.tasks_max = m->config.job_tasks_max;
	m->limits.runtime_max_usec = m->config.job_runtime_max_usec;
	return 0;
}

/* --- freezing and reaction -------------------------------------------------------- */

static void record_reaction(struct manager *m, uint64_t frozen_ns)
{
	struct reaction *rc = &m->reactions[m->n_reactions % REACTION_SAMPLES];
	uint64_t last = 0;
	int r = m->sense ? sense_last_harvest_ns(m->sense, &last) : -EOPNOTSUPP;
	/* A task marks itself frozen just before it is switched out: the probe
	 * may still see it on its CPU for a few microseconds. */
	for (int i = 0; r == -EBUSY && i < 50; i++) {
		struct timespec ts = { 0, FREEZE_SPIN_STEP_NS };
		nanosleep(&ts, NULL);
		r = sense_last_harvest_ns(m->sense, &last);
	}

	rc->to_frozen_usec = (int64_t)(frozen_ns - m->pending_input_ns) / 1000;
	if (r >= 0)
		/* A harvest task that last ran before the input cost the owner nothing. */
		rc->to_last_run_usec = last > m->pending_input_ns ? (int64_t)(last - m->pending_input_ns) / 1000 : 0;
	else
		rc->to_last_run_usec = -1;
	m->n_reactions++;
	m->pending_input_ns = 0;
	m->events_source = sd_event_source_disable_unref(m->events_source);
	log_info("Reaction: input -> last harvest run %" PRId64 " us, -> frozen %" PRId64 " us",
		 rc->to_last_run_usec, rc->to_frozen_usec);
}

static int on_jobs_events(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct manager *m = userdata;
	bool frozen;

	if (cg_is_frozen(m->cg_jobs, &frozen) >= 0 && frozen && m->pending_input_ns)
		record_reaction(m, now_mono_ns());
	return 0;
}

/* Measure how long the freeze we just wrote takes: watch cgroup.events for a
 * short while (a freeze takes 1-4 ms), then let its notification finish. */
static void start_reaction(struct manager *m, uint64_t input_ns)
{
	bool frozen = false;

	m->pending_input_ns = input_ns;
	for (uint64_t t0 = now_mono_ns(); now_mono_ns() - t0 < FREEZE_SPIN_NS;) {
		if (cg_is_frozen(m->cg_jobs, &frozen) < 0 || frozen)
			break;
		struct timespec ts = { 0, FREEZE_SPIN_STEP_NS };
		nanosleep(&ts, NULL);
	}
	if (frozen) {
		record_reaction(m, now_mono_ns());
		return;
	}
	int fd = cg_events_open(m->cg_jobs);
	if (fd < 0) {
		m->pending_input_ns = 0;
		return;
	}
	if (sd_event_add_io(m->event, &m->events_source, fd, EPOLLPRI, on_jobs_events, m) < 0) {
		close(fd);
		m->pending_input_ns = 0;
		return;
	}
	sd_event_source_set_io_fd_own(m->events_source, true);
	sd_event_source_set_description(m->events_source, "jobs-cgroup-events");
	/* The freeze may have completed, and been notified, between the last
	 * look and the open: the new fd would never fire for it. */
	if (cg_is_frozen(m->cg_jobs, &frozen) >= 0 && frozen)
		record_reaction(m, now_mono_ns());
}

static void apply_freeze(struct manager *m, bool want)
{
	if (want == m->frozen)
		return;
	int r = cg_freeze(m->cg_jobs, want);
	if (r < 0) {
		log_warning_errno(r, "Cannot %s %s", want ? "freeze" : "thaw", m->cg_jobs);
		return;
	}
	m->frozen = want;
}

static int on_duty(sd_event_source *s, uint64_t usec, void *userdata);

/*
 * The freezer helper: a thread that does one thing, freeze jobs/ at the time
 * the duty cycle planned, at a real-time priority, so that the freeze is not
 * late behind other runnable tasks (wake-ups of the event loop 2-7 ms late,
 * some 20-40 ms, were seen on a loaded 2-core machine; at a 1 % cap an
 * on-time is about 1 ms, so that is several times the allowance). Only the
 * loop decides: the helper never thaws, and a freeze it writes after the
 * loop moved on is cancelled by a generation count under the lock, so the
 * worst it can do is freeze the jobs early. It blocks between freezes, and
 * RLIMIT_RTTIME kills the daemon if a real-time thread ever ran 200 ms
 * without blocking. Where real time is not allowed (the packaged unit has
 * RestrictRealtime=yes; that unit runs where cpu.max exists anyway), there
 * is no helper and the loop freezes, as before.
 * One manager per process: the state is file-scoped.
 */
static struct {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool running, quit;
	const char *cgroup;
	uint64_t gen;
	uint64_t target_usec;                   /* 0: nothing planned */
	bool froze;                             /* it froze: the loop has not seen it yet */
	uint64_t froze_usec, froze_usage_usec;  /* when, and the usage just before */
} freezer = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void *freezer_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&freezer.lock);
	while (!freezer.quit) {
		if (!freezer.target_usec) {
			pthread_cond_wait(&freezer.cond, &freezer.lock);
			continue;
		}
		uint64_t gen = freezer.gen, t = freezer.target_usec;
		struct timespec ts = { .tv_sec = (time_t)(t / USEC_PER_SEC), .tv_nsec = (long)(t % USEC_PER_SEC) * 1000 };
		int r = 0;
		while (!freezer.quit && freezer.gen == gen && r != ETIMEDOUT)
			r = pthread_cond_timedwait(&freezer.cond, &freezer.lock, &ts);
		if (freezer.quit || freezer.gen != gen)
			continue;
		uint64_t usage = 0;
		(void)cg_cpu_usage_usec(freezer.cgroup, &usage);
		freezer.froze_usec = now_mono_usec();
		freezer.froze_usage_usec = usage;
		(void)cg_freeze(freezer.cgroup, true);
		freezer.froze = true;
		freezer.target_usec = 0;
	}
	pthread_mutex_unlock(&freezer.lock);
	return NULL;
}

static void freezer_start(struct manager *m)
{
	static bool tried;
	pthread_condattr_t ca;
	pthread_attr_t a;
	struct sched_param sp = { .sched_priority = 1 };
	struct rlimit rt = { .rlim_cur = 200000, .rlim_max = 200000 }; /* us */
	int r;

	if (tried)
		return;
	tried = true;
	freezer.cgroup = m->cg_jobs;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&freezer.cond, &ca);
	pthread_condattr_destroy(&ca);
	if (setrlimit(RLIMIT_RTTIME, &rt) < 0) {
		log_info("Duty cycle: no freezer helper (RLIMIT_RTTIME: %m); the event loop freezes");
		return;
	}
	pthread_attr_init(&a);
	pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED);
	pthread_attr_setschedpolicy(&a, SCHED_FIFO);
	pthread_attr_setschedparam(&a, &sp);
	r = pthread_create(&freezer.thread, &a, freezer_main, NULL);
	pthread_attr_destroy(&a);
	if (r != 0) {
		errno = r;
		log_info("Duty cycle: no real-time freezer helper (%m); the event loop freezes");
		return;
	}
	freezer.running = true;
	log_info("Duty cycle: freezes by a real-time helper thread");
}

/* Arm the helper for t (0: disarm). Returns whether it froze since the last
 * call, with the time and the usage it saw then. */
static bool freezer_sync(uint64_t t, uint64_t *ret_usec, uint64_t *ret_usage)
{
	bool froze;

	if (!freezer.running)
		return false;
	pthread_mutex_lock(&freezer.lock);
	froze = freezer.froze;
	if (froze) {
		*ret_usec = freezer.froze_usec;
		*ret_usage = freezer.froze_usage_usec;
	}
	freezer.froze = false;
	/* Wake it only for a change: it sleeps on the target it has. */
	if (t != freezer.target_usec) {
		freezer.gen++;
		freezer.target_usec = t;
		pthread_cond_signal(&freezer.cond);
	}
	pthread_mutex_unlock(&freezer.lock);
	return froze;
}

static void freezer_stop(void)
{
	if (!freezer.running)
		return;
	pthread_mutex_lock(&freezer.lock);
	freezer.quit = true;
	pthread_cond_signal(&freezer.cond);
	pthread_mutex_unlock(&freezer.lock);
	pthread_join(freezer.thread, NULL);
	freezer.running = false;
}

static void duty_stop(struct manager *m)
{
	uint64_t t, u;

	/* A freeze it did stays: m->frozen learns of it. */
	if (freezer_sync(0, &t, &u))
		m->frozen = true;
	m->duty_timer = sd_event_source_disable_unref(m->duty_timer);
	m->duty_frozen = false;
}

/* The duty timer's wake-up should not wait behind other runnable tasks
 * either (the freezes are the helper's where it exists; the loop still
 * thaws and decides). A real-time priority for the loop itself would let a
 * bug in code that parses requests and writes files hog a CPU, so ask for a
 * short time slice instead (EEVDF, Linux 6.6+; sched_runtime is the slice
 * of a SCHED_OTHER task since 6.12): the same fair share and weight, but an
 * early deadline, so a wake-up preempts the running task sooner. Where the
 * kernel refuses it, nothing changes. The event loop's thread only, once. */
static void duty_short_slice(void)
{
	/* <linux/sched/types.h> clashes with <sched.h>; glibc 2.36 has no
	 * wrapper. The kernel's layout, version 1 (56 bytes): */
	struct {
		uint32_t size, sched_policy;
		uint64_t sched_flags;
		int32_t sched_nice;
		uint32_t sched_priority;
		uint64_t sched_runtime, sched_deadline, sched_period;
		uint32_t sched_util_min, sched_util_max;
	} a = {
		.size = sizeof(a),
		.sched_policy = SCHED_OTHER,
		.sched_nice = 0,
		.sched_runtime = 100 * 1000, /* ns: the kernel's smallest slice */
	};

	static bool done;

	if (done)
		return;
	done = true;
	errno = 0;
	a.sched_nice = getpriority(PRIO_PROCESS, 0);
	if (errno == 0 && syscall(SYS_sched_setattr, 0, &a, 0) < 0)
		log_debug("No short scheduler slice for the duty timer: %m");
}

static void duty_start(struct manager *m)
{
	uint64_t usage = 0;
	if (m->duty_timer)
		return;
	duty_short_slice();
	freezer_start(m);
	cg_cpu_usage_usec(m->cg_jobs, &usage);
	duty_init(&m->duty, m->config.burst_ppm, m->ncpus, now_mono_usec(), usage);
	m->duty_frozen = false;
	/* Accuracy 1 us: the default (250 ms) lets sd-event fire the timer
	 * anywhere in a quarter second to coalesce wake-ups, and every late
	 * freeze is CPU beyond the cap. Dispatched before other ready sources
	 * for the same reason. */
	if (sd_event_add_time(m->event, &m->duty_timer, CLOCK_MONOTONIC, now_mono_usec(), 1, on_duty, m) >= 0) {
		sd_event_source_set_description(m->duty_timer, "duty-cycle");
		sd_event_source_set_priority(m->duty_timer, SD_EVENT_PRIORITY_IMPORTANT);
		/* The first decision now, not on the next turn of the loop: the
		 * jobs were just started thawed and run at full speed until it. */
		on_duty(m->duty_timer, 0, m);
	}
}

/* The bucket's tokens at (now, usage), as budget_update would make them,
 * without updating it (the tick does that, and acts on exhaustion). */
static int64_t duty_bucket_tokens(const struct budget *b, uint64_t now, uint64_t usage)
{
	int64_t t = b->tokens_usec;

	if (now > b->last_now_usec)
		t += (int64_t)(budget_rate_usec_per_sec(b) * (now - b->last_now_usec) / USEC_PER_SEC);
	if (usage > b->last_usage_usec)
		t -= (int64_t)(usage - b->last_usage_usec);
	return t;
}

static int on_duty(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct manager *m = userdata;
	uint64_t usage = 0, now = now_mono_usec(), step_now, step_usage;
	bool frozen;

	cg_cpu_usage_usec(m->cg_jobs, &usage);
	step_now = now;
	step_usage = usage;
	/* The helper froze at the planned time: decide as if woken then, with
	 * what it saw (the spill and the lateness learned stay true). */
	if (freezer_sync(0, &step_now, &step_usage))
		m->frozen = true;
	duty_set_bucket(&m->duty, duty_bucket_tokens(&m->budget, step_now, step_usage),
			budget_rate_usec_per_sec(&m->budget));
	uint64_t next = duty_step(&m->duty, step_now, step_usage, &frozen);
	m->duty_frozen = frozen;
	apply_freeze(m, !policy_allows_harvest(m->policy.state) || frozen);
	if (!m->frozen && m->duty.planned_usec)
		freezer_sync(m->duty.planned_usec, &step_now, &step_usage);
	sd_event_source_set_time(s, next > now ? next : now + 1000);
	sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
	return 0;
}

static int on_policy_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	manager_evaluate(userdata, "timer");
	return 0;
}

void manager_evaluate(struct manager *m, const char *why)
{
	uint64_t now = now_mono_usec(), next = UINT64_MAX;
	enum policy_state old = m->policy.state;
	struct policy_inputs in = {
		.now_usec = now,
		.last_activity_usec = m->last_activity_usec,
		.logind_idle_known = m->logind_idle_known,
		.logind_idle = m->logind_idle,
		.foreground_cpu_ppm = m->foreground_ppm,
		.on_battery = m->on_battery,
		.temperature_mc = m->temperature_mc,
		.memory_pressure_ppm = m->memory_pressure_ppm,
		.paused_until_usec = m->paused_until_usec,
		.budget_exhausted = m->budget.exhausted,
	};

	if (policy_update(&m->policy, &m->config, &in, &next) > 0) {
		log_info("State %s -> %s: %s", policy_state_name(old), policy_state_name(m->policy.state),
			 m->policy.reason);
		sd_notifyf(0, "STATUS=%s: %s", policy_state_name(m->policy.state), m->policy.reason);
	}

	if (next != UINT64_MAX) {
		if (!m->policy_timer) {
			if (sd_event_add_time(m->event, &m->policy_timer, CLOCK_MONOTONIC, next, 0,
					      on_policy_timer, m) >= 0)
				sd_event_source_set_description(m->policy_timer, "policy-timer");
		} else {
			sd_event_source_set_time(m->policy_timer, next);
			sd_event_source_set_enabled(m->policy_timer, SD_EVENT_ONESHOT);
		}
	} else if (m->policy_timer)
		sd_event_source_set_enabled(m->policy_timer, SD_EVENT_OFF);

	gpu_jobs_evaluate(m->gpu);
	bool allow = policy_allows_harvest(m->policy.state);
	if (!allow) {
		if (m->duty_timer)
			duty_stop(m);
		apply_freeze(m, true);
		pool_link_kick(m->pool);    /* results and renewals still go; no fetch */
		return;
	}
	/* Thaw before starting jobs: a process cloned into a frozen cgroup
	 * would stop before its exec, and the spawn waits for that exec. */
	apply_freeze(m, m->duty_frozen);
	if (!m->frozen) {
		int r;
		do {
			r = jobs_start_next(m->jobs, &m->limits, m->config.max_jobs);
			if (r < 0)
				log_warning_errno(r, "A job failed to start");
		} while (r != 0);
	}
	if (!m->have_cpu && jobs_count(m->jobs, JOB_RUNNING) > 0)
		duty_start(m);
	else if (m->duty_timer)
		duty_stop(m);
	apply_freeze(m, m->duty_frozen);
	pool_link_kick(m->pool);
}

static void on_activity(void *userdata, uint64_t event_ns, enum sense_activity kind)
{
	struct manager *m = userdata;
	/* Jobs that run under the policy (even in a duty-cycle pause) are what
	 * an input must stop: measure the reaction for them. */
	bool harvesting = policy_allows_harvest(m->policy.state) && jobs_count(m->jobs, JOB_RUNNING) > 0;

	switch (kind) {
	case SENSE_ACT_LOGIND_IDLE:
		m->logind_idle_known = true;
		m->logind_idle = true;
		manager_evaluate(m, "logind idle");
		return;
	case SENSE_ACT_LOGIND_ACTIVE:
		m->logind_idle_known = true;
		m->logind_idle = false;
		break;
	default:
		break;
	}
	m->last_activity_usec = event_ns / NSEC_PER_USEC;
	manager_evaluate(m, "activity");
	if (harvesting && m->frozen) {
		/* A measurement still waiting for cgroup.events after a second
		 * has lost its notification: drop it rather than let it swallow
		 * this input and report the two as one long reaction. */
		if (m->pending_input_ns && event_ns - m->pending_input_ns > NSEC_PER_SEC) {
			m->pending_input_ns = 0;
			m->events_source = sd_event_source_disable_unref(m->events_source);
		}
		if (!m->pending_input_ns)
			start_reaction(m, event_ns);
	}
}

/* --- the tick: budget, readings, ledger ----------------------------------------------- */

static void read_host(struct manager *m)
{
	struct sense_times t;
	struct psi psi;

	if (m->sense && sense_read_times(m->sense, &t) >= 0) {
		uint64_t idle = t.idle_ns - m->last_times.idle_ns;
		uint64_t harv = t.harvest_ns - m->last_times.harvest_ns;
		uint64_t fg = t.foreground_ns - m->last_times.foreground_ns;
		uint64_t all = idle + harv + fg;
		if (m->last_times.idle_ns + m->last_times.harvest_ns + m->last_times.foreground_ns > 0 && all > 0) {
			uint32_t sample = (uint32_t)(fg * (uint64_t)PPM_ONE / all);
			m->foreground_ppm = (uint32_t)(((uint64_t)m->foreground_ppm * (FOREGROUND_EWMA_DEN - FOREGROUND_EWMA_NUM) +
							(uint64_t)sample * FOREGROUND_EWMA_NUM) / FOREGROUND_EWMA_DEN);
		}
		m->last_times = t;
	}
	if (psi_read("/proc/pressure/memory", &psi) >= 0)
		m->memory_pressure_ppm = (uint32_t)(psi.some.avg10 * 10000.0);
	if (host_max_temperature("/sys/class/thermal", &m->temperature_mc) < 0)
		m->temperature_mc = INT32_MIN;
	m->on_battery = host_on_battery("/sys/class/power_supply") > 0;
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct manager *m = userdata;
	uint64_t usage, now = now_mono_usec();

	if (cg_cpu_usage_usec(m->cg_jobs, &usage) >= 0)
		budget_update(&m->budget, now, usage);
	read_host(m);
	if (gpu_jobs_faulted(m->gpu) && jobs_count(m->jobs, JOB_RUNNING) == 0) {
		log_notice("Exiting for a restart (status %d): a GPU kernel faulted, and only a new process can use "
			   "that device again; no job is running, so none loses its progress", HARVESTERD_EXIT_RESTART);
		sd_notify(0, "STOPPING=1");
		return sd_event_exit(m->event, HARVESTERD_EXIT_RESTART);
	}
	int gpu_save = gpu_jobs_tick(m->gpu);
	manager_evaluate(m, "tick");
	/* Save while jobs spend (at most LEDGER_SAVE_USEC of spending can be
	 * unrecorded, and that is charged at start-up); an idle bucket only
	 * fills, so a stale ledger errs low and rarely needs writing. */
	uint64_t since = now - m->last_ledger_save_usec;
	if (gpu_save > 1 ||
	    (since >= LEDGER_SAVE_USEC && (m->budget.spent_total_usec != m->last_saved_spent_usec || gpu_save)) ||
	    since >= LEDGER_IDLE_SAVE_USEC)
		manager_save_ledger(m);

	sd_event_source_set_time(s, usec + TICK_USEC);
	sd_event_source_set_enabled(s, SD_EVENT_ON);
	return 0;
}

static void on_job_changed(void *userdata, struct job *j)
{
	struct manager *m = userdata;
	if (j->state == JOB_FAILED)
		log_warning("Job %" PRIu64 " failed: %s", j->id, j->reason ? j->reason : "unknown");
	else
		log_info("Job %" PRIu64 " %s", j->id, job_state_name(j->state));
	if (j->pool_task)
		pool_link_job_changed(m->pool, j);
	manager_evaluate(m, "job finished");
}

/* --- operator ------------------------------------------------------------------ */

/* The operator's pause is kept in STATE/paused ("resume", or the
 * CLOCK_REALTIME usec it ends), so a restart or an upgrade keeps it. */
static void pause_path(const struct manager *m, char *buf, size_t len)
{
	snprintf(buf, len, "%s/paused", m->state_dir);
}

static void manager_load_pause(struct manager *m)
{
	char path[PATH_MAX], v[32] = "";
	pause_path(m, path, sizeof(path));
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	if (!fgets(v, sizeof(v), f))
		v[0] = 0;
	fclose(f);
	v[strcspn(v, "\n")] = 0;
	uint64_t until, now = now_realtime_usec();
	if (strcmp(v, "resume") == 0)
		m->paused_until_usec = UINT64_MAX;
	else if (sscanf(v, "%" SCNu64, &until) == 1 && until > now)
		m->paused_until_usec = now_mono_usec() + (until - now);
	else
		unlink(path);
	if (m->paused_until_usec)
		log_info("Paused by the operator before the restart: staying paused");
}

static void manager_save_pause(struct manager *m, uint64_t for_usec)
{
	char path[PATH_MAX], text[32];
	int r;

	pause_path(m, path, sizeof(path));
	if (!m->paused_until_usec) {
		if (unlink(path) < 0 && errno != ENOENT)
			log_warning_errno(negative_errno(), "Cannot remove %s", path);
		else
			(void)fsync_dir(m->state_dir);
		return;
	}
	if (for_usec)
		snprintf(text, sizeof(text), "%" PRIu64 "\n", now_realtime_usec() + for_usec);
	else
		snprintf(text, sizeof(text), "resume\n");
	r = write_file_atomic(path, &(struct iovec){ .iov_base = text, .iov_len = strlen(text) }, 1, 0600);
	if (r < 0)
		log_warning_errno(r, "Cannot save the pause to %s", path);
}

int manager_pause(struct manager *m, uint64_t for_usec)
{
	m->paused_until_usec = for_usec ? now_mono_usec() + for_usec : UINT64_MAX;
	manager_save_pause(m, for_usec);
	manager_evaluate(m, "pause");
	return 0;
}

int manager_resume(struct manager *m)
{
	m->paused_until_usec = 0;
	manager_save_pause(m, 0);
	manager_evaluate(m, "resume");
	return 0;
}

static int manager_reload(struct manager *m)
{
	struct config c;
	int r = config_load(m->config_path, NULL, &c, on_config_error, NULL);
	if (r < 0)
		return log_error_errno(r, "Reload: %s has errors; keeping the running configuration", m->config_path);
	config_free(&m->config);
	m->config = c;
	if (manager_resolve_user(m) < 0)
		log_warning("Reload: jobs keep running as uid %u", (unsigned)m->limits.uid);
	budget_reconfigure(&m->budget, c.cpu_ppm, c.burst_ppm, c.window_usec);
	gpu_jobs_reconfigure(m->gpu);
	manager_apply_cap(m);
	if (m->duty_timer) {
		duty_stop(m);
	}
	log_info("Reloaded %s", m->config_path);
	manager_evaluate(m, "reload");
	return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct manager *m = userdata;

	if (si->ssi_signo == SIGHUP) {
		sd_notify(0, "RELOADING=1");
		manager_reload(m);
		sd_notify(0, "READY=1");
		return 0;
	}
	log_info("Received %s, stopping", strsignal((int)si->ssi_signo));
	sd_notify(0, "STOPPING=1");
	return sd_event_exit(sd_event_source_get_event(s), 0);
}

/* --- status --------------------------------------------------------------------- */

static json_t *usec_or_null(int64_t v)
{
	return v < 0 ? json_null() : json_integer(v);
}

json_t *manager_budget_json(struct manager *m)
{
	struct budget *b = &m->budget;
	return json_pack("{s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:b, s:I}",
			 "cpu_ppm", (int)b->cpu_ppm, "burst_ppm", (int)b->burst_ppm,
			 "window_usec", (json_int_t)m->config.window_usec,
			 "capacity_usec", (json_int_t)b->capacity_usec,
			 "tokens_usec", (json_int_t)b->tokens_usec,
			 "rate_usec_per_sec", (json_int_t)budget_rate_usec_per_sec(b),
			 "spent_total_usec", (json_int_t)b->spent_total_usec,
			 "exhausted", b->exhausted,
			 "resume_in_usec", (json_int_t)budget_usec_until_resume(b));
}

json_t *manager_status_json(struct manager *m)
{
	uint64_t now = now_mono_usec();
	struct sense_times t = { 0 };
	struct sense_intrusion in;
	bool frozen = m->frozen;
	json_t *intrusion = json_null(), *samples = json_array();

	if (m->sense)
		sense_read_times(m->sense, &t);
	if (m->sense && sense_read_intrusion(m->sense, &in) >= 0)
		intrusion = json_pack("{s:I, s:I, s:I}", "total_usec", (json_int_t)(in.total_ns / 1000),
				      "count", (json_int_t)in.count, "max_usec", (json_int_t)(in.max_ns / 1000));
	cg_is_frozen(m->cg_jobs, &frozen);

	unsigned n = m->n_reactions < REACTION_SAMPLES ? m->n_reactions : REACTION_SAMPLES;
	for (unsigned i = 0; i < n; i++) {
		struct reaction *rc = &m->reactions[(m->n_reactions - n + i) % REACTION_SAMPLES];
		json_array_append_new(samples, json_pack("[o, I]", usec_or_null(rc->to_last_run_usec),
							 (json_int_t)rc->to_frozen_usec));
	}
	struct reaction *last = m->n_reactions ? &m->reactions[(m->n_reactions - 1) % REACTION_SAMPLES] : NULL;

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	uint64_t cpu = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * USEC_PER_SEC +
		       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
	long rss_pages = 0;
	FILE *f = fopen("/proc/self/statm", "re");
	if (f) {
		if (fscanf(f, "%*s %ld", &rss_pages) != 1)
			rss_pages = 0;
		fclose(f);
	}

	const char *fallback = m->sense ? sense_fallback_reason(m->sense) : "the probe did not start";
	json_t *o = json_pack("{s:s, s:i, s:s, s:s, s:I, s:o, s:s, s:s, s:s?, s:s, s:s, s:b, s:o,"
			 " s:o, s:{s:i, s:i, s:i, s:i, s:i}, s:{s:I, s:I, s:I}, s:o,"
			 " s:{s:i, s:o, s:o, s:o}, s:{s:I, s:I}, s:i}",
			 "version", HARVESTER_VERSION, "pid", (int)getpid(),
			 "state", policy_state_name(m->policy.state), "reason", m->policy.reason,
			 "state_for_usec", (json_int_t)(now - m->policy.since_usec),
			 "last_activity_ago_usec",
			 m->last_activity_usec ? json_integer((json_int_t)(now - m->last_activity_usec)) : json_null(),
			 "input_source", m->sense ? sense_input_source(m->sense) : "none",
			 "time_source", m->sense ? sense_time_source(m->sense) : "none",
			 "fallback_reason", fallback,
			 "cap_mechanism", m->have_cpu ? "cpu.max" : "freezer duty cycle",
			 "cgroup", m->cg_jobs, "frozen", frozen,
			 "paused_until_usec",
			 m->paused_until_usec == UINT64_MAX ? json_string("resume") :
			 m->paused_until_usec > now ? json_integer((json_int_t)(m->paused_until_usec - now)) : json_null(),
			 "budget", manager_budget_json(m),
			 "jobs", "queued", (int)jobs_count(m->jobs, JOB_QUEUED),
			 "running", (int)jobs_count(m->jobs, JOB_RUNNING), "done", (int)jobs_count(m->jobs, JOB_DONE),
			 "failed", (int)jobs_count(m->jobs, JOB_FAILED),
			 "cancelled", (int)jobs_count(m->jobs, JOB_CANCELLED),
			 "times", "idle_ns", (json_int_t)t.idle_ns, "harvest_ns", (json_int_t)t.harvest_ns,
			 "foreground_ns", (json_int_t)t.foreground_ns,
			 "intrusion", intrusion,
			 "reaction", "count", (int)m->n_reactions,
			 "last_to_last_run_usec", last ? usec_or_null(last->to_last_run_usec) : json_null(),
			 "last_to_frozen_usec", last ? json_integer(last->to_frozen_usec) : json_null(),
			 "samples", samples,
			 "daemon", "cpu_usec", (json_int_t)cpu,
			 "rss_bytes", (json_int_t)rss_pages * (json_int_t)sysconf(_SC_PAGESIZE),
			 "foreground_cpu_ppm", (int)m->foreground_ppm);
	if (o) {
		json_object_set_new(o, "pool", m->pool ? pool_link_status_json(m->pool) : json_null());
		json_object_set_new(o, "gpu", gpu_jobs_status_json(m->gpu));
	}
	return o;
}

/* --- run ------------------------------------------------------------------------- */

static int mkdir_mode(const char *path, mode_t mode)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return negative_errno();
	return 0;
}

int manager_run(struct manager *m)
{
	sigset_t ss;
	int r;

	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGHUP);
	sigaddset(&ss, SIGCHLD);
	sigprocmask(SIG_BLOCK, &ss, NULL);

	if ((r = manager_resolve_user(m)) < 0)
		return r;
	if ((r = mkdir_mode(m->state_dir, 0755)) < 0)
		return log_error_errno(r, "Cannot create state folder %s", m->state_dir);
	if ((r = mkdir_mode(m->runtime_dir, 0755)) < 0)
		return log_error_errno(r, "Cannot create runtime folder %s", m->runtime_dir);
	if ((r = sd_event_default(&m->event)) < 0)
		return log_error_errno(r, "Cannot create the event loop");
	if ((r = manager_setup_cgroups(m)) < 0)
		return r;
	/* Before the ledger load: the manager saves both buckets there. */
	if ((r = gpu_jobs_new(m, &m->gpu)) < 0)
		return log_error_errno(r, "Cannot set up the GPUs");
	if ((r = manager_load_budget(m)) < 0)
		return r;
	manager_apply_cap(m);
	policy_init(&m->policy, now_mono_usec());
	manager_load_pause(m);
	if ((r = jobs_open(m->event, m->state_dir, m->cg_jobs, on_job_changed, m, &m->jobs)) < 0)
		return log_error_errno(r, "Cannot open the job spool in %s", m->state_dir);
	gpu_jobs_start(m->gpu);

	struct sense_opts so = {
		.harvest_cgroup = m->cg_jobs,
		.no_bpf = m->no_bpf || !m->config.use_bpf,
		.input_dir = m->input_dir,
		.tty_dir = m->tty_dir,
	};
	r = sense_new(m->event, &so, on_activity, m, &m->sense);
	if (r < 0)
		log_error_errno(r, "The probe did not start; no input is seen");
	else {
		const char *why = sense_fallback_reason(m->sense);
		log_info("Input from %s, time split from %s%s%s", sense_input_source(m->sense),
			 sense_time_source(m->sense), why ? "; fallback because " : "", why ? why : "");
	}

	if (m->config.pool_url && (r = pool_link_new(m, &m->pool)) < 0)
		return r;
	if ((r = control_listen(m)) < 0)
		return r;
	sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m);
	sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m);
	sd_event_add_signal(m->event, NULL, SIGHUP, on_signal, m);
	if ((r = sd_event_add_time_relative(m->event, &m->tick, CLOCK_MONOTONIC, TICK_USEC, 0, on_tick, m)) < 0)
		return log_error_errno(r, "Cannot add the tick timer");
	sd_event_source_set_description(m->tick, "tick");
	sd_event_set_watchdog(m->event, true);

	read_host(m);
	manager_evaluate(m, "start");
	log_info("Started: state %s (%s); cap by %s", policy_state_name(m->policy.state), m->policy.reason,
		 m->have_cpu ? "cpu.max" : "freezer duty cycle");
	sd_notifyf(0, "READY=1\nSTATUS=%s: %s", policy_state_name(m->policy.state), m->policy.reason);

	r = sd_event_loop(m->event);

	/* Stop: nothing lost. Running jobs are killed and queued again. */
	jobs_requeue_all(m->jobs);
	pool_link_stop(m->pool);
	gpu_jobs_stop(m->gpu);
	uint64_t usage;
	if (cg_cpu_usage_usec(m->cg_jobs, &usage) >= 0)
		budget_update(&m->budget, now_mono_usec(), usage);
	manager_save_ledger(m);
	cg_freeze(m->cg_jobs, false);
	return r;
}

struct manager *manager_free(struct manager *m)
{
	if (!m)
		return NULL;
	m->sense = m->sense ? sense_free(m->sense) : NULL;
	m->pool = pool_link_free(m->pool);
	m->gpu = gpu_jobs_free(m->gpu);
	m->jobs = m->jobs ? jobs_free(m->jobs) : NULL;
	sd_event_source_disable_unref(m->tick);
	sd_event_source_disable_unref(m->policy_timer);
	sd_event_source_disable_unref(m->duty_timer);
	freezer_stop();
	sd_event_source_disable_unref(m->events_source);
	sd_event_source_disable_unref(m->control_source);
	if (m->control_fd >= 0)
		close(m->control_fd);
	sd_event_unref(m->event);
	config_free(&m->config);
	free(m->config_path);
	free(m->state_dir);
	free(m->runtime_dir);
	free(m->input_dir);
	free(m->tty_dir);
	free(m->cg_base);
	free(m->cg_supervisor);
	free(m->cg_jobs);
	free(m);
	return NULL;
}
