/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The job sandbox. Everything that allocates (the environment, the seccomp
 * program, the PATH list) is prepared in the parent; the child between
 * clone and execve only makes system calls, because the daemon may have
 * other threads whose locks (malloc, stdio) a fork-like child must not touch.
 */
#include "harvester/sandbox.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <linux/close_range.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>

#include "harvester/macro.h"

#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/* The steps a child can fail at; the child sends the index, the parent
 * turns it into the static name that *ret_step gets. */
enum step {
	STEP_CGROUP,
	STEP_SIGNALS,
	STEP_SETSID,
	STEP_UNSHARE,
	STEP_MOUNT_PRIVATE,
	STEP_BIND_SCRATCH,
	STEP_OPEN_SCRATCH,
	STEP_BIND_TMP,
	STEP_HIDE_HOME,
	STEP_HIDE_ROOT,
	STEP_HIDE_RUN,
	STEP_READONLY,
	STEP_SCRATCH_RW,
	STEP_TMP_RW,
	STEP_STDIN,
	STEP_STDOUT,
	STEP_STDERR,
	STEP_CLOSE_FDS,
	STEP_RLIMIT,
	STEP_SCHED,
	STEP_NICE,
	STEP_SETGROUPS,
	STEP_SETGID,
	STEP_SETUID,
	STEP_NO_NEW_PRIVS,
	STEP_CHDIR,
	STEP_SECCOMP,
	STEP_EXECVE,
	_STEP_MAX,
};

static const char *const step_names[_STEP_MAX] = {
	[STEP_CGROUP]        = "cgroup.procs",
	[STEP_SIGNALS]       = "sigprocmask",
	[STEP_SETSID]        = "setsid",
	[STEP_UNSHARE]       = "unshare",
	[STEP_MOUNT_PRIVATE] = "mount / private",
	[STEP_BIND_SCRATCH]  = "mount scratch",
	[STEP_OPEN_SCRATCH]  = "open scratch",
	[STEP_BIND_TMP]      = "mount /tmp",
	[STEP_HIDE_HOME]     = "mount /home",
	[STEP_HIDE_ROOT]     = "mount /root",
	[STEP_HIDE_RUN]      = "mount /run",
	[STEP_READONLY]      = "mount_setattr / read-only",
	[STEP_SCRATCH_RW]    = "mount_setattr scratch",
	[STEP_TMP_RW]        = "mount_setattr /tmp",
	[STEP_STDIN]         = "stdin",
	[STEP_STDOUT]        = "stdout",
	[STEP_STDERR]        = "stderr",
	[STEP_CLOSE_FDS]     = "close_range",
	[STEP_RLIMIT]        = "setrlimit",
	[STEP_SCHED]         = "sched_setscheduler",
	[STEP_NICE]          = "setpriority",
	[STEP_SETGROUPS]     = "setgroups",
	[STEP_SETGID]        = "setresgid",
	[STEP_SETUID]        = "setresuid",
	[STEP_NO_NEW_PRIVS]  = "no_new_privs",
	[STEP_CHDIR]         = "chdir",
	[STEP_SECCOMP]       = "seccomp",
	[STEP_EXECVE]        = "execve",
};

struct report {
	int32_t err;
	int32_t step;
};

/* Everything the child needs, computed before clone. */
struct child_ctx {
	const struct sandbox_opts *o;
	char *const *envp;
	const char *path;            /* PATH used to look argv[0] up */
	int err_fd;                  /* write end of the CLOEXEC report pipe */
	int procs_fd;                /* cgroup.procs, only on the fork fallback */
	struct sock_fprog seccomp;   /* filter.len == 0 when not sandboxed */
};

/* --- the seccomp program ---------------------------------------------------- */

/* Denied with EPERM: whatever reaches the kernel's attack surface or other
 * processes and that no compute job needs. Namespaces, mounts and ptrace
 * would let a job undo the rest of the sandbox; the others are large or
 * privileged kernel interfaces. */
