/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * make bench-pool: task dispatch plus result round trips per second on
 * loopback tcp, with durable storage exactly as harvest-pool serve runs it
 * (SQLite WAL, synchronous=FULL, every reply sent only after the group
 * commit covering its request), for 1, 10, 100 and 1000 concurrent
 * simulated workers, and the pool's memory per connected worker.
 *
 * The pool (pool/server.c over pool/store-sqlite.c) runs in a child
 * process, so its memory is its own; the workers run in this one, on the
 * same 2 cores. Real workers run on other machines; here they are lean:
 * raw NNG REQ contexts driven by aio callbacks that speak the real
 * protocol: a signed hello with its key exchange, then every request MACed
 * in the session, every reply's MAC checked, and every result really
 * signed (ed25519) for the pool to verify. They do not verify the tasks'
 * ed25519 signatures (a worker's own CPU, not the pool's), nor run them.
 * With --client they are net/'s full clients instead (link_client_*:
 * every reply and every task verified), driven from one epoll loop.
 *
 * One round trip = one result in and one new task out. A worker asks for
 * its first task with a Fetch, then sends each result with Result.fetch = 1
 * and gets its next task in the ack: one request a task, as harvesterd
 * does when it has finished one and wants another. With --batch N a worker
 * holds N tasks, and reports the N results in one request (Result.more)
 * that asks for N new ones, as a client holding several tiny tasks does;
 * every result is still signed and verified on its own.
 *
 * Prints one line per worker count:
 *   workers W: N round-trips/s (...)
 * usage: bench-pool [--client | --batch N] [SECONDS_PER_LEVEL] [LEVELS...]
 *        bench-pool --store [ROUND_TRIPS] [ROUND_TRIPS_A_COMMIT]
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>
#include <stdatomic.h>

#include "harvester/macro.h"
#include "net/link.h"
#include "pool/server.h"
#include "pool/store.h"

static uint64_t mono_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

static uint64_t real_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

static uint64_t cpu_usec(int who)
{
        struct rusage ru;
        getrusage(who, &ru);
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

/* --- the pool, in its own process ------------------------------------------ */

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
                r = pool_store_add_task(store, &t, real_usec());
        }
        return pool_store_end(store, r);
}

/* Serve, and answer the parent's commands on FD, one line each:
 *   submit N   -> "ok" once N more tasks are stored
 *   stats      -> "REQUESTS ERRORS COMMITS RSS_KIB CPU_USEC" */
static unsigned contexts = 256;

static int pool_main(int fd, const char *dir, const char *url, const LinkIdentity *pool)
{
        char path[4096], line[128];
        PoolStore *store = NULL;
        PoolServer *srv = NULL;
        unsigned submitted = 0;
        int r;

        snprintf(path, sizeof(path), "%s/pool.db", dir);
        if ((r = pool_store_open(path, true, &store)) < 0) {
                fprintf(stderr, "store: %s\n", strerror(-r));
                return 1;
        }
        const char *listen[] = { url };
        PoolServerConfig cfg = { .listen = listen, .n_listen = 1, .contexts = contexts, .lease_sec = 300 };
        if ((r = pool_server_new(store, pool, &cfg, &srv)) < 0) {
                fprintf(stderr, "serve %s: %s\n", url, strerror(-r));
                return 1;
        }
        FILE *in = fdopen(fd, "r");
        while (in && fgets(line, sizeof(line), in)) {
                unsigned n;
                char out[256];
                if (sscanf(line, "submit %u", &n) == 1) {
                        r = submit_tasks(store, pool, submitted, n);
                        submitted += n;
                        snprintf(out, sizeof(out), "%s\n", r < 0 ? strerror(-r) : "ok");
                } else if (!strncmp(line, "stats", 5)) {
                        uint64_t req, err, commits;
                        pool_server_stats(srv, &req, &err, &commits);
                        snprintf(out, sizeof(out), "%llu %llu %llu %ld %llu\n", (unsigned long long) req,
                                 (unsigned long long) err, (unsigned long long) commits, rss_kib(),
                                 (unsigned long long) cpu_usec(RUSAGE_SELF));
                } else
                        break;
                if (write(fd, out, strlen(out)) < 0)
                        break;
        }
        pool_server_free(srv);
        pool_store_close(store);
        return 0;
}

