/* The local store against real SQLite files: migrations, group commit, acknowledgement after
 * commit, the outbox and its pruning, cursors, runs, idempotency, close, and a SIGKILL in the
 * middle of a stream of acknowledged inserts. Each test has its own directory under /tmp. */
#include "core/embed.h"
#include "core/err.h"
#include "core/id.h"
#include "core/mem.h"
#include "daemon/store/prompts.h"
#include "daemon/store/runs.h"
#include "daemon/store/store.h"

#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- fixture: a directory, a loop, a store, and a third connection for checking ---- */

typedef struct fx {
    char dir[64];
    char state[128];
    char dbpath[160];
    uv_loop_t loop;
    lab_store_t *st;
    sqlite3 *check; /* independent of the store: sees only what was committed */
} fx_t;

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void fx_open(fx_t *f)
{
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->state), 0);
    assert_non_null(f->st);
}

static void on_closed(void *arg)
{
    *(int *)arg = 1;
}

static void fx_close(fx_t *f)
{
    int closed = 0;
    lab_store_close(f->st, on_closed, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    f->st = NULL;
}

static int setup(void **state)
{
    fx_t *f = LAB_NEW(fx_t);
    snprintf(f->dir, sizeof f->dir, "/tmp/labloop-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    /* Two levels that do not exist yet: open must create both. */
    snprintf(f->state, sizeof f->state, "%s/var/state", f->dir);
    snprintf(f->dbpath, sizeof f->dbpath, "%s/labloop.db", f->state);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    if (f->st)
        fx_close(f);
    if (f->check)
        sqlite3_close_v2(f->check);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static sqlite3 *fx_check(fx_t *f)
{
    if (!f->check) {
        assert_int_equal(sqlite3_open_v2(f->dbpath, &f->check, SQLITE_OPEN_READWRITE, NULL),
                         SQLITE_OK);
        sqlite3_busy_timeout(f->check, 5000);
    }
    return f->check;
}

/* The first column of the first row, as an integer (-1 when there is no row). */
static int64_t q_int(sqlite3 *db, const char *fmt, ...)
{
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    int rc = sqlite3_step(s);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    assert_true(rc == SQLITE_ROW || rc == SQLITE_DONE);
    sqlite3_finalize(s);
    return v;
}

static int embedded_sqlite_migrations(void)
{
    int n = 0;
    for (const lab_embedded_t *e = lab_embedded_files; e->name; e++)
        n += strncmp(e->name, "sql/sqlite/", 11) == 0;
    return n;
}

/* ---- a test op: appends one "event" row keyed by its name, or fails after appending ---- */

typedef struct top {
    lab_store_op_t op;
    fx_t *f;
    char key[32];
    int fail;         /* apply returns this after its append */
    const char *exec; /* extra SQL run in apply */
    int status;
    int done;
    int64_t seq;
    int64_t seen_by_check; /* rows with this seq that the third connection saw in done */
} top_t;

static int top_apply(lab_store_op_t *op, sqlite3 *db)
{
    top_t *t = (top_t *)op;
    t->seq = lab_outbox_append(db, "event", t->key, "{\"v\":1}", 1000);
    if (t->seq < 0)
        return (int)t->seq;
    if (t->exec && sqlite3_exec(db, t->exec, NULL, NULL, NULL) != SQLITE_OK)
        return LAB_EDB;
    return t->fail;
}

static void top_done(lab_store_op_t *op, int status)
{
    top_t *t = (top_t *)op;
    t->status = status;
    t->done++;
    if (status == 0 && t->f)
        t->seen_by_check = q_int(fx_check(t->f), "SELECT count(*) FROM outbox WHERE seq = %lld",
                                 (long long)t->seq);
}

static void top_init(top_t *t, fx_t *f, const char *key)
{
    memset(t, 0, sizeof *t);
    t->op.apply = top_apply;
    t->op.done = top_done;
    t->f = f;
    snprintf(t->key, sizeof t->key, "%s", key);
    t->status = 1;
}

/* ---- migrations ---- */

static void test_open_migrates(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    struct stat sb;
    assert_int_equal(stat(f->state, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0027, 0); /* 0750: nothing for others, no group write */
    sqlite3 *db = fx_check(f);
    int n = embedded_sqlite_migrations();
    assert_true(n >= 1);
    assert_int_equal(q_int(db, "SELECT count(*) FROM schema_migrations"), n);
    assert_int_equal(q_int(db, "SELECT count(*) FROM schema_migrations WHERE version = 1 AND "
                               "name = '0001_init.sql' AND applied_at LIKE '20%%Z'"),
                     1);
    assert_int_equal(q_int(db, "SELECT count(*) FROM sqlite_master WHERE name IN "
                               "('outbox', 'runs', 'idempotency', 'sink_cursors', "
                               "'runs_state_n')"),
                     5);
    /* WAL mode is recorded in the file. */
    assert_int_equal(q_int(db, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = "
                               "'wal'"),
                     1);
    int64_t applied = q_int(db, "SELECT count(*) FROM schema_migrations");
    sqlite3_close_v2(f->check);
    f->check = NULL;
    fx_close(f);
    /* The writer closed last: it checkpointed and removed the WAL. */
    char wal[200];
    snprintf(wal, sizeof wal, "%s-wal", f->dbpath);
    assert_int_equal(access(wal, F_OK), -1);

    /* Reopening applies nothing twice. */
    db = fx_check(f);
    fx_open(f);
    assert_int_equal(q_int(db, "SELECT count(*) FROM schema_migrations"), applied);
    fx_close(f);
}

static void test_newer_schema_refused(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    fx_close(f);
    assert_int_equal(sqlite3_exec(fx_check(f),
                                  "INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', "
                                  "'2030-01-01T00:00:00.000Z')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    lab_store_t *st = (lab_store_t *)&st;
    assert_int_equal(lab_store_open(&st, &f->loop, f->state), LAB_ESTATE);
    assert_null(st);
}

static void test_open_bad_input(void **state)
{
    fx_t *f = *state;
    lab_store_t *st;
    assert_int_equal(lab_store_open(&st, &f->loop, ""), LAB_EINVAL);
    assert_null(st);
    char file[160];
    snprintf(file, sizeof file, "%s/plain", f->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(lab_store_open(&st, &f->loop, file), LAB_EIO);
    assert_null(st);

    /* Something that is not a database where labloop.db should be. */
    char sdir[96];
    snprintf(sdir, sizeof sdir, "%s/junk", f->dir);
    assert_int_equal(mkdir(sdir, 0750), 0);
    snprintf(file, sizeof file, "%s/labloop.db", sdir);
    fp = fopen(file, "w");
    assert_non_null(fp);
    for (int i = 0; i < 512; i++)
        fputs("not a database, ", fp);
    fclose(fp);
    assert_int_equal(lab_store_open(&st, &f->loop, sdir), LAB_EDB);
    assert_null(st);
    /* The refused open released its lock: a good database there opens now. */
    assert_int_equal(unlink(file), 0);
    assert_int_equal(lab_store_open(&st, &f->loop, sdir), 0);
    f->st = st;
}

/* ---- group commit ---- */

#define NOPS 1000

static void test_group_commit(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    fx_check(f);
    top_t *t = lab_calloc(NOPS, sizeof *t);
    for (int i = 0; i < NOPS; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%d", i);
        top_init(&t[i], f, key);
        lab_store_submit(f->st, &t[i].op);
    }
    lab_store_stats_t s0;
    lab_store_stats(f->st, &s0);
    assert_int_equal(s0.queued, NOPS - 1); /* the first one left at once */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    lab_store_stats_t s;
    lab_store_stats(f->st, &s);
    assert_int_equal(s.ops, NOPS);
    assert_int_equal(s.ops_failed, 0);
    assert_int_equal(s.queued, 0);
    assert_true(s.groups >= 1);
    assert_true(s.groups < NOPS / 10);
    for (int i = 0; i < NOPS; i++) {
        assert_int_equal(t[i].done, 1);
        assert_int_equal(t[i].status, 0);
        /* Acknowledged only after commit: another connection already saw the row in done. */
        assert_int_equal(t[i].seen_by_check, 1);
        /* Seqs follow submission order, one apart. */
        assert_int_equal(t[i].seq, t[0].seq + i);
    }
    assert_int_equal(t[0].seq, 1);
    assert_int_equal(s.head_seq, NOPS);
    free(t);
}

static void submit_n(fx_t *f, top_t *t, int n, const char *prefix);

/* Ops that done callbacks submit: a chain of 50, each submitting the next from its done. */
typedef struct chain {
    lab_store_op_t op;
    int left;
    int *completed;
    lab_store_t *st;
} chain_t;

static int chain_apply(lab_store_op_t *op, sqlite3 *db)
{
    return lab_outbox_append(db, "event", "chain", "{}", 1) > 0 ? 0 : LAB_EDB;
}

static void chain_done(lab_store_op_t *op, int status)
{
    chain_t *c = (chain_t *)op;
    assert_int_equal(status, 0);
    (*c->completed)++;
    if (--c->left > 0)
        lab_store_submit(c->st, &c->op);
}

static void test_group_cap_and_chains(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    /* 1 + 4096 + 4096 + 1807: a group never holds more than 4096 ops. */
    enum { N = 10000 };
    top_t *t = lab_calloc(N, sizeof *t);
    submit_n(f, t, N, "g");
    uv_run(&f->loop, UV_RUN_DEFAULT);
    lab_store_stats_t s;
    lab_store_stats(f->st, &s);
    assert_int_equal(s.ops, N);
    assert_int_equal(s.groups, 4);
    free(t);

    /* Two chains resubmitting from done: both links of a round share a group. */
    int completed = 0;
    chain_t a = {{.apply = chain_apply, .done = chain_done}, 50, &completed, f->st};
    chain_t b = {{.apply = chain_apply, .done = chain_done}, 50, &completed, f->st};
    lab_store_submit(f->st, &a.op);
    lab_store_submit(f->st, &b.op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(completed, 100);
    lab_store_stats_t s2;
    lab_store_stats(f->st, &s2);
    assert_int_equal(s2.groups - s.groups, 51);
    assert_int_equal(s2.head_seq, N + 100);
}

static void test_failing_op_alone(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    top_t block, a, b, c;
    top_init(&block, f, "block");
    top_init(&a, f, "a");
    top_init(&b, f, "b");
    top_init(&c, f, "c");
    b.fail = LAB_EINVAL;
    lab_store_submit(f->st, &block.op); /* in flight: a, b and c wait and form one group */
    lab_store_submit(f->st, &a.op);
    lab_store_submit(f->st, &b.op);
    lab_store_submit(f->st, &c.op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    lab_store_stats_t s;
    lab_store_stats(f->st, &s);
    assert_int_equal(s.groups, 2);
    assert_int_equal(s.ops, 3);
    assert_int_equal(s.ops_failed, 1);
    assert_int_equal(a.status, 0);
    assert_int_equal(b.status, LAB_EINVAL);
    assert_int_equal(c.status, 0);
    assert_int_equal(b.done, 1);
    sqlite3 *db = fx_check(f);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox WHERE key = 'b'"), 0);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox"), 3);
    /* b's seq was rolled back with it: no gap. */
    assert_int_equal(c.seq, a.seq + 1);
    assert_int_equal(s.head_seq, c.seq);
}

static void test_commit_failure(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    top_t ddl;
    top_init(&ddl, f, "ddl");
    ddl.exec = "CREATE TABLE p (id INTEGER PRIMARY KEY);"
               "CREATE TABLE c (pid INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED);";
    lab_store_submit(f->st, &ddl.op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(ddl.status, 0);

    /* A deferred foreign key makes COMMIT itself fail: every op of the group gets EDB. */
    top_t block, a, b, after;
    top_init(&block, f, "block");
    top_init(&a, f, "a");
    top_init(&b, f, "b");
    top_init(&after, f, "after");
    a.exec = "INSERT INTO c VALUES (42)";
    lab_store_submit(f->st, &block.op);
    lab_store_submit(f->st, &a.op);
    lab_store_submit(f->st, &b.op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(block.status, 0);
    assert_int_equal(a.status, LAB_EDB);
    assert_int_equal(b.status, LAB_EDB);
    lab_store_stats_t s;
    lab_store_stats(f->st, &s);
    assert_int_equal(s.head_seq, block.seq);
    assert_int_equal(s.ops_failed, 2);
    sqlite3 *db = fx_check(f);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox WHERE key IN ('a', 'b')"), 0);
    assert_int_equal(q_int(db, "SELECT count(*) FROM c"), 0);

    /* The writer recovered: the next group commits and the seqs go on without a gap. */
    lab_store_submit(f->st, &after.op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(after.status, 0);
    assert_int_equal(after.seq, block.seq + 1);
}

/* ---- the outbox ---- */

typedef struct listen {
    int calls;
    int64_t last;
    int64_t regressions;
} listen_t;

static void on_commit(void *ctx, int64_t head)
{
    listen_t *l = ctx;
    if (head <= l->last)
        l->regressions++;
    l->calls++;
    l->last = head;
}

static void submit_n(fx_t *f, top_t *t, int n, const char *prefix)
{
    for (int i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "%s%d", prefix, i);
        top_init(&t[i], NULL, key);
        lab_store_submit(f->st, &t[i].op);
    }
}

static void test_outbox_read_and_listeners(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    listen_t l = {0};
    lab_store_on_commit(f->st, on_commit, &l);
    enum { N = 250 };
    top_t t[N];
    submit_n(f, t, N, "r");
    uv_run(&f->loop, UV_RUN_DEFAULT);
    lab_store_stats_t s;
    lab_store_stats(f->st, &s);
    assert_true(l.calls >= 1 && l.calls <= s.groups);
    assert_int_equal(l.last, N);
    assert_int_equal(l.regressions, 0);

    int64_t after = 0;
    int total = 0, pages = 0;
    for (;;) {
        lab_outbox_row_t *rows;
        int n = lab_outbox_read(f->st, after, 64, &rows);
        assert_true(n >= 0);
        if (n == 0) {
            assert_null(rows);
            break;
        }
        pages++;
        for (int i = 0; i < n; i++) {
            assert_int_equal(rows[i].seq, after + 1);
            char key[32];
            snprintf(key, sizeof key, "r%d", total);
            assert_string_equal(rows[i].key, key);
            assert_string_equal(rows[i].kind, "event");
            assert_string_equal(rows[i].payload, "{\"v\":1}");
            assert_int_equal(rows[i].ts_ms, 1000);
            after = rows[i].seq;
            total++;
        }
        lab_outbox_rows_free(rows, n);
    }
    assert_int_equal(total, N);
    assert_int_equal(pages, 4);
    lab_outbox_row_t *rows;
    assert_int_equal(lab_outbox_read(f->st, 0, 0, &rows), LAB_EINVAL);

    /* A group that appends nothing (a cursor save) calls no listener. */
    int calls = l.calls;
    lab_store_cursor_save(f->st, "x", 5);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(l.calls, calls);
}

static void test_append_validation(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    sqlite3 *db = fx_check(f);
    assert_int_equal(lab_outbox_append(db, NULL, "k", "{}", 1), LAB_EINVAL);
    assert_int_equal(lab_outbox_append(db, "event", "k", NULL, 1), LAB_EINVAL);
    assert_int_equal(lab_outbox_append(NULL, "event", "k", "{}", 1), LAB_EINVAL);
    assert_null(lab_store_stmt(db, "SELECT 1")); /* not a store connection */
    assert_null(lab_store_stmt(lab_store_reader(f->st), "SELEKT"));
    assert_non_null(lab_outbox_kind_find("run.state"));
    assert_null(lab_outbox_kind_find("nope"));
}

/* ---- cursors ---- */

static void test_cursor_coalesce(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    assert_int_equal(lab_store_cursor_get(f->st, "mqtt"), 0);
    top_t block;
    top_init(&block, f, "block");
    lab_store_submit(f->st, &block.op);
    for (int i = 1; i <= 100; i++)
        lab_store_cursor_save(f->st, "mqtt", i);
    lab_store_cursor_save(f->st, "other", 7);
    assert_int_equal(lab_store_cursor_get(f->st, "mqtt"), 100);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    lab_store_stats_t s;
    lab_store_stats(f->st, &s);
    /* The op's group, then one group with only the newest values. */
    assert_int_equal(s.groups, 2);
    sqlite3 *db = fx_check(f);
    assert_int_equal(q_int(db, "SELECT seq FROM sink_cursors WHERE name = 'mqtt'"), 100);
    assert_int_equal(q_int(db, "SELECT seq FROM sink_cursors WHERE name = 'other'"), 7);
    lab_store_cursor_save(f->st, "mqtt", 120);
    fx_close(f);
    fx_open(f);
    assert_int_equal(lab_store_cursor_get(f->st, "mqtt"), 120);
    assert_int_equal(lab_store_cursor_get(f->st, "other"), 7);
    assert_int_equal(lab_store_cursor_get(f->st, "none"), 0);
}

/* ---- pruning ---- */

static void append_rows(fx_t *f, int n)
{
    top_t *t = lab_calloc((size_t)n, sizeof *t);
    submit_n(f, t, n, "p");
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < n; i++)
        assert_int_equal(t[i].status, 0);
    free(t);
}

static void test_prune(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    sqlite3 *db = fx_check(f);
    append_rows(f, 3000);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox"), 3000); /* no sink: no pruning */

    int pg = lab_store_sink_register(f->st, "pg");
    int mq = lab_store_sink_register(f->st, "mqtt");
    assert_true(pg >= 0 && mq >= 0 && pg != mq);
    assert_int_equal(lab_store_sink_register(f->st, "pg"), pg);
    assert_int_equal(lab_store_sink_register(f->st, ""), LAB_EINVAL);
    lab_store_sink_acked(f->st, pg, 2500);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox"), 3000); /* mqtt has nothing yet */

    lab_store_sink_acked(f->st, mq, 2000);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(q_int(db, "SELECT min(seq) FROM outbox"), 2001);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox"), 1000);

    /* Small advances wait for a batch... */
    lab_store_sink_acked(f->st, mq, 2100);
    lab_store_sink_acked(f->st, pg, 2100);
    lab_store_sink_acked(f->st, pg, 50); /* going back is ignored */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(q_int(db, "SELECT min(seq) FROM outbox"), 2001);
    /* ...or for the close. */
    fx_close(f);
    assert_int_equal(q_int(db, "SELECT min(seq) FROM outbox"), 2101);

    /* Seqs are never reused, even once every row is gone. */
    fx_open(f);
    pg = lab_store_sink_register(f->st, "pg");
    lab_store_sink_acked(f->st, pg, 3000);
    fx_close(f);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox"), 0);
    fx_open(f);
    top_t t;
    top_init(&t, f, "next");
    lab_store_submit(f->st, &t.op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(t.seq, 3001);
}

/* events_keep: rows every sink acknowledged stay while they are among the newest `keep`, at
 * close too, and a reader learns the oldest kept row with its rows. */
static void test_prune_keep(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    sqlite3 *db = fx_check(f);
    append_rows(f, 3000);
    int pg = lab_store_sink_register(f->st, "pg");
    lab_store_keep(f->st, 1500);
    lab_store_sink_acked(f->st, pg, 3000);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(q_int(db, "SELECT min(seq) FROM outbox"), 1501);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox"), 1500);
    lab_outbox_row_t *rows;
    int64_t oldest;
    assert_int_equal(lab_outbox_read_oldest(f->st, 0, 10, &rows, &oldest), 10);
    assert_int_equal(rows[0].seq, 1501);
    assert_int_equal(oldest, 1501);
    lab_outbox_rows_free(rows, 10);
    assert_int_equal(lab_outbox_read_oldest(f->st, 3000, 10, &rows, &oldest), 0);
    assert_int_equal(oldest, 0);
    fx_close(f);
    assert_int_equal(q_int(db, "SELECT min(seq) FROM outbox"), 1501);
    /* keep 0: pruned up to what the sinks acknowledged, as before. */
    fx_open(f);
    pg = lab_store_sink_register(f->st, "pg");
    lab_store_sink_acked(f->st, pg, 2999);
    fx_close(f);
    assert_int_equal(q_int(db, "SELECT min(seq) FROM outbox"), 3000);
}

/* ---- runs ---- */

typedef struct rdone {
    int calls;
    int status;
} rdone_t;

static rdone_t *run_done_slot;

static void run_done(lab_store_op_t *op, int status)
{
    lab_run_insert_t *ins = (lab_run_insert_t *)op;
    run_done_slot->calls++;
    run_done_slot->status = status;
    lab_run_insert_free(ins);
}

/* Inserts one run synchronously; returns the op's status. */
static int insert_run(fx_t *f, const char *id, const char *state, const char *ikey,
                      int64_t *seq_out)
{
    rdone_t d = {0};
    run_done_slot = &d;
    lab_run_insert_t *ins = lab_run_insert_new();
    ins->op.done = run_done;
    ins->id = lab_strdup(id);
    ins->state = lab_strdup(state);
    ins->doc = lab_asprintf("{\"id\":\"%s\",\"state\":\"%s\"}", id, state);
    ins->ts_ms = 1700000000000;
    if (ikey) {
        ins->idem_owner = lab_strdup("alice");
        ins->idem_key = lab_strdup(ikey);
        ins->idem_hash = lab_strdup("h1");
        ins->idem_status = 201;
    }
    lab_store_submit(f->st, &ins->op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(d.calls, 1);
    if (seq_out) {
        lab_store_stats_t s;
        lab_store_stats(f->st, &s);
        *seq_out = s.head_seq;
    }
    return d.status;
}

static void test_runs(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    char id[10][8];
    for (int i = 0; i < 10; i++) {
        snprintf(id[i], sizeof id[i], "run-%d", i);
        assert_int_equal(insert_run(f, id[i], i % 2 ? "running" : "queued", NULL, NULL), 0);
    }
    char *doc;
    assert_int_equal(lab_runs_get(f->st, "run-3", &doc), 0);
    assert_string_equal(doc, "{\"id\":\"run-3\",\"state\":\"running\"}");
    free(doc);
    assert_int_equal(lab_runs_get(f->st, "run-x", &doc), LAB_ENOTFOUND);
    assert_null(doc);
    assert_int_equal(lab_runs_count(f->st, NULL), 10);
    assert_int_equal(lab_runs_count(f->st, "queued"), 5);
    assert_int_equal(lab_runs_count(f->st, "done"), 0);

    /* Pages of 3 in submission order: 3, 3, 3, 1. */
    int64_t after = 0, next;
    int seen = 0, pages = 0;
    do {
        char **docs;
        int n = lab_runs_list(f->st, NULL, after, 3, &docs, &next);
        assert_true(n >= 1 && n <= 3);
        for (int i = 0; i < n; i++) {
            assert_non_null(strstr(docs[i], id[seen]));
            seen++;
            free(docs[i]);
        }
        free(docs);
        pages++;
        after = next;
    } while (next);
    assert_int_equal(seen, 10);
    assert_int_equal(pages, 4);

    /* A state filter, and a page that ends exactly at the last row. */
    char **docs;
    int n = lab_runs_list(f->st, "running", 0, 5, &docs, &next);
    assert_int_equal(n, 5);
    assert_int_equal(next, 0);
    for (int i = 0; i < n; i++) {
        assert_non_null(strstr(docs[i], "\"running\""));
        assert_non_null(strstr(docs[i], id[2 * i + 1]));
        free(docs[i]);
    }
    free(docs);
    n = lab_runs_list(f->st, "queued", 0, 2, &docs, &next);
    assert_int_equal(n, 2);
    assert_true(next > 0);
    for (int i = 0; i < n; i++)
        free(docs[i]);
    free(docs);
    n = lab_runs_list(f->st, "queued", next, 10, &docs, &next);
    assert_int_equal(n, 3);
    assert_non_null(strstr(docs[0], "run-4"));
    for (int i = 0; i < n; i++)
        free(docs[i]);
    free(docs);
    assert_int_equal(lab_runs_list(f->st, NULL, 0, 0, &docs, &next), LAB_EINVAL);

    /* Each insert appended its outbox row. */
    sqlite3 *db = fx_check(f);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox o JOIN runs r ON r.seq = o.seq AND "
                               "r.id = o.key WHERE o.kind = 'run.state' AND o.payload = r.doc"),
                     10);
}

/* Filters by plate, workflow and priority (columns read from the document, 0004), alone and
 * together, paged in both orders: every page holds only matches, in order, and the pages
 * together hold every match once. */
static void test_runs_filters(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    static const char *const plates[] = {"P0", "P1", "P2"};
    static const char *const wfs[] = {"elisa", "mix"};
    static const char *const prios[] = {NULL, "high", "low", "urgent"};
    enum { NRUNS = 24 };
    for (int i = 0; i < NRUNS; i++) {
        rdone_t d = {0};
        run_done_slot = &d;
        lab_run_insert_t *ins = lab_run_insert_new();
        ins->op.done = run_done;
        ins->id = lab_asprintf("f-%02d", i);
        ins->state = lab_strdup(i % 5 ? "queued" : "done");
        const char *pr = prios[i % 4];
        ins->doc = lab_asprintf("{\"id\":\"f-%02d\",\"plate\":\"%s\",\"workflow\":\"%s\"%s%s%s}", i,
                                plates[i % 3], wfs[i % 2], pr ? ",\"priority\":\"" : "",
                                pr ? pr : "", pr ? "\"" : "");
        ins->ts_ms = 1700000000000 + i;
        lab_store_submit(f->st, &ins->op);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(d.status, 0);
    }
    static const lab_runs_filter_t cases[] = {
        {.plate = "P1"},
        {.workflow = "mix"},
        {.priority = "normal"},
        {.priority = "high", .workflow = "mix"},
        {.plate = "P2", .workflow = "elisa", .state = "queued"},
        {.plate = "P9"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int newest = 0; newest < 2; newest++) {
            lab_runs_filter_t fl = cases[c];
            fl.newest_first = newest;
            bool want[NRUNS];
            int nwant = 0;
            for (int i = 0; i < NRUNS; i++) {
                const char *pr = prios[i % 4] ? prios[i % 4] : "normal";
                want[i] = (!fl.plate || strcmp(fl.plate, plates[i % 3]) == 0) &&
                          (!fl.workflow || strcmp(fl.workflow, wfs[i % 2]) == 0) &&
                          (!fl.priority || strcmp(fl.priority, pr) == 0) &&
                          (!fl.state || strcmp(fl.state, i % 5 ? "queued" : "done") == 0);
                nwant += want[i];
            }
            int64_t after = 0, next;
            int seen = 0, last = newest ? NRUNS : -1;
            do {
                char **docs;
                int n = lab_runs_find(f->st, &fl, after, 2, &docs, &next);
                assert_true(n >= 0 && n <= 2);
                for (int i = 0; i < n; i++) {
                    int k = atoi(strstr(docs[i], "f-") + 2);
                    assert_true(want[k]);
                    assert_true(newest ? k < last : k > last);
                    last = k;
                    seen++;
                    free(docs[i]);
                }
                free(docs);
                after = next;
            } while (next);
            assert_int_equal(seen, nwant);
        }
    }
    char **docs;
    int64_t next;
    lab_runs_filter_t none = {0};
    assert_int_equal(lab_runs_find(f->st, &none, -1, 2, &docs, &next), LAB_EINVAL);
    assert_int_equal(lab_runs_find(f->st, NULL, 0, 2, &docs, &next), LAB_EINVAL);
}

static void prompt_put(fx_t *f, const char *id, const char *doc, int64_t ts)
{
    json_t *d = json_loads(doc, 0, NULL);
    assert_non_null(d);
    lab_prompt_submit(f->st, id, d, ts);
    json_decref(d);
    uv_run(&f->loop, UV_RUN_DEFAULT);
}

static int64_t prompt_rows(fx_t *f)
{
    return q_int(fx_check(f), "SELECT count(*) FROM outbox WHERE kind = 'prompt'");
}

/* Prompts: an opening and an answer are one row each; opening what is open, or answering what is
 * not, writes nothing; an answer carries the opening's fields; the open ones newest first. */
static void test_prompts(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    prompt_put(f, "move:m1", "{\"open\":true,\"kind\":\"move\",\"title\":\"Move plate P1\"}",
               1700000001000);
    assert_int_equal(prompt_rows(f), 1);
    prompt_put(f, "move:m1", "{\"open\":true,\"kind\":\"move\",\"title\":\"again\"}",
               1700000002000);
    prompt_put(f, "run:r1:paused", "{\"open\":false,\"by\":\"ann\",\"how\":\"skip\"}",
               1700000002000);
    assert_int_equal(prompt_rows(f), 1);
    prompt_put(f, "instrument:i1:fault",
               "{\"open\":true,\"kind\":\"instrument.fault\",\"title\":\"i1 in fault\"}",
               1700000003000);
    json_t *open = NULL;
    assert_int_equal(lab_prompts_open(f->st, &open), 0);
    assert_int_equal(json_array_size(open), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(open, 0), "id")),
                        "instrument:i1:fault");
    assert_string_equal(json_string_value(json_object_get(json_array_get(open, 1), "title")),
                        "Move plate P1");
    assert_string_equal(json_string_value(json_object_get(json_array_get(open, 1), "opened_at")),
                        "2023-11-14T22:13:21.000Z");
    json_decref(open);

    prompt_put(f, "move:m1", "{\"open\":false,\"by\":\"ann\",\"how\":\"confirm\"}", 1700000004000);
    assert_int_equal(prompt_rows(f), 3);
    sqlite3 *db = fx_check(f);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox WHERE kind = 'prompt' AND key = "
                               "'move:m1' AND json_extract(payload, '$.open') = 0 AND "
                               "json_extract(payload, '$.by') = 'ann' AND json_extract(payload, "
                               "'$.how') = 'confirm' AND json_extract(payload, '$.title') = "
                               "'Move plate P1' AND json_extract(payload, '$.closed_at') IS NOT "
                               "NULL"),
                     1);
    lab_prompts_close_prefix(f->st, "instrument:", "restart", 1700000005000);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(prompt_rows(f), 4);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox WHERE key = 'instrument:i1:fault' AND "
                               "json_extract(payload, '$.how') = 'restart' AND "
                               "json_extract(payload, '$.by') IS NULL"),
                     1);
    assert_int_equal(lab_prompts_open(f->st, &open), 0);
    assert_int_equal(json_array_size(open), 0);
    json_decref(open);
    /* The same id opens again: a new opening, listed again. */
    prompt_put(f, "move:m1", "{\"open\":true,\"kind\":\"move\",\"title\":\"Move plate P2\"}",
               1700000006000);
    assert_int_equal(prompt_rows(f), 5);
    assert_int_equal(lab_prompts_open(f->st, &open), 0);
    assert_int_equal(json_array_size(open), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(open, 0), "title")),
                        "Move plate P2");
    json_decref(open);
}

