/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * harvester.conf parsing. libinih splits "Key=value" lines; our own reader
 * feeds it one line at a time, so we always know the line number, and it
 * checks what inih would otherwise accept or reject silently (lines without
 * '=', ':' separators, indented continuation lines, over-long lines,
 * unknown sections).
 */
#include "harvester/config.h"
#include "harvester/fileio.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harvester/macro.h"

#define USEC_PER_MINUTE (60ULL * USEC_PER_SEC)
#define USEC_PER_HOUR   (60ULL * USEC_PER_MINUTE)
#define USEC_PER_DAY    (24ULL * USEC_PER_HOUR)
#define USEC_PER_WEEK   (7ULL * USEC_PER_DAY)
#define USEC_PER_MONTH  (2629800ULL * USEC_PER_SEC)   /* 30.44 d, as systemd */
#define USEC_PER_YEAR   (31557600ULL * USEC_PER_SEC)  /* 365.25 d, as systemd */

/* ---- value parsers ------------------------------------------------------- */

/* Parse "DIGITS[.DIGITS]" at *p scaled by mult. The result must be exact:
 * a fraction finer than the unit holds is -ERANGE, never silently rounded.
 * Advances *p. */
static int parse_scaled(const char **p, uint64_t mult, uint64_t *ret)
{
	const char *s = *p, *frac = NULL;
	size_t frac_len = 0;
	uint64_t v = 0;
	bool any = false;

	while (isdigit((unsigned char)*s)) {
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v))
			return -ERANGE;
		s++;
		any = true;
	}
	if (__builtin_mul_overflow(v, mult, &v))
		return -ERANGE;
	if (*s == '.') {
		s++;
		if (!isdigit((unsigned char)*s))
			return -EINVAL;
		frac = s;
		while (isdigit((unsigned char)*s))
			s++;
		frac_len = (size_t)(s - frac);
		any = true;
	}
	if (!any)
		return -EINVAL;
	while (frac_len > 0 && frac[frac_len - 1] == '0')
		frac_len--;
	if (frac_len > 0) {
		uint64_t f = 0, pow10 = 1, fm;

		if (frac_len > 18)
			return -ERANGE;
		for (size_t i = 0; i < frac_len; i++) {
			f = f * 10 + (uint64_t)(frac[i] - '0');
			pow10 *= 10;
		}
		if (__builtin_mul_overflow(f, mult, &fm) || fm % pow10 != 0)
			return -ERANGE;
		if (__builtin_add_overflow(v, fm / pow10, &v))
			return -ERANGE;
	}
	*p = s;
	*ret = v;
	return 0;
}

int parse_percent_ppm(const char *s, uint32_t *ret)
{
	uint64_t v;
	int r;

	if (!s || (!isdigit((unsigned char)*s) && *s != '.'))
		return -EINVAL;
	r = parse_scaled(&s, PPM_ONE / 100, &v);
	if (r < 0)
		return r;
	if (strcmp(s, "%") != 0)
		return -EINVAL;
	if (v > PPM_ONE)
		return -ERANGE;
	*ret = (uint32_t)v;
	return 0;
}

static const struct {
	const char *name;
	uint64_t usec;
} time_units[] = {
	{ "us", 1 }, { "usec", 1 }, { "\xc2\xb5s", 1 }, { "\xce\xbcs", 1 },
	{ "ms", USEC_PER_MSEC }, { "msec", USEC_PER_MSEC },
	{ "s", USEC_PER_SEC }, { "sec", USEC_PER_SEC }, { "second", USEC_PER_SEC },
	{ "seconds", USEC_PER_SEC },
	{ "m", USEC_PER_MINUTE }, { "min", USEC_PER_MINUTE }, { "minute", USEC_PER_MINUTE },
	{ "minutes", USEC_PER_MINUTE },
	{ "h", USEC_PER_HOUR }, { "hr", USEC_PER_HOUR }, { "hour", USEC_PER_HOUR },
	{ "hours", USEC_PER_HOUR },
	{ "d", USEC_PER_DAY }, { "day", USEC_PER_DAY }, { "days", USEC_PER_DAY },
	{ "w", USEC_PER_WEEK }, { "week", USEC_PER_WEEK }, { "weeks", USEC_PER_WEEK },
	{ "M", USEC_PER_MONTH }, { "month", USEC_PER_MONTH }, { "months", USEC_PER_MONTH },
	{ "y", USEC_PER_YEAR }, { "year", USEC_PER_YEAR }, { "years", USEC_PER_YEAR },
};

