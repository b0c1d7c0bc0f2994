/* SPDX-License-Identifier: GPL-2.0-or-later */
/* harvest-pool's network side: a REP socket served by many NNG contexts at
 * once, each request decoded, checked, answered from the store. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "net/link.h"
#include "pool/store.h"

#define POOL_HELLO_RATE 500
#define POOL_HELLO_BURST 2000

typedef struct PoolServerConfig {
        const char *const *listen;      /* URLs: tcp://, ipc://, tls+tcp:// */
        size_t n_listen;
        unsigned contexts;              /* requests served at once; 0: 64 */
        uint32_t lease_sec;             /* 0: 300 */
        const char *tls_cert_key_file;  /* tls+tcp: our certificate and key (PEM, one file) */
        unsigned hello_rate;            /* hellos a second, sustained; 0: POOL_HELLO_RATE */
        unsigned hello_burst;           /* at once; 0: the larger of the rate and POOL_HELLO_BURST */
} PoolServerConfig;

typedef struct PoolServer PoolServer;

/* Open the socket, listen on every URL and start serving. Puts STORE in
 * group-commit mode: a reply goes out only after a commit covering its
 * request's changes, and one commit covers every request served during the
 * previous one. ID is the pool's
 * identity (signs replies); STORE outlives the server. */
int pool_server_new(PoolStore *store, const LinkIdentity *id, const PoolServerConfig *cfg, PoolServer **ret);
/* Stop serving (in-flight requests are finished or cancelled), flush the
 * counters, free. */
void pool_server_free(PoolServer *s);

/* Requests answered, error replies, and group commits (one fsync each)
 * since start. */
void pool_server_stats(PoolServer *s, uint64_t *ret_requests, uint64_t *ret_errors, uint64_t *ret_commits);
