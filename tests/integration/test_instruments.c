/* Instruments through labloopd with real PostgreSQL and mosquitto: the list and one instrument
 * over HTTP, a manual move asked and confirmed (HTTP and CLI), refusals with their error lists,
 * readings reported over MQTT becoming telemetry (GET with units, PostgreSQL labloop.telemetry,
 * MQTT telemetry topic) and retained state, bad reports answered on the response topic and
 * costing nothing, and config errors naming file:line. */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static h_pg_t pg;
static h_mqtt_t mq;
static h_daemon_t dmn;
static char out[65536];

#define ROOT "labloop/v1/lab/cell1"

static const char extra[] = "[instrument mover1]\ndriver = manual-mover\nlabel = bench 2\n"
                            "[instrument env1]\ndriver = mqtt-report\nstale_s = 0\n";

static int setup(void **state)
{
    if (h_pg_start(&pg) || h_mqtt_start(&mq))
        return -1;
    return h_daemon_start(&dmn, &pg, &mq, extra);
}

static int teardown(void **state)
{
    h_daemon_destroy(&dmn);
    h_mqtt_destroy(&mq);
    h_pg_destroy(&pg);
    return 0;
}

static json_t *get_json(const char *path, int want_status)
{
    char *resp = NULL;
    int st = h_http(dmn.url, "GET", path, NULL, NULL, &resp);
    if (st != want_status)
        fail_msg("GET %s: %d %s", path, st, resp ? resp : "");
    json_t *doc = json_loads(resp ? resp : "", 0, NULL);
    free(resp);
    assert_non_null(doc);
    return doc;
}

static json_t *post_action(const char *id, const char *body, int want_status)
{
    char path[128], *resp = NULL;
    snprintf(path, sizeof path, "/v1/instruments/%s/actions", id);
    int st = h_http(dmn.url, "POST", path, "Content-Type: application/json", body, &resp);
    if (st != want_status)
        fail_msg("POST %s %s: %d %s", path, body, st, resp ? resp : "");
    json_t *doc = json_loads(resp ? resp : "", 0, NULL);
    free(resp);
    assert_non_null(doc);
    return doc;
}

static const char *state_of(json_t *doc)
{
    return json_string_value(json_object_get(doc, "state"));
}

/* Waits for GET /v1/instruments/ID to show state; returns the document. */
static json_t *wait_state(const char *id, const char *state)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/instruments/%s", id);
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(20)) {
        json_t *doc = get_json(path, 200);
        if (strcmp(state_of(doc), state) == 0)
            return doc;
        json_decref(doc);
    }
    fail_msg("%s never became %s", id, state);
    return NULL;
}

static void test_list(void **state)
{
    json_t *doc = get_json("/v1/instruments", 200);
    json_t *list = json_object_get(doc, "instruments");
    assert_int_equal(json_array_size(list), 2);
    json_t *m = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(m, "id")), "mover1");
    assert_string_equal(json_string_value(json_object_get(m, "kind")), "mover");
    assert_string_equal(json_string_value(json_object_get(m, "label")), "bench 2");
    json_decref(doc);
    json_t *one = get_json("/v1/instruments/mover1", 200);
    assert_true(json_array_size(json_object_get(one, "actions")) >= 2);
    json_decref(one);
    json_t *nf = get_json("/v1/instruments/nope", 404);
    json_decref(nf);
    char *text = NULL;
    assert_int_equal(h_http(dmn.url, "GET", "/metrics", NULL, NULL, &text), 200);
    assert_non_null(
        strstr(text, "labloop_instrument_state{instrument=\"mover1\",state=\"idle\"} 1"));
    assert_non_null(
        strstr(text, "labloop_instrument_state{instrument=\"env1\",state=\"offline\"} 1"));
    free(text);
}

typedef struct {
    json_t *answer;
} move_t;

static void *do_move(void *arg)
{
    move_t *m = arg;
    m->answer = post_action("mover1",
                            "{\"action\":\"move\",\"params\":{\"plate\":\"P9\",\"from\":\"inc1\","
                            "\"to\":\"reader1\"}}",
                            200);
    return NULL;
}

