/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The fallbacks, on a kernel that refuses fentry (this machine):
 *  - the probe still loads for the time split, input falls back to evdev,
 *    and the reason names fentry and the errno;
 *  - the evdev watcher waits for a missing folder, then sees event* nodes
 *    hot-plugged into it, and turns an evdev stream into input activity;
 *  - with no_bpf the split comes from /proc/stat and still adds up.
 */
#include <linux/input.h>
#include <sys/time.h>

#include "tests/host/probe-util.h"
#include "bpf/sense-internal.h"

static unsigned n_input;
static uint64_t last_input_ns;

static void on_activity(void *userdata, uint64_t event_ns, enum sense_activity kind)
{
	if (kind == SENSE_ACT_INPUT) {
		n_input++;
		last_input_ns = event_ns;
	}
}

static void send_event(int fd, unsigned short type, unsigned short code, int value)
{
	struct input_event ev = { .type = type, .code = code, .value = value };

	gettimeofday(&ev.time, NULL);
	CHECK(write(fd, &ev, sizeof(ev)) == (ssize_t)sizeof(ev), "write to pipe: %m");
}

static void check_bpf_fallback(sd_event *e)
{
	struct sense_opts o = { .harvest_cgroup = tree_jobs, .tty_dir = "", .no_logind = true };
	struct sense *s = NULL;
	const char *reason;
	int r;

	r = sense_new(e, &o, on_activity, NULL, &s);
	CHECK(r == 0, "sense_new: %s", strerror(-r));
	reason = sense_fallback_reason(s);
	printf("default opts: input=%s time=%s reason=\"%s\"\n", sense_input_source(s),
	       sense_time_source(s), reason ?: "(none)");
	CHECK(strcmp(sense_time_source(s), "bpf") == 0, "the probe should load without fentry");
	if (strcmp(sense_input_source(s), "bpf") == 0) {
		printf("fentry/input_event loads on this kernel: the refusal path is not exercised here\n");
	} else {
		/* /dev/input does not exist here: the watcher waits for it. */
		CHECK(strcmp(sense_input_source(s), "evdev") == 0, "input source should be evdev");
		CHECK(reason && strstr(reason, "fentry"), "the reason should name fentry");
		/* "fentry/input_event refused: <strerror(errno)>" (EPERM here). */
		const char *why = strstr(reason, "refused: ");
		int err = 0;

		CHECK(why, "the reason should say fentry was refused");
		why += strlen("refused: ");
		for (int i = 1; i < 134 && !err; i++)
			if (strncmp(why, strerror(i), strlen(strerror(i))) == 0)
				err = i;
		CHECK(err, "the reason should carry the errno's text");
		printf("fentry refused with errno %d (%s)\n", err, strerror(err));
		CHECK(sense_last_activity_ns(s) == 0, "no activity yet");
	}
	s = sense_free(s);

	o.no_fentry = true;
	CHECK(sense_new(e, &o, on_activity, NULL, &s) == 0, "sense_new(no_fentry)");
	CHECK(strcmp(sense_input_source(s), "evdev") == 0, "no_fentry: input source should be evdev");
	CHECK(strcmp(sense_time_source(s), "bpf") == 0, "no_fentry: time source should be bpf");
	sense_free(s);
}

