/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The link's codec: framing, limits, signatures, identities. No I/O except
 * the identity file; the clock is always an argument. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "harvester/macro.h"
#include "net/link.h"

#define ENV_DOMAIN    "hlink-env-v2"
#define TASK_DOMAIN   "hlink-task-v1"
#define RESULT_DOMAIN "hlink-result-v1"
#define RESULTS_DOMAIN "hlink-results-v1"
#define HASH_DOMAIN   "hlink-hash-v1"

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_ret;

static void sodium_setup(void)
{
        sodium_ret = sodium_init() < 0 ? -EIO : 0;
}

int link_init(void)
{
        pthread_once(&sodium_once, sodium_setup);
        return sodium_ret;
}

/* --- identities ------------------------------------------------------------ */

static int write_all(int fd, const void *buf, size_t n)
{
        const uint8_t *p = buf;
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

int link_identity_load(const char *path, bool create, LinkIdentity *ret)
{
        LinkIdentity id = {};
        struct stat st;
        int r = link_init();
        if (r < 0)
                return r;

        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT && create) {
                if (crypto_sign_keypair(id.pk, id.sk) != 0)
                        return -EIO;
                fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd < 0)
                        return negative_errno();
                r = write_all(fd, id.sk, sizeof(id.sk));
                if (r >= 0 && fsync(fd) < 0)
                        r = negative_errno();
                if (r < 0) {
                        unlink(path);
                        sodium_memzero(&id, sizeof(id));
                        return r;
                }
                *ret = id;
                sodium_memzero(&id, sizeof(id));
                return 0;
        }
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        /* A secret readable by others is not a secret: refuse to use it. */
        if (st.st_mode & 0077)
                return -EPERM;
        if (!S_ISREG(st.st_mode) || st.st_size != (off_t) sizeof(id.sk))
                return -EBADMSG;
        ssize_t n = read(fd, id.sk, sizeof(id.sk));
        if (n != (ssize_t) sizeof(id.sk)) {
                sodium_memzero(&id, sizeof(id));
                return n < 0 ? negative_errno() : -EBADMSG;
        }
        if (crypto_sign_ed25519_sk_to_pk(id.pk, id.sk) != 0) {
                sodium_memzero(&id, sizeof(id));
                return -EBADMSG;
        }
        *ret = id;
        sodium_memzero(&id, sizeof(id));
        return 0;
}

int link_identity_worker(const char *state_dir, LinkIdentity *ret)
{
        char path[4096];
        if (snprintf(path, sizeof(path), "%s/link-identity.key", state_dir) >= (int) sizeof(path))
                return -ENAMETOOLONG;
        return link_identity_load(path, true, ret);
}

int link_key_to_base64(const uint8_t pk[LINK_KEY_BYTES], char *buf, size_t size)
{
        if (size < sodium_base64_ENCODED_LEN(LINK_KEY_BYTES, sodium_base64_VARIANT_ORIGINAL))
                return -ENOBUFS;
        sodium_bin2base64(buf, size, pk, LINK_KEY_BYTES, sodium_base64_VARIANT_ORIGINAL);
        return 0;
}

int link_key_from_base64(const char *s, uint8_t ret_pk[LINK_KEY_BYTES])
{
        uint8_t pk[LINK_KEY_BYTES];
        size_t n = 0;
        const char *end = NULL;
        int r = link_init();
        if (r < 0)
                return r;
        if (sodium_base642bin(pk, sizeof(pk), s, strlen(s), NULL, &n, &end,
                              sodium_base64_VARIANT_ORIGINAL) != 0 || n != LINK_KEY_BYTES ||
            *end != '\0')
                return -EINVAL;
        memcpy(ret_pk, pk, LINK_KEY_BYTES);
        return 0;
}

/* --- checks ---------------------------------------------------------------- */

bool link_utf8_ok(const char *s, size_t max)
{
        const unsigned char *p = (const unsigned char *) s;
        size_t len = 0;

        if (!s)
                return false;
        while (*p) {
                unsigned c = *p;
                size_t n;
                uint32_t cp;

                if (c < 0x80) {
                        n = 1;
                        cp = c;
                } else if ((c & 0xe0) == 0xc0) {
                        n = 2;
                        cp = c & 0x1f;
                } else if ((c & 0xf0) == 0xe0) {
                        n = 3;
                        cp = c & 0x0f;
                } else if ((c & 0xf8) == 0xf0) {
                        n = 4;
                        cp = c & 0x07;
                } else
                        return false;
                for (size_t i = 1; i < n; i++) {
                        if ((p[i] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i] & 0x3f);
                }
                /* Overlong forms, surrogates and values past U+10FFFF. */
                if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
                    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                        return false;
                p += n;
                len += n;
                if (max > 0 && len > max)
                        return false;
        }
        return true;
}

bool link_id_ok(const char *s)
{
        size_t n = 0;
        if (!s || !*s)
                return false;
        for (; *s; s++, n++) {
                char c = *s;
                if (n >= LINK_ID_MAX)
                        return false;
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == ':' || c == '-'))
                        return false;
        }
        return true;
}

/* A string field: -EMSGSIZE when too long, -EBADMSG when not UTF-8. */
static int check_str(const char *s, size_t max)
{
        if (!s)
                return 0;
        if (strnlen(s, max + 1) > max)
                return -EMSGSIZE;
        return link_utf8_ok(s, 0) ? 0 : -EBADMSG;
}

static int check_id(const char *s)
{
        if (s && strnlen(s, LINK_ID_MAX + 1) > LINK_ID_MAX)
                return -EMSGSIZE;
        return link_id_ok(s) ? 0 : -EBADMSG;
}

