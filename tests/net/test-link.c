/* SPDX-License-Identifier: GPL-2.0-or-later */
/* net/link.c: round trips, every limit, forged and truncated signatures,
 * replays, identities. */
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
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "net/link.h"

static LinkIdentity pool, worker;
static char dir[PATH_MAX];

static Hlink__Body *decode_ok(LinkIdentity *id, const Hlink__Body *b, LinkMsg **ret)
{
        void *buf;
        size_t len;
        assert_int_equal(link_encode(id, b, NULL, 1000, NULL, &buf, &len), 0);
        assert_int_equal(link_decode(buf, len, ret), 0);
        free(buf);
        return (*ret)->body;
}

/* Encode B (which need not respect the limits: link_encode signs whatever
 * it is given) and return what link_decode() says. */
static int decode_err(const Hlink__Body *b)
{
        void *buf;
        size_t len;
        LinkMsg *m = NULL;
        int r = link_encode(&worker, b, NULL, 1000, NULL, &buf, &len);
        if (r < 0)
                return r;
        r = link_decode(buf, len, &m);
        free(buf);
        link_msg_free(m);
        return r;
}

/* An envelope built field by field and signed as WIRE.md says, to check the
 * document and the decoder agree, and to break single fields. */
static size_t raw_envelope(uint32_t version, size_t nonce_len, size_t sig_len, const Hlink__Body *b,
                           uint8_t **ret)
{
        Hlink__Envelope e = HLINK__ENVELOPE__INIT;
        uint8_t nonce[32] = { 1, 2, 3 }, sig[64], body[4096], signed_bytes[8192], *p = signed_bytes;
        size_t bl = hlink__body__pack(b, body);

        e.version = version;
        e.seq = 77;
        e.nonce = (ProtobufCBinaryData) { nonce_len, nonce };
        e.sender = (ProtobufCBinaryData) { 32, worker.pk };
        e.body = (ProtobufCBinaryData) { bl, body };
        memcpy(p, "hlink-env-v2", 12), p += 12;
        for (int i = 3; i >= 0; i--)
                *p++ = (uint8_t) (version >> (8 * i));
        for (int i = 7; i >= 0; i--)
                *p++ = (uint8_t) (e.seq >> (8 * i));
        memcpy(p, nonce, 16), p += 16;
        memcpy(p, worker.pk, 32), p += 32;
        *p++ = 0;                       /* reply_to: none */
        *p++ = 0;                       /* session: none (signed) */
        memcpy(p, body, bl), p += bl;
        crypto_sign_detached(sig, NULL, signed_bytes, (size_t) (p - signed_bytes), worker.sk);
        e.signature = (ProtobufCBinaryData) { sig_len, sig };
        *ret = malloc(hlink__envelope__get_packed_size(&e));
        return hlink__envelope__pack(&e, *ret);
}

static Hlink__Body fetch_body(uint32_t max)
{
        static Hlink__Fetch f;
        Hlink__Body b = HLINK__BODY__INIT;
        hlink__fetch__init(&f);
        f.max_tasks = max;
        b.msg_case = HLINK__BODY__MSG_FETCH;
        b.fetch = &f;
        return b;
}

static int setup(void **state)
{
        snprintf(dir, sizeof(dir), "/tmp/test-link.XXXXXX");
        assert_non_null(mkdtemp(dir));
        char p[PATH_MAX + 16];
        snprintf(p, sizeof(p), "%s/pool.key", dir);
        assert_int_equal(link_identity_load(p, true, &pool), 0);
        assert_int_equal(link_identity_worker(dir, &worker), 0);
        return 0;
}

static int teardown(void **state)
{
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        return system(cmd) == 0 ? 0 : -1;
}

static void test_identity(void **state)
{
        char p[PATH_MAX + 32], b64[64];
        struct stat st;
        LinkIdentity again;
        uint8_t pk[32];

        snprintf(p, sizeof(p), "%s/link-identity.key", dir);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(st.st_size, 64);
        assert_int_equal(link_identity_worker(dir, &again), 0);
        assert_memory_equal(again.pk, worker.pk, 32);
        assert_memory_not_equal(pool.pk, worker.pk, 32);

        assert_int_equal(link_key_to_base64(pool.pk, b64, sizeof(b64)), 0);
        assert_int_equal(strlen(b64), 44);
        assert_int_equal(link_key_from_base64(b64, pk), 0);
        assert_memory_equal(pk, pool.pk, 32);
        b64[10] = '!';
        assert_int_equal(link_key_from_base64(b64, pk), -EINVAL);
        assert_int_equal(link_key_from_base64("AAAA", pk), -EINVAL);

        /* A key others can read is refused, not used. */
        assert_int_equal(chmod(p, 0640), 0);
        assert_int_equal(link_identity_worker(dir, &again), -EPERM);
        assert_int_equal(chmod(p, 0600), 0);
        snprintf(p, sizeof(p), "%s/missing.key", dir);
        assert_int_equal(link_identity_load(p, false, &again), -ENOENT);
}

static void test_roundtrip_hello(void **state)
{
        Hlink__Body b = HLINK__BODY__INIT, *d;
        Hlink__Hello h = HLINK__HELLO__INIT;
        Hlink__Capabilities caps = HLINK__CAPABILITIES__INIT;
        Hlink__Device dev = HLINK__DEVICE__INIT, *devs[] = { &dev };
        LinkMsg *m;

        caps.arch = "x86_64";
        caps.cores = 8;
        caps.memory_bytes = 16ULL << 30;
        caps.cpu_budget_ppm = 10000;
        dev.api = HLINK__DEVICE_API__API_OPENCL;
        dev.name = "pthread-Intel(R) Core(TM) ünïcode";
        dev.compute_units = 8;
        caps.n_devices = 1;
        caps.devices = devs;
        h.caps = &caps;
        h.agent = "harvesterd/0.1.0";
        b.msg_case = HLINK__BODY__MSG_HELLO;
        b.hello = &h;

        /* v2: a hello without its key exchange is malformed. */
        LinkMsg *bad = NULL;
        void *buf;
        size_t len;
        assert_int_equal(link_encode(&worker, &b, NULL, 1000, NULL, &buf, &len), 0);
        assert_int_equal(link_decode(buf, len, &bad), -EBADMSG);
        free(buf);
        uint8_t kx_pk[32], kx_sk[32];
        assert_int_equal(link_kx_keypair(kx_pk, kx_sk), 0);
        h.kx_public = (ProtobufCBinaryData) { 32, kx_pk };

        d = decode_ok(&worker, &b, &m);
        assert_int_equal(m->env->version, LINK_VERSION);
        assert_memory_equal(m->env->sender.data, worker.pk, 32);
        assert_int_equal(m->env->reply_to.len, 0);
        assert_int_equal(d->msg_case, HLINK__BODY__MSG_HELLO);
        assert_string_equal(d->hello->caps->arch, "x86_64");
        assert_int_equal(d->hello->caps->cores, 8);
        assert_int_equal(d->hello->caps->memory_bytes, 16ULL << 30);
        assert_int_equal(d->hello->caps->n_devices, 1);
        assert_string_equal(d->hello->caps->devices[0]->name, dev.name);
        assert_int_equal(d->hello->caps->devices[0]->api, HLINK__DEVICE_API__API_OPENCL);
        assert_string_equal(d->hello->agent, "harvesterd/0.1.0");
        link_msg_free(m);
}

