/* daemon/store/pq_link: the backoff's bounds, and a connect to a listening socket that never
 * answers (libpq ignores connect_timeout in async connects: the link's own timer must end it),
 * then a retry after the backoff, a refused connect, and a close that frees everything. */
#include "daemon/store/pq_link.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

enum { DEADLINE_MS = 20000 };

static void test_backoff_bounds(void **state)
{
    (void)state;
    uint64_t rng = 0x1234567887654321ULL;
    uint64_t b = LAB_PQ_BACKOFF_MIN_MS;
    bool capped = false;
    for (int i = 0; i < 200; i++) {
        uint64_t before = b;
        uint64_t d = lab_pq_backoff_next(&b, &rng, 5000);
        assert_true(d >= before / 2);
        assert_true(d <= before);
        assert_true(b <= 5000);
        assert_true(b >= LAB_PQ_BACKOFF_MIN_MS);
        assert_true(b == (before * 2 > 5000 ? 5000 : before * 2));
        capped = capped || b == 5000;
    }
    assert_true(capped);
    /* A cap below the minimum (retry_max of 0.01 s) keeps the minimum. */
    b = LAB_PQ_BACKOFF_MIN_MS;
    for (int i = 0; i < 10; i++) {
        uint64_t d = lab_pq_backoff_next(&b, &rng, 10);
        assert_true(d <= LAB_PQ_BACKOFF_MIN_MS);
        assert_int_equal(b, LAB_PQ_BACKOFF_MIN_MS);
    }
    /* The jitter spreads: not every delay at one backoff is the same. */
    uint64_t seen_lo = UINT64_MAX, seen_hi = 0;
    for (int i = 0; i < 64; i++) {
        b = 1000;
        uint64_t d = lab_pq_backoff_next(&b, &rng, 30000);
        seen_lo = d < seen_lo ? d : seen_lo;
        seen_hi = d > seen_hi ? d : seen_hi;
    }
    assert_true(seen_lo >= 500 && seen_hi <= 1000 && seen_lo < seen_hi);
}

typedef struct fx {
    uv_loop_t loop;
    uv_tcp_t server;
    int connecting, connected, io, down, closed;
    char why[600];
    lab_pq_link_t *link;
} fx_t;

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}

#define WAIT(fx, cond)                                                                             \
    do {                                                                                           \
        uint64_t deadline_ = now_ms() + DEADLINE_MS;                                               \
        while (!(cond) && now_ms() < deadline_)                                                    \
            uv_run(&(fx)->loop, UV_RUN_ONCE);                                                      \
        assert_true(cond);                                                                         \
    } while (0)

static void on_connecting(void *ctx)
{
    ((fx_t *)ctx)->connecting++;
}

static void on_connected(void *ctx, PGconn *conn)
{
    (void)conn;
    ((fx_t *)ctx)->connected++;
}

static void on_io(void *ctx)
{
    ((fx_t *)ctx)->io++;
}

static void on_down(void *ctx, const char *why)
{
    fx_t *fx = ctx;
    fx->down++;
    snprintf(fx->why, sizeof fx->why, "%s", why);
    lab_pq_link_drop(fx->link);
}

static void on_closed(void *ctx)
{
    ((fx_t *)ctx)->closed++;
}

/* Takes the connection into the backlog and never says a word. */
static void on_conn(uv_stream_t *s, int status)
{
    (void)s;
    (void)status;
}

static const lab_pq_link_ops_t ops = {on_connecting, on_connected, on_io, on_down};

static int listen_silent(fx_t *fx)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_init(&fx->loop, &fx->server), 0);
    assert_int_equal(uv_tcp_bind(&fx->server, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&fx->server, 8, on_conn), 0);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    assert_int_equal(uv_tcp_getsockname(&fx->server, (struct sockaddr *)&ss, &len), 0);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    fx_t fx = {0};
    assert_int_equal(uv_loop_init(&fx.loop), 0);
    int port = listen_silent(&fx);
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=x user=x sslmode=disable",
             port);
    lab_pq_link_cfg_t cfg = {conninfo, "labloopd-test", "test", 0.3, 0.2};
    fx.link = lab_pq_link_new(&fx.loop, &cfg, &ops, &fx);
    lab_pq_link_connect(fx.link);
    assert_int_equal(fx.connecting, 1);
    WAIT(&fx, fx.down == 1);
    assert_string_equal(fx.why, "connect: no answer within 0.3 s");
    assert_int_equal(fx.connected, 0);
    assert_null(lab_pq_link_conn(fx.link));

    /* The retry comes by itself after the backoff and times out the same way. */
    lab_pq_link_retry(fx.link);
    WAIT(&fx, fx.down == 2);
    assert_int_equal(fx.connecting, 2);
    assert_string_equal(fx.why, "connect: no answer within 0.3 s");

    lab_pq_link_close(fx.link, on_closed);
    uv_close((uv_handle_t *)&fx.server, NULL);
    WAIT(&fx, fx.closed == 1);
    assert_int_equal(fx.connected, 0);
    assert_int_equal(fx.io, 0);
    assert_int_equal(uv_run(&fx.loop, UV_RUN_DEFAULT), 0); /* no handle left behind */
    assert_int_equal(uv_loop_close(&fx.loop), 0);
}

/* Nobody listens: libpq's own refusal, well before the timer. */
static void test_connect_refused(void **state)
{
    (void)state;
    fx_t fx = {0};
    assert_int_equal(uv_loop_init(&fx.loop), 0);
    int port = listen_silent(&fx);
    uv_close((uv_handle_t *)&fx.server, NULL);
    uv_run(&fx.loop, UV_RUN_NOWAIT);
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=x user=x sslmode=disable",
             port);
    lab_pq_link_cfg_t cfg = {conninfo, "labloopd-test", "test", 30, 1};
    fx.link = lab_pq_link_new(&fx.loop, &cfg, &ops, &fx);
    lab_pq_link_connect(fx.link);
    WAIT(&fx, fx.down == 1);
    assert_non_null(strstr(fx.why, "connect: "));
    assert_null(strstr(fx.why, "no answer within"));
    /* Closing while a retry waits cancels it. */
    lab_pq_link_retry(fx.link);
    lab_pq_link_close(fx.link, on_closed);
    WAIT(&fx, fx.closed == 1);
    assert_int_equal(fx.connecting, 1);
    assert_int_equal(uv_run(&fx.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx.loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_connect_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
