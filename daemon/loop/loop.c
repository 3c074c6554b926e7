/* The closed loop's engine: campaigns in memory (their documents are the records), batches in,
 * plates out through the scheduler, results back from the plates' readings. */
#include "daemon/loop/loop.h"
#include "daemon/loop/plate.h"
#include "daemon/loop/learn.h"

#include "core/err.h"
#include "core/id.h"
#include "core/jschema.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/bus/topics.h"
#include "daemon/model/run.h"
#include "daemon/store/campaigns.h"
#include "daemon/store/runs.h"
#include "daemon/store/workflows.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum cand_state {
    CS_CANDIDATE,
    CS_STAGED,
    CS_RUNNING,
    CS_COMPLETED,
    CS_FAILED,
    CS_ABANDONED,
    CS_STALE,
    CS_N
} cand_state_t;

static const char *const cs_names[CS_N] = {"candidate", "staged",    "running", "completed",
                                           "failed",    "abandoned", "stale"};

int lab_cand_state_parse(const char *name)
{
    for (int i = 0; name && i < CS_N; i++)
        if (strcmp(cs_names[i], name) == 0)
            return i;
    return -1;
}

static bool cs_final(cand_state_t s)
{
    return s >= CS_COMPLETED;
}

/* Instrument trouble (a plate run that failed or was cancelled by a person) re-lays its
 * candidates on a new plate, up to this many plates; it never counts as a failed experiment. */
#define PLATE_TRIES_MAX 3

typedef struct cand {
    json_t *doc; /* the record */
    const char *id, *batch;
    cand_state_t state;
    int64_t ord;
    int plate; /* index in the campaign's plates while staged or running, else -1 */
} cand_t;

typedef struct plate {
    char run[LAB_UUID_LEN + 1];
    char name[96];
    int no;
    bool started, over, relaid;
    json_t *wells; /* {WELL: {"role": "positive"|"negative"|"candidate", "candidate"?}} */
} plate_t;

typedef struct camp {
    char id[72];
    json_t *doc; /* the record: the campaign as created, with state, reason, counters */
    const char *state;
    cand_t **c;
    int nc, capc;
    json_t *batches; /* {batch id: record}, in order of arrival */
    plate_t *p;
    int np, capp;
    int64_t next_ord;
    /* the learner */
    bool proposing;
    int fits;
} camp_t;

struct lab_loop {
    uv_loop_t *loop;
    const lab_config_t *cfg;
    const lab_clock_t *clock;
    lab_store_t *st;
    lab_sched_t *sched;
    lab_mqtt_t *mqtt;
    lab_jschema_t *batch_schema;
    camp_t **v;
    int n, cap;
    bool stopped;
    int ops, works; /* store writes and learner fits in flight */
    void (*close_cb)(void *arg);
    void *close_arg;
};

/* ---- small helpers ---- */

static int64_t now_ms(const lab_loop_t *l)
{
    return lab_clock_now_ms(l->clock);
}

static json_t *now_iso(const lab_loop_t *l)
{
    char ts[32];
    lab_time_iso(now_ms(l), ts);
    return json_string(ts);
}

static const char *str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static double num(const json_t *o, const char *key, double def)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

static json_t *problem(const char *detail, json_t *errors)
{
    json_t *a = json_pack("{s:s}", "detail", detail);
    if (errors)
        json_object_set_new(a, "errors", errors);
    return a;
}

static void answer(lab_loop_cb cb, void *arg, int status, json_t *a)
{
    if (cb)
        cb(arg, status, a);
    json_decref(a);
}

static camp_t *camp_find(lab_loop_t *l, const char *id)
{
    for (int i = 0; id && i < l->n; i++)
        if (strcmp(l->v[i]->id, id) == 0)
            return l->v[i];
    return NULL;
}

static cand_t *cand_find(camp_t *c, const char *id)
{
    for (int i = 0; id && i < c->nc; i++)
        if (strcmp(c->c[i]->id, id) == 0)
            return c->c[i];
    return NULL;
}

static json_t *objective(const camp_t *c)
{
    return json_object_get(c->doc, "objective");
}

static bool maximize(const camp_t *c)
{
    const char *d = str(objective(c), "direction");
    return !d || strcmp(d, "maximize") == 0;
}

static json_t *layout(const camp_t *c)
{
    return json_object_get(c->doc, "layout");
}

static int format_of(const camp_t *c)
{
    json_t *f = json_object_get(layout(c), "format");
    return f ? (int)json_integer_value(f) : 96;
}

static int replicates_of(const camp_t *c)
{
    json_t *r = json_object_get(layout(c), "replicates");
    return r ? (int)json_integer_value(r) : 2;
}

static json_t *control_wells(const camp_t *c, const char *which)
{
    return json_object_get(json_object_get(layout(c), which), "wells");
}

/* Candidates a plate holds: its free wells over the replicates. */
static int plate_capacity(const camp_t *c)
{
    char wells[384][LAB_WELL_NAME];
    int n = lab_layout_free_wells(format_of(c), control_wells(c, "positive"),
                                  control_wells(c, "negative"), wells, 384);
    return n / replicates_of(c);
}

/* ---- writes ---- */

typedef struct reply {
    lab_loop_t *l;
    lab_loop_cb cb;
    void *arg;
    int status;
    json_t *answer;
} reply_t;

static void maybe_free(lab_loop_t *l);

static void write_done(lab_store_op_t *op, int status)
{
    lab_loop_write_t *w = (lab_loop_write_t *)op;
    reply_t *r = w->arg;
    lab_loop_t *l = r->l;
    l->ops--;
    if (status == 0) {
        if (!l->stopped)
            for (int i = 0; i < w->nruns; i++)
                lab_sched_submitted(l->sched, w->runs[i]->doc);
        answer(r->cb, r->arg, r->status, r->answer);
    } else {
        log_error("loop", "campaign records not stored: %s", lab_strerror(status));
        json_decref(r->answer);
        char msg[160];
        snprintf(msg, sizeof msg, "the local store failed: %s", lab_strerror(status));
        answer(r->cb, r->arg, status == LAB_ESHUTDOWN ? 503 : 500, problem(msg, NULL));
    }
    free(r);
    lab_loop_write_free(w);
    maybe_free(l);
}

/* Commits w (when it holds anything), then answers; answer is taken over. */
static void commit(lab_loop_t *l, lab_loop_write_t *w, lab_loop_cb cb, void *arg, int status,
                   json_t *ans)
{
    if (!w->nputs && !w->nrows && !w->nruns) {
        lab_loop_write_free(w);
        answer(cb, arg, status, ans);
        return;
    }
    reply_t *r = LAB_NEW(reply_t);
    *r = (reply_t){l, cb, arg, status, ans};
    w->arg = r;
    w->op.done = write_done;
    l->ops++;
    lab_store_submit(l->st, &w->op);
}

static void put_camp(lab_loop_t *l, lab_loop_write_t *w, camp_t *c)
{
    json_object_set_new(c->doc, "updated_at", now_iso(l));
    char *text = json_dumps(c->doc, JSON_COMPACT);
    lab_loop_write_put(w, LAB_LT_CAMPAIGN, c->id, NULL, c->state, 0, text);
    free(text);
}

static void put_batch(lab_loop_write_t *w, camp_t *c, const char *batch, int64_t ord)
{
    char *text = json_dumps(json_object_get(c->batches, batch), JSON_COMPACT);
    lab_loop_write_put(w, LAB_LT_BATCH, c->id, batch, NULL, ord, text);
    free(text);
}

static void put_cand(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, cand_t *k)
{
    json_object_set_new(k->doc, "updated_at", now_iso(l));
    char *text = json_dumps(k->doc, JSON_COMPACT);
    lab_loop_write_put(w, LAB_LT_CANDIDATE, c->id, k->id, cs_names[k->state], k->ord, text);
    free(text);
}

