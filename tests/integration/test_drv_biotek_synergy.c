/* biotek-synergy against labloop-sim (a 96-well reader and a 384-well one on ptys): version into
 * the info, status, absorbance over the whole plate and over a rectangle, parameters refused
 * before anything is sent (a wells range outside the configured plate named /params/wells), and
 * every injected fault: error (the reader does not answer: a timeout), garbage, timeout,
 * disconnect. A reader played by the test itself on a pty of its own covers what the simulator
 * never sends: "*******" wells (null), a refused read definition, a truncated body. Last,
 * polling delivers telemetry. */
#include "drivers/driver.h"
#include "protocols/biotek.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"

#include <errno.h>
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
static int telemetry;

/* ---- a reader played by the test ---- */

static struct {
    int master, slave;
    char path[128];
    char param[256];
    size_t plen;
    bool in_param;
    const char *def_reply; /* answer to a read definition */
    bool truncate;         /* send a body cut short */
    biotek_rect_t rect;
} fake = {.master = -1, .slave = -1};

static void fake_send(const void *buf, size_t n)
{
    assert_int_equal(write(fake.master, buf, n), (ssize_t)n);
}

static void fake_payload(const char *payload)
{
    char buf[128];
    int n = biotek_encode_reply(payload, buf, sizeof buf);
    assert_true(n > 0);
    fake_send(buf, (size_t)n);
}

static void fake_read_result(void)
{
    static biotek_plate_t plate;
    static char body[BIOTEK_FRAME_MAX + 1];
    memset(&plate, 0, sizeof plate);
    plate.rows = 8;
    plate.cols = 12;
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 12; c++) {
            plate.state[r][c] = BIOTEK_WELL_VALUE;
            plate.value[r][c] = 0.1 * (r + 1) + 0.001 * (c + 1);
        }
    plate.state[1][1] = BIOTEK_WELL_NOVALUE; /* B2: over range */
    fake_payload("0000");
    int n = biotek_encode_body(&plate, &fake.rect, BIOTEK_FMT_ABSORBANCE, 228, body, sizeof body);
    assert_true(n > 0);
    if (fake.truncate) {
        body[n / 2] = BIOTEK_ETX;
        n = n / 2 + 1;
    }
    fake_send(body, (size_t)n);
}

static void fake_byte(char c)
{
    if (fake.in_param) {
        if (c != BIOTEK_ETX) {
            if (fake.plen < sizeof fake.param - 1)
                fake.param[fake.plen++] = c;
            return;
        }
        fake.in_param = false;
        int nm;
        assert_int_equal(biotek_parse_absorbance(fake.param, fake.plen, &fake.rect, &nm), 0);
        fake_payload(fake.def_reply);
        return;
    }
    switch (c) {
    case 'e':
        fake_payload("1650200  Version 2.07   0000");
        break;
    case 'h':
        fake_payload("3700000");
        break;
    case 'D':
        fake_send("\x06", 1);
        fake.in_param = true;
        fake.plen = 0;
        break;
    case 'O':
        fake_read_result();
        break;
    default:
        break;
    }
}

static void fake_poll(void)
{
    char buf[256];
    ssize_t n;
    while (fake.master >= 0 && (n = read(fake.master, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            fake_byte(buf[i]);
}

/* ---- the loop ---- */

static void on_state(void *ctx, lab_driver_t *d, lab_inst_state_t s, const lab_drv_error_t *e)
{
    (void)ctx;
    (void)d;
    (void)s;
    (void)e;
}

static void on_tel(void *ctx, lab_driver_t *d, int64_t ts, json_t *v)
{
    (void)ctx;
    (void)d;
    (void)ts;
    if (json_is_number(json_object_get(v, "temperature_c")))
        telemetry++;
}

static const lab_drv_host_t host = {on_state, on_tel, NULL};

static lab_driver_t *make(const char *id, const char *port, const char *poll_s, const char *wells)
{
    lab_drv_kv_t kv[4] = {{"driver", "biotek-synergy", 2},
                          {"port", port, 3},
                          {"poll_s", poll_s, 4},
                          {"plate_wells", wells, 5}};
    return h_drv_open(id, kv, 4);
}

static lab_drv_err_t call(const char *action, const char *params)
{
    return h_drv_do(drv, action, params);
}

static json_t *values(void)
{
    json_t *v = json_object_get(h_drv_result(), "values");
    assert_true(json_is_object(v));
    return v;
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(h_tempdir("drvbt", dir, sizeof dir), 0);
    snprintf(port1, sizeof port1, "%s/reader1", dir);
    snprintf(port2, sizeof port2, "%s/reader2", dir);
    char ini[1024];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 50\nsim_seed = 3\nsim_noise = 0.001\n"
             "[instrument reader1]\ndriver = biotek-synergy\nport = %s\nsim_plate = P1\n"
             "[instrument reader2]\ndriver = biotek-synergy\nport = %s\nsim_wells = 384\n"
             "sim_plate = P2\n",
             port1, port2);
    assert_int_equal(h_sim_start(&sim, ini), 0);
    assert_int_equal(h_drv_init(50), 0);
    h_drv_set_host(&host);
    h_drv_set_pump(fake_poll);
    drv = make("reader1", port1, "0", "96");
    return 0;
}

static void walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "open handle: %s%s\n", uv_handle_type_name(h->type),
            uv_is_closing(h) ? " (closing)" : "");
}

