/* Batches in (checked, answered, kept; a repeat answered the same), new scores, and the
 * candidates and results as the API lists them. */
#include "daemon/campaign/engine_int.h"
#include "daemon/campaign/layout.h"

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/model/run_states.h"
#include "daemon/store/runs.h"
#include "daemon/store/workflows.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *batch_hash(const json_t *batch)
{
    json_t *b = json_deep_copy(batch);
    json_object_del(b, "reply_to");
    char *t = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(b);
    return t;
}

static void batch_check(camp_t *c, const json_t *batch, lab_jerrs_t *e)
{
    const char *named = campaigns_str(batch, "campaign");
    if (named && strcmp(named, c->id) != 0)
        lab_jerrs_add(e, "/campaign", "this batch is for campaign %s, it was sent to %s", named,
                      c->id);
    json_t *cands = json_object_get(batch, "candidates");
    json_t *seen = json_object();
    size_t i;
    json_t *k;
    json_array_foreach(cands, i, k)
    {
        char base[48];
        snprintf(base, sizeof base, "/candidates/%zu", i);
        const char *id = campaigns_str(k, "id");
        char path[96];
        snprintf(path, sizeof path, "%s/id", base);
        cand_t *prev = campaigns_cand_find(c, id);
        if (json_object_get(seen, id))
            lab_jerrs_add(e, path, "duplicate id %s in this batch", id);
        else if (prev)
            lab_jerrs_add(e, path, "duplicate id %s: batch %s has it", id, prev->batch);
        json_object_set_new(seen, id, json_true());
        json_t *params = json_object_get(k, "params");
        const char *name;
        json_t *v;
        json_object_foreach(params, name, v)
        {
            bool known = false;
            size_t j;
            json_t *p;
            json_array_foreach(campaigns_params_of(c), j, p) known |=
                strcmp(campaigns_str(p, "name"), name) == 0;
            if (!known) {
                char *pp = lab_jpointer_append(base, "params");
                char *q = lab_jpointer_append(pp, name);
                lab_jerrs_add(e, q, "unknown parameter '%s'", name);
                free(q);
                free(pp);
            }
        }
        size_t j;
        json_t *p;
        json_array_foreach(campaigns_params_of(c), j, p)
        {
            name = campaigns_str(p, "name");
            v = json_object_get(params, name);
            char *pp = lab_jpointer_append(base, "params");
            char *q = lab_jpointer_append(pp, name);
            if (!v) {
                lab_jerrs_add(e, q, "parameter '%s' is missing", name);
            } else if (campaigns_param_is_choice(p)) {
                bool ok = false;
                size_t m;
                json_t *ch;
                json_array_foreach(json_object_get(p, "choices"), m, ch) ok |= json_equal(ch, v);
                if (!ok)
                    lab_jerrs_add(e, q, "'%s' is not one of the choices of '%s'",
                                  json_string_value(v) ?: "(not text)", name);
            } else if (!json_is_number(v)) {
                lab_jerrs_add(e, q, "'%s' must be a number (uL)", name);
            } else if (json_number_value(v) < campaigns_num(p, "min", 0)) {
                lab_jerrs_add(e, q, "%g is below the minimum %g of '%s'", json_number_value(v),
                              campaigns_num(p, "min", 0), name);
            } else if (json_number_value(v) > campaigns_num(p, "max", 0)) {
                lab_jerrs_add(e, q, "%g is above the maximum %g of '%s'", json_number_value(v),
                              campaigns_num(p, "max", 0), name);
            }
            free(q);
            free(pp);
        }
    }
    json_decref(seen);
    json_t *bc = json_object_get(json_object_get(c->doc, "budget"), "candidates");
    if (bc) {
        int accepted = 0;
        for (int m = 0; m < c->nc; m++)
            accepted += c->c[m]->state != LAB_CAND_STALE;
        /* candidates this batch makes stale free their place */
        if (json_is_true(json_object_get(batch, "replaces_pending")))
            for (int m = 0; m < c->nc; m++)
                accepted -=
                    c->c[m]->state == LAB_CAND_CANDIDATE || c->c[m]->state == LAB_CAND_STAGED;
        long long room = json_integer_value(bc) - accepted;
        if ((long long)json_array_size(cands) > room)
            lab_jerrs_add(e, "/candidates",
                          "%zu candidates are over the campaign's budget of %lld: %lld more "
                          "can be accepted",
                          json_array_size(cands), (long long)json_integer_value(bc),
                          room > 0 ? room : 0);
    }
    if (c->state == LAB_CAMP_DONE)
        lab_jerrs_add(e, "", "the campaign is done (%s): it takes no more batches",
                      campaigns_str(c->doc, "reason") ?: "");
}

