/* Conformance of modbus-temperature (map omega-cn7500) to the Modbus RTU exchanges recorded on a
 * real Omega CN7500 (tests/fixtures/cn7500_minimalmodbus.h: pyhys/minimalmodbus,
 * tests/test_omegacn7500.py, commit 696b61c73c5655d0efc12bcb39c22da9e41a74a8). The driver runs
 * in this process on a real pty (rtu:/dev/pts/N); the test plays the instrument on the pty's
 * master: every frame the driver writes must be, byte for byte, the request recorded for that
 * operation (its probe and status read PV as get_pv(), the set point as get_setpoint(), the run
 * bit as is_running() with function 02; set_temperature is set_setpoint() with function 16; run
 * and stop are run() and stop()), and the recorded response is what it gets back. The results
 * must be the values minimalmodbus' tests expect. Output 1 (0x1012, one decimal, omegacn7500.py
 * get_output1) has no recorded exchange: its request is checked against the frame the module's
 * read_register(0x1012, 1) makes, answered with a frame of this test's. */
#include "drivers/driver.h"
#include "tests/fixtures/cn7500_minimalmodbus.h"
#include "tests/harness/harness.h"
#include "tests/harness/harness_drv.h"

#include <errno.h>
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

/* ---- the instrument on the pty's master: a script of exchanges, answered in order ---- */

typedef struct exch {
    unsigned char req[32], rsp[32];
    size_t req_len, rsp_len;
    const char *what;
} exch_t;

static struct dev {
    int master, slave;
    char name[64];
    exch_t script[16];
    size_t n, at;
    unsigned char rx[256];
    size_t rx_len;
    char mismatch[512]; /* the first frame that was not the one expected */
} dev;

static void hex(char *out, size_t cap, const unsigned char *p, size_t n)
{
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && k + 4 < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%02x ", p[i]);
}

static void expect_rec(const cn7500_rec_t *r)
{
    assert_non_null(r);
    exch_t *e = &dev.script[dev.n++];
    memcpy(e->req, r->req, r->req_len);
    memcpy(e->rsp, r->rsp, r->rsp_len);
    e->req_len = r->req_len;
    e->rsp_len = r->rsp_len;
    e->what = r->method;
}

/* Output 1: the request minimalmodbus' read_register(0x1012, 1) makes (function 03, one
 * register), answered with the word given. */
static void expect_output1(int unit, unsigned word)
{
    exch_t *e = &dev.script[dev.n++];
    unsigned char q[] = {(unsigned char)unit, 0x03, 0x10, 0x12, 0x00, 0x01};
    unsigned char a[] = {(unsigned char)unit, 0x03, 0x02, (unsigned char)(word >> 8),
                         (unsigned char)word};
    memcpy(e->req, q, sizeof q);
    unsigned c = cn7500_crc16(q, sizeof q);
    e->req[6] = (unsigned char)c;
    e->req[7] = (unsigned char)(c >> 8);
    e->req_len = 8;
    memcpy(e->rsp, a, sizeof a);
    c = cn7500_crc16(a, sizeof a);
    e->rsp[5] = (unsigned char)c;
    e->rsp[6] = (unsigned char)(c >> 8);
    e->rsp_len = 7;
    e->what = "get_output1";
}

static void dev_pump(void)
{
    ssize_t n = read(dev.master, dev.rx + dev.rx_len, sizeof dev.rx - dev.rx_len);
    if (n > 0)
        dev.rx_len += (size_t)n;
    if (!dev.rx_len || dev.mismatch[0])
        return;
    if (dev.at == dev.n) {
        char h[200];
        hex(h, sizeof h, dev.rx, dev.rx_len);
        snprintf(dev.mismatch, sizeof dev.mismatch, "a frame after the script ended: %s", h);
        return;
    }
    exch_t *e = &dev.script[dev.at];
    size_t k = dev.rx_len < e->req_len ? dev.rx_len : e->req_len;
    if (memcmp(dev.rx, e->req, k) != 0 || dev.rx_len > e->req_len) {
        char got[200], want[200];
        hex(got, sizeof got, dev.rx, dev.rx_len);
        hex(want, sizeof want, e->req, e->req_len);
        snprintf(dev.mismatch, sizeof dev.mismatch, "%s: sent %s, recorded request %s", e->what,
                 got, want);
        return;
    }
    if (dev.rx_len < e->req_len)
        return; /* the rest of the frame is on its way */
    dev.rx_len = 0;
    dev.at++;
    assert_int_equal(write(dev.master, e->rsp, e->rsp_len), (ssize_t)e->rsp_len);
}

static bool script_done(void *arg)
{
    (void)arg;
    return dev.at == dev.n || dev.mismatch[0];
}

