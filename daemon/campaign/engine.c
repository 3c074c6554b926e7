/* The campaign engine's core: campaigns in memory (their documents are the records), every change
 * committed before it is answered or acted on, the scheduler's events on plate runs, the restart,
 * batches over MQTT, and when the built-in learner proposes. */
#include "daemon/campaign/engine_int.h"
#include "daemon/campaign/layout.h"
#include "daemon/campaign/proposals.h"
#include "daemon/bus/topics.h"

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

/* ---- small helpers ---- */

int64_t campaigns_now_ms(const lab_campaigns_t *l)
{
    return lab_clock_now_ms(l->clock);
}

json_t *campaigns_now_iso(const lab_campaigns_t *l)
{
    char ts[32];
    lab_time_iso(campaigns_now_ms(l), ts);
    return json_string(ts);
}

const char *campaigns_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

double campaigns_num(const json_t *o, const char *key, double def)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

json_t *campaigns_problem(const char *detail, json_t *errors)
{
    json_t *a = json_pack("{s:s}", "detail", detail);
    if (errors)
        json_object_set_new(a, "errors", errors);
    return a;
}

void campaigns_answer(lab_campaigns_cb cb, void *arg, int status, json_t *a)
{
    if (cb)
        cb(arg, status, a);
    json_decref(a);
}

camp_t *campaigns_camp_find(lab_campaigns_t *l, const char *id)
{
    for (int i = 0; id && i < l->n; i++)
        if (strcmp(l->v[i]->id, id) == 0)
            return l->v[i];
    return NULL;
}

cand_t *campaigns_cand_find(camp_t *c, const char *id)
{
    for (int i = 0; id && i < c->nc; i++)
        if (strcmp(c->c[i]->id, id) == 0)
            return c->c[i];
    return NULL;
}

json_t *campaigns_objective(const camp_t *c)
{
    return json_object_get(c->doc, "objective");
}

bool campaigns_maximize(const camp_t *c)
{
    const char *d = campaigns_str(campaigns_objective(c), "direction");
    return !d || strcmp(d, "maximize") == 0;
}

json_t *campaigns_layout(const camp_t *c)
{
    return json_object_get(c->doc, "layout");
}

int campaigns_format_of(const camp_t *c)
{
    json_t *f = json_object_get(campaigns_layout(c), "format");
    return f ? (int)json_integer_value(f) : 96;
}

int campaigns_replicates_of(const camp_t *c)
{
    json_t *r = json_object_get(campaigns_layout(c), "replicates");
    return r ? (int)json_integer_value(r) : 2;
}

json_t *campaigns_control_wells(const camp_t *c, const char *which)
{
    return json_object_get(json_object_get(campaigns_layout(c), which), "wells");
}

/* Candidates a plate holds: its free wells over the replicates. */
int campaigns_plate_capacity(const camp_t *c)
{
    char wells[384][LAB_WELL_NAME];
    int n = lab_layout_free_wells(campaigns_format_of(c), campaigns_control_wells(c, "positive"),
                                  campaigns_control_wells(c, "negative"), wells, 384);
    return n / campaigns_replicates_of(c);
}

/* ---- writes ---- */

typedef struct reply {
    lab_campaigns_t *l;
    lab_campaigns_cb cb;
    void *arg;
    int status;
    json_t *answer;
} reply_t;

static void maybe_free(lab_campaigns_t *l);

void campaigns_maybe_close(lab_campaigns_t *l)
{
    maybe_free(l);
}

static void write_done(lab_store_op_t *op, int status)
{
    lab_campaigns_write_t *w = (lab_campaigns_write_t *)op;
    reply_t *r = w->arg;
    lab_campaigns_t *l = r->l;
    l->ops--;
    if (status == 0) {
        if (!l->stopped)
            for (int i = 0; i < w->nruns; i++)
                lab_sched_submitted(l->sched, w->runs[i]->doc);
        campaigns_queue_flush(l); /* plates laid out for the lab's queue, now remembered */
        campaigns_answer(r->cb, r->arg, r->status, r->answer);
    } else {
        log_error("loop", "campaign records not stored: %s", lab_strerror(status));
        json_decref(r->answer);
        char msg[160];
        snprintf(msg, sizeof msg, "the local store failed: %s", lab_strerror(status));
        campaigns_answer(r->cb, r->arg, status == LAB_ESHUTDOWN ? 503 : 500,
                         campaigns_problem(msg, NULL));
    }
    free(r);
    lab_campaigns_write_free(w);
    maybe_free(l);
}

