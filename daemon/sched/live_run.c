/* The live run: its steps bound to its workflow version (cached), its document kept in step with
 * its state, every change of a run's or a step's state through the one setter of its table, and
 * the writes of the document through the store's outbox. */
#include "daemon/sched/sched_int.h"
#include "daemon/model/cost.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/text.h"
#include "daemon/store/runs.h"
#include "daemon/store/workflows.h"
#include "planner/planner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void doc_put_time(json_t *o, const char *key, int64_t ms)
{
    if (ms > 0) {
        char b[32];
        iso(ms, b);
        json_object_set_new(o, key, json_string(b));
    } else {
        json_object_del(o, key);
    }
}

int64_t doc_get_time(const json_t *o, const char *key)
{
    int64_t ms = 0;
    const char *v = json_string_value(json_object_get(o, key));
    if (!v || lab_time_parse(v, &ms) != 0)
        return 0;
    return ms;
}

long run_violations(const srun_t *r)
{
    long n = 0;
    for (int k = 0; k < r->n; k++)
        n += r->st[k].lag_violated;
    return n;
}

/* Why the run waits now: its step holds on an instrument, or r->why; "" when it does not. */
const char *run_why(const srun_t *r)
{
    if (r->ex && r->ex->hold && r->ex->hold_why[0])
        return r->ex->hold_why;
    if (r->gate == GATE_ASKED)
        return LAB_SCHED_GATE_WHY;
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
static bool run_why_to_doc(srun_t *r)
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
static void run_doc_sync(lab_sched_t *s, srun_t *r)
{
    run_why_to_doc(r);
    json_t *steps = json_array();
    for (int k = 0; k < r->n; k++) {
        sstep_t *st = &r->st[k];
        json_t *o = json_pack("{s:s,s:s,s:s,s:i}", "name", st->name, "op", st->op, "state",
                              lab_step_state_name(st->state), "attempts", st->attempts);
        lab_driver_t *d = inst_at(s, st->inst);
        if (d && st->state != LAB_STEP_PENDING)
            json_object_set_new(o, "instrument", json_string(lab_driver_id(d)));
        doc_put_time(o, "started_at", st->state != LAB_STEP_PENDING ? st->start_ms : 0);
        doc_put_time(o, "ended_at", st->state != LAB_STEP_PENDING ? st->end_ms : 0);
        if (st->cassette)
            json_object_set_new(o, "site",
                                json_pack("{s:i,s:i}", "cassette", st->cassette, "slot", st->slot));
        /* The plan the step started on stays in the document: a finished run shows it. */
        if (st->state != LAB_STEP_PENDING) {
            doc_put_time(o, "planned_start", st->plan_start_ms);
            doc_put_time(o, "planned_end", st->plan_end_ms);
        }
        doc_put_time(o, "loaded_at", st->loaded_ms);
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
        if (st->consumed)
            json_object_set(o, "consumed", st->consumed);
        json_t *scan = scan_json(s, st);
        if (scan)
            json_object_set_new(o, "scan", scan);
        json_array_append_new(steps, o);
    }
    json_object_set_new(r->doc, "steps", steps);
    json_object_set_new(r->doc, "state", json_string(lab_run_state_name(r->state)));
    json_object_set_new(r->doc, "lag_violations", json_integer(run_violations(r)));
    doc_put_time(r->doc, "updated_at", now_ms(s));
}

void run_steps_from_doc(lab_sched_t *s, srun_t *r)
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
        st->start_ms = doc_get_time(o, "started_at");
        st->end_ms = doc_get_time(o, "ended_at");
        st->loaded_ms = doc_get_time(o, "loaded_at");
        if (st->state != LAB_STEP_PENDING) {
            st->plan_start_ms = doc_get_time(o, "planned_start");
            st->plan_end_ms = doc_get_time(o, "planned_end");
        }
        st->unloaded = json_is_true(json_object_get(o, "unloaded"));
        json_t *site = json_object_get(o, "site");
        st->cassette = (int)json_integer_value(json_object_get(site, "cassette"));
        st->slot = (int)json_integer_value(json_object_get(site, "slot"));
        st->lag_violated = json_is_true(json_object_get(o, "lag_violation"));
        json_t *lag = json_object_get(o, "lag_s");
        st->lag_s = json_is_number(lag) ? json_number_value(lag) : -1;
        lab_text_copy(st->error, sizeof st->error, json_string_value(json_object_get(o, "error")));
        json_t *used = json_object_get(o, "consumed");
        json_decref(st->consumed);
        st->consumed = json_is_object(used) ? json_deep_copy(used) : NULL;
        scan_from_json(s, st, json_object_get(o, "scan"));
        st->holds_site = st->cassette && st->inst >= 0 &&
                         (st->state == LAB_STEP_RUNNING || (st->loaded_ms && !st->unloaded));
        if (st->holds_site)
            sites_mark(s, st->inst, st->cassette, st->slot, 1);
    }
    r->cur = 0;
    while (r->cur < r->n &&
           (r->st[r->cur].state == LAB_STEP_DONE || r->st[r->cur].state == LAB_STEP_SKIPPED))
        r->cur++;
}

