/* A real labloopd (with [auth], a small connection limit and a short idle timeout) against what a
 * stranger on the network can send with raw sockets: invalid UTF-8 in the path, query, headers
 * and body, a path of 600 'é', malformed request lines, huge and many headers, bad chunking
 * (FFFFFFFFFFFFFFFF among it), slowloris, and bursts of idle connections over the limit. After
 * each case /healthz must answer 200 and the daemon must still be the same process. Every case is
 * bounded in connections and in time (socket timeouts). */
#include "tests/harness/harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define MAX_CONNS 8
#define IDLE_S 2
#define TOKEN "tech-token-abuse-0123456789"
/* Longer than any answer may take here, shorter than anything that would mean "held". */
#define ANSWER_TIMEOUT_S 12

static struct {
    char tokdir[256];
    h_daemon_t d;
} g;

/* ---- raw sockets ---- */

static int raw_connect(int timeout_s)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g.d.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
    /* The server may answer and close before it has read everything: that is allowed. */
    (void)!send(fd, p, n, MSG_NOSIGNAL);
}

typedef struct answer {
    int status; /* 0: none (closed or timed out first) */
    bool closed, timed_out;
    char *head, *body; /* body: the Content-Length bytes */
} answer_t;

static void answer_free(answer_t *a)
{
    free(a->head);
    free(a->body);
    memset(a, 0, sizeof *a);
}

/* Reads one answer: its head and a Content-Length body, or up to the close. */
static void raw_answer(int fd, answer_t *a)
{
    memset(a, 0, sizeof *a);
    size_t cap = 1 << 16, got = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        buf[got] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            size_t hl = (size_t)(end + 4 - buf);
            size_t bl = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
            if (got >= hl + bl) {
                a->head = strndup(buf, hl);
                a->body = strndup(buf + hl, bl);
                sscanf(buf, "HTTP/1.%*d %d", &a->status);
                break;
            }
        }
        if (got == cap)
            break;
        ssize_t n = recv(fd, buf + got, cap - got, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            a->closed = true;
            break;
        }
        if (n < 0) {
            a->timed_out = true;
            break;
        }
        got += (size_t)n;
    }
    free(buf);
}

/* One request on a fresh connection; the answer in a. */
static void exchange(const void *req, size_t len, answer_t *a)
{
    int fd = raw_connect(ANSWER_TIMEOUT_S);
    raw_send(fd, req, len);
    raw_answer(fd, a);
    close(fd);
}

static void exchange_s(const char *req, answer_t *a)
{
    exchange(req, strlen(req), a);
}

/* A problem+json answer with this status whose body is JSON (UTF-8, or jansson refuses it) with
 * the members RFC 9457 names. */
static void assert_problem(const answer_t *a, int status)
{
    if (a->status != status)
        fprintf(stderr, "wanted %d, got %d (closed=%d timed_out=%d)\n%s%s\n", status, a->status,
                a->closed, a->timed_out, a->head ? a->head : "", a->body ? a->body : "");
    assert_int_equal(a->status, status);
    assert_non_null(strcasestr(a->head, "Content-Type: application/problem+json"));
    json_error_t err;
    json_t *doc = json_loads(a->body, 0, &err);
    if (!doc)
        fprintf(stderr, "not JSON: %s\n%s\n", err.text, a->body);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "status")), status);
    assert_true(json_is_string(json_object_get(doc, "detail")));
    assert_true(json_is_string(json_object_get(doc, "instance")));
    assert_true(json_is_array(json_object_get(doc, "errors")));
    json_decref(doc);
}

