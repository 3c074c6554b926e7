/* The local store: opening and migrating labloop.db, the group commit that runs every write on
 * libuv's threadpool, the sinks' positions and the pruning they allow, saved cursors, and the
 * orderly close. The write connection belongs to the group in flight; the loop thread reads
 * through its own connection. */
#include "daemon/store/store.h"
#include "core/clock.h"
#include "core/embed.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/store/audit.h"
#include "daemon/store/store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* A group this large still commits in a few milliseconds; beyond it the latency of the ops at
 * its head would grow with no gain in throughput. */
#define GROUP_MAX 4096
/* Rows every sink acknowledged before a prune is worth a place in a group, and the most one group
 * deletes, so a long backlog is pruned in steps that never hold up submissions for long. */
#define PRUNE_MIN 1024
#define PRUNE_MAX 16384
#define LISTENERS_MAX 8
#define SINKS_MAX 8
#define BUSY_TIMEOUT_MS 5000
#define MIGRATION_PREFIX "sql/sqlite/"

typedef struct pending_cursor {
    char *name;
    int64_t seq;
    bool dirty;
} pending_cursor_t;

typedef struct cursor_write {
    const char *name; /* owned by the pending_cursor, which lives as long as the store */
    int64_t seq;
} cursor_write_t;

struct lab_store {
    uv_loop_t *loop;
    uv_async_t async; /* delivers LAB_ESHUTDOWN to ops submitted while closing */
    uv_work_t work;
    char *path;
    int lockfd; /* flock on state_dir/labloop.lock: one process per state_dir */
    lab_conn_t w, r;

    lab_store_op_t *qhead, *qtail;
    int queued;
    lab_store_op_t *rejected;

    /* The group in flight: set on the loop thread before uv_queue_work, read and completed by the
     * work function, read back in group_done. */
    bool busy;
    lab_store_op_t *group;
    cursor_write_t *gcursors;
    int ngcursors;
    int64_t gprune; /* delete outbox rows <= gprune (0: none) */
    bool gclose;    /* the final work: closes the writer */
    int grc;        /* LAB_EDB when the transaction was lost */
    bool ginternal_failed;
    int64_t ghead;

    bool in_done;     /* group_done is calling back: it kicks once when finished */
    bool last_failed; /* internal work waits for a good group after a failure */
    int64_t head_seq, groups, ops, ops_failed;
    int64_t pruned; /* every outbox row <= pruned is gone */
    int64_t keep;   /* the newest rows kept whatever the sinks acknowledged (lab_store_keep) */
    bool pruned_here;
    /* The head when the store opened: rows above it were appended by this process. */
    int64_t open_head;
    /* Rebases onto PostgreSQL's history (lab_store_rebase): how many, and the newest's target. */
    int64_t rebases, rebase_from, rebase_onto;
    bool rebasing;

    struct {
        lab_store_commit_cb cb;
        void *ctx;
    } listeners[LISTENERS_MAX];
    int nlisteners;

    struct {
        char *name;
        int64_t acked;
    } sinks[SINKS_MAX];
    int nsinks;

    pending_cursor_t *cursors;
    int ncursors;
    bool cursors_dirty;

    /* The audit note open on the loop thread, and whether an op took it. */
    lab_audit_note_t *note;
    bool note_taken;

    bool closing, writer_closed, async_closing;
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* ---- connections and their statements ---- */

static _Thread_local lab_conn_t *tls_conns;

void lab_conn_attach(lab_conn_t *c)
{
    c->next = tls_conns;
    tls_conns = c;
}

void lab_conn_detach(lab_conn_t *c)
{
    for (lab_conn_t **p = &tls_conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            c->next = NULL;
            return;
        }
}

lab_conn_t *lab_conn_find(sqlite3 *db)
{
    for (lab_conn_t *c = tls_conns; c; c = c->next)
        if (c->db == db)
            return c;
    return NULL;
}

int lab_sqlite_fail(sqlite3 *db, int rc, const char *what)
{
    log_error("store", "%s failed: %s (%d)", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc),
              rc);
    return LAB_EDB;
}

sqlite3_stmt *lab_conn_stmt(lab_conn_t *c, const char *sql)
{
    for (int i = 0; i < c->nstmts; i++)
        if (strcmp(c->stmts[i].sql, sql) == 0) {
            sqlite3_stmt *s = c->stmts[i].stmt;
            sqlite3_reset(s);
            sqlite3_clear_bindings(s);
            return s;
        }
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
    if (rc != SQLITE_OK) {
        lab_sqlite_fail(c->db, rc, "prepare");
        log_error("store", "statement: %s", sql);
        sqlite3_finalize(s);
        return NULL;
    }
    if (c->nstmts == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 16;
        c->stmts = lab_realloc(c->stmts, (size_t)c->cap * sizeof *c->stmts);
    }
    c->stmts[c->nstmts++] = (lab_stmt_entry_t){lab_strdup(sql), s};
    return s;
}