/* A file name: one path component, no control characters. */
static int check_file_name(const char *name)
{
        int r = check_str(name, LINK_STR_MAX);
        if (r < 0)
                return r;
        if (!name || !name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
                return -EBADMSG;
        for (const char *p = name; *p; p++)
                if ((unsigned char) *p < 0x20)
                        return -EBADMSG;
        return 0;
}

static int check_file(const Hlink__File *f, bool need_hash)
{
        int r;
        if (!f)
                return -EBADMSG;
        if ((r = check_file_name(f->name)) < 0)
                return r;
        if (f->data.len > LINK_FILE_MAX_BYTES)
                return -EMSGSIZE;
        if (f->sha256.len != 0 && f->sha256.len != LINK_HASH_BYTES)
                return -EBADMSG;
        if (need_hash && f->sha256.len != LINK_HASH_BYTES)
                return -EBADMSG;
        return 0;
}

static int check_files(size_t n, Hlink__File *const *files, bool need_hash)
{
        if (n > LINK_FILES_MAX)
                return -EMSGSIZE;
        for (size_t i = 0; i < n; i++) {
                int r = check_file(files[i], need_hash);
                if (r < 0)
                        return r;
                for (size_t j = 0; j < i; j++)
                        if (!strcmp(files[i]->name, files[j]->name))
                                return -EBADMSG;
        }
        return 0;
}

static int check_caps(const Hlink__Capabilities *c)
{
        int r;
        if (!c)
                return -EBADMSG;
        if ((r = check_str(c->arch, LINK_STR_MAX)) < 0)
                return r;
        if (c->n_devices > LINK_DEVICES_MAX)
                return -EMSGSIZE;
        for (size_t i = 0; i < c->n_devices; i++) {
                if (!c->devices[i])
                        return -EBADMSG;
                if ((r = check_str(c->devices[i]->name, LINK_STR_MAX)) < 0)
                        return r;
        }
        if (c->cpu_budget_ppm > 1000000 || c->gpu_budget_ppm > 1000000)
                return -EBADMSG;
        return 0;
}

static const Hlink__File *spec_input(const Hlink__TaskSpec *s, const char *name)
{
        for (size_t i = 0; name && i < s->n_inputs; i++)
                if (s->inputs[i] && s->inputs[i]->name && !strcmp(s->inputs[i]->name, name))
                        return s->inputs[i];
        return NULL;
}

/* A kernel's name as both OpenCL C and PTX spell an entry point: letters,
 * digits, '_' and (PTX) '$', not starting with a digit. It reaches
 * compilers, logs and file names on the worker, so nothing else passes. */
static bool kernel_name_ok(const char *s)
{
        if (!s || !*s || (*s >= '0' && *s <= '9'))
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                      *s == '_' || *s == '$'))
                        return false;
        return true;
}

/* TaskSpec.args of an opencl/cuda task. Buffers that come back (OUT,
 * INOUT) become result outputs, so they obey the result's file rules
 * here, when the task is signed, rather than fail after running. */
static int check_kernel_args(const Hlink__TaskSpec *s)
{
        size_t outs = 0;
        int r;

        if (s->n_args > LINK_KERNEL_ARGS_MAX)
                return -EMSGSIZE;
        for (size_t i = 0; i < s->n_args; i++) {
                const Hlink__KernelArg *a = s->args[i];
                if (!a)
                        return -EBADMSG;
                switch (a->kind) {
                case HLINK__ARG_KIND__ARG_IN:
                case HLINK__ARG_KIND__ARG_INOUT:
                case HLINK__ARG_KIND__ARG_OUT:
                        if ((r = check_file_name(a->name)) < 0)
                                return r;
                        if (a->value.len != 0)
                                return -EBADMSG;
                        if (a->kind == HLINK__ARG_KIND__ARG_OUT) {
                                if (a->bytes > LINK_FILE_MAX_BYTES)
                                        return -EMSGSIZE;
                                if (a->bytes == 0)
                                        return -EBADMSG;
                        } else if (a->bytes != 0 || !spec_input(s, a->name))
                                /* Its size and contents are the input's. */
                                return -EBADMSG;
                        if (a->kind == HLINK__ARG_KIND__ARG_IN)
                                break;
                        if (++outs > LINK_FILES_MAX)
                                return -EMSGSIZE;
                        for (size_t j = 0; j < i; j++)
                                if ((s->args[j]->kind == HLINK__ARG_KIND__ARG_OUT ||
                                     s->args[j]->kind == HLINK__ARG_KIND__ARG_INOUT) &&
                                    !strcmp(s->args[j]->name, a->name))
                                        return -EBADMSG;
                        break;
                case HLINK__ARG_KIND__ARG_SCALAR:
                        if ((r = check_str(a->name, LINK_STR_MAX)) < 0)
                                return r;
                        if (a->value.len > LINK_SCALAR_MAX_BYTES)
                                return -EMSGSIZE;
                        if (a->value.len == 0 || a->bytes != 0)
                                return -EBADMSG;
                        break;
                case HLINK__ARG_KIND__ARG_LOCAL:
                        if ((r = check_str(a->name, LINK_STR_MAX)) < 0)
                                return r;
                        if (a->bytes > LINK_LOCAL_MAX_BYTES)
                                return -EMSGSIZE;
                        /* CUDA has no __local argument (shared memory is
                         * the kernel's own). */
                        if (a->bytes == 0 || a->value.len != 0 || s->kind == HLINK__KIND__KIND_CUDA)
                                return -EBADMSG;
                        break;
                default:
                        return -EBADMSG;
                }
        }
        return 0;
}

/* The ND-range, kernel, source and arguments of an opencl/cuda task; an
 * exec task carries none of the GPU-only fields. */
