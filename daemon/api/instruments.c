/* The instrument endpoints: the list and one instrument (state, telemetry with units, last
 * error, model information, actions with their parameter schemas), manual actions, and the
 * operator's hold (pause/resume), the wire recording switch. An action's request waits, suspended,
 * for the instrument's answer; its errors keep the device's own code. */
#include "daemon/api/api_int.h"
#include "daemon/store/audit.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/text.h"
#include "core/utf8.h"
#include "core/clock.h"
#include "daemon/store/utilisation.h"

#include <string.h>

/* ---- Idempotency-Key on actions ----
 * A client that retries an action after a lost answer must not move a plate or dispense twice.
 * The daemon keeps the newest ACT_IDEM_MAX keys (per token name) with their answers, in memory:
 * the same key and body while the action runs is 409, after it ended the answer again (with
 * Idempotent-Replayed), with another body 422. Actions are not durable, so neither are these. */

#define ACT_IDEM_MAX 256

struct lab_act_idem {
    char who[LAB_WHO_MAX + 1];
    char key[LAB_IDEM_KEY_MAX + 1];
    char hash[65];
    unsigned gen; /* a slot reused for a new key gets a new generation */
    bool used, done;
    unsigned status;
    char *ctype, *text; /* the answer, once done */
};

void lab_act_idem_free(lab_api_t *api)
{
    for (int i = 0; api->act_idem && i < ACT_IDEM_MAX; i++) {
        free(api->act_idem[i].ctype);
        free(api->act_idem[i].text);
    }
    free(api->act_idem);
    api->act_idem = NULL;
}

/* Sets rq's answer, and keeps a copy for its key's replays. */
static struct MHD_Response *answer(lab_req_t *rq, unsigned status, const char *ctype, char *text)
{
    lab_api_t *api = rq->api;
    if (rq->act_idem >= 0 && api->act_idem) {
        struct lab_act_idem *e = &api->act_idem[rq->act_idem];
        if (e->used && e->gen == rq->act_idem_gen) {
            e->done = true;
            e->status = status;
            free(e->ctype);
            free(e->text);
            e->ctype = lab_strdup(ctype);
            e->text = lab_strdup(text);
        }
        rq->act_idem = -1;
    }
    return lab_respond(rq, status, ctype, text, strlen(text));
}

static void answer_json(lab_req_t *rq, unsigned status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(doc);
    if (!text) {
        lab_respond_internal(rq, "the instrument's answer could not be written as JSON");
        return;
    }
    answer(rq, status, "application/json", text);
}

/* True when the request was answered from its key (replay, in progress, or refused). */
static bool idem_check(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    rq->act_idem = -1;
    const char *key = lab_req_header(rq, "Idempotency-Key");
    if (!key)
        return false;
    size_t kl = strlen(key);
    if (kl == 0 || kl > LAB_IDEM_KEY_MAX) {
        lab_problem(rq, LAB_P_BAD_REQUEST,
                    lab_errors_one("", "Idempotency-Key must have 1 to 255 characters"),
                    "Idempotency-Key has %zu characters", kl);
        return true;
    }
    char hash[65];
    lab_req_hash(rq, hash);
    if (!api->act_idem)
        api->act_idem = lab_calloc(ACT_IDEM_MAX, sizeof *api->act_idem);
    for (int i = 0; i < ACT_IDEM_MAX; i++) {
        struct lab_act_idem *e = &api->act_idem[i];
        if (!e->used || strcmp(e->key, key) != 0 || strcmp(e->who, rq->who) != 0)
            continue;
        if (strcmp(e->hash, hash) != 0) {
            lab_problem(rq, LAB_P_IDEM_MISMATCH, NULL,
                        "Idempotency-Key \"%s\" was used for a different action", key);
        } else if (!e->done) {
            lab_problem(rq, LAB_P_IN_PROGRESS, NULL,
                        "the action with Idempotency-Key \"%s\" is still running", key);
        } else {
            char *text = lab_strdup(e->text);
            struct MHD_Response *r = lab_respond(rq, e->status, e->ctype, text, strlen(text));
            MHD_add_response_header(r, "Idempotent-Replayed", "true");
        }
        return true;
    }
    /* A new key takes the oldest slot (its client had its answer long ago, or never will). */
    int i = api->act_idem_next;
    api->act_idem_next = (i + 1) % ACT_IDEM_MAX;
    struct lab_act_idem *e = &api->act_idem[i];
    free(e->ctype);
    free(e->text);
    unsigned gen = e->gen + 1;
    memset(e, 0, sizeof *e);
    e->gen = gen;
    e->used = true;
    snprintf(e->who, sizeof e->who, "%s", rq->who);
    snprintf(e->key, sizeof e->key, "%s", key);
    memcpy(e->hash, hash, sizeof e->hash);
    rq->act_idem = i;
    rq->act_idem_gen = gen;
    return false;
}

