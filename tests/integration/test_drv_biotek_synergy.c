/* biotek-synergy against labloop-sim (a 96-well reader and a 384-well one on ptys): version and
 * serial number into the info, status, absorbance over the whole plate and over a rectangle, the
 * incubation set point, parameters refused before anything is sent (a wells range outside the
 * configured plate named /params/wells), and every injected fault: error (the reader does not
 * answer: a timeout), garbage, timeout, disconnect. A reader played by the test itself on a pty
 * of its own covers what the simulator never sends: "*******" wells (null), a refused read
 * definition, a truncated body, a temperature that does not come. Another plays, byte for byte,
 * the transcript PyLabRobot recorded of a real reader's absorbance read. Last, polling delivers
 * telemetry. */
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

#include "tests/fixtures/biotek_plr.h"

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
    char in_param;         /* the letter whose parameter is coming, or 0 */
    const char *def_reply; /* answer to a read definition, ETX appended */
    bool truncate;         /* send a body cut short */
    bool mute_h;           /* leave the temperature unanswered */
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
    if (fake.in_param == 'g') {
        /* Five digits, no terminator; answered by a bare ETX. */
        fake.param[fake.plen++] = c;
        if (fake.plen == 5) {
            fake.param[5] = '\0';
            fake.in_param = 0;
            fake_send("\x03", 1);
        }
        return;
    }
    if (fake.in_param) {
        if (c != BIOTEK_ETX) {
            if (fake.plen < sizeof fake.param - 1)
                fake.param[fake.plen++] = c;
            return;
        }
        char letter = fake.in_param;
        fake.in_param = 0;
        if (letter == 'y') {
            fake_send("\x03", 1);
            return;
        }
        int nm;
        assert_int_equal(biotek_parse_absorbance(fake.param, fake.plen, &fake.rect, &nm), 0);
        char buf[64];
        int n = biotek_encode_status(fake.def_reply, buf, sizeof buf);
        assert_true(n > 0);
        fake_send(buf, (size_t)n);
        return;
    }
    switch (c) {
    case 'e':
        fake_payload("1650200  Version 2.07   0000");
        break;
    case 'C':
        fake_payload("12345678        0000");
        break;
    case 'h':
        if (!fake.mute_h)
            fake_payload("3700000");
        break;
    case 'D':
    case 'y':
    case 'g':
        fake_send("\x06", 1);
        fake.in_param = c;
        fake.plen = 0;
        break;
    case 'O':
        fake_read_result();
        break;
    default:
        break;
    }
}

/* ---- a reader that answers with PyLabRobot's recordings ----
 *
 * Repository PyLabRobot/pylabrobot, commit 598b58ffbef97fe33db6e1421b532cc9a389cbcb,
 * pylabrobot/legacy/plate_reading/agilent/biotek_tests.py: the replies of test_setup (line 47),
 * test_get_serial_number (line 61) and test_read_absorbance (lines 81-106), byte for byte, each
 * given to the command letter it answered there. What the host writes is kept to be compared
 * with what PyLabRobot writes. */

/* expected_data of test_read_absorbance (lines 120-191), by row. */
static const double plr_values[8][12] = {
    {0.1917, 0.1225, 0.0667, 0.0728, 0.0722, 0.0664, 0.0763, 0.0726, 0.0825, 0.1001, 0.1443,
     0.2105},
    {0.0802, 0.0925, 0.0768, 0.0752, 0.0644, 0.0544, 0.0868, 0.1059, 0.0871, 0.0796, 0.08, 0.1986},
    {0.0925, 0.1007, 0.0697, 0.0736, 0.0712, 0.0719, 0.071, 0.0794, 0.0645, 0.0799, 0.0779, 0.1256},
    {0.0954, 0.0719, 0.0672, 0.0711, 0.0733, 0.0895, 0.0778, 0.0787, 0.0753, 0.0858, 0.0711,
     0.1525},
    {0.0841, 0.061, 0.0766, 0.0773, 0.0632, 0.0787, 0.11, 0.0645, 0.0934, 0.1439, 0.1113, 0.1281},
    {0.093, 0.0776, 0.0794, 0.0596, 0.0978, 0.0704, 0.1079, 0.0935, 0.0712, 0.0892, 0.0707, 0.1649},
    {0.1255, 0.0742, 0.0747, 0.0694, 0.1004, 0.09, 0.0659, 0.0858, 0.0876, 0.0815, 0.098, 0.1329},
    {0.1427, 0.1174, 0.0684, 0.0657, 0.0732, 0.067, 0.0602, 0.079, 0.0667, 0.1103, 0.129, 0.1316},
};