static int check_gpu_fields(const Hlink__TaskSpec *s)
{
        uint64_t items = 1;

        if (s->n_global_size > LINK_DIMS_MAX || s->n_local_size > LINK_DIMS_MAX)
                return -EMSGSIZE;
        if (s->kind == HLINK__KIND__KIND_EXEC)
                return s->n_local_size || s->n_args ? -EBADMSG : 0;
        if (s->n_global_size == 0 || (s->n_local_size && s->n_local_size != s->n_global_size))
                return -EBADMSG;
        /* CUDA launches blocks: it has no "the device picks". */
        if (s->kind == HLINK__KIND__KIND_CUDA && s->n_local_size == 0)
                return -EBADMSG;
        for (size_t i = 0; i < s->n_global_size; i++) {
                uint64_t g = s->global_size[i];
                if (g == 0)
                        return -EBADMSG;
                if (items > LINK_WORK_ITEMS_MAX / g)
                        return -EMSGSIZE;
                items *= g;
                if (s->n_local_size && (s->local_size[i] == 0 || g % s->local_size[i] != 0))
                        return -EBADMSG;
        }
        if (!kernel_name_ok(s->kernel))
                return -EBADMSG;
        if (!spec_input(s, s->kind == HLINK__KIND__KIND_CUDA ? "kernel.ptx" : "kernel.cl"))
                return -EBADMSG;
        return check_kernel_args(s);
}

static int check_spec(const Hlink__TaskSpec *s)
{
        int r;
        if ((r = check_id(s->id)) < 0)
                return r;
        if (s->kind < HLINK__KIND__KIND_EXEC || s->kind > HLINK__KIND__KIND_CUDA)
                return -EBADMSG;
        if (s->n_argv > LINK_ARGV_MAX)
                return -EMSGSIZE;
        for (size_t i = 0; i < s->n_argv; i++)
                if ((r = check_str(s->argv[i], LINK_ARG_MAX_BYTES)) < 0)
                        return r;
        if (s->kind == HLINK__KIND__KIND_EXEC && s->n_argv == 0)
                return -EBADMSG;
        if ((r = check_files(s->n_inputs, s->inputs, false)) < 0)
                return r;
        if (s->needs && (r = check_str(s->needs->arch, LINK_STR_MAX)) < 0)
                return r;
        if ((r = check_str(s->kernel, LINK_STR_MAX)) < 0)
                return r;
        return check_gpu_fields(s);
}

static int check_result_body(const Hlink__ResultBody *b)
{
        int r;
        if ((r = check_id(b->task_id)) < 0)
                return r;
        if (b->status < HLINK__STATUS__STATUS_OK || b->status > HLINK__STATUS__STATUS_REFUSED)
                return -EBADMSG;
        if (b->spec_sha256.len != 0 && b->spec_sha256.len != LINK_HASH_BYTES)
                return -EBADMSG;
        return check_files(b->n_outputs, b->outputs, true);
}

/* Tasks in Work or ResultAck: contents wait for link_task_verify(), so no
 * unauthenticated bytes are parsed beyond the frame. */
static int check_tasks(size_t n, Hlink__Task *const *tasks)
{
        if (n > LINK_TASKS_MAX)
                return -EMSGSIZE;
        for (size_t i = 0; i < n; i++) {
                const Hlink__Task *t = tasks[i];
                if (!t || t->spec.len == 0)
                        return -EBADMSG;
                if (t->signature.len != LINK_SIG_BYTES)
                        return -EBADMSG;
        }
        return 0;
}

static int check_body(const Hlink__Body *b)
{
        int r;
        switch (b->msg_case) {
        case HLINK__BODY__MSG_HELLO:
                if ((r = check_caps(b->hello->caps)) < 0)
                        return r;
                /* v2: no hello without a key exchange. */
                if (b->hello->kx_public.len != LINK_KX_BYTES)
                        return -EBADMSG;
                return check_str(b->hello->agent, LINK_STR_MAX);
        case HLINK__BODY__MSG_WELCOME:
                if (b->welcome->kx_public.len != LINK_KX_BYTES || b->welcome->session.len != LINK_SESSION_ID_BYTES)
                        return -EBADMSG;
                return check_str(b->welcome->worker_id, LINK_STR_MAX);
        case HLINK__BODY__MSG_FETCH:
                return b->fetch->max_tasks > LINK_TASKS_MAX ? -EMSGSIZE : 0;
        case HLINK__BODY__MSG_WORK:
                return check_tasks(b->work->n_tasks, b->work->tasks);
        case HLINK__BODY__MSG_RENEW:
                if (b->renew->n_task_ids > LINK_RENEW_MAX)
                        return -EMSGSIZE;
                for (size_t i = 0; i < b->renew->n_task_ids; i++)
                        if ((r = check_id(b->renew->task_ids[i])) < 0)
                                return r;
                return 0;
        case HLINK__BODY__MSG_RENEW_REPLY:
                if (b->renew_reply->n_leases > LINK_RENEW_MAX)
                        return -EMSGSIZE;
                for (size_t i = 0; i < b->renew_reply->n_leases; i++) {
                        if (!b->renew_reply->leases[i])
                                return -EBADMSG;
                        if ((r = check_id(b->renew_reply->leases[i]->task_id)) < 0)
                                return r;
                }
                return 0;
        case HLINK__BODY__MSG_RESULT: {
                /* Under a batch signature the results' own may be left out. */
                size_t bl = b->result->batch_signature.len;
                if (bl != 0 && bl != LINK_SIG_BYTES)
                        return -EBADMSG;
#define SIG_OK(len) ((len) == LINK_SIG_BYTES || (bl && (len) == 0))
                if (b->result->body.len == 0 || !SIG_OK(b->result->signature.len))
                        return -EBADMSG;
                if (b->result->n_more > LINK_RESULTS_MAX - 1 || b->result->fetch > LINK_TASKS_MAX)
                        return -EMSGSIZE;
                for (size_t i = 0; i < b->result->n_more; i++) {
                        const Hlink__SignedResult *m = b->result->more[i];
                        if (!m || m->body.len == 0 || !SIG_OK(m->signature.len))
                                return -EBADMSG;
                }
#undef SIG_OK
                return 0;
        }
        case HLINK__BODY__MSG_RESULT_ACK:
                if ((r = check_id(b->result_ack->task_id)) < 0)
                        return r;
                if ((r = check_tasks(b->result_ack->n_tasks, b->result_ack->tasks)) < 0)
                        return r;
                if (b->result_ack->n_more > LINK_RESULTS_MAX - 1)
                        return -EMSGSIZE;
                for (size_t i = 0; i < b->result_ack->n_more; i++) {
                        const Hlink__ResultVerdict *v = b->result_ack->more[i];
                        if (!v)
                                return -EBADMSG;
                        /* Empty when the body could not be read. */
                        if (v->task_id && v->task_id[0] && (r = check_id(v->task_id)) < 0)
                                return r;
                        if ((r = check_str(v->reason, LINK_STR_MAX)) < 0)
                                return r;
                }
                return check_str(b->result_ack->reason, LINK_STR_MAX);
        case HLINK__BODY__MSG_GOODBYE:
                return check_str(b->goodbye->reason, LINK_STR_MAX);
        case HLINK__BODY__MSG_ERROR:
                return check_str(b->error->message, LINK_STR_MAX);
        default:
                return -EBADMSG;
        }
}

