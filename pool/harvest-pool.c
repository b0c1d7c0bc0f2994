/* SPDX-License-Identifier: GPL-2.0-or-later */
/* harvest-pool: the operator's one program. Parses arguments, then hands
 * over to the store (pool/store.h) and the server (pool/server.h). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "harvester/macro.h"
#include "net/link.h"
#include "net/relay.h"
#include "pool/server.h"
#include "pool/store.h"

#define DEFAULT_STATE_DIR "/var/lib/harvest-pool"
#define MAX_LISTEN 8

static const char *arg_state_dir = DEFAULT_STATE_DIR;
static bool arg_json;

static uint64_t now_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / NSEC_PER_USEC;
}

static int fail(int r, const char *what)
{
        fprintf(stderr, "harvest-pool: %s: %s\n", what, strerror(r < 0 ? -r : r));
        return 1;
}

static void state_path(char *buf, size_t size, const char *name)
{
        snprintf(buf, size, "%s/%s", arg_state_dir, name);
}

static int open_store(PoolStore **ret)
{
        char p[4096];
        state_path(p, sizeof(p), "pool.db");
        if (access(p, F_OK) < 0)
                return -ENOENT;
        return pool_store_open(p, false, ret);
}

static int load_key(LinkIdentity *ret)
{
        char p[4096];
        state_path(p, sizeof(p), "pool.key");
        return link_identity_load(p, false, ret);
}

/* A whole number in 1..MAX, or -EINVAL. */
static int parse_count(const char *s, unsigned long max, unsigned long *ret)
{
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v < 1 || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* pool.conf: "[Pool]" then Key=Value lines. Only the keys serve reads;
 * a bad value is an error naming the file, line and key (-EINVAL). */
static int read_config(uint32_t *lease_sec, unsigned *hello_rate, unsigned *hello_burst, const char **listen,
                       size_t *n_listen)
{
        const struct { const char *key; unsigned long max; unsigned *to; } counts[] = {
                { "LeaseSec=", 30 * 24 * 3600, lease_sec }, { "HelloRate=", 1000000, hello_rate },
                { "HelloBurst=", 1000000, hello_burst },
        };
        char p[4096], line[1024];
        unsigned n = 0;
        state_path(p, sizeof(p), "pool.conf");
        _cleanup_fclose_ FILE *f = fopen(p, "re");
        if (!f)
                return 0;
        while (fgets(line, sizeof(line), f)) {
                n++;
                line[strcspn(line, "\r\n")] = 0;
                if (!strncmp(line, "Listen=", 7) && *n_listen < MAX_LISTEN && line[7]) {
                        listen[(*n_listen)++] = strdup(line + 7);
                        continue;
                }
                for (size_t i = 0; i < ELEMENTSOF(counts); i++) {
                        size_t kl = strlen(counts[i].key);
                        unsigned long v;
                        if (strncmp(line, counts[i].key, kl))
                                continue;
                        if (parse_count(line + kl, counts[i].max, &v) < 0) {
                                fprintf(stderr, "harvest-pool: %s:%u: %s: not a whole number in 1..%lu\n", p, n,
                                        line, counts[i].max);
                                return -EINVAL;
                        }
                        *counts[i].to = (unsigned) v;
                }
        }
        return 0;
}

static void print_json(json_t *j)
{
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        fputc('\n', stdout);
}

/* --- init ------------------------------------------------------------------ */

static int verb_init(int argc, char **argv)
{
        char p[4096], b64[64];
        LinkIdentity id;
        PoolStore *s = NULL;
        int r;

        if (mkdir(arg_state_dir, 0700) < 0 && errno != EEXIST)
                return fail(-errno, arg_state_dir);
        state_path(p, sizeof(p), "pool.key");
        if (access(p, F_OK) == 0) {
                fprintf(stderr, "harvest-pool: %s is initialised already (its key: harvest-pool key)\n", arg_state_dir);
                return 1;
        }
        r = link_identity_load(p, true, &id);
        if (r < 0)
                return fail(r, p);
        state_path(p, sizeof(p), "pool.db");
        r = pool_store_open(p, true, &s);
        if (r < 0)
                return fail(r, p);
        pool_store_close(s);
        state_path(p, sizeof(p), "pool.conf");
        FILE *f = fopen(p, "wx");
        if (f) {
                fputs("# harvest-pool configuration; see harvest-pool(8).\n"
                      "[Pool]\n"
                      "# Listen=tls+tcp://0.0.0.0:7450\n"
                      "LeaseSec=300\n"
                      "# Hellos taken a second, and at once (see --hello-rate):\n"
                      "# HelloRate=500\n"
                      "# HelloBurst=2000\n", f);
                fclose(f);
        }
        link_key_to_base64(id.pk, b64, sizeof(b64));
        sodium_memzero(&id, sizeof(id));
        if (arg_json) {
                json_t *o = json_pack("{s:s, s:s}", "state_dir", arg_state_dir, "key", b64);
                print_json(o);
                json_decref(o);
        } else {
                printf("%s\n", b64);
                fprintf(stderr, "Pin this key on every worker: [Pool] Key=%s\n", b64);
        }
        return 0;
}

static int verb_key(int argc, char **argv)
{
        LinkIdentity id;
        char b64[64];
        int r = load_key(&id);
        if (r < 0)
                return fail(r, "pool.key");
        link_key_to_base64(id.pk, b64, sizeof(b64));
        sodium_memzero(&id, sizeof(id));
        printf("%s\n", b64);
        return 0;
}

/* --- serve and relay ------------------------------------------------------- */

static int wait_for_signal(void)
{
        sigset_t ss;
        int sig = 0;
        sigemptyset(&ss);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGHUP);
        sigwait(&ss, &sig);
        return sig;
}

static void block_signals(void)
{
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGHUP);
        /* Before NNG starts its threads, so they inherit the mask. */
        pthread_sigmask(SIG_BLOCK, &ss, NULL);
        signal(SIGPIPE, SIG_IGN);
}