static const int denied_syscalls[] = {
	SCMP_SYS(ptrace), SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev),
	SCMP_SYS(pidfd_getfd),
	SCMP_SYS(mount), SCMP_SYS(umount2), SCMP_SYS(pivot_root), SCMP_SYS(chroot),
	SCMP_SYS(unshare), SCMP_SYS(setns),
	SCMP_SYS(fsopen), SCMP_SYS(fsconfig), SCMP_SYS(fsmount), SCMP_SYS(fspick),
	SCMP_SYS(open_tree), SCMP_SYS(move_mount), SCMP_SYS(mount_setattr),
	SCMP_SYS(bpf), SCMP_SYS(perf_event_open),
	SCMP_SYS(kexec_load), SCMP_SYS(kexec_file_load),
	SCMP_SYS(init_module), SCMP_SYS(finit_module), SCMP_SYS(delete_module),
	SCMP_SYS(keyctl), SCMP_SYS(add_key), SCMP_SYS(request_key),
	SCMP_SYS(userfaultfd), SCMP_SYS(reboot), SCMP_SYS(swapon), SCMP_SYS(swapoff),
	SCMP_SYS(acct), SCMP_SYS(quotactl), SCMP_SYS(quotactl_fd),
	SCMP_SYS(open_by_handle_at), SCMP_SYS(name_to_handle_at),
	SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register),
	SCMP_SYS(iopl), SCMP_SYS(ioperm), SCMP_SYS(uselib), SCMP_SYS(syslog),
	SCMP_SYS(lookup_dcookie), SCMP_SYS(fanotify_init),
};

static const uint64_t namespace_flags[] = {
	CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
	CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
};

static void seccomp_releasep(scmp_filter_ctx *ctx) { if (*ctx) seccomp_release(*ctx); }

static int seccomp_build(scmp_filter_ctx ctx) {
	int r;

	/* The deny list names x86-64 numbers; a 32-bit int 0x80 call would
	 * bypass it, so any foreign architecture kills the process. */
	r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ELEMENTSOF(denied_syscalls); i++) {
		if (denied_syscalls[i] < 0)
			continue; /* not a system call on this architecture */
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), denied_syscalls[i], 0);
		if (r < 0)
			return r;
	}
	/* clone3 passes its flags in memory a filter cannot read: answer ENOSYS
	 * so that libc falls back to clone, whose flags it can. */
	r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ELEMENTSOF(namespace_flags); i++) {
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
		                     SCMP_A0(SCMP_CMP_MASKED_EQ, namespace_flags[i], namespace_flags[i]));
		if (r < 0)
			return r;
	}
	/* Local IPC only: the network namespace already has no route out, this
	 * also keeps netlink, packet and the rest of the protocol code away. */
	r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
	                     SCMP_A0(SCMP_CMP_NE, AF_UNIX));
	if (r < 0)
		return r;
	r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socketpair), 1,
	                     SCMP_A0(SCMP_CMP_NE, AF_UNIX));
	return r;
}

/* Builds the filter and exports it as a BPF program in memory the child can
 * load with one system call (seccomp_load would allocate in the child). */
static int seccomp_program(struct sock_fprog *ret) {
	_cleanup_(seccomp_releasep) scmp_filter_ctx ctx = NULL;
	_cleanup_close_ int fd = -1;
	_cleanup_free_ struct sock_filter *insns = NULL;
	struct stat st;
	int r;

	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return -ENOMEM;
	r = seccomp_build(ctx);
	if (r < 0)
		return r;

	fd = memfd_create("harvester-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	r = seccomp_export_bpf(ctx, fd);
	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0)
		return negative_errno();
	if (st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) != 0 ||
	    st.st_size / sizeof(struct sock_filter) > BPF_MAXINSNS)
		return -EINVAL;
	insns = malloc(st.st_size);
	if (!insns)
		return -ENOMEM;
	ssize_t n = pread(fd, insns, st.st_size, 0);
	if (n < 0)
		return negative_errno();
	if (n != st.st_size)
		return -EIO;

	ret->len = st.st_size / sizeof(struct sock_filter);
	ret->filter = TAKE_PTR(insns);
	return 0;
}

/* --- the child ---------------------------------------------------------------- */

static _Noreturn void child_fail(const struct child_ctx *c, enum step step, int err) {
	struct report rep = { .err = err > 0 ? err : EIO, .step = step };
	ssize_t n;

	do
		n = write(c->err_fd, &rep, sizeof rep);
	while (n < 0 && errno == EINTR);
	_exit(127);
}

