/* The tcp transport against a real TCP server run by the test on the same loop (a serial device
 * server stand-in): bytes both ways, TCP_NODELAY, the server going away (offline with the
 * reason, writes refused at once), the server back on the same port (reconnected by itself), an
 * unresolvable name, and close with writes in flight. */
#include "core/err.h"
#include "core/log.h"
#include "drivers/transport/transport.h"
#include "drivers/transport/transport_int.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { DEADLINE_MS = 10000 };

typedef struct fx {
    uv_loop_t loop;
    uv_timer_t beat;
    int port;
    uv_tcp_t server;
    int server_live;
    uv_tcp_t peer; /* the accepted transport connection */
    int peer_live, accepted;
    uint8_t peer_rx[4096];
    size_t peer_rx_len;

    lab_transport_t *t;
    uint8_t rx[4096];
    size_t rx_len;
    lab_transport_state_t state;
    int n_open, n_offline, last_err;
    char last_reason[256];
    int writes_done, write_status;
} fx_t;

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000u;
}
static void on_beat(uv_timer_t *t)
{
}

#define WAIT(fx, cond)                                                                             \
    do {                                                                                           \
        uint64_t deadline_ = now_ms() + DEADLINE_MS;                                               \
        while (!(cond) && now_ms() < deadline_)                                                    \
            uv_run(&(fx)->loop, UV_RUN_ONCE);                                                      \
        assert_true(cond);                                                                         \
    } while (0)

static void peer_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char buf[4096];
    *b = uv_buf_init(buf, sizeof buf);
}

static void peer_closed(uv_handle_t *h)
{
    fx_t *fx = h->data;
    fx->peer_live = 0;
}

static void peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    fx_t *fx = s->data;
    if (n > 0) {
        assert_true(fx->peer_rx_len + (size_t)n <= sizeof fx->peer_rx);
        memcpy(fx->peer_rx + fx->peer_rx_len, b->base, (size_t)n);
        fx->peer_rx_len += (size_t)n;
    } else if (n < 0 && !uv_is_closing((uv_handle_t *)s)) {
        uv_close((uv_handle_t *)s, peer_closed);
    }
}

static void on_accept(uv_stream_t *server, int status)
{
    fx_t *fx = server->data;
    assert_int_equal(status, 0);
    if (fx->peer_live) { /* one device, one client */
        uv_tcp_t *extra = malloc(sizeof *extra);
        uv_tcp_init(&fx->loop, extra);
        uv_accept(server, (uv_stream_t *)extra);
        uv_close((uv_handle_t *)extra, (uv_close_cb)free);
        return;
    }
    uv_tcp_init(&fx->loop, &fx->peer);
    fx->peer.data = fx;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&fx->peer), 0);
    fx->peer_live = 1;
    fx->accepted++;
    uv_read_start((uv_stream_t *)&fx->peer, peer_alloc, peer_read);
}

static void server_closed(uv_handle_t *h)
{
    fx_t *fx = h->data;
    fx->server_live = 0;
}

static void server_start(fx_t *fx)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", fx->port, &a);
    uv_tcp_init(&fx->loop, &fx->server);
    fx->server.data = fx;
    assert_int_equal(uv_tcp_bind(&fx->server, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&fx->server, 8, on_accept), 0);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&fx->server, (struct sockaddr *)&ss, &len);
    fx->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    fx->server_live = 1;
}

static void server_stop(fx_t *fx)
{
    if (fx->server_live)
        uv_close((uv_handle_t *)&fx->server, server_closed);
    if (fx->peer_live && !uv_is_closing((uv_handle_t *)&fx->peer))
        uv_close((uv_handle_t *)&fx->peer, peer_closed);
    WAIT(fx, !fx->server_live && !fx->peer_live);
}

static void peer_write(fx_t *fx, const char *s)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));
    assert_int_equal(uv_try_write((uv_stream_t *)&fx->peer, &b, 1), (int)strlen(s));
}

static void on_data(lab_transport_t *t, const uint8_t *d, size_t n, void *user)
{
    fx_t *fx = user;
    memcpy(fx->rx + fx->rx_len, d, n);
    fx->rx_len += n;
}

static void on_state(lab_transport_t *t, lab_transport_state_t st, int err, const char *reason,
                     void *user)
{
    fx_t *fx = user;
    fx->state = st;
    if (st == LAB_TRANSPORT_OPEN)
        fx->n_open++;
    if (st == LAB_TRANSPORT_OFFLINE) {
        fx->n_offline++;
        fx->last_err = err;
        snprintf(fx->last_reason, sizeof fx->last_reason, "%s", reason);
    }
}

