/* Steps of a run: their states and the one table of transitions between them. A failed or
 * interrupted step is not final: the recovery policy or a person's resume retries or skips it. */
#ifndef LAB_MODEL_STEP_STATES_H
#define LAB_MODEL_STEP_STATES_H

#include "core/fsm.h"

typedef enum lab_step_state {
    LAB_STEP_PENDING,
    LAB_STEP_RUNNING,
    LAB_STEP_DONE,
    LAB_STEP_FAILED,
    LAB_STEP_SKIPPED,
    LAB_STEP_INTERRUPTED,
    LAB_STEP_CANCELLED,
    LAB_STEP_NSTATES
} lab_step_state_t;

extern const lab_fsm_t lab_step_fsm;

const char *lab_step_state_name(lab_step_state_t s);
/* -1 when the name is not a state. */
int lab_step_state_parse(const char *name);
bool lab_step_state_final(lab_step_state_t s);
/* The step state machine's one setter: LAB_ESTATE (and a log line) for a move its table refuses,
 * *state unchanged. id names the step in the log ("run/step"). */
int lab_step_set_state(lab_step_state_t *state, lab_step_state_t to, const char *id);

#endif