static bool is_unit_char(char c)
{
	return isalpha((unsigned char)c) || (unsigned char)c >= 0x80;
}

int parse_timespan_usec(const char *s, uint64_t *ret)
{
	uint64_t total = 0;
	bool any = false;

	if (!s)
		return -EINVAL;
	s += strspn(s, " \t");
	if (strcmp(s, "infinity") == 0) {
		*ret = UINT64_MAX;
		return 0;
	}
	for (;;) {
		const char *unit;
		size_t n;
		uint64_t mult = USEC_PER_SEC, v;
		int r;

		s += strspn(s, " \t");
		if (!*s)
			break;
		if (!isdigit((unsigned char)*s) && *s != '.')
			return -EINVAL;
		/* Scale after the unit is known: parse the number as a string first. */
		const char *num = s;
		while (isdigit((unsigned char)*s) || *s == '.')
			s++;
		const char *num_end = s;
		s += strspn(s, " \t");
		unit = s;
		while (is_unit_char(*s))
			s++;
		n = (size_t)(s - unit);
		if (n > 0) {
			size_t i;
			for (i = 0; i < ELEMENTSOF(time_units); i++)
				if (strlen(time_units[i].name) == n && memcmp(time_units[i].name, unit, n) == 0)
					break;
			if (i == ELEMENTSOF(time_units))
				return -EINVAL;
			mult = time_units[i].usec;
		}
		char numbuf[64];
		if ((size_t)(num_end - num) >= sizeof(numbuf))
			return -ERANGE;
		memcpy(numbuf, num, (size_t)(num_end - num));
		numbuf[num_end - num] = '\0';
		const char *q = numbuf;
		r = parse_scaled(&q, mult, &v);
		if (r < 0)
			return r;
		if (*q)
			return -EINVAL; /* "1.2.3" */
		if (__builtin_add_overflow(total, v, &total) || total == UINT64_MAX)
			return -ERANGE;
		any = true;
	}
	if (!any)
		return -EINVAL;
	*ret = total;
	return 0;
}

int parse_bytes(const char *s, uint64_t *ret)
{
	static const char suffixes[] = "KMGTPE";
	uint64_t mult = 1, v;
	const char *end;
	int r;

	if (!s || (!isdigit((unsigned char)*s) && *s != '.'))
		return -EINVAL;
	end = s + strspn(s, "0123456789.");
	if (memchr(s, '.', (size_t)(end - s)) != memrchr(s, '.', (size_t)(end - s)))
		return -EINVAL; /* "1.2.3M" */
	if (*end) {
		const char *k = strchr(suffixes, *end);
		if (!k || end[1])
			return -EINVAL;
		for (const char *i = suffixes; i <= k; i++)
			mult *= 1024;
	}
	r = parse_scaled(&s, mult, &v);
	if (r < 0)
		return r;
	if (s != end)
		return -EINVAL;
	*ret = v;
	return 0;
}

int parse_temperature_mc(const char *s, int32_t *ret)
{
	bool neg = false;
	uint64_t v;
	int r;

	if (!s)
		return -EINVAL;
	if (*s == '-') {
		neg = true;
		s++;
	}
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	r = parse_scaled(&s, 1000, &v);
	if (r < 0)
		return r;
	if (strcmp(s, "C") != 0)
		return -EINVAL;
	if (v > 1000000000ULL)
		return -ERANGE;
	*ret = neg ? -(int32_t)v : (int32_t)v;
	return 0;
}

