/* A long queue: labloopd plans a look-ahead window of the waiting runs in detail and keeps the
 * others queued with that reason, in the planner's order (an urgent newcomer goes ahead of
 * normal runs already waiting), acts on a queued run as on any other (priority, cancel), and finds
 * the same queue after a restart; a run whose workflow is not stored yet is planned when it comes.
 * In a cell without instruments, so that nothing leaves the queue. */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* More than the window (256 runs) */
#define RUNS 300

static const char wf_assay[] =
    "{\"name\":\"assay\",\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":120,"
    "\"params\":{\"reagent\":\"substrate\",\"volume_ul\":50,\"wells\":\"A1:H3\"}},"
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"plate_reader\",\"duration_s\":90,"
    "\"params\":{\"wavelength_nm\":450},\"start_within_s\":120}]}";

static char *submit(h_daemon_t *d, const char *priority, int plate)
{
    char body[160];
    snprintf(body, sizeof body, "{\"workflow\":\"assay\",\"plate\":\"Q%05d\",\"priority\":\"%s\"}",
             plate, priority);
    json_t *doc = h_api(d, "POST", "/v1/runs", body, 201);
    char *id = strdup(json_string_value(json_object_get(doc, "id")));
    json_decref(doc);
    return id;
}

/* The run's waiting_reason once it contains want (polled: plans follow submissions soon, not at
 * once); the test fails with the last one after 10 s. */
static void wait_reason(h_daemon_t *d, const char *id, const char *want)
{
    char path[128], last[512] = "";
    snprintf(path, sizeof path, "/v1/runs/%s", id);
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(20)) {
        json_t *doc = h_api(d, "GET", path, NULL, 200);
        const char *why = json_string_value(json_object_get(doc, "waiting_reason"));
        snprintf(last, sizeof last, "%s", why ? why : "(none)");
        json_decref(doc);
        if (strstr(last, want))
            return;
    }
    fail_msg("run %s waits for \"%s\", not \"%s\"", id, last, want);
}

static long long runs_live(h_daemon_t *d)
{
    char *text = NULL;
    long long n = -1;
    assert_int_equal(h_http(d->url, "GET", "/metrics", NULL, NULL, &text), 200);
    const char *at = strstr(text, "\nlabloop_runs_live ");
    if (at)
        n = strtoll(at + strlen("\nlabloop_runs_live "), NULL, 10);
    free(text);
    return n;
}

static void test_long_queue(void **state)
{
    (void)state;
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, NULL), 0);
    json_decref(h_api(&d, "POST", "/v1/workflows", wf_assay, 201));
    char *ids[RUNS];
    for (int i = 0; i < RUNS; i++)
        ids[i] = submit(&d, "normal", i);

    /* the first are planned in detail (and wait for their instrument), the last are queued */
    wait_reason(&d, ids[0], "needs 'liquid_handler'");
    wait_reason(&d, ids[RUNS - 1], "queued:");

    /* an urgent newcomer goes ahead of every normal run waiting */
    char *urgent = submit(&d, "urgent", RUNS);
    wait_reason(&d, urgent, "needs 'liquid_handler'");

    /* a queued run made urgent enters the window at once */
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%s/priority", ids[RUNS - 3]);
    json_decref(h_api(&d, "POST", path, "{\"priority\":\"urgent\"}", 200));
    wait_reason(&d, ids[RUNS - 3], "needs 'liquid_handler'");

    /* a queued run is cancelled like any other */
    snprintf(path, sizeof path, "/v1/runs/%s/cancel", ids[RUNS - 2]);
    json_t *c = h_api(&d, "POST", path, "{\"reason\":\"not needed\"}", 200);
    assert_string_equal(json_string_value(json_object_get(c, "state")), "cancelled");
    json_decref(c);
    assert_int_equal(runs_live(&d), RUNS);

    /* the schedule lists every waiting run with its reason */
    json_t *sch = h_api(&d, "GET", "/v1/schedule", NULL, 200);
    json_t *waiting = json_object_get(sch, "waiting");
    assert_int_equal(json_array_size(waiting), RUNS);
    size_t i;
    json_t *w;
    json_array_foreach(waiting, i, w)
    {
        const char *why = json_string_value(json_object_get(w, "reason"));
        assert_non_null(why);
        assert_true(strlen(why) > 0);
    }
    json_decref(sch);

    /* the same queue after a restart */
    assert_int_equal(h_daemon_stop(&d), 0);
    assert_int_equal(h_daemon_restart(&d), 0);
    assert_int_equal(runs_live(&d), RUNS);
    wait_reason(&d, urgent, "needs 'liquid_handler'");
    wait_reason(&d, ids[RUNS - 1], "queued:");
    snprintf(path, sizeof path, "/v1/runs/%s", ids[RUNS - 2]);
    json_t *gone = h_api(&d, "GET", path, NULL, 200);
    assert_string_equal(json_string_value(json_object_get(gone, "state")), "cancelled");
    json_decref(gone);

    for (int k = 0; k < RUNS; k++)
        free(ids[k]);
    free(urgent);
    assert_int_equal(h_daemon_stop(&d), 0);
    h_daemon_destroy(&d);
}

/* A run of a workflow not stored yet waits with that reason and is planned once the workflow
 * comes, with no other event to wake the scheduler. */
static void test_workflow_comes_later(void **state)
{
    (void)state;
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, NULL), 0);
    /* a daemon that refuses a run of a workflow not stored unless asked to wait for it is asked;
     * one that does not know the flag refuses the flag */
    char *resp = NULL;
    int st = h_http(d.url, "POST", "/v1/runs", "Content-Type: application/json",
                    "{\"workflow\":\"assay\",\"plate\":\"L1\",\"await_workflow\":true}", &resp);
    json_t *doc =
        st == 201 ? json_loads(resp, 0, NULL)
                  : h_api(&d, "POST", "/v1/runs", "{\"workflow\":\"assay\",\"plate\":\"L1\"}", 201);
    free(resp);
    char *id = strdup(json_string_value(json_object_get(doc, "id")));
    json_decref(doc);
    wait_reason(&d, id, "workflow assay is not stored");
    json_decref(h_api(&d, "POST", "/v1/workflows", wf_assay, 201));
    wait_reason(&d, id, "needs 'liquid_handler'");
    free(id);
    assert_int_equal(h_daemon_stop(&d), 0);
    h_daemon_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_long_queue),
                                       cmocka_unit_test(test_workflow_comes_later)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
