/* modbus-temperature against labloop-sim's Modbus TCP controllers (an Omega CN7500 and a
 * Eurotherm 3200): idle once the unit answers, status, set point, run and stop seen through the
 * simulated process value (it follows the set point only while running), the register range
 * check, polling into telemetry, bad params, an unknown action, and every injected fault: a
 * Modbus exception, silence, garbage and a dropped connection, each followed by recovery. */
#include "drivers/driver.h"
#include "tests/harness/harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static h_sim_t sim;
static int port_cn, port_et;
static uv_loop_t loop;

/* ---- the daemon's side, played by the test ---- */

typedef struct call {
    bool done;
    lab_drv_error_t err;
    json_t *result;
} call_t;

static lab_inst_state_t seen[64];
static int nseen;
static json_t *telemetry;

static void on_state(void *ctx, lab_driver_t *d, lab_inst_state_t s, const lab_drv_error_t *e)
{
    (void)ctx;
    (void)d;
    (void)e;
    if (nseen < 64)
        seen[nseen++] = s;
}

static void on_telemetry(void *ctx, lab_driver_t *d, int64_t ts, json_t *values)
{
    (void)ctx;
    (void)d;
    (void)ts;
    json_decref(telemetry);
    telemetry = json_deep_copy(values);
}

static const lab_drv_host_t host = {on_state, on_telemetry, NULL};

static void on_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    (void)d;
    call_t *c = arg;
    c->done = true;
    c->err = *err;
    c->result = json_deep_copy(result);
}

/* Runs the loop until *flag or the deadline; false on the deadline. */
static bool run_until(bool (*cond)(void *), void *arg, int ms)
{
    for (long long end = h_now_ms() + ms; h_now_ms() < end;) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (cond(arg))
            return true;
        h_sleep_ms(2);
    }
    return cond(arg);
}

static bool call_done(void *arg)
{
    return ((call_t *)arg)->done;
}

static bool state_is(void *arg)
{
    void **a = arg;
    return lab_driver_state(a[0]) == (lab_inst_state_t)(intptr_t)a[1];
}

static void wait_state(lab_driver_t *d, lab_inst_state_t s)
{
    void *a[2] = {d, (void *)(intptr_t)s};
    if (!run_until(state_is, a, 15000))
        fail_msg("state %s, expected %s (last error: %s)", lab_inst_state_name(lab_driver_state(d)),
                 lab_inst_state_name(s), lab_driver_last_error(d)->text);
}

/* One action to its end; the result (owned by the caller) or NULL with *err filled. */
static json_t *call(lab_driver_t *d, const char *action, const char *params, lab_drv_error_t *err)
{
    call_t c = {0};
    json_t *p = params ? json_loads(params, 0, NULL) : NULL;
    lab_drv_error_t e = {0};
    int rc = lab_driver_call(d, action, p, 0, on_done, &c, &e, NULL);
    json_decref(p);
    if (rc != 0) {
        if (err)
            *err = e;
        return NULL;
    }
    assert_true(run_until(call_done, &c, 15000));
    if (err)
        *err = c.err;
    if (c.err.code != LAB_DRV_OK) {
        json_decref(c.result);
        return NULL;
    }
    return c.result;
}

static json_t *call_ok(lab_driver_t *d, const char *action, const char *params)
{
    lab_drv_error_t e;
    json_t *r = call(d, action, params, &e);
    if (!r)
        fail_msg("%s %s: %s [%s] %s", action, params ? params : "", lab_drv_err_name(e.code),
                 e.device_code, e.text);
    return r;
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_number(v))
        fail_msg("no number %s", k);
    return json_number_value(v);
}

typedef struct problems {
    int n;
    char keys[8][32];
} problems_t;

static void on_conf_err(void *ctx, int line, const char *key, const char *reason)
{
    (void)line;
    (void)reason;
    problems_t *p = ctx;
    if (p->n < 8)
        snprintf(p->keys[p->n++], 32, "%s", key ? key : "");
}

static lab_driver_t *open_drv(const char *id, const lab_drv_kv_t *kv, size_t n)
{
    lab_drv_conf_t conf = {.id = id, .line = 1, .kv = kv, .n = n, .time_scale = 20};
    problems_t pr = {0};
    if (lab_driver_check(&conf, on_conf_err, &pr))
        fail_msg("config: %s", pr.keys[0]);
    lab_driver_t *d = NULL;
    char err[256];
    if (lab_driver_new(&loop, &conf, &host, &d, err, sizeof err))
        fail_msg("%s", err);
    nseen = 0;
    lab_driver_start(d);
    return d;
}

static bool flag(void *arg)
{
    return *(bool *)arg;
}

static void set_flag(void *arg)
{
    *(bool *)arg = true;
}

static void close_drv(lab_driver_t *d)
{
    bool closed = false;
    lab_driver_close(d, set_flag, &closed);
    assert_true(run_until(flag, &closed, 10000));
}

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
    return uv_loop_init(&loop);
}

