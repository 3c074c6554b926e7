/* Plate runs: candidates laid out around the controls and submitted as runs; a plate's end (its QC,
 * normalisation and results, or instrument trouble); batches that are done; the failure breaker
 * and the campaign's end. */
#include "daemon/campaign/engine_int.h"
#include "daemon/campaign/layout.h"

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/text.h"
#include "daemon/model/run_states.h"
#include "daemon/store/runs.h"
#include "daemon/store/workflows.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- plates ---- */

static int plates_made(const camp_t *c)
{
    return (int)json_integer_value(json_object_get(c->doc, "plates_made"));
}

void campaigns_noop_done(void *arg, int status, const char *doc, const char *msg)
{
    (void)arg;
    (void)status;
    (void)doc;
    (void)msg;
}

/* The mean score of the candidates on a plate: its priority score. */
double campaigns_plate_score(camp_t *c, int pi)
{
    double s = 0;
    int n = 0;
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->plate == pi &&
            (c->c[i]->state == LAB_CAND_STAGED || c->c[i]->state == LAB_CAND_RUNNING)) {
            s += campaigns_num(c->c[i]->doc, "score", 0);
            n++;
        }
    return n ? s / n : 0;
}

static int by_score(const void *a, const void *b)
{
    const cand_t *x = *(cand_t *const *)a, *y = *(cand_t *const *)b;
    double sx = campaigns_num(x->doc, "score", 0), sy = campaigns_num(y->doc, "score", 0);
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return x->ord < y->ord ? -1 : x->ord > y->ord;
}

/* Lays every candidate waiting for a plate onto new plates, best scores first, and submits one
 * run per plate (in w; the scheduler gets them once w committed). */
