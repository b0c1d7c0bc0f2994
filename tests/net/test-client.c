/* SPDX-License-Identifier: GPL-2.0-or-later */
/* net/client.c against a scripted pool in a thread (NNG REP over ipc://):
 * the event-loop contract (eventfd, dispatch on the caller's thread, one
 * request in flight), and every reply check: pinned key, reply_to, replay,
 * forged tasks, error codes, timeouts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <sodium.h>

#include "net/link.h"

enum { OK, WRONG_KEY, WRONG_NONCE, SILENT, FORGED_TASK, UNKNOWN_WORKER, STALE_SEQ, FORGED_MAC };

static char dir[PATH_MAX], url[PATH_MAX + 16];
static LinkIdentity pool, other;
static volatile int mode;
static nng_socket rep;
static pthread_t server;
static LinkClient *cl;

static void task(LinkIdentity *signer, const char *id, Hlink__Task *t, void **spec)
{
        Hlink__TaskSpec s = HLINK__TASK_SPEC__INIT;
        char *argv[] = { "true" };
        static uint8_t sigs[4][64];
        static int k;
        size_t len;
        s.id = (char *) id;
        s.kind = HLINK__KIND__KIND_EXEC;
        s.argv = argv;
        s.n_argv = 1;
        uint8_t *sig = sigs[k++ % 4];
        assert_int_equal(link_task_sign(signer, &s, spec, &len, sig), 0);
        hlink__task__init(t);
        t->spec = (ProtobufCBinaryData) { len, *spec };
        t->signature = (ProtobufCBinaryData) { 64, sig };
        t->lease_expires_usec = 77;
}

/* The fake pool's one session, from the last hello. */
static LinkSession session;
static bool have_session;
static volatile int requests_macd, requests_signed;

static void *serve(void *arg)
{
        for (;;) {
                nng_msg *m;
                if (nng_recvmsg(rep, &m, 0) != 0)
                        return NULL;
                LinkMsg *req = NULL;
                if (link_decode_frame(nng_msg_body(m), nng_msg_len(m), &req) < 0 ||
                    link_msg_open(req, have_session ? &session : NULL) < 0) {
                        link_msg_free(req);
                        nng_msg_free(m);
                        continue;
                }
                nng_msg_free(m);
                bool macd = !link_msg_signed(req);
                if (macd)
                        requests_macd++;
                else
                        requests_signed++;
                Hlink__Body b = HLINK__BODY__INIT;
                Hlink__Welcome w = HLINK__WELCOME__INIT;
                Hlink__ResultAck ack = HLINK__RESULT_ACK__INIT;
                Hlink__Work work = HLINK__WORK__INIT;
                uint8_t kx_pk[32];
                Hlink__Task t1, t2, *ts[] = { &t1, &t2 };
                Hlink__Error e = HLINK__ERROR__INIT;
                void *s1 = NULL, *s2 = NULL;
                uint8_t nonce[16];
                LinkIdentity *signer = mode == WRONG_KEY ? &other : &pool;

                memcpy(nonce, req->env->nonce.data, 16);
                if (mode == WRONG_NONCE)
                        nonce[0] ^= 1;
                if (mode == UNKNOWN_WORKER) {
                        e.code = HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER;
                        e.message = "who?";
                        b.msg_case = HLINK__BODY__MSG_ERROR;
                        b.error = &e;
                } else if (req->body->msg_case == HLINK__BODY__MSG_FETCH) {
                        task(&pool, "good", &t1, &s1);
                        task(mode == FORGED_TASK ? &other : &pool, "evil", &t2, &s2);
                        work.tasks = ts;
                        work.n_tasks = 2;
                        b.msg_case = HLINK__BODY__MSG_WORK;
                        b.work = &work;
                } else if (req->body->msg_case == HLINK__BODY__MSG_RESULT) {
                        /* Acknowledged, with as many new tasks as asked (up to 2). */
                        task(&pool, "next1", &t1, &s1);
                        task(&pool, "next2", &t2, &s2);
                        ack.task_id = "done1";
                        ack.accepted = true;
                        ack.tasks = ts;
                        ack.n_tasks = req->body->result->fetch < 2 ? req->body->result->fetch : 2;
                        b.msg_case = HLINK__BODY__MSG_RESULT_ACK;
                        b.result_ack = &ack;
                } else {
                        assert_int_equal(link_session_server(req->body->hello->kx_public.data, &session, kx_pk), 0);
                        have_session = true;
                        w.worker_id = "w";
                        w.lease_sec = 42;
                        w.kx_public = (ProtobufCBinaryData) { 32, kx_pk };
                        w.session = (ProtobufCBinaryData) { 16, session.id };
                        b.msg_case = HLINK__BODY__MSG_WELCOME;
                        b.welcome = &w;
                        macd = false;           /* a welcome is signed */
                }
                link_msg_free(req);
                if (mode == SILENT) {
                        free(s1);
                        free(s2);
                        continue;
                }
                void *buf;
                size_t len;
                struct timespec ts_now;
                clock_gettime(CLOCK_REALTIME, &ts_now);
                uint64_t now = (uint64_t) ts_now.tv_sec * 1000000 + (uint64_t) ts_now.tv_nsec / 1000;
                if (mode == STALE_SEQ)
                        signer->seq = 0, now = 1;       /* an old, signed reply */
                LinkSession forged = session;
                if (mode == FORGED_MAC)
                        forged.tx[0] ^= 1;      /* a MAC nobody with the session's key made */
                if (macd)
                        assert_int_equal(link_encode_session(signer, &forged, &b, nonce, now, NULL, &buf, &len), 0);
                else
                        assert_int_equal(link_encode(signer, &b, nonce, now, NULL, &buf, &len), 0);
                free(s1);
                free(s2);
                nng_send(rep, buf, len, 0);
                free(buf);
        }
}

