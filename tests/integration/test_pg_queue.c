/* The lab's queue in PostgreSQL (schemas/sql/postgres/0006_lab.sql) against a real cluster: the
 * database's run check agrees with core/jschema.c on a corpus of documents at the limits;
 * submissions are idempotent under racing connections and all-or-nothing in batches; claims from
 * several connections at once never hand a run out twice and follow the order; capabilities,
 * pins, heartbeat expiry, the fence, cancelling, and the writer's labloop.runs rows (only the
 * holder's apply; a done run ends its queue row). The schema is set up by the real writer
 * (daemon/store/pg.c), which also stores the JSON Schemas. Leases are 1 s and every wait is on a
 * condition. */
#include "core/cfg.h"
#include "core/embed.h"
#include "core/err.h"
#include "core/jschema.h"
#include "core/mem.h"
#include "daemon/store/pg.h"
#include "daemon/store/store.h"
#include "tests/harness/harness.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define WAIT_MS 30000

static h_pg_t g_pg;

/* ---- libpq helpers: every call on its own connection, failing the test on an error ---- */

static PGconn *db_open(void)
{
    PGconn *c = PQconnectdb(g_pg.conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect: %s", PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

/* Runs sql with text parameters (NULL entries are SQL NULL); the result when it succeeded. */
static PGresult *db_try(PGconn *c, const char *sql, int n, const char *const *params)
{
    return PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
}

static PGresult *db_ok(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = db_try(c, sql, n, params);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    return r;
}

static void db_ok_clear(PGconn *c, const char *sql, int n, const char *const *params)
{
    PQclear(db_ok(c, sql, n, params));
}

static void db_exec(PGconn *c, const char *sql)
{
    PQclear(db_ok(c, sql, 0, NULL));
}

/* The first column of the first row, copied into out ("" when NULL or no row). */
static char *db_one(PGconn *c, char *out, size_t len, const char *sql, int n,
                    const char *const *params)
{
    PGresult *r = db_ok(c, sql, n, params);
    snprintf(out, len, "%s", PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return out;
}

static long long db_count(PGconn *c, const char *sql, int n, const char *const *params)
{
    char v[64];
    return strtoll(db_one(c, v, sizeof v, sql, n, params), NULL, 10);
}

/* Runs sql expecting it to fail with sqlstate; the error's primary message and detail. */
static void db_fails(PGconn *c, const char *sql, int n, const char *const *params,
                     const char *sqlstate, char *msg, size_t msglen, char *detail, size_t dlen)
{
    PGresult *r = db_try(c, sql, n, params);
    if (PQresultStatus(r) != PGRES_FATAL_ERROR)
        fail_msg("%s: expected SQLSTATE %s, got %s", sql, sqlstate, PQresStatus(PQresultStatus(r)));
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!st || strcmp(st, sqlstate) != 0)
        fail_msg("%s: expected SQLSTATE %s, got %s: %s", sql, sqlstate, st ? st : "?",
                 PQresultErrorMessage(r));
    const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *d = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    if (msg)
        snprintf(msg, msglen, "%s", m ? m : "");
    if (detail)
        snprintf(detail, dlen, "%s", d ? d : "");
    PQclear(r);
    /* A failed statement outside a transaction block leaves nothing to roll back; inside one
     * the caller decides. */
}

/* Waits for a notification on channel (LISTENed on c) with this payload. */
static void wait_notify(PGconn *c, const char *channel, const char *payload)
{
    long long deadline = h_now_ms() + WAIT_MS;
    PGnotify *nt = NULL;
    while (!nt && h_now_ms() < deadline) {
        PQconsumeInput(c);
        if (!(nt = PQnotifies(c)))
            h_sleep_ms(20);
    }
    assert_non_null(nt);
    assert_string_equal(nt->relname, channel);
    assert_string_equal(nt->extra, payload);
    PQfreemem(nt);
}

static void reset_queue(PGconn *c)
{
    db_exec(c, "TRUNCATE labloop.queue, labloop.cells");
}

/* A cell's heartbeat: kinds as a JSON array text, instrument ids too. Returns released. */
static long long heartbeat(PGconn *c, const char *cell, const char *kinds, const char *ids,
                           const char *lease, const char *state)
{
    char caps[512];
    snprintf(caps, sizeof caps, "{\"kinds\": %s, \"instruments\": %s, \"window\": 8}", kinds,
             ids ? ids : "[]");
    const char *p[4] = {cell, caps, lease, state};
    return db_count(c,
                    "SELECT released FROM labloop.cell_heartbeat($1, 'site1', $2::jsonb, "
                    "'{}'::jsonb, NULL, $3::float8, $4)",
                    4, p);
}

static void submit(PGconn *c, const char *doc, const char *key, char *id, size_t len)
{
    const char *p[2] = {doc, key};
    db_one(c, id, len, "SELECT labloop.submit_run($1::jsonb, $2)", 2, p);
    assert_int_equal(strlen(id), 36);
}

/* BEGIN; claim_runs; COMMIT: the ids claimed, in the order returned (a NULL-separated list). */
static int claim(PGconn *c, const char *cell, int n, char ids[][37], int max)
{
    char nt[16];
    snprintf(nt, sizeof nt, "%d", n);
    const char *p[2] = {cell, nt};
    db_exec(c, "BEGIN");
    PGresult *r = db_ok(c, "SELECT id FROM labloop.claim_runs($1, $2::int)", 2, p);
    int got = PQntuples(r);
    assert_true(got <= n && got <= max);
    for (int i = 0; i < got; i++)
        snprintf(ids[i], 37, "%s", PQgetvalue(r, i, 0));
    PQclear(r);
    db_exec(c, "COMMIT");
    return got;
}

static bool start_run(PGconn *c, const char *id, const char *cell)
{
    char v[8];
    const char *p[2] = {id, cell};
    return strcmp(db_one(c, v, sizeof v, "SELECT labloop.start_run($1::uuid, $2)", 2, p), "t") == 0;
}

static void queue_state(PGconn *c, const char *id, char *state, size_t len)
{
    const char *p[1] = {id};
    db_one(c, state, len,
           "SELECT state || coalesce(':' || cell, '') FROM labloop.queue WHERE id = $1::uuid", 1,
           p);
}

/* ---- a writer (daemon/store/pg.c) for one cell on its own loop and store ---- */

typedef struct wr {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps uv_run(ONCE) returning */
    char dir[256];
    lab_store_t *st;
    lab_pg_t *pg;
    lab_config_t cfg;
    int flag;
} wr_t;

static void on_tick(uv_timer_t *t)
{
}

static void wr_run_until(wr_t *w, int *flag)
{
    long long deadline = h_now_ms() + WAIT_MS;
    while (!*flag && h_now_ms() < deadline)
        uv_run(&w->loop, UV_RUN_ONCE);
    assert_true(*flag);
}

static void wr_wait_up(wr_t *w)
{
    long long deadline = h_now_ms() + WAIT_MS;
    lab_sink_stats_t s;
    do {
        uv_run(&w->loop, UV_RUN_ONCE);
        lab_pg_stats(w->pg, &s);
    } while (s.state != LAB_SINK_UP && h_now_ms() < deadline);
    assert_int_equal(s.state, LAB_SINK_UP);
}

static wr_t *wr_new(const char *cell)
{
    wr_t *w = LAB_NEW(wr_t);
    assert_int_equal(uv_loop_init(&w->loop), 0);
    uv_timer_init(&w->loop, &w->tick);
    uv_timer_start(&w->tick, on_tick, 10, 10);
    assert_int_equal(h_tempdir("labloop-pgq", w->dir, sizeof w->dir), 0);
    assert_int_equal(lab_store_open(&w->st, &w->loop, w->dir), 0);
    w->cfg.cell = lab_strdup(cell);
    w->cfg.pg_enabled = true;
    w->cfg.pg_conninfo = g_pg.conninfo;
    w->cfg.pg_connect_timeout_s = 5;
    w->cfg.pg_batch_rows = 500;
    w->cfg.pg_retry_max_s = 0.5;
    assert_int_equal(lab_pg_start(&w->pg, &w->loop, &w->cfg, w->st), 0);
    wr_wait_up(w);
    return w;
}

static void on_flag(void *arg)
{
    *(int *)arg = 1;
}

static void wr_free(wr_t *w)
{
    w->flag = 0;
    lab_pg_stop(w->pg, 1000, on_flag, &w->flag);
    wr_run_until(w, &w->flag);
    w->flag = 0;
    lab_store_close(w->st, on_flag, &w->flag);
    wr_run_until(w, &w->flag);
    uv_close((uv_handle_t *)&w->tick, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&w->loop), 0);
    h_rmtree(w->dir);
    free(w->cfg.cell);
    free(w);
}

typedef struct append_op {
    lab_store_op_t op;
    const char *kind, *key, *payload;
    int status, done;
} append_op_t;

static int append_apply(lab_store_op_t *op, sqlite3 *db)
{
    append_op_t *a = (append_op_t *)op;
    return lab_outbox_append(db, a->kind, a->key, a->payload, 1795000000000LL) < 0 ? LAB_EDB : 0;
}

static void append_done(lab_store_op_t *op, int status)
{
    append_op_t *a = (append_op_t *)op;
    a->status = status;
    a->done = 1;
}

/* A run.state row of run id in state, through this cell's outbox; returns once PostgreSQL has it
 * in labloop.events (whatever labloop.runs made of it). */
static void wr_run_state(wr_t *w, PGconn *c, const char *id, const char *state)
{
    char doc[256];
    snprintf(doc, sizeof doc, "{\"id\": \"%s\", \"state\": \"%s\", \"workflow\": \"elisa\"}", id,
             state);
    append_op_t a = {.kind = "run.state", .key = id, .payload = doc};
    a.op.apply = append_apply;
    a.op.done = append_done;
    lab_store_submit(w->st, &a.op);
    wr_run_until(w, &a.done);
    assert_int_equal(a.status, 0);
    const char *p[3] = {w->cfg.cell, id, state};
    long long deadline = h_now_ms() + WAIT_MS;
    while (db_count(c,
                    "SELECT count(*) FROM labloop.events WHERE cell = $1 AND key = $2 AND "
                    "payload->>'state' = $3",
                    3, p) != 1 &&
           h_now_ms() < deadline) {
        for (int i = 0; i < 5; i++)
            uv_run(&w->loop, UV_RUN_ONCE);
    }
    assert_int_equal(db_count(c,
                              "SELECT count(*) FROM labloop.events WHERE cell = $1 AND key = $2 "
                              "AND payload->>'state' = $3",
                              3, p),
                     1);
}

/* ---- the JSON Schemas the writer stored ---- */

static void test_schemas_stored(void **state)
{
    PGconn *c = db_open();
    int n = 0;
    for (const lab_embedded_t *f = lab_embedded_files; f->name; f++) {
        size_t len = strlen(f->name);
        if (strncmp(f->name, "json/", 5) != 0 || len < 17 ||
            strcmp(f->name + len - 12, ".schema.json") != 0)
            continue;
        const char *p[2] = {f->name + 5, f->text};
        assert_int_equal(db_count(c,
                                  "SELECT count(*) FROM labloop.json_schemas WHERE name = $1 "
                                  "AND doc = $2::jsonb AND updated_at IS NOT NULL",
                                  2, p),
                         1);
        n++;
    }
    assert_true(n >= 5);
    assert_int_equal(db_count(c, "SELECT count(*) FROM labloop.json_schemas", 0, NULL), n);
    /* A changed document is put back by the next writer that connects; updated_at moves. */
    db_exec(c, "UPDATE labloop.json_schemas SET doc = '{}', updated_at = '2000-01-01Z' "
               "WHERE name = 'run.schema.json'");
    wr_t *w = wr_new("schemas");
    const lab_embedded_t *run = lab_embedded_find("json/run.schema.json");
    assert_non_null(run);
    const char *p[1] = {run->text};
    assert_int_equal(db_count(c,
                              "SELECT count(*) FROM labloop.json_schemas WHERE name = "
                              "'run.schema.json' AND doc = $1::jsonb AND updated_at > "
                              "'2001-01-01Z'",
                              1, p),
                     1);
    wr_free(w);
    PQfinish(c);
}

/* ---- the corpus: core/jschema.c and labloop.run_problems agree ---- */

typedef struct doc_case {
    char *doc;
    char *paths; /* the expected problem paths, sorted, distinct, "|"-joined; "" when valid */
} doc_case_t;

static char *repeat(const char *unit, int n)
{
    size_t u = strlen(unit);
    char *s = lab_malloc(u * (size_t)n + 1);
    for (int i = 0; i < n; i++)
        memcpy(s + u * (size_t)i, unit, u);
    s[u * (size_t)n] = '\0';
    return s;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted distinct paths joined with "|" (a root path "" first shows as a leading "|"). */
static char *join_paths(char **v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    char *out = lab_malloc(len);
    out[0] = '\0';
    for (int i = 0, w = 0; i < n; i++) {
        if (i && strcmp(v[i], v[i - 1]) == 0)
            continue;
        if (w++)
            strcat(out, "|");
        strcat(out, v[i]);
    }
    return out;
}

static char *c_paths(const lab_jschema_t *s, const char *text)
{
    json_error_t err;
    json_t *doc = json_loads(text, JSON_DECODE_ANY, &err);
    if (!doc)
        fail_msg("corpus document is not JSON: %s: %s", text, err.text);
    lab_jerrs_t errs = {0};
    lab_jschema_validate(s, doc, &errs);
    char **v = lab_calloc((size_t)errs.n + 1, sizeof *v);
    for (int i = 0; i < errs.n; i++)
        v[i] = errs.v[i].path;
    char *out = join_paths(v, errs.n);
    free(v);
    lab_jerrs_free(&errs);
    json_decref(doc);
    return out;
}

static char *sql_paths(PGconn *c, const char *text)
{
    const char *p[1] = {text};
    PGresult *r = db_ok(c, "SELECT path FROM labloop.run_problems($1::jsonb)", 1, p);
    int n = PQntuples(r);
    char **v = lab_calloc((size_t)n + 1, sizeof *v);
    for (int i = 0; i < n; i++)
        v[i] = PQgetvalue(r, i, 0);
    char *out = join_paths(v, n);
    free(v);
    PQclear(r);
    return out;
}

static const struct {
    const char *doc, *paths;
} corpus_fixed[] = {
    /* valid */
    {"{\"workflow\": \"elisa\"}", ""},
    {"{\"workflow\": \"elisa\", \"workflow_version\": 1, \"plate\": \"P1\", \"priority\": "
     "\"urgent\", \"score\": -0.5, \"deadline\": \"2026-11-22T10:00:00Z\", \"name\": \"\", "
     "\"note\": \"\", \"params\": {}, \"await_workflow\": false}",
     ""},
    {"{\"workflow\": \"elisa\", \"workflow_version\": 1.0}", ""},
    {"{\"workflow\": \"elisa\", \"score\": 1e300}", ""},
    {"{\"workflow\": \"elisa\", \"priority\": \"low\", \"score\": 0}", ""},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22t10:00:00z\"}", ""},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22 10:00:00+05:30\"}", ""},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22T10:00:00.123456789-08:00\"}", ""},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2024-02-29T00:00:00Z\"}", ""},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-12-31T23:59:60Z\"}", ""},
    {"{\"workflow\": \"elisa\", \"params\": {\"a\": {\"b\": [1, {\"c\": null}], \"d\": "
     "\"\\u00e9\"}}}",
     ""},
    {"{\"workflow\": \"a.b:c-d_e\"}", ""},
    {"{\"workflow\": \"elisa\", \"plate\": \"\\ud83d\\ude00\"}", ""},
    {"{\"workflow\": \"elisa\", \"name\": \"caf\\u00e9 \\u6e2c\\u5b9a\"}", ""},
    /* the document itself */
    {"[]", ""},
    {"\"elisa\"", ""},
    {"null", ""},
    {"42", ""},
    {"{}", "/workflow"},
    /* wrong types */
    {"{\"workflow\": 5}", "/workflow"},
    {"{\"workflow\": null}", "/workflow"},
    {"{\"workflow\": [\"elisa\"]}", "/workflow"},
    {"{\"workflow\": \"elisa\", \"plate\": 5}", "/plate"},
    {"{\"workflow\": \"elisa\", \"score\": \"1\"}", "/score"},
    {"{\"workflow\": \"elisa\", \"score\": true}", "/score"},
    {"{\"workflow\": \"elisa\", \"workflow_version\": 1.5}", "/workflow_version"},
    {"{\"workflow\": \"elisa\", \"workflow_version\": \"1\"}", "/workflow_version"},
    {"{\"workflow\": \"elisa\", \"deadline\": 1795000000}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"params\": []}", "/params"},
    {"{\"workflow\": \"elisa\", \"params\": \"x\"}", "/params"},
    {"{\"workflow\": \"elisa\", \"await_workflow\": \"yes\"}", "/await_workflow"},
    {"{\"workflow\": \"elisa\", \"await_workflow\": 1}", "/await_workflow"},
    {"{\"workflow\": \"elisa\", \"name\": null}", "/name"},
    {"{\"workflow\": \"elisa\", \"priority\": 1}", "/priority"},
    /* minimum */
    {"{\"workflow\": \"elisa\", \"workflow_version\": 0}", "/workflow_version"},
    {"{\"workflow\": \"elisa\", \"workflow_version\": -3}", "/workflow_version"},
    /* enum */
    {"{\"workflow\": \"elisa\", \"priority\": \"URGENT\"}", "/priority"},
    {"{\"workflow\": \"elisa\", \"priority\": \"\"}", "/priority"},
    {"{\"workflow\": \"elisa\", \"priority\": null}", "/priority"},
    /* empty strings and patterns */
    {"{\"workflow\": \"\"}", "/workflow"},
    {"{\"workflow\": \"elisa\", \"plate\": \"\"}", "/plate"},
    {"{\"workflow\": \"-elisa\"}", "/workflow"},
    {"{\"workflow\": \"eli sa\"}", "/workflow"},
    {"{\"workflow\": \"elisa\\n\"}", "/workflow"},
    {"{\"workflow\": \"\\u00e9lisa\"}", "/workflow"},
    {"{\"workflow\": \"elisa/1\"}", "/workflow"},
    /* date-times */
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22T10:00:00\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-02-30T10:00:00Z\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2023-02-29T10:00:00Z\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-04-31T10:00:00Z\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-13-01T10:00:00Z\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-00-10T10:00:00Z\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"0000-01-01T00:00:00Z\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22T24:00:00Z\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22T10:00Z\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22T10:00:00+0530\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22T10:00:00+24:00\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22T10:00:00.Z\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"2026-11-22T10:00:00Z \"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"\\uff12026-11-22T10:00:00Z\"}", "/deadline"},
    {"{\"workflow\": \"elisa\", \"deadline\": \"tomorrow\"}", "/deadline"},
    /* extra members */
    {"{\"workflow\": \"elisa\", \"x\": 1}", "/x"},
    {"{\"workflow\": \"elisa\", \"a/b~c\": 1}", "/a~1b~0c"},
    {"{\"workflow\": \"elisa\", \"\": 1}", "/"},
    {"{\"workflow\": \"elisa\", \"Plate\": \"P1\", \"id\": \"x\"}", "/Plate|/id"},
    {"{\"plate\": \"P1\", \"state\": \"done\"}", "/state|/workflow"},
    /* several at once */
    {"{\"workflow\": \"\", \"plate\": \"\", \"priority\": \"meh\", \"score\": \"a\", "
     "\"deadline\": \"2026-02-30T00:00:00Z\", \"workflow_version\": 0, \"extra\": {}}",
     "/deadline|/extra|/plate|/priority|/score|/workflow|/workflow_version"},
};

