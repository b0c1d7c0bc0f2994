/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harvester/host.h"
#include "harvester/macro.h"

static int read_line(const char *path, char *buf, size_t len)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return negative_errno();
	if (!fgets(buf, (int)len, f))
		return -ENODATA;
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

int host_on_battery(const char *dir)
{
	DIR *d = opendir(dir);
	bool mains_online = false, discharging = false;
	struct dirent *de;
	char path[PATH_MAX], v[64];

	if (!d)
		return errno == ENOENT ? 0 : negative_errno();
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/type", dir, de->d_name);
		if (read_line(path, v, sizeof(v)) < 0)
			continue;
		if (strcmp(v, "Battery") == 0) {
			snprintf(path, sizeof(path), "%s/%s/status", dir, de->d_name);
			if (read_line(path, v, sizeof(v)) >= 0 && strcmp(v, "Discharging") == 0)
				discharging = true;
		} else {
			snprintf(path, sizeof(path), "%s/%s/online", dir, de->d_name);
			if (read_line(path, v, sizeof(v)) >= 0 && strcmp(v, "1") == 0)
				mains_online = true;
		}
	}
	closedir(d);
	return discharging && !mains_online;
}

int host_max_temperature(const char *dir, int32_t *ret)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[PATH_MAX], v[64];
	long best = LONG_MIN;

	if (!d)
		return negative_errno();
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, "thermal_zone", 12) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s/temp", dir, de->d_name);
		if (read_line(path, v, sizeof(v)) < 0)
			continue;
		char *end;
		long t = strtol(v, &end, 10);
		if (end != v && t > best)
			best = t;
	}
	closedir(d);
	if (best == LONG_MIN)
		return -ENOENT;
	*ret = (int32_t)best;
	return 0;
}

int host_boot_id(char buf[static 37])
{
	return read_line("/proc/sys/kernel/random/boot_id", buf, 37);
}
