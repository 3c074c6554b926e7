/* SpectraMax codec on the exchanges of PyLabRobot's Molecular Devices tests and the facts of its
 * backend: repository PyLabRobot/pylabrobot, commit 598b58ffbef97fe33db6e1421b532cc9a389cbcb,
 *   T = pylabrobot/legacy/plate_reading/molecular_devices/backend_tests.py (replies, data),
 *   B = pylabrobot/legacy/plate_reading/molecular_devices/backend.py (commands, fields, errors).
 * The golden data are in tests/fixtures/spectramax_plr.h with their lines; none comes from our
 * encoder. Then the limits: bytes one at a time, garbage and non-ASCII bytes, over-long fields,
 * truncated and malformed data, the simulator's encoder read back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/spectramax.h"
#include "tests/fixtures/spectramax_plr.h"

typedef struct fields {
    int n, garbage, toolong;
    char f[4][256];
} fields_t;

static int on_field(void *ud, const char *field, size_t len, int err)
{
    fields_t *fs = ud;
    if (err == LAB_EGARBAGE)
        fs->garbage++;
    else if (err == LAB_ETOOLONG)
        fs->toolong++;
    else if (fs->n < 4 && len < sizeof fs->f[0])
        memcpy(fs->f[fs->n++], field, len + 1);
    else
        fs->n++;
    return 0;
}

static fields_t feed(const char *s, size_t n, bool bytewise)
{
    static smax_rx_t rx;
    fields_t fs = {0};
    smax_rx_init(&rx);
    if (!bytewise) {
        assert_int_equal(smax_rx_feed(&rx, (const uint8_t *)s, n, on_field, &fs), n);
        return fs;
    }
    for (size_t i = 0; i < n; i++)
        smax_rx_feed(&rx, (const uint8_t *)s + i, 1, on_field, &fs);
    return fs;
}

/* B COMMAND_TERMINATORS, lines 17-63; a word it lacks takes 1 (line 279). */
static void test_reply_fields(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof smax_plr_read_cmds / sizeof smax_plr_read_cmds[0]; i++)
        assert_int_equal(
            smax_reply_fields(smax_plr_read_cmds[i].cmd, strlen(smax_plr_read_cmds[i].cmd)),
            smax_plr_read_cmds[i].fields);
    assert_int_equal(smax_reply_fields("!STATUS", 7), 2);
    assert_int_equal(smax_reply_fields("!TEMP 37.0\r", 11), 2);
    assert_int_equal(smax_reply_fields("!TRANSFER\r", 10), 2);
    assert_int_equal(smax_reply_fields("!ERROR", 6), 2);
    assert_int_equal(smax_reply_fields("!OPEN", 5), 1);
    assert_int_equal(smax_reply_fields("!", 1), 1);       /* setup, line 263 */
    assert_int_equal(smax_reply_fields("!OPTION", 7), 1); /* the table's "OPTION" lacks '!' */
    assert_int_equal(smax_reply_fields("!TEMPX", 6), 1);  /* a whole word, not a prefix */
    assert_int_equal(smax_reply_fields("STATUS", 6), 0);
    assert_int_equal(smax_reply_fields("", 0), 0);
}

static void test_encode_cmd(void **state)
{
    (void)state;
    char buf[SMAX_CMD_MAX + 8];
    /* B line 283: the command and CR. */
    assert_int_equal(smax_encode_cmd(buf, sizeof buf, "!WAVELENGTH %d", 500), 16);
    assert_memory_equal(buf, "!WAVELENGTH 500\r", 16);
    assert_int_equal(smax_encode_cmd(buf, sizeof buf, "!XPOS %.3f %.3f %d", 13.38, 9.0, 12), 22);
    assert_string_equal(buf, "!XPOS 13.380 9.000 12\r"); /* T line 145 */
    assert_int_equal(smax_encode_cmd(buf, sizeof buf, "!TEMP>"), LAB_ESYNTAX);
    assert_int_equal(smax_encode_cmd(buf, sizeof buf, "!TEMP\r!READ"), LAB_ESYNTAX);
    assert_int_equal(smax_encode_cmd(buf, sizeof buf, "!TEMP \xc3\xa9"), LAB_ESYNTAX);
    char lng[SMAX_CMD_MAX + 2];
    memset(lng, 'A', sizeof lng - 1);
    lng[sizeof lng - 1] = '\0';
    assert_int_equal(smax_encode_cmd(buf, sizeof buf, "%s", lng), LAB_ENOSPACE);
    assert_int_equal(smax_encode_cmd(buf, 4, "!READ"), LAB_ENOSPACE);
}

