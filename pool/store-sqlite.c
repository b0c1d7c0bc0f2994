/* SPDX-License-Identifier: GPL-2.0-or-later */
/* pool/store.h on SQLite: WAL, synchronous=FULL, one transaction per call. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <sqlite3.h>

#include "harvester/macro.h"
#include "pool/sched.h"
#include "pool/store.h"

#define STMT_CACHE 64

struct PoolStore {
        sqlite3 *db;
        pthread_mutex_t lock;           /* recursive: pool_store_begin() nests calls */
        unsigned depth;                 /* begin() calls not yet ended */
        uint32_t savepoints;            /* bit d: level d opened a SAVEPOINT, not the BEGIN */
        bool in_txn;                    /* a BEGIN not yet committed */
        bool group;                     /* group commit: see pool_store_set_group() */
        int wal_fd;                     /* group mode: the -wal file, synced outside the lock */
        /* Group mode: pending tasks and their leases in memory (pool/sched.h),
         * so leases and results need no SELECT. Rebuilt from the database
         * when it may differ: after a rollback or a failed commit (stale);
         * when another process (the CLI) committed (data_version), it
         * reads only what that added. */
        Sched *mem;
        bool mem_stale;
        int64_t data_version;
        uint64_t data_version_usec;     /* when last checked */
        /* What memory has read of the two tables another process adds to:
         * a new data_version reads only the rows past these. */
        int64_t mem_task_rowid, mem_cancel_rowid;
        PoolStoreMemStats mem_stats;
        /* Statements compiled once, keyed by their SQL text's address
         * (every statement here is a string literal). Compiling the lease
         * query cost more than running it. */
        struct {
                const char *sql;
                sqlite3_stmt *st;
        } cache[STMT_CACHE];
};

static const char schema[] =
        "CREATE TABLE IF NOT EXISTS tasks("
        " id TEXT PRIMARY KEY,"
        " kind INTEGER NOT NULL,"
        " spec BLOB NOT NULL,"
        " signature BLOB NOT NULL,"
        " replicas INTEGER NOT NULL,"
        " quorum INTEGER NOT NULL,"
        " wanted INTEGER NOT NULL,"                     /* replicas, raised while no quorum */
        " need_arch TEXT NOT NULL DEFAULT '',"
        " need_cores INTEGER NOT NULL DEFAULT 0,"
        " need_memory INTEGER NOT NULL DEFAULT 0,"
        " need_gpu INTEGER NOT NULL DEFAULT 0,"
        " deadline_usec INTEGER NOT NULL DEFAULT 0,"
        /* 0: wants another lease now; else no lease before this time (the
         * first live lease's expiry), unless its leases change. Keeps the
         * lease query from walking every leased task on each fetch. */
        " full_until_usec INTEGER NOT NULL DEFAULT 0,"
        " state TEXT NOT NULL DEFAULT 'pending',"       /* pending done inconclusive cancelled */
        " submitted_usec INTEGER NOT NULL,"
        " finished_usec INTEGER,"
        " accepted_hash BLOB);"
        "CREATE INDEX IF NOT EXISTS tasks_free ON tasks(full_until_usec) WHERE state = 'pending';"
        "CREATE TABLE IF NOT EXISTS workers("
        " key BLOB PRIMARY KEY,"
        " arch TEXT NOT NULL DEFAULT '',"
        " cores INTEGER NOT NULL DEFAULT 0,"
        " memory INTEGER NOT NULL DEFAULT 0,"
        " gpu_mask INTEGER NOT NULL DEFAULT 0,"
        " devices INTEGER NOT NULL DEFAULT 0,"
        " cpu_budget_ppm INTEGER NOT NULL DEFAULT 0,"
        " agent TEXT NOT NULL DEFAULT '',"
        " first_seen_usec INTEGER NOT NULL,"
        " last_seen_usec INTEGER NOT NULL,"
        " last_seq INTEGER NOT NULL DEFAULT 0,"
        /* Unused since the listing sums results (kept: old databases have them). */
        " results INTEGER NOT NULL DEFAULT 0,"
        " agreed INTEGER NOT NULL DEFAULT 0,"
        " disagreed INTEGER NOT NULL DEFAULT 0,"
        " cpu_usec INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE IF NOT EXISTS leases("
        " task_id TEXT NOT NULL,"
        " worker BLOB NOT NULL,"
        " issued_usec INTEGER NOT NULL,"
        " expires_usec INTEGER NOT NULL,"
        " state TEXT NOT NULL,"                         /* active done released */
        /* Without a rowid: one b-tree, keyed as it is looked up, so a
         * lease is one insert instead of two (table and key index). */
        " PRIMARY KEY(task_id, worker)) WITHOUT ROWID;"
        "CREATE TABLE IF NOT EXISTS results("
        " task_id TEXT NOT NULL,"
        " worker BLOB NOT NULL,"
        " received_usec INTEGER NOT NULL,"
        " status INTEGER NOT NULL,"
        " exit_code INTEGER NOT NULL,"
        " hash BLOB NOT NULL,"
        " cpu_usec INTEGER NOT NULL,"
        " body BLOB NOT NULL,"
        " signature BLOB NOT NULL,"
        " verdict TEXT NOT NULL DEFAULT 'pending',"     /* pending agree disagree */
        " accepted INTEGER NOT NULL DEFAULT 0,"         /* one of the quorum that decided the task */
        " PRIMARY KEY(task_id, worker));"
        "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        /* Every cancel, in order: a running server learns of the CLI's
         * cancels from the rows past the last one it read. */
        "CREATE TABLE IF NOT EXISTS cancels(task_id TEXT NOT NULL);";

/* A lease counts while it is live or answered; a lapsed one counts for
 * nothing, which is how a vanished worker's task goes out again. */
/* The server does not mark a lease done when its result comes: the result
 * row says so (one write a result, not two), so an answered lease is one
 * with a result, whatever its state column says. */
#define ANSWERED "EXISTS (SELECT 1 FROM results r WHERE r.task_id = l.task_id AND r.worker = l.worker)"
#define LIVE "(l.state = 'done' OR (l.state = 'active' AND (l.expires_usec > :now OR " ANSWERED ")))"

/* Recompute tasks.full_until_usec from the task's leases. */
#define REFRESH_FULL_UNTIL \
        "UPDATE tasks SET full_until_usec = CASE" \
        " WHEN (SELECT count(*) FROM leases l WHERE l.task_id = tasks.id AND " LIVE ") < tasks.wanted THEN 0" \
        " ELSE coalesce((SELECT min(l.expires_usec) FROM leases l WHERE l.task_id = tasks.id" \
        " AND l.state = 'active' AND l.expires_usec > :now AND NOT " ANSWERED "), 9223372036854775807) END"

/* The same for every task at once, with the clock read by SQLite. */
#define LIVE_NOW "(l.state = 'done' OR (l.state = 'active' AND (l.expires_usec > CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) OR " ANSWERED ")))"
#define REFRESH_FULL_UNTIL_NOW \
        "UPDATE tasks SET full_until_usec = CASE" \
        " WHEN (SELECT count(*) FROM leases l WHERE l.task_id = tasks.id AND " LIVE_NOW ") < tasks.wanted THEN 0" \
        " ELSE coalesce((SELECT min(l.expires_usec) FROM leases l WHERE l.task_id = tasks.id" \
        " AND l.state = 'active' AND l.expires_usec > CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)" \
        " AND NOT " ANSWERED ")," \
        " 9223372036854775807) END"

/* What a lease query asks of a task besides being free: matching, and not
 * held or answered by this worker already, and room for one more. */
#define LEASE_FILTER \
        " AND (t.deadline_usec = 0 OR t.deadline_usec > :now)" \
        " AND (t.need_arch = '' OR t.need_arch = :arch)" \
        " AND t.need_cores <= :cores AND t.need_memory <= :mem" \
        " AND (t.need_gpu = 0 OR ((:gpu >> t.need_gpu) & 1) = 1)" \
        " AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.task_id = t.id AND l.worker = :key AND " LIVE ")" \
        " AND (SELECT count(*) FROM leases l WHERE l.task_id = t.id AND " LIVE ") < t.wanted"

static int sql_err(sqlite3 *db, int rc)
{
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_DONE:
        case SQLITE_ROW:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        default:
                return -EIO;
        }
}

static int exec(PoolStore *s, const char *sql)
{
        return sql_err(s->db, sqlite3_exec(s->db, sql, NULL, NULL, NULL));
}

/* Statements belong to the cache: done with one is a reset, not a finalize. */
static void finalizep(sqlite3_stmt **st)
{
        if (*st) {
                sqlite3_reset(*st);
                sqlite3_clear_bindings(*st);
        }
}
#define _cleanup_stmt_ _cleanup_(finalizep)

static int prep(PoolStore *s, const char *sql, sqlite3_stmt **ret)
{
        size_t i;
        for (i = 0; i < STMT_CACHE && s->cache[i].sql; i++)
                if (s->cache[i].sql == sql) {
                        sqlite3_reset(s->cache[i].st);
                        sqlite3_clear_bindings(s->cache[i].st);
                        *ret = s->cache[i].st;
                        return 0;
                }
        if (i == STMT_CACHE)
                return -ENOSPC;         /* more statements than the cache: raise STMT_CACHE */
        int r = sql_err(s->db, sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL));
        if (r < 0)
                return r;
        s->cache[i].sql = sql;
        s->cache[i].st = *ret;
        return 0;
}

