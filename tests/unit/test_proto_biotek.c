/* BioTek codec on the transcripts of PyLabRobot's BioTek tests
 * (pylabrobot/legacy/plate_reading/agilent/biotek_tests.py) and the framing of
 * pylabrobot/legacy/plate_reading/agilent/biotek_backend.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/biotek.h"

/* test_read_absorbance: the body of a full 96-well read at 580 nm. */
static const char body96[] =
    "01,1,\r000:00:00.0,228,01,01,+0.1917,01,02,+0.1225,01,03,+0.0667,01,04,+0.0728,01,05,+0."
    "0722,01,06,+0.0664,01,07,+0.0763,01,08,+0.0726,01,09,+0.0825,01,10,+0.1001,01,11,+0.1443"
    ",01,12,+0.2105\r\n,02,12,+0.1986,02,11,+0.0800,02,10,+0.0796,02,09,+0.0871,02,08,+0.1059"
    ",02,07,+0.0868,02,06,+0.0544,02,05,+0.0644,02,04,+0.0752,02,03,+0.0768,02,02,+0.0925,02"
    ",01,+0.0802\r\n,03,01,+0.0925,03,02,+0.1007,03,03,+0.0697,03,04,+0.0736,03,05,+0.0712,03"
    ",06,+0.0719,03,07,+0.0710,03,08,+0.0794,03,09,+0.0645,03,10,+0.0799,03,11,+0.0779,03,12,"
    "+0.1256\r\n,04,12,+0.1525,04,11,+0.0711,04,10,+0.0858,04,09,+0.0753,04,08,+0.0787,04,07,"
    "+0.0778,04,06,+0.0895,04,05,+0.0733,04,04,+0.0711,04,03,+0.0672,04,02,+0.0719,04,01,+0.0"
    "954\r\n,05,01,+0.0841,05,02,+0.0610,05,03,+0.0766,05,04,+0.0773,05,05,+0.0632,05,06,+0.0"
    "787,05,07,+0.1100,05,08,+0.0645,05,09,+0.0934,05,10,+0.1439,05,11,+0.1113,05,12,+0.1281"
    "\r\n,06,12,+0.1649,06,11,+0.0707,06,10,+0.0892,06,09,+0.0712,06,08,+0.0935,06,07,+0.1079"
    ",06,06,+0.0704,06,05,+0.0978,06,04,+0.0596,06,03,+0.0794,06,02,+0.0776,06,01,+0.0930\r\n"
    ",07,01,+0.1255,07,02,+0.0742,07,03,+0.0747,07,04,+0.0694,07,05,+0.1004,07,06,+0.0900,07,"
    "07,+0.0659,07,08,+0.0858,07,09,+0.0876,07,10,+0.0815,07,11,+0.0980,07,12,+0.1329\r\n,08,"
    "12,+0.1316,08,11,+0.1290,08,10,+0.1103,08,09,+0.0667,08,08,+0.0790,08,07,+0.0602,08,06,+"
    "0.0670,08,05,+0.0732,08,04,+0.0657,08,03,+0.0684,08,02,+0.1174,08,01,+0.1427\r\n228\x1a"
    "041\x1a"
    "0000\x03";

/* test_parse_body_asterisks_as_nan: first two rows of the body. */
static const char body_stars[] = "01,1,\r000:00:00.0,233,"
                                 "01,01,4292723,01,02,*******,01,03,3492028\r\n"
                                 ",02,03,*******,02,02,*******,02,01,4339544"
                                 "\r\n233\x1a"
                                 "014\x1a"
                                 "0000";

typedef struct frames {
    int n, errors, acks;
    char last[256];
    size_t last_len;
} frames_t;

static int on_frame(void *ud, const biotek_frame_t *f, int err)
{
    frames_t *fr = ud;
    if (err) {
        fr->errors++;
        return 0;
    }
    fr->n++;
    fr->acks += f->ack;
    fr->last_len = f->len < sizeof fr->last ? f->len : sizeof fr->last - 1;
    memcpy(fr->last, f->payload, fr->last_len);
    fr->last[fr->last_len] = '\0';
    return 0;
}

