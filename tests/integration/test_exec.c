/* Runs carried out end to end: labloopd with real PostgreSQL and mosquitto drives labloop-sim's
 * STAR, Liconic and BioTek over real ptys and TCP through the assay workflow (dispense ->
 * incubate -> read within a maximum lag). Each run's steps, states and 96 absorbance values
 * reach the local store, PostgreSQL and MQTT; a failed step follows the workflow's recovery
 * policy; an operator pauses instruments, cancels runs and resumes paused ones; and `kill -9`
 * during a dispense, an incubation or a read costs nothing: the restarted daemon never repeats
 * a dispense without an operator, lets an incubation finish, and reads again without a
 * duplicate measurement. */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static h_pg_t pg;
static h_mqtt_t mq;
static h_sim_t sim;
static char sections[4096];

#define SCALE "60"

/* The assay at a test's pace: 3 columns dispensed, 2 min incubation, read within 2 min. */
static const char wf_assay[] =
    "{\"name\":\"assay\",\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":120,"
    "\"params\":{\"reagent\":\"substrate\",\"volume_ul\":50,\"wells\":\"A1:H3\"}},"
    "{\"name\":\"incubate\",\"op\":\"incubate\",\"on\":\"incubator\",\"duration_s\":120,"
    "\"params\":{\"temperature_c\":37},\"start_within_s\":300},"
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"plate_reader\",\"duration_s\":90,"
    "\"params\":{\"wavelength_nm\":450},\"start_within_s\":120}],"
    "\"on_failure\":{\"action\":\"retry\",\"retries\":1}}";

/* A read whose failure waits for an operator. */
static const char wf_readonly[] =
    "{\"name\":\"read-only\",\"steps\":["
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"reader1\",\"duration_s\":90,"
    "\"params\":{\"wavelength_nm\":450,\"wells\":\"A1:B2\"}}],"
    "\"on_failure\":{\"action\":\"pause\"}}";

static int setup(void **state)
{
    (void)state;
    char dir[256];
    if (h_pg_start(&pg) || h_mqtt_start(&mq) || h_tempdir("labexec", dir, sizeof dir))
        return -1;
    int rd = h_free_port();
    snprintf(sections, sizeof sections,
             "[instrument inc1]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\nport = "
             "%s/inc1\nsim_plate = P1\n"
             "sim_step_seconds = 2\ncapacity = 8\nsim_from = star1\nsim_to = reader1\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s/star1\nsim_plate = P1\n"
             "sim_reagents = substrate,inhibitor\nsim_step_seconds = 5\n"
             "reagents = substrate,inhibitor\n"
             "[instrument reader1]\ndriver = biotek-synergy\nport = tcp://127.0.0.1:%d\n"
             "sim_plate = P1\n",
             dir, dir, rd);
    char ini[5000];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = " SCALE "\nsim_seed = 3\nsim_noise = 0.001\n%s", sections);
    return h_sim_start(&sim, ini);
}

static int teardown(void **state)
{
    (void)state;
    h_sim_stop(&sim);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
    return 0;
}

static void start_daemon_with(h_daemon_t *d, const char *more)
{
    char extra[4800];
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = " SCALE "\n%s%s", sections, more);
    assert_int_equal(h_daemon_start(d, &pg, &mq, extra), 0);
}

static void start_daemon(h_daemon_t *d)
{
    start_daemon_with(d, "");
}

static void post_workflow(h_daemon_t *d, const char *wf)
{
    char *resp = NULL;
    int st = h_http(d->url, "POST", "/v1/workflows", "Content-Type: application/json", wf, &resp);
    if (st != 201 && st != 200)
        fail_msg("POST /v1/workflows: %d %s", st, resp ? resp : "");
    free(resp);
}

static char *submit(h_daemon_t *d, const char *body)
{
    json_t *doc = h_api(d, "POST", "/v1/runs", body, 201);
    char *id = strdup(json_string_value(json_object_get(doc, "id")));
    json_decref(doc);
    return id;
}

static const char *sval(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k)) ?: "";
}

static json_t *step_of(json_t *run, int k)
{
    return json_array_get(json_object_get(run, "steps"), (size_t)k);
}

