/* Step states and their transitions. */
#include "daemon/model/step_states.h"

static const char *const state_names[LAB_STEP_NSTATES] = {
    [LAB_STEP_PENDING] = "pending",     [LAB_STEP_RUNNING] = "running",
    [LAB_STEP_DONE] = "done",           [LAB_STEP_FAILED] = "failed",
    [LAB_STEP_SKIPPED] = "skipped",     [LAB_STEP_INTERRUPTED] = "interrupted",
    [LAB_STEP_CANCELLED] = "cancelled",
};

static const lab_fsm_edge_t edges[] = {
    {LAB_STEP_PENDING, LAB_STEP_RUNNING, "it starts on its instrument"},
    {LAB_STEP_RUNNING, LAB_STEP_DONE, "its program finished"},
    {LAB_STEP_RUNNING, LAB_STEP_FAILED, "an action failed or timed out, or it has no program"},
    {LAB_STEP_RUNNING, LAB_STEP_INTERRUPTED, "the daemon restarted while it ran"},
    {LAB_STEP_RUNNING, LAB_STEP_CANCELLED, "its run is cancelled"},
    {LAB_STEP_FAILED, LAB_STEP_PENDING, "retry, by its policy or a resume"},
    {LAB_STEP_FAILED, LAB_STEP_SKIPPED, "skip, by its policy or a resume"},
    {LAB_STEP_INTERRUPTED, LAB_STEP_PENDING, "retry, by its policy or a resume"},
    {LAB_STEP_INTERRUPTED, LAB_STEP_SKIPPED, "skip, by its policy or a resume"},
};

const lab_fsm_t lab_step_fsm = {
    .name = "step",
    .nstates = LAB_STEP_NSTATES,
    .states = state_names,
    .edges = edges,
    .nedges = (int)(sizeof edges / sizeof edges[0]),
    .final = 1u << LAB_STEP_DONE | 1u << LAB_STEP_SKIPPED | 1u << LAB_STEP_CANCELLED,
};

const char *lab_step_state_name(lab_step_state_t s)
{
    return lab_fsm_state_name(&lab_step_fsm, (int)s);
}

int lab_step_state_parse(const char *name)
{
    return lab_fsm_state_parse(&lab_step_fsm, name);
}

bool lab_step_state_final(lab_step_state_t s)
{
    return lab_fsm_final(&lab_step_fsm, (int)s);
}

int lab_step_set_state(lab_step_state_t *state, lab_step_state_t to, const char *id)
{
    int cur = (int)*state;
    int rc = lab_fsm_move(&lab_step_fsm, &cur, (int)to, id);
    *state = (lab_step_state_t)cur;
    return rc;
}