/* The daemon is the one started, and /healthz answers 200. */
static void assert_serving(void)
{
    int st;
    assert_int_equal(waitpid(g.d.pid, &st, WNOHANG), 0);
    answer_t a;
    exchange_s("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &a);
    if (a.status != 200)
        fprintf(stderr, "/healthz: status %d closed=%d timed_out=%d\n", a.status, a.closed,
                a.timed_out);
    assert_int_equal(a.status, 200);
    answer_free(&a);
}

static long long metric(const char *name)
{
    char *resp = NULL;
    char hdr[128];
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", TOKEN);
    assert_int_equal(h_http(g.d.url, "GET", "/metrics", hdr, NULL, &resp), 200);
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(resp, key);
    long long v = p ? atoll(p + strlen(key)) : -1;
    free(resp);
    return v;
}

/* ---- setup ---- */

static int setup(void **state)
{
    if (h_tempdir("labloop-abuse", g.tokdir, sizeof g.tokdir))
        return -1;
    char path[300], extra[600];
    snprintf(path, sizeof path, "%s/tokens", g.tokdir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "%s technician tess\n", TOKEN);
    fclose(f);
    snprintf(extra, sizeof extra,
             "http_max_connections = %d\nhttp_idle_timeout = %d\n\n[auth]\ntokens = %s\n",
             MAX_CONNS, IDLE_S, path);
    return h_daemon_start(&g.d, NULL, NULL, extra);
}

static int teardown(void **state)
{
    int st = h_daemon_stop(&g.d);
    h_daemon_destroy(&g.d);
    h_rmtree(g.tokdir);
    return st == 0 ? 0 : -1;
}

/* ---- the cases ---- */

/* Paths that are not UTF-8 once percent-decoded: 404 before the token is asked for, 401 on a
 * route that wants one, and each a problem+json jansson can read. */
static void test_invalid_utf8_path(void **state)
{
    static const char *const not_found[] = {
        "GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /%c3 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /%ed%a0%80 HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /%ff%fe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        "GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1/%c0%af HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof not_found / sizeof *not_found; i++) {
        answer_t a;
        exchange_s(not_found[i], &a);
        assert_problem(&a, 404);
        answer_free(&a);
        assert_serving();
    }
    static const char *const unauthorized[] = {
        "GET /v1/runs/%ff HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1/instruments/%ff%c3 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1/workflows/%c3%28 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof unauthorized / sizeof *unauthorized; i++) {
        answer_t a;
        exchange_s(unauthorized[i], &a);
        assert_problem(&a, 401);
        answer_free(&a);
        assert_serving();
    }
    /* With the token, the handlers quote the segment. */
    static const char *const paths[] = {"/v1/runs/%ff", "/v1/instruments/%ff%c3",
                                        "/v1/workflows/%c3%28", "/v1/campaigns/%ff"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        char req[256];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n",
                 paths[i], TOKEN);
        answer_t a;
        exchange_s(req, &a);
        /* 404, or 503 where the daemon has no closed loop: a problem either way. */
        assert_problem(&a, a.status == 503 ? 503 : 404);
        answer_free(&a);
    }
    assert_serving();
}

/* 600 'é' (1200 bytes): the detail is cut below 1024 bytes, never inside a character. */
static void test_long_utf8_path(void **state)
{
    char req[8192] = "GET /";
    for (int i = 0; i < 600; i++)
        strcat(req, i % 2 ? "%C3%A9" : "\xC3\xA9");
    strcat(req, " HTTP/1.1\r\nHost: x\r\n\r\n");
    answer_t a;
    exchange_s(req, &a);
    assert_problem(&a, 404);
    answer_free(&a);
    char auth[8300];
    snprintf(auth, sizeof auth, "GET /v1/runs/%s", req + 5);
    exchange_s(auth, &a);
    assert_problem(&a, 401);
    answer_free(&a);
    assert_serving();
}