void lab_conn_close(lab_conn_t *c)
{
    for (int i = 0; i < c->nstmts; i++) {
        sqlite3_finalize(c->stmts[i].stmt);
        free(c->stmts[i].sql);
    }
    free(c->stmts);
    c->stmts = NULL;
    c->nstmts = c->cap = 0;
    if (c->db) {
        int rc = sqlite3_close_v2(c->db);
        if (rc != SQLITE_OK)
            log_error("store", "close failed: %s", sqlite3_errstr(rc));
    }
    c->db = NULL;
}

sqlite3_stmt *lab_stmt_acquire(sqlite3 *db, const char *sql, bool *owned)
{
    lab_conn_t *c = lab_conn_find(db);
    *owned = c == NULL;
    if (c)
        return lab_conn_stmt(c, sql);
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) {
        lab_sqlite_fail(db, rc, "prepare");
        sqlite3_finalize(s);
        return NULL;
    }
    return s;
}

void lab_stmt_release(sqlite3_stmt *s, bool owned)
{
    if (owned)
        sqlite3_finalize(s);
    else
        sqlite3_reset(s);
}

sqlite3_stmt *lab_store_stmt(sqlite3 *db, const char *sql)
{
    lab_conn_t *c = lab_conn_find(db);
    if (!c) {
        log_error("store", "lab_store_stmt: not a store connection usable on this thread");
        return NULL;
    }
    return lab_conn_stmt(c, sql);
}

/* Runs a statement that returns no rows, from the cache. */
static int conn_exec(lab_conn_t *c, const char *sql)
{
    sqlite3_stmt *s = lab_conn_stmt(c, sql);
    if (!s)
        return LAB_EDB;
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : lab_sqlite_fail(c->db, rc, sql);
}

/* The first column of a one-row query as an integer; dflt when there is no row or it is NULL. */
static int query_int64(sqlite3 *db, const char *sql, int64_t dflt, int64_t *out)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(s);
        return lab_sqlite_fail(db, rc, sql);
    }
    rc = sqlite3_step(s);
    *out = dflt;
    if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
        *out = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : lab_sqlite_fail(db, rc, sql);
}

/* ---- open and migrations ---- */

