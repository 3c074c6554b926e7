/* The replay matcher: recordings read into exchanges, requests answered in order, repeats matched
 * to another occurrence, STAR ids tolerated and echoed, the first unseen request placed at the
 * byte where it parts from the nearest recorded one, Modbus PDUs framed for RTU, a link's CR LF
 * or CR after a request recorded without one; and the fixtures
 * of tests/fixtures/wire/ read and answered as recorded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "protocols/proto.h"
#include "sim/replay.h"

#define HDR "{\"labloop_wire\":1,\"id\":\"star1\",\"driver\":\"hamilton-star\"}\n"

/* One event line; hex of the text given. */
static void add(char *buf, size_t cap, const char *d, const char *text)
{
    size_t o = strlen(buf);
    o += (size_t)snprintf(buf + o, cap - o, "{\"t\":1.000,\"wall\":\"w\",\"d\":\"%s\",\"hex\":\"",
                          d);
    for (const char *p = text; *p; p++)
        o += (size_t)snprintf(buf + o, cap - o, "%02x", (uint8_t)*p);
    snprintf(buf + o, cap - o, "\"}\n");
}

static int load_text(replay_t *rp, const char *text, char *err, size_t cap)
{
    char path[] = "/tmp/replay_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    int rc = replay_load(rp, path, err, cap);
    unlink(path);
    return rc;
}

/* Sends one request; the verdict, and on a match the answer compared with want. */
static replay_verdict_t ask(replay_t *rp, const char *req, const char *want)
{
    replay_hit_t hit;
    replay_verdict_t v = replay_match(rp, (const uint8_t *)req, strlen(req), &hit);
    if (v == REPLAY_MATCH) {
        size_t len;
        const uint8_t *a = replay_answer(rp, &hit, (const uint8_t *)req, &len);
        if (len != strlen(want) || memcmp(a, want, len) != 0)
            fail_msg("%s: answered \"%.*s\", want \"%s\"", req, (int)len, (const char *)a, want);
    }
    return v;
}

static void test_exchanges(void **state)
{
    char text[4096] = HDR, err[256];
    add(text, sizeof text, "rx", "HELLO");
    add(text, sizeof text, "tx", "D");
    add(text, sizeof text, "rx", "\x06");
    add(text, sizeof text, "tx", "0047");
    add(text, sizeof text, "tx", "01\x03");
    add(text, sizeof text, "rx", "035");
    add(text, sizeof text, "rx", "0\x03");
    strcat(text, "{\"t\":2.000,\"wall\":\"w\",\"d\":\"ev\",\"ev\":\"offline\"}\n");
    replay_t rp;
    assert_int_equal(load_text(&rp, text, err, sizeof err), 0);
    assert_string_equal(rp.id, "star1");
    assert_int_equal(rp.n, 2);
    assert_false(rp.modbus);
    assert_memory_equal(rp.greeting, "HELLO", 5);
    assert_int_equal(rp.x[1].req_len, 7);
    assert_memory_equal(rp.x[1].req, "004701\x03", 7);
    assert_memory_equal(rp.x[1].rsp, "0350\x03", 5);
    assert_int_equal(rp.x[1].line, 5);
    /* the host's writes cut differently from the recording's */
    assert_int_equal(ask(&rp, "D", "\x06"), REPLAY_MATCH);
    assert_int_equal(ask(&rp, "004", ""), REPLAY_PARTIAL);
    assert_int_equal(ask(&rp, "004701\x03", "0350\x03"), REPLAY_MATCH);
    replay_free(&rp);
}

/* The same request twice with different replies: answered in the recording's order. */
static void test_order(void **state)
{
    char text[4096] = HDR, err[256];
    add(text, sizeof text, "tx", "h");
    add(text, sizeof text, "rx",
        "\x06"
        "2360000\x03");
    add(text, sizeof text, "tx", "h");
    add(text, sizeof text, "rx",
        "\x06"
        "2370000\x03");
    replay_t rp;
    assert_int_equal(load_text(&rp, text, err, sizeof err), 0);
    assert_int_equal(ask(&rp, "h",
                         "\x06"
                         "2360000\x03"),
                     REPLAY_MATCH);
    assert_int_equal(ask(&rp, "h",
                         "\x06"
                         "2370000\x03"),
                     REPLAY_MATCH);
    /* past the end: the nearest earlier occurrence answers again */
    assert_int_equal(ask(&rp, "h",
                         "\x06"
                         "2370000\x03"),
                     REPLAY_MATCH);
    replay_free(&rp);
}

