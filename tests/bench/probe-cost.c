/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The probe's cost per event, by the kernel's own accounting
 * (BPF_ENABLE_STATS: run_time_ns and run_cnt of each program), while a
 * foreground pipe ping-pong makes context switches and wake-ups, in three
 * states of the harvest subtree: empty (no jobs), a harvest hog frozen (the
 * usual state at a small cap), and a harvest hog running beside the
 * foreground. Beside it run programs that do nothing on the same
 * tracepoints (baseline.bpf.c): the cost of entering a program with the
 * stats on, measured on the same events, which the figure above it
 * includes. Prints one line per state and program; a benchmark, not a
 * test: it asserts only that the probe loaded and counted events.
 *
 * usage: bench-probe [SECONDS per state, default 3]
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>

#include "tests/host/probe-util.h"
#include "tests/bench/baseline.skel.h"

#define MAX_PROGS 16

struct prog {
	int fd;
	char name[BPF_OBJ_NAME_LEN];
	uint64_t ns, cnt;
};

static struct prog progs[MAX_PROGS];
static int n_progs;

/* The probe's programs, found as the prog fds this process holds. */
static void find_progs(void)
{
	DIR *d = opendir("/proc/self/fdinfo");
	struct dirent *de;

	CHECK(d, "opendir /proc/self/fdinfo: %m");
	while ((de = readdir(d)) && n_progs < MAX_PROGS) {
		char path[300], line[128];
		unsigned id = 0;
		FILE *f;

		snprintf(path, sizeof(path), "/proc/self/fdinfo/%s", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "prog_id: %u", &id) == 1)
				break;
		fclose(f);
		if (!id)
			continue;
		bool seen = false;
		for (int i = 0; i < n_progs; i++) {
			struct bpf_prog_info info = {};
			__u32 len = sizeof(info);
			if (bpf_obj_get_info_by_fd(progs[i].fd, &info, &len) == 0 && info.id == id)
				seen = true;
		}
		if (seen)
			continue;
		int fd = bpf_prog_get_fd_by_id(id);
		if (fd < 0)
			continue;
		progs[n_progs].fd = fd;
		n_progs++;
	}
	closedir(d);
}

static void read_progs(struct prog *out)
{
	for (int i = 0; i < n_progs; i++) {
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);

		CHECK(bpf_obj_get_info_by_fd(progs[i].fd, &info, &len) == 0, "bpf_prog_get_info_by_fd: %m");
		out[i] = progs[i];
		snprintf(out[i].name, sizeof(out[i].name), "%s", info.name);
		out[i].ns = info.run_time_ns;
		out[i].cnt = info.run_cnt;
	}
}

/* Two processes bouncing a byte over pipes for SECS: every round trip is
 * two wake-ups and two context switches on a CPU. Returns round trips. */
static uint64_t ping_pong(double secs)
{
	int ab[2], ba[2], res[2];
	uint64_t n = 0;
	pid_t pid;
	char c = 0;

	CHECK(pipe(ab) == 0 && pipe(ba) == 0 && pipe(res) == 0, "pipe: %m");
	pid = fork();
	CHECK(pid >= 0, "fork: %m");
	if (pid == 0) {
		while (read(ab[0], &c, 1) == 1 && c != 'q')
			if (write(ba[1], &c, 1) != 1)
				_exit(1);
		_exit(0);
	}
	uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
	while (now_ns() < end) {
		c = 'p';
		if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
			break;
		n++;
	}
	c = 'q';
	(void)!write(ab[1], &c, 1);
	waitpid(pid, NULL, 0);
	for (int i = 0; i < 2; i++) {
		close(ab[i]);
		close(ba[i]);
		close(res[i]);
	}
	return n;
}

static void measure(const char *state, double secs, uint64_t *total_ns, uint64_t *total_cnt)
{
	struct prog a[MAX_PROGS], b[MAX_PROGS];
	uint64_t ns = 0, cnt = 0, rt;

	read_progs(a);
	rt = ping_pong(secs);
	read_progs(b);
	for (int i = 0; i < n_progs; i++) {
		uint64_t dn = b[i].ns - a[i].ns, dc = b[i].cnt - a[i].cnt;

		if (strncmp(b[i].name, "base_", 5) != 0) {
			ns += dn;
			cnt += dc;
		}
		if (dc)
			printf("probe %-9s %-18s %10" PRIu64 " runs %8.1f ns/run\n", state, b[i].name, dc,
			       (double)dn / (double)dc);
	}
	printf("probe %-9s %-18s %10" PRIu64 " runs %8.1f ns/run (%" PRIu64 " ping-pong round trips)\n", state,
	       "all", cnt, cnt ? (double)ns / (double)cnt : 0.0, rt);
	*total_ns += ns;
	*total_cnt += cnt;
}

int main(int argc, char **argv)
{
	struct sense_opts o = { .tty_dir = "", .no_logind = true, .input_dir = "/nonexistent/input" };
	double secs = argc > 1 ? atof(argv[1]) : 3.0;
	uint64_t ns = 0, cnt = 0;
	sd_event *e = NULL;
	struct sense *s = NULL;
	int r, stats_fd;
	pid_t hog;

	if (secs <= 0)
		secs = 3.0;
	make_tree();
	o.harvest_cgroup = tree_jobs;
	CHECK(sd_event_new(&e) >= 0, "sd_event_new");
	r = sense_new(e, &o, NULL, NULL, &s);
	CHECK(r == 0, "sense_new: %s", strerror(-r));
	if (strcmp(sense_time_source(s), "bpf") != 0)
		SKIP("the probe did not load here (%s)", sense_fallback_reason(s) ?: "?");
	stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	if (stats_fd < 0)
		SKIP("BPF_ENABLE_STATS refused: %s", strerror(errno));
	struct baseline_bpf *base = baseline_bpf__open_and_load();
	CHECK(base, "the baseline programs did not load: %m");
	CHECK(baseline_bpf__attach(base) == 0, "the baseline programs did not attach: %m");
	find_progs();
	CHECK(n_progs > 0, "no BPF program found among this process's fds");

	measure("no-jobs", secs, &ns, &cnt);
	hog = spawn_hog_nice(tree_j1, 0, 100, 3 * secs + 5, 19);
	usleep(100000);
	CHECK(write_file(tree_j1, "cgroup.freeze", "1") == 0, "freeze: %m");
	usleep(100000);
	measure("frozen", secs, &ns, &cnt);
	CHECK(write_file(tree_j1, "cgroup.freeze", "0") == 0, "thaw: %m");
	usleep(100000);
	measure("running", secs, &ns, &cnt);
	kill(hog, SIGKILL);
	waitpid(hog, NULL, 0);
	printf("probe cost: %.1f ns per event over %" PRIu64 " events (all states)\n",
	       cnt ? (double)ns / (double)cnt : 0.0, cnt);
	CHECK(cnt > 0, "the probe counted no event");
	close(stats_fd);
	baseline_bpf__destroy(base);
	sense_free(s);
	sd_event_unref(e);
	return 0;
}
