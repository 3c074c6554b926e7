/* GET /v1/lab and GET /v1/lab/runs: the lab as PostgreSQL sees it (labloop.lab_cells,
 * labloop.queue, labloop.lab_runs), read through this cell's fleet connection. Without
 * [lab] shared_queue, or without a connection to PostgreSQL now, the answer is 503 saying which. */
#include "daemon/api/api_int.h"
#include "core/err.h"
#include "core/id.h"
#include "core/utf8.h"
#include "daemon/fleet/fleet.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAB_RUNS_DEFAULT 100
#define LAB_RUNS_MAX 500

static const char *const queue_states[] = {"queued", "claimed", "started", "finished", "cancelled"};

static void lab_read_done(void *arg, int status, json_t *result, const char *msg)
{
    lab_req_t *rq = arg;
    if (status == 0) {
        lab_respond_json(rq, 200, result);
    } else if (status == LAB_ECONN || status == LAB_ESHUTDOWN) {
        struct MHD_Response *r =
            lab_problem(rq, LAB_P_UNAVAILABLE, NULL,
                        "this cell has no connection to PostgreSQL now (%s); the lab view comes "
                        "from there",
                        msg ? msg : lab_strerror(status));
        if (r)
            MHD_add_response_header(r, "Retry-After", "5");
    } else {
        lab_problem(rq, LAB_P_INTERNAL, NULL, "reading the lab from PostgreSQL failed: %s",
                    msg ? msg : lab_strerror(status));
    }
    lab_req_resume(rq);
}

/* false (with the answer set) when this cell is not part of a shared queue */
static bool lab_shared(lab_req_t *rq)
{
    if (rq->api->fleet)
        return true;
    lab_problem(rq, LAB_P_UNAVAILABLE, NULL,
                "this cell is not part of a shared queue ([lab] shared_queue = off)");
    return false;
}

void lab_api_lab(lab_req_t *rq)
{
    if (!lab_shared(rq))
        return;
    lab_req_suspend(rq);
    lab_fleet_lab(rq->api->fleet, lab_read_done, rq);
}

void lab_api_lab_runs(lab_req_t *rq)
{
    json_t *errs = json_array();
    static const char *const params[] = {"state", "cell", "limit", "after", NULL};
    lab_query_unknown(rq, params, errs);
    const char *state = lab_req_query(rq, "state");
    const char *cell = lab_req_query(rq, "cell");
    const char *limit_s = lab_req_query(rq, "limit");
    const char *after = lab_req_query(rq, "after");
    bool known = !state;
    for (size_t k = 0; state && k < sizeof queue_states / sizeof *queue_states; k++)
        known |= strcmp(state, queue_states[k]) == 0;
    if (!known)
        lab_query_error_add(
            errs, "state",
            "unknown state of the lab's queue (queued, claimed, started, finished or "
            "cancelled)");
    if (cell && (!*cell || strlen(cell) > 64 ||
                 strspn(cell, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
                              "KLMNOPQRSTUVWXYZ0123456789_-") != strlen(cell)))
        lab_query_error_add(errs, "cell", "not a cell name (letters, digits, '-' and '_')");
    long long limit = LAB_RUNS_DEFAULT;
    if (limit_s && !lab_query_num(limit_s, 1, LAB_RUNS_MAX, &limit))
        lab_query_error_add(errs, "limit", "not an integer from 1 to 500");
    if (after && !lab_uuid_valid(after))
        lab_query_error_add(errs, "after", "not a cursor (the \"next\" of a page)");
    if (json_array_size(errs) > 0) {
        size_t n = json_array_size(errs);
        lab_problem(rq, LAB_P_BAD_REQUEST, errs, "%zu bad query parameter%s", n, n == 1 ? "" : "s");
        return;
    }
    json_decref(errs);
    if (!lab_shared(rq))
        return;
    lab_req_suspend(rq);
    lab_fleet_lab_runs(rq->api->fleet, state, cell, (int)limit, after, lab_read_done, rq);
}