/* Waits until step k of the run is in state (and, with loaded, has its plate inside). */
static void wait_step(h_daemon_t *d, const char *id, int k, const char *state, bool loaded)
{
    for (long long end = h_now_ms() + 30000; h_now_ms() < end; h_sleep_ms(5)) {
        json_t *doc = h_run_get(d, id);
        json_t *st = step_of(doc, k);
        bool ok =
            strcmp(sval(st, "state"), state) == 0 && (!loaded || json_object_get(st, "loaded_at"));
        json_decref(doc);
        if (ok)
            return;
    }
    fail_msg("run %s step %d never %s", id, k, state);
}

/* Waits until PostgreSQL holds exactly n measurements of the run. */
static void assert_measurements(const char *id, long long n)
{
    char q[256];
    snprintf(q, sizeof q, "select count(*) from labloop.measurements where run = '%s'", id);
    assert_int_equal(h_pg_count_wait(&pg, q, n, 20000), n);
}

/* A daemon and one run of the assay submitted to it. */
static char *start_assay(h_daemon_t *d)
{
    start_daemon(d);
    post_workflow(d, wf_assay);
    return submit(d, "{\"workflow\":\"assay\",\"plate\":\"P1\"}");
}

/* The labloop CLI against d; returns its exit status, output into out. */
static int cli(h_daemon_t *d, char *out, size_t cap, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s '%s' %s 2>&1", d->url, getenv("LABLOOP_CLI"), args);
    return h_run(cmd, out, cap);
}

/* ---- the assay, end to end ---- */

static void test_assay_end_to_end(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    h_sub_t *meas = h_sub_start(mq.uri, "labloop/v1/lab/+/measurements/#");
    h_sub_t *runs = h_sub_start(mq.uri, "labloop/v1/lab/+/runs/+/state");
    post_workflow(&d, wf_assay);
    char *id = submit(&d, "{\"workflow\":\"assay\",\"plate\":\"P1\",\"priority\":\"high\"}");
    json_t *doc = h_run_wait(&d, id, "done", 60000);
    assert_int_equal(json_integer_value(json_object_get(doc, "lag_violations")), 0);
    for (int k = 0; k < 3; k++) {
        json_t *st = step_of(doc, k);
        assert_string_equal(sval(st, "state"), "done");
        assert_int_equal(json_integer_value(json_object_get(st, "attempts")), 1);
        /* the plan each step started on stays in the finished run's document */
        const char *ps = sval(st, "planned_start"), *pe = sval(st, "planned_end");
        assert_true(*ps && *pe);
        assert_true(strcmp(ps, pe) < 0); /* ISO-8601 UTC texts sort as their times */
    }
    assert_string_equal(sval(step_of(doc, 0), "instrument"), "star1");
    assert_string_equal(sval(step_of(doc, 1), "instrument"), "inc1");
    assert_string_equal(sval(step_of(doc, 2), "instrument"), "reader1");
    /* the read started inside its window after the incubation's end */
    double lag = json_number_value(json_object_get(step_of(doc, 2), "lag_s"));
    assert_true(lag >= 0 && lag <= 120);
    json_decref(doc);

    /* PostgreSQL: the run, its three steps, and 96 values with their unit */
    char q[512];
    snprintf(q, sizeof q,
             "select count(*) from labloop.measurements where run = '%s' "
             "and unit = 'AU' and measure = 'absorbance' and value is not null",
             id);
    assert_int_equal(h_pg_count_wait(&pg, q, 96, 20000), 96);
    snprintf(q, sizeof q, "select count(*) from labloop.steps where run = '%s' and state = 'done'",
             id);
    assert_int_equal(h_pg_count_wait(&pg, q, 3, 20000), 3);
    snprintf(q, sizeof q, "select count(*) from labloop.runs where id = '%s' and state = 'done'",
             id);
    assert_int_equal(h_pg_count_wait(&pg, q, 1, 20000), 1);
    /* the dispensed columns (1-3) read higher than the rest */
    snprintf(q, sizeof q,
             "select count(*) from labloop.measurements where run = '%s' and "
             "substr(well, 2)::int <= 3 and value > (select max(value) + 0.05 from "
             "labloop.measurements where run = '%s' and substr(well, 2)::int > 3)",
             id, id);
    assert_int_equal(h_pg_count(&pg, q), 24);

    /* MQTT: 96 measurements on measurements/{run}, and the run's states up to done */
    assert_true(h_sub_wait(meas, 96, 20000) >= 96);
    h_msg_t *msgs;
    int n = h_sub_messages(meas, &msgs), mine = 0;
    for (int i = 0; i < n; i++)
        mine += strstr(msgs[i].topic, id) && strstr(msgs[i].payload, "\"well\"");
    assert_int_equal(mine, 96);
    bool saw_done = false, saw_running = false;
    for (long long end = h_now_ms() + 10000; !saw_done && h_now_ms() < end; h_sleep_ms(50)) {
        n = h_sub_messages(runs, &msgs);
        for (int i = 0; i < n; i++) {
            saw_done |= strstr(msgs[i].payload, "\"state\":\"done\"") != NULL;
            saw_running |= strstr(msgs[i].payload, "\"state\":\"running\"") != NULL;
        }
    }
    assert_true(saw_done && saw_running);

    /* the timeline keeps what ran */
    json_t *tl = h_api(&d, "GET", "/v1/schedule", NULL, 200);
    json_t *items = json_object_get(tl, "items");
    int found = 0;
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) found +=
        strcmp(sval(it, "run"), id) == 0 && strcmp(sval(it, "state"), "done") == 0 &&
        json_object_get(it, "start") && json_object_get(it, "end");
    assert_int_equal(found, 3);
    /* and says where the plate sat and the read's window after the incubation's end */
    bool site = false, window = false;
    json_array_foreach(items, i, it)
    {
        if (strcmp(sval(it, "run"), id) != 0)
            continue;
        json_t *at = json_object_get(it, "site");
        site |= strcmp(sval(it, "instrument"), "inc1") == 0 &&
                json_integer_value(json_object_get(at, "cassette")) >= 1 &&
                json_integer_value(json_object_get(at, "slot")) >= 1;
        if (strcmp(sval(it, "instrument"), "star1") == 0) /* the first step: no window */
            assert_null(json_object_get(it, "must_start_by"));
        else
            assert_non_null(json_object_get(it, "must_start_by"));
        if (strcmp(sval(it, "instrument"), "reader1") == 0)
            window = strcmp(sval(it, "start"), sval(it, "must_start_by")) <= 0;
    }
    assert_true(site && window);
    assert_int_equal(json_integer_value(json_object_get(tl, "lag_violations")), 0);
    json_decref(tl);
    char *metrics = NULL;
    assert_int_equal(h_http(d.url, "GET", "/metrics", NULL, NULL, &metrics), 200);
    assert_non_null(strstr(metrics, "\nlabloop_lag_violations_total 0\n"));
    assert_non_null(strstr(metrics, "\nlabloop_steps_started_total 3\n"));
    free(metrics);
    h_sub_stop(meas);
    h_sub_stop(runs);
    free(id);
    h_daemon_destroy(&d);
}

