/* hamilton-star against labloop-sim's STAR: initialised on connection, then tips picked up, a
 * reagent aspirated from its trough and dispensed into wells with 8 channels and with one, tips
 * dropped, and the simulator's world checked for the volumes per well (its log names every
 * dispense: reagent, plate and well). Then bad params, an unknown action, a firmware error with
 * its code and text, garbage, silence, a vanished pty, and a reply that comes back after its
 * operation timed out (on a slow second instrument) while the next command is in flight: it must
 * not be taken for that command's reply. */
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
static char dir[256], port1[300], port2[300];
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
    if (h_tempdir("drvstar", dir, sizeof dir))
        return -1;
    snprintf(port1, sizeof port1, "%s/star1", dir);
    snprintf(port2, sizeof port2, "%s/star2", dir);
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 20\nsim_seed = 4\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s\nsim_plate = P1\n"
             "sim_reagents = substrate,inhibitor,buffer\nsim_step_seconds = 1\n"
             "[instrument star2]\ndriver = hamilton-star\nport = %s\nsim_plate = P2\n"
             "sim_reagents = substrate\nsim_step_seconds = 50\n",
             port1, port2);
    if (h_sim_start(&sim, ini))
        return -1;
    return uv_loop_init(&loop);
}

static int teardown(void **state)
{
    (void)state;
    h_sim_stop(&sim);
    h_rmtree(dir);
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

static lab_driver_t *open_star1(void)
{
    lab_drv_kv_t kv[] = {{"driver", "hamilton-star", 2},
                         {"port", port1, 3},
                         {"reagents", "substrate, inhibitor,buffer", 4},
                         {"move_timeout_s", "4", 5},
                         {"timeout_ms", "300", 6},
                         {"sim_plate", "P1", 7}};
    return open_drv("star1", kv, sizeof kv / sizeof kv[0]);
}

/* The simulator's log line for one dispense. */
static int dispensed(const char *what)
{
    char path[600], line[1024];
    snprintf(path, sizeof path, "%s/sim.log", sim.dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "sim.star ") && strstr(line, what))
            n++;
    fclose(f);
    return n;
}

static void expect_err(lab_driver_t *d, const char *action, const char *params, lab_drv_err_t code)
{
    lab_drv_error_t e;
    json_t *r = call(d, action, params, &e);
    if (r)
        fail_msg("%s %s succeeded", action, params ? params : "");
    if (e.code != code)
        fail_msg("%s %s: %s (%s), expected %s", action, params ? params : "",
                 lab_drv_err_name(e.code), e.text, lab_drv_err_name(code));
}

static void test_pipetting(void **state)
{
    (void)state;
    lab_driver_t *d = open_star1();
    wait_state(d, LAB_INST_IDLE);
    json_t *r = call_ok(d, "status", NULL);
    assert_true(json_is_true(json_object_get(r, "initialized")));
    assert_int_equal(json_array_size(json_object_get(r, "tips")), 8);
    json_decref(r);

    /* 8 channels: substrate from trough column 0 into A1..H1, then channel 3 alone into A2 */
    r = call_ok(d, "pick_up_tips", "{\"channels\": 8}");
    assert_int_equal((int)num(r, "column"), 1);
    assert_int_equal(json_array_size(json_object_get(r, "channels")), 8);
    json_decref(r);
    r = call_ok(d, "aspirate", "{\"volume_ul\": 20, \"reagent\": \"substrate\"}");
    assert_int_equal(json_array_size(json_object_get(r, "channels")), 8);
    json_decref(r);
    json_decref(call_ok(d, "dispense", "{\"well\": \"A1\", \"volume_ul\": 10}"));
    json_decref(call_ok(d, "dispense", "{\"well\": \"a2\", \"volume_ul\": 5, \"channel\": 3}"));
    r = call_ok(d, "status", NULL);
    json_t *held = json_object_get(r, "held_ul");
    assert_true(json_number_value(json_array_get(held, 0)) == 10);
    assert_true(json_number_value(json_array_get(held, 2)) == 5);
    json_decref(r);
    json_decref(call_ok(d, "drop_tips", NULL));
    /* one channel: inhibitor (trough column 1) into C5, tips from the next rack column */
    r = call_ok(d, "pick_up_tips", NULL); /* one channel by default */
    assert_int_equal((int)num(r, "column"), 2);
    json_decref(r);
    json_decref(call_ok(d, "aspirate", "{\"volume_ul\": 7.5, \"reagent\": \"inhibitor\"}"));
    json_decref(call_ok(d, "dispense", "{\"well\": \"C5\", \"volume_ul\": 7.5}"));
    json_decref(call_ok(d, "drop_tips", NULL));
    r = call_ok(d, "status", NULL);
    held = json_object_get(r, "held_ul");
    for (size_t i = 0; i < 8; i++) {
        assert_true(json_number_value(json_array_get(held, i)) == 0);
        assert_false(json_is_true(json_array_get(json_object_get(r, "tips"), i)));
    }
    json_decref(r);

    /* the simulator's world: what went into which well */
    const char *rows = "ABCDEFGH";
    for (int i = 0; i < 8; i++) {
        char what[64];
        snprintf(what, sizeof what, "dispense 10.0 uL substrate into P1 %c1\n", rows[i]);
        assert_int_equal(dispensed(what), 1);
    }
    assert_int_equal(dispensed("dispense 5.0 uL substrate into P1 A2\n"), 1);
    assert_int_equal(dispensed("dispense 7.5 uL inhibitor into P1 C5\n"), 1);
    assert_int_equal(dispensed("dispense"), 10);
    close_drv(d);
}

