/* The instrument endpoints: the list and one instrument (state, telemetry with units, last
 * error, model information, actions with their parameter schemas), manual actions, and the
 * operator's hold (pause/resume). An action's request waits, suspended, for the instrument's
 * answer; its errors keep the device's own code. */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "core/log.h"

#include <string.h>

void lab_api_instruments_list(lab_req_t *rq)
{
    lab_api_t *api = rq->api;
    json_t *arr = json_array();
    for (int i = 0; i < lab_instr_count(api->instr); i++)
        json_array_append_new(arr, lab_instr_doc(api->instr, lab_instr_at(api->instr, i), false));
    lab_respond_json(rq, 200, json_pack("{s:o}", "instruments", arr));
}

static lab_driver_t *instrument_of(lab_req_t *rq)
{
    lab_driver_t *d = lab_instr_find(rq->api->instr, rq->param, rq->param_len);
    if (!d)
        lab_problem(rq, LAB_P_NOT_FOUND, NULL, "no instrument '%.*s' in this cell",
                    (int)(rq->param_len > 64 ? 64 : rq->param_len), rq->param);
    return d;
}

void lab_api_instruments_get(lab_req_t *rq)
{
    lab_driver_t *d = instrument_of(rq);
    if (d)
        lab_respond_json(rq, 200, lab_instr_doc(rq->api->instr, d, true));
}

static void hold(lab_req_t *rq, bool paused)
{
    lab_driver_t *d = instrument_of(rq);
    if (!d)
        return;
    lab_driver_pause(d, paused);
    log_info("api", "instrument=%s %s by=%s", lab_driver_id(d), paused ? "paused" : "resumed",
             rq->who);
    lab_respond_json(rq, 200, lab_instr_doc(rq->api->instr, d, false));
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
    case LAB_DRV_EACTION:
    case LAB_DRV_EPARAM:
        p = LAB_P_INVALID;
        break;
    case LAB_DRV_ESTATE:
        p = LAB_P_CONFLICT;
        break;
    case LAB_DRV_EOFFLINE:
    case LAB_DRV_EBUSY:
    case LAB_DRV_ECANCELLED:
        p = LAB_P_UNAVAILABLE;
        break;
    case LAB_DRV_ETIMEOUT:
        p = LAB_P_INSTRUMENT_TIMEOUT;
        break;
    case LAB_DRV_EINTERNAL:
        p = LAB_P_INTERNAL;
        break;
    default:
        p = LAB_P_INSTRUMENT;
    }
    if (!errors) {
        const char *path = e->code == LAB_DRV_EACTION ? "/action" : "";
        errors = lab_errors_one(path, e->text);
    }
    /* The device's own words travel with the problem, for whoever troubleshoots. */
    json_t *err = lab_drv_error_json(e);
    json_object_set_new(err, "instrument", json_string(lab_driver_id(d)));
    json_object_set_new(err, "action", json_string(action));
    char *text = lab_problem_text(p, rq->url, errors, e->text);
    json_t *doc = json_loads(text, 0, NULL);
    free(text);
    json_object_set_new(doc, "instrument_error", err);
    if (lab_problem_status(p) >= 500)
        log_warn("api", "%s %s: %d %s", rq->method, rq->url, lab_problem_status(p), e->text);
    char *out = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    struct MHD_Response *r = lab_respond(rq, (unsigned)lab_problem_status(p),
                                         "application/problem+json", out, strlen(out));
    if (e->code == LAB_DRV_EBUSY)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "5");
}

static void action_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    lab_req_t *rq = arg;
    if (err->code != LAB_DRV_OK)
        drv_problem(rq, d, rq->action, err, NULL);
    else
        lab_respond_json(rq, 200,
                         json_pack("{s:s, s:s, s:O}", "instrument", lab_driver_id(d), "action",
                                   rq->action, "result", result));
    lab_req_resume(rq);
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
    json_t *body = lab_req_json(rq, api->action_schema, "action");
    if (!body)
        return;
    const char *action = json_string_value(json_object_get(body, "action"));
    json_t *params = json_object_get(body, "params");
    json_t *timeout = json_object_get(body, "timeout_s");
    lab_drv_error_t err;
    json_t *problems = NULL;
    log_info("api", "instrument=%s action=%s by=%s", lab_driver_id(d), action, rq->who);
    snprintf(rq->action, sizeof rq->action, "%s", action);
    int rc = lab_driver_call(d, action, params, timeout ? json_number_value(timeout) : 0,
                             action_done, rq, &err, &problems);
    if (rc != LAB_OK) {
        drv_problem(rq, d, action, &err, problems);
        json_decref(body);
        return;
    }
    json_decref(body);
    lab_req_suspend(rq);
}
