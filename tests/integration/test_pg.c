/* The PostgreSQL writer against a real cluster and a real local store: migrations (once, recorded,
 * safe when two start together), delivery exactly once, re-delivery from an older cursor, the
 * server going away and coming back, a hung server, poison rows, and draining at stop. The
 * writer runs on the test's own loop; one cluster serves every test, each test its own database
 * or cell. */
#include "core/cfg.h"
#include "core/embed.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/store/pg.h"
#include "daemon/store/store.h"
#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000

static h_pg_t g_pg;

/* ---- fixture: a loop, a store in a temp dir, a config, and the writer ---- */

typedef struct fx {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps the loop turning; its count shows the loop never stalled */
    long ticks;
    char dir[256];
    lab_store_t *st;
    lab_pg_t *pg;
    lab_config_t cfg;
    char conninfo[700];
    char db[32];
    int stopped;
} fx_t;

static void on_tick(uv_timer_t *t)
{
    ((fx_t *)t->data)->ticks++;
}

/* A database of its own, so each test starts from an empty schema. */
static void fx_db(fx_t *f, const char *db)
{
    char sql[128];
    snprintf(f->db, sizeof f->db, "%s", db);
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db);
    assert_int_equal(h_pg_query(&g_pg, sql, NULL, 0), 0);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    assert_int_equal(h_pg_query(&g_pg, sql, NULL, 0), 0);
    snprintf(f->conninfo, sizeof f->conninfo, "%s dbname=%s", g_pg.conninfo, db);
}

static fx_t *fx_new(const char *db, const char *cell)
{
    fx_t *f = LAB_NEW(fx_t);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    f->tick.data = f;
    uv_timer_start(&f->tick, on_tick, 10, 10);
    assert_int_equal(h_tempdir("labloop-pgtest", f->dir, sizeof f->dir), 0);
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->dir), 0);
    /* A sink that never acknowledges: nothing is pruned, so any cursor can be re-delivered. */
    assert_true(lab_store_sink_register(f->st, "hold") >= 0);
    if (db)
        fx_db(f, db);
    f->cfg.cell = (char *)cell;
    f->cfg.pg_enabled = true;
    f->cfg.pg_conninfo = f->conninfo;
    f->cfg.pg_connect_timeout_s = 5;
    f->cfg.pg_batch_rows = 500;
    f->cfg.pg_retry_max_s = 0.5;
    return f;
}

static void fx_start(fx_t *f)
{
    assert_int_equal(lab_pg_start(&f->pg, &f->loop, &f->cfg, f->st), 0);
}

static void on_stopped(void *arg)
{
    ((fx_t *)arg)->stopped++;
}

