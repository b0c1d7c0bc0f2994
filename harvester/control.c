/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The daemon's side of the control socket; the contract is in control.h. */
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "harvester/control.h"
#include "harvester/gpu-jobs.h"
#include "harvester/log.h"
#include "harvester/macro.h"
#include "harvester/manager.h"

struct conn {
	struct manager *m;
	int fd;
	uid_t uid;
	int in_fd;                  /* a descriptor sent with the request (SCM_RIGHTS), or -1 */
	sd_event_source *source, *timeout;
	size_t len;
	char buf[CONTROL_MAX_REQUEST + 1];
};

static void conn_free(struct conn *c)
{
	sd_event_source_disable_unref(c->source);
	sd_event_source_disable_unref(c->timeout);
	if (c->fd >= 0)
		close(c->fd);
	if (c->in_fd >= 0)
		close(c->in_fd);
	free(c);
}

static json_t *error_reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *error_reply(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

static json_t *ok_with(const char *key, json_t *v)
{
	json_t *o = json_pack("{s:b}", "ok", 1);
	if (key)
		json_object_set_new(o, key, v);
	return o;
}

static json_t *handle(struct manager *m, uid_t uid, json_t *req, int in_fd)
{
	const char *verb = json_string_value(json_object_get(req, "verb"));
	bool privileged = uid == 0;

	if (!verb)
		return error_reply("the request has no \"verb\"");
	if (strcmp(verb, "status") == 0) {
		json_t *o = manager_status_json(m);
		json_object_set_new(o, "ok", json_true());
		return o;
	}
	if (strcmp(verb, "jobs") == 0)
		return ok_with("jobs", gpu_jobs_merge_json(m->gpu, jobs_to_json(m->jobs)));
	if (strcmp(verb, "budget") == 0)
		return ok_with("budget", manager_budget_json(m));

	if (strcmp(verb, "pause") != 0 && strcmp(verb, "resume") != 0 && strcmp(verb, "submit") != 0 &&
	    strcmp(verb, "cancel") != 0 && strcmp(verb, "submit-gpu") != 0)
		return error_reply("unknown verb \"%s\"", verb);
	if (!privileged)
		return error_reply("\"%s\" changes the daemon and needs root (you are uid %u)", verb, (unsigned)uid);

	if (strcmp(verb, "pause") == 0) {
		json_t *f = json_object_get(req, "for_usec");
		if (f && (!json_is_integer(f) || json_integer_value(f) < 0))
			return error_reply("\"for_usec\" must be a non-negative integer");
		manager_pause(m, f ? (uint64_t)json_integer_value(f) : 0);
		log_info("Paused by uid %u", (unsigned)uid);
		return ok_with(NULL, NULL);
	}
	if (strcmp(verb, "resume") == 0) {
		manager_resume(m);
		log_info("Resumed by uid %u", (unsigned)uid);
		return ok_with(NULL, NULL);
	}
	if (strcmp(verb, "cancel") == 0) {
		json_t *id = json_object_get(req, "id");
		if (!json_is_integer(id))
			return error_reply("\"id\" must be a job id");
		int r = jobs_cancel(m->jobs, (uint64_t)json_integer_value(id));
		if (r == -ENOENT)
			r = gpu_jobs_cancel(m->gpu, (uint64_t)json_integer_value(id));
		if (r == -ENOENT)
			return error_reply("no job %lld", (long long)json_integer_value(id));
		if (r == -EALREADY)
			return error_reply("job %lld has already ended", (long long)json_integer_value(id));
		if (r < 0)
			return error_reply("cannot cancel: %s", strerror(-r));
		manager_evaluate(m, "cancel");
		return ok_with(NULL, NULL);
	}

	if (strcmp(verb, "submit-gpu") == 0)
		return gpu_jobs_control_submit(m->gpu, uid, req, in_fd);

	/* submit */
	json_t *argv = json_object_get(req, "argv");
	size_t n = json_array_size(argv);
	if (!json_is_array(argv) || n == 0)
		return error_reply("\"argv\" must be a non-empty array of strings");
	if (n > 4096)
		return error_reply("\"argv\" has %zu arguments, at most 4096 are allowed", n);
	char **v = calloc(n + 1, sizeof(char *));
	if (!v)
		return error_reply("out of memory");
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(argv, i));
		if (!s) {
			free(v);
			return error_reply("argv[%zu] is not a string", i);
		}
		v[i] = (char *)s;
	}
	struct job *j;
	int r = jobs_submit(m->jobs, v, &j);
	free(v);
	if (r < 0)
		return error_reply("cannot queue the job: %s", strerror(-r));
	log_info("Job %llu queued by uid %u: %s", (unsigned long long)j->id, (unsigned)uid, j->argv[0]);
	manager_evaluate(m, "submit");
	return ok_with("id", json_integer((json_int_t)j->id));
}

