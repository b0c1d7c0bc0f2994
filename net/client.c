/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The worker's end of the link: one REQ context, one request in flight,
 * completions handed to the caller's thread through an eventfd. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <sodium.h>

#include "harvester/macro.h"
#include "net/link.h"

enum { IDLE, SENDING, RECEIVING, DONE };

struct LinkClient {
        nng_socket sock;
        nng_ctx ctx;
        nng_dialer dialer;
        nng_aio *aio;
        nng_tls_config *tls;
        LinkIdentity id;
        uint8_t pool_pk[LINK_KEY_BYTES];
        uint64_t pool_seq;              /* last sequence number seen from the pool */
        uint32_t timeout_ms;
        int efd;

        /* Only the caller's thread touches these (submit and dispatch). */
        LinkSession session;
        bool has_session;
        bool hello_in_flight;           /* kx_* belong to the request in flight */
        uint8_t kx_pk[LINK_KX_BYTES], kx_sk[LINK_KX_BYTES];

        pthread_mutex_t lock;           /* guards the fields below: NNG's thread and ours */
        int state;
        int error;
        nng_msg *reply;
        uint8_t nonce[LINK_NONCE_BYTES];
        LinkReplyFn fn;
        void *userdata;
};

/* NNG's error numbers are not errno values; the ones a caller acts on. */
int link_nng_errno(int e)
{
        switch (e) {
        case 0:
                return 0;
        case NNG_ETIMEDOUT:
                return -ETIMEDOUT;
        case NNG_ECONNREFUSED:
                return -ECONNREFUSED;
        case NNG_ECONNRESET:
        case NNG_ECONNSHUT:
                return -ECONNRESET;
        case NNG_ECLOSED:
        case NNG_ECANCELED:
                return -ECANCELED;
        case NNG_ENOMEM:
                return -ENOMEM;
        case NNG_EINVAL:
        case NNG_EADDRINVAL:
                return -EINVAL;
        case NNG_EMSGSIZE:
                return -EMSGSIZE;
        case NNG_ENOTSUP:
                return -EOPNOTSUPP;
        case NNG_EPEERAUTH:
        case NNG_ECRYPTO:
                return -EKEYREJECTED;
        case NNG_ENOENT:
                return -ENOENT;
        case NNG_EBUSY:
                return -EBUSY;
        case NNG_EADDRINUSE:
                return -EADDRINUSE;
        default:
                if (e & NNG_ESYSERR)
                        return -(e & ~NNG_ESYSERR);
                return -EIO;
        }
}

static uint64_t now_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

static void complete(LinkClient *c, int error, nng_msg *reply)
{
        uint64_t one = 1;
        pthread_mutex_lock(&c->lock);
        c->error = error;
        c->reply = reply;
        c->state = DONE;
        pthread_mutex_unlock(&c->lock);
        /* An eventfd write of 1 cannot fail short of a counter overflow. */
        (void) !write(c->efd, &one, sizeof(one));
}

/* Runs on an NNG thread: only moves the request along and signals. */
static void aio_done(void *arg)
{
        LinkClient *c = arg;
        int rv = nng_aio_result(c->aio), state;

        pthread_mutex_lock(&c->lock);
        state = c->state;
        pthread_mutex_unlock(&c->lock);

        if (state == SENDING) {
                if (rv != 0) {
                        nng_msg_free(nng_aio_get_msg(c->aio));
                        complete(c, link_nng_errno(rv), NULL);
                        return;
                }
                pthread_mutex_lock(&c->lock);
                c->state = RECEIVING;
                pthread_mutex_unlock(&c->lock);
                nng_ctx_recv(c->ctx, c->aio);
        } else if (state == RECEIVING)
                complete(c, link_nng_errno(rv), rv == 0 ? nng_aio_get_msg(c->aio) : NULL);
}

