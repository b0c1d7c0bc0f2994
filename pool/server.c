/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The pool's REP side: N contexts, each a small state machine driven by its
 * aio's callback (receive -> handle -> send -> receive), so N requests are
 * in progress at once and a slow one never holds up the rest. The store is
 * the one serialisation point. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <sodium.h>

#include "harvester/macro.h"
#include "net/relay.h"
#include "pool/server.h"

#define N_CODES 12

enum { RECEIVING, COMMITTING, SENDING };

typedef struct Ctx {
        struct PoolServer *server;
        nng_ctx ctx;
        nng_aio *aio;
        int state;
        /* While COMMITTING: the reply, held until its changes are durable. */
        nng_msg *reply;
        uint8_t nonce[LINK_NONCE_BYTES];
        bool has_nonce;
        /* The request's session, for an error reply if the commit fails. */
        LinkSession session;
        bool session_valid;
        struct Ctx *next;
} Ctx;

/* A worker with a session: the keys agreed in its hello, and what matching
 * needs of it. Only in memory: a restarted pool knows nobody, and each
 * worker's next request gets ERR_UNKNOWN_WORKER, so it says hello again. */
typedef struct Peer {
        struct Peer *next;
        uint8_t key[LINK_KEY_BYTES];
        LinkSession session;
        PoolWorkerCaps caps;
        uint64_t last_usec;             /* last request, for dropping idle ones */
} Peer;

struct PoolServer {
        PoolStore *store;
        nng_socket sock;
        nng_tls_config *tls;
        Ctx *ctxs;
        unsigned n_ctxs;
        uint32_t lease_sec;
        nng_aio *tick;

        /* Hellos, a token bucket: each costs a signature check, a key
         * exchange, a signed welcome and a durable write, and keys are
         * free to make, so a flood of them is refused before any of that
         * (ERR_BUSY) instead of crowding out the workers' requests. */
        pthread_mutex_t hello_lock;
        double hello_tokens, hello_rate, hello_burst;
        uint64_t hello_last_usec;

        pthread_mutex_t id_lock;        /* the identity's sequence number */
        LinkIdentity id;

        atomic_uint_fast64_t requests, errors;
        atomic_uint_fast64_t codes[N_CODES];        /* error replies by code, not yet flushed */
        atomic_uint_fast64_t unflushed_requests;

        /* Group commit: handlers queue their replies here; one of them at a
         * time commits everything done so far (one fsync) and sends them. */
        pthread_mutex_t qlock;
        Ctx *queue;
        bool committing;
        atomic_uint_fast64_t commits, committed_replies;

        /* Sessions, by worker key, in a hash table keyed with a secret (a
         * worker picks its key: it must not pick our buckets). */
        pthread_mutex_t peers_lock;
        Peer **buckets;
        size_t n_buckets, n_peers;
        uint8_t hash_key[crypto_shorthash_KEYBYTES];
};

static Peer **peer_slot(PoolServer *s, const uint8_t *key)
{
        uint8_t h[crypto_shorthash_BYTES];
        uint64_t v;
        crypto_shorthash(h, key, LINK_KEY_BYTES, s->hash_key);
        memcpy(&v, h, sizeof(v));
        Peer **p = &s->buckets[v & (s->n_buckets - 1)];
        while (*p && memcmp((*p)->key, key, LINK_KEY_BYTES) != 0)
                p = &(*p)->next;
        return p;
}

static void peers_grow(PoolServer *s)
{
        size_t n = s->n_buckets * 2;
        Peer **nb = calloc(n, sizeof(*nb)), **old = s->buckets;
        size_t old_n = s->n_buckets;
        if (!nb)
                return;         /* longer chains, still correct */
        s->buckets = nb;
        s->n_buckets = n;
        for (size_t i = 0; i < old_n; i++)
                for (Peer *p = old[i], *next; p; p = next) {
                        next = p->next;
                        Peer **slot = peer_slot(s, p->key);
                        p->next = NULL;
                        *slot = p;
                }
        free(old);
}

/* Install (or replace) the session of KEY. */
static int peer_put(PoolServer *s, const uint8_t *key, const LinkSession *session, const PoolWorkerCaps *caps,
                    uint64_t now)
{
        pthread_mutex_lock(&s->peers_lock);
        Peer **slot = peer_slot(s, key), *p = *slot;
        if (!p) {
                p = calloc(1, sizeof(*p));
                if (!p) {
                        pthread_mutex_unlock(&s->peers_lock);
                        return -ENOMEM;
                }
                memcpy(p->key, key, LINK_KEY_BYTES);
                *slot = p;
                if (++s->n_peers > s->n_buckets)
                        peers_grow(s);
        }
        p->session = *session;
        p->caps = *caps;
        p->last_usec = now;
        pthread_mutex_unlock(&s->peers_lock);
        return 0;
}

