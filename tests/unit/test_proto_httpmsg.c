/* The HTTP/1.1 codec (protocols/httpmsg.h) on the messages of RFC 9112 and the robot-server's
 * answers: bodies by Content-Length (fed whole and byte by byte), chunked (RFC 9112 section 7.1,
 * its example) and until the close; keep-alive; every limit and refusal (head and body too long,
 * both Content-Length and Transfer-Encoding, obsolete folding, bytes HTTP forbids, a cut body). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocols/httpmsg.h"
#include "tests/fixtures/opentrons_robot_server.h"

static int feed_all(httpmsg_msg_t *m, const char *text, size_t len, size_t *used)
{
    return httpmsg_msg_feed(m, (const uint8_t *)text, len, used);
}

static void test_request_encode(void **state)
{
    (void)state;
    char buf[512];
    httpmsg_kv_t f[] = {{"Opentrons-Version", "4"}};
    int n = httpmsg_request(buf, sizeof buf, "POST", "/runs", "127.0.0.1:31950", f, 1,
                            ot_rs_run_request, strlen(ot_rs_run_request));
    const char *want = "POST /runs HTTP/1.1\r\nHost: 127.0.0.1:31950\r\nOpentrons-Version: 4\r\n"
                       "Content-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"data\":{}}";
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(buf, want);
    n = httpmsg_request(buf, sizeof buf, "GET", "/health", "robot:31950", f, 1, NULL, 0);
    assert_string_equal(buf, "GET /health HTTP/1.1\r\nHost: robot:31950\r\nOpentrons-Version: "
                             "4\r\n\r\n");
    /* A server reads it back. */
    httpmsg_msg_t m;
    httpmsg_msg_init(&m, true, 1024);
    size_t used;
    assert_int_equal(feed_all(&m, buf, (size_t)n, &used), LAB_OK);
    assert_int_equal(used, (size_t)n);
    assert_string_equal(m.method, "GET");
    assert_string_equal(m.target, "/health");
    assert_string_equal(httpmsg_msg_field(&m, "opentrons-version"), "4");
    assert_int_equal(m.body_len, 0);
    httpmsg_msg_free(&m);
}

/* A target of HTTPMSG_TARGET_MAX bytes and a long field value are written whole (the encoder
 * once cut them at its formatting buffer) and read back. */
static void test_long_request(void **state)
{
    (void)state;
    char target[HTTPMSG_TARGET_MAX + 1], value[3000], buf[8192];
    memset(target, 'a', sizeof target);
    target[0] = '/';
    target[HTTPMSG_TARGET_MAX] = '\0';
    memset(value, 'v', sizeof value);
    value[sizeof value - 1] = '\0';
    httpmsg_kv_t f[] = {{"X-Long", value}};
    int n = httpmsg_request(buf, sizeof buf, "GET", target, "h", f, 1, NULL, 0);
    assert_true(n > HTTPMSG_TARGET_MAX + (int)sizeof value);
    httpmsg_msg_t m;
    httpmsg_msg_init(&m, true, 16);
    size_t used;
    assert_int_equal(httpmsg_msg_feed(&m, (const uint8_t *)buf, (size_t)n, &used), LAB_OK);
    assert_string_equal(m.target, target);
    assert_string_equal(httpmsg_msg_field(&m, "x-long"), value);
    httpmsg_msg_free(&m);
    char reason[600];
    memset(reason, 'r', sizeof reason);
    reason[sizeof reason - 1] = '\0';
    n = httpmsg_response(buf, sizeof buf, 200, reason, NULL, 0, NULL, 0, false);
    assert_true(n > (int)sizeof reason);
    char over[HTTPMSG_TARGET_MAX + 2];
    memset(over, 'a', sizeof over);
    over[0] = '/';
    over[sizeof over - 1] = '\0';
    assert_int_equal(httpmsg_request(buf, sizeof buf, "GET", over, "h", NULL, 0, NULL, 0),
                     LAB_EINVAL);
}

static void test_request_refused(void **state)
{
    (void)state;
    char buf[256];
    httpmsg_kv_t crlf[] = {{"X", "a\r\nInjected: 1"}}, badname[] = {{"Bad Name", "v"}};
    assert_int_equal(httpmsg_request(buf, sizeof buf, "GET", "/", "h", crlf, 1, NULL, 0),
                     LAB_EINVAL);
    assert_int_equal(httpmsg_request(buf, sizeof buf, "GET", "/", "h", badname, 1, NULL, 0),
                     LAB_EINVAL);
    assert_int_equal(httpmsg_request(buf, sizeof buf, "GET", "/a b", "h", NULL, 0, NULL, 0),
                     LAB_EINVAL);
    assert_int_equal(httpmsg_request(buf, sizeof buf, "G T", "/", "h", NULL, 0, NULL, 0),
                     LAB_EINVAL);
    assert_int_equal(httpmsg_request(buf, sizeof buf, "GET", "/\xc3\xa9", "h", NULL, 0, NULL, 0),
                     LAB_EINVAL);
    assert_int_equal(httpmsg_request(buf, 20, "GET", "/health", "host", NULL, 0, NULL, 0),
                     LAB_ENOSPACE);
}