int parse_boolean(const char *s, bool *ret)
{
	static const char *const yes[] = { "1", "yes", "y", "true", "t", "on" };
	static const char *const no[] = { "0", "no", "n", "false", "f", "off" };

	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < ELEMENTSOF(yes); i++)
		if (strcasecmp(s, yes[i]) == 0) {
			*ret = true;
			return 0;
		}
	for (size_t i = 0; i < ELEMENTSOF(no); i++)
		if (strcasecmp(s, no[i]) == 0) {
			*ret = false;
			return 0;
		}
	return -EINVAL;
}

const char *format_timespan(char *buf, size_t len, uint64_t usec)
{
	static const struct {
		const char *suffix;
		uint64_t usec;
	} table[] = {
		{ "d", USEC_PER_DAY }, { "h", USEC_PER_HOUR }, { "min", USEC_PER_MINUTE },
		{ "s", USEC_PER_SEC }, { "ms", USEC_PER_MSEC }, { "us", 1 },
	};
	size_t off = 0;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	if (usec == UINT64_MAX) {
		snprintf(buf, len, "infinity");
		return buf;
	}
	if (usec == 0) {
		snprintf(buf, len, "0");
		return buf;
	}
	for (size_t i = 0; i < ELEMENTSOF(table) && usec > 0; i++) {
		uint64_t n = usec / table[i].usec;
		int k;

		if (n == 0)
			continue;
		usec -= n * table[i].usec;
		k = snprintf(buf + off, len - off, "%s%" PRIu64 "%s", off > 0 ? " " : "", n, table[i].suffix);
		if (k < 0 || (size_t)k >= len - off) {
			buf[off] = '\0'; /* no half component: "1h", not "1h 30" */
			break;
		}
		off += (size_t)k;
	}
	return buf;
}

const char *format_percent(char *buf, size_t len, uint32_t ppm)
{
	unsigned frac = ppm % (PPM_ONE / 100);
	int digits = 4;

	if (len == 0)
		return buf;
	if (frac == 0) {
		snprintf(buf, len, "%u%%", ppm / (PPM_ONE / 100));
		return buf;
	}
	while (frac % 10 == 0) {
		frac /= 10;
		digits--;
	}
	snprintf(buf, len, "%u.%0*u%%", ppm / (PPM_ONE / 100), digits, frac);
	return buf;
}

/* ---- defaults ------------------------------------------------------------ */

void config_defaults(struct config *c)
{
	*c = (struct config) {
		.cpu_ppm = 10000,
		.gpu_ppm = 10000,
		.window_usec = 24 * USEC_PER_HOUR,
		.burst_ppm = 500000,
		.input_idle_usec = 3 * USEC_PER_MINUTE,
		.max_foreground_cpu_ppm = 200000,
		.on_battery = false,
		.max_temperature_mc = 80000,
		.max_memory_pressure_ppm = 100000,
		.job_user = strdup("harvester"),
		.job_memory_max_bytes = 512ULL << 20,
		.job_tasks_max = 64,
		.job_runtime_max_usec = 0,
		.max_jobs = 1,
		.pool_max_tasks = 2,
		.cgroup_root = NULL,
		.use_bpf = true,
	};
}

void config_free(struct config *c)
{
	if (!c)
		return;
	free(c->job_user);
	free(c->cgroup_root);
	free(c->pool_url);
	free(c->pool_key);
	free(c->pool_ca_file);
	c->job_user = c->cgroup_root = c->pool_url = c->pool_key = c->pool_ca_file = NULL;
}

/* ---- keys ---------------------------------------------------------------- */

/* Each setter gets a non-empty value; on failure it returns the sentence that
 * follows "expected" in the error. An empty value resets to the default. */
typedef const char *(*setter_fn)(struct config *c, const struct config *def, const char *v);

#define EXPECT_SHARE "a percentage above 0% and at most 100%"
#define EXPECT_LIMIT "a percentage from 0% (no limit) to 100%"

static const char *set_share(uint32_t *field, uint32_t def, const char *v)
{
	uint32_t ppm;

	if (!*v) { *field = def; return NULL; }
	if (parse_percent_ppm(v, &ppm) < 0 || ppm == 0)
		return EXPECT_SHARE;
	*field = ppm;
	return NULL;
}

