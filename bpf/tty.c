/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Terminal input, seen without polling: a read(2) that returns data from a
 * tty raises IN_ACCESS on its device node, and on a terminal a read only
 * returns data when someone typed (or pasted) it. So an IN_ACCESS watch on
 * every /dev/pts/N and on the console and serial ttys catches ssh sessions
 * and local consoles. The kernel does not pass a device's IN_ACCESS up to a
 * watch on its folder (measured on 6.18: IN_OPEN is passed, IN_ACCESS is
 * not; a folder watch would leak other users' keystroke timing), so the
 * folder is watched for IN_CREATE only, to put a watch on each new pty.
 * The daemon itself never reads a tty, so it never triggers this.
 */
#include <errno.h>
#include <dirent.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <limits.h>
#include <unistd.h>

#include "bpf/sense-internal.h"
#include "harvester/macro.h"

static void watch_pty(int fd, const char *dir, const char *name)
{
	char path[PATH_MAX];

	/* ptmx is the master side: its reads are terminal output. */
	if (name[0] == '.' || strcmp(name, "ptmx") == 0)
		return;
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return;
	/* Fails for a pty already gone again: nothing to watch then. */
	(void)inotify_add_watch(fd, path, IN_ACCESS);
}

static int on_inotify(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct sense *s = userdata;
	_Alignas(struct inotify_event) char buf[4096];
	bool typed = false;

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			p += sizeof(*ev) + ev->len;
			if (ev->wd == s->tty_wd_dir) {
				if ((ev->mask & IN_CREATE) && ev->len && !(ev->mask & IN_ISDIR))
					watch_pty(fd, s->tty_dir, ev->name);
				continue;
			}
			if (ev->mask & IN_ACCESS)
				typed = true;
		}
	}
	if (typed)
		sense_report(s, sense_now_ns(), SENSE_ACT_TTY);
	return 0;
}

int tty_start(struct sense *s, const char *pts_dir)
{
	static const char *const patterns[] = { "/dev/tty[0-9]*", "/dev/ttyS[0-9]*" };
	_cleanup_close_ int fd = -1;
	int r, watches = 0;

	s->tty_dir = strdup(pts_dir);
	if (!s->tty_dir)
		return -ENOMEM;
	fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	/* Folder watch first, so a pty created during the scan is not missed. */
	s->tty_wd_dir = inotify_add_watch(fd, pts_dir, IN_CREATE | IN_ONLYDIR);
	if (s->tty_wd_dir >= 0) {
		DIR *d = opendir(pts_dir);
		struct dirent *de;

		watches++;
		while (d && (de = readdir(d)))
			watch_pty(fd, pts_dir, de->d_name);
		if (d)
			closedir(d);
	}
	for (size_t i = 0; i < ELEMENTSOF(patterns); i++) {
		glob_t g = {};

		if (glob(patterns[i], GLOB_NOSORT, NULL, &g) == 0)
			for (size_t j = 0; j < g.gl_pathc; j++)
				if (inotify_add_watch(fd, g.gl_pathv[j], IN_ACCESS) >= 0)
					watches++;
		globfree(&g);
	}
	if (!watches)
		return -ENOENT;
	r = sd_event_add_io(s->event, &s->tty_source, fd, EPOLLIN, on_inotify, s);
	if (r < 0)
		return r;
	(void)sd_event_source_set_description(s->tty_source, "sense-tty");
	s->tty_inotify_fd = TAKE_FD(fd);
	return 0;
}

void tty_stop(struct sense *s)
{
	s->tty_source = sd_event_source_disable_unref(s->tty_source);
	if (s->tty_inotify_fd >= 0)
		close(s->tty_inotify_fd);
	s->tty_inotify_fd = -1;
	s->tty_wd_dir = -1;
	free(s->tty_dir);
	s->tty_dir = NULL;
}