static void on_written(lab_transport_t *t, int status, void *arg)
{
    fx_t *fx = arg;
    fx->writes_done++;
    fx->write_status = status;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    uv_loop_init(&fx->loop);
    uv_timer_init(&fx->loop, &fx->beat);
    uv_timer_start(&fx->beat, on_beat, 5, 5);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    lab_transport_close(fx->t);
    server_stop(fx);
    uv_close((uv_handle_t *)&fx->beat, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    return 0;
}

static void transport_new(fx_t *fx, const char *uri)
{
    lab_transport_settings_t s;
    lab_transport_settings_init(&s);
    s.path = uri;
    s.retry_min_ms = 50;
    s.retry_max_ms = 400;
    lab_transport_callbacks_t cb = {.on_data = on_data, .on_state = on_state, .user = fx};
    char msg[200];
    assert_int_equal(lab_transport_new(&fx->loop, &s, "nport1", &cb, &fx->t, msg, sizeof msg), 0);
    assert_string_equal(lab_transport_backend(fx->t), "tcp");
    assert_int_equal(lab_transport_open(fx->t), 0);
}

static void test_tcp_bytes_and_reconnect(void **state)
{
    fx_t *fx = *state;
    server_start(fx);
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://localhost:%d", fx->port);
    transport_new(fx, uri);
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN && fx->peer_live);

    int nodelay = 0;
    socklen_t len = sizeof nodelay;
    uv_os_fd_t fd;
    uv_fileno((uv_handle_t *)&fx->t->tcp, &fd);
    getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len);
    assert_true(nodelay);

    assert_int_equal(lab_transport_write(fx->t, "RD DM1\r", 7, on_written, fx), 0);
    assert_int_equal(fx->writes_done, 0);
    WAIT(fx, fx->peer_rx_len == 7 && fx->writes_done == 1);
    assert_memory_equal(fx->peer_rx, "RD DM1\r", 7);
    assert_int_equal(fx->write_status, 0);
    peer_write(fx, "00042\r\n");
    WAIT(fx, fx->rx_len == 7);
    assert_memory_equal(fx->rx, "00042\r\n", 7);
    assert_int_equal(lab_transport_send_break(fx->t, 10, NULL, NULL), LAB_EINVAL);

    /* The device server restarts: offline with the reason, writes refused, then back. */
    server_stop(fx);
    WAIT(fx, fx->state == LAB_TRANSPORT_OFFLINE);
    assert_int_equal(fx->last_err, LAB_ECONN);
    assert_non_null(strstr(fx->last_reason, "closed"));
    assert_int_equal(lab_transport_write(fx->t, "x", 1, on_written, fx), LAB_ECONN);
    int offline = fx->n_offline;
    WAIT(fx, fx->n_offline >= offline + 1); /* connection refused while it is down */
    assert_non_null(strstr(fx->last_reason, "refused"));

    server_start(fx); /* same port */
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN && fx->peer_live);
    assert_int_equal(fx->n_open, 2);
    fx->peer_rx_len = 0;
    assert_int_equal(lab_transport_write(fx->t, "again", 5, NULL, NULL), 0);
    WAIT(fx, fx->peer_rx_len == 5);
    assert_memory_equal(fx->peer_rx, "again", 5);
}

static void test_tcp_unresolvable(void **state)
{
    fx_t *fx = *state;
    transport_new(fx, "tcp://no-such-host.invalid:4001");
    WAIT(fx, fx->state == LAB_TRANSPORT_OFFLINE);
    assert_int_equal(fx->last_err, LAB_ECONN);
    assert_non_null(strstr(fx->last_reason, "resolve"));
}

static void test_tcp_close_in_flight(void **state)
{
    fx_t *fx = *state;
    server_start(fx);
    char uri[64];
    snprintf(uri, sizeof uri, "tcp://127.0.0.1:%d", fx->port);
    transport_new(fx, uri);
    WAIT(fx, fx->state == LAB_TRANSPORT_OPEN);
    for (int i = 0; i < 3; i++)
        assert_int_equal(lab_transport_write(fx->t, "abc", 3, on_written, fx), 0);
    lab_transport_close(fx->t);
    assert_int_equal(fx->writes_done, 3);
    assert_int_equal(fx->write_status, LAB_ESHUTDOWN);
    fx->t = NULL;
    /* closing while still resolving/connecting is clean too */
    transport_new(fx, uri);
    lab_transport_close(fx->t);
    fx->t = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tcp_bytes_and_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_unresolvable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_close_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
