/* The cell's side of the lab's shared queue: one PostgreSQL connection (a lab_pq_link_t of
 * daemon/store/pq_link.h, as the outbox writer's: nothing blocks the loop), and a queue of jobs run
 * one after another on it: setup (LISTEN, reconcile), heartbeat, claim, fence, release, submission,
 * reads. A job is one or more statements; the claim keeps its transaction open across the local
 * commit, and since jobs do not overlap, nothing else runs inside it. Connection trouble drops the
 * connection (PostgreSQL rolls back an open claim) and reconnects with jittered backoff; the next
 * connection reconciles the runs claimed but not begun before it claims again. */
#include "daemon/fleet/fleet.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/fleet/local.h"
#include "daemon/model/run_states.h"
#include "daemon/model/workflow_rules.h"
#include "daemon/store/pg.h"
#include "daemon/store/pq_link.h"
#include "daemon/store/runs.h"
#include "daemon/store/workflows.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FL_RECONCILE_MAX 4096
#define FL_PARAMS 8

typedef enum fl_phase { PH_DOWN, PH_CONNECT, PH_READY } fl_phase_t;

typedef enum job_kind {
    J_LISTEN,
    J_RECONCILE,
    J_HEARTBEAT,
    J_CLAIM,
    J_FENCE,
    J_RELEASE,
    J_SUBMIT,
    J_READ,
    J_CANCELS,
} job_kind_t;

static const char *const job_names[] = {
    [J_LISTEN] = "listen", [J_RECONCILE] = "reconcile", [J_HEARTBEAT] = "heartbeat",
    [J_CLAIM] = "claim",   [J_FENCE] = "fence",         [J_RELEASE] = "release",
    [J_SUBMIT] = "submit", [J_READ] = "read",           [J_CANCELS] = "cancels",
};

typedef enum read_kind { R_CELLS, R_QUEUE, R_RUNS, R_RUN, R_SQL } read_kind_t;

typedef struct job {
    struct job *next;
    int64_t park_need;   /* a parked submission: the outbox seq of its workflow */
    uint64_t park_since; /* and since when it waits (loop ms) */
    job_kind_t kind;
    int step;
    /* J_FENCE: the run; J_RELEASE, J_RECONCILE: the runs */
    char id[LAB_UUID_LEN + 1];
    char (*ids)[LAB_UUID_LEN + 1];
    bool *held;
    int nids;
    /* J_CLAIM */
    int want;
    uint64_t t_claimed_ns;
    lab_claim_op_t *pending; /* the local insert in flight or done */
    bool local_done;         /* it committed; the job owns it */
    bool pending_sent;       /* handed to the store */
    json_t *missing;         /* [{name, version}]: workflow versions this cell has not stored */
    /* J_SUBMIT */
    char *sub, *key, *via, *by;
    char *new_id, *t0;
    lab_fleet_submit_cb scb;
    /* J_READ */
    read_kind_t rk;
    char *rstate, *rcell, *rafter;
    int rlimit;
    json_t *acc;
    char *sql, **vals; /* R_SQL: lab_fleet_query's statement and parameters */
    int nvals;
    lab_fleet_read_cb rcb;
    void *arg;
    /* J_HEARTBEAT */
    bool stopping;
} job_t;

struct lab_fleet {
    uv_loop_t *loop;
    const lab_config_t *cfg;
    const lab_clock_t *clock;
    lab_store_t *st;
    lab_instr_t *in;
    lab_sched_t *sched;
    char *conninfo, *cell, *site, *api;

    fl_phase_t phase;
    PGconn *conn;
    lab_pq_link_t *link;
    uv_timer_t beat;   /* heartbeat */
    uv_timer_t safety; /* a claim every lease s even without a NOTIFY */
    uv_timer_t grace;  /* lab_fleet_stop's deadline */
    uv_timer_t park;   /* submissions waiting for their workflow to reach PostgreSQL */
    job_t *parked;     /* those, oldest first */
    uv_idle_t kick;    /* claims asked for in one loop turn make one claim */
    int handles;       /* open uv handles and the link */

    job_t *cur;             /* the job whose statement is in flight, or whose claim waits */
    job_t *head, *tail;     /* jobs waiting */
    bool want_claim, ready; /* ready: reconciled since the last connect */
    bool beat_queued;
    bool reconcile_failed;
    int ops;       /* local store ops in flight */
    int holds;     /* of which holds: their runs are not in the scheduler yet */
    PGresult *res; /* the statement's result so far (first error, else last) */

    bool stopping, closing;
    void (*stop_cb)(void *arg);
    void *stop_arg;

    void (*done_fn)(void *ctx, const char *id); /* lab_fleet_on_run_done */
    void *done_ctx;

    lab_fleet_stats_t stats;
    char *last_error;
    double lat[LAB_FLEET_LAT_N];
    long nlat;
};

