/* Thermo Cytomat codec against the telegrams of PyLabRobot's and open-cytomat's hosts
 * (tests/fixtures/cytomat_plr.h), and at its limits: long, truncated, garbage and non-ASCII
 * input, slot addresses of every site, set points at the edges of their form. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/cytomat.h"
#include "tests/fixtures/cytomat_plr.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_golden_commands(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(cytomat_golden_cmds); i++) {
        const cytomat_golden_cmd_t *g = &cytomat_golden_cmds[i];
        cytomat_cmd_t c;
        char buf[64];
        assert_int_equal(cytomat_cmd(&c, g->type, g->code, g->params), LAB_OK);
        int n = cytomat_encode_cmd(&c, g->crlf, buf, sizeof buf);
        if (n != (int)strlen(g->wire) || memcmp(buf, g->wire, (size_t)n) != 0)
            fail_msg("%s: encoded '%.*s', expected '%s'", g->source, n > 0 ? n : 0, buf, g->wire);
        /* The simulator reads back the same telegram. */
        cytomat_cmd_t back;
        size_t len = strlen(g->wire) - (g->crlf ? 2 : 1);
        assert_int_equal(cytomat_parse_cmd(g->wire, len, &back), LAB_OK);
        assert_string_equal(back.type, g->type);
        assert_string_equal(back.code, g->code);
        assert_string_equal(back.params, g->params);
    }
}

static void test_golden_replies(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(cytomat_golden_replies); i++) {
        const cytomat_golden_reply_t *g = &cytomat_golden_replies[i];
        cytomat_reply_t r;
        assert_int_equal(cytomat_parse_reply(g->line, strlen(g->line), &r), LAB_OK);
        assert_int_equal(r.kind, g->kind);
        if (g->kind == CYTOMAT_REPLY_CHECK) {
            assert_string_equal(r.code, g->code);
            assert_string_equal(r.value, g->value);
        } else {
            assert_int_equal(r.byte, g->byte);
        }
        /* and the simulator writes it the same way, ended by CR */
        char buf[64];
        int n = cytomat_encode_reply(&r, buf, sizeof buf);
        assert_int_equal(n, (int)strlen(g->line) + 1);
        assert_memory_equal(buf, g->line, strlen(g->line));
        assert_int_equal(buf[n - 1], '\r');
    }
}

static void test_overview_bits(void **state)
{
    (void)state;
    cytomat_reply_t r;
    int ov;
    assert_int_equal(cytomat_parse_reply("bs C5", 5, &r), LAB_OK);
    assert_int_equal(cytomat_parse_hex_byte(r.value, &ov), LAB_OK);
    assert_int_equal(!!(ov & CYTOMAT_OV_BUSY), CYTOMAT_GOLDEN_C5_BUSY);
    assert_int_equal(!!(ov & CYTOMAT_OV_WARNING), CYTOMAT_GOLDEN_C5_WARNING);
    assert_int_equal(!!(ov & CYTOMAT_OV_ERROR), CYTOMAT_GOLDEN_C5_ERROR);
    assert_int_equal(!!(ov & CYTOMAT_OV_DOOR_OPEN), CYTOMAT_GOLDEN_C5_DOOR);
    assert_int_equal(!!(ov & CYTOMAT_OV_TRANSFER_OCCUPIED), CYTOMAT_GOLDEN_C5_TRANSFER);
    assert_int_equal(!!(ov & CYTOMAT_OV_HANDLER_OCCUPIED), CYTOMAT_GOLDEN_C5_HANDLER);
    assert_int_equal(cytomat_parse_hex_byte("c5", &ov), LAB_OK);
    assert_int_equal(ov, 0xC5);
    assert_int_equal(cytomat_parse_hex_byte("C", &ov), LAB_ESYNTAX);
    assert_int_equal(cytomat_parse_hex_byte("C55", &ov), LAB_ESYNTAX);
    assert_int_equal(cytomat_parse_hex_byte("G0", &ov), LAB_ESYNTAX);
    assert_int_equal(cytomat_parse_hex_byte("", &ov), LAB_ESYNTAX);
}