/* Status polls: the host polls more, or fewer, times than the recording did. */
static void test_repeats(void **state)
{
    char text[4096] = HDR, err[256];
    add(text, sizeof text, "tx", "C0RFid0001");
    add(text, sizeof text, "rx", "C0RFid0001er00/00rf1");
    add(text, sizeof text, "tx", "C0QBid0002");
    add(text, sizeof text, "rx", "C0QBid0002er00/00qb0");
    add(text, sizeof text, "tx", "C0QBid0003");
    add(text, sizeof text, "rx", "C0QBid0003er00/00qb1");
    add(text, sizeof text, "tx", "C0TPid0004tm1");
    add(text, sizeof text, "rx", "C0TPid0004er00/00");
    replay_t rp;
    assert_int_equal(load_text(&rp, text, err, sizeof err), 0);
    assert_int_equal(ask(&rp, "C0RFid0011", "C0RFid0011er00/00rf1"), REPLAY_MATCH);
    assert_int_equal(ask(&rp, "C0QBid0012", "C0QBid0012er00/00qb0"), REPLAY_MATCH);
    assert_int_equal(ask(&rp, "C0QBid0013", "C0QBid0013er00/00qb1"), REPLAY_MATCH);
    /* more polls than recorded: the nearest earlier poll, again and again */
    assert_int_equal(ask(&rp, "C0QBid0014", "C0QBid0014er00/00qb1"), REPLAY_MATCH);
    assert_int_equal(ask(&rp, "C0QBid0015", "C0QBid0015er00/00qb1"), REPLAY_MATCH);
    assert_int_equal(ask(&rp, "C0TPid0016tm1", "C0TPid0016er00/00"), REPLAY_MATCH);
    replay_free(&rp);

    /* fewer polls: the later request is found ahead, the skipped poll left unused */
    assert_int_equal(load_text(&rp, text, err, sizeof err), 0);
    assert_int_equal(ask(&rp, "C0RFid0001", "C0RFid0001er00/00rf1"), REPLAY_MATCH);
    assert_int_equal(ask(&rp, "C0QBid0002", "C0QBid0002er00/00qb0"), REPLAY_MATCH);
    assert_int_equal(ask(&rp, "C0TPid0003tm1", "C0TPid0003er00/00"), REPLAY_MATCH);
    assert_int_equal(rp.x[2].uses, 0);
    assert_int_equal(rp.cursor, 4);
    /* both polls differ at byte 3; the nearest is the one most alike after it */
    replay_hit_t hit;
    assert_int_equal(replay_match(&rp, (const uint8_t *)"C0QCid0003", 10, &hit), REPLAY_UNSEEN);
    assert_int_equal(hit.offset, 3);
    assert_int_equal(hit.index, 2);
    replay_free(&rp);
}

/* STAR ids: any 4 digits in the request's id match, and the reply carries the host's; digits
 * that are not an id must match exactly. */
static void test_star_ids(void **state)
{
    char text[4096] = HDR, err[256];
    /* PyLabRobot STAR_tests.py (598b58ffb) test_tip_drop_56: the command and its mocked reply */
    add(text, sizeof text, "tx",
        "C0TRid0003xp00000 00000 00000 00000 01179 01179 00000&yp0000 0000 0000 0000 2058 1968 "
        "0000&tm0 0 0 0 1 1 0&tp2244tz2164th2450te2450ti1");
    add(text, sizeof text, "rx",
        "C0TRid0003kz000 000 000 000 000 000 000 000vz000 000 000 000 000 000 000 000");
    replay_t rp;
    assert_int_equal(load_text(&rp, text, err, sizeof err), 0);
    assert_int_equal(ask(&rp,
                         "C0TRid0417xp00000 00000 00000 00000 01179 01179 00000&yp0000 0000 0000 "
                         "0000 2058 1968 0000&tm0 0 0 0 1 1 0&tp2244tz2164th2450te2450ti1",
                         "C0TRid0417kz000 000 000 000 000 000 000 000vz000 000 000 000 000 000 "
                         "000 000"),
                     REPLAY_MATCH);
    /* one position digit off (xp01179 -> xp01178): unseen, at that byte */
    const char *wrong = "C0TRid0418xp00000 00000 00000 00000 01178 01179 00000&yp0000 0000 0000 "
                        "0000 2058 1968 0000&tm0 0 0 0 1 1 0&tp2244tz2164th2450te2450ti1";
    replay_hit_t hit;
    assert_int_equal(replay_match(&rp, (const uint8_t *)wrong, strlen(wrong), &hit), REPLAY_UNSEEN);
    assert_int_equal(hit.index, 0);
    assert_int_equal(hit.offset, (size_t)(strstr(wrong, "01178") - wrong) + 4);
    replay_free(&rp);
}

