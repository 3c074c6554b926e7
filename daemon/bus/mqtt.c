/* The MQTT bridge: one Paho MQTTAsync client (MQTT 5, clean start) owned by the loop thread. Paho's
 * callbacks copy what they got into a lab_tq item and return; connecting, reconnecting with
 * backoff, the retained status, subscriptions and the outbox publisher all run on the loop thread.
 *
 * The publisher keeps a window of up to `inflight` outbox rows in seq order (a ring of slots).
 * A slot is the Paho context of its message, so an acknowledgement finds its row without a search;
 * the cursor is the seq of the last slot in an unbroken run of acknowledged ones from the front.
 * A lost connection empties the window and the next connection republishes from cursor + 1. */
#include "daemon/bus/mqtt.h"
#include "daemon/store/audit.h"
#include "daemon/bus/topics.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/tq.h"

#include <MQTTAsync.h>
#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef LAB_VERSION
#define LAB_VERSION "0"
#endif

#define SINK_NAME "mqtt"
#define READ_MAX 512         /* rows per outbox read */
#define RETRY_MIN_MS 100     /* first reconnect delay; doubles up to retry_max */
#define DISCONNECT_MS 2000   /* how long an orderly disconnect waits for in-flight acks */
#define READ_RETRY_MS 1000   /* after a failed outbox read */
#define PUBLISH_RETRY_MS 100 /* after Paho refused to take a publish (its buffer full) */
/* Paho's buffer of publishes not yet written: the window plus this many replies and statuses. */
#define BUFFER_SPARE 64
#define SUBS_MAX 32
#define WARNED_MAX 16

typedef enum mstate {
    M_DOWN,       /* waiting for the retry timer */
    M_CONNECTING, /* MQTTAsync_connect issued */
    M_UP,
    M_CLOSING, /* offline published, disconnect issued */
    M_CLOSED,  /* client destroyed, handles closing */
} mstate_t;

typedef enum slot_state { SLOT_SENT, SLOT_DONE } slot_state_t;

typedef struct slot {
    lab_mqtt_t *m; /* set once; read by Paho's threads */
    int64_t seq;
    int token;
    slot_state_t state;
} slot_t;

typedef struct sub {
    char *filter;
    int qos;
    lab_mqtt_msg_cb cb;
    void *ctx;
} sub_t;

struct lab_mqtt {
    uv_loop_t *loop;
    lab_store_t *st;
    json_t *audit_head; /* the newest audit entry read and not yet on audit/head, or NULL */
    const lab_clock_t *clock;
    char *site, *cell, *root, *status_topic, *will;
    char *uri, *client_id, *username, *password;
    int keepalive_s;
    uint64_t retry_max_ms;

    MQTTAsync client;
    lab_tq_t tq;
    uv_timer_t retry; /* reconnect (DOWN) or outbox read retry (UP) */
    uv_timer_t grace; /* stop: grace period, then the disconnect's safety net */
    int open_handles;
    mstate_t state;
    int attempt; /* failed connects in a row */

    int sink;
    int64_t cursor;     /* every seq <= cursor is delivered */
    int64_t read_upto;  /* highest seq placed in the window */
    int64_t head;       /* newest committed seq we know of */
    int64_t rebase_gen; /* the store's rebases seen (lab_store_rebase_gen) */
    slot_t *ring;
    int ring_cap, ring_head, ring_n;

    sub_t subs[SUBS_MAX];
    int nsubs;
    char *warned[WARNED_MAX]; /* kinds already warned about */
    int nwarned;

    int64_t delivered, errors, connects;
    char last_error[256];
    int64_t blocked_at; /* the seq Paho last refused to take, 0 once it took one again */

    /* Inbound: the table's inbound topics as filters under our root (NULL for the others), the
     * subscriptions still unacknowledged on this connection ("online" waits for them), and
     * what came in and what became of it. */
    char *in_filters[LAB_TOPIC_COUNT];
    int subs_pending;
    lab_mqtt_inbound_t in;

