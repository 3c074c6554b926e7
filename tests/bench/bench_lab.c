/* Benchmark: the lab's queue with real cells. Three labloopd on one durable harness PostgreSQL
 * ([lab] shared_queue = on), each with a labloop-sim plate reader, take N runs submitted in SQL
 * batches (labloop.submit_runs, 100 a batch) and run them. Figures: the submissions per second,
 * the claims per second across the cells as PostgreSQL timed them (first claim to last), and the
 * claim -> local commit latency p50/p99 the cells measured (/metrics,
 * labloop_lab_claim_commit_seconds; the worst cell's). Beside them, in the same run, the SQL-only
 * claim figure of bench_queue (three connections claiming 32 at a time) on its own cluster. A
 * cell claims only what its look-ahead window takes, so the claims follow the runs' pace: the
 * figure says how fast three cells drain the queue, the latency what a claim costs them. One JSON
 * line per figure on stdout.
 *
 *   bench_lab [N]    default 1500 */
#include "tests/bench/bench_util.h"

#include <libpq-fe.h>

#ifndef LAB_BENCH_BUILD_DIR
#define LAB_BENCH_BUILD_DIR "."
#endif

enum { CELLS = 3, BATCH = 100 };

static const char workflow[] =
    "{\"name\":\"read-only\",\"steps\":[{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":"
    "\"plate_reader\",\"duration_s\":1,\"params\":{\"wavelength_nm\":450,\"wells\":\"A1\"}}]}";

static long long pg_num(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench: %s: %s", sql, PQresultErrorMessage(r));
        bench_fail("query failed");
    }
    long long v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? atoll(PQgetvalue(r, 0, 0)) : -1;
    PQclear(r);
    return v;
}

