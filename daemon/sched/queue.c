/* Admission: the look-ahead window of waiting runs planned in detail, the queue beyond it (a heap
 * in the planner's order, documents left in the store), and the runs whose workflow version is
 * not stored (asked again every WF_ASK_MS). */
#include "daemon/sched/sched_int.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/store/runs.h"
#include "planner/planner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The planner's order of runs not begun (plan_rank_cmp). < 0 when a goes first. */
static int rank_cmp(const cold_t *a, const cold_t *b)
{
    plan_rank_t ra = {a->prio, (double)a->deadline_ms, a->score, a->age};
    plan_rank_t rb = {b->prio, (double)b->deadline_ms, b->score, b->age};
    return plan_rank_cmp(&ra, &rb);
}

static cold_t cold_of_run(const srun_t *r)
{
    cold_t c = {.prio = r->prio, .score = r->score, .deadline_ms = r->deadline_ms, .age = r->age};
    memcpy(c.id, r->id, sizeof c.id);
    return c;
}

static void heap_swap(cold_t *h, int i, int j)
{
    cold_t t = h[i];
    h[i] = h[j];
    h[j] = t;
}

static void heap_up(cold_t *h, int i)
{
    while (i > 0 && rank_cmp(&h[i], &h[(i - 1) / 2]) < 0) {
        heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(cold_t *h, int n, int i)
{
    for (;;) {
        int best = i, l = 2 * i + 1, rr = l + 1;
        if (l < n && rank_cmp(&h[l], &h[best]) < 0)
            best = l;
        if (rr < n && rank_cmp(&h[rr], &h[best]) < 0)
            best = rr;
        if (best == i)
            return;
        heap_swap(h, i, best);
        i = best;
    }
}

static void cold_push(lab_sched_t *s, const cold_t *c)
{
    if (s->ncold == s->capcold) {
        s->capcold = s->capcold ? 2 * s->capcold : 256;
        s->cold = lab_realloc(s->cold, sizeof *s->cold * (size_t)s->capcold);
    }
    s->cold[s->ncold] = *c;
    heap_up(s->cold, s->ncold++);
}

static cold_t cold_take(lab_sched_t *s, int i)
{
    cold_t c = s->cold[i];
    s->cold[i] = s->cold[--s->ncold];
    if (i < s->ncold) {
        heap_down(s->cold, s->ncold, i);
        heap_up(s->cold, i);
    }
    return c;
}

static void orphan_push(lab_sched_t *s, const cold_t *c, const char *wf, int version)
{
    if (s->norphans == s->caporphans) {
        s->caporphans = s->caporphans ? 2 * s->caporphans : 64;
        s->orphans = lab_realloc(s->orphans, sizeof *s->orphans * (size_t)s->caporphans);
    }
    s->orphans[s->norphans++] = (orphan_t){*c, lab_strdup(wf), version};
}

static orphan_t orphan_take(lab_sched_t *s, int i)
{
    orphan_t o = s->orphans[i];
    s->orphans[i] = s->orphans[--s->norphans];
    return o;
}

/* A run in the window: queued or planned, nothing of it begun. */
static bool queue_waiting(const srun_t *r)
{
    if (r->ex || (r->state != LAB_RUN_QUEUED && r->state != LAB_RUN_PLANNED))
        return false;
    for (int k = 0; k < r->n; k++)
        if (r->st[k].state != LAB_STEP_PENDING)
            return false;
    return true;
}

/* The waiting run ranked last in the window (NULL when none); *n: how many wait there. */
static srun_t *queue_window_last(lab_sched_t *s, int *n)
{
    srun_t *last = NULL;
    cold_t lc = {0}, c;
    *n = 0;
    for (int i = 0; i < s->nruns; i++)
        if (queue_waiting(s->runs[i])) {
            (*n)++;
            c = cold_of_run(s->runs[i]);
            if (!last || rank_cmp(&c, &lc) > 0) {
                last = s->runs[i];
                lc = c;
            }
        }
    return last;
}

/* A queued run back from the store into the window; NULL when its document is gone. */
static srun_t *queue_load(lab_sched_t *s, const cold_t *c)
{
    char *text = NULL;
    json_t *doc = NULL;
    if (lab_runs_get(s->st, c->id, &text) == LAB_OK)
        doc = json_loads(text, 0, NULL);
    free(text);
    if (!json_is_object(doc)) {
        log_error("sched", "run=%s left the queue: its document cannot be read", c->id);
        json_decref(doc);
        return NULL;
    }
    srun_t *r = run_new(s, doc);
    r->age = c->age;
    return r;
}

static void queue_demote(lab_sched_t *s, srun_t *r)
{
    cold_t c = cold_of_run(r);
    cold_push(s, &c);
    run_drop(s, r);
}

/* A queued run's document (taken over): into the window when it has room or when the run ranks
 * ahead of one waiting there (which then leaves for the queue if it was not planned yet), else
 * into the queue; a run whose workflow is not stored waits apart. Costs a rank comparison per
 * waiting run of the window and a heap insert, whatever the length of the queue. true when the
 * plan changes (the run entered the window, or the window has room for the queue's best). */
bool queue_admit(lab_sched_t *s, json_t *doc)
{
    cold_t c = {.prio = run_prio_of(json_string_value(json_object_get(doc, "priority"))),
                .score = doc_num(json_object_get(doc, "score"), 0),
                .deadline_ms = doc_get_time(doc, "deadline"),
                .age = ++s->age};
    snprintf(c.id, sizeof c.id, "%s", json_string_value(json_object_get(doc, "id")) ?: "");
    if (!c.deadline_ms)
        c.deadline_ms = -1;
    const char *name = json_string_value(json_object_get(doc, "workflow")) ?: "";
    json_t *v = json_object_get(doc, "workflow_version");
    int version = v ? (int)json_integer_value(v) : 0;
    if (!run_wf_lookup(s, name, version)) {
        orphan_push(s, &c, name, version);
        json_decref(doc);
        return false;
    }
    int n;
    srun_t *last = queue_window_last(s, &n);
    bool in = n < WINDOW && s->ncold == 0; /* else the queue's best fill the room first */
    if (!in && n >= WINDOW && last) {
        cold_t lc = cold_of_run(last);
        in = rank_cmp(&c, &lc) < 0;
    }
    if (!in) {
        cold_push(s, &c);
        json_decref(doc);
        return n < WINDOW;
    }
    srun_t *r = run_new(s, doc);
    r->age = c.age;
    if (n + 1 > WINDOW && last && last->state == LAB_RUN_QUEUED)
        queue_demote(s, last);
    return true;
}

/* Queued runs whose workflow came join the queue (the store is asked once per WF_ASK_MS and
 * workflow); true when some did. */
bool queue_orphans_ask(lab_sched_t *s)
{
    uint64_t now = uv_now(s->loop);
    bool moved = false;
    if (!s->norphans || now - s->orphans_asked_ms < WF_ASK_MS)
        return false;
    s->orphans_asked_ms = now;
    for (int i = 0; i < s->norphans;) {
        if (run_wf_lookup(s, s->orphans[i].wf, s->orphans[i].version)) {
            orphan_t o = orphan_take(s, i);
            cold_push(s, &o.c);
            free(o.wf);
            moved = true;
        } else {
            i++;
        }
    }
    return moved;
}

/* Before a plan: the queue's best fill the room in the window. */
void queue_promote(lab_sched_t *s)
{
    queue_orphans_ask(s);
    int n;
    queue_window_last(s, &n);
    while (n < WINDOW && s->ncold > 0) {
        cold_t c = cold_take(s, 0);
        n += queue_load(s, &c) != NULL;
    }
}

/* A live run by id; one in the queue enters the window (an operator acts on it). */
srun_t *queue_thaw(lab_sched_t *s, const char *id)
{
    srun_t *r = run_find(s, id);
    for (int i = 0; !r && i < s->ncold; i++)
        if (strcmp(s->cold[i].id, id) == 0) {
            cold_t c = cold_take(s, i);
            return queue_load(s, &c);
        }
    for (int i = 0; !r && i < s->norphans; i++)
        if (strcmp(s->orphans[i].c.id, id) == 0) {
            orphan_t o = orphan_take(s, i);
            free(o.wf);
            return queue_load(s, &o.c);
        }
    return r;
}

const char *queue_cold_why(char *buf, size_t cap)
{
    snprintf(buf, cap,
             "queued: the first %d waiting runs are planned in detail, this one when a place "
             "among them frees up",
             WINDOW);
    return buf;
}

const char *queue_orphan_why(const orphan_t *o, char *buf, size_t cap)
{
    if (o->version)
        snprintf(buf, cap, "workflow %s version %d is not stored", o->wf, o->version);
    else
        snprintf(buf, cap, "workflow %s is not stored", o->wf);
    return buf;
}

/* Why a run of the queue waits, or NULL when it is not there. */
const char *queue_why(lab_sched_t *s, const char *id, char *buf, size_t cap)
{
    for (int i = 0; i < s->ncold; i++)
        if (strcmp(s->cold[i].id, id) == 0)
            return queue_cold_why(buf, cap);
    for (int i = 0; i < s->norphans; i++)
        if (strcmp(s->orphans[i].c.id, id) == 0)
            return queue_orphan_why(&s->orphans[i], buf, cap);
    return NULL;
}

int queue_not_begun(lab_sched_t *s)
{
    int n;
    queue_window_last(s, &n);
    return n + s->ncold + s->norphans;
}