/* The limits, built: lengths in characters of multi-byte text. */
static int corpus_build(doc_case_t *out, int max)
{
    int n = 0;
    for (size_t i = 0; i < sizeof corpus_fixed / sizeof corpus_fixed[0]; i++) {
        out[n].doc = lab_strdup(corpus_fixed[i].doc);
        out[n].paths = lab_strdup(corpus_fixed[i].paths);
        n++;
    }
    static const struct {
        const char *field, *unit;
        int count;
        bool ok;
    } lim[] = {
        {"plate", "a", 64, true},
        {"plate", "a", 65, false},
        {"plate", "\u00e9", 64, true},
        {"plate", "\u00e9", 65, false},
        {"plate", "\U0001F600", 64, true},
        {"plate", "\U0001F600", 65, false},
        {"plate", "\u6e2c", 33, true},
        {"workflow", "a", 128, true},
        {"workflow", "a", 129, false},
        {"name", "\u00e9", 200, true},
        {"name", "\u00e9", 201, false},
        {"note", "\U0001F600", 2000, true},
        {"note", "\U0001F600", 2001, false},
        {"note", "x", 2001, false},
    };
    for (size_t i = 0; i < sizeof lim / sizeof lim[0] && n < max; i++) {
        char *v = repeat(lim[i].unit, lim[i].count);
        bool wf = strcmp(lim[i].field, "workflow") == 0;
        out[n].doc =
            wf ? lab_asprintf("{\"workflow\": \"%s\"}", v)
               : lab_asprintf("{\"workflow\": \"elisa\", \"%s\": \"%s\"}", lim[i].field, v);
        out[n].paths = lim[i].ok ? lab_strdup("") : lab_asprintf("/%s", lim[i].field);
        free(v);
        n++;
    }
    return n;
}

