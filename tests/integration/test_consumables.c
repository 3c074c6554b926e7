/* A liquid handler's tips and troughs, end to end: labloopd with PostgreSQL and mosquitto drives
 * labloop-sim's STAR, whose section declares one rack of 24 tips and a 1000 µL substrate trough.
 * Each dispense run takes 8 tips and 800 µL (A1:H2, 50 µL a well). Two runs submitted together
 * compete for the trough: one runs, the other waits with the exact shortfall as its waiting
 * reason until a refill reported through the API lets it run. A manual pick-up and aspirate
 * count as well; the counts reach PostgreSQL (labloop.consumables) and the retained MQTT topic
 * instruments/star1/consumables, and survive a restart and a kill -9. */
#include "tests/harness/harness.h"
#include "tests/integration/mix_cell.h"

#include <jansson.h>
#include <math.h>
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
static h_daemon_t dmn;

#define SCALE "60"
#define WAIT_MS 90000

static const char wf_disp[] =
    "{\"name\":\"cdisp\",\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":60,"
    "\"params\":{\"reagent\":\"substrate\",\"volume_ul\":50,\"wells\":\"A1:H2\"}}]}";

static int setup(void **state)
{
    (void)state;
    char dir[256], section[1024], ini[2000], extra[2000];
    if (h_pg_start(&pg) || h_mqtt_start(&mq) || h_tempdir("labcons", dir, sizeof dir))
        return -1;
    snprintf(section, sizeof section,
             "[instrument star1]\ndriver = hamilton-star\nport = %s/star1\nsim_plate = P1\n"
             "sim_reagents = substrate,inhibitor\nsim_step_seconds = 1\n"
             "reagents = substrate,inhibitor\n",
             dir);
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = " SCALE "\nsim_seed = 7\n%s", section);
    if (h_sim_start(&sim, ini))
        return -1;
    snprintf(extra, sizeof extra,
             "[labloop]\ntime_scale = " SCALE
             "\n%stip_racks = 1\ntips_per_rack = 24\ntip_columns = 3\nmove_timeout_s = 300\n"
             "troughs = substrate: 1000\n",
             section);
    if (h_daemon_start(&dmn, &pg, &mq, extra))
        return -1;
    char *resp = NULL;
    int st =
        h_http(dmn.url, "POST", "/v1/workflows", "Content-Type: application/json", wf_disp, &resp);
    free(resp);
    return st == 201 || st == 200 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    h_daemon_destroy(&dmn);
    h_sim_stop(&sim);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
    return 0;
}

static json_t *consumables(void)
{
    return h_api(&dmn, "GET", "/v1/instruments/star1/consumables", NULL, 200);
}

static double trough_left(json_t *doc)
{
    return json_number_value(
        json_object_get(json_array_get(json_object_get(doc, "troughs"), 0), "left_ul"));
}

static long tips_left(json_t *doc)
{
    return (long)json_integer_value(json_object_get(json_object_get(doc, "tips"), "left"));
}

static char *submit(const char *plate)
{
    char body[200];
    snprintf(body, sizeof body, "{\"workflow\":\"cdisp\",\"plate\":\"%s\"}", plate);
    json_t *r = h_api(&dmn, "POST", "/v1/runs", body, 201);
    char *id = strdup(json_string_value(json_object_get(r, "id")));
    json_decref(r);
    return id;
}

/* Waits for the run's waiting reason to be want; fails with the last one seen. */
static void wait_reason(const char *id, const char *want)
{
    char last[1100] = "";
    for (long long end = h_now_ms() + WAIT_MS; h_now_ms() < end; h_sleep_ms(100)) {
        json_t *r = h_run_get(&dmn, id);
        const char *why = json_string_value(json_object_get(r, "waiting_reason"));
        snprintf(last, sizeof last, "%s (state %s)", why ? why : "none",
                 json_string_value(json_object_get(r, "state")));
        bool ok = why && strcmp(why, want) == 0;
        json_decref(r);
        if (ok)
            return;
    }
    fail_msg("run %s: waiting reason '%s', wanted '%s'", id, last, want);
}

static const char *state_of(json_t *run)
{
    return json_string_value(json_object_get(run, "state")) ?: "";
}

/* Two runs need 800 µL each of a 1000 µL trough: one runs, the other waits with the shortfall
 * (net of what the running one reserved, then of what it used) until a refill. */
