/* Liconic STX codec on frames from PyLabRobot's Liconic backend and its tests
 * (pylabrobot/legacy/storage/liconic/liconic_backend.py, liconic_backend_tests.py). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/liconic.h"

static void expect_cmd(const liconic_cmd_t *c, const char *wire)
{
    char buf[64];
    int n = liconic_encode_cmd(c, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(wire));
    assert_memory_equal(buf, wire, (size_t)n);
    /* The simulator side reads back the same command. */
    liconic_cmd_t back;
    assert_int_equal(liconic_parse_cmd(wire, strlen(wire) - 1, &back), LAB_OK);
    assert_int_equal(back.op, c->op);
    assert_int_equal(back.addr, c->addr);
    assert_int_equal(back.value, c->value);
}

static void test_handshake(void **state)
{
    /* liconic_backend.py setup(): write b"CR\r", expect b"CC"; b"ST 1801\r" -> b"OK";
     * b"RD 1915\r" polled until b"1". */
    liconic_step_t steps[LICONIC_SEQ_MAX];
    assert_int_equal(liconic_seq_open(steps, LICONIC_SEQ_MAX), 3);
    expect_cmd(&steps[0].cmd, "CR\r");
    expect_cmd(&steps[1].cmd, "ST 1801\r");
    expect_cmd(&steps[2].cmd, "RD 1915\r");
    assert_true(steps[2].poll_ready);

    liconic_reply_t r;
    assert_int_equal(liconic_parse_reply("CC", 2, &r), LAB_OK);
    assert_int_equal(r.kind, LICONIC_REPLY_CC);
    assert_int_equal(liconic_parse_reply("OK", 2, &r), LAB_OK);
    assert_int_equal(r.kind, LICONIC_REPLY_OK);
    assert_int_equal(liconic_parse_reply("1", 1, &r), LAB_OK);
    assert_int_equal(r.kind, LICONIC_REPLY_VALUE);
    assert_int_equal(r.value, 1);
}

static void test_climate(void **state)
{
    /* liconic_backend_tests.py: set_temperature(37.5) -> "WR DM890 00375",
     * set_humidity(0.9) -> "WR DM893 00900", set_co2_level(0.05) -> "WR DM894 00500",
     * set_n2_level(0.9) -> "WR DM895 09000"; get_target_temperature reply "375" -> 37.5. */
    liconic_cmd_t c;
    assert_int_equal(liconic_climate_set_cmd(LICONIC_CLIMATE_TEMPERATURE, 37.5, &c), LAB_OK);
    expect_cmd(&c, "WR DM890 00375\r");
    assert_int_equal(liconic_climate_set_cmd(LICONIC_CLIMATE_HUMIDITY, 90.0, &c), LAB_OK);
    expect_cmd(&c, "WR DM893 00900\r");
    assert_int_equal(liconic_climate_set_cmd(LICONIC_CLIMATE_CO2, 5.0, &c), LAB_OK);
    expect_cmd(&c, "WR DM894 00500\r");
    assert_int_equal(liconic_climate_set_cmd(LICONIC_CLIMATE_N2, 90.0, &c), LAB_OK);
    expect_cmd(&c, "WR DM895 09000\r");
    assert_int_equal(liconic_climate_read_cmd(LICONIC_CLIMATE_TEMPERATURE, 0, &c), LAB_OK);
    expect_cmd(&c, "RD DM982\r");
    assert_int_equal(liconic_climate_read_cmd(LICONIC_CLIMATE_TEMPERATURE, 1, &c), LAB_OK);
    expect_cmd(&c, "RD DM890\r");

    liconic_reply_t r;
    assert_int_equal(liconic_parse_reply("375", 3, &r), LAB_OK);
    assert_true(liconic_climate_from_raw(LICONIC_CLIMATE_TEMPERATURE, r.value) == 37.5);
    assert_int_equal(liconic_parse_reply("500", 3, &r), LAB_OK);
    assert_true(liconic_climate_from_raw(LICONIC_CLIMATE_CO2, r.value) == 5.0);

    assert_int_equal(liconic_climate_set_cmd(LICONIC_CLIMATE_TEMPERATURE, 150.0, &c), LAB_ERANGE);
    assert_int_equal(liconic_climate_set_cmd(LICONIC_CLIMATE_HUMIDITY, -1, &c), LAB_ERANGE);
}

