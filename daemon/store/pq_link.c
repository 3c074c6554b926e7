/* One PostgreSQL connection on libuv (see pq_link.h). Traps kept here once: libpq may close a
 * socket and open another under the same number while connecting, so the poll handle is renewed
 * after every PQconnectPoll; the poll is stopped before PQfinish closes the socket (an epoll watch
 * must not outlive its fd); libuv reports POLLERR/POLLHUP as a status, which while connecting is an
 * ordinary step (libpq may move on to the host's next address) and afterwards means the connection
 * is gone once libpq has read the server's last words. */
#include "daemon/store/pq_link.h"

#include "core/log.h"
#include "core/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The poll handle and the socket it watches; freed in its close callback. */
typedef struct pq_sock {
    uv_poll_t poll;
    lab_pq_link_t *l;
    int fd;
} pq_sock_t;

struct lab_pq_link {
    uv_loop_t *loop;
    lab_pq_link_ops_t ops;
    void *ctx;
    char *conninfo, *app_name, *tag;
    double connect_timeout_s, retry_max_s;

    PGconn *conn;    /* while connecting and up */
    bool connecting; /* PQconnectPoll has not said OK yet */
    pq_sock_t *sock;
    uv_timer_t timer; /* connect timeout, then reconnect backoff */
    int handles;      /* open uv handles; freed when the last one closed after a close */
    bool closing;
    void (*closed)(void *ctx);
    uint64_t backoff_ms, rng;
};

static void pq_on_poll(uv_poll_t *h, int status, int events);

uint64_t lab_pq_backoff_next(uint64_t *backoff_ms, uint64_t *rng, uint64_t cap_ms)
{
    /* Equal jitter: half the backoff fixed, half random, so cells restarted together spread. */
    uint64_t half = *backoff_ms / 2;
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    uint64_t delay = half + (half ? *rng % (half + 1) : 0);
    *backoff_ms = *backoff_ms * 2 > cap_ms ? cap_ms : *backoff_ms * 2;
    if (*backoff_ms < LAB_PQ_BACKOFF_MIN_MS)
        *backoff_ms = LAB_PQ_BACKOFF_MIN_MS;
    return delay;
}

static void pq_unref(lab_pq_link_t *l)
{
    if (--l->handles > 0 || !l->closing)
        return;
    void (*cb)(void *) = l->closed;
    void *ctx = l->ctx;
    free(l->conninfo);
    free(l->app_name);
    free(l->tag);
    free(l);
    if (cb)
        cb(ctx);
}

static void pq_timer_closed(uv_handle_t *h)
{
    pq_unref(h->data);
}

static void pq_sock_closed(uv_handle_t *h)
{
    pq_sock_t *s = h->data;
    lab_pq_link_t *l = s->l;
    free(s);
    pq_unref(l);
}

static void pq_sock_drop(lab_pq_link_t *l)
{
    pq_sock_t *s = l->sock;
    if (!s)
        return;
    l->sock = NULL;
    uv_poll_stop(&s->poll); /* before libpq closes the socket */
    uv_close((uv_handle_t *)&s->poll, pq_sock_closed);
}

/* The link found the connection broken: the owner hears why and drops it. */
static void pq_fail(lab_pq_link_t *l, const char *what, const char *detail)
{
    char msg[600];
    snprintf(msg, sizeof msg, "%s: %s", what, detail && *detail ? detail : "no detail");
    l->ops.down(l->ctx, msg);
}

static void pq_fail_conn(lab_pq_link_t *l, const char *what)
{
    pq_fail(l, what, l->conn ? PQerrorMessage(l->conn) : "out of memory");
}

/* Watches libpq's current socket for events; false when it went down instead. */
static bool pq_watch(lab_pq_link_t *l, int events, bool renew)
{
    int fd = PQsocket(l->conn);
    if (l->sock && (renew || l->sock->fd != fd))
        pq_sock_drop(l);
    if (fd < 0)
        return true; /* libpq has no socket right now; the connect timer still runs */
    if (!l->sock) {
        pq_sock_t *s = LAB_NEW(pq_sock_t);
        s->l = l;
        s->fd = fd;
        int rc = uv_poll_init(l->loop, &s->poll, fd);
        if (rc != 0) {
            free(s);
            char what[64];
            snprintf(what, sizeof what, "watching socket %d", fd);
            pq_fail(l, what, uv_strerror(rc));
            return false;
        }
        s->poll.data = s;
        l->handles++;
        l->sock = s;
    }
    uv_poll_start(&l->sock->poll, events, pq_on_poll);
    return true;
}

static void pq_on_connect_timeout(uv_timer_t *t)
{
    lab_pq_link_t *l = t->data;
    char msg[64];
    snprintf(msg, sizeof msg, "no answer within %.1f s", l->connect_timeout_s);
    pq_fail(l, "connect", msg);
}

static void pq_connect_poll(lab_pq_link_t *l)
{
    switch (PQconnectPoll(l->conn)) {
    case PGRES_POLLING_READING:
        pq_watch(l, UV_READABLE, true);
        return;
    case PGRES_POLLING_WRITING:
        pq_watch(l, UV_WRITABLE, true);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        pq_fail_conn(l, "connect");
        return;
    }
    uv_timer_stop(&l->timer);
    l->connecting = false;
    if (pq_watch(l, UV_READABLE, false))
        l->ops.connected(l->ctx, l->conn);
}

