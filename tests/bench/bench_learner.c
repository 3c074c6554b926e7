/* Benchmark: the built-in learner on the standard test functions, beside uniform random search
 * with the same evaluations and seeds. Branin (2-D, 50 evaluations) and Hartmann-6 (100
 * evaluations), minimised in batches of 5 from a Sobol start, 10 seeds each: median and worst
 * regret after the last evaluation and how many seeds reach the target (0.01 and 0.05); "met"
 * is the median's verdict. Then the time of one
 * fit + propose with 500 observations in 6-D (batch 5), cold and warm-started, median of a few
 * repetitions, beside one Cholesky of the same 500 x 500 covariance as the peer figure.
 *
 *   bench_learner [SEEDS [WHICH [FIRST]]]
 *
 * default 10 seeds from 1000; WHICH: branin, hartmann6, time or all. A rate such as Hartmann-6's
 * share of seeds on the second-best peak needs more than 10 seeds, and a second set of seeds
 * (FIRST 2000, say) shows whether a change helped or only suited the first set. */
#include "learner/learner.h"
#include "learner/sobol.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info,
                    size_t uplo_len);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double worst(const double *v, int n)
{
    double w = v[0];
    for (int i = 1; i < n; i++)
        w = v[i] > w ? v[i] : w;
    return w;
}

/* Branin on [-5,10] x [0,15], minimum 0.397887 at three points. */
static double branin(const double *u)
{
    double x1 = -5.0 + 15.0 * u[0], x2 = 15.0 * u[1];
    double b = 5.1 / (4.0 * M_PI * M_PI), c = 5.0 / M_PI, t = 1.0 / (8.0 * M_PI);
    double q = x2 - b * x1 * x1 + c * x1 - 6.0;
    return q * q + 10.0 * (1.0 - t) * cos(x1) + 10.0;
}

/* Hartmann-6 on [0,1]^6, minimum -3.32237. */
static double hartmann6(const double *x)
{
    static const double al[4] = {1.0, 1.2, 3.0, 3.2};
    static const double A[4][6] = {{10, 3, 17, 3.5, 1.7, 8},
                                   {0.05, 10, 17, 0.1, 8, 14},
                                   {3, 3.5, 1.7, 10, 17, 8},
                                   {17, 8, 0.05, 10, 0.1, 14}};
    static const double P[4][6] = {{1312, 1696, 5569, 124, 8283, 5886},
                                   {2329, 4135, 8307, 3736, 1004, 9991},
                                   {2348, 1451, 3522, 2883, 3047, 6650},
                                   {4047, 8828, 8732, 5743, 1091, 381}};
    double f = 0;
    for (int i = 0; i < 4; i++) {
        double s = 0;
        for (int j = 0; j < 6; j++) {
            double q = x[j] - 1e-4 * P[i][j];
            s += A[i][j] * q * q;
        }
        f -= al[i] * exp(-s);
    }
    return f;
}

typedef struct problem {
    const char *name;
    int dim, evaluations;
    double optimum, target;
    double (*f)(const double *);
} problem_t;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* One learner run: regret after the last evaluation. */
static double run_learner(const problem_t *pr, uint64_t seed, int batch, double *seconds)
{
    int dim = pr->dim, total = pr->evaluations, n = 0, skip = 0;
    double *x = malloc((size_t)total * dim * sizeof *x), *y = malloc((size_t)total * sizeof *y);
    double best = INFINITY, theta[23];
    int have_theta = 0;
    lab_learner_point_t out[64];
    double t0 = now_s();
    while (n < total) {
        lab_learner_fit_t fit;
        char err[256];
        lab_learner_problem_t p = {.dim = dim,
                                   .n = n,
                                   .x = x,
                                   .y = y,
                                   .batch = total - n < batch ? total - n : batch,
                                   .sobol_skip = skip,
                                   .seed = seed,
                                   .acq = LAB_LEARNER_ACQ_LOGEI,
                                   .theta0 = have_theta ? theta : NULL};
        if (lab_learner_propose(&p, out, &fit, err, sizeof err)) {
            fprintf(stderr, "bench_learner: %s seed %llu: %s\n", pr->name, (unsigned long long)seed,
                    err);
            exit(1);
        }
        skip += fit.sobol_used;
        if (!fit.from_sobol) {
            memcpy(theta, fit.theta, sizeof theta);
            have_theta = 1;
        }
        for (int b = 0; b < p.batch; b++) {
            double v = pr->f(out[b].x);
            memcpy(x + (size_t)n * dim, out[b].x, (size_t)dim * sizeof *x);
            y[n++] = -v; /* the learner maximises */
            best = v < best ? v : best;
        }
    }
    *seconds = now_s() - t0;
    free(x);
    free(y);
    return best - pr->optimum;
}

static double run_random(const problem_t *pr, uint64_t seed)
{
    double best = INFINITY, u[20];
    uint64_t s = seed;
    for (int i = 0; i < pr->evaluations; i++) {
        for (int d = 0; d < pr->dim; d++)
            u[d] = (double)(splitmix(&s) >> 11) * 0x1.0p-53;
        double v = pr->f(u);
        best = v < best ? v : best;
    }
    return best - pr->optimum;
}

