/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The pool's scheduling state in memory: see pool/sched.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/sched.h"

/* A worker's lease on a task, or its answer. */
typedef struct SchedLease {
        uint8_t key[LINK_KEY_BYTES];
        uint64_t expires_usec;
        uint8_t state;
        bool has_hash;
        uint8_t hash[LINK_HASH_BYTES];
} SchedLease;

/* Tasks with the same needs: one queue of those that want a lease. */
typedef struct SchedClass {
        char arch[LINK_STR_MAX + 1];
        unsigned cores;
        uint64_t memory_bytes;
        int gpu;
        SchedTask *head, *tail;
        struct SchedClass *next;
} SchedClass;

struct SchedTask {
        char id[LINK_ID_MAX + 1];
        int64_t rowid;
        void *spec;
        size_t spec_len;
        uint8_t signature[LINK_SIG_BYTES];
        unsigned replicas, quorum, wanted;
        uint64_t deadline_usec;
        SchedClass *cls;
        SchedLease *leases;
        unsigned n_leases, cap_leases;
        bool queued, dead;
        unsigned refs;                  /* expiry entries that point here */
        SchedTask *prev, *next;         /* in cls's queue */
        SchedTask *hnext;               /* in the id hash */
};

/* Leases expire in the order they were issued or renewed (one lease time
 * for all), so a FIFO finds the lapsed ones without a scan. */
typedef struct Expiry {
        SchedTask *t;
        uint8_t key[LINK_KEY_BYTES];
        uint64_t expires_usec;
} Expiry;

struct Sched {
        SchedTask **buckets;
        size_t n_buckets, n_tasks;
        SchedClass *classes;
        Expiry *fifo;
        size_t fifo_head, fifo_len, fifo_cap;
};

/* A pick looks at most this many queued tasks of one class that the
 * worker already holds or answered (replicated tasks): bounded work. */
#define SCAN_MAX 4096

static size_t hash_id(const char *id)
{
        uint64_t h = 1469598103934665603ULL;
        for (; *id; id++)
                h = (h ^ (uint8_t) *id) * 1099511628211ULL;
        return (size_t) h;
}

int sched_new(Sched **ret)
{
        Sched *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->n_buckets = 4096;
        s->buckets = calloc(s->n_buckets, sizeof(*s->buckets));
        if (!s->buckets) {
                free(s);
                return -ENOMEM;
        }
        *ret = s;
        return 0;
}

static void task_free(SchedTask *t)
{
        free(t->spec);
        free(t->leases);
        free(t);
}

void sched_free(Sched *s)
{
        if (!s)
                return;
        /* Every task, dead ones kept for the FIFO included, exactly once. */
        for (size_t i = 0; i < s->fifo_len; i++) {
                SchedTask *t = s->fifo[(s->fifo_head + i) % s->fifo_cap].t;
                if (--t->refs == 0 && t->dead)
                        task_free(t);
        }
        for (size_t i = 0; i < s->n_buckets; i++)
                for (SchedTask *t = s->buckets[i], *n; t; t = n) {
                        n = t->hnext;
                        t->dead = true;
                        if (t->refs == 0)
                                task_free(t);
                }
        for (SchedClass *c = s->classes, *n; c; c = n) {
                n = c->next;
                free(c);
        }
        free(s->fifo);
        free(s->buckets);
        free(s);
}

size_t sched_tasks(const Sched *s)
{
        return s->n_tasks;
}

static void grow(Sched *s)
{
        size_t n = s->n_buckets * 2;
        SchedTask **b = calloc(n, sizeof(*b));
        if (!b)
                return;         /* longer chains, still correct */
        for (size_t i = 0; i < s->n_buckets; i++)
                for (SchedTask *t = s->buckets[i], *next; t; t = next) {
                        next = t->hnext;
                        size_t k = hash_id(t->id) & (n - 1);
                        t->hnext = b[k];
                        b[k] = t;
                }
        free(s->buckets);
        s->buckets = b;
        s->n_buckets = n;
}

SchedTask *sched_find(Sched *s, const char *id)
{
        for (SchedTask *t = s->buckets[hash_id(id) & (s->n_buckets - 1)]; t; t = t->hnext)
                if (!strcmp(t->id, id))
                        return t;
        return NULL;
}

const char *sched_task_id(const SchedTask *t)
{
        return t->id;
}

void sched_task_spec(const SchedTask *t, const void **ret_spec, size_t *ret_len, const uint8_t **ret_signature)
{
        *ret_spec = t->spec;
        *ret_len = t->spec_len;
        *ret_signature = t->signature;
}