static void test_roundtrip_task(void **state)
{
        Hlink__TaskSpec s = HLINK__TASK_SPEC__INIT, *got;
        Hlink__Needs needs = HLINK__NEEDS__INIT;
        Hlink__File in = HLINK__FILE__INIT, *ins[] = { &in };
        Hlink__Task t = HLINK__TASK__INIT, *ts[] = { &t };
        Hlink__Work w = HLINK__WORK__INIT;
        Hlink__Body b = HLINK__BODY__INIT, *d;
        char *argv[] = { "/bin/sh", "-c", "echo hi" };
        uint8_t sig[64], h[32], reply_to[16] = { 9 };
        void *spec, *buf;
        size_t len, bl;
        LinkMsg *m;

        s.id = "job-1.tile_3";
        s.kind = HLINK__KIND__KIND_EXEC;
        s.n_argv = 3;
        s.argv = argv;
        in.name = "input.txt";
        in.data = (ProtobufCBinaryData) { 5, (uint8_t *) "hello" };
        s.n_inputs = 1;
        s.inputs = ins;
        needs.cores = 2;
        needs.arch = "x86_64";
        s.needs = &needs;
        s.deadline_usec = 123456789;
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), 0);
        t.spec = (ProtobufCBinaryData) { len, spec };
        t.signature = (ProtobufCBinaryData) { 64, sig };
        t.lease_expires_usec = 42;
        w.n_tasks = 1;
        w.tasks = ts;
        b.msg_case = HLINK__BODY__MSG_WORK;
        b.work = &w;

        /* A reply carries the request's nonce. */
        assert_int_equal(link_encode(&pool, &b, reply_to, 1000, NULL, &buf, &bl), 0);
        assert_int_equal(link_decode(buf, bl, &m), 0);
        free(buf);
        d = m->body;
        assert_int_equal(m->env->reply_to.len, 16);
        assert_memory_equal(m->env->reply_to.data, reply_to, 16);
        assert_int_equal(d->work->n_tasks, 1);
        assert_int_equal(d->work->tasks[0]->lease_expires_usec, 42);
        assert_int_equal(link_task_verify(d->work->tasks[0], pool.pk, &got, h), 0);
        assert_string_equal(got->id, "job-1.tile_3");
        assert_int_equal(got->n_argv, 3);
        assert_string_equal(got->argv[2], "echo hi");
        assert_int_equal(got->inputs[0]->data.len, 5);
        assert_memory_equal(got->inputs[0]->data.data, "hello", 5);
        assert_int_equal(got->needs->cores, 2);
        assert_int_equal(got->deadline_usec, 123456789);
        uint8_t want[32];
        crypto_hash_sha256(want, spec, len);
        assert_memory_equal(h, want, 32);
        hlink__task_spec__free_unpacked(got, NULL);

        /* Signed by another key: refused against the pinned one. */
        assert_int_equal(link_task_verify(d->work->tasks[0], worker.pk, &got, NULL), -EKEYREJECTED);
        /* One flipped bit anywhere in the spec. */
        ((uint8_t *) d->work->tasks[0]->spec.data)[len / 2] ^= 0x10;
        assert_int_equal(link_task_verify(d->work->tasks[0], pool.pk, &got, NULL), -EKEYREJECTED);
        ((uint8_t *) d->work->tasks[0]->spec.data)[len / 2] ^= 0x10;
        /* A truncated signature, a missing one. */
        d->work->tasks[0]->signature.len = 63;
        assert_int_equal(link_task_verify(d->work->tasks[0], pool.pk, &got, NULL), -EKEYREJECTED);
        d->work->tasks[0]->signature.len = 0;
        assert_int_equal(link_task_verify(d->work->tasks[0], pool.pk, &got, NULL), -EKEYREJECTED);
        /* A truncated spec under a valid-length signature. */
        d->work->tasks[0]->signature.len = 64;
        d->work->tasks[0]->spec.len = len - 1;
        assert_int_equal(link_task_verify(d->work->tasks[0], pool.pk, &got, NULL), -EKEYREJECTED);
        d->work->tasks[0]->spec.len = len;
        link_msg_free(m);

        /* A work message whose task carries a short signature is malformed. */
        t.signature.len = 10;
        assert_int_equal(decode_err(&b), -EBADMSG);
        free(spec);
}

static void test_result(void **state)
{
        Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT, *got;
        Hlink__File out = HLINK__FILE__INIT, *outs[] = { &out };
        Hlink__Result res = HLINK__RESULT__INIT;
        uint8_t sig[64], h1[32], h2[32];
        void *body;
        size_t len;

        rb.task_id = "t1";
        rb.status = HLINK__STATUS__STATUS_OK;
        rb.exit_code = 0;
        rb.cpu_usec = 1500;
        rb.device_usec = 2500;
        out.name = "stdout";
        out.data = (ProtobufCBinaryData) { 3, (uint8_t *) "42\n" };
        rb.n_outputs = 1;
        rb.outputs = outs;
        assert_int_equal(link_result_sign(&worker, &rb, &body, &len, sig), 0);
        assert_int_equal(out.sha256.len, 0);   /* the caller's struct is left as it was */
        res.body = (ProtobufCBinaryData) { len, body };
        res.signature = (ProtobufCBinaryData) { 64, sig };
        assert_int_equal(link_result_verify(&res, worker.pk, &got, h1), 0);
        assert_string_equal(got->task_id, "t1");
        assert_int_equal(got->cpu_usec, 1500);
        assert_int_equal(got->device_usec, 2500);
        assert_int_equal(got->outputs[0]->sha256.len, 32);
        hlink__result_body__free_unpacked(got, NULL);
        assert_int_equal(link_result_verify(&res, pool.pk, &got, NULL), -EKEYREJECTED);
        free(body);

        /* Same outputs, different CPU and device time: the replicas agree. */
        rb.cpu_usec = 9999;
        rb.device_usec = 1;
        assert_int_equal(link_result_sign(&pool, &rb, &body, &len, sig), 0);
        res.body = (ProtobufCBinaryData) { len, body };
        assert_int_equal(link_result_verify(&res, pool.pk, &got, h2), 0);
        hlink__result_body__free_unpacked(got, NULL);
        free(body);
        assert_memory_equal(h1, h2, 32);

        /* Different output: they do not. */
        out.data = (ProtobufCBinaryData) { 3, (uint8_t *) "43\n" };
        assert_int_equal(link_result_sign(&pool, &rb, &body, &len, sig), 0);
        res.body = (ProtobufCBinaryData) { len, body };
        assert_int_equal(link_result_verify(&res, pool.pk, &got, h2), 0);
        hlink__result_body__free_unpacked(got, NULL);
        free(body);
        assert_memory_not_equal(h1, h2, 32);

        /* A hash that does not match its data, though signed. */
        uint8_t bad[32] = { 0 };
        out.sha256 = (ProtobufCBinaryData) { 32, bad };
        assert_int_equal(link_result_sign(&pool, &rb, &body, &len, sig), 0);
        res.body = (ProtobufCBinaryData) { len, body };
        assert_int_equal(link_result_verify(&res, pool.pk, &got, NULL), -EBADMSG);
        free(body);
}

