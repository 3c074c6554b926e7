/* Campaign documents: what the schema cannot check, the defaults, the view; the design space
 * (which reagents a candidate's parameters dispense, and how much); creating, pausing and
 * resuming a campaign. */
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

/* ---- the design space ---- */

json_t *campaigns_params_of(const camp_t *c)
{
    return json_object_get(c->doc, "parameters");
}

/* The reagent a volume parameter dispenses. */
static const char *param_reagent(const json_t *p)
{
    return campaigns_str(p, "reagent") ? campaigns_str(p, "reagent") : campaigns_str(p, "name");
}

bool campaigns_param_is_choice(const json_t *p)
{
    const char *t = campaigns_str(p, "type");
    return t && strcmp(t, "choice") == 0;
}

/* Every reagent the design can dispense, in parameter order, as a JSON array. */
json_t *campaigns_design_reagents(const camp_t *c)
{
    json_t *out = json_array();
    size_t i, j;
    json_t *p, *ch;
    json_array_foreach(campaigns_params_of(c), i, p)
    {
        if (campaigns_param_is_choice(p)) {
            json_array_foreach(json_object_get(p, "choices"), j, ch)
            {
                bool seen = false;
                size_t m;
                json_t *r;
                json_array_foreach(out, m, r) seen |= json_equal(r, ch);
                if (!seen)
                    json_array_append(out, ch);
            }
        } else {
            json_array_append_new(out, json_string(param_reagent(p)));
        }
    }
    return out;
}

static int reagent_index(const json_t *reagents, const char *name)
{
    size_t i;
    json_t *r;
    json_array_foreach(reagents, i, r) if (strcmp(json_string_value(r), name) == 0) return (int)i;
    return -1;
}

/* The microlitres per reagent a candidate's params put into a well. */
json_t *campaigns_volumes_of(const camp_t *c, const json_t *reagents, const json_t *params)
{
    size_t nr = json_array_size(reagents);
    double *ul = lab_calloc(nr + 1, sizeof *ul);
    size_t i;
    json_t *p;
    json_array_foreach(campaigns_params_of(c), i, p)
    {
        json_t *v = json_object_get(params, campaigns_str(p, "name"));
        int r;
        if (campaigns_param_is_choice(p)) {
            if ((r = reagent_index(reagents, json_string_value(v) ?: "")) >= 0)
                ul[r] += campaigns_num(p, "volume_ul", 0);
        } else if ((r = reagent_index(reagents, param_reagent(p))) >= 0) {
            ul[r] += json_number_value(v);
        }
    }
    json_t *out = json_array();
    for (size_t r = 0; r < nr; r++)
        json_array_append_new(out, json_real(ul[r]));
    free(ul);
    return out;
}

json_t *campaigns_control_volumes(const camp_t *c, const json_t *reagents, const char *which)
{
    json_t *vols = json_object_get(json_object_get(campaigns_layout(c), which), "volumes");
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(reagents, i, r)
        json_array_append_new(out, json_real(campaigns_num(vols, json_string_value(r), 0)));
    return out;
}

/* ---- campaign documents ---- */