/* A copy of KEY's session and capabilities: -ENOENT without one. */
static int peer_get(PoolServer *s, const uint8_t *key, LinkSession *ret_session, PoolWorkerCaps *ret_caps)
{
        int r = -ENOENT;
        pthread_mutex_lock(&s->peers_lock);
        Peer *p = *peer_slot(s, key);
        if (p) {
                if (ret_session)
                        *ret_session = p->session;
                if (ret_caps)
                        *ret_caps = p->caps;
                r = 0;
        }
        pthread_mutex_unlock(&s->peers_lock);
        return r;
}

/* After the MAC verified: SEQ must be above the last one in this session.
 * -ENOTCONN if the session was replaced meanwhile (a hello crossed it). */
static int peer_seq(PoolServer *s, const uint8_t *key, const uint8_t *session_id, uint64_t seq, uint64_t now)
{
        int r = -ENOTCONN;
        pthread_mutex_lock(&s->peers_lock);
        Peer *p = *peer_slot(s, key);
        if (p && sodium_memcmp(p->session.id, session_id, LINK_SESSION_ID_BYTES) == 0) {
                r = link_replay_check(&p->session.rx_seq, seq);
                if (r >= 0)
                        p->last_usec = now;
        }
        pthread_mutex_unlock(&s->peers_lock);
        return r;
}

static void peer_drop(PoolServer *s, const uint8_t *key)
{
        pthread_mutex_lock(&s->peers_lock);
        Peer **slot = peer_slot(s, key), *p = *slot;
        if (p) {
                *slot = p->next;
                s->n_peers--;
                sodium_memzero(p, sizeof(*p));
                free(p);
        }
        pthread_mutex_unlock(&s->peers_lock);
}

/* Sessions idle for longer than IDLE_USEC: their workers vanished
 * without a goodbye. Dropped; one that comes back says hello again. */
static void peers_expire(PoolServer *s, uint64_t now, uint64_t idle_usec)
{
        pthread_mutex_lock(&s->peers_lock);
        for (size_t i = 0; i < s->n_buckets; i++)
                for (Peer **slot = &s->buckets[i]; *slot;) {
                        Peer *p = *slot;
                        if (p->last_usec + idle_usec < now) {
                                *slot = p->next;
                                s->n_peers--;
                                sodium_memzero(p, sizeof(*p));
                                free(p);
                        } else
                                slot = &p->next;
                }
        pthread_mutex_unlock(&s->peers_lock);
}

static uint64_t mono_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

static uint64_t now_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

/* Counters go to the store once a second, not once a request: a flood of
 * garbage must not turn into a flood of disk writes. */
static void flush_counters(PoolServer *s)
{
        const char *names[N_CODES + 1];
        uint64_t deltas[N_CODES + 1];
        char buf[N_CODES][48];
        size_t n = 0;

        names[n] = "requests";
        deltas[n++] = atomic_exchange(&s->unflushed_requests, 0);
        for (int c = 1; c < N_CODES; c++) {
                snprintf(buf[c], sizeof(buf[c]), "errors.%s", link_error_name(c));
                names[n] = buf[c];
                deltas[n++] = atomic_exchange(&s->codes[c], 0);
        }
        if (pool_store_count(s->store, names, deltas, n) < 0 || pool_store_commit(s->store) < 0) {
                /* Keep them for the next try. */
                atomic_fetch_add(&s->unflushed_requests, deltas[0]);
                for (int c = 1; c < N_CODES; c++)
                        atomic_fetch_add(&s->codes[c], deltas[c]);
        }
}

static void tick_done(void *arg)
{
        PoolServer *s = arg;
        if (nng_aio_result(s->tick) != 0)
                return;
        flush_counters(s);
        /* Three leases' worth of silence: a live worker renews or reports
         * well within one. */
        peers_expire(s, now_usec(), 3ULL * s->lease_sec * USEC_PER_SEC);
        nng_sleep_aio(1000, s->tick);
}

/* A reply: MACed in the worker's session when the request came in one,
 * signed otherwise (welcomes, and errors to requests without a session). */
