/* SPDX-License-Identifier: GPL-2.0-or-later */
/* harvester.conf: value parsers, defaults, errors with exact lines, drop-ins. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harvester/config.h"
#include "harvester/macro.h"

#define MIN_USEC (60 * USEC_PER_SEC)
#define HOUR_USEC (60 * MIN_USEC)
#define DAY_USEC (24 * HOUR_USEC)

/* A 32-byte key, base64 (44 characters with one '='). */
#define GOOD_KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

/* ---- helpers -------------------------------------------------------------- */

struct errors {
	unsigned n;
	char msg[32][512];
	unsigned line[32];
};

static void collect(void *userdata, const char *file, unsigned line, const char *msg)
{
	struct errors *e = userdata;

	if (e->n < 32) {
		snprintf(e->msg[e->n], sizeof(e->msg[e->n]), "%s", msg);
		e->line[e->n] = line;
	}
	e->n++;
	assert_non_null(file);
}

struct tmp {
	char dir[64];
	char path[128];    /* dir/harvester.conf */
	char dropins[160]; /* dir/harvester.conf.d */
};

static void tmp_make(struct tmp *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/test-config.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/harvester.conf", t->dir);
	snprintf(t->dropins, sizeof(t->dropins), "%s.d", t->path);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void write_dropin(struct tmp *t, const char *name, const char *text)
{
	char p[256];

	mkdir(t->dropins, 0755);
	snprintf(p, sizeof(p), "%s/%s", t->dropins, name);
	write_file(p, text);
}

static void tmp_remove(struct tmp *t)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	assert_int_equal(system(cmd), 0);
}

/* Load text as the main file; return config_load's result. */
static int load_text(struct tmp *t, const char *text, struct config *c, struct errors *e)
{
	tmp_make(t);
	write_file(t->path, text);
	memset(e, 0, sizeof(*e));
	return config_load(t->path, NULL, c, collect, e);
}

static void assert_error(const struct errors *e, unsigned i, const char *file, unsigned line, const char *rest)
{
	char want[512];

	assert_true(i < e->n);
	snprintf(want, sizeof(want), "%s:%u: %s", file, line, rest);
	assert_string_equal(e->msg[i], want);
	assert_int_equal(e->line[i], line);
}

/* ---- value parsers --------------------------------------------------------- */

static void test_percent(void **state)
{
	static const struct { const char *s; uint32_t ppm; } good[] = {
		{ "1%", 10000 }, { "0.5%", 5000 }, { "100%", 1000000 }, { "0%", 0 },
		{ "0.0001%", 1 }, { "12.25%", 122500 }, { ".5%", 5000 }, { "1.50000%", 15000 },
		{ "007%", 70000 }, { "99.9999%", 999999 },
	};
	static const struct { const char *s; int err; } bad[] = {
		{ "1", -EINVAL }, { "1 %", -EINVAL }, { "%", -EINVAL }, { "", -EINVAL },
		{ "-1%", -EINVAL }, { "+1%", -EINVAL }, { "101%", -ERANGE }, { "100.0001%", -ERANGE },
		{ "0.00001%", -ERANGE }, { "1.%", -EINVAL }, { "abc", -EINVAL }, { "1%%", -EINVAL },
		{ "1e2%", -EINVAL }, { " 1%", -EINVAL }, { "1% ", -EINVAL }, { "1.2.3%", -EINVAL },
		{ "99999999999999999999999%", -ERANGE },
	};
	uint32_t v;

	for (size_t i = 0; i < ELEMENTSOF(good); i++) {
		v = 12345;
		assert_int_equal(parse_percent_ppm(good[i].s, &v), 0);
		assert_int_equal(v, good[i].ppm);
	}
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		v = 12345;
		if (parse_percent_ppm(bad[i].s, &v) != bad[i].err)
			fail_msg("parse_percent_ppm(\"%s\") != %d", bad[i].s, bad[i].err);
		assert_int_equal(v, 12345); /* untouched on failure */
	}
}

