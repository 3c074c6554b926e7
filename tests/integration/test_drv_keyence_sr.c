/* keyence-sr against labloop-sim: RMOTOR to idle, a scan reading the plate the simulated world
 * has at the reader's instrument (an incubator's transfer station, before and after a load),
 * another label and an unreadable one put in front through the control socket (no read is a
 * result, {"barcode": null}, after LOFF), both answer forms (BL: data alone; SR: OK,LON first and
 * no motor), parameters refused before a byte is sent, the motor off holding the reader in fault
 * until it runs, and every injected fault: error (ERR99), garbage, timeout, disconnect. Then the
 * exchanges of PyLabRobot's Keyence backend tests replayed by a scripted device on a pty
 * (tests/fixtures/keyence_plr.h), with a late answer that must not be taken for the next
 * command's, and polling telemetry. */
#include "drivers/driver.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"
#include "tests/fixtures/keyence_plr.h"

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
static char dir[256], port_bc1[400], port_bc2[400], port_inc1[400];
static lab_driver_t *bc1, *bc2, *inc1, *dev;
static lab_inst_state_t state1, state2, state_dev;
static int telemetry;

static void on_state(void *ctx, lab_driver_t *d, lab_inst_state_t s, const lab_drv_error_t *e)
{
    (void)ctx;
    (void)e;
    if (d == bc2)
        state2 = s;
    else if (d == dev)
        state_dev = s;
    else if (d == bc1)
        state1 = s;
}

static void on_tel(void *ctx, lab_driver_t *d, int64_t ts, json_t *v)
{
    (void)ctx;
    (void)ts;
    if (d == bc1 && json_integer_value(json_object_get(v, "motor_on")) == 1)
        telemetry++;
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

static lab_driver_t *make(const char *id, const char *port, const char *poll_s, const char *read_ms)
{
    lab_drv_kv_t kv[5] = {{"driver", "keyence-sr", 2},
                          {"port", port, 3},
                          {"at", "inc1", 4},
                          {"poll_s", poll_s, 5},
                          {"read_ms", read_ms, 6}};
    return h_drv_open(id, kv, 5);
}

/* The barcode of the last scan: its text, or "null". */
static const char *scanned(void)
{
    json_t *b = json_object_get(h_drv_result(), "barcode");
    if (json_is_null(b))
        return "null";
    if (!json_is_string(b))
        fail_msg("scan result without a barcode");
    return json_string_value(b);
}

static void label(const char *id, const char *json)
{
    char r[512];
    assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"instrument\":\"%s\",\"label\":%s}", id, json),
                     0);
    if (!strstr(r, "\"ok\""))
        fail_msg("label %s: %s", json, r);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(h_tempdir("drvkey", dir, sizeof dir), 0);
    snprintf(port_bc1, sizeof port_bc1, "%s/bc1", dir);
    snprintf(port_bc2, sizeof port_bc2, "%s/bc2", dir);
    snprintf(port_inc1, sizeof port_inc1, "%s/inc1", dir);
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[labloop]\ntime_scale = 50\n"
             "[instrument inc1]\ndriver = liconic-stx\nrack_type = liconic_rack_44mm_10\n"
             "port = %s\nsim_plate = P0042\nsim_step_seconds = 2\n"
             "[instrument bc1]\ndriver = keyence-sr\nport = %s\nat = inc1\n"
             "[instrument bc2]\ndriver = keyence-sr\nport = %s\nat = inc1\nsim_mode = sr\n",
             port_inc1, port_bc1, port_bc2);
    assert_int_equal(h_sim_start(&sim, ini), 0);
    assert_int_equal(h_drv_init(50), 0);
    h_drv_set_host(&host);
    bc1 = make("bc1", port_bc1, "0", "300");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_drv_close(bc1);
    h_drv_close(bc2);
    h_drv_close(inc1);
    int rc = h_drv_fini();
    h_sim_stop(&sim);
    h_rmtree(dir);
    assert_int_equal(rc, 0);
    return 0;
}

