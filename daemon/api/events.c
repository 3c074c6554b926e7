/* GET /v1/events: the outbox as server-sent events. A stream is a reader of the outbox with its
 * own position, like a sink's cursor: it holds no copy of the rows, only the bytes of the events
 * it formatted and MHD has not taken yet (at most LAB_EVENTS_FILL plus one event). MHD asks for
 * bytes when the client's socket can take them (a callback response); with nothing new the
 * connection is suspended, and the store's commit listener resumes every suspended stream. So a
 * client that does not read costs nothing but its socket buffers, and is dropped once it has
 * taken no bytes for events_stall seconds while MHD had bytes for it. */
#include "daemon/api/api_int.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Bytes formatted ahead of the client per fill; rows read from the outbox per query. */
#define LAB_EVENTS_FILL (64 * 1024)
#define LAB_EVENTS_ROWS 128
/* The block MHD asks for at most; the kernel send buffer of a stream's socket. */
#define LAB_EVENTS_BLOCK (64 * 1024)
#define LAB_EVENTS_SNDBUF (64 * 1024)
/* A comment line this often keeps proxies and clients from taking a quiet stream for dead. */
#define LAB_EVENTS_KEEPALIVE_MS 15000
#define LAB_EVENTS_TICK_MS 1000
#define LAB_EVENTS_BATCH_MS 50
/* The kinds parameter: its length, its entries, and an entry's length. */
#define LAB_KINDS_PARAM_MAX 512
#define LAB_KINDS_MAX 16
#define LAB_KIND_MAX 32
#define LAB_EVENTS_MAX_STREAMS_DEFAULT 64
#define LAB_EVENTS_STALL_DEFAULT_S 30

/* Bytes being gathered: a stream's output, or one event's text. */
typedef struct evbuf {
    char *buf;
    size_t len, cap;
} evbuf_t;

struct lab_stream {
    lab_stream_t *prev, *next; /* in api->streams */
    lab_api_t *api;
    struct MHD_Connection *conn;
    int64_t cursor;     /* the newest seq read from the outbox (sent or filtered out) */
    int64_t rebase_gen; /* the store's rebases seen (lab_store_rebase_gen) */
    char kinds[LAB_KINDS_MAX][LAB_KIND_MAX + 1];
    int nkinds;  /* 0: every kind */
    evbuf_t out; /* formatted bytes; [off, out.len) not yet taken by MHD */
    size_t off;
    uint64_t last_taken; /* uv_now when MHD last took bytes (or the stream opened) */
    uint64_t last_sent;  /* uv_now of the last bytes formatted (for the keepalive) */
    bool suspended, keepalive_due, ending, dropped;
};

