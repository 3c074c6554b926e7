/* Utilisation with a real labloopd, PostgreSQL and store: an instrument idle, paused by an
 * operator and idle again has those seconds per state in GET /v1/instruments/{id}/utilisation,
 * in /metrics (labloop_instrument_state_seconds_total) and, interval by interval, in
 * PostgreSQL's labloop.instrument_states and its daily view, which agree with the daemon's to the
 * millisecond once the intervals ended; a kill -9 ends the open interval where it was last known
 * to last and the time until the restart is unrecorded, never given to a state; bad query
 * parameters are refused one by one. */
#include "tests/harness/harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char extra[] = "[instrument mover1]\ndriver = manual-mover\n";

static double secs(json_t *doc, const char *state)
{
    return json_number_value(json_object_get(json_object_get(doc, "totals"), state));
}

static json_t *util(const h_daemon_t *d, const char *query)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/instruments/mover1/utilisation%s", query);
    return h_api(d, "GET", path, NULL, 200);
}

static void wait_state(const h_daemon_t *d, const char *state)
{
    for (long long end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(20)) {
        json_t *doc = h_api(d, "GET", "/v1/instruments/mover1", NULL, 200);
        bool ok = strcmp(json_string_value(json_object_get(doc, "state")), state) == 0;
        json_decref(doc);
        if (ok)
            return;
    }
    fail_msg("mover1 never became %s", state);
}

static void test_states_pg_metrics(void **state)
{
    (void)state;
    h_pg_t pg;
    h_daemon_t d;
    assert_int_equal(h_pg_start(&pg), 0);
    assert_int_equal(h_daemon_start(&d, &pg, NULL, extra), 0);
    wait_state(&d, "idle");
    h_sleep_ms(300);
    json_decref(
        h_api(&d, "POST", "/v1/instruments/mover1/pause", "{\"reason\":\"cleaning\"}", 200));
    wait_state(&d, "paused");
    h_sleep_ms(1200);
    json_decref(h_api(&d, "POST", "/v1/instruments/mover1/resume", NULL, 200));
    wait_state(&d, "idle");

    json_t *u = util(&d, "");
    assert_true(secs(u, "paused") >= 1.2);
    assert_true(secs(u, "idle") >= 0.3);
    assert_true(secs(u, "fault") == 0);
    assert_int_equal(json_array_size(json_object_get(u, "days")), 7);
    assert_true(json_number_value(json_object_get(json_object_get(u, "since_start"), "paused")) >=
                1.2);
    json_decref(u);
    assert_true(h_metric(&d, "labloop_instrument_state_seconds_total{instrument=\"mover1\","
                             "state=\"paused\"}") >= 1);

    /* A clean stop ends every interval: the daemon's figures and PostgreSQL's are the same. */
    assert_int_equal(h_daemon_stop(&d), 0);
    assert_int_equal(h_daemon_restart(&d), 0);
    /* the intervals up to the stop, asked of a window that ends before the restart */
    long long stopped_rows = h_pg_count_waitf(
        &pg, 1, 20000,
        "SELECT count(*) FROM labloop.instrument_states WHERE instrument = 'mover1' "
        "AND state = 'paused'");
    assert_int_equal(stopped_rows, 1);
    char out[128];
    assert_int_equal(h_pg_query(&pg,
                                "SELECT extract(epoch FROM to_ts - from_ts)::numeric(12,3) FROM "
                                "labloop.instrument_states WHERE instrument = 'mover1' AND state "
                                "= 'paused'",
                                out, sizeof out),
                     0);
    double pg_paused = atof(out);
    assert_true(pg_paused >= 1.2);
    assert_int_equal(h_pg_query(&pg,
                                "SELECT sum(seconds)::numeric(12,3) FROM "
                                "labloop.instrument_utilisation_daily WHERE instrument = 'mover1' "
                                "AND state = 'paused'",
                                out, sizeof out),
                     0);
    assert_true(atof(out) == pg_paused);
    u = util(&d, "");
    char mine[32];
    snprintf(mine, sizeof mine, "%.3f", secs(u, "paused"));
    assert_true(atof(mine) == pg_paused);
    json_decref(u);
    h_daemon_destroy(&d);
    h_pg_destroy(&pg);
}

static void test_kill9_leaves_unrecorded(void **state)
{
    (void)state;
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, extra), 0);
    wait_state(&d, "idle");
    json_decref(h_api(&d, "POST", "/v1/instruments/mover1/pause", NULL, 200));
    wait_state(&d, "paused");
    h_sleep_ms(200);
    h_daemon_kill9(&d);
    h_sleep_ms(1500);
    assert_int_equal(h_daemon_restart(&d), 0);
    wait_state(&d, "idle");
    json_t *u = util(&d, "");
    /* The paused interval ends where it was last known to last (its start: no minute passed);
     * the 1.5 s without a daemon went to no state. */
    assert_true(secs(u, "paused") < 1.0);
    assert_true(secs(u, "unrecorded") >= 1.5);
    json_decref(u);
    h_daemon_destroy(&d);
}

static void test_bad_queries(void **state)
{
    (void)state;
    h_daemon_t d;
    assert_int_equal(h_daemon_start(&d, NULL, NULL, extra), 0);
    static const struct {
        const char *query, *path;
    } bad[] = {
        {"?from=yesterday", "from"},
        {"?to=2026-13-01", "to"},
        {"?by=week", "by"},
        {"?from=2026-12-05&to=2026-12-01", "to"},
        {"?from=2020-01-01&to=2026-01-01", "to"},
        {"?colour=red", "colour"},
        {"?from=2026-12-01T00:00:00", "from"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char path[256];
        snprintf(path, sizeof path, "/v1/instruments/mover1/utilisation%s", bad[i].query);
        json_t *p = h_api(&d, "GET", path, NULL, 400);
        json_t *e = json_array_get(json_object_get(p, "errors"), 0);
        if (!e || strcmp(json_string_value(json_object_get(e, "path")), bad[i].path) != 0)
            fail_msg("%s: expected an error at %s, got %s", bad[i].query, bad[i].path,
                     json_dumps(p, 0));
        json_decref(p);
    }
    json_decref(h_api(&d, "GET", "/v1/instruments/nope/utilisation", NULL, 404));
    /* One day asked by its date, and by campaign (none yet). */
    json_t *u = util(&d, "?from=2026-01-01&to=2026-01-02&by=campaign");
    assert_int_equal(json_array_size(json_object_get(u, "days")), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(u, "days"), 0), "day")),
        "2026-01-01");
    assert_true(json_is_array(json_object_get(u, "campaigns")));
    json_decref(u);
    h_daemon_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_states_pg_metrics),
        cmocka_unit_test(test_kill9_leaves_unrecorded),
        cmocka_unit_test(test_bad_queries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
