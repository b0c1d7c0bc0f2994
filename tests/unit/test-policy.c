/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The harvest policy state machine, with an injected clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "harvester/config.h"
#include "harvester/macro.h"
#include "harvester/policy.h"

#define MIN_USEC (60 * USEC_PER_SEC)
#define NOW (5000 * USEC_PER_SEC)

static struct config cfg;

static int setup(void **state)
{
	config_defaults(&cfg); /* InputIdleSec=3min, MaxMemoryPressure=10% */
	/* The figures these tests were written for, whatever the defaults. */
	cfg.max_temperature_mc = 85000;
	cfg.max_foreground_cpu_ppm = 500000;
	return 0;
}

static int teardown(void **state)
{
	config_free(&cfg);
	return 0;
}

/* A quiet host: no input seen, cool, no pressure, budget left. */
static struct policy_inputs quiet(uint64_t now)
{
	return (struct policy_inputs) {
		.now_usec = now,
		.temperature_mc = 50000,
		.memory_pressure_ppm = 0,
	};
}

/* Evaluate and check state, reason, next time and whether it changed. */
static void expect(struct policy *p, const struct policy_inputs *in, int changed, enum policy_state s,
		   const char *reason, uint64_t next)
{
	uint64_t n = 42;
	int r = policy_update(p, &cfg, in, &n);

	if (p->state != s)
		fail_msg("state %s, expected %s (%s)", policy_state_name(p->state), policy_state_name(s), p->reason);
	assert_int_equal(r, changed);
	if (reason)
		assert_string_equal(p->reason, reason);
	if (n != next)
		fail_msg("next %llu, expected %llu", (unsigned long long)n, (unsigned long long)next);
}

static void test_names(void **state)
{
	static const char *const names[] = { "idle", "active", "exhausted", "paused", "on-battery", "hot",
					      "pressure", "busy" };

	for (int s = 0; s < _POLICY_MAX; s++) {
		assert_string_equal(policy_state_name(s), names[s]);
		assert_int_equal(policy_allows_harvest(s), s == POLICY_IDLE);
	}
	assert_string_equal(policy_state_name(_POLICY_MAX), "unknown");
	assert_string_equal(policy_state_name((enum policy_state)-1), "unknown");
}

static void test_first_update_reports(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);

	policy_init(&p, NOW - 1);
	assert_int_equal(p.state, POLICY_ACTIVE);
	assert_false(policy_allows_harvest(p.state));
	in.last_activity_usec = NOW - 1; /* active, the same state as before: still reported */
	expect(&p, &in, 1, POLICY_ACTIVE, "input just now (InputIdleSec=3min)",
	       NOW - 1 + 3 * MIN_USEC);
	assert_true(p.since_usec == NOW - 1);
	expect(&p, &in, 0, POLICY_ACTIVE, NULL, NOW - 1 + 3 * MIN_USEC);
	/* NULL next pointer is fine */
	assert_int_equal(policy_update(&p, &cfg, &in, NULL), 0);
}

static void test_idle_without_input(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);

	policy_init(&p, NOW);
	expect(&p, &in, 1, POLICY_IDLE, "no input seen (InputIdleSec=3min)", UINT64_MAX);
	assert_true(policy_allows_harvest(p.state));
	assert_true(p.since_usec == NOW);
}