static void test_tables(void **state)
{
    (void)state;
    /* PLR errors.py:70-87, constants.py:22-52 */
    assert_string_equal(cytomat_command_error_text(0x01),
                        "Device still busy, new command not accepted");
    assert_string_equal(cytomat_command_error_text(0x31), "Transfer station empty");
    assert_string_equal(cytomat_command_error_text(0x52),
                        "Incorrect password / unauthorized access");
    assert_null(cytomat_command_error_text(0x00));
    assert_null(cytomat_command_error_text(0x13));
    assert_string_equal(cytomat_error_register_text(0x05), "Process timeout");
    assert_string_equal(cytomat_error_register_text(0xFF),
                        "Fatal error occurred during error routine");
    assert_null(cytomat_error_register_text(0x09));
    assert_string_equal(cytomat_warning_register_text(0x09),
                        "Initialization due to open device door");
    assert_null(cytomat_warning_register_text(0x0A));
}

static void test_bad_replies(void **state)
{
    (void)state;
    cytomat_reply_t r;
    static const char *const bad[] = {
        "",   "o",       "ok",   "ok ",    "ok 1",  "ok 1G",     "ok 100",
        "er", "er 0x31", "bsC5", "b s C5", "OK 00", "\x01ok 00", "ok\t00",
    };
    for (size_t i = 0; i < N(bad); i++)
        if (cytomat_parse_reply(bad[i], strlen(bad[i]), &r) != LAB_ESYNTAX)
            fail_msg("'%s' parsed", bad[i]);
    /* non-ASCII: a byte above 0x7e anywhere */
    assert_int_equal(cytomat_parse_reply("ok \xc5\x80", 5, &r), LAB_ESYNTAX);
    assert_int_equal(cytomat_parse_reply("it +37.0 \xb0"
                                         "C",
                                         11, &r),
                     LAB_ESYNTAX);
    /* a NUL inside the line is not a short reply */
    assert_int_equal(cytomat_parse_reply("ok 0\0", 5, &r), LAB_ESYNTAX);
    /* long: a value over CYTOMAT_PARAMS_MAX characters */
    char longv[128];
    memset(longv, '1', sizeof longv);
    memcpy(longv, "sc ", 3);
    assert_int_equal(cytomat_parse_reply(longv, 3 + CYTOMAT_PARAMS_MAX, &r), LAB_OK);
    assert_int_equal(cytomat_parse_reply(longv, 4 + CYTOMAT_PARAMS_MAX, &r), LAB_ESYNTAX);
    assert_int_equal(cytomat_parse_reply(longv, sizeof longv, &r), LAB_ESYNTAX);
    /* spaces around a reply are not part of it */
    assert_int_equal(cytomat_parse_reply(" ok 80 ", 7, &r), LAB_OK);
    assert_int_equal(r.byte, 0x80);
}

