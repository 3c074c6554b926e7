/* thermo-cytomat against labloop-sim: connected to idle by the overview register, status read
 * from the simulated climate and registers, a plate taken in from the transfer station and
 * brought out again (checked in the simulator's world), the inventory the sensors allow, set
 * points written and read back, parameters refused before anything is sent, a telegram the
 * device refuses ("er 31"), a handler error (the error register) holding the instrument in fault
 * until reset, a movement that outlasts step_timeout_s, every injected fault (error, garbage,
 * timeout, disconnect) and polling telemetry. Last, a scripted device on a pty plays the
 * telegrams of tests/fixtures/cytomat_plr.h against the driver, byte for byte, and answers one
 * command late: the late reply is never taken for the next command's. */
#include "drivers/driver.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"

#include "protocols/cytomat.h"
#include "tests/fixtures/cytomat_plr.h"

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
    (void)ts;
    json_t *t = json_object_get(v, "temperature_c");
    if (d == drv && json_is_number(t)) {
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

static void wait_state(lab_inst_state_t *which, lab_inst_state_t want)
{
    state_wait_t w = {which, want};
    if (!h_drv_run_until(state_reached, &w, 20000))
        fail_msg("state %s, expected %s", lab_inst_state_name(*which), lab_inst_state_name(want));
}

static lab_driver_t *make(const char *id, const char *port, const char *model, const char *poll_s,
                          const char *extra_k, const char *extra_v)
{
    lab_drv_kv_t kv[7] = {{"driver", "thermo-cytomat", 2},
                          {"port", port, 3},
                          {"poll_s", poll_s, 4},
                          {"model", model, 5},
                          {"rack_type", "cytomat_rack_17mm_28", 6},
                          {"cassettes", "2", 7},
                          {extra_k ? extra_k : "label", extra_v ? extra_v : "", 8}};
    return h_drv_open(id, kv, 7);
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
    char r[512], pos[128], pos2[128];
    assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"%s\"}", plate), 0);
    snprintf(pos, sizeof pos, "\"position\": \"%s\"", want);
    snprintf(pos2, sizeof pos2, "\"position\":\"%s\"", want);
    if (!strstr(r, pos) && !strstr(r, pos2))
        fail_msg("plate %s: %s, expected at %s", plate, r, want);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(h_tempdir("drvcyto", dir, sizeof dir), 0);
    snprintf(port1, sizeof port1, "%s/cy1", dir);
    snprintf(port2, sizeof port2, "%s/cy2", dir);
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 50\n"
             "[instrument cy1]\ndriver = thermo-cytomat\nmodel = C6000\n"
             "rack_type = cytomat_rack_17mm_28\ncassettes = 2\nport = %s\nsim_plate = P1\n"
             "sim_step_seconds = 2\n"
             "[instrument cy2]\ndriver = thermo-cytomat\nmodel = C2C_425\n"
             "rack_types = 1:cytomat_rack_17mm_28, 2:cytomat_rack_17mm_28\nport = %s\n"
             "sim_plate = P2\n"
             "sim_step_seconds = 10\n",
             port1, port2);
    assert_int_equal(h_sim_start(&sim, ini), 0);
    assert_int_equal(h_drv_init(50), 0);
    h_drv_set_host(&host);
    drv = make("cy1", port1, "C6000", "0", NULL, NULL);
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
    assert_int_equal(rc, 0);
    return 0;
}

static void test_connect_status(void **state)
{
    (void)state;
    wait_state(&state1, LAB_INST_IDLE);
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(num("temperature_c") > 21.9 && num("temperature_c") < 22.1);
    assert_true(num("setpoint_c") > 21.9 && num("setpoint_c") < 22.1);
    assert_true(num("co2_pct") >= 0 && num("co2_pct") < 0.1);
    assert_null(json_object_get(h_drv_result(), "humidity_pct")); /* climate = temperature+co2 */
    assert_int_equal(num("busy"), 0);
    assert_int_equal(num("transfer_station_occupied"), 1);
    assert_int_equal(num("handler_occupied"), 0);
    assert_int_equal(num("error_register"), 0);
    assert_int_equal(num("warning_register"), 0);
    json_t *info = lab_driver_info(drv);
    assert_string_equal(json_string_value(json_object_get(info, "model")), "Thermo Cytomat");
}

