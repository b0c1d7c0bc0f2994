/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The harvest policy: a state machine from what the host is doing to whether
 * jobs may run. Pure: the caller gathers the inputs (probe, PSI, thermal
 * zones, power supply, budget, operator) and the clock, and acts on the
 * state. Rules in priority order: paused > active > on-battery > hot >
 * pressure > busy > exhausted > idle. Hot and pressure have hysteresis.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harvester/config.h"

enum policy_state {
	POLICY_IDLE,       /* harvesting */
	POLICY_ACTIVE,     /* the owner is here: input within InputIdleSec */
	POLICY_EXHAUSTED,  /* the budget is spent */
	POLICY_PAUSED,     /* by the operator */
	POLICY_ON_BATTERY,
	POLICY_HOT,        /* a thermal zone above MaxTemperature */
	POLICY_PRESSURE,   /* memory PSI above MaxMemoryPressure */
	POLICY_BUSY,       /* foreground CPU above MaxForegroundCPU */
	_POLICY_MAX,
};

struct policy_inputs {
	uint64_t now_usec;              /* monotonic */
	uint64_t last_activity_usec;    /* monotonic time of the last user activity, 0 = none seen */
	bool logind_idle_known, logind_idle; /* logind's IdleHint, where a session exists */
	uint32_t foreground_cpu_ppm;    /* share of all CPUs used by foreground tasks, recent */
	bool on_battery;
	int32_t temperature_mc;         /* hottest thermal zone; INT32_MIN = unknown */
	uint32_t memory_pressure_ppm;   /* PSI memory some avg10 */
	uint64_t paused_until_usec;     /* 0 = not paused, UINT64_MAX = until resumed */
	bool budget_exhausted;
};

struct policy {
	enum policy_state state;
	uint64_t since_usec;            /* when state was entered */
	char reason[160];               /* why, for the log and status: "input 12s ago (InputIdleSec=3min)" */
	/* Hysteresis latches, kept up to date even while a higher rule holds. */
	bool hot, pressure;
	bool evaluated;                 /* the first policy_update always reports a change */
};

/* Start in POLICY_ACTIVE (jobs may not run) until the first policy_update. */
void policy_init(struct policy *p, uint64_t now_usec);
/* Evaluate; returns 1 if the state changed (log it), 0 if not; the first call
 * after policy_init returns 1. The reason is refreshed on every call.
 * *ret_next_usec (may be NULL) gets the time at which the state may change
 * by the clock alone, or UINT64_MAX: the end of a pause while paused, else
 * the end of InputIdleSec while active by input (even if logind also says
 * the session is busy: a wake-up that changes nothing is harmless). */
int policy_update(struct policy *p, const struct config *c, const struct policy_inputs *in,
		  uint64_t *ret_next_usec);
/* May jobs run (thawed) in this state? Only POLICY_IDLE. */
bool policy_allows_harvest(enum policy_state s);
const char *policy_state_name(enum policy_state s); /* "idle", "active", "on-battery", ...; "unknown" if out of range */
