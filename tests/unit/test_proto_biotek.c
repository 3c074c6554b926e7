/* BioTek codec on the transcripts of PyLabRobot's BioTek tests and the frames of its backend:
 * repository PyLabRobot/pylabrobot, commit 598b58ffbef97fe33db6e1421b532cc9a389cbcb,
 *   T = pylabrobot/legacy/plate_reading/agilent/biotek_tests.py (recorded reader replies),
 *   B = pylabrobot/legacy/plate_reading/agilent/biotek_backend.py (what the host writes).
 * Each golden frame below names its file, test and line; none comes from our encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/biotek.h"
#include "tests/fixtures/biotek_plr.h"

/* T test_parse_body_asterisks_as_nan, lines 350-375: first two rows of the body. */
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
    /* T test_read_absorbance, line 116: write b"004701010108120001200100001100100000106000080580113
     * \x03" for all 96 wells at 580 nm: rectangle 01,01 - 08,12, checksum 13 = sum % 100. */
    const char golden[] = "004701010108120001200100001100100000106000080580113\x03";
    char buf[80];
    biotek_rect_t r = {1, 1, 8, 12};
    int n = biotek_encode_absorbance(&r, 580, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(golden));
    assert_memory_equal(buf, golden, (size_t)n);

    biotek_rect_t back;
    int wl;
    assert_int_equal(biotek_parse_absorbance(golden, strlen(golden) - 1, &back, &wl), LAB_OK);
    assert_int_equal(back.row1, 8);
    assert_int_equal(back.col1, 12);
    assert_int_equal(wl, 580);

    char bad[80];
    memcpy(bad, golden, strlen(golden));
    bad[49] = '9';
    assert_int_equal(biotek_parse_absorbance(bad, strlen(golden) - 1, &back, &wl), LAB_ECHECKSUM);
    assert_int_equal(biotek_encode_absorbance(&r, 1200, buf, sizeof buf), LAB_ERANGE);
    r.row1 = 17;
    assert_int_equal(biotek_encode_absorbance(&r, 580, buf, sizeof buf), LAB_ERANGE);
}

static void test_body_96(void **state)
{
    static biotek_plate_t p;
    /* The body arrives as an ETX frame; the parser sees it without the ETX. */
    assert_int_equal(biotek_parse_body(biotek_plr_body96, strlen(biotek_plr_body96) - 1, 8, 12, &p),
                     LAB_OK);
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
    assert_int_equal(biotek_parse_body(biotek_plr_body96, strlen(biotek_plr_body96) - 1, 8, 6, &p),
                     LAB_ERANGE);
}

static void test_body_asterisks(void **state)
{
    static biotek_plate_t p;
    assert_int_equal(biotek_parse_body(body_stars, strlen(body_stars), 8, 12, &p), LAB_OK);
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
    assert_int_equal(biotek_parse_body(buf, (size_t)n - 1, 16, 24, &out), LAB_OK);
    assert_int_equal(out.n_triples, 384);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 24; c++) {
            assert_int_equal(out.state[r][c], in.state[r][c]);
            if (in.state[r][c] == BIOTEK_WELL_VALUE)
                assert_true(fabs(out.value[r][c] - in.value[r][c]) < 1e-9);
        }
    assert_int_equal(biotek_encode_body(&in, &all, BIOTEK_FMT_ABSORBANCE, 228, buf, 100),
                     LAB_ENOSPACE);
}

