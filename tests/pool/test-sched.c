/* SPDX-License-Identifier: GPL-2.0-or-later */
/* pool/sched.c, the scheduling state the server keeps in memory, driven
 * with a fake clock: matching by capability class, one lease per worker
 * and task, lapsed leases first, renewals, quorum, more replicas, giving
 * up. The same rules pool/store-sqlite.c's SQL paths follow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pool/sched.h"

#define SEC 1000000ULL
#define LEASE (10 * SEC)
#define T0 (1700000000ULL * SEC)

static const uint8_t wa[32] = { 1 }, wb[32] = { 2 }, wc[32] = { 3 }, wd[32] = { 4 };
static const uint8_t sig[64] = { 9 };

static SchedTask *add(Sched *s, const char *id, unsigned replicas, unsigned quorum, const char *arch, int gpu)
{
        SchedTask *t = NULL;
        static int64_t rowid;
        SchedTaskNew n = { .rowid = ++rowid, .id = id, .spec = "spec", .spec_len = 4, .signature = sig,
                           .replicas = replicas, .quorum = quorum, .wanted = replicas, .need_arch = arch,
                           .need_gpu = gpu };
        assert_int_equal(sched_add(s, &n, &t), 0);
        return t;
}

static PoolWorkerCaps caps(const char *arch, bool opencl)
{
        PoolWorkerCaps c = { .cores = 4, .memory_bytes = 1ULL << 30 };
        snprintf(c.arch, sizeof(c.arch), "%s", arch);
        if (opencl)
                c.gpu_mask = 1U << 1;   /* API_OPENCL */
        return c;
}

/* Pick up to MAX for KEY; the ids, comma separated, in BUF. */
static int pick(Sched *s, const uint8_t *key, const PoolWorkerCaps *c, unsigned max, uint64_t now, char *buf)
{
        SchedTask *got[16];
        int n = sched_pick(s, key, c, max, 1 << 20, now, LEASE, got);
        assert_true(n >= 0);
        buf[0] = 0;
        for (int i = 0; i < n; i++) {
                strcat(buf, sched_task_id(got[i]));
                if (i + 1 < n)
                        strcat(buf, ",");
        }
        return n;
}

static void test_matching(void **state)
{
        Sched *s;
        char b[256];
        PoolWorkerCaps x86 = caps("x86_64", false), arm = caps("aarch64", true);
        assert_int_equal(sched_new(&s), 0);
        add(s, "any", 1, 1, "", 0);
        add(s, "x86", 1, 1, "x86_64", 0);
        add(s, "gpu", 1, 1, "", 1);
        assert_int_equal(sched_add(s, &(SchedTaskNew) { .id = "any", .signature = sig }, NULL), -EEXIST);

        /* The arm worker with OpenCL fits "any" and "gpu", never "x86". */
        assert_int_equal(pick(s, wa, &arm, 8, T0, b), 2);
        assert_string_equal(b, "any,gpu");
        assert_int_equal(pick(s, wb, &x86, 8, T0, b), 1);
        assert_string_equal(b, "x86");
        assert_int_equal(pick(s, wc, &x86, 8, T0, b), 0);      /* all leased */
        assert_int_equal(sched_tasks(s), 3);
        sched_free(s);
}

static void test_lapse_and_renew(void **state)
{
        Sched *s;
        char b[256];
        PoolWorkerCaps c = caps("x86_64", false);
        assert_int_equal(sched_new(&s), 0);
        SchedTask *t1 = add(s, "t1", 1, 1, "", 0);
        add(s, "t2", 1, 1, "", 0);

        assert_int_equal(pick(s, wa, &c, 1, T0, b), 1);
        assert_string_equal(b, "t1");
        /* Renewed within the lease: still A's at T0 + 15 s. */
        assert_int_equal(sched_renew(s, t1, wa, T0 + 5 * SEC, LEASE), 0);
        assert_int_equal(pick(s, wb, &c, 1, T0 + 14 * SEC, b), 1);
        assert_string_equal(b, "t2");
        assert_int_equal(sched_renew(s, t1, wb, T0, LEASE), -ENOENT);  /* not B's */
        /* A vanished: at T0 + 16 s its lapsed task goes out first, to C. */
        add(s, "t3", 1, 1, "", 0);
        assert_int_equal(pick(s, wc, &c, 1, T0 + 16 * SEC, b), 1);
        assert_string_equal(b, "t1");
        /* A comes back: its lapsed lease is taken. */
        assert_int_equal(sched_renew(s, t1, wa, T0 + 17 * SEC, LEASE), -ETIMEDOUT);
        /* A result from A still counts (it was leased to A) and decides it. */
        uint8_t h[32] = { 5 }, best[32];
        assert_int_equal(sched_result(s, t1, wa, h, T0 + 17 * SEC, best), SCHED_ACCEPT);
        assert_memory_equal(best, h, 32);
        sched_remove(s, t1);
        assert_null(sched_find(s, "t1"));
        /* C's lease on the removed task expires later without harm. */
        assert_int_equal(pick(s, wd, &c, 4, T0 + 40 * SEC, b), 2);
        sched_free(s);
}