static void test_corpus(void **state)
{
    PGconn *c = db_open();
    const lab_jschema_t *s = lab_jschema_get("run.schema.json");
    assert_non_null(s);
    doc_case_t cases[128];
    int n = corpus_build(cases, 128);
    assert_true(n >= 60);
    /* The workflows are stored: only the schema speaks here (test_workflow_rules has the rest). */
    for (int i = 0; i < n; i++) {
        const char *p[1] = {cases[i].doc};
        db_ok_clear(c,
                    "INSERT INTO labloop.workflows SELECT 'corpus', $1::jsonb->>'workflow', 1, "
                    "'{\"steps\": []}', now(), 1 WHERE jsonb_typeof($1::jsonb->'workflow') = "
                    "'string' ON CONFLICT DO NOTHING",
                    1, p);
    }
    int valid = 0;
    for (int i = 0; i < n; i++) {
        char *cp = c_paths(s, cases[i].doc);
        char *sp = sql_paths(c, cases[i].doc);
        /* The fixed documents that are not objects carry "" as their one path. */
        const char *want = cases[i].paths;
        bool root_only = cases[i].doc[0] != '{';
        if (root_only)
            want = "";
        if (strcmp(cp, sp) != 0 || strcmp(cp, want) != 0 || (root_only && strcmp(cp, "") != 0))
            fail_msg("document %d %.120s: C paths [%s], SQL paths [%s], expected [%s]", i,
                     cases[i].doc, cp, sp, want);
        /* Valid or not: "" paths with a problem at the root differ from no problem. */
        const char *p[1] = {cases[i].doc};
        long long sql_n = db_count(c, "SELECT count(*) FROM labloop.run_problems($1::jsonb)", 1, p);
        json_t *j = json_loads(cases[i].doc, JSON_DECODE_ANY, NULL);
        lab_jerrs_t errs = {0};
        int c_n = lab_jschema_validate(s, j, &errs);
        lab_jerrs_free(&errs);
        json_decref(j);
        if ((sql_n == 0) != (c_n == 0) || (root_only && sql_n == 0) ||
            (!root_only && (c_n == 0) != (*cases[i].paths == '\0')))
            fail_msg("document %d %.120s: C %d problem(s), SQL %lld", i, cases[i].doc, c_n, sql_n);
        valid += c_n == 0;
        free(cp);
        free(sp);
        free(cases[i].doc);
        free(cases[i].paths);
    }
    assert_true(valid >= 15 && valid <= n - 40);
    PQfinish(c);
}

