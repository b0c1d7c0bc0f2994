/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The harvest policy: inputs and clock in, state and a reason with figures out. */
#include "harvester/policy.h"

#include <stdio.h>
#include <string.h>

#include "harvester/macro.h"

/* Hot leaves only this far below MaxTemperature, so a fan's worth of cooling
 * does not thaw and refreeze jobs every few seconds. */
#define HOT_HYSTERESIS_MC 5000

static const char *const state_names[_POLICY_MAX] = {
	[POLICY_IDLE] = "idle",
	[POLICY_ACTIVE] = "active",
	[POLICY_EXHAUSTED] = "exhausted",
	[POLICY_PAUSED] = "paused",
	[POLICY_ON_BATTERY] = "on-battery",
	[POLICY_HOT] = "hot",
	[POLICY_PRESSURE] = "pressure",
	[POLICY_BUSY] = "busy",
};

const char *policy_state_name(enum policy_state s)
{
	if ((unsigned)s >= _POLICY_MAX)
		return "unknown";
	return state_names[s];
}

bool policy_allows_harvest(enum policy_state s)
{
	return s == POLICY_IDLE;
}

void policy_init(struct policy *p, uint64_t now_usec)
{
	*p = (struct policy) {
		.state = POLICY_ACTIVE,
		.since_usec = now_usec,
	};
	snprintf(p->reason, sizeof(p->reason), "starting: not evaluated yet");
}

/* An age for a sentence: whole seconds, or milliseconds under one second;
 * microseconds would be noise. */
static const char *format_age(char *buf, size_t len, uint64_t usec)
{
	if (usec >= USEC_PER_SEC)
		usec -= usec % USEC_PER_SEC;
	else if (usec >= USEC_PER_MSEC)
		usec -= usec % USEC_PER_MSEC;
	return format_timespan(buf, len, usec);
}

static const char *format_celsius(char *buf, size_t len, int32_t mc)
{
	int64_t v = mc;
	unsigned frac = (unsigned)((v < 0 ? -v : v) % 1000);
	int digits = 3;

	if (frac == 0) {
		snprintf(buf, len, "%lldC", (long long)(v / 1000));
		return buf;
	}
	while (frac % 10 == 0) {
		frac /= 10;
		digits--;
	}
	snprintf(buf, len, "%s%lld.%0*uC", v < 0 ? "-" : "", (long long)((v < 0 ? -v : v) / 1000), digits, frac);
	return buf;
}

/* Update the hysteresis latches from this sample. */
static void update_latches(struct policy *p, const struct config *c, const struct policy_inputs *in)
{
	if (c->max_temperature_mc == 0 || in->temperature_mc == INT32_MIN)
		p->hot = false;
	else if (in->temperature_mc > c->max_temperature_mc)
		p->hot = true;
	else if ((int64_t)in->temperature_mc <= (int64_t)c->max_temperature_mc - HOT_HYSTERESIS_MC)
		p->hot = false;

	if (c->max_memory_pressure_ppm == 0)
		p->pressure = false;
	else if (in->memory_pressure_ppm > c->max_memory_pressure_ppm)
		p->pressure = true;
	else if (in->memory_pressure_ppm < c->max_memory_pressure_ppm / 2)
		p->pressure = false;
}