static void test_compete_wait_refill(void **state)
{
    (void)state;
    json_t *c = consumables();
    assert_true(trough_left(c) == 1000);
    assert_int_equal(tips_left(c), 24);
    json_decref(c);

    char *a = submit("C-A"), *b = submit("C-B");
    const char *want = "trough substrate: 200 µL left, 800 µL needed";
    /* whichever the planner put first runs; the other waits */
    json_t *ra = NULL, *rb = NULL;
    for (long long end = h_now_ms() + WAIT_MS; h_now_ms() < end; h_sleep_ms(100)) {
        json_decref(ra);
        json_decref(rb);
        ra = h_run_get(&dmn, a);
        rb = h_run_get(&dmn, b);
        if (!strcmp(state_of(ra), "done") || !strcmp(state_of(rb), "done"))
            break;
    }
    bool a_done = strcmp(state_of(ra), "done") == 0;
    json_decref(ra);
    json_decref(rb);
    const char *first = a_done ? a : b, *second = a_done ? b : a;
    wait_reason(second, want);
    json_t *r = h_run_get(&dmn, second);
    assert_string_not_equal(state_of(r), "running");
    assert_string_not_equal(state_of(r), "done");
    json_decref(r);
    /* the timeline's waiting list says the same */
    json_t *sched = h_api(&dmn, "GET", "/v1/schedule", NULL, 200);
    bool listed = false;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(sched, "waiting"), i, w)
    {
        listed |= strcmp(json_string_value(json_object_get(w, "run")) ?: "", second) == 0 &&
                  strcmp(json_string_value(json_object_get(w, "reason")) ?: "", want) == 0;
    }
    json_decref(sched);
    assert_true(listed);

    c = consumables();
    assert_true(trough_left(c) == 200);
    assert_int_equal(tips_left(c), 16);
    json_decref(c);
    json_decref(h_run_get(&dmn, first));

    /* a refill through the API lets it run */
    json_t *doc = h_api(&dmn, "POST", "/v1/instruments/star1/consumables/refill",
                        "{\"trough\":\"substrate\",\"reason\":\"new bottle\"}", 200);
    assert_true(trough_left(doc) == 1000);
    json_t *refilled = json_object_get(doc, "refilled");
    assert_string_equal(json_string_value(json_object_get(refilled, "trough")), "substrate");
    assert_string_equal(json_string_value(json_object_get(refilled, "reason")), "new bottle");
    assert_non_null(json_string_value(json_object_get(refilled, "by")));
    json_decref(doc);
    json_decref(h_run_wait(&dmn, second, "done", WAIT_MS));
    c = consumables();
    assert_true(trough_left(c) == 200);
    assert_int_equal(tips_left(c), 8);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c, "tips"), "reserved")),
                     0);
    json_decref(c);
    free(a);
    free(b);
}

/* Short of tips and liquid at once: both in the reason; tips and trough refilled, it runs. */
static void test_tips_short(void **state)
{
    (void)state;
    json_t *doc = h_api(&dmn, "POST", "/v1/instruments/star1/consumables/refill",
                        "{\"trough\":\"substrate\",\"volume_ul\":100}", 200);
    assert_true(trough_left(doc) == 100);
    json_decref(doc);
    /* 8 tips left: one run takes them all, the next is short of both */
    doc = h_api(&dmn, "POST", "/v1/instruments/star1/consumables/refill",
                "{\"trough\":\"substrate\"}", 200);
    json_decref(doc);
    char *a = submit("C-T1");
    json_decref(h_run_wait(&dmn, a, "done", WAIT_MS));
    doc = h_api(&dmn, "POST", "/v1/instruments/star1/consumables/refill",
                "{\"trough\":\"substrate\",\"volume_ul\":300}", 200);
    json_decref(doc);
    char *b = submit("C-T2");
    wait_reason(b, "tips on star1: 0 left, 8 needed; trough substrate: 300 µL left, 800 µL needed");
    json_decref(
        h_api(&dmn, "POST", "/v1/instruments/star1/consumables/refill", "{\"tips\":\"all\"}", 200));
    wait_reason(b, "trough substrate: 300 µL left, 800 µL needed");
    json_decref(h_api(&dmn, "POST", "/v1/instruments/star1/consumables/refill",
                      "{\"trough\":\"substrate\",\"volume_ul\":1000}", 200));
    json_decref(h_run_wait(&dmn, b, "done", WAIT_MS));
    json_t *c = consumables();
    assert_int_equal(tips_left(c), 16);
    assert_true(trough_left(c) == 200);
    json_decref(c);
    free(a);
    free(b);
}