static int mkdir_p(const char *dir, mode_t mode)
{
    char *p = lab_strdup(dir);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, mode) != 0 && errno != EEXIST) {
            log_error("store", "mkdir %s: %s", p, strerror(errno));
            rc = LAB_EIO;
            break;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    struct stat sb;
    if (rc == 0 && (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
        log_error("store", "state_dir %s is not a directory", dir);
        rc = LAB_EIO;
    }
    free(p);
    return rc;
}

/* The in-memory head, the prune position and the cursors assume this process is the only writer:
 * a second daemon on the same state_dir is refused, not interleaved. */
static int lock_state_dir(const char *dir, int *out)
{
    char *path = lab_asprintf("%s/labloop.lock", dir);
    int rc = 0, fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        log_error("store", "open %s: %s", path, strerror(errno));
        rc = LAB_EIO;
        goto out;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char holder[32] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        log_error("store", "state_dir %s is in use by another process (pid %s)", dir,
                  *holder ? holder : "?");
        rc = errno == EWOULDBLOCK ? LAB_EBUSY : LAB_EIO;
        close(fd);
        goto out;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        log_warn("store", "cannot write the pid into %s: %s", path, strerror(errno));
    *out = fd;
out:
    free(path);
    return rc;
}

static int exec_script(sqlite3 *db, const char *sql, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        log_error("store", "%s: %s", what, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return LAB_EDB;
    }
    return 0;
}

/* The version of an embedded migration: the number its file name starts with. */
static int64_t migration_version(const char *name)
{
    const char *base = name + strlen(MIGRATION_PREFIX);
    char *end = NULL;
    if (base[0] < '0' || base[0] > '9')
        return -1;
    long long v = strtoll(base, &end, 10);
    return v > 0 && *end == '_' ? v : -1;
}

static int migration_apply(sqlite3 *db, const lab_embedded_t *e, int64_t version)
{
    char when[32];
    lab_time_iso(lab_wall_ms(), when);
    if (exec_script(db, "BEGIN IMMEDIATE", "begin migration"))
        return LAB_EDB;
    sqlite3_stmt *s = NULL;
    int rc = exec_script(db, e->text, e->name);
    if (rc)
        goto fail;
    rc = sqlite3_prepare_v2(db,
                            "INSERT INTO schema_migrations (version, name, applied_at) "
                            "VALUES (?, ?, ?)",
                            -1, &s, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, version);
        sqlite3_bind_text(s, 2, e->name + strlen(MIGRATION_PREFIX), -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, when, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
    }
    if (rc != SQLITE_DONE) {
        rc = lab_sqlite_fail(db, rc, "record migration");
        goto fail;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (exec_script(db, "COMMIT", e->name)) {
        rc = LAB_EDB;
        goto fail;
    }
    log_info("store", "migration applied version=%lld name=%s", (long long)version, e->name);
    return 0;
fail:
    sqlite3_finalize(s);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    log_error("store", "migration %s not applied", e->name);
    return rc;
}

static int migrate(sqlite3 *db, const char *path)
{
    if (exec_script(db,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
                    "create schema_migrations"))
        return LAB_EDB;
    int64_t current = 0, newest = 0;
    if (query_int64(db, "SELECT max(version) FROM schema_migrations", 0, &current))
        return LAB_EDB;
    size_t plen = strlen(MIGRATION_PREFIX);
    for (const lab_embedded_t *e = lab_embedded_files; e->name; e++) {
        if (strncmp(e->name, MIGRATION_PREFIX, plen) != 0 || strchr(e->name + plen, '/'))
            continue;
        int64_t v = migration_version(e->name);
        if (v <= newest) {
            log_error("store", "embedded migration %s: bad or repeated version", e->name);
            return LAB_EINVAL;
        }
        newest = v;
    }
    if (current > newest) {
        log_error("store",
                  "%s has schema version %lld but this labloopd knows only up to %lld: "
                  "refusing to open it (no downgrade); run a newer labloopd",
                  path, (long long)current, (long long)newest);
        return LAB_ESTATE;
    }
    for (const lab_embedded_t *e = lab_embedded_files; e->name; e++) {
        if (strncmp(e->name, MIGRATION_PREFIX, plen) != 0 || strchr(e->name + plen, '/'))
            continue;
        int64_t v = migration_version(e->name), have = 0;
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM schema_migrations WHERE version = %lld",
                 (long long)v);
        if (query_int64(db, sql, 0, &have))
            return LAB_EDB;
        if (!have && migration_apply(db, e, v))
            return LAB_EDB;
    }
    return 0;
}

static int conn_open(lab_conn_t *c, const char *path, int flags, const char *pragmas)
{
    int rc = sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        log_error("store", "open %s: %s", path, c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        return LAB_EDB;
    }
    sqlite3_extended_result_codes(c->db, 1);
    return exec_script(c->db, pragmas, path);
}

static void on_async(uv_async_t *h);

int lab_store_open(lab_store_t **out, uv_loop_t *loop, const char *state_dir)
{
    *out = NULL;
    if (!loop || !state_dir || !*state_dir)
        return LAB_EINVAL;
    if (!sqlite3_threadsafe()) {
        log_error("store", "SQLite was built without thread support");
        return LAB_EDB;
    }
    int lockfd = -1;
    int rc = mkdir_p(state_dir, 0750);
    if (!rc)
        rc = lock_state_dir(state_dir, &lockfd);
    if (rc)
        return rc;
    lab_store_t *st = LAB_NEW(lab_store_t);
    st->lockfd = lockfd;
    st->loop = loop;
    st->path = lab_asprintf("%s/labloop.db", state_dir);
    st->work.data = st;

    /* A larger checkpoint interval than SQLite's 1000 pages lets a checkpoint write each hot page
     * (the outbox's and the runs' tails) once for many groups; journal_size_limit trims the WAL
     * file back after a checkpoint. */
    char pragmas[320];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA busy_timeout=%d; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
             "PRAGMA foreign_keys=ON; PRAGMA cache_size=-16384; PRAGMA wal_autocheckpoint=4000; "
             "PRAGMA journal_size_limit=67108864;",
             BUSY_TIMEOUT_MS);
    rc = conn_open(&st->w, st->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, pragmas);
    if (rc)
        goto fail;
    /* journal_mode answers with the mode it got: a file system without shared memory leaves the
     * database in rollback mode, where the reader would block on the writer. */
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->w.db, "PRAGMA journal_mode", -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW ||
        strcmp((const char *)sqlite3_column_text(s, 0), "wal") != 0) {
        log_error("store", "%s: cannot use WAL mode", st->path);
        sqlite3_finalize(s);
        rc = LAB_EDB;
        goto fail;
    }
    sqlite3_finalize(s);
    rc = migrate(st->w.db, st->path);
    if (rc)
        goto fail;
    rc = query_int64(st->w.db, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'", 0,
                     &st->head_seq);
    if (!rc)
        rc = query_int64(st->w.db, "SELECT min(seq) - 1 FROM outbox", st->head_seq, &st->pruned);
    if (rc)
        goto fail;
    st->open_head = st->head_seq;

    snprintf(pragmas, sizeof pragmas, "PRAGMA busy_timeout=%d; PRAGMA foreign_keys=ON;",
             BUSY_TIMEOUT_MS);
    rc = conn_open(&st->r, st->path, SQLITE_OPEN_READONLY, pragmas);
    if (rc)
        goto fail;
    LAB_ASSERT(uv_async_init(loop, &st->async, on_async) == 0);
    st->async.data = st;
    /* An open store alone does not keep the loop running; its work in flight does. */
    uv_unref((uv_handle_t *)&st->async);
    lab_conn_attach(&st->r);
    log_info("store", "opened %s head_seq=%lld", st->path, (long long)st->head_seq);
    *out = st;
    return 0;