int link_client_new(const LinkClientConfig *cfg, LinkClient **ret)
{
        int r, rv;
        if (!cfg || !cfg->url || !cfg->state_dir)
                return -EINVAL;
        r = link_init();
        if (r < 0)
                return r;

        LinkClient *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->efd = -1;
        pthread_mutex_init(&c->lock, NULL);
        memcpy(c->pool_pk, cfg->pool_key, LINK_KEY_BYTES);
        c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 10000;

        r = link_identity_worker(cfg->state_dir, &c->id);
        if (r < 0)
                goto fail;
        c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (c->efd < 0) {
                r = negative_errno();
                goto fail;
        }
        if ((rv = nng_req0_open(&c->sock)) != 0) {
                r = link_nng_errno(rv);
                goto fail;
        }
        /* Retries are ours, with a fresh sequence number each: NNG resending
         * the same bytes would be refused by the pool as a replay. */
        nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
        nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, LINK_MSG_MAX_BYTES + 64);
        nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 100);
        nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 30000);
        if ((rv = nng_ctx_open(&c->ctx, c->sock)) != 0 ||
            (rv = nng_aio_alloc(&c->aio, aio_done, c)) != 0 ||
            (rv = nng_dialer_create(&c->dialer, c->sock, cfg->url)) != 0) {
                r = link_nng_errno(rv);
                goto fail;
        }
        if (!strncmp(cfg->url, "tls+", 4)) {
                if (!cfg->tls_ca_file) {
                        r = -EINVAL;
                        goto fail;
                }
                if ((rv = nng_tls_config_alloc(&c->tls, NNG_TLS_MODE_CLIENT)) != 0 ||
                    (rv = nng_tls_config_auth_mode(c->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
                    (rv = nng_tls_config_ca_file(c->tls, cfg->tls_ca_file)) != 0 ||
                    (cfg->tls_server_name && (rv = nng_tls_config_server_name(c->tls, cfg->tls_server_name)) != 0) ||
                    (rv = nng_dialer_set_ptr(c->dialer, NNG_OPT_TLS_CONFIG, c->tls)) != 0) {
                        r = link_nng_errno(rv);
                        goto fail;
                }
        }
        /* Non-blocking: a pool that is down now is reached when it is back. */
        if ((rv = nng_dialer_start(c->dialer, NNG_FLAG_NONBLOCK)) != 0) {
                r = link_nng_errno(rv);
                goto fail;
        }
        *ret = c;
        return 0;
fail:
        link_client_free(c);
        return r;
}

void link_client_free(LinkClient *c)
{
        if (!c)
                return;
        if (c->aio) {
                nng_aio_stop(c->aio);
                nng_aio_free(c->aio);
        }
        nng_close(c->sock);
        if (c->tls)
                nng_tls_config_free(c->tls);
        if (c->reply)
                nng_msg_free(c->reply);
        if (c->efd >= 0)
                close(c->efd);
        pthread_mutex_destroy(&c->lock);
        sodium_memzero(&c->id, sizeof(c->id));
        sodium_memzero(&c->session, sizeof(c->session));
        sodium_memzero(c->kx_sk, sizeof(c->kx_sk));
        free(c);
}

const uint8_t *link_client_key(const LinkClient *c)
{
        return c->id.pk;
}

int link_client_fd(const LinkClient *c)
{
        return c->efd;
}

int link_client_submit(LinkClient *c, const Hlink__Body *req, LinkReplyFn fn, void *userdata)
{
        _cleanup_free_ void *buf = NULL;
        nng_msg *m = NULL;
        size_t len;
        uint8_t nonce[LINK_NONCE_BYTES];
        int r, rv;

        pthread_mutex_lock(&c->lock);
        r = c->state == IDLE ? 0 : -EBUSY;
        pthread_mutex_unlock(&c->lock);
        if (r < 0)
                return r;

        if (req->msg_case == HLINK__BODY__MSG_HELLO) {
                /* A fresh key exchange with every hello: the pool's answer
                 * makes a new session, whatever happened to the last one. */
                Hlink__Body b = *req;
                Hlink__Hello h = *req->hello;
                r = link_kx_keypair(c->kx_pk, c->kx_sk);
                if (r < 0)
                        return r;
                h.kx_public = (ProtobufCBinaryData) { LINK_KX_BYTES, c->kx_pk };
                b.hello = &h;
                r = link_encode(&c->id, &b, NULL, now_usec(), nonce, &buf, &len);
                c->hello_in_flight = true;
        } else if (c->has_session) {
                r = link_encode_session(&c->id, &c->session, req, NULL, now_usec(), nonce, &buf, &len);
                c->hello_in_flight = false;
        } else {
                /* No session: the pool will ask for a hello, in a reply
                 * signed by its pinned key. */
                r = link_encode(&c->id, req, NULL, now_usec(), nonce, &buf, &len);
                c->hello_in_flight = false;
        }
        if (r < 0)
                return r;
        if ((rv = nng_msg_alloc(&m, 0)) != 0 || (rv = nng_msg_append(m, buf, len)) != 0) {
                nng_msg_free(m);
                return link_nng_errno(rv);
        }
        pthread_mutex_lock(&c->lock);
        memcpy(c->nonce, nonce, sizeof(nonce));
        c->fn = fn;
        c->userdata = userdata;
        c->state = SENDING;
        pthread_mutex_unlock(&c->lock);
        nng_aio_set_msg(c->aio, m);
        nng_aio_set_timeout(c->aio, (nng_duration) c->timeout_ms);
        nng_ctx_send(c->ctx, c->aio);
        return 0;
}

/* Everything a reply must be before it is handed out. */
static int check_reply(LinkClient *c, nng_msg *m, const uint8_t *nonce, LinkMsg **ret)
{
        LinkMsg *msg = NULL;
        int r = link_decode_frame(nng_msg_body(m), nng_msg_len(m), &msg);
        if (r < 0)
                return r;
        /* From the pool: signed by its pinned key, or MACed in our session
         * (whose keys only the pool that welcomed us holds). */
        if (sodium_memcmp(msg->env->sender.data, c->pool_pk, LINK_KEY_BYTES) != 0)
                r = -EKEYREJECTED;
        else
                r = link_msg_open(msg, c->has_session ? &c->session : NULL);
        /* An error reply to a request the pool could not read carries no
         * reply_to; anything else must answer this request. */
        if (r >= 0)
                r = msg->env->reply_to.len == 0 ? (msg->body->msg_case != HLINK__BODY__MSG_ERROR ? -ESTALE : 0)
                                                : (sodium_memcmp(msg->env->reply_to.data, nonce, LINK_NONCE_BYTES) != 0
                                                           ? -ESTALE : 0);
        if (r >= 0)
                r = link_replay_check(&c->pool_seq, msg->env->seq);
        if (r >= 0 && msg->body->msg_case == HLINK__BODY__MSG_WELCOME) {
                /* Only a signed welcome to our own hello makes a session. */
                if (!c->hello_in_flight || !link_msg_signed(msg))
                        r = -EPROTO;
                else {
                        LinkSession s;
                        r = link_session_client(c->kx_pk, c->kx_sk, msg->body->welcome, &s);
                        if (r >= 0) {
                                c->session = s;
                                c->has_session = true;
                                sodium_memzero(&s, sizeof(s));
                        }
                }
        }
        /* The pool forgot us (restarted, or never knew us): the session is
         * gone with it; the caller says hello again. */
        if (r >= 0 && msg->body->msg_case == HLINK__BODY__MSG_ERROR &&
            msg->body->error->code == HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER)
                c->has_session = false;
        if (c->hello_in_flight) {
                sodium_memzero(c->kx_sk, sizeof(c->kx_sk));
                c->hello_in_flight = false;
        }
        if (r < 0) {
                link_msg_free(msg);
                return r;
        }
        *ret = msg;
        return 0;
}

int link_client_dispatch(LinkClient *c)
{
        uint64_t n;
        uint8_t nonce[LINK_NONCE_BYTES];
        LinkMsg *msg = NULL;

        (void) !read(c->efd, &n, sizeof(n));
        pthread_mutex_lock(&c->lock);
        if (c->state != DONE) {
                pthread_mutex_unlock(&c->lock);
                return 0;
        }
        int error = c->error;
        nng_msg *m = TAKE_PTR(c->reply);
        LinkReplyFn fn = c->fn;
        void *userdata = c->userdata;
        memcpy(nonce, c->nonce, sizeof(nonce));
        c->state = IDLE;
        pthread_mutex_unlock(&c->lock);

        if (error == 0)
                error = check_reply(c, m, nonce, &msg);
        if (m)
                nng_msg_free(m);
        if (fn)
                fn(c, error, msg, userdata);
        else
                link_msg_free(msg);
        return 1;
}

struct call_state {
        bool done;
        int error;
        LinkMsg *reply;
};

static void call_done(LinkClient *c, int error, LinkMsg *reply, void *userdata)
{
        struct call_state *s = userdata;
        s->done = true;
        s->error = error;
        s->reply = reply;
}

int link_client_call(LinkClient *c, const Hlink__Body *req, LinkMsg **ret, int *ret_error_code)
{
        struct call_state s = {};
        int r = link_client_submit(c, req, call_done, &s);
        if (r < 0)
                return r;
        while (!s.done) {
                struct pollfd p = { .fd = c->efd, .events = POLLIN };
                if (poll(&p, 1, -1) < 0 && errno != EINTR)
                        return negative_errno();
                link_client_dispatch(c);
        }
        if (s.error < 0)
                return s.error;
        if (s.reply->body->msg_case == HLINK__BODY__MSG_ERROR) {
                if (ret_error_code)
                        *ret_error_code = s.reply->body->error->code;
                link_msg_free(s.reply);
                return -EPROTO;
        }
        *ret = s.reply;
        return 0;
}

/* A call whose reply must be of type WANT. */
static int call_expect(LinkClient *c, const Hlink__Body *req, Hlink__Body__MsgCase want, LinkMsg **ret)
{
        LinkMsg *m = NULL;
        int code = 0;
        int r = link_client_call(c, req, &m, &code);
        if (r == -EPROTO)
                return link_errno_from_error(code);
        if (r < 0)
                return r;
        if (m->body->msg_case != want) {
                link_msg_free(m);
                return -EPROTO;
        }
        *ret = m;
        return 0;
}

int link_client_hello(LinkClient *c, const Hlink__Capabilities *caps, const char *agent,
                      uint32_t *ret_lease_sec)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Hello h = HLINK__HELLO__INIT;
        LinkMsg *m = NULL;
        h.caps = (Hlink__Capabilities *) caps;
        h.agent = (char *) (agent ? agent : "");
        b.msg_case = HLINK__BODY__MSG_HELLO;
        b.hello = &h;
        int r = call_expect(c, &b, HLINK__BODY__MSG_WELCOME, &m);
        if (r < 0)
                return r;
        if (ret_lease_sec)
                *ret_lease_sec = m->body->welcome->lease_sec;
        link_msg_free(m);
        return 0;
}