static void fl_ready_hook(lab_fleet_t *f);
static void fl_down(lab_fleet_t *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fl_next(lab_fleet_t *f);
static void job_result(lab_fleet_t *f, job_t *j, PGresult *r);
static void fl_finish(lab_fleet_t *f);

static void fl_on_kick(uv_idle_t *h)
{
    fl_next(h->data);
}

/* ---- jobs ---- */

static job_t *job_new(job_kind_t kind)
{
    job_t *j = LAB_NEW(job_t);
    j->kind = kind;
    return j;
}

static void job_free(job_t *j)
{
    if (!j)
        return;
    if (j->pending && (j->local_done || !j->pending_sent))
        lab_claim_op_free(j->pending);
    free(j->ids);
    free(j->held);
    free(j->sub);
    free(j->key);
    free(j->via);
    free(j->by);
    free(j->new_id);
    free(j->t0);
    free(j->rstate);
    free(j->rcell);
    free(j->rafter);
    json_decref(j->acc);
    json_decref(j->missing);
    free(j->sql);
    for (int i = 0; i < j->nvals; i++)
        free(j->vals[i]);
    free(j->vals);
    free(j);
}

static void job_push(lab_fleet_t *f, job_t *j, bool front)
{
    if (front) {
        j->next = f->head;
        f->head = j;
        if (!f->tail)
            f->tail = j;
    } else {
        j->next = NULL;
        if (f->tail)
            f->tail->next = j;
        else
            f->head = j;
        f->tail = j;
    }
    uv_idle_start(&f->kick, fl_on_kick);
}

/* A job that cannot be done now: answered (submit, read), kept for the next connection (fence,
 * release), or dropped (the others). */
static void job_fail(lab_fleet_t *f, job_t *j, int status, const char *msg, bool *keep)
{
    *keep = false;
    switch (j->kind) {
    case J_SUBMIT:
        j->scb(j->arg, status, false, NULL, NULL, msg);
        break;
    case J_READ:
        j->rcb(j->arg, status, NULL, msg);
        break;
    case J_FENCE:
    case J_RELEASE:
        *keep = !f->closing;
        break;
    case J_HEARTBEAT:
        f->beat_queued = false;
        break;
    default:
        break;
    }
}

/* ---- the connection ---- */

static void fl_set_error(lab_fleet_t *f, const char *msg)
{
    free(f->last_error);
    f->last_error = lab_strdup(msg);
}

/* The struct goes once its handles closed and no store op can come back. */
static void fl_maybe_free(lab_fleet_t *f)
{
    if (!f->closing || f->handles > 0 || f->ops > 0)
        return;
    void (*cb)(void *) = f->stop_cb;
    void *arg = f->stop_arg;
    free(f->conninfo);
    free(f->cell);
    free(f->site);
    free(f->api);
    free(f->last_error);
    free(f);
    if (cb)
        cb(arg);
}

static void fl_unref(lab_fleet_t *f)
{
    f->handles--;
    fl_maybe_free(f);
}

static void fl_handle_closed(uv_handle_t *h)
{
    fl_unref(h->data);
}

static void fl_down(lab_fleet_t *f, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    msg[strcspn(msg, "\n")] = '\0';
    fl_set_error(f, msg);
    log_warn("fleet", "down: %s", msg);
    lab_pq_link_drop(f->link);
    f->conn = NULL;
    f->phase = PH_DOWN;
    f->ready = false;
    f->stats.connected = false;
    if (f->res)
        PQclear(f->res);
    f->res = NULL;
    uv_timer_stop(&f->beat);
    /* the job in flight: a claim's transaction is rolled back by PostgreSQL (its pending runs are
     * reconciled on the next connection); a fence or a release is asked again */
    if (f->cur) {
        job_t *j = f->cur;
        f->cur = NULL;
        bool keep;
        job_fail(f, j, LAB_ECONN, "the connection to PostgreSQL was lost", &keep);
        if (keep) {
            j->step = 0;
            job_push(f, j, true);
        } else {
            job_free(j);
        }
    }
    for (job_t **pp = &f->head; *pp;) {
        job_t *j = *pp;
        bool keep;
        job_fail(f, j, LAB_ECONN, "no connection to PostgreSQL", &keep);
        if (keep) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        job_free(j);
    }
    f->tail = NULL;
    for (job_t *j = f->head; j; j = j->next)
        f->tail = j;
    if (f->stopping) {
        fl_finish(f);
        return;
    }
    lab_pq_link_retry(f->link);
}

static void fl_on_beat(uv_timer_t *t);

/* The link's side: its connect attempts, the connection it brought up, input, trouble. */
static void fl_link_connecting(void *ctx)
{
    lab_fleet_t *f = ctx;
    f->phase = PH_CONNECT;
}

static void fl_link_connected(void *ctx, PGconn *conn)
{
    lab_fleet_t *f = ctx;
    f->conn = conn;
    f->phase = PH_READY;
    f->stats.connects++;
    f->stats.connected = true;
    lab_pq_link_backoff_reset(f->link);
    log_info("fleet", "connected cell=%s", f->cell);
    /* first the cell's row (a claim needs it `up`), then LISTEN, then the runs held */
    f->beat_queued = false;
    f->reconcile_failed = false;
    fl_on_beat(&f->beat);
    job_push(f, job_new(J_LISTEN), false);
    job_push(f, job_new(J_RECONCILE), false);
    job_push(f, job_new(J_CANCELS), false);
    uv_timer_start(&f->beat, fl_on_beat, (uint64_t)f->cfg->lab_heartbeat_s * 1000,
                   (uint64_t)f->cfg->lab_heartbeat_s * 1000);
}

static bool fl_flush(lab_fleet_t *f)
{
    return lab_pq_link_flush(f->link);
}

/* Sends one statement of the current job; false when the connection went down instead. */
static bool fl_send(lab_fleet_t *f, const char *sql, int n, const char *const *vals)
{
    if (!PQsendQueryParams(f->conn, sql, n, NULL, vals, NULL, NULL, 0)) {
        fl_down(f, "send: %s", PQerrorMessage(f->conn));
        return false;
    }
    return fl_flush(f);
}

static void fl_claim_wanted(lab_fleet_t *f)
{
    f->want_claim = true;
    uv_idle_start(&f->kick, fl_on_kick);
}

static void fl_notifies(lab_fleet_t *f)
{
    PGnotify *n;
    while (f->conn && (n = PQnotifies(f->conn)) != NULL) {
        if (strcmp(n->relname, "labloop_queue") == 0)
            fl_claim_wanted(f);
        else if (strcmp(n->relname, "labloop_run_done") == 0 && f->done_fn)
            f->done_fn(f->done_ctx, n->extra);
        PQfreemem(n);
    }
}

static void fl_results(lab_fleet_t *f)
{
    PGconn *conn = f->conn;
    while (f->conn == conn && !PQisBusy(conn)) {
        PGresult *r = PQgetResult(conn);
        if (!r) {
            if (!f->cur)
                break;
            /* the statement is over: its first error, else its last result */
            job_t *j = f->cur;
            PGresult *res = f->res;
            f->res = NULL;
            job_result(f, j, res);
            if (res)
                PQclear(res);
            break;
        }
        if (f->res && PQresultStatus(f->res) == PGRES_FATAL_ERROR) {
            PQclear(r);
            continue;
        }
        if (f->res)
            PQclear(f->res);
        f->res = r;
    }
    if (f->conn == conn)
        fl_notifies(f);
    if (f->conn == conn && PQstatus(conn) == CONNECTION_BAD)
        fl_down(f, "connection lost: %s", PQerrorMessage(conn));
}

static void fl_link_io(void *ctx)
{
    lab_fleet_t *f = ctx;
    if (f->conn)
        fl_results(f);
}

static void fl_link_down(void *ctx, const char *why)
{
    fl_down(ctx, "%s", why);
}

static void fl_link_closed(void *ctx)
{
    fl_unref(ctx);
}

/* ---- capabilities and the cell's row ---- */

static json_t *fl_capabilities(lab_fleet_t *f)
{
    json_t *kinds = json_array(), *insts = json_array();
    int n = f->in ? lab_instr_count(f->in) : 0;
    for (int i = 0; i < n; i++) {
        json_t *d = lab_instr_doc(f->in, lab_instr_at(f->in, i), false);
        json_t *kind = json_object_get(d, "kind");
        bool seen = false;
        size_t k;
        json_t *v;
        json_array_foreach(kinds, k, v) seen |= json_equal(v, kind);
        if (json_is_string(kind) && !seen)
            json_array_append(kinds, kind);
        json_array_append_new(insts, json_pack("{s:O?,s:O?,s:O?}", "id", json_object_get(d, "id"),
                                               "kind", kind, "state", json_object_get(d, "state")));
        json_decref(d);
    }
    return json_pack("{s:o,s:o,s:i}", "kinds", kinds, "instruments", insts, "window",
                     LAB_SCHED_CLAIM_WINDOW);
}

static json_t *fl_queue_counts(lab_fleet_t *f)
{
    json_t *q = json_object();
    for (int s = 0; s < LAB_RUN_NSTATES; s++) {
        lab_run_state_t rs = (lab_run_state_t)s;
        if (lab_run_state_final(rs))
            continue;
        int n = lab_runs_count(f->st, lab_run_state_name(rs));
        if (n > 0)
            json_object_set_new(q, lab_run_state_name(rs), json_integer(n));
    }
    return q;
}

static void fl_on_beat(uv_timer_t *t)
{
    lab_fleet_t *f = t->data;
    if (f->phase != PH_READY || f->beat_queued || f->stopping)
        return;
    f->beat_queued = true;
    job_push(f, job_new(J_HEARTBEAT), false);
    /* a reconcile that failed (the schema was not there yet) is tried again with the beat */
    if (f->reconcile_failed) {
        f->reconcile_failed = false;
        job_push(f, job_new(J_RECONCILE), false);
        job_push(f, job_new(J_CANCELS), false);
    }
}

static void fl_on_safety(uv_timer_t *t)
{
    fl_claim_wanted(t->data);
}

/* ---- the statements of each job ---- */

/* caps_s: the capabilities as the stop saw them (the instruments close meanwhile), or NULL. */
static bool fl_heartbeat_send(lab_fleet_t *f, bool stopping, const char *caps_now)
{
    json_t *caps = caps_now ? NULL : fl_capabilities(f), *q = fl_queue_counts(f);
    char *caps_s = caps_now ? lab_strdup(caps_now) : json_dumps(caps, JSON_COMPACT),
         *q_s = json_dumps(q, JSON_COMPACT);
    char lease[32];
    snprintf(lease, sizeof lease, "%d", f->cfg->lab_lease_s);
    const char *vals[7] = {
        f->cell, f->site, caps_s, q_s, f->api, lease, stopping ? "stopping" : "up"};
    bool ok = fl_send(f,
                      "SELECT released FROM labloop.cell_heartbeat($1, $2, $3::jsonb, $4::jsonb, "
                      "$5, $6::float8, $7)",
                      7, vals);
    free(caps_s);
    free(q_s);
    json_decref(caps);
    json_decref(q);
    return ok;
}

static void ids_array(char *out, size_t cap, char (*ids)[LAB_UUID_LEN + 1], int n, const bool *skip)
{
    size_t len = 0;
    out[len++] = '{';
    for (int i = 0; i < n; i++) {
        if (skip && skip[i])
            continue;
        if (len > 1)
            out[len++] = ',';
        if (len + LAB_UUID_LEN + 3 > cap)
            break;
        memcpy(out + len, ids[i], strlen(ids[i]));
        len += strlen(ids[i]);
    }
    out[len++] = '}';
    out[len] = '\0';
}

/* Starts (step 0) or continues the job: sends its next statement. */
static void job_send(lab_fleet_t *f, job_t *j)
{
    char n_s[16];
    switch (j->kind) {
    case J_LISTEN:
        fl_send(f, j->step ? "LISTEN labloop_run_done" : "LISTEN labloop_queue", 0, NULL);
        return;
    case J_HEARTBEAT:
        fl_heartbeat_send(f, j->stopping, j->sub);
        return;
    case J_FENCE: {
        const char *v[2] = {j->id, f->cell};
        fl_send(f, "SELECT labloop.start_run($1::uuid, $2)", 2, v);
        return;
    }
    case J_CANCELS: {
        /* runs of this cell an operator cancelled in the lab while it was away (stranded), whose
         * end this cell has not written yet */
        const char *v[1] = {f->cell};
        fl_send(f,
                "SELECT q.id::text, coalesce(q.cancel_reason, 'cancelled in the lab') FROM "
                "labloop.queue q WHERE q.cell = $1 AND q.state = 'cancelled' AND NOT EXISTS "
                "(SELECT 1 FROM labloop.runs r WHERE r.id = q.id AND r.cell = $1 AND r.state IN "
                "('done', 'failed', 'cancelled', 'released'))",
                1, v);
        return;
    }
    case J_RELEASE:
    case J_RECONCILE: {
        size_t cap = (size_t)j->nids * (LAB_UUID_LEN + 1) + 3;
        char *arr = lab_malloc(cap);
        ids_array(arr, cap, j->ids, j->nids, NULL);
        const char *v[2] = {f->cell, arr};
        if (j->kind == J_RELEASE)
            fl_send(f, "SELECT labloop.release_runs($1, $2::uuid[])", 2, v);
        else
            fl_send(f,
                    "SELECT q.id::text, q.state, q.cell = $1 FROM labloop.queue q "
                    "WHERE q.id = ANY ($2::uuid[]) AND q.cell IS NOT NULL",
                    2, v);
        free(arr);
        return;
    }
    case J_CLAIM:
        if (j->step == 0) {
            fl_send(f, "BEGIN", 0, NULL);
        } else if (j->step == 1) {
            snprintf(n_s, sizeof n_s, "%d", j->want);
            const char *v[2] = {f->cell, n_s};
            fl_send(f,
                    "SELECT id::text, doc::text, via, submitted_by, "
                    "(extract(epoch FROM submitted_at) * 1000)::int8 "
                    "FROM labloop.claim_runs($1, $2::int)",
                    2, v);
        } else if (j->step == 3) { /* runs the local store would not take go back first */
            lab_claim_op_t *c = j->pending;
            int n = 0;
            char(*ids)[LAB_UUID_LEN + 1] = lab_calloc((size_t)(c->n + j->nids) + 1, sizeof *ids);
            for (int i = 0; i < c->n; i++)
                if (c->skip[i])
                    snprintf(ids[n++], LAB_UUID_LEN + 1, "%s", c->ids[i]);
            for (int i = 0; i < j->nids; i++)
                memcpy(ids[n++], j->ids[i], LAB_UUID_LEN + 1);
            size_t cap = (size_t)n * (LAB_UUID_LEN + 1) + 3;
            char *arr = lab_malloc(cap);
            ids_array(arr, cap, ids, n, NULL);
            const char *v[2] = {f->cell, arr};
            fl_send(f, "SELECT labloop.release_runs($1, $2::uuid[])", 2, v);
            free(arr);
            free(ids);
        } else if (j->step == 6) {
            char *m = json_dumps(j->missing, JSON_COMPACT);
            const char *v[1] = {m};
            fl_send(f,
                    "SELECT DISTINCT ON (w.name, w.version) w.name, w.version, w.doc::text "
                    "FROM labloop.workflows w JOIN jsonb_to_recordset($1::jsonb) AS m(name text, "
                    "version int) ON w.name = m.name AND w.version = m.version "
                    "ORDER BY w.name, w.version, w.created_at",
                    1, v);
            free(m);
        } else if (j->step == 4) {
            fl_send(f, "COMMIT", 0, NULL);
        } else {
            fl_send(f, "ROLLBACK", 0, NULL);
        }
        return;
    case J_SUBMIT:
        if (j->step == 0) {
            const char *v[4] = {j->sub, j->key, j->via, j->by};
            fl_send(f,
                    "SELECT labloop.submit_run($1::jsonb, $2, $3, $4)::text, "
                    "(extract(epoch FROM now()) * 1000000)::int8::text",
                    4, v);
        } else {
            const char *v[2] = {j->new_id, j->t0};
            fl_send(f,
                    "SELECT doc::text, state, cell, via, submitted_by, "
                    "(extract(epoch FROM submitted_at) * 1000)::int8, "
                    "(extract(epoch FROM submitted_at) * 1000000)::int8 < $2::int8 "
                    "FROM labloop.queue WHERE id = $1::uuid",
                    2, v);
        }
        return;
    case J_READ: {
        if (j->rk == R_CELLS) {
            fl_send(f,
                    "SELECT coalesce(json_agg(json_build_object('cell', cell, 'site', site, "
                    "'state', state, 'heartbeat_age_s', round(heartbeat_age_s::numeric, 3), "
                    "'expired', expired, 'queue', queue, 'instruments', "
                    "coalesce(capabilities->'instruments', '[]'), 'kinds', "
                    "coalesce(capabilities->'kinds', '[]'), 'api', api, 'claimed', claimed, "
                    "'started', started) ORDER BY cell), '[]')::text FROM labloop.lab_cells",
                    0, NULL);
        } else if (j->rk == R_SQL) {
            fl_send(f, j->sql, j->nvals, (const char *const *)j->vals);
        } else if (j->rk == R_QUEUE) {
            fl_send(f,
                    "SELECT coalesce(json_object_agg(state, n), '{}')::text FROM (SELECT state, "
                    "count(*) n FROM labloop.queue GROUP BY state) s",
                    0, NULL);
        } else if (j->rk == R_RUN) {
            /* the holder's newest document when it wrote one, else the queue's row */
            const char *v[1] = {j->rafter};
            fl_send(f,
                    "SELECT q.doc::text, q.state, q.cell, q.via, q.submitted_by, "
                    "(extract(epoch FROM q.submitted_at) * 1000)::int8, r.doc::text "
                    "FROM labloop.queue q LEFT JOIN labloop.runs r ON r.id = q.id AND r.cell = "
                    "q.cell WHERE q.id = $1::uuid",
                    1, v);
        } else {
            snprintf(n_s, sizeof n_s, "%d", j->rlimit + 1);
            const char *v[4] = {j->rstate, j->rcell, j->rafter, n_s};
            fl_send(f,
                    "SELECT json_build_object('id', r.id, 'workflow', r.workflow, 'priority', "
                    "r.priority, 'state', r.state, 'cell', r.cell, 'local_state', "
                    "r.local_state, 'via', r.via, 'submitted_by', r.submitted_by, "
                    "'submitted_at', r.submitted_at, 'claimed_at', r.claimed_at, 'started_at', "
                    "r.started_at, 'finished_at', r.finished_at, 'claims', r.claims, "
                    "'stranded', coalesce(r.stranded, false), 'stranded_reason', "
                    "r.stranded_reason, 'cancel_reason', r.cancel_reason, 'doc', r.doc)::text, "
                    "r.id::text FROM labloop.lab_runs r "
                    "WHERE ($1::text IS NULL OR r.state = $1) AND ($2::text IS NULL OR r.cell = "
                    "$2) AND ($3::uuid IS NULL OR (r.submitted_at, r.id) > (SELECT "
                    "q.submitted_at, q.id FROM labloop.queue q WHERE q.id = $3::uuid)) "
                    "ORDER BY r.submitted_at, r.id LIMIT $4::int",
                    4, v);
        }
        return;
    }
    }
}

/* ---- claims ---- */

static void claim_lat(lab_fleet_t *f, double ms)
{
    f->lat[f->nlat % LAB_FLEET_LAT_N] = ms;
    f->nlat++;
    if (ms > f->stats.lat_max_ms)
        f->stats.lat_max_ms = ms;
}

static void hold_done(lab_store_op_t *op, int status)
{
    lab_claim_op_t *c = (lab_claim_op_t *)op;
    lab_fleet_t *f = c->arg;
    f->ops--;
    f->holds--;
    if (status != 0) {
        log_error("fleet",
                  "%d claimed runs could not be marked held: %s (reconciled on the next "
                  "connection)",
                  c->n, lab_strerror(status));
    } else if (!f->closing) {
        for (int i = 0; i < c->n; i++) {
            if (c->skip[i])
                continue;
            f->stats.claims++;
            /* a run the scheduler took up at start is there already */
            if (!f->stopping && lab_sched_run_started(f->sched, c->ids[i]) == LAB_ENOTFOUND)
                lab_sched_submitted(f->sched, c->docs[i]);
        }
    }
    lab_claim_op_free(c);
    if (f->closing) {
        fl_maybe_free(f);
        return;
    }
    fl_claim_wanted(f);
}

/* PostgreSQL committed the claim: the runs count, and go to the scheduler once held. */
static void claim_hold(lab_fleet_t *f, lab_claim_op_t *pending)
{
    lab_claim_op_t *h = lab_claim_op_new(LAB_CLAIM_HOLD, lab_clock_now_ms(f->clock));
    for (int i = 0; i < pending->n; i++)
        if (!pending->skip[i])
            lab_claim_op_add(h, pending->ids[i], pending->docs[i]);
    h->arg = f;
    h->op.done = hold_done;
    f->ops++;
    f->holds++;
    lab_store_submit(f->st, &h->op);
}

static void drop_done(lab_store_op_t *op, int status)
{
    lab_claim_op_t *c = (lab_claim_op_t *)op;
    lab_fleet_t *f = c->arg;
    f->ops--;
    if (status != 0)
        log_error("fleet", "pending claims could not be dropped: %s", lab_strerror(status));
    lab_claim_op_free(c);
    fl_maybe_free(f);
}

static void claim_drop(lab_fleet_t *f, char (*ids)[LAB_UUID_LEN + 1], char **sids, int n)
{
    if (n <= 0)
        return;
    lab_claim_op_t *d = lab_claim_op_new(LAB_CLAIM_DROP, lab_clock_now_ms(f->clock));
    for (int i = 0; i < n; i++)
        lab_claim_op_add(d, ids ? ids[i] : sids[i], NULL);
    d->arg = f;
    d->op.done = drop_done;
    f->ops++;
    lab_store_submit(f->st, &d->op);
}

static void job_end(lab_fleet_t *f, job_t *j)
{
    if (f->cur == j)
        f->cur = NULL;
    job_free(j);
    uv_idle_start(&f->kick, fl_on_kick);
}

/* The claimed runs are in the local store (or not): COMMIT, or give back what it would not take
 * first, or ROLLBACK. A claim whose connection went down before this point was rolled back by
 * PostgreSQL: its pending runs go. */
static void pending_done(lab_store_op_t *op, int status)
{
    lab_claim_op_t *c = (lab_claim_op_t *)op;
    lab_fleet_t *f = c->arg;
    f->ops--;
    job_t *j = f->cur;
    if (!j || j->kind != J_CLAIM || j->pending != c) {
        if (status == 0) {
            char **keep = lab_calloc((size_t)c->n + 1, sizeof *keep);
            int n = 0;
            for (int i = 0; i < c->n; i++)
                if (!c->skip[i])
                    keep[n++] = c->ids[i];
            claim_drop(f, NULL, keep, n);
            free(keep);
        }
        lab_claim_op_free(c);
        fl_maybe_free(f);
        return;
    }
    j->local_done = true;
    if (status != 0) {
        log_error("fleet", "%d claimed runs not stored: %s; the claim is rolled back", c->n,
                  lab_strerror(status));
        j->step = 5;
    } else {
        claim_lat(f, (double)(uv_hrtime() - j->t_claimed_ns) / 1e6);
        bool skipped = j->nids > 0;
        for (int i = 0; i < c->n; i++)
            skipped |= c->skip[i];
        j->step = skipped ? 3 : 4;
    }
    if (f->phase == PH_READY)
        job_send(f, j);
}

/* The claimed runs into the local store as pending (after the workflows they follow). */
static void claim_store(lab_fleet_t *f, job_t *j)
{
    j->step = 2;
    j->pending_sent = true;
    f->ops++;
    lab_store_submit(f->st, &j->pending->op);
}

/* A claimed run follows a workflow version this cell may not have stored (it was stored on
 * another cell): noted, to be fetched from labloop.workflows before the runs are stored. */
static void claim_need_workflow(lab_fleet_t *f, job_t *j, const json_t *sub)
{
    const char *name = json_string_value(json_object_get(sub, "workflow"));
    json_int_t version = json_integer_value(json_object_get(sub, "workflow_version"));
    char *doc = NULL;
    if (!name || version < 1 || lab_workflows_get(f->st, name, (int)version, &doc) == 0) {
        free(doc);
        return;
    }
    if (!j->missing)
        j->missing = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(j->missing, i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "name")), name) == 0 &&
            json_integer_value(json_object_get(m, "version")) == version)
            return;
    }
    json_array_append_new(j->missing, json_pack("{s:s,s:I}", "name", name, "version", version));
}

