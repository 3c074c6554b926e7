/* Benchmark: acknowledged submissions per second from 32 keep-alive HTTP clients against a real
 * labloopd in embedded mode, beside a naive baseline measured in the same run (one SQLite INSERT
 * and COMMIT per submission, synchronous=FULL, in a plain loop); and the daemon's resident memory
 * with 10,000 runs stored. One JSON line per figure on stdout.
 *
 *   bench_submit [COUNT [CLIENTS]]     defaults 20000 and 32 */
#include "tests/bench/bench_util.h"

#include <sqlite3.h>
#include <unistd.h>

enum { RSS_AT = 10000, BASELINE_ROWS = 2000, BASELINE_MAX_MS = 20000 };

/* The naive way to make a submission durable: its own transaction, fsync'd, one at a time. */
static double baseline_per_s(int *rows_out)
{
    char dir[256], path[300];
    if (h_tempdir("bench-sqlite", dir, sizeof dir))
        bench_fail("tempdir");
    snprintf(path, sizeof path, "%s/baseline.db", dir);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        bench_fail("sqlite3_open");
    const char *setup = "pragma journal_mode=wal; pragma synchronous=full;"
                        "create table runs (id text primary key, state text not null,"
                        " doc text not null, created_ms integer not null)";
    if (sqlite3_exec(db, setup, NULL, NULL, NULL) != SQLITE_OK)
        bench_fail(sqlite3_errmsg(db));
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(db, "insert into runs values (?1, 'queued', ?2, ?3)", -1, &ins, NULL);
    char id[64], doc[256];
    long long t0 = h_now_ms();
    int n = 0;
    while (n < BASELINE_ROWS && h_now_ms() - t0 < BASELINE_MAX_MS) {
        snprintf(id, sizeof id, "00000000-0000-4000-8000-%012d", n);
        snprintf(doc, sizeof doc,
                 "{\"id\":\"%s\",\"workflow\":\"elisa-demo\",\"plate\":\"P%07d\","
                 "\"priority\":\"normal\",\"state\":\"queued\"}",
                 id, n);
        sqlite3_exec(db, "begin", NULL, NULL, NULL);
        sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 2, doc, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 3, h_now_ms());
        if (sqlite3_step(ins) != SQLITE_DONE)
            bench_fail(sqlite3_errmsg(db));
        sqlite3_reset(ins);
        if (sqlite3_exec(db, "commit", NULL, NULL, NULL) != SQLITE_OK)
            bench_fail(sqlite3_errmsg(db));
        n++;
    }
    double secs = (double)(h_now_ms() - t0) / 1000.0;
    sqlite3_finalize(ins);
    sqlite3_close(db);
    h_rmtree(dir);
    *rows_out = n;
    return n / (secs > 0 ? secs : 1e-3);
}

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 20000;
    int clients = argc > 2 ? atoi(argv[2]) : 32;
    if (count < RSS_AT || clients < 1)
        bench_fail("usage: bench_submit [COUNT >= 10000 [CLIENTS]]");
    curl_global_init(CURL_GLOBAL_DEFAULT);

    int base_rows;
    double base = baseline_per_s(&base_rows);

    h_daemon_t d;
    bench_daemon_start(&d, NULL, NULL, NULL);

    /* First RSS_AT submissions, then the memory with that many runs stored, then the rest. */
    int acked1, acked2;
    double s1 = bench_submit_runs(d.url, clients, 0, RSS_AT, &acked1);
    long rss = bench_proc_kb(d.pid, "VmRSS"), hwm = bench_proc_kb(d.pid, "VmHWM");
    double s2 = bench_submit_runs(d.url, clients, RSS_AT, count - RSS_AT, &acked2);
    int acked = acked1 + acked2;
    double per_s = acked / (s1 + s2);

    printf("{\"bench\":\"submit\",\"clients\":%d,\"submitted\":%d,\"acked\":%d,\"seconds\":%.3f,"
           "\"acked_per_s\":%.0f,\"baseline\":%.0f,\"baseline_rows\":%d,"
           "\"baseline_what\":\"sqlite insert+commit per row, synchronous=full, wal\","
           "\"ratio\":%.2f,\"target_acked_per_s\":5000}\n",
           clients, count, acked, s1 + s2, per_s, base, base_rows, per_s / base);
    printf("{\"bench\":\"rss\",\"runs_stored\":%d,\"vmrss_kb\":%ld,\"vmhwm_kb\":%ld,"
           "\"vmrss_mb\":%.1f,\"target_mb\":32}\n",
           acked1, rss, hwm, rss / 1024.0);
    fflush(stdout);

    int rc = h_daemon_stop(&d);
    h_daemon_destroy(&d);
    curl_global_cleanup();
    return rc == 0 && acked == count ? 0 : 1;
}