static void test_timespan(void **state)
{
	static const struct { const char *s; uint64_t usec; } good[] = {
		{ "90s", 90 * USEC_PER_SEC }, { "3min", 3 * MIN_USEC },
		{ "1h 30min", HOUR_USEC + 30 * MIN_USEC }, { "1h30min", HOUR_USEC + 30 * MIN_USEC },
		{ "250ms", 250 * USEC_PER_MSEC }, { "5", 5 * USEC_PER_SEC }, { "0", 0 },
		{ "1d", DAY_USEC }, { "1w", 7 * DAY_USEC }, { "2us", 2 }, { "2usec", 2 },
		{ "2\xc2\xb5s", 2 }, { "3msec", 3000 }, { "1.5h", HOUR_USEC + 30 * MIN_USEC },
		{ "1 h", HOUR_USEC }, { "30d", 30 * DAY_USEC }, { "1sec", USEC_PER_SEC },
		{ "2seconds", 2 * USEC_PER_SEC }, { "1second", USEC_PER_SEC }, { "2hr", 2 * HOUR_USEC },
		{ "2hours", 2 * HOUR_USEC }, { "1m", MIN_USEC }, { "2minutes", 2 * MIN_USEC },
		{ "3days", 3 * DAY_USEC }, { "2weeks", 14 * DAY_USEC },
		{ "1M", 2629800 * USEC_PER_SEC }, { "1y", 31557600 * USEC_PER_SEC },
		{ "1h 30", HOUR_USEC + 30 * USEC_PER_SEC }, { "  2s  ", 2 * USEC_PER_SEC },
		{ "1d 2h 3min 4s 5ms 6us", DAY_USEC + 2 * HOUR_USEC + 3 * MIN_USEC + 4 * USEC_PER_SEC + 5006 },
		{ "0.5s", 500000 }, { "0.000001s", 1 }, { "infinity", UINT64_MAX },
	};
	static const struct { const char *s; int err; } bad[] = {
		{ "", -EINVAL }, { " ", -EINVAL }, { "5x", -EINVAL }, { "-5s", -EINVAL },
		{ "1.2.3s", -EINVAL }, { "s", -EINVAL }, { "h5", -EINVAL }, { "1 h x", -EINVAL },
		{ "5 minutess", -EINVAL }, { "1H", -EINVAL }, { "0.0000001s", -ERANGE }, { "1.5us", -ERANGE },
		{ "99999999999999999999", -ERANGE }, { "1000000y", -ERANGE }, { "5s,", -EINVAL },
		{ "infinity 1s", -EINVAL },
	};
	uint64_t v;

	for (size_t i = 0; i < ELEMENTSOF(good); i++) {
		v = 7;
		if (parse_timespan_usec(good[i].s, &v) != 0 || v != good[i].usec)
			fail_msg("parse_timespan_usec(\"%s\") gave %llu", good[i].s, (unsigned long long)v);
	}
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		v = 7;
		if (parse_timespan_usec(bad[i].s, &v) != bad[i].err)
			fail_msg("parse_timespan_usec(\"%s\") != %d", bad[i].s, bad[i].err);
		assert_int_equal(v, 7);
	}
}

static void test_format_timespan(void **state)
{
	static const struct { uint64_t usec; const char *s; } cases[] = {
		{ 0, "0" }, { 90 * USEC_PER_SEC, "1min 30s" }, { HOUR_USEC + 30 * MIN_USEC, "1h 30min" },
		{ 250000, "250ms" }, { 1500001, "1s 500ms 1us" }, { 30 * DAY_USEC, "30d" },
		{ 3 * MIN_USEC, "3min" }, { 1, "1us" }, { UINT64_MAX, "infinity" },
		{ DAY_USEC + 1, "1d 1us" },
	};
	char buf[FORMAT_TIMESPAN_MAX];

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		uint64_t back = 0;

		assert_string_equal(format_timespan(buf, sizeof(buf), cases[i].usec), cases[i].s);
		/* The reverse of the parser. */
		assert_int_equal(parse_timespan_usec(buf, &back), 0);
		assert_true(back == cases[i].usec);
	}
	/* Largest finite value fits the documented size. */
	format_timespan(buf, sizeof(buf), UINT64_MAX - 1);
	assert_true(strlen(buf) < FORMAT_TIMESPAN_MAX - 1);
	/* A short buffer truncates but stays a string. */
	char small[6];
	assert_ptr_equal(format_timespan(small, sizeof(small), HOUR_USEC + 30 * MIN_USEC), small);
	assert_string_equal(small, "1h");
}