static void test_connect_scan(void **state)
{
    (void)state;
    wait_state(&state1, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(bc1, "status", NULL), LAB_OK);
    assert_int_equal(h_drv_num(h_drv_result(), "motor_on"), 1);
    /* the plate the world has on inc1's transfer station */
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "P0042");
    assert_string_equal(lab_driver_ops(bc1)->kind, "barcode_reader");
    assert_true(lab_driver_ops(bc1)->roles[0].role == LAB_DRV_ROLE_SCAN);
}

/* Loaded into the incubator, the plate is no longer in front of the reader: no read. */
static void test_world(void **state)
{
    (void)state;
    lab_drv_kv_t kv[4] = {{"driver", "liconic-stx", 2},
                          {"port", port_inc1, 3},
                          {"rack_type", "liconic_rack_44mm_10", 4},
                          {"poll_s", "0", 5}};
    inc1 = h_drv_open("inc1", kv, 4);
    h_drv_wait_state(inc1, LAB_INST_IDLE);
    h_drv_do_ok(inc1, "load", "{\"cassette\":1,\"slot\":3}");
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "null");
    assert_int_equal(lab_driver_state(bc1), LAB_INST_IDLE); /* no read is not a fault */
    /* a person puts another plate on the station: the world knows it by its name */
    char r[512];
    assert_int_equal(
        h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"Q7\",\"position\":\"transfer:inc1\"}"), 0);
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "Q7");
    assert_int_not_equal(
        h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"Q8\",\"position\":\"transfer:inc1\"}"), 0);
    assert_non_null(strstr(r, "holds Q7"));
    assert_int_equal(h_sim_ctl(&sim, r, sizeof r, "{\"plate\":\"Q7\",\"position\":\"outside\"}"),
                     0);
    h_drv_do_ok(inc1, "unload", "{\"cassette\":1,\"slot\":3}");
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "P0042");
}

static void test_labels(void **state)
{
    (void)state;
    label("bc1", "\"P0043\"");
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "P0043");
    label("bc1", "null");
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "null");
    assert_true(h_sim_log_count(&sim, "bc1: read") >= 3);
    label("bc1", "false");
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "P0042");
    /* the control socket refuses what no label can carry */
    char r[512];
    assert_int_not_equal(
        h_sim_ctl(&sim, r, sizeof r, "{\"instrument\":\"bc1\",\"label\":\"ERROR\"}"), 0);
    assert_non_null(strstr(r, "not a reply word"));
    assert_int_not_equal(h_sim_ctl(&sim, r, sizeof r, "{\"instrument\":\"inc1\",\"label\":\"X\"}"),
                         0);
    assert_non_null(strstr(r, "not a simulated barcode reader"));
}

/* The SR's own answer form: OK,LON before the data, OK,LOFF before the read error, and no
 * motor (ER,RMOTOR,00) at connect and in the poll. */