static void test_manual_move(void **state)
{
    move_t m = {0};
    pthread_t t;
    pthread_create(&t, NULL, do_move, &m);
    json_t *doc = wait_state("mover1", "busy");
    json_t *pending = json_object_get(json_object_get(doc, "info"), "pending_move");
    assert_string_equal(json_string_value(json_object_get(pending, "plate")), "P9");
    json_decref(doc);
    /* Waiting for a person: an open prompt, listed. */
    json_t *open = NULL;
    for (long long end = h_now_ms() + 10000; !open && h_now_ms() < end; h_sleep_ms(20)) {
        json_t *list = get_json("/v1/prompts", 200);
        json_t *p = json_array_get(json_object_get(list, "prompts"), 0);
        if (p)
            open = json_incref(p);
        json_decref(list);
    }
    assert_non_null(open);
    assert_string_equal(json_string_value(json_object_get(open, "id")), "move:mover1");
    assert_string_equal(json_string_value(json_object_get(open, "kind")), "move");
    assert_true(json_is_true(json_object_get(open, "open")));
    assert_string_equal(json_string_value(json_object_get(open, "text")), "from inc1 to reader1");
    json_decref(open);
    /* Confirmed from the command line, as a technician would. */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s %s action mover1 confirm by=ann 2>&1", dmn.url,
             getenv("LABLOOP_CLI"));
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "\"confirmed_by\": \"ann\""));
    pthread_join(t, NULL);
    json_t *res = json_object_get(m.answer, "result");
    assert_string_equal(json_string_value(json_object_get(res, "to")), "reader1");
    /* The move was a prompt, opened while it waited and answered by ann's confirm. */
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT count(*) FROM labloop.events WHERE kind = 'prompt' "
                                     "AND key = 'move:mover1' AND payload->>'open' = 'true' AND "
                                     "payload->'move'->>'plate' = 'P9'",
                                     1, 10000),
                     1);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT count(*) FROM labloop.events WHERE kind = 'prompt' "
                                     "AND key = 'move:mover1' AND payload->>'open' = 'false' AND "
                                     "payload->>'by' = 'ann' AND payload->>'how' = 'confirm' AND "
                                     "payload->>'title' = 'Move plate P9'",
                                     1, 10000),
                     1);
    json_t *prompts = get_json("/v1/prompts", 200);
    assert_int_equal(json_array_size(json_object_get(prompts, "prompts")), 0);
    json_decref(prompts);
    assert_string_equal(json_string_value(json_object_get(res, "confirmed_by")), "ann");
    json_decref(m.answer);
    json_decref(wait_state("mover1", "idle"));
    /* Nothing to confirm now: a conflict, not a crash. */
    json_t *c = post_action("mover1", "{\"action\":\"confirm\"}", 409);
    json_decref(c);
    snprintf(cmd, sizeof cmd, "LABLOOP_URL=%s %s instruments 2>&1", dmn.url, getenv("LABLOOP_CLI"));
    assert_int_equal(h_run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "mover1"));
    assert_non_null(strstr(out, "manual-mover"));
}

static void *do_keyed_move(void *arg)
{
    move_t *m = arg;
    char *resp = NULL;
    int st = h_http(dmn.url, "POST", "/v1/instruments/mover1/actions",
                    "Content-Type: application/json\nIdempotency-Key: move-42",
                    "{\"action\":\"move\",\"params\":{\"from\":\"a\",\"to\":\"b\"}}", &resp);
    m->answer = st == 200 ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    return NULL;
}

static int keyed(const char *body, char **resp)
{
    return h_http(dmn.url, "POST", "/v1/instruments/mover1/actions",
                  "Content-Type: application/json\nIdempotency-Key: move-42", body, resp);
}

