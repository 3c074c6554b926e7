/* The learner: a Gaussian process on the unit cube, fitted by MAP with analytic gradients, and
 * batches chosen by maximising log-EI or UCB with Kriging believer fantasies in between. All
 * state lives in a gp_t allocated per call, so concurrent calls share nothing. Matrices are
 * column-major for LAPACK; the Cholesky factor keeps a fixed leading dimension (cap) so that a
 * believer point extends it by one row instead of a new factorisation, which also leaves the
 * observations-only factor intact in its leading block. */
#include "learner/learner.h"

#include "core/err.h"
#include "core/mem.h"
#include "learner/sobol.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK and BLAS through their Fortran symbols (gfortran ABI: hidden string lengths last). */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info,
                    size_t uplo_len);
extern void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info,
                    size_t uplo_len);
extern void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a,
                    const int *lda, double *b, const int *ldb, int *info, size_t uplo_len);
extern void dtrsv_(const char *uplo, const char *trans, const char *diag, const int *n,
                   const double *a, const int *lda, double *x, const int *incx, size_t uplo_len,
                   size_t trans_len, size_t diag_len);
extern void dtrsm_(const char *side, const char *uplo, const char *transa, const char *diag,
                   const int *m, const int *n, const double *alpha, const double *a, const int *lda,
                   double *b, const int *ldb, size_t side_len, size_t uplo_len, size_t transa_len,
                   size_t diag_len);

#define SQRT5 2.23606797749978969641
#define LOG_2PI 1.83787706640934548356
#define INV_SQRT2 0.70710678118654752440
#define DUP_DIST 1e-6 /* a proposal this close to a known point is a repeat */

/* Hyperparameter boxes (log scale) and priors. The lengthscale prior is log-normal with a median
 * 0.25 sqrt(dim), growing with the dimension (Hvarfner et al. 2024) but short enough that a
 * few results do not make every axis look linear (which sends log-EI to the box's edges). A
 * lengthscale stops at the cube's diagonal, sqrt(dim): longer, the axis no longer matters to the
 * model, and a broad basin flat along an axis (Hartmann-6's second peak along x3 and x5) would
 * hide a narrow peak across it. The noise prior keeps the noise small but lets the data raise
 * it. */
#define LOG_LS_LO -4.6 /* 0.01 */
#define LOG_SF_LO -4.6
#define LOG_SF_HI 4.6
#define LOG_SN_LO -20.7 /* 1e-9 */
#define LOG_SN_HI 0.0
#define PRIOR_SF_MU 0.0
#define PRIOR_SF_SD 2.0
#define PRIOR_SN_MU -9.2 /* 1e-4 */
#define PRIOR_SN_SD 3.0

static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- random numbers: splitmix64 seeding xoshiro256** ---- */

typedef struct rng {
    uint64_t s[4];
} rng_t;

