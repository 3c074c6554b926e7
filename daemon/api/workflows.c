/* The workflow endpoints: store a version (POST), list them, read one. A document is checked by
 * the schema and by the model's rules (daemon/model/workflow_rules.h) with every problem named, and
 * `on` must name a kind of instrument the drivers provide or an instrument of this cell. */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/model/workflow_rules.h"
#include "daemon/store/workflows.h"

#include <stdlib.h>
#include <string.h>

bool lab_api_workflow_on_known(void *ctx, const char *on)
{
    lab_instr_t *in = ctx;
    for (const lab_driver_ops_t *const *o = lab_drivers; *o; o++)
        if (strcmp((*o)->kind, on) == 0)
            return true;
    return lab_instr_find(in, on, strlen(on)) != NULL;
}

static void put_done(lab_store_op_t *op, int status)
{
    lab_wf_put_t *put = (lab_wf_put_t *)op;
    lab_req_t *rq = put->arg;
    if (status == LAB_ECONFLICT) {
        lab_problem(rq, LAB_P_CONFLICT,
                    lab_errors_one("/version", "this version is stored with other steps"),
                    "version %d of workflow %s is stored with other content; a stored version "
                    "never changes (leave version out, or give a new one)",
                    put->version, put->name);
    } else if (status != 0) {
        lab_problem(rq, status == LAB_ESHUTDOWN ? LAB_P_UNAVAILABLE : LAB_P_INTERNAL, NULL,
                    "workflow %s not stored: %s", put->name, lab_strerror(status));
    } else {
        char *text = put->doc;
        put->doc = NULL;
        struct MHD_Response *r =
            lab_respond(rq, put->created ? 201 : 200, "application/json", text, strlen(text));
        char loc[300];
        snprintf(loc, sizeof loc, "/v1/workflows/%s?version=%d", put->name, put->stored_version);
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, loc);
        if (put->created)
            log_info("api", "workflow=%s version=%d stored by=%s", put->name, put->stored_version,
                     rq->who);
    }
    lab_wf_put_free(put);
    lab_req_resume(rq);
}

void lab_api_workflows_post(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    if (!api->accepting) {
        lab_problem(rq, LAB_P_UNAVAILABLE, NULL, "the daemon is shutting down");
        return;
    }
    json_t *wf = lab_req_json(rq, api->workflow_schema, "workflow");
    if (!wf)
        return;
    lab_jerrs_t errs = {0};
    int n = lab_workflow_check(wf, lab_api_workflow_on_known, api->instr, &errs);
    if (n > 0) {
        lab_problem(rq, LAB_P_INVALID, lab_jerrs_to_json(&errs), "%d problem%s in the workflow", n,
                    n == 1 ? "" : "s");
        lab_jerrs_free(&errs);
        json_decref(wf);
        return;
    }
    lab_jerrs_free(&errs);
    lab_wf_put_t *put = lab_wf_put_new();
    put->name = lab_strdup(json_string_value(json_object_get(wf, "name")));
    put->version = (int)json_integer_value(json_object_get(wf, "version"));
    put->canon = lab_workflow_canonical(wf);
    put->ts_ms = lab_clock_now_ms(api->clock);
    put->arg = rq;
    put->op.done = put_done;
    json_decref(wf);
    lab_req_suspend(rq);
    lab_req_attribute_begin(rq);
    lab_store_submit(api->store, &put->op);
    lab_req_decision_end(rq, false);
}

void lab_api_workflows_list(lab_req_t *rq)
{
    lab_respond_json(rq, 200, json_pack("{s:o}", "workflows", lab_workflows_list(rq->api->store)));
}

void lab_api_workflows_get(lab_req_t *rq)
{
    char name[129];
    if (rq->param_len >= sizeof name) {
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no workflow with so long a name");
        return;
    }
    memcpy(name, rq->param, rq->param_len);
    name[rq->param_len] = '\0';
    const char *v = lab_req_query(rq, "version");
    int version = 0;
    if (v) {
        char *end;
        long l = strtol(v, &end, 10);
        if (*end || end == v || l < 1 || l > 1000000) {
            lab_problem(rq, LAB_P_BAD_REQUEST,
                        lab_errors_one("", "query parameter version: a whole number from 1"),
                        "version=%s is not a version", v);
            return;
        }
        version = (int)l;
    }
    char *doc = NULL;
    int rc = lab_workflows_get(rq->api->store, name, version, &doc);
    if (rc == LAB_ENOTFOUND) {
        if (version)
            lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no version %d of workflow %s", version, name);
        else
            lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no workflow %s", name);
        return;
    }
    if (rc) {
        lab_problem(rq, LAB_P_INTERNAL, NULL, "reading workflow %s failed: %s", name,
                    lab_strerror(rc));
        return;
    }
    lab_respond(rq, 200, "application/json", doc, strlen(doc));
}