static enum policy_state evaluate(struct policy *p, const struct config *c, const struct policy_inputs *in,
				  char *reason, size_t len, uint64_t *next)
{
	char a[FORMAT_TIMESPAN_MAX], b[FORMAT_TIMESPAN_MAX], x[FORMAT_PERCENT_MAX], y[FORMAT_PERCENT_MAX];
	bool input_recent = false;
	uint64_t age = 0;

	*next = UINT64_MAX;
	update_latches(p, c, in);

	if (in->last_activity_usec != 0) {
		age = in->now_usec > in->last_activity_usec ? in->now_usec - in->last_activity_usec : 0;
		input_recent = age < c->input_idle_usec;
	}

	if (in->paused_until_usec != 0 && in->now_usec < in->paused_until_usec) {
		if (in->paused_until_usec == UINT64_MAX)
			snprintf(reason, len, "paused by the operator until resumed");
		else {
			*next = in->paused_until_usec;
			snprintf(reason, len, "paused by the operator for another %s",
				 format_age(a, sizeof(a), in->paused_until_usec - in->now_usec));
		}
		return POLICY_PAUSED;
	}

	if (input_recent) {
		*next = in->last_activity_usec + c->input_idle_usec;
		if (age < USEC_PER_MSEC)
			snprintf(reason, len, "input just now (InputIdleSec=%s)",
				 format_timespan(b, sizeof(b), c->input_idle_usec));
		else
			snprintf(reason, len, "input %s ago (InputIdleSec=%s)", format_age(a, sizeof(a), age),
				 format_timespan(b, sizeof(b), c->input_idle_usec));
		return POLICY_ACTIVE;
	}
	if (in->logind_idle_known && !in->logind_idle) {
		snprintf(reason, len, "session not idle (logind IdleHint=no)");
		return POLICY_ACTIVE;
	}

	if (in->on_battery && !c->on_battery) {
		snprintf(reason, len, "on battery power (OnBattery=no)");
		return POLICY_ON_BATTERY;
	}

	if (p->hot) {
		char t[32], m[32], l[32];

		format_celsius(t, sizeof(t), in->temperature_mc);
		format_celsius(m, sizeof(m), c->max_temperature_mc);
		if (in->temperature_mc > c->max_temperature_mc)
			snprintf(reason, len, "temperature %s > MaxTemperature=%s", t, m);
		else
			snprintf(reason, len, "temperature %s, cooling to %s (MaxTemperature=%s)", t,
				 format_celsius(l, sizeof(l), c->max_temperature_mc - HOT_HYSTERESIS_MC), m);
		return POLICY_HOT;
	}

	if (p->pressure) {
		format_percent(x, sizeof(x), in->memory_pressure_ppm);
		format_percent(y, sizeof(y), c->max_memory_pressure_ppm);
		if (in->memory_pressure_ppm > c->max_memory_pressure_ppm)
			snprintf(reason, len, "memory pressure %s > MaxMemoryPressure=%s", x, y);
		else {
			char h[FORMAT_PERCENT_MAX];
			snprintf(reason, len, "memory pressure %s, waiting for < %s (MaxMemoryPressure=%s)", x,
				 format_percent(h, sizeof(h), c->max_memory_pressure_ppm / 2), y);
		}
		return POLICY_PRESSURE;
	}

	if (c->max_foreground_cpu_ppm != 0 && in->foreground_cpu_ppm > c->max_foreground_cpu_ppm) {
		snprintf(reason, len, "foreground CPU %s > MaxForegroundCPU=%s",
			 format_percent(x, sizeof(x), in->foreground_cpu_ppm),
			 format_percent(y, sizeof(y), c->max_foreground_cpu_ppm));
		return POLICY_BUSY;
	}

	if (in->budget_exhausted) {
		snprintf(reason, len, "CPU budget exhausted (CPU=%s over Window=%s)",
			 format_percent(x, sizeof(x), c->cpu_ppm), format_timespan(a, sizeof(a), c->window_usec));
		return POLICY_EXHAUSTED;
	}

	if (in->last_activity_usec == 0)
		snprintf(reason, len, "no input seen (InputIdleSec=%s)", format_timespan(b, sizeof(b), c->input_idle_usec));
	else
		snprintf(reason, len, "no input for %s (InputIdleSec=%s)", format_age(a, sizeof(a), age),
			 format_timespan(b, sizeof(b), c->input_idle_usec));
	return POLICY_IDLE;
}

int policy_update(struct policy *p, const struct config *c, const struct policy_inputs *in,
		  uint64_t *ret_next_usec)
{
	char reason[sizeof(p->reason)];
	uint64_t next;
	enum policy_state s;
	bool changed;

	s = evaluate(p, c, in, reason, sizeof(reason), &next);
	changed = s != p->state || !p->evaluated;
	if (s != p->state) {
		p->state = s;
		p->since_usec = in->now_usec;
	}
	p->evaluated = true;
	memcpy(p->reason, reason, sizeof(reason));
	if (ret_next_usec)
		*ret_next_usec = next;
	return changed;
}