static int pool_fd = -1;

static int pool_cmd(const char *cmd, char *reply, size_t size)
{
        size_t n = 0;
        if (write(pool_fd, cmd, strlen(cmd)) < 0)
                return -errno;
        while (n + 1 < size) {
                ssize_t k = read(pool_fd, reply + n, 1);
                if (k <= 0)
                        return -EIO;
                if (reply[n++] == '\n')
                        break;
        }
        reply[n] = '\0';
        return 0;
}

typedef struct PoolStats {
        unsigned long long req, err, commits, cpu;
        long rss;
} PoolStats;

static int pool_stats(PoolStats *ret)
{
        char b[256];
        if (pool_cmd("stats\n", b, sizeof(b)) < 0 ||
            sscanf(b, "%llu %llu %llu %ld %llu", &ret->req, &ret->err, &ret->commits, &ret->rss, &ret->cpu) != 5)
                return -EIO;
        return 0;
}

/* --- lean workers ----------------------------------------------------------- */

typedef struct Raw {
        LinkIdentity id;
        LinkSession session;
        uint8_t kx_pk[LINK_KX_BYTES], kx_sk[LINK_KX_BYTES];
        uint8_t pool_pk[LINK_KEY_BYTES];
        nng_socket sock;
        nng_ctx ctx;
        nng_aio *aio;
        int phase;              /* 0 hello, 1 fetch, 2 result */
        bool sending;
        unsigned hello_tries;
} Raw;

static atomic_uint_fast64_t raw_rt, raw_fail, raw_empty, raw_req;
/* Tasks a worker holds and results a request carries (--batch): 1 is one
 * task at a time; more is a worker that reports what it finished and asks
 * for as many new tasks in one request, as harvesterd and BOINC's client
 * do when they hold several. */
static unsigned batch = 1;
static atomic_uint raw_welcomed;
static atomic_bool raw_stop;

static void raw_send(Raw *w, const Hlink__Body *b)
{
        void *buf;
        size_t len;
        nng_msg *m;
        int r = w->phase == 0 ? link_encode(&w->id, b, NULL, real_usec(), NULL, &buf, &len)
                              : link_encode_session(&w->id, &w->session, b, NULL, real_usec(), NULL, &buf, &len);
        /* Sized once (a real client need not grow it). */
        if (r < 0 || nng_msg_alloc(&m, len) != 0) {
                if (r >= 0)
                        free(buf);
                atomic_fetch_add(&raw_fail, 1);
                return;
        }
        memcpy(nng_msg_body(m), buf, len);
        free(buf);
        atomic_fetch_add(&raw_req, 1);
        w->sending = true;
        nng_aio_set_msg(w->aio, m);
        nng_ctx_send(w->ctx, w->aio);
}

static void raw_hello(Raw *w)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Hello h = HLINK__HELLO__INIT;
        Hlink__Capabilities caps = HLINK__CAPABILITIES__INIT;
        caps.arch = "x86_64";
        caps.cores = 2;
        caps.memory_bytes = 1ULL << 30;
        h.caps = &caps;
        h.agent = "bench";
        link_kx_keypair(w->kx_pk, w->kx_sk);
        h.kx_public = (ProtobufCBinaryData) { LINK_KX_BYTES, w->kx_pk };
        b.msg_case = HLINK__BODY__MSG_HELLO;
        b.hello = &h;
        w->phase = 0;
        raw_send(w, &b);
}

static void raw_fetch(Raw *w)
{
        Hlink__Body b = HLINK__BODY__INIT;
        Hlink__Fetch f = HLINK__FETCH__INIT;
        f.max_tasks = batch;
        b.msg_case = HLINK__BODY__MSG_FETCH;
        b.fetch = &f;
        w->phase = 1;
        raw_send(w, &b);
}

/* "Run" TASK (echo: its output is its id) and sign its result into
 * *BODY (malloc'd) and SIG. */