static uint64_t splitmix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng_t *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static double rng_uniform(rng_t *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static double rng_normal(rng_t *r)
{
    double u = rng_uniform(r), v = rng_uniform(r);
    return sqrt(-2.0 * log(u > 0 ? u : DBL_MIN)) * cos(2.0 * M_PI * v);
}

static double clamp(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---- the kernel ---- */

static double sqdist(int dim, const double *a, const double *b, const double *inv_ls2)
{
    double r2 = 0;
    for (int d = 0; d < dim; d++) {
        double q = a[d] - b[d];
        r2 += q * q * inv_ls2[d];
    }
    return r2;
}

/* k(r) = sf2 (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r); *dk2 = dk/d(r^2), finite at r = 0. */
static double matern(double r2, double sf2, double *dk2)
{
    double r = sqrt(r2), e = exp(-SQRT5 * r);
    if (dk2)
        *dk2 = -sf2 * (5.0 / 6.0) * (1.0 + SQRT5 * r) * e;
    return sf2 * (1.0 + SQRT5 * r + (5.0 / 3.0) * r2) * e;
}

double lab_learner_kernel(int dim, const double *theta, const double *a, const double *b,
                          double *grad)
{
    double inv_ls2[LAB_LEARNER_MAXDIM], sf2 = exp(theta[dim]), dk2;
    for (int d = 0; d < dim; d++)
        inv_ls2[d] = exp(-2.0 * theta[d]);
    double k = matern(sqdist(dim, a, b, inv_ls2), sf2, &dk2);
    if (grad) {
        /* d(r^2)/d(log l_d) = -2 (a_d - b_d)^2 / l_d^2 */
        for (int d = 0; d < dim; d++) {
            double q = a[d] - b[d];
            grad[d] = -2.0 * dk2 * q * q * inv_ls2[d];
        }
        grad[dim] = k;
    }
    return k;
}

/* ---- log expected improvement ---- */

/* q(t) = 1 - t R(t), R the Mills ratio Phi(-t)/phi(t), for t >= 1. Directly below 12 (the
 * cancellation costs at most t^2 ulps there), by its asymptotic series above. */
static double mills_q(double t)
{
    if (t <= 12.0) {
        double r = 0.5 * erfc(t * INV_SQRT2) * sqrt(2.0 * M_PI) * exp(0.5 * t * t);
        return 1.0 - t * r;
    }
    double u = 1.0 / (t * t), term = u, sum = 0;
    for (int k = 1; k <= 12; k++) {
        sum += (k & 1) ? term : -term;
        term *= (2.0 * k + 1.0) * u;
    }
    return sum;
}

double lab_learner_log_h(double z)
{
    if (z > -1.0) {
        double phi = exp(-0.5 * z * z) / sqrt(2.0 * M_PI), Phi = 0.5 * erfc(-z * INV_SQRT2);
        return log(phi + z * Phi);
    }
    double t = -z < 1e100 ? -z : 1e100;
    return -0.5 * t * t - 0.5 * LOG_2PI + log(mills_q(t));
}

/* d log h / dz = Phi(z) / h(z). */
static double dlog_h(double z)
{
    if (z > -1.0) {
        double phi = exp(-0.5 * z * z) / sqrt(2.0 * M_PI), Phi = 0.5 * erfc(-z * INV_SQRT2);
        return Phi / (phi + z * Phi);
    }
    double t = -z < 1e100 ? -z : 1e100, q = mills_q(t);
    return (1.0 - q) / (t * q);
}

/* ---- a box-constrained quasi-Newton minimiser ---- */

/* Returns f(x) to minimise and its gradient in g; a non-finite value means "not here". */
typedef double (*objective_fn)(void *ctx, const double *x, double *g);

#define LBFGS_MEM 6
#define LBFGS_MAXN 24

/* L-BFGS on the free variables (those not held at a bound by their gradient), with a projected
 * backtracking line search, until the free gradient is below gtol, two steps in a row gain
 * less than ftol (relative to |f|, at least 1) or max_eval. Returns the evaluations used; x and *fx
 * hold the best point. */
static int minimise(objective_fn f, void *ctx, int n, double *x, const double *lo, const double *hi,
                    int max_eval, double gtol, double ftol, double *fx)
{
    double g[LBFGS_MAXN], xn[LBFGS_MAXN], gn[LBFGS_MAXN], dir[LBFGS_MAXN];
    double s[LBFGS_MEM][LBFGS_MAXN], y[LBFGS_MEM][LBFGS_MAXN], rho[LBFGS_MEM], al[LBFGS_MEM];
    int mem = 0, head = 0, evals = 1, flat = 0;
    for (int i = 0; i < n; i++)
        x[i] = clamp(x[i], lo[i], hi[i]);
    *fx = f(ctx, x, g);
    if (!isfinite(*fx))
        return evals;
    while (evals < max_eval) {
        int free_[LBFGS_MAXN];
        double gmax = 0;
        for (int i = 0; i < n; i++) {
            free_[i] = !((x[i] <= lo[i] && g[i] > 0) || (x[i] >= hi[i] && g[i] < 0));
            if (free_[i] && fabs(g[i]) > gmax)
                gmax = fabs(g[i]);
        }
        if (gmax < gtol)
            break;
        /* two-loop recursion on the free subspace */
        for (int i = 0; i < n; i++)
            dir[i] = free_[i] ? -g[i] : 0;
        for (int k = 0; k < mem; k++) {
            int j = (head - 1 - k + LBFGS_MEM) % LBFGS_MEM;
            double a = 0;
            for (int i = 0; i < n; i++)
                a += s[j][i] * dir[i];
            al[j] = rho[j] * a;
            for (int i = 0; i < n; i++)
                dir[i] -= al[j] * y[j][i];
        }
        if (mem) {
            int j = (head - 1 + LBFGS_MEM) % LBFGS_MEM;
            double yy = 0, sy = 0;
            for (int i = 0; i < n; i++) {
                yy += y[j][i] * y[j][i];
                sy += s[j][i] * y[j][i];
            }
            for (int i = 0; i < n; i++)
                dir[i] *= sy / yy;
        } else {
            for (int i = 0; i < n; i++)
                dir[i] /= gmax > 1.0 ? gmax : 1.0;
        }
        for (int k = mem - 1; k >= 0; k--) {
            int j = (head - 1 - k + LBFGS_MEM) % LBFGS_MEM;
            double b = 0;
            for (int i = 0; i < n; i++)
                b += y[j][i] * dir[i];
            b *= rho[j];
            for (int i = 0; i < n; i++)
                dir[i] += s[j][i] * (al[j] - b);
        }
        double slope = 0;
        for (int i = 0; i < n; i++) {
            if (!free_[i])
                dir[i] = 0;
            slope += dir[i] * g[i];
        }
        if (slope >= 0) { /* not a descent direction: restart from steepest descent */
            mem = 0;
            for (int i = 0; i < n; i++)
                dir[i] = free_[i] ? -g[i] / (gmax > 1.0 ? gmax : 1.0) : 0;
        }
        double step = 1.0, fnew = INFINITY;
        int accepted = 0;
        for (int tries = 0; tries < 30 && evals < max_eval; tries++) {
            double dec = 0, moved = 0;
            for (int i = 0; i < n; i++) {
                xn[i] = clamp(x[i] + step * dir[i], lo[i], hi[i]);
                dec += g[i] * (xn[i] - x[i]);
                moved += fabs(xn[i] - x[i]);
            }
            if (moved == 0)
                break;
            fnew = f(ctx, xn, gn);
            evals++;
            if (isfinite(fnew) && fnew <= *fx + 1e-4 * dec) {
                accepted = 1;
                break;
            }
            step *= isfinite(fnew) ? 0.5 : 0.1;
        }
        if (!accepted)
            break;
        int j = head;
        double sy = 0;
        for (int i = 0; i < n; i++) {
            s[j][i] = xn[i] - x[i];
            y[j][i] = gn[i] - g[i];
            sy += s[j][i] * y[j][i];
        }
        if (sy > 1e-12) {
            rho[j] = 1.0 / sy;
            head = (head + 1) % LBFGS_MEM;
            if (mem < LBFGS_MEM)
                mem++;
        }
        double gain = *fx - fnew;
        memcpy(x, xn, (size_t)n * sizeof *x);
        memcpy(g, gn, (size_t)n * sizeof *g);
        *fx = fnew;
        flat = gain < ftol * (fabs(*fx) > 1.0 ? fabs(*fx) : 1.0) ? flat + 1 : 0;
        if (flat >= 2)
            break;
    }
    return evals;
}

/* ---- hyperparameters by MAP ---- */

typedef struct fitctx {
    int dim, n;
    const double *x; /* n*dim row-major */
    const double *y; /* n, standardised */
    double *K;       /* n*n work */
    double *alpha;   /* n work */
    double prior_mu, prior_sd;
} fitctx_t;

static void prior_ls(int dim, double *mu, double *sd)
{
    *mu = log(0.25) + 0.5 * log((double)dim);
    *sd = sqrt(3.0);
}

/* Log posterior and its gradient by theta; -INFINITY when K is not positive definite. */
static double log_posterior(fitctx_t *c, const double *theta, double *grad)
{
    int n = c->n, dim = c->dim, info;
    double inv_ls2[LAB_LEARNER_MAXDIM], sf2 = exp(theta[dim]), sn2 = exp(theta[dim + 1]);
    for (int d = 0; d < dim; d++)
        inv_ls2[d] = exp(-2.0 * theta[d]);
    double *K = c->K, *alpha = c->alpha;
    for (int j = 0; j < n; j++) {
        K[j + (size_t)j * n] = sf2 + sn2;
        for (int i = j + 1; i < n; i++)
            K[i + (size_t)j * n] = matern(
                sqdist(dim, c->x + (size_t)i * dim, c->x + (size_t)j * dim, inv_ls2), sf2, NULL);
    }
    dpotrf_("L", &n, K, &n, &info, 1);
    if (info != 0)
        return -INFINITY;
    memcpy(alpha, c->y, (size_t)n * sizeof *alpha);
    int one = 1;
    dpotrs_("L", &n, &one, K, &n, alpha, &n, &info, 1);
    if (info != 0)
        return -INFINITY;
    double lml = -0.5 * n * LOG_2PI;
    for (int i = 0; i < n; i++)
        lml -= 0.5 * c->y[i] * alpha[i] + log(K[i + (size_t)i * n]);
    double lp = 0;
    for (int d = 0; d < dim; d++) {
        double u = (theta[d] - c->prior_mu) / c->prior_sd;
        lp -= 0.5 * u * u;
    }
    double usf = (theta[dim] - PRIOR_SF_MU) / PRIOR_SF_SD;
    double usn = (theta[dim + 1] - PRIOR_SN_MU) / PRIOR_SN_SD;
    lp -= 0.5 * (usf * usf + usn * usn);
    if (!grad)
        return lml + lp;

    /* d lml / d theta = 1/2 tr((alpha alpha^T - K^-1) dK/dtheta) */
    dpotri_("L", &n, K, &n, &info, 1);
    if (info != 0)
        return -INFINITY;
    for (int t = 0; t < dim + 2; t++)
        grad[t] = 0;
    double trace_w = 0;
    for (int j = 0; j < n; j++) {
        const double *xj = c->x + (size_t)j * dim;
        trace_w += alpha[j] * alpha[j] - K[j + (size_t)j * n];
        for (int i = j + 1; i < n; i++) {
            const double *xi = c->x + (size_t)i * dim;
            double w = alpha[i] * alpha[j] - K[i + (size_t)j * n], dk2;
            double k = matern(sqdist(dim, xi, xj, inv_ls2), sf2, &dk2);
            /* off-diagonal pairs count twice in the trace, which cancels the 1/2 */
            grad[dim] += w * k;
            double c2 = -2.0 * w * dk2;
            for (int d = 0; d < dim; d++) {
                double q = xi[d] - xj[d];
                grad[d] += c2 * q * q * inv_ls2[d];
            }
        }
    }
    grad[dim] += 0.5 * trace_w * sf2;
    grad[dim + 1] = 0.5 * trace_w * sn2;
    for (int d = 0; d < dim; d++)
        grad[d] -= (theta[d] - c->prior_mu) / (c->prior_sd * c->prior_sd);
    grad[dim] -= usf / PRIOR_SF_SD;
    grad[dim + 1] -= usn / PRIOR_SN_SD;
    return lml + lp;
}

static double neg_log_posterior(void *ctx, const double *theta, double *g)
{
    fitctx_t *c = ctx;
    double v = log_posterior(c, theta, g);
    if (!isfinite(v))
        return INFINITY;
    for (int i = 0; i < c->dim + 2; i++)
        g[i] = -g[i];
    return -v;
}

static void theta_bounds(int dim, double *lo, double *hi)
{
    for (int d = 0; d < dim; d++) {
        lo[d] = LOG_LS_LO;
        hi[d] = 0.5 * log((double)dim);
    }
    lo[dim] = LOG_SF_LO;
    hi[dim] = LOG_SF_HI;
    lo[dim + 1] = LOG_SN_LO;
    hi[dim + 1] = LOG_SN_HI;
}

/* Optimiser effort shrinks with n: a screening value costs one Cholesky, a gradient step a
 * Cholesky and an inverse, both O(n^3). */
typedef struct fit_budget {
    int screen;   /* random starts scored by value */
    int refine;   /* of the screened starts, the best this many are optimised */
    int max_eval; /* per optimised start */
} fit_budget_t;

static fit_budget_t fit_budget(int n)
{
    if (n <= 60)
        return (fit_budget_t){32, 4, 120};
    if (n <= 150)
        return (fit_budget_t){24, 3, 80};
    if (n <= 300)
        return (fit_budget_t){16, 2, 50};
    return (fit_budget_t){12, 2, 15};
}

typedef struct start {
    double theta[LBFGS_MAXN];
    double lp;
} start_t;

static int start_cmp(const void *pa, const void *pb)
{
    const start_t *a = pa, *b = pb;
    if (a->lp != b->lp)
        return a->lp < b->lp ? 1 : -1;
    return 0;
}

/* MAP over theta: random starts and a default screened by their log posterior, the best few
 * optimised, and the warm start (when given) optimised as well. Returns 0, or LAB_ENUMERIC when no
 * start gave a finite log posterior. */
static int fit_theta(fitctx_t *c, const double *theta0, rng_t *r, double *best, double *best_lp,
                     int *restarts, int *evaluations)
{
    int dim = c->dim, nt = dim + 2;
    double lo[LBFGS_MAXN], hi[LBFGS_MAXN], fx;
    fit_budget_t bud = fit_budget(c->n);
    start_t st[1 + 32];
    int ns = 1 + bud.screen;
    theta_bounds(dim, lo, hi);
    for (int s = 0; s < ns; s++) {
        double *th = st[s].theta;
        if (s == 0) {
            for (int d = 0; d < dim; d++)
                th[d] = log(0.2 * sqrt((double)dim));
            th[dim] = 0.0;
            th[dim + 1] = log(1e-4);
        } else {
            for (int d = 0; d < dim; d++)
                th[d] = log(0.05) + rng_uniform(r) * (log(2.0 * sqrt((double)dim)) - log(0.05));
            th[dim] = log(0.3) + rng_uniform(r) * (log(3.0) - log(0.3));
            th[dim + 1] = log(1e-7) + rng_uniform(r) * (log(1e-2) - log(1e-7));
        }
        st[s].lp = log_posterior(c, th, NULL);
        if (!isfinite(st[s].lp))
            st[s].lp = -INFINITY;
    }
    *evaluations = ns;
    qsort(st, (size_t)ns, sizeof *st, start_cmp);
    *best_lp = -INFINITY;
    *restarts = 0;
    for (int s = -(theta0 != NULL); s < bud.refine; s++) {
        double th[LBFGS_MAXN];
        /* with many points, a screened start is not refined when the warm start's optimum is
         * already better than it: the data change little between calls */
        if (s >= 0 && theta0 && c->n > 300 && st[s].lp <= *best_lp)
            continue;
        memcpy(th, s < 0 ? theta0 : st[s].theta, (size_t)nt * sizeof *th);
        *evaluations +=
            minimise(neg_log_posterior, c, nt, th, lo, hi, bud.max_eval, 1e-3, 1e-5, &fx);
        (*restarts)++;
        if (isfinite(fx) && -fx > *best_lp) {
            *best_lp = -fx;
            memcpy(best, th, (size_t)nt * sizeof *th);
        }
    }
    return isfinite(*best_lp) ? 0 : LAB_ENUMERIC;
}

/* ---- the model used for prediction and believer updates ---- */

typedef struct gp {
    int dim, n, cap, nobs;
    double *x;     /* cap*dim row-major: observations, then pending, then picks */
    double *y;     /* cap, standardised */
    double *L;     /* cap*cap column-major, lower Cholesky of K + noise */
    double *alpha; /* cap: (K + noise)^-1 y */
    double *ks, *v, *w;
    double inv_ls2[LAB_LEARNER_MAXDIM], sf2, sn2, jitter;
} gp_t;

static void gp_free(gp_t *g)
{
    free(g->x);
    free(g->y);
    free(g->L);
    free(g->alpha);
    free(g->ks);
    free(g->v);
    free(g->w);
    memset(g, 0, sizeof *g);
}

static void gp_alloc(gp_t *g, int dim, int cap)
{
    memset(g, 0, sizeof *g);
    g->dim = dim;
    g->cap = cap;
    g->x = lab_malloc((size_t)cap * dim * sizeof(double));
    g->y = lab_malloc((size_t)cap * sizeof(double));
    g->L = lab_malloc((size_t)cap * cap * sizeof(double));
    g->alpha = lab_malloc((size_t)cap * sizeof(double));
    g->ks = lab_malloc((size_t)cap * sizeof(double));
    g->v = lab_malloc((size_t)cap * sizeof(double));
    g->w = lab_malloc((size_t)cap * sizeof(double));
}

static void gp_set_theta(gp_t *g, const double *theta)
{
    for (int d = 0; d < g->dim; d++)
        g->inv_ls2[d] = exp(-2.0 * theta[d]);
    g->sf2 = exp(theta[g->dim]);
    g->sn2 = exp(theta[g->dim + 1]);
}

static int gp_solve_alpha(gp_t *g)
{
    int one = 1, info;
    memcpy(g->alpha, g->y, (size_t)g->n * sizeof(double));
    dpotrs_("L", &g->n, &one, g->L, &g->cap, g->alpha, &g->n, &info, 1);
    return info == 0 ? 0 : LAB_ENUMERIC;
}

/* Factorises the first g->n points, raising the jitter by decades until K is positive
 * definite. LAB_ENUMERIC when it never is. */
static int gp_factor(gp_t *g)
{
    int n = g->n, info = 1;
    size_t cap = (size_t)g->cap;
    g->jitter = 0;
    for (int attempt = 0; attempt < 9 && info != 0; attempt++) {
        double noise = g->sn2 + g->jitter;
        for (int j = 0; j < n; j++) {
            g->L[j + j * cap] = g->sf2 + noise;
            for (int i = j + 1; i < n; i++)
                g->L[i + j * cap] = matern(sqdist(g->dim, g->x + (size_t)i * g->dim,
                                                  g->x + (size_t)j * g->dim, g->inv_ls2),
                                           g->sf2, NULL);
        }
        dpotrf_("L", &n, g->L, &g->cap, &info, 1);
        if (info != 0)
            g->jitter = g->jitter == 0 ? 1e-10 * g->sf2 : g->jitter * 10.0;
    }
    if (info != 0)
        return LAB_ENUMERIC;
    return gp_solve_alpha(g);
}

static void gp_kvec(const gp_t *g, int n, const double *xq, double *k)
{
    for (int i = 0; i < n; i++)
        k[i] = matern(sqdist(g->dim, g->x + (size_t)i * g->dim, xq, g->inv_ls2), g->sf2, NULL);
}

/* Posterior of the latent function at xq given the first n points of the model (n may be less
 * than g->n: the leading block of L is the factor of the leading points). With gmu/gvar, also
 * the gradients by xq. */
static void gp_predict(gp_t *g, int n, const double *xq, double *mu, double *var, double *gmu,
                       double *gvar)
{
    int one = 1, dim = g->dim;
    double *k = g->ks, *v = g->v;
    gp_kvec(g, n, xq, k);
    double m = 0;
    for (int i = 0; i < n; i++)
        m += k[i] * g->alpha[i];
    memcpy(v, k, (size_t)n * sizeof *v);
    if (n > 0)
        dtrsv_("L", "N", "N", &n, g->L, &g->cap, v, &one, 1, 1, 1);
    double vv = 0;
    for (int i = 0; i < n; i++)
        vv += v[i] * v[i];
    *mu = m;
    *var = g->sf2 - vv;
    if (*var < 1e-12 * g->sf2)
        *var = 1e-12 * g->sf2;
    if (!gmu)
        return;
    /* dk_i/dxq_d = 2 dk/d(r^2) (xq_d - x_id) / l_d^2; w = K^-1 k */
    if (n > 0)
        dtrsv_("L", "T", "N", &n, g->L, &g->cap, v, &one, 1, 1, 1);
    for (int d = 0; d < dim; d++)
        gmu[d] = gvar[d] = 0;
    for (int i = 0; i < n; i++) {
        const double *xi = g->x + (size_t)i * dim;
        double dk2;
        matern(sqdist(dim, xi, xq, g->inv_ls2), g->sf2, &dk2);
        for (int d = 0; d < dim; d++) {
            double dk = 2.0 * dk2 * (xq[d] - xi[d]) * g->inv_ls2[d];
            gmu[d] += g->alpha[i] * dk;
            gvar[d] -= 2.0 * v[i] * dk;
        }
    }
}

/* Appends a point with a standardised value: one new row of L, then alpha again. */
static int gp_append(gp_t *g, const double *xq, double yq)
{
    int n = g->n, one = 1;
    size_t cap = (size_t)g->cap;
    double *row = g->v;
    gp_kvec(g, n, xq, row);
    if (n > 0)
        dtrsv_("L", "N", "N", &n, g->L, &g->cap, row, &one, 1, 1, 1);
    double d2 = g->sf2 + g->sn2 + g->jitter;
    for (int i = 0; i < n; i++) {
        g->L[n + i * cap] = row[i];
        d2 -= row[i] * row[i];
    }
    double floor = 0.5 * (g->sn2 + g->jitter);
    g->L[n + n * cap] = sqrt(d2 > floor ? d2 : floor);
    memcpy(g->x + (size_t)n * g->dim, xq, (size_t)g->dim * sizeof *xq);
    g->y[n] = yq;
    g->n++;
    return gp_solve_alpha(g);
}

/* ---- acquisition ---- */

typedef struct acqctx {
    gp_t *g;
    lab_learner_acq_t acq;
    double best; /* standardised incumbent */
    double sqrt_beta;
} acqctx_t;

/* The acquisition (standardised scale) at x, with its gradient when grad is not NULL. */
static double acq_value(acqctx_t *a, const double *x, double *grad)
{
    gp_t *g = a->g;
    double mu, var, gmu[LAB_LEARNER_MAXDIM], gvar[LAB_LEARNER_MAXDIM];
    gp_predict(g, g->n, x, &mu, &var, grad ? gmu : NULL, grad ? gvar : NULL);
    double sd = sqrt(var);
    if (a->acq == LAB_LEARNER_ACQ_UCB) {
        if (grad)
            for (int d = 0; d < g->dim; d++)
                grad[d] = gmu[d] + a->sqrt_beta * gvar[d] / (2.0 * sd);
        return mu + a->sqrt_beta * sd;
    }
    double z = (mu - a->best) / sd;
    if (grad) {
        double dl = dlog_h(z);
        for (int d = 0; d < g->dim; d++) {
            double dsd = gvar[d] / (2.0 * sd);
            grad[d] = dsd / sd + dl * (gmu[d] - z * dsd) / sd;
        }
    }
    return log(sd) + lab_learner_log_h(z);
}

static double neg_acq(void *ctx, const double *x, double *g)
{
    acqctx_t *a = ctx;
    double v = acq_value(a, x, g);
    for (int d = 0; d < a->g->dim; d++)
        g[d] = -g[d];
    return -v;
}

/* Scores m candidates at once: K* by columns, V = L^-1 K* by one triangular solve. */
static void acq_batch(acqctx_t *a, int m, const double *xs, double *score)
{
    gp_t *g = a->g;
    int n = g->n;
    double *ks = lab_malloc((size_t)n * m * sizeof *ks);
    for (int j = 0; j < m; j++)
        gp_kvec(g, n, xs + (size_t)j * g->dim, ks + (size_t)j * n);
    double *mus = lab_malloc((size_t)m * sizeof *mus);
    for (int j = 0; j < m; j++) {
        double s = 0;
        for (int i = 0; i < n; i++)
            s += ks[i + (size_t)j * n] * g->alpha[i];
        mus[j] = s;
    }
    double unit = 1.0;
    if (n > 0)
        dtrsm_("L", "L", "N", "N", &n, &m, &unit, g->L, &g->cap, ks, &n, 1, 1, 1, 1);
    for (int j = 0; j < m; j++) {
        double vv = 0;
        for (int i = 0; i < n; i++)
            vv += ks[i + (size_t)j * n] * ks[i + (size_t)j * n];
        double var = g->sf2 - vv, sd = sqrt(var > 1e-12 * g->sf2 ? var : 1e-12 * g->sf2);
        score[j] = a->acq == LAB_LEARNER_ACQ_UCB
                       ? mus[j] + a->sqrt_beta * sd
                       : log(sd) + lab_learner_log_h((mus[j] - a->best) / sd);
    }
    free(mus);
    free(ks);
}

static int near_known(const gp_t *g, const double *x)
{
    for (int i = 0; i < g->n; i++) {
        double d2 = 0;
        for (int d = 0; d < g->dim; d++) {
            double q = x[d] - g->x[(size_t)i * g->dim + d];
            d2 += q * q;
        }
        if (d2 < DUP_DIST * DUP_DIST)
            return 1;
    }
    return 0;
}

typedef struct cand {
    double score;
    int index;
} cand_t;

static int cand_cmp(const void *pa, const void *pb)
{
    const cand_t *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score < b->score ? 1 : -1;
    return a->index - b->index;
}

/* One pick: score Sobol and local candidates, refine the best few, keep the best that is not a
 * repeat. Returns 0, or LAB_ENOTFOUND when every candidate repeats a known point. */
static int acq_pick(acqctx_t *a, rng_t *r, uint64_t seed, int pick, double *xbest, double *best_val)
{
    gp_t *g = a->g;
    int dim = g->dim, n = g->n, nobs = g->nobs;
    /* fewer candidates when one score costs O(n^2) */
    double per = (double)n * n + 1.0;
    int n_sobol = (int)clamp(1.5e8 / per, 256, 2048);
    int n_top = nobs < 5 ? nobs : 5, n_local = n_top * 40;
    int m = n_sobol + n_local;
    double *xs = lab_malloc((size_t)m * dim * sizeof *xs);
    double *score = lab_malloc((size_t)m * sizeof *score);
    cand_t *order = lab_malloc((size_t)m * sizeof *order);
    cand_t *top = lab_malloc((size_t)(nobs > 0 ? nobs : 1) * sizeof *top);
    /* a fresh shift per call (the data grew) and per slot, so that successive calls seed the
     * optimiser from different points instead of one fixed set */
    lab_sobol_t sob;
    uint64_t mix = seed ^ ((uint64_t)nobs << 32) ^ (uint64_t)(pick + 1);
    lab_sobol_init(&sob, dim, splitmix(&mix) | 1);
    for (int j = 0; j < n_sobol; j++)
        lab_sobol_next(&sob, xs + (size_t)j * dim);
    /* around the best observations, at two scales: fine exploitation needs candidates there */
    for (int i = 0; i < nobs; i++) {
        top[i].score = g->y[i];
        top[i].index = i;
    }
    qsort(top, (size_t)nobs, sizeof *top, cand_cmp);
    for (int j = 0; j < n_local; j++) {
        const double *c = g->x + (size_t)top[j % n_top].index * dim;
        double scale = (j / n_top) % 2 ? 0.1 : 0.01;
        for (int d = 0; d < dim; d++)
            xs[(size_t)(n_sobol + j) * dim + d] = clamp(c[d] + scale * rng_normal(r), 0.0, 1.0);
    }
    acq_batch(a, m, xs, score);
    for (int j = 0; j < m; j++) {
        order[j].score = score[j];
        order[j].index = j;
    }
    qsort(order, (size_t)m, sizeof *order, cand_cmp);

    double lo[LAB_LEARNER_MAXDIM], hi[LAB_LEARNER_MAXDIM], xr[LAB_LEARNER_MAXDIM], fx;
    for (int d = 0; d < dim; d++) {
        lo[d] = 0.0;
        hi[d] = 1.0;
    }
    int n_refine = n > 300 ? 4 : 8, max_eval = n > 300 ? 30 : 60, refined = 0;
    *best_val = -INFINITY;
    for (int j = 0; j < m && refined < n_refine; j++) {
        const double *x0 = xs + (size_t)order[j].index * dim;
        int dupe = 0;
        for (int k = 0; k < j && !dupe; k++) {
            const double *xk = xs + (size_t)order[k].index * dim;
            double d2 = 0;
            for (int d = 0; d < dim; d++)
                d2 += (x0[d] - xk[d]) * (x0[d] - xk[d]);
            dupe = d2 < 1e-8;
        }
        if (dupe || !isfinite(order[j].score))
            continue;
        refined++;
        memcpy(xr, x0, (size_t)dim * sizeof *xr);
        minimise(neg_acq, a, dim, xr, lo, hi, max_eval, 1e-7, 1e-8, &fx);
        if (isfinite(fx) && -fx > *best_val && !near_known(g, xr)) {
            *best_val = -fx;
            memcpy(xbest, xr, (size_t)dim * sizeof *xr);
        } else if (order[j].score > *best_val && !near_known(g, x0)) {
            *best_val = order[j].score;
            memcpy(xbest, x0, (size_t)dim * sizeof *xr);
        }
    }
    /* every refined point a repeat: take the best unrefined candidate that is not */
    for (int j = 0; j < m && !isfinite(*best_val); j++) {
        const double *x0 = xs + (size_t)order[j].index * dim;
        if (!near_known(g, x0)) {
            *best_val = order[j].score;
            memcpy(xbest, x0, (size_t)dim * sizeof *xr);
        }
    }
    int rc = isfinite(*best_val) ? 0 : LAB_ENOTFOUND;
    free(xs);
    free(score);
    free(order);
    free(top);
    return rc;
}

/* ---- checking a problem ---- */

static int check_points(const double *x, int n, int dim, const char *what, char *err, size_t errlen)
{
    if (n > 0 && !x) {
        fail(err, errlen, "%s: %d points but no array", what, n);
        return LAB_EINVAL;
    }
    for (int i = 0; i < n; i++)
        for (int d = 0; d < dim; d++) {
            double v = x[(size_t)i * dim + d];
            if (!(v >= 0.0 && v <= 1.0)) {
                fail(err, errlen, "%s[%d][%d] = %g is outside the unit cube", what, i, d, v);
                return LAB_EINVAL;
            }
        }
    return 0;
}

static int check_problem(const lab_learner_problem_t *p, int need_batch, char *err, size_t errlen)
{
    if (!p) {
        fail(err, errlen, "no problem");
        return LAB_EINVAL;
    }
    if (p->dim < 1 || p->dim > LAB_LEARNER_MAXDIM) {
        fail(err, errlen, "dim %d is outside 1..%d", p->dim, LAB_LEARNER_MAXDIM);
        return LAB_EINVAL;
    }
    if (p->n < 0 || p->n_pending < 0 || p->n + p->n_pending > LAB_LEARNER_MAXN) {
        fail(err, errlen, "n %d and n_pending %d: each >= 0, together at most %d", p->n,
             p->n_pending, LAB_LEARNER_MAXN);
        return LAB_EINVAL;
    }
    if (need_batch && (p->batch < 1 || p->batch > LAB_LEARNER_MAXBATCH)) {
        fail(err, errlen, "batch %d is outside 1..%d", p->batch, LAB_LEARNER_MAXBATCH);
        return LAB_EINVAL;
    }
    if (p->n_init < 0 || p->sobol_skip < 0) {
        fail(err, errlen, "n_init and sobol_skip must be >= 0");
        return LAB_EINVAL;
    }
    if (p->acq != LAB_LEARNER_ACQ_LOGEI && p->acq != LAB_LEARNER_ACQ_UCB) {
        fail(err, errlen, "unknown acquisition %d", (int)p->acq);
        return LAB_EINVAL;
    }
    if (!(p->ucb_beta >= 0.0) || !isfinite(p->ucb_beta)) {
        fail(err, errlen, "ucb_beta %g must be finite and >= 0", p->ucb_beta);
        return LAB_EINVAL;
    }
    int rc = check_points(p->x, p->n, p->dim, "x", err, errlen);
    if (rc || (rc = check_points(p->pending, p->n_pending, p->dim, "pending", err, errlen)))
        return rc;
    if (p->n > 0 && !p->y) {
        fail(err, errlen, "%d observations but no y", p->n);
        return LAB_EINVAL;
    }
    for (int i = 0; i < p->n; i++)
        if (!isfinite(p->y[i])) {
            fail(err, errlen, "y[%d] = %g is not a finite number", i, p->y[i]);
            return LAB_EINVAL;
        }
    if (p->theta0)
        for (int t = 0; t < p->dim + 2; t++)
            if (!isfinite(p->theta0[t])) {
                fail(err, errlen, "theta0[%d] is not a finite number", t);
                return LAB_EINVAL;
            }
    return 0;
}

static void standardise(const double *y, int n, double *ys, double *mean, double *sd)
{
    double m = 0, s = 0;
    for (int i = 0; i < n; i++)
        m += y[i];
    m = n > 0 ? m / n : 0;
    for (int i = 0; i < n; i++)
        s += (y[i] - m) * (y[i] - m);
    s = n > 1 ? sqrt(s / (n - 1)) : 0;
    /* all values equal (or one): any scale will do, and 1 keeps them at 0 */
    if (!(s > 1e-12 * (fabs(m) > 1.0 ? fabs(m) : 1.0)))
        s = 1.0;
    for (int i = 0; i < n; i++)
        ys[i] = (y[i] - m) / s;
    *mean = m;
    *sd = s;
}

static void fill_fit(lab_learner_fit_t *fit, int dim, const double *theta)
{
    memcpy(fit->theta, theta, (size_t)(dim + 2) * sizeof *theta);
    for (int d = 0; d < dim; d++)
        fit->lengthscale[d] = exp(theta[d]);
    fit->signal_var = exp(theta[dim]);
    fit->noise_var = exp(theta[dim + 1]);
}

/* ---- the public calls ---- */

static int propose_sobol(const lab_learner_problem_t *p, lab_learner_point_t *out,
                         lab_learner_fit_t *fit)
{
    lab_sobol_t s;
    lab_sobol_init(&s, p->dim, p->seed);
    lab_sobol_skip(&s, (uint64_t)p->sobol_skip);
    int used = 0;
    for (int b = 0; b < p->batch;) {
        double x[LAB_LEARNER_MAXDIM];
        lab_sobol_next(&s, x);
        used++;
        int dupe = 0;
        for (int i = 0; i < p->n + p->n_pending && !dupe; i++) {
            const double *o =
                i < p->n ? p->x + (size_t)i * p->dim : p->pending + (size_t)(i - p->n) * p->dim;
            double d2 = 0;
            for (int d = 0; d < p->dim; d++)
                d2 += (x[d] - o[d]) * (x[d] - o[d]);
            dupe = d2 < DUP_DIST * DUP_DIST;
        }
        if (dupe)
            continue;
        memset(&out[b], 0, sizeof out[b]);
        memcpy(out[b].x, x, (size_t)p->dim * sizeof *x);
        b++;
    }
    if (fit) {
        memset(fit, 0, sizeof *fit);
        fit->dim = p->dim;
        fit->from_sobol = 1;
        fit->sobol_used = used;
    }
    return 0;
}

int lab_learner_propose(const lab_learner_problem_t *p, lab_learner_point_t *out,
                        lab_learner_fit_t *fit, char *err, size_t errlen)
{
    int rc = check_problem(p, 1, err, errlen);
    if (rc)
        return rc;
    if (!out) {
        fail(err, errlen, "no output array");
        return LAB_EINVAL;
    }
    int dim = p->dim, n = p->n;
    int n_init = p->n_init > 0 ? p->n_init : 2 * (dim + 1);
    if (n + p->n_pending < n_init || n == 0)
        return propose_sobol(p, out, fit);

    int cap = n + p->n_pending + p->batch;
    gp_t g;
    fitctx_t c = {.dim = dim, .n = n, .x = p->x};
    double *ys = lab_malloc((size_t)n * sizeof *ys), *K = lab_malloc((size_t)n * n * sizeof *K);
    double *alpha = lab_malloc((size_t)n * sizeof *alpha);
    gp_alloc(&g, dim, cap);
    double y_mean, y_sd;
    standardise(p->y, n, ys, &y_mean, &y_sd);
    c.y = ys;
    c.K = K;
    c.alpha = alpha;
    prior_ls(dim, &c.prior_mu, &c.prior_sd);

    rng_t r;
    rng_seed(&r, p->seed ^ 0x6c6561726e6572ULL);
    double theta[LBFGS_MAXN], lp;
    int restarts, evaluations;
    if ((rc = fit_theta(&c, p->theta0, &r, theta, &lp, &restarts, &evaluations))) {
        fail(err, errlen, "no hyperparameters gave a positive definite covariance");
        goto out;
    }

    memcpy(g.x, p->x, (size_t)n * dim * sizeof *g.x);
    memcpy(g.y, ys, (size_t)n * sizeof *g.y);
    g.n = g.nobs = n;
    gp_set_theta(&g, theta);
    if ((rc = gp_factor(&g))) {
        fail(err, errlen, "Cholesky failed after jitter up to %g", g.jitter);
        goto out;
    }
    acqctx_t a = {.g = &g,
                  .acq = p->acq,
                  .best = -INFINITY,
                  .sqrt_beta = sqrt(p->ucb_beta > 0 ? p->ucb_beta : 2.0)};
    for (int i = 0; i < n; i++)
        if (ys[i] > a.best)
            a.best = ys[i];

    /* Kriging believer: pending points, then each pick, join the data at their posterior mean
     * (and count as observations for the incumbent, or the next pick would sit beside them) */
    memcpy(alpha, g.alpha, (size_t)n * sizeof *alpha);
    for (int i = 0; i < p->n_pending; i++) {
        double mu, var;
        const double *xp = p->pending + (size_t)i * dim;
        gp_predict(&g, g.n, xp, &mu, &var, NULL, NULL);
        a.best = mu > a.best ? mu : a.best;
        if ((rc = gp_append(&g, xp, mu))) {
            fail(err, errlen, "believer update failed at pending point %d", i);
            goto out;
        }
    }
    for (int b = 0; b < p->batch; b++) {
        double xb[LAB_LEARNER_MAXDIM], val, mu, var;
        if ((rc = acq_pick(&a, &r, p->seed, b, xb, &val))) {
            fail(err, errlen, "no new point found for batch slot %d", b);
            goto out;
        }
        lab_learner_point_t *o = &out[b];
        memset(o, 0, sizeof *o);
        memcpy(o->x, xb, (size_t)dim * sizeof *xb);
        o->acq = p->acq == LAB_LEARNER_ACQ_UCB ? y_mean + y_sd * val : val + log(y_sd);
        gp_predict(&g, g.n, xb, &mu, &var, NULL, NULL);
        a.best = mu > a.best ? mu : a.best;
        if ((rc = gp_append(&g, xb, mu))) {
            fail(err, errlen, "believer update failed at batch slot %d", b);
            goto out;
        }
    }
    /* mean and sd reported from the observations alone: the leading block of L */
    memcpy(g.alpha, alpha, (size_t)n * sizeof *alpha);
    for (int b = 0; b < p->batch; b++) {
        double mu, var;
        gp_predict(&g, n, out[b].x, &mu, &var, NULL, NULL);
        out[b].mean = y_mean + y_sd * mu;
        out[b].sd = y_sd * sqrt(var);
    }
    if (fit) {
        memset(fit, 0, sizeof *fit);
        fit->dim = dim;
        fill_fit(fit, dim, theta);
        fit->log_posterior = lp;
        fit->y_mean = y_mean;
        fit->y_sd = y_sd;
        fit->restarts = restarts;
        fit->evaluations = evaluations;
        fit->jitter = g.jitter;
    }
    rc = 0;
out:
    gp_free(&g);
    free(ys);
    free(K);
    free(alpha);
    return rc;
}

int lab_learner_predict(const lab_learner_problem_t *p, const lab_learner_fit_t *fit, int m,
                        const double *xs, double *mean, double *sd, char *err, size_t errlen)
{
    int rc = check_problem(p, 0, err, errlen);
    if (rc)
        return rc;
    if (!fit || fit->dim != p->dim || fit->from_sobol) {
        fail(err, errlen, "no fitted model for this problem");
        return LAB_EINVAL;
    }
    if (p->n < 1) {
        fail(err, errlen, "no observations to predict from");
        return LAB_EINVAL;
    }
    if (m < 0 || (m > 0 && (!xs || !mean || !sd)) || !(fit->y_sd > 0)) {
        fail(err, errlen, "bad prediction arguments");
        return LAB_EINVAL;
    }
    if ((rc = check_points(xs, m, p->dim, "xs", err, errlen)))
        return rc;
    gp_t g;
    gp_alloc(&g, p->dim, p->n);
    memcpy(g.x, p->x, (size_t)p->n * p->dim * sizeof *g.x);
    for (int i = 0; i < p->n; i++)
        g.y[i] = (p->y[i] - fit->y_mean) / fit->y_sd;
    g.n = g.nobs = p->n;
    gp_set_theta(&g, fit->theta);
    if ((rc = gp_factor(&g))) {
        fail(err, errlen, "Cholesky failed after jitter up to %g", g.jitter);
        goto out;
    }
    for (int j = 0; j < m; j++) {
        double mu, var;
        gp_predict(&g, g.n, xs + (size_t)j * p->dim, &mu, &var, NULL, NULL);
        mean[j] = fit->y_mean + fit->y_sd * mu;
        sd[j] = fit->y_sd * sqrt(var);
    }
    rc = 0;
out:
    gp_free(&g);
    return rc;
}

int lab_learner_log_posterior(const lab_learner_problem_t *p, const double *theta, double *value,
                              double *grad, char *err, size_t errlen)
{
    int rc = check_problem(p, 0, err, errlen);
    if (rc)
        return rc;
    if (p->n < 1 || !theta || !value) {
        fail(err, errlen, "need observations, theta and somewhere to put the value");
        return LAB_EINVAL;
    }
    int n = p->n;
    fitctx_t c = {.dim = p->dim, .n = n, .x = p->x};
    double *ys = lab_malloc((size_t)n * sizeof *ys), *K = lab_malloc((size_t)n * n * sizeof *K);
    double *alpha = lab_malloc((size_t)n * sizeof *alpha), mean, sd;
    standardise(p->y, n, ys, &mean, &sd);
    c.y = ys;
    c.K = K;
    c.alpha = alpha;
    prior_ls(p->dim, &c.prior_mu, &c.prior_sd);
    *value = log_posterior(&c, theta, grad);
    if (!isfinite(*value)) {
        fail(err, errlen, "covariance not positive definite at this theta");
        rc = LAB_ENUMERIC;
    }
    free(ys);
    free(K);
    free(alpha);
    return rc;
}
