/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The daemon's end of the link to harvest-pool ([Pool] URL= and Key=): the
 * asynchronous net/link client driven from the manager's sd-event loop
 * (its eventfd is an io source; nothing here blocks the loop, except the
 * goodbye at stop). It says hello, fetches work while the policy allows
 * harvesting, the budget has room and fewer than [Pool] MaxTasks= tasks are
 * held; turns each verified exec task into a job of the same spool, runner,
 * cgroups and budget as local jobs (job->pool_task keeps its origin across
 * restarts); renews leases while they are held; and returns results.
 *
 * A finished task's result is signed and written to STATE/results/<task>.result
 * (64-byte signature, then the signed ResultBody; temp, fsync, rename, fsync
 * dir) before it is sent, retried with exponential backoff while the pool is
 * unreachable, and deleted only once the pool acknowledged it. A task whose
 * signature does not verify against the pinned key is refused, logged and
 * counted; nothing of it reaches the spool.
 */
#pragma once

#include <jansson.h>

struct manager;
struct job;
struct pool_link;

/* Dial URL (harvester-link's local socket, harvesterd --pool-via) instead of
 * [Pool] URL=; NULL dials the pool itself. Set before pool_link_new. */
void pool_link_set_via(const char *url);

/* Start the link for M (M->config.pool_url set): identity under the state
 * dir, client, event sources, results left on disk by an earlier run. A pool
 * that is down is not an error. -EINVAL when [Pool] Key= is missing. */
int pool_link_new(struct manager *m, struct pool_link **ret);
struct pool_link *pool_link_free(struct pool_link *p);

/* Something changed (policy, budget, a job): send the next request if one is
 * due and none is in flight. */
void pool_link_kick(struct pool_link *p);

/* A job changed state: for a finished pool task, write and send its result. */
void pool_link_job_changed(struct pool_link *p, struct job *j);

/* At stop, after the loop ended and running jobs were requeued: wait for
 * the request in flight (bounded), say goodbye, and if the pool took it,
 * drop the held tasks it will hand out again. Finished results stay on disk. */
void pool_link_stop(struct pool_link *p);

/* The "pool" object of the status answer (control.h). */
json_t *pool_link_status_json(struct pool_link *p);
