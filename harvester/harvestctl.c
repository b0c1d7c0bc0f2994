/* SPDX-License-Identifier: GPL-2.0-or-later */
/* harvestctl: ask harvesterd what it is doing, and tell it what to do. */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "harvester/config.h"
#include "harvester/control.h"
#include "harvester/fileio.h"
#include "harvester/macro.h"

static const char *socket_path = "/run/harvester/control.sock";
static bool arg_json;

/* Send req (consumed), with the descriptor send_fd when it is not -1
 * (SCM_RIGHTS, on the first bytes), and read the answer into *ret. */
static int request_fd(json_t *req, int send_fd, json_t **ret)
{
	_cleanup_(json_decrefp) json_t *owned = req;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *s;
	int r;

	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", socket_path) >= (int)sizeof(sa.sun_path)) {
		fprintf(stderr, "harvestctl: socket path too long: %s\n", socket_path);
		return -ENAMETOOLONG;
	}
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = negative_errno();
		fprintf(stderr, "harvestctl: cannot reach harvesterd at %s: %s\n"
			"(is it running? 'systemctl status harvesterd')\n", socket_path, strerror(-r));
		return r;
	}
	s = json_dumps(req, JSON_COMPACT);
	if (!s)
		return -ENOMEM;
	size_t len = strlen(s), off = 0;
	while (off < len) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int))];
		} control = {};
		struct iovec iov = { s + off, len - off };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (off == 0 && send_fd >= 0) {
			msg.msg_control = &control;
			msg.msg_controllen = sizeof(control);
			struct cmsghdr *h = CMSG_FIRSTHDR(&msg);
			h->cmsg_level = SOL_SOCKET;
			h->cmsg_type = SCM_RIGHTS;
			h->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(h), &send_fd, sizeof(int));
		}
		ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (w < 0) {
			free(s);
			return negative_errno();
		}
		off += (size_t)w;
	}
	free(s);
	shutdown(fd, SHUT_WR);

	size_t cap = 65536, n = 0;
	char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (n + 4096 > cap) {
			char *nb = realloc(buf, cap *= 2);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
		}
		ssize_t k = read(fd, buf + n, cap - n);
		if (k < 0) {
			r = negative_errno();
			free(buf);
			return r;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	json_error_t err;
	json_t *reply = json_loadb(buf, n, 0, &err);
	free(buf);
	if (!reply) {
		fprintf(stderr, "harvestctl: bad reply from harvesterd: %s\n", err.text);
		return -EBADMSG;
	}
	if (!json_is_true(json_object_get(reply, "ok"))) {
		const char *e = json_string_value(json_object_get(reply, "error"));
		fprintf(stderr, "harvestctl: %s\n", e ? e : "request failed");
		json_decref(reply);
		return -EPERM;
	}
	*ret = reply;
	return 0;
}

static int request(json_t *req, json_t **ret)
{
	return request_fd(req, -1, ret);
}