static void fx_wait_flag(fx_t *f, int *flag)
{
    long long deadline = h_now_ms() + WAIT_MS;
    while (!*flag && h_now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(*flag);
}

static void fx_stop_pg(fx_t *f, uint64_t grace_ms)
{
    if (!f->pg)
        return;
    f->stopped = 0;
    lab_pg_stop(f->pg, grace_ms, on_stopped, f);
    f->pg = NULL;
    fx_wait_flag(f, &f->stopped);
}

static void on_store_closed(void *arg)
{
    *(int *)arg = 1;
}

static void fx_free(fx_t *f)
{
    fx_stop_pg(f, 0);
    int closed = 0;
    lab_store_close(f->st, on_store_closed, &closed);
    fx_wait_flag(f, &closed);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    h_rmtree(f->dir);
    free(f);
}

static lab_sink_stats_t fx_stats(fx_t *f)
{
    lab_sink_stats_t s;
    lab_pg_stats(f->pg, &s);
    return s;
}

static int64_t fx_head(fx_t *f)
{
    lab_store_stats_t s;
    lab_store_stats(f->st, &s);
    return s.head_seq;
}

/* Runs the loop until the writer's cursor reaches the outbox head. */
static void fx_wait_caught_up(fx_t *f)
{
    long long deadline = h_now_ms() + WAIT_MS;
    while (fx_stats(f).cursor < fx_head(f) && h_now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(fx_stats(f).cursor, fx_head(f));
}

static void fx_wait_state(fx_t *f, lab_sink_state_t want)
{
    long long deadline = h_now_ms() + WAIT_MS;
    while (fx_stats(f).state != want && h_now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_string_equal(lab_sink_state_name(fx_stats(f).state), lab_sink_state_name(want));
}

/* The cluster, addressed at the fixture's database. */
static h_pg_t fx_h(const fx_t *f)
{
    h_pg_t t = g_pg;
    size_t n = strlen(f->conninfo);
    if (n >= sizeof t.conninfo)
        n = sizeof t.conninfo - 1;
    memcpy(t.conninfo, f->conninfo, n);
    t.conninfo[n] = '\0';
    return t;
}

/* A query against the fixture's database; the first column of the first row as a number. */
static long long fx_count(fx_t *f, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    h_pg_t tmp = fx_h(f);
    return h_pg_count(&tmp, sql);
}

/* ---- appending outbox rows through a store op ---- */

typedef struct append_op {
    lab_store_op_t op;
    int first, n;       /* runs first..first+n-1 */
    int changes;        /* "run.state" rows per run: queued, then running */
    const char **extra; /* raw payloads appended after the runs, NULL-terminated */
    int done, status;
} append_op_t;

static void run_id(int i, char out[37])
{
    snprintf(out, 37, "00000000-0000-4000-8000-%012d", i);
}

static int append_apply(lab_store_op_t *op, sqlite3 *db)
{
    static const char *const states[] = {"queued", "running", "done"};
    append_op_t *a = (append_op_t *)op;
    for (int i = a->first; i < a->first + a->n; i++) {
        for (int c = 0; c < a->changes; c++) {
            char id[37], doc[512];
            run_id(i, id);
            snprintf(doc, sizeof doc,
                     "{\"id\":\"%s\",\"state\":\"%s\",\"workflow\":\"elisa\","
                     "\"priority\":\"normal\",\"score\":%d.5,\"plate\":\"P%d\","
                     "\"created_at\":\"2026-11-22T10:00:00.000Z\","
                     "\"updated_at\":\"2026-11-22T10:00:0%d.000Z\",\"note\":\"a \\\"quoted\\\" "
                     "line\\nand a tab\\t\"}",
                     id, states[c], i, i, c);
            if (lab_outbox_append(db, "run.state", id, doc, 1795000000000LL + i) < 0)
                return LAB_EDB;
        }
    }
    for (const char **p = a->extra; p && *p; p++)
        if (lab_outbox_append(db, "run.state", "poison", *p, 1795000000000LL) < 0)
            return LAB_EDB;
    return 0;
}

static void append_done(lab_store_op_t *op, int status)
{
    append_op_t *a = (append_op_t *)op;
    a->status = status;
    a->done = 1;
}

static void fx_append(fx_t *f, int first, int n, int changes, const char **extra)
{
    append_op_t a = {.first = first, .n = n, .changes = changes, .extra = extra};
    a.op.apply = append_apply;
    a.op.done = append_done;
    lab_store_submit(f->st, &a.op);
    fx_wait_flag(f, &a.done);
    assert_int_equal(a.status, 0);
}

static int pg_migration_files(void)
{
    int n = 0;
    for (const lab_embedded_t *e = lab_embedded_files; e->name; e++)
        n += strncmp(e->name, "sql/postgres/", 13) == 0;
    return n;
}

/* ---- tests ---- */

static void test_migrations_once(void **state)
{
    /* Two writers (two cells, two stores) start on one empty database at the same moment. */
    fx_t *a = fx_new("mig", "cell-a");
    fx_t *b = fx_new(NULL, "cell-b");
    snprintf(b->conninfo, sizeof b->conninfo, "%s", a->conninfo);
    fx_start(a);
    fx_start(b);
    long long deadline = h_now_ms() + WAIT_MS;
    while ((fx_stats(a).state != LAB_SINK_UP || fx_stats(b).state != LAB_SINK_UP) &&
           h_now_ms() < deadline) {
        uv_run(&a->loop, UV_RUN_NOWAIT);
        uv_run(&b->loop, UV_RUN_NOWAIT);
        h_sleep_ms(1);
    }
    assert_int_equal(fx_stats(a).state, LAB_SINK_UP);
    assert_int_equal(fx_stats(b).state, LAB_SINK_UP);
    int files = pg_migration_files();
    assert_true(files >= 1);
    assert_int_equal(fx_count(a, "SELECT count(*) FROM labloop.schema_migrations"), files);
    assert_int_equal(fx_count(a, "SELECT count(DISTINCT version) FROM labloop.schema_migrations"),
                     files);
    assert_int_equal(fx_count(a, "SELECT count(*) FROM labloop.schema_migrations WHERE version = 1 "
                                 "AND name = '0001_init.sql'"),
                     1);
    for (const char *t = "sink_cursors\0events\0runs\0dead_letters\0"; *t; t += strlen(t) + 1)
        assert_int_equal(fx_count(a,
                                  "SELECT count(*) FROM pg_tables WHERE schemaname = "
                                  "'labloop' AND tablename = '%s'",
                                  t),
                         1);
    long long before = fx_count(a, "SELECT extract(epoch FROM max(applied_at))::bigint * 1000000 + "
                                   "extract(microseconds FROM max(applied_at))::bigint %% 1000000 "
                                   "FROM labloop.schema_migrations");
    fx_stop_pg(a, 1000);
    fx_stop_pg(b, 1000);

    /* Starting again applies nothing. */
    fx_start(a);
    fx_wait_state(a, LAB_SINK_UP);
    assert_int_equal(fx_count(a, "SELECT count(*) FROM labloop.schema_migrations"), files);
    assert_int_equal(fx_count(a, "SELECT extract(epoch FROM max(applied_at))::bigint * 1000000 + "
                                 "extract(microseconds FROM max(applied_at))::bigint %% 1000000 "
                                 "FROM labloop.schema_migrations"),
                     before);
    assert_int_equal(fx_stats(a).connects, 1);
    fx_free(a);
    fx_free(b);
}

static void test_delivery_exactly_once(void **state)
{
    enum { RUNS = 3000 };
    fx_t *f = fx_new("deliver", "cell-1");
    fx_start(f);
    fx_append(f, 0, RUNS, 2, NULL);
    long long t0 = h_now_ms();
    fx_wait_caught_up(f);
    long long ms = h_now_ms() - t0;
    fprintf(stderr, "delivered %d rows in %lld ms\n", 2 * RUNS, ms);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.events WHERE cell = 'cell-1'"),
                     2 * RUNS);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.runs"), RUNS);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.runs WHERE state = 'running' AND "
                                 "workflow = 'elisa' AND priority = 'normal' AND plate IS NOT NULL "
                                 "AND score > 0 AND updated_at > created_at"),
                     RUNS);
    assert_int_equal(fx_count(f, "SELECT seq FROM labloop.sink_cursors WHERE cell = 'cell-1' AND "
                                 "sink = 'postgres'"),
                     fx_head(f));
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.events WHERE payload->>'note' <> "
                                 "'a \"quoted\" line' || chr(10) || 'and a tab' || chr(9)"),
                     0);
    assert_int_equal(fx_stats(f).delivered, 2 * RUNS);

    /* Re-delivery from an older cursor (as after a restore, or a crash before the ack) must not
     * duplicate anything, nor let an older state overwrite a newer one. */
    fx_stop_pg(f, 1000);
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE labloop.sink_cursors SET seq = 1000 WHERE cell = 'cell-1'");
    h_pg_t tmp = fx_h(f);
    assert_int_equal(h_pg_query(&tmp, sql, NULL, 0), 0);
    fx_start(f);
    fx_wait_state(f, LAB_SINK_UP);
    assert_int_equal(fx_stats(f).cursor, 1000);
    fx_wait_caught_up(f);
    assert_int_equal(fx_stats(f).delivered, 2 * RUNS - 1000);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.events"), 2 * RUNS);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.runs WHERE state = 'running'"),
                     RUNS);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.dead_letters"), 0);
    fx_free(f);
}