/* --- framing --------------------------------------------------------------- */

static void put_be(uint8_t *p, uint64_t v, unsigned n)
{
        for (unsigned i = 0; i < n; i++)
                p[i] = (uint8_t) (v >> (8 * (n - 1 - i)));
}

/* The header an envelope's signature or MAC covers, before the body: a
 * domain string, then the header fields at fixed width (lengths before the
 * variable ones). At most ENV_HDR_MAX bytes. */
#define ENV_HDR_MAX (sizeof(ENV_DOMAIN) - 1 + 4 + 8 + LINK_NONCE_BYTES + LINK_KEY_BYTES + 1 + LINK_NONCE_BYTES + \
                     1 + LINK_SESSION_ID_BYTES)

static size_t env_header(const Hlink__Envelope *e, uint8_t hdr[ENV_HDR_MAX])
{
        size_t dl = sizeof(ENV_DOMAIN) - 1;
        uint8_t *p = hdr;
        memcpy(p, ENV_DOMAIN, dl), p += dl;
        put_be(p, e->version, 4), p += 4;
        put_be(p, e->seq, 8), p += 8;
        memcpy(p, e->nonce.data, LINK_NONCE_BYTES), p += LINK_NONCE_BYTES;
        memcpy(p, e->sender.data, LINK_KEY_BYTES), p += LINK_KEY_BYTES;
        *p++ = (uint8_t) e->reply_to.len;
        if (e->reply_to.len)
                memcpy(p, e->reply_to.data, e->reply_to.len), p += e->reply_to.len;
        *p++ = (uint8_t) e->session.len;
        if (e->session.len)
                memcpy(p, e->session.data, e->session.len), p += e->session.len;
        return (size_t) (p - hdr);
}

/* The whole signed bytes, for ed25519 (which takes one buffer). */
static int env_signed_bytes(const Hlink__Envelope *e, uint8_t **ret, size_t *ret_len)
{
        uint8_t hdr[ENV_HDR_MAX];
        size_t hl = env_header(e, hdr);
        uint8_t *b = malloc(hl + e->body.len);
        if (!b)
                return -ENOMEM;
        memcpy(b, hdr, hl);
        if (e->body.len)
                memcpy(b + hl, e->body.data, e->body.len);
        *ret = b;
        *ret_len = hl + e->body.len;
        return 0;
}

/* The MAC over the same bytes, streamed: no copy of the body. */
static void env_mac(const Hlink__Envelope *e, const uint8_t key[LINK_KX_BYTES], uint8_t mac[LINK_MAC_BYTES])
{
        crypto_auth_hmacsha512256_state st;
        uint8_t hdr[ENV_HDR_MAX];
        size_t hl = env_header(e, hdr);
        crypto_auth_hmacsha512256_init(&st, key, LINK_KX_BYTES);
        crypto_auth_hmacsha512256_update(&st, hdr, hl);
        crypto_auth_hmacsha512256_update(&st, e->body.data, e->body.len);
        crypto_auth_hmacsha512256_final(&st, mac);
        sodium_memzero(&st, sizeof(st));
}

/* Sign DOMAIN || DATA. */
static int sign_domain(const uint8_t *sk, const char *domain, const void *data, size_t len,
                       uint8_t sig[LINK_SIG_BYTES])
{
        size_t dl = strlen(domain);
        _cleanup_free_ uint8_t *b = malloc(dl + len + 1);
        if (!b)
                return -ENOMEM;
        memcpy(b, domain, dl);
        if (len)
                memcpy(b + dl, data, len);
        return crypto_sign_detached(sig, NULL, b, dl + len, sk) == 0 ? 0 : -EIO;
}

static int verify_domain(const uint8_t *pk, const char *domain, const void *data, size_t len,
                         const ProtobufCBinaryData *sig)
{
        size_t dl = strlen(domain);
        if (sig->len != LINK_SIG_BYTES)
                return -EKEYREJECTED;
        _cleanup_free_ uint8_t *b = malloc(dl + len + 1);
        if (!b)
                return -ENOMEM;
        memcpy(b, domain, dl);
        if (len)
                memcpy(b + dl, data, len);
        return crypto_sign_verify_detached(sig->data, b, dl + len, pk) == 0 ? 0 : -EKEYREJECTED;
}