static void pq_on_poll(uv_poll_t *h, int status, int events)
{
    pq_sock_t *s = h->data;
    lab_pq_link_t *l = s->l;
    if (l->sock != s || !l->conn)
        return;
    if (status < 0 && !l->connecting) {
        PGconn *conn = l->conn;
        if (PQconsumeInput(conn))
            l->ops.io(l->ctx); /* the server's last words (e.g. shutting down) name the cause */
        if (l->conn != conn)
            return;
        pq_fail(l, "connection lost",
                *PQerrorMessage(conn) ? PQerrorMessage(conn) : "socket error or hang-up");
        return;
    }
    if (l->connecting) {
        pq_connect_poll(l);
        return;
    }
    if ((events & UV_WRITABLE) && !lab_pq_link_flush(l))
        return;
    if ((events & UV_READABLE) && !PQconsumeInput(l->conn)) {
        pq_fail_conn(l, "receive");
        return;
    }
    l->ops.io(l->ctx);
}

static void pq_on_notice(void *arg, const char *message)
{
    lab_pq_link_t *l = arg;
    log_debug(l->tag, "notice: %.*s", (int)strcspn(message, "\n"), message);
}

static void pq_on_retry(uv_timer_t *t)
{
    lab_pq_link_connect(t->data);
}

lab_pq_link_t *lab_pq_link_new(uv_loop_t *loop, const lab_pq_link_cfg_t *cfg,
                               const lab_pq_link_ops_t *ops, void *ctx)
{
    lab_pq_link_t *l = LAB_NEW(lab_pq_link_t);
    l->loop = loop;
    l->ops = *ops;
    l->ctx = ctx;
    l->conninfo = lab_strdup(cfg->conninfo);
    l->app_name = lab_strdup(cfg->app_name);
    l->tag = lab_strdup(cfg->log_tag);
    l->connect_timeout_s = cfg->connect_timeout_s;
    l->retry_max_s = cfg->retry_max_s;
    l->backoff_ms = LAB_PQ_BACKOFF_MIN_MS;
    l->rng = uv_hrtime() ^ ((uint64_t)(uintptr_t)l << 16) ^ 0x9e3779b97f4a7c15ULL;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    l->handles = 1;
    return l;
}

void lab_pq_link_connect(lab_pq_link_t *l)
{
    if (l->closing || l->conn)
        return;
    /* Keywords before dbname are defaults the conninfo may override; those after are forced.
     * Keepalives notice a TCP peer that vanished without a word (a cable, a crashed host). */
    const char *const keys[] = {"keepalives_idle",
                                "keepalives_interval",
                                "keepalives_count",
                                "dbname",
                                "fallback_application_name",
                                "client_encoding",
                                NULL};
    const char *const vals[] = {"10", "5", "3", l->conninfo, l->app_name, "UTF8", NULL};
    uv_timer_stop(&l->timer);
    if (l->ops.connecting)
        l->ops.connecting(l->ctx);
    l->connecting = true;
    l->conn = PQconnectStartParams(keys, vals, 1);
    if (!l->conn || PQstatus(l->conn) == CONNECTION_BAD) {
        pq_fail_conn(l, "connect");
        return;
    }
    PQsetnonblocking(l->conn, 1);
    PQsetNoticeProcessor(l->conn, pq_on_notice, l);
    uv_timer_start(&l->timer, pq_on_connect_timeout, (uint64_t)(l->connect_timeout_s * 1000), 0);
    /* As if PQconnectPoll had asked for writing (libpq's documented start). */
    pq_watch(l, UV_WRITABLE, true);
}

PGconn *lab_pq_link_conn(const lab_pq_link_t *l)
{
    return l && !l->connecting ? l->conn : NULL;
}

bool lab_pq_link_flush(lab_pq_link_t *l)
{
    int rc = PQflush(l->conn);
    if (rc < 0) {
        pq_fail_conn(l, "send");
        return false;
    }
    return pq_watch(l, rc ? UV_READABLE | UV_WRITABLE : UV_READABLE, false);
}

void lab_pq_link_drop(lab_pq_link_t *l)
{
    pq_sock_drop(l);
    if (l->conn)
        PQfinish(l->conn);
    l->conn = NULL;
    l->connecting = false;
    uv_timer_stop(&l->timer);
}

void lab_pq_link_retry(lab_pq_link_t *l)
{
    if (l->closing || l->conn)
        return;
    uint64_t delay =
        lab_pq_backoff_next(&l->backoff_ms, &l->rng, (uint64_t)(l->retry_max_s * 1000));
    log_debug(l->tag, "retry in %llu ms", (unsigned long long)delay);
    uv_timer_start(&l->timer, pq_on_retry, delay, 0);
}

void lab_pq_link_backoff_reset(lab_pq_link_t *l)
{
    l->backoff_ms = LAB_PQ_BACKOFF_MIN_MS;
}

void lab_pq_link_close(lab_pq_link_t *l, void (*closed)(void *ctx))
{
    if (l->closing)
        return;
    lab_pq_link_drop(l);
    l->closing = true;
    l->closed = closed;
    uv_close((uv_handle_t *)&l->timer, pq_timer_closed);
}