static void check_hotplug(sd_event *e)
{
	char tmp[] = "/tmp/probe-fallback-XXXXXX", dir[64], path[128];
	struct sense_opts o = { .harvest_cgroup = tree_jobs, .tty_dir = "", .no_logind = true,
				.no_fentry = true, .input_dir = dir };
	struct sense *s = NULL;
	int fd, p[2];
	unsigned before;

	CHECK(mkdtemp(tmp), "mkdtemp: %m");
	/* The folder does not exist yet, as /dev/input before the first device. */
	snprintf(dir, sizeof(dir), "%s/input", tmp);
	CHECK(sense_new(e, &o, on_activity, NULL, &s) == 0, "sense_new(input_dir)");
	CHECK(strcmp(sense_input_source(s), "evdev") == 0, "a missing input folder is waited for");
	CHECK(sense_evdev_candidates(s) == 0, "nothing to look at yet");

	CHECK(mkdir(dir, 0755) == 0, "mkdir: %m");
	run_loop_until(e, now_ns() + 50000000ULL, NULL);
	snprintf(path, sizeof(path), "%s/event7", dir);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	CHECK(fd >= 0, "create %s: %m", path);
	close(fd);
	snprintf(path, sizeof(path), "%s/mouse0", dir); /* not an event node: ignored */
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	close(fd);
	run_loop_until(e, now_ns() + 100000000ULL, NULL);
	before = sense_evdev_candidates(s);
	printf("hot-plug: folder created after start, event7 noticed: candidates=%u devices=%zu\n",
	       before, sense_evdev_devices(s));
	CHECK(before == 1, "the watcher should have looked at event7 (and only it)");
	/* A plain file answers no EVIOCGBIT: it must not be kept as a device. */
	CHECK(sense_evdev_devices(s) == 0, "a non-evdev file was taken as a device");

	/* The reading side, fed from a pipe in evdev's record format. */
	CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0, "pipe: %m");
	CHECK(sense_evdev_add_fd(s, p[0], "pipe") == 0, "sense_evdev_add_fd");
	n_input = 0;
	send_event(p[1], EV_SYN, SYN_REPORT, 0);
	send_event(p[1], EV_MSC, MSC_SCAN, 30);
	run_loop_until(e, now_ns() + 50000000ULL, NULL);
	CHECK(n_input == 0, "EV_SYN/EV_MSC alone are not input");
	uint64_t t = now_ns();
	/* A key press: scan code, key down, sync, and the release. */
	send_event(p[1], EV_MSC, MSC_SCAN, 30);
	send_event(p[1], EV_KEY, KEY_A, 1);
	send_event(p[1], EV_SYN, SYN_REPORT, 0);
	send_event(p[1], EV_KEY, KEY_A, 0);
	send_event(p[1], EV_SYN, SYN_REPORT, 0);
	run_loop_until(e, now_ns() + 50000000ULL, NULL);
	printf("evdev key press: %u callback(s), %.2f ms after the write\n", n_input,
	       ms(last_input_ns - t));
	CHECK(n_input == 1, "one key press should be one callback");
	CHECK(last_input_ns >= t && last_input_ns - t < 20000000ULL, "event time is not the press time");
	CHECK(sense_last_activity_ns(s) == last_input_ns, "last activity should be the key press");
	send_event(p[1], EV_REL, REL_X, 3);
	run_loop_until(e, now_ns() + 50000000ULL, NULL);
	CHECK(n_input == 2, "mouse motion after the window is a second burst");
	close(p[1]); /* unplugged */
	run_loop_until(e, now_ns() + 50000000ULL, NULL);
	CHECK(sense_evdev_devices(s) == 0, "an unplugged device should be dropped");
	sense_free(s);

	unlink(path);
	snprintf(path, sizeof(path), "%s/event7", dir);
	unlink(path);
	rmdir(dir);
	rmdir(tmp);
	if (access("/dev/uinput", F_OK) < 0)
		printf("a real hot-plugged input device is not tested here: no /dev/uinput\n");
}

/* The parser, on files of known content. */
static void check_procstat_parser(void)
{
	char dir[] = "/tmp/probe-procstat-XXXXXX", stat[64], cpu[64];
	struct procstat_sample p;
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f;

	CHECK(mkdtemp(dir), "mkdtemp: %m");
	snprintf(stat, sizeof(stat), "%s/stat", dir);
	snprintf(cpu, sizeof(cpu), "%s/cpu.stat", dir);
	f = fopen(stat, "we");
	CHECK(f, "fopen: %m");
	/* user nice system idle iowait irq softirq steal guest guest_nice */
	fprintf(f, "cpu  100 2 30 500 7 1 4 0 50 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n");
	fclose(f);
	f = fopen(cpu, "we");
	CHECK(f, "fopen: %m");
	fprintf(f, "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n");
	fclose(f);
	CHECK(procstat_read(stat, cpu, &p) == 0, "procstat_read");
	CHECK(p.idle_ns == 507ULL * (1000000000ULL / (uint64_t)hz), "idle is idle+iowait");
	CHECK(p.busy_ns == 137ULL * (1000000000ULL / (uint64_t)hz), "busy is user+nice+system+irq+softirq+steal");
	CHECK(p.harvest_ns == 123456000ULL, "harvest is usage_usec");
	CHECK(procstat_read(stat, NULL, &p) == 0 && p.harvest_ns == 0, "no cpu.stat: harvest 0");
	unlink(cpu);
	CHECK(procstat_read(stat, cpu, &p) == -ENOENT, "a missing cpu.stat is -ENOENT");
	f = fopen(stat, "we");
	fprintf(f, "intr 1 2 3\n");
	fclose(f);
	CHECK(procstat_read(stat, NULL, &p) == -EBADMSG, "a bad /proc/stat is -EBADMSG");
	unlink(stat);
	rmdir(dir);
	printf("procstat parser: ok\n");
}

