/* liconic-stx against labloop-sim: the handshake to idle, status read from the simulated
 * climate, a plate loaded into a slot and back (checked in the simulator's world), set points
 * written and read back, parameters refused before anything is sent, a handler error (unload
 * from an empty slot) holding the instrument in fault until reset, a step that never gets
 * ready, and every injected fault: error (E5, then the flag), garbage, timeout, disconnect. Last,
 * polling delivers telemetry. */
#include "drivers/driver.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"

#include "protocols/liconic.h"

#include <fcntl.h>
#include <pty.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <cmocka.h>

static h_sim_t sim;
static char dir[256], port1[400], port2[400], port3[400];
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

/* inc1 and inc2 have a cassette of 17 mm sites and one of 44 mm sites (1713 steps, 10 slots):
 * each transfer writes the DM23/DM25 of its own cassette, which the simulator checks. */
#define RACKS "1:liconic_rack_17mm_22, 2:liconic_rack_44mm_10"

static lab_driver_t *make_racks(const char *id, const char *port, const char *poll_s,
                                const char *extra_k, const char *extra_v, const char *rack_key,
                                const char *rack)
{
    lab_drv_kv_t kv[7] = {
        {"driver", "liconic-stx", 2}, {"port", port, 3},
        {"poll_s", poll_s, 4},        {"sim_plate", "P1", 5},
        {"capacity", "1", 6},         {extra_k ? extra_k : "label", extra_v ? extra_v : "", 7},
        {rack_key, rack, 8}};
    return h_drv_open(id, kv, 7);
}

static lab_driver_t *make_rack(const char *id, const char *port, const char *poll_s,
                               const char *extra_k, const char *extra_v, const char *rack)
{
    return make_racks(id, port, poll_s, extra_k, extra_v, "rack_type", rack);
}

static lab_driver_t *make(const char *id, const char *port, const char *poll_s, const char *extra_k,
                          const char *extra_v)
{
    /* The model's 8E1 with RTS/CTS on a pty: the tty transport drops the parity there when the
     * kernel refuses it on a reopened pty. */
    return make_racks(id, port, poll_s, extra_k, extra_v, "rack_types", RACKS);
}

static int call(const char *action, const char *params)
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
    snprintf(port3, sizeof port3, "%s/inc3", dir);
    char ini[2048];
    snprintf(
        ini, sizeof ini,
        "[labloop]\ntime_scale = 50\n"
        "[instrument inc1]\ndriver = liconic-stx\nrack_types = " RACKS "\nport = "
        "%s\nsim_plate = P1\n"
        "sim_step_seconds = 2\nsim_error_code = 7\n"
        "[instrument inc2]\ndriver = liconic-stx\nrack_types = " RACKS "\nport = "
        "%s\nsim_step_seconds = 10\nsim_plate "
        "= P2\n"
        "[instrument inc3]\ndriver = liconic-stx\nrack_type = liconic_rack_44mm_10\nport = %s\n"
        "sim_plate = P3\nsim_step_seconds = 2\nsim_wake_e1 = 1\n",
        port1, port2, port3);
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
    assert_int_equal(call("status", NULL), LAB_OK);
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
    assert_int_equal(call("load", "{\"cassette\":2,\"slot\":5}"), LAB_OK);
    assert_int_equal(num("cassette"), 2);
    assert_int_equal(num("slot"), 5);
    plate_at("inc1:2/5");
    assert_int_equal(call("unload", "{\"cassette\":2,\"slot\":5}"), LAB_OK);
    plate_at("transfer:inc1");
    /* the last slot of the 17 mm cassette: DM23 788, DM25 22 */
    assert_int_equal(call("load", "{\"cassette\":1,\"slot\":22}"), LAB_OK);
    plate_at("inc1:1/22");
    assert_int_equal(call("unload", "{\"cassette\":1,\"slot\":22}"), LAB_OK);
    plate_at("transfer:inc1");
    /* no transfer went at another rack's height */
    assert_int_equal(h_sim_log_count(&sim, "inc1: cassette"), 0);
    assert_int_equal(lab_driver_state(drv), LAB_INST_IDLE);
}