static void wf_put_done(lab_store_op_t *op, int status)
{
    lab_wf_put_t *put = (lab_wf_put_t *)op;
    lab_fleet_t *f = put->arg;
    f->ops--;
    if (status != 0)
        log_error("fleet", "workflow %s version %d from the lab not stored: %s", put->name,
                  put->version, lab_strerror(status));
    else if (put->created)
        log_info("fleet", "workflow %s version %d stored from the lab", put->name, put->version);
    lab_wf_put_free(put);
    fl_maybe_free(f);
}

/* The workflow versions from labloop.workflows into the local store, as the same versions; a
 * version stored here with other steps is refused (LAB_ECONFLICT, logged) and the runs that
 * follow it wait as the scheduler says. */
static void claim_workflows(lab_fleet_t *f, PGresult *r)
{
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *wf = json_loads(PQgetvalue(r, i, 2), 0, NULL);
        if (!json_is_object(wf)) {
            json_decref(wf);
            continue;
        }
        lab_wf_put_t *put = lab_wf_put_new();
        put->name = lab_strdup(PQgetvalue(r, i, 0));
        put->version = (int)strtol(PQgetvalue(r, i, 1), NULL, 10);
        put->canon = lab_workflow_canonical(wf);
        put->ts_ms = lab_clock_now_ms(f->clock);
        put->arg = f;
        put->op.done = wf_put_done;
        json_decref(wf);
        f->ops++;
        lab_store_submit(f->st, &put->op);
    }
}