/* Problems the schema cannot see: bounds, wells, reagents, the workflow. */
static void campaign_check(lab_campaigns_t *l, const json_t *doc, lab_jerrs_t *e)
{
    size_t i;
    json_t *p;
    json_t *names = json_object();
    json_array_foreach(json_object_get(doc, "parameters"), i, p)
    {
        char path[64];
        snprintf(path, sizeof path, "/parameters/%zu", i);
        const char *name = campaigns_str(p, "name");
        if (json_object_get(names, name))
            lab_jerrs_add(e, path, "parameter '%s' is named twice", name);
        json_object_set_new(names, name, json_true());
        if (campaigns_param_is_choice(p)) {
            if (!json_object_get(p, "choices") || !json_object_get(p, "volume_ul"))
                lab_jerrs_add(e, path, "a choice needs choices (reagents) and volume_ul");
            if (json_object_get(p, "min") || json_object_get(p, "max") ||
                json_object_get(p, "reagent"))
                lab_jerrs_add(e, path, "a choice has no min, max or reagent");
        } else {
            if (!json_object_get(p, "max"))
                lab_jerrs_add(e, path, "a volume needs max (uL)");
            else if (campaigns_num(p, "min", 0) >= campaigns_num(p, "max", 0))
                lab_jerrs_add(e, path, "min (%g) must be below max (%g)",
                              campaigns_num(p, "min", 0), campaigns_num(p, "max", 0));
            if (json_object_get(p, "choices") || json_object_get(p, "volume_ul"))
                lab_jerrs_add(e, path, "a volume has no choices or volume_ul");
        }
    }
    json_decref(names);

    json_t *lay = json_object_get(doc, "layout");
    json_t *jf = json_object_get(lay, "format");
    int format = jf ? (int)json_integer_value(jf) : 96;
    const char *which[2] = {"positive", "negative"};
    for (int w = 0; w < 2; w++) {
        json_t *wells = json_object_get(json_object_get(lay, which[w]), "wells");
        json_t *wl;
        json_array_foreach(wells, i, wl)
        {
            int r, col;
            char path[64];
            snprintf(path, sizeof path, "/layout/%s/wells/%zu", which[w], i);
            if (!lab_well_parse(json_string_value(wl), format, &r, &col))
                lab_jerrs_add(e, path, "%s is not a well of a %d-well plate", json_string_value(wl),
                              format);
            else if (w == 1) {
                size_t j;
                json_t *o;
                json_array_foreach(json_object_get(json_object_get(lay, "positive"), "wells"), j, o)
                {
                    int r2, c2;
                    if (lab_well_parse(json_string_value(o), format, &r2, &c2) && r2 == r &&
                        c2 == col)
                        lab_jerrs_add(e, path, "%s is a positive control too",
                                      json_string_value(wl));
                }
            }
        }
    }
    camp_t tmp = {.doc = (json_t *)doc};
    json_t *reagents = campaigns_design_reagents(&tmp);
    for (int w = 0; w < 2; w++) {
        const char *key;
        json_t *v;
        json_object_foreach(json_object_get(json_object_get(lay, which[w]), "volumes"), key, v)
        {
            if (reagent_index(reagents, key) < 0) {
                char *path = lab_jpointer_append(which[w][0] == 'p' ? "/layout/positive/volumes"
                                                                    : "/layout/negative/volumes",
                                                 key);
                lab_jerrs_add(e, path, "reagent '%s' is not one the parameters dispense", key);
                free(path);
            }
        }
    }
    json_decref(reagents);
    if (!e->n && campaigns_plate_capacity(&tmp) < 1)
        lab_jerrs_add(e, "/layout", "the controls leave no room for %d replicates of a candidate",
                      campaigns_replicates_of(&tmp));

    const char *kind = campaigns_str(json_object_get(doc, "learner"), "kind");
    if (kind && strcmp(kind, "builtin") == 0) {
        json_array_foreach(json_object_get(doc, "parameters"), i,
                           p) if (campaigns_param_is_choice(p))
        {
            char path[64];
            snprintf(path, sizeof path, "/parameters/%zu", i);
            lab_jerrs_add(e, path, "the built-in learner proposes volumes only, not choices");
        }
    }

    /* the workflow: stored, with a design dispense */
    const char *wf = campaigns_str(doc, "workflow");
    char *text = NULL;
    if (lab_workflows_get(l->st, wf, 0, &text) != LAB_OK) {
        lab_jerrs_add(e, "/workflow", "workflow %s is not stored", wf);
        return;
    }
    json_t *w = json_loads(text, 0, NULL);
    free(text);
    bool design = false;
    json_t *s;
    json_array_foreach(json_object_get(w, "steps"), i, s) design |=
        json_is_true(json_object_get(json_object_get(s, "params"), "design"));
    if (!design)
        lab_jerrs_add(e, "/workflow",
                      "workflow %s has no step with params {\"design\": true} to dispense the "
                      "candidates' volumes",
                      wf);
    json_decref(w);
}

