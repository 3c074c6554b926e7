/* The online scheduler: live runs, re-planning, dispatch, step programs, recovery. */
#include "daemon/sched/sched.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/text.h"
#include "daemon/model/run_states.h"
#include "daemon/model/step_states.h"
#include "daemon/sched/ops.h"
#include "daemon/store/runs.h"
#include "daemon/store/workflows.h"
#include "planner/planner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- steps ---- */

typedef struct sstep {
    /* borrowed from the run's workflow, whole */
    const char *name, *op, *on;
    const json_t *params; /* borrowed from the run's workflow */
    const json_t *policy; /* on_failure of the step, else of the workflow; NULL: pause */
    double nominal_s;     /* the longest duration */
    double plan_s;        /* what the planner reserves (an incubator's handling added) */
    double min_lag, max_lag;
    lab_step_state_t state;
    int attempts, interruptions;
    int inst;                 /* instrument index where it runs or ran; -1 */
    int64_t start_ms, end_ms; /* lab wall time, 0 when not yet */
    int64_t plan_start_ms, plan_end_ms;
    int plan_inst;
    int64_t plan_move_ms; /* the plate's move onto plan_inst, on plan_mover; 0: none */
    int plan_mover, plan_move_from;
    int cassette, slot; /* the incubator site it was given; 0 when none */
    bool holds_site;    /* and still holds it */
    int64_t loaded_ms;  /* checkpoint: the plate went in */
    bool unloaded;
    bool late_noted;
    double lag_s; /* start - previous end, seconds; < 0 when not started or first */
    bool lag_violated;
    char error[300];
} sstep_t;

typedef struct exec exec_t;

typedef struct srun {
    char id[LAB_UUID_LEN + 1];
    json_t *doc; /* the stored document, kept current */
    json_t *wf;  /* the workflow version it follows; NULL when not stored */
    char *plate; /* the whole barcode: up to LAB_RUN_PLATE_CHARS characters */
    sstep_t *st;
    int n;
    lab_run_state_t state;
    int prio;
    double score;
    int64_t created_ms, deadline_ms; /* deadline_ms < 0: none */
    int cur;                         /* the step running, or the next to run */
    exec_t *ex;
    char why[1024];    /* why it waits: a planner reason, or why it is paused */
    uint64_t why_hash; /* of the reason its document carries (0: none) */
    uint64_t age;      /* arrival order: the planner's last tie-break */
} srun_t;

/* A queued run beyond the look-ahead window: what ranks it, nothing more (its document stays
 * in the store until it enters the window). */
typedef struct cold {
    char id[LAB_UUID_LEN + 1];
    int prio;
    double score;
    int64_t deadline_ms; /* < 0: none */
    uint64_t age;
} cold_t;

/* A queued run whose workflow version is not stored. */
typedef struct orphan {
    cold_t c;
    char *wf;
    int version; /* 0: any */
} orphan_t;

/* A workflow version as the store holds it, shared by the runs that follow it. */
typedef struct wfc {
    char *name;
    int version;       /* 0: the newest */
    json_t *wf;        /* NULL: not stored when last asked */
    uint64_t asked_ms; /* loop time of the last question to the store */
} wfc_t;

/* One step being carried out: its program and where it is. */
struct exec {
    srun_t *r;
    int k;
    uint64_t gen;
    json_t *prog;
    size_t pc;
    int64_t wait_until_ms; /* 0: not waiting */
    int64_t deadline_ms;
    bool in_call, hold, cleanup;
    bool lag_pending; /* the lag is taken when the step's own first action starts */
    json_t *rows;     /* measurement payloads for the step's end */
    /* What the program did so far, for an operator ("tips picked up, aspirated 50 µL from
     * substrate"), and whether any of it was more than dry handling: a step that may not be
     * repeated is repeated by a policy only while nothing wet was done. */
    char done[400];
    bool wet;
    char hold_why[400]; /* while hold: why */
};

typedef struct call {
    lab_sched_t *s;
    char id[LAB_UUID_LEN + 1];
    uint64_t gen;
} call_t;

typedef struct pend {
    lab_sched_t *s;
    lab_sched_done_cb cb;
    void *arg;
} pend_t;

struct lab_sched {
    uv_loop_t *loop;
    const lab_config_t *cfg;
    const lab_clock_t *clock;
    lab_store_t *st;
    lab_instr_t *in;
    srun_t **runs;
    int nruns, cap;
    uv_timer_t tick;
    bool replan, in_tick, closing, tick_closed;
    int ops;   /* store ops in flight */
    int calls; /* driver calls in flight */
    void (*close_cb)(void *arg);
    void *close_arg;
    uint64_t gen;
    int nsites;
    unsigned char **site_used; /* per instrument: site i used (i = (cassette-1)*spc + slot-1) */
    int *site_n;
    json_t *history; /* timeline items of runs that are over, newest last */
    struct {
        lab_sched_run_cb cb;
        void *ctx;
    } on_run[4];
    int non_run;
    int64_t planned_at_ms;
    lab_sched_stats_t stats;
    /* the queue beyond the look-ahead window: a heap, best ranked first; and the queued runs
     * whose workflow is not stored (asked again every WF_ASK_MS) */
    cold_t *cold;
    orphan_t *orphans;
    int ncold, capcold, norphans, caporphans;
    uint64_t age, orphans_asked_ms, replanned_ms;
    wfc_t *wfc;
    int nwfc;
    bool *inst_up; /* per instrument: available at its last change of state */
};

#define HISTORY_MAX 2000
/* Queued runs planned in detail, first in the planner's order; the others wait in the queue
 * with that reason and enter as the runs ahead of them start. */
#define WINDOW 256
/* Loop ms between two plans that submissions alone ask for: a burst costs one plan. */
#define SUBMIT_GAP_MS 100
/* Loop ms before the store is asked again about a workflow that was not stored. */
#define WF_ASK_MS 1000
#define WFC_MAX 256

static void kick(lab_sched_t *s);
static void poke(lab_sched_t *s);
static void advance(lab_sched_t *s, exec_t *ex);
static void persist(lab_sched_t *s, srun_t *r, json_t *rows, pend_t *p);
static void apply_policy(lab_sched_t *s, srun_t *r, int k, bool unknown_outcome, const char *done);

static int64_t now_ms(const lab_sched_t *s)
{
    return lab_clock_now_ms(s->clock);
}

static void iso(int64_t ms, char buf[32])
{
    lab_time_iso(ms, buf);
}

static int ninst(const lab_sched_t *s)
{
    return s->in ? lab_instr_count(s->in) : 0; /* NULL once the instruments are gone */
}

static lab_driver_t *inst_at(lab_sched_t *s, int i)
{
    return i >= 0 && i < ninst(s) ? lab_instr_at(s->in, i) : NULL;
}

static int inst_index(lab_sched_t *s, const char *id)
{
    for (int i = 0; id && i < ninst(s); i++)
        if (strcmp(lab_driver_id(lab_instr_at(s->in, i)), id) == 0)
            return i;
    return -1;
}

static bool inst_available(lab_sched_t *s, int i)
{
    lab_driver_t *d = inst_at(s, i);
    if (!d)
        return false;
    lab_inst_state_t st = lab_driver_state(d);
    return st == LAB_INST_IDLE || st == LAB_INST_BUSY;
}

static bool on_matches(lab_sched_t *s, int i, const char *on)
{
    lab_driver_t *d = inst_at(s, i);
    return d && (strcmp(lab_driver_id(d), on) == 0 || strcmp(lab_driver_ops(d)->kind, on) == 0);
}

/* ---- sites (incubator slots) ---- */

static int site_capacity(lab_sched_t *s, int i)
{
    return s->site_n[i];
}

static bool site_take(lab_sched_t *s, int i, int *cassette, int *slot)
{
    for (int x = 0; x < site_capacity(s, i); x++)
        if (!s->site_used[i][x] && lab_driver_site_at(inst_at(s, i), x, cassette, slot)) {
            s->site_used[i][x] = 1;
            return true;
        }
    return false;
}

static void site_mark(lab_sched_t *s, int i, int cassette, int slot, unsigned char used)
{
    if (i < 0 || cassette <= 0 || slot <= 0)
        return;
    int x = lab_driver_site_index(inst_at(s, i), cassette, slot);
    if (x >= 0 && x < site_capacity(s, i))
        s->site_used[i][x] = used;
}

static void step_release_site(lab_sched_t *s, sstep_t *st)
{
    if (st->holds_site && (!st->loaded_ms || st->unloaded)) {
        site_mark(s, st->inst, st->cassette, st->slot, 0);
        st->holds_site = false;
    }
}

/* ---- the run document ---- */

static void put_time(json_t *o, const char *key, int64_t ms)
{
    if (ms > 0) {
        char b[32];
        iso(ms, b);
        json_object_set_new(o, key, json_string(b));
    } else {
        json_object_del(o, key);
    }
}

static int64_t get_time(const json_t *o, const char *key)
{
    int64_t ms = 0;
    const char *v = json_string_value(json_object_get(o, key));
    if (!v || lab_time_parse(v, &ms) != 0)
        return 0;
    return ms;
}

static long count_violations(const srun_t *r)
{
    long n = 0;
    for (int k = 0; k < r->n; k++)
        n += r->st[k].lag_violated;
    return n;
}

/* Why the run waits now: its step holds on an instrument, or r->why; "" when it does not. */
static const char *run_why(const srun_t *r)
{
    if (r->ex && r->ex->hold && r->ex->hold_why[0])
        return r->ex->hold_why;
    return r->why;
}

static uint64_t why_hash_of(const char *t)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a; 0 stays "no reason" */
    for (; *t; t++)
        h = (h ^ (unsigned char)*t) * 1099511628211ull;
    return h ? h : 1;
}

/* Puts the run's waiting reason into its document; true when it changed. */
static bool why_to_doc(srun_t *r)
{
    const char *why = lab_run_state_final(r->state) ? "" : run_why(r);
    uint64_t h = why[0] ? why_hash_of(why) : 0;
    if (h == r->why_hash && (h || !json_object_get(r->doc, "waiting_reason")))
        return false;
    /* after a restart the document may say so already: no second write of the same words */
    const char *said = json_string_value(json_object_get(r->doc, "waiting_reason"));
    r->why_hash = h;
    if (said && why[0] && strcmp(said, why) == 0)
        return false;
    if (why[0])
        json_object_set_new(r->doc, "waiting_reason", json_string(why));
    else
        json_object_del(r->doc, "waiting_reason");
    return true;
}

