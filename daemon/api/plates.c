/* GET /v1/plates (the store's list, paged like GET /v1/runs), GET /v1/plates/{barcode} (the
 * registry's document with the plate's moves) and POST /v1/plates/{barcode}/location (a person
 * says where a plate is). A barcode in a path arrives percent-decoded and is checked (UTF-8, no
 * control characters, 1 to 64 characters) before anything is looked up. */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "core/mem.h"
#include "core/text.h"
#include "core/utf8.h"
#include "daemon/labware/labware.h"
#include "daemon/store/plates.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 50
#define LIST_MAX 500
#define REASON_CHARS 500

/* The {barcode} of the path into out (NUL-terminated); false with a 400 answered otherwise. */
static bool barcode_of(lab_req_t *rq, char out[LAB_TEXT_BYTES(LAB_RUN_PLATE_CHARS)])
{
    const char *why = rq->param_len > 4 * LAB_RUN_PLATE_CHARS
                          ? "is longer than 64 characters"
                          : lab_labware_barcode_check(rq->param, rq->param_len);
    if (why) {
        lab_problem(rq, LAB_P_BAD_REQUEST,
                    lab_errors_one("", "a barcode is 1 to 64 characters "
                                       "of UTF-8 text"),
                    "the barcode in the path %s", why);
        return false;
    }
    memcpy(out, rq->param, rq->param_len);
    out[rq->param_len] = '\0';
    return true;
}

static void query_error(json_t *errs, const char *name, const char *msg, const char *value)
{
    char v[65], text[400];
    size_t n = strlen(value);
    if (!lab_text_valid(value, n))
        snprintf(v, sizeof v, "(not UTF-8)");
    else
        snprintf(v, sizeof v, "%.*s", (int)lab_utf8_cut(value, n, 64), value);
    snprintf(text, sizeof text, "query parameter %s: \"%s\" %s", name, v, msg);
    json_array_append_new(
        errs, json_pack("{s:s, s:o}", "path", "", "message", lab_json_text(text, LAB_TEXT_MAX)));
}

void lab_api_plates_list(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    json_t *errs = json_array();
    static const char *const known[] = {"location", "instrument", "limit", "after", NULL};
    lab_query_unknown(rq, known, errs);
    lab_plates_filter_t f = {.state = lab_req_query(rq, "location"),
                             .instrument = lab_req_query(rq, "instrument")};
    const char *limit_s = lab_req_query(rq, "limit"), *after_s = lab_req_query(rq, "after");
    if (f.state && strcmp(f.state, "at") != 0 && strcmp(f.state, "outside") != 0 &&
        strcmp(f.state, "in_transit") != 0 && strcmp(f.state, "unknown") != 0)
        query_error(errs, "location", "is not a location (at, outside, in_transit or unknown)",
                    f.state);
    if (f.instrument && (!*f.instrument || strlen(f.instrument) > LAB_INSTRUMENT_ID_CHARS ||
                         !lab_text_valid(f.instrument, strlen(f.instrument))))
        query_error(errs, "instrument", "is not an instrument id (1 to 64 characters)",
                    f.instrument);
    long long limit = LIST_DEFAULT, after = 0;
    if (limit_s && !lab_query_num(limit_s, 1, LIST_MAX, &limit))
        query_error(errs, "limit", "is not an integer from 1 to 500", limit_s);
    if (after_s && !lab_query_num(after_s, 0, INT64_MAX, &after))
        query_error(errs, "after", "is not a cursor (the \"next\" of a page)", after_s);
    if (json_array_size(errs) > 0) {
        size_t n = json_array_size(errs);
        lab_problem(rq, LAB_P_BAD_REQUEST, errs, "%zu bad query parameter%s", n, n == 1 ? "" : "s");
        return;
    }
    json_decref(errs);
    char **docs = NULL;
    int64_t next = 0;
    int n = lab_plates_find(api->store, &f, after, (int)limit, &docs, &next);
    if (n < 0) {
        lab_problem(rq, LAB_P_INTERNAL, NULL, "listing plates failed: %s", lab_strerror(n));
        return;
    }
    /* Sites holding a plate nobody named, with the first page: they are where plates are too.
     * Only a filter they can match (location "at", or none) lists them. */
    json_t *held = NULL;
    int rc = after || (f.state && strcmp(f.state, "at") != 0)
                 ? 0
                 : lab_site_holds_get(api->store, f.instrument, &held);
    char *held_text = held ? json_dumps(held, JSON_COMPACT) : lab_strdup("[]");
    json_decref(held);
    if (rc) {
        for (int i = 0; i < n; i++)
            free(docs[i]);
        free(docs);
        free(held_text);
        lab_problem(rq, LAB_P_INTERNAL, NULL, "listing held sites failed: %s", lab_strerror(rc));
        return;
    }
    /* the stored documents are JSON already: joined as text */
    size_t len = 96 + strlen(held_text);
    for (int i = 0; i < n; i++)
        len += strlen(docs[i]) + 1;
    char *text = lab_malloc(len), *p = text;
    p += sprintf(p, "{\"plates\":[");
    for (int i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        size_t dl = strlen(docs[i]);
        memcpy(p, docs[i], dl);
        p += dl;
        free(docs[i]);
    }
    free(docs);
    if (next)
        p += sprintf(p, "],\"held_sites\":%s,\"next\":\"%lld\"}", held_text, (long long)next);
    else
        p += sprintf(p, "],\"held_sites\":%s,\"next\":null}", held_text);
    free(held_text);
    lab_respond(rq, 200, "application/json", text, (size_t)(p - text));
}