static void bind_now(sqlite3_stmt *st, uint64_t now)
{
        int i = sqlite3_bind_parameter_index(st, ":now");
        if (i > 0)
                sqlite3_bind_int64(st, i, (sqlite3_int64) now);
}

static int step_done(sqlite3_stmt *st)
{
        int rc = sqlite3_step(st);
        return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sql_err(sqlite3_db_handle(st), rc);
}

/* Savepoints are run for every call: compiled once, like the rest. */
static int run(PoolStore *s, const char *sql)
{
        sqlite3_stmt *st = NULL;
        int r = prep(s, sql, &st);
        if (r < 0)
                return r;
        r = step_done(st);
        sqlite3_reset(st);
        return r;
}

static const char SQL_SAVEPOINT[] = "SAVEPOINT sp", SQL_RELEASE[] = "RELEASE sp", SQL_ROLLBACK_TO[] = "ROLLBACK TO sp",
                  SQL_BEGIN[] = "BEGIN IMMEDIATE", SQL_COMMIT[] = "COMMIT";

static int begin(PoolStore *s)
{
        int r = 0;
        pthread_mutex_lock(&s->lock);
        if (s->depth >= 31) {
                pthread_mutex_unlock(&s->lock);
                return -EDEADLK;
        }
        /* In group mode every call gets a savepoint, even the outermost: a
         * failed call must not roll back others' uncommitted work. */
        bool sp = s->in_txn || s->group;
        if (!s->in_txn) {
                r = run(s, SQL_BEGIN);
                if (r >= 0)
                        s->in_txn = true;
        }
        if (r >= 0 && sp)
                r = run(s, SQL_SAVEPOINT);
        if (r < 0) {
                if (s->in_txn && s->depth == 0 && !s->group) {
                        exec(s, "ROLLBACK");
                        s->in_txn = false;
                }
                pthread_mutex_unlock(&s->lock);
                return r;
        }
        if (sp)
                s->savepoints |= 1U << s->depth;
        else
                s->savepoints &= ~(1U << s->depth);
        s->depth++;
        return 0;
}

static int commit(PoolStore *s)
{
        int r = run(s, SQL_COMMIT);
        if (r < 0)
                exec(s, "ROLLBACK");
        s->in_txn = false;
        return r;
}

/* Commit (or release the savepoint) on success, roll back on failure;
 * returns R or the commit's error. In group mode the transaction stays
 * open for pool_store_commit(). */
static int end(PoolStore *s, int r)
{
        s->depth--;
        if (s->savepoints & (1U << s->depth)) {
                int k = r >= 0 ? run(s, SQL_RELEASE) : 0;
                if (r < 0 || k < 0) {
                        run(s, SQL_ROLLBACK_TO);
                        run(s, SQL_RELEASE);
                        r = r < 0 ? r : k;
                        /* Memory may hold what was just undone. */
                        s->mem_stale = true;
                }
        } else if (r < 0) {
                exec(s, "ROLLBACK");
                s->in_txn = false;
                s->mem_stale = true;
        } else if (!s->group)
                r = commit(s) < 0 ? -EIO : r;
        pthread_mutex_unlock(&s->lock);
        return r;
}

int pool_store_commit(PoolStore *s)
{
        int r = 0;
        bool did = false;
        pthread_mutex_lock(&s->lock);
        if (s->in_txn && s->depth == 0) {
                r = commit(s);
                did = r >= 0;
                /* A failed commit lost every change since the last one:
                 * memory must not remember them. */
                if (r < 0)
                        s->mem_stale = true;
        }
        if (did && s->wal_fd < 0) {
                char p[4096];
                snprintf(p, sizeof(p), "%s-wal", sqlite3_db_filename(s->db, "main"));
                s->wal_fd = open(p, O_RDONLY | O_CLOEXEC);
        }
        int fd = s->wal_fd;
        pthread_mutex_unlock(&s->lock);
        /* (A failed fdatasync below leaves memory as it is: the changes
         * are in the log, and the replies go out as errors; the workers
         * resend, and find them stored.) */
        /* In group mode the commit wrote the log without syncing it
         * (synchronous=NORMAL); sync it here, outside the lock, so the
         * next batch is being served while this one reaches the disk. The
         * file is the same inode for as long as the database is open.
         * Without that file there is nothing durable: fail, do not lie. */
        if (did && s->group) {
                if (fd < 0)
                        r = -EIO;
                else if (fdatasync(fd) < 0)
                        r = negative_errno();
        }
        return r;
}