static void test_bytes(void **state)
{
	static const struct { const char *s; uint64_t v; } good[] = {
		{ "512M", 512ULL << 20 }, { "2G", 2ULL << 30 }, { "1024", 1024 }, { "1K", 1024 },
		{ "1.5K", 1536 }, { "0", 0 }, { "1E", 1ULL << 60 }, { "3T", 3ULL << 40 }, { "1P", 1ULL << 50 },
		{ "0.5G", 512ULL << 20 },
	};
	static const struct { const char *s; int err; } bad[] = {
		{ "1KB", -EINVAL }, { "M", -EINVAL }, { "-1", -EINVAL }, { "1.5", -ERANGE }, { "1X", -EINVAL },
		{ "16E", -ERANGE }, { "", -EINVAL }, { "1 M", -EINVAL }, { "1k", -EINVAL }, { "1.2.3M", -EINVAL },
	};
	uint64_t v;

	for (size_t i = 0; i < ELEMENTSOF(good); i++) {
		v = 7;
		if (parse_bytes(good[i].s, &v) != 0 || v != good[i].v)
			fail_msg("parse_bytes(\"%s\") gave %llu", good[i].s, (unsigned long long)v);
	}
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		v = 7;
		if (parse_bytes(bad[i].s, &v) != bad[i].err)
			fail_msg("parse_bytes(\"%s\") != %d", bad[i].s, bad[i].err);
		assert_int_equal(v, 7);
	}
}

static void test_temperature(void **state)
{
	static const struct { const char *s; int32_t mc; } good[] = {
		{ "80C", 80000 }, { "80.5C", 80500 }, { "-10C", -10000 }, { "0C", 0 }, { "120.125C", 120125 },
	};
	static const char *const bad[] = { "80", "80 C", "C", "80F", "80.0001C", "80c", "", "--1C", "1e3C" };
	int32_t v;

	for (size_t i = 0; i < ELEMENTSOF(good); i++) {
		assert_int_equal(parse_temperature_mc(good[i].s, &v), 0);
		assert_int_equal(v, good[i].mc);
	}
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		v = 7;
		if (parse_temperature_mc(bad[i], &v) >= 0)
			fail_msg("parse_temperature_mc(\"%s\") accepted", bad[i]);
		assert_int_equal(v, 7);
	}
}

static void test_boolean(void **state)
{
	static const char *const yes[] = { "yes", "YES", "y", "true", "True", "t", "on", "1" };
	static const char *const no[] = { "no", "No", "n", "false", "f", "off", "OFF", "0" };
	static const char *const bad[] = { "", "2", "yess", "enable", " yes" };
	bool b;

	for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
		b = false;
		assert_int_equal(parse_boolean(yes[i], &b), 0);
		assert_true(b);
	}
	for (size_t i = 0; i < ELEMENTSOF(no); i++) {
		b = true;
		assert_int_equal(parse_boolean(no[i], &b), 0);
		assert_false(b);
	}
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		assert_int_equal(parse_boolean(bad[i], &b), -EINVAL);
}

static void test_format_percent(void **state)
{
	char buf[FORMAT_PERCENT_MAX];

	assert_string_equal(format_percent(buf, sizeof(buf), 142000), "14.2%");
	assert_string_equal(format_percent(buf, sizeof(buf), 100000), "10%");
	assert_string_equal(format_percent(buf, sizeof(buf), 5000), "0.5%");
	assert_string_equal(format_percent(buf, sizeof(buf), 1), "0.0001%");
	assert_string_equal(format_percent(buf, sizeof(buf), 0), "0%");
	assert_string_equal(format_percent(buf, sizeof(buf), 1000000), "100%");
	assert_string_equal(format_percent(buf, sizeof(buf), 123456), "12.3456%");
}

/* ---- config_load ------------------------------------------------------------- */

static void assert_defaults(const struct config *c)
{
	assert_int_equal(c->cpu_ppm, 10000);
	assert_int_equal(c->gpu_ppm, 10000);
	assert_true(c->window_usec == DAY_USEC);
	assert_int_equal(c->burst_ppm, 500000);
	assert_true(c->input_idle_usec == 3 * MIN_USEC);
	assert_int_equal(c->max_foreground_cpu_ppm, 200000);
	assert_false(c->on_battery);
	assert_int_equal(c->max_temperature_mc, 80000);
	assert_int_equal(c->max_memory_pressure_ppm, 100000);
	assert_string_equal(c->job_user, "harvester");
	assert_true(c->job_memory_max_bytes == 512ULL << 20);
	assert_int_equal(c->job_tasks_max, 64);
	assert_int_equal(c->job_runtime_max_usec, 0);
	assert_int_equal(c->max_jobs, 1);
	assert_null(c->cgroup_root);
	assert_true(c->use_bpf);
	assert_null(c->pool_url);
	assert_null(c->pool_key);
	assert_int_equal(c->pool_max_tasks, 2);
	assert_null(c->pool_ca_file);
}