/* The robot-server's answer to POST /runs (test_home.tavern.yaml), whole and a byte at a time. */
static void test_length_body(void **state)
{
    (void)state;
    char resp[2048];
    httpmsg_kv_t f[] = {{"Opentrons-Version", OT_RS_VERSION},
                        {"Opentrons-Min-Version", OT_RS_MIN_VERSION}};
    int n = httpmsg_response(resp, sizeof resp, 201, "Created", f, 2, ot_rs_run_answer,
                             strlen(ot_rs_run_answer), false);
    assert_true(n > 0);
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        httpmsg_msg_t m;
        httpmsg_msg_init(&m, false, 4096);
        int rc = LAB_EAGAIN;
        size_t used = 0, at = 0;
        while (rc == LAB_EAGAIN && at < (size_t)n) {
            size_t step = bytewise ? 1 : (size_t)n;
            rc = feed_all(&m, resp + at, step, &used);
            assert_int_equal(used, step);
            at += step;
        }
        assert_int_equal(rc, LAB_OK);
        assert_int_equal(at, (size_t)n);
        assert_int_equal(m.status, 201);
        assert_string_equal(m.reason, "Created");
        assert_true(m.keep_alive);
        assert_int_equal(m.content_length, (long long)strlen(ot_rs_run_answer));
        assert_string_equal(m.body, ot_rs_run_answer);
        assert_string_equal(httpmsg_msg_field(&m, "OPENTRONS-VERSION"), "4");
        httpmsg_msg_free(&m);
    }
}

/* RFC 9112 section 7.1's chunked example body, with an extension and a trailer field. */
static void test_chunked(void **state)
{
    (void)state;
    const char *r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n"
                    "Expires: never\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    httpmsg_msg_t m;
    httpmsg_msg_init(&m, false, 4096);
    size_t used;
    assert_int_equal(feed_all(&m, r, strlen(r), &used), LAB_OK);
    assert_string_equal(m.body, "Wikipedia in\r\n\r\nchunks.");
    assert_true(m.chunked);
    /* The next message on the connection starts where this one ended. */
    const char *next = r + used;
    assert_memory_equal(next, "HTTP/1.1 204", 12);
    httpmsg_msg_reset(&m);
    assert_int_equal(feed_all(&m, next, strlen(next), &used), LAB_OK);
    assert_int_equal(m.status, 204);
    assert_int_equal(m.body_len, 0);
    httpmsg_msg_free(&m);
}

static void test_close_delimited(void **state)
{
    (void)state;
    const char *r = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
    httpmsg_msg_t m;
    httpmsg_msg_init(&m, false, 4096);
    size_t used;
    assert_int_equal(feed_all(&m, r, strlen(r), &used), LAB_EAGAIN);
    assert_false(m.keep_alive);
    assert_int_equal(httpmsg_msg_eof(&m), LAB_OK);
    assert_string_equal(m.body, "{\"a\":1}");
    /* A cut Content-Length body is not an answer. */
    httpmsg_msg_reset(&m);
    const char *cut = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\"";
    assert_int_equal(feed_all(&m, cut, strlen(cut), &used), LAB_EAGAIN);
    assert_int_equal(httpmsg_msg_eof(&m), LAB_ESYNTAX);
    assert_non_null(strstr(m.why, "inside the body"));
    httpmsg_msg_reset(&m);
    assert_int_equal(httpmsg_msg_eof(&m), LAB_EAGAIN); /* nothing came: no message */
    httpmsg_msg_free(&m);
}

static void test_keep_alive(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool keep;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true},
        {"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n", false},
        {"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false},
        {"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", true},
        {"HTTP/1.1 200 OK\nContent-Length: 0\n\n", true}, /* bare LF line ends */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        httpmsg_msg_t m;
        httpmsg_msg_init(&m, false, 16);
        size_t used;
        assert_int_equal(feed_all(&m, cases[i].text, strlen(cases[i].text), &used), LAB_OK);
        assert_int_equal(m.keep_alive, cases[i].keep);
        httpmsg_msg_free(&m);
    }
}