/* ---- the workflow rules and what a queue row holds ---- */

static void test_workflow_rules(void **state)
{
    PGconn *c = db_open();
    reset_queue(c);
    db_exec(c, "DELETE FROM labloop.workflows WHERE name LIKE 'wr-%'");
    db_exec(c, "INSERT INTO labloop.workflows VALUES ('c1', 'wr-a', 1, '{\"steps\": [{\"on\": "
               "\"reader\"}]}', now(), 1), ('c1', 'wr-a', 2, '{\"steps\": [{\"on\": \"reader\"}, "
               "{\"on\": \"washer-1\"}, {\"on\": \"reader\"}]}', now(), 2)");
    char msg[256], detail[2048], id[64], v[512];
    const char *p[1];

    p[0] = "{\"workflow\": \"wr-none\"}";
    db_fails(c, "SELECT labloop.submit_run($1::jsonb)", 1, p, "22023", msg, sizeof msg, detail,
             sizeof detail);
    assert_string_equal(msg, "run document has 1 problem(s)");
    assert_string_equal(detail,
                        "[{\"path\": \"/workflow\", \"message\": \"no workflow of this name is "
                        "stored\"}]");
    p[0] = "{\"workflow\": \"wr-a\", \"workflow_version\": 3}";
    db_fails(c, "SELECT labloop.submit_run($1::jsonb)", 1, p, "22023", msg, sizeof msg, detail,
             sizeof detail);
    assert_non_null(strstr(detail, "\"/workflow_version\""));
    /* Schema problems come alone, as POST /v1/runs reports them. */
    p[0] = "{\"workflow\": \"wr-none\", \"plate\": \"\"}";
    db_fails(c, "SELECT labloop.submit_run($1::jsonb)", 1, p, "22023", msg, sizeof msg, detail,
             sizeof detail);
    assert_string_equal(detail, "[{\"path\": \"/plate\", \"message\": \"must be at least 1 "
                                "characters long\"}]");

    /* The newest stored version is filled in, its needs are its steps' "on". */
    submit(c, "{\"workflow\": \"wr-a\", \"priority\": \"high\", \"await_workflow\": false}", NULL,
           id, sizeof id);
    p[0] = id;
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT doc::text || ' ' || array_to_string(needs, ',') || ' ' || "
                               "priority || ' ' || via || ' ' || submitted_by || ' ' || state "
                               "FROM (SELECT doc, ARRAY(SELECT unnest(needs) ORDER BY 1) AS "
                               "needs, priority, via, submitted_by, state FROM labloop.queue "
                               "WHERE id = $1::uuid) q",
                               1, p),
                        "{\"priority\": \"high\", \"workflow\": \"wr-a\", \"workflow_version\": 2} "
                        "reader,washer-1 1 sql postgres queued");
    submit(c,
           "{\"workflow\": \"wr-a\", \"workflow_version\": 1, \"deadline\": "
           "\"2026-11-22t10:00:00+01:00\"}",
           NULL, id, sizeof id);
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT array_to_string(needs, ',') || ' ' || priority || ' ' || "
                               "(deadline = '2026-11-22T09:00:00Z') FROM labloop.queue WHERE id "
                               "= $1::uuid",
                               1, p),
                        "reader 2 true");

    /* Waiting for its workflow: no needs (no cell claims it) until a version is stored. */
    submit(c, "{\"workflow\": \"wr-later\", \"await_workflow\": true}", NULL, id, sizeof id);
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT coalesce(array_to_string(needs, ','), 'NULL') || ' ' || "
                               "doc::text FROM labloop.queue WHERE id = $1::uuid",
                               1, p),
                        "NULL {\"workflow\": \"wr-later\"}");
    PGconn *l = db_open();
    db_exec(l, "LISTEN labloop_queue");
    db_exec(c, "INSERT INTO labloop.workflows VALUES ('c2', 'wr-later', 4, '{\"steps\": [{\"on\": "
               "\"incubator\"}]}', now(), 3)");
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT array_to_string(needs, ',') || ' ' || doc::text FROM "
                               "labloop.queue WHERE id = $1::uuid",
                               1, p),
                        "incubator {\"workflow\": \"wr-later\", \"workflow_version\": 4}");
    wait_notify(l, "labloop_queue", "");
    PQfinish(l);
    PQfinish(c);
}

/* ---- idempotency ---- */

typedef struct racer {
    pthread_barrier_t *go;
    const char *key;
    char id[64];
    char err[256];
} racer_t;

