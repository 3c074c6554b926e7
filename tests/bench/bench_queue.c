/* Benchmark: the lab's queue in PostgreSQL (schemas/sql/postgres/0006_lab.sql) on one durable
 * harness cluster (fsync and synchronous commit on). Submissions per second through
 * labloop.submit_run, one per transaction from one connection, and through labloop.submit_runs in
 * batches of 100 and 1000 (each document checked against run.schema.json and the workflow rules
 * in the database); then claims per second with three cells claiming at once, each on its own
 * connection (BEGIN; claim_runs(cell, 32); COMMIT), with the claim transaction's p50/p99. Beside
 * them, on the same server in the same run: graphile-worker's graphile_worker.add_job (one per
 * transaction) and add_jobs (batches of 100 and 1000), called the same way over libpq; its schema
 * is installed with graphile-worker from npm (into $LAB_BENCH_NPM_DIR, default build/bench-npm;
 * without node, npm or the registry it is skipped with a line saying why). The schema and the
 * JSON Schemas are set up by a labloopd connecting to the cluster, as in a lab. One JSON line per
 * figure on stdout.
 *
 *   bench_queue [SINGLE [BATCHED]]    defaults 2000 and 20000; LAB_BENCH_PEERS=0 skips the peer */
#include "tests/bench/bench_util.h"

#include <libpq-fe.h>
#include <sys/stat.h>

#ifndef LAB_BENCH_BUILD_DIR
#define LAB_BENCH_BUILD_DIR "."
#endif

enum { CELLS = 3, CLAIM_N = 32, MAX_TXNS = 1 << 16 };

/* The assay the runs follow: what a cell must have to claim them. */
static const char workflow[] =
    "{\"name\":\"assay\",\"version\":1,\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":120},"
    "{\"name\":\"incubate\",\"op\":\"incubate\",\"on\":\"incubator\",\"duration_s\":120},"
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"plate_reader\",\"duration_s\":90}]}";

static const char caps[] = "{\"kinds\": [\"liquid_handler\", \"incubator\", \"plate_reader\"], "
                           "\"instruments\": [], \"window\": 32}";

static PGconn *db_open(const h_pg_t *pg)
{
    PGconn *c = PQconnectdb(pg->conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        bench_fail(PQerrorMessage(c));
    return c;
}

static PGresult *db_ok(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench: %s\n", sql);
        bench_fail(PQresultErrorMessage(r));
    }
    return r;
}

static void db_exec(PGconn *c, const char *sql, int n, const char *const *params)
{
    PQclear(db_ok(c, sql, n, params));
}

/* The run document of submission i: priorities, scores and some deadlines vary. */
static int run_doc(char *out, size_t cap, long i)
{
    static const char *const prio[] = {"urgent", "high", "normal", "normal", "low"};
    if (i % 4 == 0)
        return snprintf(out, cap,
                        "{\"workflow\":\"assay\",\"plate\":\"P%07ld\",\"priority\":\"%s\","
                        "\"score\":%ld.25,\"deadline\":\"2026-12-%02ldT10:00:00Z\"}",
                        i, prio[i % 5], i % 97, 1 + i % 28);
    return snprintf(out, cap,
                    "{\"workflow\":\"assay\",\"plate\":\"P%07ld\",\"priority\":\"%s\","
                    "\"score\":%ld.25}",
                    i, prio[i % 5], i % 97);
}

/* A JSON array of docs from..from+n-1, or of graphile-worker payloads when peer. */
static char *batch_text(long from, int n)
{
    size_t cap = (size_t)n * 160 + 16, len = 1;
    char *s = malloc(cap);
    if (!s)
        bench_fail("out of memory");
    s[0] = '[';
    for (int k = 0; k < n; k++) {
        if (k)
            s[len++] = ',';
        len += (size_t)run_doc(s + len, cap - len, from + k);
    }
    s[len++] = ']';
    s[len] = '\0';
    return s;
}

typedef struct fig {
    long n;
    double seconds;
} fig_t;

/* One submission per transaction (autocommit), from one connection. */
static fig_t submit_single(PGconn *c, const char *sql, long from, long n)
{
    char doc[256];
    const char *p[1] = {doc};
    double t0 = bench_now_ms();
    for (long i = 0; i < n; i++) {
        run_doc(doc, sizeof doc, from + i);
        db_exec(c, sql, 1, p);
    }
    return (fig_t){n, (bench_now_ms() - t0) / 1e3};
}

/* n submissions in batches of size (the last one may be smaller), one transaction each. */
static fig_t submit_batches(PGconn *c, const char *sql, long from, long n, int size)
{
    double secs = 0;
    for (long i = 0; i < n; i += size) {
        int k = n - i < size ? (int)(n - i) : size;
        char *text = batch_text(from + i, k);
        const char *p[1] = {text};
        double t0 = bench_now_ms();
        PGresult *r = db_ok(c, sql, 1, p);
        secs += (bench_now_ms() - t0) / 1e3;
        if (PQntuples(r) != 1 || atol(PQgetvalue(r, 0, 0)) != k)
            bench_fail("a batch did not submit every document");
        PQclear(r);
        free(text);
    }
    return (fig_t){n, secs};
}

