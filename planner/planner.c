/* The planner: chain placement with lag windows, priority order, order search within a budget,
 * operation dispatching for job shops; the checker; the JSON problem and result. */
#include "planner/planner.h"
#include "core/mem.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EPS 1e-6

/* ---- working state: busy intervals per instrument ---- */

typedef struct span {
    double s, e;
} span_t;

typedef struct line {
    span_t *v;
    int n, cap;
    double maxd; /* the longest span: nothing starting earlier than s - maxd reaches s */
} line_t;

typedef struct work {
    const plan_problem_t *p;
    line_t *lines; /* per instrument */
    int ***cand;   /* [workflow][step]: candidate instruments, -1 terminated */
    char (*why)[PLAN_REASON_MAX];
    int *movers; /* instruments of kind "mover", -1 terminated */
    int total;   /* steps of all runs: a slot array's moves follow its steps at this offset */
} work_t;

/* Spans are kept sorted by start, so a free slot is found from where the search begins. */
static void line_add(line_t *l, double s, double e)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->v = lab_realloc(l->v, sizeof *l->v * (size_t)l->cap);
    }
    int lo = 0, hi = l->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (l->v[mid].s <= s)
            lo = mid + 1;
        else
            hi = mid;
    }
    memmove(l->v + lo + 1, l->v + lo, sizeof *l->v * (size_t)(l->n - lo));
    l->v[lo] = (span_t){s, e};
    l->n++;
    if (e - s > l->maxd)
        l->maxd = e - s;
}

