/* The generic part of every transport: settings, the state machine, the reconnection backoff,
 * the write queue, byte logging, and the fd-polling I/O shared by the tty and serial backends. */
#include "drivers/transport/transport_int.h"

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SUB "transport"

typedef struct name_value {
    const char *name;
    int value;
} name_value_t;

static const name_value_t parities[] = {
    {"none", LAB_PARITY_NONE}, {"even", LAB_PARITY_EVEN}, {"odd", LAB_PARITY_ODD}, {NULL, 0}};
static const name_value_t flows[] = {
    {"none", LAB_FLOW_NONE}, {"rtscts", LAB_FLOW_RTSCTS}, {"xonxoff", LAB_FLOW_XONXOFF}, {NULL, 0}};
static const name_value_t kinds[] = {{"auto", LAB_TRANSPORT_AUTO}, {"serial", LAB_TRANSPORT_SERIAL},
                                     {"tty", LAB_TRANSPORT_TTY},   {"tcp", LAB_TRANSPORT_TCP},
                                     {"usb", LAB_TRANSPORT_USB},   {NULL, 0}};
static const char *const state_names[] = {
    [LAB_TRANSPORT_CLOSED] = "closed",
    [LAB_TRANSPORT_OPENING] = "opening",
    [LAB_TRANSPORT_OPEN] = "open",
    [LAB_TRANSPORT_OFFLINE] = "offline",
};

static int lookup(const name_value_t *table, const char *name)
{
    for (; name && table->name; table++)
        if (strcmp(table->name, name) == 0)
            return table->value;
    return -1;
}

int lab_parity_parse(const char *name)
{
    return lookup(parities, name);
}
int lab_flow_parse(const char *name)
{
    return lookup(flows, name);
}
int lab_transport_kind_parse(const char *name)
{
    return lookup(kinds, name);
}

const char *lab_transport_state_name(lab_transport_state_t s)
{
    return (unsigned)s < sizeof state_names / sizeof state_names[0] ? state_names[s] : "?";
}

void lab_transport_settings_init(lab_transport_settings_t *s)
{
    memset(s, 0, sizeof *s);
    s->baud = 9600;
    s->data_bits = 8;
    s->stop_bits = 1;
}

static int settings_fail(char *msg, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int settings_fail(char *msg, size_t n, const char *fmt, ...)
{
    if (msg && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, n, fmt, ap);
        va_end(ap);
    }
    return LAB_EINVAL;
}

/* "tcp://host:port" or "tcp://[v6]:port". */
static int parse_tcp(const char *uri, char **host, int *port)
{
    const char *p = uri + strlen("tcp://"), *colon, *hend;
    if (*p == '[') {
        hend = strchr(p, ']');
        if (!hend || hend[1] != ':')
            return LAB_EINVAL;
        p++;
        colon = hend + 1;
    } else {
        colon = strrchr(p, ':');
        hend = colon;
    }
    if (!colon || hend == p)
        return LAB_EINVAL;
    char *end;
    errno = 0;
    long v = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || v < 1 || v > 65535)
        return LAB_EINVAL;
    *host = lab_strndup(p, (size_t)(hend - p));
    *port = (int)v;
    return LAB_OK;
}