/* ---- claims from three cells at once ---- */

typedef struct claimer {
    const h_pg_t *pg;
    char cell[16];
    pthread_barrier_t *go;
    long claimed;
    int ntx;
    double *tx_ms; /* each claim transaction's time, BEGIN to COMMIT */
    double end_ms;
} claimer_t;

static void *claim_loop(void *arg)
{
    claimer_t *k = arg;
    PGconn *c = db_open(k->pg);
    char n[8];
    snprintf(n, sizeof n, "%d", CLAIM_N);
    const char *p[2] = {k->cell, n};
    pthread_barrier_wait(k->go);
    for (;;) {
        double t0 = bench_now_ms();
        db_exec(c, "BEGIN", 0, NULL);
        PGresult *r = db_ok(c, "SELECT id FROM labloop.claim_runs($1, $2::int)", 2, p);
        int got = PQntuples(r);
        PQclear(r);
        db_exec(c, "COMMIT", 0, NULL);
        if (got == 0)
            break;
        k->claimed += got;
        if (k->ntx < MAX_TXNS)
            k->tx_ms[k->ntx++] = bench_now_ms() - t0;
        k->end_ms = bench_now_ms();
    }
    PQfinish(c);
    return NULL;
}

static void claims(const h_pg_t *pg, PGconn *c, long queued)
{
    claimer_t k[CELLS];
    pthread_t th[CELLS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, CELLS + 1);
    for (int i = 0; i < CELLS; i++) {
        k[i] = (claimer_t){.pg = pg, .go = &go};
        snprintf(k[i].cell, sizeof k[i].cell, "cell-%d", i + 1);
        k[i].tx_ms = calloc(MAX_TXNS, sizeof *k[i].tx_ms);
        const char *p[2] = {k[i].cell, caps};
        db_exec(c,
                "SELECT * FROM labloop.cell_heartbeat($1, 'bench', $2::jsonb, '{}', NULL, 3600, "
                "'up')",
                2, p);
        pthread_create(&th[i], NULL, claim_loop, &k[i]);
    }
    double t0 = bench_now_ms();
    pthread_barrier_wait(&go);
    double end = t0;
    long total = 0;
    int ntx = 0;
    for (int i = 0; i < CELLS; i++) {
        pthread_join(th[i], NULL);
        total += k[i].claimed;
        ntx += k[i].ntx;
        if (k[i].end_ms > end)
            end = k[i].end_ms;
    }
    pthread_barrier_destroy(&go);
    double *all = calloc((size_t)ntx + 1, sizeof *all);
    int m = 0;
    for (int i = 0; i < CELLS; i++) {
        memcpy(all + m, k[i].tx_ms, (size_t)k[i].ntx * sizeof *all);
        m += k[i].ntx;
        free(k[i].tx_ms);
    }
    qsort(all, (size_t)m, sizeof *all, bench_cmp_double);
    double secs = (end - t0) / 1e3;
    PGresult *r = db_ok(c,
                        "SELECT count(*) FILTER (WHERE claims <> 1 OR state <> 'claimed'), "
                        "count(DISTINCT cell) FROM labloop.queue",
                        0, NULL);
    long twice = atol(PQgetvalue(r, 0, 0)), cells = atol(PQgetvalue(r, 0, 1));
    PQclear(r);
    if (total != queued || twice != 0)
        bench_fail("claims: a run was not claimed, or claimed twice");
    printf("{\"bench\":\"queue_claim\",\"cells\":%d,\"cells_claiming\":%ld,\"batch\":%d,"
           "\"claimed\":%ld,\"transactions\":%d,\"seconds\":%.3f,\"claims_per_s\":%.0f,"
           "\"txn_p50_ms\":%.2f,\"txn_p99_ms\":%.2f,\"target_claims_per_s\":2000,"
           "\"target_p99_ms\":50}\n",
           CELLS, cells, CLAIM_N, total, m, secs, total / (secs > 0 ? secs : 1e-3),
           m ? all[m / 2] : 0, m ? all[(int)(m * 0.99)] : 0);
    free(all);
}

/* ---- the peer: graphile-worker's schema from npm, its SQL functions over libpq ---- */

/* Installs graphile-worker's schema into the cluster; 0, or -1 with why. */
static int peer_install(const h_pg_t *pg, char *version, size_t vcap, char *why, size_t wcap)
{
    if (!bench_peers_here(why, wcap))
        return -1;
    char dir[512], cmd[2048], out[256] = "";
    const char *d = getenv("LAB_BENCH_NPM_DIR");
    snprintf(dir, sizeof dir, "%s", d && *d ? d : LAB_BENCH_BUILD_DIR "/bench-npm");
    mkdir(dir, 0755);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && { test -d node_modules/graphile-worker || timeout 300 npm install"
             " --no-audit --no-fund --loglevel=error --no-save graphile-worker >npm.log 2>&1; }",
             dir);
    if (h_run(cmd, NULL, 0) != 0) {
        snprintf(why, wcap, "npm install graphile-worker failed (registry unavailable?), see %s",
                 dir);
        return -1;
    }
    char host[256] = "";
    int port = 0;
    sscanf(pg->conninfo, "host=%255s port=%d", host, &port);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && timeout 120 node_modules/.bin/graphile-worker --schema-only -c "
             "'postgres://postgres@/postgres?host=%s&port=%d' >peer.log 2>&1",
             dir, host, port);
    if (h_run(cmd, NULL, 0) != 0) {
        snprintf(why, wcap, "graphile-worker --schema-only failed, see %s/peer.log", dir);
        return -1;
    }
    snprintf(cmd, sizeof cmd,
             "cd '%s' && node -p \"require('graphile-worker/package.json').version\"", dir);
    if (h_run(cmd, out, sizeof out) != 0)
        snprintf(out, sizeof out, "?");
    out[strcspn(out, "\n")] = '\0';
    snprintf(version, vcap, "%s", out);
    return 0;
}