/* A retried action with its Idempotency-Key never runs twice. */
static void test_idempotent_action(void **state)
{
    move_t m = {0};
    pthread_t t;
    pthread_create(&t, NULL, do_keyed_move, &m);
    json_decref(wait_state("mover1", "busy"));
    const char *same = "{\"action\":\"move\",\"params\":{\"from\":\"a\",\"to\":\"b\"}}";
    char *resp = NULL;
    assert_int_equal(keyed(same, &resp), 409); /* still running */
    free(resp);
    json_decref(post_action("mover1", "{\"action\":\"confirm\"}", 200));
    pthread_join(t, NULL);
    assert_non_null(m.answer);
    /* confirmed without a name: the record names the caller (here a daemon without tokens) */
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(m.answer, "result"), "confirmed_by")),
        "anonymous");
    char *first = json_dumps(m.answer, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(m.answer);
    /* The retry gets the same answer, and nobody is asked to move anything again. */
    assert_int_equal(keyed(same, &resp), 200);
    json_t *again = json_loads(resp, 0, NULL);
    free(resp);
    char *second = json_dumps(again, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(again);
    assert_string_equal(first, second);
    free(first);
    free(second);
    json_t *doc = get_json("/v1/instruments/mover1", 200);
    assert_string_equal(state_of(doc), "idle");
    assert_true(json_is_null(json_object_get(json_object_get(doc, "info"), "pending_move")));
    json_decref(doc);
    /* The same key for another action: refused. */
    assert_int_equal(keyed("{\"action\":\"move\",\"params\":{\"from\":\"a\",\"to\":\"c\"}}", &resp),
                     422);
    free(resp);
}

static void test_refusals(void **state)
{
    /* Every problem named, with its JSON Pointer. */
    json_t *p = post_action("mover1", "{\"action\":\"move\",\"params\":{\"from\":3,\"x\":1}}", 422);
    json_t *errs = json_object_get(p, "errors");
    char *text = json_dumps(errs, JSON_COMPACT);
    assert_non_null(strstr(text, "/params/from"));
    assert_non_null(strstr(text, "/params/to"));
    assert_non_null(strstr(text, "/params/x"));
    free(text);
    json_decref(p);
    p = post_action("mover1", "{\"action\":\"fly\"}", 422);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(p, "errors"), 0), "path")),
        "/action");
    json_decref(p);
    p = post_action("mover1", "{\"params\":{}}", 422);
    json_decref(p);
    p = post_action("mover1", "{\"action\":", 400);
    json_decref(p);
    p = post_action("nope", "{\"action\":\"move\"}", 404);
    json_decref(p);
    /* The instrument is untouched. */
    json_decref(wait_state("mover1", "idle"));
}

static int pub(const char *id, const char *payload, const char *response_topic)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "mosquitto_pub -V 5 -q 1 -p %d -h 127.0.0.1 -t '" ROOT
             "/in/instruments/%s/report' %s%s%s -m '%s' 2>&1",
             mq.port, id, response_topic ? "-D publish response-topic '" : "",
             response_topic ? response_topic : "", response_topic ? "'" : "", payload);
    return h_run(cmd, out, sizeof out);
}

