/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cgroup v2 control: thin wrappers over the cgroup2 file interface. Every
 * function takes an absolute path so tests can aim it at a scratch subtree or
 * at a folder of fake files.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "cgroup/cgroup.h"
#include "harvester/fileio.h"
#include "harvester/macro.h"

/* rmdir of a cgroup whose last task is still exiting fails with EBUSY for a
 * moment; SIGKILLed tasks with large address spaces take a few ms to tear down. */
#define RMDIR_RETRIES     50
#define RMDIR_RETRY_NSEC  (10 * 1000 * 1000L)
/* The SIGKILL loop (no cgroup.kill) re-reads cgroup.procs until the subtree
 * is empty, to catch children forked while we were signalling. */
#define KILL_ROUNDS       200
#define KILL_ROUND_NSEC   (5 * 1000 * 1000L)

static void sleep_nsec(long ns) {
	struct timespec ts = { .tv_sec = ns / 1000000000L, .tv_nsec = ns % 1000000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int path_join(const char *a, const char *b, char **ret) {
	char *p;
	size_t la = strlen(a);

	/* "/" joined with "/x" must not give "//x". */
	while (la > 0 && a[la - 1] == '/')
		la--;
	while (*b == '/')
		b++;
	if (*b == '\0') {
		if (la == 0 ? asprintf(&p, "/") < 0 : asprintf(&p, "%.*s", (int) la, a) < 0)
			return -ENOMEM;
	} else if (asprintf(&p, "%.*s/%s", (int) la, a, b) < 0)
		return -ENOMEM;
	*ret = p;
	return 0;
}

/* Read a whole file (cgroup and proc files report size 0: read_file()
 * reads to EOF). */
static int read_full(const char *file, char **ret)
{
	void *buf;
	size_t len;
	int r = read_file(file, 16 * 1024 * 1024, 0, &buf, &len, NULL);

	if (r >= 0)
		*ret = buf;
	return r;
}

/* mountinfo escapes blanks and backslashes in paths as \ooo. */
static void unescape_octal(char *s) {
	char *w = s;

	for (char *r = s; *r; ) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char) (((r[1] - '0') << 6) | ((r[2] - '0') << 3) | (r[3] - '0'));
			r += 4;
		} else
			*w++ = *r++;
	}
	*w = '\0';
}

int cg_mount_point(char **ret) {
	_cleanup_free_ char *text = NULL;
	char *line, *save = NULL;
	int r;

	r = read_full("/proc/self/mountinfo", &text);
	if (r < 0)
		return r;
	/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS" */
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *sep, *fstype, *mnt, *p, *f[5];
		int i;

		sep = strstr(line, " - ");
		if (!sep)
			continue;
		fstype = sep + 3;
		if (strncmp(fstype, "cgroup2 ", 8) != 0)
			continue;
		*sep = '\0';
		p = line;
		for (i = 0; i < 5; i++) {
			f[i] = strsep(&p, " ");
			if (!f[i])
				break;
		}
		if (i < 5)
			continue;
		mnt = strdup(f[4]);
		if (!mnt)
			return -ENOMEM;
		unescape_octal(mnt);
		*ret = mnt;
		return 0;
	}
	return -ENOENT;
}

int cg_pid_path(pid_t pid, char **ret) {
	_cleanup_free_ char *mnt = NULL, *text = NULL;
	char file[64], *line, *save = NULL;
	int r;

	if (pid == 0)
		snprintf(file, sizeof file, "/proc/self/cgroup");
	else
		snprintf(file, sizeof file, "/proc/%d/cgroup", (int) pid);
	r = read_full(file, &text);
	if (r < 0)
		return r;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "0::", 3) != 0)
			continue;
		r = cg_mount_point(&mnt);
		if (r < 0)
			return r;
		/* A cgroup removed under a live task reads "/x (deleted)"; it
		 * is gone, so say so rather than hand out a path that lies. */
		if (strstr(line + 3, " (deleted)"))
			return -ENOENT;
		return path_join(mnt, line + 3, ret);
	}
	return -ENOMEDIUM;  /* no v2 line: a pure v1 system */
}

int cg_create(const char *path) {
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return negative_errno();
	return 0;
}

static int rmdir_retry(const char *path) {
	for (int i = 0;; i++) {
		if (rmdir(path) == 0 || errno == ENOENT)
			return 0;
		if (errno != EBUSY || i >= RMDIR_RETRIES)
			return negative_errno();
		sleep_nsec(RMDIR_RETRY_NSEC);
	}
}