static SchedClass *class_get(Sched *s, const SchedTaskNew *n)
{
        const char *arch = n->need_arch ? n->need_arch : "";
        for (SchedClass *c = s->classes; c; c = c->next)
                if (!strcmp(c->arch, arch) && c->cores == n->need_cores && c->memory_bytes == n->need_memory_bytes &&
                    c->gpu == n->need_gpu)
                        return c;
        SchedClass *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        snprintf(c->arch, sizeof(c->arch), "%s", arch);
        c->cores = n->need_cores;
        c->memory_bytes = n->need_memory_bytes;
        c->gpu = n->need_gpu;
        /* Appended: classes are tried in the order they appeared. */
        SchedClass **p = &s->classes;
        while (*p)
                p = &(*p)->next;
        *p = c;
        return c;
}

static bool fits(const SchedClass *c, const PoolWorkerCaps *w)
{
        return (!c->arch[0] || !strcmp(c->arch, w->arch)) && c->cores <= w->cores &&
               c->memory_bytes <= w->memory_bytes &&
               (c->gpu == 0 || (c->gpu > 0 && c->gpu < 31 && ((w->gpu_mask >> c->gpu) & 1)));
}

static bool live(const SchedLease *l, uint64_t now)
{
        return l->state == SCHED_DONE || (l->state == SCHED_ACTIVE && l->expires_usec > now);
}

/* Live leases and answers on T, but KEY's (NULL: all). */
static unsigned count_live(const SchedTask *t, const uint8_t *except, uint64_t now)
{
        unsigned n = 0;
        for (unsigned i = 0; i < t->n_leases; i++)
                if (live(&t->leases[i], now) && (!except || memcmp(t->leases[i].key, except, LINK_KEY_BYTES) != 0))
                        n++;
        return n;
}

static bool wants_lease(const SchedTask *t, uint64_t now)
{
        return !t->dead && (t->deadline_usec == 0 || t->deadline_usec > now) && count_live(t, NULL, now) < t->wanted;
}

static SchedLease *lease_of(const SchedTask *t, const uint8_t *key)
{
        for (unsigned i = 0; i < t->n_leases; i++)
                if (!memcmp(t->leases[i].key, key, LINK_KEY_BYTES))
                        return &t->leases[i];
        return NULL;
}

static void unqueue(SchedTask *t)
{
        SchedClass *c = t->cls;
        if (!t->queued)
                return;
        if (t->prev)
                t->prev->next = t->next;
        else
                c->head = t->next;
        if (t->next)
                t->next->prev = t->prev;
        else
                c->tail = t->prev;
        t->prev = t->next = NULL;
        t->queued = false;
}

static void enqueue(SchedTask *t, bool front)
{
        SchedClass *c = t->cls;
        if (t->queued)
                return;
        if (front) {
                t->prev = NULL;
                t->next = c->head;
                if (c->head)
                        c->head->prev = t;
                else
                        c->tail = t;
                c->head = t;
        } else {
                t->next = NULL;
                t->prev = c->tail;
                if (c->tail)
                        c->tail->next = t;
                else
                        c->head = t;
                c->tail = t;
        }
        t->queued = true;
}

int sched_add(Sched *s, const SchedTaskNew *n, SchedTask **ret)
{
        if (!link_id_ok(n->id) || !n->signature)
                return -EINVAL;
        if (sched_find(s, n->id))
                return -EEXIST;
        SchedTask *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->spec = malloc(n->spec_len ? n->spec_len : 1);
        t->cls = class_get(s, n);
        if (!t->spec || !t->cls) {
                task_free(t);
                return -ENOMEM;
        }
        snprintf(t->id, sizeof(t->id), "%s", n->id);
        t->rowid = n->rowid;
        memcpy(t->spec, n->spec, n->spec_len);
        t->spec_len = n->spec_len;
        memcpy(t->signature, n->signature, LINK_SIG_BYTES);
        t->replicas = n->replicas;
        t->quorum = n->quorum;
        t->wanted = n->wanted;
        t->deadline_usec = n->deadline_usec;
        size_t k = hash_id(t->id) & (s->n_buckets - 1);
        t->hnext = s->buckets[k];
        s->buckets[k] = t;
        if (++s->n_tasks > s->n_buckets)
                grow(s);
        enqueue(t, false);
        if (ret)
                *ret = t;
        return 0;
}

