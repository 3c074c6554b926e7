/* Conformance of the CN7500 register map (protocols/modbus_maps.c) to the Modbus RTU exchanges
 * recorded on a real Omega CN7500 (tests/fixtures/cn7500_minimalmodbus.h: pyhys/minimalmodbus,
 * tests/test_omegacn7500.py, commit 696b61c73c5655d0efc12bcb39c22da9e41a74a8). For each request
 * the driver makes, the function code, address and data the map gives must be those in the
 * recorded request; every recorded response must decode through the map to the value
 * minimalmodbus' tests expect (test names in the comments). The frames' CRCs are checked first,
 * which also checks the tests' own CRC used where the recording has no frame. The bytes on the
 * wire, made by libmodbus under the driver, are compared in test_conf_cn7500_driver. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/modbus_maps.h"
#include "tests/fixtures/cn7500_minimalmodbus.h"

static const unsigned char *u8(const char *s)
{
    return (const unsigned char *)s;
}

static unsigned be16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static const cn7500_rec_t *rec(int unit, const char *method)
{
    const cn7500_rec_t *r = cn7500_rec_find(unit, method);
    assert_non_null(r);
    return r;
}

static void test_frames_intact(void **state)
{
    (void)state;
    assert_int_equal(CN7500_RECORDED_N, 102);
    for (size_t i = 0; i < CN7500_RECORDED_N; i++) {
        const cn7500_rec_t *r = &cn7500_recorded[i];
        const char *f[2] = {r->req, r->rsp};
        size_t n[2] = {r->req_len, r->rsp_len};
        for (int k = 0; k < 2; k++) {
            unsigned c = cn7500_crc16(u8(f[k]), n[k] - 2);
            assert_int_equal(u8(f[k])[n[k] - 2], c & 0xff);
            assert_int_equal(u8(f[k])[n[k] - 1], c >> 8);
            assert_int_equal(u8(f[k])[0], r->unit);
        }
    }
}

/* A read the driver makes: function, address and one register or bit, as recorded; the recorded
 * answer decoded through the map. */
static double read_as_recorded(const modbus_reg_t *reg, const cn7500_rec_t *r)
{
    const unsigned char *q = u8(r->req), *a = u8(r->rsp);
    assert_int_equal(r->req_len, 8);
    assert_int_equal(q[1], modbus_reg_read_function(reg));
    assert_int_equal(be16(q + 2), reg->addr);
    assert_int_equal(be16(q + 4), 1);
    assert_int_equal(a[1], q[1]);
    double v;
    if (q[1] == 2) { /* one bit, in a byte of its own */
        assert_int_equal(a[2], 1);
        uint16_t w = a[3] & 1;
        assert_int_equal(modbus_reg_decode(reg, &w, 1, 0, 0, &v), LAB_OK);
        return v;
    }
    assert_int_equal(a[2], 2);
    uint16_t w = (uint16_t)be16(a + 3);
    assert_int_equal(modbus_reg_decode(reg, &w, 1, 0, 0, &v), LAB_OK);
    return v;
}

/* A write the driver makes: function 16 (one register) or 05, address and data as recorded, and
 * the recorded answer the echo the function defines. */
static void write_as_recorded(const modbus_reg_t *reg, double value, const cn7500_rec_t *r)
{
    const unsigned char *q = u8(r->req), *a = u8(r->rsp);
    modbus_access_t acc;
    assert_int_equal(modbus_reg_encode(reg, value, 0, 0, &acc), LAB_OK);
    assert_int_equal(q[1], modbus_reg_write_function(reg));
    assert_int_equal(be16(q + 2), acc.addr);
    if (q[1] == 16) {
        assert_int_equal(r->req_len, 11);
        assert_int_equal(be16(q + 4), 1); /* registers */
        assert_int_equal(q[6], 2);        /* bytes */
        assert_int_equal(be16(q + 7), acc.w[0]);
        assert_int_equal(r->rsp_len, 8);
        assert_memory_equal(a + 1, q + 1, 5); /* function, address, count */
    } else {
        assert_int_equal(q[1], 5);
        assert_int_equal(r->req_len, 8);
        assert_int_equal(be16(q + 4), acc.w[0]);
        assert_memory_equal(a, q, r->req_len); /* the echo */
    }
}