static void test_defaults(void **state)
{
	struct config c;

	config_defaults(&c);
	assert_defaults(&c);
	config_free(&c);
	config_free(&c); /* idempotent */
}

static void test_missing_file(void **state)
{
	struct tmp t;
	struct config c;
	struct errors e = {};

	tmp_make(&t);
	assert_int_equal(config_load(t.path, NULL, &c, collect, &e), 0);
	assert_int_equal(e.n, 0);
	assert_defaults(&c);
	config_free(&c);
	tmp_remove(&t);
}

static void test_unreadable_file(void **state)
{
	struct tmp t;
	struct config c = { .cpu_ppm = 4242 };
	struct errors e = {};

	tmp_make(&t);
	assert_int_equal(mkdir(t.path, 0755), 0); /* a directory where the file should be */
	assert_int_equal(config_load(t.path, NULL, &c, collect, &e), -EISDIR);
	assert_int_equal(c.cpu_ppm, 4242); /* untouched on failure */
	tmp_remove(&t);
}

/* The documented example, with every key set to a non-default value. */
static void test_full_file(void **state)
{
	struct tmp t;
	struct config c;
	struct errors e;

	assert_int_equal(load_text(&t,
		"\xef\xbb\xbf# harvester.conf\n"
		"; another comment\n"
		"\n"
		"[Budget]\n"
		"CPU=0.5%          # long-run share of the machine's total CPU capacity\n"
		"GPU=2%\n"
		"Window=1h 30min\n"
		"  Burst = 25%  \n"          /* indentation and spaces around '=' */
		"[Idle]\r\n"                  /* CRLF */
		"InputIdleSec=90\r\n"
		"MaxForegroundCPU=0%\n"
		"OnBattery=yes\n"
		"MaxTemperature=70.5C ; inline comment\n"
		"MaxMemoryPressure=2.5%\n"
		"[Jobs]\n"
		"User=nobody\n"
		"MemoryMax=2G\n"
		"TasksMax=100000\n"
		"RuntimeMaxSec=1d\n"
		"MaxJobs=1024\n"
		"[Daemon]\n"
		"CgroupRoot=/sys/fs/cgroup/harvester.slice\n"
		"BPF=no\n"
		"[Pool]\n"
		"URL=tls+tcp://pool.example.org:7450\n"
		"Key=" GOOD_KEY "\n"
		"MaxTasks=16\n"
		"CAFile=/etc/harvester/pool-ca.pem\n", &c, &e), 0);
	assert_int_equal(e.n, 0);
	assert_int_equal(c.cpu_ppm, 5000);
	assert_int_equal(c.gpu_ppm, 20000);
	assert_true(c.window_usec == 90 * MIN_USEC);
	assert_int_equal(c.burst_ppm, 250000);
	assert_true(c.input_idle_usec == 90 * USEC_PER_SEC);
	assert_int_equal(c.max_foreground_cpu_ppm, 0);
	assert_true(c.on_battery);
	assert_int_equal(c.max_temperature_mc, 70500);
	assert_int_equal(c.max_memory_pressure_ppm, 25000);
	assert_string_equal(c.job_user, "nobody");
	assert_true(c.job_memory_max_bytes == 2ULL << 30);
	assert_int_equal(c.job_tasks_max, 100000);
	assert_true(c.job_runtime_max_usec == DAY_USEC);
	assert_int_equal(c.max_jobs, 1024);
	assert_string_equal(c.cgroup_root, "/sys/fs/cgroup/harvester.slice");
	assert_false(c.use_bpf);
	assert_string_equal(c.pool_url, "tls+tcp://pool.example.org:7450");
	assert_string_equal(c.pool_key, GOOD_KEY);
	assert_int_equal(c.pool_max_tasks, 16);
	assert_string_equal(c.pool_ca_file, "/etc/harvester/pool-ca.pem");
	config_free(&c);
	tmp_remove(&t);
}

