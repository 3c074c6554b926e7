/* modbus-temperature against labloop-sim's Modbus TCP controllers (an Omega CN7500 and a
 * Eurotherm 3200): idle once the unit answers, status, set point, run and stop seen through the
 * simulated process value (it follows the set point only while running), the register range
 * check, polling into telemetry, bad params, an unknown action, and every injected fault: a
 * Modbus exception, silence, garbage and a dropped connection, each followed by recovery. */
#include "drivers/driver.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static h_sim_t sim;
static int port_cn, port_et;

/* ---- setup ---- */

static int setup(void **state)
{
    (void)state;
    port_cn = h_free_port();
    port_et = h_free_port();
    char ini[1024];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 20\nsim_seed = 3\n"
             "[instrument heat1]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = omega-cn7500\nsim_ambient = 22\nsim_tau = 5\n"
             "[instrument heat2]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = eurotherm-3200\nsim_ambient = 20\nsim_tau = 5\n",
             port_cn, port_et);
    if (h_sim_start(&sim, ini))
        return -1;
    return h_drv_init(20);
}

static int teardown(void **state)
{
    (void)state;
    h_sim_stop(&sim);
    h_drv_fini();
    return 0;
}

static void fault(const char *id, const char *kind)
{
    assert_int_equal(h_sim_fault(&sim, id, kind, 0), 0);
}

/* ---- tests ---- */

static char uri_cn[64], uri_et[64];

static lab_driver_t *open_cn(const char *poll_s)
{
    snprintf(uri_cn, sizeof uri_cn, "tcp://127.0.0.1:%d", port_cn);
    lab_drv_kv_t kv[] = {{"driver", "modbus-temperature", 2},
                         {"modbus", uri_cn, 3},
                         {"map", "omega-cn7500", 4},
                         {"timeout_ms", "300", 5},
                         {"poll_s", poll_s, 6},
                         {"sim_tau", "5", 7}};
    return h_drv_open("heat1", kv, sizeof kv / sizeof kv[0]);
}

static bool pv_reaches(lab_driver_t *d, double lo, double hi)
{
    for (long long end = h_now_ms() + 15000; h_now_ms() < end; h_sleep_ms(20)) {
        json_t *r = h_drv_call_ok(d, "status", NULL);
        double t = h_drv_num(r, "temperature_c");
        json_decref(r);
        if (t >= lo && t <= hi)
            return true;
    }
    return false;
}