static void test_climate(void **state)
{
    (void)state;
    assert_int_equal(call("set_temperature", "{\"temperature_c\":37}"), LAB_OK);
    assert_true(num("setpoint_c") > 36.9 && num("setpoint_c") < 37.1);
    assert_int_equal(call("set_climate", "{\"humidity_pct\":90,\"co2_pct\":5}"), LAB_OK);
    assert_true(num("humidity_setpoint_pct") > 89.9 && num("humidity_setpoint_pct") < 90.1);
    assert_true(num("co2_setpoint_pct") > 4.99 && num("co2_setpoint_pct") < 5.01);
    assert_null(json_object_get(h_drv_result(), "setpoint_c"));
    assert_int_equal(call("status", NULL), LAB_OK);
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
    assert_int_equal(err.code, LAB_EINVAL);
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
    /* Beyond the configured cassette: refused by the driver, nothing moved. Each cassette
     * has its own rack's slots. */
    assert_int_equal(call("load", "{\"cassette\":1,\"slot\":23}"), LAB_EINVAL);
    assert_non_null(strstr(h_drv_error()->text, "23 is beyond the 22 slots of cassette 1 "
                                                "(liconic_rack_17mm_22)"));
    assert_int_equal(call("unload", "{\"cassette\":2,\"slot\":11}"), LAB_EINVAL);
    assert_non_null(strstr(h_drv_error()->text, "11 is beyond the 10 slots of cassette 2 "
                                                "(liconic_rack_44mm_10)"));
    expect_problem("load", "{\"cassette\":3,\"slot\":1}", "/params/cassette");
    assert_int_equal(call("load", "{\"cassette\":3,\"slot\":1}"), LAB_EINVAL);
    assert_non_null(strstr(h_drv_error()->text, "3 is beyond the 2 cassettes configured"));
    plate_at("transfer:inc1");
    assert_int_equal(call("open_door", NULL), LAB_ENOACTION);
    assert_non_null(strstr(h_drv_error()->text, "load"));
    assert_int_equal(lab_driver_state(drv), LAB_INST_IDLE);
}

static void test_handler_error(void **state)
{
    (void)state;
    /* Slot 1/1 is empty: the handler fails and raises the flag with code 1. */
    assert_int_equal(call("unload", "{\"cassette\":1,\"slot\":1}"), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "00001");
    assert_string_equal(h_drv_error()->text,
                        "general handling: Handling action could not be performed in time");
    h_drv_spin();
    assert_int_equal(lab_driver_state(drv), LAB_INST_FAULT);
    assert_string_equal(lab_driver_last_error(drv)->device_code, "00001");
    /* Status still reads, and says so. */
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(num("error_flag"), 1);
    assert_int_equal(num("handler_error"), 1);
    h_drv_spin();
    assert_int_equal(lab_driver_state(drv), LAB_INST_FAULT);
    assert_int_equal(call("reset", NULL), LAB_OK);
    assert_int_equal(num("error_flag"), 0);
    wait_state(&state1, LAB_INST_IDLE);
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(num("error_flag"), 0);
}

static void test_fault_error(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "inc1", "error", 0), 0);
    assert_int_equal(call("status", NULL), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "E5");
    assert_non_null(strstr(h_drv_error()->text, "Unauthorized Access"));
    /* The controller raised the handler's flag with code 7 as well. */
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(num("error_flag"), 1);
    wait_state(&state1, LAB_INST_FAULT);
    assert_string_equal(lab_driver_last_error(drv)->device_code, "00007");
    assert_non_null(strstr(lab_driver_last_error(drv)->text, "general handling: Gate could not"));
    assert_int_equal(call("reset", NULL), LAB_OK);
    wait_state(&state1, LAB_INST_IDLE);
}