/* The stored form of a new campaign: the document with its defaults, id and state. */
static json_t *campaign_doc(lab_campaigns_t *l, const json_t *in, const char *by)
{
    json_t *d = json_deep_copy(in);
    if (!json_object_get(d, "id")) {
        char id[LAB_UUID_LEN + 1];
        lab_uuid4(id);
        json_object_set_new(d, "id", json_string(id));
    }
    json_t *lay = json_object_get(d, "layout");
    if (!json_object_get(lay, "format"))
        json_object_set_new(lay, "format", json_integer(96));
    if (!json_object_get(lay, "replicates"))
        json_object_set_new(lay, "replicates", json_integer(2));
    if (!json_object_get(d, "batch_size"))
        json_object_set_new(d, "batch_size", json_integer(8));
    if (!json_object_get(d, "learner"))
        json_object_set_new(d, "learner", json_pack("{s:s}", "kind", "external"));
    json_t *qc = json_object_get(d, "qc");
    if (!qc)
        json_object_set_new(d, "qc", qc = json_object());
    if (!json_object_get(qc, "z_prime_min"))
        json_object_set_new(qc, "z_prime_min", json_real(0.5));
    if (!json_object_get(qc, "retries"))
        json_object_set_new(qc, "retries", json_integer(1));
    json_t *br = json_object_get(d, "breaker");
    if (!br)
        json_object_set_new(d, "breaker", br = json_object());
    if (!json_object_get(br, "min_finished"))
        json_object_set_new(br, "min_finished", json_integer(5));
    if (!json_object_get(br, "max_failed_fraction"))
        json_object_set_new(br, "max_failed_fraction", json_real(0.5));
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(d, "parameters"), i, p)
    {
        if (!json_object_get(p, "type"))
            json_object_set_new(p, "type", json_string("volume"));
        if (!campaigns_param_is_choice(p) && !json_object_get(p, "min"))
            json_object_set_new(p, "min", json_real(0));
    }
    json_object_set_new(d, "state", json_string(lab_camp_state_name(LAB_CAMP_ACTIVE)));
    json_object_set_new(d, "created_by", json_string(by));
    json_object_set_new(d, "created_at", campaigns_now_iso(l));
    json_object_set_new(d, "plates_made", json_integer(0));
    return d;
}

static json_t *camp_view(lab_campaigns_t *l, camp_t *c)
{
    (void)l;
    json_t *v = json_deep_copy(c->doc);
    int count[LAB_CAND_NSTATES] = {0};
    for (int i = 0; i < c->nc; i++)
        count[c->c[i]->state]++;
    json_t *counts = json_object();
    for (int s = 0; s < LAB_CAND_NSTATES; s++)
        json_object_set_new(counts, lab_cand_state_name(s), json_integer(count[s]));
    json_object_set_new(v, "candidates", counts);
    json_t *batches = json_array();
    const char *key;
    json_t *b;
    json_object_foreach(c->batches, key, b) json_array_append_new(
        batches,
        json_pack("{s:s,s:O,s:O,s:O}", "batch", key, "model", json_object_get(b, "model"), "state",
                  json_object_get(b, "state"), "received_at", json_object_get(b, "received_at")));
    json_object_set_new(v, "batches", batches);
    json_t *plates = json_array();
    for (int i = 0; i < c->np; i++)
        if (lab_plate_state_live(c->p[i].state))
            json_array_append_new(plates, json_pack("{s:s,s:s,s:b}", "plate", c->p[i].name, "run",
                                                    c->p[i].run, "started",
                                                    c->p[i].state == LAB_PLATE_RUNNING));
    json_object_set_new(v, "plates", plates);
    return v;
}

/* ---- requests ---- */

