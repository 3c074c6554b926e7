/* Modbus register maps against recorded exchanges: Omega CN7500 from pyhys/minimalmodbus
 * tests/test_omegacn7500.py (RESPONSES), Eurotherm 2000-series scaled words from
 * tests/test_eurotherm3500.py, IEEE float words from published manual examples. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/modbus_maps.h"

static void test_cn7500_recorded(void **state)
{
    const modbus_reg_t *pv = modbus_map_find(MODBUS_DEV_CN7500, "pv");
    const modbus_reg_t *sv = modbus_map_find(MODBUS_DEV_CN7500, "sv");
    assert_non_null(pv);
    assert_int_equal(pv->addr, 0x1000);
    double v;
    /* get_pv(), slave 1: request 01 03 10 00 00 01, response 01 03 02 00 F6 -> 24.6. */
    assert_int_equal(modbus_reg_decode(pv, (uint16_t[]){0x00F6}, 1, 0, 0, &v), LAB_OK);
    assert_true(fabs(v - 24.6) < 1e-9);
    /* get_pv(), slave 10: response 0A 03 02 01 03 -> 25.9. */
    assert_int_equal(modbus_reg_decode(pv, (uint16_t[]){0x0103}, 1, 0, 0, &v), LAB_OK);
    assert_true(fabs(v - 25.9) < 1e-9);
    /* set_setpoint(100): 01 10 10 01 00 01 02 03 E8. */
    modbus_access_t a;
    assert_int_equal(modbus_reg_encode(sv, 100.0, 0, 0, &a), LAB_OK);
    assert_int_equal(a.addr, 0x1001);
    assert_int_equal(a.nwords, 1);
    assert_int_equal(a.w[0], 0x03E8);
    /* set_control_mode(3): 01 10 10 05 00 01 02 00 03; get_control_mode() 00 00 -> PID. */
    const modbus_reg_t *cm = modbus_map_at(MODBUS_DEV_CN7500, MODBUS_HOLDING, 0x1005);
    assert_non_null(cm);
    assert_int_equal(modbus_reg_encode(cm, 3, 0, 0, &a), LAB_OK);
    assert_int_equal(a.w[0], 3);
    assert_string_equal(cm->enum_names[0], "pid");
    assert_int_equal(modbus_reg_encode(cm, 4, 0, 0, &a), LAB_ERANGE);
    /* run(): 01 05 08 14 FF 00; stop(): 01 05 08 14 00 00; is_running(): 01 02 08 14 00 01. */
    const modbus_reg_t *run = modbus_map_find(MODBUS_DEV_CN7500, "run");
    assert_int_equal(run->space, MODBUS_DISCRETE);
    assert_int_equal(modbus_reg_read_function(run), 2);
    assert_int_equal(modbus_reg_write_function(run), 5);
    assert_int_equal(modbus_reg_write_function(sv), 16);
    assert_int_equal(modbus_reg_encode(run, 1, 0, 0, &a), LAB_OK);
    assert_int_equal(a.addr, 0x0814);
    assert_int_equal(a.w[0], 0xFF00);
    assert_int_equal(modbus_reg_encode(run, 0, 0, 0, &a), LAB_OK);
    assert_int_equal(a.w[0], 0x0000);
    /* get_start_pattern_no(): 01 03 10 30 00 01 -> 00 02. */
    const modbus_reg_t *sp = modbus_map_at(MODBUS_DEV_CN7500, MODBUS_HOLDING, 0x1030);
    assert_int_equal(modbus_reg_decode(sp, (uint16_t[]){0x0002}, 1, 0, 0, &v), LAB_OK);
    assert_true(v == 2);
    /* set_pattern_step_setpoint(0, 3, 333.3): 01 10 20 03 00 01 02 0D 05;
     * set_pattern_step_time(0, 3, 45): 01 10 20 83 00 01 02 00 2D. */
    uint16_t addr, w;
    assert_int_equal(cn7500_pattern_setpoint_addr(0, 3, &addr), LAB_OK);
    assert_int_equal(addr, 0x2003);
    assert_int_equal(modbus_scaled_to_word(333.3, 1, 1, &w), LAB_OK);
    assert_int_equal(w, 0x0D05);
    assert_int_equal(cn7500_pattern_time_addr(0, 3, &addr), LAB_OK);
    assert_int_equal(addr, 0x2083);
    assert_int_equal(cn7500_pattern_setpoint_addr(1, 0, &addr), LAB_OK);
    assert_int_equal(addr, 8200);
    assert_int_equal(cn7500_pattern_setpoint_addr(8, 0, &addr), LAB_ERANGE);
    /* No 32-bit region on the CN7500. */
    assert_int_equal(modbus_reg_encode(pv, 1.0, 0, 1, &a), LAB_EUNKNOWN);
}