static void test_cursor_moved_while_up(void **state)
{
    fx_t *f = fx_new("moved", "cell-c");
    fx_start(f);
    fx_append(f, 0, 100, 1, NULL);
    fx_wait_caught_up(f);
    /* An operator (or a restore) moves the cursor back under a running writer: it notices at
     * its next batch, reads the cursor again and re-delivers from there, duplicating nothing. */
    h_pg_t tmp = fx_h(f);
    assert_int_equal(h_pg_query(&tmp, "UPDATE labloop.sink_cursors SET seq = 10", NULL, 0), 0);
    fx_append(f, 100, 100, 1, NULL);
    long long deadline = h_now_ms() + WAIT_MS;
    while (fx_stats(f).connects < 2 && h_now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    fx_wait_caught_up(f);
    assert_true(fx_stats(f).connects >= 2);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.events"), 200);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.runs"), 200);
    assert_int_equal(fx_count(f, "SELECT seq FROM labloop.sink_cursors"), 200);
    fx_free(f);
}

static void test_server_down_and_back(void **state)
{
    fx_t *f = fx_new("down", "cell-d");
    f->cfg.pg_batch_rows = 200;
    fx_start(f);
    fx_append(f, 0, 500, 1, NULL);
    fx_wait_caught_up(f);

    /* Killed mid-stream: stop the server while batches are in flight. */
    fx_append(f, 500, 4000, 1, NULL);
    long long deadline = h_now_ms() + WAIT_MS;
    while (fx_stats(f).cursor == 500 && h_now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(h_pg_stop(&g_pg), 0);
    fx_wait_state(f, LAB_SINK_DOWN);
    assert_true(fx_stats(f).cursor < fx_head(f));

    /* While it is down, rows keep arriving and the loop keeps turning. */
    fx_append(f, 4500, 500, 1, NULL);
    long ticks = f->ticks;
    long long until = h_now_ms() + 700;
    while (h_now_ms() < until)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(f->ticks > ticks);
    assert_int_not_equal(fx_stats(f).state, LAB_SINK_UP);
    assert_non_null(fx_stats(f).last_error);
    assert_true(fx_stats(f).errors > 0);

    assert_int_equal(h_pg_restart(&g_pg), 0);
    fx_wait_caught_up(f);
    assert_int_equal(fx_head(f), 5000);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.events"), 5000);
    assert_int_equal(fx_count(f, "SELECT count(DISTINCT seq) FROM labloop.events"), 5000);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.runs"), 5000);
    assert_int_equal(fx_count(f, "SELECT min(seq) FROM labloop.events"), 1);
    assert_int_equal(fx_count(f, "SELECT max(seq) FROM labloop.events"), 5000);
    assert_true(fx_stats(f).connects >= 2);
    fx_free(f);
}

static void test_connect_timeout(void **state)
{
    /* A listening socket that is never accepted from stands for a hung server: the TCP connect
     * succeeds (the kernel's backlog) and the startup packet is never answered. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);

    fx_t *f = fx_new(NULL, "cell-t");
    snprintf(f->conninfo, sizeof f->conninfo,
             "host=127.0.0.1 port=%d dbname=x user=x sslmode=disable connect_timeout=0",
             ntohs(a.sin_port));
    f->cfg.pg_connect_timeout_s = 0.3;
    fx_start(f);
    fx_append(f, 0, 10, 1, NULL);
    long ticks = f->ticks;
    fx_wait_state(f, LAB_SINK_DOWN);
    assert_non_null(strstr(fx_stats(f).last_error, "no answer within"));
    assert_true(f->ticks > ticks);
    /* It keeps trying, with backoff. */
    long long deadline = h_now_ms() + WAIT_MS;
    while (fx_stats(f).errors < 3 && h_now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(fx_stats(f).errors >= 3);
    assert_int_equal(fx_stats(f).connects, 0);
    fx_free(f);
    close(fd);
}

static void test_bad_conninfo(void **state)
{
    fx_t *f = fx_new(NULL, "cell-x");
    snprintf(f->conninfo, sizeof f->conninfo, "host=/tmp port=5432 no_such_key=1");
    assert_int_equal(lab_pg_start(&f->pg, &f->loop, &f->cfg, f->st), LAB_ECONFIG);
    assert_null(f->pg);
    f->cfg.pg_enabled = false;
    assert_int_equal(lab_pg_start(&f->pg, &f->loop, &f->cfg, f->st), LAB_EINVAL);
    fx_free(f);
}

static void test_refused(void **state)
{
    fx_t *f = fx_new(NULL, "cell-r");
    snprintf(f->conninfo, sizeof f->conninfo, "host=127.0.0.1 port=%d dbname=x user=x",
             h_free_port());
    fx_start(f);
    fx_wait_state(f, LAB_SINK_DOWN);
    assert_non_null(fx_stats(f).last_error);
    /* Stopping a writer that is down finishes at once. */
    fx_free(f);
}

static void test_poison_rows(void **state)
{
    fx_t *f = fx_new("poison", "cell-p");
    /* Small batches, rows all there before the writer starts: the poisoned batch (1..8) fails
     * with the next one (9..16) already in flight behind it. */
    f->cfg.pg_batch_rows = 8;
    const char *bad[] = {"{not json", "{\"state\":\"queued\"}", "{\"id\":\"not-a-uuid\"}", NULL};
    fx_append(f, 0, 5, 1, bad);
    fx_append(f, 10, 10, 1, NULL);
    fx_start(f);
    fx_wait_caught_up(f);
    assert_int_equal(fx_head(f), 18);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.dead_letters"), 3);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.dead_letters WHERE seq IN "
                                 "(6, 7, 8) AND error <> '' AND kind = 'run.state' AND "
                                 "key = 'poison' AND cell = 'cell-p'"),
                     3);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.dead_letters WHERE "
                                 "convert_from(payload, 'UTF8') = '{not json'"),
                     1);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.runs"), 15);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.events"), 15);
    assert_int_equal(fx_count(f, "SELECT seq FROM labloop.sink_cursors WHERE cell = 'cell-p'"), 18);
    assert_int_equal(fx_stats(f).delivered, 15);
    assert_true(fx_stats(f).errors >= 3);
    assert_non_null(strstr(fx_stats(f).last_error, "rejected"));

    /* Rows after the poison still flow. */
    fx_append(f, 30, 5, 1, NULL);
    fx_wait_caught_up(f);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.runs"), 20);
    fx_free(f);
}

