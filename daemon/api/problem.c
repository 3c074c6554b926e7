/* problem+json (RFC 9457): one table of problem types. Every error the API returns is one of
 * these, with an `errors` array of {path, message} (JSON Pointer paths) naming every problem. */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "type" is urn:labloop:problem:<slug>: stable, and not pretending to be a page one can fetch. */
static const struct {
    int status;
    const char *slug;
    const char *title;
} problems[LAB_P_COUNT] = {
    [LAB_P_BAD_JSON] = {400, "malformed-json", "Malformed JSON"},
    [LAB_P_BAD_REQUEST] = {400, "bad-request", "Bad request"},
    [LAB_P_UNAUTHORIZED] = {401, "unauthorized", "Authentication required"},
    [LAB_P_FORBIDDEN] = {403, "forbidden", "Role not allowed"},
    [LAB_P_NOT_FOUND] = {404, "not-found", "Not found"},
    [LAB_P_METHOD] = {405, "method-not-allowed", "Method not allowed"},
    [LAB_P_IN_PROGRESS] = {409, "idempotency-in-progress",
                           "A request with this Idempotency-Key is still being processed"},
    [LAB_P_TOO_LARGE] = {413, "too-large", "Request body too large"},
    [LAB_P_MEDIA_TYPE] = {415, "unsupported-media-type", "Unsupported media type"},
    [LAB_P_INVALID] = {422, "invalid-document", "The document is not valid"},
    [LAB_P_IDEM_MISMATCH] = {422, "idempotency-key-reused",
                             "Idempotency-Key already used for a different request"},
    [LAB_P_INTERNAL] = {500, "internal", "Internal error"},
    [LAB_P_UNAVAILABLE] = {503, "unavailable", "Service unavailable"},
    [LAB_P_CONFLICT] = {409, "conflict", "Not possible in the current state"},
    [LAB_P_INSTRUMENT] = {502, "instrument-error", "The instrument reported an error"},
    [LAB_P_INSTRUMENT_TIMEOUT] = {504, "instrument-timeout",
                                  "The instrument did not answer in time"},
    [LAB_P_UNSIGNED] = {403, "signature-required", "A decision needs a token that names a person"},
};

int lab_problem_status(lab_problem_t p)
{
    return problems[p].status;
}

json_t *lab_json_text(const char *s, size_t max)
{
    size_t len = strlen(s);
    size_t cap = (len < max ? len : max) * 3 + 1;
    char *buf = lab_malloc(cap);
    lab_utf8_sanitize(buf, max + 1 < cap ? max + 1 : cap, s, len);
    json_t *j = json_string(buf);
    free(buf);
    return j;
}

json_t *lab_errors_one(const char *path, const char *message)
{
    json_t *a = json_array();
    json_array_append_new(a, json_pack("{s:o, s:o}", "path", lab_json_text(path, LAB_TEXT_MAX),
                                       "message", lab_json_text(message, LAB_TEXT_MAX)));
    return a;
}

char *lab_problem_text(lab_problem_t p, const char *instance, json_t *errors, const char *detail)
{
    char type[64];
    snprintf(type, sizeof type, "urn:labloop:problem:%s", problems[p].slug);
    /* Every part that came from outside is made valid first: json_pack refuses what is not
     * UTF-8, and that must never cost more than the one answer. */
    json_t *doc =
        json_pack("{s:s, s:s, s:i, s:o, s:o, s:o}", "type", type, "title", problems[p].title,
                  "status", problems[p].status, "detail", lab_json_text(detail, LAB_DETAIL_MAX),
                  "instance", lab_json_text(instance ? instance : "", LAB_INSTANCE_MAX), "errors",
                  errors ? errors : json_array());
    if (!doc)
        return NULL;
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}

struct MHD_Response *lab_problem(lab_req_t *rq, lab_problem_t p, json_t *errors, const char *fmt,
                                 ...)
{
    char *detail = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&detail, fmt, ap);
    va_end(ap);
    if (n < 0) {
        json_decref(errors);
        return lab_respond_internal(rq, "the problem's detail could not be formatted");
    }
    /* The one warning line for a 5xx, with what went wrong; the request line itself is debug. */
    if (problems[p].status >= 500)
        log_warn("api", "%s %s: %d %.*s", rq->method, rq->url, problems[p].status,
                 (int)lab_utf8_cut(detail, (size_t)n, LAB_DETAIL_MAX), detail);
    char *text = lab_problem_text(p, rq->url, errors, detail);
    free(detail);
    if (!text)
        return lab_respond_internal(rq, "the problem+json answer could not be built");
    return lab_respond(rq, (unsigned)problems[p].status, "application/problem+json", text,
                       strlen(text));
}
