/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The hierarchy itself: where cgroup2 is mounted, which cgroup a process is
 * in, create/attach/remove, and controllers. On this machine's v1 hybrid the
 * cpu controller is missing from cgroup2: it must be reported as missing (0,
 * and left out of what cg_enable_controllers enabled), never as an error,
 * and cpu.max/cpu.idle must fail with -ENOENT so the daemon picks the
 * freezer duty cycle. Where cpu exists (the VM guest), the same test checks
 * it is found and cpu.max takes a value.
 */
#include <sys/vfs.h>
#include <linux/magic.h>

#include "tests/host/cgroup-test.h"

/* Is word in the space-separated list? (independent of the code under test) */
static bool has_word(const char *list, const char *w) {
	size_t n = strlen(w);

	for (const char *p = list; (p = strstr(p, w)); p++)
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

int main(void) {
	const char *base = test_setup("ctrl");
	char *mnt = NULL, *path = NULL, *text = NULL, *enabled = NULL;
	char *a = join(base, "a"), *ab = join(a, "b"), *abc = join(ab, "c"), *busy = join(base, "busy");
	char *root_ctrls = NULL, *root_sub = NULL, *base_ctrls = NULL;
	struct statfs sfs;
	bool cpu_here, pop;
	pid_t child;
	int r, status;

	/* The mount point is a cgroup2 file system, and base sits in it. */
	CHECK_R(cg_mount_point(&mnt), 0);
	CHECK(statfs(mnt, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC);
	CHECK(strncmp(base, mnt, strlen(mnt)) == 0);
	printf("cgroup2 mount: %s\n", mnt);

	/* Our own cgroup: a directory of that mount with a cgroup.procs that
	 * lists us. */
	CHECK_R(cg_pid_path(0, &path), 0);
	CHECK(strncmp(path, mnt, strlen(mnt)) == 0);
	{
		char me[32], *procs = NULL;

		CHECK_R(cg_read(path, "cgroup.procs", &procs), 0);
		snprintf(me, sizeof me, "%d", (int) getpid());
		CHECK(has_word(procs, me) || strstr(procs, me));
		free(procs);
	}
	printf("own cgroup: %s\n", path);
	free(path);
	CHECK_R(cg_pid_path(999999999, &path), -ENOENT);

	/* create: nested, idempotent, no parents made up */
	CHECK_R(cg_create(a), 0);
	CHECK_R(cg_create(a), 0);
	CHECK_R(cg_create(abc), -ENOENT);
	CHECK_R(cg_create(ab), 0);
	CHECK_R(cg_create(abc), 0);

	/* attach, and where the kernel then says the child is */
	CHECK_R(cg_create(busy), 0);
	child = start_busy(busy, 1);
	CHECK_R(cg_pid_path(child, &path), 0);
	CHECK(strcmp(path, busy) == 0);
	free(path);
	CHECK_R(cg_is_populated(busy, &pop), 0);
	CHECK(pop);
	CHECK_R(cg_attach(busy, 999999999), -ESRCH);
	/* a populated cgroup is not removed (after a short retry) */
	CHECK_R(cg_remove(busy), -EBUSY);
	CHECK_R(cg_kill(busy), 0);
	status = reap(child, 2000000);
	CHECK(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK_R(cg_remove(busy), 0);

	/* cg_has_controller agrees with cgroup.controllers, and the cpu
	 * controller is reported present or missing, never as an error. */
	CHECK_R(cg_read(mnt, "cgroup.controllers", &root_ctrls), 0);
	cpu_here = has_word(root_ctrls, "cpu");
	printf("root cgroup.controllers: \"%.*s\"; cpu %s\n", (int) strcspn(root_ctrls, "\n"), root_ctrls,
	       cpu_here ? "present" : "missing (cpu cap by the freezer duty cycle)");
	CHECK_R(cg_has_controller(mnt, "cpu"), cpu_here);
	CHECK_R(cg_has_controller(mnt, "cp"), 0);
	CHECK_R(cg_has_controller(mnt, "nosuchcontroller"), 0);
	CHECK_R(cg_has_controller(abc, "cpu"), 0);  /* nothing delegated down here */
	CHECK_R(cg_has_controller("/nonexistent-cgroup", "cpu"), -ENOENT);

	/* Asking for missing controllers is not an error: nothing enabled. */
	CHECK_R(cg_enable_controllers(a, "cpu memory pids nosuchcontroller", &enabled), 0);
	CHECK(strcmp(enabled, "") == 0);
	free(enabled);
	enabled = NULL;
	CHECK_R(cg_read(a, "cgroup.subtree_control", &text), 0);
	CHECK(strcmp(text, "") == 0 || strcmp(text, "\n") == 0);
	free(text);
	CHECK_R(cg_enable_controllers(a, "cpu", NULL), 0);

	/* Where the root has a controller we can hand down (hugetlb on this
	 * hybrid, cpu in the VM guest), enable it for base (restoring the
	 * root afterwards) and check one bad name does not block the rest. */
	CHECK_R(cg_read(mnt, "cgroup.subtree_control", &root_sub), 0);
	{
		const char *ctrl = has_word(root_ctrls, "hugetlb") ? "hugetlb" :
				   has_word(root_ctrls, "pids") ? "pids" : NULL;
		bool root_had = ctrl && has_word(root_sub, ctrl);

		if (!ctrl)
			printf("no controller to hand down here: enabling not tested\n");
		else {
			char want[64], plus[32];

			if (!root_had) {
				snprintf(plus, sizeof plus, "+%s", ctrl);
				CHECK_R(cg_write(mnt, "cgroup.subtree_control", plus), 0);
			}
			CHECK_R(cg_read(base, "cgroup.controllers", &base_ctrls), 0);
			CHECK(has_word(base_ctrls, ctrl));
			snprintf(want, sizeof want, "cpu %s nosuchcontroller", ctrl);
			CHECK_R(cg_enable_controllers(base, want, &enabled), 0);
			printf("base has \"%.*s\"; asked for \"%s\", enabled \"%s\"\n",
			       (int) strcspn(base_ctrls, "\n"), base_ctrls, want, enabled);
			CHECK(has_word(enabled, ctrl));
			CHECK(has_word(enabled, "cpu") == has_word(base_ctrls, "cpu"));
			CHECK(!has_word(enabled, "nosuchcontroller"));
			CHECK_R(cg_read(base, "cgroup.subtree_control", &text), 0);
			CHECK(has_word(text, ctrl));
			free(text);
			free(enabled);
			enabled = NULL;
			CHECK_R(cg_has_controller(a, ctrl), 1);
			/* A process in base (no internal processes): the kernel
			 * refuses a domain controller one level down, and that
			 * is reported, not swallowed. */
			child = start_busy(a, 1);
			r = cg_enable_controllers(a, ctrl, &enabled);
			printf("enabling %s below a cgroup with a process: %d (%s)\n", ctrl, r, r < 0 ? strerror(-r) : "ok");
			CHECK_R(r, -EBUSY);
			CHECK(enabled == NULL);
			CHECK_R(cg_kill(a), 0);
			CHECK(reap(child, 2000000) != -1);
			CHECK(wait_populated(a, false, 1000000));
			CHECK_R(cg_remove(base), 0);
			test_base[0] = '\0';
			if (!root_had) {
				snprintf(plus, sizeof plus, "-%s", ctrl);
				r = cg_write(mnt, "cgroup.subtree_control", plus);
				if (r < 0)
					printf("note: could not take %s back from the root: %s\n", ctrl, strerror(-r));
			}
			CHECK_R(test_setup("ctrl2") != NULL, 1);
			base = test_base;
		}
	}

	/* cpu.max and cpu.idle: -ENOENT without the cpu controller (the
	 * daemon's cue for the duty cycle); set and read back with it. */
	if (!cpu_here) {
		CHECK_R(cg_set_cpu_max(base, 10000, 100000), -ENOENT);
		CHECK_R(cg_set_cpu_max(base, CG_CPU_MAX_UNLIMITED, 100000), -ENOENT);
		CHECK_R(cg_set_cpu_idle(base, true), -ENOENT);
	} else {
		CHECK_R(cg_enable_controllers(mnt, "cpu", NULL), 0);
		CHECK_R(cg_set_cpu_max(base, 10000, 100000), 0);
		CHECK_R(cg_read(base, "cpu.max", &text), 0);
		CHECK(strcmp(text, "10000 100000\n") == 0);
		free(text);
		CHECK_R(cg_set_cpu_max(base, CG_CPU_MAX_UNLIMITED, 100000), 0);
		CHECK_R(cg_read(base, "cpu.max", &text), 0);
		CHECK(strcmp(text, "max 100000\n") == 0);
		free(text);
		r = cg_set_cpu_idle(base, true);
		CHECK(r == 0 || r == -ENOENT);   /* cpu.idle came in 5.15 */
	}
	CHECK_R(cg_set_cpu_max(base, 10000, 0), -EINVAL);
	/* cpu.stat is there with or without the controller */
	{
		uint64_t u;
		CHECK_R(cg_cpu_usage_usec(base, &u), 0);
	}
	/* writes the kernel refuses come back as its errno */
	CHECK_R(cg_write(base, "cgroup.freeze", "2"), -ERANGE);
	CHECK_R(cg_write(base, "no.such.file", "1"), -ENOENT);

	CHECK_R(cg_remove(base), 0);
	CHECK(access(base, F_OK) < 0);
	test_base[0] = '\0';
	free(mnt);
	free(root_ctrls);
	free(root_sub);
	free(base_ctrls);
	free(a);
	free(ab);
	free(abc);
	free(busy);
	printf("ok\n");
	return 0;
}