static void print_submit(const char *bench, const char *mode, int batch, fig_t f,
                         const char *version, double target)
{
    printf("{\"bench\":\"%s\",\"mode\":\"%s\",\"batch\":%d,\"submitted\":%ld,\"seconds\":%.3f,"
           "\"per_s\":%.0f",
           bench, mode, batch, f.n, f.seconds, f.n / (f.seconds > 0 ? f.seconds : 1e-3));
    if (version)
        printf(",\"version\":\"%s\"", version);
    if (target > 0)
        printf(",\"target_per_s\":%.0f", target);
    printf("}\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    long single = argc > 1 ? atol(argv[1]) : 2000;
    long batched = argc > 2 ? atol(argv[2]) : 20000;
    if (single < 1 || batched < 1)
        bench_fail("usage: bench_queue [SINGLE >= 1 [BATCHED >= 1]]");
    h_pg_t pg;
    setenv("H_PG_DURABLE", "1", 1);
    int pgrc = h_pg_start(&pg);
    unsetenv("H_PG_DURABLE");
    if (pgrc)
        bench_fail("PostgreSQL did not start");

    /* A labloopd connecting sets up the schema and stores its JSON Schemas. */
    h_daemon_t d;
    bench_daemon_start_quiet(&d, &pg, NULL, NULL);
    PGconn *c = db_open(&pg);
    long long deadline = h_now_ms() + 60000;
    for (;;) {
        PGresult *r = db_ok(c,
                            "SELECT count(*) FROM pg_tables WHERE schemaname = 'labloop' AND "
                            "tablename = 'json_schemas'",
                            0, NULL);
        bool ready = atol(PQgetvalue(r, 0, 0)) == 1;
        PQclear(r);
        if (ready) {
            r = db_ok(c, "SELECT count(*) FROM labloop.json_schemas WHERE name = 'run.schema.json'",
                      0, NULL);
            ready = atol(PQgetvalue(r, 0, 0)) == 1;
            PQclear(r);
        }
        if (ready)
            break;
        if (h_now_ms() > deadline)
            bench_fail("labloopd did not set up labloop.json_schemas");
        h_sleep_ms(100);
    }
    if (h_daemon_stop(&d) != 0)
        bench_fail("labloopd did not stop cleanly");
    h_daemon_destroy(&d);
    const char *wp[1] = {workflow};
    db_exec(c,
            "INSERT INTO labloop.workflows VALUES ('bench', 'assay', 1, $1::jsonb, now(), 1) "
            "ON CONFLICT DO NOTHING",
            1, wp);

    char version[64] = "", why[1024] = "";
    bool peer = peer_install(&pg, version, sizeof version, why, sizeof why) == 0;
    if (!peer) {
        json_t *line = json_pack("{s:s,s:s}", "bench", "graphile_add_job", "skipped", why);
        char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", text ? text : "{\"bench\":\"graphile_add_job\",\"skipped\":\"?\"}");
        free(text);
        json_decref(line);
    }

    static const char sql_one[] = "SELECT labloop.submit_run($1::jsonb)";
    static const char sql_many[] = "SELECT count(*) FROM labloop.submit_runs($1::jsonb)";
    static const char peer_one[] = "SELECT graphile_worker.add_job('assay', $1::json)";
    static const char peer_many[] =
        "SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(SELECT ROW('assay', p, NULL, NULL, "
        "NULL, NULL, NULL, NULL)::graphile_worker.job_spec FROM json_array_elements($1::json) p))";
    long from = 0;
    static const int sizes[] = {100, 1000};
    print_submit("queue_submit", "single", 1, submit_single(c, sql_one, from, single), NULL, 0);
    from += single;
    if (peer)
        print_submit("graphile_add_job", "single", 1, submit_single(c, peer_one, 0, single),
                     version, 0);
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        print_submit("queue_submit", "batch", sizes[s],
                     submit_batches(c, sql_many, from, batched, sizes[s]), NULL, 5000);
        from += batched;
        if (peer)
            print_submit("graphile_add_job", "batch", sizes[s],
                         submit_batches(c, peer_many, 0, batched, sizes[s]), version, 0);
    }
    claims(&pg, c, from);
    PQfinish(c);
    h_pg_destroy(&pg);
    return 0;
}
