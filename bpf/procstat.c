/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The "procstat" time source, for hosts where the probe cannot load: idle
 * and busy time from /proc/stat, harvest time from jobs/ cpu.stat. Coarser
 * than the probe (ticks of USER_HZ) but needs nothing but procfs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bpf/sense-internal.h"
#include "harvester/macro.h"

static int read_proc_stat(const char *path, struct procstat_sample *ret)
{
	_cleanup_fclose_ FILE *f = NULL;
	unsigned long long v[8] = {};
	char line[512];
	long hz;
	int n;

	hz = sysconf(_SC_CLK_TCK);
	if (hz <= 0)
		return -EINVAL;
	f = fopen(path, "re");
	if (!f)
		return negative_errno();
	if (!fgets(line, sizeof(line), f))
		return -EIO;
	/* cpu  user nice system idle iowait irq softirq steal guest guest_nice;
	 * guest time is already counted in user, so it is left out. */
	n = sscanf(line, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]);
	if (n < 5)
		return -EBADMSG;
	ret->idle_ns = (v[3] + v[4]) * (NSEC_PER_SEC / (uint64_t)hz);
	ret->busy_ns = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) * (NSEC_PER_SEC / (uint64_t)hz);
	return 0;
}

static int read_usage_usec(const char *path, uint64_t *ret)
{
	_cleanup_fclose_ FILE *f = NULL;
	char line[256];

	f = fopen(path, "re");
	if (!f)
		return negative_errno();
	while (fgets(line, sizeof(line), f)) {
		uint64_t usec;

		if (sscanf(line, "usage_usec %" SCNu64, &usec) == 1) {
			*ret = usec;
			return 0;
		}
	}
	return -EBADMSG;
}

int procstat_read(const char *proc_stat, const char *cpu_stat, struct procstat_sample *ret)
{
	struct procstat_sample p = {};
	uint64_t usec = 0;
	int r;

	r = read_proc_stat(proc_stat, &p);
	if (r < 0)
		return r;
	if (cpu_stat) {
		r = read_usage_usec(cpu_stat, &usec);
		if (r < 0)
			return r;
	}
	p.harvest_ns = usec * NSEC_PER_USEC;
	*ret = p;
	return 0;
}