static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int rc;
        const char *why;
    } cases[] = {
        {"\x93\xfa\xc1\x80\xee\xa0\xb1\x9fHTTP/1.1 200 OK\r\n\r\n", LAB_ESYNTAX, "not HTTP"},
        {"HTTP/2 200 OK\r\n\r\n", LAB_ESYNTAX, "not HTTP/1.x"},
        {"HTTP/1.1 20 OK\r\n\r\n", LAB_ESYNTAX, "three digits"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", LAB_ESYNTAX,
         "both"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", LAB_ESYNTAX,
         "two different"},
        {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", LAB_ESYNTAX, "not a number"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", LAB_ETOOLONG,
         "over"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n", LAB_ETOOLONG, "over 64"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", LAB_ESYNTAX, "only chunked"},
        {"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", LAB_ESYNTAX, "folding"},
        {"HTTP/1.1 200 OK\r\nX: a\x01\r\n\r\n", LAB_ESYNTAX, "byte 0x01"},
        {"HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n", LAB_ESYNTAX, "field name"},
        {"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", LAB_ESYNTAX, "without a name"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", LAB_ESYNTAX, "hexadecimal"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n", LAB_ETOOLONG, "64"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", LAB_ESYNTAX,
         "after chunk data"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         "1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
         LAB_ETOOLONG, "chunk-size line"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        httpmsg_msg_t m;
        httpmsg_msg_init(&m, false, 64);
        size_t used;
        int rc = feed_all(&m, cases[i].text, strlen(cases[i].text), &used);
        if (rc != cases[i].rc || !strstr(m.why, cases[i].why))
            fail_msg("case %zu: rc %d why '%s', expected %d '%s'", i, rc, m.why, cases[i].rc,
                     cases[i].why);
        /* Failed stays failed: the connection's bytes cannot be trusted any more. */
        if (feed_all(&m, "x", 1, &used) != LAB_ESYNTAX)
            fail_msg("case %zu: usable after failing", i);
        httpmsg_msg_free(&m);
    }
    /* A NUL in the head. */
    httpmsg_msg_t m;
    httpmsg_msg_init(&m, false, 64);
    size_t used;
    static const char nul[] = "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n";
    assert_int_equal(feed_all(&m, nul, sizeof nul - 1, &used), LAB_ESYNTAX);
    httpmsg_msg_free(&m);
}

static void test_limits(void **state)
{
    (void)state;
    /* A head of exactly HTTPMSG_HEAD_MAX bytes is read; one byte more is refused. */
    char *big = malloc(HTTPMSG_HEAD_MAX + 64);
    for (int over = 0; over < 2; over++) {
        const char *start = "HTTP/1.1 200 OK\r\nX: ";
        const char *end = "\r\nContent-Length: 0\r\n\r\n";
        size_t fill = HTTPMSG_HEAD_MAX - strlen(start) - strlen(end) + (size_t)over;
        strcpy(big, start);
        memset(big + strlen(start), 'v', fill);
        strcpy(big + strlen(start) + fill, end);
        httpmsg_msg_t m;
        httpmsg_msg_init(&m, false, 64);
        size_t used;
        int rc = feed_all(&m, big, strlen(big), &used);
        assert_int_equal(rc, over ? LAB_ETOOLONG : LAB_OK);
        httpmsg_msg_free(&m);
    }
    free(big);
    /* Too many fields. */
    char many[4096] = "HTTP/1.1 200 OK\r\n";
    for (int i = 0; i <= HTTPMSG_FIELDS_MAX; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "F%d: v\r\n", i);
    strcat(many, "\r\n");
    httpmsg_msg_t m;
    httpmsg_msg_init(&m, false, 64);
    size_t used;
    assert_int_equal(feed_all(&m, many, strlen(many), &used), LAB_ETOOLONG);
    httpmsg_msg_free(&m);
    /* Non-ASCII (obs-text) in a reason phrase and a field value is HTTP, and kept as is. */
    const char *utf = "HTTP/1.1 409 Konflikt \xc3\xa4\r\nX-Detail: \xe2\x82\xac\r\n"
                      "Content-Length: 0\r\n\r\n";
    httpmsg_msg_init(&m, false, 64);
    assert_int_equal(feed_all(&m, utf, strlen(utf), &used), LAB_OK);
    assert_string_equal(m.reason, "Konflikt \xc3\xa4");
    assert_string_equal(httpmsg_msg_field(&m, "x-detail"), "\xe2\x82\xac");
    httpmsg_msg_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_encode),  cmocka_unit_test(test_long_request),
        cmocka_unit_test(test_request_refused), cmocka_unit_test(test_length_body),
        cmocka_unit_test(test_chunked),         cmocka_unit_test(test_close_delimited),
        cmocka_unit_test(test_keep_alive),      cmocka_unit_test(test_refused),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
