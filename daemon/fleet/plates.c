/* A campaign's plates in the lab's shared queue (plates.h). The campaign engine sits below the
 * fleet: it gets plain hooks, and the ends of its plate runs through lab_campaigns_run_changed,
 * the same function its own scheduler's runs go through, so a plate this cell ran itself is not
 * counted twice (its plate is over by the time PostgreSQL tells). */
#include "daemon/fleet/plates.h"

#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How a plate run in the queue ended: the holder's labloop.runs row (its document carries the
 * readings); a run cancelled before any cell took it has none. */
static const char sql_ended[] =
    "SELECT q.id::text, coalesce(r.state, CASE q.state WHEN 'cancelled' THEN 'cancelled' "
    "ELSE 'failed' END), r.doc::text FROM labloop.queue q LEFT JOIN labloop.runs r "
    "ON r.id = q.id AND r.cell = q.cell "
    "WHERE q.id = ANY ($1::uuid[]) AND q.state IN ('finished', 'cancelled')";

typedef struct psub {
    lab_campaigns_queued_cb cb;
    void *arg;
} psub_t;

static void submit_done(void *arg, int status, bool replayed, const char *doc, const char *problems,
                        const char *msg)
{
    (void)replayed;
    psub_t *s = arg;
    char id[LAB_UUID_LEN + 1] = "";
    if (status == 0) {
        json_t *d = json_loads(doc ? doc : "", 0, NULL);
        snprintf(id, sizeof id, "%s", json_string_value(json_object_get(d, "id")) ?: "");
        json_decref(d);
        s->cb(s->arg, id[0] ? 0 : LAB_EDB, id, id[0] ? NULL : "the queue's answer has no id");
    } else {
        char why[600];
        snprintf(why, sizeof why, "%s%s%.400s", msg ? msg : lab_strerror(status),
                 problems ? ": " : "", problems ? problems : "");
        s->cb(s->arg, status, NULL, why);
    }
    free(s);
}

static void q_submit(void *ctx, const json_t *sub, const char *key, lab_campaigns_queued_cb cb,
                     void *arg)
{
    lab_plates_t *p = ctx;
    psub_t *s = LAB_NEW(psub_t);
    s->cb = cb;
    s->arg = arg;
    /* the queue knows three ways in; a campaign's plate comes the daemon's own HTTP-side way */
    lab_fleet_submit(p->f, sub, key, "http", "campaign", submit_done, s);
}

typedef struct pcancel {
    char run[LAB_UUID_LEN + 1];
    lab_campaigns_queued_cb cb;
    void *arg;
} pcancel_t;

static void cancel_done(void *arg, int status, json_t *rows, const char *msg)
{
    pcancel_t *k = arg;
    /* 'cancelled' also for a run that ended before: then its end is on its way */
    const char *st = json_string_value(json_array_get(json_array_get(rows, 0), 0));
    if (status == 0 && (!st || strcmp(st, "cancelled") != 0))
        status = LAB_ESTATE;
    if (status == 0)
        log_info("fleet", "campaign plate run=%s out of the lab's queue", k->run);
    else /* held by a live cell (cancel it there): it goes on */
        log_warn("fleet", "campaign plate run=%s stays in the lab's queue: %s", k->run,
                 msg ? msg : lab_strerror(status));
    if (status == LAB_EDB && msg && strstr(msg, ": cancel it there"))
        status = LAB_ESTATE;
    if (k->cb)
        k->cb(k->arg, status, k->run, msg);
    json_decref(rows);
    free(k);
}

static void q_cancel(void *ctx, const char *run, const char *reason, lab_campaigns_queued_cb cb,
                     void *arg)
{
    lab_plates_t *p = ctx;
    pcancel_t *k = LAB_NEW(pcancel_t);
    snprintf(k->run, sizeof k->run, "%s", run);
    k->cb = cb;
    k->arg = arg;
    const char *v[3] = {run, "campaign", reason};
    lab_fleet_query(p->f, "SELECT labloop.cancel_run($1::uuid, $2, $3)", 3, v, cancel_done, k);
}

void lab_plates_queue(lab_plates_t *p, lab_campaigns_queue_t *out)
{
    *out = (lab_campaigns_queue_t){q_submit, q_cancel, p};
}

static void ended(void *arg, int status, json_t *rows, const char *msg)
{
    lab_plates_t *p = arg;
    if (status != 0) { /* the next (re)connect asks again */
        log_warn("fleet", "cannot read the ends of campaign plate runs: %s",
                 msg ? msg : lab_strerror(status));
        return;
    }
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        p->ends++;
        lab_campaigns_run_changed(p->l, json_string_value(json_array_get(row, 0)),
                                  json_string_value(json_array_get(row, 1)),
                                  json_string_value(json_array_get(row, 2)));
    }
    json_decref(rows);
}

/* id: a run that ended somewhere in the lab; NULL: after a (re)connect, every plate waiting. */
static void on_done(void *ctx, const char *id)
{
    lab_plates_t *p = ctx;
    json_t *ids = lab_campaigns_queued_runs(p->l);
    size_t n = json_array_size(ids), i;
    json_t *x;
    bool ours = !id;
    json_array_foreach(ids, i, x) ours |= id && strcmp(json_string_value(x), id) == 0;
    if (!n || !ours) {
        json_decref(ids);
        return;
    }
    size_t cap = n * (LAB_UUID_LEN + 1) + 3, len = 0;
    char *arr = lab_malloc(cap);
    arr[len++] = '{';
    json_array_foreach(ids, i, x)
    {
        const char *s = id ? id : json_string_value(x);
        if (strlen(s) != LAB_UUID_LEN)
            continue;
        if (len > 1)
            arr[len++] = ',';
        memcpy(arr + len, s, LAB_UUID_LEN);
        len += LAB_UUID_LEN;
        if (id)
            break;
    }
    arr[len++] = '}';
    arr[len] = '\0';
    const char *v[1] = {arr};
    lab_fleet_query(p->f, sql_ended, 1, v, ended, p);
    free(arr);
    json_decref(ids);
}

void lab_plates_follow(lab_plates_t *p, lab_campaigns_t *l)
{
    p->l = l;
    lab_fleet_on_run_done(p->f, on_done, p);
}
