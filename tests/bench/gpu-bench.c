/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * make bench-gpu: what slicing costs and how well chunks keep to the slice.
 *
 * For the first device of each backend: a compute-bound kernel (scramble,
 * tests/gpu/kernels.h) sized to about BENCH_TARGET_MS of device time, run
 * unsliced and sliced (2 ms) through the queue, twice each, alternating.
 * Prints the chunk-time distribution against the slice and the overhead of
 * slicing (sliced / unsliced, wall and device time), and checks the bytes
 * agree. With a CUDA GPU also: the slowdown of a foreground GPU job (a
 * separate process launching ~1 ms kernels on a default-priority stream)
 * while the queue works, with the queue yielding to it (NVML, the default)
 * and with yielding switched off (slicing and stream priority alone).
 */
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gpu/cuda-api.h"
#include "gpu/gpu.h"
#include "tests/gpu/kernels.h"

#define BENCH_TARGET_MS 400.0
#define ROUNDS 1024u
#define CUDA_BLOCK 256u
#define WARMUP_CHUNKS 8
#define REPS 3

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

struct run {
	unsigned dones, n, cap;
	int error;
	uint64_t *chunks;
	uint64_t device_ns, wall_ns;
};

static bool yes(void *u) { return true; }
static void charge(void *u, uint64_t id, uint64_t ns)
{
	struct run *r = u;
	if (r->n < r->cap)
		r->chunks[r->n++] = ns;
	r->device_ns += ns;
}
static void done(void *u, uint64_t id, int error)
{
	struct run *r = u;
	r->dones++;
	r->error = error;
}
static const struct gpu_queue_hooks hooks = { .may_dispatch = yes, .owner_idle = yes, .charge = charge, .done = done };

struct job {
	struct gpu_device *dev;
	uint32_t n, rounds;
	uint32_t *in, *out;
	struct gpu_buffer bufs[2];
	struct gpu_arg args[4];
	struct gpu_task task;
};

static void job_setup(struct job *j, struct gpu_device *dev, uint32_t n, uint32_t rounds)
{
	bool cuda = gpu_device_get_info(dev)->backend == GPU_BACKEND_CUDA;

	free(j->in);
	free(j->out);
	*j = (struct job) { .dev = dev, .n = n, .rounds = rounds };
	j->in = malloc((size_t) n * 4);
	j->out = calloc(n, 4);
	if (!j->in || !j->out) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	for (uint32_t i = 0; i < n; i++)
		j->in[i] = gpu_test_input(i);
	j->bufs[0] = (struct gpu_buffer) { j->in, (size_t) n * 4, GPU_BUFFER_IN };
	j->bufs[1] = (struct gpu_buffer) { j->out, (size_t) n * 4, GPU_BUFFER_OUT };
	j->args[0] = (struct gpu_arg) { .kind = GPU_ARG_BUFFER, .buffer = 0 };
	j->args[1] = (struct gpu_arg) { .kind = GPU_ARG_BUFFER, .buffer = 1 };
	j->task = (struct gpu_task) {
		.id = 1, .kernel = "scramble", .work_dim = 1, .buffers = j->bufs, .n_buffers = 2, .args = j->args,
	};
	if (cuda) {
		j->args[2] = (struct gpu_arg) { .kind = GPU_ARG_SCALAR, .size = 4 };
		j->args[3] = (struct gpu_arg) { .kind = GPU_ARG_SCALAR, .size = 4 };
		memcpy(j->args[2].value, &j->n, 4);
		memcpy(j->args[3].value, &j->rounds, 4);
		j->task.n_args = 4;
		j->task.source = gpu_test_scramble_ptx;
		j->task.global[0] = (n + CUDA_BLOCK - 1) / CUDA_BLOCK * CUDA_BLOCK;
		j->task.local[0] = CUDA_BLOCK;
	} else {
		j->args[2] = (struct gpu_arg) { .kind = GPU_ARG_SCALAR, .size = 4 };
		memcpy(j->args[2].value, &j->rounds, 4);
		j->task.n_args = 3;
		j->task.source = gpu_test_scramble_cl;
		j->task.global[0] = n;
	}
}

/* One task through a queue, driven like harvesterd's loop. While fg_fd is
 * open (a foreground job's output), keep resubmitting and read it into fg. */
