/* Every shipped serial and Modbus driver through labloopd's HTTP API against labloop-sim over
 * real ptys, TCP and Modbus TCP sockets: the instruments come up by themselves, each action works
 * and its effect shows in the simulator's world (a plate loaded into its slot, a reagent
 * dispensed by the STAR read back by the reader, volumes per channel landing in their own wells,
 * a heater following its set point), and each
 * fault the simulator can throw (a garbage byte, a device error, a silent device, a vanished
 * link, a Modbus exception) ends in the right error with the device's own code, while the
 * instrument recovers by itself and the others never notice. */
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
static h_daemon_t dmn;
static char sections[4096];

static int setup(void **state)
{
    char dir[256];
    if (h_tempdir("labdrv", dir, sizeof dir))
        return -1;
    int mb = h_free_port(), rd = h_free_port();
    /* The same sections for both: labloopd skips sim_* keys, labloop-sim ignores the rest. */
    snprintf(sections, sizeof sections,
             "[instrument inc1]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\nport = "
             "%s/inc1\nsim_plate = P1\n"
             "sim_step_seconds = 1\npoll_s = 0.5\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s/star1\nsim_plate = P1\n"
             "sim_reagents = substrate,inhibitor\nsim_step_seconds = 1\n"
             "reagents = substrate,inhibitor\n"
             "[instrument reader1]\ndriver = biotek-synergy\nport = tcp://127.0.0.1:%d\n"
             "sim_plate = P1\n"
             "[instrument heat1]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = omega-cn7500\nunit = 1\nsim_tau = 20\npoll_s = 0.2\n",
             dir, dir, rd, mb);
    char ini[5000];
    snprintf(ini, sizeof ini, "[labloop]\ntime_scale = 50\nsim_seed = 7\nsim_noise = 0.001\n%s",
             sections);
    if (h_sim_start(&sim, ini))
        return -1;
    /* The daemon's clock at the simulator's scale (a second [labloop] adds to the harness's). */
    char extra[4200];
    snprintf(extra, sizeof extra, "[labloop]\ntime_scale = 50\n%s", sections);
    return h_daemon_start(&dmn, NULL, NULL, extra);
}

static int teardown(void **state)
{
    h_daemon_destroy(&dmn);
    h_sim_stop(&sim);
    return 0;
}

static json_t *get_json(const char *path)
{
    char *resp = NULL;
    int st = h_http(dmn.url, "GET", path, NULL, NULL, &resp);
    if (st != 200)
        fail_msg("GET %s: %d %s", path, st, resp ? resp : "");
    json_t *doc = json_loads(resp ? resp : "", 0, NULL);
    free(resp);
    assert_non_null(doc);
    return doc;
}

/* POST an action; checks the status and returns the body. */
static json_t *act(const char *id, int want, const char *fmt, ...)
{
    char body[2048], path[128], *resp = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    snprintf(path, sizeof path, "/v1/instruments/%s/actions", id);
    int st = h_http(dmn.url, "POST", path, "Content-Type: application/json", body, &resp);
    if (st != want)
        fail_msg("POST %s %s: %d (wanted %d) %s", path, body, st, want, resp ? resp : "");
    json_t *doc = json_loads(resp ? resp : "", 0, NULL);
    free(resp);
    assert_non_null(doc);
    return doc;
}

/* Whether the document's text holds needle. */
static bool has(json_t *doc, const char *needle)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    bool found = text && strstr(text, needle);
    free(text);
    return found;
}

static json_t *result(json_t *answer)
{
    return json_object_get(answer, "result");
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_number(v))
        fail_msg("no number %s in %s", k, json_dumps(o, JSON_COMPACT));
    return json_number_value(v);
}

static void wait_state(const char *id, const char *state, int ms)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/instruments/%s", id);
    const char *last = "?";
    json_t *doc = NULL;
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(25)) {
        json_decref(doc);
        doc = get_json(path);
        last = json_string_value(json_object_get(doc, "state"));
        if (strcmp(last, state) == 0) {
            json_decref(doc);
            return;
        }
    }
    fail_msg("%s stayed %s, never %s: %s", id, last, state, json_dumps(doc, JSON_COMPACT));
}

static void test_all_come_up(void **state)
{
    wait_state("inc1", "idle", 15000);
    wait_state("star1", "idle", 15000);
    wait_state("reader1", "idle", 15000);
    wait_state("heat1", "idle", 15000);
    json_t *r = get_json("/v1/instruments/reader1");
    json_t *info = json_object_get(r, "info");
    assert_true(json_object_size(info) > 2); /* the version the reader told */
    json_decref(r);
}