static void expect_inventory(bool transfer, bool handler)
{
    assert_int_equal(call("inventory", NULL), LAB_OK);
    json_t *r = h_drv_result();
    /* No site of the racks: the device cannot tell which slots hold a plate. */
    assert_true(json_is_array(json_object_get(r, "sites")));
    assert_int_equal(json_array_size(json_object_get(r, "sites")), 0);
    assert_int_equal(
        json_is_true(json_object_get(json_object_get(r, "transfer_station"), "occupied")),
        transfer);
    assert_int_equal(json_is_true(json_object_get(json_object_get(r, "handler"), "occupied")),
                     handler);
}

static void test_load_unload(void **state)
{
    (void)state;
    plate_is("P1", "transfer:cy1");
    expect_inventory(true, false);
    /* cassette 2 slot 2 is slot 030 through both cassettes (PyLabRobot cytomat.py:188-191) */
    assert_int_equal(call("load", "{\"cassette\":2,\"slot\":2}"), LAB_OK);
    assert_int_equal(num("cassette"), 2);
    assert_int_equal(num("slot"), 2);
    plate_is("P1", "cy1:2/2");
    expect_inventory(false, false);
    assert_int_equal(call("unload", "{\"cassette\":2,\"slot\":2}"), LAB_OK);
    plate_is("P1", "transfer:cy1");
    assert_int_equal(call("load", "{\"cassette\":1,\"slot\":28}"), LAB_OK);
    plate_is("P1", "cy1:1/28");
    assert_int_equal(call("unload", "{\"cassette\":1,\"slot\":28}"), LAB_OK);
    plate_is("P1", "transfer:cy1");
    assert_int_equal(call("initialize", NULL), LAB_OK);
    assert_int_equal(lab_driver_state(drv), LAB_INST_IDLE);
}

static void test_climate(void **state)
{
    (void)state;
    assert_int_equal(call("set_temperature", "{\"temperature_c\":37}"), LAB_OK);
    assert_true(num("setpoint_c") > 36.9 && num("setpoint_c") < 37.1);
    assert_int_equal(call("set_climate", "{\"co2_pct\":5}"), LAB_OK);
    assert_true(num("co2_setpoint_pct") > 4.9 && num("co2_setpoint_pct") < 5.1);
    assert_null(json_object_get(h_drv_result(), "setpoint_c"));
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(num("setpoint_c") > 36.9 && num("setpoint_c") < 37.1);
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
    expect_problem("unload", "{\"cassette\":21,\"slot\":1}", "/params/cassette");
    expect_problem("load", "{\"cassette\":3,\"slot\":1}", "/params/cassette");
    expect_problem("load", "{\"cassette\":1,\"slot\":29}", "/params/slot");
    expect_problem("set_temperature", "{\"temperature_c\":100}", "/params/temperature_c");
    expect_problem("set_temperature", "{\"temperature_c\":\"warm\"}", "/params/temperature_c");
    expect_problem("set_climate", "{}", "/params");
    expect_problem("set_climate", "{\"humidity_pct\":90}", "/params/humidity_pct");
    expect_problem("inventory", "{\"x\":1}", "/params/x");
    assert_int_equal(call("load", "{\"cassette\":1,\"slot\":29}"), LAB_EINVAL);
    assert_non_null(strstr(h_drv_error()->text, "29 is beyond the 28 slots of cassette 1 "
                                                "(cytomat_rack_17mm_28)"));
    assert_true(h_drv_error()->not_started);
    assert_int_equal(call("shake", NULL), LAB_ENOACTION);
    plate_is("P1", "transfer:cy1");
    assert_int_equal(lab_driver_state(drv), LAB_INST_IDLE);
}

