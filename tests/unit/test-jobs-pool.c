/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The job spool's side of pool tasks: inputs written before the job exists,
 * pool_task kept across a reopen (a restart), finished jobs (reason null)
 * reloaded instead of being set aside as corrupt. No cgroup is touched:
 * nothing here starts a job. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "harvester/jobs.h"
#include "harvester/macro.h"

struct t {
	char dir[64];
	sd_event *e;
};

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof(*t));
	strcpy(t->dir, "/tmp/test-jobs-pool.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	assert_true(sd_event_new(&t->e) >= 0);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
	assert_int_equal(system(cmd), 0);
	sd_event_unref(t->e);
	free(t);
	return 0;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return NULL;
	char *buf = calloc(1, 4096);
	size_t n = fread(buf, 1, 4095, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

static void test_submit_pool_and_reopen(void **state)
{
	struct t *t = *state;
	struct jobs *js = NULL;
	struct job *j = NULL;
	char path[256];
	char *argv[] = { "sh", "-c", "cat in", NULL };
	struct job_file files[] = { { "in", "payload\n", 8 }, { "empty", "", 0 } };

	assert_int_equal(jobs_open(t->e, t->dir, "/nonexistent/jobs", NULL, NULL, &js), 0);
	json_t *pt = json_pack("{s:s, s:s}", "task", "t-1", "state", "held");
	assert_int_equal(jobs_submit_pool(js, argv, files, 2, pt, &j), 0);
	json_decref(pt);
	assert_int_equal(j->state, JOB_QUEUED);

	/* The inputs are in the scratch folder the job will run in. */
	snprintf(path, sizeof(path), "%s/jobs/%" PRIu64 "/scratch/in", t->dir, j->id);
	_cleanup_free_ char *in = slurp(path);
	assert_non_null(in);
	assert_string_equal(in, "payload\n");
	snprintf(path, sizeof(path), "%s/jobs/%" PRIu64 "/scratch/empty", t->dir, j->id);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 0);

	/* A finished job, as job_finish leaves it: reason null. */
	j->state = JOB_DONE;
	j->exit_code = 0;
	json_object_set_new(j->pool_task, "state", json_string("result"));
	assert_int_equal(jobs_save(js, j), 0);
	/* And a local job beside it, without pool_task. */
	char *local[] = { "true", NULL };
	struct job *l = NULL;
	assert_int_equal(jobs_submit(js, local, &l), 0);
	assert_null(l->pool_task);
	uint64_t pid = j->id, lid = l->id;
	jobs_free(js);

	/* A restart: both come back, the pool task with its origin. */
	assert_int_equal(jobs_open(t->e, t->dir, "/nonexistent/jobs", NULL, NULL, &js), 0);
	unsigned n = 0;
	for (struct job *k = jobs_first(js); k; k = k->next, n++) {
		if (k->id == pid) {
			assert_int_equal(k->state, JOB_DONE);
			assert_null(k->reason);
			assert_non_null(k->pool_task);
			assert_string_equal(json_string_value(json_object_get(k->pool_task, "task")), "t-1");
			assert_string_equal(json_string_value(json_object_get(k->pool_task, "state")), "result");
			assert_int_equal(jobs_output_path(js, k, "stdout", path, sizeof(path)), 0);
		} else {
			assert_true(k->id == lid);
			assert_null(k->pool_task);
		}
	}
	assert_int_equal(n, 2);
	snprintf(path, sizeof(path), "%s/spool/%" PRIu64 ".json.corrupt", t->dir, pid);
	assert_int_not_equal(access(path, F_OK), 0);

	/* jobs answer carries pool_task for the pool job only. */
	json_t *a = jobs_to_json(js);
	assert_int_equal(json_array_size(a), 2);
	size_t i;
	json_t *v;
	unsigned with = 0;
	json_array_foreach(a, i, v)
		with += json_object_get(v, "pool_task") != NULL;
	assert_int_equal(with, 1);
	json_decref(a);
	jobs_free(js);
}

static void test_submit_pool_refuses_bad_names(void **state)
{
	struct t *t = *state;
	struct jobs *js = NULL;
	char *argv[] = { "true", NULL };
	json_t *pt = json_pack("{s:s}", "task", "t-2");
	static const char *const bad[] = { "../escape", ".", "..", "a/b", "" };

	assert_int_equal(jobs_open(t->e, t->dir, "/nonexistent/jobs", NULL, NULL, &js), 0);
	for (size_t k = 0; k < ELEMENTSOF(bad); k++) {
		struct job_file f = { bad[k], "x", 1 };
		assert_int_equal(jobs_submit_pool(js, argv, &f, 1, pt, NULL), -EINVAL);
	}
	/* Nothing queued by the refusals. */
	assert_null(jobs_first(js));
	assert_int_equal(jobs_submit_pool(js, argv, NULL, 0, NULL, NULL), -EINVAL);
	json_decref(pt);
	jobs_free(js);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_submit_pool_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_submit_pool_refuses_bad_names, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
