/* Runs submitted over MQTT (in/runs) to labloopd with mosquitto: each message is answered on its
 * MQTT 5 Response Topic with its Correlation Data echoed: accepted (the run stored, as
 * GET /v1/runs shows), a replay under the same idempotency-key (200, the same id), the key with
 * another document (422), every problem of an invalid document with its path, the limits (1 MiB,
 * UTF-8, nesting, an object), the `cell` rule; a message without a response topic or with a
 * wildcard one is logged and counted; a burst of 500 is answered whole. Batches on
 * in/campaigns/.../batches echo the Correlation Data too. */
#include "tests/harness/harness.h"
#include "tests/integration/mix_cell.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define WAIT_MS 20000
#define BURST 500

static h_mqtt_t mq;
static h_daemon_t d;
static h_req_t *rq;
static char root[128];  /* the cell's topic root */
static char topic[200]; /* ROOT/in/runs */
static char cell[64];

static int setup(void **state)
{
    (void)state;
    if (h_mqtt_start(&mq) || h_daemon_start(&d, NULL, &mq, NULL))
        return -1;
    if (h_workflow_example(d.url, NULL))
        return -1;
    mix_topic_root(&d, root, sizeof root);
    snprintf(topic, sizeof topic, "%s/in/runs", root);
    snprintf(cell, sizeof cell, "%s", strrchr(root, '/') + 1);
    rq = h_req_start(mq.uri, "answers/#");
    return rq ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    h_req_stop(rq);
    h_daemon_destroy(&d);
    h_mqtt_destroy(&mq);
    return 0;
}

/* Publishes one request and returns its answer (the test fails without one). The first request
 * is published again until answered: the daemon subscribes once it is connected. */
static json_t *ask(const char *payload, size_t len, const char *corr, const char *key)
{
    json_t *a = NULL;
    for (int tries = 0; tries < 20 && !a; tries++) {
        assert_int_equal(h_req_publish(rq, topic, payload, len, "answers/runs", corr, key, true),
                         0);
        a = h_req_answer(rq, corr, tries < 19 ? 1000 : WAIT_MS);
    }
    if (!a)
        fail_msg("no answer with correlation data %s", corr);
    return a;
}

static json_t *ask_text(const char *payload, const char *corr, const char *key)
{
    return ask(payload, strlen(payload), corr, key);
}

static void expect_code(json_t *a, int code, const char *status)
{
    if (json_integer_value(json_object_get(a, "code")) != code ||
        strcmp(json_string_value(json_object_get(a, "status")) ?: "", status) != 0) {
        char *t = json_dumps(a, 0);
        fail_msg("expected %s %d, got %s", status, code, t);
    }
}

/* Whether the answer's errors name path. */
static bool has_path(json_t *a, const char *path)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(a, "errors"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "path")) ?: "?", path) == 0 &&
            json_string_length(json_object_get(e, "message")) > 0)
            return true;
    }
    return false;
}

static void test_accept_replay_reuse(void **state)
{
    (void)state;
    json_t *a = ask_text("{\"workflow\":\"elisa\",\"plate\":\"P-1\"}", "c-1", "key-1");
    expect_code(a, 201, "accepted");
    const char *id = json_string_value(json_object_get(json_object_get(a, "run"), "id"));
    assert_non_null(id);
    json_t *run = h_run_get(&d, id);
    assert_string_equal(json_string_value(json_object_get(run, "plate")), "P-1");
    assert_string_equal(json_string_value(json_object_get(run, "origin")), "mqtt");
    assert_int_equal(json_integer_value(json_object_get(run, "workflow_version")), 1);
    json_decref(run);

    /* The same document and key: the first answer again, as a duplicate. */
    json_t *b = ask_text("{\"workflow\":\"elisa\",\"plate\":\"P-1\"}", "c-2", "key-1");
    expect_code(b, 200, "accepted");
    assert_true(json_is_true(json_object_get(b, "duplicate")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(b, "run"), "id")), id);

    /* The key with another document. */
    json_t *c = ask_text("{\"workflow\":\"elisa\",\"plate\":\"P-2\"}", "c-3", "key-1");
    expect_code(c, 422, "rejected");
    assert_string_equal(json_string_value(json_object_get(c, "type")),
                        "urn:labloop:problem:idempotency-key-reused");

    /* Keys of 1 to 255 bytes. */
    char longkey[300];
    memset(longkey, 'k', 256);
    longkey[256] = '\0';
    json_t *k = ask_text("{\"workflow\":\"elisa\"}", "c-4", longkey);
    expect_code(k, 400, "rejected");
    /* The run exists once in the cell's list. */
    json_t *list = h_api(&d, "GET", "/v1/runs?limit=500", NULL, 200);
    int n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(list, "runs"), i, r)
    {
        n += strcmp(json_string_value(json_object_get(r, "id")), id) == 0;
    }
    assert_int_equal(n, 1);
    json_decref(list);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(k);
}