fail:
    lab_conn_close(&st->r);
    lab_conn_close(&st->w);
    close(st->lockfd);
    free(st->path);
    free(st);
    return rc;
}

sqlite3 *lab_store_reader(lab_store_t *st)
{
    return st->r.db;
}

/* ---- group commit ---- */

/* One op under its own savepoint. Returns its status; sets st->grc when the failure took the
 * whole transaction with it (SQLite rolls back on its own after some I/O errors). */
static int group_apply_op(lab_store_t *st, lab_store_op_t *op)
{
    lab_conn_t *c = &st->w;
    if (!op->apply)
        return LAB_EINVAL;
    int64_t head = c->head;
    if (conn_exec(c, "SAVEPOINT op")) {
        st->grc = LAB_EDB;
        return LAB_EDB;
    }
    /* A decision's entry comes before the changes it causes, whose entries carry its who. */
    c->note = op->note;
    int rc = op->note ? lab_audit_note_write(c->db, op->note) : 0;
    if (!rc)
        rc = op->apply(op, c->db);
    if (!rc)
        rc = lab_audit_flush(c->db, op->note);
    else
        lab_audit_drop(c->db);
    c->note = NULL;
    if (rc > 0)
        rc = LAB_EINVAL;
    if (sqlite3_get_autocommit(c->db)) {
        log_error("store", "an op's failure rolled back its whole group");
        st->grc = LAB_EDB;
        return rc ? rc : LAB_EDB;
    }
    if (rc) {
        c->head = head;
        if (conn_exec(c, "ROLLBACK TO op"))
            st->grc = LAB_EDB;
    }
    if (conn_exec(c, "RELEASE op"))
        st->grc = LAB_EDB;
    return rc;
}

/* The store's own writes, after the ops: saved cursors and pruning. */
static void group_apply_internal(lab_store_t *st)
{
    lab_conn_t *c = &st->w;
    if (!st->ngcursors && !st->gprune)
        return;
    if (conn_exec(c, "SAVEPOINT internal")) {
        st->grc = LAB_EDB;
        return;
    }
    int rc = 0;
    for (int i = 0; i < st->ngcursors && !rc; i++) {
        sqlite3_stmt *s = lab_conn_stmt(c, "INSERT INTO sink_cursors (name, seq) VALUES (?, ?) "
                                           "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq");
        if (!s) {
            rc = LAB_EDB;
            break;
        }
        sqlite3_bind_text(s, 1, st->gcursors[i].name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, st->gcursors[i].seq);
        int src = sqlite3_step(s);
        sqlite3_reset(s);
        if (src != SQLITE_DONE)
            rc = lab_sqlite_fail(c->db, src, "save cursor");
    }
    if (!rc && st->gprune) {
        /* At most PRUNE_MAX rows, counted as rows rather than seqs: a rebase leaves a gap in the
         * seqs that a step in seqs would cross one empty group at a time. */
        sqlite3_stmt *s = lab_conn_stmt(c, "SELECT seq FROM outbox WHERE seq <= ? ORDER BY seq "
                                           "LIMIT 1 OFFSET ?");
        if (!s)
            rc = LAB_EDB;
        else {
            sqlite3_bind_int64(s, 1, st->gprune);
            sqlite3_bind_int(s, 2, PRUNE_MAX - 1);
            int src = sqlite3_step(s);
            if (src == SQLITE_ROW)
                st->gprune = sqlite3_column_int64(s, 0);
            else if (src != SQLITE_DONE)
                rc = lab_sqlite_fail(c->db, src, "prune outbox");
            sqlite3_reset(s);
        }
        s = rc ? NULL : lab_conn_stmt(c, "DELETE FROM outbox WHERE seq <= ?");
        if (!rc && !s)
            rc = LAB_EDB;
        else if (s) {
            sqlite3_bind_int64(s, 1, st->gprune);
            int src = sqlite3_step(s);
            sqlite3_reset(s);
            if (src != SQLITE_DONE)
                rc = lab_sqlite_fail(c->db, src, "prune outbox");
        }
    }
    if (rc) {
        st->ginternal_failed = true;
        if (sqlite3_get_autocommit(c->db)) {
            st->grc = LAB_EDB;
            return;
        }
        if (conn_exec(c, "ROLLBACK TO internal"))
            st->grc = LAB_EDB;
    }
    if (conn_exec(c, "RELEASE internal"))
        st->grc = LAB_EDB;
}