static struct {
    int master, slave;
    char param_of; /* the letter whose parameter is coming (up to ETX), or 0 */
    char host[1024];
    size_t host_len;
} plr = {.master = -1, .slave = -1};

static void plr_send(const char *s, size_t n)
{
    assert_int_equal(write(plr.master, s, n), (ssize_t)n);
}

static void plr_byte(char c)
{
    if (plr.host_len < sizeof plr.host)
        plr.host[plr.host_len++] = c;
    if (plr.param_of) {
        if (c != BIOTEK_ETX)
            return;
        /* line 82: the geometry's parameter gets a bare ETX; line 84: the definition's gets 37
         * digits and ETX, no ACK. */
        if (plr.param_of == 'y')
            plr_send("\x03", 1);
        else
            plr_send("0350000000000000010000000000490300000\x03", 38);
        plr.param_of = 0;
        return;
    }
    switch (c) {
    case 'e':
        plr_send("\x06"
                 "1650200  Version 1.04   0000\x03",
                 30);
        break;
    case 'C':
        plr_send("\x06"
                 "00000000        0000\x03",
                 22);
        break;
    case 'y':
    case 'D':
        plr_send("\x06", 1);
        plr.param_of = c;
        break;
    case 'O':
        plr_send("\x06"
                 "0000\x03",
                 6);
        plr_send(biotek_plr_body96, sizeof biotek_plr_body96 - 1);
        break;
    case 'h':
        plr_send("\x06"
                 "2360000\x03",
                 9);
        break;
    default: /* not in the recording: unanswered */
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
    while (plr.master >= 0 && (n = read(plr.master, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            plr_byte(buf[i]);
}

/* A pty pair whose slave end is the reader's port (raw), the master polled without blocking. */
static void open_pty(int *master, int *slave, char *path, size_t cap)
{
    assert_int_equal(openpty(master, slave, NULL, NULL, NULL), 0);
    struct termios t;
    tcgetattr(*slave, &t);
    cfmakeraw(&t);
    tcsetattr(*slave, TCSANOW, &t);
    fcntl(*master, F_SETFL, fcntl(*master, F_GETFL) | O_NONBLOCK);
    snprintf(path, cap, "%s", ttyname(*slave));
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
    if (plr.master >= 0) {
        close(plr.master);
        close(plr.slave);
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
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 23.6);
}

static void test_read_whole_plate(void **state)
{
    (void)state;
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_OK);
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
                     LAB_OK);
    assert_int_equal(json_object_size(values()), 6);
    const char *want[] = {"B2", "B3", "B4", "C2", "C3", "C4"};
    for (int i = 0; i < 6; i++)
        assert_true(json_is_number(json_object_get(values(), want[i])));
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "wavelength_nm")), 600);
    /* One well, lower case, and a range given backwards. */
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"h12\"}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 1);
    assert_true(json_is_number(json_object_get(values(), "H12")));
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"B3:A1\"}"),
                     LAB_OK);
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
    assert_int_equal(err.code, LAB_EINVAL);
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
                     LAB_EINVAL);
    assert_non_null(strstr(h_drv_error()->text, "params/wells"));
    assert_non_null(strstr(h_drv_error()->text, "96-well"));
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"I1\"}"),
                     LAB_EINVAL);
    assert_int_equal(call("open_tray", NULL), LAB_ENOACTION);
    assert_non_null(strstr(h_drv_error()->text, "read_absorbance"));
    assert_int_equal(call("status", NULL), LAB_OK);
}

/* set_temperature: 'g' in thousandths of a degree; a reader that cannot cool (the default,
 * incubation = heat) refuses a set point below its temperature, as PyLabRobot does. */
static void test_set_temperature(void **state)
{
    (void)state;
    expect_problem("set_temperature", "{}", "/params/temperature_c");
    expect_problem("set_temperature", "{\"temperature_c\":46}", "/params/temperature_c");
    expect_problem("set_temperature", "{\"temperature_c\":3.9}", "/params/temperature_c");
    expect_problem("set_temperature", "{\"temperature_c\":\"37\"}", "/params/temperature_c");
    assert_int_equal(call("set_temperature", "{\"temperature_c\":37}"), LAB_OK);
    assert_true(json_number_value(json_object_get(h_drv_result(), "setpoint_c")) == 37);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 23.6);
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 37);
    assert_int_equal(call("set_temperature", "{\"temperature_c\":30}"), LAB_ESTATE);
    assert_non_null(strstr(h_drv_error()->text, "cannot cool"));
    /* Off: the simulated reader goes back to the room's 23.6 degC. */
    assert_int_equal(call("set_temperature", "{\"temperature_c\":null}"), LAB_OK);
    assert_true(json_is_null(json_object_get(h_drv_result(), "setpoint_c")));
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 23.6);
}