/* Brings doc up to date with the run's state and steps. */
static void doc_sync(lab_sched_t *s, srun_t *r)
{
    why_to_doc(r);
    json_t *steps = json_array();
    for (int k = 0; k < r->n; k++) {
        sstep_t *st = &r->st[k];
        json_t *o = json_pack("{s:s,s:s,s:s,s:i}", "name", st->name, "op", st->op, "state",
                              lab_step_state_name(st->state), "attempts", st->attempts);
        lab_driver_t *d = inst_at(s, st->inst);
        if (d && st->state != LAB_STEP_PENDING)
            json_object_set_new(o, "instrument", json_string(lab_driver_id(d)));
        put_time(o, "started_at", st->state != LAB_STEP_PENDING ? st->start_ms : 0);
        put_time(o, "ended_at", st->state != LAB_STEP_PENDING ? st->end_ms : 0);
        if (st->cassette)
            json_object_set_new(o, "site",
                                json_pack("{s:i,s:i}", "cassette", st->cassette, "slot", st->slot));
        put_time(o, "loaded_at", st->loaded_ms);
        if (st->unloaded)
            json_object_set_new(o, "unloaded", json_true());
        if (st->lag_s >= 0 && k > 0 && st->state != LAB_STEP_PENDING)
            json_object_set_new(o, "lag_s", json_real(round(st->lag_s * 1000) / 1000));
        if (st->lag_violated)
            json_object_set_new(o, "lag_violation", json_true());
        if (st->interruptions)
            json_object_set_new(o, "interruptions", json_integer(st->interruptions));
        if (st->error[0])
            json_object_set_new(o, "error", json_string(st->error));
        json_array_append_new(steps, o);
    }
    json_object_set_new(r->doc, "steps", steps);
    json_object_set_new(r->doc, "state", json_string(lab_run_state_name(r->state)));
    json_object_set_new(r->doc, "lag_violations", json_integer(count_violations(r)));
    put_time(r->doc, "updated_at", now_ms(s));
}

static void steps_from_doc(lab_sched_t *s, srun_t *r)
{
    json_t *steps = json_object_get(r->doc, "steps");
    for (int k = 0; k < r->n && k < (int)json_array_size(steps); k++) {
        json_t *o = json_array_get(steps, k);
        sstep_t *st = &r->st[k];
        /* restored as stored, not a transition; an unknown name reads as pending */
        int ss = lab_step_state_parse(json_string_value(json_object_get(o, "state")));
        st->state = ss < 0 ? LAB_STEP_PENDING : (lab_step_state_t)ss;
        st->attempts = (int)json_integer_value(json_object_get(o, "attempts"));
        st->interruptions = (int)json_integer_value(json_object_get(o, "interruptions"));
        st->inst = inst_index(s, json_string_value(json_object_get(o, "instrument")));
        st->start_ms = get_time(o, "started_at");
        st->end_ms = get_time(o, "ended_at");
        st->loaded_ms = get_time(o, "loaded_at");
        st->unloaded = json_is_true(json_object_get(o, "unloaded"));
        json_t *site = json_object_get(o, "site");
        st->cassette = (int)json_integer_value(json_object_get(site, "cassette"));
        st->slot = (int)json_integer_value(json_object_get(site, "slot"));
        st->lag_violated = json_is_true(json_object_get(o, "lag_violation"));
        json_t *lag = json_object_get(o, "lag_s");
        st->lag_s = json_is_number(lag) ? json_number_value(lag) : -1;
        lab_text_copy(st->error, sizeof st->error, json_string_value(json_object_get(o, "error")));
        st->holds_site = st->cassette && st->inst >= 0 &&
                         (st->state == LAB_STEP_RUNNING || (st->loaded_ms && !st->unloaded));
        if (st->holds_site)
            site_mark(s, st->inst, st->cassette, st->slot, 1);
    }
    r->cur = 0;
    while (r->cur < r->n &&
           (r->st[r->cur].state == LAB_STEP_DONE || r->st[r->cur].state == LAB_STEP_SKIPPED))
        r->cur++;
}

static int prio_of(const char *p)
{
    if (!p)
        return PLAN_NORMAL;
    if (strcmp(p, "urgent") == 0)
        return PLAN_URGENT;
    if (strcmp(p, "high") == 0)
        return PLAN_HIGH;
    if (strcmp(p, "low") == 0)
        return PLAN_LOW;
    return PLAN_NORMAL;
}

static double num(const json_t *v, double def)
{
    return json_is_number(v) ? json_number_value(v) : def;
}

/* A workflow version from the cache, else from the store; NULL when it is not stored. A stored
 * version never changes; the newest (version 0) and an absent one are asked again after
 * WF_ASK_MS. Borrowed. */
static json_t *wf_lookup(lab_sched_t *s, const char *name, int version)
{
    uint64_t now = uv_now(s->loop);
    wfc_t *c = NULL;
    for (int i = 0; i < s->nwfc && !c; i++)
        if (s->wfc[i].version == version && strcmp(s->wfc[i].name, name) == 0)
            c = &s->wfc[i];
    if (c && c->wf && version > 0)
        return c->wf;
    if (c && now - c->asked_ms < WF_ASK_MS)
        return c->wf;
    if (!c) {
        if (s->nwfc == WFC_MAX) { /* the oldest goes; the runs that follow it keep their ref */
            free(s->wfc[0].name);
            json_decref(s->wfc[0].wf);
            memmove(&s->wfc[0], &s->wfc[1], sizeof *s->wfc * (WFC_MAX - 1));
            s->nwfc--;
        }
        s->wfc = lab_realloc(s->wfc, sizeof *s->wfc * (size_t)(s->nwfc + 1));
        c = &s->wfc[s->nwfc++];
        *c = (wfc_t){.name = lab_strdup(name), .version = version};
    }
    char *text = NULL;
    json_decref(c->wf);
    c->wf = NULL;
    if (lab_workflows_get(s->st, name, version, &text) == LAB_OK)
        c->wf = json_loads(text, 0, NULL);
    free(text);
    c->asked_ms = now;
    return c->wf;
}

/* The run's steps from its workflow version. false (with r->why) when it is not stored. */
static bool run_bind_workflow(lab_sched_t *s, srun_t *r)
{
    const char *name = json_string_value(json_object_get(r->doc, "workflow"));
    json_t *v = json_object_get(r->doc, "workflow_version");
    json_t *wf = wf_lookup(s, name ? name : "", v ? (int)json_integer_value(v) : 0);
    if (!wf) {
        if (v)
            snprintf(r->why, sizeof r->why, "workflow %s version %lld is not stored",
                     name ? name : "?", (long long)json_integer_value(v));
        else
            snprintf(r->why, sizeof r->why, "workflow %s is not stored", name ? name : "?");
        return false;
    }
    r->wf = json_incref(wf);
    json_t *steps = json_object_get(r->wf, "steps");
    const json_t *wpol = json_object_get(r->wf, "on_failure");
    r->n = (int)json_array_size(steps);
    r->st = lab_calloc((size_t)r->n + 1, sizeof *r->st);
    for (int k = 0; k < r->n; k++) {
        json_t *o = json_array_get(steps, k);
        sstep_t *st = &r->st[k];
        st->name = json_string_value(json_object_get(o, "name")) ?: "";
        st->op = json_string_value(json_object_get(o, "op")) ?: "";
        st->on = json_string_value(json_object_get(o, "on")) ?: "";
        st->params = json_object_get(o, "params");
        st->policy = json_object_get(o, "on_failure") ?: wpol;
        json_t *dur = json_object_get(o, "duration_s");
        st->nominal_s = json_is_array(dur) ? num(json_array_get(dur, 1), 0) : num(dur, 0);
        st->plan_s = st->nominal_s;
        if (strcmp(st->op, "incubate") == 0)
            st->plan_s += s->cfg->sched_handling_s;
        st->min_lag = num(json_object_get(o, "start_after_s"), 0);
        st->max_lag = num(json_object_get(o, "start_within_s"), -1);
        st->inst = st->plan_inst = -1;
        st->lag_s = -1;
    }
    return true;
}

static srun_t *run_new(lab_sched_t *s, json_t *doc)
{
    srun_t *r = LAB_NEW(srun_t);
    r->doc = doc;
    snprintf(r->id, sizeof r->id, "%s", json_string_value(json_object_get(doc, "id")));
    r->plate = lab_strdup(json_string_value(json_object_get(doc, "plate")) ?: "");
    int st = lab_run_state_parse(json_string_value(json_object_get(doc, "state")) ?: "queued");
    r->state = st < 0 ? LAB_RUN_QUEUED : (lab_run_state_t)st;
    r->prio = prio_of(json_string_value(json_object_get(doc, "priority")));
    r->score = num(json_object_get(doc, "score"), 0);
    r->created_ms = get_time(doc, "created_at");
    r->deadline_ms = get_time(doc, "deadline");
    if (!r->deadline_ms)
        r->deadline_ms = -1;
    r->age = ++s->age;
    if (run_bind_workflow(s, r))
        steps_from_doc(s, r);
    if (s->nruns == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->runs = lab_realloc(s->runs, sizeof *s->runs * (size_t)s->cap);
    }
    s->runs[s->nruns++] = r;
    return r;
}

static srun_t *run_find(lab_sched_t *s, const char *id)
{
    for (int i = 0; i < s->nruns; i++)
        if (strcmp(s->runs[i]->id, id) == 0)
            return s->runs[i];
    return NULL;
}

/* ---- the queue beyond the look-ahead window ---- */

/* The planner's order of runs not begun (plan_rank_cmp). < 0 when a goes first. */
static int rank_cmp(const cold_t *a, const cold_t *b)
{
    plan_rank_t ra = {a->prio, (double)a->deadline_ms, a->score, a->age};
    plan_rank_t rb = {b->prio, (double)b->deadline_ms, b->score, b->age};
    return plan_rank_cmp(&ra, &rb);
}

static cold_t cold_of_run(const srun_t *r)
{
    cold_t c = {.prio = r->prio, .score = r->score, .deadline_ms = r->deadline_ms, .age = r->age};
    memcpy(c.id, r->id, sizeof c.id);
    return c;
}

static void heap_swap(cold_t *h, int i, int j)
{
    cold_t t = h[i];
    h[i] = h[j];
    h[j] = t;
}