int lab_transport_new(uv_loop_t *loop, const lab_transport_settings_t *s, const char *owner_id,
                      const lab_transport_callbacks_t *cb, lab_transport_t **out, char *msg,
                      size_t msg_len)
{
    *out = NULL;
    if (!s->path || !*s->path)
        return settings_fail(msg, msg_len, "no port path given");
    if ((unsigned)s->kind > LAB_TRANSPORT_USB)
        return settings_fail(msg, msg_len, "transport kind %d is not auto/serial/tty/tcp/usb",
                             s->kind);
    int is_tcp = strncmp(s->path, "tcp://", 6) == 0, is_usb = strncmp(s->path, "usb://", 6) == 0;
    lab_transport_kind_t kind = s->kind;
    if (kind == LAB_TRANSPORT_AUTO)
        kind = is_tcp ? LAB_TRANSPORT_TCP : is_usb ? LAB_TRANSPORT_USB : LAB_TRANSPORT_SERIAL;
    if ((kind == LAB_TRANSPORT_TCP) != is_tcp || (kind == LAB_TRANSPORT_USB) != is_usb)
        return settings_fail(msg, msg_len, "port '%s' does not match transport kind %s", s->path,
                             kinds[kind].name);
    char *host = NULL;
    int port = 0;
    lab_usb_match_t usb = {0};
    if (kind == LAB_TRANSPORT_USB) {
        char why[256];
        if (lab_usb_parse(s->path, &usb, why, sizeof why) != LAB_OK)
            return settings_fail(msg, msg_len, "%s", why);
    } else if (kind == LAB_TRANSPORT_TCP) {
        if (parse_tcp(s->path, &host, &port) != LAB_OK)
            return settings_fail(msg, msg_len, "'%s' is not tcp://host:port (port 1..65535)",
                                 s->path);
    } else {
        unsigned speed = 0;
        if (lab_tty_speed(s->baud, &speed) != LAB_OK)
            return settings_fail(msg, msg_len, "baud %d is not a standard rate", s->baud);
        if (s->data_bits < 5 || s->data_bits > 8)
            return settings_fail(msg, msg_len, "data_bits %d is not 5..8", s->data_bits);
        if (s->stop_bits != 1 && s->stop_bits != 2)
            return settings_fail(msg, msg_len, "stop_bits %d is not 1 or 2", s->stop_bits);
        if ((unsigned)s->parity > LAB_PARITY_ODD)
            return settings_fail(msg, msg_len, "parity %d is not none/even/odd", s->parity);
        if ((unsigned)s->flow > LAB_FLOW_XONXOFF)
            return settings_fail(msg, msg_len, "flow %d is not none/rtscts/xonxoff", s->flow);
    }

    lab_transport_t *t = LAB_NEW(lab_transport_t);
    static const lab_transport_ops_t *const by_kind[] = {
        [LAB_TRANSPORT_SERIAL] = &lab_transport_serial_ops,
        [LAB_TRANSPORT_TTY] = &lab_transport_tty_ops,
        [LAB_TRANSPORT_TCP] = &lab_transport_tcp_ops,
        [LAB_TRANSPORT_USB] = &lab_transport_usb_ops,
    };
    t->ops = by_kind[kind];
    t->loop = loop;
    t->set = *s;
    t->set.kind = kind;
    t->path = lab_strdup(s->path);
    t->set.path = t->path;
    if (!t->set.retry_min_ms)
        t->set.retry_min_ms = 200;
    if (!t->set.retry_max_ms)
        t->set.retry_max_ms = 10000;
    if (t->set.retry_max_ms < t->set.retry_min_ms)
        t->set.retry_max_ms = t->set.retry_min_ms;
    t->host = host;
    t->port = port;
    t->usb_match = usb;
    t->id = lab_strdup(owner_id ? owner_id : "?");
    t->rec = lab_wirerec_find(t->id);
    if (cb)
        t->cb = *cb;
    t->fd = -1;
    t->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)t ^ 0x9e3779b97f4a7c15ull;
    t->backoff_ms = t->set.retry_min_ms;
    uv_timer_init(loop, &t->retry);
    uv_timer_init(loop, &t->brk);
    t->retry.data = t->brk.data = t;
    t->refs = 2;
    *out = t;
    return LAB_OK;
}

lab_transport_state_t lab_transport_state(const lab_transport_t *t)
{
    return t->state;
}
const char *lab_transport_backend(const lab_transport_t *t)
{
    return t->ops->name;
}

static void notify_state(lab_transport_t *t, int err, const char *reason)
{
    if (t->cb.on_state && !t->closing)
        t->cb.on_state(t, t->state, err, reason, t->cb.user);
}

int lab_transport_open(lab_transport_t *t)
{
    if (t->closing || t->state != LAB_TRANSPORT_CLOSED)
        return LAB_ESTATE;
    t->state = LAB_TRANSPORT_OPENING;
    log_info(SUB, "id=%s opening %s port=%s", t->id, t->ops->name, t->path);
    notify_state(t, 0, NULL);
    if (!t->closing) /* the owner may close from its callback */
        t->ops->open(t);
    return LAB_OK;
}

/* The header's transport and settings: "9600 8N2 rtscts", or the tcp:// address. */
static void record_link(lab_transport_t *t)
{
    char set[160];
    const lab_transport_settings_t *s = &t->set;
    static const char *const flow_names[] = {"", " rtscts", " xonxoff"};
    if (t->ops == &lab_transport_tcp_ops)
        snprintf(set, sizeof set, "%s", t->path);
    else
        snprintf(set, sizeof set, "%d %d%c%d%s", s->baud, s->data_bits, "NEO"[s->parity % 3],
                 s -> stop_bits, flow_names[s->flow % 3]);
    lab_wirerec_set_link(t->rec, t->ops->name, set);
}