int pool_store_set_group(PoolStore *s, bool on)
{
        int r = 0;
        pthread_mutex_lock(&s->lock);
        if (on != s->group && s->depth == 0) {
                if (s->in_txn)
                        r = commit(s);
                /* FULL syncs inside every COMMIT, under the lock; NORMAL
                 * leaves the sync to pool_store_commit(). */
                if (r >= 0)
                        r = exec(s, on ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL");
                if (r >= 0)
                        s->group = on;
                if (r >= 0 && !on && s->mem) {
                        /* Back to the SQL lease query: it needs
                         * full_until_usec, which memory did not keep. */
                        sched_free(s->mem);
                        s->mem = NULL;
                        exec(s, "BEGIN IMMEDIATE;"
                                REFRESH_FULL_UNTIL_NOW " WHERE state = 'pending'; COMMIT");
                }
        } else if (on != s->group)
                r = -EBUSY;
        pthread_mutex_unlock(&s->lock);
        if (r >= 0 && !on && s->wal_fd >= 0)
                fdatasync(s->wal_fd);
        return r;
}

int pool_store_begin(PoolStore *s)
{
        return begin(s);
}

int pool_store_end(PoolStore *s, int r)
{
        return end(s, r);
}

int pool_store_open(const char *path, bool create, PoolStore **ret)
{
        int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
        PoolStore *s = calloc(1, sizeof(*s));
        int r;
        pthread_mutexattr_t a;
        if (!s)
                return -ENOMEM;
        s->wal_fd = -1;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
        pthread_mutex_init(&s->lock, &a);
        pthread_mutexattr_destroy(&a);
        r = sql_err(NULL, sqlite3_open_v2(path, &s->db, flags, NULL));
        if (r < 0)
                goto fail;
        sqlite3_busy_timeout(s->db, 10000);
        /* WAL: the CLI reads while the server writes. FULL: an accepted
         * result survives power loss too, not only a killed process. */
        if ((r = exec(s, "PRAGMA journal_mode=WAL")) < 0 || (r = exec(s, "PRAGMA synchronous=FULL")) < 0 ||
            (r = exec(s, "PRAGMA foreign_keys=ON")) < 0 || (r = exec(s, schema)) < 0 ||
            /* A group commit covers many requests' pages: with the default
             * 2 MB cache SQLite spilled dirty pages into the log in the
             * middle of the transaction (a pwrite inside statements, under
             * the lock). Savepoint journals stay in memory. */
            (r = exec(s, "PRAGMA cache_size=-65536")) < 0 || (r = exec(s, "PRAGMA temp_store=MEMORY")) < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        pool_store_close(s);
        return r;
}

void pool_store_close(PoolStore *s)
{
        if (!s)
                return;
        pool_store_set_group(s, false);
        sched_free(s->mem);
        if (s->wal_fd >= 0)
                close(s->wal_fd);
        for (size_t i = 0; i < STMT_CACHE && s->cache[i].sql; i++)
                sqlite3_finalize(s->cache[i].st);
        sqlite3_close_v2(s->db);
        pthread_mutex_destroy(&s->lock);
        free(s);
}

/* --- the scheduling state in memory (group mode) -------------------------- */

static int lease_state_code(const char *st)
{
        return !strcmp(st, "active") ? SCHED_ACTIVE : !strcmp(st, "done") ? SCHED_DONE : SCHED_RELEASED;
}

#define TASK_COLUMNS \
        "rowid, id, spec, signature, replicas, quorum, wanted, need_arch, need_cores, need_memory, need_gpu," \
        " deadline_usec, state = 'pending'"

/* A row of TASK_COLUMNS into memory, if it is pending. */
static int mem_add_row(Sched *m, sqlite3_stmt *t)
{
        if (sqlite3_column_bytes(t, 3) != LINK_SIG_BYTES || !sqlite3_column_int(t, 12))
                return 0;
        SchedTaskNew n = {
                .rowid = sqlite3_column_int64(t, 0),
                .id = (const char *) sqlite3_column_text(t, 1),
                .spec = sqlite3_column_blob(t, 2),
                .spec_len = (size_t) sqlite3_column_bytes(t, 2),
                .signature = sqlite3_column_blob(t, 3),
                .replicas = (unsigned) sqlite3_column_int(t, 4),
                .quorum = (unsigned) sqlite3_column_int(t, 5),
                .wanted = (unsigned) sqlite3_column_int(t, 6),
                .need_arch = (const char *) sqlite3_column_text(t, 7),
                .need_cores = (unsigned) sqlite3_column_int(t, 8),
                .need_memory_bytes = (uint64_t) sqlite3_column_int64(t, 9),
                .need_gpu = sqlite3_column_int(t, 10),
                .deadline_usec = (uint64_t) sqlite3_column_int64(t, 11),
        };
        return sched_add(m, &n, NULL);
}

static int max_rowid(PoolStore *s, const char *sql, int64_t *ret)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = prep(s, sql, &st);
        if (r < 0)
                return r;
        if (sqlite3_step(st) != SQLITE_ROW)
                return sql_err(s->db, sqlite3_errcode(s->db));
        *ret = sqlite3_column_int64(st, 0);
        return 0;
}

static const char SQL_TASKS_MAX[] = "SELECT coalesce(max(rowid), 0) FROM tasks",
                  SQL_CANCELS_MAX[] = "SELECT coalesce(max(rowid), 0) FROM cancels";

/* Build the memory state from the database: every pending task, its
 * leases and the hashes of the answers it has. */
static int mem_load(PoolStore *s, uint64_t now)
{
        _cleanup_stmt_ sqlite3_stmt *t = NULL, *l = NULL, *dv = NULL;
        int64_t task_rowid = 0, cancel_rowid = 0;
        Sched *m = NULL;
        int r = sched_new(&m), rc = SQLITE_DONE;
        if (r < 0)
                return r;
        /* (Read in the caller's transaction: the maxima and the rows are
         * one snapshot.) */
        r = max_rowid(s, SQL_TASKS_MAX, &task_rowid);
        if (r >= 0)
                r = max_rowid(s, SQL_CANCELS_MAX, &cancel_rowid);
        if (r >= 0)
                r = prep(s, "SELECT " TASK_COLUMNS " FROM tasks WHERE state = 'pending' ORDER BY rowid", &t);
        while (r >= 0 && (rc = sqlite3_step(t)) == SQLITE_ROW)
                r = mem_add_row(m, t);
        if (r >= 0 && rc != SQLITE_DONE)
                r = sql_err(s->db, rc);         /* a partial memory would hide tasks */
        if (r >= 0)
                r = prep(s, "SELECT l.task_id, l.worker, l.expires_usec, CASE WHEN r.hash IS NULL THEN l.state"
                            " ELSE 'done' END, r.hash FROM leases l"
                            " JOIN tasks t ON t.id = l.task_id LEFT JOIN results r ON r.task_id = l.task_id"
                            " AND r.worker = l.worker WHERE t.state = 'pending'", &l);
        while (r >= 0 && (rc = sqlite3_step(l)) == SQLITE_ROW) {
                SchedTask *task = sched_find(m, (const char *) sqlite3_column_text(l, 0));
                if (!task || sqlite3_column_bytes(l, 1) != LINK_KEY_BYTES)
                        continue;
                const void *hash = sqlite3_column_bytes(l, 4) == LINK_HASH_BYTES ? sqlite3_column_blob(l, 4) : NULL;
                r = sched_load_lease(m, task, sqlite3_column_blob(l, 1), (uint64_t) sqlite3_column_int64(l, 2),
                                     lease_state_code((const char *) sqlite3_column_text(l, 3)), hash);
        }
        if (r >= 0)
                r = prep(s, "PRAGMA data_version", &dv);
        if (r >= 0 && sqlite3_step(dv) == SQLITE_ROW)
                s->data_version = sqlite3_column_int64(dv, 0);
        if (r < 0) {
                sched_free(m);
                return r;
        }
        sched_loaded(m, now);
        sched_free(s->mem);
        s->mem = m;
        s->mem_stale = false;
        s->data_version_usec = now;
        s->mem_task_rowid = task_rowid;
        s->mem_cancel_rowid = cancel_rowid;
        s->mem_stats.full_loads++;
        return 0;
}

/* Another process committed: the CLI's submit adds tasks rows, its cancel
 * a cancels row (the only writes it makes to a served database), so read
 * just the rows past the last ones memory has, whatever the number of
 * pending tasks. Our own inserts are among them too (-EEXIST: skipped). */
static int mem_catch_up(PoolStore *s, int64_t data_version)
{
        _cleanup_stmt_ sqlite3_stmt *t = NULL, *c = NULL;
        int64_t task_rowid = 0, cancel_rowid = 0;
        uint64_t rows = 0;
        int r = max_rowid(s, SQL_TASKS_MAX, &task_rowid), rc = SQLITE_DONE;
        if (r >= 0)
                r = max_rowid(s, SQL_CANCELS_MAX, &cancel_rowid);
        /* Fewer rows than memory read: not appends; rebuild. */
        if (r >= 0 && (task_rowid < s->mem_task_rowid || cancel_rowid < s->mem_cancel_rowid))
                r = -ESTALE;
        if (r >= 0)
                r = prep(s, "SELECT " TASK_COLUMNS " FROM tasks WHERE rowid > ? AND rowid <= ? ORDER BY rowid", &t);
        if (r >= 0) {
                sqlite3_bind_int64(t, 1, s->mem_task_rowid);
                sqlite3_bind_int64(t, 2, task_rowid);
        }
        while (r >= 0 && (rc = sqlite3_step(t)) == SQLITE_ROW) {
                r = mem_add_row(s->mem, t);
                if (r == -EEXIST)
                        r = 0;
                rows++;
        }
        /* A row missed here would be missed for good: a failed step is a
         * failed catch-up (and a rebuild). */
        if (r >= 0 && rc != SQLITE_DONE)
                r = sql_err(s->db, rc);
        if (r >= 0)
                r = prep(s, "SELECT task_id FROM cancels WHERE rowid > ? AND rowid <= ?", &c);
        if (r >= 0) {
                sqlite3_bind_int64(c, 1, s->mem_cancel_rowid);
                sqlite3_bind_int64(c, 2, cancel_rowid);
        }
        while (r >= 0 && (rc = sqlite3_step(c)) == SQLITE_ROW) {
                SchedTask *task = sched_find(s->mem, (const char *) sqlite3_column_text(c, 0));
                if (task)
                        sched_remove(s->mem, task);
                rows++;
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = sql_err(s->db, rc);
        if (r < 0)
                return r;
        s->mem_task_rowid = task_rowid;
        s->mem_cancel_rowid = cancel_rowid;
        s->data_version = data_version;
        s->mem_stats.catch_ups++;
        s->mem_stats.rows_caught_up += rows;
        return 0;
}

void pool_store_mem_stats(PoolStore *s, PoolStoreMemStats *ret)
{
        pthread_mutex_lock(&s->lock);
        *ret = s->mem_stats;
        ret->tasks = s->mem ? sched_tasks(s->mem) : 0;
        pthread_mutex_unlock(&s->lock);
}

/* The memory state, current, or NULL outside group mode (the SQL paths
 * serve then). Another process's commit (the CLI's submit or cancel)
 * shows as a new data_version, checked at most every 100 ms. */
static Sched *mem_get(PoolStore *s, uint64_t now)
{
        if (!s->group)
                return NULL;
        if (s->mem && !s->mem_stale && now < s->data_version_usec + 100000 && now >= s->data_version_usec)
                return s->mem;
        if (s->mem && !s->mem_stale) {
                _cleanup_stmt_ sqlite3_stmt *dv = NULL;
                s->data_version_usec = now;
                if (prep(s, "PRAGMA data_version", &dv) >= 0 && sqlite3_step(dv) == SQLITE_ROW) {
                        int64_t v = sqlite3_column_int64(dv, 0);
                        if (v == s->data_version || mem_catch_up(s, v) >= 0)
                                return s->mem;
                }
        }
        /* Without a current memory state the SQL paths still serve. */
        return mem_load(s, now) >= 0 ? s->mem : NULL;
}

int pool_store_add_task(PoolStore *s, const PoolTaskNew *t, uint64_t now)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (!link_id_ok(t->id) || t->replicas < 1 || t->quorum < 1 || t->quorum > t->replicas ||
            t->replicas > 64 || !t->spec || !t->signature)
                return -EINVAL;
        int r = begin(s);
        if (r < 0)
                return r;
        Sched *m = mem_get(s, now);
        r = prep(s, "INSERT INTO tasks(id, kind, spec, signature, replicas, quorum, wanted, need_arch,"
                    " need_cores, need_memory, need_gpu, deadline_usec, submitted_usec)"
                    " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)", &st);
        if (r >= 0) {
                sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
                sqlite3_bind_int(st, 2, t->kind);
                sqlite3_bind_blob(st, 3, t->spec, (int) t->spec_len, SQLITE_STATIC);
                sqlite3_bind_blob(st, 4, t->signature, LINK_SIG_BYTES, SQLITE_STATIC);
                sqlite3_bind_int(st, 5, (int) t->replicas);
                sqlite3_bind_int(st, 6, (int) t->quorum);
                sqlite3_bind_int(st, 7, (int) t->replicas);
                sqlite3_bind_text(st, 8, t->need_arch ? t->need_arch : "", -1, SQLITE_STATIC);
                sqlite3_bind_int(st, 9, (int) t->need_cores);
                sqlite3_bind_int64(st, 10, (sqlite3_int64) t->need_memory_bytes);
                sqlite3_bind_int(st, 11, t->need_gpu);
                sqlite3_bind_int64(st, 12, (sqlite3_int64) t->deadline_usec);
                sqlite3_bind_int64(st, 13, (sqlite3_int64) now);
                r = step_done(st);
        }
        /* (Loaded before the insert, or the load would have it already.) */
        if (m && r >= 0) {
                SchedTaskNew n = {
                        .rowid = sqlite3_last_insert_rowid(s->db), .id = t->id, .spec = t->spec,
                        .spec_len = t->spec_len, .signature = t->signature, .replicas = t->replicas,
                        .quorum = t->quorum, .wanted = t->replicas, .need_arch = t->need_arch,
                        .need_cores = t->need_cores, .need_memory_bytes = t->need_memory_bytes,
                        .need_gpu = t->need_gpu, .deadline_usec = t->deadline_usec,
                };
                int k = sched_add(m, &n, NULL);
                if (k < 0 && k != -EEXIST)
                        s->mem_stale = true;
        }
        return end(s, r);
}

/* One UPDATE or DELETE; returns the number of rows changed. */
static int change(PoolStore *s, sqlite3_stmt *st)
{
        int r = step_done(st);
        return r < 0 ? r : sqlite3_changes(s->db);
}

static int simple(PoolStore *s, const char *sql, const char *text, const uint8_t *key, uint64_t now);

static int task_state(PoolStore *s, const char *id, char *buf, size_t size)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = prep(s, "SELECT state FROM tasks WHERE id = ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return -ENOENT;
        snprintf(buf, size, "%s", (const char *) sqlite3_column_text(st, 0));
        return 0;
}

int pool_store_cancel(PoolStore *s, const char *id, uint64_t now)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        char state[32];
        int r = begin(s);
        if (r < 0)
                return r;
        r = task_state(s, id, state, sizeof(state));
        if (r >= 0 && strcmp(state, "pending"))
                r = -EALREADY;
        if (r >= 0)
                r = prep(s, "UPDATE tasks SET state = 'cancelled', finished_usec = ? WHERE id = ?", &st);
        if (r >= 0) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64) now);
                sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
                r = change(s, st);
        }
        if (r >= 0)
                r = simple(s, "INSERT INTO cancels(task_id) VALUES(:id)", id, NULL, now);
        Sched *m = r >= 0 ? mem_get(s, now) : NULL;
        SchedTask *task = m ? sched_find(m, id) : NULL;
        if (task)
                sched_remove(m, task);
        return end(s, r < 0 ? r : 0);
}