/* labloop.claim_runs answered: the runs into the local store as pending. */
static void claim_rows(lab_fleet_t *f, job_t *j, PGresult *r)
{
    int n = PQntuples(r);
    if (n == 0) {
        j->step = 5; /* nothing to commit */
        f->want_claim = false;
        job_send(f, j);
        return;
    }
    j->t_claimed_ns = uv_hrtime();
    int64_t now = lab_clock_now_ms(f->clock);
    lab_claim_op_t *c = lab_claim_op_new(LAB_CLAIM_PENDING, now);
    j->ids = lab_calloc((size_t)n, sizeof *j->ids);
    for (int i = 0; i < n; i++) {
        const char *id = PQgetvalue(r, i, 0);
        json_t *sub = json_loads(PQgetvalue(r, i, 1), 0, NULL);
        if (!json_is_object(sub) || !lab_uuid_valid(id)) {
            /* given back before COMMIT (the release step), never stored here */
            log_error("fleet", "claimed run %.36s has no readable document: given back", id);
            if (lab_uuid_valid(id))
                snprintf(j->ids[j->nids++], LAB_UUID_LEN + 1, "%s", id);
            json_decref(sub);
            continue;
        }
        int64_t at = strtoll(PQgetvalue(r, i, 4), NULL, 10);
        json_t *doc =
            lab_run_new_doc(sub, id, PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), at > 0 ? at : now);
        json_object_set_new(doc, "cell", json_string(f->cell));
        char *text = json_dumps(doc, JSON_COMPACT);
        lab_claim_op_add(c, id, text);
        claim_need_workflow(f, j, sub);
        free(text);
        json_decref(doc);
        json_decref(sub);
    }
    c->arg = f;
    c->op.done = pending_done;
    j->pending = c;
    f->stats.claim_batches++;
    if (n < j->want)
        f->want_claim = false; /* the queue has nothing more for this cell now */
    if (j->missing) {
        j->step = 6; /* the workflow versions first, from PostgreSQL */
        job_send(f, j);
        return;
    }
    claim_store(f, j);
}