static void heap_up(cold_t *h, int i)
{
    while (i > 0 && rank_cmp(&h[i], &h[(i - 1) / 2]) < 0) {
        heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(cold_t *h, int n, int i)
{
    for (;;) {
        int best = i, l = 2 * i + 1, rr = l + 1;
        if (l < n && rank_cmp(&h[l], &h[best]) < 0)
            best = l;
        if (rr < n && rank_cmp(&h[rr], &h[best]) < 0)
            best = rr;
        if (best == i)
            return;
        heap_swap(h, i, best);
        i = best;
    }
}

static void cold_push(lab_sched_t *s, const cold_t *c)
{
    if (s->ncold == s->capcold) {
        s->capcold = s->capcold ? 2 * s->capcold : 256;
        s->cold = lab_realloc(s->cold, sizeof *s->cold * (size_t)s->capcold);
    }
    s->cold[s->ncold] = *c;
    heap_up(s->cold, s->ncold++);
}

static cold_t cold_take(lab_sched_t *s, int i)
{
    cold_t c = s->cold[i];
    s->cold[i] = s->cold[--s->ncold];
    if (i < s->ncold) {
        heap_down(s->cold, s->ncold, i);
        heap_up(s->cold, i);
    }
    return c;
}

static void orphan_push(lab_sched_t *s, const cold_t *c, const char *wf, int version)
{
    if (s->norphans == s->caporphans) {
        s->caporphans = s->caporphans ? 2 * s->caporphans : 64;
        s->orphans = lab_realloc(s->orphans, sizeof *s->orphans * (size_t)s->caporphans);
    }
    s->orphans[s->norphans++] = (orphan_t){*c, lab_strdup(wf), version};
}

static orphan_t orphan_take(lab_sched_t *s, int i)
{
    orphan_t o = s->orphans[i];
    s->orphans[i] = s->orphans[--s->norphans];
    return o;
}

/* A run in the window: queued or planned, nothing of it begun. */
static bool run_waiting(const srun_t *r)
{
    if (r->ex || (r->state != LAB_RUN_QUEUED && r->state != LAB_RUN_PLANNED))
        return false;
    for (int k = 0; k < r->n; k++)
        if (r->st[k].state != LAB_STEP_PENDING)
            return false;
    return true;
}

/* The waiting run ranked last in the window (NULL when none); *n: how many wait there. */
static srun_t *window_last(lab_sched_t *s, int *n)
{
    srun_t *last = NULL;
    cold_t lc = {0}, c;
    *n = 0;
    for (int i = 0; i < s->nruns; i++)
        if (run_waiting(s->runs[i])) {
            (*n)++;
            c = cold_of_run(s->runs[i]);
            if (!last || rank_cmp(&c, &lc) > 0) {
                last = s->runs[i];
                lc = c;
            }
        }
    return last;
}

/* A queued run back from the store into the window; NULL when its document is gone. */
static srun_t *run_load(lab_sched_t *s, const cold_t *c)
{
    char *text = NULL;
    json_t *doc = NULL;
    if (lab_runs_get(s->st, c->id, &text) == LAB_OK)
        doc = json_loads(text, 0, NULL);
    free(text);
    if (!json_is_object(doc)) {
        log_error("sched", "run=%s left the queue: its document cannot be read", c->id);
        json_decref(doc);
        return NULL;
    }
    srun_t *r = run_new(s, doc);
    r->age = c->age;
    return r;
}

/* A queued run ranked last leaves the window for the queue (nothing of it is lost: its stored
 * document is the same, a queued run's plan is not). */
static void exec_free(exec_t *ex)
{
    if (!ex)
        return;
    json_decref(ex->prog);
    json_decref(ex->rows);
    free(ex);
}

/* What a run holds in memory, released (its document stays in the store). */
static void run_free(srun_t *r)
{
    exec_free(r->ex);
    json_decref(r->doc);
    json_decref(r->wf);
    free(r->plate);
    free(r->st);
    free(r);
}

/* Out of the window's array, and its memory released. */
static void run_drop(lab_sched_t *s, srun_t *r)
{
    for (int i = 0; i < s->nruns; i++)
        if (s->runs[i] == r) {
            memmove(&s->runs[i], &s->runs[i + 1], sizeof *s->runs * (size_t)(s->nruns - i - 1));
            s->nruns--;
            break;
        }
    run_free(r);
}

static void run_demote(lab_sched_t *s, srun_t *r)
{
    cold_t c = cold_of_run(r);
    cold_push(s, &c);
    run_drop(s, r);
}

/* A queued run's document (taken over): into the window when it has room or when the run ranks
 * ahead of one waiting there (which then leaves for the queue if it was not planned yet), else
 * into the queue; a run whose workflow is not stored waits apart. Costs a rank comparison per
 * waiting run of the window and a heap insert, whatever the length of the queue. true when the
 * plan changes (the run entered the window, or the window has room for the queue's best). */
static bool admit(lab_sched_t *s, json_t *doc)
{
    cold_t c = {.prio = prio_of(json_string_value(json_object_get(doc, "priority"))),
                .score = num(json_object_get(doc, "score"), 0),
                .deadline_ms = get_time(doc, "deadline"),
                .age = ++s->age};
    snprintf(c.id, sizeof c.id, "%s", json_string_value(json_object_get(doc, "id")) ?: "");
    if (!c.deadline_ms)
        c.deadline_ms = -1;
    const char *name = json_string_value(json_object_get(doc, "workflow")) ?: "";
    json_t *v = json_object_get(doc, "workflow_version");
    int version = v ? (int)json_integer_value(v) : 0;
    if (!wf_lookup(s, name, version)) {
        orphan_push(s, &c, name, version);
        json_decref(doc);
        return false;
    }
    int n;
    srun_t *last = window_last(s, &n);
    bool in = n < WINDOW && s->ncold == 0; /* else the queue's best fill the room first */
    if (!in && n >= WINDOW && last) {
        cold_t lc = cold_of_run(last);
        in = rank_cmp(&c, &lc) < 0;
    }
    if (!in) {
        cold_push(s, &c);
        json_decref(doc);
        return n < WINDOW;
    }
    srun_t *r = run_new(s, doc);
    r->age = c.age;
    if (n + 1 > WINDOW && last && last->state == LAB_RUN_QUEUED)
        run_demote(s, last);
    return true;
}

/* Queued runs whose workflow came join the queue (the store is asked once per WF_ASK_MS and
 * workflow); true when some did. */
static bool orphans_ask(lab_sched_t *s)
{
    uint64_t now = uv_now(s->loop);
    bool moved = false;
    if (!s->norphans || now - s->orphans_asked_ms < WF_ASK_MS)
        return false;
    s->orphans_asked_ms = now;
    for (int i = 0; i < s->norphans;) {
        if (wf_lookup(s, s->orphans[i].wf, s->orphans[i].version)) {
            orphan_t o = orphan_take(s, i);
            cold_push(s, &o.c);
            free(o.wf);
            moved = true;
        } else {
            i++;
        }
    }
    return moved;
}

/* Before a plan: the queue's best fill the room in the window. */
static void promote(lab_sched_t *s)
{
    orphans_ask(s);
    int n;
    window_last(s, &n);
    while (n < WINDOW && s->ncold > 0) {
        cold_t c = cold_take(s, 0);
        n += run_load(s, &c) != NULL;
    }
}

/* A live run by id; one in the queue enters the window (an operator acts on it). */
static srun_t *run_thaw(lab_sched_t *s, const char *id)
{
    srun_t *r = run_find(s, id);
    for (int i = 0; !r && i < s->ncold; i++)
        if (strcmp(s->cold[i].id, id) == 0) {
            cold_t c = cold_take(s, i);
            return run_load(s, &c);
        }
    for (int i = 0; !r && i < s->norphans; i++)
        if (strcmp(s->orphans[i].c.id, id) == 0) {
            orphan_t o = orphan_take(s, i);
            free(o.wf);
            return run_load(s, &o.c);
        }
    return r;
}

static const char *cold_why(char *buf, size_t cap)
{
    snprintf(buf, cap,
             "queued: the first %d waiting runs are planned in detail, this one when a place "
             "among them frees up",
             WINDOW);
    return buf;
}

static const char *orphan_why(const orphan_t *o, char *buf, size_t cap)
{
    if (o->version)
        snprintf(buf, cap, "workflow %s version %d is not stored", o->wf, o->version);
    else
        snprintf(buf, cap, "workflow %s is not stored", o->wf);
    return buf;
}

/* Why a run of the queue waits, or NULL when it is not there. */
static const char *queued_why(lab_sched_t *s, const char *id, char *buf, size_t cap)
{
    for (int i = 0; i < s->ncold; i++)
        if (strcmp(s->cold[i].id, id) == 0)
            return cold_why(buf, cap);
    for (int i = 0; i < s->norphans; i++)
        if (strcmp(s->orphans[i].c.id, id) == 0)
            return orphan_why(&s->orphans[i], buf, cap);
    return NULL;
}

static json_t *timeline_item(lab_sched_t *s, srun_t *r, int k, bool planned)
{
    sstep_t *st = &r->st[k];
    int i = planned ? st->plan_inst : st->inst;
    lab_driver_t *d = inst_at(s, i);
    char a[32], b[32];
    int64_t start = planned ? st->plan_start_ms : st->start_ms;
    int64_t end = planned ? st->plan_end_ms : st->end_ms;
    if (!planned && st->state == LAB_STEP_RUNNING)
        end = st->start_ms + (int64_t)(st->plan_s * 1000) > now_ms(s)
                  ? st->start_ms + (int64_t)(st->plan_s * 1000)
                  : now_ms(s);
    iso(start, a);
    iso(end, b);
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "instrument", d ? lab_driver_id(d) : "",
                     "run", r->id, "plate", r->plate, "step", st->name, "start", a, "end", b,
                     "state", planned ? "planned" : lab_step_state_name(st->state));
}

/* A run that is over leaves the scheduler; its steps stay on the timeline for a while. */
static void run_remove(lab_sched_t *s, srun_t *r)
{
    for (int k = 0; k < r->n; k++)
        if (r->st[k].start_ms > 0 && r->st[k].state != LAB_STEP_PENDING)
            json_array_append_new(s->history, timeline_item(s, r, k, false));
    while (json_array_size(s->history) > HISTORY_MAX)
        json_array_remove(s->history, 0);
    for (int k = 0; k < r->n; k++)
        if (r->st[k].holds_site)
            site_mark(s, r->st[k].inst, r->st[k].cassette, r->st[k].slot, 0);
    run_drop(s, r);
}

/* ---- the store ---- */

/* After close: s goes once its timer closed and no store op or driver call can come back. */
static void maybe_free(lab_sched_t *s)
{
    if (!s->tick_closed || s->ops > 0 || s->calls > 0)
        return;
    void (*cb)(void *) = s->close_cb;
    void *arg = s->close_arg;
    free(s);
    if (cb)
        cb(arg);
}

typedef struct upd_ctx {
    pend_t *p;
    lab_sched_t *s;
} upd_ctx_t;

static void persist_done(lab_store_op_t *op, int status)
{
    lab_run_update_t *upd = (lab_run_update_t *)op;
    upd_ctx_t *c = upd->arg;
    lab_sched_t *s = c->s;
    if (status != 0)
        log_error("sched", "run=%s state=%s not stored: %s", upd->id, upd->state,
                  lab_strerror(status));
    else
        for (int i = 0; i < s->non_run && !s->closing; i++)
            s->on_run[i].cb(s->on_run[i].ctx, upd->id, upd->state, upd->doc);
    if (c->p) {
        c->p->cb(c->p->arg, status, status == 0 ? upd->doc : NULL,
                 status == 0 ? NULL : lab_strerror(status));
        free(c->p);
    }
    free(c);
    lab_run_update_free(upd);
    s->ops--;
    maybe_free(s);
}

/* Writes the run's document (with rows: measurement payloads, taken over) through the outbox. */
static void persist(lab_sched_t *s, srun_t *r, json_t *rows, pend_t *p)
{
    doc_sync(s, r);
    lab_run_update_t *upd = lab_run_update_new();
    upd->id = lab_strdup(r->id);
    upd->state = lab_strdup(lab_run_state_name(r->state));
    upd->doc = json_dumps(r->doc, JSON_COMPACT);
    upd->ts_ms = now_ms(s);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
        lab_run_update_add_row(upd, "measurement", json_dumps(row, JSON_COMPACT));
    json_decref(rows);
    upd_ctx_t *c = LAB_NEW(upd_ctx_t);
    c->p = p;
    c->s = s;
    upd->arg = c;
    upd->op.done = persist_done;
    s->ops++;
    lab_store_submit(s->st, &upd->op);
}

/* A run in the look-ahead window whose reason to wait changed says so at once (its state
 * message carries it). Only a change is written, and only the window's runs have one, so a burst
 * of submissions to a cell that cannot run them costs at most one write per run of the window. */
static void why_flush(lab_sched_t *s, srun_t *r)
{
    if ((r->state == LAB_RUN_QUEUED || r->state == LAB_RUN_PLANNED ||
         r->state == LAB_RUN_RUNNING) &&
        why_to_doc(r))
        persist(s, r, NULL, NULL);
}

/* Every change of a run's state goes through here: LAB_ESTATE when the run table refuses it. */
static int set_state(lab_sched_t *s, srun_t *r, lab_run_state_t to)
{
    (void)s;
    lab_run_state_t from = r->state;
    int rc = lab_run_set_state(&r->state, to, r->id);
    if (rc == 0 && from != to)
        log_info("sched", "run=%s %s -> %s", r->id, lab_run_state_name(from),
                 lab_run_state_name(to));
    return rc;
}

/* Every change of a step's state goes through here: LAB_ESTATE when the step table refuses it. */
static int step_set(srun_t *r, sstep_t *st, lab_step_state_t to)
{
    char id[200];
    snprintf(id, sizeof id, "%s/%s", r->id, st->name);
    return lab_step_set_state(&st->state, to, id);
}

/* ---- planning ---- */

static bool run_plannable(const srun_t *r)
{
    return r->wf && r->cur < r->n &&
           (r->state == LAB_RUN_QUEUED || r->state == LAB_RUN_PLANNED ||
            r->state == LAB_RUN_RUNNING);
}

/* Why step k cannot be planned now because of its instruments, or NULL. */
static const char *blocked_by(lab_sched_t *s, srun_t *r, int k, char *buf, size_t cap)
{
    const char *on = r->st[k].on;
    int any = 0, up = 0;
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < ninst(s); i++)
        if (on_matches(s, i, on)) {
            any++;
            if (inst_available(s, i))
                up++;
            else if (n < cap) {
                lab_driver_t *d = inst_at(s, i);
                lab_inst_state_t is = lab_driver_state(d);
                const lab_drv_error_t *le = lab_driver_last_error(d);
                bool say = (is == LAB_INST_FAULT || is == LAB_INST_OFFLINE) && le->text[0];
                n += (size_t)snprintf(buf + n, cap - n, "%s%s %s%s%.120s%s", n ? ", " : "",
                                      lab_driver_id(d), lab_inst_state_name(is), say ? " (" : "",
                                      say ? le->text : "", say ? ")" : "");
            }
        }
    if (!any) {
        snprintf(buf, cap, "step %s needs '%s' and this cell has none", r->st[k].name, on);
        lab_text_trim(buf);
        return buf;
    }
    if (!up) {
        char tmp[200];
        snprintf(tmp, sizeof tmp, "%s", buf);
        lab_text_trim(tmp);
        snprintf(buf, cap, "step %.63s waits for '%.63s': %.170s", r->st[k].name, on, tmp);
        lab_text_trim(buf);
        return buf;
    }
    return NULL;
}

