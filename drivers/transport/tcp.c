/* The TCP backend, for serial device servers (Moxa NPort, Lantronix, ser2net) at
 * tcp://host:port: the name resolved with uv_getaddrinfo, a uv_tcp connection with TCP_NODELAY
 * (instrument protocols are small request/response exchanges), a connect timeout. */
#include "drivers/transport/transport_int.h"

#include "core/err.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CONNECT_TIMEOUT_MS = 5000 };

static void tcp_on_closed(uv_handle_t *h)
{
    lab_transport_t *t = h->data;
    t->tcp_live = 0;
    lab_transport_unref(t);
}

static void tcp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    lab_transport_t *t = h->data;
    *buf = uv_buf_init((char *)t->rbuf, sizeof t->rbuf);
}

static void tcp_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    lab_transport_t *t = s->data;
    if (nread > 0) {
        lab_transport_received(t, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    if (nread == UV_EOF)
        lab_transport_lost(t, LAB_ECONN, "connection closed by %s:%d", t->host, t->port);
    else if (nread < 0)
        lab_transport_lost(t, LAB_ECONN, "read from %s:%d: %s", t->host, t->port,
                           uv_strerror((int)nread));
}

static void tcp_on_connect(uv_connect_t *req, int status)
{
    lab_transport_t *t = req->data;
    if (status == UV_ECANCELED || t->closing || t->state != LAB_TRANSPORT_OPENING)
        return;
    if (status < 0) {
        lab_transport_lost(t, LAB_ECONN, "connect %s:%d: %s", t->host, t->port,
                           uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&t->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&t->tcp, tcp_alloc, tcp_on_read);
    if (rc < 0) {
        lab_transport_lost(t, LAB_ECONN, "read start: %s", uv_strerror(rc));
        return;
    }
    lab_transport_opened(t);
}

static void tcp_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    lab_transport_t *t = req->data;
    t->gai_pending = 0;
    if (t->closing || t->state != LAB_TRANSPORT_OPENING)
        goto out;
    if (status < 0) {
        lab_transport_lost(t, LAB_ECONN, "resolve %s: %s", t->host, uv_strerror(status));
        goto out;
    }
    uv_tcp_init(t->loop, &t->tcp);
    t->tcp.data = t;
    t->tcp_live = 1;
    t->refs++;
    t->conn.data = t;
    int rc = uv_tcp_connect(&t->conn, &t->tcp, res->ai_addr, tcp_on_connect);
    if (rc < 0)
        lab_transport_lost(t, LAB_ECONN, "connect %s:%d: %s", t->host, t->port, uv_strerror(rc));
out:
    uv_freeaddrinfo(res);
    lab_transport_unref(t);
}

static void tcp_open(lab_transport_t *t)
{
    char port[16];
    snprintf(port, sizeof port, "%d", t->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    t->gai.data = t;
    int rc = uv_getaddrinfo(t->loop, &t->gai, tcp_on_resolved, t->host, port, &hints);
    if (rc < 0) {
        lab_transport_lost(t, LAB_ECONN, "resolve %s: %s", t->host, uv_strerror(rc));
        return;
    }
    t->gai_pending = 1;
    t->refs++;
    uv_timer_start(&t->retry, lab_transport_on_retry, CONNECT_TIMEOUT_MS, 0);
}

static void tcp_on_written(uv_write_t *req, int status)
{
    lab_transport_wreq_t *w = req->data;
    lab_transport_t *t = w->t;
    if (w->orphan) {
        free(w);
        return;
    }
    if (status < 0) { /* fails this request too, with the others */
        lab_transport_lost(t, LAB_ECONN, "write to %s:%d: %s", t->host, t->port,
                           uv_strerror(status));
        free(w);
        return;
    }
    LAB_ASSERT(t->wq_head == w); /* libuv completes writes in order */
    lab_transport_wq_done(t);
}

static int tcp_write(lab_transport_t *t)
{
    lab_transport_wreq_t *w = t->wq_tail;
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    w->uw.data = w;
    int rc = uv_write(&w->uw, (uv_stream_t *)&t->tcp, &b, 1, tcp_on_written);
    if (rc < 0)
        return LAB_ECONN;
    lab_transport_sent(t, w->data, w->len);
    return LAB_OK;
}

static int tcp_break(lab_transport_t *t, int on)
{
    return LAB_EINVAL; /* a raw TCP device server has no out-of-band line signalling */
}

static void tcp_close(lab_transport_t *t)
{
    uv_timer_stop(&t->retry);
    if (t->gai_pending)
        uv_cancel((uv_req_t *)&t->gai);
    if (t->tcp_live && !uv_is_closing((uv_handle_t *)&t->tcp))
        uv_close((uv_handle_t *)&t->tcp, tcp_on_closed);
}

const lab_transport_ops_t lab_transport_tcp_ops = {
    .name = "tcp",
    .open = tcp_open,
    .write = tcp_write,
    .send_break = tcp_break,
    .close = tcp_close,
};
