/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * logind's view of the seat: the Manager's IdleHint is true when every
 * session is idle (screen locker, idle timeout of the desktop). It covers
 * input the probe cannot see (remote desktops, Wayland compositors that
 * read devices through logind). Absent on servers and here: skip quietly.
 */
#include <errno.h>
#include <string.h>

#include "bpf/sense-internal.h"
#include "harvester/macro.h"

#define LOGIND "org.freedesktop.login1"
#define LOGIND_PATH "/org/freedesktop/login1"
#define LOGIND_MANAGER "org.freedesktop.login1.Manager"

static void set_idle_hint(struct sense *s, int idle)
{
	if (idle == s->idle_hint)
		return;
	s->idle_hint = idle;
	sense_report(s, sense_now_ns(), idle ? SENSE_ACT_LOGIND_IDLE : SENSE_ACT_LOGIND_ACTIVE);
}

/* PropertiesChanged(s interface, a{sv} changed, as invalidated) */
static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
	struct sense *s = userdata;
	const char *iface;
	int r;

	r = sd_bus_message_read(m, "s", &iface);
	if (r < 0 || strcmp(iface, LOGIND_MANAGER) != 0)
		return 0;
	r = sd_bus_message_enter_container(m, 'a', "{sv}");
	if (r < 0)
		return 0;
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const char *name;

		if (sd_bus_message_read(m, "s", &name) < 0)
			return 0;
		if (strcmp(name, "IdleHint") == 0) {
			int b;

			if (sd_bus_message_read(m, "v", "b", &b) < 0)
				return 0;
			set_idle_hint(s, !!b);
		} else if (sd_bus_message_skip(m, "v") < 0)
			return 0;
		if (sd_bus_message_exit_container(m) < 0)
			return 0;
	}
	return 0;
}

int logind_start(struct sense *s)
{
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus *bus = NULL;
	int r, idle = 0;

	r = sd_bus_open_system(&bus);
	if (r < 0)
		return r;
	/* Asked once at start, on the caller's thread: do not hang the daemon
	 * on a wedged bus. */
	(void)sd_bus_set_method_call_timeout(bus, 2 * USEC_PER_SEC);
	r = sd_bus_get_property_trivial(bus, LOGIND, LOGIND_PATH, LOGIND_MANAGER, "IdleHint", &error,
					'b', &idle);
	sd_bus_error_free(&error);
	if (r < 0)
		goto fail;
	r = sd_bus_match_signal(bus, &s->logind_slot, LOGIND, LOGIND_PATH,
				"org.freedesktop.DBus.Properties", "PropertiesChanged",
				on_properties_changed, s);
	if (r < 0)
		goto fail;
	r = sd_bus_attach_event(bus, s->event, SD_EVENT_PRIORITY_NORMAL);
	if (r < 0)
		goto fail;
	s->bus = bus;
	s->logind = true;
	s->idle_hint = !!idle; /* the starting state is not a change */
	return 0;
fail:
	s->logind_slot = sd_bus_slot_unref(s->logind_slot);
	sd_bus_flush_close_unref(bus);
	return r;
}

void logind_stop(struct sense *s)
{
	s->logind_slot = sd_bus_slot_unref(s->logind_slot);
	if (s->bus) {
		sd_bus_detach_event(s->bus);
		s->bus = sd_bus_flush_close_unref(s->bus);
	}
	s->logind = false;
}
