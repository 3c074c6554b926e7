/* Campaign states and their transitions. */
#include "daemon/model/campaign_states.h"

static const char *const state_names[LAB_CAMP_NSTATES] = {
    [LAB_CAMP_ACTIVE] = "active",
    [LAB_CAMP_PAUSED] = "paused",
    [LAB_CAMP_DONE] = "done",
};

static const lab_fsm_edge_t edges[] = {
    {LAB_CAMP_ACTIVE, LAB_CAMP_PAUSED,
     "a person pauses it, or too many finished candidates failed (the breaker)"},
    {LAB_CAMP_ACTIVE, LAB_CAMP_DONE, "its target, patience or budget is reached"},
    {LAB_CAMP_PAUSED, LAB_CAMP_ACTIVE, "a person resumes it"},
    {LAB_CAMP_PAUSED, LAB_CAMP_DONE,
     "its target, patience or budget is reached by a plate that was running"},
};

const lab_fsm_t lab_camp_fsm = {
    .name = "campaign",
    .nstates = LAB_CAMP_NSTATES,
    .states = state_names,
    .edges = edges,
    .nedges = (int)(sizeof edges / sizeof edges[0]),
    .final = 1u << LAB_CAMP_DONE,
};

const char *lab_camp_state_name(lab_camp_state_t s)
{
    return lab_fsm_state_name(&lab_camp_fsm, (int)s);
}

int lab_camp_state_parse(const char *name)
{
    return lab_fsm_state_parse(&lab_camp_fsm, name);
}

int lab_camp_set_state(lab_camp_state_t *state, lab_camp_state_t to, const char *id)
{
    int cur = (int)*state;
    int rc = lab_fsm_move(&lab_camp_fsm, &cur, (int)to, id);
    *state = (lab_camp_state_t)cur;
    return rc;
}