static void claim_result(lab_fleet_t *f, job_t *j, PGresult *r, bool ok)
{
    switch (j->step) {
    case 0: /* BEGIN */
        if (!ok) {
            f->want_claim = false;
            break;
        }
        j->step = 1;
        job_send(f, j);
        return;
    case 1: /* claim_runs */
        if (!ok) {
            f->want_claim = false; /* a NOTIFY or the safety timer tries again, not a loop */
            j->step = 5;
            job_send(f, j);
            return;
        }
        claim_rows(f, j, r);
        return;
    case 6: /* the workflow versions this cell lacked (none found: the runs wait for them) */
        if (ok)
            claim_workflows(f, r);
        claim_store(f, j);
        return;
    case 3: /* release of what the local store would not take */
        j->step = ok ? 4 : 5;
        job_send(f, j);
        return;
    case 4: /* COMMIT: the claim counts */
        if (ok) {
            lab_claim_op_t *c = j->pending;
            claim_hold(f, c);
        } else {
            /* the transaction is gone: nothing of it holds */
            lab_claim_op_t *c = j->pending;
            char **sids = lab_calloc((size_t)c->n + 1, sizeof *sids);
            for (int i = 0; i < c->n; i++)
                sids[i] = c->ids[i];
            claim_drop(f, NULL, sids, c->n);
            free(sids);
        }
        break;
    default: /* ROLLBACK */
        if (j->pending) {
            lab_claim_op_t *c = j->pending;
            char **sids = lab_calloc((size_t)c->n + 1, sizeof *sids);
            for (int i = 0; i < c->n; i++)
                sids[i] = c->ids[i];
            claim_drop(f, NULL, sids, c->n);
            free(sids);
        }
        break;
    }
    job_end(f, j);
}

/* ---- reconcile: the runs claimed and not begun, against labloop.queue ---- */

static void cancel_logged(void *arg, int status, const char *doc, const char *msg)
{
    (void)arg;
    (void)doc;
    if (status != 0)
        log_error("fleet", "a run cancelled in the lab was not cancelled here: %s",
                  msg ? msg : lab_strerror(status));
}

/* Runs an operator cancelled in the lab's queue while this cell was lost: the cell honours it on
 * its return, as it would a cancel asked of it (a step in flight ends at its next boundary). */
static void cancels_result(lab_fleet_t *f, PGresult *r)
{
    for (int i = 0; i < PQntuples(r); i++) {
        const char *id = PQgetvalue(r, i, 0);
        if (lab_sched_run_started(f->sched, id) == LAB_ENOTFOUND)
            continue;
        log_warn("fleet", "run=%s: cancelled in the lab's queue while this cell was away (%s)", id,
                 PQgetvalue(r, i, 1));
        lab_sched_cancel(f->sched, id, "lab", PQgetvalue(r, i, 1), cancel_logged, NULL);
    }
}

static void reconcile_result(lab_fleet_t *f, job_t *j, PGresult *r)
{
    int n = PQntuples(r);
    char(*drop)[LAB_UUID_LEN + 1] = lab_calloc((size_t)j->nids + 1, sizeof *drop);
    int ndrop = 0;
    lab_claim_op_t *hold = lab_claim_op_new(LAB_CLAIM_HOLD, lab_clock_now_ms(f->clock));
    for (int i = 0; i < j->nids; i++) {
        bool ours = false;
        for (int k = 0; k < n; k++)
            if (strcmp(PQgetvalue(r, k, 0), j->ids[i]) == 0) {
                const char *st = PQgetvalue(r, k, 1);
                ours = strcmp(PQgetvalue(r, k, 2), "t") == 0 &&
                       (strcmp(st, "claimed") == 0 || strcmp(st, "started") == 0);
            }
        int known = lab_sched_run_started(f->sched, j->ids[i]);
        if (ours) {
            if (!j->held[i]) {
                char *doc = NULL;
                if (lab_runs_get(f->st, j->ids[i], &doc) == 0)
                    lab_claim_op_add(hold, j->ids[i], doc);
                free(doc);
            } else if (known == LAB_ENOTFOUND) {
                char *doc = NULL;
                if (lab_runs_get(f->st, j->ids[i], &doc) == 0)
                    lab_sched_submitted(f->sched, doc);
                free(doc);
            }
            continue;
        }
        /* the lab's queue has given it to another cell, or took it back */
        if (known == LAB_ENOTFOUND) {
            memcpy(drop[ndrop++], j->ids[i], LAB_UUID_LEN + 1);
        } else if (lab_sched_release(f->sched, j->ids[i],
                                     "the lab's queue gave this run to another cell while this "
                                     "cell was away") == 0) {
            f->stats.released++;
        }
    }
    if (ndrop)
        claim_drop(f, drop, NULL, ndrop);
    free(drop);
    if (hold->n) {
        hold->arg = f;
        hold->op.done = hold_done;
        f->ops++;
        f->holds++;
        lab_store_submit(f->st, &hold->op);
    } else {
        lab_claim_op_free(hold);
    }
    log_info("fleet", "reconciled %d claimed runs not begun (%d were not this cell's any more)",
             j->nids, ndrop);
}