/* T TestErrorHandling, lines 1649-1698: the replies and what they mean (B 299-324). */
static void test_plr_replies(void **state)
{
    (void)state;
    int code = 0;
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        fields_t fs = feed(smax_plr_fail_107, sizeof smax_plr_fail_107 - 1, bytewise);
        assert_int_equal(fs.n, 2);
        assert_string_equal(fs.f[0], "OK");
        assert_string_equal(fs.f[1], "FAIL\t 107");
        assert_int_equal(smax_field_kind(fs.f[0], strlen(fs.f[0]), &code), SMAX_OK);
        assert_int_equal(smax_field_kind(fs.f[1], strlen(fs.f[1]), &code), SMAX_FAIL);
        assert_int_equal(code, 107);
    }
    const char *cls = NULL;
    assert_string_equal(smax_error_text(107, &cls), "no data to transfer");
    assert_string_equal(cls, "command");

    fields_t fs = feed(smax_plr_fail_999, sizeof smax_plr_fail_999 - 1, false);
    assert_int_equal(fs.n, 1);
    assert_int_equal(smax_field_kind(fs.f[0], strlen(fs.f[0]), &code), SMAX_FAIL);
    assert_int_equal(code, 999);
    assert_null(smax_error_text(999, &cls)); /* "unknown error code", line 1664 */

    fs = feed(smax_plr_fail_abc, sizeof smax_plr_fail_abc - 1, false);
    assert_int_equal(smax_field_kind(fs.f[0], strlen(fs.f[0]), &code), LAB_ESYNTAX);

    fs = feed(smax_plr_warning, sizeof smax_plr_warning - 1, false);
    assert_int_equal(fs.n, 1);
    assert_int_equal(smax_field_kind(fs.f[0], strlen(fs.f[0]), &code), SMAX_OK);

    fs = feed(smax_plr_ok, sizeof smax_plr_ok - 1, false);
    assert_int_equal(fs.n, 1);
    assert_string_equal(fs.f[0], "OK");
    /* The line end after '>' starts no field (nothing waits for it). */
    fs = feed("\r\n\r\n", 4, false);
    assert_int_equal(fs.n, 0);
    assert_int_equal(fs.garbage, 0);
}

/* B ERROR_CODES, lines 90-139, and their classes (70-87). */
static void test_error_table(void **state)
{
    (void)state;
    const char *cls = NULL;
    assert_string_equal(smax_error_text(100, &cls), "command not found");
    assert_string_equal(cls, "command");
    assert_string_equal(smax_error_text(209, &cls), "stack overflow");
    assert_string_equal(cls, "firmware");
    assert_string_equal(smax_error_text(317, &cls), "monitor ADC faulty");
    assert_string_equal(cls, "hardware");
    assert_string_equal(smax_error_text(400, &cls), "carriage motion error");
    assert_string_equal(cls, "motion");
    assert_string_equal(smax_error_text(505, &cls), "NVRAM Stage offset error");
    assert_string_equal(cls, "NVRAM");
    assert_null(smax_error_text(309, NULL)); /* 309-311 are not in the table */
    assert_null(smax_error_text(0, NULL));
    assert_null(smax_error_text(-1, NULL));
    assert_null(smax_error_text(600, NULL));
}

