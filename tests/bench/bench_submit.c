/* Benchmark: acknowledged submissions per second from keep-alive HTTP clients against a real
 * labloopd in embedded mode with its scheduler on and the runs' workflow stored, in two cells: one
 * without instruments (every run waits) and one with the instruments of labloop-sim (runs are
 * planned and carried out while the queue grows). Beside it, in the same run: a naive baseline
 * (one SQLite INSERT and COMMIT per submission, synchronous=FULL, in a plain loop) and
 * graphile-worker's addJob on a PostgreSQL of the harness, with as many concurrent callers (the
 * peer is installed with npm into a scratch directory, $LAB_BENCH_NPM_DIR or
 * $TMPDIR/labloop-bench-npm; without node, npm or the registry it is skipped with a line saying
 * why). Also the daemon's resident memory with 10,000 runs stored (or COUNT when smaller), and the
 * throughput of the first and the last tenth of the submissions: with a bounded planning cost per
 * submission they are alike. One JSON line per figure on stdout.
 *
 *   bench_submit [COUNT [CLIENTS]]     defaults 20000 and 32; LAB_BENCH_PEERS=0 skips the peer */
#include "tests/bench/bench_util.h"
#include "tests/integration/mix_cell.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef LABLOOP_SIM_PATH
#define LABLOOP_SIM_PATH "labloop-sim"
#endif

enum { RSS_AT = 10000, BASELINE_ROWS = 2000, BASELINE_MAX_MS = 20000, PEER_JOBS = 5000 };

/* The assay the runs follow: dispense, incubate, read within a maximum lag. */
static const char workflow[] =
    "{\"name\":\"assay\",\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":120,"
    "\"params\":{\"reagent\":\"substrate\",\"volume_ul\":50,\"wells\":\"A1:H3\"}},"
    "{\"name\":\"incubate\",\"op\":\"incubate\",\"on\":\"incubator\",\"duration_s\":120,"
    "\"params\":{\"temperature_c\":37},\"start_within_s\":300},"
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"plate_reader\",\"duration_s\":90,"
    "\"params\":{\"wavelength_nm\":450},\"start_within_s\":120}],"
    "\"on_failure\":{\"action\":\"retry\",\"retries\":1}}";

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
                 "{\"id\":\"%s\",\"workflow\":\"assay\",\"plate\":\"P%07d\","
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

/* ---- the peer: graphile-worker's addJob ---- */

/* 32 (CLIENTS) callers of addJob in one node process over a pool as wide, after the migration. */
static const char peer_js[] =
    "const fs = require('fs');\n"
    "const { makeWorkerUtils } = require('graphile-worker');\n"
    "const { Pool } = require('pg');\n"
    "const [host, port, jobs, clients] = process.argv.slice(2);\n"
    "(async () => {\n"
    "  const pool = new Pool({ host, port: +port, user: 'postgres', database: 'postgres',\n"
    "                          max: +clients });\n"
    "  const u = await makeWorkerUtils({ pgPool: pool });\n"
    "  await u.migrate();\n"
    "  let next = 0, done = 0;\n"
    "  const deadline = Date.now() + 30000;\n"
    "  const t0 = process.hrtime.bigint();\n"
    "  const client = async () => {\n"
    "    while (next < +jobs && Date.now() < deadline) {\n"
    "      const i = next++;\n"
    "      await u.addJob('assay', { plate: 'P' + String(i).padStart(7, '0'),\n"
    "                                priority: 'normal' });\n"
    "      done++;\n"
    "    }\n"
    "  };\n"
    "  await Promise.all(Array.from({ length: +clients }, client));\n"
    "  const s = Number(process.hrtime.bigint() - t0) / 1e9;\n"
    "  const v = "
    "JSON.parse(fs.readFileSync('node_modules/graphile-worker/package.json')).version;\n"
    "  console.log(JSON.stringify({ jobs: done, seconds: s, per_s: done / s, version: v }));\n"
    "  await u.release();\n"
    "  await pool.end();\n"
    "})().catch((e) => { console.error(e); process.exit(1); });\n";