static void check_procstat(sd_event *e)
{
	struct sense_opts o = { .harvest_cgroup = tree_jobs, .tty_dir = "", .no_logind = true,
				.no_bpf = true, .input_dir = "/nonexistent/input" };
	struct sense *s = NULL;
	struct sense_times t0, t1;
	struct sense_intrusion in;
	uint64_t w0, w1, cap, sum, use0, use1, last, idle0, busy0, idle1, busy1;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	pid_t hog;

	CHECK(sense_new(e, &o, NULL, NULL, &s) == 0, "sense_new(no_bpf)");
	printf("no_bpf: input=%s time=%s reason=\"%s\"\n", sense_input_source(s), sense_time_source(s),
	       sense_fallback_reason(s) ?: "(none)");
	CHECK(strcmp(sense_time_source(s), "procstat") == 0, "no_bpf: time source should be procstat");
	/* The parent of the input folder does not exist either: nothing to wait on. */
	CHECK(strcmp(sense_input_source(s), "none") == 0, "no input source should be left");
	CHECK(sense_read_intrusion(s, &in) == -EOPNOTSUPP, "intrusion needs the probe");
	CHECK(sense_last_harvest_ns(s, &last) == -EOPNOTSUPP, "last harvest needs the probe");

	hog = spawn_hog(tree_j1, -1, 100, 2);
	usleep(200000);
	w0 = now_ns();
	use0 = cgroup_usage_usec(tree_jobs);
	proc_stat(&idle0, &busy0);
	CHECK(sense_read_times(s, &t0) == 0, "sense_read_times");
	usleep(1500000);
	w1 = now_ns();
	use1 = cgroup_usage_usec(tree_jobs);
	CHECK(sense_read_times(s, &t1) == 0, "sense_read_times");
	kill(hog, SIGKILL);
	waitpid(hog, NULL, 0);

	cap = (uint64_t)ncpu * (w1 - w0);
	sum = (t1.idle_ns - t0.idle_ns) + (t1.harvest_ns - t0.harvest_ns) + (t1.foreground_ns - t0.foreground_ns);
	printf("procstat: interval %.0f ms of CPU time, sum %.0f ms (idle %.0f, harvest %.0f, foreground %.0f); "
	       "cpu.stat harvest %.0f ms\n", ms(cap), ms(sum), ms(t1.idle_ns - t0.idle_ns),
	       ms(t1.harvest_ns - t0.harvest_ns), ms(t1.foreground_ns - t0.foreground_ns),
	       (double)(use1 - use0) / 1e3);
	/* /proc/stat moves in USER_HZ ticks per CPU: allow a few of them. */
	CHECK(t1.idle_ns >= t0.idle_ns && t1.harvest_ns >= t0.harvest_ns &&
		      t1.foreground_ns >= t0.foreground_ns, "procstat times stepped back");
	/* Where ticks are lost (an emulated guest) /proc/stat itself does not
	 * account for the interval: the sums cannot be checked there. */
	proc_stat(&idle1, &busy1);
	if (fabs((double)(idle1 - idle0 + busy1 - busy0) - (double)(w1 - w0) * (double)ncpu) >
	    0.1 * (double)(w1 - w0) * (double)ncpu) {
		printf("procstat sums not checked: /proc/stat itself accounts for %.0f of %.0f ms\n",
		       ms(idle1 - idle0 + busy1 - busy0), ms((w1 - w0) * (uint64_t)ncpu));
	} else {
		CHECK(fabs((double)sum - (double)cap) < 0.05 * (double)cap, "procstat times do not add up");
		CHECK(t1.harvest_ns - t0.harvest_ns > (w1 - w0) / 4, "harvest time missing from procstat");
		CHECK(fabs((double)(t1.harvest_ns - t0.harvest_ns) - (double)(use1 - use0) * 1e3) <
			      0.05 * (double)cap, "procstat harvest is not jobs/ cpu.stat");
	}
	sense_free(s);
}

int main(void)
{
	sd_event *e = NULL;

	make_tree();
	CHECK(sd_event_new(&e) >= 0, "sd_event_new");
	check_bpf_fallback(e);
	check_hotplug(e);
	check_procstat_parser();
	check_procstat(e);
	sd_event_unref(e);
	printf("ok\n");
	return 0;
}