/* One batch signature over several results: it verifies in order and for
 * this worker only, breaks with any body changed, and the proof the pool
 * keeps shows each body came from the worker and no other body did. The
 * decoder takes empty per-result signatures only under a batch signature. */
static void test_result_batch(void **state)
{
        Hlink__ResultBody rb = HLINK__RESULT_BODY__INIT;
        Hlink__Result res = HLINK__RESULT__INIT;
        Hlink__SignedResult more[2] = { HLINK__SIGNED_RESULT__INIT, HLINK__SIGNED_RESULT__INIT }, *mp[2];
        ProtobufCBinaryData bodies[3];
        uint8_t sig[64], proof[LINK_PROOF_MAX], own[64];
        size_t proof_len = 0;
        char id[8];

        rb.status = HLINK__STATUS__STATUS_OK;
        for (int i = 0; i < 3; i++) {
                void *b;
                size_t len;
                snprintf(id, sizeof(id), "b%d", i);
                rb.task_id = id;
                assert_int_equal(link_result_pack(&rb, &b, &len), 0);
                bodies[i] = (ProtobufCBinaryData) { len, b };
        }
        assert_int_equal(link_result_batch_sign(&worker, bodies, 3, sig), 0);
        res.body = bodies[0];
        for (int i = 0; i < 2; i++) {
                more[i].body = bodies[i + 1];
                mp[i] = &more[i];
        }
        res.more = mp;
        res.n_more = 2;

        /* none: nothing to say */
        assert_int_equal(link_result_batch_verify(&res, worker.pk, proof, &proof_len), 0);
        res.batch_signature = (ProtobufCBinaryData) { 64, sig };
        assert_int_equal(link_result_batch_verify(&res, worker.pk, proof, &proof_len), 1);
        assert_int_equal(proof_len, 64 + 1 + 3 * 32);
        assert_int_equal(link_result_batch_verify(&res, pool.pk, proof, &proof_len), -EKEYREJECTED);
        for (int i = 0; i < 3; i++) {
                assert_int_equal(link_result_proof_check(worker.pk, bodies[i].data, bodies[i].len, proof, proof_len), 0);
                assert_int_equal(link_result_proof_check(pool.pk, bodies[i].data, bodies[i].len, proof, proof_len),
                                 -EKEYREJECTED);
        }
        /* a body the batch did not hold; a proof cut short or with a hash changed */
        assert_int_equal(link_result_proof_check(worker.pk, "other", 5, proof, proof_len), -EKEYREJECTED);
        assert_int_equal(link_result_proof_check(worker.pk, bodies[0].data, bodies[0].len, proof, proof_len - 32),
                         -EKEYREJECTED);
        proof[64 + 1 + 32 + 5] ^= 1;
        assert_int_equal(link_result_proof_check(worker.pk, bodies[0].data, bodies[0].len, proof, proof_len),
                         -EKEYREJECTED);

        /* the order is signed too, and every byte of every body */
        res.more[0]->body = bodies[2];
        res.more[1]->body = bodies[1];
        assert_int_equal(link_result_batch_verify(&res, worker.pk, proof, &proof_len), -EKEYREJECTED);
        res.more[0]->body = bodies[1];
        res.more[1]->body = bodies[2];
        ((uint8_t *) bodies[2].data)[bodies[2].len - 1] ^= 1;
        assert_int_equal(link_result_batch_verify(&res, worker.pk, proof, &proof_len), -EKEYREJECTED);
        ((uint8_t *) bodies[2].data)[bodies[2].len - 1] ^= 1;
        res.n_more = 1;                 /* one left out */
        assert_int_equal(link_result_batch_verify(&res, worker.pk, proof, &proof_len), -EKEYREJECTED);
        res.n_more = 2;

        /* A result's own signature is a proof as well, of its one body. */
        void *b1;
        size_t l1;
        rb.task_id = "own";
        assert_int_equal(link_result_sign(&worker, &rb, &b1, &l1, own), 0);
        assert_int_equal(link_result_proof_check(worker.pk, b1, l1, own, 64), 0);
        assert_int_equal(link_result_proof_check(worker.pk, bodies[0].data, bodies[0].len, own, 64), -EKEYREJECTED);
        free(b1);

        /* The decoder: empty own signatures pass under a batch signature
         * only, and a batch signature is 64 bytes or nothing. */
        Hlink__Body body = HLINK__BODY__INIT;
        body.msg_case = HLINK__BODY__MSG_RESULT;
        body.result = &res;
        assert_int_equal(decode_err(&body), 0);
        res.batch_signature = (ProtobufCBinaryData) { 0, NULL };
        assert_int_equal(decode_err(&body), -EBADMSG);
        res.batch_signature = (ProtobufCBinaryData) { 63, sig };
        assert_int_equal(decode_err(&body), -EBADMSG);
        res.batch_signature = (ProtobufCBinaryData) { 64, sig };
        res.signature = (ProtobufCBinaryData) { 64, own };     /* both: fine */
        assert_int_equal(decode_err(&body), 0);
        res.signature = (ProtobufCBinaryData) { 10, own };     /* a broken own one: not */
        assert_int_equal(decode_err(&body), -EBADMSG);

        for (int i = 0; i < 3; i++)
                free(bodies[i].data);
}

