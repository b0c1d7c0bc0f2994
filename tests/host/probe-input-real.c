/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Input from a real (uinput) keyboard: hot-plugged after sense started, its
 * key press must reach the callback once, through fentry/input_event where
 * the kernel allows it and through evdev otherwise (and always with
 * no_fentry). Needs /dev/uinput: skips without it.
 */
#include <dirent.h>
#include <linux/uinput.h>
#include <sys/ioctl.h>

#include "tests/host/probe-util.h"
#include "bpf/sense-internal.h"

static unsigned n_input;
static uint64_t last_input_ns;
static bool got;

static void on_activity(void *userdata, uint64_t event_ns, enum sense_activity kind)
{
	if (kind != SENSE_ACT_INPUT)
		return;
	n_input++;
	last_input_ns = event_ns;
	got = true;
}

static void emit(int fd, unsigned short type, unsigned short code, int value)
{
	struct input_event ev = { .type = type, .code = code, .value = value };

	CHECK(write(fd, &ev, sizeof(ev)) == (ssize_t)sizeof(ev), "write to uinput: %m");
}

static bool has_event_node(void)
{
	DIR *d = opendir("/dev/input");
	struct dirent *de;
	bool found = false;

	while (d && (de = readdir(d)))
		if (strncmp(de->d_name, "event", 5) == 0)
			found = true;
	if (d)
		closedir(d);
	return found;
}

static int make_keyboard(void)
{
	struct uinput_setup setup = { .id = { .bustype = BUS_VIRTUAL, .vendor = 0x1, .product = 0x1 } };
	int fd = open("/dev/uinput", O_WRONLY | O_NONBLOCK | O_CLOEXEC);

	CHECK(fd >= 0, "open /dev/uinput: %m");
	snprintf(setup.name, sizeof(setup.name), "harvester test keyboard");
	CHECK(ioctl(fd, UI_SET_EVBIT, EV_KEY) == 0 && ioctl(fd, UI_SET_KEYBIT, KEY_A) == 0 &&
		      ioctl(fd, UI_DEV_SETUP, &setup) == 0 && ioctl(fd, UI_DEV_CREATE) == 0,
	      "create uinput keyboard: %m");
	return fd;
}

static void one_pass(sd_event *e, bool no_fentry)
{
	struct sense_opts o = { .harvest_cgroup = tree_jobs, .tty_dir = "", .no_logind = true,
				.no_fentry = no_fentry };
	struct sense *s = NULL;
	const char *src;
	uint64_t t;
	size_t before;
	int kbd, r;

	r = sense_new(e, &o, on_activity, NULL, &s);
	CHECK(r == 0, "sense_new: %s", strerror(-r));
	src = sense_input_source(s);
	CHECK(strcmp(src, "bpf") == 0 || strcmp(src, "evdev") == 0, "input source %s", src);
	CHECK(!no_fentry || strcmp(src, "evdev") == 0, "no_fentry must give evdev");

	/* Plugged in after the start: evdev must pick it up from inotify. */
	run_loop_until(e, now_ns() + 50000000ULL, NULL);
	before = sense_evdev_devices(s); /* the machine's own keyboard, mouse... */
	kbd = make_keyboard();
	run_loop_until(e, now_ns() + 1000000000ULL, NULL);
	if (strcmp(src, "evdev") == 0 && sense_evdev_devices(s) <= before && !has_event_node())
		SKIP("the kernel made no /dev/input/event* for the uinput keyboard (evdev module not loaded?)");
	if (strcmp(src, "evdev") == 0 && sense_evdev_devices(s) != before + 1) {
		printf("evdev looked at %u event* names; /dev/input has:", sense_evdev_candidates(s));
		fflush(stdout);
		system("ls -l /dev/input");
		FAIL("the hot-plugged keyboard was not opened");
	}

	n_input = 0;
	got = false;
	t = now_ns();
	emit(kbd, EV_KEY, KEY_A, 1);
	emit(kbd, EV_SYN, SYN_REPORT, 0);
	emit(kbd, EV_KEY, KEY_A, 0);
	emit(kbd, EV_SYN, SYN_REPORT, 0);
	run_loop_until(e, now_ns() + 1000000000ULL, &got);
	run_loop_until(e, now_ns() + 30000000ULL, NULL);
	printf("%s: key press -> %u callback(s), %.3f ms after it\n", src, n_input,
	       got ? ms(last_input_ns - t) : -1.0);
	CHECK(n_input == 1, "one key press should be one callback");
	CHECK(last_input_ns >= t && last_input_ns - t < 20000000ULL, "callback time is not the press");
	CHECK(sense_last_activity_ns(s) >= last_input_ns, "last activity should be the key press");

	CHECK(ioctl(kbd, UI_DEV_DESTROY) == 0, "UI_DEV_DESTROY: %m");
	close(kbd);
	run_loop_until(e, now_ns() + 200000000ULL, NULL);
	if (strcmp(src, "evdev") == 0)
		CHECK(sense_evdev_devices(s) == before, "the unplugged keyboard was not dropped");
	sense_free(s);
}

int main(void)
{
	sd_event *e = NULL;

	if (access("/dev/uinput", W_OK) < 0)
		SKIP("no /dev/uinput: a real input device cannot be created here");
	make_tree();
	CHECK(sd_event_new(&e) >= 0, "sd_event_new");
	one_pass(e, false);
	one_pass(e, true);
	sd_event_unref(e);
	printf("ok\n");
	return 0;
}