    bool stopping, grace_over, disconnecting;
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

/* ---- items from Paho's threads ---- */

typedef enum ev_type {
    EV_CONNECTED,
    EV_CONNECT_FAILED,
    EV_LOST,
    EV_DISCONNECTED,
    EV_ACK,
    EV_NACK,
    EV_STATUS_FAILED,
    EV_OFFLINE_DONE, /* the stop's offline status acknowledged, or failed */
    EV_SUB_OK,
    EV_SUB_FAILED,
    EV_MESSAGE,
} ev_type_t;

typedef struct ev {
    lab_tq_item_t item;
    lab_mqtt_t *m;
    ev_type_t type;
    slot_t *slot;
    int token;
    int code;
    char *text;  /* cause or error message */
    char *topic; /* EV_MESSAGE */
    char *payload;
    size_t len;
    char *response_topic;
    void *corr; /* Correlation Data */
    size_t corr_len;
    lab_mqtt_prop_t props[LAB_MQTT_PROPS_MAX]; /* user properties, names and values malloc'd */
    int nprops;
} ev_t;

static void ev_run(lab_tq_item_t *item);

static void ev_push(lab_mqtt_t *m, ev_type_t type, slot_t *slot, int token, int code,
                    const char *text)
{
    ev_t *e = LAB_NEW(ev_t);
    e->item.fn = ev_run;
    e->m = m;
    e->type = type;
    e->slot = slot;
    e->token = token;
    e->code = code;
    e->text = text ? lab_strdup(text) : NULL;
    lab_tq_push(&m->tq, &e->item);
}

static void on_connect_ok(void *ctx, MQTTAsync_successData5 *r)
{
    ev_push(ctx, EV_CONNECTED, NULL, 0, 0, NULL);
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData5 *r)
{
    ev_push(ctx, EV_CONNECT_FAILED, NULL, 0, r ? r->code : 0, r ? r->message : NULL);
}

static void on_lost(void *ctx, char *cause)
{
    ev_push(ctx, EV_LOST, NULL, 0, 0, cause);
}

static void on_disconnect_ok(void *ctx, MQTTAsync_successData5 *r)
{
    ev_push(ctx, EV_DISCONNECTED, NULL, 0, 0, NULL);
}

static void on_disconnect_fail(void *ctx, MQTTAsync_failureData5 *r)
{
    ev_push(ctx, EV_DISCONNECTED, NULL, 0, r ? r->code : 0, r ? r->message : NULL);
}

static void on_pub_ok(void *ctx, MQTTAsync_successData5 *r)
{
    slot_t *s = ctx;
    ev_push(s->m, EV_ACK, s, r ? r->token : 0, 0, NULL);
}

static void on_pub_fail(void *ctx, MQTTAsync_failureData5 *r)
{
    slot_t *s = ctx;
    ev_push(s->m, EV_NACK, s, r ? r->token : 0,
            r ? (r->reasonCode ? (int)r->reasonCode : r->code) : 0, r ? r->message : NULL);
}

static void on_status_fail(void *ctx, MQTTAsync_failureData5 *r)
{
    ev_push(ctx, EV_STATUS_FAILED, NULL, 0, r ? r->code : 0, r ? r->message : NULL);
}

static void on_offline_ok(void *ctx, MQTTAsync_successData5 *r)
{
    ev_push(ctx, EV_OFFLINE_DONE, NULL, 0, 0, NULL);
}

static void on_offline_fail(void *ctx, MQTTAsync_failureData5 *r)
{
    ev_push(ctx, EV_OFFLINE_DONE, NULL, 0, r ? r->code : 0, r ? r->message : NULL);
}

static void on_sub_ok(void *ctx, MQTTAsync_successData5 *r)
{
    ev_push(ctx, EV_SUB_OK, NULL, 0, 0, NULL);
}

static void on_sub_fail(void *ctx, MQTTAsync_failureData5 *r)
{
    ev_push(ctx, EV_SUB_FAILED, NULL, 0, r ? (r->reasonCode ? (int)r->reasonCode : r->code) : 0,
            r ? r->message : NULL);
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    lab_mqtt_t *m = ctx;
    ev_t *e = LAB_NEW(ev_t);
    e->item.fn = ev_run;
    e->m = m;
    e->type = EV_MESSAGE;
    e->topic = topic_len > 0 ? lab_strndup(topic, (size_t)topic_len) : lab_strdup(topic);
    e->len = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    e->payload = lab_malloc(e->len + 1);
    if (e->len)
        memcpy(e->payload, msg->payload, e->len);
    e->payload[e->len] = '\0';
    MQTTProperty *rt =
        MQTTProperties_getProperty(&msg->properties, MQTTPROPERTY_CODE_RESPONSE_TOPIC);
    if (rt)
        e->response_topic = lab_strndup(rt->value.data.data, (size_t)rt->value.data.len);
    MQTTProperty *cd =
        MQTTProperties_getProperty(&msg->properties, MQTTPROPERTY_CODE_CORRELATION_DATA);
    if (cd && cd->value.data.len > 0) {
        e->corr_len = (size_t)cd->value.data.len;
        e->corr = lab_malloc(e->corr_len);
        memcpy(e->corr, cd->value.data.data, e->corr_len);
    }
    for (int i = 0; i < msg->properties.count && e->nprops < LAB_MQTT_PROPS_MAX; i++) {
        const MQTTProperty *p = &msg->properties.array[i];
        if (p->identifier != MQTTPROPERTY_CODE_USER_PROPERTY)
            continue;
        /* Paho's strings are counted, not terminated; a NUL inside one ends it here. */
        e->props[e->nprops].name = lab_strndup(p->value.data.data, (size_t)p->value.data.len);
        e->props[e->nprops].value = lab_strndup(p->value.value.data, (size_t)p->value.value.len);
        e->nprops++;
    }
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    lab_tq_push(&m->tq, &e->item);
    return 1;
}

/* ---- the loop side ---- */

static void pump(lab_mqtt_t *m);
static void finish(lab_mqtt_t *m);
static void connect_now(lab_mqtt_t *m);
static void on_retry(uv_timer_t *t);
static void on_grace(uv_timer_t *t);

static void set_error(lab_mqtt_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(lab_mqtt_t *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->last_error, sizeof m->last_error, fmt, ap);
    va_end(ap);
    m->errors++;
}

static void ring_reset(lab_mqtt_t *m)
{
    m->ring_head = m->ring_n = 0;
    m->read_upto = m->cursor;
}

static slot_t *ring_push(lab_mqtt_t *m, int64_t seq)
{
    slot_t *s = &m->ring[(m->ring_head + m->ring_n) % m->ring_cap];
    m->ring_n++;
    s->seq = seq;
    s->token = 0;
    s->state = SLOT_SENT;
    return s;
}

static bool ring_holds(const lab_mqtt_t *m, const slot_t *s)
{
    int idx = (int)(s - m->ring);
    int off = (idx - m->ring_head + m->ring_cap) % m->ring_cap;
    return off < m->ring_n;
}

/* Pops the acknowledged front of the window and saves the cursor when it moved. */
static void advance(lab_mqtt_t *m)
{
    int64_t before = m->cursor;
    while (m->ring_n > 0 && m->ring[m->ring_head].state == SLOT_DONE) {
        m->cursor = m->ring[m->ring_head].seq;
        m->ring_head = (m->ring_head + 1) % m->ring_cap;
        m->ring_n--;
    }
    if (m->cursor > before) {
        lab_store_cursor_save(m->st, SINK_NAME, m->cursor);
        lab_store_sink_acked(m->st, m->sink, m->cursor);
    }
}

static char *status_doc(const lab_mqtt_t *m, const char *state, bool full)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "state", state, "cell", m->cell, "site", m->site);
    if (!o)
        return lab_strdup("{\"state\":\"offline\"}");
    if (full) {
        char ts[32];
        lab_time_iso(lab_clock_now_ms(m->clock), ts);
        json_object_set_new(o, "ts", json_string(ts));
        if (strcmp(state, "online") == 0)
            json_object_set_new(o, "version", json_string(LAB_VERSION));
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s ? s : lab_strdup("{\"state\":\"offline\"}");
}

