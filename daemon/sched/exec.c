/* The step interpreter: starts a step on its planned instrument (its site, its program), runs the
 * program's entries one driver call or wait at a time, records marks, measurements and what was
 * done, and ends the step done or failed (then recovery.c decides). */
#include "daemon/sched/sched_int.h"
#include "daemon/model/cost.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A queued run ranked last leaves the window for the queue (nothing of it is lost: its stored
 * document is the same, a queued run's plan is not). */
void exec_free(exec_t *ex)
{
    if (!ex)
        return;
    if (ex->held)
        lab_consumables_release(ex->held, ex->r->id);
    program_free(ex->prog);
    json_decref(ex->rows);
    free(ex);
}

/* A run keeps its read values in its own document: a campaign's closed loop computes the plate's
 * results from them, after a restart too, and the web app draws the plate's heat map from them
 * (the outbox's measurement rows are pruned once delivered; PostgreSQL is not the daemon's to
 * read back). {"readings": {STEP: {"measure", "wavelength_nm"?, "values": {WELL: value}}}} */
static void keep_readings(srun_t *r, const sstep_t *st, const json_t *rows)
{
    if (!json_array_size(rows))
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

static void exec_step_done(lab_sched_t *s, exec_t *ex)
{
    srun_t *r = ex->r;
    sstep_t *st = &r->st[ex->k];
    (void)run_step_set(r, st, LAB_STEP_DONE); /* refused: logged; the run goes on all the same */
    st->end_ms = now_ms(s);
    st->error[0] = '\0';
    sites_release(s, st);
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
        run_finish(s, r, LAB_RUN_DONE, rows, NULL);
    else
        run_persist(s, r, rows, NULL);
    replan_now(s);
}

/* The step could not finish: record why and let the recovery policy decide. */
void exec_fail(lab_sched_t *s, exec_t *ex, const char *why, bool unknown_outcome)
{
    srun_t *r = ex->r;
    sstep_t *st = &r->st[ex->k];
    s->stats.steps_failed++;
    lab_text_copy(st->error, sizeof st->error, why);
    lab_text_trim(st->error);                   /* why may come cut from a fixed buffer */
    (void)run_step_set(r, st, LAB_STEP_FAILED); /* refused: logged; the policy still decides */
    st->end_ms = now_ms(s);
    sites_release(s, st);
    log_warn("sched", "run=%s step=%s attempt %d failed: %s%s%s", r->id, st->name, st->attempts,
             ex->done, ex->done[0] ? "; " : "", why);
    char done[sizeof ex->done];
    memcpy(done, ex->done, sizeof done);
    r->ex = NULL;
    exec_free(ex);
    recovery_apply(s, r, r->cur, unknown_outcome, done);
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

/* Notes an entry of the program that succeeded. */
static void progress_add(exec_t *ex, const program_entry_t *e)
{
    char one[160];
    program_entry_text(e, true, one, sizeof one);
    size_t n = strlen(ex->done);
    if (n + strlen(one) + 8 < sizeof ex->done)
        snprintf(ex->done + n, sizeof ex->done - n, "%s%s", n ? ", " : "", one);
    else if (n + 5 < sizeof ex->done && !strstr(ex->done, ", ..."))
        snprintf(ex->done + n, sizeof ex->done - n, ", ...");
    if (!(e->flags & PROGRAM_DRY))
        ex->wet = true;
}

/* Tips picked up and µL aspirated by a confirmed action, into the step's record (its cost). */
static void consumed_add(sstep_t *st, const program_entry_t *e)
{
    json_t *tmp = json_object();
    if (st->consumed)
        json_object_set(tmp, "consumed", st->consumed);
    if (e->role == LAB_DRV_ROLE_PICK_UP_TIPS) {
        json_t *ch = json_object_get(e->params, "channels");
        lab_consumed_add(tmp, json_is_integer(ch) ? (int)json_integer_value(ch) : 1, NULL, 0);
    } else if (e->role == LAB_DRV_ROLE_ASPIRATE) {
        const char *reagent = json_string_value(json_object_get(e->params, "reagent"));
        json_t *v = json_object_get(e->params, "volume_ul");
        double ul = json_is_number(v) ? json_number_value(v) : 0;
        size_t i;
        json_t *one;
        json_array_foreach(v, i, one) ul += json_number_value(one);
        lab_consumed_add(tmp, 0, reagent && *reagent ? reagent : "unnamed", ul);
    }
    json_t *c = json_object_get(tmp, "consumed");
    if (c && c != st->consumed) {
        json_decref(st->consumed);
        st->consumed = json_incref(c);
    }
    json_decref(tmp);
}

static void call_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    (void)d;
    call_t *c = arg;
    lab_sched_t *s = c->s;
    s->calls--;
    if (s->closing) { /* the daemon stops: the step stays running; a restart interrupts it */
        free(c);
        sched_maybe_free(s);
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
    const program_entry_t *e = &ex->prog->v[ex->pc];
    sstep_t *st = &r->st[ex->k];
    if (e->role == LAB_DRV_ROLE_SCAN && !ex->cleanup && !scan_done(s, ex, e, err, result))
        return; /* the plate is not the run's, or not known to be: the run paused */
    if (err->code != LAB_OK && (e->flags & PROGRAM_OPTIONAL)) {
        log_info("sched", "run=%s step=%s: %s not needed (%s)", r->id, st->name, e->action,
                 lab_err_json_name(err->code));
    } else if (err->code != LAB_OK) {
        /* In doubt unless the driver proves the action never started, or it is dry handling
         * (tips) after nothing but dry handling: then a repeat cannot move liquid twice. */
        bool dry = e->flags & PROGRAM_DRY;
        bool doubt = ex->wet || (!dry && !err->not_started);
        char what[160], why[300];
        program_entry_text(e, false, what, sizeof what);
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
        exec_fail(s, ex, why, doubt);
        return;
    }
    progress_add(ex, e);
    consumed_add(st, e);
    if (e->mark == PROGRAM_MARK_LOADED) {
        st->loaded_ms = now_ms(s);
        if (!ex->cleanup)
            run_persist(s, r, NULL, NULL);
    } else if (e->mark == PROGRAM_MARK_UNLOADED) {
        st->unloaded = true;
    }
    if (e->flags & PROGRAM_MEASURE) {
        json_t *rows = measurement_rows(s, r, st, result);
        if (!ex->rows)
            ex->rows = json_array();
        json_array_extend(ex->rows, rows);
        json_decref(rows);
    }
    ex->pc++;
    exec_advance(s, ex);
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
void exec_advance(lab_sched_t *s, exec_t *ex)
{
    srun_t *r = ex->r;
    sstep_t *st = &r->st[ex->k];
    while (!ex->in_call) {
        if (ex->pc >= ex->prog->n) {
            if (ex->cleanup) {
                log_info("sched", "run=%s cleanup done: plate out of %s", r->id,
                         lab_driver_id(inst_at(s, st->inst)));
                st->unloaded = true;
                sites_release(s, st);
                r->ex = NULL;
                exec_free(ex);
                run_remove(s, r);
                replan_now(s);
                return;
            }
            exec_step_done(s, ex);
            return;
        }
        const program_entry_t *e = &ex->prog->v[ex->pc];
        bool on = e->on >= 0; /* on another instrument (the plate's move): not the step's own */
        if (ex->lag_pending && !on)
            take_lag(s, r, ex->k);
        ex->lag_pending = ex->lag_pending && on;
        if (e->kind == PROGRAM_WAIT) {
            if (ex->cleanup) {
                ex->pc++;
                continue;
            }
            if (!ex->wait_until_ms)
                ex->wait_until_ms = (st->loaded_ms ? st->loaded_ms : now_ms(s)) +
                                    (int64_t)llround(e->wait_s * 1000);
            if (now_ms(s) < ex->wait_until_ms) {
                tick_now(s); /* the tick arms its timer for the wait's end */
                return;
            }
            ex->wait_until_ms = 0;
            ex->pc++;
            continue;
        }
        const char *action = e->action;
        if (ex->cleanup && e->mark != PROGRAM_MARK_UNLOADED) {
            ex->pc++;
            continue;
        }
        lab_driver_t *d = inst_at(s, on ? e->on : st->inst);
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
            run_why_flush(s, r);
            return;
        }
        if (ex->hold) {
            ex->hold = false;
            ex->hold_why[0] = '\0';
            run_why_flush(s, r);
        }
        call_t *c = LAB_NEW(call_t);
        c->s = s;
        snprintf(c->id, sizeof c->id, "%s", r->id);
        c->gen = ex->gen;
        lab_drv_error_t err = {0};
        ex->in_call = true;
        s->calls++;
        lab_instr_who_t who = {r->plate && r->plate[0] ? r->plate : NULL, r->id, "scheduler"};
        if (lab_instr_call(s->in, d, action, e->params, 0, &who, call_done, c, &err, NULL) != 0) {
            ex->in_call = false;
            s->calls--;
            free(c);
            if (err.code == LAB_EOFFLINE || err.code == LAB_EBUSY) {
                snprintf(ex->hold_why, sizeof ex->hold_why, "step %.63s holds: %.250s", st->name,
                         err.text);
                ex->hold = true;
                run_why_flush(s, r);
                return;
            }
            char why[300];
            snprintf(why, sizeof why, "%s refused: %s (%s)", action, lab_err_json_name(err.code),
                     err.text);
            exec_fail(s, ex, why, false);
            return;
        }
    }
}

exec_t *exec_new(lab_sched_t *s, srun_t *r, program_t *prog)
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
 * dispense) gets the run's design, its volumes per well, in that place (a plate run from the
 * lab's shared queue carries it in its params: the queue takes run documents as submitted). */
program_t *exec_program(srun_t *r, const sstep_t *st, lab_driver_t *d, char *err, size_t errlen)
{
    const json_t *params = st->params;
    json_t *merged = NULL;
    if (json_is_true(json_object_get(params, "design"))) {
        merged = json_deep_copy(params);
        json_t *design = json_object_get(r->doc, "design");
        if (!design)
            design = json_object_get(json_object_get(r->doc, "params"), "design");
        json_object_set(merged, "design", design ? design : json_null());
        params = merged;
    }
    program_t *prog =
        program_build(st->op, d, params, st->nominal_s, st->cassette, st->slot, err, errlen);
    json_decref(merged);
    return prog;
}

/* What the step's program takes from a liquid handler's tips and troughs is reserved before it
 * starts, so two runs never count on the same µL; short of it, the run waits with the shortfall
 * ("trough substrate: 120 µL left, 480 µL needed") until a refill re-plans. */
static bool supplies_reserve(lab_sched_t *s, srun_t *r, lab_driver_t *d, const program_t *prog)
{
    if (!s->consumables || !prog)
        return true;
    json_t *vols = json_object();
    int tips = program_needs(prog, vols);
    char why[sizeof r->why] = "";
    int rc = lab_consumables_reserve(s->consumables, lab_driver_id(d), r->id, tips, vols, why,
                                     sizeof why);
    json_decref(vols);
    if (rc == 0)
        return true;
    if (strcmp(r->why, why) != 0)
        log_info("sched", "run=%s step=%s waits: %s", r->id, r->st[r->cur].name, why);
    snprintf(r->why, sizeof r->why, "%s", why);
    run_why_flush(s, r); /* the run's document and its MQTT state say so now */
    return false;
}

void exec_start(lab_sched_t *s, srun_t *r)
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
    if (program_needs_site(st->op, d) && !st->holds_site) {
        if (!sites_take(s, st->inst, &st->cassette, &st->slot)) {
            snprintf(r->why, sizeof r->why, "step %s: every slot of %s is taken", st->name,
                     lab_driver_id(d));
            replan_now(s);
            return;
        }
        st->holds_site = true;
    }
    program_t *prog = exec_program(r, st, d, err, sizeof err);
    if (!supplies_reserve(s, r, d, prog)) {
        program_free(prog);
        sites_release(s, st);
        return;
    }
    (void)run_step_set(r, st, LAB_STEP_RUNNING); /* checked on entry */
    st->start_ms = now;
    st->end_ms = 0;
    if (!inside) {
        st->loaded_ms = 0;
        st->unloaded = false;
    }
    st->late_noted = false;
    const char *drop = program_action(d, LAB_DRV_ROLE_DROP_TIPS);
    if (prog && st->attempts > 0 && drop)
        /* an attempt that failed half way may have left tips on: off first, if any */
        program_insert(prog, 0,
                       (program_entry_t){.kind = PROGRAM_ACTION,
                                         .role = LAB_DRV_ROLE_DROP_TIPS,
                                         .action = drop,
                                         .flags = PROGRAM_OPTIONAL | PROGRAM_DRY,
                                         .on = -1});
    st->attempts++;
    st->error[0] = '\0';
    s->stats.steps_started++;
    char scan_err[400] = "";
    /* a plate still inside was checked before it went in, and no reader sees it there */
    if (prog && !inside && !scan_insert(s, r, st, prog, scan_err, sizeof scan_err)) {
        program_free(prog);
        prog = NULL;
    }
    lab_driver_t *mover = inst_at(s, st->plan_mover);
    if (prog && st->plan_move_ms && mover && inst_at(s, st->plan_move_from)) {
        /* the plate goes over on the mover first */
        const char *move = program_action(mover, LAB_DRV_ROLE_MOVE_PLATE);
        if (move) {
            json_t *params =
                json_pack("{s:s,s:s,s:s}", "plate", r->plate[0] ? r->plate : r->id, "from",
                          lab_driver_id(inst_at(s, st->plan_move_from)), "to", lab_driver_id(d));
            program_insert(prog, 0,
                           (program_entry_t){.kind = PROGRAM_ACTION,
                                             .role = LAB_DRV_ROLE_MOVE_PLATE,
                                             .action = move,
                                             .params = params,
                                             .flags = PROGRAM_DRY,
                                             .on = st->plan_mover});
        } else {
            snprintf(err, sizeof err, "instrument %s (%s) has no action that moves a plate",
                     lab_driver_id(mover), lab_driver_ops(mover)->name);
            program_free(prog);
            prog = NULL;
        }
    }
    if (r->state != LAB_RUN_RUNNING) {
        run_set_state(s, r, LAB_RUN_RUNNING);
        if (!doc_get_time(r->doc, "started_at"))
            doc_put_time(r->doc, "started_at", now);
    }
    log_info("sched", "run=%s step=%s starts on %s (attempt %d)", r->id, st->name, lab_driver_id(d),
             st->attempts);
    exec_t *ex = exec_new(s, r, prog ? prog : program_new());
    ex->held = prog ? s->consumables : NULL;
    ex->lag_pending = !inside; /* a plate still inside began its step on the first attempt */
    if (inside && program_first_wait(ex->prog) < ex->prog->n)
        ex->pc = program_first_wait(ex->prog);
    run_persist(s, r, NULL, NULL);
    if (scan_err[0]) {
        st->scan_outcome = SCAN_FAILED;
        scan_stop(s, ex, scan_err);
        return;
    }
    if (!prog) {
        exec_fail(s, ex, err, false);
        return;
    }
    exec_advance(s, ex);
}

/* Steps of ours on instrument i right now (a cancelled run's unload included). */
int exec_on_inst(const lab_sched_t *s, int i)
{
    int n = 0;
    for (int j = 0; j < s->nruns; j++) {
        const srun_t *r = s->runs[j];
        n += r->ex && r->st[r->ex->k].inst == i;
    }
    return n;
}