static void test_incubator(void **state)
{
    json_decref(
        act("inc1", 200, "{\"action\":\"set_temperature\",\"params\":{\"temperature_c\":37}}"));
    json_t *a = act("inc1", 200, "{\"action\":\"status\"}");
    assert_true(num(result(a), "setpoint_c") == 37.0);
    num(result(a), "temperature_c");
    json_decref(a);
    char reply[512];
    assert_int_equal(h_sim_ctl(&sim, reply, sizeof reply, "{\"plate\":\"P1\"}"), 0);
    assert_non_null(strstr(reply, "transfer:inc1"));
    json_decref(act("inc1", 200, "{\"action\":\"load\",\"params\":{\"cassette\":1,\"slot\":3}}"));
    assert_int_equal(h_sim_ctl(&sim, reply, sizeof reply, "{\"plate\":\"P1\"}"), 0);
    if (!strstr(reply, "inc1:1/3"))
        fail_msg("plate not in cassette 1 slot 3: %s", reply);
    /* A bad slot is refused before anything moves. */
    json_t *bad = act("inc1", 422, "{\"action\":\"load\",\"params\":{\"cassette\":0,\"slot\":3}}");
    assert_true(has(bad, "/params/cassette"));
    json_decref(bad);
    json_decref(act("inc1", 200, "{\"action\":\"unload\",\"params\":{\"cassette\":1,\"slot\":3}}"));
    assert_int_equal(h_sim_ctl(&sim, reply, sizeof reply, "{\"plate\":\"P1\"}"), 0);
    assert_non_null(strstr(reply, "transfer:inc1"));
}

static double well(json_t *read, const char *w)
{
    return num(json_object_get(result(read), "values"), w);
}

static void test_dispense_then_read(void **state)
{
    json_t *before =
        act("reader1", 200, "{\"action\":\"read_absorbance\",\"params\":{\"wavelength_nm\":450}}");
    assert_int_equal(json_object_size(json_object_get(result(before), "values")), 96);
    num(result(before), "temperature_c");
    json_decref(act("star1", 200, "{\"action\":\"initialize\"}"));
    json_decref(act("star1", 200, "{\"action\":\"pick_up_tips\"}"));
    json_decref(act("star1", 200,
                    "{\"action\":\"aspirate\",\"params\":{\"reagent\":\"substrate\","
                    "\"volume_ul\":50}}"));
    json_decref(act("star1", 200,
                    "{\"action\":\"dispense\",\"params\":{\"well\":\"B3\",\"volume_ul\":50}}"));
    json_decref(act("star1", 200, "{\"action\":\"drop_tips\"}"));
    json_t *after = act(
        "reader1", 200,
        "{\"action\":\"read_absorbance\",\"params\":{\"wavelength_nm\":450,\"wells\":\"A1:C4\"}}");
    assert_int_equal(json_object_size(json_object_get(result(after), "values")), 12);
    /* Substrate in B3 raises its absorbance; A1 got nothing. */
    assert_true(well(after, "B3") > well(before, "B3") + 0.3);
    assert_true(well(after, "A1") < well(before, "A1") + 0.05);
    json_decref(before);
    json_decref(after);
    json_t *bad = act("reader1", 422,
                      "{\"action\":\"read_absorbance\",\"params\":{\"wavelength_nm\":450,"
                      "\"wells\":\"A1:Z99\"}}");
    assert_true(has(bad, "/params/wells"));
    json_decref(bad);
    bad = act("star1", 422, "{\"action\":\"dispense\",\"params\":{\"well\":\"B3\"}}");
    json_decref(bad);
}

/* The uL of reagent the simulator's world holds in a well of plate P1 (0 when none). */
static double in_well(const char *w, const char *reagent)
{
    static char reply[65536];
    assert_int_equal(h_sim_ctl(&sim, reply, sizeof reply, "{\"plate\":\"P1\"}"), 0);
    json_t *doc = json_loads(reply, 0, NULL);
    assert_non_null(doc);
    json_t *v = json_object_get(json_object_get(json_object_get(doc, "wells"), w), reagent);
    double ul = json_is_number(v) ? json_number_value(v) : 0;
    json_decref(doc);
    return ul;
}