/* ---- every job's answer ---- */

static void job_result(lab_fleet_t *f, job_t *j, PGresult *r)
{
    ExecStatusType es = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    bool ok = es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK;
    const char *err = r ? PQresultErrorMessage(r) : "no result";
    const char *sqlstate = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!ok && j->kind != J_SUBMIT)
        log_warn("fleet", "%s: %.*s", job_names[j->kind], (int)strcspn(err, "\n"), err);
    switch (j->kind) {
    case J_CLAIM:
        claim_result(f, j, r, ok);
        return;
    case J_LISTEN:
        if (ok && j->step == 0 && f->done_fn) { /* the ends of runs, for campaigns */
            j->step = 1;
            job_send(f, j);
            return;
        }
        break;
    case J_RECONCILE:
        if (ok)
            reconcile_result(f, j, r);
        f->ready = ok;
        f->reconcile_failed = !ok;
        if (ok) {
            lab_sched_replan(f->sched); /* runs waiting on the fence ask again */
            fl_claim_wanted(f);
            fl_ready_hook(f);
        }
        break;
    case J_HEARTBEAT:
        f->beat_queued = false;
        if (ok) {
            f->stats.heartbeats++;
            long n = PQntuples(r) ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
            if (n > 0) {
                f->stats.lost_released += n;
                log_warn("fleet", "%ld runs of lost cells went back to the lab's queue", n);
            }
        }
        break;
    case J_FENCE: {
        int st = !ok ? LAB_EDB : strcmp(PQgetvalue(r, 0, 0), "t") == 0 ? 0 : LAB_ESTATE;
        if (st == 0)
            f->stats.fence_ok++;
        else if (st == LAB_ESTATE) {
            f->stats.fence_refused++;
            f->stats.released++;
            log_warn("fleet", "run=%s: PostgreSQL says this cell no longer holds it", j->id);
        }
        lab_sched_gate_open(f->sched, j->id, st);
        break;
    }
    case J_RELEASE:
        break;
    case J_CANCELS:
        if (ok)
            cancels_result(f, r);
        break;
    case J_SUBMIT:
        if (!ok) {
            /* 42883/42P01/3F000: the lab's schema is not (yet) there: a cell that starts on
             * a new database can be connected before its writer's migrations are done */
            bool unset =
                sqlstate && (strcmp(sqlstate, "42883") == 0 || strcmp(sqlstate, "42P01") == 0 ||
                             strcmp(sqlstate, "3F000") == 0);
            int st = sqlstate && strcmp(sqlstate, "22023") == 0   ? LAB_EINVAL
                     : sqlstate && strcmp(sqlstate, "23505") == 0 ? LAB_ECONFLICT
                     : unset                                      ? LAB_ESTATE
                                                                  : LAB_EDB;
            const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
            const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
            j->scb(j->arg, st, false, NULL, st == LAB_EINVAL ? detail : NULL,
                   msg ? msg : lab_strerror(st));
            break;
        }
        if (j->step == 0) {
            j->new_id = lab_strdup(PQgetvalue(r, 0, 0));
            j->t0 = lab_strdup(PQgetvalue(r, 0, 1));
            j->step = 1;
            job_send(f, j);
            return;
        }
        if (PQntuples(r) != 1) {
            j->scb(j->arg, LAB_EDB, false, NULL, NULL, "the queue row went away");
            break;
        }
        {
            json_t *sub = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
            int64_t at = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
            json_t *doc = lab_run_new_doc(sub ? sub : json_object(), j->new_id, PQgetvalue(r, 0, 3),
                                          PQgetvalue(r, 0, 4), at);
            json_object_set_new(doc, "lab_state", json_string(PQgetvalue(r, 0, 1)));
            if (!PQgetisnull(r, 0, 2))
                json_object_set_new(doc, "cell", json_string(PQgetvalue(r, 0, 2)));
            char *text = json_dumps(doc, JSON_COMPACT);
            bool replayed = strcmp(PQgetvalue(r, 0, 6), "t") == 0;
            j->scb(j->arg, 0, replayed, text, NULL, NULL);
            free(text);
            json_decref(doc);
            json_decref(sub);
        }
        break;
    case J_READ:
        if (!ok) {
            j->rcb(j->arg, LAB_EDB, NULL, err);
            break;
        }
        if (j->rk == R_SQL) {
            json_t *rows = json_array();
            for (int i = 0; i < PQntuples(r); i++) {
                json_t *row = json_array();
                for (int k = 0; k < PQnfields(r); k++)
                    json_array_append_new(
                        row, PQgetisnull(r, i, k) ? json_null() : json_string(PQgetvalue(r, i, k)));
                json_array_append_new(rows, row);
            }
            j->rcb(j->arg, 0, rows, NULL);
            break;
        }
        if (j->rk == R_CELLS) {
            json_object_set_new(j->acc, "cells", json_loads(PQgetvalue(r, 0, 0), 0, NULL));
            j->rk = R_QUEUE;
            job_send(f, j);
            return;
        }
        if (j->rk == R_RUN) {
            if (PQntuples(r) != 1) {
                j->rcb(j->arg, LAB_ENOTFOUND, NULL, "no such run in the lab's queue");
                break;
            }
            json_t *doc = NULL;
            if (!PQgetisnull(r, 0, 6))
                doc = json_loads(PQgetvalue(r, 0, 6), 0, NULL);
            if (!json_is_object(doc)) {
                json_decref(doc);
                json_t *sub = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
                int64_t at = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
                doc = lab_run_new_doc(json_is_object(sub) ? sub : json_object(), j->rafter,
                                      PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4), at);
                json_decref(sub);
            }
            json_object_set_new(doc, "lab_state", json_string(PQgetvalue(r, 0, 1)));
            if (!PQgetisnull(r, 0, 2))
                json_object_set_new(doc, "cell", json_string(PQgetvalue(r, 0, 2)));
            j->rcb(j->arg, 0, doc, NULL);
            break;
        }
        if (j->rk == R_QUEUE) {
            json_object_set_new(j->acc, "queue", json_loads(PQgetvalue(r, 0, 0), 0, NULL));
        } else {
            json_t *items = json_array();
            int n = PQntuples(r);
            for (int i = 0; i < n && i < j->rlimit; i++)
                json_array_append_new(items, json_loads(PQgetvalue(r, i, 0), 0, NULL));
            json_object_set_new(j->acc, "items", items);
            if (n > j->rlimit && j->rlimit > 0)
                json_object_set_new(j->acc, "next", json_string(PQgetvalue(r, j->rlimit - 1, 1)));
        }
        j->rcb(j->arg, 0, json_incref(j->acc), NULL);
        break;
    }
    job_end(f, j);
}

