/* spectramax against labloop-sim (an M5 with a 96-well plate and a 384 Plus with a 384-well one,
 * on ptys, beside a BioTek reading the same simulated plate): the handshake to idle, status and
 * temperature, absorbance over the plate and over a rectangle with the BioTek's values, the set
 * point, the tray, parameters refused before anything is sent, and every injected fault: error
 * (a FAIL with the reader's code, fault until an operation succeeds), garbage, timeout,
 * disconnect and reconnect; a reader error held in fault until clear_error. A reader played by the
 * test on a pty of its own answers with PyLabRobot's recorded replies
 * (tests/fixtures/spectramax_plr.h) and checks the driver writes PyLabRobot's commands byte for
 * byte; it also plays what the simulator never sends: a reader busy for a while, a warning, a FAIL
 * whose code is not in the table or not a number, truncated data, and a reply that comes late
 * (never taken for the next command's). Last, polling delivers telemetry. */
#include "drivers/driver.h"
#include "protocols/spectramax.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"

#include <fcntl.h>
#include <math.h>
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

#include "tests/fixtures/spectramax_plr.h"

static h_sim_t sim;
static char dir[256], port1[400], port2[400], port3[400];
static lab_driver_t *drv, *drv2;
static int telemetry;

/* ---- a reader played by the test ---- */

static struct {
    int master, slave;
    char line[256];
    size_t len;
    char host[4096]; /* the commands received, each ended by '\n' */
    size_t host_len;
    int busy_left;    /* !STATUS answers BUSY this many more times */
    const char *next; /* the raw reply to the next command, instead of the usual one */
    bool hold;        /* keep the reply to the next command in held */
    char held[SMAX_FIELD_MAX + 32]; /* a reply held back, sent by fake_release */
    const char *transfer;           /* the data field of !TRANSFER */
} fake = {.master = -1, .slave = -1};

static void fake_send(const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(write(fake.master, s, n), (ssize_t)n);
}

static void fake_release(void)
{
    fake_send(fake.held);
    fake.held[0] = '\0';
}

static void fake_command(const char *cmd)
{
    size_t n = strlen(cmd);
    if (fake.host_len + n + 1 < sizeof fake.host) {
        memcpy(fake.host + fake.host_len, cmd, n);
        fake.host[fake.host_len + n] = '\n';
        fake.host_len += n + 1;
    }
    char reply[SMAX_FIELD_MAX + 32];
    int fields = smax_reply_fields(cmd, n);
    if (fake.next) {
        snprintf(reply, sizeof reply, "%s", fake.next);
        fake.next = NULL;
    } else {
        const char *data = "";
        if (strcmp(cmd, "!STATUS") == 0)
            data = fake.busy_left-- > 0 ? "0\tBUSY" : "0\tIDLE";
        else if (strcmp(cmd, "!TEMP") == 0)
            data = "37.0\t36.9";
        else if (strcmp(cmd, "!TRANSFER") == 0)
            data = fake.transfer;
        /* "OK>\r\n" as PyLabRobot's mocked reader (backend_tests.py line 36). */
        snprintf(reply, sizeof reply, "%s%s%s", smax_plr_ok, fields > 1 ? data : "",
                 fields > 1 ? ">\r\n" : "");
    }
    if (fake.hold) {
        fake.hold = false;
        snprintf(fake.held, sizeof fake.held, "%s", reply);
        return;
    }
    fake_send(reply);
}