int cg_remove(const char *path) {
	DIR *d;
	struct dirent *de;
	int r = 0;

	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : negative_errno();
	/* In cgroupfs every subdirectory is a child cgroup; the files cannot
	 * (and need not) be removed. */
	while ((de = readdir(d))) {
		_cleanup_free_ char *child = NULL;
		int q;

		if (de->d_type != DT_DIR || strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		q = path_join(path, de->d_name, &child);
		if (q >= 0)
			q = cg_remove(child);
		if (q < 0 && r == 0)
			r = q;
	}
	closedir(d);
	if (r < 0)
		return r;
	return rmdir_retry(path);
}

int cg_write(const char *path, const char *file, const char *value) {
	_cleanup_free_ char *p = NULL;
	_cleanup_close_ int fd = -1;
	size_t len = strlen(value);
	ssize_t n;
	int r;

	r = path_join(path, file, &p);
	if (r < 0)
		return r;
	fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	/* cgroup files take one value per write(); never split it. */
	do
		n = write(fd, value, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return negative_errno();
	if ((size_t) n != len)
		return -EIO;
	return 0;
}

int cg_read(const char *path, const char *file, char **ret) {
	_cleanup_free_ char *p = NULL;
	int r;

	r = path_join(path, file, &p);
	if (r < 0)
		return r;
	return read_full(p, ret);
}

/* Find "key N" in flat-keyed text; the whole first word must match. */
static int flat_key(const char *text, const char *key, uint64_t *ret) {
	size_t kl = strlen(key);

	for (const char *l = text; l && *l; ) {
		const char *eol = strchr(l, '\n');

		if (strncmp(l, key, kl) == 0 && l[kl] == ' ') {
			const char *v = l + kl + 1;
			char *end;
			unsigned long long x;

			if (*v < '0' || *v > '9')
				return -EINVAL;
			errno = 0;
			x = strtoull(v, &end, 10);
			if (errno == ERANGE)
				return -ERANGE;
			if (*end != '\n' && *end != '\0' && *end != ' ')
				return -EINVAL;
			*ret = x;
			return 0;
		}
		l = eol ? eol + 1 : NULL;
	}
	return -ENOENT;
}

int cg_read_key(const char *path, const char *file, const char *key, uint64_t *ret) {
	_cleanup_free_ char *text = NULL;
	uint64_t v;
	int r;

	r = cg_read(path, file, &text);
	if (r < 0)
		return r;
	r = flat_key(text, key, &v);
	if (r < 0)
		return r;
	*ret = v;
	return 0;
}

static bool word_in(const char *list, const char *word) {
	size_t wl = strlen(word);

	if (wl == 0)
		return false;
	for (const char *p = list; (p = strstr(p, word)); p += wl) {
		bool start = p == list || p[-1] == ' ' || p[-1] == '\n';
		bool end = p[wl] == '\0' || p[wl] == ' ' || p[wl] == '\n';

		if (start && end)
			return true;
	}
	return false;
}

int cg_has_controller(const char *path, const char *ctrl) {
	_cleanup_free_ char *text = NULL;
	int r;

	r = cg_read(path, "cgroup.controllers", &text);
	if (r < 0)
		return r;
	return word_in(text, ctrl) ? 1 : 0;
}

int cg_enable_controllers(const char *path, const char *want, char **ret_enabled) {
	_cleanup_free_ char *avail = NULL, *list = NULL, *enabled = NULL;
	size_t elen = 0;
	char *w, *save = NULL;
	int r, err = 0;

	r = cg_read(path, "cgroup.controllers", &avail);
	if (r < 0)
		return r;
	list = strdup(want);
	enabled = calloc(1, strlen(want) + 1);
	if (!list || !enabled)
		return -ENOMEM;
	/* One write per controller: a write naming several fails as a whole
	 * if any one of them is unavailable. */
	for (w = strtok_r(list, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
		char cmd[64];

		if (!word_in(avail, w))
			continue;  /* missing here (e.g. cpu on a v1 hybrid): not an error */
		if (snprintf(cmd, sizeof cmd, "+%s", w) >= (int) sizeof cmd)
			continue;
		r = cg_write(path, "cgroup.subtree_control", cmd);
		if (r == -ENOENT || r == -EINVAL)
			continue;  /* raced with the parent taking it away */
		if (r < 0) {
			/* EBUSY: the no-internal-process rule; keep trying the
			 * others, report the first failure. */
			if (err == 0)
				err = r;
			continue;
		}
		elen += (size_t) sprintf(enabled + elen, "%s%s", elen ? " " : "", w);
	}
	if (err < 0)
		return err;
	if (ret_enabled)
		*ret_enabled = TAKE_PTR(enabled);
	return 0;
}

int cg_attach(const char *path, pid_t pid) {
	char buf[32];

	snprintf(buf, sizeof buf, "%d", (int) pid);
	return cg_write(path, "cgroup.procs", buf);
}

int cg_set_cpu_max(const char *path, uint64_t quota_usec, uint64_t period_usec) {
	char buf[64];

	if (period_usec == 0)
		return -EINVAL;
	if (quota_usec == CG_CPU_MAX_UNLIMITED)
		snprintf(buf, sizeof buf, "max %" PRIu64, period_usec);
	else
		snprintf(buf, sizeof buf, "%" PRIu64 " %" PRIu64, quota_usec, period_usec);
	return cg_write(path, "cpu.max", buf);
}

int cg_set_cpu_idle(const char *path, bool idle) {
	return cg_write(path, "cpu.idle", idle ? "1" : "0");
}

int cg_cpu_usage_usec(const char *path, uint64_t *ret) {
	return cg_read_key(path, "cpu.stat", "usage_usec", ret);
}

int cg_freeze(const char *path, bool frozen) {
	return cg_write(path, "cgroup.freeze", frozen ? "1" : "0");
}

static int events_bool(const char *path, const char *key, bool *ret) {
	uint64_t v;
	int r;

	r = cg_read_key(path, "cgroup.events", key, &v);
	if (r < 0)
		return r;
	*ret = v != 0;
	return 0;
}

int cg_is_frozen(const char *path, bool *ret) {
	return events_bool(path, "frozen", ret);
}

int cg_is_populated(const char *path, bool *ret) {
	return events_bool(path, "populated", ret);
}

int cg_events_open(const char *path) {
	_cleanup_free_ char *p = NULL;
	int r, fd;

	r = path_join(path, "cgroup.events", &p);
	if (r < 0)
		return r;
	/* kernfs marks the fd on each change; a read (pread at 0) re-arms it. */
	fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return negative_errno();
	return fd;
}

/* Send SIGKILL to every pid listed in path and its children; returns the
 * number of pids found (0: the subtree is empty). */
static int kill_subtree(const char *path) {
	_cleanup_free_ char *procs = NULL;
	DIR *d;
	struct dirent *de;
	int r, n = 0;

	r = cg_read(path, "cgroup.procs", &procs);
	if (r == -ENOENT)
		return 0;  /* removed under us */
	if (r < 0)
		return r;
	for (char *l = procs; *l; ) {
		char *end;
		long pid = strtol(l, &end, 10);

		if (end == l)
			break;
		if (pid > 0 && (kill((pid_t) pid, SIGKILL) == 0 || errno != ESRCH))
			n++;
		l = end;
		while (*l == '\n')
			l++;
	}
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? n : negative_errno();
	while ((de = readdir(d))) {
		_cleanup_free_ char *child = NULL;

		if (de->d_type != DT_DIR || strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (path_join(path, de->d_name, &child) < 0) {
			closedir(d);
			return -ENOMEM;
		}
		r = kill_subtree(child);
		if (r < 0) {
			closedir(d);
			return r;
		}
		n += r;
	}
	closedir(d);
	return n;
}

/* The kill loop for kernels without cgroup.kill (< 5.14). Not in the header:
 * cg_kill picks it; tests call it directly to exercise it on a newer kernel. */
int cg_kill_by_signal(const char *path);
int cg_kill_by_signal(const char *path) {
	for (int i = 0; i < KILL_ROUNDS; i++) {
		int n = kill_subtree(path);

		if (n <= 0)
			return n;
		sleep_nsec(KILL_ROUND_NSEC);
	}
	return -EBUSY;
}

int cg_kill(const char *path) {
	int r;

	/* cgroup.kill signals the whole subtree atomically, forks included. */
	r = cg_write(path, "cgroup.kill", "1");
	if (r != -ENOENT)
		return r;
	if (access(path, F_OK) < 0)
		return negative_errno();
	return cg_kill_by_signal(path);
}

int cg_memory_events(const char *path, struct cg_memory_events *ret) {
	_cleanup_free_ char *text = NULL;
	struct cg_memory_events e = {};
	struct { const char *key; uint64_t *v; } keys[] = {
		{ "low", &e.low }, { "high", &e.high }, { "max", &e.max },
		{ "oom", &e.oom }, { "oom_kill", &e.oom_kill },
	};
	int r, found = 0;

	r = cg_read(path, "memory.events", &text);
	if (r < 0)
		return r;
	/* Older kernels lack some keys (oom_kill came in 4.13): count them 0. */
	for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
		r = flat_key(text, keys[i].key, keys[i].v);
		if (r == -ENOENT)
			continue;
		if (r < 0)
			return r;
		found++;
	}
	if (found == 0)
		return -EINVAL;
	*ret = e;
	return 0;
}
