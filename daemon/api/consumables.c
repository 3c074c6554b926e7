/* A liquid handler's tips and troughs: GET /v1/instruments/{id}/consumables and the refill an
 * operator reports, POST /v1/instruments/{id}/consumables/refill (answered once stored). */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "core/log.h"
#include "core/utf8.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* The instrument of the path, and its consumables; NULL with the answer set. */
static lab_driver_t *handler_of(lab_req_t *rq)
{
    lab_driver_t *d = lab_instr_find(rq->api->instr, rq->param, rq->param_len);
    if (!d) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no instrument '%.*s' in this cell",
                    (int)lab_utf8_cut(rq->param, rq->param_len, 64), rq->param);
        return NULL;
    }
    if (!lab_consumables_tracks(rq->api->consumables, lab_driver_id(d))) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL,
                    "instrument %s declares no tips or troughs (tip_racks, troughs)",
                    lab_driver_id(d));
        return NULL;
    }
    return d;
}

void lab_api_consumables_get(lab_req_t *rq)
{
    lab_driver_t *d = handler_of(rq);
    if (d)
        lab_respond_json(rq, 200, lab_consumables_doc(rq->api->consumables, lab_driver_id(d)));
}

static void refill_done(void *arg, int status, json_t *doc)
{
    lab_req_t *rq = arg;
    if (status != 0)
        lab_problem(rq, LAB_P_INTERNAL, NULL, "the refill was not stored: %s",
                    lab_strerror(status));
    else
        lab_respond_json(rq, 200, json_incref(doc));
    lab_req_resume(rq);
}

/* A 400 naming the member and what is wrong with it. */
static void bad(lab_req_t *rq, const char *path, const char *msg)
{
    lab_problem(rq, LAB_P_BAD_REQUEST, lab_errors_one(path, msg), "not a refill: %s %s", path, msg);
}

/* What a refill body says, checked: {"trough": NAME, "volume_ul"?: µL} or {"tips": "all" |
 * {"racks": n}}, and "reason"? either way. false with the answer set. */
static bool refill_parse(lab_req_t *rq, json_t *body, const char **trough, double *ul, int *racks,
                         const char **reason)
{
    if (!json_is_object(body)) {
        bad(rq, "", "expected an object: {\"trough\", \"volume_ul\"?} or {\"tips\"}");
        return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "trough") && strcmp(key, "volume_ul") && strcmp(key, "tips") &&
            strcmp(key, "reason")) {
            char path[80];
            snprintf(path, sizeof path, "/%.64s", lab_utf8_valid(key, strlen(key)) ? key : "?");
            bad(rq, path, "unknown member: a refill has trough, volume_ul, tips and reason");
            return false;
        }
    }
    json_t *jt = json_object_get(body, "trough"), *jv = json_object_get(body, "volume_ul");
    json_t *jtips = json_object_get(body, "tips"), *jr = json_object_get(body, "reason");
    if (!jt == !jtips) {
        bad(rq, "", "give either trough (with volume_ul) or tips");
        return false;
    }
    if (jr) {
        const char *r = json_string_value(jr);
        if (!r || lab_text_chars(r, strlen(r)) > LAB_CANCEL_REASON_CHARS) {
            bad(rq, "/reason", "expected text of at most 500 characters");
            return false;
        }
        *reason = *r ? r : NULL;
    }
    if (jt) {
        const char *t = json_string_value(jt);
        size_t n = t ? strlen(t) : 0;
        if (!n || lab_text_chars(t, n) > LAB_REAGENT_CHARS) {
            bad(rq, "/trough", "expected a trough's name (1 to 31 characters)");
            return false;
        }
        *trough = t;
        *ul = -1;
        if (jv) {
            double x = json_number_value(jv);
            if (!json_is_number(jv) || !isfinite(x)) {
                bad(rq, "/volume_ul", "expected a number of µL");
                return false;
            }
            if (x < 0 || x > LAB_SUPPLY_TROUGH_UL_MAX) {
                char m[120];
                snprintf(m, sizeof m, "%g µL is out of range [0, %.0f]", x,
                         LAB_SUPPLY_TROUGH_UL_MAX);
                bad(rq, "/volume_ul", m);
                return false;
            }
            *ul = x;
        }
        return true;
    }
    if (jv) {
        bad(rq, "/volume_ul", "volume_ul goes with trough, not with tips");
        return false;
    }
    if (json_is_string(jtips) && strcmp(json_string_value(jtips), "all") == 0) {
        *racks = 0;
        return true;
    }
    json_t *jn = json_object_get(jtips, "racks");
    if (!json_is_object(jtips) || json_object_size(jtips) != 1 || !json_is_integer(jn)) {
        bad(rq, "/tips", "expected \"all\" or {\"racks\": n}");
        return false;
    }
    json_int_t n = json_integer_value(jn);
    if (n < 1 || n > LAB_SUPPLY_RACKS_MAX) {
        bad(rq, "/tips/racks", "expected a whole number of racks from 1 to 100");
        return false;
    }
    *racks = (int)n;
    return true;
}

void lab_api_consumables_refill(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    lab_driver_t *d = handler_of(rq);
    if (!d)
        return;
    if (!api->accepting) {
        lab_problem(rq, LAB_P_UNAVAILABLE, NULL, "the daemon is shutting down");
        return;
    }
    json_t *body = lab_req_json(rq, NULL, "refill");
    if (!body)
        return;
    const char *trough = NULL, *reason = NULL, *member = "";
    double ul = -1;
    int racks = 0;
    if (!refill_parse(rq, body, &trough, &ul, &racks, &reason)) {
        json_decref(body);
        return;
    }
    char err[512];
    int rc = lab_consumables_refill(api->consumables, lab_driver_id(d), trough, ul, racks, rq->who,
                                    reason, refill_done, rq, err, sizeof err, &member);
    json_decref(body);
    if (rc != 0) {
        bad(rq, member, err);
        return;
    }
    lab_req_suspend(rq);
}