/* The first span starting at or after t. */
static int first_from(const line_t *l, double t)
{
    int lo = 0, hi = l->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (l->v[mid].s < t - EPS)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Whether [s, e) fits beside what the line holds, at most cap at once. */
static bool fits(const line_t *l, int cap, double s, double e)
{
    if (cap == 1) {
        /* spans do not overlap each other: only the one before s and those starting in [s, e)
         * can touch it */
        int i = first_from(l, s);
        if (i > 0 && l->v[i - 1].e > s + EPS)
            return false;
        return !(i < l->n && l->v[i].s < e - EPS);
    }
    /* The overlap is highest at s or at some span's start inside [s, e); only spans starting
     * after s - maxd and before e can count. */
    int lo = first_from(l, s - l->maxd - EPS), hi = first_from(l, e - EPS);
    for (int k = lo - 1; k < hi; k++) {
        double at = k < lo ? s : l->v[k].s;
        if (at < s - EPS)
            continue;
        int n = 0;
        for (int i = lo; i < hi && l->v[i].s <= at + EPS; i++)
            if (l->v[i].e > at + EPS)
                n++;
        if (n >= cap)
            return false;
    }
    return true;
}

/* The earliest start >= t where d fits. */
static double earliest(const line_t *l, int cap, double t, double d)
{
    if (cap == 1) { /* walk the gaps from t */
        double c = t;
        int i = first_from(l, t);
        if (i > 0 && l->v[i - 1].e > c)
            c = l->v[i - 1].e;
        for (; i < l->n; i++) {
            if (l->v[i].s >= c + d - EPS)
                return c;
            if (l->v[i].e > c)
                c = l->v[i].e;
        }
        return c;
    }
    if (fits(l, cap, t, t + d))
        return t;
    /* otherwise at the end of some span; a span starting after the best found cannot end
     * before it */
    double best = DBL_MAX;
    for (int i = first_from(l, t - l->maxd - EPS); i < l->n && l->v[i].s < best; i++) {
        double c = l->v[i].e;
        if (c > t && c < best && fits(l, cap, c, c + d))
            best = c;
    }
    return best == DBL_MAX ? t : best;
}

static void work_reset(work_t *w)
{
    for (int i = 0; i < w->p->ninstruments; i++) {
        w->lines[i].n = 0;
        w->lines[i].maxd = 0;
    }
}

/* ---- candidates ---- */

static int *candidates(const plan_problem_t *p, const char *on)
{
    int *c = lab_calloc((size_t)p->ninstruments + 1, sizeof *c);
    int n = 0;
    for (int i = 0; i < p->ninstruments; i++)
        if (strcmp(p->instruments[i].id, on) == 0)
            c[n++] = i;
    if (!n)
        for (int i = 0; i < p->ninstruments; i++)
            if (strcmp(p->instruments[i].kind, on) == 0)
                c[n++] = i;
    c[n] = -1;
    return c;
}

static bool is_candidate(const int *c, int inst)
{
    for (; *c >= 0; c++)
        if (*c == inst)
            return true;
    return false;
}

/* ---- placing one run ---- */

static const char *inst_name(const work_t *w, const int *cand)
{
    return cand[0] >= 0 ? w->p->instruments[cand[0]].kind[0] ? w->p->instruments[cand[0]].kind
                                                             : w->p->instruments[cand[0]].id
                        : "?";
}

static double move_s(const plan_instrument_t *m)
{
    return m->move_s > 0 ? m->move_s : 60;
}

/* The earliest move from t on any mover: its end into *end, the mover into *mover. */
static double earliest_move(const work_t *w, double t, int *mover, double *end)
{
    double best = DBL_MAX;
    *mover = -1;
    for (int j = 0; w->movers[j] >= 0; j++) {
        const plan_instrument_t *m = &w->p->instruments[w->movers[j]];
        double d = move_s(m);
        double s = earliest(&w->lines[w->movers[j]], m->capacity, t, d);
        if (s + d < best - EPS) {
            best = s + d;
            *mover = w->movers[j];
        }
    }
    *end = best;
    return best - (*mover >= 0 ? move_s(&w->p->instruments[*mover]) : 0);
}

/* The shortest move any mover makes; DBL_MAX without a mover. */
static double shortest_move(const work_t *w)
{
    double d = DBL_MAX;
    for (int j = 0; w->movers[j] >= 0; j++)
        d = fmin(d, move_s(&w->p->instruments[w->movers[j]]));
    return d;
}

/* Whether step k of run ri cannot be placed whatever the others do, with the reason in why:
 * its window closed before now, or every way onto its instruments is a move longer than it. */
static bool never_fits(const work_t *w, int ri, int k, double prev_fixed_end)
{
    const plan_run_t *run = &w->p->runs[ri];
    const plan_workflow_t *wf = &w->p->workflows[run->workflow];
    const plan_step_t *st = &wf->steps[k];
    if (k == 0 || st->max_lag_s < 0)
        return false;
    if (k == run->nfixed && prev_fixed_end + st->max_lag_s < -EPS) {
        snprintf(w->why[ri], PLAN_REASON_MAX,
                 "step %s's window has passed: it had to start within %g s of %s's end, %g s ago",
                 st->name, st->max_lag_s, wf->steps[k - 1].name, -prev_fixed_end);
        return true;
    }
    double d = shortest_move(w);
    if (w->movers[0] < 0 || d <= st->max_lag_s + EPS)
        return false;
    /* a move is needed unless the plate can stay where the previous step leaves it */
    const int *cs = w->cand[run->workflow][k];
    int from = k == run->nfixed ? run->fixed[k - 1].instrument : -1;
    const int *prev = w->cand[run->workflow][k - 1];
    for (int j = 0; cs[j] >= 0; j++)
        if (from >= 0 ? cs[j] == from : is_candidate(prev, cs[j]))
            return false;
    snprintf(w->why[ri], PLAN_REASON_MAX,
             "step %.40s cannot start within %g s of %.40s's end: the move from %.40s onto %.40s "
             "takes %g s",
             st->name, st->max_lag_s, wf->steps[k - 1].name,
             from >= 0 ? w->p->instruments[from].id : inst_name(w, prev), inst_name(w, cs), d);
    return true;
}

/* Places run ri's unfixed steps (fixed ones are already on the lines) into out[] (and their
 * moves into out[w->total + k]); true when it fits, with the intervals added. */
static bool place_run(work_t *w, int ri, plan_slot_t *out)
{
    const plan_run_t *run = &w->p->runs[ri];
    const plan_workflow_t *wf = &w->p->workflows[run->workflow];
    plan_slot_t *mv = out + w->total;
    int k0 = run->nfixed;
    double prev_fixed_end = -1;
    for (int k = 0; k < wf->n; k++)
        mv[k] = (plan_slot_t){ri, k, -1, 0, 0, 0, -1};
    for (int k = 0; k < k0 && k < wf->n; k++) {
        out[k] = (plan_slot_t){ri,
                               k,
                               run->fixed[k].instrument,
                               run->fixed[k].start_s,
                               run->fixed[k].start_s + wf->steps[k].duration_s,
                               0,
                               -1};
        prev_fixed_end = out[k].end_s;
    }
    if (k0 >= wf->n)
        return true;
    for (int k = k0; k < wf->n; k++)
        if ((k == k0 || w->movers[0] >= 0) && never_fits(w, ri, k, prev_fixed_end))
            return false;
    double t0 = k0 == 0 ? run->release_s : prev_fixed_end + wf->steps[k0].min_lag_s;
    if (t0 < 0) /* time 0 is now: nothing more starts before it */
        t0 = 0;
    for (int iter = 0; iter < 400; iter++) {
        double prev = prev_fixed_end;
        int prev_inst = k0 > 0 ? out[k0 - 1].instrument : -1;
        bool ok = true;
        for (int k = k0; k < wf->n; k++) {
            const plan_step_t *st = &wf->steps[k];
            double from = k == k0 ? t0 : prev + st->min_lag_s;
            int best_i = -1, best_m = -1;
            double best_s = DBL_MAX, best_ms = 0, best_at = 0;
            const int *cs = w->cand[run->workflow][k];
            for (int j = 0; cs[j] >= 0; j++) {
                int i = cs[j], m = -1;
                double at = from, ms = 0, me = 0;
                if (w->movers[0] >= 0 && prev_inst >= 0 && prev_inst != i) {
                    /* the plate moves over first, from the previous step's end (not before now) */
                    ms = earliest_move(w, fmax(prev, 0), &m, &me);
                    if (m >= 0 && me > at)
                        at = me;
                }
                double s =
                    earliest(&w->lines[i], w->p->instruments[i].capacity, at, st->duration_s);
                if (s < best_s - EPS) {
                    best_s = s;
                    best_at = at;
                    best_i = i;
                    best_m = m;
                    best_ms = ms;
                }
            }
            if (k > 0 && st->max_lag_s >= 0 && best_s > prev + st->max_lag_s + EPS) {
                /* the instrument is busy, or (it was free) the move could not come sooner */
                if (best_m >= 0 && best_s <= best_at + EPS)
                    snprintf(w->why[ri], PLAN_REASON_MAX,
                             "step %.40s cannot start within %g s of %.40s's end: the move "
                             "onto %.40s waits for %.40s",
                             st->name, st->max_lag_s, wf->steps[k - 1].name, inst_name(w, cs),
                             w->p->instruments[best_m].id);
                else
                    snprintf(w->why[ri], PLAN_REASON_MAX,
                             "step %s cannot start within %g s of %s's end%s: %s busy", st->name,
                             st->max_lag_s, wf->steps[k - 1].name,
                             best_m >= 0 ? " (with a move)" : "", inst_name(w, cs));
                if (k == k0) /* behind a step that already started: nothing can move */
                    return false;
                t0 = out[k0].start_s + (best_s - (prev + st->max_lag_s));
                ok = false;
                break;
            }
            out[k] = (plan_slot_t){ri, k, best_i, best_s, best_s + st->duration_s, 0, -1};
            mv[k] = best_m >= 0 ? (plan_slot_t){ri,
                                                k,
                                                best_m,
                                                best_ms,
                                                best_ms + move_s(&w->p->instruments[best_m]),
                                                1,
                                                prev_inst}
                                : (plan_slot_t){ri, k, -1, 0, 0, 0, -1};
            prev = out[k].end_s;
            prev_inst = best_i;
        }
        if (ok) {
            for (int k = k0; k < wf->n; k++) {
                line_add(&w->lines[out[k].instrument], out[k].start_s, out[k].end_s);
                if (mv[k].move)
                    line_add(&w->lines[mv[k].instrument], mv[k].start_s, mv[k].end_s);
            }
            w->why[ri][0] = '\0';
            return true;
        }
    }
    return false;
}

/* ---- whole plans ---- */

static int soft_order(const void *a, const void *b, void *ctx)
{
    const plan_problem_t *sp = ctx;
    const plan_run_t *x = &sp->runs[*(const int *)a], *y = &sp->runs[*(const int *)b];
    if ((x->nfixed > 0) != (y->nfixed > 0)) /* runs under way keep their promises first */
        return x->nfixed > 0 ? -1 : 1;
    plan_rank_t rx = {x->priority, x->deadline_s, x->score, (unsigned long long)*(const int *)a};
    plan_rank_t ry = {y->priority, y->deadline_s, y->score, (unsigned long long)*(const int *)b};
    return plan_rank_cmp(&rx, &ry); /* age: input order */
}

int plan_rank_cmp(const plan_rank_t *a, const plan_rank_t *b)
{
    if (a->priority != b->priority)
        return a->priority - b->priority;
    double da = a->deadline < 0 ? DBL_MAX : a->deadline;
    double db = b->deadline < 0 ? DBL_MAX : b->deadline;
    if (da != db)
        return da < db ? -1 : 1;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->age < b->age ? -1 : a->age > b->age;
}

/* Two runs not begun that the order search could swap with nothing changed but which of them
 * gets which slots: the same priority, release and steps (instrument, duration, lags). */
static bool interchangeable(const plan_problem_t *p, int a, int b)
{
    const plan_run_t *x = &p->runs[a], *y = &p->runs[b];
    if (x->nfixed || y->nfixed || x->priority != y->priority || x->release_s != y->release_s)
        return false;
    const plan_workflow_t *wx = &p->workflows[x->workflow], *wy = &p->workflows[y->workflow];
    if (wx->n != wy->n)
        return false;
    for (int k = 0; k < wx->n; k++) {
        const plan_step_t *sx = &wx->steps[k], *sy = &wy->steps[k];
        if (strcmp(sx->on, sy->on) || sx->duration_s != sy->duration_s ||
            sx->min_lag_s != sy->min_lag_s || sx->max_lag_s != sy->max_lag_s)
            return false;
    }
    return true;
}

/* Whether swapping runs can change the plan: a priority class holds two runs not begun that are
 * not interchangeable. A queue of like runs (a lab's 24 ELISAs) has nothing to search. */
static bool order_search_useful(const plan_problem_t *p)
{
    int first[PLAN_LOW + 1] = {-1, -1, -1, -1};
    for (int ri = 0; ri < p->nruns; ri++) {
        int pr = p->runs[ri].priority;
        if (p->runs[ri].nfixed || pr < 0 || pr > PLAN_LOW)
            continue;
        if (first[pr] < 0)
            first[pr] = ri;
        else if (!interchangeable(p, first[pr], ri))
            return true;
    }
    return false;
}

static int steps_of(const plan_problem_t *p, int ri)
{
    return p->workflows[p->runs[ri].workflow].n;
}

/* Places the runs in the given order into slots (run-major, base[ri] the first of run ri);
 * placed[ri] says which made it. Returns the makespan. */
static double plan_in_order(work_t *w, const int *order, const int *base, plan_slot_t *slots,
                            int *placed)
{
    const plan_problem_t *p = w->p;
    work_reset(w);
    /* Steps already started hold their instruments first, whoever comes next. */
    for (int ri = 0; ri < p->nruns; ri++)
        for (int k = 0; k < p->runs[ri].nfixed && k < steps_of(p, ri); k++) {
            const plan_fixed_t *f = &p->runs[ri].fixed[k];
            line_add(&w->lines[f->instrument], f->start_s,
                     f->start_s + p->workflows[p->runs[ri].workflow].steps[k].duration_s);
        }
    double makespan = 0;
    for (int i = 0; i < p->nruns; i++) {
        int ri = order[i];
        placed[ri] = place_run(w, ri, slots + base[ri]);
        if (placed[ri])
            for (int k = 0; k < steps_of(p, ri); k++)
                makespan = fmax(makespan, slots[base[ri] + k].end_s);
    }
    return makespan;
}

static bool is_job_shop(const work_t *w)
{
    const plan_problem_t *p = w->p;
    if (w->movers[0] >= 0)
        return false;
    for (int ri = 0; ri < p->nruns; ri++) {
        const plan_run_t *r = &p->runs[ri];
        /* priorities and deadlines order the runs: operation dispatching would ignore them */
        if (r->nfixed || r->deadline_s >= 0 || r->priority != p->runs[0].priority)
            return false;
        const plan_workflow_t *wf = &p->workflows[r->workflow];
        for (int k = 0; k < wf->n; k++) {
            const int *c = w->cand[r->workflow][k];
            if (c[0] < 0 || c[1] >= 0 || p->instruments[c[0]].capacity != 1 ||
                wf->steps[k].max_lag_s >= 0 || wf->steps[k].min_lag_s > 0)
                return false;
        }
    }
    return true;
}

static unsigned long rng_next(unsigned long *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Job shops: non-delay dispatching, among the operations that can start first the job with the
 * most work remaining (noise > 0 perturbs the work a little, for the search). */
static double dispatch(work_t *w, const int *base, plan_slot_t *slots, int *placed, double noise,
                       unsigned long *rng)
{
    const plan_problem_t *p = w->p;
    int nr = p->nruns;
    int *next = lab_calloc((size_t)nr, sizeof *next);
    double *ready = lab_calloc((size_t)nr, sizeof *ready);
    double *left = lab_calloc((size_t)nr, sizeof *left);
    double *mfree = lab_calloc((size_t)p->ninstruments, sizeof *mfree);
    int total = 0;
    for (int ri = 0; ri < nr; ri++) {
        const plan_workflow_t *wf = &p->workflows[p->runs[ri].workflow];
        ready[ri] = fmax(0, p->runs[ri].release_s);
        for (int k = 0; k < wf->n; k++)
            left[ri] += wf->steps[k].duration_s;
        total += wf->n;
        placed[ri] = 1;
    }
    double makespan = 0;
    for (int done = 0; done < total; done++) {
        /* the earliest completion among ready operations bounds the conflict set */
        double cmin = DBL_MAX;
        for (int ri = 0; ri < nr; ri++) {
            const plan_workflow_t *wf = &p->workflows[p->runs[ri].workflow];
            if (next[ri] >= wf->n)
                continue;
            int m = w->cand[p->runs[ri].workflow][next[ri]][0];
            double s = fmax(ready[ri], mfree[m]);
            cmin = fmin(cmin, s + wf->steps[next[ri]].duration_s);
        }
        int pick = -1;
        double best = -1;
        for (int ri = 0; ri < nr; ri++) {
            const plan_workflow_t *wf = &p->workflows[p->runs[ri].workflow];
            if (next[ri] >= wf->n)
                continue;
            int m = w->cand[p->runs[ri].workflow][next[ri]][0];
            double s = fmax(ready[ri], mfree[m]);
            if (s >= cmin - EPS)
                continue; /* Giffler-Thompson: only operations that start before cmin */
            double v = left[ri] * (1 + noise * ((double)(rng_next(rng) % 1000) / 1000.0 - 0.5));
            if (v > best) {
                best = v;
                pick = ri;
            }
        }
        const plan_workflow_t *wf = &p->workflows[p->runs[pick].workflow];
        int k = next[pick];
        int m = w->cand[p->runs[pick].workflow][k][0];
        double s = fmax(ready[pick], mfree[m]), e = s + wf->steps[k].duration_s;
        slots[base[pick] + k] = (plan_slot_t){pick, k, m, s, e, 0, -1};
        ready[pick] = mfree[m] = e;
        left[pick] -= wf->steps[k].duration_s;
        next[pick]++;
        makespan = fmax(makespan, e);
    }
    free(next);
    free(ready);
    free(left);
    free(mfree);
    return makespan;
}

static double lower_bound(const work_t *w)
{
    const plan_problem_t *p = w->p;
    double lb = 0, rel = DBL_MAX;
    double *load = lab_calloc((size_t)p->ninstruments + 1, sizeof *load);
    for (int ri = 0; ri < p->nruns; ri++) {
        const plan_run_t *r = &p->runs[ri];
        const plan_workflow_t *wf = &p->workflows[r->workflow];
        double t = fmax(0, r->release_s);
        rel = fmin(rel, t);
        for (int k = 0; k < wf->n; k++) {
            t += (k ? wf->steps[k].min_lag_s : 0) + wf->steps[k].duration_s;
            /* work spread over the candidates' whole capacity */
            const int *c = w->cand[r->workflow][k];
            int capsum = 0;
            for (int j = 0; c[j] >= 0; j++)
                capsum += p->instruments[c[j]].capacity;
            for (int j = 0; c[j] >= 0; j++)
                load[c[j]] += wf->steps[k].duration_s / capsum;
        }
        lb = fmax(lb, t);
    }
    for (int i = 0; i < p->ninstruments; i++)
        lb = fmax(lb, (rel == DBL_MAX ? 0 : rel) + load[i]);
    free(load);
    return lb;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int count_placed(const plan_problem_t *p, const int *placed)
{
    int n = 0;
    for (int ri = 0; ri < p->nruns; ri++)
        n += placed[ri];
    return n;
}

/* ---- job shops: tabu search on the disjunctive graph (N5 neighbourhood) ----
 * A solution is the order of operations on each machine; start times are the longest paths
 * from the source. A move swaps the first two or the last two operations of a block of the
 * critical path (Nowicki & Smutnicki); a swapped pair may not be swapped back for `tenure`
 * moves unless that gives a new best; long stalls restart from the best, shaken a little. */

typedef struct shop {
    int nops, nmach;
    int *mach, *job_next, *job_prev; /* per op; -1 at the ends */
    double *dur;
    int **seq; /* per machine: ops in order */
    int *nseq;
    int *pos; /* per op: index in its machine's seq */
    double *head;
    int *pred; /* the predecessor giving each op its head (the critical path) */
    int *indeg, *queue;
} shop_t;

/* Heads by longest paths; the makespan (its last op in *last), or -1 on a cycle. */
static double shop_eval(shop_t *s, int *last)
{
    for (int o = 0; o < s->nops; o++) {
        s->indeg[o] = (s->job_prev[o] >= 0) + (s->pos[o] > 0);
        s->head[o] = 0;
        s->pred[o] = -1;
    }
    int qh = 0, qt = 0;
    for (int o = 0; o < s->nops; o++)
        if (!s->indeg[o])
            s->queue[qt++] = o;
    double ms = 0;
    *last = -1;
    while (qh < qt) {
        int o = s->queue[qh++];
        double end = s->head[o] + s->dur[o];
        if (end > ms) {
            ms = end;
            *last = o;
        }
        int m = s->mach[o];
        int succ[2] = {s->job_next[o], s->pos[o] + 1 < s->nseq[m] ? s->seq[m][s->pos[o] + 1] : -1};
        for (int k = 0; k < 2; k++) {
            int n = succ[k];
            if (n < 0)
                continue;
            if (end > s->head[n]) {
                s->head[n] = end;
                s->pred[n] = o;
            }
            if (--s->indeg[n] == 0)
                s->queue[qt++] = n;
        }
    }
    return qt == s->nops ? ms : -1;
}

static void shop_swap(shop_t *s, int a, int b)
{
    int m = s->mach[a], pa = s->pos[a], pb = s->pos[b];
    s->seq[m][pa] = b;
    s->seq[m][pb] = a;
    s->pos[a] = pb;
    s->pos[b] = pa;
}

static void shop_load(shop_t *s, int **from)
{
    for (int m = 0; m < s->nmach; m++) {
        memcpy(s->seq[m], from[m], sizeof **s->seq * (size_t)s->nseq[m]);
        for (int i = 0; i < s->nseq[m]; i++)
            s->pos[s->seq[m][i]] = i;
    }
}

/* Improves the machine orders of slots (a job-shop plan, run-major) until t_end; slots are
 * rewritten when it found better; returns the makespan. */
static double tabu(const plan_problem_t *p, const int *base, plan_slot_t *slots, double ms0,
                   double t_end, unsigned long *rng)
{
    shop_t s = {0};
    s.nmach = p->ninstruments;
    for (int ri = 0; ri < p->nruns; ri++)
        s.nops += steps_of(p, ri);
    int n = s.nops;
    s.mach = lab_calloc((size_t)n, sizeof *s.mach);
    s.job_next = lab_calloc((size_t)n, sizeof *s.job_next);
    s.job_prev = lab_calloc((size_t)n, sizeof *s.job_prev);
    s.dur = lab_calloc((size_t)n, sizeof *s.dur);
    s.pos = lab_calloc((size_t)n, sizeof *s.pos);
    s.head = lab_calloc((size_t)n, sizeof *s.head);
    s.pred = lab_calloc((size_t)n, sizeof *s.pred);
    s.indeg = lab_calloc((size_t)n, sizeof *s.indeg);
    s.queue = lab_calloc((size_t)n, sizeof *s.queue);
    s.seq = lab_calloc((size_t)s.nmach, sizeof *s.seq);
    s.nseq = lab_calloc((size_t)s.nmach, sizeof *s.nseq);
    int **best_seq = lab_calloc((size_t)s.nmach, sizeof *best_seq);
    for (int m = 0; m < s.nmach; m++) {
        s.seq[m] = lab_calloc((size_t)n, sizeof **s.seq);
        best_seq[m] = lab_calloc((size_t)n, sizeof **best_seq);
    }
    for (int ri = 0; ri < p->nruns; ri++) {
        int k = steps_of(p, ri);
        for (int j = 0; j < k; j++) {
            int o = base[ri] + j;
            s.mach[o] = slots[o].instrument;
            s.dur[o] = slots[o].end_s - slots[o].start_s;
            s.job_prev[o] = j ? o - 1 : -1;
            s.job_next[o] = j + 1 < k ? o + 1 : -1;
        }
    }
    /* machine orders from the plan's start times */
    int *byt = lab_calloc((size_t)n, sizeof *byt);
    for (int o = 0; o < n; o++)
        byt[o] = o;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && slots[byt[j]].start_s < slots[byt[j - 1]].start_s; j--) {
            int t = byt[j];
            byt[j] = byt[j - 1];
            byt[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        int o = byt[i], m = s.mach[o];
        s.pos[o] = s.nseq[m];
        s.seq[m][s.nseq[m]++] = o;
    }
    for (int m = 0; m < s.nmach; m++)
        memcpy(best_seq[m], s.seq[m], sizeof **s.seq * (size_t)s.nseq[m]);
    enum { TABU_MAX = 32, CAND_MAX = 256 };
    int tabu_a[TABU_MAX], tabu_b[TABU_MAX], ntabu = 0, tabu_at = 0, tenure = 10;
    int last;
    double cur = shop_eval(&s, &last), best = ms0;
    bool improved = false;
    int *path = lab_calloc((size_t)n + 1, sizeof *path);
    long stall = 0;
    while (cur > 0 && now_ms() < t_end) {
        int len = 0;
        for (int o = last; o >= 0; o = s.pred[o])
            path[len++] = o;
        for (int i = 0; i < len / 2; i++) {
            int t = path[i];
            path[i] = path[len - 1 - i];
            path[len - 1 - i] = t;
        }
        /* blocks: runs of the path on one machine, consecutive there */
        int ca[CAND_MAX], cb[CAND_MAX], nc = 0, bs = 0;
        for (int i = 1; i <= len; i++) {
            if (i < len && s.mach[path[i]] == s.mach[path[i - 1]] &&
                s.pos[path[i]] == s.pos[path[i - 1]] + 1)
                continue;
            int be = i - 1;
            if (be > bs && nc + 2 <= CAND_MAX) {
                if (bs > 0) {
                    ca[nc] = path[bs];
                    cb[nc++] = path[bs + 1];
                }
                if (be < len - 1 && !(bs > 0 && be == bs + 1)) {
                    ca[nc] = path[be - 1];
                    cb[nc++] = path[be];
                }
            }
            bs = i;
        }
        if (!nc)
            break; /* a single block: nothing on the critical path can improve */
        double mbest = DBL_MAX;
        int pick = -1;
        for (int c = 0; c < nc; c++) {
            shop_swap(&s, ca[c], cb[c]);
            int l;
            double v = shop_eval(&s, &l);
            shop_swap(&s, cb[c], ca[c]);
            if (v < 0)
                continue;
            bool is_tabu = false;
            for (int t = 0; t < ntabu; t++)
                is_tabu |= tabu_a[t] == cb[c] && tabu_b[t] == ca[c];
            if ((!is_tabu || v < best - EPS) && v < mbest) {
                mbest = v;
                pick = c;
            }
        }
        if (pick < 0) {
            ntabu = 0;
            continue;
        }
        shop_swap(&s, ca[pick], cb[pick]);
        tabu_a[tabu_at] = ca[pick];
        tabu_b[tabu_at] = cb[pick];
        tabu_at = (tabu_at + 1) % tenure;
        if (ntabu < tenure)
            ntabu++;
        cur = shop_eval(&s, &last);
        if (cur < best - EPS) {
            best = cur;
            improved = true;
            stall = 0;
            for (int m = 0; m < s.nmach; m++)
                memcpy(best_seq[m], s.seq[m], sizeof **s.seq * (size_t)s.nseq[m]);
        } else if (++stall > 3000) {
            stall = 0;
            shop_load(&s, best_seq);
            for (int k = 0; k < 4; k++) {
                int m = (int)(rng_next(rng) % (unsigned long)s.nmach);
                if (s.nseq[m] < 2)
                    continue;
                int i = (int)(rng_next(rng) % (unsigned long)(s.nseq[m] - 1));
                int a = s.seq[m][i], b = s.seq[m][i + 1];
                shop_swap(&s, a, b);
                if (shop_eval(&s, &last) < 0)
                    shop_swap(&s, b, a);
            }
            ntabu = tabu_at = 0;
            tenure = 8 + (int)(rng_next(rng) % 8);
            cur = shop_eval(&s, &last);
        }
    }
    if (improved) {
        shop_load(&s, best_seq);
        best = shop_eval(&s, &last);
        for (int o = 0; o < n; o++) {
            slots[o].start_s = s.head[o];
            slots[o].end_s = s.head[o] + s.dur[o];
        }
    }
    for (int m = 0; m < s.nmach; m++) {
        free(s.seq[m]);
        free(best_seq[m]);
    }
    free(best_seq);
    free(path);
    free(byt);
    free(s.mach);
    free(s.job_next);
    free(s.job_prev);
    free(s.dur);
    free(s.pos);
    free(s.head);
    free(s.pred);
    free(s.indeg);
    free(s.queue);
    free(s.seq);
    free(s.nseq);
    return improved ? best : ms0;
}

int plan_solve(const plan_problem_t *p, const plan_options_t *o, plan_result_t *r)
{
    memset(r, 0, sizeof *r);
    work_t w = {.p = p};
    w.lines = lab_calloc((size_t)p->ninstruments + 1, sizeof *w.lines);
    w.cand = lab_calloc((size_t)p->nworkflows + 1, sizeof *w.cand);
    for (int i = 0; i < p->nworkflows; i++) {
        w.cand[i] = lab_calloc((size_t)p->workflows[i].n + 1, sizeof *w.cand[i]);
        for (int k = 0; k < p->workflows[i].n; k++)
            w.cand[i][k] = candidates(p, p->workflows[i].steps[k].on);
    }
    w.why = lab_calloc((size_t)p->nruns + 1, sizeof *w.why);
    int *base = lab_calloc((size_t)p->nruns + 1, sizeof *base);
    int total = 0;
    for (int ri = 0; ri < p->nruns; ri++) {
        base[ri] = total;
        total += steps_of(p, ri);
    }
    /* steps, then their moves at the same index + total */
    w.total = total;
    w.movers = lab_calloc((size_t)p->ninstruments + 1, sizeof *w.movers);
    int nm = 0;
    for (int i = 0; i < p->ninstruments; i++)
        if (strcmp(p->instruments[i].kind, "mover") == 0)
            w.movers[nm++] = i;
    w.movers[nm] = -1;
    plan_slot_t *cur = lab_calloc((size_t)total * 2 + 1, sizeof *cur);
    plan_slot_t *best = lab_calloc((size_t)total * 2 + 1, sizeof *best);
    int *placed = lab_calloc((size_t)p->nruns + 1, sizeof *placed);
    int *best_placed = lab_calloc((size_t)p->nruns + 1, sizeof *best_placed);
    int *order = lab_calloc((size_t)p->nruns + 1, sizeof *order);
    for (int i = 0; i < p->nruns; i++)
        order[i] = i;
    qsort_r(order, (size_t)p->nruns, sizeof *order, soft_order, (void *)p);
    unsigned long rng = o->seed ? o->seed : 0x9E3779B97F4A7C15ul;
    bool shop = is_job_shop(&w);
    double t_end = now_ms() + (double)o->budget_ms;

    double best_ms;
    int best_n;
    bool why_current = true; /* w.why holds the reasons of the kept order */
    if (shop && o->rule_only) {
        best_ms = dispatch(&w, base, best, best_placed, 0, &rng);
    } else {
        best_ms = plan_in_order(&w, order, base, best, best_placed);
        if (shop) {
            double ms = dispatch(&w, base, cur, placed, 0, &rng);
            if (ms < best_ms) {
                best_ms = ms;
                memcpy(best, cur, sizeof *cur * (size_t)total * 2);
                memcpy(best_placed, placed, sizeof *placed * (size_t)p->nruns);
            }
        }
    }
    best_n = count_placed(p, best_placed);
    r->iterations = 1;
    /* Search within the budget: job shops by perturbed dispatching; otherwise by swapping two
     * runs of the same priority class in the placement order (kept when no worse), unless no swap
     * can change anything. */
    bool search = shop || order_search_useful(p);
    while (search && !o->rule_only && o->budget_ms > 0 && now_ms() < t_end && p->nruns > 1) {
        r->iterations++;
        if (shop) {
            /* a fifth of the budget samples dispatches; the rest improves the best by tabu */
            if (now_ms() > t_end - (double)o->budget_ms * 0.8) {
                best_ms = tabu(p, base, best, best_ms, t_end, &rng);
                break;
            }
            double ms =
                dispatch(&w, base, cur, placed, 0.2 + 0.6 * (double)(r->iterations % 7) / 7, &rng);
            if (ms < best_ms - EPS) {
                best_ms = ms;
                memcpy(best, cur, sizeof *cur * (size_t)total * 2);
            }
            continue;
        }
        int a = (int)(rng_next(&rng) % (unsigned long)p->nruns);
        int b = (int)(rng_next(&rng) % (unsigned long)p->nruns);
        if (a == b || p->runs[order[a]].priority != p->runs[order[b]].priority ||
            (p->runs[order[a]].nfixed > 0) != (p->runs[order[b]].nfixed > 0))
            continue;
        int t = order[a];
        order[a] = order[b];
        order[b] = t;
        double ms = plan_in_order(&w, order, base, cur, placed);
        int n = count_placed(p, placed);
        if (n > best_n || (n == best_n && ms <= best_ms + EPS)) {
            best_ms = ms;
            best_n = n;
            memcpy(best, cur, sizeof *cur * (size_t)total * 2);
            memcpy(best_placed, placed, sizeof *placed * (size_t)p->nruns);
            why_current = true;
        } else {
            order[b] = order[a];
            order[a] = t;
            why_current = false;
        }
    }
    /* The result: placed runs' slots, the others with their reasons. */
    r->slots = lab_calloc((size_t)total * 2 + 1, sizeof *r->slots);
    r->unscheduled = lab_calloc((size_t)p->nruns + 1, sizeof *r->unscheduled);
    if (!why_current) /* the reasons of the best order's failures */
        plan_in_order(&w, order, base, cur, placed);
    for (int ri = 0; ri < p->nruns; ri++) {
        if (best_placed[ri]) {
            for (int k = 0; k < steps_of(p, ri); k++) {
                if (best[total + base[ri] + k].move)
                    r->slots[r->nslots++] = best[total + base[ri] + k];
                r->slots[r->nslots++] = best[base[ri] + k];
            }
        } else {
            plan_unscheduled_t *u = &r->unscheduled[r->nunscheduled++];
            u->run = ri;
            snprintf(u->reason, sizeof u->reason, "%s",
                     w.why[ri][0] ? w.why[ri] : "its lags cannot be met within the horizon");
        }
    }
    r->makespan_s = best_ms;
    r->lower_bound_s = lower_bound(&w);
    for (int i = 0; i < p->ninstruments; i++)
        free(w.lines[i].v);
    free(w.lines);
    for (int i = 0; i < p->nworkflows; i++) {
        for (int k = 0; k < p->workflows[i].n; k++)
            free(w.cand[i][k]);
        free(w.cand[i]);
    }
    free(w.cand);
    free(w.why);
    free(w.movers);
    free(base);
    free(cur);
    free(best);
    free(placed);
    free(best_placed);
    free(order);
    return 0;
}

void plan_result_free(plan_result_t *r)
{
    free(r->slots);
    free(r->unscheduled);
    memset(r, 0, sizeof *r);
}

/* ---- the checker ---- */

int plan_verify(const plan_problem_t *p, const plan_result_t *r, char *why, size_t cap)
{
    int *seen = lab_calloc((size_t)p->nruns + 1, sizeof *seen);
    int *last = lab_calloc((size_t)p->nruns + 1, sizeof *last); /* a run's previous step slot */
    int rc = 0;
    bool movers = false;
    for (int i = 0; i < p->ninstruments; i++)
        movers |= strcmp(p->instruments[i].kind, "mover") == 0;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(why, cap, __VA_ARGS__);                                                           \
        rc = -1;                                                                                   \
        goto out;                                                                                  \
    } while (0)
    for (int ri = 0; ri < p->nruns; ri++)
        last[ri] = -1;
    for (int i = 0; i < r->nslots; i++) {
        const plan_slot_t *s = &r->slots[i];
        if (s->run < 0 || s->run >= p->nruns)
            FAIL("slot %d: no run %d", i, s->run);
        if (s->instrument < 0 || s->instrument >= p->ninstruments)
            FAIL("slot %d: no instrument %d", i, s->instrument);
        const plan_run_t *run = &p->runs[s->run];
        const plan_workflow_t *wf = &p->workflows[run->workflow];
        if (s->move) {
            const plan_slot_t *nx = i + 1 < r->nslots ? &r->slots[i + 1] : NULL;
            if (strcmp(p->instruments[s->instrument].kind, "mover") != 0)
                FAIL("run %s: a move on %s, not a mover", run->id,
                     p->instruments[s->instrument].id);
            if (!nx || nx->move || nx->run != s->run || nx->step != s->step || s->step == 0 ||
                last[s->run] < 0 || s->step != seen[s->run])
                FAIL("run %s: a move that serves no step", run->id);
            const plan_slot_t *pv = &r->slots[last[s->run]];
            if (s->from != pv->instrument || pv->instrument == nx->instrument)
                FAIL("run %s step %s: the move comes from %d, the plate is on %d", run->id,
                     wf->steps[s->step].name, s->from, pv->instrument);
            if (s->start_s < pv->end_s - EPS || s->end_s > nx->start_s + EPS)
                FAIL("run %s step %s: the move [%g, %g] is outside [%g, %g]", run->id,
                     wf->steps[s->step].name, s->start_s, s->end_s, pv->end_s, nx->start_s);
            if (s->start_s < -EPS)
                FAIL("run %s step %s: the move starts at %g s, before now", run->id,
                     wf->steps[s->step].name, s->start_s);
            if (fabs(s->end_s - s->start_s - move_s(&p->instruments[s->instrument])) > EPS)
                FAIL("run %s: a move lasts %g s", run->id, s->end_s - s->start_s);
            continue;
        }
        if (s->step != seen[s->run] || s->step >= wf->n)
            FAIL("run %s: step %d out of order", run->id, s->step);
        seen[s->run]++;
        const plan_step_t *st = &wf->steps[s->step];
        int *c = candidates(p, st->on);
        bool ok = is_candidate(c, s->instrument);
        free(c);
        if (!ok)
            FAIL("run %s step %s: instrument %d is not %s", run->id, st->name, s->instrument,
                 st->on);
        if (fabs(s->end_s - s->start_s - st->duration_s) > EPS)
            FAIL("run %s step %s: lasts %g s, not %g", run->id, st->name, s->end_s - s->start_s,
                 st->duration_s);
        bool fixed = s->step < run->nfixed;
        if (fixed && (fabs(s->start_s - run->fixed[s->step].start_s) > EPS ||
                      s->instrument != run->fixed[s->step].instrument))
            FAIL("run %s step %s: started, yet moved", run->id, st->name);
        if (!fixed && s->start_s < -EPS)
            FAIL("run %s step %s: starts at %g s, before now", run->id, st->name, s->start_s);
        if (s->step == 0 && run->nfixed == 0 && s->start_s < fmax(0, run->release_s) - EPS)
            FAIL("run %s: starts at %g before its release %g", run->id, s->start_s, run->release_s);
        const plan_slot_t *pv = last[s->run] >= 0 ? &r->slots[last[s->run]] : NULL;
        if (pv) {
            double lag = s->start_s - pv->end_s;
            if (lag < st->min_lag_s - EPS)
                FAIL("run %s step %s: %g s after %s, under the minimum %g", run->id, st->name, lag,
                     wf->steps[s->step - 1].name, st->min_lag_s);
            if (st->max_lag_s >= 0 && lag > st->max_lag_s + EPS)
                FAIL("run %s step %s: %g s after %s, over the maximum %g", run->id, st->name, lag,
                     wf->steps[s->step - 1].name, st->max_lag_s);
            /* the plate changes instrument: a mover must take it (a started step's move is
             * in the past) */
            if (movers && !fixed && pv->instrument != s->instrument && (i == 0 || !s[-1].move))
                FAIL("run %s step %s: no move from %s to %s", run->id, st->name,
                     p->instruments[pv->instrument].id, p->instruments[s->instrument].id);
        }
        last[s->run] = i;
    }
    for (int i = 0; i < r->nslots; i++) {
        const plan_slot_t *s = &r->slots[i];
        if (!s->move && seen[s->run] != p->workflows[p->runs[s->run].workflow].n)
            FAIL("run %s: only %d of its steps placed", p->runs[s->run].id, seen[s->run]);
        /* capacity at this slot's start (moves count on their mover) */
        int n = 0;
        for (int j = 0; j < r->nslots; j++)
            if (r->slots[j].instrument == s->instrument &&
                r->slots[j].start_s <= s->start_s + EPS && r->slots[j].end_s > s->start_s + EPS)
                n++;
        if (n > p->instruments[s->instrument].capacity)
            FAIL("instrument %s holds %d at %g s (capacity %d)", p->instruments[s->instrument].id,
                 n, s->start_s, p->instruments[s->instrument].capacity);
    }
out:
#undef FAIL
    free(seen);
    free(last);
    return rc;
}

/* ---- JSON ---- */

/* The index, or -1 when there is none by that name. */
static int index_of_workflow(const plan_problem_t *p, const char *name)
{
    for (int i = 0; i < p->nworkflows; i++)
        if (strcmp(p->workflows[i].name, name) == 0)
            return i;
    return -1;
}

/* The index, or -1 when there is none by that name. */
static int index_of_instrument(const plan_problem_t *p, const char *id)
{
    for (int i = 0; i < p->ninstruments; i++)
        if (strcmp(p->instruments[i].id, id) == 0)
            return i;
    return -1;
}

static const char *str_at(const json_t *o, const char *k, const char *at, const char *what,
                          bool required, size_t max, lab_jerrs_t *e)
{
    json_t *v = json_object_get(o, k);
    char path[160];
    snprintf(path, sizeof path, "%s/%s", at, k);
    if (!v) {
        if (required)
            lab_jerrs_add(e, path, "%s is required", what);
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= max) {
        lab_jerrs_add(e, path, "%s must be a string of 1 to %zu bytes", what, max - 1);
        return NULL;
    }
    return json_string_value(v);
}

static double num_at(const json_t *o, const char *k, const char *at, double def, double lo,
                     lab_jerrs_t *e)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return def;
    char path[256];
    snprintf(path, sizeof path, "%s/%s", at, k);
    if (!json_is_number(v) || json_number_value(v) < lo || !isfinite(json_number_value(v))) {
        lab_jerrs_add(e, path, "must be a number >= %g", lo);
        return def;
    }
    return json_number_value(v);
}

int plan_from_json(const json_t *doc, plan_problem_t *p, lab_jerrs_t *e)
{
    memset(p, 0, sizeof *p);
    int before = e->n;
    if (!json_is_object(doc)) {
        lab_jerrs_add(e, "", "the problem must be an object");
        return e->n - before;
    }
    json_t *ins = json_object_get(doc, "instruments"), *wfs = json_object_get(doc, "workflows"),
           *runs = json_object_get(doc, "runs");
    if (!json_is_array(ins))
        lab_jerrs_add(e, "/instruments", "an array of {id, kind, capacity} is required");
    if (!json_is_array(wfs))
        lab_jerrs_add(e, "/workflows", "an array of {name, steps} is required");
    if (!json_is_array(runs))
        lab_jerrs_add(e, "/runs", "an array of {id, workflow} is required");
    if (e->n > before)
        return e->n - before;
    char at[160];
    size_t i;
    json_t *v;
    p->instruments = lab_calloc(json_array_size(ins) + 1, sizeof *p->instruments);
    json_array_foreach(ins, i, v)
    {
        snprintf(at, sizeof at, "/instruments/%zu", i);
        plan_instrument_t *x = &p->instruments[p->ninstruments++];
        const char *id = str_at(v, "id", at, "id", true, PLAN_NAME_MAX, e);
        const char *kind = str_at(v, "kind", at, "kind", false, PLAN_NAME_MAX, e);
        snprintf(x->id, sizeof x->id, "%s", id ? id : "");
        snprintf(x->kind, sizeof x->kind, "%s", kind ? kind : "");
        x->capacity = (int)num_at(v, "capacity", at, 1, 1, e);
        /* a mover's time for one move, 60 s unless given; a move of no time is no move */
        json_t *mv = json_object_get(v, "move_s");
        bool mover = strcmp(x->kind, "mover") == 0;
        x->move_s = mover ? 60 : 0;
        if (mv) {
            char mp[200];
            snprintf(mp, sizeof mp, "%s/move_s", at);
            if (!mover)
                lab_jerrs_add(e, mp, "only an instrument of kind mover moves plates");
            else if (!json_is_number(mv) || !(json_number_value(mv) > 0) ||
                     !isfinite(json_number_value(mv)))
                lab_jerrs_add(e, mp, "a mover's time for one move must be a number > 0");
            else
                x->move_s = json_number_value(mv);
        }
        if (id && index_of_instrument(p, id) < p->ninstruments - 1) {
            snprintf(at, sizeof at, "/instruments/%zu/id", i);
            lab_jerrs_add(e, at, "'%s' is given twice", id);
        }
    }
    p->workflows = lab_calloc(json_array_size(wfs) + 1, sizeof *p->workflows);
    json_array_foreach(wfs, i, v)
    {
        snprintf(at, sizeof at, "/workflows/%zu", i);
        plan_workflow_t *w = &p->workflows[p->nworkflows++];
        const char *name = str_at(v, "name", at, "name", true, sizeof w->name, e);
        snprintf(w->name, sizeof w->name, "%s", name ? name : "");
        json_t *steps = json_object_get(v, "steps");
        if (!json_is_array(steps) || json_array_size(steps) == 0) {
            snprintf(at, sizeof at, "/workflows/%zu/steps", i);
            lab_jerrs_add(e, at, "a non-empty array of steps is required");
            continue;
        }
        w->steps = lab_calloc(json_array_size(steps), sizeof *w->steps);
        size_t k;
        json_t *s;
        json_array_foreach(steps, k, s)
        {
            snprintf(at, sizeof at, "/workflows/%zu/steps/%zu", i, k);
            plan_step_t *st = &w->steps[w->n++];
            const char *sn = str_at(s, "name", at, "name", false, PLAN_NAME_MAX, e);
            const char *on = str_at(s, "on", at, "on", true, PLAN_NAME_MAX, e);
            snprintf(st->name, sizeof st->name, "%s", sn ? sn : "");
            if (!sn)
                snprintf(st->name, sizeof st->name, "step%zu", k + 1);
            snprintf(st->on, sizeof st->on, "%s", on ? on : "");
            json_t *d = json_object_get(s, "duration_s");
            if (json_is_array(d)) /* a range: plan for the longest */
                st->duration_s = json_number_value(json_array_get(d, 1));
            else if (json_is_number(d) && json_number_value(d) >= 0)
                st->duration_s = json_number_value(d);
            else {
                char path[200];
                snprintf(path, sizeof path, "%s/duration_s", at);
                lab_jerrs_add(e, path, "a number >= 0 (or [min, max]) is required");
            }
            st->min_lag_s = num_at(s, "start_after_s", at, 0, 0, e);
            st->max_lag_s = num_at(s, "start_within_s", at, -1, 0, e);
            if (st->max_lag_s >= 0 && st->max_lag_s < st->min_lag_s) {
                char path[200];
                snprintf(path, sizeof path, "%s/start_within_s", at);
                lab_jerrs_add(e, path, "%g is below start_after_s %g", st->max_lag_s,
                              st->min_lag_s);
            }
            if (on) {
                int *c = candidates(p, on);
                if (c[0] < 0) {
                    char path[200];
                    snprintf(path, sizeof path, "%s/on", at);
                    lab_jerrs_add(e, path, "no instrument has id or kind '%s'", on);
                }
                free(c);
            }
        }
    }
    p->runs = lab_calloc(json_array_size(runs) + 1, sizeof *p->runs);
    static const char *const prio[] = {"urgent", "high", "normal", "low"};
    json_array_foreach(runs, i, v)
    {
        snprintf(at, sizeof at, "/runs/%zu", i);
        plan_run_t *r = &p->runs[p->nruns++];
        const char *id = str_at(v, "id", at, "id", true, PLAN_NAME_MAX, e);
        snprintf(r->id, sizeof r->id, "%s", id ? id : "");
        const char *wf = str_at(v, "workflow", at, "workflow", true, 128, e);
        r->workflow = wf ? index_of_workflow(p, wf) : -1;
        if (wf && r->workflow < 0) {
            snprintf(at, sizeof at, "/runs/%zu/workflow", i);
            lab_jerrs_add(e, at, "no workflow '%s'", wf);
            snprintf(at, sizeof at, "/runs/%zu", i);
        }
        r->priority = PLAN_NORMAL;
        const char *pr = str_at(v, "priority", at, "priority", false, 16, e);
        if (pr) {
            r->priority = -1;
            for (int k = 0; k < 4; k++)
                if (strcmp(pr, prio[k]) == 0)
                    r->priority = k;
            if (r->priority < 0) {
                snprintf(at, sizeof at, "/runs/%zu/priority", i);
                lab_jerrs_add(e, at, "one of urgent, high, normal, low");
                r->priority = PLAN_NORMAL;
                snprintf(at, sizeof at, "/runs/%zu", i);
            }
        }
        json_t *sc = json_object_get(v, "score");
        r->score = json_is_number(sc) ? json_number_value(sc) : 0;
        r->release_s = num_at(v, "release_s", at, 0, 0, e);
        r->deadline_s = num_at(v, "deadline_s", at, -1, 0, e);
        json_t *started = json_object_get(v, "started");
        if (started && r->workflow >= 0) {
            size_t k;
            json_t *f;
            r->fixed = lab_calloc(json_array_size(started) + 1, sizeof *r->fixed);
            json_array_foreach(started, k, f)
            {
                char fat[200];
                snprintf(fat, sizeof fat, "/runs/%zu/started/%zu", i, k);
                const char *inst =
                    str_at(f, "instrument", fat, "instrument", true, PLAN_NAME_MAX, e);
                int ii = inst ? index_of_instrument(p, inst) : -1;
                if (inst && ii < 0) {
                    lab_jerrs_add(e, fat, "no instrument '%s'", inst);
                    continue;
                }
                if ((int)k >= p->workflows[r->workflow].n) {
                    lab_jerrs_add(e, fat, "the workflow has only %d steps",
                                  p->workflows[r->workflow].n);
                    continue;
                }
                r->fixed[r->nfixed++] = (plan_fixed_t){ii, num_at(f, "start_s", fat, 0, -1e15, e)};
            }
        }
    }
    if (e->n > before)
        plan_problem_free(p);
    return e->n - before;
}

void plan_problem_free(plan_problem_t *p)
{
    for (int i = 0; i < p->nworkflows; i++)
        free(p->workflows[i].steps);
    for (int i = 0; i < p->nruns; i++)
        free(p->runs[i].fixed);
    free(p->instruments);
    free(p->workflows);
    free(p->runs);
    memset(p, 0, sizeof *p);
}

static int by_start(const void *a, const void *b)
{
    const plan_slot_t *x = a, *y = b;
    if (x->start_s != y->start_s)
        return x->start_s < y->start_s ? -1 : 1;
    if (x->run != y->run)
        return x->run - y->run;
    return x->step != y->step ? x->step - y->step : y->move - x->move;
}

/* The instrument of the step a move serves. */
static const char *to_of_inst(const plan_problem_t *p, const plan_result_t *r, const plan_slot_t *m)
{
    for (int i = 0; i < r->nslots; i++)
        if (!r->slots[i].move && r->slots[i].run == m->run && r->slots[i].step == m->step)
            return p->instruments[r->slots[i].instrument].id;
    return "?";
}

json_t *plan_to_json(const plan_problem_t *p, const plan_result_t *r)
{
    plan_slot_t *s = lab_calloc((size_t)r->nslots + 1, sizeof *s);
    memcpy(s, r->slots, sizeof *s * (size_t)r->nslots);
    qsort(s, (size_t)r->nslots, sizeof *s, by_start);
    json_t *steps = json_array(), *un = json_array();
    for (int i = 0; i < r->nslots; i++) {
        const plan_run_t *run = &p->runs[s[i].run];
        const char *name = p->workflows[run->workflow].steps[s[i].step].name;
        if (s[i].move) {
            char mv[PLAN_NAME_MAX + 8];
            snprintf(mv, sizeof mv, "move:%s", name);
            json_array_append_new(
                steps, json_pack("{s:s, s:s, s:s, s:s, s:s, s:f, s:f, s:b}", "run", run->id, "step",
                                 mv, "instrument", p->instruments[s[i].instrument].id, "from",
                                 p->instruments[s[i].from].id, "to", to_of_inst(p, r, &s[i]),
                                 "start_s", s[i].start_s, "end_s", s[i].end_s, "move", 1));
            continue;
        }
        json_array_append_new(steps,
                              json_pack("{s:s, s:s, s:s, s:f, s:f}", "run", run->id, "step", name,
                                        "instrument", p->instruments[s[i].instrument].id, "start_s",
                                        s[i].start_s, "end_s", s[i].end_s));
    }
    free(s);
    for (int i = 0; i < r->nunscheduled; i++)
        json_array_append_new(un, json_pack("{s:s, s:s}", "run", p->runs[r->unscheduled[i].run].id,
                                            "reason", r->unscheduled[i].reason));
    return json_pack("{s:f, s:f, s:o, s:o}", "makespan_s", r->makespan_s, "lower_bound_s",
                     r->lower_bound_s, "steps", steps, "unscheduled", un);
}