static const char *set_cpu(struct config *c, const struct config *def, const char *v)
{
	return set_share(&c->cpu_ppm, def->cpu_ppm, v);
}

static const char *set_gpu(struct config *c, const struct config *def, const char *v)
{
	return set_share(&c->gpu_ppm, def->gpu_ppm, v);
}

static const char *set_burst(struct config *c, const struct config *def, const char *v)
{
	return set_share(&c->burst_ppm, def->burst_ppm, v);
}

static const char *set_span(uint64_t *field, uint64_t def, const char *v, uint64_t min, uint64_t max,
			    const char *expect)
{
	uint64_t u;

	if (!*v) { *field = def; return NULL; }
	if (parse_timespan_usec(v, &u) < 0 || u < min || u > max)
		return expect;
	*field = u;
	return NULL;
}

static const char *set_window(struct config *c, const struct config *def, const char *v)
{
	return set_span(&c->window_usec, def->window_usec, v, USEC_PER_MINUTE, 30 * USEC_PER_DAY,
			"a time span from 1min to 30d");
}

static const char *set_input_idle(struct config *c, const struct config *def, const char *v)
{
	return set_span(&c->input_idle_usec, def->input_idle_usec, v, USEC_PER_SEC, USEC_PER_DAY,
			"a time span from 1s to 1d");
}

static const char *set_runtime_max(struct config *c, const struct config *def, const char *v)
{
	const char *e = set_span(&c->job_runtime_max_usec, def->job_runtime_max_usec, v, 0, UINT64_MAX,
				 "a time span (0 or infinity: no limit)");
	if (!e && c->job_runtime_max_usec == UINT64_MAX)
		c->job_runtime_max_usec = 0; /* systemd's RuntimeMaxSec=infinity: no limit */
	return e;
}

static const char *set_max_fg_cpu(struct config *c, const struct config *def, const char *v)
{
	if (!*v) { c->max_foreground_cpu_ppm = def->max_foreground_cpu_ppm; return NULL; }
	return parse_percent_ppm(v, &c->max_foreground_cpu_ppm) < 0 ? EXPECT_LIMIT : NULL;
}

static const char *set_max_pressure(struct config *c, const struct config *def, const char *v)
{
	if (!*v) { c->max_memory_pressure_ppm = def->max_memory_pressure_ppm; return NULL; }
	return parse_percent_ppm(v, &c->max_memory_pressure_ppm) < 0 ? EXPECT_LIMIT : NULL;
}

static const char *set_on_battery(struct config *c, const struct config *def, const char *v)
{
	if (!*v) { c->on_battery = def->on_battery; return NULL; }
	return parse_boolean(v, &c->on_battery) < 0 ? "a boolean (yes or no)" : NULL;
}

static const char *set_bpf(struct config *c, const struct config *def, const char *v)
{
	if (!*v) { c->use_bpf = def->use_bpf; return NULL; }
	return parse_boolean(v, &c->use_bpf) < 0 ? "a boolean (yes or no)" : NULL;
}

static const char *set_opencl_cpu(struct config *c, const struct config *def, const char *v)
{
	if (!*v) { c->opencl_cpu_devices = def->opencl_cpu_devices; return NULL; }
	return parse_boolean(v, &c->opencl_cpu_devices) < 0 ? "a boolean (yes or no)" : NULL;
}

static const char *set_max_temperature(struct config *c, const struct config *def, const char *v)
{
	int32_t t;

	if (!*v) { c->max_temperature_mc = def->max_temperature_mc; return NULL; }
	if (parse_temperature_mc(v, &t) < 0 || (t != 0 && (t < 30000 || t > 120000)))
		return "a temperature from 30C to 120C, or 0C for no limit";
	c->max_temperature_mc = t;
	return NULL;
}