static int seq_update(PoolStore *s, const uint8_t *key, uint64_t seq, uint64_t now)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = prep(s, "UPDATE workers SET last_seq = ?, last_seen_usec = ? WHERE key = ? AND last_seq < ?", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, (sqlite3_int64) seq);
        sqlite3_bind_int64(st, 2, (sqlite3_int64) now);
        sqlite3_bind_blob(st, 3, key, LINK_KEY_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (sqlite3_int64) seq);
        r = change(s, st);
        return r < 0 ? r : r == 0 ? -ESTALE : 0;
}

static bool worker_known(PoolStore *s, const uint8_t *key)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (prep(s, "SELECT 1 FROM workers WHERE key = ?", &st) < 0)
                return false;
        sqlite3_bind_blob(st, 1, key, LINK_KEY_BYTES, SQLITE_STATIC);
        return sqlite3_step(st) == SQLITE_ROW;
}

void pool_worker_caps(const Hlink__Capabilities *c, PoolWorkerCaps *ret)
{
        PoolWorkerCaps w = {};
        snprintf(w.arch, sizeof(w.arch), "%s", c->arch ? c->arch : "");
        w.cores = c->cores;
        w.memory_bytes = c->memory_bytes;
        for (size_t i = 0; i < c->n_devices; i++)
                if (c->devices[i]->api > 0 && c->devices[i]->api < 31)
                        w.gpu_mask |= 1U << c->devices[i]->api;
        *ret = w;
}

int pool_store_hello(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], const Hlink__Hello *h, uint64_t seq,
                     uint64_t now)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        const Hlink__Capabilities *c = h->caps;
        PoolWorkerCaps caps;
        int r = begin(s);
        if (r < 0)
                return r;
        pool_worker_caps(c, &caps);
        unsigned gpu_mask = caps.gpu_mask;
        if (worker_known(s, key))
                r = seq_update(s, key, seq, now);
        else {
                r = prep(s, "INSERT INTO workers(key, first_seen_usec, last_seen_usec, last_seq) VALUES(?,?,?,?)", &st);
                if (r >= 0) {
                        sqlite3_bind_blob(st, 1, key, LINK_KEY_BYTES, SQLITE_STATIC);
                        sqlite3_bind_int64(st, 2, (sqlite3_int64) now);
                        sqlite3_bind_int64(st, 3, (sqlite3_int64) now);
                        sqlite3_bind_int64(st, 4, (sqlite3_int64) seq);
                        r = step_done(st);
                }
                finalizep(&st);
                st = NULL;
        }
        if (r >= 0)
                r = prep(s, "UPDATE workers SET arch = ?, cores = ?, memory = ?, gpu_mask = ?, devices = ?,"
                            " cpu_budget_ppm = ?, agent = ? WHERE key = ?", &st);
        if (r >= 0) {
                sqlite3_bind_text(st, 1, c->arch, -1, SQLITE_STATIC);
                sqlite3_bind_int(st, 2, (int) c->cores);
                sqlite3_bind_int64(st, 3, (sqlite3_int64) c->memory_bytes);
                sqlite3_bind_int(st, 4, (int) gpu_mask);
                sqlite3_bind_int(st, 5, (int) c->n_devices);
                sqlite3_bind_int(st, 6, (int) c->cpu_budget_ppm);
                sqlite3_bind_text(st, 7, h->agent, -1, SQLITE_STATIC);
                sqlite3_bind_blob(st, 8, key, LINK_KEY_BYTES, SQLITE_STATIC);
                r = step_done(st);
        }
        return end(s, r);
}

int pool_store_check_seq(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], uint64_t seq, uint64_t now)
{
        int r = begin(s);
        if (r < 0)
                return r;
        r = worker_known(s, key) ? seq_update(s, key, seq, now) : -ENOENT;
        return end(s, r);
}

static int refresh_task(PoolStore *s, const char *task_id, uint64_t now)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = prep(s, REFRESH_FULL_UNTIL " WHERE id = :id", &st);
        if (r < 0)
                return r;
        bind_now(st, now);
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":id"), task_id, -1, SQLITE_STATIC);
        return step_done(st);
}

static int lease_mem(PoolStore *s, Sched *m, const uint8_t *key, const PoolWorkerCaps *caps, unsigned max,
                     size_t max_bytes, uint64_t now, uint64_t lease_usec, PoolLease *out);

void pool_leases_free(PoolLease *l, size_t n)
{
        if (!l)
                return;
        for (size_t i = 0; i < n; i++)
                free(l[i].spec);
        free(l);
}

int pool_store_lease(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], unsigned max, size_t max_bytes,
                     uint64_t now, uint64_t lease_usec, PoolLease **ret)
{
        _cleanup_stmt_ sqlite3_stmt *w = NULL;
        PoolWorkerCaps caps = {};
        int r = begin(s);
        if (r < 0)
                return r;
        r = prep(s, "SELECT arch, cores, memory, gpu_mask FROM workers WHERE key = ?", &w);
        if (r >= 0) {
                sqlite3_bind_blob(w, 1, key, LINK_KEY_BYTES, SQLITE_STATIC);
                if (sqlite3_step(w) != SQLITE_ROW)
                        r = -ENOENT;
                else {
                        snprintf(caps.arch, sizeof(caps.arch), "%s", (const char *) sqlite3_column_text(w, 0));
                        caps.cores = (unsigned) sqlite3_column_int(w, 1);
                        caps.memory_bytes = (uint64_t) sqlite3_column_int64(w, 2);
                        caps.gpu_mask = (unsigned) sqlite3_column_int(w, 3);
                }
        }
        if (r >= 0)
                r = pool_store_lease_caps(s, key, &caps, max, max_bytes, now, lease_usec, ret);
        int k = end(s, r);
        if (k < 0 && r > 0)
                pool_leases_free(*ret, (size_t) r);
        return k;
}

static const char SQL_LEASE_UPSERT[] =
        "INSERT INTO leases(task_id, worker, issued_usec, expires_usec, state) VALUES(?,?,?,?,'active')"
        " ON CONFLICT(task_id, worker) DO UPDATE SET issued_usec = excluded.issued_usec,"
        " expires_usec = excluded.expires_usec, state = 'active'";

/* Leasing from memory: the choice needs no query; each lease is one
 * write. Returns how many leases are in OUT (specs copied). */