static int verb_serve(int argc, char **argv)
{
        static const struct option opts[] = {
                { "listen", required_argument, NULL, 'l' },
                { "lease-sec", required_argument, NULL, 'L' },
                { "contexts", required_argument, NULL, 'c' },
                { "tls-cert", required_argument, NULL, 't' },
                { "hello-rate", required_argument, NULL, 'H' },
                { "hello-burst", required_argument, NULL, 'B' },
                {}
        };
        const char *listen[MAX_LISTEN], *conf_listen[MAX_LISTEN];
        size_t n_listen = 0, n_conf = 0;
        uint32_t lease_sec = 300, arg_lease = 0;
        unsigned arg_rate = 0, arg_burst = 0;
        PoolServerConfig cfg = {};
        PoolStore *store = NULL;
        PoolServer *srv = NULL;
        LinkIdentity id;
        int c, r;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0)
                switch (c) {
                case 'l':
                        if (n_listen < MAX_LISTEN)
                                listen[n_listen++] = optarg;
                        break;
                case 't':
                        cfg.tls_cert_key_file = optarg;
                        break;
                case 'L':
                case 'c':
                case 'H':
                case 'B': {
                        const struct { int c; const char *name; unsigned long max; unsigned *to; } lim[] = {
                                { 'L', "lease-sec", 30 * 24 * 3600, &arg_lease }, { 'c', "contexts", 65536, &cfg.contexts },
                                { 'H', "hello-rate", 1000000, &arg_rate }, { 'B', "hello-burst", 1000000, &arg_burst },
                        };
                        size_t k = 0;
                        unsigned long v;
                        while (lim[k].c != c)
                                k++;
                        if (parse_count(optarg, lim[k].max, &v) < 0) {
                                fprintf(stderr, "harvest-pool serve: --%s %s: not a whole number in 1..%lu\n",
                                        lim[k].name, optarg, lim[k].max);
                                return 2;
                        }
                        *lim[k].to = (unsigned) v;
                        break;
                }
                default:
                        return 2;
                }
        if (read_config(&lease_sec, &cfg.hello_rate, &cfg.hello_burst, conf_listen, &n_conf) < 0)
                return 2;
        if (arg_rate)
                cfg.hello_rate = arg_rate;
        if (arg_burst)
                cfg.hello_burst = arg_burst;
        if (n_listen == 0)
                for (size_t i = 0; i < n_conf; i++)
                        listen[n_listen++] = conf_listen[i];
        if (n_listen == 0) {
                fprintf(stderr, "harvest-pool serve: no --listen URL and no Listen= in pool.conf\n");
                return 2;
        }
        cfg.listen = listen;
        cfg.n_listen = n_listen;
        cfg.lease_sec = arg_lease ? arg_lease : lease_sec;

        r = load_key(&id);
        if (r < 0)
                return fail(r, "pool.key");
        r = open_store(&store);
        if (r < 0)
                return fail(r, "pool.db");
        block_signals();
        r = pool_server_new(store, &id, &cfg, &srv);
        sodium_memzero(&id, sizeof(id));
        if (r < 0) {
                pool_store_close(store);
                return fail(r, "listen");
        }
        for (size_t i = 0; i < n_listen; i++)
                printf("harvest-pool: serving %s (lease %us, %u contexts, %u hellos a second)\n", listen[i],
                       cfg.lease_sec, cfg.contexts ? cfg.contexts : 64, cfg.hello_rate ? cfg.hello_rate : POOL_HELLO_RATE);
        fflush(stdout);
        int sig = wait_for_signal();
        uint64_t req, err, commits;
        pool_server_stats(srv, &req, &err, &commits);
        pool_server_free(srv);
        pool_store_close(store);
        printf("harvest-pool: stopped by signal %d after %llu requests, %llu error replies, %llu commits\n", sig,
               (unsigned long long) req, (unsigned long long) err, (unsigned long long) commits);
        return 0;
}

static int verb_relay(int argc, char **argv)
{
        static const struct option opts[] = {
                { "upstream", required_argument, NULL, 'u' },
                { "listen", required_argument, NULL, 'l' },
                { "tls-cert", required_argument, NULL, 't' },
                { "tls-ca", required_argument, NULL, 'a' },
                {}
        };
        const char *up = NULL, *lis = NULL, *cert = NULL, *ca = NULL;
        int c;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0)
                switch (c) {
                case 'u':
                        up = optarg;
                        break;
                case 'l':
                        lis = optarg;
                        break;
                case 't':
                        cert = optarg;
                        break;
                case 'a':
                        ca = optarg;
                        break;
                default:
                        return 2;
                }
        if (!up || !lis) {
                fprintf(stderr, "harvest-pool relay: --upstream URL and --listen URL are required\n");
                return 2;
        }
        signal(SIGPIPE, SIG_IGN);
        printf("harvest-pool: relaying %s -> %s\n", lis, up);
        fflush(stdout);
        int r = link_relay(up, lis, cert, ca);
        return r < 0 ? fail(r, "relay") : 0;
}

/* --- submit ---------------------------------------------------------------- */

typedef struct SubmitSpec {
        const char *id;
        int kind;
        const char **argv;
        size_t n_argv;
        const char **input_names;
        uint8_t **input_data;
        size_t *input_len;
        size_t n_inputs;
        unsigned replicas, quorum;
        const char *arch;
        unsigned cores;
        uint64_t memory;
        int gpu;
        uint64_t deadline_sec;
        const char *kernel;
        uint64_t global_size[LINK_DIMS_MAX];
        size_t n_global;
        uint64_t local_size[LINK_DIMS_MAX];
        size_t n_local;
        Hlink__KernelArg **args;
        size_t n_args;
        /* A batch entry's own storage (spec_json_free()): */
        Hlink__KernelArg *arg_store;
        uint8_t (*arg_values)[8];
        uint8_t **decoded;              /* inputs_base64, decoded */
        size_t n_decoded;
} SubmitSpec;