/* Active for exactly InputIdleSec after the last input; next_usec is its end. */
static void test_input_window(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);
	uint64_t last = NOW - 12 * USEC_PER_SEC - 345678, end = last + 3 * MIN_USEC;

	policy_init(&p, NOW);
	in.last_activity_usec = last;
	expect(&p, &in, 1, POLICY_ACTIVE, "input 12s ago (InputIdleSec=3min)", end);
	in.now_usec = end - 1;
	expect(&p, &in, 0, POLICY_ACTIVE, "input 2min 59s ago (InputIdleSec=3min)", end);
	in.now_usec = end;
	expect(&p, &in, 1, POLICY_IDLE, "no input for 3min (InputIdleSec=3min)", UINT64_MAX);
	assert_true(p.since_usec == end);
	in.now_usec = end + 10 * MIN_USEC;
	expect(&p, &in, 0, POLICY_IDLE, "no input for 13min (InputIdleSec=3min)", UINT64_MAX);
	assert_true(p.since_usec == end); /* unchanged state keeps its start */

	/* New input: active at once, with a new deadline. */
	in.last_activity_usec = in.now_usec - 250 * USEC_PER_MSEC;
	expect(&p, &in, 1, POLICY_ACTIVE, "input 250ms ago (InputIdleSec=3min)",
	       in.last_activity_usec + 3 * MIN_USEC);
	in.last_activity_usec = in.now_usec;
	expect(&p, &in, 0, POLICY_ACTIVE, "input just now (InputIdleSec=3min)", in.now_usec + 3 * MIN_USEC);
	/* A probe timestamp a little ahead of our clock reads as "now". */
	in.last_activity_usec = in.now_usec + 5;
	expect(&p, &in, 0, POLICY_ACTIVE, "input just now (InputIdleSec=3min)", in.now_usec + 5 + 3 * MIN_USEC);

	/* Another InputIdleSec. */
	cfg.input_idle_usec = 90 * USEC_PER_SEC;
	in.last_activity_usec = in.now_usec - 89 * USEC_PER_SEC;
	expect(&p, &in, 0, POLICY_ACTIVE, "input 1min 29s ago (InputIdleSec=1min 30s)",
	       in.last_activity_usec + 90 * USEC_PER_SEC);
	cfg.input_idle_usec = 3 * MIN_USEC;
}

static void test_logind(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);

	policy_init(&p, NOW);
	in.logind_idle_known = true;
	in.logind_idle = false;
	expect(&p, &in, 1, POLICY_ACTIVE, "session not idle (logind IdleHint=no)", UINT64_MAX);
	in.logind_idle = true;
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);
	/* Not known: ignored whatever the flag says. */
	in.logind_idle_known = false;
	in.logind_idle = false;
	expect(&p, &in, 0, POLICY_IDLE, NULL, UINT64_MAX);
	/* Input and logind both: input explains it and sets the wake-up. */
	in.logind_idle_known = true;
	in.last_activity_usec = NOW - USEC_PER_SEC;
	expect(&p, &in, 1, POLICY_ACTIVE, "input 1s ago (InputIdleSec=3min)", NOW - USEC_PER_SEC + 3 * MIN_USEC);
	/* After the input window logind still holds it. */
	in.now_usec = NOW + 3 * MIN_USEC;
	expect(&p, &in, 0, POLICY_ACTIVE, "session not idle (logind IdleHint=no)", UINT64_MAX);
}

static void test_pause(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);
	uint64_t until = NOW + 5 * MIN_USEC;

	policy_init(&p, NOW);
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);

	/* Until a time: next_usec is its end, even with input pending sooner. */
	in.paused_until_usec = until;
	in.last_activity_usec = NOW;
	expect(&p, &in, 1, POLICY_PAUSED, "paused by the operator for another 5min", until);
	in.now_usec = until - 1;
	expect(&p, &in, 0, POLICY_PAUSED, "paused by the operator for another 1us", until);
	in.now_usec = until;
	expect(&p, &in, 1, POLICY_IDLE, "no input for 5min (InputIdleSec=3min)", UINT64_MAX);
	assert_true(p.since_usec == until);

	/* Until resumed: no clock wake-up, whatever the input. */
	in.last_activity_usec = 0;
	in.paused_until_usec = UINT64_MAX;
	in.now_usec = until + 1;
	expect(&p, &in, 1, POLICY_PAUSED, "paused by the operator until resumed", UINT64_MAX);
	in.now_usec = UINT64_MAX - 1;
	expect(&p, &in, 0, POLICY_PAUSED, NULL, UINT64_MAX);
	in.paused_until_usec = 0; /* resumed */
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);

	/* A pause that ends inside the input window hands over to it. */
	in.now_usec = NOW;
	in.paused_until_usec = NOW + MIN_USEC;
	in.last_activity_usec = NOW - 10 * USEC_PER_SEC;
	expect(&p, &in, 1, POLICY_PAUSED, "paused by the operator for another 1min", NOW + MIN_USEC);
	in.now_usec = NOW + MIN_USEC;
	expect(&p, &in, 1, POLICY_ACTIVE, "input 1min 10s ago (InputIdleSec=3min)",
	       NOW - 10 * USEC_PER_SEC + 3 * MIN_USEC);
}