static void test_load_unload(void **state)
{
    /* take_in_plate / fetch_plate_to_loading_tray with liconic_rack_17mm_22 at rack 1, site 1:
     * 788 motor steps, 22 positions (liconic_backend_tests.py). */
    liconic_site_t site = {.cassette = 1, .slot = 1, .pitch_steps = 788, .slots = 22};
    const char *load[] = {"WR DM0 1\r", "WR DM23 788\r", "WR DM25 22\r", "WR DM5 1\r",
                          "ST 1904\r",  "RD 1915\r",     "ST 1903\r"};
    liconic_step_t steps[LICONIC_SEQ_MAX];
    assert_int_equal(liconic_seq_load(&site, steps, LICONIC_SEQ_MAX), 7);
    for (int i = 0; i < 7; i++)
        expect_cmd(&steps[i].cmd, load[i]);
    assert_int_equal(liconic_seq_unload(&site, steps, LICONIC_SEQ_MAX), 7);
    expect_cmd(&steps[4].cmd, "ST 1905\r");
    assert_true(steps[5].poll_ready);
    assert_int_equal(liconic_seq_load(&site, steps, 3), LAB_ENOSPACE);

    /* move_position_to_position: pick with ST 1908 at the origin, DM0 rewritten only for another
     * cassette, place with ST 1909, terminate with ST 1903. */
    liconic_site_t to = {.cassette = 2, .slot = 5, .pitch_steps = 788, .slots = 22};
    const char *move[] = {"WR DM0 1\r",   "WR DM23 788\r", "WR DM25 22\r", "WR DM5 1\r",
                          "ST 1908\r",    "RD 1915\r",     "WR DM0 2\r",   "WR DM23 788\r",
                          "WR DM25 22\r", "WR DM5 5\r",    "ST 1909\r",    "RD 1915\r",
                          "ST 1903\r"};
    liconic_step_t big[16];
    assert_int_equal(liconic_seq_move(&site, &to, big, 16), 13);
    for (int i = 0; i < 13; i++)
        expect_cmd(&big[i].cmd, move[i]);
    to.cassette = 1;
    assert_int_equal(liconic_seq_move(&site, &to, big, 16), 12);
    site.slot = 23;
    assert_int_equal(liconic_seq_load(&site, steps, LICONIC_SEQ_MAX), LAB_ERANGE);
}

/* PyLabRobot pylabrobot/legacy/storage/liconic/liconic_backend_tests.py, commit 598b58ffb:
 * TestCarrierToStepsPos (17mm_22 -> 788 steps, 22 positions; 5mm_42 -> 377, 42; 44mm_10 ->
 * 1713, 10), TestStepSizeFormula (steps = round(pitch * 1713 / 50), pitch = site height + 6,
 * except 104 mm: 3563) and test_known_reference_points (17 mm: 788, 44 mm: 1713). */
static void test_racks(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int steps, slots;
    } plr[] = {{"liconic_rack_17mm_22", 788, 22},
               {"liconic_rack_5mm_42", 377, 42},
               {"liconic_rack_44mm_10", 1713, 10}};
    for (size_t i = 0; i < sizeof plr / sizeof plr[0]; i++) {
        const liconic_rack_t *r = liconic_rack_find(plr[i].name);
        assert_non_null(r);
        assert_int_equal(r->steps, plr[i].steps);
        assert_int_equal(r->slots, plr[i].slots);
    }
    assert_int_equal(liconic_rack_find("liconic_rack_17mm_22")->pitch, 23);
    assert_null(liconic_rack_find("some_other_rack_17mm_22"));
    assert_null(liconic_rack_find(NULL));
    assert_int_equal(liconic_racks_n, 36);
    for (size_t i = 0; i < liconic_racks_n; i++) {
        const liconic_rack_t *r = &liconic_racks[i];
        assert_int_equal(r->pitch, r->site_height + 6);
        if (r->site_height == 104) {
            assert_int_equal(r->steps, 3563);
            assert_false(liconic_rack_verified(r));
        } else {
            assert_int_equal(r->steps, (int)lround(r->pitch * 1713 / 50.0));
            assert_true(liconic_rack_verified(r));
        }
    }
    /* The transfer writes them as PyLabRobot does: "WR DM23 788", "WR DM25 22". */
    const liconic_rack_t *r = liconic_rack_find("liconic_rack_17mm_22");
    liconic_site_t site = {.cassette = 1, .slot = 1, .pitch_steps = r->steps, .slots = r->slots};
    liconic_step_t steps[LICONIC_SEQ_MAX];
    assert_int_equal(liconic_seq_load(&site, steps, LICONIC_SEQ_MAX), 7);
    expect_cmd(&steps[1].cmd, "WR DM23 788\r");
    expect_cmd(&steps[2].cmd, "WR DM25 22\r");
}