static void test_truncated_and_garbage_bodies(void **state)
{
    static biotek_plate_t p;
    size_t len = strlen(biotek_plr_body96) - 1;
    /* Every prefix parses to an error or a subset, never past the buffer (ASan checks). */
    for (size_t k = 0; k < len; k++) {
        int rc = biotek_parse_body(biotek_plr_body96, k, 8, 12, &p);
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
    assert_int_equal(biotek_parse_body(bad[4], strlen(bad[4]), 8, 12, &p), LAB_ESYNTAX);
    assert_int_equal(p.err_at, 22);
    assert_int_equal(biotek_parse_body(bad[6], strlen(bad[6]), 8, 12, &p), LAB_ESYNTAX);
    assert_int_equal(p.err_at, 32); /* the lone CR after the first triple */
}

/* The frames of a transcript, read the way the driver reads them: it says before each byte
 * whether it awaits a lone ACK (after a command letter that takes a parameter) or an ETX frame. */
typedef struct script {
    const biotek_expect_t *expect;
    int n, at;
    biotek_rx_t *rx;
    frames_t fr;
    char payload[8][64];
    int ack[8];
} script_t;

static int on_script_frame(void *ud, const biotek_frame_t *f, int err)
{
    script_t *sc = ud;
    on_frame(&sc->fr, f, err);
    if (err || sc->at >= sc->n)
        return 0;
    snprintf(sc->payload[sc->at], sizeof sc->payload[0], "%.*s", (int)f->len, f->payload);
    sc->ack[sc->at] = f->ack;
    if (++sc->at < sc->n)
        biotek_rx_expect(sc->rx, sc->expect[sc->at]);
    return 1;
}

static void test_transcript_stream(void **state)
{
    /* T test_read_absorbance, lines 81-106, byte for byte: ACK and a bare ETX for the plate
     * geometry ('y'); ACK, then 37 digits and ETX without ACK for the read definition ('D');
     * "\x06" "0000" ETX for the run ('O'); the body; the temperature "\x06" "2360000" ETX. */
    static char wire[4096];
    int n = snprintf(wire, sizeof wire, "%s%s%s%s",
                     "\x06\x03\x06"
                     "0350000000000000010000000000490300000\x03"
                     "\x06"
                     "0000\x03",
                     biotek_plr_body96,
                     "\x06"
                     "2360000\x03",
                     "");
    static const biotek_expect_t expect[] = {
        BIOTEK_EXPECT_ACK, BIOTEK_EXPECT_ETX, BIOTEK_EXPECT_ACK, BIOTEK_EXPECT_ETX,
        BIOTEK_EXPECT_ETX, BIOTEK_EXPECT_ETX, BIOTEK_EXPECT_ETX};
    biotek_rx_t rx;
    script_t sc = {.expect = expect, .n = 7, .rx = &rx};
    biotek_rx_init(&rx);
    biotek_rx_expect(&rx, expect[0]);
    size_t off = 0;
    while (off < (size_t)n)
        off +=
            biotek_rx_feed(&rx, (const uint8_t *)wire + off, (size_t)n - off, on_script_frame, &sc);
    assert_int_equal(sc.fr.errors, 0);
    assert_int_equal(sc.at, 7);
    size_t bad;
    /* 'y': its parameter is answered by nothing at all. */
    assert_int_equal(sc.ack[1], 0);
    assert_int_equal(biotek_parse_status(sc.payload[1], strlen(sc.payload[1]), &bad),
                     BIOTEK_STATUS_EMPTY);
    /* 'D': no ACK, no "0000". */
    assert_int_equal(sc.ack[3], 0);
    assert_string_equal(sc.payload[3], "0350000000000000010000000000490300000");
    assert_int_equal(biotek_parse_status(sc.payload[3], strlen(sc.payload[3]), &bad),
                     BIOTEK_STATUS_READ);
    /* 'O': ACK "0000". */
    assert_int_equal(sc.ack[4], 1);
    assert_string_equal(sc.payload[4], "0000");
    /* The body's first bytes, then the temperature: int(resp[1:-1]) / 100000 == 23.6. */
    assert_memory_equal(sc.payload[5], "01,1,\r000:00:00.0,228,01,01,+0.1917", 35);
    double t;
    assert_int_equal(biotek_parse_temperature(sc.payload[6], strlen(sc.payload[6]), &t), LAB_OK);
    assert_true(fabs(t - 23.6) < 1e-9);

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
                     LAB_OK);
    assert_string_equal(part, "1650200");
    assert_string_equal(ver, "1.04");
    assert_int_equal(biotek_parse_version("1650200", 7, part, sizeof part, ver, sizeof ver),
                     LAB_ESYNTAX);
    assert_int_equal(biotek_parse_version(fr.last, fr.last_len, part, 3, ver, sizeof ver),
                     LAB_ENOSPACE);
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

/* T test_read_fluorescence, lines 283-298: a 96-well body of counts ("0000427"). */
static const char body_fl[] =
    "01,1,\r000:00:00.0,227,01,01,0000427,01,02,0000746,01,03,0000598,01,04,0000742,01,05,0001"
    "516,01,06,0000704,01,07,0000676,01,08,0000734,01,09,0001126,01,10,0000790,01,11,0000531,0"
    "1,12,0000531\r\n,02,12,0002066,02,11,0000541,02,10,0000618,02,09,0000629,02,08,0000891,02"
    ",07,0000731,02,06,0000484,02,05,0000576,02,04,0000465,02,03,0000501,02,02,0002187,02,01,0"
    "000462\r\n,03,01,0000728,03,02,0000583,03,03,0000472,03,04,0000492,03,05,0000501,03,06,00"
    "00491,03,07,0000580,03,08,0000541,03,09,0000556,03,10,0000474,03,11,0000532,03,12,0000522"
    "\r\n,04,12,0000570,04,11,0000523,04,10,0000784,04,09,0000441,04,08,0000703,04,07,0000591,"
    "04,06,0000580,04,05,0000479,04,04,0000474,04,03,0000414,04,02,0000520,04,01,0000427\r\n,0"
    "5,01,0000486,05,02,0000422,05,03,0000612,05,04,0000588,05,05,0000805,05,06,0000510,05,07,"
    "0001697,05,08,0000615,05,09,0001137,05,10,0000653,05,11,0000558,05,12,0000648\r\n,06,12,0"
    "000765,06,11,0000487,06,10,0000683,06,09,0001068,06,08,0000721,06,07,0003269,06,06,000067"
    "9,06,05,0000532,06,04,0000601,06,03,0000491,06,02,0000538,06,01,0000688\r\n,07,01,0000653"
    ",07,02,0000783,07,03,0000522,07,04,0000536,07,05,0000673,07,06,0000858,07,07,0000526,07,0"
    "8,0000627,07,09,0000574,07,10,0001993,07,11,0000712,07,12,0000970\r\n,08,12,0000523,08,11"
    ",0000607,08,10,0003002,08,09,0000900,08,08,0000697,08,07,0000542,08,06,0000688,08,05,0000"
    "622,08,04,0000555,08,03,0000542,08,02,0000742,08,01,0001118\r\n228\x1a"
    "091\x1a"
    "0000";

static void test_body_counts(void **state)
{
    /* expected_data of the same test (lines 321-330), rows A, B and H. */
    static const double a[12] = {427, 746, 598, 742, 1516, 704, 676, 734, 1126, 790, 531, 531};
    static const double b[12] = {462, 2187, 501, 465, 576, 484, 731, 891, 629, 618, 541, 2066};
    static const double h[12] = {1118, 742, 542, 555, 622, 688, 542, 697, 900, 3002, 607, 523};
    static biotek_plate_t p;
    assert_int_equal(biotek_parse_body(body_fl, strlen(body_fl), 8, 12, &p), LAB_OK);
    assert_int_equal(p.n_triples, 96);
    for (int c = 0; c < 12; c++) {
        assert_true(p.value[0][c] == a[c]);
        assert_true(p.value[1][c] == b[c]);
        assert_true(p.value[7][c] == h[c]);
    }
    /* T test_read_luminescence_partial, line 224: a rectangle B2:G3, expected_data lines
     * 251-259 (43 at B2, 27 at F3, 9 at G3). */
    const char lum[] = "01,1,\r000:00:00.0,237,02,02,0000043,02,03,0000014\r\n,03,03,0000014,03,02,"
                       "0000012\r\n,04,02,0000011,04,03,0000014\r\n,05,03,0000010,05,02,0000010\r"
                       "\n,06,02,0000011,06,03,0000027\r\n,07,03,0000009,07,02,0000010\r\n237\x1a"
                       "160\x1a"
                       "0000";
    assert_int_equal(biotek_parse_body(lum, strlen(lum), 8, 12, &p), LAB_OK);
    assert_int_equal(p.n_triples, 12);
    assert_true(p.value[1][1] == 43 && p.value[5][2] == 27 && p.value[6][2] == 9);
    assert_int_equal(p.state[0][0], BIOTEK_WELL_ABSENT);
}

static void test_plate_geometry(void **state)
{
    /* B set_plate, lines 293-302: the parameter string documented field by field,
     * "08120112207434014351135308559127881422", sent with ETX (line 338). */
    const char golden[] = "08120112207434014351135308559127881422\x03";
    biotek_geometry_t g = {.rows = 8,
                           .cols = 12,
                           .a1_y = 1122,
                           .last_y = 7434,
                           .a1_x = 1435,
                           .last_x = 11353,
                           .size_y = 8559,
                           .size_x = 12788,
                           .size_z = 1422};
    char buf[64];
    int n = biotek_encode_geometry(&g, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(golden));
    assert_memory_equal(buf, golden, (size_t)n);
    biotek_geometry_t back;
    assert_int_equal(biotek_parse_geometry(golden, strlen(golden) - 1, &back), LAB_OK);
    assert_memory_equal(&back, &g, sizeof g);
    /* Every field has a fixed width: a plate taller than 99.99 mm cannot be said. */
    g.size_z = 10000;
    assert_int_equal(biotek_encode_geometry(&g, buf, sizeof buf), LAB_ERANGE);
    g.size_z = 1422;
    g.rows = 0;
    assert_int_equal(biotek_encode_geometry(&g, buf, sizeof buf), LAB_ERANGE);
    assert_int_equal(biotek_parse_geometry(golden, strlen(golden) - 2, &back), LAB_ESYNTAX);
    assert_int_equal(biotek_parse_geometry("0812011220743401435113530855912788142x", 38, &back),
                     LAB_ESYNTAX);
}

static void test_setpoint(void **state)
{
    /* B set_temperature, line 259: "g" with f"{int(temperature * 1000):05}", 37 degC = "37000";
     * B stop_heating_or_cooling, line 262: "g" with "00000". */
    char buf[8];
    assert_int_equal(biotek_encode_setpoint(37, buf, sizeof buf), 5);
    assert_string_equal(buf, "37000");
    assert_int_equal(biotek_encode_setpoint(0, buf, sizeof buf), 5);
    assert_string_equal(buf, "00000");
    assert_int_equal(biotek_encode_setpoint(4, buf, sizeof buf), 5);
    assert_string_equal(buf, "04000");
    assert_int_equal(biotek_encode_setpoint(36.6, buf, sizeof buf), 5);
    assert_string_equal(buf, "36600");
    assert_int_equal(biotek_encode_setpoint(100, buf, sizeof buf), LAB_ERANGE);
    assert_int_equal(biotek_encode_setpoint(-1, buf, sizeof buf), LAB_ERANGE);
    assert_int_equal(biotek_encode_setpoint(NAN, buf, sizeof buf), LAB_ERANGE);
    double c;
    assert_int_equal(biotek_parse_setpoint("37000", 5, &c), LAB_OK);
    assert_true(c == 37);
    assert_int_equal(biotek_parse_setpoint("3700", 4, &c), LAB_ESYNTAX);
    /* The old encoding in hundredths (3700 for 37 degC) is not what the reader takes. */
    assert_int_equal(biotek_parse_setpoint("03700", 5, &c), LAB_OK);
    assert_true(c == 3.7);
}

static void test_status_replies(void **state)
{
    size_t bad = 99;
    /* T test_read_absorbance, line 84 (and test_read_fluorescence line 279): a read definition
     * is answered by 37 digits, no ACK, no "0000". */
    const char *read_status[] = {
        "0350000000000000010000000000490300000",
        "0350000000000000010000000000030200000", /* test_read_luminescence_partial, line 222 */
        "0350000000000000010000000000000170000", /* the same test, line 227 */
    };
    for (int i = 0; i < 3; i++)
        assert_int_equal(biotek_parse_status(read_status[i], strlen(read_status[i]), &bad),
                         BIOTEK_STATUS_READ);
    /* Line 82: the plate geometry's parameter is answered by a bare ETX. */
    assert_int_equal(biotek_parse_status("", 0, &bad), BIOTEK_STATUS_EMPTY);
    /* test_read_fluorescence, line 277: the focal height's by "0000" ETX. */
    assert_int_equal(biotek_parse_status("0000", 4, &bad), BIOTEK_STATUS_OK);
    assert_int_equal(biotek_parse_status("0001", 4, &bad), BIOTEK_STATUS_CODE);
    assert_int_equal(biotek_parse_status("00a0", 4, &bad), LAB_ESYNTAX);
    assert_int_equal(bad, 2);
    assert_int_equal(biotek_parse_status("035000", 6, &bad), LAB_ESYNTAX);
    assert_int_equal(bad, 6);

    /* T test_get_serial_number, line 61: "\x0600000000        0000\x03" is "00000000". */
    biotek_rx_t rx;
    frames_t fr = {0};
    biotek_rx_init(&rx);
    feed(&rx,
         "\x06"
         "00000000        0000\x03",
         22, &fr);
    assert_int_equal(fr.n, 1);
    char serial[16];
    assert_int_equal(biotek_parse_serial(fr.last, fr.last_len, serial, sizeof serial), LAB_OK);
    assert_string_equal(serial, "00000000");
    assert_int_equal(biotek_parse_serial(" 1", 2, serial, sizeof serial), LAB_ESYNTAX);

    char buf[64];
    assert_int_equal(biotek_encode_status(read_status[0], buf, sizeof buf), 38);
    assert_memory_equal(buf, "0350000000000000010000000000490300000\x03", 38);
    assert_int_equal(biotek_encode_status("", buf, sizeof buf), 1);
    assert_int_equal(buf[0], BIOTEK_ETX);
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
        cmocka_unit_test(test_body_counts),
        cmocka_unit_test(test_plate_geometry),
        cmocka_unit_test(test_setpoint),
        cmocka_unit_test(test_status_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