/* The next job, when none is in flight: those waiting first, then a claim if one is wanted. */
static void fl_next(lab_fleet_t *f)
{
    uv_idle_stop(&f->kick);
    if (f->phase != PH_READY || f->cur || f->closing)
        return;
    job_t *j = f->head;
    if (j) {
        /* before the reconcile only what prepares it may run, and submissions and reads */
        f->head = j->next;
        if (!f->head)
            f->tail = NULL;
        j->next = NULL;
    } else if (f->want_claim && f->ready && !f->stopping && f->holds == 0) {
        /* (a claim's runs being held are not in the scheduler's count yet: wait for them) */
        int room = lab_sched_room(f->sched);
        if (room <= 0) {
            f->want_claim = false;
            return;
        }
        j = job_new(J_CLAIM);
        j->want = room;
    } else {
        return;
    }
    if (j->kind == J_RECONCILE) {
        j->ids = lab_calloc(FL_RECONCILE_MAX, sizeof *j->ids);
        j->held = lab_calloc(FL_RECONCILE_MAX, sizeof *j->held);
        j->nids = lab_claims_not_begun(f->st, j->ids, j->held, FL_RECONCILE_MAX);
        if (j->nids <= 0) {
            j->nids = 0;
            f->ready = true;
            job_free(j);
            lab_sched_replan(f->sched);
            fl_claim_wanted(f);
            fl_ready_hook(f);
            return;
        }
    }
    f->cur = j;
    job_send(f, j);
}

/* ---- the scheduler's side ---- */

/* The fence: a run claimed from the lab's queue starts only once PostgreSQL confirmed that this
 * cell still holds it; a local run passes. */
static int fl_gate(void *ctx, const char *id)
{
    lab_fleet_t *f = ctx;
    if (lab_claim_get(f->st, id) != 1)
        return 0;
    job_t *j = job_new(J_FENCE);
    snprintf(j->id, sizeof j->id, "%s", id);
    job_push(f, j, false);
    return 1;
}

/* A run that leaves the window or ends makes room: claim again. */
static void fl_on_run(void *ctx, const char *id, const char *state, const char *doc)
{
    (void)id;
    (void)doc;
    lab_fleet_t *f = ctx;
    if (f->closing || f->stopping)
        return;
    int s = lab_run_state_parse(state);
    if (s == LAB_RUN_RUNNING || (s >= 0 && lab_run_state_final((lab_run_state_t)s)))
        fl_claim_wanted(f);
}

/* ---- start and stop ---- */

int lab_fleet_start(lab_fleet_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                    const lab_clock_t *clock, lab_store_t *st, lab_instr_t *in, lab_sched_t *sched)
{
    *out = NULL;
    if (!loop || !cfg || !st || !sched || !cfg->lab_shared_queue || !cfg->pg_enabled ||
        !cfg->pg_conninfo)
        return LAB_EINVAL;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->pg_conninfo, &perr);
    if (!opts) {
        PQfreemem(perr);
        return LAB_ECONFIG;
    }
    PQconninfoFree(opts);
    lab_fleet_t *f = LAB_NEW(lab_fleet_t);
    f->loop = loop;
    f->cfg = cfg;
    f->clock = clock;
    f->st = st;
    f->in = in;
    f->sched = sched;
    f->conninfo = lab_strdup(cfg->pg_conninfo);
    f->cell = lab_strdup(cfg->cell);
    f->site = lab_strdup(cfg->site);
    f->api = lab_strdup(cfg->http ? cfg->http : "");
    uv_timer_init(loop, &f->beat);
    uv_timer_init(loop, &f->safety);
    uv_timer_init(loop, &f->grace);
    uv_timer_init(loop, &f->park);
    uv_idle_init(loop, &f->kick);
    f->beat.data = f->safety.data = f->grace.data = f->kick.data = f->park.data = f;
    static const lab_pq_link_ops_t ops = {fl_link_connecting, fl_link_connected, fl_link_io,
                                          fl_link_down};
    /* Retries never wait longer than a heartbeat: a lease counts from PostgreSQL's start, so a
     * cell that waited longer after an outage would be found lost by the first cell back and lose
     * its claims. */
    double retry_max = cfg->pg_retry_max_s;
    if (retry_max > cfg->lab_heartbeat_s)
        retry_max = cfg->lab_heartbeat_s;
    lab_pq_link_cfg_t lc = {f->conninfo, "labloopd-fleet", "fleet", cfg->pg_connect_timeout_s,
                            retry_max};
    f->link = lab_pq_link_new(loop, &lc, &ops, f);
    f->handles = 6;
    uint64_t lease_ms = (uint64_t)cfg->lab_lease_s * 1000;
    uv_timer_start(&f->safety, fl_on_safety, lease_ms, lease_ms);
    lab_sched_set_gate(sched, fl_gate, f);
    lab_sched_on_run(sched, fl_on_run, f);
    *out = f;
    lab_pq_link_connect(f->link);
    return 0;
}

static void fl_finish(lab_fleet_t *f)
{
    if (f->closing)
        return;
    f->closing = true;
    lab_sched_set_gate(f->sched, NULL, NULL);
    lab_pq_link_close(f->link, fl_link_closed);
    f->conn = NULL;
    f->phase = PH_DOWN;
    if (f->res)
        PQclear(f->res);
    f->res = NULL;
    if (f->cur) {
        bool keep;
        job_fail(f, f->cur, LAB_ESHUTDOWN, "this cell is stopping", &keep);
        job_free(f->cur);
        f->cur = NULL;
    }
    while (f->head) {
        job_t *j = f->head;
        f->head = j->next;
        bool keep;
        job_fail(f, j, LAB_ESHUTDOWN, "this cell is stopping", &keep);
        job_free(j);
    }
    f->tail = NULL;
    while (f->parked) {
        job_t *j = f->parked;
        f->parked = j->next;
        bool keep;
        job_fail(f, j, LAB_ESHUTDOWN, "this cell is stopping", &keep);
        job_free(j);
    }
    uv_close((uv_handle_t *)&f->park, fl_handle_closed);
    uv_close((uv_handle_t *)&f->beat, fl_handle_closed);
    uv_close((uv_handle_t *)&f->safety, fl_handle_closed);
    uv_close((uv_handle_t *)&f->grace, fl_handle_closed);
    uv_close((uv_handle_t *)&f->kick, fl_handle_closed);
}

static void fl_on_grace(uv_timer_t *t)
{
    lab_fleet_t *f = t->data;
    log_warn("fleet", "stop: grace over");
    fl_finish(f);
}

/* The stop's last job is its heartbeat: once nothing is left to send (or the connection went)
 * the fleet closes. */
static void fl_stop_poll(uv_timer_t *t)
{
    lab_fleet_t *f = t->data;
    if (!f->closing && !f->cur && !f->head)
        fl_finish(f);
}

void lab_fleet_stop(lab_fleet_t *f, uint64_t grace_ms, void (*cb)(void *arg), void *arg)
{
    if (!f || f->stopping)
        return;
    f->stopping = true;
    f->stop_cb = cb;
    f->stop_arg = arg;
    f->want_claim = false;
    uv_timer_stop(&f->safety);
    uv_timer_stop(&f->beat);
    /* claimed runs that have not begun go back: released here, queued again in PostgreSQL
     * (release_runs touches only runs this cell holds as claimed, never a started one) */
    char(*ids)[LAB_UUID_LEN + 1] = lab_calloc(FL_RECONCILE_MAX, sizeof *ids);
    bool *held = lab_calloc(FL_RECONCILE_MAX, sizeof *held);
    int n = lab_claims_not_begun(f->st, ids, held, FL_RECONCILE_MAX);
    for (int i = 0; i < n; i++)
        if (lab_sched_release(f->sched, ids[i],
                              "this cell stopped before the run began: it went back to the "
                              "lab's queue") == 0)
            f->stats.released++;
    free(held);
    if (f->phase != PH_READY) {
        free(ids);
        fl_finish(f);
        return;
    }
    if (n > 0) {
        job_t *j = job_new(J_RELEASE);
        j->ids = ids;
        j->nids = n;
        job_push(f, j, false);
    } else {
        free(ids);
    }
    job_t *hb = job_new(J_HEARTBEAT);
    hb->stopping = true;
    /* the instruments close while the last jobs run: their capabilities are taken now */
    json_t *caps = fl_capabilities(f);
    hb->sub = json_dumps(caps, JSON_COMPACT);
    json_decref(caps);
    f->in = NULL;
    job_push(f, hb, false);
    log_info("fleet", "stopping: %d claimed runs not begun go back to the lab's queue", n);
    uv_timer_start(&f->grace, fl_on_grace, grace_ms, 0);
    uv_timer_start(&f->beat, fl_stop_poll, 10, 10);
}