static int encode_reply(PoolServer *s, const LinkSession *session, const Hlink__Body *b, const uint8_t *reply_to,
                        nng_msg **ret)
{
        _cleanup_free_ void *buf = NULL;
        size_t len;
        nng_msg *m;
        int r;

        /* The lock covers the identity's sequence number. */
        if (session) {
                pthread_mutex_lock(&s->id_lock);
                r = link_encode_session(&s->id, session, b, reply_to, now_usec(), NULL, &buf, &len);
                pthread_mutex_unlock(&s->id_lock);
        } else {
                pthread_mutex_lock(&s->id_lock);
                r = link_encode(&s->id, b, reply_to, now_usec(), NULL, &buf, &len);
                pthread_mutex_unlock(&s->id_lock);
        }
        if (r < 0)
                return r;
        int rv = nng_msg_alloc(&m, 0);
        if (rv == 0 && (rv = nng_msg_append(m, buf, len)) != 0)
                nng_msg_free(m);
        if (rv != 0)
                return link_nng_errno(rv);
        *ret = m;
        return 0;
}

static int error_reply(PoolServer *s, const LinkSession *session, int code, const char *message,
                       const uint8_t *reply_to, nng_msg **ret)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Error e = HLINK__ERROR__INIT;
        e.code = code;
        e.message = (char *) message;
        b.msg_case = HLINK__BODY__MSG_ERROR;
        b.error = &e;
        atomic_fetch_add(&s->errors, 1);
        if (code > 0 && code < N_CODES)
                atomic_fetch_add(&s->codes[code], 1);
        return encode_reply(s, session, &b, reply_to, ret);
}

static int busy_reply(PoolServer *s, const char *message, uint32_t retry_ms, nng_msg **ret)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Error e = HLINK__ERROR__INIT;
        e.code = HLINK__ERROR_CODE__ERR_BUSY;
        e.message = (char *) message;
        e.retry_after_ms = retry_ms;
        b.msg_case = HLINK__BODY__MSG_ERROR;
        b.error = &e;
        atomic_fetch_add(&s->errors, 1);
        atomic_fetch_add(&s->codes[HLINK__ERROR_CODE__ERR_BUSY], 1);
        return encode_reply(s, NULL, &b, NULL, ret);
}

static int errno_reply(PoolServer *s, const LinkSession *session, int err, const uint8_t *reply_to, nng_msg **ret)
{
        int code;
        switch (err) {
        case -ENOENT:
                code = HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER;
                break;
        default:
                code = link_error_from_errno(err);
        }
        static const char *const why[] = {
                [HLINK__ERROR_CODE__ERR_MALFORMED] = "malformed message",
                [HLINK__ERROR_CODE__ERR_TOO_LARGE] = "a size or count limit was exceeded",
                [HLINK__ERROR_CODE__ERR_VERSION] = "wire format version not supported",
                [HLINK__ERROR_CODE__ERR_BAD_SIGNATURE] = "signature or MAC does not verify",
                [HLINK__ERROR_CODE__ERR_REPLAY] = "sequence number not above the last one seen: replay",
                [HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER] = "unknown worker or session: say hello first",
                [HLINK__ERROR_CODE__ERR_INTERNAL] = "internal error",
        };
        return error_reply(s, session, code,
                           code < (int) ELEMENTSOF(why) && why[code] ? why[code] : strerror(-err), reply_to, ret);
}

/* Lease up to MAX tasks into TASKS (LINK_TASKS_MAX entries); *RET_L keeps
 * what they point into until the reply is encoded. */
static int lease_tasks(PoolServer *s, const uint8_t *key, const PoolWorkerCaps *caps, unsigned max,
                       Hlink__Task *tasks, Hlink__Task **tp, PoolLease **ret_l)
{
        if (max > LINK_TASKS_MAX)
                max = LINK_TASKS_MAX;
        /* Leave room for the framing around the specs. */
        int n = pool_store_lease_caps(s->store, key, caps, max, LINK_MSG_MAX_BYTES - 64 * 1024, now_usec(),
                                      (uint64_t) s->lease_sec * USEC_PER_SEC, ret_l);
        for (int i = 0; i < n; i++) {
                hlink__task__init(&tasks[i]);
                tasks[i].spec = (ProtobufCBinaryData) { (*ret_l)[i].spec_len, (*ret_l)[i].spec };
                tasks[i].signature = (ProtobufCBinaryData) { LINK_SIG_BYTES, (*ret_l)[i].signature };
                tasks[i].lease_expires_usec = (*ret_l)[i].expires_usec;
                tp[i] = &tasks[i];
        }
        return n;
}

