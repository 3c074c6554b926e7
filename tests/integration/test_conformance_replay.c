/* Conformance of labloopd's drivers to recordings built from independent transcripts
 * (tests/fixtures/wire/): labloop-sim --replay plays the instrument, labloopd drives it through
 * its HTTP actions, and every request the driver sends must be one the real instrument was
 * recorded answering.
 *   CN7500: minimalmodbus tests/test_minimalmodbus.py at 785262db5f, "Recorded data from
 *           OmegaCN7500", slave 10: PV 25.0, SV 325.8, run bit 1 (read with function 02).
 *   BioTek: PyLabRobot pylabrobot/legacy/plate_reading/agilent/biotek_tests.py at 598b58ffb,
 *           test_get_current_temperature (23.6 degC) and test_read_absorbance (580 nm).
 * Built only with -DLAB_CONFORMANCE_REPLAY=ON: it passes once the drivers speak as the sources
 * do (the CN7500 run bit, the BioTek read definition and plate geometry). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "tests/harness/harness.h"

static h_sim_t sim;
static h_daemon_t dmn;
static char dir[256]; /* the ptys */

static int setup(void **state)
{
    char sections[2048], fx_reader[600], fx_cn[600];
    if (h_tempdir("labconf", dir, sizeof dir))
        return -1;
    int mb = h_free_port();
    snprintf(sections, sizeof sections,
             "[instrument reader1]\ndriver = biotek-synergy\nport = %s/reader1\n"
             "[instrument cn7500]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = omega-cn7500\nunit = 10\n",
             dir, mb);
    snprintf(fx_reader, sizeof fx_reader, "%s/tests/fixtures/wire/biotek_synergy.jsonl",
             LAB_SOURCE_DIR_T);
    snprintf(fx_cn, sizeof fx_cn, "%s/tests/fixtures/wire/cn7500_minimalmodbus.jsonl",
             LAB_SOURCE_DIR_T);
    const char *args[] = {"--replay", fx_reader, "--replay", fx_cn, NULL};
    if (h_sim_start_args(&sim, sections, args))
        return -1;
    return h_daemon_start(&dmn, NULL, NULL, sections);
}

static int teardown(void **state)
{
    h_daemon_destroy(&dmn);
    h_sim_stop(&sim);
    h_rmtree(dir);
    return 0;
}

static json_t *act(const char *id, const char *body, int *status)
{
    char path[128], *resp = NULL;
    snprintf(path, sizeof path, "/v1/instruments/%s/actions", id);
    *status = h_http(dmn.url, "POST", path, "Content-Type: application/json", body, &resp);
    json_t *doc = json_loads(resp ? resp : "null", JSON_DECODE_ANY, NULL);
    if (*status != 200)
        fprintf(stderr, "POST %s %s: %d %s\n", path, body, *status, resp ? resp : "");
    free(resp);
    return doc;
}

static bool wait_state(const char *id, const char *state, int ms)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/instruments/%s", id);
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(50)) {
        char *resp = NULL;
        h_http(dmn.url, "GET", path, NULL, NULL, &resp);
        bool ok = resp && strstr(resp, state);
        free(resp);
        if (ok)
            return true;
    }
    fprintf(stderr, "%s never %s\n", id, state);
    return false;
}

static double num(json_t *doc, const char *key)
{
    json_t *v = json_object_get(json_object_get(doc, "result"), key);
    return json_is_number(v) ? json_number_value(v) : -1e9;
}

/* The replay's report of requests it never saw from this instrument (0: none). */
static int unseen(const char *id)
{
    char needle[96];
    snprintf(needle, sizeof needle, "%s: first request the recording never saw", id);
    int n = h_sim_log_count(&sim, needle);
    snprintf(needle, sizeof needle, "%s: another request the recording never saw", id);
    return n + h_sim_log_count(&sim, needle);
}

/* Each check is made and reported, so one run shows every action a recording does not cover. */
static int failures;

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "not as recorded: %s\n", what);
        failures++;
    }
}

static void test_cn7500(void **state)
{
    int st;
    failures = 0;
    assert_true(wait_state("cn7500", "\"idle\"", 10000));
    /* status last: one the recording cannot answer puts the driver in fault, where
     * set_temperature is refused */
    json_decref(
        act("cn7500", "{\"action\":\"set_temperature\",\"params\":{\"temperature_c\":20}}", &st));
    check(st == 200, "set_temperature 20 answered");
    json_decref(act("cn7500", "{\"action\":\"stop\"}", &st));
    check(st == 200, "stop answered");
    json_decref(act("cn7500", "{\"action\":\"run\"}", &st));
    check(st == 200, "run answered");
    json_t *a = act("cn7500", "{\"action\":\"status\"}", &st);
    check(st == 200, "status answered");
    check(num(a, "temperature_c") == 25.0, "status temperature_c 25.0");
    check(num(a, "setpoint_c") == 325.8, "status setpoint_c 325.8");
    check(num(a, "running") == 1, "status running 1");
    json_decref(a);
    check(unseen("cn7500") == 0, "every request recorded");
    assert_int_equal(failures, 0);
}

static void test_biotek(void **state)
{
    int st;
    failures = 0;
    assert_true(wait_state("reader1", "\"idle\"", 10000));
    json_t *a = act("reader1", "{\"action\":\"status\"}", &st);
    check(st == 200, "status answered");
    check(num(a, "temperature_c") == 23.6, "status temperature_c 23.6");
    json_decref(a);
    a = act("reader1", "{\"action\":\"read_absorbance\",\"params\":{\"wavelength_nm\":580}}", &st);
    check(st == 200, "read_absorbance answered");
    json_t *values = json_object_get(json_object_get(a, "result"), "values");
    check(json_object_size(values) == 96, "96 values");
    /* biotek_tests.py test_read_absorbance's expected_data */
    check(json_real_value(json_object_get(values, "A1")) == 0.1917, "A1 0.1917");
    check(json_real_value(json_object_get(values, "B1")) == 0.0802, "B1 0.0802");
    check(json_real_value(json_object_get(values, "H12")) == 0.1316, "H12 0.1316");
    json_decref(a);
    check(unseen("reader1") == 0, "every request recorded");
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cn7500),
        cmocka_unit_test(test_biotek),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