/* The example file shipped in tests/unit/data parses, with its line numbers. */
static void test_fixture(void **state)
{
	struct config c;
	struct errors e = {};
	const char *path = "tests/unit/data/harvester.conf";

	if (access(path, R_OK) < 0)
		skip(); /* run from elsewhere than the repository root */
	assert_int_equal(config_load(path, "tests/unit/data/harvester.conf.d", &c, collect, &e), 0);
	assert_int_equal(e.n, 0);
	assert_int_equal(c.cpu_ppm, 10000);
	assert_int_equal(c.max_foreground_cpu_ppm, 200000);   /* from the file */
	assert_int_equal(c.max_temperature_mc, 80000);
	assert_int_equal(c.burst_ppm, 300000);                /* from 50-burst.conf */
	assert_string_equal(c.pool_url, "tls+tcp://pool.example.org:7450");
	config_free(&c);

	memset(&e, 0, sizeof(e));
	assert_int_equal(config_load("tests/unit/data/bad.conf", "/nonexistent", &c, collect, &e), -EINVAL);
	for (unsigned i = 0; i < e.n && i < 32; i++)
		print_message("  %s\n", e.msg[i]);
	assert_int_equal(e.n, 3);
	assert_error(&e, 0, "tests/unit/data/bad.conf", 4, "CPU=150%: expected a percentage above 0% and at most 100%");
	assert_error(&e, 1, "tests/unit/data/bad.conf", 7, "unknown key 'Foo' in section [Idle]");
	assert_error(&e, 2, "tests/unit/data/bad.conf", 9, "Window=30s: expected a time span from 1min to 30d");
}