static void test_bad_commands(void **state)
{
    (void)state;
    cytomat_cmd_t c;
    char buf[64];
    assert_int_equal(cytomat_cmd(&c, "MV", "ts", "001"), LAB_ESYNTAX);
    assert_int_equal(cytomat_cmd(&c, "mv", "t", "001"), LAB_ESYNTAX);
    assert_int_equal(cytomat_cmd(&c, "mv", "ts", " 001"), LAB_ESYNTAX);
    assert_int_equal(cytomat_cmd(&c, "mv", "ts", "00\r1"), LAB_ESYNTAX);
    assert_int_equal(cytomat_cmd(&c, "mv", "ts", "\xe9"), LAB_ESYNTAX);
    char longp[CYTOMAT_PARAMS_MAX + 2];
    memset(longp, '1', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    assert_int_equal(cytomat_cmd(&c, "mv", "ts", longp), LAB_ESYNTAX);
    longp[CYTOMAT_PARAMS_MAX] = 0;
    assert_int_equal(cytomat_cmd(&c, "mv", "ts", longp), LAB_OK);
    assert_int_equal(cytomat_encode_cmd(&c, true, buf, 10), LAB_ENOSPACE);
    assert_int_equal(cytomat_cmd(&c, "ll", "h+", "005"), LAB_OK);
    assert_int_equal(cytomat_encode_cmd(&c, false, buf, sizeof buf), 10);
    assert_memory_equal(buf, "ll:h+ 005\r", 10);
    static const char *const bad[] = {"",      "ch",       "ch:b",  "chbs",      "ch:bs ",
                                      "CH:BS", "ch:bs\t1", "ch;bs", "mv:ts  030"};
    for (size_t i = 0; i < N(bad); i++)
        if (cytomat_parse_cmd(bad[i], strlen(bad[i]), &c) == LAB_OK)
            fail_msg("'%s' parsed", bad[i]);
}

static cytomat_cassettes_t cassettes(const char *rack_type, const char *rack_types, int n)
{
    cytomat_cassettes_t cs;
    char err[512];
    if (cytomat_cassettes_parse(rack_type, rack_types, n, &cs, err, sizeof err) != LAB_OK)
        fail_msg("%s", err);
    return cs;
}

static void test_slots(void **state)
{
    (void)state;
    char buf[16];
    int c, s;
    /* every site of 3 cassettes of 28 round trips, numbered through the cassettes */
    cytomat_cassettes_t cs = cassettes("cytomat_rack_17mm_28", NULL, 3);
    assert_int_equal(cytomat_cassettes_slots(&cs), 84);
    for (int cass = 1; cass <= 3; cass++)
        for (int slot = 1; slot <= 28; slot++) {
            assert_int_equal(cytomat_slot_param(CYTOMAT_C6000, cass, slot, &cs, buf, sizeof buf),
                             3);
            char want[8];
            snprintf(want, sizeof want, "%03d", (cass - 1) * 28 + slot);
            assert_string_equal(buf, want);
            assert_int_equal(cytomat_slot_parse(CYTOMAT_C6000, buf, &cs, &c, &s), LAB_OK);
            assert_int_equal(c * 100 + s, cass * 100 + slot);
            assert_int_equal(cytomat_slot_param(CYTOMAT_C2C_425, cass, slot, &cs, buf, sizeof buf),
                             5);
            assert_int_equal(cytomat_slot_parse(CYTOMAT_C2C_425, buf, &cs, &c, &s), LAB_OK);
            assert_int_equal(c * 100 + s, cass * 100 + slot);
        }
    assert_int_equal(cytomat_slot_param(CYTOMAT_C2C_425, 2, 5, &cs, buf, sizeof buf), 5);
    assert_string_equal(buf, "01 04");
    assert_int_equal(cytomat_slot_param(CYTOMAT_C6000, 4, 1, &cs, buf, sizeof buf), LAB_ERANGE);
    assert_int_equal(cytomat_slot_param(CYTOMAT_C6000, 1, 29, &cs, buf, sizeof buf), LAB_ERANGE);
    assert_int_equal(cytomat_slot_param(CYTOMAT_C6000, 0, 1, &cs, buf, sizeof buf), LAB_ERANGE);
    assert_int_equal(cytomat_slot_param(CYTOMAT_C6000, 1, 1, &cs, buf, 3), LAB_ENOSPACE);
    assert_int_equal(cytomat_slot_parse(CYTOMAT_C6000, "085", &cs, &c, &s), LAB_ERANGE);
    assert_int_equal(cytomat_slot_parse(CYTOMAT_C6000, "000", &cs, &c, &s), LAB_ERANGE);
    assert_int_equal(cytomat_slot_parse(CYTOMAT_C6000, "30", &cs, &c, &s), LAB_ESYNTAX);
    assert_int_equal(cytomat_slot_parse(CYTOMAT_C6000, "0x1", &cs, &c, &s), LAB_ESYNTAX);
    assert_int_equal(cytomat_slot_parse(CYTOMAT_C2C_425, "0104", &cs, &c, &s), LAB_ESYNTAX);
    assert_int_equal(cytomat_slot_parse(CYTOMAT_C2C_425, "03 00", &cs, &c, &s), LAB_ERANGE);
    /* past three digits: 20 cassettes of 51 */
    cs = cassettes("cytomat_rack_9mm_51", NULL, 20);
    assert_int_equal(cytomat_slot_param(CYTOMAT_C6000, 20, 51, &cs, buf, sizeof buf), LAB_ERANGE);
    /* racks of different heights: the slots of the racks before, then its own (PLR
     * cytomat.py:188-189): cassette 2 slot 1 is 28 + 1, cassette 3 slot 1 is 28 + 10 + 1 */
    cs =
        cassettes(NULL, "2:cytomat_rack_50mm_10, 1:cytomat_rack_17mm_28,3: cytomat_rack_9mm_51", 0);
    assert_int_equal(cs.n, 3);
    assert_int_equal(cytomat_cassettes_slots(&cs), 89);
    assert_int_equal(cytomat_slot_param(CYTOMAT_C5C, 2, 1, &cs, buf, sizeof buf), 3);
    assert_string_equal(buf, "029");
    assert_int_equal(cytomat_slot_param(CYTOMAT_C5C, 3, 1, &cs, buf, sizeof buf), 3);
    assert_string_equal(buf, "039");
    assert_int_equal(cytomat_slot_param(CYTOMAT_C5C, 2, 11, &cs, buf, sizeof buf), LAB_ERANGE);
    assert_int_equal(cytomat_slot_parse(CYTOMAT_C5C, "038", &cs, &c, &s), LAB_OK);
    assert_int_equal(c * 100 + s, 210);
    assert_int_equal(cytomat_slot_parse(CYTOMAT_C5C, "089", &cs, &c, &s), LAB_OK);
    assert_int_equal(c * 100 + s, 351);
    assert_int_equal(cytomat_slot_parse(CYTOMAT_C5C, "090", &cs, &c, &s), LAB_ERANGE);
}

static void test_cassettes_config(void **state)
{
    (void)state;
    cytomat_cassettes_t cs;
    char err[512];
    static const struct {
        const char *rack_type, *rack_types;
        int n;
        const char *why;
    } bad[] = {
        {NULL, NULL, 0, "rack_type: none given"},
        {"cytomat_rack_17mm_28", "1:cytomat_rack_17mm_28", 0, "both given"},
        {"liconic_rack_17mm_22", NULL, 0, "rack_type: 'liconic_rack_17mm_22' is not a known"},
        {"cytomat_rack_17mm_28", NULL, 21, "cassettes: 21 is not from 1 to 20"},
        {NULL, "1:cytomat_rack_17mm_28", 2, "cassettes: rack_types names every cassette"},
        {NULL, "1:cytomat_rack_17mm_28, 3:cytomat_rack_9mm_51", 0, "cassette 2 is missing"},
        {NULL, "1:cytomat_rack_17mm_28, 1:cytomat_rack_9mm_51", 0, "cassette 1 is given twice"},
        {NULL, "cytomat_rack_17mm_28", 0, "is not CASSETTE:RACK"},
        {NULL, "21:cytomat_rack_17mm_28", 0, "is not a number from 1 to 20"},
        {NULL, "99999999999:cytomat_rack_17mm_28", 0, "is not a number from 1 to 20"},
        {NULL, "1:", 0, "no rack type after ':'"},
        {NULL, "1:cytomat_rack_17mm_28,", 0, "entry 2"},
    };
    for (size_t i = 0; i < N(bad); i++) {
        err[0] = 0;
        if (cytomat_cassettes_parse(bad[i].rack_type, bad[i].rack_types, bad[i].n, &cs, err,
                                    sizeof err) != LAB_ESYNTAX ||
            !strstr(err, bad[i].why))
            fail_msg("case %zu: '%s', expected '%s'", i, err, bad[i].why);
        assert_int_equal(cs.n, 0);
    }
    cs = cassettes("cytomat_rack_95mm_5", NULL, 0);
    assert_int_equal(cs.n, 1);
    assert_int_equal(cs.slots[0], 5);
}

static void test_climate(void **state)
{
    (void)state;
    cytomat_cmd_t c;
    char buf[32];
    assert_int_equal(cytomat_climate_set_cmd(CYTOMAT_CLIMATE_TEMPERATURE, 37, &c), LAB_OK);
    assert_int_equal(cytomat_encode_cmd(&c, false, buf, sizeof buf), 11);
    assert_memory_equal(buf, "ll:it 37.0\r", 11);
    assert_int_equal(cytomat_climate_set_cmd(CYTOMAT_CLIMATE_CO2, 5, &c), LAB_OK);
    assert_string_equal(c.params, "05.0");
    assert_int_equal(cytomat_climate_set_cmd(CYTOMAT_CLIMATE_CO2, 0, &c), LAB_OK);
    assert_string_equal(c.params, "00.0");
    assert_int_equal(cytomat_climate_set_cmd(CYTOMAT_CLIMATE_TEMPERATURE, 99.9, &c), LAB_OK);
    assert_string_equal(c.params, "99.9");
    assert_int_equal(cytomat_climate_set_cmd(CYTOMAT_CLIMATE_TEMPERATURE, 99.96, &c), LAB_ERANGE);
    assert_int_equal(cytomat_climate_set_cmd(CYTOMAT_CLIMATE_TEMPERATURE, -0.1, &c), LAB_ERANGE);
    assert_int_equal(cytomat_climate_set_cmd(CYTOMAT_CLIMATE_TEMPERATURE, NAN, &c), LAB_ERANGE);
    assert_int_equal(cytomat_climate_set_cmd(CYTOMAT_CLIMATE_HUMIDITY, 90, &c), LAB_EUNKNOWN);
    assert_int_equal(cytomat_climate_read_cmd(CYTOMAT_CLIMATE_HUMIDITY, &c), LAB_OK);
    assert_int_equal(cytomat_encode_cmd(&c, true, buf, sizeof buf), 7);
    assert_memory_equal(buf, "ch:ih\r\n", 7);

    double set, act;
    assert_int_equal(cytomat_parse_climate("+37.0 +36.9", &set, &act), LAB_OK);
    assert_true(fabs(set - 37.0) < 1e-9 && fabs(act - 36.9) < 1e-9);
    assert_int_equal(cytomat_parse_climate("5 -0.5", &set, &act), LAB_OK);
    assert_true(fabs(set - 5) < 1e-9 && fabs(act + 0.5) < 1e-9);
    static const char *const bad[] = {"+37.0",     "+37.0 ", "+37.0 x",      "1.2.3 4", "+ 4",
                                      "37.0,36.9", "1 2 3",  "1234567890 1", ""};
    for (size_t i = 0; i < N(bad); i++)
        if (cytomat_parse_climate(bad[i], &set, &act) == LAB_OK)
            fail_msg("'%s' parsed", bad[i]);
}

static void test_models_racks(void **state)
{
    (void)state;
    assert_int_equal(cytomat_model_find("C2C_425"), CYTOMAT_C2C_425);
    assert_int_equal(cytomat_model_find("C2C_50"), -1); /* PLR does not support it */
    assert_false(cytomat_model_crlf(CYTOMAT_C2C_425));
    assert_true(cytomat_model_crlf(CYTOMAT_C5C));
    const cytomat_rack_t *r = cytomat_rack_find("cytomat_rack_17mm_28");
    assert_non_null(r);
    assert_int_equal(r->slots, 28);
    assert_int_equal(cytomat_rack_find("cytomat_rack_45.5mm_11")->height_01mm, 455);
    assert_null(cytomat_rack_find("liconic_rack_17mm_22"));
    assert_int_equal(cytomat_racks_n, 18);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_commands), cmocka_unit_test(test_golden_replies),
        cmocka_unit_test(test_overview_bits),   cmocka_unit_test(test_tables),
        cmocka_unit_test(test_bad_replies),     cmocka_unit_test(test_bad_commands),
        cmocka_unit_test(test_slots),           cmocka_unit_test(test_climate),
        cmocka_unit_test(test_models_racks),    cmocka_unit_test(test_cassettes_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
