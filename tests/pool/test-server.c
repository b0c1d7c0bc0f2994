/* SPDX-License-Identifier: GPL-2.0-or-later */
/* pool/server.c over ipc://, spoken to by a raw REQ peer that frames every
 * request itself: the session after a hello, MACed requests and replies, a
 * result that brings the next task back, and every refusal (a replayed, a
 * forged, a wrong-session and a session-less request) answered and counted;
 * then a restart of the server, which forgets the session but nothing
 * durable. */
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
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>
#include <sqlite3.h>

#include "pool/server.h"
#include "pool/store.h"

static char dir[PATH_MAX], url[PATH_MAX + 16];
static LinkIdentity pool, worker;
static PoolStore *store;
static PoolServer *srv;
static nng_socket req;
static LinkSession session;

static uint64_t now_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static void serve(void)
{
        const char *listen[] = { url };
        PoolServerConfig cfg = { .listen = listen, .n_listen = 1, .contexts = 4, .lease_sec = 60 };
        assert_int_equal(pool_server_new(store, &pool, &cfg, &srv), 0);
}

/* Send BUF as is; the reply, opened under SESSION (NULL: signed). */
static LinkMsg *exchange(const void *buf, size_t len, const LinkSession *s)
{
        void *rb = NULL;
        size_t rl = 0;
        LinkMsg *m = NULL;
        assert_int_equal(nng_send(req, (void *) buf, len, 0), 0);
        assert_int_equal(nng_recv(req, &rb, &rl, NNG_FLAG_ALLOC), 0);
        assert_int_equal(link_decode_frame(rb, rl, &m), 0);
        nng_free(rb, rl);
        assert_memory_equal(m->env->sender.data, pool.pk, 32);
        assert_int_equal(link_msg_open(m, s), 0);
        return m;
}

/* Frame B (MACed in SESSION unless signed), send, return the reply. */
static LinkMsg *call(const Hlink__Body *b, bool sign, void **ret_raw, size_t *ret_len)
{
        void *buf;
        size_t len;
        if (sign)
                assert_int_equal(link_encode(&worker, b, NULL, now_usec(), NULL, &buf, &len), 0);
        else
                assert_int_equal(link_encode_session(&worker, &session, b, NULL, now_usec(), NULL, &buf, &len), 0);
        /* An error to a request without a valid session comes signed. */
        LinkMsg *m = NULL;
        void *rb = NULL;
        size_t rl = 0;
        assert_int_equal(nng_send(req, buf, len, 0), 0);
        assert_int_equal(nng_recv(req, &rb, &rl, NNG_FLAG_ALLOC), 0);
        assert_int_equal(link_decode_frame(rb, rl, &m), 0);
        nng_free(rb, rl);
        assert_int_equal(link_msg_open(m, link_msg_signed(m) ? NULL : &session), 0);
        if (ret_raw) {
                *ret_raw = buf;
                *ret_len = len;
        } else
                free(buf);
        return m;
}

static int error_code(LinkMsg *m)
{
        int code = m->body->msg_case == HLINK__BODY__MSG_ERROR ? (int) m->body->error->code : 0;
        link_msg_free(m);
        return code;
}

/* A hello body in B, H and C, with a fresh key exchange pair. */
static void hello_body(Hlink__Body *b, Hlink__Hello *h, Hlink__Capabilities *c, uint8_t kx_pk[32], uint8_t kx_sk[32])
{
        hlink__body__init(b);
        hlink__hello__init(h);
        hlink__capabilities__init(c);
        c->arch = "x86_64";
        c->cores = 2;
        h->caps = c;
        h->agent = "test";
        assert_int_equal(link_kx_keypair(kx_pk, kx_sk), 0);
        h->kx_public = (ProtobufCBinaryData) { 32, kx_pk };
        b->msg_case = HLINK__BODY__MSG_HELLO;
        b->hello = h;
}