static int raw_run(Raw *w, const Hlink__Task *task, ProtobufCBinaryData *body, uint8_t sig[LINK_SIG_BYTES])
{
        Hlink__TaskSpec *spec = hlink__task_spec__unpack(NULL, task->spec.len, task->spec.data);
        Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT;
        Hlink__File out = HLINK__FILE__INIT, *outs[] = { &out };
        uint8_t spec_sha[LINK_HASH_BYTES];
        void *b = NULL;
        size_t len;
        if (!spec)
                return -EBADMSG;
        crypto_hash_sha256(spec_sha, task->spec.data, task->spec.len);
        rb.task_id = spec->id;
        rb.status = HLINK__STATUS__STATUS_OK;
        rb.cpu_usec = 1;
        rb.spec_sha256 = (ProtobufCBinaryData) { LINK_HASH_BYTES, spec_sha };
        out.name = "stdout";
        out.data = (ProtobufCBinaryData) { strlen(spec->id), (uint8_t *) spec->id };
        rb.outputs = outs;
        rb.n_outputs = 1;
        /* Several a request: packed here, one batch signature for all. */
        int r = batch > 1 ? link_result_pack(&rb, &b, &len) : link_result_sign(&w->id, &rb, &b, &len, sig);
        hlink__task_spec__free_unpacked(spec, NULL);
        if (r < 0)
                return r;
        *body = (ProtobufCBinaryData) { len, b };
        return 0;
}

/* Run the N tasks, send their results in one request (the first as
 * Result.body, the rest in Result.more) and ask for as many new ones. */
static void raw_results(Raw *w, Hlink__Task *const *tasks, size_t n)
{
        Hlink__Result res = HLINK__RESULT__INIT;
        Hlink__SignedResult more[LINK_RESULTS_MAX], *mp[LINK_RESULTS_MAX];
        Hlink__Body rq = HLINK__BODY__INIT;
        uint8_t sigs[LINK_RESULTS_MAX][LINK_SIG_BYTES];
        ProtobufCBinaryData bodies[LINK_RESULTS_MAX] = {};
        size_t ok = 0;

        if (n > LINK_RESULTS_MAX)
                n = LINK_RESULTS_MAX;
        for (size_t i = 0; i < n; i++)
                if (raw_run(w, tasks[i], &bodies[ok], sigs[ok]) >= 0)
                        ok++;
                else
                        atomic_fetch_add(&raw_fail, 1);
        if (ok == 0) {
                raw_fetch(w);
                return;
        }
        /* With a batch signature the results' own stay empty. */
        size_t sl = batch > 1 ? 0 : LINK_SIG_BYTES;
        uint8_t batch_sig[LINK_SIG_BYTES];
        res.body = bodies[0];
        res.signature = (ProtobufCBinaryData) { sl, sigs[0] };
        for (size_t i = 1; i < ok; i++) {
                hlink__signed_result__init(&more[i - 1]);
                more[i - 1].body = bodies[i];
                more[i - 1].signature = (ProtobufCBinaryData) { sl, sigs[i] };
                mp[i - 1] = &more[i - 1];
        }
        if (batch > 1) {
                if (link_result_batch_sign(&w->id, bodies, ok, batch_sig) < 0) {
                        atomic_fetch_add(&raw_fail, ok);
                        for (size_t i = 0; i < ok; i++)
                                free(bodies[i].data);
                        raw_fetch(w);
                        return;
                }
                res.batch_signature = (ProtobufCBinaryData) { LINK_SIG_BYTES, batch_sig };
        }
        res.n_more = ok - 1;
        res.more = mp;
        res.fetch = batch;
        rq.msg_case = HLINK__BODY__MSG_RESULT;
        rq.result = &res;
        w->phase = 2;
        raw_send(w, &rq);
        for (size_t i = 0; i < ok; i++)
                free(bodies[i].data);
}

/* A hello that failed is said and tried again (3 times), as a worker
 * would: a level must not wait 30 s for one worker that gave up. */