/* The instrument's document with its wire recording's state (not part of the outbox rows: it
 * says nothing about the instrument itself). */
static json_t *inst_doc(lab_api_t *api, lab_driver_t *d, bool detail)
{
    json_t *doc = lab_instr_doc(api->instr, d, detail);
    json_object_set_new(doc, "record", lab_driver_record_json(d));
    return doc;
}

void lab_api_instruments_list(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    json_t *arr = json_array();
    for (int i = 0; i < lab_instr_count(api->instr); i++)
        json_array_append_new(arr, inst_doc(api, lab_instr_at(api->instr, i), false));
    lab_respond_json(rq, 200, json_pack("{s:o}", "instruments", arr));
}

static lab_driver_t *instrument_of(lab_req_t *rq)
{
    lab_driver_t *d = lab_instr_find(rq->api->instr, rq->param, rq->param_len);
    if (!d)
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no instrument '%.*s' in this cell",
                    (int)lab_utf8_cut(rq->param, rq->param_len, 64), rq->param);
    return d;
}

void lab_api_instruments_get(lab_req_t *rq)
{
    lab_driver_t *d = instrument_of(rq);
    if (d)
        lab_respond_json(rq, 200, inst_doc(rq->api, d, true));
}

/* A pause may say why ({"reason": text}); a resume takes no body (its route keeps none). Who
 * did it is the token's name, never a client's word. */
static void hold(lab_req_t *rq, bool paused)
{
    lab_driver_t *d = instrument_of(rq);
    if (!d)
        return;
    json_t *body = paused ? lab_req_reason_body(rq, "pause") : NULL;
    if (paused && !body)
        return;
    if (lab_req_signer(rq)) {
        json_decref(body);
        return;
    }
    const char *reason = json_string_value(json_object_get(body, "reason"));
    lab_req_decision_begin(rq, paused ? "instrument.pause" : "instrument.resume", lab_driver_id(d),
                           reason && *reason ? reason : NULL,
                           paused ? "paused instrument" : "resumed instrument", NULL);
    (void)lab_instr_hold(rq->api->instr, d, paused, rq->who, reason && *reason ? reason : NULL);
    lab_req_decision_end(rq, true);
    json_decref(body);
    lab_sched_replan(rq->api->sched);
    log_info("api", "instrument=%s %s by=%s", lab_driver_id(d), paused ? "paused" : "resumed",
             rq->who);
    lab_respond_json(rq, 200, inst_doc(rq->api, d, false));
}

/* {"on": true|false}: the recording goes to the file the config names (or the default one); a
 * path is never taken from the request, so that the API cannot be used to write anywhere the
 * daemon can. */