/* Commits w (when it holds anything), then answers; answer is taken over. */
void campaigns_commit(lab_campaigns_t *l, lab_campaigns_write_t *w, lab_campaigns_cb cb, void *arg,
                      int status, json_t *ans)
{
    if (!w->nputs && !w->nrows && !w->nruns) {
        lab_campaigns_write_free(w);
        campaigns_answer(cb, arg, status, ans);
        return;
    }
    reply_t *r = LAB_NEW(reply_t);
    *r = (reply_t){l, cb, arg, status, ans};
    w->arg = r;
    w->op.done = write_done;
    l->ops++;
    lab_store_submit(l->st, &w->op);
}

void campaigns_put_camp(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c)
{
    json_object_set_new(c->doc, "updated_at", campaigns_now_iso(l));
    char *text = json_dumps(c->doc, JSON_COMPACT);
    lab_campaigns_write_put(w, LAB_CAMPAIGNS_TABLE_CAMPAIGN, c->id, NULL,
                            lab_camp_state_name(c->state), 0, text);
    free(text);
}

void campaigns_put_batch(lab_campaigns_write_t *w, camp_t *c, const char *batch, int64_t ord)
{
    char *text = json_dumps(json_object_get(c->batches, batch), JSON_COMPACT);
    lab_campaigns_write_put(w, LAB_CAMPAIGNS_TABLE_BATCH, c->id, batch, NULL, ord, text);
    free(text);
}

void campaigns_put_cand(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, cand_t *k)
{
    json_object_set_new(k->doc, "updated_at", campaigns_now_iso(l));
    char *text = json_dumps(k->doc, JSON_COMPACT);
    lab_campaigns_write_put(w, LAB_CAMPAIGNS_TABLE_CANDIDATE, c->id, k->id,
                            lab_cand_state_name(k->state), k->ord, text);
    free(text);
}

/* A reason as JSON text: one composed in a fixed buffer may end cut inside a character. */
static json_t *reason_json(const char *reason)
{
    char *t = lab_strdup(reason);
    lab_text_trim(t);
    json_t *j = json_string(t);
    if (!j) {
        log_error("loop", "a reason that is not UTF-8 text was replaced: %s", t);
        j = json_string("(the reason was not UTF-8 text)");
    }
    free(t);
    return j;
}

int campaigns_cand_set(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, cand_t *k,
                       lab_cand_state_t to, const char *reason)
{
    lab_cand_state_t from = k->state;
    char id[200];
    snprintf(id, sizeof id, "%s/%s", c->id, k->id);
    if (lab_cand_set_state(&k->state, to, id) < 0)
        return LAB_ESTATE;
    if (from != to)
        log_info("loop", "campaign=%s candidate=%s %s -> %s%s%s", c->id, k->id,
                 lab_cand_state_name(from), lab_cand_state_name(to), reason ? ": " : "",
                 reason ? reason : "");
    json_object_set_new(k->doc, "state", json_string(lab_cand_state_name(to)));
    if (reason)
        json_object_set_new(k->doc, "reason", reason_json(reason));
    else
        json_object_del(k->doc, "reason");
    if (to != LAB_CAND_STAGED && to != LAB_CAND_RUNNING) {
        k->plate = -1;
        json_object_del(k->doc, "run");
        json_object_del(k->doc, "plate");
        json_object_del(k->doc, "wells");
    }
    campaigns_put_cand(l, w, c, k);
    return 0;
}

