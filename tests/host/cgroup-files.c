/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The file parsing of the cgroup layer on a folder of fake cgroup files
 * (the functions take paths, so no root and no cgroup2 are needed): flat
 * keys in cpu.stat, memory.events and cgroup.events, controller lists, and
 * what gets written where.
 */
#include "tests/host/cgroup-test.h"

static char dir[] = "/tmp/harvester-cgfiles-XXXXXX";

static void put(const char *file, const char *text) {
	char *p = join(dir, file);
	FILE *f = fopen(p, "we");

	CHECK(f);
	CHECK(fputs(text, f) >= 0);
	CHECK(fclose(f) == 0);
	free(p);
}

static char *get(const char *file) {
	char *text = NULL;

	CHECK_R(cg_read(dir, file, &text), 0);
	return text;
}

static void rm_dir(void) {
	static const char *files[] = {
		"cpu.stat", "memory.events", "cgroup.events", "cgroup.controllers", "cgroup.subtree_control",
		"cgroup.freeze", "cgroup.kill", "cpu.max", "cpu.idle", "cgroup.procs", "bad.stat", "empty",
		"memory.events.old",
	};

	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char *p = join(dir, files[i]);
		unlink(p);
		free(p);
	}
	rmdir(dir);
}

int main(void) {
	struct cg_memory_events me;
	uint64_t v = 12345;
	char *t, *enabled = NULL;
	bool b;

	CHECK(mkdtemp(dir));
	atexit(rm_dir);

	/* cpu.stat as the kernel writes it (the controller adds the last three) */
	put("cpu.stat", "usage_usec 183400000\nuser_usec 94244000\nsystem_usec 89156000\n"
			"nice_usec 0\nnr_periods 12\nnr_throttled 3\nthrottled_usec 4567\n");
	CHECK_R(cg_cpu_usage_usec(dir, &v), 0);
	CHECK(v == 183400000);
	CHECK_R(cg_read_key(dir, "cpu.stat", "system_usec", &v), 0);
	CHECK(v == 89156000);
	CHECK_R(cg_read_key(dir, "cpu.stat", "throttled_usec", &v), 0);   /* last line */
	CHECK(v == 4567);
	CHECK_R(cg_read_key(dir, "cpu.stat", "nice_usec", &v), 0);
	CHECK(v == 0);
	/* a key is a whole word, not a prefix or a suffix */
	v = 777;
	CHECK_R(cg_read_key(dir, "cpu.stat", "usage", &v), -ENOENT);
	CHECK_R(cg_read_key(dir, "cpu.stat", "usec", &v), -ENOENT);
	CHECK_R(cg_read_key(dir, "cpu.stat", "throttled", &v), -ENOENT);
	CHECK(v == 777);   /* untouched on failure */
	CHECK_R(cg_read_key(dir, "no.such.file", "usage_usec", &v), -ENOENT);

	/* malformed values are refused, not read as 0 */
	put("bad.stat", "usage_usec abc\nuser_usec -5\nsystem_usec 12x\nbig 99999999999999999999999\nok 18446744073709551615");
	CHECK_R(cg_read_key(dir, "bad.stat", "usage_usec", &v), -EINVAL);
	CHECK_R(cg_read_key(dir, "bad.stat", "user_usec", &v), -EINVAL);
	CHECK_R(cg_read_key(dir, "bad.stat", "system_usec", &v), -EINVAL);
	CHECK_R(cg_read_key(dir, "bad.stat", "big", &v), -ERANGE);
	CHECK(v == 777);
	CHECK_R(cg_read_key(dir, "bad.stat", "ok", &v), 0);   /* no final newline */
	CHECK(v == UINT64_MAX);
	put("empty", "");
	CHECK_R(cg_read_key(dir, "empty", "usage_usec", &v), -ENOENT);

	/* memory.events: "oom" must not match "oom_kill" or "oom_group_kill",
	 * whatever the order */
	put("memory.events", "low 1\nhigh 22\nmax 333\noom_group_kill 9\noom_kill 4\noom 55\n");
	CHECK_R(cg_memory_events(dir, &me), 0);
	CHECK(me.low == 1 && me.high == 22 && me.max == 333 && me.oom == 55 && me.oom_kill == 4);
	CHECK_R(cg_read_key(dir, "memory.events", "oom", &v), 0);
	CHECK(v == 55);
	/* an older kernel without oom_kill: 0 */
	put("memory.events", "low 0\nhigh 0\nmax 7\noom 1\n");
	CHECK_R(cg_memory_events(dir, &me), 0);
	CHECK(me.max == 7 && me.oom == 1 && me.oom_kill == 0);
	put("memory.events", "garbage\n");
	me.max = 4242;
	CHECK(cg_memory_events(dir, &me) < 0);
	CHECK(me.max == 4242);
	put("memory.events", "max oops\n");
	CHECK_R(cg_memory_events(dir, &me), -EINVAL);

	/* cgroup.events */
	put("cgroup.events", "populated 1\nfrozen 0\n");
	CHECK_R(cg_is_populated(dir, &b), 0);
	CHECK(b);
	CHECK_R(cg_is_frozen(dir, &b), 0);
	CHECK(!b);
	put("cgroup.events", "populated 0\nfrozen 1\n");
	CHECK_R(cg_is_populated(dir, &b), 0);
	CHECK(!b);
	CHECK_R(cg_is_frozen(dir, &b), 0);
	CHECK(b);
	put("cgroup.events", "populated 1\n");        /* before 5.2: no freezer */
	CHECK_R(cg_is_frozen(dir, &b), -ENOENT);

	/* controller lists */
	put("cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
	CHECK_R(cg_has_controller(dir, "cpu"), 1);
	CHECK_R(cg_has_controller(dir, "cpuset"), 1);
	CHECK_R(cg_has_controller(dir, "misc"), 1);
	CHECK_R(cg_has_controller(dir, "pid"), 0);
	CHECK_R(cg_has_controller(dir, "set"), 0);
	CHECK_R(cg_has_controller(dir, ""), 0);
	put("cgroup.controllers", "\n");
	CHECK_R(cg_has_controller(dir, "cpu"), 0);

	/* enabling writes one "+c" per available controller, each at offset 0
	 * of a fresh open (no O_TRUNC, which cgroupfs does not need): the
	 * fake file shows the last write over the longer one before */
	put("cgroup.controllers", "cpuset cpu io memory pids\n");
	put("cgroup.subtree_control", "");
	CHECK_R(cg_enable_controllers(dir, "cpu  memory hugetlb\tpids", &enabled), 0);
	CHECK(strcmp(enabled, "cpu memory pids") == 0);
	free(enabled);
	t = get("cgroup.subtree_control");
	CHECK(strcmp(t, "+pidsry") == 0);
	free(t);
	CHECK_R(cg_enable_controllers(dir, "", &enabled), 0);
	CHECK(strcmp(enabled, "") == 0);
	free(enabled);

	/* values written as the kernel wants them */
	put("cpu.max", "");
	CHECK_R(cg_set_cpu_max(dir, 20000, 100000), 0);
	t = get("cpu.max");
	CHECK(strcmp(t, "20000 100000") == 0);
	free(t);
	put("cpu.max", "");
	CHECK_R(cg_set_cpu_max(dir, CG_CPU_MAX_UNLIMITED, 50000), 0);
	t = get("cpu.max");
	CHECK(strcmp(t, "max 50000") == 0);
	free(t);
	put("cpu.idle", "");
	CHECK_R(cg_set_cpu_idle(dir, true), 0);
	t = get("cpu.idle");
	CHECK(strcmp(t, "1") == 0);
	free(t);
	put("cgroup.freeze", "");
	CHECK_R(cg_freeze(dir, true), 0);
	t = get("cgroup.freeze");
	CHECK(strcmp(t, "1") == 0);
	free(t);
	put("cgroup.procs", "");
	CHECK_R(cg_attach(dir, 4321), 0);
	t = get("cgroup.procs");
	CHECK(strcmp(t, "4321") == 0);
	free(t);
	/* cg_kill uses cgroup.kill where the file exists */
	put("cgroup.kill", "");
	CHECK_R(cg_kill(dir), 0);
	t = get("cgroup.kill");
	CHECK(strcmp(t, "1") == 0);
	free(t);
	/* cg_read: whole file, even a long one, NUL-terminated */
	{
		char *big = malloc(20001);

		CHECK(big);
		memset(big, 'x', 20000);
		big[20000] = '\0';
		put("memory.events.old", big);
		t = get("memory.events.old");
		CHECK(strlen(t) == 20000);
		free(t);
		free(big);
	}
	CHECK(cg_events_open(dir) >= 0);
	CHECK_R(cg_events_open("/nonexistent"), -ENOENT);

	printf("ok\n");
	return 0;
}