static void test_invalid_documents(void **state)
{
    (void)state;
    /* Every problem, each at its path. */
    json_t *a = ask_text("{\"workflow\":\"\",\"priority\":\"soon\",\"score\":\"x\",\"extra\":1}",
                         "i-1", NULL);
    expect_code(a, 422, "rejected");
    assert_true(has_path(a, "/workflow"));
    assert_true(has_path(a, "/priority"));
    assert_true(has_path(a, "/score"));
    assert_true(has_path(a, "/extra"));
    json_decref(a);

    a = ask_text("{\"workflow\":\"nope\"}", "i-2", NULL);
    expect_code(a, 422, "rejected");
    assert_true(has_path(a, "/workflow"));
    json_decref(a);

    a = ask_text("{\"workflow\":\"elisa\",\"workflow_version\":9}", "i-3", NULL);
    expect_code(a, 422, "rejected");
    assert_true(has_path(a, "/workflow_version"));
    json_decref(a);

    a = ask_text("[1,2,3]", "i-4", NULL);
    expect_code(a, 422, "rejected");
    assert_true(has_path(a, ""));
    json_decref(a);

    a = ask_text("{\"workflow\":\"elisa\",\"note\":\"\xff\xfe\"}", "i-5", NULL);
    expect_code(a, 400, "rejected");
    assert_string_equal(json_string_value(json_object_get(a, "type")),
                        "urn:labloop:problem:malformed-json");
    json_decref(a);

    a = ask_text("not json", "i-6", NULL);
    expect_code(a, 400, "rejected");
    assert_true(has_path(a, ""));
    json_decref(a);

    size_t deep = 100000;
    char *nest = malloc(deep * 2 + 1);
    memset(nest, '[', deep);
    memset(nest + deep, ']', deep);
    a = ask(nest, deep * 2, "i-7", NULL);
    expect_code(a, 400, "rejected");
    json_decref(a);
    free(nest);

    size_t big = 1024 * 1024 + 1;
    char *huge = malloc(big + 1);
    memset(huge, ' ', big);
    memcpy(huge, "{\"workflow\":\"elisa\"}", 20);
    a = ask(huge, big, "i-8", NULL);
    expect_code(a, 413, "rejected");
    json_decref(a);
    free(huge);

    /* The cell rule without a shared queue: this cell's name is this cell's queue. */
    a = ask_text("{\"workflow\":\"elisa\",\"cell\":\"any\"}", "i-9", NULL);
    expect_code(a, 422, "rejected");
    assert_true(has_path(a, "/cell"));
    json_decref(a);
    char doc[200];
    snprintf(doc, sizeof doc, "{\"workflow\":\"elisa\",\"cell\":\"%s\"}", cell);
    a = ask_text(doc, "i-10", NULL);
    expect_code(a, 201, "accepted");
    assert_null(json_object_get(json_object_get(a, "run"), "cell"));
    json_decref(a);
    a = ask_text("{\"workflow\":\"elisa\",\"cell\":\"no/such\"}", "i-11", NULL);
    expect_code(a, 422, "rejected");
    assert_true(has_path(a, "/cell"));
    json_decref(a);
    /* HTTP takes the same rule on the same path. */
    a = h_api(&d, "POST", "/v1/runs", "{\"workflow\":\"elisa\",\"cell\":\"any\"}", 422);
    assert_string_equal(json_string_value(json_object_get(a, "type")),
                        "urn:labloop:problem:invalid-document");
    assert_true(has_path(a, "/cell"));
    json_decref(a);
    a = h_api(&d, "POST", "/v1/runs", doc, 201);
    assert_null(json_object_get(a, "cell"));
    assert_string_equal(json_string_value(json_object_get(a, "origin")), "api");
    json_decref(a);
}

static long long runs_count(void)
{
    long long n = 0;
    char path[64] = "/v1/runs?limit=500";
    for (;;) {
        json_t *page = h_api(&d, "GET", path, NULL, 200);
        n += (long long)json_array_size(json_object_get(page, "runs"));
        const char *next = json_string_value(json_object_get(page, "next"));
        if (next)
            snprintf(path, sizeof path, "/v1/runs?limit=500&after=%s", next);
        json_decref(page);
        if (!next)
            return n;
    }
}