int campaigns_camp_set(lab_campaigns_t *l, lab_campaigns_write_t *w, camp_t *c, lab_camp_state_t to,
                       const char *reason)
{
    lab_camp_state_t from = c->state;
    if (lab_camp_set_state(&c->state, to, c->id) < 0)
        return LAB_ESTATE;
    if (from != to)
        log_info("loop", "campaign=%s %s -> %s%s%s", c->id, lab_camp_state_name(from),
                 lab_camp_state_name(to), reason ? ": " : "", reason ? reason : "");
    json_object_set_new(c->doc, "state", json_string(lab_camp_state_name(to)));
    if (reason)
        json_object_set_new(c->doc, "reason", reason_json(reason));
    else
        json_object_del(c->doc, "reason");
    campaigns_put_camp(l, w, c);
    return 0;
}

int campaigns_plate_set(camp_t *c, int pi, lab_plate_state_t to)
{
    char id[200];
    snprintf(id, sizeof id, "%s/%s", c->id, c->p[pi].name);
    return lab_plate_set_state(&c->p[pi].state, to, id); /* logs the move (debug) or refusal */
}

/* ---- building campaigns and candidates in memory ---- */

camp_t *campaigns_camp_add(lab_campaigns_t *l, json_t *doc)
{
    camp_t *c = LAB_NEW(camp_t);
    snprintf(c->id, sizeof c->id, "%s", campaigns_str(doc, "id"));
    c->doc = doc;
    /* restored as stored, not a transition */
    int cs = lab_camp_state_parse(campaigns_str(doc, "state"));
    if (cs < 0)
        log_warn("loop", "campaign=%s has no known state (%s): taken as active", c->id,
                 campaigns_str(doc, "state") ?: "none");
    c->state = cs < 0 ? LAB_CAMP_ACTIVE : (lab_camp_state_t)cs;
    c->batches = json_object();
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->v = lab_realloc(l->v, sizeof *l->v * (size_t)l->cap);
    }
    l->v[l->n++] = c;
    return c;
}

