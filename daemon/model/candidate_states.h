/* Candidates of a closed-loop campaign (docs/design.md, State machines; after Ax's trial states):
 * their states and the one table of transitions between them. A failed candidate may be retried, so
 * `failed` is not final; it is settled (nothing is laid out or run for it until someone retries
 * it). */
#ifndef LAB_MODEL_CANDIDATE_STATES_H
#define LAB_MODEL_CANDIDATE_STATES_H

#include "core/fsm.h"

typedef enum lab_cand_state {
    LAB_CAND_CANDIDATE,
    LAB_CAND_STAGED,
    LAB_CAND_RUNNING,
    LAB_CAND_COMPLETED,
    LAB_CAND_FAILED,
    LAB_CAND_ABANDONED,
    LAB_CAND_STALE,
    LAB_CAND_NSTATES
} lab_cand_state_t;

extern const lab_fsm_t lab_cand_fsm;

const char *lab_cand_state_name(lab_cand_state_t s);
/* -1 for an unknown name. */
int lab_cand_state_parse(const char *name);
/* Nothing leaves it: completed, abandoned, stale. */
bool lab_cand_state_final(lab_cand_state_t s);
/* Nothing is pending for it: a final state, or failed. A batch whose candidates are all settled
 * is done. */
bool lab_cand_state_settled(lab_cand_state_t s);
/* The candidate state machine's one setter: LAB_ESTATE (and a log line) for a move its table
 * refuses, *state unchanged. id names the candidate in the log. */
int lab_cand_set_state(lab_cand_state_t *state, lab_cand_state_t to, const char *id);

#endif