/* The device refuses a telegram at once: the operation fails with its code, and nothing is held
 * (the error register stays clear). */
static void test_refused(void **state)
{
    (void)state;
    assert_int_equal(call("load", "{\"cassette\":1,\"slot\":1}"), LAB_OK);
    assert_int_equal(call("load", "{\"cassette\":1,\"slot\":2}"), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "er31");
    assert_non_null(strstr(h_drv_error()->text, "'mv:ts 002' refused: er 31: Transfer station "
                                                "empty"));
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(num("error_register"), 0);
    wait_state(&state1, LAB_INST_IDLE);
    assert_int_equal(call("unload", "{\"cassette\":1,\"slot\":1}"), LAB_OK);
    plate_is("P1", "transfer:cy1");
}

/* A movement that fails on the way sets the error register: fault until reset. */
static void test_handler_error(void **state)
{
    (void)state;
    /* mv:st from an empty slot: the shovel comes back without a plate (error register 02) */
    plate_is("P1", "transfer:cy1");
    assert_int_equal(call("load", "{\"cassette\":1,\"slot\":5}"), LAB_OK);
    assert_int_equal(call("unload", "{\"cassette\":1,\"slot\":6}"), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "be02");
    assert_string_equal(h_drv_error()->text, "error register 02: MTP not loaded on handler shovel");
    h_drv_spin();
    assert_int_equal(lab_driver_state(drv), LAB_INST_FAULT);
    assert_string_equal(lab_driver_last_error(drv)->device_code, "be02");
    /* Status still reads, and says so; the fault holds. */
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(num("error_register"), 2);
    h_drv_spin();
    assert_int_equal(lab_driver_state(drv), LAB_INST_FAULT);
    /* A movement is refused by the driver while the register holds the code. */
    assert_int_equal(call("unload", "{\"cassette\":1,\"slot\":5}"), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "be02");
    plate_is("P1", "cy1:1/5");
    assert_int_equal(call("reset", NULL), LAB_OK);
    assert_int_equal(num("error_register"), 0);
    wait_state(&state1, LAB_INST_IDLE);
    assert_int_equal(call("unload", "{\"cassette\":1,\"slot\":5}"), LAB_OK);
    plate_is("P1", "transfer:cy1");
}

static void test_fault_error(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "cy1", "error", 0), 0);
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(num("error_register"), 0x0D);
    wait_state(&state1, LAB_INST_FAULT);
    assert_string_equal(lab_driver_last_error(drv)->device_code, "be0D");
    assert_non_null(strstr(lab_driver_last_error(drv)->text, "heating controllers"));
    assert_int_equal(call("reset", NULL), LAB_OK);
    wait_state(&state1, LAB_INST_IDLE);
}

static void test_fault_garbage(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "cy1", "garbage", 0), 0);
    assert_int_equal(call("status", NULL), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "\\x"));
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(call("load", "{\"cassette\":2,\"slot\":1}"), LAB_OK);
    plate_is("P1", "cy1:2/1");
    assert_int_equal(call("unload", "{\"cassette\":2,\"slot\":1}"), LAB_OK);
    plate_is("P1", "transfer:cy1");
}

static void test_fault_timeout(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "cy1", "timeout", 0), 0);
    assert_int_equal(call("status", NULL), LAB_ETIMEDOUT);
    wait_state(&state1, LAB_INST_FAULT);
    assert_int_equal(h_sim_fault(&sim, "cy1", "clear", 0), 0);
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(num("error_register"), 0);
    wait_state(&state1, LAB_INST_IDLE);
}

static void test_fault_disconnect(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "cy1", "disconnect", 0), 0);
    wait_state(&state1, LAB_INST_OFFLINE);
    assert_int_equal(call("status", NULL), LAB_EOFFLINE);
    assert_int_equal(h_sim_fault(&sim, "cy1", "clear", 0), 0);
    wait_state(&state1, LAB_INST_IDLE);
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(num("setpoint_c") > 36.9); /* the same device, set points kept */
}