/* Every accepted value of every key, and every rejected one with its exact message. */
static void test_every_key(void **state)
{
	static const struct { const char *section, *line; } good[] = {
		{ "Budget", "CPU=100%\nBurst=100%" }, { "Budget", "CPU=0.0001%" }, { "Budget", "GPU=100%" },
		{ "Budget", "Window=1min" }, { "Budget", "Window=30d" }, { "Budget", "Window=720h" },
		{ "Budget", "Burst=100%" }, { "Idle", "InputIdleSec=1s" }, { "Idle", "InputIdleSec=1d" },
		{ "Idle", "MaxForegroundCPU=100%" }, { "Idle", "OnBattery=on" }, { "Idle", "MaxTemperature=30C" },
		{ "Idle", "MaxTemperature=120C" }, { "Idle", "MaxTemperature=0C" }, { "Idle", "MaxMemoryPressure=0%" },
		{ "Jobs", "User=harvest-job" }, { "Jobs", "User=65534" }, { "Jobs", "MemoryMax=1M" },
		{ "Jobs", "MemoryMax=1048576" }, { "Jobs", "TasksMax=1" }, { "Jobs", "RuntimeMaxSec=0" },
		{ "Jobs", "RuntimeMaxSec=infinity" }, { "Jobs", "MaxJobs=1" }, { "Daemon", "CgroupRoot=/" },
		{ "Daemon", "BPF=1" }, { "Pool", "URL=tcp://10.0.0.1:7450" }, { "Pool", "URL=ipc:///run/pool.ipc" },
		{ "Budget", "CPU=" }, { "Jobs", "User=" }, { "Pool", "URL=" }, { "Pool", "Key=" },
		{ "Pool", "MaxTasks=1" }, { "Pool", "MaxTasks=" }, { "Pool", "CAFile=/a.pem" }, { "Pool", "CAFile=" },
	};
	static const struct { const char *section, *line, *expected; } bad[] = {
		{ "Budget", "CPU=0%", "a percentage above 0% and at most 100%" },
		{ "Budget", "CPU=150%", "a percentage above 0% and at most 100%" },
		{ "Budget", "CPU=1", "a percentage above 0% and at most 100%" },
		{ "Budget", "GPU=0%", "a percentage above 0% and at most 100%" },
		{ "Budget", "Burst=0%", "a percentage above 0% and at most 100%" },
		{ "Budget", "Window=59s", "a time span from 1min to 30d" },
		{ "Budget", "Window=31d", "a time span from 1min to 30d" },
		{ "Budget", "Window=1 fortnight", "a time span from 1min to 30d" },
		{ "Budget", "Window=infinity", "a time span from 1min to 30d" },
		{ "Idle", "InputIdleSec=999ms", "a time span from 1s to 1d" },
		{ "Idle", "InputIdleSec=1d 1s", "a time span from 1s to 1d" },
		{ "Idle", "MaxForegroundCPU=101%", "a percentage from 0% (no limit) to 100%" },
		{ "Idle", "MaxForegroundCPU=50", "a percentage from 0% (no limit) to 100%" },
		{ "Idle", "OnBattery=maybe", "a boolean (yes or no)" },
		{ "Idle", "MaxTemperature=29C", "a temperature from 30C to 120C, or 0C for no limit" },
		{ "Idle", "MaxTemperature=121C", "a temperature from 30C to 120C, or 0C for no limit" },
		{ "Idle", "MaxTemperature=85", "a temperature from 30C to 120C, or 0C for no limit" },
		{ "Idle", "MaxMemoryPressure=-1%", "a percentage from 0% (no limit) to 100%" },
		{ "Jobs", "User=root", "an unprivileged user name or UID (not root)" },
		{ "Jobs", "User=0", "an unprivileged user name or UID (not root)" },
		{ "Jobs", "User=a b", "an unprivileged user name or UID (not root)" },
		{ "Jobs", "User=-x", "an unprivileged user name or UID (not root)" },
		{ "Jobs", "MemoryMax=1023K", "a size of at least 1M (K, M, G, T are 1024-based)" },
		{ "Jobs", "MemoryMax=lots", "a size of at least 1M (K, M, G, T are 1024-based)" },
		{ "Jobs", "TasksMax=0", "an integer from 1 to 100000" },
		{ "Jobs", "TasksMax=100001", "an integer from 1 to 100000" },
		{ "Jobs", "TasksMax=-1", "an integer from 1 to 100000" },
		{ "Jobs", "TasksMax=99999999999999999999999", "an integer from 1 to 100000" },
		{ "Jobs", "RuntimeMaxSec=forever", "a time span (0 or infinity: no limit)" },
		{ "Jobs", "MaxJobs=0", "an integer from 1 to 1024" },
		{ "Jobs", "MaxJobs=1025", "an integer from 1 to 1024" },
		{ "Daemon", "CgroupRoot=relative/path", "an absolute path without . or .. components" },
		{ "Daemon", "CgroupRoot=/a/../b", "an absolute path without . or .. components" },
		{ "Daemon", "BPF=perhaps", "a boolean (yes or no)" },
		{ "Pool", "URL=http://pool.example.org", "a URL starting with tls+tcp://, tcp:// or ipc://" },
		{ "Pool", "MaxTasks=0", "an integer from 1 to 16" },
		{ "Pool", "MaxTasks=17", "an integer from 1 to 16" },
		{ "Pool", "CAFile=ca.pem", "an absolute path to a PEM file" },
		{ "Pool", "URL=tcp://", "a URL starting with tls+tcp://, tcp:// or ipc://" },
		{ "Pool", "URL=pool.example.org:7450", "a URL starting with tls+tcp://, tcp:// or ipc://" },
		{ "Pool", "Key=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "the base64 encoding of a 32-byte ed25519 public key" },
		{ "Pool", "Key=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gIQ==", "the base64 encoding of a 32-byte ed25519 public key" },
		{ "Pool", "Key=not base64!", "the base64 encoding of a 32-byte ed25519 public key" },
		{ "Pool", "Key=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=x", "the base64 encoding of a 32-byte ed25519 public key" },
	};
	char text[512], want[512];
	struct config c;
	struct errors e;
	struct tmp t;

	for (size_t i = 0; i < ELEMENTSOF(good); i++) {
		snprintf(text, sizeof(text), "[%s]\n%s\n", good[i].section, good[i].line);
		if (load_text(&t, text, &c, &e) != 0)
			fail_msg("rejected [%s] %s: %s", good[i].section, good[i].line, e.msg[0]);
		config_free(&c);
		tmp_remove(&t);
	}
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		snprintf(text, sizeof(text), "# comment\n[%s]\n%s\n", bad[i].section, bad[i].line);
		assert_int_equal(load_text(&t, text, &c, &e), -EINVAL);
		snprintf(want, sizeof(want), "%s: expected %s", bad[i].line, bad[i].expected);
		if (e.n != 1)
			fail_msg("%s: %u errors, first: %s", bad[i].line, e.n, e.msg[0]);
		assert_error(&e, 0, t.path, 3, want);
		tmp_remove(&t);
	}
}

static void test_user_and_empty_reset(void **state)
{
	struct config c;
	struct errors e;
	struct tmp t;

	assert_int_equal(load_text(&t, "[Jobs]\nUser=nobody\nUser=\n[Budget]\nCPU=5%\nCPU=\n[Pool]\nURL=tcp://x:1\nURL=\n",
				   &c, &e), 0);
	assert_string_equal(c.job_user, "harvester");
	assert_int_equal(c.cpu_ppm, 10000);
	assert_null(c.pool_url);
	config_free(&c);
	tmp_remove(&t);
}