static void test_limits(void **state)
{
        Hlink__Body b;
        Hlink__Hello h = HLINK__HELLO__INIT;
        Hlink__Capabilities caps = HLINK__CAPABILITIES__INIT;
        char *long_str = malloc(LINK_STR_MAX + 2);
        memset(long_str, 'a', LINK_STR_MAX + 1);
        long_str[LINK_STR_MAX + 1] = 0;

        /* The whole message, before any parsing. */
        uint8_t *big = calloc(1, LINK_MSG_MAX_BYTES + 1);
        LinkMsg *m = NULL;
        assert_int_equal(link_decode(big, LINK_MSG_MAX_BYTES + 1, &m), -EMSGSIZE);
        assert_int_equal(link_decode(big, 0, &m), -EBADMSG);
        free(big);

        b = fetch_body(LINK_TASKS_MAX);
        assert_int_equal(decode_err(&b), 0);
        b = fetch_body(LINK_TASKS_MAX + 1);
        assert_int_equal(decode_err(&b), -EMSGSIZE);

        hlink__body__init(&b);
        b.msg_case = HLINK__BODY__MSG_HELLO;
        b.hello = &h;
        h.caps = &caps;
        static uint8_t kx[32] = { 9 };
        h.kx_public = (ProtobufCBinaryData) { 32, kx };
        caps.arch = "x86_64";
        assert_int_equal(decode_err(&b), 0);
        caps.arch = long_str;                                   /* LINK_STR_MAX */
        assert_int_equal(decode_err(&b), -EMSGSIZE);
        caps.arch = "\xc3\x28";                                 /* bad UTF-8 */
        assert_int_equal(decode_err(&b), -EBADMSG);
        caps.arch = "\xe0\x80\xaf";                             /* overlong '/' */
        assert_int_equal(decode_err(&b), -EBADMSG);
        caps.arch = "x86_64";
        h.caps = NULL;                                          /* required */
        assert_int_equal(decode_err(&b), -EBADMSG);
        h.caps = &caps;
        Hlink__Device dev = HLINK__DEVICE__INIT, *devs[LINK_DEVICES_MAX + 1];
        dev.name = "gpu";
        for (size_t i = 0; i <= LINK_DEVICES_MAX; i++)
                devs[i] = &dev;
        caps.devices = devs;
        caps.n_devices = LINK_DEVICES_MAX;
        assert_int_equal(decode_err(&b), 0);
        caps.n_devices = LINK_DEVICES_MAX + 1;                  /* LINK_DEVICES_MAX */
        assert_int_equal(decode_err(&b), -EMSGSIZE);
        caps.n_devices = 0;
        caps.cpu_budget_ppm = 1000001;
        assert_int_equal(decode_err(&b), -EBADMSG);
        caps.cpu_budget_ppm = 0;

        /* Renew: count and id rules. */
        Hlink__Renew rn = HLINK__RENEW__INIT;
        char *ids[LINK_RENEW_MAX + 1];
        for (size_t i = 0; i <= LINK_RENEW_MAX; i++)
                ids[i] = "t1";
        hlink__body__init(&b);
        b.msg_case = HLINK__BODY__MSG_RENEW;
        b.renew = &rn;
        rn.task_ids = ids;
        rn.n_task_ids = LINK_RENEW_MAX;
        assert_int_equal(decode_err(&b), 0);
        rn.n_task_ids = LINK_RENEW_MAX + 1;                     /* LINK_RENEW_MAX */
        assert_int_equal(decode_err(&b), -EMSGSIZE);
        rn.n_task_ids = 1;
        char long_id[LINK_ID_MAX + 2];
        memset(long_id, 'x', sizeof(long_id) - 1);
        long_id[LINK_ID_MAX + 1] = 0;
        ids[0] = long_id;                                       /* LINK_ID_MAX */
        assert_int_equal(decode_err(&b), -EMSGSIZE);
        ids[0] = "../etc";                                      /* id characters */
        assert_int_equal(decode_err(&b), -EBADMSG);
        ids[0] = "";
        assert_int_equal(decode_err(&b), -EBADMSG);

        /* Work: task count. */
        Hlink__Work w = HLINK__WORK__INIT;
        Hlink__Task t = HLINK__TASK__INIT, *ts[LINK_TASKS_MAX + 1];
        uint8_t sig[64] = { 0 };
        t.spec = (ProtobufCBinaryData) { 1, (uint8_t *) "x" };
        t.signature = (ProtobufCBinaryData) { 64, sig };
        for (size_t i = 0; i <= LINK_TASKS_MAX; i++)
                ts[i] = &t;
        w.tasks = ts;
        w.n_tasks = LINK_TASKS_MAX + 1;                         /* LINK_TASKS_MAX */
        hlink__body__init(&b);
        b.msg_case = HLINK__BODY__MSG_WORK;
        b.work = &w;
        assert_int_equal(decode_err(&b), -EMSGSIZE);

        /* Error and goodbye strings. */
        Hlink__Error e = HLINK__ERROR__INIT;
        e.message = long_str;
        hlink__body__init(&b);
        b.msg_case = HLINK__BODY__MSG_ERROR;
        b.error = &e;
        assert_int_equal(decode_err(&b), -EMSGSIZE);

        /* An empty body: no message type set. */
        hlink__body__init(&b);
        assert_int_equal(decode_err(&b), -EBADMSG);

        /* Task specs: checked when signed, and again when verified. */
        Hlink__TaskSpec s = HLINK__TASK_SPEC__INIT;
        char *argv[LINK_ARGV_MAX + 1];
        void *spec;
        size_t len;
        for (size_t i = 0; i <= LINK_ARGV_MAX; i++)
                argv[i] = "a";
        s.id = "t";
        s.kind = HLINK__KIND__KIND_EXEC;
        s.argv = argv;
        s.n_argv = LINK_ARGV_MAX;
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), 0);
        free(spec);
        s.n_argv = LINK_ARGV_MAX + 1;                           /* LINK_ARGV_MAX */
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), -EMSGSIZE);
        s.n_argv = 1;
        char *long_arg = malloc(LINK_ARG_MAX_BYTES + 2);
        memset(long_arg, 'a', LINK_ARG_MAX_BYTES + 1);
        long_arg[LINK_ARG_MAX_BYTES + 1] = 0;
        argv[0] = long_arg;                                     /* LINK_ARG_MAX_BYTES */
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), -EMSGSIZE);
        argv[0] = "a";
        s.kind = 7;                                             /* unknown kind */
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), -EBADMSG);
        s.kind = HLINK__KIND__KIND_EXEC;
        Hlink__File f = HLINK__FILE__INIT, *fs[LINK_FILES_MAX + 1];
        f.name = "in";
        for (size_t i = 0; i <= LINK_FILES_MAX; i++)
                fs[i] = &f;
        s.inputs = fs;
        s.n_inputs = LINK_FILES_MAX + 1;                        /* LINK_FILES_MAX */
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), -EMSGSIZE);
        s.n_inputs = 2;                                         /* same name twice */
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), -EBADMSG);
        s.n_inputs = 1;
        uint8_t *fat = calloc(1, LINK_FILE_MAX_BYTES + 1);
        f.data = (ProtobufCBinaryData) { LINK_FILE_MAX_BYTES + 1, fat };   /* LINK_FILE_MAX_BYTES */
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), -EMSGSIZE);
        f.data = (ProtobufCBinaryData) { 0, NULL };
        f.name = "../x";                                        /* a path, not a name */
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), -EBADMSG);
        f.name = "in";
        uint64_t dims[LINK_DIMS_MAX + 1] = { 1, 1, 1, 1 };
        s.global_size = dims;
        s.n_global_size = LINK_DIMS_MAX + 1;                    /* LINK_DIMS_MAX */
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), -EMSGSIZE);
        s.n_global_size = 0;
        assert_int_equal(link_task_sign(&pool, &s, &spec, &len, sig), 0);

        /* A spec over the limits, signed by the real key (a buggy or hostile
         * pool): verification still refuses it. */
        s.n_argv = LINK_ARGV_MAX + 1;
        uint8_t raw[4096], rsig[64];
        size_t rl = hlink__task_spec__pack(&s, raw);
        uint8_t signed_bytes[4200];
        memcpy(signed_bytes, "hlink-task-v1", 13);
        memcpy(signed_bytes + 13, raw, rl);
        crypto_sign_detached(rsig, NULL, signed_bytes, 13 + rl, pool.sk);
        Hlink__Task rt = HLINK__TASK__INIT;
        Hlink__TaskSpec *got;
        rt.spec = (ProtobufCBinaryData) { rl, raw };
        rt.signature = (ProtobufCBinaryData) { 64, rsig };
        assert_int_equal(link_task_verify(&rt, pool.pk, &got, NULL), -EMSGSIZE);
        free(spec);
        free(fat);
        free(long_arg);
        free(long_str);

        /* Result.fetch and the tasks a ResultAck brings back: as Fetch and Work. */
        {
                Hlink__Result res = HLINK__RESULT__INIT;
                Hlink__ResultAck ack = HLINK__RESULT_ACK__INIT;
                Hlink__Task at = HLINK__TASK__INIT, *ats[LINK_TASKS_MAX + 1];
                uint8_t zsig[64] = { 0 };
                for (size_t i = 0; i <= LINK_TASKS_MAX; i++)
                        ats[i] = &at;
                res.body = (ProtobufCBinaryData) { 3, (uint8_t *) "abc" };
                res.signature = (ProtobufCBinaryData) { 64, zsig };
                hlink__body__init(&b);
                b.msg_case = HLINK__BODY__MSG_RESULT;
                b.result = &res;
                res.fetch = LINK_TASKS_MAX;
                assert_int_equal(decode_err(&b), 0);
                res.fetch = LINK_TASKS_MAX + 1;
                assert_int_equal(decode_err(&b), -EMSGSIZE);

                at.spec = (ProtobufCBinaryData) { 3, (uint8_t *) "abc" };
                at.signature = (ProtobufCBinaryData) { 64, zsig };
                ack.task_id = "t1";
                ack.tasks = ats;
                hlink__body__init(&b);
                b.msg_case = HLINK__BODY__MSG_RESULT_ACK;
                b.result_ack = &ack;
                ack.n_tasks = LINK_TASKS_MAX;
                assert_int_equal(decode_err(&b), 0);
                ack.n_tasks = LINK_TASKS_MAX + 1;
                assert_int_equal(decode_err(&b), -EMSGSIZE);
                ack.n_tasks = 1;
                at.signature.len = 63;
                assert_int_equal(decode_err(&b), -EBADMSG);
        }
}