static void test_fault_garbage(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "inc1", "garbage", 0), 0);
    assert_int_equal(call("status", NULL), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "\\x"));
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(call("load", "{\"cassette\":1,\"slot\":2}"), LAB_OK);
    plate_at("inc1:1/2");
    assert_int_equal(call("unload", "{\"cassette\":1,\"slot\":2}"), LAB_OK);
    plate_at("transfer:inc1");
}

static void test_fault_timeout(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "inc1", "timeout", 0), 0);
    assert_int_equal(call("status", NULL), LAB_ETIMEDOUT);
    wait_state(&state1, LAB_INST_FAULT);
    assert_int_equal(h_sim_fault(&sim, "inc1", "clear", 0), 0);
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(num("error_flag"), 0);
    wait_state(&state1, LAB_INST_IDLE);
}

static void test_fault_disconnect(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "inc1", "disconnect", 0), 0);
    wait_state(&state1, LAB_INST_OFFLINE);
    assert_int_equal(call("status", NULL), LAB_EOFFLINE);
    assert_int_equal(h_sim_fault(&sim, "inc1", "clear", 0), 0);
    wait_state(&state1, LAB_INST_IDLE); /* the handshake again, by itself */
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(num("setpoint_c") > 36.9); /* the same controller, set points kept */
}

/* inc2 takes 10 lab s per step and the driver waits 2: the ready wait ends, the flag is clear,
 * the step timed out. The connection's own activation is waited for as long as it takes. */
static void test_step_timeout(void **state)
{
    (void)state;
    drv2 = make("inc2", port2, "0", "step_timeout_s", "2");
    wait_state(&state2, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(drv2, "load", "{\"cassette\":1,\"slot\":1}"), LAB_ETIMEDOUT);
    assert_non_null(strstr(h_drv_error()->text, "ST 1904"));
    wait_state(&state2, LAB_INST_FAULT); /* until an operation succeeds */
    /* The handler finishes the move later; the next transfer waits for it to be idle. */
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
    assert_int_equal(num("error_flag"), 0);
    /* The handler finishes the load it was not waited for. */
    char r[512];
    long long end = h_now_ms() + 10000;
    do
        assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"P2\"}"), 0);
    while (!strstr(r, "inc2:1/1") && h_now_ms() < end && (h_sleep_ms(20), 1));
    plate_is("P2", "inc2:1/1");
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
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

/* ---- rack types ---- */

static char conf_reason[1200];

static void conf_err(void *ctx, int line, const char *key, const char *reason)
{
    (void)ctx;
    (void)line;
    snprintf(conf_reason, sizeof conf_reason, "%s: %s", key, reason);
}

/* A rack type outside the table, or none, is refused when the configuration is read, with the
 * list of the known ones: nothing moves on a guessed pitch. */
static void test_rack_config(void **state)
{
    (void)state;
    lab_drv_kv_t kv[3] = {{"driver", "liconic-stx", 2},
                          {"port", "/dev/null", 3},
                          {"rack_type", "liconic_rack_18mm_22", 4}};
    lab_drv_conf_t c = {.id = "incx", .line = 1, .kv = kv, .n = 3, .time_scale = 1};
    assert_int_equal(lab_driver_check(&c, conf_err, NULL), 1);
    assert_non_null(strstr(conf_reason, "rack_type: expected one of liconic_rack_5mm_42|"));
    assert_non_null(strstr(conf_reason, "|liconic_rack_17mm_22|"));
    assert_non_null(strstr(conf_reason, "|liconic_rack_104mm_11"));
    c.n = 2;
    assert_int_equal(lab_driver_check(&c, conf_err, NULL), 1);
    assert_non_null(strstr(conf_reason, "rack_type: no rack type: give rack_type = NAME"));
    /* The old pitch key is gone: a configuration that still has it is told so. */
    kv[2] = (lab_drv_kv_t){"pitch_steps", "23", 4};
    c.n = 3;
    assert_int_equal(lab_driver_check(&c, conf_err, NULL), 1);
}

static int check_problems; /* lab_driver_check's count for open_racks' section */