static bool raw_hello_failed(Raw *w, const char *why)
{
        if (w->phase != 0)
                return false;
        fprintf(stderr, "bench-pool: a hello failed (try %u): %s\n", w->hello_tries + 1, why);
        if (++w->hello_tries >= 3 || atomic_load(&raw_stop))
                return false;
        raw_hello(w);
        return true;
}

static void raw_cb(void *arg)
{
        Raw *w = arg;
        int rv = nng_aio_result(w->aio);
        LinkMsg *msg = NULL;

        if (w->sending) {
                w->sending = false;
                if (rv != 0) {
                        nng_msg_free(nng_aio_get_msg(w->aio));
                        atomic_fetch_add(&raw_fail, 1);
                        raw_hello_failed(w, nng_strerror(rv));
                        return;
                }
                nng_ctx_recv(w->ctx, w->aio);
                return;
        }
        if (rv != 0) {
                if (rv != NNG_ECANCELED && rv != NNG_ECLOSED) {
                        atomic_fetch_add(&raw_fail, 1);
                        raw_hello_failed(w, nng_strerror(rv));
                }
                return;
        }
        nng_msg *m = nng_aio_get_msg(w->aio);
        /* The reply's MAC (or, for the welcome, signature) is checked, as a
         * real worker does. */
        int r = link_decode_frame(nng_msg_body(m), nng_msg_len(m), &msg);
        if (r >= 0)
                r = link_msg_open(msg, w->phase == 0 ? NULL : &w->session);
        nng_msg_free(m);
        if (r < 0 || msg->body->msg_case == HLINK__BODY__MSG_ERROR) {
                atomic_fetch_add(&raw_fail, 1);
                raw_hello_failed(w, r < 0 ? strerror(-r) : msg->body->error->message);
                goto out;
        }
        const Hlink__Body *b = msg->body;
        if (w->phase == 0) {
                if (b->msg_case != HLINK__BODY__MSG_WELCOME ||
                    link_session_client(w->kx_pk, w->kx_sk, b->welcome, &w->session) < 0) {
                        atomic_fetch_add(&raw_fail, 1);
                        goto out;
                }
                atomic_fetch_add(&raw_welcomed, 1);
        } else if (w->phase == 2 && b->msg_case == HLINK__BODY__MSG_RESULT_ACK) {
                unsigned accepted = b->result_ack->accepted;
                for (size_t i = 0; i < b->result_ack->n_more; i++)
                        accepted += b->result_ack->more[i]->accepted;
                atomic_fetch_add(&raw_rt, accepted);
                if (accepted < 1 + b->result_ack->n_more)
                        atomic_fetch_add(&raw_fail, 1 + b->result_ack->n_more - accepted);
        }
        if (atomic_load(&raw_stop))
                goto out;
        if (w->phase == 1 && b->msg_case == HLINK__BODY__MSG_WORK && b->work->n_tasks > 0)
                raw_results(w, b->work->tasks, b->work->n_tasks);
        else if (w->phase == 2 && b->msg_case == HLINK__BODY__MSG_RESULT_ACK && b->result_ack->n_tasks > 0)
                raw_results(w, b->result_ack->tasks, b->result_ack->n_tasks);
        else {
                if (w->phase != 0)
                        atomic_fetch_add(&raw_empty, 1);
                raw_fetch(w);
        }
out:
        link_msg_free(msg);
}

/* --- full clients ------------------------------------------------------------ */

typedef struct Worker {
        LinkClient *c;
        int phase;              /* 0 hello, 1 fetch, 2 result */
        Hlink__TaskSpec *task;
        uint8_t spec_sha[LINK_HASH_BYTES];
} Worker;

static uint8_t pool_pk[LINK_KEY_BYTES];
static uint64_t round_trips, failures;
static bool stopping;

static void next(Worker *w);

static void take(Worker *w, size_t n, Hlink__Task *const *tasks)
{
        if (n > 0 && link_task_verify(tasks[0], pool_pk, &w->task, w->spec_sha) >= 0)
                w->phase = 2;
        else
                w->phase = 1;
}

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
        case 1:
                take(w, reply->body->work->n_tasks, reply->body->work->tasks);
                break;
        case 2:
                if (reply->body->result_ack->accepted)
                        round_trips++;
                hlink__task_spec__free_unpacked(w->task, NULL);
                w->task = NULL;
                take(w, reply->body->result_ack->n_tasks, reply->body->result_ack->tasks);
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
                res.fetch = 1;
                b.msg_case = HLINK__BODY__MSG_RESULT;
                b.result = &res;
        }
        if (link_client_submit(w->c, &b, on_reply, w) < 0)
                failures++;
}