static SchedLease *lease_add(SchedTask *t, const uint8_t *key)
{
        SchedLease *l = lease_of(t, key);
        if (l)
                return l;
        if (t->n_leases == t->cap_leases) {
                unsigned cap = t->cap_leases ? 2 * t->cap_leases : 2;
                SchedLease *nl = realloc(t->leases, cap * sizeof(*nl));
                if (!nl)
                        return NULL;
                t->leases = nl;
                t->cap_leases = cap;
        }
        l = &t->leases[t->n_leases++];
        memset(l, 0, sizeof(*l));
        memcpy(l->key, key, LINK_KEY_BYTES);
        return l;
}

static int fifo_push(Sched *s, SchedTask *t, const uint8_t *key, uint64_t expires)
{
        if (s->fifo_len == s->fifo_cap) {
                size_t cap = s->fifo_cap ? 2 * s->fifo_cap : 1024;
                Expiry *f = malloc(cap * sizeof(*f));
                if (!f)
                        return -ENOMEM;
                for (size_t i = 0; i < s->fifo_len; i++)
                        f[i] = s->fifo[(s->fifo_head + i) % s->fifo_cap];
                free(s->fifo);
                s->fifo = f;
                s->fifo_cap = cap;
                s->fifo_head = 0;
        }
        Expiry *e = &s->fifo[(s->fifo_head + s->fifo_len++) % s->fifo_cap];
        e->t = t;
        memcpy(e->key, key, LINK_KEY_BYTES);
        e->expires_usec = expires;
        t->refs++;
        return 0;
}

/* Leases that lapsed by NOW give their tasks back to the queue, in front:
 * a vanished worker's task is not starved by new ones. */
static void expire(Sched *s, uint64_t now)
{
        while (s->fifo_len > 0) {
                Expiry *e = &s->fifo[s->fifo_head];
                if (e->expires_usec > now)
                        break;
                SchedTask *t = e->t;
                s->fifo_head = (s->fifo_head + 1) % s->fifo_cap;
                s->fifo_len--;
                t->refs--;
                if (t->dead) {
                        if (t->refs == 0)
                                task_free(t);
                        continue;
                }
                if (!t->queued && wants_lease(t, now))
                        enqueue(t, true);
        }
}

int sched_load_lease(Sched *s, SchedTask *t, const uint8_t key[LINK_KEY_BYTES], uint64_t expires, int state,
                     const uint8_t *hash)
{
        SchedLease *l = lease_add(t, key);
        if (!l)
                return -ENOMEM;
        l->state = (uint8_t) state;
        l->expires_usec = expires;
        if (hash) {
                memcpy(l->hash, hash, LINK_HASH_BYTES);
                l->has_hash = true;
        }
        return 0;
}

static int cmp_expiry(const void *a, const void *b)
{
        const Expiry *x = a, *y = b;
        return x->expires_usec < y->expires_usec ? -1 : x->expires_usec > y->expires_usec;
}

void sched_loaded(Sched *s, uint64_t now)
{
        /* The live leases, in expiry order, into the FIFO; each task queued
         * or not by what its leases leave. */
        for (size_t i = 0; i < s->n_buckets; i++)
                for (SchedTask *t = s->buckets[i]; t; t = t->hnext) {
                        for (unsigned j = 0; j < t->n_leases; j++)
                                if (t->leases[j].state == SCHED_ACTIVE && t->leases[j].expires_usec > now)
                                        fifo_push(s, t, t->leases[j].key, t->leases[j].expires_usec);
                        if (!wants_lease(t, now))
                                unqueue(t);
                }
        if (s->fifo_len > 1 && s->fifo_head == 0 && s->fifo_len <= s->fifo_cap)
                qsort(s->fifo, s->fifo_len, sizeof(*s->fifo), cmp_expiry);
}

