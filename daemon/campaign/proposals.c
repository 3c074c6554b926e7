/* A proposal job: the design space mapped onto the unit cube (each volume parameter's
 * [min, max]), the objective turned into a value to maximise, and the proposals mapped back to
 * microlitres (rounded to 0.1 uL, the liquid handler's resolution). */
#include "daemon/campaign/proposals.h"
#include "learner/learner.h"

#include "core/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lab_proposal_job {
    int dim, n, npend, batch, fit_no;
    char names[LAB_LEARNER_MAXDIM][32];
    double lo[LAB_LEARNER_MAXDIM], hi[LAB_LEARNER_MAXDIM];
    double *x, *y, *pend;
    lab_learner_problem_t p;
    lab_learner_point_t *out;
    lab_learner_fit_t fit;
    int rc;
    char err[200];
};

static void to_cube(const lab_proposal_job_t *j, const json_t *params, double *x)
{
    for (int d = 0; d < j->dim; d++) {
        double v = json_number_value(json_object_get(params, j->names[d]));
        double u = (v - j->lo[d]) / (j->hi[d] - j->lo[d]);
        x[d] = u < 0 ? 0 : (u > 1 ? 1 : u);
    }
}

lab_proposal_job_t *lab_proposal_job_new(const json_t *campaign, const json_t *obs,
                                         const json_t *pending, int batch, int fit_no,
                                         int sobol_skip, char *err, size_t errlen)
{
    json_t *params = json_object_get(campaign, "parameters");
    if (json_array_size(params) < 1 || json_array_size(params) > LAB_LEARNER_MAXDIM) {
        snprintf(err, errlen, "the learner takes 1 to %d parameters", LAB_LEARNER_MAXDIM);
        return NULL;
    }
    lab_proposal_job_t *j = LAB_NEW(lab_proposal_job_t);
    size_t i;
    json_t *p;
    json_array_foreach(params, i, p)
    {
        const char *type = json_string_value(json_object_get(p, "type"));
        if (type && strcmp(type, "volume") != 0) {
            snprintf(err, errlen, "parameter %zu is a %s: the learner proposes volumes only", i,
                     type);
            free(j);
            return NULL;
        }
        snprintf(j->names[i], sizeof j->names[i], "%s",
                 json_string_value(json_object_get(p, "name")));
        j->lo[i] = json_number_value(json_object_get(p, "min"));
        j->hi[i] = json_number_value(json_object_get(p, "max"));
    }
    j->dim = (int)json_array_size(params);
    json_t *objective = json_object_get(campaign, "objective");
    const char *dir = json_string_value(json_object_get(objective, "direction"));
    double sign = dir && strcmp(dir, "minimize") == 0 ? -1 : 1;
    j->x = lab_calloc(json_array_size(obs) * (size_t)j->dim + 1, sizeof *j->x);
    j->y = lab_calloc(json_array_size(obs) + 1, sizeof *j->y);
    json_t *o;
    json_array_foreach(obs, i, o)
    {
        json_t *v = json_object_get(o, "value");
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            continue;
        to_cube(j, json_object_get(o, "params"), j->x + (size_t)j->n * (size_t)j->dim);
        j->y[j->n++] = sign * json_number_value(v);
    }
    j->pend = lab_calloc(json_array_size(pending) * (size_t)j->dim + 1, sizeof *j->pend);
    json_array_foreach(pending, i, o)
        to_cube(j, json_object_get(o, "params"), j->pend + (size_t)j->npend++ * (size_t)j->dim);
    j->batch = batch;
    j->fit_no = fit_no;
    json_t *lr = json_object_get(campaign, "learner");
    const char *acq = json_string_value(json_object_get(lr, "acquisition"));
    j->p = (lab_learner_problem_t){
        .dim = j->dim,
        .n = j->n,
        .x = j->x,
        .y = j->y,
        .n_pending = j->npend,
        .pending = j->pend,
        .batch = batch,
        .n_init = (int)json_integer_value(json_object_get(lr, "initial")),
        .sobol_skip = sobol_skip,
        .seed =
            (uint64_t)json_integer_value(json_object_get(lr, "seed")) * 1000003u + (uint64_t)fit_no,
        .acq = acq && strcmp(acq, "ucb") == 0 ? LAB_LEARNER_ACQ_UCB : LAB_LEARNER_ACQ_LOGEI,
    };
    j->out = lab_calloc((size_t)batch + 1, sizeof *j->out);
    return j;
}

void lab_proposal_job_run(lab_proposal_job_t *j)
{
    j->rc = lab_learner_propose(&j->p, j->out, &j->fit, j->err, sizeof j->err);
}

json_t *lab_proposal_job_batch(const lab_proposal_job_t *j)
{
    if (j->rc != 0)
        return NULL;
    char batch[32], version[32];
    snprintf(batch, sizeof batch, "gp-%04d", j->fit_no);
    snprintf(version, sizeof version, "fit-%04d", j->fit_no);
    json_t *fit =
        json_pack("{s:s,s:s,s:i,s:i}", "version", version, "design",
                  j->fit.from_sobol ? "sobol" : "gp", "observations", j->n, "pending", j->npend);
    if (!j->fit.from_sobol) {
        json_t *ls = json_object();
        for (int d = 0; d < j->dim; d++)
            json_object_set_new(ls, j->names[d], json_real(j->fit.lengthscale[d]));
        json_object_set_new(fit, "kernel", json_string("matern52-ard"));
        json_object_set_new(fit, "acquisition",
                            json_string(j->p.acq == LAB_LEARNER_ACQ_UCB ? "ucb" : "log-ei"));
        json_object_set_new(fit, "lengthscales", ls);
        json_object_set_new(fit, "signal_var", json_real(j->fit.signal_var));
        json_object_set_new(fit, "noise_var", json_real(j->fit.noise_var));
        json_object_set_new(fit, "log_posterior", json_real(j->fit.log_posterior));
    }
    json_t *cands = json_array();
    for (int b = 0; b < j->batch; b++) {
        json_t *params = json_object();
        for (int d = 0; d < j->dim; d++) {
            double v = j->lo[d] + j->out[b].x[d] * (j->hi[d] - j->lo[d]);
            v = round(v * 10) / 10;
            v = v < j->lo[d] ? j->lo[d] : (v > j->hi[d] ? j->hi[d] : v);
            json_object_set_new(params, j->names[d], json_real(v));
        }
        char id[48];
        snprintf(id, sizeof id, "gp-%04d-%02d", j->fit_no, b + 1);
        json_t *c = json_pack("{s:s,s:o,s:f}", "id", id, "params", params, "score",
                              isfinite(j->out[b].acq) ? j->out[b].acq : 0.0);
        if (!j->fit.from_sobol)
            json_object_set_new(c, "uncertainty", json_real(j->out[b].sd));
        json_array_append_new(cands, c);
    }
    return json_pack("{s:s,s:{s:s,s:s},s:o,s:o}", "batch", batch, "model", "name", "labloop-gp",
                     "version", version, "fit", fit, "candidates", cands);
}

const char *lab_proposal_job_error(const lab_proposal_job_t *j)
{
    return j->rc ? j->err : "";
}

void lab_proposal_job_free(lab_proposal_job_t *j)
{
    if (!j)
        return;
    free(j->x);
    free(j->y);
    free(j->pend);
    free(j->out);
    free(j);
}