static int do_fetch(PoolServer *s, const LinkSession *session, const uint8_t *key, const PoolWorkerCaps *caps,
                    const Hlink__Fetch *f, const uint8_t *nonce, nng_msg **ret)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Work w = HLINK__WORK__INIT;
        Hlink__Task tasks[LINK_TASKS_MAX], *tp[LINK_TASKS_MAX];
        PoolLease *l = NULL;

        int n = lease_tasks(s, key, caps, f->max_tasks ? f->max_tasks : 1, tasks, tp, &l);
        if (n < 0)
                return errno_reply(s, session, n, nonce, ret);
        w.n_tasks = (size_t) n;
        w.tasks = tp;
        w.retry_after_ms = n > 0 ? 0 : 1000;
        b.msg_case = HLINK__BODY__MSG_WORK;
        b.work = &w;
        int r = encode_reply(s, session, &b, nonce, ret);
        pool_leases_free(l, (size_t) n);
        return r;
}

static int do_renew(PoolServer *s, const LinkSession *session, const uint8_t *key, const Hlink__Renew *rn,
                    const uint8_t *nonce, nng_msg **ret)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__RenewReply rr = HLINK__RENEW_REPLY__INIT;
        Hlink__LeaseState ls[LINK_RENEW_MAX], *lp[LINK_RENEW_MAX];
        uint64_t now = now_usec();

        for (size_t i = 0; i < rn->n_task_ids; i++) {
                uint64_t exp = 0;
                hlink__lease_state__init(&ls[i]);
                ls[i].task_id = rn->task_ids[i];
                ls[i].valid = pool_store_renew(s->store, key, rn->task_ids[i], now,
                                               (uint64_t) s->lease_sec * USEC_PER_SEC, &exp) >= 0;
                ls[i].expires_usec = exp;
                lp[i] = &ls[i];
        }
        rr.n_leases = rn->n_task_ids;
        rr.leases = lp;
        b.msg_case = HLINK__BODY__MSG_RENEW_REPLY;
        b.renew_reply = &rr;
        return encode_reply(s, session, &b, nonce, ret);
}

/* A result's body checked: under the request's batch proof (PROOF, when
 * it verified) or against its own signature. */
static int check_result(const uint8_t *key, const ProtobufCBinaryData *body, const ProtobufCBinaryData *sig,
                        const uint8_t *proof, Hlink__ResultBody **ret_body, uint8_t *hash)
{
        Hlink__Result one = HLINK__RESULT__INIT;

        if (proof)
                return link_result_parse(body, ret_body, hash);
        one.body = *body;
        one.signature = *sig;
        return link_result_verify(&one, key, ret_body, hash);
}

/* One of Result.more into its verdict; *RET_BODY (free it after the reply
 * is encoded: the verdict points into it) when it could be read. */
static void more_result(PoolServer *s, const uint8_t *key, const Hlink__SignedResult *sr, const uint8_t *proof,
                        size_t proof_len, Hlink__ResultVerdict *v, Hlink__ResultBody **ret_body)
{
        Hlink__ResultBody *rb = NULL;
        uint8_t hash[LINK_HASH_BYTES];
        const char *reason = "";
        bool accepted = false;

        int r = check_result(key, &sr->body, &sr->signature, proof, &rb, hash);
        if (r < 0) {
                v->error = link_error_from_errno(r);
                v->reason = (char *) (r == -EKEYREJECTED ? "signature does not verify" : "malformed result");
                return;
        }
        *ret_body = rb;
        v->task_id = rb->task_id;
        r = pool_store_add_result(s->store, key, rb, hash, sr->body.data, sr->body.len,
                                  proof ? proof : sr->signature.data, proof_len, now_usec(), &accepted, &reason);
        if (r < 0) {
                v->error = r == -ENOENT ? HLINK__ERROR_CODE__ERR_UNKNOWN_TASK : HLINK__ERROR_CODE__ERR_INTERNAL;
                v->reason = (char *) (r == -ENOENT ? "no such task leased to this worker" : "storage failed");
                return;
        }
        v->accepted = accepted;
        v->reason = (char *) reason;
}