/* A plate whose last well falls outside it is refused when the instrument is made, with the
 * well named: nothing is ever sent with it. */
static void test_bad_geometry(void **state)
{
    (void)state;
    lab_drv_kv_t kv[] = {
        {"driver", "biotek-synergy", 2}, {"port", port1, 3}, {"plate_pitch_mm", "11", 4}};
    lab_drv_conf_t conf = {.id = "bad", .line = 1, .kv = kv, .n = 3, .time_scale = 50};
    h_drv_problems_t pr = {0};
    assert_int_equal(lab_driver_check(&conf, h_drv_on_conf_err, &pr), 0);
    lab_driver_t *d = NULL;
    char err[256] = "";
    assert_int_not_equal(lab_driver_new(h_drv_loop(), &conf, h_drv_host(), &d, err, sizeof err), 0);
    assert_null(d);
    assert_non_null(strstr(err, "H12"));
    assert_non_null(strstr(err, "outside"));
}

static void test_fault_error(void **state)
{
    (void)state;
    /* The reader leaves a command it cannot execute unanswered. */
    assert_int_equal(h_sim_fault(&sim, "reader1", "error", 0), 0);
    assert_int_equal(call("status", NULL), LAB_ETIMEDOUT);
    assert_non_null(strstr(h_drv_error()->text, "does not answer"));
    assert_int_equal(call("status", NULL), LAB_OK);
    /* During a read: the definition goes unanswered. */
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_int_equal(h_sim_fault(&sim, "reader1", "error", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_ETIMEDOUT);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 96);
    assert_int_equal(lab_driver_state(drv), LAB_INST_IDLE);
}

static void test_fault_garbage(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "reader1", "garbage", 0), 0);
    assert_int_equal(call("status", NULL), LAB_EPROTO);
    assert_int_equal(call("status", NULL), LAB_OK);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 23.6);
    /* Noise before the ACK of the plate geometry is skipped: the ACK that follows is taken and
     * the read goes on (dropping it would leave the reader waiting for the parameter). */
    assert_int_equal(h_sim_fault(&sim, "reader1", "garbage", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1:B2\"}"),
                     LAB_OK);
    assert_int_equal(json_object_size(values()), 4);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1:B2\"}"),
                     LAB_OK);
}

static void test_fault_timeout(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "reader1", "timeout", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_ETIMEDOUT);
    h_drv_wait_state(drv, LAB_INST_FAULT); /* until an operation succeeds */
    assert_int_equal(h_sim_fault(&sim, "reader1", "clear", 0), 0);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 96);
    h_drv_wait_state(drv, LAB_INST_IDLE);
}

static void test_fault_disconnect(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "reader1", "disconnect", 0), 0);
    h_drv_wait_state(drv, LAB_INST_OFFLINE);
    assert_int_equal(call("status", NULL), LAB_EOFFLINE);
    assert_int_equal(h_sim_fault(&sim, "reader1", "clear", 0), 0);
    h_drv_wait_state(drv, LAB_INST_IDLE);
    assert_int_equal(call("read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"D4\"}"), LAB_OK);
    assert_true(json_is_number(json_object_get(values(), "D4")));
}