static void test_stop_drains(void **state)
{
    fx_t *f = fx_new("drain", "cell-s");
    fx_start(f);
    fx_wait_state(f, LAB_SINK_UP);
    fx_append(f, 0, 2000, 1, NULL);
    /* Stopped right after the rows committed: it drains them all before finishing. */
    fx_stop_pg(f, 20000);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.events"), 2000);
    assert_int_equal(fx_count(f, "SELECT seq FROM labloop.sink_cursors WHERE cell = 'cell-s'"),
                     2000);
    fx_free(f);
}

/* Not a check: a rough figure against a naive writer (one INSERT and one commit per row), printed
 * when LAB_PG_MEASURE is set. */
static void test_measure(void **state)
{
    if (!getenv("LAB_PG_MEASURE"))
        skip();
    enum { RUNS = 20000 };
    fx_t *f = fx_new("measure", "cell-m");
    f->cfg.pg_batch_rows = 2000;
    fx_start(f);
    fx_wait_state(f, LAB_SINK_UP);
    fx_append(f, 0, RUNS, 1, NULL);
    long long t0 = h_now_ms();
    fx_wait_caught_up(f);
    double writer_s = (h_now_ms() - t0) / 1000.0;

    lab_outbox_row_t *rows;
    t0 = h_now_ms();
    int n = lab_outbox_read(f->st, 0, RUNS, &rows);
    fprintf(stderr, "outbox read of %d rows: %lld ms\n", n, h_now_ms() - t0);
    assert_int_equal(n, RUNS);
    PGconn *c = PQconnectdb(f->conninfo);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "CREATE TABLE naive (cell text, seq bigint, ts timestamptz, kind text, "
                      "key text, payload jsonb, PRIMARY KEY (cell, seq))"));
    t0 = h_now_ms();
    for (int i = 0; i < n; i++) {
        char seq[24], ts[24];
        snprintf(seq, sizeof seq, "%lld", (long long)rows[i].seq);
        snprintf(ts, sizeof ts, "%lld", (long long)rows[i].ts_ms);
        const char *v[5] = {seq, ts, rows[i].kind, rows[i].key, rows[i].payload};
        PGresult *r = PQexecParams(c,
                                   "INSERT INTO naive VALUES ('m', $1, to_timestamp($2::bigint / "
                                   "1000.0), $3, $4, $5::jsonb)",
                                   5, NULL, v, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
    }
    double naive_s = (h_now_ms() - t0) / 1000.0;
    PQfinish(c);
    lab_outbox_rows_free(rows, n);
    fprintf(stderr,
            "{\"rows\":%d,\"writer_rows_per_s\":%.0f,\"naive_rows_per_s\":%.0f,\"ratio\":%.1f}\n",
            RUNS, RUNS / writer_s, RUNS / naive_s, naive_s / writer_s);
    fx_free(f);
}