void campaigns_stage(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c)
{
    if (c->state != LAB_CAMP_ACTIVE)
        return;
    cand_t **wait = lab_calloc((size_t)c->nc + 1, sizeof *wait);
    int nw = 0;
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->state == LAB_CAND_CANDIDATE)
            wait[nw++] = c->c[i];
    if (!nw) {
        free(wait);
        return;
    }
    qsort(wait, (size_t)nw, sizeof *wait, by_score);
    int format = campaigns_format_of(c), reps = campaigns_replicates_of(c);
    char free_wells[384][LAB_WELL_NAME];
    int nfree = lab_layout_free_wells(format, campaigns_control_wells(c, "positive"),
                                      campaigns_control_wells(c, "negative"), free_wells, 384);
    int per = nfree / reps;
    json_t *budget = json_object_get(json_object_get(c->doc, "budget"), "plates");
    json_t *reagents = campaigns_design_reagents(c);
    json_t *posv = campaigns_control_volumes(c, reagents, "positive");
    json_t *negv = campaigns_control_volumes(c, reagents, "negative");
    for (int at = 0; at < nw; at += per) {
        int n = nw - at < per ? nw - at : per;
        if (budget && plates_made(c) >= json_integer_value(budget)) {
            char why[160];
            snprintf(why, sizeof why, "the campaign's plate budget (%lld) is spent",
                     (long long)json_integer_value(budget));
            for (int i = at; i < nw; i++)
                campaigns_cand_set(l, w, c, wait[i], LAB_CAND_ABANDONED, why);
            break;
        }
        int no = plates_made(c) + 1;
        json_object_set_new(c->doc, "plates_made", json_integer(no));
        char run[LAB_UUID_LEN + 1], name[96];
        lab_uuid4(run);
        if (l->queue.submit)
            run[0] = '\0'; /* the lab's queue names the run when it takes it */
        snprintf(name, sizeof name, "%.64s-P%04d", c->id, no);
        json_t *wells = json_object(), *vols = json_object();
        size_t i;
        json_t *x;
        json_array_foreach(campaigns_control_wells(c, "positive"), i, x)
        {
            json_object_set_new(wells, json_string_value(x),
                                json_pack("{s:s}", "role", "positive"));
            json_object_set(vols, json_string_value(x), posv);
        }
        json_array_foreach(campaigns_control_wells(c, "negative"), i, x)
        {
            json_object_set_new(wells, json_string_value(x),
                                json_pack("{s:s}", "role", "negative"));
            json_object_set(vols, json_string_value(x), negv);
        }
        int pi = campaigns_plate_add(c, run, name, no, wells);
        double score = 0;
        for (int k = 0; k < n; k++) {
            cand_t *cd = wait[at + k];
            json_t *cv = campaigns_volumes_of(c, reagents, json_object_get(cd->doc, "params"));
            json_t *used = json_array();
            for (int r = 0; r < reps; r++) {
                const char *wname = free_wells[k * reps + r];
                json_object_set_new(
                    wells, wname, json_pack("{s:s,s:s}", "role", "candidate", "candidate", cd->id));
                json_object_set(vols, wname, cv);
                json_array_append_new(used, json_string(wname));
            }
            json_decref(cv);
            score += campaigns_num(cd->doc, "score", 0);
            cd->plate = pi;
            json_object_set_new(cd->doc, "run", json_string(run));
            json_object_set_new(cd->doc, "plate", json_string(name));
            json_object_set_new(cd->doc, "wells", used);
            json_t *tries = json_object_get(cd->doc, "plates");
            if (!json_is_array(tries))
                json_object_set_new(cd->doc, "plates", tries = json_array());
            json_array_append_new(tries, json_pack("{s:s,s:s}", "plate", name, "run", run));
            campaigns_cand_set(l, w, c, cd, LAB_CAND_STAGED, NULL);
        }
        json_t *sub =
            json_pack("{s:s,s:s,s:s,s:f,s:s}", "workflow", campaigns_str(c->doc, "workflow"),
                      "plate", name, "priority", "normal", "score", score / n, "name", name);
        if (l->queue.submit) {
            /* the lab's queue takes a run document as submitted: what the plate needs goes
             * in its params (the dispense step reads the design there too) */
            json_object_set_new(sub, "params",
                                json_pack("{s:s,s:{s:i,s:O,s:O}}", "campaign", c->id, "design",
                                          "format", format, "reagents", reagents, "wells", vols));
            json_decref(vols);
            campaigns_queue_stage(l, c, pi, sub);
            log_info("loop",
                     "campaign=%s plate %s into the lab's queue: %d candidates x %d, "
                     "score %.4g",
                     c->id, name, n, reps, score / n);
            continue;
        }
        json_t *doc = lab_run_new_doc(sub, run, "campaign", "campaign", campaigns_now_ms(l));
        json_decref(sub);
        json_object_set_new(doc, "campaign", json_string(c->id));
        json_object_set_new(
            doc, "design",
            json_pack("{s:i,s:O,s:o}", "format", format, "reagents", reagents, "wells", vols));
        json_object_set(doc, "layout", wells);
        lab_run_insert_t *ins = lab_run_insert_new();
        ins->id = lab_strdup(run);
        ins->state = lab_strdup("queued");
        ins->doc = json_dumps(doc, JSON_COMPACT);
        ins->ts_ms = campaigns_now_ms(l);
        json_decref(doc);
        lab_campaigns_write_run(w, ins);
        log_info("loop", "campaign=%s plate %s (run %s): %d candidates x %d, score %.4g", c->id,
                 name, run, n, reps, score / n);
    }
    json_decref(reagents);
    json_decref(posv);
    json_decref(negv);
    campaigns_put_camp(l, w, c);
    free(wait);
}

/* Cancels every plate not started (their candidates wait again, or go stale when `older` says
 * their batch is older than the one replacing them). */
void campaigns_unstage(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, const char *newer,
                       json_t *stale)
{
    for (int pi = 0; pi < c->np; pi++) {
        plate_t *p = &c->p[pi];
        if (p->state != LAB_PLATE_STAGED)
            continue;
        int started = lab_sched_run_started(l->sched, p->run);
        if (started == 1) {
            (void)campaigns_plate_set(c, pi, LAB_PLATE_RUNNING); /* from staged: in the table */
            continue;
        }
        (void)campaigns_plate_set(c, pi, LAB_PLATE_RELAID); /* from staged: in the table */
        const char *why = newer ? "its candidates were replaced by a newer batch"
                                : "its candidates were laid out again";
        if (started == 0)
            lab_sched_cancel(l->sched, p->run, "campaign", why, campaigns_noop_done, NULL);
        if (p->queued) { /* out of the lab's queue when no cell holds it yet */
            campaigns_queue_forget(l, c, pi, why);
            campaigns_put_camp(l, w, c);
        }
        for (int i = 0; i < c->nc; i++)
            if (c->c[i]->plate == pi && c->c[i]->state == LAB_CAND_STAGED)
                campaigns_cand_set(l, w, c, c->c[i], LAB_CAND_CANDIDATE, NULL);
    }
    if (!newer)
        return;
    char why[200];
    snprintf(why, sizeof why, "replaced by batch %s before it ran", newer);
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->state == LAB_CAND_CANDIDATE && strcmp(c->c[i]->batch, newer) != 0) {
            campaigns_cand_set(l, w, c, c->c[i], LAB_CAND_STALE, why);
            json_array_append_new(stale, json_string(c->c[i]->id));
        }
}