static void test_quorum(void **state)
{
        Sched *s;
        char b[256];
        uint8_t good[32] = { 1 }, bad[32] = { 2 }, best[32];
        PoolWorkerCaps c = caps("x86_64", false);
        assert_int_equal(sched_new(&s), 0);
        SchedTask *t = add(s, "q", 2, 2, "", 0);

        assert_int_equal(pick(s, wa, &c, 4, T0, b), 1);
        assert_int_equal(pick(s, wa, &c, 4, T0, b), 0);         /* not twice to one worker */
        assert_int_equal(pick(s, wb, &c, 4, T0, b), 1);
        assert_int_equal(pick(s, wc, &c, 4, T0, b), 0);         /* both replicas out */
        assert_int_equal(sched_lease_state(t, wa, NULL), SCHED_ACTIVE);
        assert_int_equal(sched_result(s, t, wa, good, T0, best), SCHED_UNDECIDED);
        assert_int_equal(sched_lease_state(t, wa, NULL), SCHED_DONE);
        /* Two answers, no quorum: one more replica is wanted, from C. */
        assert_int_equal(sched_result(s, t, wb, bad, T0, best), SCHED_ASK_MORE);
        assert_int_equal(pick(s, wa, &c, 4, T0, b), 0);         /* A answered already */
        assert_int_equal(pick(s, wc, &c, 4, T0, b), 1);
        assert_int_equal(sched_result(s, t, wc, good, T0, best), SCHED_ACCEPT);
        assert_memory_equal(best, good, 32);
        sched_remove(s, t);

        /* No quorum at twice the replicas: given up. */
        t = add(s, "r", 1, 1, "", 0);
        assert_int_equal(pick(s, wa, &c, 4, T0, b), 1);
        /* quorum 1 decides on the first answer whatever it is */
        assert_int_equal(sched_result(s, t, wa, bad, T0, best), SCHED_ACCEPT);
        sched_remove(s, t);
        t = add(s, "u", 2, 2, "", 0);
        const uint8_t *keys[] = { wa, wb, wc, wd };
        int v = 0;
        for (int i = 0; i < 4; i++) {
                uint8_t h[32] = { (uint8_t) (10 + i) };
                assert_int_equal(pick(s, keys[i], &c, 4, T0, b), 1);
                v = sched_result(s, t, keys[i], h, T0, best);
        }
        assert_int_equal(v, SCHED_GIVE_UP);
        sched_free(s);
}

static void test_release(void **state)
{
        Sched *s;
        char b[256];
        PoolWorkerCaps c = caps("x86_64", false);
        assert_int_equal(sched_new(&s), 0);
        SchedTask *t = add(s, "g", 1, 1, "", 0);
        assert_int_equal(pick(s, wa, &c, 4, T0, b), 1);
        assert_int_equal(pick(s, wb, &c, 4, T0, b), 0);
        /* Goodbye: at once back in the queue, not after the lease. */
        sched_release(s, t, wa, T0 + SEC);
        assert_int_equal(sched_lease_state(t, wa, NULL), SCHED_RELEASED);
        assert_int_equal(pick(s, wb, &c, 4, T0 + SEC, b), 1);
        assert_string_equal(b, "g");

        /* Loading: leases as the database has them. */
        Sched *l;
        uint8_t h[32] = { 7 };
        assert_int_equal(sched_new(&l), 0);
        SchedTask *x = add(l, "x", 2, 2, "", 0);
        assert_int_equal(sched_load_lease(l, x, wa, T0 + LEASE, SCHED_ACTIVE, NULL), 0);
        assert_int_equal(sched_load_lease(l, x, wb, T0, SCHED_DONE, h), 0);
        sched_loaded(l, T0);
        assert_int_equal(pick(l, wc, &c, 4, T0, b), 0);         /* full */
        assert_int_equal(pick(l, wc, &c, 4, T0 + LEASE + 1, b), 1);      /* A's lapsed */
        sched_free(l);
        sched_free(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_matching),
                cmocka_unit_test(test_lapse_and_renew),
                cmocka_unit_test(test_quorum),
                cmocka_unit_test(test_release),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