static void test_nowhere_to_answer(void **state)
{
    (void)state;
    json_t *warm = ask_text("{\"workflow\":\"elisa\"}", "w-0", NULL);
    json_decref(warm);
    const char *none = "labloop_mqtt_unanswered_total{reason=\"no_reply_topic\"}";
    const char *bad = "labloop_mqtt_unanswered_total{reason=\"bad_reply_topic\"}";
    long long none0 = h_metric(&d, none), bad0 = h_metric(&d, bad), runs0 = runs_count();
    /* No response topic: the run is taken, its answer logged and counted. */
    const char *doc = "{\"workflow\":\"elisa\",\"name\":\"silent\"}";
    assert_int_equal(h_req_publish(rq, topic, doc, strlen(doc), NULL, "w-1", NULL, true), 0);
    long long deadline = h_now_ms() + WAIT_MS;
    while (h_metric(&d, none) < none0 + 1 && h_now_ms() < deadline)
        h_sleep_ms(20);
    assert_int_equal(h_metric(&d, none), none0 + 1);
    assert_int_equal(runs_count(), runs0 + 1);
    /* A wildcard response topic: refused before anything is submitted, counted. */
    assert_int_equal(h_req_publish(rq, topic, doc, strlen(doc), "answers/+/x", "w-2", NULL, true),
                     0);
    while (h_metric(&d, bad) < bad0 + 1 && h_now_ms() < deadline)
        h_sleep_ms(20);
    assert_int_equal(h_metric(&d, bad), bad0 + 1);
    assert_int_equal(runs_count(), runs0 + 1);
    assert_true(h_file_count(d.log, "not answered (no_reply_topic)") >= 1);
    assert_true(h_file_count(d.log, "not answered (bad_reply_topic)") >= 1);
}

static void test_burst(void **state)
{
    (void)state;
    json_t *warm = ask_text("{\"workflow\":\"elisa\"}", "b-warm", NULL);
    json_decref(warm);
    int before = h_req_wait(rq, 0, 0);
    long long runs0 = runs_count();
    char corr[32], doc[100];
    long long t0 = h_now_ms();
    for (int i = 0; i < BURST; i++) {
        snprintf(corr, sizeof corr, "burst-%d", i);
        snprintf(doc, sizeof doc, "{\"workflow\":\"elisa\",\"name\":\"burst %d\"}", i);
        /* A wait now and then keeps Paho's queue short; the daemon sees them back to back. */
        assert_int_equal(
            h_req_publish(rq, topic, doc, strlen(doc), "answers/burst", corr, NULL, i % 50 == 49),
            0);
    }
    assert_true(h_req_wait(rq, before + BURST, 60000) >= before + BURST);
    print_message("burst: %d runs published and answered in %lld ms\n", BURST, h_now_ms() - t0);
    h_answer_t *v;
    int n = h_req_answers(rq, &v);
    static bool seen[BURST];
    int got = 0;
    for (int i = 0; i < n; i++) {
        int k;
        if (!v[i].corr || sscanf(v[i].corr, "burst-%d", &k) != 1)
            continue;
        assert_true(k >= 0 && k < BURST);
        assert_false(seen[k]);
        seen[k] = true;
        got++;
        assert_string_equal(v[i].topic, "answers/burst");
        assert_non_null(strstr(v[i].payload, "\"code\":201"));
    }
    assert_int_equal(got, BURST);
    assert_int_equal(runs_count(), runs0 + BURST);
}

/* A batch for a campaign that does not exist: refused, with the Correlation Data echoed. */
static void test_batch_correlation(void **state)
{
    (void)state;
    char t[200];
    snprintf(t, sizeof t, "%s/in/campaigns/none/batches", root);
    const char *batch = "{\"batch\":\"b1\",\"candidates\":[{\"id\":\"q1\",\"params\":{}}]}";
    json_t *a = NULL;
    for (int tries = 0; tries < 20 && !a; tries++) {
        assert_int_equal(
            h_req_publish(rq, t, batch, strlen(batch), "answers/batch", "batch-1", NULL, true), 0);
        a = h_req_answer(rq, "batch-1", 1000);
    }
    assert_non_null(a);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "rejected");
    json_decref(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_replay_reuse), cmocka_unit_test(test_invalid_documents),
        cmocka_unit_test(test_nowhere_to_answer),   cmocka_unit_test(test_burst),
        cmocka_unit_test(test_batch_correlation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
