/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The pool's scheduling state in memory: see pool/sched.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/sched.h"

/* A worker's lease on a task, or its answer. An active one is also in the
 * scheduler's expiry list: leases are issued and renewed for one lease
 * time, so appending keeps that list in expiry order and the lapsed ones
 * are found at its head without a scan. A task that leaves takes its
 * leases out of it at once, so nothing of it outlives it. */
typedef struct SchedLease {
        struct SchedLease *next;                /* the task's leases */
        struct SchedLease *eprev, *enext;       /* the expiry list */
        bool in_expiry;
        SchedTask *task;
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
        bool queued;
        SchedTask *prev, *next;         /* in cls's queue */
        SchedTask *hnext;               /* in the id hash */
};

struct Sched {
        SchedTask **buckets;
        size_t n_buckets, n_tasks;
        SchedClass *classes;
        SchedLease *ehead, *etail;      /* active leases, soonest expiry first */
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

static void expiry_unlink(Sched *s, SchedLease *l)
{
        if (!l->in_expiry)
                return;
        if (l->eprev)
                l->eprev->enext = l->enext;
        else
                s->ehead = l->enext;
        if (l->enext)
                l->enext->eprev = l->eprev;
        else
                s->etail = l->eprev;
        l->eprev = l->enext = NULL;
        l->in_expiry = false;
}

static void expiry_append(Sched *s, SchedLease *l)
{
        expiry_unlink(s, l);
        l->enext = NULL;
        l->eprev = s->etail;
        if (s->etail)
                s->etail->enext = l;
        else
                s->ehead = l;
        s->etail = l;
        l->in_expiry = true;
}

static void task_free(Sched *s, SchedTask *t)
{
        for (SchedLease *l = t->leases, *n; l; l = n) {
                n = l->next;
                expiry_unlink(s, l);
                free(l);
        }
        free(t->spec);
        free(t);
}

void sched_free(Sched *s)
{
        if (!s)
                return;
        for (size_t i = 0; i < s->n_buckets; i++)
                for (SchedTask *t = s->buckets[i], *n; t; t = n) {
                        n = t->hnext;
                        task_free(s, t);
                }
        for (SchedClass *c = s->classes, *n; c; c = n) {
                n = c->next;
                free(c);
        }
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
        for (const SchedLease *l = t->leases; l; l = l->next)
                if (live(l, now) && (!except || memcmp(l->key, except, LINK_KEY_BYTES) != 0))
                        n++;
        return n;
}

static bool wants_lease(const SchedTask *t, uint64_t now)
{
        return (t->deadline_usec == 0 || t->deadline_usec > now) && count_live(t, NULL, now) < t->wanted;
}

static SchedLease *lease_of(const SchedTask *t, const uint8_t *key)
{
        for (SchedLease *l = t->leases; l; l = l->next)
                if (!memcmp(l->key, key, LINK_KEY_BYTES))
                        return l;
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
                task_free(s, t);
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
        l = calloc(1, sizeof(*l));
        if (!l)
                return NULL;
        memcpy(l->key, key, LINK_KEY_BYTES);
        l->task = t;
        l->next = t->leases;
        t->leases = l;
        return l;
}

/* Leases that lapsed by NOW give their tasks back to the queue, in front:
 * a vanished worker's task is not starved by new ones. */
static void expire(Sched *s, uint64_t now)
{
        while (s->ehead && s->ehead->expires_usec <= now) {
                SchedLease *l = s->ehead;
                expiry_unlink(s, l);
                if (!l->task->queued && wants_lease(l->task, now))
                        enqueue(l->task, true);
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
        const SchedLease *x = *(SchedLease *const *) a, *y = *(SchedLease *const *) b;
        return x->expires_usec < y->expires_usec ? -1 : x->expires_usec > y->expires_usec;
}

void sched_loaded(Sched *s, uint64_t now)
{
        /* The live leases, in expiry order, into the expiry list; each task
         * queued or not by what its leases leave. */
        size_t n = 0, cap = 0;
        SchedLease **all = NULL;
        for (size_t i = 0; i < s->n_buckets; i++)
                for (SchedTask *t = s->buckets[i]; t; t = t->hnext) {
                        for (SchedLease *l = t->leases; l; l = l->next) {
                                if (l->state != SCHED_ACTIVE || l->expires_usec <= now)
                                        continue;
                                if (n == cap) {
                                        cap = cap ? 2 * cap : 1024;
                                        SchedLease **a = realloc(all, cap * sizeof(*a));
                                        if (!a)
                                                break;  /* those left out lapse only on renew: still correct */
                                        all = a;
                                }
                                all[n++] = l;
                        }
                        if (!wants_lease(t, now))
                                unqueue(t);
                }
        if (n > 0)
                qsort(all, n, sizeof(*all), cmp_expiry);
        for (size_t i = 0; i < n; i++)
                expiry_append(s, all[i]);
        free(all);
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
                        if (!l)
                                return n > 0 ? (int) n : -ENOMEM;
                        l->state = SCHED_ACTIVE;
                        l->expires_usec = now + lease_usec;
                        l->has_hash = false;
                        expiry_append(s, l);
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
        l->expires_usec = now + lease_usec;
        expiry_append(s, l);
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
        expiry_unlink(s, l);
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
        expiry_unlink(s, l);
        /* The most common hash among the answers. */
        for (const SchedLease *a = t->leases; a; a = a->next) {
                unsigned c = 0;
                if (a->state != SCHED_DONE || !a->has_hash)
                        continue;
                total++;
                for (const SchedLease *b = t->leases; b; b = b->next)
                        if (b->state == SCHED_DONE && b->has_hash && !memcmp(b->hash, a->hash, LINK_HASH_BYTES))
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
        for (const SchedLease *l = t->leases; l; l = l->next)
                n += l->state == SCHED_DONE;
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
        task_free(s, t);
}