static void feed(biotek_rx_t *rx, const char *s, size_t n, frames_t *fr)
{
    for (size_t i = 0; i < n; i++)
        biotek_rx_feed(rx, (const uint8_t *)s + i, 1, on_frame, fr);
}

static void test_absorbance_definition(void **state)
{
    /* write b"004701010108120001200100001100100000106000080580113\x03" for all 96 wells at
     * 580 nm: rectangle 01,01 - 08,12, checksum 13 = sum % 100. */
    const char golden[] = "004701010108120001200100001100100000106000080580113\x03";
    char buf[80];
    biotek_rect_t r = {1, 1, 8, 12};
    int n = biotek_encode_absorbance(&r, 580, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(golden));
    assert_memory_equal(buf, golden, (size_t)n);

    biotek_rect_t back;
    int wl;
    assert_int_equal(biotek_parse_absorbance(golden, strlen(golden) - 1, &back, &wl), PROTO_OK);
    assert_int_equal(back.row1, 8);
    assert_int_equal(back.col1, 12);
    assert_int_equal(wl, 580);

    char bad[80];
    memcpy(bad, golden, strlen(golden));
    bad[49] = '9';
    assert_int_equal(biotek_parse_absorbance(bad, strlen(golden) - 1, &back, &wl), PROTO_ECHECKSUM);
    assert_int_equal(biotek_encode_absorbance(&r, 1200, buf, sizeof buf), PROTO_ERANGE);
    r.row1 = 17;
    assert_int_equal(biotek_encode_absorbance(&r, 580, buf, sizeof buf), PROTO_ERANGE);
}

static void test_body_96(void **state)
{
    static biotek_plate_t p;
    /* The body arrives as an ETX frame; the parser sees it without the ETX. */
    assert_int_equal(biotek_parse_body(body96, strlen(body96) - 1, 8, 12, &p), PROTO_OK);
    assert_int_equal(p.n_triples, 96);
    assert_int_equal(p.code, 228);
    assert_int_equal(p.trailer, 41);
    assert_int_equal(p.status, 0);
    /* expected_data in the same test: serpentine rows land in plate order. */
    assert_true(p.value[0][0] == 0.1917);
    assert_true(p.value[0][11] == 0.2105);
    assert_true(p.value[1][0] == 0.0802);
    assert_true(p.value[1][11] == 0.1986);
    assert_true(p.value[7][0] == 0.1427);
    assert_true(p.value[7][11] == 0.1316);
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 12; c++)
            assert_int_equal(p.state[r][c], BIOTEK_WELL_VALUE);
    /* The same body does not fit a plate with fewer columns. */
    assert_int_equal(biotek_parse_body(body96, strlen(body96) - 1, 8, 6, &p), PROTO_ERANGE);
}

static void test_body_asterisks(void **state)
{
    static biotek_plate_t p;
    assert_int_equal(biotek_parse_body(body_stars, strlen(body_stars), 8, 12, &p), PROTO_OK);
    assert_true(p.value[0][0] == 4292723);
    assert_int_equal(p.state[0][1], BIOTEK_WELL_NOVALUE);
    assert_true(isnan(p.value[0][1]));
    assert_true(p.value[1][0] == 4339544);
    assert_int_equal(p.state[5][5], BIOTEK_WELL_ABSENT);
}