static void test_battery(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);

	policy_init(&p, NOW);
	in.on_battery = true;
	expect(&p, &in, 1, POLICY_ON_BATTERY, "on battery power (OnBattery=no)", UINT64_MAX);
	cfg.on_battery = true; /* OnBattery=yes: harvest anyway */
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);
	cfg.on_battery = false;
	in.on_battery = false;
	expect(&p, &in, 0, POLICY_IDLE, NULL, UINT64_MAX);
}

static void test_hot_hysteresis(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);

	policy_init(&p, NOW);
	in.temperature_mc = 85000; /* at the limit: not above it */
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);
	in.temperature_mc = 85001;
	expect(&p, &in, 1, POLICY_HOT, "temperature 85.001C > MaxTemperature=85C", UINT64_MAX);
	in.temperature_mc = 87500;
	expect(&p, &in, 0, POLICY_HOT, "temperature 87.5C > MaxTemperature=85C", UINT64_MAX);
	in.temperature_mc = 82000; /* below the limit, not 5 C below */
	expect(&p, &in, 0, POLICY_HOT, "temperature 82C, cooling to 80C (MaxTemperature=85C)", UINT64_MAX);
	in.temperature_mc = 80001;
	expect(&p, &in, 0, POLICY_HOT, NULL, UINT64_MAX);
	in.temperature_mc = 80000;
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);
	in.temperature_mc = 84000; /* rising again inside the band: still fine */
	expect(&p, &in, 0, POLICY_IDLE, NULL, UINT64_MAX);

	/* Unknown temperature: never hot, and it clears the latch. */
	in.temperature_mc = 90000;
	expect(&p, &in, 1, POLICY_HOT, NULL, UINT64_MAX);
	in.temperature_mc = INT32_MIN;
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);

	/* MaxTemperature=0C: no limit. */
	cfg.max_temperature_mc = 0;
	in.temperature_mc = 119000;
	expect(&p, &in, 0, POLICY_IDLE, NULL, UINT64_MAX);
	cfg.max_temperature_mc = 85000;
}

static void test_pressure_hysteresis(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);

	policy_init(&p, NOW);
	in.memory_pressure_ppm = 100000; /* exactly 10%: not above */
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);
	in.memory_pressure_ppm = 142000;
	expect(&p, &in, 1, POLICY_PRESSURE, "memory pressure 14.2% > MaxMemoryPressure=10%", UINT64_MAX);
	in.memory_pressure_ppm = 70000;
	expect(&p, &in, 0, POLICY_PRESSURE, "memory pressure 7%, waiting for < 5% (MaxMemoryPressure=10%)", UINT64_MAX);
	in.memory_pressure_ppm = 50000; /* half: not below half */
	expect(&p, &in, 0, POLICY_PRESSURE, NULL, UINT64_MAX);
	in.memory_pressure_ppm = 49900;
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);
	in.memory_pressure_ppm = 90000;
	expect(&p, &in, 0, POLICY_IDLE, NULL, UINT64_MAX);

	cfg.max_memory_pressure_ppm = 0; /* no limit */
	in.memory_pressure_ppm = 1000000;
	expect(&p, &in, 0, POLICY_IDLE, NULL, UINT64_MAX);
	cfg.max_memory_pressure_ppm = 100000;
}

static void test_busy(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);

	policy_init(&p, NOW);
	in.foreground_cpu_ppm = 630000;
	expect(&p, &in, 1, POLICY_BUSY, "foreground CPU 63% > MaxForegroundCPU=50%", UINT64_MAX);
	in.foreground_cpu_ppm = 500000; /* no hysteresis: at the limit is fine */
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);
	cfg.max_foreground_cpu_ppm = 0; /* disabled */
	in.foreground_cpu_ppm = 1000000;
	expect(&p, &in, 0, POLICY_IDLE, NULL, UINT64_MAX);
	cfg.max_foreground_cpu_ppm = 500000;
}

