/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The pool's scheduling state in memory: pending tasks, their leases and
 * the result hashes their replicas reported, with the tasks that want
 * another lease queued by capability class. Pure logic: no I/O, the clock
 * is an argument. pool/store-sqlite.c keeps it beside the database while
 * the server runs (group mode), so a lease or a result needs no SELECT:
 * SQLite is only written to, as the durable log, and this is rebuilt from
 * it at start. Not thread-safe: the store's lock covers it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/link.h"
#include "pool/store.h"

typedef struct Sched Sched;
typedef struct SchedTask SchedTask;

enum { SCHED_ACTIVE = 1, SCHED_DONE = 2, SCHED_RELEASED = 3 };

/* What a pending task is, as tasks' row says. */
typedef struct SchedTaskNew {
        int64_t rowid;
        const char *id;
        const void *spec;
        size_t spec_len;
        const uint8_t *signature;
        unsigned replicas, quorum, wanted;
        const char *need_arch;
        unsigned need_cores;
        uint64_t need_memory_bytes;
        int need_gpu;
        uint64_t deadline_usec;
} SchedTaskNew;

int sched_new(Sched **ret);
void sched_free(Sched *s);
size_t sched_tasks(const Sched *s);

/* Add a pending task (spec and signature copied). -EEXIST if its id is there. */
int sched_add(Sched *s, const SchedTaskNew *n, SchedTask **ret);
SchedTask *sched_find(Sched *s, const char *id);
const char *sched_task_id(const SchedTask *t);
void sched_task_spec(const SchedTask *t, const void **ret_spec, size_t *ret_len, const uint8_t **ret_signature);

/* While loading: a lease as the leases table has it (STATE one of the
 * above; HASH the result's, for a DONE one). Queue state is settled by
 * sched_loaded(). */
int sched_load_lease(Sched *s, SchedTask *t, const uint8_t key[LINK_KEY_BYTES], uint64_t expires_usec, int state,
                     const uint8_t *hash);
void sched_loaded(Sched *s, uint64_t now_usec);

/* Lease up to MAX tasks that fit CAPS, that KEY neither holds nor has
 * answered, that still want a replica and are not past their deadline,
 * at most MAX_BYTES of specs, tasks whose lease lapsed first. Records the
 * leases (expiring at NOW + LEASE_USEC) and returns how many are in RET. */
int sched_pick(Sched *s, const uint8_t key[LINK_KEY_BYTES], const PoolWorkerCaps *caps, unsigned max,
               size_t max_bytes, uint64_t now_usec, uint64_t lease_usec, SchedTask **ret);

/* KEY's lease on T: its state (0: none) and expiry. */
int sched_lease_state(const SchedTask *t, const uint8_t key[LINK_KEY_BYTES], uint64_t *ret_expires_usec);

/* Renew KEY's active lease on T: -ENOENT if none, -ETIMEDOUT if it lapsed
 * and others fill the task meanwhile. */
int sched_renew(Sched *s, SchedTask *t, const uint8_t key[LINK_KEY_BYTES], uint64_t now_usec, uint64_t lease_usec);

/* KEY gives up its lease on T (goodbye, or a cancelled task's result). */
void sched_release(Sched *s, SchedTask *t, const uint8_t key[LINK_KEY_BYTES], uint64_t now_usec);

enum { SCHED_UNDECIDED, SCHED_ACCEPT, SCHED_ASK_MORE, SCHED_GIVE_UP };

/* KEY's result with HASH is stored: record it and judge T. SCHED_ACCEPT
 * (RET_HASH: the quorum's hash): a quorum agrees; SCHED_ASK_MORE: every
 * replica in, no quorum, and room for one more (wanted is raised);
 * SCHED_GIVE_UP: no quorum at twice the replicas. */
int sched_result(Sched *s, SchedTask *t, const uint8_t key[LINK_KEY_BYTES], const uint8_t hash[LINK_HASH_BYTES],
                 uint64_t now_usec, uint8_t ret_hash[LINK_HASH_BYTES]);

/* How many answers T has (leases in SCHED_DONE). */
unsigned sched_answers(const SchedTask *t);

/* T is no longer pending (decided, given up, cancelled): forget it. */
void sched_remove(Sched *s, SchedTask *t);
