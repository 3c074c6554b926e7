/* The lab's shared queue with two labloopd on one PostgreSQL ([lab] shared_queue = on), each
 * with its own labloop-sim instruments: cell A has a plate reader and an incubator, cell B an
 * incubator only. Runs submitted by SQL (labloop.submit_run) are each run once, on a cell able
 * to run them, and B never claims a run that reads. Then `kill -9` of B while it holds claimed
 * runs it has not begun: they return to the queue once its lease is out and A runs them; the one
 * B had begun stays B's (stranded); and B restarted gives back what A took without running it.
 * A graceful stop gives its claims back at once; PostgreSQL away for a while stops no run begun,
 * and a cell without the workflow a claimed run follows takes it from labloop.workflows. */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define SCALE "60"
#define LEASE_S 4

static const char wf_read[] =
    "{\"name\":\"read-only\",\"steps\":["
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"plate_reader\",\"duration_s\":30,"
    "\"params\":{\"wavelength_nm\":450,\"wells\":\"A1:B2\"}}],"
    "\"on_failure\":{\"action\":\"pause\"}}";

static const char wf_incubate[] =
    "{\"name\":\"warm\",\"steps\":["
    "{\"name\":\"incubate\",\"op\":\"incubate\",\"on\":\"incubator\",\"duration_s\":120,"
    "\"params\":{\"temperature_c\":37}}],"
    "\"on_failure\":{\"action\":\"pause\"}}";

static h_pg_t pg;
static h_sim_t sim;
/* The two cells of a test, stopped by its teardown even when it fails (their instruments are
 * the next test's). */
static h_daemon_t a, b;
static bool a_up, b_up;
static char dir[256], sec_a[1024], sec_b[1024];

static int setup(void **state)
{
    (void)state;
    if (h_pg_start(&pg) || h_tempdir("labfleet", dir, sizeof dir))
        return -1;
    int rd = h_free_port();
    snprintf(sec_a, sizeof sec_a,
             "[instrument inc1]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\nport = "
             "%s/inc1\nsim_plate = P1\nsim_step_seconds = 2\ncapacity = 1\n"
             "[instrument reader1]\ndriver = biotek-synergy\nport = tcp://127.0.0.1:%d\n"
             "sim_plate = P1\n",
             dir, rd);
    snprintf(sec_b, sizeof sec_b,
             "[instrument inc2]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\nport = "
             "%s/inc2\nsim_plate = P2\nsim_step_seconds = 2\ncapacity = 1\n",
             dir);
    char ini[3000];
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = " SCALE "\nsim_seed = 5\n%s%s", sec_a,
             sec_b);
    return h_sim_start(&sim, ini);
}

static int teardown(void **state)
{
    (void)state;
    h_sim_stop(&sim);
    h_pg_destroy(&pg);
    h_rmtree(dir);
    return 0;
}

static int cells_down(void **state)
{
    (void)state;
    if (a_up)
        h_daemon_destroy(&a);
    if (b_up)
        h_daemon_destroy(&b);
    a_up = b_up = false;
    return 0;
}

static void start_cell(h_daemon_t *d, const char *sections)
{
    *(d == &a ? &a_up : &b_up) = true;
    char extra[2000];
    snprintf(extra, sizeof extra,
             "[labloop]\ntime_scale = " SCALE "\n[lab]\nshared_queue = on\nlease = %d\n"
             "heartbeat = 1\n%s",
             LEASE_S, sections);
    assert_int_equal(h_daemon_start(d, &pg, NULL, extra), 0);
}

/* Stores both workflows on the cell (each cell runs what its own store holds). */
static void workflows(const h_daemon_t *d)
{
    char *resp = NULL;
    int st =
        h_http(d->url, "POST", "/v1/workflows", "Content-Type: application/json", wf_read, &resp);
    assert_true(st == 201 || st == 200);
    free(resp);
    resp = NULL;
    st = h_http(d->url, "POST", "/v1/workflows", "Content-Type: application/json", wf_incubate,
                &resp);
    assert_true(st == 201 || st == 200);
    free(resp);
}