static void cand_set(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, cand_t *k, cand_state_t to,
                     const char *reason)
{
    if (k->state != to)
        log_info("loop", "campaign=%s candidate=%s %s -> %s%s%s", c->id, k->id, cs_names[k->state],
                 cs_names[to], reason ? ": " : "", reason ? reason : "");
    k->state = to;
    json_object_set_new(k->doc, "state", json_string(cs_names[to]));
    if (reason)
        json_object_set_new(k->doc, "reason", json_string(reason));
    else
        json_object_del(k->doc, "reason");
    if (to != CS_STAGED && to != CS_RUNNING) {
        k->plate = -1;
        json_object_del(k->doc, "run");
        json_object_del(k->doc, "plate");
        json_object_del(k->doc, "wells");
    }
    put_cand(l, w, c, k);
}

static void camp_set(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, const char *state,
                     const char *reason)
{
    if (strcmp(c->state, state) != 0)
        log_info("loop", "campaign=%s %s -> %s%s%s", c->id, c->state, state, reason ? ": " : "",
                 reason ? reason : "");
    json_object_set_new(c->doc, "state", json_string(state));
    c->state = str(c->doc, "state");
    if (reason)
        json_object_set_new(c->doc, "reason", json_string(reason));
    else
        json_object_del(c->doc, "reason");
    put_camp(l, w, c);
}

/* ---- building campaigns and candidates in memory ---- */

static camp_t *camp_add(lab_loop_t *l, json_t *doc)
{
    camp_t *c = LAB_NEW(camp_t);
    snprintf(c->id, sizeof c->id, "%s", str(doc, "id"));
    c->doc = doc;
    c->state = str(doc, "state");
    c->batches = json_object();
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->v = lab_realloc(l->v, sizeof *l->v * (size_t)l->cap);
    }
    l->v[l->n++] = c;
    return c;
}

static cand_t *cand_add(camp_t *c, json_t *doc)
{
    cand_t *k = LAB_NEW(cand_t);
    k->doc = doc;
    k->id = str(doc, "id");
    k->batch = str(doc, "batch");
    int s = lab_cand_state_parse(str(doc, "state"));
    k->state = s < 0 ? CS_CANDIDATE : (cand_state_t)s;
    k->ord = (int64_t)num(doc, "ord", 0);
    k->plate = -1;
    if (c->nc == c->capc) {
        c->capc = c->capc ? 2 * c->capc : 64;
        c->c = lab_realloc(c->c, sizeof *c->c * (size_t)c->capc);
    }
    c->c[c->nc++] = k;
    if (k->ord >= c->next_ord)
        c->next_ord = k->ord + 1;
    return k;
}

static int plate_add(camp_t *c, const char *run, const char *name, int no, json_t *wells)
{
    if (c->np == c->capp) {
        c->capp = c->capp ? 2 * c->capp : 16;
        c->p = lab_realloc(c->p, sizeof *c->p * (size_t)c->capp);
    }
    plate_t *p = &c->p[c->np];
    memset(p, 0, sizeof *p);
    snprintf(p->run, sizeof p->run, "%s", run);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->no = no;
    p->wells = wells;
    return c->np++;
}

static void camp_free(camp_t *c)
{
    for (int i = 0; i < c->nc; i++) {
        json_decref(c->c[i]->doc);
        free(c->c[i]);
    }
    for (int i = 0; i < c->np; i++)
        json_decref(c->p[i].wells);
    free(c->c);
    free(c->p);
    json_decref(c->batches);
    json_decref(c->doc);
    free(c);
}

/* ---- the design space ---- */

static json_t *params_of(const camp_t *c)
{
    return json_object_get(c->doc, "parameters");
}

/* The reagent a volume parameter dispenses. */
static const char *param_reagent(const json_t *p)
{
    return str(p, "reagent") ? str(p, "reagent") : str(p, "name");
}

static bool param_is_choice(const json_t *p)
{
    const char *t = str(p, "type");
    return t && strcmp(t, "choice") == 0;
}