static void print_json(json_t *o)
{
	json_dumpf(o, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
	putchar('\n');
}

static json_int_t geti(json_t *o, const char *path)
{
	/* "a.b" looks one level down */
	char key[64];
	const char *dot = strchr(path, '.');
	if (dot) {
		snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
		return json_integer_value(json_object_get(json_object_get(o, key), dot + 1));
	}
	return json_integer_value(json_object_get(o, path));
}

static const char *span(char *buf, size_t len, json_int_t usec)
{
	if (usec < 0)
		return "-";
	if (usec < 1000000 && usec > 0) {
		snprintf(buf, len, "%.1fms", (double)usec / 1000.0);
		return buf;
	}
	return format_timespan(buf, len, (uint64_t)usec);
}

static const char *percent(char *buf, size_t len, json_int_t ppm)
{
	snprintf(buf, len, "%g%%", (double)ppm / 10000.0);
	return buf;
}

static void print_gpu_status(json_t *g)
{
	char a[64], b[64], c[64], d[64];
	json_t *bu = json_object_get(g, "budget"), *dv;
	size_t i;

	if (!json_is_object(g))
		return;
	size_t n = json_array_size(json_object_get(g, "devices"));
	const char *why = json_string_value(json_object_get(g, "not_dispatching_because"));
	printf("GPU:        %zu device%s, dispatch %s%s%s\n", n, n == 1 ? "" : "s",
	       json_is_true(json_object_get(g, "dispatch")) ? "on" : "off", why ? ": " : "", why ? why : "");
	json_array_foreach(json_object_get(g, "devices"), i, dv) {
		const char *busy = json_string_value(json_object_get(dv, "busy_detection"));
		const char *note = json_string_value(json_object_get(dv, "busy_detection_note"));
		json_t *q = json_object_get(dv, "queue");
		char backends[32] = "";
		json_t *be;
		size_t k;
		json_array_foreach(json_object_get(dv, "backends"), k, be)
			snprintf(backends + strlen(backends), sizeof(backends) - strlen(backends), "%s%s", k ? "+" : "",
				 json_string_value(be));
		printf("  %-12s %s (%s), low priority %s, busy detection %s; %lld queued, %lld chunks%s\n",
		       json_string_value(json_object_get(dv, "id")), json_string_value(json_object_get(dv, "name")),
		       backends, json_is_true(json_object_get(dv, "low_priority")) ? "yes" : "no",
		       busy && strcmp(busy, "none") ? busy : "none (runs only while the owner is idle)",
		       (long long)geti(q, "queued"), (long long)geti(q, "chunks"),
		       json_is_true(json_object_get(q, "device_busy")) ? "; waiting: another process uses it" : "");
		if (note)
			printf("  %-12s busy detection none: %s\n", "", note);
		if (json_string_value(json_object_get(dv, "fault")))
			printf("  %-12s FAULTED: %s; its tasks wait for a restart of harvesterd\n", "",
			       json_string_value(json_object_get(dv, "fault")));
	}
	if (!n)
		printf("  no device (OpenCL: %s; CUDA: %s)\n",
		       json_string_value(json_object_get(g, "opencl_absent")) ?: "-",
		       json_string_value(json_object_get(g, "cuda_absent")) ?: "-");
	else if (json_string_value(json_object_get(g, "cuda_absent")))
		printf("  CUDA: %s\n", json_string_value(json_object_get(g, "cuda_absent")));
	printf("GPU budget: GPU=%s per device, %s of device time left of %s, %s spent in all%s\n",
	       percent(a, sizeof(a), geti(bu, "gpu_ppm")),
	       span(b, sizeof(b), geti(bu, "tokens_usec") > 0 ? geti(bu, "tokens_usec") : 0),
	       span(c, sizeof(c), geti(bu, "capacity_usec")),
	       span(d, sizeof(d), geti(bu, "spent_total_usec")),
	       json_is_true(json_object_get(bu, "exhausted")) ? " (exhausted)" : "");
}

static int verb_status(int argc, char **argv)
{
	json_t *r;
	char a[64], b[64], c[64], d[64];
	int k = request(json_pack("{s:s}", "verb", "status"), &r);
	if (k < 0)
		return k;
	if (arg_json) {
		print_json(r);
		json_decref(r);
		return 0;
	}
	json_t *ago = json_object_get(r, "last_activity_ago_usec");
	const char *fb = json_string_value(json_object_get(r, "fallback_reason"));

	printf("State:      %s (%s)\n", json_string_value(json_object_get(r, "state")),
	       json_string_value(json_object_get(r, "reason")));
	printf("Since:      %s ago\n", span(a, sizeof(a), geti(r, "state_for_usec")));
	printf("Last input: %s\n", json_is_integer(ago) ? strcat(strcpy(b, span(a, sizeof(a), json_integer_value(ago))), " ago") : "none seen");
	printf("Input:      %s%s%s%s\n", json_string_value(json_object_get(r, "input_source")),
	       fb ? " (fallback: " : "", fb ? fb : "", fb ? ")" : "");
	printf("Time split: %s\n", json_string_value(json_object_get(r, "time_source")));
	printf("Cap:        %s, Burst=%s of all CPUs\n", json_string_value(json_object_get(r, "cap_mechanism")),
	       percent(a, sizeof(a), geti(r, "budget.burst_ppm")));
	printf("Budget:     CPU=%s, %s of CPU left of %s, %s spent in all%s\n",
	       percent(a, sizeof(a), geti(r, "budget.cpu_ppm")),
	       span(b, sizeof(b), geti(r, "budget.tokens_usec") > 0 ? geti(r, "budget.tokens_usec") : 0),
	       span(c, sizeof(c), geti(r, "budget.capacity_usec")),
	       span(d, sizeof(d), geti(r, "budget.spent_total_usec")),
	       json_is_true(json_object_get(json_object_get(r, "budget"), "exhausted")) ? " (exhausted)" : "");
	printf("Jobs:       %lld running (%s), %lld queued, %lld done, %lld failed\n",
	       (long long)geti(r, "jobs.running"),
	       json_is_true(json_object_get(r, "frozen")) ? "frozen" : "thawed",
	       (long long)geti(r, "jobs.queued"), (long long)geti(r, "jobs.done"),
	       (long long)geti(r, "jobs.failed"));
	json_t *in = json_object_get(r, "intrusion");
	if (json_is_object(in))
		printf("Intrusion:  %lld foreground waits behind harvest tasks, %s in all, max %s\n",
		       (long long)geti(in, "count"), span(a, sizeof(a), geti(in, "total_usec")),
		       span(b, sizeof(b), geti(in, "max_usec")));
	else
		printf("Intrusion:  not measured (no BPF probe)\n");
	json_t *rc = json_object_get(r, "reaction");
	if (geti(rc, "count") > 0) {
		json_t *lr = json_object_get(rc, "last_to_last_run_usec");
		printf("Reaction:   input -> last harvest run %s, -> frozen %s (%lld freezes)\n",
		       json_is_integer(lr) ? span(a, sizeof(a), json_integer_value(lr)) : "unknown",
		       span(b, sizeof(b), geti(rc, "last_to_frozen_usec")), (long long)geti(rc, "count"));
	} else
		printf("Reaction:   no input has frozen a running job yet\n");
	json_t *pl = json_object_get(r, "pool");
	if (json_is_object(pl)) {
		const char *err = json_string_value(json_object_get(pl, "last_error"));
		const char *via = json_string_value(json_object_get(pl, "via"));
		printf("Pool:       %s%s%s, %s%s for %s\n", json_string_value(json_object_get(pl, "url")),
		       via ? " via " : "", via ? via : "",
		       json_is_true(json_object_get(pl, "connected")) ? "connected" : "not connected: ",
		       json_is_true(json_object_get(pl, "connected")) ? "" : (err ? err : "unknown"),
		       span(a, sizeof(a), geti(pl, "state_for_usec")));
		printf("Pool work:  %lld held (%lld running), %lld done, %lld failed, %lld refused (bad signature), "
		       "%lld result(s) awaiting acknowledgement, %s CPU contributed\n",
		       (long long)geti(pl, "tasks_held"), (long long)geti(pl, "tasks_running"),
		       (long long)geti(pl, "done"), (long long)geti(pl, "failed"),
		       (long long)geti(pl, "refused") + (long long)geti(pl, "refused_replies"),
		       (long long)geti(pl, "results_pending"), span(b, sizeof(b), geti(pl, "cpu_contributed_usec")));
		/* Counted among the above; their time is the device's, not the CPU's. */
		printf("Pool GPU:   %lld OpenCL/CUDA task(s), %s of device time contributed\n",
		       (long long)geti(pl, "gpu_tasks"), span(c, sizeof(c), geti(pl, "device_contributed_usec")));
	} else
		printf("Pool:       none ([Pool] URL= not set)\n");
	print_gpu_status(json_object_get(r, "gpu"));
	printf("Daemon:     pid %lld, %s CPU, %.1f MiB resident\n", (long long)geti(r, "pid"),
	       span(a, sizeof(a), geti(r, "daemon.cpu_usec")), (double)geti(r, "daemon.rss_bytes") / 1048576.0);
	json_decref(r);
	return 0;
}

static int verb_jobs(int argc, char **argv)
{
	json_t *r, *j;
	size_t i;
	char a[64];
	int k = request(json_pack("{s:s}", "verb", "jobs"), &r);
	if (k < 0)
		return k;
	if (arg_json) {
		print_json(json_object_get(r, "jobs"));
		json_decref(r);
		return 0;
	}
	printf("%-6s %-10s %-10s %-10s %s\n", "ID", "STATE", "CPU/GPU", "EXIT", "COMMAND / REASON");
	json_array_foreach(json_object_get(r, "jobs"), i, j) {
		char cmd[256] = "", exitbuf[32] = "-";
		size_t n;
		json_t *arg;
		json_array_foreach(json_object_get(j, "argv"), n, arg) {
			if (strlen(cmd) + strlen(json_string_value(arg)) + 2 >= sizeof(cmd))
				break;
			if (n)
				strcat(cmd, " ");
			strcat(cmd, json_string_value(arg));
		}
		if (geti(j, "signal"))
			snprintf(exitbuf, sizeof(exitbuf), "sig %lld", (long long)geti(j, "signal"));
		else if (geti(j, "exit_code") >= 0 && geti(j, "finished_usec"))
			snprintf(exitbuf, sizeof(exitbuf), "%lld", (long long)geti(j, "exit_code"));
		const char *reason = json_string_value(json_object_get(j, "reason"));
		const char *kind = json_string_value(json_object_get(j, "kind"));
		json_int_t used = geti(j, "cpu_usec");
		if (kind && strcmp(kind, "opencl") == 0) {
			/* The time column is device time; the command names the kernel and its range. */
			json_t *gs = json_object_get(j, "global"), *gv;
			size_t d;
			snprintf(cmd, sizeof(cmd), "opencl %s [", json_string_value(json_object_get(j, "kernel")));
			json_array_foreach(gs, d, gv)
				snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), "%s%lld", d ? "," : "",
					 (long long)json_integer_value(gv));
			snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), "] on %s",
				 json_string_value(json_object_get(j, "device")));
			used = geti(j, "device_usec");
			strcpy(exitbuf, "-");
		}
		printf("%-6lld %-10s %-10s %-10s %s%s%s\n", (long long)geti(j, "id"),
		       json_string_value(json_object_get(j, "state")), span(a, sizeof(a), used),
		       exitbuf, cmd, reason ? "\n       -> " : "", reason ? reason : "");
	}
	json_decref(r);
	return 0;
}