/* --- one level ---------------------------------------------------------------- */

static void report(unsigned nw, uint64_t rt, uint64_t req, double dt, const PoolStats *p0, const PoolStats *p1,
                   long rss_idle, long rss_connected, unsigned connected, uint64_t fails, uint64_t empty,
                   uint64_t workers_cpu_usec)
{
        double pool_cpu = (double) (p1->cpu - p0->cpu) / USEC_PER_SEC / dt * 100;
        double load[3] = { 0 };
        getloadavg(load, 3);
        /* CPU time a round trip costs each side: what the machine's load
         * (other processes share these 2 cores) does not change. */
        double pool_us = rt ? (double) (p1->cpu - p0->cpu) / (double) rt : 0.0;
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        printf("workers %u: %.0f round-trips/s (%llu in %.1f s; %.0f requests/s, up to %u results a request; "
               "CPU a round trip: pool %.0f us, workers %.0f us; "
               "pool CPU %.0f%%, %.1f requests a commit, %llu failures, %llu empty; %u/%u connected; "
               "pool memory %.1f KiB a connected worker; load average %.2f; derived, not measured: with the "
               "workers on other machines this machine's %ld cores would serve 1e6 / %.0f us x %ld = %.0f "
               "round-trips/s)\n",
               nw, (double) rt / dt, (unsigned long long) rt, dt, (double) req / dt, batch, pool_us,
               rt ? (double) workers_cpu_usec / (double) rt : 0.0, pool_cpu,
               p1->commits > p0->commits ? (double) (p1->req - p0->req) / (double) (p1->commits - p0->commits) : 0.0,
               (unsigned long long) fails, (unsigned long long) empty, connected, nw,
               (double) (rss_connected - rss_idle) / nw, load[0], cores, pool_us, cores,
               pool_us > 0 ? 1e6 / pool_us * (double) cores : 0.0);
        fflush(stdout);
}

static int raw_level(const char *url, unsigned nw, double secs)
{
        Raw *ws = calloc(nw, sizeof(*ws));
        PoolStats p_idle, p_conn, p1;

        if (!ws || pool_stats(&p_idle) < 0)
                return -EIO;
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
        }
        /* Hello and the first task, outside the timing. */
        for (unsigned i = 0; i < nw; i++)
                raw_hello(&ws[i]);
        uint64_t t_end = mono_usec() + 30 * USEC_PER_SEC;
        while (atomic_load(&raw_welcomed) < nw && mono_usec() < t_end)
                usleep(10000);
        usleep(200000);
        if (pool_stats(&p_conn) < 0)
                return -EIO;
        uint64_t rt0 = atomic_load(&raw_rt), f0 = atomic_load(&raw_fail), e0 = atomic_load(&raw_empty);
        uint64_t q0 = atomic_load(&raw_req), t0 = mono_usec(), c0 = cpu_usec(RUSAGE_SELF);
        fprintf(stderr, "(level %u: measuring)\n", nw);
        usleep((useconds_t) (secs * USEC_PER_SEC));
        uint64_t c1 = cpu_usec(RUSAGE_SELF);
        uint64_t rt1 = atomic_load(&raw_rt), f1 = atomic_load(&raw_fail), e1 = atomic_load(&raw_empty);
        uint64_t q1 = atomic_load(&raw_req);
        double dt = (double) (mono_usec() - t0) / USEC_PER_SEC;
        if (pool_stats(&p1) < 0)
                return -EIO;
        atomic_store(&raw_stop, true);
        report(nw, rt1 - rt0, q1 - q0, dt, &p_conn, &p1, p_idle.rss, p_conn.rss, atomic_load(&raw_welcomed),
               f1 - f0, e1 - e0, c1 - c0);
        usleep(200000);         /* in-flight requests finish */
        for (unsigned i = 0; i < nw; i++) {
                nng_aio_stop(ws[i].aio);
                nng_close(ws[i].sock);
                nng_aio_free(ws[i].aio);
                sodium_memzero(&ws[i].session, sizeof(ws[i].session));
        }
        free(ws);
        return 0;
}