/* cy2 (a C2C 425: CR, "CC SS" slots) takes 10 lab s per movement and the driver waits 2: the
 * load times out still busy; the device finishes it later, and the next operation waits for it. */
static void test_step_timeout(void **state)
{
    (void)state;
    drv2 = make("cy2", port2, "C2C_425", "0", "step_timeout_s", "2");
    wait_state(&state2, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(drv2, "load", "{\"cassette\":2,\"slot\":5}"), LAB_ETIMEDOUT);
    assert_non_null(strstr(h_drv_error()->text, "still busy"));
    wait_state(&state2, LAB_INST_FAULT);
    char r[512];
    long long end = h_now_ms() + 10000;
    do
        assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"P2\"}"), 0);
    while (!strstr(r, "cy2:2/5") && h_now_ms() < end && (h_sleep_ms(20), 1));
    plate_is("P2", "cy2:2/5");
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
    assert_int_equal(num("busy"), 0);
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
    drv = make("cy1", port1, "C6000", "0.05", NULL, NULL);
    wait_state(&state1, LAB_INST_IDLE);
    long long end = h_now_ms() + 20000;
    while (telemetry < 3 && h_now_ms() < end)
        h_drv_spin();
    assert_true(telemetry >= 3);
    assert_true(last_temp >= 22 && last_temp <= 37);
}

/* ---- configuration ---- */

static char conf_reason[1200];
static int check_problems;

static void conf_err(void *ctx, int line, const char *key, const char *reason)
{
    (void)ctx;
    (void)line;
    snprintf(conf_reason, sizeof conf_reason, "%s: %s", key, reason);
}

/* Opens cyx with the keys given (besides driver, port and model); NULL when refused. */
static lab_driver_t *open_conf(const lab_drv_kv_t *keys, size_t n, char *err, size_t errlen)
{
    lab_drv_kv_t kv[8] = {
        {"driver", "thermo-cytomat", 2}, {"port", "/dev/null", 3}, {"model", "C6002", 4}};
    for (size_t i = 0; i < n; i++)
        kv[3 + i] = keys[i];
    lab_drv_conf_t c = {.id = "cyx", .line = 1, .kv = kv, .n = 3 + n, .time_scale = 1};
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
    lab_driver_t *d = open_conf(keys, n, err, sizeof err);
    if (d) {
        h_drv_close(d);
        fail_msg("opened; expected refused with '%s'", why);
    }
    if (!strstr(err, why))
        fail_msg("refused with '%s'; expected '%s'", err, why);
    assert_int_equal(check_problems, 1); /* --check refuses it alike */
    if (!strstr(conf_reason, why))
        fail_msg("--check said '%s'; expected '%s'", conf_reason, why);
}

/* The racks: rack_type (with cassettes) or rack_types, never both; the sites the scheduler gets
 * are the racks' slots, capacity must fit in them, and a slot number has three digits. */