cand_t *campaigns_cand_add(camp_t *c, json_t *doc)
{
    cand_t *k = LAB_NEW(cand_t);
    k->doc = doc;
    k->id = campaigns_str(doc, "id");
    k->batch = campaigns_str(doc, "batch");
    int s = lab_cand_state_parse(campaigns_str(doc, "state"));
    k->state = s < 0 ? LAB_CAND_CANDIDATE : (lab_cand_state_t)s;
    k->ord = (int64_t)campaigns_num(doc, "ord", 0);
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

int campaigns_plate_add(camp_t *c, const char *run, const char *name, int no, json_t *wells)
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

static void on_run(void *ctx, const char *id, const char *state, const char *doc)
{
    lab_campaigns_run_changed(ctx, id, state, doc);
}

void lab_campaigns_run_changed(lab_campaigns_t *l, const char *id, const char *state,
                               const char *doc)
{
    if (l->stopped || !id || !*id)
        return;
    camp_t *c = NULL;
    int pi = -1;
    for (int i = 0; i < l->n && pi < 0; i++)
        for (int j = 0; j < l->v[i]->np; j++)
            if (l->v[i]->p[j].state != LAB_PLATE_OVER && strcmp(l->v[i]->p[j].run, id) == 0) {
                c = l->v[i];
                pi = j;
                break;
            }
    if (!c)
        return;
    plate_t *p = &c->p[pi];
    int rs = lab_run_state_parse(state);
    /* released: the run went back to the lab's queue, another cell runs it */
    if (rs < 0 || rs == LAB_RUN_QUEUED || rs == LAB_RUN_PLANNED || rs == LAB_RUN_RELEASED)
        return;
    lab_campaigns_write_t *w = lab_campaigns_write_new(campaigns_now_ms(l));
    if (!lab_run_state_final((lab_run_state_t)rs)) {
        if (p->state == LAB_PLATE_STAGED) {
            (void)campaigns_plate_set(c, pi,
                                      LAB_PLATE_RUNNING); /* staged -> running: in the table */
            for (int i = 0; i < c->nc; i++)
                if (c->c[i]->plate == pi && c->c[i]->state == LAB_CAND_STAGED)
                    campaigns_cand_set(l, w, c, c->c[i], LAB_CAND_RUNNING, NULL);
        }
        campaigns_commit(l, w, NULL, NULL, 0, NULL);
        campaigns_maybe_propose(l, c); /* the next plate gets ready while this one runs */
        return;
    }
    bool relaid = p->state == LAB_PLATE_RELAID;
    (void)campaigns_plate_set(c, pi, LAB_PLATE_OVER); /* from every state found above */
    if (p->queued) {
        campaigns_queue_forget(l, c, pi, NULL);
        campaigns_put_camp(l, w, c);
    }
    if (relaid) { /* our own cancel: its candidates were laid out again already */
        campaigns_commit(l, w, NULL, NULL, 0, NULL);
        return;
    }
    json_t *run = doc ? json_loads(doc, 0, NULL) : NULL;
    log_info("loop", "campaign=%s plate %s (run %s) ended %s%s", c->id, p->name, p->run, state,
             p->queued ? " (lab's queue)" : "");
    if (rs == LAB_RUN_DONE) {
        campaigns_plate_done(l, w, c, pi, run);
    } else if (rs == LAB_RUN_FAILED) {
        char why[300];
        json_t *f = json_object_get(run, "failure");
        snprintf(why, sizeof why, "its run failed at step %s: %s", campaigns_str(f, "step") ?: "?",
                 campaigns_str(f, "error") ?: "?");
        lab_text_trim(why);
        campaigns_plate_trouble(l, w, c, pi, why);
    } else { /* cancelled by a person: the candidates are not run again */
        char why[200];
        snprintf(why, sizeof why, "plate %s was cancelled%s%s", p->name,
                 campaigns_str(run, "cancelled_by") ? " by " : "",
                 campaigns_str(run, "cancelled_by") ?: "");
        for (int i = 0; i < c->nc; i++)
            if (c->c[i]->plate == pi)
                campaigns_cand_set(l, w, c, c->c[i], LAB_CAND_ABANDONED, why);
    }
    json_decref(run);
    campaigns_breaker(l, w, c);
    campaigns_stage(l, w, c);
    campaigns_settle(l, w, c);
    campaigns_commit(l, w, NULL, NULL, 0, NULL);
    campaigns_maybe_propose(l, c);
}

/* ---- the built-in learner ---- */

typedef struct work {
    uv_work_t req;
    lab_campaigns_t *l;
    char campaign[72];
    lab_proposal_job_t *job;
} work_t;

static void work_run(uv_work_t *req)
{
    work_t *wk = req->data;
    lab_proposal_job_run(wk->job);
}

static void work_done(uv_work_t *req, int status)
{
    work_t *wk = req->data;
    lab_campaigns_t *l = wk->l;
    l->works--;
    camp_t *c = campaigns_camp_find(l, wk->campaign);
    if (c)
        c->proposing = false;
    if (c && !l->stopped && status == 0) {
        json_t *batch = lab_proposal_job_batch(wk->job);
        if (batch) {
            lab_campaigns_batch(l, c->id, batch, "labloop-learner", "builtin", NULL, NULL);
            json_decref(batch);
        } else {
            log_error("loop", "campaign=%s the learner proposed nothing: %s", c->id,
                      lab_proposal_job_error(wk->job));
        }
    }
    lab_proposal_job_free(wk->job);
    free(wk);
    maybe_free(l);
}

/* The built-in learner proposes the next batch when fewer than learner.ahead (default 2) of the
 * campaign's plates are in flight and no candidate waits for a plate: a plate starting or ending
 * would otherwise leave the instruments idle. One fit at a time per campaign, in a worker; the
 * candidates in flight are its pending points. */
void campaigns_maybe_propose(lab_campaigns_t *l, camp_t *c)
{
    const char *kind = campaigns_str(json_object_get(c->doc, "learner"), "kind");
    if (l->stopped || c->proposing || !kind || strcmp(kind, "builtin") != 0 ||
        c->state != LAB_CAMP_ACTIVE)
        return;
    /* plates in flight (waiting or running): the model learns from what comes back, so it
     * proposes ahead only this far */
    json_t *ahead = json_object_get(json_object_get(c->doc, "learner"), "ahead");
    int inflight = 0;
    for (int pi = 0; pi < c->np; pi++)
        inflight += lab_plate_state_live(c->p[pi].state);
    if (inflight >= (ahead ? (int)json_integer_value(ahead) : 2))
        return;
    for (int i = 0; i < c->nc; i++)
        if (c->c[i]->state == LAB_CAND_CANDIDATE)
            return;
    int accepted = 0;
    for (int i = 0; i < c->nc; i++)
        accepted += c->c[i]->state != LAB_CAND_STALE;
    json_t *bc = json_object_get(json_object_get(c->doc, "budget"), "candidates");
    int size = (int)json_integer_value(json_object_get(c->doc, "batch_size"));
    if (bc && accepted + size > json_integer_value(bc))
        size = (int)json_integer_value(bc) - accepted;
    if (size <= 0)
        return;
    json_t *obs = json_array(), *pending = json_array();
    for (int i = 0; i < c->nc; i++) {
        cand_t *k = c->c[i];
        if (k->state == LAB_CAND_COMPLETED)
            json_array_append_new(
                obs, json_pack("{s:O,s:O}", "params", json_object_get(k->doc, "params"), "value",
                               json_object_get(json_object_get(k->doc, "result"), "value")));
        else if (k->state == LAB_CAND_STAGED || k->state == LAB_CAND_RUNNING)
            json_array_append_new(pending,
                                  json_pack("{s:O}", "params", json_object_get(k->doc, "params")));
    }
    /* the fit's number follows the learner's batches kept so far, so it goes on after a restart */
    int fit_no = 1;
    const char *key;
    json_t *b;
    json_object_foreach(c->batches, key, b)
    {
        const char *via = campaigns_str(b, "via");
        fit_no += via && strcmp(via, "builtin") == 0;
    }
    char err[200];
    lab_proposal_job_t *job =
        lab_proposal_job_new(c->doc, obs, pending, size, fit_no, c->nc, err, sizeof err);
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
    lab_campaigns_t *l;
    lab_mqtt_return_t *ret; /* where the answer goes, with the correlation data to echo */
} mq_reply_t;

/* Every batch that came over MQTT ends here: answered, or logged with its answer and why it could
 * not be sent (lab_mqtt_reply and lab_mqtt_unanswered log and count). */
static void mq_done(void *arg, int status, json_t *a)
{
    mq_reply_t *r = arg;
    if (r->l->mqtt) {
        json_t *out = json_deep_copy(a);
        if (!json_is_object(out)) {
            json_decref(out);
            out = json_object();
        }
        if (!json_object_get(out, "status"))
            json_object_set_new(out, "status", json_string(status < 300 ? "accepted" : "rejected"));
        json_object_set_new(out, "code", json_integer(status));
        char *text = json_dumps(out, JSON_COMPACT);
        json_decref(out);
        if (lab_mqtt_answer(r->l->mqtt, r->ret, text) == 0)
            log_info("loop", "batch on topic=%s answered %d on %s", r->ret->from, status,
                     r->ret->topic);
        free(text);
    }
    lab_mqtt_return_free(r->ret);
    free(r);
}

static void on_batch_msg(void *ctx, const lab_mqtt_in_t *in)
{
    lab_campaigns_t *l = ctx;
    const char *topic = in->topic;
    /* ROOT/in/campaigns/{id}/batches */
    const char *root = lab_mqtt_root(l->mqtt);
    size_t rl = strlen(root);
    /* The subscription's filter matched: the topic is ROOT/in/campaigns/{id}/batches. The id is
     * taken whole, whatever its length, so that an answer names what was sent. */
    const char *p = topic + rl + strlen("/in/campaigns/");
    const char *end = strlen(topic) > rl + 14 ? strstr(p, "/batches") : NULL;
    char *id = end ? lab_strndup(p, (size_t)(end - p)) : lab_strdup("");
    json_error_t je;
    json_t *doc = json_loadb(in->payload, in->len, 0, &je);
    mq_reply_t *r = LAB_NEW(mq_reply_t);
    r->l = l;
    /* An empty Response Topic is no topic: reply_to is the fallback then too. */
    r->ret = lab_mqtt_return_new(in, campaigns_str(doc, "reply_to"));
    if (!json_is_object(doc)) {
        char msg[300];
        snprintf(msg, sizeof msg, "the batch is not a JSON object: %s (line %d)", je.text, je.line);
        campaigns_answer(
            mq_done, r, 400,
            campaigns_problem(msg, json_pack("[{s:s,s:s}]", "path", "", "message", msg)));
        json_decref(doc);
        free(id);
        return;
    }
    lab_jerrs_t e = {0};
    if (lab_jschema_validate(l->batch_schema, doc, &e)) {
        json_t *a = campaigns_problem("the batch is not valid", lab_jerrs_to_json(&e));
        json_object_set_new(a, "campaign", json_string(id));
        if (campaigns_str(doc, "batch"))
            json_object_set(a, "batch", json_object_get(doc, "batch"));
        lab_jerrs_free(&e);
        campaigns_answer(mq_done, r, 422, a);
        json_decref(doc);
        free(id);
        return;
    }
    lab_campaigns_batch(l, id, doc, "mqtt", "mqtt", mq_done, r);
    json_decref(doc);
    free(id);
}

/* ---- start and stop ---- */

static void load_campaign(void *ctx, const char *campaign, const char *id, const char *doc)
{
    (void)campaign;
    (void)id;
    json_t *d = json_loads(doc, 0, NULL);
    if (json_is_object(d))
        campaigns_camp_add(ctx, d);
    else
        json_decref(d);
}

static void load_batch(void *ctx, const char *campaign, const char *id, const char *doc)
{
    camp_t *c = campaigns_camp_find(ctx, campaign);
    json_t *d = json_loads(doc, 0, NULL);
    if (c && json_is_object(d))
        json_object_set(c->batches, id, d);
    json_decref(d);
}

static void load_candidate(void *ctx, const char *campaign, const char *id, const char *doc)
{
    (void)id;
    camp_t *c = campaigns_camp_find(ctx, campaign);
    json_t *d = json_loads(doc, 0, NULL);
    if (c && json_is_object(d))
        campaigns_cand_add(c, d);
    else
        json_decref(d);
}

/* The plates of staged and running candidates: live ones are followed again; those that ended
 * while the daemon was down are settled now from their stored runs. */
static void recover(lab_campaigns_t *l, camp_t *c)
{
    lab_campaigns_write_t *w = lab_campaigns_write_new(campaigns_now_ms(l));
    campaigns_queue_recover(l, c);
    for (int i = 0; i < c->nc; i++) {
        cand_t *k = c->c[i];
        if ((k->state != LAB_CAND_STAGED && k->state != LAB_CAND_RUNNING) || k->plate >= 0)
            continue;
        const char *run = campaigns_str(k->doc, "run");
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
            const char *pn = campaigns_str(k->doc, "plate") ?: run;
            const char *tail = strrchr(pn, 'P');
            pi = campaigns_plate_add(c, run, pn, tail ? atoi(tail + 1) : 0,
                                     rd ? json_incref(json_object_get(rd, "layout"))
                                        : json_object());
            json_decref(rd);
        }
        k->plate = pi;
        if (pi < 0)
            campaigns_cand_set(l, w, c, k, LAB_CAND_CANDIDATE,
                               "its plate was not found after a restart");
    }
    for (int pi = 0; pi < c->np; pi++) {
        plate_t *p = &c->p[pi];
        int started = lab_sched_run_started(l->sched, p->run);
        if (started >= 0) {
            if (started == 1 && campaigns_plate_set(c, pi, LAB_PLATE_RUNNING) == 0)
                for (int i = 0; i < c->nc; i++)
                    if (c->c[i]->plate == pi && c->c[i]->state == LAB_CAND_STAGED)
                        campaigns_cand_set(l, w, c, c->c[i], LAB_CAND_RUNNING, NULL);
            continue;
        }
        if (p->queued) /* another cell's, or not claimed yet: the lab's queue tells its end */
            continue;
        /* over while we were down (or never stored: the write that staged it failed) */
        char *text = NULL;
        json_t *rd = NULL;
        if (lab_runs_get(l->st, p->run, &text) == LAB_OK)
            rd = json_loads(text, 0, NULL);
        free(text);
        (void)campaigns_plate_set(c, pi, LAB_PLATE_OVER); /* a restored plate is staged */
        int rs = rd ? lab_run_state_parse(campaigns_str(rd, "state")) : -1;
        log_info("loop", "campaign=%s plate %s ended while the daemon was down (%s)", c->id,
                 p->name, rd ? campaigns_str(rd, "state") : "no run");
        if (rs == LAB_RUN_DONE)
            campaigns_plate_done(l, w, c, pi, rd);
        else
            campaigns_plate_trouble(l, w, c, pi,
                                    rd ? "its run did not finish" : "its run was not stored");
        json_decref(rd);
    }
    campaigns_breaker(l, w, c);
    campaigns_stage(l, w, c);
    campaigns_settle(l, w, c);
    campaigns_commit(l, w, NULL, NULL, 0, NULL);
}

