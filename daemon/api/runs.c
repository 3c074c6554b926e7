/* The run endpoints: POST /v1/runs (the submission path of daemon/fleet/submit.h, answered as
 * HTTP: 201 with Location after the commit, Idempotency-Key replays, problem+json), GET
 * /v1/runs/{id}, and GET /v1/runs?state=&limit=&after= (pages in submission order; the cursor is an
 * opaque decimal string, "next" of the previous page, null on the last). */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/utf8.h"
#include "daemon/fleet/fleet.h"
#include "daemon/model/run_states.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 50
#define LIST_MAX 500

static void set_location(struct MHD_Response *r, const char *id)
{
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/runs/%s", id);
    MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, loc);
}

/* ---- POST /v1/runs: the submission path (daemon/fleet/submit.c) with HTTP's answers ---- */

static const lab_problem_t problem_of[] = {
    [LAB_SUBMIT_MALFORMED] = LAB_P_BAD_JSON,      [LAB_SUBMIT_BAD_KEY] = LAB_P_BAD_REQUEST,
    [LAB_SUBMIT_IN_PROGRESS] = LAB_P_IN_PROGRESS, [LAB_SUBMIT_CONFLICT] = LAB_P_IN_PROGRESS,
    [LAB_SUBMIT_INVALID] = LAB_P_INVALID,         [LAB_SUBMIT_KEY_REUSED] = LAB_P_IDEM_MISMATCH,
    [LAB_SUBMIT_INTERNAL] = LAB_P_INTERNAL,       [LAB_SUBMIT_UNAVAILABLE] = LAB_P_UNAVAILABLE,
    [LAB_SUBMIT_TOO_LARGE] = LAB_P_TOO_LARGE,
};

static void post_done(void *arg, const lab_submit_answer_t *a)
{
    lab_req_t *rq = arg;
    if (a->why == LAB_SUBMIT_ACCEPTED) {
        struct MHD_Response *r = lab_respond(rq, (unsigned)a->code, "application/json",
                                             lab_strdup(a->doc), strlen(a->doc));
        if (a->replayed)
            MHD_add_response_header(r, "Idempotent-Replayed", "true");
        /* A run in the lab's queue is not (yet) this cell's: GET /v1/lab/runs shows it. */
        if (a->code == 201 && a->id[0] && !a->shared)
            set_location(r, a->id);
    } else {
        struct MHD_Response *r = lab_problem(
            rq, problem_of[a->why], json_array_size(a->errors) ? json_incref(a->errors) : NULL,
            "%s", a->detail);
        if (a->retry_after_s > 0) {
            char s[16];
            snprintf(s, sizeof s, "%d", a->retry_after_s);
            MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, s);
        }
    }
    if (rq->state == RQ_STORE) /* answered later than the handler returned */
        lab_req_resume(rq);
}

void lab_api_runs_post(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    if (!api->accepting) {
        /* Stopping: nothing new goes to the store; the client should reconnect elsewhere. */
        struct MHD_Response *r =
            lab_problem(rq, LAB_P_UNAVAILABLE, NULL, "the daemon is shutting down; not submitted");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        return;
    }
    char hash[65];
    const char *key = lab_req_header(rq, "Idempotency-Key");
    if (key)
        lab_req_hash(rq, hash);
    lab_submission_t in = {
        .body = rq->body,
        .len = rq->len,
        .key = key,
        .owner = rq->who,
        .hash = key ? hash : NULL,
        .origin = "api",
        .via = "http",
    };
    lab_req_attribute_begin(rq);
    int rc = lab_submit_run(api->submit, &in, post_done, rq);
    lab_req_decision_end(rq, false);
    if (rc > 0)
        lab_req_suspend(rq);
}

/* ---- GET /v1/runs/{id} ---- */

/* The {id} of the path as a lower-case UUID; false with a 404 set when it is none. */
static bool run_id_of(lab_req_t *rq, char id[LAB_UUID_LEN + 1])
{
    if (rq->param_len != LAB_UUID_LEN) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no run with id %.*s (not a UUID)",
                    (int)lab_utf8_cut(rq->param, rq->param_len, 64), rq->param);
        return false;
    }
    for (int i = 0; i < LAB_UUID_LEN; i++)
        id[i] = (char)tolower((unsigned char)rq->param[i]);
    id[LAB_UUID_LEN] = 0;
    if (!lab_uuid_valid(id)) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no run with id %s (not a UUID)", id);
        return false;
    }
    return true;
}

