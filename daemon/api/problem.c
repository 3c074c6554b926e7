/* problem+json (RFC 9457): one table of problem types. Every error the API returns is one of
 * these, with an `errors` array of {path, message} (JSON Pointer paths) naming every problem. */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

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
};

int lab_problem_status(lab_problem_t p)
{
    return problems[p].status;
}

json_t *lab_errors_one(const char *path, const char *message)
{
    json_t *a = json_array();
    json_array_append_new(a, json_pack("{s:s, s:s}", "path", path, "message", message));
    return a;
}

char *lab_problem_text(lab_problem_t p, const char *instance, json_t *errors, const char *detail)
{
    char type[64];
    snprintf(type, sizeof type, "urn:labloop:problem:%s", problems[p].slug);
    json_t *doc =
        json_pack("{s:s, s:s, s:i, s:s, s:s, s:o}", "type", type, "title", problems[p].title,
                  "status", problems[p].status, "detail", detail, "instance",
                  instance ? instance : "", "errors", errors ? errors : json_array());
    LAB_ASSERT(doc);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    LAB_ASSERT(text);
    return text;
}

struct MHD_Response *lab_problem(lab_req_t *rq, lab_problem_t p, json_t *errors, const char *fmt,
                                 ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    /* The one warning line for a 5xx, with what went wrong; the request line itself is debug. */
    if (problems[p].status >= 500)
        log_warn("api", "%s %s: %d %s", rq->method, rq->url, problems[p].status, detail);
    char *text = lab_problem_text(p, rq->url, errors, detail);
    return lab_respond(rq, (unsigned)problems[p].status, "application/problem+json", text,
                       strlen(text));
}