static void hello(void)
{
        Hlink__Body b;
        Hlink__Hello h;
        Hlink__Capabilities c;
        uint8_t kx_pk[32], kx_sk[32];
        hello_body(&b, &h, &c, kx_pk, kx_sk);
        LinkMsg *m = call(&b, true, NULL, NULL);
        assert_int_equal(m->body->msg_case, HLINK__BODY__MSG_WELCOME);
        assert_true(link_msg_signed(m));                /* binds the session to the pool's key */
        assert_int_equal(link_session_client(kx_pk, kx_sk, m->body->welcome, &session), 0);
        link_msg_free(m);
}

static void submit(const char *id)
{
        Hlink__TaskSpec s = HLINK__TASK_SPEC__INIT;
        char *argv[] = { "echo" };
        uint8_t sig[64];
        void *spec;
        size_t len;
        s.id = (char *) id;
        s.kind = HLINK__KIND__KIND_EXEC;
        s.argv = argv;
        s.n_argv = 1;
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), 0);
        PoolTaskNew t = { .id = id, .kind = s.kind, .spec = spec, .spec_len = len, .signature = sig, .replicas = 1,
                          .quorum = 1 };
        assert_int_equal(pool_store_add_task(store, &t, now_usec()), 0);
        assert_int_equal(pool_store_commit(store), 0);
        free(spec);
}

/* A result body for task ID (its output: its id), signed by the worker. */
static void sign_result(const char *id, ProtobufCBinaryData *ret_body, uint8_t sig[64])
{
        Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT;
        Hlink__File out = HLINK__FILE__INIT, *outs[] = { &out };
        void *body;
        size_t len;
        rb.task_id = (char *) id;
        rb.status = HLINK__STATUS__STATUS_OK;
        out.name = "stdout";
        out.data = (ProtobufCBinaryData) { strlen(id), (uint8_t *) id };
        rb.outputs = outs;
        rb.n_outputs = 1;
        assert_int_equal(link_result_sign(&worker, &rb, &body, &len, sig), 0);
        *ret_body = (ProtobufCBinaryData) { len, body };
}

/* A signed result for TASK, asking for FETCH more. */
static LinkMsg *result(const Hlink__Task *task, unsigned fetch)
{
        Hlink__TaskSpec *spec = NULL;
        Hlink__Result res = HLINK__RESULT__INIT;
        Hlink__Body b = HLINK__BODY__INIT;
        uint8_t sig[64], sha[32];
        assert_int_equal(link_task_verify(task, pool.pk, &spec, sha), 0);
        sign_result(spec->id, &res.body, sig);
        res.signature = (ProtobufCBinaryData) { 64, sig };
        res.fetch = fetch;
        b.msg_case = HLINK__BODY__MSG_RESULT;
        b.result = &res;
        LinkMsg *m = call(&b, false, NULL, NULL);
        free(res.body.data);
        hlink__task_spec__free_unpacked(spec, NULL);
        return m;
}

