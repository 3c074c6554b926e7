/* The online scheduler's public side: start, stop and close, the API's requests on runs, and the
 * tick that re-plans, dispatches steps that are due, and ends waits and timed-out steps. What it
 * does is in the other files of this folder (sched_int.h lists them). */
#include "daemon/sched/sched_int.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* After close: s goes once its timer closed and no store op or driver call can come back. */
void sched_maybe_free(lab_sched_t *s)
{
    if (!s->tick_closed || s->ops > 0 || s->calls > 0)
        return;
    void (*cb)(void *) = s->close_cb;
    void *arg = s->close_arg;
    free(s);
    if (cb)
        cb(arg);
}

static void tick_arm(lab_sched_t *s, int64_t at_lab_ms);

/* When the tick must look at a step in flight again: its wait's end, its deadline (lab ms). */
static void exec_due(const exec_t *ex, int64_t *next)
{
    if (ex->wait_until_ms && ex->wait_until_ms < *next)
        *next = ex->wait_until_ms;
    if (!ex->cleanup && ex->deadline_ms < *next)
        *next = ex->deadline_ms;
}

/* Whether the run may begin: no gate, a run begun already, or the fence said yes. The first time
 * its first step is due the gate is asked; the run waits with the reason until it answers. */
static bool gate_passed(lab_sched_t *s, srun_t *r)
{
    if (!s->gate_fn || r->gate == GATE_OPEN)
        return true;
    if (r->gate == GATE_ASKED)
        return false;
    bool begun = r->state != LAB_RUN_QUEUED && r->state != LAB_RUN_PLANNED;
    for (int k = 0; k < r->n && !begun; k++)
        begun = r->st[k].state != LAB_STEP_PENDING;
    if (begun || s->gate_fn(s->gate_ctx, r->id) == 0) {
        r->gate = GATE_OPEN;
        return true;
    }
    r->gate = GATE_ASKED;
    run_why_flush(s, r);
    return false;
}

/* One live run's turn in the tick: a timeout, a wait or hold that ends, a step that is due. What
 * is still to come lowers *next (lab ms). The run may leave s->runs (and end) meanwhile. */
static void tick_run(lab_sched_t *s, srun_t *r, int64_t now, int64_t slack, int64_t *next)
{
    run_why_flush(s, r);
    exec_t *ex = r->ex;
    if (ex) {
        sstep_t *st = &r->st[ex->k];
        if (!ex->cleanup && now >= ex->deadline_ms) {
            char why[160];
            snprintf(why, sizeof why, "timed out after %.0f lab s",
                     (double)(now - st->start_ms) / 1000.0);
            ex->gen = 0;
            exec_fail(s, ex, why, true);
            return;
        }
        if ((ex->wait_until_ms && now >= ex->wait_until_ms) || ex->hold) {
            exec_advance(s, ex);
            return;
        }
        exec_due(ex, next);
        if (!st->late_noted && st->plan_end_ms && st->start_ms) {
            int64_t due = st->start_ms + (int64_t)(st->plan_s * 1000);
            if (now >= due) { /* running late: let the others move */
                st->late_noted = true;
                s->replan = true;
            } else if (due < *next) {
                *next = due;
            }
        }
        return;
    }
    if (!plan_includes(r) || r->why[0])
        return;
    sstep_t *st = &r->st[r->cur];
    if (st->state != LAB_STEP_PENDING || !st->plan_start_ms)
        return;
    int64_t due = st->plan_move_ms ? st->plan_move_ms : st->plan_start_ms;
    if (due > now + slack) {
        if (due < *next)
            *next = due;
        return;
    }
    if (!inst_available(s, st->plan_inst) ||
        (st->plan_move_ms && !inst_available(s, st->plan_mover))) {
        s->replan = true;
        return;
    }
    if (!gate_passed(s, r))
        return;
    /* a step before it ran longer than planned: this one waits for the instrument (the step's
     * end re-plans) rather than overbooking it */
    if (exec_on_inst(s, st->plan_inst) >= lab_driver_capacity(inst_at(s, st->plan_inst)))
        return;
    exec_start(s, r);
    /* the step's wait or deadline: the tick comes back for it even when nothing else happens */
    if (!r->dropped && r->ex)
        exec_due(r->ex, next);
}

/* The tick walks the live runs as they were when it began: a run that leaves meanwhile is
 * marked dropped and freed after the walk (run_drop), so every run gets one turn whatever its
 * turn does to the others. */