void lab_api_plates_get(lab_req_t *rq)
{
    char bc[LAB_TEXT_BYTES(LAB_RUN_PLATE_CHARS)];
    if (!barcode_of(rq, bc))
        return;
    /* what is committed, the document and its moves together */
    json_t *doc = NULL;
    int rc = lab_plate_get(rq->api->store, bc, &doc);
    if (rc == LAB_ENOTFOUND)
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no plate %s", bc);
    else if (rc)
        lab_problem(rq, LAB_P_INTERNAL, NULL, "reading plate %s failed: %s", bc, lab_strerror(rc));
    else
        lab_respond_json(rq, 200, doc);
}

static void located(void *arg, int status, const json_t *doc)
{
    lab_req_t *rq = arg;
    if (status == 0)
        lab_respond_json(rq, 200, json_deep_copy(doc));
    else
        lab_problem(rq, status == LAB_ESHUTDOWN ? LAB_P_UNAVAILABLE : LAB_P_INTERNAL, NULL,
                    "the location was not stored: %s", lab_strerror(status));
    lab_req_resume(rq);
}

/* The body of POST /v1/plates/{barcode}/location; NULL with *why set when it is not one. */
static const char *location_check(json_t *body, const char **instrument, int *cassette, int *slot,
                                  int *format, const char **labware, const char **reason)
{
    static const char *const known[] = {"instrument", "site",   "outside",
                                        "reason",     "format", "labware"};
    const char *key;
    json_t *v;
    if (!json_is_object(body))
        return "the body is not a JSON object";
    json_object_foreach(body, key, v)
    {
        size_t i = 0;
        while (i < sizeof known / sizeof known[0] && strcmp(key, known[i]) != 0)
            i++;
        if (i == sizeof known / sizeof known[0])
            return "unknown member (instrument, site, outside, reason, format and labware are)";
    }
    json_t *inst = json_object_get(body, "instrument"), *site = json_object_get(body, "site");
    json_t *out = json_object_get(body, "outside"), *rs = json_object_get(body, "reason");
    json_t *fmt = json_object_get(body, "format"), *lw = json_object_get(body, "labware");
    if (!json_is_string(rs) || json_string_length(rs) == 0 ||
        lab_text_chars(json_string_value(rs), json_string_length(rs)) > REASON_CHARS)
        return "reason: required, 1 to 500 characters";
    *reason = json_string_value(rs);
    if (out && !json_is_true(out))
        return "outside: only true";
    if (!!inst == !!out)
        return "either instrument (with site when it has sites) or outside: true";
    if (out && site)
        return "site: only with instrument";
    if (inst && (!json_is_string(inst) || json_string_length(inst) == 0 ||
                 json_string_length(inst) > LAB_INSTRUMENT_ID_CHARS))
        return "instrument: an instrument id";
    *instrument = json_string_value(inst);
    *cassette = *slot = 0;
    if (site) {
        json_t *c = json_object_get(site, "cassette"), *s = json_object_get(site, "slot");
        if (!json_is_object(site) || json_object_size(site) != 2 || !json_is_integer(c) ||
            !json_is_integer(s) || json_integer_value(c) < 1 || json_integer_value(s) < 1 ||
            json_integer_value(c) > 1000 || json_integer_value(s) > 1000)
            return "site: {\"cassette\": n, \"slot\": n}, each from 1";
        *cassette = (int)json_integer_value(c);
        *slot = (int)json_integer_value(s);
    }
    *format = 0;
    if (fmt &&
        (!json_is_integer(fmt) || json_integer_value(fmt) < 1 || json_integer_value(fmt) > 9600))
        return "format: the number of wells, 1 to 9600";
    if (fmt)
        *format = (int)json_integer_value(fmt);
    if (lw && (!json_is_string(lw) || json_string_length(lw) == 0 ||
               lab_text_chars(json_string_value(lw), json_string_length(lw)) > 64))
        return "labware: 1 to 64 characters";
    *labware = json_string_value(lw);
    return NULL;
}

void lab_api_plates_locate(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    char bc[LAB_TEXT_BYTES(LAB_RUN_PLATE_CHARS)];
    if (!barcode_of(rq, bc))
        return;
    if (!api->accepting || !api->labware) {
        lab_problem(rq, LAB_P_UNAVAILABLE, NULL, "the daemon is shutting down");
        return;
    }
    json_t *body = lab_req_json(rq, NULL, "plate location");
    if (!body)
        return;
    const char *inst = NULL, *labware = NULL, *reason = NULL;
    int cassette = 0, slot = 0, format = 0;
    const char *bad = location_check(body, &inst, &cassette, &slot, &format, &labware, &reason);
    if (bad) {
        json_decref(body);
        lab_problem(rq, LAB_P_INVALID, lab_errors_one("", bad), "not a plate location");
        return;
    }
    char msg[300];
    int rc = lab_labware_locate(api->labware, bc, inst, cassette, slot, format, labware, reason,
                                rq->who, located, rq, msg, sizeof msg);
    json_decref(body);
    if (rc == 0) {
        lab_req_suspend(rq);
        return;
    }
    if (rc == LAB_ENOTFOUND && !msg[0])
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no plate %s", bc);
    else if (rc == LAB_ENOTFOUND)
        lab_problem(rq, LAB_P_INVALID, lab_errors_one("", msg), "not a plate location");
    else
        lab_problem(rq, LAB_P_CONFLICT, lab_errors_one("", msg), "%s", msg);
}
