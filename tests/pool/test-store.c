/* SPDX-License-Identifier: GPL-2.0-or-later */
/* pool/store-sqlite.c driven with a fake clock: leases and their lapse,
 * renewals, matching, quorum, replays, durability across reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "pool/store.h"

#define SEC 1000000ULL
#define LEASE (10 * SEC)
#define T0 (1700000000ULL * SEC)

static char dir[PATH_MAX], db[PATH_MAX + 16];
static PoolStore *s;
static uint8_t wa[32], wb[32], wc[32], wd[32];
static uint64_t seq = 1;

static void add(const char *id, unsigned replicas, unsigned quorum, const char *arch, unsigned cores, int gpu)
{
        uint8_t sig[64] = { 1 };
        PoolTaskNew t = {
                .id = id, .kind = HLINK__KIND__KIND_EXEC, .spec = "spec", .spec_len = 4, .signature = sig,
                .replicas = replicas, .quorum = quorum, .need_arch = arch, .need_cores = cores, .need_gpu = gpu,
        };
        assert_int_equal(pool_store_add_task(s, &t, T0), 0);
}

static void hello(const uint8_t *key, const char *arch, unsigned cores, bool opencl)
{
        Hlink__Hello h = HLINK__HELLO__INIT;
        Hlink__Capabilities c = HLINK__CAPABILITIES__INIT;
        Hlink__Device d = HLINK__DEVICE__INIT, *ds[] = { &d };
        c.arch = (char *) arch;
        c.cores = cores;
        c.memory_bytes = 1ULL << 30;
        if (opencl) {
                d.api = HLINK__DEVICE_API__API_OPENCL;
                d.name = "pocl";
                c.devices = ds;
                c.n_devices = 1;
        }
        h.caps = &c;
        h.agent = "test";
        assert_int_equal(pool_store_hello(s, key, &h, seq++, T0), 0);
}

/* Lease up to MAX; returns how many and the first id in FIRST. */
static int lease(const uint8_t *key, unsigned max, uint64_t now, char *first)
{
        PoolLease *l = NULL;
        int n = pool_store_lease(s, key, max, 1 << 20, now, LEASE, &l);
        assert_true(n >= 0);
        if (first)
                snprintf(first, LINK_ID_MAX + 1, "%s", n > 0 ? l[0].id : "");
        if (n > 0) {
                assert_int_equal(l[0].spec_len, 4);
                assert_memory_equal(l[0].spec, "spec", 4);
                assert_int_equal(l[0].expires_usec, now + LEASE);
        }
        pool_leases_free(l, (size_t) n);
        return n;
}

static int result(const uint8_t *key, const char *task, uint8_t hash_byte, uint64_t now, bool *accepted)
{
        Hlink__ResultBody b = HLINK__RESULT_BODY__INIT;
        uint8_t hash[32], sig[64] = { 0 };
        memset(hash, hash_byte, sizeof(hash));
        b.task_id = (char *) task;
        b.status = HLINK__STATUS__STATUS_OK;
        b.cpu_usec = 100;
        return pool_store_add_result(s, key, &b, hash, "body", 4, sig, LINK_SIG_BYTES, now, accepted, NULL);
}

static json_t *task_json(const char *id)
{
        static json_t *all;
        json_t *v;
        size_t i;
        if (all)
                json_decref(all);
        assert_int_equal(pool_store_tasks_json(s, T0, &all), 0);
        json_array_foreach(all, i, v)
                if (!strcmp(json_string_value(json_object_get(v, "id")), id))
                        return v;
        fail_msg("no task %s", id);
        return NULL;
}