void lab_api_instruments_record(lab_req_t *rq)
{
    lab_driver_t *d = instrument_of(rq);
    if (!d)
        return;
    json_t *body = lab_req_json(rq, NULL, "recording switch");
    if (!body)
        return;
    json_t *on = json_object_get(body, "on");
    bool is_object = json_is_object(body), want = json_is_true(on);
    bool ok = is_object && json_is_boolean(on) && json_object_size(body) == 1;
    json_decref(body);
    if (!ok) {
        lab_problem(rq, LAB_P_INVALID,
                    lab_errors_one(is_object ? "/on" : "", "expected {\"on\": true|false}"),
                    "not a recording switch");
        return;
    }
    char err[400] = "";
    int rc = lab_driver_record(d, want, err, sizeof err);
    log_info("api", "instrument=%s record=%s by=%s rc=%s", lab_driver_id(d), want ? "on" : "off",
             rq->who, lab_errname(rc));
    if (rc == LAB_ESTATE)
        lab_problem(rq, LAB_P_CONFLICT, NULL, "%s", err);
    else if (rc != LAB_OK)
        lab_problem(rq, LAB_P_UNAVAILABLE, lab_errors_one("", err), "%s", err);
    else
        lab_respond_json(rq, 200, inst_doc(rq->api, d, false));
}

void lab_api_instruments_pause(lab_req_t *rq)
{
    hold(rq, true);
}

void lab_api_instruments_resume(lab_req_t *rq)
{
    hold(rq, false);
}

/* The HTTP answer for a driver error. */
static void drv_problem(lab_req_t *rq, lab_driver_t *d, const char *action,
                        const lab_drv_error_t *e, json_t *errors)
{
    lab_problem_t p;
    switch (e->code) {
    case LAB_ENOACTION:
    case LAB_EINVAL:
        p = LAB_P_INVALID;
        break;
    case LAB_ESTATE:
        p = LAB_P_CONFLICT;
        break;
    case LAB_EOFFLINE:
    case LAB_EBUSY:
    case LAB_ECANCELLED:
        p = LAB_P_UNAVAILABLE;
        break;
    case LAB_ETIMEDOUT:
        p = LAB_P_INSTRUMENT_TIMEOUT;
        break;
    case LAB_EINTERNAL:
        p = LAB_P_INTERNAL;
        break;
    default:
        p = LAB_P_INSTRUMENT;
    }
    if (!errors) {
        const char *path = e->code == LAB_ENOACTION ? "/action" : "";
        errors = lab_errors_one(path, e->text);
    }
    /* The device's own words travel with the problem, for whoever troubleshoots. */
    json_t *err = lab_drv_error_json(e);
    if (!err) /* the device's words are not UTF-8: kept, made valid */
        err = json_pack("{s:s, s:o, s:o}", "code", lab_err_json_name(e->code), "message",
                        lab_json_text(e->text, LAB_TEXT_MAX), "device_code",
                        lab_json_text(e->device_code, LAB_TEXT_MAX));
    json_object_set_new(err, "instrument", json_string(lab_driver_id(d)));
    json_object_set_new(err, "action", json_string(action));
    char *text = lab_problem_text(p, rq->url, errors, e->text);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (err)
        json_object_set_new(doc, "instrument_error", err);
    if (lab_problem_status(p) >= 500)
        log_warn("api", "%s %s: %d %s", rq->method, rq->url, lab_problem_status(p), e->text);
    char *out = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!out) {
        lab_respond_internal(rq, "the instrument's problem could not be built");
        return;
    }
    struct MHD_Response *r =
        answer(rq, (unsigned)lab_problem_status(p), "application/problem+json", out);
    if (e->code == LAB_EBUSY)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
}

/* Every manual action is an audit entry with its outcome, whether it succeeded or not. */
static void action_audit(lab_req_t *rq, lab_driver_t *d, const char *action,
                         const lab_drv_error_t *err, json_t *result)
{
    json_t *doc = json_pack("{s:s, s:s, s:b}", "instrument", lab_driver_id(d), "action", action,
                            "ok", err->code == LAB_OK);
    if (err->code != LAB_OK)
        json_object_set_new(doc, "error", lab_json_text(err->text, LAB_TEXT_MAX));
    else if (result)
        json_object_set(doc, "result", result);
    if (rq->act_params)
        json_object_set_new(doc, "params", rq->act_params);
    rq->act_params = NULL;
    /* A person's action is signed like a decision; a confirmation means the move was made. */
    char meaning[LAB_TEXT_BYTES(LAB_ACTION_CHARS) + 40];
    snprintf(meaning, sizeof meaning, "%s%s",
             strcmp(action, "confirm") == 0 ? "confirmed move" : "ran action ",
             strcmp(action, "confirm") == 0 ? "" : action);
    json_object_set_new(doc, "signature", lab_audit_signature(rq->who, meaning));
    lab_req_audit_record(rq, "instrument.action", lab_driver_id(d), NULL, doc);
}