/* A valid opencl task: kernel.cl, 1-D range with a work-group, an input
 * buffer, an output buffer, a scalar and __local memory. Each check below
 * breaks one field of it. */
typedef struct GpuSpec {
        Hlink__TaskSpec s;
        Hlink__File src, in, *ins[LINK_FILES_MAX + 1];
        Hlink__KernelArg a[LINK_KERNEL_ARGS_MAX + 1], *ap[LINK_KERNEL_ARGS_MAX + 1];
        uint64_t global[LINK_DIMS_MAX + 1], local[LINK_DIMS_MAX + 1];
        uint8_t value[LINK_SCALAR_MAX_BYTES + 1];
} GpuSpec;

static void gpu_spec(GpuSpec *g)
{
        memset(g, 0, sizeof(*g));
        hlink__task_spec__init(&g->s);
        g->s.id = "cl-1";
        g->s.kind = HLINK__KIND__KIND_OPENCL;
        g->s.kernel = "scramble";
        hlink__file__init(&g->src);
        g->src.name = "kernel.cl";
        g->src.data = (ProtobufCBinaryData) { 8, (uint8_t *) "__kernel" };
        hlink__file__init(&g->in);
        g->in.name = "in";
        g->in.data = (ProtobufCBinaryData) { 16, (uint8_t *) "0123456789abcdef" };
        g->ins[0] = &g->src;
        g->ins[1] = &g->in;
        g->s.inputs = g->ins;
        g->s.n_inputs = 2;
        for (size_t i = 0; i <= LINK_DIMS_MAX; i++)
                g->global[i] = 64, g->local[i] = 16;
        g->s.global_size = g->global;
        g->s.n_global_size = 1;
        g->s.local_size = g->local;
        g->s.n_local_size = 1;
        for (size_t i = 0; i <= LINK_KERNEL_ARGS_MAX; i++) {
                hlink__kernel_arg__init(&g->a[i]);
                g->a[i].kind = HLINK__ARG_KIND__ARG_IN;
                g->a[i].name = "in";
                g->ap[i] = &g->a[i];
        }
        g->a[1].kind = HLINK__ARG_KIND__ARG_OUT;
        g->a[1].name = "out";
        g->a[1].bytes = 256;
        g->a[2].kind = HLINK__ARG_KIND__ARG_SCALAR;
        g->a[2].name = "";
        g->a[2].value = (ProtobufCBinaryData) { 4, g->value };
        g->a[3].kind = HLINK__ARG_KIND__ARG_LOCAL;
        g->a[3].name = "";
        g->a[3].bytes = 1024;
        g->s.args = g->ap;
        g->s.n_args = 4;
}

/* What link_task_sign() says of the spec, and that link_task_verify()
 * says the same of it signed anyway (a buggy or hostile pool). */
