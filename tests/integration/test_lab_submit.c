/* lab_fleet_submit (daemon/fleet/fleet.c) against a real PostgreSQL, in process: the scheduler of
 * sched_fake.h (fake instruments, a manual lab clock), the PostgreSQL writer (migrations, the
 * JSON Schemas, the workflow), and the fleet. A submission into the lab's queue answers the run
 * as the queue holds it; the same key and document replays it; the same key with another
 * document is a conflict; a bad document gets every problem with its path; and the run, claimed
 * by this cell through the fence, is carried out by its scheduler. */
#include "tests/harness/harness.h"
#include "tests/unit/sched_fake.h"
#include "core/id.h"
#include "daemon/fleet/fleet.h"
#include "daemon/store/pg.h"

#define READ_WF                                                                                    \
    "{\"name\":\"read\",\"steps\":[{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":"          \
    "\"plate_reader\",\"duration_s\":60}]}"

typedef struct answer {
    bool done, replayed;
    int status;
    json_t *doc, *problems;
    char msg[512];
} answer_t;

static void on_submit(void *arg, int status, bool replayed, const char *doc, const char *problems,
                      const char *msg)
{
    answer_t *a = arg;
    a->done = true;
    a->status = status;
    a->replayed = replayed;
    a->doc = doc ? json_loads(doc, 0, NULL) : NULL;
    a->problems = problems ? json_loads(problems, 0, NULL) : NULL;
    snprintf(a->msg, sizeof a->msg, "%s", msg ? msg : "");
}