static int client_level(const char *dir, const char *url, unsigned nw, double secs)
{
        Worker *ws = calloc(nw, sizeof(*ws));
        int ep = epoll_create1(EPOLL_CLOEXEC), r;
        struct epoll_event evs[256];
        PoolStats p_idle, p_conn, p1;

        if (!ws || ep < 0 || pool_stats(&p_idle) < 0)
                return -EIO;
        for (unsigned i = 0; i < nw; i++) {
                char sd[4200];
                snprintf(sd, sizeof(sd), "%s/w%u", dir, i);
                mkdir(sd, 0700);
                LinkClientConfig cc = { .url = url, .state_dir = sd, .timeout_ms = 30000 };
                memcpy(cc.pool_key, pool_pk, LINK_KEY_BYTES);
                if ((r = link_client_new(&cc, &ws[i].c)) < 0) {
                        fprintf(stderr, "client %u: %s\n", i, strerror(-r));
                        return r;
                }
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &ws[i] };
                epoll_ctl(ep, EPOLL_CTL_ADD, link_client_fd(ws[i].c), &ev);
        }
        for (unsigned i = 0; i < nw; i++)
                next(&ws[i]);
        unsigned welcomed = 0;
        uint64_t t_end = mono_usec() + 30 * USEC_PER_SEC;
        while (welcomed < nw && mono_usec() < t_end) {
                int n = epoll_wait(ep, evs, 256, 1000);
                for (int i = 0; i < n; i++) {
                        Worker *w = evs[i].data.ptr;
                        int was = w->phase;
                        link_client_dispatch(w->c);
                        welcomed += was == 0 && w->phase != 0;
                }
        }
        if (pool_stats(&p_conn) < 0)
                return -EIO;
        uint64_t rt0 = round_trips, f0 = failures, t0 = mono_usec(), c0 = cpu_usec(RUSAGE_SELF);
        t_end = t0 + (uint64_t) (secs * USEC_PER_SEC);
        while (mono_usec() < t_end) {
                int n = epoll_wait(ep, evs, 256, 100);
                for (int i = 0; i < n; i++)
                        link_client_dispatch(((Worker *) evs[i].data.ptr)->c);
        }
        double dt = (double) (mono_usec() - t0) / USEC_PER_SEC;
        if (pool_stats(&p1) < 0)
                return -EIO;
        report(nw, round_trips - rt0, round_trips - rt0, dt, &p_conn, &p1, p_idle.rss, p_conn.rss, welcomed, failures - f0, 0,
               cpu_usec(RUSAGE_SELF) - c0);
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
        return 0;
}

/* --store: the store alone, as the server drives it, on one thread: per
 * round trip a result (pool_store_add_result) and the next lease
 * (pool_store_lease_caps), a group commit (fdatasync) every PER_COMMIT. No
 * network, no signatures: what the database costs a round trip, steadier
 * than the whole benchmark on a shared machine. */
