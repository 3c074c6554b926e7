/* Planning: the live runs and the instruments as a planner problem, its answer written back onto
 * the steps, why a run cannot be planned; and the timeline the API shows of it. */
#include "daemon/sched/sched_int.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/text.h"
#include "planner/planner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool plan_includes(const srun_t *r)
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
        if (inst_matches(s, i, on)) {
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
    if (r->st[k].scan && !r->st[k].scan_waived && !scan_any_reader(s, on)) {
        snprintf(buf, cap,
                 "step %.63s checks its plate on '%.63s' and no barcode reader of this cell has "
                 "at = %.63s",
                 r->st[k].name, on, on);
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

/* Why the run's next step cannot start for want of tips or reagent: every instrument it may go
 * to counts them and lacks some (net of what steps under way reserved), or NULL. */
static const char *short_of(lab_sched_t *s, srun_t *r, char *buf, size_t cap)
{
    sstep_t *st = &r->st[r->cur];
    if (!s->consumables || st->state != LAB_STEP_PENDING)
        return NULL;
    bool shortage = false;
    for (int i = 0; i < ninst(s); i++) {
        lab_driver_t *d = inst_at(s, i);
        if (!inst_matches(s, i, st->on) || !inst_available(s, i))
            continue;
        if (!lab_consumables_tracks(s->consumables, lab_driver_id(d)))
            return NULL;
        char err[300];
        program_t *prog = exec_program(r, st, d, err, sizeof err);
        if (!prog)
            return NULL; /* the step fails at its start with why */
        json_t *vols = json_object();
        int tips = program_needs(prog, vols);
        program_free(prog);
        bool ok = lab_consumables_enough(s->consumables, lab_driver_id(d), tips, vols, buf, cap);
        json_decref(vols);
        if (ok)
            return NULL;
        shortage = true;
    }
    return shortage ? buf : NULL;
}

void plan_replan(lab_sched_t *s)
{
    s->replan = false;
    s->replanned_ms = uv_now(s->loop);
    queue_promote(s);
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
            run_steps_from_doc(s, r);
        if (!plan_includes(r))
            continue;
        char why[PLAN_REASON_MAX];
        const char *b = NULL;
        for (int k = r->cur; k < r->n && !b; k++)
            b = blocked_by(s, r, k, why, sizeof why);
        if (!b)
            b = short_of(s, r, why, sizeof why);
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
            run_set_state(s, r, LAB_RUN_PLANNED);
            run_persist(s, r, NULL, NULL);
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
        viol += run_violations(r);
        for (int k = 0; k < r->n; k++) {
            sstep_t *st = &r->st[k];
            if (st->state != LAB_STEP_PENDING && st->start_ms)
                json_array_append_new(items, run_timeline_item(s, r, k, false));
            else if (st->state == LAB_STEP_PENDING && st->plan_start_ms && plan_includes(r))
                json_array_append_new(items, run_timeline_item(s, r, k, true));
        }
        if (run_why(r)[0] || !r->wf)
            json_array_append_new(waiting,
                                  json_pack("{s:s,s:s,s:s}", "run", r->id, "state",
                                            lab_run_state_name(r->state), "reason", run_why(r)));
    }
    char why[300];
    for (int i = 0; i < s->norphans; i++)
        json_array_append_new(
            waiting, json_pack("{s:s,s:s,s:s}", "run", s->orphans[i].c.id, "state", "queued",
                               "reason", queue_orphan_why(&s->orphans[i], why, sizeof why)));
    for (int i = 0; i < s->ncold; i++)
        json_array_append_new(waiting,
                              json_pack("{s:s,s:s,s:s}", "run", s->cold[i].id, "state", "queued",
                                        "reason", queue_cold_why(why, sizeof why)));
    return json_pack("{s:s,s:f,s:s,s:o,s:o,s:I,s:i}", "now", now, "time_scale", s->cfg->time_scale,
                     "planned_at", at, "items", items, "waiting", waiting, "lag_violations",
                     (json_int_t)s->stats.lag_violations, "runs",
                     s->nruns + s->ncold + s->norphans);
}

json_t *lab_sched_run_live(lab_sched_t *s, const char *id)
{
    srun_t *r = run_find(s, id);
    char why[300];
    if (!r && queue_why(s, id, why, sizeof why))
        return json_pack("{s:s}", "waiting_reason", why);
    if (!r)
        return NULL;
    json_t *o = json_object();
    if (run_why(r)[0])
        json_object_set_new(o, "waiting_reason", json_string(run_why(r)));
    if (r->cur < r->n && r->st[r->cur].state == LAB_STEP_PENDING && r->st[r->cur].plan_start_ms) {
        json_object_set_new(o, "next_step", json_string(r->st[r->cur].name));
        doc_put_time(o, "next_start", r->st[r->cur].plan_start_ms);
    }
    return o;
}
