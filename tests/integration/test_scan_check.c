/* The plate check end to end: labloopd drives labloop-sim's Liconic (the plate P0042 on its
 * transfer station) and a Keyence reader at it (keyence-sr, at = inc1) through a workflow whose
 * incubation scans the plate first. The plate's own label goes on, the reader's read recorded
 * in the step; a swapped label pauses the run with both barcodes and nothing loaded, retry reads
 * again; an unreadable label is a prompt to the operator (open in /v1/prompts), retry scans again
 * and skip (the operator checked the plate) runs the step without the check; a reader offline
 * holds the run with that reason until it is back. */
#include "tests/harness/harness.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static h_sim_t sim;
static h_daemon_t daemon_;

#define SCALE "60"

static const char wf_chk[] =
    "{\"name\":\"chk\",\"steps\":["
    "{\"name\":\"warm\",\"op\":\"incubate\",\"on\":\"inc1\",\"duration_s\":60,\"scan\":true}]}";

static int setup(void **state)
{
    (void)state;
    char dir[256], sections[2000];
    if (h_tempdir("labscan", dir, sizeof dir))
        return -1;
    snprintf(sections, sizeof sections,
             "[instrument inc1]\ndriver = liconic-stx\nport = %s/inc1\n"
             "rack_type = liconic_rack_44mm_10\nsim_plate = P0042\nsim_step_seconds = 2\n"
             "[instrument bc1]\ndriver = keyence-sr\nport = %s/bc1\nat = inc1\nread_ms = 300\n",
             dir, dir);
    char ini[2400];
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = " SCALE "\n%s", sections);
    if (h_sim_start(&sim, ini))
        return -1;
    if (h_daemon_start(&daemon_, NULL, NULL, ini))
        return -1;
    char *resp = NULL;
    int st = h_http(daemon_.url, "POST", "/v1/workflows", "Content-Type: application/json", wf_chk,
                    &resp);
    free(resp);
    return st == 201 || st == 200 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    h_daemon_destroy(&daemon_);
    h_sim_stop(&sim);
    return 0;
}

static const char *sval(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k)) ?: "";
}

static json_t *scan_of(json_t *run)
{
    return json_object_get(json_array_get(json_object_get(run, "steps"), 0), "scan");
}

static char *submit(void)
{
    json_t *r =
        h_api(&daemon_, "POST", "/v1/runs", "{\"workflow\":\"chk\",\"plate\":\"P0042\"}", 201);
    char *id = strdup(sval(r, "id"));
    json_decref(r);
    return id;
}

static void label(const char *json)
{
    char r[512];
    assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"instrument\":\"bc1\",\"label\":%s}", json),
                     0);
}

static void resume(const char *id, const char *how)
{
    char path[128], body[64];
    snprintf(path, sizeof path, "/v1/runs/%s/resume", id);
    snprintf(body, sizeof body, "{\"step\":\"%s\"}", how);
    json_decref(h_api(&daemon_, "POST", path, body, 200));
}

/* Waits until the run is in state with a reason (field) holding text; its document. */
static json_t *wait_reason(const char *id, const char *state, const char *field, const char *text)
{
    json_t *doc = NULL;
    for (long long end = h_now_ms() + 20000; h_now_ms() < end; h_sleep_ms(20)) {
        json_decref(doc);
        doc = h_run_get(&daemon_, id);
        if (strcmp(sval(doc, "state"), state) == 0 && strstr(sval(doc, field), text))
            return doc;
    }
    char *t = json_dumps(doc, JSON_COMPACT);
    fail_msg("run %s not %s with %s holding '%s': %s", id, state, field, text, t);
    free(t);
    return NULL;
}

/* The plate is where the sim's world has it. */
static void plate_at(const char *where)
{
    char r[512];
    assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"P0042\"}"), 0);
    if (!strstr(r, where))
        fail_msg("P0042: %s, expected at %s", r, where);
}