static int gpu_err(const GpuSpec *g)
{
        void *spec = NULL;
        size_t len = 0;
        uint8_t sig[64];
        int r = link_task_sign(&pool, &g->s, &spec, &len, sig);
        free(spec);

        len = hlink__task_spec__get_packed_size(&g->s);
        uint8_t *b = malloc(13 + len);
        memcpy(b, "hlink-task-v1", 13);
        hlink__task_spec__pack(&g->s, b + 13);
        crypto_sign_detached(sig, NULL, b, 13 + len, pool.sk);
        Hlink__Task t = HLINK__TASK__INIT;
        Hlink__TaskSpec *got = NULL;
        t.spec = (ProtobufCBinaryData) { len, b + 13 };
        t.signature = (ProtobufCBinaryData) { 64, sig };
        int v = link_task_verify(&t, pool.pk, &got, NULL);
        if (v == 0)
                hlink__task_spec__free_unpacked(got, NULL);
        free(b);
        assert_int_equal(v, r);
        return r;
}

static void test_gpu_spec_limits(void **state)
{
        GpuSpec g;
        Hlink__TaskSpec *got;
        void *spec;
        size_t len;
        uint8_t sig[64], h[32];

        /* The valid one signs, verifies and comes back whole. */
        gpu_spec(&g);
        assert_int_equal(link_task_sign(&pool, &g.s, &spec, &len, sig), 0);
        Hlink__Task t = HLINK__TASK__INIT;
        t.spec = (ProtobufCBinaryData) { len, spec };
        t.signature = (ProtobufCBinaryData) { 64, sig };
        assert_int_equal(link_task_verify(&t, pool.pk, &got, h), 0);
        assert_int_equal(got->n_local_size, 1);
        assert_int_equal(got->local_size[0], 16);
        assert_int_equal(got->n_args, 4);
        assert_int_equal(got->args[1]->kind, HLINK__ARG_KIND__ARG_OUT);
        assert_string_equal(got->args[1]->name, "out");
        assert_int_equal(got->args[1]->bytes, 256);
        assert_int_equal(got->args[2]->value.len, 4);
        assert_int_equal(got->args[3]->bytes, 1024);
        hlink__task_spec__free_unpacked(got, NULL);
        free(spec);
        assert_int_equal(gpu_err(&g), 0);

        /* Counts and sizes: -EMSGSIZE. */
        gpu_spec(&g);
        g.s.n_args = LINK_KERNEL_ARGS_MAX;                      /* 28 more "in" args: fine */
        assert_int_equal(gpu_err(&g), 0);
        g.s.n_args = LINK_KERNEL_ARGS_MAX + 1;                  /* LINK_KERNEL_ARGS_MAX */
        assert_int_equal(gpu_err(&g), -EMSGSIZE);
        gpu_spec(&g);
        g.s.n_local_size = LINK_DIMS_MAX + 1;                   /* LINK_DIMS_MAX, local */
        assert_int_equal(gpu_err(&g), -EMSGSIZE);
        gpu_spec(&g);
        g.s.n_global_size = g.s.n_local_size = LINK_DIMS_MAX;
        assert_int_equal(gpu_err(&g), 0);
        g.global[0] = g.global[1] = 1U << 20;                   /* 2^40 work items: the limit */
        g.global[2] = 1;
        g.local[2] = 1;
        assert_int_equal(gpu_err(&g), 0);
        g.global[2] = 2;                                        /* LINK_WORK_ITEMS_MAX */
        assert_int_equal(gpu_err(&g), -EMSGSIZE);
        g.global[0] = g.global[1] = g.global[2] = UINT64_MAX;   /* no overflow to a small product */
        g.local[0] = g.local[1] = g.local[2] = 1;
        assert_int_equal(gpu_err(&g), -EMSGSIZE);
        gpu_spec(&g);
        g.a[1].bytes = LINK_FILE_MAX_BYTES;
        assert_int_equal(gpu_err(&g), 0);
        g.a[1].bytes = LINK_FILE_MAX_BYTES + 1;                 /* an output over LINK_FILE_MAX_BYTES */
        assert_int_equal(gpu_err(&g), -EMSGSIZE);
        gpu_spec(&g);
        g.a[3].bytes = LINK_LOCAL_MAX_BYTES;
        assert_int_equal(gpu_err(&g), 0);
        g.a[3].bytes = LINK_LOCAL_MAX_BYTES + 1;                /* LINK_LOCAL_MAX_BYTES */
        assert_int_equal(gpu_err(&g), -EMSGSIZE);
        gpu_spec(&g);
        g.a[2].value.len = LINK_SCALAR_MAX_BYTES;
        assert_int_equal(gpu_err(&g), 0);
        g.a[2].value.len = LINK_SCALAR_MAX_BYTES + 1;           /* LINK_SCALAR_MAX_BYTES */
        assert_int_equal(gpu_err(&g), -EMSGSIZE);
        gpu_spec(&g);
        char long_name[LINK_STR_MAX + 2];
        memset(long_name, 'o', sizeof(long_name) - 1);
        long_name[LINK_STR_MAX + 1] = 0;
        g.a[1].name = long_name;                                /* LINK_STR_MAX, an output name */
        assert_int_equal(gpu_err(&g), -EMSGSIZE);
        g.a[1].name = "out";
        g.a[2].name = long_name;                                /* and a scalar's */
        assert_int_equal(gpu_err(&g), -EMSGSIZE);
        gpu_spec(&g);                                           /* 17 outputs: more than a result holds */
        static char onames[LINK_FILES_MAX + 1][8];
        for (size_t i = 0; i <= LINK_FILES_MAX; i++) {
                snprintf(onames[i], sizeof(onames[i]), "o%zu", i);
                g.a[i].kind = HLINK__ARG_KIND__ARG_OUT;
                g.a[i].name = onames[i];
                g.a[i].bytes = 4;
                g.a[i].value.len = 0;
        }
        g.s.n_args = LINK_FILES_MAX;
        assert_int_equal(gpu_err(&g), 0);
        g.s.n_args = LINK_FILES_MAX + 1;                        /* LINK_FILES_MAX outputs */
        assert_int_equal(gpu_err(&g), -EMSGSIZE);

        /* Malformed: -EBADMSG. */
        gpu_spec(&g);
        g.a[0].kind = 6;                                        /* ArgKind out of range */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.a[0].kind = HLINK__ARG_KIND__ARG_UNSPECIFIED;
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.a[1].name = "\xc3\x28";                               /* bad UTF-8 */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.a[1].name = "../out";                                 /* an output is a file name */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.a[1].name = "";
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.a[1].name = "o\nut";
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.a[2].name = "\xe0\x80\xaf";                          /* a scalar's name: UTF-8 too */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.a[0].name = "nowhere";                                /* an in buffer names no input */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.a[0].kind = HLINK__ARG_KIND__ARG_INOUT;
        g.a[1].name = "in";                                     /* two outputs of one name */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.a[0].bytes = 16;                                      /* an in buffer is sized by its input */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.a[1].bytes = 0;                                       /* an empty output */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.a[1].value = (ProtobufCBinaryData) { 4, g.value };    /* a value on a buffer */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.a[2].value.len = 0;                                   /* a scalar of nothing */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.a[2].bytes = 4;                                       /* a scalar's size is its value's */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.a[3].bytes = 0;                                       /* __local of nothing */
        assert_int_equal(gpu_err(&g), -EBADMSG);

        /* The ND-range. */
        gpu_spec(&g);
        g.s.n_global_size = 0;                                  /* none */
        g.s.n_local_size = 0;
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.s.n_local_size = 0;                                   /* no local size: the device picks */
        assert_int_equal(gpu_err(&g), 0);
        g.s.n_global_size = 2;
        g.s.n_local_size = 1;                                   /* local dims != global dims */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.global[0] = 0;                                        /* a global size of 0 */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        gpu_spec(&g);
        g.local[0] = 0;                                         /* a local size of 0 */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.local[0] = 48;                                        /* not dividing the global size */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.local[0] = 128;                                       /* over it */
        assert_int_equal(gpu_err(&g), -EBADMSG);

        /* Kernel name and source. */
        gpu_spec(&g);
        g.s.kernel = "";
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.s.kernel = "9lives";
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.s.kernel = "scramble; rm -rf";
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.s.kernel = "_Z8scramblePjS_j$1";                      /* mangled and PTX names are fine */
        assert_int_equal(gpu_err(&g), 0);
        gpu_spec(&g);
        g.src.name = "kernel.c";                                /* no kernel.cl */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.s.kind = HLINK__KIND__KIND_CUDA;                      /* cuda reads kernel.ptx */
        g.src.name = "kernel.cl";
        g.a[3].kind = HLINK__ARG_KIND__ARG_SCALAR;              /* (no __local on CUDA) */
        g.a[3].bytes = 0;
        g.a[3].value = (ProtobufCBinaryData) { 4, g.value };
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.src.name = "kernel.ptx";
        assert_int_equal(gpu_err(&g), 0);
        g.s.n_local_size = 0;                                   /* CUDA needs its block size */
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.s.n_local_size = 1;
        g.a[3].kind = HLINK__ARG_KIND__ARG_LOCAL;               /* __local memory on CUDA */
        g.a[3].bytes = 1024;
        g.a[3].value.len = 0;
        assert_int_equal(gpu_err(&g), -EBADMSG);

        /* An exec task carries no GPU arguments or work-group. */
        gpu_spec(&g);
        char *argv[] = { "/bin/true" };
        g.s.kind = HLINK__KIND__KIND_EXEC;
        g.s.argv = argv;
        g.s.n_argv = 1;
        g.s.n_local_size = 0;
        assert_int_equal(gpu_err(&g), -EBADMSG);
        g.s.n_args = 0;
        assert_int_equal(gpu_err(&g), 0);
        g.s.n_local_size = 1;
        assert_int_equal(gpu_err(&g), -EBADMSG);
}