#define CHECK(c, step, expr) do { if ((expr) < 0) child_fail(c, step, errno); } while (0)

/* True when dir is path itself or one of its parents. */
static bool path_covers(const char *dir, const char *path) {
	size_t n = strlen(dir);
	return strncmp(dir, path, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static void child_mounts(const struct child_ctx *c, int *ret_scratch_fd) {
	const char *scratch = c->o->scratch_dir;
	static const struct { const char *dir; enum step step; } hidden[] = {
		{ "/home", STEP_HIDE_HOME }, { "/root", STEP_HIDE_ROOT }, { "/run", STEP_HIDE_RUN },
	};
	struct mount_attr ro = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID };
	struct mount_attr rw = { .attr_clr = MOUNT_ATTR_RDONLY,
	                         .attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV };
	int fd;

	/* Nothing done here may propagate back to the host's mounts. */
	CHECK(c, STEP_MOUNT_PRIVATE, mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));

	/* The scratch folder becomes a mount of its own, so that it alone can
	 * be made writable again after everything goes read-only. The fd is
	 * taken after the bind, so it refers to the new mount, and stays
	 * usable for chdir even where /tmp covers the original path. */
	CHECK(c, STEP_BIND_SCRATCH, mount(scratch, scratch, NULL, MS_BIND, NULL));
	fd = open(scratch, O_PATH | O_DIRECTORY | O_CLOEXEC);
	CHECK(c, STEP_OPEN_SCRATCH, fd);
	CHECK(c, STEP_BIND_TMP, mount(scratch, "/tmp", NULL, MS_BIND, NULL));

	/* The owner's files and the host's sockets (D-Bus, the session bus,
	 * our own control socket) are none of a job's business: an empty
	 * read-only tmpfs covers them. */
	for (size_t i = 0; i < ELEMENTSOF(hidden); i++) {
		if (path_covers(hidden[i].dir, scratch))
			continue;
		if (mount("tmpfs", hidden[i].dir, "tmpfs",
		          MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=4k") < 0 &&
		    errno != ENOENT)
			child_fail(c, hidden[i].step, errno);
	}

	/* A procfs instance of our own: it shows the job's PID namespace, and
	 * hidepid (kernel 5.8+, where each mount has its own options) hides
	 * other users' processes where there is none (the fork fallback).
	 * Where that is refused the host's /proc stays, read-only. */
	(void) mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible");

	CHECK(c, STEP_READONLY, mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &ro, sizeof ro));
	CHECK(c, STEP_SCRATCH_RW, mount_setattr(fd, "", AT_EMPTY_PATH, &rw, sizeof rw));
	CHECK(c, STEP_TMP_RW, mount_setattr(AT_FDCWD, "/tmp", 0, &rw, sizeof rw));

	/* POSIX shared memory wants a writable /dev/shm; a fresh small tmpfs
	 * keeps it private. If that fails it stays read-only, which is safe. */
	(void) mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
	             "mode=1777,size=64m,nr_inodes=4096");

	*ret_scratch_fd = fd;
}

static void child_fds(const struct child_ctx *c) {
	int in, out, err;

	in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	CHECK(c, STEP_STDIN, in);
	/* Copies above 2 first: the given fds may be 0, 1 or 2 themselves,
	 * even swapped, and dup2 onto itself would keep O_CLOEXEC. */
	out = c->o->stdout_fd >= 0 ? fcntl(c->o->stdout_fd, F_DUPFD_CLOEXEC, 3) : fcntl(in, F_DUPFD_CLOEXEC, 3);
	CHECK(c, STEP_STDOUT, out);
	err = c->o->stderr_fd >= 0 ? fcntl(c->o->stderr_fd, F_DUPFD_CLOEXEC, 3) : fcntl(in, F_DUPFD_CLOEXEC, 3);
	CHECK(c, STEP_STDERR, err);
	CHECK(c, STEP_STDIN, dup2(in, 0));
	CHECK(c, STEP_STDOUT, dup2(out, 1));
	CHECK(c, STEP_STDERR, dup2(err, 2));

	/* Everything else closes at execve: the report pipe and the scratch fd
	 * are still needed until then. */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		struct rlimit rl;
		if (errno != ENOSYS && errno != EINVAL)
			child_fail(c, STEP_CLOSE_FDS, errno);
		CHECK(c, STEP_CLOSE_FDS, getrlimit(RLIMIT_NOFILE, &rl));
		for (rlim_t fd = 3; fd < rl.rlim_cur && fd < 1U << 20; fd++)
			(void) fcntl((int) fd, F_SETFD, FD_CLOEXEC);
	}
}