/* FIELD of KEY's entry in the workers listing. */
static json_int_t worker_field(const uint8_t *key, const char *field, uint64_t now)
{
        json_t *w, *v;
        json_int_t x = -1;
        size_t i;
        char b64[64];
        link_key_to_base64(key, b64, sizeof(b64));
        assert_int_equal(pool_store_workers_json(s, now, &w), 0);
        json_array_foreach(w, i, v)
                if (!strcmp(json_string_value(json_object_get(v, "key")), b64))
                        x = json_integer_value(json_object_get(v, field));
        json_decref(w);
        return x;
}

static const char *task_state(const char *id)
{
        return json_string_value(json_object_get(task_json(id), "state"));
}

static int setup(void **state)
{
        snprintf(dir, sizeof(dir), "/tmp/test-store.XXXXXX");
        assert_non_null(mkdtemp(dir));
        snprintf(db, sizeof(db), "%s/pool.db", dir);
        assert_int_equal(pool_store_open(db, true, &s), 0);
        randombytes_buf(wa, 32);
        randombytes_buf(wb, 32);
        randombytes_buf(wc, 32);
        randombytes_buf(wd, 32);
        return 0;
}

static int teardown(void **state)
{
        char cmd[PATH_MAX + 16];
        pool_store_close(s);
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        return system(cmd) == 0 ? 0 : -1;
}

static void test_seq(void **state)
{
        assert_int_equal(pool_store_check_seq(s, wa, 1000, T0), -ENOENT);
        seq = 1000;
        hello(wa, "x86_64", 4, false);                  /* seq 1000 */
        assert_int_equal(pool_store_check_seq(s, wa, 1000, T0), -ESTALE);
        assert_int_equal(pool_store_check_seq(s, wa, 999, T0), -ESTALE);
        assert_int_equal(pool_store_check_seq(s, wa, 1001, T0), 0);
        /* Durable: a reopened store (a restarted pool) still refuses it. */
        pool_store_close(s);
        assert_int_equal(pool_store_open(db, false, &s), 0);
        assert_int_equal(pool_store_check_seq(s, wa, 1001, T0), -ESTALE);
        seq = 2000;
        hello(wb, "x86_64", 2, false);
        hello(wc, "x86_64", 2, true);
        hello(wd, "aarch64", 64, false);
}

static void test_lease_lapse(void **state)
{
        char id[LINK_ID_MAX + 1];
        uint64_t exp;

        add("one", 1, 1, "", 0, 0);
        assert_int_equal(pool_store_add_task(s, &(PoolTaskNew) { .id = "one", .spec = "x", .spec_len = 1,
                                                                  .signature = (uint8_t[64]) {}, .replicas = 1, .quorum = 1 },
                                             T0), -EEXIST);
        assert_int_equal(lease(wa, 4, T0, id), 1);
        assert_string_equal(id, "one");
        assert_int_equal(lease(wa, 4, T0 + SEC, NULL), 0);     /* held already */
        assert_int_equal(lease(wb, 4, T0 + SEC, NULL), 0);     /* one replica, leased */
        /* Renewed before it lapses: still A's at T0 + 15 s. */
        assert_int_equal(pool_store_renew(s, wa, "one", T0 + 5 * SEC, LEASE, &exp), 0);
        assert_int_equal(exp, T0 + 15 * SEC);
        assert_int_equal(lease(wb, 4, T0 + 14 * SEC, NULL), 0);
        /* Lapsed: B gets it, and A can no longer renew or answer it. */
        assert_int_equal(lease(wb, 4, T0 + 16 * SEC, id), 1);
        assert_string_equal(id, "one");
        assert_int_equal(pool_store_renew(s, wa, "one", T0 + 17 * SEC, LEASE, &exp), -ETIMEDOUT);
        assert_int_equal(pool_store_renew(s, wc, "one", T0 + 17 * SEC, LEASE, &exp), -ENOENT);
        bool acc;
        assert_int_equal(result(wc, "one", 7, T0 + 18 * SEC, &acc), -ENOENT);   /* never leased to C */
        assert_int_equal(result(wb, "one", 7, T0 + 18 * SEC, &acc), 0);
        assert_true(acc);
        assert_string_equal(task_state("one"), "done");
        /* A resend after a lost ack is accepted again, stored once. */
        assert_int_equal(result(wb, "one", 7, T0 + 19 * SEC, &acc), 0);
        assert_true(acc);
        assert_int_equal(json_integer_value(json_object_get(task_json("one"), "results")), 1);
        assert_int_equal(pool_store_renew(s, wb, "one", T0 + 20 * SEC, LEASE, &exp), -EALREADY);
        /* Goodbye releases live leases at once. */
        add("two", 1, 1, "", 0, 0);
        assert_int_equal(lease(wa, 4, T0 + 21 * SEC, id), 1);
        assert_int_equal(pool_store_release(s, wa, T0 + 21 * SEC), 1);
        assert_int_equal(lease(wb, 4, T0 + 21 * SEC, id), 1);
        assert_string_equal(id, "two");
        assert_int_equal(result(wb, "two", 1, T0 + 22 * SEC, &acc), 0);
}

