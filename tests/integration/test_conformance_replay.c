/* Conformance of labloopd's drivers to recordings built from independent sources
 * (tests/fixtures/wire/, converted by convert.py): labloop-sim --replay plays each instrument,
 * labloopd drives it through its HTTP actions, and every request the driver sends must be one
 * the recording answers. Where a driver needs an exchange the source never shows, the test
 * asserts exactly that one request, and nothing else, goes unanswered: the replay never makes a
 * reply up, so the gap stays visible until a real recording fills it.
 *   BioTek: PyLabRobot pylabrobot/legacy/plate_reading/agilent/biotek_tests.py at 598b58ffb,
 *           test_setup, test_get_serial_number, test_get_current_temperature (23.6 degC) and
 *           test_read_absorbance (580 nm, expected_data; the plate cellvis_96_wellplate_350uL_Fb,
 *           whose geometry the reader is configured with here).
 *   CN7500: minimalmodbus tests/test_minimalmodbus.py at 785262db5f, "Recorded data from
 *           OmegaCN7500", slave 10. Gap: output 1 (0x1012), which status reads, is not recorded.
 *   STAR:   PyLabRobot .../hamilton/STAR_tests.py at 598b58ffb, recorded as USB transfers (no CR
 *           LF) and replayed on a pty, where the driver ends each command with CR LF. Gap: the
 *           connect sequence's C0DI (initialise), which no test there shows.
 *   Liconic: PyLabRobot pylabrobot/legacy/storage/liconic/liconic_backend.py and
 *           liconic_backend_tests.py at 598b58ffb. Gap: the error flag (RD 1814) the driver reads
 *           after the ready wait, whose reply no source shows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "tests/harness/harness.h"

#define WAIT_MS 20000

static h_sim_t sim;
static h_daemon_t dmn;
static char dir[256]; /* the ptys */

static int setup(void **state)
{
    char sections[4096], fx[4][600];
    static const char *const names[] = {"biotek_synergy", "cn7500_minimalmodbus", "star_liquid",
                                        "liconic_stx"};
    if (h_tempdir("labconf", dir, sizeof dir))
        return -1;
    int mb = h_free_port();
    /* No polling: each request is one the test asks for. The reader is given the geometry of
     * the plate PyLabRobot's test read (its 'y' parameter in the recording). */
    snprintf(sections, sizeof sections,
             "[instrument reader1]\ndriver = biotek-synergy\nport = %s/reader1\npoll_s = 0\n"
             "plate_size_x_mm = 127.6\nplate_size_y_mm = 85.75\nplate_height_mm = 13.83\n"
             "plate_a1_x_mm = 14.3\nplate_a1_y_mm = 11.39\nplate_pitch_mm = 9\n"
             "[instrument cn7500]\ndriver = modbus-temperature\nmodbus = tcp://127.0.0.1:%d\n"
             "map = omega-cn7500\nunit = 10\npoll_s = 0\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s/star1\n"
             "[instrument stx1]\ndriver = liconic-stx\nport = %s/stx1\npoll_s = 0\n"
             "rack_type = liconic_rack_17mm_22\n",
             dir, mb, dir, dir);
    for (int i = 0; i < 4; i++)
        snprintf(fx[i], sizeof fx[i], "%s/tests/fixtures/wire/%s.jsonl", LAB_SOURCE_DIR_T,
                 names[i]);
    const char *args[] = {"--replay", fx[0],      "--replay", fx[1], "--replay",
                          fx[2],      "--replay", fx[3],      NULL};
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

static json_t *get_inst(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/instruments/%s", id);
    return h_api(&dmn, "GET", path, NULL, 200);
}

static bool wait_state(const char *id, const char *state, int ms)
{
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(50)) {
        json_t *doc = get_inst(id);
        const char *s = json_string_value(json_object_get(doc, "state"));
        bool ok = s && strcmp(s, state) == 0;
        json_decref(doc);
        if (ok)
            return true;
    }
    fprintf(stderr, "%s never %s\n", id, state);
    return false;
}

static bool wait_log(const char *needle, int ms)
{
    for (long long end = h_now_ms() + ms; h_now_ms() < end; h_sleep_ms(50))
        if (h_sim_log_count(&sim, needle) > 0)
            return true;
    fprintf(stderr, "no simulator log line with: %s\n", needle);
    return false;
}

static double num(json_t *doc, const char *key)
{
    json_t *v = json_object_get(json_object_get(doc, "result"), key);
    return json_is_number(v) ? json_number_value(v) : -1e9;
}

