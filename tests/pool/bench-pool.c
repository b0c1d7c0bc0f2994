/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * make bench-pool: task dispatch plus result round trips per second on
 * loopback, with durable storage (SQLite WAL, synchronous=FULL), for 1, 10,
 * 100 and 1000 concurrent simulated workers, and the pool's memory per
 * connected worker.
 *
 * The pool server (pool/server.c) runs in this process on its own NNG
 * threads. Real workers run on other machines; here they share the pool's
 * 2 cores, so by default they are lean: raw NNG REQ contexts driven by aio
 * callbacks that sign what they send (envelopes, the result) as real
 * workers must, but do not verify the pool's replies, which costs real
 * workers their own CPU, not the pool's. With --client they are net/'s
 * full asynchronous clients instead (every reply and task verified), all
 * driven from one epoll loop the way harvesterd's sd-event loop would
 * drive its one client.
 *
 * One round trip = fetch one task + send its signed result + its ack.
 * Prints one line per worker count:
 *   workers W: N round-trips/s
 * usage: bench-pool [--client] [SECONDS_PER_LEVEL] [LEVELS...]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>
#include <stdatomic.h>

#include "harvester/macro.h"
#include "net/link.h"
#include "pool/server.h"
#include "pool/store.h"

typedef struct Worker {
        LinkClient *c;
        int phase;              /* 0 hello, 1 fetch, 2 result */
        Hlink__TaskSpec *task;
        uint8_t spec_sha[LINK_HASH_BYTES];
} Worker;

static uint8_t pool_pk[LINK_KEY_BYTES];
static uint64_t round_trips, failures;
static bool stopping;           /* draining: no next request */

static uint64_t mono_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

static uint64_t cpu_usec(void)
{
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (uint64_t) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * USEC_PER_SEC +
               (uint64_t) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static long rss_kib(void)
{
        char line[256];
        long kib = -1;
        FILE *f = fopen("/proc/self/status", "re");
        while (f && fgets(line, sizeof(line), f))
                if (!strncmp(line, "VmRSS:", 6))
                        kib = strtol(line + 6, NULL, 10);
        if (f)
                fclose(f);
        return kib;
}

static void next(Worker *w);

static void on_reply(LinkClient *c, int error, LinkMsg *reply, void *userdata)
{
        Worker *w = userdata;
        if (stopping) {
                link_msg_free(reply);
                return;
        }
        if (error < 0 || reply->body->msg_case == HLINK__BODY__MSG_ERROR) {
                failures++;
                link_msg_free(reply);
                next(w);
                return;
        }
        switch (w->phase) {
        case 0:
                w->phase = 1;
                break;
        case 1: {
                const Hlink__Work *wk = reply->body->work;
                if (wk->n_tasks > 0 &&
                    link_task_verify(wk->tasks[0], pool_pk, &w->task, w->spec_sha) >= 0)
                        w->phase = 2;
                break;
        }
        case 2:
                if (reply->body->result_ack->accepted)
                        round_trips++;
                hlink__task_spec__free_unpacked(w->task, NULL);
                w->task = NULL;
                w->phase = 1;
                break;
        }
        link_msg_free(reply);
        next(w);
}

static void next(Worker *w)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Hello h = HLINK__HELLO__INIT;
        Hlink__Capabilities caps = HLINK__CAPABILITIES__INIT;
        Hlink__Fetch f = HLINK__FETCH__INIT;
        Hlink__Result res = HLINK__RESULT__INIT;
        Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT;
        Hlink__File out = HLINK__FILE__INIT, *outs[] = { &out };
        _cleanup_free_ void *body = NULL;
        uint8_t sig[LINK_SIG_BYTES];
        size_t len;

        if (w->phase == 0) {
                caps.arch = "x86_64";
                caps.cores = 2;
                h.caps = &caps;
                h.agent = "bench";
                b.msg_case = HLINK__BODY__MSG_HELLO;
                b.hello = &h;
        } else if (w->phase == 1) {
                f.max_tasks = 1;
                b.msg_case = HLINK__BODY__MSG_FETCH;
                b.fetch = &f;
        } else {
                /* The task is "echo": its output is its id. The result is
                 * signed here, as link_client_send_result() would. */
                rb.task_id = w->task->id;
                rb.status = HLINK__STATUS__STATUS_OK;
                rb.cpu_usec = 1;
                rb.spec_sha256 = (ProtobufCBinaryData) { LINK_HASH_BYTES, w->spec_sha };
                out.name = "stdout";
                out.data = (ProtobufCBinaryData) { strlen(w->task->id), (uint8_t *) w->task->id };
                rb.outputs = outs;
                rb.n_outputs = 1;
                if (link_client_sign_result(w->c, &rb, &body, &len, sig) < 0) {
                        failures++;
                        return;
                }
                res.body = (ProtobufCBinaryData) { len, body };
                res.signature = (ProtobufCBinaryData) { LINK_SIG_BYTES, sig };
                b.msg_case = HLINK__BODY__MSG_RESULT;
                b.result = &res;
        }
        if (link_client_submit(w->c, &b, on_reply, w) < 0)
                failures++;
}