static void test_rx_limits(void **state)
{
    (void)state;
    /* A byte above 0x7e (the simulator's garbage) or a control byte: one report, the rest of
     * the field skipped, the next field whole. */
    static const char noisy[] = "\x80\xff"
                                "OK>OK\t\r\n>\x01zz>OK>";
    fields_t fs = feed(noisy, sizeof noisy - 1, false);
    assert_int_equal(fs.garbage, 2);
    assert_int_equal(fs.n, 2);
    assert_string_equal(fs.f[0], "OK");
    assert_string_equal(fs.f[1], "OK");
    /* UTF-8 inside a data field is garbage too. */
    fs = feed("0\tID\xc3\xa9LE>", 9, true);
    assert_int_equal(fs.garbage, 1);
    assert_int_equal(fs.n, 0);
    /* An over-long field: reported once, skipped to its '>'. */
    static char lng[SMAX_FIELD_MAX + 16];
    memset(lng, '7', SMAX_FIELD_MAX + 5);
    memcpy(lng + SMAX_FIELD_MAX + 5, ">OK>", 4);
    fs = feed(lng, SMAX_FIELD_MAX + 9, false);
    assert_int_equal(fs.toolong, 1);
    assert_int_equal(fs.n, 1);
    assert_string_equal(fs.f[0], "OK");
    /* Exactly the maximum is a field. */
    memset(lng, '7', SMAX_FIELD_MAX);
    lng[SMAX_FIELD_MAX] = '>';
    fs = feed(lng, SMAX_FIELD_MAX + 1, false);
    assert_int_equal(fs.toolong, 0);
    assert_int_equal(fs.n, 1);
    /* A FAIL without a code, or with garbage after it. */
    int code;
    assert_int_equal(smax_field_kind("FAIL", 4, &code), LAB_ESYNTAX);
    assert_int_equal(smax_field_kind("FAIL\t", 5, &code), LAB_ESYNTAX);
    assert_int_equal(smax_field_kind("FAIL\t 12x", 9, &code), LAB_ESYNTAX);
    assert_int_equal(smax_field_kind("FAIL\t 1234567890", 16, &code), LAB_ESYNTAX);
    assert_int_equal(smax_field_kind("0\tIDLE", 6, &code), SMAX_DATA);
    assert_int_equal(smax_field_kind("O", 1, &code), SMAX_DATA);
}

/* B get_status (332-336) and _wait_for_idle (690): the second word; B get_temperature (347-356):
 * set point, then the current temperature. */
static void test_status_temp(void **state)
{
    (void)state;
    char w[8];
    assert_int_equal(smax_parse_status("0\tIDLE", 6, w, sizeof w), LAB_OK);
    assert_string_equal(w, "IDLE");
    assert_int_equal(smax_parse_status("  3 BUSY 7", 10, w, sizeof w), LAB_OK);
    assert_string_equal(w, "BUSY");
    assert_int_equal(smax_parse_status("IDLE", 4, w, sizeof w), LAB_ESYNTAX);
    assert_int_equal(smax_parse_status("", 0, w, sizeof w), LAB_ESYNTAX);
    assert_int_equal(smax_parse_status("0 ABCDEFGHIJ", 12, w, sizeof w), LAB_ENOSPACE);
    double sp, cur;
    assert_int_equal(smax_parse_temp("37.0\t36.4", 9, &sp, &cur), LAB_OK);
    assert_true(sp == 37.0 && cur == 36.4);
    assert_int_equal(smax_parse_temp("0 -2.5", 6, &sp, &cur), LAB_OK);
    assert_true(sp == 0 && cur == -2.5);
    assert_int_equal(smax_parse_temp("37.0", 4, &sp, &cur), LAB_ESYNTAX);
    assert_int_equal(smax_parse_temp("37.0 nan", 8, &sp, &cur), LAB_ESYNTAX);
    assert_int_equal(smax_parse_temp("37.0 1e3", 8, &sp, &cur), LAB_ESYNTAX);
    assert_int_equal(smax_parse_temp("37..0 1", 7, &sp, &cur), LAB_ESYNTAX);
}