static void conn_answer(struct conn *c)
{
	json_error_t err;
	json_t *reply;

	c->buf[c->len] = 0;
	json_t *req = json_loadb(c->buf, c->len, 0, &err);
	if (!req || !json_is_object(req))
		reply = error_reply("bad request at byte %d: %s", err.position, req ? "not an object" : err.text);
	else
		reply = handle(c->m, c->uid, req, c->in_fd);
	json_decref(req);

	char *s = json_dumps(reply, JSON_COMPACT);
	json_decref(reply);
	if (s) {
		/* Replies are small; a client that does not read gets cut off. */
		size_t len = strlen(s), off = 0;
		while (off < len) {
			ssize_t w = send(c->fd, s + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w <= 0)
				break;
			off += (size_t)w;
		}
		free(s);
	}
	conn_free(c);
}

static int on_conn(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct conn *c = userdata;

	for (;;) {
		if (c->len >= CONTROL_MAX_REQUEST) {
			json_t *reply = error_reply("request larger than %d bytes", CONTROL_MAX_REQUEST);
			char *t = json_dumps(reply, JSON_COMPACT);
			json_decref(reply);
			if (t) {
				send(c->fd, t, strlen(t), MSG_NOSIGNAL | MSG_DONTWAIT);
				free(t);
			}
			conn_free(c);
			return 0;
		}
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int) * 4)];
		} control;
		struct iovec iov = { c->buf + c->len, CONTROL_MAX_REQUEST - c->len };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
				      .msg_controllen = sizeof(control) };
		ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		/* Keep the first descriptor a client sends; close the rest. */
		for (struct cmsghdr *h = n >= 0 ? CMSG_FIRSTHDR(&msg) : NULL; h; h = CMSG_NXTHDR(&msg, h)) {
			if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int got;
				memcpy(&got, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
				if (c->in_fd < 0)
					c->in_fd = got;
				else
					close(got);
			}
		}
		if (n > 0) {
			c->len += (size_t)n;
			continue;
		}
		if (n == 0) {
			conn_answer(c);
			return 0;
		}
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		conn_free(c);
		return 0;
	}
}

static int on_conn_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
	conn_free(userdata);
	return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct manager *m = userdata;
	int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (cfd < 0)
		return 0;

	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		close(cfd);
		return 0;
	}
	struct conn *c = malloc(sizeof(*c));
	if (!c) {
		close(cfd);
		return 0;
	}
	c->m = m;
	c->fd = cfd;
	c->uid = cred.uid;
	c->in_fd = -1;
	c->len = 0;
	c->source = c->timeout = NULL;
	if (sd_event_add_io(m->event, &c->source, cfd, EPOLLIN, on_conn, c) < 0 ||
	    sd_event_add_time_relative(m->event, &c->timeout, CLOCK_MONOTONIC, 5 * USEC_PER_SEC, 0,
				       on_conn_timeout, c) < 0) {
		conn_free(c);
		return 0;
	}
	sd_event_source_set_description(c->source, "control-conn");
	return 0;
}

int control_listen(struct manager *m)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int r;

	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/control.sock", m->runtime_dir) >=
	    (int)sizeof(sa.sun_path))
		return log_error_errno(-ENAMETOOLONG, "Control socket path under %s is too long", m->runtime_dir);
	m->control_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (m->control_fd < 0)
		return log_error_errno(negative_errno(), "Cannot create the control socket");
	unlink(sa.sun_path);
	if (bind(m->control_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return log_error_errno(negative_errno(), "Cannot bind %s", sa.sun_path);
	/* Everyone may ask; changing verbs check SO_PEERCRED. */
	chmod(sa.sun_path, 0666);
	if (listen(m->control_fd, 16) < 0)
		return log_error_errno(negative_errno(), "Cannot listen on %s", sa.sun_path);
	r = sd_event_add_io(m->event, &m->control_source, m->control_fd, EPOLLIN, on_accept, m);
	if (r < 0)
		return log_error_errno(r, "Cannot watch the control socket");
	sd_event_source_set_description(m->control_source, "control-socket");
	return 0;
}
