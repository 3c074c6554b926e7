/* The learner and its Sobol design: the published Joe–Kuo points and their stratification, the
 * kernel's and the log posterior's gradients against finite differences, MAP lengthscales that
 * follow the data, a posterior that interpolates noise-free data, log-EI far below the
 * incumbent, Kriging believer batches that neither repeat nor bunch, refusals with a reason and
 * a core/err.h code that says which kind, determinism, and a small problem actually optimised.
 * Links the learner library alone. */
#include "learner/learner.h"
#include "learner/sobol.h"

#include "core/err.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static double dist(const double *a, const double *b, int dim)
{
    double s = 0;
    for (int d = 0; d < dim; d++)
        s += (a[d] - b[d]) * (a[d] - b[d]);
    return sqrt(s);
}

/* Deterministic pseudo-random numbers for test data. */
static double unit_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) * 0x1.0p-53;
}

static void sobol_points(int dim, uint64_t seed, int n, double *x)
{
    lab_sobol_t s;
    assert_int_equal(lab_sobol_init(&s, dim, seed), 0);
    for (int i = 0; i < n; i++)
        lab_sobol_next(&s, x + (size_t)i * dim);
}

static void test_sobol_joe_kuo_points(void **state)
{
    /* The first eight points of the unshifted sequence in dimensions 1..3, as published. */
    static const double want[8][3] = {
        {0, 0, 0},
        {0.5, 0.5, 0.5},
        {0.75, 0.25, 0.25},
        {0.25, 0.75, 0.75},
        {0.375, 0.375, 0.625},
        {0.875, 0.875, 0.125},
        {0.625, 0.125, 0.875},
        {0.125, 0.625, 0.375},
    };
    for (int dim = 1; dim <= 3; dim++) {
        double x[8 * 3];
        sobol_points(dim, 0, 8, x);
        for (int i = 0; i < 8; i++)
            for (int d = 0; d < dim; d++)
                if (x[i * dim + d] != want[i][d])
                    fail_msg("dim %d point %d coordinate %d: %g, published %g", dim, i, d,
                             x[i * dim + d], want[i][d]);
    }
    /* skip(k) lands where k calls to next() do */
    lab_sobol_t a, b;
    lab_sobol_init(&a, 5, 99);
    lab_sobol_init(&b, 5, 99);
    double pa[5], pb[5];
    for (int i = 0; i < 37; i++)
        lab_sobol_next(&a, pa);
    lab_sobol_skip(&b, 37);
    lab_sobol_next(&a, pa);
    lab_sobol_next(&b, pb);
    assert_memory_equal(pa, pb, sizeof pa);
    assert_int_equal(lab_sobol_init(&a, 0, 0), LAB_EINVAL);
    assert_int_equal(lab_sobol_init(&a, 21, 0), LAB_EINVAL);
}

static void test_sobol_stratified(void **state)
{
    /* 256 points of a (0,m,s)-net: each 1-D projection has exactly one point in every interval
     * of width 1/256, with or without the digital shift, and no two points coincide. */
    enum { N = 256, DIM = 20 };
    static double x[N * DIM];
    uint64_t seeds[] = {0, 12345};
    for (int k = 0; k < 2; k++) {
        sobol_points(DIM, seeds[k], N, x);
        for (int d = 0; d < DIM; d++) {
            int seen[N] = {0};
            for (int i = 0; i < N; i++) {
                double v = x[i * DIM + d];
                assert_true(v >= 0.0 && v < 1.0);
                int cell = (int)(v * N);
                if (seen[cell]++)
                    fail_msg("seed %llu dim %d: two points in cell %d",
                             (unsigned long long)seeds[k], d, cell);
            }
        }
        for (int i = 0; i < N; i++)
            for (int j = 0; j < i; j++)
                assert_true(dist(x + i * DIM, x + j * DIM, DIM) > 0);
    }
    /* a 2-D projection is stratified too: 16 x 16 boxes hold one point each */
    sobol_points(DIM, 7, N, x);
    int box[16][16] = {{0}};
    for (int i = 0; i < N; i++)
        box[(int)(x[i * DIM] * 16)][(int)(x[i * DIM + 1] * 16)]++;
    for (int a = 0; a < 16; a++)
        for (int b = 0; b < 16; b++)
            assert_int_equal(box[a][b], 1);
}