void lab_transport_opened(lab_transport_t *t)
{
    LAB_ASSERT(t->state == LAB_TRANSPORT_OPENING);
    t->state = LAB_TRANSPORT_OPEN;
    uv_timer_stop(&t->retry);
    t->backoff_ms = t->set.retry_min_ms;
    log_info(SUB, "id=%s open %s port=%s", t->id, t->ops->name, t->path);
    if (t->rec) {
        record_link(t);
        lab_wirerec_event(t->rec, "open", t->path);
    }
    notify_state(t, 0, NULL);
}

/* Fail everything queued; tcp requests still inside libuv are only marked, their callback frees
 * them. Callbacks may write again: the state is already set, so they fail at once. */
static void fail_pending(lab_transport_t *t, int status)
{
    lab_transport_wreq_t *w = t->wq_head;
    t->wq_head = t->wq_tail = NULL;
    while (w) {
        lab_transport_wreq_t *next = w->next;
        if (w->cb)
            w->cb(t, status, w->arg);
        if (t->ops == &lab_transport_tcp_ops)
            w->orphan = 1;
        else
            free(w);
        w = next;
    }
    if (t->brk_active) {
        t->brk_active = 0;
        uv_timer_stop(&t->brk);
        if (t->brk_cb)
            t->brk_cb(t, status, t->brk_arg);
    }
}

static uint64_t next_random(lab_transport_t *t)
{
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;
    return t->rng;
}

void lab_transport_on_retry(uv_timer_t *timer)
{
    lab_transport_t *t = timer->data;
    if (t->closing)
        return;
    if (t->state == LAB_TRANSPORT_OPENING) { /* armed as a connect timeout by tcp.c */
        lab_transport_lost(t, LAB_ETIMEDOUT, "connect timed out");
        return;
    }
    if (t->state != LAB_TRANSPORT_OFFLINE)
        return;
    if (t->poll_live || t->tcp_live ||
        t->gai_pending) { /* the last connection's handle is still closing */
        uv_timer_start(&t->retry, lab_transport_on_retry, 10, 0);
        return;
    }
    t->state = LAB_TRANSPORT_OPENING;
    log_debug(SUB, "id=%s reconnecting port=%s", t->id, t->path);
    notify_state(t, 0, NULL);
    if (!t->closing)
        t->ops->open(t);
}

void lab_transport_lost(lab_transport_t *t, int err, const char *fmt, ...)
{
    if (t->closing || t->state == LAB_TRANSPORT_OFFLINE || t->state == LAB_TRANSPORT_CLOSED)
        return;
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    int was_open = t->state == LAB_TRANSPORT_OPEN;
    t->state = LAB_TRANSPORT_OFFLINE;
    t->ops->close(t);
    fail_pending(t, LAB_ECONN);

    /* Jitter of +-20% so that many instruments behind one device server do not retry in step. */
    unsigned delay = t->backoff_ms;
    delay = delay * 4 / 5 + (unsigned)(next_random(t) % (delay * 2 / 5 + 1));
    t->backoff_ms =
        t->backoff_ms * 2 > t->set.retry_max_ms ? t->set.retry_max_ms : t->backoff_ms * 2;
    if (was_open)
        log_warn(SUB, "id=%s offline %s port=%s err=%s reason=\"%s\" retry_ms=%u", t->id,
                 t->ops->name, t->path, lab_errname(err), reason, delay);
    else
        log_info(SUB, "id=%s cannot open %s port=%s err=%s reason=\"%s\" retry_ms=%u", t->id,
                 t->ops->name, t->path, lab_errname(err), reason, delay);
    lab_wirerec_event(t->rec, "offline", reason);
    notify_state(t, err, reason);
    if (!t->closing && t->state == LAB_TRANSPORT_OFFLINE)
        uv_timer_start(&t->retry, lab_transport_on_retry, delay, 0);
}

static void log_bytes(lab_transport_t *t, const char *dir, const uint8_t *d, size_t n)
{
    if (lab_log_threshold > LAB_LOG_DEBUG)
        return;
    enum { SHOW = 64 };
    char hex[SHOW * 3 + 1], text[SHOW + 1];
    size_t k = n < SHOW ? n : SHOW;
    for (size_t i = 0; i < k; i++) {
        snprintf(hex + 3 * i, 4, "%02x ", d[i]);
        text[i] = isprint(d[i]) && d[i] != '"' ? (char)d[i] : '.';
    }
    hex[k ? 3 * k - 1 : 0] = 0;
    text[k] = 0;
    log_debug(SUB, "id=%s %s n=%zu hex=\"%s%s\" text=\"%s\"", t->id, dir, n, hex,
              n > k ? " ..." : "", text);
}