/* Every error is reported, each with its own line, and the load fails. */
static void test_multiple_errors(void **state)
{
	struct config c = { .cpu_ppm = 4242 };
	struct errors e;
	struct tmp t;

	assert_int_equal(load_text(&t,
		"[Budget]\n"                 /* 1 */
		"CPU=150%\n"                 /* 2 */
		"Foo=1\n"                    /* 3 */
		"just some words\n"          /* 4 */
		"\n"                         /* 5 */
		"[Nope]\n"                   /* 6 */
		"Bar=2\n"                    /* 7: not reported again, [Nope] was */
		"[Idle]\n"                   /* 8 */
		"InputIdleSec=forever\n"     /* 9 */
		"OnBattery=yes\n"            /* 10: fine */
		"MaxTemperature=200C\n"      /* 11 */
		"Name: value\n"              /* 12 */
		"[Budget\n"                  /* 13 */
		"CPU=5%\n"                   /* 14: under a broken header, skipped */
		"[Jobs]\n"                   /* 15 */
		"Tasks Max=5\n"              /* 16 */
		, &c, &e), -EINVAL);
	for (unsigned i = 0; i < e.n && i < 32; i++)
		print_message("  %s\n", e.msg[i]);
	assert_int_equal(e.n, 9);
	assert_error(&e, 0, t.path, 2, "CPU=150%: expected a percentage above 0% and at most 100%");
	assert_error(&e, 1, t.path, 3, "unknown key 'Foo' in section [Budget]");
	assert_error(&e, 2, t.path, 4, "just some words: expected Key=value");
	assert_error(&e, 3, t.path, 6, "unknown section [Nope]");
	assert_error(&e, 4, t.path, 9, "InputIdleSec=forever: expected a time span from 1s to 1d");
	assert_error(&e, 5, t.path, 11, "MaxTemperature=200C: expected a temperature from 30C to 120C, or 0C for no limit");
	assert_error(&e, 6, t.path, 12, "Name: value: expected Key=value");
	assert_error(&e, 7, t.path, 13, "[Budget: expected a section header like [Budget]");
	assert_error(&e, 8, t.path, 16, "Tasks Max=5: expected a key name (letters, digits, _) before '='");
	assert_int_equal(c.cpu_ppm, 4242); /* untouched on failure */
	tmp_remove(&t);

	/* Without a callback the result is the same. */
	tmp_make(&t);
	write_file(t.path, "[Budget]\nCPU=150%\n");
	assert_int_equal(config_load(t.path, NULL, &c, NULL, NULL), -EINVAL);
	tmp_remove(&t);
}

static void test_key_outside_section_and_long_line(void **state)
{
	char text[600];
	struct config c;
	struct errors e;
	struct tmp t;

	snprintf(text, sizeof(text), "CPU=5%%\n[Daemon]\nCgroupRoot=/%0300d\n[Budget]\nGPU=3%%\n", 0);
	assert_int_equal(load_text(&t, text, &c, &e), -EINVAL);
	assert_int_equal(e.n, 2);
	assert_error(&e, 0, t.path, 1, "CPU=5%: expected a [Section] header before the first key");
	assert_int_equal(e.line[1], 3);
	assert_non_null(strstr(e.msg[1], "CgroupRoot=...: expected a line of at most"));
	tmp_remove(&t);
}

/* Duplicates: the last one wins, as in systemd. */
static void test_duplicates(void **state)
{
	struct config c;
	struct errors e;
	struct tmp t;

	assert_int_equal(load_text(&t, "[Budget]\nCPU=2%\nCPU=3%\n[Idle]\n[Budget]\nCPU=4%\n", &c, &e), 0);
	assert_int_equal(c.cpu_ppm, 40000);
	config_free(&c);
	tmp_remove(&t);
}