/* Pumps the loop until cond holds or 30 s of wall time passed. */
static bool pump_until(fx_t *f, bool (*cond)(void *), void *arg)
{
    long long end = h_now_ms() + 30000;
    while (h_now_ms() < end) {
        fx_pump(f);
        if (cond(arg))
            return true;
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    return false;
}

static bool answered(void *arg)
{
    return ((answer_t *)arg)->done;
}

static h_pg_t pg;

static bool pg_has(void *sql)
{
    return h_pg_count(&pg, sql) == 1;
}

static bool fleet_ready(void *arg)
{
    lab_fleet_stats_t st;
    lab_fleet_stats(arg, &st);
    return st.connected && st.heartbeats > 0;
}

typedef struct run_wait {
    fx_t *f;
    const char *what;
} run_wait_t;

static bool run_done(void *arg)
{
    run_wait_t *w = arg;
    return fx_run_is(w->f, w->what);
}

typedef struct claims_wait {
    lab_fleet_t *fl;
    long want;
} claims_wait_t;

static bool claims_reach(void *arg)
{
    claims_wait_t *w = arg;
    lab_fleet_stats_t st;
    lab_fleet_stats(w->fl, &st);
    return st.claims >= w->want;
}

static answer_t submit(fx_t *f, lab_fleet_t *fl, const char *doc, const char *key)
{
    answer_t a = {0};
    json_t *sub = json_loads(doc, 0, NULL);
    assert_non_null(sub);
    lab_fleet_submit(fl, sub, key, "http", "tom", on_submit, &a);
    json_decref(sub);
    assert_false(a.done); /* never answered from inside the call */
    assert_true(pump_until(f, answered, &a));
    return a;
}

static void answer_free(answer_t *a)
{
    json_decref(a->doc);
    json_decref(a->problems);
}

static void flag(void *arg)
{
    *(int *)arg = 1;
}

static void test_submit_into_the_lab(void **state)
{
    (void)state;
    assert_int_equal(h_pg_start(&pg), 0);
    fx_t *f = fx_new();
    f->cfg.cell = "cellx";
    f->cfg.site = "lab";
    f->cfg.http = "127.0.0.1:1";
    f->cfg.pg_enabled = true;
    f->cfg.pg_conninfo = pg.conninfo;
    f->cfg.pg_connect_timeout_s = 5;
    f->cfg.pg_retry_max_s = 1;
    f->cfg.pg_batch_rows = 100;
    f->cfg.lab_shared_queue = true;
    f->cfg.lab_lease_s = 15;
    f->cfg.lab_heartbeat_s = 1;
    lab_pg_t *writer = NULL;
    assert_int_equal(lab_pg_start(&writer, &f->loop, &f->cfg, f->st), 0);
    fx_workflow(f, READ_WF);
    assert_true(pump_until(f, pg_has,
                           "SELECT count(*) FROM labloop.workflows WHERE name = 'read' AND "
                           "EXISTS (SELECT 1 FROM labloop.json_schemas WHERE name = "
                           "'run.schema.json')"));
    lab_fleet_t *fl = NULL;
    assert_int_equal(lab_fleet_start(&fl, &f->loop, &f->cfg, &f->clock, f->st, f->in, f->s), 0);
    assert_true(pump_until(f, fleet_ready, fl));

    answer_t a = submit(f, fl, "{\"workflow\":\"read\",\"plate\":\"P9\"}", "key-1");
    assert_int_equal(a.status, 0);
    assert_false(a.replayed);
    const char *id = json_string_value(json_object_get(a.doc, "id"));
    assert_non_null(id);
    assert_true(lab_uuid_valid(id));
    assert_string_equal(json_string_value(json_object_get(a.doc, "origin")), "http");
    assert_string_equal(json_string_value(json_object_get(a.doc, "submitted_by")), "tom");
    assert_string_equal(json_string_value(json_object_get(a.doc, "plate")), "P9");

    answer_t again = submit(f, fl, "{\"workflow\":\"read\",\"plate\":\"P9\"}", "key-1");
    assert_int_equal(again.status, 0);
    assert_true(again.replayed);
    assert_string_equal(json_string_value(json_object_get(again.doc, "id")), id);
    answer_free(&again);

    answer_t other = submit(f, fl, "{\"workflow\":\"read\",\"plate\":\"P10\"}", "key-1");
    assert_int_equal(other.status, LAB_ECONFLICT);
    assert_non_null(strstr(other.msg, "key-1"));
    answer_free(&other);

    answer_t bad = submit(f, fl, "{\"workflow\":5,\"priority\":\"soon\"}", NULL);
    assert_int_equal(bad.status, LAB_EINVAL);
    assert_true(json_is_array(bad.problems));
    bool wf = false, prio = false;
    size_t i;
    json_t *p;
    json_array_foreach(bad.problems, i, p)
    {
        const char *path = json_string_value(json_object_get(p, "path"));
        wf |= path && strcmp(path, "/workflow") == 0;
        prio |= path && strcmp(path, "/priority") == 0;
    }
    assert_true(wf && prio);
    answer_free(&bad);

    /* the run comes back to this cell: claimed, through the fence, carried out */
    char what[80];
    snprintf(what, sizeof what, "%s done", id);
    run_wait_t w = {f, what};
    assert_true(pump_until(f, run_done, &w));
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM labloop.queue WHERE id = '%s' AND cell = 'cellx' AND claims = 1",
             id);
    assert_int_equal(h_pg_count(&pg, sql), 1);
    lab_fleet_stats_t st;
    lab_fleet_stats(fl, &st);
    assert_int_equal(st.claims, 1);
    assert_int_equal(st.fence_ok, 1);
    answer_free(&a);

    /* a burst of 300 (one labloop.submit_runs): claimed a window at a time as runs end, each
     * once; the claim -> local commit latency as the metrics give it */
    long long t0 = h_now_ms();
    assert_int_equal(h_pg_count(&pg, "SELECT count(*) FROM labloop.submit_runs((SELECT "
                                     "jsonb_agg(jsonb_build_object('workflow', 'read', 'plate', "
                                     "'B' || i)) FROM generate_series(1, 300) i))"),
                     300);
    claims_wait_t cw = {fl, 301};
    assert_true(pump_until(f, claims_reach, &cw));
    long long ms = h_now_ms() - t0;
    lab_fleet_stats(fl, &st);
    fprintf(stderr,
            "300 runs claimed in %lld ms (%ld claim transactions); claim -> local commit p50 "
            "%.2f ms, p99 %.2f ms, max %.2f ms\n",
            ms, st.claim_batches, st.lat_p50_ms, st.lat_p99_ms, st.lat_max_ms);
    assert_int_equal(h_pg_count(&pg, "SELECT count(*) FROM labloop.queue WHERE claims <> 1"), 0);
    assert_true(st.lat_n >= 2 && st.lat_p50_ms > 0 && st.lat_p50_ms <= st.lat_p99_ms);

    /* Before the writer's migrations made the queue's functions (a cell that starts on a new
     * database): a submission is "not set up yet", which the API answers 503 with Retry-After,
     * never a 500. */
    assert_int_equal(h_pg_query(&pg,
                                "ALTER FUNCTION labloop.submit_run(jsonb, text, text, text) "
                                "RENAME TO x_run",
                                NULL, 0),
                     0);
    answer_t early = submit(f, fl, "{\"workflow\":\"read\",\"plate\":\"P-early\"}", NULL);
    assert_int_equal(early.status, LAB_ESTATE);
    answer_free(&early);
    assert_int_equal(h_pg_query(&pg,
                                "ALTER FUNCTION labloop.x_run(jsonb, text, text, text) RENAME TO "
                                "submit_run",
                                NULL, 0),
                     0);
    early = submit(f, fl, "{\"workflow\":\"read\",\"plate\":\"P-early\"}", NULL);
    assert_int_equal(early.status, 0);
    answer_free(&early);

    /* Read your own writes: a workflow stored on this cell a moment ago, not yet delivered to
     * PostgreSQL (its writer held up by a lock on labloop.workflows), is waited for, not
     * refused as unknown. */
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "psql '%s' -Xq -c 'BEGIN; LOCK TABLE labloop.workflows IN EXCLUSIVE MODE; SELECT "
             "pg_sleep(2); COMMIT' >/dev/null 2>&1 &",
             pg.conninfo);
    assert_int_equal(system(cmd), 0);
    assert_true(pump_until(f, pg_has,
                           "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                           "WHERE c.relname = 'workflows' AND l.mode = 'ExclusiveLock' AND "
                           "l.granted"));
    fx_workflow(f, "{\"name\":\"read-late\",\"steps\":[{\"name\":\"read\",\"op\":"
                   "\"read_absorbance\",\"on\":\"plate_reader\",\"duration_s\":60}]}");
    answer_t late = submit(f, fl, "{\"workflow\":\"read-late\",\"plate\":\"P-late\"}", NULL);
    if (late.status != 0)
        fail_msg("a run of a workflow stored a moment ago: %d %s", late.status, late.msg);
    answer_free(&late);

    int fleet_stopped = 0, writer_stopped = 0;
    lab_fleet_stop(fl, 2000, flag, &fleet_stopped);
    while (!fleet_stopped)
        uv_run(&f->loop, UV_RUN_ONCE);
    lab_pg_stop(writer, 2000, flag, &writer_stopped);
    while (!writer_stopped)
        uv_run(&f->loop, UV_RUN_ONCE);
    fx_free(f);
    h_pg_destroy(&pg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_into_the_lab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