/* The first unseen request: the nearest recorded request is the one it shares most bytes with. */
static void test_unseen(void **state)
{
    char text[4096] = HDR, err[256];
    add(text, sizeof text, "tx", "C0ASid0001at0 0&tm1 0&xp02983 00000");
    add(text, sizeof text, "rx", "C0ASid0001er00/00");
    add(text, sizeof text, "tx", "C0DSid0002dm1 1&tm1 0&xp02983 00000");
    add(text, sizeof text, "rx", "C0DSid0002er00/00");
    replay_t rp;
    replay_hit_t hit;
    assert_int_equal(load_text(&rp, text, err, sizeof err), 0);
    const char *req = "C0DSid0005dm1 1&tm0 1&xp02983 00000";
    assert_int_equal(replay_match(&rp, (const uint8_t *)req, strlen(req), &hit), REPLAY_UNSEEN);
    assert_int_equal(hit.index, 1);
    assert_int_equal(hit.offset, 18); /* "tm1" recorded, "tm0" sent */
    assert_int_equal(rp.cursor, 0);   /* an unseen request moves nothing */
    assert_int_equal(rp.answered, 0);
    /* a request cut short is a prefix: more bytes are awaited, offset = its length */
    assert_int_equal(replay_match(&rp, (const uint8_t *)"C0AS", 4, &hit), REPLAY_PARTIAL);
    assert_int_equal(hit.offset, 4);
    /* two requests in one write: the first is answered, the rest stays */
    char two[128];
    snprintf(two, sizeof two, "%s%s", "C0ASid0001at0 0&tm1 0&xp02983 00000", "C0DS");
    assert_int_equal(replay_match(&rp, (const uint8_t *)two, strlen(two), &hit), REPLAY_MATCH);
    assert_int_equal(hit.consumed, strlen(two) - 4);
    replay_free(&rp);

    char out[64];
    replay_printable((const uint8_t *)"D\x06\r\n\"x\\\x03", 8, out, sizeof out);
    assert_string_equal(out, "D\\x06\\r\\n\\\"x\\\\\\x03");
    replay_printable((const uint8_t *)"0123456789", 10, out, 8);
    assert_string_equal(out, "0123...");
}

static void test_bad_recordings(void **state)
{
    char text[4096] = HDR, err[256];
    replay_t rp;
    add(text, sizeof text, "tx", "h");
    strcat(text, "{\"t\":1,\"wall\":\"w\",\"d\":\"req\",\"unit\":1,\"hex\":\"03\"}\n");
    assert_int_equal(load_text(&rp, text, err, sizeof err), LAB_ESYNTAX);
    assert_non_null(strstr(err, ":3: \"req\" in a recording of tx/rx bytes"));

    snprintf(text, sizeof text, HDR "{\"t\":1,\"wall\":\"w\",\"d\":\"ev\",\"ev\":\"open\"}\n");
    assert_int_equal(load_text(&rp, text, err, sizeof err), LAB_ESYNTAX);
    assert_non_null(strstr(err, ": no request in the recording"));

    snprintf(text, sizeof text,
             HDR "{\"t\":1,\"wall\":\"w\",\"d\":\"req\",\"unit\":1,\"hex\":\"03\"}\n"
                 "{\"t\":1,\"wall\":\"w\",\"d\":\"rsp\",\"unit\":2,\"hex\":\"03\"}\n");
    assert_int_equal(load_text(&rp, text, err, sizeof err), LAB_ESYNTAX);
    assert_non_null(strstr(err, ":3: \"rsp\" of unit 2 answers a \"req\" to unit 1"));

    snprintf(text, sizeof text, HDR "{\"labloop_wire\":1,\"id\":\"other\"}\n");
    assert_int_equal(load_text(&rp, text, err, sizeof err), LAB_ESYNTAX);
    assert_non_null(strstr(err, ":2: header of instrument 'other' in a recording of 'star1'"));
}