/* The cassettes' racks from the configuration: one rack for N cassettes, or one per cassette;
 * anything that could be read two ways is refused with what is wrong. */
static void test_cassettes(void **state)
{
    (void)state;
    liconic_cassettes_t c;
    char err[512];
    assert_int_equal(liconic_cassettes_parse("liconic_rack_17mm_22", NULL, 0, &c, err, sizeof err),
                     LAB_OK);
    assert_int_equal(c.n, 1);
    assert_int_equal(liconic_cassettes_slots(&c), 22);
    assert_int_equal(liconic_cassettes_parse("liconic_rack_17mm_22", NULL, 3, &c, err, sizeof err),
                     LAB_OK);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.rack[2]->steps, 788);
    assert_int_equal(liconic_cassettes_slots(&c), 66);
    assert_int_equal(liconic_cassettes_parse(NULL, "2:liconic_rack_44mm_10,1:liconic_rack_5mm_42",
                                             0, &c, err, sizeof err),
                     LAB_OK);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.rack[0]->steps, 377);
    assert_int_equal(c.rack[1]->steps, 1713);
    assert_int_equal(liconic_cassettes_slots(&c), 52);
    assert_int_equal(
        liconic_cassettes_parse(NULL, " 1 : liconic_rack_17mm_22 ", 0, &c, err, sizeof err),
        LAB_OK);
    assert_int_equal(c.n, 1);

    static const struct {
        const char *rack_type, *rack_types;
        int cassettes;
        const char *why;
    } bad[] = {
        {NULL, NULL, 0, "no rack type: give rack_type = NAME"},
        {"liconic_rack_17mm_22", "1:liconic_rack_17mm_22", 0,
         "rack_type and rack_types are both given"},
        {"17mm", NULL, 0,
         "rack_type: '17mm' is not a known rack type (one of liconic_rack_5mm_42|"},
        {"liconic_rack_17mm_22", NULL, 100, "cassettes: 100 is not from 1 to 99"},
        {NULL, "1:liconic_rack_17mm_22", 2, "cassettes and rack_types are both given"},
        {NULL, "", 0, "rack_types: entry 1 '' is not CASSETTE:RACK"},
        {NULL, "1:liconic_rack_17mm_22,", 0, "rack_types: entry 2 '' is not CASSETTE:RACK"},
        {NULL, "liconic_rack_17mm_22", 0, "entry 1 'liconic_rack_17mm_22' is not CASSETTE:RACK"},
        {NULL, "1:liconic_rack_17mm_22 2:liconic_rack_17mm_22", 0,
         "rack_types: cassette 1: 'liconic_rack_17mm_22 2:liconic_rack_17mm_22' is not a known"},
        {NULL, "0:liconic_rack_17mm_22", 0, "entry 1: cassette '0' is not a number from 1 to 99"},
        {NULL, "1a:liconic_rack_17mm_22", 0, "entry 1: cassette '1a' is not a number"},
        {NULL, "100:liconic_rack_17mm_22", 0, "entry 1: cassette '100' is not a number"},
        {NULL, "-1:liconic_rack_17mm_22", 0, "entry 1: cassette '-1' is not a number"},
        {NULL, "1:", 0, "rack_types: cassette 1: no rack type after ':'"},
        {NULL, "1:liconic_rack_17mm_22,1:liconic_rack_17mm_22", 0, "cassette 1 is given twice"},
        {NULL, "2:liconic_rack_17mm_22", 0,
         "rack_types: cassette 1 is missing (cassettes are numbered from 1 without gaps; the "
         "highest given is 2)"},
        {NULL, "1:liconic_rack_17mm_22,2:liconic_rack_18mm_22", 0,
         "rack_types: cassette 2: 'liconic_rack_18mm_22' is not a known rack type"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_int_equal(liconic_cassettes_parse(bad[i].rack_type, bad[i].rack_types,
                                                 bad[i].cassettes, &c, err, sizeof err),
                         LAB_ESYNTAX);
        assert_int_equal(c.n, 0);
        if (!strstr(err, bad[i].why))
            fail_msg("case %zu: '%s', expected '%s'", i, err, bad[i].why);
    }
}

