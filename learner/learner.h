/* The built-in learner: Bayesian optimisation over the unit cube for closed-loop campaigns. A
 * Gaussian process (Matérn 5/2, one lengthscale per dimension, standardised outputs, a noise
 * variance) fitted by maximum a posteriori with analytic gradients from several starts; log-EI
 * or UCB maximised over the cube; batches by Kriging believer; a Sobol design until enough data.
 * Pure computation: no globals, no I/O, no libuv, so the daemon can run it on a worker thread.
 * A library of its own (lab_learner): libc, libm, LAPACK, BLAS, and core/ for errors and memory.
 * The campaign engine's use of it is daemon/campaign/proposals.h. */
#ifndef LAB_LEARNER_LEARNER_H
#define LAB_LEARNER_LEARNER_H

#include <stddef.h>
#include <stdint.h>

#define LAB_LEARNER_MAXDIM 20
#define LAB_LEARNER_MAXBATCH 64
#define LAB_LEARNER_MAXN 5000 /* observations + pending: an exact GP is cubic in this */

typedef enum { LAB_LEARNER_ACQ_LOGEI = 0, LAB_LEARNER_ACQ_UCB = 1 } lab_learner_acq_t;

typedef struct lab_learner_problem {
    int dim;               /* 1..20 */
    int n;                 /* observations (may be 0) */
    const double *x;       /* n*dim, row-major, every coordinate in [0,1] (the unit cube) */
    const double *y;       /* n values, to be MAXIMISED (the caller flips a minimisation) */
    int n_pending;         /* queued or running points, not yet observed (may be 0) */
    const double *pending; /* n_pending*dim, unit cube */
    int batch;             /* points to propose, 1..64 */
    int n_init;            /* below this many observations+pending, propose from the Sobol design;
                              0 = default 2*(dim+1). Also while n is 0. A batch started in the
                              design is finished from it */
    int sobol_skip;        /* Sobol points already handed out before this call (so successive
                              calls continue the sequence instead of repeating it) */
    uint64_t seed;         /* restarts, random shift of the Sobol design, acquisition optimiser */
    lab_learner_acq_t acq;
    double ucb_beta;      /* 0 = default 2.0 (UCB only): mean + sqrt(beta) * sd */
    const double *theta0; /* optional warm start: the previous fit's log hyperparameters
                             (layout as lab_learner_fit_t.theta), or NULL */
} lab_learner_problem_t;

typedef struct lab_learner_fit {
    int dim;
    double theta[23];       /* log lengthscales [dim], log signal variance, log noise variance */
    double lengthscale[20]; /* in unit-cube units */
    double signal_var, noise_var; /* on the standardised output scale */
    double log_posterior;         /* log marginal likelihood + log prior at the MAP */
    double y_mean, y_sd;          /* the standardisation used */
    int restarts, evaluations;    /* optimiser work done */
    int from_sobol; /* 1 when the points came from the Sobol design (no model fitted) */
    int sobol_used; /* Sobol points consumed by this call: add to sobol_skip */
    double jitter;  /* added to the noise variance so the Cholesky succeeded */
} lab_learner_fit_t;

typedef struct lab_learner_point {
    double x[20];    /* unit cube */
    double mean, sd; /* GP posterior at x on the caller's y scale (0,0 for Sobol points) */
    double acq;      /* the acquisition value when it was chosen: log-EI (of the improvement on
                        the caller's scale) or UCB (caller's scale); 0 for Sobol points */
} lab_learner_point_t;

/* Errors are core/err.h codes, each with a one-line reason in err (when err is not NULL):
 *   LAB_EINVAL     the problem or an argument breaks the rules in its struct (bad dim, NaN in y, a
 *                  point outside the cube, no fitted model...)
 *   LAB_ENUMERIC   the numerics failed: no hyperparameters give a positive definite covariance,
 *                  or the Cholesky factorisation fails even after jitter escalation
 *   LAB_ENOTFOUND  every candidate for a batch slot repeats a known point
 * Memory comes from core/mem.h, which stops the process when it runs out, as everywhere in
 * labloop; LAB_LEARNER_MAXN bounds what one call can ask for. */

/* Proposes p->batch new points into out[0..batch-1] and describes the model in fit (may be NULL).
 * Returns 0 or an error (above). Deterministic for the same inputs and seed. */
int lab_learner_propose(const lab_learner_problem_t *p, lab_learner_point_t *out,
                        lab_learner_fit_t *fit, char *err, size_t errlen);

/* Posterior mean/sd at m points of the fitted model: used by tests and to re-score candidates.
 * The model is p's observations (pending points are ignored) with fit's hyperparameters and
 * standardisation; sd is the latent function's, without the noise. 0 or an error (above). */
int lab_learner_predict(const lab_learner_problem_t *p, const lab_learner_fit_t *fit, int m,
                        const double *xs, double *mean, double *sd, char *err, size_t errlen);

/* The pieces under the model, exposed so they can be checked on their own. */

/* Matérn 5/2 covariance of a and b under theta (log lengthscales, log signal variance); when
 * grad is not NULL it receives the derivatives by theta[0..dim] (dim + 1 values). */
double lab_learner_kernel(int dim, const double *theta, const double *a, const double *b,
                          double *grad);

/* Log marginal likelihood + log prior of p's observations (standardised) at theta, and its
 * gradient by theta (dim + 2 values) when grad is not NULL. Returns 0, LAB_EINVAL, or
 * LAB_ENUMERIC when the covariance is not positive definite at theta. */
int lab_learner_log_posterior(const lab_learner_problem_t *p, const double *theta, double *value,
                              double *grad, char *err, size_t errlen);

/* log(phi(z) + z Phi(z)): log expected improvement of a unit normal over an incumbent z sd
 * above its mean. Finite for every finite z (asymptotic series far below the incumbent). */
double lab_learner_log_h(double z);

#endif
