/* liconic-stx against labloop-sim: the handshake to idle, status read from the simulated
 * climate, a plate loaded into a slot and back (checked in the simulator's world), set points
 * written and read back, parameters refused before anything is sent, a handler error (unload
 * from an empty slot) holding the instrument in fault until reset, a step that never gets
 * ready, and every injected fault: error (E5, then the flag), garbage, timeout, disconnect. Last,
 * polling delivers telemetry. */
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
static char dir[256], port1[400], port2[400];
static lab_driver_t *drv, *drv2;
static lab_inst_state_t state1, state2;
static int telemetry;
static double last_temp;

static void on_state(void *ctx, lab_driver_t *d, lab_inst_state_t s, const lab_drv_error_t *e)
{
    (void)ctx;
    (void)e;
    if (d == drv2)
        state2 = s;
    else
        state1 = s;
}

static void on_tel(void *ctx, lab_driver_t *d, int64_t ts, json_t *v)
{
    (void)ctx;
    (void)d;
    (void)ts;
    json_t *t = json_object_get(v, "temperature_c");
    if (json_is_number(t)) {
        telemetry++;
        last_temp = json_number_value(t);
    }
}

static const lab_drv_host_t host = {on_state, on_tel, NULL};

typedef struct state_wait {
    lab_inst_state_t *which, want;
} state_wait_t;

static bool state_reached(void *arg)
{
    state_wait_t *w = arg;
    return *w->which == w->want;
}

/* Waits for the state the host was last told of (state1 or state2). */
static void wait_state(lab_inst_state_t *which, lab_inst_state_t want)
{
    state_wait_t w = {which, want};
    if (!h_drv_run_until(state_reached, &w, 20000))
        fail_msg("state %s, expected %s", lab_inst_state_name(*which), lab_inst_state_name(want));
}

static lab_driver_t *make(const char *id, const char *port, const char *poll_s, const char *extra_k,
                          const char *extra_v)
{
    /* The model's 8E1 with RTS/CTS on a pty: the tty transport drops the parity there when the
     * kernel refuses it on a reopened pty. */
    lab_drv_kv_t kv[7] = {
        {"driver", "liconic-stx", 2}, {"port", port, 3},
        {"poll_s", poll_s, 4},        {"sim_plate", "P1", 5},
        {"capacity", "1", 6},         {extra_k ? extra_k : "label", extra_v ? extra_v : "", 7}};
    return h_drv_open(id, kv, 6);
}

static lab_drv_err_t call(const char *action, const char *params)
{
    return h_drv_do(drv, action, params);
}

static double num(const char *key)
{
    json_t *v = json_object_get(h_drv_result(), key);
    if (!json_is_number(v))
        fail_msg("result has no number %s", key);
    return json_number_value(v);
}

static void plate_is(const char *plate, const char *want)
{
    char r[512];
    assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"%s\"}", plate), 0);
    char pos[128];
    snprintf(pos, sizeof pos, "\"position\": \"%s\"", want);
    char pos2[128];
    snprintf(pos2, sizeof pos2, "\"position\":\"%s\"", want);
    if (!strstr(r, pos) && !strstr(r, pos2))
        fail_msg("plate %s: %s, expected at %s", plate, r, want);
}

static void plate_at(const char *want)
{
    plate_is("P1", want);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(h_tempdir("drvlic", dir, sizeof dir), 0);
    snprintf(port1, sizeof port1, "%s/inc1", dir);
    snprintf(port2, sizeof port2, "%s/inc2", dir);
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 50\n"
             "[instrument inc1]\ndriver = liconic-stx\nport = %s\nsim_plate = P1\n"
             "sim_step_seconds = 2\nsim_error_code = 7\n"
             "[instrument inc2]\ndriver = liconic-stx\nport = %s\nsim_step_seconds = 10\nsim_plate "
             "= P2\n",
             port1, port2);
    assert_int_equal(h_sim_start(&sim, ini), 0);
    assert_int_equal(h_drv_init(50), 0);
    h_drv_set_host(&host);
    drv = make("inc1", port1, "0", NULL, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_drv_close(drv);
    h_drv_close(drv2);
    int rc = h_drv_fini();
    h_sim_stop(&sim);
    h_rmtree(dir);
    assert_int_equal(rc, 0); /* every handle of the drivers closed */
    return 0;
}

static void test_connect_status(void **state)
{
    (void)state;
    wait_state(&state1, LAB_INST_IDLE);
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_true(num("temperature_c") > 20 && num("temperature_c") < 24);
    assert_true(num("setpoint_c") > 21.9 && num("setpoint_c") < 22.1);
    assert_true(num("humidity_pct") > 39 && num("humidity_pct") < 41);
    assert_true(num("humidity_setpoint_pct") > 39.9 && num("humidity_setpoint_pct") < 40.1);
    assert_true(num("co2_pct") > 0.03 && num("co2_pct") < 0.05);
    assert_true(num("co2_setpoint_pct") > 0.039 && num("co2_setpoint_pct") < 0.041);
    assert_int_equal(num("error_flag"), 0);
    assert_null(json_object_get(h_drv_result(), "handler_error"));
    json_t *info = lab_driver_info(drv);
    assert_string_equal(json_string_value(json_object_get(info, "model")), "Liconic STX");
}