void lab_campaigns_batch(lab_campaigns_t *l, const char *campaign, const json_t *batch,
                         const char *by, const char *via, lab_campaigns_cb cb, void *arg)
{
    if (l->stopped) {
        campaigns_answer(cb, arg, 503,
                         campaigns_problem("the daemon is shutting down; not accepted", NULL));
        return;
    }
    camp_t *c = campaigns_camp_find(l, campaign);
    const char *bid = campaigns_str(batch, "batch");
    if (!c) {
        char msg[200];
        snprintf(msg, sizeof msg, "there is no campaign %.100s", campaign);
        campaigns_answer(
            cb, arg, 404,
            campaigns_problem(msg, json_pack("[{s:s,s:s}]", "path", "/campaign", "message", msg)));
        return;
    }
    char *hash = batch_hash(batch);
    json_t *prev = json_object_get(c->batches, bid);
    if (prev) {
        bool same = strcmp(campaigns_str(prev, "hash") ?: "", hash) == 0;
        free(hash);
        if (same) {
            json_t *a = json_deep_copy(json_object_get(prev, "answer"));
            json_object_set_new(a, "duplicate", json_true());
            campaigns_answer(cb, arg, 200, a);
        } else {
            char msg[200];
            snprintf(msg, sizeof msg, "batch %s was received before with other content", bid);
            log_info("loop", "campaign=%s batch=%s rejected: received before with other content",
                     c->id, bid);
            campaigns_answer(
                cb, arg, 422,
                campaigns_problem(msg, json_pack("[{s:s,s:s}]", "path", "/batch", "message", msg)));
        }
        return;
    }
    lab_jerrs_t e = {0};
    batch_check(c, batch, &e);
    if (e.n) {
        free(hash);
        json_t *a = campaigns_problem("the batch was rejected", lab_jerrs_to_json(&e));
        json_object_set_new(a, "status", json_string("rejected"));
        json_object_set_new(a, "campaign", json_string(c->id));
        json_object_set_new(a, "batch", json_string(bid));
        log_info("loop", "campaign=%s batch=%s rejected (%d problems)", c->id, bid, e.n);
        lab_jerrs_free(&e);
        campaigns_answer(cb, arg, 422, a);
        return;
    }
    lab_campaigns_write_t *w = lab_campaigns_write_new(campaigns_now_ms(l));
    json_t *stale = json_array(), *accepted = json_array();
    if (json_is_true(json_object_get(batch, "replaces_pending")))
        campaigns_unstage(l, w, c, bid, stale);
    json_t *model = json_object_get(batch, "model");
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(batch, "candidates"), i, k)
    {
        json_t *d = json_pack("{s:O,s:s,s:s,s:O,s:O,s:O,s:s,s:I,s:o}", "id",
                              json_object_get(k, "id"), "campaign", c->id, "batch", bid, "model",
                              model, "params", json_object_get(k, "params"), "score",
                              json_object_get(k, "score"), "state", "candidate", "ord",
                              (json_int_t)c->next_ord, "created_at", campaigns_now_iso(l));
        if (json_object_get(k, "uncertainty"))
            json_object_set(d, "uncertainty", json_object_get(k, "uncertainty"));
        if (json_object_get(batch, "fit"))
            json_object_set(d, "fit", json_object_get(batch, "fit"));
        cand_t *cd = campaigns_cand_add(c, d);
        campaigns_put_cand(l, w, c, cd);
        json_array_append(accepted, json_object_get(k, "id"));
    }
    json_t *ans = json_pack("{s:s,s:s,s:s,s:o,s:o}", "status", "accepted", "campaign", c->id,
                            "batch", bid, "accepted", accepted, "stale", stale);
    json_t *rec = json_pack("{s:s,s:s,s:O,s:s,s:s,s:s,s:o,s:s,s:O}", "campaign", c->id, "batch",
                            bid, "model", model, "hash", hash, "by", by, "via", via, "received_at",
                            campaigns_now_iso(l), "state", "open", "answer", ans);
    if (json_object_get(batch, "fit"))
        json_object_set(rec, "fit", json_object_get(batch, "fit"));
    free(hash);
    json_object_set_new(c->batches, bid, rec);
    campaigns_put_batch(w, c, bid, (int64_t)json_object_size(c->batches));
    log_info("loop", "campaign=%s batch=%s accepted from %s via %s: %zu candidates, %zu stale",
             c->id, bid, by, via, json_array_size(json_object_get(ans, "accepted")),
             json_array_size(json_object_get(ans, "stale")));
    campaigns_stage(l, w, c);
    campaigns_settle(l, w, c); /* older batches that only had stale candidates left */
    campaigns_commit(l, w, cb, arg, 201, ans);
}

