/* Benchmark: the closed loop on labloop-sim's world. How many experiments until the first one
 * whose true value is at least 95% of the optimum's: the built-in learner against uniform random
 * screening of the same box, same seeds; the acceleration is the ratio of their medians.
 *
 * What this is, and is not: the learner's code path exactly as the engine drives it
 * (lab_proposal_job_new/run/batch on a campaign document, batches of 6, two plates in flight as
 * learner.ahead's default keeps them: batch k+1 is proposed with batch k pending, and batch k's
 * results arrive after that), and the world exactly as labloop-sim computes it (sim/world.c: the
 * design response, the incubation gain, the reader's noise with labloop-sim's default sim_noise
 * of 0.002 AU), with each plate normalised against its controls by the engine's own functions
 * (daemon/campaign/layout.c: Z', then (x - mu_neg) / (mu_pos - mu_neg), the mean of 2 replicates).
 * It is not the daemon: no wire protocols, no scheduler, no store. The daemon-level closed loop
 * is exercised by tests/integration/test_campaign.c and deploy/demo.
 *
 * The world and the box are the demo's: sim_design = enzyme:42,activator:118,cofactor:17 (A =
 * 2.0), enzyme 0..120, activator 0..300, cofactor 0..60 uL; positive controls enzyme 20,
 * activator 60, cofactor 8 uL in A12..D12, negative controls (nothing) in E12..H12; 30 min at
 * 37 degC, read at 450 nm. A candidate's true value is its noise-free normalised value; the
 * optimum's is that of every design reagent at its OPT. Experiments are counted in the order
 * results arrive (a plate's candidates in their batch order); a method that does not get there
 * within its cap (150 experiments for the learner, 300 for random) counts as the cap and is
 * reported as "N+".
 *
 * The peer figure beside the random seeds: the fraction of the box at 95% or more of the
 * optimum (a fixed Monte Carlo estimate), hence random screening's expected median.
 *
 *   bench_closedloop [SEEDS [OPTION...]]    default 10 seeds; the options are the campaign's
 *   learner options (initial=N, acquisition=logei|ucb, ahead=1..4), and trace (each plate's
 *   best and candidates on stderr). */
#include "daemon/campaign/proposals.h"
#include "daemon/campaign/layout.h"
#include "sim/world.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DIM 3
#define BATCH 6
#define REPS 2
#define LEARNER_CAP 150
#define RANDOM_CAP 300
#define SEEDS_MAX 64
#define GOAL 0.95

static const char WORLD[] = "enzyme:42,activator:118,cofactor:17";
static const double NOISE_AU = 0.002; /* labloop-sim's default sim_noise (sim/config.c) */
static const double INCUBATE_C = 37, INCUBATE_S = 1800;
static const int READ_NM = 450;

/* The demo's campaign: its parameters (in sim_design's order) and controls. */
static const struct {
    const char *name;
    double max_ul, positive_ul;
} PARAMS[DIM] = {{"enzyme", 120, 20}, {"activator", 300, 60}, {"cofactor", 60, 8}};
static const char *const POSITIVE_WELLS[] = {"A12", "B12", "C12", "D12"};
static const char *const NEGATIVE_WELLS[] = {"E12", "F12", "G12", "H12"};
#define NCTRL 4

typedef struct options {
    int initial;             /* learner.initial, 0 = the learner's default */
    const char *acquisition; /* learner.acquisition, NULL = the default (log-EI) */
    int ahead;               /* learner.ahead: batches in flight, 1..4 (the default 2) */
    int trace;               /* each plate's candidates and best on stderr */
} options_t;

typedef struct world {
    sim_world_t *sim;
    int reagent[DIM]; /* index in the sim's reagents, by parameter */
    double pos_true;  /* the positive controls' design response */
    double goal;      /* true value at or above this: reached */
    int plates;
} world_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "bench_closedloop: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double s[SEEDS_MAX];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* ---- the world ---- */

static void world_init(world_t *w, uint64_t seed)
{
    char why[200];
    sim_world_init(w->sim, seed, NOISE_AU);
    if (sim_design_parse(WORLD, &w->sim->design, why, sizeof why))
        die("sim_design", why);
    w->sim->design.max_au = 2.0; /* sim_design_max's default */
    for (int d = 0; d < DIM; d++)
        w->reagent[d] = sim_world_reagent(w->sim, PARAMS[d].name);
    double pos[DIM], opt[DIM];
    for (int d = 0; d < DIM; d++) {
        pos[d] = PARAMS[d].positive_ul;
        opt[d] = w->sim->design.opt_ul[d];
    }
    /* normalised to the positive controls, the background and the incubation gain cancel */
    w->pos_true = sim_world_design(w->sim, pos);
    w->goal = GOAL * sim_world_design(w->sim, opt) / w->pos_true;
    w->plates = 0;
}

