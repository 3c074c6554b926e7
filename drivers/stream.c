/* The serial stream-driver base (drivers/stream.h): transport, one command in flight, the
 * connect sequence and its retry, resynchronisation, and the quiet line before a command.
 *
 * The invariant that keeps replies paired with their commands: a reply is taken only while a
 * command is in flight, and a command is sent only when no byte has arrived for quiet_ms
 * outside of a command's exchange (quiet_until). Every doubt about where the exchange stands
 * (a timeout, garbage, an unexpected reply) clears the link: the line is drained until it is
 * quiet and the driver's connect sequence brings both ends back in step. */
#include "drivers/stream.h"
#include "core/err.h"
#include "core/log.h"

#include <stdio.h>
#include <string.h>

static void stream_connect_due(uv_timer_t *t);

static uint64_t stream_now(lab_stream_t *s)
{
    return uv_now(lab_drv_loop(s->d));
}

size_t lab_stream_printable(const void *data, size_t len, char *out, size_t cap)
{
    const unsigned char *b = data;
    size_t o = 0, first = len;
    if (cap == 0)
        return len;
    for (size_t i = 0; i < len; i++) {
        bool plain = b[i] >= 0x20 && b[i] < 0x7f;
        if (!plain && first == len)
            first = i;
        if (o + (plain ? 1 : 4) + 4 >= cap) {
            if (o + 4 < cap)
                o += (size_t)snprintf(out + o, cap - o, "...");
            break;
        }
        if (plain)
            out[o++] = (char)b[i];
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", b[i]);
    }
    out[o] = '\0';
    return first;
}

const char *lab_stream_sent(const lab_stream_t *s)
{
    return s->sent;
}

bool lab_stream_linked(const lab_stream_t *s)
{
    return s->linked;
}

lab_driver_t *lab_stream_driver(lab_stream_t *s)
{
    return s->d;
}

static void stream_stop_timers(lab_stream_t *s)
{
    uv_timer_stop(&s->reply_timer);
    uv_timer_stop(&s->send_timer);
    uv_timer_stop(&s->later_timer);
    uv_timer_stop(&s->wait_timer);
    s->in_flight = false;
    s->out_len = 0;
}

/* An operation that waited for the link gets no link: nothing of it was sent. */
static void stream_fail_pending(lab_stream_t *s, const lab_drv_error_t *why)
{
    if (!s->op_pending)
        return;
    s->op_pending = false;
    lab_drv_error_t e = *why;
    snprintf(e.text, sizeof e.text, "not sent, no link to the instrument: %.200s", why->text);
    e.not_started = true;
    s->ops->end(s, LAB_STREAM_OP, &e);
}

/* The link does not come back. Before it was ever up on this connection the instrument is
 * offline; after, it is in fault (as the failed command left it) and the base goes on trying. */
static void stream_down(lab_stream_t *s, const lab_drv_error_t *e)
{
    stream_fail_pending(s, e);
    if (s->was_linked)
        lab_drv_set_state(s->d, LAB_INST_FAULT, e);
    else
        lab_drv_set_state(s->d, LAB_INST_OFFLINE, e);
}

/* Forgets the partial frame: the base's line and the driver's own framer. */
static void stream_reset_framer(lab_stream_t *s)
{
    proto_lines_init(&s->lines);
    if (s->ops->reset)
        s->ops->reset(s);
}

static int stream_line_cb(void *ud, const char *line, size_t len, int err)
{
    lab_stream_t *s = ud;
    if (err)
        lab_stream_garbage(s, line ? line : "", line ? len : 0, lab_strerror(err));
    else if (s->ops->line)
        s->ops->line(s, line, len);
    else
        lab_stream_reply(s, line, len);
    return 0;
}

void lab_stream_lines_feed(lab_stream_t *s, const uint8_t *data, size_t len)
{
    proto_lines_feed(&s->lines, data, len, stream_line_cb, s);
}

/* Drain: drop everything until the line has been quiet for quiet_ms, then connect again. */
static void stream_resync(lab_stream_t *s, uint64_t not_before)
{
    uint64_t now = stream_now(s);
    if (!s->resyncing) {
        s->resync_since = now;
        s->noisy = false;
        s->tail_len = 0;
    }
    uv_timer_stop(&s->reply_timer);
    s->in_flight = false;
    s->linked = false;
    s->resyncing = true;
    if (not_before > s->not_before)
        s->not_before = not_before;
    stream_reset_framer(s);
    uv_timer_start(&s->quiet_timer, stream_connect_due, s->conf.quiet_ms, 0);
}