static int lease_mem(PoolStore *s, Sched *m, const uint8_t *key, const PoolWorkerCaps *caps, unsigned max,
                     size_t max_bytes, uint64_t now, uint64_t lease_usec, PoolLease *out)
{
        _cleanup_stmt_ sqlite3_stmt *ins = NULL;
        _cleanup_free_ SchedTask **picked = calloc(max, sizeof(*picked));
        if (!picked)
                return -ENOMEM;
        int n = sched_pick(m, key, caps, max, max_bytes, now, lease_usec, picked);
        int r = n < 0 ? n : prep(s, SQL_LEASE_UPSERT, &ins);
        for (int i = 0; r >= 0 && i < n; i++) {
                const void *spec;
                const uint8_t *sig;
                size_t len;
                PoolLease *l = &out[i];
                sched_task_spec(picked[i], &spec, &len, &sig);
                snprintf(l->id, sizeof(l->id), "%s", sched_task_id(picked[i]));
                l->spec = malloc(len ? len : 1);
                if (!l->spec) {
                        r = -ENOMEM;
                        break;
                }
                memcpy(l->spec, spec, len);
                l->spec_len = len;
                memcpy(l->signature, sig, LINK_SIG_BYTES);
                l->expires_usec = now + lease_usec;
                sqlite3_reset(ins);
                sqlite3_bind_text(ins, 1, l->id, -1, SQLITE_STATIC);
                sqlite3_bind_blob(ins, 2, key, LINK_KEY_BYTES, SQLITE_STATIC);
                sqlite3_bind_int64(ins, 3, (sqlite3_int64) now);
                sqlite3_bind_int64(ins, 4, (sqlite3_int64) l->expires_usec);
                r = step_done(ins);
        }
        if (r < 0) {
                /* The leases memory recorded are not in the log. */
                s->mem_stale = true;
                for (int i = 0; i < n; i++) {
                        free(out[i].spec);
                        out[i].spec = NULL;
                }
                return r;
        }
        return n;
}

int pool_store_lease_caps(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], const PoolWorkerCaps *caps,
                          unsigned max, size_t max_bytes, uint64_t now, uint64_t lease_usec, PoolLease **ret)
{
        _cleanup_stmt_ sqlite3_stmt *ins = NULL;
        PoolLease *out = NULL;
        size_t n = 0, bytes = 0;
        int r;

        if (max == 0) {
                *ret = NULL;
                return 0;
        }
        out = calloc(max, sizeof(*out));
        if (!out)
                return -ENOMEM;
        r = begin(s);
        if (r < 0) {
                free(out);
                return r;
        }
        Sched *m = mem_get(s, now);
        if (m) {
                r = lease_mem(s, m, key, caps, max, max_bytes, now, lease_usec, out);
                r = end(s, r);
                if (r < 0) {
                        pool_leases_free(out, 0);
                        return r;
                }
                *ret = out;
                return r;
        }
        /* Matching: only tasks whose needs this worker's capabilities meet.
         * Lapsed leases first, oldest lapse first, so a vanished worker's
         * task is not starved by new ones; then free tasks in order. Both
         * walk the tasks_free index, never the tasks that are fully leased. */
        static const char *const queries[2] = {
                "SELECT t.id, t.spec, t.signature FROM tasks t INDEXED BY tasks_free WHERE t.state = 'pending'"
                " AND t.full_until_usec > 0 AND t.full_until_usec <= :now" LEASE_FILTER
                " ORDER BY t.full_until_usec LIMIT :max",
                "SELECT t.id, t.spec, t.signature FROM tasks t INDEXED BY tasks_free WHERE t.state = 'pending'"
                " AND t.full_until_usec = 0" LEASE_FILTER
                " ORDER BY t.rowid LIMIT :max",
        };
        if (r >= 0)
                r = prep(s,
                         "INSERT INTO leases(task_id, worker, issued_usec, expires_usec, state) VALUES(?,?,?,?,'active')"
                         " ON CONFLICT(task_id, worker) DO UPDATE SET issued_usec = excluded.issued_usec,"
                         " expires_usec = excluded.expires_usec, state = 'active'",
                         &ins);
        for (int qi = 0; qi < 2 && r >= 0 && n < max; qi++) {
                _cleanup_stmt_ sqlite3_stmt *q = NULL;
                r = prep(s, queries[qi], &q);
                if (r < 0)
                        break;
                bind_now(q, now);
                sqlite3_bind_text(q, sqlite3_bind_parameter_index(q, ":arch"), caps->arch, -1, SQLITE_STATIC);
                sqlite3_bind_int(q, sqlite3_bind_parameter_index(q, ":cores"), (int) caps->cores);
                sqlite3_bind_int64(q, sqlite3_bind_parameter_index(q, ":mem"), (sqlite3_int64) caps->memory_bytes);
                sqlite3_bind_int(q, sqlite3_bind_parameter_index(q, ":gpu"), (int) caps->gpu_mask);
                sqlite3_bind_blob(q, sqlite3_bind_parameter_index(q, ":key"), key, LINK_KEY_BYTES, SQLITE_STATIC);
                sqlite3_bind_int(q, sqlite3_bind_parameter_index(q, ":max"), (int) (max - n));
                while (n < max) {
                        int rc = sqlite3_step(q);
                        if (rc == SQLITE_DONE)
                                break;
                        if (rc != SQLITE_ROW) {
                                r = sql_err(s->db, rc);
                                break;
                        }
                        size_t len = (size_t) sqlite3_column_bytes(q, 1);
                        if (bytes + len > max_bytes) {
                                qi = 2;         /* full: no second query either */
                                break;
                        }
                        if (sqlite3_column_bytes(q, 2) != LINK_SIG_BYTES)
                                continue;
                        PoolLease *l = &out[n];
                        snprintf(l->id, sizeof(l->id), "%s", (const char *) sqlite3_column_text(q, 0));
                        l->spec = malloc(len ? len : 1);
                        if (!l->spec) {
                                r = -ENOMEM;
                                break;
                        }
                        memcpy(l->spec, sqlite3_column_blob(q, 1), len);
                        l->spec_len = len;
                        memcpy(l->signature, sqlite3_column_blob(q, 2), LINK_SIG_BYTES);
                        l->expires_usec = now + lease_usec;
                        n++;
                        bytes += len;
                }
        }
        for (size_t i = 0; r >= 0 && i < n; i++) {
                sqlite3_reset(ins);
                sqlite3_bind_text(ins, 1, out[i].id, -1, SQLITE_STATIC);
                sqlite3_bind_blob(ins, 2, key, LINK_KEY_BYTES, SQLITE_STATIC);
                sqlite3_bind_int64(ins, 3, (sqlite3_int64) now);
                sqlite3_bind_int64(ins, 4, (sqlite3_int64) out[i].expires_usec);
                r = step_done(ins);
                if (r >= 0)
                        r = refresh_task(s, out[i].id, now);
        }
        r = end(s, r);
        if (r < 0) {
                pool_leases_free(out, n);
                return r;
        }
        *ret = out;
        return (int) n;
}

/* Live leases and answers other workers hold on TASK, against its wanted. */
static int task_room(PoolStore *s, const char *task_id, const uint8_t *key, uint64_t now, bool *ret)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = prep(s, "SELECT (SELECT count(*) FROM leases l WHERE l.task_id = t.id AND l.worker != :key AND " LIVE ")"
                        " < t.wanted FROM tasks t WHERE t.id = :id", &st);
        if (r < 0)
                return r;
        bind_now(st, now);
        sqlite3_bind_blob(st, sqlite3_bind_parameter_index(st, ":key"), key, LINK_KEY_BYTES, SQLITE_STATIC);
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":id"), task_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return -ENOENT;
        *ret = sqlite3_column_int(st, 0) != 0;
        return 0;
}

int pool_store_renew(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], const char *task_id, uint64_t now,
                     uint64_t lease_usec, uint64_t *ret_expires)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL, *up = NULL;
        char state[32];
        bool room = true;
        int r = begin(s);
        if (r < 0)
                return r;
        Sched *m = mem_get(s, now);
        SchedTask *t = m ? sched_find(m, task_id) : NULL;
        if (t) {
                /* Pending: memory knows its leases. */
                r = sched_renew(m, t, key, now, lease_usec);
                if (r >= 0)
                        r = prep(s, "UPDATE leases SET expires_usec = ? WHERE task_id = ? AND worker = ?", &up);
                if (r >= 0) {
                        sqlite3_bind_int64(up, 1, (sqlite3_int64) (now + lease_usec));
                        sqlite3_bind_text(up, 2, task_id, -1, SQLITE_STATIC);
                        sqlite3_bind_blob(up, 3, key, LINK_KEY_BYTES, SQLITE_STATIC);
                        r = step_done(up);
                        if (r < 0)
                                s->mem_stale = true;
                }
                r = end(s, r);
                if (r >= 0)
                        *ret_expires = now + lease_usec;
                return r;
        }
        /* Not pending (or no memory): the database says why. */
        r = task_state(s, task_id, state, sizeof(state));
        if (r >= 0 && strcmp(state, "pending"))
                r = -EALREADY;
        if (r >= 0)
                r = prep(s, "SELECT expires_usec FROM leases l WHERE task_id = ? AND worker = ? AND state = 'active'"
                            " AND NOT " ANSWERED, &st);
        if (r >= 0) {
                sqlite3_bind_text(st, 1, task_id, -1, SQLITE_STATIC);
                sqlite3_bind_blob(st, 2, key, LINK_KEY_BYTES, SQLITE_STATIC);
                if (sqlite3_step(st) != SQLITE_ROW)
                        r = -ENOENT;
                /* Lapsed: still ours only if nobody took its place meanwhile. */
                else if ((uint64_t) sqlite3_column_int64(st, 0) <= now) {
                        r = task_room(s, task_id, key, now, &room);
                        if (r >= 0 && !room)
                                r = -ETIMEDOUT;
                }
        }
        if (r >= 0)
                r = prep(s, "UPDATE leases SET expires_usec = ? WHERE task_id = ? AND worker = ?", &up);
        if (r >= 0) {
                sqlite3_bind_int64(up, 1, (sqlite3_int64) (now + lease_usec));
                sqlite3_bind_text(up, 2, task_id, -1, SQLITE_STATIC);
                sqlite3_bind_blob(up, 3, key, LINK_KEY_BYTES, SQLITE_STATIC);
                r = step_done(up);
        }
        if (r >= 0)
                r = refresh_task(s, task_id, now);
        r = end(s, r);
        if (r >= 0)
                *ret_expires = now + lease_usec;
        return r;
}