/* ---- many plates: each flows through the cell, none breaks a lag, urgent goes first ---- */

static void test_many_runs_keep_their_lags(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    post_workflow(&d, wf_assay);
    enum { N = 6 };
    char *ids[N];
    for (int i = 0; i < N; i++) {
        char body[160];
        snprintf(body, sizeof body,
                 "{\"workflow\":\"assay\",\"plate\":\"M%d\",\"priority\":\"%s\"}", i,
                 i == N - 1 ? "urgent" : "normal");
        ids[i] = submit(&d, body);
    }
    char starts[N][40]; /* ISO times of one format compare as text */
    for (int i = 0; i < N; i++) {
        json_t *doc = h_run_wait(&d, ids[i], "done", 120000);
        assert_int_equal(json_integer_value(json_object_get(doc, "lag_violations")), 0);
        snprintf(starts[i], sizeof starts[i], "%s", sval(step_of(doc, 0), "started_at"));
        json_decref(doc);
    }
    /* the urgent run, submitted last, was dispensed before the normal ones still waiting */
    assert_true(strcmp(starts[N - 1], starts[N - 2]) < 0);
    /* every plate read its own dispense: columns 1-3 above the rest, on each of them */
    for (int i = 0; i < N; i++) {
        char q[512];
        snprintf(q, sizeof q,
                 "select count(*) from labloop.measurements where run = '%s' and "
                 "substr(well, 2)::int <= 3 and value > (select max(value) + 0.05 from "
                 "labloop.measurements where run = '%s' and substr(well, 2)::int > 3)",
                 ids[i], ids[i]);
        for (long long end = h_now_ms() + 20000; h_now_ms() < end; h_sleep_ms(50))
            if (h_pg_count(&pg, q) == 24)
                break;
        assert_int_equal(h_pg_count(&pg, q), 24);
        free(ids[i]);
    }
    /* distinct plates went through the reader, one after another */
    assert_true(h_sim_log_count(&sim, "-> queue:reader1") >= N);
    h_daemon_destroy(&d);
}