static const char *set_uint(uint64_t *field, uint64_t def, const char *v, uint64_t min, uint64_t max,
			    const char *expect)
{
	uint64_t u = 0;

	if (!*v) { *field = def; return NULL; }
	for (const char *s = v; *s; s++) {
		if (!isdigit((unsigned char)*s) || s - v > 18)
			return expect;
		u = u * 10 + (uint64_t)(*s - '0');
	}
	if (u < min || u > max)
		return expect;
	*field = u;
	return NULL;
}

static const char *set_tasks_max(struct config *c, const struct config *def, const char *v)
{
	return set_uint(&c->job_tasks_max, def->job_tasks_max, v, 1, 100000, "an integer from 1 to 100000");
}

static const char *set_max_jobs(struct config *c, const struct config *def, const char *v)
{
	uint64_t u = c->max_jobs;
	const char *e = set_uint(&u, def->max_jobs, v, 1, 1024, "an integer from 1 to 1024");
	if (!e)
		c->max_jobs = (unsigned)u;
	return e;
}

static const char *set_memory_max(struct config *c, const struct config *def, const char *v)
{
	uint64_t b;

	if (!*v) { c->job_memory_max_bytes = def->job_memory_max_bytes; return NULL; }
	if (parse_bytes(v, &b) < 0 || b < (1ULL << 20))
		return "a size of at least 1M (K, M, G, T are 1024-based)";
	c->job_memory_max_bytes = b;
	return NULL;
}

/* Replace *field with a copy of v, or the default's copy when v is empty. */
static const char *set_string(char **field, const char *def, const char *v)
{
	const char *src = *v ? v : def;
	char *copy = NULL;

	if (src) {
		copy = strdup(src);
		if (!copy)
			return "memory to hold it (out of memory)";
	}
	free(*field);
	*field = copy;
	return NULL;
}

static bool valid_user_name(const char *v)
{
	size_t n = strlen(v);
	bool digits = true;

	if (n == 0 || n > 31)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)v[i];
		if (!isdigit(ch))
			digits = false;
		if (!(isalnum(ch) || ch == '_' || (i > 0 && (ch == '-' || ch == '.'))))
			return false;
	}
	/* Jobs must never run as root, by name or by number. */
	if (strcmp(v, "root") == 0 || (digits && strtoul(v, NULL, 10) == 0))
		return false;
	return true;
}

static const char *set_user(struct config *c, const struct config *def, const char *v)
{
	if (*v && !valid_user_name(v))
		return "an unprivileged user name or UID (not root)";
	return set_string(&c->job_user, def->job_user, v);
}

static const char *set_cgroup_root(struct config *c, const struct config *def, const char *v)
{
	if (*v && (v[0] != '/' || strstr(v, "/../") || strstr(v, "/./") ||
		   (strlen(v) >= 3 && strcmp(v + strlen(v) - 3, "/..") == 0) || strlen(v) >= PATH_MAX))
		return "an absolute path without . or .. components";
	return set_string(&c->cgroup_root, def->cgroup_root, v);
}

static const char *set_url(struct config *c, const struct config *def, const char *v)
{
	static const char *const schemes[] = { "tls+tcp://", "tcp://", "ipc://" };
	bool ok = !*v;

	for (size_t i = 0; !ok && i < ELEMENTSOF(schemes); i++) {
		size_t n = strlen(schemes[i]);
		ok = strncmp(v, schemes[i], n) == 0 && v[n] != '\0' && !strpbrk(v, " \t");
	}
	if (!ok)
		return "a URL starting with tls+tcp://, tcp:// or ipc://";
	return set_string(&c->pool_url, def->pool_url, v);
}

static const char *set_key(struct config *c, const struct config *def, const char *v)
{
	if (*v) {
		unsigned char bin[32];
		size_t bin_len = 0;
		const char *end = NULL;

		if (sodium_base642bin(bin, sizeof(bin), v, strlen(v), NULL, &bin_len, &end,
				      sodium_base64_VARIANT_ORIGINAL) < 0 ||
		    bin_len != sizeof(bin) || !end || *end != '\0')
			return "the base64 encoding of a 32-byte ed25519 public key";
	}
	return set_string(&c->pool_key, def->pool_key, v);
}