static int run_queue(struct job *j, const struct gpu_queue_config *cfg, struct run *r, int fg_fd, char *fg, size_t fg_size)
{
	struct gpu_queue *q;
	uint64_t t0;
	size_t fg_len = 0;
	int ret;

	ret = gpu_queue_new(j->dev, cfg, &hooks, r, &q);
	if (ret < 0)
		return ret;
	t0 = now_ns();
	ret = gpu_queue_submit(q, &j->task);
	if (ret < 0)
		goto out;
	gpu_queue_kick(q);
	for (;;) {
		struct pollfd p[2] = { { .fd = gpu_queue_get_fd(q), .events = POLLIN }, { .fd = fg_fd, .events = POLLIN } };
		poll(p, fg_fd >= 0 ? 2 : 1, 100);
		if (fg_fd >= 0 && p[1].revents) {
			ssize_t k = read(fg_fd, fg + fg_len, fg_size - 1 - fg_len);
			if (k <= 0)
				fg_fd = -1;
			else
				fg_len += k;
			fg[fg_len] = 0;
		}
		gpu_queue_kick(q);
		if (r->error < 0)
			break;
		if (r->dones > 0 && fg_fd < 0)
			break;
		if (r->dones > 0 && fg_fd >= 0) {   /* the foreground job still runs: keep the GPU busy */
			r->dones = 0;
			j->task.id++;
			gpu_queue_submit(q, &j->task);
			gpu_queue_kick(q);
		}
	}
	r->wall_ns = now_ns() - t0;
	ret = r->error;
out:
	gpu_queue_free(q);
	return ret;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
	return x < y ? -1 : x > y;
}

static double pct(const uint64_t *sorted, unsigned n, double p)
{
	unsigned i = (unsigned) (p / 100.0 * (n - 1) + 0.5);
	return n ? sorted[i] / 1e6 : 0;
}

static void bench_device(struct gpu_device *dev)
{
	const struct gpu_device_info *info = gpu_device_get_info(dev);
	struct gpu_queue_config whole = { .slice_ns = 0 }, sliced = { .slice_ns = GPU_SLICE_DEFAULT_NS };
	static uint64_t buf[REPS][1 << 18];
	struct job j = {};
	struct run probe = {}, u[REPS] = {}, s[REPS] = {};
	uint32_t *ref;
	static uint64_t all[REPS << 18];
	unsigned n_all = 0, n_sized = 0, over = 0;
	double scale;
	bool same = true;
	int r;

	printf("\n== %s: %s (%s)\n", info->id, info->name, info->version);

	/* Size the work to about BENCH_TARGET_MS unsliced (the probe also
	 * warms the compiler caches). */
	job_setup(&j, dev, 1u << 20, ROUNDS);
	r = run_queue(&j, &whole, &probe, -1, NULL, 0);
	if (r < 0) {
		printf("probe run failed: %s\n", strerror(-r));
		return;
	}
	scale = BENCH_TARGET_MS * 1e6 / (double) (probe.device_ns ? probe.device_ns : 1);
	if (scale > 64)
		scale = 64;
	if (scale < 1.0 / 16)
		scale = 1.0 / 16;
	/* A multiple of 4096, so both runs get the same work-group size: the
	 * comparison is then of slicing alone (the tests cover odd sizes). */
	job_setup(&j, dev, (uint32_t) ((1u << 20) * scale) / 4096 * 4096, ROUNDS);
	ref = malloc((size_t) j.n * 4);
	printf("work: %u work-items x %u rounds (probe of %u items: %.1f ms device)\n", j.n, ROUNDS, 1u << 20,
	       probe.device_ns / 1e6);

	for (int i = 0; i < REPS; i++) {
		u[i] = (struct run) { .chunks = buf[0], .cap = 1 };
		r = run_queue(&j, &whole, &u[i], -1, NULL, 0);
		if (r < 0) {
			printf("unsliced run failed: %s\n", strerror(-r));
			goto out;
		}
		if (i == 0)
			memcpy(ref, j.out, (size_t) j.n * 4);
		s[i] = (struct run) { .chunks = buf[i], .cap = 1 << 18 };
		memset(j.out, 0, (size_t) j.n * 4);
		r = run_queue(&j, &sliced, &s[i], -1, NULL, 0);
		if (r < 0) {
			printf("sliced run failed: %s\n", strerror(-r));
			goto out;
		}
		same &= memcmp(ref, j.out, (size_t) j.n * 4) == 0;
		for (unsigned k = 0; k < s[i].n; k++) {
			all[n_all++] = s[i].chunks[k];
			if (k >= WARMUP_CHUNKS && k + 1 < s[i].n) {   /* sized chunks: no warm-up, no tail */
				n_sized++;
				over += s[i].chunks[k] > GPU_SLICE_DEFAULT_NS;
			}
		}
	}
	qsort(all, n_all, sizeof(*all), cmp_u64);
	{
		static uint64_t sized[REPS << 18];
		unsigned m = 0;
		for (int i = 0; i < REPS; i++)
			for (unsigned k = WARMUP_CHUNKS; k + 1 < s[i].n; k++)
				sized[m++] = s[i].chunks[k];
		qsort(sized, m, sizeof(*sized), cmp_u64);
		printf("chunk device time vs slice 2.000 ms (%u chunks in %d runs; sized = without the first %d and the tail):\n",
		       n_all, REPS, WARMUP_CHUNKS);
		printf("  all:   p50 %.3f  p90 %.3f  p99 %.3f  max %.3f ms\n", pct(all, n_all, 50), pct(all, n_all, 90),
		       pct(all, n_all, 99), n_all ? all[n_all - 1] / 1e6 : 0);
		printf("  sized: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f ms; %u of %u (%.1f %%) over the slice\n",
		       pct(sized, m, 50), pct(sized, m, 90), pct(sized, m, 99), m ? sized[m - 1] / 1e6 : 0, over, n_sized,
		       n_sized ? 100.0 * over / n_sized : 0);
	}
	for (int i = 0; i < REPS; i++)
		printf("run %d: unsliced %.1f ms wall, %.1f ms device | sliced %.1f ms wall, %.1f ms device, %u chunks\n", i + 1,
		       u[i].wall_ns / 1e6, u[i].device_ns / 1e6, s[i].wall_ns / 1e6, s[i].device_ns / 1e6, s[i].n);
	{
		uint64_t uw = UINT64_MAX, sw = UINT64_MAX, ud = UINT64_MAX, sd = UINT64_MAX;
		for (int i = 0; i < REPS; i++) {
			uw = u[i].wall_ns < uw ? u[i].wall_ns : uw;
			sw = s[i].wall_ns < sw ? s[i].wall_ns : sw;
			ud = u[i].device_ns < ud ? u[i].device_ns : ud;
			sd = s[i].device_ns < sd ? s[i].device_ns : sd;
		}
		printf("slicing overhead (best of %d, sliced / unsliced): wall %.3f x, device %.3f x\n", REPS,
		       (double) sw / uw, (double) sd / ud);
	}
	printf("sliced bytes equal unsliced: %s\n", same ? "yes" : "NO");
out:
	free(ref);
	free(j.in);
	free(j.out);
}