static void replan(lab_sched_t *s)
{
    s->replan = false;
    s->replanned_ms = uv_now(s->loop);
    promote(s);
    int64_t now = now_ms(s);
    int ni = ninst(s);
    plan_problem_t p = {0};
    p.instruments = lab_calloc((size_t)ni + 1, sizeof *p.instruments);
    p.ninstruments = ni;
    for (int i = 0; i < ni; i++) {
        lab_driver_t *d = inst_at(s, i);
        plan_instrument_t *pi = &p.instruments[i];
        if (inst_available(s, i)) {
            snprintf(pi->id, sizeof pi->id, "%s", lab_driver_id(d));
            snprintf(pi->kind, sizeof pi->kind, "%s", lab_driver_ops(d)->kind);
        } /* else: matches nothing, yet steps already on it stay fixed there */
        pi->capacity = lab_driver_capacity(d);
    }
    srun_t **map = lab_calloc((size_t)s->nruns + 1, sizeof *map);
    p.workflows = lab_calloc((size_t)s->nruns + 1, sizeof *p.workflows);
    p.runs = lab_calloc((size_t)s->nruns + 1, sizeof *p.runs);
    for (int i = 0; i < s->nruns; i++) {
        srun_t *r = s->runs[i];
        for (int k = 0; k < r->n; k++)
            if (r->st[k].state == LAB_STEP_PENDING) {
                r->st[k].plan_start_ms = r->st[k].plan_end_ms = r->st[k].plan_move_ms = 0;
                r->st[k].plan_mover = r->st[k].plan_move_from = -1;
            }
        if (!r->wf && (r->state == LAB_RUN_QUEUED || r->state == LAB_RUN_PLANNED) &&
            run_bind_workflow(s, r))
            steps_from_doc(s, r);
        if (!run_plannable(r))
            continue;
        char why[PLAN_REASON_MAX];
        const char *b = NULL;
        for (int k = r->cur; k < r->n && !b; k++)
            b = blocked_by(s, r, k, why, sizeof why);
        if (b) {
            snprintf(r->why, sizeof r->why, "%s", b);
            continue;
        }
        int wi = p.nworkflows++;
        plan_workflow_t *w = &p.workflows[wi];
        snprintf(w->name, sizeof w->name, "%s", r->id);
        w->steps = lab_calloc((size_t)r->n + 1, sizeof *w->steps);
        w->n = r->n;
        plan_run_t *pr = &p.runs[p.nruns];
        snprintf(pr->id, sizeof pr->id, "%s", r->id);
        pr->workflow = wi;
        pr->priority = r->prio;
        pr->score = r->score;
        pr->deadline_s = r->deadline_ms < 0 ? -1 : (double)(r->deadline_ms - now) / 1000.0;
        pr->fixed = lab_calloc((size_t)r->n + 1, sizeof *pr->fixed);
        for (int k = 0; k < r->n; k++) {
            sstep_t *st = &r->st[k];
            plan_step_t *ps = &w->steps[k];
            snprintf(ps->name, sizeof ps->name, "%s", st->name);
            snprintf(ps->on, sizeof ps->on, "%s", st->on);
            ps->duration_s = st->plan_s;
            ps->min_lag_s = st->min_lag;
            ps->max_lag_s = k == 0 ? -1 : st->max_lag;
            bool started = k < r->cur || (k == r->cur && st->state != LAB_STEP_PENDING);
            if (started) {
                int64_t end = st->end_ms ? st->end_ms : 0;
                if (st->state == LAB_STEP_RUNNING || !end) {
                    /* running late: assume a tenth of its plan more, and plan again if not */
                    double el = (double)(now - st->start_ms) / 1000.0;
                    ps->duration_s = fmax(st->plan_s, el + 1 + st->plan_s / 10);
                } else {
                    ps->duration_s = fmax(0, (double)(end - st->start_ms) / 1000.0);
                }
                int inst = st->inst >= 0 ? st->inst : 0;
                pr->fixed[pr->nfixed++] =
                    (plan_fixed_t){inst, (double)(st->start_ms - now) / 1000.0};
                if (st->state == LAB_STEP_SKIPPED)
                    ps->duration_s = 0;
            } else if (k == r->cur && k > 0 && st->max_lag >= 0) {
                /* the window may have passed already (a restart, a step that ran long): the
                 * run is under way, so its next step goes as soon as it can, noted as late */
                int64_t prev_end = r->st[k - 1].end_ms;
                if (prev_end && now > prev_end + (int64_t)(st->max_lag * 1000))
                    ps->max_lag_s = -1;
            }
        }
        map[p.nruns++] = r;
    }
    plan_options_t o = {.budget_ms = s->cfg->sched_budget_ms, .seed = 1};
    plan_result_t res = {0};
    uint64_t t0 = uv_hrtime();
    if (p.nruns > 0)
        plan_solve(&p, &o, &res);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    s->stats.replans++;
    s->stats.replan_ms_last = ms;
    if (ms > s->stats.replan_ms_max)
        s->stats.replan_ms_max = ms;
    s->planned_at_ms = now;
    for (int j = 0; j < p.nruns; j++)
        map[j]->why[0] = '\0';
    for (int j = 0; j < res.nslots; j++) {
        plan_slot_t *sl = &res.slots[j];
        srun_t *r = map[sl->run];
        sstep_t *st = &r->st[sl->step];
        if (st->state != LAB_STEP_PENDING)
            continue;
        if (sl->move) {
            st->plan_move_ms = now + (int64_t)llround(sl->start_s * 1000);
            st->plan_mover = sl->instrument;
            st->plan_move_from = sl->from;
            continue;
        }
        st->plan_start_ms = now + (int64_t)llround(sl->start_s * 1000);
        st->plan_end_ms = now + (int64_t)llround(sl->end_s * 1000);
        st->plan_inst = sl->instrument;
    }
    for (int j = 0; j < res.nunscheduled; j++) {
        srun_t *r = map[res.unscheduled[j].run];
        snprintf(r->why, sizeof r->why, "%s", res.unscheduled[j].reason);
    }
    for (int j = 0; j < p.nruns; j++) {
        srun_t *r = map[j];
        if (r->state == LAB_RUN_QUEUED && !r->why[0]) {
            set_state(s, r, LAB_RUN_PLANNED);
            persist(s, r, NULL, NULL);
        }
    }
    log_debug("sched", "planned %d runs in %.1f ms (%d unscheduled)", p.nruns, ms,
              res.nunscheduled);
    plan_result_free(&res);
    for (int j = 0; j < p.nworkflows; j++)
        free(p.workflows[j].steps);
    for (int j = 0; j < p.nruns; j++)
        free(p.runs[j].fixed);
    free(p.workflows);
    free(p.runs);
    free(p.instruments);
    free(map);
}