static void test_refusals(void **state)
{
    (void)state;
    lab_driver_t *d = open_star1();
    wait_state(d, LAB_INST_IDLE);
    const char *bad[][2] = {
        {"aspirate", "{}"},
        {"aspirate", "{\"volume_ul\": 10, \"reagent\": \"substrate\", \"well\": \"A1\"}"},
        {"aspirate", "{\"volume_ul\": 1001, \"reagent\": \"substrate\"}"},
        {"dispense", "{\"well\": \"Z9\", \"volume_ul\": 1}"},
        {"dispense", "{\"well\": \"A1\", \"volume_ul\": 0}"},
        {"dispense", "{\"well\": \"A1\", \"volume_ul\": 1, \"channel\": 17}"},
        {"pick_up_tips", "{\"column\": 0}"},
        {"drop_tips", "{\"now\": true}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *p = json_loads(bad[i][1], 0, NULL), *problems = NULL;
        lab_drv_error_t e;
        if (lab_driver_call(d, bad[i][0], p, 0, on_done, NULL, &e, &problems) == 0)
            fail_msg("%s %s accepted", bad[i][0], bad[i][1]);
        assert_int_equal(e.code, LAB_DRV_EPARAM);
        assert_true(json_array_size(problems) >= 1);
        json_decref(problems);
        json_decref(p);
    }
    lab_drv_error_t e;
    assert_int_not_equal(lab_driver_call(d, "shake", NULL, 0, on_done, NULL, &e, NULL), 0);
    assert_int_equal(e.code, LAB_DRV_EACTION);
    /* refused by the driver, nothing sent: no tips, a well off the plate, an unknown reagent */
    expect_err(d, "aspirate", "{\"volume_ul\": 5, \"reagent\": \"substrate\"}", LAB_DRV_ESTATE);
    expect_err(d, "dispense", "{\"well\": \"M1\", \"volume_ul\": 5, \"channel\": 1}",
               LAB_DRV_EPARAM);
    expect_err(d, "aspirate", "{\"volume_ul\": 5, \"reagent\": \"acid\", \"channel\": 1}",
               LAB_DRV_EPARAM);
    json_decref(call_ok(d, "pick_up_tips", "{\"channels\": 8}"));
    expect_err(d, "pick_up_tips", NULL, LAB_DRV_ESTATE);
    /* 8 channels from row F would run off the plate */
    expect_err(d, "aspirate", "{\"volume_ul\": 5, \"well\": \"F1\"}", LAB_DRV_EPARAM);
    json_decref(call_ok(d, "drop_tips", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    assert_int_equal(dispensed("dispense"), 10); /* nothing more than test_pipetting's */
    close_drv(d);
}

static void test_faults(void **state)
{
    (void)state;
    lab_driver_t *d = open_star1();
    wait_state(d, LAB_INST_IDLE);
    lab_drv_error_t e;

    /* a firmware error: er08/00 with the master table's text; nothing picked up */
    fault("star1", "error");
    assert_null(call(d, "pick_up_tips", NULL, &e));
    assert_int_equal(e.code, LAB_DRV_EDEVICE);
    assert_string_equal(e.device_code, "er08/00");
    assert_non_null(strstr(e.text, "No tips"));
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    json_decref(call_ok(d, "pick_up_tips", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* garbage before the reply: a protocol error, then the next command works */
    fault("star1", "garbage");
    assert_null(call(d, "drop_tips", NULL, &e));
    assert_int_equal(e.code, LAB_DRV_EPROTO);
    assert_non_null(strstr(e.text, "\\x"));
    json_decref(call_ok(d, "drop_tips", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* silence: a timeout; answers again after clear */
    fault("star1", "timeout");
    assert_null(call(d, "pick_up_tips", NULL, &e));
    assert_int_equal(e.code, LAB_DRV_ETIMEOUT);
    assert_int_equal(lab_driver_state(d), LAB_INST_FAULT);
    fault("star1", "clear");
    json_decref(call_ok(d, "pick_up_tips", NULL));
    json_decref(call_ok(d, "drop_tips", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);

    /* the pty goes away: offline, refused; back, initialised again, and working */
    fault("star1", "disconnect");
    wait_state(d, LAB_INST_OFFLINE);
    expect_err(d, "pick_up_tips", NULL, LAB_DRV_EOFFLINE);
    fault("star1", "clear");
    wait_state(d, LAB_INST_IDLE);
    json_decref(call_ok(d, "pick_up_tips", "{\"channels\": 2}"));
    json_decref(call_ok(d, "aspirate", "{\"volume_ul\": 3, \"reagent\": \"buffer\"}"));
    json_decref(call_ok(d, "dispense", "{\"well\": \"D12\", \"volume_ul\": 3}"));
    json_decref(call_ok(d, "drop_tips", NULL));
    assert_int_equal(dispensed("dispense 3.0 uL buffer into P1 D12\n"), 1);
    assert_int_equal(dispensed("dispense 3.0 uL buffer into P1 E12\n"), 1);
    close_drv(d);
}

/* star2 answers 2.5 s after each command (sim_seed 4 makes it send the stale reply first, while
 * the next command waits; the other order passes as well): an operation given less (the framework's
 * floor is 2 s) times out, and its reply arrives while the next command is in flight. That next
 * command is answered with an injected error: taking the stale (successful) reply for it would end
 * it in success. */
static void test_late_reply(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {{"driver", "hamilton-star", 2}, {"port", port2, 3}};
    lab_driver_t *d = open_drv("star2", kv, sizeof kv / sizeof kv[0]);
    wait_state(d, LAB_INST_IDLE);
    call_t c = {0};
    lab_drv_error_t e;
    assert_int_equal(lab_driver_call(d, "pick_up_tips", NULL, 0.5, on_done, &c, &e, NULL), 0);
    assert_true(run_until(call_done, &c, 10000));
    assert_int_equal(c.err.code, LAB_DRV_ETIMEOUT);
    json_decref(c.result);
    fault("star2", "error");
    assert_null(call(d, "drop_tips", NULL, &e));
    assert_int_equal(e.code, LAB_DRV_EDEVICE);
    assert_string_equal(e.device_code, "er08/00");
    json_decref(call_ok(d, "drop_tips", NULL));
    assert_int_equal(lab_driver_state(d), LAB_INST_IDLE);
    close_drv(d);
}

static void test_config(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {
        {"driver", "hamilton-star", 2}, {"channels", "17", 3}, {"plate_wells", "48", 4}};
    lab_drv_conf_t conf = {.id = "bad", .line = 1, .kv = kv, .n = 3, .time_scale = 1};
    problems_t p = {0};
    assert_int_equal(lab_driver_check(&conf, on_conf_err, &p), 3); /* port, channels, wells */
    lab_drv_kv_t kv2[] = {
        {"driver", "hamilton-star", 2}, {"port", port1, 3}, {"reagents", "water,water", 4}};
    lab_drv_conf_t conf2 = {.id = "bad2", .line = 1, .kv = kv2, .n = 3, .time_scale = 1};
    p.n = 0;
    assert_int_equal(lab_driver_check(&conf2, on_conf_err, &p), 0);
    lab_driver_t *d = NULL;
    char err[256] = "";
    assert_int_not_equal(lab_driver_new(&loop, &conf2, &host, &d, err, sizeof err), 0);
    assert_null(d);
    assert_non_null(strstr(err, "water"));
}

static bool loop_dead(void *arg)
{
    (void)arg;
    return !uv_loop_alive(&loop);
}

/* Every driver closed above: nothing of theirs (timers, transports) is left open. */
static void test_all_released(void **state)
{
    (void)state;
    assert_true(run_until(loop_dead, NULL, 5000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipetting), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_faults),    cmocka_unit_test(test_late_reply),
        cmocka_unit_test(test_config),    cmocka_unit_test(test_all_released),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