/* 0 when handed to Paho; the stop's offline status reports back with EV_OFFLINE_DONE. */
static int publish_status(lab_mqtt_t *m, const char *state)
{
    char *doc = status_doc(m, state, true);
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = doc;
    msg.payloadlen = (int)strlen(doc);
    msg.qos = lab_topics[LAB_TOPIC_STATUS].qos;
    msg.retained = lab_topics[LAB_TOPIC_STATUS].retained;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    bool last = strcmp(state, "offline") == 0;
    ro.onSuccess5 = last ? on_offline_ok : NULL;
    ro.onFailure5 = last ? on_offline_fail : on_status_fail;
    ro.context = m;
    int rc = MQTTAsync_sendMessage(m->client, m->status_topic, &msg, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        set_error(m, "status %s: paho error %d", state, rc);
        log_warn("mqtt", "could not publish status=%s rc=%d", state, rc);
    }
    free(doc);
    return rc == MQTTASYNC_SUCCESS ? 0 : -1;
}

/* A subscription of this connection was answered: "online" goes out once all were, so that a
 * client that waits for it never publishes into a filter the broker does not yet hold for us. */
static void sub_answered(lab_mqtt_t *m)
{
    if (m->state != M_UP || m->subs_pending == 0)
        return;
    if (--m->subs_pending == 0)
        publish_status(m, "online");
}

static void subscribe_one(lab_mqtt_t *m, const sub_t *s)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess5 = on_sub_ok;
    ro.onFailure5 = on_sub_fail;
    ro.context = m;
    /* Never our own publications; MQTT 5 forbids No Local on a shared subscription (the broker
     * drops the connection), and there our own answers never match the filter anyway. */
    ro.subscribeOptions.noLocal = strncmp(s->filter, "$share/", 7) != 0;
    int rc = MQTTAsync_subscribe(m->client, s->filter, s->qos, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        set_error(m, "subscribe %s: paho error %d", s->filter, rc);
        log_warn("mqtt", "subscribe filter=%s failed rc=%d", s->filter, rc);
        sub_answered(m);
    }
}

static void warn_kind(lab_mqtt_t *m, const lab_outbox_row_t *r)
{
    if (lab_outbox_kind_find(r->kind)) { /* a kind for PostgreSQL only, by design */
        log_debug("mqtt", "skipped seq=%lld kind=%s: not published", (long long)r->seq, r->kind);
        return;
    }
    for (int i = 0; i < m->nwarned; i++)
        if (strcmp(m->warned[i], r->kind) == 0) {
            log_debug("mqtt", "skipped seq=%lld kind=%s: no topic", (long long)r->seq, r->kind);
            return;
        }
    if (m->nwarned < WARNED_MAX)
        m->warned[m->nwarned++] = lab_strdup(r->kind);
    log_warn("mqtt", "outbox kind=%s has no topic; its rows are skipped (first seq=%lld)", r->kind,
             (long long)r->seq);
}

/* The row's document with cell, seq and ts added; anything but a JSON object is wrapped as
 * {"value": ...} so a bad row costs a warning, never the publisher. */
static char *row_payload(lab_mqtt_t *m, const lab_outbox_row_t *r, json_t **doc_out)
{
    json_error_t jerr;
    json_t *doc = json_loads(r->payload, JSON_DECODE_ANY, &jerr);
    if (!json_is_object(doc)) {
        json_t *v = doc ? doc : json_string(r->payload);
        log_warn("mqtt", "outbox seq=%lld kind=%s: payload is not a JSON object; wrapped as value",
                 (long long)r->seq, r->kind);
        doc = json_object();
        json_object_set_new(doc, "value", v ? v : json_null());
    }
    char ts[32];
    lab_time_iso(r->ts_ms, ts);
    json_object_set_new(doc, "cell", json_string(m->cell));
    json_object_set_new(doc, "seq", json_integer(r->seq));
    json_object_set_new(doc, "ts", json_string(ts));
    char *s = json_dumps(doc, JSON_COMPACT);
    *doc_out = doc;
    return s;
}

/* The topic's placeholders after the first (which is the row's key) come from the payload. */
static const char *payload_var(json_t *doc, const char *name, char *buf, size_t len)
{
    json_t *v = json_object_get(doc, name);
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    return NULL;
}

/* The chain's head, {audit_seq, hash, entry} (taken), retained on audit/head: when the reader has
 * caught up with the outbox (the newest entry its rows carried) and on every connect (the store's
 * newest). QoS 0: it takes no place in the window or in Paho's in-flight count, and a head lost
 * with a connection is published again when the next one comes up; only the newest matters. */
static void publish_head(lab_mqtt_t *m, json_t *head)
{
    char *topic = NULL;
    if (!json_is_object(head) ||
        lab_topic_format(lab_topic_get(LAB_TOPIC_AUDIT_HEAD), m->root, NULL, 0, &topic)) {
        json_decref(head);
        return;
    }
    json_object_set_new(head, "cell", json_string(m->cell));
    char *payload = json_dumps(head, JSON_COMPACT);
    json_decref(head);
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = payload;
    msg.payloadlen = payload ? (int)strlen(payload) : 0;
    msg.qos = 0;
    msg.retained = 1;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    if (payload)
        (void)MQTTAsync_sendMessage(m->client, topic, &msg, &ro);
    free(payload);
    free(topic);
}