static void test_dropins(void **state)
{
	struct config c;
	struct errors e = {};
	struct tmp t;
	char other[200];

	tmp_make(&t);
	write_file(t.path, "[Budget]\nCPU=2%\nGPU=2%\n[Jobs]\nMaxJobs=2\n");
	write_dropin(&t, "20-b.conf", "[Budget]\nCPU=4%\n");
	write_dropin(&t, "10-a.conf", "[Budget]\nCPU=3%\nGPU=3%\n");
	write_dropin(&t, "30-c.conf.disabled", "[Budget]\nCPU=9%\n");  /* not *.conf */
	write_dropin(&t, ".99-hidden.conf", "[Budget]\nCPU=8%\n");     /* hidden */
	write_dropin(&t, "Z-upper.conf", "[Jobs]\nMaxJobs=5\n");        /* 'Z' < 'a' lexically */
	write_dropin(&t, "a-lower.conf", "[Jobs]\nMaxJobs=6\n");
	snprintf(other, sizeof(other), "%s/dir.conf", t.dropins);
	assert_int_equal(mkdir(other, 0755), 0);                          /* not a file */
	assert_int_equal(config_load(t.path, NULL, &c, collect, &e), 0);
	assert_int_equal(e.n, 0);
	assert_int_equal(c.cpu_ppm, 40000);  /* 20-b.conf, the last */
	assert_int_equal(c.gpu_ppm, 30000);  /* 10-a.conf */
	assert_int_equal(c.max_jobs, 6);     /* a-lower.conf after Z-upper.conf */
	config_free(&c);

	/* An explicit drop-in directory replaces path.d. */
	snprintf(other, sizeof(other), "%s/other.d", t.dir);
	assert_int_equal(mkdir(other, 0755), 0);
	snprintf(other, sizeof(other), "%s/other.d/x.conf", t.dir);
	write_file(other, "[Budget]\nCPU=7%\n");
	snprintf(other, sizeof(other), "%s/other.d", t.dir);
	assert_int_equal(config_load(t.path, other, &c, collect, &e), 0);
	assert_int_equal(c.cpu_ppm, 70000);
	assert_int_equal(c.gpu_ppm, 20000);
	config_free(&c);

	/* Drop-ins apply with no main file, and their errors name their own file. */
	assert_int_equal(unlink(t.path), 0);
	write_dropin(&t, "40-bad.conf", "\n[Budget]\nWindow=1s\n");
	memset(&e, 0, sizeof(e));
	assert_int_equal(config_load(t.path, NULL, &c, collect, &e), -EINVAL);
	snprintf(other, sizeof(other), "%s/40-bad.conf", t.dropins);
	assert_int_equal(e.n, 1);
	assert_error(&e, 0, other, 3, "Window=1s: expected a time span from 1min to 30d");
	tmp_remove(&t);
}

/* Burst must be at least CPU, judged on the final values of all files. */
static void test_burst_below_cpu(void **state)
{
	struct config c;
	struct errors e = {};
	struct tmp t;
	char where[200];

	/* Burst set below CPU in a drop-in: reported where Burst was set. */
	tmp_make(&t);
	write_file(t.path, "[Budget]\nCPU=20%\nBurst=30%\n");
	write_dropin(&t, "10.conf", "# lower the burst\n[Budget]\nBurst=10%\n");
	assert_int_equal(config_load(t.path, NULL, &c, collect, &e), -EINVAL);
	snprintf(where, sizeof(where), "%s/10.conf", t.dropins);
	assert_int_equal(e.n, 1);
	assert_error(&e, 0, where, 3, "Burst=10%: expected a percentage at least CPU=20%");

	/* ... and fixed again by a later drop-in: fine. */
	write_dropin(&t, "20.conf", "[Budget]\nCPU=5%\n");
	assert_int_equal(config_load(t.path, NULL, &c, collect, &e), 0);
	assert_int_equal(c.burst_ppm, 100000);
	config_free(&c);
	tmp_remove(&t);

	/* Burst left at its default: reported where CPU was set. */
	memset(&e, 0, sizeof(e));
	assert_int_equal(load_text(&t, "[Budget]\nGPU=1%\n\nCPU=60%\n", &c, &e), -EINVAL);
	assert_int_equal(e.n, 1);
	assert_error(&e, 0, t.path, 4, "CPU=60%: expected a percentage at most Burst=50%");
	tmp_remove(&t);

	/* Equal is fine. */
	assert_int_equal(load_text(&t, "[Budget]\nCPU=50%\n", &c, &e), 0);
	config_free(&c);
	tmp_remove(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_percent),
		cmocka_unit_test(test_timespan),
		cmocka_unit_test(test_format_timespan),
		cmocka_unit_test(test_bytes),
		cmocka_unit_test(test_temperature),
		cmocka_unit_test(test_boolean),
		cmocka_unit_test(test_format_percent),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_unreadable_file),
		cmocka_unit_test(test_full_file),
		cmocka_unit_test(test_fixture),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_user_and_empty_reset),
		cmocka_unit_test(test_multiple_errors),
		cmocka_unit_test(test_key_outside_section_and_long_line),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_dropins),
		cmocka_unit_test(test_burst_below_cpu),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