/* ---- a state_dir wiped or restored between two lives of the cell ---- */

typedef struct meas_op {
    lab_store_op_t op;
    int life, first, n;
    int done, status;
} meas_op_t;

/* Measurements whose value names their life and index: life * 1000 + i. */
static int meas_apply(lab_store_op_t *op, sqlite3 *db)
{
    meas_op_t *m = (meas_op_t *)op;
    for (int i = m->first; i < m->first + m->n; i++) {
        char run[37], doc[400];
        run_id(m->life, run);
        snprintf(doc, sizeof doc,
                 "{\"run\":\"%s\",\"plate\":\"P%d\",\"step\":\"read\",\"instrument\":\"reader1\","
                 "\"well\":\"A%d\",\"measure\":\"absorbance\",\"value\":%d,\"unit\":\"AU\"}",
                 run, m->life, i, m->life * 1000 + i);
        if (lab_outbox_append(db, "measurement", run, doc, 1795000000000LL + i) < 0)
            return LAB_EDB;
    }
    return 0;
}

static void meas_done(lab_store_op_t *op, int status)
{
    meas_op_t *m = (meas_op_t *)op;
    m->status = status;
    m->done = 1;
}

static void fx_measure(fx_t *f, int life, int first, int n)
{
    meas_op_t m = {.life = life, .first = first, .n = n};
    m.op.apply = meas_apply;
    m.op.done = meas_done;
    lab_store_submit(f->st, &m.op);
    fx_wait_flag(f, &m.done);
    assert_int_equal(m.status, 0);
}