static void action(const char *body)
{
    json_decref(h_api(&dmn, "POST", "/v1/instruments/star1/actions", body, 200));
}

/* A person's pick-up and aspirate count like the scheduler's. The STAR spends a whole column of
 * its rack on a pick-up (it never goes back to one), and says so: 8 tips for 2 channels. */
static void test_manual_actions_count(void **state)
{
    (void)state;
    json_t *c = consumables();
    long tips = tips_left(c);
    double left = trough_left(c);
    json_decref(c);
    action("{\"action\":\"pick_up_tips\",\"params\":{\"channels\":2}}");
    action("{\"action\":\"aspirate\",\"params\":{\"reagent\":\"substrate\",\"volume_ul\":10}}");
    action("{\"action\":\"dispense\",\"params\":{\"well\":\"A1\",\"volume_ul\":10}}");
    action("{\"action\":\"drop_tips\"}");
    c = consumables();
    assert_int_equal(tips_left(c), tips - 8);
    assert_true(fabs(trough_left(c) - (left - 20)) < 1e-6);
    json_t *last = json_object_get(c, "last");
    assert_string_equal(json_string_value(json_object_get(last, "action")), "aspirate");
    assert_string_equal(json_string_value(json_object_get(last, "outcome")), "done");
    json_decref(c);
}

/* Waits for the STAR to be idle again (after a restart, an initialize). */
static void wait_idle(void)
{
    for (long long end = h_now_ms() + WAIT_MS; h_now_ms() < end; h_sleep_ms(100)) {
        json_t *i = h_api(&dmn, "GET", "/v1/instruments/star1", NULL, 200);
        bool idle = strcmp(json_string_value(json_object_get(i, "state")) ?: "", "idle") == 0;
        json_decref(i);
        if (idle)
            return;
    }
    fail_msg("star1 is not idle after the restart");
}

/* An aspirate whose reply never comes may have drawn the liquid: it counts as used, and the
 * document says the outcome is unknown. */
static void test_unknown_outcome_counts(void **state)
{
    (void)state;
    json_t *c = consumables();
    double left = trough_left(c);
    json_decref(c);
    assert_int_equal(h_sim_fault(&sim, "star1", "timeout", 0), 0);
    json_decref(h_api(&dmn, "POST", "/v1/instruments/star1/actions",
                      "{\"action\":\"aspirate\",\"params\":{\"reagent\":\"substrate\","
                      "\"volume_ul\":7,\"channel\":1}}",
                      504));
    c = consumables();
    assert_true(fabs(trough_left(c) - (left - 7)) < 1e-6);
    json_t *last = json_object_get(c, "last");
    assert_string_equal(json_string_value(json_object_get(last, "outcome")), "unknown");
    assert_string_equal(json_string_value(json_object_get(last, "note")),
                        "outcome unknown (timeout): counted as used");
    json_decref(c);
    assert_int_equal(h_sim_fault(&sim, "star1", "clear", 0), 0);
    json_decref(
        h_api(&dmn, "POST", "/v1/instruments/star1/actions", "{\"action\":\"initialize\"}", 200));
    wait_idle();
}

/* PostgreSQL and the retained MQTT topic hold what the API says. */
static void test_pg_and_mqtt(void **state)
{
    (void)state;
    json_t *c = consumables();
    long tips = tips_left(c);
    double left = trough_left(c);
    json_decref(c);
    assert_int_equal(h_pg_count_waitf(&pg, 1, WAIT_MS,
                                      "SELECT count(*) FROM labloop.consumables WHERE instrument "
                                      "= 'star1' AND tips_left = %ld AND tips_total = 24 AND "
                                      "(doc->'troughs'->0->>'left_ul')::float8 = %g",
                                      tips, left),
                     1);
    char root[128], topic[200];
    mix_topic_root(&dmn, root, sizeof root);
    snprintf(topic, sizeof topic, "%s/instruments/star1/consumables", root);
    h_sub_t *s = h_sub_start(mq.uri, topic);
    assert_non_null(s);
    assert_true(h_sub_wait(s, 1, WAIT_MS) >= 1);
    h_msg_t *m;
    int n = h_sub_messages(s, &m);
    assert_true(m[n - 1].retained);
    json_t *doc = json_loads(m[n - 1].payload, 0, NULL);
    json_t *body = json_object_get(doc, "data") ?: doc;
    assert_int_equal(tips_left(body), tips);
    assert_true(trough_left(body) == left);
    json_decref(doc);
    h_sub_stop(s);
}

