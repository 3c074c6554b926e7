/* Benchmark: plan quality on the classic job shops (Fisher & Thompson ft06, ft10; Lawrence
 * la01-la20) from ../shared/benchmarks/jobshop, each as a planner problem (a job is a run with a
 * workflow of its own, a machine an instrument of capacity 1). For each: the planner's makespan
 * with a 2 s budget beside the most-work-remaining dispatching rule in the same run, the proven
 * optimum and the gaps; every plan checked by plan_verify. One JSON line per instance, then the
 * summary with the targets (ft06 at 55, la01-la20 mean gap <= 5%, ft10 <= 6%).
 *
 *   bench_jobshop [DIR [BUDGET_MS]]    defaults: the shared directory and 2000 */
#include "planner/planner.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef LAB_JOBSHOP_DIR
#define LAB_JOBSHOP_DIR "../shared/benchmarks/jobshop"
#endif

static int load(const char *path, plan_problem_t *p)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[4096];
    int jobs = 0, machines = 0, j = -1;
    memset(p, 0, sizeof *p);
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[strspn(line, " \t\r\n")] == '\0')
            continue;
        if (j < 0) {
            if (sscanf(line, "%d %d", &jobs, &machines) != 2)
                break;
            p->instruments = calloc((size_t)machines, sizeof *p->instruments);
            p->workflows = calloc((size_t)jobs, sizeof *p->workflows);
            p->runs = calloc((size_t)jobs, sizeof *p->runs);
            for (int m = 0; m < machines; m++) {
                snprintf(p->instruments[m].id, sizeof p->instruments[m].id, "m%d", m);
                p->instruments[m].capacity = 1;
            }
            p->ninstruments = machines;
            j = 0;
            continue;
        }
        if (j >= jobs)
            break;
        plan_workflow_t *w = &p->workflows[j];
        snprintf(w->name, sizeof w->name, "job%d", j);
        w->steps = calloc((size_t)machines, sizeof *w->steps);
        char *s = line;
        for (int k = 0; k < machines; k++) {
            int m, d, used;
            if (sscanf(s, "%d %d%n", &m, &d, &used) != 2)
                break;
            s += used;
            plan_step_t *st = &w->steps[w->n++];
            snprintf(st->name, sizeof st->name, "op%d", k);
            snprintf(st->on, sizeof st->on, "m%d", m);
            st->duration_s = d;
            st->max_lag_s = -1;
        }
        plan_run_t *r = &p->runs[j];
        snprintf(r->id, sizeof r->id, "j%d", j);
        r->workflow = j;
        r->priority = PLAN_NORMAL;
        r->deadline_s = -1;
        j++;
    }
    fclose(f);
    p->nworkflows = p->nruns = j < 0 ? 0 : j;
    return p->nruns == jobs && jobs > 0 ? 0 : -1;
}

static double optimum(json_t *list, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i,
                       v) if (strcmp(json_string_value(json_object_get(v, "name")), name) ==
                              0) return json_number_value(json_object_get(v, "optimum"));
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : LAB_JOBSHOP_DIR;
    long budget = argc > 2 ? atol(argv[2]) : 2000;
    char path[1024];
    snprintf(path, sizeof path, "%s/instances.json", dir);
    json_t *list = json_load_file(path, 0, NULL);
    if (!list) {
        fprintf(stderr, "bench: cannot read %s\n", path);
        return 1;
    }
    const char *names[22] = {"ft06", "ft10"};
    char la[20][8];
    for (int i = 0; i < 20; i++) {
        snprintf(la[i], sizeof la[i], "la%02d", i + 1);
        names[2 + i] = la[i];
    }
    double la_gap = 0, la_base_gap = 0, ft06 = 0, ft10_gap = 0;
    int bad = 0;
    for (int i = 0; i < 22; i++) {
        plan_problem_t p;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (load(path, &p) != 0) {
            fprintf(stderr, "bench: cannot read %s\n", path);
            return 1;
        }
        double opt = optimum(list, names[i]);
        plan_options_t o = {.budget_ms = budget, .seed = 1};
        plan_result_t r, b;
        plan_solve(&p, &o, &r);
        plan_options_t ob = {.rule_only = 1};
        plan_solve(&p, &ob, &b);
        char why[400] = "";
        int ok =
            plan_verify(&p, &r, why, sizeof why) == 0 && plan_verify(&p, &b, why, sizeof why) == 0;
        bad += !ok;
        double gap = (r.makespan_s - opt) / opt * 100, bgap = (b.makespan_s - opt) / opt * 100;
        printf("{\"bench\":\"jobshop\",\"instance\":\"%s\",\"makespan\":%.0f,\"optimum\":%.0f,"
               "\"gap_pct\":%.2f,\"baseline_mwkr\":%.0f,\"baseline_gap_pct\":%.2f,"
               "\"plans_tried\":%ld,\"budget_ms\":%ld,\"verified\":%s%s%s%s}\n",
               names[i], r.makespan_s, opt, gap, b.makespan_s, bgap, r.iterations, budget,
               ok ? "true" : "false", ok ? "" : ",\"why\":\"", ok ? "" : why, ok ? "" : "\"");
        fflush(stdout);
        if (i == 0)
            ft06 = r.makespan_s;
        else if (i == 1)
            ft10_gap = gap;
        else {
            la_gap += gap / 20;
            la_base_gap += bgap / 20;
        }
        plan_result_free(&r);
        plan_result_free(&b);
        for (int w = 0; w < p.nworkflows; w++)
            free(p.workflows[w].steps);
        free(p.instruments);
        free(p.workflows);
        free(p.runs);
    }
    printf("{\"bench\":\"jobshop_summary\",\"ft06\":%.0f,\"ft06_target\":55,\"ft10_gap_pct\":%.2f,"
           "\"ft10_target_pct\":6,\"la01_20_mean_gap_pct\":%.2f,\"la01_20_target_pct\":5,"
           "\"la01_20_baseline_mean_gap_pct\":%.2f,\"all_verified\":%s}\n",
           ft06, ft10_gap, la_gap, la_base_gap, bad ? "false" : "true");
    json_decref(list);
    return bad ? 1 : 0;
}