static int teardown(void **state)
{
    (void)state;
    h_drv_close(drv);
    h_drv_close(drv2);
    int rc = h_drv_fini();
    if (rc)
        uv_walk(h_drv_loop(), walk_cb, NULL);
    json_decref(h_drv_result());
    if (fake.master >= 0) {
        close(fake.master);
        close(fake.slave);
    }
    h_sim_stop(&sim);
    h_rmtree(dir);
    assert_int_equal(rc, 0); /* every handle of the drivers closed */
    return 0;
}

static void test_connect_status(void **state)
{
    (void)state;
    h_drv_wait_state(drv, LAB_INST_IDLE);
    json_t *info = lab_driver_info(drv);
    assert_string_equal(json_string_value(json_object_get(info, "part_number")), "1650200");
    assert_string_equal(json_string_value(json_object_get(info, "version")), "1.04");
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 23.6);
}

static void test_read_whole_plate(void **state)
{
    (void)state;
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 96);
    for (char r = 'A'; r <= 'H'; r++)
        for (int c = 1; c <= 12; c++) {
            char name[8];
            snprintf(name, sizeof name, "%c%d", r, c);
            json_t *v = json_object_get(values(), name);
            if (!json_is_number(v))
                fail_msg("well %s is not a number", name);
            assert_true(json_number_value(v) > -0.1 && json_number_value(v) < 4);
        }
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "wavelength_nm")), 450);
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "plate_wells")), 96);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 23.6);
}

static void test_read_rectangle(void **state)
{
    (void)state;
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":600,\"wells\":\"B2:C4\"}"),
                     LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 6);
    const char *want[] = {"B2", "B3", "B4", "C2", "C3", "C4"};
    for (int i = 0; i < 6; i++)
        assert_true(json_is_number(json_object_get(values(), want[i])));
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "wavelength_nm")), 600);
    /* One well, lower case, and a range given backwards. */
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"h12\"}"),
                     LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 1);
    assert_true(json_is_number(json_object_get(values(), "H12")));
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"B3:A1\"}"),
                     LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 6);
    assert_true(json_is_number(json_object_get(values(), "A1")));
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
    json_array_foreach(problems, i, pr)
    {
        if (strcmp(json_string_value(json_object_get(pr, "path")), path) == 0)
            found = true;
    }
    if (!found) {
        char *s = json_dumps(problems, 0);
        fail_msg("%s %s: no problem at %s in %s", action, params, path, s ? s : "null");
    }
    json_decref(problems);
}

static void test_bad_params(void **state)
{
    (void)state;
    expect_problem("read_absorbance", "{}", "/params/wavelength_nm");
    expect_problem("read_absorbance", "{\"wavelength_nm\":229}", "/params/wavelength_nm");
    expect_problem("read_absorbance", "{\"wavelength_nm\":1000}", "/params/wavelength_nm");
    expect_problem("read_absorbance", "{\"wavelength_nm\":450.5}", "/params/wavelength_nm");
    expect_problem("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A0:H12\"}",
                   "/params/wells");
    expect_problem("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1:Q1\"}",
                   "/params/wells");
    expect_problem("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1-H12\"}",
                   "/params/wells");
    expect_problem("read_absorbance", "{\"wavelength_nm\":450,\"filter\":1}", "/params/filter");
    expect_problem("status", "{\"x\":1}", "/params/x");
    /* A well of a 384-well plate on this 96-well reader: refused by the driver, nothing sent. */
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1:H13\"}"),
                     LAB_DRV_EPARAM);
    assert_non_null(strstr(h_drv_error()->text, "params/wells"));
    assert_non_null(strstr(h_drv_error()->text, "96-well"));
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"I1\"}"),
                     LAB_DRV_EPARAM);
    assert_int_equal(call("open_tray", NULL), LAB_DRV_EACTION);
    assert_non_null(strstr(h_drv_error()->text, "read_absorbance"));
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
}

