/* Plate runs through the lab's shared queue ([lab] shared_queue = on): any capable cell runs a
 * campaign's plate, and its end comes back to the campaign once, through
 * lab_campaigns_run_changed like a run of this cell's own.
 *
 * A plate is submitted after the write that laid it out committed, with an idempotency key made
 * of the campaign and the plate's number: a restart submits again and gets the same run. Until
 * the plate ends, the campaign's record keeps what it needs under "queue_plates": the key, the
 * submission, the layout and, once the queue answered, the run's id. */
#include "daemon/campaign/engine_int.h"

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *queue_plates(camp_t *c)
{
    json_t *q = json_object_get(c->doc, CAMPAIGNS_QUEUE_PLATES);
    if (!json_is_object(q))
        json_object_set_new(c->doc, CAMPAIGNS_QUEUE_PLATES, q = json_object());
    return q;
}

static int plate_by_name(camp_t *c, const char *name)
{
    for (int pi = 0; name && pi < c->np; pi++)
        if (strcmp(c->p[pi].name, name) == 0)
            return pi;
    return -1;
}

void campaigns_queue_stage(lab_campaigns_t *l, camp_t *c, int pi, json_t *sub)
{
    (void)l;
    plate_t *p = &c->p[pi];
    p->queued = true;
    p->run[0] = '\0';
    char key[160];
    snprintf(key, sizeof key, "labloop-campaign/%s/plate/%d", c->id, p->no);
    json_object_set_new(
        queue_plates(c), p->name,
        json_pack("{s:s,s:o,s:O,s:i}", "key", key, "sub", sub, "wells", p->wells, "no", p->no));
}

void campaigns_queue_forget(lab_campaigns_t *l, camp_t *c, int pi, const char *reason)
{
    plate_t *p = &c->p[pi];
    if (!p->queued)
        return;
    json_object_del(queue_plates(c), p->name);
    if (reason && p->run[0] && lab_sched_run_started(l->sched, p->run) < 0 && l->queue.cancel)
        l->queue.cancel(l->queue.ctx, p->run, reason, NULL, NULL);
}

typedef struct qsub {
    lab_campaigns_t *l;
    char campaign[72];
    char plate[96];
} qsub_t;

static void submitted(void *arg, int status, const char *run, const char *msg)
{
    qsub_t *q = arg;
    lab_campaigns_t *l = q->l;
    l->ops--;
    camp_t *c = l->stopped ? NULL : campaigns_camp_find(l, q->campaign);
    int pi = c ? plate_by_name(c, q->plate) : -1;
    if (pi < 0 || !c->p[pi].queued) {
        free(q);
        campaigns_maybe_close(l);
        return;
    }
    plate_t *p = &c->p[pi];
    p->submitting = false;
    json_t *e = json_object_get(queue_plates(c), p->name);
    if (status == LAB_ECONN) { /* again when the connection is back */
        log_warn("loop", "campaign=%s plate %s waits for the lab's queue: %s", c->id, p->name,
                 msg ? msg : lab_strerror(status));
        free(q);
        campaigns_maybe_close(l);
        return;
    }
    lab_campaigns_write_t *w = lab_campaigns_write_new(campaigns_now_ms(l));
    if (status < 0 || !run || strlen(run) != LAB_UUID_LEN) {
        char why[300];
        snprintf(why, sizeof why, "the lab's queue refused its run: %s",
                 msg ? msg : lab_strerror(status < 0 ? status : LAB_EDB));
        log_error("loop", "campaign=%s plate %s: %s", c->id, p->name, why);
        json_object_del(queue_plates(c), p->name);
        if (p->state == LAB_PLATE_STAGED) {
            (void)campaigns_plate_set(c, pi, LAB_PLATE_OVER); /* staged -> over: in the table */
            campaigns_plate_trouble(l, w, c, pi, why);
            campaigns_breaker(l, w, c);
            campaigns_stage(l, w, c);
            campaigns_settle(l, w, c);
        }
        campaigns_put_camp(l, w, c);
        campaigns_commit(l, w, NULL, NULL, 0, NULL);
        free(q);
        campaigns_maybe_close(l);
        return;
    }
    snprintf(p->run, sizeof p->run, "%s", run);
    json_object_set_new(e, "run", json_string(run));
    if (p->state == LAB_PLATE_RELAID) { /* laid out again while the queue answered */
        campaigns_queue_forget(l, c, pi, "its candidates were laid out again");
    } else {
        log_info("loop", "campaign=%s plate %s is run %s in the lab's queue", c->id, p->name, run);
        for (int i = 0; i < c->nc; i++) {
            cand_t *k = c->c[i];
            if (k->plate != pi)
                continue;
            json_object_set_new(k->doc, "run", json_string(run));
            json_t *tries = json_object_get(k->doc, "plates");
            json_t *last = json_array_get(tries, json_array_size(tries) - 1);
            if (last && strcmp(campaigns_str(last, "plate") ?: "", p->name) == 0)
                json_object_set_new(last, "run", json_string(run));
            campaigns_put_cand(l, w, c, k);
        }
    }
    campaigns_put_camp(l, w, c);
    campaigns_commit(l, w, NULL, NULL, 0, NULL);
    free(q);
    campaigns_maybe_close(l);
}