static void fake_poll(void)
{
    char buf[256];
    ssize_t n;
    while (fake.master >= 0 && (n = read(fake.master, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\r') {
                fake.line[fake.len] = '\0';
                fake.len = 0;
                fake_command(fake.line);
            } else if (fake.len < sizeof fake.line - 1) {
                fake.line[fake.len++] = buf[i];
            }
        }
}

/* A pty pair whose slave end is the reader's port (raw), the master polled without blocking. */
static void open_pty(void)
{
    assert_int_equal(openpty(&fake.master, &fake.slave, NULL, NULL, NULL), 0);
    struct termios t;
    tcgetattr(fake.slave, &t);
    cfmakeraw(&t);
    tcsetattr(fake.slave, TCSANOW, &t);
    fcntl(fake.master, F_SETFL, fcntl(fake.master, F_GETFL) | O_NONBLOCK);
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

static lab_driver_t *make(const char *id, const char *port, const char *model, const char *wells)
{
    lab_drv_kv_t kv[5] = {{"driver", "spectramax", 2},
                          {"port", port, 3},
                          {"poll_s", "0", 4},
                          {"model", model, 5},
                          {"plate_wells", wells, 6}};
    return h_drv_open(id, kv, 5);
}

static int call(const char *action, const char *params)
{
    return h_drv_do(drv, action, params);
}

static json_t *values(void)
{
    json_t *v = json_object_get(h_drv_result(), "values");
    assert_true(json_is_object(v));
    return v;
}

static double result_num(const char *k)
{
    return h_drv_num(h_drv_result(), k);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(h_tempdir("drvsmax", dir, sizeof dir), 0);
    snprintf(port1, sizeof port1, "%s/smax1", dir);
    snprintf(port2, sizeof port2, "%s/smax2", dir);
    snprintf(port3, sizeof port3, "%s/biotek", dir);
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 50\nsim_seed = 3\nsim_noise = 0.001\n"
             "[instrument smax1]\ndriver = spectramax\nport = %s\nsim_plate = P1\n"
             "[instrument smax2]\ndriver = spectramax\nport = %s\nsim_wells = 384\n"
             "sim_plate = P2\nsim_error_code = 105\n"
             "[instrument bt]\ndriver = biotek-synergy\nport = %s\nsim_plate = P1\n",
             port1, port2, port3);
    assert_int_equal(h_sim_start(&sim, ini), 0);
    assert_int_equal(h_drv_init(50), 0);
    h_drv_set_host(&host);
    h_drv_set_pump(fake_poll);
    drv = make("smax1", port1, "m5", "96");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_drv_close(drv);
    h_drv_close(drv2);
    int rc = h_drv_fini();
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
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(result_num("temperature_c") == 22.5);
    assert_true(json_is_null(json_object_get(h_drv_result(), "setpoint_c")));
}

/* The simulated plate P1 read by the SpectraMax and by a BioTek: the same world, the same
 * numbers (both print four decimals). */
static void test_read_whole_plate(void **state)
{
    (void)state;
    lab_driver_t *bt;
    lab_drv_kv_t kv[3] = {{"driver", "biotek-synergy", 2}, {"port", port3, 3}, {"poll_s", "0", 4}};
    bt = h_drv_open("bt", kv, 3);
    h_drv_wait_state(bt, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(bt, "read_absorbance", "{\"wavelength_nm\":450}"), LAB_OK);
    json_t *bt_values = json_incref(values());
    h_drv_close(bt);

    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 96);
    const char *well;
    json_t *v;
    json_object_foreach(values(), well, v)
    {
        double b = json_number_value(json_object_get(bt_values, well));
        if (!json_is_number(v) || fabs(json_number_value(v) - b) > 0.00011)
            fail_msg("well %s: %g, the BioTek read %g", well, json_number_value(v), b);
    }
    json_decref(bt_values);
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "wavelength_nm")), 450);
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "plate_wells")), 96);
    assert_true(result_num("temperature_c") == 22.5);
    assert_null(json_object_get(h_drv_result(), "saturated"));
}

static void test_read_rectangle(void **state)
{
    (void)state;
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":600,\"wells\":\"C4:B2\"}"),
                     LAB_OK);
    assert_int_equal(json_object_size(values()), 6);
    const char *want[] = {"B2", "B3", "B4", "C2", "C3", "C4"};
    for (int i = 0; i < 6; i++)
        assert_true(json_is_number(json_object_get(values(), want[i])));
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "wavelength_nm")), 600);
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
    json_array_foreach(problems, i, pr)
    {
        if (strcmp(json_string_value(json_object_get(pr, "path")), path) == 0)
            found = true;
    }
    if (!found)
        fail_msg("%s %s: no problem at %s", action, params, path);
    json_decref(problems);
}

static void test_bad_params(void **state)
{
    (void)state;
    expect_problem("read_absorbance", "{}", "/params/wavelength_nm");
    expect_problem("read_absorbance", "{\"wavelength_nm\":189}", "/params/wavelength_nm");
    expect_problem("read_absorbance", "{\"wavelength_nm\":1001}", "/params/wavelength_nm");
    expect_problem("read_absorbance", "{\"wavelength_nm\":450.5}", "/params/wavelength_nm");
    expect_problem("read_absorbance", "{\"wavelength_nm\":\"450\"}", "/params/wavelength_nm");
    expect_problem("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A0:H12\"}",
                   "/params/wells");
    expect_problem("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1:I1\"}",
                   "/params/wells");
    expect_problem("read_absorbance", "{\"wavelength_nm\":450,\"mode\":\"FLU\"}", "/params/mode");
    expect_problem("set_temperature", "{\"temperature_c\":45.5}", "/params/temperature_c");
    expect_problem("set_temperature", "{\"temperature_c\":-1}", "/params/temperature_c");
    expect_problem("open_tray", "{\"x\":1}", "/params/x");
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A13\"}"),
                     LAB_EINVAL);
    assert_true(h_drv_error()->not_started);
    assert_non_null(strstr(h_drv_error()->text, "96-well"));
    assert_int_equal(call("read_fluorescence", NULL), LAB_ENOACTION);
    assert_int_equal(call("status", NULL), LAB_OK);
}