static const char *detail(json_t *doc)
{
    const char *d = json_string_value(json_object_get(doc, "detail"));
    return d ? d : "";
}

/* The replay's reports of requests it never saw from this instrument (0: none). */
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

/* set_temperature, stop and run are answered as recorded; status reads PV, SV and the run bit as
 * recorded, then output 1 (0x1012), which minimalmodbus's recording of the CN7500 never reads:
 * that one request, and no other, goes unanswered, and status reports the timeout. */
static void test_cn7500(void **state)
{
    int st;
    failures = 0;
    assert_true(wait_state("cn7500", "idle", WAIT_MS));
    json_t *a =
        act("cn7500", "{\"action\":\"set_temperature\",\"params\":{\"temperature_c\":20}}", &st);
    check(st == 200 && num(a, "setpoint_c") == 20.0, "set_temperature 20 answered");
    json_decref(a);
    a = act("cn7500", "{\"action\":\"stop\"}", &st);
    check(st == 200 && num(a, "running") == 0, "stop answered");
    json_decref(a);
    a = act("cn7500", "{\"action\":\"run\"}", &st);
    check(st == 200 && num(a, "running") == 1, "run answered");
    json_decref(a);
    check(unseen("cn7500") == 0, "set_temperature, stop and run: every request recorded");

    a = act("cn7500", "{\"action\":\"status\"}", &st);
    check(st == 504 && strstr(detail(a), "read_holding at 0x1012") != NULL,
          "status: the output 1 read times out, and nothing before it");
    json_decref(a);
    check(unseen("cn7500") == 1, "status: one request unseen");
    check(h_sim_log_count(&sim, "cn7500: first request the recording never saw (6 bytes): "
                                "\"unit 10: 03 10 12 00 01\"") == 1,
          "status: the unseen request is the output 1 read (03 10 12 00 01)");
    assert_int_equal(failures, 0);
}

static void test_biotek(void **state)
{
    int st;
    failures = 0;
    assert_true(wait_state("reader1", "idle", WAIT_MS));
    json_t *info = get_inst("reader1");
    json_t *inst = json_object_get(info, "info");
    /* test_setup's version reply, test_get_serial_number's */
    check(json_is_string(json_object_get(inst, "version")) &&
              strcmp(json_string_value(json_object_get(inst, "version")), "1.04") == 0,
          "version 1.04");
    check(json_is_string(json_object_get(inst, "serial_number")) &&
              strcmp(json_string_value(json_object_get(inst, "serial_number")), "00000000") == 0,
          "serial number 00000000");
    json_decref(info);
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
    check(num(a, "temperature_c") == 23.6, "read_absorbance temperature_c 23.6");
    json_decref(a);
    check(unseen("reader1") == 0, "every request recorded");
    assert_int_equal(failures, 0);
}

/* The STAR's connect sequence on a pty: C0TT, recorded without a terminator, is answered with
 * the link's CR LF (the driver sends C0DI only after it accepted that reply); C0DI, which
 * STAR_tests.py never shows, is the one request unseen, every time the driver tries again, and
 * the instrument never comes online, so no pipetting action can be driven against it. */
static void test_star(void **state)
{
    failures = 0;
    assert_true(wait_log("star1: first request the recording never saw", WAIT_MS));
    int di = h_sim_log_count(&sim, " bytes): \"C0DIid");
    check(di >= 1 && di == unseen("star1"), "every unseen request is C0DI");
    json_t *doc = get_inst("star1");
    const char *s = json_string_value(json_object_get(doc, "state"));
    check(s && strcmp(s, "idle") != 0, "not idle without C0DI");
    json_decref(doc);
    assert_int_equal(failures, 0);
}

/* The Liconic's connect sequence: BREAK, CR -> CC, ST 1801 -> OK, RD 1915 -> 1 as
 * liconic_backend.py's setup() has them; then the driver reads the error flag (RD 1814), which
 * no source shows answered: the one request unseen, and the instrument never comes online. */
static void test_liconic(void **state)
{
    failures = 0;
    assert_true(wait_log("stx1: first request the recording never saw", WAIT_MS));
    int flag = h_sim_log_count(&sim, " bytes): \"RD 1814\\r\"");
    check(flag >= 1 && flag == unseen("stx1"), "every unseen request is RD 1814");
    json_t *doc = get_inst("stx1");
    const char *s = json_string_value(json_object_get(doc, "state"));
    check(s && strcmp(s, "idle") != 0, "not idle without the error flag");
    json_decref(doc);
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cn7500),
        cmocka_unit_test(test_biotek),
        cmocka_unit_test(test_star),
        cmocka_unit_test(test_liconic),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