static void test_eurotherm_scaled(void **state)
{
    /* test_eurotherm3500.py: get_sp_loop1() reads address 5 -> 00 B8 = 18.4 (1 dp);
     * get_sprate_loop1() reads 35 -> 01 2C = 30.0; set_sp_loop1(5) writes 00 32 at 24. */
    const modbus_reg_t *wsp = modbus_map_find(MODBUS_DEV_EUROTHERM3200, "working_setpoint");
    const modbus_reg_t *rate = modbus_map_find(MODBUS_DEV_EUROTHERM3200, "setpoint_rate_limit");
    const modbus_reg_t *sp1 = modbus_map_find(MODBUS_DEV_EUROTHERM3200, "setpoint1");
    double v;
    assert_int_equal(wsp->addr, 5);
    assert_int_equal(modbus_reg_decode(wsp, (uint16_t[]){0x00B8}, 1, 1, 0, &v), LAB_OK);
    assert_true(fabs(v - 18.4) < 1e-9);
    assert_int_equal(rate->addr, 35);
    assert_int_equal(modbus_reg_decode(rate, (uint16_t[]){0x012C}, 1, 1, 0, &v), LAB_OK);
    assert_true(fabs(v - 30.0) < 1e-9);
    modbus_access_t a;
    assert_int_equal(modbus_reg_encode(sp1, 5.0, 1, 0, &a), LAB_OK);
    assert_int_equal(a.addr, 24);
    assert_int_equal(a.w[0], 0x0032);
    /* Negative values are two's complement; out-of-range values are refused, never wrapped. */
    assert_int_equal(modbus_reg_encode(sp1, -12.5, 1, 0, &a), LAB_OK);
    assert_int_equal(a.w[0], 0xFF83);
    assert_int_equal(modbus_reg_decode(sp1, a.w, 1, 1, 0, &v), LAB_OK);
    assert_true(fabs(v + 12.5) < 1e-9);
    assert_int_equal(modbus_reg_encode(sp1, 4000.0, 1, 0, &a), LAB_ERANGE);
    assert_int_equal(modbus_reg_encode(sp1, NAN, 1, 0, &a), LAB_ERANGE);
    assert_int_equal(modbus_reg_decode(sp1, a.w, 1, 7, 0, &v), LAB_ERANGE);
}

static void test_eurotherm_float(void **state)
{
    /* Float region: 0x8000 + 2 * parameter, high word first. Words from published examples:
     * 550.0 = 0x4409 0x8000 (JUMO 701061 interface manual), 1.001 = 0x3F80 0x20C5 (PREVAC MG15
     * manual, table 6.11). */
    const modbus_reg_t *tsp = modbus_map_find(MODBUS_DEV_EUROTHERM3200, "target_setpoint");
    modbus_access_t a;
    assert_int_equal(modbus_reg_encode(tsp, 550.0, 0, 1, &a), LAB_OK);
    assert_int_equal(a.addr, 0x8004);
    assert_int_equal(a.nwords, 2);
    assert_int_equal(a.w[0], 0x4409);
    assert_int_equal(a.w[1], 0x8000);
    double v;
    assert_int_equal(modbus_reg_decode(tsp, (uint16_t[]){0x3F80, 0x20C5}, 2, 0, 1, &v), LAB_OK);
    assert_true(fabs(v - 1.001) < 1e-6);
    assert_int_equal(modbus_reg_decode(tsp, (uint16_t[]){0x3F80}, 1, 0, 1, &v), LAB_ESYNTAX);
    /* NaN in the registers is not a reading. */
    assert_int_equal(modbus_reg_decode(tsp, (uint16_t[]){0x7FC0, 0x0000}, 2, 0, 1, &v), LAB_ERANGE);
    /* Segment dwell: 32-bit milliseconds in the same region (write_time: round(val * 1000)). */
    const modbus_reg_t *dw = modbus_map_find(MODBUS_DEV_EUROTHERM3200, "segment1_dwell");
    assert_int_equal(modbus_reg_encode(dw, 90.5, 0, 0, &a), LAB_OK);
    assert_int_equal(a.addr, 0x8000 + 2 * 1280);
    assert_int_equal(a.w[0], 0x0001);
    assert_int_equal(a.w[1], 0x6184);
    assert_int_equal(modbus_reg_decode(dw, a.w, 2, 0, 0, &v), LAB_OK);
    assert_true(fabs(v - 90.5) < 1e-9);
    uint16_t addr;
    assert_int_equal(eurotherm_float_addr(0x4000, &addr), LAB_ERANGE);
}

static void test_tables_consistent(void **state)
{
    /* Every name and every (space, address) is unique within a device. */
    modbus_device_t devs[] = {MODBUS_DEV_CN7500, MODBUS_DEV_EUROTHERM3200};
    for (size_t d = 0; d < 2; d++) {
        size_t n;
        const modbus_reg_t *t = modbus_map_table(devs[d], &n);
        assert_true(n > 5);
        for (size_t i = 0; i < n; i++) {
            assert_ptr_equal(modbus_map_find(devs[d], t[i].name), &t[i]);
            assert_ptr_equal(modbus_map_at(devs[d], t[i].space, t[i].addr), &t[i]);
        }
    }
    assert_null(modbus_map_find(MODBUS_DEV_CN7500, "nope"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cn7500_recorded),
        cmocka_unit_test(test_eurotherm_scaled),
        cmocka_unit_test(test_eurotherm_float),
        cmocka_unit_test(test_tables_consistent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
