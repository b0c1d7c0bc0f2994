/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host test of sandbox_spawn, as root: jobs run as `nobody` in a test cgroup
 * and report what they can see and do; the test also looks at them from the
 * outside (cgroup.procs, scheduler policy, namespaces). The program re-runs
 * itself as the job (`host-sandbox job MODE ...`) for the checks a shell
 * cannot make (socket errno, seccomp).
 */
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <ftw.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "harvester/macro.h"
#include "harvester/sandbox.h"

static int failures;
static char cg_root[256], cg_jobs[320], cg_j1[384], cg_rel[64];
static char state_dir[128], scratch_dir[192], helper[256];
static uid_t nobody_uid;
static gid_t nobody_gid;

static void check(bool ok, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	printf("%s ", ok ? "ok  " : "FAIL");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	fflush(stdout);
	if (!ok)
		failures++;
}

/* --- the job side ------------------------------------------------------------ */

static void say_errno(const char *what, long r) {
	printf("%s=%s\n", what, r >= 0 ? "ok" : strerrorname_np(errno));
}

static void *thread_fn(void *arg) { return arg; }

static int job_main(int argc, char **argv) {
	const char *mode = argv[2];

	if (strcmp(mode, "net") == 0) {
		int port = atoi(argv[3]);
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		say_errno("inet", fd);
		if (fd >= 0) {
			struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
			                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
			say_errno("connect", connect(fd, (struct sockaddr *) &sa, sizeof sa));
		} else {
			say_errno("connect", -1);
		}
		say_errno("inet6", socket(AF_INET6, SOCK_DGRAM, 0));
		say_errno("packet", socket(AF_PACKET, SOCK_RAW, 0));
		say_errno("netlink", socket(AF_NETLINK, SOCK_RAW, 0));
		say_errno("unix", socket(AF_UNIX, SOCK_STREAM, 0));
		/* Interfaces the job can see, from its network namespace. */
		FILE *f = fopen("/proc/net/dev", "re");
		char line[512];
		printf("ifaces=");
		while (f && fgets(line, sizeof line, f)) {
			char *colon = strchr(line, ':');
			if (!colon || strchr(line, '|'))
				continue;
			*colon = '\0';
			printf("%s,", line + strspn(line, " "));
		}
		printf("\n");
	} else if (strcmp(mode, "seccomp") == 0) {
		/* Arguments are chosen so the kernel itself would answer something
		 * other than EPERM (EFAULT, EINVAL, success) where it can. */
		long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
		if (r == 0)
			_exit(0);
		say_errno("clone_newuser", r);
		say_errno("clone3", syscall(SYS_clone3, NULL, 0));
		/* Not TRACEME: were it allowed, this job would stop on its next
		 * signal waiting for a tracer that is busy reading its output. */
		say_errno("ptrace", ptrace(PTRACE_PEEKDATA, getpid(), NULL, NULL));
		say_errno("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
		say_errno("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
		say_errno("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
		say_errno("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0));
		say_errno("userfaultfd", syscall(SYS_userfaultfd, ~0));
		say_errno("bpf", syscall(SYS_bpf, -1, NULL, 0));
		say_errno("setns", syscall(SYS_setns, -1, 0));
		say_errno("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/", 0));
		say_errno("socketpair", socketpair(AF_UNIX, SOCK_STREAM, 0, (int[2]) { 0 }));
		pid_t pid = fork();
		if (pid == 0)
			_exit(0);
		int st = -1;
		if (pid > 0)
			waitpid(pid, &st, 0);
		say_errno("fork", pid > 0 && st == 0 ? 0 : -1);
		pthread_t t;
		errno = pthread_create(&t, NULL, thread_fn, NULL);
		if (errno == 0)
			pthread_join(t, NULL);
		say_errno("pthread", errno == 0 ? 0 : -1);
		/* Last: were it allowed, the job would be in a new user namespace. */
		say_errno("unshare_user", unshare(CLONE_NEWUSER));
	} else if (strcmp(mode, "write") == 0) {
		for (int i = 3; i < argc; i++) {
			char p[512];
			snprintf(p, sizeof p, "%s/sbx-probe-%d", argv[i], i);
			int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			printf("%s=%s\n", argv[i], fd >= 0 ? "ok" : strerrorname_np(errno));
			if (fd >= 0)
				close(fd);
		}
	} else {
		return 2;
	}
	fflush(stdout);
	_exit(0); /* no LeakSanitizer pass: it needs ptrace, which is denied */
}

/* --- the test side ----------------------------------------------------------- */

/* Output of one job and how it ended. */
struct result {
	int r;
	const char *step;
	char out[8192], err[2048];
	int status;
};

static void read_all(int fd, char *buf, size_t size) {
	size_t got = 0;
	ssize_t n;
	while (got + 1 < size && (n = read(fd, buf + got, size - 1 - got)) > 0)
		got += n;
	buf[got] = '\0';
}

static struct sandbox_opts base_opts(char *const *argv) {
	return (struct sandbox_opts) {
		.argv = argv, .uid = nobody_uid, .gid = nobody_gid,
		.cgroup = cg_j1, .scratch_dir = scratch_dir,
	};
}

static char *const helper_env[] = {
	"PATH=/usr/bin:/bin", "LANG=C.UTF-8",
	"ASAN_OPTIONS=detect_leaks=0", "UBSAN_OPTIONS=print_stacktrace=1", NULL,
};

/* Runs a job to completion, collecting stdout and stderr separately. */
static void run_job(struct sandbox_opts o, struct result *res) {
	int out[2], err[2];
	pid_t pid;
	int pidfd = -1;

	memset(res, 0, sizeof *res);
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
		abort();
	o.stdout_fd = out[1];
	o.stderr_fd = err[1];
	res->r = sandbox_spawn(&o, &pid, &pidfd, &res->step);
	close(out[1]);
	close(err[1]);
	if (res->r == 0) {
		read_all(out[0], res->out, sizeof res->out);
		read_all(err[0], res->err, sizeof res->err);
		waitpid(pid, &res->status, 0);
		close(pidfd);
	}
	close(out[0]);
	close(err[0]);
}

static bool has_line(const char *out, const char *line) {
	size_t n = strlen(line);
	for (const char *p = out; (p = strstr(p, line)); p++)
		if ((p == out || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

/* The value of a "Key:\tvalue" line of /proc/PID/status, whitespace trimmed. */
static const char *status_field(const char *out, const char *key, char *buf, size_t size) {
	char k[64];
	snprintf(k, sizeof k, "\n%s:", key);
	const char *p = strstr(out, k);
	if (!p)
		return "(missing)";
	p += strlen(k);
	p += strspn(p, " \t");
	size_t n = strcspn(p, "\n");
	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	snprintf(buf, size, "%.*s", (int) n, p);
	return buf;
}

static bool file_exists(const char *dir, const char *name) {
	char p[512];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	return access(p, F_OK) == 0;
}

static void test_refusals(void) {
	struct result res;
	struct sandbox_opts o;

	o = base_opts((char *[]) { "true", NULL });
	o.uid = 0;
	run_job(o, &res);
	check(res.r == -EPERM && res.step && strcmp(res.step, "uid") == 0,
	      "uid 0 refused: r=%d step=%s", res.r, res.step);
	o = base_opts((char *[]) { "true", NULL });
	o.gid = 0;
	run_job(o, &res);
	check(res.r == -EPERM, "gid 0 refused: r=%d step=%s", res.r, res.step);

	o = base_opts((char *[]) { "harvester-no-such-program", NULL });
	run_job(o, &res);
	check(res.r == -ENOENT && res.step && strcmp(res.step, "execve") == 0,
	      "missing program (PATH lookup): r=%d step=%s", res.r, res.step);
	o = base_opts((char *[]) { "/nonexistent/prog", NULL });
	run_job(o, &res);
	check(res.r == -ENOENT && res.step && strcmp(res.step, "execve") == 0,
	      "missing program (absolute): r=%d step=%s", res.r, res.step);

	o = base_opts((char *[]) { "true", NULL });
	o.scratch_dir = "/nonexistent/scratch";
	run_job(o, &res);
	check(res.r == -ENOENT && res.step && strstr(res.step, "scratch"),
	      "missing scratch dir is reported from the child: r=%d step=%s", res.r, res.step);

	o = base_opts((char *[]) { "true", NULL });
	o.cgroup = "/nonexistent/cgroup";
	run_job(o, &res);
	check(res.r == -ENOENT, "missing cgroup: r=%d step=%s", res.r, res.step);
}

static void test_identity(void) {
	struct result res;
	char buf[128], want[128];

	run_job(base_opts((char *[]) { "cat", "/proc/self/status", "/proc/self/cgroup", NULL }), &res);
	check(res.r == 0 && WIFEXITED(res.status) && WEXITSTATUS(res.status) == 0,
	      "status job ran: r=%d step=%s status=%#x", res.r, res.step, res.status);
	snprintf(want, sizeof want, "%u\t%u\t%u\t%u", nobody_uid, nobody_uid, nobody_uid, nobody_uid);
	check(strcmp(status_field(res.out, "Uid", buf, sizeof buf), want) == 0, "Uid: %s", buf);
	snprintf(want, sizeof want, "%u\t%u\t%u\t%u", nobody_gid, nobody_gid, nobody_gid, nobody_gid);
	check(strcmp(status_field(res.out, "Gid", buf, sizeof buf), want) == 0, "Gid: %s", buf);
	check(strcmp(status_field(res.out, "Groups", buf, sizeof buf), "") == 0,
	      "no supplementary groups: '%s'", buf);
	check(strcmp(status_field(res.out, "NoNewPrivs", buf, sizeof buf), "1") == 0, "NoNewPrivs: %s", buf);
	check(strcmp(status_field(res.out, "Seccomp", buf, sizeof buf), "2") == 0, "Seccomp: %s", buf);
	check(strcmp(status_field(res.out, "CapEff", buf, sizeof buf), "0000000000000000") == 0, "CapEff: %s", buf);
	check(strcmp(status_field(res.out, "CapPrm", buf, sizeof buf), "0000000000000000") == 0, "CapPrm: %s", buf);
	snprintf(want, sizeof want, "0::%s", cg_rel);
	check(has_line(res.out, want), "job's /proc/self/cgroup has '%s'", want);
}

static void test_env_fds(void) {
	struct result res;
	char want[256];

	run_job(base_opts((char *[]) { "env", NULL }), &res);
	snprintf(want, sizeof want, "HOME=%s", scratch_dir);
	int lines = 0;
	for (const char *p = res.out; (p = strchr(p, '\n')); p++)
		lines++;
	check(res.r == 0 && lines == 4 && has_line(res.out, "PATH=/usr/local/bin:/usr/bin:/bin") &&
	      has_line(res.out, want) && has_line(res.out, "TMPDIR=/tmp") && has_line(res.out, "LANG=C.UTF-8"),
	      "default environment is exactly PATH, HOME=scratch, TMPDIR, LANG:\n%s", res.out);

	/* A descriptor the caller forgot to mark CLOEXEC must not reach the job. */
	int leak = dup2(0, 100);
	run_job(base_opts((char *[]) { "/bin/sh", "-c",
		"ls /proc/self/fd | tr '\\n' ' '; echo; readlink /proc/self/fd/0; ulimit -c; pwd; echo to-stderr >&2",
		NULL }), &res);
	if (leak >= 0)
		close(leak);
	check(res.r == 0 && has_line(res.out, "0 1 2 3 "), "only fds 0-2 open (3 is ls's own): '%.40s'", res.out);
	check(has_line(res.out, "/dev/null"), "stdin is /dev/null");
	check(has_line(res.out, "0"), "RLIMIT_CORE is 0");
	check(has_line(res.out, scratch_dir), "cwd is the scratch dir");
	check(strcmp(res.err, "to-stderr\n") == 0 && !strstr(res.out, "to-stderr"),
	      "stderr lands in stderr_fd, stdout in stdout_fd: err='%s'", res.err);
}

static void ns_ino(pid_t pid, const char *ns, char *buf, size_t size) {
	char p[64];
	snprintf(p, sizeof p, "/proc/%d/ns/%s", (int) pid, ns);
	ssize_t n = readlink(p, buf, size - 1);
	buf[n < 0 ? 0 : n] = '\0';
}

static bool cgroup_has_pid(const char *cg, pid_t pid) {
	char p[512], line[64];
	snprintf(p, sizeof p, "%s/cgroup.procs", cg);
	_cleanup_fclose_ FILE *f = fopen(p, "re");
	while (f && fgets(line, sizeof line, f))
		if (atoi(line) == pid)
			return true;
	return false;
}

/* A sleeping job seen from outside: cgroup, scheduler, namespaces, signals. */
static void test_sleeper(bool idle) {
	struct sandbox_opts o = base_opts((char *[]) { "sleep", "30", NULL });
	const char *step = NULL;
	pid_t pid;
	int pidfd = -1, status = 0;
	sigset_t term, old;

	o.stdout_fd = o.stderr_fd = -1;
	o.sched_idle = idle;
	/* The daemon blocks SIGTERM (sd-event) and may ignore signals; a job
	 * must inherit neither, both survive execve. */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_BLOCK, &term, &old);
	signal(SIGTERM, SIG_IGN);
	int r = sandbox_spawn(&o, &pid, &pidfd, &step);
	signal(SIGTERM, SIG_DFL);
	sigprocmask(SIG_SETMASK, &old, NULL);
	check(r == 0 && pidfd >= 0, "sleeper (sched_idle=%d) spawned: r=%d step=%s pidfd=%d", idle, r, step, pidfd);
	if (r < 0)
		return;

	check(cgroup_has_pid(cg_j1, pid), "pid %d is in %s/cgroup.procs", (int) pid, cg_j1);
	int policy = sched_getscheduler(pid);
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, pid);
	if (idle)
		check(policy == SCHED_IDLE && nice == 19, "policy SCHED_IDLE, nice 19: policy=%d nice=%d", policy, nice);
	else
		check(policy == SCHED_OTHER, "policy SCHED_OTHER without sched_idle: policy=%d nice=%d", policy, nice);

	if (idle) {
		static const char *const own[] = { "net", "mnt", "ipc", "uts" };
		for (size_t i = 0; i < ELEMENTSOF(own); i++) {
			char mine[64], its[64];
			ns_ino(getpid(), own[i], mine, sizeof mine);
			ns_ino(pid, own[i], its, sizeof its);
			check(its[0] && strcmp(mine, its) != 0, "own %s namespace: %s vs %s", own[i], its, mine);
		}
	}

	/* The daemon's blocked and ignored signals must not reach the job. It
	 * is PID 1 of its own PID namespace, where signals without a handler
	 * are not delivered, so read the masks instead of sending SIGTERM. */
	char p[64], buf[4096], v[64];
	snprintf(p, sizeof p, "/proc/%d/status", (int) pid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	const char *blk = status_field(buf, "SigBlk", v, sizeof v);
	check(blk && strtoull(blk, NULL, 16) == 0, "job blocks no signal: SigBlk=%s", blk ? blk : "?");
	const char *ign = status_field(buf, "SigIgn", v, sizeof v);
	check(ign && strtoull(ign, NULL, 16) == 0, "job ignores no signal: SigIgn=%s", ign ? ign : "?");
	const char *nspid = status_field(buf, "NSpid", v, sizeof v);
	int outer = 0, inner = 0;
	check(nspid && sscanf(nspid, "%d %d", &outer, &inner) == 2 && outer == pid && inner == 1,
	      "job is PID 1 of its own PID namespace: NSpid=%s", nspid ? nspid : "?");

	r = (int) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
	waitpid(pid, &status, 0);
	check(r == 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
	      "SIGKILL through the pidfd ends it: status=%#x", status);
	close(pidfd);
}

static void test_filesystem(void) {
	struct result res;
	char *argv[] = { helper, "job", "write",
		"/etc", "/var/tmp", "/root", state_dir, "/usr/lib",   /* 3..7: read-only */
		".", "/tmp", "/dev/shm", scratch_dir,                  /* 8..11: writable */
		NULL };
	struct sandbox_opts o = base_opts(argv);
	char want[256];

	o.envp = helper_env;
	run_job(o, &res);
	check(res.r == 0 && WIFEXITED(res.status) && WEXITSTATUS(res.status) == 0,
	      "write job ran: r=%d step=%s status=%#x %s", res.r, res.step, res.status, res.err);
	printf("%s", res.out);
	check(has_line(res.out, "/etc=EROFS") || has_line(res.out, "/etc=EACCES"), "/etc not writable");
	check(has_line(res.out, "/root=EROFS") || has_line(res.out, "/root=EACCES"), "/root not writable");
	/* These two are writable for nobody by their modes: only the mount stops it. */
	check(has_line(res.out, "/var/tmp=EROFS"), "/var/tmp read-only");
	snprintf(want, sizeof want, "%s=EROFS", state_dir);
	check(has_line(res.out, want), "state dir (owned by nobody) read-only");
	check(has_line(res.out, "/usr/lib=EROFS") || has_line(res.out, "/usr/lib=EACCES"), "/usr/lib not writable");
	check(has_line(res.out, ".=ok") && file_exists(scratch_dir, "sbx-probe-8"), "cwd writable, file in scratch on host");
	check(has_line(res.out, "/tmp=ok") && file_exists(scratch_dir, "sbx-probe-9"), "/tmp writable, file in scratch on host");
	snprintf(want, sizeof want, "%s=ok", scratch_dir);
	check(has_line(res.out, want) && file_exists(scratch_dir, "sbx-probe-11"), "$HOME (scratch path) writable");
	check(has_line(res.out, "/dev/shm=ok") && !file_exists("/dev/shm", "sbx-probe-10"),
	      "/dev/shm writable and private");
	check(!file_exists("/var/tmp", "sbx-probe-4") && !file_exists(state_dir, "sbx-probe-6"),
	      "nothing written outside scratch on host");

	run_job(base_opts((char *[]) { "/bin/sh", "-c",
		"echo home=$(ls -A /home | wc -l); echo run=$(ls -A /run | wc -l); "
		"test -e /proc/1 && echo proc1=visible || echo proc1=hidden; test -r /proc/self/status && echo procself=ok",
		NULL }), &res);
	check(has_line(res.out, "home=0") && has_line(res.out, "run=0"), "/home and /run are empty: %s", res.out);
	check(has_line(res.out, "proc1=hidden") || has_line(res.out, "proc1=visible"), "/proc readable: %s", res.out);
	check(has_line(res.out, "procself=ok"), "/proc/self readable in the job");

	/* Its own PID namespace: the job is PID 1, sees only its processes,
	 * and a background child it leaves behind dies with it. */
	run_job(base_opts((char *[]) { "/bin/sh", "-c",
		"echo pid=$$; sleep 300 & echo procs=$(ls -d /proc/[0-9]* | wc -l); "
		"echo init=$(cat /proc/1/comm); exit 0",
		NULL }), &res);
	check(has_line(res.out, "pid=1"), "the job is PID 1 in its namespace: %s", res.out);
	/* sh, sleep, and the ls of the command substitution (and its subshell). */
	int procs = -1;
	const char *pr = strstr(res.out, "procs=");
	if (pr)
		procs = atoi(pr + 6);
	check(procs >= 2 && procs <= 6, "the job sees only its own processes in /proc (%d)", procs);
	check(has_line(res.out, "init=sh"), "/proc/1 is the job itself, not the host's init: %s", res.out);
	usleep(200 * 1000);
	FILE *ps = popen("pgrep -x -f 'sleep 300' | wc -l", "r");
	int left = -1;
	if (ps) {
		if (fscanf(ps, "%d", &left) != 1)
			left = -1;
		pclose(ps);
	}
	check(left == 0, "the job's background 'sleep 300' died with it (%d left)", left);
}

static void test_network(void) {
	struct result res;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof sa;
	char port[16];

	if (lfd < 0 || bind(lfd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(lfd, 4) < 0 ||
	    getsockname(lfd, (struct sockaddr *) &sa, &len) < 0)
		abort();
	snprintf(port, sizeof port, "%d", ntohs(sa.sin_port));
	struct sandbox_opts o = base_opts((char *[]) { helper, "job", "net", port, NULL });
	o.envp = helper_env;
	run_job(o, &res);
	printf("%s", res.out);
	check(res.r == 0 && has_line(res.out, "inet=EPERM"), "socket(AF_INET) = EPERM");
	check(has_line(res.out, "connect=EPERM") && accept(lfd, NULL, NULL) < 0 && errno == EAGAIN,
	      "TCP connect to 127.0.0.1:%s fails, nothing reached the listener", port);
	check(has_line(res.out, "inet6=EPERM") && has_line(res.out, "packet=EPERM") &&
	      has_line(res.out, "netlink=EPERM"), "AF_INET6, AF_PACKET, AF_NETLINK = EPERM");
	check(has_line(res.out, "unix=ok"), "AF_UNIX allowed");
	check(has_line(res.out, "ifaces=lo,"), "only lo in the job's /proc/net/dev");
	close(lfd);
}

static void test_seccomp(void) {
	struct result res;
	struct sandbox_opts o = base_opts((char *[]) { helper, "job", "seccomp", NULL });
	static const char *const want[] = {
		"unshare_user=EPERM", "clone_newuser=EPERM", "clone3=ENOSYS", "ptrace=EPERM", "mount=EPERM",
		"io_uring_setup=EPERM", "perf_event_open=EPERM", "keyctl=EPERM", "userfaultfd=EPERM",
		"bpf=EPERM", "setns=EPERM", "open_tree=EPERM", "socketpair=ok", "fork=ok", "pthread=ok",
	};

	o.envp = helper_env;
	run_job(o, &res);
	printf("%s", res.out);
	check(res.r == 0 && WIFEXITED(res.status) && WEXITSTATUS(res.status) == 0,
	      "seccomp job ran: r=%d step=%s status=%#x %s", res.r, res.step, res.status, res.err);
	for (size_t i = 0; i < ELEMENTSOF(want); i++)
		check(has_line(res.out, want[i]), "%s", want[i]);
}

static void test_no_sandbox(void) {
	struct result res;
	struct sandbox_opts o = base_opts((char *[]) { "/bin/sh", "-c",
		"cat /proc/self/status /proc/self/cgroup; readlink /proc/self/ns/net; touch /var/tmp/.x-$$ && rm /var/tmp/.x-$$ && echo host-writable",
		NULL });
	char buf[64], want[256], net[64];

	o.uid = getuid();
	o.gid = getgid();
	o.no_sandbox = true;
	run_job(o, &res);
	ns_ino(getpid(), "net", net, sizeof net);
	snprintf(want, sizeof want, "0::%s", cg_rel);
	check(res.r == 0 && has_line(res.out, want), "no_sandbox: still in the job cgroup (r=%d step=%s)", res.r, res.step);
	check(strcmp(status_field(res.out, "NoNewPrivs", buf, sizeof buf), "1") == 0, "no_sandbox: NoNewPrivs %s", buf);
	check(strcmp(status_field(res.out, "Seccomp", buf, sizeof buf), "0") == 0, "no_sandbox: no seccomp (%s)", buf);
	check(has_line(res.out, net) && has_line(res.out, "host-writable"), "no_sandbox: host netns and mounts");
}

/* Kernels without clone3: a seccomp filter in a forked test process makes
 * clone3 answer ENOSYS, so sandbox_spawn must take its fork path. */
static void test_fork_fallback(void) {
	pid_t pid = fork();
	if (pid == 0) {
		scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
		if (!ctx || seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) < 0 ||
		    seccomp_load(ctx) < 0)
			_exit(3);
		struct result res;
		char want[256];
		run_job(base_opts((char *[]) { "cat", "/proc/self/cgroup", NULL }), &res);
		snprintf(want, sizeof want, "0::%s", cg_rel);
		_exit(res.r == 0 && has_line(res.out, want) ? 0 : 1);
	}
	int status = -1;
	waitpid(pid, &status, 0);
	check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "fork fallback (clone3 = ENOSYS) still lands in the job cgroup: status=%#x", status);
}

/* --- set-up --------------------------------------------------------------------- */

static int find_cgroup2(char *buf, size_t size) {
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[1024];

	while (f && fgets(line, sizeof line, f)) {
		char mnt[200], fstype[64];
		const char *dash = strstr(line, " - ");
		if (!dash || sscanf(dash, " - %63s", fstype) != 1 || strcmp(fstype, "cgroup2") != 0)
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %199s", mnt) != 1)
			continue;
		snprintf(buf, size, "%s", mnt);
		return 0;
	}
	return -ENOENT;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
	return remove(p);
}

static void cleanup(void) {
	if (cg_j1[0] && rmdir(cg_j1) < 0 && errno != ENOENT)
		fprintf(stderr, "rmdir %s: %m\n", cg_j1);
	if (cg_jobs[0])
		rmdir(cg_jobs);
	if (cg_root[0])
		rmdir(cg_root);
	if (state_dir[0])
		nftw(state_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int copy_file(const char *from, const char *to) {
	_cleanup_close_ int in = open(from, O_RDONLY | O_CLOEXEC);
	_cleanup_close_ int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
	char buf[65536];
	ssize_t n;

	if (in < 0 || out < 0)
		return -errno;
	while ((n = read(in, buf, sizeof buf)) > 0)
		if (write(out, buf, n) != n)
			return -EIO;
	return n < 0 ? -errno : 0;
}

int main(int argc, char **argv) {
	char mnt[200];

	if (argc >= 3 && strcmp(argv[1], "job") == 0)
		return job_main(argc, argv);

	alarm(50);
	if (geteuid() != 0) {
		printf("needs root (cgroups, namespaces, changing uid)\n");
		return 77;
	}
	if (find_cgroup2(mnt, sizeof mnt) < 0) {
		printf("no cgroup2 mount in /proc/self/mountinfo\n");
		return 77;
	}
	struct passwd *pw = getpwnam("nobody");
	if (!pw) {
		printf("no user 'nobody'\n");
		return 77;
	}
	nobody_uid = pw->pw_uid;
	nobody_gid = pw->pw_gid;

	/* Children must be reaped by waitpid, not auto-reaped. */
	signal(SIGCHLD, SIG_DFL);
	/* What the daemon might carry and a job must not: supplementary
	 * groups, a core size limit. */
	if (setgroups(2, (gid_t[]) { 4, 100 }) < 0 ||
	    setrlimit(RLIMIT_CORE, &(struct rlimit) { 1 << 20, RLIM_INFINITY }) < 0) {
		printf("cannot set groups or RLIMIT_CORE: %m\n");
		return 1;
	}

	snprintf(cg_rel, sizeof cg_rel, "/harvester-test-%d/jobs/j1", (int) getpid());
	snprintf(cg_root, sizeof cg_root, "%s/harvester-test-%d", mnt, (int) getpid());
	snprintf(cg_jobs, sizeof cg_jobs, "%s/jobs", cg_root);
	snprintf(cg_j1, sizeof cg_j1, "%s/j1", cg_jobs);
	atexit(cleanup);
	if (mkdir(cg_root, 0755) < 0 || mkdir(cg_jobs, 0755) < 0 || mkdir(cg_j1, 0755) < 0) {
		printf("cannot create test cgroup %s: %m\n", cg_j1);
		return 1;
	}

	snprintf(state_dir, sizeof state_dir, "/var/tmp/harvester-sandbox-XXXXXX");
	if (!mkdtemp(state_dir))
		abort();
	snprintf(scratch_dir, sizeof scratch_dir, "%s/scratch", state_dir);
	snprintf(helper, sizeof helper, "%s/job-helper", state_dir);
	/* The state dir belongs to nobody too, so that only the read-only
	 * mount (not its mode) can stop the job writing there. The helper is a
	 * copy of this program where nobody can reach it. */
	if (chmod(state_dir, 0755) < 0 || mkdir(scratch_dir, 0700) < 0 ||
	    copy_file("/proc/self/exe", helper) < 0 ||
	    chown(scratch_dir, nobody_uid, nobody_gid) < 0 || chown(state_dir, nobody_uid, nobody_gid) < 0)
		abort();

	test_refusals();
	test_identity();
	test_env_fds();
	test_sleeper(true);
	test_sleeper(false);
	test_filesystem();
	test_network();
	test_seccomp();
	test_no_sandbox();
	test_fork_fallback();

	printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
	return failures ? 1 : 0;
}
