/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * logind as an input source: a private dbus-daemon stands in for the system
 * bus and a child process plays org.freedesktop.login1 with a Manager
 * IdleHint property. sense must name "logind" as the input source when evdev
 * and fentry are unavailable, and report IdleHint flips as
 * SENSE_ACT_LOGIND_IDLE / _ACTIVE; with no bus at all it must stay quiet.
 */
#include <sys/epoll.h>
#include <systemd/sd-bus.h>

#include "tests/host/probe-util.h"

static int idle_hint;
static pid_t daemon_pid, logind_pid;
static enum sense_activity last_kind;
static unsigned n_calls;
static bool got;

static void on_activity(void *userdata, uint64_t event_ns, enum sense_activity kind)
{
	last_kind = kind;
	n_calls++;
	got = true;
}

static int get_idle(sd_bus *bus, const char *path, const char *iface, const char *prop,
		    sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
	return sd_bus_message_append(reply, "b", idle_hint);
}

static const sd_bus_vtable manager_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("IdleHint", "b", get_idle, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_VTABLE_END
};

static int on_command(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	sd_bus *bus = userdata;
	char c;

	if (read(fd, &c, 1) != 1)
		_exit(0); /* the test is done */
	idle_hint = c == '1';
	sd_bus_emit_properties_changed(bus, "/org/freedesktop/login1", "org.freedesktop.login1.Manager",
				       "IdleHint", NULL);
	return 0;
}

/* The fake logind: serves IdleHint, flips it on each byte read from cmd. */
static void fake_logind(const char *address, int cmd, int ready)
{
	sd_event *e = NULL;
	sd_bus *bus = NULL;

	if (sd_event_new(&e) < 0 || sd_bus_new(&bus) < 0 || sd_bus_set_address(bus, address) < 0 ||
	    sd_bus_set_bus_client(bus, 1) < 0 || sd_bus_start(bus) < 0 ||
	    sd_bus_add_object_vtable(bus, NULL, "/org/freedesktop/login1", "org.freedesktop.login1.Manager",
				     manager_vtable, NULL) < 0 ||
	    sd_bus_request_name(bus, "org.freedesktop.login1", 0) < 0 ||
	    sd_bus_attach_event(bus, e, 0) < 0 || sd_event_add_io(e, NULL, cmd, EPOLLIN, on_command, bus) < 0)
		_exit(1);
	if (write(ready, "R", 1) != 1)
		_exit(1);
	sd_event_loop(e);
	_exit(0);
}

static void flip(sd_event *e, int cmd, char c, enum sense_activity want)
{
	got = false;
	CHECK(write(cmd, &c, 1) == 1, "write to fake logind: %m");
	run_loop_until(e, now_ns() + 2000000000ULL, &got);
	CHECK(got, "no callback after IdleHint=%c", c);
	CHECK(last_kind == want, "IdleHint=%c gave activity %d, wanted %d", c, last_kind, want);
}

/* A failed CHECK exits: do not leave the bus behind. */
static void stop_children(void)
{
	if (logind_pid > 0)
		kill(logind_pid, SIGKILL);
	if (daemon_pid > 0)
		kill(daemon_pid, SIGKILL);
}

int main(void)
{
	char tmp[] = "/tmp/probe-logind-XXXXXX", address[128], sock[96], missing[128];
	struct sense_opts o = { .tty_dir = "", .no_bpf = true, .input_dir = missing };
	int cmd[2], ready[2], r;
	struct sense *s = NULL;
	sd_event *e = NULL;
	char c;

	if (access("/usr/bin/dbus-daemon", X_OK) < 0)
		SKIP("no /usr/bin/dbus-daemon to stand in for the system bus");
	CHECK(mkdtemp(tmp), "mkdtemp: %m");
	/* Neither the input folder nor its parent exist: evdev cannot run. */
	snprintf(missing, sizeof(missing), "%s/none/input", tmp);
	o.harvest_cgroup = tmp;
	snprintf(sock, sizeof(sock), "%s/bus", tmp);
	snprintf(address, sizeof(address), "unix:path=%s", sock);

	/* No bus at all: logind is skipped silently. */
	setenv("DBUS_SYSTEM_BUS_ADDRESS", address, 1);
	CHECK(sd_event_new(&e) >= 0, "sd_event_new");
	r = sense_new(e, &o, on_activity, NULL, &s);
	CHECK(r == 0, "sense_new without a bus: %s", strerror(-r));
	printf("no bus: input=%s\n", sense_input_source(s));
	CHECK(strcmp(sense_input_source(s), "none") == 0, "no bus, no evdev: input source should be none");
	s = sense_free(s);

	daemon_pid = fork();
	CHECK(daemon_pid >= 0, "fork: %m");
	if (daemon_pid == 0) {
		char arg[160];
		snprintf(arg, sizeof(arg), "--address=%s", address);
		/* It complains that it cannot raise its fd limit: not ours. */
		if (!freopen("/dev/null", "w", stderr))
			_exit(126);
		execl("/usr/bin/dbus-daemon", "dbus-daemon", "--session", "--nofork", "--nopidfile",
		      arg, (char *)NULL);
		_exit(127);
	}
	atexit(stop_children);
	for (int i = 0; i < 200 && access(sock, F_OK) < 0; i++)
		usleep(10000);
	CHECK(access(sock, F_OK) == 0, "dbus-daemon did not start");

	CHECK(pipe(cmd) == 0 && pipe(ready) == 0, "pipe: %m");
	logind_pid = fork();
	CHECK(logind_pid >= 0, "fork: %m");
	if (logind_pid == 0) {
		close(cmd[1]);
		close(ready[0]);
		fake_logind(address, cmd[0], ready[1]);
	}
	close(cmd[0]);
	close(ready[1]);
	CHECK(read(ready[0], &c, 1) == 1, "the fake logind did not start");

	o.no_logind = true;
	CHECK(sense_new(e, &o, on_activity, NULL, &s) == 0, "sense_new(no_logind)");
	CHECK(strcmp(sense_input_source(s), "none") == 0, "no_logind: input source should be none");
	s = sense_free(s);

	o.no_logind = false;
	r = sense_new(e, &o, on_activity, NULL, &s);
	CHECK(r == 0, "sense_new: %s", strerror(-r));
	printf("fake logind on a private bus: input=%s\n", sense_input_source(s));
	CHECK(strcmp(sense_input_source(s), "logind") == 0, "input source should be logind");
	run_loop_until(e, now_ns() + 100000000ULL, NULL);
	CHECK(n_calls == 0, "the starting IdleHint is not a change");

	flip(e, cmd[1], '1', SENSE_ACT_LOGIND_IDLE);
	CHECK(sense_last_activity_ns(s) == 0, "going idle is not activity");
	uint64_t t = now_ns();
	flip(e, cmd[1], '0', SENSE_ACT_LOGIND_ACTIVE);
	printf("IdleHint true -> LOGIND_IDLE, false -> LOGIND_ACTIVE (%.2f ms after the flip)\n",
	       ms(sense_last_activity_ns(s) - t));
	CHECK(sense_last_activity_ns(s) >= t, "becoming active is activity");
	CHECK(n_calls == 2, "one callback per flip, got %u", n_calls);

	sense_free(s);
	sd_event_unref(e);
	close(cmd[1]);
	kill(logind_pid, SIGTERM);
	kill(daemon_pid, SIGTERM);
	waitpid(logind_pid, NULL, 0);
	waitpid(daemon_pid, NULL, 0);
	logind_pid = daemon_pid = 0;
	unlink(sock);
	rmdir(tmp);
	printf("ok\n");
	return 0;
}