static int teardown(void **state)
{
    (void)state;
    h_sim_stop(&sim);
    /* A failed test may leave a driver open: never wait for it forever. */
    for (long long end = h_now_ms() + 2000; uv_loop_alive(&loop) && h_now_ms() < end;)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (!uv_loop_alive(&loop))
        uv_loop_close(&loop);
    json_decref(telemetry);
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
    return open_drv("heat1", kv, sizeof kv / sizeof kv[0]);
}

static bool pv_reaches(lab_driver_t *d, double lo, double hi)
{
    for (long long end = h_now_ms() + 15000; h_now_ms() < end; h_sleep_ms(20)) {
        json_t *r = call_ok(d, "status", NULL);
        double t = num(r, "temperature_c");
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
    wait_state(d, LAB_INST_IDLE);
    json_t *info = lab_driver_info(d);
    assert_string_equal(json_string_value(json_object_get(info, "model")), "Omega CN7500");
    assert_string_equal(json_string_value(json_object_get(info, "map")), "omega-cn7500");

    /* at rest: ambient, the set point the simulator starts with, not running */
    json_t *r = call_ok(d, "status", NULL);
    assert_true(num(r, "temperature_c") > 21 && num(r, "temperature_c") < 23);
    assert_true(num(r, "setpoint_c") > 21.9 && num(r, "setpoint_c") < 22.1);
    assert_int_equal((int)num(r, "running"), 0);
    json_decref(r);

    r = call_ok(d, "set_temperature", "{\"temperature_c\": 60.5}");
    assert_true(num(r, "setpoint_c") == 60.5);
    json_decref(r);
    r = call_ok(d, "status", NULL);
    assert_true(num(r, "setpoint_c") > 60.45 && num(r, "setpoint_c") < 60.55);
    assert_true(num(r, "temperature_c") < 30); /* stopped: it does not heat */
    json_decref(r);
    r = call_ok(d, "run", NULL);
    assert_int_equal((int)num(r, "running"), 1);
    json_decref(r);
    assert_true(pv_reaches(d, 55, 60.6));
    r = call_ok(d, "status", NULL);
    assert_int_equal((int)num(r, "running"), 1);
    json_decref(r);
    r = call_ok(d, "stop", NULL);
    assert_int_equal((int)num(r, "running"), 0);
    json_decref(r);
    assert_true(pv_reaches(d, 20, 27)); /* back towards ambient */

    /* the register's range: 1 decimal in a signed word */
    lab_drv_error_t e;
    assert_null(call(d, "set_temperature", "{\"temperature_c\": 4000}", &e));
    assert_int_equal(e.code, LAB_DRV_EPARAM);
    assert_non_null(strstr(e.text, "4000"));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    r = call_ok(d, "status", NULL); /* nothing was written */
    assert_true(num(r, "setpoint_c") > 60.45 && num(r, "setpoint_c") < 60.55);
    json_decref(r);

    /* refused before anything is sent */
    json_t *problems = NULL;
    assert_int_not_equal(
        lab_driver_call(d, "set_temperature", NULL, 0, on_done, NULL, &e, &problems), 0);
    assert_int_equal(e.code, LAB_DRV_EPARAM);
    assert_true(json_array_size(problems) >= 1);
    json_decref(problems);
    problems = NULL;
    json_t *p = json_pack("{s:s,s:i}", "temperature_c", "hot", "ramp", 1);
    assert_int_not_equal(lab_driver_call(d, "set_temperature", p, 0, on_done, NULL, &e, &problems),
                         0);
    json_decref(p);
    assert_int_equal(e.code, LAB_DRV_EPARAM);
    assert_int_equal(json_array_size(problems), 2);
    json_decref(problems);
    p = json_pack("{s:i}", "now", 1);
    assert_int_not_equal(lab_driver_call(d, "run", p, 0, on_done, NULL, &e, NULL), 0);
    json_decref(p);
    assert_int_equal(e.code, LAB_DRV_EPARAM);
    assert_int_not_equal(lab_driver_call(d, "bake", NULL, 0, on_done, NULL, &e, NULL), 0);
    assert_int_equal(e.code, LAB_DRV_EACTION);

    /* a Modbus exception: the device's code and name, then the next request works */
    fault("heat1", "error");
    assert_null(call(d, "status", NULL, &e));
    assert_int_equal(e.code, LAB_DRV_EDEVICE);
    assert_string_equal(e.device_code, "exception 4");
    assert_non_null(strstr(e.text, "SERVER DEVICE FAILURE"));
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    json_decref(call_ok(d, "status", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* silence: a timeout, fault until the unit answers again */
    fault("heat1", "timeout");
    assert_null(call(d, "set_temperature", "{\"temperature_c\": 30}", &e));
    assert_int_equal(e.code, LAB_DRV_ETIMEOUT);
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    fault("heat1", "clear");
    r = call_ok(d, "status", NULL);
    json_decref(r);
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* garbage: not a Modbus answer (or not a complete one), then the next request works */
    fault("heat1", "garbage");
    assert_null(call(d, "status", NULL, &e));
    assert_true(e.code == LAB_DRV_EPROTO || e.code == LAB_DRV_ETIMEOUT);
    json_decref(call_ok(d, "status", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* a dropped connection: offline (refused while so), back to idle by itself once possible */
    fault("heat1", "disconnect");
    nseen = 0;
    assert_null(call(d, "status", NULL, &e));
    assert_true(e.code == LAB_DRV_EOFFLINE);
    wait_state(d, LAB_INST_OFFLINE);
    assert_null(call(d, "status", NULL, &e));
    assert_int_equal(e.code, LAB_DRV_EOFFLINE);
    fault("heat1", "clear");
    wait_state(d, LAB_INST_IDLE);
    r = call_ok(d, "status", NULL);
    assert_true(num(r, "setpoint_c") > 60.45 && num(r, "setpoint_c") < 60.55);
    json_decref(r);
    close_drv(d);
}

static bool got_telemetry(void *arg)
{
    (void)arg;
    return telemetry && json_object_get(telemetry, "temperature_c");
}

static void test_polling(void **state)
{
    (void)state;
    lab_driver_t *d = open_cn("0.05");
    wait_state(d, LAB_INST_IDLE);
    json_decref(telemetry);
    telemetry = NULL;
    assert_true(run_until(got_telemetry, NULL, 10000));
    assert_true(json_is_number(json_object_get(telemetry, "setpoint_c")));
    assert_true(json_is_number(json_object_get(telemetry, "running")));
    close_drv(d);
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
    lab_driver_t *d = open_drv("heat2", kv, sizeof kv / sizeof kv[0]);
    wait_state(d, LAB_INST_IDLE);
    assert_string_equal(json_string_value(json_object_get(lab_driver_info(d), "model")),
                        "Eurotherm 3200");
    /* the simulated 3200 starts regulating at ambient */
    json_t *r = call_ok(d, "status", NULL);
    assert_int_equal((int)num(r, "running"), 1);
    assert_true(num(r, "temperature_c") > 19 && num(r, "temperature_c") < 21);
    json_decref(r);
    r = call_ok(d, "stop", NULL);
    json_decref(r);
    r = call_ok(d, "status", NULL);
    assert_int_equal((int)num(r, "running"), 0);
    json_decref(r);
    json_decref(call_ok(d, "set_temperature", "{\"temperature_c\": 45.5}"));
    json_decref(call_ok(d, "run", NULL));
    assert_true(pv_reaches(d, 42, 45.6));
    r = call_ok(d, "status", NULL);
    assert_true(num(r, "setpoint_c") > 45.45 && num(r, "setpoint_c") < 45.55);
    json_decref(r);
    lab_drv_error_t e;
    assert_null(call(d, "set_temperature", "{\"temperature_c\": 3300}", &e));
    assert_int_equal(e.code, LAB_DRV_EPARAM);
    assert_non_null(strstr(e.text, "3300"));
    fault("heat2", "error");
    assert_null(call(d, "run", NULL, &e));
    assert_int_equal(e.code, LAB_DRV_EDEVICE);
    assert_string_equal(e.device_code, "exception 4");
    json_decref(call_ok(d, "run", NULL));
    close_drv(d);
}

static void test_config(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {{"driver", "modbus-temperature", 2},
                         {"map", "omega-cn7501", 3},
                         {"unit", "300", 4},
                         {"sim_tau", "5", 5}};
    lab_drv_conf_t conf = {.id = "bad", .line = 1, .kv = kv, .n = 4, .time_scale = 1};
    problems_t p = {0};
    assert_int_equal(lab_driver_check(&conf, on_conf_err, &p), 3); /* modbus, map, unit */
    lab_drv_kv_t kv2[] = {{"driver", "modbus-temperature", 2},
                          {"modbus", "udp://127.0.0.1:502", 3},
                          {"map", "eurotherm-3200", 4}};
    lab_drv_conf_t conf2 = {.id = "bad2", .line = 1, .kv = kv2, .n = 3, .time_scale = 1};
    p.n = 0;
    assert_int_equal(lab_driver_check(&conf2, on_conf_err, &p), 0);
    lab_driver_t *d = NULL;
    char err[256] = "";
    assert_int_not_equal(lab_driver_new(&loop, &conf2, &host, &d, err, sizeof err), 0);
    assert_null(d);
    assert_non_null(strstr(err, "udp://127.0.0.1:502"));
    uv_run(&loop, UV_RUN_NOWAIT);
}

static bool loop_dead(void *arg)
{
    (void)arg;
    return !uv_loop_alive(&loop);
}

/* Every driver closed above: nothing of theirs (timers, the buses' queues) is left open. */
static void test_all_released(void **state)
{
    (void)state;
    assert_true(run_until(loop_dead, NULL, 5000));
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