/* The newest entry a row carries (its audit column, an array). */
static json_t *row_head(const lab_outbox_row_t *r)
{
    json_t *a = r->audit ? json_loads(r->audit, 0, NULL) : NULL;
    json_t *h = json_incref(json_array_get(a, json_array_size(a) - 1));
    json_decref(a);
    return h;
}

/* 0: placed in the window (published or skipped); < 0: not placed, stop reading. */
static int publish_row(lab_mqtt_t *m, const lab_outbox_row_t *r)
{
    const lab_topic_t *t = lab_topic_for_kind(r->kind);
    slot_t *s = ring_push(m, r->seq);
    m->read_upto = r->seq;
    if (!t) {
        warn_kind(m, r);
        s->state = SLOT_DONE;
        m->delivered++;
        return 0;
    }
    json_t *doc = NULL;
    char *payload = row_payload(m, r, &doc);
    char batch[32];
    const char *vars[2] = {r->key, NULL};
    if (lab_topic_nvars(t) > 1) /* campaigns/{id}/batches/{batch}/done */
        vars[1] = payload_var(doc, "batch", batch, sizeof batch);
    char *topic = NULL;
    int rc = payload ? lab_topic_format(t, m->root, vars, 2, &topic) : LAB_EINVAL;
    json_decref(doc);
    if (rc) {
        log_warn("mqtt", "outbox seq=%lld kind=%s key=%s: no valid topic (%s); skipped",
                 (long long)r->seq, r->kind, r->key, payload ? "bad key or batch" : "encoding");
        free(payload);
        s->state = SLOT_DONE;
        m->delivered++;
        return 0;
    }
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = payload;
    msg.payloadlen = (int)strlen(payload);
    msg.qos = t->qos;
    msg.retained = t->retained;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess5 = on_pub_ok;
    ro.onFailure5 = on_pub_fail;
    ro.context = s;
    rc = MQTTAsync_sendMessage(m->client, topic, &msg, &ro);
    free(payload);
    free(topic);
    if (rc != MQTTASYNC_SUCCESS) {
        /* The row stays unpublished and is read again: by the retry timer while connected (Paho's
         * buffer is full, MQTTASYNC_MAX_BUFFERED_MESSAGES: acks or replies may be all that is
         * left to wake the publisher, and they may never come), or by the next connection when
         * this one just dropped and its EV_LOST is on the way. */
        m->ring_n--;
        m->read_upto = r->seq - 1;
        set_error(m, "publish seq=%lld: paho error %d; will be retried", (long long)r->seq, rc);
        if (m->blocked_at != r->seq)
            log_warn("mqtt", "publish seq=%lld failed rc=%d (%s); will be retried in %d ms",
                     (long long)r->seq, rc,
                     rc == MQTTASYNC_MAX_BUFFERED_MESSAGES ? "client buffer full" : "not connected",
                     PUBLISH_RETRY_MS);
        m->blocked_at = r->seq;
        if (m->state == M_UP)
            uv_timer_start(&m->retry, on_retry, PUBLISH_RETRY_MS, 0);
        return rc == MQTTASYNC_MAX_BUFFERED_MESSAGES ? LAB_EBUSY : LAB_ECONN;
    }
    if (m->blocked_at) {
        log_info("mqtt", "publish seq=%lld taken after the client's buffer was full at seq=%lld",
                 (long long)r->seq, (long long)m->blocked_at);
        m->blocked_at = 0;
    }
    s->token = ro.token;
    return 0;
}

static bool caught_up(const lab_mqtt_t *m)
{
    return m->ring_n == 0 && m->read_upto >= m->head;
}

/* A clean DISCONNECT: the broker keeps the retained offline status and drops the Will. */
static void disconnect_now(lab_mqtt_t *m)
{
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
    d.timeout = 0; /* what is still unacknowledged is republished by the next start */
    d.onSuccess5 = on_disconnect_ok;
    d.onFailure5 = on_disconnect_fail;
    d.context = m;
    m->disconnecting = true;
    if (MQTTAsync_disconnect(m->client, &d) != MQTTASYNC_SUCCESS)
        finish(m);
}

/* Offline first, and disconnect once the broker has it (or DISCONNECT_MS passed). */
static void go_offline(lab_mqtt_t *m)
{
    m->state = M_CLOSING;
    uv_timer_start(&m->grace, on_grace, DISCONNECT_MS, 0);
    if (publish_status(m, "offline") != 0)
        disconnect_now(m);
}

static void stop_progress(lab_mqtt_t *m)
{
    if (!m->stopping || m->state == M_CLOSED || m->state == M_CLOSING)
        return;
    if (m->state == M_UP) {
        if (caught_up(m) || m->grace_over)
            go_offline(m);
        return;
    }
    if (m->state == M_DOWN || m->grace_over)
        finish(m);
}

static void pump(lab_mqtt_t *m)
{
    while (m->state == M_UP && m->ring_n < m->ring_cap && m->read_upto < m->head) {
        int want = m->ring_cap - m->ring_n;
        if (want > READ_MAX)
            want = READ_MAX;
        lab_outbox_row_t *rows = NULL;
        int n = lab_outbox_read(m->st, m->read_upto, want, &rows);
        if (n < 0) {
            set_error(m, "outbox read: %s (%d)", lab_strerror(n), n);
            log_error("mqtt", "outbox read after=%lld failed: %s", (long long)m->read_upto,
                      lab_strerror(n));
            uv_timer_start(&m->retry, on_retry, READ_RETRY_MS, 0);
            break;
        }
        int i = 0;
        while (i < n && publish_row(m, &rows[i]) == 0)
            i++;
        for (int k = i - 1; k >= 0; k--)
            if (rows[k].audit || strcmp(rows[k].kind, "audit") == 0) {
                json_decref(m->audit_head);
                /* a row of kind audit is published on audit/head itself */
                m->audit_head = rows[k].audit ? row_head(&rows[k]) : NULL;
                break;
            }
        lab_outbox_rows_free(rows, n);
        if (i < n)
            break;
        if (n < want) {
            /* The head moved past what is readable (pruned or not yet visible): trust the read. */
            if (m->read_upto < m->head && n == 0)
                m->head = m->read_upto;
            break;
        }
    }
    /* Once the reader has caught up: the publishes it was waiting on are out, so the head takes
     * no room a row needs, and a burst sets it once. */
    if (m->audit_head && m->state == M_UP && m->read_upto >= m->head) {
        publish_head(m, m->audit_head);
        m->audit_head = NULL;
    }
    advance(m);
    stop_progress(m);
}