static void *race_submit(void *arg)
{
    racer_t *r = arg;
    PGconn *c = PQconnectdb(g_pg.conninfo);
    pthread_barrier_wait(r->go);
    const char *p[2] = {"{\"workflow\": \"elisa\", \"plate\": \"RACE\"}", r->key};
    PGresult *res = PQexecParams(c, "SELECT labloop.submit_run($1::jsonb, $2, 'mqtt', 'racer')", 2,
                                 NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        snprintf(r->id, sizeof r->id, "%s", PQgetvalue(res, 0, 0));
    else
        snprintf(r->err, sizeof r->err, "%s", PQresultErrorMessage(res));
    PQclear(res);
    PQfinish(c);
    return NULL;
}

static void test_idempotency(void **state)
{
    PGconn *c = db_open();
    reset_queue(c);
    char a[64], b[64], msg[256];
    submit(c, "{\"workflow\": \"elisa\", \"plate\": \"P1\", \"score\": 2}", "key-1", a, sizeof a);
    /* The same document, written differently (member order, spacing), is the same document. */
    submit(c, "{\"score\":2,\"plate\":\"P1\",   \"workflow\":\"elisa\"}", "key-1", b, sizeof b);
    assert_string_equal(a, b);
    const char *p[2] = {"{\"workflow\": \"elisa\", \"plate\": \"P2\"}", "key-1"};
    db_fails(c, "SELECT labloop.submit_run($1::jsonb, $2)", 2, p, "23505", msg, sizeof msg, NULL,
             0);
    assert_string_equal(msg,
                        "idempotency key \"key-1\" was first used for a different run document");
    /* Without a key every submission is a run of its own. */
    submit(c, "{\"workflow\": \"elisa\", \"plate\": \"P1\", \"score\": 2}", NULL, b, sizeof b);
    assert_string_not_equal(a, b);
    p[1] = "";
    db_fails(c, "SELECT labloop.submit_run($1::jsonb, $2)", 2, p, "22023", NULL, 0, NULL, 0);
    char *longkey = repeat("k", 256);
    p[1] = longkey;
    db_fails(c, "SELECT labloop.submit_run($1::jsonb, $2)", 2, p, "22023", NULL, 0, NULL, 0);
    free(longkey);
    assert_int_equal(db_count(c, "SELECT count(*) FROM labloop.queue", 0, NULL), 2);

    /* Eight connections racing one key: one row, one id for all. */
    enum { RACERS = 8 };
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, RACERS);
    racer_t r[RACERS];
    pthread_t th[RACERS];
    for (int i = 0; i < RACERS; i++) {
        r[i] = (racer_t){.go = &go, .key = "race-key"};
        assert_int_equal(pthread_create(&th[i], NULL, race_submit, &r[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < RACERS; i++) {
        if (r[i].err[0])
            fail_msg("racer %d: %s", i, r[i].err);
        assert_string_equal(r[i].id, r[0].id);
    }
    assert_int_equal(db_count(c,
                              "SELECT count(*) FROM labloop.queue WHERE idempotency_key = "
                              "'race-key' AND via = 'mqtt' AND submitted_by = 'racer'",
                              0, NULL),
                     1);
    PQfinish(c);
}

/* ---- batches: all or nothing, problems at /N ---- */

static void test_submit_runs(void **state)
{
    PGconn *c = db_open();
    reset_queue(c);
    char msg[256], detail[2048];
    const char *p[2] = {"[{\"workflow\": \"elisa\"}, {\"workflow\": \"elisa\", \"plate\": \"\"}, "
                        "{\"workflow\": \"elisa\"}, {\"workflow\": \"no-such\"}, {\"x\": 1}]",
                        NULL};
    db_fails(c, "SELECT * FROM labloop.submit_runs($1::jsonb)", 1, p, "22023", msg, sizeof msg,
             detail, sizeof detail);
    assert_string_equal(msg, "run document has 4 problem(s)");
    json_t *d = json_loads(detail, 0, NULL);
    assert_non_null(d);
    char *paths[8];
    size_t i;
    json_t *e;
    assert_int_equal(json_array_size(d), 4);
    json_array_foreach(d, i, e) paths[i] = (char *)json_string_value(json_object_get(e, "path"));
    char *joined = join_paths(paths, 4);
    assert_string_equal(joined, "/1/plate|/3/workflow|/4/workflow|/4/x");
    free(joined);
    json_decref(d);
    assert_int_equal(db_count(c, "SELECT count(*) FROM labloop.queue", 0, NULL), 0);

    /* A key reused for another document in the batch: nothing of it stays either. */
    p[0] = "[{\"workflow\": \"elisa\", \"plate\": \"A\"}, {\"workflow\": \"elisa\", \"plate\": "
           "\"B\"}]";
    p[1] = "{k1,k1}";
    db_fails(c, "SELECT * FROM labloop.submit_runs($1::jsonb, $2::text[])", 2, p, "23505", NULL, 0,
             NULL, 0);
    assert_int_equal(db_count(c, "SELECT count(*) FROM labloop.queue", 0, NULL), 0);
    p[1] = "{k1}";
    db_fails(c, "SELECT * FROM labloop.submit_runs($1::jsonb, $2::text[])", 2, p, "22023", NULL, 0,
             NULL, 0);
    p[0] = "{\"workflow\": \"elisa\"}";
    db_fails(c, "SELECT * FROM labloop.submit_runs($1::jsonb)", 1, p, "22023", NULL, 0, NULL, 0);

    /* In order, one id each, the same key twice in one batch gives the same id. */
    p[0] = "[{\"workflow\": \"elisa\", \"plate\": \"A\"}, {\"workflow\": \"elisa\", \"plate\": "
           "\"B\"}, {\"workflow\": \"elisa\", \"plate\": \"C\"}, {\"workflow\": \"elisa\", "
           "\"plate\": \"A\"}]";
    p[1] = "{ka,kb,NULL,ka}";
    PGresult *r = db_ok(c,
                        "SELECT s.id FROM labloop.submit_runs($1::jsonb, $2::text[], 'http', "
                        "'alice') WITH ORDINALITY s(id, n) ORDER BY s.n",
                        2, p);
    assert_int_equal(PQntuples(r), 4);
    static const char *const plates[] = {"A", "B", "C", "A"};
    for (int k = 0; k < 4; k++) {
        char plate[8];
        const char *ip[1] = {PQgetvalue(r, k, 0)};
        assert_string_equal(db_one(c, plate, sizeof plate,
                                   "SELECT doc->>'plate' FROM labloop.queue WHERE id = $1::uuid", 1,
                                   ip),
                            plates[k]);
    }
    assert_string_equal(PQgetvalue(r, 3, 0), PQgetvalue(r, 0, 0));
    PQclear(r);
    assert_int_equal(db_count(c,
                              "SELECT count(*) FROM labloop.queue WHERE via = 'http' AND "
                              "submitted_by = 'alice'",
                              0, NULL),
                     3);
    PQfinish(c);
}

/* ---- claims ---- */

#define CLAIM_RUNS 300
#define CLAIMERS 3

typedef struct claimer {
    const char *cell;
    pthread_barrier_t *go;
    char (*ids)[37]; /* in the order claimed */
    int n;
    char err[256];
} claimer_t;

static void *claim_loop(void *arg)
{
    claimer_t *k = arg;
    PGconn *c = PQconnectdb(g_pg.conninfo);
    pthread_barrier_wait(k->go);
    const char *p[2] = {k->cell, "7"};
    for (int empty = 0; empty < 2 && !k->err[0];) {
        PGresult *r = PQexec(c, "BEGIN");
        PQclear(r);
        r = PQexecParams(c, "SELECT id FROM labloop.claim_runs($1, $2::int)", 2, NULL, p, NULL,
                         NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(k->err, sizeof k->err, "%s", PQresultErrorMessage(r));
        } else {
            int got = PQntuples(r);
            empty = got ? 0 : empty + 1;
            for (int i = 0; i < got && k->n < CLAIM_RUNS; i++)
                snprintf(k->ids[k->n++], 37, "%s", PQgetvalue(r, i, 0));
        }
        PQclear(r);
        PQclear(PQexec(c, "COMMIT"));
    }
    PQfinish(c);
    return NULL;
}

/* The claim order's rank of every queue row, by id. */
static long long rank_of(PGresult *ranks, const char *id)
{
    for (int i = 0; i < PQntuples(ranks); i++)
        if (strcmp(PQgetvalue(ranks, i, 0), id) == 0)
            return strtoll(PQgetvalue(ranks, i, 1), NULL, 10);
    fail_msg("id %s is not in labloop.queue", id);
    return -1;
}

static void test_claims_concurrent(void **state)
{
    PGconn *c = db_open();
    reset_queue(c);
    static const char *const prio[] = {"urgent", "high", "normal", "low"};
    json_t *docs = json_array();
    for (int i = 0; i < CLAIM_RUNS; i++) {
        json_t *d = json_pack("{s:s, s:s, s:i}", "workflow", "elisa", "priority", prio[i % 4],
                              "score", (i * 7) % 5);
        if (i % 3 == 0) {
            char dl[32];
            snprintf(dl, sizeof dl, "2026-11-%02dT10:00:00Z", 1 + (i * 11) % 28);
            json_object_set_new(d, "deadline", json_string(dl));
        }
        json_array_append_new(docs, d);
    }
    char *text = json_dumps(docs, JSON_COMPACT);
    json_decref(docs);
    const char *p[1] = {text};
    assert_int_equal(db_count(c, "SELECT count(*) FROM labloop.submit_runs($1::jsonb)", 1, p),
                     CLAIM_RUNS);
    free(text);
    static const char *const cells[CLAIMERS] = {"cl-1", "cl-2", "cl-3"};
    for (int i = 0; i < CLAIMERS; i++)
        heartbeat(c, cells[i], "[\"reader\", \"washer\", \"incubator\"]", NULL, "30", "up");
    PGresult *ranks = db_ok(c,
                            "SELECT id, row_number() OVER (ORDER BY priority, deadline NULLS "
                            "LAST, score DESC, submitted_at, id) FROM labloop.queue",
                            0, NULL);

    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, CLAIMERS);
    claimer_t k[CLAIMERS];
    pthread_t th[CLAIMERS];
    for (int i = 0; i < CLAIMERS; i++) {
        k[i] = (claimer_t){.cell = cells[i], .go = &go};
        k[i].ids = lab_calloc(CLAIM_RUNS, sizeof *k[i].ids);
        assert_int_equal(pthread_create(&th[i], NULL, claim_loop, &k[i]), 0);
    }
    for (int i = 0; i < CLAIMERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    int total = 0;
    for (int i = 0; i < CLAIMERS; i++) {
        if (k[i].err[0])
            fail_msg("%s: %s", cells[i], k[i].err);
        /* Each cell's claims follow the order: nothing it takes later comes before what it
         * took earlier (what it skipped was another cell's, and stays claimed). */
        for (int j = 1; j < k[i].n; j++)
            assert_true(rank_of(ranks, k[i].ids[j - 1]) < rank_of(ranks, k[i].ids[j]));
        total += k[i].n;
    }
    /* how the claims fell across the three (under load one may get few or none: no
     * assertion on the split, only on order and uniqueness) */
    fprintf(stderr, "claims per cell: %d %d %d\n", k[0].n, k[1].n, k[2].n);
    assert_int_equal(total, CLAIM_RUNS);
    /* Never twice: every run claimed once, by the cell that says it claimed it. */
    assert_int_equal(db_count(c,
                              "SELECT count(*) FROM labloop.queue WHERE state = 'claimed' AND "
                              "claims = 1 AND claimed_at IS NOT NULL",
                              0, NULL),
                     CLAIM_RUNS);
    for (int i = 0; i < CLAIMERS; i++) {
        const char *cp[1] = {cells[i]};
        assert_int_equal(db_count(c, "SELECT count(*) FROM labloop.queue WHERE cell = $1", 1, cp),
                         k[i].n);
        free(k[i].ids);
    }
    PQclear(ranks);

    /* One cell alone takes them in exactly the claim order, batch after batch. */
    db_exec(c, "UPDATE labloop.queue SET state = 'queued', cell = NULL, claimed_at = NULL");
    ranks = db_ok(c,
                  "SELECT id FROM labloop.queue ORDER BY priority, deadline NULLS LAST, score "
                  "DESC, submitted_at, id",
                  0, NULL);
    char ids[32][37];
    int seen = 0;
    for (int got; (got = claim(c, "cl-1", 32, ids, 32)) > 0;)
        for (int j = 0; j < got; j++, seen++)
            assert_string_equal(ids[j], PQgetvalue(ranks, seen, 0));
    assert_int_equal(seen, CLAIM_RUNS);
    PQclear(ranks);
    PQfinish(c);
}

/* ---- what a cell can run ---- */

static void test_needs_and_pins(void **state)
{
    PGconn *c = db_open();
    reset_queue(c);
    db_exec(c, "DELETE FROM labloop.workflows WHERE name LIKE 'np-%'");
    db_exec(c, "INSERT INTO labloop.workflows VALUES "
               "('c1', 'np-read', 1, '{\"steps\": [{\"on\": \"incubator\"}, {\"on\": "
               "\"plate_reader\"}]}', now(), 1), "
               "('c1', 'np-incubate', 1, '{\"steps\": [{\"on\": \"incubator\"}]}', now(), 2), "
               "('c1', 'np-reader2', 1, '{\"steps\": [{\"on\": \"reader-2\"}]}', now(), 3)");
    /* The run schema of this build may not have "cell" yet; the contract gives it one. */
    db_exec(c, "UPDATE labloop.json_schemas SET doc = jsonb_set(doc, '{properties,cell}', "
               "'{\"type\": \"string\", \"minLength\": 1, \"maxLength\": 64, \"pattern\": "
               "\"^[A-Za-z0-9][A-Za-z0-9_-]*$\"}') WHERE name = 'run.schema.json' AND NOT "
               "doc->'properties' ? 'cell'");
    char rd[64], inc[64], r2[64], pin[64], any[64], st[64];
    submit(c, "{\"workflow\": \"np-read\", \"priority\": \"urgent\"}", NULL, rd, sizeof rd);
    submit(c, "{\"workflow\": \"np-incubate\"}", NULL, inc, sizeof inc);
    submit(c, "{\"workflow\": \"np-reader2\"}", NULL, r2, sizeof r2);
    submit(c, "{\"workflow\": \"np-incubate\", \"cell\": \"np-b\", \"priority\": \"urgent\"}", NULL,
           pin, sizeof pin);
    submit(c, "{\"workflow\": \"np-incubate\", \"cell\": \"any\", \"priority\": \"low\"}", NULL,
           any, sizeof any);
    char ids[8][37];
    /* Not up: nothing, even for a cell that could run everything. */
    heartbeat(c, "np-stop", "[\"incubator\", \"plate_reader\", \"reader-2\"]", NULL, "30",
              "stopping");
    assert_int_equal(claim(c, "np-stop", 8, ids, 8), 0);
    assert_int_equal(claim(c, "np-unknown", 8, ids, 8), 0);
    /* A cell without a reader never takes a run that reads; the pin is for np-b only. */
    heartbeat(c, "np-a", "[\"incubator\"]", NULL, "30", "up");
    assert_int_equal(claim(c, "np-a", 8, ids, 8), 2);
    assert_string_equal(ids[0], inc);
    assert_string_equal(ids[1], any);
    assert_int_equal(claim(c, "np-a", 8, ids, 8), 0);
    /* An instrument id is a capability too. */
    heartbeat(c, "np-b", "[\"incubator\"]",
              "[{\"id\": \"reader-2\", \"kind\": \"plate_reader\", "
              "\"state\": \"idle\"}]",
              "30", "up");
    assert_int_equal(claim(c, "np-b", 8, ids, 8), 2);
    assert_string_equal(ids[0], pin);
    assert_string_equal(ids[1], r2);
    queue_state(c, rd, st, sizeof st);
    assert_string_equal(st, "queued");
    heartbeat(c, "np-c", "[\"incubator\", \"plate_reader\"]", NULL, "30", "up");
    assert_int_equal(claim(c, "np-c", 8, ids, 8), 1);
    assert_string_equal(ids[0], rd);
    /* n < 1 claims nothing. */
    assert_int_equal(claim(c, "np-c", 0, ids, 8), 0);
    PQfinish(c);
}

/* ---- heartbeats, expiry, the fence, cancelling ---- */

/* Calls cell's heartbeat until it reports a release (the other cell's lease ran out). */
static long long heartbeat_until_released(PGconn *c, const char *cell, const char *kinds)
{
    long long deadline = h_now_ms() + WAIT_MS, n;
    while ((n = heartbeat(c, cell, kinds, NULL, "30", "up")) == 0 && h_now_ms() < deadline)
        h_sleep_ms(50);
    return n;
}

static void test_heartbeat_expiry(void **state)
{
    PGconn *c = db_open();
    reset_queue(c);
    char a[64], b[64], q3[64], st[256], v[256];
    submit(c, "{\"workflow\": \"elisa\", \"priority\": \"urgent\"}", NULL, a, sizeof a);
    submit(c, "{\"workflow\": \"elisa\", \"priority\": \"high\"}", NULL, b, sizeof b);
    submit(c, "{\"workflow\": \"elisa\", \"priority\": \"low\"}", NULL, q3, sizeof q3);
    const char *kinds = "[\"reader\", \"washer\", \"incubator\"]";
    heartbeat(c, "hb-lost", kinds, NULL, "1", "up");
    heartbeat(c, "hb-live", kinds, NULL, "30", "up");
    char ids[4][37];
    assert_int_equal(claim(c, "hb-lost", 2, ids, 4), 2);
    assert_true(start_run(c, a, "hb-lost"));
    PGconn *l = db_open();
    db_exec(l, "LISTEN labloop_queue");
    assert_int_equal(heartbeat_until_released(c, "hb-live", kinds), 1);
    wait_notify(l, "labloop_queue", ""); /* the released run wakes the cells */
    PQfinish(l);
    const char *p[1] = {"hb-lost"};
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT state || ' ' || expired || ' ' || claimed || ' ' || "
                               "started FROM labloop.lab_cells WHERE cell = $1",
                               1, p),
                        "lost true 0 1");
    queue_state(c, a, st, sizeof st);
    assert_string_equal(st, "started:hb-lost");
    queue_state(c, b, st, sizeof st);
    assert_string_equal(st, "queued");
    /* The started run is stranded, with the reason; the others are not. */
    const char *pa[1] = {a};
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT stranded || ' ' || stranded_reason FROM labloop.lab_runs "
                               "WHERE id = $1::uuid",
                               1, pa),
                        db_one(c, st, sizeof st,
                               "SELECT 'true cell hb-lost has not been heard from since ' || "
                               "to_char(heartbeat_at AT TIME ZONE 'UTC', "
                               "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM labloop.cells WHERE "
                               "cell = 'hb-lost'",
                               0, NULL));
    assert_int_equal(db_count(c, "SELECT count(*) FROM labloop.lab_runs WHERE stranded", 0, NULL),
                     1);
    /* Another cell takes the released run, in order. */
    assert_int_equal(claim(c, "hb-live", 1, ids, 4), 1);
    assert_string_equal(ids[0], b);
    /* The lost cell comes back: it does not run what another cell took, keeps what it started. */
    heartbeat(c, "hb-lost", kinds, NULL, "30", "up");
    assert_false(start_run(c, b, "hb-lost"));
    assert_true(start_run(c, a, "hb-lost"));
    assert_true(start_run(c, b, "hb-live"));
    assert_int_equal(db_count(c, "SELECT count(*) FROM labloop.lab_runs WHERE stranded", 0, NULL),
                     0);
    assert_int_equal(db_count(c,
                              "SELECT count(*) FROM labloop.cells WHERE cell = 'hb-lost' AND "
                              "state = 'up' AND started_at = heartbeat_at",
                              0, NULL),
                     1);
    PQfinish(c);
}