static void test_cn7500(void **state)
{
    (void)state;
    lab_driver_t *d = open_cn("0");
    assert_int_equal(lab_driver_state(d), LAB_INST_OFFLINE);
    h_drv_wait_state(d, LAB_INST_IDLE);
    json_t *info = lab_driver_info(d);
    assert_string_equal(json_string_value(json_object_get(info, "model")), "Omega CN7500");
    assert_string_equal(json_string_value(json_object_get(info, "map")), "omega-cn7500");

    /* at rest: ambient, the set point the simulator starts with, not running */
    json_t *r = h_drv_call_ok(d, "status", NULL);
    assert_true(h_drv_num(r, "temperature_c") > 21 && h_drv_num(r, "temperature_c") < 23);
    assert_true(h_drv_num(r, "setpoint_c") > 21.9 && h_drv_num(r, "setpoint_c") < 22.1);
    assert_int_equal((int)h_drv_num(r, "running"), 0);
    json_decref(r);

    r = h_drv_call_ok(d, "set_temperature", "{\"temperature_c\": 60.5}");
    assert_true(h_drv_num(r, "setpoint_c") == 60.5);
    json_decref(r);
    r = h_drv_call_ok(d, "status", NULL);
    assert_true(h_drv_num(r, "setpoint_c") > 60.45 && h_drv_num(r, "setpoint_c") < 60.55);
    assert_true(h_drv_num(r, "temperature_c") < 30); /* stopped: it does not heat */
    json_decref(r);
    r = h_drv_call_ok(d, "run", NULL);
    assert_int_equal((int)h_drv_num(r, "running"), 1);
    json_decref(r);
    assert_true(pv_reaches(d, 55, 60.6));
    r = h_drv_call_ok(d, "status", NULL);
    assert_int_equal((int)h_drv_num(r, "running"), 1);
    json_decref(r);
    r = h_drv_call_ok(d, "stop", NULL);
    assert_int_equal((int)h_drv_num(r, "running"), 0);
    json_decref(r);
    assert_true(pv_reaches(d, 20, 27)); /* back towards ambient */

    /* the register's range: 1 decimal in a signed word */
    lab_drv_error_t e;
    assert_null(h_drv_call(d, "set_temperature", "{\"temperature_c\": 4000}", &e));
    assert_int_equal(e.code, LAB_EINVAL);
    assert_non_null(strstr(e.text, "4000"));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    r = h_drv_call_ok(d, "status", NULL); /* nothing was written */
    assert_true(h_drv_num(r, "setpoint_c") > 60.45 && h_drv_num(r, "setpoint_c") < 60.55);
    json_decref(r);

    /* refused before anything is sent */
    json_t *problems = NULL;
    assert_int_not_equal(
        lab_driver_call(d, "set_temperature", NULL, 0, h_drv_on_done, NULL, &e, &problems), 0);
    assert_int_equal(e.code, LAB_EINVAL);
    assert_true(json_array_size(problems) >= 1);
    json_decref(problems);
    problems = NULL;
    json_t *p = json_pack("{s:s,s:i}", "temperature_c", "hot", "ramp", 1);
    assert_int_not_equal(
        lab_driver_call(d, "set_temperature", p, 0, h_drv_on_done, NULL, &e, &problems), 0);
    json_decref(p);
    assert_int_equal(e.code, LAB_EINVAL);
    assert_int_equal(json_array_size(problems), 2);
    json_decref(problems);
    p = json_pack("{s:i}", "now", 1);
    assert_int_not_equal(lab_driver_call(d, "run", p, 0, h_drv_on_done, NULL, &e, NULL), 0);
    json_decref(p);
    assert_int_equal(e.code, LAB_EINVAL);
    assert_int_not_equal(lab_driver_call(d, "bake", NULL, 0, h_drv_on_done, NULL, &e, NULL), 0);
    assert_int_equal(e.code, LAB_ENOACTION);

    /* a Modbus exception: the device's code and name, then the next request works */
    fault("heat1", "error");
    assert_null(h_drv_call(d, "status", NULL, &e));
    assert_int_equal(e.code, LAB_EDEVICE);
    assert_string_equal(e.device_code, "exception 4");
    assert_non_null(strstr(e.text, "SERVER DEVICE FAILURE"));
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    json_decref(h_drv_call_ok(d, "status", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* silence: a timeout, fault until the unit answers again */
    fault("heat1", "timeout");
    assert_null(h_drv_call(d, "set_temperature", "{\"temperature_c\": 30}", &e));
    assert_int_equal(e.code, LAB_ETIMEDOUT);
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    /* in fault, no new set point: refused at once with nothing sent, the set point stays as it
     * was until a read goes through */
    assert_int_equal(h_drv_do(d, "set_temperature", "{\"temperature_c\": 90}"), LAB_ESTATE);
    assert_true(h_drv_error()->not_started);
    assert_non_null(strstr(h_drv_error()->text, "in fault"));
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    fault("heat1", "clear");
    r = h_drv_call_ok(d, "status", NULL);
    assert_true(h_drv_num(r, "setpoint_c") < 89);
    json_decref(r);
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* garbage: not a Modbus answer (or not a complete one), then the next request works */
    fault("heat1", "garbage");
    assert_null(h_drv_call(d, "status", NULL, &e));
    assert_true(e.code == LAB_EPROTO || e.code == LAB_ETIMEDOUT);
    json_decref(h_drv_call_ok(d, "status", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* a dropped connection: offline (refused while so), back to idle by itself once possible */
    fault("heat1", "disconnect");
    assert_null(h_drv_call(d, "status", NULL, &e));
    assert_true(e.code == LAB_EOFFLINE);
    h_drv_wait_state(d, LAB_INST_OFFLINE);
    assert_null(h_drv_call(d, "status", NULL, &e));
    assert_int_equal(e.code, LAB_EOFFLINE);
    fault("heat1", "clear");
    h_drv_wait_state(d, LAB_INST_IDLE);
    r = h_drv_call_ok(d, "status", NULL);
    assert_true(h_drv_num(r, "setpoint_c") > 60.45 && h_drv_num(r, "setpoint_c") < 60.55);
    json_decref(r);
    h_drv_close(d);
}

static bool got_telemetry(void *arg)
{
    (void)arg;
    return h_drv_telemetry() && json_object_get(h_drv_telemetry(), "temperature_c");
}

static void test_polling(void **state)
{
    (void)state;
    lab_driver_t *d = open_cn("0.05");
    h_drv_wait_state(d, LAB_INST_IDLE);
    h_drv_telemetry_clear();
    assert_true(h_drv_run_until(got_telemetry, NULL, 10000));
    assert_true(json_is_number(json_object_get(h_drv_telemetry(), "setpoint_c")));
    assert_true(json_is_number(json_object_get(h_drv_telemetry(), "running")));
    h_drv_close(d);
}

static void test_eurotherm(void **state)
{
    (void)state;
    snprintf(uri_et, sizeof uri_et, "tcp://127.0.0.1:%d", port_et);
    lab_drv_kv_t kv[] = {{"driver", "modbus-temperature", 2},
                         {"modbus", uri_et, 3},
                         {"map", "eurotherm-3200", 4},
                         {"unit", "1", 5},
                         {"decimals", "1", 6},
                         {"poll_s", "0", 7}};
    lab_driver_t *d = h_drv_open("heat2", kv, sizeof kv / sizeof kv[0]);
    h_drv_wait_state(d, LAB_INST_IDLE);
    assert_string_equal(json_string_value(json_object_get(lab_driver_info(d), "model")),
                        "Eurotherm 3200");
    /* the simulated 3200 starts regulating at ambient */
    json_t *r = h_drv_call_ok(d, "status", NULL);
    assert_int_equal((int)h_drv_num(r, "running"), 1);
    assert_true(h_drv_num(r, "temperature_c") > 19 && h_drv_num(r, "temperature_c") < 21);
    json_decref(r);
    r = h_drv_call_ok(d, "stop", NULL);
    json_decref(r);
    r = h_drv_call_ok(d, "status", NULL);
    assert_int_equal((int)h_drv_num(r, "running"), 0);
    json_decref(r);
    json_decref(h_drv_call_ok(d, "set_temperature", "{\"temperature_c\": 45.5}"));
    json_decref(h_drv_call_ok(d, "run", NULL));
    assert_true(pv_reaches(d, 42, 45.6));
    r = h_drv_call_ok(d, "status", NULL);
    assert_true(h_drv_num(r, "setpoint_c") > 45.45 && h_drv_num(r, "setpoint_c") < 45.55);
    json_decref(r);
    lab_drv_error_t e;
    assert_null(h_drv_call(d, "set_temperature", "{\"temperature_c\": 3300}", &e));
    assert_int_equal(e.code, LAB_EINVAL);
    assert_non_null(strstr(e.text, "3300"));
    fault("heat2", "error");
    assert_null(h_drv_call(d, "run", NULL, &e));
    assert_int_equal(e.code, LAB_EDEVICE);
    assert_string_equal(e.device_code, "exception 4");
    json_decref(h_drv_call_ok(d, "run", NULL));
    h_drv_close(d);
}

static void test_config(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {{"driver", "modbus-temperature", 2},
                         {"map", "omega-cn7501", 3},
                         {"unit", "300", 4},
                         {"sim_tau", "5", 5}};
    lab_drv_conf_t conf = {.id = "bad", .line = 1, .kv = kv, .n = 4, .time_scale = 1};
    h_drv_problems_t p = {0};
    assert_int_equal(lab_driver_check(&conf, h_drv_on_conf_err, &p), 3); /* modbus, map, unit */
    lab_drv_kv_t kv2[] = {{"driver", "modbus-temperature", 2},
                          {"modbus", "udp://127.0.0.1:502", 3},
                          {"map", "eurotherm-3200", 4}};
    lab_drv_conf_t conf2 = {.id = "bad2", .line = 1, .kv = kv2, .n = 3, .time_scale = 1};
    p.n = 0;
    assert_int_equal(lab_driver_check(&conf2, h_drv_on_conf_err, &p), 0);
    lab_driver_t *d = NULL;
    char err[256] = "";
    assert_int_not_equal(lab_driver_new(h_drv_loop(), &conf2, h_drv_host(), &d, err, sizeof err),
                         0);
    assert_null(d);
    assert_non_null(strstr(err, "udp://127.0.0.1:502"));
    uv_run(h_drv_loop(), UV_RUN_NOWAIT);
}

/* Every driver closed above: nothing of theirs (timers, the buses' queues) is left open. */
static void test_all_released(void **state)
{
    (void)state;
    assert_true(h_drv_run_until(h_drv_loop_dead, NULL, 5000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cn7500),       cmocka_unit_test(test_polling),
        cmocka_unit_test(test_eurotherm),    cmocka_unit_test(test_config),
        cmocka_unit_test(test_all_released),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