static void test_errors(void **state)
{
    /* liconic_backend_tests.py: reply b"E1" -> LiconicControllerCommandError; b"E9" unknown. */
    liconic_reply_t r;
    assert_int_equal(liconic_parse_reply("E1", 2, &r), LAB_OK);
    assert_int_equal(r.kind, LICONIC_REPLY_ERROR);
    assert_int_equal(r.error, 1);
    assert_non_null(strstr(r.text, "Invalid command"));
    assert_int_equal(liconic_parse_reply("E9", 2, &r), LAB_EUNKNOWN);
    assert_int_equal(r.error, 9);

    /* constants.py / errors.py: DM200 "00007" gate open, "00104" import shovel inner,
     * "00717" no recovery during plate get. */
    liconic_handler_error_t he;
    assert_int_equal(liconic_handler_error_lookup(7, &he), LAB_OK);
    assert_non_null(strstr(he.text, "Gate could not reach upper position"));
    assert_int_equal(liconic_handler_error_lookup(104, &he), LAB_OK);
    assert_string_equal(he.group, "import plate");
    assert_non_null(strstr(he.text, "Shovel could not reach inner position"));
    assert_int_equal(liconic_handler_error_lookup(717, &he), LAB_OK);
    assert_string_equal(he.group, "plate get");
    /* _wait_ready(): RD 1814 -> "1", then RD DM200 -> the code as five digits. */
    assert_int_equal(liconic_parse_reply("00104", 5, &r), LAB_OK);
    assert_int_equal(r.kind, LICONIC_REPLY_VALUE);
    assert_int_equal(liconic_handler_error_lookup((int)r.value, &he), LAB_OK);
    assert_string_equal(he.group, "import plate");
    assert_int_equal(liconic_handler_error_lookup(0, &he), LAB_EUNKNOWN);
    assert_int_equal(liconic_handler_error_lookup(112, &he), LAB_EUNKNOWN);
    assert_int_equal(liconic_handler_error_lookup(800, &he), LAB_EUNKNOWN);

    char buf[16];
    r = (liconic_reply_t){.kind = LICONIC_REPLY_ERROR, .error = 4};
    assert_int_equal(liconic_encode_reply(&r, buf, sizeof buf), 4);
    assert_memory_equal(buf, "E4\r\n", 4);
}

typedef struct collect {
    char lines[8][64];
    int n, errors;
} collect_t;

static int on_line(void *ud, const char *line, size_t len, int err)
{
    collect_t *c = ud;
    if (err) {
        c->errors++;
        return 0;
    }
    if (c->n < 8 && len < 64)
        memcpy(c->lines[c->n++], line, len + 1);
    return 0;
}

static void test_stream(void **state)
{
    /* Replies end in CR LF (liconic_backend.py reads through LF); byte-by-byte feeding gives
     * the same lines, an over-long line is one error and the next line still arrives. */
    const char *wire = "CC\r\nOK\r\n375\r\nE1\r\n";
    proto_lines_t lb;
    proto_lines_init(&lb);
    collect_t c = {0};
    for (size_t i = 0; i < strlen(wire); i++)
        proto_lines_feed(&lb, (const uint8_t *)wire + i, 1, on_line, &c);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.lines[2], "375");

    static uint8_t junk[PROTO_LINE_MAX + 10];
    memset(junk, 'x', sizeof junk);
    memset(&c, 0, sizeof c);
    proto_lines_feed(&lb, junk, sizeof junk, on_line, &c);
    proto_lines_feed(&lb, (const uint8_t *)"\r\nOK\r\n", 6, on_line, &c);
    assert_int_equal(c.errors, 1);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.lines[0], "OK");
}

static void test_garbage(void **state)
{
    liconic_cmd_t c;
    liconic_reply_t r;
    const char *bad_cmds[] = {"",         "C",         "ST",
                              "ST ",      "ST x",      "ST 12345",
                              "WR DM890", "WR DM890 ", "WR DM890 123456",
                              "XX 1",     "RD DM",     "ST 1801 ",
                              "WR 890 1"};
    for (size_t i = 0; i < sizeof bad_cmds / sizeof bad_cmds[0]; i++)
        assert_true(liconic_parse_cmd(bad_cmds[i], strlen(bad_cmds[i]), &c) < 0);
    const char *bad_replies[] = {"", "E", "Ex", "O", "12a", "-", "1234567890123"};
    for (size_t i = 0; i < sizeof bad_replies / sizeof bad_replies[0]; i++)
        assert_true(liconic_parse_reply(bad_replies[i], strlen(bad_replies[i]), &r) < 0);
    char small[4];
    c = (liconic_cmd_t){LICONIC_OP_WRITE_DM, 890, 375, 5};
    assert_int_equal(liconic_encode_cmd(&c, small, sizeof small), LAB_ENOSPACE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake),   cmocka_unit_test(test_climate),
        cmocka_unit_test(test_load_unload), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_racks),       cmocka_unit_test(test_cassettes),
        cmocka_unit_test(test_stream),      cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