static int setup(void **state)
{
        char p[PATH_MAX + 32];
        snprintf(dir, sizeof(dir), "/tmp/test-server.XXXXXX");
        assert_non_null(mkdtemp(dir));
        snprintf(url, sizeof(url), "ipc://%s/pool.sock", dir);
        snprintf(p, sizeof(p), "%s/pool.key", dir);
        assert_int_equal(link_identity_load(p, true, &pool), 0);
        assert_int_equal(link_identity_worker(dir, &worker), 0);
        snprintf(p, sizeof(p), "%s/pool.db", dir);
        assert_int_equal(pool_store_open(p, true, &store), 0);
        serve();
        assert_int_equal(nng_req0_open(&req), 0);
        nng_socket_set_ms(req, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
        nng_socket_set_ms(req, NNG_OPT_RECVTIMEO, 10000);
        assert_int_equal(nng_dial(req, url, NULL, 0), 0);
        return 0;
}

static int teardown(void **state)
{
        char cmd[PATH_MAX + 16];
        nng_close(req);
        pool_server_free(srv);
        pool_store_close(store);
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        return system(cmd) == 0 ? 0 : -1;
}

static void test_session(void **state)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Fetch f = HLINK__FETCH__INIT;
        uint64_t req0, err0, req1, err1;
        void *raw;
        size_t raw_len;
        f.max_tasks = 1;
        b.msg_case = HLINK__BODY__MSG_FETCH;
        b.fetch = &f;

        /* Before any hello: a signed fetch is told to say hello. */
        assert_int_equal(error_code(call(&b, true, NULL, NULL)), HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER);
        hello();
        submit("s1");
        submit("s2");
        submit("s3");

        /* In the session: MACed both ways (call() opened the reply under it). */
        LinkMsg *m = call(&b, false, &raw, &raw_len);
        assert_false(link_msg_signed(m));
        assert_int_equal(m->body->msg_case, HLINK__BODY__MSG_WORK);
        assert_int_equal(m->body->work->n_tasks, 1);

        pool_server_stats(srv, &req0, &err0, NULL);
        /* The same request again: a replay. */
        LinkMsg *e = exchange(raw, raw_len, NULL);
        assert_int_equal(error_code(e), HLINK__ERROR_CODE__ERR_REPLAY);
        /* A MAC that is not the session's. */
        Hlink__Envelope *env = hlink__envelope__unpack(NULL, raw_len, raw);
        uint8_t out[4096];
        env->seq += 1000;               /* past the replay guard: only the MAC stops it */
        env->mac.data[0] ^= 1;
        e = exchange(out, hlink__envelope__pack(env, out), NULL);
        assert_int_equal(error_code(e), HLINK__ERROR_CODE__ERR_BAD_SIGNATURE);
        /* Another session (made up): unknown, say hello. */
        env->mac.data[0] ^= 1;
        env->session.data[0] ^= 1;
        e = exchange(out, hlink__envelope__pack(env, out), NULL);
        assert_int_equal(error_code(e), HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER);
        hlink__envelope__free_unpacked(env, NULL);
        free(raw);
        pool_server_stats(srv, &req1, &err1, NULL);
        assert_int_equal(req1 - req0, 3);
        assert_int_equal(err1 - err0, 3);

        /* One round trip a task: the result brings the next one. */
        LinkMsg *ack = result(m->body->work->tasks[0], 1);
        link_msg_free(m);
        assert_int_equal(ack->body->msg_case, HLINK__BODY__MSG_RESULT_ACK);
        assert_true(ack->body->result_ack->accepted);
        assert_int_equal(ack->body->result_ack->n_tasks, 1);
        /* The next one is held across a restart: the session dies with the
         * pool, the lease and the result do not. */
        Hlink__Task *next = ack->body->result_ack->tasks[0];
        pool_server_free(srv);
        serve();
        LinkMsg *gone = result(next, 0);
        assert_int_equal(error_code(gone), HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER);
        hello();
        LinkMsg *ack2 = result(next, 0);
        assert_int_equal(ack2->body->msg_case, HLINK__BODY__MSG_RESULT_ACK);
        assert_true(ack2->body->result_ack->accepted);
        assert_string_equal(ack2->body->result_ack->reason, "");
        link_msg_free(ack2);
        link_msg_free(ack);

        /* Every refusal counted, in the database too. */
        json_t *st = NULL;
        pool_server_free(srv);
        srv = NULL;
        assert_int_equal(pool_store_status_json(store, now_usec(), &st), 0);
        json_t *c = json_object_get(st, "counters");
        assert_int_equal(json_integer_value(json_object_get(c, "errors.replay")), 1);
        assert_int_equal(json_integer_value(json_object_get(c, "errors.bad-signature")), 1);
        assert_int_equal(json_integer_value(json_object_get(c, "errors.unknown-worker")), 3);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "tasks"), "done")), 2);
        json_decref(st);
        serve();
}