static int verb_budget(int argc, char **argv)
{
	json_t *r;
	char a[64], b[64], c[64];
	int k = request(json_pack("{s:s}", "verb", "budget"), &r);
	if (k < 0)
		return k;
	json_t *bu = json_object_get(r, "budget");
	if (arg_json)
		print_json(bu);
	else {
		printf("CPU=%s Burst=%s Window=%s\n", percent(a, sizeof(a), geti(bu, "cpu_ppm")),
		       percent(b, sizeof(b), geti(bu, "burst_ppm")), span(c, sizeof(c), geti(bu, "window_usec")));
		printf("Bucket:  %s of CPU of at most %s (fills %s per second)\n",
		       span(a, sizeof(a), geti(bu, "tokens_usec") > 0 ? geti(bu, "tokens_usec") : 0),
		       span(b, sizeof(b), geti(bu, "capacity_usec")), span(c, sizeof(c), geti(bu, "rate_usec_per_sec")));
		printf("Spent:   %s in all\n", span(a, sizeof(a), geti(bu, "spent_total_usec")));
		if (json_is_true(json_object_get(bu, "exhausted")))
			printf("Exhausted: resumes in %s\n", span(a, sizeof(a), geti(bu, "resume_in_usec")));
	}
	json_decref(r);
	return 0;
}