/* A run this cell does not hold, from the lab's queue. */
static void lab_run_done(void *arg, int status, json_t *doc, const char *msg)
{
    lab_req_t *rq = arg;
    const char *id = rq->param; /* validated: a UUID (36 bytes) */
    if (status == 0) {
        lab_respond_json(rq, 200, doc);
    } else if (status == LAB_ENOTFOUND) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL,
                    "no run with id %.36s on this cell or in the lab's queue", id);
    } else {
        struct MHD_Response *r =
            lab_problem(rq, LAB_P_UNAVAILABLE, NULL,
                        "run %.36s is not on this cell, and the lab's queue cannot be read now: %s",
                        id, msg ? msg : lab_strerror(status));
        if (r)
            MHD_add_response_header(r, "Retry-After", "5");
    }
    lab_req_resume(rq);
}

void lab_api_runs_get(lab_req_t *rq)
{
    char id[LAB_UUID_LEN + 1];
    if (!run_id_of(rq, id))
        return;
    char *doc = NULL;
    int rc = lab_runs_get(rq->api->store, id, &doc);
    /* In a shared queue, a run this cell never held is the lab's: the Location of a submission
     * into the lab's queue points here, on whichever cell took it. A run this cell gave back
     * keeps its own record here (released); the lab view has the rest. */
    if (rq->api->fleet && rc == LAB_ENOTFOUND) {
        lab_req_suspend(rq);
        lab_fleet_run(rq->api->fleet, id, lab_run_done, rq);
        return;
    }
    if (rc == LAB_ENOTFOUND) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no run with id %s", id);
        return;
    }
    if (rc) {
        lab_problem(rq, LAB_P_INTERNAL, NULL, "reading run %s failed: %s", id, lab_strerror(rc));
        return;
    }
    json_t *live = rq->api->sched ? lab_sched_run_live(rq->api->sched, id) : NULL;
    if (live && json_object_size(live)) {
        json_t *d = json_loads(doc, 0, NULL);
        if (json_is_object(d)) {
            json_object_update(d, live);
            free(doc);
            doc = json_dumps(d, JSON_COMPACT);
        }
        json_decref(d);
    }
    json_decref(live);
    lab_respond(rq, 200, "application/json", doc, strlen(doc));
}

/* ---- GET /v1/runs ---- */

/* value is outside text: at most 64 bytes of it are quoted, never half a character. */
static void query_error(json_t *errs, const char *name, const char *fmt, const char *value)
{
    char msg[400], text[300], v[65];
    snprintf(v, sizeof v, "%.*s", (int)lab_utf8_cut(value, strlen(value), 64), value);
    snprintf(text, sizeof text, fmt, v);
    snprintf(msg, sizeof msg, "query parameter %s: %s", name, text);
    json_array_append_new(
        errs, json_pack("{s:s, s:o}", "path", "", "message", lab_json_text(msg, LAB_TEXT_MAX)));
}

/* A workflow name as workflow.schema.json allows it. */
static bool workflow_name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 128 || !isalnum((unsigned char)n[0]))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)n[i]) && !strchr("_.:-", n[i]))
            return false;
    return true;
}