static int setup(void **state)
{
        snprintf(dir, sizeof(dir), "/tmp/test-client.XXXXXX");
        assert_non_null(mkdtemp(dir));
        snprintf(url, sizeof(url), "ipc://%s/pool.sock", dir);
        char p[PATH_MAX + 16];
        snprintf(p, sizeof(p), "%s/pool.key", dir);
        assert_int_equal(link_identity_load(p, true, &pool), 0);
        snprintf(p, sizeof(p), "%s/other.key", dir);
        assert_int_equal(link_identity_load(p, true, &other), 0);
        assert_int_equal(nng_rep0_open(&rep), 0);
        assert_int_equal(nng_listen(rep, url, NULL, 0), 0);
        assert_int_equal(pthread_create(&server, NULL, serve, NULL), 0);

        LinkClientConfig cfg = { .url = url, .state_dir = dir, .timeout_ms = 500 };
        memcpy(cfg.pool_key, pool.pk, 32);
        assert_int_equal(link_client_new(&cfg, &cl), 0);
        return 0;
}

static int teardown(void **state)
{
        char cmd[PATH_MAX + 16];
        link_client_free(cl);
        nng_close(rep);
        pthread_join(server, NULL);
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        return system(cmd) == 0 ? 0 : -1;
}

struct got {
        int calls;
        int error;
        int type;
        pthread_t thread;
};

static void on_reply(LinkClient *c, int error, LinkMsg *reply, void *userdata)
{
        struct got *g = userdata;
        g->calls++;
        g->error = error;
        g->type = reply ? (int) reply->body->msg_case : -1;
        g->thread = pthread_self();
        link_msg_free(reply);
}

static Hlink__Body fetch_body(void)
{
        static Hlink__Fetch f = HLINK__FETCH__INIT;
        Hlink__Body b = HLINK__BODY__INIT;
        f.max_tasks = 4;
        b.msg_case = HLINK__BODY__MSG_FETCH;
        b.fetch = &f;
        return b;
}