static void test_idempotency(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    int64_t seq;
    assert_int_equal(insert_run(f, "r1", "queued", "key-1", &seq), 0);
    char *hash, *body;
    int status;
    assert_int_equal(lab_idem_get(f->st, "alice", "key-1", &hash, &status, &body), 0);
    assert_string_equal(hash, "h1");
    assert_int_equal(status, 201);
    assert_string_equal(body, "{\"id\":\"r1\",\"state\":\"queued\"}");
    free(hash);
    free(body);
    assert_int_equal(lab_idem_get(f->st, "bob", "key-1", &hash, &status, &body), LAB_ENOTFOUND);
    assert_null(hash);
    assert_null(body);

    /* The same key again: conflict, and nothing of the second run is kept. */
    int64_t seq2;
    assert_int_equal(insert_run(f, "r2", "queued", "key-1", &seq2), LAB_ECONFLICT);
    assert_int_equal(seq2, seq);
    char *doc;
    assert_int_equal(lab_runs_get(f->st, "r2", &doc), LAB_ENOTFOUND);
    /* The same run id: exists. */
    assert_int_equal(insert_run(f, "r1", "queued", "key-2", &seq2), LAB_EEXIST);
    assert_int_equal(seq2, seq);
    assert_int_equal(lab_idem_get(f->st, "alice", "key-2", &hash, &status, &body), LAB_ENOTFOUND);
    /* Missing inputs. */
    assert_int_equal(insert_run(f, "r3", "queued", NULL, NULL), 0);
    rdone_t d = {0};
    run_done_slot = &d;
    lab_run_insert_t *ins = lab_run_insert_new();
    ins->op.done = run_done;
    lab_store_submit(f->st, &ins->op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(d.status, LAB_EINVAL);
    lab_store_stats_t s;
    lab_store_stats(f->st, &s);
    assert_int_equal(s.ops_failed, 3);
    assert_int_equal(lab_runs_count(f->st, NULL), 2);
}

static void upd_done(lab_store_op_t *op, int status)
{
    run_done_slot->calls++;
    run_done_slot->status = status;
    lab_run_update_free((lab_run_update_t *)op);
}

static int update_run(fx_t *f, const char *id, const char *from, const char *to, const char *ikey)
{
    rdone_t d = {0};
    run_done_slot = &d;
    lab_run_update_t *upd = lab_run_update_new();
    upd->op.done = upd_done;
    upd->id = lab_strdup(id);
    upd->state = lab_strdup(to);
    upd->from = from ? lab_strdup(from) : NULL;
    upd->doc = lab_asprintf("{\"id\":\"%s\",\"state\":\"%s\"}", id, to);
    upd->ts_ms = 1700000005000;
    if (ikey) {
        upd->idem_owner = lab_strdup("alice");
        upd->idem_key = lab_strdup(ikey);
        upd->idem_hash = lab_strdup("h2");
        upd->idem_status = 200;
    }
    lab_store_submit(f->st, &upd->op);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(d.calls, 1);
    return d.status;
}

static void test_run_update(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    assert_int_equal(insert_run(f, "u1", "queued", NULL, NULL), 0);
    assert_int_equal(insert_run(f, "u2", "queued", NULL, NULL), 0);
    assert_int_equal(update_run(f, "u1", "queued", "cancelled", "cancel-1"), 0);
    /* The run moved on: a change that expects "queued" is refused, and nothing is kept. */
    lab_store_stats_t s0, s1;
    lab_store_stats(f->st, &s0);
    assert_int_equal(update_run(f, "u1", "queued", "running", NULL), LAB_ESTATE);
    assert_int_equal(update_run(f, "nope", NULL, "running", NULL), LAB_ENOTFOUND);
    assert_int_equal(update_run(f, "u2", NULL, "running", "cancel-1"), LAB_ECONFLICT);
    lab_store_stats(f->st, &s1);
    assert_int_equal(s1.head_seq, s0.head_seq);

    char *doc;
    assert_int_equal(lab_runs_get(f->st, "u1", &doc), 0);
    assert_string_equal(doc, "{\"id\":\"u1\",\"state\":\"cancelled\"}");
    free(doc);
    assert_int_equal(lab_runs_get(f->st, "u2", &doc), 0);
    assert_string_equal(doc, "{\"id\":\"u2\",\"state\":\"queued\"}");
    free(doc);
    assert_int_equal(lab_runs_count(f->st, "queued"), 1);
    assert_int_equal(lab_runs_count(f->st, "cancelled"), 1);
    sqlite3 *db = fx_check(f);
    assert_int_equal(q_int(db, "SELECT count(*) FROM outbox WHERE key = 'u1'"), 2);
    assert_int_equal(q_int(db, "SELECT seq FROM runs WHERE id = 'u1'"), s0.head_seq);
    assert_int_equal(q_int(db, "SELECT updated_ms - created_ms FROM runs WHERE id = 'u1'"), 5000);
    char *hash, *body;
    int status;
    assert_int_equal(lab_idem_get(f->st, "alice", "cancel-1", &hash, &status, &body), 0);
    assert_int_equal(status, 200);
    assert_string_equal(body, "{\"id\":\"u1\",\"state\":\"cancelled\"}");
    free(hash);
    free(body);
}

/* ---- one process per state_dir ---- */

static void test_state_dir_locked(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    lab_store_t *other;
    assert_int_equal(lab_store_open(&other, &f->loop, f->state), LAB_EBUSY);
    assert_null(other);
    fx_close(f);
    fx_open(f);
}

/* ---- close ---- */

static void test_close(void **state)
{
    fx_t *f = *state;
    fx_open(f);
    enum { N = 300 };
    top_t t[N], late;
    submit_n(f, t, N, "c");
    int closed = 0;
    lab_store_close(f->st, on_closed, &closed);
    assert_int_equal(closed, 0); /* never called back from inside close */
    top_init(&late, NULL, "late");
    lab_store_submit(f->st, &late.op);
    assert_int_equal(late.done, 0); /* never called back from inside submit */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    f->st = NULL;
    assert_int_equal(late.done, 1);
    assert_int_equal(late.status, LAB_ESHUTDOWN);
    for (int i = 0; i < N; i++)
        assert_int_equal(t[i].status, 0);

    /* Reopening keeps everything. */
    fx_open(f);
    lab_store_stats_t s;
    lab_store_stats(f->st, &s);
    assert_int_equal(s.head_seq, N);
    lab_outbox_row_t *rows;
    int n = lab_outbox_read(f->st, 0, 1000, &rows);
    assert_int_equal(n, N);
    assert_string_equal(rows[N - 1].key, "c299");
    lab_outbox_rows_free(rows, n);
}

/* ---- SIGKILL in the middle of acknowledged inserts ---- */

#define INFLIGHT 64
#define WANT_ACKED 600

static int crash_pipe = -1;
static lab_store_t *crash_st;

static void crash_submit(void);

static void crash_done(lab_store_op_t *op, int status)
{
    lab_run_insert_t *ins = (lab_run_insert_t *)op;
    if (status == 0) {
        char line[64];
        int len = snprintf(line, sizeof line, "%s\n", ins->id);
        if (write(crash_pipe, line, (size_t)len) != len)
            _exit(3);
    }
    lab_run_insert_free(ins);
    crash_submit();
}

static void crash_submit(void)
{
    char id[LAB_UUID_LEN + 1];
    lab_uuid4(id);
    lab_run_insert_t *ins = lab_run_insert_new();
    ins->op.done = crash_done;
    ins->id = lab_strdup(id);
    ins->state = lab_strdup("queued");
    ins->doc = lab_asprintf("{\"id\":\"%s\",\"state\":\"queued\"}", id);
    ins->ts_ms = 1700000000000;
    lab_store_submit(crash_st, &ins->op);
}

static void crash_child(const char *state_dir, int fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    crash_pipe = fd;
    uv_loop_t loop;
    if (uv_loop_init(&loop) || lab_store_open(&crash_st, &loop, state_dir))
        _exit(2);
    for (int i = 0; i < INFLIGHT; i++)
        crash_submit();
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(4);
}

/* Runs a child that inserts runs into state_dir until WANT_ACKED were acknowledged, SIGKILLs
 * it, and appends every id it acknowledged to *buf. */
static void crash_round(const char *state_dir, char **buf, size_t *len, size_t *cap)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        crash_child(state_dir, fds[1]);
    }
    close(fds[1]);
    int lines = 0;
    /* A generous deadline for the child to acknowledge enough inserts. */
    for (int waited = 0; lines < WANT_ACKED && waited < 60000;) {
        struct pollfd p = {fds[0], POLLIN, 0};
        int r = poll(&p, 1, 1000);
        if (r == 0) {
            waited += 1000;
            continue;
        }
        if (*len + 4096 > *cap)
            *buf = lab_realloc(*buf, *cap *= 2);
        ssize_t n = read(fds[0], *buf + *len, 4096);
        assert_true(n > 0);
        for (ssize_t i = 0; i < n; i++)
            lines += (*buf)[*len + (size_t)i] == '\n';
        *len += (size_t)n;
    }
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* Whatever the child acknowledged before it died is in the pipe too. */
    ssize_t n;
    do {
        if (*len + 4096 > *cap)
            *buf = lab_realloc(*buf, *cap *= 2);
        n = read(fds[0], *buf + *len, 4096);
        if (n > 0)
            *len += (size_t)n;
    } while (n > 0);
    close(fds[0]);
    assert_true(lines >= WANT_ACKED);
}