/* PostgreSQL down for longer than a lease: no cell could be heard meanwhile, so the first cell
 * back does not find the others lost (a lease counts from PostgreSQL's start too); once a lease
 * has passed since, a cell still silent is lost as ever. */
static void test_outage_lease(void **state)
{
    PGconn *c = db_open();
    reset_queue(c);
    char a[64], st[256];
    submit(c, "{\"workflow\": \"elisa\"}", NULL, a, sizeof a);
    const char *kinds = "[\"reader\", \"washer\", \"incubator\"]";
    heartbeat(c, "ol-held", kinds, NULL, "2", "up");
    heartbeat(c, "ol-back", kinds, NULL, "2", "up");
    char ids[2][37];
    assert_int_equal(claim(c, "ol-held", 1, ids, 2), 1);
    PQfinish(c);
    assert_int_equal(h_pg_stop(&g_pg), 0);
    h_sleep_ms(2500);
    assert_int_equal(h_pg_restart(&g_pg), 0);
    c = db_open();
    assert_int_equal(heartbeat(c, "ol-back", kinds, NULL, "2", "up"), 0);
    queue_state(c, a, st, sizeof st);
    assert_string_equal(st, "claimed:ol-held");
    assert_int_equal(heartbeat_until_released(c, "ol-back", kinds), 1);
    queue_state(c, a, st, sizeof st);
    assert_string_equal(st, "queued");
    PQfinish(c);
}