static void test_report_becomes_telemetry(void **state)
{
    h_sub_t *tel = h_sub_start(mq.uri, ROOT "/instruments/env1/telemetry");
    assert_non_null(tel);
    h_sleep_ms(200);
    assert_int_equal(pub("env1",
                         "{\"ts\":\"2026-11-23T01:02:03.500Z\",\"values\":{"
                         "\"temperature_c\":21.5,\"humidity_pct\":40}}",
                         NULL),
                     0);
    json_t *doc = wait_state("env1", "idle");
    json_t *t = json_object_get(doc, "telemetry");
    assert_true(json_number_value(json_object_get(json_object_get(t, "values"), "temperature_c")) ==
                21.5);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(t, "units"), "temperature_c")), "degC");
    assert_string_equal(json_string_value(json_object_get(t, "ts")), "2026-11-23T01:02:03.500Z");
    json_decref(doc);

    assert_true(h_sub_wait(tel, 1, 10000) >= 1);
    h_msg_t *msgs;
    h_sub_messages(tel, &msgs);
    json_t *m = json_loads(msgs[0].payload, 0, NULL);
    assert_non_null(m);
    assert_true(json_number_value(json_object_get(json_object_get(m, "values"), "humidity_pct")) ==
                40);
    assert_non_null(json_object_get(m, "seq"));
    json_decref(m);
    h_sub_stop(tel);

    /* PostgreSQL: one row per value, with its unit; the instrument's newest state. */
    long long n = -1;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end && n != 2; h_sleep_ms(50))
        n = h_pg_count(&pg, "SELECT count(*) FROM labloop.telemetry WHERE instrument = 'env1'");
    assert_int_equal(n, 2);
    char v[64];
    assert_int_equal(h_pg_query(&pg,
                                "SELECT unit || ' ' || value FROM labloop.telemetry WHERE "
                                "instrument = 'env1' AND name = 'temperature_c'",
                                v, sizeof v),
                     0);
    assert_string_equal(v, "degC 21.5");
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(50)) {
        h_pg_query(&pg, "SELECT state FROM labloop.instruments WHERE id = 'env1'", v, sizeof v);
        if (strcmp(v, "idle") == 0)
            break;
    }
    assert_string_equal(v, "idle");

    /* The state is retained: a subscriber arriving now gets it. */
    h_sub_t *st = h_sub_start(mq.uri, ROOT "/instruments/+/state");
    assert_non_null(st);
    assert_true(h_sub_wait(st, 2, 10000) >= 2);
    h_sub_messages(st, &msgs);
    assert_true(msgs[0].retained);
    assert_non_null(strstr(msgs[0].payload, "\"state\""));
    h_sub_stop(st);
}

static void test_bad_reports(void **state)
{
    h_sub_t *resp = h_sub_start(mq.uri, "test/answers");
    assert_non_null(resp);
    h_sleep_ms(200);
    assert_int_equal(pub("env1", "{\"values\":{\"temperature_c\":\"hot\"}}", "test/answers"), 0);
    assert_int_equal(pub("env1", "not json at all", "test/answers"), 0);
    assert_int_equal(pub("ghost", "{\"values\":{\"x\":1}}", "test/answers"), 0);
    assert_int_equal(pub("env1", "{\"values\":{\"temperature_c\":22.25}}", "test/answers"), 0);
    assert_true(h_sub_wait(resp, 4, 10000) >= 4);
    h_msg_t *msgs;
    h_sub_messages(resp, &msgs);
    assert_non_null(strstr(msgs[0].payload, "\"accepted\":false"));
    if (!strstr(msgs[0].payload, "\"path\":\"/values/temperature_c\""))
        fail_msg("answer: %s", msgs[0].payload);
    assert_non_null(strstr(msgs[1].payload, "\"accepted\":false"));
    assert_non_null(strstr(msgs[1].payload, "\"path\":\"\""));
    assert_non_null(strstr(msgs[2].payload, "no such instrument"));
    assert_non_null(strstr(msgs[3].payload, "\"accepted\":true"));
    h_sub_stop(resp);
    /* The refused ones cost nothing: the good one after them is the newest value. */
    json_t *doc = get_json("/v1/instruments/env1", 200);
    assert_string_equal(state_of(doc), "idle");
    assert_true(json_number_value(
                    json_object_get(json_object_get(json_object_get(doc, "telemetry"), "values"),
                                    "temperature_c")) == 22.25);
    json_decref(doc);
}

static json_t *post_hold(const char *id, const char *what, const char *body, int want_status)
{
    char path[128], *resp = NULL;
    snprintf(path, sizeof path, "/v1/instruments/%s/%s", id, what);
    int st =
        h_http(dmn.url, "POST", path, body ? "Content-Type: application/json" : NULL, body, &resp);
    if (st != want_status)
        fail_msg("POST %s %s: %d %s", path, body ? body : "", st, resp ? resp : "");
    json_t *doc = json_loads(resp ? resp : "", 0, NULL);
    free(resp);
    assert_non_null(doc);
    return doc;
}

static const char *str_of(json_t *doc, const char *key)
{
    return json_string_value(json_object_get(doc, key));
}

/* Pause and resume say who did it and why, in the answer, in GET and through the outbox (the
 * PostgreSQL copy of the instrument's state document); an instrument that cannot change state
 * (offline) still gets its hold recorded. Bad bodies are refused and change nothing. */