/* Submits every plate laid out for the shared queue that has no run yet. Called after a write
 * committed (a plate is submitted only once the campaign remembers it) and on a (re)connect. */
void campaigns_queue_flush(lab_campaigns_t *l)
{
    if (!l->queue.submit || l->stopped)
        return;
    for (int i = 0; i < l->n; i++) {
        camp_t *c = l->v[i];
        for (int pi = 0; pi < c->np; pi++) {
            plate_t *p = &c->p[pi];
            if (!p->queued || p->submitting || p->run[0] || p->state != LAB_PLATE_STAGED)
                continue;
            json_t *e = json_object_get(queue_plates(c), p->name);
            if (!e)
                continue;
            qsub_t *q = LAB_NEW(qsub_t);
            q->l = l;
            snprintf(q->campaign, sizeof q->campaign, "%s", c->id);
            snprintf(q->plate, sizeof q->plate, "%s", p->name);
            p->submitting = true;
            l->ops++;
            l->queue.submit(l->queue.ctx, json_object_get(e, "sub"), campaigns_str(e, "key"),
                            submitted, q);
        }
    }
}

static void pause_cancelled(void *arg, int status, const char *run, const char *msg)
{
    (void)run;
    qsub_t *q = arg;
    lab_campaigns_t *l = q->l;
    l->ops--;
    camp_t *c = l->stopped ? NULL : campaigns_camp_find(l, q->campaign);
    int pi = c ? plate_by_name(c, q->plate) : -1;
    if (pi >= 0 && status != 0)
        log_info("loop", "campaign=%s plate %s stays in the lab's queue: %s", c->id, q->plate,
                 msg ? msg : lab_strerror(status));
    if (pi >= 0 && status == 0 && c->p[pi].state == LAB_PLATE_STAGED) {
        lab_campaigns_write_t *w = lab_campaigns_write_new(campaigns_now_ms(l));
        (void)campaigns_plate_set(c, pi, LAB_PLATE_RELAID); /* staged -> relaid: in the table */
        campaigns_queue_forget(l, c, pi, NULL);
        char why[200];
        snprintf(why, sizeof why, "plate %.96s left the lab's queue: the campaign was paused",
                 q->plate);
        for (int i = 0; i < c->nc; i++)
            if (c->c[i]->plate == pi && c->c[i]->state == LAB_CAND_STAGED)
                campaigns_cand_set(l, w, c, c->c[i], LAB_CAND_CANDIDATE, why);
        campaigns_stage(l, w, c); /* resumed meanwhile: laid out again now */
        campaigns_put_camp(l, w, c);
        campaigns_commit(l, w, NULL, NULL, 0, NULL);
    }
    free(q);
    campaigns_maybe_close(l);
}

void campaigns_queue_pause(lab_campaigns_t *l, camp_t *c)
{
    if (!l->queue.cancel)
        return;
    char why[200];
    snprintf(why, sizeof why, "campaign %.64s was paused", c->id);
    for (int pi = 0; pi < c->np; pi++) {
        plate_t *p = &c->p[pi];
        if (!p->queued || !p->run[0] || p->state != LAB_PLATE_STAGED ||
            lab_sched_run_started(l->sched, p->run) >= 0)
            continue;
        qsub_t *q = LAB_NEW(qsub_t);
        q->l = l;
        snprintf(q->campaign, sizeof q->campaign, "%s", c->id);
        snprintf(q->plate, sizeof q->plate, "%s", p->name);
        l->ops++;
        l->queue.cancel(l->queue.ctx, p->run, why, pause_cancelled, q);
    }
}

/* After a restart: the plates kept under queue_plates come back as they were (waiting for the
 * queue's answer, or for their run's end), their candidates on them. */
void campaigns_queue_recover(lab_campaigns_t *l, camp_t *c)
{
    const char *name;
    json_t *e;
    json_object_foreach(queue_plates(c), name, e)
    {
        if (!l->queue.submit) {
            log_warn("loop",
                     "campaign=%s plate %s was in the lab's queue, and this cell no "
                     "longer uses it: its end is not followed",
                     c->id, name);
            continue;
        }
        const char *run = campaigns_str(e, "run");
        json_t *wells = json_object_get(e, "wells");
        int pi = campaigns_plate_add(c, run ? run : "", name,
                                     (int)json_integer_value(json_object_get(e, "no")),
                                     json_is_object(wells) ? json_incref(wells) : json_object());
        c->p[pi].queued = true;
        for (int i = 0; i < c->nc; i++) {
            cand_t *k = c->c[i];
            if ((k->state == LAB_CAND_STAGED || k->state == LAB_CAND_RUNNING) &&
                strcmp(campaigns_str(k->doc, "plate") ?: "", name) == 0)
                k->plate = pi;
        }
    }
}

json_t *lab_campaigns_queued_runs(lab_campaigns_t *l)
{
    json_t *ids = json_array();
    for (int i = 0; i < l->n; i++)
        for (int pi = 0; pi < l->v[i]->np; pi++) {
            plate_t *p = &l->v[i]->p[pi];
            if (p->queued && p->run[0] && lab_plate_state_live(p->state))
                json_array_append_new(ids, json_string(p->run));
        }
    campaigns_queue_flush(l);
    return ids;
}