/* Every reagent the design can dispense, in parameter order, as a JSON array. */
static json_t *design_reagents(const camp_t *c)
{
    json_t *out = json_array();
    size_t i, j;
    json_t *p, *ch;
    json_array_foreach(params_of(c), i, p)
    {
        if (param_is_choice(p)) {
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
static json_t *volumes_of(const camp_t *c, const json_t *reagents, const json_t *params)
{
    size_t nr = json_array_size(reagents);
    double *ul = lab_calloc(nr + 1, sizeof *ul);
    size_t i;
    json_t *p;
    json_array_foreach(params_of(c), i, p)
    {
        json_t *v = json_object_get(params, str(p, "name"));
        int r;
        if (param_is_choice(p)) {
            if ((r = reagent_index(reagents, json_string_value(v) ?: "")) >= 0)
                ul[r] += num(p, "volume_ul", 0);
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

static json_t *control_volumes(const camp_t *c, const json_t *reagents, const char *which)
{
    json_t *vols = json_object_get(json_object_get(layout(c), which), "volumes");
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(reagents, i, r)
        json_array_append_new(out, json_real(num(vols, json_string_value(r), 0)));
    return out;
}

/* ---- campaign documents ---- */

/* Problems the schema cannot see: bounds, wells, reagents, the workflow. */
static void campaign_check(lab_loop_t *l, const json_t *doc, lab_jerrs_t *e)
{
    size_t i;
    json_t *p;
    json_t *names = json_object();
    json_array_foreach(json_object_get(doc, "parameters"), i, p)
    {
        char path[64];
        snprintf(path, sizeof path, "/parameters/%zu", i);
        const char *name = str(p, "name");
        if (json_object_get(names, name))
            lab_jerrs_add(e, path, "parameter '%s' is named twice", name);
        json_object_set_new(names, name, json_true());
        if (param_is_choice(p)) {
            if (!json_object_get(p, "choices") || !json_object_get(p, "volume_ul"))
                lab_jerrs_add(e, path, "a choice needs choices (reagents) and volume_ul");
            if (json_object_get(p, "min") || json_object_get(p, "max") ||
                json_object_get(p, "reagent"))
                lab_jerrs_add(e, path, "a choice has no min, max or reagent");
        } else {
            if (!json_object_get(p, "max"))
                lab_jerrs_add(e, path, "a volume needs max (uL)");
            else if (num(p, "min", 0) >= num(p, "max", 0))
                lab_jerrs_add(e, path, "min (%g) must be below max (%g)", num(p, "min", 0),
                              num(p, "max", 0));
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
    json_t *reagents = design_reagents(&tmp);
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
    if (!e->n && plate_capacity(&tmp) < 1)
        lab_jerrs_add(e, "/layout", "the controls leave no room for %d replicates of a candidate",
                      replicates_of(&tmp));

    const char *kind = str(json_object_get(doc, "learner"), "kind");
    if (kind && strcmp(kind, "builtin") == 0) {
        json_array_foreach(json_object_get(doc, "parameters"), i, p) if (param_is_choice(p))
        {
            char path[64];
            snprintf(path, sizeof path, "/parameters/%zu", i);
            lab_jerrs_add(e, path, "the built-in learner proposes volumes only, not choices");
        }
    }

    /* the workflow: stored, with a design dispense */
    const char *wf = str(doc, "workflow");
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
static json_t *campaign_doc(lab_loop_t *l, const json_t *in, const char *by)
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
        if (!param_is_choice(p) && !json_object_get(p, "min"))
            json_object_set_new(p, "min", json_real(0));
    }
    json_object_set_new(d, "state", json_string("active"));
    json_object_set_new(d, "created_by", json_string(by));
    json_object_set_new(d, "created_at", now_iso(l));
    json_object_set_new(d, "plates_made", json_integer(0));
    return d;
}

static json_t *camp_view(lab_loop_t *l, camp_t *c)
{
    (void)l;
    json_t *v = json_deep_copy(c->doc);
    int count[CS_N] = {0};
    for (int i = 0; i < c->nc; i++)
        count[c->c[i]->state]++;
    json_t *counts = json_object();
    for (int s = 0; s < CS_N; s++)
        json_object_set_new(counts, cs_names[s], json_integer(count[s]));
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
        if (!c->p[i].over && !c->p[i].relaid)
            json_array_append_new(plates, json_pack("{s:s,s:s,s:b}", "plate", c->p[i].name, "run",
                                                    c->p[i].run, "started", c->p[i].started));
    json_object_set_new(v, "plates", plates);
    return v;
}

/* ---- plates ---- */

static int plates_made(const camp_t *c)
{
    return (int)json_integer_value(json_object_get(c->doc, "plates_made"));
}

static void noop_done(void *arg, int status, const char *doc, const char *msg)
{
    (void)arg;
    (void)status;
    (void)doc;
    (void)msg;
}

/* The mean score of the candidates on a plate: its priority score. */
static double plate_score(camp_t *c, int pi)
{
    double s = 0;
    int n = 0;
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->plate == pi && (c->c[i]->state == CS_STAGED || c->c[i]->state == CS_RUNNING)) {
            s += num(c->c[i]->doc, "score", 0);
            n++;
        }
    return n ? s / n : 0;
}

static int by_score(const void *a, const void *b)
{
    const cand_t *x = *(cand_t *const *)a, *y = *(cand_t *const *)b;
    double sx = num(x->doc, "score", 0), sy = num(y->doc, "score", 0);
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return x->ord < y->ord ? -1 : x->ord > y->ord;
}

/* Lays every candidate waiting for a plate onto new plates, best scores first, and submits one
 * run per plate (in w; the scheduler gets them once w committed). */
static void stage(lab_loop_t *l, lab_loop_write_t *w, camp_t *c)
{
    if (strcmp(c->state, "active") != 0)
        return;
    cand_t **wait = lab_calloc((size_t)c->nc + 1, sizeof *wait);
    int nw = 0;
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->state == CS_CANDIDATE)
            wait[nw++] = c->c[i];
    if (!nw) {
        free(wait);
        return;
    }
    qsort(wait, (size_t)nw, sizeof *wait, by_score);
    int format = format_of(c), reps = replicates_of(c);
    char free_wells[384][LAB_WELL_NAME];
    int nfree = lab_layout_free_wells(format, control_wells(c, "positive"),
                                      control_wells(c, "negative"), free_wells, 384);
    int per = nfree / reps;
    json_t *budget = json_object_get(json_object_get(c->doc, "budget"), "plates");
    json_t *reagents = design_reagents(c);
    json_t *posv = control_volumes(c, reagents, "positive");
    json_t *negv = control_volumes(c, reagents, "negative");
    for (int at = 0; at < nw; at += per) {
        int n = nw - at < per ? nw - at : per;
        if (budget && plates_made(c) >= json_integer_value(budget)) {
            char why[160];
            snprintf(why, sizeof why, "the campaign's plate budget (%lld) is spent",
                     (long long)json_integer_value(budget));
            for (int i = at; i < nw; i++)
                cand_set(l, w, c, wait[i], CS_ABANDONED, why);
            break;
        }
        int no = plates_made(c) + 1;
        json_object_set_new(c->doc, "plates_made", json_integer(no));
        char run[LAB_UUID_LEN + 1], name[96];
        lab_uuid4(run);
        snprintf(name, sizeof name, "%.64s-P%04d", c->id, no);
        json_t *wells = json_object(), *vols = json_object();
        size_t i;
        json_t *x;
        json_array_foreach(control_wells(c, "positive"), i, x)
        {
            json_object_set_new(wells, json_string_value(x),
                                json_pack("{s:s}", "role", "positive"));
            json_object_set(vols, json_string_value(x), posv);
        }
        json_array_foreach(control_wells(c, "negative"), i, x)
        {
            json_object_set_new(wells, json_string_value(x),
                                json_pack("{s:s}", "role", "negative"));
            json_object_set(vols, json_string_value(x), negv);
        }
        int pi = plate_add(c, run, name, no, wells);
        double score = 0;
        for (int k = 0; k < n; k++) {
            cand_t *cd = wait[at + k];
            json_t *cv = volumes_of(c, reagents, json_object_get(cd->doc, "params"));
            json_t *used = json_array();
            for (int r = 0; r < reps; r++) {
                const char *wname = free_wells[k * reps + r];
                json_object_set_new(
                    wells, wname, json_pack("{s:s,s:s}", "role", "candidate", "candidate", cd->id));
                json_object_set(vols, wname, cv);
                json_array_append_new(used, json_string(wname));
            }
            json_decref(cv);
            score += num(cd->doc, "score", 0);
            cd->plate = pi;
            json_object_set_new(cd->doc, "run", json_string(run));
            json_object_set_new(cd->doc, "plate", json_string(name));
            json_object_set_new(cd->doc, "wells", used);
            json_t *tries = json_object_get(cd->doc, "plates");
            if (!json_is_array(tries))
                json_object_set_new(cd->doc, "plates", tries = json_array());
            json_array_append_new(tries, json_pack("{s:s,s:s}", "plate", name, "run", run));
            cand_set(l, w, c, cd, CS_STAGED, NULL);
        }
        json_t *sub =
            json_pack("{s:s,s:s,s:s,s:f,s:s}", "workflow", str(c->doc, "workflow"), "plate", name,
                      "priority", "normal", "score", score / n, "name", name);
        json_t *doc = lab_run_new_doc(sub, run, "campaign", "campaign", now_ms(l));
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
        ins->ts_ms = now_ms(l);
        json_decref(doc);
        lab_loop_write_run(w, ins);
        log_info("loop", "campaign=%s plate %s (run %s): %d candidates x %d, score %.4g", c->id,
                 name, run, n, reps, score / n);
    }
    json_decref(reagents);
    json_decref(posv);
    json_decref(negv);
    put_camp(l, w, c);
    free(wait);
}

/* Cancels every plate not started (their candidates wait again, or go stale when `older` says
 * their batch is older than the one replacing them). */
static void unstage(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, const char *newer, json_t *stale)
{
    for (int pi = 0; pi < c->np; pi++) {
        plate_t *p = &c->p[pi];
        if (p->over || p->relaid || p->started)
            continue;
        int started = lab_sched_run_started(l->sched, p->run);
        if (started == 1) {
            p->started = true;
            continue;
        }
        p->relaid = true;
        if (started == 0)
            lab_sched_cancel(l->sched, p->run, "campaign",
                             newer ? "its candidates were replaced by a newer batch"
                                   : "its candidates were laid out again",
                             noop_done, NULL);
        for (int i = 0; i < c->nc; i++)
            if (c->c[i]->plate == pi && c->c[i]->state == CS_STAGED)
                cand_set(l, w, c, c->c[i], CS_CANDIDATE, NULL);
    }
    if (!newer)
        return;
    char why[200];
    snprintf(why, sizeof why, "replaced by batch %s before it ran", newer);
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->state == CS_CANDIDATE && strcmp(c->c[i]->batch, newer) != 0) {
            cand_set(l, w, c, c->c[i], CS_STALE, why);
            json_array_append_new(stale, json_string(c->c[i]->id));
        }
}

/* ---- batches and the campaign's end ---- */

static bool batch_final(camp_t *c, const char *batch)
{
    for (int i = 0; i < c->nc; i++)
        if (strcmp(c->c[i]->batch, batch) == 0 && !cs_final(c->c[i]->state))
            return false;
    return true;
}

static void maybe_propose(lab_loop_t *l, camp_t *c);

/* Batches whose candidates are all final get their done event; then the campaign's end. */
static void settle(lab_loop_t *l, lab_loop_write_t *w, camp_t *c)
{
    const char *key;
    json_t *b;
    int64_t ord = 0;
    json_object_foreach(c->batches, key, b)
    {
        ord++;
        const char *st = str(b, "state");
        if ((st && strcmp(st, "done") == 0) || !batch_final(c, key))
            continue;
        int count[CS_N] = {0};
        json_t *best = NULL;
        for (int i = 0; i < c->nc; i++) {
            cand_t *k = c->c[i];
            if (strcmp(k->batch, key) != 0)
                continue;
            count[k->state]++;
            json_t *r = json_object_get(k->doc, "result");
            if (r && (!best || (maximize(c) ? num(r, "value", 0) > num(best, "value", 0)
                                            : num(r, "value", 0) < num(best, "value", 0))))
                best = r;
        }
        json_t *counts = json_object();
        for (int s = CS_COMPLETED; s < CS_N; s++)
            json_object_set_new(counts, cs_names[s], json_integer(count[s]));
        json_object_set_new(b, "state", json_string("done"));
        json_object_set_new(b, "done_at", now_iso(l));
        json_object_set(b, "counts", counts);
        put_batch(w, c, key, ord);
        json_t *ev = json_pack("{s:s,s:s,s:O,s:o,s:o}", "campaign", c->id, "batch", key, "model",
                               json_object_get(b, "model"), "counts", counts, "at", now_iso(l));
        if (best)
            json_object_set_new(ev, "best",
                                json_pack("{s:O,s:O}", "candidate",
                                          json_object_get(best, "candidate"), "value",
                                          json_object_get(best, "value")));
        char *text = json_dumps(ev, JSON_COMPACT);
        lab_loop_write_row(w, "batch.done", c->id, text);
        free(text);
        json_decref(ev);
        log_info("loop", "campaign=%s batch=%s done: %d completed, %d failed", c->id, key,
                 count[CS_COMPLETED], count[CS_FAILED]);
        /* patience: batches done since the best result improved */
        json_t *since = json_object_get(c->doc, "batches_without_improvement");
        json_object_set_new(c->doc, "batches_without_improvement",
                            json_integer(json_integer_value(since) + 1));
        put_camp(l, w, c);
    }
    if (strcmp(c->state, "done") == 0)
        return;
    /* the stopping rules and the budget */
    const json_t *stop = json_object_get(c->doc, "stop");
    const char *why = NULL;
    char buf[200];
    json_t *best = json_object_get(c->doc, "best");
    if (best && json_object_get(stop, "target")) {
        double t = num(stop, "target", 0), v = num(best, "value", 0);
        if (maximize(c) ? v >= t : v <= t) {
            snprintf(buf, sizeof buf, "the target %g was reached (%.4g, candidate %s)", t, v,
                     str(best, "candidate"));
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
        open |= !cs_final(c->c[i]->state);
        accepted += c->c[i]->state != CS_STALE;
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
    unstage(l, w, c, NULL, NULL);
    char abandoned[260];
    snprintf(abandoned, sizeof abandoned, "the campaign is done: %s", why);
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->state == CS_CANDIDATE)
            cand_set(l, w, c, c->c[i], CS_ABANDONED, abandoned);
    camp_set(l, w, c, "done", why);
    settle(l, w, c); /* batches that just became final */
}

/* Ax's rule: more than max_failed_fraction of at least min_finished finished candidates
 * failed (instrument trouble aside): the campaign pauses with the reason. */
static void breaker(lab_loop_t *l, lab_loop_write_t *w, camp_t *c)
{
    if (strcmp(c->state, "active") != 0)
        return;
    int finished = 0, failed = 0;
    for (int i = 0; i < c->nc; i++) {
        cand_t *k = c->c[i];
        if (json_is_true(json_object_get(k->doc, "instrument_trouble")))
            continue;
        finished += k->state == CS_COMPLETED || k->state == CS_FAILED;
        failed += k->state == CS_FAILED;
    }
    json_t *br = json_object_get(c->doc, "breaker");
    int min = (int)json_integer_value(json_object_get(br, "min_finished"));
    double frac = num(br, "max_failed_fraction", 0.5);
    if (finished >= (min > 0 ? min : 5) && failed > frac * finished) {
        char why[300];
        snprintf(why, sizeof why,
                 "%d of %d finished candidates failed (more than %.0f%%): find the cause, then "
                 "resume the campaign",
                 failed, finished, frac * 100);
        camp_set(l, w, c, "paused", why);
    }
}

/* ---- a plate's end ---- */

/* The values the objective reads from a plate run's document: {WELL: value}, or NULL with why. */
static json_t *plate_values(camp_t *c, const json_t *run, char *why, size_t whylen)
{
    json_t *readings = json_object_get(run, "readings");
    const char *want = str(objective(c), "step");
    json_t *r = NULL;
    if (want) {
        r = json_object_get(readings, want);
    } else { /* the last step that read values */
        json_t *steps = json_object_get(run, "steps");
        for (size_t i = json_array_size(steps); i-- > 0 && !r;)
            r = json_object_get(readings, str(json_array_get(steps, i), "name") ?: "");
    }
    if (!r) {
        snprintf(why, whylen, "the plate's run read no values%s%s", want ? " in step " : "",
                 want ? want : "");
        return NULL;
    }
    const char *measure = str(objective(c), "measure");
    if (!measure || !str(r, "measure") || strcmp(measure, str(r, "measure")) != 0) {
        snprintf(why, whylen, "the plate was read for %s, the objective is %s",
                 str(r, "measure") ?: "?", measure ?: "?");
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

static void better(lab_loop_t *l, camp_t *c, const json_t *res)
{
    json_t *best = json_object_get(c->doc, "best");
    double v = num(res, "value", 0);
    if (best && (maximize(c) ? v <= num(best, "value", 0) : v >= num(best, "value", 0)))
        return;
    json_object_set_new(c->doc, "best",
                        json_pack("{s:O,s:O,s:O,s:f,s:o}", "candidate",
                                  json_object_get(res, "candidate"), "batch",
                                  json_object_get(res, "batch"), "params",
                                  json_object_get(res, "params"), "value", v, "at", now_iso(l)));
    json_object_set_new(c->doc, "batches_without_improvement", json_integer(0));
}

/* Candidates back to waiting after instrument trouble (not a failed experiment), or failed
 * when PLATE_TRIES_MAX plates did not give them a value. */
static void plate_trouble(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, int pi, const char *why)
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
            cand_set(l, w, c, k, CS_FAILED, reason);
        } else {
            snprintf(reason, sizeof reason, "plate %s gave no value (%s): laid out again",
                     c->p[pi].name, why);
            cand_set(l, w, c, k, CS_CANDIDATE, reason);
        }
    }
}

static void plate_done(lab_loop_t *l, lab_loop_write_t *w, camp_t *c, int pi, const json_t *run)
{
    plate_t *p = &c->p[pi];
    char why[300];
    json_t *values = plate_values(c, run, why, sizeof why);
    if (!values) {
        plate_trouble(l, w, c, pi, why);
        return;
    }
    double pos[384], neg[384];
    int npos, nneg;
    collect(values, control_wells(c, "positive"), pos, &npos);
    collect(values, control_wells(c, "negative"), neg, &nneg);
    lab_qc_t qc;
    bool ok = lab_qc_compute(pos, npos, neg, nneg, &qc, why, sizeof why);
    double zmin = num(json_object_get(c->doc, "qc"), "z_prime_min", 0.5);
    if (ok && !(qc.z_prime >= zmin)) {
        snprintf(why, sizeof why, "Z' %.3f is under the campaign's threshold %.3f", qc.z_prime,
                 zmin);
        ok = false;
    }
    json_t *prow =
        json_pack("{s:s,s:s,s:s,s:i,s:b,s:O,s:o}", "campaign", c->id, "plate", p->name, "run",
                  p->run, "no", p->no, "passed", ok, "layout", p->wells, "at", now_iso(l));
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
    lab_loop_write_row(w, "plate", c->id, text);
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
                snprintf(reason, sizeof reason, "plate %.96s failed QC (%.300s), %d time%s",
                         p->name, why, fails, fails == 1 ? "" : "s");
                cand_set(l, w, c, k, CS_FAILED, reason);
            } else {
                snprintf(reason, sizeof reason, "plate %.96s failed QC (%.300s): re-run", p->name,
                         why);
                cand_set(l, w, c, k, CS_CANDIDATE, reason);
            }
            continue;
        }
        double raw[64], norm[64];
        int n;
        json_t *wells = json_object_get(k->doc, "wells");
        collect(values, wells, raw, &n);
        if (!n) {
            plate_trouble(l, w, c, pi, "its wells have no values");
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
            json_object_get(objective(c), "measure"), "at", now_iso(l));
        if (json_object_get(k->doc, "fit"))
            json_object_set(res, "fit", json_object_get(k->doc, "fit"));
        json_object_set(k->doc, "result", res);
        cand_set(l, w, c, k, CS_COMPLETED, NULL);
        text = json_dumps(res, JSON_COMPACT);
        lab_loop_write_row(w, "campaign.result", c->id, text);
        free(text);
        better(l, c, res);
        json_decref(res);
    }
}

/* A change of one of our plate runs, after it committed. */
static void on_run(void *ctx, const char *id, const char *state, const char *doc)
{
    lab_loop_t *l = ctx;
    if (l->stopped)
        return;
    camp_t *c = NULL;
    int pi = -1;
    for (int i = 0; i < l->n && pi < 0; i++)
        for (int j = 0; j < l->v[i]->np; j++)
            if (!l->v[i]->p[j].over && strcmp(l->v[i]->p[j].run, id) == 0) {
                c = l->v[i];
                pi = j;
                break;
            }
    if (!c)
        return;
    plate_t *p = &c->p[pi];
    int rs = lab_run_state_parse(state);
    if (rs < 0 || rs == LAB_RUN_QUEUED || rs == LAB_RUN_PLANNED)
        return;
    lab_loop_write_t *w = lab_loop_write_new(now_ms(l));
    if (!lab_run_state_final((lab_run_state_t)rs)) {
        if (!p->started) {
            p->started = true;
            for (int i = 0; i < c->nc; i++)
                if (c->c[i]->plate == pi && c->c[i]->state == CS_STAGED)
                    cand_set(l, w, c, c->c[i], CS_RUNNING, NULL);
        }
        commit(l, w, NULL, NULL, 0, NULL);
        maybe_propose(l, c); /* the next plate gets ready while this one runs */
        return;
    }
    p->over = true;
    if (p->relaid) { /* our own cancel: its candidates were laid out again already */
        commit(l, w, NULL, NULL, 0, NULL);
        return;
    }
    json_t *run = json_loads(doc, 0, NULL);
    if (rs == LAB_RUN_DONE) {
        plate_done(l, w, c, pi, run);
    } else if (rs == LAB_RUN_FAILED) {
        char why[300];
        json_t *f = json_object_get(run, "failure");
        snprintf(why, sizeof why, "its run failed at step %s: %s", str(f, "step") ?: "?",
                 str(f, "error") ?: "?");
        plate_trouble(l, w, c, pi, why);
    } else { /* cancelled by a person: the candidates are not run again */
        char why[200];
        snprintf(why, sizeof why, "plate %s was cancelled%s%s", p->name,
                 str(run, "cancelled_by") ? " by " : "", str(run, "cancelled_by") ?: "");
        for (int i = 0; i < c->nc; i++)
            if (c->c[i]->plate == pi)
                cand_set(l, w, c, c->c[i], CS_ABANDONED, why);
    }
    json_decref(run);
    breaker(l, w, c);
    stage(l, w, c);
    settle(l, w, c);
    commit(l, w, NULL, NULL, 0, NULL);
    maybe_propose(l, c);
}

/* ---- requests ---- */

void lab_loop_create(lab_loop_t *l, const json_t *in, const char *by, lab_loop_cb cb, void *arg)
{
    if (l->stopped) {
        answer(cb, arg, 503, problem("the daemon is shutting down; not created", NULL));
        return;
    }
    lab_jerrs_t e = {0};
    campaign_check(l, in, &e);
    if (e.n) {
        answer(cb, arg, 422, problem("the campaign has problems", lab_jerrs_to_json(&e)));
        lab_jerrs_free(&e);
        return;
    }
    json_t *doc = campaign_doc(l, in, by);
    camp_t *old = camp_find(l, str(doc, "id"));
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
            answer(cb, arg, 200, camp_view(l, old));
        else
            answer(cb, arg, 409,
                   problem("another campaign has this id",
                           json_pack("[{s:s,s:s}]", "path", "/id", "message",
                                     "a campaign with this id and other content exists")));
        return;
    }
    camp_t *c = camp_add(l, doc);
    lab_loop_write_t *w = lab_loop_write_new(now_ms(l));
    put_camp(l, w, c);
    log_info("loop", "campaign=%s created by %s: workflow %s, %zu parameters, learner %s", c->id,
             by, str(doc, "workflow"), json_array_size(params_of(c)),
             str(json_object_get(doc, "learner"), "kind"));
    commit(l, w, cb, arg, 201, camp_view(l, c));
    maybe_propose(l, c);
}

