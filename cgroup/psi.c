/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Pressure stall information: the files in /proc/pressure and <cgroup>/X.pressure. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup/cgroup.h"
#include "harvester/macro.h"

/* One line after its "some "/"full " tag: "avg10=A avg60=B avg300=C total=T".
 * Strict on purpose: a format we do not understand must not read as 0 %. */
static int parse_line(const char *s, struct psi_line *ret) {
	struct psi_line l;
	unsigned long long total;
	int n = -1;

	if (sscanf(s, "avg10=%lf avg60=%lf avg300=%lf total=%llu%n",
		   &l.avg10, &l.avg60, &l.avg300, &total, &n) != 4 || n < 0)
		return -EINVAL;
	if (s[n] != '\0' && s[n] != '\n' && s[n] != ' ')
		return -EINVAL;
	if (!(l.avg10 >= 0 && l.avg10 <= 100 && l.avg60 >= 0 && l.avg60 <= 100 &&
	      l.avg300 >= 0 && l.avg300 <= 100))
		return -EINVAL;
	l.total_usec = total;
	*ret = l;
	return 0;
}

int psi_parse(const char *text, struct psi *ret) {
	struct psi p = {};
	bool has_some = false;
	int r;

	if (!text)
		return -EINVAL;
	for (const char *l = text; *l; ) {
		const char *eol = strchr(l, '\n');

		if (strncmp(l, "some ", 5) == 0) {
			r = parse_line(l + 5, &p.some);
			if (r < 0)
				return r;
			has_some = true;
		} else if (strncmp(l, "full ", 5) == 0) {
			r = parse_line(l + 5, &p.full);
			if (r < 0)
				return r;
			p.has_full = true;
		} else if (*l != '\n')
			return -EINVAL;
		if (!eol)
			break;
		l = eol + 1;
	}
	/* "full" is absent from /proc/pressure/cpu before 5.13; "some" never is. */
	if (!has_some)
		return -EINVAL;
	*ret = p;
	return 0;
}

int psi_read(const char *file, struct psi *ret) {
	char buf[512];
	_cleanup_close_ int fd = -1;
	ssize_t n;

	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	/* Two lines of about 70 bytes: one read returns the whole file. */
	n = read(fd, buf, sizeof buf - 1);
	if (n < 0)
		return negative_errno();
	buf[n] = '\0';
	return psi_parse(buf, ret);
}