static void test_matching(void **state)
{
        char id[LINK_ID_MAX + 1];
        add("arm", 1, 1, "aarch64", 0, 0);
        add("wide", 1, 1, "", 8, 0);
        add("gpu", 1, 1, "", 0, HLINK__DEVICE_API__API_OPENCL);
        add("cuda", 1, 1, "", 0, HLINK__DEVICE_API__API_CUDA);
        assert_int_equal(lease(wb, 16, T0 + 30 * SEC, NULL), 0);       /* x86_64, 2 cores, no GPU */
        assert_int_equal(lease(wc, 16, T0 + 30 * SEC, id), 1);         /* + OpenCL */
        assert_string_equal(id, "gpu");
        assert_int_equal(lease(wd, 16, T0 + 30 * SEC, NULL), 2);       /* aarch64, 64 cores */
        /* Nobody has CUDA: it waits. */
        assert_string_equal(task_state("cuda"), "pending");
        assert_int_equal(json_integer_value(json_object_get(task_json("cuda"), "leased")), 0);
        assert_int_equal(pool_store_cancel(s, "cuda", T0), 0);
        assert_int_equal(pool_store_cancel(s, "cuda", T0), -EALREADY);
        assert_int_equal(pool_store_cancel(s, "nope", T0), -ENOENT);
        /* Out of the way of the next cases: their leases would lapse. */
        assert_int_equal(pool_store_cancel(s, "arm", T0), 0);
        assert_int_equal(pool_store_cancel(s, "wide", T0), 0);
        assert_int_equal(pool_store_cancel(s, "gpu", T0), 0);
        assert_int_equal(lease(wd, 16, T0 + 60 * SEC, NULL), 0);
}