static int store_level(const char *dir, unsigned n, unsigned per_commit)
{
        enum { WORKERS = 100 };
        char path[4096];
        PoolStore *st = NULL;
        uint8_t keys[WORKERS][LINK_KEY_BYTES], sig[LINK_SIG_BYTES] = { 1 }, hash[LINK_HASH_BYTES] = { 2 };
        char held[WORKERS][LINK_ID_MAX + 1];
        PoolWorkerCaps caps = { .arch = "x86_64", .cores = 2, .memory_bytes = 1ULL << 30 };
        int r;

        snprintf(path, sizeof(path), "%s/store.db", dir);
        if ((r = pool_store_open(path, true, &st)) < 0)
                return r;
        r = pool_store_begin(st);
        for (unsigned i = 0; r >= 0 && i < n + WORKERS; i++) {
                char id[32];
                snprintf(id, sizeof(id), "s%u", i);
                PoolTaskNew t = { .id = id, .kind = HLINK__KIND__KIND_EXEC, .spec = "0123456789abcdef0123456789",
                                  .spec_len = 26, .signature = sig, .replicas = 1, .quorum = 1 };
                r = pool_store_add_task(st, &t, real_usec());
        }
        r = pool_store_end(st, r);
        for (unsigned w = 0; r >= 0 && w < WORKERS; w++) {
                Hlink__Hello h = HLINK__HELLO__INIT;
                Hlink__Capabilities c = HLINK__CAPABILITIES__INIT;
                c.arch = caps.arch;
                c.cores = caps.cores;
                c.memory_bytes = caps.memory_bytes;
                h.caps = &c;
                h.agent = "bench";
                randombytes_buf(keys[w], LINK_KEY_BYTES);
                r = pool_store_hello(st, keys[w], &h, 1, real_usec());
        }
        if (r >= 0)
                r = pool_store_set_group(st, true);
        for (unsigned w = 0; r >= 0 && w < WORKERS; w++) {
                PoolLease *l = NULL;
                r = pool_store_lease_caps(st, keys[w], &caps, 1, 1 << 20, real_usec(), 300 * USEC_PER_SEC, &l);
                if (r == 1)
                        snprintf(held[w], sizeof(held[w]), "%s", l[0].id);
                pool_leases_free(l, r > 0 ? (size_t) r : 0);
                r = r == 1 ? pool_store_commit(st) : -EIO;
        }
        uint64_t c0 = cpu_usec(RUSAGE_SELF), t0 = mono_usec();
        for (unsigned i = 0; r >= 0 && i < n; i++) {
                unsigned w = i % WORKERS;
                Hlink__ResultBody b = HLINK__RESULT_BODY__INIT;
                PoolLease *l = NULL;
                bool accepted = false;
                b.task_id = held[w];
                b.status = HLINK__STATUS__STATUS_OK;
                b.cpu_usec = 1;
                r = pool_store_add_result(st, keys[w], &b, hash, "result body of about this size", 30, sig, LINK_SIG_BYTES, real_usec(),
                                          &accepted, NULL);
                if (r >= 0 && !accepted)
                        r = -EIO;
                if (r >= 0)
                        r = pool_store_lease_caps(st, keys[w], &caps, 1, 1 << 20, real_usec(), 300 * USEC_PER_SEC, &l);
                if (r == 1)
                        snprintf(held[w], sizeof(held[w]), "%s", l[0].id);
                pool_leases_free(l, r > 0 ? (size_t) r : 0);
                r = r == 1 ? 0 : -EIO;
                if (r >= 0 && (i + 1) % per_commit == 0)
                        r = pool_store_commit(st);
        }
        uint64_t cpu = cpu_usec(RUSAGE_SELF) - c0, wall = mono_usec() - t0;
        double load[3] = { 0 };
        getloadavg(load, 3);
        if (r >= 0)
                printf("store: %.1f us CPU a round trip (a result and the next lease, %u round trips, a group "
                       "commit with fdatasync every %u; %.1f us wall; load average %.2f)\n",
                       (double) cpu / n, n, per_commit, (double) wall / n, load[0]);
        pool_store_close(st);
        return r < 0 ? r : 0;
}

/* A free tcp port on loopback. */
static int free_port(void)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;
        if (fd >= 0 && bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0 &&
            getsockname(fd, (struct sockaddr *) &a, &l) == 0)
                port = ntohs(a.sin_port);
        if (fd >= 0)
                close(fd);
        return port;
}