static int do_result(PoolServer *s, const LinkSession *session, const uint8_t *key, const PoolWorkerCaps *caps,
                     const Hlink__Result *res, const uint8_t *nonce, nng_msg **ret)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__ResultAck ack = HLINK__RESULT_ACK__INIT;
        Hlink__ResultBody *rb = NULL;
        Hlink__Task tasks[LINK_TASKS_MAX], *tp[LINK_TASKS_MAX];
        PoolLease *l = NULL;
        uint8_t hash[LINK_HASH_BYTES];
        const char *reason = "";
        bool accepted = false;
        int n = 0;

        /* The worker's own signature over the result, kept with it: end to
         * end, whatever carried it. One batch signature can cover them all
         * (one check instead of one a result); its proof is kept with each. */
        uint8_t proof_buf[LINK_PROOF_MAX];
        size_t proof_len = LINK_SIG_BYTES;     /* a result's own signature, unless a batch proof */
        int r = link_result_batch_verify(res, key, proof_buf, &proof_len);
        if (r < 0)
                return errno_reply(s, session, r, nonce, ret);
        const uint8_t *proof = r > 0 ? proof_buf : NULL;
        r = check_result(key, &res->body, &res->signature, proof, &rb, hash);
        if (r < 0)
                return errno_reply(s, session, r, nonce, ret);
        r = pool_store_add_result(s->store, key, rb, hash, res->body.data, res->body.len,
                                  proof ? proof : res->signature.data, proof_len, now_usec(), &accepted, &reason);
        if (r == -ENOENT) {
                hlink__result_body__free_unpacked(rb, NULL);
                return error_reply(s, session, HLINK__ERROR_CODE__ERR_UNKNOWN_TASK,
                                   "no such task leased to this worker", nonce, ret);
        }
        if (r < 0) {
                hlink__result_body__free_unpacked(rb, NULL);
                return error_reply(s, session, HLINK__ERROR_CODE__ERR_INTERNAL, strerror(-r), nonce, ret);
        }
        /* More results in the same request: each judged on its own, so a
         * bad one costs only itself. */
        Hlink__ResultVerdict verdicts[LINK_RESULTS_MAX - 1], *vp[LINK_RESULTS_MAX - 1];
        Hlink__ResultBody *more[LINK_RESULTS_MAX - 1] = {};
        for (size_t i = 0; i < res->n_more; i++) {
                Hlink__ResultVerdict *v = &verdicts[i];
                hlink__result_verdict__init(v);
                vp[i] = v;
                more_result(s, key, res->more[i], proof, proof_len, v, &more[i]);
        }
        ack.n_more = res->n_more;
        ack.more = vp;
        /* More work in the same reply: one round trip a task. */
        if (res->fetch > 0) {
                n = lease_tasks(s, key, caps, res->fetch, tasks, tp, &l);
                if (n < 0)
                        n = 0;  /* the result stands; the worker asks again */
                ack.n_tasks = (size_t) n;
                ack.tasks = tp;
                ack.retry_after_ms = n > 0 ? 0 : 1000;
        }
        ack.task_id = rb->task_id;
        ack.accepted = accepted;
        ack.reason = (char *) reason;
        b.msg_case = HLINK__BODY__MSG_RESULT_ACK;
        b.result_ack = &ack;
        r = encode_reply(s, session, &b, nonce, ret);
        pool_leases_free(l, (size_t) n);
        hlink__result_body__free_unpacked(rb, NULL);
        for (size_t i = 0; i < res->n_more; i++)
                if (more[i])
                        hlink__result_body__free_unpacked(more[i], NULL);
        return r;
}

/* A signed hello: durable (its sequence number outlives the process, so a
 * replayed hello stays refused after a restart), then a new session. */
static int do_hello(PoolServer *s, LinkMsg *m, uint64_t now, nng_msg **ret)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Welcome w = HLINK__WELCOME__INIT;
        const uint8_t *key = m->env->sender.data, *nonce = m->env->nonce.data;
        const Hlink__Hello *h = m->body->hello;
        LinkSession session;
        PoolWorkerCaps caps;
        uint8_t kx_pk[LINK_KX_BYTES];
        char id[64];

        int r = pool_store_hello(s->store, key, h, m->env->seq, now);
        if (r < 0)
                return errno_reply(s, NULL, r, nonce, ret);
        r = link_session_server(h->kx_public.data, &session, kx_pk);
        if (r < 0)
                return errno_reply(s, NULL, r, nonce, ret);
        pool_worker_caps(h->caps, &caps);
        r = peer_put(s, key, &session, &caps, now);
        sodium_memzero(&session.tx, sizeof(session.tx));
        sodium_memzero(&session.rx, sizeof(session.rx));
        if (r < 0)
                return errno_reply(s, NULL, r, nonce, ret);
        link_key_to_base64(key, id, sizeof(id));
        w.worker_id = id;
        w.lease_sec = s->lease_sec;
        w.pool_time_usec = now;
        w.kx_public = (ProtobufCBinaryData) { LINK_KX_BYTES, kx_pk };
        w.session = (ProtobufCBinaryData) { LINK_SESSION_ID_BYTES, session.id };
        b.msg_case = HLINK__BODY__MSG_WELCOME;
        b.welcome = &w;
        /* Signed, not MACed: it is what binds the session to our key. */
        return encode_reply(s, NULL, &b, nonce, ret);
}

/* Take a hello's token; 0 if there is none, and *RETRY_MS then says when
 * to come back: when the bucket next has one, spread over a second more
 * so that the refused do not all return at once. */