static void test_384(void **state)
{
    (void)state;
    drv2 = make("reader2", port2, "0", "384");
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":340}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 384);
    assert_true(json_is_number(json_object_get(values(), "P24")));
    assert_int_equal(json_integer_value(json_object_get(h_drv_result(), "plate_wells")), 384);
    assert_int_equal(
        h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":340,\"wells\":\"I13:P24\"}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 96);
    assert_true(json_is_number(json_object_get(values(), "I13")));
    assert_null(json_object_get(values(), "H12"));
    h_drv_close(drv2);
    drv2 = NULL;
}

/* PyLabRobot's recording of a real reader's 96-well read at 580 nm, replayed: the driver writes
 * what PyLabRobot writes (line 116: the definition; the plate geometry first, its temperature
 * last) and reads the recorded values (expected_data). The port opens with RTS/CTS, the
 * default, as PyLabRobot opens the reader (biotek_backend.py setup, lines 87-90). */
static void test_plr_transcript(void **state)
{
    (void)state;
    char path[128];
    open_pty(&plr.master, &plr.slave, path, sizeof path);
    drv2 = make("plr", path, "0", "96");
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    json_t *info = lab_driver_info(drv2);
    assert_string_equal(json_string_value(json_object_get(info, "version")), "1.04");
    plr.host_len = 0;
    int rc = h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":580}");
    if (rc != LAB_OK)
        fail_msg("read_absorbance: %d %s", rc, h_drv_error()->text);
    static const char after_geometry[] = "D004701010108120001200100001100100000106000080580113\x03"
                                         "Oh";
    assert_int_equal(plr.host_len, 1 + BIOTEK_GEOMETRY_LEN + 1 + sizeof after_geometry - 1);
    assert_int_equal(plr.host[0], 'y');
    assert_int_equal(strspn(plr.host + 1, "0123456789"), BIOTEK_GEOMETRY_LEN);
    assert_int_equal(plr.host[1 + BIOTEK_GEOMETRY_LEN], BIOTEK_ETX);
    assert_memory_equal(plr.host + 2 + BIOTEK_GEOMETRY_LEN, after_geometry,
                        sizeof after_geometry - 1);
    assert_int_equal(json_object_size(values()), 96);
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 12; c++) {
            char name[8];
            snprintf(name, sizeof name, "%c%d", 'A' + r, c + 1);
            json_t *v = json_object_get(values(), name);
            if (!json_is_number(v) || json_number_value(v) != plr_values[r][c])
                fail_msg("well %s: expected %g", name, plr_values[r][c]);
        }
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 23.6);
    json_t *serial = json_object_get(lab_driver_info(drv2), "serial_number");
    assert_non_null(serial);
    assert_string_equal(json_string_value(serial), "00000000");
    h_drv_close(drv2);
    drv2 = NULL;
}

/* The test's own reader: "*******" wells, a refused definition, a truncated body. */
static void test_fake_reader(void **state)
{
    (void)state;
    open_pty(&fake.master, &fake.slave, fake.path, sizeof fake.path);
    fake.def_reply = "0350000000000000010000000000490300000";
    drv2 = make("fake", fake.path, "0", "96");
    h_drv_wait_state(drv2, LAB_INST_IDLE);
    assert_string_equal(json_string_value(json_object_get(lab_driver_info(drv2), "version")),
                        "2.07");
    assert_int_equal(
        h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1:C3\"}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 9);
    assert_true(json_is_null(json_object_get(values(), "B2")));
    assert_true(json_number_value(json_object_get(values(), "C3")) == 0.303);
    assert_true(json_number_value(json_object_get(h_drv_result(), "temperature_c")) == 37);

    fake.def_reply = "0001";
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450}"), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "0001");
    /* Digits of no status's length name their count. */
    fake.def_reply = "035000";
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450}"), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "6 digits"));
    fake.def_reply = "0350000000000000010000000000490300000";
    /* A temperature that does not come after a read leaves the values: null, as PyLabRobot's
     * nan. */
    fake.mute_h = true;
    assert_int_equal(
        h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450,\"wells\":\"A1:B2\"}"), LAB_OK);
    assert_int_equal(json_object_size(values()), 4);
    assert_true(json_is_null(json_object_get(h_drv_result(), "temperature_c")));
    fake.mute_h = false;

    /* The set point in thousandths of a degree, after the temperature (37 degC here, so 40 is
     * reachable by heating). */
    assert_int_equal(h_drv_do(drv2, "set_temperature", "{\"temperature_c\":40}"), LAB_OK);
    assert_string_equal(fake.param, "40000");
    assert_int_equal(h_drv_do(drv2, "set_temperature", "{\"temperature_c\":null}"), LAB_OK);
    assert_string_equal(fake.param, "00000");

    fake.truncate = true;
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450}"), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "body"));
    fake.truncate = false;
    assert_int_equal(h_drv_do(drv2, "read_absorbance", "{\"wavelength_nm\":450}"), LAB_OK);
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
        cmocka_unit_test(test_set_temperature),
        cmocka_unit_test(test_bad_geometry),
        cmocka_unit_test(test_fault_error),
        cmocka_unit_test(test_fault_garbage),
        cmocka_unit_test(test_fault_timeout),
        cmocka_unit_test(test_fault_disconnect),
        cmocka_unit_test(test_384),
        cmocka_unit_test(test_plr_transcript),
        cmocka_unit_test(test_fake_reader),
        cmocka_unit_test(test_polling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