static LinkMsg *fetch(unsigned max)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Fetch f = HLINK__FETCH__INIT;
        f.max_tasks = max;
        b.msg_case = HLINK__BODY__MSG_FETCH;
        b.fetch = &f;
        LinkMsg *m = call(&b, false, NULL, NULL);
        assert_int_equal(m->body->msg_case, HLINK__BODY__MSG_WORK);
        return m;
}

static const char *task_id(const Hlink__Task *t, char *buf)
{
        Hlink__TaskSpec *spec = hlink__task_spec__unpack(NULL, t->spec.len, t->spec.data);
        assert_non_null(spec);
        snprintf(buf, LINK_ID_MAX + 1, "%s", spec->id);
        hlink__task_spec__free_unpacked(spec, NULL);
        return buf;
}

/* Several results in one request (Result.more): each judged on its own, a
 * forged or unknown one costs only itself, and the count is limited. */
static void test_batch(void **state)
{
        char ids[3][LINK_ID_MAX + 1];
        uint8_t sigs[5][64];
        Hlink__Result res = HLINK__RESULT__INIT;
        Hlink__SignedResult more[LINK_RESULTS_MAX], *mp[LINK_RESULTS_MAX];
        Hlink__Body b = HLINK__BODY__INIT;

        hello();
        submit("b1");
        submit("b2");
        submit("b3");
        LinkMsg *w = fetch(3);
        assert_int_equal(w->body->work->n_tasks, 3);
        for (int i = 0; i < 3; i++)
                task_id(w->body->work->tasks[i], ids[i]);
        link_msg_free(w);

        /* ids[0] first; then ids[1] good, ids[2] with a forged signature,
         * and a task never leased to this worker. */
        sign_result(ids[0], &res.body, sigs[0]);
        res.signature = (ProtobufCBinaryData) { 64, sigs[0] };
        for (int i = 0; i < 3; i++) {
                hlink__signed_result__init(&more[i]);
                mp[i] = &more[i];
        }
        ProtobufCBinaryData bodies[3];
        sign_result(ids[1], &bodies[0], sigs[1]);
        sign_result(ids[2], &bodies[1], sigs[2]);
        sign_result("b-never-leased", &bodies[2], sigs[3]);
        sigs[2][10] ^= 1;
        for (int i = 0; i < 3; i++) {
                more[i].body = bodies[i];
                more[i].signature = (ProtobufCBinaryData) { 64, sigs[i + 1] };
        }
        res.more = mp;
        res.n_more = 3;
        b.msg_case = HLINK__BODY__MSG_RESULT;
        b.result = &res;
        LinkMsg *ack = call(&b, false, NULL, NULL);
        assert_int_equal(ack->body->msg_case, HLINK__BODY__MSG_RESULT_ACK);
        const Hlink__ResultAck *a = ack->body->result_ack;
        assert_true(a->accepted);
        assert_string_equal(a->task_id, ids[0]);
        assert_int_equal(a->n_more, 3);
        assert_true(a->more[0]->accepted);
        assert_string_equal(a->more[0]->task_id, ids[1]);
        assert_int_equal(a->more[0]->error, HLINK__ERROR_CODE__ERR_NONE);
        assert_false(a->more[1]->accepted);
        assert_int_equal(a->more[1]->error, HLINK__ERROR_CODE__ERR_BAD_SIGNATURE);
        assert_string_equal(a->more[1]->task_id, "");   /* nothing in it is authentic */
        assert_false(a->more[2]->accepted);
        assert_int_equal(a->more[2]->error, HLINK__ERROR_CODE__ERR_UNKNOWN_TASK);
        assert_string_equal(a->more[2]->task_id, "b-never-leased");
        link_msg_free(ack);

        /* The forged one took nothing: the real result for it is accepted. */
        free(res.body.data);
        sign_result(ids[2], &res.body, sigs[0]);
        res.n_more = 0;
        ack = call(&b, false, NULL, NULL);
        assert_int_equal(ack->body->msg_case, HLINK__BODY__MSG_RESULT_ACK);
        assert_true(ack->body->result_ack->accepted);
        assert_int_equal(ack->body->result_ack->n_more, 0);
        link_msg_free(ack);

        /* More than LINK_RESULTS_MAX in one request: refused whole. */
        for (unsigned i = 0; i < LINK_RESULTS_MAX; i++) {
                hlink__signed_result__init(&more[i]);
                more[i].body = bodies[0];
                more[i].signature = (ProtobufCBinaryData) { 64, sigs[1] };
                mp[i] = &more[i];
        }
        res.n_more = LINK_RESULTS_MAX;
        assert_int_equal(error_code(call(&b, false, NULL, NULL)), HLINK__ERROR_CODE__ERR_TOO_LARGE);

        free(res.body.data);
        for (int i = 0; i < 3; i++)
                free(bodies[i].data);
}