static void test_crash_keeps_acked(void **state)
{
    fx_t *f = *state;
    size_t cap = 1 << 16, len = 0;
    char *buf = lab_malloc(cap);
    /* The second child starts from the database the first left when it was killed. */
    crash_round(f->state, &buf, &len, &cap);
    crash_round(f->state, &buf, &len, &cap);

    fx_open(f);
    sqlite3 *db = fx_check(f);
    int checked = 0;
    for (char *line = buf, *nl; (nl = memchr(line, '\n', len - (size_t)(line - buf)));
         line = nl + 1) {
        *nl = '\0';
        char *doc;
        assert_int_equal(lab_runs_get(f->st, line, &doc), 0);
        assert_non_null(strstr(doc, line));
        free(doc);
        assert_int_equal(q_int(db,
                               "SELECT count(*) FROM outbox WHERE kind = 'run.state' AND key = "
                               "'%s'",
                               line),
                         1);
        checked++;
    }
    assert_true(checked >= 2 * WANT_ACKED);
    /* And the store goes on from the recovered head. */
    lab_store_stats_t s;
    lab_store_stats(f->st, &s);
    assert_int_equal(s.head_seq, q_int(db, "SELECT max(seq) FROM outbox"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_migrates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_cap_and_chains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_op_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_read_and_listeners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_coalesce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prune_keep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prompts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_dir_locked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_keeps_acked, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