static int simple(json_t *req, const char *done)
{
	json_t *r;
	int k = request(req, &r);
	if (k < 0)
		return k;
	if (arg_json)
		print_json(r);
	else if (done)
		printf("%s\n", done);
	json_decref(r);
	return 0;
}

static int verb_pause(int argc, char **argv)
{
	uint64_t usec = 0;
	static const struct option o[] = { { "for", required_argument, NULL, 'f' }, {} };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:", o, NULL)) >= 0) {
		if (c != 'f')
			return -EINVAL;
		if (parse_timespan_usec(optarg, &usec) < 0 || usec == 0) {
			fprintf(stderr, "harvestctl: --for=%s: expected a time span such as 90s, 30min or 2h\n", optarg);
			return -EINVAL;
		}
	}
	json_t *req = json_pack("{s:s}", "verb", "pause");
	if (usec)
		json_object_set_new(req, "for_usec", json_integer((json_int_t)usec));
	return simple(req, usec ? "Paused for the given time." : "Paused until 'harvestctl resume'.");
}

static int verb_resume(int argc, char **argv)
{
	return simple(json_pack("{s:s}", "verb", "resume"), "Resumed.");
}

static int verb_submit(int argc, char **argv)
{
	int first = 1;
	if (argc > 1 && strcmp(argv[1], "--") == 0)
		first = 2;
	if (first >= argc) {
		fprintf(stderr, "harvestctl: submit needs a command: harvestctl submit -- CMD [ARGS...]\n");
		return -EINVAL;
	}
	json_t *a = json_array();
	for (int i = first; i < argc; i++)
		json_array_append_new(a, json_string(argv[i]));
	json_t *r;
	int k = request(json_pack("{s:s, s:o}", "verb", "submit", "argv", a), &r);
	if (k < 0)
		return k;
	if (arg_json)
		print_json(r);
	else
		printf("%lld\n", (long long)geti(r, "id"));
	json_decref(r);
	return 0;
}