/* execvpe, but looking in the job's PATH rather than the daemon's. */
static int child_exec(const struct child_ctx *c) {
	const char *file = c->o->argv[0];
	char buf[PATH_MAX];
	bool eacces = false;
	size_t flen = strlen(file);

	if (flen == 0)
		return ENOENT;
	if (strchr(file, '/')) {
		execve(file, c->o->argv, c->envp);
		return errno;
	}
	for (const char *p = c->path, *end; ; p = end + 1) {
		end = strchrnul(p, ':');
		size_t dlen = end - p;
		if (dlen == 0) /* an empty entry is the working directory */
			buf[0] = '.', dlen = 1;
		else if (dlen < sizeof buf)
			memcpy(buf, p, dlen);
		if (dlen + 1 + flen < sizeof buf) {
			buf[dlen] = '/';
			memcpy(buf + dlen + 1, file, flen + 1);
			execve(buf, c->o->argv, c->envp);
			switch (errno) {
			case EACCES:
				eacces = true;
				break;
			case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT:
				break;
			default:
				return errno;
			}
		}
		if (*end == '\0')
			break;
	}
	return eacces ? EACCES : ENOENT;
}

static _Noreturn void child_run(const struct child_ctx *c) {
	const struct sandbox_opts *o = c->o;
	struct rlimit zero = { 0, 0 };
	sigset_t none;
	int scratch_fd = -1;

	/* Before anything else, so no instruction of the job runs outside its
	 * cgroup (only needed where clone3 could not place us there). */
	if (c->procs_fd >= 0)
		CHECK(c, STEP_CGROUP, write(c->procs_fd, "0", 1));

	/* The daemon's dispositions and mask survive execve: a job must start
	 * with the default ones, or it could not be stopped by SIGTERM. The
	 * parent blocked everything across clone; handlers go first, then the
	 * mask can open. */
	for (int sig = 1; sig < _NSIG; sig++) {
		/* The raw call: glibc's sigaction() refuses the two signals it
		 * keeps for itself (32, 33), and an ignored one would still be
		 * ignored in the job (seen when the daemon's own parent ignored
		 * them). SIG_DFL needs no restorer. */
		struct {
			void (*handler)(int);
			unsigned long flags;
			void (*restorer)(void);
			uint64_t mask;
		} dfl = { .handler = SIG_DFL };

		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		(void) syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask));
	}
	sigemptyset(&none);
	CHECK(c, STEP_SIGNALS, sigprocmask(SIG_SETMASK, &none, NULL));

	CHECK(c, STEP_SETSID, setsid());
	/* A new session is a new autogroup (CONFIG_SCHED_AUTOGROUP, on in
	 * Debian's kernels), and the scheduler weighs an autogroup as a whole
	 * at nice 0: SCHED_IDLE below counts only among the job's own threads,
	 * so every owner's wake-up would wait behind the job's slice (cyclictest
	 * p99 3-4x its alone figure beside a job at a 10 % cap). Nice 19 for
	 * the group gives it 1.5 % of a nice-0 task's weight. Best effort: the
	 * file is absent where autogroups are, and they do not apply to a task
	 * in a cgroup with the cpu controller (cpu.idle covers that case). */
	if (o->sched_idle) {
		int afd = open("/proc/self/autogroup", O_WRONLY | O_CLOEXEC);
		if (afd >= 0) {
			(void) !write(afd, "19", 2);
			close(afd);
		}
	}

	if (!o->no_sandbox) {
		CHECK(c, STEP_UNSHARE, unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS));
		child_mounts(c, &scratch_fd);
	} else {
		scratch_fd = open(o->scratch_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		CHECK(c, STEP_OPEN_SCRATCH, scratch_fd);
	}

	child_fds(c);

	CHECK(c, STEP_RLIMIT, setrlimit(RLIMIT_CORE, &zero));
	if (o->sched_idle) {
		CHECK(c, STEP_SCHED, sched_setscheduler(0, SCHED_IDLE, &(struct sched_param) { 0 }));
		CHECK(c, STEP_NICE, setpriority(PRIO_PROCESS, 0, 19));
		/* RLIMIT_NICE 0 keeps the job from leaving SCHED_IDLE again. */
		CHECK(c, STEP_RLIMIT, setrlimit(RLIMIT_NICE, &zero));
	}

	if (!o->no_sandbox) {
		/* Raw system calls: glibc's wrappers would broadcast the change to
		 * the threads it believes exist, which after a raw clone3 are the
		 * daemon's threads, not ours. */
		CHECK(c, STEP_SETGROUPS, syscall(SYS_setgroups, 0, NULL));
		CHECK(c, STEP_SETGID, syscall(SYS_setresgid, o->gid, o->gid, o->gid));
		CHECK(c, STEP_SETUID, syscall(SYS_setresuid, o->uid, o->uid, o->uid));
	}
	CHECK(c, STEP_NO_NEW_PRIVS, prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
	CHECK(c, STEP_CHDIR, fchdir(scratch_fd));

	if (c->seccomp.len > 0)
		CHECK(c, STEP_SECCOMP, syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &c->seccomp));

	child_fail(c, STEP_EXECVE, child_exec(c));
}

