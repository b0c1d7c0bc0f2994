/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The pool's state: tasks, workers, leases, results. One small interface so
 * that a PostgreSQL backend can stand beside the SQLite one (store-sqlite.c)
 * later; nothing outside pool/store-*.c sees SQL.
 *
 * Every call is one transaction (or a part of one opened with
 * pool_store_begin()): when it returns its effect is durable (SQLite WAL,
 * synchronous=FULL), so a kill -9 or a crash at any moment loses no
 * submitted task and no accepted result. The server uses group commit
 * instead (pool_store_set_group()): durable at pool_store_commit(), and it
 * answers nobody before that. In group mode the store also keeps the
 * pending tasks, their leases and answers in memory (pool/sched.h), so a
 * lease or a result is chosen and judged without a SELECT and the database
 * is only written; memory is built from the database at start and after a
 * rollback or a failed commit, and reads only the rows another process
 * added (submitted tasks, cancels) when it committed. Calls are safe from several
 * threads (one lock per store) and several processes (the CLI beside a
 * running server). Times are CLOCK_REALTIME µs passed in by the caller.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "net/link.h"

typedef struct PoolStore PoolStore;

/* Open (with CREATE: create) the database at PATH. */
int pool_store_open(const char *path, bool create, PoolStore **ret);
void pool_store_close(PoolStore *s);

/* A task as submitted: the signed spec and what the pool needs to place it. */
typedef struct PoolTaskNew {
        const char *id;
        int kind;                       /* Hlink__Kind */
        const void *spec;               /* the serialized TaskSpec, as signed */
        size_t spec_len;
        const uint8_t *signature;       /* LINK_SIG_BYTES */
        unsigned replicas;              /* results wanted from distinct workers, >= 1 */
        unsigned quorum;                /* agreeing results that accept it, 1..replicas */
        const char *need_arch;          /* "" or NULL: any */
        unsigned need_cores;
        uint64_t need_memory_bytes;
        int need_gpu;                   /* Hlink__DeviceApi */
        uint64_t deadline_usec;         /* 0: none */
} PoolTaskNew;

/* Group the calls between these two into one transaction: one commit (one
 * fsync) instead of one each. Calls nest; a failed inner call rolls back
 * only its own part. pool_store_end() commits when R >= 0 and returns R or
 * the commit's error; otherwise rolls back and returns R. The store's lock
 * is held in between: keep it short. */
int pool_store_begin(PoolStore *s);
int pool_store_end(PoolStore *s, int r);

/* Group commit, for the server: with ON, changes are not committed when a
 * call returns but by pool_store_commit(), so one fsync covers every
 * request served meanwhile; a call that fails still undoes only its own
 * changes. A caller must not report a change as done (reply to a worker)
 * before a pool_store_commit() that began after the call returned has
 * succeeded; if it fails, every change since the last commit is gone.
 * OFF commits what is open. */
int pool_store_set_group(PoolStore *s, bool on);
int pool_store_commit(PoolStore *s);

/* Group mode's memory state: how often it was built from the whole
 * database (at start, after a rollback or a failed commit), how often it
 * caught up with another process's commits (the CLI's submit and cancel)
 * by reading only the rows they added, how many rows that read, and how
 * many pending tasks it holds. */
typedef struct PoolStoreMemStats {
        uint64_t full_loads;
        uint64_t catch_ups;
        uint64_t rows_caught_up;
        size_t tasks;
} PoolStoreMemStats;
void pool_store_mem_stats(PoolStore *s, PoolStoreMemStats *ret);

/* Store a new task. -EEXIST if the id is taken. */
int pool_store_add_task(PoolStore *s, const PoolTaskNew *t, uint64_t now_usec);

/* Cancel a pending task: no more leases, renewals refused, results not
 * wanted. -ENOENT if unknown, -EALREADY if no longer pending. */
int pool_store_cancel(PoolStore *s, const char *id, uint64_t now_usec);

/* Record a worker's hello (insert or update its capabilities), checking its
 * sequence number against the last one stored: -ESTALE on a replay. */
int pool_store_hello(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], const Hlink__Hello *hello,
                     uint64_t seq, uint64_t now_usec);