/* Modbus: a request is unit + PDU; on RTU each frame gets its CRC. minimalmodbus
 * tests/test_minimalmodbus.py (785262db5f) "Recorded data from OmegaCN7500": slave 1,
 * read_bit(2068) is 01 02 08 14 00 01 fb ae, answered 01 02 01 01 60 48. */
static void test_modbus(void **state)
{
    char text[4096] = HDR, err[256];
    strcat(text, "{\"t\":1,\"wall\":\"w\",\"d\":\"req\",\"unit\":1,\"hex\":\"0208140001\"}\n"
                 "{\"t\":1,\"wall\":\"w\",\"d\":\"rsp\",\"unit\":1,\"hex\":\"020101\"}\n"
                 "{\"t\":1,\"wall\":\"w\",\"d\":\"req\",\"unit\":1,\"hex\":\"0310000001\"}\n"
                 "{\"t\":2,\"wall\":\"w\",\"d\":\"ev\",\"ev\":\"timeout\"}\n");
    replay_t rp;
    replay_hit_t hit;
    size_t len;
    assert_int_equal(load_text(&rp, text, err, sizeof err), 0);
    assert_true(rp.modbus);
    assert_false(rp.ids);
    assert_int_equal(rp.n, 2);
    assert_int_equal(replay_set_link(&rp, REPLAY_LINK_BYTES), -1);
    assert_int_equal(replay_set_link(&rp, REPLAY_LINK_MODBUS_RTU), 0);
    static const uint8_t req[] = {0x01, 0x02, 0x08, 0x14, 0x00, 0x01, 0xfb, 0xae};
    static const uint8_t rsp[] = {0x01, 0x02, 0x01, 0x01, 0x60, 0x48};
    assert_int_equal(replay_match(&rp, req, sizeof req, &hit), REPLAY_MATCH);
    const uint8_t *a = replay_answer(&rp, &hit, req, &len);
    assert_int_equal(len, sizeof rsp);
    assert_memory_equal(a, rsp, sizeof rsp);
    /* the request recorded with a timeout: matched, answered with nothing */
    static const uint8_t pv[] = {0x01, 0x03, 0x10, 0x00, 0x00, 0x01, 0x80, 0xca};
    assert_int_equal(replay_match(&rp, pv, sizeof pv, &hit), REPLAY_MATCH);
    assert_null(replay_answer(&rp, &hit, pv, &len));
    assert_int_equal(len, 0);
    replay_free(&rp);
}

/* Line terminators: a USB recording (no CR LF) replayed to a host on a serial or TCP link, which
 * ends each request with CR LF (or CR): the request matches and its reply gets the same
 * terminator; a reply recorded with one keeps it; once the link has sent a terminator, a request
 * without one waits for it until the host is quiet. A recorded request that ends in CR is matched
 * as recorded. */