static int submit_one(PoolStore *store, const LinkIdentity *id, const SubmitSpec *in, char *ret_id, size_t id_size)
{
        Hlink__TaskSpec s = HLINK__TASK_SPEC__INIT;
        Hlink__Needs needs = HLINK__NEEDS__INIT;
        Hlink__File files[LINK_FILES_MAX], *fp[LINK_FILES_MAX];
        uint8_t sig[LINK_SIG_BYTES];
        char gen[32];
        uint64_t now = now_usec();
        _cleanup_free_ void *spec = NULL;
        size_t len;
        int r;

        if (in->n_inputs > LINK_FILES_MAX)
                return -EMSGSIZE;
        if (!in->id) {
                uint8_t rnd[6];
                randombytes_buf(rnd, sizeof(rnd));
                snprintf(gen, sizeof(gen), "t-");
                sodium_bin2hex(gen + 2, sizeof(gen) - 2, rnd, sizeof(rnd));
        }
        s.id = (char *) (in->id ? in->id : gen);
        s.kind = in->kind;
        s.argv = (char **) in->argv;
        s.n_argv = in->n_argv;
        for (size_t i = 0; i < in->n_inputs; i++) {
                hlink__file__init(&files[i]);
                files[i].name = (char *) in->input_names[i];
                files[i].data = (ProtobufCBinaryData) { in->input_len[i], in->input_data[i] };
                fp[i] = &files[i];
        }
        s.inputs = fp;
        s.n_inputs = in->n_inputs;
        needs.arch = (char *) (in->arch ? in->arch : "");
        needs.cores = in->cores;
        needs.memory_bytes = in->memory;
        needs.gpu = in->gpu;
        s.needs = &needs;
        s.issued_usec = now;
        s.deadline_usec = in->deadline_sec ? now + in->deadline_sec * USEC_PER_SEC : 0;
        s.kernel = (char *) (in->kernel ? in->kernel : "");
        s.global_size = (uint64_t *) in->global_size;
        s.n_global_size = in->n_global;
        s.local_size = (uint64_t *) in->local_size;
        s.n_local_size = in->n_local;
        s.args = in->args;
        s.n_args = in->n_args;

        r = link_task_sign(id, &s, &spec, &len, sig);
        if (r < 0)
                return r;
        PoolTaskNew t = {
                .id = s.id, .kind = in->kind, .spec = spec, .spec_len = len, .signature = sig,
                .replicas = in->replicas ? in->replicas : 1,
                .quorum = in->quorum ? in->quorum : (in->replicas ? in->replicas / 2 + 1 : 1),
                .need_arch = needs.arch, .need_cores = in->cores, .need_memory_bytes = in->memory,
                .need_gpu = in->gpu, .deadline_usec = s.deadline_usec,
        };
        r = pool_store_add_task(store, &t, now);
        if (r < 0)
                return r;
        snprintf(ret_id, id_size, "%s", s.id);
        return 0;
}

static int parse_kind(const char *s)
{
        if (!strcmp(s, "exec"))
                return HLINK__KIND__KIND_EXEC;
        if (!strcmp(s, "opencl"))
                return HLINK__KIND__KIND_OPENCL;
        if (!strcmp(s, "cuda"))
                return HLINK__KIND__KIND_CUDA;
        return -EINVAL;
}

static int parse_gpu(const char *s)
{
        if (!strcmp(s, "opencl"))
                return HLINK__DEVICE_API__API_OPENCL;
        if (!strcmp(s, "cuda"))
                return HLINK__DEVICE_API__API_CUDA;
        if (!strcmp(s, "none") || !*s)
                return 0;
        return -EINVAL;
}

static int read_file(const char *path, uint8_t **ret, size_t *ret_len)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        struct stat st;
        if (!f)
                return -errno;
        if (fstat(fileno(f), &st) < 0)
                return -errno;
        if ((size_t) st.st_size > LINK_FILE_MAX_BYTES)
                return -EMSGSIZE;
        uint8_t *b = malloc((size_t) st.st_size + 1);
        if (!b)
                return -ENOMEM;
        size_t n = fread(b, 1, (size_t) st.st_size, f);
        *ret = b;
        *ret_len = n;
        return 0;
}

#define KERNEL_ARGS_MAX 32

/* "N[,N[,N]]": an ND-range's sizes. */
static int parse_dims(const char *s, uint64_t *v, size_t *ret_n)
{
        size_t n = 0;
        char *end;
        do {
                if (n == LINK_DIMS_MAX)
                        return -EINVAL;
                errno = 0;
                v[n++] = strtoull(s, &end, 10);
                if (errno || end == s || (*end && *end != ','))
                        return -EINVAL;
                s = end + 1;
        } while (*end);
        *ret_n = n;
        return 0;
}

/* One --arg of an opencl/cuda task: in:NAME=FILE, inout:NAME=FILE (FILE
 * becomes the input NAME), out:NAME=BYTES, local:BYTES, or a scalar
 * u32:V, i32:V, u64:V, i64:V, f32:V, f64:V (little-endian, as x86 and GPUs). */
static int parse_kernel_arg(char *s, Hlink__KernelArg *a, uint8_t value[8], const char **ret_name,
                            const char **ret_file)
{
        char *colon = strchr(s, ':'), *eq, *end;
        hlink__kernel_arg__init(a);
        *ret_file = NULL;
        if (!colon)
                return -EINVAL;
        *colon = 0;
        const char *kind = s, *rest = colon + 1;
        errno = 0;
        if (!strcmp(kind, "in") || !strcmp(kind, "inout") || !strcmp(kind, "out")) {
                if (!(eq = strchr(rest, '=')) || eq == rest)
                        return -EINVAL;
                *eq = 0;
                a->name = (char *) rest;
                a->kind = !strcmp(kind, "in") ? HLINK__ARG_KIND__ARG_IN :
                          !strcmp(kind, "out") ? HLINK__ARG_KIND__ARG_OUT : HLINK__ARG_KIND__ARG_INOUT;
                if (a->kind == HLINK__ARG_KIND__ARG_OUT) {
                        a->bytes = strtoull(eq + 1, &end, 10);
                        return errno || *end || end == eq + 1 ? -EINVAL : 0;
                }
                *ret_name = rest;
                *ret_file = eq + 1;
                return 0;
        }
        if (!strcmp(kind, "local")) {
                a->kind = HLINK__ARG_KIND__ARG_LOCAL;
                a->bytes = strtoull(rest, &end, 10);
                return errno || *end || end == rest ? -EINVAL : 0;
        }
        a->kind = HLINK__ARG_KIND__ARG_SCALAR;
        a->value.data = value;
        if (kind[0] == 'f') {
                double d = strtod(rest, &end);
                float f = (float) d;
                a->value.len = !strcmp(kind, "f32") ? 4 : !strcmp(kind, "f64") ? 8 : 0;
                memcpy(value, a->value.len == 4 ? (void *) &f : (void *) &d, a->value.len);
        } else {
                uint64_t u = kind[0] == 'i' ? (uint64_t) strtoll(rest, &end, 0) : strtoull(rest, &end, 0);
                a->value.len = !strcmp(kind + 1, "32") ? 4 : !strcmp(kind + 1, "64") ? 8 : 0;
                if (kind[0] != 'i' && kind[0] != 'u')
                        a->value.len = 0;
                memcpy(value, &u, a->value.len);   /* little-endian hosts */
        }
        return errno || *end || end == rest || a->value.len == 0 ? -EINVAL : 0;
}