static bool hello_token(PoolServer *s, uint32_t *retry_ms)
{
        uint64_t now = mono_usec();
        bool ok;

        pthread_mutex_lock(&s->hello_lock);
        s->hello_tokens += (double) (now - s->hello_last_usec) / USEC_PER_SEC * s->hello_rate;
        s->hello_last_usec = now;
        if (s->hello_tokens > s->hello_burst)
                s->hello_tokens = s->hello_burst;
        ok = s->hello_tokens >= 1.0;
        if (ok)
                s->hello_tokens -= 1.0;
        else
                *retry_ms = (uint32_t) ((1.0 - s->hello_tokens) / s->hello_rate * 1000.0) + 1 +
                            randombytes_uniform(1000);
        pthread_mutex_unlock(&s->hello_lock);
        return ok;
}

/* One request in, one reply out, always: a REQ peer is never left waiting,
 * whatever it sent. */
static int handle(PoolServer *s, Ctx *c, const void *data, size_t len, nng_msg **ret)
{
        LinkMsg *m = NULL;
        LinkSession session;
        PoolWorkerCaps caps;
        Hlink__Body b = HLINK__BODY__INIT;
        uint64_t now = now_usec();
        int r;

        atomic_fetch_add(&s->requests, 1);
        atomic_fetch_add(&s->unflushed_requests, 1);
        r = link_decode_frame(data, len, &m);
        if (r < 0)
                return errno_reply(s, NULL, r, NULL, ret);

        const uint8_t *key = m->env->sender.data, *nonce = m->env->nonce.data;
        uint32_t retry_ms;
        /* A signed request can only be a hello (its body is read once its
         * signature checks, so every signed one counts). */
        if (link_msg_signed(m) && !hello_token(s, &retry_ms)) {
                /* (Not verified yet: nothing in it is authentic.) */
                r = busy_reply(s, "too many hellos at once: say hello again later", retry_ms, ret);
                goto out;
        }
        if (link_msg_signed(m)) {
                r = link_msg_open(m, NULL);
                if (r < 0) {
                        /* Nothing in it is authentic: not even its nonce. */
                        r = errno_reply(s, NULL, r, NULL, ret);
                        goto out;
                }
                if (m->body->msg_case != HLINK__BODY__MSG_HELLO) {
                        /* Everything but a hello travels in a session. */
                        r = errno_reply(s, NULL, -ENOTCONN, nonce, ret);
                        goto out;
                }
        } else {
                /* A MAC is checked under the session the pool holds for
                 * this sender; no session (we restarted, or it never said
                 * hello) or another one: say hello. */
                bool known = peer_get(s, key, &session, &caps) >= 0;
                r = link_msg_open(m, known ? &session : NULL);
                if (r >= 0)
                        r = peer_seq(s, key, m->env->session.data, m->env->seq, now);
                if (r < 0) {
                        r = errno_reply(s, NULL, r, r == -EKEYREJECTED ? NULL : nonce, ret);
                        goto out;
                }
                if (m->body->msg_case == HLINK__BODY__MSG_HELLO) {
                        r = error_reply(s, &session, HLINK__ERROR_CODE__ERR_UNEXPECTED, "a hello must be signed",
                                        nonce, ret);
                        goto out;
                }
        }
        memcpy(c->nonce, nonce, LINK_NONCE_BYTES);
        c->has_nonce = true;
        /* Each store call below is its own savepoint in the group; the
         * reply waits for the next group commit, which covers them
         * all (no transaction around the request: that cost two more
         * statements and a longer hold of the store's lock). */
        switch (m->body->msg_case) {
        case HLINK__BODY__MSG_HELLO:
                r = do_hello(s, m, now, ret);
                break;
        case HLINK__BODY__MSG_FETCH:
                r = do_fetch(s, &session, key, &caps, m->body->fetch, nonce, ret);
                break;
        case HLINK__BODY__MSG_RENEW:
                r = do_renew(s, &session, key, m->body->renew, nonce, ret);
                break;
        case HLINK__BODY__MSG_RESULT:
                r = do_result(s, &session, key, &caps, m->body->result, nonce, ret);
                break;
        case HLINK__BODY__MSG_GOODBYE: {
                Hlink__Goodbye g = HLINK__GOODBYE__INIT;
                pool_store_release(s->store, key, now);
                g.reason = "";
                b.msg_case = HLINK__BODY__MSG_GOODBYE;
                b.goodbye = &g;
                r = encode_reply(s, &session, &b, nonce, ret);
                peer_drop(s, key);
                break;
        }
        default:
                r = error_reply(s, &session, HLINK__ERROR_CODE__ERR_UNEXPECTED, "not a request", nonce, ret);
        }
        /* Durable only once the group commit covering it is done: it holds the
         * reply until then. */
out:
        if (link_msg_signed(m) || !c->has_nonce)
                c->session_valid = false;
        else {
                c->session = session;
                c->session_valid = true;
        }
        sodium_memzero(&session, sizeof(session));
        link_msg_free(m);
        return r;
}