/* --- the parent --------------------------------------------------------------- */

static void strv_freep(char ***p) {
	if (!*p)
		return;
	for (char **s = *p; *s; s++)
		free(*s);
	free(*p);
}

static int default_env(const struct sandbox_opts *o, char ***ret) {
	_cleanup_(strv_freep) char **env = calloc(5, sizeof(char *));

	if (!env)
		return -ENOMEM;
	/* Without the private /tmp (no_sandbox) temporary files go to scratch. */
	if (asprintf(&env[0], "PATH=%s", DEFAULT_PATH) < 0 ||
	    asprintf(&env[1], "HOME=%s", o->scratch_dir) < 0 ||
	    asprintf(&env[2], "TMPDIR=%s", o->no_sandbox ? o->scratch_dir : "/tmp") < 0 ||
	    !(env[3] = strdup("LANG=C.UTF-8"))) {
		return -ENOMEM;
	}
	*ret = TAKE_PTR(env);
	return 0;
}

static const char *env_path(char *const *envp) {
	for (; envp && *envp; envp++)
		if (strncmp(*envp, "PATH=", 5) == 0)
			return *envp + 5;
	return DEFAULT_PATH;
}

/* How long a child may take from clone to exec. A child that never gets
 * there (stopped in a frozen cgroup, say) must not hang the daemon's loop. */
#define SPAWN_TIMEOUT_MS 10000

static int read_report(int fd, struct report *ret) {
	size_t got = 0;
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (got < sizeof *ret) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		clock_gettime(CLOCK_MONOTONIC, &t);
		long left = SPAWN_TIMEOUT_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0)
			return -ETIMEDOUT;
		int k = poll(&p, 1, (int) left);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return negative_errno();
		if (k == 0)
			return -ETIMEDOUT;
		ssize_t n = read(fd, (char *) ret + got, sizeof *ret - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negative_errno();
		if (n == 0)
			break;
		got += n;
	}
	if (got == 0)
		return 0;               /* the pipe closed at execve */
	if (got != sizeof *ret || ret->step < 0 || ret->step >= _STEP_MAX)
		return -EIO;
	return 1;
}

static pid_t clone_into_cgroup(int cgroup_fd, uint64_t ns_flags, int *ret_pidfd) {
	int pidfd = -1;
	struct clone_args args = {
		.flags = CLONE_PIDFD | CLONE_INTO_CGROUP | ns_flags,
		.pidfd = (uint64_t) (uintptr_t) &pidfd,
		.exit_signal = SIGCHLD,
		.cgroup = (uint64_t) cgroup_fd,
	};
	long pid = syscall(SYS_clone3, &args, sizeof args);

	if (pid > 0)
		*ret_pidfd = pidfd;
	return (pid_t) pid;
}

/* clone3 into the cgroup, or fork where the kernel lacks it; returns in
 * the parent only. */