static double true_value(const world_t *w, const double *ul)
{
    return sim_world_design(w->sim, ul) / w->pos_true;
}

static void params_ul(json_t *params, double *ul)
{
    for (int d = 0; d < DIM; d++)
        ul[d] = json_number_value(json_object_get(params, PARAMS[d].name));
}

static void dispense(world_t *w, sim_plate_t *p, const char *well, const double *ul)
{
    int row, col;
    if (!lab_well_parse(well, 96, &row, &col))
        die("bad well", well);
    for (int d = 0; d < DIM; d++)
        sim_world_dispense(w->sim, p, row, col - 1, w->reagent[d], ul[d]);
}

static double read_well(const world_t *w, const sim_plate_t *p, const char *well)
{
    int row, col;
    lab_well_parse(well, 96, &row, &col);
    return sim_world_absorbance(w->sim, p, row, col - 1, READ_NM);
}

/* One plate of a batch's candidates, laid out as the engine does (best score first, REPS wells
 * each, column by column around the controls), dispensed, incubated and read in the simulator;
 * each candidate's value is the mean of its normalised replicates. */
static void plate_run(world_t *w, json_t *cands, double *value)
{
    int n = (int)json_array_size(cands), order[BATCH];
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = 1; i < n; i++) /* stable: by score, higher first */
        for (int k = i; k > 0; k--) {
            double a = json_number_value(json_object_get(json_array_get(cands, order[k]), "score"));
            double b =
                json_number_value(json_object_get(json_array_get(cands, order[k - 1]), "score"));
            if (!(a > b))
                break;
            int t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    json_t *pw = json_array(), *nw = json_array();
    for (int i = 0; i < NCTRL; i++) {
        json_array_append_new(pw, json_string(POSITIVE_WELLS[i]));
        json_array_append_new(nw, json_string(NEGATIVE_WELLS[i]));
    }
    char free_wells[96][LAB_WELL_NAME];
    int nfree = lab_layout_free_wells(96, pw, nw, free_wells, 96);
    json_decref(pw);
    json_decref(nw);
    if (nfree < n * REPS)
        die("the batch does not fit a plate", NULL);

    char barcode[32];
    snprintf(barcode, sizeof barcode, "SIM-%04d", ++w->plates);
    sim_plate_t *p = sim_world_plate(w->sim, barcode);
    if (!p)
        die("the simulated world is full", barcode);
    double ctrl[DIM];
    for (int d = 0; d < DIM; d++)
        ctrl[d] = PARAMS[d].positive_ul;
    for (int i = 0; i < NCTRL; i++)
        dispense(w, p, POSITIVE_WELLS[i], ctrl);
    for (int k = 0; k < n; k++) {
        double ul[DIM];
        params_ul(json_object_get(json_array_get(cands, order[k]), "params"), ul);
        for (int r = 0; r < REPS; r++)
            dispense(w, p, free_wells[k * REPS + r], ul);
    }
    sim_world_incubate(p, INCUBATE_C, INCUBATE_S);

    double pos[NCTRL], neg[NCTRL];
    for (int i = 0; i < NCTRL; i++) {
        pos[i] = read_well(w, p, POSITIVE_WELLS[i]);
        neg[i] = read_well(w, p, NEGATIVE_WELLS[i]);
    }
    lab_qc_t qc;
    char why[200];
    if (!lab_qc_compute(pos, NCTRL, neg, NCTRL, &qc, why, sizeof why))
        die("a plate cannot be normalised", why);
    if (!(qc.z_prime >= 0.5)) /* the campaign's default qc.z_prime_min */
        die("a plate failed QC", barcode);
    for (int k = 0; k < n; k++) {
        double s = 0;
        for (int r = 0; r < REPS; r++)
            s += lab_qc_normalise(&qc, read_well(w, p, free_wells[k * REPS + r]));
        value[order[k]] = s / REPS;
    }
}

/* ---- the two methods ---- */