/* One batch signature for every result of a request, their own left
 * empty: all judged, and each stored with the batch proof, which shows its
 * body is the worker's. A batch signature that does not verify refuses the
 * request whole, before anything of it is stored. */
static void test_batch_signature(void **state)
{
        char ids[3][LINK_ID_MAX + 1], path[PATH_MAX + 16];
        uint8_t own[64], batch_sig[64];
        ProtobufCBinaryData bodies[3];
        Hlink__Result res = HLINK__RESULT__INIT;
        Hlink__SignedResult more[2], *mp[2];
        Hlink__Body b = HLINK__BODY__INIT;
        LinkIdentity other = {};
        sqlite3 *db;
        sqlite3_stmt *q;

        hello();
        for (int i = 0; i < 3; i++) {
                snprintf(ids[i], sizeof(ids[i]), "bs%d", i);
                submit(ids[i]);
        }
        LinkMsg *w = fetch(3);
        assert_int_equal(w->body->work->n_tasks, 3);
        for (int i = 0; i < 3; i++)
                task_id(w->body->work->tasks[i], ids[i]);
        link_msg_free(w);
        for (int i = 0; i < 3; i++)
                sign_result(ids[i], &bodies[i], own);   /* (their own signatures go unused) */
        res.body = bodies[0];
        for (int i = 0; i < 2; i++) {
                hlink__signed_result__init(&more[i]);
                more[i].body = bodies[i + 1];
                mp[i] = &more[i];
        }
        res.more = mp;
        res.n_more = 2;
        b.msg_case = HLINK__BODY__MSG_RESULT;
        b.result = &res;

        /* signed by another key: refused whole */
        crypto_sign_keypair(other.pk, other.sk);
        assert_int_equal(link_result_batch_sign(&other, bodies, 3, batch_sig), 0);
        res.batch_signature = (ProtobufCBinaryData) { 64, batch_sig };
        assert_int_equal(error_code(call(&b, false, NULL, NULL)), HLINK__ERROR_CODE__ERR_BAD_SIGNATURE);

        assert_int_equal(link_result_batch_sign(&worker, bodies, 3, batch_sig), 0);
        LinkMsg *ack = call(&b, false, NULL, NULL);
        assert_int_equal(ack->body->msg_case, HLINK__BODY__MSG_RESULT_ACK);
        assert_true(ack->body->result_ack->accepted);
        assert_int_equal(ack->body->result_ack->n_more, 2);
        for (int i = 0; i < 2; i++) {
                assert_true(ack->body->result_ack->more[i]->accepted);
                assert_string_equal(ack->body->result_ack->more[i]->task_id, ids[i + 1]);
        }
        link_msg_free(ack);

        /* What the pool kept proves each result is the worker's. */
        snprintf(path, sizeof(path), "%s/pool.db", dir);
        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT body, signature FROM results WHERE task_id LIKE 'bs%'", -1, &q,
                                            NULL), SQLITE_OK);
        int rows = 0;
        while (sqlite3_step(q) == SQLITE_ROW) {
                rows++;
                assert_int_equal(sqlite3_column_bytes(q, 1), 64 + 1 + 3 * 32);
                assert_int_equal(link_result_proof_check(worker.pk, sqlite3_column_blob(q, 0), sqlite3_column_bytes(q, 0),
                                                         sqlite3_column_blob(q, 1), sqlite3_column_bytes(q, 1)), 0);
                assert_int_equal(link_result_proof_check(other.pk, sqlite3_column_blob(q, 0), sqlite3_column_bytes(q, 0),
                                                         sqlite3_column_blob(q, 1), sqlite3_column_bytes(q, 1)),
                                 -EKEYREJECTED);
        }
        assert_int_equal(rows, 3);
        sqlite3_finalize(q);
        sqlite3_close(db);
        for (int i = 0; i < 3; i++)
                free(bodies[i].data);
        sodium_memzero(&other, sizeof(other));
}

