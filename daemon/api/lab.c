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

static void lab_query_error(json_t *errs, const char *name, const char *msg)
{
    json_t *one = lab_errors_one(name, msg);
    json_array_extend(errs, one);
    json_decref(one);
}

static enum MHD_Result lab_query_known(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
    (void)kind;
    (void)value;
    static const char *const known[] = {"state", "cell", "limit", "after"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(key, known[i]) == 0)
            return MHD_YES;
    char name[80];
    snprintf(name, sizeof name, "%.*s", (int)lab_utf8_cut(key, strlen(key), 64), key);
    lab_query_error(cls, name, "unknown (state, cell, limit and after are)");
    return MHD_YES;
}

void lab_api_lab_runs(lab_req_t *rq)
{
    json_t *errs = json_array();
    MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, lab_query_known, errs);
    const char *state = lab_req_query(rq, "state");
    const char *cell = lab_req_query(rq, "cell");
    const char *limit_s = lab_req_query(rq, "limit");
    const char *after = lab_req_query(rq, "after");
    bool known = !state;
    for (size_t k = 0; state && k < sizeof queue_states / sizeof *queue_states; k++)
        known |= strcmp(state, queue_states[k]) == 0;
    if (!known)
        lab_query_error(errs, "state",
                        "unknown state of the lab's queue (queued, claimed, started, finished or "
                        "cancelled)");
    if (cell && (!*cell || strlen(cell) > 64 ||
                 strspn(cell, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
                              "KLMNOPQRSTUVWXYZ0123456789_-") != strlen(cell)))
        lab_query_error(errs, "cell", "not a cell name (letters, digits, '-' and '_')");
    long limit = LAB_RUNS_DEFAULT;
    if (limit_s) {
        char *end;
        errno = 0;
        limit = isdigit((unsigned char)limit_s[0]) ? strtol(limit_s, &end, 10) : -1;
        if (limit < 1 || limit > LAB_RUNS_MAX || errno || *end)
            lab_query_error(errs, "limit", "not an integer from 1 to 500");
    }
    if (after && !lab_uuid_valid(after))
        lab_query_error(errs, "after", "not a cursor (the \"next\" of a page)");
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
