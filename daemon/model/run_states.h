/* Runs: one workflow on one plate. Their states and the transitions allowed between them live
 * here, in one table. */
#ifndef LAB_MODEL_RUN_STATES_H
#define LAB_MODEL_RUN_STATES_H

#include "core/fsm.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum lab_run_state {
    LAB_RUN_QUEUED,
    LAB_RUN_PLANNED,
    LAB_RUN_RUNNING,
    LAB_RUN_PAUSED,
    LAB_RUN_INTERRUPTED,
    LAB_RUN_DONE,
    LAB_RUN_FAILED,
    LAB_RUN_CANCELLED,
    LAB_RUN_RELEASED, /* a claimed run given back to the lab's queue before it began */
    LAB_RUN_NSTATES
} lab_run_state_t;

const char *lab_run_state_name(lab_run_state_t s);
/* -1 when the name is not a state. */
int lab_run_state_parse(const char *name);
bool lab_run_transition_ok(lab_run_state_t from, lab_run_state_t to);
bool lab_run_state_final(lab_run_state_t s);
extern const lab_fsm_t lab_run_fsm;
/* The run state machine's one setter: LAB_ESTATE (and a log line) for a move its table refuses,
 * *state unchanged. id names the run in the log. */
int lab_run_set_state(lab_run_state_t *state, lab_run_state_t to, const char *id);

/* The run document for a new, validated submission: the submission's fields with defaults filled
 * (priority "normal", score 0, params {}), plus id, state "queued", origin, submitted_by,
 * created_at and updated_at. Returns a new reference. */
json_t *lab_run_new_doc(const json_t *submission, const char *id, const char *origin,
                        const char *submitted_by, int64_t now_ms);

#endif