static void on_tick(uv_timer_t *t)
{
    lab_sched_t *s = t->data;
    if (s->closing)
        return;
    s->in_tick = true;
    if (queue_orphans_ask(s))
        s->replan = true;
    if (s->replan)
        plan_replan(s);
    int64_t now = now_ms(s);
    /* half a loop millisecond of slack, in lab time */
    int64_t slack = (int64_t)ceil(2 * s->cfg->time_scale);
    int64_t next = INT64_MAX;
    int n = s->nruns;
    if (n > s->capwalk) {
        s->capwalk = n;
        s->walk = lab_realloc(s->walk, sizeof *s->walk * (size_t)n);
    }
    if (n)
        memcpy(s->walk, s->runs, sizeof *s->walk * (size_t)n);
    s->walking = true;
    for (int i = 0; i < n; i++)
        if (!s->walk[i]->dropped)
            tick_run(s, s->walk[i], now, slack, &next);
    s->walking = false;
    run_free_dropped(s);
    s->in_tick = false;
    if (s->replan)
        tick_arm(s, now);
    else if (next != INT64_MAX)
        tick_arm(s, next);
    tick_orphans_arm(s);
}

static void tick_arm(lab_sched_t *s, int64_t at_lab_ms)
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

void replan_now(lab_sched_t *s)
{
    s->replan = true;
    if (!s->in_tick)
        tick_arm(s, 0);
}

void tick_now(lab_sched_t *s)
{
    if (!s->in_tick)
        tick_arm(s, 0);
}

/* The tick at loop time `delay` from now, unless one is armed sooner. */
static void tick_arm_by(lab_sched_t *s, uint64_t delay)
{
    if (uv_is_active((uv_handle_t *)&s->tick) && uv_timer_get_due_in(&s->tick) <= delay)
        return;
    uv_timer_start(&s->tick, on_tick, delay, 0);
}

/* Queued runs wait for their workflow: a tick when the store is to be asked again. */
void tick_orphans_arm(lab_sched_t *s)
{
    if (!s->norphans || s->in_tick || s->closing)
        return;
    uint64_t now = uv_now(s->loop), at = s->orphans_asked_ms + WF_ASK_MS;
    tick_arm_by(s, at > now ? at - now : 0);
}

/* A submission: plan again, at most once per SUBMIT_GAP_MS, never later than a tick already
 * armed. */
void replan_soon(lab_sched_t *s)
{
    s->replan = true;
    if (s->in_tick || s->closing)
        return;
    uint64_t now = uv_now(s->loop), at = s->replanned_ms + SUBMIT_GAP_MS;
    tick_arm_by(s, at > now ? at - now : 0);
}

void lab_sched_replan(lab_sched_t *s)
{
    if (s)
        replan_now(s);
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
        replan_now(s);
    }
}

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
    restart_load(s);
    lab_instr_on_state(instr, on_instr_state, s);
    if (s->nruns + s->ncold + s->norphans)
        log_info("sched", "%d runs not over, taken up from the store",
                 s->nruns + s->ncold + s->norphans);
    replan_now(s);
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
    free(s->walk);
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
    sched_maybe_free(s); /* or the last store op or driver call to come back does */
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
    if (queue_admit(s, d)) /* a run that only joins the queue changes no plan */
        replan_soon(s);
    else
        tick_orphans_arm(s);
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
    srun_t *r = queue_thaw(s, id);
    if (!r || lab_run_state_final(r->state))
        return LAB_ENOTFOUND;
    json_object_set_new(r->doc, "cancelled_by", json_string(by));
    if (reason)
        json_object_set_new(r->doc, "cancel_reason", json_string(reason));
    if (r->ex) {
        exec_t *ex = r->ex;
        sstep_t *st = &r->st[ex->k];
        (void)run_step_set(r, st, LAB_STEP_CANCELLED); /* the run is cancelled either way */
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
    run_finish(s, r, LAB_RUN_CANCELLED, NULL, pend_new(s, cb, arg));
    if (r == run_find(s, id) && r->ex && r->ex->cleanup)
        exec_advance(s, r->ex);
    replan_now(s);
    return 0;
}

int lab_sched_resume(lab_sched_t *s, const char *id, const char *by, const char *how,
                     const char *reason, lab_sched_done_cb cb, void *arg, char *msg, size_t msglen)
{
    srun_t *r = queue_thaw(s, id);
    if (!r)
        return LAB_ENOTFOUND;
    if (r->state != LAB_RUN_PAUSED || r->cur >= r->n) {
        snprintf(msg, msglen, "run %s is %s, not paused", id, lab_run_state_name(r->state));
        return LAB_ESTATE;
    }
    sstep_t *st = &r->st[r->cur];
    bool skip = strcmp(how, "skip") == 0;
    /* at a plate check, skip says the plate is right: the step runs without the check */
    bool waive = skip && st->scan_held;
    if (waive)
        skip = false;
    lab_step_state_t sto = skip ? LAB_STEP_SKIPPED : LAB_STEP_PENDING;
    if (st->state != sto && !lab_fsm_edge(&lab_step_fsm, (int)st->state, (int)sto)) {
        snprintf(msg, msglen, "run %s: step %s is %s, it cannot be %s", id, st->name,
                 lab_step_state_name(st->state), skip ? "skipped" : "retried");
        return LAB_ESTATE;
    }
    json_object_del(r->doc, "paused_reason");
    json_object_set_new(r->doc, "resumed_by", json_string(by));
    json_object_set_new(r->doc, "resumed_how", json_string(skip || waive ? "skip" : "retry"));
    if (reason)
        json_object_set_new(r->doc, "resume_reason", json_string(reason));
    else
        json_object_del(r->doc, "resume_reason");
    r->why[0] = '\0';
    if (waive)
        scan_waive(st, by);
    st->scan_held = false;          /* retry: the check runs again */
    (void)run_step_set(r, st, sto); /* checked above */
    if (skip) {
        if (!st->end_ms)
            st->end_ms = now_ms(s);
        r->cur++;
        if (r->cur >= r->n) {
            run_finish(s, r, LAB_RUN_DONE, NULL, pend_new(s, cb, arg));
            replan_now(s);
            return 0;
        }
    }
    bool begun = false;
    for (int k = 0; k < r->n; k++)
        begun |= r->st[k].start_ms > 0;
    run_set_state(s, r, begun ? LAB_RUN_RUNNING : LAB_RUN_QUEUED);
    log_info("sched", "run=%s resumed by %s (%s)", r->id, by, how);
    run_persist(s, r, NULL, pend_new(s, cb, arg));
    replan_now(s);
    return 0;
}