static void stream_begin_connect(lab_stream_t *s)
{
    s->owner = LAB_STREAM_CONNECT;
    s->echo_seen = false;
    s->ops->begin(s, LAB_STREAM_CONNECT);
}

static void stream_break_done(lab_transport_t *t, int status, void *arg)
{
    (void)t;
    lab_stream_t *s = arg;
    if (s->owner != LAB_STREAM_CONNECT || s->resyncing)
        return;
    if (status < 0) {
        /* Closed or lost meanwhile: the transport's state callback has taken over. Still open:
         * the port would not release the BREAK; the connect sequence fails and is retried. */
        if (s->t && lab_transport_state(s->t) == LAB_TRANSPORT_OPEN) {
            lab_drv_error_t e;
            lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "releasing the BREAK: %s",
                              lab_strerror(status));
            lab_stream_end_later(s, &e);
        }
        return;
    }
    /* The controller may answer the wake-up with anything: that is drained like any noise. */
    s->quiet_until = stream_now(s) + s->conf.quiet_ms;
    s->ops->begin(s, LAB_STREAM_CONNECT);
}

static void stream_connect_due(uv_timer_t *t)
{
    lab_stream_t *s = t->data;
    uint64_t now = stream_now(s);
    if (!s->t || lab_transport_state(s->t) != LAB_TRANSPORT_OPEN)
        return;
    if (now < s->not_before) {
        uv_timer_start(&s->quiet_timer, stream_connect_due, s->not_before - now, 0);
        return;
    }
    s->resyncing = false;
    if (s->owner != LAB_STREAM_NONE)
        return; /* a deferred end still to come; it reconnects after */
    if (s->conf.break_ms > 0) {
        s->owner = LAB_STREAM_CONNECT;
        s->echo_seen = false;
        int rc = lab_transport_send_break(s->t, s->conf.break_ms, stream_break_done, s);
        if (rc == LAB_OK)
            return;
        /* A TCP device server has no line signalling: the connect sequence goes without. */
        log_debug(s->conf.tag, "instrument=%s no break on this link: %s", lab_driver_id(s->d),
                  lab_strerror(rc));
    }
    stream_begin_connect(s);
}

/* ---- ends ---- */

static void stream_end(lab_stream_t *s, const lab_drv_error_t *err)
{
    lab_stream_owner_t owner = s->owner;
    stream_stop_timers(s);
    s->owner = LAB_STREAM_NONE;
    if (owner == LAB_STREAM_CONNECT && !err)
        s->linked = true;
    if (owner != LAB_STREAM_NONE)
        s->ops->end(s, owner, err);
    if (s->owner != LAB_STREAM_NONE)
        return;
    if (owner != LAB_STREAM_CONNECT) {
        /* Out of step but not draining (a deferred end outran the quiet line): connect again. */
        if (!s->linked && !s->resyncing && s->t && lab_transport_state(s->t) == LAB_TRANSPORT_OPEN)
            stream_resync(s, 0);
        return;
    }
    if (s->linked) {
        s->was_linked = true;
        if (s->op_pending) {
            s->op_pending = false;
            s->owner = LAB_STREAM_OP;
            s->echo_seen = false;
            s->ops->begin(s, LAB_STREAM_OP);
        }
        return;
    }
    lab_drv_error_t e = *err;
    snprintf(e.text, sizeof e.text, "connecting: %.230s", err->text);
    stream_down(s, &e);
    stream_resync(s, stream_now(s) + s->conf.retry_ms);
}

void lab_stream_end(lab_stream_t *s, const lab_drv_error_t *err)
{
    if (err && err->code == LAB_OK)
        err = NULL;
    stream_end(s, err);
}

static void stream_later_due(uv_timer_t *t)
{
    lab_stream_t *s = t->data;
    stream_end(s, &s->later);
}

void lab_stream_end_later(lab_stream_t *s, const lab_drv_error_t *err)
{
    s->later = *err;
    uv_timer_stop(&s->reply_timer);
    s->in_flight = false;
    uv_timer_start(&s->later_timer, stream_later_due, 0, 0);
}

void lab_stream_end_resync(lab_stream_t *s, const lab_drv_error_t *err)
{
    stream_resync(s, 0);
    stream_end(s, err);
}