/* Frame BODY: signed with ID->sk, or with SESSION MACed under its tx key. */
static int encode(LinkIdentity *id, const LinkSession *session, const Hlink__Body *body, const uint8_t *reply_to,
                  uint64_t now_usec, uint8_t *ret_nonce, void **ret_buf, size_t *ret_len)
{
        Hlink__Envelope e = HLINK__ENVELOPE__INIT;
        uint8_t nonce[LINK_NONCE_BYTES], sig[LINK_SIG_BYTES], mac[LINK_MAC_BYTES], stack[2048];
        _cleanup_free_ uint8_t *heap = NULL, *signed_bytes = NULL;
        uint8_t *bb = stack;
        size_t bl, sl;
        int r = link_init();
        if (r < 0)
                return r;

        bl = hlink__body__get_packed_size(body);
        if (bl > LINK_MSG_MAX_BYTES)
                return -EMSGSIZE;
        /* Most bodies are small: no allocation for them. */
        if (bl > sizeof(stack)) {
                bb = heap = malloc(bl);
                if (!bb)
                        return -ENOMEM;
        }
        hlink__body__pack(body, bb);

        randombytes_buf(nonce, sizeof(nonce));
        e.version = LINK_VERSION;
        e.seq = id->seq + 1 > now_usec ? id->seq + 1 : now_usec;
        e.nonce = (ProtobufCBinaryData) { sizeof(nonce), nonce };
        e.sender = (ProtobufCBinaryData) { LINK_KEY_BYTES, id->pk };
        if (reply_to)
                e.reply_to = (ProtobufCBinaryData) { LINK_NONCE_BYTES, (uint8_t *) reply_to };
        e.body = (ProtobufCBinaryData) { bl, bb };

        if (session) {
                e.session = (ProtobufCBinaryData) { LINK_SESSION_ID_BYTES, (uint8_t *) session->id };
                env_mac(&e, session->tx, mac);
                e.mac = (ProtobufCBinaryData) { sizeof(mac), mac };
        } else {
                r = env_signed_bytes(&e, &signed_bytes, &sl);
                if (r < 0)
                        return r;
                if (crypto_sign_detached(sig, NULL, signed_bytes, sl, id->sk) != 0)
                        return -EIO;
                e.signature = (ProtobufCBinaryData) { sizeof(sig), sig };
        }

        size_t len = hlink__envelope__get_packed_size(&e);
        if (len > LINK_MSG_MAX_BYTES)
                return -EMSGSIZE;
        uint8_t *out = malloc(len);
        if (!out)
                return -ENOMEM;
        hlink__envelope__pack(&e, out);
        id->seq = e.seq;
        if (ret_nonce)
                memcpy(ret_nonce, nonce, sizeof(nonce));
        *ret_buf = out;
        *ret_len = len;
        return 0;
}

int link_encode(LinkIdentity *id, const Hlink__Body *body, const uint8_t *reply_to,
                uint64_t now_usec, uint8_t *ret_nonce, void **ret_buf, size_t *ret_len)
{
        return encode(id, NULL, body, reply_to, now_usec, ret_nonce, ret_buf, ret_len);
}

int link_encode_session(LinkIdentity *id, const LinkSession *session, const Hlink__Body *body,
                        const uint8_t *reply_to, uint64_t now_usec, uint8_t *ret_nonce, void **ret_buf,
                        size_t *ret_len)
{
        if (!session)
                return -EINVAL;
        return encode(id, session, body, reply_to, now_usec, ret_nonce, ret_buf, ret_len);
}

void link_msg_free(LinkMsg *m)
{
        if (!m)
                return;
        if (m->body)
                hlink__body__free_unpacked(m->body, NULL);
        if (m->env)
                hlink__envelope__free_unpacked(m->env, NULL);
        free(m);
}

int link_decode_frame(const void *buf, size_t len, LinkMsg **ret)
{
        int r = link_init();
        if (r < 0)
                return r;
        if (len > LINK_MSG_MAX_BYTES)
                return -EMSGSIZE;
        if (len == 0)
                return -EBADMSG;

        LinkMsg *m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->env = hlink__envelope__unpack(NULL, len, buf);
        if (!m->env) {
                r = -EBADMSG;
                goto fail;
        }
        const Hlink__Envelope *e = m->env;
        if (e->version != LINK_VERSION) {
                r = -EPROTONOSUPPORT;
                goto fail;
        }
        if (e->nonce.len != LINK_NONCE_BYTES || e->sender.len != LINK_KEY_BYTES ||
            (e->reply_to.len != 0 && e->reply_to.len != LINK_NONCE_BYTES) || e->body.len == 0) {
                r = -EBADMSG;
                goto fail;
        }
        /* Exactly one of: a signature (no session), or a MAC and its
         * session's id. */
        if (e->mac.len == 0 && e->session.len == 0) {
                if (e->signature.len != LINK_SIG_BYTES) {
                        r = -EKEYREJECTED;
                        goto fail;
                }
        } else if (e->signature.len != 0 || e->session.len != LINK_SESSION_ID_BYTES) {
                r = -EBADMSG;
                goto fail;
        } else if (e->mac.len != LINK_MAC_BYTES) {
                r = -EKEYREJECTED;
                goto fail;
        }
        *ret = m;
        return 0;
fail:
        link_msg_free(m);
        return r;
}

bool link_msg_signed(const LinkMsg *m)
{
        return m && m->env && m->env->mac.len == 0;
}

int link_msg_open(LinkMsg *m, const LinkSession *session)
{
        const Hlink__Envelope *e = m->env;
        int r;
        if (!e || m->body)
                return -EINVAL;
        /* Authenticate before parsing the body: the body parser never sees
         * bytes its sender did not sign or MAC. */
        if (link_msg_signed(m)) {
                _cleanup_free_ uint8_t *signed_bytes = NULL;
                size_t sl;
                r = env_signed_bytes(e, &signed_bytes, &sl);
                if (r < 0)
                        return r;
                if (crypto_sign_verify_detached(e->signature.data, signed_bytes, sl, e->sender.data) != 0)
                        return -EKEYREJECTED;
        } else {
                uint8_t mac[LINK_MAC_BYTES];
                if (!session || sodium_memcmp(session->id, e->session.data, LINK_SESSION_ID_BYTES) != 0)
                        return -ENOTCONN;
                env_mac(e, session->rx, mac);
                if (sodium_memcmp(mac, e->mac.data, LINK_MAC_BYTES) != 0)
                        return -EKEYREJECTED;
        }
        m->body = hlink__body__unpack(NULL, e->body.len, e->body.data);
        if (!m->body)
                return -EBADMSG;
        r = check_body(m->body);
        if (r < 0) {
                hlink__body__free_unpacked(m->body, NULL);
                m->body = NULL;
        }
        return r;
}