/* --- lean workers --------------------------------------------------------- */

typedef struct Raw {
        LinkIdentity id;
        nng_socket sock;
        nng_ctx ctx;
        nng_aio *aio;
        int phase;              /* 0 hello, 1 fetch, 2 result */
        bool sending;
} Raw;

static atomic_uint_fast64_t raw_rt, raw_fail;
static atomic_uint raw_welcomed;
static atomic_bool raw_stop;

static void raw_send(Raw *w, const Hlink__Body *b)
{
        struct timespec ts;
        void *buf;
        size_t len;
        nng_msg *m;

        clock_gettime(CLOCK_REALTIME, &ts);
        if (link_encode(&w->id, b, NULL, (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000, NULL,
                        &buf, &len) < 0 ||
            nng_msg_alloc(&m, 0) != 0) {
                atomic_fetch_add(&raw_fail, 1);
                return;
        }
        nng_msg_append(m, buf, len);
        free(buf);
        w->sending = true;
        nng_aio_set_msg(w->aio, m);
        nng_ctx_send(w->ctx, w->aio);
}

static void raw_fetch(Raw *w)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Fetch f = HLINK__FETCH__INIT;
        f.max_tasks = 1;
        b.msg_case = HLINK__BODY__MSG_FETCH;
        b.fetch = &f;
        w->phase = 1;
        raw_send(w, &b);
}

static void raw_cb(void *arg)
{
        Raw *w = arg;
        int rv = nng_aio_result(w->aio);

        if (w->sending) {
                w->sending = false;
                if (rv != 0) {
                        nng_msg_free(nng_aio_get_msg(w->aio));
                        atomic_fetch_add(&raw_fail, 1);
                        return;
                }
                nng_ctx_recv(w->ctx, w->aio);
                return;
        }
        if (rv != 0) {
                if (rv != NNG_ECANCELED && rv != NNG_ECLOSED)
                        atomic_fetch_add(&raw_fail, 1);
                return;
        }
        nng_msg *m = nng_aio_get_msg(w->aio);
        Hlink__Envelope *e = hlink__envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
        Hlink__Body *b = e ? hlink__body__unpack(NULL, e->body.len, e->body.data) : NULL;
        nng_msg_free(m);
        if (!b || b->msg_case == HLINK__BODY__MSG_ERROR) {
                atomic_fetch_add(&raw_fail, 1);
                goto out;
        }
        if (w->phase == 0)
                atomic_fetch_add(&raw_welcomed, 1);
        else if (w->phase == 2 && b->result_ack->accepted)
                atomic_fetch_add(&raw_rt, 1);
        if (atomic_load(&raw_stop))
                goto out;
        if (w->phase == 1 && b->work->n_tasks > 0) {
                Hlink__TaskSpec *spec = hlink__task_spec__unpack(NULL, b->work->tasks[0]->spec.len,
                                                                 b->work->tasks[0]->spec.data);
                Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT;
                Hlink__File out = HLINK__FILE__INIT, *outs[] = { &out };
                Hlink__Result res = HLINK__RESULT__INIT;
                Hlink__Body rq = HLINK__BODY__INIT;
                uint8_t sig[LINK_SIG_BYTES];
                void *body = NULL;
                size_t len;
                if (!spec) {
                        atomic_fetch_add(&raw_fail, 1);
                        goto out;
                }
                rb.task_id = spec->id;
                rb.status = HLINK__STATUS__STATUS_OK;
                rb.cpu_usec = 1;
                out.name = "stdout";
                out.data = (ProtobufCBinaryData) { strlen(spec->id), (uint8_t *) spec->id };
                rb.outputs = outs;
                rb.n_outputs = 1;
                if (link_result_sign(&w->id, &rb, &body, &len, sig) >= 0) {
                        res.body = (ProtobufCBinaryData) { len, body };
                        res.signature = (ProtobufCBinaryData) { LINK_SIG_BYTES, sig };
                        rq.msg_case = HLINK__BODY__MSG_RESULT;
                        rq.result = &res;
                        w->phase = 2;
                        raw_send(w, &rq);
                }
                free(body);
                hlink__task_spec__free_unpacked(spec, NULL);
        } else
                raw_fetch(w);
out:
        if (b)
                hlink__body__free_unpacked(b, NULL);
        if (e)
                hlink__envelope__free_unpacked(e, NULL);
}