/* T test_parse_absorbance_single_wavelength (1390-1418) and the #SAT / "-" data (1511-1536). */
static void test_plr_data(void **state)
{
    (void)state;
    static smax_plate_t p;
    assert_int_equal(
        smax_parse_data(smax_plr_data_single, sizeof smax_plr_data_single - 1, 2, 2, &p), LAB_OK);
    assert_true(p.time == 12345.6 && p.temperature == 25.1);
    assert_int_equal(p.wavelength_nm, 260);
    /* [[0.1, 0.3], [0.2, 0.4]] by row (line 1418). */
    assert_true(p.value[0][0] == 0.1 && p.value[0][1] == 0.3);
    assert_true(p.value[1][0] == 0.2 && p.value[1][1] == 0.4);
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 2; c++)
            assert_int_equal(p.state[r][c], SMAX_WELL_VALUE);

    assert_int_equal(smax_parse_data(smax_plr_data_sat, sizeof smax_plr_data_sat - 1, 2, 2, &p),
                     LAB_OK);
    assert_int_equal(p.state[1][0], SMAX_WELL_SAT);     /* inf, line 1535 */
    assert_int_equal(p.state[1][1], SMAX_WELL_NOVALUE); /* nan, line 1536 */
    assert_true(isnan(p.value[1][0]) && isnan(p.value[1][1]));
    assert_true(p.value[0][0] == 0.1 && p.value[0][1] == 0.3);

    /* Two wavelengths (1420-1449): one read here is one wavelength; the second block is
     * refused where it starts. */
    const char *two = smax_plr_data_two_nm;
    assert_int_equal(smax_parse_data(two, strlen(two), 2, 2, &p), LAB_ESYNTAX);
    assert_int_equal(p.err_at, (size_t)(strstr(two, "L:\t280\n") - two));
    /* The plate size the driver expects is the one checked. */
    assert_int_equal(
        smax_parse_data(smax_plr_data_single, sizeof smax_plr_data_single - 1, 8, 12, &p),
        LAB_ESYNTAX);
    assert_int_equal(
        smax_parse_data(smax_plr_data_single, sizeof smax_plr_data_single - 1, 3, 2, &p),
        LAB_ESYNTAX);
    assert_int_equal(smax_parse_data(smax_plr_data_single, 10, 0, 2, &p), LAB_ERANGE);
    assert_int_equal(smax_parse_data(smax_plr_data_single, 10, 2, 25, &p), LAB_ERANGE);
}