/* Every reply queued before this commit began answers a request whose
 * changes the commit covers: send them once it succeeded, or turn them
 * into errors if it failed (their changes are gone). */
static void commit_and_send(PoolServer *s, Ctx *list)
{
        int r = pool_store_commit(s->store);
        atomic_fetch_add(&s->commits, 1);
        for (Ctx *c = list, *next; c; c = next) {
                next = c->next;
                nng_msg *reply = TAKE_PTR(c->reply);
                if (r < 0) {
                        nng_msg_free(reply);
                        reply = NULL;
                        if (error_reply(s, c->session_valid ? &c->session : NULL, HLINK__ERROR_CODE__ERR_INTERNAL,
                                        "storage failed", c->nonce, &reply) < 0)
                                reply = NULL;
                }
                if (!reply) {
                        /* Not even an error reply: the peer's timeout covers it. */
                        c->state = RECEIVING;
                        nng_ctx_recv(c->ctx, c->aio);
                        continue;
                }
                atomic_fetch_add(&s->committed_replies, 1);
                c->state = SENDING;
                nng_aio_set_msg(c->aio, reply);
                nng_ctx_send(c->ctx, c->aio);
        }
}

static void ctx_done(void *arg)
{
        Ctx *c = arg;
        PoolServer *s = c->server;
        int rv = nng_aio_result(c->aio);

        if (c->state == SENDING) {
                if (rv != 0)
                        nng_msg_free(nng_aio_get_msg(c->aio));
                c->state = RECEIVING;
                nng_ctx_recv(c->ctx, c->aio);
                return;
        }
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
                return;
        if (rv != 0) {
                nng_ctx_recv(c->ctx, c->aio);
                return;
        }
        nng_msg *req = nng_aio_get_msg(c->aio), *reply = NULL;
        c->has_nonce = false;
        int r = handle(s, c, nng_msg_body(req), nng_msg_len(req), &reply);
        nng_msg_free(req);
        if (r < 0 || !reply) {
                /* Could not even build an error reply (out of memory):
                 * drop it; the peer's timeout covers it. */
                nng_ctx_recv(c->ctx, c->aio);
                return;
        }
        if (!c->has_nonce) {
                /* Refused before touching the store: nothing to wait for. */
                c->state = SENDING;
                nng_aio_set_msg(c->aio, reply);
                nng_ctx_send(c->ctx, c->aio);
                return;
        }
        c->state = COMMITTING;
        c->reply = reply;
        /* Group commit without a thread of its own: the first handler to
         * find no commit running runs them, for its own reply and for every
         * one queued meanwhile, until the queue is empty; the others only
         * queue theirs. One thread wake-up less per request, which on this
         * machine (a VM where a context switch costs tens of us) was most
         * of a lone worker's round trip. Only one of NNG's threads at a
         * time waits for the disk. */
        pthread_mutex_lock(&s->qlock);
        c->next = s->queue;
        s->queue = c;
        if (s->committing) {
                pthread_mutex_unlock(&s->qlock);
                return;
        }
        s->committing = true;
        while (s->queue) {
                Ctx *list = s->queue;
                s->queue = NULL;
                pthread_mutex_unlock(&s->qlock);
                commit_and_send(s, list);
                pthread_mutex_lock(&s->qlock);
        }
        s->committing = false;
        pthread_mutex_unlock(&s->qlock);
}

