/* Keyence SR/BL codec on the exchanges of PyLabRobot's Keyence backend and its tests and the SR
 * manual's (tests/fixtures/keyence_plr.h), and at the limits: long, truncated, garbage and
 * non-ASCII lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/keyence.h"
#include "tests/fixtures/keyence_plr.h"

static void expect_cmd(keyence_cmd_t c, const char *wire)
{
    char buf[16];
    int n = keyence_encode_cmd(c, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(wire));
    assert_memory_equal(buf, wire, (size_t)n);
    keyence_cmd_t back;
    assert_int_equal(keyence_parse_cmd(wire, strlen(wire) - 1, &back), LAB_OK);
    assert_int_equal(back, c);
}

/* Parses a reply and encodes it back to the same bytes. */
static keyence_reply_t reply(const char *line)
{
    keyence_reply_t r;
    char buf[KEYENCE_DATA_MAX + 8];
    assert_int_equal(keyence_parse_reply(line, strlen(line), &r), LAB_OK);
    int n = keyence_encode_reply(&r, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(line) + 1);
    assert_memory_equal(buf, line, strlen(line));
    assert_int_equal(buf[n - 1], '\r');
    return r;
}

static void test_commands(void **state)
{
    (void)state;
    /* keyence_backend_tests.py line 24: b"RMOTOR\r" */
    expect_cmd(KEYENCE_CMD_RMOTOR, keyence_plr_rmotor_wire);
    /* keyence_backend.py lines 97, 107: LON and LOFF with the same CR */
    expect_cmd(KEYENCE_CMD_LON, "LON\r");
    expect_cmd(KEYENCE_CMD_LOFF, "LOFF\r");
    keyence_cmd_t c;
    assert_int_equal(keyence_parse_cmd("LONG", 4, &c), LAB_EUNKNOWN);
    assert_int_equal(keyence_parse_cmd("", 0, &c), LAB_EUNKNOWN);
    char small[4];
    assert_int_equal(keyence_encode_cmd(KEYENCE_CMD_RMOTOR, small, sizeof small), LAB_ENOSPACE);
    assert_int_equal(keyence_encode_cmd(KEYENCE_CMD_N, small, sizeof small), LAB_EINVAL);
}

/* Every reply of the recorded script parses as what the driver makes of it. */
static void test_script_replies(void **state)
{
    (void)state;
    assert_int_equal(reply("MOTORON").kind, KEYENCE_REPLY_MOTORON);
    assert_int_equal(reply("MOTOROFF").kind, KEYENCE_REPLY_MOTOROFF);
    keyence_reply_t r = reply("ABC123");
    assert_int_equal(r.kind, KEYENCE_REPLY_DATA);
    assert_string_equal(r.data, "ABC123");
    assert_int_equal(r.len, 6);
    assert_int_equal(reply("NG").kind, KEYENCE_REPLY_NG);
    r = reply("ERR99");
    assert_int_equal(r.kind, KEYENCE_REPLY_ERR);
    assert_int_equal(r.code, 99);
    r = reply("OK,LON");
    assert_int_equal(r.kind, KEYENCE_REPLY_OK);
    assert_int_equal(r.cmd, KEYENCE_CMD_LON);
    r = reply("OK,LOFF");
    assert_int_equal(r.cmd, KEYENCE_CMD_LOFF);
    assert_int_equal(reply("ERROR").kind, KEYENCE_REPLY_NOREAD);
    r = reply("ER,LON,02");
    assert_int_equal(r.kind, KEYENCE_REPLY_ER);
    assert_int_equal(r.cmd, KEYENCE_CMD_LON);
    assert_int_equal(r.code, 2);
    r = reply("ER,RMOTOR,00");
    assert_int_equal(r.cmd, KEYENCE_CMD_RMOTOR);
    assert_int_equal(r.code, 0);
    r = reply("ER,BCLR,00"); /* a command of the reader's this codec does not send */
    assert_int_equal(r.cmd, KEYENCE_CMD_N);
    assert_string_equal(r.cmd_text, "BCLR");
    /* the script's replies, line by line */
    for (size_t i = 0; i < sizeof keyence_plr_script / sizeof keyence_plr_script[0]; i++) {
        const char *p = keyence_plr_script[i].reply;
        while (*p) {
            const char *cr = strchr(p, '\r');
            assert_non_null(cr);
            keyence_reply_t one;
            assert_int_equal(keyence_parse_reply(p, (size_t)(cr - p), &one), LAB_OK);
            p = cr + 1;
        }
    }
}

static void test_limits(void **state)
{
    (void)state;
    keyence_reply_t r;
    char line[KEYENCE_DATA_MAX + 2];
    memset(line, 'A', sizeof line);
    /* the longest code data, and one byte more */
    assert_int_equal(keyence_parse_reply(line, KEYENCE_DATA_MAX, &r), LAB_OK);
    assert_int_equal(r.len, KEYENCE_DATA_MAX);
    assert_int_equal(r.data[KEYENCE_DATA_MAX], '\0');
    assert_int_equal(keyence_parse_reply(line, KEYENCE_DATA_MAX + 1, &r), LAB_ETOOLONG);
    /* empty, control bytes, 8-bit bytes (a 7E1 line cannot carry them), NUL inside */
    assert_int_equal(keyence_parse_reply("", 0, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply(NULL, 0, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("P\x01"
                                         "42",
                                         4, &r),
                     LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("P\xc3\xa9", 3, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("P\0"
                                         "42",
                                         4, &r),
                     LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("\xff\xfe", 2, &r), LAB_ESYNTAX);
    /* truncated or malformed answers are errors, never data */
    assert_int_equal(keyence_parse_reply("OK,", 3, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("ER,LON", 6, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("ER,LON,", 7, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("ER,LON,2", 8, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("ER,LON,123", 10, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("OK,LON,1", 8, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("OK,lon", 6, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("ERR9X", 5, &r), LAB_ESYNTAX);
    assert_int_equal(keyence_parse_reply("OK,ABCDEFGHIJKLMNOP", 19, &r), LAB_ESYNTAX);
    /* words that only begin like a reply are data: "ERR9", "NGX", "MOTORON1" */
    assert_int_equal(keyence_parse_reply("ERR9", 4, &r), LAB_OK);
    assert_int_equal(r.kind, KEYENCE_REPLY_DATA);
    assert_int_equal(keyence_parse_reply("NGX", 3, &r), LAB_OK);
    assert_int_equal(r.kind, KEYENCE_REPLY_DATA);
    assert_int_equal(keyence_parse_reply("MOTORON1", 8, &r), LAB_OK);
    assert_int_equal(r.kind, KEYENCE_REPLY_DATA);
    /* the simulator cannot send what would not parse back as the same reply */
    char buf[KEYENCE_DATA_MAX + 8];
    keyence_reply_t bad = {.kind = KEYENCE_REPLY_DATA, .len = 5};
    memcpy(bad.data, "ERROR", 5);
    assert_int_equal(keyence_encode_reply(&bad, buf, sizeof buf), LAB_EINVAL);
    bad = (keyence_reply_t){.kind = KEYENCE_REPLY_ERR, .code = 100};
    assert_int_equal(keyence_encode_reply(&bad, buf, sizeof buf), LAB_EINVAL);
    keyence_reply_t ok = {.kind = KEYENCE_REPLY_DATA, .len = 6};
    memcpy(ok.data, "P0042X", 6);
    assert_int_equal(keyence_encode_reply(&ok, buf, 6), LAB_ENOSPACE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_script_replies),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