static void submit(const char *wf, const char *plate, int n)
{
    char sql[400], out[128];
    for (int i = 0; i < n; i++) {
        snprintf(sql, sizeof sql,
                 "SELECT labloop.submit_run('{\"workflow\":\"%s\",\"plate\":\"%s\"}'::jsonb)", wf,
                 plate);
        assert_int_equal(h_pg_query(&pg, sql, out, sizeof out), 0);
        assert_int_equal(strlen(out), 36);
    }
}

/* counts in the test's PostgreSQL, the SQL formatted */
#define count(...) h_pg_countf(&pg, __VA_ARGS__)

#define count_wait(want, ms, ...) h_pg_count_waitf(&pg, want, ms, __VA_ARGS__)

static void test_cells_claim_what_they_can_run(void **state)
{
    (void)state;
    char ca[64], cb[64];
    start_cell(&a, sec_a);
    start_cell(&b, sec_b);
    h_daemon_cell_name(&a, ca, sizeof ca);
    h_daemon_cell_name(&b, cb, sizeof cb);
    workflows(&a);
    workflows(&b);
    /* both cells are up, and the workflows reached PostgreSQL */
    assert_int_equal(count_wait(2, 30000, "SELECT count(*) FROM labloop.cells WHERE state = 'up'"),
                     2);
    assert_int_equal(count_wait(2, 30000,
                                "SELECT count(DISTINCT name) FROM labloop.workflows WHERE name IN "
                                "('read-only', 'warm')"),
                     2);
    submit("read-only", "P1", 4);
    submit("warm", "P2", 4);
    assert_int_equal(
        count_wait(8, 120000, "SELECT count(*) FROM labloop.queue WHERE state = 'finished'"), 8);
    /* every run once, on a cell able to run it: the reads on A */
    assert_int_equal(count("SELECT count(*) FROM labloop.queue WHERE claims <> 1"), 0);
    assert_int_equal(count("SELECT count(*) FROM labloop.queue WHERE workflow = 'read-only' AND "
                           "cell = '%s'",
                           ca),
                     4);
    assert_int_equal(count("SELECT count(*) FROM labloop.events e JOIN labloop.queue q ON "
                           "q.id::text = e.key WHERE e.kind = 'run.state' AND e.cell = '%s' AND "
                           "q.workflow = 'read-only'",
                           cb),
                     0);
    assert_int_equal(count("SELECT count(*) FROM labloop.runs r JOIN labloop.queue q ON q.id = "
                           "r.id WHERE r.state = 'done' AND r.cell = q.cell"),
                     8);
    /* the lab view: both cells up, the queue all finished; the same through the CLI */
    json_t *lab = h_api(&b, "GET", "/v1/lab", NULL, 200);
    json_t *cells = json_object_get(lab, "cells");
    assert_int_equal(json_array_size(cells), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(cells, 0), "state")),
                        "up");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(lab, "queue"), "finished")),
                     8);
    json_decref(lab);
    json_t *page = h_api(&a, "GET", "/v1/lab/runs?limit=5", NULL, 200);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 5);
    char path[160];
    snprintf(path, sizeof path, "/v1/lab/runs?limit=5&after=%s",
             json_string_value(json_object_get(page, "next")));
    json_decref(page);
    page = h_api(&a, "GET", path, NULL, 200);
    assert_int_equal(json_array_size(json_object_get(page, "items")), 3);
    assert_null(json_object_get(page, "next"));
    json_decref(page);
    json_decref(h_api(&a, "GET", "/v1/lab/runs?state=done", NULL, 400));
    char cmd[700], out[8192];
    const char *cli = getenv("LABLOOP_CLI");
    snprintf(cmd, sizeof cmd, "LABLOOP_URL='%s' '%s' lab 2>&1", a.url,
             cli && *cli ? cli : "labloop");
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, ca));
    assert_non_null(strstr(out, cb));
    assert_non_null(strstr(out, "finished=8"));
    /* B (an incubator alone) ran only warm runs, as many as the queue says (A, which has an
     * incubator too, may have taken all of them); A ran every read */
    snprintf(cmd, sizeof cmd, "LABLOOP_URL='%s' '%s' runs --lab --cell %s 2>&1", a.url,
             cli && *cli ? cli : "labloop", cb);
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    long long on_b = count("SELECT count(*) FROM labloop.queue WHERE cell = '%s'", cb), warm = 0;
    for (const char *p = strstr(out, "warm"); p; p = strstr(p + 4, "warm"))
        warm++;
    if (warm != on_b)
        fail_msg("labloop runs --lab --cell %s: %lld warm runs listed, the queue says %lld:\n%s",
                 cb, warm, on_b, out);
    assert_null(strstr(out, "read-only"));
    snprintf(cmd, sizeof cmd, "LABLOOP_URL='%s' '%s' runs --lab --cell %s 2>&1", a.url,
             cli && *cli ? cli : "labloop", ca);
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "read-only"));

    /* the metrics count the claims and time them */
    long long claims =
        h_metric(&a, "labloop_lab_claims_total") + h_metric(&b, "labloop_lab_claims_total");
    assert_int_equal(claims, 8);
    assert_true(h_metric(&a, "labloop_lab_fence_total{answer=\"started\"}") >= 4);
    char *m = NULL;
    assert_int_equal(h_http(a.url, "GET", "/metrics", NULL, NULL, &m), 200);
    for (char *l = strstr(m, "labloop_lab_claim_commit_seconds{"); l;
         l = strstr(l + 1, "labloop_lab_claim_commit_seconds{"))
        fprintf(stderr, "%.*s\n", (int)strcspn(l, "\n"), l);
    free(m);
}