/* --- foreground GPU job (CUDA), a process of its own ------------------------------- */

#define FIELD(field, symbol, type) __typeof__(type) field;
static struct {
	GCU_FUNCTIONS(FIELD)
} cu;
#undef FIELD

static int foreground_main(unsigned frames)
{
	void *lib = dlopen("libcuda.so.1", RTLD_NOW);
	gcu_device dev;
	gcu_context ctx;
	gcu_module mod;
	gcu_function fn;
	gcu_deviceptr din, dout;
	uint32_t n = 1u << 20, rounds = 32768, zero = 0;   /* about 1 ms on an H100 */
	uint64_t *t = calloc(frames, sizeof(*t)), sum = 0;
	void *params[7];

	if (!lib)
		return 77;
#define LOAD(field, sym, type) cu.field = (type) dlsym(lib, #sym);
	GCU_FUNCTIONS(LOAD)
#undef LOAD
	if (!cu.EventElapsedTime)
		cu.EventElapsedTime = (__typeof__(cu.EventElapsedTime)) dlsym(lib, GCU_FALLBACK_EventElapsedTime);
	if (cu.Init(0) || cu.DeviceGet(&dev, 0) || cu.DevicePrimaryCtxRetain(&ctx, dev) || cu.CtxSetCurrent(ctx) ||
	    cu.ModuleLoadDataEx(&mod, gpu_test_scramble_ptx, 0, NULL, NULL) ||
	    cu.ModuleGetFunction(&fn, mod, "scramble") || cu.MemAlloc(&din, n * 4) || cu.MemAlloc(&dout, n * 4))
		return 1;
	params[0] = &din;
	params[1] = &dout;
	params[2] = &n;
	params[3] = &rounds;
	params[4] = params[5] = params[6] = &zero;
	/* One "frame": a kernel on the default stream, waited for. */
	for (unsigned f = 0; f < frames; f++) {
		uint64_t t0 = now_ns();
		if (cu.LaunchKernel(fn, n / 256, 1, 1, 256, 1, 1, 0, NULL, params, NULL) || cu.StreamSynchronize(NULL))
			return 1;
		t[f] = now_ns() - t0;
		sum += t[f];
	}
	qsort(t, frames, sizeof(*t), cmp_u64);
	printf("%.1f %.1f %.1f\n", t[frames / 2] / 1e3, t[frames * 99 / 100] / 1e3, sum / 1e3 / frames);
	return 0;
}