/* Opens incx with the keys given (besides driver and port); NULL when refused, with why. */
static lab_driver_t *open_racks(const lab_drv_kv_t *keys, size_t n, char *err, size_t errlen)
{
    lab_drv_kv_t kv[8] = {{"driver", "liconic-stx", 2}, {"port", "/dev/null", 3}};
    for (size_t i = 0; i < n; i++)
        kv[2 + i] = keys[i];
    lab_drv_conf_t c = {.id = "incx", .line = 1, .kv = kv, .n = 2 + n, .time_scale = 1};
    conf_reason[0] = 0;
    check_problems = lab_driver_check(&c, conf_err, NULL);
    lab_driver_t *d = NULL;
    err[0] = 0;
    lab_driver_new(h_drv_loop(), &c, h_drv_host(), &d, err, errlen);
    return d;
}

static void expect_refused(const lab_drv_kv_t *keys, size_t n, const char *why)
{
    char err[512];
    lab_driver_t *d = open_racks(keys, n, err, sizeof err);
    if (d) {
        h_drv_close(d);
        fail_msg("opened; expected refused with '%s'", why);
    }
    if (!strstr(err, why))
        fail_msg("refused with '%s'; expected '%s'", err, why);
    /* --check refuses it alike, naming the key */
    assert_int_equal(check_problems, 1);
    if (!strstr(conf_reason, why))
        fail_msg("--check said '%s'; expected '%s'", conf_reason, why);
}

/* The cassettes' racks: rack_type (with cassettes) or rack_types, never both, every cassette
 * from 1 without gaps; the sites the scheduler gets are the racks' slots, and capacity must fit
 * in them. */
static void test_cassettes_config(void **state)
{
    (void)state;
    char err[512];
    lab_drv_kv_t mixed[] = {{"rack_types", " 2:liconic_rack_44mm_10 ,1: liconic_rack_17mm_22", 4},
                            {"capacity", "32", 5}};
    lab_driver_t *d = open_racks(mixed, 2, err, sizeof err);
    assert_non_null(d);
    assert_int_equal(check_problems, 0);
    assert_int_equal(lab_driver_sites(d), 32);
    assert_int_equal(lab_driver_capacity(d), 32);
    int c, sl;
    assert_true(lab_driver_site_at(d, 21, &c, &sl));
    assert_int_equal(c * 100 + sl, 122);
    assert_true(lab_driver_site_at(d, 22, &c, &sl));
    assert_int_equal(c * 100 + sl, 201);
    assert_true(lab_driver_site_at(d, 31, &c, &sl));
    assert_int_equal(c * 100 + sl, 210);
    assert_false(lab_driver_site_at(d, 32, &c, &sl));
    assert_int_equal(lab_driver_site_index(d, 2, 10), 31);
    assert_int_equal(lab_driver_site_index(d, 2, 11), -1);
    assert_int_equal(lab_driver_site_index(d, 3, 1), -1);
    h_drv_close(d);

    lab_drv_kv_t three[] = {{"rack_type", "liconic_rack_17mm_22", 4}, {"cassettes", "3", 5}};
    d = open_racks(three, 2, err, sizeof err);
    assert_non_null(d);
    assert_int_equal(check_problems, 0);
    assert_int_equal(lab_driver_sites(d), 66);
    assert_int_equal(lab_driver_site_index(d, 3, 22), 65);
    h_drv_close(d);

    lab_drv_kv_t over[] = {{"rack_types", "1:liconic_rack_17mm_22, 2:liconic_rack_44mm_10", 4},
                           {"capacity", "33", 5}};
    expect_refused(over, 2, "33 is more than the 32 slots of its 2 cassettes");
    assert_non_null(strstr(conf_reason, "capacity: 33 is more"));
    lab_drv_kv_t one[] = {{"rack_type", "liconic_rack_17mm_22", 4}, {"capacity", "24", 5}};
    expect_refused(one, 2, "24 is more than the 22 slots of its 1 cassette");
    expect_refused(NULL, 0, "no rack type: give rack_type = NAME");
    lab_drv_kv_t both[] = {{"rack_type", "liconic_rack_17mm_22", 4},
                           {"rack_types", "1:liconic_rack_17mm_22", 5}};
    expect_refused(both, 2, "rack_type and rack_types are both given");
    lab_drv_kv_t gap[] = {{"rack_types", "1:liconic_rack_17mm_22, 3:liconic_rack_17mm_22", 4}};
    expect_refused(gap, 1, "rack_types: cassette 2 is missing");
    assert_non_null(strstr(conf_reason, "rack_types: cassette 2 is missing (cassettes are"));
    lab_drv_kv_t twice[] = {{"rack_types", "1:liconic_rack_17mm_22, 1:liconic_rack_44mm_10", 4}};
    expect_refused(twice, 1, "rack_types: cassette 1 is given twice");
    lab_drv_kv_t unknown[] = {{"rack_types", "1:liconic_rack_17mm_22, 2:liconic_rack_18mm_22", 4}};
    expect_refused(unknown, 1,
                   "rack_types: cassette 2: 'liconic_rack_18mm_22' is not a known rack type");
    lab_drv_kv_t count[] = {{"rack_types", "1:liconic_rack_17mm_22", 4}, {"cassettes", "2", 5}};
    expect_refused(count, 2, "cassettes and rack_types are both given");
}

