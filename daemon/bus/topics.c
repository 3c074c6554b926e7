/* The MQTT topic table and the helpers that turn its patterns into topics and filters. */
#include "daemon/bus/topics.h"
#include "core/err.h"
#include "core/mem.h"

#include <stdlib.h>
#include <string.h>

#define LEVEL_MAX 256

/* QoS 1 everywhere: consumers dedupe by (cell, seq), so at-least-once is enough and QoS 2's
 * extra round trip buys nothing. Retained only where the latest value is the whole truth. */
const lab_topic_t lab_topics[LAB_TOPIC_COUNT] = {
    {LAB_TOPIC_STATUS, "status", "status", LAB_TOPIC_OUT, 1, true, NULL},
    {LAB_TOPIC_INSTRUMENT_STATE, "instrument.state", "instruments/{id}/state", LAB_TOPIC_OUT, 1,
     true, "instrument.state"},
    {LAB_TOPIC_INSTRUMENT_TELEMETRY, "instrument.telemetry", "instruments/{id}/telemetry",
     LAB_TOPIC_OUT, 1, false, "instrument.telemetry"},
    {LAB_TOPIC_RUN_STATE, "run.state", "runs/{id}/state", LAB_TOPIC_OUT, 1, false, "run.state"},
    {LAB_TOPIC_MEASUREMENTS, "measurements", "measurements/{run}", LAB_TOPIC_OUT, 1, false,
     "measurement"},
    {LAB_TOPIC_CAMPAIGN_RESULTS, "campaign.results", "campaigns/{id}/results", LAB_TOPIC_OUT, 1,
     false, "campaign.result"},
    {LAB_TOPIC_BATCH_DONE, "batch.done", "campaigns/{id}/batches/{batch}/done", LAB_TOPIC_OUT, 1,
     false, "batch.done"},
    {LAB_TOPIC_INSTRUMENT_CONSUMABLES, "instrument.consumables", "instruments/{id}/consumables",
     LAB_TOPIC_OUT, 1, true, "consumable"},
    /* Every audit entry in turn, so the retained message is the chain's head: a copy of where
     * the chain stood that the cell's own store cannot take back. */
    {LAB_TOPIC_AUDIT_HEAD, "audit.head", "audit/head", LAB_TOPIC_OUT, 1, true, "audit"},
    {LAB_TOPIC_IN_RUNS, "in.runs", "in/runs", LAB_TOPIC_IN, 1, false, NULL},
    {LAB_TOPIC_IN_BATCHES, "in.batches", "in/campaigns/{id}/batches", LAB_TOPIC_IN, 1, false, NULL},
    {LAB_TOPIC_IN_REPORT, "in.report", "in/instruments/{id}/report", LAB_TOPIC_IN, 1, false, NULL},
    {LAB_TOPIC_PLATE_STATE, "plate.state", "plates/{barcode}", LAB_TOPIC_OUT, 1, true,
     "plate.state"},
    {LAB_TOPIC_PLATE_MOVES, "plate.move", "plates/{barcode}/moves", LAB_TOPIC_OUT, 1, false,
     "plate.move"},
};

const lab_topic_t *lab_topic_get(lab_topic_id_t id)
{
    return (int)id >= 0 && id < LAB_TOPIC_COUNT ? &lab_topics[id] : NULL;
}

const lab_topic_t *lab_topic_for_kind(const char *kind)
{
    for (int i = 0; kind && i < LAB_TOPIC_COUNT; i++)
        if (lab_topics[i].dir == LAB_TOPIC_OUT && lab_topics[i].kind &&
            strcmp(lab_topics[i].kind, kind) == 0)
            return &lab_topics[i];
    return NULL;
}

int lab_topic_nvars(const lab_topic_t *t)
{
    int n = 0;
    for (const char *p = t->pattern; *p; p++)
        n += *p == '{';
    return n;
}

char *lab_topic_root(const char *topic_root, const char *site, const char *cell)
{
    return lab_asprintf("%s/%s/%s", topic_root, site, cell);
}

bool lab_topic_level_ok(const char *s)
{
    if (!s || !*s)
        return false;
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++)
        if (*p == '/' || *p == '+' || *p == '#' || *p < 0x20 || *p == 0x7f || n >= LEVEL_MAX)
            return false;
    return true;
}

const char *lab_topic_reply_check(const char *topic)
{
    if (!topic || !*topic)
        return "empty";
    if (strlen(topic) > 65535)
        return "longer than 65535 bytes";
    if (strpbrk(topic, "+#"))
        return "holds a wildcard ('+' or '#')";
    if (topic[0] == '$')
        return "a '$' topic belongs to the broker";
    return NULL;
}

/* Expands the pattern after root: each {name} becomes vars[i] (or "+" when vars is NULL). */
static int expand(const lab_topic_t *t, const char *root, const char *const *vars, int nvars,
                  char **out)
{
    size_t cap = strlen(root) + strlen(t->pattern) + 2;
    int need = lab_topic_nvars(t);
    if (vars && nvars < need)
        return LAB_EINVAL;
    for (int i = 0; vars && i < need; i++) {
        if (!lab_topic_level_ok(vars[i]))
            return LAB_EINVAL;
        cap += strlen(vars[i]);
    }
    char *buf = lab_malloc(cap + (size_t)need + 1);
    size_t n = (size_t)(stpcpy(stpcpy(buf, root), "/") - buf);
    int v = 0;
    for (const char *p = t->pattern; *p; p++) {
        if (*p != '{') {
            buf[n++] = *p;
            continue;
        }
        const char *val = vars ? vars[v] : "+";
        v++;
        size_t len = strlen(val);
        memcpy(buf + n, val, len);
        n += len;
        p = strchr(p, '}');
    }
    buf[n] = '\0';
    *out = buf;
    return LAB_OK;
}

int lab_topic_format(const lab_topic_t *t, const char *root, const char *const *vars, int nvars,
                     char **out)
{
    *out = NULL;
    if (!t || !root || (!vars && lab_topic_nvars(t) > 0))
        return LAB_EINVAL;
    static const char *const none[1] = {NULL};
    return expand(t, root, vars ? vars : none, nvars, out);
}

char *lab_topic_filter(const lab_topic_t *t, const char *root)
{
    char *out = NULL;
    expand(t, root, NULL, 0, &out);
    return out;
}

bool lab_topic_match(const char *filter, const char *topic)
{
    const char *f = filter, *t = topic;
    for (;;) {
        if (f[0] == '#' && f[1] == '\0')
            return true;
        const char *fe = strchr(f, '/'), *te = strchr(t, '/');
        size_t fl = fe ? (size_t)(fe - f) : strlen(f), tl = te ? (size_t)(te - t) : strlen(t);
        if (!(fl == 1 && f[0] == '+') && (fl != tl || memcmp(f, t, fl) != 0))
            return false;
        if (!fe || !te) {
            /* "a/#" also matches "a" */
            return !fe && !te ? true : (fe && !te && strcmp(fe, "/#") == 0);
        }
        f = fe + 1;
        t = te + 1;
    }
}