static void test_data_limits(void **state)
{
    (void)state;
    static smax_plate_t p;
    const char *s = smax_plr_data_single;
    size_t n = sizeof smax_plr_data_single - 1;
    /* Cut anywhere before the last value: refused. */
    size_t last = (size_t)(strstr(s, "\t0.4") - s);
    for (size_t k = 0; k <= last; k++)
        if (smax_parse_data(s, k, 2, 2, &p) != LAB_ESYNTAX)
            fail_msg("a cut at %zu parsed", k);
    static const char *const bad[] = {
        "1.0\t20\nL:\t450\n2:\t0.1\t0.2\n1:\t0.3\t0.4\n",      /* columns out of order */
        "1.0\t20\nL:\t450\n1:\t0.1\t0.2\t0.5\n2:\t0.3\t0.4\n", /* a value too many */
        "1.0\t20\nL:\t450\n1:\t0.1\n2:\t0.3\t0.4\n",           /* a value too few */
        "1.0\t20\n1:\t0.1\t0.2\n2:\t0.3\t0.4\n",               /* no wavelength */
        "1.0\nL:\t450\n1:\t0.1\t0.2\n2:\t0.3\t0.4\n",          /* no temperature */
        "x\t20\nL:\t450\n1:\t0.1\t0.2\n2:\t0.3\t0.4\n",        /* no time */
        "1.0\t20\nL:\tnm\n1:\t0.1\t0.2\n2:\t0.3\t0.4\n",       /* a wavelength that is no number */
        "1.0\t20\nL:\t450\n1\t0.1\t0.2\n2:\t0.3\t0.4\n",       /* a column without ':' */
        "1.0\t20\nL:\t450\n1:\t0.1\t0.2\n2:\t0.3\t0.4\n3:\t1\t1\n", /* a column too many */
        "1.0\t20\nL:\t450\n1:\t0.1\t0.2\n2:\t0.3\t0\xc3\xa9\n",     /* non-ASCII */
        "1.0\t20\nL:\t450\n1:\t0.1\t0.2\n2:\t0.3\t0\x01\n",         /* a control byte */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (smax_parse_data(bad[i], strlen(bad[i]), 2, 2, &p) != LAB_ESYNTAX)
            fail_msg("bad data %zu parsed", i);
    /* A value the reader cannot mean is no value, as PyLabRobot's nan (never a number). */
    static const char odd[] = "1.0\t20\r\nL:\t450\r\n1:\t1.2.3\t-0.05\r\n2:\tinf\t0x10\r\n";
    assert_int_equal(smax_parse_data(odd, sizeof odd - 1, 2, 2, &p), LAB_OK);
    assert_int_equal(p.state[0][0], SMAX_WELL_NOVALUE);
    assert_int_equal(p.state[1][0], SMAX_WELL_VALUE);
    assert_true(p.value[1][0] == -0.05);
    assert_int_equal(p.state[0][1], SMAX_WELL_NOVALUE);
    assert_int_equal(p.state[1][1], SMAX_WELL_NOVALUE);
    (void)n;
}

/* The simulator's data, read back: 96 and 384 wells, with #SAT and "-" wells. */
static void test_encode_roundtrip(void **state)
{
    (void)state;
    static smax_plate_t a, b;
    static char buf[SMAX_FIELD_MAX];
    for (int big = 0; big < 2; big++) {
        memset(&a, 0, sizeof a);
        a.rows = big ? 16 : 8;
        a.cols = big ? 24 : 12;
        a.wavelength_nm = 340;
        a.time = 12.5;
        a.temperature = 37;
        for (int r = 0; r < a.rows; r++)
            for (int c = 0; c < a.cols; c++) {
                a.state[r][c] = SMAX_WELL_VALUE;
                a.value[r][c] = 0.0001 * (r * 100 + c);
            }
        a.state[1][2] = SMAX_WELL_SAT;
        a.state[2][1] = SMAX_WELL_NOVALUE;
        int n = smax_encode_data(&a, buf, sizeof buf);
        assert_true(n > 0);
        assert_null(memchr(buf, SMAX_TERM, (size_t)n));
        assert_int_equal(smax_parse_data(buf, (size_t)n, a.rows, a.cols, &b), LAB_OK);
        assert_int_equal(b.wavelength_nm, 340);
        assert_true(b.temperature == 37 && b.time == 12.5);
        for (int r = 0; r < a.rows; r++)
            for (int c = 0; c < a.cols; c++) {
                assert_int_equal(b.state[r][c], a.state[r][c]);
                if (a.state[r][c] == SMAX_WELL_VALUE)
                    assert_true(fabs(b.value[r][c] - a.value[r][c]) < 1e-9);
            }
    }
    a.state[0][0] = SMAX_WELL_VALUE;
    a.value[0][0] = INFINITY;
    assert_int_equal(smax_encode_data(&a, buf, sizeof buf), LAB_ERANGE);
    a.value[0][0] = 1;
    assert_int_equal(smax_encode_data(&a, buf, 64), LAB_ENOSPACE);
    a.rows = 17;
    assert_int_equal(smax_encode_data(&a, buf, sizeof buf), LAB_ERANGE);
}

static void test_cmd_parse(void **state)
{
    (void)state;
    smax_cmd_t c;
    assert_int_equal(smax_cmd_parse("!XPOS 13.380 9.000 12", 21, &c), LAB_OK);
    assert_int_equal(c.argc, 4);
    assert_string_equal(c.argv[0], "!XPOS");
    assert_string_equal(c.argv[3], "12");
    assert_int_equal(smax_cmd_parse("!", 1, &c), LAB_OK);
    assert_int_equal(c.argc, 1);
    assert_int_equal(smax_cmd_parse("", 0, &c), LAB_ESYNTAX);
    assert_int_equal(smax_cmd_parse("   ", 3, &c), LAB_ESYNTAX);
    assert_int_equal(smax_cmd_parse("STATUS", 6, &c), LAB_ESYNTAX);
    assert_int_equal(smax_cmd_parse("!A 1 2 3 4 5 6 7 8", 18, &c), LAB_ESYNTAX);
    static char lng[SMAX_CMD_MAX * 2 + 1];
    memset(lng, 'A', sizeof lng);
    lng[0] = '!';
    assert_int_equal(smax_cmd_parse(lng, sizeof lng, &c), LAB_ETOOLONG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_fields),     cmocka_unit_test(test_encode_cmd),
        cmocka_unit_test(test_plr_replies),      cmocka_unit_test(test_error_table),
        cmocka_unit_test(test_rx_limits),        cmocka_unit_test(test_status_temp),
        cmocka_unit_test(test_plr_data),         cmocka_unit_test(test_data_limits),
        cmocka_unit_test(test_encode_roundtrip), cmocka_unit_test(test_cmd_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