static void on_retry(uv_timer_t *t)
{
    lab_mqtt_t *m = t->data;
    if (m->state == M_DOWN)
        connect_now(m);
    else if (m->state == M_UP)
        pump(m);
}

static void schedule_retry(lab_mqtt_t *m)
{
    uint64_t delay = RETRY_MIN_MS;
    for (int i = 0; i < m->attempt && delay < m->retry_max_ms; i++)
        delay *= 2;
    if (delay > m->retry_max_ms)
        delay = m->retry_max_ms;
    m->attempt++;
    m->state = M_DOWN;
    log_info("mqtt", "reconnecting in %llu ms (attempt %d)", (unsigned long long)delay, m->attempt);
    uv_timer_start(&m->retry, on_retry, delay, 0);
}

static void connect_now(lab_mqtt_t *m)
{
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer5;
    MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
    will.topicName = m->status_topic;
    will.message = m->will;
    will.qos = lab_topics[LAB_TOPIC_STATUS].qos;
    will.retained = lab_topics[LAB_TOPIC_STATUS].retained;
    co.keepAliveInterval = m->keepalive_s;
    co.cleanstart = 1;
    co.will = &will;
    co.username = m->username;
    co.password = m->password;
    co.maxInflight = m->ring_cap + 16; /* the window plus status messages */
    co.connectTimeout = 10;
    co.automaticReconnect = 0; /* reconnects are ours, from the loop thread */
    co.onSuccess5 = on_connect_ok;
    co.onFailure5 = on_connect_fail;
    co.context = m;
    int rc = MQTTAsync_connect(m->client, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        set_error(m, "connect: paho error %d", rc);
        log_warn("mqtt", "connect uri=%s failed to start rc=%d", m->uri, rc);
        schedule_retry(m);
        return;
    }
    m->state = M_CONNECTING;
}

static void handle_connected(lab_mqtt_t *m)
{
    m->state = M_UP;
    m->connects++;
    m->attempt = 0;
    log_info("mqtt", "connected uri=%s root=%s cursor=%lld", m->uri, m->root, (long long)m->cursor);
    m->subs_pending = m->nsubs;
    if (m->nsubs == 0)
        publish_status(m, "online");
    for (int i = 0; i < m->nsubs && m->state == M_UP; i++)
        subscribe_one(m, &m->subs[i]);
    ring_reset(m);
    publish_head(m, lab_audit_head(m->st));
    lab_store_stats_t ss;
    lab_store_stats(m->st, &ss);
    if (ss.head_seq > m->head)
        m->head = ss.head_seq;
    pump(m);
}

static void handle_down(lab_mqtt_t *m, const char *what, int code, const char *text)
{
    set_error(m, "%s: %s (%d)", what, text ? text : "no detail", code);
    log_warn("mqtt", "%s uri=%s code=%d reason=%s", what, m->uri, code, text ? text : "-");
    ring_reset(m);
    if (m->stopping) {
        finish(m);
        return;
    }
    schedule_retry(m);
}

static void count_received(lab_mqtt_t *m, const char *topic)
{
    for (int i = 0; i < LAB_TOPIC_COUNT; i++)
        if (m->in_filters[i] && lab_topic_match(m->in_filters[i], topic)) {
            m->in.received[i]++;
            return;
        }
    m->in.received_other++;
}

/* The filter a message's topic is matched against: a shared subscription's without
 * "$share/GROUP/" (the broker delivers such messages under their own topic). */
static const char *match_filter(const char *filter)
{
    if (strncmp(filter, "$share/", 7) != 0)
        return filter;
    const char *slash = strchr(filter + 7, '/');
    return slash ? slash + 1 : filter;
}

static void dispatch(lab_mqtt_t *m, ev_t *e)
{
    count_received(m, e->topic);
    for (int i = 0; i < m->nsubs; i++) {
        if (lab_topic_match(match_filter(m->subs[i].filter), e->topic)) {
            lab_mqtt_in_t in = {
                .topic = e->topic,
                .payload = e->payload,
                .len = e->len,
                .response_topic = e->response_topic,
                .corr = e->corr,
                .corr_len = e->corr_len,
                .props = e->props,
                .nprops = e->nprops,
            };
            m->subs[i].cb(m->subs[i].ctx, &in);
            return;
        }
    }
    lab_mqtt_unanswered(m, e->topic, LAB_MQTT_NO_SUBSCRIPTION, NULL);
}