int link_decode(const void *buf, size_t len, LinkMsg **ret)
{
        LinkMsg *m = NULL;
        int r = link_decode_frame(buf, len, &m);
        if (r < 0)
                return r;
        r = link_msg_open(m, NULL);
        if (r < 0) {
                link_msg_free(m);
                return r;
        }
        *ret = m;
        return 0;
}

/* --- sessions -------------------------------------------------------------- */

int link_kx_keypair(uint8_t ret_pk[LINK_KX_BYTES], uint8_t ret_sk[LINK_KX_BYTES])
{
        int r = link_init();
        if (r < 0)
                return r;
        return crypto_kx_keypair(ret_pk, ret_sk) == 0 ? 0 : -EIO;
}

int link_session_server(const uint8_t worker_kx_pk[LINK_KX_BYTES], LinkSession *ret,
                        uint8_t ret_kx_pk[LINK_KX_BYTES])
{
        uint8_t pk[LINK_KX_BYTES], sk[LINK_KX_BYTES];
        LinkSession s = {};
        int r = link_kx_keypair(pk, sk);
        if (r < 0)
                return r;
        /* The pool is crypto_kx's "server": its rx is the worker's tx. A
         * low-order or otherwise unusable key is refused by libsodium. */
        r = crypto_kx_server_session_keys(s.rx, s.tx, pk, sk, worker_kx_pk) == 0 ? 0 : -EKEYREJECTED;
        sodium_memzero(sk, sizeof(sk));
        if (r < 0)
                return r;
        randombytes_buf(s.id, sizeof(s.id));
        *ret = s;
        memcpy(ret_kx_pk, pk, LINK_KX_BYTES);
        sodium_memzero(&s, sizeof(s));
        return 0;
}

int link_session_client(const uint8_t kx_pk[LINK_KX_BYTES], const uint8_t kx_sk[LINK_KX_BYTES],
                        const Hlink__Welcome *w, LinkSession *ret)
{
        LinkSession s = {};
        int r = link_init();
        if (r < 0)
                return r;
        if (!w || w->kx_public.len != LINK_KX_BYTES || w->session.len != LINK_SESSION_ID_BYTES)
                return -EBADMSG;
        if (crypto_kx_client_session_keys(s.rx, s.tx, kx_pk, kx_sk, w->kx_public.data) != 0)
                return -EKEYREJECTED;
        memcpy(s.id, w->session.data, LINK_SESSION_ID_BYTES);
        *ret = s;
        sodium_memzero(&s, sizeof(s));
        return 0;
}

int link_replay_check(uint64_t *last_seq, uint64_t seq)
{
        if (seq <= *last_seq)
                return -ESTALE;
        *last_seq = seq;
        return 0;
}

/* --- tasks and results ----------------------------------------------------- */

int link_task_sign(const LinkIdentity *pool, const Hlink__TaskSpec *spec,
                   void **ret_spec, size_t *ret_spec_len, uint8_t ret_sig[LINK_SIG_BYTES])
{
        uint8_t sig[LINK_SIG_BYTES];
        int r = link_init();
        if (r < 0)
                return r;
        r = check_spec(spec);
        if (r < 0)
                return r;
        size_t len = hlink__task_spec__get_packed_size(spec);
        /* Room for the envelope and Work framing around one task. */
        if (len > LINK_MSG_MAX_BYTES - 1024)
                return -EMSGSIZE;
        _cleanup_free_ uint8_t *b = malloc(len ? len : 1);
        if (!b)
                return -ENOMEM;
        hlink__task_spec__pack(spec, b);
        r = sign_domain(pool->sk, TASK_DOMAIN, b, len, sig);
        if (r < 0)
                return r;
        memcpy(ret_sig, sig, sizeof(sig));
        *ret_spec_len = len;
        *ret_spec = TAKE_PTR(b);
        return 0;
}

/* The checks every signed payload (a task spec, a result body) passes
 * before it is parsed: present, not over the message limit, and signed by
 * pk under domain. */
static int verify_signed_bytes(const uint8_t *pk, const char *domain, const ProtobufCBinaryData *data,
                               const ProtobufCBinaryData *sig)
{
        int r = link_init();
        if (r < 0)
                return r;
        if (data->len == 0)
                return -EBADMSG;
        if (data->len > LINK_MSG_MAX_BYTES)
                return -EMSGSIZE;
        return verify_domain(pk, domain, data->data, data->len, sig);
}

int link_task_verify(const Hlink__Task *task, const uint8_t pool_pk[LINK_KEY_BYTES],
                     Hlink__TaskSpec **ret_spec, uint8_t *ret_spec_sha256)
{
        if (!task)
                return -EBADMSG;
        int r = verify_signed_bytes(pool_pk, TASK_DOMAIN, &task->spec, &task->signature);
        if (r < 0)
                return r;
        Hlink__TaskSpec *s = hlink__task_spec__unpack(NULL, task->spec.len, task->spec.data);
        if (!s)
                return -EBADMSG;
        r = check_spec(s);
        if (r < 0) {
                hlink__task_spec__free_unpacked(s, NULL);
                return r;
        }
        if (ret_spec_sha256)
                crypto_hash_sha256(ret_spec_sha256, task->spec.data, task->spec.len);
        *ret_spec = s;
        return 0;
}

/* The value replicas agree on: status, exit code, each output's name and
 * hash, in order, in a fixed layout. */
static void result_hash(const Hlink__ResultBody *b, uint8_t out[LINK_HASH_BYTES])
{
        crypto_hash_sha256_state st;
        uint8_t hdr[8];

        crypto_hash_sha256_init(&st);
        crypto_hash_sha256_update(&st, (const uint8_t *) HASH_DOMAIN, sizeof(HASH_DOMAIN) - 1);
        put_be(hdr, (uint32_t) b->status, 4);
        put_be(hdr + 4, (uint32_t) b->exit_code, 4);
        crypto_hash_sha256_update(&st, hdr, sizeof(hdr));
        for (size_t i = 0; i < b->n_outputs; i++) {
                const Hlink__File *f = b->outputs[i];
                size_t nl = strlen(f->name);
                put_be(hdr, nl, 4);
                crypto_hash_sha256_update(&st, hdr, 4);
                crypto_hash_sha256_update(&st, (const uint8_t *) f->name, nl);
                crypto_hash_sha256_update(&st, f->sha256.data, LINK_HASH_BYTES);
        }
        crypto_hash_sha256_final(&st, out);
}

