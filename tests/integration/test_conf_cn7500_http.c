/* Conformance, end to end: labloopd's modbus-temperature driver (map omega-cn7500) on a Modbus RTU
 * line to labloop-sim's CN7500 (unit 10 on a pty, at the 25.9 degC recorded for unit 10 in
 * pyhys/minimalmodbus tests/test_omegacn7500.py, commit
 * 696b61c73c5655d0efc12bcb39c22da9e41a74a8), driven through the HTTP actions. The status carries
 * the run state read with function 02 as the recorded is_running() does, the set point written
 * with function 16 as set_setpoint() does, and output 1 (0x1012) in % with the one decimal of
 * omegacn7500.py get_output1(): the simulated output is proportional over 100 degC below the
 * set point while running (sim/dev_modbus.c), so 60.0 - 25.9 = 34.1 %, and 0 when stopped. A
 * process time constant of 10^6 lab seconds keeps the process value at 25.9 during the test. */
#include "tests/harness/harness.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static h_sim_t sim;
static h_daemon_t dmn;
static char dir[256];

static int setup(void **state)
{
    (void)state;
    if (h_tempdir("labcnh", dir, sizeof dir))
        return -1;
    char sections[1024], ini[1200];
    snprintf(sections, sizeof sections,
             "[instrument heat10]\ndriver = modbus-temperature\nmodbus = rtu:%s/heat10\n"
             "map = omega-cn7500\nunit = 10\ntimeout_ms = 1000\npoll_s = 0.2\n"
             "sim_ambient = 25.9\nsim_tau = 1000000\n",
             dir);
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = 1\nsim_seed = 9\n%s", sections);
    if (h_sim_start(&sim, ini))
        return -1;
    return h_daemon_start(&dmn, NULL, NULL, sections);
}

static int teardown(void **state)
{
    (void)state;
    h_daemon_destroy(&dmn);
    h_sim_stop(&sim);
    h_rmtree(dir);
    return 0;
}

/* POST an action that must answer 200; its result (owned by the caller). */
static json_t *act(const char *body)
{
    json_t *a = h_api(&dmn, "POST", "/v1/instruments/heat10/actions", body, 200);
    json_t *r = json_incref(json_object_get(a, "result"));
    json_decref(a);
    assert_non_null(r);
    return r;
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_number(v))
        fail_msg("no number %s in %s", k, json_dumps(o, JSON_COMPACT));
    return json_number_value(v);
}

static void wait_idle(void)
{
    json_t *doc = NULL;
    for (long long end = h_now_ms() + 20000; h_now_ms() < end; h_sleep_ms(25)) {
        json_decref(doc);
        doc = h_api(&dmn, "GET", "/v1/instruments/heat10", NULL, 200);
        if (strcmp(json_string_value(json_object_get(doc, "state")), "idle") == 0) {
            json_decref(doc);
            return;
        }
    }
    fail_msg("heat10 never idle: %s", json_dumps(doc, JSON_COMPACT));
}

static void test_status_run_output(void **state)
{
    (void)state;
    wait_idle();
    json_t *r = act("{\"action\":\"status\"}");
    assert_true(fabs(num(r, "temperature_c") - 25.9) < 1e-9);
    assert_int_equal((int)num(r, "running"), 0);
    assert_true(num(r, "output1_pct") == 0);
    json_decref(r);

    r = act("{\"action\":\"set_temperature\",\"params\":{\"temperature_c\":60}}");
    assert_true(num(r, "setpoint_c") == 60);
    json_decref(r);
    r = act("{\"action\":\"run\"}");
    assert_int_equal((int)num(r, "running"), 1);
    json_decref(r);
    r = act("{\"action\":\"status\"}");
    assert_int_equal((int)num(r, "running"), 1);
    assert_true(fabs(num(r, "setpoint_c") - 60.0) < 1e-9);
    assert_true(fabs(num(r, "temperature_c") - 25.9) < 1e-9);
    assert_true(fabs(num(r, "output1_pct") - 34.1) < 1e-9);
    json_decref(r);

    /* the polled telemetry carries output 1 in % */
    json_t *units = NULL, *doc = NULL;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end && !units; h_sleep_ms(50)) {
        json_decref(doc);
        doc = h_api(&dmn, "GET", "/v1/instruments/heat10", NULL, 200);
        json_t *u = json_object_get(json_object_get(doc, "telemetry"), "units");
        if (json_object_get(u, "output1_pct"))
            units = u;
    }
    if (!units)
        fail_msg("no output1_pct in the telemetry: %s", json_dumps(doc, JSON_COMPACT));
    assert_string_equal(json_string_value(json_object_get(units, "output1_pct")), "%");
    json_decref(doc);

    r = act("{\"action\":\"stop\"}");
    assert_int_equal((int)num(r, "running"), 0);
    json_decref(r);
    r = act("{\"action\":\"status\"}");
    assert_int_equal((int)num(r, "running"), 0);
    assert_true(num(r, "output1_pct") == 0);
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_run_output),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