static json_t *campaign_doc(uint64_t seed, const options_t *o)
{
    json_t *params = json_array();
    for (int d = 0; d < DIM; d++)
        json_array_append_new(params, json_pack("{s:s,s:s,s:f,s:f}", "name", PARAMS[d].name, "type",
                                                "volume", "min", 0.0, "max", PARAMS[d].max_ul));
    json_t *learner = json_pack("{s:s,s:I}", "kind", "builtin", "seed", (json_int_t)seed);
    if (o->initial)
        json_object_set_new(learner, "initial", json_integer(o->initial));
    if (o->acquisition)
        json_object_set_new(learner, "acquisition", json_string(o->acquisition));
    json_object_set_new(learner, "ahead", json_integer(o->ahead));
    return json_pack("{s:s,s:o,s:{s:s,s:s},s:i,s:{s:i},s:o}", "id", "bench-closedloop",
                     "parameters", params, "objective", "measure", "absorbance", "direction",
                     "maximize", "batch_size", BATCH, "budget", "candidates", LEARNER_CAP,
                     "learner", learner);
}

/* The engine's learner.ahead: proposals continue while fewer batches than this are in flight
 * (waiting for or on a plate), their candidates the pending points; then the oldest plate ends. */
static json_t *propose(json_t *camp, json_t *obs, json_t *const *flight, int nflight, int size,
                       int fit_no, int sobol_skip, double *seconds)
{
    json_t *pending = json_array();
    for (int f = 0; f < nflight; f++) {
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(flight[f], "candidates"), i, c)
        {
            json_array_append_new(pending,
                                  json_pack("{s:O}", "params", json_object_get(c, "params")));
        }
    }
    char err[200];
    lab_proposal_job_t *job =
        lab_proposal_job_new(camp, obs, pending, size, fit_no, sobol_skip, err, sizeof err);
    json_decref(pending);
    if (!job)
        die("the learner cannot start", err);
    double t0 = now_s();
    lab_proposal_job_run(job);
    *seconds += now_s() - t0;
    json_t *batch = lab_proposal_job_batch(job);
    if (!batch)
        die("the learner proposed nothing", lab_proposal_job_error(job));
    lab_proposal_job_free(job);
    return batch;
}

/* Experiments until the first true value at the goal, or LEARNER_CAP + 1 when not within the
 * cap. Adds the seconds and count of the learner's runs (the worker thread's part). */
static int run_learner(world_t *w, uint64_t seed, const options_t *o, double *best, double *seconds,
                       int *proposals)
{
    json_t *camp = campaign_doc(seed, o);
    json_t *obs = json_array(), *flight[4] = {NULL};
    int nflight = 0, nc = 0, done = 0, reached = 0;
    *best = 0;
    while (!reached) {
        while (nflight < o->ahead && nc < LEARNER_CAP) {
            int size = LEARNER_CAP - nc < BATCH ? LEARNER_CAP - nc : BATCH;
            json_t *b = propose(camp, obs, flight, nflight, size, ++*proposals, nc, seconds);
            flight[nflight++] = b;
            nc += size;
        }
        if (!nflight)
            break;
        json_t *cands = json_object_get(flight[0], "candidates");
        double value[BATCH], batch_best = 0;
        plate_run(w, cands, value);
        for (size_t k = 0; k < json_array_size(cands); k++) { /* results in batch order */
            json_t *params = json_object_get(json_array_get(cands, k), "params");
            json_array_append_new(obs, json_pack("{s:O,s:f}", "params", params, "value", value[k]));
            double ul[DIM];
            params_ul(params, ul);
            double t = true_value(w, ul);
            batch_best = t > batch_best ? t : batch_best;
            if (o->trace)
                fprintf(stderr, "    %5.1f %5.1f %5.1f uL: true %.3f, measured %.3f, score %.3f\n",
                        ul[0], ul[1], ul[2], t, value[k],
                        json_number_value(json_object_get(json_array_get(cands, k), "score")));
            done++;
            if (!reached && t >= w->goal)
                reached = done;
        }
        *best = batch_best > *best ? batch_best : *best;
        if (o->trace)
            fprintf(stderr, "  %s (%s, %d observed): best %.1f%% of the optimum, so far %.1f%%\n",
                    json_string_value(json_object_get(flight[0], "batch")),
                    json_string_value(json_object_get(json_object_get(flight[0], "fit"), "design")),
                    (int)json_integer_value(
                        json_object_get(json_object_get(flight[0], "fit"), "observations")),
                    100 * GOAL * batch_best / w->goal, 100 * GOAL * *best / w->goal);
        json_decref(flight[0]);
        memmove(flight, flight + 1, (size_t)--nflight * sizeof *flight);
    }
    for (int f = 0; f < nflight; f++)
        json_decref(flight[f]);
    json_decref(obs);
    json_decref(camp);
    return reached ? reached : LEARNER_CAP + 1;
}