int run_prio_of(const char *p)
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

double doc_num(const json_t *v, double def)
{
    return json_is_number(v) ? json_number_value(v) : def;
}

/* A workflow version from the cache, else from the store; NULL when it is not stored. A stored
 * version never changes; the newest (version 0) and an absent one are asked again after
 * WF_ASK_MS. Borrowed. */
json_t *run_wf_lookup(lab_sched_t *s, const char *name, int version)
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
bool run_bind_workflow(lab_sched_t *s, srun_t *r)
{
    const char *name = json_string_value(json_object_get(r->doc, "workflow"));
    json_t *v = json_object_get(r->doc, "workflow_version");
    json_t *wf = run_wf_lookup(s, name ? name : "", v ? (int)json_integer_value(v) : 0);
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
        st->nominal_s = json_is_array(dur) ? doc_num(json_array_get(dur, 1), 0) : doc_num(dur, 0);
        st->plan_s = st->nominal_s;
        if (strcmp(st->op, "incubate") == 0)
            st->plan_s += s->cfg->sched_handling_s;
        st->min_lag = doc_num(json_object_get(o, "start_after_s"), 0);
        st->max_lag = doc_num(json_object_get(o, "start_within_s"), -1);
        st->inst = st->plan_inst = -1;
        st->lag_s = -1;
        st->scan = json_is_true(json_object_get(o, "scan"));
        st->scan_reader = -1;
    }
    return true;
}

srun_t *run_new(lab_sched_t *s, json_t *doc)
{
    srun_t *r = LAB_NEW(srun_t);
    r->doc = doc;
    snprintf(r->id, sizeof r->id, "%s", json_string_value(json_object_get(doc, "id")));
    r->plate = lab_strdup(json_string_value(json_object_get(doc, "plate")) ?: "");
    int st = lab_run_state_parse(json_string_value(json_object_get(doc, "state")) ?: "queued");
    r->state = st < 0 ? LAB_RUN_QUEUED : (lab_run_state_t)st;
    r->prompt_open = r->state == LAB_RUN_PAUSED; /* opened when it was paused */
    r->prio = run_prio_of(json_string_value(json_object_get(doc, "priority")));
    r->score = doc_num(json_object_get(doc, "score"), 0);
    r->created_ms = doc_get_time(doc, "created_at");
    r->deadline_ms = doc_get_time(doc, "deadline");
    if (!r->deadline_ms)
        r->deadline_ms = -1;
    r->age = ++s->age;
    if (run_bind_workflow(s, r))
        run_steps_from_doc(s, r);
    if (s->nruns == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->runs = lab_realloc(s->runs, sizeof *s->runs * (size_t)s->cap);
    }
    s->runs[s->nruns++] = r;
    return r;
}