static void test_kernel_gradient(void **state)
{
    uint64_t s = 3;
    for (int trial = 0; trial < 20; trial++) {
        int dim = 1 + trial % 5;
        double a[5], b[5], theta[6], g[6];
        for (int d = 0; d < dim; d++) {
            a[d] = unit_rand(&s);
            b[d] = unit_rand(&s);
            theta[d] = log(0.1 + unit_rand(&s));
        }
        theta[dim] = log(0.5 + unit_rand(&s));
        double k = lab_learner_kernel(dim, theta, a, b, g);
        assert_true(k > 0 && k <= exp(theta[dim]));
        for (int t = 0; t <= dim; t++) {
            double h = 1e-6, tp[6], tm[6];
            memcpy(tp, theta, sizeof tp);
            memcpy(tm, theta, sizeof tm);
            tp[t] += h;
            tm[t] -= h;
            double fd = (lab_learner_kernel(dim, tp, a, b, NULL) -
                         lab_learner_kernel(dim, tm, a, b, NULL)) /
                        (2 * h);
            if (fabs(fd - g[t]) > 1e-6 * (1.0 + fabs(fd)))
                fail_msg("dim %d theta[%d]: analytic %.10g, finite difference %.10g", dim, t, g[t],
                         fd);
        }
    }
    /* at zero distance: the signal variance, and no lengthscale dependence */
    double a[2] = {0.3, 0.7}, theta[3] = {log(0.2), log(0.4), log(1.7)}, g[3];
    assert_true(fabs(lab_learner_kernel(2, theta, a, a, g) - 1.7) < 1e-12);
    assert_true(g[0] == 0 && g[1] == 0);
}

static void test_log_posterior_gradient(void **state)
{
    enum { N = 25, DIM = 3 };
    double x[N * DIM], y[N];
    uint64_t s = 11;
    for (int i = 0; i < N; i++) {
        for (int d = 0; d < DIM; d++)
            x[i * DIM + d] = unit_rand(&s);
        y[i] = sin(6 * x[i * DIM]) + x[i * DIM + 1] * x[i * DIM + 2] + 0.05 * unit_rand(&s);
    }
    lab_learner_problem_t p = {.dim = DIM, .n = N, .x = x, .y = y, .batch = 1};
    double thetas[2][DIM + 2] = {{log(0.3), log(0.8), log(1.5), log(1.2), log(1e-2)},
                                 {log(2.0), log(0.1), log(0.5), log(0.3), log(1e-4)}};
    for (int k = 0; k < 2; k++) {
        double v, g[DIM + 2];
        char err[128];
        if (lab_learner_log_posterior(&p, thetas[k], &v, g, err, sizeof err))
            fail_msg("%s", err);
        for (int t = 0; t < DIM + 2; t++) {
            double h = 1e-5, tp[DIM + 2], tm[DIM + 2], vp, vm;
            memcpy(tp, thetas[k], sizeof tp);
            memcpy(tm, thetas[k], sizeof tm);
            tp[t] += h;
            tm[t] -= h;
            assert_int_equal(lab_learner_log_posterior(&p, tp, &vp, NULL, err, sizeof err), 0);
            assert_int_equal(lab_learner_log_posterior(&p, tm, &vm, NULL, err, sizeof err), 0);
            double fd = (vp - vm) / (2 * h);
            if (fabs(fd - g[t]) > 1e-4 * (1.0 + fabs(fd)))
                fail_msg("theta set %d component %d: analytic %.8g, finite difference %.8g", k, t,
                         g[t], fd);
        }
    }
}