static void test_envelope_fields(void **state)
{
        Hlink__Body b = fetch_body(1);
        uint8_t *buf;
        size_t len;
        LinkMsg *m = NULL;

        /* Built by hand from WIRE.md: the decoder accepts it. */
        len = raw_envelope(LINK_VERSION, 16, 64, &b, &buf);
        assert_int_equal(link_decode(buf, len, &m), 0);
        assert_int_equal(m->env->seq, 77);
        link_msg_free(m);
        /* Every truncation of a valid message is refused. */
        for (size_t n = 0; n < len; n++)
                assert_int_not_equal(link_decode(buf, n, &m), 0);
        /* A flipped bit anywhere is refused. */
        for (size_t i = 0; i < len; i++) {
                buf[i] ^= 0x01;
                assert_int_not_equal(link_decode(buf, len, &m), 0);
                buf[i] ^= 0x01;
        }
        free(buf);

        len = raw_envelope(1, 16, 64, &b, &buf);               /* version 1: a v1 peer */
        assert_int_equal(link_decode(buf, len, &m), -EPROTONOSUPPORT);
        free(buf);
        len = raw_envelope(LINK_VERSION, 8, 64, &b, &buf);
        assert_int_equal(link_decode(buf, len, &m), -EBADMSG);
        free(buf);
        len = raw_envelope(LINK_VERSION, 16, 63, &b, &buf);     /* truncated signature */
        assert_int_equal(link_decode(buf, len, &m), -EKEYREJECTED);
        free(buf);
        len = raw_envelope(LINK_VERSION, 16, 0, &b, &buf);      /* none */
        assert_int_equal(link_decode(buf, len, &m), -EKEYREJECTED);
        free(buf);
        assert_int_equal(link_decode("garbage", 7, &m), -EBADMSG);
}

static void test_forged_envelope(void **state)
{
        Hlink__Body b = fetch_body(3);
        void *buf;
        size_t len;
        LinkMsg *m = NULL;

        assert_int_equal(link_encode(&worker, &b, NULL, 1000, NULL, &buf, &len), 0);
        Hlink__Envelope *e = hlink__envelope__unpack(NULL, len, buf);
        assert_non_null(e);
        /* Claim another sender: the signature no longer matches. */
        memcpy(e->sender.data, pool.pk, 32);
        uint8_t out[1024];
        size_t ol = hlink__envelope__pack(e, out);
        assert_int_equal(link_decode(out, ol, &m), -EKEYREJECTED);
        memcpy(e->sender.data, worker.pk, 32);
        /* Raise the sequence number to get past a replay guard. */
        e->seq++;
        ol = hlink__envelope__pack(e, out);
        assert_int_equal(link_decode(out, ol, &m), -EKEYREJECTED);
        e->seq--;
        ol = hlink__envelope__pack(e, out);
        assert_int_equal(link_decode(out, ol, &m), 0);
        link_msg_free(m);
        hlink__envelope__free_unpacked(e, NULL);
        free(buf);
}

static void test_replay(void **state)
{
        Hlink__Body b = fetch_body(1);
        void *buf1, *buf2;
        size_t l1, l2;
        LinkMsg *m1, *m2;
        uint64_t last = 0;
        uint8_t n1[16], n2[16];

        /* The same clock reading twice still gives increasing numbers. */
        assert_int_equal(link_encode(&worker, &b, NULL, 5000, n1, &buf1, &l1), 0);
        assert_int_equal(link_encode(&worker, &b, NULL, 5000, n2, &buf2, &l2), 0);
        assert_memory_not_equal(n1, n2, 16);
        assert_int_equal(link_decode(buf1, l1, &m1), 0);
        assert_int_equal(link_decode(buf2, l2, &m2), 0);
        assert_true(m2->env->seq > m1->env->seq);
        assert_int_equal(link_replay_check(&last, m1->env->seq), 0);
        assert_int_equal(link_replay_check(&last, m2->env->seq), 0);
        /* Replayed: the same message again, and an older one. */
        assert_int_equal(link_replay_check(&last, m2->env->seq), -ESTALE);
        assert_int_equal(link_replay_check(&last, m1->env->seq), -ESTALE);
        assert_int_equal(last, m2->env->seq);
        link_msg_free(m1);
        link_msg_free(m2);
        free(buf1);
        free(buf2);
        assert_int_equal(link_error_from_errno(-ESTALE), HLINK__ERROR_CODE__ERR_REPLAY);
        assert_string_equal(link_error_name(HLINK__ERROR_CODE__ERR_REPLAY), "replay");
}