/* ---- carrying out steps ---- */

/* A refused end keeps the run (in memory and stored) as it is, for a person to see. */
static void finish_run(lab_sched_t *s, srun_t *r, lab_run_state_t to, json_t *rows, pend_t *p)
{
    if (set_state(s, r, to) < 0) {
        persist(s, r, rows, p);
        return;
    }
    put_time(r->doc, "ended_at", now_ms(s));
    persist(s, r, rows, p);
    if (!r->ex || !r->ex->cleanup)
        run_remove(s, r);
}

/* A campaign's plate keeps its read values in its own document: the closed loop computes the
 * plate's results from them, after a restart too (the outbox's measurement rows are pruned once
 * delivered). {"readings": {STEP: {"measure", "wavelength_nm"?, "values": {WELL: value}}}} */
static void keep_readings(srun_t *r, const sstep_t *st, const json_t *rows)
{
    if (!json_array_size(rows) || !json_object_get(r->doc, "campaign"))
        return;
    json_t *all = json_object_get(r->doc, "readings");
    if (!json_is_object(all)) {
        all = json_object();
        json_object_set_new(r->doc, "readings", all);
    }
    json_t *one = json_object(), *values = json_object();
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        json_object_set(values, json_string_value(json_object_get(row, "well")),
                        json_object_get(row, "value"));
        if (i == 0) {
            json_object_set(one, "measure", json_object_get(row, "measure"));
            if (json_object_get(row, "wavelength_nm"))
                json_object_set(one, "wavelength_nm", json_object_get(row, "wavelength_nm"));
        }
    }
    json_object_set_new(one, "values", values);
    json_object_set_new(all, st->name, one);
}

static void step_done(lab_sched_t *s, exec_t *ex)
{
    srun_t *r = ex->r;
    sstep_t *st = &r->st[ex->k];
    (void)step_set(r, st, LAB_STEP_DONE); /* refused: logged; the run goes on all the same */
    st->end_ms = now_ms(s);
    st->error[0] = '\0';
    step_release_site(s, st);
    json_t *rows = ex->rows;
    ex->rows = NULL;
    r->ex = NULL;
    exec_free(ex);
    keep_readings(r, st, rows);
    r->cur++;
    while (r->cur < r->n && r->st[r->cur].state == LAB_STEP_SKIPPED)
        r->cur++;
    log_info("sched", "run=%s step=%s done on %s in %.1f lab s", r->id, st->name,
             lab_driver_id(inst_at(s, st->inst)), (double)(st->end_ms - st->start_ms) / 1000.0);
    if (r->cur >= r->n)
        finish_run(s, r, LAB_RUN_DONE, rows, NULL);
    else
        persist(s, r, rows, NULL);
    kick(s);
}

/* The step could not finish: record why and let the recovery policy decide. */
static void step_failed(lab_sched_t *s, exec_t *ex, const char *why, bool unknown_outcome)
{
    srun_t *r = ex->r;
    sstep_t *st = &r->st[ex->k];
    s->stats.steps_failed++;
    lab_text_copy(st->error, sizeof st->error, why);
    lab_text_trim(st->error);               /* why may come cut from a fixed buffer */
    (void)step_set(r, st, LAB_STEP_FAILED); /* refused: logged; the policy still decides */
    st->end_ms = now_ms(s);
    step_release_site(s, st);
    log_warn("sched", "run=%s step=%s attempt %d failed: %s%s%s", r->id, st->name, st->attempts,
             ex->done, ex->done[0] ? "; " : "", why);
    char done[sizeof ex->done];
    memcpy(done, ex->done, sizeof done);
    r->ex = NULL;
    exec_free(ex);
    apply_policy(s, r, r->cur, unknown_outcome, done);
}

static void pause_run(lab_sched_t *s, srun_t *r, const char *why)
{
    set_state(s, r, LAB_RUN_PAUSED);
    json_object_set_new(r->doc, "paused_reason", json_string(why));
    snprintf(r->why, sizeof r->why, "paused: %s", why);
    lab_text_trim(r->why);
    persist(s, r, NULL, NULL);
    kick(s);
}

/* done: what the failed attempt's program did before it failed ("" or NULL: nothing known). */
static void apply_policy(lab_sched_t *s, srun_t *r, int k, bool unknown_outcome, const char *done)
{
    const char *sep = done && done[0] ? "; " : "";
    if (!done)
        done = "";
    sstep_t *st = &r->st[k];
    const char *action = json_string_value(json_object_get(st->policy, "action"));
    int retries = (int)json_integer_value(json_object_get(st->policy, "retries"));
    if (!action)
        action = "pause";
    if (unknown_outcome && !lab_op_repeatable(st->op)) {
        char why[1000];
        snprintf(why, sizeof why,
                 "step %s (%s) may or may not have happened (%s%s%s); check the plate, then resume "
                 "with retry (it did not happen) or skip (it did)",
                 st->name, st->op, done, sep, st->error);
        pause_run(s, r, why);
        return;
    }
    if (strcmp(action, "retry") == 0 && st->attempts <= (retries > 0 ? retries : 1) &&
        step_set(r, st, LAB_STEP_PENDING) == 0) {
        set_state(s, r, LAB_RUN_RUNNING);
        persist(s, r, NULL, NULL);
        kick(s);
        return;
    }
    if (strcmp(action, "skip") == 0 && step_set(r, st, LAB_STEP_SKIPPED) == 0) {
        if (!st->end_ms)
            st->end_ms = now_ms(s);
        r->cur = k + 1;
        if (r->cur >= r->n) {
            finish_run(s, r, LAB_RUN_DONE, NULL, NULL);
        } else {
            set_state(s, r, LAB_RUN_RUNNING);
            persist(s, r, NULL, NULL);
        }
        kick(s);
        return;
    }
    if (strcmp(action, "pause") == 0) {
        char why[1000];
        snprintf(why, sizeof why, "step %s failed: %s%s%s; resume with retry or skip, or cancel",
                 st->name, done, sep, st->error);
        pause_run(s, r, why);
        return;
    }
    /* fail, or retries used up */
    json_object_set_new(r->doc, "failure",
                        json_pack("{s:s,s:s}", "step", st->name, "error", st->error));
    finish_run(s, r, LAB_RUN_FAILED, NULL, NULL);
    kick(s);
}

static json_t *measurement_rows(lab_sched_t *s, srun_t *r, sstep_t *st, json_t *result)
{
    json_t *rows = json_array();
    json_t *values = json_object_get(result, "values");
    json_t *nm = json_object_get(result, "wavelength_nm");
    char at[32];
    iso(now_ms(s), at);
    const char *measure = strstr(st->op, "absorbance") ? "absorbance" : st->op;
    const char *key;
    json_t *v;
    json_object_foreach(values, key, v)
    {
        json_t *row = json_pack(
            "{s:s,s:s,s:s,s:s,s:s,s:s,s:O,s:s,s:s}", "run", r->id, "plate", r->plate, "step",
            st->name, "instrument", lab_driver_id(inst_at(s, st->inst)), "well", key, "measure",
            measure, "value", v, "unit", strcmp(measure, "absorbance") == 0 ? "AU" : "", "at", at);
        if (!row) { /* never silently: a value that cannot be written down is an error */
            log_error("sched", "run=%s step=%s well=%s: measurement not recorded (bad text)", r->id,
                      st->name, key);
            continue;
        }
        if (nm)
            json_object_set(row, "wavelength_nm", nm);
        json_array_append_new(rows, row);
    }
    return rows;
}

/* An entry of a step program in words: what it did (done) or was to do. */
static void entry_text(const json_t *e, bool done, char *buf, size_t cap)
{
    const char *action = json_string_value(json_object_get(e, "action")) ?: "?";
    const json_t *p = json_object_get(e, "params");
    const json_t *v = json_object_get(p, "volume_ul");
    char vol[48] = "";
    if (json_is_number(v))
        snprintf(vol, sizeof vol, "%g µL", json_number_value(v));
    else if (json_is_array(v))
        snprintf(vol, sizeof vol, "µL per channel");
    const char *reagent = json_string_value(json_object_get(p, "reagent"));
    const char *well = json_string_value(json_object_get(p, "well"));
    const char *from = reagent ? reagent : well ? well : "?";
    if (strcmp(action, "pick_up_tips") == 0)
        snprintf(buf, cap, "%s", done ? "tips picked up" : "pick up tips");
    else if (strcmp(action, "drop_tips") == 0)
        snprintf(buf, cap, "%s", done ? "tips dropped" : "drop tips");
    else if (strcmp(action, "aspirate") == 0)
        snprintf(buf, cap, "%s %s from %.64s", done ? "aspirated" : "aspirate", vol, from);
    else if (strcmp(action, "dispense") == 0)
        snprintf(buf, cap, "%s %s into %.64s", done ? "dispensed" : "dispense", vol,
                 well ? well : "?");
    else
        snprintf(buf, cap, "%.64s%s", action, done ? " done" : "");
}

/* Notes an entry of the program that succeeded. */
static void progress_add(exec_t *ex, const json_t *e)
{
    char one[160];
    entry_text(e, true, one, sizeof one);
    size_t n = strlen(ex->done);
    if (n + strlen(one) + 8 < sizeof ex->done)
        snprintf(ex->done + n, sizeof ex->done - n, "%s%s", n ? ", " : "", one);
    else if (n + 5 < sizeof ex->done && !strstr(ex->done, ", ..."))
        snprintf(ex->done + n, sizeof ex->done - n, ", ...");
    if (!json_is_true(json_object_get(e, "dry")))
        ex->wet = true;
}