int link_result_sign(const LinkIdentity *worker, Hlink__ResultBody *body,
                     void **ret_body, size_t *ret_body_len, uint8_t ret_sig[LINK_SIG_BYTES])
{
        _cleanup_free_ void *b = NULL;
        size_t len;
        int r = link_result_pack(body, &b, &len);
        if (r >= 0)
                r = sign_domain(worker->sk, RESULT_DOMAIN, b, len, ret_sig);
        if (r < 0)
                return r;
        *ret_body_len = len;
        *ret_body = TAKE_PTR(b);
        return 0;
}

int link_result_pack(Hlink__ResultBody *body, void **ret_body, size_t *ret_body_len)
{
        _cleanup_free_ uint8_t *hashes = NULL;
        int r = link_init();
        if (r < 0)
                return r;
        if (body->n_outputs > LINK_FILES_MAX)
                return -EMSGSIZE;
        hashes = malloc(body->n_outputs * LINK_HASH_BYTES + 1);
        if (!hashes)
                return -ENOMEM;
        for (size_t i = 0; i < body->n_outputs; i++) {
                Hlink__File *f = body->outputs[i];
                if (f && f->sha256.len == 0) {
                        crypto_hash_sha256(hashes + i * LINK_HASH_BYTES, f->data.data, f->data.len);
                        f->sha256 = (ProtobufCBinaryData) { LINK_HASH_BYTES, hashes + i * LINK_HASH_BYTES };
                }
        }
        r = check_result_body(body);
        size_t len = hlink__result_body__get_packed_size(body);
        _cleanup_free_ uint8_t *b = NULL;
        if (r >= 0 && len > LINK_MSG_MAX_BYTES - 1024)
                r = -EMSGSIZE;
        if (r >= 0 && !(b = malloc(len ? len : 1)))
                r = -ENOMEM;
        if (r >= 0)
                hlink__result_body__pack(body, b);
        /* The hashes filled in above live in our buffer: take them back out
         * so the caller's structure never points at freed memory. */
        for (size_t i = 0; i < body->n_outputs; i++) {
                Hlink__File *f = body->outputs[i];
                if (f && f->sha256.data >= hashes && f->sha256.data < hashes + body->n_outputs * LINK_HASH_BYTES)
                        f->sha256 = (ProtobufCBinaryData) { 0, NULL };
        }
        if (r < 0)
                return r;
        *ret_body_len = len;
        *ret_body = TAKE_PTR(b);
        return 0;
}

int link_result_verify(const Hlink__Result *result, const uint8_t worker_pk[LINK_KEY_BYTES],
                       Hlink__ResultBody **ret_body, uint8_t *ret_hash)
{
        if (!result)
                return -EBADMSG;
        int r = verify_signed_bytes(worker_pk, RESULT_DOMAIN, &result->body, &result->signature);
        if (r < 0)
                return r;
        return link_result_parse(&result->body, ret_body, ret_hash);
}

/* The bytes a batch signature covers, after its domain: n, then each
 * body's SHA-256. OUT holds 1 + LINK_RESULTS_MAX * LINK_HASH_BYTES. */
static int batch_bytes(const ProtobufCBinaryData *const *bodies, size_t n, uint8_t *out, size_t *ret_len)
{
        if (n == 0 || n > LINK_RESULTS_MAX)
                return -EMSGSIZE;
        out[0] = (uint8_t) n;
        for (size_t i = 0; i < n; i++) {
                if (bodies[i]->len == 0 || bodies[i]->len > LINK_MSG_MAX_BYTES)
                        return -EBADMSG;
                crypto_hash_sha256(out + 1 + i * LINK_HASH_BYTES, bodies[i]->data, bodies[i]->len);
        }
        *ret_len = 1 + n * LINK_HASH_BYTES;
        return 0;
}

int link_result_batch_sign(const LinkIdentity *worker, const ProtobufCBinaryData *bodies, size_t n,
                           uint8_t ret_sig[LINK_SIG_BYTES])
{
        const ProtobufCBinaryData *bp[LINK_RESULTS_MAX];
        uint8_t msg[1 + LINK_RESULTS_MAX * LINK_HASH_BYTES];
        size_t len;
        int r = link_init();

        if (r < 0)
                return r;
        if (n == 0 || n > LINK_RESULTS_MAX)
                return -EMSGSIZE;
        for (size_t i = 0; i < n; i++)
                bp[i] = &bodies[i];
        r = batch_bytes(bp, n, msg, &len);
        return r < 0 ? r : sign_domain(worker->sk, RESULTS_DOMAIN, msg, len, ret_sig);
}

int link_result_batch_verify(const Hlink__Result *result, const uint8_t worker_pk[LINK_KEY_BYTES],
                             uint8_t *ret_proof, size_t *ret_proof_len)
{
        const ProtobufCBinaryData *bp[LINK_RESULTS_MAX];
        size_t n = 0, len;
        int r = link_init();

        if (r < 0)
                return r;
        if (!result || result->batch_signature.len == 0)
                return 0;
        if (result->n_more > LINK_RESULTS_MAX - 1)
                return -EMSGSIZE;
        bp[n++] = &result->body;
        for (size_t i = 0; i < result->n_more; i++)
                bp[n++] = &result->more[i]->body;
        r = batch_bytes(bp, n, ret_proof + LINK_SIG_BYTES, &len);
        if (r < 0)
                return r;
        r = verify_domain(worker_pk, RESULTS_DOMAIN, ret_proof + LINK_SIG_BYTES, len, &result->batch_signature);
        if (r < 0)
                return r;
        memcpy(ret_proof, result->batch_signature.data, LINK_SIG_BYTES);
        *ret_proof_len = LINK_SIG_BYTES + len;
        return 1;
}