srun_t *run_find(lab_sched_t *s, const char *id)
{
    for (int i = 0; i < s->nruns; i++)
        if (strcmp(s->runs[i]->id, id) == 0)
            return s->runs[i];
    return NULL;
}

/* What a run holds in memory, released (its document stays in the store). */
void run_free(srun_t *r)
{
    exec_free(r->ex);
    json_decref(r->doc);
    json_decref(r->wf);
    free(r->plate);
    for (int k = 0; r->st && k < r->n; k++)
        json_decref(r->st[k].consumed);
    free(r->st);
    free(r);
}

/* Out of the window's array, and its memory released. */
void run_drop(lab_sched_t *s, srun_t *r)
{
    for (int i = 0; i < s->nruns; i++)
        if (s->runs[i] == r) {
            memmove(&s->runs[i], &s->runs[i + 1], sizeof *s->runs * (size_t)(s->nruns - i - 1));
            s->nruns--;
            break;
        }
    if (!s->walking) {
        run_free(r);
        return;
    }
    r->dropped = true;
    r->next_dropped = s->dropped;
    s->dropped = r;
}

void run_free_dropped(lab_sched_t *s)
{
    while (s->dropped) {
        srun_t *r = s->dropped;
        s->dropped = r->next_dropped;
        run_free(r);
    }
}

json_t *run_timeline_item(lab_sched_t *s, srun_t *r, int k, bool planned)
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
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "instrument", d ? lab_driver_id(d) : "",
                          "run", r->id, "plate", r->plate, "step", st->name, "start", a, "end", b,
                          "state", planned ? "planned" : lab_step_state_name(st->state));
    if (st->cassette > 0)
        json_object_set_new(o, "site",
                            json_pack("{s:i,s:i}", "cassette", st->cassette, "slot", st->slot));
    /* The step's window after the previous one ends (as it did, or as planned): a chart draws
     * the read's "must start by" from it. */
    int64_t prev = 0;
    if (k > 0) {
        const sstep_t *p = &r->st[k - 1];
        int64_t due = p->start_ms + (int64_t)(p->plan_s * 1000);
        prev = p->end_ms     ? p->end_ms
               : p->start_ms ? (due > now_ms(s) ? due : now_ms(s))
                             : p->plan_end_ms;
    }
    if (prev > 0 && st->min_lag > 0)
        doc_put_time(o, "not_before", prev + (int64_t)llround(st->min_lag * 1000));
    if (prev > 0 && st->max_lag >= 0)
        doc_put_time(o, "must_start_by", prev + (int64_t)llround(st->max_lag * 1000));
    return o;
}

/* A run that is over leaves the scheduler; its steps stay on the timeline for a while. */
void run_remove(lab_sched_t *s, srun_t *r)
{
    for (int k = 0; k < r->n; k++)
        if (r->st[k].start_ms > 0 && r->st[k].state != LAB_STEP_PENDING)
            json_array_append_new(s->history, run_timeline_item(s, r, k, false));
    while (json_array_size(s->history) > HISTORY_MAX)
        json_array_remove(s->history, 0);
    for (int k = 0; k < r->n; k++)
        if (r->st[k].holds_site)
            sites_mark(s, r->st[k].inst, r->st[k].cassette, r->st[k].slot, 0);
    run_drop(s, r);
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
    sched_maybe_free(s);
}

static const char *doc_str(const json_t *doc, const char *key)
{
    return json_string_value(json_object_get(doc, key));
}

/* A paused run waits for a person: its prompt opens with the pause and is answered by whoever
 * resumes or cancels it (or closes when the run leaves paused otherwise). */