/* Why the last batch entry was refused, for the message. */
static const char *batch_why;

static int batch_bad(const char *why)
{
        batch_why = why;
        return -EINVAL;
}

/* A batch entry's ND-range sizes: at most LINK_DIMS_MAX positive integers. */
static int dims_from_json(json_t *a, uint64_t *v, size_t *ret_n)
{
        json_t *x;
        size_t i;
        if (a && !json_is_array(a))
                return -EINVAL;
        if (json_array_size(a) > LINK_DIMS_MAX)
                return -EMSGSIZE;
        json_array_foreach(a, i, x) {
                if (!json_is_integer(x) || json_integer_value(x) <= 0)
                        return -EINVAL;
                v[i] = (uint64_t) json_integer_value(x);
        }
        *ret_n = json_array_size(a);
        return 0;
}

/* One entry of a batch task's "args", in --arg's words: {"kind": "in" |
 * "inout", "name": N}, {"kind": "out", "name": N, "bytes": B}, {"kind":
 * "local", "bytes": B}, {"kind": "u32" | "i32" | "u64" | "i64" | "f32" |
 * "f64", "value": V} (V a number, or a string as --arg takes it). */
static int arg_from_json(json_t *j, Hlink__KernelArg *a, uint8_t value[8])
{
        const char *kind = json_string_value(json_object_get(j, "kind"));
        const char *name = json_string_value(json_object_get(j, "name"));
        json_t *bytes = json_object_get(j, "bytes"), *val = json_object_get(j, "value");
        const char *file;
        char buf[512];

        hlink__kernel_arg__init(a);
        if (!kind)
                return batch_bad("an \"args\" entry needs a \"kind\"");
        if (!strcmp(kind, "in") || !strcmp(kind, "inout") || !strcmp(kind, "out")) {
                if (!name || !*name)
                        return batch_bad("an in, inout or out argument needs a \"name\"");
                a->name = (char *) name;
                a->kind = !strcmp(kind, "in") ? HLINK__ARG_KIND__ARG_IN :
                          !strcmp(kind, "out") ? HLINK__ARG_KIND__ARG_OUT : HLINK__ARG_KIND__ARG_INOUT;
                if (a->kind != HLINK__ARG_KIND__ARG_OUT)
                        return 0;       /* sized by the input NAME */
        } else if (!strcmp(kind, "local"))
                a->kind = HLINK__ARG_KIND__ARG_LOCAL;
        else {
                /* A scalar: the same parser as --arg, one vocabulary for both. */
                if (json_is_integer(val))
                        snprintf(buf, sizeof(buf), "%s:%lld", kind, (long long) json_integer_value(val));
                else if (json_is_real(val))
                        snprintf(buf, sizeof(buf), "%s:%.17g", kind, json_real_value(val));
                else if (json_is_string(val))
                        snprintf(buf, sizeof(buf), "%s:%s", kind, json_string_value(val));
                else
                        return batch_bad("a scalar argument needs a \"value\"");
                if (parse_kernel_arg(buf, a, value, &(const char *){ NULL }, &file) < 0 ||
                    a->kind != HLINK__ARG_KIND__ARG_SCALAR)
                        return batch_bad("an \"args\" entry of unknown kind, or a value its kind cannot hold");
                return 0;
        }
        if (!json_is_integer(bytes) || json_integer_value(bytes) <= 0)
                return batch_bad("an out or local argument needs \"bytes\" > 0");
        a->bytes = (uint64_t) json_integer_value(bytes);
        return 0;
}