static void action_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    lab_req_t *rq = arg;
    action_audit(rq, d, rq->action, err, result);
    if (err->code != LAB_OK)
        drv_problem(rq, d, rq->action, err, NULL);
    else
        answer_json(rq, 200,
                    json_pack("{s:s, s:s, s:O}", "instrument", lab_driver_id(d), "action",
                              rq->action, "result", result));
    lab_req_resume(rq);
}

/* An action whose params say who did it gets the token's name there, not a client's word
 * (LAB_DRV_ACT_BY); "anonymous" is a daemon without tokens, where the name given stays. */
static void action_sign(lab_req_t *rq, lab_driver_t *d, const char *action, json_t *body)
{
    const lab_drv_action_t *a = lab_driver_ops(d)->actions;
    while (a->name && strcmp(a->name, action) != 0)
        a++;
    if (!a->name || !(a->flags & LAB_DRV_ACT_BY))
        return;
    json_t *params = json_object_get(body, "params");
    if (!json_is_object(params)) {
        params = json_object();
        json_object_set_new(body, "params", params);
    }
    if (strcmp(rq->who, "anonymous") != 0 || !json_object_get(params, "by"))
        json_object_set_new(params, "by", json_string(rq->who));
}

void lab_api_instruments_action(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    lab_driver_t *d = instrument_of(rq);
    if (!d)
        return;
    if (!api->accepting) {
        lab_problem(rq, LAB_P_UNAVAILABLE, NULL, "the daemon is shutting down");
        return;
    }
    rq->act_idem = -1;
    json_t *body = lab_req_json(rq, api->action_schema, "action");
    if (!body)
        return;
    if (idem_check(rq)) {
        json_decref(body);
        return;
    }
    const char *action = json_string_value(json_object_get(body, "action"));
    /* The schema held its length; a control character cannot be on a label. */
    json_t *plate = json_object_get(body, "plate");
    const char *bad =
        plate ? lab_labware_barcode_check(json_string_value(plate), json_string_length(plate))
              : NULL;
    if (bad) {
        char msg[80];
        snprintf(msg, sizeof msg, "the plate's barcode %s", bad);
        lab_problem(rq, LAB_P_INVALID, lab_errors_one("/plate", msg), "%s", msg);
        json_decref(body);
        return;
    }
    action_sign(rq, d, action, body);
    json_t *params = json_object_get(body, "params");
    json_t *timeout = json_object_get(body, "timeout_s");
    lab_drv_error_t err;
    json_t *problems = NULL;
    log_info("api", "instrument=%s action=%s by=%s", lab_driver_id(d), action, rq->who);
    /* A signed action's "by" is the token's name, or on a daemon without tokens the name given. */
    const char *by = json_string_value(json_object_get(params, "by"));
    lab_instr_note_action(api->instr, d, by ? by : rq->who, action);
    /* Known actions are ASCII; an unknown one is refused below, and is never cut mid-character. */
    snprintf(rq->action, sizeof rq->action, "%.*s",
             (int)lab_utf8_cut(action, strlen(action), sizeof rq->action - 1), action);
    rq->act_params = json_is_object(params) ? json_deep_copy(params) : NULL;
    lab_instr_who_t who = {json_string_value(plate), NULL, by ? by : rq->who};
    int rc = lab_instr_call(api->instr, d, action, params, timeout ? json_number_value(timeout) : 0,
                            &who, action_done, rq, &err, &problems);
    if (rc != LAB_OK) {
        action_audit(rq, d, rq->action, &err, NULL);
        drv_problem(rq, d, action, &err, problems);
        json_decref(body);
        return;
    }
    json_decref(body);
    lab_req_suspend(rq);
}

/* ---- utilisation ---- */