/* ---- batches and the campaign's end ---- */

static bool batch_final(camp_t *c, const char *batch)
{
    for (int i = 0; i < c->nc; i++)
        if (strcmp(c->c[i]->batch, batch) == 0 && !lab_cand_state_settled(c->c[i]->state))
            return false;
    return true;
}

/* Batches whose candidates are all final get their done event; then the campaign's end. */
void campaigns_settle(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c)
{
    const char *key;
    json_t *b;
    int64_t ord = 0;
    json_object_foreach(c->batches, key, b)
    {
        ord++;
        const char *st = campaigns_str(b, "state");
        if ((st && strcmp(st, "done") == 0) || !batch_final(c, key))
            continue;
        int count[LAB_CAND_NSTATES] = {0};
        json_t *best = NULL;
        for (int i = 0; i < c->nc; i++) {
            cand_t *k = c->c[i];
            if (strcmp(k->batch, key) != 0)
                continue;
            count[k->state]++;
            json_t *r = json_object_get(k->doc, "result");
            if (r &&
                (!best || (campaigns_maximize(c)
                               ? campaigns_num(r, "value", 0) > campaigns_num(best, "value", 0)
                               : campaigns_num(r, "value", 0) < campaigns_num(best, "value", 0))))
                best = r;
        }
        json_t *counts = json_object();
        for (int s = LAB_CAND_COMPLETED; s < LAB_CAND_NSTATES; s++)
            json_object_set_new(counts, lab_cand_state_name(s), json_integer(count[s]));
        json_object_set_new(b, "state", json_string("done"));
        json_object_set_new(b, "done_at", campaigns_now_iso(l));
        json_object_set(b, "counts", counts);
        campaigns_put_batch(w, c, key, ord);
        json_t *ev =
            json_pack("{s:s,s:s,s:O,s:o,s:o}", "campaign", c->id, "batch", key, "model",
                      json_object_get(b, "model"), "counts", counts, "at", campaigns_now_iso(l));
        if (best)
            json_object_set_new(ev, "best",
                                json_pack("{s:O,s:O}", "candidate",
                                          json_object_get(best, "candidate"), "value",
                                          json_object_get(best, "value")));
        char *text = json_dumps(ev, JSON_COMPACT);
        lab_campaigns_write_row(w, "batch.done", c->id, text);
        free(text);
        json_decref(ev);
        log_info("loop", "campaign=%s batch=%s done: %d completed, %d failed", c->id, key,
                 count[LAB_CAND_COMPLETED], count[LAB_CAND_FAILED]);
        /* patience: batches done since the best result improved */
        json_t *since = json_object_get(c->doc, "batches_without_improvement");
        json_object_set_new(c->doc, "batches_without_improvement",
                            json_integer(json_integer_value(since) + 1));
        campaigns_put_camp(l, w, c);
    }
    if (c->state == LAB_CAMP_DONE)
        return;
    /* the stopping rules and the budget */
    const json_t *stop = json_object_get(c->doc, "stop");
    const char *why = NULL;
    char buf[200];
    json_t *best = json_object_get(c->doc, "best");
    if (best && json_object_get(stop, "target")) {
        double t = campaigns_num(stop, "target", 0), v = campaigns_num(best, "value", 0);
        if (campaigns_maximize(c) ? v >= t : v <= t) {
            snprintf(buf, sizeof buf, "the target %g was reached (%.4g, candidate %s)", t, v,
                     campaigns_str(best, "candidate"));
            why = buf;
        }
    }
    json_t *pat = json_object_get(stop, "patience");
    if (!why && pat &&
        json_integer_value(json_object_get(c->doc, "batches_without_improvement")) >=
            json_integer_value(pat)) {
        snprintf(buf, sizeof buf, "%lld batches in a row without a better result",
                 (long long)json_integer_value(pat));
        why = buf;
    }
    bool open = false;
    int accepted = 0;
    for (int i = 0; i < c->nc; i++) {
        open |= !lab_cand_state_settled(c->c[i]->state);
        accepted += c->c[i]->state != LAB_CAND_STALE;
    }
    json_t *budget = json_object_get(c->doc, "budget");
    json_t *bc = json_object_get(budget, "candidates"), *bp = json_object_get(budget, "plates");
    if (!why && !open && bc && accepted >= json_integer_value(bc)) {
        snprintf(buf, sizeof buf, "its budget of %lld candidates is spent",
                 (long long)json_integer_value(bc));
        why = buf;
    }
    if (!why && !open && bp && plates_made(c) >= json_integer_value(bp)) {
        snprintf(buf, sizeof buf, "its budget of %lld plates is spent",
                 (long long)json_integer_value(bp));
        why = buf;
    }
    if (!why)
        return;
    campaigns_unstage(l, w, c, NULL, NULL);
    char abandoned[260];
    snprintf(abandoned, sizeof abandoned, "the campaign is done: %s", why);
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->state == LAB_CAND_CANDIDATE)
            campaigns_cand_set(l, w, c, c->c[i], LAB_CAND_ABANDONED, abandoned);
    campaigns_camp_set(l, w, c, LAB_CAMP_DONE, why);
    campaigns_settle(l, w, c); /* batches that just became final */
}