/* The CLI submits and cancels while the pool serves many pending tasks:
 * the server reads only the rows it added, it does not rebuild its memory
 * from the whole database (which costs in proportion to the pending
 * tasks). */
static void test_catch_up(void **state)
{
        enum { BULK = 20000 };
        PoolStore *cli = NULL;
        PoolStoreMemStats ms0, ms1;
        char p[PATH_MAX + 32], id[LINK_ID_MAX + 1];
        uint8_t sig[64] = { 1 };

        snprintf(p, sizeof(p), "%s/pool.db", dir);
        assert_int_equal(pool_store_open(p, false, &cli), 0);
        /* Pending tasks no worker here fits (another arch). */
        assert_int_equal(pool_store_begin(cli), 0);
        for (unsigned i = 0; i < BULK; i++) {
                char bid[32];
                snprintf(bid, sizeof(bid), "bulk%u", i);
                PoolTaskNew t = { .id = bid, .kind = HLINK__KIND__KIND_EXEC, .spec = "spec", .spec_len = 4,
                                  .signature = sig, .replicas = 1, .quorum = 1, .need_arch = "riscv64" };
                assert_int_equal(pool_store_add_task(cli, &t, now_usec()), 0);
        }
        assert_int_equal(pool_store_end(cli, 0), 0);

        hello();
        uint64_t t0 = now_usec();
        LinkMsg *m = fetch(16);         /* the one left by test_session */
        uint64_t t_first = now_usec() - t0;
        assert_int_equal(m->body->work->n_tasks, 1);
        assert_string_equal(task_id(m->body->work->tasks[0], id), "s3");
        link_msg_free(m);
        pool_store_mem_stats(store, &ms0);
        assert_true(ms0.tasks >= BULK + 1);

        /* harvest-pool submit and cancel, from their own process. */
        PoolStore *keep = store;
        store = cli;
        submit("late");
        submit("late2");
        store = keep;
        assert_int_equal(pool_store_cancel(cli, "late2", now_usec()), 0);
        pool_store_close(cli);
        usleep(150 * 1000);             /* the server looks every 100 ms */

        t0 = now_usec();
        m = fetch(16);
        uint64_t t_next = now_usec() - t0;
        assert_int_equal(m->body->work->n_tasks, 1);
        assert_string_equal(task_id(m->body->work->tasks[0], id), "late");
        link_msg_free(m);
        pool_store_mem_stats(store, &ms1);
        assert_int_equal(ms1.full_loads, ms0.full_loads);
        assert_int_equal(ms1.catch_ups, ms0.catch_ups + 1);
        assert_int_equal(ms1.rows_caught_up - ms0.rows_caught_up, 3);  /* late, late2, the cancel */
        assert_int_equal(ms1.tasks, ms0.tasks + 1);
        printf("catch-up: %u pending tasks; the fetch that loaded them took %llu us, the one after a submit and "
               "a cancel %llu us (3 rows read, %llu full loads in all)\n", BULK,
               (unsigned long long) t_first, (unsigned long long) t_next, (unsigned long long) ms1.full_loads);
}

/* A hello from a fresh key (keys are free to make): the reply's error code
 * (0: welcome) and, if busy, its retry_after_ms. */