static void test_terminators(void **state)
{
    char text[4096] = HDR, err[256];
    /* PyLabRobot STAR_tests.py (598b58ffb) test_tip_pickup_01: C0TT; reply as its checks accept */
    add(text, sizeof text, "tx", "C0TTid0001tt01tf1tl0519tv03600tg2tu0");
    add(text, sizeof text, "rx", "C0TTid0001er00/00");
    add(text, sizeof text, "tx", "C0RFid0002");
    add(text, sizeof text, "rx", "C0RFid0002er00/00rf4.0\r\n");
    add(text, sizeof text, "tx", "RD 1915\r");
    add(text, sizeof text, "rx", "1\r\n");
    replay_t rp;
    replay_hit_t hit;
    assert_int_equal(load_text(&rp, text, err, sizeof err), 0);
    /* not a terminator yet: a request as recorded is answered as recorded */
    assert_int_equal(ask(&rp, "C0RFid0007", "C0RFid0007er00/00rf4.0\r\n"), REPLAY_MATCH);
    assert_int_equal(ask(&rp, "C0TTid0042tt01tf1tl0519tv03600tg2tu0\r\n", "C0TTid0042er00/00\r\n"),
                     REPLAY_MATCH);
    assert_int_equal(rp.term_len, 2);
    /* a reply that ends in CR LF in the recording gets no second one */
    assert_int_equal(ask(&rp, "C0RFid0043\r\n", "C0RFid0043er00/00rf4.0\r\n"), REPLAY_MATCH);
    /* the link ends its requests with CR LF: one without is awaited (the host may write the
     * terminator apart), then taken as it is once the host is quiet */
    const char *bare = "C0TTid0044tt01tf1tl0519tv03600tg2tu0";
    assert_int_equal(replay_match(&rp, (const uint8_t *)bare, strlen(bare), &hit), REPLAY_PARTIAL);
    assert_int_equal(replay_match_final(&rp, (const uint8_t *)bare, strlen(bare), &hit),
                     REPLAY_MATCH);
    assert_int_equal(hit.term_len, 0);
    assert_int_equal(hit.consumed, strlen(bare));
    /* a CR at the end of the bytes: its LF may follow */
    assert_int_equal(replay_match(&rp, (const uint8_t *)"C0RFid0045\r", 11, &hit), REPLAY_PARTIAL);
    /* two requests in one write, each with its terminator; the first is answered first */
    const char *two = "C0RFid0046\r\nC0TTid0047tt01tf1tl0519tv03600tg2tu0\r\n";
    assert_int_equal(replay_match(&rp, (const uint8_t *)two, strlen(two), &hit), REPLAY_MATCH);
    assert_int_equal(hit.consumed, 12);
    assert_int_equal(ask(&rp, two + 12, "C0TTid0047er00/00\r\n"), REPLAY_MATCH);
    /* a request recorded with its CR is matched as recorded, and its reply is the recorded one */
    assert_int_equal(ask(&rp, "RD 1915\r", "1\r\n"), REPLAY_MATCH);
    /* anything but CR or LF after a request is the next request, not a terminator */
    assert_int_equal(replay_match(&rp, (const uint8_t *)"C0RFid0048X", 11, &hit), REPLAY_MATCH);
    assert_int_equal(hit.consumed, 10);
    assert_int_equal(hit.term_len, 0);
    /* a different request with CR LF is still unseen, placed at its differing byte */
    const char *other = "C0TTid0049tt02tf1tl0519tv03600tg2tu0\r\n";
    assert_int_equal(replay_match(&rp, (const uint8_t *)other, strlen(other), &hit), REPLAY_UNSEEN);
    assert_int_equal(hit.offset, 13);
    replay_free(&rp);

    /* a link that ends requests with CR alone: the reply gets a CR; a CR at the end of the bytes
     * is then the whole terminator */
    assert_int_equal(load_text(&rp, text, err, sizeof err), 0);
    assert_int_equal(ask(&rp, "C0TTid0001tt01tf1tl0519tv03600tg2tu0\rC0RF", "C0TTid0001er00/00\r"),
                     REPLAY_MATCH);
    assert_int_equal(rp.term_len, 1);
    assert_int_equal(ask(&rp, "C0RFid0002\r", "C0RFid0002er00/00rf4.0\r\n"), REPLAY_MATCH);
    replay_free(&rp);
}

/* Every fixture reads, and each of its recorded requests, sent as recorded, gets its reply. */
static void test_fixtures(void **state)
{
    static const char *const files[] = {"biotek_synergy.jsonl", "star_liquid.jsonl",
                                        "cn7500_minimalmodbus.jsonl", "liconic_stx.jsonl"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[1024], err[512];
        snprintf(path, sizeof path, "%s/tests/fixtures/wire/%s", LAB_SOURCE_DIR_T, files[f]);
        replay_t rp;
        if (replay_load(&rp, path, err, sizeof err))
            fail_msg("%s", err);
        assert_true(rp.n >= 8);
        for (int i = 0; i < rp.n; i++) {
            replay_hit_t hit;
            size_t len;
            uint8_t *req = malloc(rp.x[i].req_len);
            memcpy(req, rp.x[i].req, rp.x[i].req_len);
            assert_int_equal(replay_match(&rp, req, rp.x[i].req_len, &hit), REPLAY_MATCH);
            const uint8_t *a = replay_answer(&rp, &hit, req, &len);
            assert_int_equal(len, rp.x[hit.index].rsp_len);
            assert_memory_equal(a, rp.x[hit.index].rsp, len);
            free(req);
        }
        replay_free(&rp);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exchanges),   cmocka_unit_test(test_order),
        cmocka_unit_test(test_repeats),     cmocka_unit_test(test_star_ids),
        cmocka_unit_test(test_unseen),      cmocka_unit_test(test_bad_recordings),
        cmocka_unit_test(test_modbus),      cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_terminators),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