/* The batch's text for duplicate detection: its document without reply_to, keys sorted. */
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
    const char *named = str(batch, "campaign");
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
        const char *id = str(k, "id");
        char path[96];
        snprintf(path, sizeof path, "%s/id", base);
        cand_t *prev = cand_find(c, id);
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
            json_array_foreach(params_of(c), j, p) known |= strcmp(str(p, "name"), name) == 0;
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
        json_array_foreach(params_of(c), j, p)
        {
            name = str(p, "name");
            v = json_object_get(params, name);
            char *pp = lab_jpointer_append(base, "params");
            char *q = lab_jpointer_append(pp, name);
            if (!v) {
                lab_jerrs_add(e, q, "parameter '%s' is missing", name);
            } else if (param_is_choice(p)) {
                bool ok = false;
                size_t m;
                json_t *ch;
                json_array_foreach(json_object_get(p, "choices"), m, ch) ok |= json_equal(ch, v);
                if (!ok)
                    lab_jerrs_add(e, q, "'%s' is not one of the choices of '%s'",
                                  json_string_value(v) ?: "(not text)", name);
            } else if (!json_is_number(v)) {
                lab_jerrs_add(e, q, "'%s' must be a number (uL)", name);
            } else if (json_number_value(v) < num(p, "min", 0)) {
                lab_jerrs_add(e, q, "%g is below the minimum %g of '%s'", json_number_value(v),
                              num(p, "min", 0), name);
            } else if (json_number_value(v) > num(p, "max", 0)) {
                lab_jerrs_add(e, q, "%g is above the maximum %g of '%s'", json_number_value(v),
                              num(p, "max", 0), name);
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
            accepted += c->c[m]->state != CS_STALE;
        /* candidates this batch makes stale free their place */
        if (json_is_true(json_object_get(batch, "replaces_pending")))
            for (int m = 0; m < c->nc; m++)
                accepted -= c->c[m]->state == CS_CANDIDATE || c->c[m]->state == CS_STAGED;
        long long room = json_integer_value(bc) - accepted;
        if ((long long)json_array_size(cands) > room)
            lab_jerrs_add(e, "/candidates",
                          "%zu candidates are over the campaign's budget of %lld: %lld more "
                          "can be accepted",
                          json_array_size(cands), (long long)json_integer_value(bc),
                          room > 0 ? room : 0);
    }
    if (strcmp(c->state, "done") == 0)
        lab_jerrs_add(e, "", "the campaign is done (%s): it takes no more batches",
                      str(c->doc, "reason") ?: "");
}