static void test_kill9_hands_claims_to_another_cell(void **state)
{
    (void)state;
    char ca[64], cb[64];
    /* B alone first: it claims every incubation, begins one (capacity 1), holds the rest */
    start_cell(&b, sec_b);
    h_daemon_cell_name(&b, cb, sizeof cb);
    workflows(&b);
    assert_int_equal(
        count_wait(1, 30000,
                   "SELECT count(DISTINCT name) FROM labloop.workflows WHERE name = 'warm'"),
        1);
    submit("warm", "P2", 8);
    assert_int_equal(count_wait(8, 30000,
                                "SELECT count(*) FROM labloop.queue WHERE cell = '%s' AND state "
                                "IN ('claimed', 'started', 'finished')",
                                cb),
                     8);
    assert_true(count_wait(1, 30000,
                           "SELECT count(*) FROM labloop.queue WHERE cell = '%s' AND state IN "
                           "('started', 'finished')",
                           cb) >= 1);
    h_daemon_kill9(&b);
    long long held = count("SELECT count(*) FROM labloop.queue WHERE cell = '%s' AND state = "
                           "'claimed'",
                           cb);
    long long begun = count("SELECT count(*) FROM labloop.queue WHERE cell = '%s' AND state = "
                            "'started'",
                            cb);
    fprintf(stderr, "killed %s holding %lld claimed, %lld started\n", cb, held, begun);
    assert_true(held >= 1);
    start_cell(&a, sec_a);
    h_daemon_cell_name(&a, ca, sizeof ca);
    workflows(&a);
    /* B's lease runs out: its claimed runs go back and A takes them, then runs them */
    assert_int_equal(count_wait(held, (LEASE_S + 20) * 1000,
                                "SELECT count(*) FROM labloop.queue WHERE cell = '%s' AND claims "
                                "= 2",
                                ca),
                     held);
    assert_int_equal(count_wait(held, 120000,
                                "SELECT count(*) FROM labloop.queue WHERE cell = '%s' AND state "
                                "= 'finished' AND claims = 2",
                                ca),
                     held);
    /* the run B began stays B's, stranded with the reason */
    assert_int_equal(count("SELECT count(*) FROM labloop.lab_runs WHERE cell = '%s' AND stranded "
                           "AND stranded_reason LIKE 'cell %s has not been heard from since %%'",
                           cb, cb),
                     begun);
    /* an operator cancels a run B began while B is away; B honours it when it comes back */
    char sql[600], id[64], began_id[64] = "";
    if (begun > 0) {
        snprintf(sql, sizeof sql,
                 "SELECT id FROM labloop.queue WHERE cell = '%s' AND state = 'started' LIMIT 1",
                 cb);
        assert_int_equal(h_pg_query(&pg, sql, began_id, sizeof began_id), 0);
        assert_int_equal(count("SELECT count(*) FROM (SELECT labloop.cancel_run('%s', 'operator', "
                               "'plate taken out by hand') AS s) x WHERE s = 'cancelled'",
                               began_id),
                         1);
    }
    /* B comes back: it does not run what A took; those runs are released in its store */
    assert_int_equal(h_daemon_restart(&b), 0);
    assert_int_equal(count_wait(1, 30000,
                                "SELECT count(*) FROM labloop.cells WHERE cell = '%s' AND state = "
                                "'up'",
                                cb),
                     1);
    if (began_id[0])
        assert_int_equal(count_wait(1, 30000,
                                    "SELECT count(*) FROM labloop.runs WHERE id = '%s' AND cell = "
                                    "'%s' AND state = 'cancelled'",
                                    began_id, cb),
                         1);
    fprintf(stderr, "%s began %lld run(s); cancelled in the lab while away: %s\n", cb, begun,
            began_id[0] ? began_id : "none");
    snprintf(sql, sizeof sql,
             "SELECT id FROM labloop.queue WHERE cell = '%s' AND claims = 2 LIMIT 1", ca);
    assert_int_equal(h_pg_query(&pg, sql, id, sizeof id), 0);
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    json_t *run = NULL;
    for (int i = 0; i < 100; i++) {
        json_decref(run);
        run = h_api(&b, "GET", path, NULL, 200);
        if (strcmp(json_string_value(json_object_get(run, "state")), "released") == 0)
            break;
        h_sleep_ms(100);
    }
    assert_string_equal(json_string_value(json_object_get(run, "state")), "released");
    json_decref(run);
    /* no run of A's was done by B: B's run.state rows for them end released, none started */
    assert_int_equal(count("SELECT count(*) FROM labloop.events e JOIN labloop.queue q ON "
                           "q.id::text = e.key WHERE e.kind = 'run.state' AND e.cell = '%s' AND "
                           "q.cell = '%s' AND e.payload->>'state' IN ('running', 'done')",
                           cb, ca),
                     0);
}