void link_tasks_free(LinkTask *t, size_t n)
{
        if (!t)
                return;
        for (size_t i = 0; i < n; i++)
                if (t[i].spec)
                        hlink__task_spec__free_unpacked(t[i].spec, NULL);
        free(t);
}

/* Verify TASKS against the pinned key: the ones that pass, and how many
 * did not. */
static int take_tasks(LinkClient *c, size_t n_tasks, Hlink__Task *const *tasks, LinkTask **ret, unsigned *ret_forged)
{
        unsigned forged = 0;
        size_t n = 0;
        LinkTask *t = calloc(n_tasks + 1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        for (size_t i = 0; i < n_tasks; i++) {
                /* Refused here, before the caller can run any of it. */
                if (link_task_verify(tasks[i], c->pool_pk, &t[n].spec, t[n].spec_sha256) < 0) {
                        forged++;
                        continue;
                }
                t[n].lease_expires_usec = tasks[i]->lease_expires_usec;
                n++;
        }
        if (ret_forged)
                *ret_forged = forged;
        *ret = t;
        return (int) n;
}

int link_client_fetch(LinkClient *c, unsigned max, LinkTask **ret, unsigned *ret_forged)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Fetch f = HLINK__FETCH__INIT;
        LinkMsg *m = NULL;

        f.max_tasks = max > LINK_TASKS_MAX ? LINK_TASKS_MAX : max;
        b.msg_case = HLINK__BODY__MSG_FETCH;
        b.fetch = &f;
        int r = call_expect(c, &b, HLINK__BODY__MSG_WORK, &m);
        if (r < 0)
                return r;
        r = take_tasks(c, m->body->work->n_tasks, m->body->work->tasks, ret, ret_forged);
        link_msg_free(m);
        return r;
}

