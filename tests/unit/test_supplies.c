/* A liquid handler's consumables keys (drivers/supplies.c): the troughs' syntax at its limits, and
 * lab_driver_check refusing each bad key with its line, and every consumables key on an
 * instrument that is not a liquid handler. */
#include "drivers/supplies.h"
#include "core/err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static void check_err(void *ctx, int line, const char *key, const char *reason)
{
    char *buf = ctx;
    size_t n = strlen(buf);
    snprintf(buf + n, 4096 - n, "%d %s: %s\n", line, key, reason);
}

static int parse(const char *s, lab_supply_trough_t *t, char *err)
{
    return lab_supply_troughs_parse(s, t, LAB_SUPPLY_TROUGHS_MAX, err, 256);
}

static void test_troughs_syntax(void **state)
{
    (void)state;
    lab_supply_trough_t t[LAB_SUPPLY_TROUGHS_MAX];
    char err[256] = "";
    assert_int_equal(parse("substrate: 25000, buffer:50000", t, err), 2);
    assert_string_equal(t[0].name, "substrate");
    assert_true(t[0].ul == 25000);
    assert_string_equal(t[1].name, "buffer");
    assert_true(t[1].ul == 50000);
    assert_int_equal(parse("  wash buffer :  0.5  ", t, err), 1);
    assert_string_equal(t[0].name, "wash buffer");
    assert_true(t[0].ul == 0.5);
    assert_int_equal(parse("x: 1e3", t, err), 1);
    assert_true(t[0].ul == 1000);

    /* the largest volume, and just past it */
    assert_int_equal(parse("x: 10000000", t, err), 1);
    assert_int_equal(parse("x: 10000000.5", t, err), LAB_EINVAL);
    assert_string_equal(err, "trough x: 10000000.5 µL is out of range (0, 10000000]");
    assert_int_equal(parse("x: 0", t, err), LAB_EINVAL);
    assert_int_equal(parse("x: -5", t, err), LAB_EINVAL);
    assert_int_equal(parse("x: nan", t, err), LAB_EINVAL);
    assert_int_equal(parse("x: inf", t, err), LAB_EINVAL);
    assert_int_equal(parse("x: 12 ml", t, err), LAB_EINVAL);
    assert_string_equal(err, "trough x: '12 ml' is not a volume in µL");

    /* names: 31 characters (multi-byte ones too), not 32 */
    char name[200];
    snprintf(name, sizeof name, "%s: 5", "abcdefghijklmnopqrstuvwxyz01234");
    assert_int_equal(parse(name, t, err), 1);
    snprintf(name, sizeof name, "%s: 5", "abcdefghijklmnopqrstuvwxyz012345");
    assert_int_equal(parse(name, t, err), LAB_EINVAL);
    assert_string_equal(err, "trough 1: the name is not UTF-8 text of at most 31 characters");
    snprintf(name, sizeof name, "%s: 5",
             "ééééééééééééééééééééééééééééééé"); /* 31 characters, 62 bytes */
    assert_int_equal(parse(name, t, err), 1);
    assert_int_equal(parse("\xff\xfe: 5", t, err), LAB_EINVAL);

    /* 16 troughs, not 17 */
    char many[512] = "";
    for (int i = 0; i < 16; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%st%d: 1", i ? ", " : "", i);
    assert_int_equal(parse(many, t, err), 16);
    strcat(many, ", t16: 1");
    assert_int_equal(parse(many, t, err), LAB_EINVAL);
    assert_string_equal(err, "more than 16 troughs");

    /* shapes that are not NAME: µL */
    assert_int_equal(parse("", t, err), LAB_EINVAL);
    assert_int_equal(parse("substrate", t, err), LAB_EINVAL);
    assert_string_equal(err, "trough 1: expected NAME: µL, e.g. substrate: 25000");
    assert_int_equal(parse(": 5", t, err), LAB_EINVAL);
    assert_int_equal(parse("a: 5,", t, err), LAB_EINVAL);
    assert_string_equal(err, "trough 2: expected NAME: µL, e.g. substrate: 25000");
    assert_int_equal(parse("a:", t, err), LAB_EINVAL);
    assert_int_equal(parse("a: 5, a: 6", t, err), LAB_EINVAL);
    assert_string_equal(err, "trough a is given twice");
}

static void test_check_keys(void **state)
{
    (void)state;
    char buf[4096] = "";
    lab_drv_kv_t ok[] = {{"driver", "hamilton-star", 2},
                         {"port", "/dev/null", 3},
                         {"tip_racks", "1", 4},
                         {"tips_per_rack", "96", 5},
                         {"troughs", "substrate: 25000, buffer: 50000", 6}};
    lab_drv_conf_t c = {.id = "hnd", .line = 1, .kv = ok, .n = 5, .time_scale = 1};
    assert_int_equal(lab_driver_check(&c, check_err, buf), 0);
    assert_true(lab_supply_declared(&c));

    lab_drv_kv_t bad[] = {{"driver", "hamilton-star", 2},
                          {"port", "/dev/null", 3},
                          {"tip_racks", "101", 4},
                          {"tips_per_rack", "0", 5},
                          {"troughs", "substrate 25000", 6}};
    c.kv = bad;
    assert_int_equal(lab_driver_check(&c, check_err, buf), 3);
    assert_non_null(strstr(buf, "4 tip_racks: 101 is out of range [0, 100]"));
    assert_non_null(strstr(buf, "5 tips_per_rack: 0 is out of range [1, 1536]"));
    assert_non_null(strstr(buf, "6 troughs: trough 1: expected NAME: µL"));

    /* the STAR's one rack position: one rack, of its tip_columns columns of 8 */
    buf[0] = '\0';
    lab_drv_kv_t star[] = {{"driver", "hamilton-star", 2},
                           {"port", "/dev/null", 3},
                           {"tip_racks", "2", 4},
                           {"tip_columns", "3", 5},
                           {"tips_per_rack", "24", 6}};
    c.kv = star;
    assert_int_equal(lab_driver_check(&c, check_err, buf), 1);
    assert_non_null(strstr(buf, "4 tip_racks: the STAR driver knows one tip rack position"));
    buf[0] = '\0';
    star[2].value = "1";
    assert_int_equal(lab_driver_check(&c, check_err, buf), 0);
    star[4].value = "96";
    assert_int_equal(lab_driver_check(&c, check_err, buf), 1);
    assert_non_null(strstr(buf, "6 tips_per_rack: tips_per_rack = 96, but the rack has 3 columns "
                                "of 8 (tip_columns): 24 tips"));

    buf[0] = '\0';
    lab_drv_kv_t alone[] = {
        {"driver", "hamilton-star", 2}, {"port", "/dev/null", 3}, {"tips_per_rack", "96", 7}};
    c.kv = alone;
    c.n = 3;
    assert_int_equal(lab_driver_check(&c, check_err, buf), 1);
    assert_non_null(strstr(buf, "7 tips_per_rack: needs tip_racks"));
    assert_false(lab_supply_declared(&c));

    /* on an instrument that is not a liquid handler, each key is refused on its line */
    buf[0] = '\0';
    lab_drv_kv_t mover[] = {
        {"driver", "manual-mover", 2}, {"tip_racks", "2", 3}, {"troughs", "a: 5", 4}};
    lab_drv_conf_t m = {.id = "arm", .line = 1, .kv = mover, .n = 3, .time_scale = 1};
    assert_int_equal(lab_driver_check(&m, check_err, buf), 2);
    assert_non_null(strstr(buf, "3 tip_racks: only a liquid handler has tips and troughs; driver "
                                "manual-mover is a mover"));
    assert_non_null(strstr(buf, "4 troughs: only a liquid handler"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_troughs_syntax),
        cmocka_unit_test(test_check_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
