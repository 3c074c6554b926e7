/* Benchmark: re-planning as the daemon will do it, on a lab-shaped workload. 1,000 queued runs
 * of a 5-step assay (dispense, seal within 5 min, incubate 30 min within 5 min, wash within
 * 2 min, read within 2 min) on 10 instruments (two of each kind; the incubators hold 8 plates),
 * mixed priorities. Figures: the time to re-plan everything after one new submission and after
 * one late step (a started step 60 s behind its plan), each 30 times, p50/p95 against the
 * 50 ms target; and for the plan itself: lag violations (plan_verify: must be 0), unscheduled
 * runs, makespan beside the lower bound, the bottleneck instrument's utilisation.
 *
 *   bench_replan [RUNS [REPEATS]]    defaults 1000 and 30 */
#include "planner/planner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const struct {
    const char *name, *on;
    double d, within;
} steps[] = {{"dispense", "liquid_handler", 120, -1},
             {"seal", "sealer", 30, 300},
             {"incubate", "incubator", 1800, 300},
             {"wash", "washer", 120, 120},
             {"read", "plate_reader", 90, 120}};

static void build(plan_problem_t *p, int runs)
{
    static const char *const kinds[] = {"liquid_handler", "sealer", "incubator", "washer",
                                        "plate_reader"};
    memset(p, 0, sizeof *p);
    p->instruments = calloc(10, sizeof *p->instruments);
    for (int i = 0; i < 10; i++) {
        plan_instrument_t *x = &p->instruments[p->ninstruments++];
        snprintf(x->id, sizeof x->id, "%s%d", kinds[i / 2], i % 2 + 1);
        snprintf(x->kind, sizeof x->kind, "%s", kinds[i / 2]);
        x->capacity = i / 2 == 2 ? 8 : 1;
    }
    p->workflows = calloc(1, sizeof *p->workflows);
    p->nworkflows = 1;
    snprintf(p->workflows[0].name, sizeof p->workflows[0].name, "assay");
    p->workflows[0].steps = calloc(5, sizeof(plan_step_t));
    p->workflows[0].n = 5;
    for (int k = 0; k < 5; k++) {
        plan_step_t *st = &p->workflows[0].steps[k];
        snprintf(st->name, sizeof st->name, "%s", steps[k].name);
        snprintf(st->on, sizeof st->on, "%s", steps[k].on);
        st->duration_s = steps[k].d;
        st->max_lag_s = steps[k].within;
    }
    p->runs = calloc((size_t)runs + 1, sizeof *p->runs);
    unsigned long r = 12345;
    for (int i = 0; i < runs; i++) {
        plan_run_t *x = &p->runs[p->nruns++];
        snprintf(x->id, sizeof x->id, "run%04d", i);
        r = r * 6364136223846793005ul + 1442695040888963407ul;
        int dice = (int)((r >> 33) % 100);
        x->priority = dice < 5    ? PLAN_URGENT
                      : dice < 20 ? PLAN_HIGH
                      : dice < 90 ? PLAN_NORMAL
                                  : PLAN_LOW;
        x->score = (double)((r >> 20) % 1000) / 1000;
        x->deadline_s = -1;
    }
}

static void report(const char *what, double *ms, int n)
{
    qsort(ms, (size_t)n, sizeof *ms, cmp_double);
    printf("{\"bench\":\"replan\",\"event\":\"%s\",\"repeats\":%d,\"p50_ms\":%.2f,\"p95_ms\":%.2f,"
           "\"max_ms\":%.2f,\"target_p95_ms\":50}\n",
           what, n, ms[n / 2], ms[(int)(n * 0.95)], ms[n - 1]);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 1000, reps = argc > 2 ? atoi(argv[2]) : 30;
    plan_problem_t p;
    build(&p, runs);
    plan_options_t o = {.budget_ms = 0, .seed = 1};
    plan_result_t base;
    double t0 = now_ms();
    plan_solve(&p, &o, &base);
    double first_ms = now_ms() - t0;
    char why[400] = "";
    int bad = plan_verify(&p, &base, why, sizeof why) != 0;
    /* the bottleneck: the instrument kind busiest for its capacity */
    double busy[10] = {0};
    for (int i = 0; i < base.nslots; i++)
        busy[base.slots[i].instrument] += base.slots[i].end_s - base.slots[i].start_s;
    int bott = 0;
    for (int i = 1; i < 10; i++)
        if (busy[i] / p.instruments[i].capacity > busy[bott] / p.instruments[bott].capacity)
            bott = i;
    printf("{\"bench\":\"lab_workload\",\"runs\":%d,\"steps\":%d,\"plan_ms\":%.2f,"
           "\"lag_violations\":%d,\"unscheduled\":%d,\"makespan_s\":%.0f,\"lower_bound_s\":%.0f,"
           "\"bottleneck\":\"%s\",\"bottleneck_utilisation_pct\":%.1f%s%s%s}\n",
           runs, base.nslots, first_ms, bad, base.nunscheduled, base.makespan_s, base.lower_bound_s,
           p.instruments[bott].id,
           100 * busy[bott] / p.instruments[bott].capacity / base.makespan_s,
           bad ? ",\"why\":\"" : "", bad ? why : "", bad ? "\"" : "");
    fflush(stdout);

    /* one new submission: the whole queue planned again with it */
    double *ms = calloc((size_t)reps, sizeof *ms);
    for (int k = 0; k < reps; k++) {
        plan_run_t *x = &p.runs[p.nruns++];
        memset(x, 0, sizeof *x);
        snprintf(x->id, sizeof x->id, "new%d", k);
        x->priority = k % 4;
        x->deadline_s = -1;
        plan_result_t r;
        t0 = now_ms();
        plan_solve(&p, &o, &r);
        ms[k] = now_ms() - t0;
        bad += plan_verify(&p, &r, why, sizeof why) != 0;
        plan_result_free(&r);
        p.nruns--;
    }
    report("new_submission", ms, reps);

    /* one late step: a run's dispense started 60 s after its plan; everything else moves */
    for (int k = 0; k < reps; k++) {
        const plan_slot_t *s0 = NULL;
        for (int i = 0; i < base.nslots && !s0; i++)
            if (base.slots[i].run == k && base.slots[i].step == 0)
                s0 = &base.slots[i];
        plan_run_t *late = &p.runs[k];
        plan_fixed_t f = {s0->instrument, s0->start_s + 60};
        late->fixed = &f;
        late->nfixed = 1;
        plan_result_t r;
        t0 = now_ms();
        plan_solve(&p, &o, &r);
        ms[k] = now_ms() - t0;
        bad += plan_verify(&p, &r, why, sizeof why) != 0;
        late->fixed = NULL;
        late->nfixed = 0;
        plan_result_free(&r);
    }
    report("late_step", ms, reps);
    free(ms);
    plan_result_free(&base);
    free(p.workflows[0].steps);
    free(p.workflows);
    free(p.instruments);
    free(p.runs);
    return bad ? 1 : 0;
}
