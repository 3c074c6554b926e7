/* Benchmark: what the audit trail adds to a run's writes. The same store ops, each writing one
 * run document as a run submission does, committed in the store's groups: once as "run.state"
 * (audited: the entry is hashed, chained and appended with its outbox row) and once as a kind the
 * audit does not record. Both in the same process, on the same disk, alternating rounds so that
 * neither profits from a warmer cache. One JSON line per figure.
 *
 *   bench_audit [N [ROUNDS]]     defaults 20000 ops and 3 rounds */
#include "tests/bench/bench_util.h"
#include "core/mem.h"
#include "daemon/store/store.h"

#include <uv.h>

typedef struct wop {
    lab_store_op_t op;
    const char *kind;
    const char *doc;
    int *left;
} wop_t;

static int wop_apply(lab_store_op_t *op, sqlite3 *db)
{
    wop_t *w = (wop_t *)op;
    return lab_outbox_append(db, w->kind, "7f1c2e9a-0000-4000-8000-000000000001", w->doc,
                             1764925200000) < 0
               ? -1
               : 0;
}

static void wop_done(lab_store_op_t *op, int status)
{
    wop_t *w = (wop_t *)op;
    if (status)
        bench_fail("a store op failed");
    --*w->left;
}

/* A run document as POST /v1/runs stores one: six steps with their fields. */
static char *run_doc(void)
{
    json_t *steps = json_array();
    for (int i = 0; i < 6; i++)
        json_array_append_new(steps, json_pack("{s:s, s:s, s:s, s:s, s:i, s:f}", "name", "step",
                                               "op", "dispense", "instrument", "star1", "state",
                                               "pending", "attempts", 0, "max_lag_s", 120.0));
    json_t *d =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:f, s:s, s:s, s:o}", "id",
                  "7f1c2e9a-0000-4000-8000-000000000001", "state", "queued", "workflow", "elisa",
                  "plate", "P-000123", "priority", "normal", "score", 0.5, "submitted_by", "tom",
                  "created_at", "2026-12-05T09:00:00.000Z", "steps", steps);
    char *s = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    return s;
}

static double round_us(uv_loop_t *loop, lab_store_t *st, const char *kind, const char *doc, int n)
{
    wop_t *ops = lab_calloc((size_t)n, sizeof *ops);
    int left = n;
    double t0 = bench_now_ms();
    for (int i = 0; i < n; i++) {
        ops[i] = (wop_t){
            .op = {.apply = wop_apply, .done = wop_done}, .kind = kind, .doc = doc, .left = &left};
        lab_store_submit(st, &ops[i].op);
    }
    while (left > 0)
        uv_run(loop, UV_RUN_ONCE);
    double us = (bench_now_ms() - t0) * 1000.0 / n;
    free(ops);
    return us;
}

static void closed(void *arg)
{
    *(int *)arg = 1;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000, rounds = argc > 2 ? atoi(argv[2]) : 3;
    if (n <= 0 || rounds <= 0)
        bench_fail("usage: bench_audit [N [ROUNDS]]");
    char dir[256];
    if (h_tempdir("labloop-bench-audit", dir, sizeof dir))
        bench_fail("no temporary directory");
    uv_loop_t loop;
    uv_loop_init(&loop);
    lab_store_t *st;
    if (lab_store_open(&st, &loop, dir))
        bench_fail("store open");
    char *doc = run_doc();
    double audited = 1e18, plain = 1e18;
    for (int r = 0; r < rounds; r++) {
        double a = round_us(&loop, st, "run.state", doc, n);
        double p = round_us(&loop, st, "measurement", doc, n);
        audited = a < audited ? a : audited;
        plain = p < plain ? p : plain;
    }
    int done = 0;
    lab_store_close(st, closed, &done);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(doc);
    h_rmtree(dir);
    printf("{\"bench\":\"audit\",\"ops\":%d,\"rounds\":%d,\"audited_us\":%.2f}\n", n, rounds,
           audited);
    printf("{\"bench\":\"audit\",\"plain_us\":%.2f}\n", plain);
    printf("{\"bench\":\"audit\",\"overhead_pct\":%.1f}\n", (audited - plain) / plain * 100.0);
    return 0;
}