static int simple(PoolStore *s, const char *sql, const char *text, const uint8_t *key, uint64_t now)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = prep(s, sql, &st);
        if (r < 0)
                return r;
        int i;
        if ((i = sqlite3_bind_parameter_index(st, ":id")) > 0)
                sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
        if ((i = sqlite3_bind_parameter_index(st, ":key")) > 0)
                sqlite3_bind_blob(st, i, key, LINK_KEY_BYTES, SQLITE_STATIC);
        bind_now(st, now);
        return change(s, st);
}

/* TASK_ID was decided on BEST: record who agreed and who did not (the
 * workers listing counts these verdicts). */
static int mark_verdicts(PoolStore *s, const char *task_id, const uint8_t *best)
{
        _cleanup_stmt_ sqlite3_stmt *res = NULL;
        int r = prep(s, "UPDATE results SET verdict = CASE WHEN hash = ?2 THEN 'agree' ELSE 'disagree' END,"
                    " accepted = (hash = ?2) WHERE task_id = ?1 AND verdict = 'pending'", &res);
        if (r < 0)
                return r;
        sqlite3_bind_text(res, 1, task_id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(res, 2, best, LINK_HASH_BYTES, SQLITE_STATIC);
        return step_done(res);
}

/* Decide TASK_ID if a quorum of its results agree. */
static int judge(PoolStore *s, const char *task_id, uint64_t now)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL, *t = NULL, *acc = NULL;
        uint8_t best[LINK_HASH_BYTES];
        int best_n = 0, total = 0, r;

        r = prep(s, "SELECT hash, count(*) FROM results WHERE task_id = ? GROUP BY hash ORDER BY count(*) DESC", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, task_id, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW) {
                int c = sqlite3_column_int(st, 1);
                if (total == 0 && sqlite3_column_bytes(st, 0) == LINK_HASH_BYTES) {
                        memcpy(best, sqlite3_column_blob(st, 0), LINK_HASH_BYTES);
                        best_n = c;
                }
                total += c;
        }
        r = prep(s, "SELECT quorum, wanted, replicas FROM tasks WHERE id = ?", &t);
        if (r < 0)
                return r;
        sqlite3_bind_text(t, 1, task_id, -1, SQLITE_STATIC);
        if (sqlite3_step(t) != SQLITE_ROW)
                return -ENOENT;
        int quorum = sqlite3_column_int(t, 0), wanted = sqlite3_column_int(t, 1), replicas = sqlite3_column_int(t, 2);

        if (best_n >= quorum) {
                r = prep(s, "UPDATE tasks SET state = 'done', finished_usec = ?, accepted_hash = ? WHERE id = ?", &acc);
                if (r < 0)
                        return r;
                sqlite3_bind_int64(acc, 1, (sqlite3_int64) now);
                sqlite3_bind_blob(acc, 2, best, LINK_HASH_BYTES, SQLITE_STATIC);
                sqlite3_bind_text(acc, 3, task_id, -1, SQLITE_STATIC);
                r = step_done(acc);
                if (r < 0)
                        return r;
                return mark_verdicts(s, task_id, best);
        }
        if (total >= wanted) {
                /* Every replica in and no quorum: ask one more worker, up
                 * to twice the replicas, then give up. */
                if (wanted < 2 * replicas)
                        r = simple(s, "UPDATE tasks SET wanted = wanted + 1 WHERE id = :id", task_id, NULL, now);
                else
                        r = simple(s, "UPDATE tasks SET state = 'inconclusive', finished_usec = :now WHERE id = :id",
                                   task_id, NULL, now);
                return r < 0 ? r : 0;
        }
        return 0;
}

static const char SQL_RESULT_INSERT_VERDICT[] =
        "INSERT INTO results(task_id, worker, received_usec, status, exit_code, hash, cpu_usec, body, signature,"
        " verdict, accepted) VALUES(?,?,?,?,?,?,?,?,?,?,?)";

/* A result for a pending task, judged in memory; the database is only
 * written. */
static int add_result_mem(PoolStore *s, Sched *m, SchedTask *t, const uint8_t *key, const Hlink__ResultBody *b,
                          const uint8_t *hash, const void *raw, size_t raw_len, const void *signature,
                          size_t signature_len, uint64_t now, bool *ret_accepted, const char **ret_reason)
{
        _cleanup_stmt_ sqlite3_stmt *ins = NULL, *acc = NULL;
        uint8_t best[LINK_HASH_BYTES];
        int st = sched_lease_state(t, key, NULL), r;

        if (st == 0)
                return -ENOENT;         /* never leased to this worker */
        if (st == SCHED_DONE) {
                /* A resend after a lost ack: it is stored already. */
                *ret_accepted = true;
                *ret_reason = "already stored";
                return 0;
        }
        /* Judged first; if a write below fails the call is rolled back and
         * memory is rebuilt from the database (mem_stale). */
        int verdict = sched_result(m, t, key, hash, now, best);
        if (verdict < 0)
                return verdict;
        /* The common case, one replica: this answer alone decides, so it is
         * stored with its verdict, and the worker counted as agreeing, in
         * the same writes. */
        bool alone = verdict == SCHED_ACCEPT && sched_answers(t) == 1;
        r = prep(s, SQL_RESULT_INSERT_VERDICT, &ins);
        if (r >= 0) {
                sqlite3_bind_text(ins, 1, b->task_id, -1, SQLITE_STATIC);
                sqlite3_bind_blob(ins, 2, key, LINK_KEY_BYTES, SQLITE_STATIC);
                sqlite3_bind_int64(ins, 3, (sqlite3_int64) now);
                sqlite3_bind_int(ins, 4, b->status);
                sqlite3_bind_int(ins, 5, b->exit_code);
                sqlite3_bind_blob(ins, 6, hash, LINK_HASH_BYTES, SQLITE_STATIC);
                sqlite3_bind_int64(ins, 7, (sqlite3_int64) b->cpu_usec);
                sqlite3_bind_blob(ins, 8, raw, (int) raw_len, SQLITE_STATIC);
                sqlite3_bind_blob(ins, 9, signature, (int) signature_len, SQLITE_STATIC);
                sqlite3_bind_text(ins, 10, alone ? "agree" : "pending", -1, SQLITE_STATIC);
                sqlite3_bind_int(ins, 11, alone);
                r = step_done(ins);
        }
        /* That row is the whole record: it marks the lease answered
         * (ANSWERED) and counts for the worker (its listing sums results);
         * neither the lease nor the worker's row is written. */
        switch (r < 0 ? -1 : verdict) {
        case SCHED_ACCEPT:
                r = prep(s, "UPDATE tasks SET state = 'done', finished_usec = ?, accepted_hash = ? WHERE id = ?", &acc);
                if (r >= 0) {
                        sqlite3_bind_int64(acc, 1, (sqlite3_int64) now);
                        sqlite3_bind_blob(acc, 2, best, LINK_HASH_BYTES, SQLITE_STATIC);
                        sqlite3_bind_text(acc, 3, b->task_id, -1, SQLITE_STATIC);
                        r = step_done(acc);
                }
                if (r >= 0 && !alone)
                        r = mark_verdicts(s, b->task_id, best);
                sched_remove(m, t);
                break;
        case SCHED_ASK_MORE:
                r = simple(s, "UPDATE tasks SET wanted = wanted + 1 WHERE id = :id", b->task_id, NULL, now);
                break;
        case SCHED_GIVE_UP:
                r = simple(s, "UPDATE tasks SET state = 'inconclusive', finished_usec = :now WHERE id = :id",
                           b->task_id, NULL, now);
                sched_remove(m, t);
                break;
        default:
                break;
        }
        if (r < 0) {
                s->mem_stale = true;
                return r;
        }
        *ret_accepted = true;
        return 0;
}

