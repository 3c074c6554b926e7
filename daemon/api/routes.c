/* The route table: every endpoint is one row {method, path pattern, roles allowed, handler}. The
 * server (http.c) answers 404 for a path no row has, and 405 with Allow for a known path with
 * another method. Plus the small handlers that need no module of their own. */
#include "daemon/api/api_int.h"
#include "core/err.h"

#define READERS LAB_ROLES_ALL
#define SUBMITTERS (LAB_ROLE_TECHNICIAN | LAB_ROLE_ADMIN)
#define PIPELINES (LAB_ROLE_PIPELINE | LAB_ROLE_TECHNICIAN | LAB_ROLE_ADMIN)

const lab_route_t lab_routes[] = {
    {"GET", "/healthz", 0, false, lab_api_healthz},
    {"GET", "/metrics", READERS, false, lab_api_metrics},
    {"GET", "/v1/openapi.json", 0, false, lab_api_openapi},
    {"GET", "/v1/me", READERS, false, lab_api_me},
    {"GET", "/v1/cell", READERS, false, lab_api_cell},
    {"GET", "/v1/lab", READERS, false, lab_api_lab},
    {"GET", "/v1/lab/runs", READERS, false, lab_api_lab_runs},
    {"POST", "/v1/runs", SUBMITTERS, true, lab_api_runs_post},
    {"GET", "/v1/runs", READERS, false, lab_api_runs_list},
    {"GET", "/v1/runs/{id}", READERS, false, lab_api_runs_get},
    {"POST", "/v1/runs/{id}/cancel", SUBMITTERS, true, lab_api_runs_cancel},
    {"POST", "/v1/runs/{id}/resume", SUBMITTERS, true, lab_api_runs_resume},
    {"POST", "/v1/runs/{id}/priority", SUBMITTERS, true, lab_api_runs_priority},
    {"GET", "/v1/schedule", READERS, false, lab_api_schedule},
    {"GET", "/v1/events", READERS, false, lab_api_events},
    {"GET", "/v1/prompts", READERS, false, lab_api_prompts_list},
    {"GET", "/v1/instruments", READERS, false, lab_api_instruments_list},
    {"GET", "/v1/instruments/{id}", READERS, false, lab_api_instruments_get},
    {"POST", "/v1/instruments/{id}/actions", SUBMITTERS, true, lab_api_instruments_action},
    {"POST", "/v1/instruments/{id}/pause", SUBMITTERS, true, lab_api_instruments_pause},
    {"POST", "/v1/instruments/{id}/resume", SUBMITTERS, false, lab_api_instruments_resume},
    {"POST", "/v1/instruments/{id}/record", SUBMITTERS, true, lab_api_instruments_record},
    {"GET", "/v1/instruments/{id}/utilisation", READERS, false, lab_api_instruments_utilisation},
    {"GET", "/v1/instruments/{id}/consumables", READERS, false, lab_api_consumables_get},
    {"POST", "/v1/instruments/{id}/consumables/refill", SUBMITTERS, true,
     lab_api_consumables_refill},
    {"GET", "/v1/plates", READERS, false, lab_api_plates_list},
    {"GET", "/v1/plates/{barcode}", READERS, false, lab_api_plates_get},
    {"POST", "/v1/plates/{barcode}/location", SUBMITTERS, true, lab_api_plates_locate},
    {"POST", "/v1/workflows", SUBMITTERS, true, lab_api_workflows_post},
    {"GET", "/v1/workflows", READERS, false, lab_api_workflows_list},
    {"GET", "/v1/workflows/{name}", READERS, false, lab_api_workflows_get},
    {"POST", "/v1/campaigns", PIPELINES, true, lab_api_campaigns_post},
    {"GET", "/v1/campaigns", READERS, false, lab_api_campaigns_list},
    {"GET", "/v1/campaigns/{id}", READERS, false, lab_api_campaigns_get},
    {"POST", "/v1/campaigns/{id}/batches", PIPELINES, true, lab_api_campaigns_batch},
    {"POST", "/v1/campaigns/{id}/scores", PIPELINES, true, lab_api_campaigns_scores},
    {"POST", "/v1/campaigns/{id}/pause", PIPELINES, false, lab_api_campaigns_pause},
    {"POST", "/v1/campaigns/{id}/resume", PIPELINES, false, lab_api_campaigns_resume},
    {"GET", "/v1/campaigns/{id}/candidates", READERS, false, lab_api_campaigns_candidates},
    {"GET", "/v1/campaigns/{id}/results", READERS, false, lab_api_campaigns_results},
    {"GET", "/v1/audit", READERS, false, lab_api_audit_list},
    {"GET", "/v1/audit/verify", READERS, false, lab_api_audit_verify},
};

const int lab_nroutes = (int)(sizeof lab_routes / sizeof lab_routes[0]);

void lab_api_healthz(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    lab_store_stats_t st;
    lab_store_stats(api->store, &st);
    json_t *doc =
        json_pack("{s:s, s:b, s:I, s:i, s:I}", "status", "ok", "accepting", api->accepting,
                  "uptime_s", (json_int_t)((uv_now(api->loop) - api->started_ms) / 1000),
                  "in_flight", api->in_flight, "outbox_head", (json_int_t)st.head_seq);
    lab_respond_json(rq, 200, doc);
}

/* Who the token is: what the web app shows and which buttons it offers. Without auth every
 * caller may do everything, as an admin would. */
void lab_api_me(lab_req_t *rq)
{
    unsigned role = rq->role;
    const char *name = NULL;
    if (role == LAB_ROLES_ALL)
        role = LAB_ROLE_ADMIN;
    else
        name = rq->who;
    json_t *doc = json_pack("{s:s, s:o, s:b}", "role", lab_role_name((lab_role_t)role), "name",
                            name ? lab_json_text(name, LAB_WHO_MAX) : json_null(), "can_submit",
                            (role & SUBMITTERS) != 0);
    lab_respond_json(rq, 200, doc);
}