/* Ax's rule: more than max_failed_fraction of at least min_finished finished candidates
 * failed (instrument trouble aside): the campaign pauses with the reason. */
void campaigns_breaker(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c)
{
    if (c->state != LAB_CAMP_ACTIVE)
        return;
    int finished = 0, failed = 0;
    for (int i = 0; i < c->nc; i++) {
        cand_t *k = c->c[i];
        if (json_is_true(json_object_get(k->doc, "instrument_trouble")))
            continue;
        finished += k->state == LAB_CAND_COMPLETED || k->state == LAB_CAND_FAILED;
        failed += k->state == LAB_CAND_FAILED;
    }
    json_t *br = json_object_get(c->doc, "breaker");
    int min = (int)json_integer_value(json_object_get(br, "min_finished"));
    double frac = campaigns_num(br, "max_failed_fraction", 0.5);
    if (finished >= (min > 0 ? min : 5) && failed > frac * finished) {
        char why[300];
        snprintf(why, sizeof why,
                 "%d of %d finished candidates failed (more than %.0f%%): find the cause, then "
                 "resume the campaign",
                 failed, finished, frac * 100);
        campaigns_camp_set(l, w, c, LAB_CAMP_PAUSED, why);
    }
}

/* ---- a plate's end ---- */

/* The values the objective reads from a plate run's document: {WELL: value}, or NULL with why. */
static json_t *plate_values(camp_t *c, const json_t *run, char *why, size_t whylen)
{
    json_t *readings = json_object_get(run, "readings");
    const char *want = campaigns_str(campaigns_objective(c), "step");
    json_t *r = NULL;
    if (want) {
        r = json_object_get(readings, want);
    } else { /* the last step that read values */
        json_t *steps = json_object_get(run, "steps");
        for (size_t i = json_array_size(steps); i-- > 0 && !r;)
            r = json_object_get(readings, campaigns_str(json_array_get(steps, i), "name") ?: "");
    }
    if (!r) {
        snprintf(why, whylen, "the plate's run read no values%s%s", want ? " in step " : "",
                 want ? want : "");
        lab_text_trim(why);
        return NULL;
    }
    const char *measure = campaigns_str(campaigns_objective(c), "measure");
    if (!measure || !campaigns_str(r, "measure") ||
        strcmp(measure, campaigns_str(r, "measure")) != 0) {
        snprintf(why, whylen, "the plate was read for %s, the objective is %s",
                 campaigns_str(r, "measure") ?: "?", measure ?: "?");
        lab_text_trim(why);
        return NULL;
    }
    return json_object_get(r, "values");
}