static int raw_level(PoolServer *srv, const char *url, unsigned nw, double secs)
{
        Raw *ws = calloc(nw, sizeof(*ws));
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Hello h = HLINK__HELLO__INIT;
        Hlink__Capabilities caps = HLINK__CAPABILITIES__INIT;
        long rss_before = rss_kib();

        caps.arch = "x86_64";
        caps.cores = 2;
        h.caps = &caps;
        h.agent = "bench";
        b.msg_case = HLINK__BODY__MSG_HELLO;
        b.hello = &h;
        atomic_store(&raw_stop, false);
        atomic_store(&raw_welcomed, 0);
        for (unsigned i = 0; i < nw; i++) {
                Raw *w = &ws[i];
                crypto_sign_keypair(w->id.pk, w->id.sk);
                if (nng_req0_open(&w->sock) != 0 || nng_ctx_open(&w->ctx, w->sock) != 0 ||
                    nng_aio_alloc(&w->aio, raw_cb, w) != 0 || nng_dial(w->sock, url, NULL, 0) != 0) {
                        fprintf(stderr, "worker %u: cannot connect\n", i);
                        return -EIO;
                }
                nng_socket_set_ms(w->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
                nng_aio_set_timeout(w->aio, 30000);
                raw_send(w, &b);
        }
        uint64_t t_end = mono_usec() + 30 * USEC_PER_SEC;
        while (atomic_load(&raw_welcomed) < nw && mono_usec() < t_end)
                usleep(10000);
        long rss_connected = rss_kib();
        uint64_t req0, err0, commits0, req, err, commits;
        pool_server_stats(srv, &req0, &err0, &commits0);
        uint64_t rt0 = atomic_load(&raw_rt), f0 = atomic_load(&raw_fail), t0 = mono_usec(), c0 = cpu_usec();
        usleep((useconds_t) (secs * USEC_PER_SEC));
        uint64_t rt1 = atomic_load(&raw_rt), f1 = atomic_load(&raw_fail);
        double dt = (double) (mono_usec() - t0) / USEC_PER_SEC;
        double cpu = (double) (cpu_usec() - c0) / USEC_PER_SEC / dt * 100;
        pool_server_stats(srv, &req, &err, &commits);
        atomic_store(&raw_stop, true);
        printf("workers %u: %.0f round-trips/s (%llu in %.1f s, CPU %.0f%%, %.1f requests a commit, %llu failures, "
               "%u/%u connected; process RSS +%ld KiB for them, %.1f KiB a worker, both ends)\n",
               nw, (double) (rt1 - rt0) / dt, (unsigned long long) (rt1 - rt0), dt, cpu,
               commits > commits0 ? (double) (req - req0) / (double) (commits - commits0) : 0.0,
               (unsigned long long) (f1 - f0), atomic_load(&raw_welcomed), nw, rss_connected - rss_before,
               (double) (rss_connected - rss_before) / nw);
        fflush(stdout);
        usleep(500000);         /* in-flight requests finish */
        for (unsigned i = 0; i < nw; i++) {
                nng_aio_stop(ws[i].aio);
                nng_close(ws[i].sock);
                nng_aio_free(ws[i].aio);
        }
        free(ws);
        return 0;
}

static int submit_tasks(PoolStore *store, const LinkIdentity *pool, unsigned from, unsigned n)
{
        /* One transaction: one fsync for the lot. */
        int r = pool_store_begin(store);
        if (r < 0)
                return r;
        for (unsigned i = from; r >= 0 && i < from + n; i++) {
                Hlink__TaskSpec s = HLINK__TASK_SPEC__INIT;
                char idbuf[32], *argv[] = { "echo" };
                uint8_t sig[LINK_SIG_BYTES];
                _cleanup_free_ void *spec = NULL;
                size_t len;
                snprintf(idbuf, sizeof(idbuf), "b%u", i);
                s.id = idbuf;
                s.kind = HLINK__KIND__KIND_EXEC;
                s.argv = argv;
                s.n_argv = 1;
                r = link_task_sign(pool, &s, &spec, &len, sig);
                if (r < 0)
                        break;
                PoolTaskNew t = { .id = idbuf, .kind = s.kind, .spec = spec, .spec_len = len, .signature = sig,
                                  .replicas = 1, .quorum = 1 };
                r = pool_store_add_task(store, &t, 0);
        }
        return pool_store_end(store, r);
}

int main(int argc, char **argv)
{
        double secs = argc > 1 ? atof(argv[1]) : 3.0;
        unsigned levels[8] = { 1, 10, 100, 1000 }, n_levels = 4;
        char dir[] = "/tmp/bench-pool.XXXXXX", path[4096], url[4200];
        struct rlimit rl;
        LinkIdentity pool;
        PoolStore *store = NULL;
        PoolServer *srv = NULL;
        int r;

        bool client = argc > 1 && !strcmp(argv[1], "--client");
        if (client) {
                argc--;
                argv++;
                secs = argc > 1 ? atof(argv[1]) : 3.0;
        }
        if (argc > 2) {
                n_levels = 0;
                for (int i = 2; i < argc && n_levels < 8; i++)
                        levels[n_levels++] = (unsigned) atoi(argv[i]);
        }
        /* Three descriptors a worker (socket, eventfd, pipe of NNG's), and
         * the pool's side of each connection. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (!mkdtemp(dir))
                return 1;
        snprintf(path, sizeof(path), "%s/pool.key", dir);
        if (link_identity_load(path, true, &pool) < 0)
                return 1;
        memcpy(pool_pk, pool.pk, LINK_KEY_BYTES);
        snprintf(path, sizeof(path), "%s/pool.db", dir);
        if ((r = pool_store_open(path, true, &store)) < 0) {
                fprintf(stderr, "store: %s\n", strerror(-r));
                return 1;
        }
        snprintf(url, sizeof(url), "ipc://%s/pool.sock", dir);
        const char *listen[] = { url };
        PoolServerConfig cfg = { .listen = listen, .n_listen = 1, .contexts = 256, .lease_sec = 300 };
        long rss0 = rss_kib();
        if ((r = pool_server_new(store, &pool, &cfg, &srv)) < 0) {
                fprintf(stderr, "serve: %s\n", strerror(-r));
                return 1;
        }
        printf("bench-pool: %s, SQLite WAL, every reply sent after its group commit's fdatasync, %.1f s a level, %s workers\n", url, secs,
               client ? "net/ client" : "lean");

        unsigned submitted = 0;
        for (unsigned li = 0; li < n_levels; li++) {
                unsigned nw = levels[li];
                Worker *ws = calloc(nw, sizeof(*ws));
                int ep = epoll_create1(EPOLL_CLOEXEC);
                long rss_before = rss_kib();

                /* Enough tasks that the level never runs dry. */
                unsigned want = (unsigned) (secs * 20000) + nw;
                if ((r = submit_tasks(store, &pool, submitted, want)) < 0) {
                        fprintf(stderr, "submit: %s\n", strerror(-r));
                        return 1;
                }
                submitted += want;
                if (!client) {
                        free(ws);
                        close(ep);
                        if (raw_level(srv, url, nw, secs) < 0)
                                return 1;
                        continue;
                }
                for (unsigned i = 0; i < nw; i++) {
                        char sd[4200];
                        snprintf(sd, sizeof(sd), "%s/w%u", dir, i);
                        mkdir(sd, 0700);
                        LinkClientConfig cc = { .url = url, .state_dir = sd, .timeout_ms = 30000 };
                        memcpy(cc.pool_key, pool.pk, LINK_KEY_BYTES);
                        if ((r = link_client_new(&cc, &ws[i].c)) < 0) {
                                fprintf(stderr, "client %u: %s\n", i, strerror(-r));
                                return 1;
                        }
                        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &ws[i] };
                        epoll_ctl(ep, EPOLL_CTL_ADD, link_client_fd(ws[i].c), &ev);
                }
                /* Hello first, outside the timing. */
                for (unsigned i = 0; i < nw; i++)
                        next(&ws[i]);
                unsigned welcomed = 0;
                uint64_t t_end = mono_usec() + 30 * USEC_PER_SEC;
                struct epoll_event evs[256];
                while (welcomed < nw && mono_usec() < t_end) {
                        int n = epoll_wait(ep, evs, 256, 1000);
                        for (int i = 0; i < n; i++) {
                                Worker *w = evs[i].data.ptr;
                                int was = w->phase;
                                link_client_dispatch(w->c);
                                welcomed += was == 0 && w->phase != 0;
                        }
                }
                long rss_connected = rss_kib();
                uint64_t req0, err0, commits0;
                pool_server_stats(srv, &req0, &err0, &commits0);
                uint64_t rt0 = round_trips, f0 = failures, t0 = mono_usec();
                t_end = t0 + (uint64_t) (secs * USEC_PER_SEC);
                while (mono_usec() < t_end) {
                        int n = epoll_wait(ep, evs, 256, 100);
                        for (int i = 0; i < n; i++)
                                link_client_dispatch(((Worker *) evs[i].data.ptr)->c);
                }
                double dt = (double) (mono_usec() - t0) / USEC_PER_SEC;
                uint64_t req, err, commits;
                pool_server_stats(srv, &req, &err, &commits);
                printf("workers %u: %.0f round-trips/s (%llu in %.1f s, %.1f requests a commit, %llu failures, "
                       "%u/%u connected; process RSS +%ld KiB for them, %.1f KiB a worker, both ends)\n",
                       nw, (double) (round_trips - rt0) / dt, (unsigned long long) (round_trips - rt0), dt,
                       commits > commits0 ? (double) (req - req0) / (double) (commits - commits0) : 0.0,
                       (unsigned long long) (failures - f0), welcomed, nw, rss_connected - rss_before,
                       (double) (rss_connected - rss_before) / nw);
                fflush(stdout);
                /* Let in-flight requests finish before the clients go. */
                uint64_t drain = mono_usec() + 2 * USEC_PER_SEC;
                stopping = true;
                while (mono_usec() < drain) {
                        int n = epoll_wait(ep, evs, 256, 50);
                        if (n <= 0)
                                break;
                        for (int i = 0; i < n; i++)
                                link_client_dispatch(((Worker *) evs[i].data.ptr)->c);
                }
                stopping = false;
                for (unsigned i = 0; i < nw; i++) {
                        link_client_free(ws[i].c);
                        if (ws[i].task)
                                hlink__task_spec__free_unpacked(ws[i].task, NULL);
                }
                free(ws);
                close(ep);
        }
        (void) rss0;
        pool_server_free(srv);
        pool_store_close(store);
        snprintf(path, sizeof(path), "rm -rf %s", dir);
        (void) !system(path);
        return 0;
}