static void test_cassettes_config(void **state)
{
    (void)state;
    char err[512];
    lab_drv_kv_t mixed[] = {{"rack_types", "2:cytomat_rack_50mm_10, 1:cytomat_rack_17mm_28", 5},
                            {"capacity", "38", 6}};
    lab_driver_t *d = open_conf(mixed, 2, err, sizeof err);
    assert_non_null(d);
    assert_int_equal(check_problems, 0);
    assert_int_equal(lab_driver_sites(d), 38);
    int c, sl;
    assert_true(lab_driver_site_at(d, 28, &c, &sl));
    assert_int_equal(c * 100 + sl, 201);
    assert_int_equal(lab_driver_site_index(d, 2, 10), 37);
    assert_int_equal(lab_driver_site_index(d, 2, 11), -1);
    h_drv_close(d);
    lab_drv_kv_t over[] = {{"rack_types", "1:cytomat_rack_17mm_28, 2:cytomat_rack_50mm_10", 5},
                           {"capacity", "39", 6}};
    expect_refused(over, 2, "39 is more than the 38 slots of its 2 cassettes");
    expect_refused(NULL, 0, "none given");
    lab_drv_kv_t both[] = {{"rack_type", "cytomat_rack_17mm_28", 5},
                           {"rack_types", "1:cytomat_rack_17mm_28", 6}};
    expect_refused(both, 2, "rack_type and rack_types are both given");
    lab_drv_kv_t gap[] = {{"rack_types", "1:cytomat_rack_17mm_28, 3:cytomat_rack_9mm_51", 5}};
    expect_refused(gap, 1, "cassette 2 is missing");
    lab_drv_kv_t many[] = {{"rack_type", "cytomat_rack_9mm_51", 5}, {"cassettes", "20", 6}};
    expect_refused(many, 2, "1020 slots in 20 cassettes: more than the 999");
    lab_drv_kv_t liconic[] = {{"rack_type", "liconic_rack_17mm_22", 5}};
    expect_refused(liconic, 1, "rack_type");
    lab_drv_kv_t nomodel[] = {{"rack_type", "cytomat_rack_17mm_28", 5}};
    lab_drv_kv_t kv[4] = {{"driver", "thermo-cytomat", 2}, {"port", "/dev/null", 3}, nomodel[0]};
    lab_drv_conf_t conf = {.id = "cyx", .line = 1, .kv = kv, .n = 3, .time_scale = 1};
    assert_int_equal(lab_driver_check(&conf, conf_err, NULL), 1);
    assert_non_null(strstr(conf_reason, "model"));
}

/* ---- the cited telegrams, played by a scripted device ---- */

static struct {
    int master, slave;
    char line[128];
    size_t len;
    char got[32][48]; /* every telegram received, terminator included */
    int n;
    bool busy_once;   /* answer the next ch:bs busy */
    const char *late; /* hold the reply to this telegram and send it before the next one's */
    char held[64];
} dev = {.master = -1, .slave = -1};

static void dev_send(const char *s)
{
    assert_int_equal(write(dev.master, s, strlen(s)), (ssize_t)strlen(s));
}

/* Answers a telegram with the reply forms of the fixture: "bs XX", "ok XX", "it +37.0 +36.9". */
static void dev_answer(const char *line)
{
    char reply[64];
    if (strcmp(line, "ch:bs") == 0) {
        snprintf(reply, sizeof reply, "bs %s\r", dev.busy_once ? "81" : "82");
        dev.busy_once = false;
    } else if (strcmp(line, "ch:be") == 0 || strcmp(line, "ch:bw") == 0) {
        snprintf(reply, sizeof reply, "%.2s 00\r", line + 3);
    } else if (strcmp(line, "ch:it") == 0) {
        snprintf(reply, sizeof reply, "it +37.0 +36.9\r");
    } else if (strcmp(line, "ch:ic") == 0) {
        snprintf(reply, sizeof reply, "ic +05.0 +04.8\r");
    } else if (strncmp(line, "mv:", 3) == 0 || strncmp(line, "ll:", 3) == 0 ||
               strncmp(line, "rs:", 3) == 0) {
        dev.busy_once = strncmp(line, "mv:", 3) == 0;
        snprintf(reply, sizeof reply, "ok %s\r", dev.busy_once ? "01" : "82");
    } else {
        snprintf(reply, sizeof reply, "er 02\r");
    }
    if (dev.late && strcmp(line, dev.late) == 0) {
        dev.late = NULL;
        snprintf(dev.held, sizeof dev.held, "%s", reply);
        return;
    }
    dev_send(reply);
}