void lab_loop_batch(lab_loop_t *l, const char *campaign, const json_t *batch, const char *by,
                    const char *via, lab_loop_cb cb, void *arg)
{
    if (l->stopped) {
        answer(cb, arg, 503, problem("the daemon is shutting down; not accepted", NULL));
        return;
    }
    camp_t *c = camp_find(l, campaign);
    const char *bid = str(batch, "batch");
    if (!c) {
        char msg[200];
        snprintf(msg, sizeof msg, "there is no campaign %.100s", campaign);
        answer(cb, arg, 404,
               problem(msg, json_pack("[{s:s,s:s}]", "path", "/campaign", "message", msg)));
        return;
    }
    char *hash = batch_hash(batch);
    json_t *prev = json_object_get(c->batches, bid);
    if (prev) {
        bool same = strcmp(str(prev, "hash") ?: "", hash) == 0;
        free(hash);
        if (same) {
            json_t *a = json_deep_copy(json_object_get(prev, "answer"));
            json_object_set_new(a, "duplicate", json_true());
            answer(cb, arg, 200, a);
        } else {
            char msg[200];
            snprintf(msg, sizeof msg, "batch %s was received before with other content", bid);
            answer(cb, arg, 422,
                   problem(msg, json_pack("[{s:s,s:s}]", "path", "/batch", "message", msg)));
        }
        return;
    }
    lab_jerrs_t e = {0};
    batch_check(c, batch, &e);
    if (e.n) {
        free(hash);
        json_t *a = problem("the batch was rejected", lab_jerrs_to_json(&e));
        json_object_set_new(a, "status", json_string("rejected"));
        json_object_set_new(a, "campaign", json_string(c->id));
        json_object_set_new(a, "batch", json_string(bid));
        log_info("loop", "campaign=%s batch=%s rejected (%d problems)", c->id, bid, e.n);
        lab_jerrs_free(&e);
        answer(cb, arg, 422, a);
        return;
    }
    lab_loop_write_t *w = lab_loop_write_new(now_ms(l));
    json_t *stale = json_array(), *accepted = json_array();
    if (json_is_true(json_object_get(batch, "replaces_pending")))
        unstage(l, w, c, bid, stale);
    json_t *model = json_object_get(batch, "model");
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(batch, "candidates"), i, k)
    {
        json_t *d =
            json_pack("{s:O,s:s,s:s,s:O,s:O,s:O,s:s,s:I,s:o}", "id", json_object_get(k, "id"),
                      "campaign", c->id, "batch", bid, "model", model, "params",
                      json_object_get(k, "params"), "score", json_object_get(k, "score"), "state",
                      "candidate", "ord", (json_int_t)c->next_ord, "created_at", now_iso(l));
        if (json_object_get(k, "uncertainty"))
            json_object_set(d, "uncertainty", json_object_get(k, "uncertainty"));
        if (json_object_get(batch, "fit"))
            json_object_set(d, "fit", json_object_get(batch, "fit"));
        cand_t *cd = cand_add(c, d);
        put_cand(l, w, c, cd);
        json_array_append(accepted, json_object_get(k, "id"));
    }
    json_t *ans = json_pack("{s:s,s:s,s:s,s:o,s:o}", "status", "accepted", "campaign", c->id,
                            "batch", bid, "accepted", accepted, "stale", stale);
    json_t *rec = json_pack("{s:s,s:s,s:O,s:s,s:s,s:s,s:o,s:s,s:O}", "campaign", c->id, "batch",
                            bid, "model", model, "hash", hash, "by", by, "via", via, "received_at",
                            now_iso(l), "state", "open", "answer", ans);
    if (json_object_get(batch, "fit"))
        json_object_set(rec, "fit", json_object_get(batch, "fit"));
    free(hash);
    json_object_set_new(c->batches, bid, rec);
    put_batch(w, c, bid, (int64_t)json_object_size(c->batches));
    log_info("loop", "campaign=%s batch=%s accepted from %s via %s: %zu candidates, %zu stale",
             c->id, bid, by, via, json_array_size(json_object_get(ans, "accepted")),
             json_array_size(json_object_get(ans, "stale")));
    stage(l, w, c);
    settle(l, w, c); /* older batches that only had stale candidates left */
    json_incref(ans);
    commit(l, w, cb, arg, 201, ans);
}