void lab_transport_received(lab_transport_t *t, const uint8_t *data, size_t len)
{
    log_bytes(t, "rx", data, len);
    lab_wirerec_bytes(t->rec, "rx", data, len);
    if (t->cb.on_data && !t->closing)
        t->cb.on_data(t, data, len, t->cb.user);
}

void lab_transport_sent(lab_transport_t *t, const uint8_t *data, size_t len)
{
    log_bytes(t, "tx", data, len);
}

int lab_transport_write(lab_transport_t *t, const void *data, size_t len, lab_transport_done_cb cb,
                        void *arg)
{
    if (t->closing || t->state == LAB_TRANSPORT_CLOSED)
        return LAB_ESTATE;
    if (t->state != LAB_TRANSPORT_OPEN)
        return LAB_ECONN;
    if (len == 0)
        return LAB_EINVAL;
    lab_transport_wreq_t *w = lab_malloc(sizeof *w + len);
    memset(w, 0, sizeof *w);
    memcpy(w->data, data, len);
    w->len = len;
    w->cb = cb;
    w->arg = arg;
    w->t = t;
    if (t->wq_tail)
        t->wq_tail->next = w;
    else
        t->wq_head = w;
    lab_transport_wreq_t *prev_tail = t->wq_tail;
    t->wq_tail = w;
    int rc = t->ops->write(t);
    if (rc < 0) {
        t->wq_tail = prev_tail;
        if (prev_tail)
            prev_tail->next = NULL;
        else
            t->wq_head = NULL;
        free(w);
    } else {
        lab_wirerec_bytes(t->rec, "tx", data, len); /* as handed over, before any rx it causes */
    }
    return rc;
}

static void on_break_done(uv_timer_t *timer)
{
    lab_transport_t *t = timer->data;
    if (!t->brk_active)
        return;
    t->brk_active = 0;
    int rc = t->ops->send_break(t, 0);
    if (t->brk_cb)
        t->brk_cb(t, rc, t->brk_arg);
}

int lab_transport_send_break(lab_transport_t *t, unsigned ms, lab_transport_done_cb cb, void *arg)
{
    if (t->closing || t->state == LAB_TRANSPORT_CLOSED)
        return LAB_ESTATE;
    if (t->state != LAB_TRANSPORT_OPEN)
        return LAB_ECONN;
    if (t->brk_active)
        return LAB_EBUSY;
    int rc = t->ops->send_break(t, 1);
    if (rc != LAB_OK)
        return rc;
    log_debug(SUB, "id=%s break ms=%u", t->id, ms);
    if (lab_wirerec_on(t->rec)) {
        char text[32];
        snprintf(text, sizeof text, "ms=%u", ms);
        lab_wirerec_event(t->rec, "break", text);
    }
    t->brk_active = 1;
    t->brk_cb = cb;
    t->brk_arg = arg;
    uv_timer_start(&t->brk, on_break_done, ms, 0);
    return LAB_OK;
}

void lab_transport_unref(lab_transport_t *t)
{
    LAB_ASSERT(t->refs > 0);
    if (--t->refs > 0 || !t->closing)
        return;
    free(t->path);
    free(t->host);
    free(t->id);
    lab_wirerec_unref(t->rec);
    free(t);
}

static void on_timer_closed(uv_handle_t *h)
{
    lab_transport_unref(h->data);
}

void lab_transport_close(lab_transport_t *t)
{
    if (!t || t->closing)
        return;
    log_info(SUB, "id=%s closing %s port=%s", t->id, t->ops->name, t->path);
    if (t->state == LAB_TRANSPORT_OPEN && t->brk_active)
        t->ops->send_break(t, 0);
    if (t->state != LAB_TRANSPORT_CLOSED)
        t->ops->close(t);
    t->state = LAB_TRANSPORT_CLOSED;
    fail_pending(t, LAB_ESHUTDOWN);
    t->closing = 1;
    if (t->ops->release)
        t->ops->release(t);
    uv_close((uv_handle_t *)&t->retry, on_timer_closed);
    uv_close((uv_handle_t *)&t->brk, on_timer_closed);
}

/* ---- fd backends (tty, serial) ---- */

static void fd_on_poll(uv_poll_t *p, int status, int events);