/* Four tips, inhibitor aspirated 40, 20, 0 and 10 uL and dispensed from D6 down: the simulated
 * plate holds 40 uL in D6, 20 in E6, nothing in F6 (channel 3 sat out) and 10 in G6. A bad entry
 * and a count that does not fit the tips are refused, naming the entry. */
static void test_per_channel_volumes(void **state)
{
    json_decref(act("star1", 200, "{\"action\":\"pick_up_tips\",\"params\":{\"channels\":4}}"));
    json_t *a = act("star1", 200,
                    "{\"action\":\"aspirate\",\"params\":{\"reagent\":\"inhibitor\","
                    "\"volume_ul\":[40,20,0,10]}}");
    json_t *vols = json_object_get(result(a), "volumes_ul");
    assert_int_equal(json_array_size(vols), 8);
    assert_true(json_number_value(json_array_get(vols, 1)) == 20);
    assert_true(json_number_value(json_array_get(vols, 2)) == 0);
    json_decref(a);
    json_t *bad = act("star1", 422,
                      "{\"action\":\"dispense\",\"params\":{\"well\":\"D6\","
                      "\"volume_ul\":[40,-20,0,10]}}");
    assert_true(has(bad, "/params/volume_ul/1"));
    json_decref(bad);
    bad = act("star1", 422,
              "{\"action\":\"dispense\",\"params\":{\"well\":\"D6\",\"volume_ul\":[40,20]}}");
    assert_true(has(bad, "channel 3 has none"));
    json_decref(bad);
    json_decref(act("star1", 200,
                    "{\"action\":\"dispense\",\"params\":{\"well\":\"D6\","
                    "\"volume_ul\":[40,20,0,10]}}"));
    json_decref(act("star1", 200, "{\"action\":\"drop_tips\"}"));
    assert_true(in_well("D6", "inhibitor") == 40);
    assert_true(in_well("E6", "inhibitor") == 20);
    assert_true(in_well("F6", "inhibitor") == 0);
    assert_true(in_well("G6", "inhibitor") == 10);
    assert_true(in_well("H6", "inhibitor") == 0);
    assert_true(in_well("B3", "substrate") == 50); /* test_dispense_then_read's */
}

static void test_heater(void **state)
{
    json_decref(
        act("heat1", 200, "{\"action\":\"set_temperature\",\"params\":{\"temperature_c\":37.5}}"));
    json_decref(act("heat1", 200, "{\"action\":\"run\"}"));
    json_t *a = act("heat1", 200, "{\"action\":\"status\"}");
    assert_true(num(result(a), "setpoint_c") == 37.5);
    double t0 = num(result(a), "temperature_c");
    json_decref(a);
    /* The process value follows the set point (sim_tau 20 lab s at 50x): warmer soon. */
    double t = t0;
    for (long long end = h_now_ms() + 10000; h_now_ms() < end && t < t0 + 3; h_sleep_ms(100)) {
        a = act("heat1", 200, "{\"action\":\"status\"}");
        t = num(result(a), "temperature_c");
        json_decref(a);
    }
    assert_true(t >= t0 + 3);
    /* Telemetry from polling, with units. */
    json_t *doc = get_json("/v1/instruments/heat1");
    json_t *tel = json_object_get(doc, "telemetry");
    num(json_object_get(tel, "values"), "temperature_c");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(tel, "units"), "temperature_c")), "degC");
    json_decref(doc);
    json_decref(act("heat1", 200, "{\"action\":\"stop\"}"));
}

static const char *device_code(json_t *problem)
{
    return json_string_value(
        json_object_get(json_object_get(problem, "instrument_error"), "device_code"));
}

/* Injects an "error" fault (the next command the simulator gets is answered with an error) and
 * POSTs the action, which must fail with 502. The driver's own status poll may be that next
 * command: then the action succeeds (its undone effect is harmless here) and the pair is tried
 * again. */
static json_t *act_after_fault(const char *id, const char *body)
{
    for (int tries = 0; tries < 5; tries++) {
        assert_int_equal(h_sim_fault(&sim, id, "error", 0), 0);
        char path[128], *resp = NULL;
        snprintf(path, sizeof path, "/v1/instruments/%s/actions", id);
        int st = h_http(dmn.url, "POST", path, "Content-Type: application/json", body, &resp);
        json_t *doc = json_loads(resp ? resp : "", 0, NULL);
        free(resp);
        if (st == 502)
            return doc;
        if (st != 200)
            fail_msg("POST %s %s: %d (wanted 502)", path, body, st);
        json_decref(doc);
        if (strcmp(id, "star1") == 0) /* the tips it picked up go back */
            json_decref(act(id, 200, "{\"action\":\"drop_tips\"}"));
    }
    fail_msg("%s: the injected error never reached the action", id);
    return NULL;
}

