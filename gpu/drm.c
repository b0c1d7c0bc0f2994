/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Is another process using a DRM GPU? Linux 5.19+ drivers (amdgpu, i915,
 * xe, msm, panfrost, v3d, ...) publish per-client engine time in
 * /proc/PID/fdinfo/FD of every open DRM file (drm-usage-stats.rst): we sum
 * it per client for the device's PCI address and call the device busy when
 * some other client's time grew between two samples. Holding a DRM file open
 * (a compositor does) is not use; spending engine time is.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gpu/backend.h"
#include "harvester/macro.h"

struct drm_client {
	uint64_t id;      /* drm-client-id: unique per device, shared by dup'ed fds */
	uint64_t ns;      /* drm-engine-* (ns) + drm-cycles-* of all engines */
};

struct gpu_drm_busy {
	char *proc;
	char pdev[32];
	int self_pid;
	bool sampled;
	struct drm_client *clients;
	size_t n_clients;
};

int gpu_drm_busy_new(const char *proc, const char *pdev, int self_pid, struct gpu_drm_busy **ret)
{
	struct gpu_drm_busy *b = calloc(1, sizeof(*b));

	if (!b)
		return -ENOMEM;
	b->proc = strdup(proc);
	if (!b->proc) {
		free(b);
		return -ENOMEM;
	}
	snprintf(b->pdev, sizeof(b->pdev), "%s", pdev);
	b->self_pid = self_pid;
	*ret = b;
	return 0;
}

void gpu_drm_busy_free(struct gpu_drm_busy *b)
{
	if (!b)
		return;
	free(b->clients);
	free(b->proc);
	free(b);
}

/* Parse one fdinfo file: 1 and the client if it is a DRM client of pdev. */
static int parse_fdinfo(int dirfd, const char *name, const char *pdev, struct drm_client *ret)
{
	_cleanup_fclose_ FILE *f = NULL;
	char line[256];
	bool has_id = false, match = false;
	struct drm_client c = {};
	int fd;

	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;   /* gone, or not ours to read */
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return 0;
	}
	while (fgets(line, sizeof(line), f)) {
		char *v = strchr(line, ':');
		if (!v)
			continue;
		*v++ = 0;
		while (isspace((unsigned char) *v))
			v++;
		if (strcmp(line, "drm-client-id") == 0) {
			c.id = strtoull(v, NULL, 10);
			has_id = true;
		} else if (strcmp(line, "drm-pdev") == 0) {
			v[strcspn(v, " \t\n")] = 0;
			match = strcasecmp(v, pdev) == 0;
		} else if ((strncmp(line, "drm-engine-", 11) == 0 &&
			    strncmp(line, "drm-engine-capacity-", 20) != 0) ||
			   strncmp(line, "drm-cycles-", 11) == 0)
			c.ns += strtoull(v, NULL, 10);
	}
	if (!has_id || !match)
		return 0;
	*ret = c;
	return 1;
}

static const struct drm_client *find_client(const struct drm_client *v, size_t n, uint64_t id)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].id == id)
			return &v[i];
	return NULL;
}

int gpu_drm_busy_sample(struct gpu_drm_busy *b)
{
	_cleanup_free_ struct drm_client *now = NULL;
	size_t n = 0, cap = 0;
	bool busy = false;
	DIR *proc;
	struct dirent *de;

	proc = opendir(b->proc);
	if (!proc)
		return negative_errno();
	while ((de = readdir(proc))) {
		char path[PATH_MAX];
		struct dirent *fe;
		DIR *fdinfo;
		char *end;
		long pid = strtol(de->d_name, &end, 10);

		if (*end || pid <= 0 || pid == b->self_pid)
			continue;
		snprintf(path, sizeof(path), "%s/%s/fdinfo", b->proc, de->d_name);
		fdinfo = opendir(path);
		if (!fdinfo)
			continue;
		while ((fe = readdir(fdinfo))) {
			struct drm_client c;
			struct drm_client *o;

			if (fe->d_name[0] == '.')
				continue;
			if (parse_fdinfo(dirfd(fdinfo), fe->d_name, b->pdev, &c) <= 0)
				continue;
			if ((o = (struct drm_client *) find_client(now, n, c.id))) {
				/* dup'ed fds of one client show the same counters */
				if (c.ns > o->ns)
					o->ns = c.ns;
				continue;
			}
			if (n == cap) {
				size_t ncap = cap ? cap * 2 : 16;
				struct drm_client *p = realloc(now, ncap * sizeof(*p));
				if (!p) {
					closedir(fdinfo);
					closedir(proc);
					return -ENOMEM;
				}
				now = p;
				cap = ncap;
			}
			now[n++] = c;
		}
		closedir(fdinfo);
	}
	closedir(proc);

	for (size_t i = 0; i < n; i++) {
		const struct drm_client *o = find_client(b->clients, b->n_clients, now[i].id);
		/* A client born since the last sample that has already spent
		 * engine time is as busy as one whose time grew. */
		if (o ? now[i].ns > o->ns : now[i].ns > 0)
			busy = true;
	}
	if (!b->sampled)
		busy = true;   /* nothing to compare with yet */
	b->sampled = true;
	free(b->clients);
	b->clients = TAKE_PTR(now);
	b->n_clients = n;
	return busy;
}

#define CAP_SYS_PTRACE_BIT 19

bool gpu_drm_sees_all_clients(const char *status)
{
	_cleanup_fclose_ FILE *f = fopen(status, "re");
	char line[256];

	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long caps;

		if (strncmp(line, "CapEff:", 7) == 0 && sscanf(line + 7, "%llx", &caps) == 1)
			return caps & (1ULL << CAP_SYS_PTRACE_BIT);
	}
	return false;
}

bool gpu_drm_is_drm_device(const char *sys, const char *pdev)
{
	char path[PATH_MAX];
	struct stat st;

	if (!pdev || !*pdev)
		return false;
	snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/drm", sys, pdev);
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