void lab_api_runs_list(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    json_t *errs = json_array();
    static const char *const known[] = {"state", "plate", "workflow", "priority",
                                        "order", "limit", "after",    NULL};
    lab_query_unknown(rq, known, errs);
    const char *state = lab_req_query(rq, "state");
    const char *limit_s = lab_req_query(rq, "limit");
    const char *after_s = lab_req_query(rq, "after");
    if (state && lab_run_state_parse(state) < 0)
        query_error(errs, "state",
                    "unknown state \"%s\" (queued, planned, running, paused, interrupted, done, "
                    "failed, cancelled or released)",
                    state);
    lab_runs_filter_t f = {.state = state,
                           .plate = lab_req_query(rq, "plate"),
                           .workflow = lab_req_query(rq, "workflow"),
                           .priority = lab_req_query(rq, "priority")};
    const char *order = lab_req_query(rq, "order");
    /* What a run can hold (run.schema.json, workflow.schema.json): anything else matches no run
     * and is a mistake worth saying. */
    if (f.plate && (!*f.plate || lab_text_chars(f.plate, strlen(f.plate)) > 64))
        query_error(errs, "plate", "\"%s\" is not a plate (1 to 64 characters)", f.plate);
    if (f.workflow && !workflow_name_ok(f.workflow))
        query_error(errs, "workflow",
                    "\"%s\" is not a workflow name (1 to 128 of A-Z a-z 0-9 _ . : -, starting "
                    "with a letter or digit)",
                    f.workflow);
    if (f.priority && strcmp(f.priority, "urgent") != 0 && strcmp(f.priority, "high") != 0 &&
        strcmp(f.priority, "normal") != 0 && strcmp(f.priority, "low") != 0)
        query_error(errs, "priority", "unknown priority \"%s\" (urgent, high, normal or low)",
                    f.priority);
    if (order && strcmp(order, "oldest") != 0 && strcmp(order, "newest") != 0)
        query_error(errs, "order", "\"%s\" is neither oldest (the default) nor newest", order);
    f.newest_first = order && strcmp(order, "newest") == 0;
    long long limit = LIST_DEFAULT, after = 0;
    if (limit_s && !lab_query_num(limit_s, 1, LIST_MAX, &limit))
        query_error(errs, "limit", "\"%s\" is not an integer from 1 to 500", limit_s);
    if (after_s && !lab_query_num(after_s, 0, INT64_MAX, &after))
        query_error(errs, "after", "\"%s\" is not a cursor (the \"next\" of a page)", after_s);
    if (json_array_size(errs) > 0) {
        size_t n = json_array_size(errs);
        lab_problem(rq, LAB_P_BAD_REQUEST, errs, "%zu bad query parameter%s", n, n == 1 ? "" : "s");
        return;
    }
    json_decref(errs);

    char **docs = NULL;
    int64_t next = 0;
    int n = lab_runs_find(api->store, &f, after, (int)limit, &docs, &next);
    if (n < 0) {
        lab_problem(rq, LAB_P_INTERNAL, NULL, "listing runs failed: %s", lab_strerror(n));
        return;
    }
    /* The stored documents are JSON already: joined as text, never parsed again. */
    size_t len = 64;
    for (int i = 0; i < n; i++)
        len += strlen(docs[i]) + 1;
    char *text = lab_malloc(len), *p = text;
    p += sprintf(p, "{\"runs\":[");
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
        p += sprintf(p, "],\"next\":\"%lld\"}", (long long)next);
    else
        p += sprintf(p, "],\"next\":null}");
    lab_respond(rq, 200, "application/json", text, (size_t)(p - text));
}

/* ---- POST /v1/runs/{id}/cancel and /resume: through the scheduler, which owns live runs ---- */

static void sched_done(void *arg, int status, const char *doc, const char *msg)
{
    lab_req_t *rq = arg;
    if (status == 0)
        lab_respond(rq, 200, "application/json", lab_strdup(doc), strlen(doc));
    else
        lab_problem(rq, status == LAB_ESHUTDOWN ? LAB_P_UNAVAILABLE : LAB_P_INTERNAL, NULL,
                    "the change was not stored: %s", msg ? msg : lab_strerror(status));
    lab_req_resume(rq);
}

/* The {id} of a request on a live run, when the scheduler can take it; false with the answer
 * set otherwise. */
static bool live_run_id(lab_req_t *rq, char id[LAB_UUID_LEN + 1])
{
    if (!run_id_of(rq, id))
        return false;
    if (!rq->api->accepting || !rq->api->sched) {
        lab_problem(rq, LAB_P_UNAVAILABLE, NULL, "the daemon is shutting down");
        return false;
    }
    return true;
}

/* The scheduler has no such run: it is over (409, with its state and what that rules out) or
 * unknown (404). */
static void run_not_live(lab_req_t *rq, const char *id, const char *so)
{
    char *text = NULL;
    int rc = lab_runs_get(rq->api->store, id, &text);
    if (rc == LAB_ENOTFOUND) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no run with id %s", id);
        return;
    }
    if (rc != LAB_OK) {
        lab_problem(rq, LAB_P_INTERNAL, NULL, "reading run %s failed: %s", id, lab_strerror(rc));
        return;
    }
    json_t *d = json_loads(text, 0, NULL);
    free(text);
    lab_problem(rq, LAB_P_CONFLICT, lab_errors_one("", "the run is over"), "run %s is %s: %s", id,
                json_string_value(json_object_get(d, "state")) ?: "?", so);
    json_decref(d);
}