static void call_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    (void)d;
    call_t *c = arg;
    lab_sched_t *s = c->s;
    s->calls--;
    if (s->closing) { /* the daemon stops: the step stays running; a restart interrupts it */
        free(c);
        maybe_free(s);
        return;
    }
    srun_t *r = run_find(s, c->id);
    exec_t *ex = r ? r->ex : NULL;
    if (!ex || ex->gen != c->gen) { /* the step ended meanwhile (timeout, cancel) */
        free(c);
        return;
    }
    free(c);
    ex->in_call = false;
    json_t *e = json_array_get(ex->prog, ex->pc);
    sstep_t *st = &r->st[ex->k];
    if (err->code != LAB_OK && json_is_true(json_object_get(e, "optional"))) {
        log_info("sched", "run=%s step=%s: %s not needed (%s)", r->id, st->name,
                 json_string_value(json_object_get(e, "action")), lab_err_json_name(err->code));
    } else if (err->code != LAB_OK) {
        /* In doubt unless the driver proves the action never started, or it is dry handling
         * (tips) after nothing but dry handling: then a repeat cannot move liquid twice. */
        bool dry = json_is_true(json_object_get(e, "dry"));
        bool doubt = ex->wet || (!dry && !err->not_started);
        char what[160], why[300];
        entry_text(e, false, what, sizeof what);
        snprintf(why, sizeof why, "%.120s %s: %s%s%.120s%s", what,
                 err->not_started ? "not started" : "not confirmed", lab_err_json_name(err->code),
                 err->text[0] ? " (" : "", err->text, err->text[0] ? ")" : "");
        if (ex->cleanup) {
            log_error("sched", "run=%s cleanup after cancel failed: %s", r->id, why);
            r->ex = NULL;
            exec_free(ex);
            run_remove(s, r);
            return;
        }
        step_failed(s, ex, why, doubt);
        return;
    }
    progress_add(ex, e);
    const char *mark = json_string_value(json_object_get(e, "mark"));
    if (mark && strcmp(mark, "loaded") == 0) {
        st->loaded_ms = now_ms(s);
        if (!ex->cleanup)
            persist(s, r, NULL, NULL);
    } else if (mark && strcmp(mark, "unloaded") == 0) {
        st->unloaded = true;
    }
    if (json_is_true(json_object_get(e, "measure"))) {
        json_t *rows = measurement_rows(s, r, st, result);
        if (!ex->rows)
            ex->rows = json_array();
        json_array_extend(ex->rows, rows);
        json_decref(rows);
    }
    ex->pc++;
    advance(s, ex);
}

/* The step's own work begins (after the plate's move, if any): its lag to the previous step. */
static void take_lag(lab_sched_t *s, srun_t *r, int k)
{
    sstep_t *st = &r->st[k];
    if (k == 0 || !r->st[k - 1].end_ms)
        return;
    st->lag_s = (double)(now_ms(s) - r->st[k - 1].end_ms) / 1000.0;
    if (st->max_lag >= 0 && st->lag_s > st->max_lag + 1e-3 && !st->lag_violated) {
        st->lag_violated = true;
        s->stats.lag_violations++;
        log_warn("sched", "run=%s step=%s started %.1f s after %s ended: its maximum lag is %g s",
                 r->id, st->name, st->lag_s, r->st[k - 1].name, st->max_lag);
    }
}

/* Runs the program from pc until it waits (a call, a timer, an instrument) or ends. */
static void advance(lab_sched_t *s, exec_t *ex)
{
    srun_t *r = ex->r;
    sstep_t *st = &r->st[ex->k];
    while (!ex->in_call) {
        if (ex->pc >= json_array_size(ex->prog)) {
            if (ex->cleanup) {
                log_info("sched", "run=%s cleanup done: plate out of %s", r->id,
                         lab_driver_id(inst_at(s, st->inst)));
                st->unloaded = true;
                step_release_site(s, st);
                r->ex = NULL;
                exec_free(ex);
                run_remove(s, r);
                kick(s);
                return;
            }
            step_done(s, ex);
            return;
        }
        json_t *e = json_array_get(ex->prog, ex->pc);
        json_t *on = json_object_get(e, "on");
        if (ex->lag_pending && !on)
            take_lag(s, r, ex->k);
        ex->lag_pending = ex->lag_pending && on;
        json_t *w = json_object_get(e, "wait_s");
        if (w) {
            if (ex->cleanup) {
                ex->pc++;
                continue;
            }
            if (!ex->wait_until_ms)
                ex->wait_until_ms = (st->loaded_ms ? st->loaded_ms : now_ms(s)) +
                                    (int64_t)llround(json_number_value(w) * 1000);
            if (now_ms(s) < ex->wait_until_ms) {
                poke(s); /* the tick arms its timer for the wait's end */
                return;
            }
            ex->wait_until_ms = 0;
            ex->pc++;
            continue;
        }
        const char *action = json_string_value(json_object_get(e, "action"));
        const char *mark = json_string_value(json_object_get(e, "mark"));
        if (ex->cleanup && !(mark && strcmp(mark, "unloaded") == 0)) {
            ex->pc++;
            continue;
        }
        lab_driver_t *d = inst_at(s, on ? (int)json_integer_value(on) : st->inst);
        lab_inst_state_t is = lab_driver_state(d);
        if (is == LAB_INST_OFFLINE || is == LAB_INST_FAULT || is == LAB_INST_PAUSED) {
            /* nothing is queued on it meanwhile: the hold is ours, and says why */
            const lab_drv_error_t *le = lab_driver_last_error(d);
            bool say = is != LAB_INST_PAUSED && le->code != LAB_OK;
            snprintf(ex->hold_why, sizeof ex->hold_why, "step %.63s holds: %.63s is %s%s%.200s",
                     st->name, lab_driver_id(d), lab_inst_state_name(is),
                     say                     ? ": "
                     : is == LAB_INST_PAUSED ? " by an operator"
                                             : "",
                     say ? le->text : "");
            if (!ex->hold)
                log_warn("sched", "run=%s %s", r->id, ex->hold_why);
            ex->hold = true;
            why_flush(s, r);
            return;
        }
        if (ex->hold) {
            ex->hold = false;
            ex->hold_why[0] = '\0';
            why_flush(s, r);
        }
        call_t *c = LAB_NEW(call_t);
        c->s = s;
        snprintf(c->id, sizeof c->id, "%s", r->id);
        c->gen = ex->gen;
        lab_drv_error_t err = {0};
        ex->in_call = true;
        s->calls++;
        if (lab_driver_call(d, action, json_object_get(e, "params"), 0, call_done, c, &err, NULL) !=
            0) {
            ex->in_call = false;
            s->calls--;
            free(c);
            if (err.code == LAB_EOFFLINE || err.code == LAB_EBUSY) {
                snprintf(ex->hold_why, sizeof ex->hold_why, "step %.63s holds: %.250s", st->name,
                         err.text);
                ex->hold = true;
                why_flush(s, r);
                return;
            }
            char why[300];
            snprintf(why, sizeof why, "%s refused: %s (%s)", action, lab_err_json_name(err.code),
                     err.text);
            step_failed(s, ex, why, false);
            return;
        }
    }
}

static exec_t *exec_new(lab_sched_t *s, srun_t *r, json_t *prog)
{
    exec_t *ex = LAB_NEW(exec_t);
    ex->r = r;
    ex->k = r->cur;
    ex->gen = ++s->gen;
    ex->prog = prog;
    sstep_t *st = &r->st[r->cur];
    ex->deadline_ms = st->start_ms +
                      (int64_t)llround((s->cfg->sched_timeout_factor * st->nominal_s + 300) * 1000);
    r->ex = ex;
    return ex;
}

/* The program of the step on d. A step whose params say "design": true (a campaign plate's
 * dispense) gets the run's design, its volumes per well, in that place. */
static json_t *step_program(srun_t *r, const sstep_t *st, lab_driver_t *d, char *err, size_t errlen)
{
    const json_t *params = st->params;
    json_t *merged = NULL;
    if (json_is_true(json_object_get(params, "design"))) {
        merged = json_deep_copy(params);
        json_t *design = json_object_get(r->doc, "design");
        json_object_set(merged, "design", design ? design : json_null());
        params = merged;
    }
    json_t *prog =
        lab_op_program(st->op, d, params, st->nominal_s, st->cassette, st->slot, err, errlen);
    json_decref(merged);
    return prog;
}

static void start_step(lab_sched_t *s, srun_t *r)
{
    sstep_t *st = &r->st[r->cur];
    int64_t now = now_ms(s);
    if (!lab_fsm_edge(&lab_step_fsm, (int)st->state, LAB_STEP_RUNNING)) {
        /* the run waits with the reason rather than start a step its table says cannot */
        log_error("sched", "run=%s step=%s is %s and cannot start", r->id, st->name,
                  lab_step_state_name(st->state));
        snprintf(r->why, sizeof r->why, "step %s is %s and cannot start", st->name,
                 lab_step_state_name(st->state));
        return;
    }
    st->inst = st->plan_inst;
    lab_driver_t *d = inst_at(s, st->inst);
    char err[300] = "";
    /* a plate still inside from an attempt that failed after its load: no second load */
    bool inside = st->holds_site && st->loaded_ms && !st->unloaded;
    if (lab_op_needs_site(st->op, d) && !st->holds_site) {
        if (!site_take(s, st->inst, &st->cassette, &st->slot)) {
            snprintf(r->why, sizeof r->why, "step %s: every slot of %s is taken", st->name,
                     lab_driver_id(d));
            kick(s);
            return;
        }
        st->holds_site = true;
    }
    json_t *prog = step_program(r, st, d, err, sizeof err);
    (void)step_set(r, st, LAB_STEP_RUNNING); /* checked on entry */
    st->start_ms = now;
    st->end_ms = 0;
    if (!inside) {
        st->loaded_ms = 0;
        st->unloaded = false;
    }
    st->late_noted = false;
    if (prog && st->attempts > 0 && lab_op_has_action(d, "drop_tips"))
        /* an attempt that failed half way may have left tips on: off first, if any */
        json_array_insert_new(prog, 0,
                              json_pack("{s:s,s:{},s:b,s:b}", "action", "drop_tips", "params",
                                        "optional", 1, "dry", 1));
    st->attempts++;
    st->error[0] = '\0';
    s->stats.steps_started++;
    if (prog && st->plan_move_ms && inst_at(s, st->plan_mover) && inst_at(s, st->plan_move_from)) {
        /* the plate goes over on the mover first */
        json_t *mv = json_pack("{s:s,s:{s:s,s:s,s:s},s:i,s:b}", "action", "move", "params", "plate",
                               r->plate[0] ? r->plate : r->id, "from",
                               lab_driver_id(inst_at(s, st->plan_move_from)), "to",
                               lab_driver_id(d), "on", st->plan_mover, "dry", 1);
        json_array_insert_new(prog, 0, mv);
    }
    if (r->state != LAB_RUN_RUNNING) {
        set_state(s, r, LAB_RUN_RUNNING);
        if (!get_time(r->doc, "started_at"))
            put_time(r->doc, "started_at", now);
    }
    log_info("sched", "run=%s step=%s starts on %s (attempt %d)", r->id, st->name, lab_driver_id(d),
             st->attempts);
    exec_t *ex = exec_new(s, r, prog ? prog : json_array());
    ex->lag_pending = !inside; /* a plate still inside began its step on the first attempt */
    size_t i;
    json_t *e;
    if (inside)
        json_array_foreach(ex->prog, i, e) if (json_object_get(e, "wait_s"))
        {
            ex->pc = i;
            break;
        }
    persist(s, r, NULL, NULL);
    if (!prog) {
        step_failed(s, ex, err, false);
        return;
    }
    advance(s, ex);
}