/* Query values and names, header values and bodies that are not UTF-8. */
static void test_invalid_utf8_elsewhere(void **state)
{
    char req[1024];
    answer_t a;
    /* A bad query value is refused with its error named, not dropped. */
    snprintf(req, sizeof req,
             "GET /v1/runs?state=%%ff%%fe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n",
             TOKEN);
    exchange_s(req, &a);
    assert_problem(&a, 400);
    assert_non_null(strstr(a.body, "query parameter state"));
    answer_free(&a);
    snprintf(req, sizeof req,
             "GET /v1/runs?x%%c3=1&limit=%%c3%%a9%%c3 HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer %s\r\n\r\n",
             TOKEN);
    exchange_s(req, &a);
    assert_problem(&a, 400);
    assert_non_null(strstr(a.body, "query parameter limit"));
    answer_free(&a);
    /* A content type that is not UTF-8 is quoted in the 415. */
    snprintf(req, sizeof req,
             "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
             "Content-Type: text/\xff\xc3\r\nContent-Length: 2\r\n\r\n{}",
             TOKEN);
    exchange_s(req, &a);
    assert_problem(&a, 415);
    answer_free(&a);
    /* A body that is not UTF-8 is malformed JSON. */
    const char body[] = "{\"workflow\":\"\xff\xfe\",\"plate\":\"P-1\"}";
    snprintf(req, sizeof req,
             "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             TOKEN, strlen(body), body);
    exchange_s(req, &a);
    assert_problem(&a, 400);
    answer_free(&a);
    /* An Idempotency-Key that is not UTF-8, used twice with different bodies. */
    for (int i = 0; i < 2; i++) {
        char b[128];
        snprintf(b, sizeof b, "{\"workflow\":\"w%d\",\"plate\":\"P-1\"}", i);
        snprintf(req, sizeof req,
                 "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                 "Idempotency-Key: k\xff\xc3\xa9\xe2\x82\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 TOKEN, strlen(b), b);
        exchange_s(req, &a);
        if (i == 0)
            assert_true(a.status == 201 || a.status == 422);
        else
            assert_problem(&a, 422);
        answer_free(&a);
    }
    assert_serving();
}

/* A path with a line end in it (%0a) is logged, but cannot forge a line of the daemon's log. */
static void test_log_injection(void **state)
{
    answer_t a;
    exchange_s("GET /x%0a2026-01-01T00:00:00.000Z%20error%20main:%20FORGED HTTP/1.1\r\nHost: "
               "x\r\n\r\n",
               &a);
    assert_problem(&a, 404);
    answer_free(&a);
    assert_serving();
    FILE *f = fopen(g.d.log, "r");
    assert_non_null(f);
    char line[4096];
    bool quoted = false;
    while (fgets(line, sizeof line, f)) {
        assert_false(strncmp(line, "2026-01-01T00:00:00.000Z", 24) == 0);
        quoted = quoted || strstr(line, "/x\\x0a2026-01-01") != NULL;
    }
    fclose(f);
    assert_true(quoted);
}

/* Request lines and heads that are not HTTP: any answer or a close, and the next one is served. */
static void test_malformed_requests(void **state)
{
    static const char *const reqs[] = {
        "GARBAGE\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
        "\x01\x02\x03\x04\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    };
    for (size_t i = 0; i < sizeof reqs / sizeof *reqs; i++) {
        answer_t a;
        exchange_s(reqs[i], &a);
        assert_false(a.timed_out);
        answer_free(&a);
        assert_serving();
    }
    /* A request line of 100 kB. */
    size_t n = 100 * 1024;
    char *big = malloc(n + 64);
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', n);
    strcpy(big + 5 + n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    answer_t a;
    exchange(big, strlen(big), &a);
    assert_false(a.timed_out);
    answer_free(&a);
    free(big);
    assert_serving();
}

static void test_huge_and_many_headers(void **state)
{
    /* One header of 256 kB. */
    size_t n = 256 * 1024;
    char *req = malloc(n + 128);
    strcpy(req, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    size_t off = strlen(req);
    memset(req + off, 'b', n);
    strcpy(req + off + n, "\r\n\r\n");
    answer_t a;
    exchange(req, strlen(req), &a);
    assert_false(a.timed_out);
    answer_free(&a);
    assert_serving();
    /* 5000 small headers. */
    size_t len = 0;
    req = realloc(req, 5000 * 16 + 128);
    len += (size_t)sprintf(req, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 5000; i++)
        len += (size_t)sprintf(req + len, "X-%d: v\r\n", i);
    len += (size_t)sprintf(req + len, "\r\n");
    exchange(req, len, &a);
    assert_false(a.timed_out);
    answer_free(&a);
    free(req);
    assert_serving();
}

static void chunked(const char *chunks, int want_min, int want_max)
{
    char req[1024];
    snprintf(req, sizeof req,
             "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
             "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%s",
             TOKEN, chunks);
    answer_t a;
    exchange_s(req, &a);
    if (a.status < want_min || a.status > want_max)
        fprintf(stderr, "chunks %s: status %d closed=%d timed_out=%d\n", chunks, a.status, a.closed,
                a.timed_out);
    assert_true(a.status >= want_min && a.status <= want_max);
    answer_free(&a);
    assert_serving();
}

/* Bad chunking is answered, not held: a chunk announced larger than anything that follows
 * (FFFFFFFFFFFFFFFF) is refused once the body stops, long before any idle timeout. */
static void test_bad_chunking(void **state)
{
    chunked("FFFFFFFFFFFFFFFF\r\n{}\r\n0\r\n\r\n", 400, 413);
    chunked("FFFFFFFFFFFFFFFF\r\n", 400, 413);
    chunked("1FFFFFFFFFFFFFFFF\r\n{}\r\n0\r\n\r\n", 400, 413);
    chunked("zz\r\n{}\r\n0\r\n\r\n", 400, 400);
    chunked("-1\r\n{}\r\n0\r\n\r\n", 400, 400);
    chunked("2\r\n{}XX0\r\n\r\n", 400, 400);
    /* A well-formed chunked body still goes through (422: no plate). */
    chunked("2\r\n{}\r\n0\r\n\r\n", 422, 422);
}

/* Connections that send a header line every 300 ms and never finish the head: each is closed by
 * the server within the idle timeout, and a /healthz behind them is answered meanwhile. */
typedef struct loris {
    int fd[MAX_CONNS * 3];
    int n;
    volatile bool stop;
    int closed_by_server;
} loris_t;

static void *loris_main(void *arg)
{
    loris_t *l = arg;
    for (int round = 0; !l->stop && round < 100; round++) {
        for (int i = 0; i < l->n; i++) {
            if (l->fd[i] < 0)
                continue;
            const char *line = round == 0 ? "GET /healthz HTTP/1.1\r\n" : "X-Slow: 1\r\n";
            char c;
            if (recv(l->fd[i], &c, 1, MSG_DONTWAIT) == 0 ||
                send(l->fd[i], line, strlen(line), MSG_NOSIGNAL) < 0) {
                close(l->fd[i]);
                l->fd[i] = -1;
                l->closed_by_server++;
            }
        }
        h_sleep_ms(300);
    }
    return NULL;
}

static void test_slowloris(void **state)
{
    loris_t l = {.n = MAX_CONNS * 3};
    for (int i = 0; i < l.n; i++)
        l.fd[i] = raw_connect(ANSWER_TIMEOUT_S);
    pthread_t t;
    pthread_create(&t, NULL, loris_main, &l);
    /* Queued behind the slow ones: served once the server has cut them off. */
    int fd = raw_connect(MAX_CONNS * 3 / MAX_CONNS * IDLE_S * 2 + ANSWER_TIMEOUT_S);
    const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    raw_send(fd, req, strlen(req));
    answer_t a;
    raw_answer(fd, &a);
    close(fd);
    l.stop = true;
    pthread_join(t, NULL);
    if (a.status != 200)
        fprintf(stderr, "/healthz behind slowloris: %d timed_out=%d\n", a.status, a.timed_out);
    assert_int_equal(a.status, 200);
    answer_free(&a);
    assert_true(l.closed_by_server >= MAX_CONNS);
    for (int i = 0; i < l.n; i++)
        if (l.fd[i] >= 0)
            close(l.fd[i]);
    assert_serving();
    assert_true(metric("labloop_http_connections_idle_closed_total") >= MAX_CONNS);
}

/* More idle connections than the limit, all closed at once while the server is at the limit:
 * the door opens again. */
static void test_idle_burst(void **state)
{
    for (int round = 0; round < 5; round++) {
        int fds[MAX_CONNS * 5];
        /* All but one slot taken and seen by the server (the one left is /metrics'). */
        for (int i = 0; i < MAX_CONNS - 1; i++)
            fds[i] = raw_connect(ANSWER_TIMEOUT_S);
        long long deadline = h_now_ms() + 10000;
        while (metric("labloop_http_connections") < MAX_CONNS && h_now_ms() < deadline)
            h_sleep_ms(10);
        for (int i = MAX_CONNS - 1; i < MAX_CONNS * 5; i++)
            fds[i] = raw_connect(ANSWER_TIMEOUT_S);
        h_sleep_ms(50);
        for (int i = 0; i < MAX_CONNS * 5; i++)
            close(fds[i]);
        assert_serving();
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_utf8_path),
        cmocka_unit_test(test_long_utf8_path),
        cmocka_unit_test(test_invalid_utf8_elsewhere),
        cmocka_unit_test(test_log_injection),
        cmocka_unit_test(test_malformed_requests),
        cmocka_unit_test(test_huge_and_many_headers),
        cmocka_unit_test(test_bad_chunking),
        cmocka_unit_test(test_slowloris),
        cmocka_unit_test(test_idle_burst),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