void lab_api_runs_resume(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    char id[LAB_UUID_LEN + 1];
    if (!live_run_id(rq, id))
        return;
    json_t *body =
        rq->len ? json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, NULL) : json_object();
    const char *how = json_string_value(json_object_get(body, "step"));
    json_t *step = json_object_get(body, "step"), *reason = json_object_get(body, "reason");
    if (!how)
        how = "retry";
    if (!json_is_object(body) || (step && !json_is_string(step)) ||
        json_object_size(body) > (step ? 1u : 0u) + (reason ? 1u : 0u) ||
        (strcmp(how, "retry") != 0 && strcmp(how, "skip") != 0) ||
        (reason && (!json_is_string(reason) ||
                    lab_text_chars(json_string_value(reason), json_string_length(reason)) >
                        LAB_CANCEL_REASON_CHARS))) {
        json_decref(body);
        lab_problem(rq, LAB_P_INVALID,
                    lab_errors_one("",
                                   "expected {} or {\"step\": \"retry\" | \"skip\", "
                                   "\"reason\": text of at most 500 characters}, both optional"),
                    "not a resumption");
        return;
    }
    if (lab_req_signer(rq)) {
        json_decref(body);
        return;
    }
    char msg[200] = "";
    bool skip = strcmp(how, "skip") == 0;
    lab_req_decision_begin(rq, skip ? "run.resume.skip" : "run.resume.retry", id,
                           json_string_value(reason),
                           skip ? "approved resume with skip" : "approved resume with retry",
                           json_pack("{s:s}", "step", how));
    int rc = lab_sched_resume(api->sched, id, rq->who, how, json_string_value(reason), sched_done,
                              rq, msg, sizeof msg);
    lab_req_decision_end(rq, rc == 0);
    json_decref(body);
    if (rc == 0) {
        lab_req_suspend(rq);
        return;
    }
    if (rc == LAB_ESTATE) {
        lab_problem(rq, LAB_P_CONFLICT, lab_errors_one("", msg), "%s", msg);
        return;
    }
    run_not_live(rq, id, "there is nothing to resume");
}

/* POST /v1/runs/{id}/priority {"priority"?, "score"?}: at least one of them. */
void lab_api_runs_priority(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    char id[LAB_UUID_LEN + 1];
    if (!live_run_id(rq, id))
        return;
    json_t *body = rq->len ? json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_t *errs = json_array();
    json_t *prio = json_object_get(body, "priority"), *score = json_object_get(body, "score");
    const char *p = json_string_value(prio);
    if (!json_is_object(body)) {
        json_array_append_new(errs, json_pack("{s:s,s:s}", "path", "", "message",
                                              "expected {\"priority\"?, \"score\"?}"));
    } else {
        const char *key;
        json_t *v;
        json_object_foreach(body, key, v) if (strcmp(key, "priority") && strcmp(key, "score"))
        {
            char path[80];
            snprintf(path, sizeof path, "/%.*s", (int)lab_utf8_cut(key, strlen(key), 60), key);
            json_array_append_new(errs,
                                  json_pack("{s:o,s:s}", "path", lab_json_text(path, LAB_TEXT_MAX),
                                            "message", "unknown member"));
        }
        if (!prio && !score)
            json_array_append_new(errs, json_pack("{s:s,s:s}", "path", "", "message",
                                                  "give priority, score or both"));
        if (prio && (!p || (strcmp(p, "urgent") && strcmp(p, "high") && strcmp(p, "normal") &&
                            strcmp(p, "low"))))
            json_array_append_new(errs, json_pack("{s:s,s:s}", "path", "/priority", "message",
                                                  "one of urgent, high, normal, low"));
        if (score && !json_is_number(score))
            json_array_append_new(errs,
                                  json_pack("{s:s,s:s}", "path", "/score", "message", "a number"));
    }
    if (json_array_size(errs)) {
        json_decref(body);
        lab_problem(rq, LAB_P_INVALID, errs, "not a priority change");
        return;
    }
    json_decref(errs);
    if (lab_req_signer(rq)) {
        json_decref(body);
        return;
    }
    lab_req_decision_begin(rq, "run.priority", id, NULL, "changed the run's priority",
                           json_deep_copy(body));
    int rc = lab_sched_reprioritize(api->sched, id, rq->who, p, score != NULL,
                                    json_number_value(score), sched_done, rq);
    lab_req_decision_end(rq, rc == 0);
    json_decref(body);
    if (rc == 0) {
        lab_req_suspend(rq);
        return;
    }
    run_not_live(rq, id, "its priority no longer matters");
}

void lab_api_schedule(lab_req_t *rq)
{
    if (!rq->api->sched) {
        lab_problem(rq, LAB_P_UNAVAILABLE, NULL, "no scheduler in this daemon");
        return;
    }
    lab_respond_json(rq, 200, lab_sched_timeline(rq->api->sched));
}

void lab_api_runs_cancel(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    char id[LAB_UUID_LEN + 1];
    if (!live_run_id(rq, id))
        return;
    json_t *body = lab_req_reason_body(rq, "cancellation");
    if (!body)
        return;
    if (lab_req_signer(rq)) {
        json_decref(body);
        return;
    }
    const char *reason = json_string_value(json_object_get(body, "reason"));
    lab_req_decision_begin(rq, "run.cancel", id, reason, "cancelled run", NULL);
    int rc = lab_sched_cancel(api->sched, id, rq->who, reason, sched_done, rq);
    lab_req_decision_end(rq, rc == 0);
    json_decref(body);
    if (rc == 0)
        lab_req_suspend(rq);
    else
        run_not_live(rq, id, "it can no longer be cancelled");
}