void lab_campaigns_scores(lab_campaigns_t *l, const char *campaign, const json_t *body,
                          const char *by, lab_campaigns_cb cb, void *arg)
{
    camp_t *c = campaigns_camp_find(l, campaign);
    if (!c) {
        campaigns_answer(cb, arg, 404, campaigns_problem("there is no such campaign", NULL));
        return;
    }
    json_t *scores = json_object_get(body, "scores");
    lab_jerrs_t e = {0};
    if (!json_is_array(scores) || !json_array_size(scores))
        lab_jerrs_add(&e, "/scores", "scores must be a non-empty array of {id, score}");
    size_t i;
    json_t *s;
    json_array_foreach(scores, i, s)
    {
        char path[48];
        snprintf(path, sizeof path, "/scores/%zu", i);
        cand_t *k = campaigns_cand_find(c, campaigns_str(s, "id"));
        if (!k)
            lab_jerrs_add(&e, path, "no candidate %s in this campaign",
                          campaigns_str(s, "id") ?: "(no id)");
        else if (k->state != LAB_CAND_CANDIDATE && k->state != LAB_CAND_STAGED)
            lab_jerrs_add(&e, path, "candidate %s is %s: only candidates not started are re-scored",
                          k->id, lab_cand_state_name(k->state));
        if (!json_is_number(json_object_get(s, "score")))
            lab_jerrs_add(&e, path, "score must be a number");
    }
    if (e.n) {
        campaigns_answer(cb, arg, 422,
                         campaigns_problem("the scores were not taken", lab_jerrs_to_json(&e)));
        lab_jerrs_free(&e);
        return;
    }
    lab_campaigns_write_t *w = lab_campaigns_write_new(campaigns_now_ms(l));
    json_t *done = json_array();
    bool *touched = lab_calloc((size_t)c->np + 1, sizeof *touched);
    json_array_foreach(scores, i, s)
    {
        cand_t *k = campaigns_cand_find(c, campaigns_str(s, "id"));
        json_object_set(k->doc, "score", json_object_get(s, "score"));
        if (json_object_get(s, "uncertainty"))
            json_object_set(k->doc, "uncertainty", json_object_get(s, "uncertainty"));
        json_object_set_new(k->doc, "rescored_by", json_string(by));
        campaigns_put_cand(l, w, c, k);
        if (k->plate >= 0)
            touched[k->plate] = true;
        json_array_append_new(done, json_string(k->id));
    }
    for (int pi = 0; pi < c->np; pi++)
        if (touched[pi] && lab_plate_state_live(c->p[pi].state))
            lab_sched_reprioritize(l->sched, c->p[pi].run, by, NULL, true,
                                   campaigns_plate_score(c, pi), campaigns_noop_done, NULL);
    free(touched);
    campaigns_commit(l, w, cb, arg, 200,
                     json_pack("{s:s,s:o}", "campaign", c->id, "rescored", done));
}

json_t *lab_campaigns_candidates(lab_campaigns_t *l, const char *campaign, const char *state)
{
    camp_t *c = campaigns_camp_find(l, campaign);
    if (!c)
        return NULL;
    int want = state ? lab_cand_state_parse(state) : -1;
    json_t *out = json_array();
    for (int i = 0; i < c->nc; i++)
        if (want < 0 || (int)c->c[i]->state == want)
            json_array_append(out, c->c[i]->doc);
    return out;
}

json_t *lab_campaigns_results(lab_campaigns_t *l, const char *campaign)
{
    camp_t *c = campaigns_camp_find(l, campaign);
    if (!c)
        return NULL;
    json_t *out = json_array();
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->state == LAB_CAND_COMPLETED)
            json_array_append(out, json_object_get(c->c[i]->doc, "result"));
    return out;
}