static double uniform_ul(uint64_t *s, double max_ul)
{
    double v = (double)(splitmix(s) >> 11) * 0x1.0p-53 * max_ul;
    return round(v * 10) / 10; /* the liquid handler's 0.1 uL, as the learner's proposals */
}

/* Experiments until the first true value at the goal, or RANDOM_CAP + 1. */
static int run_random(const world_t *w, uint64_t seed, double *best)
{
    uint64_t s = seed;
    *best = 0;
    for (int i = 1; i <= RANDOM_CAP; i++) {
        double ul[DIM];
        for (int d = 0; d < DIM; d++)
            ul[d] = uniform_ul(&s, PARAMS[d].max_ul);
        double t = true_value(w, ul);
        *best = t > *best ? t : *best;
        if (t >= w->goal)
            return i;
    }
    return RANDOM_CAP + 1;
}

/* The fraction of the box at the goal, from a fixed stream of uniform points. */
static double goal_fraction(const world_t *w)
{
    enum { SAMPLES = 2000000 };
    uint64_t s = 12345;
    long hits = 0;
    for (long i = 0; i < SAMPLES; i++) {
        double ul[DIM];
        for (int d = 0; d < DIM; d++)
            ul[d] = (double)(splitmix(&s) >> 11) * 0x1.0p-53 * PARAMS[d].max_ul;
        hits += true_value(w, ul) >= w->goal;
    }
    return (double)hits / SAMPLES;
}

/* ---- the figures ---- */

/* A count as JSON: the number, or "N+" when it stands for a method that had not got there. */
static void put_count(char *out, size_t cap, double v, int capped)
{
    snprintf(out, cap, capped ? "\"%g+\"" : "%g", v);
}

/* The median of counts, a capped one counting as its cap; *capped when that makes it a lower
 * bound (a capped count at the middle). */
static double median_count(const double *v, int n, int limit, int *capped)
{
    double s[SEEDS_MAX];
    for (int i = 0; i < n; i++)
        s[i] = v[i] > limit ? limit : v[i];
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    double above[SEEDS_MAX];
    memcpy(above, v, (size_t)n * sizeof *above);
    qsort(above, (size_t)n, sizeof *above, cmp_double);
    *capped = above[n / 2] > limit;
    return m;
}