/* The counts survive an orderly restart and a kill -9 (after the change committed). */
static void test_restart_and_kill9(void **state)
{
    (void)state;
    json_t *c = consumables();
    long tips = tips_left(c);
    double left = trough_left(c);
    json_decref(c);
    assert_int_equal(h_daemon_stop(&dmn), 0);
    assert_int_equal(h_daemon_restart(&dmn), 0);
    c = consumables();
    assert_int_equal(tips_left(c), tips);
    assert_true(trough_left(c) == left);
    json_decref(c);

    wait_idle();
    action("{\"action\":\"pick_up_tips\",\"params\":{\"channels\":1}}");
    action("{\"action\":\"aspirate\",\"params\":{\"reagent\":\"substrate\",\"volume_ul\":5}}");
    action("{\"action\":\"drop_tips\"}");
    /* committed: PostgreSQL has it, so the local store had it first */
    assert_int_equal(h_pg_count_waitf(&pg, 1, WAIT_MS,
                                      "SELECT count(*) FROM labloop.consumables WHERE instrument "
                                      "= 'star1' AND tips_left = %ld AND "
                                      "(doc->'troughs'->0->>'left_ul')::float8 = %g",
                                      tips - 8, left - 5),
                     1);
    h_daemon_kill9(&dmn);
    assert_int_equal(h_daemon_restart(&dmn), 0);
    c = consumables();
    assert_int_equal(tips_left(c), tips - 8);
    assert_true(fabs(trough_left(c) - (left - 5)) < 1e-6);
    json_decref(c);
    /* the driver took its tip position from the count after the restart: the rack is used up,
     * and it refuses rather than pick from an empty column */
    assert_int_equal(tips - 8, 0);
    wait_idle();
    json_t *p = h_api(&dmn, "POST", "/v1/instruments/star1/actions",
                      "{\"action\":\"pick_up_tips\",\"params\":{\"channels\":1}}", 409);
    assert_non_null(strstr(json_string_value(json_object_get(p, "detail")) ?: "", "used up"));
    json_decref(p);
}

/* A daemon killed while an aspirate runs finds it counted after the restart: the use is charged
 * and stored when the action is queued, settled when it ends, and one that never ended stays
 * counted with its outcome unknown. */
static void test_kill9_mid_aspirate(void **state)
{
    (void)state;
    wait_idle();
    json_t *c = consumables();
    double left = trough_left(c);
    json_decref(c);
    /* the STAR stops answering: the aspirate waits for its reply (5 s) while the daemon dies */
    assert_int_equal(h_sim_fault(&sim, "star1", "timeout", 0), 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd,
             "curl -s -m 60 -o /dev/null -X POST -H 'Content-Type: application/json' -d "
             "'{\"action\":\"aspirate\",\"params\":{\"reagent\":\"substrate\","
             "\"volume_ul\":9,\"channel\":1}}' %s/v1/instruments/star1/actions >/dev/null 2>&1 &",
             dmn.url);
    assert_int_equal(h_run(cmd, NULL, 0), 0);
    assert_int_equal(h_pg_count_waitf(&pg, 1, WAIT_MS,
                                      "SELECT count(*) FROM labloop.consumables WHERE instrument "
                                      "= 'star1' AND doc->'last'->>'outcome' = 'in progress' AND "
                                      "(doc->'troughs'->0->>'left_ul')::float8 = %g",
                                      left - 9),
                     1);
    h_daemon_kill9(&dmn);
    assert_int_equal(h_sim_fault(&sim, "star1", "clear", 0), 0);
    assert_int_equal(h_daemon_restart(&dmn), 0);
    c = consumables();
    assert_true(fabs(trough_left(c) - (left - 9)) < 1e-6);
    json_t *last = json_object_get(c, "last");
    assert_string_equal(json_string_value(json_object_get(last, "outcome")), "unknown");
    assert_string_equal(json_string_value(json_object_get(last, "note")),
                        "the daemon stopped before it ended: counted as used");
    json_decref(c);
    wait_idle();
}