static void test_body_384_roundtrip(void **state)
{
    static biotek_plate_t in, out;
    static char buf[BIOTEK_FRAME_MAX];
    in.rows = 16;
    in.cols = 24;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 24; c++) {
            in.value[r][c] = (r * 24 + c) / 1000.0;
            in.state[r][c] = (r + c) % 7 ? BIOTEK_WELL_VALUE : BIOTEK_WELL_NOVALUE;
        }
    biotek_rect_t all = {1, 1, 16, 24};
    int n = biotek_encode_body(&in, &all, BIOTEK_FMT_ABSORBANCE, 228, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(buf[n - 1], BIOTEK_ETX);
    assert_int_equal(biotek_parse_body(buf, (size_t)n - 1, 16, 24, &out), PROTO_OK);
    assert_int_equal(out.n_triples, 384);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 24; c++) {
            assert_int_equal(out.state[r][c], in.state[r][c]);
            if (in.state[r][c] == BIOTEK_WELL_VALUE)
                assert_true(fabs(out.value[r][c] - in.value[r][c]) < 1e-9);
        }
    assert_int_equal(biotek_encode_body(&in, &all, BIOTEK_FMT_ABSORBANCE, 228, buf, 100),
                     PROTO_ENOSPACE);
}

static void test_truncated_and_garbage_bodies(void **state)
{
    static biotek_plate_t p;
    size_t len = strlen(body96) - 1;
    /* Every prefix parses to an error or a subset, never past the buffer (ASan checks). */
    for (size_t k = 0; k < len; k++) {
        int rc = biotek_parse_body(body96, k, 8, 12, &p);
        assert_true(rc < 0);
    }
    const char *bad[] = {"",
                         "01,1,\r000:00:00.0,228,\r\n",
                         "01,1,\r000:00:00.0,228,01,01\r\n228\x1a"
                         "000\x1a"
                         "0000",
                         "01,1,\r000:00:00.0,228,01,01,+0.1,01\r\n228\x1a"
                         "000\x1a"
                         "0000",
                         "01,1,\r000:00:00.0,228,01,01,nan\r\n228\x1a"
                         "000\x1a"
                         "0000",
                         "01,1,\r000:00:00.0,228,00,01,+0.1\r\n228\x1a"
                         "000\x1a"
                         "0000",
                         "01,1,\r000:00:00.0,228,01,01,+0.1\r,01,02,+0.2\r\n228\x1a"
                         "000\x1a"
                         "0000",
                         "01,1,\r000:00:00.0,228,01,01,+0.1,,\r\n228\x1a"
                         "000\x1a"
                         "0000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_true(biotek_parse_body(bad[i], strlen(bad[i]), 8, 12, &p) < 0);
    /* The error points at the bad triple: "nan" is the value of the first one, at offset 22. */
    assert_int_equal(biotek_parse_body(bad[4], strlen(bad[4]), 8, 12, &p), PROTO_ESYNTAX);
    assert_int_equal(p.err_at, 22);
    assert_int_equal(biotek_parse_body(bad[6], strlen(bad[6]), 8, 12, &p), PROTO_ESYNTAX);
    assert_int_equal(p.err_at, 32); /* the lone CR after the first triple */
}

static void test_transcript_stream(void **state)
{
    /* test_read_absorbance reads, byte by byte: ACK + ETX for the plate ('y'); ACK, then the
     * definition's reply frame for 'D'; "\x060000\x03" for 'O'; the body; and the temperature
     * "\x062360000\x03" (23.6 degC). */
    biotek_rx_t rx;
    frames_t fr = {0};
    biotek_rx_init(&rx);
    biotek_rx_expect(&rx, BIOTEK_EXPECT_ACK);
    feed(&rx, "\x06", 1, &fr);
    assert_int_equal(fr.acks, 1);
    biotek_rx_expect(&rx, BIOTEK_EXPECT_ETX);
    feed(&rx, "\x03", 1, &fr);
    assert_int_equal(fr.n, 2);
    assert_int_equal(fr.last_len, 0);
    biotek_rx_expect(&rx, BIOTEK_EXPECT_ACK);
    feed(&rx, "\x06", 1, &fr);
    biotek_rx_expect(&rx, BIOTEK_EXPECT_ETX);
    feed(&rx,
         "\x06"
         "0350000000000000010000000000490300000\x03",
         39, &fr);
    assert_string_equal(fr.last, "0350000000000000010000000000490300000");
    feed(&rx,
         "\x06"
         "0000\x03",
         6, &fr);
    assert_string_equal(fr.last, "0000");
    feed(&rx, body96, strlen(body96), &fr);
    assert_int_equal(fr.n, 6);
    feed(&rx,
         "\x06"
         "2360000\x03",
         9, &fr);
    double t;
    assert_int_equal(biotek_parse_temperature(fr.last, fr.last_len, &t), PROTO_OK);
    assert_true(fabs(t - 23.6) < 1e-9);
    assert_int_equal(fr.errors, 0);

    char buf[16];
    assert_int_equal(biotek_encode_temperature(23.6, buf, sizeof buf), 9);
    assert_memory_equal(buf,
                        "\x06"
                        "2360000\x03",
                        9);
}

static void test_version(void **state)
{
    /* test_setup: "\x061650200  Version 1.04   0000\x03". */
    biotek_rx_t rx;
    frames_t fr = {0};
    biotek_rx_init(&rx);
    /* Noise before the reply is reported once and skipped. */
    biotek_rx_expect(&rx, BIOTEK_EXPECT_ACK);
    feed(&rx, "zz", 2, &fr);
    assert_int_equal(fr.errors, 1);
    biotek_rx_expect(&rx, BIOTEK_EXPECT_ETX);
    feed(&rx,
         "\x06"
         "1650200  Version 1.04   0000\x03",
         30, &fr);
    assert_int_equal(fr.acks, 1);
    char part[16], ver[16];
    assert_int_equal(biotek_parse_version(fr.last, fr.last_len, part, sizeof part, ver, sizeof ver),
                     PROTO_OK);
    assert_string_equal(part, "1650200");
    assert_string_equal(ver, "1.04");
    assert_int_equal(biotek_parse_version("1650200", 7, part, sizeof part, ver, sizeof ver),
                     PROTO_ESYNTAX);
    assert_int_equal(biotek_parse_version(fr.last, fr.last_len, part, 3, ver, sizeof ver),
                     PROTO_ENOSPACE);
}

typedef struct cmds {
    char letters[16];
    char params[16][64];
    int n, acks, errors;
} cmds_t;

static int on_cmd(void *ud, const biotek_cmd_t *c, int phase, int err)
{
    cmds_t *k = ud;
    if (err) {
        k->errors++;
        return 0;
    }
    if (phase == 0) {
        k->acks++;
        return 0;
    }
    if (k->n < 16) {
        k->letters[k->n] = c->letter;
        size_t n = c->param_len < 63 ? c->param_len : 63;
        memcpy(k->params[k->n], c->param, n);
        k->params[k->n][n] = '\0';
        k->n++;
    }
    return 0;
}

static void test_simulator_side_commands(void **state)
{
    /* Letters and parameters the backend writes: "&" "S1", "D" + definition + ETX, "O", "g"
     * "00000", "i" "x", "e"; an unknown letter is reported and skipped. */
    const char wire[] = "&S1D004701010108120001200100001100100000106000080580113\x03"
                        "OZg00000ixe";
    biotek_cmd_rx_t rx;
    cmds_t k = {0};
    biotek_cmd_rx_init(&rx);
    biotek_cmd_rx_feed(&rx, (const uint8_t *)wire, sizeof wire - 1, on_cmd, &k);
    assert_int_equal(k.errors, 1);
    assert_int_equal(k.n, 6);
    assert_memory_equal(k.letters, "&DOgie", 6);
    assert_string_equal(k.params[0], "S1");
    assert_int_equal(strlen(k.params[1]), 51);
    assert_string_equal(k.params[3], "00000");
    assert_int_equal(k.acks, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absorbance_definition),
        cmocka_unit_test(test_body_96),
        cmocka_unit_test(test_body_asterisks),
        cmocka_unit_test(test_body_384_roundtrip),
        cmocka_unit_test(test_truncated_and_garbage_bodies),
        cmocka_unit_test(test_transcript_stream),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_simulator_side_commands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