static void test_driver_operations(void **state)
{
    (void)state;
    const modbus_reg_t *pv = modbus_map_find(MODBUS_DEV_CN7500, "pv");
    const modbus_reg_t *sv = modbus_map_find(MODBUS_DEV_CN7500, "sv");
    const modbus_reg_t *run = modbus_map_find(MODBUS_DEV_CN7500, "run");
    const int units[2] = {1, 10};
    const double pvs[2] = {24.6, 25.9}; /* testReadPv1 of Slave1 and Slave10 */
    for (int i = 0; i < 2; i++) {
        int u = units[i];
        assert_true(fabs(read_as_recorded(pv, rec(u, "get_pv")) - pvs[i]) < 1e-9);
        assert_true(fabs(read_as_recorded(sv, rec(u, "get_setpoint")) - 100) < 1e-9);
        assert_true(read_as_recorded(run, rec(u, "is_running")) == 0); /* testIsRunning */
        write_as_recorded(sv, 100, rec(u, "set_setpoint"));            /* testSetSetpoint */
        write_as_recorded(run, 1, rec(u, "run"));                      /* testRun */
        write_as_recorded(run, 0, rec(u, "stop"));                     /* testStop */
    }
}

/* The rest of the map the recording covers. */
static void test_map_registers(void **state)
{
    (void)state;
    const modbus_reg_t *cm = modbus_map_find(MODBUS_DEV_CN7500, "control_method");
    const modbus_reg_t *sp = modbus_map_find(MODBUS_DEV_CN7500, "start_pattern");
    for (int u = 1; u <= 10; u += 9) {
        double v = read_as_recorded(cm, rec(u, "get_control_mode"));
        assert_string_equal(cm->enum_names[(int)v], "pid"); /* testGetControlMode */
        write_as_recorded(cm, 3, rec(u, "set_control_mode"));
        assert_true(read_as_recorded(sp, rec(u, "get_start_pattern_no")) == 2);
        write_as_recorded(sp, 2, rec(u, "set_start_pattern_no"));
        /* pattern 0 step 3: 333.3 (one decimal) at 0x2003, 45 at 0x2083 */
        const cn7500_rec_t *s = rec(u, "set_pattern_step_setpoint"),
                           *t = rec(u, "set_pattern_step_time");
        uint16_t addr, w;
        assert_int_equal(cn7500_pattern_setpoint_addr(0, 3, &addr), LAB_OK);
        assert_int_equal(be16(u8(s->req) + 2), addr);
        assert_int_equal(modbus_scaled_to_word(333.3, 1, 1, &w), LAB_OK);
        assert_int_equal(be16(u8(s->req) + 7), w);
        assert_int_equal(cn7500_pattern_time_addr(0, 3, &addr), LAB_OK);
        assert_int_equal(be16(u8(t->req) + 2), addr);
        assert_int_equal(be16(u8(t->req) + 7), 45);
    }
    /* output 1 and 2: % with one decimal (omegacn7500.py get_output1; test_deltaDTB4824.py) */
    const modbus_reg_t *o1 = modbus_map_find(MODBUS_DEV_CN7500, "output1");
    const modbus_reg_t *o2 = modbus_map_find(MODBUS_DEV_CN7500, "output2");
    assert_int_equal(o1->addr, 0x1012);
    assert_int_equal(o2->addr, 0x1013);
    assert_int_equal(modbus_reg_read_function(o1), 3);
    double v;
    assert_int_equal(modbus_reg_decode(o1, (uint16_t[]){345}, 1, 0, 0, &v), LAB_OK);
    assert_true(fabs(v - 34.5) < 1e-9);
    assert_string_equal(o1->unit, "%");
    assert_int_equal(o2->decimals, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_intact),
        cmocka_unit_test(test_driver_operations),
        cmocka_unit_test(test_map_registers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