int pool_store_add_result(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], const Hlink__ResultBody *b,
                          const uint8_t hash[LINK_HASH_BYTES], const void *raw, size_t raw_len,
                          const void *signature, size_t signature_len, uint64_t now, bool *ret_accepted,
                          const char **ret_reason)
{
        _cleanup_stmt_ sqlite3_stmt *l = NULL, *ins = NULL;
        char state[32], lease_state[32] = "";
        const char *reason = "";
        bool accepted = false;
        int r = begin(s);
        if (r < 0)
                return r;
        Sched *m = mem_get(s, now);
        SchedTask *task = m ? sched_find(m, b->task_id) : NULL;
        if (task) {
                r = add_result_mem(s, m, task, key, b, hash, raw, raw_len, signature, signature_len, now, &accepted,
                                   &reason);
                goto out;
        }
        /* Not pending (done, given up, cancelled, unknown) or no memory:
         * the database decides. */
        r = task_state(s, b->task_id, state, sizeof(state));
        if (r >= 0)
                r = prep(s, "SELECT CASE WHEN " ANSWERED " THEN 'done' ELSE state END FROM leases l"
                            " WHERE task_id = ? AND worker = ?", &l);
        if (r >= 0) {
                sqlite3_bind_text(l, 1, b->task_id, -1, SQLITE_STATIC);
                sqlite3_bind_blob(l, 2, key, LINK_KEY_BYTES, SQLITE_STATIC);
                if (sqlite3_step(l) != SQLITE_ROW)
                        r = -ENOENT;    /* never leased to this worker */
                else
                        snprintf(lease_state, sizeof(lease_state), "%s", (const char *) sqlite3_column_text(l, 0));
        }
        if (r < 0)
                goto out;
        if (!strcmp(lease_state, "done")) {
                /* A resend after a lost ack: it is stored already. */
                accepted = true;
                reason = "already stored";
                goto out;
        }
        if (strcmp(state, "pending") && strcmp(state, "done")) {
                reason = strcmp(state, "cancelled") ? "task given up" : "task cancelled";
                r = simple(s, "UPDATE leases SET state = 'released' WHERE task_id = :id AND worker = :key",
                           b->task_id, key, now);
                goto out;
        }
        r = prep(s, "INSERT INTO results(task_id, worker, received_usec, status, exit_code, hash, cpu_usec, body, signature,"
                    " verdict) VALUES(?,?,?,?,?,?,?,?,?, ?)", &ins);
        if (r < 0)
                goto out;
        sqlite3_bind_text(ins, 1, b->task_id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(ins, 2, key, LINK_KEY_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, (sqlite3_int64) now);
        sqlite3_bind_int(ins, 4, b->status);
        sqlite3_bind_int(ins, 5, b->exit_code);
        sqlite3_bind_blob(ins, 6, hash, LINK_HASH_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 7, (sqlite3_int64) b->cpu_usec);
        sqlite3_bind_blob(ins, 8, raw, (int) raw_len, SQLITE_STATIC);
        sqlite3_bind_blob(ins, 9, signature, (int) signature_len, SQLITE_STATIC);
        /* After the decision, a late replica is still judged against it. */
        if (!strcmp(state, "done")) {
                _cleanup_stmt_ sqlite3_stmt *h = NULL;
                bool agree = false;
                r = prep(s, "SELECT accepted_hash = ? FROM tasks WHERE id = ?", &h);
                if (r < 0)
                        goto out;
                sqlite3_bind_blob(h, 1, hash, LINK_HASH_BYTES, SQLITE_STATIC);
                sqlite3_bind_text(h, 2, b->task_id, -1, SQLITE_STATIC);
                if (sqlite3_step(h) == SQLITE_ROW)
                        agree = sqlite3_column_int(h, 0) == 1;
                sqlite3_bind_text(ins, 10, agree ? "agree" : "disagree", -1, SQLITE_STATIC);
                r = step_done(ins);
        } else {
                sqlite3_bind_text(ins, 10, "pending", -1, SQLITE_STATIC);
                r = step_done(ins);
        }
        if (r >= 0)
                r = simple(s, "UPDATE leases SET state = 'done' WHERE task_id = :id AND worker = :key", b->task_id, key, now);
        if (r >= 0 && !strcmp(state, "pending"))
                r = judge(s, b->task_id, now);
        if (r >= 0)
                r = refresh_task(s, b->task_id, now);
        if (r >= 0)
                accepted = true;
out:
        r = end(s, r < 0 ? r : 0);
        if (r < 0)
                return r;
        *ret_accepted = accepted;
        if (ret_reason)
                *ret_reason = reason;
        return 0;
}

int pool_store_release(PoolStore *s, const uint8_t key[LINK_KEY_BYTES], uint64_t now)
{
        int r = begin(s);
        if (r < 0)
                return r;
        Sched *m = mem_get(s, now);
        if (m) {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;
                int n = 0, rc;
                r = prep(s, "UPDATE leases AS l SET state = 'released' WHERE worker = ? AND state = 'active'"
                            " AND expires_usec > ? AND NOT " ANSWERED " RETURNING task_id", &st);
                if (r >= 0) {
                        sqlite3_bind_blob(st, 1, key, LINK_KEY_BYTES, SQLITE_STATIC);
                        sqlite3_bind_int64(st, 2, (sqlite3_int64) now);
                        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                                SchedTask *t = sched_find(m, (const char *) sqlite3_column_text(st, 0));
                                if (t)
                                        sched_release(m, t, key, now);
                                n++;
                        }
                        if (rc != SQLITE_DONE) {
                                r = sql_err(s->db, rc);
                                s->mem_stale = true;
                        }
                }
                return end(s, r < 0 ? r : n);
        }
        r = simple(s, "UPDATE leases AS l SET state = 'released' WHERE worker = :key AND state = 'active'"
                      " AND expires_usec > :now AND NOT " ANSWERED, NULL, key, now);
        if (r > 0) {
                int k = simple(s, REFRESH_FULL_UNTIL " WHERE state = 'pending' AND id IN"
                                  " (SELECT task_id FROM leases WHERE worker = :key AND state = 'released')", NULL, key, now);
                if (k < 0)
                        r = k;
        }
        return end(s, r);
}

int pool_store_count(PoolStore *s, const char *const *names, const uint64_t *deltas, size_t n)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = begin(s);
        if (r < 0)
                return r;
        r = prep(s, "INSERT INTO counters(name, value) VALUES(?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", &st);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                if (!deltas[i])
                        continue;
                sqlite3_reset(st);
                sqlite3_bind_text(st, 1, names[i], -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, (sqlite3_int64) deltas[i]);
                r = step_done(st);
        }
        return end(s, r);
}

/* --- listings ------------------------------------------------------------ */

static json_t *key_json(const void *key, int len)
{
        char b64[64];
        if (len != LINK_KEY_BYTES || link_key_to_base64(key, b64, sizeof(b64)) < 0)
                return json_null();
        return json_string(b64);
}

static json_t *hex_json(const void *data, int len)
{
        char hex[2 * LINK_HASH_BYTES + 1];
        if (!data || len != LINK_HASH_BYTES)
                return json_null();
        sodium_bin2hex(hex, sizeof(hex), data, LINK_HASH_BYTES);
        return json_string(hex);
}

/* Run a read query and turn each row into an object through ROW. */
static int list(PoolStore *s, const char *sql, const char *text, uint64_t now,
                json_t *(*row)(sqlite3_stmt *st, void *ud), void *ud, json_t **ret)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        pthread_mutex_lock(&s->lock);
        int r = prep(s, sql, &st);
        json_t *a = json_array();
        if (r >= 0) {
                int i;
                bind_now(st, now);
                if (text && (i = sqlite3_bind_parameter_index(st, ":id")) > 0)
                        sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
                int rc;
                while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                        json_array_append_new(a, row(st, ud));
                if (rc != SQLITE_DONE)
                        r = sql_err(s->db, rc);
        }
        finalizep(&st);
        st = NULL;
        pthread_mutex_unlock(&s->lock);
        if (r < 0) {
                json_decref(a);
                return r;
        }
        *ret = a;
        return 0;
}

static const char *kind_name(int k)
{
        switch (k) {
        case HLINK__KIND__KIND_EXEC:
                return "exec";
        case HLINK__KIND__KIND_OPENCL:
                return "opencl";
        case HLINK__KIND__KIND_CUDA:
                return "cuda";
        default:
                return "unknown";
        }
}

static json_t *task_row(sqlite3_stmt *st, void *ud)
{
        return json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:I, s:I, s:o}",
                         "id", (const char *) sqlite3_column_text(st, 0),
                         "kind", kind_name(sqlite3_column_int(st, 1)),
                         "state", (const char *) sqlite3_column_text(st, 2),
                         "replicas", sqlite3_column_int(st, 3),
                         "quorum", sqlite3_column_int(st, 4),
                         "wanted", sqlite3_column_int(st, 5),
                         "leased", sqlite3_column_int(st, 6),
                         "results", sqlite3_column_int(st, 7),
                         "submitted_usec", (json_int_t) sqlite3_column_int64(st, 8),
                         "finished_usec", (json_int_t) sqlite3_column_int64(st, 9),
                         "accepted_hash", hex_json(sqlite3_column_blob(st, 10), sqlite3_column_bytes(st, 10)));
}

int pool_store_tasks_json(PoolStore *s, uint64_t now, json_t **ret)
{
        return list(s,
                    "SELECT t.id, t.kind, t.state, t.replicas, t.quorum, t.wanted,"
                    " (SELECT count(*) FROM leases l WHERE l.task_id = t.id AND l.state = 'active' AND l.expires_usec > :now"
                    " AND NOT " ANSWERED "),"
                    " (SELECT count(*) FROM results r WHERE r.task_id = t.id),"
                    " t.submitted_usec, coalesce(t.finished_usec, 0), t.accepted_hash FROM tasks t ORDER BY t.rowid",
                    NULL, now, task_row, NULL, ret);
}