/* Any other request: the worker must be known (-ENOENT) and SEQ above the
 * last one stored (-ESTALE). Durable, so a pool restart does not reopen
 * the replay window. */
int pool_store_check_seq(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], uint64_t seq, uint64_t now_usec);

/* One task leased to a worker. */
typedef struct PoolLease {
        char id[LINK_ID_MAX + 1];
        void *spec;                     /* malloc'd */
        size_t spec_len;
        uint8_t signature[LINK_SIG_BYTES];
        uint64_t expires_usec;
} PoolLease;

/* Lease up to MAX pending tasks that fit the worker's capabilities, that it
 * does not already hold or has answered, and that still want replicas, with
 * at most MAX_BYTES of specs in all. Expired leases count for nothing, so
 * their tasks go out again. Returns how many; free with pool_leases_free(). */
int pool_store_lease(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], unsigned max, size_t max_bytes,
                     uint64_t now_usec, uint64_t lease_usec, PoolLease **ret);

/* What matching needs of a worker, as its hello said: the server keeps it
 * in memory with the worker's session, so a lease need not read it back. */
typedef struct PoolWorkerCaps {
        char arch[LINK_STR_MAX + 1];
        unsigned cores;
        uint64_t memory_bytes;
        unsigned gpu_mask;              /* bit N: a device of Hlink__DeviceApi N */
} PoolWorkerCaps;
void pool_worker_caps(const Hlink__Capabilities *c, PoolWorkerCaps *ret);

/* pool_store_lease() for a worker whose capabilities the caller holds. */
int pool_store_lease_caps(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], const PoolWorkerCaps *caps,
                          unsigned max, size_t max_bytes, uint64_t now_usec, uint64_t lease_usec, PoolLease **ret);
void pool_leases_free(PoolLease *l, size_t n);

/* Extend the worker's lease on TASK_ID. 0 and the new expiry if the pool
 * still wants it from this worker; -ENOENT, -EALREADY (done, cancelled) or
 * -ETIMEDOUT (lapsed and handed to another worker) if not. */
int pool_store_renew(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], const char *task_id,
                     uint64_t now_usec, uint64_t lease_usec, uint64_t *ret_expires_usec);

/* A verified result (its signature and output hashes already checked).
 * HASH is what replicas must agree on. Stores it if the worker was leased
 * the task, then decides the task once a quorum of hashes agree, marking
 * the others disagreeing; with every replica in and no quorum it asks for
 * one more, up to twice the replicas, then gives the task up as
 * inconclusive. *RET_ACCEPTED: stored (or stored before: a resend after a
 * lost ack). -ENOENT: unknown task or never leased to this worker. */
int pool_store_add_result(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], const Hlink__ResultBody *body,
                          const uint8_t hash[LINK_HASH_BYTES], const void *raw, size_t raw_len,
                          const void *signature, size_t signature_len, uint64_t now_usec,
                          bool *ret_accepted, const char **ret_reason);

/* Goodbye: the worker's live leases go back to the pool at once. Returns how
 * many were released. */
int pool_store_release(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], uint64_t now_usec);

/* Add to the persisted counters (name -> count), e.g. "errors.malformed". */
int pool_store_count(PoolStore *s, const char *const *names, const uint64_t *deltas, size_t n);

/* Listings for the operator, as JSON (documented in harvest-pool(8)). */
int pool_store_tasks_json(PoolStore *s, uint64_t now_usec, json_t **ret);
int pool_store_results_json(PoolStore *s, const char *task_id, bool with_data, json_t **ret);
int pool_store_workers_json(PoolStore *s, uint64_t now_usec, json_t **ret);
int pool_store_status_json(PoolStore *s, uint64_t now_usec, json_t **ret);

/* Every stored result as it came, in order: the worker's key, the signed
 * body and what was kept to prove it (its own signature or a batch proof).
 * FN returns < 0 to stop (that value is returned). */
typedef int (*PoolResultFn)(const char *task_id, const uint8_t worker[LINK_KEY_BYTES], const void *body,
                            size_t body_len, const void *proof, size_t proof_len, void *userdata);
int pool_store_each_result(PoolStore *s, PoolResultFn fn, void *userdata);
