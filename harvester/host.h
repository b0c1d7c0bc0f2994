/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Readings of the host for the policy: power supply and thermal zones.
 * Each takes its sysfs folder so tests can point it at a fake tree. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* 1 if running on battery (no online Mains/USB supply and a battery
 * discharging), 0 if not or if there is no battery, -errno. */
int host_on_battery(const char *power_supply_dir);   /* /sys/class/power_supply */
/* Hottest thermal zone in millidegrees C into *ret; -ENOENT if none. */
int host_max_temperature(const char *thermal_dir, int32_t *ret); /* /sys/class/thermal */
/* /proc/sys/kernel/random/boot_id into buf (37 bytes). */
int host_boot_id(char buf[static 37]);