static void ev_run(lab_tq_item_t *item)
{
    ev_t *e = (ev_t *)item;
    lab_mqtt_t *m = e->m;
    if (m->state == M_CLOSED) {
        if (e->type == EV_MESSAGE) {
            count_received(m, e->topic);
            lab_mqtt_unanswered(m, e->topic, LAB_MQTT_STOPPING, NULL);
        }
        goto done;
    }
    switch (e->type) {
    case EV_CONNECTED:
        if (m->state == M_CONNECTING)
            handle_connected(m);
        break;
    case EV_CONNECT_FAILED:
        if (m->state == M_CONNECTING)
            handle_down(m, "connect failed", e->code, e->text);
        break;
    case EV_LOST:
        if (m->state == M_UP || m->state == M_CLOSING)
            handle_down(m, "connection lost", 0, e->text ? e->text : "closed by peer");
        break;
    case EV_DISCONNECTED:
        if (m->state == M_CLOSING)
            finish(m);
        else if (m->state == M_UP) /* a forced reconnect after a refused publish */
            handle_down(m, "disconnected", e->code, e->text);
        break;
    case EV_ACK:
        if (m->state == M_UP || m->state == M_CLOSING) {
            slot_t *s = e->slot;
            if (ring_holds(m, s) && s->state == SLOT_SENT && s->token == e->token) {
                s->state = SLOT_DONE;
                m->delivered++;
                pump(m);
            }
        }
        break;
    case EV_NACK:
        if (m->state == M_UP && ring_holds(m, e->slot) && e->slot->state == SLOT_SENT &&
            e->slot->token == e->token) {
            if (!MQTTAsync_isConnected(m->client)) { /* failed by the connection going away */
                handle_down(m, "connection lost", e->code, e->text);
                break;
            }
            /* The broker refused it: drop the connection, and the next one republishes from the
             * cursor, after the backoff. */
            snprintf(m->last_error, sizeof m->last_error, "publish seq=%lld refused: %s (%d)",
                     (long long)e->slot->seq, e->text ? e->text : "-", e->code);
            m->errors++;
            log_warn("mqtt", "%s", m->last_error);
            MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer5;
            d.onSuccess5 = on_disconnect_ok;
            d.onFailure5 = on_disconnect_fail;
            d.context = m;
            if (MQTTAsync_disconnect(m->client, &d) != MQTTASYNC_SUCCESS)
                handle_down(m, "disconnect failed", e->code, e->text);
        }
        break;
    case EV_OFFLINE_DONE:
        if (m->state == M_CLOSING && !m->disconnecting) {
            if (e->code)
                log_warn("mqtt", "offline status not acknowledged: %s (%d)",
                         e->text ? e->text : "-", e->code);
            uv_timer_start(&m->grace, on_grace, DISCONNECT_MS, 0);
            disconnect_now(m);
        }
        break;
    case EV_STATUS_FAILED:
        snprintf(m->last_error, sizeof m->last_error, "status publish failed: %s (%d)",
                 e->text ? e->text : "-", e->code);
        m->errors++;
        log_warn("mqtt", "%s", m->last_error);
        break;
    case EV_SUB_OK:
        sub_answered(m);
        break;
    case EV_SUB_FAILED:
        snprintf(m->last_error, sizeof m->last_error, "subscribe failed: %s (%d)",
                 e->text ? e->text : "-", e->code);
        m->errors++;
        log_warn("mqtt", "%s", m->last_error);
        sub_answered(m);
        break;
    case EV_MESSAGE:
        dispatch(m, e);
        break;
    }
done:
    free(e->text);
    free(e->topic);
    free(e->payload);
    free(e->response_topic);
    free(e->corr);
    for (int i = 0; i < e->nprops; i++) {
        free((char *)e->props[i].name);
        free((char *)e->props[i].value);
    }
    free(e);
}

/* The store moved the rows this process appended to new seqs: those already published went out
 * under seqs PostgreSQL holds for other rows, so they go again under their new ones. */
static void check_rebase(lab_mqtt_t *m)
{
    int64_t from;
    int64_t gen = lab_store_rebase_gen(m->st, &from);
    if (gen == m->rebase_gen)
        return;
    m->rebase_gen = gen;
    if (m->cursor > from) {
        log_warn("mqtt",
                 "outbox rebased: the rows after seq=%lld are published again under their "
                 "new seqs (cursor was %lld)",
                 (long long)from, (long long)m->cursor);
        m->cursor = from;
        lab_store_cursor_save(m->st, SINK_NAME, from);
    }
    ring_reset(m);
}

static void on_commit(void *ctx, int64_t head)
{
    lab_mqtt_t *m = ctx;
    check_rebase(m);
    if (head > m->head)
        m->head = head;
    pump(m);
}

/* ---- lifecycle ---- */

static void mqtt_free(lab_mqtt_t *m)
{
    void (*cb)(void *) = m->stop_cb;
    void *arg = m->stop_arg;
    for (int i = 0; i < m->nsubs; i++)
        free(m->subs[i].filter);
    for (int i = 0; i < m->nwarned; i++)
        free(m->warned[i]);
    for (int i = 0; i < LAB_TOPIC_COUNT; i++)
        free(m->in_filters[i]);
    free(m->ring);
    free(m->site);
    free(m->cell);
    free(m->root);
    json_decref(m->audit_head);
    free(m->status_topic);
    free(m->will);
    free(m->uri);
    free(m->client_id);
    free(m->username);
    free(m->password);
    free(m);
    if (cb)
        cb(arg);
}

static void on_handle_closed(uv_handle_t *h)
{
    lab_mqtt_t *m = h->data;
    if (--m->open_handles == 0)
        mqtt_free(m);
}

static void on_tq_closed(uv_handle_t *h)
{
    lab_mqtt_t *m = (lab_mqtt_t *)((char *)h - offsetof(lab_mqtt_t, tq.async));
    if (--m->open_handles == 0)
        mqtt_free(m);
}

static void close_handles(lab_mqtt_t *m)
{
    m->open_handles = 3;
    uv_close((uv_handle_t *)&m->retry, on_handle_closed);
    uv_close((uv_handle_t *)&m->grace, on_handle_closed);
    /* Runs what is still queued (ev_run only frees it now), then closes the async. */
    lab_tq_close(&m->tq, on_tq_closed);
}

static void finish(lab_mqtt_t *m)
{
    if (m->state == M_CLOSED)
        return;
    m->state = M_CLOSED;
    uv_timer_stop(&m->retry);
    uv_timer_stop(&m->grace);
    lab_store_off_commit(m->st, on_commit, m);
    /* Not inside a Paho callback: this runs on the loop thread, from an item or a timer. */
    MQTTAsync_destroy(&m->client);
    log_info("mqtt", "stopped cursor=%lld delivered=%lld", (long long)m->cursor,
             (long long)m->delivered);
    close_handles(m);
}