/* One batch entry (JSON object) into a SubmitSpec; strings point into J. */
static int spec_from_json(json_t *j, SubmitSpec *s)
{
        json_t *v, *a;
        size_t i;
        int r;
        memset(s, 0, sizeof(*s));
        batch_why = NULL;
        s->kind = HLINK__KIND__KIND_EXEC;
        if (!json_is_object(j))
                return batch_bad("not a JSON object");
        s->id = json_string_value(json_object_get(j, "id"));
        if ((v = json_object_get(j, "kind")) && (s->kind = parse_kind(json_string_value(v) ?: "")) < 0)
                return batch_bad("\"kind\" is exec, opencl or cuda");
        a = json_object_get(j, "argv");
        s->n_argv = json_array_size(a);
        s->argv = calloc(s->n_argv + 1, sizeof(char *));
        json_array_foreach(a, i, v)
                if (!(s->argv[i] = json_string_value(v)))
                        return -EINVAL;
        s->replicas = (unsigned) json_integer_value(json_object_get(j, "replicas"));
        s->quorum = (unsigned) json_integer_value(json_object_get(j, "quorum"));
        s->deadline_sec = (uint64_t) json_integer_value(json_object_get(j, "deadline_sec"));
        s->kernel = json_string_value(json_object_get(j, "kernel"));
        if ((r = dims_from_json(json_object_get(j, "global_size"), s->global_size, &s->n_global)) < 0 ||
            (r = dims_from_json(json_object_get(j, "local_size"), s->local_size, &s->n_local)) < 0) {
                batch_why = "\"global_size\" and \"local_size\" are 1 to 3 positive integers";
                return r;
        }
        bool gpu_kind = s->kind == HLINK__KIND__KIND_OPENCL || s->kind == HLINK__KIND__KIND_CUDA;
        /* Only a worker with such a device can run it, unless needs says. */
        if (gpu_kind)
                s->gpu = s->kind == HLINK__KIND__KIND_CUDA ? HLINK__DEVICE_API__API_CUDA : HLINK__DEVICE_API__API_OPENCL;
        json_t *needs = json_object_get(j, "needs");
        if (needs) {
                s->arch = json_string_value(json_object_get(needs, "arch"));
                s->cores = (unsigned) json_integer_value(json_object_get(needs, "cores"));
                s->memory = (uint64_t) json_integer_value(json_object_get(needs, "memory_bytes"));
                if ((v = json_object_get(needs, "gpu")) && (s->gpu = parse_gpu(json_string_value(v) ?: "")) < 0)
                        return batch_bad("\"needs\".\"gpu\" is opencl, cuda or none");
        }
        /* inputs: {"name": "text"}; inputs_base64: {"name": "base64"}; source:
         * "text", the input kernel.cl (opencl) or kernel.ptx (cuda). */
        json_t *inputs = json_object_get(j, "inputs"), *inputs64 = json_object_get(j, "inputs_base64");
        json_t *source = json_object_get(j, "source");
        const char *name;
        size_t n = json_object_size(inputs) + json_object_size(inputs64) + 1;
        if ((inputs && !json_is_object(inputs)) || (inputs64 && !json_is_object(inputs64)))
                return batch_bad("\"inputs\" and \"inputs_base64\" are objects of name to data");
        s->input_names = calloc(n, sizeof(char *));
        s->input_data = calloc(n, sizeof(uint8_t *));
        s->input_len = calloc(n, sizeof(size_t));
        s->decoded = calloc(n, sizeof(uint8_t *));
        if (!s->input_names || !s->input_data || !s->input_len || !s->decoded)
                return -ENOMEM;
        json_object_foreach(inputs, name, v) {
                if (!json_is_string(v))
                        return batch_bad("an \"inputs\" value is not a string");
                s->input_names[s->n_inputs] = name;
                s->input_data[s->n_inputs] = (uint8_t *) json_string_value(v);
                s->input_len[s->n_inputs++] = json_string_length(v);
        }
        json_object_foreach(inputs64, name, v) {
                const char *b64 = json_string_value(v);
                size_t len = 0, max = b64 ? strlen(b64) / 4 * 3 + 3 : 0;
                uint8_t *d = b64 ? malloc(max + 1) : NULL;
                if (!b64)
                        return batch_bad("an \"inputs_base64\" value is not a string");
                if (!d)
                        return -ENOMEM;
                s->decoded[s->n_decoded++] = d;
                if (sodium_base642bin(d, max, b64, strlen(b64), "\n\r ", &len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0)
                        return batch_bad("an \"inputs_base64\" value is not base64");
                s->input_names[s->n_inputs] = name;
                s->input_data[s->n_inputs] = d;
                s->input_len[s->n_inputs++] = len;
        }
        if (source) {
                if (!gpu_kind || !json_is_string(source))
                        return batch_bad("\"source\" is the text of an opencl or cuda task's kernel");
                s->input_names[s->n_inputs] = s->kind == HLINK__KIND__KIND_CUDA ? "kernel.ptx" : "kernel.cl";
                s->input_data[s->n_inputs] = (uint8_t *) json_string_value(source);
                s->input_len[s->n_inputs++] = json_string_length(source);
        }
        a = json_object_get(j, "args");
        if (a && !json_is_array(a))
                return batch_bad("\"args\" is an array");
        n = json_array_size(a);
        s->args = calloc(n + 1, sizeof(*s->args));
        s->arg_store = calloc(n + 1, sizeof(*s->arg_store));
        s->arg_values = calloc(n + 1, sizeof(*s->arg_values));
        if (!s->args || !s->arg_store || !s->arg_values)
                return -ENOMEM;
        json_array_foreach(a, i, v) {
                if ((r = arg_from_json(v, &s->arg_store[i], s->arg_values[i])) < 0)
                        return r;
                s->args[s->n_args++] = &s->arg_store[i];
        }
        return 0;
}

static void spec_json_free(SubmitSpec *s)
{
        free(s->argv);
        free(s->input_names);
        free(s->input_data);
        free(s->input_len);
        for (size_t i = 0; i < s->n_decoded; i++)
                free(s->decoded[i]);
        free(s->decoded);
        free(s->args);
        free(s->arg_store);
        free(s->arg_values);
}

/* What a refused batch entry gets said about it. */
static const char *batch_error(int r)
{
        if (batch_why)
                return batch_why;
        if (r == -EBADMSG)
                return "a field breaks a rule of the link (net/WIRE.md: kernel name, source, sizes, args)";
        if (r == -EMSGSIZE)
                return "over a limit of the link (net/WIRE.md)";
        return strerror(-r);
}

static int submit_batch(PoolStore *store, const LinkIdentity *id, const char *path, json_t *ids)
{
        json_error_t e;
        _cleanup_fclose_ FILE *f = strcmp(path, "-") ? fopen(path, "re") : NULL;
        FILE *in = strcmp(path, "-") ? f : stdin;
        char *line = NULL;
        size_t cap = 0;
        int lineno = 0, r = 0, c;

        if (!in)
                return -errno;
        c = fgetc(in);
        if (c != EOF)
                ungetc(c, in);
        if (c == '[') {
                /* A JSON array of task objects. */
                json_t *a = json_loadf(in, 0, &e), *v;
                size_t i;
                if (!a) {
                        fprintf(stderr, "harvest-pool submit: %s:%d: %s\n", path, e.line, e.text);
                        return -EINVAL;
                }
                json_array_foreach(a, i, v) {
                        SubmitSpec s;
                        char tid[LINK_ID_MAX + 1];
                        r = spec_from_json(v, &s);
                        if (r >= 0)
                                r = submit_one(store, id, &s, tid, sizeof(tid));
                        spec_json_free(&s);
                        if (r < 0) {
                                fprintf(stderr, "harvest-pool submit: %s: task %zu: %s\n", path, i, batch_error(r));
                                break;
                        }
                        json_array_append_new(ids, json_string(tid));
                }
                json_decref(a);
                return r;
        }
        /* JSON lines: one task object a line. */
        while (getline(&line, &cap, in) > 0) {
                SubmitSpec s;
                char tid[LINK_ID_MAX + 1];
                lineno++;
                if (line[strspn(line, " \t\r\n")] == 0 || line[strspn(line, " \t")] == '#')
                        continue;
                json_t *v = json_loads(line, 0, &e);
                if (!v) {
                        fprintf(stderr, "harvest-pool submit: %s:%d: %s\n", path, lineno, e.text);
                        r = -EINVAL;
                        break;
                }
                r = spec_from_json(v, &s);
                if (r >= 0)
                        r = submit_one(store, id, &s, tid, sizeof(tid));
                spec_json_free(&s);
                json_decref(v);
                if (r < 0) {
                        fprintf(stderr, "harvest-pool submit: %s:%d: %s\n", path, lineno, batch_error(r));
                        break;
                }
                json_array_append_new(ids, json_string(tid));
        }
        free(line);
        return r;
}

static int verb_submit(int argc, char **argv)
{
        static const struct option opts[] = {
                { "id", required_argument, NULL, 'i' },
                { "kind", required_argument, NULL, 'k' },
                { "replicas", required_argument, NULL, 'r' },
                { "quorum", required_argument, NULL, 'q' },
                { "arch", required_argument, NULL, 'a' },
                { "cores", required_argument, NULL, 'c' },
                { "memory", required_argument, NULL, 'm' },
                { "gpu", required_argument, NULL, 'g' },
                { "deadline", required_argument, NULL, 'd' },
                { "input", required_argument, NULL, 'I' },
                { "batch", required_argument, NULL, 'b' },
                { "source", required_argument, NULL, 'S' },
                { "kernel", required_argument, NULL, 'K' },
                { "global", required_argument, NULL, 'G' },
                { "local", required_argument, NULL, 'L' },
                { "arg", required_argument, NULL, 'A' },
                {}
        };
        Hlink__KernelArg kargs[KERNEL_ARGS_MAX], *kargp[KERNEL_ARGS_MAX];
        uint8_t kvals[KERNEL_ARGS_MAX][8];
        const char *source = NULL;
        bool gpu_given = false;
        SubmitSpec s = { .kind = HLINK__KIND__KIND_EXEC };
        const char *names[LINK_FILES_MAX];
        uint8_t *data[LINK_FILES_MAX];
        size_t lens[LINK_FILES_MAX];
        const char *batch = NULL;
        PoolStore *store = NULL;
        LinkIdentity id;
        int c, r;

        s.input_names = names;
        s.input_data = data;
        s.input_len = lens;
        s.args = kargp;
        while ((c = getopt_long(argc, argv, "+", opts, NULL)) >= 0)
                switch (c) {
                case 'i':
                        s.id = optarg;
                        break;
                case 'k':
                        if ((s.kind = parse_kind(optarg)) < 0)
                                return fail(-EINVAL, "--kind (exec, opencl, cuda)");
                        break;
                case 'r':
                        s.replicas = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 'q':
                        s.quorum = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 'a':
                        s.arch = optarg;
                        break;
                case 'c':
                        s.cores = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 'm':
                        s.memory = strtoull(optarg, NULL, 10);
                        break;
                case 'g':
                        if ((s.gpu = parse_gpu(optarg)) < 0)
                                return fail(-EINVAL, "--gpu (opencl, cuda, none)");
                        gpu_given = true;
                        break;
                case 'S':
                        source = optarg;
                        break;
                case 'K':
                        s.kernel = optarg;
                        break;
                case 'G':
                case 'L':
                        if (parse_dims(optarg, c == 'G' ? s.global_size : s.local_size, c == 'G' ? &s.n_global : &s.n_local) < 0)
                                return fail(-EINVAL, c == 'G' ? "--global N[,N[,N]]" : "--local N[,N[,N]]");
                        break;
                case 'A': {
                        const char *file, *name = NULL;
                        if (s.n_args >= KERNEL_ARGS_MAX ||
                            parse_kernel_arg(optarg, &kargs[s.n_args], kvals[s.n_args], &name, &file) < 0)
                                return fail(-EINVAL, "--arg in:NAME=FILE | inout:NAME=FILE | out:NAME=BYTES | local:BYTES | "
                                                     "u32:V | i32:V | u64:V | i64:V | f32:V | f64:V");
                        kargp[s.n_args] = &kargs[s.n_args];
                        s.n_args++;
                        if (file) {
                                if (s.n_inputs >= LINK_FILES_MAX)
                                        return fail(-EINVAL, "--arg: too many inputs");
                                names[s.n_inputs] = name;
                                r = read_file(file, &data[s.n_inputs], &lens[s.n_inputs]);
                                if (r < 0)
                                        return fail(r, file);
                                s.n_inputs++;
                        }
                        break;
                }
                case 'd':
                        s.deadline_sec = strtoull(optarg, NULL, 10);
                        break;
                case 'I': {
                        char *eq = strchr(optarg, '=');
                        if (!eq || s.n_inputs >= LINK_FILES_MAX)
                                return fail(-EINVAL, "--input NAME=FILE");
                        *eq = 0;
                        names[s.n_inputs] = optarg;
                        r = read_file(eq + 1, &data[s.n_inputs], &lens[s.n_inputs]);
                        if (r < 0)
                                return fail(r, eq + 1);
                        s.n_inputs++;
                        break;
                }
                case 'b':
                        batch = optarg;
                        break;
                default:
                        return 2;
                }
        s.argv = (const char **) argv + optind;
        s.n_argv = (size_t) (argc - optind);
        if (s.kind == HLINK__KIND__KIND_OPENCL || s.kind == HLINK__KIND__KIND_CUDA) {
                bool cuda = s.kind == HLINK__KIND__KIND_CUDA;
                /* The source travels as an input of the convention's name. */
                if (!batch && (!source || !s.kernel || s.n_global == 0)) {
                        fprintf(stderr, "harvest-pool submit: an %s task needs --source FILE, --kernel NAME and --global N[,N[,N]]\n",
                                cuda ? "cuda" : "opencl");
                        return 2;
                }
                if (source) {
                        if (s.n_inputs >= LINK_FILES_MAX)
                                return fail(-EINVAL, "--source: too many inputs");
                        names[s.n_inputs] = cuda ? "kernel.ptx" : "kernel.cl";
                        r = read_file(source, &data[s.n_inputs], &lens[s.n_inputs]);
                        if (r < 0)
                                return fail(r, source);
                        s.n_inputs++;
                }
                /* Only a worker with such a device can run it. */
                if (!gpu_given)
                        s.gpu = cuda ? HLINK__DEVICE_API__API_CUDA : HLINK__DEVICE_API__API_OPENCL;
        }
        if (!batch && s.n_argv == 0 && s.kind == HLINK__KIND__KIND_EXEC) {
                fprintf(stderr, "harvest-pool submit: give the program to run (after --) or --batch FILE\n");
                return 2;
        }
        r = load_key(&id);
        if (r < 0)
                return fail(r, "pool.key");
        r = open_store(&store);
        if (r < 0)
                return fail(r, "pool.db");
        json_t *ids = json_array();
        r = 0;
        /* A batch is one transaction: all of it is stored, or none. */
        if (batch && (r = pool_store_begin(store)) >= 0)
                r = pool_store_end(store, submit_batch(store, &id, batch, ids));
        if (batch && r < 0)
                json_array_clear(ids);
        if (!batch) {
                char tid[LINK_ID_MAX + 1];
                r = submit_one(store, &id, &s, tid, sizeof(tid));
                if (r >= 0)
                        json_array_append_new(ids, json_string(tid));
        }
        sodium_memzero(&id, sizeof(id));
        pool_store_close(store);
        for (size_t i = 0; i < s.n_inputs; i++)
                free(data[i]);
        size_t i;
        json_t *v;
        if (arg_json)
                print_json(ids);
        else
                json_array_foreach(ids, i, v)
                        printf("%s\n", json_string_value(v));
        json_decref(ids);
        if (r == -EEXIST)
                return fail(r, "a task with that id exists");
        if (r < 0 && batch) {
                /* The entry and why were said above. */
                fprintf(stderr, "harvest-pool: submit: nothing of %s was stored\n", batch);
                return 1;
        }
        if (r == -EBADMSG || r == -EMSGSIZE) {
                fprintf(stderr, "harvest-pool: submit: %s\n", batch_error(r));
                return 1;
        }
        return r < 0 ? fail(r, "submit") : 0;
}

/* --- listings -------------------------------------------------------------- */

static const char *short_key(json_t *k)
{
        static char buf[16];
        snprintf(buf, sizeof(buf), "%.12s", json_string_value(k) ?: "-");
        return buf;
}

/* The status total of device time beside cpu_usec. It has no column in
 * the store: it is summed from the results listing, which reads it from the
 * signed result bodies. */
static int add_device_total(PoolStore *store, json_t *status)
{
        json_t *res = NULL, *v;
        json_int_t total = 0;
        size_t i;
        int r = pool_store_results_json(store, NULL, false, &res);
        if (r < 0)
                return r;
        json_array_foreach(res, i, v)
                total += json_integer_value(json_object_get(v, "device_usec"));
        json_decref(res);
        return json_object_set_new(status, "device_usec", json_integer(total)) < 0 ? -ENOMEM : 0;
}

static int verb_list(const char *verb, int argc, char **argv)
{
        static const struct option opts[] = {
                { "task", required_argument, NULL, 't' },
                { "outputs", no_argument, NULL, 'o' },
                {}
        };
        const char *task = NULL;
        bool outputs = false;
        PoolStore *store = NULL;
        json_t *j = NULL, *v;
        size_t i;
        int c, r;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0)
                switch (c) {
                case 't':
                        task = optarg;
                        break;
                case 'o':
                        outputs = true;
                        break;
                default:
                        return 2;
                }
        if (optind < argc)
                task = argv[optind];
        r = open_store(&store);
        if (r < 0)
                return fail(r, "pool.db");
        if (!strcmp(verb, "tasks"))
                r = pool_store_tasks_json(store, now_usec(), &j);
        else if (!strcmp(verb, "results"))
                r = pool_store_results_json(store, task, outputs, &j);
        else if (!strcmp(verb, "workers"))
                r = pool_store_workers_json(store, now_usec(), &j);
        else {
                r = pool_store_status_json(store, now_usec(), &j);
                if (r >= 0)
                        r = add_device_total(store, j);
        }
        pool_store_close(store);
        if (r < 0)
                return fail(r, verb);
        if (arg_json) {
                print_json(j);
                json_decref(j);
                return 0;
        }
        if (!strcmp(verb, "tasks")) {
                printf("%-24s %-12s %-6s %8s %6s %7s %6s\n", "ID", "STATE", "KIND", "REPLICAS", "QUORUM", "RESULTS", "LEASED");
                json_array_foreach(j, i, v)
                        printf("%-24s %-12s %-6s %8lld %6lld %7lld %6lld\n", json_string_value(json_object_get(v, "id")),
                               json_string_value(json_object_get(v, "state")), json_string_value(json_object_get(v, "kind")),
                               json_integer_value(json_object_get(v, "replicas")), json_integer_value(json_object_get(v, "quorum")),
                               json_integer_value(json_object_get(v, "results")), json_integer_value(json_object_get(v, "leased")));
        } else if (!strcmp(verb, "results")) {
                printf("%-24s %-12s %-8s %-9s %-16s %10s %11s\n", "TASK", "WORKER", "STATUS", "VERDICT", "HASH", "CPU_USEC",
                       "DEVICE_USEC");
                json_array_foreach(j, i, v)
                        printf("%-24s %-12s %-8s %-9s %-16.16s %10lld %11lld\n", json_string_value(json_object_get(v, "task")),
                               short_key(json_object_get(v, "worker")), json_string_value(json_object_get(v, "status")),
                               json_string_value(json_object_get(v, "verdict")), json_string_value(json_object_get(v, "hash")),
                               json_integer_value(json_object_get(v, "cpu_usec")),
                               json_integer_value(json_object_get(v, "device_usec")));
        } else if (!strcmp(verb, "workers")) {
                printf("%-12s %-8s %5s %7s %6s %9s %6s %12s\n", "WORKER", "ARCH", "CORES", "RESULTS", "AGREED", "DISAGREED",
                       "LEASES", "CPU_USEC");
                json_array_foreach(j, i, v)
                        printf("%-12s %-8s %5lld %7lld %6lld %9lld %6lld %12lld\n", short_key(json_object_get(v, "key")),
                               json_string_value(json_object_get(v, "arch")), json_integer_value(json_object_get(v, "cores")),
                               json_integer_value(json_object_get(v, "results")), json_integer_value(json_object_get(v, "agreed")),
                               json_integer_value(json_object_get(v, "disagreed")), json_integer_value(json_object_get(v, "leases")),
                               json_integer_value(json_object_get(v, "cpu_usec")));
        } else {
                const char *k;
                json_object_foreach(j, k, v) {
                        if (json_is_object(v)) {
                                const char *k2;
                                json_t *v2;
                                json_object_foreach(v, k2, v2)
                                        printf("%s.%s: %lld\n", k, k2, json_integer_value(v2));
                        } else
                                printf("%s: %lld\n", k, json_integer_value(v));
                }
        }
        json_decref(j);
        return 0;
}