/* ---- a new priority re-plans: raised to urgent, a run that waited goes first ---- */

static void test_new_priority_overtakes(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    post_workflow(&d, wf_readonly);
    static char out[65536];
    assert_int_equal(cli(&d, out, sizeof out, "pause reader1"), 0);
    char *a = submit(&d, "{\"workflow\":\"read-only\",\"plate\":\"A\"}");
    char *b = submit(&d, "{\"workflow\":\"read-only\",\"plate\":\"B\"}");
    char args[160], path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/priority", b);
    json_decref(h_api(&d, "POST", path, "{\"priority\":\"soon\"}", 422));
    json_decref(h_api(&d, "POST", path, "{}", 422));
    snprintf(args, sizeof args, "priority %s urgent --score 2.5", b);
    assert_int_equal(cli(&d, out, sizeof out, args), 0);
    json_t *doc = h_run_get(&d, b);
    assert_string_equal(sval(doc, "priority"), "urgent");
    json_decref(doc);
    assert_int_equal(cli(&d, out, sizeof out, "resume reader1"), 0);
    json_t *da = h_run_wait(&d, a, "done", 30000), *db = h_run_wait(&d, b, "done", 30000);
    /* ISO times of one format compare as text */
    assert_true(strcmp(sval(step_of(db, 0), "started_at"), sval(step_of(da, 0), "started_at")) < 0);
    json_decref(da);
    json_decref(db);
    json_decref(h_api(&d, "POST", path, "{\"priority\":\"low\"}", 409));
    char q[256];
    snprintf(q, sizeof q,
             "select count(*) from labloop.runs where id = '%s' and priority = 'urgent'", b);
    assert_int_equal(h_pg_count_wait(&pg, q, 1, 20000), 1);
    free(a);
    free(b);
    h_daemon_destroy(&d);
}

/* ---- a cell with a mover: the plate's move is a step on it, confirmed by a person ---- */

static void test_move_on_a_manual_mover(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon_with(&d, "[instrument arm1]\ndriver = manual-mover\n");
    post_workflow(&d, "{\"name\":\"moved\",\"steps\":["
                      "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"star1\","
                      "\"duration_s\":60,\"params\":{\"reagent\":\"substrate\","
                      "\"volume_ul\":20,\"wells\":\"A1:H1\"}},"
                      "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"reader1\","
                      "\"duration_s\":90,\"params\":{\"wavelength_nm\":450},"
                      "\"start_within_s\":3600}]}");
    char *id = submit(&d, "{\"workflow\":\"moved\",\"plate\":\"MV1\"}");
    /* the read step begins with the move on arm1, which waits for a person */
    wait_step(&d, id, 1, "running", false);
    static char out[65536];
    int rc = -1;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(50))
        if ((rc = cli(&d, out, sizeof out, "action arm1 confirm by=tech")) == 0)
            break;
    assert_int_equal(rc, 0);
    json_t *doc = h_run_wait(&d, id, "done", 30000);
    json_t *read = step_of(doc, 1);
    assert_string_equal(sval(read, "instrument"), "reader1");
    assert_true(json_number_value(json_object_get(read, "lag_s")) >= 0);
    json_decref(doc);
    /* the person was asked to move this plate from the STAR to the reader */
    assert_non_null(strstr(out, "MV1"));
    assert_non_null(strstr(out, "star1"));
    assert_non_null(strstr(out, "reader1"));
    free(id);
    h_daemon_destroy(&d);
}

/* ---- waiting, with a reason; operator pause and resume of an instrument ---- */

