/* A campaign's plates: each is one run the campaign engine submitted. Their states and the one
 * table of transitions between them (the geometry and layout of a plate are
 * daemon/campaign/layout.h). The state is the engine's view and lives in memory; a restart
 * rebuilds it from the scheduler. */
#ifndef LAB_MODEL_PLATE_STATES_H
#define LAB_MODEL_PLATE_STATES_H

#include "core/fsm.h"

typedef enum lab_plate_state {
    LAB_PLATE_STAGED,  /* its run submitted, not started */
    LAB_PLATE_RUNNING, /* its run started */
    LAB_PLATE_RELAID,  /* its candidates laid out again; its run cancelled or left to end */
    LAB_PLATE_OVER,    /* its run ended and the engine took what it gave */
    LAB_PLATE_NSTATES
} lab_plate_state_t;

extern const lab_fsm_t lab_plate_fsm;

const char *lab_plate_state_name(lab_plate_state_t s);
/* Its run is still the engine's: staged or running (a relaid plate's run no longer is). */
bool lab_plate_state_live(lab_plate_state_t s);
/* The plate state machine's one setter: LAB_ESTATE (and a log line) for a move its table refuses,
 * *state unchanged. id names the plate in the log. */
int lab_plate_set_state(lab_plate_state_t *state, lab_plate_state_t to, const char *id);

#endif