/* Worker thread: the whole group in one transaction, one fsync at COMMIT. */
static void group_work(uv_work_t *req)
{
    lab_store_t *st = req->data;
    lab_conn_t *c = &st->w;
    if (st->gclose) {
        lab_conn_close(c);
        return;
    }
    lab_conn_attach(c);
    c->head = st->head_seq;
    st->grc = 0;
    st->ginternal_failed = false;
    if (conn_exec(c, "BEGIN IMMEDIATE")) {
        st->grc = LAB_EDB;
        goto out;
    }
    for (lab_store_op_t *op = st->group; op && !st->grc; op = op->next)
        op->status = group_apply_op(st, op);
    if (!st->grc)
        group_apply_internal(st);
    /* A statement an op left unfinished would hold its read open past COMMIT and the checkpoint
     * after it. */
    for (sqlite3_stmt *s = sqlite3_next_stmt(c->db, NULL); s; s = sqlite3_next_stmt(c->db, s))
        if (sqlite3_stmt_busy(s))
            sqlite3_reset(s);
    if (!st->grc && conn_exec(c, "COMMIT"))
        st->grc = LAB_EDB;
    if (st->grc && !sqlite3_get_autocommit(c->db))
        conn_exec(c, "ROLLBACK");
    if (st->grc) {
        int n = 0;
        for (lab_store_op_t *op = st->group; op; op = op->next)
            n++;
        log_error("store", "group not committed: its %d ops fail with EDB", n);
    }
out:
    st->ghead = c->head;
    lab_conn_detach(c);
}

static int64_t prune_target(const lab_store_t *st)
{
    if (st->nsinks == 0)
        return 0;
    int64_t lo = st->sinks[0].acked;
    for (int i = 1; i < st->nsinks; i++)
        if (st->sinks[i].acked < lo)
            lo = st->sinks[i].acked;
    if (lo > st->head_seq - st->keep)
        lo = st->head_seq - st->keep;
    if (lo <= st->pruned || (lo - st->pruned < PRUNE_MIN && !st->closing))
        return 0;
    return lo; /* the group deletes at most PRUNE_MAX rows of it */
}

static void group_done(uv_work_t *req, int status);

/* Starts the next group when none is in flight and there is something to write; while closing
 * and with nothing left, the final work that closes the writer. */
static void kick(lab_store_t *st)
{
    if (st->busy || st->in_done || st->writer_closed)
        return;
    bool internal = !st->last_failed;
    int64_t prune = internal ? prune_target(st) : 0;
    bool cursors = internal && st->cursors_dirty;
    if (!st->qhead && !prune && !cursors) {
        if (!st->closing)
            return;
        if (st->cursors_dirty)
            log_warn("store", "closing after a failed group: saved cursors not written");
        /* The reader goes first so that the writer is the last connection: closing, it
         * checkpoints and removes the WAL, on the threadpool rather than the loop. */
        lab_conn_detach(&st->r);
        lab_conn_close(&st->r);
        st->gclose = true;
        st->busy = true;
        LAB_ASSERT(uv_queue_work(st->loop, &st->work, group_work, group_done) == 0);
        return;
    }
    lab_store_op_t *tail = NULL;
    st->group = st->qhead;
    for (int n = 0; n < GROUP_MAX && st->qhead; n++) {
        tail = st->qhead;
        st->qhead = tail->next;
        st->queued--;
    }
    if (tail)
        tail->next = NULL;
    else
        st->group = NULL;
    if (!st->qhead)
        st->qtail = NULL;
    st->ngcursors = 0;
    if (cursors) {
        st->gcursors = lab_malloc((size_t)st->ncursors * sizeof *st->gcursors);
        for (int i = 0; i < st->ncursors; i++)
            if (st->cursors[i].dirty) {
                st->gcursors[st->ngcursors++] =
                    (cursor_write_t){st->cursors[i].name, st->cursors[i].seq};
                st->cursors[i].dirty = false;
            }
        st->cursors_dirty = false;
    }
    st->gprune = prune;
    st->busy = true;
    LAB_ASSERT(uv_queue_work(st->loop, &st->work, group_work, group_done) == 0);
}

