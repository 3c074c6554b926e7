/* Benchmark: how fast the PostgreSQL writer catches up. labloopd (with [postgres]) takes N
 * submissions while the server is stopped; then the server starts and we time until labloop.runs
 * holds all N. Beside it, a naive baseline in the same run and on the same server: one INSERT and
 * one COMMIT per row over libpq into a table like labloop.runs. One JSON line per figure.
 *
 *   bench_drain [N [CLIENTS]]     defaults 50000 and 32 */
#include "tests/bench/bench_util.h"

#include <libpq-fe.h>

enum { BASELINE_ROWS = 5000, BASELINE_MAX_MS = 20000, POLL_MS = 50, DRAIN_MAX_MS = 600000 };

static PGresult *must(PGconn *c, PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench: %s: %s", what, PQerrorMessage(c));
        exit(1);
    }
    return r;
}

/* One row at a time, each in its own transaction: the writer's work done the obvious way. The
 * rows are copies of a row the writer stored (a new id each), so they are as wide as the real
 * ones. */
static double baseline_per_s(const h_pg_t *pg, int *rows_out)
{
    PGconn *c = PQconnectdb(pg->conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        bench_fail(PQerrorMessage(c));
    PQclear(must(c,
                 PQexec(c, "drop table if exists public.bench_runs_baseline;"
                           "create table public.bench_runs_baseline"
                           " (like labloop.runs including defaults)"),
                 "create baseline table"));
    PGresult *tpl =
        must(c, PQexec(c, "select row_to_json(r)::jsonb from labloop.runs r limit 1"), "template");
    if (PQntuples(tpl) != 1)
        bench_fail("no row in labloop.runs to copy");
    const char *params[1] = {PQgetvalue(tpl, 0, 0)};
    const char *sql = "insert into public.bench_runs_baseline select * from"
                      " jsonb_populate_record(null::public.bench_runs_baseline,"
                      " $1::jsonb || jsonb_build_object('id', gen_random_uuid()))";
    PQclear(must(c, PQprepare(c, "ins", sql, 1, NULL), "prepare"));
    long long t0 = h_now_ms();
    int n = 0;
    while (n < BASELINE_ROWS && h_now_ms() - t0 < BASELINE_MAX_MS) {
        PQclear(must(c, PQexec(c, "begin"), "begin"));
        PQclear(must(c, PQexecPrepared(c, "ins", 1, params, NULL, NULL, 0), "insert"));
        PQclear(must(c, PQexec(c, "commit"), "commit"));
        n++;
    }
    double secs = (double)(h_now_ms() - t0) / 1000.0;
    PQclear(tpl);
    PQclear(PQexec(c, "drop table public.bench_runs_baseline"));
    PQfinish(c);
    *rows_out = n;
    return n / (secs > 0 ? secs : 1e-3);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 50000;
    int clients = argc > 2 ? atoi(argv[2]) : 32;
    if (n < 1 || clients < 1)
        bench_fail("usage: bench_drain [N [CLIENTS]]");
    curl_global_init(CURL_GLOBAL_DEFAULT);

    h_pg_t pg;
    if (h_pg_start(&pg))
        bench_fail("PostgreSQL did not start");
    if (h_pg_stop(&pg))
        bench_fail("PostgreSQL did not stop");
    /* The writer retries often, so the measured time is the drain, not a backoff pause. */
    h_daemon_t d;
    bench_daemon_start(&d, &pg, NULL, "[postgres]\nretry_max = 0.2\n");

    int acked;
    double sub_s = bench_submit_runs(d.url, clients, 0, n, &acked);
    if (acked != n)
        bench_fail("not every submission was acknowledged");

    if (h_pg_restart(&pg))
        bench_fail("PostgreSQL did not restart");
    /* The first row tells apart the reconnect (backoff, connect, migrations) from the copying. */
    long long t0 = h_now_ms(), t_first = 0, have = 0;
    while ((have = h_pg_count(&pg, "select count(*) from labloop.runs")) < n &&
           h_now_ms() - t0 < DRAIN_MAX_MS) {
        if (have > 0 && !t_first)
            t_first = h_now_ms();
        h_sleep_ms(POLL_MS);
    }
    long long t_end = h_now_ms();
    if (!t_first)
        t_first = t_end;
    double drain_s = (double)(t_end - t0) / 1000.0;
    double first_s = (double)(t_first - t0) / 1000.0;
    if (have != n) {
        fprintf(stderr, "bench: labloop.runs holds %lld of %d\n", have, n);
        bench_fail("the writer did not catch up");
    }
    double per_s = n / drain_s;

    int base_rows;
    double base = baseline_per_s(&pg, &base_rows);

    printf("{\"bench\":\"drain\",\"rows\":%d,\"seconds\":%.3f,\"rows_per_s\":%.0f,"
           "\"baseline\":%.0f,\"baseline_rows\":%d,"
           "\"baseline_what\":\"libpq insert+commit per row\",\"ratio\":%.2f,"
           "\"target_rows_per_s\":20000,\"target_ratio\":5,\"first_row_s\":%.3f,"
           "\"submit_acked_per_s\":%.0f}\n",
           n, drain_s, per_s, base, base_rows, per_s / base, first_s, acked / sub_s);
    fflush(stdout);

    int rc = h_daemon_stop(&d);
    h_daemon_destroy(&d);
    h_pg_destroy(&pg);
    curl_global_cleanup();
    return rc == 0 ? 0 : 1;
}