static int setup(void **state)
{
    (void)state;
    if (openpty(&dev.master, &dev.slave, dev.name, NULL, NULL) < 0)
        return -1;
    struct termios tio;
    tcgetattr(dev.slave, &tio);
    cfmakeraw(&tio);
    tcsetattr(dev.slave, TCSANOW, &tio);
    fcntl(dev.master, F_SETFL, fcntl(dev.master, F_GETFL) | O_NONBLOCK);
    int rc = h_drv_init(1);
    h_drv_set_pump(dev_pump); /* after init, which forgets any */
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    h_drv_set_pump(NULL);
    h_drv_fini();
    close(dev.master);
    close(dev.slave);
    return 0;
}

static void script_reset(void)
{
    dev.n = dev.at = dev.rx_len = 0;
    dev.mismatch[0] = '\0';
}

static void script_check(void)
{
    assert_true(h_drv_run_until(script_done, NULL, 5000));
    if (dev.mismatch[0])
        fail_msg("%s", dev.mismatch);
}

static lab_driver_t *cur; /* closed by close_cur when a test ends early */

static int close_cur(void **state)
{
    (void)state;
    h_drv_close(cur);
    cur = NULL;
    return 0;
}

static lab_driver_t *open_unit(const char *unit)
{
    static char uri[80];
    snprintf(uri, sizeof uri, "rtu:%s", dev.name);
    lab_drv_kv_t kv[] = {{"driver", "modbus-temperature", 2}, {"modbus", uri, 3},
                         {"map", "omega-cn7500", 4},          {"unit", unit, 5},
                         {"timeout_ms", "1000", 6},           {"poll_s", "0", 7}};
    cur = h_drv_open("heat1", kv, sizeof kv / sizeof kv[0]);
    return cur;
}

/* One unit through every operation the driver makes, each against its recorded exchange. */
static void run_unit(int unit, double pv)
{
    char u[8];
    snprintf(u, sizeof u, "%d", unit);
    script_reset();
    expect_rec(cn7500_rec_find(unit, "get_pv")); /* the probe once the line is open */
    lab_driver_t *d = open_unit(u);
    h_drv_wait_state(d, LAB_INST_IDLE);
    script_check();

    /* status: PV, SV, the run bit (function 02), output 1 */
    script_reset();
    expect_rec(cn7500_rec_find(unit, "get_pv"));
    expect_rec(cn7500_rec_find(unit, "get_setpoint"));
    expect_rec(cn7500_rec_find(unit, "is_running"));
    expect_output1(unit, 0x0159); /* 34.5 % */
    lab_drv_error_t e;
    json_t *r = h_drv_call(d, "status", NULL, &e);
    script_check();
    if (!r)
        fail_msg("status: %s", e.text);
    assert_true(fabs(h_drv_num(r, "temperature_c") - pv) < 1e-9);
    assert_true(fabs(h_drv_num(r, "setpoint_c") - 100.0) < 1e-9);
    assert_int_equal((int)h_drv_num(r, "running"), 0); /* is_running() is False */
    assert_true(fabs(h_drv_num(r, "output1_pct") - 34.5) < 1e-9);
    json_decref(r);

    /* set_temperature 100: set_setpoint(100), function 16 */
    script_reset();
    expect_rec(cn7500_rec_find(unit, "set_setpoint"));
    r = h_drv_call(d, "set_temperature", "{\"temperature_c\": 100}", &e);
    script_check();
    if (!r)
        fail_msg("set_temperature: %s", e.text);
    assert_true(h_drv_num(r, "setpoint_c") == 100.0);
    json_decref(r);

    /* run and stop: the bit 0x0814 written with function 05 */
    script_reset();
    expect_rec(cn7500_rec_find(unit, "run"));
    r = h_drv_call(d, "run", NULL, &e);
    script_check();
    if (!r)
        fail_msg("run: %s", e.text);
    assert_int_equal((int)h_drv_num(r, "running"), 1);
    json_decref(r);
    script_reset();
    expect_rec(cn7500_rec_find(unit, "stop"));
    r = h_drv_call(d, "stop", NULL, &e);
    script_check();
    if (!r)
        fail_msg("stop: %s", e.text);
    assert_int_equal((int)h_drv_num(r, "running"), 0);
    json_decref(r);
    close_cur(NULL);
}

static void test_unit1(void **state)
{
    (void)state;
    run_unit(1, 24.6); /* testReadPv1, TestDummyCommunication_Slave1 */
}

static void test_unit10(void **state)
{
    (void)state;
    run_unit(10, 25.9); /* testReadPv1, TestDummyCommunication_Slave10 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_unit1, close_cur),
        cmocka_unit_test_teardown(test_unit10, close_cur),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
