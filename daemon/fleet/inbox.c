/* in/runs over MQTT: each message becomes one submission (daemon/fleet/submit.c) and one answer
 * on its response topic, or a log line and a count when it has nowhere to go. */
#include "daemon/fleet/inbox.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/utf8.h"
#include "daemon/bus/topics.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_PROPERTY "idempotency-key"
#define OWNER "mqtt" /* whose keys they are on this cell, and the runs' submitted_by */
#define SHARE_GROUP "labloop"

struct lab_inbox {
    lab_mqtt_t *mqtt; /* NULL once detached */
    lab_submit_t *sub;
    int waiting; /* submissions not yet answered */
    bool freeing;
};

typedef struct req {
    lab_inbox_t *x;
    lab_mqtt_return_t *ret;
} req_t;

static void maybe_free(lab_inbox_t *x)
{
    if (x->freeing && x->waiting == 0)
        free(x);
}

/* Outside text (a detail quoting a key) as a JSON string: invalid bytes replaced. */
static json_t *text_json(const char *s)
{
    size_t len = strlen(s);
    char *buf = lab_malloc(len * 3 + 1);
    lab_utf8_sanitize(buf, len * 3 + 1, s, len);
    json_t *j = json_string(buf);
    free(buf);
    return j;
}

/* The answer document (schemas/mqtt.md). */
static char *answer_text(const lab_submit_answer_t *a)
{
    json_t *o;
    if (a->why == LAB_SUBMIT_ACCEPTED) {
        json_t *run = json_loads(a->doc, 0, NULL);
        /* A replay is code 200 with "duplicate": whoever retried learns it was taken before. */
        o = json_pack("{s:s, s:i, s:o}", "status", "accepted", "code", a->replayed ? 200 : 201,
                      "run", run ? run : json_null());
        if (a->replayed)
            json_object_set_new(o, "duplicate", json_true());
        if (a->shared)
            json_object_set_new(o, "queue", json_string("shared"));
    } else {
        char type[80];
        snprintf(type, sizeof type, "urn:labloop:problem:%s", lab_submit_why_slug(a->why));
        o = json_pack("{s:s, s:i, s:s, s:o, s:O}", "status", "rejected", "code", a->code, "type",
                      type, "detail", text_json(a->detail), "errors", a->errors);
        if (o && a->retry_after_s > 0)
            json_object_set_new(o, "retry_after_s", json_integer(a->retry_after_s));
    }
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text ? text
                : lab_strdup("{\"status\":\"rejected\",\"code\":500,\"detail\":\"the answer could "
                             "not be built\",\"errors\":[]}");
}

static void send_answer(lab_inbox_t *x, const lab_mqtt_return_t *ret, const char *text, int code)
{
    if (!x->mqtt) {
        log_warn("inbox",
                 "run on topic=%.300s answered %d after the bridge stopped; not sent: "
                 "%.400s",
                 ret->from, code, text);
        return;
    }
    if (lab_mqtt_answer(x->mqtt, ret, text) == 0)
        log_debug("inbox", "run on topic=%s answered %d on %s", ret->from, code, ret->topic);
}

static void on_answer(void *arg, const lab_submit_answer_t *a)
{
    req_t *r = arg;
    lab_inbox_t *x = r->x;
    char *text = answer_text(a);
    send_answer(x, r->ret, text, a->code);
    free(text);
    lab_mqtt_return_free(r->ret);
    free(r);
    x->waiting--;
    maybe_free(x);
}

/* A payload over the limit, refused before the submission path sees it (413, too-large). */
static void refuse_large(lab_inbox_t *x, const lab_mqtt_return_t *ret, const char *detail)
{
    json_t *errs = json_pack("[{s:s, s:s}]", "path", "", "message", detail);
    lab_submit_answer_t a = {
        .why = LAB_SUBMIT_TOO_LARGE, .code = 413, .errors = errs, .detail = detail};
    char *text = answer_text(&a);
    send_answer(x, ret, text, a.code);
    free(text);
    json_decref(errs);
}