void lab_stream_link_up(lab_stream_t *s)
{
    s->linked = true;
}

void lab_stream_unexpected(lab_stream_t *s, const char *data, size_t len, const char *expected)
{
    char shown[160];
    lab_drv_error_t e;
    size_t bad = lab_stream_printable(data, len, shown, sizeof shown);
    if (bad < len)
        lab_drv_error_set(&e, LAB_EPROTO, NULL,
                          "unexpected reply '%s' to '%s' (byte 0x%02x at %zu; expected %s)", shown,
                          s->sent, (unsigned char)data[bad], bad, expected);
    else
        lab_drv_error_set(&e, LAB_EPROTO, NULL, "unexpected reply '%s' to '%s' (expected %s)",
                          shown, s->sent, expected);
    lab_stream_end_resync(s, &e);
}

/* ---- the exchange ---- */

static void stream_reply_due(uv_timer_t *t)
{
    lab_stream_t *s = t->data;
    lab_drv_error_t e;
    lab_drv_error_set(&e, LAB_ETIMEDOUT, NULL, "no reply to '%s' within %u ms", s->sent,
                      s->reply_ms);
    s->in_flight = false;
    if (s->ops->timeout)
        s->ops->timeout(s, &e);
    lab_stream_end_resync(s, &e);
}

static void stream_write_out(lab_stream_t *s)
{
    lab_drv_error_t e;
    size_t n = s->out_len;
    s->out_len = 0;
    /* A partial frame now is nobody's reply: it must not become the start of this one's. */
    stream_reset_framer(s);
    int rc = s->t ? lab_transport_write(s->t, s->out, n, NULL, NULL) : LAB_ECONN;
    if (rc < 0) {
        lab_stream_end_later(s, lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "cannot send '%s': %s",
                                                  s->sent, lab_strerror(rc)));
        return;
    }
    s->in_flight = true;
    uv_timer_start(&s->reply_timer, stream_reply_due, s->reply_ms, 0);
}

static void stream_send_due(uv_timer_t *t)
{
    lab_stream_t *s = t->data;
    uint64_t now = stream_now(s);
    if (now < s->quiet_until) {
        uv_timer_start(&s->send_timer, stream_send_due, s->quiet_until - now, 0);
        return;
    }
    stream_write_out(s);
}

void lab_stream_send(lab_stream_t *s, const void *data, size_t len, unsigned reply_ms)
{
    lab_drv_error_t e;
    size_t shown = len;
    /* Messages name the command without its terminator. */
    while (shown > 0 &&
           (((const char *)data)[shown - 1] == '\r' || ((const char *)data)[shown - 1] == '\n'))
        shown--;
    lab_stream_printable(data, shown, s->sent, sizeof s->sent);
    s->echo_seen = false;
    s->reply_ms = reply_ms ? reply_ms : s->conf.reply_ms;
    if (len > sizeof s->out || len == 0) {
        lab_stream_end_later(s, lab_drv_error_set(&e, LAB_EINTERNAL, NULL,
                                                  "command of %zu bytes (at most %zu)", len,
                                                  sizeof s->out));
        return;
    }
    memcpy(s->out, data, len);
    s->out_len = len;
    uint64_t now = stream_now(s);
    if (now < s->quiet_until) {
        uv_timer_start(&s->send_timer, stream_send_due, s->quiet_until - now, 0);
        return;
    }
    stream_write_out(s);
}

int lab_stream_write(lab_stream_t *s, const void *data, size_t len)
{
    if (!s->t)
        return LAB_ECONN;
    return lab_transport_write(s->t, data, len, NULL, NULL);
}

void lab_stream_expect(lab_stream_t *s, unsigned ms)
{
    s->reply_ms = ms ? ms : s->conf.reply_ms;
    s->in_flight = true;
    uv_timer_start(&s->reply_timer, stream_reply_due, s->reply_ms, 0);
}

static void stream_wait_due(uv_timer_t *t)
{
    lab_stream_t *s = t->data;
    void (*fn)(lab_stream_t *) = s->wait_cb;
    s->wait_cb = NULL;
    if (fn)
        fn(s);
}

void lab_stream_wait(lab_stream_t *s, unsigned ms, void (*fn)(lab_stream_t *s))
{
    s->wait_cb = fn;
    uv_timer_start(&s->wait_timer, stream_wait_due, ms, 0);
}