static void finish_close(lab_store_t *st);

static void group_done(uv_work_t *req, int status)
{
    lab_store_t *st = req->data;
    LAB_ASSERT(status == 0);
    st->busy = false;
    if (st->gclose) {
        st->writer_closed = true;
        finish_close(st);
        return;
    }
    lab_store_op_t *op = st->group;
    st->group = NULL;
    bool appended = false;
    if (st->grc == 0) {
        st->groups++;
        st->last_failed = false;
        if (st->ghead > st->head_seq) {
            st->head_seq = st->ghead;
            appended = true;
        }
        if (st->gprune && !st->ginternal_failed) {
            st->pruned = st->gprune;
            st->pruned_here = true;
        }
    } else {
        st->last_failed = true;
    }
    if (st->grc || st->ginternal_failed)
        for (int i = 0; i < st->ngcursors; i++)
            for (int j = 0; j < st->ncursors; j++)
                if (st->cursors[j].name == st->gcursors[i].name) {
                    st->cursors[j].dirty = true;
                    st->cursors_dirty = true;
                }
    free(st->gcursors);
    st->gcursors = NULL;
    st->ngcursors = 0;
    st->gprune = 0;
    /* Ops that done callbacks submit join the next group instead of starting a group of one. */
    st->in_done = true;
    while (op) {
        lab_store_op_t *next = op->next;
        int rc = st->grc ? st->grc : op->status;
        if (rc)
            st->ops_failed++;
        else
            st->ops++;
        op->next = NULL;
        lab_audit_note_free(op->note);
        op->note = NULL;
        if (op->done)
            op->done(op, rc);
        op = next;
    }
    if (appended)
        for (int i = 0; i < st->nlisteners; i++)
            st->listeners[i].cb(st->listeners[i].ctx, st->head_seq);
    st->in_done = false;
    kick(st);
}

int lab_store_note_open(lab_store_t *st, lab_audit_note_t *note)
{
    if (st->note)
        return LAB_EBUSY;
    st->note = note;
    st->note_taken = false;
    return 0;
}

lab_audit_note_t *lab_store_note_close(lab_store_t *st)
{
    lab_audit_note_t *n = st->note_taken ? NULL : st->note;
    st->note = NULL;
    st->note_taken = false;
    return n;
}

static void submit(lab_store_t *st, lab_store_op_t *op);

/* The note is set before submit(): kick() may hand the op to a worker at once. */
void lab_store_submit_noted(lab_store_t *st, lab_store_op_t *op, lab_audit_note_t *note)
{
    op->note = note;
    submit(st, op);
}

void lab_store_submit(lab_store_t *st, lab_store_op_t *op)
{
    op->note = NULL;
    if (st->note && !st->note_taken) {
        op->note = st->note;
        st->note_taken = true;
    }
    submit(st, op);
}

static void submit(lab_store_t *st, lab_store_op_t *op)
{
    op->next = NULL;
    op->status = 0;
    if (st->closing) {
        /* Never re-entered from inside submit: the caller may still be using op. */
        op->next = st->rejected;
        st->rejected = op;
        if (!st->async_closing)
            uv_async_send(&st->async);
        return;
    }
    if (st->qtail)
        st->qtail->next = op;
    else
        st->qhead = op;
    st->qtail = op;
    st->queued++;
    kick(st);
}

/* ---- close ---- */

static void deliver_rejected(lab_store_t *st)
{
    while (st->rejected) {
        lab_store_op_t *op = st->rejected;
        st->rejected = op->next;
        op->next = NULL;
        lab_audit_note_free(op->note);
        op->note = NULL;
        if (op->done)
            op->done(op, LAB_ESHUTDOWN);
    }
}

static void on_async(uv_async_t *h)
{
    deliver_rejected(h->data);
}

static void on_async_closed(uv_handle_t *h)
{
    lab_store_t *st = h->data;
    deliver_rejected(st);
    log_info("store", "closed %s groups=%lld ops=%lld", st->path, (long long)st->groups,
             (long long)st->ops);
    void (*cb)(void *) = st->close_cb;
    void *arg = st->close_arg;
    for (int i = 0; i < st->nsinks; i++)
        free(st->sinks[i].name);
    for (int i = 0; i < st->ncursors; i++)
        free(st->cursors[i].name);
    free(st->cursors);
    close(st->lockfd);
    free(st->path);
    free(st);
    if (cb)
        cb(arg);
}

static void finish_close(lab_store_t *st)
{
    deliver_rejected(st);
    st->async_closing = true;
    uv_close((uv_handle_t *)&st->async, on_async_closed);
}