static void collect(const json_t *values, const json_t *wells, double *out, int *n)
{
    size_t i;
    json_t *w;
    *n = 0;
    json_array_foreach(wells, i, w)
    {
        json_t *v = json_object_get(values, json_string_value(w));
        if (json_is_number(v))
            out[(*n)++] = json_number_value(v);
    }
}

static void better(lab_campaigns_t *l, camp_t *c, const json_t *res)
{
    json_t *best = json_object_get(c->doc, "best");
    double v = campaigns_num(res, "value", 0);
    if (best && (campaigns_maximize(c) ? v <= campaigns_num(best, "value", 0)
                                       : v >= campaigns_num(best, "value", 0)))
        return;
    json_object_set_new(
        c->doc, "best",
        json_pack("{s:O,s:O,s:O,s:f,s:o}", "candidate", json_object_get(res, "candidate"), "batch",
                  json_object_get(res, "batch"), "params", json_object_get(res, "params"), "value",
                  v, "at", campaigns_now_iso(l)));
    json_object_set_new(c->doc, "batches_without_improvement", json_integer(0));
}

/* Candidates back to waiting after instrument trouble (not a failed experiment), or failed
 * when PLATE_TRIES_MAX plates did not give them a value. */
void campaigns_plate_trouble(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, int pi,
                             const char *why)
{
    for (int i = 0; i < c->nc; i++) {
        cand_t *k = c->c[i];
        if (k->plate != pi)
            continue;
        int tries = (int)json_array_size(json_object_get(k->doc, "plates"));
        char reason[512];
        if (tries >= PLATE_TRIES_MAX) {
            snprintf(reason, sizeof reason, "no value after %d plates; last: %s", tries, why);
            json_object_set_new(k->doc, "instrument_trouble", json_true());
            campaigns_cand_set(l, w, c, k, LAB_CAND_FAILED, reason);
        } else {
            snprintf(reason, sizeof reason, "plate %s gave no value (%s): laid out again",
                     c->p[pi].name, why);
            campaigns_cand_set(l, w, c, k, LAB_CAND_CANDIDATE, reason);
        }
    }
}

/* A candidate's share of its plate run's cost: its wells over the plate's used wells (the
 * controls' wells are shared by the candidates beside them). NULL when the run has no cost. */
static json_t *candidate_cost(const json_t *run, const json_t *layout, int wells)
{
    json_t *cost = json_object_get(run, "cost");
    json_t *total = json_object_get(cost, "total");
    size_t used = json_object_size(layout);
    if (!json_is_number(total) || !used || wells <= 0)
        return NULL;
    double share = (double)wells / (double)used;
    return json_pack("{s:O, s:O, s:i, s:i, s:f, s:f}", "currency",
                     json_object_get(cost, "currency"), "plate_run", total, "wells", wells,
                     "plate_wells", (int)used, "share", share, "cost",
                     round(json_number_value(total) * share * 1e6) / 1e6);
}

