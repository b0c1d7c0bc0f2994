/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Start a job's process sandboxed: in its own cgroup from the first
 * instruction (clone3 CLONE_INTO_CGROUP), as an unprivileged user with no
 * supplementary groups, no new privileges, no network (a new network
 * namespace with only a downed loopback), a read-only view of the system
 * (a new mount namespace, / remounted read-only recursively) with a private
 * writable scratch folder as its working directory and its /tmp, a seccomp
 * filter, stdin from /dev/null. Failures in the child before exec come back
 * to the parent as -errno with the step that failed, never as a silent exit.
 * /home, /root and /run are covered by empty read-only tmpfs mounts, /proc
 * shows only the job user's processes (hidepid=invisible), /dev/shm is a
 * fresh private tmpfs.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct sandbox_opts {
	char *const *argv;          /* argv[0] is looked up in PATH when it has no '/' */
	char *const *envp;          /* NULL: a minimal PATH/HOME/LANG environment */
	uid_t uid;
	gid_t gid;
	const char *cgroup;         /* absolute cgroup2 path of jobs/<id> (must exist) */
	const char *scratch_dir;    /* owned by uid; becomes cwd, $HOME, and /tmp */
	int stdout_fd, stderr_fd;   /* where output goes; < 0: /dev/null */
	bool sched_idle;            /* no cpu controller: SCHED_IDLE + nice 19 */
	bool no_sandbox;            /* only for tests run as a non-root user: skip namespaces/uid */
};

/* On success *ret_pid is the child and *ret_pidfd (may be NULL) a pidfd for
 * it. On failure -errno, and *ret_step (may be NULL) names the step that
 * failed ("setuid", "mount /", "execve ...") in a static string. */
int sandbox_spawn(const struct sandbox_opts *o, pid_t *ret_pid, int *ret_pidfd, const char **ret_step);
