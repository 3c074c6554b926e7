/* The audit trail over HTTP: the signing of operator decisions (a decision needs a token that
 * names a person, and its entry records the name, the meaning in words and the time), reading
 * the trail (GET /v1/audit) and the daemon's check of its own chain (GET /v1/audit/verify). */
#include "core/clock.h"
#include "core/err.h"
#include "core/mem.h"
#include "core/text.h"
#include "core/utf8.h"
#include "daemon/api/api_int.h"
#include "daemon/store/audit.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUDIT_LIST_DEFAULT 50
#define AUDIT_LIST_MAX 500

static int64_t lab_now(const lab_api_t *api)
{
    return api->clock ? lab_clock_now_ms(api->clock) : lab_wall_ms();
}

int lab_req_signer(lab_req_t *rq)
{
    if (rq->named)
        return 0;
    lab_problem(rq, LAB_P_UNSIGNED, NULL,
                "this token names the role %s, not a person: a decision is signed with the name "
                "of the person who takes it (tokens file: TOKEN ROLE NAME)",
                lab_role_name((lab_role_t)rq->role));
    return LAB_EFORBIDDEN;
}

void lab_req_decision_begin(lab_req_t *rq, const char *what, const char *subject, const char *why,
                            const char *meaning, json_t *details)
{
    json_t *doc = json_is_object(details) ? details : json_object();
    if (details && doc != details)
        json_decref(details);
    json_object_set_new(doc, "signature", lab_audit_signature(rq->who, meaning));
    json_object_set_new(doc, "role", json_string(lab_role_name((lab_role_t)rq->role)));
    if (lab_audit_begin(rq->api->store, rq->who, what, subject, why, doc, lab_now(rq->api)))
        lab_audit_record(rq->api->store, rq->who, what, subject, why, NULL, lab_now(rq->api));
}

void lab_req_attribute_begin(lab_req_t *rq)
{
    (void)lab_audit_begin(rq->api->store, rq->who, NULL, NULL, NULL, NULL, lab_now(rq->api));
}

void lab_req_decision_end(lab_req_t *rq, bool happened)
{
    lab_audit_end(rq->api->store, happened);
}

void lab_req_audit_record(lab_req_t *rq, const char *what, const char *subject, const char *why,
                          json_t *doc)
{
    lab_audit_record(rq->api->store, rq->who, what, subject, why, doc, lab_now(rq->api));
}

/* ---- GET /v1/audit ---- */

static void query_error(json_t *errs, const char *name, const char *text)
{
    char msg[300];
    snprintf(msg, sizeof msg, "query parameter %s: %s", name, text);
    json_array_append_new(errs, json_pack("{s:s, s:s}", "path", "", "message", msg));
}

/* A query text that a stored field could hold: UTF-8, 1 to 200 characters. */
static bool text_ok(const char *s)
{
    size_t n = strlen(s);
    return n && lab_text_valid(s, n) && lab_text_chars(s, n) <= 200;
}

void lab_api_audit_list(lab_req_t *rq)
{
    json_t *errs = json_array();
    static const char *const known[] = {"run", "subject", "who", "since", "after", "limit", NULL};
    lab_query_unknown(rq, known, errs);
    const char *run = lab_req_query(rq, "run"), *subject = lab_req_query(rq, "subject");
    const char *who = lab_req_query(rq, "who"), *since = lab_req_query(rq, "since");
    const char *limit_s = lab_req_query(rq, "limit"), *after_s = lab_req_query(rq, "after");
    lab_audit_filter_t f = {.subject = run ? run : subject, .who = who};
    if (run && subject)
        query_error(errs, "run", "give run or subject, not both");
    if (f.subject && !text_ok(f.subject))
        query_error(errs, run ? "run" : "subject", "1 to 200 characters of UTF-8 text");
    if (who && !text_ok(who))
        query_error(errs, "who", "1 to 200 characters of UTF-8 text");
    if (since && lab_time_parse(since, &f.since_ms))
        query_error(errs, "since", "not an RFC 3339 time (2026-12-05T09:00:00Z)");
    long long limit = AUDIT_LIST_DEFAULT, after = 0;
    if (limit_s && !lab_query_num(limit_s, 1, AUDIT_LIST_MAX, &limit))
        query_error(errs, "limit", "not an integer from 1 to 500");
    if (after_s && !lab_query_num(after_s, 0, INT64_MAX, &after))
        query_error(errs, "after", "not a cursor (the \"next\" of a page)");
    if (json_array_size(errs) > 0) {
        size_t n = json_array_size(errs);
        lab_problem(rq, LAB_P_BAD_REQUEST, errs, "%zu bad query parameter%s", n, n == 1 ? "" : "s");
        return;
    }
    json_decref(errs);
    f.after = after;
    json_t *entries;
    int64_t next;
    int rc = lab_audit_list(rq->api->store, &f, (int)limit, &entries, &next);
    if (rc) {
        lab_problem(rq, LAB_P_INTERNAL, NULL, "reading the audit trail failed: %s",
                    lab_strerror(rc));
        return;
    }
    char cursor[24];
    snprintf(cursor, sizeof cursor, "%lld", (long long)next);
    lab_respond_json(rq, 200,
                     json_pack("{s:o, s:o}", "entries", entries, "next",
                               next ? json_string(cursor) : json_null()));
}

/* ---- GET /v1/audit/verify ---- */

void lab_api_audit_verify(lab_req_t *rq)
{
    json_t *v = lab_audit_verify(rq->api->store);
    if (!v) {
        lab_problem(rq, LAB_P_INTERNAL, NULL, "reading the audit trail failed");
        return;
    }
    lab_respond_json(rq, 200, v);
}
