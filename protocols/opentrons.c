/* The robot-server's requests and answers (protocols/opentrons.h). Answers are read with
 * jansson and every value taken is checked for its type and length before it is copied: a
 * string that is too long or holds a control byte is refused, not cut, so an id always names
 * what the server named. */
#include "protocols/opentrons.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int why_set(char *why, size_t cap, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int why_set(char *why, size_t cap, int code, const char *fmt, ...)
{
    if (why && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return code;
}

bool ot_id_ok(const char *id)
{
    size_t n = 0;
    if (!id)
        return false;
    for (; id[n]; n++) {
        char c = id[n];
        if (n == OT_ID_MAX || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return n > 0;
}

int ot_command_target(char *buf, size_t cap, const char *run_id, long timeout_ms)
{
    if (!ot_id_ok(run_id) || timeout_ms < 1)
        return LAB_EINVAL;
    proto_out_t o;
    proto_out_init(&o, buf, cap);
    proto_out_fmt(&o, "/runs/%s/commands?waitUntilComplete=true&timeout=%ld", run_id, timeout_ms);
    return proto_out_result(&o);
}

char *ot_command_body(const char *type, json_t *params)
{
    if (!type || !*type || strlen(type) > 63)
        return NULL;
    for (const char *p = type; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            return NULL;
    json_t *doc = json_pack("{s:{s:s,s:O,s:s}}", "data", "commandType", type, "params",
                            params ? params : json_object(), "intent", "setup");
    if (!params) { /* json_pack took a reference of the new {} with O: drop ours */
        json_t *p = json_object_get(json_object_get(doc, "data"), "params");
        json_decref(p);
    }
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

const char *ot_run_body(void)
{
    return "{\"data\":{}}";
}

/* Copies a string member that must fit and hold no control byte; an absent member is "" when
 * optional. */
static int take_str(json_t *obj, const char *key, char *out, size_t cap, bool required, char *why,
                    size_t wcap)
{
    json_t *v = json_object_get(obj, key);
    out[0] = '\0';
    if (!v || json_is_null(v)) {
        if (required)
            return why_set(why, wcap, LAB_ESYNTAX, "no \"%s\"", key);
        return LAB_OK;
    }
    if (!json_is_string(v))
        return why_set(why, wcap, LAB_ESYNTAX, "\"%s\" is not a string", key);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n >= cap)
        return why_set(why, wcap, LAB_ESYNTAX, "\"%s\" is %zu bytes (at most %zu)", key, n,
                       cap - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return why_set(why, wcap, LAB_ESYNTAX, "\"%s\" has control byte 0x%02x at %zu", key,
                           (unsigned char)s[i], i);
    memcpy(out, s, n + 1);
    return LAB_OK;
}

/* A text for people (detail): longer ones are cut at a character boundary, control bytes
 * become spaces. */
static void take_text(json_t *obj, const char *key, char *out, size_t cap)
{
    const char *s = json_string_value(json_object_get(obj, key));
    size_t n = 0;
    out[0] = '\0';
    if (!s)
        return;
    for (; s[n] && n + 1 < cap; n++)
        out[n] = ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) ? ' ' : s[n];
    while (s[n] && n > 0 && ((unsigned char)out[n - 1] & 0xc0) == 0x80)
        n--; /* a cut UTF-8 sequence: back to its first byte, then drop that too */
    if (s[n] && n > 0 && ((unsigned char)out[n - 1] & 0x80))
        n--;
    out[n] = '\0';
}

static json_t *load(const char *body, size_t len, char *why, size_t cap)
{
    json_error_t je;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        why_set(why, cap, LAB_ESYNTAX, "not JSON: %s at %d", je.text, je.position);
    else if (!json_is_object(doc)) {
        json_decref(doc);
        doc = NULL;
        why_set(why, cap, LAB_ESYNTAX, "not a JSON object");
    }
    return doc;
}

static const char *const model_names[] = {
    [OT_MODEL_OT2] = "OT-2 Standard",
    [OT_MODEL_FLEX] = "OT-3 Standard",
};

const char *ot_model_name(ot_model_t m)
{
    return m == OT_MODEL_OT2 || m == OT_MODEL_FLEX ? model_names[m] : NULL;
}

int ot_health_parse(const char *body, size_t len, ot_health_t *h, char *why, size_t cap)
{
    memset(h, 0, sizeof *h);
    json_t *doc = load(body, len, why, cap);
    if (!doc)
        return LAB_ESYNTAX;
    int rc = take_str(doc, "name", h->name, sizeof h->name, true, why, cap);
    if (!rc)
        rc = take_str(doc, "api_version", h->api_version, sizeof h->api_version, true, why, cap);
    if (!rc)
        rc = take_str(doc, "robot_model", h->robot_model, sizeof h->robot_model, true, why, cap);
    if (!rc)
        rc = take_str(doc, "fw_version", h->fw_version, sizeof h->fw_version, false, why, cap);
    if (!rc)
        rc =
            take_str(doc, "robot_serial", h->robot_serial, sizeof h->robot_serial, false, why, cap);
    if (!rc)
        rc = take_str(doc, "system_version", h->system_version, sizeof h->system_version, false,
                      why, cap);
    json_decref(doc);
    if (rc)
        return rc;
    for (int m = OT_MODEL_OT2; m <= OT_MODEL_FLEX; m++)
        if (strcmp(h->robot_model, model_names[m]) == 0)
            h->model = (ot_model_t)m;
    if (h->model == OT_MODEL_UNKNOWN)
        return why_set(why, cap, LAB_EUNKNOWN, "robot_model \"%s\" is neither \"%s\" nor \"%s\"",
                       h->robot_model, model_names[OT_MODEL_OT2], model_names[OT_MODEL_FLEX]);
    return LAB_OK;
}

/* {"data": {...}}: the object, borrowed from doc. */
static json_t *data_of(json_t *doc, char *why, size_t cap)
{
    json_t *data = json_object_get(doc, "data");
    if (!json_is_object(data))
        why_set(why, cap, LAB_ESYNTAX, "no \"data\" object");
    return json_is_object(data) ? data : NULL;
}

int ot_run_parse(const char *body, size_t len, ot_run_t *r, char *why, size_t cap)
{
    memset(r, 0, sizeof *r);
    json_t *doc = load(body, len, why, cap);
    if (!doc)
        return LAB_ESYNTAX;
    json_t *data = data_of(doc, why, cap);
    int rc = data ? take_str(data, "id", r->id, sizeof r->id, true, why, cap) : LAB_ESYNTAX;
    if (!rc)
        rc = take_str(data, "status", r->status, sizeof r->status, true, why, cap);
    if (!rc && !ot_id_ok(r->id))
        rc = why_set(why, cap, LAB_ESYNTAX, "run id \"%s\" is not [A-Za-z0-9_-]", r->id);
    if (!rc)
        r->current = json_is_true(json_object_get(data, "current"));
    json_decref(doc);
    return rc;
}

static const char *const status_names[] = {
    [OT_CMD_QUEUED] = "queued",
    [OT_CMD_RUNNING] = "running",
    [OT_CMD_SUCCEEDED] = "succeeded",
    [OT_CMD_FAILED] = "failed",
};

const char *ot_cmd_status_name(ot_cmd_status_t s)
{
    return s <= OT_CMD_FAILED ? status_names[s] : "?";
}

int ot_command_parse(const char *body, size_t len, ot_command_t *c, char *why, size_t cap)
{
    memset(c, 0, sizeof *c);
    char status[32];
    json_t *doc = load(body, len, why, cap);
    if (!doc)
        return LAB_ESYNTAX;
    json_t *data = data_of(doc, why, cap);
    int rc = data ? take_str(data, "id", c->id, sizeof c->id, true, why, cap) : LAB_ESYNTAX;
    if (!rc)
        rc = take_str(data, "commandType", c->command_type, sizeof c->command_type, true, why, cap);
    if (!rc)
        rc = take_str(data, "status", status, sizeof status, true, why, cap);
    if (rc)
        goto out;
    rc = LAB_EUNKNOWN;
    for (int s = OT_CMD_QUEUED; s <= OT_CMD_FAILED; s++)
        if (strcmp(status, status_names[s]) == 0)
            c->status = (ot_cmd_status_t)s, rc = LAB_OK;
    if (rc) {
        why_set(why, cap, rc, "command status \"%s\" is not queued, running, succeeded or failed",
                status);
        goto out;
    }
    json_t *err = json_object_get(data, "error");
    if (c->status == OT_CMD_FAILED) {
        if (!json_is_object(err)) {
            rc = why_set(why, cap, LAB_ESYNTAX, "a failed command without an \"error\" object");
            goto out;
        }
        rc = take_str(err, "errorType", c->error_type, sizeof c->error_type, true, why, cap);
        if (!rc)
            rc = take_str(err, "errorCode", c->error_code, sizeof c->error_code, false, why, cap);
        take_text(err, "detail", c->detail, sizeof c->detail);
        if (rc)
            goto out;
    }
    json_t *result = json_object_get(data, "result");
    if (json_is_object(result)) {
        const char *key = json_object_get(result, "pipetteId") ? "pipetteId" : "labwareId";
        rc = take_str(result, key, c->result_id, sizeof c->result_id, false, why, cap);
        if (!rc && c->result_id[0] && !ot_id_ok(c->result_id))
            rc = why_set(why, cap, LAB_ESYNTAX, "result.%s \"%s\" is not [A-Za-z0-9_-]", key,
                         c->result_id);
    }
out:
    json_decref(doc);
    return rc;
}

int ot_error_parse(const char *body, size_t len, ot_error_t *e, char *why, size_t cap)
{
    memset(e, 0, sizeof *e);
    json_t *doc = load(body, len, why, cap);
    if (!doc)
        return LAB_ESYNTAX;
    json_t *first = json_array_get(json_object_get(doc, "errors"), 0);
    int rc = LAB_OK;
    if (!json_is_object(first))
        rc = why_set(why, cap, LAB_ESYNTAX, "no \"errors\" array of objects");
    if (!rc)
        rc = take_str(first, "id", e->id, sizeof e->id, true, why, cap);
    if (!rc)
        rc = take_str(first, "errorCode", e->error_code, sizeof e->error_code, false, why, cap);
    if (!rc)
        take_text(first, "detail", e->detail, sizeof e->detail);
    json_decref(doc);
    return rc;
}

int ot_command_request_parse(const char *body, size_t len, char *type, size_t type_cap,
                             json_t **params, char *why, size_t cap)
{
    *params = NULL;
    json_t *doc = load(body, len, why, cap);
    if (!doc)
        return LAB_ESYNTAX;
    json_t *data = data_of(doc, why, cap);
    int rc = data ? take_str(data, "commandType", type, type_cap, true, why, cap) : LAB_ESYNTAX;
    json_t *p = data ? json_object_get(data, "params") : NULL;
    if (!rc && p && !json_is_object(p))
        rc = why_set(why, cap, LAB_ESYNTAX, "\"params\" is not an object");
    if (!rc)
        *params = p ? json_incref(p) : json_object();
    json_decref(doc);
    return rc;
}