void lab_campaigns_create(lab_campaigns_t *l, const json_t *in, const char *by, lab_campaigns_cb cb,
                          void *arg)
{
    if (l->stopped) {
        campaigns_answer(cb, arg, 503,
                         campaigns_problem("the daemon is shutting down; not created", NULL));
        return;
    }
    lab_jerrs_t e = {0};
    campaign_check(l, in, &e);
    if (e.n) {
        campaigns_answer(cb, arg, 422,
                         campaigns_problem("the campaign has problems", lab_jerrs_to_json(&e)));
        lab_jerrs_free(&e);
        return;
    }
    json_t *doc = campaign_doc(l, in, by);
    camp_t *old = campaigns_camp_find(l, campaigns_str(doc, "id"));
    if (old) {
        /* the same document again (a retry) is the same campaign */
        json_t *a = json_deep_copy(in), *b = json_deep_copy(old->doc);
        const char *keys[] = {
            "state",        "reason",      "created_by", "created_at",
            "updated_at",   "plates_made", "best",       "batches_without_improvement",
            "learner_state"};
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
            json_object_del(b, keys[i]);
        json_t *na = campaign_doc(l, a, by);
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
            json_object_del(na, keys[i]);
        bool same = json_equal(na, b);
        json_decref(a);
        json_decref(b);
        json_decref(na);
        json_decref(doc);
        if (same)
            campaigns_answer(cb, arg, 200, camp_view(l, old));
        else
            campaigns_answer(
                cb, arg, 409,
                campaigns_problem("another campaign has this id",
                                  json_pack("[{s:s,s:s}]", "path", "/id", "message",
                                            "a campaign with this id and other content exists")));
        return;
    }
    camp_t *c = campaigns_camp_add(l, doc);
    lab_campaigns_write_t *w = lab_campaigns_write_new(campaigns_now_ms(l));
    campaigns_put_camp(l, w, c);
    log_info("loop", "campaign=%s created by %s: workflow %s, %zu parameters, learner %s", c->id,
             by, campaigns_str(doc, "workflow"), json_array_size(campaigns_params_of(c)),
             campaigns_str(json_object_get(doc, "learner"), "kind"));
    campaigns_commit(l, w, cb, arg, 201, camp_view(l, c));
    campaigns_maybe_propose(l, c);
}

/* The batch's text for duplicate detection: its document without reply_to, keys sorted. */
void lab_campaigns_control(lab_campaigns_t *l, const char *campaign, const char *what,
                           const char *by, lab_campaigns_cb cb, void *arg)
{
    camp_t *c = campaigns_camp_find(l, campaign);
    if (!c) {
        campaigns_answer(cb, arg, 404, campaigns_problem("there is no such campaign", NULL));
        return;
    }
    if (c->state == LAB_CAMP_DONE) {
        campaigns_answer(cb, arg, 409, campaigns_problem("the campaign is done", NULL));
        return;
    }
    lab_campaigns_write_t *w = lab_campaigns_write_new(campaigns_now_ms(l));
    char why[160];
    bool pause = strcmp(what, "pause") == 0;
    snprintf(why, sizeof why, "paused by %s", by);
    if (campaigns_camp_set(l, w, c, pause ? LAB_CAMP_PAUSED : LAB_CAMP_ACTIVE, pause ? why : NULL) <
        0) {
        lab_campaigns_write_free(w);
        campaigns_answer(cb, arg, 409,
                         campaigns_problem(pause ? "the campaign cannot be paused now"
                                                 : "the campaign cannot be resumed now",
                                           NULL));
        return;
    }
    if (!pause) {
        json_object_set_new(c->doc, "resumed_by", json_string(by));
        campaigns_stage(l, w, c);
    } else {
        campaigns_queue_pause(l, c);
    }
    campaigns_commit(l, w, cb, arg, 200, camp_view(l, c));
    campaigns_maybe_propose(l, c);
}

json_t *lab_campaigns_get(lab_campaigns_t *l, const char *campaign)
{
    camp_t *c = campaigns_camp_find(l, campaign);
    return c ? camp_view(l, c) : NULL;
}

json_t *lab_campaigns_list(lab_campaigns_t *l)
{
    json_t *out = json_array();
    for (int i = 0; i < l->n; i++) {
        camp_t *c = l->v[i];
        json_array_append_new(out, json_pack("{s:s,s:s,s:O,s:O}", "id", c->id, "state",
                                             lab_camp_state_name(c->state), "workflow",
                                             json_object_get(c->doc, "workflow"), "created_at",
                                             json_object_get(c->doc, "created_at")));
    }
    return out;
}
