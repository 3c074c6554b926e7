/* The closed loop's endpoints: campaigns, their batches, candidates, scores and results. The
 * engine (daemon/campaign/) decides; this file turns its answers into HTTP. */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "core/mem.h"
#include "daemon/campaign/engine.h"

#include <stdio.h>
#include <string.h>

static lab_problem_t problem_of(int status)
{
    switch (status) {
    case 404:
        return LAB_P_NOT_FOUND;
    case 409:
        return LAB_P_CONFLICT;
    case 422:
        return LAB_P_INVALID;
    case 503:
        return LAB_P_UNAVAILABLE;
    case 400:
        return LAB_P_BAD_JSON;
    default:
        return LAB_P_INTERNAL;
    }
}

/* The engine's answer as HTTP: a document, or problem+json with its errors. */
static void respond(lab_req_t *rq, int status, json_t *a)
{
    if (status < 400) {
        lab_respond_json(rq, (unsigned)status, json_incref(a));
        return;
    }
    json_t *errs = json_object_get(a, "errors");
    lab_problem(rq, problem_of(status), errs ? json_incref(errs) : NULL, "%s",
                json_string_value(json_object_get(a, "detail")) ?: "refused");
}

static void done(void *arg, int status, json_t *a)
{
    lab_req_t *rq = arg;
    respond(rq, status, a);
    lab_req_resume(rq);
}

/* The engine, or false with a 503 set. */
static lab_campaigns_t *engine(lab_req_t *rq)
{
    if (!rq->api->campaigns || !rq->api->accepting) {
        lab_problem(rq, LAB_P_UNAVAILABLE, NULL, "no closed loop in this daemon now");
        return NULL;
    }
    return rq->api->campaigns;
}

/* The {id} of the path; false with a 404 set when it cannot be a campaign's. */
static bool campaign_id(lab_req_t *rq, char id[72])
{
    if (rq->param_len == 0 || rq->param_len >= 72) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no such campaign");
        return false;
    }
    memcpy(id, rq->param, rq->param_len);
    id[rq->param_len] = '\0';
    return true;
}

static void not_found(lab_req_t *rq, const char *id)
{
    lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no campaign with id %s", id);
}

void lab_api_campaigns_post(lab_req_t *rq)
{
    lab_campaigns_t *l = engine(rq);
    if (!l)
        return;
    json_t *doc = lab_req_json(rq, rq->api->campaign_schema, "campaign");
    if (!doc)
        return;
    lab_req_suspend(rq);
    lab_req_attribute_begin(rq);
    lab_campaigns_create(l, doc, rq->who, done, rq);
    lab_req_decision_end(rq, false);
    json_decref(doc);
}

void lab_api_campaigns_list(lab_req_t *rq)
{
    lab_campaigns_t *l = engine(rq);
    if (l)
        lab_respond_json(rq, 200, json_pack("{s:o}", "campaigns", lab_campaigns_list(l)));
}

void lab_api_campaigns_get(lab_req_t *rq)
{
    char id[72];
    lab_campaigns_t *l = engine(rq);
    if (!l || !campaign_id(rq, id))
        return;
    json_t *c = lab_campaigns_get(l, id);
    if (c)
        lab_respond_json(rq, 200, c);
    else
        not_found(rq, id);
}

void lab_api_campaigns_batch(lab_req_t *rq)
{
    char id[72];
    lab_campaigns_t *l = engine(rq);
    if (!l || !campaign_id(rq, id))
        return;
    json_t *doc = lab_req_json(rq, rq->api->batch_schema, "batch");
    if (!doc)
        return;
    lab_req_suspend(rq);
    lab_req_attribute_begin(rq);
    lab_campaigns_batch(l, id, doc, rq->who, "http", done, rq);
    lab_req_decision_end(rq, false);
    json_decref(doc);
}

void lab_api_campaigns_scores(lab_req_t *rq)
{
    char id[72];
    lab_campaigns_t *l = engine(rq);
    if (!l || !campaign_id(rq, id))
        return;
    json_t *doc = lab_req_json(rq, NULL, "scores");
    if (!doc)
        return;
    lab_req_suspend(rq);
    lab_req_attribute_begin(rq);
    lab_campaigns_scores(l, id, doc, rq->who, done, rq);
    lab_req_decision_end(rq, false);
    json_decref(doc);
}

static void control(lab_req_t *rq, const char *what)
{
    char id[72];
    lab_campaigns_t *l = engine(rq);
    if (!l || !campaign_id(rq, id))
        return;
    if (lab_req_signer(rq))
        return;
    char kind[32];
    snprintf(kind, sizeof kind, "campaign.%s", what);
    lab_req_suspend(rq);
    lab_req_decision_begin(rq, kind, id, NULL,
                           strcmp(what, "pause") == 0 ? "paused campaign" : "resumed campaign",
                           NULL);
    lab_campaigns_control(l, id, what, rq->who, done, rq);
    /* A refused control writes nothing, and its note is dropped with it; one that happened gave
     * its note to the write that records the change. */
    lab_req_decision_end(rq, false);
}

void lab_api_campaigns_pause(lab_req_t *rq)
{
    control(rq, "pause");
}

void lab_api_campaigns_resume(lab_req_t *rq)
{
    control(rq, "resume");
}

void lab_api_campaigns_candidates(lab_req_t *rq)
{
    char id[72];
    lab_campaigns_t *l = engine(rq);
    if (!l || !campaign_id(rq, id))
        return;
    const char *state = lab_req_query(rq, "state");
    if (state && lab_cand_state_parse(state) < 0) {
        lab_problem(rq, LAB_P_BAD_REQUEST,
                    lab_errors_one("", "query parameter state: one of candidate, staged, running, "
                                       "completed, failed, abandoned, stale"),
                    "state=%s is not a candidate state", state);
        return;
    }
    json_t *v = lab_campaigns_candidates(l, id, state);
    if (v)
        lab_respond_json(rq, 200, json_pack("{s:s,s:o}", "campaign", id, "candidates", v));
    else
        not_found(rq, id);
}

void lab_api_campaigns_results(lab_req_t *rq)
{
    char id[72];
    lab_campaigns_t *l = engine(rq);
    if (!l || !campaign_id(rq, id))
        return;
    json_t *v = lab_campaigns_results(l, id);
    if (v)
        lab_respond_json(rq, 200, json_pack("{s:s,s:o}", "campaign", id, "results", v));
    else
        not_found(rq, id);
}