static void test_event_loop(void **state)
{
        struct got g = {};
        Hlink__Body b = fetch_body();
        int fd = link_client_fd(cl);
        struct pollfd p = { .fd = fd, .events = POLLIN };

        mode = OK;
        assert_true(fd >= 0);
        assert_int_equal(link_client_dispatch(cl), 0);          /* nothing yet */
        assert_int_equal(link_client_submit(cl, &b, on_reply, &g), 0);
        assert_int_equal(link_client_submit(cl, &b, on_reply, &g), -EBUSY);
        /* The fd wakes the loop; the callback runs only from dispatch. */
        assert_int_equal(poll(&p, 1, 5000), 1);
        assert_int_equal(g.calls, 0);
        assert_int_equal(link_client_dispatch(cl), 1);
        assert_int_equal(g.calls, 1);
        assert_int_equal(g.error, 0);
        assert_int_equal(g.type, HLINK__BODY__MSG_WORK);
        assert_true(pthread_equal(g.thread, pthread_self()));
        assert_int_equal(poll(&p, 1, 0), 0);                    /* drained */
        assert_int_equal(link_client_dispatch(cl), 0);
}

static void test_checks(void **state)
{
        struct got g = {};
        Hlink__Body b = fetch_body();
        struct pollfd p = { .fd = link_client_fd(cl), .events = POLLIN };
        static const struct { int mode, error; } cases[] = {
                { WRONG_KEY, -EKEYREJECTED },   /* not the pinned pool */
                { WRONG_NONCE, -ESTALE },       /* answers another request */
                { STALE_SEQ, -ESTALE },         /* an old reply, replayed */
                { SILENT, -ETIMEDOUT },
                { OK, 0 },                      /* and it recovers */
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                mode = cases[i].mode;
                memset(&g, 0, sizeof(g));
                assert_int_equal(link_client_submit(cl, &b, on_reply, &g), 0);
                assert_int_equal(poll(&p, 1, 5000), 1);
                assert_int_equal(link_client_dispatch(cl), 1);
                assert_int_equal(g.calls, 1);
                if (g.error != cases[i].error)
                        fail_msg("case %zu: got %d, want %d", i, g.error, cases[i].error);
                assert_int_equal(g.type, cases[i].error ? -1 : HLINK__BODY__MSG_WORK);
        }
}

/* A batch signature only over results that still carry our own valid
 * signature: harvesterd reads them back from disk to send them. */
static void test_sign_batch(void **state)
{
        Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT;
        Hlink__Result res = HLINK__RESULT__INIT;
        Hlink__SignedResult more = HLINK__SIGNED_RESULT__INIT, *mp[] = { &more };
        ProtobufCBinaryData bodies[2], sigs[2];
        uint8_t own[2][64], batch[64], proof[LINK_PROOF_MAX];
        size_t proof_len;
        LinkIdentity me;

        assert_int_equal(link_identity_worker(dir, &me), 0);    /* the client's own key */
        rb.status = HLINK__STATUS__STATUS_OK;
        for (int i = 0; i < 2; i++) {
                void *b;
                size_t len;
                rb.task_id = i ? "t1" : "t0";
                assert_int_equal(link_client_sign_result(cl, &rb, &b, &len, own[i]), 0);
                bodies[i] = (ProtobufCBinaryData) { len, b };
                sigs[i] = (ProtobufCBinaryData) { 64, own[i] };
        }
        assert_int_equal(link_client_sign_batch(cl, bodies, sigs, 2, batch), 0);
        res.body = bodies[0];
        more.body = bodies[1];
        res.more = mp;
        res.n_more = 1;
        res.batch_signature = (ProtobufCBinaryData) { 64, batch };
        assert_int_equal(link_result_batch_verify(&res, me.pk, proof, &proof_len), 1);

        /* one changed since it was signed: no batch signature */
        ((uint8_t *) bodies[1].data)[bodies[1].len - 1] ^= 1;
        assert_int_equal(link_client_sign_batch(cl, bodies, sigs, 2, batch), -EKEYREJECTED);
        for (int i = 0; i < 2; i++)
                free(bodies[i].data);
        sodium_memzero(&me, sizeof(me));
}