static void test_set_temperature_tray(void **state)
{
    (void)state;
    assert_int_equal(call("set_temperature", "{\"temperature_c\":37}"), LAB_OK);
    assert_true(result_num("setpoint_c") == 37);
    assert_true(result_num("temperature_c") == 37);
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(result_num("temperature_c") == 37);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1\"}"), LAB_OK);
    assert_true(result_num("temperature_c") == 37); /* the data's header */
    assert_int_equal(call("set_temperature", "{\"temperature_c\":null}"), LAB_OK);
    assert_true(json_is_null(json_object_get(h_drv_result(), "setpoint_c")));
    assert_true(result_num("temperature_c") == 22.5);
    assert_int_equal(call("open_tray", NULL), LAB_OK);
    assert_int_equal(call("close_tray", NULL), LAB_OK);
}

static void test_fault_error(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "smax1", "error", 0), 0);
    assert_int_equal(call("status", NULL), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "400");
    assert_non_null(strstr(h_drv_error()->text, "carriage motion error"));
    assert_false(h_drv_error()->not_started);
    h_drv_wait_state(drv, LAB_INST_FAULT);
    /* A motion error stays in the reader's log: status still answers but the fault holds, a
     * read is refused before anything is sent, and the fault outlives a reconnection. */
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(lab_driver_state(drv), LAB_INST_FAULT);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_ESTATE);
    assert_true(h_drv_error()->not_started);
    assert_int_equal(h_sim_fault(&sim, "smax1", "disconnect", 0), 0);
    h_drv_wait_state(drv, LAB_INST_OFFLINE);
    assert_int_equal(h_sim_fault(&sim, "smax1", "clear", 0), 0);
    h_drv_wait_state(drv, LAB_INST_FAULT);
    assert_int_equal(call("clear_error", NULL), LAB_OK);
    h_drv_wait_state(drv, LAB_INST_IDLE);
    /* During a read: its first command fails; once cleared, the next read goes through. */
    assert_int_equal(h_sim_fault(&sim, "smax1", "error", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_EDEVICE);
    h_drv_wait_state(drv, LAB_INST_FAULT);
    assert_int_equal(call("clear_error", NULL), LAB_OK);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 96);
    h_drv_wait_state(drv, LAB_INST_IDLE);
}

static void test_fault_garbage(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "smax1", "garbage", 0), 0);
    assert_int_equal(call("status", NULL), LAB_EPROTO);
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(result_num("temperature_c") == 22.5);
    assert_int_equal(h_sim_fault(&sim, "smax1", "garbage", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_EPROTO);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 96);
}

static void test_fault_timeout(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "smax1", "timeout", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_ETIMEDOUT);
    assert_non_null(strstr(h_drv_error()->text, "!CLEAR DATA"));
    h_drv_wait_state(drv, LAB_INST_FAULT);
    assert_int_equal(h_sim_fault(&sim, "smax1", "clear", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 96);
    h_drv_wait_state(drv, LAB_INST_IDLE);
}

static void test_fault_disconnect(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "smax1", "disconnect", 0), 0);
    h_drv_wait_state(drv, LAB_INST_OFFLINE);
    assert_int_equal(call("status", NULL), LAB_EOFFLINE);
    assert_int_equal(h_sim_fault(&sim, "smax1", "clear", 0), 0);
    h_drv_wait_state(drv, LAB_INST_IDLE);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"D4\"}"), LAB_OK);
    assert_true(json_is_number(json_object_get(values(), "D4")));
}

/* The 384 Plus: "!READTYPE PLA" with one field, 24 columns of 16 values. A 96-well setting on
 * it is the reader's error 111 (the simulated reader holds a 384-well plate). A command error
 * (its injected error is 105, system busy) is the framework's fault: the next success ends it. */