int link_client_renew(LinkClient *c, const char *const *task_ids, size_t n, bool *ret_valid)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Renew rn = HLINK__RENEW__INIT;
        LinkMsg *m = NULL;

        if (n > LINK_RENEW_MAX)
                return -EMSGSIZE;
        rn.n_task_ids = n;
        rn.task_ids = (char **) task_ids;
        b.msg_case = HLINK__BODY__MSG_RENEW;
        b.renew = &rn;
        int r = call_expect(c, &b, HLINK__BODY__MSG_RENEW_REPLY, &m);
        if (r < 0)
                return r;
        if (ret_valid)
                for (size_t i = 0; i < n; i++) {
                        ret_valid[i] = false;
                        for (size_t j = 0; j < m->body->renew_reply->n_leases; j++) {
                                const Hlink__LeaseState *l = m->body->renew_reply->leases[j];
                                if (!strcmp(l->task_id, task_ids[i]))
                                        ret_valid[i] = l->valid;
                        }
                }
        link_msg_free(m);
        return 0;
}

int link_client_sign_result(LinkClient *c, Hlink__ResultBody *body, void **ret_body, size_t *ret_body_len,
                            uint8_t ret_sig[LINK_SIG_BYTES])
{
        return link_result_sign(&c->id, body, ret_body, ret_body_len, ret_sig);
}