static void test_quorum(void **state)
{
        bool acc;
        uint64_t t = T0 + 100 * SEC;
        /* 3 replicas, quorum 2; C lies, and answers last. */
        add("q", 3, 2, "", 0, 0);
        assert_int_equal(lease(wa, 1, t, NULL), 1);
        assert_int_equal(lease(wb, 1, t, NULL), 1);
        assert_int_equal(lease(wc, 1, t, NULL), 1);
        assert_int_equal(lease(wd, 1, t, NULL), 0);     /* three replicas out: no fourth */
        assert_int_equal(result(wa, "q", 0xaa, t, &acc), 0);
        assert_string_equal(task_state("q"), "pending");
        assert_int_equal(result(wb, "q", 0xaa, t, &acc), 0);
        assert_string_equal(task_state("q"), "done");
        assert_int_equal(result(wc, "q", 0xcc, t, &acc), 0);

        json_t *res, *v;
        size_t i;
        int agree = 0, accepted = 0, disagree = 0;
        assert_int_equal(pool_store_results_json(s, "q", false, &res), 0);
        json_array_foreach(res, i, v) {
                agree += !strcmp(json_string_value(json_object_get(v, "verdict")), "agree");
                disagree += !strcmp(json_string_value(json_object_get(v, "verdict")), "disagree");
                accepted += json_is_true(json_object_get(v, "accepted"));
        }
        json_decref(res);
        assert_int_equal(agree, 2);
        assert_int_equal(disagree, 1);
        assert_int_equal(accepted, 2);

        /* 2 replicas, quorum 2, every answer different: one more replica at
         * a time, up to 4, then inconclusive. */
        add("split", 2, 2, "", 0, 0);
        assert_int_equal(lease(wa, 1, t, NULL), 1);
        assert_int_equal(lease(wb, 1, t, NULL), 1);
        assert_int_equal(lease(wc, 1, t, NULL), 0);
        assert_int_equal(result(wa, "split", 1, t, &acc), 0);
        assert_int_equal(result(wb, "split", 2, t, &acc), 0);
        assert_int_equal(json_integer_value(json_object_get(task_json("split"), "wanted")), 3);
        assert_int_equal(lease(wc, 1, t, NULL), 1);
        assert_int_equal(result(wc, "split", 3, t, &acc), 0);
        assert_int_equal(lease(wd, 1, t, NULL), 1);
        assert_int_equal(result(wd, "split", 4, t, &acc), 0);
        assert_string_equal(task_state("split"), "inconclusive");

        json_t *w;
        assert_int_equal(pool_store_workers_json(s, t, &w), 0);
        json_array_foreach(w, i, v) {
                char b64[64];
                link_key_to_base64(wc, b64, sizeof(b64));
                if (!strcmp(json_string_value(json_object_get(v, "key")), b64))
                        assert_int_equal(json_integer_value(json_object_get(v, "disagreed")), 1);
        }
        json_decref(w);
}

static void test_durable(void **state)
{
        json_t *st;
        const char *names[] = { "errors.malformed" };
        uint64_t d[] = { 3 };
        assert_int_equal(pool_store_count(s, names, d, 1), 0);
        assert_int_equal(pool_store_count(s, names, d, 1), 0);
        pool_store_close(s);
        assert_int_equal(pool_store_open(db, false, &s), 0);
        assert_int_equal(pool_store_status_json(s, T0, &st), 0);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "counters"), "errors.malformed")), 6);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "tasks"), "done")), 3);
        assert_int_equal(json_integer_value(json_object_get(st, "workers")), 4);
        json_decref(st);
}

/* Whether a lease for KEY at NOW hands out task ID (among up to 16). */
static bool leases_task(const uint8_t *key, uint64_t now, const char *id)
{
        PoolLease *l = NULL;
        bool found = false;
        int n = pool_store_lease(s, key, 16, 1 << 20, now, LEASE, &l);
        assert_true(n >= 0);
        for (int i = 0; i < n; i++)
                found |= !strcmp(l[i].id, id);
        pool_leases_free(l, (size_t) n);
        return found;
}

/* The server's mode: group commit, and leases and results served from
 * memory (pool/sched.c) with the database only written. The same rules as
 * the SQL paths above, what the listings show agrees, changes another
 * process makes (the CLI) are seen, and a reopened store carries on. */