static int verb_cancel(int argc, char **argv)
{
        PoolStore *store = NULL;
        int r, rc = 0;
        if (argc < 2) {
                fprintf(stderr, "harvest-pool cancel: which task?\n");
                return 2;
        }
        r = open_store(&store);
        if (r < 0)
                return fail(r, "pool.db");
        json_t *out = json_array();
        for (int i = 1; i < argc; i++) {
                r = pool_store_cancel(store, argv[i], now_usec());
                json_array_append_new(out, json_pack("{s:s, s:b, s:s}", "id", argv[i], "cancelled", r >= 0,
                                                     "error", r < 0 ? (r == -EALREADY ? "not pending" : strerror(-r)) : ""));
                if (r < 0) {
                        rc = 1;
                        if (!arg_json)
                                fprintf(stderr, "harvest-pool cancel: %s: %s\n", argv[i],
                                        r == -EALREADY ? "not pending" : strerror(-r));
                }
        }
        pool_store_close(store);
        if (arg_json)
                print_json(out);
        json_decref(out);
        return rc;
}

/* --- verify: the proof kept with every result ---------------------------------- */

typedef struct Verify {
        size_t results, proven, batch;
        json_t *bad;
} Verify;

static int verify_one(const char *task_id, const uint8_t worker[LINK_KEY_BYTES], const void *body, size_t body_len,
                      const void *proof, size_t proof_len, void *userdata)
{
        Verify *v = userdata;
        char key[64];

        v->results++;
        if (link_result_proof_check(worker, body, body_len, proof, proof_len) >= 0) {
                v->proven++;
                v->batch += proof_len != LINK_SIG_BYTES;
                return 0;
        }
        link_key_to_base64(worker, key, sizeof(key));
        json_array_append_new(v->bad, json_pack("{s:s, s:s}", "task", task_id ? task_id : "", "worker", key));
        if (!arg_json)
                printf("NOT PROVEN  %s  from %s\n", task_id ? task_id : "?", key);
        return 0;
}