void lab_store_close(lab_store_t *st, void (*cb)(void *arg), void *arg)
{
    if (st->closing) {
        log_error("store", "lab_store_close called twice");
        return;
    }
    st->closing = true;
    st->close_cb = cb;
    st->close_arg = arg;
    kick(st);
}

/* ---- listeners, stats, sinks, cursors ---- */

void lab_store_on_commit(lab_store_t *st, lab_store_commit_cb cb, void *ctx)
{
    LAB_CHECK(st->nlisteners < LISTENERS_MAX, return );
    st->listeners[st->nlisteners].cb = cb;
    st->listeners[st->nlisteners].ctx = ctx;
    st->nlisteners++;
}

void lab_store_off_commit(lab_store_t *st, lab_store_commit_cb cb, void *ctx)
{
    for (int i = 0; i < st->nlisteners; i++) {
        if (st->listeners[i].cb == cb && st->listeners[i].ctx == ctx) {
            memmove(&st->listeners[i], &st->listeners[i + 1],
                    (size_t)(st->nlisteners - i - 1) * sizeof st->listeners[0]);
            st->nlisteners--;
            return;
        }
    }
}

void lab_store_stats(const lab_store_t *st, lab_store_stats_t *out)
{
    out->head_seq = st->head_seq;
    out->groups = st->groups;
    out->ops = st->ops;
    out->ops_failed = st->ops_failed;
    out->queued = st->queued;
    out->rebases = st->rebases;
    out->rebase_onto = st->rebase_onto;
}

int lab_store_sink_register(lab_store_t *st, const char *name)
{
    if (!name || !*name)
        return LAB_EINVAL;
    for (int i = 0; i < st->nsinks; i++)
        if (strcmp(st->sinks[i].name, name) == 0)
            return i;
    if (st->nsinks == SINKS_MAX)
        return LAB_ETOOBIG;
    /* A new sink has delivered nothing: nothing more is pruned until it acknowledges. Rows
     * pruned before it registered are beyond its reach, hence sinks register right after open. */
    if (st->pruned_here)
        log_warn("store", "sink %s registered after rows up to seq=%lld were pruned", name,
                 (long long)st->pruned);
    st->sinks[st->nsinks].name = lab_strdup(name);
    st->sinks[st->nsinks].acked = 0;
    return st->nsinks++;
}

int lab_store_sink_find(const lab_store_t *st, const char *name)
{
    for (int i = 0; name && i < st->nsinks; i++)
        if (strcmp(st->sinks[i].name, name) == 0)
            return i;
    return -1;
}

void lab_store_sink_acked(lab_store_t *st, int sink, int64_t seq)
{
    LAB_CHECK(sink >= 0 && sink < st->nsinks, return );
    if (seq > st->head_seq) {
        log_warn("store", "sink %s acknowledged seq=%lld beyond head=%lld", st->sinks[sink].name,
                 (long long)seq, (long long)st->head_seq);
        seq = st->head_seq;
    }
    if (seq <= st->sinks[sink].acked)
        return;
    st->sinks[sink].acked = seq;
    kick(st);
}

void lab_store_keep(lab_store_t *st, int64_t rows)
{
    st->keep = rows > 0 ? rows : 0;
}

int64_t lab_store_sink_position(const lab_store_t *st, int sink)
{
    return sink >= 0 && sink < st->nsinks ? st->sinks[sink].acked : 0;
}

int64_t lab_store_cursor_get(lab_store_t *st, const char *name)
{
    if (!name)
        return 0;
    for (int i = 0; i < st->ncursors; i++)
        if (strcmp(st->cursors[i].name, name) == 0)
            return st->cursors[i].seq;
    int64_t seq = 0;
    sqlite3_stmt *s = lab_conn_stmt(&st->r, "SELECT seq FROM sink_cursors WHERE name = ?");
    if (!s)
        return 0;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        seq = sqlite3_column_int64(s, 0);
    else if (rc != SQLITE_DONE)
        lab_sqlite_fail(st->r.db, rc, "read cursor");
    sqlite3_reset(s);
    return seq;
}

void lab_store_cursor_save(lab_store_t *st, const char *name, int64_t seq)
{
    LAB_CHECK(name && *name, return );
    if (st->writer_closed) {
        log_warn("store", "cursor %s=%lld saved after close; dropped", name, (long long)seq);
        return;
    }
    pending_cursor_t *pc = NULL;
    for (int i = 0; i < st->ncursors && !pc; i++)
        if (strcmp(st->cursors[i].name, name) == 0)
            pc = &st->cursors[i];
    if (!pc) {
        st->cursors = lab_realloc(st->cursors, (size_t)(st->ncursors + 1) * sizeof *st->cursors);
        pc = &st->cursors[st->ncursors++];
        pc->name = lab_strdup(name);
    }
    pc->seq = seq;
    pc->dirty = true;
    st->cursors_dirty = true;
    kick(st);
}

