/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The budget ledger: one small JSON object, replaced atomically. */
#include "harvester/ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harvester/fileio.h"
#include "harvester/macro.h"

#define LEDGER_VERSION 1
#define LEDGER_MAX_BYTES 4096 /* a real ledger is ~250 bytes; more is not ours */

static int get_i64(json_t *o, const char *key, int64_t *ret)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v))
		return -EBADMSG;
	*ret = (int64_t)json_integer_value(v);
	return 0;
}

static int get_u64(json_t *o, const char *key, uint64_t *ret)
{
	int64_t v;

	if (get_i64(o, key, &v) < 0 || v < 0)
		return -EBADMSG;
	*ret = (uint64_t)v;
	return 0;
}

int ledger_load(const char *path, struct ledger *ret)
{
	json_auto_t *root = NULL;
	_cleanup_free_ void *buf = NULL;
	struct ledger l = {};
	json_error_t err;
	const char *boot;
	int64_t version;
	size_t len;
	int r;

	r = read_file(path, LEDGER_MAX_BYTES - 1, 0, &buf, &len, NULL);
	if (r == -EFBIG)
		return -EBADMSG; /* too big to be a ledger */
	if (r < 0)
		return r;
	/* A truncated file is invalid JSON, so a torn write cannot pass. */
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
	if (!json_is_object(root))
		return -EBADMSG;
	if (get_i64(root, "version", &version) < 0 || version != LEDGER_VERSION)
		return -EBADMSG;
	if (get_i64(root, "tokens_usec", &l.tokens_usec) < 0 ||
	    get_u64(root, "spent_total_usec", &l.spent_total_usec) < 0 ||
	    get_u64(root, "saved_realtime_usec", &l.saved_realtime_usec) < 0 ||
	    get_u64(root, "jobs_cgroup_id", &l.jobs_cgroup_id) < 0 ||
	    get_u64(root, "jobs_usage_usec", &l.jobs_usage_usec) < 0)
		return -EBADMSG;
	/* Optional as a group: older ledgers have none of them; half of them is not ours. */
	json_t *gt = json_object_get(root, "gpu_tokens_usec"), *gs = json_object_get(root, "gpu_spent_total_usec"),
	       *gb = json_object_get(root, "gpu_busy");
	if (gt || gs || gb) {
		if (!json_is_boolean(gb) || get_i64(root, "gpu_tokens_usec", &l.gpu_tokens_usec) < 0 ||
		    get_u64(root, "gpu_spent_total_usec", &l.gpu_spent_total_usec) < 0)
			return -EBADMSG;
		l.gpu_busy = json_is_true(gb);
		l.has_gpu = true;
	}
	boot = json_string_value(json_object_get(root, "boot_id"));
	if (!boot || strlen(boot) >= sizeof(l.boot_id))
		return -EBADMSG;
	strcpy(l.boot_id, boot);
	*ret = l;
	return 0;
}

int ledger_save(const char *path, const struct ledger *l)
{
	json_auto_t *root = NULL;
	_cleanup_free_ char *text = NULL;
	size_t boot_len = strnlen(l->boot_id, sizeof(l->boot_id));

	if (l->spent_total_usec > INT64_MAX || l->saved_realtime_usec > INT64_MAX ||
	    l->jobs_cgroup_id > INT64_MAX || l->jobs_usage_usec > INT64_MAX ||
	    l->gpu_spent_total_usec > INT64_MAX)
		return -ERANGE; /* JSON integers here are int64 */
	if (boot_len == sizeof(l->boot_id))
		return -EINVAL;

	root = json_pack("{s:i, s:I, s:I, s:I, s:s%, s:I, s:I, s:I, s:I, s:b}",
			 "version", LEDGER_VERSION,
			 "tokens_usec", (json_int_t)l->tokens_usec,
			 "spent_total_usec", (json_int_t)l->spent_total_usec,
			 "saved_realtime_usec", (json_int_t)l->saved_realtime_usec,
			 "boot_id", l->boot_id, boot_len,
			 "jobs_cgroup_id", (json_int_t)l->jobs_cgroup_id,
			 "jobs_usage_usec", (json_int_t)l->jobs_usage_usec,
			 "gpu_tokens_usec", (json_int_t)l->gpu_tokens_usec,
			 "gpu_spent_total_usec", (json_int_t)l->gpu_spent_total_usec,
			 "gpu_busy", (int)l->gpu_busy);
	if (!root)
		return -ENOMEM; /* or a boot_id that is not UTF-8 */
	text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text)
		return -ENOMEM;

	struct iovec iov[] = {
		{ .iov_base = text, .iov_len = strlen(text) },
		{ .iov_base = (char *)"\n", .iov_len = 1 },
	};
	/* Atomic: a crash leaves the old ledger or the new one, never an empty
	 * file under the real name. */
	return write_file_atomic(path, iov, ELEMENTSOF(iov), 0600);
}

int64_t ledger_unrecorded_usec(const struct ledger *l, const char *boot_id_now, uint64_t jobs_cgroup_id_now,
			       uint64_t jobs_usage_now, uint64_t realtime_now_usec,
			       uint64_t burst_cpu_usec_per_sec)
{
	uint64_t elapsed, worst;

	if (l->boot_id[0] != '\0' && boot_id_now && strcmp(l->boot_id, boot_id_now) == 0 &&
	    l->jobs_cgroup_id != 0 && l->jobs_cgroup_id == jobs_cgroup_id_now &&
	    jobs_usage_now >= l->jobs_usage_usec) {
		/* The kernel still counts for the same cgroup: exact. */
		uint64_t d = jobs_usage_now - l->jobs_usage_usec;
		return d > INT64_MAX ? INT64_MAX : (int64_t)d;
	}

	/* The counter is gone (reboot, cgroup recreated): the jobs may have run
	 * at Burst from the save until the crash, at most one save interval. */
	if (realtime_now_usec < l->saved_realtime_usec)
		elapsed = LEDGER_SAVE_USEC; /* the clock was set back: assume the worst */
	else
		elapsed = realtime_now_usec - l->saved_realtime_usec;
	if (elapsed > LEDGER_SAVE_USEC)
		elapsed = LEDGER_SAVE_USEC;
	if (burst_cpu_usec_per_sec != 0 && elapsed > UINT64_MAX / burst_cpu_usec_per_sec)
		return INT64_MAX;
	worst = elapsed * burst_cpu_usec_per_sec / USEC_PER_SEC;
	return worst > INT64_MAX ? INT64_MAX : (int64_t)worst;
}

int64_t ledger_gpu_unrecorded_usec(const struct ledger *l, uint64_t realtime_now_usec, unsigned n_devices)
{
	uint64_t elapsed;

	if (!l->gpu_busy || n_devices == 0)
		return 0;
	if (realtime_now_usec < l->saved_realtime_usec)
		elapsed = LEDGER_SAVE_USEC; /* the clock was set back: assume the worst */
	else
		elapsed = realtime_now_usec - l->saved_realtime_usec;
	if (elapsed > LEDGER_SAVE_USEC)
		elapsed = LEDGER_SAVE_USEC;
	/* LEDGER_SAVE_USEC x UINT_MAX fits easily in 63 bits. */
	return (int64_t)(elapsed * n_devices);
}