static void test_pause_records_who(void **state)
{
    json_t *bad = post_hold("mover1", "pause", "{\"reason\": 7}", 422);
    json_decref(bad);
    bad = post_hold("mover1", "pause", "{\"why\": \"x\"}", 422);
    json_decref(bad);
    bad = post_hold("mover1", "pause", "[\"x\"]", 422);
    json_decref(bad);
    json_t *doc = get_json("/v1/instruments/mover1", 200);
    assert_string_equal(state_of(doc), "idle");
    assert_null(json_object_get(doc, "paused_by"));
    json_decref(doc);

    doc = post_hold("mover1", "pause", "{\"reason\": \"tip box empty\"}", 200);
    assert_string_equal(state_of(doc), "paused");
    assert_string_equal(str_of(doc, "paused_by"), "anonymous");
    assert_string_equal(str_of(doc, "pause_reason"), "tip box empty");
    assert_non_null(str_of(doc, "paused_at"));
    json_decref(doc);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT count(*) FROM labloop.instruments WHERE id = 'mover1' "
                                     "AND state = 'paused' AND doc->>'pause_reason' = 'tip box "
                                     "empty' AND doc->>'paused_by' = 'anonymous'",
                                     1, 10000),
                     1);

    doc = post_hold("mover1", "resume", NULL, 200);
    assert_string_equal(state_of(doc), "idle");
    assert_string_equal(str_of(doc, "resumed_by"), "anonymous");
    assert_null(json_object_get(doc, "paused_by"));
    assert_null(json_object_get(doc, "pause_reason"));
    json_decref(doc);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT count(*) FROM labloop.instruments WHERE id = 'mover1' "
                                     "AND state = 'idle' AND doc->>'resumed_by' = 'anonymous'",
                                     1, 10000),
                     1);

    /* Paused again with another reason: the state stays, the hold's row is written anyway. */
    json_decref(post_hold("env1", "pause", "{}", 200));
    doc = post_hold("env1", "pause", "{\"reason\": \"probe cleaning\"}", 200);
    assert_string_equal(state_of(doc), "paused");
    assert_string_equal(str_of(doc, "pause_reason"), "probe cleaning");
    json_decref(doc);
    assert_int_equal(h_pg_count_wait(&pg,
                                     "SELECT count(*) FROM labloop.instruments WHERE id = 'env1' "
                                     "AND doc->>'pause_reason' = 'probe cleaning'",
                                     1, 10000),
                     1);
    json_decref(post_hold("env1", "resume", NULL, 200));
}

static void test_config_errors(void **state)
{
    char dir[256], path[300], cmd[800];
    assert_int_equal(h_tempdir("labcfg", dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/bad.ini", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "[labloop]\nstate_dir = %s\n"
            "[instrument m1]\ndriver = manual-mover\nport = /dev/ttyS0\n"
            "[instrument r1]\ndriver = mqtt-report\nstale_s = soon\nsim_anything = 1\n"
            "[instrument x]\ndriver = teleporter\n"
            "[instrument bad id]\n"
            "[instrument m1]\ndriver = manual-mover\n",
            dir);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s --check -c %s 2>&1", getenv("LABLOOPD"), path);
    assert_int_equal(h_run(cmd, out, sizeof out), 1);
    assert_non_null(strstr(out, "bad.ini:5: [instrument m1] port: unknown key for driver"));
    assert_non_null(strstr(out, "bad.ini:8: [instrument r1] stale_s: expected a number"));
    assert_null(strstr(out, "sim_anything"));
    assert_non_null(strstr(out, "bad.ini:11: [instrument x] driver: unknown driver 'teleporter'"));
    assert_non_null(strstr(out, "bad.ini:12: [instrument bad id]"));
    assert_non_null(strstr(out, "bad.ini:13: [instrument m1]: given twice (first on line 3)"));
    h_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_manual_move),
        cmocka_unit_test(test_idempotent_action),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_report_becomes_telemetry),
        cmocka_unit_test(test_bad_reports),
        cmocka_unit_test(test_pause_records_who),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