/* A graceful stop gives back the claimed runs it has not begun: they are queued again at once
 * (no lease to wait for), released in the stopped cell's store, and its row says stopping. */
static void test_stop_gives_back_claims(void **state)
{
    (void)state;
    char cb[64];
    start_cell(&b, sec_b);
    h_daemon_cell_name(&b, cb, sizeof cb);
    workflows(&b);
    assert_int_equal(count_wait(1, 30000,
                                "SELECT count(*) FROM labloop.cells WHERE cell = '%s' AND state = "
                                "'up'",
                                cb),
                     1);
    submit("warm", "P2", 6);
    assert_int_equal(count_wait(6, 30000,
                                "SELECT count(*) FROM labloop.queue WHERE cell = '%s' AND state "
                                "IN ('claimed', 'started', 'finished') AND submitted_at > now() - "
                                "interval '1 minute'",
                                cb),
                     6);
    assert_int_equal(h_daemon_stop(&b), 0);
    b_up = false;
    assert_int_equal(count("SELECT count(*) FROM labloop.queue WHERE cell = '%s' AND state = "
                           "'claimed'",
                           cb),
                     0);
    assert_true(count("SELECT count(*) FROM labloop.queue WHERE state = 'queued'") >= 1);
    assert_int_equal(count("SELECT count(*) FROM labloop.cells WHERE cell = '%s' AND state = "
                           "'stopping'",
                           cb),
                     1);
    /* the runs it gave back are `released` in its own store */
    assert_true(count("SELECT count(*) FROM labloop.events WHERE cell = '%s' AND kind = "
                      "'run.state' AND payload->>'state' = 'released'",
                      cb) >= 1);
    /* nothing is left in the queue for the next test */
    assert_true(count("SELECT count(*) FROM (SELECT labloop.cancel_run(id, 'test', 'cleanup') "
                      "FROM labloop.queue WHERE state = 'queued') c") >= 1);
}

