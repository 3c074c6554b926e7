/* Proposals from the built-in learner for one campaign, as a job: built on the loop thread from the
 * campaign's design space, its observations (completed candidates) and its pending candidates
 * (staged or running), run on a worker thread (it touches nothing shared), and turned back into a
 * batch document on the loop thread. The model itself is learner/learner.h. */
#ifndef LAB_CAMPAIGN_PROPOSALS_H
#define LAB_CAMPAIGN_PROPOSALS_H

#include <jansson.h>
#include <stddef.h>

typedef struct lab_proposal_job lab_proposal_job_t;

/* campaign: its document (parameters: volumes with min/max; objective direction; learner
 * options). obs: [{"params", "value"}]; pending: [{"params"}]. fit_no names the fit (the batch
 * is "gp-NNNN", the model version "fit-NNNN"); sobol_skip: candidates the campaign had so far.
 * NULL with err when the design space cannot be learned. */
lab_proposal_job_t *lab_proposal_job_new(const json_t *campaign, const json_t *obs,
                                         const json_t *pending, int batch, int fit_no,
                                         int sobol_skip, char *err, size_t errlen);
/* Worker thread. */
void lab_proposal_job_run(lab_proposal_job_t *j);
/* Loop thread, after run: the batch document {batch, model, fit, candidates: [{id, params,
 * score, uncertainty}]}, new reference; NULL when the learner failed (lab_proposal_job_error). */
json_t *lab_proposal_job_batch(const lab_proposal_job_t *j);
const char *lab_proposal_job_error(const lab_proposal_job_t *j);
void lab_proposal_job_free(lab_proposal_job_t *j);

#endif