static int run_foreground(struct job *j, const struct gpu_queue_config *cfg, double *p50, double *p99, double *mean)
{
	char out[256] = "";
	int fds[2], status;
	pid_t pid;

	if (pipe(fds) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		execl("/proc/self/exe", "gpu-bench", "--foreground", "300", (char *) NULL);
		_exit(127);
	}
	close(fds[1]);
	if (cfg) {
		struct run r = { .chunks = NULL, .cap = 0 };
		run_queue(j, cfg, &r, fds[0], out, sizeof(out));
	} else {
		ssize_t k = read(fds[0], out, sizeof(out) - 1);
		out[k > 0 ? k : 0] = 0;
	}
	close(fds[0]);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || sscanf(out, "%lf %lf %lf", p50, p99, mean) != 3)
		return -EIO;
	return 0;
}

static void bench_foreground(struct gpu_device *dev)
{
	struct gpu_queue_config yielding = { .slice_ns = GPU_SLICE_DEFAULT_NS },
				forced = { .slice_ns = GPU_SLICE_DEFAULT_NS, .ignore_others_busy = true };
	double a[3], y[3], f[3];
	struct job j = {};

	printf("\n== foreground GPU job (300 frames of a ~1 ms kernel, default-priority stream, own process)\n");
	job_setup(&j, dev, 16u << 20, 65536);   /* tens of ms a task on an H100 */
	if (run_foreground(&j, NULL, &a[0], &a[1], &a[2]) < 0 ||
	    run_foreground(&j, &yielding, &y[0], &y[1], &y[2]) < 0 ||
	    run_foreground(&j, &forced, &f[0], &f[1], &f[2]) < 0) {
		printf("foreground job failed\n");
		goto out;
	}
	printf("frame time alone:                          p50 %.1f us, p99 %.1f us, mean %.1f us\n", a[0], a[1], a[2]);
	printf("with the queue (yields to others, NVML):   p50 %.1f us, p99 %.1f us, mean %.1f us (slowdown %.3f x mean)\n",
	       y[0], y[1], y[2], y[2] / a[2]);
	printf("with the queue (not yielding: slices only): p50 %.1f us, p99 %.1f us, mean %.1f us (slowdown %.3f x mean)\n",
	       f[0], f[1], f[2], f[2] / a[2]);
out:
	free(j.in);
	free(j.out);
}

int main(int argc, char **argv)
{
	struct gpu_device **devs = NULL, *cl = NULL, *cuda = NULL;
	int n;

	if (argc == 3 && strcmp(argv[1], "--foreground") == 0)
		return foreground_main((unsigned) atoi(argv[2]));

	n = gpu_devices_find(&devs);
	if (n < 0) {
		fprintf(stderr, "gpu-bench: finding devices: %s\n", strerror(-n));
		return 1;
	}
	for (int i = 0; i < n; i++) {
		const struct gpu_device_info *info = gpu_device_get_info(devs[i]);
		if (info->backend == GPU_BACKEND_OPENCL && !cl)
			cl = devs[i];
		if (info->backend == GPU_BACKEND_CUDA && !cuda)
			cuda = devs[i];
	}
	printf("gpu-bench: slice %.1f ms; OpenCL: %s; CUDA: %s\n", GPU_SLICE_DEFAULT_NS / 1e6,
	       cl ? gpu_device_get_info(cl)->name : "none",
	       cuda ? gpu_device_get_info(cuda)->name : gpu_cuda_absent_reason(gpu_cuda_devices(&(struct gpu_device **) { NULL })));
	if (cl)
		bench_device(cl);
	if (cuda) {
		bench_device(cuda);
		bench_foreground(cuda);
	} else {
		printf("\nforeground-slowdown figures need a CUDA GPU: skipped\n");
	}
	gpu_devices_free(devs, n);
	return cl || cuda ? 0 : 77;
}