/* Check that every stored result is its worker's: its signed body against
 * the signature or batch proof kept with it, and the worker's key. */
static int verb_verify(int argc, char **argv)
{
        Verify v = { .bad = json_array() };
        PoolStore *store = NULL;
        int r;

        if (argc > 1) {
                fprintf(stderr, "harvest-pool verify: takes no arguments\n");
                json_decref(v.bad);
                return 2;
        }
        r = open_store(&store);
        if (r < 0) {
                json_decref(v.bad);
                return fail(r, "pool.db");
        }
        r = pool_store_each_result(store, verify_one, &v);
        pool_store_close(store);
        if (r < 0) {
                json_decref(v.bad);
                return fail(r, "pool.db: results");
        }
        if (arg_json) {
                json_t *o = json_pack("{s:I, s:I, s:I, s:o}", "results", (json_int_t) v.results, "proven",
                                      (json_int_t) v.proven, "batch_proofs", (json_int_t) v.batch, "not_proven", v.bad);
                print_json(o);
                json_decref(o);
        } else {
                printf("%zu result(s): %zu proven to come from their workers (%zu under a batch signature), %zu not\n",
                       v.results, v.proven, v.batch, v.results - v.proven);
                json_decref(v.bad);
        }
        return v.proven == v.results ? 0 : 1;
}