static void on_message(lab_inbox_t *x, const lab_mqtt_in_t *msg, bool shared_only)
{
    /* Where the answer goes: the response topic, else the document's reply_to. Finding reply_to
     * costs a parse; the submission parses again, which only MQTT 3.1.1 clients pay for. */
    json_t *doc = NULL;
    const char *reply_to = NULL;
    bool has_rt = msg->response_topic && *msg->response_topic;
    if (!has_rt && msg->len <= LAB_INBOX_MAX_BYTES) {
        doc = json_loadb(msg->payload, msg->len, JSON_REJECT_DUPLICATES, NULL);
        reply_to = json_string_value(json_object_get(doc, "reply_to"));
    }
    lab_mqtt_return_t *ret = lab_mqtt_return_new(msg, reply_to);
    const char *bad = ret->topic ? lab_topic_reply_check(ret->topic) : NULL;
    if (bad) {
        /* Nothing is submitted that could never be answered: the sender would retry it. */
        lab_mqtt_reply(x->mqtt, ret->topic, NULL, 0,
                       "{\"status\":\"rejected\",\"code\":400,\"detail\":\"the response topic is "
                       "not one an answer may go to; not submitted\",\"errors\":[]}");
        goto done;
    }
    if (msg->len > LAB_INBOX_MAX_BYTES) {
        char detail[120];
        snprintf(detail, sizeof detail, "the run document has %zu bytes; at most %d are taken",
                 msg->len, LAB_INBOX_MAX_BYTES);
        refuse_large(x, ret, detail);
        goto done;
    }
    /* reply_to says where the answer goes, not what the run is: the rest is submitted. */
    char *body = NULL;
    if (reply_to) {
        json_object_del(doc, "reply_to");
        body = json_dumps(doc, JSON_COMPACT);
    }
    const char *key = lab_mqtt_in_prop(msg, KEY_PROPERTY);
    lab_submission_t in = {
        .body = body ? body : msg->payload,
        .len = body ? strlen(body) : msg->len,
        .key = key,
        .owner = OWNER,
        .origin = "mqtt",
        .via = "mqtt",
        .shared_only = shared_only,
    };
    req_t *r = LAB_NEW(req_t);
    r->x = x;
    r->ret = ret;
    ret = NULL;
    x->waiting++;
    lab_submit_run(x->sub, &in, on_answer, r);
    free(body);
done:
    lab_mqtt_return_free(ret);
    json_decref(doc);
}

static void on_cell_msg(void *ctx, const lab_mqtt_in_t *msg)
{
    on_message(ctx, msg, false);
}

static void on_site_msg(void *ctx, const lab_mqtt_in_t *msg)
{
    on_message(ctx, msg, true);
}

int lab_inbox_start(lab_inbox_t **out, lab_mqtt_t *mqtt, lab_submit_t *sub, const char *topic_root,
                    const char *site, bool shared)
{
    *out = NULL;
    lab_inbox_t *x = LAB_NEW(lab_inbox_t);
    x->mqtt = mqtt;
    x->sub = sub;
    const lab_topic_t *t = lab_topic_get(LAB_TOPIC_IN_RUNS);
    char *filter = lab_topic_filter(t, lab_mqtt_root(mqtt));
    int rc = lab_mqtt_subscribe(mqtt, filter, t->qos, on_cell_msg, x);
    if (rc != LAB_OK)
        log_error("inbox", "cannot subscribe to %s: %s", filter, lab_strerror(rc));
    free(filter);
    if (rc == LAB_OK && shared) {
        char *site_root = lab_asprintf("%s/%s", topic_root, site);
        char *site_topic = lab_topic_filter(t, site_root);
        filter = lab_asprintf("$share/%s/%s", SHARE_GROUP, site_topic);
        rc = lab_mqtt_subscribe(mqtt, filter, t->qos, on_site_msg, x);
        if (rc != LAB_OK)
            log_error("inbox", "cannot subscribe to %s: %s", filter, lab_strerror(rc));
        free(filter);
        free(site_topic);
        free(site_root);
    }
    if (rc != LAB_OK) {
        free(x);
        return rc;
    }
    *out = x;
    return LAB_OK;
}

void lab_inbox_detach(lab_inbox_t *x)
{
    if (x)
        x->mqtt = NULL;
}

void lab_inbox_free(lab_inbox_t *x)
{
    if (!x)
        return;
    x->freeing = true;
    maybe_free(x);
}