int64_t lab_store_newest_ts(lab_store_t *st)
{
    sqlite3_stmt *q = lab_store_stmt(lab_store_reader(st),
                                     "SELECT max(coalesce((SELECT max(ts_ms) FROM outbox), 0), "
                                     "coalesce((SELECT max(updated_ms) FROM runs), 0))");
    if (!q)
        return 0;
    int64_t v = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    return v;
}

/* ---- rebasing onto a history kept elsewhere ---- */

typedef struct rebase_op {
    lab_store_op_t op;
    lab_store_t *st;
    int64_t from, shift;
    lab_store_rebase_cb cb;
    void *arg;
} rebase_op_t;

static int rebase_apply(lab_store_op_t *op, sqlite3 *db)
{
    rebase_op_t *r = (rebase_op_t *)op;
    lab_conn_t *c = lab_conn_find(db);
    if (!c)
        return LAB_EINVAL;
    /* Through negative seqs: moving the keys up in place would collide with the rows not yet
     * moved. Rows keep their order and stay contiguous; what points at them moves with them;
     * a sink past `from` starts again from it, since the rows it had are under new seqs. */
    static const char *const steps[] = {
        "UPDATE outbox SET seq = -(seq + ?2) WHERE seq > ?1",
        "UPDATE outbox SET seq = -seq WHERE seq < 0",
        "UPDATE sqlite_sequence SET seq = max(seq, ?1) + ?2 WHERE name = 'outbox'",
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox', ?1 + ?2 "
        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox')",
        "UPDATE runs SET seq = seq + ?2 WHERE seq > ?1",
        "UPDATE workflows SET seq = seq + ?2 WHERE seq > ?1",
        "UPDATE sink_cursors SET seq = ?1 WHERE seq > ?1",
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        sqlite3_stmt *s = lab_store_stmt(db, steps[i]);
        if (!s)
            return LAB_EDB;
        if (sqlite3_bind_parameter_count(s) >= 2) {
            sqlite3_bind_int64(s, 1, r->from);
            sqlite3_bind_int64(s, 2, r->shift);
        }
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
            return lab_sqlite_fail(db, rc, "rebase outbox");
    }
    c->head = (c->head > r->from ? c->head : r->from) + r->shift;
    /* Cursors this group writes after its ops were taken before the move. */
    for (int i = 0; i < r->st->ngcursors; i++)
        if (r->st->gcursors[i].seq > r->from)
            r->st->gcursors[i].seq = r->from;
    return 0;
}

static void rebase_done(lab_store_op_t *op, int status)
{
    rebase_op_t *r = (rebase_op_t *)op;
    lab_store_t *st = r->st;
    st->rebasing = false;
    if (status == 0) {
        st->rebases++;
        st->rebase_from = r->from;
        st->rebase_onto = r->from + r->shift;
        st->open_head = st->rebase_onto;
        for (int i = 0; i < st->nsinks; i++)
            if (st->sinks[i].acked > r->from)
                st->sinks[i].acked = r->from;
        for (int i = 0; i < st->ncursors; i++)
            if (st->cursors[i].seq > r->from)
                st->cursors[i].seq = r->from;
        log_warn("store", "outbox rebased: rows after seq=%lld moved up by %lld, now from seq=%lld",
                 (long long)r->from, (long long)r->shift, (long long)(r->from + r->shift + 1));
    } else {
        log_error("store", "outbox rebase onto seq=%lld failed: %s",
                  (long long)(r->from + r->shift), lab_strerror(status));
    }
    if (r->cb)
        r->cb(r->arg, status);
    free(r);
}

int64_t lab_store_open_head(const lab_store_t *st)
{
    return st->open_head;
}

int lab_store_rebase(lab_store_t *st, int64_t onto, lab_store_rebase_cb cb, void *arg)
{
    if (onto <= st->open_head)
        return LAB_EINVAL;
    if (st->rebasing)
        return LAB_EBUSY;
    rebase_op_t *r = LAB_NEW(rebase_op_t);
    r->op.apply = rebase_apply;
    r->op.done = rebase_done;
    r->st = st;
    r->from = st->open_head;
    r->shift = onto - st->open_head;
    r->cb = cb;
    r->arg = arg;
    st->rebasing = true;
    lab_store_submit(st, &r->op);
    return 0;
}

int64_t lab_store_rebase_gen(const lab_store_t *st, int64_t *from)
{
    if (from)
        *from = st->rebases ? st->rebase_from : 0;
    return st->rebases;
}