/* Stops the writer and closes the store; the directory stays. */
static void fx_store_close(fx_t *f)
{
    fx_stop_pg(f, 1000);
    int closed = 0;
    lab_store_close(f->st, on_store_closed, &closed);
    fx_wait_flag(f, &closed);
    f->st = NULL;
}

static void fx_store_open(fx_t *f, const char *dir)
{
    snprintf(f->dir, sizeof f->dir, "%s", dir);
    assert_int_equal(lab_store_open(&f->st, &f->loop, f->dir), 0);
    assert_true(lab_store_sink_register(f->st, "hold") >= 0);
}

/* Turns the loop until the count of measurements in PostgreSQL reaches want; returns the last. */
static long long fx_measurements_wait(fx_t *f, long long want)
{
    long long deadline = h_now_ms() + WAIT_MS, n;
    while ((n = fx_count(f, "SELECT count(*) FROM labloop.measurements")) != want &&
           h_now_ms() < deadline) {
        long long until = h_now_ms() + 20;
        while (h_now_ms() < until)
            uv_run(&f->loop, UV_RUN_ONCE);
    }
    return n;
}

/* Every measurement of life `life` (0..n-1) is in PostgreSQL exactly once with its value. */
static void assert_life(fx_t *f, int life, int n)
{
    assert_int_equal(fx_count(f,
                              "SELECT count(DISTINCT value) FROM labloop.measurements WHERE "
                              "cell = 'cell-r' AND value >= %d AND value < %d AND well = 'A' || "
                              "(value::int - %d)::text",
                              life * 1000, life * 1000 + n, life * 1000),
                     n);
}

