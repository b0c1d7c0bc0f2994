/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target for the link's decoder (make fuzz; tests/host/fuzz-link.sh).
 *
 * The first byte picks what the rest is fed to. A fuzzer cannot forge
 * ed25519 signatures or session MACs, so feeding only raw envelopes would
 * never get past the authentication; the other modes sign or MAC the input
 * with a fixed key first, so every parser and limit behind them is reached
 * too:
 *   0  link_decode() on raw bytes (what any peer can send)
 *   1  the bytes as an Envelope body, signed: Body parsing and every limit
 *   2  the bytes as a TaskSpec, signed by the "pool": link_task_verify()
 *   3  the bytes as a ResultBody, signed by the "worker": link_result_verify()
 *   4  the bytes as an Envelope body, MACed in a fixed session
 *   5  raw bytes through link_decode_frame() and link_msg_open() with that
 *      session, as the pool reads a MACed request
 *   6, 7  as 0
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "net/link.h"

static LinkIdentity key;
static LinkSession session;

static void setup(void)
{
        static int done;
        uint8_t seed[32] = { 42 };
        if (done)
                return;
        link_init();
        crypto_sign_seed_keypair(key.pk, key.sk, seed);
        /* One fixed session: the same keys both ways, so one side's MAC
         * opens on the same side (the fuzzer needs no second party). */
        memset(session.id, 7, sizeof(session.id));
        memset(session.tx, 8, sizeof(session.tx));
        memset(session.rx, 8, sizeof(session.rx));
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

/* Whatever decodes must be safe to walk: the tasks inside too. */
static void walk(const LinkMsg *m)
{
        size_t n = 0;
        Hlink__Task **tasks = NULL;
        if (m->body->msg_case == HLINK__BODY__MSG_WORK)
                n = m->body->work->n_tasks, tasks = m->body->work->tasks;
        else if (m->body->msg_case == HLINK__BODY__MSG_RESULT_ACK)
                n = m->body->result_ack->n_tasks, tasks = m->body->result_ack->tasks;
        for (size_t i = 0; i < n; i++) {
                Hlink__TaskSpec *s = NULL;
                if (link_task_verify(tasks[i], key.pk, &s, NULL) == 0)
                        hlink__task_spec__free_unpacked(s, NULL);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        LinkMsg *m = NULL;
        uint8_t sig[64];

        setup();
        if (size < 1)
                return 0;
        uint8_t mode = data[0] & 7;
        data++, size--;

        switch (mode) {
        default:
                if (link_decode(data, size, &m) == 0) {
                        walk(m);
                        link_msg_free(m);
                }
                break;
        case 1:
        case 4: {
                /* Frame the bytes as a body by hand, as WIRE.md lays out the
                 * authenticated bytes: link_encode() would re-encode a
                 * parsed Body instead of carrying these bytes. */
                Hlink__Envelope e = HLINK__ENVELOPE__INIT;
                uint8_t nonce[16] = { 1 }, mac[32];
                bool macd = mode == 4;
                size_t hl = 12 + 4 + 8 + 16 + 32 + 1 + 1 + (macd ? 16 : 0);
                uint8_t *sb = malloc(hl + size + 1), *p = sb;
                memcpy(p, "hlink-env-v2", 12), p += 12;
                memcpy(p, "\0\0\0\2", 4), p += 4;
                memset(p, 0, 7), p[7] = 9, p += 8;
                memcpy(p, nonce, 16), p += 16;
                memcpy(p, key.pk, 32), p += 32;
                *p++ = 0;
                *p++ = macd ? 16 : 0;
                if (macd)
                        memcpy(p, session.id, 16), p += 16;
                if (size)
                        memcpy(p, data, size);
                if (macd)
                        crypto_auth_hmacsha512256(mac, sb, hl + size, session.tx);
                else
                        crypto_sign_detached(sig, NULL, sb, hl + size, key.sk);
                free(sb);
                e.version = 2;
                e.seq = 9;
                e.nonce = (ProtobufCBinaryData) { 16, nonce };
                e.sender = (ProtobufCBinaryData) { 32, key.pk };
                e.body = (ProtobufCBinaryData) { size, (uint8_t *) data };
                if (macd) {
                        e.mac = (ProtobufCBinaryData) { 32, mac };
                        e.session = (ProtobufCBinaryData) { 16, session.id };
                } else
                        e.signature = (ProtobufCBinaryData) { 64, sig };
                size_t len = hlink__envelope__get_packed_size(&e);
                uint8_t *buf = malloc(len);
                hlink__envelope__pack(&e, buf);
                if (macd) {
                        if (link_decode_frame(buf, len, &m) == 0 && link_msg_open(m, &session) == 0)
                                walk(m);
                        link_msg_free(m);
                } else if (link_decode(buf, len, &m) == 0) {
                        walk(m);
                        link_msg_free(m);
                }
                free(buf);
                break;
        }
        case 5:
                if (link_decode_frame(data, size, &m) == 0 && link_msg_open(m, &session) == 0)
                        walk(m);
                link_msg_free(m);
                break;
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