static void usage(FILE *f)
{
        fputs("usage: harvest-pool [--state-dir DIR] [--json] VERB ...\n"
              "  init                          create the database, signing key and config; print the key\n"
              "  key                           print the pool's public key\n"
              "  serve --listen URL [--lease-sec N] [--contexts N] [--tls-cert PEM]\n"
              "        [--hello-rate N] [--hello-burst N]\n"
              "  relay --upstream URL --listen URL [--tls-cert PEM] [--tls-ca PEM]\n"
              "  submit [--id ID] [--replicas N] [--quorum Q] [--arch A] [--cores N] [--memory BYTES]\n"
              "         [--gpu opencl|cuda] [--deadline SEC] [--input NAME=FILE]... -- PROGRAM [ARG]...\n"
              "  submit --kind opencl|cuda --source FILE --kernel NAME --global N[,N,N] [--local N[,N,N]]\n"
              "         [--arg in:NAME=FILE|inout:NAME=FILE|out:NAME=BYTES|local:BYTES|u32:V|i32:V|u64:V|f32:V|...]...\n"
              "  submit --batch FILE           JSON lines or a JSON array of tasks\n"
              "  tasks | workers | status      list\n"
              "  results [--task ID] [--outputs]\n"
              "  cancel ID...\n"
              "  verify                        check every result's signature against its worker's key\n", f);
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "state-dir", required_argument, NULL, 's' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        int c;

        /* Global options come before the verb; "+" stops at it. */
        while ((c = getopt_long(argc, argv, "+h", opts, NULL)) >= 0)
                switch (c) {
                case 's':
                        arg_state_dir = optarg;
                        break;
                case 'j':
                        arg_json = true;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        if (optind >= argc) {
                usage(stderr);
                return 2;
        }
        if (link_init() < 0)
                return fail(-EIO, "libsodium");
        const char *verb = argv[optind];
        /* Options after the verb: the verb's own, plus the global ones again
         * (harvest-pool init --state-dir DIR reads naturally). */
        int vargc = argc - optind;
        char **vargv = argv + optind;
        for (int i = 1; i < vargc; i++) {
                if (!strcmp(vargv[i], "--"))
                        break;
                if (!strcmp(vargv[i], "--json")) {
                        arg_json = true;
                        memmove(&vargv[i], &vargv[i + 1], (size_t) (vargc - i) * sizeof(char *));
                        vargc--, i--;
                } else if (!strcmp(vargv[i], "--state-dir") && i + 1 < vargc) {
                        arg_state_dir = vargv[i + 1];
                        memmove(&vargv[i], &vargv[i + 2], (size_t) (vargc - i - 1) * sizeof(char *));
                        vargc -= 2, i--;
                } else if (!strncmp(vargv[i], "--state-dir=", 12)) {
                        arg_state_dir = vargv[i] + 12;
                        memmove(&vargv[i], &vargv[i + 1], (size_t) (vargc - i) * sizeof(char *));
                        vargc--, i--;
                }
        }
        optind = 1;
        if (!strcmp(verb, "init"))
                return verb_init(vargc, vargv);
        if (!strcmp(verb, "key"))
                return verb_key(vargc, vargv);
        if (!strcmp(verb, "serve"))
                return verb_serve(vargc, vargv);
        if (!strcmp(verb, "relay"))
                return verb_relay(vargc, vargv);
        if (!strcmp(verb, "submit"))
                return verb_submit(vargc, vargv);
        if (!strcmp(verb, "tasks") || !strcmp(verb, "results") || !strcmp(verb, "workers") || !strcmp(verb, "status"))
                return verb_list(verb, vargc, vargv);
        if (!strcmp(verb, "cancel"))
                return verb_cancel(vargc, vargv);
        if (!strcmp(verb, "verify"))
                return verb_verify(vargc, vargv);
        fprintf(stderr, "harvest-pool: unknown verb '%s'\n", verb);
        usage(stderr);
        return 2;
}