static void dev_poll(void)
{
    char buf[128];
    ssize_t n;
    while (dev.master >= 0 && (n = read(dev.master, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n' && dev.len == 0 && dev.n > 0) {
                /* the LF of a CR LF that came in a read of its own */
                strncat(dev.got[dev.n - 1], "\n",
                        sizeof dev.got[0] - strlen(dev.got[dev.n - 1]) - 1);
                continue;
            }
            if (dev.len < sizeof dev.line - 1)
                dev.line[dev.len++] = buf[i];
            if (buf[i] != '\r' && buf[i] != '\n')
                continue;
            /* a telegram ends at its last terminator: CR, or CR LF */
            if (buf[i] == '\r' && i + 1 < n && buf[i + 1] == '\n')
                continue;
            dev.line[dev.len] = 0;
            if (dev.n < 32)
                snprintf(dev.got[dev.n++], sizeof dev.got[0], "%.46s", dev.line);
            dev.line[strcspn(dev.line, "\r\n")] = 0;
            if (dev.held[0]) {
                dev_send(dev.held); /* the late reply, before this telegram's own */
                dev.held[0] = 0;
            }
            dev_answer(dev.line);
            dev.len = 0;
        }
}

static bool got_has(const char *wire)
{
    for (int i = 0; i < dev.n; i++)
        if (strcmp(dev.got[i], wire) == 0)
            return true;
    return false;
}

static const char *golden(const char *source_prefix, const char *type, const char *code)
{
    for (size_t i = 0; i < sizeof cytomat_golden_cmds / sizeof cytomat_golden_cmds[0]; i++)
        if (strncmp(cytomat_golden_cmds[i].source, source_prefix, strlen(source_prefix)) == 0 &&
            strcmp(cytomat_golden_cmds[i].type, type) == 0 &&
            strcmp(cytomat_golden_cmds[i].code, code) == 0)
            return cytomat_golden_cmds[i].wire;
    fail_msg("no golden %s:%s from %s", type, code, source_prefix);
    return NULL;
}

static void test_cited_exchange(void **state)
{
    (void)state;
    assert_int_equal(openpty(&dev.master, &dev.slave, NULL, NULL, NULL), 0);
    struct termios t;
    tcgetattr(dev.slave, &t);
    cfmakeraw(&t);
    tcsetattr(dev.slave, TCSANOW, &t);
    fcntl(dev.master, F_SETFL, fcntl(dev.master, F_GETFL) | O_NONBLOCK);
    h_drv_set_pump(dev_poll);
    state2 = LAB_INST_OFFLINE;
    drv2 = make("scripted", ttyname(dev.slave), "C6000", "0", NULL, NULL);
    wait_state(&state2, LAB_INST_IDLE);
    /* the connection: the overview and error registers, as PyLabRobot writes them */
    assert_true(dev.n >= 2);
    assert_string_equal(dev.got[0], golden("PLR cytomat.py:109", "ch", "bs"));
    assert_string_equal(dev.got[1], golden("PLR cytomat.py:220", "ch", "be"));
    dev.n = 0;
    assert_int_equal(h_drv_do(drv2, "load", "{\"cassette\":2,\"slot\":2}"), LAB_OK);
    /* wait idle, the movement, busy once, then done */
    assert_int_equal(dev.n, 4);
    assert_string_equal(dev.got[1], golden("PLR cytomat.py:286", "mv", "ts"));
    assert_string_equal(dev.got[2], "ch:bs\r\n");
    assert_string_equal(dev.got[3], "ch:bs\r\n");
    dev.n = 0;
    assert_int_equal(h_drv_do(drv2, "unload", "{\"cassette\":2,\"slot\":2}"), LAB_OK);
    assert_true(got_has(golden("PLR cytomat.py:292", "mv", "st")));
    dev.n = 0;
    assert_int_equal(h_drv_do(drv2, "reset", NULL), LAB_OK);
    assert_true(got_has(golden("PLR cytomat.py:229", "rs", "be")));
    assert_true(got_has(golden("PLR cytomat.py:232", "ll", "in")));
    dev.n = 0;
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
    assert_true(got_has(golden("PLR cytomat.py:388", "ch", "it")));
    assert_true(got_has(golden("PLR cytomat.py:395", "ch", "ic")));
    assert_true(got_has(golden("PLR cytomat.py:211", "ch", "bw")));
    assert_true(num("setpoint_c") > 36.99 && num("setpoint_c") < 37.01);
    assert_true(num("temperature_c") > 36.89 && num("temperature_c") < 36.91);
    assert_true(num("co2_pct") > 4.79 && num("co2_pct") < 4.81);
    /* Refused parameters cost nothing on the wire. */
    dev.n = 0;
    assert_int_equal(h_drv_do(drv2, "load", "{\"cassette\":1,\"slot\":29}"), LAB_EINVAL);
    assert_int_equal(h_drv_do(drv2, "set_temperature", "{\"temperature_c\":120}"), LAB_EINVAL);
    h_drv_spin();
    assert_int_equal(dev.n, 0);
    /* open-cytomat's set point form, with this model's CR LF */
    dev.n = 0;
    assert_int_equal(h_drv_do(drv2, "set_climate", "{\"temperature_c\":37,\"co2_pct\":5}"), LAB_OK);
    assert_true(got_has("ll:it 37.0\r\n"));
    assert_true(got_has("ll:ic 05.0\r\n"));
    /* A late reply: the answer to ch:it comes only with the next telegram (after the driver gave
     * up on it). The status times out; the late "it" is never taken for what the next telegram
     * asked, and every later reply goes with its own command. */
    dev.late = "ch:it";
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_ETIMEDOUT);
    /* The line is drained and the connection read again: the late "it" comes as the answer to
     * ch:bs, and is refused for what it is (the key is not the command's). */
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_EPROTO);
    if (!strstr(h_drv_error()->text, "'it +37.0 +36.9'") || !strstr(h_drv_error()->text, "'ch:bs"))
        fail_msg("%s", h_drv_error()->text);
    wait_state(&state2, LAB_INST_IDLE); /* connected again, by itself */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
        assert_true(num("setpoint_c") > 36.99 && num("setpoint_c") < 37.01);
        assert_int_equal(num("error_register"), 0);
    }
    h_drv_close(drv2);
    drv2 = NULL;
    h_drv_set_pump(NULL);
    close(dev.master);
    close(dev.slave);
    dev.master = dev.slave = -1;
}