int sched_pick(Sched *s, const uint8_t key[LINK_KEY_BYTES], const PoolWorkerCaps *caps, unsigned max,
               size_t max_bytes, uint64_t now, uint64_t lease_usec, SchedTask **ret)
{
        unsigned n = 0;
        size_t bytes = 0;

        expire(s, now);
        for (SchedClass *c = s->classes; c && n < max; c = c->next) {
                if (!fits(c, caps))
                        continue;
                unsigned scanned = 0;
                for (SchedTask *t = c->head, *next; t && n < max && scanned < SCAN_MAX; t = next) {
                        next = t->next;
                        if (!wants_lease(t, now)) {
                                /* Past its deadline, or filled meanwhile. */
                                unqueue(t);
                                continue;
                        }
                        SchedLease *l = lease_of(t, key);
                        if (l && live(l, now)) {
                                scanned++;
                                continue;
                        }
                        if (bytes + t->spec_len > max_bytes)
                                return (int) n;
                        l = lease_add(t, key);
                        if (!l || fifo_push(s, t, key, now + lease_usec) < 0)
                                return n > 0 ? (int) n : -ENOMEM;
                        l->state = SCHED_ACTIVE;
                        l->expires_usec = now + lease_usec;
                        l->has_hash = false;
                        if (!wants_lease(t, now))
                                unqueue(t);
                        ret[n++] = t;
                        bytes += t->spec_len;
                }
        }
        return (int) n;
}

int sched_lease_state(const SchedTask *t, const uint8_t key[LINK_KEY_BYTES], uint64_t *ret_expires)
{
        SchedLease *l = lease_of(t, key);
        if (!l)
                return 0;
        if (ret_expires)
                *ret_expires = l->expires_usec;
        return l->state;
}

int sched_renew(Sched *s, SchedTask *t, const uint8_t key[LINK_KEY_BYTES], uint64_t now, uint64_t lease_usec)
{
        SchedLease *l = lease_of(t, key);
        if (!l || l->state != SCHED_ACTIVE)
                return -ENOENT;
        /* Lapsed: still ours only if nobody took its place meanwhile. */
        if (l->expires_usec <= now && count_live(t, key, now) >= t->wanted)
                return -ETIMEDOUT;
        int r = fifo_push(s, t, key, now + lease_usec);
        if (r < 0)
                return r;
        l->expires_usec = now + lease_usec;
        if (!wants_lease(t, now))
                unqueue(t);
        return 0;
}

void sched_release(Sched *s, SchedTask *t, const uint8_t key[LINK_KEY_BYTES], uint64_t now)
{
        SchedLease *l = lease_of(t, key);
        if (!l || l->state != SCHED_ACTIVE)
                return;
        l->state = SCHED_RELEASED;
        if (wants_lease(t, now))
                enqueue(t, true);
}

int sched_result(Sched *s, SchedTask *t, const uint8_t key[LINK_KEY_BYTES], const uint8_t hash[LINK_HASH_BYTES],
                 uint64_t now, uint8_t ret_hash[LINK_HASH_BYTES])
{
        SchedLease *l = lease_add(t, key);
        unsigned total = 0, best_n = 0;
        const uint8_t *best = NULL;
        if (!l)
                return -ENOMEM;
        l->state = SCHED_DONE;
        memcpy(l->hash, hash, LINK_HASH_BYTES);
        l->has_hash = true;
        /* The most common hash among the answers (the first one on a tie,
         * as the results' order in the database gives). */
        for (unsigned i = 0; i < t->n_leases; i++) {
                const SchedLease *a = &t->leases[i];
                unsigned c = 0;
                if (a->state != SCHED_DONE || !a->has_hash)
                        continue;
                total++;
                for (unsigned j = 0; j < t->n_leases; j++)
                        if (t->leases[j].state == SCHED_DONE && t->leases[j].has_hash &&
                            !memcmp(t->leases[j].hash, a->hash, LINK_HASH_BYTES))
                                c++;
                if (c > best_n) {
                        best_n = c;
                        best = a->hash;
                }
        }
        if (best && best_n >= t->quorum) {
                memcpy(ret_hash, best, LINK_HASH_BYTES);
                return SCHED_ACCEPT;
        }
        if (total >= t->wanted) {
                if (t->wanted < 2 * t->replicas) {
                        t->wanted++;
                        if (wants_lease(t, now))
                                enqueue(t, true);
                        return SCHED_ASK_MORE;
                }
                return SCHED_GIVE_UP;
        }
        return SCHED_UNDECIDED;
}

unsigned sched_answers(const SchedTask *t)
{
        unsigned n = 0;
        for (unsigned i = 0; i < t->n_leases; i++)
                n += t->leases[i].state == SCHED_DONE;
        return n;
}

void sched_remove(Sched *s, SchedTask *t)
{
        SchedTask **p = &s->buckets[hash_id(t->id) & (s->n_buckets - 1)];
        while (*p && *p != t)
                p = &(*p)->hnext;
        if (*p) {
                *p = t->hnext;
                s->n_tasks--;
        }
        unqueue(t);
        t->dead = true;
        if (t->refs == 0)
                task_free(t);
}