void lab_loop_scores(lab_loop_t *l, const char *campaign, const json_t *body, const char *by,
                     lab_loop_cb cb, void *arg)
{
    camp_t *c = camp_find(l, campaign);
    if (!c) {
        answer(cb, arg, 404, problem("there is no such campaign", NULL));
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
        cand_t *k = cand_find(c, str(s, "id"));
        if (!k)
            lab_jerrs_add(&e, path, "no candidate %s in this campaign", str(s, "id") ?: "(no id)");
        else if (k->state != CS_CANDIDATE && k->state != CS_STAGED)
            lab_jerrs_add(&e, path, "candidate %s is %s: only candidates not started are re-scored",
                          k->id, cs_names[k->state]);
        if (!json_is_number(json_object_get(s, "score")))
            lab_jerrs_add(&e, path, "score must be a number");
    }
    if (e.n) {
        answer(cb, arg, 422, problem("the scores were not taken", lab_jerrs_to_json(&e)));
        lab_jerrs_free(&e);
        return;
    }
    lab_loop_write_t *w = lab_loop_write_new(now_ms(l));
    json_t *done = json_array();
    bool *touched = lab_calloc((size_t)c->np + 1, sizeof *touched);
    json_array_foreach(scores, i, s)
    {
        cand_t *k = cand_find(c, str(s, "id"));
        json_object_set(k->doc, "score", json_object_get(s, "score"));
        if (json_object_get(s, "uncertainty"))
            json_object_set(k->doc, "uncertainty", json_object_get(s, "uncertainty"));
        json_object_set_new(k->doc, "rescored_by", json_string(by));
        put_cand(l, w, c, k);
        if (k->plate >= 0)
            touched[k->plate] = true;
        json_array_append_new(done, json_string(k->id));
    }
    for (int pi = 0; pi < c->np; pi++)
        if (touched[pi] && !c->p[pi].over && !c->p[pi].relaid)
            lab_sched_reprioritize(l->sched, c->p[pi].run, by, NULL, true, plate_score(c, pi),
                                   noop_done, NULL);
    free(touched);
    commit(l, w, cb, arg, 200, json_pack("{s:s,s:o}", "campaign", c->id, "rescored", done));
}

void lab_loop_control(lab_loop_t *l, const char *campaign, const char *what, const char *by,
                      lab_loop_cb cb, void *arg)
{
    camp_t *c = camp_find(l, campaign);
    if (!c) {
        answer(cb, arg, 404, problem("there is no such campaign", NULL));
        return;
    }
    if (strcmp(c->state, "done") == 0) {
        answer(cb, arg, 409, problem("the campaign is done", NULL));
        return;
    }
    lab_loop_write_t *w = lab_loop_write_new(now_ms(l));
    char why[160];
    if (strcmp(what, "pause") == 0) {
        snprintf(why, sizeof why, "paused by %s", by);
        camp_set(l, w, c, "paused", why);
    } else {
        camp_set(l, w, c, "active", NULL);
        json_object_set_new(c->doc, "resumed_by", json_string(by));
        stage(l, w, c);
    }
    commit(l, w, cb, arg, 200, camp_view(l, c));
    maybe_propose(l, c);
}