static void test_faults(void **state)
{
    /* Garbage in the reader's reply: a protocol error, then the next read works. (Garbage
     * before a read's first ACK is skipped: the read would succeed.) */
    assert_int_equal(h_sim_fault(&sim, "reader1", "garbage", 0), 0);
    json_t *p = act("reader1", 502, "{\"action\":\"status\"}");
    json_decref(p);
    json_decref(act("reader1", 200,
                    "{\"action\":\"read_absorbance\",\"params\":"
                    "{\"wavelength_nm\":450,\"wells\":\"A1:A2\"}}"));

    /* The incubator's controller error: its own code in the answer. */
    p = act_after_fault("inc1",
                        "{\"action\":\"set_temperature\",\"params\":{\"temperature_c\":30}}");
    assert_non_null(device_code(p));
    json_decref(p);
    json_decref(
        act("inc1", 200, "{\"action\":\"set_temperature\",\"params\":{\"temperature_c\":30}}"));
    /* The handler's error flag stays up (fault) until a technician resets it. */
    wait_state("inc1", "fault", 5000);
    json_decref(act("inc1", 200, "{\"action\":\"reset\"}"));
    wait_state("inc1", "idle", 5000);

    /* The STAR's firmware error erXX/YY. */
    p = act_after_fault("star1", "{\"action\":\"pick_up_tips\"}");
    assert_non_null(strstr(device_code(p), "08"));
    json_decref(p);

    /* A Modbus exception. */
    assert_int_equal(h_sim_fault(&sim, "heat1", "error", 0), 0);
    p = act("heat1", 502, "{\"action\":\"status\"}");
    assert_non_null(strstr(device_code(p), "exception"));
    json_decref(p);
    json_decref(act("heat1", 200, "{\"action\":\"status\"}"));

    /* A silent heater: 504, alone; the reader answers meanwhile; then it is back. */
    assert_int_equal(h_sim_fault(&sim, "heat1", "timeout", 0), 0);
    p = act("heat1", 504, "{\"action\":\"status\",\"timeout_s\":1}");
    json_decref(p);
    json_decref(act("reader1", 200,
                    "{\"action\":\"read_absorbance\",\"params\":"
                    "{\"wavelength_nm\":450,\"wells\":\"A1:A1\"}}"));
    json_t *doc = get_json("/v1/instruments/heat1");
    assert_string_equal(json_string_value(json_object_get(doc, "state")), "fault");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(doc, "last_error"), "code")), "timeout");
    json_decref(doc);
    assert_int_equal(h_sim_fault(&sim, "heat1", "clear", 0), 0);
    wait_state("heat1", "idle", 10000); /* its telemetry poll found it again */
    json_decref(act("heat1", 200, "{\"action\":\"status\"}"));

    /* A silent incubator (a serial device that stops answering): 504, fault with the reason,
     * the others unaffected, and idle again by itself once it answers. */
    assert_int_equal(h_sim_fault(&sim, "inc1", "timeout", 0), 0);
    json_decref(act("inc1", 504, "{\"action\":\"status\"}"));
    json_decref(act("heat1", 200, "{\"action\":\"status\"}"));
    wait_state("inc1", "fault", 5000);
    assert_int_equal(h_sim_fault(&sim, "inc1", "clear", 0), 0);
    wait_state("inc1", "idle", 15000);
    json_decref(act("inc1", 200, "{\"action\":\"status\"}"));

    /* The STAR's pty vanishes: offline (and says so), then back by itself. */
    assert_int_equal(h_sim_fault(&sim, "star1", "disconnect", 100), 0);
    wait_state("star1", "offline", 10000);
    p = act("star1", 503, "{\"action\":\"initialize\"}");
    json_decref(p);
    wait_state("star1", "idle", 20000);
    json_decref(act("star1", 200, "{\"action\":\"initialize\"}"));
    doc = get_json("/v1/instruments/star1");
    assert_true(json_is_object(json_object_get(doc, "last_error")));
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_come_up),
        cmocka_unit_test(test_incubator),
        cmocka_unit_test(test_dispense_then_read),
        cmocka_unit_test(test_per_channel_volumes),
        cmocka_unit_test(test_heater),
        cmocka_unit_test(test_faults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