int main(int argc, char **argv)
{
        double secs = 3.0;
        unsigned levels[8] = { 1, 10, 100, 1000 }, n_levels = 4;
        char dir[] = "/tmp/bench-pool.XXXXXX", path[4096], url[64], b[256];
        struct rlimit rl;
        LinkIdentity pool;
        int sp[2];

        if (argc > 1 && !strcmp(argv[1], "--store")) {
                char sdir[] = "/tmp/bench-store.XXXXXX", cmd[64];
                if (!mkdtemp(sdir) || link_init() < 0)
                        return 1;
                int r = store_level(sdir, argc > 2 ? (unsigned) atoi(argv[2]) : 50000,
                                    argc > 3 ? (unsigned) atoi(argv[3]) : 30);
                snprintf(cmd, sizeof(cmd), "rm -rf %s", sdir);
                (void) !system(cmd);
                if (r < 0)
                        fprintf(stderr, "bench-pool --store: %s\n", strerror(-r));
                return r < 0;
        }
        bool client = argc > 1 && !strcmp(argv[1], "--client");
        if (client) {
                argc--;
                argv++;
        }
        if (argc > 2 && !strcmp(argv[1], "--batch")) {
                batch = (unsigned) atoi(argv[2]);
                if (batch < 1 || batch > LINK_RESULTS_MAX || client) {
                        fprintf(stderr, "bench-pool: --batch takes 1..%u, lean workers only\n", LINK_RESULTS_MAX);
                        return 2;
                }
                argc -= 2;
                argv += 2;
        }
        if (getenv("BENCH_CONTEXTS"))
                contexts = (unsigned) atoi(getenv("BENCH_CONTEXTS"));
        if (argc > 1)
                secs = atof(argv[1]);
        if (argc > 2) {
                n_levels = 0;
                for (int i = 2; i < argc && n_levels < 8; i++)
                        levels[n_levels++] = (unsigned) atoi(argv[i]);
        }
        /* Descriptors: each worker's socket (and with --client its
         * eventfd), and the pool's side of each connection. */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (!mkdtemp(dir) || link_init() < 0)
                return 1;
        snprintf(path, sizeof(path), "%s/pool.key", dir);
        if (link_identity_load(path, true, &pool) < 0)
                return 1;
        memcpy(pool_pk, pool.pk, LINK_KEY_BYTES);
        snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", free_port());

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
                return 1;
        pid_t pid = fork();
        if (pid < 0)
                return 1;
        if (pid == 0) {
                close(sp[0]);
                _exit(pool_main(sp[1], dir, url, &pool));
        }
        close(sp[1]);
        pool_fd = sp[0];
        /* Wait for the pool to listen: a stats answer means it serves. */
        if (pool_cmd("stats\n", b, sizeof(b)) < 0) {
                fprintf(stderr, "bench-pool: the pool did not start\n");
                return 1;
        }
        printf("bench-pool: pool in its own process on %s (as harvest-pool serve --contexts %u); SQLite WAL, every "
               "reply only after the group commit covering it is fdatasync'd; %.1f s a level; %s workers in this "
               "process (%s); pool memory: its RSS growth while they connect, divided by their number\n",
               url, contexts, secs, client ? "net/ client" : "lean",
               client ? "every reply MAC and task signature verified"
                      : batch > 1 ? "replies' MACs checked, each request's results under one ed25519 batch "
                                    "signature; task signatures not verified"
                                  : "replies' MACs checked, results ed25519-signed; task signatures not verified");
        fflush(stdout);

        int rc = 0;
        for (unsigned li = 0; li < n_levels && rc == 0; li++) {
                unsigned nw = levels[li];
                /* Enough tasks that the level never runs dry. */
                unsigned want = (unsigned) (secs * 40000) + (batch + 1) * nw;
                uint64_t t = mono_usec();
                snprintf(path, sizeof(path), "submit %u\n", want);
                if (pool_cmd(path, b, sizeof(b)) < 0 || strcmp(b, "ok\n")) {
                        fprintf(stderr, "submit: %s", b);
                        rc = 1;
                        break;
                }
                fprintf(stderr, "(level %u: %u tasks submitted in %.1f s)\n", nw, want,
                        (double) (mono_usec() - t) / USEC_PER_SEC);
                if ((client ? client_level(dir, url, nw, secs) : raw_level(url, nw, secs)) < 0)
                        rc = 1;
        }
        pool_cmd("quit\n", b, sizeof(b));
        waitpid(pid, NULL, 0);
        snprintf(path, sizeof(path), "rm -rf %s", dir);
        (void) !system(path);
        return rc;
}