static const char *status_name(int st)
{
        switch (st) {
        case HLINK__STATUS__STATUS_OK:
                return "ok";
        case HLINK__STATUS__STATUS_FAILED:
                return "failed";
        case HLINK__STATUS__STATUS_TIMEOUT:
                return "timeout";
        case HLINK__STATUS__STATUS_KILLED:
                return "killed";
        case HLINK__STATUS__STATUS_REFUSED:
                return "refused";
        default:
                return "unknown";
        }
}

static json_t *result_row(sqlite3_stmt *st, void *ud)
{
        bool with_data = *(bool *) ud;
        json_t *o = json_pack("{s:s, s:o, s:s, s:i, s:o, s:I, s:I, s:s, s:b}",
                              "task", (const char *) sqlite3_column_text(st, 0),
                              "worker", key_json(sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1)),
                              "status", status_name(sqlite3_column_int(st, 2)),
                              "exit_code", sqlite3_column_int(st, 3),
                              "hash", hex_json(sqlite3_column_blob(st, 4), sqlite3_column_bytes(st, 4)),
                              "cpu_usec", (json_int_t) sqlite3_column_int64(st, 5),
                              "received_usec", (json_int_t) sqlite3_column_int64(st, 6),
                              "verdict", (const char *) sqlite3_column_text(st, 7),
                              "accepted", sqlite3_column_int(st, 9));
        Hlink__ResultBody *b = hlink__result_body__unpack(NULL, (size_t) sqlite3_column_bytes(st, 8),
                                                           sqlite3_column_blob(st, 8));
        /* Device time has no column: it is read from the signed body kept
         * verbatim, so results stored before the field existed say 0. */
        json_object_set_new(o, "device_usec", json_integer(b ? (json_int_t) b->device_usec : 0));
        json_t *outs = json_array();
        for (size_t i = 0; b && i < b->n_outputs; i++) {
                json_t *f = json_pack("{s:s, s:I, s:o}", "name", b->outputs[i]->name,
                                      "bytes", (json_int_t) b->outputs[i]->data.len,
                                      "sha256", hex_json(b->outputs[i]->sha256.data, (int) b->outputs[i]->sha256.len));
                if (with_data) {
                        size_t n = sodium_base64_ENCODED_LEN(b->outputs[i]->data.len, sodium_base64_VARIANT_ORIGINAL);
                        char *b64 = malloc(n);
                        if (b64) {
                                sodium_bin2base64(b64, n, b->outputs[i]->data.data, b->outputs[i]->data.len,
                                                  sodium_base64_VARIANT_ORIGINAL);
                                json_object_set_new(f, "data_base64", json_string(b64));
                                free(b64);
                        }
                }
                json_array_append_new(outs, f);
        }
        if (b)
                hlink__result_body__free_unpacked(b, NULL);
        json_object_set_new(o, "outputs", outs);
        return o;
}

int pool_store_each_result(PoolStore *s, PoolResultFn fn, void *userdata)
{
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, rc = SQLITE_DONE;

        pthread_mutex_lock(&s->lock);
        r = prep(s, "SELECT task_id, worker, body, signature FROM results ORDER BY rowid", &st);
        while (r >= 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                static const uint8_t none[LINK_KEY_BYTES];
                const void *worker = sqlite3_column_blob(st, 1);
                if (sqlite3_column_bytes(st, 1) != LINK_KEY_BYTES)
                        worker = none;     /* proves nothing: no key */
                r = fn((const char *) sqlite3_column_text(st, 0), worker, sqlite3_column_blob(st, 2),
                       (size_t) sqlite3_column_bytes(st, 2), sqlite3_column_blob(st, 3),
                       (size_t) sqlite3_column_bytes(st, 3), userdata);
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = sql_err(s->db, rc);
        finalizep(&st);
        st = NULL;
        pthread_mutex_unlock(&s->lock);
        return r;
}

int pool_store_results_json(PoolStore *s, const char *task_id, bool with_data, json_t **ret)
{
        return list(s,
                    task_id ? "SELECT task_id, worker, status, exit_code, hash, cpu_usec, received_usec, verdict, body,"
                              " accepted FROM results WHERE task_id = :id ORDER BY rowid"
                            : "SELECT task_id, worker, status, exit_code, hash, cpu_usec, received_usec, verdict, body,"
                              " accepted FROM results ORDER BY rowid",
                    task_id, 0, result_row, &with_data, ret);
}

static json_t *worker_row(sqlite3_stmt *st, void *ud)
{
        return json_pack("{s:o, s:s, s:i, s:I, s:i, s:i, s:s, s:I, s:I, s:i, s:i, s:i, s:I, s:i}",
                         "key", key_json(sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0)),
                         "arch", (const char *) sqlite3_column_text(st, 1),
                         "cores", sqlite3_column_int(st, 2),
                         "memory_bytes", (json_int_t) sqlite3_column_int64(st, 3),
                         "gpu_devices", sqlite3_column_int(st, 4),
                         "cpu_budget_ppm", sqlite3_column_int(st, 5),
                         "agent", (const char *) sqlite3_column_text(st, 6),
                         "first_seen_usec", (json_int_t) sqlite3_column_int64(st, 7),
                         "last_seen_usec", (json_int_t) sqlite3_column_int64(st, 8),
                         "results", sqlite3_column_int(st, 9),
                         "agreed", sqlite3_column_int(st, 10),
                         "disagreed", sqlite3_column_int(st, 11),
                         "cpu_usec", (json_int_t) sqlite3_column_int64(st, 12),
                         "leases", sqlite3_column_int(st, 13));
}

int pool_store_workers_json(PoolStore *s, uint64_t now, json_t **ret)
{
        return list(s,
                    /* A worker's figures come from its results, not from
                     * counters the server would have to write on each. */
                    "SELECT w.key, w.arch, w.cores, w.memory, w.devices, w.cpu_budget_ppm, w.agent, w.first_seen_usec,"
                    " max(w.last_seen_usec, coalesce(r.last, 0)), coalesce(r.n, 0), coalesce(r.agreed, 0),"
                    " coalesce(r.disagreed, 0), coalesce(r.cpu, 0),"
                    " (SELECT count(*) FROM leases l WHERE l.worker = w.key AND l.state = 'active' AND l.expires_usec > :now"
                    " AND NOT " ANSWERED ")"
                    " FROM workers w LEFT JOIN (SELECT worker, count(*) AS n, sum(verdict = 'agree') AS agreed,"
                    " sum(verdict = 'disagree') AS disagreed, sum(cpu_usec) AS cpu, max(received_usec) AS last"
                    " FROM results GROUP BY worker) r ON r.worker = w.key ORDER BY w.first_seen_usec",
                    NULL, now, worker_row, NULL, ret);
}

static json_t *pair_row(sqlite3_stmt *st, void *ud)
{
        return json_pack("[s, I]", (const char *) sqlite3_column_text(st, 0), (json_int_t) sqlite3_column_int64(st, 1));
}

int pool_store_status_json(PoolStore *s, uint64_t now, json_t **ret)
{
        json_t *tasks = NULL, *counters = NULL, *misc = NULL;
        int r = list(s, "SELECT state, count(*) FROM tasks GROUP BY state", NULL, now, pair_row, NULL, &tasks);
        if (r >= 0)
                r = list(s, "SELECT name, value FROM counters ORDER BY name", NULL, now, pair_row, NULL, &counters);
        if (r >= 0)
                r = list(s,
                         "SELECT 'workers', count(*) FROM workers UNION ALL"
                         " SELECT 'leases_active', count(*) FROM leases l WHERE l.state = 'active' AND l.expires_usec > :now"
                         " AND NOT " ANSWERED
                         " UNION ALL SELECT 'results', count(*) FROM results UNION ALL"
                         " SELECT 'results_disagreeing', count(*) FROM results WHERE verdict = 'disagree' UNION ALL"
                         " SELECT 'cpu_usec', coalesce(sum(cpu_usec), 0) FROM results",
                         NULL, now, pair_row, NULL, &misc);
        if (r < 0) {
                json_decref(tasks);
                json_decref(counters);
                return r;
        }
        json_t *o = json_object(), *t = json_object(), *c = json_object();
        size_t i;
        json_t *v;
        json_object_set_new(t, "pending", json_integer(0));
        json_array_foreach(tasks, i, v)
                json_object_set(t, json_string_value(json_array_get(v, 0)), json_array_get(v, 1));
        json_array_foreach(counters, i, v)
                json_object_set(c, json_string_value(json_array_get(v, 0)), json_array_get(v, 1));
        json_array_foreach(misc, i, v)
                json_object_set(o, json_string_value(json_array_get(v, 0)), json_array_get(v, 1));
        json_object_set_new(o, "tasks", t);
        json_object_set_new(o, "counters", c);
        json_decref(tasks);
        json_decref(counters);
        json_decref(misc);
        *ret = o;
        return 0;
}