static void test_match(void **state)
{
    (void)state;
    char *id = submit();
    json_t *doc = h_run_wait(&daemon_, id, "done", 30000);
    json_t *scan = scan_of(doc);
    assert_string_equal(sval(scan, "outcome"), "match");
    assert_true(json_is_true(json_object_get(scan, "matched")));
    assert_string_equal(sval(scan, "read"), "P0042");
    assert_string_equal(sval(scan, "reader"), "bc1");
    plate_at("transfer:inc1"); /* in and out again */
    json_decref(doc);
    free(id);
}

static void test_swapped_label(void **state)
{
    (void)state;
    label("\"P0043\"");
    char *id = submit();
    json_t *doc = wait_reason(id, "paused", "paused_reason",
                              "plate check at inc1: expected P0042, the reader bc1 read P0043");
    assert_string_equal(sval(scan_of(doc), "outcome"), "mismatch");
    assert_null(json_object_get(json_array_get(json_object_get(doc, "steps"), 0), "loaded_at"));
    plate_at("transfer:inc1"); /* never loaded */
    json_decref(doc);
    /* the right label in front: retry reads it and goes on */
    label("false");
    resume(id, "retry");
    doc = h_run_wait(&daemon_, id, "done", 30000);
    assert_string_equal(sval(scan_of(doc), "outcome"), "match");
    json_decref(doc);
    free(id);
}

static void test_unreadable_label(void **state)
{
    (void)state;
    label("null");
    char *id = submit();
    json_t *doc =
        wait_reason(id, "paused", "paused_reason",
                    "label unreadable at inc1 (reader bc1): check that the plate is P0042, then "
                    "resume with skip if it is, retry to scan again, or cancel");
    json_decref(doc);
    plate_at("transfer:inc1");
    /* a prompt for the operator */
    json_t *list = h_api(&daemon_, "GET", "/v1/prompts", NULL, 200), *found = NULL;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(list, "prompts"), i,
                       p) if (strstr(sval(p, "text"), "label unreadable at inc1") &&
                              json_is_true(json_object_get(p, "open"))) found = p;
    assert_non_null(found);
    json_decref(list);
    /* retry scans again: still unreadable, a second attempt paused the same way */
    long noreads = h_sim_log_count(&sim, "bc1: no label read");
    resume(id, "retry");
    for (long long end = h_now_ms() + 20000;; h_sleep_ms(20)) {
        doc = h_run_get(&daemon_, id);
        json_t *step = json_array_get(json_object_get(doc, "steps"), 0);
        if (strcmp(sval(doc, "state"), "paused") == 0 &&
            json_integer_value(json_object_get(step, "attempts")) == 2)
            break;
        json_decref(doc);
        if (h_now_ms() > end)
            fail_msg("run %s: no second paused attempt", id);
    }
    assert_non_null(strstr(sval(doc, "paused_reason"), "label unreadable at inc1"));
    json_decref(doc);
    assert_int_equal(h_sim_log_count(&sim, "bc1: no label read"), noreads + 1);
    /* the operator checked the plate: skip runs the step without the check */
    resume(id, "skip");
    doc = h_run_wait(&daemon_, id, "done", 30000);
    json_t *step = json_array_get(json_object_get(doc, "steps"), 0);
    assert_string_equal(sval(step, "state"), "done");
    assert_non_null(json_object_get(step, "loaded_at"));
    assert_string_equal(sval(scan_of(doc), "outcome"), "waived");
    json_decref(doc);
    label("false");
    free(id);
}

static void test_reader_offline(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "bc1", "disconnect", 0), 0);
    char *id = submit();
    json_t *doc = wait_reason(id, "running", "waiting_reason", "bc1 is offline");
    json_decref(doc);
    plate_at("transfer:inc1"); /* nothing happens while it waits */
    assert_int_equal(h_sim_fault(&sim, "bc1", "clear", 0), 0);
    doc = h_run_wait(&daemon_, id, "done", 30000);
    assert_string_equal(sval(scan_of(doc), "outcome"), "match");
    json_decref(doc);
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_swapped_label),
        cmocka_unit_test(test_unreadable_label),
        cmocka_unit_test(test_reader_offline),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
