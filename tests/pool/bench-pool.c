/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * make bench-pool: task dispatch plus result round trips per second on
 * loopback, with durable storage (SQLite WAL, synchronous=FULL), for 1, 10,
 * 100 and 1000 concurrent simulated workers, and the pool's memory per
 * connected worker.
 *
 * The pool server (pool/server.c) runs in this process on its own NNG
 * threads; the workers are net/'s asynchronous clients, all driven from one
 * epoll loop the way harvesterd's sd-event loop would drive its one client.
 * One round trip = fetch one task + send its signed result + its ack: 11
 * ed25519 operations in all (5 signatures, 6 verifications), both ends on
 * the same 2 cores. Prints one line per worker count:
 *   workers W: N round-trips/s
 * usage: bench-pool [SECONDS_PER_LEVEL] [LEVELS...]
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

#include <sodium.h>

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
        printf("bench-pool: %s, SQLite WAL synchronous=FULL, %.1f s a level\n", url, secs);

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
                uint64_t rt0 = round_trips, f0 = failures, t0 = mono_usec();
                t_end = t0 + (uint64_t) (secs * USEC_PER_SEC);
                while (mono_usec() < t_end) {
                        int n = epoll_wait(ep, evs, 256, 100);
                        for (int i = 0; i < n; i++)
                                link_client_dispatch(((Worker *) evs[i].data.ptr)->c);
                }
                double dt = (double) (mono_usec() - t0) / USEC_PER_SEC;
                printf("workers %u: %.0f round-trips/s (%llu in %.1f s, %llu failures, %u/%u connected; "
                       "process RSS +%ld KiB for them, %.1f KiB a worker, both ends)\n",
                       nw, (double) (round_trips - rt0) / dt, (unsigned long long) (round_trips - rt0), dt,
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