/* Steps of ours on instrument i right now (a cancelled run's unload included). */
static int inst_in_use(const lab_sched_t *s, int i)
{
    int n = 0;
    for (int j = 0; j < s->nruns; j++) {
        const srun_t *r = s->runs[j];
        n += r->ex && r->st[r->ex->k].inst == i;
    }
    return n;
}

/* ---- the tick: re-plan, dispatch, waits, timeouts ---- */

static void arm(lab_sched_t *s, int64_t at_lab_ms);
static void orphans_arm(lab_sched_t *s);

static void on_tick(uv_timer_t *t)
{
    lab_sched_t *s = t->data;
    if (s->closing)
        return;
    s->in_tick = true;
    if (orphans_ask(s))
        s->replan = true;
    if (s->replan)
        replan(s);
    int64_t now = now_ms(s);
    /* half a loop millisecond of slack, in lab time */
    int64_t slack = (int64_t)ceil(2 * s->cfg->time_scale);
    int64_t next = INT64_MAX;
    /* index loop: runs may leave the array while we walk it */
    for (int i = 0; i < s->nruns; i++) {
        srun_t *r = s->runs[i];
        why_flush(s, r);
        exec_t *ex = r->ex;
        if (ex) {
            sstep_t *st = &r->st[ex->k];
            if (!ex->cleanup && now >= ex->deadline_ms) {
                char why[160];
                snprintf(why, sizeof why, "timed out after %.0f lab s",
                         (double)(now - st->start_ms) / 1000.0);
                ex->gen = 0;
                step_failed(s, ex, why, true);
                i = -1; /* the array may have changed; start over (bounded: ex is gone) */
                continue;
            }
            if ((ex->wait_until_ms && now >= ex->wait_until_ms) || ex->hold) {
                srun_t *keep = r;
                advance(s, ex);
                if (i < s->nruns && s->runs[i] != keep)
                    i--;
                continue;
            }
            if (ex->wait_until_ms && ex->wait_until_ms < next)
                next = ex->wait_until_ms;
            if (!ex->cleanup && ex->deadline_ms < next)
                next = ex->deadline_ms;
            if (!st->late_noted && st->plan_end_ms && st->start_ms) {
                int64_t due = st->start_ms + (int64_t)(st->plan_s * 1000);
                if (now >= due) { /* running late: let the others move */
                    st->late_noted = true;
                    s->replan = true;
                } else if (due < next) {
                    next = due;
                }
            }
            continue;
        }
        if (!run_plannable(r) || r->why[0])
            continue;
        sstep_t *st = &r->st[r->cur];
        if (st->state != LAB_STEP_PENDING || !st->plan_start_ms)
            continue;
        int64_t due = st->plan_move_ms ? st->plan_move_ms : st->plan_start_ms;
        if (due <= now + slack) {
            if (!inst_available(s, st->plan_inst) ||
                (st->plan_move_ms && !inst_available(s, st->plan_mover))) {
                s->replan = true;
                continue;
            }
            /* a step before it ran longer than planned: this one waits for the instrument (the
             * step's end re-plans) rather than overbooking it */
            if (inst_in_use(s, st->plan_inst) >= lab_driver_capacity(inst_at(s, st->plan_inst)))
                continue;
            srun_t *keep = r;
            start_step(s, r);
            if (i < s->nruns && s->runs[i] != keep)
                i--;
        } else if (due < next) {
            next = due;
        }
    }
    s->in_tick = false;
    if (s->replan)
        arm(s, now);
    else if (next != INT64_MAX)
        arm(s, next);
    orphans_arm(s);
}

static void arm(lab_sched_t *s, int64_t at_lab_ms)
{
    if (s->closing)
        return;
    int64_t now = now_ms(s);
    double lab_s = at_lab_ms > now ? (double)(at_lab_ms - now) / 1000.0 : 0;
    uint64_t ms = lab_clock_loop_ms(s->clock, lab_s);
    if (at_lab_ms > now && ms == 0)
        ms = 1;
    uv_timer_start(&s->tick, on_tick, ms, 0);
}

static void kick(lab_sched_t *s)
{
    s->replan = true;
    if (!s->in_tick)
        arm(s, 0);
}

static void poke(lab_sched_t *s)
{
    if (!s->in_tick)
        arm(s, 0);
}

/* The tick at loop time `delay` from now, unless one is armed sooner. */
static void arm_by(lab_sched_t *s, uint64_t delay)
{
    if (uv_is_active((uv_handle_t *)&s->tick) && uv_timer_get_due_in(&s->tick) <= delay)
        return;
    uv_timer_start(&s->tick, on_tick, delay, 0);
}

/* Queued runs wait for their workflow: a tick when the store is to be asked again. */
static void orphans_arm(lab_sched_t *s)
{
    if (!s->norphans || s->in_tick || s->closing)
        return;
    uint64_t now = uv_now(s->loop), at = s->orphans_asked_ms + WF_ASK_MS;
    arm_by(s, at > now ? at - now : 0);
}

/* A submission: plan again, at most once per SUBMIT_GAP_MS, never later than a tick already
 * armed. */
static void kick_soon(lab_sched_t *s)
{
    s->replan = true;
    if (s->in_tick || s->closing)
        return;
    uint64_t now = uv_now(s->loop), at = s->replanned_ms + SUBMIT_GAP_MS;
    arm_by(s, at > now ? at - now : 0);
}

void lab_sched_kick(lab_sched_t *s)
{
    if (s)
        kick(s);
}

/* Idle and busy plan alike, and an instrument flips between them on every action: only a change
 * of availability (one that stops or comes back) plans again, at once. */
static void on_instr_state(void *ctx, lab_driver_t *d, lab_inst_state_t state)
{
    lab_sched_t *s = ctx;
    int i = inst_index(s, lab_driver_id(d));
    bool up = state == LAB_INST_IDLE || state == LAB_INST_BUSY;
    if (i < 0 || i >= s->nsites || s->inst_up[i] != up) {
        if (i >= 0 && i < s->nsites)
            s->inst_up[i] = up;
        kick(s);
    }
}

/* ---- start: the runs that are not over, and what a restart interrupted ---- */

static void recover(lab_sched_t *s, srun_t *r)
{
    if (!r->wf || r->cur >= r->n)
        return;
    sstep_t *st = &r->st[r->cur];
    if (st->state == LAB_STEP_RUNNING) {
        st->interruptions++;
        lab_driver_t *d = inst_at(s, st->inst);
        if (strcmp(st->op, "incubate") == 0 && st->loaded_ms && !st->unloaded && d) {
            /* the plate is inside since loaded_at: the incubation goes on, the clock with it */
            char err[300];
            json_t *prog = lab_op_program(st->op, d, st->params, st->nominal_s, st->cassette,
                                          st->slot, err, sizeof err);
            if (prog) {
                exec_t *ex = exec_new(s, r, prog);
                size_t i;
                json_t *e;
                json_array_foreach(prog, i, e) if (json_object_get(e, "wait_s"))
                {
                    ex->pc = i;
                    break;
                }
                log_warn("sched",
                         "run=%s step=%s was in flight at the restart; the plate is in "
                         "%s since its load: the incubation goes on",
                         r->id, st->name, lab_driver_id(d));
                persist(s, r, NULL, NULL);
                advance(s, ex);
                return;
            }
        }
        (void)step_set(r, st, LAB_STEP_INTERRUPTED); /* from running: the table allows it */
        st->end_ms = now_ms(s);
        snprintf(st->error, sizeof st->error, "interrupted: the daemon stopped while it ran");
        log_warn("sched", "run=%s step=%s was in flight at the restart: interrupted", r->id,
                 st->name);
        step_release_site(s, st);
        set_state(s, r, LAB_RUN_INTERRUPTED);
        persist(s, r, NULL, NULL);
        apply_policy(s, r, r->cur, true, NULL);
    } else if (r->state == LAB_RUN_INTERRUPTED) {
        apply_policy(s, r, r->cur, true, NULL);
    }
}

static const char *const live_states[] = {"queued", "planned", "running", "paused", "interrupted"};

int lab_sched_start(lab_sched_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                    const lab_clock_t *clock, lab_store_t *st, lab_instr_t *instr)
{
    lab_sched_t *s = LAB_NEW(lab_sched_t);
    s->loop = loop;
    s->cfg = cfg;
    s->clock = clock;
    s->st = st;
    s->in = instr;
    s->history = json_array();
    int ni = ninst(s);
    s->nsites = ni;
    s->site_used = lab_calloc((size_t)ni + 1, sizeof *s->site_used);
    s->site_n = lab_calloc((size_t)ni + 1, sizeof *s->site_n);
    s->inst_up = lab_calloc((size_t)ni + 1, sizeof *s->inst_up);
    for (int i = 0; i < ni; i++) {
        s->inst_up[i] = inst_available(s, i);
        s->site_n[i] = lab_driver_sites(inst_at(s, i));
        s->site_used[i] = lab_calloc((size_t)s->site_n[i] + 1, 1);
    }
    uv_timer_init(loop, &s->tick);
    s->tick.data = s;
    /* every run not over, in submission order */
    srun_t **loaded = NULL;
    int nloaded = 0;
    for (size_t k = 0; k < sizeof live_states / sizeof *live_states; k++) {
        int64_t after = 0;
        do {
            char **docs = NULL;
            int64_t next = 0;
            int n = lab_runs_list(st, live_states[k], after, 500, &docs, &next);
            for (int i = 0; i < n; i++) {
                json_t *doc = json_loads(docs[i], 0, NULL);
                if (json_is_object(doc) && strcmp(live_states[k], "queued") == 0) {
                    admit(s, doc); /* nothing of a queued run is begun: nothing to recover */
                } else if (json_is_object(doc)) {
                    loaded = lab_realloc(loaded, sizeof *loaded * (size_t)(nloaded + 1));
                    loaded[nloaded++] = run_new(s, doc);
                } else {
                    json_decref(doc);
                }
                free(docs[i]);
            }
            free(docs);
            after = next;
            if (n < 0)
                break;
        } while (after);
    }
    s->in_tick = true; /* no timer until everything is loaded */
    for (int i = 0; i < nloaded; i++)
        recover(s, loaded[i]);
    s->in_tick = false;
    free(loaded);
    lab_instr_on_state(instr, on_instr_state, s);
    if (s->nruns + s->ncold + s->norphans)
        log_info("sched", "%d runs not over, taken up from the store",
                 s->nruns + s->ncold + s->norphans);
    kick(s);
    *out = s;
    return 0;
}