int link_client_sign_batch(LinkClient *c, const ProtobufCBinaryData *bodies, const ProtobufCBinaryData *sigs,
                           size_t n, uint8_t ret_sig[LINK_SIG_BYTES])
{
        /* Only what already carries our own signature: a batch signature
         * made now over bytes read back from disk must not vouch for any
         * that changed since they were signed. */
        for (size_t i = 0; i < n; i++)
                if (link_result_proof_check(c->id.pk, bodies[i].data, bodies[i].len, sigs[i].data, sigs[i].len) < 0)
                        return -EKEYREJECTED;
        return link_result_batch_sign(&c->id, bodies, n, ret_sig);
}

int link_client_send_result_fetch(LinkClient *c, Hlink__ResultBody *body, unsigned max, bool *ret_accepted,
                                  LinkTask **ret, unsigned *ret_forged)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Result res = HLINK__RESULT__INIT;
        _cleanup_free_ void *rb = NULL;
        uint8_t sig[LINK_SIG_BYTES];
        size_t len;
        LinkMsg *m = NULL;

        int r = link_result_sign(&c->id, body, &rb, &len, sig);
        if (r < 0)
                return r;
        res.body = (ProtobufCBinaryData) { len, rb };
        res.signature = (ProtobufCBinaryData) { sizeof(sig), sig };
        res.fetch = max > LINK_TASKS_MAX ? LINK_TASKS_MAX : max;
        b.msg_case = HLINK__BODY__MSG_RESULT;
        b.result = &res;
        r = call_expect(c, &b, HLINK__BODY__MSG_RESULT_ACK, &m);
        if (r < 0)
                return r;
        const Hlink__ResultAck *ack = m->body->result_ack;
        if (ret)
                r = take_tasks(c, ack->n_tasks, ack->tasks, ret, ret_forged);
        else
                r = 0;
        if (r >= 0 && ret_accepted)
                *ret_accepted = ack->accepted;
        link_msg_free(m);
        return r;
}

int link_client_send_result(LinkClient *c, Hlink__ResultBody *body, bool *ret_accepted)
{
        return link_client_send_result_fetch(c, body, 0, ret_accepted, NULL, NULL);
}

bool link_client_has_session(const LinkClient *c)
{
        return c->has_session;
}

int link_client_goodbye(LinkClient *c, const char *reason)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Goodbye g = HLINK__GOODBYE__INIT;
        LinkMsg *m = NULL;
        g.reason = (char *) (reason ? reason : "");
        b.msg_case = HLINK__BODY__MSG_GOODBYE;
        b.goodbye = &g;
        int r = call_expect(c, &b, HLINK__BODY__MSG_GOODBYE, &m);
        if (r < 0)
                return r;
        link_msg_free(m);
        return 0;
}
