/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Terminal input is seen event-driven: a read of a pty slave that returns
 * typed data raises SENSE_ACT_TTY within a few ms; data that sits unread in
 * the pty (output, or input nobody reads) raises nothing.
 */
#include <pty.h>
#include <termios.h>

#include "tests/host/probe-util.h"

#define ROUNDS 10
#define MAX_LATENCY_NS 10000000ULL     /* any read to its callback's timestamp */
#define MAX_MEAN_LATENCY_NS 5000000ULL /* the mean of ROUNDS reads */

static unsigned n_tty, n_other;
static uint64_t last_tty_ns;
static bool got;

static void on_activity(void *userdata, uint64_t event_ns, enum sense_activity kind)
{
	if (kind == SENSE_ACT_TTY) {
		n_tty++;
		last_tty_ns = event_ns;
		got = true;
	} else
		n_other++;
}

int main(void)
{
	char tmp[] = "/tmp/probe-tty-XXXXXX", buf[64];
	struct sense_opts o = { .tty_dir = "/dev/pts", .no_logind = true, .no_bpf = true };
	struct termios tio;
	sd_event *e = NULL;
	struct sense *s = NULL;
	uint64_t worst = 0, sum = 0;
	int master, slave, r;

	if (openpty(&master, &slave, NULL, NULL, NULL) < 0)
		SKIP("openpty: %s", strerror(errno));
	/* Raw, no echo: what is written to the master is exactly what the
	 * slave reads, as a shell in raw mode sees keys. */
	tcgetattr(slave, &tio);
	cfmakeraw(&tio);
	tcsetattr(slave, TCSANOW, &tio);
	fcntl(slave, F_SETFL, O_NONBLOCK);

	/* The timestamp is taken when the loop runs: on a busy machine a
	 * normal-priority test waits for a CPU, as the daemon would not. */
	(void)setpriority(PRIO_PROCESS, 0, -10);
	CHECK(mkdtemp(tmp), "mkdtemp: %m");
	/* The time split is not under test: any existing folder will do. */
	o.harvest_cgroup = tmp;
	o.input_dir = tmp;
	CHECK(sd_event_new(&e) >= 0, "sd_event_new");
	r = sense_new(e, &o, on_activity, NULL, &s);
	CHECK(r == 0, "sense_new: %s", strerror(-r));
	run_loop_until(e, now_ns() + 50000000ULL, NULL);

	/* Nothing reads: typed-ahead input and output must not count. */
	n_tty = 0;
	CHECK(write(master, "ls\r", 3) == 3, "write master: %m");
	CHECK(write(slave, "output\r\n", 8) == 8, "write slave: %m");
	run_loop_until(e, now_ns() + 300000000ULL, NULL);
	printf("unread input and output for 300 ms: %u tty callbacks\n", n_tty);
	CHECK(n_tty == 0, "a tty callback fired though nothing read the terminal");
	CHECK(read(master, buf, sizeof(buf)) > 0, "drain the output");

	for (int i = 0; i < ROUNDS; i++) {
		uint64_t t_read, lat;

		got = false;
		n_tty = 0;
		if (i > 0)
			CHECK(write(master, "x", 1) == 1, "write master: %m");
		t_read = now_ns();
		CHECK(read(slave, buf, sizeof(buf)) > 0, "read slave: %m");
		run_loop_until(e, now_ns() + 500000000ULL, &got);
		CHECK(got, "round %d: no SENSE_ACT_TTY after a read of typed input", i);
		lat = last_tty_ns > t_read ? last_tty_ns - t_read : 0;
		CHECK(last_tty_ns + 1000000ULL >= t_read, "round %d: event time before the read", i);
		CHECK(lat < MAX_LATENCY_NS, "round %d: event %.2f ms after the read", i, ms(lat));
		sum += lat;
		if (lat > worst)
			worst = lat;
		run_loop_until(e, now_ns() + 20000000ULL, NULL); /* past the coalescing window */
		CHECK(n_tty == 1, "round %d: one read should be one callback, got %u", i, n_tty);
	}
	printf("read -> SENSE_ACT_TTY timestamp: mean %.3f ms, worst %.3f ms over %d reads "
	       "(limits %.0f ms mean, %.0f ms worst)\n", ms(sum / ROUNDS), ms(worst), ROUNDS,
	       ms(MAX_MEAN_LATENCY_NS), ms(MAX_LATENCY_NS));
	CHECK(sum / ROUNDS < MAX_MEAN_LATENCY_NS, "mean latency too high");

	/* A burst of reads (a paste, fast typing) is one callback. */
	n_tty = 0;
	for (int i = 0; i < 5; i++) {
		CHECK(write(master, "y", 1) == 1, "write master: %m");
		CHECK(read(slave, buf, sizeof(buf)) > 0, "read slave: %m");
	}
	run_loop_until(e, now_ns() + 30000000ULL, NULL);
	printf("5 reads within a ms: %u callback(s)\n", n_tty);
	CHECK(n_tty == 1, "a burst of reads should be coalesced into one callback");
	CHECK(sense_last_activity_ns(s) >= last_tty_ns && last_tty_ns > 0, "last activity should follow tty");
	CHECK(n_other == 0, "unexpected non-tty activity");

	/* A terminal opened after the start (a new ssh session) is seen too. */
	int m2, s2;
	uint64_t t_read;

	CHECK(openpty(&m2, &s2, NULL, NULL, NULL) == 0, "openpty: %m");
	run_loop_until(e, now_ns() + 20000000ULL, NULL); /* the IN_CREATE */
	n_tty = 0;
	got = false;
	CHECK(write(m2, "z\n", 2) == 2, "write master: %m");
	t_read = now_ns();
	CHECK(read(s2, buf, sizeof(buf)) > 0, "read new slave: %m");
	run_loop_until(e, now_ns() + 500000000ULL, &got);
	printf("pty created after start: %u callback(s), %.3f ms after the read\n", n_tty,
	       got ? ms(last_tty_ns - t_read) : -1.0);
	CHECK(got && last_tty_ns - t_read < MAX_LATENCY_NS, "a new pty's input was not seen");
	close(m2);
	close(s2);

	sense_free(s);
	sd_event_unref(e);
	rmdir(tmp);
	close(master);
	close(slave);
	printf("ok\n");
	return 0;
}