static int hello_fresh(uint32_t *retry_ms)
{
        Hlink__Body b;
        Hlink__Hello h;
        Hlink__Capabilities c;
        LinkIdentity id = {};
        uint8_t kx_pk[32], kx_sk[32];
        void *buf;
        size_t len;

        crypto_sign_keypair(id.pk, id.sk);
        hello_body(&b, &h, &c, kx_pk, kx_sk);
        assert_int_equal(link_encode(&id, &b, NULL, now_usec(), NULL, &buf, &len), 0);
        LinkMsg *m = exchange(buf, len, NULL);     /* signed by the pool either way */
        free(buf);
        int code = m->body->msg_case == HLINK__BODY__MSG_ERROR ? (int) m->body->error->code : 0;
        if (code == HLINK__ERROR_CODE__ERR_BUSY) {
                *retry_ms = m->body->error->retry_after_ms;
                assert_non_null(strstr(m->body->error->message, "hello"));
                assert_int_equal(m->env->reply_to.len, 0);      /* it was not read: no nonce to answer */
        } else
                assert_int_equal(m->body->msg_case, HLINK__BODY__MSG_WELCOME);
        link_msg_free(m);
        sodium_memzero(&id, sizeof(id));
        return code;
}

/* Hellos past the rate are refused before they cost a signature check, a
 * key exchange and a durable write: ERR_BUSY with when to come back; the
 * workers with sessions are served meanwhile, and a hello after the wait
 * is welcomed. */
static void test_hello_rate(void **state)
{
        const char *listen[] = { url };
        PoolServerConfig cfg = { .listen = listen, .n_listen = 1, .contexts = 4, .lease_sec = 60,
                                 .hello_rate = 5, .hello_burst = 5 };
        unsigned welcomed = 0, busy = 0;
        uint32_t retry = 0, max_retry = 0;
        struct timespec t0, t1;

        pool_server_free(srv);
        assert_int_equal(pool_server_new(store, &pool, &cfg, &srv), 0);
        hello();                                        /* our worker: 1 of the 5 */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < 20; i++) {
                int code = hello_fresh(&retry);
                if (code == 0)
                        welcomed++;
                else {
                        assert_int_equal(code, HLINK__ERROR_CODE__ERR_BUSY);
                        busy++;
                        assert_true(retry >= 1);
                        if (retry > max_retry)
                                max_retry = retry;
                }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double secs = (double) (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
        printf("hello rate 5/s, burst 5: %u of 20 fresh hellos in %.3f s welcomed, %u busy (retry after up to %u ms)\n",
               welcomed, secs, busy, max_retry);
        /* the burst less our own, and what the rate refilled meanwhile */
        assert_true(welcomed >= 4);
        assert_true(welcomed <= 4 + (unsigned) (secs * 5) + 1);
        assert_true(busy >= 20 - 4 - (unsigned) (secs * 5) - 1);
        /* at most one token's wait (200 ms) and the second of spread */
        assert_true(max_retry <= 200 + 1000 + 1);

        /* The worker with a session is not held up by the flood. */
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Fetch f = HLINK__FETCH__INIT;
        b.msg_case = HLINK__BODY__MSG_FETCH;
        b.fetch = &f;
        LinkMsg *m = call(&b, false, NULL, NULL);
        assert_int_equal(m->body->msg_case, HLINK__BODY__MSG_WORK);
        link_msg_free(m);

        /* After the wait it asked for, a hello is welcomed. */
        usleep((useconds_t) max_retry * 1000);
        assert_int_equal(hello_fresh(&retry), 0);
        assert_string_equal(link_error_name(HLINK__ERROR_CODE__ERR_BUSY), "busy");   /* the errors.busy counter */

        pool_server_free(srv);
        serve();
        hello();
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_session),
                cmocka_unit_test(test_catch_up),
                cmocka_unit_test(test_batch),
                cmocka_unit_test(test_batch_signature),
                cmocka_unit_test(test_hello_rate),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