/* A claim in progress when its cell's lease runs out: the heartbeat that declares the cell lost
 * waits for the claim's transaction and releases what it took, so no claim outlives its cell. */
static void test_claim_racing_expiry(void **state)
{
    PGconn *c = db_open(), *holder = db_open(), *other = db_open();
    reset_queue(c);
    char id[64], ids[4][37], v[64];
    submit(c, "{\"workflow\": \"elisa\"}", NULL, id, sizeof id);
    const char *kinds = "[\"reader\", \"washer\", \"incubator\"]";
    heartbeat(c, "rx-a", kinds, NULL, "1", "up");
    heartbeat(c, "rx-b", kinds, NULL, "30", "up");
    db_exec(holder, "BEGIN");
    const char *p[2] = {"rx-a", "4"};
    PGresult *r = db_ok(holder, "SELECT id FROM labloop.claim_runs($1, $2::int)", 2, p);
    assert_int_equal(PQntuples(r), 1);
    PQclear(r);
    long long deadline = h_now_ms() + WAIT_MS;
    while (db_count(c, "SELECT count(*) FROM labloop.lab_cells WHERE cell = 'rx-a' AND expired", 0,
                    NULL) != 1 &&
           h_now_ms() < deadline)
        h_sleep_ms(50);
    const char *hp[1] = {"rx-b"};
    assert_int_equal(PQsendQueryParams(other,
                                       "SELECT released FROM labloop.cell_heartbeat($1, 'site1', "
                                       "'{\"kinds\": [\"reader\"]}', '{}', NULL, 30, 'up')",
                                       1, NULL, hp, NULL, NULL, 0),
                     1);
    /* It waits on the claim's lock on the cell's row. */
    deadline = h_now_ms() + WAIT_MS;
    while (db_count(c,
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
                    "query LIKE '%cell_heartbeat%'",
                    0, NULL) != 1 &&
           h_now_ms() < deadline)
        h_sleep_ms(20);
    db_exec(holder, "COMMIT");
    r = PQgetResult(other);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    while ((r = PQgetResult(other)))
        PQclear(r);
    queue_state(c, id, v, sizeof v);
    assert_string_equal(v, "queued");
    assert_false(start_run(c, id, "rx-a"));
    /* A lost cell claims nothing until its heartbeat says it is up again. */
    assert_int_equal(claim(c, "rx-a", 4, ids, 4), 0);
    PQfinish(other);
    PQfinish(holder);
    PQfinish(c);
}