/* 2-D data varying fast along x0 and not at all along x1; the fit via a one-point proposal. */
static void test_map_lengthscales(void **state)
{
    enum { N = 40, DIM = 2 };
    double x[N * DIM], y[N];
    sobol_points(DIM, 21, N, x);
    for (int i = 0; i < N; i++)
        y[i] = sin(10.0 * x[i * DIM]);
    lab_learner_problem_t p = {.dim = DIM, .n = N, .x = x, .y = y, .batch = 1, .seed = 4};
    lab_learner_point_t out[1];
    lab_learner_fit_t fit;
    char err[128];
    if (lab_learner_propose(&p, out, &fit, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(fit.from_sobol, 0);
    assert_true(fit.restarts >= 2);
    /* the flat axis goes to the cap, the cube's diagonal */
    if (!(fit.lengthscale[0] < 0.6 && fit.lengthscale[1] > 0.99 * sqrt((double)DIM) &&
          fit.lengthscale[1] <= sqrt((double)DIM) * (1 + 1e-9)))
        fail_msg("lengthscales %g (varying axis) and %g (flat axis)", fit.lengthscale[0],
                 fit.lengthscale[1]);
    /* noise-free data: the noise stays small */
    assert_true(fit.noise_var < 1e-3);
    assert_true(fabs(fit.lengthscale[0] - exp(fit.theta[0])) < 1e-12);
    assert_true(isfinite(fit.log_posterior));
}

static void test_interpolates(void **state)
{
    enum { N = 30, DIM = 3 };
    double x[N * DIM], y[N];
    sobol_points(DIM, 5, N, x);
    for (int i = 0; i < N; i++)
        y[i] = 100.0 + 20.0 * (cos(3 * x[i * DIM]) + x[i * DIM + 1] - x[i * DIM + 2] * x[i * DIM]);
    lab_learner_problem_t p = {.dim = DIM, .n = N, .x = x, .y = y, .batch = 2, .seed = 9};
    lab_learner_point_t out[2];
    lab_learner_fit_t fit;
    char err[128];
    if (lab_learner_propose(&p, out, &fit, err, sizeof err))
        fail_msg("%s", err);
    double mean[N], sd[N];
    if (lab_learner_predict(&p, &fit, N, x, mean, sd, err, sizeof err))
        fail_msg("%s", err);
    for (int i = 0; i < N; i++) {
        if (fabs(mean[i] - y[i]) > 1e-3 * fit.y_sd)
            fail_msg("point %d: mean %.8g, observed %.8g", i, mean[i], y[i]);
        assert_true(sd[i] < 0.02 * fit.y_sd);
    }
    /* away from the data the posterior is less sure; proposals carry the same posterior */
    double far[DIM] = {0.999, 0.001, 0.999}, fm, fs;
    assert_int_equal(lab_learner_predict(&p, &fit, 1, far, &fm, &fs, err, sizeof err), 0);
    assert_true(fs > 10 * sd[0]);
    for (int b = 0; b < 2; b++) {
        double m1, s1;
        assert_int_equal(lab_learner_predict(&p, &fit, 1, out[b].x, &m1, &s1, err, sizeof err), 0);
        assert_true(fabs(m1 - out[b].mean) < 1e-9 * (1 + fabs(m1)));
        assert_true(fabs(s1 - out[b].sd) < 1e-9 * (1 + s1));
    }
}

static double direct_log_h(double z)
{
    double phi = exp(-0.5 * z * z) / sqrt(2 * M_PI), Phi = 0.5 * erfc(-z / sqrt(2.0));
    return log(phi + z * Phi);
}

static void test_log_ei_far_below(void **state)
{
    /* where the direct formula is still accurate, they agree */
    double zs[] = {3.0, 0.5, 0.0, -0.99, -1.0, -2.0, -4.0, -8.0};
    for (size_t i = 0; i < sizeof zs / sizeof zs[0]; i++)
        if (fabs(lab_learner_log_h(zs[i]) - direct_log_h(zs[i])) > 1e-9)
            fail_msg("z %g: %.12g, direct %.12g", zs[i], lab_learner_log_h(zs[i]),
                     direct_log_h(zs[i]));
    /* far below: finite and strictly decreasing, where the direct formula gives -inf */
    assert_true(isinf(direct_log_h(-40.0)));
    double prev = lab_learner_log_h(-1.0);
    for (double z = -1.1; z > -1e12; z *= 1.1) {
        double v = lab_learner_log_h(z);
        if (!isfinite(v) || !(v < prev))
            fail_msg("z %g: log h %g after %g", z, v, prev);
        prev = v;
    }
    assert_true(isfinite(lab_learner_log_h(-1e200)));
    /* continuous where the method changes, and on the asymptote far out */
    assert_true(fabs(lab_learner_log_h(-12.0 + 1e-9) - lab_learner_log_h(-12.0 - 1e-9)) < 1e-6);
    double z = -1e4;
    double asym = -0.5 * z * z - 0.5 * log(2 * M_PI) - 2 * log(-z);
    assert_true(fabs(lab_learner_log_h(z) - asym) < 1e-6);
}

/* A smooth 2-D function with its maximum inside the square. */
static double bump(const double *x)
{
    return exp(-8.0 * ((x[0] - 0.3) * (x[0] - 0.3) + (x[1] - 0.6) * (x[1] - 0.6))) +
           0.3 * sin(5.0 * x[0]);
}

static void test_believer_pending_and_spread(void **state)
{
    enum { N = 12, DIM = 2, B = 8 };
    double x[N * DIM], y[N];
    sobol_points(DIM, 8, N, x);
    for (int i = 0; i < N; i++)
        y[i] = bump(x + i * DIM);
    lab_learner_problem_t p = {.dim = DIM, .n = N, .x = x, .y = y, .batch = 1, .seed = 2};
    lab_learner_point_t one[1], again[1], batch[B];
    char err[128];
    assert_int_equal(lab_learner_propose(&p, one, NULL, err, sizeof err), 0);
    /* the same problem with that point pending must go elsewhere */
    p.n_pending = 1;
    p.pending = one[0].x;
    assert_int_equal(lab_learner_propose(&p, again, NULL, err, sizeof err), 0);
    if (dist(one[0].x, again[0].x, DIM) < 1e-3)
        fail_msg("proposed the pending point again: (%g, %g)", again[0].x[0], again[0].x[1]);
    /* a batch: no repeats of each other, of the data or of the pending point */
    p.batch = B;
    assert_int_equal(lab_learner_propose(&p, batch, NULL, err, sizeof err), 0);
    for (int b = 0; b < B; b++) {
        for (int d = 0; d < DIM; d++)
            assert_true(batch[b].x[d] >= 0.0 && batch[b].x[d] <= 1.0);
        assert_true(dist(batch[b].x, one[0].x, DIM) > 1e-3);
        for (int i = 0; i < N; i++)
            assert_true(dist(batch[b].x, x + i * DIM, DIM) > 1e-3);
        for (int c = 0; c < b; c++)
            if (dist(batch[b].x, batch[c].x, DIM) < 1e-3)
                fail_msg("batch points %d and %d coincide", c, b);
        assert_true(isfinite(batch[b].acq) && batch[b].sd > 0);
    }
    /* spread: the batch is not one cluster */
    double span = 0;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < b; c++)
            span = fmax(span, dist(batch[b].x, batch[c].x, DIM));
    assert_true(span > 0.1);
}

static void test_bad_input(void **state)
{
    double x[4] = {0.1, 0.2, 0.3, 0.4}, y[2] = {1.0, 2.0}, pend[2] = {0.5, 0.5};
    lab_learner_point_t out[2];
    char err[128];
    struct {
        lab_learner_problem_t p;
        const char *reason;
    } cases[] = {
        {{.dim = 0, .n = 2, .x = x, .y = y, .batch = 1}, "dim"},
        {{.dim = 21, .n = 2, .x = x, .y = y, .batch = 1}, "dim"},
        {{.dim = 2, .n = 2, .x = x, .y = (double[]){1.0, NAN}, .batch = 1}, "y[1]"},
        {{.dim = 2, .n = 2, .x = x, .y = (double[]){INFINITY, 1.0}, .batch = 1}, "y[0]"},
        {{.dim = 2, .n = 2, .x = (double[]){0.1, 1.5, 0.2, 0.2}, .y = y, .batch = 1}, "x[0][1]"},
        {{.dim = 2, .n = 2, .x = (double[]){0.1, 0.5, NAN, 0.2}, .y = y, .batch = 1}, "x[1][0]"},
        {{.dim = 2,
          .n = 2,
          .x = x,
          .y = y,
          .n_pending = 1,
          .pending = (double[]){-0.1, 0.5},
          .batch = 1},
         "pending[0][0]"},
        {{.dim = 2, .n = 2, .x = x, .y = y, .batch = 0}, "batch"},
        {{.dim = 2, .n = 2, .x = x, .y = y, .batch = 65}, "batch"},
        {{.dim = 2, .n = 2, .x = x, .y = NULL, .batch = 1}, "no y"},
        {{.dim = 2, .n = 2, .x = x, .y = y, .batch = 1, .acq = 7}, "acquisition"},
        {{.dim = 2, .n = 2, .x = x, .y = y, .batch = 1, .ucb_beta = -1}, "ucb_beta"},
        {{.dim = 2, .n = -1, .x = x, .y = y, .batch = 1}, "n -1"},
        {{.dim = 2, .n = 2, .x = x, .y = y, .batch = 1, .theta0 = (double[]){0, NAN, 0, 0}},
         "theta0[1]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        int rc = lab_learner_propose(&cases[i].p, out, NULL, err, sizeof err);
        if (rc != LAB_EINVAL)
            fail_msg("case %zu: %d (%s), not LAB_EINVAL", i, rc, lab_strerror(rc));
        if (!strstr(err, cases[i].reason) || strchr(err, '\n'))
            fail_msg("case %zu: reason \"%s\" does not name %s", i, err, cases[i].reason);
    }
    /* predict refuses a model it was not given */
    lab_learner_problem_t ok = {
        .dim = 2, .n = 2, .x = x, .y = y, .n_pending = 1, .pending = pend, .batch = 1};
    lab_learner_fit_t sobol_fit;
    assert_int_equal(lab_learner_propose(&ok, out, &sobol_fit, err, sizeof err), 0);
    assert_int_equal(sobol_fit.from_sobol, 1);
    double m, s;
    assert_int_equal(lab_learner_predict(&ok, &sobol_fit, 1, pend, &m, &s, err, sizeof err),
                     LAB_EINVAL);
    assert_non_null(strstr(err, "fitted"));
}

/* A valid problem the numerics cannot model is not a bad problem: two observations at one point
 * with no noise make the covariance singular, and the error says so with its own code. */
static void test_numerical_failure(void **state)
{
    double x[4] = {0.3, 0.7, 0.3, 0.7}, y[2] = {1.0, 2.0};
    double theta[4] = {log(0.3), log(0.3), 0.0, -800.0}; /* noise variance exp(-800) == 0 */
    lab_learner_problem_t p = {.dim = 2, .n = 2, .x = x, .y = y, .batch = 1};
    char err[128] = "";
    double v;
    int rc = lab_learner_log_posterior(&p, theta, &v, NULL, err, sizeof err);
    if (rc != LAB_ENUMERIC)
        fail_msg("%d (%s), not LAB_ENUMERIC", rc, lab_strerror(rc));
    assert_non_null(strstr(err, "positive definite"));
    /* the same observations at a theta with noise are fine */
    theta[3] = log(1e-2);
    assert_int_equal(lab_learner_log_posterior(&p, theta, &v, NULL, err, sizeof err), 0);
    assert_true(isfinite(v));
}

static void test_same_seed_same_proposals(void **state)
{
    enum { N = 15, DIM = 3, B = 4 };
    double x[N * DIM], y[N];
    sobol_points(DIM, 31, N, x);
    for (int i = 0; i < N; i++)
        y[i] = -dist(x + i * DIM, (double[]){0.2, 0.7, 0.4}, DIM);
    lab_learner_problem_t p = {.dim = DIM, .n = N, .x = x, .y = y, .batch = B, .seed = 77};
    lab_learner_point_t a[B], b[B], c[B];
    lab_learner_fit_t fa, fb;
    char err[128];
    assert_int_equal(lab_learner_propose(&p, a, &fa, err, sizeof err), 0);
    assert_int_equal(lab_learner_propose(&p, b, &fb, err, sizeof err), 0);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(fa.theta, fb.theta, sizeof fa.theta);
    /* UCB proposes too, inside the cube, and its value is above the mean */
    p.acq = LAB_LEARNER_ACQ_UCB;
    assert_int_equal(lab_learner_propose(&p, c, NULL, err, sizeof err), 0);
    for (int k = 0; k < B; k++)
        assert_true(c[k].acq > c[k].mean - 1e-9 && c[k].x[0] >= 0 && c[k].x[0] <= 1);
    /* Sobol phase: the seed shifts the design, sobol_skip continues it */
    lab_learner_problem_t s = {.dim = DIM, .batch = B, .seed = 77};
    lab_learner_fit_t fs;
    assert_int_equal(lab_learner_propose(&s, a, &fs, err, sizeof err), 0);
    assert_int_equal(fs.from_sobol, 1);
    assert_int_equal(fs.sobol_used, B);
    s.sobol_skip = B;
    assert_int_equal(lab_learner_propose(&s, b, NULL, err, sizeof err), 0);
    double want[2 * B * DIM];
    sobol_points(DIM, 77, 2 * B, want);
    for (int k = 0; k < B; k++) {
        assert_memory_equal(a[k].x, want + k * DIM, DIM * sizeof(double));
        assert_memory_equal(b[k].x, want + (B + k) * DIM, DIM * sizeof(double));
    }
    s.seed = 78;
    s.sobol_skip = 0;
    assert_int_equal(lab_learner_propose(&s, c, NULL, err, sizeof err), 0);
    assert_true(memcmp(a[0].x, c[0].x, DIM * sizeof(double)) != 0);
}

static void test_optimises_a_bump(void **state)
{
    /* 30 evaluations in batches of 3 find the bump's maximum far better than the design did */
    enum { DIM = 2, TOTAL = 30 };
    double x[TOTAL * DIM], y[TOTAL], theta[4];
    int n = 0, skip = 0, warm = 0;
    double design_best = -INFINITY;
    while (n < TOTAL) {
        lab_learner_problem_t p = {.dim = DIM,
                                   .n = n,
                                   .x = x,
                                   .y = y,
                                   .batch = 3,
                                   .sobol_skip = skip,
                                   .seed = 6,
                                   .theta0 = warm ? theta : NULL};
        lab_learner_point_t out[3];
        lab_learner_fit_t fit;
        char err[128];
        if (lab_learner_propose(&p, out, &fit, err, sizeof err))
            fail_msg("%s", err);
        skip += fit.sobol_used;
        if (!fit.from_sobol) {
            memcpy(theta, fit.theta, sizeof theta);
            warm = 1;
        }
        for (int b = 0; b < 3; b++) {
            memcpy(x + n * DIM, out[b].x, sizeof out[b].x[0] * DIM);
            y[n] = bump(out[b].x);
            if (fit.from_sobol)
                design_best = fmax(design_best, y[n]);
            n++;
        }
    }
    /* the maximum, by a fine grid */
    double top = -INFINITY, best = -INFINITY;
    for (int i = 0; i <= 1000; i++)
        for (int j = 0; j <= 1000; j++)
            top = fmax(top, bump((double[]){i / 1000.0, j / 1000.0}));
    for (int i = 0; i < TOTAL; i++)
        best = fmax(best, y[i]);
    if (top - best > 1e-3 || top - design_best < 10 * (top - best))
        fail_msg("best %.6f, design best %.6f, maximum %.6f", best, design_best, top);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sobol_joe_kuo_points),
        cmocka_unit_test(test_sobol_stratified),
        cmocka_unit_test(test_kernel_gradient),
        cmocka_unit_test(test_log_posterior_gradient),
        cmocka_unit_test(test_map_lengthscales),
        cmocka_unit_test(test_interpolates),
        cmocka_unit_test(test_log_ei_far_below),
        cmocka_unit_test(test_believer_pending_and_spread),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_numerical_failure),
        cmocka_unit_test(test_same_seed_same_proposals),
        cmocka_unit_test(test_optimises_a_bump),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