/* "N[,N[,N]]" */
static int parse_sizes(const char *s, json_t **ret)
{
	json_t *a = json_array();
	char *end;

	for (;;) {
		if (*s < '0' || *s > '9')
			break;
		unsigned long long v = strtoull(s, &end, 10);
		json_array_append_new(a, json_integer((json_int_t)v));
		if (*end == 0 && json_array_size(a) <= 3) {
			*ret = a;
			return 0;
		}
		if (*end != ',')
			break;
		s = end + 1;
	}
	json_decref(a);
	return -EINVAL;
}

static int verb_submit_gpu(int argc, char **argv)
{
	static const struct option o[] = {
		{ "source", required_argument, NULL, 's' }, { "kernel", required_argument, NULL, 'k' },
		{ "global", required_argument, NULL, 'g' }, { "local", required_argument, NULL, 'l' },
		{ "out-bytes", required_argument, NULL, 'o' }, { "in", required_argument, NULL, 'i' },
		{ "uint", required_argument, NULL, 'u' }, { "priority", required_argument, NULL, 'p' }, {}
	};
	_cleanup_(json_decrefp) json_t *req = json_pack("{s:s}", "verb", "submit-gpu");
	json_t *scalars = json_array(), *sizes;
	const char *source = NULL;
	char *end;
	_cleanup_close_ int in_fd = -1;
	int c;

	json_object_set_new(req, "scalars", scalars);
	optind = 1;
	while ((c = getopt_long(argc, argv, "s:k:g:l:o:i:u:p:", o, NULL)) >= 0) {
		unsigned long long v;
		switch (c) {
		case 's': source = optarg; break;
		case 'k': json_object_set_new(req, "kernel", json_string(optarg)); break;
		case 'g':
		case 'l':
			if (parse_sizes(optarg, &sizes) < 0) {
				fprintf(stderr, "harvestctl: --%s=%s: expected N[,N[,N]]\n", c == 'g' ? "global" : "local", optarg);
				return -EINVAL;
			}
			json_object_set_new(req, c == 'g' ? "global" : "local", sizes);
			break;
		case 'o':
		case 'u':
		case 'p':
			v = strtoull(optarg, &end, 0);
			if (!*optarg || *end || (c == 'u' && v > UINT32_MAX) || (c == 'p' && v > INT32_MAX)) {
				fprintf(stderr, "harvestctl: '%s' is not a valid number here\n", optarg);
				return -EINVAL;
			}
			if (c == 'u')
				json_array_append_new(scalars, json_integer((json_int_t)v));
			else
				json_object_set_new(req, c == 'o' ? "out_bytes" : "priority", json_integer((json_int_t)v));
			break;
		case 'i':
			/* Opened here and sent with the request: the daemon's /tmp
			 * and home are private to it (PrivateTmp=, ProtectHome=). */
			if (in_fd >= 0)
				close(in_fd);
			in_fd = open_regular(optarg, 0, NULL);
			if (in_fd < 0) {
				fprintf(stderr, "harvestctl: --in=%s: %s\n", optarg,
					in_fd == -EINVAL ? "not a regular file" : strerror(-in_fd));
				return in_fd;
			}
			json_object_set_new(req, "input_fd", json_true());
			break;
		default:
			return -EINVAL;
		}
	}
	if (!source || !json_object_get(req, "kernel") || !json_object_get(req, "global") ||
	    !json_object_get(req, "out_bytes") || optind != argc) {
		fprintf(stderr, "harvestctl: submit-gpu --source FILE.cl --kernel NAME --global N[,N[,N]] "
			"[--local N[,N[,N]]] --out-bytes N [--in FILE] [--uint V]... [--priority P]\n");
		return -EINVAL;
	}
	FILE *f = fopen(source, "re");
	if (!f) {
		fprintf(stderr, "harvestctl: --source=%s: %s\n", source, strerror(errno));
		return -errno;
	}
	/* The request must fit the control socket's limit, with room for the rest. */
	static char text[CONTROL_MAX_REQUEST - 4096];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	bool more = fgetc(f) != EOF;
	fclose(f);
	if (more) {
		fprintf(stderr, "harvestctl: --source=%s is larger than %zu bytes\n", source, sizeof(text) - 1);
		return -EFBIG;
	}
	text[n] = 0;
	json_object_set_new(req, "source", json_string(text));
	if (!json_object_get(req, "source")) {
		fprintf(stderr, "harvestctl: --source=%s is not UTF-8 text\n", source);
		return -EINVAL;
	}
	json_t *r;
	int k = request_fd(json_incref(req), in_fd, &r);
	if (k < 0)
		return k;
	if (arg_json)
		print_json(r);
	else
		printf("%lld\n", (long long)geti(r, "id"));
	json_decref(r);
	return 0;
}