static void test_fence_and_cancel(void **state)
{
    PGconn *c = db_open();
    reset_queue(c);
    char a[64], b[64], q[64], st[64], msg[256], ids[4][37];
    submit(c, "{\"workflow\": \"elisa\", \"priority\": \"urgent\"}", NULL, a, sizeof a);
    submit(c, "{\"workflow\": \"elisa\", \"priority\": \"high\"}", NULL, b, sizeof b);
    submit(c, "{\"workflow\": \"elisa\", \"priority\": \"low\"}", NULL, q, sizeof q);
    const char *kinds = "[\"reader\", \"washer\", \"incubator\"]";
    heartbeat(c, "fc-1", kinds, NULL, "1", "up");
    heartbeat(c, "fc-2", kinds, NULL, "30", "up");
    assert_int_equal(claim(c, "fc-1", 2, ids, 4), 2);
    /* The fence */
    assert_false(start_run(c, q, "fc-1"));                                      /* queued */
    assert_false(start_run(c, a, "fc-2"));                                      /* another cell's */
    assert_false(start_run(c, "00000000-0000-4000-8000-000000000000", "fc-1")); /* unknown */
    assert_true(start_run(c, a, "fc-1")); /* claimed by it: now started */
    assert_true(start_run(c, a, "fc-1")); /* already started by it */
    queue_state(c, a, st, sizeof st);
    assert_string_equal(st, "started:fc-1");
    /* Given back: queued again, and the fence refuses. */
    const char *rp[2] = {"fc-1", NULL};
    char arr[160];
    snprintf(arr, sizeof arr, "{%s,%s}", a, b);
    rp[1] = arr;
    PGconn *l = db_open();
    db_exec(l, "LISTEN labloop_queue");
    assert_int_equal(db_count(c, "SELECT labloop.release_runs($1, $2::uuid[])", 2, rp), 1);
    wait_notify(l, "labloop_queue", "");
    /* Nothing given back, nothing to wake for. */
    assert_int_equal(db_count(c, "SELECT labloop.release_runs($1, $2::uuid[])", 2, rp), 0);
    db_exec(l, "SELECT 1");
    PQconsumeInput(l);
    assert_null(PQnotifies(l));
    PQfinish(l);
    assert_false(start_run(c, b, "fc-1"));
    queue_state(c, b, st, sizeof st);
    assert_string_equal(st, "queued");
    queue_state(c, a, st, sizeof st);
    assert_string_equal(st, "started:fc-1");

    /* Cancelling: a queued run; a held one only there; a lost cell's from here. */
    const char *cp[1] = {q};
    assert_string_equal(db_one(c, st, sizeof st,
                               "SELECT labloop.cancel_run($1::uuid, 'op', 'no "
                               "longer needed')",
                               1, cp),
                        "cancelled");
    assert_false(start_run(c, q, "fc-1"));
    assert_int_equal(claim(c, "fc-2", 4, ids, 4), 1); /* b; q is cancelled */
    assert_string_equal(ids[0], b);
    cp[0] = b;
    db_fails(c, "SELECT labloop.cancel_run($1::uuid, 'op', 'x')", 1, cp, "55000", msg, sizeof msg,
             NULL, 0);
    assert_non_null(strstr(msg, "cell fc-2"));
    cp[0] = a;
    db_fails(c, "SELECT labloop.cancel_run($1::uuid, 'op', 'x')", 1, cp, "55000", msg, sizeof msg,
             NULL, 0);
    assert_non_null(strstr(msg, "cell fc-1"));
    long long deadline = h_now_ms() + WAIT_MS;
    while (db_count(c, "SELECT count(*) FROM labloop.cells WHERE cell = 'fc-1' AND state = 'lost'",
                    0, NULL) != 1 &&
           h_now_ms() < deadline) {
        heartbeat(c, "fc-2", kinds, NULL, "30", "up");
        h_sleep_ms(50);
    }
    assert_string_equal(db_one(c, st, sizeof st,
                               "SELECT labloop.cancel_run($1::uuid, 'op', "
                               "'plate dropped')",
                               1, cp),
                        "cancelled");
    assert_string_equal(db_one(c, msg, sizeof msg,
                               "SELECT state || ' ' || cancel_reason || ' ' || (finished_at IS NOT "
                               "NULL) FROM labloop.queue WHERE id = $1::uuid",
                               1, cp),
                        "cancelled plate dropped (by op) true");
    assert_false(start_run(c, a, "fc-1"));
    cp[0] = "00000000-0000-4000-8000-000000000000";
    db_fails(c, "SELECT labloop.cancel_run($1::uuid, 'op', 'x')", 1, cp, "P0002", NULL, 0, NULL, 0);
    PQfinish(c);
}

/* ---- the writer's labloop.runs rows: the holder's only; a done run ends its queue row ---- */

static void test_runs_guard_and_trigger(void **state)
{
    PGconn *c = db_open();
    reset_queue(c);
    PGconn *l = db_open();
    db_exec(l, "LISTEN labloop_run_done");
    wr_t *wa = wr_new("rg-a"), *wb = wr_new("rg-b");
    char r1[64], r2[64], local[64], st[64], v[256], ids[4][37];
    submit(c, "{\"workflow\": \"elisa\", \"priority\": \"urgent\"}", NULL, r1, sizeof r1);
    submit(c, "{\"workflow\": \"elisa\", \"priority\": \"high\"}", NULL, r2, sizeof r2);
    const char *kinds = "[\"reader\", \"washer\", \"incubator\"]";
    heartbeat(c, "rg-a", kinds, NULL, "1", "up");
    heartbeat(c, "rg-b", kinds, NULL, "30", "up");
    assert_int_equal(claim(c, "rg-a", 2, ids, 4), 2);
    assert_true(start_run(c, r1, "rg-a"));
    /* Seqs of rg-a run ahead of rg-b's: a few rows of another run first. */
    snprintf(local, sizeof local, "%s", "6f1b6c1e-0000-4000-8000-000000000001");
    wr_run_state(wa, c, local, "queued");
    wr_run_state(wa, c, local, "running");
    wr_run_state(wa, c, r1, "running");
    wr_run_state(wa, c, r2, "queued");
    const char *p1[1] = {r1}, *p2[1] = {r2}, *pl[1] = {local};
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT cell || ' ' || state FROM labloop.runs WHERE id = $1::uuid",
                               1, p1),
                        "rg-a running");
    /* A run not in the queue: any cell's rows apply (this one's own run). */
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT cell || ' ' || state FROM labloop.runs WHERE id = $1::uuid",
                               1, pl),
                        "rg-a running");
    /* rg-b does not hold r1: its row stays in labloop.events only. */
    wr_run_state(wb, c, r1, "done");
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT cell || ' ' || state FROM labloop.runs WHERE id = $1::uuid",
                               1, p1),
                        "rg-a running");
    queue_state(c, r1, st, sizeof st);
    assert_string_equal(st, "started:rg-a");
    /* The holder's done ends the queue row and wakes whoever listens. */
    wr_run_state(wa, c, r1, "done");
    queue_state(c, r1, st, sizeof st);
    assert_string_equal(st, "finished:rg-a");
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT local_state || ' ' || (finished_at IS NOT NULL) FROM "
                               "labloop.lab_runs WHERE id = $1::uuid",
                               1, p1),
                        "done true");
    wait_notify(l, "labloop_run_done", r1);

    /* r2 changes hands: rg-a is lost, rg-b claims it; rg-b's rows win though its seqs are
     * lower, and rg-a's later rows of it are not applied. */
    assert_int_equal(heartbeat_until_released(c, "rg-b", kinds), 1);
    assert_int_equal(claim(c, "rg-b", 4, ids, 4), 1);
    assert_string_equal(ids[0], r2);
    wr_run_state(wb, c, r2, "running");
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT cell || ' ' || state || ' ' || (seq < (SELECT max(seq) "
                               "FROM labloop.events WHERE cell = 'rg-a')) FROM labloop.runs "
                               "WHERE id = $1::uuid",
                               1, p2),
                        "rg-b running true");
    wr_run_state(wa, c, r2, "released");
    wr_run_state(wa, c, r2, "cancelled");
    assert_string_equal(db_one(c, v, sizeof v,
                               "SELECT cell || ' ' || state FROM labloop.runs WHERE id = $1::uuid",
                               1, p2),
                        "rg-b running");
    queue_state(c, r2, st, sizeof st);
    assert_string_equal(st, "claimed:rg-b");
    assert_true(start_run(c, r2, "rg-b"));
    wr_run_state(wb, c, r2, "failed");
    queue_state(c, r2, st, sizeof st);
    assert_string_equal(st, "finished:rg-b");
    assert_int_equal(db_count(c, "SELECT count(*) FROM labloop.events WHERE key = $1", 1, p2), 5);
    wr_free(wa);
    wr_free(wb);
    PQfinish(l);
    PQfinish(c);
}

static int group_setup(void **state)
{
    if (h_pg_start(&g_pg) != 0)
        return -1;
    /* The schema as a labloopd sets it up: migrations, then the JSON Schemas. */
    wr_t *w = wr_new("setup");
    wr_free(w);
    PGconn *c = db_open();
    db_exec(c, "INSERT INTO labloop.workflows VALUES ('setup', 'elisa', 1, '{\"steps\": [{\"on\": "
               "\"washer\"}, {\"on\": \"reader\"}]}', now(), 1)");
    PQfinish(c);
    return 0;
}

static int group_teardown(void **state)
{
    h_pg_destroy(&g_pg);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schemas_stored),   cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_workflow_rules),   cmocka_unit_test(test_idempotency),
        cmocka_unit_test(test_submit_runs),      cmocka_unit_test(test_claims_concurrent),
        cmocka_unit_test(test_needs_and_pins),   cmocka_unit_test(test_heartbeat_expiry),
        cmocka_unit_test(test_outage_lease),     cmocka_unit_test(test_claim_racing_expiry),
        cmocka_unit_test(test_fence_and_cancel), cmocka_unit_test(test_runs_guard_and_trigger),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