static void test_waits_and_says_why(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    /* a workflow nobody stored: refused, unless the run is to wait for it */
    json_decref(h_api(&d, "POST", "/v1/runs", "{\"workflow\":\"nowhere\",\"plate\":\"P1\"}", 422));
    char *id = submit(&d, "{\"workflow\":\"nowhere\",\"plate\":\"P1\",\"await_workflow\":true}");
    json_t *doc = NULL;
    for (long long end = h_now_ms() + 5000; h_now_ms() < end; h_sleep_ms(20)) {
        json_decref(doc);
        doc = h_run_get(&d, id);
        if (json_object_get(doc, "waiting_reason"))
            break;
    }
    assert_non_null(strstr(sval(doc, "waiting_reason"), "nowhere"));
    assert_string_equal(sval(doc, "state"), "queued");
    json_decref(doc);
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    json_decref(h_api(&d, "POST", path, "{\"reason\":\"no such workflow\"}", 200));
    doc = h_run_get(&d, id);
    assert_string_equal(sval(doc, "state"), "cancelled");
    json_decref(doc);
    free(id);

    /* the reader paused by an operator (CLI): the run waits and says so, then goes on */
    post_workflow(&d, wf_readonly);
    static char out[65536];
    assert_int_equal(cli(&d, out, sizeof out, "pause reader1"), 0);
    assert_non_null(strstr(out, "reader1"));
    id = submit(&d, "{\"workflow\":\"read-only\",\"plate\":\"P1\"}");
    doc = NULL;
    for (long long end = h_now_ms() + 5000; h_now_ms() < end; h_sleep_ms(20)) {
        json_decref(doc);
        doc = h_run_get(&d, id);
        if (strstr(sval(doc, "waiting_reason"), "paused"))
            break;
    }
    assert_non_null(strstr(sval(doc, "waiting_reason"), "reader1 paused"));
    json_decref(doc);
    json_t *tl = h_api(&d, "GET", "/v1/schedule", NULL, 200);
    assert_true(json_array_size(json_object_get(tl, "waiting")) >= 1);
    json_decref(tl);
    assert_int_equal(cli(&d, out, sizeof out, "schedule"), 0);
    assert_non_null(strstr(out, "waiting"));
    assert_non_null(strstr(out, "reader1 paused"));
    assert_int_equal(cli(&d, out, sizeof out, "resume reader1"), 0);
    json_decref(h_run_wait(&d, id, "done", 30000));
    char args[128];
    snprintf(args, sizeof args, "run %s", id);
    assert_int_equal(cli(&d, out, sizeof out, args), 0);
    assert_non_null(strstr(out, "read"));
    assert_non_null(strstr(out, "reader1"));
    assert_int_equal(cli(&d, out, sizeof out, "schedule"), 0);
    assert_non_null(strstr(out, id));
    free(id);
    h_daemon_destroy(&d);
}

/* ---- recovery policies ---- */

/* The reader leaves the read of a run of workflow wf unanswered (it is held by an operator
 * pause meanwhile, so it polls nothing; resumed, the read goes first): the read times out.
 * Returns the run's id once the run is in state want. */
static char *failing_read(h_daemon_t *d, const char *wf, const char *want)
{
    char body[160];
    snprintf(body, sizeof body, "{\"workflow\":\"%s\",\"plate\":\"P1\"}", wf);
    /* Connected first: the fault is for the read, not for the reader's connect sequence (which
     * runs once the line has been quiet a moment after the daemon opened it). */
    bool idle = false;
    for (long long end = h_now_ms() + 15000; !idle && h_now_ms() < end; h_sleep_ms(20)) {
        json_t *st = h_api(d, "GET", "/v1/instruments/reader1", NULL, 200);
        idle = strcmp(sval(st, "state"), "idle") == 0;
        json_decref(st);
    }
    assert_true(idle);
    json_decref(h_api(d, "POST", "/v1/instruments/reader1/pause", NULL, 200));
    char *id = submit(d, body);
    assert_int_equal(h_sim_fault(&sim, "reader1", "error", 0), 0);
    h_sleep_ms(200);
    json_decref(h_api(d, "POST", "/v1/instruments/reader1/resume", NULL, 200));
    json_decref(h_run_wait(d, id, want, 30000));
    return id;
}

