/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target for the link's decoder (make fuzz; tests/host/fuzz-link.sh).
 *
 * The first byte picks what the rest is fed to. A fuzzer cannot forge
 * ed25519 signatures, so feeding only raw envelopes would never get past
 * the signature check; the other modes sign the input with a fixed key
 * first, so every parser and limit behind a signature is reached too:
 *   0  link_decode() on raw bytes (what any peer can send)
 *   1  the bytes as an Envelope body, signed: Body parsing and every limit
 *   2  the bytes as a TaskSpec, signed by the "pool": link_task_verify()
 *   3  the bytes as a ResultBody, signed by the "worker": link_result_verify()
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "net/link.h"

static LinkIdentity key;

static void setup(void)
{
        static int done;
        uint8_t seed[32] = { 42 };
        if (done)
                return;
        link_init();
        crypto_sign_seed_keypair(key.pk, key.sk, seed);
        done = 1;
}

static void sign(const char *domain, const uint8_t *data, size_t len, uint8_t sig[64])
{
        size_t dl = strlen(domain);
        uint8_t *b = malloc(dl + len + 1);
        memcpy(b, domain, dl);
        if (len)
                memcpy(b + dl, data, len);
        crypto_sign_detached(sig, NULL, b, dl + len, key.sk);
        free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        LinkMsg *m = NULL;
        uint8_t sig[64];

        setup();
        if (size < 1)
                return 0;
        uint8_t mode = data[0] & 3;
        data++, size--;

        switch (mode) {
        case 0:
                if (link_decode(data, size, &m) == 0) {
                        /* Whatever decodes must be safe to walk. */
                        if (m->body->msg_case == HLINK__BODY__MSG_WORK)
                                for (size_t i = 0; i < m->body->work->n_tasks; i++) {
                                        Hlink__TaskSpec *s = NULL;
                                        if (link_task_verify(m->body->work->tasks[i], key.pk, &s, NULL) == 0)
                                                hlink__task_spec__free_unpacked(s, NULL);
                                }
                        link_msg_free(m);
                }
                break;
        case 1: {
                /* Frame the bytes as a body with the encoder's own framing:
                 * an Envelope built by link_encode() from a parsed Body
                 * would re-encode, so build the frame by hand instead. */
                Hlink__Envelope e = HLINK__ENVELOPE__INIT;
                uint8_t nonce[16] = { 1 };
                size_t hl = 12 + 4 + 8 + 16 + 32 + 1;
                uint8_t *sb = malloc(hl + size + 1), *p = sb;
                memcpy(p, "hlink-env-v1", 12), p += 12;
                memcpy(p, "\0\0\0\1", 4), p += 4;
                memset(p, 0, 7), p[7] = 9, p += 8;
                memcpy(p, nonce, 16), p += 16;
                memcpy(p, key.pk, 32), p += 32;
                *p++ = 0;
                if (size)
                        memcpy(p, data, size);
                crypto_sign_detached(sig, NULL, sb, hl + size, key.sk);
                free(sb);
                e.version = 1;
                e.seq = 9;
                e.nonce = (ProtobufCBinaryData) { 16, nonce };
                e.sender = (ProtobufCBinaryData) { 32, key.pk };
                e.body = (ProtobufCBinaryData) { size, (uint8_t *) data };
                e.signature = (ProtobufCBinaryData) { 64, sig };
                size_t len = hlink__envelope__get_packed_size(&e);
                uint8_t *buf = malloc(len);
                hlink__envelope__pack(&e, buf);
                if (link_decode(buf, len, &m) == 0)
                        link_msg_free(m);
                free(buf);
                break;
        }
        case 2: {
                Hlink__Task t = HLINK__TASK__INIT;
                Hlink__TaskSpec *s = NULL;
                sign("hlink-task-v1", data, size, sig);
                t.spec = (ProtobufCBinaryData) { size, (uint8_t *) data };
                t.signature = (ProtobufCBinaryData) { 64, sig };
                if (link_task_verify(&t, key.pk, &s, NULL) == 0)
                        hlink__task_spec__free_unpacked(s, NULL);
                break;
        }
        case 3: {
                Hlink__Result r = HLINK__RESULT__INIT;
                Hlink__ResultBody *b = NULL;
                uint8_t hash[32];
                sign("hlink-result-v1", data, size, sig);
                r.body = (ProtobufCBinaryData) { size, (uint8_t *) data };
                r.signature = (ProtobufCBinaryData) { 64, sig };
                if (link_result_verify(&r, key.pk, &b, hash) == 0)
                        hlink__result_body__free_unpacked(b, NULL);
                break;
        }
        }
        return 0;
}