static void test_load_unload(void **state)
{
    (void)state;
    plate_at("transfer:inc1");
    assert_int_equal(call("load", "{\"cassette\":2,\"slot\":5}"), LAB_DRV_OK);
    assert_int_equal(num("cassette"), 2);
    assert_int_equal(num("slot"), 5);
    plate_at("inc1:2/5");
    assert_int_equal(call("unload", "{\"cassette\":2,\"slot\":5}"), LAB_DRV_OK);
    plate_at("transfer:inc1");
    assert_int_equal(lab_driver_state(drv), LAB_INST_IDLE);
}

static void test_climate(void **state)
{
    (void)state;
    assert_int_equal(call("set_temperature", "{\"temperature_c\":37}"), LAB_DRV_OK);
    assert_true(num("setpoint_c") > 36.9 && num("setpoint_c") < 37.1);
    assert_int_equal(call("set_climate", "{\"humidity_pct\":90,\"co2_pct\":5}"), LAB_DRV_OK);
    assert_true(num("humidity_setpoint_pct") > 89.9 && num("humidity_setpoint_pct") < 90.1);
    assert_true(num("co2_setpoint_pct") > 4.99 && num("co2_setpoint_pct") < 5.01);
    assert_null(json_object_get(h_drv_result(), "setpoint_c"));
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_true(num("setpoint_c") > 36.9 && num("setpoint_c") < 37.1);
    assert_true(num("co2_setpoint_pct") > 4.99);
    assert_true(num("temperature_c") >= 22 && num("temperature_c") <= 37);
}

static void expect_problem(const char *action, const char *params, const char *path)
{
    json_t *p = json_loads(params, 0, NULL);
    json_t *problems = NULL;
    lab_drv_error_t err;
    assert_non_null(p);
    assert_int_not_equal(lab_driver_call(drv, action, p, 0, h_drv_on_done, NULL, &err, &problems),
                         0);
    json_decref(p);
    assert_int_equal(err.code, LAB_DRV_EPARAM);
    bool found = false;
    size_t i;
    json_t *pr;
    json_array_foreach(problems, i, pr) if (strcmp(json_string_value(json_object_get(pr, "path")),
                                                   path) == 0) found = true;
    if (!found) {
        char *s = json_dumps(problems, 0);
        fail_msg("%s %s: no problem at %s in %s", action, params, path, s ? s : "null");
    }
    json_decref(problems);
}

static void test_bad_params(void **state)
{
    (void)state;
    expect_problem("load", "{\"slot\":1}", "/params/cassette");
    expect_problem("load", "{\"cassette\":1,\"slot\":0}", "/params/slot");
    expect_problem("unload", "{\"cassette\":100,\"slot\":1}", "/params/cassette");
    expect_problem("load", "{\"cassette\":1,\"slot\":1,\"door\":1}", "/params/door");
    expect_problem("set_temperature", "{\"temperature_c\":150}", "/params/temperature_c");
    expect_problem("set_temperature", "{\"temperature_c\":\"hot\"}", "/params/temperature_c");
    expect_problem("set_climate", "{}", "/params");
    expect_problem("set_climate", "{\"humidity_pct\":101}", "/params/humidity_pct");
    expect_problem("status", "{\"x\":1}", "/params/x");
    /* Beyond the configured cassette: refused by the driver, nothing moved. */
    assert_int_equal(call("load", "{\"cassette\":1,\"slot\":23}"), LAB_DRV_EPARAM);
    assert_non_null(strstr(h_drv_error()->text, "slots_per_cassette"));
    plate_at("transfer:inc1");
    assert_int_equal(call("open_door", NULL), LAB_DRV_EACTION);
    assert_non_null(strstr(h_drv_error()->text, "load"));
    assert_int_equal(lab_driver_state(drv), LAB_INST_IDLE);
}

static void test_handler_error(void **state)
{
    (void)state;
    /* Slot 1/1 is empty: the handler fails and raises the flag with code 1. */
    assert_int_equal(call("unload", "{\"cassette\":1,\"slot\":1}"), LAB_DRV_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "00001");
    assert_string_equal(h_drv_error()->text,
                        "general handling: Handling action could not be performed in time");
    h_drv_spin();
    assert_int_equal(lab_driver_state(drv), LAB_INST_FAULT);
    assert_string_equal(lab_driver_last_error(drv)->device_code, "00001");
    /* Status still reads, and says so. */
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_int_equal(num("error_flag"), 1);
    assert_int_equal(num("handler_error"), 1);
    h_drv_spin();
    assert_int_equal(lab_driver_state(drv), LAB_INST_FAULT);
    assert_int_equal(call("reset", NULL), LAB_DRV_OK);
    assert_int_equal(num("error_flag"), 0);
    wait_state(&state1, LAB_INST_IDLE);
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_int_equal(num("error_flag"), 0);
}