int pool_server_new(PoolStore *store, const LinkIdentity *id, const PoolServerConfig *cfg, PoolServer **ret)
{
        int r, rv;
        /* Requests allocate and free on NNG's threads, each with its own
         * malloc arena; glibc gives freed arena tops back to the kernel with
         * madvise(), and each of those flushes every CPU's TLB: measured at
         * 6 % of the pool's time under load. The server owns its process,
         * so keep freed memory for the next request instead. */
        mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
        PoolServer *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->store = store;
        s->id = *id;
        s->lease_sec = cfg->lease_sec ? cfg->lease_sec : 300;
        s->hello_rate = cfg->hello_rate ? cfg->hello_rate : POOL_HELLO_RATE;
        s->hello_burst = cfg->hello_burst         ? cfg->hello_burst
                         : s->hello_rate > POOL_HELLO_BURST ? s->hello_rate
                                                            : POOL_HELLO_BURST;
        s->hello_tokens = s->hello_burst;
        s->hello_last_usec = mono_usec();
        pthread_mutex_init(&s->hello_lock, NULL);
        s->n_ctxs = cfg->contexts ? cfg->contexts : 64;
        pthread_mutex_init(&s->id_lock, NULL);
        pthread_mutex_init(&s->qlock, NULL);
        pthread_mutex_init(&s->peers_lock, NULL);
        randombytes_buf(s->hash_key, sizeof(s->hash_key));
        s->n_buckets = 1024;
        s->buckets = calloc(s->n_buckets, sizeof(*s->buckets));
        if (!s->buckets) {
                free(s);
                return -ENOMEM;
        }

        if ((rv = nng_rep0_open(&s->sock)) != 0) {
                free(s->buckets);
                free(s);
                return link_nng_errno(rv);
        }
        /* Twice the message limit: a request over the limit but under this
         * still gets an ERR_TOO_LARGE reply; beyond, NNG drops the peer. */
        nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, 2 * LINK_MSG_MAX_BYTES);
        s->ctxs = calloc(s->n_ctxs, sizeof(*s->ctxs));
        if (!s->ctxs) {
                r = -ENOMEM;
                goto fail;
        }
        for (unsigned i = 0; i < s->n_ctxs; i++) {
                Ctx *c = &s->ctxs[i];
                c->server = s;
                if ((rv = nng_aio_alloc(&c->aio, ctx_done, c)) != 0 || (rv = nng_ctx_open(&c->ctx, s->sock)) != 0) {
                        r = link_nng_errno(rv);
                        goto fail;
                }
        }
        for (size_t i = 0; i < cfg->n_listen; i++) {
                if (!strncmp(cfg->listen[i], "tls+", 4) && !s->tls && (r = link_server_tls(cfg->tls_cert_key_file, &s->tls)) < 0)
                        goto fail;
                r = link_listen(s->sock, cfg->listen[i], !strncmp(cfg->listen[i], "tls+", 4) ? s->tls : NULL);
                if (r < 0)
                        goto fail;
        }
        pool_store_set_group(store, true);
        for (unsigned i = 0; i < s->n_ctxs; i++) {
                s->ctxs[i].state = RECEIVING;
                nng_ctx_recv(s->ctxs[i].ctx, s->ctxs[i].aio);
        }
        if ((rv = nng_aio_alloc(&s->tick, tick_done, s)) == 0)
                nng_sleep_aio(1000, s->tick);
        *ret = s;
        return 0;
fail:
        pool_server_free(s);
        return r;
}

void pool_server_free(PoolServer *s)
{
        if (!s)
                return;
        if (s->tick) {
                nng_aio_stop(s->tick);
                nng_aio_free(s->tick);
        }
        for (unsigned i = 0; s->ctxs && i < s->n_ctxs; i++)
                if (s->ctxs[i].aio)
                        nng_aio_stop(s->ctxs[i].aio);
        /* No handler runs any more (a committing one drained the queue
         * before it returned): leaving group mode commits what is left. */
        pool_store_set_group(s->store, false);
        nng_close(s->sock);
        for (unsigned i = 0; s->ctxs && i < s->n_ctxs; i++)
                if (s->ctxs[i].aio)
                        nng_aio_free(s->ctxs[i].aio);
        if (s->tls)
                nng_tls_config_free(s->tls);
        flush_counters(s);
        for (size_t i = 0; i < s->n_buckets; i++)
                for (Peer *p = s->buckets[i], *next; p; p = next) {
                        next = p->next;
                        sodium_memzero(p, sizeof(*p));
                        free(p);
                }
        free(s->buckets);
        for (unsigned i = 0; s->ctxs && i < s->n_ctxs; i++)
                sodium_memzero(&s->ctxs[i].session, sizeof(s->ctxs[i].session));
        free(s->ctxs);
        pthread_mutex_destroy(&s->id_lock);
        pthread_mutex_destroy(&s->qlock);
        pthread_mutex_destroy(&s->peers_lock);
        pthread_mutex_destroy(&s->hello_lock);
        sodium_memzero(&s->id, sizeof(s->id));
        free(s);
}

void pool_server_stats(PoolServer *s, uint64_t *ret_requests, uint64_t *ret_errors, uint64_t *ret_commits)
{
        *ret_requests = atomic_load(&s->requests);
        *ret_errors = atomic_load(&s->errors);
        if (ret_commits)
                *ret_commits = atomic_load(&s->commits);
}