/* Bad refills get a precise 400 and change nothing. */
static void test_bad_refills(void **state)
{
    (void)state;
    json_t *before = consumables();
    static const char *const bodies[][2] = {
        {"{\"trough\":\"buffer\",\"volume_ul\":5}", "/trough"},
        {"{\"trough\":\"substrate\",\"volume_ul\":-1}", "/volume_ul"},
        {"{\"trough\":\"substrate\",\"volume_ul\":1001}", "/volume_ul"},
        {"{\"trough\":\"substrate\",\"volume_ul\":1e300}", "/volume_ul"},
        {"{\"trough\":\"substrate\",\"volume_ul\":\"5\"}", "/volume_ul"},
        {"{\"trough\":5}", "/trough"},
        {"{\"tips\":{\"racks\":2}}", "/tips"},
        {"{\"tips\":{\"racks\":0}}", "/tips/racks"},
        {"{\"tips\":\"some\"}", "/tips"},
        {"{\"tips\":\"all\",\"trough\":\"substrate\"}", ""},
        {"{\"colour\":\"red\"}", "/colour"},
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        json_t *p =
            h_api(&dmn, "POST", "/v1/instruments/star1/consumables/refill", bodies[i][0], 400);
        json_t *e = json_array_get(json_object_get(p, "errors"), 0);
        const char *path = json_string_value(json_object_get(e, "path"));
        if (!path || strcmp(path, bodies[i][1]) != 0)
            fail_msg("%s: path %s, wanted %s", bodies[i][0], path ? path : "none", bodies[i][1]);
        json_decref(p);
    }
    json_decref(
        h_api(&dmn, "POST", "/v1/instruments/nope/consumables/refill", "{\"tips\":\"all\"}", 404));
    json_t *after = consumables();
    assert_true(json_equal(json_object_get(before, "troughs"), json_object_get(after, "troughs")));
    assert_true(json_equal(json_object_get(before, "tips"), json_object_get(after, "tips")));
    json_decref(before);
    json_decref(after);
}

static char out[16384];

/* Runs `labloop ARGS` against the daemon; stdout and stderr into out; the exit code. */
static int cli(const char *args)
{
    const char *bin = getenv("LABLOOP_CLI");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "LABLOOP_URL='%s' '%s' %s 2>&1", dmn.url,
             bin && *bin ? bin : "labloop", args);
    return h_run(cmd, out, sizeof out);
}

/* labloop refill and labloop consumables speak the same API. */
static void test_cli(void **state)
{
    (void)state;
    assert_int_equal(cli("refill star1 --trough substrate=900 --reason 'new bottle'"), 0);
    assert_non_null(strstr(out, "trough substrate"));
    assert_non_null(strstr(out, "900.0 of 1000.0"));
    assert_int_equal(cli("--json consumables star1"), 0);
    json_t *doc = json_loads(out, 0, NULL);
    assert_non_null(doc);
    assert_true(trough_left(doc) == 900);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "last"), "reason")),
                        "new bottle");
    json_decref(doc);
    assert_int_equal(cli("refill star1 --tips"), 0);
    assert_non_null(strstr(out, "24 of 24"));
    assert_int_equal(cli("consumables"), 0);
    assert_non_null(strstr(out, "star1"));
    assert_int_equal(cli("refill star1 --trough nope=5"), 1);
    assert_non_null(strstr(out, "400"));
    assert_non_null(strstr(out, "no trough 'nope' on star1"));
    assert_int_equal(cli("refill star1 --trough substrate=lots"), 2);
    assert_int_equal(cli("refill star1"), 2);
    assert_int_equal(cli("refill star1 --tips --trough substrate"), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compete_wait_refill),
        cmocka_unit_test(test_tips_short),
        cmocka_unit_test(test_manual_actions_count),
        cmocka_unit_test(test_unknown_outcome_counts),
        cmocka_unit_test(test_pg_and_mqtt),
        cmocka_unit_test(test_restart_and_kill9),
        cmocka_unit_test(test_kill9_mid_aspirate),
        cmocka_unit_test(test_bad_refills),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