/* Campaign plate runs the scheduler holds that no candidate is on (a re-layout whose cancel
 * did not commit before a crash): cancelled if they have not begun. */
static void orphans(lab_campaigns_t *l)
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
                camp_t *c = campaigns_camp_find(l, campaigns_str(d, "campaign"));
                const char *id = campaigns_str(d, "id");
                bool used = false;
                for (int j = 0; c && j < c->np && !used; j++)
                    used = strcmp(c->p[j].run, id) == 0 && c->p[j].state != LAB_PLATE_OVER;
                if (c && !used && lab_sched_run_started(l->sched, id) == 0) {
                    log_info("loop", "campaign=%s run %s holds no candidate: cancelled", c->id, id);
                    lab_sched_cancel(l->sched, id, "campaign", "no candidate is on this plate",
                                     campaigns_noop_done, NULL);
                }
                json_decref(d);
                free(docs[i]);
            }
            free(docs);
            after = n < 0 ? 0 : next;
        } while (after);
    }
}

int lab_campaigns_start(lab_campaigns_t **out, uv_loop_t *loop, const lab_clock_t *clock,
                        lab_store_t *st, lab_sched_t *sched, lab_mqtt_t *mqtt,
                        const lab_campaigns_queue_t *queue)
{
    lab_campaigns_t *l = LAB_NEW(lab_campaigns_t);
    if (queue)
        l->queue = *queue;
    l->loop = loop;
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
    if ((rc = lab_campaigns_load(st, LAB_CAMPAIGNS_TABLE_CAMPAIGN, load_campaign, l)) < 0 ||
        (rc = lab_campaigns_load(st, LAB_CAMPAIGNS_TABLE_BATCH, load_batch, l)) < 0 ||
        (rc = lab_campaigns_load(st, LAB_CAMPAIGNS_TABLE_CANDIDATE, load_candidate, l)) < 0) {
        lab_campaigns_close(l, NULL, NULL);
        return rc;
    }
    lab_sched_on_run(sched, on_run, l);
    for (int i = 0; i < l->n; i++)
        recover(l, l->v[i]);
    orphans(l);
    for (int i = 0; i < l->n; i++)
        campaigns_maybe_propose(l, l->v[i]);
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

void lab_campaigns_stop(lab_campaigns_t *l)
{
    l->stopped = true;
}

static void maybe_free(lab_campaigns_t *l)
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

void lab_campaigns_close(lab_campaigns_t *l, void (*cb)(void *arg), void *arg)
{
    l->stopped = true;
    l->close_cb = cb ? cb : no_cb;
    l->close_arg = arg;
    maybe_free(l);
}