static void test_384_plus(void **state)
{
    (void)state;
    drv2 = make("smax2", port2, "384plus", "384");
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":340}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 384);
    assert_true(json_is_number(json_object_get(values(), "P24")));
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "plate_wells")), 384);
    assert_int_equal(h_sim_fault(&sim, "smax2", "error", 0), 0);
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":340}"), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "105");
    assert_non_null(strstr(h_drv_error()->text, "system busy"));
    h_drv_wait_state(drv2, LAB_INST_FAULT);
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    h_drv_close(drv2);
    drv2 = make("smax2", port2, "384plus", "96");
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":340}"), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "111");
    assert_non_null(strstr(h_drv_error()->text, "!STRIP 1 12"));
    h_drv_close(drv2);
    drv2 = NULL;
}

/* The data of a 96-well read in the reader's format, as PyLabRobot parses it (backend.py
 * 404-483): column lines of 8 values; G12 saturated, H12 no value. */
static char data96[2048];

static void make_data96(void)
{
    size_t o =
        (size_t)snprintf(data96, sizeof data96, "1234.5\t36.9\t96-well\r\nL:\t500\r\nL:\t500\r\n");
    for (int c = 1; c <= 12; c++) {
        o += (size_t)snprintf(data96 + o, sizeof data96 - o, "%d:", c);
        for (int r = 0; r < 8; r++) {
            if (c == 12 && r >= 6)
                o += (size_t)snprintf(data96 + o, sizeof data96 - o, "\t%s", r == 6 ? "#SAT" : "-");
            else
                o += (size_t)snprintf(data96 + o, sizeof data96 - o, "\t%.4f",
                                      0.1 * (r + 1) + 0.001 * c);
        }
        o += (size_t)snprintf(data96 + o, sizeof data96 - o, "\r\n");
    }
}

/* PyLabRobot's commands and replies: the read of a 96-well plate at 500 nm with the plate
 * position of its test (A1 13.38 mm from the left, 12.24 mm from the back), every command as
 * PyLabRobot writes it and answered as its mocked reader answers. */