static int verb_cancel(int argc, char **argv)
{
	char *end;
	if (argc != 2) {
		fprintf(stderr, "harvestctl: cancel needs one job id\n");
		return -EINVAL;
	}
	long long id = strtoll(argv[1], &end, 10);
	if (*end || id <= 0) {
		fprintf(stderr, "harvestctl: '%s' is not a job id\n", argv[1]);
		return -EINVAL;
	}
	return simple(json_pack("{s:s, s:I}", "verb", "cancel", "id", (json_int_t)id), "Cancelled.");
}

static const struct verb {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} verbs[] = {
	{ "status", verb_status, "what the daemon is doing, and why" },
	{ "jobs", verb_jobs, "every job with its state and, if it failed, why" },
	{ "budget", verb_budget, "the CPU budget: bucket, rate, spent" },
	{ "pause", verb_pause, "[--for DURATION]  stop harvesting (root)" },
	{ "resume", verb_resume, "end a pause (root)" },
	{ "submit", verb_submit, "-- CMD [ARGS...]  queue a local job, print its id (root)" },
	{ "submit-gpu", verb_submit_gpu, "--source F.cl --kernel K --global N[,N,N] --out-bytes N [--in F]\n"
	  "             [--local N[,N,N]] [--uint V]... [--priority P]  queue an OpenCL job (root);\n"
	  "             kernel arguments: the input buffer (with --in), the output buffer, the --uint values" },
	{ "cancel", verb_cancel, "ID  cancel a queued or running job (root)" },
};

static void help(void)
{
	printf("Usage: harvestctl [--socket PATH] [--json] VERB [ARGS]\n\n");
	for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
		printf("  %-10s %s\n", verbs[i].name, verbs[i].help);
	printf("\n  -s, --socket PATH  control socket (default /run/harvester/control.sock)\n"
	       "  -j, --json         machine-readable output\n"
	       "  -h, --help         this help\n      --version      the version\n\n"
	       "See harvestctl(1).\n");
}

int main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{}
	};
	int c;

	/* Options stop at the verb, so the verb's own arguments pass through. */
	while ((c = getopt_long(argc, argv, "+s:jh", opts, NULL)) >= 0) {
		switch (c) {
		case 's': socket_path = optarg; break;
		case 'j': arg_json = true; break;
		case 'h': help(); return 0;
		case 'V': printf("harvestctl %s\n", HARVESTER_VERSION); return 0;
		default: fprintf(stderr, "Try 'harvestctl --help'.\n"); return 2;
		}
	}
	const char *verb = optind < argc ? argv[optind] : "status";
	int vargc = optind < argc ? argc - optind : 1;
	char **vargv = optind < argc ? argv + optind : (char *[]){ "status", NULL };

	/* --json may also follow the verb: "harvestctl status --json". */
	for (int i = 1; i < vargc; i++)
		if (strcmp(vargv[i], "--json") == 0 || strcmp(vargv[i], "-j") == 0) {
			if (strcmp(verb, "submit") == 0 && i > 1 && strcmp(vargv[1], "--") == 0)
				break;
			arg_json = true;
			memmove(&vargv[i], &vargv[i + 1], (size_t)(vargc - i) * sizeof(char *));
			vargc--;
			i--;
		}

	for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
		if (strcmp(verbs[i].name, verb) == 0)
			return verbs[i].fn(vargc, vargv) < 0 ? 1 : 0;
	fprintf(stderr, "harvestctl: unknown verb '%s'; try 'harvestctl --help'\n", verb);
	return 2;
}