static void bench_problem(const problem_t *pr, int seeds, uint64_t first)
{
    const int batch = 5;
    double reg[64] = {0}, rnd[64] = {0}, secs[64] = {0};
    for (int s = 0; s < seeds; s++) {
        uint64_t seed = first + (uint64_t)s;
        reg[s] = run_learner(pr, seed, batch, &secs[s]);
        rnd[s] = run_random(pr, seed);
        fprintf(stderr, "%s seed %d: regret %.3g (random %.3g) in %.1f s\n", pr->name, s, reg[s],
                rnd[s], secs[s]);
    }
    double rw = worst(reg, seeds), rm = median(reg, seeds);
    double qw = worst(rnd, seeds), qm = median(rnd, seeds), tm = median(secs, seeds);
    int within = 0;
    for (int s = 0; s < seeds; s++)
        within += reg[s] <= pr->target;
    printf("{\"bench\":\"learner\",\"problem\":\"%s\",\"evaluations\":%d,\"batch\":%d,"
           "\"seeds\":%d,\"first_seed\":%llu,\"regret_median\":%.3g,\"regret_worst\":%.3g,"
           "\"random_regret_median\":%.3g,\"random_regret_worst\":%.3g,"
           "\"seeds_within_target\":%d,\"seconds_per_run_median\":%.2f,\"target\":%g,"
           "\"met\":%s}\n",
           pr->name, pr->evaluations, batch, seeds, (unsigned long long)first, rm, rw, qm, qw,
           within, tm, pr->target, rm <= pr->target ? "true" : "false");
    fflush(stdout);
}

/* Fit + propose with 500 observations of Hartmann-6 at Sobol points, batch 5. */
static void bench_time(void)
{
    enum { N = 500, DIM = 6, REPS = 3 };
    static double x[N * DIM], y[N];
    lab_sobol_t s;
    lab_sobol_init(&s, DIM, 77);
    for (int i = 0; i < N; i++) {
        lab_sobol_next(&s, x + i * DIM);
        y[i] = -hartmann6(x + i * DIM);
    }
    lab_learner_point_t out[5];
    lab_learner_fit_t fit;
    char err[256];
    double cold[REPS], warm[REPS], chol[REPS * 3], theta[23];
    for (int r = 0; r < REPS; r++) {
        lab_learner_problem_t p = {.dim = DIM, .n = N, .x = x, .y = y, .batch = 5, .seed = 5 + r};
        double t0 = now_s();
        if (lab_learner_propose(&p, out, &fit, err, sizeof err)) {
            fprintf(stderr, "bench_learner: timing: %s\n", err);
            exit(1);
        }
        cold[r] = now_s() - t0;
        fprintf(stderr, "500 x 6-D cold: %.3f s, %d restarts, %d evaluations\n", cold[r],
                fit.restarts, fit.evaluations);
        memcpy(theta, fit.theta, sizeof theta);
        p.theta0 = theta;
        p.seed += 100;
        t0 = now_s();
        if (lab_learner_propose(&p, out, &fit, err, sizeof err)) {
            fprintf(stderr, "bench_learner: timing: %s\n", err);
            exit(1);
        }
        warm[r] = now_s() - t0;
        fprintf(stderr, "500 x 6-D warm: %.3f s, %d restarts, %d evaluations\n", warm[r],
                fit.restarts, fit.evaluations);
    }
    /* the peer: one Cholesky of the covariance at the fitted hyperparameters */
    double *K = malloc(sizeof(double) * N * N), *K0 = malloc(sizeof(double) * N * N);
    for (int j = 0; j < N; j++)
        for (int i = 0; i < N; i++)
            K0[i + j * N] = lab_learner_kernel(DIM, theta, x + i * DIM, x + j * DIM, NULL) +
                            (i == j ? exp(theta[DIM + 1]) + fit.jitter : 0);
    for (int r = 0; r < REPS * 3; r++) {
        memcpy(K, K0, sizeof(double) * N * N);
        int n = N, info;
        double t0 = now_s();
        dpotrf_("L", &n, K, &n, &info, 1);
        chol[r] = now_s() - t0;
        if (info)
            fprintf(stderr, "bench_learner: peer Cholesky info %d\n", info);
    }
    free(K);
    free(K0);
    double cm = median(cold, REPS), wm = median(warm, REPS), hm = median(chol, REPS * 3);
    printf("{\"bench\":\"learner\",\"problem\":\"fit_propose_time\",\"observations\":%d,"
           "\"dim\":%d,\"batch\":5,\"repetitions\":%d,\"seconds_median\":%.3f,"
           "\"warm_seconds_median\":%.3f,\"cholesky_seconds_median\":%.4f,"
           "\"ratio_to_cholesky\":%.0f,\"target\":2,\"met\":%s}\n",
           N, DIM, REPS, cm, wm, hm, cm / hm, cm <= 2.0 ? "true" : "false");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int seeds = argc > 1 ? atoi(argv[1]) : 10;
    uint64_t first = argc > 3 ? strtoull(argv[3], NULL, 10) : 1000;
    if (seeds < 1 || seeds > 64) {
        fprintf(stderr, "usage: bench_learner [SEEDS 1..64 [WHICH [FIRST]]]\n");
        return 2;
    }
    const problem_t branin_p = {"branin", 2, 50, 0.397887, 0.01, branin};
    const problem_t hartmann_p = {"hartmann6", 6, 100, -3.32237, 0.05, hartmann6};
    const char *which = argc > 2 && strcmp(argv[2], "all") != 0 ? argv[2] : NULL;
    if (!which || strcmp(which, "branin") == 0)
        bench_problem(&branin_p, seeds, first);
    if (!which || strcmp(which, "hartmann6") == 0)
        bench_problem(&hartmann_p, seeds, first);
    if (!which || strcmp(which, "time") == 0)
        bench_time();
    return 0;
}