static void test_fault_error(void **state)
{
    (void)state;
    /* The reader leaves a command it cannot execute unanswered. */
    assert_int_equal(h_sim_fault(&sim, "reader1", "error", 0), 0);
    assert_int_equal(call("status", NULL), LAB_DRV_ETIMEOUT);
    assert_non_null(strstr(h_drv_error()->text, "does not answer"));
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    /* During a read: the definition goes unanswered. */
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_int_equal(h_sim_fault(&sim, "reader1", "error", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_DRV_ETIMEOUT);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 96);
    assert_int_equal(lab_driver_state(drv), LAB_INST_IDLE);
}

static void test_fault_garbage(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "reader1", "garbage", 0), 0);
    assert_int_equal(call("status", NULL), LAB_DRV_EPROTO);
    assert_int_equal(call("status", NULL), LAB_DRV_OK);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 23.6);
    assert_int_equal(h_sim_fault(&sim, "reader1", "garbage", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1:B2\"}"),
                     LAB_DRV_EPROTO);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1:B2\"}"),
                     LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 4);
}

static void test_fault_timeout(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "reader1", "timeout", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_DRV_ETIMEOUT);
    h_drv_wait_state(drv, LAB_INST_FAULT); /* until an operation succeeds */
    assert_int_equal(h_sim_fault(&sim, "reader1", "clear", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 96);
    h_drv_wait_state(drv, LAB_INST_IDLE);
}

static void test_fault_disconnect(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "reader1", "disconnect", 0), 0);
    h_drv_wait_state(drv, LAB_INST_OFFLINE);
    assert_int_equal(call("status", NULL), LAB_DRV_EOFFLINE);
    assert_int_equal(h_sim_fault(&sim, "reader1", "clear", 0), 0);
    h_drv_wait_state(drv, LAB_INST_IDLE);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"D4\"}"),
                     LAB_DRV_OK);
    assert_true(json_is_number(json_object_get(values(), "D4")));
}

static void test_384(void **state)
{
    (void)state;
    drv2 = make("reader2", port2, "0", "384");
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":340}"), LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 384);
    assert_true(json_is_number(json_object_get(values(), "P24")));
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "plate_wells")), 384);
    assert_int_equal(
        h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":340,\"wells\":\"I13:P24\"}"),
        LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 96);
    assert_true(json_is_number(json_object_get(values(), "I13")));
    assert_null(json_object_get(values(), "H12"));
    h_drv_close(drv2);
    drv2 = NULL;
}

/* The test's own reader: "*******" wells, a refused definition, a truncated body. */
static void test_fake_reader(void **state)
{
    (void)state;
    assert_int_equal(openpty(&fake.master, &fake.slave, NULL, NULL, NULL), 0);
    struct termios t;
    tcgetattr(fake.slave, &t);
    cfmakeraw(&t);
    tcsetattr(fake.slave, TCSANOW, &t);
    fcntl(fake.master, F_SETFL, fcntl(fake.master, F_GETFL) | O_NONBLOCK);
    snprintf(fake.path, sizeof fake.path, "%s", ttyname(fake.slave));
    fake.def_reply = "0000";
    drv2 = make("fake", fake.path, "0", "96");
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    assert_string_equal(json_string_value(json_object_get(lab_driver_info(drv2), "version")),
                        "2.07");
    assert_int_equal(
        h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1:C3\"}"),
        LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 9);
    assert_true(json_is_null(json_object_get(values(), "B2")));
    assert_true(json_number_value(json_object_get(values(), "C3")) == 0.303);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 37);

    fake.def_reply = "0001";
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450}"), LAB_DRV_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "0001");
    fake.def_reply = "0000";

    fake.truncate = true;
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450}"), LAB_DRV_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "body"));
    fake.truncate = false;
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450}"), LAB_DRV_OK);
    assert_int_equal(json_object_size(values()), 96);
    assert_true(json_is_null(json_object_get(values(), "B2")));
    h_drv_close(drv2);
    drv2 = NULL;
}

static void test_polling(void **state)
{
    (void)state;
    h_drv_close(drv);
    drv = NULL;
    drv = make("reader1", port1, "0.05", "96");
    h_drv_wait_state(drv, LAB_INST_IDLE);
    long long end = h_now_ms() + 20000;
    while (telemetry < 3 && h_now_ms() < end)
        h_drv_spin();
    assert_true(telemetry >= 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_status),
        cmocka_unit_test(test_read_whole_plate),
        cmocka_unit_test(test_read_rectangle),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_fault_error),
        cmocka_unit_test(test_fault_garbage),
        cmocka_unit_test(test_fault_timeout),
        cmocka_unit_test(test_fault_disconnect),
        cmocka_unit_test(test_384),
        cmocka_unit_test(test_fake_reader),
        cmocka_unit_test(test_polling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