static double pg_double(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        bench_fail(PQresultErrorMessage(r));
    double v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? atof(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return v;
}

/* A quantile of the cell's claim -> commit summary, in ms (-1 when absent). */
static double commit_ms(const h_daemon_t *d, const char *q)
{
    char *m = NULL, key[96];
    double v = -1;
    snprintf(key, sizeof key, "labloop_lab_claim_commit_seconds{quantile=\"%s\"} ", q);
    if (h_http(d->url, "GET", "/metrics", NULL, NULL, &m) == 200 && m) {
        char *at = strstr(m, key);
        if (at)
            v = atof(at + strlen(key)) * 1000;
    }
    free(m);
    return v;
}

/* bench_queue's claim figure, run now on its own cluster: claims/s and the p99 in *p99. */
static double baseline(long n, double *p99)
{
    char cmd[600], out[8192];
    snprintf(cmd, sizeof cmd,
             "LAB_BENCH_PEERS=0 '%s/tests/bench_queue' 10 %ld 2>/dev/null | grep queue_claim",
             LAB_BENCH_BUILD_DIR, n);
    *p99 = -1;
    if (h_run(cmd, out, sizeof out) != 0)
        return -1;
    json_t *o = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
    double v = json_number_value(json_object_get(o, "claims_per_s"));
    *p99 = json_number_value(json_object_get(o, "txn_p99_ms"));
    json_decref(o);
    return v;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1500;
    if (n < 1 || n > 1000000)
        bench_fail("N: 1..1000000");
    setenv("LABLOOP_SIM", LABLOOP_SIM_PATH, 0);
    h_pg_t pg;
    h_sim_t sim;
    h_daemon_t d[CELLS];
    char dir[256], sec[CELLS][300], ini[2000] = "[labloop]\ntime_scale = 1000\n";
    if (h_pg_start(&pg) || h_tempdir("benchlab", dir, sizeof dir))
        bench_fail("PostgreSQL did not start");
    for (int i = 0; i < CELLS; i++) {
        snprintf(sec[i], sizeof sec[i],
                 "[instrument reader%d]\ndriver = biotek-synergy\nport = tcp://127.0.0.1:%d\n", i,
                 h_free_port());
        strncat(ini, sec[i], sizeof ini - strlen(ini) - 1);
    }
    if (h_sim_start(&sim, ini))
        bench_fail("labloop-sim did not start");
    for (int i = 0; i < CELLS; i++) {
        char extra[1400];
        snprintf(extra, sizeof extra,
                 "[labloop]\ntime_scale = 1000\n[lab]\nshared_queue = on\nlease = 15\n"
                 "heartbeat = 1\n%s",
                 sec[i]);
        bench_daemon_start_quiet(&d[i], &pg, NULL, extra);
        char *resp = NULL;
        int st = h_http(d[i].url, "POST", "/v1/workflows", "Content-Type: application/json",
                        workflow, &resp);
        free(resp);
        if (st != 201 && st != 200)
            bench_fail("the workflow was not stored");
    }
    PGconn *c = PQconnectdb(pg.conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        bench_fail(PQerrorMessage(c));
    if (h_pg_count_wait(&pg,
                        "SELECT count(*) FROM labloop.cells WHERE state = 'up' AND "
                        "capabilities->'kinds' ? 'plate_reader'",
                        CELLS, 60000) != CELLS ||
        h_pg_count_wait(&pg, "SELECT count(*) FROM labloop.workflows WHERE name = 'read-only'",
                        CELLS, 60000) < 1)
        bench_fail("the cells did not come up");

    /* the submissions, in batches */
    double t0 = bench_now_ms();
    for (long from = 0; from < n; from += BATCH) {
        long m = n - from < BATCH ? n - from : BATCH;
        char *sql = malloc((size_t)m * 80 + 100);
        size_t len = (size_t)sprintf(sql, "SELECT count(*) FROM labloop.submit_runs('[");
        for (long k = 0; k < m; k++)
            len += (size_t)sprintf(sql + len, "%s{\"workflow\":\"read-only\",\"plate\":\"B%ld\"}",
                                   k ? "," : "", from + k);
        sprintf(sql + len, "]'::jsonb)");
        if (pg_num(c, sql) != m)
            bench_fail("a batch was not taken whole");
        free(sql);
    }
    double submit_s = (bench_now_ms() - t0) / 1e3;
    printf("{\"bench\":\"lab_submit\",\"batch\":%d,\"submitted\":%ld,\"seconds\":%.3f,"
           "\"per_s\":%.0f}\n",
           BATCH, n, submit_s, n / (submit_s > 0 ? submit_s : 1e-3));
    fflush(stdout);

    /* every run claimed once and done */
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM labloop.queue WHERE state = 'finished'");
    if (h_pg_count_wait(&pg, sql, n, (int)(120000 + n * 100)) != n)
        bench_fail("not every run finished");
    if (pg_num(c, "SELECT count(*) FROM labloop.queue WHERE claims <> 1") != 0)
        bench_fail("a run was claimed twice");
    double span = pg_double(c, "SELECT extract(epoch FROM max(claimed_at) - min(claimed_at)) "
                               "FROM labloop.queue");
    long cells = (long)pg_num(c, "SELECT count(DISTINCT cell) FROM labloop.queue");
    double p50 = 0, p99 = 0;
    for (int i = 0; i < CELLS; i++) {
        double a = commit_ms(&d[i], "0.5"), b = commit_ms(&d[i], "0.99");
        p50 = a > p50 ? a : p50;
        p99 = b > p99 ? b : p99;
    }
    PQfinish(c);
    for (int i = 0; i < CELLS; i++)
        h_daemon_destroy(&d[i]);
    h_sim_stop(&sim);
    h_pg_destroy(&pg);
    h_rmtree(dir);
    double base_p99, base = baseline(n, &base_p99);
    printf("{\"bench\":\"lab_claims\",\"cells\":%d,\"cells_claiming\":%ld,\"claimed\":%ld,"
           "\"seconds\":%.3f,\"claims_per_s\":%.0f,\"commit_p50_ms\":%.2f,\"commit_p99_ms\":%.2f,"
           "\"baseline_claims_per_s\":%.0f,\"baseline_txn_p99_ms\":%.2f,"
           "\"target_claims_per_s\":2000,\"target_p99_ms\":50}\n",
           CELLS, cells, n, span, n / (span > 0 ? span : 1e-3), p50, p99, base, base_p99);
    return 0;
}