static void test_memory(void **state)
{
        PoolStore *cli = NULL;
        bool accepted = false;
        uint64_t t = T0 + 1000 * SEC;

        assert_int_equal(pool_store_set_group(s, true), 0);
        add("m1", 1, 1, "", 0, 0);
        add("m2", 2, 2, "", 0, 0);
        assert_int_equal(result(wa, "m1", 1, t, &accepted), -ENOENT);  /* never leased to A */
        json_int_t leases0 = worker_field(wa, "leases", T0), results0 = worker_field(wa, "results", T0),
                   agreed0 = worker_field(wa, "agreed", T0), cpu0 = worker_field(wa, "cpu_usec", T0);
        assert_true(leases_task(wa, t, "m1"));
        assert_false(leases_task(wa, t, "m1"));                        /* not twice */
        assert_int_equal(result(wa, "m1", 1, t, &accepted), 0);
        assert_true(accepted);
        accepted = false;
        assert_int_equal(result(wa, "m1", 1, t, &accepted), 0);        /* a resend */
        assert_true(accepted);
        assert_int_equal(pool_store_commit(s), 0);
        assert_string_equal(task_state("m1"), "done");
        assert_int_equal(json_integer_value(json_object_get(task_json("m1"), "results")), 1);
        /* The result row alone records the answer (the server writes
         * neither the lease nor the worker's row): the lease, unexpired at
         * T0, no longer counts as held, and the worker's figures are its
         * results'. */
        assert_int_equal(json_integer_value(json_object_get(task_json("m1"), "leased")), 0);
        assert_int_equal(worker_field(wa, "leases", T0), leases0 + 1);  /* m2 (the same lease call), not m1 */
        assert_int_equal(worker_field(wa, "results", T0), results0 + 1);
        assert_int_equal(worker_field(wa, "agreed", T0), agreed0 + 1);
        assert_int_equal(worker_field(wa, "cpu_usec", T0), cpu0 + 100);
        assert_true(worker_field(wa, "last_seen_usec", T0) >= (json_int_t) t);

        /* Another process submits and cancels: seen within 100 ms, by
         * reading just its two rows (the task, the cancel), not by
         * rebuilding memory. */
        PoolStoreMemStats ms0, ms1;
        pool_store_mem_stats(s, &ms0);
        assert_true(ms0.full_loads >= 1);
        assert_int_equal(pool_store_open(db, false, &cli), 0);
        uint8_t sig[64] = { 1 };
        PoolTaskNew n = { .id = "m3", .kind = HLINK__KIND__KIND_EXEC, .spec = "spec", .spec_len = 4,
                          .signature = sig, .replicas = 1, .quorum = 1 };
        assert_int_equal(pool_store_add_task(cli, &n, t), 0);
        assert_int_equal(pool_store_cancel(cli, "m2", t), 0);
        pool_store_close(cli);
        t += SEC;
        assert_true(leases_task(wb, t, "m3"));
        assert_false(leases_task(wc, t, "m2"));
        assert_int_equal(pool_store_commit(s), 0);
        pool_store_mem_stats(s, &ms1);
        assert_int_equal(ms1.full_loads, ms0.full_loads);
        assert_int_equal(ms1.catch_ups, ms0.catch_ups + 1);
        assert_int_equal(ms1.rows_caught_up - ms0.rows_caught_up, 2);
        assert_int_equal(ms1.tasks, 1);                                 /* m3; m2 cancelled */

        /* Restarted (kill -9 alike: nothing flushed but the commits): B's
         * live lease on m3 holds, and lapses as before. */
        assert_int_equal(pool_store_commit(s), 0);
        pool_store_close(s);
        assert_int_equal(pool_store_open(db, false, &s), 0);
        assert_int_equal(pool_store_set_group(s, true), 0);
        assert_false(leases_task(wc, t + SEC, "m3"));
        assert_true(leases_task(wc, t + LEASE + SEC, "m3"));
        assert_int_equal(result(wc, "m3", 3, t + LEASE + SEC, &accepted), 0);
        assert_true(accepted);
        /* B's late answer: the task is decided; judged against it, stored. */
        assert_int_equal(result(wb, "m3", 3, t + LEASE + 2 * SEC, &accepted), 0);
        assert_int_equal(pool_store_commit(s), 0);
        assert_string_equal(task_state("m3"), "done");
        assert_int_equal(pool_store_set_group(s, false), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_seq),
                cmocka_unit_test(test_lease_lapse),
                cmocka_unit_test(test_matching),
                cmocka_unit_test(test_quorum),
                cmocka_unit_test(test_durable),
                cmocka_unit_test(test_memory),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
