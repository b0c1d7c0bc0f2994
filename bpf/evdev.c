/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The "evdev" input source, for kernels that refuse fentry/input_event:
 * every /dev/input/event* that can report keys, relative or absolute axes
 * is an io source on the loop; inotify on the folder (and on its parent,
 * while the folder does not exist yet) brings in hot-plugged devices.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/input.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <dirent.h>
#include <unistd.h>

#include "bpf/sense-internal.h"
#include "harvester/macro.h"

#define LONG_BITS (sizeof(long) * 8)

static bool name_is_event(const char *n)
{
	return strncmp(n, "event", 5) == 0 && n[5] >= '0' && n[5] <= '9';
}

static bool bit_set(const unsigned long *bits, unsigned bit)
{
	return (bits[bit / LONG_BITS] >> (bit % LONG_BITS)) & 1UL;
}

static void device_free(struct evdev_device *d)
{
	if (!d)
		return;
	sd_event_source_disable_unref(d->source);
	if (d->fd >= 0)
		close(d->fd);
	free(d);
}

static void device_remove(struct sense *s, struct evdev_device *d)
{
	for (size_t i = 0; i < s->n_devices; i++) {
		if (s->devices[i] != d)
			continue;
		memmove(&s->devices[i], &s->devices[i + 1],
			(s->n_devices - i - 1) * sizeof(s->devices[0]));
		s->n_devices--;
		break;
	}
	device_free(d);
}

static int on_device(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct evdev_device *d = userdata;
	struct sense *s = d->sense;
	struct input_event buf[64];
	bool input = false;

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			/* ENODEV: unplugged. Anything else: no use keeping it. */
			goto gone;
		}
		if (n == 0)
			goto gone;
		for (size_t i = 0; i < (size_t)n / sizeof(buf[0]); i++)
			if (buf[i].type == EV_KEY || buf[i].type == EV_REL || buf[i].type == EV_ABS)
				input = true;
		if ((size_t)n < sizeof(buf))
			break;
	}
	if (input)
		sense_report(s, sense_now_ns(), SENSE_ACT_INPUT);
	return 0;
gone:
	if (input)
		sense_report(s, sense_now_ns(), SENSE_ACT_INPUT);
	device_remove(s, d);
	return 0;
}

int sense_evdev_add_fd(struct sense *s, int fd, const char *name)
{
	struct evdev_device *d, **n;
	int r;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->sense = s;
	d->fd = -1;
	snprintf(d->name, sizeof(d->name), "%s", name);
	r = sd_event_add_io(s->event, &d->source, fd, EPOLLIN, on_device, d);
	if (r < 0) {
		free(d);
		return r;
	}
	(void)sd_event_source_set_description(d->source, "sense-evdev");
	n = reallocarray(s->devices, s->n_devices + 1, sizeof(*n));
	if (!n) {
		device_free(d);
		return -ENOMEM;
	}
	s->devices = n;
	d->fd = fd; /* owned from here on */
	s->devices[s->n_devices++] = d;
	return 0;
}

static int device_open(struct sense *s, const char *name)
{
	unsigned long bits[EV_MAX / LONG_BITS + 1] = {}, props[INPUT_PROP_MAX / LONG_BITS + 1];
	_cleanup_free_ char *path = NULL;
	_cleanup_close_ int fd = -1;
	int r;

	for (size_t i = 0; i < s->n_devices; i++)
		if (strcmp(s->devices[i]->name, name) == 0)
			return 0;
	s->evdev_candidates++;

	if (asprintf(&path, "%s/%s", s->input_dir, name) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negative_errno();
	if (ioctl(fd, EVIOCGBIT(0, sizeof(bits)), bits) < 0)
		return negative_errno();
	/* Switches, LEDs, sound: not a person at the keyboard. */
	if (!bit_set(bits, EV_KEY) && !bit_set(bits, EV_REL) && !bit_set(bits, EV_ABS))
		return 0;
	/* An accelerometer reports EV_ABS all the time: not a person either. */
	memset(props, 0, sizeof(props));
	if (ioctl(fd, EVIOCGPROP(sizeof(props)), props) >= 0 && bit_set(props, INPUT_PROP_ACCELEROMETER))
		return 0;
	r = sense_evdev_add_fd(s, fd, name);
	if (r < 0)
		return r;
	TAKE_FD(fd);
	return 1;
}

static void scan(struct sense *s)
{
	DIR *d = opendir(s->input_dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)))
		if (name_is_event(de->d_name))
			(void)device_open(s, de->d_name);
	closedir(d);
}

static void watch_dir(struct sense *s)
{
	s->evdev_wd_dir = inotify_add_watch(s->evdev_inotify_fd, s->input_dir,
					    IN_CREATE | IN_ATTRIB | IN_MOVED_TO | IN_ONLYDIR);
	if (s->evdev_wd_dir >= 0)
		scan(s);
}

static int on_inotify(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct sense *s = userdata;
	_Alignas(struct inotify_event) char buf[4096];
	_cleanup_free_ char *copy = NULL;
	const char *base;

	copy = strdup(s->input_dir);
	if (!copy)
		return 0;
	base = basename(copy);

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				scan(s);
				continue;
			}
			if (ev->wd == s->evdev_wd_parent) {
				if (ev->len && (ev->mask & IN_ISDIR) && strcmp(ev->name, base) == 0 &&
				    s->evdev_wd_dir < 0)
					watch_dir(s);
			} else if (ev->wd == s->evdev_wd_dir) {
				if (ev->mask & IN_IGNORED) /* folder gone: wait for it again */
					s->evdev_wd_dir = -1;
				else if (ev->len && name_is_event(ev->name))
					(void)device_open(s, ev->name);
			}
		}
	}
	return 0;
}

int evdev_start(struct sense *s, const char *dir)
{
	_cleanup_free_ char *copy = NULL;
	_cleanup_close_ int fd = -1;
	int r;

	s->input_dir = strdup(dir);
	copy = strdup(dir);
	if (!s->input_dir || !copy)
		return -ENOMEM;
	fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	/* Watch the parent first, so a folder created in between is not missed. */
	s->evdev_wd_parent = inotify_add_watch(fd, dirname(copy), IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
	if (s->evdev_wd_parent < 0)
		return negative_errno();
	r = sd_event_add_io(s->event, &s->evdev_inotify_source, fd, EPOLLIN, on_inotify, s);
	if (r < 0)
		return r;
	(void)sd_event_source_set_description(s->evdev_inotify_source, "sense-evdev-hotplug");
	s->evdev_inotify_fd = TAKE_FD(fd);
	s->evdev_running = true;
	watch_dir(s);
	return 0;
}

void evdev_stop(struct sense *s)
{
	for (size_t i = 0; i < s->n_devices; i++)
		device_free(s->devices[i]);
	free(s->devices);
	s->devices = NULL;
	s->n_devices = 0;
	s->evdev_inotify_source = sd_event_source_disable_unref(s->evdev_inotify_source);
	if (s->evdev_inotify_fd >= 0)
		close(s->evdev_inotify_fd);
	s->evdev_inotify_fd = -1;
	free(s->input_dir);
	s->input_dir = NULL;
	s->evdev_running = false;
}

unsigned sense_evdev_candidates(const struct sense *s)
{
	return s->evdev_candidates;
}

size_t sense_evdev_devices(const struct sense *s)
{
	return s->n_devices;
}