static int parse_options(int argc, char **argv, int *seeds, options_t *o)
{
    *seeds = argc > 1 ? atoi(argv[1]) : 10;
    if (*seeds < 1 || *seeds > SEEDS_MAX)
        return -1;
    for (int i = 2; i < argc; i++) {
        if (strncmp(argv[i], "initial=", 8) == 0)
            o->initial = atoi(argv[i] + 8);
        else if (strncmp(argv[i], "ahead=", 6) == 0)
            o->ahead = atoi(argv[i] + 6);
        else if (strcmp(argv[i], "trace") == 0)
            o->trace = 1;
        else if (strcmp(argv[i], "acquisition=logei") == 0 ||
                 strcmp(argv[i], "acquisition=ucb") == 0)
            o->acquisition = argv[i] + 12;
        else
            return -1;
        if (o->initial < 0 || o->ahead < 1 || o->ahead > 4)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int seeds;
    options_t o = {.ahead = 2};
    if (parse_options(argc, argv, &seeds, &o)) {
        fprintf(stderr,
                "usage: bench_closedloop [SEEDS 1..%d [initial=N] [acquisition=logei|ucb] "
                "[ahead=1..4] [trace]]\n",
                SEEDS_MAX);
        return 2;
    }
    world_t w = {.sim = malloc(sizeof(sim_world_t))};
    if (!w.sim)
        die("out of memory", NULL);
    double learner[SEEDS_MAX], random[SEEDS_MAX], ratio[SEEDS_MAX], secs[SEEDS_MAX];
    int props_all = 0, reached_l = 0, reached_r = 0;
    for (int s = 0; s < seeds; s++) {
        uint64_t seed = 1 + (uint64_t)s;
        double seconds = 0, best_l, best_r;
        int props = 0;
        world_init(&w, seed);
        learner[s] = run_learner(&w, seed, &o, &best_l, &seconds, &props);
        random[s] = run_random(&w, seed, &best_r);
        reached_l += learner[s] <= LEARNER_CAP;
        reached_r += random[s] <= RANDOM_CAP;
        ratio[s] = (random[s] > RANDOM_CAP ? RANDOM_CAP : random[s]) /
                   (learner[s] > LEARNER_CAP ? LEARNER_CAP : learner[s]);
        secs[s] = seconds / props;
        props_all += props;
        fprintf(stderr,
                "seed %d: learner %d experiments (%d proposals, %.3f s each, best %.1f%% of "
                "the optimum), random %d (best %.1f%%), ratio %.2f\n",
                (int)seed, (int)learner[s], props, secs[s], 100 * best_l / (w.goal / GOAL),
                (int)random[s], 100 * best_r / (w.goal / GOAL), ratio[s]);
    }
    int lower_l, lower_r;
    double lm = median_count(learner, seeds, LEARNER_CAP, &lower_l);
    double rm = median_count(random, seeds, RANDOM_CAP, &lower_r);
    double lw = learner[0], rw = random[0], sw = secs[0];
    for (int s = 1; s < seeds; s++) {
        lw = learner[s] > lw ? learner[s] : lw;
        rw = random[s] > rw ? random[s] : rw;
        sw = secs[s] > sw ? secs[s] : sw;
    }
    double acc = rm / lm, rat = median(ratio, seeds);
    char lm_s[32], lw_s[32], rm_s[32], rw_s[32];
    put_count(lm_s, sizeof lm_s, lm, lower_l);
    put_count(lw_s, sizeof lw_s, lw > LEARNER_CAP ? LEARNER_CAP : lw, lw > LEARNER_CAP);
    put_count(rm_s, sizeof rm_s, rm, lower_r);
    put_count(rw_s, sizeof rw_s, rw > RANDOM_CAP ? RANDOM_CAP : rw, rw > RANDOM_CAP);
    char learner_opts[96];
    snprintf(learner_opts, sizeof learner_opts, "\"initial\":%d,\"acquisition\":\"%s\"",
             o.initial ? o.initial : 2 * (DIM + 1), o.acquisition ? o.acquisition : "logei");
    /* the acceleration is a lower bound when random's median is capped, an upper one when the
     * learner's is */
    const char *bound = lower_r && lower_l ? "unknown"
                        : lower_r          ? "lower"
                        : lower_l          ? "upper"
                                           : "none";
    printf("{\"bench\":\"closedloop\",\"world\":\"sim_design %s\",\"box_ul\":\"enzyme 0..120, "
           "activator 0..300, cofactor 0..60\",\"noise_au\":%g,\"batch\":%d,\"ahead\":%d,%s,"
           "\"seeds\":%d,\"goal\":\"%g of the optimum\",\"learner_median\":%s,"
           "\"learner_worst\":%s,\"learner_reached\":%d,\"random_median\":%s,"
           "\"random_worst\":%s,\"random_reached\":%d,\"acceleration\":%.2f,"
           "\"acceleration_bound\":\"%s\",\"ratio_median\":%.2f,\"target\":6,\"met\":%s}\n",
           WORLD, NOISE_AU, BATCH, o.ahead, learner_opts, seeds, GOAL, lm_s, lw_s, reached_l, rm_s,
           rw_s, reached_r, acc, bound, rat, acc >= 6 && !lower_l ? "true" : "false");
    fflush(stdout);

    double frac = goal_fraction(&w);
    double expected = frac > 0 ? ceil(log(0.5) / log1p(-frac)) : INFINITY;
    printf("{\"bench\":\"closedloop\",\"figure\":\"random_expected\",\"goal_fraction_of_box\":"
           "%.5f,\"random_expected_median\":%g,\"random_expected_mean\":%.0f,"
           "\"acceleration_vs_expected_median\":%.2f}\n",
           frac, expected, frac > 0 ? 1 / frac : INFINITY, expected / lm);
    fflush(stdout);

    printf("{\"bench\":\"closedloop\",\"figure\":\"proposal_seconds\",\"proposals\":%d,"
           "\"seconds_per_proposal_median_of_seeds\":%.3f,\"seconds_per_proposal_worst_seed\":"
           "%.3f}\n",
           props_all, median(secs, seeds), sw);
    fflush(stdout);
    free(w.sim);
    return 0;
}