static void fd_update(lab_transport_t *t)
{
    if (!t->poll_live || uv_is_closing((uv_handle_t *)&t->poll))
        return;
    int ev = UV_READABLE | UV_DISCONNECT | (t->wq_head ? UV_WRITABLE : 0);
    if (ev != t->poll_events) {
        t->poll_events = ev;
        uv_poll_start(&t->poll, ev, fd_on_poll);
    }
}

/* Called from lab_transport_write: the bytes leave at once (a device can start answering while
 * the loop turns), but completions and errors wait for the writable event, so no callback runs
 * inside lab_transport_write. */
void lab_transport_fd_flush(lab_transport_t *t)
{
    lab_transport_wreq_t *w = t->wq_head;
    while (w) {
        while (w->off < w->len) {
            ssize_t n = t->fd_write(t, w->data + w->off, w->len - w->off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                goto out;
            lab_transport_sent(t, w->data + w->off, (size_t)n);
            w->off += (size_t)n;
        }
        lab_transport_wreq_t *next = w->next;
        if (w == t->wq_head && !w->cb) { /* nobody waits for it: done, no extra poll round */
            t->wq_head = next;
            if (!next)
                t->wq_tail = NULL;
            free(w);
        }
        w = next;
    }
out:
    fd_update(t);
}

void lab_transport_wq_done(lab_transport_t *t)
{
    lab_transport_wreq_t *w = t->wq_head;
    t->wq_head = w->next;
    if (!t->wq_head)
        t->wq_tail = NULL;
    if (w->cb)
        w->cb(t, LAB_OK, w->arg);
    free(w);
}

static void fd_on_writable(lab_transport_t *t)
{
    while (t->wq_head && t->state == LAB_TRANSPORT_OPEN && !t->closing) {
        lab_transport_wreq_t *w = t->wq_head;
        if (w->off < w->len) {
            ssize_t n = t->fd_write(t, w->data + w->off, w->len - w->off);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                lab_transport_lost(t, LAB_EIO, "write: %s", strerror(errno));
                return;
            }
            if (n == 0)
                break;
            lab_transport_sent(t, w->data + w->off, (size_t)n);
            w->off += (size_t)n;
            continue;
        }
        lab_transport_wq_done(t);
    }
    fd_update(t);
}

static void fd_on_poll(uv_poll_t *p, int status, int events)
{
    lab_transport_t *t = p->data;
    if (t->closing || t->state != LAB_TRANSPORT_OPEN)
        return;
    if (status < 0) /* libuv reports POLLERR as EBADF; a read tells the real story (EIO) */
        events = UV_READABLE;
    if (events & (UV_READABLE | UV_DISCONNECT)) {
        uint8_t buf[4096];
        for (;;) {
            ssize_t n = t->fd_read(t, buf, sizeof buf);
            if (n > 0) {
                lab_transport_received(t, buf, (size_t)n);
                if (t->closing || t->state != LAB_TRANSPORT_OPEN)
                    return;
                if ((size_t)n < sizeof buf)
                    break;
                continue;
            }
            if (n == 0) {
                lab_transport_lost(t, LAB_EIO, "end of file (device gone)");
                return;
            }
            if (errno == EINTR)
                continue;
            if ((errno == EAGAIN || errno == EWOULDBLOCK) && status == 0)
                break;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                lab_transport_lost(t, LAB_EIO, "device error (poll: %s)", uv_strerror(status));
            else
                lab_transport_lost(t, LAB_EIO, "read: %s", strerror(errno));
            return;
        }
    }
    if (events & UV_WRITABLE)
        fd_on_writable(t);
}

int lab_transport_fd_attach(lab_transport_t *t, int fd)
{
    int rc = uv_poll_init(t->loop, &t->poll, fd);
    if (rc < 0)
        return rc;
    t->fd = fd;
    t->poll.data = t;
    t->poll_live = 1;
    t->refs++;
    t->poll_events = UV_READABLE | UV_DISCONNECT | (t->wq_head ? UV_WRITABLE : 0);
    uv_poll_start(&t->poll, t->poll_events, fd_on_poll);
    return 0;
}

static void on_poll_closed(uv_handle_t *h)
{
    lab_transport_t *t = h->data;
    t->poll_live = 0;
    lab_transport_unref(t);
}

void lab_transport_fd_detach(lab_transport_t *t)
{
    if (t->poll_live && !uv_is_closing((uv_handle_t *)&t->poll))
        uv_close((uv_handle_t *)&t->poll, on_poll_closed);
    t->fd = -1;
}