static void on_grace(uv_timer_t *t)
{
    lab_mqtt_t *m = t->data;
    if (m->state == M_CLOSING) { /* the offline status or the disconnect never answered */
        if (m->disconnecting)
            finish(m);
        else
            disconnect_now(m);
        return;
    }
    m->grace_over = true;
    log_info("mqtt", "stop: grace over with cursor=%lld head=%lld", (long long)m->cursor,
             (long long)m->head);
    stop_progress(m);
}

int lab_mqtt_start(lab_mqtt_t **out, uv_loop_t *loop, const lab_config_t *cfg, lab_store_t *st,
                   const lab_clock_t *clock)
{
    *out = NULL;
    if (!cfg->mqtt_enabled || !cfg->mqtt_uri || !cfg->mqtt_topic_root || !cfg->site || !cfg->cell)
        return LAB_ECONFIG;
    if (!lab_topic_level_ok(cfg->site) || !lab_topic_level_ok(cfg->cell)) {
        log_error("mqtt", "site and cell must be single topic levels (no '/', '+', '#')");
        return LAB_ECONFIG;
    }
    lab_mqtt_t *m = LAB_NEW(lab_mqtt_t);
    m->loop = loop;
    m->st = st;
    m->clock = clock;
    m->site = lab_strdup(cfg->site);
    m->cell = lab_strdup(cfg->cell);
    m->root = lab_topic_root(cfg->mqtt_topic_root, cfg->site, cfg->cell);
    lab_topic_format(&lab_topics[LAB_TOPIC_STATUS], m->root, NULL, 0, &m->status_topic);
    m->will = status_doc(m, "offline", false);
    for (int i = 0; i < LAB_TOPIC_COUNT; i++)
        if (lab_topics[i].dir == LAB_TOPIC_IN)
            m->in_filters[i] = lab_topic_filter(&lab_topics[i], m->root);
    m->uri = lab_strdup(cfg->mqtt_uri);
    m->client_id = cfg->mqtt_client_id ? lab_strdup(cfg->mqtt_client_id)
                                       : lab_asprintf("labloop-%s-%s", cfg->site, cfg->cell);
    m->username = cfg->mqtt_username ? lab_strdup(cfg->mqtt_username) : NULL;
    m->password = cfg->mqtt_password ? lab_strdup(cfg->mqtt_password) : NULL;
    m->keepalive_s = cfg->mqtt_keepalive_s > 0 ? cfg->mqtt_keepalive_s : 30;
    m->retry_max_ms = (uint64_t)(cfg->mqtt_retry_max_s * 1000.0);
    if (m->retry_max_ms < RETRY_MIN_MS)
        m->retry_max_ms = RETRY_MIN_MS;
    m->ring_cap = cfg->mqtt_inflight > 0 ? cfg->mqtt_inflight : 1;
    m->ring = lab_calloc((size_t)m->ring_cap, sizeof *m->ring);
    for (int i = 0; i < m->ring_cap; i++)
        m->ring[i].m = m;

    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer5;
    /* Paho's default (100) is below the default window: a burst would be refused half way. */
    co.maxBufferedMessages = m->ring_cap + BUFFER_SPARE;
    int rc = MQTTAsync_createWithOptions(&m->client, m->uri, m->client_id,
                                         MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        log_error("mqtt", "cannot create a client for uri=%s rc=%d", m->uri, rc);
        m->client = NULL;
        goto fail;
    }
    if (MQTTAsync_setCallbacks(m->client, m, on_lost, on_message, NULL) != MQTTASYNC_SUCCESS)
        goto fail;
    m->sink = lab_store_sink_register(st, SINK_NAME);
    if (m->sink < 0) {
        log_error("mqtt", "cannot register the outbox sink: %s", lab_strerror(m->sink));
        goto fail;
    }
    if (lab_tq_init(&m->tq, loop) != LAB_OK)
        goto fail;
    uv_timer_init(loop, &m->retry);
    uv_timer_init(loop, &m->grace);
    m->retry.data = m->grace.data = m;
    m->cursor = lab_store_cursor_get(st, SINK_NAME);
    lab_store_stats_t ss;
    lab_store_stats(st, &ss);
    m->head = ss.head_seq;
    m->rebase_gen = lab_store_rebase_gen(st, NULL);
    ring_reset(m);
    lab_store_on_commit(st, on_commit, m);
    log_info("mqtt", "starting uri=%s root=%s cursor=%lld head=%lld", m->uri, m->root,
             (long long)m->cursor, (long long)m->head);
    connect_now(m);
    *out = m;
    return LAB_OK;
fail:
    if (m->client)
        MQTTAsync_destroy(&m->client);
    m->stop_cb = NULL;
    mqtt_free(m);
    return LAB_ECONFIG;
}

void lab_mqtt_stop(lab_mqtt_t *m, uint64_t grace_ms, void (*cb)(void *arg), void *arg)
{
    LAB_CHECK(!m->stopping, return );
    m->stopping = true;
    m->stop_cb = cb;
    m->stop_arg = arg;
    if (m->state == M_DOWN)
        uv_timer_stop(&m->retry);
    uv_timer_start(&m->grace, on_grace, grace_ms, 0);
    stop_progress(m);
}

void lab_mqtt_stats(const lab_mqtt_t *m, lab_sink_stats_t *out)
{
    static const lab_sink_state_t map[] = {
        [M_DOWN] = LAB_SINK_DOWN,  [M_CONNECTING] = LAB_SINK_CONNECTING, [M_UP] = LAB_SINK_UP,
        [M_CLOSING] = LAB_SINK_UP, [M_CLOSED] = LAB_SINK_DOWN,
    };
    out->state = map[m->state];
    out->cursor = m->cursor;
    out->delivered = m->delivered;
    out->batches = 0;
    out->errors = m->errors;
    out->connects = m->connects;
    out->last_error = m->last_error[0] ? m->last_error : NULL;
}