static void test_failed_read_pauses_then_resumes(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    post_workflow(&d, wf_readonly);
    /* the read times out, and the policy pauses the run */
    char *id = failing_read(&d, "read-only", "paused");
    json_t *doc = h_run_get(&d, id);
    assert_string_equal(sval(step_of(doc, 0), "state"), "failed");
    assert_non_null(strstr(sval(doc, "paused_reason"), "read"));
    json_decref(doc);
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/resume", id);
    json_decref(h_api(&d, "POST", path, "{\"step\":\"later\"}", 422));
    assert_int_equal(h_sim_fault(&sim, "reader1", "clear", 0), 0);
    static char out[65536];
    char args[128];
    snprintf(args, sizeof args, "resume %s --retry", id);
    assert_int_equal(cli(&d, out, sizeof out, args), 0);
    doc = h_run_wait(&d, id, "done", 30000);
    assert_int_equal(json_integer_value(json_object_get(step_of(doc, 0), "attempts")), 2);
    json_decref(doc);
    /* nothing left to resume */
    json_decref(h_api(&d, "POST", path, NULL, 409));
    assert_measurements(id, 4);
    free(id);
    h_daemon_destroy(&d);
}

/* The other two policies: `skip` goes on without the step, `fail` ends the run with why. */
static void test_skip_and_fail_policies(void **state)
{
    (void)state;
    h_daemon_t d;
    start_daemon(&d);
    post_workflow(&d, "{\"name\":\"read-skip\",\"steps\":["
                      "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"reader1\","
                      "\"duration_s\":90,\"params\":{\"wavelength_nm\":450,\"wells\":\"A1\"},"
                      "\"on_failure\":{\"action\":\"skip\"}},"
                      "{\"name\":\"again\",\"op\":\"read_absorbance\",\"on\":\"reader1\","
                      "\"duration_s\":90,\"params\":{\"wavelength_nm\":450,\"wells\":\"A1\"}}]}");
    post_workflow(&d, "{\"name\":\"read-fail\",\"steps\":["
                      "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"reader1\","
                      "\"duration_s\":90,\"params\":{\"wavelength_nm\":450,\"wells\":\"A1\"}}],"
                      "\"on_failure\":{\"action\":\"fail\"}}");
    char *id = failing_read(&d, "read-skip", "done");
    json_t *doc = h_run_get(&d, id);
    assert_string_equal(sval(step_of(doc, 0), "state"), "skipped");
    assert_non_null(strstr(sval(step_of(doc, 0), "error"), "timeout"));
    assert_string_equal(sval(step_of(doc, 1), "state"), "done");
    json_decref(doc);
    assert_measurements(id, 1);
    free(id);
    id = failing_read(&d, "read-fail", "failed");
    doc = h_run_get(&d, id);
    assert_string_equal(sval(step_of(doc, 0), "state"), "failed");
    assert_string_equal(sval(json_object_get(doc, "failure"), "step"), "read");
    json_decref(doc);
    assert_measurements(id, 0);
    free(id);
    h_daemon_destroy(&d);
}

static void test_cancel_during_incubation_unloads(void **state)
{
    (void)state;
    h_daemon_t d;
    char *id = start_assay(&d);
    wait_step(&d, id, 1, "running", true);
    int unloads = h_sim_log_count(&sim, "-> transfer");
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", id);
    json_t *doc = h_api(&d, "POST", path, "{\"reason\":\"wrong plate\"}", 200);
    assert_string_equal(sval(doc, "state"), "cancelled");
    assert_string_equal(sval(step_of(doc, 1), "state"), "cancelled");
    json_decref(doc);
    /* the plate comes out of the incubator */
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(20))
        if (h_sim_log_count(&sim, "-> transfer") > unloads)
            break;
    assert_true(h_sim_log_count(&sim, "-> transfer") > unloads);
    json_decref(h_api(&d, "POST", path, NULL, 409));
    free(id);
    h_daemon_destroy(&d);
}

/* ---- kill -9 ---- */