/* Bytes no command waits for: dropped, and the next command waits for a quiet line. */
static void stream_drop(lab_stream_t *s, const void *data, size_t len, const char *what)
{
    char shown[160];
    lab_stream_printable(data, len, shown, sizeof shown);
    const uint8_t *b = data;
    if (len >= sizeof s->tail) {
        memcpy(s->tail, b + len - sizeof s->tail, sizeof s->tail);
        s->tail_len = sizeof s->tail;
    } else {
        size_t keep = s->tail_len + len > sizeof s->tail ? sizeof s->tail - len : s->tail_len;
        memmove(s->tail, s->tail + s->tail_len - keep, keep);
        memcpy(s->tail + keep, b, len);
        s->tail_len = keep + len;
    }
    s->quiet_until = stream_now(s) + s->conf.quiet_ms;
    log_debug(s->conf.tag, "instrument=%s dropped %s=\"%s\"", lab_driver_id(s->d), what, shown);
}

void lab_stream_reply(lab_stream_t *s, const char *data, size_t len)
{
    if (!s->in_flight || s->resyncing) {
        stream_drop(s, data, len, "reply");
        return;
    }
    if (s->conf.skip_echo && !s->echo_seen && len == strlen(s->sent) &&
        memcmp(data, s->sent, len) == 0) {
        s->echo_seen = true;
        log_debug(s->conf.tag, "instrument=%s echo of '%s' dropped", lab_driver_id(s->d), s->sent);
        return;
    }
    s->in_flight = false;
    uv_timer_stop(&s->reply_timer);
    s->ops->reply(s, data, len);
}

void lab_stream_garbage(lab_stream_t *s, const void *data, size_t len, const char *why)
{
    if (!s->in_flight || s->resyncing) {
        stream_drop(s, data, len, "garbage");
        return;
    }
    char shown[160];
    lab_drv_error_t e;
    size_t bad = lab_stream_printable(data, len, shown, sizeof shown);
    if (bad < len)
        lab_drv_error_set(&e, LAB_EPROTO, NULL, "reply to '%s': '%s' (byte 0x%02x at %zu): %s",
                          s->sent, shown, ((const unsigned char *)data)[bad], bad, why);
    else
        lab_drv_error_set(&e, LAB_EPROTO, NULL, "reply to '%s': '%s': %s", s->sent, shown, why);
    s->in_flight = false;
    lab_stream_end_resync(s, &e);
}

/* ---- the transport ---- */

static void stream_on_data(lab_transport_t *t, const uint8_t *data, size_t len, void *user)
{
    (void)t;
    lab_stream_t *s = user;
    if (s->resyncing) {
        /* Draining: the quiet period starts again with every byte. */
        stream_drop(s, data, len, "bytes");
        uv_timer_start(&s->quiet_timer, stream_connect_due, s->conf.quiet_ms, 0);
        uint64_t waited = stream_now(s) - s->resync_since;
        if (!s->noisy && waited > s->conf.retry_ms + s->conf.quiet_ms) {
            lab_drv_error_t e;
            char shown[80];
            lab_stream_printable(s->tail, s->tail_len, shown, sizeof shown);
            lab_drv_error_set(&e, LAB_EPROTO, NULL,
                              "the line is never quiet for %u ms (last bytes '%s')",
                              s->conf.quiet_ms, shown);
            s->noisy = true;
            stream_down(s, &e);
        }
        return;
    }
    /* Bytes outside a command's exchange (even half a frame): the line is not quiet. */
    if (!s->in_flight)
        s->quiet_until = stream_now(s) + s->conf.quiet_ms;
    if (s->ops->feed)
        s->ops->feed(s, data, len);
    else
        lab_stream_lines_feed(s, data, len);
}

static void stream_on_state(lab_transport_t *t, lab_transport_state_t state, int err,
                            const char *reason, void *user)
{
    (void)t;
    lab_stream_t *s = user;
    lab_drv_error_t e;
    if (state == LAB_TRANSPORT_OPEN) {
        s->linked = false;
        s->was_linked = false;
        s->quiet_until = 0;
        s->not_before = 0;
        s->resyncing = false;
        /* Whatever the device left on the line from before is drained first. */
        stream_resync(s, 0);
    } else if (state == LAB_TRANSPORT_OFFLINE) {
        lab_stream_owner_t owner = s->owner;
        stream_stop_timers(s);
        uv_timer_stop(&s->quiet_timer);
        s->owner = LAB_STREAM_NONE;
        s->linked = false;
        s->resyncing = false;
        lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "%s",
                          reason && *reason ? reason : lab_strerror(err));
        if (owner == LAB_STREAM_OP)
            s->ops->end(s, owner, &e);
        s->was_linked = false;
        stream_fail_pending(s, &e);
        lab_drv_set_state(s->d, LAB_INST_OFFLINE, &e);
    }
}