int link_result_proof_check(const uint8_t worker_pk[LINK_KEY_BYTES], const void *body, size_t body_len,
                            const void *proof, size_t proof_len)
{
        const uint8_t *p = proof;
        uint8_t h[LINK_HASH_BYTES];
        int r = link_init();

        if (r < 0)
                return r;
        if (!body || body_len == 0 || !proof)
                return -EKEYREJECTED;
        if (proof_len == LINK_SIG_BYTES) {
                ProtobufCBinaryData sig = { LINK_SIG_BYTES, (uint8_t *) p };
                return verify_domain(worker_pk, RESULT_DOMAIN, body, body_len, &sig);
        }
        /* A batch proof: the signature, n and n hashes, one of them this body's. */
        if (proof_len < LINK_SIG_BYTES + 1 + LINK_HASH_BYTES)
                return -EKEYREJECTED;
        size_t n = p[LINK_SIG_BYTES];
        if (n == 0 || n > LINK_RESULTS_MAX || proof_len != LINK_SIG_BYTES + 1 + n * LINK_HASH_BYTES)
                return -EKEYREJECTED;
        crypto_hash_sha256(h, body, body_len);
        bool found = false;
        for (size_t i = 0; i < n; i++)
                found |= sodium_memcmp(h, p + LINK_SIG_BYTES + 1 + i * LINK_HASH_BYTES, LINK_HASH_BYTES) == 0;
        if (!found)
                return -EKEYREJECTED;
        ProtobufCBinaryData sig = { LINK_SIG_BYTES, (uint8_t *) p };
        return verify_domain(worker_pk, RESULTS_DOMAIN, p + LINK_SIG_BYTES, proof_len - LINK_SIG_BYTES, &sig);
}

int link_result_parse(const ProtobufCBinaryData *body, Hlink__ResultBody **ret_body, uint8_t *ret_hash)
{
        uint8_t h[LINK_HASH_BYTES];
        int r;

        if (!body || body->len == 0)
                return -EBADMSG;
        if (body->len > LINK_MSG_MAX_BYTES)
                return -EMSGSIZE;
        Hlink__ResultBody *b = hlink__result_body__unpack(NULL, body->len, body->data);
        if (!b)
                return -EBADMSG;
        r = check_result_body(b);
        for (size_t i = 0; r >= 0 && i < b->n_outputs; i++) {
                crypto_hash_sha256(h, b->outputs[i]->data.data, b->outputs[i]->data.len);
                if (sodium_memcmp(h, b->outputs[i]->sha256.data, LINK_HASH_BYTES) != 0)
                        r = -EBADMSG;
        }
        if (r < 0) {
                hlink__result_body__free_unpacked(b, NULL);
                return r;
        }
        if (ret_hash)
                result_hash(b, ret_hash);
        *ret_body = b;
        return 0;
}

/* --- error codes ----------------------------------------------------------- */

const char *link_error_name(int code)
{
        static const char *const names[] = {
                [HLINK__ERROR_CODE__ERR_NONE] = "none",
                [HLINK__ERROR_CODE__ERR_MALFORMED] = "malformed",
                [HLINK__ERROR_CODE__ERR_TOO_LARGE] = "too-large",
                [HLINK__ERROR_CODE__ERR_VERSION] = "version",
                [HLINK__ERROR_CODE__ERR_BAD_SIGNATURE] = "bad-signature",
                [HLINK__ERROR_CODE__ERR_REPLAY] = "replay",
                [HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER] = "unknown-worker",
                [HLINK__ERROR_CODE__ERR_UNKNOWN_TASK] = "unknown-task",
                [HLINK__ERROR_CODE__ERR_LEASE_EXPIRED] = "lease-expired",
                [HLINK__ERROR_CODE__ERR_INTERNAL] = "internal",
                [HLINK__ERROR_CODE__ERR_UNEXPECTED] = "unexpected",
                [HLINK__ERROR_CODE__ERR_BUSY] = "busy",
        };
        if (code < 0 || (size_t) code >= ELEMENTSOF(names) || !names[code])
                return "unknown";
        return names[code];
}

int link_error_from_errno(int err)
{
        switch (err) {
        case -EMSGSIZE:
                return HLINK__ERROR_CODE__ERR_TOO_LARGE;
        case -EPROTONOSUPPORT:
                return HLINK__ERROR_CODE__ERR_VERSION;
        case -EKEYREJECTED:
                return HLINK__ERROR_CODE__ERR_BAD_SIGNATURE;
        case -ESTALE:
                return HLINK__ERROR_CODE__ERR_REPLAY;
        case -EBADMSG:
                return HLINK__ERROR_CODE__ERR_MALFORMED;
        case -ENOTCONN:
                return HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER;
        default:
                return HLINK__ERROR_CODE__ERR_INTERNAL;
        }
}

int link_errno_from_error(int code)
{
        switch (code) {
        case HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER:
                return -ENOTCONN;
        case HLINK__ERROR_CODE__ERR_UNKNOWN_TASK:
                return -ENOENT;
        case HLINK__ERROR_CODE__ERR_LEASE_EXPIRED:
                return -ETIMEDOUT;
        case HLINK__ERROR_CODE__ERR_REPLAY:
                return -ESTALE;
        case HLINK__ERROR_CODE__ERR_BAD_SIGNATURE:
                return -EKEYREJECTED;
        case HLINK__ERROR_CODE__ERR_TOO_LARGE:
                return -EMSGSIZE;
        case HLINK__ERROR_CODE__ERR_MALFORMED:
                return -EBADMSG;
        case HLINK__ERROR_CODE__ERR_VERSION:
                return -EPROTONOSUPPORT;
        default:
                return -EPROTO;
        }
}