const char *lab_mqtt_root(const lab_mqtt_t *m)
{
    return m->root;
}

int lab_mqtt_subscribe(lab_mqtt_t *m, const char *filter, int qos, lab_mqtt_msg_cb cb, void *ctx)
{
    if (!filter || !*filter || qos < 0 || qos > 2 || !cb || strlen(filter) > 1024)
        return LAB_EINVAL;
    if (m->nsubs == SUBS_MAX)
        return LAB_ETOOBIG;
    sub_t *s = &m->subs[m->nsubs++];
    s->filter = lab_strdup(filter);
    s->qos = qos;
    s->cb = cb;
    s->ctx = ctx;
    if (m->state == M_UP) {
        if (m->subs_pending)
            m->subs_pending++;
        subscribe_one(m, s);
    }
    return LAB_OK;
}

const char *const lab_mqtt_why_names[LAB_MQTT_WHY_COUNT] = {
    [LAB_MQTT_NO_REPLY_TOPIC] = "no_reply_topic",
    [LAB_MQTT_BAD_REPLY_TOPIC] = "bad_reply_topic",
    [LAB_MQTT_NOT_SENT] = "not_sent",
    [LAB_MQTT_NO_SUBSCRIPTION] = "no_subscription",
    [LAB_MQTT_STOPPING] = "stopping",
};

static void unanswered(lab_mqtt_t *m, lab_mqtt_why_t why, const char *what, const char *answer)
{
    m->in.unanswered[why]++;
    /* The answer may be long (every problem of a batch); its start says what it was. */
    log_warn("mqtt", "%s; not answered (%s)%s%.*s", what, lab_mqtt_why_names[why],
             answer ? ": the answer was " : "", answer ? 400 : 0, answer ? answer : "");
}

void lab_mqtt_unanswered(lab_mqtt_t *m, const char *topic, lab_mqtt_why_t why, const char *answer)
{
    if (!m || (unsigned)why >= LAB_MQTT_WHY_COUNT)
        return;
    char what[400];
    snprintf(what, sizeof what, "message on topic=%.300s", topic ? topic : "-");
    unanswered(m, why, what, answer);
}

const char *lab_mqtt_in_prop(const lab_mqtt_in_t *msg, const char *name)
{
    for (int i = 0; i < msg->nprops; i++)
        if (strcmp(msg->props[i].name, name) == 0)
            return msg->props[i].value;
    return NULL;
}

lab_mqtt_return_t *lab_mqtt_return_new(const lab_mqtt_in_t *msg, const char *fallback)
{
    lab_mqtt_return_t *r = LAB_NEW(lab_mqtt_return_t);
    /* An empty Response Topic is no topic: the fallback then too. */
    const char *t = msg->response_topic && *msg->response_topic ? msg->response_topic : fallback;
    r->topic = t && *t ? lab_strdup(t) : NULL;
    if (msg->corr && msg->corr_len) {
        r->corr = lab_malloc(msg->corr_len);
        memcpy(r->corr, msg->corr, msg->corr_len);
        r->corr_len = msg->corr_len;
    }
    r->from = lab_strdup(msg->topic);
    return r;
}

void lab_mqtt_return_free(lab_mqtt_return_t *r)
{
    if (!r)
        return;
    free(r->topic);
    free(r->corr);
    free(r->from);
    free(r);
}

int lab_mqtt_answer(lab_mqtt_t *m, const lab_mqtt_return_t *r, const char *payload)
{
    if (!r->topic) {
        lab_mqtt_unanswered(m, r->from, LAB_MQTT_NO_REPLY_TOPIC, payload);
        return LAB_EINVAL;
    }
    return lab_mqtt_reply(m, r->topic, r->corr, r->corr_len, payload);
}

int lab_mqtt_reply(lab_mqtt_t *m, const char *topic, const void *corr, size_t corr_len,
                   const char *payload)
{
    if (!m)
        return LAB_ECONN;
    char what[400];
    const char *bad = lab_topic_reply_check(topic);
    if (bad) {
        snprintf(what, sizeof what, "reply topic=%.300s %s", topic ? topic : "", bad);
        unanswered(m, LAB_MQTT_BAD_REPLY_TOPIC, what, payload);
        return LAB_EINVAL;
    }
    if (m->state != M_UP || m->stopping) {
        snprintf(what, sizeof what, "reply topic=%.300s: the broker is not connected", topic);
        unanswered(m, LAB_MQTT_NOT_SENT, what, payload);
        return LAB_ECONN;
    }
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = (void *)payload;
    msg.payloadlen = (int)strlen(payload);
    msg.qos = 1;
    if (corr && corr_len > 0 && corr_len <= 65535) {
        MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_CORRELATION_DATA};
        p.value.data.data = (char *)corr;
        p.value.data.len = (int)corr_len;
        MQTTProperties_add(&msg.properties, &p); /* copies it */
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    int rc = MQTTAsync_sendMessage(m->client, topic, &msg, &ro);
    MQTTProperties_free(&msg.properties);
    if (rc != MQTTASYNC_SUCCESS) {
        bool utf8 = rc == MQTTASYNC_BAD_UTF8_STRING;
        snprintf(what, sizeof what, "reply topic=%.300s: %s (paho error %d)", topic,
                 utf8 ? "not UTF-8" : "the client did not take it", rc);
        unanswered(m, utf8 ? LAB_MQTT_BAD_REPLY_TOPIC : LAB_MQTT_NOT_SENT, what, payload);
        return utf8 ? LAB_EINVAL : LAB_ECONN;
    }
    m->in.answered++;
    return LAB_OK;
}

void lab_mqtt_inbound(const lab_mqtt_t *m, lab_mqtt_inbound_t *out)
{
    *out = m->in;
}