/* The C2C 425's form: CR alone, and "CC SS" counted from 0 (PyLabRobot cytomat.py:108,178). */
static void test_cited_c2c425(void **state)
{
    (void)state;
    memset(&dev, 0, sizeof dev);
    assert_int_equal(openpty(&dev.master, &dev.slave, NULL, NULL, NULL), 0);
    struct termios t;
    tcgetattr(dev.slave, &t);
    cfmakeraw(&t);
    tcsetattr(dev.slave, TCSANOW, &t);
    fcntl(dev.master, F_SETFL, fcntl(dev.master, F_GETFL) | O_NONBLOCK);
    h_drv_set_pump(dev_poll);
    state2 = LAB_INST_OFFLINE;
    drv2 = make("scripted", ttyname(dev.slave), "C2C_425", "0", NULL, NULL);
    wait_state(&state2, LAB_INST_IDLE);
    assert_string_equal(dev.got[0], golden("PLR cytomat.py:108", "ch", "bs"));
    dev.n = 0;
    assert_int_equal(h_drv_do(drv2, "load", "{\"cassette\":2,\"slot\":5}"), LAB_OK);
    assert_string_equal(dev.got[1], golden("PLR cytomat.py:178", "mv", "ts"));
    h_drv_close(drv2);
    drv2 = NULL;
    h_drv_set_pump(NULL);
    close(dev.master);
    close(dev.slave);
    dev.master = dev.slave = -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_status), cmocka_unit_test(test_load_unload),
        cmocka_unit_test(test_climate),        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_refused),        cmocka_unit_test(test_handler_error),
        cmocka_unit_test(test_fault_error),    cmocka_unit_test(test_fault_garbage),
        cmocka_unit_test(test_fault_timeout),  cmocka_unit_test(test_fault_disconnect),
        cmocka_unit_test(test_step_timeout),   cmocka_unit_test(test_cited_exchange),
        cmocka_unit_test(test_cited_c2c425),   cmocka_unit_test(test_cassettes_config),
        cmocka_unit_test(test_polling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