static void test_exhausted(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);

	policy_init(&p, NOW);
	in.budget_exhausted = true;
	expect(&p, &in, 1, POLICY_EXHAUSTED, "CPU budget exhausted (CPU=1% over Window=1d)", UINT64_MAX);
	assert_false(policy_allows_harvest(p.state));
	in.budget_exhausted = false;
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);
}

/* With every rule true, lifting them one by one walks down the priorities. */
static void test_priorities(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);

	policy_init(&p, NOW);
	in.paused_until_usec = UINT64_MAX;
	in.last_activity_usec = NOW;
	in.on_battery = true;
	in.temperature_mc = 100000;
	in.memory_pressure_ppm = 500000;
	in.foreground_cpu_ppm = 900000;
	in.budget_exhausted = true;
	expect(&p, &in, 1, POLICY_PAUSED, NULL, UINT64_MAX);
	in.paused_until_usec = 0;
	expect(&p, &in, 1, POLICY_ACTIVE, NULL, NOW + 3 * MIN_USEC);
	in.last_activity_usec = 0;
	expect(&p, &in, 1, POLICY_ON_BATTERY, NULL, UINT64_MAX);
	in.on_battery = false;
	expect(&p, &in, 1, POLICY_HOT, NULL, UINT64_MAX);
	in.temperature_mc = 50000;
	expect(&p, &in, 1, POLICY_PRESSURE, NULL, UINT64_MAX);
	in.memory_pressure_ppm = 0;
	expect(&p, &in, 1, POLICY_BUSY, NULL, UINT64_MAX);
	in.foreground_cpu_ppm = 0;
	expect(&p, &in, 1, POLICY_EXHAUSTED, NULL, UINT64_MAX);
	in.budget_exhausted = false;
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);
}

/* The hysteresis latches keep counting while a higher rule holds: a machine
 * that got hot while the owner typed is still hot when they leave, until it
 * has cooled 5 C below the limit. */
static void test_latches_under_higher_rule(void **state)
{
	struct policy p;
	struct policy_inputs in = quiet(NOW);

	policy_init(&p, NOW);
	in.last_activity_usec = NOW;
	in.temperature_mc = 90000;
	in.memory_pressure_ppm = 150000;
	expect(&p, &in, 1, POLICY_ACTIVE, NULL, NOW + 3 * MIN_USEC);
	in.temperature_mc = 83000;
	in.memory_pressure_ppm = 60000;
	in.now_usec = NOW + MIN_USEC;
	expect(&p, &in, 0, POLICY_ACTIVE, NULL, NOW + 3 * MIN_USEC);
	in.now_usec = NOW + 3 * MIN_USEC;
	expect(&p, &in, 1, POLICY_HOT, "temperature 83C, cooling to 80C (MaxTemperature=85C)", UINT64_MAX);
	in.temperature_mc = 79000;
	expect(&p, &in, 1, POLICY_PRESSURE, "memory pressure 6%, waiting for < 5% (MaxMemoryPressure=10%)", UINT64_MAX);

	/* ... and one that cooled while the owner typed is not. */
	in.last_activity_usec = in.now_usec;
	in.temperature_mc = 95000;
	expect(&p, &in, 1, POLICY_ACTIVE, NULL, in.now_usec + 3 * MIN_USEC);
	in.temperature_mc = 70000;
	in.memory_pressure_ppm = 1000;
	expect(&p, &in, 0, POLICY_ACTIVE, NULL, in.now_usec + 3 * MIN_USEC);
	in.now_usec += 3 * MIN_USEC;
	in.temperature_mc = 84000;
	expect(&p, &in, 1, POLICY_IDLE, NULL, UINT64_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_first_update_reports),
		cmocka_unit_test(test_idle_without_input),
		cmocka_unit_test(test_input_window),
		cmocka_unit_test(test_logind),
		cmocka_unit_test(test_pause),
		cmocka_unit_test(test_battery),
		cmocka_unit_test(test_hot_hysteresis),
		cmocka_unit_test(test_pressure_hysteresis),
		cmocka_unit_test(test_busy),
		cmocka_unit_test(test_exhausted),
		cmocka_unit_test(test_priorities),
		cmocka_unit_test(test_latches_under_higher_rule),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