static void test_kill9_during_dispense(void **state)
{
    (void)state;
    h_daemon_t d;
    char *id = start_assay(&d);
    int before = h_sim_log_count(&sim, "dispense ");
    wait_step(&d, id, 0, "running", false);
    /* in the middle of it: after the STAR dispensed into the first column */
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(2))
        if (h_sim_log_count(&sim, "dispense ") > before)
            break;
    h_daemon_kill9(&d);
    h_sleep_ms(300); /* let the STAR finish what it was told */
    int dispenses = h_sim_log_count(&sim, "dispense ");
    assert_int_equal(h_daemon_restart(&d), 0);
    json_t *doc = h_run_wait(&d, id, "paused", 20000);
    json_t *st = step_of(doc, 0);
    assert_string_equal(sval(st, "state"), "interrupted");
    assert_int_equal(json_integer_value(json_object_get(st, "interruptions")), 1);
    assert_non_null(strstr(sval(doc, "paused_reason"), "dispense"));
    json_decref(doc);
    /* nothing is dispensed while it waits for the operator */
    h_sleep_ms(1000);
    assert_int_equal(h_sim_log_count(&sim, "dispense "), dispenses);
    /* the operator says it happened: the run goes on without a second dispense */
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/resume", id);
    json_decref(h_api(&d, "POST", path, "{\"step\":\"skip\",\"reason\":5}", 422));
    json_decref(h_api(&d, "POST", path, "{\"step\":1,\"reason\":\"x\"}", 422));
    json_t *ans =
        h_api(&d, "POST", path, "{\"step\":\"skip\",\"reason\":\"saw it dispensed\"}", 200);
    assert_string_equal(sval(ans, "resume_reason"), "saw it dispensed");
    assert_string_equal(sval(ans, "resumed_how"), "skip");
    assert_string_equal(sval(ans, "resumed_by"), "anonymous");
    json_decref(ans);
    doc = h_run_wait(&d, id, "done", 60000);
    assert_string_equal(sval(doc, "resume_reason"), "saw it dispensed");
    assert_string_equal(sval(step_of(doc, 0), "state"), "skipped");
    assert_string_equal(sval(step_of(doc, 2), "state"), "done");
    json_decref(doc);
    assert_int_equal(h_sim_log_count(&sim, "dispense "), dispenses);
    free(id);
    h_daemon_destroy(&d);
}

static void test_kill9_during_incubation(void **state)
{
    (void)state;
    h_daemon_t d;
    char *id = start_assay(&d);
    wait_step(&d, id, 1, "running", true);
    int loads = h_sim_log_count(&sim, "transfer:inc1 -> inc1");
    h_daemon_kill9(&d);
    assert_int_equal(h_daemon_restart(&d), 0);
    json_t *doc = h_run_wait(&d, id, "done", 60000);
    json_t *st = step_of(doc, 1);
    assert_string_equal(sval(st, "state"), "done");
    assert_int_equal(json_integer_value(json_object_get(st, "attempts")), 1);
    assert_int_equal(json_integer_value(json_object_get(st, "interruptions")), 1);
    json_decref(doc);
    /* the plate was not loaded a second time */
    assert_int_equal(h_sim_log_count(&sim, "transfer:inc1 -> inc1"), loads);
    assert_measurements(id, 96);
    free(id);
    h_daemon_destroy(&d);
}

static void test_kill9_during_read(void **state)
{
    (void)state;
    h_daemon_t d;
    char *id = start_assay(&d);
    wait_step(&d, id, 2, "running", false);
    h_daemon_kill9(&d);
    assert_int_equal(h_daemon_restart(&d), 0);
    json_t *doc = h_run_wait(&d, id, "done", 60000);
    json_t *st = step_of(doc, 2);
    assert_string_equal(sval(st, "state"), "done");
    assert_int_equal(json_integer_value(json_object_get(st, "attempts")), 2);
    json_decref(doc);
    /* one read's worth of values, not two */
    assert_measurements(id, 96);
    h_sleep_ms(500); /* and no second set arrives later */
    assert_measurements(id, 96);
    free(id);
    h_daemon_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assay_end_to_end),
        cmocka_unit_test(test_many_runs_keep_their_lags),
        cmocka_unit_test(test_new_priority_overtakes),
        cmocka_unit_test(test_move_on_a_manual_mover),
        cmocka_unit_test(test_waits_and_says_why),
        cmocka_unit_test(test_failed_read_pauses_then_resumes),
        cmocka_unit_test(test_skip_and_fail_policies),
        cmocka_unit_test(test_cancel_during_incubation_unloads),
        cmocka_unit_test(test_kill9_during_dispense),
        cmocka_unit_test(test_kill9_during_incubation),
        cmocka_unit_test(test_kill9_during_read),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