#define DAY_MS 86400000LL

/* A day (YYYY-MM-DD: its midnight, UTC) or an RFC 3339 time. */
static bool parse_when(const char *s, int64_t *ms)
{
    char t[40];
    if (strlen(s) == 10 && s[4] == '-' && s[7] == '-') {
        snprintf(t, sizeof t, "%sT00:00:00Z", s);
        s = t;
    }
    return lab_time_parse(s, ms) == 0;
}

/* GET /v1/instruments/{id}/utilisation?from=&to=&by=day|campaign: lab seconds in each state per
 * UTC day of [from, to) (default: the last 7 days up to now), from the store's intervals; with
 * by=campaign also the seconds each campaign's steps ran on it. */
void lab_api_instruments_utilisation(lab_req_t *rq)
{
    lab_driver_t *d = instrument_of(rq);
    if (!d)
        return;
    static const char *const known[] = {"from", "to", "by", NULL};
    json_t *errs = json_array();
    lab_query_unknown(rq, known, errs);
    const char *from_s = lab_req_query(rq, "from"), *to_s = lab_req_query(rq, "to");
    const char *by = lab_req_query(rq, "by");
    int64_t now = lab_clock_now_ms(rq->api->clock);
    int64_t to = (now / DAY_MS + 1) * DAY_MS, from = to - 7 * DAY_MS;
    if (from_s && !parse_when(from_s, &from))
        lab_query_error_add(errs, "from", "not a day (YYYY-MM-DD) or an RFC 3339 time");
    if (to_s && !parse_when(to_s, &to))
        lab_query_error_add(errs, "to", "not a day (YYYY-MM-DD) or an RFC 3339 time");
    if (from_s && !to_s && from < now)
        to = (now / DAY_MS + 1) * DAY_MS;
    if (by && strcmp(by, "day") != 0 && strcmp(by, "campaign") != 0)
        lab_query_error_add(errs, "by", "day or campaign");
    if (json_array_size(errs) == 0 && to <= from)
        lab_query_error_add(errs, "to", "must be after from");
    if (json_array_size(errs) == 0 && to - from > LAB_UTIL_SPAN_MAX_MS)
        lab_query_error_add(errs, "to", "at most 366 days after from");
    if (json_array_size(errs) > 0) {
        size_t n = json_array_size(errs);
        lab_problem(rq, LAB_P_BAD_REQUEST, errs, "%zu bad query parameter%s", n, n == 1 ? "" : "s");
        return;
    }
    json_decref(errs);
    json_t *days = NULL, *camps = NULL;
    int rc = lab_util_days(rq->api->store, lab_driver_id(d), from, to, now, &days);
    if (!rc && by && strcmp(by, "campaign") == 0)
        rc = lab_util_campaigns(rq->api->store, lab_driver_id(d), &camps);
    if (rc) {
        json_decref(days);
        lab_problem(rq, LAB_P_INTERNAL, NULL, "the store could not be read: %s", lab_strerror(rc));
        return;
    }
    json_t *totals = json_object();
    size_t i;
    json_t *day;
    json_array_foreach(days, i, day)
    {
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(day, "seconds"), k, v)
        {
            double was = json_real_value(json_object_get(totals, k));
            json_object_set_new(totals, k, json_real(was + json_real_value(v)));
        }
    }
    double secs[LAB_INST_NSTATES];
    lab_instr_state_seconds(rq->api->instr, d, secs);
    json_t *since = json_object();
    for (int s = LAB_INST_OFFLINE; s <= LAB_INST_FAULT; s++)
        json_object_set_new(since, lab_inst_state_name((lab_inst_state_t)s), json_real(secs[s]));
    char f[32], t[32], n[32];
    lab_time_iso(from, f);
    lab_time_iso(to, t);
    lab_time_iso(now, n);
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o}", "instrument", lab_driver_id(d), "from", f,
                  "to", t, "now", n, "days", days, "totals", totals, "since_start", since);
    if (camps)
        json_object_set_new(doc, "campaigns", camps);
    lab_respond_json(rq, 200, doc);
}
