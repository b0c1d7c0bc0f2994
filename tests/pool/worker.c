/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A simulated worker for the pool's end-to-end tests, built only on net/
 * (link.h's client), as harvesterd will be:
 *
 *   pool-worker run --url URL --state-dir DIR --pool-key B64 [options]
 *       hello, then fetch tasks, run each (exec: argv with the inputs in a
 *       scratch directory; stdout is the output), send signed results, until
 *       --results N are accepted or no work came for --idle-exit SEC.
 *       --lie: report a wrong output (a disagreeing replica).
 *       --hold: fetch once, print the tasks, exit without answering (a worker
 *       that vanished holding leases).
 *       --once: one fetch round, then exit.
 *   pool-worker encode-hello FILE --state-dir DIR --pool-key B64
 *       write one signed hello request to FILE, for a raw peer (nngcat) to
 *       send, and send again: a replay.
 *   pool-worker decode FILE --pool-key B64
 *       decode a reply received by another peer (nanocat), print its type
 *       and error code; exit 0 if it is a well-formed, pool-signed message.
 *
 * Prints one line per event ("welcome" after each hello the pool answered,
 * "task ID", "result ID accepted", "forged N", "error ..."), and a closing
 * "done: fetched N results M forged F".
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "harvester/macro.h"
#include "net/link.h"

static uint64_t mono_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

/* Run an exec task in a scratch directory; stdout (up to the file limit)
 * becomes the output "stdout". */
static int run_exec(const Hlink__TaskSpec *s, uint8_t **ret_out, size_t *ret_len, int *ret_exit, uint64_t *ret_cpu)
{
        char dir[] = "/tmp/pool-worker.XXXXXX";
        int p[2];
        if (!mkdtemp(dir))
                return -errno;
        for (size_t i = 0; i < s->n_inputs; i++) {
                char path[4096];
                snprintf(path, sizeof(path), "%s/%s", dir, s->inputs[i]->name);
                int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd >= 0) {
                        (void) !write(fd, s->inputs[i]->data.data, s->inputs[i]->data.len);
                        close(fd);
                }
        }
        /* protobuf-c's repeated fields carry a count, no NULL at the end. */
        _cleanup_free_ char **av = calloc(s->n_argv + 1, sizeof(char *));
        if (!av || s->n_argv == 0)
                return -EINVAL;
        memcpy(av, s->argv, s->n_argv * sizeof(char *));
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid == 0) {
                dup2(p[1], 1);
                if (chdir(dir) < 0)
                        _exit(127);
                execvp(av[0], av);
                _exit(127);
        }
        close(p[1]);
        size_t cap = LINK_FILE_MAX_BYTES, len = 0;
        uint8_t *out = malloc(cap);
        ssize_t n;
        while (out && (n = read(p[0], out + len, cap - len)) > 0 && len < cap)
                len += (size_t) n;
        close(p[0]);
        int status = 0;
        struct rusage ru;
        wait4(pid, &status, 0, &ru);
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        (void) !system(cmd);
        *ret_out = out;
        *ret_len = len;
        *ret_exit = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        *ret_cpu = (uint64_t) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * USEC_PER_SEC +
                   (uint64_t) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
        return 0;
}