static void test_sr_mode(void **state)
{
    (void)state;
    bc2 = make("bc2", port_bc2, "0", "300");
    wait_state(&state2, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(bc2, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "P0042");
    label("bc2", "null");
    assert_int_equal(h_drv_do(bc2, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "null");
    label("bc2", "false");
    assert_int_equal(h_drv_do(bc2, "status", NULL), LAB_OK);
    assert_null(json_object_get(h_drv_result(), "motor_on"));
    assert_int_equal(lab_driver_state(bc2), LAB_INST_IDLE);
    h_drv_close(bc2);
    bc2 = NULL;
}

/* The read window is real time: at 50 lab seconds a real second, a read that runs its full
 * window (2.5 s, no label) ends in the reader's no read, not in the framework's timeout (its
 * floor is 2 s of real time). */
static void test_fast_clock(void **state)
{
    (void)state;
    state2 = LAB_INST_OFFLINE;
    bc2 = make("bc2", port_bc2, "0", "2500");
    wait_state(&state2, LAB_INST_IDLE);
    label("bc2", "null");
    assert_int_equal(h_drv_do(bc2, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "null");
    label("bc2", "false");
    h_drv_close(bc2);
    bc2 = NULL;
}

static void test_bad_params(void **state)
{
    (void)state;
    long before = h_sim_log_count(&sim, "bc1: read");
    json_t *p = json_pack("{s:i}", "window", 3), *problems = NULL;
    lab_drv_error_t err;
    assert_int_not_equal(lab_driver_call(bc1, "scan", p, 0, h_drv_on_done, NULL, &err, &problems),
                         0);
    json_decref(p);
    assert_int_equal(err.code, LAB_EINVAL);
    assert_true(err.not_started);
    assert_string_equal(json_string_value(json_object_get(json_array_get(problems, 0), "path")),
                        "/params/window");
    json_decref(problems);
    assert_int_equal(h_drv_do(bc1, "trigger", NULL), LAB_ENOACTION);
    assert_int_equal(h_sim_log_count(&sim, "bc1: read"), before);
    /* the configuration needs the instrument the reader sees */
    lab_drv_kv_t kv[2] = {{"driver", "keyence-sr", 2}, {"port", "/dev/null", 3}};
    lab_drv_conf_t c = {.id = "bcx", .line = 1, .kv = kv, .n = 2, .time_scale = 1};
    h_drv_problems_t pr = {0};
    assert_int_equal(lab_driver_check(&c, h_drv_on_conf_err, &pr), 1);
    assert_string_equal(pr.keys[0], "at");
}

/* The motor off (the injected error to RMOTOR): the reader is in fault, and stays so until a
 * poll finds it running; a scan meanwhile is refused before anything is sent. */
static void test_motor_fault(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "bc1", "error", 0), 0);
    assert_int_equal(h_drv_do(bc1, "status", NULL), LAB_OK);
    assert_int_equal(h_drv_num(h_drv_result(), "motor_on"), 0);
    wait_state(&state1, LAB_INST_FAULT);
    assert_string_equal(lab_driver_last_error(bc1)->device_code, "MOTOROFF");
    assert_int_equal(h_drv_do(bc1, "status", NULL), LAB_OK);
    assert_int_equal(h_drv_num(h_drv_result(), "motor_on"), 1);
    wait_state(&state1, LAB_INST_IDLE);
}

static void test_fault_error(void **state)
{
    (void)state;
    h_drv_do_ok(bc1, "status", NULL); /* the error below goes to the LON */
    assert_int_equal(h_sim_fault(&sim, "bc1", "error", 0), 0);
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "ERR99");
    wait_state(&state1, LAB_INST_FAULT);
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "P0042");
    wait_state(&state1, LAB_INST_IDLE);
}

static void test_fault_garbage(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "bc1", "garbage", 0), 0);
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_EPROTO);
    assert_non_null(strstr(h_drv_error()->text, "\\x"));
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "P0042");
}

static void test_fault_timeout(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "bc1", "timeout", 0), 0);
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_ETIMEDOUT);
    assert_non_null(strstr(h_drv_error()->text, "LOFF"));
    wait_state(&state1, LAB_INST_FAULT);
    assert_int_equal(h_sim_fault(&sim, "bc1", "clear", 0), 0);
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "P0042");
    wait_state(&state1, LAB_INST_IDLE);
}

static void test_fault_disconnect(void **state)
{
    (void)state;
    assert_int_equal(h_sim_fault(&sim, "bc1", "disconnect", 0), 0);
    wait_state(&state1, LAB_INST_OFFLINE);
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_EOFFLINE);
    assert_true(h_drv_error()->not_started);
    assert_int_equal(h_sim_fault(&sim, "bc1", "clear", 0), 0);
    wait_state(&state1, LAB_INST_IDLE);
    assert_int_equal(h_drv_do(bc1, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "P0042");
}

/* ---- PyLabRobot's exchanges, played by a scripted device on a pty ---- */

static struct {
    int master, slave;
    char line[256];
    size_t len;
    const keyence_plr_exchange_t *script;
    size_t n, at;
} plc = {.master = -1, .slave = -1};