/* graphile-worker's addJob per second, or < 0 with why (skipped). */
static double peer_per_s(int clients, int *jobs, char *version, size_t vcap, char *why, size_t wcap)
{
    if (!bench_peers_here(why, wcap))
        return -1;
    char dir[256], cmd[2048], out[1024] = "";
    const char *d = getenv("LAB_BENCH_NPM_DIR");
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s", d ? d : "");
    if (!d)
        snprintf(dir, sizeof dir, "%s/labloop-bench-npm", tmp ? tmp : "/tmp");
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
    char js[300];
    snprintf(js, sizeof js, "%s/peer.js", dir);
    FILE *f = fopen(js, "w");
    if (!f || fputs(peer_js, f) < 0 || fclose(f) != 0) {
        snprintf(why, wcap, "cannot write %s", js);
        return -1;
    }
    h_pg_t pg;
    setenv("H_PG_DURABLE", "1", 1); /* fsync on, as labloop's store commits */
    int pgrc = h_pg_start(&pg);
    unsetenv("H_PG_DURABLE");
    if (pgrc) {
        snprintf(why, wcap, "PostgreSQL did not start");
        return -1;
    }
    char host[256] = "";
    int port = 0;
    sscanf(pg.conninfo, "host=%255s port=%d", host, &port);
    snprintf(cmd, sizeof cmd, "cd '%s' && timeout 120 node peer.js '%s' %d %d %d 2>peer.log", dir,
             host, port, PEER_JOBS, clients);
    int rc = h_run(cmd, out, sizeof out);
    h_pg_destroy(&pg);
    json_t *res = rc == 0 ? json_loads(out, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    if (!json_is_object(res)) {
        json_decref(res);
        snprintf(why, wcap, "graphile-worker did not run, see %s/peer.log", dir);
        return -1;
    }
    *jobs = (int)json_integer_value(json_object_get(res, "jobs"));
    snprintf(version, vcap, "%s", json_string_value(json_object_get(res, "version")) ?: "?");
    double per_s = json_number_value(json_object_get(res, "per_s"));
    json_decref(res);
    return per_s;
}

/* ---- labloopd ---- */

/* A value of the daemon's /metrics, or -1. */
static double metric(const h_daemon_t *d, const char *name)
{
    char *text = NULL;
    double v = -1;
    if (h_http(d->url, "GET", "/metrics", NULL, NULL, &text) == 200 && text) {
        size_t n = strlen(name);
        for (char *p = text; (p = strstr(p, name)); p += n)
            if ((p == text || p[-1] == '\n') && p[n] == ' ') {
                v = strtod(p + n + 1, NULL);
                break;
            }
    }
    free(text);
    return v;
}

typedef struct cell_fig {
    int acked;
    double seconds, per_s, first_per_s, last_per_s;
    long rss_kb, hwm_kb;
    int rss_runs;
} cell_fig_t;

/* Submits count runs in stretches: the first tenth, up to the memory figure, the middle, and
 * the last tenth. */
static void cell_run(const char *extra, int count, int clients, cell_fig_t *f)
{
    h_daemon_t d;
    bench_daemon_start(&d, NULL, NULL, extra);
    char *resp = NULL;
    int st =
        h_http(d.url, "POST", "/v1/workflows", "Content-Type: application/json", workflow, &resp);
    free(resp);
    if (st != 201 && st != 200)
        bench_fail("the workflow was not stored");
    int tenth = count / 10 > 0 ? count / 10 : 1;
    int rss_at = count - tenth < RSS_AT ? count - tenth : RSS_AT;
    int cut[5] = {0, tenth, rss_at > tenth ? rss_at : tenth, count - tenth, count};
    if (cut[3] < cut[2])
        cut[3] = cut[2];
    double secs[4] = {0};
    int acked[4] = {0};
    memset(f, 0, sizeof *f);
    for (int k = 0; k < 4; k++) {
        if (cut[k + 1] > cut[k])
            secs[k] =
                bench_submit_wf(d.url, "assay", clients, cut[k], cut[k + 1] - cut[k], &acked[k]);
        f->acked += acked[k];
        f->seconds += secs[k];
        if (k == 1) {
            f->rss_runs = acked[0] + acked[1];
            f->rss_kb = bench_proc_kb(d.pid, "VmRSS");
            f->hwm_kb = bench_proc_kb(d.pid, "VmHWM");
        }
    }
    f->per_s = f->acked / (f->seconds > 0 ? f->seconds : 1e-3);
    f->first_per_s = acked[0] / (secs[0] > 0 ? secs[0] : 1e-3);
    f->last_per_s = acked[3] / (secs[3] > 0 ? secs[3] : 1e-3);
    double live = metric(&d, "labloop_runs_live"), replans = metric(&d, "labloop_replans_total");
    double replan_max = metric(&d, "labloop_replan_seconds_max");
    json_t *sch = h_api(&d, "GET", "/v1/schedule", NULL, 200);
    json_t *w0 = json_array_get(json_object_get(sch, "waiting"), 0);
    fprintf(stderr,
            "bench: cell runs_live=%.0f replans=%.0f replan_max_s=%.4f planned_steps=%zu "
            "waiting=%zu first_reason=%s\n",
            live, replans, replan_max, json_array_size(json_object_get(sch, "items")),
            json_array_size(json_object_get(sch, "waiting")),
            json_string_value(json_object_get(w0, "reason")) ?: "-");
    json_decref(sch);
    if (h_daemon_stop(&d) != 0)
        bench_fail("labloopd did not stop cleanly");
    h_daemon_destroy(&d);
}

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 20000;
    int clients = argc > 2 ? atoi(argv[2]) : 32;
    if (count < 10 || clients < 1)
        bench_fail("usage: bench_submit [COUNT >= 10 [CLIENTS]]");
    curl_global_init(CURL_GLOBAL_DEFAULT);

    int base_rows;
    double base = baseline_per_s(&base_rows);
    int peer_jobs = 0;
    char peer_version[64] = "", why[1024] = "";
    double peer =
        peer_per_s(clients, &peer_jobs, peer_version, sizeof peer_version, why, sizeof why);
    if (peer < 0) {
        json_t *line = json_pack("{s:s,s:s}", "bench", "graphile_addjob", "skipped", why);
        char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", text ? text : "{\"bench\":\"graphile_addjob\",\"skipped\":\"?\"}");
        free(text);
        json_decref(line);
    } else {
        printf("{\"bench\":\"graphile_addjob\",\"clients\":%d,\"jobs\":%d,\"per_s\":%.0f,"
               "\"version\":\"%s\"}\n",
               clients, peer_jobs, peer, peer_version);
    }
    fflush(stdout);

    h_sim_t sim;
    char dir[256], sections[2048], extra[2400];
    if (h_tempdir("bench-cell", dir, sizeof dir))
        bench_fail("tempdir");
    mix_cell_sections(sections, sizeof sections, dir, h_free_port());
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = 60\nsim_seed = 3\n%s", sections);
    setenv("LABLOOP_SIM", LABLOOP_SIM_PATH, 0);
    if (h_sim_start(&sim, extra))
        bench_fail("labloop-sim did not start");
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = 60\n%s", sections);

    static const struct {
        const char *name, *what;
        bool sim;
    } cells[] = {{"none", "no instruments: every run waits", false},
                 {"sim", "labloop-sim STAR, Liconic, BioTek at time_scale 60", true}};
    int rc = 0;
    for (size_t c = 0; c < sizeof cells / sizeof *cells; c++) {
        cell_fig_t f;
        cell_run(cells[c].sim ? extra : NULL, count, clients, &f);
        rc |= f.acked != count;
        printf(
            "{\"bench\":\"submit\",\"cell\":\"%s\",\"cell_what\":\"%s\",\"workflow_stored\":true,"
            "\"clients\":%d,\"submitted\":%d,\"acked\":%d,\"seconds\":%.3f,"
            "\"acked_per_s\":%.0f,\"first_tenth_per_s\":%.0f,\"last_tenth_per_s\":%.0f,"
            "\"baseline\":%.0f,\"baseline_rows\":%d,"
            "\"baseline_what\":\"sqlite insert+commit per row, synchronous=full, wal\","
            "\"ratio\":%.2f,",
            cells[c].name, cells[c].what, clients, count, f.acked, f.seconds, f.per_s,
            f.first_per_s, f.last_per_s, base, base_rows, f.per_s / base);
        if (peer > 0)
            printf("\"graphile_addjob_per_s\":%.0f,\"ratio_graphile\":%.1f,", peer, f.per_s / peer);
        printf("\"target_acked_per_s\":10000,\"target_ratio_graphile\":10}\n");
        printf("{\"bench\":\"rss\",\"cell\":\"%s\",\"runs_stored\":%d,\"vmrss_kb\":%ld,"
               "\"vmhwm_kb\":%ld,\"vmrss_mb\":%.1f,\"target_mb\":32}\n",
               cells[c].name, f.rss_runs, f.rss_kb, f.hwm_kb, f.rss_kb / 1024.0);
        fflush(stdout);
    }
    h_sim_stop(&sim);
    h_rmtree(dir);
    curl_global_cleanup();
    return rc;
}