static void test_fault_error(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "inc1", "error", 0), 0);
    assert_int_equal(call("status", NULL), LAB_DRV_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "E5");
    assert_non_null(strstr(h_drv_error()->text, "Unauthorized Access"));
    /* The controller raised the handler's flag with code 7 as well. */
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_int_equal(num("error_flag"), 1);
    wait_state(&state1, LAB_INST_FAULT);
    assert_string_equal(lab_driver_last_error(drv)->device_code, "00007");
    assert_non_null(strstr(lab_driver_last_error(drv)->text, "general handling: Gate could not"));
    assert_int_equal(call("reset", NULL), LAB_DRV_OK);
    wait_state(&state1, LAB_INST_IDLE);
}

static void test_fault_garbage(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "inc1", "garbage", 0), 0);
    assert_int_equal(call("status", NULL), LAB_DRV_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "\\x"));
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_int_equal(call("load", "{\"cassette\":1,\"slot\":2}"), LAB_DRV_OK);
    plate_at("inc1:1/2");
    assert_int_equal(call("unload", "{\"cassette\":1,\"slot\":2}"), LAB_DRV_OK);
    plate_at("transfer:inc1");
}

static void test_fault_timeout(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "inc1", "timeout", 0), 0);
    assert_int_equal(call("status", NULL), LAB_DRV_ETIMEOUT);
    wait_state(&state1, LAB_INST_FAULT);
    assert_int_equal(h_sim_fault(&sim, "inc1", "clear", 0), 0);
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_int_equal(num("error_flag"), 0);
    wait_state(&state1, LAB_INST_IDLE);
}

static void test_fault_disconnect(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "inc1", "disconnect", 0), 0);
    wait_state(&state1, LAB_INST_OFFLINE);
    assert_int_equal(call("status", NULL), LAB_DRV_EOFFLINE);
    assert_int_equal(h_sim_fault(&sim, "inc1", "clear", 0), 0);
    wait_state(&state1, LAB_INST_IDLE); /* the handshake again, by itself */
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_true(num("setpoint_c") > 36.9); /* the same controller, set points kept */
}

/* inc2 takes 10 lab s per step and the driver waits 2: the ready wait ends, the flag is clear,
 * the step timed out. The connection's own activation is waited for as long as it takes. */
static void test_step_timeout(void **state)
{
    (void)state;
    drv2 = make("inc2", port2, "0", "step_timeout_s", "2");
    wait_state(&state2, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(drv2, "load", "{\"cassette\":1,\"slot\":1}"), LAB_DRV_ETIMEOUT);
    assert_non_null(strstr(h_drv_error()->text, "ST 1904"));
    wait_state(&state2, LAB_INST_FAULT); /* until an operation succeeds */
    /* The handler finishes the move later; the next transfer waits for it to be idle. */
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_DRV_OK);
    assert_int_equal(num("error_flag"), 0);
    /* The handler finishes the load it was not waited for. */
    char r[512];
    long long end = h_now_ms() + 10000;
    do
        assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"P2\"}"), 0);
    while (!strstr(r, "inc2:1/1") && h_now_ms() < end && (h_sleep_ms(20), 1));
    plate_is("P2", "inc2:1/1");
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_DRV_OK);
    assert_int_equal(num("error_flag"), 0);
    wait_state(&state2, LAB_INST_IDLE);
    h_drv_close(drv2);
    drv2 = NULL;
}

static void test_polling(void **state)
{
    (void)state;
    h_drv_close(drv);
    drv = NULL;
    state1 = LAB_INST_OFFLINE;
    drv = make("inc1", port1, "0.05", NULL, NULL);
    wait_state(&state1, LAB_INST_IDLE);
    long long end = h_now_ms() + 20000;
    while (telemetry < 3 && h_now_ms() < end)
        h_drv_spin();
    assert_true(telemetry >= 3);
    assert_true(last_temp >= 22 && last_temp <= 37);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_status),   cmocka_unit_test(test_load_unload),
        cmocka_unit_test(test_climate),          cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_handler_error),    cmocka_unit_test(test_fault_error),
        cmocka_unit_test(test_fault_garbage),    cmocka_unit_test(test_fault_timeout),
        cmocka_unit_test(test_fault_disconnect), cmocka_unit_test(test_step_timeout),
        cmocka_unit_test(test_polling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