json_t *lab_loop_get(lab_loop_t *l, const char *campaign)
{
    camp_t *c = camp_find(l, campaign);
    return c ? camp_view(l, c) : NULL;
}

json_t *lab_loop_list(lab_loop_t *l)
{
    json_t *out = json_array();
    for (int i = 0; i < l->n; i++) {
        camp_t *c = l->v[i];
        json_array_append_new(out, json_pack("{s:s,s:s,s:O,s:O}", "id", c->id, "state", c->state,
                                             "workflow", json_object_get(c->doc, "workflow"),
                                             "created_at", json_object_get(c->doc, "created_at")));
    }
    return out;
}

json_t *lab_loop_candidates(lab_loop_t *l, const char *campaign, const char *state)
{
    camp_t *c = camp_find(l, campaign);
    if (!c)
        return NULL;
    int want = state ? lab_cand_state_parse(state) : -1;
    json_t *out = json_array();
    for (int i = 0; i < c->nc; i++)
        if (want < 0 || (int)c->c[i]->state == want)
            json_array_append(out, c->c[i]->doc);
    return out;
}

json_t *lab_loop_results(lab_loop_t *l, const char *campaign)
{
    camp_t *c = camp_find(l, campaign);
    if (!c)
        return NULL;
    json_t *out = json_array();
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->state == CS_COMPLETED)
            json_array_append(out, json_object_get(c->c[i]->doc, "result"));
    return out;
}

/* ---- the built-in learner ---- */

typedef struct work {
    uv_work_t req;
    lab_loop_t *l;
    char campaign[72];
    lab_learn_job_t *job;
} work_t;

static void work_run(uv_work_t *req)
{
    work_t *wk = req->data;
    lab_learn_job_run(wk->job);
}

static void work_done(uv_work_t *req, int status)
{
    work_t *wk = req->data;
    lab_loop_t *l = wk->l;
    l->works--;
    camp_t *c = camp_find(l, wk->campaign);
    if (c)
        c->proposing = false;
    if (c && !l->stopped && status == 0) {
        json_t *batch = lab_learn_job_batch(wk->job);
        if (batch) {
            c->fits++;
            lab_loop_batch(l, c->id, batch, "labloop-learner", "builtin", NULL, NULL);
            json_decref(batch);
        } else {
            log_error("loop", "campaign=%s the learner proposed nothing: %s", c->id,
                      lab_learn_job_error(wk->job));
        }
    }
    lab_learn_job_free(wk->job);
    free(wk);
    maybe_free(l);
}

/* The built-in learner proposes the next batch when fewer than learner.ahead (default 2) of the
 * campaign's plates are in flight and no candidate waits for a plate: a plate starting or ending
 * would otherwise leave the instruments idle. One fit at a time per campaign, in a worker; the
 * candidates in flight are its pending points. */
static void maybe_propose(lab_loop_t *l, camp_t *c)
{
    const char *kind = str(json_object_get(c->doc, "learner"), "kind");
    if (l->stopped || c->proposing || !kind || strcmp(kind, "builtin") != 0 ||
        strcmp(c->state, "active") != 0)
        return;
    /* plates in flight (waiting or running): the model learns from what comes back, so it
     * proposes ahead only this far */
    json_t *ahead = json_object_get(json_object_get(c->doc, "learner"), "ahead");
    int inflight = 0;
    for (int pi = 0; pi < c->np; pi++)
        inflight += !c->p[pi].over && !c->p[pi].relaid;
    if (inflight >= (ahead ? (int)json_integer_value(ahead) : 2))
        return;
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->state == CS_CANDIDATE)
            return;
    int accepted = 0;
    for (int i = 0; i < c->nc; i++)
        accepted += c->c[i]->state != CS_STALE;
    json_t *bc = json_object_get(json_object_get(c->doc, "budget"), "candidates");
    int size = (int)json_integer_value(json_object_get(c->doc, "batch_size"));
    if (bc && accepted + size > json_integer_value(bc))
        size = (int)json_integer_value(bc) - accepted;
    if (size <= 0)
        return;
    json_t *obs = json_array(), *pending = json_array();
    for (int i = 0; i < c->nc; i++) {
        cand_t *k = c->c[i];
        if (k->state == CS_COMPLETED)
            json_array_append_new(
                obs, json_pack("{s:O,s:O}", "params", json_object_get(k->doc, "params"), "value",
                               json_object_get(json_object_get(k->doc, "result"), "value")));
        else if (k->state == CS_STAGED || k->state == CS_RUNNING)
            json_array_append_new(pending,
                                  json_pack("{s:O}", "params", json_object_get(k->doc, "params")));
    }
    char err[200];
    lab_learn_job_t *job =
        lab_learn_job_new(c->doc, obs, pending, size, c->fits + 1, c->nc, err, sizeof err);
    json_decref(obs);
    json_decref(pending);
    if (!job) {
        log_error("loop", "campaign=%s the learner cannot start: %s", c->id, err);
        return;
    }
    work_t *wk = LAB_NEW(work_t);
    wk->l = l;
    wk->job = job;
    snprintf(wk->campaign, sizeof wk->campaign, "%s", c->id);
    wk->req.data = wk;
    c->proposing = true;
    l->works++;
    uv_queue_work(l->loop, &wk->req, work_run, work_done);
}

/* ---- MQTT intake ---- */

typedef struct mq_reply {
    lab_loop_t *l;
    char *topic;
} mq_reply_t;

static void mq_done(void *arg, int status, json_t *a)
{
    mq_reply_t *r = arg;
    if (r->topic && r->l->mqtt) {
        json_t *out = json_deep_copy(a);
        if (!json_object_get(out, "status"))
            json_object_set_new(out, "status", json_string(status < 300 ? "accepted" : "rejected"));
        json_object_set_new(out, "code", json_integer(status));
        char *text = json_dumps(out, JSON_COMPACT);
        json_decref(out);
        int rc = lab_mqtt_reply(r->l->mqtt, r->topic, text);
        if (rc)
            log_warn("loop", "answer to %s not sent: %s", r->topic, lab_strerror(rc));
        free(text);
    }
    free(r->topic);
    free(r);
}

static void on_batch_msg(void *ctx, const char *topic, const char *payload, size_t len,
                         const char *response_topic)
{
    lab_loop_t *l = ctx;
    /* ROOT/in/campaigns/{id}/batches */
    const char *root = lab_mqtt_root(l->mqtt);
    size_t rl = strlen(root);
    const char *p = topic + rl + strlen("/in/campaigns/");
    const char *end = strstr(p, "/batches");
    char id[72] = "";
    if (strlen(topic) > rl + 14 && end && end - p < (ptrdiff_t)sizeof id)
        snprintf(id, sizeof id, "%.*s", (int)(end - p), p);
    json_error_t je;
    json_t *doc = json_loadb(payload, len, 0, &je);
    mq_reply_t *r = LAB_NEW(mq_reply_t);
    r->l = l;
    const char *rt = response_topic ? response_topic : str(doc, "reply_to");
    r->topic = rt && *rt ? lab_strdup(rt) : NULL;
    if (!r->topic)
        log_warn("loop", "batch on %s has no response topic or reply_to: its answer goes nowhere",
                 topic);
    if (!json_is_object(doc)) {
        char msg[300];
        snprintf(msg, sizeof msg, "the batch is not a JSON object: %s (line %d)", je.text, je.line);
        answer(mq_done, r, 400, problem(msg, json_pack("[{s:s,s:s}]", "path", "", "message", msg)));
        json_decref(doc);
        return;
    }
    lab_jerrs_t e = {0};
    if (lab_jschema_validate(l->batch_schema, doc, &e)) {
        json_t *a = problem("the batch is not valid", lab_jerrs_to_json(&e));
        json_object_set_new(a, "campaign", json_string(id));
        if (str(doc, "batch"))
            json_object_set(a, "batch", json_object_get(doc, "batch"));
        lab_jerrs_free(&e);
        answer(mq_done, r, 422, a);
        json_decref(doc);
        return;
    }
    lab_loop_batch(l, id, doc, "mqtt", "mqtt", mq_done, r);
    json_decref(doc);
}