/* inc3 has 10-slot racks of 44 mm sites (liconic_rack_44mm_10: 1713 steps, PyLabRobot
 * racks.py and liconic_backend_tests.py TestCarrierToStepsPos.test_44mm_rack, commit
 * 598b58ffb), and its controller answers the first CR handshake with E1 (sim_wake_e1). The
 * simulator checks DM23/DM25 against its rack at every transfer. */
static void test_rack_transfer(void **state)
{
    (void)state;
    state2 = LAB_INST_OFFLINE;
    drv2 = make_rack("inc3", port3, "0", NULL, NULL, "liconic_rack_44mm_10");
    wait_state(&state2, LAB_INST_IDLE);
    assert_true(h_sim_log_count(&sim, "inc3: DM23") == 0);
    assert_int_equal(h_drv_do(drv2, "load", "{\"cassette\":1,\"slot\":10}"), LAB_OK);
    plate_is("P3", "inc3:1/10");
    assert_int_equal(h_drv_do(drv2, "unload", "{\"cassette\":1,\"slot\":10}"), LAB_OK);
    plate_is("P3", "transfer:inc3");
    assert_int_equal(h_drv_do(drv2, "load", "{\"cassette\":1,\"slot\":11}"), LAB_EINVAL);
    assert_non_null(strstr(h_drv_error()->text, "10 slots of cassette 1 (liconic_rack_44mm_10)"));
    h_drv_close(drv2);
    /* The wrong rack for this incubator (17 mm sites, 788 steps): the handler stops with its
     * error instead of going to the wrong height, and the plate stays. */
    state2 = LAB_INST_OFFLINE;
    drv2 = make_rack("inc3", port3, "0", NULL, NULL, "liconic_rack_17mm_22");
    wait_state(&state2, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(drv2, "load", "{\"cassette\":1,\"slot\":1}"), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "00106");
    plate_is("P3", "transfer:inc3");
    assert_true(h_sim_log_count(&sim, "cassette 1: DM23 = 788, DM25 = 22; its rack "
                                      "liconic_rack_44mm_10 needs 1713 and 10") > 0);
    assert_int_equal(h_drv_do(drv2, "reset", NULL), LAB_OK);
    h_drv_close(drv2);
    drv2 = NULL;
}

/* ---- a controller that answers out of step ---- */

static struct {
    int master, slave;
    char line[128];
    size_t len;
    int cr;       /* CR handshakes seen */
    int bare;     /* bare CRs seen */
    bool cc_owed; /* the first handshake's CC, sent one poll after its E1 */
    int dm_flags; /* relay reads still to be answered with a data memory value */
} plc = {.master = -1, .slave = -1};

static void plc_send(const char *s)
{
    assert_int_equal(write(plc.master, s, strlen(s)), (ssize_t)strlen(s));
}