/* ---- lifecycle ---- */

int lab_stream_init(lab_stream_t *s, lab_driver_t *d, const lab_stream_ops_t *ops,
                    const lab_stream_conf_t *conf, char *err, size_t errlen)
{
    s->d = d;
    s->ops = ops;
    s->conf = *conf;
    proto_lines_init(&s->lines);
    if (!s->conf.tag)
        s->conf.tag = "stream";
    if (!s->conf.reply_ms)
        s->conf.reply_ms = 1500;
    if (!s->conf.retry_ms)
        s->conf.retry_ms = 2000;
    uv_timer_t *timers[] = {&s->reply_timer, &s->quiet_timer, &s->send_timer,
                            &s->later_timer, &s->wait_timer,  &s->refuse_timer};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_init(lab_drv_loop(d), timers[i]);
        timers[i]->data = s;
        s->timers_open++;
    }
    lab_transport_settings_t ts;
    lab_drv_serial_settings(d, &ts);
    lab_transport_callbacks_t cb = {stream_on_data, stream_on_state, s};
    return lab_transport_new(lab_drv_loop(d), &ts, lab_driver_id(d), &cb, &s->t, err, errlen);
}

void lab_stream_start(lab_stream_t *s)
{
    lab_drv_set_state(s->d, LAB_INST_OFFLINE, NULL);
    if (s->t)
        lab_transport_open(s->t);
}

void lab_stream_run(lab_stream_t *s)
{
    if (s->linked && !s->resyncing && s->owner == LAB_STREAM_NONE) {
        s->owner = LAB_STREAM_OP;
        s->echo_seen = false;
        s->ops->begin(s, LAB_STREAM_OP);
        return;
    }
    s->op_pending = true;
}

static void stream_refuse_due(uv_timer_t *t)
{
    lab_stream_t *s = t->data;
    s->ops->end(s, LAB_STREAM_OP, &s->refused);
}

/* The refused operation never owned the line: the connect sequence may be running. */
void lab_stream_refuse(lab_stream_t *s, const lab_drv_error_t *err)
{
    s->refused = *err;
    s->refused.not_started = true;
    uv_timer_start(&s->refuse_timer, stream_refuse_due, 0, 0);
}

void lab_stream_abort(lab_stream_t *s)
{
    s->op_pending = false;
    uv_timer_stop(&s->refuse_timer);
    if (s->owner != LAB_STREAM_OP)
        return;
    bool flight = s->in_flight;
    stream_stop_timers(s);
    s->owner = LAB_STREAM_NONE;
    if (flight)
        stream_resync(s, 0);
}

void lab_stream_stop(lab_stream_t *s)
{
    stream_stop_timers(s);
    uv_timer_stop(&s->quiet_timer);
    uv_timer_stop(&s->refuse_timer);
    s->owner = LAB_STREAM_NONE;
    s->op_pending = false;
    s->linked = false;
    s->resyncing = false;
    if (s->t)
        lab_transport_close(s->t);
    s->t = NULL;
}

static void stream_timer_closed(uv_handle_t *h)
{
    lab_stream_t *s = h->data;
    if (--s->timers_open == 0)
        lab_drv_closed(s->d);
}

void lab_stream_close(lab_stream_t *s)
{
    lab_stream_stop(s);
    if (s->timers_open == 0) {
        lab_drv_closed(s->d);
        return;
    }
    uv_close((uv_handle_t *)&s->reply_timer, stream_timer_closed);
    uv_close((uv_handle_t *)&s->quiet_timer, stream_timer_closed);
    uv_close((uv_handle_t *)&s->send_timer, stream_timer_closed);
    uv_close((uv_handle_t *)&s->later_timer, stream_timer_closed);
    uv_close((uv_handle_t *)&s->wait_timer, stream_timer_closed);
    uv_close((uv_handle_t *)&s->refuse_timer, stream_timer_closed);
}