static void test_blocking(void **state)
{
        LinkTask *t = NULL;
        unsigned forged = 99;
        uint32_t lease = 0;
        Hlink__Capabilities caps = HLINK__CAPABILITIES__INIT;
        caps.arch = "x86_64";

        mode = OK;
        assert_int_equal(link_client_hello(cl, &caps, "test", &lease), 0);
        assert_int_equal(lease, 42);
        assert_int_equal(link_client_fetch(cl, 4, &t, &forged), 2);
        assert_int_equal(forged, 0);
        assert_string_equal(t[0].spec->id, "good");
        assert_int_equal(t[0].lease_expires_usec, 77);
        link_tasks_free(t, 2);

        /* One task signed by another key: dropped and counted, never handed out. */
        mode = FORGED_TASK;
        assert_int_equal(link_client_fetch(cl, 4, &t, &forged), 1);
        assert_int_equal(forged, 1);
        assert_string_equal(t[0].spec->id, "good");
        link_tasks_free(t, 1);

        /* After the hello every request went MACed, none signed. */
        mode = OK;
        assert_true(link_client_has_session(cl));
        int signed_before = requests_signed, macd_before = requests_macd;
        assert_int_equal(link_client_fetch(cl, 4, &t, NULL), 2);
        link_tasks_free(t, 2);
        assert_int_equal(requests_signed, signed_before);
        assert_int_equal(requests_macd, macd_before + 1);

        /* A result that asks for more work gets it in the ack: one round trip. */
        Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT;
        bool accepted = false;
        rb.task_id = "done1";
        rb.status = HLINK__STATUS__STATUS_OK;
        assert_int_equal(link_client_send_result_fetch(cl, &rb, 2, &accepted, &t, &forged), 2);
        assert_true(accepted);
        assert_int_equal(forged, 0);
        assert_string_equal(t[0].spec->id, "next1");
        assert_string_equal(t[1].spec->id, "next2");
        link_tasks_free(t, 2);
        assert_int_equal(requests_macd, macd_before + 2);
        accepted = false;
        assert_int_equal(link_client_send_result(cl, &rb, &accepted), 0);
        assert_true(accepted);

        /* A reply whose MAC is not the session's: refused, never handed out. */
        mode = FORGED_MAC;
        assert_int_equal(link_client_fetch(cl, 4, &t, &forged), -EKEYREJECTED);
        mode = OK;

        mode = UNKNOWN_WORKER;
        assert_int_equal(link_client_fetch(cl, 4, &t, &forged), -ENOTCONN);
        /* The pool forgot us: the session is gone; requests go signed until
         * the next hello (and the pool answers them with a hello request). */
        assert_false(link_client_has_session(cl));
        mode = OK;
        signed_before = requests_signed;
        assert_int_equal(link_client_fetch(cl, 4, &t, NULL), 2);
        link_tasks_free(t, 2);
        assert_int_equal(requests_signed, signed_before + 1);
        assert_int_equal(link_client_hello(cl, &caps, "test", &lease), 0);
        assert_true(link_client_has_session(cl));

        /* The identity was created under the state dir, 0600. */
        char p[PATH_MAX + 32];
        LinkIdentity id;
        snprintf(p, sizeof(p), "%s/link-identity.key", dir);
        assert_int_equal(link_identity_load(p, false, &id), 0);
        assert_memory_equal(id.pk, link_client_key(cl), 32);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_event_loop),
                cmocka_unit_test(test_checks),
                cmocka_unit_test(test_sign_batch),
                cmocka_unit_test(test_blocking),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