int lab_sched_reprioritize(lab_sched_t *s, const char *id, const char *by, const char *priority,
                           bool has_score, double score, lab_sched_done_cb cb, void *arg)
{
    srun_t *r = queue_thaw(s, id);
    if (!r || lab_run_state_final(r->state))
        return LAB_ENOTFOUND;
    if (priority) {
        r->prio = run_prio_of(priority);
        json_object_set_new(r->doc, "priority", json_string(priority));
    }
    if (has_score) {
        r->score = score;
        json_object_set_new(r->doc, "score", json_real(score));
    }
    json_object_set_new(r->doc, "reprioritized_by", json_string(by));
    log_info("sched", "run=%s priority=%s score=%g by %s", r->id,
             json_string_value(json_object_get(r->doc, "priority")), r->score, by);
    run_persist(s, r, NULL, pend_new(s, cb, arg));
    replan_now(s);
    return 0;
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
        return queue_why(s, id, why, sizeof why) ? 0 : LAB_ENOTFOUND;
    if (r->state != LAB_RUN_QUEUED && r->state != LAB_RUN_PLANNED)
        return 1;
    for (int k = 0; k < r->n; k++)
        if (r->st[k].state != LAB_STEP_PENDING)
            return 1;
    return 0;
}

int lab_sched_room(lab_sched_t *s)
{
    if (s->closing)
        return 0;
    int n = LAB_SCHED_CLAIM_WINDOW - queue_not_begun(s);
    return n > 0 ? n : 0;
}

void lab_sched_set_consumables(lab_sched_t *s, lab_consumables_t *c)
{
    s->consumables = c;
}

void lab_sched_set_labware(lab_sched_t *s, lab_labware_t *lw)
{
    s->lw = lw;
    lab_sched_replan(s);
}

void lab_sched_set_gate(lab_sched_t *s, lab_sched_gate_fn fn, void *ctx)
{
    s->gate_fn = fn;
    s->gate_ctx = ctx;
}

void lab_sched_gate_open(lab_sched_t *s, const char *id, int status)
{
    srun_t *r = run_find(s, id);
    if (!r || r->gate != GATE_ASKED || s->closing)
        return;
    if (status == LAB_ESTATE) {
        (void)lab_sched_release(s, id, "the lab's queue no longer gives this run to this cell");
        return;
    }
    r->gate = status == 0 ? GATE_OPEN : GATE_NONE;
    if (status != 0) {
        /* asked again at the next plan, not at once: no loop against a database that fails */
        log_warn("sched", "run=%s: the claim could not be confirmed (%s); asked again later", r->id,
                 lab_strerror(status));
        return;
    }
    run_why_flush(s, r);
    tick_now(s);
}

int lab_sched_release(lab_sched_t *s, const char *id, const char *reason)
{
    srun_t *r = queue_thaw(s, id);
    if (!r || lab_run_state_final(r->state))
        return LAB_ENOTFOUND;
    bool begun = r->ex != NULL || !lab_run_transition_ok(r->state, LAB_RUN_RELEASED);
    for (int k = 0; k < r->n && !begun; k++)
        begun = r->st[k].state != LAB_STEP_PENDING;
    if (begun)
        return LAB_ESTATE;
    json_object_set_new(r->doc, "released_reason", json_string(reason));
    r->gate = GATE_NONE;
    log_info("sched", "run=%s released: %s", r->id, reason);
    s->stats.released++;
    run_finish(s, r, LAB_RUN_RELEASED, NULL, NULL);
    replan_now(s);
    return 0;
}

void lab_sched_stats(const lab_sched_t *s, lab_sched_stats_t *out)
{
    *out = s->stats;
    out->runs = s->nruns + s->ncold + s->norphans;
}