static void buf_put(evbuf_t *s, const char *p, size_t n)
{
    if (s->len + n > s->cap) {
        s->cap = s->len + n > 2 * s->cap ? s->len + n : 2 * s->cap;
        s->buf = lab_realloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
}

static void buf_str(evbuf_t *s, const char *p)
{
    buf_put(s, p, strlen(p));
}

/* A JSON string of outside text (keys are ids, but the outbox does not promise that). */
static void buf_json_text(evbuf_t *s, const char *text)
{
    json_t *j = lab_json_text(text, LAB_TEXT_MAX);
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    buf_str(s, t ? t : "\"\"");
    free(t);
}

/* The payload as one line of JSON: verbatim when it is one line already (as the store writes
 * it), else re-encoded compact; text that is not JSON goes as a string. */
static void buf_payload(evbuf_t *s, const char *payload)
{
    if (*payload && !strpbrk(payload, "\r\n")) {
        buf_str(s, payload);
        return;
    }
    json_t *j = json_loads(payload, JSON_DECODE_ANY, NULL);
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    if (t)
        buf_str(s, t);
    else
        buf_json_text(s, payload);
    free(t);
}

static bool kind_wanted(const lab_stream_t *s, const char *kind)
{
    if (s->nkinds == 0)
        return true;
    for (int i = 0; i < s->nkinds; i++) {
        size_t n = strlen(s->kinds[i]);
        if (strncmp(kind, s->kinds[i], n) == 0 && (kind[n] == 0 || kind[n] == '.'))
            return true;
    }
    return false;
}

static void put_event(evbuf_t *s, const lab_outbox_row_t *r)
{
    char head[160], ts[32];
    /* A kind with a line break would end the field early: the outbox's kinds are names, but a
     * row is outside text as far as the stream is concerned. */
    const char *kind = strpbrk(r->kind, "\r\n") || !*r->kind ? "unknown" : r->kind;
    lab_time_iso(r->ts_ms, ts);
    snprintf(head, sizeof head, "id: %lld\nevent: %.64s\ndata: {\"key\":", (long long)r->seq, kind);
    buf_str(s, head);
    buf_json_text(s, r->key);
    snprintf(head, sizeof head, ",\"ts\":\"%s\",\"data\":", ts);
    buf_str(s, head);
    buf_payload(s, r->payload);
    buf_str(s, "}\n\n");
}

/* ---- the shared cache of formatted events ----
 * Every stream near the head wants the same rows: each is read from the outbox and formatted
 * once, into a ring of the newest events, and the streams copy from it. A stream behind the
 * ring (a resume from further back) reads the outbox itself. The ring holds every row in
 * (base, last]; it is bounded in entries and bytes, the oldest going first. */
#define LAB_CACHE_ENTRIES 8192
#define LAB_CACHE_BYTES (8 * 1024 * 1024)

typedef struct ev_entry {
    int64_t seq;
    char kind[LAB_KIND_MAX + 1]; /* cut: a longer kind matches no filter entry anyway */
    char *text;
    size_t len;
} ev_entry_t;

struct lab_events_cache {
    ev_entry_t v[LAB_CACHE_ENTRIES];
    int first, n;
    int64_t base, last;
    size_t bytes;
    int64_t rebase_gen;
};

static ev_entry_t *cache_at(lab_events_cache_t *c, int i)
{
    return &c->v[(c->first + i) % LAB_CACHE_ENTRIES];
}

static void cache_drop_oldest(lab_events_cache_t *c)
{
    ev_entry_t *e = cache_at(c, 0);
    c->base = e->seq;
    c->bytes -= e->len;
    free(e->text);
    e->text = NULL;
    c->first = (c->first + 1) % LAB_CACHE_ENTRIES;
    c->n--;
}

/* Empties the ring; it holds every row after seq (none yet). */
static void cache_clear(lab_events_cache_t *c, int64_t seq)
{
    while (c->n)
        cache_drop_oldest(c);
    c->base = c->last = seq;
}

static void cache_add(lab_events_cache_t *c, const lab_outbox_row_t *r)
{
    if (c->n == LAB_CACHE_ENTRIES)
        cache_drop_oldest(c);
    evbuf_t b = {0};
    put_event(&b, r);
    ev_entry_t *e = cache_at(c, c->n++);
    e->seq = r->seq;
    snprintf(e->kind, sizeof e->kind, "%s", r->kind);
    e->text = b.buf;
    e->len = b.len;
    c->bytes += b.len;
    c->last = r->seq;
    while (c->bytes > LAB_CACHE_BYTES && c->n > 1)
        cache_drop_oldest(c);
}

/* Reads rows past the ring's last up to head (at most LAB_EVENTS_ROWS * 8 per call). */
static int cache_extend(lab_api_t *api, int64_t head)
{
    lab_events_cache_t *c = api->ecache;
    int64_t from;
    int64_t gen = lab_store_rebase_gen(api->store, &from);
    if (gen != c->rebase_gen) { /* rows past `from` are under new seqs */
        c->rebase_gen = gen;
        if (c->last > from)
            cache_clear(c, from);
    }
    for (int round = 0; round < 8 && c->last < head; round++) {
        lab_outbox_row_t *rows;
        int64_t oldest;
        int n = lab_outbox_read_oldest(api->store, c->last, LAB_EVENTS_ROWS, &rows, &oldest);
        if (n < 0)
            return n;
        if (n == 0) { /* committed and already gone: the streams find out on their own */
            cache_clear(c, head);
            return 0;
        }
        if (oldest > c->last + 1)
            cache_clear(c, oldest - 1);
        /* Rows past head are committed in SQLite but not yet reported on the loop: they come
         * with their commit, when head has caught up. Taking them now would put a stream past
         * the head it compares ids with. */
        int take = 0;
        while (take < n && rows[take].seq <= head)
            take++;
        for (int i = 0; i < take; i++)
            cache_add(c, &rows[i]);
        lab_outbox_rows_free(rows, n);
        if (take < LAB_EVENTS_ROWS)
            break;
    }
    return 0;
}

/* Copies the ring's events after s->cursor into s, up to LAB_EVENTS_FILL bytes. */
static void cache_copy(lab_stream_t *s, lab_events_cache_t *c)
{
    int lo = 0, hi = c->n; /* the first entry with seq > cursor */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (cache_at(c, mid)->seq <= s->cursor)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (int i = lo; i < c->n && s->out.len < LAB_EVENTS_FILL; i++) {
        ev_entry_t *e = cache_at(c, i);
        s->cursor = e->seq;
        if (kind_wanted(s, e->kind))
            buf_put(&s->out, e->text, e->len);
    }
    if (s->out.len < LAB_EVENTS_FILL && s->cursor < c->last)
        s->cursor = c->last; /* rows absent from the outbox (a rebase's gap) */
}

/* Rows after the cursor are gone (pruned, or renumbered by a rebase): the client reloads its
 * state and the stream goes on from oldest. The id lets a client that reconnects now resume
 * from there rather than be reset again. */
static void put_reset(lab_stream_t *s, int64_t oldest)
{
    char t[128];
    snprintf(t, sizeof t, "id: %lld\nevent: reset\ndata: {\"oldest\":%lld}\n\n",
             (long long)(oldest - 1), (long long)oldest);
    buf_str(&s->out, t);
    s->cursor = oldest - 1;
    s->rebase_gen = lab_store_rebase_gen(s->api->store, &(int64_t){0});
}

/* Formats events after the cursor until LAB_EVENTS_FILL bytes are waiting or the stream is at
 * the head. */
static void stream_fill(lab_stream_t *s)
{
    lab_api_t *api = s->api;
    lab_store_stats_t st;
    lab_store_stats(api->store, &st);
    int64_t from;
    int64_t gen = lab_store_rebase_gen(api->store, &from);
    if (gen != s->rebase_gen) {
        s->rebase_gen = gen;
        if (s->cursor > from)
            put_reset(s, from + 1);
    }
    if (s->cursor > st.head_seq) /* an id from another history (a store restored or replaced) */
        put_reset(s, st.head_seq + 1);
    lab_events_cache_t *c = api->ecache;
    while (s->out.len < LAB_EVENTS_FILL && s->cursor < st.head_seq) {
        if (c->base <= s->cursor) {
            int rc = c->last < st.head_seq ? cache_extend(api, st.head_seq) : 0;
            if (rc) {
                log_error("api", "event streams: outbox read failed: %s; the stream ends",
                          lab_strerror(rc));
                s->ending = true;
                return;
            }
            if (c->base <= s->cursor) {
                int64_t before = s->cursor;
                cache_copy(s, c);
                if (s->cursor == before)
                    break; /* the ring has nothing past it yet */
                continue;
            }
        }
        lab_outbox_row_t *rows;
        int64_t oldest;
        int n = lab_outbox_read_oldest(api->store, s->cursor, LAB_EVENTS_ROWS, &rows, &oldest);
        if (n < 0) {
            log_error("api", "event stream: outbox read failed: %s; the stream ends",
                      lab_strerror(n));
            s->ending = true;
            return;
        }
        if (n == 0) { /* rows up to the head were committed, and are gone */
            put_reset(s, st.head_seq + 1);
            break;
        }
        if (oldest > s->cursor + 1)
            put_reset(s, oldest);
        int take = 0; /* as in cache_extend: nothing past the head the loop knows */
        while (take < n && rows[take].seq <= st.head_seq)
            take++;
        for (int i = 0; i < take; i++) {
            s->cursor = rows[i].seq;
            if (kind_wanted(s, rows[i].kind))
                put_event(&s->out, &rows[i]);
        }
        lab_outbox_rows_free(rows, n);
        if (take < LAB_EVENTS_ROWS)
            break;
    }
    if (s->keepalive_due && s->out.len == s->off)
        buf_str(&s->out, ": keepalive\n\n");
    s->keepalive_due = false;
    if (s->out.len > s->off)
        s->last_sent = uv_now(api->loop);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    lab_stream_t *s = cls;
    lab_api_t *api = s->api;
    (void)pos;
    s->last_taken = uv_now(api->loop);
    if (s->off == s->out.len) {
        s->off = s->out.len = 0;
        if (!s->ending)
            stream_fill(s);
    }
    if (s->off == s->out.len) {
        if (s->ending)
            return MHD_CONTENT_READER_END_OF_STREAM;
        /* Nothing new: MHD would ask again at once. Resumed by a commit, the keepalive or the
         * close. */
        s->suspended = true;
        MHD_suspend_connection(s->conn);
        return 0;
    }
    size_t n = s->out.len - s->off < max ? s->out.len - s->off : max;
    memcpy(out, s->out.buf + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    lab_stream_t *s = cls;
    lab_api_t *api = s->api;
    if (s->prev)
        s->prev->next = s->next;
    else
        api->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    api->nstreams--;
    if (api->nstreams == 0)
        uv_timer_stop(&api->events_timer);
    log_debug("api", "event stream closed at seq=%lld streams=%d", (long long)s->cursor,
              api->nstreams);
    free(s->out.buf);
    free(s);
}

static void stream_wake(lab_stream_t *s)
{
    if (!s->suspended)
        return;
    s->suspended = false;
    s->last_taken = uv_now(s->api->loop); /* the stall is counted from here */
    MHD_resume_connection(s->conn);
}

static void on_wake(uv_timer_t *t)
{
    lab_api_t *api = t->data;
    lab_store_stats_t st;
    lab_store_stats(api->store, &st);
    bool woke = false;
    for (lab_stream_t *s = api->streams; s; s = s->next)
        if (s->suspended && s->cursor < st.head_seq) {
            stream_wake(s);
            woke = true;
        }
    if (woke)
        lab_api_kick(api);
}

/* Under a burst of submissions groups commit every few milliseconds; waking every stream for
 * each would cost a send per stream per group. The streams are woken at most every
 * LAB_EVENTS_BATCH_MS, with everything committed meanwhile in one send. */
static void on_commit(void *ctx, int64_t head_seq)
{
    lab_api_t *api = ctx;
    (void)head_seq;
    if (api->streams && !uv_is_active((uv_handle_t *)&api->events_wake))
        uv_timer_start(&api->events_wake, on_wake, LAB_EVENTS_BATCH_MS, 0);
}

/* Once a second: keepalives due, and streams whose client stopped reading. */
static void on_tick(uv_timer_t *t)
{
    lab_api_t *api = t->data;
    uint64_t now = uv_now(api->loop);
    bool woke = false;
    for (lab_stream_t *s = api->streams; s; s = s->next) {
        if (s->suspended) {
            /* MHD does not watch a suspended connection: a client that left is seen here. */
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
            char c;
            if (ci && recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
                s->ending = true;
                stream_wake(s);
                woke = true;
                continue;
            }
            if (now - s->last_sent >= LAB_EVENTS_KEEPALIVE_MS) {
                s->keepalive_due = true;
                stream_wake(s);
                woke = true;
            }
            continue;
        }
        /* Not suspended and not asked for bytes: MHD's buffer for the client is full. */
        if (!s->dropped && now - s->last_taken >= api->events_stall_ms) {
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
            s->dropped = true;
            api->streams_dropped++;
            log_warn("api",
                     "event stream dropped: the client took no bytes for %llu ms "
                     "(at seq=%lld)",
                     (unsigned long long)(now - s->last_taken), (long long)s->cursor);
            if (ci)
                shutdown(ci->connect_fd, SHUT_RDWR); /* MHD sees the hang-up and closes */
            woke = true;
        }
    }
    if (woke)
        lab_api_kick(api);
}

/* Last-Event-ID, or ?after=: digits only. 1: given (into *seq), 0: absent, -1: malformed. */
static int parse_after(const char *v, int64_t *seq)
{
    if (!v)
        return 0;
    size_t n = strlen(v);
    if (n == 0 || n > 18 || strspn(v, "0123456789") != n)
        return -1;
    *seq = strtoll(v, NULL, 10);
    return 1;
}

/* Whether entry names an outbox kind exactly or as a dotted prefix ("instrument"). */
static bool kind_known(const char *entry)
{
    size_t n = strlen(entry);
    for (const lab_outbox_kind_t *k = lab_outbox_kinds; k->name; k++)
        if (strncmp(k->name, entry, n) == 0 && (k->name[n] == 0 || k->name[n] == '.'))
            return true;
    return false;
}

static char *kinds_list(void)
{
    size_t len = 1;
    for (const lab_outbox_kind_t *k = lab_outbox_kinds; k->name; k++)
        len += strlen(k->name) + 2;
    char *out = lab_malloc(len);
    out[0] = 0;
    for (const lab_outbox_kind_t *k = lab_outbox_kinds; k->name; k++) {
        if (out[0])
            strcat(out, ", ");
        strcat(out, k->name);
    }
    return out;
}

/* ?kinds=a,b into s; 0, or rq's answer set (400). */
static int parse_kinds(lab_req_t *rq, const char *v, lab_stream_t *s)
{
    if (!v)
        return 0;
    size_t n = strlen(v);
    if (n == 0 || n > LAB_KINDS_PARAM_MAX) {
        lab_problem(rq, LAB_P_BAD_REQUEST, lab_errors_one("kinds", "1 to 512 bytes"),
                    "kinds must be 1 to %d bytes, not %zu", LAB_KINDS_PARAM_MAX, n);
        return LAB_EINVAL;
    }
    for (const char *p = v;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char entry[LAB_KIND_MAX + 1] = "";
        if (s->nkinds == LAB_KINDS_MAX) {
            lab_problem(rq, LAB_P_BAD_REQUEST, lab_errors_one("kinds", "too many entries"),
                        "kinds takes at most %d entries", LAB_KINDS_MAX);
            return LAB_EINVAL;
        }
        if (len > 0 && len <= LAB_KIND_MAX) {
            memcpy(entry, p, len);
            entry[len] = 0;
        }
        if (!entry[0] || !kind_known(entry)) {
            char *known = kinds_list();
            char shown[LAB_KIND_MAX + 8];
            snprintf(shown, sizeof shown, "%.*s%s", (int)(len > LAB_KIND_MAX ? LAB_KIND_MAX : len),
                     p, len > LAB_KIND_MAX ? "..." : "");
            json_t *where = lab_json_text(shown, sizeof shown);
            lab_problem(rq, LAB_P_BAD_REQUEST,
                        lab_errors_one("kinds", "not a kind, nor the dotted prefix of one"),
                        "unknown kind %s in kinds; the kinds are: %s",
                        where ? json_string_value(where) : "", known);
            json_decref(where);
            free(known);
            return LAB_EINVAL;
        }
        memcpy(s->kinds[s->nkinds++], entry, len + 1);
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

void lab_api_events(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    lab_stream_t *s = LAB_NEW(lab_stream_t);
    int64_t after = 0;
    const char *hid = lab_req_header(rq, "Last-Event-ID");
    int given = parse_after(hid ? hid : lab_req_query(rq, "after"), &after);
    if (given < 0) {
        lab_problem(rq, LAB_P_BAD_REQUEST,
                    lab_errors_one(hid ? "Last-Event-ID" : "after", "expected a seq (digits)"),
                    "%s must be an event id (an outbox seq)", hid ? "Last-Event-ID" : "after");
        goto fail;
    }
    if (parse_kinds(rq, lab_req_query(rq, "kinds"), s))
        goto fail;
    if (api->closing || !api->accepting) {
        lab_problem(rq, LAB_P_UNAVAILABLE, NULL, "the daemon is shutting down");
        goto fail;
    }
    if (api->nstreams >= api->events_max) {
        api->streams_refused++;
        struct MHD_Response *r =
            lab_problem(rq, LAB_P_UNAVAILABLE, NULL,
                        "%d event streams are open, the most this daemon serves (events_max_"
                        "streams)",
                        api->nstreams);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
        goto fail;
    }
    lab_store_stats_t st;
    lab_store_stats(api->store, &st);
    s->api = api;
    s->conn = rq->conn;
    s->cursor = given ? after : st.head_seq;
    s->rebase_gen = lab_store_rebase_gen(api->store, &(int64_t){0});
    s->last_taken = s->last_sent = uv_now(api->loop);
    buf_str(&s->out, "retry: 2000\n\n");
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, LAB_EVENTS_BLOCK,
                                                               stream_read, s, stream_free);
    if (!r) {
        lab_respond_internal(rq, "the event stream's response could not be made");
        goto fail;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    if (rq->resp)
        MHD_destroy_response(rq->resp);
    rq->resp = r;
    rq->status = 200;
    /* The stream outlives MHD's idle timeout; its own keepalive and stall check replace it. A
     * small send buffer bounds what a client that stops reading holds in the kernel. */
    MHD_set_connection_option(rq->conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) {
        int sz = LAB_EVENTS_SNDBUF;
        setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    s->next = api->streams;
    if (s->next)
        s->next->prev = s;
    api->streams = s;
    if (api->nstreams++ == 0)
        uv_timer_start(&api->events_timer, on_tick, LAB_EVENTS_TICK_MS, LAB_EVENTS_TICK_MS);
    log_debug("api", "event stream opened after seq=%lld kinds=%d streams=%d", (long long)s->cursor,
              s->nkinds, api->nstreams);
    return;
fail:
    free(s);
}

int lab_events_start(lab_api_t *api, const lab_config_t *cfg)
{
    api->events_max =
        cfg->events_max_streams > 0 ? cfg->events_max_streams : LAB_EVENTS_MAX_STREAMS_DEFAULT;
    api->events_stall_ms = 1000u * (unsigned)(cfg->events_stall_s > 0 ? cfg->events_stall_s
                                                                      : LAB_EVENTS_STALL_DEFAULT_S);
    lab_store_stats_t st;
    lab_store_stats(api->store, &st);
    api->ecache = LAB_NEW(lab_events_cache_t);
    api->ecache->base = api->ecache->last = st.head_seq;
    api->ecache->rebase_gen = lab_store_rebase_gen(api->store, &(int64_t){0});
    uv_timer_init(api->loop, &api->events_timer);
    uv_timer_init(api->loop, &api->events_wake);
    api->events_timer.data = api->events_wake.data = api;
    lab_store_on_commit(api->store, on_commit, api);
    return 0;
}

void lab_events_stop(lab_api_t *api)
{
    lab_store_off_commit(api->store, on_commit, api);
    uv_timer_stop(&api->events_timer);
    uv_timer_stop(&api->events_wake);
    for (lab_stream_t *s = api->streams; s; s = s->next) {
        s->ending = true;
        stream_wake(s);
    }
}

void lab_events_free(lab_api_t *api)
{
    if (!api->ecache)
        return;
    cache_clear(api->ecache, 0);
    free(api->ecache);
    api->ecache = NULL;
}

size_t lab_events_buffered(const lab_api_t *api)
{
    size_t n = 0;
    for (const lab_stream_t *s = api->streams; s; s = s->next)
        n += s->out.len - s->off;
    return n;
}