/* ---- start and stop ---- */

static void load_campaign(void *ctx, const char *campaign, const char *id, const char *doc)
{
    (void)campaign;
    (void)id;
    json_t *d = json_loads(doc, 0, NULL);
    if (json_is_object(d))
        camp_add(ctx, d);
    else
        json_decref(d);
}

static void load_batch(void *ctx, const char *campaign, const char *id, const char *doc)
{
    camp_t *c = camp_find(ctx, campaign);
    json_t *d = json_loads(doc, 0, NULL);
    if (c && json_is_object(d))
        json_object_set(c->batches, id, d);
    json_decref(d);
}

static void load_candidate(void *ctx, const char *campaign, const char *id, const char *doc)
{
    (void)id;
    camp_t *c = camp_find(ctx, campaign);
    json_t *d = json_loads(doc, 0, NULL);
    if (c && json_is_object(d))
        cand_add(c, d);
    else
        json_decref(d);
}

/* The plates of staged and running candidates: live ones are followed again; those that ended
 * while the daemon was down are settled now from their stored runs. */
static void recover(lab_loop_t *l, camp_t *c)
{
    lab_loop_write_t *w = lab_loop_write_new(now_ms(l));
    for (int i = 0; i < c->nc; i++) {
        cand_t *k = c->c[i];
        if (k->state != CS_STAGED && k->state != CS_RUNNING)
            continue;
        const char *run = str(k->doc, "run");
        int pi = -1;
        for (int j = 0; run && j < c->np; j++)
            if (strcmp(c->p[j].run, run) == 0)
                pi = j;
        if (pi < 0 && run) {
            char *text = NULL;
            json_t *rd = NULL;
            if (lab_runs_get(l->st, run, &text) == LAB_OK)
                rd = json_loads(text, 0, NULL);
            free(text);
            const char *pn = str(k->doc, "plate") ?: run;
            const char *tail = strrchr(pn, 'P');
            pi = plate_add(c, run, pn, tail ? atoi(tail + 1) : 0,
                           rd ? json_incref(json_object_get(rd, "layout")) : json_object());
            json_decref(rd);
        }
        k->plate = pi;
        if (pi < 0)
            cand_set(l, w, c, k, CS_CANDIDATE, "its plate was not found after a restart");
    }
    for (int pi = 0; pi < c->np; pi++) {
        plate_t *p = &c->p[pi];
        int started = lab_sched_run_started(l->sched, p->run);
        if (started >= 0) {
            p->started = started == 1;
            if (p->started)
                for (int i = 0; i < c->nc; i++)
                    if (c->c[i]->plate == pi && c->c[i]->state == CS_STAGED)
                        cand_set(l, w, c, c->c[i], CS_RUNNING, NULL);
            continue;
        }
        /* over while we were down (or never stored: the write that staged it failed) */
        char *text = NULL;
        json_t *rd = NULL;
        if (lab_runs_get(l->st, p->run, &text) == LAB_OK)
            rd = json_loads(text, 0, NULL);
        free(text);
        p->over = true;
        int rs = rd ? lab_run_state_parse(str(rd, "state")) : -1;
        log_info("loop", "campaign=%s plate %s ended while the daemon was down (%s)", c->id,
                 p->name, rd ? str(rd, "state") : "no run");
        if (rs == LAB_RUN_DONE)
            plate_done(l, w, c, pi, rd);
        else
            plate_trouble(l, w, c, pi, rd ? "its run did not finish" : "its run was not stored");
        json_decref(rd);
    }
    breaker(l, w, c);
    stage(l, w, c);
    settle(l, w, c);
    commit(l, w, NULL, NULL, 0, NULL);
}

/* Campaign plate runs the scheduler holds that no candidate is on (a re-layout whose cancel
 * did not commit before a crash): cancelled if they have not begun. */
static void orphans(lab_loop_t *l)
{
    static const char *const live[] = {"queued", "planned"};
    for (size_t s = 0; s < 2; s++) {
        int64_t after = 0;
        do {
            char **docs = NULL;
            int64_t next = 0;
            int n = lab_runs_list(l->st, live[s], after, 500, &docs, &next);
            for (int i = 0; i < n; i++) {
                json_t *d = json_loads(docs[i], 0, NULL);
                camp_t *c = camp_find(l, str(d, "campaign"));
                const char *id = str(d, "id");
                bool used = false;
                for (int j = 0; c && j < c->np && !used; j++)
                    used = strcmp(c->p[j].run, id) == 0 && !c->p[j].over;
                if (c && !used && lab_sched_run_started(l->sched, id) == 0) {
                    log_info("loop", "campaign=%s run %s holds no candidate: cancelled", c->id, id);
                    lab_sched_cancel(l->sched, id, "campaign", "no candidate is on this plate",
                                     noop_done, NULL);
                }
                json_decref(d);
                free(docs[i]);
            }
            free(docs);
            after = n < 0 ? 0 : next;
        } while (after);
    }
}

int lab_loop_start(lab_loop_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                   const lab_clock_t *clock, lab_store_t *st, lab_sched_t *sched, lab_mqtt_t *mqtt)
{
    lab_loop_t *l = LAB_NEW(lab_loop_t);
    l->loop = loop;
    l->cfg = cfg;
    l->clock = clock;
    l->st = st;
    l->sched = sched;
    l->mqtt = mqtt;
    l->batch_schema = lab_jschema_get("batch.schema.json");
    if (!l->batch_schema) {
        free(l);
        return LAB_ECONFIG;
    }
    int rc;
    if ((rc = lab_loop_load(st, LAB_LT_CAMPAIGN, load_campaign, l)) < 0 ||
        (rc = lab_loop_load(st, LAB_LT_BATCH, load_batch, l)) < 0 ||
        (rc = lab_loop_load(st, LAB_LT_CANDIDATE, load_candidate, l)) < 0) {
        lab_loop_close(l, NULL, NULL);
        return rc;
    }
    lab_sched_on_run(sched, on_run, l);
    for (int i = 0; i < l->n; i++)
        recover(l, l->v[i]);
    orphans(l);
    for (int i = 0; i < l->n; i++)
        maybe_propose(l, l->v[i]);
    if (mqtt) {
        char *filter = lab_topic_filter(lab_topic_get(LAB_TOPIC_IN_BATCHES), lab_mqtt_root(mqtt));
        rc = lab_mqtt_subscribe(mqtt, filter, 1, on_batch_msg, l);
        if (rc != LAB_OK)
            log_error("loop", "cannot subscribe to %s: %s", filter, lab_strerror(rc));
        free(filter);
    }
    if (l->n)
        log_info("loop", "%d campaigns taken up from the store", l->n);
    *out = l;
    return LAB_OK;
}

void lab_loop_stop(lab_loop_t *l)
{
    l->stopped = true;
}

static void maybe_free(lab_loop_t *l)
{
    if (!l->close_cb || l->ops || l->works)
        return;
    void (*cb)(void *) = l->close_cb;
    void *arg = l->close_arg;
    for (int i = 0; i < l->n; i++)
        camp_free(l->v[i]);
    free(l->v);
    free(l);
    cb(arg);
}

static void no_cb(void *arg)
{
    (void)arg;
}

void lab_loop_close(lab_loop_t *l, void (*cb)(void *arg), void *arg)
{
    l->stopped = true;
    l->close_cb = cb ? cb : no_cb;
    l->close_arg = arg;
    maybe_free(l);
}