static void plc_line(void)
{
    liconic_cmd_t c;
    char buf[32];
    if (plc.len == 0) {
        plc.bare++;
        plc_send("E1\r\n"); /* the bare wake-up CR, as an independent emulator answers it */
        return;
    }
    if (liconic_parse_cmd(plc.line, plc.len, &c) != LAB_OK) {
        plc_send("E1\r\n");
        return;
    }
    liconic_reply_t r = {.kind = LICONIC_REPLY_OK};
    if (c.op == LICONIC_OP_OPEN) {
        if (plc.cr++ == 0) {
            /* E1 first, the CC after: each later reply would be one off. */
            plc_send("E1\r\n");
            plc.cc_owed = true;
            return;
        }
        r.kind = LICONIC_REPLY_CC;
    } else if (c.op == LICONIC_OP_READ || c.op == LICONIC_OP_READ_DM) {
        r.kind = LICONIC_REPLY_VALUE;
        r.value = c.op == LICONIC_OP_READ && c.addr == LICONIC_FLAG_READY ? 1 : 0;
        if (c.op == LICONIC_OP_READ && plc.dm_flags > 0) {
            plc.dm_flags--;
            plc_send("00370\r\n"); /* a temperature, as if it answered an earlier RD DM982 */
            return;
        }
    }
    int n = liconic_encode_reply(&r, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(write(plc.master, buf, (size_t)n), n);
}

static void plc_poll(void)
{
    char buf[128];
    ssize_t n;
    if (plc.cc_owed) {
        plc.cc_owed = false;
        plc_send("CC\r\n");
    }
    while (plc.master >= 0 && (n = read(plc.master, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\r') {
                plc_line();
                plc.len = 0;
            } else if (plc.len < sizeof plc.line - 1) {
                plc.line[plc.len++] = buf[i];
            }
        }
}

/* The handshake's first CR answered E1 and then CC: the driver drains the line, shakes hands
 * again, and every later reply goes with its own command. */
static void test_out_of_step(void **state)
{
    (void)state;
    assert_int_equal(openpty(&plc.master, &plc.slave, NULL, NULL, NULL), 0);
    struct termios t;
    tcgetattr(plc.slave, &t);
    cfmakeraw(&t);
    tcsetattr(plc.slave, TCSANOW, &t);
    fcntl(plc.master, F_SETFL, fcntl(plc.master, F_GETFL) | O_NONBLOCK);
    h_drv_set_pump(plc_poll);
    state2 = LAB_INST_OFFLINE;
    drv2 = make("plc", ttyname(plc.slave), "0", NULL, NULL);
    wait_state(&state2, LAB_INST_IDLE);
    assert_int_equal(plc.cr, 2);
    assert_int_equal(plc.bare, 0); /* woken with a BREAK, not a bare CR */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
        assert_int_equal(num("error_flag"), 0);
    }
    assert_int_equal(h_drv_do(drv2, "set_temperature", "{\"temperature_c\":30}"), LAB_OK);
    /* A relay answered with a data memory value: out of step, never a flag that is set. */
    plc.dm_flags = 1;
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "unexpected reply '00370' to 'RD 1814'"));
    int cr = plc.cr;
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
    assert_int_equal(num("error_flag"), 0);
    assert_int_equal(plc.cr, cr + 1); /* shook hands again */
    h_drv_close(drv2);
    drv2 = NULL;
    h_drv_set_pump(NULL);
    close(plc.master);
    close(plc.slave);
    plc.master = plc.slave = -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_status),   cmocka_unit_test(test_load_unload),
        cmocka_unit_test(test_climate),          cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_handler_error),    cmocka_unit_test(test_fault_error),
        cmocka_unit_test(test_fault_garbage),    cmocka_unit_test(test_fault_timeout),
        cmocka_unit_test(test_fault_disconnect), cmocka_unit_test(test_step_timeout),
        cmocka_unit_test(test_rack_config),      cmocka_unit_test(test_cassettes_config),
        cmocka_unit_test(test_rack_transfer),    cmocka_unit_test(test_out_of_step),
        cmocka_unit_test(test_polling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