/* ---- submissions and reads ---- */

typedef struct later {
    uv_timer_t t;
    lab_fleet_submit_cb scb;
    lab_fleet_read_cb rcb;
    void *arg;
} later_t;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_fire(uv_timer_t *t)
{
    later_t *l = t->data;
    if (l->scb)
        l->scb(l->arg, LAB_ECONN, false, NULL, NULL, "this cell has no connection to PostgreSQL");
    else
        l->rcb(l->arg, LAB_ECONN, NULL, "this cell has no connection to PostgreSQL");
    uv_close((uv_handle_t *)&l->t, later_closed);
}

/* LAB_ECONN answered on the next loop turn (never from inside the call). */
static void fl_refuse(lab_fleet_t *f, lab_fleet_submit_cb scb, lab_fleet_read_cb rcb, void *arg)
{
    later_t *l = LAB_NEW(later_t);
    l->scb = scb;
    l->rcb = rcb;
    l->arg = arg;
    uv_timer_init(f->loop, &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, later_fire, 0, 0);
}

/* Read your own writes: a workflow stored on this cell reaches PostgreSQL through the outbox a
 * moment after it was answered, and the lab's queue checks a run against the workflows it has. A
 * submission naming a workflow this cell stored waits until the writer delivered it, at most
 * FL_PARK_MS (then it goes anyway, and PostgreSQL says what it finds). */
#define FL_PARK_MS 10000
#define FL_PARK_POLL_MS 20

static bool fl_delivered(lab_fleet_t *f, int64_t need)
{
    int sink = lab_store_sink_find(f->st, LAB_PG_SINK_NAME);
    return sink < 0 || lab_store_sink_position(f->st, sink) >= need;
}

static void fl_on_park(uv_timer_t *t)
{
    lab_fleet_t *f = t->data;
    uint64_t now = uv_now(f->loop);
    job_t **p = &f->parked;
    while (*p) {
        job_t *j = *p;
        if (fl_delivered(f, j->park_need) || now - j->park_since >= FL_PARK_MS) {
            *p = j->next;
            j->next = NULL;
            job_push(f, j, false);
        } else {
            p = &j->next;
        }
    }
    if (!f->parked)
        uv_timer_stop(&f->park);
}

void lab_fleet_submit(lab_fleet_t *f, const json_t *sub, const char *key, const char *via,
                      const char *by, lab_fleet_submit_cb cb, void *arg)
{
    if (f->phase != PH_READY || f->stopping) {
        fl_refuse(f, cb, NULL, arg);
        return;
    }
    job_t *j = job_new(J_SUBMIT);
    j->sub = json_dumps(sub, JSON_COMPACT);
    j->key = key ? lab_strdup(key) : NULL;
    j->via = lab_strdup(via ? via : "http");
    j->by = lab_strdup(by ? by : "anonymous");
    j->scb = cb;
    j->arg = arg;
    const char *wf = json_string_value(json_object_get(sub, "workflow"));
    int64_t need = wf ? lab_workflows_seq(f->st, wf) : 0;
    if (need > 0 && !fl_delivered(f, need)) {
        j->park_need = need;
        j->park_since = uv_now(f->loop);
        job_t **tail = &f->parked;
        while (*tail)
            tail = &(*tail)->next;
        *tail = j;
        if (!uv_is_active((uv_handle_t *)&f->park))
            uv_timer_start(&f->park, fl_on_park, FL_PARK_POLL_MS, FL_PARK_POLL_MS);
        return;
    }
    job_push(f, j, false);
}

void lab_fleet_lab(lab_fleet_t *f, lab_fleet_read_cb cb, void *arg)
{
    if (f->phase != PH_READY || f->stopping) {
        fl_refuse(f, NULL, cb, arg);
        return;
    }
    job_t *j = job_new(J_READ);
    j->rk = R_CELLS;
    j->acc = json_pack("{s:s}", "site", f->site);
    j->rcb = cb;
    j->arg = arg;
    job_push(f, j, false);
}

void lab_fleet_lab_runs(lab_fleet_t *f, const char *state, const char *cell, int limit,
                        const char *after, lab_fleet_read_cb cb, void *arg)
{
    if (f->phase != PH_READY || f->stopping) {
        fl_refuse(f, NULL, cb, arg);
        return;
    }
    job_t *j = job_new(J_READ);
    j->rk = R_RUNS;
    j->rstate = state ? lab_strdup(state) : NULL;
    j->rcell = cell ? lab_strdup(cell) : NULL;
    j->rafter = after ? lab_strdup(after) : NULL;
    j->rlimit = limit > 0 ? limit : 100;
    j->acc = json_object();
    j->rcb = cb;
    j->arg = arg;
    job_push(f, j, false);
}

void lab_fleet_run(lab_fleet_t *f, const char *id, lab_fleet_read_cb cb, void *arg)
{
    if (f->phase != PH_READY || f->stopping) {
        fl_refuse(f, NULL, cb, arg);
        return;
    }
    job_t *j = job_new(J_READ);
    j->rk = R_RUN;
    j->rafter = lab_strdup(id);
    j->rcb = cb;
    j->arg = arg;
    job_push(f, j, false);
}

/* ---- for campaigns: the ends of runs, and statements of their own ---- */

/* Reconciled after a (re)connect: a run's end missed while down is asked for now. */
static void fl_ready_hook(lab_fleet_t *f)
{
    if (f->done_fn)
        f->done_fn(f->done_ctx, NULL);
}

void lab_fleet_on_run_done(lab_fleet_t *f, void (*fn)(void *ctx, const char *id), void *ctx)
{
    f->done_fn = fn;
    f->done_ctx = ctx;
}

void lab_fleet_query(lab_fleet_t *f, const char *sql, int n, const char *const *vals,
                     lab_fleet_read_cb cb, void *arg)
{
    if (f->phase != PH_READY || f->stopping) {
        fl_refuse(f, NULL, cb, arg);
        return;
    }
    job_t *j = job_new(J_READ);
    j->rk = R_SQL;
    j->sql = lab_strdup(sql);
    j->vals = lab_calloc((size_t)n + 1, sizeof *j->vals);
    for (j->nvals = 0; j->nvals < n; j->nvals++)
        j->vals[j->nvals] = vals[j->nvals] ? lab_strdup(vals[j->nvals]) : NULL;
    j->rcb = cb;
    j->arg = arg;
    job_push(f, j, false);
}

/* ---- stats ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void lab_fleet_stats(const lab_fleet_t *f, lab_fleet_stats_t *out)
{
    *out = f->stats;
    out->last_error = f->last_error;
    long n = f->nlat < LAB_FLEET_LAT_N ? f->nlat : LAB_FLEET_LAT_N;
    out->lat_n = f->nlat;
    if (n <= 0)
        return;
    double *v = lab_malloc(sizeof *v * (size_t)n);
    memcpy(v, f->lat, sizeof *v * (size_t)n);
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    out->lat_p50_ms = v[(size_t)((double)(n - 1) * 0.50)];
    out->lat_p99_ms = v[(size_t)ceil((double)(n - 1) * 0.99)];
    free(v);
}