static const char *set_pool_max_tasks(struct config *c, const struct config *def, const char *v)
{
	uint64_t u = c->pool_max_tasks;
	/* One fetch asks for at most LINK_TASKS_MAX (16) tasks. */
	const char *e = set_uint(&u, def->pool_max_tasks, v, 1, 16, "an integer from 1 to 16");
	if (!e)
		c->pool_max_tasks = (unsigned)u;
	return e;
}

static const char *set_ca_file(struct config *c, const struct config *def, const char *v)
{
	if (*v && (v[0] != '/' || strlen(v) >= PATH_MAX))
		return "an absolute path to a PEM file";
	return set_string(&c->pool_ca_file, def->pool_ca_file, v);
}

enum {
	KEY_CPU = 0,
	KEY_BURST = 3,
};

static const struct key {
	const char *section, *name;
	setter_fn set;
} keys[] = {
	[KEY_CPU] = { "Budget", "CPU", set_cpu },
	{ "Budget", "GPU", set_gpu },
	{ "Budget", "Window", set_window },
	[KEY_BURST] = { "Budget", "Burst", set_burst },
	{ "Idle", "InputIdleSec", set_input_idle },
	{ "Idle", "MaxForegroundCPU", set_max_fg_cpu },
	{ "Idle", "OnBattery", set_on_battery },
	{ "Idle", "MaxTemperature", set_max_temperature },
	{ "Idle", "MaxMemoryPressure", set_max_pressure },
	{ "Jobs", "User", set_user },
	{ "Jobs", "MemoryMax", set_memory_max },
	{ "Jobs", "TasksMax", set_tasks_max },
	{ "Jobs", "RuntimeMaxSec", set_runtime_max },
	{ "Jobs", "MaxJobs", set_max_jobs },
	{ "Daemon", "CgroupRoot", set_cgroup_root },
	{ "Daemon", "BPF", set_bpf },
	{ "Daemon", "OpenCLCPUDevices", set_opencl_cpu },
	{ "Pool", "URL", set_url },
	{ "Pool", "Key", set_key },
	{ "Pool", "MaxTasks", set_pool_max_tasks },
	{ "Pool", "CAFile", set_ca_file },
};

static bool known_section(const char *s)
{
	for (size_t i = 0; i < ELEMENTSOF(keys); i++)
		if (strcmp(keys[i].section, s) == 0)
			return true;
	return false;
}

/* ---- the parser ---------------------------------------------------------- */

struct location {
	char *file;      /* owned */
	unsigned line;
	char value[64];
};

struct parser {
	struct config *c;
	struct config def;
	config_error_fn fn;
	void *userdata;
	unsigned n_errors;

	/* The file being read. */
	const char *file;
	FILE *f;
	unsigned line;
	char *buf;          /* getline's */
	size_t buf_size;
	int read_errno;
	char section[64];   /* "" before the first [Section] */
	bool section_ok;    /* known, so its keys are checked */

	/* Where CPU= and Burst= were last set, for the check across files. */
	struct location cpu_loc, burst_loc;
};

static void report(struct parser *p, const char *file, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void report(struct parser *p, const char *file, unsigned line, const char *fmt, ...)
{
	char msg[1024];
	int n;
	va_list ap;

	p->n_errors++;
	if (!p->fn)
		return;
	n = snprintf(msg, sizeof(msg), "%s:%u: ", file, line);
	if (n < 0 || (size_t)n >= sizeof(msg))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	p->fn(p->userdata, file, line, msg);
}

static void set_location(struct location *loc, const char *file, unsigned line, const char *value)
{
	char *copy = strdup(file);

	if (!copy)
		return; /* keeps the older location: only the error message suffers */
	free(loc->file);
	loc->file = copy;
	loc->line = line;
	snprintf(loc->value, sizeof(loc->value), "%s", value);
}

static int handler(void *user, const char *section _unused_, const char *name, const char *value)
{
	struct parser *p = user;

	/* The reader already checked the section; inih's copy is truncated at
	 * 50 characters, so use ours. */
	if (!p->section_ok)
		return 1;
	for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
		const char *expect;

		if (strcmp(keys[i].section, p->section) != 0 || strcmp(keys[i].name, name) != 0)
			continue;
		expect = keys[i].set(p->c, &p->def, value);
		if (expect)
			report(p, p->file, p->line, "%s=%s: expected %s", name, value, expect);
		else if (i == KEY_CPU)
			set_location(&p->cpu_loc, p->file, p->line, value);
		else if (i == KEY_BURST)
			set_location(&p->burst_loc, p->file, p->line, value);
		return 1;
	}
	report(p, p->file, p->line, "unknown key '%s' in section [%s]", name, p->section);
	return 1;
}