static void tick_closed(uv_handle_t *h)
{
    lab_sched_t *s = h->data;
    void (*cb)(void *) = s->close_cb;
    void *arg = s->close_arg;
    s->tick_closed = true;
    for (int i = 0; i < s->nruns; i++)
        run_free(s->runs[i]);
    free(s->runs);
    free(s->cold);
    for (int i = 0; i < s->norphans; i++)
        free(s->orphans[i].wf);
    free(s->orphans);
    for (int i = 0; i < s->nwfc; i++) {
        free(s->wfc[i].name);
        json_decref(s->wfc[i].wf);
    }
    free(s->wfc);
    for (int i = 0; i < s->nsites; i++)
        free(s->site_used[i]);
    free(s->site_used);
    free(s->site_n);
    free(s->inst_up);
    json_decref(s->history);
    s->history = NULL;
    (void)cb;
    (void)arg;
    maybe_free(s); /* or the last store op or driver call to come back does */
}

void lab_sched_stop(lab_sched_t *s)
{
    if (s->closing)
        return;
    s->closing = true;
    lab_instr_on_state(s->in, NULL, NULL);
    uv_timer_stop(&s->tick);
}

void lab_sched_close(lab_sched_t *s, void (*cb)(void *arg), void *arg)
{
    s->closing = true; /* lab_sched_stop came first: the instruments are gone by now */
    uv_timer_stop(&s->tick);
    s->in = NULL;
    s->close_cb = cb;
    s->close_arg = arg;
    uv_close((uv_handle_t *)&s->tick, tick_closed);
}

/* ---- the API's side ---- */

void lab_sched_submitted(lab_sched_t *s, const char *doc)
{
    lab_sched_submitted_doc(s, json_loads(doc, 0, NULL));
}

void lab_sched_submitted_doc(lab_sched_t *s, json_t *d)
{
    if (!json_is_object(d) || s->closing) {
        json_decref(d);
        return;
    }
    if (run_find(s, json_string_value(json_object_get(d, "id")) ?: "")) {
        json_decref(d);
        return;
    }
    if (admit(s, d)) /* a run that only joins the queue changes no plan */
        kick_soon(s);
    else
        orphans_arm(s);
}

static pend_t *pend_new(lab_sched_t *s, lab_sched_done_cb cb, void *arg)
{
    pend_t *p = LAB_NEW(pend_t);
    p->s = s;
    p->cb = cb;
    p->arg = arg;
    return p;
}

int lab_sched_cancel(lab_sched_t *s, const char *id, const char *by, const char *reason,
                     lab_sched_done_cb cb, void *arg)
{
    srun_t *r = run_thaw(s, id);
    if (!r || lab_run_state_final(r->state))
        return LAB_ENOTFOUND;
    json_object_set_new(r->doc, "cancelled_by", json_string(by));
    if (reason)
        json_object_set_new(r->doc, "cancel_reason", json_string(reason));
    if (r->ex) {
        exec_t *ex = r->ex;
        sstep_t *st = &r->st[ex->k];
        (void)step_set(r, st, LAB_STEP_CANCELLED); /* the run is cancelled either way */
        st->end_ms = now_ms(s);
        if (st->loaded_ms && !st->unloaded) { /* the plate comes out of the incubator first */
            ex->cleanup = true;
            ex->wait_until_ms = 0;
            ex->gen = ++s->gen;
            ex->in_call = false; /* a load's late answer is ignored; the unload follows */
        } else {
            r->ex = NULL;
            exec_free(ex);
        }
    }
    log_info("sched", "run=%s cancelled by %s", r->id, by);
    finish_run(s, r, LAB_RUN_CANCELLED, NULL, pend_new(s, cb, arg));
    if (r == run_find(s, id) && r->ex && r->ex->cleanup)
        advance(s, r->ex);
    kick(s);
    return 0;
}

int lab_sched_resume(lab_sched_t *s, const char *id, const char *by, const char *how,
                     lab_sched_done_cb cb, void *arg, char *msg, size_t msglen)
{
    srun_t *r = run_thaw(s, id);
    if (!r)
        return LAB_ENOTFOUND;
    if (r->state != LAB_RUN_PAUSED || r->cur >= r->n) {
        snprintf(msg, msglen, "run %s is %s, not paused", id, lab_run_state_name(r->state));
        return LAB_ESTATE;
    }
    sstep_t *st = &r->st[r->cur];
    bool skip = strcmp(how, "skip") == 0;
    lab_step_state_t sto = skip ? LAB_STEP_SKIPPED : LAB_STEP_PENDING;
    if (st->state != sto && !lab_fsm_edge(&lab_step_fsm, (int)st->state, (int)sto)) {
        snprintf(msg, msglen, "run %s: step %s is %s, it cannot be %s", id, st->name,
                 lab_step_state_name(st->state), skip ? "skipped" : "retried");
        return LAB_ESTATE;
    }
    json_object_del(r->doc, "paused_reason");
    json_object_set_new(r->doc, "resumed_by", json_string(by));
    r->why[0] = '\0';
    (void)step_set(r, st, sto); /* checked above */
    if (skip) {
        if (!st->end_ms)
            st->end_ms = now_ms(s);
        r->cur++;
        if (r->cur >= r->n) {
            finish_run(s, r, LAB_RUN_DONE, NULL, pend_new(s, cb, arg));
            kick(s);
            return 0;
        }
    }
    bool begun = false;
    for (int k = 0; k < r->n; k++)
        begun |= r->st[k].start_ms > 0;
    set_state(s, r, begun ? LAB_RUN_RUNNING : LAB_RUN_QUEUED);
    log_info("sched", "run=%s resumed by %s (%s)", r->id, by, how);
    persist(s, r, NULL, pend_new(s, cb, arg));
    kick(s);
    return 0;
}

int lab_sched_reprioritize(lab_sched_t *s, const char *id, const char *by, const char *priority,
                           bool has_score, double score, lab_sched_done_cb cb, void *arg)
{
    srun_t *r = run_thaw(s, id);
    if (!r || lab_run_state_final(r->state))
        return LAB_ENOTFOUND;
    if (priority) {
        r->prio = prio_of(priority);
        json_object_set_new(r->doc, "priority", json_string(priority));
    }
    if (has_score) {
        r->score = score;
        json_object_set_new(r->doc, "score", json_real(score));
    }
    json_object_set_new(r->doc, "reprioritized_by", json_string(by));
    log_info("sched", "run=%s priority=%s score=%g by %s", r->id,
             json_string_value(json_object_get(r->doc, "priority")), r->score, by);
    persist(s, r, NULL, pend_new(s, cb, arg));
    kick(s);
    return 0;
}

json_t *lab_sched_timeline(lab_sched_t *s)
{
    char now[32], at[32];
    iso(now_ms(s), now);
    iso(s->planned_at_ms ? s->planned_at_ms : now_ms(s), at);
    json_t *items = json_deep_copy(s->history);
    json_t *waiting = json_array();
    long viol = 0;
    for (int i = 0; i < s->nruns; i++) {
        srun_t *r = s->runs[i];
        viol += count_violations(r);
        for (int k = 0; k < r->n; k++) {
            sstep_t *st = &r->st[k];
            if (st->state != LAB_STEP_PENDING && st->start_ms)
                json_array_append_new(items, timeline_item(s, r, k, false));
            else if (st->state == LAB_STEP_PENDING && st->plan_start_ms && run_plannable(r))
                json_array_append_new(items, timeline_item(s, r, k, true));
        }
        if (run_why(r)[0] || !r->wf)
            json_array_append_new(waiting,
                                  json_pack("{s:s,s:s,s:s}", "run", r->id, "state",
                                            lab_run_state_name(r->state), "reason", run_why(r)));
    }
    char why[300];
    for (int i = 0; i < s->norphans; i++)
        json_array_append_new(waiting, json_pack("{s:s,s:s,s:s}", "run", s->orphans[i].c.id,
                                                 "state", "queued", "reason",
                                                 orphan_why(&s->orphans[i], why, sizeof why)));
    for (int i = 0; i < s->ncold; i++)
        json_array_append_new(waiting, json_pack("{s:s,s:s,s:s}", "run", s->cold[i].id, "state",
                                                 "queued", "reason", cold_why(why, sizeof why)));
    return json_pack("{s:s,s:f,s:s,s:o,s:o,s:I,s:i}", "now", now, "time_scale", s->cfg->time_scale,
                     "planned_at", at, "items", items, "waiting", waiting, "lag_violations",
                     (json_int_t)s->stats.lag_violations, "runs",
                     s->nruns + s->ncold + s->norphans);
}

void lab_sched_on_run(lab_sched_t *s, lab_sched_run_cb cb, void *ctx)
{
    LAB_ASSERT(s->non_run < (int)(sizeof s->on_run / sizeof *s->on_run));
    s->on_run[s->non_run].cb = cb;
    s->on_run[s->non_run].ctx = ctx;
    s->non_run++;
}

int lab_sched_run_started(lab_sched_t *s, const char *id)
{
    srun_t *r = run_find(s, id);
    char why[300];
    if (!r)
        return queued_why(s, id, why, sizeof why) ? 0 : LAB_ENOTFOUND;
    if (r->state != LAB_RUN_QUEUED && r->state != LAB_RUN_PLANNED)
        return 1;
    for (int k = 0; k < r->n; k++)
        if (r->st[k].state != LAB_STEP_PENDING)
            return 1;
    return 0;
}

json_t *lab_sched_run_live(lab_sched_t *s, const char *id)
{
    srun_t *r = run_find(s, id);
    char why[300];
    if (!r && queued_why(s, id, why, sizeof why))
        return json_pack("{s:s}", "waiting_reason", why);
    if (!r)
        return NULL;
    json_t *o = json_object();
    if (run_why(r)[0])
        json_object_set_new(o, "waiting_reason", json_string(run_why(r)));
    if (r->cur < r->n && r->st[r->cur].state == LAB_STEP_PENDING && r->st[r->cur].plan_start_ms) {
        json_object_set_new(o, "next_step", json_string(r->st[r->cur].name));
        put_time(o, "next_start", r->st[r->cur].plan_start_ms);
    }
    return o;
}

void lab_sched_stats(const lab_sched_t *s, lab_sched_stats_t *out)
{
    *out = s->stats;
    out->runs = s->nruns + s->ncold + s->norphans;
}