static void test_reset_state_dir(void **state)
{
    enum { A = 120, B = 80, C = 60, D = 40, E = 30, F = 20 };
    fx_t *f = fx_new("rejoin", "cell-r");
    char dir1[256], backup[256], dir2[256], cmd[1024];
    snprintf(dir1, sizeof dir1, "%s", f->dir);

    /* Life 1: A delivered, then a backup of the state_dir, then B delivered. */
    fx_start(f);
    fx_measure(f, 1, 0, A);
    fx_wait_caught_up(f);
    fx_store_close(f);
    assert_int_equal(h_tempdir("labloop-pgbackup", backup, sizeof backup), 0);
    snprintf(cmd, sizeof cmd, "cp -a '%s/.' '%s/' && rm -f '%s/labloop.lock'", dir1, backup,
             backup);
    assert_int_equal(h_run(cmd, NULL, 0), 0);
    fx_store_open(f, dir1);
    fx_start(f);
    fx_measure(f, 1, A, B);
    fx_wait_caught_up(f);
    int64_t life1_head = fx_head(f);
    fx_store_close(f);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.measurements"), A + B);

    /* Life 2: a wiped state_dir. C is appended before PostgreSQL answers, D after. */
    assert_int_equal(h_tempdir("labloop-pgwiped", dir2, sizeof dir2), 0);
    fx_store_open(f, dir2);
    fx_measure(f, 2, 0, C);
    fx_start(f);
    fx_wait_state(f, LAB_SINK_UP);
    fx_measure(f, 2, C, D);
    h_pg_t h = fx_h(f);
    assert_int_equal(
        h_pg_count_wait(&h, "SELECT count(*) FROM labloop.measurements", A + B + C + D, WAIT_MS),
        A + B + C + D);
    fx_wait_caught_up(f);
    lab_store_stats_t ss;
    lab_store_stats(f->st, &ss);
    assert_int_equal(ss.rebases, 1);
    assert_int_equal(ss.rebase_onto, life1_head);
    assert_int_equal(ss.head_seq, life1_head + C + D);
    assert_life(f, 1, A + B);
    assert_life(f, 2, C + D);
    /* A restart of this life joins as usual: nothing moves. */
    fx_store_close(f);
    fx_store_open(f, dir2);
    fx_measure(f, 2, C + D, 1);
    fx_start(f);
    fx_wait_caught_up(f);
    lab_store_stats(f->st, &ss);
    assert_int_equal(ss.rebases, 0);
    int64_t life2_head = ss.head_seq;
    fx_store_close(f);
    h_rmtree(dir2);

    /* Life 3: the backup taken after A comes back: its seqs after A overlap B's, C's and D's. */
    fx_store_open(f, backup);
    fx_measure(f, 3, 0, E);
    fx_start(f);
    fx_measure(f, 3, E, F);
    assert_int_equal(fx_measurements_wait(f, A + B + C + D + 1 + E + F), A + B + C + D + 1 + E + F);
    fx_wait_caught_up(f);
    lab_store_stats(f->st, &ss);
    assert_int_equal(ss.rebases, 1);
    assert_int_equal(ss.rebase_onto, life2_head);
    assert_life(f, 1, A + B);
    assert_life(f, 2, C + D + 1);
    assert_life(f, 3, E + F);
    /* Nothing overwritten: every event row is the measurement it was written as. */
    assert_int_equal(fx_count(f,
                              "SELECT count(*) FROM labloop.events e JOIN labloop.measurements m "
                              "USING (cell, seq) WHERE (e.payload->>'value')::float8 <> m.value"),
                     0);
    assert_int_equal(fx_count(f, "SELECT count(*) FROM labloop.events"), A + B + C + D + 1 + E + F);
    fx_stop_pg(f, 1000);
    h_rmtree(dir1);
    fx_free(f); /* removes the backup, its last directory */
}

static int group_setup(void **state)
{
    return h_pg_start(&g_pg);
}

static int group_teardown(void **state)
{
    h_pg_destroy(&g_pg);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrations_once),
        cmocka_unit_test(test_delivery_exactly_once),
        cmocka_unit_test(test_poison_rows),
        cmocka_unit_test(test_stop_drains),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_bad_conninfo),
        cmocka_unit_test(test_cursor_moved_while_up),
        cmocka_unit_test(test_server_down_and_back),
        cmocka_unit_test(test_reset_state_dir),
        cmocka_unit_test(test_measure),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
