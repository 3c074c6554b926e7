/* Candidate states and their transitions. */
#include "daemon/model/candidate_states.h"

static const char *const state_names[LAB_CAND_NSTATES] = {
    [LAB_CAND_CANDIDATE] = "candidate", [LAB_CAND_STAGED] = "staged",
    [LAB_CAND_RUNNING] = "running",     [LAB_CAND_COMPLETED] = "completed",
    [LAB_CAND_FAILED] = "failed",       [LAB_CAND_ABANDONED] = "abandoned",
    [LAB_CAND_STALE] = "stale",
};

/* A plate's run may end before the engine saw it running (cancelled while queued, or ended while
 * the daemon was down), so what ends a running candidate ends a staged one too. */
static const lab_fsm_edge_t edges[] = {
    {LAB_CAND_CANDIDATE, LAB_CAND_STAGED, "laid out on a plate"},
    {LAB_CAND_CANDIDATE, LAB_CAND_ABANDONED, "the plate budget is spent, or the campaign ends"},
    {LAB_CAND_CANDIDATE, LAB_CAND_STALE, "a newer batch replaced it before it ran"},
    {LAB_CAND_STAGED, LAB_CAND_RUNNING, "its plate's run started"},
    {LAB_CAND_STAGED, LAB_CAND_CANDIDATE,
     "its plate is laid out again, gave no value or failed QC, or was lost at a restart"},
    {LAB_CAND_STAGED, LAB_CAND_COMPLETED, "its plate's run ended before it was seen running"},
    {LAB_CAND_STAGED, LAB_CAND_FAILED, "its plate's run ended before it was seen running"},
    {LAB_CAND_STAGED, LAB_CAND_ABANDONED, "its plate's run was cancelled by a person"},
    {LAB_CAND_RUNNING, LAB_CAND_COMPLETED, "its plate passed QC and gave its wells' values"},
    {LAB_CAND_RUNNING, LAB_CAND_FAILED,
     "its plates failed QC more often than allowed, or gave no value 3 times"},
    {LAB_CAND_RUNNING, LAB_CAND_CANDIDATE,
     "its plate gave no value or failed QC (laid out again), or was lost at a restart"},
    {LAB_CAND_RUNNING, LAB_CAND_ABANDONED, "its plate's run was cancelled by a person"},
    {LAB_CAND_FAILED, LAB_CAND_CANDIDATE, "retry; no request asks for it yet"},
};

const lab_fsm_t lab_cand_fsm = {
    .name = "candidate",
    .nstates = LAB_CAND_NSTATES,
    .states = state_names,
    .edges = edges,
    .nedges = (int)(sizeof edges / sizeof edges[0]),
    .final = 1u << LAB_CAND_COMPLETED | 1u << LAB_CAND_ABANDONED | 1u << LAB_CAND_STALE,
};

const char *lab_cand_state_name(lab_cand_state_t s)
{
    return lab_fsm_state_name(&lab_cand_fsm, (int)s);
}

int lab_cand_state_parse(const char *name)
{
    return lab_fsm_state_parse(&lab_cand_fsm, name);
}

bool lab_cand_state_final(lab_cand_state_t s)
{
    return lab_fsm_final(&lab_cand_fsm, (int)s);
}

bool lab_cand_state_settled(lab_cand_state_t s)
{
    return s == LAB_CAND_FAILED || lab_cand_state_final(s);
}

int lab_cand_set_state(lab_cand_state_t *state, lab_cand_state_t to, const char *id)
{
    int cur = (int)*state;
    int rc = lab_fsm_move(&lab_cand_fsm, &cur, (int)to, id);
    *state = (lab_cand_state_t)cur;
    return rc;
}