static void test_plr_exchange(void **state)
{
    (void)state;
    open_pty();
    make_data96();
    fake.transfer = data96;
    lab_drv_kv_t kv[] = {{"driver", "spectramax", 2},
                         {"port", ttyname(fake.slave), 3},
                         {"poll_s", "0", 4},
                         {"plate_a1_x_mm", "13.38", 5},
                         {"plate_a1_y_mm", "12.24", 6}};
    drv2 = h_drv_open("plr", kv, 5);
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    assert_string_equal(fake.host, "!\n!STATUS\n"); /* setup's "!" (backend_tests.py line 53) */
    fake.host_len = 0;
    memset(fake.host, 0, sizeof fake.host);
    fake.busy_left = 2;
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":500}"), LAB_OK);
    char want[1024] = "";
    for (size_t i = 0; i < sizeof smax_plr_read_cmds / sizeof smax_plr_read_cmds[0]; i++) {
        strcat(want, smax_plr_read_cmds[i].cmd);
        strcat(want, "\n");
        assert_int_equal(
            smax_reply_fields(smax_plr_read_cmds[i].cmd, strlen(smax_plr_read_cmds[i].cmd)),
            smax_plr_read_cmds[i].fields);
    }
    /* !READ, then !STATUS until IDLE (twice BUSY), then !TRANSFER (backend.py 743-745). */
    strcat(want, "!READ\n!STATUS\n!STATUS\n!STATUS\n!TRANSFER\n");
    assert_string_equal(fake.host, want);
    assert_int_equal(json_object_size(values()), 96);
    assert_true(json_number_value(json_object_get(values(), "B3")) == 0.203);
    assert_true(json_is_null(json_object_get(values(), "G12")));
    assert_true(json_is_null(json_object_get(values(), "H12")));
    json_t *sat = json_object_get(h_drv_result(), "saturated");
    assert_int_equal(json_array_size(sat), 1);
    assert_string_equal(json_string_value(json_array_get(sat, 0)), "G12");
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 36.9);

    /* A FAIL after the OK of a two-field reply (line 1659): no data to transfer. */
    fake.next = NULL;
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
    fake.next = smax_plr_fail_107;
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "107");
    assert_non_null(strstr(h_drv_error()->text, "no data to transfer"));
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK); /* a command error: over */
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    /* A FAIL alone with a code the table lacks (line 1666), and one without a number (1673). */
    fake.next = smax_plr_fail_999;
    assert_int_equal(h_drv_do(drv2, "open_tray", NULL), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "999");
    assert_non_null(strstr(h_drv_error()->text, "not in the reader's error table"));
    h_drv_wait_state(drv2, LAB_INST_FAULT); /* held: what it means is not known */
    assert_int_equal(h_drv_do(drv2, "clear_error", NULL), LAB_OK);
    assert_non_null(strstr(fake.host, "!CLEAR ERROR\n"));
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    fake.next = smax_plr_fail_abc;
    assert_int_equal(h_drv_do(drv2, "open_tray", NULL), LAB_EPROTO);
    h_drv_wait_state(drv2, LAB_INST_IDLE); /* resynchronised: the handshake again */
    /* A warning after OK is no error (line 1683). */
    fake.next = smax_plr_warning;
    assert_int_equal(h_drv_do(drv2, "close_tray", NULL), LAB_OK);

    /* Data cut short: a protocol error naming !TRANSFER; the next read is whole again. */
    static char cut[2048];
    snprintf(cut, sizeof cut, "%.*s", (int)(strlen(data96) / 2), data96);
    fake.transfer = cut;
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":500}"), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "!TRANSFER"));
    fake.transfer = data96;
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":500}"), LAB_OK);
    /* Data of another wavelength than the one read. */
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450}"), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "500 nm"));
    h_drv_wait_state(drv2, LAB_INST_IDLE);

    /* A late reply: the !TEMP of a status times out; its fields, arriving afterwards, are not
     * taken for the next command's, which gets its own. */
    fake.host_len = 0;
    memset(fake.host, 0, sizeof fake.host);
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
    fake.hold = true;
    fake.next = "OK>\r\n99.0\t98.0>\r\n";
    assert_int_equal(h_drv_do(drv2, "set_temperature", "{\"temperature_c\":30}"), LAB_ETIMEDOUT);
    fake_release();
    assert_int_equal(h_drv_do(drv2, "status", NULL), LAB_OK);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 36.9);
    assert_non_null(strstr(fake.host, "!TEMP 30.0\n"));
    /* Python's float as PyLabRobot sends it (backend.py line 361), and its deactivate's 0. */
    fake.host_len = 0;
    memset(fake.host, 0, sizeof fake.host);
    assert_int_equal(h_drv_do(drv2, "set_temperature", "{\"temperature_c\":36.55}"), LAB_OK);
    assert_int_equal(h_drv_do(drv2, "set_temperature", "{\"temperature_c\":null}"), LAB_OK);
    assert_string_equal(fake.host, "!TEMP 36.55\n!TEMP\n!TEMP 0\n!TEMP\n");
    h_drv_close(drv2);

    /* A reader that stays BUSY past read_timeout_s: a timeout naming its state; no !TRANSFER. */
    lab_drv_kv_t kv2[] = {{"driver", "spectramax", 2},
                          {"port", ttyname(fake.slave), 3},
                          {"poll_s", "0", 4},
                          {"read_timeout_s", "5", 5}};
    drv2 = h_drv_open("plr", kv2, 4);
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    fake.busy_left = 1000000;
    fake.host_len = 0;
    memset(fake.host, 0, sizeof fake.host);
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":500}"), LAB_ETIMEDOUT);
    assert_non_null(strstr(h_drv_error()->text, "still BUSY"));
    assert_null(strstr(fake.host, "!TRANSFER"));
    fake.busy_left = 0;
    h_drv_close(drv2);
    drv2 = NULL;
}

static void test_polling(void **state)
{
    (void)state;
    h_drv_close(drv);
    lab_drv_kv_t kv[3] = {{"driver", "spectramax", 2}, {"port", port1, 3}, {"poll_s", "0.05", 4}};
    drv = h_drv_open("smax1", kv, 3);
    h_drv_wait_state(drv, LAB_INST_IDLE);
    long long end = h_now_ms() + 20000;
    while (telemetry < 3 && h_now_ms() < end)
        h_drv_spin();
    assert_true(telemetry >= 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_status),       cmocka_unit_test(test_read_whole_plate),
        cmocka_unit_test(test_read_rectangle),       cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_set_temperature_tray), cmocka_unit_test(test_fault_error),
        cmocka_unit_test(test_fault_garbage),        cmocka_unit_test(test_fault_timeout),
        cmocka_unit_test(test_fault_disconnect),     cmocka_unit_test(test_384_plus),
        cmocka_unit_test(test_plr_exchange),         cmocka_unit_test(test_polling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