/* PostgreSQL goes away for a while: the cell carries on with the run it has begun, begins none
 * of those it holds unconfirmed, and once PostgreSQL is back it confirms them, runs them and
 * claims new submissions again. */
static void test_postgres_down_and_back(void **state)
{
    (void)state;
    char ca[64];
    start_cell(&a, sec_a);
    h_daemon_cell_name(&a, ca, sizeof ca);
    /* no workflow stored on this cell: it takes the version its claimed runs follow from
     * labloop.workflows (stored there by the earlier tests' cells) */
    json_decref(h_api(&a, "GET", "/v1/workflows/warm", NULL, 404));
    assert_int_equal(count_wait(1, 30000,
                                "SELECT count(*) FROM labloop.cells WHERE cell = '%s' AND state = "
                                "'up'",
                                ca),
                     1);
    submit("warm", "P1", 3);
    assert_int_equal(count_wait(3, 30000,
                                "SELECT count(*) FROM labloop.queue WHERE cell = '%s' AND state "
                                "IN ('claimed', 'started', 'finished')",
                                ca),
                     3);
    char id[64] = "";
    long long end = h_now_ms() + 30000;
    while (!id[0] && h_now_ms() < end) {
        char sql[300];
        snprintf(sql, sizeof sql,
                 "SELECT id FROM labloop.queue WHERE cell = '%s' AND state = 'started' LIMIT 1",
                 ca);
        assert_int_equal(h_pg_query(&pg, sql, id, sizeof id), 0);
        if (!id[0])
            h_sleep_ms(20);
    }
    assert_int_equal(strlen(id), 36);
    assert_int_equal(h_pg_stop(&pg), 0);
    /* the run begun goes on to its end without PostgreSQL */
    json_decref(h_run_wait(&a, id, "done", 60000));
    assert_true(h_metric(&a, "labloop_lab_connected") == 0);
    assert_int_equal(h_pg_restart(&pg), 0);
    /* back: the held runs are confirmed and run, and new submissions are claimed */
    submit("warm", "P1", 1);
    assert_int_equal(count_wait(4, 120000,
                                "SELECT count(*) FROM labloop.queue WHERE cell = '%s' AND state "
                                "= 'finished' AND submitted_at > now() - interval '5 minutes'",
                                ca),
                     4);
    assert_int_equal(
        count("SELECT count(*) FROM labloop.queue WHERE claims <> 1 AND cell = '%s'", ca), 0);
    json_decref(h_api(&a, "GET", "/v1/workflows/warm", NULL, 200));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cells_claim_what_they_can_run, cells_down),
        cmocka_unit_test_teardown(test_kill9_hands_claims_to_another_cell, cells_down),
        cmocka_unit_test_teardown(test_stop_gives_back_claims, cells_down),
        cmocka_unit_test_teardown(test_postgres_down_and_back, cells_down),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