static int cmd_decode(const char *path, const uint8_t *pool_pk)
{
        uint8_t buf[LINK_MSG_MAX_BYTES];
        FILE *f = fopen(path, "re");
        if (!f) {
                printf("error: %s: %s\n", path, strerror(errno));
                return 1;
        }
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LinkMsg *m = NULL;
        int r = link_decode(buf, n, &m);
        if (r < 0) {
                printf("error: reply of %zu bytes does not decode: %s\n", n, strerror(-r));
                return 1;
        }
        if (sodium_memcmp(m->env->sender.data, pool_pk, LINK_KEY_BYTES) != 0) {
                printf("error: reply not signed by the pool\n");
                link_msg_free(m);
                return 1;
        }
        if (m->body->msg_case == HLINK__BODY__MSG_ERROR)
                printf("error-reply %s: %s\n", link_error_name(m->body->error->code), m->body->error->message);
        else
                printf("reply type %d\n", m->body->msg_case);
        link_msg_free(m);
        return 0;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "url", required_argument, NULL, 'u' },
                { "state-dir", required_argument, NULL, 's' },
                { "pool-key", required_argument, NULL, 'k' },
                { "results", required_argument, NULL, 'n' },
                { "idle-exit", required_argument, NULL, 'i' },
                { "max-fetch", required_argument, NULL, 'm' },
                { "timeout-ms", required_argument, NULL, 't' },
                { "arch", required_argument, NULL, 'a' },
                { "cores", required_argument, NULL, 'c' },
                { "tls-ca", required_argument, NULL, 'C' },
                { "lie", no_argument, NULL, 'L' },
                { "hold", no_argument, NULL, 'H' },
                { "once", no_argument, NULL, 'O' },
                { "opencl", no_argument, NULL, 'G' },
                {}
        };
        LinkClientConfig cfg = { .timeout_ms = 2000 };
        const char *key = NULL, *arch = "x86_64";
        unsigned want_results = 0, max_fetch = 4, cores = 2;
        uint64_t idle_usec = 3 * USEC_PER_SEC;
        bool lie = false, hold = false, once = false, opencl = false;
        int c;

        if (argc < 2) {
                fprintf(stderr, "usage: pool-worker run|decode ...\n");
                return 2;
        }
        const char *verb = argv[1];
        optind = 2;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0)
                switch (c) {
                case 'u':
                        cfg.url = optarg;
                        break;
                case 's':
                        cfg.state_dir = optarg;
                        break;
                case 'k':
                        key = optarg;
                        break;
                case 'n':
                        want_results = (unsigned) atoi(optarg);
                        break;
                case 'i':
                        idle_usec = (uint64_t) (atof(optarg) * USEC_PER_SEC);
                        break;
                case 'm':
                        max_fetch = (unsigned) atoi(optarg);
                        break;
                case 't':
                        cfg.timeout_ms = (uint32_t) atoi(optarg);
                        break;
                case 'a':
                        arch = optarg;
                        break;
                case 'c':
                        cores = (unsigned) atoi(optarg);
                        break;
                case 'C':
                        cfg.tls_ca_file = optarg;
                        cfg.tls_server_name = "localhost";
                        break;
                case 'L':
                        lie = true;
                        break;
                case 'H':
                        hold = true;
                        break;
                case 'O':
                        once = true;
                        break;
                case 'G':
                        opencl = true;
                        break;
                default:
                        return 2;
                }
        if (!key || link_key_from_base64(key, cfg.pool_key) < 0) {
                fprintf(stderr, "pool-worker: --pool-key B64 is required\n");
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (!strcmp(verb, "decode"))
                return optind < argc ? cmd_decode(argv[optind], cfg.pool_key) : 2;
        if (!strcmp(verb, "encode-hello") && optind < argc && cfg.state_dir) {
                LinkIdentity id;
                Hlink__Body b = HLINK__BODY__INIT;
                Hlink__Hello h = HLINK__HELLO__INIT;
                Hlink__Capabilities cp = HLINK__CAPABILITIES__INIT;
                struct timespec ts;
                void *buf;
                size_t len;
                mkdir(cfg.state_dir, 0700);
                if (link_identity_worker(cfg.state_dir, &id) < 0)
                        return 1;
                uint8_t kx_pk[LINK_KX_BYTES], kx_sk[LINK_KX_BYTES];
                cp.arch = (char *) arch;
                cp.cores = cores;
                h.caps = &cp;
                h.agent = "pool-worker/raw";
                /* A raw peer never uses the session; the exchange is there
                 * because a v2 hello must carry one. */
                if (link_kx_keypair(kx_pk, kx_sk) < 0)
                        return 1;
                h.kx_public = (ProtobufCBinaryData) { LINK_KX_BYTES, kx_pk };
                b.msg_case = HLINK__BODY__MSG_HELLO;
                b.hello = &h;
                clock_gettime(CLOCK_REALTIME, &ts);
                if (link_encode(&id, &b, NULL, (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000,
                                NULL, &buf, &len) < 0)
                        return 1;
                FILE *f = fopen(argv[optind], "we");
                if (!f || fwrite(buf, 1, len, f) != len)
                        return 1;
                fclose(f);
                free(buf);
                return 0;
        }
        if (strcmp(verb, "run") || !cfg.url || !cfg.state_dir) {
                fprintf(stderr, "pool-worker run: --url and --state-dir are required\n");
                return 2;
        }
        mkdir(cfg.state_dir, 0700);

        LinkClient *cl = NULL;
        int r = link_client_new(&cfg, &cl);
        if (r < 0) {
                printf("error: client: %s\n", strerror(-r));
                return 1;
        }
        Hlink__Capabilities caps = HLINK__CAPABILITIES__INIT;
        Hlink__Device dev = HLINK__DEVICE__INIT, *devs[] = { &dev };
        caps.arch = (char *) arch;
        caps.cores = cores;
        caps.memory_bytes = 1ULL << 30;
        caps.cpu_budget_ppm = 10000;
        if (opencl) {
                dev.api = HLINK__DEVICE_API__API_OPENCL;
                dev.name = "pocl";
                caps.devices = devs;
                caps.n_devices = 1;
        }

        unsigned fetched = 0, results = 0, forged_total = 0;
        bool welcomed = false;
        uint64_t last_work = mono_usec();
        int rc = 0;
        for (;;) {
                if (!welcomed) {
                        uint32_t lease = 0;
                        r = link_client_hello(cl, &caps, "pool-worker/1", &lease);
                        if (r < 0) {
                                printf("error: hello: %s\n", strerror(-r));
                                if (r == -EKEYREJECTED) {
                                        rc = 3;         /* not our pool: never retried */
                                        break;
                                }
                                goto idle;
                        }
                        printf("welcome\n");
                        welcomed = true;
                }
                LinkTask *tasks = NULL;
                unsigned forged = 0;
                int n = link_client_fetch(cl, max_fetch, &tasks, &forged);
                if (n < 0) {
                        printf("error: fetch: %s\n", strerror(-n));
                        /* The pool forgot us (a new database) or went away. */
                        welcomed = false;
                        goto idle;
                }
                forged_total += forged;
                if (forged)
                        printf("forged %u\n", forged);
                for (int i = 0; i < n; i++) {
                        printf("task %s\n", tasks[i].spec->id);
                        fetched++;
                }
                if (hold || (once && n == 0)) {
                        link_tasks_free(tasks, (size_t) n);
                        break;
                }
                for (int i = 0; i < n; i++) {
                        const Hlink__TaskSpec *s = tasks[i].spec;
                        Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT;
                        Hlink__File out = HLINK__FILE__INIT, *outs[] = { &out };
                        uint8_t *data = NULL;
                        size_t len = 0;
                        int exit_code = 0;
                        uint64_t cpu = 0, t0 = mono_usec();

                        if (s->kind == HLINK__KIND__KIND_EXEC && run_exec(s, &data, &len, &exit_code, &cpu) >= 0)
                                rb.status = HLINK__STATUS__STATUS_OK;
                        else
                                rb.status = HLINK__STATUS__STATUS_FAILED;
                        if (lie && data && len > 0)
                                data[0] ^= 0x20;
                        rb.task_id = s->id;
                        rb.exit_code = exit_code;
                        rb.cpu_usec = cpu;
                        rb.wall_usec = mono_usec() - t0;
                        rb.spec_sha256 = (ProtobufCBinaryData) { LINK_HASH_BYTES, tasks[i].spec_sha256 };
                        out.name = "stdout";
                        out.data = (ProtobufCBinaryData) { len, data };
                        rb.outputs = outs;
                        rb.n_outputs = 1;
                        /* Kept until acknowledged: retried while the pool is away. */
                        uint64_t give_up = mono_usec() + 30 * USEC_PER_SEC;
                        for (;;) {
                                bool accepted = false;
                                r = link_client_send_result(cl, &rb, &accepted);
                                if (r >= 0) {
                                        printf("result %s %s\n", s->id, accepted ? "accepted" : "refused");
                                        results += accepted;
                                        break;
                                }
                                printf("error: result %s: %s\n", s->id, strerror(-r));
                                if (mono_usec() > give_up)
                                        break;
                                if (r == -ENOENT)
                                        break;          /* not ours any more */
                                /* The pool forgot us (restarted: our session died
                                 * with it): hello again, then resend. */
                                if (r == -ENOTCONN && link_client_hello(cl, &caps, "pool-worker/1", NULL) >= 0)
                                        printf("welcome\n");
                                usleep(200 * 1000);
                        }
                        free(data);
                }
                link_tasks_free(tasks, (size_t) n);
                if (n > 0)
                        last_work = mono_usec();
                if (want_results && results >= want_results)
                        break;
                if (once)
                        break;
                if (n > 0)
                        continue;
        idle:
                if (mono_usec() - last_work > idle_usec)
                        break;
                usleep(50 * 1000);
        }
        /* A holding worker vanishes: no goodbye, its leases must lapse. */
        if (!hold)
                link_client_goodbye(cl, "done");
        printf("done: fetched %u results %u forged %u\n", fetched, results, forged_total);
        link_client_free(cl);
        return rc;
}
