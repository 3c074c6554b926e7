/* Closed-loop campaigns: their states and the one table of transitions between them. A campaign
 * is created active; only an active one lays out new plates. */
#ifndef LAB_MODEL_CAMPAIGN_STATES_H
#define LAB_MODEL_CAMPAIGN_STATES_H

#include "core/fsm.h"

typedef enum lab_camp_state {
    LAB_CAMP_ACTIVE,
    LAB_CAMP_PAUSED,
    LAB_CAMP_DONE,
    LAB_CAMP_NSTATES
} lab_camp_state_t;

extern const lab_fsm_t lab_camp_fsm;

const char *lab_camp_state_name(lab_camp_state_t s);
/* -1 for an unknown name. */
int lab_camp_state_parse(const char *name);
/* The campaign state machine's one setter: LAB_ESTATE (and a log line) for a move its table
 * refuses, *state unchanged. id names the campaign in the log. */
int lab_camp_set_state(lab_camp_state_t *state, lab_camp_state_t to, const char *id);

#endif