/* Cut a comment that starts after whitespace (" # ..." or " ; ..."), as inih
 * does for ';': the documented example config uses '#'. */
static void strip_inline_comment(char *s)
{
	for (char *q = s; *q; q++)
		if ((*q == '#' || *q == ';') && q > s && isspace((unsigned char)q[-1])) {
			*q = '\0';
			break;
		}
}

static char *rstrip(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

static bool valid_key_name(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return false;
	return true;
}

/* inih's reader: hand it the next line, cleaned up, or "\n" for a line we
 * have already reported as bad. Every line inih gets ends in '\n', so it
 * never reads on into the next one. */
static char *reader(char *str, int num, void *stream)
{
	struct parser *p = stream;
	ssize_t n;
	char *s, *eq;

	if (num < 2)
		return NULL;
	errno = 0;
	n = getline(&p->buf, &p->buf_size, p->f);
	if (n < 0) {
		if (errno != 0)
			p->read_errno = errno;
		return NULL;
	}
	p->line++;
	strcpy(str, "\n");

	s = p->buf;
	if ((size_t)n != strlen(s)) {
		report(p, p->file, p->line, "unexpected NUL byte in line");
		return str;
	}
	if (p->line == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
		s += 3;
	s += strspn(s, " \t\r\n\v\f");
	rstrip(s);
	if (*s == '\0' || *s == '#' || *s == ';')
		return str;

	if (*s == '[') {
		char *close;

		strip_inline_comment(s);
		rstrip(s);
		close = strchr(s, ']');
		if (!close || close[1] != '\0') {
			report(p, p->file, p->line, "%s: expected a section header like [Budget]", s);
			/* Skip its keys silently: the header was reported. */
			p->section_ok = false;
			snprintf(p->section, sizeof(p->section), "?");
			return str;
		}
		*close = '\0';
		snprintf(p->section, sizeof(p->section), "%s", s + 1);
		p->section_ok = known_section(s + 1);
		if (!p->section_ok)
			report(p, p->file, p->line, "unknown section [%s]", s + 1);
		return str;
	}

	eq = strchr(s, '=');
	if (!eq) {
		report(p, p->file, p->line, "%s: expected Key=value", s);
		return str;
	}
	*eq = '\0';
	char *value = eq + 1;
	rstrip(s);
	if (!valid_key_name(s, strlen(s))) {
		report(p, p->file, p->line, "%s=%s: expected a key name (letters, digits, _) before '='", s, value);
		return str;
	}
	if (p->section[0] == '\0') {
		report(p, p->file, p->line, "%s=%s: expected a [Section] header before the first key", s, value);
		return str;
	}
	if (!p->section_ok)
		return str; /* the section header was reported */
	value += strspn(value, " \t");
	strip_inline_comment(value);
	rstrip(value);
	if (strlen(s) + 1 + strlen(value) + 2 > (size_t)num) {
		report(p, p->file, p->line, "%s=...: expected a line of at most %d characters", s, num - 2);
		return str;
	}
	size_t kn = strlen(s), vn = strlen(value);
	memcpy(str, s, kn);
	str[kn] = '=';
	memcpy(str + kn + 1, value, vn);
	memcpy(str + kn + 1 + vn, "\n", 2);
	return str;
}

static int open_config(const char *path, FILE **ret)
{
	_cleanup_close_ int fd = open_regular(path, 0, NULL);
	FILE *f;

	if (fd < 0)
		return fd;
	f = fdopen(fd, "re");
	if (!f)
		return negative_errno();
	TAKE_FD(fd);
	*ret = f;
	return 0;
}

static int parse_file(struct parser *p, const char *path, bool missing_ok)
{
	_cleanup_fclose_ FILE *f = NULL;
	int r;

	r = open_config(path, &f);
	if (r == -ENOENT && missing_ok)
		return 0;
	if (r < 0)
		return r;
	p->file = path;
	p->f = f;
	p->line = 0;
	p->read_errno = 0;
	p->section[0] = '\0';
	p->section_ok = false;
	r = ini_parse_stream(reader, p, handler, p);
	p->f = NULL;
	if (p->read_errno)
		return -p->read_errno;
	if (r < 0)
		return -ENOMEM;
	if (r > 0) /* inih saw something our reader let through */
		report(p, path, (unsigned)r, "expected Key=value");
	return 0;
}

static int is_dropin(const struct dirent *de)
{
	size_t n = strlen(de->d_name);

	return de->d_name[0] != '.' && n > 5 && strcmp(de->d_name + n - 5, ".conf") == 0;
}

static int cmp_names(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name); /* lexical, not locale order */
}

static int parse_dropins(struct parser *p, const char *dir)
{
	struct dirent **list = NULL;
	int n, r = 0;

	n = scandir(dir, &list, is_dropin, cmp_names);
	if (n < 0)
		return errno == ENOENT || errno == ENOTDIR ? 0 : negative_errno();
	for (int i = 0; i < n; i++) {
		_cleanup_free_ char *path = NULL;
		struct stat st;

		if (r == 0) {
			if (asprintf(&path, "%s/%s", dir, list[i]->d_name) < 0)
				r = -ENOMEM;
			else if (stat(path, &st) < 0)
				r = errno == ENOENT ? 0 : negative_errno(); /* a dangling link */
			else if (S_ISREG(st.st_mode))
				r = parse_file(p, path, false);
		}
		free(list[i]);
	}
	free(list);
	return r;
}

int config_load(const char *path, const char *dropin_dir, struct config *ret,
		config_error_fn fn, void *userdata)
{
	_cleanup_free_ char *default_dir = NULL;
	struct config c;
	struct parser p = { .c = &c, .fn = fn, .userdata = userdata };
	int r;

	config_defaults(&c);
	config_defaults(&p.def);
	if (!c.job_user || !p.def.job_user) {
		r = -ENOMEM;
		goto finish;
	}
	if (!dropin_dir) {
		if (asprintf(&default_dir, "%s.d", path) < 0) {
			r = -ENOMEM;
			goto finish;
		}
		dropin_dir = default_dir;
	}

	r = parse_file(&p, path, true);
	if (r < 0)
		goto finish;
	r = parse_dropins(&p, dropin_dir);
	if (r < 0)
		goto finish;

	/* Across all files: only the final values matter. */
	if (c.burst_ppm < c.cpu_ppm) {
		char other[32];

		if (p.burst_loc.file)
			report(&p, p.burst_loc.file, p.burst_loc.line,
			       "Burst=%s: expected a percentage at least CPU=%s", p.burst_loc.value,
			       format_percent(other, sizeof(other), c.cpu_ppm));
		else
			report(&p, p.cpu_loc.file ? p.cpu_loc.file : path, p.cpu_loc.line,
			       "CPU=%s: expected a percentage at most Burst=%s", p.cpu_loc.value,
			       format_percent(other, sizeof(other), c.burst_ppm));
	}

	if (p.n_errors > 0) {
		r = -EINVAL;
		goto finish;
	}
	*ret = c;
	c = (struct config) {}; /* handed over */
	r = 0;
finish:
	free(p.buf);
	free(p.cpu_loc.file);
	free(p.burst_loc.file);
	config_free(&p.def);
	config_free(&c);
	return r;
}