static void dev_line(void)
{
    plc.line[plc.len] = '\0';
    if (plc.at >= plc.n) {
        fail_msg("device: '%s' after the end of the script", plc.line);
        return;
    }
    const keyence_plr_exchange_t *x = &plc.script[plc.at++];
    if (strcmp(plc.line, x->command) != 0)
        fail_msg("device: got '%s', the recording (%s) has '%s'", plc.line, x->source, x->command);
    if (x->reply[0])
        assert_int_equal(write(plc.master, x->reply, strlen(x->reply)), (ssize_t)strlen(x->reply));
}

static void dev_poll(void)
{
    char buf[128];
    ssize_t n;
    while (plc.master >= 0 && (n = read(plc.master, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\r') {
                dev_line();
                plc.len = 0;
            } else if (plc.len < sizeof plc.line - 1) {
                plc.line[plc.len++] = buf[i];
            }
        }
}

static void test_plr_replay(void **state)
{
    (void)state;
    assert_int_equal(openpty(&plc.master, &plc.slave, NULL, NULL, NULL), 0);
    struct termios t;
    tcgetattr(plc.slave, &t);
    cfmakeraw(&t);
    tcsetattr(plc.slave, TCSANOW, &t);
    fcntl(plc.master, F_SETFL, fcntl(plc.master, F_GETFL) | O_NONBLOCK);
    plc.script = keyence_plr_script;
    plc.n = sizeof keyence_plr_script / sizeof keyence_plr_script[0];
    h_drv_set_pump(dev_poll);
    state_dev = LAB_INST_OFFLINE;
    dev = make("plr", ttyname(plc.slave), "0", "300");
    wait_state(&state_dev, LAB_INST_IDLE); /* RMOTOR -> MOTORON */
    /* LON -> ABC123 */
    assert_int_equal(h_drv_do(dev, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "ABC123");
    /* LON -> NG: the reader is off */
    assert_int_equal(h_drv_do(dev, "scan", NULL), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "NG");
    /* LON -> ERR99 */
    assert_int_equal(h_drv_do(dev, "scan", NULL), LAB_EDEVICE);
    assert_string_equal(h_drv_error()->device_code, "ERR99");
    /* the SR manual's form: OK,LON then the data */
    assert_int_equal(h_drv_do(dev, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "ABC123");
    /* silence to LON, LOFF -> OK,LOFF, ERROR: no read */
    assert_int_equal(h_drv_do(dev, "scan", NULL), LAB_OK);
    assert_string_equal(scanned(), "null");
    /* nothing to LON nor LOFF: a timeout; the data that comes late is no barcode and no
     * answer to the handshake that follows */
    assert_int_equal(h_drv_do(dev, "scan", NULL), LAB_ETIMEDOUT);
    assert_non_null(strstr(h_drv_error()->text, "LOFF"));
    wait_state(&state_dev, LAB_INST_IDLE); /* after a handshake that took no barcode */
    assert_int_equal(h_drv_do(dev, "status", NULL), LAB_OK);
    assert_int_equal(h_drv_num(h_drv_result(), "motor_on"), 1);
    assert_int_equal(plc.at, plc.n);
    h_drv_close(dev);
    dev = NULL;
    h_drv_set_pump(NULL);
    close(plc.master);
    close(plc.slave);
    plc.master = plc.slave = -1;
}

static void test_polling(void **state)
{
    (void)state;
    h_drv_close(bc1);
    bc1 = NULL;
    state1 = LAB_INST_OFFLINE;
    bc1 = make("bc1", port_bc1, "0.05", "300");
    wait_state(&state1, LAB_INST_IDLE);
    long long end = h_now_ms() + 20000;
    while (telemetry < 3 && h_now_ms() < end)
        h_drv_spin();
    assert_true(telemetry >= 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_scan),     cmocka_unit_test(test_world),
        cmocka_unit_test(test_labels),           cmocka_unit_test(test_sr_mode),
        cmocka_unit_test(test_fast_clock),       cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_motor_fault),      cmocka_unit_test(test_fault_error),
        cmocka_unit_test(test_fault_garbage),    cmocka_unit_test(test_fault_timeout),
        cmocka_unit_test(test_fault_disconnect), cmocka_unit_test(test_plr_replay),
        cmocka_unit_test(test_polling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