void campaigns_plate_done(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, int pi,
                          const json_t *run)
{
    plate_t *p = &c->p[pi];
    char why[300];
    json_t *values = plate_values(c, run, why, sizeof why);
    if (!values) {
        campaigns_plate_trouble(l, w, c, pi, why);
        return;
    }
    double pos[384], neg[384];
    int npos, nneg;
    collect(values, campaigns_control_wells(c, "positive"), pos, &npos);
    collect(values, campaigns_control_wells(c, "negative"), neg, &nneg);
    lab_qc_t qc;
    bool ok = lab_qc_compute(pos, npos, neg, nneg, &qc, why, sizeof why);
    double zmin = campaigns_num(json_object_get(c->doc, "qc"), "z_prime_min", 0.5);
    if (ok && !(qc.z_prime >= zmin)) {
        snprintf(why, sizeof why, "Z' %.3f is under the campaign's threshold %.3f", qc.z_prime,
                 zmin);
        ok = false;
    }
    json_t *prow = json_pack("{s:s,s:s,s:s,s:i,s:b,s:O,s:o}", "campaign", c->id, "plate", p->name,
                             "run", p->run, "no", p->no, "passed", ok, "layout", p->wells, "at",
                             campaigns_now_iso(l));
    if (qc.n_pos >= 2 && qc.n_neg >= 2) {
        json_object_set_new(prow, "mu_pos", json_real(qc.mu_pos));
        json_object_set_new(prow, "sd_pos", json_real(qc.sd_pos));
        json_object_set_new(prow, "mu_neg", json_real(qc.mu_neg));
        json_object_set_new(prow, "sd_neg", json_real(qc.sd_neg));
        if (isfinite(qc.z_prime))
            json_object_set_new(prow, "z_prime", json_real(qc.z_prime));
    }
    if (!ok)
        json_object_set_new(prow, "reason", json_string(why));
    char *text = json_dumps(prow, JSON_COMPACT);
    lab_campaigns_write_row(w, "plate", c->id, text);
    free(text);
    json_decref(prow);
    log_info("loop", "campaign=%s plate %s %s: Z'=%.3f%s%s", c->id, p->name,
             ok ? "passed QC" : "failed QC", qc.z_prime, ok ? "" : ": ", ok ? "" : why);
    int retries =
        (int)json_integer_value(json_object_get(json_object_get(c->doc, "qc"), "retries"));
    for (int i = 0; i < c->nc; i++) {
        cand_t *k = c->c[i];
        if (k->plate != pi)
            continue;
        if (!ok) {
            int fails = (int)json_integer_value(json_object_get(k->doc, "qc_failures")) + 1;
            json_object_set_new(k->doc, "qc_failures", json_integer(fails));
            char reason[512];
            if (fails > retries) {
                snprintf(reason, sizeof reason, "plate %.96s failed QC (%.*s), %d time%s", p->name,
                         (int)lab_text_fit(why, 300), why, fails, fails == 1 ? "" : "s");
                campaigns_cand_set(l, w, c, k, LAB_CAND_FAILED, reason);
            } else {
                snprintf(reason, sizeof reason, "plate %.96s failed QC (%.*s): re-run", p->name,
                         (int)lab_text_fit(why, 300), why);
                campaigns_cand_set(l, w, c, k, LAB_CAND_CANDIDATE, reason);
            }
            continue;
        }
        double raw[64], norm[64];
        int n;
        json_t *wells = json_object_get(k->doc, "wells");
        collect(values, wells, raw, &n);
        if (!n) {
            campaigns_plate_trouble(l, w, c, pi, "its wells have no values");
            continue;
        }
        double s = 0, ss = 0;
        json_t *jraw = json_array(), *jrep = json_array();
        for (int j = 0; j < n; j++) {
            norm[j] = lab_qc_normalise(&qc, raw[j]);
            s += norm[j];
            json_array_append_new(jraw, json_real(raw[j]));
            json_array_append_new(jrep, json_real(norm[j]));
        }
        double mean = s / n;
        for (int j = 0; j < n; j++)
            ss += (norm[j] - mean) * (norm[j] - mean);
        json_t *res = json_pack(
            "{s:s,s:s,s:s,s:O,s:O,s:f,s:f,s:o,s:o,s:O,s:s,s:s,s:f,s:O,s:o}", "campaign", c->id,
            "candidate", k->id, "batch", k->batch, "model", json_object_get(k->doc, "model"),
            "params", json_object_get(k->doc, "params"), "value", mean, "sd",
            n > 1 ? sqrt(ss / (n - 1)) : 0.0, "replicates", jrep, "raw", jraw, "wells", wells,
            "plate", p->name, "run", p->run, "z_prime", qc.z_prime, "measure",
            json_object_get(campaigns_objective(c), "measure"), "at", campaigns_now_iso(l));
        if (json_object_get(k->doc, "fit"))
            json_object_set(res, "fit", json_object_get(k->doc, "fit"));
        json_t *cost = candidate_cost(run, p->wells, n);
        if (cost)
            json_object_set_new(res, "cost", cost);
        json_object_set(k->doc, "result", res);
        campaigns_cand_set(l, w, c, k, LAB_CAND_COMPLETED, NULL);
        text = json_dumps(res, JSON_COMPACT);
        lab_campaigns_write_row(w, "campaign.result", c->id, text);
        free(text);
        better(l, c, res);
        json_decref(res);
    }
}

/* A change of one of our plate runs, after it committed. */