/* A worker's hello and the pool's welcome, as the two ends run them. */
static void make_session(LinkSession *worker_side, LinkSession *pool_side)
{
        uint8_t wpk[32], wsk[32], ppk[32];
        Hlink__Welcome w = HLINK__WELCOME__INIT;
        assert_int_equal(link_kx_keypair(wpk, wsk), 0);
        assert_int_equal(link_session_server(wpk, pool_side, ppk), 0);
        w.kx_public = (ProtobufCBinaryData) { 32, ppk };
        w.session = (ProtobufCBinaryData) { 16, pool_side->id };
        assert_int_equal(link_session_client(wpk, wsk, &w, worker_side), 0);
        /* Each side's tx is the other's rx, and the two directions differ. */
        assert_memory_equal(worker_side->tx, pool_side->rx, 32);
        assert_memory_equal(worker_side->rx, pool_side->tx, 32);
        assert_memory_not_equal(worker_side->tx, worker_side->rx, 32);
        assert_memory_equal(worker_side->id, pool_side->id, 16);
}

static int open_with(const void *buf, size_t len, const LinkSession *s, LinkMsg **ret)
{
        LinkMsg *m = NULL;
        int r = link_decode_frame(buf, len, &m);
        if (r < 0)
                return r;
        r = link_msg_open(m, s);
        if (r < 0 || !ret)
                link_msg_free(m);
        else
                *ret = m;
        return r;
}

static void test_session(void **state)
{
        LinkSession ws, ps, ws2, ps2;
        Hlink__Body b = fetch_body(2);
        void *buf;
        size_t len;
        LinkMsg *m = NULL;

        make_session(&ws, &ps);
        make_session(&ws2, &ps2);

        /* Worker to pool, MACed: opens under the pool's side of the session. */
        assert_int_equal(link_encode_session(&worker, &ws, &b, NULL, 1000, NULL, &buf, &len), 0);
        assert_int_equal(open_with(buf, len, &ps, &m), 0);
        assert_false(link_msg_signed(m));
        assert_int_equal(m->env->signature.len, 0);
        assert_int_equal(m->env->mac.len, LINK_MAC_BYTES);
        assert_memory_equal(m->env->session.data, ps.id, 16);
        assert_int_equal(m->body->fetch->max_tasks, 2);
        /* Replayed within the session: refused by the sequence guard. */
        assert_int_equal(link_replay_check(&ps.rx_seq, m->env->seq), 0);
        assert_int_equal(link_replay_check(&ps.rx_seq, m->env->seq), -ESTALE);
        link_msg_free(m);

        /* No session, or another one: not ours (say hello). */
        assert_int_equal(open_with(buf, len, NULL, NULL), -ENOTCONN);
        assert_int_equal(open_with(buf, len, &ps2, NULL), -ENOTCONN);
        assert_int_equal(link_decode(buf, len, &m), -ENOTCONN);
        assert_int_equal(link_error_from_errno(-ENOTCONN), HLINK__ERROR_CODE__ERR_UNKNOWN_WORKER);
        /* The right id with other keys (a session forged by a third party
         * that learned the id from the wire): the MAC does not verify. */
        LinkSession fake = ps2;
        memcpy(fake.id, ps.id, 16);
        assert_int_equal(open_with(buf, len, &fake, NULL), -EKEYREJECTED);
        /* Its own direction's key does not open it either: a reflected
         * message is refused. */
        LinkSession reflect = ws;
        assert_int_equal(open_with(buf, len, &reflect, NULL), -EKEYREJECTED);

        /* A flipped bit anywhere (header, body, MAC, session id) is refused. */
        uint8_t *p = buf;
        for (size_t i = 0; i < len; i++) {
                p[i] ^= 0x01;
                assert_int_not_equal(open_with(buf, len, &ps, NULL), 0);
                p[i] ^= 0x01;
        }
        /* A signature and a MAC both, or a MAC without a session id: malformed. */
        Hlink__Envelope *e = hlink__envelope__unpack(NULL, len, buf);
        uint8_t sig[64] = { 0 }, out[1024];
        assert_non_null(e);
        e->signature = (ProtobufCBinaryData) { 64, sig };
        assert_int_equal(open_with(out, hlink__envelope__pack(e, out), &ps, NULL), -EBADMSG);
        e->signature = (ProtobufCBinaryData) { 0, NULL };
        size_t sl = e->session.len;
        e->session.len = 0;
        assert_int_equal(open_with(out, hlink__envelope__pack(e, out), &ps, NULL), -EBADMSG);
        e->session.len = sl;
        e->mac.len = 31;                                        /* truncated MAC */
        assert_int_equal(open_with(out, hlink__envelope__pack(e, out), &ps, NULL), -EKEYREJECTED);
        hlink__envelope__free_unpacked(e, NULL);
        free(buf);

        /* Pool to worker, in reply. */
        uint8_t nonce[16] = { 7 };
        assert_int_equal(link_encode_session(&pool, &ps, &b, nonce, 2000, NULL, &buf, &len), 0);
        assert_int_equal(open_with(buf, len, &ws, &m), 0);
        assert_memory_equal(m->env->reply_to.data, nonce, 16);
        assert_memory_equal(m->env->sender.data, pool.pk, 32);
        link_msg_free(m);
        assert_int_equal(open_with(buf, len, &ws2, NULL), -ENOTCONN);
        free(buf);

        /* A welcome must carry both halves. */
        Hlink__Welcome w = HLINK__WELCOME__INIT;
        uint8_t wpk[32], wsk[32];
        assert_int_equal(link_kx_keypair(wpk, wsk), 0);
        assert_int_equal(link_session_client(wpk, wsk, &w, &ws2), -EBADMSG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_identity),
                cmocka_unit_test(test_roundtrip_hello),
                cmocka_unit_test(test_roundtrip_task),
                cmocka_unit_test(test_result),
                cmocka_unit_test(test_result_batch),
                cmocka_unit_test(test_limits),
                cmocka_unit_test(test_gpu_spec_limits),
                cmocka_unit_test(test_envelope_fields),
                cmocka_unit_test(test_forged_envelope),
                cmocka_unit_test(test_replay),
                cmocka_unit_test(test_session),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