static void run_prompt(srun_t *r, lab_run_update_t *upd)
{
    bool waiting = r->state == LAB_RUN_PAUSED;
    if (waiting == r->prompt_open)
        return;
    r->prompt_open = waiting;
    upd->prompt_id = lab_asprintf("run:%s:paused", r->id);
    if (waiting) {
        const char *why = doc_str(r->doc, "paused_reason");
        upd->prompt = json_pack(
            "{s:b, s:s, s:s, s:s, s:s?, s:s?, s:s}", "open", 1, "kind", "run.paused", "run", r->id,
            "plate", r->plate, "workflow", doc_str(r->doc, "workflow"), "step",
            r->cur < r->n ? r->st[r->cur].name : NULL, "text", why ? why : "paused");
        char *title = lab_asprintf("Run %s paused", r->plate[0] ? r->plate : r->id);
        json_object_set_new(upd->prompt, "title", json_string(title));
        free(title);
        return;
    }
    const char *by = doc_str(r->doc, "resumed_by"), *how = doc_str(r->doc, "resumed_how"),
               *reason = doc_str(r->doc, "resume_reason");
    if (r->state == LAB_RUN_CANCELLED) {
        by = doc_str(r->doc, "cancelled_by");
        how = "cancel";
        reason = doc_str(r->doc, "cancel_reason");
    } else if (!how) {
        by = NULL;
        how = lab_run_state_name(r->state);
    }
    upd->prompt =
        json_pack("{s:b, s:s?, s:s, s:s?}", "open", 0, "by", by, "how", how, "reason", reason);
    if (!by)
        json_object_set_new(upd->prompt, "by", json_null());
}

/* Writes the run's document (with rows: measurement payloads, taken over) through the outbox. */
void run_persist(lab_sched_t *s, srun_t *r, json_t *rows, pend_t *p)
{
    run_doc_sync(s, r);
    lab_run_update_t *upd = lab_run_update_new();
    upd->id = lab_strdup(r->id);
    upd->state = lab_strdup(lab_run_state_name(r->state));
    upd->doc = json_dumps(r->doc, JSON_COMPACT);
    upd->ts_ms = now_ms(s);
    run_prompt(r, upd);
    if (upd->prompt_id && !upd->prompt) { /* not buildable: the run's change goes without it */
        log_error("sched", "run=%s prompt %s not recorded", r->id, upd->prompt_id);
        free(upd->prompt_id);
        upd->prompt_id = NULL;
    }
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
void run_why_flush(lab_sched_t *s, srun_t *r)
{
    if ((r->state == LAB_RUN_QUEUED || r->state == LAB_RUN_PLANNED ||
         r->state == LAB_RUN_RUNNING) &&
        run_why_to_doc(r))
        run_persist(s, r, NULL, NULL);
}

/* Every change of a run's state goes through here: LAB_ESTATE when the run table refuses it. */
int run_set_state(lab_sched_t *s, srun_t *r, lab_run_state_t to)
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
int run_step_set(srun_t *r, sstep_t *st, lab_step_state_t to)
{
    char id[200];
    snprintf(id, sizeof id, "%s/%s", r->id, st->name);
    return lab_step_set_state(&st->state, to, id);
}

static bool run_begun(const srun_t *r)
{
    for (int k = 0; k < r->n; k++)
        if (r->st[k].start_ms)
            return true;
    return false;
}

/* A refused end keeps the run (in memory and stored) as it is, for a person to see. */
void run_finish(lab_sched_t *s, srun_t *r, lab_run_state_t to, json_t *rows, pend_t *p)
{
    if (run_set_state(s, r, to) < 0) {
        run_persist(s, r, rows, p);
        return;
    }
    doc_put_time(r->doc, "ended_at", now_ms(s));
    run_doc_sync(s, r);
    if (run_begun(r)) /* what it used; a run that never began used nothing */
        json_object_set_new(r->doc, "cost", lab_run_cost(s->cfg, r->doc));
    run_persist(s, r, rows, p);
    if (!r->ex || !r->ex->cleanup)
        run_remove(s, r);
}