static int start_child(struct child_ctx *c, int cgroup_fd, int *procs_fd,
                       pid_t *ret_pid, int *ret_pidfd, const char **ret_step) {
	int pidfd = -1;
	pid_t pid;

	/* A PID namespace of its own: the job is its PID 1, sees only its own
	 * processes, and whatever it leaves behind dies with it. Only clone
	 * can put the child itself in one, so the fork fallback goes without. */
	pid = clone_into_cgroup(cgroup_fd, c->o->no_sandbox ? 0 : CLONE_NEWPID, &pidfd);
	if (pid == 0)
		child_run(c);
	if (pid > 0) {
		*ret_pid = pid;
		*ret_pidfd = pidfd;
		return 0;
	}
	if (errno != ENOSYS && errno != EINVAL && errno != E2BIG) {
		*ret_step = "clone3";
		return negative_errno();
	}

	/* Kernels before 5.7 (no CLONE_INTO_CGROUP) or 5.3 (no clone3): the
	 * child moves itself before its first step. */
	*procs_fd = openat(cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
	if (*procs_fd < 0) {
		*ret_step = "open cgroup.procs";
		return negative_errno();
	}
	c->procs_fd = *procs_fd;
	pid = fork();
	if (pid == 0)
		child_run(c);
	if (pid < 0) {
		*ret_step = "fork";
		return negative_errno();
	}
	/* Before 5.3 there are no pidfds either: the caller gets -1. */
	pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0 && errno != ENOSYS) {
		int r = negative_errno();
		(void) kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		*ret_step = "pidfd_open";
		return r;
	}
	*ret_pid = pid;
	*ret_pidfd = pidfd;
	return 0;
}

int sandbox_spawn(const struct sandbox_opts *o, pid_t *ret_pid, int *ret_pidfd, const char **ret_step) {
	_cleanup_(strv_freep) char **env = NULL;
	_cleanup_free_ struct sock_filter *filter = NULL;
	_cleanup_close_ int cgroup_fd = -1, procs_fd = -1, pidfd = -1;
	int pipefd[2] = { -1, -1 };
	struct child_ctx c = { .o = o, .procs_fd = -1 };
	const char *step;
	struct report rep;
	sigset_t all, saved;
	pid_t pid;
	int r;

	if (!o || !o->argv || !o->argv[0] || !o->cgroup || !o->scratch_dir) {
		r = -EINVAL, step = "arguments";
		goto fail;
	}
	/* A job never runs as root; no_sandbox keeps the caller's own ids. */
	if (!o->no_sandbox && (o->uid == 0 || o->gid == 0)) {
		r = -EPERM, step = "uid";
		goto fail;
	}

	if (!o->envp) {
		r = default_env(o, &env);
		if (r < 0) {
			step = "environment";
			goto fail;
		}
	}
	c.envp = o->envp ? o->envp : env;
	c.path = env_path(c.envp);

	if (!o->no_sandbox) {
		r = seccomp_program(&c.seccomp);
		if (r < 0) {
			step = "seccomp filter";
			goto fail;
		}
		filter = c.seccomp.filter;
	}

	cgroup_fd = open(o->cgroup, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cgroup_fd < 0) {
		r = negative_errno(), step = "open cgroup";
		goto fail;
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		r = negative_errno(), step = "pipe";
		goto fail;
	}
	c.err_fd = pipefd[1];

	/* Until the child has reset every disposition, a signal must not run
	 * one of the daemon's handlers in it (they would write to the
	 * daemon's event loop): block everything across the clone. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	r = start_child(&c, cgroup_fd, &procs_fd, &pid, &pidfd, &step);
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (r < 0)
		goto fail_pipe;

	close(pipefd[1]);
	pipefd[1] = -1;
	r = read_report(pipefd[0], &rep);
	close(pipefd[0]);
	if (r != 0) {
		if (r > 0) {
			r = -rep.err;
			step = step_names[rep.step];
		} else {
			step = r == -ETIMEDOUT ? "wait for exec (10 s)" : "read report";
			(void) kill(pid, SIGKILL);
		}
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		goto fail;
	}

	*ret_pid = pid;
	if (ret_pidfd)
		*ret_pidfd = TAKE_FD(pidfd);
	return 0;

fail_pipe:
	close(pipefd[0]);
	close(pipefd[1]);
fail:
	if (ret_step)
		*ret_step = step;
	return r;
}
